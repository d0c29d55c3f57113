//! Chaos, short and repeatable: a fixed seed's faults into every service of the real binary
//! while clients write, read, sign, run scripts and predict (see `chaos/scenario.rs` for what is
//! checked). The long random round is the bench: `cargo bench -p cloister --bench chaos`.

#[path = "chaos/scenario.rs"]
mod scenario;

use std::time::Duration;

use scenario::{Plan, Report};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_every_service_lose_nothing_answer_in_time_and_heal() {
    let plan = Plan {
        seed: 0x000C_1015_7E4C_4A05,
        faults: 20,
        answers_between: 50,
        deadline: Duration::from_secs(1),
        writers: 2,
        backoff_max: Some("1s"),
    };
    let report: Report = scenario::run(&plan).await;
    eprintln!(
        "chaos (seed {:#x}): {} faults {:?}",
        plan.seed,
        report.injected.len(),
        scenario::by_service(&report)
    );
    eprintln!("{}", scenario::summary(&report));
    assert!(
        report.violations.is_empty(),
        "broken promises under chaos (seed {:#x}):\n{}",
        plan.seed,
        report.violations.join("\n")
    );
    // The round did what it says: faults landed and clients were answered both ways.
    let summary = scenario::summary(&report);
    assert!(report.injected.len() >= plan.faults / 2, "{summary}");
    assert!(report.acked_writes > 0 && report.succeeded > 0, "{summary}");
}
