//! Bearer-token authentication: the admin token for orchestration, an account token (or the admin
//! token) for the service endpoints, which then act for the caller's account only.

use std::time::Duration;

use account::{Area, AuthError, Principal, TokenDigest};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::{ApiError, AppState};

/// The admin token, kept only as its digest: the secret itself is not in the server's state (nor
/// in its `Debug`). A presented token is hashed once, compared with it in a time that does not
/// depend on where they differ, and, when it is not the admin's, looked up by the same digest.
#[derive(Debug, Clone, Copy)]
pub struct AdminToken(TokenDigest);

impl AdminToken {
    pub fn new(secret: &str) -> AdminToken {
        AdminToken(TokenDigest::of(secret))
    }

    pub(crate) fn matches(&self, given: &TokenDigest) -> bool {
        self.0.matches(given)
    }
}

/// The bearer token of a request, or 401 saying how to send one.
fn bearer(request: &Request, needs: &str) -> Result<String, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "auth.missing_token",
            format!("this endpoint needs {needs}: send `Authorization: Bearer TOKEN`"),
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .ok_or_else(invalid_token)
}

/// 401 `auth.invalid_token`, as the account gate answers a token it does not know.
fn invalid_token() -> ApiError {
    ApiError::from(AuthError::Unknown)
}

/// The one rule of admin endpoints: the admin token passes; a valid account token is 403
/// `auth.admin_only` (the caller is known, it just may not do this); a token the runtime does not
/// know is 401 `auth.invalid_token`. Expired and disabled account tokens answer as they do
/// everywhere else.
pub(crate) async fn require_admin(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = TokenDigest::of(&bearer(&request, "the admin token")?);
    if state.admin_token.matches(&token) {
        request.extensions_mut().insert(Caller::Admin);
        return Ok(next.run(request).await);
    }
    match state.accounts.authenticate_digest(&token) {
        Ok(_) => Err(admin_only("this endpoint")),
        // Not the admin token, and accounts cannot be told yet: refuse it as any unknown token
        // (admin endpoints must answer while the account service is down).
        Err(AuthError::Loading) => Err(invalid_token()),
        Err(e) => Err(ApiError::from(e)),
    }
}

/// `GET /metrics`: open unless `[runtime] metrics_auth` is on (read at start), then the rule of
/// admin endpoints ([`require_admin`]), with the same answers.
pub(crate) async fn metrics_gate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.config.runtime.metrics_auth {
        return Ok(next.run(request).await);
    }
    require_admin(State(state), request, next).await
}

/// 403 `auth.admin_only`: `what` needs the admin token, and the caller holds an account token.
pub(crate) fn admin_only(what: &str) -> ApiError {
    ApiError::forbidden(
        "auth.admin_only",
        format!("{what} needs the admin token; an account token may not use it"),
    )
}

/// Who is calling a service endpoint.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// The admin token: acts for the owner `admin`, every scope, no rate limit.
    Admin,
    Account(Principal),
}

/// The owner the admin token acts for in the services (its own keys and namespace).
pub(crate) const ADMIN_OWNER: &str = "admin";

impl Caller {
    /// The owner of every key, value and job this caller touches.
    pub(crate) fn owner(&self) -> &str {
        match self {
            Caller::Admin => ADMIN_OWNER,
            Caller::Account(p) => &p.account,
        }
    }

    /// The caller's default signing key, if it has one (accounts do; the admin does not).
    pub(crate) fn signing_key(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Account(p) => Some(&p.signing_key),
        }
    }

    /// Whether the token's scopes include `operation` of `area`.
    pub(crate) fn may(&self, area: Area, operation: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Account(p) => p.allows(area, operation),
        }
    }

    /// 403 unless the token's scopes include `operation` of `area`.
    pub(crate) fn allow(&self, area: Area, operation: &str) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Account(p) if p.allows(area, operation) => Ok(()),
            Caller::Account(p) => Err(ApiError::forbidden(
                "auth.scope",
                format!(
                    "token {} may not use {}:{operation}; issue a token with that scope",
                    p.token,
                    area.as_str()
                ),
            )),
        }
    }
}

/// A service endpoint's caller, as an extractor: [`require_caller`] resolved it (once, for every
/// route behind it) and a handler names it in its signature. A route not behind `require_caller`
/// has no caller: a mistake in `lib.rs`, answered as an internal error, never as the admin.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "a service endpoint is not behind require_caller");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "this endpoint has no caller; this is a bug in the API's routes",
            )
        })
    }
}

/// The admin, as an extractor: a handler that only the admin token may call names it before any
/// extractor that reads the body, so an account token hears 403 `auth.admin_only` whatever body
/// it sent (and a request without a valid token has had its 401 from the middleware already).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Admin, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin => Ok(Admin),
            Caller::Account(_) => Err(admin_only("this endpoint")),
        }
    }
}

/// An operation a token's scopes may include, as a type, so that a handler can say it in its
/// signature ([`Allowed`]) and the check is made before the body is read.
pub(crate) trait Operation {
    const AREA: Area;
    const NAME: &'static str;
}

/// The operations of the endpoints that take a body, each an [`Operation`].
pub(crate) mod op {
    use account::Area;

    macro_rules! operations {
        ($($name:ident = $area:ident : $operation:literal),* $(,)?) => {$(
            #[derive(Debug)]
            pub(crate) struct $name;
            impl super::Operation for $name {
                const AREA: Area = Area::$area;
                const NAME: &'static str = $operation;
            }
        )*};
    }

    operations![
        CryptoGenerate = Crypto: "generate",
        CryptoSign = Crypto: "sign",
        CryptoVerify = Crypto: "verify",
        CryptoEncrypt = Crypto: "encrypt",
        CryptoDecrypt = Crypto: "decrypt",
        CryptoDerive = Crypto: "derive",
        StoragePut = Storage: "put",
        StorageBatch = Storage: "batch",
        ComputationRun = Computation: "run",
        ComputationJobs = Computation: "jobs",
        OracleRequest = Oracle: "request",
        AiModels = Ai: "models",
        AiPredict = Ai: "predict",
        AiTrain = Ai: "train",
    ];
}

/// A caller whose token's scopes include the operation `O`, as an extractor: 403 `auth.scope`
/// otherwise, before any extractor after it reads the body.
#[derive(Debug)]
pub(crate) struct Allowed<O>(pub Caller, pub std::marker::PhantomData<O>);

impl<O: Operation, S: Send + Sync> FromRequestParts<S> for Allowed<O> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Allowed<O>, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.allow(O::AREA, O::NAME)?;
        Ok(Allowed(caller, std::marker::PhantomData))
    }
}

/// Resolves the caller of a service endpoint and applies its account's rate limit.
pub(crate) async fn require_caller(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = TokenDigest::of(&bearer(&request, "an account token (or the admin token)")?);
    let caller = if state.admin_token.matches(&token) {
        Caller::Admin
    } else {
        let principal = state
            .accounts
            .authenticate_digest(&token)
            .map_err(ApiError::from)?;
        if let Err(wait) = state.accounts.admit(&principal.account) {
            return Err(ApiError::rate_limited(
                format!(
                    "account {} is over its rate limit; retry in {} ms",
                    principal.account,
                    wait.as_millis().max(1)
                ),
                retry_secs(wait),
            ));
        }
        Caller::Account(principal)
    };
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// `Retry-After` is in whole seconds: round up, at least one.
fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use account::TokenDigest;

    use super::AdminToken;

    #[test]
    fn the_admin_token_matches_only_itself_and_is_kept_only_as_a_digest() {
        let secret = "admin-token-0123456789abcdef";
        let admin = AdminToken::new(secret);
        assert!(admin.matches(&TokenDigest::of(secret)));
        for other in [
            "",
            "admin-token-0123456789abcdeF",
            "admin-token-0123456789abcde",
        ] {
            assert!(!admin.matches(&TokenDigest::of(other)), "{other:?}");
        }
        // The server's state derives Debug: nothing of the secret may show in it.
        let shown = format!("{admin:?}");
        assert_eq!(shown, "AdminToken(TokenDigest(..))");
    }
}
