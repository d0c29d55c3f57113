//! A cluster under load (docs/cluster.md): puts and gets per second through one, two and three
//! real `cloister` nodes on one private PostgreSQL, beside one node on redb and beside raw
//! `tokio-postgres` upserts and selects of rows the size of storage's records (the limit: what the
//! database does with no Cloister in front of it), all in one run on this machine.
//!
//! ```sh
//! cargo bench -p cloister --bench cluster                     # 5 s per measurement
//! CLOISTER_BENCH_SECONDS=10 CLOISTER_BENCH_CONCURRENCY=32 cargo bench -p cloister --bench cluster
//! ```
//!
//! Requests are spread over the nodes, worker `w` on node `w mod n`; every put writes its own key
//! (256-byte values), every get reads one of the keys written before. Without `--bench` (as in
//! `cargo test --benches`) it runs one short round: a check that every path answers, not a
//! measurement. The client, the nodes and the database share the machine's cores: read the
//! ratios, not the absolute rates.

// A bench reports on stdout (the table) and stderr (progress).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Client;
use test_support::postgres::Postgres;
use test_support::server::{Server, TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_cloister");
const VALUE: usize = 256;
/// Keys written before the gets, read round-robin.
const READ_KEYS: u64 = 200;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one measurement did.
struct Figures {
    answered: u64,
    failed: u64,
    first_failure: Option<String>,
    elapsed: Duration,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }
}

/// `concurrency` workers for `duration`, each calling `op(worker, n)` with its own count.
async fn load<F, Fut>(concurrency: usize, duration: Duration, op: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Clone,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let end = start + duration;
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers = (0..concurrency).map(|w| {
        let (op, answered, failed) = (op.clone(), answered.clone(), failed.clone());
        async move {
            let mut first = None;
            let mut n = 0;
            while Instant::now() < end {
                match op(w, n).await {
                    Ok(()) => answered.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        first.get_or_insert(e);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                n += 1;
            }
            first
        }
    });
    let firsts = futures::future::join_all(workers).await;
    Figures {
        answered: answered.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_failure: firsts.into_iter().flatten().next(),
        elapsed: start.elapsed(),
    }
}

async fn put(client: &Client, base: &str, key: &str) -> Result<(), String> {
    let r = client
        .put(format!("{base}/v1/storage/{key}"))
        .bearer_auth(TOKEN)
        .body(vec![0x5a; VALUE])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

async fn get(client: &Client, base: &str, key: &str) -> Result<(), String> {
    let r = client
        .get(format!("{base}/v1/storage/{key}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() && body.len() == VALUE {
        Ok(())
    } else {
        Err(format!("{status}: {} bytes", body.len()))
    }
}

/// Puts and gets through `nodes`, spread over them.
async fn through(
    client: &Client,
    nodes: &[String],
    label: &str,
    concurrency: usize,
    duration: Duration,
) -> (Figures, Figures) {
    for i in 0..READ_KEYS {
        let base = &nodes[i as usize % nodes.len()];
        put(client, base, &format!("read/{label}/{i}"))
            .await
            .expect("the keys to read");
    }
    let puts = load(concurrency, duration, |w, n| {
        let (client, base) = (client.clone(), nodes[w % nodes.len()].clone());
        let label = label.to_owned();
        async move { put(&client, &base, &format!("put/{label}/{w}/{n}")).await }
    })
    .await;
    let gets = load(concurrency, duration, |w, n| {
        let (client, base) = (client.clone(), nodes[w % nodes.len()].clone());
        let key = format!("read/{label}/{}", (w as u64 * 31 + n) % READ_KEYS);
        async move { get(&client, &base, &key).await }
    })
    .await;
    (puts, gets)
}

/// Raw `tokio-postgres`: an upsert and a select of rows shaped as storage's (a namespace, a key,
/// a record of the value's ciphertext size), one connection per worker, prepared statements.
async fn raw(pg: &Postgres, concurrency: usize, duration: Duration) -> (Figures, Figures) {
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
    };
    let setup = connect().await;
    setup
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bench_raw (namespace bytea, key bytea, record bytea,
             PRIMARY KEY (namespace, key))",
        )
        .await
        .expect("create");
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let c = connect().await;
        let upsert = c
            .prepare(
                "INSERT INTO bench_raw (namespace, key, record) VALUES ($1, $2, $3)
                 ON CONFLICT (namespace, key) DO UPDATE SET record = EXCLUDED.record",
            )
            .await
            .expect("prepare");
        let select = c
            .prepare("SELECT record FROM bench_raw WHERE namespace = $1 AND key = $2")
            .await
            .expect("prepare");
        clients.push(Arc::new((c, upsert, select)));
    }
    // The record: format and version (9 bytes), key version, nonce, ciphertext and tag.
    let record = Arc::new(vec![0x5a_u8; 9 + 4 + 12 + VALUE + 16]);
    for i in 0..READ_KEYS {
        let (c, upsert, _) = &*clients[0];
        c.execute(
            upsert,
            &[
                &&b"admin"[..],
                &format!("read/{i}").as_bytes(),
                &record.as_slice(),
            ],
        )
        .await
        .expect("seed");
    }
    let puts = load(concurrency, duration, |w, n| {
        let (clients, record) = (clients.clone(), record.clone());
        async move {
            let (c, upsert, _) = &*clients[w];
            let key = format!("put/{w}/{n}");
            c.execute(
                upsert,
                &[&&b"admin"[..], &key.as_bytes(), &record.as_slice()],
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
    })
    .await;
    let gets = load(concurrency, duration, |w, n| {
        let clients = clients.clone();
        async move {
            let (c, _, select) = &*clients[w];
            let key = format!("read/{}", (w as u64 * 31 + n) % READ_KEYS);
            c.query_one(select, &[&&b"admin"[..], &key.as_bytes()])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    (puts, gets)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let duration = if full {
        Duration::from_secs(env_number("CLOISTER_BENCH_SECONDS", 5))
    } else {
        Duration::from_millis(300)
    };
    let concurrency = env_number("CLOISTER_BENCH_CONCURRENCY", 16) as usize;
    let mut rows: Vec<(String, Figures, Figures)> = Vec::new();

    eprintln!("one node on redb ...");
    let redb_dir = tempfile::tempdir().expect("dir");
    // Starting a server also installs the TLS provider the client is built with.
    let redb = Server::start(BIN, &test_support::server::write_config(redb_dir.path())).await;
    let client = Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let (p, g) = through(
        &client,
        std::slice::from_ref(&redb.base),
        "redb",
        concurrency,
        duration,
    )
    .await;
    rows.push(("1 node, redb".into(), p, g));
    assert!(redb.terminate().success());

    eprintln!("PostgreSQL ...");
    let pg = Postgres::start();
    let (p, g) = raw(&pg, concurrency, duration).await;
    rows.push(("raw tokio-postgres (the limit)".into(), p, g));

    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let first = Server::start(BIN, &pg.write_config(dirs[0].path())).await;
    let made = reqwest::Client::new()
        .post(format!("{}/v1/cluster/init", first.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("cluster init");
    assert!(
        made.status().is_success(),
        "cluster init: {}",
        made.status()
    );
    let mut nodes = vec![first];
    for (n, dir) in dirs.iter().enumerate().skip(1) {
        eprintln!("node {} joins ...", n + 1);
        let config = pg.write_config(dir.path());
        let joined = Server::start_with(BIN, &config, &["--join", &nodes[0].base]).await;
        nodes.push(joined);
    }
    for n in 1..=3 {
        eprintln!("{n} node(s) on PostgreSQL ...");
        let bases: Vec<String> = nodes[..n].iter().map(|s| s.base.clone()).collect();
        let (p, g) = through(&client, &bases, &format!("pg{n}"), concurrency, duration).await;
        rows.push((format!("{n} node(s), PostgreSQL"), p, g));
    }
    for node in nodes {
        assert!(node.terminate().success());
    }

    let raw_rates = (rows[1].1.rate(), rows[1].2.rate());
    println!(
        "\n{concurrency} requests in flight, {} s each, {VALUE}-byte values",
        duration.as_secs_f64()
    );
    println!(
        "{:<32} {:>10} {:>9} {:>10} {:>9} {:>8}",
        "path", "put/s", "÷ raw", "get/s", "÷ raw", "failed"
    );
    for (label, puts, gets) in &rows {
        println!(
            "{label:<32} {:>10.0} {:>9.3} {:>10.0} {:>9.3} {:>8}",
            puts.rate(),
            puts.rate() / raw_rates.0,
            gets.rate(),
            gets.rate() / raw_rates.1,
            puts.failed + gets.failed
        );
        for f in [puts, gets] {
            if let Some(e) = &f.first_failure {
                println!("    first failure: {e}");
            }
        }
    }
    let failed: u64 = rows.iter().map(|(_, p, g)| p.failed + g.failed).sum();
    // Contended puts may answer 503 (retry) after 8 overtaken attempts; anything else is a bug.
    for (label, p, g) in &rows {
        for f in [p, g] {
            if let Some(e) = &f.first_failure {
                assert!(e.starts_with("503"), "{label}: {e}");
            }
        }
    }
    eprintln!("{failed} failed requests in all");
}
