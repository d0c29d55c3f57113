//! The client itself: where Cloister is, the token, and one request with its answer read.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, from_answer};

/// How long a call may take by default (a waiting `apply_config` takes up to ten minutes).
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A typed client of one Cloister runtime: its base URL and a bearer token (the admin token, or
/// an account token `cls_...` for what its scopes allow). Cheap to clone; clones share their
/// connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    timeout: Duration,
    deadline: Option<Duration>,
}

/// The request header that asks the runtime for a shorter deadline than its
/// `runtime.request_timeout`, in whole milliseconds.
pub const DEADLINE_HEADER: &str = "x-cloister-deadline-ms";

/// An answer, read to its end.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) url: String,
}

impl Answer {
    /// The body as `T`.
    pub(crate) fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            url: self.url.clone(),
            source,
        })
    }

    /// The API's error this answer stands for.
    pub(crate) fn error(&self) -> Error {
        from_answer(self.status, retry_after(&self.headers), &self.body)
    }

    /// The body as `T` if the status is a success, else the API's error.
    pub(crate) fn into_result<T: DeserializeOwned>(self) -> Result<T, Error> {
        if self.status.is_success() {
            self.decode()
        } else {
            Err(self.error())
        }
    }
}

/// The `Retry-After` header in seconds, when there is one.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

impl Client {
    /// A client of the runtime at `base_url` (`http://127.0.0.1:8420`), calling with `token`.
    /// Installs rustls's ring provider as the process's default when none is installed yet (the
    /// HTTP client is built without one of its own).
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Client, Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(Error::Client)?;
        Ok(Client::with_http(http, base_url, token))
    }

    /// A client that sends through `http` (for your own TLS roots, proxy or pool settings).
    pub fn with_http(http: reqwest::Client, base_url: &str, token: impl Into<String>) -> Client {
        Client {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            token: token.into(),
            timeout: TIMEOUT,
            deadline: None,
        }
    }

    /// The same client with another per-call timeout (default 30 s; the event stream has none).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same client asking the runtime to answer every call within `deadline` (sent as
    /// [`DEADLINE_HEADER`]; event streams have none). The runtime gives up on the call and every
    /// call it made for it when the deadline passes, and answers 503 `service.timeout` or
    /// `request.timeout`, retryable, rather than holding the request for its own
    /// `runtime.request_timeout`. It can only lower the runtime's deadline, never raise it. Under a
    /// millisecond counts as one.
    pub fn with_deadline(mut self, deadline: Duration) -> Client {
        self.deadline = Some(deadline);
        self
    }

    /// The deadline asked for with [`Client::with_deadline`], if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request to `path` (which starts with `/`), authenticated, with the default timeout.
    pub(crate) fn request(&self, method: Method, path: &str) -> (RequestBuilder, String) {
        let url = format!("{}{path}", self.base);
        let mut builder = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .timeout(self.timeout);
        if let Some(deadline) = self.deadline {
            let ms = u32::try_from(deadline.as_millis())
                .unwrap_or(u32::MAX)
                .max(1);
            builder = builder.header(DEADLINE_HEADER, ms);
        }
        (builder, url)
    }

    /// A request to `path`, authenticated, without a timeout (for streams).
    pub(crate) fn untimed(&self, method: Method, path: &str) -> (RequestBuilder, String) {
        let url = format!("{}{path}", self.base);
        (
            self.http.request(method, &url).bearer_auth(&self.token),
            url,
        )
    }

    /// Sends `request` and reads its answer to the end.
    pub(crate) async fn send(&self, request: RequestBuilder, url: String) -> Result<Answer, Error> {
        let response = request.send().await.map_err(|source| Error::Unreachable {
            base: self.base.clone(),
            source,
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|source| Error::Read {
                url: url.clone(),
                source,
            })?
            .to_vec();
        Ok(Answer {
            status,
            headers,
            body,
            url,
        })
    }

    /// Sends a request without a body and answers the JSON answer as `T`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, Error> {
        let (request, url) = self.request(method, path);
        self.send(request, url).await?.into_result()
    }

    /// Sends `body` as JSON and answers the JSON answer as `T`.
    pub(crate) async fn call_with<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        let (request, url) = self.request(method, path);
        self.send(request.json(body), url).await?.into_result()
    }

    /// Sends a request whose success has no body (204).
    pub(crate) async fn call_empty(&self, method: Method, path: &str) -> Result<(), Error> {
        let (request, url) = self.request(method, path);
        let answer = self.send(request, url).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(answer.error())
        }
    }
}

/// `text` for one path segment: everything but unreserved characters percent-encoded (and `/`
/// too unless `keep_slash`, for storage keys, which may contain it).
pub(crate) fn segment(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
