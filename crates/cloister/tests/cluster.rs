//! A cluster of real `cloister` processes on one private PostgreSQL server (docs/cluster.md): a
//! first node makes the cluster, a second joins it by mutual attestation and holds the same key;
//! a node of another identity, a forged request and a member's answer that its quote does not
//! bind are each refused, with the reason on both sides.

mod cluster_support;

use std::path::Path;

use base64::Engine as _;
use cluster::exchange;
use serde_json::{Value, json};
use test_support::postgres::Postgres;
use test_support::server::{Server, TOKEN, command, journal_head};

use cluster_support::{BIN, audit, cli, first_node, status};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text.as_str().expect("a base64 string"))
        .expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_by_attestation_and_holds_the_clusters_key() {
    let pg = Postgres::start();
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, made, a_head) = first_node(&pg, da.path()).await;
    // Once per database: a second init is refused with the reason.
    let (ok, _, err) = cli(&a.base, &["init"]);
    assert!(!ok);
    assert!(err.contains("cluster.exists"), "{err}");
    // The database holds the key's check value, never the key.
    assert_eq!(
        pg.sql("SELECT encode(key_check, 'hex') FROM cloister_cluster"),
        made["key_check"].as_str().expect("key_check")
    );

    let config_b = pg.write_config(db.path());
    let b = Server::start_with(BIN, &config_b, &["--join", &a.base]).await;
    let (b_status, b_header) = status(&b).await;
    assert_eq!(b_status["node"], b_header.as_str());
    assert_eq!(b_status["member"], true, "{b_status}");
    assert_eq!(b_status["key_check"], made["key_check"], "{b_status}");
    assert_eq!(b_status["cluster"]["id"], made["id"], "{b_status}");
    let (a_status, a_header) = status(&a).await;
    assert_eq!(a_status["node"], made["node"]);
    assert_ne!(a_header, b_header, "each node answers with its own id");
    let members: Vec<&str> = a_status["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            assert_eq!(m["key_check"], made["key_check"], "{m}");
            m["node"].as_str().expect("node")
        })
        .collect();
    assert!(
        members.contains(&a_header.as_str()) && members.contains(&b_header.as_str()),
        "{a_status}"
    );

    // A journaled the admission, and says it rested on simulation quotes.
    let admitted = audit(&a, a_head, "cluster.admitted", &b_header).await;
    assert!(
        admitted["event"]["detail"]["simulation"]
            .as_str()
            .is_some_and(|s| s.contains("simulation")),
        "{admitted}"
    );
    // Every answer names its node, errors too.
    let r = b
        .http
        .get(format!("{}/v1/nothing-here", b.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.headers()["x-cloister-node"], b_header.as_str());

    // `cloister cluster status` lists both, each holding the cluster's key.
    let (ok, out, err) = cli(&b.base, &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains(&a_header) && out.contains(&b_header), "{out}");
    assert_eq!(out.matches("the cluster's").count(), 2, "{out}");

    // B restarts without --join: it holds the key sealed, and needs no new admission.
    assert!(b.terminate().success());
    let b = Server::start(BIN, &config_b).await;
    assert_eq!(status(&b).await.0["key_check"], made["key_check"]);
    assert!(b.terminate().success());
    assert!(a.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_identity_breaks_the_policy_is_refused_with_the_reason_on_both_sides() {
    let pg = Postgres::start();
    let (da, dc) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, made, a_head) = first_node(&pg, da.path()).await;
    // Another product id: another measurement, as another manifest would be under SGX.
    let config_c = pg.write_config(dc.path());
    let text = std::fs::read_to_string(&config_c).expect("config");
    std::fs::write(&config_c, format!("{text}\n[enclave]\nproduct_id = 2\n")).expect("write");
    let out = command(BIN)
        .args(["run", "--config"])
        .arg(&config_c)
        .args(["--join", &a.base])
        .env("CLOISTER_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("cloister run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cluster.policy_refused"), "{stderr}");
    assert!(stderr.contains("measurement (MRENCLAVE)"), "{stderr}");
    assert!(!dc.path().join("data/cluster.key").exists());
    let node_c = std::fs::read_to_string(dc.path().join("data/node.id")).expect("node id");
    let refused = audit(&a, a_head, "cluster.refused", node_c.trim()).await;
    assert_eq!(
        refused["event"]["detail"]["code"], "cluster.policy_refused",
        "{refused}"
    );
    // Nothing about it reached the members.
    let members = status(&a).await.0["members"].clone();
    assert_eq!(members.as_array().map(Vec::len), Some(1), "{members}");
    assert_eq!(members[0]["key_check"], made["key_check"]);
    assert!(a.terminate().success());
}

/// As the Kubernetes overlay runs its pods (every pod with the same arguments): the first node
/// is given itself to join and its own address to advertise, so it asks no one and serves;
/// `cluster init --wait --exists-ok`, started before that node listens, waits for it and makes
/// the cluster, and run again counts the cluster made as done. Each node registers and sends the
/// address it advertises (`--advertise`, `[cluster] advertise`), not the one it listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_advertise_their_address_and_the_first_skips_itself_when_told_to_join() {
    let pg = Postgres::start();
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a_url, b_url) = (
        "http://cloister-0.cloister.test:8420",
        "http://cloister-1.cloister.test:8420",
    );
    let listen = format!("127.0.0.1:{}", test_support::free_port());
    let init = command(BIN)
        .args(["cluster", "init", "--wait", "10m", "--exists-ok", "--url"])
        .arg(format!("http://{listen}"))
        .env("CLOISTER_ADMIN_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cloister cluster init");
    let config_a = pg.write_config(da.path());
    let a = Server::start_with(
        BIN,
        &config_a,
        &["--listen", &listen, "--advertise", a_url, "--join", a_url],
    )
    .await;
    let made = tokio::task::spawn_blocking(move || init.wait_with_output())
        .await
        .expect("join")
        .expect("cloister cluster init");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr),
    );
    assert!(made.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("made on node"), "{stdout}");
    let (ok, out, err) = cli(&a.base, &["init", "--exists-ok"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("nothing to do") && out.contains("already"),
        "{out}"
    );
    let (a_status, a_node) = status(&a).await;
    assert_eq!(a_status["member"], true, "{a_status}");
    assert_eq!(a_status["members"][0]["address"], a_url, "{a_status}");

    let config_b = pg.write_config(db.path());
    let text = std::fs::read_to_string(&config_b).expect("config");
    std::fs::write(
        &config_b,
        format!("{text}\n[cluster]\nadvertise = \"{b_url}\"\n"),
    )
    .expect("write");
    let a_head = journal_head(&config_a);
    let b = Server::start_with(BIN, &config_b, &["--join", &a.base]).await;
    let (b_status, b_node) = status(&b).await;
    assert_eq!(b_status["member"], true, "{b_status}");
    let admitted = audit(&a, a_head, "cluster.admitted", &b_node).await;
    assert_eq!(admitted["event"]["detail"]["address"], b_url, "{admitted}");
    let addresses: std::collections::BTreeMap<String, String> = status(&a).await.0["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["node"].as_str().expect("node").to_owned(),
                m["address"].as_str().expect("address").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        addresses,
        [(a_node, a_url.to_owned()), (b_node, b_url.to_owned())].into()
    );
    assert!(b.terminate().success());
    assert!(a.terminate().success());
}

/// A fresh challenge from member `a`.
async fn challenge(a: &Server) -> Vec<u8> {
    let (status, c) = a
        .json_as("", reqwest::Method::POST, "/v1/cluster/challenge", None)
        .await;
    assert_eq!(status, 200, "{c}");
    unb64(&c["challenge"])
}

/// `POST /v1/cluster/join` to member `a`, with no token.
async fn join(a: &Server, body: Value) -> (u16, Value) {
    a.json_as("", reqwest::Method::POST, "/v1/cluster/join", Some(body))
        .await
}

/// A simulation platform with the identity the binary has under `pg.write_config`'s
/// configuration: its quotes pass the policy, so what is tested is the binding alone.
fn same_identity(dir: &Path) -> enclave::Simulation {
    let code = std::fs::read(BIN).expect("the binary");
    let measured = serde_json::to_vec(&runtime::config::Config::default().enclave)
        .expect("the [enclave] table");
    enclave::Simulation::open(dir, &code, &measured, 1).expect("simulation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_join_requests_are_refused_and_journaled() {
    use enclave::Platform as _;
    let pg = Postgres::start();
    let (da, dx) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, made, a_head) = first_node(&pg, da.path()).await;
    let platform = same_identity(dx.path());
    let request = |node: &str, challenge: &[u8], public: &[u8; 32], quote: &[u8]| {
        json!({"challenge": b64(challenge), "public_key": b64(public), "quote": b64(quote),
               "node": node, "address": "http://127.0.0.1:9"})
    };

    // A quote that binds another public key than the one sent.
    let c = challenge(&a).await;
    let (mine, other) = (exchange::Ephemeral::new(), exchange::Ephemeral::new());
    let quote = platform
        .quote(&exchange::request_report_data(&c, other.public()))
        .expect("quote");
    let (status, body) = join(&a, request("other-key", &c, mine.public(), &quote)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("cluster.report_data_mismatch")),
        "{body}"
    );

    // A quote changed after it was made (its measurement): its signature no longer verifies.
    let c = challenge(&a).await;
    let mut quote = platform
        .quote(&exchange::request_report_data(&c, mine.public()))
        .expect("quote");
    quote[enclave::quote::HEADER_LEN + enclave::quote::BODY_MR_ENCLAVE] ^= 1;
    let (status, body) = join(&a, request("tampered", &c, mine.public(), &quote)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("cluster.bad_quote")),
        "{body}"
    );

    // A challenge the member never made.
    let forged = [7u8; exchange::CHALLENGE_LEN];
    let quote = platform
        .quote(&exchange::request_report_data(&forged, mine.public()))
        .expect("quote");
    let (status, body) = join(
        &a,
        request("forged-challenge", &forged, mine.public(), &quote),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("cluster.bad_challenge")),
        "{body}"
    );

    for node in ["other-key", "tampered", "forged-challenge"] {
        audit(&a, a_head, "cluster.refused", node).await;
    }

    // The same request done right is admitted, and the answer is what docs/cluster.md says: the
    // member's quote binds it, and the key it carries is the cluster's.
    let c = challenge(&a).await;
    let rd = exchange::request_report_data(&c, mine.public());
    let quote = platform.quote(&rd).expect("quote");
    let (status, answer) = join(&a, request("right", &c, mine.public(), &quote)).await;
    assert_eq!(status, 200, "{answer}");
    let id = exchange::ClusterId::parse(answer["cluster_id"].as_str().expect("id")).expect("hex");
    let member: [u8; 32] = unb64(&answer["public_key"]).try_into().expect("32 bytes");
    let wrapped = unb64(&answer["wrapped_key"]);
    let trust = enclave::quote::Trust {
        allow_simulation: true,
        hardware: None,
    };
    let expected = exchange::answer_report_data(&rd, &id, &member, &wrapped);
    enclave::quote::check(&unb64(&answer["quote"]), &trust, Some(&expected))
        .expect("the member's quote binds its answer");
    let key = mine.unwrap(&id, &member, &wrapped).expect("the key opens");
    assert_eq!(
        hex::encode(key.check(&id)),
        made["key_check"].as_str().expect("check")
    );
    assert!(a.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_refuses_an_answer_whose_quote_does_not_bind_it() {
    use enclave::Platform as _;
    let pg = Postgres::start();
    let (da, db, dx) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, _, _) = first_node(&pg, da.path()).await;
    // Between B and A: passes everything on, but answers with a quote of the right identity
    // over other report data (as one recorded from another exchange would be).
    let platform = std::sync::Arc::new(same_identity(dx.path()));
    let member = a.base.clone();
    let http = reqwest::Client::new();
    let relay = {
        let (member, http) = (member.clone(), http.clone());
        axum::Router::new()
            .route(
                "/v1/cluster/challenge",
                axum::routing::post({
                    let (member, http) = (member.clone(), http.clone());
                    move || async move {
                        let r = http
                            .post(format!("{member}/v1/cluster/challenge"))
                            .send()
                            .await
                            .expect("challenge");
                        axum::Json(r.json::<Value>().await.expect("json"))
                    }
                }),
            )
            .route(
                "/v1/cluster/join",
                axum::routing::post(move |axum::Json(body): axum::Json<Value>| async move {
                    let r = http
                        .post(format!("{member}/v1/cluster/join"))
                        .json(&body)
                        .send()
                        .await
                        .expect("join");
                    let mut answer: Value = r.json().await.expect("json");
                    let quote = platform.quote(&[9u8; 64]).expect("quote");
                    answer["quote"] = Value::String(b64(&quote));
                    axum::Json(answer)
                }),
            )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let relay_url = format!("http://{}", listener.local_addr().expect("addr"));
    let serving = tokio::spawn(async move { axum::serve(listener, relay).await });

    let config_b = pg.write_config(db.path());
    let out = tokio::task::spawn_blocking(move || {
        command(BIN)
            .args(["run", "--config"])
            .arg(&config_b)
            .args(["--join", &relay_url])
            .env("CLOISTER_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("cloister run")
    })
    .await
    .expect("joined");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the member's answer is refused"),
        "{stderr}"
    );
    assert!(stderr.contains("report data does not match"), "{stderr}");
    assert!(!db.path().join("data/cluster.key").exists());
    serving.abort();
    assert!(a.terminate().success());
}

/// A request through `server` with `token`, retried while it answers `unknown` (the status of a
/// token or record the node has not read yet): another node's change reaches this one within
/// `account::SYNC_EVERY`, and the wait ends as soon as it has.
async fn once_seen(server: &Server, token: &str, path: &str, unknown: u16) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = server
            .json_as(token, reqwest::Method::GET, path, None)
            .await;
        if status != unknown || tokio::time::Instant::now() > deadline {
            return (status, body);
        }
        // A poll, not a settle: the loop ends at the first answer that is not `unknown`.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_values_keys_and_accounts_and_write_through_any_node() {
    use base64::engine::general_purpose::STANDARD as B64;
    let pg = Postgres::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    // A serves alone first: what it stored and the key it made then move into the cluster at
    // init, without a restart.
    let config_a = pg.write_config(dirs[0].path());
    let a = Server::start(BIN, &config_a).await;
    let r = a
        .put("before/init", b"stored alone".to_vec())
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 200);
    let (status, early) = a
        .json(
            reqwest::Method::POST,
            "/v1/crypto/keys",
            Some(json!({"algorithm": "ed25519"})),
        )
        .await;
    assert_eq!(status, 201, "{early}");
    let a_head = journal_head(&config_a);
    let (ok, _, err) = cli(&a.base, &["init"]);
    assert!(ok, "cluster init: {err}");
    a.wait_event(a_head, |e| {
        e["event"]["kind"] == "audit" && e["event"]["action"] == "cluster.initialized"
    })
    .await;

    let b = Server::start_with(BIN, &pg.write_config(dirs[1].path()), &["--join", &a.base]).await;
    let c = Server::start_with(BIN, &pg.write_config(dirs[2].path()), &["--join", &b.base]).await;

    // A value written before the cluster, and one written after, read through every node.
    let r = a
        .put("after/init", b"written through A".to_vec())
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 200);
    for node in [&a, &b, &c] {
        assert_eq!(
            node.get("before/init").await,
            (200, b"stored alone".to_vec())
        );
        assert_eq!(
            node.get("after/init").await,
            (200, b"written through A".to_vec())
        );
    }
    // The key made on A alone signs through C, with its one public key.
    let early_id = early["id"].as_str().expect("id");
    let (status, described) = c
        .json(
            reqwest::Method::GET,
            &format!("/v1/crypto/keys/{early_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{described}");
    assert_eq!(
        described["versions"][0]["public_key"],
        early["versions"][0]["public_key"]
    );

    // A key made on B signs on C; the signature verifies on A; a rotation on C is B's current
    // version at once.
    let (status, key) = b
        .json(
            reqwest::Method::POST,
            "/v1/crypto/keys",
            Some(json!({"algorithm": "p256"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().expect("id");
    let message = B64.encode(b"pay 10 to bob");
    let (status, signed) = c
        .json(
            reqwest::Method::POST,
            &format!("/v1/crypto/keys/{id}/sign"),
            Some(json!({"message": message})),
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    let (status, verified) = a
        .json(
            reqwest::Method::POST,
            &format!("/v1/crypto/keys/{id}/verify"),
            Some(json!({"message": message, "signature": signed["signature"]})),
        )
        .await;
    assert_eq!(
        (status, &verified["valid"]),
        (200, &json!(true)),
        "{verified}"
    );
    let (status, rotated) = c
        .json(
            reqwest::Method::POST,
            &format!("/v1/crypto/keys/{id}/rotate"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let (_, on_b) = b
        .json(reqwest::Method::GET, &format!("/v1/crypto/keys/{id}"), None)
        .await;
    assert_eq!(on_b["version"], rotated["version"], "{on_b}");
    // Deleted through A, it is gone on B.
    let (status, _) = a
        .json(
            reqwest::Method::DELETE,
            &format!("/v1/crypto/keys/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = b
        .json(reqwest::Method::GET, &format!("/v1/crypto/keys/{id}"), None)
        .await;
    assert_eq!(status, 404);

    // An account made through A authenticates through B and C; disabled through C, its token
    // stops working on A.
    let (status, created) = a
        .json(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(json!({"name": "alice"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let account = created["account"]["id"].as_str().expect("id").to_owned();
    let token = created["token"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let path = format!("/v1/accounts/{account}");
    for node in [&b, &c] {
        let (status, seen) = once_seen(node, &token, &path, 401).await;
        assert_eq!(status, 200, "{seen}");
    }
    let (status, _) = c
        .json(reqwest::Method::POST, &format!("{path}/disable"), None)
        .await;
    assert_eq!(status, 200);
    let (status, refused) = once_seen(&a, &token, &path, 200).await;
    assert_eq!(status, 403, "{refused}");

    // Writes through all three nodes at once: each acknowledged one reads back through another.
    let writes = [&a, &b, &c].map(|node| async move {
        let mut acknowledged = Vec::new();
        for i in 0..20 {
            let key = format!("many/{}/{i}", node.base.rsplit(':').next().expect("port"));
            let r = node.put(&key, key.clone().into_bytes()).await.expect("put");
            match r.status().as_u16() {
                200 => acknowledged.push(key),
                503 => {}
                other => panic!("{key}: {other}"),
            }
        }
        acknowledged
    });
    let [wa, wb, wc] = writes;
    let (wa, wb, wc) = tokio::join!(wa, wb, wc);
    assert!(!wa.is_empty() && !wb.is_empty() && !wc.is_empty());
    for (keys, reader) in [(wa, &b), (wb, &c), (wc, &a)] {
        for key in keys {
            assert_eq!(
                reader.get(&key).await,
                (200, key.clone().into_bytes()),
                "{key}"
            );
        }
    }

    // The database holds none of it in the clear: no value, no key, no token secret.
    let dump = String::from_utf8_lossy(&pg.dump()).into_owned();
    for secret in ["stored alone", "written through A", token.as_str()] {
        assert!(!dump.contains(secret), "the dump holds {secret:?}");
    }
    assert_eq!(pg.sql("SELECT count(*) > 0 FROM crypto_keys"), "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_writes_loses_no_acknowledged_write_and_comes_back_without_admission()
{
    let pg = Postgres::start();
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, _, _) = first_node(&pg, da.path()).await;
    let config_b = pg.write_config(db.path());
    let b = Server::start_with(BIN, &config_b, &["--join", &a.base]).await;

    // Writes through B, one after another, until B is gone; B is killed after the tenth
    // acknowledgement, with writes still coming.
    let (count, mut counted) = tokio::sync::watch::channel(0usize);
    let writer = {
        let (http, base, token) = (b.http.clone(), b.base.clone(), b.token.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..10_000 {
                let key = format!("killed/{i}");
                let sent = http
                    .put(format!("{base}/v1/storage/{key}"))
                    .bearer_auth(&token)
                    .body(key.clone().into_bytes())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        acknowledged.push(key);
                        count.send_replace(acknowledged.len());
                    }
                    Ok(r) => panic!("{key}: {}", r.status()),
                    // The process is gone: what it acknowledged is what counts.
                    Err(_) => break,
                }
            }
            acknowledged
        })
    };
    counted.wait_for(|n| *n >= 10).await.expect("ten writes");
    b.kill_9();
    let acknowledged = writer.await.expect("writer");
    assert!(acknowledged.len() >= 10);
    for key in &acknowledged {
        assert_eq!(a.get(key).await, (200, key.clone().into_bytes()), "{key}");
    }

    // B starts again from its data directory: it holds the key, so no member is asked.
    let a_head = journal_head(&da.path().join("cloister.toml"));
    let b_head = journal_head(&config_b);
    let b = Server::start(BIN, &config_b).await;
    let (status, _) = status(&b).await;
    assert_eq!(status["member"], true, "{status}");
    for key in &acknowledged {
        assert_eq!(b.get(key).await, (200, key.clone().into_bytes()), "{key}");
    }
    let r = b
        .put("after/restart", b"still a member".to_vec())
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        a.get("after/restart").await,
        (200, b"still a member".to_vec())
    );
    let (_, a_events) = a
        .json(
            reqwest::Method::GET,
            &format!("/v1/events?since={a_head}&limit=1000"),
            None,
        )
        .await;
    let (_, b_events) = b
        .json(
            reqwest::Method::GET,
            &format!("/v1/events?since={b_head}&limit=1000"),
            None,
        )
        .await;
    for (events, action) in [
        (&a_events, "cluster.admitted"),
        (&b_events, "cluster.joined"),
    ] {
        let found = events["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["event"]["action"] == action);
        assert!(!found, "{action} after the restart: {events}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_gives_up_the_key_stops_and_cannot_join_again() {
    let pg = Postgres::start();
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, made, a_head) = first_node(&pg, da.path()).await;
    let config_b = pg.write_config(db.path());
    let b = Server::start_with(BIN, &config_b, &["--join", &a.base]).await;
    let (_, b_id) = status(&b).await;
    let a_id = made["node"].as_str().expect("node");
    assert!(db.path().join("data/cluster.key").exists());

    // A node does not remove itself.
    let (ok, _, err) = cli(&a.base, &["remove", a_id]);
    assert!(!ok);
    assert!(err.contains("cluster.refused"), "{err}");

    let (ok, out, err) = cli(&a.base, &["remove", &b_id]);
    assert!(ok, "cluster remove: {err}");
    assert!(out.contains(&b_id), "{out}");
    audit(&a, a_head, "cluster.removed", &b_id).await;
    // B sees it at its next heartbeat: it erases the key and exits with its own status.
    let exited = tokio::task::spawn_blocking(move || b.wait())
        .await
        .expect("wait");
    assert_eq!(exited.code(), Some(4), "{exited:?}");
    assert!(!db.path().join("data/cluster.key").exists());
    let (a_status, _) = status(&a).await;
    assert!(
        a_status["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["node"] != b_id.as_str()),
        "{a_status}"
    );

    // Started again with --join, it is refused, and says why.
    let out = command(BIN)
        .args(["run", "--config"])
        .arg(&config_b)
        .args(["--join", &a.base])
        .env("CLOISTER_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("cloister run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was removed from the cluster"), "{stderr}");
}
