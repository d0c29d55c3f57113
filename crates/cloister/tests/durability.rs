//! Keys and values through the real binary across process restarts, and acknowledged writes across
//! `kill -9`.

const BIN: &str = env!("CARGO_BIN_EXE_cloister");

use base64::Engine;
use serde_json::json;
use std::process::Command;

use test_support::B64;
use test_support::server::{Server, TOKEN, write_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_signs_verifiably_and_values_survive_a_restart_of_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let server = Server::start(BIN, &config).await;

    let (status, key) = server
        .json(
            reqwest::Method::POST,
            "/v1/crypto/keys",
            Some(json!({"algorithm": "p256"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().expect("id").to_owned();
    let public_key = key["versions"][0]["public_key"]
        .as_str()
        .expect("public key")
        .to_owned();
    let message = b"pay 10 to bob";
    let (status, signed) = server
        .json(
            reqwest::Method::POST,
            &format!("/v1/crypto/keys/{id}/sign"),
            Some(json!({"message": B64.encode(message)})),
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    let signature = B64
        .decode(signed["signature"].as_str().expect("signature"))
        .expect("base64");

    let document: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let response = server
        .put("contracts/2026/a.bin", document.clone())
        .await
        .expect("put");
    assert_eq!(response.status().as_u16(), 200);
    assert!(server.terminate().success());

    // A new process: the key still signs (same public key) and the value reads back.
    let server = Server::start(BIN, &config).await;
    let (status, described) = server
        .json(reqwest::Method::GET, &format!("/v1/crypto/keys/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(described["versions"][0]["public_key"], public_key.as_str());
    assert_eq!(server.get("contracts/2026/a.bin").await, (200, document));
    let (status, verified) = server
        .json(
            reqwest::Method::POST,
            &format!("/v1/crypto/keys/{id}/verify"),
            Some(json!({"message": B64.encode(message), "signature": B64.encode(&signature)})),
        )
        .await;
    assert_eq!((status, &verified["valid"]), (200, &json!(true)));
    assert!(server.terminate().success());

    // An independent implementation agrees the signature is valid.
    let entries = json!([{
        "algorithm": "p256",
        "public_key": public_key,
        "message": hex::encode(message),
        "signature": hex::encode(&signature),
        "der": false,
    }]);
    let file = dir.path().join("signatures.json");
    std::fs::write(&file, entries.to_string()).expect("write");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crypto/tests/verify_signatures.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .expect("python3 with `cryptography` (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn value_of(round: usize, i: usize) -> Vec<u8> {
    format!("round {round} write {i} ")
        .repeat(1 + i % 5)
        .into_bytes()
}

enum Outcome {
    /// Answered with success, and the commit that holds it.
    Acknowledged(String, Vec<u8>, u64),
    /// Sent, but no answer came (the process died): either written in full or not at all.
    InDoubt(String, Vec<u8>),
}

/// Writes keys as fast as the server acknowledges them and kills the process with SIGKILL after a
/// varying number of acknowledgements, with the writer still sending; after each restart every
/// acknowledged write is there with its exact value, and a write in doubt is there in full or absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_every_time() {
    kill_9_rounds(25, 1).await;
}

/// The same with 32 writers at once, so that the process dies with many writes waiting in one group
/// commit: each of them is acknowledged only after that commit and its counter advance are on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_of_a_group_commit_survive_kill_9() {
    let shared = kill_9_rounds(8, 32).await;
    assert!(
        shared > 0,
        "no two acknowledged writes shared a commit: the rounds never killed a group commit"
    );
}

/// Runs `rounds` kill -9 rounds with `writers` concurrent writers and checks every acknowledged
/// write after each restart. Returns how many acknowledged writes shared their commit with another.
async fn kill_9_rounds(rounds: usize, writers: usize) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    kill_9_rounds_on(&write_config(dir.path()), rounds, writers).await
}

/// The same with the records in a private PostgreSQL server: a process killed between the
/// database's commit and the counter's advance starts again (the counter catches up), and nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_on_postgres_survive_kill_9() {
    let pg = test_support::postgres::Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = pg.write_config(dir.path());
    let shared = kill_9_rounds_on(&config, 6, 16).await;
    assert!(shared > 0, "no group commit was killed");
}

/// [`kill_9_rounds`] on the configuration at `config`.
async fn kill_9_rounds_on(config: &std::path::Path, rounds: usize, writers: usize) -> usize {
    let config = config.to_path_buf();
    let mut acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    let mut in_doubt: Vec<(String, Vec<u8>)> = Vec::new();
    let mut per_commit: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut doubtful_seen = 0;
    for round in 0..rounds {
        let server = Server::start(BIN, &config).await;
        for (key, value) in &acknowledged {
            assert_eq!(
                server.get(key).await,
                (200, value.clone()),
                "round {round}: acknowledged {key}"
            );
        }
        for (key, value) in in_doubt.drain(..) {
            let (status, body) = server.get(&key).await;
            assert!(
                status == 404 || (status == 200 && body == value),
                "round {round}: in-doubt {key} came back as {status} {:?}",
                String::from_utf8_lossy(&body)
            );
            doubtful_seen += usize::from(status == 200);
        }

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..writers {
            let (http, base, tx) = (server.http.clone(), server.base.clone(), tx.clone());
            tasks.spawn(async move {
                for i in (w..).step_by(writers) {
                    let key = format!("r{round}/k{i}");
                    let value = value_of(round, i);
                    let sent = http
                        .put(format!("{base}/v1/storage/{key}"))
                        .bearer_auth(TOKEN)
                        .body(value.clone())
                        .send()
                        .await;
                    let answer = match sent {
                        Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await,
                        Ok(r) => panic!("put {key}: {}", r.status()),
                        Err(e) => Err(e),
                    };
                    match answer {
                        Ok(body) => {
                            let commit = body["version"].as_u64().expect("a version");
                            let _ = tx.send(Outcome::Acknowledged(key, value, commit));
                        }
                        Err(_) => {
                            let _ = tx.send(Outcome::InDoubt(key, value));
                            return;
                        }
                    }
                }
            });
        }
        drop(tx);
        let kill_after = writers * (3 + (round * 7) % 17);
        let mut acked_this_round = 0;
        let mut acknowledge = |key, value, commit, acknowledged: &mut Vec<_>| {
            acknowledged.push((key, value));
            *per_commit.entry(commit).or_default() += 1;
        };
        while acked_this_round < kill_after {
            match rx.recv().await.expect("the writers go on until the kill") {
                Outcome::Acknowledged(k, v, c) => {
                    acknowledge(k, v, c, &mut acknowledged);
                    acked_this_round += 1;
                }
                Outcome::InDoubt(k, _) => panic!("round {round}: {k} failed before the kill"),
            }
        }
        server.kill_9();
        while let Some(done) = tasks.join_next().await {
            done.expect("writer");
        }
        while let Some(outcome) = rx.recv().await {
            match outcome {
                Outcome::Acknowledged(k, v, c) => acknowledge(k, v, c, &mut acknowledged),
                Outcome::InDoubt(k, v) => in_doubt.push((k, v)),
            }
        }
    }
    let server = Server::start(BIN, &config).await;
    for (key, value) in &acknowledged {
        assert_eq!(server.get(key).await, (200, value.clone()), "{key}");
    }
    let shared = per_commit.values().filter(|&&n| n > 1).sum();
    eprintln!(
        "{rounds} kills with {writers} writers: {} acknowledged writes all intact, {shared} of them \
         in shared commits; {doubtful_seen} in-flight writes landed",
        acknowledged.len()
    );
    assert!(server.terminate().success());
    shared
}

/// Item 2 of #14 through the real binary: the host puts back an older keystore (`keystore.sealed`
/// and its change log `keystore.log`), from before a key was deleted. `cloister run` does not serve it (crypto fails for the operator,
/// naming the generation to accept); `--accept-keystore-rollback N` serves it, deleted key and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_keystore_is_refused_by_cloister_run_until_the_operator_accepts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let keystore = dir.path().join("data").join("keystore.sealed");
    let log = dir.path().join("data").join("keystore.log");
    let server = Server::start(BIN, &config).await;
    let (status, key) = server
        .json(
            reqwest::Method::POST,
            "/v1/crypto/keys",
            Some(json!({"algorithm": "p256"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/crypto/keys/{id}");
    assert!(server.terminate().success());
    let old_copy = std::fs::read(&keystore).expect("keystore.sealed");
    let old_log = std::fs::read(&log).ok();

    let server = Server::start(BIN, &config).await;
    let (status, _) = server.json(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    assert_eq!(server.json(reqwest::Method::GET, &path, None).await.0, 404);
    assert!(server.terminate().success());

    std::fs::write(&keystore, &old_copy).expect("the host swaps the old copy back");
    match &old_log {
        Some(old_log) => std::fs::write(&log, old_log).expect("and the old log"),
        None => std::fs::remove_file(&log).expect("and no log"),
    }
    let head = test_support::server::journal_head(&config);
    let server = Server::launch(BIN, &config, TOKEN);
    let failed = server
        .wait_event(head, |e| {
            e["service"] == "crypto" && e["event"]["kind"] == "failed"
        })
        .await;
    let reason = failed["event"]["reason"].as_str().expect("reason");
    assert!(reason.contains("crypto refuses to start"), "{reason}");
    let generation: String = reason
        .split("--accept-keystore-rollback ")
        .nth(1)
        .expect("the command to accept, in the reason")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    // The deleted key does not answer: the service that would hold it is down.
    assert_ne!(server.json(reqwest::Method::GET, &path, None).await.0, 200);
    server.kill_9();

    let head = test_support::server::journal_head(&config);
    let child = test_support::server::command(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .args(["--accept-keystore-rollback", &generation])
        .env("CLOISTER_ADMIN_TOKEN", TOKEN)
        .env("CLOISTER_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn cloister run");
    let server = Server::attach(child, TOKEN);
    server.wait_ready(head).await;
    let (status, again) = server.json(reqwest::Method::GET, &path, None).await;
    assert_eq!(
        status, 200,
        "the operator accepted the keystore with the key: {again}"
    );
    assert!(server.terminate().success());
    // Accepted once: the next plain start is a normal one.
    let server = Server::start(BIN, &config).await;
    assert_eq!(server.json(reqwest::Method::GET, &path, None).await.0, 200);
    assert!(server.terminate().success());
}

/// Item 1 of #14 through the real binary: the host puts back an old `storage.redb` with the commit
/// number in its plain metadata forged to the current one (the counter's). `cloister run` refuses it
/// (the content does not match the sealed digest of that commit) and serves nothing from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_database_with_a_forged_commit_number_is_refused_by_cloister_run() {
    const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let db = dir.path().join("data").join("storage.redb");
    let server = Server::start(BIN, &config).await;
    let response = server.put("balance", b"100".to_vec()).await.expect("put");
    assert_eq!(response.status().as_u16(), 200);
    assert!(server.terminate().success());
    let old_copy = std::fs::read(&db).expect("storage.redb");
    let server = Server::start(BIN, &config).await;
    let response = server.put("balance", b"0".to_vec()).await.expect("put");
    assert_eq!(response.status().as_u16(), 200);
    assert!(server.terminate().success());

    // The current commit number, which the counter holds after a clean stop.
    let commit = |path: &std::path::Path| {
        let db = redb::Database::open(path).expect("open");
        let txn = redb::ReadableDatabase::begin_read(&db).expect("read");
        let meta = txn.open_table(META).expect("meta");
        meta.get("commit").expect("get").expect("a commit").value()
    };
    let current = commit(&db);
    std::fs::write(&db, &old_copy).expect("the host swaps the old copy back");
    assert!(commit(&db) < current);
    {
        let file = redb::Database::open(&db).expect("open");
        let txn = file.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert("commit", current)
            .expect("forge the commit number");
        txn.commit().expect("commit");
    }

    let head = test_support::server::journal_head(&config);
    let server = Server::launch(BIN, &config, TOKEN);
    let failed = server
        .wait_event(head, |e| {
            e["service"] == "storage" && e["event"]["kind"] == "failed"
        })
        .await;
    let reason = failed["event"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains(&format!("says it is at commit {current}"))
            && reason.contains("does not match the sealed digest")
            && reason.contains(&format!("--accept-storage-rollback {current}")),
        "{reason}"
    );
    let (status, body) = server.get("balance").await;
    assert_ne!((status, body.as_slice()), (200, b"100".as_slice()));
    assert_ne!(
        status, 200,
        "storage serves nothing from a refused database"
    );
    server.kill_9();
}

/// A key operation as the writer saw it.
enum KeyOutcome {
    /// Created, with its first version's public key.
    Created(String, String),
    /// Deleted.
    Deleted(String),
    /// Sent, but no answer came (the process died): done in full or not at all.
    InDoubt(Option<String>),
}

/// The keystore across `kill -9`: a writer creates keys and deletes every third one (one change-log
/// record each, and a snapshot every 256), and the process is killed after a varying number of
/// acknowledgements; after each restart every acknowledged key is there with its public key, and
/// every acknowledged delete stays deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_key_operations_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let mut present: std::collections::HashMap<String, String> = Default::default();
    let mut deleted: Vec<String> = Vec::new();
    let mut operations = 0;
    for round in 0..12 {
        let server = Server::start(BIN, &config).await;
        for (id, public_key) in &present {
            let (status, key) = server
                .json(reqwest::Method::GET, &format!("/v1/crypto/keys/{id}"), None)
                .await;
            assert_eq!(status, 200, "round {round}: acknowledged key {id}: {key}");
            assert_eq!(key["versions"][0]["public_key"], public_key.as_str());
        }
        for id in &deleted {
            let (status, _) = server
                .json(reqwest::Method::GET, &format!("/v1/crypto/keys/{id}"), None)
                .await;
            assert_eq!(status, 404, "round {round}: deleted key {id} is back");
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (http, base) = (server.http.clone(), server.base.clone());
        let writer = tokio::spawn(async move {
            let mut last: Option<String> = None;
            for i in 0.. {
                let delete = if i % 3 == 2 { last.take() } else { None };
                let sent = match &delete {
                    Some(id) => {
                        http.delete(format!("{base}/v1/crypto/keys/{id}"))
                            .bearer_auth(TOKEN)
                            .send()
                            .await
                    }
                    None => {
                        http.post(format!("{base}/v1/crypto/keys"))
                            .bearer_auth(TOKEN)
                            .json(&json!({"algorithm": "ed25519"}))
                            .send()
                            .await
                    }
                };
                let answer = match sent {
                    Ok(r) if r.status().is_success() => {
                        if delete.is_some() {
                            Ok(serde_json::Value::Null)
                        } else {
                            r.json::<serde_json::Value>().await
                        }
                    }
                    Ok(r) => panic!("key operation {i}: {}", r.status()),
                    Err(e) => Err(e),
                };
                let outcome = match (answer, delete) {
                    (Ok(_), Some(id)) => KeyOutcome::Deleted(id),
                    (Ok(key), None) => {
                        let id = key["id"].as_str().expect("id").to_owned();
                        last = Some(id.clone());
                        let public_key = key["versions"][0]["public_key"].as_str().expect("pk");
                        KeyOutcome::Created(id, public_key.to_owned())
                    }
                    (Err(_), delete) => {
                        let _ = tx.send(KeyOutcome::InDoubt(delete));
                        return;
                    }
                };
                let _ = tx.send(outcome);
            }
        });
        let kill_after = 5 + (round * 11) % 40;
        let mut acked = 0;
        let mut record = |outcome, present: &mut std::collections::HashMap<_, _>| match outcome {
            KeyOutcome::Created(id, pk) => {
                present.insert(id, pk);
            }
            KeyOutcome::Deleted(id) => {
                present.remove(&id);
                deleted.push(id);
            }
            // A delete in doubt: the key may or may not be there; a create in doubt has no id.
            KeyOutcome::InDoubt(id) => {
                if let Some(id) = id {
                    present.remove(&id);
                }
            }
        };
        while acked < kill_after {
            let outcome = rx.recv().await.expect("the writer goes on until the kill");
            assert!(
                !matches!(outcome, KeyOutcome::InDoubt(_)),
                "round {round}: failed before the kill"
            );
            record(outcome, &mut present);
            acked += 1;
        }
        server.kill_9();
        writer.await.expect("writer");
        while let Some(outcome) = rx.recv().await {
            acked += 1;
            record(outcome, &mut present);
        }
        operations += acked;
    }
    // Enough operations that the change log was compacted into a snapshot on the way.
    assert!(operations > 256, "{operations} operations");
    let server = Server::start(BIN, &config).await;
    for (id, public_key) in &present {
        let (status, key) = server
            .json(reqwest::Method::GET, &format!("/v1/crypto/keys/{id}"), None)
            .await;
        assert_eq!(
            (status, &key["versions"][0]["public_key"]),
            (200, &json!(public_key))
        );
    }
    eprintln!(
        "12 kills: {operations} key operations, {} keys present and {} deleted, all as acknowledged",
        present.len(),
        deleted.len()
    );
    assert!(server.terminate().success());
}
