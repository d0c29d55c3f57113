//! A scriptable fake service for runtime tests: each incarnation takes the next behaviour from its
//! script ("fail twice then run", "hang", "ignore shutdown"...).

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime::journal::{Entry, Event};
use runtime::{Context, Kind, Mode, Reply, Service, ServiceError, ServiceName, Spec};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Serve requests until asked to stop.
    Run,
    /// Return an error at once.
    Fail,
    /// Panic at once.
    Panic,
    /// Become ready, then stop answering anything.
    Hang,
    /// Never become ready.
    NeverReady,
    /// Serve, but ignore the request to stop.
    IgnoreStop,
    /// Serve, reporting itself degraded.
    Degraded,
    /// Serve with `recv` polled beside a 10 ms timer, so the timer often wins and the pending
    /// `recv` is dropped (as a service that also waits on its own workers does).
    RecvBesideTimer,
}

pub enum Req {
    Echo(u64, Reply<u64>),
    /// Takes this long before answering.
    Slow(Duration, Reply<()>),
    /// Panics while holding the reply.
    Crash(Reply<()>),
    /// Reports the mode its incarnation runs in.
    Mode(Reply<Mode>),
    /// Reports the queue capacity of the spec its incarnation sees now.
    QueueCapacity(Reply<usize>),
    /// Waits up to this long for a configuration change to reach the incarnation, then reports the
    /// queue capacity of the spec it received (`None` if none came).
    NextSpec(Duration, Reply<Option<usize>>),
    /// Reports which incarnation answers (its generation).
    Generation(Reply<u64>),
    /// Says it is being handled, then holds its incarnation until released: see [`block`].
    Block {
        started: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
        reply: Reply<()>,
    },
}

/// The two ends of a [`Req::Block`] request, held by the test.
pub struct Blocked {
    /// Fires once an incarnation holds the request.
    pub started: oneshot::Receiver<()>,
    /// Send (or drop) to let the incarnation answer and carry on.
    pub release: oneshot::Sender<()>,
}

/// A request that occupies the incarnation handling it until the test releases it.
pub fn block() -> (Blocked, impl FnOnce(Reply<()>) -> Req) {
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let make = move |reply| Req::Block {
        started: started_tx,
        release: release_rx,
        reply,
    };
    (
        Blocked {
            started: started_rx,
            release: release_tx,
        },
        make,
    )
}

impl runtime::bus::Operation for Req {
    fn operation(&self) -> &'static str {
        match self {
            Req::Echo(..) => "echo",
            Req::Slow(..) => "slow",
            Req::Crash(..) => "crash",
            Req::Mode(..) => "mode",
            Req::QueueCapacity(..) => "queue_capacity",
            Req::NextSpec(..) => "next_spec",
            Req::Generation(..) => "generation",
            Req::Block { .. } => "block",
        }
    }
}

#[derive(Clone)]
pub struct Fake {
    spec: Spec,
    script: Arc<Mutex<VecDeque<Behaviour>>>,
}

pub fn name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid test name")
}

impl Fake {
    pub fn new(n: &str) -> Self {
        let mut spec = Spec::new(name(n), Kind::Core);
        spec.recovery.backoff.jitter = 0.0;
        Fake {
            spec,
            script: Arc::default(),
        }
    }

    pub fn kind(mut self, kind: Kind) -> Self {
        self.spec.kind = kind;
        self
    }

    pub fn depends_on(mut self, d: &str) -> Self {
        self.spec.dependencies.push(name(d));
        self
    }

    pub fn spec_mut(mut self, f: impl FnOnce(&mut Spec)) -> Self {
        f(&mut self.spec);
        self
    }

    /// Behaviours for the next incarnations, in order; after them, `Run`.
    pub fn script(self, behaviours: &[Behaviour]) -> Self {
        self.script
            .lock()
            .expect("script lock")
            .extend(behaviours.iter().cloned());
        self
    }

    fn next(&self) -> Behaviour {
        self.script
            .lock()
            .expect("script lock")
            .pop_front()
            .unwrap_or(Behaviour::Run)
    }
}

async fn serve(cx: &mut Context<Req>) -> Option<()> {
    let req = cx.recv().await?;
    match req {
        Req::Echo(x, reply) => reply.send(x),
        Req::Slow(d, reply) => {
            tokio::time::sleep(d).await;
            reply.send(());
        }
        Req::Crash(_reply) => panic!("crashed while handling a request"),
        Req::Mode(reply) => reply.send(cx.mode().clone()),
        Req::QueueCapacity(reply) => reply.send(cx.spec().queue_capacity),
        Req::NextSpec(within, reply) => {
            let changed = tokio::time::timeout(within, cx.spec_changes().changed()).await;
            reply.send(matches!(changed, Ok(Ok(()))).then(|| cx.spec().queue_capacity));
        }
        Req::Generation(reply) => reply.send(cx.generation()),
        Req::Block {
            started,
            release,
            reply,
        } => {
            let _ = started.send(());
            let _ = release.await;
            reply.send(());
        }
    }
    Some(())
}

impl Service for Fake {
    type Request = Req;

    fn spec(&self) -> Spec {
        self.spec.clone()
    }

    /// Takes everything live but a new call timeout, so tests can see a restart to take a change.
    fn takes_live(&self, old: &Spec, new: &Spec) -> bool {
        old.call_timeout == new.call_timeout
    }

    /// Refuses a queue capacity of 13, so tests can see a service veto a configuration.
    fn validate(&self, new: &Spec) -> Result<(), runtime::Veto> {
        if new.queue_capacity == 13 {
            return Err("a queue of 13 is unlucky".into());
        }
        Ok(())
    }

    async fn run(&self, mut cx: Context<Req>) -> Result<(), ServiceError> {
        match self.next() {
            Behaviour::Run => while serve(&mut cx).await.is_some() {},
            Behaviour::Fail => return Err(ServiceError::new("scripted failure")),
            Behaviour::Panic => panic!("scripted panic"),
            Behaviour::Hang => {
                cx.set_ready();
                std::future::pending::<()>().await;
            }
            Behaviour::NeverReady => std::future::pending::<()>().await,
            Behaviour::IgnoreStop => {
                while serve(&mut cx).await.is_some() {}
                std::future::pending::<()>().await;
            }
            Behaviour::Degraded => {
                cx.set_ready();
                cx.set_degraded("scripted degradation");
                while serve(&mut cx).await.is_some() {}
            }
            Behaviour::RecvBesideTimer => {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                loop {
                    tokio::select! {
                        served = serve(&mut cx) => if served.is_none() { break },
                        _ = tick.tick() => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// A compact rendering of service events for table-like assertions: `"a: up"`, `"b: exited(panic)"`.
pub fn brief(e: &Entry) -> Option<String> {
    let s = e.service.as_ref()?;
    let what = match &e.event {
        Event::Registered => return None,
        Event::Starting {
            replica,
            restart,
            degraded_mode,
        } => {
            format!(
                "starting[{replica}]{}{}",
                if *restart { " restart" } else { "" },
                if *degraded_mode { " degraded" } else { "" }
            )
        }
        Event::Ready { .. } => return None,
        Event::Up { .. } => "up".into(),
        Event::HealthChanged { .. } => return None,
        Event::Exited { replica, outcome } => {
            let o = serde_json::to_value(outcome).expect("json");
            format!(
                "exited[{replica}]({})",
                o["outcome"].as_str().unwrap_or("?")
            )
        }
        Event::BackoffScheduled { delay_ms, .. } => format!("backoff {delay_ms}ms"),
        Event::Failover { replica, serving } => format!("failover[{replica}] serving {serving}"),
        Event::Stopping => "stopping".into(),
        Event::Stopped { .. } => "stopped".into(),
        Event::Failed { .. } => "failed".into(),
        Event::FaultInjected { fault, .. } => format!("fault {fault:?}"),
        other => format!("{other:?}"),
    };
    Some(format!("{s}: {what}"))
}

/// A started runtime with one [`Fake`] service, `svc`, once it is ready.
pub async fn one_ready_service() -> (runtime::Runtime, runtime::Handle<Req>) {
    let mut b = runtime::Builder::new(runtime::Journal::in_memory());
    let svc = b.add(Fake::new("svc"));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == runtime::RuntimeLevel::Ready)
        .await
        .expect("ready");
    (rt, svc)
}
