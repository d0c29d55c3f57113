//! `/metrics` in the Prometheus text format (0.0.4). Names are stable; see the API reference.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use runtime::bus::BUCKETS_US;
use runtime::{RuntimeLevel, State as Lifecycle};

use crate::AppState;

const STATES: [Lifecycle; 8] = [
    Lifecycle::Registered,
    Lifecycle::Starting,
    Lifecycle::Running,
    Lifecycle::Degraded,
    Lifecycle::Backoff,
    Lifecycle::Stopping,
    Lifecycle::Stopped,
    Lifecycle::Failed,
];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(crate) async fn render(State(state): State<AppState>) -> Response {
    let snap = match state.client.snapshot().await {
        Ok(s) => s,
        Err(e) => return crate::ApiError::from(e).into_response(),
    };
    let edges = state.client.bus().edges();
    let mut out = String::with_capacity(8192);

    family(
        &mut out,
        "cloister_runtime_ready",
        "gauge",
        "1 when the runtime is ready or degraded, 0 when not ready.",
    );
    let ready = u8::from(snap.readiness.level != RuntimeLevel::NotReady);
    let _ = writeln!(out, "cloister_runtime_ready {ready}");
    family(
        &mut out,
        "cloister_runtime_degraded",
        "gauge",
        "1 when the runtime runs degraded.",
    );
    let _ = writeln!(
        out,
        "cloister_runtime_degraded {}",
        u8::from(snap.readiness.level == RuntimeLevel::Degraded)
    );

    family(
        &mut out,
        "cloister_service_state",
        "gauge",
        "1 for the lifecycle state a service is in, 0 for the others.",
    );
    for s in &snap.services {
        for st in STATES {
            let _ = writeln!(
                out,
                "cloister_service_state{{service=\"{}\",state=\"{st}\"}} {}",
                s.spec.name,
                u8::from(s.state == st)
            );
        }
    }
    family(
        &mut out,
        "cloister_service_up",
        "gauge",
        "1 while a service is running or degraded.",
    );
    for s in &snap.services {
        let _ = writeln!(
            out,
            "cloister_service_up{{service=\"{}\"}} {}",
            s.spec.name,
            u8::from(s.state.is_up())
        );
    }
    family(
        &mut out,
        "cloister_service_health",
        "gauge",
        "1 for the health level a service is at, 0 for the others.",
    );
    for s in &snap.services {
        for level in ["healthy", "degraded", "unhealthy", "unknown"] {
            let _ = writeln!(
                out,
                "cloister_service_health{{service=\"{}\",level=\"{level}\"}} {}",
                s.spec.name,
                u8::from(s.health.level() == level)
            );
        }
    }
    family(
        &mut out,
        "cloister_service_restarts_total",
        "counter",
        "Recoveries that restarted a service or one of its replicas.",
    );
    for s in &snap.services {
        let _ = writeln!(
            out,
            "cloister_service_restarts_total{{service=\"{}\"}} {}",
            s.spec.name, s.restarts
        );
    }
    family(
        &mut out,
        "cloister_service_replicas",
        "gauge",
        "Ready replicas of a service.",
    );
    for s in &snap.services {
        let _ = writeln!(
            out,
            "cloister_service_replicas{{service=\"{}\"}} {}",
            s.spec.name, s.replicas_running
        );
    }
    family(
        &mut out,
        "cloister_service_queue_depth",
        "gauge",
        "Requests waiting in a service's mailbox.",
    );
    for s in &snap.services {
        let _ = writeln!(
            out,
            "cloister_service_queue_depth{{service=\"{}\"}} {}",
            s.spec.name, s.queue_depth
        );
    }

    family(
        &mut out,
        "cloister_bus_requests_total",
        "counter",
        "Requests per caller -> callee edge, by how they ended.",
    );
    for e in &edges {
        let caller = e.caller.as_ref().map_or("external", |c| c.as_str());
        for (outcome, n) in [
            ("handled", e.handled),
            ("error", e.errors),
            ("dead_lettered", e.dead_lettered),
        ] {
            let _ = writeln!(
                out,
                "cloister_bus_requests_total{{caller=\"{caller}\",callee=\"{}\",outcome=\"{outcome}\"}} {n}",
                e.callee
            );
        }
    }
    family(
        &mut out,
        "cloister_bus_request_duration_seconds",
        "histogram",
        "Request latency per caller -> callee edge, from send to reply.",
    );
    for e in &edges {
        let caller = e.caller.as_ref().map_or("external", |c| c.as_str());
        let labels = format!("caller=\"{caller}\",callee=\"{}\"", e.callee);
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += e.latency.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "cloister_bus_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        let count = e.latency.count();
        let _ = writeln!(
            out,
            "cloister_bus_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "cloister_bus_request_duration_seconds_sum{{{labels}}} {}",
            e.latency.sum_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "cloister_bus_request_duration_seconds_count{{{labels}}} {count}"
        );
    }
    family(
        &mut out,
        "cloister_bus_dead_letters_total",
        "counter",
        "Messages that reached no handler.",
    );
    let _ = writeln!(
        out,
        "cloister_bus_dead_letters_total {}",
        state.client.bus().dead_letters().total()
    );
    family(
        &mut out,
        "cloister_journal_last_seq",
        "gauge",
        "Sequence number of the newest journal entry.",
    );
    let _ = writeln!(
        out,
        "cloister_journal_last_seq {}",
        state.client.journal().last_seq()
    );

    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
