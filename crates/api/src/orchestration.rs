//! Admin endpoints over the supervisor: services, lifecycle commands, the graph, faults, readiness.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::StreamExt;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runtime::bus::EdgeSnapshot;
use runtime::journal::Fault;
use runtime::{RuntimeLevel, ServiceName, ServiceStatus, Snapshot};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{ApiError, AppState};

fn parse_name(name: &str) -> Result<ServiceName, ApiError> {
    // An invalid name cannot be a registered one: answer as for any unknown service.
    ServiceName::new(name)
        .map_err(|_| ApiError::not_found("service.not_found", format!("no service named {name:?}")))
}

pub(crate) async fn livez() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.client.readiness().borrow().clone();
    let status = match readiness.level {
        RuntimeLevel::Ready | RuntimeLevel::Degraded => StatusCode::OK,
        RuntimeLevel::NotReady => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(readiness)).into_response()
}

/// A service as the API shows it.
#[derive(Serialize)]
pub(crate) struct ServiceView<'a> {
    name: &'a ServiceName,
    description: &'a str,
    #[serde(rename = "type")]
    kind: runtime::Kind,
    state: runtime::State,
    health: &'a runtime::Health,
    dependencies: &'a [ServiceName],
    startup_priority: runtime::Priority,
    layer: usize,
    resources: &'a runtime::spec::Resources,
    health_check: &'a runtime::spec::HealthPolicy,
    recovery: &'a runtime::spec::Recovery,
    replicas: Replicas,
    capabilities: &'a [runtime::Capability],
    restart_count: u64,
    generation: u64,
    started_at: Option<String>,
    uptime_seconds: Option<u64>,
    queue_depth: usize,
    requests: Requests,
    operations: Vec<Value>,
    circuits: Vec<Value>,
    anomalies: Vec<Value>,
    autoscale: &'a runtime::autoscale::AutoscalePolicy,
}

#[derive(Serialize)]
struct Replicas {
    running: u32,
    min: u32,
    max: u32,
}

/// Request figures over every edge into the service.
#[derive(Serialize, Default)]
pub(crate) struct Requests {
    pub(crate) total: u64,
    pub(crate) errors: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) error_rate: f64,
    pub(crate) latency_p50_ms: Option<f64>,
    pub(crate) latency_p90_ms: Option<f64>,
    pub(crate) latency_p99_ms: Option<f64>,
}

pub(crate) fn requests(edges: &[EdgeSnapshot], service: &ServiceName) -> Requests {
    let mut latency = runtime::bus::HistogramSnapshot::default();
    let mut r = Requests::default();
    for e in edges.iter().filter(|e| &e.callee == service) {
        r.total += e.calls;
        r.errors += e.errors;
        r.dead_lettered += e.dead_lettered;
        latency.merge(&e.latency);
    }
    let settled = r.total.max(1);
    r.error_rate = (r.errors + r.dead_lettered) as f64 / settled as f64;
    r.latency_p50_ms = latency.quantile(0.5).map(|d| d.as_secs_f64() * 1e3);
    r.latency_p90_ms = latency.quantile(0.9).map(|d| d.as_secs_f64() * 1e3);
    r.latency_p99_ms = latency.quantile(0.99).map(|d| d.as_secs_f64() * 1e3);
    r
}

fn view<'a>(
    s: &'a ServiceStatus,
    edges: &[EdgeSnapshot],
    anomalies: &[runtime::monitor::ActiveAnomaly],
) -> ServiceView<'a> {
    let spec = &s.spec;
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let operations = s
        .operations
        .iter()
        .map(|o| {
            json!({
                "operation": o.operation,
                "calls": o.calls,
                "errors": o.errors,
                "latency_p50_ms": ms(o.latency.quantile(0.5)),
                "latency_p90_ms": ms(o.latency.quantile(0.9)),
                "latency_p99_ms": ms(o.latency.quantile(0.99)),
            })
        })
        .collect();
    let circuits = edges
        .iter()
        .filter(|e| e.callee == spec.name)
        .map(|e| {
            json!({
                "caller": e.caller.as_ref().map_or("external", |c| c.as_str()),
                "state": e.breaker.state,
                "consecutive_failures": e.breaker.consecutive_failures,
                "opened": e.breaker.opened,
            })
        })
        .collect();
    let anomalies = anomalies
        .iter()
        .filter(|a| a.service == spec.name)
        .map(|a| json!({ "signal": a.signal, "action": a.action, "evidence": a.evidence }))
        .collect();
    ServiceView {
        name: &spec.name,
        description: &spec.description,
        kind: spec.kind,
        state: s.state,
        health: &s.health,
        dependencies: &spec.dependencies,
        startup_priority: spec.priority,
        layer: s.layer,
        resources: &spec.resources,
        health_check: &spec.health,
        recovery: &spec.recovery,
        replicas: Replicas {
            running: s.replicas_running,
            min: spec.replicas.min,
            max: spec.replicas.max,
        },
        capabilities: &spec.capabilities,
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
        autoscale: &spec.autoscale,
    }
}

async fn snapshot(state: &AppState) -> Result<Snapshot, ApiError> {
    Ok(state.client.snapshot().await?)
}

pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let snap = snapshot(&state).await?;
    let edges = state.client.bus().edges();
    let anomalies = state.client.anomalies().borrow().clone();
    let services: Vec<ServiceView<'_>> = snap
        .services
        .iter()
        .map(|s| view(s, &edges, &anomalies))
        .collect();
    Ok(Json(
        json!({ "readiness": snap.readiness, "services": services }),
    ))
}

/// How often the live services stream sends a sample.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One service's traffic so far, to take the next sample's difference from.
#[derive(Default)]
struct Totals {
    calls: u64,
    errors: u64,
    latency: runtime::bus::HistogramSnapshot,
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

/// Figures over the last sample interval only.
#[derive(Serialize, Default)]
pub(crate) struct Window {
    calls: u64,
    errors: u64,
    error_rate: f64,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
}

impl Window {
    fn between(now: &Totals, before: Option<&Totals>) -> Window {
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
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
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
}

/// The services, live: one sample at once and then one per second, each with the figures over the
/// interval since the one before (`window`) beside the running totals. For the dashboard's charts.
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
                Ok(body) => SseEvent::default().event("services").json_data(body),
                Err(e) => SseEvent::default()
                    .event("unavailable")
                    .json_data(json!({ "error": { "code": e.code, "message": e.message } })),
            };
            Some((Ok(event.unwrap_or_default()), (state, ticks, before)))
        },
    )
    .take_until(state.shutdown.clone().cancelled_owned());
    Sse::new(samples).keep_alive(KeepAlive::default())
}

async fn sample(
    state: &AppState,
    before: &mut HashMap<ServiceName, Totals>,
) -> Result<Value, ApiError> {
    let snap = snapshot(state).await?;
    let edges = state.client.bus().edges();
    let anomalies = state.client.anomalies().borrow().clone();
    let mut services = Vec::with_capacity(snap.services.len());
    let mut now_totals = HashMap::with_capacity(snap.services.len());
    for s in &snap.services {
        let name = &s.spec.name;
        let now = totals(&edges, name);
        let window = Window::between(&now, before.get(name));
        let mut v = serde_json::to_value(view(s, &edges, &anomalies)).map_err(internal)?;
        v["window"] = serde_json::to_value(window).map_err(internal)?;
        services.push(v);
        now_totals.insert(name.clone(), now);
    }
    *before = now_totals;
    Ok(json!({
        "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "readiness": snap.readiness,
        "services": services,
    }))
}

pub(crate) async fn one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(
        serde_json::to_value(view(s, &edges, &anomalies)).map_err(internal)?,
    ))
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

fn command_response(answer: runtime::Answer) -> Response {
    let status = if answer.accepted {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, Json(answer)).into_response()
}

pub(crate) async fn restart(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(command_response(
        state.client.restart(&parse_name(&name)?).await?,
    ))
}

pub(crate) async fn stop(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(command_response(
        state.client.stop(&parse_name(&name)?).await?,
    ))
}

pub(crate) async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(command_response(
        state.client.start(&parse_name(&name)?).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultBody {
    kind: Fault,
}

pub(crate) async fn fault(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<FaultBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(
            "request.invalid_body",
            format!(
                "{}; expected {{\"kind\": \"panic\" | \"hang\" | \"error\"}}",
                e.body_text()
            ),
        )
    })?;
    Ok(command_response(
        state.client.inject_fault(&name, body.kind).await?,
    ))
}

pub(crate) async fn graph(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let snap = snapshot(&state).await?;
    let nodes: Vec<Value> = snap
        .services
        .iter()
        .map(|s| {
            json!({
                "name": s.spec.name,
                "type": s.spec.kind,
                "state": s.state,
                "health": s.health,
                "startup_priority": s.spec.priority,
                "layer": s.layer,
            })
        })
        .collect();
    let edges: Vec<Value> = snap
        .edges
        .iter()
        .map(|(from, to)| json!({ "from": from, "to": to }))
        .collect();
    Ok(Json(
        json!({ "nodes": nodes, "edges": edges, "layers": snap.layers }),
    ))
}

pub(crate) async fn bus(State(state): State<AppState>) -> Json<Value> {
    let bus = state.client.bus();
    let (published, delivered) = bus.broadcast_counts();
    Json(json!({
        "edges": bus.edges(),
        "broadcast": { "published": published, "delivered": delivered },
        "dead_letters": { "total": bus.dead_letters().total(), "recent": bus.dead_letters().letters() },
    }))
}

pub(crate) async fn anomalies(State(state): State<AppState>) -> Json<Value> {
    let active = state.client.anomalies().borrow().clone();
    Json(json!({ "anomalies": active }))
}
