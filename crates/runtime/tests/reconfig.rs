//! Hot configuration under a paused clock: applied, rejected, rolled back, serialized.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use runtime::config::Config;
use runtime::journal::Event;
use runtime::reconfig::{Controller, Handle, Outcome, Source, Status};
use runtime::{Builder, Journal, Runtime, RuntimeLevel, Spec};
use support::{Behaviour, Fake, Req};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const BASE: &str = "[runtime]\nconfig_watch = \"5s\"\n";

async fn start(fake: Fake) -> (Runtime, Handle, Journal) {
    let (rt, handle, journal, _) = start_with_handle(fake).await;
    (rt, handle, journal)
}

async fn start_with_handle(
    fake: Fake,
) -> (Runtime, Handle, Journal, runtime::Handle<support::Req>) {
    let mut started = start_all(vec![fake], BASE, None).await;
    let svc = started.services.remove(0);
    (started.rt, started.config, started.journal, svc)
}

/// A runtime with these services, a configuration controller started on `base`, and optionally the
/// monitor; ready.
struct Started {
    rt: Runtime,
    config: Handle,
    journal: Journal,
    services: Vec<runtime::Handle<support::Req>>,
}

async fn start_all(fakes: Vec<Fake>, base: &str, monitor: Option<Duration>) -> Started {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let catalog: Vec<Spec> = fakes.iter().map(runtime::Service::spec).collect();
    let services = fakes.into_iter().map(|f| b.add(f)).collect();
    if let Some(interval) = monitor {
        b.monitor(interval);
    }
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let config = Config::parse(base, &catalog).expect("config");
    let (config, _task) = Controller::spawn(
        rt.client(),
        catalog,
        base.into(),
        config,
        std::sync::Arc::new(|_: &mut Config| {}),
        CancellationToken::new(),
    );
    Started {
        rt,
        config,
        journal,
        services,
    }
}

fn kinds(journal: &Journal, since: u64) -> Vec<String> {
    journal
        .read(since, usize::MAX)
        .expect("read")
        .iter()
        .filter_map(|e| {
            let v = serde_json::to_value(&e.event).ok()?;
            let kind = v["kind"].as_str()?.to_owned();
            (kind.starts_with("config") || kind == "reconfigured").then_some(kind)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_good_config_is_applied_live_watched_and_confirmed() {
    let (rt, config, journal) = start(Fake::new("svc")).await;
    let text = format!("{BASE}[services.svc.health]\ninterval = \"3s\"\ntimeout = \"1s\"\n");
    let outcome = config
        .apply(text.clone(), Source::Api, true)
        .await
        .expect("outcome");
    let Outcome::Applied {
        version: 2,
        changed,
        watching: false,
        ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(changed, &["svc"]);
    assert_eq!(
        kinds(&journal, 0),
        ["reconfigured", "config_applied", "config_confirmed"]
    );
    let reconfigured = journal
        .read(0, usize::MAX)
        .expect("read")
        .iter()
        .find_map(|e| match &e.event {
            Event::Reconfigured { live, changes } => Some((*live, changes.clone())),
            _ => None,
        });
    let (live, changes) = reconfigured.expect("reconfigured");
    assert!(live);
    assert!(
        changes.iter().any(|c| c.starts_with("health.interval")),
        "{changes:?}"
    );
    let status = rt.snapshot().await.expect("snapshot");
    assert_eq!(
        status.service("svc").map(|s| s.spec.health.interval),
        Some(Duration::from_secs(3))
    );
    let history = config.history();
    assert_eq!(
        history
            .iter()
            .map(|v| (v.version, v.status))
            .collect::<Vec<_>>(),
        [(1, Status::Good), (2, Status::Good)]
    );
    // The same text again changes nothing.
    assert!(matches!(
        config.apply(text, Source::Api, true).await,
        Some(Outcome::Unchanged { version: 2 })
    ));
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_bad_config_is_rejected_whole_and_nothing_changes() {
    let (rt, config, journal) = start(Fake::new("svc")).await;
    let since = journal.last_seq();
    let outcome = config
        .apply(
            format!("{BASE}[services.svc]\npriority = 3\nqueue_capacity = 7\ncolour = \"red\"\n"),
            Source::Api,
            false,
        )
        .await
        .expect("outcome");
    let Outcome::Rejected { problems } = outcome else {
        panic!("{outcome:?}")
    };
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("services.svc.priority: expected a string"));
    assert!(lines[1].starts_with("services.svc.colour: unknown key"));
    assert_eq!(kinds(&journal, since), ["config_rejected"]);
    let snapshot = rt.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.service("svc").map(|s| s.spec.queue_capacity),
        Some(1024),
        "nothing applied"
    );

    let outcome = config
        .apply("[enclave]\nthreads = 8\n".into(), Source::Api, false)
        .await
        .expect("outcome");
    let Outcome::Rejected { problems } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        problems
            .iter()
            .any(|p| p.path == "enclave" && p.message.contains("takes a restart")),
        "{problems:?}"
    );
    assert_eq!(config.history().len(), 1);
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_config_that_breaks_a_service_is_rolled_back_within_the_watch_window() {
    // The second replica that the new config asks for panics: the rollout must be undone.
    let fake = Fake::new("svc")
        .script(&[Behaviour::Run, Behaviour::Panic])
        .spec_mut(|s| s.replicas.max = 2);
    let (rt, config, journal) = start(fake).await;
    let since = journal.last_seq();
    let text = format!("{BASE}[services.svc]\nreplicas = {{ min = 2, max = 2 }}\n");
    let outcome = config
        .apply(text, Source::Api, true)
        .await
        .expect("outcome");
    let Outcome::RolledBack {
        from: 2,
        to: 1,
        reason,
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("svc failed"), "{reason}");
    assert_eq!(
        kinds(&journal, since),
        [
            "reconfigured",
            "config_applied",
            "reconfigured",
            "config_rolled_back"
        ]
    );
    let snapshot = rt.snapshot().await.expect("snapshot");
    let svc = snapshot.service("svc").expect("svc");
    assert_eq!(
        (svc.spec.replicas.min, svc.spec.replicas.max),
        (1, 2),
        "back on version 1, not a mix"
    );
    let history = config.history();
    assert_eq!(
        history
            .iter()
            .map(|v| (v.version, v.status, v.source))
            .collect::<Vec<_>>(),
        [
            (1, Status::Good, Source::Startup),
            (2, Status::RolledBack, Source::Api),
            (3, Status::Good, Source::Rollback)
        ]
    );
    assert_eq!(history[2].hash, history[0].hash);
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rapid_applies_are_serialized_and_an_operator_can_roll_back() {
    let (rt, config, journal) = start(Fake::new("svc")).await;
    let since = journal.last_seq();
    let a = config.clone();
    let b = config.clone();
    let first = tokio::spawn(async move {
        a.apply(
            format!("{BASE}[services.svc]\nqueue_capacity = 10\n"),
            Source::Api,
            false,
        )
        .await
    });
    tokio::task::yield_now().await;
    let second = tokio::spawn(async move {
        b.apply(
            format!("{BASE}[services.svc]\nqueue_capacity = 20\n"),
            Source::Api,
            false,
        )
        .await
    });
    assert!(matches!(
        first.await.expect("join"),
        Some(Outcome::Applied { version: 2, .. })
    ));
    assert!(matches!(
        second.await.expect("join"),
        Some(Outcome::Applied { version: 3, .. })
    ));
    // Version 3 was applied only after version 2's watch window closed.
    assert_eq!(
        kinds(&journal, since),
        [
            "reconfigured",
            "config_applied",
            "config_confirmed",
            "reconfigured",
            "config_applied"
        ]
    );
    let outcome = config.rollback().await.expect("outcome");
    assert!(
        matches!(outcome, Outcome::RolledBack { from: 3, to: 2, .. }),
        "{outcome:?}"
    );
    let snapshot = rt.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.service("svc").map(|s| s.spec.queue_capacity),
        Some(10)
    );
    rt.shutdown().await;
}

/// After an automatic rollback (4 back to 3, recorded as 5), each operator rollback goes one good
/// version further back (to 2, then to 1) instead of applying 3 again, and at the oldest says so.
#[tokio::test(start_paused = true)]
async fn each_rollback_goes_back_to_the_good_version_before_the_running_one() {
    // Version 4's second replica panics, so version 4 is rolled back automatically.
    let fake = Fake::new("svc")
        .script(&[Behaviour::Run, Behaviour::Panic])
        .spec_mut(|s| s.replicas.max = 2);
    let (rt, config, _journal) = start(fake).await;
    let queue = || async {
        let snapshot = rt.snapshot().await.expect("snapshot");
        snapshot.service("svc").expect("svc").spec.queue_capacity
    };
    let first = queue().await;
    for (capacity, version) in [(10, 2), (20, 3)] {
        let text = format!("{BASE}[services.svc]\nqueue_capacity = {capacity}\n");
        let outcome = config.apply(text, Source::Api, true).await;
        assert!(
            matches!(outcome, Some(Outcome::Applied { version: v, .. }) if v == version),
            "{outcome:?}"
        );
    }
    let text =
        format!("{BASE}[services.svc]\nqueue_capacity = 20\nreplicas = {{ min = 2, max = 2 }}\n");
    let outcome = config.apply(text, Source::Api, true).await;
    assert!(
        matches!(outcome, Some(Outcome::RolledBack { from: 4, to: 3, .. })),
        "{outcome:?}"
    );
    assert_eq!(queue().await, 20);

    let outcome = config.rollback().await;
    assert!(
        matches!(outcome, Some(Outcome::RolledBack { from: 5, to: 2, .. })),
        "{outcome:?}"
    );
    assert_eq!(queue().await, 10);
    let outcome = config.rollback().await;
    assert!(
        matches!(outcome, Some(Outcome::RolledBack { from: 6, to: 1, .. })),
        "{outcome:?}"
    );
    assert_eq!(queue().await, first);

    let outcome = config.rollback().await;
    let Some(Outcome::Rejected { problems }) = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        [
            "no earlier good version to roll back to: every version kept before version 7 has its \
             configuration or was rolled back from"
        ]
    );
    assert_eq!(
        config.current().map(|v| v.version),
        Some(7),
        "nothing applied"
    );
    assert_eq!(queue().await, first);
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_service_vetoes_a_change_and_running_incarnations_see_accepted_ones_live() {
    let (rt, config, journal, svc) = start_with_handle(Fake::new("svc")).await;
    let since = journal.last_seq();
    let outcome = config
        .apply(
            format!("{BASE}[services.svc]\nqueue_capacity = 13\n"),
            Source::Api,
            false,
        )
        .await
        .expect("outcome");
    let Outcome::Rejected { problems } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        problems[0]
            .message
            .contains("svc: a queue of 13 is unlucky"),
        "{problems:?}"
    );
    assert_eq!(kinds(&journal, since), ["config_rejected"]);
    assert_eq!(svc.call(Req::QueueCapacity).await, Ok(1024), "vetoed");

    // An accepted change reaches the running incarnation while it runs: it is woken with the new
    // spec, and nothing restarts it.
    let told = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.call(|r| Req::NextSpec(Duration::from_secs(1), r)).await })
    };
    let outcome = config
        .apply(
            format!("{BASE}[services.svc]\nqueue_capacity = 77\n"),
            Source::Api,
            false,
        )
        .await
        .expect("outcome");
    assert!(
        matches!(outcome, Outcome::Applied { version: 2, .. }),
        "{outcome:?}"
    );
    assert_eq!(told.await.expect("join"), Ok(Some(77)));
    let snapshot = rt.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.service("svc").map(|s| s.generation),
        Some(1),
        "no restart"
    );
    rt.shutdown().await;
}

/// Promise: a configuration is applied whole or not at all. `a` accepts its part and, as `b`'s
/// dependency, would take its new spec first; `b` vetoes its own part, so `a` must see nothing.
#[tokio::test(start_paused = true)]
async fn a_configuration_is_applied_whole_or_not_at_all() {
    let Started {
        rt,
        config,
        journal,
        services,
    } = start_all(
        vec![Fake::new("a"), Fake::new("b").depends_on("a")],
        BASE,
        None,
    )
    .await;
    let a = &services[0];
    let spec_of = |snapshot: &runtime::Snapshot, name: &str| {
        let status = snapshot.service(name).expect("service");
        (
            serde_json::to_value(&*status.spec).expect("json"),
            status.generation,
        )
    };
    let before = spec_of(&rt.snapshot().await.expect("snapshot"), "a");
    let since = journal.last_seq();
    let watch = |a: &runtime::Handle<Req>| {
        let a = a.clone();
        tokio::spawn(async move { a.call(|r| Req::NextSpec(Duration::from_secs(1), r)).await })
    };
    let told = watch(a);
    let change = |b_queue: usize| {
        format!(
            "{BASE}[services.a]\nqueue_capacity = 20\n[services.b]\nqueue_capacity = {b_queue}\n"
        )
    };
    let outcome = config
        .apply(change(13), Source::Api, false)
        .await
        .expect("outcome");
    let Outcome::Rejected { problems } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("b: a queue of 13 is unlucky")),
        "{problems:?}"
    );
    assert_eq!(
        told.await.expect("join"),
        Ok(None),
        "a's incarnation was handed a spec from a rejected configuration"
    );
    assert_eq!(a.call(Req::QueueCapacity).await, Ok(1024));
    assert_eq!(
        spec_of(&rt.snapshot().await.expect("snapshot"), "a"),
        before
    );
    assert_eq!(kinds(&journal, since), ["config_rejected"]);
    let about_a: Vec<String> = journal
        .read(since, usize::MAX)
        .expect("read")
        .iter()
        .filter(|e| e.service.as_ref().is_some_and(|s| s.as_str() == "a"))
        .map(|e| format!("{:?}", e.event))
        .collect();
    assert_eq!(about_a, Vec::<String>::new());
    assert_eq!(config.history().len(), 1);

    // Without the veto, the same change reaches both.
    let told = watch(a);
    let outcome = config
        .apply(change(14), Source::Api, false)
        .await
        .expect("outcome");
    let Outcome::Applied { changed, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(changed, &["a", "b"]);
    assert_eq!(told.await.expect("join"), Ok(Some(20)));
    rt.shutdown().await;
}

/// Applies `change` on top of the running configuration and checks it is refused with one problem
/// at `path` saying it takes a restart, and that nothing changed.
async fn refused_until_restart(change: &str, path: &str) {
    let (rt, config, journal) = start(Fake::new("svc")).await;
    let since = journal.last_seq();
    let running = config.current().expect("a running version");
    let outcome = config
        .apply(format!("{BASE}{change}"), Source::Api, false)
        .await
        .expect("outcome");
    let Outcome::Rejected { problems } = &outcome else {
        panic!("{path}: {outcome:?}")
    };
    assert_eq!(
        problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
        [path],
        "{problems:?}"
    );
    assert!(
        problems[0].message.contains("takes a restart"),
        "{problems:?}"
    );
    assert_eq!(kinds(&journal, since), ["config_rejected"]);
    let current = config.current().expect("a running version");
    assert_eq!(
        (current.version, current.hash, config.history().len()),
        (running.version, running.hash, 1)
    );
    rt.shutdown().await;
}

/// Promise: `[testing]` cannot be changed by a hot apply (fault injection is a privilege switch).
#[tokio::test(start_paused = true)]
async fn testing_cannot_be_changed_by_a_hot_apply() {
    refused_until_restart("[testing]\nfault_injection = true\n", "testing").await;
    refused_until_restart("[testing.services.extra]\nwork = \"1ms\"\n", "testing").await;
}

/// Promise: `runtime.listen` cannot be changed by a hot apply.
#[tokio::test(start_paused = true)]
async fn listen_cannot_be_changed_by_a_hot_apply() {
    refused_until_restart("listen = \"127.0.0.1:9999\"\n", "runtime.listen").await;
}

/// Promise: `runtime.data_dir` cannot be changed by a hot apply.
#[tokio::test(start_paused = true)]
async fn data_dir_cannot_be_changed_by_a_hot_apply() {
    refused_until_restart("data_dir = \"elsewhere\"\n", "runtime.data_dir").await;
}

/// Promise: `runtime.monitor_interval` cannot be changed by a hot apply.
#[tokio::test(start_paused = true)]
async fn monitor_interval_cannot_be_changed_by_a_hot_apply() {
    refused_until_restart("monitor_interval = \"3s\"\n", "runtime.monitor_interval").await;
}

/// Promise: the HTTP server's limits cannot be changed by a hot apply (the server is built with
/// them when it starts listening), each refused with its path.
#[tokio::test(start_paused = true)]
async fn the_servers_limits_cannot_be_changed_by_a_hot_apply() {
    for (change, path) in [
        (
            "header_read_timeout = \"3s\"\n",
            "runtime.header_read_timeout",
        ),
        ("body_read_timeout = \"3s\"\n", "runtime.body_read_timeout"),
        ("request_timeout = \"90s\"\n", "runtime.request_timeout"),
        ("max_connections = 7\n", "runtime.max_connections"),
        (
            "max_connections_per_peer = 7\n",
            "runtime.max_connections_per_peer",
        ),
        ("reserved_fds = 77\n", "runtime.reserved_fds"),
        ("metrics_auth = true\n", "runtime.metrics_auth"),
    ] {
        refused_until_restart(change, path).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_running_incarnation_reads_the_new_spec_without_a_restart() {
    let (rt, handle, _journal, svc) = start_with_handle(Fake::new("svc")).await;
    assert_eq!(svc.call(support::Req::QueueCapacity).await, Ok(1024));
    let outcome = handle
        .apply(
            format!("{BASE}[services.svc]\nqueue_capacity = 77\n"),
            Source::Api,
            false,
        )
        .await;
    assert!(
        matches!(outcome, Some(Outcome::Applied { .. })),
        "{outcome:?}"
    );
    assert_eq!(svc.call(support::Req::QueueCapacity).await, Ok(77));
    let snapshot = rt.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.service("svc").map(|s| s.generation),
        Some(1),
        "no restart"
    );
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_change_the_service_cannot_take_live_restarts_it() {
    let (rt, config, journal, svc) = start_with_handle(Fake::new("svc")).await;
    let since = journal.last_seq();
    let outcome = config
        .apply(
            format!("{BASE}[services.svc]\ncall_timeout = \"7s\"\n"),
            Source::Api,
            true,
        )
        .await
        .expect("outcome");
    assert!(
        matches!(outcome, Outcome::Applied { version: 2, .. }),
        "{outcome:?}"
    );
    let log: Vec<String> = journal
        .read(since, usize::MAX)
        .expect("read")
        .iter()
        .filter_map(|e| {
            support::brief(e).or_else(|| {
                serde_json::to_value(&e.event)
                    .ok()
                    .map(|v| v["kind"].to_string())
            })
        })
        .collect();
    assert!(
        log.iter().any(|l| l.contains("Reconfigured { live: false")),
        "{log:#?}"
    );
    assert!(
        log.contains(&"svc: starting[0] restart".to_string()),
        "{log:#?}"
    );
    assert_eq!(svc.call(|r| support::Req::Echo(1, r)).await, Ok(1));
    let snapshot = rt.snapshot().await.expect("snapshot");
    let status = snapshot.service("svc").expect("svc");
    assert_eq!(
        (status.generation, status.spec.call_timeout),
        (2, Duration::from_secs(7))
    );
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_service_disabled_at_start_does_not_block_later_versions() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let base = Fake::new("svc");
    let optional = Fake::new("opt").kind(runtime::Kind::Optional);
    let catalog: Vec<Spec> = vec![
        runtime::Service::spec(&base),
        runtime::Service::spec(&optional),
    ];
    b.add(base);
    b.disable(support::name("opt"));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let text = format!("{BASE}[services.opt]\nenabled = false\n");
    let config = Config::parse(&text, &catalog).expect("config");
    let (handle, _task) = Controller::spawn(
        rt.client(),
        catalog,
        text.clone(),
        config,
        std::sync::Arc::new(|_: &mut Config| {}),
        CancellationToken::new(),
    );
    let next = format!("{text}[services.svc]\nqueue_capacity = 9\n");
    let outcome = handle
        .apply(next, Source::Api, true)
        .await
        .expect("outcome");
    assert!(
        matches!(outcome, Outcome::Applied { version: 2, .. }),
        "{outcome:?}"
    );
    rt.shutdown().await;
}

/// A config long enough to watch for monitor signals.
const WATCHED: &str = "[runtime]\nconfig_watch = \"30s\"\n";

/// Sends `Slow(work)` requests one after another, with `work` read from `ms` before each.
fn load(svc: runtime::Handle<Req>, ms: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let work = Duration::from_millis(ms.load(Ordering::Relaxed));
            let _ = svc.call(|r| Req::Slow(work, r)).await;
        }
    })
}

fn spec_json(snapshot: &runtime::Snapshot, service: &str) -> serde_json::Value {
    serde_json::to_value(&*snapshot.service(service).expect("service").spec).expect("json")
}

/// The journal says version 2 was rolled back to 1 for `reason`, and `svc` runs on its old spec again.
async fn back_on_version_1(
    rt: &Runtime,
    journal: &Journal,
    since: u64,
    reason: &str,
    spec_before: &serde_json::Value,
) {
    let rolled_back: Vec<(u64, u64, String)> = journal
        .read(since, usize::MAX)
        .expect("read")
        .iter()
        .filter_map(|e| match &e.event {
            Event::ConfigRolledBack { from, to, reason } => Some((*from, *to, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(rolled_back, [(2, 1, reason.to_owned())]);
    let snapshot = rt.snapshot().await.expect("snapshot");
    assert_eq!(
        &spec_json(&snapshot, "svc"),
        spec_before,
        "the earlier spec is back"
    );
}

/// Promise: a configuration is rolled back when readiness is worse at the end of its watch window.
/// The new call timeout restarts the service (see `Fake::takes_live`) into an incarnation that runs
/// degraded; nothing fails, so only the readiness at the end of the window can undo it.
#[tokio::test(start_paused = true)]
async fn a_config_is_rolled_back_when_readiness_ends_worse_than_before() {
    let fake = Fake::new("svc").script(&[Behaviour::Run, Behaviour::Degraded, Behaviour::Run]);
    let (rt, config, journal, svc) = start_with_handle(fake).await;
    let before = spec_json(&rt.snapshot().await.expect("snapshot"), "svc");
    let since = journal.last_seq();
    let t = Instant::now();
    let outcome = config
        .apply(
            format!("{BASE}[services.svc]\ncall_timeout = \"7s\"\n"),
            Source::Api,
            true,
        )
        .await
        .expect("outcome");
    let Outcome::RolledBack {
        from: 2,
        to: 1,
        reason,
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.starts_with("the runtime is Degraded at the end of the watch window (was Ready)"),
        "{reason}"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(5),
        "judged at the end of the window"
    );
    back_on_version_1(&rt, &journal, since, reason, &before).await;
    // Rolling back restarted it again, into a healthy incarnation.
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    assert_eq!(svc.call(Req::Generation).await, Ok(3));
    rt.shutdown().await;
}

/// Promise: a configuration is rolled back when an anomaly is raised in its watch window.
#[tokio::test(start_paused = true)]
async fn a_config_is_rolled_back_when_an_anomaly_is_raised_in_its_watch_window() {
    let Started {
        rt,
        config,
        journal,
        services,
    } = start_all(
        vec![Fake::new("svc")],
        WATCHED,
        Some(Duration::from_secs(1)),
    )
    .await;
    let svc = services[0].clone();
    let ms = Arc::new(AtomicU64::new(8));
    let driver = load(svc.clone(), ms.clone());
    // The monitor learns the service's latency first.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let before = spec_json(&rt.snapshot().await.expect("snapshot"), "svc");
    let since = journal.last_seq();
    let apply = {
        let config = config.clone();
        tokio::spawn(async move {
            config
                .apply(
                    format!("{WATCHED}[services.svc]\nqueue_capacity = 50\n"),
                    Source::Api,
                    true,
                )
                .await
        })
    };
    journal
        .wait_for(since, Duration::from_secs(1), |e| {
            matches!(e.event, Event::ConfigApplied { version: 2, .. })
        })
        .await
        .expect("applied");
    let t = Instant::now();
    // Within the watch window, the service's latency steps up.
    ms.store(30, Ordering::Relaxed);
    let outcome = apply.await.expect("join").expect("outcome");
    let Outcome::RolledBack {
        from: 2,
        to: 1,
        reason,
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.starts_with("anomaly on svc: latency_p90_ms is "),
        "{reason}"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "acted on at once");
    back_on_version_1(&rt, &journal, since, reason, &before).await;
    driver.abort();
    assert_eq!(svc.call(Req::QueueCapacity).await, Ok(1024));
    rt.shutdown().await;
}

/// Promise: a configuration is rolled back when a crash loop is found in its watch window. The
/// service crashed three times just before the apply; the monitor classifies that as a crash loop at
/// its next sample, which falls inside the window. (Crashes inside the window roll back at once, as
/// failures, before any crash loop could be found.)
#[tokio::test(start_paused = true)]
async fn a_config_is_rolled_back_when_a_crash_loop_is_found_in_its_watch_window() {
    let fake = Fake::new("svc").spec_mut(|s| {
        s.recovery.backoff.initial = Duration::from_millis(10);
        s.anomaly.crash_loop_count = 3;
    });
    let Started {
        rt,
        config,
        journal,
        services,
    } = start_all(vec![fake], WATCHED, Some(Duration::from_secs(10))).await;
    let svc = services[0].clone();
    for _ in 0..3 {
        let since = journal.last_seq();
        rt.inject_fault(&support::name("svc"), runtime::journal::Fault::Panic)
            .await
            .expect("fault");
        journal
            .wait_for(since, Duration::from_secs(1), |e| {
                matches!(e.event, Event::Up { .. })
            })
            .await
            .expect("back up");
    }
    let before = spec_json(&rt.snapshot().await.expect("snapshot"), "svc");
    let since = journal.last_seq();
    let outcome = config
        .apply(
            format!("{WATCHED}[services.svc]\nqueue_capacity = 50\n"),
            Source::Api,
            true,
        )
        .await
        .expect("outcome");
    let Outcome::RolledBack {
        from: 2,
        to: 1,
        reason,
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(reason, "svc is in a crash loop (panic)");
    back_on_version_1(&rt, &journal, since, reason, &before).await;
    assert_eq!(svc.call(Req::QueueCapacity).await, Ok(1024));
    rt.shutdown().await;
}

/// Promise: while a `hold_rollout` anomaly is raised, new configurations are refused; once it
/// clears, they are applied again.
#[tokio::test(start_paused = true)]
async fn hold_rollout_refuses_new_configs_while_its_anomaly_is_raised() {
    let fake = Fake::new("svc").spec_mut(|s| {
        s.anomaly.action = runtime::anomaly::AnomalyAction::HoldRollout;
    });
    let Started {
        rt,
        config,
        journal,
        services,
    } = start_all(vec![fake], BASE, Some(Duration::from_secs(1))).await;
    let svc = services[0].clone();
    let ms = Arc::new(AtomicU64::new(8));
    let driver = load(svc.clone(), ms.clone());
    tokio::time::sleep(Duration::from_secs(30)).await;
    ms.store(30, Ordering::Relaxed);
    let mut anomalies = rt.anomalies();
    tokio::time::timeout(
        Duration::from_secs(30),
        anomalies.wait_for(|a| !a.is_empty()),
    )
    .await
    .expect("an anomaly within 30 s")
    .expect("monitor");
    let since = journal.last_seq();
    let text = format!("{BASE}[services.svc]\nqueue_capacity = 50\n");
    let outcome = config
        .apply(text.clone(), Source::Api, false)
        .await
        .expect("outcome");
    let Outcome::Rejected { problems } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "services.svc");
    assert!(
        problems[0]
            .message
            .starts_with("rollouts are held while the latency_p90_ms anomaly on svc lasts"),
        "{problems:?}"
    );
    assert_eq!(kinds(&journal, since), ["config_rejected"]);
    assert_eq!(config.history().len(), 1);

    ms.store(8, Ordering::Relaxed);
    tokio::time::timeout(
        Duration::from_secs(60),
        anomalies.wait_for(|a| a.is_empty()),
    )
    .await
    .expect("cleared within 60 s")
    .expect("monitor");
    let outcome = config
        .apply(text, Source::Api, false)
        .await
        .expect("outcome");
    assert!(
        matches!(outcome, Outcome::Applied { version: 2, .. }),
        "{outcome:?}"
    );
    driver.abort();
    rt.shutdown().await;
}
