//! How long each request may take: `runtime.request_timeout` for the work of an ordinary call
//! (a few seconds), plus what its route is documented to wait for. One table, so that a route
//! that waits on purpose (a long poll, a script's own time limit, an upload, a configuration's
//! watch window) is not cut short, and every other route answers within the ordinary deadline.

use std::time::Duration;

use axum::http::Method;

/// The longest a job request with `?wait_s=N` holds the connection (a larger N is refused).
pub const MAX_WAIT_S: u64 = 30;

/// What the table adds to, from `[runtime]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// `runtime.request_timeout`: every route's budget, and all of an ordinary route's.
    pub request: Duration,
    /// `runtime.body_read_timeout`: what an upload adds, its body being read within it.
    pub body_read: Duration,
    /// `runtime.config_watch`: what a configuration applied with `?wait=true` adds.
    pub config_watch: Duration,
    /// `runtime.shutdown_grace`: what stopping or restarting a service adds.
    pub shutdown_grace: Duration,
}

/// What a script run adds: the highest time limit a run may be given
/// (`computation.max_time_ms` is at most this), so its own limit always ends it first.
pub const SCRIPT_RUN: Duration = ::computation::TIME_CEILING_BOUND;
/// What an oracle request adds: its sources are fetched at once, each within `oracle.timeout_ms`,
/// which is at most this.
pub const ORACLE_FETCH: Duration = Duration::from_secs(60);

/// The budget of the request `method path?query`.
pub fn budget(method: &Method, path: &str, query: Option<&str>, b: &Budgets) -> Duration {
    b.request + extra(method, path, query, b)
}

fn extra(method: &Method, path: &str, query: Option<&str>, b: &Budgets) -> Duration {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["v1", "computation" | "ai", "jobs", _]) => {
            Duration::from_secs(query_number(query, "wait_s").unwrap_or(0).min(MAX_WAIT_S))
        }
        (&Method::POST, ["v1", "computation", "run"]) => SCRIPT_RUN,
        (&Method::POST, ["v1", "oracle", "requests"]) => ORACLE_FETCH,
        (&Method::POST, ["v1", "ai", "models"]) => b.body_read,
        (&Method::PUT, ["v1", "config"]) if query_flag(query, "wait") => b.config_watch,
        (&Method::POST, ["v1", "services", _, "stop" | "restart"]) => b.shutdown_grace,
        _ => Duration::ZERO,
    }
}

/// `name=N` in `query`, when N is a whole number (anything else adds nothing: the handler refuses
/// it).
fn query_number(query: Option<&str>, name: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.parse().ok())
}

/// Whether `name=true` is in `query`.
fn query_flag(query: Option<&str>, name: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .any(|(key, value)| key == name && value == "true")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_that_waits_on_purpose_has_its_wait_added_and_no_other() {
        let s = Duration::from_secs;
        let b = Budgets {
            request: s(5),
            body_read: s(60),
            config_watch: s(10),
            shutdown_grace: s(30),
        };
        let cases: &[(Method, &str, Option<&str>, Duration)] = &[
            (Method::GET, "/v1/storage/k", None, s(5)),
            (Method::PUT, "/v1/storage/a/b", None, s(5)),
            (Method::POST, "/v1/crypto/keys/k/sign", None, s(5)),
            (Method::GET, "/v1/computation/jobs/j", None, s(5)),
            (
                Method::GET,
                "/v1/computation/jobs/j",
                Some("wait_s=12"),
                s(17),
            ),
            (Method::GET, "/v1/ai/jobs/j", Some("x=1&wait_s=30"), s(35)),
            // Out of bounds or not a number: the handler refuses it; the budget adds at most
            // the bound.
            (Method::GET, "/v1/ai/jobs/j", Some("wait_s=999"), s(35)),
            (Method::GET, "/v1/ai/jobs/j", Some("wait_s=soon"), s(5)),
            (Method::GET, "/v1/computation/jobs", Some("wait_s=12"), s(5)),
            (Method::POST, "/v1/computation/run", None, s(35)),
            (Method::POST, "/v1/computation/jobs", None, s(5)),
            (Method::POST, "/v1/oracle/requests", None, s(65)),
            (Method::POST, "/v1/ai/models", None, s(65)),
            (Method::POST, "/v1/ai/models/m/predict", None, s(5)),
            (Method::PUT, "/v1/config", Some("wait=true"), s(15)),
            (Method::PUT, "/v1/config", Some("wait=false"), s(5)),
            (Method::PUT, "/v1/config", None, s(5)),
            (Method::POST, "/v1/services/storage/stop", None, s(35)),
            (Method::POST, "/v1/services/storage/restart", None, s(35)),
            (Method::POST, "/v1/services/storage/start", None, s(5)),
        ];
        for (method, path, query, want) in cases {
            assert_eq!(
                budget(method, path, *query, &b),
                *want,
                "{method} {path}?{query:?}"
            );
        }
    }
}
