//! The account service over HTTP. Creating, listing, disabling and deleting accounts needs the admin
//! token; an account token may read its own account and manage its own tokens (`account:read`,
//! `account:tokens`), never granting more than it holds. Another account is a 404. `me` names the
//! caller's own account.

use std::time::Duration;

use account::{Area, Request, Scope, TokenGrant};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use wire::accounts::{
    AccountInfo, AccountList, Addresses, CreateBody, Created, IssuedToken, TokenInfo, TokenList,
};

use crate::auth::{Admin, Caller};
use crate::error::ErrorBody;
use crate::input::{self, ask, call_error};
use crate::{ApiError, AppState};

/// The longest `expires_in_s` a token may ask for: ten years.
const MAX_EXPIRES_IN_S: u64 = 10 * 365 * 24 * 3600;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn no_account(id: &str) -> ApiError {
    ApiError::not_found("account.not_found", format!("no account {id:?}"))
}

/// The account `id` names, if the caller may act on it with `operation`: the admin on any, an
/// account on itself only (anything else is a 404, so ids cannot be probed).
fn target(caller: &Caller, id: &str, operation: &str) -> Result<String, ApiError> {
    match caller {
        Caller::Admin if id == "me" => Err(ApiError::not_found(
            "account.not_found",
            "the admin token has no account of its own",
        )),
        Caller::Admin => Ok(id.to_owned()),
        Caller::Account(p) if id == "me" || id == p.account => {
            caller.allow(Area::Account, operation)?;
            Ok(p.account.clone())
        }
        Caller::Account(_) => Err(no_account(id)),
    }
}

/// The API's view of an account (the account service's own type stays inside it).
fn info(a: account::AccountInfo) -> AccountInfo {
    AccountInfo {
        id: a.id,
        name: a.name,
        created_ms: a.created_ms,
        disabled: a.disabled,
        signing_key: a.signing_key,
        public_key: a.public_key,
        addresses: Addresses {
            neo_n3: a.addresses.neo_n3,
        },
        tokens: a.tokens,
    }
}

fn token(t: account::TokenInfo) -> TokenInfo {
    TokenInfo {
        id: t.id,
        name: t.name,
        scopes: t.scopes.iter().map(ToString::to_string).collect(),
        created_ms: t.created_ms,
        expires_ms: t.expires_ms,
    }
}

fn issued(t: account::IssuedToken) -> IssuedToken {
    IssuedToken {
        info: token(t.info),
        secret: t.secret,
    }
}

/// Creates an account (admin) and returns it with its first token (scope `*`), shown once.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", security(("admin" = [])), request_body = CreateBody,
    responses((status = 201, description = "Created; the token's secret appears only here", body = Created),
        (status = 400, description = "Bad name", body = ErrorBody), (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 409, description = "An account of that name exists (`account.name_taken`)", body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    _: Admin,
    input::Json(CreateBody { name }): input::Json<CreateBody>,
) -> Result<Response, ApiError> {
    let created = ask(&state.account, |reply| Request::Create { name, reply }).await?;
    let created = Created {
        account: info(created.account),
        token: issued(created.token),
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Every account (admin).
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", security(("admin" = [])),
    responses((status = 200, description = "Every account", body = AccountList), (status = 403, description = "Not the admin token", body = ErrorBody)))]
pub(crate) async fn list(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let accounts = ask(&state.account, |reply| Request::List { reply }).await?;
    let accounts = accounts.into_iter().map(info).collect();
    Ok(Json(AccountList { accounts }).into_response())
}

/// One account: the admin any, an account itself (`me` names the caller's own).
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "An account id, or `me`")),
    responses((status = 200, description = "The account", body = AccountInfo), (status = 404, description = "No such account (or not the caller's)", body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = target(&caller, &id, "read")?;
    let found = ask(&state.account, |reply| Request::Get { id, reply }).await?;
    Ok(Json(info(found)).into_response())
}

async fn set_disabled(state: AppState, id: String, disabled: bool) -> Result<Response, ApiError> {
    let changed = ask(&state.account, |reply| Request::SetDisabled {
        id,
        disabled,
        reply,
    })
    .await?;
    Ok(Json(info(changed)).into_response())
}

/// Disables an account (admin): its tokens are refused at once.
#[utoipa::path(post, path = "/v1/accounts/{id}/disable", tag = "accounts", security(("admin" = [])),
    params(("id" = String, Path, description = "An account id")),
    responses((status = 200, description = "Disabled", body = AccountInfo), (status = 404, description = "No such account", body = ErrorBody)))]
pub(crate) async fn disable(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(state, id, true).await
}

/// Enables a disabled account (admin).
#[utoipa::path(post, path = "/v1/accounts/{id}/enable", tag = "accounts", security(("admin" = [])),
    params(("id" = String, Path, description = "An account id")),
    responses((status = 200, description = "Enabled", body = AccountInfo), (status = 404, description = "No such account", body = ErrorBody)))]
pub(crate) async fn enable(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(state, id, false).await
}

/// Deletes an account (admin): its tokens, runs and jobs, stored values and keys.
#[utoipa::path(delete, path = "/v1/accounts/{id}", tag = "accounts", security(("admin" = [])),
    params(("id" = String, Path, description = "An account id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such account", body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // First its tokens stop working, then its runs and jobs are stopped (so none writes after its
    // values are gone), then the account service deletes values, keys and the account. A failure
    // part way leaves the account disabled; the delete can be repeated.
    ask(&state.account, |reply| Request::SetDisabled {
        id: id.clone(),
        disabled: true,
        reply,
    })
    .await?;
    state
        .computation
        .call(|reply| computation::Request::Purge {
            owner: id.clone(),
            reply,
        })
        .await
        .map_err(call_error)?;
    // Its training jobs too (the ai service is optional: when it is not running, it has none).
    let _ = state
        .ai
        .call(|reply| ai::Request::Purge {
            owner: id.clone(),
            reply,
        })
        .await;
    ask(&state.account, |reply| Request::Delete { id, reply }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    /// A name to recognise it by (default `unnamed`): as an account's name, 1 to 64 characters
    /// once trimmed, no control characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: Option<String>,
    /// Absent: the same scopes as the caller's token (every scope for the admin).
    #[schema(min_items = 1)]
    scopes: Option<Vec<Scope>>,
    /// Seconds until the token expires, at most ten years; absent: never.
    #[serde(default, deserialize_with = "wire::integer::option")]
    #[schema(minimum = 1, maximum = 315_360_000)]
    expires_in_s: Option<u64>,
}

/// Issues a token for the account, with at most the caller's scopes and lifetime.
#[utoipa::path(post, path = "/v1/accounts/{id}/tokens", tag = "accounts", request_body = IssueBody,
    params(("id" = String, Path, description = "An account id, or `me`")),
    responses((status = 201, description = "Issued; the secret appears only here", body = IssuedToken),
        (status = 400, description = "Unknown scope or bad lifetime (`request.invalid_body`, `account.bad_input`)", body = ErrorBody),
        (status = 404, description = "No such account, or not the caller's (`account.not_found`)", body = ErrorBody),
        (status = 403, description = "Scopes the caller does not hold", body = ErrorBody),
        (status = 409, description = "Too many live tokens (`account.too_many_tokens`)", body = ErrorBody)))]
pub(crate) async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    b: Result<input::Json<IssueBody>, ApiError>,
) -> Result<Response, ApiError> {
    // Who may issue for `id` depends on the path: decided here, before the body is looked at.
    let id = target(&caller, &id, "tokens")?;
    let input::Json(b) = b?;
    let held: Vec<Scope> = match &caller {
        Caller::Admin => vec![Scope::All],
        Caller::Account(p) => p.scopes.to_vec(),
    };
    let scopes = b.scopes.unwrap_or_else(|| held.clone());
    if !account::scope::covers(&held, &scopes) {
        return Err(ApiError::forbidden(
            "auth.scope",
            "a token cannot issue a token with scopes it does not hold",
        ));
    }
    if b.expires_in_s
        .is_some_and(|s| s == 0 || s > MAX_EXPIRES_IN_S)
    {
        return Err(ApiError::bad_request(
            "account.bad_input",
            format!(
                "expires_in_s must be from 1 to {MAX_EXPIRES_IN_S} (ten years); leave it out for a token that does not expire"
            ),
        ));
    }
    let ttl = b.expires_in_s.map(Duration::from_secs);
    // A token cannot outlive the token that issues it: by default the new one expires with it.
    let not_after = match &caller {
        Caller::Admin => None,
        Caller::Account(p) => p.expires_ms,
    };
    if let (Some(asked), Some(at)) = (ttl, not_after) {
        let remaining = Duration::from_millis(at.saturating_sub(now_ms()));
        if asked > remaining {
            return Err(ApiError::bad_request(
                "account.bad_input",
                format!(
                    "a token cannot outlive the token that issues it, which expires in {} s: ask for at most that",
                    remaining.as_secs()
                ),
            ));
        }
    }
    let grant = TokenGrant {
        name: b.name.unwrap_or_else(|| "unnamed".into()),
        scopes,
        ttl,
        not_after,
    };
    let issued = ask(&state.account, |reply| Request::IssueToken {
        id,
        grant,
        reply,
    })
    .await?;
    Ok((StatusCode::CREATED, Json(self::issued(issued))).into_response())
}

/// The account's tokens (never a secret).
#[utoipa::path(get, path = "/v1/accounts/{id}/tokens", tag = "accounts",
    params(("id" = String, Path, description = "An account id, or `me`")),
    responses((status = 200, description = "The tokens", body = TokenList), (status = 404, description = "No such account", body = ErrorBody)))]
pub(crate) async fn tokens(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = target(&caller, &id, "tokens")?;
    let tokens = ask(&state.account, |reply| Request::Tokens { id, reply }).await?;
    let tokens = tokens.into_iter().map(token).collect();
    Ok(Json(TokenList { tokens }).into_response())
}

/// Revokes a token: it stops working at once.
#[utoipa::path(delete, path = "/v1/accounts/{id}/tokens/{token_id}", tag = "accounts",
    params(("id" = String, Path, description = "An account id, or `me`"), ("token_id" = String, Path, description = "A token id")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "No such account or token", body = ErrorBody)))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, token)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = target(&caller, &id, "tokens")?;
    ask(&state.account, |reply| Request::RevokeToken {
        id,
        token,
        reply,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
