//! Admin endpoints over the supervisor: services, lifecycle commands, the graph, faults, readiness.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use runtime::bus::{EdgeSnapshot, HistogramSnapshot};
use runtime::journal::Fault;
use runtime::{Readiness, RuntimeLevel, ServiceName, ServiceStatus, Snapshot};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use wire::services::{
    AnomalyList, AnomalyView, Broadcast, BusView, CircuitView, DeadLetterView, GraphEdge,
    GraphNode, GraphView, OperationView, Replicas, Requests, SampledService, ServiceList,
    ServiceSample, ServiceView, Window,
};

use crate::auth::Admin;
use crate::error::ErrorBody;
use crate::input;
use crate::{ApiError, AppState};

fn parse_name(name: &str) -> Result<ServiceName, ApiError> {
    // An invalid name cannot be a registered one: answer as for any unknown service.
    ServiceName::new(name)
        .map_err(|_| ApiError::not_found("service.not_found", format!("no service named {name:?}")))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Alive {
    /// `alive`: the process answers; `escalated`: a service used up its restarts under
    /// `on_exhausted = "escalate"` and the process is about to exit for its supervisor to start it
    /// again.
    status: &'static str,
    /// Why it escalated.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The process is up (it may not be ready), unless the runtime escalated: then 503 with the
/// reason, so that a liveness probe restarts it even before the process exits by itself.
#[utoipa::path(get, path = "/livez", tag = "probes", security(()),
    responses((status = 200, description = "The process answers", body = Alive),
        (status = 503, description = "The runtime escalated (`status` is `escalated`, with the reason)", body = Alive)))]
pub(crate) async fn livez(State(state): State<AppState>) -> Response {
    let escalation = state.client.readiness().borrow().escalation.clone();
    match escalation {
        None => Json(Alive {
            status: "alive",
            reason: None,
        })
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Alive {
                status: "escalated",
                reason: Some(reason),
            }),
        )
            .into_response(),
    }
}

/// Ready or degraded (200), or not ready (503), with the reasons.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses(
        (status = 200, description = "Ready or degraded", body = Readiness),
        (status = 503, description = "Not ready: a core service is down", body = Readiness),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.client.readiness().borrow().clone();
    let status = match readiness.level {
        RuntimeLevel::Ready | RuntimeLevel::Degraded => StatusCode::OK,
        RuntimeLevel::NotReady => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(readiness)).into_response()
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e3)
}

pub(crate) fn requests(edges: &[EdgeSnapshot], service: &ServiceName) -> Requests {
    let mut latency = HistogramSnapshot::default();
    let mut r = Requests::default();
    for e in edges.iter().filter(|e| &e.callee == service) {
        r.total += e.calls;
        r.errors += e.errors;
        r.dead_lettered += e.dead_lettered;
        latency.merge(&e.latency);
    }
    let settled = r.total.max(1);
    r.error_rate = (r.errors + r.dead_lettered) as f64 / settled as f64;
    r.latency_p50_ms = ms(latency.quantile(0.5));
    r.latency_p90_ms = ms(latency.quantile(0.9));
    r.latency_p99_ms = ms(latency.quantile(0.99));
    r
}

fn view(
    s: &ServiceStatus,
    edges: &[EdgeSnapshot],
    anomalies: &[runtime::monitor::ActiveAnomaly],
) -> ServiceView {
    let spec = &s.spec;
    let operations = s
        .operations
        .iter()
        .map(|o| OperationView {
            operation: o.operation.to_owned(),
            calls: o.calls,
            errors: o.errors,
            latency_p50_ms: ms(o.latency.quantile(0.5)),
            latency_p90_ms: ms(o.latency.quantile(0.9)),
            latency_p99_ms: ms(o.latency.quantile(0.99)),
        })
        .collect();
    let circuits = edges
        .iter()
        .filter(|e| e.callee == spec.name)
        .map(|e| CircuitView {
            caller: e
                .caller
                .as_ref()
                .map_or("external", |c| c.as_str())
                .to_owned(),
            state: e.breaker.state,
            consecutive_failures: e.breaker.consecutive_failures,
            opened: e.breaker.opened,
        })
        .collect();
    let anomalies = anomalies
        .iter()
        .filter(|a| a.service == spec.name)
        .map(|a| AnomalyView {
            signal: a.signal.to_string(),
            action: a.action,
            evidence: a.evidence,
        })
        .collect();
    ServiceView {
        name: spec.name.clone(),
        description: spec.description.clone(),
        kind: spec.kind,
        state: s.state,
        health: s.health.clone(),
        dependencies: spec.dependencies.clone(),
        startup_priority: spec.priority,
        layer: s.layer,
        resources: spec.resources,
        health_check: spec.health,
        recovery: spec.recovery,
        replicas: Replicas {
            running: s.replicas_running,
            min: spec.replicas.min,
            max: spec.replicas.max,
        },
        capabilities: spec.capabilities.clone(),
        restart_count: s.restarts,
        generation: s.generation,
        started_at: s
            .started_at
            .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        uptime_seconds: s
            .started_at
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs()),
        queue_depth: s.queue_depth,
        requests: requests(edges, &spec.name),
        operations,
        circuits,
        anomalies,
        autoscale: spec.autoscale,
    }
}

async fn snapshot(state: &AppState) -> Result<Snapshot, ApiError> {
    Ok(state.client.snapshot().await?)
}

/// Every service: type, state, health and its reason, replicas, restarts, traffic, breakers,
/// anomalies.
#[utoipa::path(get, path = "/v1/services", tag = "orchestration",
    responses((status = 200, description = "Every registered service", body = ServiceList)))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snap = snapshot(&state).await?;
    let edges = state.client.bus().edges();
    let anomalies = state.client.anomalies().borrow().clone();
    let services = snap
        .services
        .iter()
        .map(|s| view(s, &edges, &anomalies))
        .collect();
    Ok(Json(ServiceList {
        readiness: snap.readiness.clone(),
        services,
    })
    .into_response())
}

/// How often the live services stream sends a sample.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One service's traffic so far, to take the next sample's difference from.
#[derive(Default)]
struct Totals {
    calls: u64,
    errors: u64,
    latency: HistogramSnapshot,
}

fn totals(edges: &[EdgeSnapshot], service: &ServiceName) -> Totals {
    let mut t = Totals::default();
    for e in edges.iter().filter(|e| &e.callee == service) {
        t.calls += e.calls;
        t.errors += e.errors + e.dead_lettered;
        t.latency.merge(&e.latency);
    }
    t
}

/// The figures over the interval between the totals `before` and `now`.
fn window(now: &Totals, before: Option<&Totals>) -> Window {
    let empty = Totals::default();
    let before = before.unwrap_or(&empty);
    // A restarted bus edge starts from zero again: then everything it holds is new.
    let fresh = now.calls < before.calls;
    let (calls, errors, latency) = if fresh {
        (now.calls, now.errors, now.latency.clone())
    } else {
        (
            now.calls - before.calls,
            now.errors.saturating_sub(before.errors),
            now.latency.minus(&before.latency),
        )
    };
    Window {
        calls,
        errors,
        error_rate: if calls == 0 {
            0.0
        } else {
            errors as f64 / calls as f64
        },
        latency_p50_ms: ms(latency.quantile(0.5)),
        latency_p99_ms: ms(latency.quantile(0.99)),
    }
}

/// The services, live, as server-sent events: a `services` event at once and then one per second,
/// each with the figures over the interval since the one before (`window`) beside the running
/// totals. While the supervisor cannot answer, an `unavailable` event carries the error instead.
#[utoipa::path(get, path = "/v1/services/stream", tag = "orchestration",
    responses((status = 200, description = "`text/event-stream` of `services` events, one per second",
        content_type = "text/event-stream", body = ServiceSample)))]
pub(crate) async fn stream(
    State(state): State<AppState>,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let before: HashMap<ServiceName, Totals> = HashMap::new();
    let samples = futures::stream::unfold(
        (state.clone(), ticks, before),
        |(state, mut ticks, mut before)| async move {
            ticks.tick().await;
            let event = match sample(&state, &mut before).await {
                Ok(event) => event,
                Err(e) => SseEvent::default()
                    .event("unavailable")
                    .json_data(ErrorBody::from(&e))
                    .unwrap_or_default(),
            };
            Some((Ok(event), (state, ticks, before)))
        },
    )
    .take_until(state.shutdown.clone().cancelled_owned());
    Sse::new(samples).keep_alive(KeepAlive::default())
}

async fn sample(
    state: &AppState,
    before: &mut HashMap<ServiceName, Totals>,
) -> Result<SseEvent, ApiError> {
    let snap = snapshot(state).await?;
    let edges = state.client.bus().edges();
    let anomalies = state.client.anomalies().borrow().clone();
    let mut services = Vec::with_capacity(snap.services.len());
    let mut now_totals = HashMap::with_capacity(snap.services.len());
    for s in &snap.services {
        let name = &s.spec.name;
        let now = totals(&edges, name);
        services.push(SampledService {
            service: view(s, &edges, &anomalies),
            window: window(&now, before.get(name)),
        });
        now_totals.insert(name.clone(), now);
    }
    *before = now_totals;
    let body = ServiceSample {
        at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        readiness: snap.readiness,
        services,
    };
    SseEvent::default()
        .event("services")
        .json_data(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// One service.
#[utoipa::path(get, path = "/v1/services/{name}", tag = "orchestration",
    params(("name" = String, Path, description = "The service's name")),
    responses(
        (status = 200, description = "The service", body = ServiceView),
        (status = 404, description = "No such service (`service.not_found`)", body = ErrorBody),
    ))]
pub(crate) async fn one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let snap = snapshot(&state).await?;
    let edges = state.client.bus().edges();
    let s = snap.service(name.as_str()).ok_or_else(|| {
        ApiError::not_found(
            "service.not_found",
            format!("no service named {:?}", name.as_str()),
        )
    })?;
    let anomalies = state.client.anomalies().borrow().clone();
    Ok(Json(view(s, &edges, &anomalies)).into_response())
}

fn command_response(answer: runtime::Answer) -> Response {
    let status = if answer.accepted {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, Json(answer)).into_response()
}

/// Restarts the service (a new incarnation; the journal records why: `operator`).
#[utoipa::path(post, path = "/v1/services/{name}/restart", tag = "orchestration",
    params(("name" = String, Path, description = "The service's name")),
    responses(
        (status = 202, description = "Accepted: the command runs; follow it in the journal", body = runtime::Answer),
        (status = 200, description = "Nothing to do (for example already stopped); `message` says why", body = runtime::Answer),
        (status = 404, description = "No such service", body = ErrorBody),
    ))]
pub(crate) async fn restart(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(command_response(
        state.client.restart(&parse_name(&name)?).await?,
    ))
}

/// Stops the service (its dependents first).
#[utoipa::path(post, path = "/v1/services/{name}/stop", tag = "orchestration",
    params(("name" = String, Path, description = "The service's name")),
    responses(
        (status = 202, description = "Accepted: the service stops", body = runtime::Answer),
        (status = 200, description = "Nothing to do; `message` says why", body = runtime::Answer),
        (status = 404, description = "No such service", body = ErrorBody),
    ))]
pub(crate) async fn stop(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(command_response(
        state.client.stop(&parse_name(&name)?).await?,
    ))
}

/// Starts a stopped or failed service (its dependencies must be up).
#[utoipa::path(post, path = "/v1/services/{name}/start", tag = "orchestration",
    params(("name" = String, Path, description = "The service's name")),
    responses(
        (status = 202, description = "Accepted: the service starts", body = runtime::Answer),
        (status = 200, description = "Nothing to do; `message` says why", body = runtime::Answer),
        (status = 404, description = "No such service", body = ErrorBody),
    ))]
pub(crate) async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(command_response(
        state.client.start(&parse_name(&name)?).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultBody {
    kind: Fault,
}

/// Injects a fault into the service's running incarnation (chaos testing and demos). Exists only
/// when the configuration says `[testing] fault_injection = true`.
#[utoipa::path(post, path = "/v1/services/{name}/faults", tag = "orchestration",
    params(("name" = String, Path, description = "The service's name")),
    request_body = FaultBody,
    responses(
        (status = 202, description = "Injected", body = runtime::Answer),
        (status = 409, description = "Not injected: no replica is ready (`service.not_running`)", body = ErrorBody),
        (status = 400, description = "Not a fault kind", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
    ))]
pub(crate) async fn fault(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    body: Result<input::Json<FaultBody>, ApiError>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let input::Json(body) = body.map_err(|e| ApiError {
        message: format!(
            "{}; expected {{\"kind\": \"panic\" | \"hang\" | \"error\"}}",
            e.message
        ),
        ..e
    })?;
    Ok(command_response(
        state.client.inject_fault(&name, body.kind).await?,
    ))
}

/// The dependency graph: nodes, edges and start layers.
#[utoipa::path(get, path = "/v1/graph", tag = "orchestration",
    responses((status = 200, description = "The dependency graph", body = GraphView)))]
pub(crate) async fn graph(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snap = snapshot(&state).await?;
    let nodes = snap
        .services
        .iter()
        .map(|s| GraphNode {
            name: s.spec.name.clone(),
            kind: s.spec.kind,
            state: s.state,
            health: s.health.clone(),
            startup_priority: s.spec.priority,
            layer: s.layer,
        })
        .collect();
    let edges = snap
        .edges
        .iter()
        .map(|(from, to)| GraphEdge {
            from: from.clone(),
            to: to.clone(),
        })
        .collect();
    Ok(Json(GraphView {
        nodes,
        edges,
        layers: snap.layers.clone(),
    })
    .into_response())
}

/// The message bus: traffic per edge, broadcasts, dead letters.
#[utoipa::path(get, path = "/v1/bus", tag = "orchestration",
    responses((status = 200, description = "The bus's figures", body = BusView)))]
pub(crate) async fn bus(State(state): State<AppState>) -> Json<BusView> {
    let bus = state.client.bus();
    let (published, delivered) = bus.broadcast_counts();
    Json(BusView {
        edges: bus.edges(),
        broadcast: Broadcast {
            published,
            delivered,
        },
        dead_letters: DeadLetterView {
            total: bus.dead_letters().total(),
            recent: bus.dead_letters().letters(),
        },
    })
}

/// Anomalies raised now, with their evidence and the action taken.
#[utoipa::path(get, path = "/v1/anomalies", tag = "orchestration",
    responses((status = 200, description = "Raised anomalies", body = AnomalyList)))]
pub(crate) async fn anomalies(State(state): State<AppState>) -> Json<AnomalyList> {
    let anomalies = state.client.anomalies().borrow().clone();
    Json(AnomalyList { anomalies })
}
