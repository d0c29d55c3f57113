//! The oracle in-process against sources on loopback: reports that verify, every kind of bad source
//! reported per source, aggregation that refuses rather than guesses, the cache, the host and
//! account rate limits, and the settings it refuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use oracle::{
    Aggregation, AggregationMethod, Error, Extraction, Method, OracleRequest, Request, Source,
};
use runtime::{Builder, Journal, RuntimeLevel, Service};
use serde_json::{Value, json};

/// Sources on a loopback port: fixed answers, one that never finishes, one too large, one that
/// redirects, and a hit counter; and on another port, a listener that closes every connection it
/// takes without a word.
struct Sources {
    base: String,
    hits: Arc<AtomicUsize>,
    closing: String,
}

async fn sources() -> Sources {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = Router::new()
        .route(
            "/a",
            get(|| async { r#"{"data": {"price": 100.0}, "state": "up"}"# }),
        )
        .route(
            "/b",
            get(|| async { r#"{"data": {"price": 102.0}, "state": "up"}"# }),
        )
        .route(
            "/c",
            get(|| async { r#"{"data": {"price": 250.0}, "state": "down"}"# }),
        )
        .route(
            "/counted",
            get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { r#"{"v": 1}"# }
            }),
        )
        .route("/text", get(|| async { "not json at all" }))
        .route("/many", get(|| async { r#"{"items": [1, 2, 3]}"# }))
        .route("/big", get(|| async { "x".repeat(4096) }))
        .route(
            "/missing",
            get(|| async { (axum::http::StatusCode::NOT_FOUND, "{}") }),
        )
        .route(
            "/redirect",
            get(|| async { axum::response::Redirect::temporary("/a") }),
        )
        .route(
            "/never",
            get(|| async {
                std::future::pending::<()>().await;
                ""
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let closer = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let closing = closer.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((connection, _)) = closer.accept().await {
            drop(connection);
        }
    });
    Sources {
        base: format!("http://{addr}"),
        hits,
        closing: format!("http://{closing}"),
    }
}

struct Fixture {
    oracle: oracle::Handle,
    computation: computation::Handle,
    _rt: runtime::Runtime,
    _dir: tempfile::TempDir,
}

async fn start(configure: impl FnOnce(&mut runtime::Spec)) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let platform: Arc<dyn enclave::Platform> = Arc::new(
        enclave::Simulation::open(dir.path(), b"test binary", b"", 1).expect("simulation"),
    );
    let mut b = Builder::new(Journal::in_memory());
    let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
    let storage = b.add(storage::Storage::new(
        dir.path(),
        platform.clone(),
        crypto.clone(),
    ));
    let computation = b.add(computation::Computation::new(crypto.clone(), storage));
    let mut spec = oracle::Oracle::default_spec();
    spec.set_items(&oracle::PLAIN_HTTP_HOSTS, &["127.0.0.1"]);
    configure(&mut spec);
    let oracle = b.add_with_spec(
        oracle::Oracle::new(crypto, computation.clone(), platform),
        spec,
    );
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    Fixture {
        oracle,
        computation,
        _rt: rt,
        _dir: dir,
    }
}

fn path(url: String, path: &str) -> Source {
    Source {
        url,
        method: Method::Get,
        headers: Default::default(),
        body: None,
        extract: Extraction::JsonPath(path.into()),
    }
}

fn request(sources: Vec<Source>, method: AggregationMethod, min: usize) -> OracleRequest {
    OracleRequest {
        sources,
        aggregation: Aggregation {
            method,
            min_agreeing: min,
            max_deviation: None,
        },
    }
}

impl Fixture {
    async fn ask(
        &self,
        owner: &str,
        request: OracleRequest,
    ) -> Result<oracle::SignedReport, Error> {
        self.oracle
            .call(|reply| Request::Fetch {
                owner: owner.into(),
                request,
                reply,
            })
            .await
            .expect("the oracle answers")
    }

    /// Asks as alice, verifies the report, and answers its payload.
    async fn report(&self, request: OracleRequest) -> oracle::report::ReportPayload {
        self.report_for("alice", request).await
    }

    /// Asks as `owner`, verifies the report, and answers its payload.
    async fn report_for(
        &self,
        owner: &str,
        request: OracleRequest,
    ) -> oracle::report::ReportPayload {
        let signed = self.ask(owner, request).await.expect("a report");
        let text = serde_json::to_string(&signed).expect("json");
        oracle::verify(&text, None, &SIMULATION_OK)
            .expect("the report verifies")
            .payload
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_from_two_sources_verifies_and_a_changed_one_does_not() {
    let s = sources().await;
    let f = start(|_| {}).await;
    let req = request(
        vec![
            path(format!("{}/a", s.base), "$.data.price"),
            Source {
                extract: Extraction::Script("return JSON.parse(args.body).data.price".into()),
                ..path(format!("{}/b", s.base), "")
            },
        ],
        AggregationMethod::Median,
        2,
    );
    let signed = f.ask("alice", req.clone()).await.expect("report");
    let text = serde_json::to_string(&signed).expect("json");
    let verified = oracle::verify(&text, None, &SIMULATION_OK).expect("verifies");
    let p = verified.payload;
    assert_eq!(p.result, json!(101.0));
    assert_eq!(p.agreeing, 2);
    assert_eq!(p.error, None);
    assert_eq!(p.request_hash, req.hash());
    assert_eq!(p.sources[0].value, json!(100.0));
    // A script's integral number comes back as an integer; the median takes it as a number.
    assert_eq!(p.sources[1].value.as_f64(), Some(102.0));
    assert_eq!(p.sources[0].status, Some(200));
    assert!(
        p.sources
            .iter()
            .all(|s| s.body_sha256.is_some() && s.fetched_at_ms.is_some())
    );

    // The key attestation binds this key, and its quote checks out.
    let attestation = f
        .oracle
        .call(|reply| Request::Key { reply })
        .await
        .expect("answer")
        .expect("key");
    let attestation = serde_json::to_string(&attestation).expect("json");
    let checked = oracle::verify(&text, Some(&attestation), &SIMULATION_OK).expect("with quote");
    assert_eq!(checked.quote.map(|q| q.simulation), Some(true));
    assert!(matches!(
        oracle::verify(&text, Some(&attestation), &enclave::quote::Trust::default()),
        Err(oracle::VerifyError::Quote(_))
    ));
    hardware_quotes_go_through_the_dcap_verifier(&text, &attestation);

    // Any change to the payload breaks the signature.
    let mut forged: Value = serde_json::from_str(&text).expect("json");
    let payload = forged["payload"]
        .as_str()
        .expect("payload")
        .replace("101.0", "999.0");
    forged["payload"] = Value::String(payload);
    assert_eq!(
        oracle::verify(&forged.to_string(), None, &SIMULATION_OK),
        Err(oracle::VerifyError::BadSignature)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_source_is_reported_as_such_and_never_becomes_a_value() {
    let s = sources().await;
    let f = start(|spec| {
        spec.set(&oracle::TIMEOUT_MS, Duration::from_millis(300));
        spec.set(&oracle::MAX_RESPONSE_BYTES, 1024);
        spec.set(&oracle::MAX_SOURCES, 16);
    })
    .await;
    let bad = [
        (path(format!("{}/x", s.closing), "$.a"), "unreachable"),
        (path(format!("{}/never", s.base), "$.a"), "timeout_ms"),
        (path(format!("{}/big", s.base), "$.a"), "max_response_bytes"),
        (path(format!("{}/text", s.base), "$.a"), "not JSON"),
        (
            path(format!("{}/a", s.base), "$.nothing"),
            "matches nothing",
        ),
        (
            path(format!("{}/many", s.base), "$.items[*]"),
            "matches 3 values",
        ),
        (path(format!("{}/missing", s.base), "$.a"), "HTTP 404"),
        (path(format!("{}/redirect", s.base), "$.a"), "HTTP 307"),
        (path("https://example.com/".into(), "$.a"), "allowed_hosts"),
        (
            // The same live server, by a name not on the plain-HTTP list.
            path(
                format!("{}/a", s.base.replace("127.0.0.1", "localhost")),
                "$.a",
            ),
            "plain_http_hosts",
        ),
        (
            Source {
                extract: Extraction::Script("throw new Error('no price here')".into()),
                ..path(format!("{}/a", s.base), "")
            },
            "no price here",
        ),
    ];
    let mut sources: Vec<Source> = bad.iter().map(|(s, _)| s.clone()).collect();
    sources.push(path(format!("{}/a", s.base), "$.data.price"));
    let p = f
        .report(request(sources, AggregationMethod::Median, 1))
        .await;
    for (i, (_, expected)) in bad.iter().enumerate() {
        let source = &p.sources[i];
        let error = source.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(expected),
            "source {i}: {error:?} should say {expected:?}"
        );
        assert_eq!(source.value, Value::Null, "source {i} has no value");
    }
    // The one good source is the result, and only it agrees.
    assert_eq!((p.result.clone(), p.agreeing), (json!(100.0), 1));

    // Fewer agreeing sources than required: no result, and the report says why.
    let req = request(
        vec![
            path(format!("{}/a", s.base), "$.data.price"),
            path(format!("{}/text", s.base), "$.data.price"),
        ],
        AggregationMethod::Median,
        2,
    );
    let p = f.report(req).await;
    assert_eq!(p.result, Value::Null);
    assert!(p.error.expect("why").contains("min_agreeing is 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_and_quorum_over_strings() {
    let s = sources().await;
    let f = start(|_| {}).await;
    let three = || {
        ["a", "b", "c"]
            .iter()
            .map(|p| path(format!("{}/{p}", s.base), "$.state"))
            .collect::<Vec<_>>()
    };
    let p = f
        .report(request(three(), AggregationMethod::Quorum, 2))
        .await;
    assert_eq!((p.result, p.agreeing), (json!("up"), 2));
    let p = f
        .report(request(three(), AggregationMethod::Quorum, 3))
        .await;
    assert_eq!(p.result, Value::Null);
}

/// Holds tokio's paused clock still: while a blocking task runs, the runtime does not move time on
/// by itself when it waits (for a loopback answer, say), so only `tokio::time::advance` does.
/// Dropping the sender lets the clock go.
fn hold_the_clock() -> std::sync::mpsc::Sender<()> {
    let (hold, held) = std::sync::mpsc::channel::<()>();
    drop(tokio::task::spawn_blocking(move || held.recv()));
    hold
}

/// The host limit and the cache read tokio's clock, held still here: nothing depends on how fast
/// the machine is, and time moves only when the test moves it.
#[tokio::test(start_paused = true)]
async fn answers_are_cached_per_source_and_hosts_are_rate_limited() {
    let s = sources().await;
    let f = start(|spec| spec.set(&oracle::CACHE_TTL_MS, Duration::from_millis(5_000))).await;
    let g = start(|spec| {
        spec.set(&oracle::CACHE_TTL_MS, Duration::from_millis(0));
        spec.set(&oracle::HOST_RATE_PER_SECOND, 1);
    })
    .await;
    let _clock = hold_the_clock();
    let counted = || {
        request(
            vec![path(format!("{}/counted", s.base), "$.v")],
            AggregationMethod::Mode,
            1,
        )
    };
    let first = f.report(counted()).await;
    let second = f.report(counted()).await;
    assert!(!first.sources[0].cached);
    assert!(second.sources[0].cached);
    assert_eq!(
        second.sources[0].fetched_at_ms,
        first.sources[0].fetched_at_ms
    );
    assert_eq!(
        s.hits.load(Ordering::SeqCst),
        1,
        "the second answer came from the cache"
    );
    // Past cache_ttl_ms the source is asked again.
    tokio::time::advance(std::time::Duration::from_millis(5_000)).await;
    assert!(!f.report(counted()).await.sources[0].cached);
    assert_eq!(s.hits.load(Ordering::SeqCst), 2);

    // Without the cache, one fetch per second to the host: of three at once, one goes out.
    let three = || {
        (0..3)
            .map(|_| path(format!("{}/counted", s.base), "$.v"))
            .collect()
    };
    let limited = |p: &oracle::report::ReportPayload| {
        p.sources
            .iter()
            .filter(|s| {
                s.error
                    .as_deref()
                    .is_some_and(|e| e.contains("host_rate_per_second"))
            })
            .count()
    };
    let p = g.report(request(three(), AggregationMethod::Mode, 1)).await;
    assert_eq!(limited(&p), 2, "{:?}", p.sources);
    assert_eq!(s.hits.load(Ordering::SeqCst), 3);
    // Half a second on: none goes out.
    tokio::time::advance(std::time::Duration::from_millis(500)).await;
    let p = g.report(request(three(), AggregationMethod::Mode, 1)).await;
    assert_eq!(limited(&p), 3, "{:?}", p.sources);
    assert_eq!(s.hits.load(Ordering::SeqCst), 3);
    // A second on, one more.
    tokio::time::advance(std::time::Duration::from_millis(500)).await;
    let p = g.report(request(three(), AggregationMethod::Mode, 1)).await;
    assert_eq!(limited(&p), 2, "{:?}", p.sources);
    assert_eq!(s.hits.load(Ordering::SeqCst), 4);
}

/// The cache and the host budget are the account's own: bob's request, the same as alice's a
/// moment before, goes to the source (his answer is not hers, and does not tell him she asked),
/// and alice using up her fetches to a host leaves bob his.
#[tokio::test(start_paused = true)]
async fn the_cache_and_the_host_budgets_are_per_account() {
    let s = sources().await;
    let f = start(|spec| {
        spec.set(&oracle::CACHE_TTL_MS, Duration::from_millis(5_000));
        spec.set(&oracle::HOST_RATE_PER_SECOND, 1);
    })
    .await;
    let _clock = hold_the_clock();
    let counted = || {
        request(
            vec![path(format!("{}/counted", s.base), "$.v")],
            AggregationMethod::Mode,
            1,
        )
    };
    let alice = f.report_for("alice", counted()).await;
    assert!(!alice.sources[0].cached);
    assert_eq!(s.hits.load(Ordering::SeqCst), 1);
    let bob = f.report_for("bob", counted()).await;
    assert!(!bob.sources[0].cached, "bob is not given alice's answer");
    assert_eq!(
        s.hits.load(Ordering::SeqCst),
        2,
        "bob's request went to the source"
    );
    assert_eq!(bob.result, json!(1), "{:?}", bob.sources);
    // Each is answered from their own entry now.
    assert!(f.report_for("alice", counted()).await.sources[0].cached);
    assert!(f.report_for("bob", counted()).await.sources[0].cached);
    assert_eq!(s.hits.load(Ordering::SeqCst), 2);

    // One fetch per second per account to the host: alice's three sources (different headers, so
    // none is cached) spend her one; bob's goes out all the same.
    let varied = |n: usize| {
        let sources = (0..n)
            .map(|i| {
                let mut source = path(format!("{}/counted", s.base), "$.v");
                source.headers.insert("x-n".into(), i.to_string());
                source
            })
            .collect();
        request(sources, AggregationMethod::Mode, 1)
    };
    let over = |p: &oracle::report::ReportPayload| {
        p.sources
            .iter()
            .filter(|s| {
                s.error
                    .as_deref()
                    .is_some_and(|e| e.contains("host_rate_per_second"))
            })
            .count()
    };
    tokio::time::advance(Duration::from_millis(1_000)).await;
    let p = f.report_for("alice", varied(3)).await;
    assert_eq!(over(&p), 2, "{:?}", p.sources);
    assert_eq!(s.hits.load(Ordering::SeqCst), 3);
    let p = f.report_for("bob", varied(1)).await;
    assert_eq!(over(&p), 0, "alice's budget is not bob's: {:?}", p.sources);
    assert_eq!(s.hits.load(Ordering::SeqCst), 4);
}

/// A value read by a script is marked with the script's SHA-256 (a JSONPath's is not), beside the
/// body's: a verifier holding the body checks its hash, runs the script again on the same
/// arguments, deterministic, and gets the same value, clock and `Math.random` included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_value_carries_the_script_hash_and_reruns_from_the_body() {
    use oracle::report::ExtractedBy;
    use sha2::{Digest, Sha256};
    let s = sources().await;
    let f = start(|_| {}).await;
    let code = "const p = JSON.parse(args.body).data.price;\n\
                return [p, Date.now(), Math.floor(Math.random() * 1e6), args.status];";
    let req = request(
        vec![
            path(format!("{}/a", s.base), "$.data.state"),
            Source {
                extract: Extraction::Script(code.into()),
                ..path(format!("{}/b", s.base), "")
            },
        ],
        AggregationMethod::Mode,
        1,
    );
    let p = f.report(req).await;
    assert_eq!(p.format, "cloister-oracle-report/2");
    let (by_path, by_script) = (&p.sources[0], &p.sources[1]);
    assert_eq!(by_path.extraction, Some(ExtractedBy::JsonPath));
    assert_eq!(by_path.script_sha256, None);
    assert_eq!(by_script.extraction, Some(ExtractedBy::Script));
    assert_eq!(
        by_script.script_sha256.as_deref(),
        Some(hex::encode(Sha256::digest(code.as_bytes())).as_str())
    );
    assert_eq!(by_script.value[1], json!(computation::DETERMINISTIC_NOW_MS));

    // The verifier's side: the body, checked against the report, and the script run again on it.
    let body = reqwest::get(format!("{}/b", s.base))
        .await
        .expect("fetch")
        .bytes()
        .await
        .expect("body");
    assert_eq!(
        by_script.body_sha256.as_deref(),
        Some(hex::encode(Sha256::digest(&body)).as_str())
    );
    let args = oracle::report::script_args(by_script.status.expect("a status"), &body);
    let program = computation::Program {
        code: code.into(),
        args: Some(serde_json::value::RawValue::from_string(args).expect("json")),
        limits: Default::default(),
        deterministic: true,
    };
    let again = f
        .computation
        .call(|reply| computation::Request::Run {
            caller: computation::Caller {
                owner: "verifier".into(),
                signing_key: None,
                grants: computation::Grants::NONE,
                allowance: None,
                capabilities: computation::Capabilities::None,
            },
            program,
            reply,
        })
        .await
        .expect("answer")
        .expect("run");
    assert_eq!(again.ending, computation::Ending::Completed, "{again:?}");
    assert_eq!(again.result.value(), by_script.value);
}

/// An extraction script runs without capabilities: one that reads `kv` or `crypto` (even inside
/// `try`) refuses the whole request, naming its source, and nothing of the caller's is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extraction_script_that_reads_kv_or_crypto_is_refused() {
    let s = sources().await;
    let f = start(|_| {}).await;
    for (code, capability) in [
        ("return kv.get('secret')", "kv"),
        ("try { kv.put('x', '1') } catch (e) {} return 1", "kv"),
        ("return crypto.sha256(args.body)", "crypto"),
        (
            "try { return crypto.sign('m') } catch (e) { return 2 }",
            "crypto",
        ),
    ] {
        let req = request(
            vec![
                path(format!("{}/a", s.base), "$.data.price"),
                Source {
                    extract: Extraction::Script(code.into()),
                    ..path(format!("{}/b", s.base), "")
                },
            ],
            AggregationMethod::Median,
            1,
        );
        match f.ask("alice", req).await {
            Err(
                e @ Error::Unfit {
                    source_index: Some(1),
                    field: "extract.script",
                    ..
                },
            ) => {
                let text = e.to_string();
                assert!(
                    text.starts_with("sources[1]: extract.script reads ")
                        && text.contains(capability)
                        && text.contains("without capabilities"),
                    "{code}: {text}"
                );
            }
            other => panic!("{code}: expected the request refused, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_account_has_its_own_request_limit_and_bad_requests_are_refused() {
    let s = sources().await;
    let f = start(|spec| spec.set(&oracle::REQUESTS_PER_MINUTE, 2)).await;
    let one = || {
        request(
            vec![path(format!("{}/a", s.base), "$.data.price")],
            AggregationMethod::Median,
            1,
        )
    };
    f.ask("alice", one()).await.expect("first");
    f.ask("alice", one()).await.expect("second");
    match f.ask("alice", one()).await {
        Err(Error::RateLimited { retry_after_s, .. }) => assert!(retry_after_s >= 1),
        other => panic!("expected the rate limit, got {other:?}"),
    }
    f.ask("bob", one()).await.expect("bob has his own limit");

    let mut empty = one();
    empty.sources.clear();
    assert!(matches!(
        f.ask("carol", empty).await,
        Err(Error::BadInput {
            source_index: None,
            field: "sources",
            ..
        })
    ));
    let too_many = request(
        (0..9)
            .map(|_| path(format!("{}/a", s.base), "$.a"))
            .collect(),
        AggregationMethod::Median,
        1,
    );
    match f.ask("carol", too_many).await {
        Err(Error::BadInput {
            source_index: None,
            field: "sources",
            reason,
        }) => assert!(reason.contains("max_sources"), "{reason}"),
        other => panic!("expected too many sources, got {other:?}"),
    }
    let bad_path = request(
        vec![path(format!("{}/a", s.base), "data.price")],
        AggregationMethod::Median,
        1,
    );
    // Which source and which of its fields: the caller can point at it; the message says it too.
    match f.ask("carol", bad_path).await {
        Err(
            e @ Error::Unfit {
                source_index: Some(0),
                field: "extract.json_path",
                ..
            },
        ) => assert!(
            e.to_string().starts_with("sources[0]: extract.json_path"),
            "{e}"
        ),
        other => panic!("expected a bad json path in source 0, got {other:?}"),
    }
    let mut needs_more = one();
    needs_more.aggregation.min_agreeing = 2;
    assert!(matches!(
        f.ask("carol", needs_more).await,
        Err(Error::Unfit {
            field: "aggregation.min_agreeing",
            ..
        })
    ));
}

#[test]
fn the_oracle_refuses_settings_that_would_open_or_break_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let platform: Arc<dyn enclave::Platform> = Arc::new(
        enclave::Simulation::open(dir.path(), b"test binary", b"", 1).expect("simulation"),
    );
    let mut b = Builder::new(Journal::in_memory());
    let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
    let storage = b.add(storage::Storage::new(
        dir.path(),
        platform.clone(),
        crypto.clone(),
    ));
    let computation = b.add(computation::Computation::new(crypto.clone(), storage));
    let service = oracle::Oracle::new(crypto, computation, platform);

    let good = oracle::Oracle::default_spec();
    assert_eq!(service.validate(&good), Ok(()));
    let mut closed = good.clone();
    closed.resources.network_access = false;
    assert!(
        service
            .validate(&closed)
            .expect_err("refused")
            .to_string()
            .contains("network_access")
    );
    // A host pattern is checked by its list's grammar, for every spec the runtime is given.
    let mut bad_host = good.clone();
    bad_host.set_items(&oracle::ALLOWED_HOSTS, &["http://example.com"]);
    let problems = runtime::spec::check_spec(&bad_host);
    assert!(
        problems.iter().any(|(path, _)| path == "allowed_hosts[0]"),
        "{problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_does_not_reach_inward_addresses_in_any_spelling() {
    let s = sources().await;
    // The operator allows any host, over HTTPS and plain HTTP alike, and lists no address.
    let f = start(|spec| {
        spec.set_items(&oracle::ALLOWED_HOSTS, &["*"]);
        spec.set_items(&oracle::PLAIN_HTTP_HOSTS, &["*"]);
        spec.set(&oracle::MAX_SOURCES, 16);
    })
    .await;
    let port = s.base.rsplit(':').next().expect("a port");
    let inward = [
        (
            format!("http://127.0.0.1:{port}/counted"),
            "a loopback address",
        ),
        (
            format!("http://2130706433:{port}/counted"),
            "a loopback address",
        ),
        (
            format!("http://0x7f.1:{port}/counted"),
            "a loopback address",
        ),
        (
            format!("http://017700000001:{port}/counted"),
            "a loopback address",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/counted"),
            "a loopback address",
        ),
        (
            format!("http://[::ffff:7f00:1]:{port}/counted"),
            "a loopback address",
        ),
        (
            format!("http://localhost:{port}/counted"),
            "a loopback address",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "a link-local address",
        ),
        ("http://[fe80::1]/".into(), "a link-local address"),
        ("http://10.0.0.1/".into(), "a private address"),
        ("http://100.64.0.1/".into(), "a shared"),
        ("http://[fd00::1]/".into(), "a unique-local address"),
        ("http://0.0.0.0/".into(), "unspecified"),
        ("https://127.0.0.1/".into(), "a loopback address"),
    ];
    let p = f
        .report(request(
            inward
                .iter()
                .map(|(url, _)| path(url.clone(), "$.v"))
                .collect(),
            AggregationMethod::Median,
            1,
        ))
        .await;
    for (i, (url, expected)) in inward.iter().enumerate() {
        let error = p.sources[i].error.as_deref().unwrap_or_default();
        assert!(
            error.contains(expected) && error.contains("allowed_hosts or plain_http_hosts"),
            "{url}: {error:?} should say {expected:?}"
        );
    }
    assert_eq!(
        s.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
    assert_eq!(p.result, Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_address_is_reached_and_only_on_its_port() {
    let s = sources().await;
    let port = s.base.rsplit(':').next().expect("a port").to_owned();
    let listed = format!("127.0.0.0/8:{port}");
    let f = start(|spec| {
        spec.set_items(&oracle::PLAIN_HTTP_HOSTS, &["*"]);
        spec.set_items(&oracle::ALLOWED_HOSTS, &[listed.as_str()]);
    })
    .await;
    let p = f
        .report(request(
            vec![
                path(format!("{}/counted", s.base), "$.v"),
                path(format!("{}/counted", s.closing), "$.v"),
            ],
            AggregationMethod::Median,
            1,
        ))
        .await;
    assert_eq!(p.result, json!(1.0), "{:?}", p.sources);
    assert_eq!(s.hits.load(Ordering::SeqCst), 1);
    let other_port = p.sources[1].error.as_deref().unwrap_or_default();
    assert!(other_port.contains("a loopback address"), "{other_port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_hop_by_hop_and_proxy_headers_are_refused() {
    let s = sources().await;
    let f = start(|_| {}).await;
    for name in [
        "Host",
        "host",
        "Connection",
        "Transfer-Encoding",
        "Proxy-Authorization",
        "X-Forwarded-For",
        "Forwarded",
        "Bad Header",
    ] {
        let mut source = path(format!("{}/a", s.base), "$.data.price");
        source
            .headers
            .insert(name.into(), "internal.example".into());
        match f
            .ask("alice", request(vec![source], AggregationMethod::Median, 1))
            .await
        {
            Err(
                e @ (Error::BadInput {
                    source_index: Some(0),
                    ..
                }
                | Error::Unfit {
                    source_index: Some(0),
                    ..
                }),
            ) => assert!(e.to_string().contains(name), "{e}"),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(s.hits.load(Ordering::SeqCst), 0);
}

/// Simulation quotes accepted (development), no hardware collateral.
const SIMULATION_OK: enclave::quote::Trust = enclave::quote::Trust {
    allow_simulation: true,
    hardware: None,
};

/// The attestation with the recorded hardware quote in place of the simulation's: the oracle's
/// verifier takes it to Intel's root CA with the collateral given, and then refuses it because the
/// quote does not bind this report's key; without collateral it says what is missing.
fn hardware_quotes_go_through_the_dcap_verifier(text: &str, attestation: &str) {
    use base64::Engine as _;
    use enclave::quote::{QuoteError, Trust};
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../enclave/tests/fixtures/dcap/"
    );
    let quote = std::fs::read(format!("{fixtures}sgx_quote")).expect("quote");
    let collateral = std::fs::read(format!("{fixtures}sgx_quote_collateral.json")).expect("json");
    let mut swapped: Value = serde_json::from_str(attestation).expect("json");
    swapped["quote"] = json!(base64::engine::general_purpose::STANDARD.encode(&quote));
    let swapped = swapped.to_string();
    let hardware = Trust {
        allow_simulation: false,
        hardware: Some(enclave::dcap::HardwareCheck {
            collateral: enclave::dcap::parse_collateral(&collateral).expect("collateral"),
            at_unix_secs: 1_751_328_000,
            policy: enclave::dcap::TcbPolicy {
                allow: enclave::dcap::TcbStatus::ALL.to_vec(),
                allow_debug: false,
            },
        }),
    };
    assert_eq!(
        oracle::verify(text, Some(&swapped), &hardware).err(),
        Some(oracle::VerifyError::Quote(QuoteError::ReportDataMismatch))
    );
    assert_eq!(
        oracle::verify(text, Some(&swapped), &SIMULATION_OK).err(),
        Some(oracle::VerifyError::Quote(QuoteError::CollateralNeeded))
    );
    // The simulation's own quote, with hardware required, is refused whatever collateral is given.
    assert_eq!(
        oracle::verify(text, Some(attestation), &hardware).err(),
        Some(oracle::VerifyError::Quote(
            QuoteError::SimulationNotAccepted
        ))
    );
}
