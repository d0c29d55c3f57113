//! Synthetic services declared in `[testing.services]`: they answer echo requests after a configured
//! amount of work, for demos, chaos drills and end-to-end tests of the orchestrator.

use std::time::Duration;

use runtime::{Context, Reply, Service, ServiceError, Spec};

pub(crate) struct Synthetic {
    pub(crate) spec: Spec,
    pub(crate) work: Duration,
}

impl Service for Synthetic {
    type Request = Reply<()>;

    fn spec(&self) -> Spec {
        self.spec.clone()
    }

    async fn run(&self, mut cx: Context<Self::Request>) -> Result<(), ServiceError> {
        while let Some(reply) = cx.recv().await {
            if !self.work.is_zero() {
                tokio::time::sleep(self.work).await;
            }
            reply.send(());
        }
        Ok(())
    }
}
