//! What an application calls: storage, signing, scripts, the oracle.

use base64::Engine;
use reqwest::Method;
use serde::Serialize;
use wire::computation::{Outcome, Program};
use wire::crypto::{Encoding, SignAnswer, SignBody, Verified, VerifyBody};
use wire::oracle::{KeyAttestation, SignedReport};
use wire::storage::{
    BatchBody, BatchWrite, Committed, Deleted, Page, Stored, VERSION_HEADER, Value,
};

use crate::client::{Client, segment};
use crate::error::Error;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Client {
    /// `PUT /v1/storage/{key}`: stores `value` at `key` in the caller's namespace, durably (the
    /// answer comes after the commit). Keys may contain `/`.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<Stored, Error> {
        let (request, url) = self.request(Method::PUT, &storage_path(key));
        let request = request
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(value.into());
        self.send(request, url).await?.into_result()
    }

    /// `GET /v1/storage/{key}`: the value with its version (`storage.not_found` if there is none).
    pub async fn get(&self, key: &str) -> Result<Value, Error> {
        let (request, url) = self.request(Method::GET, &storage_path(key));
        let answer = self.send(request, url).await?;
        if !answer.status.is_success() {
            return Err(answer.error());
        }
        let version = answer
            .headers
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match version {
            Some(version) => Ok(Value {
                data: answer.body,
                version,
            }),
            None => Err(Error::Decode {
                url: answer.url,
                source: serde::de::Error::custom(format!("no {VERSION_HEADER} header")),
            }),
        }
    }

    /// `DELETE /v1/storage/{key}`.
    pub async fn delete(&self, key: &str) -> Result<Deleted, Error> {
        self.call(Method::DELETE, &storage_path(key)).await
    }

    /// `GET /v1/storage?prefix=..`: keys starting with `prefix`, at most `limit` (default 100),
    /// after the key `after` (the previous page's `next`).
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Page, Error> {
        let mut path = format!("/v1/storage?prefix={}", segment(prefix, false));
        if let Some(after) = after {
            path.push_str(&format!("&after={}", segment(after, false)));
        }
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        self.call(Method::GET, &path).await
    }

    /// `POST /v1/storage`: puts and deletes in one atomic commit, in order: either every write is
    /// durable when this answers, or none is. Build the writes with [`Write::put`] and
    /// [`Write::delete`].
    pub async fn batch(&self, writes: impl IntoIterator<Item = Write>) -> Result<Committed, Error> {
        let body = BatchBody {
            writes: writes.into_iter().map(|w| w.0).collect(),
        };
        self.call_with(Method::POST, "/v1/storage", &body).await
    }

    /// `POST /v1/crypto/keys/{id}/sign`: signs `message` with the caller's key `key_id` (an
    /// account's signing key is `signing_key` of its [`wire::accounts::AccountInfo`]).
    pub async fn sign(
        &self,
        key_id: &str,
        message: &[u8],
        encoding: Option<Encoding>,
    ) -> Result<SignAnswer, Error> {
        let body = SignBody {
            message: B64.encode(message),
            encoding,
        };
        let path = format!("/v1/crypto/keys/{}/sign", segment(key_id, false));
        self.call_with(Method::POST, &path, &body).await
    }

    /// `POST /v1/crypto/keys/{id}/verify`: whether `signature` is one of the key's over `message`.
    pub async fn verify(
        &self,
        key_id: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<Verified, Error> {
        let body = VerifyBody {
            message: B64.encode(message),
            signature: B64.encode(signature),
        };
        let path = format!("/v1/crypto/keys/{}/verify", segment(key_id, false));
        self.call_with(Method::POST, &path, &body).await
    }

    /// `POST /v1/computation/run`: runs the script in the sandbox, as the caller, and answers how it
    /// ended. A script that throws or runs out of time still has an outcome (see its `ending`);
    /// only a run that never started is an error (`computation.busy`, `computation.too_large`,
    /// ...).
    pub async fn run(&self, program: &Program) -> Result<Outcome, Error> {
        self.call_with(Method::POST, "/v1/computation/run", program)
            .await
    }

    /// `POST /v1/oracle/requests`: fetches the request's sources, aggregates them and answers a
    /// signed report. `request` is the JSON document the oracle section of docs/api.md describes
    /// (sources, extraction, aggregation).
    pub async fn oracle_request<R: Serialize + ?Sized>(
        &self,
        request: &R,
    ) -> Result<SignedReport, Error> {
        self.call_with(Method::POST, "/v1/oracle/requests", request)
            .await
    }

    /// `GET /v1/oracle/key`: the oracle's signing key with the quote that binds it to the enclave.
    pub async fn oracle_key(&self) -> Result<KeyAttestation, Error> {
        self.call(Method::GET, "/v1/oracle/key").await
    }
}

/// One write of a [`Client::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write(BatchWrite);

impl Write {
    /// Store `value` at `key`.
    pub fn put(key: impl Into<String>, value: impl AsRef<[u8]>) -> Write {
        Write(BatchWrite {
            key: key.into(),
            value: Some(B64.encode(value)),
            delete: false,
        })
    }

    /// Delete `key`.
    pub fn delete(key: impl Into<String>) -> Write {
        Write(BatchWrite {
            key: key.into(),
            value: None,
            delete: true,
        })
    }
}

fn storage_path(key: &str) -> String {
    format!("/v1/storage/{}", segment(key, true))
}
