//! What several benchmarks share: an echo service and percentile reporting.

#![allow(dead_code, unreachable_pub, clippy::print_stdout)]

use std::time::Duration;

use runtime::{Context, Reply, Service, ServiceError, Spec};

pub enum EchoRequest {
    Echo(u64, Reply<u64>),
}

impl runtime::bus::Operation for EchoRequest {
    fn operation(&self) -> &'static str {
        "echo"
    }
}

/// Answers every echo at once.
pub struct EchoService {
    pub spec: Spec,
}

impl Service for EchoService {
    type Request = EchoRequest;

    fn spec(&self) -> Spec {
        self.spec.clone()
    }

    async fn run(&self, mut cx: Context<EchoRequest>) -> Result<(), ServiceError> {
        while let Some(EchoRequest::Echo(x, reply)) = cx.recv().await {
            reply.send(x);
        }
        Ok(())
    }
}

/// Prints count, p50, p90, p99 and max of `samples` in microseconds.
pub fn report(label: &str, mut samples: Vec<Duration>) {
    if samples.is_empty() {
        println!("{label:<52} no samples");
        return;
    }
    samples.sort();
    let at = |q: f64| quantile(&samples, q).as_secs_f64() * 1e6;
    let max = samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e6);
    println!(
        "{label:<52} n={:<4} p50={:>8.1}us p90={:>8.1}us p99={:>8.1}us max={:>8.1}us",
        samples.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        max
    );
}

/// The `q` quantile of `sorted` (ascending, not empty): the smallest sample with at least that share
/// of the samples at or below it.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}
