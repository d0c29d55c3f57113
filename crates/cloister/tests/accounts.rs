//! Accounts and scripts through the real binary: two accounts, each running a script that uses `kv`
//! and `crypto`; neither can reach the other's data, keys or jobs; everything is still there after a
//! restart of the process.

const BIN: &str = env!("CARGO_BIN_EXE_cloister");

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use test_support::server::{Server, write_config};

/// Creates an account as the admin; answers its id, token secret and signing key id.
async fn create(server: &Server, name: &str) -> (String, String, String) {
    let (status, created) = server
        .json(Method::POST, "/v1/accounts", Some(json!({ "name": name })))
        .await;
    assert_eq!(status, 201, "{created}");
    let field = |v: &Value| v.as_str().expect("a string").to_owned();
    (
        field(&created["account"]["id"]),
        field(&created["token"]["secret"]),
        field(&created["account"]["signing_key"]),
    )
}

async fn run(server: &Server, token: &str, code: &str, args: Value) -> Value {
    let (status, outcome) = server
        .json_as(
            token,
            Method::POST,
            "/v1/computation/run",
            Some(json!({ "code": code, "args": args })),
        )
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["ending"]["status"], "completed", "{outcome}");
    outcome
}

/// Stores a note and signs it; answers what the script saw.
const NOTARY: &str = r#"
    kv.put("note", args.note);
    const signature = crypto.sign(args.note);
    kv.put("signature", signature);
    console.log("stored", kv.list("").length, "values");
    return { read: kv.get("note"), signature, verified: crypto.verify(args.note, signature) };
"#;

/// Looks for another account's note and tries its key.
const SNOOP: &str = r#"
    let signed;
    try { crypto.sign("x", args.key); signed = "signed!"; } catch (e) { signed = String(e); }
    return { note: kv.get("note"), keys: kv.list(""), signed };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_run_scripts_that_cannot_touch_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let server = Server::start(BIN, &config).await;
    let (alice, alice_token, alice_key) = create(&server, "alice").await;
    let (_bob, bob_token, bob_key) = create(&server, "bob").await;

    let ran = run(
        &server,
        &alice_token,
        NOTARY,
        json!({"note": "alice's plan"}),
    )
    .await;
    assert_eq!(ran["result"]["read"], "alice's plan");
    assert_eq!(ran["result"]["verified"], true);
    assert_eq!(ran["console"][0]["text"], "stored 2 values");
    let alice_signature = ran["result"]["signature"].clone();
    let ran = run(&server, &bob_token, NOTARY, json!({"note": "bob's plan"})).await;
    assert_eq!(ran["result"]["read"], "bob's plan");

    // Each sees only its own note, and cannot sign with the other's key.
    let snooped = run(&server, &bob_token, SNOOP, json!({"key": alice_key})).await;
    assert_eq!(snooped["result"]["note"], "bob's plan");
    assert_eq!(snooped["result"]["keys"], json!(["note", "signature"]));
    let refusal = snooped["result"]["signed"].as_str().expect("an error");
    assert!(refusal.contains("no key"), "{refusal}");
    let snooped = run(&server, &alice_token, SNOOP, json!({"key": bob_key})).await;
    assert_eq!(snooped["result"]["note"], "alice's plan");
    assert!(
        snooped["result"]["signed"]
            .as_str()
            .is_some_and(|e| e.contains("no key"))
    );

    // The script's signature is alice's key's: the crypto endpoint verifies it, for alice only.
    let verify = json!({
        "message": test_support::B64.encode("alice's plan"),
        "signature": alice_signature,
    });
    let path = format!("/v1/crypto/keys/{alice_key}/verify");
    let (status, verdict) = server
        .json_as(&alice_token, Method::POST, &path, Some(verify.clone()))
        .await;
    assert_eq!(
        (status, &verdict["valid"]),
        (200, &json!(true)),
        "{verdict}"
    );
    let (status, _) = server
        .json_as(&bob_token, Method::POST, &path, Some(verify))
        .await;
    assert_eq!(status, 404);

    // Over HTTP too: bob's storage is his; alice's job is invisible to him.
    let (status, job) = server
        .json_as(
            &alice_token,
            Method::POST,
            "/v1/computation/jobs",
            Some(json!({"code": "return kv.get('note')"})),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job_path = format!("/v1/computation/jobs/{}", job["id"].as_str().expect("id"));
    let (status, _) = server
        .json_as(&bob_token, Method::GET, &job_path, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .json_as(&bob_token, Method::DELETE, &job_path, None)
        .await;
    assert_eq!(status, 404);
    let (status, done) = server
        .json_as(
            &alice_token,
            Method::GET,
            &format!("{job_path}?wait_s=20"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(done["outcome"]["result"], "alice's plan", "{done}");
    let (status, _) = server
        .json_as(
            &bob_token,
            Method::GET,
            &format!("/v1/accounts/{alice}"),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // After a restart of the process: the same tokens work and the data is where it was.
    assert!(server.terminate().success());
    let server = Server::start(BIN, &config).await;
    let again = run(&server, &alice_token, SNOOP, json!({"key": "none"})).await;
    assert_eq!(again["result"]["note"], "alice's plan");
    let again = run(&server, &bob_token, SNOOP, json!({"key": "none"})).await;
    assert_eq!(again["result"]["note"], "bob's plan");
    // The journal has the story, without secrets.
    let (status, events) = server
        .json(Method::GET, "/v1/events?since=0&limit=1000", None)
        .await;
    assert_eq!(status, 200);
    let text = events.to_string();
    assert!(text.contains("account.created") && text.contains(&alice));
    assert!(!text.contains(&alice_token) && !text.contains(&bob_token));
    assert!(server.terminate().success());
}

/// Runs a client command against `server` as the admin.
fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(args)
        .env_remove("CLOISTER_DATA_DIR")
        .env("CLOISTER_URL", &server.base)
        .env("CLOISTER_ADMIN_TOKEN", test_support::server::TOKEN)
        .output()
        .expect("client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_manages_accounts_and_tokens_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(BIN, &write_config(dir.path())).await;

    let (ok, out, err) = cli(&server, &["account", "create", "shop"]);
    assert!(ok, "{err}");
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("acc_"))
        .expect("the account id")
        .to_owned();
    let secret = out.lines().last().expect("the secret").trim().to_owned();
    assert!(secret.starts_with("cls_"), "{out}");
    assert!(out.contains("Neo N3:      N"), "{out}");
    // The printed secret is a working token.
    let (status, me) = server
        .json_as(&secret, Method::GET, "/v1/accounts/me", None)
        .await;
    assert_eq!((status, &me["id"]), (200, &json!(id)));

    let (ok, out, err) = cli(
        &server,
        &[
            "account",
            "token",
            &id,
            "--name",
            "reader",
            "--scope",
            "storage:get",
            "--expires-in",
            "1h",
        ],
    );
    assert!(ok, "{err}");
    let reader = out.lines().last().expect("the secret").trim().to_owned();
    let token_id = out
        .split_whitespace()
        .find(|w| w.starts_with("tok_"))
        .expect("the token id")
        .to_owned();
    let (status, _) = server
        .json_as(&reader, Method::GET, "/v1/storage?prefix=", None)
        .await;
    assert_eq!(status, 403, "storage:list is not storage:get");
    let (ok, out, _) = cli(&server, &["account", "tokens", &id]);
    assert!(
        ok && out.contains(&token_id) && out.contains("storage:get") && !out.contains(&reader),
        "{out}"
    );
    let (ok, out, _) = cli(&server, &["account", "list"]);
    assert!(ok && out.contains(&id) && out.contains("shop"), "{out}");

    let (ok, _, err) = cli(&server, &["account", "revoke", &id, &token_id]);
    assert!(ok, "{err}");
    let (status, _) = server
        .json_as(&reader, Method::GET, "/v1/accounts/me", None)
        .await;
    assert_eq!(status, 401);
    let (ok, _, err) = cli(&server, &["account", "disable", &id]);
    assert!(ok, "{err}");
    let (status, _) = server
        .json_as(&secret, Method::GET, "/v1/accounts/me", None)
        .await;
    assert_eq!(status, 403);
    let (ok, out, _) = cli(&server, &["account", "show", &id]);
    assert!(ok && out.contains("DISABLED"), "{out}");

    // Mistakes get the API's own message and exit code 1.
    let (ok, _, err) = cli(
        &server,
        &["account", "token", &id, "--scope", "storage:fly"],
    );
    assert!(!ok && err.contains("storage has the operations"), "{err}");
    let (ok, _, err) = cli(&server, &["account", "show", "acc_nobody"]);
    assert!(!ok && err.contains("account.not_found"), "{err}");

    let (ok, _, err) = cli(&server, &["account", "delete", &id]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&server, &["account", "list"]);
    assert!(ok && !out.contains(&id), "{out}");
    assert!(server.terminate().success());
}
