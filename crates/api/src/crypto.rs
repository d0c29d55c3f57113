//! The crypto service over HTTP. Binary values are base64 in JSON. Every key belongs to the caller's
//! account (the admin token has its own owner, `admin`); another account's key is a 404.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use crypto::Request;

use wire::crypto::{
    Ciphertext, DecryptBody, DeriveBody, Encoding, EncryptBody, GenerateBody, KeyList, Plaintext,
    SignAnswer, SignBody, Verified, VerifyBody,
};

use crate::auth::{Allowed, Caller, op};
use crate::error::ErrorBody;
use crate::input::{self, ask, decode, decode_optional};
use crate::{ApiError, AppState};
use account::Area;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Generates a key owned by the caller, sealed to the enclave.
#[utoipa::path(post, path = "/v1/crypto/keys", tag = "crypto", request_body = GenerateBody,
    responses((status = 201, description = "The new key (public half only)", body = wire::crypto::KeyInfo), (status = 400, description = "Bad base64 or input (`request.invalid_body`, `crypto.bad_input`)", body = ErrorBody), (status = 413, description = "The account holds `[services.crypto] max_keys_per_account` keys (`crypto.too_many_keys`)", body = ErrorBody)))]
pub(crate) async fn generate(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::CryptoGenerate>,
    input::Json(b): input::Json<GenerateBody>,
) -> Result<Response, ApiError> {
    let algorithm = b.algorithm;
    let info = ask(&state.crypto, |reply| Request::Generate {
        owner: caller.owner().into(),
        algorithm,
        reply,
    })
    .await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// The caller's keys.
#[utoipa::path(get, path = "/v1/crypto/keys", tag = "crypto",
    responses((status = 200, description = "The caller's keys", body = KeyList)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.allow(Area::Crypto, "list")?;
    let keys = ask(&state.crypto, |reply| Request::List {
        owner: caller.owner().into(),
        reply,
    })
    .await?;
    Ok(Json(KeyList { keys }).into_response())
}

/// One key: algorithm, versions and public keys.
#[utoipa::path(get, path = "/v1/crypto/keys/{id}", tag = "crypto", params(("id" = String, Path, description = "A key id")),
    responses((status = 200, description = "The key", body = wire::crypto::KeyInfo), (status = 404, description = "No such key (or another account's): `crypto.key_not_found`", body = ErrorBody)))]
pub(crate) async fn describe(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Crypto, "describe")?;
    let info = ask(&state.crypto, |reply| Request::Describe {
        owner: caller.owner().into(),
        id,
        reply,
    })
    .await?;
    Ok(Json(info).into_response())
}

/// Signs a message: ECDSA as 64-byte r||s over SHA-256 of the message (DER on request), Ed25519 per RFC 8032.
#[utoipa::path(post, path = "/v1/crypto/keys/{id}/sign", tag = "crypto", params(("id" = String, Path, description = "A key id")), request_body = SignBody,
    responses((status = 200, description = "The signature", body = SignAnswer), (status = 400, description = "Bad base64 or input (`request.invalid_body`, `crypto.bad_input`)", body = ErrorBody), (status = 404, description = "No such key (or another account's): `crypto.key_not_found`", body = ErrorBody), (status = 422, description = "The key's algorithm cannot do this (`crypto.wrong_key_kind`)", body = ErrorBody)))]
pub(crate) async fn sign(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::CryptoSign>,
    Path(id): Path<String>,
    input::Json(b): input::Json<SignBody>,
) -> Result<Response, ApiError> {
    let message = decode("message", &b.message)?;
    let der = matches!(b.encoding, Some(Encoding::Der));
    let signed = ask(&state.crypto, |reply| Request::Sign {
        owner: caller.owner().into(),
        id,
        message,
        der,
        reply,
    })
    .await?;
    Ok(Json(SignAnswer {
        signature: B64.encode(&signed.signature),
        version: signed.version,
        encoding: if der { Encoding::Der } else { Encoding::Raw },
    })
    .into_response())
}

/// Verifies a signature with any kept version of the key.
#[utoipa::path(post, path = "/v1/crypto/keys/{id}/verify", tag = "crypto", params(("id" = String, Path, description = "A key id")), request_body = VerifyBody,
    responses((status = 200, description = "Whether it verifies", body = Verified), (status = 400, description = "Bad base64 or input (`request.invalid_body`, `crypto.bad_input`)", body = ErrorBody), (status = 404, description = "No such key (or another account's): `crypto.key_not_found`", body = ErrorBody), (status = 422, description = "The key's algorithm cannot do this (`crypto.wrong_key_kind`)", body = ErrorBody)))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::CryptoVerify>,
    Path(id): Path<String>,
    input::Json(b): input::Json<VerifyBody>,
) -> Result<Response, ApiError> {
    let (message, signature) = (
        decode("message", &b.message)?,
        decode("signature", &b.signature)?,
    );
    let valid = ask(&state.crypto, |reply| Request::Verify {
        owner: caller.owner().into(),
        id,
        message,
        signature,
        reply,
    })
    .await?;
    Ok(Json(Verified { valid }).into_response())
}

/// Encrypts with AES-256-GCM (random nonce, prepended with the key version).
#[utoipa::path(post, path = "/v1/crypto/keys/{id}/encrypt", tag = "crypto", params(("id" = String, Path, description = "A key id")), request_body = EncryptBody,
    responses((status = 200, description = "The ciphertext", body = Ciphertext), (status = 400, description = "Bad base64 or input (`request.invalid_body`, `crypto.bad_input`)", body = ErrorBody), (status = 404, description = "No such key (or another account's): `crypto.key_not_found`", body = ErrorBody), (status = 422, description = "The key's algorithm cannot do this (`crypto.wrong_key_kind`)", body = ErrorBody)))]
pub(crate) async fn encrypt(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::CryptoEncrypt>,
    Path(id): Path<String>,
    input::Json(b): input::Json<EncryptBody>,
) -> Result<Response, ApiError> {
    let plaintext = decode("plaintext", &b.plaintext)?;
    let aad = decode_optional("aad", b.aad.as_deref())?;
    let ciphertext = ask(&state.crypto, |reply| Request::Encrypt {
        owner: caller.owner().into(),
        id,
        plaintext,
        aad,
        reply,
    })
    .await?;
    Ok(Json(Ciphertext {
        ciphertext: B64.encode(ciphertext),
    })
    .into_response())
}

/// Decrypts; a tampered ciphertext or wrong AAD is `crypto.integrity`.
#[utoipa::path(post, path = "/v1/crypto/keys/{id}/decrypt", tag = "crypto", params(("id" = String, Path, description = "A key id")), request_body = DecryptBody,
    responses((status = 200, description = "The plaintext", body = Plaintext), (status = 400, description = "Bad base64 or input (`request.invalid_body`, `crypto.bad_input`)", body = ErrorBody), (status = 404, description = "No such key (or another account's): `crypto.key_not_found`", body = ErrorBody), (status = 422, description = "The key's algorithm cannot do this (`crypto.wrong_key_kind`)", body = ErrorBody)))]
pub(crate) async fn decrypt(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::CryptoDecrypt>,
    Path(id): Path<String>,
    input::Json(b): input::Json<DecryptBody>,
) -> Result<Response, ApiError> {
    let ciphertext = decode("ciphertext", &b.ciphertext)?;
    let aad = decode_optional("aad", b.aad.as_deref())?;
    let plaintext = ask(&state.crypto, |reply| Request::Decrypt {
        owner: caller.owner().into(),
        id,
        ciphertext,
        aad,
        reply,
    })
    .await?;
    Ok(Json(Plaintext {
        plaintext: B64.encode(plaintext),
    })
    .into_response())
}

/// Derives a new AES key with HKDF-SHA256 from this one.
#[utoipa::path(post, path = "/v1/crypto/keys/{id}/derive", tag = "crypto", params(("id" = String, Path, description = "A key id")), request_body = DeriveBody,
    responses((status = 201, description = "The derived key", body = wire::crypto::KeyInfo), (status = 400, description = "Bad base64 or input (`request.invalid_body`, `crypto.bad_input`)", body = ErrorBody), (status = 404, description = "No such key (or another account's): `crypto.key_not_found`", body = ErrorBody), (status = 422, description = "The key's algorithm cannot do this (`crypto.wrong_key_kind`)", body = ErrorBody), (status = 413, description = "The account holds `[services.crypto] max_keys_per_account` keys (`crypto.too_many_keys`)", body = ErrorBody)))]
pub(crate) async fn derive(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::CryptoDerive>,
    Path(id): Path<String>,
    input::Json(b): input::Json<DeriveBody>,
) -> Result<Response, ApiError> {
    let info = decode("info", &b.info)?;
    let salt = decode_optional("salt", b.salt.as_deref())?;
    let key = ask(&state.crypto, |reply| Request::Derive {
        owner: caller.owner().into(),
        id,
        salt,
        info,
        reply,
    })
    .await?;
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

/// Rotates the key: a new version signs and encrypts; older versions still verify and decrypt.
#[utoipa::path(post, path = "/v1/crypto/keys/{id}/rotate", tag = "crypto", params(("id" = String, Path, description = "A key id")),
    responses((status = 200, description = "The key with its new version", body = wire::crypto::KeyInfo), (status = 404, description = "No such key (or another account's): `crypto.key_not_found`", body = ErrorBody)))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Crypto, "rotate")?;
    let info = ask(&state.crypto, |reply| Request::Rotate {
        owner: caller.owner().into(),
        id,
        reply,
    })
    .await?;
    Ok(Json(info).into_response())
}

/// Deletes the key and every version of it.
#[utoipa::path(delete, path = "/v1/crypto/keys/{id}", tag = "crypto", params(("id" = String, Path, description = "A key id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such key (or another account's): `crypto.key_not_found`", body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Crypto, "delete")?;
    ask(&state.crypto, |reply| Request::Delete {
        owner: caller.owner().into(),
        id,
        reply,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
