//! The HTTP API under load, end to end: the real `cloister run` (this build's binary) on loopback,
//! driven by a real HTTP client over kept-alive connections, for what users call most (an
//! authenticated storage GET, an Ed25519 signature, a trivial script, a small ONNX prediction),
//! each beside the same server's `GET /livez` (the floor: axum and the connection, no service
//! behind it) with the same client and connections, interleaved round by round.
//!
//! ```sh
//! cargo bench -p cloister --bench http                       # 3 rounds of 3 s per endpoint
//! CLOISTER_BENCH_SECONDS=10 CLOISTER_BENCH_CONCURRENCY=32 cargo bench -p cloister --bench http
//! ```
//!
//! Without `--bench` (as in `cargo test --benches`) it runs one short round: a check that every
//! endpoint answers under load, not a measurement. The client runs on one thread (the server has
//! the machine's other core and its own threads); the ratios are what to read, not the absolute
//! rates, which the shared machine moves by up to 2×. Also printed: raw Ed25519 signing on one
//! thread of this process, the limit of the sign endpoint.

// A bench reports on stdout (the table) and stderr (progress).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signer;
use reqwest::{Client, Method, RequestBuilder};
use serde_json::{Value, json};
use test_support::server::{Server, TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_cloister");
const MLP: &[u8] = include_bytes!("../../ai/tests/fixtures/mlp.onnx");
const MLP_INPUT: &str = r#"{"inputs":{"x":{"shape":[1,4],"data":[0.1,0.2,0.3,0.4]}}}"#;

/// One endpoint under load: how to make its request.
struct Endpoint {
    name: &'static str,
    method: Method,
    url: String,
    token: Option<String>,
    body: Option<(&'static str, Vec<u8>)>,
}

impl Endpoint {
    fn request(&self, client: &Client) -> RequestBuilder {
        let mut r = client.request(self.method.clone(), &self.url);
        if let Some(token) = &self.token {
            r = r.bearer_auth(token);
        }
        if let Some((content_type, body)) = &self.body {
            r = r.header("content-type", *content_type).body(body.clone());
        }
        r
    }
}

/// What one endpoint did in one measurement.
struct Figures {
    answered: u64,
    failed: u64,
    first_failure: Option<String>,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// `concurrency` requests in flight at all times for `duration`; every answer read to its end.
async fn load(
    client: &Client,
    endpoint: &Endpoint,
    concurrency: usize,
    duration: Duration,
) -> Figures {
    let start = Instant::now();
    let end = start + duration;
    let workers = (0..concurrency).map(|_| async move {
        let mut f = Figures {
            answered: 0,
            failed: 0,
            first_failure: None,
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
        };
        while Instant::now() < end {
            let sent = Instant::now();
            let outcome = match endpoint.request(client).send().await {
                Ok(answer) => {
                    let status = answer.status();
                    match answer.bytes().await {
                        Ok(_) if status.is_success() => Ok(()),
                        Ok(body) => Err(format!("{status}: {}", String::from_utf8_lossy(&body))),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            let took = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
            match outcome {
                Ok(()) => {
                    f.answered += 1;
                    f.latencies_us.push(took);
                }
                Err(e) => {
                    f.failed += 1;
                    f.first_failure.get_or_insert(e);
                }
            }
        }
        f
    });
    let parts = futures::future::join_all(workers).await;
    let elapsed = start.elapsed();
    let mut all = Figures {
        answered: 0,
        failed: 0,
        first_failure: None,
        elapsed,
        latencies_us: Vec::new(),
    };
    for p in parts {
        all.answered += p.answered;
        all.failed += p.failed;
        if all.first_failure.is_none() {
            all.first_failure = p.first_failure;
        }
        all.latencies_us.extend(p.latencies_us);
    }
    all
}

/// Raw Ed25519 signatures of a 32-byte message per second, on this thread.
fn raw_signing_rate(duration: Duration) -> f64 {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let message = [42u8; 32];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            std::hint::black_box(key.sign(std::hint::black_box(&message)));
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn setup_call(
    client: &Client,
    server: &Server,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut r = client
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let answer = r.send().await.expect("setup request");
    let status = answer.status();
    let text = answer.text().await.expect("setup answer");
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, seconds) = if full {
        (
            env_number("CLOISTER_BENCH_ROUNDS", 3),
            env_number("CLOISTER_BENCH_SECONDS", 3),
        )
    } else {
        (1, 0)
    };
    let duration = if full {
        Duration::from_secs(seconds)
    } else {
        Duration::from_millis(300)
    };
    let concurrency = env_number("CLOISTER_BENCH_CONCURRENCY", 16) as usize;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cloister.toml");
    // The account's request budget is raised out of the way: this measures the path, not the
    // limiter (whose refusals would count as failures).
    std::fs::write(
        &config,
        format!(
            "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[services.account]\nrate_per_second = 1000000\nrate_burst = 1000000\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write config");
    // Another build of the binary (an earlier commit's, say) to compare with, under the same bench.
    let bin = std::env::var("CLOISTER_BENCH_BIN").unwrap_or_else(|_| BIN.to_owned());
    eprintln!("starting {bin} ...");
    let server = Server::start(&bin, &config).await;
    let client = Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");

    let created = setup_call(
        &client,
        &server,
        TOKEN,
        Method::POST,
        "/v1/accounts",
        Some(json!({ "name": "bench" })),
    )
    .await;
    let token = created["token"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let stored = client
        .put(format!("{}/v1/storage/bench/value", server.base))
        .bearer_auth(&token)
        .body(vec![0x5a; 1024])
        .send()
        .await
        .expect("put");
    assert!(stored.status().is_success(), "put: {}", stored.status());
    let key = setup_call(
        &client,
        &server,
        &token,
        Method::POST,
        "/v1/crypto/keys",
        Some(json!({ "algorithm": "ed25519" })),
    )
    .await;
    let key = key["id"].as_str().expect("key id").to_owned();
    let model = client
        .post(format!("{}/v1/ai/models?name=mlp", server.base))
        .bearer_auth(&token)
        .body(MLP.to_vec())
        .send()
        .await
        .expect("upload");
    assert!(model.status().is_success(), "upload: {}", model.status());
    let model: Value = model.json().await.expect("model");
    let model = model["id"].as_str().expect("model id").to_owned();

    let json_body = |v: Value| Some(("application/json", v.to_string().into_bytes()));
    let endpoints = [
        Endpoint {
            name: "GET /livez (floor)",
            method: Method::GET,
            url: format!("{}/livez", server.base),
            token: None,
            body: None,
        },
        Endpoint {
            name: "GET /v1/storage/{key} (1 KiB)",
            method: Method::GET,
            url: format!("{}/v1/storage/bench/value", server.base),
            token: Some(token.clone()),
            body: None,
        },
        Endpoint {
            name: "POST .../sign (Ed25519)",
            method: Method::POST,
            url: format!("{}/v1/crypto/keys/{key}/sign", server.base),
            token: Some(token.clone()),
            body: json_body(json!({ "message": B64.encode([42u8; 32]) })),
        },
        Endpoint {
            name: "POST /v1/computation/run",
            method: Method::POST,
            url: format!("{}/v1/computation/run", server.base),
            token: Some(token.clone()),
            body: json_body(json!({ "code": "return 1" })),
        },
        Endpoint {
            name: "POST .../predict (MLP)",
            method: Method::POST,
            url: format!("{}/v1/ai/models/{model}/predict", server.base),
            token: Some(token.clone()),
            body: Some(("application/json", MLP_INPUT.as_bytes().to_vec())),
        },
    ];

    // Warm-up: connections open, caches filled, the model loaded.
    for e in &endpoints {
        let warm = load(&client, e, concurrency, Duration::from_millis(200)).await;
        assert!(
            warm.answered > 0,
            "{} never answered: {:?}",
            e.name,
            warm.first_failure
        );
    }

    let mut rates = vec![Vec::new(); endpoints.len()];
    let mut ratios = vec![Vec::new(); endpoints.len()];
    let mut p50 = vec![Vec::new(); endpoints.len()];
    let mut p99 = vec![Vec::new(); endpoints.len()];
    let mut failed = vec![0u64; endpoints.len()];
    let mut failures: Vec<Option<String>> = vec![None; endpoints.len()];
    for round in 0..rounds {
        let mut floor = f64::NAN;
        for (i, e) in endpoints.iter().enumerate() {
            let mut f = load(&client, e, concurrency, duration).await;
            let rate = f.rate();
            if i == 0 {
                floor = rate;
            }
            eprintln!(
                "round {}: {:<32} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  failed {}",
                round + 1,
                e.name,
                rate,
                f.quantile_ms(0.5),
                f.quantile_ms(0.99),
                f.failed
            );
            rates[i].push(rate);
            ratios[i].push(rate / floor);
            p50[i].push(f.quantile_ms(0.5));
            p99[i].push(f.quantile_ms(0.99));
            failed[i] += f.failed;
            if failures[i].is_none() {
                failures[i] = f.first_failure;
            }
        }
    }
    let raw_sign = raw_signing_rate(if full {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(100)
    });

    println!(
        "\nHTTP load, {concurrency} requests in flight, {rounds} round(s) of {:.1} s per endpoint (medians over rounds)\n",
        duration.as_secs_f64()
    );
    println!(
        "| endpoint | req/s | p50 ms | p99 ms | ÷ floor (same round) | failed |\n|---|---|---|---|---|---|"
    );
    for (i, e) in endpoints.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            e.name,
            median(rates[i].clone()),
            median(p50[i].clone()),
            median(p99[i].clone()),
            median(ratios[i].clone()),
            failed[i]
        );
    }
    let sign = median(rates[2].clone());
    let floor = median(rates[0].clone());
    println!(
        "\nraw Ed25519 signing on one thread: {raw_sign:.0}/s; sign ÷ min(floor, raw) = {:.2}",
        sign / floor.min(raw_sign)
    );
    for (i, e) in endpoints.iter().enumerate() {
        if let Some(why) = &failures[i] {
            println!("{}: first failure: {why:.300}", e.name);
        }
    }
    assert!(
        failed.iter().all(|&n| n == 0),
        "requests failed under load (above)"
    );
    drop(server);
}
