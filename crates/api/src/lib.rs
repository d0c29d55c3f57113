//! Cloister's HTTP API: health probes, Prometheus metrics, and the admin endpoints that inspect and
//! command the orchestrator, the six services' endpoints, the OpenAPI document and the dashboard's
//! assets. The only crate that serves HTTP (the oracle and the CLI are HTTP clients).

mod account;
mod ai;
mod attestation;
mod auth;
mod body;
pub mod budget;
mod cluster;
mod computation;
mod config;
mod crypto;
mod dashboard;
mod error;
mod events;
mod input;
mod metrics;
mod openapi;
mod oracle;
mod orchestration;
pub mod request_id;
mod server;
mod storage;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use auth::AdminToken;
pub use error::{ApiError, ErrorBody, ErrorDetail};

/// The JSON bodies the API reads into types of its own; every other endpoint's body is a type of
/// `wire` or of its service. Public for the fuzz targets in `fuzz/`.
pub mod bodies {
    pub use crate::account::IssueBody;
    pub use crate::orchestration::FaultBody;
}
pub use server::{DEADLINE_HEADER, LimitError, Limits, MIN_CONNECTIONS, NODE_HEADER, serve};

/// What every handler can reach: the [`Shared`] parts behind one reference count. axum clones the
/// state for every middleware and extractor that takes it, several times per request; a clone of
/// the parts themselves was one atomic increment and decrement per handle inside (some forty),
/// on counters every request on every core touches, and a quarter of a storage GET's CPU.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    pub client: runtime::Client,
    pub admin_token: AdminToken,
    /// The configuration the process started with (start-only settings such as fault injection).
    pub config: Arc<runtime::config::Config>,
    /// The hot-configuration controller.
    pub configs: runtime::reconfig::Handle,
    /// The enclave platform (simulation or Gramine).
    pub platform: Arc<dyn enclave::Platform>,
    /// The crypto service.
    pub crypto: ::crypto::Handle,
    /// The storage service.
    pub storage: ::storage::Handle,
    /// The account service, for account and token management.
    pub account: ::account::Handle,
    /// Resolves account tokens and applies the per-account rate limit.
    pub accounts: ::account::Gate,
    /// The computation service.
    pub computation: ::computation::Handle,
    /// The oracle service (optional: calls answer 503 while it is disabled or down).
    pub oracle: ::oracle::Handle,
    /// The ai service (optional, as the oracle).
    pub ai: ::ai::Handle,
    /// Predictions of small models the ai service has loaded, made on the request's own task.
    pub ai_inline: ::ai::Inline,
    /// Reads of values the storage service has cached, answered on the request's own task.
    pub storage_reads: ::storage::Reads,
    /// This node in its cluster (on PostgreSQL), or a node of none.
    pub cluster: std::sync::Arc<::cluster::Node>,
    /// Cancelled when the server shuts down, so long-lived streams end.
    pub shutdown: CancellationToken,
}

/// The unauthenticated paths a container runtime or Prometheus is pointed at. The routes are
/// declared with the same literals (`#[utoipa::path]` takes no constant); `probe_paths_are_routes`
/// in `tests/http` checks they agree.
pub mod probes {
    /// The process answers.
    pub const LIVEZ: &str = "/livez";
    /// Ready or degraded (200), or not ready (503).
    pub const READYZ: &str = "/readyz";
    /// Prometheus text.
    pub const METRICS: &str = "/metrics";
}

/// The whole API, and its OpenAPI document built from the same route declarations.
pub fn router(state: AppState) -> Router {
    let (router, api) = routes(&state).split_for_parts();
    let api = openapi::finish(api);
    let document = openapi::Document::new(&api);
    router
        .fallback(not_found)
        .layer(axum::Extension(document))
        .with_state(state)
}

/// The OpenAPI document of the API `config` would serve (the fault-injection endpoint exists only
/// where the configuration enables it).
pub fn openapi(state: &AppState) -> utoipa::openapi::OpenApi {
    openapi::finish(routes(state).into_openapi())
}

/// Every route. Each goes through `routes!`, which reads its method and path from the handler's
/// `#[utoipa::path]`: a route cannot be served without being documented.
fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let mut admin = OpenApiRouter::new()
        .routes(routes!(orchestration::list))
        .routes(routes!(orchestration::stream))
        .routes(routes!(orchestration::one))
        .routes(routes!(orchestration::restart))
        .routes(routes!(orchestration::stop))
        .routes(routes!(orchestration::start))
        .routes(routes!(orchestration::graph))
        .routes(routes!(orchestration::bus))
        .routes(routes!(config::show, config::apply))
        .routes(routes!(config::history))
        .routes(routes!(config::version))
        .routes(routes!(config::rollback))
        .routes(routes!(orchestration::anomalies))
        .routes(routes!(attestation::attest))
        .routes(routes!(cluster::status))
        .routes(routes!(cluster::init))
        .routes(routes!(cluster::remove))
        .routes(routes!(cluster::rotate))
        .routes(routes!(computation::pool))
        .routes(routes!(events::list))
        .routes(routes!(events::stream));
    if state.config.testing.fault_injection {
        admin = admin.routes(routes!(orchestration::fault));
    }
    // Every operation here is admin-only: the document says so with the `admin` scheme, and the
    // middleware answers 403 `auth.admin_only` to an account token.
    openapi::admin_only(admin.get_openapi_mut());
    let admin = admin.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_admin,
    ));
    // Service endpoints: an account token (or the admin token), acting for that account only.
    let limited = |limit| {
        (
            axum::middleware::from_fn_with_state((state.clone(), limit), body::limit),
            axum::extract::DefaultBodyLimit::disable(),
        )
    };
    let services = OpenApiRouter::new()
        .routes(routes!(account::list, account::create))
        .routes(routes!(account::get, account::delete))
        .routes(routes!(account::disable))
        .routes(routes!(account::enable))
        .routes(routes!(account::tokens, account::issue))
        .routes(routes!(account::revoke))
        .routes(routes!(crypto::list, crypto::generate))
        .routes(routes!(crypto::describe, crypto::delete))
        .routes(routes!(crypto::sign))
        .routes(routes!(crypto::verify))
        .routes(routes!(crypto::encrypt))
        .routes(routes!(crypto::decrypt))
        .routes(routes!(crypto::derive))
        .routes(routes!(crypto::rotate))
        .routes(routes!(computation::run).layer(limited(body::Limit::Run)))
        .routes(routes!(computation::jobs, computation::submit).layer(limited(body::Limit::Run)))
        .routes(routes!(computation::job, computation::cancel))
        .routes(routes!(storage::list, storage::batch))
        .routes(routes!(oracle::request))
        .routes(routes!(oracle::key))
        .routes(routes!(ai::models, ai::upload).layer(limited(body::Limit::Model)))
        .routes(routes!(ai::model, ai::delete))
        .routes(routes!(ai::predict).layer(limited(body::Limit::Predict)))
        .routes(routes!(ai::train).layer(limited(body::Limit::Train)))
        .routes(routes!(ai::jobs))
        .routes(routes!(ai::job, ai::cancel));
    // A key may contain `/`: axum matches it with a wildcard the document spells `{key}`. A value
    // over `max_value_bytes` is refused before it is read (or as it streams past), with the
    // service's own 413.
    let services = at_wildcard(
        services,
        "/v1/storage/{*key}",
        routes!(storage::get, storage::put, storage::delete)
            .layer(limited(body::Limit::StorageValue)),
    )
    .route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_caller,
    ));
    OpenApiRouter::new()
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::script))
        .routes(routes!(dashboard::style))
        .routes(routes!(orchestration::livez))
        .routes(routes!(orchestration::readyz))
        .routes(
            routes!(metrics::render).layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::metrics_gate,
            )),
        )
        .routes(routes!(openapi::document))
        .routes(routes!(cluster::challenge))
        .routes(routes!(cluster::join))
        .merge(admin)
        .merge(services)
}

/// Serves `routes` at `axum_path` and documents them at the path their `#[utoipa::path]` gives.
fn at_wildcard(
    router: OpenApiRouter<AppState>,
    axum_path: &str,
    (schemas, paths, method_router): UtoipaMethodRouter<AppState>,
) -> OpenApiRouter<AppState> {
    let mut router = router.route(axum_path, method_router);
    let api = router.get_openapi_mut();
    for (path, item) in paths.paths {
        match api.paths.paths.get_mut(&path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                api.paths.paths.insert(path, item);
            }
        }
    }
    api.components
        .get_or_insert_with(Default::default)
        .schemas
        .extend(schemas);
    router
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "http.not_found",
        format!("no endpoint at {}", uri.path()),
    )
}
