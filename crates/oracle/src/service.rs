//! The oracle service itself: its recipe (the spec and the settings it declares), the
//! incarnation's loop, and the state its requests share (the fetcher, the signing key).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use runtime::clock::now_ms;
use runtime::rate::{Limiter, Rate};
use runtime::setting::{List, Setting};
use runtime::{Context, Kind, Priority, Service, ServiceError, Spec};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::fetch::{self, FetchLimits, Fetcher, HostPolicy, LIMITED_KEYS};
use crate::report::{
    self, ExtractedBy, KeyAttestation, ReportPayload, SignedReport, Signer, SourceReport,
};
use crate::request::{Extraction, Method, OracleRequest, RequestLimits, Source};
use crate::{Error, KEY_OWNER, NAME, Request, aggregate};

/// Sources one request may name (`max_sources`).
pub const MAX_SOURCES: Setting<usize> =
    Setting::new("max_sources", 8, 1, 64, "sources one request may name");
/// Largest body read from a source (`max_response_bytes`).
pub const MAX_RESPONSE_BYTES: Setting<usize> = Setting::new(
    "max_response_bytes",
    1 << 20,
    1,
    64 << 20,
    "largest body read from a source",
);
/// Time a source has to answer in full (`timeout_ms`).
pub const TIMEOUT_MS: Setting<Duration> = Setting::new(
    "timeout_ms",
    Duration::from_millis(5_000),
    Duration::from_millis(100),
    Duration::from_millis(60_000),
    "time a source has to answer in full",
);
/// How long a source's answer is reused for the same request (0: never) (`cache_ttl_ms`).
pub const CACHE_TTL_MS: Setting<Duration> = Setting::new(
    "cache_ttl_ms",
    Duration::from_millis(5_000),
    Duration::from_millis(0),
    Duration::from_millis(3_600_000),
    "how long a source's answer is reused for the same request (0: never)",
);
/// Fetches per second to one host (cached answers are free) (`host_rate_per_second`).
pub const HOST_RATE_PER_SECOND: Setting<u32> = Setting::new(
    "host_rate_per_second",
    10,
    1,
    10_000,
    "fetches per second to one host (cached answers are free)",
);
/// Oracle requests per minute per account (`requests_per_minute`).
pub const REQUESTS_PER_MINUTE: Setting<u32> = Setting::new(
    "requests_per_minute",
    60,
    1,
    1_000_000,
    "oracle requests per minute per account",
);
/// Hosts that may be fetched over HTTPS (`allowed_hosts`): where the enclave may connect, so read
/// at start only.
pub const ALLOWED_HOSTS: List = List::new(
    "allowed_hosts",
    &[],
    256,
    "hosts that may be fetched over HTTPS: \"api.example.com\", \"*.example.com\", \"host:port\", or \"*\" for any",
)
.grammar(HostPolicy::check_pattern)
.at_start();
/// Hosts that may also be fetched over plain HTTP (`plain_http_hosts`); read at start only.
pub const PLAIN_HTTP_HOSTS: List = List::new(
    "plain_http_hosts",
    &[],
    256,
    "hosts that may also be fetched over plain HTTP (for example a loopback test server)",
)
.grammar(HostPolicy::check_pattern)
.at_start();

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
            .setting(&MAX_SOURCES)
            .setting(&MAX_RESPONSE_BYTES)
            .setting(&TIMEOUT_MS)
            .setting(&CACHE_TTL_MS)
            .setting(&HOST_RATE_PER_SECOND)
            .setting(&REQUESTS_PER_MINUTE)
            .list(&ALLOWED_HOSTS)
            .list(&PLAIN_HTTP_HOSTS)
    }
}

/// What an incarnation reads from its spec.
#[derive(Debug, Clone)]
struct Settings {
    fetch: FetchLimits,
    request: RequestLimits,
    requests_per_minute: u32,
}

impl Settings {
    fn of(spec: &Spec, policy: &HostPolicy) -> Settings {
        Settings {
            fetch: FetchLimits {
                policy: policy.clone(),
                timeout: spec.get(&TIMEOUT_MS),
                max_body: spec.get(&MAX_RESPONSE_BYTES),
                cache_ttl: spec.get(&CACHE_TTL_MS),
                host_rate_per_second: f64::from(spec.get(&HOST_RATE_PER_SECOND)),
            },
            request: RequestLimits {
                max_sources: spec.get(&MAX_SOURCES),
            },
            requests_per_minute: spec.get(&REQUESTS_PER_MINUTE),
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
        // The host patterns were checked by the configuration's parser (their grammar), and a
        // change to them is refused as start-only; what is left is how the settings fit together.
        let timeout = new.get(&TIMEOUT_MS);
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
        let policy = HostPolicy::new(&spec.items(&ALLOWED_HOSTS), &spec.items(&PLAIN_HTTP_HOSTS));
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
                        Request::Fetch { owner, request, reply } => {
                            // A request that cannot run does not use up the account's quota.
                            if let Err(e) = request
                                .check(settings.request)
                                .and_then(|()| admit(&accounts, &owner, &settings))
                            {
                                reply.send(Err(e));
                                continue;
                            }
                            let (state, settings) = (state.clone(), settings.clone());
                            tasks.spawn(async move {
                                let result = state.answer(&owner, request, &settings).await;
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
        per_second: f64::from(limit) / 60.0,
        burst: f64::from(limit),
    };
    accounts
        .admit(owner, rate, std::time::Instant::now())
        .map_err(|wait| Error::RateLimited {
            owner: owner.to_owned(),
            limit: limit.into(),
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
        owner: &str,
        request: OracleRequest,
        settings: &Settings,
    ) -> Result<SignedReport, Error> {
        let results = futures::future::join_all(
            request
                .sources
                .iter()
                .map(|s| self.source(owner, s, &settings.fetch)),
        )
        .await;
        let results = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.map_err(|refused| refused.at(i)))
            .collect::<Result<Vec<_>, Error>>()?;
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

    /// One source's part of the report, and its value; or the request refused, for a script
    /// that reached for a capability.
    async fn source(
        &self,
        owner: &str,
        source: &Source,
        limits: &FetchLimits,
    ) -> Result<(SourceReport, Option<Value>), Refused> {
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
            extraction: Some(match &source.extract {
                Extraction::JsonPath(_) => ExtractedBy::JsonPath,
                Extraction::Script(_) => ExtractedBy::Script,
            }),
            script_sha256: match &source.extract {
                Extraction::JsonPath(_) => None,
                Extraction::Script(code) => Some(sha256_hex(code.as_bytes())),
            },
            value: Value::Null,
            error: None,
        };
        let fetched = match self.fetcher.fetch(owner, source, limits).await {
            Ok(f) => f,
            Err(e) => {
                report.status = e.status;
                report.body_sha256 = e.body.as_deref().map(sha256_hex);
                report.fetched_at_ms = e.fetched_at_ms;
                report.error = Some(e.message);
                return Ok((report, None));
            }
        };
        report.status = Some(fetched.status);
        report.body_sha256 = Some(sha256_hex(&fetched.body));
        report.fetched_at_ms = Some(fetched.fetched_at_ms);
        report.cached = fetched.cached;
        if !(200..300).contains(&fetched.status) {
            report.error = Some(format!("the source answered HTTP {}", fetched.status));
            return Ok((report, None));
        }
        match self.extract(owner, &source.extract, &fetched).await {
            Ok(value) => {
                report.value = value.clone();
                Ok((report, Some(value)))
            }
            Err(Failed::Source(e)) => {
                report.error = Some(e);
                Ok((report, None))
            }
            Err(Failed::Refused(refused)) => Err(refused),
        }
    }

    async fn extract(
        &self,
        owner: &str,
        extraction: &Extraction,
        fetched: &fetch::Fetched,
    ) -> Result<Value, Failed> {
        match extraction {
            Extraction::JsonPath(path) => crate::request::extract_json_path(path, &fetched.body)
                .map_err(|e| Failed::Source(e.to_string())),
            Extraction::Script(code) => {
                let args = report::script_args(fetched.status, &fetched.body);
                let args = serde_json::value::RawValue::from_string(args).map_err(|e| {
                    Failed::Source(format!("the body cannot be passed to a script: {e}"))
                })?;
                // What a verifier can rerun from the report and the body alone: no account, no
                // clock, no randomness but what the code and arguments seed.
                let program = computation::Program {
                    code: code.clone(),
                    args: Some(args),
                    limits: computation::LimitOverrides::default(),
                    deterministic: true,
                };
                let caller = computation::Caller {
                    owner: owner.to_owned(),
                    signing_key: None,
                    grants: computation::Grants::NONE,
                    // It can make no capability call, so it has nothing to count.
                    allowance: None,
                    capabilities: computation::Capabilities::None,
                };
                let outcome = self
                    .computation
                    .call(|reply| computation::Request::Run {
                        caller,
                        program,
                        reply,
                    })
                    .await
                    .map_err(|e| {
                        Failed::Source(format!("the computation service did not answer: {e}"))
                    })?
                    .map_err(|e| Failed::Source(format!("the script could not run: {e}")))?;
                match outcome.ending {
                    computation::Ending::Completed => Ok(outcome.result.value()),
                    computation::Ending::CapabilityRefused { capability } => {
                        Err(Failed::Refused(Refused { capability }))
                    }
                    ending => Err(Failed::Source(format!(
                        "the script ended with {}: {}",
                        ending.code(),
                        serde_json::to_string(&ending).unwrap_or_default()
                    ))),
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

/// Why a source has no value: its own failure (the report says so), or a script that reached for
/// a capability (the whole request is refused).
enum Failed {
    Source(String),
    Refused(Refused),
}

/// An extraction script that read `kv` or `crypto`.
#[derive(Debug)]
struct Refused {
    capability: String,
}

impl Refused {
    /// The request's error, naming source `index`.
    fn at(self, index: usize) -> Error {
        Error::Unfit {
            source_index: Some(index),
            field: "extract.script",
            reason: format!(
                "extract.script reads {}: an extraction script runs without capabilities (no kv, no crypto), on the fetched answer alone",
                self.capability
            ),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
