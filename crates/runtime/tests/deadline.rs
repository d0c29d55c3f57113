//! Deadlines travel with every call: a call made while handling a request inherits what is left of
//! that request's deadline, so a chain of services gives up together. Under tokio's paused clock.

mod support;

use std::time::Duration;

use runtime::{Builder, CallError, Context, Handle, Journal, Kind, Reply, RuntimeLevel, Service};
use runtime::{ServiceError, Spec};
use support::{Fake, Req, name};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Forwards each request to `downstream` as a slow one, with no deadline of its own in the call,
/// and reports when and how that call ended.
struct Relay {
    downstream: Handle<Req>,
    seen: mpsc::UnboundedSender<(Instant, Result<(), CallError>)>,
}

struct Forward(Reply<()>);

impl runtime::bus::Operation for Forward {
    fn operation(&self) -> &'static str {
        "forward"
    }
}

impl Service for Relay {
    type Request = Forward;

    fn spec(&self) -> Spec {
        Spec::new(name("relay"), Kind::Core).depends_on(name("svc"))
    }

    async fn run(&self, mut cx: Context<Forward>) -> Result<(), ServiceError> {
        while let Some(Forward(reply)) = cx.recv().await {
            // `call`, not `call_by`: the service's own timeout (30 s) is all this code asks for.
            let result = self
                .downstream
                .call(|r| Req::Slow(Duration::from_secs(20), r))
                .await;
            let _ = self.seen.send((Instant::now(), result.clone()));
            if result.is_ok() {
                reply.send(());
            }
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_nested_call_inherits_the_requests_deadline_and_the_chain_gives_up_together() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc"));
    let (seen, mut seen_rx) = mpsc::unbounded_channel();
    let relay = b.add(Relay {
        downstream: svc.clone(),
        seen,
    });
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");

    let deadline = Instant::now() + Duration::from_millis(1500);
    let answer = runtime::deadline::scope(Some(deadline), relay.call(Forward)).await;
    assert_eq!(Instant::now(), deadline);
    assert_eq!(
        answer,
        Err(CallError::DeadlineExceeded {
            service: name("relay")
        })
    );
    // The relay's own call to svc, made with nothing but `call`, ended at the same instant.
    let (ended, result) = seen_rx.recv().await.expect("the relay reports");
    assert_eq!(ended, deadline);
    assert_eq!(
        result,
        Err(CallError::DeadlineExceeded {
            service: name("svc")
        })
    );

    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_deadline_has_passed_queues_nothing() {
    let (rt, svc) = support::one_ready_service().await;
    let past = Instant::now();
    tokio::time::advance(Duration::from_millis(1)).await;
    let answer = runtime::deadline::scope(Some(past), svc.call(|r| Req::Echo(7, r))).await;
    assert_eq!(
        answer,
        Err(CallError::DeadlineExceeded {
            service: name("svc")
        })
    );
    assert_eq!(svc.queue_depth(), 0);
    assert!(rt.bus().dead_letters().letters().is_empty());
    assert_eq!(svc.call(|r| Req::Echo(8, r)).await, Ok(8));
    rt.shutdown().await;
}

/// A request waiting in the mailbox of an incarnation that hangs is answered, retryably, when the
/// probe declares the hang (default health policy: within `health::worst_case_detection`), not
/// left to its deadline; the hang is in the journal.
#[tokio::test(start_paused = true)]
async fn a_request_queued_behind_a_hung_incarnation_is_answered_when_the_hang_is_found() {
    use runtime::journal::{Event, ExitOutcome, Fault};

    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc"));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    rt.inject_fault(&name("svc"), Fault::Hang)
        .await
        .expect("fault injected");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let answer = svc.call_by(deadline, |r| Req::Echo(1, r)).await;
    assert_eq!(
        answer,
        Err(CallError::Interrupted {
            service: name("svc")
        })
    );
    assert!(answer.expect_err("interrupted").is_retryable());
    let policy = runtime::spec::HealthPolicy::default();
    assert!(Instant::now() - started <= runtime::health::worst_case_detection(&policy));
    let hung = journal
        .wait_for(0, Duration::from_secs(60), |e| {
            e.service.as_ref() == Some(&name("svc"))
                && matches!(
                    e.event,
                    Event::Exited {
                        outcome: ExitOutcome::Hung { .. },
                        ..
                    }
                )
        })
        .await;
    assert!(hung.is_some(), "the hang is journaled");
    let letters = rt.bus().dead_letters().letters();
    assert_eq!(
        letters.iter().map(|l| l.reason).collect::<Vec<_>>(),
        [runtime::bus::DeadLetterReason::ServiceHung]
    );
    rt.shutdown().await;
}
