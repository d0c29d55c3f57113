//! The fixture shared by the computation tests: crypto, storage and computation services on the
//! simulation platform, in a temporary data directory.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use computation::{Caller, JobInfo, LimitOverrides, Outcome, Program, Request};
use runtime::{Builder, Journal, RuntimeLevel};

pub struct Fixture {
    pub rt: runtime::Runtime,
    pub computation: computation::Handle,
    pub crypto: crypto::Handle,
    pub storage: storage::Handle,
    _dir: tempfile::TempDir,
}

/// Starts the three services; `configure` may change the computation spec first.
pub async fn start(configure: impl FnOnce(&mut runtime::Spec)) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let platform: Arc<dyn enclave::Platform> = Arc::new(
        enclave::Simulation::open(dir.path(), b"test binary", b"", 1).expect("simulation"),
    );
    let mut b = Builder::new(Journal::in_memory());
    let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
    let storage = b.add(storage::Storage::new(dir.path(), platform, crypto.clone()));
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

pub fn caller(owner: &str) -> Caller {
    Caller {
        owner: owner.into(),
        signing_key: None,
        grants: computation::Grants::ALL,
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
