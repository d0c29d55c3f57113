//! Hot configuration under a paused clock: applied, rejected, rolled back, serialized.

mod support;

use std::time::Duration;

use runtime::config::Config;
use runtime::journal::Event;
use runtime::reconfig::{Controller, Handle, Outcome, Source, Status};
use runtime::{Builder, Journal, Runtime, RuntimeLevel, Spec};
use support::{Behaviour, Fake};
use tokio_util::sync::CancellationToken;

const BASE: &str = "[runtime]\nconfig_watch = \"5s\"\n";

async fn start(fake: Fake) -> (Runtime, Handle, Journal) {
    let (rt, handle, journal, _) = start_with_handle(fake).await;
    (rt, handle, journal)
}

async fn start_with_handle(
    fake: Fake,
) -> (Runtime, Handle, Journal, runtime::Handle<support::Req>) {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let catalog: Vec<Spec> = vec![runtime::Service::spec(&fake)];
    let svc = b.add(fake);
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let config = Config::parse(BASE, &catalog).expect("config");
    let (handle, _task) = Controller::spawn(
        rt.client(),
        catalog,
        BASE.into(),
        config,
        std::sync::Arc::new(|_: &mut Config| {}),
        CancellationToken::new(),
    );
    (rt, handle, journal, svc)
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

#[tokio::test(start_paused = true)]
async fn a_service_vetoes_a_change_and_running_incarnations_see_accepted_ones_live() {
    let (rt, config, journal) = start(Fake::new("svc")).await;
    let handle = rt.snapshot().await.expect("snapshot");
    assert_eq!(handle.service("svc").map(|s| s.generation), Some(1));
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
    rt.shutdown().await;
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
