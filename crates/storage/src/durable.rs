//! When a commit counts: the freshness counter advanced with it (redb, `replay.rs`) or after the
//! database took it (PostgreSQL), and a commit whose outcome is unknown (PostgreSQL's connection
//! broke mid-commit) settled before the next one.

use super::{Fatal, State};
use crate::quota::Usages;

impl State<'_> {
    /// After commit `seq` was `written`, advances the freshness counter to `seq` unless the store
    /// advanced it with the commit (redb): only then is the commit acknowledged. A failed commit
    /// whose outcome is unknown leaves the state unsettled ([`State::settle`]).
    pub(super) async fn count<T>(
        &mut self,
        seq: u64,
        written: Result<T, Fatal>,
    ) -> Result<T, Fatal> {
        let written = match written {
            Ok(written) => written,
            Err(Fatal::No(e)) => {
                if self.store.outcome_unknown(&e) {
                    self.unsettled = true;
                }
                return Err(Fatal::No(e));
            }
            Err(fatal) => return Err(fatal),
        };
        if !self.store.counts_itself() {
            self.advance_counter(seq).await?;
        }
        Ok(written)
    }

    /// Advances the freshness counter to `seq`, off the async workers (it syncs): by one on a
    /// database of this node's own; on a shared one, past the commits of other nodes since.
    pub(super) async fn advance_counter(&self, seq: u64) -> Result<(), Fatal> {
        let counters = self.storage.counters.clone();
        let platform = self.storage.platform.clone();
        let name = self.storage.counter();
        let shared = self.store.shared();
        tokio::task::spawn_blocking(move || {
            if shared {
                return counters
                    .advance_to(&*platform, name, seq)
                    .map_err(|e| Fatal::Yes(format!("advancing the freshness counter: {e}")));
            }
            let counter = counters
                .advance(&*platform, name)
                .map_err(|e| Fatal::Yes(format!("advancing the freshness counter: {e}")))?;
            if counter != seq {
                return Err(Fatal::Yes(format!(
                    "the freshness counter moved to {counter}, expected {seq}: another writer?"
                )));
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(Fatal::Yes(format!("the counter task: {e}"))))
    }

    /// After a commit whose outcome was unknown: reads the database's commit number. If that
    /// commit landed, the counter catches up with it (its requests were answered as unavailable;
    /// a retry writes again, at a later version); if it did not, nothing changes. On a database
    /// of this node's own, any other number means another writer, and ends the incarnation; on a
    /// shared one, other nodes' commits are expected, and the node catches up with them.
    pub(super) async fn settle(&mut self) -> Result<(), Fatal> {
        if !self.unsettled {
            return Ok(());
        }
        let found = self.store.seq().await.map_err(Fatal::No)?;
        if self.store.shared() && found >= self.seq {
            self.advance_counter(found).await?;
            self.catch_up().await.map_err(Fatal::No)?;
        } else if found == self.seq + 1 {
            self.advance_counter(found).await?;
            self.seq = found;
            // What the namespaces hold changed unseen: read again when next written.
            self.usages = Usages::default();
        } else if found != self.seq {
            return Err(Fatal::Yes(format!(
                "the database is at commit {found}, and this node's last commit was {}: another \
                 writer?",
                self.seq
            )));
        }
        self.unsettled = false;
        Ok(())
    }
}
