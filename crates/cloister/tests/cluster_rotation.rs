//! The cluster key's rotation with real `cloister` processes on one private PostgreSQL server
//! (docs/cluster.md, "Rotating the cluster key"): during writes it loses nothing, every old value
//! and key still reads, the members running and the member stopped during it take the new key,
//! a removed node gets none, and a member key swapped in the database is granted nothing.

mod cluster_support;

use std::collections::BTreeSet;

use base64::Engine as _;
use serde_json::{Value, json};
use test_support::postgres::Postgres;
use test_support::server::{Server, journal_head};

use cluster_support::{BIN, audit, cli, first_node, status};

/// A node's `GET /v1/cluster`.
async fn cluster_status(server: &Server) -> Value {
    status(server).await.0
}

/// The node id `server` answers with.
async fn node_id(server: &Server) -> String {
    status(server).await.1
}

/// Waits until member `node`'s row, as `server` lists it, is at `generation`: a member takes a
/// rotated key at its next heartbeat (5 s) at the latest. A poll that ends at the first answer
/// that shows it.
async fn wait_generation(server: &Server, node: &str, generation: u64) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = cluster_status(server).await;
        let member = status["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["node"] == node)
            .cloned();
        if let Some(m) = member.filter(|m| m["generation"] == generation) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{node} never reached generation {generation}: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_during_writes_loses_nothing_and_reaches_every_member_but_a_removed_one() {
    let b64 = base64::engine::general_purpose::STANDARD;
    let pg = Postgres::start();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    let config_a = pg.write_config(dirs[0].path());
    let (a, _, _) = first_node(&pg, dirs[0].path()).await;
    let b = Server::start_with(BIN, &pg.write_config(dirs[1].path()), &["--join", &a.base]).await;
    let config_c = pg.write_config(dirs[2].path());
    let c = Server::start_with(BIN, &config_c, &["--join", &a.base]).await;
    let d = Server::start_with(BIN, &pg.write_config(dirs[3].path()), &["--join", &a.base]).await;
    let (a_id, b_id, c_id, d_id) = (
        node_id(&a).await,
        node_id(&b).await,
        node_id(&c).await,
        node_id(&d).await,
    );

    // Before: values written through A, a key made on B with a signature.
    for i in 0..20 {
        let r = a
            .put(&format!("old/{i}"), format!("old {i}").into_bytes())
            .await
            .expect("put");
        assert_eq!(r.status().as_u16(), 200);
    }
    let (status, key) = b
        .json(
            reqwest::Method::POST,
            "/v1/crypto/keys",
            Some(json!({"algorithm": "ed25519"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key_id = key["id"].as_str().expect("id").to_owned();
    let message = b64.encode(b"signed before the rotation");
    let (status, signed) = b
        .json(
            reqwest::Method::POST,
            &format!("/v1/crypto/keys/{key_id}/sign"),
            Some(json!({"message": message})),
        )
        .await;
    assert_eq!(status, 200, "{signed}");

    // D is removed (it stops), and C is stopped: C is a member still, only not running.
    let (ok, _, err) = cli(&a.base, &["remove", &d_id]);
    assert!(ok, "cluster remove: {err}");
    let exited = tokio::task::spawn_blocking(move || d.wait())
        .await
        .expect("wait");
    assert_eq!(exited.code(), Some(4), "{exited:?}");
    c.terminate();

    // Writes through B, one after another, while A rotates the key.
    let (count, mut counted) = tokio::sync::watch::channel(0usize);
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (http, base, token, stop) = (
            b.http.clone(),
            b.base.clone(),
            b.token.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut i = 0;
            while !stop.is_cancelled() {
                let key = format!("during/{i}");
                i += 1;
                let r = http
                    .put(format!("{base}/v1/storage/{key}"))
                    .bearer_auth(&token)
                    .body(key.clone().into_bytes())
                    .send()
                    .await
                    .expect("B answers");
                let status = r.status();
                assert!(
                    status.is_success(),
                    "{key}: {status} {}",
                    r.text().await.unwrap_or_default()
                );
                acknowledged.push(key);
                count.send_replace(acknowledged.len());
            }
            acknowledged
        })
    };
    counted.wait_for(|n| *n >= 5).await.expect("five writes");
    let a_head = journal_head(&config_a);
    let (ok, out, err) = cli(&a.base, &["rotate", "--json"]);
    assert!(ok, "cluster rotate: {out} {err}");
    let rotated: Value = serde_json::from_str(&out).expect("json");
    // A key made through B at once, most likely before B's next heartbeat has shown it the new
    // key: its write under the old one is refused as stale, and B writes it under the new one.
    let (status, made_after) = b
        .json(
            reqwest::Method::POST,
            "/v1/crypto/keys",
            Some(json!({"algorithm": "ed25519"})),
        )
        .await;
    assert_eq!(status, 201, "{made_after}");
    let made_after_id = made_after["id"].as_str().expect("id").to_owned();
    let after = *counted.borrow();
    counted
        .wait_for(|n| *n >= after + 10)
        .await
        .expect("ten writes after");
    stop.cancel();
    let acknowledged = writer.await.expect("writer");

    assert_eq!(rotated["generation"], 2, "{rotated}");
    assert_eq!(rotated["node"], a_id.as_str());
    let granted: BTreeSet<&str> = rotated["granted"]
        .as_array()
        .expect("granted")
        .iter()
        .map(|n| n.as_str().expect("node"))
        .collect();
    assert_eq!(
        granted,
        BTreeSet::from([a_id.as_str(), b_id.as_str(), c_id.as_str()]),
        "{rotated}"
    );
    assert_eq!(rotated["skipped"], json!([]), "{rotated}");
    assert_eq!(rotated["unreadable"], json!([]), "{rotated}");
    assert!(
        rotated["rewrapped"].as_u64().expect("count") >= 2,
        "{rotated}"
    );
    audit(&a, a_head, "cluster.rotated", &a_id).await;
    // The database: no key wrapped by the old generation (the key made after the rotation
    // among them), and no grant to the removed node.
    assert_eq!(
        pg.sql("SELECT count(*) FROM crypto_keys WHERE generation <> 2"),
        "0"
    );
    assert_eq!(
        pg.sql(&format!(
            "SELECT generation FROM crypto_keys WHERE id = '{made_after_id}'"
        )),
        "2"
    );
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM cloister_grants WHERE node_id = '{d_id}'"
        )),
        "0"
    );

    // B takes the new key (at once, or at its heartbeat); everything reads through A and B.
    let recorded = cluster_status(&a).await["cluster"]["key_check"].clone();
    assert_eq!(rotated["key_check"], recorded);
    let b_row = wait_generation(&a, &b_id, 2).await;
    assert_eq!(b_row["key_check"], recorded, "{b_row}");
    for node in [&a, &b] {
        for i in 0..20 {
            assert_eq!(
                node.get(&format!("old/{i}")).await,
                (200, format!("old {i}").into_bytes())
            );
        }
        for key in &acknowledged {
            assert_eq!(
                node.get(key).await,
                (200, key.clone().into_bytes()),
                "{key}"
            );
        }
        let (status, verified) = node
            .json(
                reqwest::Method::POST,
                &format!("/v1/crypto/keys/{key_id}/verify"),
                Some(json!({"message": message, "signature": signed["signature"]})),
            )
            .await;
        assert_eq!(
            (status, &verified["valid"]),
            (200, &json!(true)),
            "{verified}"
        );
    }

    // C, stopped during the rotation, takes its grant as it starts: no admission, same state.
    let c = Server::start(BIN, &config_c).await;
    let c_status = cluster_status(&c).await;
    assert_eq!(c_status["key_check"], recorded, "{c_status}");
    assert_eq!(c.get("old/7").await, (200, b"old 7".to_vec()));
    let (status, signed_on_c) = c
        .json(
            reqwest::Method::POST,
            &format!("/v1/crypto/keys/{key_id}/sign"),
            Some(json!({"message": message})),
        )
        .await;
    assert_eq!(status, 200, "{signed_on_c}");
    // Ed25519 is deterministic: the same key signs the same message the same way.
    assert_eq!(signed_on_c["signature"], signed["signature"]);
    wait_generation(&a, &c_id, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_key_swapped_in_the_database_is_granted_nothing() {
    let pg = Postgres::start();
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, _, _) = first_node(&pg, da.path()).await;
    let b = Server::start_with(BIN, &pg.write_config(db.path()), &["--join", &a.base]).await;
    let b_id = node_id(&b).await;
    wait_generation(&a, &b_id, 1).await;

    // The host puts a public key of its own in B's row, hoping the new key is sealed to it. The
    // heartbeat only moves the time, so the row keeps the swapped key until B registers again.
    pg.sql(&format!(
        "UPDATE cloister_nodes SET member_key = '\\x{}'::bytea WHERE node_id = '{b_id}'",
        "09".repeat(32)
    ));
    let (ok, out, err) = cli(&a.base, &["rotate", "--json"]);
    assert!(ok, "cluster rotate: {out} {err}");
    let rotated: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        rotated["skipped"],
        json!([{"node": b_id, "reason": "its member key's tag does not verify"}]),
        "{rotated}"
    );
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM cloister_grants WHERE node_id = '{b_id}'"
        )),
        "0"
    );
    // And the CLI says who was left out, and what they must do.
    let (ok, out, _) = cli(&a.base, &["rotate"]);
    assert!(ok);
    assert!(out.contains("generation 3"), "{out}");
    assert!(out.contains(&format!("left out: node {b_id}")), "{out}");
    assert!(out.contains("must join again"), "{out}");
}
