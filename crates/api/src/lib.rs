//! Cloister's HTTP API: health probes, Prometheus metrics, and the admin endpoints that inspect and
//! command the orchestrator. The only crate that knows HTTP.

mod account;
mod attestation;
mod auth;
mod computation;
mod config;
mod crypto;
mod dashboard;
mod error;
mod events;
mod input;
mod metrics;
mod orchestration;
mod storage;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub client: runtime::Client,
    pub admin_token: Arc<str>,
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
    /// Cancelled when the server shuts down, so long-lived streams end.
    pub shutdown: CancellationToken,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let mut admin = Router::new()
        .route("/v1/services", get(orchestration::list))
        .route("/v1/services/stream", get(orchestration::stream))
        .route("/v1/services/{name}", get(orchestration::one))
        .route("/v1/services/{name}/restart", post(orchestration::restart))
        .route("/v1/services/{name}/stop", post(orchestration::stop))
        .route("/v1/services/{name}/start", post(orchestration::start))
        .route("/v1/graph", get(orchestration::graph))
        .route("/v1/bus", get(orchestration::bus))
        .route("/v1/config", get(config::show).put(config::apply))
        .route("/v1/config/history", get(config::history))
        .route("/v1/config/versions/{version}", get(config::version))
        .route("/v1/config/rollback", post(config::rollback))
        .route("/v1/anomalies", get(orchestration::anomalies))
        .route("/v1/attestation", get(attestation::attest))
        .route("/v1/computation/pool", get(computation::pool))
        .route("/v1/events", get(events::list))
        .route("/v1/events/stream", get(events::stream));
    if state.config.testing.fault_injection {
        admin = admin.route("/v1/services/{name}/faults", post(orchestration::fault));
    }
    let admin = admin.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_admin,
    ));
    // Service endpoints: an account token (or the admin token), acting for that account only.
    let services = Router::new()
        .route("/v1/accounts", get(account::list).post(account::create))
        .route(
            "/v1/accounts/{id}",
            get(account::get).delete(account::delete),
        )
        .route("/v1/accounts/{id}/disable", post(account::disable))
        .route("/v1/accounts/{id}/enable", post(account::enable))
        .route(
            "/v1/accounts/{id}/tokens",
            get(account::tokens).post(account::issue),
        )
        .route(
            "/v1/accounts/{id}/tokens/{token}",
            axum::routing::delete(account::revoke),
        )
        .route("/v1/crypto/keys", get(crypto::list).post(crypto::generate))
        .route(
            "/v1/crypto/keys/{id}",
            get(crypto::describe).delete(crypto::delete),
        )
        .route("/v1/crypto/keys/{id}/sign", post(crypto::sign))
        .route("/v1/crypto/keys/{id}/verify", post(crypto::verify))
        .route("/v1/crypto/keys/{id}/encrypt", post(crypto::encrypt))
        .route("/v1/crypto/keys/{id}/decrypt", post(crypto::decrypt))
        .route("/v1/crypto/keys/{id}/derive", post(crypto::derive))
        .route("/v1/crypto/keys/{id}/rotate", post(crypto::rotate))
        .route(
            "/v1/computation/run",
            post(computation::run).layer(computation::body_limit(&state.config)),
        )
        .route(
            "/v1/computation/jobs",
            get(computation::jobs)
                .post(computation::submit)
                .layer(computation::body_limit(&state.config)),
        )
        .route(
            "/v1/computation/jobs/{id}",
            get(computation::job).delete(computation::cancel),
        )
        .route("/v1/storage", get(storage::list).post(storage::batch))
        .route(
            "/v1/storage/{*key}",
            get(storage::get)
                .put(storage::put)
                .delete(storage::delete)
                // The service holds values to its own limit (and answers 413 with a JSON error);
                // this is only the ceiling of that setting.
                .layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_caller,
        ));
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::script))
        .route("/assets/app.css", get(dashboard::style))
        .route("/livez", get(orchestration::livez))
        .route("/readyz", get(orchestration::readyz))
        .route("/metrics", get(metrics::render))
        .merge(admin)
        .merge(services)
        .fallback(not_found)
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets open requests finish.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "http.not_found",
        format!("no endpoint at {}", uri.path()),
    )
}
