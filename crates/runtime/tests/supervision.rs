//! The supervisor under a paused clock, with scriptable fake services; every assertion reads the
//! journal or a reply, never a sleep.

mod support;

use std::time::Duration;

use runtime::journal::{Cause, Entry, Event, ExitOutcome, Fault};
use runtime::{
    Builder, CallError, Journal, Kind, Mode, OnExhausted, RuntimeLevel, State, Strategy,
};
use support::{Behaviour, Fake, Req, brief, name};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(600);

async fn wait(journal: &Journal, pred: impl FnMut(&Entry) -> bool) -> std::sync::Arc<Entry> {
    journal
        .wait_for(0, WAIT, pred)
        .await
        .expect("the awaited journal event")
}

fn is(service: &str, pred: impl Fn(&Event) -> bool) -> impl FnMut(&Entry) -> bool {
    let service = name(service);
    move |e| e.service.as_ref() == Some(&service) && pred(&e.event)
}

fn briefs(journal: &Journal) -> Vec<String> {
    journal
        .read(0, usize::MAX)
        .expect("read")
        .iter()
        .filter_map(|e| brief(e))
        .collect()
}

fn position(log: &[String], item: &str) -> usize {
    log.iter()
        .position(|l| l == item)
        .unwrap_or_else(|| panic!("{item:?} not in {log:#?}"))
}

#[tokio::test(start_paused = true)]
async fn starts_in_dependency_order_and_stops_in_reverse() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(Fake::new("crypto"));
    b.add(Fake::new("storage").depends_on("crypto"));
    b.add(
        Fake::new("account")
            .depends_on("crypto")
            .depends_on("storage"),
    );
    b.add(Fake::new("computation").depends_on("storage"));
    let rt = b.start().expect("start");
    let mut ready = rt.readiness();
    ready
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    rt.shutdown().await;
    let log = briefs(&journal);
    // A service starts only after every dependency is up.
    assert!(position(&log, "crypto: up") < position(&log, "storage: starting[0]"));
    assert!(position(&log, "storage: up") < position(&log, "account: starting[0]"));
    assert!(position(&log, "storage: up") < position(&log, "computation: starting[0]"));
    // Dependents stop before their dependencies.
    assert!(position(&log, "account: stopped") < position(&log, "storage: stopping"));
    assert!(position(&log, "computation: stopped") < position(&log, "storage: stopping"));
    assert!(position(&log, "storage: stopped") < position(&log, "crypto: stopping"));
}

/// Promise: the supervisor's journal entries, which it appends without chaining, are chained by
/// the runtime itself: a live subscriber and a bus subscriber see a restart's entries, in order,
/// without anyone reading the journal (a read would chain them, so this test never reads).
#[tokio::test(start_paused = true)]
async fn a_restarts_entries_reach_live_subscribers_without_anyone_reading_the_journal() {
    let journal = Journal::in_memory();
    let mut live = journal.subscribe();
    let mut b = Builder::new(journal.clone());
    b.add(Fake::new("svc"));
    let mut events = b
        .bus()
        .subscribe::<runtime::ServiceEvent>(name("watcher"), 256);
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    rt.inject_fault(&name("svc"), Fault::Panic)
        .await
        .expect("fault");
    let mut seen = Vec::new();
    let mut about_svc = Vec::new();
    let mut last = 0;
    loop {
        let entry = tokio::time::timeout(WAIT, live.recv())
            .await
            .expect("entries arrive without a reader")
            .expect("the live stream");
        assert_eq!(entry.seq, last + 1, "in sequence, none missed");
        last = entry.seq;
        if entry.service == Some(name("svc")) {
            seen.extend(brief(&entry));
            about_svc.push(entry.seq);
        }
        if matches!(entry.event, Event::Starting { restart: true, .. }) {
            break;
        }
    }
    assert!(
        seen.ends_with(&[
            "svc: fault Panic".to_owned(),
            "svc: exited[0](panic)".to_owned(),
            "svc: backoff 100ms".to_owned(),
            "svc: starting[0] restart".to_owned(),
        ]),
        "{seen:#?}"
    );
    // The bus's subscriber was told of the same entries about the service, in the same order.
    let mut told = Vec::new();
    while let Some(runtime::ServiceEvent(e)) = events.try_recv() {
        told.push(e.seq);
    }
    assert!(told.len() >= about_svc.len(), "{told:?} {about_svc:?}");
    assert_eq!(told[..about_svc.len()], about_svc[..]);
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn panic_is_restarted_with_backoff_and_queued_requests_are_served() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc").script(&[Behaviour::Run, Behaviour::Fail, Behaviour::Run]));
    let rt = b.start().expect("start");
    wait(&journal, is("svc", |e| matches!(e, Event::Up { .. }))).await;
    assert_eq!(svc.call(|r| Req::Echo(7, r)).await, Ok(7));

    rt.inject_fault(&name("svc"), Fault::Panic)
        .await
        .expect("fault");
    // The request sent while the service is down waits in the mailbox and is served after recovery.
    let answer = svc.call(|r| Req::Echo(8, r)).await;
    assert_eq!(answer, Ok(8));
    let log = briefs(&journal);
    let tail: Vec<&str> = log
        .iter()
        .skip_while(|l| !l.contains("fault"))
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        tail[..7],
        [
            "svc: fault Panic",
            "svc: exited[0](panic)",
            "svc: backoff 100ms",
            "svc: starting[0] restart",
            "svc: exited[0](error)",
            "svc: backoff 200ms",
            "svc: starting[0] restart",
        ]
    );
    let snapshot = rt.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.service("svc").map(|s| (s.state, s.restarts)),
        Some((State::Running, 2))
    );
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hang_is_detected_within_interval_times_threshold_plus_timeout() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(Fake::new("svc").script(&[Behaviour::Hang]).spec_mut(|s| {
        s.health.interval = Duration::from_secs(1);
        s.health.timeout = Duration::from_millis(200);
        s.health.failure_threshold = 3;
    }));
    let rt = b.start().expect("start");
    let start = Instant::now();
    let exited = wait(&journal, is("svc", |e| matches!(e, Event::Exited { .. }))).await;
    let took = start.elapsed();
    assert!(
        matches!(
            exited.event,
            Event::Exited {
                outcome: ExitOutcome::Hung { missed: 3 },
                ..
            }
        ),
        "{exited:?}"
    );
    assert!(
        took <= Duration::from_millis(3200),
        "detected after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(2200),
        "detected too early, after {took:?}"
    );
    wait(&journal, |e| {
        e.service.is_some() && matches!(e.event, Event::Up { .. }) && e.generation == Some(2)
    })
    .await;
    rt.shutdown().await;
}

/// An injected hang holds even in a service that polls `recv` beside other work and drops the
/// pending `recv` when the other work wins: every later `recv` waits forever too, so the probe
/// finds the incarnation hung (the chaos test found computation's hang undone this way).
#[tokio::test(start_paused = true)]
async fn an_injected_hang_holds_when_the_service_drops_its_pending_recv() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(Fake::new("svc").script(&[Behaviour::RecvBesideTimer]));
    let rt = b.start().expect("start");
    wait(&journal, is("svc", |e| matches!(e, Event::Up { .. }))).await;
    rt.inject_fault(&name("svc"), Fault::Hang)
        .await
        .expect("injected");
    let exited = wait(&journal, is("svc", |e| matches!(e, Event::Exited { .. }))).await;
    assert!(
        matches!(
            exited.event,
            Event::Exited {
                outcome: ExitOutcome::Hung { .. },
                ..
            }
        ),
        "{exited:?}"
    );
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restart_intensity_fails_a_core_service_and_the_runtime_is_not_ready() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(
        Fake::new("core")
            .script(&[Behaviour::Fail; 10])
            .spec_mut(|s| s.recovery.max_restarts = 3),
    );
    b.add(
        Fake::new("opt")
            .kind(Kind::Optional)
            .script(&[Behaviour::Panic; 10])
            .spec_mut(|s| {
                s.recovery.max_restarts = 2;
                s.recovery.on_exhausted = Some(OnExhausted::StayFailed);
            }),
    );
    let rt = b.start().expect("start");
    wait(&journal, is("core", |e| matches!(e, Event::Failed { .. }))).await;
    // A core service escalates by default: the runtime says so, and stays so.
    let escalated = wait(
        &journal,
        is("core", |e| matches!(e, Event::Escalated { .. })),
    )
    .await;
    let mut r = rt.readiness();
    let escalation = r
        .wait_for(|r| r.escalation.is_some())
        .await
        .expect("readiness")
        .escalation
        .clone()
        .expect("escalated");
    assert!(
        escalation.starts_with("core: ") && escalation.contains("gave up after 3 restarts"),
        "{escalation}"
    );
    assert!(
        matches!(&escalated.event, Event::Escalated { reason } if *reason == escalation),
        "{escalated:?}"
    );
    wait(&journal, is("opt", |e| matches!(e, Event::Failed { .. }))).await;
    let log = briefs(&journal);
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("core: starting"))
            .count(),
        4,
        "{log:#?}"
    );
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("opt: starting"))
            .count(),
        3,
        "{log:#?}"
    );
    let readiness = rt.readiness().borrow().clone();
    assert_eq!(readiness.level, RuntimeLevel::NotReady);
    assert!(
        readiness
            .reasons
            .iter()
            .any(|r| r.contains("core (core) is failed") && r.contains("gave up after 3 restarts"))
    );
    assert!(
        readiness
            .reasons
            .iter()
            .any(|r| r.contains("opt (optional) is failed"))
    );
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_optional_service_only_degrades_the_runtime() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(Fake::new("core"));
    b.add(
        Fake::new("opt")
            .kind(Kind::Optional)
            .script(&[Behaviour::Fail; 10])
            .spec_mut(|s| {
                s.recovery.max_restarts = 1;
                s.recovery.on_exhausted = Some(OnExhausted::StayFailed);
            }),
    );
    let rt = b.start().expect("start");
    wait(&journal, is("opt", |e| matches!(e, Event::Failed { .. }))).await;
    let mut r = rt.readiness();
    let readiness = r
        .wait_for(|r| r.level != RuntimeLevel::NotReady)
        .await
        .expect("readiness")
        .clone();
    assert_eq!(readiness.level, RuntimeLevel::Degraded);
    assert_eq!(readiness.escalation, None, "only `escalate` escalates");
    rt.shutdown().await;
}

/// An optional service retries by default once its restarts are used up: each restart after the
/// backoff's maximum, until it serves again; it is never failed and nothing escalates.
#[tokio::test(start_paused = true)]
async fn past_its_restarts_an_optional_service_retries_at_the_backoff_ceiling_until_it_serves() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(Fake::new("core"));
    b.add(
        Fake::new("opt")
            .kind(Kind::Optional)
            .script(&[Behaviour::Panic; 6])
            .spec_mut(|s| {
                s.recovery.max_restarts = 2;
                s.recovery.backoff.max = Duration::from_secs(7);
            }),
    );
    let rt = b.start().expect("start");
    // Six panics, then it runs: up after the last one.
    wait(&journal, is("opt", |e| matches!(e, Event::Up { .. }))).await;
    let ceiling = Duration::from_secs(7).as_millis() as u64;
    let delays: Vec<u64> = journal
        .read(0, usize::MAX)
        .expect("read")
        .iter()
        .filter(|e| e.service.as_ref().map(|n| n.as_str()) == Some("opt"))
        .filter_map(|e| match e.event {
            Event::BackoffScheduled { delay_ms, .. } => Some(delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 6, "{delays:?}");
    assert!(delays[..2].iter().all(|&d| d < ceiling), "{delays:?}");
    assert!(delays[2..].iter().all(|&d| d == ceiling), "{delays:?}");
    let log = briefs(&journal);
    assert!(
        !log.iter()
            .any(|l| l.starts_with("opt: failed") || l.contains("escalated")),
        "{log:#?}"
    );
    assert_eq!(rt.readiness().borrow().escalation, None);
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failover_keeps_serving_from_the_healthy_replica() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc").spec_mut(|s| {
        s.replicas.min = 2;
        s.replicas.max = 2;
        s.recovery.strategy = Strategy::Failover;
        s.recovery.backoff.initial = Duration::from_secs(5);
    }));
    let rt = b.start().expect("start");
    wait(
        &journal,
        is("svc", |e| matches!(e, Event::Up { replicas: 2 })),
    )
    .await;
    let since = journal.last_seq();
    rt.inject_fault(&name("svc"), Fault::Panic)
        .await
        .expect("fault");
    journal
        .wait_for(
            since,
            WAIT,
            is("svc", |e| matches!(e, Event::Failover { serving: 1, .. })),
        )
        .await
        .expect("failover");
    // During the five-second backoff of the failed replica, the other one answers at once.
    let t = Instant::now();
    for i in 0..10 {
        assert_eq!(svc.call(|r| Req::Echo(i, r)).await, Ok(i));
    }
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(
        rt.snapshot()
            .await
            .expect("snapshot")
            .service("svc")
            .map(|s| s.state),
        Some(State::Running)
    );
    journal
        .wait_for(
            since,
            WAIT,
            is("svc", |e| matches!(e, Event::Ready { replica: 0 })),
        )
        .await
        .expect("replica back");
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn degrade_restarts_in_degraded_mode_and_tells_dependents() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc").spec_mut(|s| s.recovery.strategy = Strategy::Degrade));
    b.add(Fake::new("user").depends_on("svc"));
    let mut events = b
        .bus()
        .subscribe::<runtime::ServiceEvent>(name("user"), 256);
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    rt.inject_fault(&name("svc"), Fault::Error)
        .await
        .expect("fault");
    wait(&journal, is("svc", |e| matches!(e, Event::Up { .. }))).await;
    let up_again = journal
        .wait_for(0, WAIT, |e| {
            matches!(
                e.event,
                Event::Starting {
                    degraded_mode: true,
                    ..
                }
            )
        })
        .await;
    assert!(up_again.is_some());
    assert!(matches!(
        svc.call(Req::Mode).await,
        Ok(Mode::Degraded { .. })
    ));
    let snapshot = rt.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.service("svc").map(|s| s.state),
        Some(State::Degraded)
    );
    assert_eq!(rt.readiness().borrow().level, RuntimeLevel::Degraded);
    // The dependent's subscription saw the degradation.
    let mut saw = false;
    while let Some(runtime::ServiceEvent(e)) = events.try_recv() {
        if e.service.as_ref().map(|s| s.as_str()) == Some("svc")
            && matches!(
                &e.event,
                Event::HealthChanged {
                    health: runtime::Health::Degraded { .. }
                }
            )
        {
            saw = true;
        }
    }
    assert!(saw, "dependent was not told of the degradation");
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn manual_recovery_waits_for_an_operator() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc").spec_mut(|s| s.recovery.strategy = Strategy::Manual));
    let rt = b.start().expect("start");
    wait(&journal, is("svc", |e| matches!(e, Event::Up { .. }))).await;
    rt.inject_fault(&name("svc"), Fault::Panic)
        .await
        .expect("fault");
    let failed = wait(&journal, is("svc", |e| matches!(e, Event::Failed { .. }))).await;
    assert!(format!("{:?}", failed.event).contains("recovery is manual"));
    // Nothing restarts it by itself; calls fail fast.
    assert!(matches!(
        svc.call(|r| Req::Echo(1, r)).await,
        Err(CallError::Unavailable {
            state: State::Failed,
            ..
        })
    ));
    let answer = rt.start(&name("svc")).await.expect("start");
    assert!(answer.accepted);
    assert_eq!(svc.call(|r| Req::Echo(2, r)).await, Ok(2));
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn scope_dependents_restarts_dependents_after_the_service() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(Fake::new("base").spec_mut(|s| s.recovery.scope = runtime::spec::Scope::Dependents));
    b.add(Fake::new("mid").depends_on("base"));
    b.add(Fake::new("top").depends_on("mid"));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let since = journal.last_seq();
    rt.inject_fault(&name("base"), Fault::Panic)
        .await
        .expect("fault");
    journal
        .wait_for(since, WAIT, is("top", |e| matches!(e, Event::Up { .. })))
        .await
        .expect("top back");
    let log: Vec<String> = journal
        .read(since, usize::MAX)
        .expect("read")
        .iter()
        .filter_map(|e| brief(e))
        .collect();
    assert!(
        position(&log, "top: stopped") < position(&log, "base: starting[0] restart"),
        "{log:#?}"
    );
    assert!(
        position(&log, "mid: stopped") < position(&log, "base: up"),
        "{log:#?}"
    );
    assert!(position(&log, "base: up") < position(&log, "mid: starting[0] restart"));
    assert!(position(&log, "mid: up") < position(&log, "top: starting[0] restart"));
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn in_flight_requests_get_a_retryable_error_and_a_full_queue_answers_at_once() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc").spec_mut(|s| s.queue_capacity = 2));
    let rt = b.start().expect("start");
    wait(&journal, is("svc", |e| matches!(e, Event::Up { .. }))).await;
    let err = svc.call(Req::Crash).await.expect_err("crash");
    assert!(matches!(err, CallError::Interrupted { .. }));
    assert!(err.is_retryable());
    // Fill the queue while the service is in backoff: the third call is refused at once.
    wait(
        &journal,
        is("svc", |e| matches!(e, Event::BackoffScheduled { .. })),
    )
    .await;
    let a = svc.clone();
    let b2 = svc.clone();
    let q1 = tokio::spawn(async move { a.call(|r| Req::Echo(1, r)).await });
    let q2 = tokio::spawn(async move { b2.call(|r| Req::Echo(2, r)).await });
    tokio::task::yield_now().await;
    assert_eq!(svc.queue_depth(), 2);
    let refused = svc.call(|r| Req::Echo(3, r)).await.expect_err("full");
    assert!(matches!(refused, CallError::QueueFull { .. }) && refused.is_retryable());
    assert_eq!(q1.await.expect("join"), Ok(1));
    assert_eq!(q2.await.expect("join"), Ok(2));
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn operator_stop_takes_dependents_first_and_start_brings_dependencies() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(Fake::new("a"));
    b.add(Fake::new("b").depends_on("a"));
    b.add(Fake::new("c").depends_on("b"));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let since = journal.last_seq();
    let answer = rt.stop(&name("a")).await.expect("stop");
    assert!(
        answer.accepted && answer.message.contains("2 dependent"),
        "{answer:?}"
    );
    journal
        .wait_for(since, WAIT, is("a", |e| matches!(e, Event::Stopped { .. })))
        .await
        .expect("a stopped");
    let log: Vec<String> = journal
        .read(since, usize::MAX)
        .expect("read")
        .iter()
        .filter_map(|e| brief(e))
        .collect();
    assert!(position(&log, "c: stopped") < position(&log, "b: stopping"));
    assert!(position(&log, "b: stopped") < position(&log, "a: stopping"));
    // A second stop changes nothing.
    assert!(!rt.stop(&name("a")).await.expect("stop").accepted);

    let since = journal.last_seq();
    let answer = rt.start(&name("c")).await.expect("start");
    assert!(answer.accepted);
    journal
        .wait_for(since, WAIT, is("c", |e| matches!(e, Event::Up { .. })))
        .await
        .expect("c up");
    let log: Vec<String> = journal
        .read(since, usize::MAX)
        .expect("read")
        .iter()
        .filter_map(|e| brief(e))
        .collect();
    assert!(position(&log, "a: up") < position(&log, "b: starting[0] restart"));
    assert!(position(&log, "b: up") < position(&log, "c: starting[0] restart"));
    assert!(matches!(
        rt.stop(&name("nope")).await,
        Err(runtime::Error::UnknownService(_))
    ));
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restart_during_backoff_is_answered_with_the_state_and_starts_nothing_twice() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(
        Fake::new("svc")
            .script(&[Behaviour::Run, Behaviour::Run])
            .spec_mut(|s| {
                s.recovery.backoff.initial = Duration::from_secs(10);
                s.recovery.backoff.max = Duration::from_secs(10);
            }),
    );
    let rt = b.start().expect("start");
    wait(&journal, is("svc", |e| matches!(e, Event::Up { .. }))).await;
    rt.inject_fault(&name("svc"), Fault::Panic)
        .await
        .expect("fault");
    wait(
        &journal,
        is("svc", |e| matches!(e, Event::BackoffScheduled { .. })),
    )
    .await;
    let answer = rt.restart(&name("svc")).await.expect("restart");
    assert!(!answer.accepted);
    assert_eq!(answer.state, State::Backoff);
    let since = journal.last_seq();
    journal
        .wait_for(since, WAIT, is("svc", |e| matches!(e, Event::Up { .. })))
        .await
        .expect("back up");
    let starts = briefs(&journal)
        .iter()
        .filter(|l| l.starts_with("svc: starting"))
        .count();
    assert_eq!(starts, 2);
    // A restart of a running service replaces its incarnation.
    let answer = rt.restart(&name("svc")).await.expect("restart");
    assert!(answer.accepted);
    journal
        .wait_for(since, WAIT, |e| {
            e.generation == Some(3) && matches!(e.event, Event::Up { .. })
        })
        .await
        .expect("gen 3");
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_incarnation_that_ignores_stop_is_aborted_after_its_grace() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(
        Fake::new("svc")
            .script(&[Behaviour::IgnoreStop])
            .spec_mut(|s| s.shutdown_grace = Duration::from_secs(3)),
    );
    let rt = b.start().expect("start");
    wait(&journal, is("svc", |e| matches!(e, Event::Up { .. }))).await;
    let t = Instant::now();
    rt.shutdown().await;
    assert_eq!(t.elapsed(), Duration::from_secs(3));
    let log = briefs(&journal);
    assert!(
        log.contains(&"svc: exited[0](aborted)".to_string()),
        "{log:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_that_never_becomes_ready_is_restarted_after_its_start_timeout() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(
        Fake::new("svc")
            .script(&[Behaviour::NeverReady])
            .spec_mut(|s| s.health.start_timeout = Duration::from_secs(4)),
    );
    let rt = b.start().expect("start");
    let exited = wait(&journal, is("svc", |e| matches!(e, Event::Exited { .. }))).await;
    assert!(matches!(
        exited.event,
        Event::Exited {
            outcome: ExitOutcome::StartTimeout,
            ..
        }
    ));
    wait(&journal, is("svc", |e| matches!(e, Event::Up { .. }))).await;
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn extensions_register_while_running_and_are_found_by_capability() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(Fake::new("base").spec_mut(|s| s.capabilities.push(runtime::Capability("kv".into()))));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let ext = rt
        .register(
            Fake::new("ext")
                .kind(Kind::Extension)
                .depends_on("base")
                .spec_mut(|s| {
                    s.capabilities.push(runtime::Capability("kv".into()));
                }),
        )
        .await
        .expect("register");
    wait(&journal, is("ext", |e| matches!(e, Event::Up { .. }))).await;
    assert_eq!(ext.call(|r| Req::Echo(5, r)).await, Ok(5));
    let snapshot = rt.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.offering("kv"), vec![name("base"), name("ext")]);
    assert!(snapshot.offering("nothing").is_empty());
    // A cycle or an unknown dependency is refused, and the running set is untouched.
    let err = rt
        .register(Fake::new("bad").depends_on("ghost"))
        .await
        .expect_err("unknown dep");
    assert!(
        err.to_string()
            .contains("bad depends on ghost, which is not registered"),
        "{err}"
    );
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cycle_is_refused_with_its_path() {
    let mut b = Builder::new(Journal::in_memory());
    b.add(Fake::new("a").depends_on("c"));
    b.add(Fake::new("b").depends_on("a"));
    b.add(Fake::new("c").depends_on("b"));
    let err = b.start().expect_err("cycle");
    assert_eq!(
        err.to_string(),
        "invalid service graph: dependency cycle: a -> c -> b -> a"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_waits_for_a_straggler_that_ignores_stop_and_never_doubles_a_slot() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(
        Fake::new("svc")
            .script(&[Behaviour::Run, Behaviour::IgnoreStop])
            .spec_mut(|s| {
                s.replicas.min = 2;
                s.replicas.max = 2;
                s.recovery.backoff.initial = Duration::from_millis(10);
                s.shutdown_grace = Duration::from_secs(5);
            }),
    );
    let rt = b.start().expect("start");
    wait(
        &journal,
        is("svc", |e| matches!(e, Event::Up { replicas: 2 })),
    )
    .await;
    let since = journal.last_seq();
    // Replica 0 panics; the restart strategy stops replica 1, which ignores the request, so the end
    // of the backoff aborts it, and only then are both slots launched again.
    rt.inject_fault(&name("svc"), Fault::Panic)
        .await
        .expect("fault");
    journal
        .wait_for(
            since,
            WAIT,
            is("svc", |e| matches!(e, Event::Up { replicas: 2 })),
        )
        .await
        .expect("up again");
    let log: Vec<String> = journal
        .read(since, usize::MAX)
        .expect("read")
        .iter()
        .filter_map(|e| brief(e))
        .collect();
    assert!(
        position(&log, "svc: exited[1](aborted)") < position(&log, "svc: starting[1] restart"),
        "{log:#?}"
    );
    let snapshot = rt.snapshot().await.expect("snapshot");
    let status = snapshot.service("svc").expect("svc");
    assert_eq!(
        (status.state, status.replicas_running, status.generation),
        (State::Running, 2, 4)
    );
    assert_eq!(svc.call(|r| Req::Echo(3, r)).await, Ok(3));
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_when_a_backoff_ends_while_dependents_are_still_stopping() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(Fake::new("a"));
    b.add(
        Fake::new("b")
            .depends_on("a")
            .script(&[Behaviour::Run])
            .spec_mut(|s| {
                s.recovery.backoff.initial = Duration::from_secs(10);
                s.recovery.backoff.max = Duration::from_secs(10);
            }),
    );
    b.add(
        Fake::new("c")
            .depends_on("b")
            .script(&[Behaviour::IgnoreStop])
            .spec_mut(|s| s.shutdown_grace = Duration::from_secs(30)),
    );
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    rt.inject_fault(&name("b"), Fault::Panic)
        .await
        .expect("fault");
    wait(
        &journal,
        is("b", |e| matches!(e, Event::BackoffScheduled { .. })),
    )
    .await;
    // b's backoff ends while c still takes its grace to stop: a must still be stopped after both.
    tokio::time::timeout(Duration::from_secs(3600), rt.shutdown())
        .await
        .expect("shutdown finishes");
    let log = briefs(&journal);
    assert!(
        position(&log, "c: stopped") < position(&log, "a: stopping"),
        "{log:#?}"
    );
    assert!(
        journal
            .read(0, usize::MAX)
            .expect("read")
            .iter()
            .any(|e| matches!(e.event, Event::RuntimeStopped))
    );
}

#[tokio::test(start_paused = true)]
async fn scaling_back_out_while_a_replica_is_still_stopping_refills_its_slot() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(
        Fake::new("svc")
            .script(&[Behaviour::Run, Behaviour::Run, Behaviour::IgnoreStop])
            .spec_mut(|s| {
                s.replicas.max = 3;
                s.shutdown_grace = Duration::from_secs(5);
            }),
    );
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let svc = name("svc");
    assert!(
        rt.scale(&svc, 3, "test".into())
            .await
            .expect("scale")
            .accepted
    );
    wait(
        &journal,
        is("svc", |e| matches!(e, Event::Ready { replica: 2 })),
    )
    .await;
    assert!(
        rt.scale(&svc, 2, "test".into())
            .await
            .expect("scale")
            .accepted
    );
    assert!(
        rt.scale(&svc, 3, "test".into())
            .await
            .expect("scale")
            .accepted
    );
    // Replica 2 ignores the stop and is aborted after its grace; then its slot is launched again.
    let since = journal.last_seq();
    journal
        .wait_for(
            since,
            WAIT,
            is("svc", |e| matches!(e, Event::Ready { replica: 2 })),
        )
        .await
        .expect("slot 2 refilled");
    let snapshot = rt.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.service("svc").map(|s| s.replicas_running), Some(3));
    rt.shutdown().await;
}

/// Promise: `restart` of a service with dependents keeps them running while their requests wait.
#[tokio::test(start_paused = true)]
async fn restart_of_a_service_with_dependents_keeps_them_running_while_its_requests_wait() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let base = b.add(Fake::new("base"));
    let mid = b.add(Fake::new("mid").depends_on("base"));
    let top = b.add(Fake::new("top").depends_on("mid"));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    // base's incarnation holds a request when the restart comes, so the restart lasts until the test
    // releases it.
    let (held, block) = support::block();
    let busy = {
        let base = base.clone();
        tokio::spawn(async move { base.call(block).await })
    };
    held.started.await.expect("base holds the request");
    let since = journal.last_seq();
    let answer = rt.restart(&name("base")).await.expect("restart");
    assert!(answer.accepted, "{answer:?}");
    assert_eq!(answer.state, State::Stopping);
    // A request sent during the restart waits in the mailbox...
    let waiting = {
        let base = base.clone();
        tokio::spawn(async move { base.call(Req::Generation).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(base.queue_depth(), 1);
    // ... while the dependents keep serving from the incarnations they had.
    assert_eq!(mid.call(Req::Generation).await, Ok(1));
    assert_eq!(top.call(Req::Generation).await, Ok(1));
    let _ = held.release.send(());
    assert_eq!(
        busy.await.expect("join"),
        Ok(()),
        "the old incarnation finishes what it holds"
    );
    assert_eq!(
        waiting.await.expect("join"),
        Ok(2),
        "answered by the new incarnation"
    );
    journal
        .wait_for(since, WAIT, is("base", |e| matches!(e, Event::Up { .. })))
        .await
        .expect("base up again");
    let log: Vec<String> = journal
        .read(since, usize::MAX)
        .expect("read")
        .iter()
        .filter_map(|e| brief(e))
        .collect();
    assert_eq!(
        log,
        [
            "base: stopping",
            "base: exited[0](stopped)",
            "base: stopped",
            "base: starting[0] restart",
            "base: up",
        ],
        "nothing happens to the dependents"
    );
    let snapshot = rt.snapshot().await.expect("snapshot");
    for (service, generation) in [("base", 2), ("mid", 1), ("top", 1)] {
        let status = snapshot.service(service).expect("service");
        assert_eq!(
            (status.state, status.generation),
            (State::Running, generation),
            "{service}"
        );
    }
    rt.shutdown().await;
}

/// What an operator command starts or stops is journaled as the operator's doing (with the command),
/// and a dependency it brings up as done for the service it was started for; never as a recovery,
/// whatever the services' recovery strategies.
#[tokio::test(start_paused = true)]
async fn operator_starts_and_restarts_are_journaled_as_the_operators() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    b.add(Fake::new("ledger").spec_mut(|s| {
        s.replicas.min = 2;
        s.replicas.max = 2;
        s.recovery.strategy = Strategy::Failover;
    }));
    b.add(
        Fake::new("feed")
            .depends_on("ledger")
            .spec_mut(|s| s.recovery.strategy = Strategy::Degrade),
    );
    b.add(Fake::new("vault"));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let since = journal.last_seq();
    assert!(rt.stop(&name("ledger")).await.expect("stop").accepted);
    journal
        .wait_for(
            since,
            WAIT,
            is("ledger", |e| matches!(e, Event::Stopped { .. })),
        )
        .await
        .expect("ledger stopped");
    let causes = |since: u64| -> Vec<(String, Cause)> {
        journal
            .read(since, usize::MAX)
            .expect("read")
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    Event::Starting { .. } | Event::Stopping | Event::Stopped { .. }
                )
            })
            .filter_map(|e| Some((brief(e)?, e.cause.clone())))
            .collect()
    };
    let operator = |command: &str| Cause::Operator {
        command: command.into(),
    };

    let since = journal.last_seq();
    assert!(rt.start(&name("feed")).await.expect("start").accepted);
    journal
        .wait_for(since, WAIT, is("feed", |e| matches!(e, Event::Up { .. })))
        .await
        .expect("feed up");
    let for_feed = Cause::Dependency {
        service: name("feed"),
    };
    assert_eq!(
        causes(since),
        [
            ("ledger: starting[0] restart".to_owned(), for_feed.clone()),
            ("ledger: starting[1] restart".to_owned(), for_feed),
            ("feed: starting[0] restart".to_owned(), operator("start")),
        ]
    );

    let since = journal.last_seq();
    assert!(rt.restart(&name("vault")).await.expect("restart").accepted);
    journal
        .wait_for(since, WAIT, is("vault", |e| matches!(e, Event::Up { .. })))
        .await
        .expect("vault up again");
    assert_eq!(
        causes(since),
        [
            ("vault: stopping".to_owned(), operator("restart")),
            ("vault: stopped".to_owned(), operator("restart")),
            ("vault: starting[0] restart".to_owned(), operator("restart")),
        ]
    );
    rt.shutdown().await;
}
