//! Fakes: an echo service, specs for it, and a simulation platform.

use std::path::Path;
use std::sync::Arc;

use runtime::{Context, Kind, Service, ServiceError, ServiceName, Spec};

/// A service that answers every request at once with `()`.
#[derive(Debug)]
pub struct Echo(pub Spec);

impl Service for Echo {
    type Request = runtime::Reply<()>;
    fn spec(&self) -> Spec {
        self.0.clone()
    }
    async fn run(&self, mut cx: Context<Self::Request>) -> Result<(), ServiceError> {
        while let Some(reply) = cx.recv().await {
            reply.send(());
        }
        Ok(())
    }
}

/// A core service's spec named `name`, depending on `deps`, restarting without jitter.
pub fn spec(name: &str, deps: &[&str]) -> Spec {
    let mut s = Spec::new(ServiceName::new(name).expect("name"), Kind::Core);
    s.dependencies = deps
        .iter()
        .map(|d| ServiceName::new(d).expect("name"))
        .collect();
    s.recovery.backoff.jitter = 0.0;
    s
}

/// A simulation platform keeping its files in `dir`.
pub fn platform(dir: &Path) -> Arc<dyn enclave::Platform> {
    let sim = enclave::Simulation::open(dir, b"test binary", b"", 1).expect("simulation");
    Arc::new(sim)
}
