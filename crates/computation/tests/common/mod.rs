//! The fixture shared by the computation tests: crypto, storage and computation services on the
//! simulation platform, in a temporary data directory.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use computation::{Caller, JobInfo, LimitOverrides, Outcome, Program, Request};
use runtime::{Builder, Journal, RuntimeLevel};
use tokio::sync::watch;

pub struct Fixture {
    pub rt: runtime::Runtime,
    pub computation: computation::Handle,
    pub crypto: crypto::Handle,
    pub storage: storage::Handle,
    _dir: tempfile::TempDir,
}

/// Starts the three services; `configure` may change the computation spec first.
pub async fn start(configure: impl FnOnce(&mut runtime::Spec)) -> Fixture {
    start_on(configure, None).await
}

/// Starts crypto and computation with a [`Beacon`] in place of storage; the receiver counts the
/// `kv.put`s scripts made, so a test can wait until a script has reached its first one.
pub async fn start_with_beacon(
    configure: impl FnOnce(&mut runtime::Spec),
) -> (Fixture, watch::Receiver<u64>) {
    let (puts, counted) = watch::channel(0);
    (start_on(configure, Some(Beacon { puts })).await, counted)
}

async fn start_on(configure: impl FnOnce(&mut runtime::Spec), beacon: Option<Beacon>) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let platform: Arc<dyn enclave::Platform> = Arc::new(
        enclave::Simulation::open(dir.path(), b"test binary", b"", 1).expect("simulation"),
    );
    let mut b = Builder::new(Journal::in_memory());
    let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
    let storage = match beacon {
        Some(beacon) => b.add(beacon),
        None => b.add(storage::Storage::new(dir.path(), platform, crypto.clone())),
    };
    let mut spec = computation::Computation::default_spec();
    spec.recovery.strategy = runtime::Strategy::Manual;
    configure(&mut spec);
    let computation = b.add_with_spec(
        computation::Computation::new(crypto.clone(), storage.clone()),
        spec,
    );
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    Fixture {
        rt,
        computation,
        crypto,
        storage,
        _dir: dir,
    }
}

/// A stand-in for the storage service that keeps nothing: every put is counted on `puts` and
/// answered as written, every read finds nothing, except a read of the key [`HANG`], which is never
/// answered (a hung storage, as far as that caller can tell).
pub struct Beacon {
    puts: watch::Sender<u64>,
}

/// The key whose read [`Beacon`] never answers.
pub const HANG: &str = "hang";

impl runtime::Service for Beacon {
    type Request = storage::Request;

    fn spec(&self) -> runtime::Spec {
        storage::Storage::default_spec()
    }

    async fn run(
        &self,
        mut cx: runtime::Context<storage::Request>,
    ) -> Result<(), runtime::ServiceError> {
        use storage::{Error, Page, Request};
        let mut held = Vec::new();
        while let Some(request) = cx.recv().await {
            match request {
                Request::Get { key, reply, .. } if key == HANG => held.push(reply),
                Request::Put { reply, .. } => {
                    self.puts.send_modify(|n| *n += 1);
                    reply.send(Ok(1));
                }
                Request::Get { key, reply, .. } => reply.send(Err(Error::NotFound(key))),
                Request::Delete { key, reply, .. } => reply.send(Err(Error::NotFound(key))),
                Request::List { reply, .. } => reply.send(Ok(Page {
                    keys: Vec::new(),
                    next: None,
                })),
                Request::PutIf { reply, .. }
                | Request::Batch { reply, .. }
                | Request::DropNamespace { reply, .. } => {
                    reply.send(Ok(1));
                }
            }
        }
        Ok(())
    }
}

pub fn caller(owner: &str) -> Caller {
    Caller {
        owner: owner.into(),
        signing_key: None,
        grants: computation::Grants::ALL,
        allowance: None,
        capabilities: computation::Capabilities::Account,
    }
}

pub fn program(code: &str) -> Program {
    Program {
        code: code.into(),
        args: None,
        limits: LimitOverrides::default(),
        deterministic: false,
    }
}

impl Fixture {
    pub async fn run_as(
        &self,
        caller: Caller,
        program: Program,
    ) -> Result<Outcome, computation::Error> {
        self.computation
            .call(|reply| Request::Run {
                caller,
                program,
                reply,
            })
            .await
            .expect("call")
    }

    /// Runs `code` as `owner` with default limits; the outcome must exist.
    pub async fn run(&self, owner: &str, code: &str) -> Outcome {
        self.run_as(caller(owner), program(code))
            .await
            .expect("run")
    }

    pub async fn submit(&self, owner: &str, program: Program) -> JobInfo {
        self.computation
            .call(|reply| Request::Submit {
                caller: caller(owner),
                program,
                reply,
            })
            .await
            .expect("call")
            .expect("submit")
    }

    pub async fn job(&self, owner: &str, id: &str) -> Result<JobInfo, computation::Error> {
        self.computation
            .call(|reply| Request::Job {
                owner: owner.into(),
                id: id.into(),
                reply,
            })
            .await
            .expect("call")
    }

    pub async fn wait(&self, owner: &str, id: &str) -> Result<JobInfo, computation::Error> {
        self.computation
            .call(|reply| Request::Wait {
                owner: owner.into(),
                id: id.into(),
                reply,
            })
            .await
            .expect("call")
    }

    pub async fn cancel(&self, owner: &str, id: &str) -> Result<JobInfo, computation::Error> {
        self.computation
            .call(|reply| Request::Cancel {
                owner: owner.into(),
                id: id.into(),
                reply,
            })
            .await
            .expect("call")
    }

    pub async fn jobs(&self, owner: &str) -> Vec<JobInfo> {
        self.computation
            .call(|reply| Request::Jobs {
                owner: owner.into(),
                reply,
            })
            .await
            .expect("call")
            .expect("jobs")
    }

    pub async fn pool(&self) -> computation::PoolStats {
        self.computation
            .call(|reply| Request::Pool { reply })
            .await
            .expect("call")
    }
}

/// A program's `args` from a JSON value.
pub fn args(value: serde_json::Value) -> Option<Box<serde_json::value::RawValue>> {
    Some(serde_json::value::to_raw_value(&value).expect("JSON values serialize"))
}
