//! The six built-in services and the API in-process, as `cloister run` wires them
//! ([`stack::build`]), beside two echo services (`base`, and `app` depending on it); and a small
//! fluent client that sends requests to the router through `tower::ServiceExt::oneshot`:
//! `h.get("/v1/x").token(t).send().await.status(200).json()`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use runtime::{Builder, Journal, Kind, RuntimeLevel, ServiceName, Spec};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::fakes::{Echo, platform, spec};

/// The admin token of an in-process API.
pub const TOKEN: &str = "test-admin-token";

/// The API in-process over a started runtime.
#[derive(Debug)]
pub struct Harness {
    pub app: axum::Router,
    pub runtime: runtime::Runtime,
    /// The `base` echo service.
    pub echo: runtime::Handle<runtime::Reply<()>>,
    /// The storage service, for looking below the API.
    pub storage: storage::Handle,
    /// The platform's and the services' files; removed when the harness is dropped.
    pub dir: tempfile::TempDir,
}

/// How a harness is set up.
#[derive(Debug, Default)]
pub struct Setup {
    /// `[testing] fault_injection`: the fault endpoint exists.
    pub fault_injection: bool,
    /// With it, every built-in service runs (real files and blocking commits, so not under a
    /// paused clock); without, only crypto does, and the others are registered but disabled.
    pub with_storage: bool,
    /// `[services.NAME]` tables for the built-in services (crypto, storage, account, computation,
    /// oracle, ai), read as `cloister run` reads them.
    pub services: &'static str,
    /// The journal to run on (default: one in memory).
    pub journal: Option<Journal>,
    /// Where the platform and the services keep their files (default: a new temporary directory).
    pub dir: Option<tempfile::TempDir>,
    /// `cloister run --accept-storage-rollback`: a storage state to accept once.
    pub accept_storage_rollback: Option<u64>,
    /// `[runtime] metrics_auth`: `/metrics` needs the admin token.
    pub metrics_auth: bool,
}

/// A harness with only crypto of the built-in services running.
pub async fn harness(fault_injection: bool) -> Harness {
    harness_with(fault_injection, false).await
}

/// A harness; with `with_storage`, every built-in service runs (see [`Setup::with_storage`]).
pub async fn harness_with(fault_injection: bool, with_storage: bool) -> Harness {
    start(Setup {
        fault_injection,
        with_storage,
        ..Setup::default()
    })
    .await
}

/// The built-in services' specs as `text` configures them.
fn builtin_specs(text: &str) -> Vec<Spec> {
    let catalog = stack::catalog();
    let config = runtime::config::Config::parse(text, &catalog).expect("a valid [services] text");
    let (specs, disabled) = config.resolve(&catalog);
    assert!(disabled.is_empty(), "the harness disables services itself");
    specs
}

/// Starts the runtime as `setup` says and waits until it is ready.
pub async fn start(setup: Setup) -> Harness {
    let journal = setup.journal.unwrap_or_else(Journal::in_memory);
    let dir = match setup.dir {
        Some(dir) => dir,
        None => tempfile::tempdir().expect("tempdir"),
    };
    let mut specs = builtin_specs(setup.services);
    let switched_off: BTreeSet<ServiceName> = if setup.with_storage {
        BTreeSet::new()
    } else {
        // Every built-in service but crypto.
        let crypto = ServiceName::from_static("crypto");
        stack::NAMES.into_iter().filter(|n| *n != crypto).collect()
    };
    for spec in &mut specs {
        // A core service that is off leaves the runtime not ready; the binary never switches one
        // off, and this harness runs the rest as if they were optional.
        if switched_off.contains(&spec.name) {
            spec.kind = Kind::Optional;
        }
    }
    let mut b = Builder::new(journal.clone());
    let echo = b.add(Echo(spec("base", &[])));
    b.add(Echo(spec("app", &["base"])));
    let platform = platform(dir.path());
    let services = stack::build(
        &mut b,
        &specs,
        &switched_off,
        stack::Options {
            data_dir: dir.path().to_owned(),
            platform: platform.clone(),
            journal,
            storage_backend: storage::Backend::Redb,
            accept_storage_rollback: setup.accept_storage_rollback,
            accept_keystore_rollback: None,
            vault: None,
            newcomer: false,
        },
    );
    let runtime = b.start().expect("start");
    runtime
        .readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    // The controller starts from the text the services were configured with, so the API reads
    // their live settings as a configured runtime would; with every built-in service running, a
    // new version can change theirs too.
    let mut catalog = vec![spec("base", &[]), spec("app", &["base"])];
    if setup.with_storage {
        catalog.extend(stack::catalog());
    }
    let text = format!(
        "{}{}{}",
        if setup.metrics_auth {
            "[runtime]\nmetrics_auth = true\n"
        } else {
            ""
        },
        if setup.fault_injection {
            "[testing]\nfault_injection = true\n"
        } else {
            ""
        },
        if setup.with_storage {
            setup.services
        } else {
            ""
        }
    );
    let config = runtime::config::Config::parse(&text, &catalog).expect("a valid configuration");
    let (configs, _task) = runtime::reconfig::Controller::spawn(
        runtime.client(),
        catalog,
        text,
        config.clone(),
        Arc::new(|_: &mut runtime::config::Config| {}),
        CancellationToken::new(),
    );
    let cluster = cluster::Node::open(cluster::Options {
        platform: platform.clone(),
        data_dir: dir.path(),
        config: &config.cluster,
        database: None,
        address: "http://in-process".into(),
        version: env!("CARGO_PKG_VERSION"),
        collateral: None,
    })
    .await
    .expect("the node's cluster part");
    let state = api::AppState::new(api::Shared {
        client: runtime.client(),
        admin_token: api::AdminToken::new(TOKEN),
        config: Arc::new(config),
        configs,
        platform,
        crypto: services.crypto,
        storage: services.storage.clone(),
        account: services.account,
        accounts: services.accounts,
        computation: services.computation,
        oracle: services.oracle,
        ai: services.ai,
        ai_inline: services.ai_inline,
        storage_reads: services.storage_reads,
        cluster,
        shutdown: CancellationToken::new(),
    });
    Harness {
        app: api::router(state),
        runtime,
        echo,
        storage: services.storage,
        dir,
    }
}

impl Harness {
    /// A request to the API, with no token yet.
    pub fn request(&self, method: Method, uri: &str) -> Call {
        Call::new(&self.app, method, uri)
    }

    pub fn get(&self, uri: &str) -> Call {
        self.request(Method::GET, uri)
    }

    pub fn post(&self, uri: &str) -> Call {
        self.request(Method::POST, uri)
    }

    pub fn put(&self, uri: &str) -> Call {
        self.request(Method::PUT, uri)
    }

    pub fn delete(&self, uri: &str) -> Call {
        self.request(Method::DELETE, uri)
    }
}

/// A request being put together; [`Call::send`] sends it.
#[derive(Debug)]
#[must_use = "a call does nothing until it is sent"]
pub struct Call {
    app: axum::Router,
    method: Method,
    uri: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Call {
    pub fn new(app: &axum::Router, method: Method, uri: &str) -> Call {
        Call {
            app: app.clone(),
            method,
            uri: uri.to_owned(),
            headers: HeaderMap::new(),
            body: Vec::new(),
        }
    }

    /// With `Authorization: Bearer TOKEN`.
    pub fn token(self, token: &str) -> Call {
        self.header(header::AUTHORIZATION.as_str(), &format!("Bearer {token}"))
    }

    /// As the admin ([`TOKEN`]).
    pub fn admin(self) -> Call {
        self.token(TOKEN)
    }

    /// With a header.
    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.insert(
            header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            value.parse().expect("a header value"),
        );
        self
    }

    /// With `body` as JSON (and its content type).
    pub fn json(self, body: &Value) -> Call {
        self.text(&body.to_string())
    }

    /// With `text` as a JSON body as it is written, valid or not (and the JSON content type).
    pub fn text(mut self, text: &str) -> Call {
        self.body = text.as_bytes().to_vec();
        self.header(header::CONTENT_TYPE.as_str(), "application/json")
    }

    /// With `bytes` as the body, and no content type.
    pub fn bytes(mut self, bytes: impl Into<Vec<u8>>) -> Call {
        self.body = bytes.into();
        self
    }

    pub async fn send(self) -> Answer {
        let mut request = Request::builder().method(self.method).uri(&self.uri);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request.body(Body::from(self.body)).expect("request");
        let response = self.app.oneshot(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Answer {
            uri: self.uri,
            status,
            headers,
            bytes,
        }
    }
}

/// What the API answered.
#[derive(Debug)]
pub struct Answer {
    /// The URI asked for, for messages.
    pub uri: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn status(self, want: u16) -> Answer {
        assert_eq!(
            self.status.as_u16(),
            want,
            "{}: {}",
            self.uri,
            String::from_utf8_lossy(&self.bytes)
        );
        self
    }

    /// Asserts an error answer: its status and stable code, and that it carries a message.
    #[track_caller]
    pub fn error(self, want: u16, code: &str) -> Answer {
        let body = self.body();
        assert_eq!(
            (self.status.as_u16(), body["error"]["code"].as_str()),
            (want, Some(code)),
            "{}: {body}",
            self.uri
        );
        assert!(body["error"]["message"].is_string(), "{body}");
        self
    }

    /// The body as JSON; a body that is not JSON is a failure.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {}",
                self.uri,
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// The body as JSON, or as a JSON string of its text when it is not JSON.
    pub fn body(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.bytes).into_owned()))
    }

    /// A header's value, when it is there and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `body` (JSON, or nothing when empty) with `token`; answers the status, the headers and
/// the body as JSON (a body that is not JSON as a JSON string of its text).
pub async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let mut call = Call::new(app, method.parse().expect("a method"), uri);
    if let Some(t) = token {
        call = call.token(t);
    }
    if !body.is_empty() {
        call = call.text(body);
    }
    let answer = call.send().await;
    let body = answer.body();
    (answer.status, answer.headers, body)
}
