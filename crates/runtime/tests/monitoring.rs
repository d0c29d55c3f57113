//! The performance monitor under a paused clock: anomalies acted on, crash loops classified,
//! autoscaling within the enclave budget; every assertion reads the journal.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use runtime::anomaly::AnomalyAction;
use runtime::budget::Demand;
use runtime::journal::{Entry, Event, Fault};
use runtime::{Builder, CallError, Journal, RuntimeLevel, State};
use support::{Fake, Req, name};

const WAIT: Duration = Duration::from_secs(3600);

fn is(service: &str, pred: impl Fn(&Event) -> bool) -> impl FnMut(&Entry) -> bool {
    let service = name(service);
    move |e| e.service.as_ref() == Some(&service) && pred(&e.event)
}

/// Sends `Slow(work)` requests back to back, with `work` read from `ms` before each.
fn load(handle: runtime::Handle<Req>, ms: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let work = Duration::from_millis(ms.load(Ordering::Relaxed));
            let _ = handle.call(|r| Req::Slow(work, r)).await;
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_latency_step_is_flagged_acted_on_and_cleared() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc").spec_mut(|s| s.anomaly.action = AnomalyAction::Degrade));
    b.monitor(Duration::from_secs(1));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let ms = Arc::new(AtomicU64::new(8));
    let driver = load(svc.clone(), ms.clone());
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        journal
            .read(0, usize::MAX)
            .expect("read")
            .iter()
            .all(|e| !matches!(e.event, Event::Anomaly { .. }))
    );
    let since = journal.last_seq();
    ms.store(30, Ordering::Relaxed);
    let raised = journal
        .wait_for(
            since,
            WAIT,
            is("svc", |e| matches!(e, Event::Anomaly { .. })),
        )
        .await
        .expect("anomaly");
    let Event::Anomaly {
        signal,
        evidence,
        action,
    } = &raised.event
    else {
        unreachable!()
    };
    assert_eq!(
        (signal.as_str(), *action),
        ("latency_p90_ms", AnomalyAction::Degrade)
    );
    assert!(evidence.value > 2.0 * evidence.baseline, "{evidence:?}");
    journal
        .wait_for(
            since,
            WAIT,
            is("svc", |e| {
                matches!(
                    e,
                    Event::HealthChanged {
                        health: runtime::Health::Degraded { .. }
                    }
                )
            }),
        )
        .await
        .expect("degraded");
    assert_eq!(
        rt.snapshot()
            .await
            .expect("snapshot")
            .service("svc")
            .map(|s| s.state),
        Some(State::Degraded)
    );
    assert_eq!(rt.anomalies().borrow().len(), 1);

    ms.store(8, Ordering::Relaxed);
    journal
        .wait_for(
            since,
            WAIT,
            is("svc", |e| matches!(e, Event::AnomalyCleared { .. })),
        )
        .await
        .expect("cleared");
    journal
        .wait_for(
            since,
            WAIT,
            is("svc", |e| {
                matches!(
                    e,
                    Event::HealthChanged {
                        health: runtime::Health::Healthy
                    }
                )
            }),
        )
        .await
        .expect("healthy again");
    driver.abort();
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn autoscaling_follows_the_queue_up_to_the_budget_and_back_down() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc").spec_mut(|s| {
        s.replicas.min = 1;
        s.replicas.max = 8;
        s.resources.min_memory_mib = 100;
        s.resources.max_memory_mib = 200;
        s.autoscale.enabled = true;
        s.autoscale.queue_per_replica = 2;
        s.autoscale.cooldown = Duration::from_secs(2);
        s.autoscale.scale_in_after = Duration::from_secs(20);
        s.autoscale.latency_objective = Duration::from_secs(10);
    }));
    // Room for the runtime's 32 MiB and three replicas of 100 MiB.
    b.budget(Demand {
        memory_mib: 332,
        threads: 64,
    });
    b.monitor(Duration::from_secs(1));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let ms = Arc::new(AtomicU64::new(500));
    let drivers: Vec<_> = (0..20).map(|_| load(svc.clone(), ms.clone())).collect();
    let refused = journal
        .wait_for(
            0,
            WAIT,
            is("svc", |e| matches!(e, Event::ScaleRefused { .. })),
        )
        .await
        .expect("budget refusal");
    let Event::ScaleRefused { reason } = &refused.event else {
        unreachable!()
    };
    assert!(reason.contains("332 MiB"), "{reason}");
    let scaled: Vec<(u32, u32)> = journal
        .read(0, usize::MAX)
        .expect("read")
        .iter()
        .filter_map(|e| match e.event {
            Event::Scaled { from, to, .. } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(scaled, [(1, 2), (2, 3)]);
    for d in drivers {
        d.abort();
    }
    let since = journal.last_seq();
    journal
        .wait_for(
            since,
            WAIT,
            is("svc", |e| matches!(e, Event::Scaled { from: 2, to: 1, .. })),
        )
        .await
        .expect("scaled back in");
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_is_classified_and_never_scaled_into() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc").spec_mut(|s| {
        s.replicas.max = 4;
        s.recovery.max_restarts = 100;
        s.recovery.backoff.initial = Duration::from_secs(1);
        s.recovery.backoff.max = Duration::from_secs(1);
        s.anomaly.crash_loop_count = 3;
        s.autoscale.enabled = true;
        s.autoscale.queue_per_replica = 1;
    }));
    b.monitor(Duration::from_millis(200));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    for _ in 0..3 {
        let since = journal.last_seq();
        rt.inject_fault(&name("svc"), Fault::Panic)
            .await
            .expect("fault");
        journal
            .wait_for(since, WAIT, is("svc", |e| matches!(e, Event::Up { .. })))
            .await
            .expect("back up");
    }
    let entry = journal
        .wait_for(0, WAIT, is("svc", |e| matches!(e, Event::CrashLoop { .. })))
        .await
        .expect("crash loop");
    assert!(matches!(&entry.event, Event::CrashLoop { failure, count: 3 } if failure == "panic"));
    // Load that would scale it out: the autoscaler refuses because of the crash loop.
    let ms = Arc::new(AtomicU64::new(500));
    let drivers: Vec<_> = (0..10).map(|_| load(svc.clone(), ms.clone())).collect();
    let refused = journal
        .wait_for(
            0,
            WAIT,
            is(
                "svc",
                |e| matches!(e, Event::ScaleRefused { reason } if reason.contains("crash loop")),
            ),
        )
        .await;
    assert!(refused.is_some());
    assert!(
        journal
            .read(0, usize::MAX)
            .expect("read")
            .iter()
            .all(|e| !matches!(e.event, Event::Scaled { .. }))
    );
    for d in drivers {
        d.abort();
    }
    rt.shutdown().await;
}

/// Polls `f` once, so a call is sent (or refused) without waiting for its answer.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

/// How many requests the mailbox takes while the incarnation is busy, and how the first one it
/// refuses is answered (at once, without waiting).
async fn queue_room(svc: &runtime::Handle<Req>) -> (usize, CallError) {
    let (held, block) = support::block();
    let busy = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.call(block).await })
    };
    held.started
        .await
        .expect("the incarnation holds the request");
    let mut queued = Vec::new();
    let refused = loop {
        let svc = svc.clone();
        let mut call = Box::pin(async move { svc.call(|r| Req::Echo(1, r)).await });
        match poll_once(&mut call).await {
            Poll::Pending => queued.push(call),
            Poll::Ready(Err(e)) => break e,
            Poll::Ready(Ok(_)) => panic!("answered while the incarnation is busy"),
        }
        assert!(queued.len() <= 64, "nothing refused");
    };
    let room = queued.len();
    let _ = held.release.send(());
    assert_eq!(busy.await.expect("join"), Ok(()));
    for call in queued {
        assert_eq!(call.await, Ok(1), "a queued request is served");
    }
    (room, refused)
}

/// Waits until the monitor's raised anomalies satisfy `pred`.
async fn anomalies_until(
    rt: &runtime::Runtime,
    within: Duration,
    pred: impl FnMut(&Vec<runtime::monitor::ActiveAnomaly>) -> bool,
) {
    let mut anomalies = rt.anomalies();
    tokio::time::timeout(within, anomalies.wait_for(pred))
        .await
        .expect("the awaited anomalies in time")
        .expect("the monitor runs");
}

/// Promise: with `action = "shed"`, while the anomaly is raised, requests beyond an eighth of the
/// queue are refused at once with a retryable "queue full"; once it clears, the whole queue is
/// open again.
#[tokio::test(start_paused = true)]
async fn shed_refuses_requests_beyond_an_eighth_of_the_queue_while_its_anomaly_is_raised() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc").spec_mut(|s| {
        s.queue_capacity = 16;
        s.anomaly.action = AnomalyAction::Shed;
    }));
    b.monitor(Duration::from_secs(1));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let (room, refused) = queue_room(&svc).await;
    assert_eq!(room, 16);
    assert!(matches!(refused, CallError::QueueFull { .. }), "{refused}");

    let ms = Arc::new(AtomicU64::new(8));
    let driver = load(svc.clone(), ms.clone());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let since = journal.last_seq();
    ms.store(30, Ordering::Relaxed);
    anomalies_until(&rt, Duration::from_secs(30), |a| !a.is_empty()).await;
    let raised = journal
        .wait_for(
            since,
            Duration::from_secs(1),
            is("svc", |e| matches!(e, Event::Anomaly { .. })),
        )
        .await
        .expect("journaled");
    assert!(
        matches!(
            raised.event,
            Event::Anomaly {
                action: AnomalyAction::Shed,
                ..
            }
        ),
        "{raised:?}"
    );
    driver.abort();
    let (room, refused) = queue_room(&svc).await;
    assert_eq!(room, 2, "an eighth of 16");
    assert!(
        matches!(refused, CallError::QueueFull { .. }) && refused.is_retryable(),
        "{refused}"
    );

    let driver = load(svc.clone(), ms.clone());
    ms.store(8, Ordering::Relaxed);
    anomalies_until(&rt, Duration::from_secs(60), |a| a.is_empty()).await;
    driver.abort();
    let (room, _) = queue_room(&svc).await;
    assert_eq!(room, 16, "no longer shedding");
    rt.shutdown().await;
}

/// Promise: with `action = "scale_out"`, a raised anomaly asks the autoscaler for another replica,
/// even though neither the queue nor the latency objective would.
#[tokio::test(start_paused = true)]
async fn scale_out_adds_a_replica_when_its_anomaly_is_raised() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc").spec_mut(|s| {
        s.replicas.max = 3;
        s.anomaly.action = AnomalyAction::ScaleOut;
        s.autoscale.enabled = true;
        s.autoscale.queue_per_replica = 1000;
        s.autoscale.latency_objective = Duration::from_secs(10);
    }));
    b.monitor(Duration::from_secs(1));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let ms = Arc::new(AtomicU64::new(8));
    let driver = load(svc.clone(), ms.clone());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let since = journal.last_seq();
    ms.store(30, Ordering::Relaxed);
    let raised = journal
        .wait_for(
            since,
            Duration::from_secs(30),
            is("svc", |e| matches!(e, Event::Anomaly { .. })),
        )
        .await
        .expect("anomaly");
    assert!(
        matches!(
            raised.event,
            Event::Anomaly {
                action: AnomalyAction::ScaleOut,
                ..
            }
        ),
        "{raised:?}"
    );
    let scaled = journal
        .wait_for(
            since,
            Duration::from_secs(5),
            is("svc", |e| matches!(e, Event::Scaled { .. })),
        )
        .await
        .expect("scaled out");
    let Event::Scaled { from, to, reason } = &scaled.event else {
        unreachable!()
    };
    assert_eq!((*from, *to), (1, 2));
    assert!(reason.contains("anomaly"), "{reason}");
    journal
        .wait_for(
            since,
            Duration::from_secs(30),
            is("svc", |e| matches!(e, Event::Ready { replica: 1 })),
        )
        .await
        .expect("second replica ready");
    let snapshot = rt.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.service("svc").map(|s| s.replicas_running), Some(2));
    assert!(
        journal
            .read(0, usize::MAX)
            .expect("read")
            .iter()
            .take_while(|e| e.seq <= since)
            .all(|e| !matches!(e.event, Event::Scaled { .. })),
        "the load alone scaled it"
    );
    driver.abort();
    rt.shutdown().await;
}
