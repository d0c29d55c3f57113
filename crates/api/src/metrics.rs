//! `/metrics` in the Prometheus text format (0.0.4). Names are stable; see the API reference.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use runtime::bus::{BUCKETS_US, BreakerState};
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

/// Resident set size from `/proc/self/statm` (Linux; Gramine emulates it), or `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &runtime::bus::HistogramSnapshot) {
    let mut cumulative = 0;
    for (i, bound) in BUCKETS_US.iter().enumerate() {
        cumulative += h.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}",
            *bound as f64 / 1e6
        );
    }
    let count = h.count();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// Prometheus text format: every service's state, health, restarts, replicas, queue depth and
/// request figures, the bus, the journal and the enclave budget. Open by default; with
/// `[runtime] metrics_auth = true` it needs the admin token (401 without it, 403 for an account
/// token), as the admin endpoints do.
#[utoipa::path(get, path = "/metrics", tag = "probes", security(()),
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        content_type = "text/plain; version=0.0.4", body = String)))]
pub(crate) async fn render(
    State(state): State<AppState>,
    connections: Option<axum::Extension<std::sync::Arc<crate::server::Connections>>>,
) -> Response {
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
        histogram(
            &mut out,
            "cloister_bus_request_duration_seconds",
            &labels,
            &e.latency,
        );
    }
    family(
        &mut out,
        "cloister_service_operation_requests_total",
        "counter",
        "Requests per service and operation, from every caller, by outcome.",
    );
    for svc in &snap.services {
        for o in &svc.operations {
            let labels = format!(
                "service=\"{}\",operation=\"{}\"",
                svc.spec.name, o.operation
            );
            let _ = writeln!(
                out,
                "cloister_service_operation_requests_total{{{labels},outcome=\"ok\"}} {}",
                o.calls - o.errors.min(o.calls)
            );
            let _ = writeln!(
                out,
                "cloister_service_operation_requests_total{{{labels},outcome=\"error\"}} {}",
                o.errors
            );
        }
    }
    family(
        &mut out,
        "cloister_service_operation_duration_seconds",
        "histogram",
        "Request latency per service and operation, from send to reply.",
    );
    for svc in &snap.services {
        for o in &svc.operations {
            let labels = format!(
                "service=\"{}\",operation=\"{}\"",
                svc.spec.name, o.operation
            );
            histogram(
                &mut out,
                "cloister_service_operation_duration_seconds",
                &labels,
                &o.latency,
            );
        }
    }
    family(
        &mut out,
        "cloister_bus_circuit_state",
        "gauge",
        "1 for the state a caller -> callee circuit breaker is in, 0 for the others.",
    );
    for e in &edges {
        let caller = e.caller.as_ref().map_or("external", |c| c.as_str());
        for st in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            let _ = writeln!(
                out,
                "cloister_bus_circuit_state{{caller=\"{caller}\",callee=\"{}\",state=\"{}\"}} {}",
                e.callee,
                st.as_str(),
                u8::from(e.breaker.state == st)
            );
        }
    }
    family(
        &mut out,
        "cloister_bus_circuit_opened_total",
        "counter",
        "Times a circuit breaker opened.",
    );
    for e in &edges {
        let caller = e.caller.as_ref().map_or("external", |c| c.as_str());
        let _ = writeln!(
            out,
            "cloister_bus_circuit_opened_total{{caller=\"{caller}\",callee=\"{}\"}} {}",
            e.callee, e.breaker.opened
        );
    }
    family(
        &mut out,
        "cloister_service_anomaly",
        "gauge",
        "1 while an anomaly is raised on a service's signal.",
    );
    for a in state.client.anomalies().borrow().iter() {
        let _ = writeln!(
            out,
            "cloister_service_anomaly{{service=\"{}\",signal=\"{}\"}} 1",
            a.service, a.signal
        );
    }
    family(
        &mut out,
        "cloister_enclave_memory_budget_mib",
        "gauge",
        "The enclave's memory budget ([enclave] memory_mib).",
    );
    let _ = writeln!(
        out,
        "cloister_enclave_memory_budget_mib {}",
        state.config.enclave.memory_mib
    );
    family(
        &mut out,
        "cloister_enclave_thread_budget",
        "gauge",
        "The enclave's thread budget ([enclave] threads).",
    );
    let _ = writeln!(
        out,
        "cloister_enclave_thread_budget {}",
        state.config.enclave.threads
    );
    if let Some(bytes) = resident_bytes() {
        family(
            &mut out,
            "cloister_process_resident_memory_bytes",
            "gauge",
            "Resident memory of the whole process (services share one heap, so there is no honest per-service figure).",
        );
        let _ = writeln!(out, "cloister_process_resident_memory_bytes {bytes}");
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
    if let Some(axum::Extension(c)) = connections {
        http_figures(&mut out, &c);
    }

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

/// What the HTTP server's accept loop and timeouts counted.
fn http_figures(out: &mut String, c: &crate::server::Connections) {
    use std::sync::atomic::Ordering::Relaxed;
    family(
        out,
        "cloister_http_connections_open",
        "gauge",
        "Open HTTP connections.",
    );
    let _ = writeln!(
        out,
        "cloister_http_connections_open {}",
        c.open.load(Relaxed)
    );
    family(
        out,
        "cloister_http_connections_refused_total",
        "counter",
        "Connections closed at once, by the limit they were over (runtime.max_connections, runtime.max_connections_per_peer).",
    );
    for (limit, n) in [
        ("max_connections", &c.refused_in_all),
        ("max_connections_per_peer", &c.refused_per_peer),
    ] {
        let _ = writeln!(
            out,
            "cloister_http_connections_refused_total{{limit=\"{limit}\"}} {}",
            n.load(Relaxed)
        );
    }
    family(
        out,
        "cloister_http_timeouts_total",
        "counter",
        "Requests answered with a timeout, by which (runtime.request_timeout: 503, runtime.body_read_timeout: 408).",
    );
    for (timeout, n) in [
        ("request", &c.request_timeouts),
        ("body_read", &c.body_timeouts),
    ] {
        let _ = writeln!(
            out,
            "cloister_http_timeouts_total{{timeout=\"{timeout}\"}} {}",
            n.load(Relaxed)
        );
    }
}
