//! The oracle over HTTP: requests against loopback sources, signed reports, its key and its limits.

use super::*;

/// docs/api.md: 429 `oracle.rate_limited`, with `Retry-After`, over `requests_per_minute`.
#[tokio::test]
async fn error_code_oracle_rate_limited_is_429_with_retry_after() {
    let h = start(Setup {
        with_storage: true,
        services: "[services.oracle]\nrequests_per_minute = 1\n",
        ..Setup::default()
    })
    .await;
    // A host nobody allowed: the source fails without a fetch, and the report says so.
    let request = r#"{"sources":[{"url":"https://not-allowed.invalid/x","extract":{"json_path":"$.v"}}],"aggregation":{"method":"median"}}"#;
    let (status, _, report) =
        send(&h.app, "POST", "/v1/oracle/requests", Some(TOKEN), request).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let answer = send(&h.app, "POST", "/v1/oracle/requests", Some(TOKEN), request).await;
    // One request a minute: the next is about a minute away.
    assert_error(
        &answer,
        StatusCode::TOO_MANY_REQUESTS,
        "oracle.rate_limited",
        Some(1..=60),
    );
    h.runtime.shutdown().await;
}

/// The oracle's configuration for these tests: plain HTTP to loopback sources.
const LOOPBACK: &str = "[services.oracle]\nplain_http_hosts = [\"127.0.0.1\"]\n";

/// docs/api.md, "Oracle": a request over two loopback sources (one read by JSONPath, one by a
/// script) and a host nobody allowed is answered with a signed report: the failed source has an
/// `error` and no value, the median of the other two is the result, `report` is `payload` parsed,
/// and `oracle::verify` accepts the report with the key's quote from `GET /v1/oracle/key`, and
/// refuses it once its payload is changed.
#[tokio::test]
async fn an_oracle_request_is_answered_with_a_report_that_verifies_with_the_key() {
    let h = start(Setup {
        with_storage: true,
        services: LOOPBACK,
        ..Setup::default()
    })
    .await;
    let a = test_support::source::fixed(r#"{"data": {"price": 100.0}}"#).await;
    let b = test_support::source::fixed(r#"{"last": "102"}"#).await;
    let request = serde_json::json!({
        "sources": [
            { "url": a, "extract": { "json_path": "$.data.price" } },
            { "url": b, "extract": { "script": "return Number(JSON.parse(args.body).last)" } },
            { "url": "https://not-allowed.invalid/x", "extract": { "json_path": "$.v" } },
        ],
        "aggregation": { "method": "median", "min_agreeing": 2 },
    });
    let answer = h
        .post("/v1/oracle/requests")
        .admin()
        .json(&request)
        .send()
        .await
        .status(200);
    let signed = answer.json();
    let report = &signed["report"];
    assert_eq!(report["result"], serde_json::json!(101.0), "{report}");
    assert_eq!(report["agreeing"], 2, "{report}");
    let sources = report["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 3);
    assert_eq!(sources[0]["value"], serde_json::json!(100.0));
    assert_eq!(sources[1]["value"], serde_json::json!(102));
    assert!(sources[2]["error"].is_string(), "{}", sources[2]);
    assert!(sources[2]["value"].is_null(), "{}", sources[2]);
    let payload = signed["payload"].as_str().expect("payload");
    assert_eq!(
        &serde_json::from_str::<Value>(payload).expect("payload is JSON"),
        report
    );

    let key = h
        .get("/v1/oracle/key")
        .admin()
        .send()
        .await
        .status(200)
        .json();
    assert_eq!(key["simulation"], true, "{key}");
    assert_eq!(key["public_key"], report["signer"]["public_key"]);
    let verified = ::oracle::verify(&signed.to_string(), Some(&key.to_string()), &SIMULATION_OK)
        .expect("the report verifies with the key's quote");
    assert_eq!(
        verified.quote.map(|q| q.simulation),
        Some(true),
        "a simulation quote, said to be one"
    );

    let mut forged = signed.clone();
    forged["payload"] = Value::String(payload.replace("101", "111"));
    assert_eq!(
        ::oracle::verify(&forged.to_string(), Some(&key.to_string()), &SIMULATION_OK).err(),
        Some(::oracle::VerifyError::BadSignature)
    );
    h.runtime.shutdown().await;
}

/// docs/api.md, the oracle's errors: 400 `oracle.bad_input` for what breaks the API document (no
/// source, too many, `min_agreeing` zero), 422 `oracle.unfit` for what the document cannot say (a
/// bad JSONPath, `min_agreeing` over the sources), 400 `request.invalid_body`, and 503
/// `service.unavailable` while the oracle is disabled. (429 `oracle.rate_limited` has its own test; 501 `oracle.unsupported`
/// needs a platform without quotes, which the simulation is not.)
#[tokio::test]
async fn error_codes_of_the_oracle_are_400_422_and_503() {
    let h = start(Setup {
        with_storage: true,
        services: "[services.oracle]\nplain_http_hosts = [\"127.0.0.1\"]\nmax_sources = 2\n",
        ..Setup::default()
    })
    .await;
    let source = |path: &str| serde_json::json!({ "url": "http://127.0.0.1:9/", "extract": { "json_path": path } });
    let median = |min: u32| serde_json::json!({ "method": "median", "min_agreeing": min });
    let bad = (StatusCode::BAD_REQUEST, "oracle.bad_input");
    let unfit = (StatusCode::UNPROCESSABLE_ENTITY, "oracle.unfit");
    for (why, request, (status, code)) in [
        (
            "no source",
            serde_json::json!({ "sources": [], "aggregation": median(1) }),
            bad,
        ),
        (
            "too many",
            serde_json::json!({ "sources": [source("$.a"), source("$.b"), source("$.c")], "aggregation": median(1) }),
            bad,
        ),
        (
            "a bad JSONPath",
            serde_json::json!({ "sources": [source("$[")], "aggregation": median(1) }),
            unfit,
        ),
        (
            "min_agreeing over the sources",
            serde_json::json!({ "sources": [source("$.a")], "aggregation": median(2) }),
            unfit,
        ),
        (
            "min_agreeing zero",
            serde_json::json!({ "sources": [source("$.a")], "aggregation": median(0) }),
            bad,
        ),
    ] {
        let answer = h
            .post("/v1/oracle/requests")
            .admin()
            .json(&request)
            .send()
            .await;
        assert_eq!(answer.status, status, "{why}: {}", answer.body());
        assert_eq!(answer.body()["error"]["code"], code, "{why}");
    }
    h.post("/v1/oracle/requests")
        .admin()
        .text(r#"{"sources": "not a list"}"#)
        .send()
        .await
        .error(400, "request.invalid_body");
    h.runtime.shutdown().await;

    // Without storage the oracle is registered but disabled: its endpoints say so, and to retry.
    let h = harness(false).await;
    let answer = h
        .post("/v1/oracle/requests")
        .admin()
        .json(&serde_json::json!({ "sources": [source("$.a")], "aggregation": median(1) }))
        .send()
        .await
        .error(503, "service.unavailable");
    assert!(
        answer.header("retry-after").is_some(),
        "{:?}",
        answer.headers
    );
    h.get("/v1/oracle/key")
        .admin()
        .send()
        .await
        .error(503, "service.unavailable");
    h.runtime.shutdown().await;
}

/// docs/api.md, "Oracle": a script extraction is a computation run, so it needs the token scope
/// `computation:run` as well as `oracle:request`: without it, 403 `auth.scope` naming the scope,
/// before anything is fetched; a JSONPath-only request needs `oracle:request` alone. With both, the
/// script's value is marked with its hash and a script that reads `kv` refuses the request.
#[tokio::test]
async fn a_script_extraction_needs_computation_run_and_is_marked_with_its_hash() {
    let h = start(Setup {
        with_storage: true,
        services: LOOPBACK,
        ..Setup::default()
    })
    .await;
    let (id, _, _) = create_account(&h.app, "feeds").await;
    let token = |scopes: Value| {
        let app = h.app.clone();
        let id = id.clone();
        async move {
            let (status, _, issued) = send(
                &app,
                "POST",
                &format!("/v1/accounts/{id}/tokens"),
                Some(TOKEN),
                &serde_json::json!({ "scopes": scopes }).to_string(),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{issued}");
            issued["secret"].as_str().expect("secret").to_owned()
        }
    };
    let oracle_only = token(serde_json::json!(["oracle:request"])).await;
    let both = token(serde_json::json!(["oracle:request", "computation:run"])).await;
    let fetched = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = fetched.clone();
    let counted = test_support::source::serve(axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { r#"{"v": 7}"# }
        }),
    ))
    .await;
    let hits = || fetched.load(std::sync::atomic::Ordering::SeqCst);
    let by_script = serde_json::json!({
        "sources": [{ "url": counted, "extract": { "script": "return JSON.parse(args.body).v" } }],
        "aggregation": { "method": "mode" },
    })
    .to_string();
    let answer = send(
        &h.app,
        "POST",
        "/v1/oracle/requests",
        Some(&oracle_only),
        &by_script,
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "auth.scope", None);
    let message = answer.2["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("computation:run"), "{message}");
    assert_eq!(hits(), 0, "nothing was fetched");

    let by_path = serde_json::json!({
        "sources": [{ "url": counted, "extract": { "json_path": "$.v" } }],
        "aggregation": { "method": "mode" },
    })
    .to_string();
    let (status, _, report) = send(
        &h.app,
        "POST",
        "/v1/oracle/requests",
        Some(&oracle_only),
        &by_path,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["report"]["sources"][0]["extraction"], "json_path");

    let (status, _, report) = send(
        &h.app,
        "POST",
        "/v1/oracle/requests",
        Some(&both),
        &by_script,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let source = &report["report"]["sources"][0];
    assert_eq!(source["value"], 7, "{source}");
    assert_eq!(source["extraction"], "script", "{source}");
    let hash = source["script_sha256"].as_str().expect("a script hash");
    assert_eq!(hash.len(), 64, "{source}");
    ::oracle::verify(&report.to_string(), None, &SIMULATION_OK)
        .expect("the marked report verifies");

    let peeking = serde_json::json!({
        "sources": [{ "url": counted, "extract": { "script": "try { return kv.get('k') } catch (e) { return 0 }" } }],
        "aggregation": { "method": "mode" },
    })
    .to_string();
    let answer = send(&h.app, "POST", "/v1/oracle/requests", Some(&both), &peeking).await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "oracle.unfit",
        None,
    );
    h.runtime.shutdown().await;
}

/// Simulation quotes accepted (development), no hardware collateral.
const SIMULATION_OK: enclave::quote::Trust = enclave::quote::Trust {
    allow_simulation: true,
    hardware: None,
};
