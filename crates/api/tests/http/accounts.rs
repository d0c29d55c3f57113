//! Accounts and tokens, and the isolation of one account's resources from another's.

use super::*;

#[tokio::test]
async fn accounts_tokens_scopes_and_the_journal() {
    let h = harness_with(false, true).await;
    let app = &h.app;
    let (id, secret, created) = create_account(app, "alice").await;
    let account = &created["account"];
    assert!(id.starts_with("acc_"), "{id}");
    let neo = account["addresses"]["neo_n3"].as_str().expect("address");
    assert!(neo.starts_with('N') && neo.len() == 34, "{neo}");
    let public = hex::decode(account["public_key"].as_str().expect("key")).expect("hex");
    assert_eq!(account::neo_n3(&public).expect("address"), neo);
    assert_eq!(created["token"]["scopes"], serde_json::json!(["*"]));

    // The account sees itself (also as `me`), and its default signing key, which signs.
    let (status, _, me) = send(app, "GET", "/v1/accounts/me", Some(&secret), "").await;
    assert_eq!(
        (status, &me["id"]),
        (StatusCode::OK, &Value::from(id.clone()))
    );
    let key = account["signing_key"].as_str().expect("key id");
    let (status, _, signed) = send(
        app,
        "POST",
        &format!("/v1/crypto/keys/{key}/sign"),
        Some(&secret),
        r#"{"message":"aGk="}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{signed}");

    // Only the admin manages accounts.
    for (method, uri) in [
        ("POST", "/v1/accounts".to_owned()),
        ("GET", "/v1/accounts".to_owned()),
        ("POST", format!("/v1/accounts/{id}/disable")),
        ("DELETE", format!("/v1/accounts/{id}")),
    ] {
        let (status, _, body) = send(app, method, &uri, Some(&secret), r#"{"name":"x"}"#).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("auth.admin_only")),
            "{method} {uri}"
        );
    }

    // A narrow token: storage reads only. It cannot write, nor hand out more than it holds.
    let (status, _, narrow) = send(
        app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&secret),
        r#"{"name":"reader","scopes":["storage:get","account:tokens"],"expires_in_s":3600}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{narrow}");
    let reader = narrow["secret"].as_str().expect("secret").to_owned();
    assert!(narrow["expires_ms"].as_u64().is_some());
    let (status, body) = raw_as(app, &reader, "PUT", "/v1/storage/k", b"v".to_vec()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "auth.scope".into())
    );
    let (status, _) = raw_as(app, &secret, "PUT", "/v1/storage/k", b"v".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = raw_as(app, &reader, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!((status, body), (StatusCode::OK, b"v".to_vec()));
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&reader),
        r#"{"scopes":["storage"]}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("auth.scope"))
    );
    // What the narrow token issues expires with it at the latest.
    let (status, _, child) = send(
        app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&reader),
        r#"{"scopes":["storage:get"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{child}");
    assert!(
        child["expires_ms"].as_u64() <= narrow["expires_ms"].as_u64(),
        "{child} {narrow}"
    );
    assert!(child["expires_ms"].as_u64().is_some());
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&reader),
        r#"{"scopes":["storage:get"],"expires_in_s":7200}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot outlive"))
    );
    let child_id = child["id"].as_str().expect("id");
    let (status, _, _) = send(
        app,
        "DELETE",
        &format!("/v1/accounts/me/tokens/{child_id}"),
        Some(&secret),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (body, fragment) in [
        (r#"{"expires_in_s":18446744073709552}"#, "ten years"),
        (
            r#"{"scopes":["storage:fly"]}"#,
            "storage has the operations",
        ),
        (r#"{"scopes":[]}"#, "at least one scope"),
        (r#"{"expires_in_s":0}"#, "from 1 to"),
        (r#"{"name":""}"#, "1 to 64 characters"),
        (r#"{"color":"red"}"#, "unknown field"),
    ] {
        let (status, _, answer) =
            send(app, "POST", "/v1/accounts/me/tokens", Some(&secret), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(fragment)),
            "{body}: {answer}"
        );
    }

    // Tokens are listed without secrets; a revoked one stops working at once.
    let (status, _, listed) = send(app, "GET", "/v1/accounts/me/tokens", Some(&secret), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(2));
    assert!(!listed.to_string().contains(&reader) && !listed.to_string().contains("secret"));
    let reader_id = narrow["id"].as_str().expect("token id");
    let (status, _, _) = send(
        app,
        "DELETE",
        &format!("/v1/accounts/{id}/tokens/{reader_id}"),
        Some(&secret),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = raw_as(app, &reader, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "auth.invalid_token".into())
    );

    // Disabled: every token refused with a reason; enabled again: back.
    let (status, _, _) = send(
        app,
        "POST",
        &format!("/v1/accounts/{id}/disable"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = raw_as(app, &secret, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "auth.account_disabled".into())
    );
    let (status, _, _) = send(
        app,
        "POST",
        &format!("/v1/accounts/{id}/enable"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = raw_as(app, &secret, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!(status, StatusCode::OK);

    // Deleted: the token is gone, and so are the account's values (a new account with the same
    // name is a different account and starts empty).
    let (status, _, _) = send(
        app,
        "DELETE",
        &format!("/v1/accounts/{id}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = raw_as(app, &secret, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = send(app, "GET", &format!("/v1/accounts/{id}"), Some(TOKEN), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("account.not_found"))
    );
    // Below the API: the account's namespace holds nothing any more.
    let left = h
        .storage
        .call(|reply| ::storage::Request::List {
            namespace: id.clone(),
            prefix: String::new(),
            after: None,
            limit: 100,
            reply,
        })
        .await
        .expect("storage answers")
        .expect("a listing");
    assert!(
        left.keys.is_empty(),
        "the deleted account's values: {left:?}"
    );
    let (again, again_secret, _) = create_account(app, "alice").await;
    assert_ne!(again, id);
    let (status, body) = raw_as(app, &again_secret, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "storage.not_found".into())
    );
    let (_, _, listed) = send(app, "GET", "/v1/storage?prefix=", Some(&again_secret), "").await;
    assert_eq!(listed["keys"], serde_json::json!([]), "{listed}");

    // The journal tells the story, without a single secret.
    let entries = h
        .runtime
        .client()
        .journal()
        .read(0, 10_000)
        .expect("journal");
    let audits: Vec<(String, String)> = entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::Audit {
                action, subject, ..
            } => Some((action.clone(), subject.clone())),
            _ => None,
        })
        .collect();
    let actions: Vec<&str> = audits.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "account.created",
            "token.issued",
            "token.issued",
            "token.issued",
            "token.revoked",
            "token.revoked",
            "account.disabled",
            "account.enabled",
            "account.disabled",
            "account.deleted",
            "account.created",
            "token.issued"
        ]
    );
    let (earlier, later) = audits.split_at(audits.len() - 2);
    assert!(earlier.iter().all(|(_, subject)| *subject == id));
    assert!(later.iter().all(|(_, subject)| *subject == again));
    let text = serde_json::to_string(&entries).expect("json");
    assert!(!text.contains(&secret) && !text.contains(&reader));
    h.runtime.shutdown().await;
}

/// Every owned resource (keys, values, jobs, tokens, models, training jobs) answers another account
/// exactly as a missing one; listings and scripts act for the caller's account only; the oracle's
/// extraction scripts reach no account at all, and its request limit is per account.
#[tokio::test]
async fn account_isolation_matrix() {
    let h = start(Setup {
        with_storage: true,
        services: "[services.oracle]\nplain_http_hosts = [\"127.0.0.1\"]\nrequests_per_minute = 1\n",
        ..Setup::default()
    })
    .await;
    let app = &h.app;
    let (a, alice, created) = create_account(app, "alice").await;
    let (_, bob, _) = create_account(app, "bob").await;
    let alice_key = created["account"]["signing_key"]
        .as_str()
        .expect("key")
        .to_owned();
    let alice_token = created["token"]["id"].as_str().expect("token").to_owned();
    let (status, _, aes) = send(
        app,
        "POST",
        "/v1/crypto/keys",
        Some(&alice),
        r#"{"algorithm":"aes256gcm"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let alice_aes = aes["id"].as_str().expect("id").to_owned();
    let (status, _) = raw_as(
        app,
        &alice,
        "PUT",
        "/v1/storage/secret",
        b"alice's".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, job) = send(
        app,
        "POST",
        "/v1/computation/jobs",
        Some(&alice),
        r#"{"code":"return kv.get('secret')"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let alice_job = job["id"].as_str().expect("job id").to_owned();
    let (status, _, done) = send(
        app,
        "GET",
        &format!("/v1/computation/jobs/{alice_job}?wait_s=20"),
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(
        (status, &done["state"]),
        (StatusCode::OK, &Value::from("completed")),
        "{done}"
    );
    assert_eq!(done["outcome"]["result"], "alice's");
    let (status, model) = raw_as(app, &alice, "POST", "/v1/ai/models?name=mlp", MLP.to_vec()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&model)
    );
    let model: Value = serde_json::from_slice(&model).expect("json");
    let alice_model = model["id"].as_str().expect("model id").to_owned();
    let (status, _, training) = send(app, "POST", "/v1/ai/train", Some(&alice), TRAIN).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{training}");
    let alice_training = training["id"].as_str().expect("job id").to_owned();
    let (_, _, trained) = send(
        app,
        "GET",
        &format!("/v1/ai/jobs/{alice_training}?wait_s=20"),
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(trained["state"], "completed", "{trained}");
    let alice_trained = trained["model"]["id"]
        .as_str()
        .expect("trained model id")
        .to_owned();

    // Every endpoint, aimed by bob at alice's resources, answers exactly as for a resource that
    // does not exist: same status, same code.
    let sign = r#"{"message":"aGk="}"#;
    let verify = r#"{"message":"aGk=","signature":"aGk="}"#;
    let encrypt = r#"{"plaintext":"aGk="}"#;
    let decrypt = r#"{"ciphertext":"aGk="}"#;
    let derive = r#"{"salt":"aGk=","info":"aGk="}"#;
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "GET",
            format!("/v1/crypto/keys/{alice_key}"),
            "/v1/crypto/keys/key_missing".into(),
            "",
        ),
        (
            "DELETE",
            format!("/v1/crypto/keys/{alice_aes}"),
            "/v1/crypto/keys/key_missing".into(),
            "",
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_key}/sign"),
            "/v1/crypto/keys/key_missing/sign".into(),
            sign,
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_key}/verify"),
            "/v1/crypto/keys/key_missing/verify".into(),
            verify,
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_aes}/encrypt"),
            "/v1/crypto/keys/key_missing/encrypt".into(),
            encrypt,
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_aes}/decrypt"),
            "/v1/crypto/keys/key_missing/decrypt".into(),
            decrypt,
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_aes}/derive"),
            "/v1/crypto/keys/key_missing/derive".into(),
            derive,
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_key}/rotate"),
            "/v1/crypto/keys/key_missing/rotate".into(),
            "",
        ),
        (
            "GET",
            "/v1/storage/secret".into(),
            "/v1/storage/missing".into(),
            "",
        ),
        (
            "DELETE",
            "/v1/storage/secret".into(),
            "/v1/storage/missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/accounts/{a}"),
            "/v1/accounts/acc_missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/accounts/{a}/tokens"),
            "/v1/accounts/acc_missing/tokens".into(),
            "",
        ),
        (
            "POST",
            format!("/v1/accounts/{a}/tokens"),
            "/v1/accounts/acc_missing/tokens".into(),
            "{}",
        ),
        (
            "DELETE",
            format!("/v1/accounts/{a}/tokens/{alice_token}"),
            format!("/v1/accounts/acc_missing/tokens/{alice_token}"),
            "",
        ),
        (
            "GET",
            format!("/v1/computation/jobs/{alice_job}"),
            "/v1/computation/jobs/job_missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/computation/jobs/{alice_job}?wait_s=1"),
            "/v1/computation/jobs/job_missing?wait_s=1".into(),
            "",
        ),
        (
            "DELETE",
            format!("/v1/computation/jobs/{alice_job}"),
            "/v1/computation/jobs/job_missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/ai/models/{alice_model}"),
            "/v1/ai/models/mdl_missing".into(),
            "",
        ),
        (
            "POST",
            format!("/v1/ai/models/{alice_model}/predict"),
            "/v1/ai/models/mdl_missing/predict".into(),
            MLP_INPUT,
        ),
        (
            "POST",
            format!("/v1/ai/models/{alice_trained}/predict"),
            "/v1/ai/models/mdl_missing/predict".into(),
            r#"{"features":[[1]]}"#,
        ),
        (
            "DELETE",
            format!("/v1/ai/models/{alice_model}"),
            "/v1/ai/models/mdl_missing".into(),
            "",
        ),
        (
            "DELETE",
            format!("/v1/ai/models/{alice_trained}"),
            "/v1/ai/models/mdl_missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/ai/jobs/{alice_training}"),
            "/v1/ai/jobs/job_missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/ai/jobs/{alice_training}?wait_s=1"),
            "/v1/ai/jobs/job_missing?wait_s=1".into(),
            "",
        ),
        (
            "DELETE",
            format!("/v1/ai/jobs/{alice_training}"),
            "/v1/ai/jobs/job_missing".into(),
            "",
        ),
    ];
    for (method, theirs, missing, body) in &cases {
        let (s1, b1) = raw_as(app, &bob, method, theirs, body.as_bytes().to_vec()).await;
        let (s2, b2) = raw_as(app, &bob, method, missing, body.as_bytes().to_vec()).await;
        assert_eq!(
            s1,
            StatusCode::NOT_FOUND,
            "{method} {theirs}: {}",
            String::from_utf8_lossy(&b1)
        );
        assert_eq!(
            (s1, code(&b1)),
            (s2, code(&b2)),
            "{method} {theirs} vs {missing}"
        );
    }
    // Listings show only bob's own things.
    let (_, _, keys) = send(app, "GET", "/v1/crypto/keys", Some(&bob), "").await;
    let listed = keys["keys"].as_array().expect("keys");
    assert_eq!(listed.len(), 1, "only bob's signing key: {keys}");
    assert!(!keys.to_string().contains(&alice_key) && !keys.to_string().contains(&alice_aes));
    let (_, _, values) = send(app, "GET", "/v1/storage?prefix=", Some(&bob), "").await;
    assert_eq!(values["keys"], serde_json::json!([]));
    let (_, _, jobs) = send(app, "GET", "/v1/computation/jobs", Some(&bob), "").await;
    assert_eq!(jobs["jobs"], serde_json::json!([]));
    let (_, _, models) = send(app, "GET", "/v1/ai/models", Some(&bob), "").await;
    assert_eq!(models["models"], serde_json::json!([]), "{models}");
    let (_, _, trainings) = send(app, "GET", "/v1/ai/jobs", Some(&bob), "").await;
    assert_eq!(trainings["jobs"], serde_json::json!([]), "{trainings}");
    // Alice's models and training job are untouched by all that.
    let (status, _, out) = send(
        app,
        "POST",
        &format!("/v1/ai/models/{alice_model}/predict"),
        Some(&alice),
        MLP_INPUT,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let (status, _, out) = send(
        app,
        "POST",
        &format!("/v1/ai/models/{alice_trained}/predict"),
        Some(&alice),
        r#"{"features":[[1]]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let (_, _, job) = send(
        app,
        "GET",
        &format!("/v1/ai/jobs/{alice_training}"),
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(job["state"], "completed", "{job}");
    // The oracle: an extraction script reaches nothing of any account's (one that reads `kv` is
    // refused, naming its source), and each account has its own request limit (one a minute).
    let src = test_support::source::fixed(r#"{"v":1}"#).await;
    let peeking = serde_json::json!({
        "sources": [{"url": src, "extract": {"script": "const v = kv.get('secret'); return v === null ? 'nothing' : v"}}],
        "aggregation": {"method": "mode"},
    })
    .to_string();
    let (status, _, refused) =
        send(app, "POST", "/v1/oracle/requests", Some(&alice), &peeking).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("oracle.unfit")),
        "{refused}"
    );
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("sources[0]: extract.script reads kv"),
        "{message}"
    );
    let oracle_request = serde_json::json!({
        "sources": [{"url": src, "extract": {"script": "return JSON.parse(args.body).v"}}],
        "aggregation": {"method": "mode"},
    })
    .to_string();
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/oracle/requests",
        Some(&alice),
        &oracle_request,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("oracle.rate_limited"))
    );
    let (status, _, report) = send(
        app,
        "POST",
        "/v1/oracle/requests",
        Some(&bob),
        &oracle_request,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "bob has his own limit: {report}");
    assert_eq!(report["report"]["result"], 1, "{report}");
    // Bob's scripts see his namespace and his keys only.
    let peek = serde_json::json!({
        "code": format!(
            "let signed = null; try {{ crypto.sign('x', '{alice_key}') }} catch (e) {{ signed = String(e) }}
             return {{note: kv.get('secret'), keys: kv.list(''), signed}}"
        )
    });
    let (status, _, ran) = send(
        app,
        "POST",
        "/v1/computation/run",
        Some(&bob),
        &peek.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    assert_eq!(ran["ending"]["status"], "completed", "{ran}");
    assert_eq!(ran["result"]["note"], Value::Null);
    assert_eq!(ran["result"]["keys"], serde_json::json!([]));
    assert!(
        ran["result"]["signed"]
            .as_str()
            .is_some_and(|e| e.contains("no key")),
        "{ran}"
    );
    // Bob writing and batch-deleting the same key names touches only his namespace.
    let (status, _) = raw_as(app, &bob, "PUT", "/v1/storage/secret", b"bob's".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(
        app,
        "POST",
        "/v1/storage",
        Some(&bob),
        r#"{"writes":[{"key":"secret","delete":true}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = raw_as(app, &alice, "GET", "/v1/storage/secret", vec![]).await;
    assert_eq!((status, body), (StatusCode::OK, b"alice's".to_vec()));
    // Alice's keys all still work for her: nothing bob did reached them.
    let (status, _, _) = send(
        app,
        "GET",
        &format!("/v1/crypto/keys/{alice_aes}"),
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = send(
        app,
        "GET",
        &format!("/v1/crypto/keys/{alice_key}"),
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    // The admin token has its own owner: it does not see into accounts either.
    let (status, _) = raw_as(app, TOKEN, "GET", "/v1/storage/secret", vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.runtime.shutdown().await;
}

/// docs/api.md: a second account with a taken name is 409 `account.name_taken`, and a job wait
/// of `wait_s=0` is 400 `request.invalid_query` (leave it out not to wait).
#[tokio::test]
async fn a_taken_account_name_is_409_and_wait_s_zero_is_400() {
    let h = harness_with(false, true).await;
    let app = &h.app;
    let (_, alice, _) = create_account(app, "alice").await;
    let again = send(
        app,
        "POST",
        "/v1/accounts",
        Some(TOKEN),
        r#"{"name":"alice"}"#,
    )
    .await;
    assert_error(&again, StatusCode::CONFLICT, "account.name_taken", None);
    let zero = send(
        app,
        "GET",
        "/v1/computation/jobs/job_x?wait_s=0",
        Some(&alice),
        "",
    )
    .await;
    assert_error(
        &zero,
        StatusCode::BAD_REQUEST,
        "request.invalid_query",
        None,
    );
    h.runtime.shutdown().await;
}

/// docs/api.md: 503 `account.loading`, with `Retry-After`, while the account service has not loaded
/// its directory (here it never starts); the admin token does not depend on it.
#[tokio::test(start_paused = true)]
async fn error_code_account_loading_is_503_with_retry_after() {
    let h = harness(false).await;
    let answer = send(
        &h.app,
        "GET",
        "/v1/crypto/keys",
        Some("cls_some_account_token"),
        "",
    )
    .await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "account.loading",
        Some(1..=1),
    );
    let (status, _, body) = send(&h.app, "GET", "/v1/services", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.runtime.shutdown().await;
}
