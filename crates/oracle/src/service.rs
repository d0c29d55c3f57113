//! The oracle service itself: its recipe (the spec and the settings it declares), the
//! incarnation's loop, and the state its requests share (the fetcher, the signing key).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use runtime::clock::now_ms;
use runtime::rate::{Limiter, Rate};
use runtime::spec::Grammar;
use runtime::{Context, Kind, Priority, Service, ServiceError, Spec};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::fetch::{self, FetchLimits, Fetcher, HostPolicy, LIMITED_KEYS};
use crate::report::{self, KeyAttestation, ReportPayload, SignedReport, Signer, SourceReport};
use crate::request::{Extraction, Method, OracleRequest, RequestLimits, Source};
use crate::{Error, KEY_OWNER, NAME, Request, aggregate};

pub const MAX_SOURCES: &str = "max_sources";
pub const MAX_RESPONSE_BYTES: &str = "max_response_bytes";
pub const TIMEOUT_MS: &str = "timeout_ms";
pub const CACHE_TTL_MS: &str = "cache_ttl_ms";
pub const HOST_RATE_PER_SECOND: &str = "host_rate_per_second";
pub const REQUESTS_PER_MINUTE: &str = "requests_per_minute";
pub const ALLOWED_HOSTS: &str = "allowed_hosts";
pub const PLAIN_HTTP_HOSTS: &str = "plain_http_hosts";

/// How long one request may take in all: the slowest source, a script, and the signature.
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// The recipe.
#[derive(Debug)]
pub struct Oracle {
    crypto: crypto::Handle,
    computation: computation::Handle,
    platform: Arc<dyn enclave::Platform>,
}

impl Oracle {
    pub fn new(
        crypto: crypto::Handle,
        computation: computation::Handle,
        platform: Arc<dyn enclave::Platform>,
    ) -> Self {
        Oracle {
            crypto: crypto.with_caller(&NAME),
            computation: computation.with_caller(&NAME),
            platform,
        }
    }

    pub fn default_spec() -> Spec {
        Spec::new(NAME, Kind::Optional)
            .description(
                "external data from allowed hosts, extracted, aggregated and signed by an attested key",
            )
            .depends_on(crypto::NAME)
            .depends_on(computation::NAME)
            .priority(Priority::Low)
            .capability("oracle.fetch")
            .capability("oracle.key")
            .resources(runtime::spec::Resources {
                min_memory_mib: 32,
                max_memory_mib: 256,
                cpu_cores: 1,
                network_access: true,
            })
            .call_timeout(CALL_TIMEOUT)
            .setting(MAX_SOURCES, 8, 1, 64, "sources one request may name")
            .setting(
                MAX_RESPONSE_BYTES,
                1 << 20,
                1,
                64 << 20,
                "largest body read from a source",
            )
            .setting(TIMEOUT_MS, 5_000, 100, 60_000, "time a source has to answer in full")
            .setting(
                CACHE_TTL_MS,
                5_000,
                0,
                3_600_000,
                "how long a source's answer is reused for the same request (0: never)",
            )
            .setting(
                HOST_RATE_PER_SECOND,
                10,
                1,
                10_000,
                "fetches per second to one host (cached answers are free)",
            )
            .setting(
                REQUESTS_PER_MINUTE,
                60,
                1,
                1_000_000,
                "oracle requests per minute per account",
            )
            .list(
                ALLOWED_HOSTS,
                &[],
                256,
                "hosts that may be fetched over HTTPS: \"api.example.com\", \"*.example.com\", \"host:port\", or \"*\" for any",
            )
            .list(
                PLAIN_HTTP_HOSTS,
                &[],
                256,
                "hosts that may also be fetched over plain HTTP (for example a loopback test server)",
            )
            .list_grammar(ALLOWED_HOSTS, Grammar::new(HostPolicy::check_pattern))
            .list_grammar(PLAIN_HTTP_HOSTS, Grammar::new(HostPolicy::check_pattern))
            .start_only(ALLOWED_HOSTS)
            .start_only(PLAIN_HTTP_HOSTS)
    }
}

/// What an incarnation reads from its spec.
#[derive(Debug, Clone)]
struct Settings {
    fetch: FetchLimits,
    request: RequestLimits,
    requests_per_minute: i64,
}

impl Settings {
    fn of(spec: &Spec, policy: &HostPolicy) -> Settings {
        let ms = |name| Duration::from_millis(u64::try_from(spec.setting_value(name)).unwrap_or(0));
        Settings {
            fetch: FetchLimits {
                policy: policy.clone(),
                timeout: ms(TIMEOUT_MS),
                max_body: usize::try_from(spec.setting_value(MAX_RESPONSE_BYTES)).unwrap_or(1),
                cache_ttl: ms(CACHE_TTL_MS),
                host_rate_per_second: spec.setting_value(HOST_RATE_PER_SECOND) as f64,
            },
            request: RequestLimits {
                max_sources: usize::try_from(spec.setting_value(MAX_SOURCES)).unwrap_or(1),
            },
            requests_per_minute: spec.setting_value(REQUESTS_PER_MINUTE),
        }
    }
}

impl Service for Oracle {
    type Request = Request;

    fn spec(&self) -> Spec {
        Oracle::default_spec()
    }

    fn validate(&self, new: &Spec) -> Result<(), runtime::Veto> {
        if !new.resources.network_access {
            return Err(
                "the oracle fetches from the network: resources.network_access must stay true"
                    .into(),
            );
        }
        for list in [ALLOWED_HOSTS, PLAIN_HTTP_HOSTS] {
            for (i, pattern) in new.list_value(list).iter().enumerate() {
                HostPolicy::check_pattern(pattern)
                    .map_err(|e| format!("services.oracle.{list}[{i}]: {e}"))?;
            }
        }
        let timeout =
            Duration::from_millis(u64::try_from(new.setting_value(TIMEOUT_MS)).unwrap_or(0));
        if new.call_timeout < timeout * 2 {
            return Err(format!(
                "call_timeout ({} ms) must be at least twice timeout_ms ({} ms): a request fetches, may run a script, and signs",
                new.call_timeout.as_millis(),
                timeout.as_millis()
            ).into());
        }
        Ok(())
    }

    async fn run(&self, mut cx: Context<Request>) -> Result<(), ServiceError> {
        if !cx.spec().resources.network_access {
            return Err(ServiceError::new(
                "the oracle's spec does not grant network access",
            ));
        }
        let spec = cx.spec();
        // Where the enclave may connect: start-only, so every incarnation of this process reads
        // the lists the runtime started with.
        let policy = HostPolicy::new(
            spec.list_value(ALLOWED_HOSTS),
            spec.list_value(PLAIN_HTTP_HOSTS),
        );
        let key = signing_key(&self.crypto).await?;
        let fetcher = Fetcher::new().map_err(ServiceError::new)?;
        let state = Arc::new(State {
            fetcher,
            crypto: self.crypto.clone(),
            computation: self.computation.clone(),
            platform: self.platform.clone(),
            key,
        });
        let mut settings = Arc::new(Settings::of(&spec, &policy));
        let accounts = Limiter::new(LIMITED_KEYS);
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                request = cx.recv() => {
                    let Some(request) = request else { break };
                    if cx.spec_changes().has_changed().unwrap_or(false) {
                        let spec = cx.spec_changes().borrow_and_update().clone();
                        settings = Arc::new(Settings::of(&spec, &policy));
                    }
                    match request {
                        Request::Fetch { caller, request, reply } => {
                            // A request that cannot run does not use up the account's quota.
                            if let Err(e) = request
                                .check(settings.request)
                                .and_then(|()| admit(&accounts, &caller.owner, &settings))
                            {
                                reply.send(Err(e));
                                continue;
                            }
                            let (state, settings) = (state.clone(), settings.clone());
                            tasks.spawn(async move {
                                let result = state.answer(&caller, request, &settings).await;
                                reply.send(result);
                            });
                        }
                        Request::Key { reply } => {
                            let state = state.clone();
                            tasks.spawn(async move { reply.send(state.attest().await) });
                        }
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        Ok(())
    }
}

/// The per-account request limit.
fn admit(accounts: &Limiter, owner: &str, settings: &Settings) -> Result<(), Error> {
    let limit = settings.requests_per_minute;
    let rate = Rate {
        per_second: limit as f64 / 60.0,
        burst: limit as f64,
    };
    accounts
        .admit(owner, rate, std::time::Instant::now())
        .map_err(|wait| Error::RateLimited {
            owner: owner.to_owned(),
            limit,
            retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
        })
}

/// The oracle's P-256 key: the one it made before (the crypto service keeps it sealed), or a new one.
async fn signing_key(crypto: &crypto::Handle) -> Result<Key, ServiceError> {
    let keys = crypto
        .call(|reply| crypto::Request::List {
            owner: KEY_OWNER.into(),
            reply,
        })
        .await
        .map_err(|e| ServiceError::new(format!("the crypto service did not answer: {e}")))?
        .map_err(|e| ServiceError::new(format!("listing the oracle's key: {e}")))?;
    let info = match keys
        .into_iter()
        .find(|k| k.algorithm == crypto::Algorithm::P256)
    {
        Some(k) => k,
        None => crypto
            .call(|reply| crypto::Request::Generate {
                owner: KEY_OWNER.into(),
                algorithm: crypto::Algorithm::P256,
                reply,
            })
            .await
            .map_err(|e| ServiceError::new(format!("the crypto service did not answer: {e}")))?
            .map_err(|e| ServiceError::new(format!("making the oracle's key: {e}")))?,
    };
    let current = info
        .versions
        .iter()
        .find(|v| v.version == info.version)
        .ok_or_else(|| ServiceError::new("the oracle's key has no current version"))?;
    let public_key = hex::decode(&current.public_key)
        .map_err(|e| ServiceError::new(format!("the oracle's public key is not hex: {e}")))?;
    Ok(Key {
        id: info.id,
        public_key,
    })
}

#[derive(Debug)]
struct Key {
    id: String,
    /// SEC1 uncompressed.
    public_key: Vec<u8>,
}

/// The incarnation's running state: what its requests share.
#[derive(Debug)]
struct State {
    fetcher: Fetcher,
    crypto: crypto::Handle,
    computation: computation::Handle,
    platform: Arc<dyn enclave::Platform>,
    key: Key,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl State {
    async fn answer(
        &self,
        caller: &computation::Caller,
        request: OracleRequest,
        settings: &Settings,
    ) -> Result<SignedReport, Error> {
        let results = futures::future::join_all(
            request
                .sources
                .iter()
                .map(|s| self.source(caller, s, &settings.fetch)),
        )
        .await;
        let values: Vec<Option<Value>> = results.iter().map(|(_, v)| v.clone()).collect();
        let decision = aggregate::aggregate(&request.aggregation, &values);
        let payload = ReportPayload {
            format: report::FORMAT.into(),
            request_hash: request.hash(),
            request: serde_json::to_value(&request).map_err(|e| Error::Internal(e.to_string()))?,
            sources: results.into_iter().map(|(r, _)| r).collect(),
            aggregation: serde_json::to_value(&request.aggregation)
                .map_err(|e| Error::Internal(e.to_string()))?,
            result: decision.result.unwrap_or(Value::Null),
            agreeing: decision.agreeing,
            error: decision.error,
            timestamp_ms: now_ms(),
            enclave: serde_json::to_value(self.platform.identity())
                .map_err(|e| Error::Internal(e.to_string()))?,
            signer: Signer {
                algorithm: report::ALGORITHM.into(),
                public_key: B64.encode(&self.key.public_key),
            },
        };
        let text = report::canonical(&payload);
        let signed = self
            .crypto
            .call(|reply| crypto::Request::Sign {
                owner: KEY_OWNER.into(),
                id: self.key.id.clone(),
                message: text.as_bytes().to_vec(),
                der: false,
                reply,
            })
            .await
            .map_err(|source| Error::Unavailable {
                what: "sign",
                source,
            })?
            .map_err(|e| Error::Internal(format!("signing the report: {e}")))?;
        Ok(SignedReport {
            report: serde_json::from_str(&text).map_err(|e| Error::Internal(e.to_string()))?,
            payload: text,
            signature: B64.encode(&signed.signature),
        })
    }

    /// One source's part of the report, and its value.
    async fn source(
        &self,
        caller: &computation::Caller,
        source: &Source,
        limits: &FetchLimits,
    ) -> (SourceReport, Option<Value>) {
        let host = reqwest::Url::parse(&source.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let mut report = SourceReport {
            url: source.url.clone(),
            host,
            method: match source.method {
                Method::Get => "GET".into(),
                Method::Post => "POST".into(),
            },
            status: None,
            body_sha256: None,
            fetched_at_ms: None,
            cached: false,
            value: Value::Null,
            error: None,
        };
        let fetched = match self.fetcher.fetch(source, limits).await {
            Ok(f) => f,
            Err(e) => {
                report.status = e.status;
                report.body_sha256 = e.body.as_deref().map(sha256_hex);
                report.fetched_at_ms = e.fetched_at_ms;
                report.error = Some(e.message);
                return (report, None);
            }
        };
        report.status = Some(fetched.status);
        report.body_sha256 = Some(sha256_hex(&fetched.body));
        report.fetched_at_ms = Some(fetched.fetched_at_ms);
        report.cached = fetched.cached;
        if !(200..300).contains(&fetched.status) {
            report.error = Some(format!("the source answered HTTP {}", fetched.status));
            return (report, None);
        }
        match self.extract(caller, &source.extract, &fetched).await {
            Ok(value) => {
                report.value = value.clone();
                (report, Some(value))
            }
            Err(e) => {
                report.error = Some(e);
                (report, None)
            }
        }
    }

    async fn extract(
        &self,
        caller: &computation::Caller,
        extraction: &Extraction,
        fetched: &fetch::Fetched,
    ) -> Result<Value, String> {
        match extraction {
            Extraction::JsonPath(path) => {
                let json: Value = serde_json::from_slice(&fetched.body)
                    .map_err(|e| format!("the body is not JSON: {e}"))?;
                let path = serde_json_path::JsonPath::parse(path)
                    .map_err(|e| format!("bad JSONPath: {e}"))?;
                let nodes = path.query(&json).all();
                match nodes.as_slice() {
                    [one] => Ok((*one).clone()),
                    [] => Err(format!("the JSONPath {path} matches nothing in the body")),
                    many => Err(format!(
                        "the JSONPath {path} matches {} values; make it select one",
                        many.len()
                    )),
                }
            }
            Extraction::Script(code) => {
                let body = String::from_utf8_lossy(&fetched.body);
                let args = json!({ "status": fetched.status, "body": body }).to_string();
                let args = serde_json::value::RawValue::from_string(args)
                    .map_err(|e| format!("the body cannot be passed to a script: {e}"))?;
                let program = computation::Program {
                    code: code.clone(),
                    args: Some(args),
                    limits: computation::LimitOverrides::default(),
                    deterministic: false,
                };
                let outcome = self
                    .computation
                    .call(|reply| computation::Request::Run {
                        caller: caller.clone(),
                        program,
                        reply,
                    })
                    .await
                    .map_err(|e| format!("the computation service did not answer: {e}"))?
                    .map_err(|e| format!("the script could not run: {e}"))?;
                match outcome.ending {
                    computation::Ending::Completed => Ok(outcome.result),
                    ending => Err(format!(
                        "the script ended with {}: {}",
                        ending.code(),
                        serde_json::to_string(&ending).unwrap_or_default()
                    )),
                }
            }
        }
    }

    async fn attest(&self) -> Result<KeyAttestation, Error> {
        let report_data = report::key_report_data(&self.key.public_key);
        let platform = self.platform.clone();
        let quote = tokio::task::spawn_blocking(move || platform.quote(&report_data))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| match e {
                enclave::Error::Unsupported(m) => Error::Unsupported(m),
                other => Error::Internal(other.to_string()),
            })?;
        let identity = self.platform.identity();
        Ok(KeyAttestation {
            algorithm: report::ALGORITHM.into(),
            public_key: B64.encode(&self.key.public_key),
            simulation: identity.platform == enclave::PlatformKind::Simulation,
            enclave: serde_json::to_value(identity).map_err(|e| Error::Internal(e.to_string()))?,
            report_data: hex::encode(report_data),
            report_data_binding:
                "sha256(\"cloister oracle key v1\\0\" || public_key) || 32 zero bytes".into(),
            quote: B64.encode(&quote),
        })
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
