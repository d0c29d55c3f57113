//! Oracle reports per second with three loopback sources, and where the time goes: the same run
//! measures the whole request through the oracle's handle, fetching the three sources with a plain
//! HTTP client (the fetching share), and the crypto service signing a payload of the same size (the
//! signing share).
//!
//! The cache is off and the rate limits at their ceilings, so every report fetches all three.
//! Sources are on 127.0.0.1, .2 and .3 so no one host's limit is reached.
//!
//! Run: `cargo bench -p oracle --bench report`

use std::hint::black_box;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use oracle::{Aggregation, AggregationMethod, Extraction, Method, OracleRequest, Request, Source};
use runtime::{Builder, Journal, RuntimeLevel};

async fn source(ip: &str, price: f64) -> String {
    let body = format!(r#"{{"pair": "NEO/USD", "data": {{"price": {price}}}}}"#);
    let app = Router::new().route("/", get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let platform: Arc<dyn enclave::Platform> =
        Arc::new(enclave::Simulation::open(dir.path(), b"bench", b"", 1).expect("simulation"));
    let (_runtime, oracle, crypto, urls) = rt.block_on(async {
        let urls = vec![
            source("127.0.0.1", 12.25).await,
            source("127.0.0.2", 12.5).await,
            source("127.0.0.3", 12.75).await,
        ];
        let mut b = Builder::new(Journal::in_memory());
        let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
        let storage = b.add(storage::Storage::new(
            dir.path(),
            platform.clone(),
            crypto.clone(),
        ));
        let computation = b.add(computation::Computation::new(crypto.clone(), storage));
        let mut spec = oracle::Oracle::default_spec();
        spec.set(&oracle::CACHE_TTL_MS, std::time::Duration::ZERO);
        spec.set(&oracle::HOST_RATE_PER_SECOND, 10_000);
        spec.set(&oracle::REQUESTS_PER_MINUTE, 1_000_000);
        spec.set_items(
            &oracle::PLAIN_HTTP_HOSTS,
            &["127.0.0.1", "127.0.0.2", "127.0.0.3"],
        );
        let oracle = b.add_with_spec(
            oracle::Oracle::new(crypto.clone(), computation, platform),
            spec,
        );
        let runtime = b.start().expect("start");
        runtime
            .readiness()
            .wait_for(|r| r.level == RuntimeLevel::Ready)
            .await
            .expect("ready");
        (runtime, oracle, crypto, urls)
    });
    let request = OracleRequest {
        sources: urls
            .iter()
            .map(|url| Source {
                url: url.clone(),
                method: Method::Get,
                headers: Default::default(),
                body: None,
                extract: Extraction::JsonPath("$.data.price".into()),
            })
            .collect(),
        aggregation: Aggregation {
            method: AggregationMethod::Median,
            min_agreeing: 3,
            max_deviation: None,
        },
    };
    let ask = || async {
        oracle
            .call(|reply| Request::Fetch {
                owner: "bench".into(),
                request: request.clone(),
                reply,
            })
            .await
            .expect("answer")
            .expect("report")
    };
    // Every report must be a whole one: three values, a result.
    let sample = rt.block_on(ask());
    assert_eq!(sample.report["agreeing"], 3, "{}", sample.payload);
    let payload = sample.payload.clone().into_bytes();

    let mut group = c.benchmark_group("oracle");
    group.bench_function("report_3_sources", |b| {
        b.to_async(&rt).iter(|| async {
            let signed = ask().await;
            assert_eq!(signed.report["agreeing"], 3);
            black_box(signed)
        })
    });

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    group.bench_function("fetch_3_sources_raw_client", |b| {
        b.to_async(&rt).iter(|| async {
            let client = &client;
            let bodies = futures::future::join_all(urls.iter().map(|u| {
                let u = u.clone();
                async move {
                    client
                        .get(u)
                        .send()
                        .await
                        .expect("fetch")
                        .bytes()
                        .await
                        .expect("body")
                }
            }))
            .await;
            black_box(bodies)
        })
    });

    let key = rt
        .block_on(crypto.call(|reply| crypto::Request::List {
            owner: oracle::KEY_OWNER.into(),
            reply,
        }))
        .expect("answer")
        .expect("keys")
        .into_iter()
        .next()
        .expect("the oracle made its key")
        .id;
    group.bench_function("sign_payload", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                crypto
                    .call(|reply| crypto::Request::Sign {
                        owner: oracle::KEY_OWNER.into(),
                        id: key.clone(),
                        message: payload.clone(),
                        der: false,
                        reply,
                    })
                    .await
                    .expect("answer")
                    .expect("signed"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
