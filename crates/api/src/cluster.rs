//! The cluster (docs/cluster.md): `GET /v1/cluster` and `POST /v1/cluster/init` for the admin;
//! `POST /v1/cluster/challenge` and `POST /v1/cluster/join`, the admission exchange, for any
//! caller, since a joiner has no token: its quote is what is checked. Every admission and every
//! refusal goes to the journal.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use runtime::journal::{Cause, Event};
use wire::cluster::{Challenge, Initialized, JoinAnswer, JoinRequest, Removed, Rotated, Status};

use crate::error::ErrorBody;
use crate::{ApiError, AppState};

/// Journals what an operator's `command` did: `action` on `subject`, with `detail`.
fn operator_audit(
    state: &AppState,
    action: &str,
    subject: &str,
    detail: BTreeMap<String, String>,
    command: &str,
) {
    state.client.journal().append(
        None,
        None,
        Event::Audit {
            action: action.into(),
            subject: subject.into(),
            detail,
        },
        Cause::Operator {
            command: command.into(),
        },
    );
}

/// The cluster, this node and the members, as the database records them.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses(
        (status = 200, description = "The cluster and its members", body = Status),
        (status = 503, description = "The database is out of reach (`cluster.unavailable`)", body = ErrorBody),
    ))]
pub(crate) async fn status(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    Ok(Json(state.cluster.status().await?))
}

/// Creates the cluster on this node: a new cluster key, sealed here, and the cluster's record in
/// the database. Once per database.
#[utoipa::path(post, path = "/v1/cluster/init", tag = "cluster",
    responses(
        (status = 201, description = "The cluster is made; this node is its first member", body = Initialized),
        (status = 409, description = "A cluster exists already (`cluster.exists`)", body = ErrorBody),
        (status = 501, description = "Storage is not PostgreSQL (`cluster.unsupported`)", body = ErrorBody),
    ))]
pub(crate) async fn init(
    State(state): State<AppState>,
) -> Result<(axum::http::StatusCode, Json<Initialized>), ApiError> {
    let made = state.cluster.init().await?;
    let mut detail = BTreeMap::new();
    detail.insert("key_check".to_owned(), made.key_check.clone());
    detail.insert("policy".to_owned(), made.policy.to_string());
    operator_audit(
        &state,
        "cluster.initialized",
        &made.id,
        detail,
        "cluster init",
    );
    Ok((axum::http::StatusCode::CREATED, Json(made)))
}

/// Removes a node from the cluster: it may not join again, and a running one gives up the
/// cluster key and stops at its next heartbeat (within 5 seconds).
#[utoipa::path(delete, path = "/v1/cluster/members/{node}", tag = "cluster",
    params(("node" = String, Path, description = "The node's id, as `GET /v1/cluster` lists it")),
    responses(
        (status = 200, description = "The node is removed", body = Removed),
        (status = 409, description = "This node holds no cluster key, or is the node named (`cluster.not_member`, `cluster.refused`)", body = ErrorBody),
        (status = 503, description = "The database is out of reach (`cluster.unavailable`)", body = ErrorBody),
    ))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    axum::extract::Path(node): axum::extract::Path<String>,
) -> Result<Json<Removed>, ApiError> {
    let removed = state.cluster.remove(&node).await?;
    let mut detail = BTreeMap::new();
    detail.insert("was_member".to_owned(), removed.was_member.to_string());
    detail.insert("removed_by".to_owned(), removed.removed_by.clone());
    operator_audit(
        &state,
        "cluster.removed",
        &removed.node,
        detail,
        "cluster remove",
    );
    Ok(Json(removed))
}

/// Rotates the cluster key: a new key, sealed in the database to each member's own key (not to
/// removed nodes), and every key of the crypto service re-wrapped under it. Members go on serving;
/// each takes the new key at its next heartbeat or the first time it meets a key wrapped by it.
#[utoipa::path(post, path = "/v1/cluster/rotate", tag = "cluster",
    responses(
        (status = 200, description = "The key is rotated; the members it was sealed to, those left out, and the keys re-wrapped", body = Rotated),
        (status = 409, description = "This node holds no cluster key, or another member rotated first (`cluster.not_member`, `cluster.refused`)", body = ErrorBody),
        (status = 501, description = "Storage is not PostgreSQL (`cluster.unsupported`)", body = ErrorBody),
        (status = 503, description = "The database is out of reach (`cluster.unavailable`); a retry finishes the re-wrapping", body = ErrorBody),
    ))]
pub(crate) async fn rotate(State(state): State<AppState>) -> Result<Json<Rotated>, ApiError> {
    let rotated = state.cluster.rotate().await?;
    let mut detail = BTreeMap::new();
    detail.insert("generation".to_owned(), rotated.generation.to_string());
    detail.insert("key_check".to_owned(), rotated.key_check.clone());
    detail.insert("granted".to_owned(), rotated.granted.join(","));
    detail.insert(
        "skipped".to_owned(),
        rotated
            .skipped
            .iter()
            .map(|s| s.node.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    detail.insert("rewrapped".to_owned(), rotated.rewrapped.to_string());
    operator_audit(
        &state,
        "cluster.rotated",
        &rotated.node,
        detail,
        "cluster rotate",
    );
    Ok(Json(rotated))
}

/// A member's challenge, for a joiner to bind into its quote; good for 60 seconds.
#[utoipa::path(post, path = "/v1/cluster/challenge", tag = "cluster", security(()),
    responses(
        (status = 200, description = "A challenge", body = Challenge),
        (status = 409, description = "This node holds no cluster key (`cluster.not_member`)", body = ErrorBody),
    ))]
pub(crate) async fn challenge(State(state): State<AppState>) -> Result<Json<Challenge>, ApiError> {
    Ok(Json(state.cluster.challenge()?))
}

/// Admission: the joiner's quote is checked against the cluster's policy, and the answer is the
/// cluster key encrypted to the joiner's ephemeral key, with this member's quote binding it.
#[utoipa::path(post, path = "/v1/cluster/join", tag = "cluster", security(()),
    request_body = JoinRequest,
    responses(
        (status = 200, description = "Admitted: the wrapped cluster key and this member's quote", body = JoinAnswer),
        (status = 400, description = "A field cannot be read, or the challenge is not this cluster's or has expired (`cluster.invalid`, `cluster.bad_challenge`, `cluster.challenge_expired`, `cluster.malformed_quote`)", body = ErrorBody),
        (status = 403, description = "Refused: the quote does not verify or bind the request, or the enclave is not the cluster's (`cluster.bad_quote`, `cluster.report_data_mismatch`, `cluster.simulation_refused`, `cluster.policy_refused`)", body = ErrorBody),
        (status = 409, description = "This node holds no cluster key (`cluster.not_member`)", body = ErrorBody),
        (status = 501, description = "A hardware quote, and this node has no `[cluster] pccs` to fetch Intel's collateral from (`cluster.hardware_unsupported`)", body = ErrorBody),
        (status = 503, description = "The PCCS did not answer with the collateral for a hardware quote (`cluster.unavailable`); retry", body = ErrorBody),
    ))]
pub(crate) async fn join(
    State(state): State<AppState>,
    crate::input::Json(request): crate::input::Json<JoinRequest>,
) -> Result<Json<JoinAnswer>, ApiError> {
    let mut detail = BTreeMap::new();
    detail.insert("address".to_owned(), request.address.clone());
    let subject = request.node.clone();
    let outcome = state.cluster.admit(&request).await;
    let action = match &outcome {
        Ok(admitted) => {
            detail.insert(
                "measurement".to_owned(),
                hex::encode(admitted.identity.mr_enclave),
            );
            detail.insert(
                "security_version".to_owned(),
                admitted.identity.isv_svn.to_string(),
            );
            if admitted.answer.simulation {
                detail.insert(
                    "simulation".to_owned(),
                    "admitted on a simulation quote: nothing in this exchange is backed by \
                     hardware"
                        .to_owned(),
                );
            }
            "cluster.admitted"
        }
        Err(refused) => {
            use runtime::Classify as _;
            detail.insert("code".to_owned(), refused.code().to_owned());
            detail.insert("reason".to_owned(), refused.to_string());
            "cluster.refused"
        }
    };
    if !matches!(outcome, Err(::cluster::Error::NotMember)) {
        state.client.journal().append(
            None,
            None,
            Event::Audit {
                action: action.into(),
                subject,
                detail,
            },
            Cause::Service,
        );
    }
    match outcome {
        Ok(admitted) => {
            if admitted.answer.simulation {
                tracing::warn!(node = ?request.node, "admitted a node on a simulation quote: nothing in this exchange is backed by hardware");
            }
            Ok(Json(admitted.answer))
        }
        Err(refused) => {
            tracing::warn!(node = ?request.node, error = %refused, "refused a node's join");
            Err(refused.into())
        }
    }
}
