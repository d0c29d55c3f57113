//! The SDK against the real API (the in-process stack served on loopback): each call answers the
//! API's own type with the fields the API filled in, and an error answer is the typed error with
//! the API's code.

use std::time::Duration;

use cloister_sdk::types::accounts::IssueBody;
use cloister_sdk::types::computation::{Ending, Program};
use cloister_sdk::types::crypto::Encoding;
use cloister_sdk::types::{Health, Kind, Outcome, RuntimeLevel, ServiceName, State};
use cloister_sdk::{Client, Command, Error};
use test_support::in_process::{TOKEN, harness_with};
use test_support::source::serve;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_answers_round_trip_through_the_real_api() {
    let h = harness_with(false, true).await;
    let admin = Client::new(&serve(h.app.clone()).await, TOKEN).expect("client");

    // The orchestration read side.
    let list = admin.services().await.expect("services");
    assert_eq!(list.readiness.level, RuntimeLevel::Ready);
    let storage = list
        .services
        .iter()
        .find(|s| s.name.as_str() == "storage")
        .expect("storage is listed");
    assert_eq!(storage.state, State::Running);
    assert_eq!(storage.health, Health::Healthy);
    assert_eq!(storage.replicas.running, 1);
    let app = admin.service("app").await.expect("app");
    assert_eq!(app.dependencies, vec![ServiceName::from_static("base")]);
    assert_eq!(app.kind, Kind::Core);
    assert!(app.layer > 0, "app starts after base");
    let graph = admin.graph().await.expect("graph");
    assert!(
        graph
            .edges
            .iter()
            .any(|e| e.from.as_str() == "app" && e.to.as_str() == "base")
    );
    let restarted = admin
        .command("app", Command::Restart)
        .await
        .expect("restart");
    assert_eq!(restarted.service.as_str(), "app");
    assert!(restarted.accepted, "{}", restarted.message);

    // The journal, by page and live.
    let page = admin.events(0, 5).await.expect("events");
    assert_eq!(page.events.first().map(|e| e.seq), Some(1));
    assert_eq!(page.next, page.events.last().map_or(0, |e| e.seq));
    let mut live = admin.event_stream(0).await.expect("stream");
    let first = live
        .next()
        .await
        .expect("an entry")
        .expect("a readable entry");
    assert_eq!(first.seq, 1);

    // Configuration: the running version, and a rejection as an answer with its problems.
    let running = admin.config().await.expect("config");
    assert!(running.summary.version >= 1);
    let history = admin.config_history().await.expect("history");
    assert_eq!(
        history.versions.first().map(|v| v.version),
        Some(running.summary.version)
    );
    let rejected = admin
        .apply_config("[runtime\n", false)
        .await
        .expect("a rejection is an answer");
    match rejected.outcome {
        Outcome::Rejected { problems } => assert!(!problems.is_empty()),
        other => panic!("not rejected: {other:?}"),
    }
    assert_eq!(
        rejected.error.map(|e| e.code).as_deref(),
        Some("config.rejected")
    );

    // Accounts and tokens.
    let created = admin.create_account("alice").await.expect("create");
    let id = created.account.id.clone();
    assert_eq!(created.account.name, "alice");
    assert_eq!(created.token.info.scopes, vec!["*".to_owned()]);
    assert_eq!(admin.account(&id).await.expect("account"), created.account);
    let issued = admin
        .issue_token(
            &id,
            &IssueBody {
                name: Some("app".into()),
                scopes: Some(vec!["storage".into(), "crypto:sign".into()]),
                expires_in_s: Some(3600),
            },
        )
        .await
        .expect("issue");
    assert_eq!(issued.info.scopes, vec!["storage", "crypto:sign"]);
    assert!(issued.info.expires_ms.is_some());
    let tokens = admin.tokens(&id).await.expect("tokens");
    assert_eq!(tokens.tokens.len(), 2);

    // What an application does with its token: values and signatures.
    let alice = Client::new(admin.base_url(), issued.secret.clone()).expect("client");
    let stored = alice.put("notes/a b", "hello").await.expect("put");
    assert_eq!(stored.key, "notes/a b");
    let value = alice.get("notes/a b").await.expect("get");
    assert_eq!(value.data, b"hello");
    assert_eq!(value.version, stored.version);
    let page = alice.list("notes/", None, None).await.expect("list");
    assert_eq!(page.keys.len(), 1);
    assert_eq!(page.keys[0].key, "notes/a b");
    let signed = alice
        .sign(&created.account.signing_key, b"hello", Some(Encoding::Der))
        .await
        .expect("sign");
    assert_eq!(signed.encoding, Encoding::Der);
    assert_eq!(signed.version, 1);
    let deleted = alice.delete("notes/a b").await.expect("delete");
    assert!(deleted.deleted);
    // A script, with arguments.
    let program = Program::new("console.log('adding'); return args.x + 1;")
        .with_args(&serde_json::json!({ "x": 41 }))
        .expect("args");
    let outcome = admin.run(&program).await.expect("run");
    assert_eq!(outcome.ending, Ending::Completed);
    assert_eq!(outcome.result, serde_json::json!(42));
    assert_eq!(outcome.console.len(), 1);
    assert_eq!(outcome.console[0].text, "adding");

    admin
        .revoke_token(&id, &issued.info.id)
        .await
        .expect("revoke");
    admin.delete_account(&id).await.expect("delete account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_error_is_the_typed_error_with_its_code() {
    let h = harness_with(false, true).await;
    let url = serve(h.app.clone()).await;
    let admin = Client::new(&url, TOKEN).expect("client");

    let missing = admin.service("nope").await.expect_err("no such service");
    assert_eq!(missing.code(), Some("service.not_found"));
    let Error::Api(api) = &missing else {
        panic!("not the API's error: {missing:?}")
    };
    assert_eq!(api.status.as_u16(), 404);
    assert!(!api.retryable);
    assert_eq!(api.retry_after, None);
    assert!(
        missing
            .to_string()
            .ends_with("(404 Not Found, service.not_found)"),
        "{missing}"
    );

    let absent = admin.get("absent").await.expect_err("no value");
    assert_eq!(absent.code(), Some("storage.not_found"));

    let stranger = Client::new(&url, "cls_not-a-token").expect("client");
    let refused = stranger.services().await.expect_err("a bad token");
    assert_eq!(refused.code(), Some("auth.invalid_token"));
    assert_eq!(refused.api().map(|e| e.status.as_u16()), Some(401));

    // Nobody there: not an API error at all.
    let nobody = Client::new("http://127.0.0.1:9", TOKEN)
        .expect("client")
        .with_timeout(Duration::from_secs(5));
    let unreachable = nobody.services().await.expect_err("nothing listens");
    assert!(
        matches!(unreachable, Error::Unreachable { .. }),
        "{unreachable:?}"
    );
    assert_eq!(unreachable.code(), None);
}
