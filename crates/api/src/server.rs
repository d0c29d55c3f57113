//! The HTTP server: an accept loop that holds the connection limits (in all, per peer address,
//! and under the process's file limit less a reserve), hyper's HTTP/1 with a header read timeout,
//! and the body read and whole-request timeouts, each answered in the API's error shape.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use runtime::config::RuntimeConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::budget::Budgets;
use crate::{ApiError, AppState};

/// Fewer connections than this left under the file limit is refused at start.
pub const MIN_CONNECTIONS: u64 = 16;

/// The server's limits, from `[runtime]` and the process's file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    /// `runtime.config_watch`: a configuration applied with `?wait=true` may take this longer.
    pub config_watch: Duration,
    /// `runtime.shutdown_grace`: stopping or restarting a service may take this longer.
    pub shutdown_grace: Duration,
    /// `runtime.max_connections`, or fewer when the file limit less the reserve is lower.
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
}

/// Why the server cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "the process may open {limit} files (RLIMIT_NOFILE) and runtime.reserved_fds keeps {reserved} of them for storage, the keystore and the journal: fewer than {MIN_CONNECTIONS} are left for connections; raise the limit (ulimit -n) or lower runtime.reserved_fds"
    )]
    TooFewFiles { limit: u64, reserved: u32 },
}

impl Limits {
    /// The limits `runtime` asks for, held under `file_limit` (the process's `RLIMIT_NOFILE`)
    /// less `runtime.reserved_fds`.
    pub fn new(runtime: &RuntimeConfig, file_limit: u64) -> Result<Limits, LimitError> {
        let left = file_limit.saturating_sub(u64::from(runtime.reserved_fds));
        if left < MIN_CONNECTIONS {
            return Err(LimitError::TooFewFiles {
                limit: file_limit,
                reserved: runtime.reserved_fds,
            });
        }
        let max_connections = u64::from(runtime.max_connections).min(left);
        Ok(Limits {
            header_read_timeout: runtime.header_read_timeout,
            body_read_timeout: runtime.body_read_timeout,
            request_timeout: runtime.request_timeout,
            config_watch: runtime.config_watch,
            shutdown_grace: runtime.shutdown_grace,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            max_connections_per_peer: usize::try_from(runtime.max_connections_per_peer)
                .unwrap_or(usize::MAX),
        })
    }

    /// The limits for this process: its soft file limit is raised to the hard one first.
    pub fn for_this_process(runtime: &RuntimeConfig) -> Result<Limits, LimitError> {
        Limits::new(runtime, file_limit())
    }
}

/// The process's file limit, after raising the soft limit to the hard one (unlimited: `u64::MAX`).
fn file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum.unwrap_or(u64::MAX);
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// What the accept loop counts, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    pub(crate) open: AtomicU64,
    pub(crate) refused_in_all: AtomicU64,
    pub(crate) refused_per_peer: AtomicU64,
    pub(crate) request_timeouts: AtomicU64,
    pub(crate) body_timeouts: AtomicU64,
}

/// Open connections per peer address; a [`PeerSlot`] gives its one back when dropped.
#[derive(Debug, Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self
            .peers
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// How long a handler may spend reading its body; the body extractors read it from the
/// request's extensions (absent, in-process: no limit).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyTimeout(pub(crate) Duration);

/// Serves the API on `listener` within `limits` until `state.shutdown` is cancelled, then lets
/// open requests finish.
pub async fn serve(listener: TcpListener, state: AppState, limits: Limits) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let connections = Arc::new(Connections::default());
    let node = HeaderValue::from_str(state.cluster.id()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the node id is not a valid header value",
        )
    })?;
    let app = with_timeouts(crate::router(state), limits, connections.clone()).layer(
        axum::middleware::map_response(move |mut response: Response| {
            let node = node.clone();
            async move {
                response.headers_mut().insert(NODE_HEADER, node);
                response
            }
        }),
    );
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(Peers::default());
    let tracker = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or a connection reset before it was accepted: the
                // listener itself is fine. Wait a little rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(peer_slot) = peers.take(peer.ip(), limits.max_connections_per_peer) else {
            connections.refused_per_peer.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            connections.refused_in_all.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let (shutdown, connections) = (shutdown.clone(), connections.clone());
        connections.open.fetch_add(1, Ordering::Relaxed);
        tracker.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            connections.open.fetch_sub(1, Ordering::Relaxed);
            drop((permit, peer_slot));
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// The answer header naming the node that answered (its `node.id`), on every answer of the server.
pub const NODE_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-cloister-node");

/// The router with the body read and whole-request timeouts, and what the metrics read.
fn with_timeouts(
    router: axum::Router,
    limits: Limits,
    connections: Arc<Connections>,
) -> axum::Router {
    let counts = connections.clone();
    router
        .layer(axum::middleware::from_fn(move |request, next| {
            request_timeout(limits, counts.clone(), request, next)
        }))
        .layer(axum::Extension(connections))
        .layer(axum::middleware::from_fn(crate::request_id::layer))
}

async fn request_timeout(
    limits: Limits,
    connections: Arc<Connections>,
    mut request: Request,
    next: Next,
) -> Response {
    request
        .extensions_mut()
        .insert(BodyTimeout(limits.body_read_timeout));
    let budget = crate::budget::budget(
        request.method(),
        request.uri().path(),
        request.uri().query(),
        &Budgets {
            request: limits.request_timeout,
            body_read: limits.body_read_timeout,
            config_watch: limits.config_watch,
            shutdown_grace: limits.shutdown_grace,
        },
    );
    let allowed = match client_deadline(&request) {
        Ok(Some(asked)) => asked.min(budget),
        Ok(None) => budget,
        Err(e) => return e.into_response(),
    };
    // Every bus call made for this request, and every call those make, waits no longer than this.
    // A call that runs out answers first (503 naming the service): `timeout_at` polls the handler
    // before its own timer, and both fire at the same instant.
    let deadline = tokio::time::Instant::now() + allowed;
    let handled = runtime::deadline::scope(Some(deadline), next.run(request));
    match tokio::time::timeout_at(deadline, handled).await {
        Ok(response) => {
            if response.status() == StatusCode::REQUEST_TIMEOUT {
                connections.body_timeouts.fetch_add(1, Ordering::Relaxed);
            }
            response
        }
        Err(_) => {
            connections.request_timeouts.fetch_add(1, Ordering::Relaxed);
            ApiError::unavailable(
                "request.timeout",
                format!(
                    "the request took longer than its deadline ({}; runtime.request_timeout and its route's budget, or less with {DEADLINE_HEADER}); retry",
                    humantime::format_duration(allowed)
                ),
                1,
            )
            .into_response()
        }
    }
}

/// The request header with which a client asks for a shorter deadline than
/// `runtime.request_timeout`, in milliseconds.
pub const DEADLINE_HEADER: &str = "x-cloister-deadline-ms";

/// The deadline the client asked for in [`DEADLINE_HEADER`], if any: a whole number of
/// milliseconds from 1 up; anything else is 400 `request.invalid_deadline`. It can only lower the
/// deadline, never raise it past `runtime.request_timeout`.
fn client_deadline(request: &Request) -> Result<Option<Duration>, ApiError> {
    let Some(value) = request.headers().get(DEADLINE_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "request.invalid_deadline",
            format!(
                "{DEADLINE_HEADER} must be a whole number of milliseconds from 1 to {}",
                u32::MAX
            ),
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u32>() {
        Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(u64::from(ms)))),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::{Connections, LimitError, Limits, with_timeouts};

    /// README, "Limits": a request not answered within `runtime.request_timeout` is 503
    /// `request.timeout` with `Retry-After`, counted for `/metrics`; one answered in time is not
    /// touched. Under tokio's paused clock: the handler that never answers is cut off at exactly
    /// the timeout.
    #[tokio::test(start_paused = true)]
    async fn a_request_not_answered_within_the_request_timeout_is_503() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(31),
            config_watch: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 16,
            max_connections_per_peer: 16,
        };
        let router = axum::Router::new()
            .route(
                "/stuck",
                axum::routing::get(std::future::pending::<&'static str>),
            )
            .route("/quick", axum::routing::get(|| async { "ok" }));
        let connections = Arc::new(Connections::default());
        let app = with_timeouts(router, limits, connections.clone());
        let get = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");

        let started = tokio::time::Instant::now();
        let response = app.clone().oneshot(get("/stuck")).await.expect("response");
        assert_eq!(started.elapsed(), limits.request_timeout);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"]["code"], "request.timeout");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("runtime.request_timeout")),
            "{body}"
        );
        assert_eq!(connections.request_timeouts.load(Ordering::Relaxed), 1);

        let response = app.oneshot(get("/quick")).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(connections.request_timeouts.load(Ordering::Relaxed), 1);
    }

    /// docs/api.md, "Deadlines": `x-cloister-deadline-ms` lowers the request's deadline (never
    /// raises it past `runtime.request_timeout`), the handler runs under it (so every bus call it
    /// makes inherits it), and a value that is not a whole number of milliseconds from 1 is 400
    /// `request.invalid_deadline`. Paused clock: the times are exact.
    #[tokio::test(start_paused = true)]
    async fn the_deadline_header_lowers_the_deadline_and_a_bad_one_is_400() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(31),
            config_watch: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 16,
            max_connections_per_peer: 16,
        };
        let router = axum::Router::new()
            .route(
                "/stuck",
                axum::routing::get(std::future::pending::<&'static str>),
            )
            .route(
                "/left",
                axum::routing::get(|| async {
                    let left = runtime::deadline::current()
                        .expect("the handler runs under the request's deadline")
                        .saturating_duration_since(tokio::time::Instant::now());
                    left.as_millis().to_string()
                }),
            );
        let app = with_timeouts(router, limits, Arc::new(Connections::default()));
        let get = |uri: &str, header: Option<&str>| {
            let mut r = Request::get(uri);
            if let Some(h) = header {
                r = r.header(super::DEADLINE_HEADER, h);
            }
            r.body(Body::empty()).expect("request")
        };
        let text = |response: axum::response::Response| async move {
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .expect("body")
                .to_bytes();
            String::from_utf8(bytes.to_vec()).expect("utf-8")
        };

        let started = tokio::time::Instant::now();
        let response = app
            .clone()
            .oneshot(get("/stuck", Some("250")))
            .await
            .expect("response");
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

        for (header, want) in [
            (None, "31000"),
            (Some("1200"), "1200"),
            (Some("99000"), "31000"),
        ] {
            let response = app
                .clone()
                .oneshot(get("/left", header))
                .await
                .expect("response");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(text(response).await, want, "{header:?}");
        }

        for bad in ["0", "-5", "1.5", "soon", "", " 100", "99999999999"] {
            let response = app
                .clone()
                .oneshot(get("/left", Some(bad)))
                .await
                .expect("response");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad:?}");
            let body: serde_json::Value =
                serde_json::from_str(&text(response).await).expect("json");
            assert_eq!(body["error"]["code"], "request.invalid_deadline", "{bad:?}");
        }
    }

    /// docs/api.md, "Deadlines": a route that waits on purpose has its wait added to the
    /// request's deadline (a script run its time limit's bound, a long poll its `wait_s`), an
    /// ordinary one has `runtime.request_timeout` alone, and the client's header still lowers
    /// either. Paused clock: each stuck handler is cut off at exactly its budget.
    #[tokio::test(start_paused = true)]
    async fn a_route_that_waits_on_purpose_has_its_wait_added_to_the_deadline() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            config_watch: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 16,
            max_connections_per_peer: 16,
        };
        let stuck = || axum::routing::any(std::future::pending::<&'static str>);
        let router = axum::Router::new()
            .route("/v1/storage/{key}", stuck())
            .route("/v1/computation/run", stuck())
            .route("/v1/ai/jobs/{id}", stuck());
        let app = with_timeouts(router, limits, Arc::new(Connections::default()));
        let s = Duration::from_secs;
        for (method, uri, header, want) in [
            ("GET", "/v1/storage/k", None, s(5)),
            ("POST", "/v1/computation/run", None, s(35)),
            ("GET", "/v1/ai/jobs/j?wait_s=20", None, s(25)),
            ("POST", "/v1/computation/run", Some("2000"), s(2)),
        ] {
            let mut request = Request::builder().method(method).uri(uri);
            if let Some(h) = header {
                request = request.header(super::DEADLINE_HEADER, h);
            }
            let started = tokio::time::Instant::now();
            let response = app
                .clone()
                .oneshot(request.body(Body::empty()).expect("request"))
                .await
                .expect("response");
            assert_eq!(started.elapsed(), want, "{method} {uri}");
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{method} {uri}"
            );
        }
    }

    fn runtime(max_connections: u32, reserved_fds: u32) -> runtime::config::RuntimeConfig {
        let mut r = runtime::config::Config::default().runtime;
        r.max_connections = max_connections;
        r.reserved_fds = reserved_fds;
        r
    }

    /// The connections fit under the file limit less the reserve; too few left is refused.
    #[test]
    fn connections_are_held_under_the_file_limit_less_the_reserve() {
        for (max, reserved, file_limit, want) in [
            (4096, 256, 1024, Ok(768)),
            (100, 256, 1024, Ok(100)),
            (4096, 256, u64::MAX, Ok(4096)),
            (4096, 256, 272, Ok(16)),
            (
                4096,
                256,
                271,
                Err(LimitError::TooFewFiles {
                    limit: 271,
                    reserved: 256,
                }),
            ),
            (
                4096,
                256,
                100,
                Err(LimitError::TooFewFiles {
                    limit: 100,
                    reserved: 256,
                }),
            ),
        ] {
            let got = Limits::new(&runtime(max, reserved), file_limit).map(|l| l.max_connections);
            assert_eq!(
                got, want,
                "max {max}, reserved {reserved}, limit {file_limit}"
            );
        }
    }
}
