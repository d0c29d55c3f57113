//! Writes: each request checked and encrypted for its commit, and a group of them committed as
//! one. On a shared database (PostgreSQL, other nodes writing too) the cluster's commit number is
//! locked before the group is prepared, so the group is never overtaken.

use std::collections::HashMap;

use runtime::ServiceError;

use super::{Fatal, Limits, MAX_BATCH_WRITES, Pending, State, check_namespace, unavailable};
use crate::db::{Change, Record, associated_data};
use crate::quota::{Tally, Usages};
use crate::{BadInput, Error, KEY_OWNER, Write};

/// How many times dropping a namespace is tried again after other nodes' commits overtook it
/// (it does not take the lock), before it is answered as unavailable (retryable).
pub(super) const MAX_ATTEMPTS: u32 = 8;

/// The crypto service's failure while `doing`: retryable when its keys (in a cluster's database)
/// are out of reach or were changed through another node at that moment.
fn crypto_failed(doing: &str, e: crypto::Error) -> Error {
    match e {
        crypto::Error::Unavailable(_) | crypto::Error::Conflict(_) => {
            Error::Unavailable(format!("{doing}: {e}"))
        }
        other => Error::Internal(format!("{doing}: {other}")),
    }
}

impl State<'_> {
    /// Checks and encrypts one write request for commit `seq`. `overlay` says which keys the
    /// group's earlier requests put (`true`) or deleted (`false`).
    #[allow(clippy::too_many_arguments)]
    async fn prepare(
        &mut self,
        namespace: &str,
        writes: Vec<Write>,
        must_exist: bool,
        current: Option<Option<u64>>,
        limits: &Limits,
        seq: u64,
        overlay: &mut HashMap<(String, String), bool>,
        new_namespaces: &mut Vec<(String, String)>,
        tally: &mut Tally,
    ) -> Result<Vec<Change>, Error> {
        check_namespace(namespace)?;
        if writes.is_empty() {
            return Err(Error::BadInput(BadInput::EmptyBatch));
        }
        if writes.len() > limits.batch {
            return Err(Error::TooLarge {
                what: "the batch",
                size: writes.len(),
                limit: limits.batch,
                setting: MAX_BATCH_WRITES.name(),
            });
        }
        for w in &writes {
            match w {
                Write::Put { key, value } => {
                    limits.check_key(key)?;
                    limits.check_value(value)?;
                }
                Write::Delete { key } => limits.check_key(key)?,
            }
        }
        if must_exist {
            for w in &writes {
                if let Write::Delete { key } = w {
                    let exists = match overlay.get(&(namespace.to_owned(), key.clone())) {
                        Some(&exists) => exists,
                        None => self.store.contains(namespace, key).await?,
                    };
                    if !exists {
                        return Err(Error::NotFound(key.clone()));
                    }
                }
            }
        }
        if let Some(expected) = current {
            for w in &writes {
                let Write::Put { key, .. } = w else { continue };
                // A write earlier in this group: the key is at this commit's version, or gone.
                let found = match overlay.get(&(namespace.to_owned(), key.clone())) {
                    Some(true) => Some(seq),
                    Some(false) => None,
                    None => match self.store.get(namespace, key).await? {
                        Some(bytes) => Some(
                            Record::decode(bytes)
                                .ok_or_else(|| Error::Integrity { key: key.clone() })?
                                .version,
                        ),
                        None => None,
                    },
                };
                if found != expected {
                    return Err(Error::Changed {
                        key: key.clone(),
                        expected,
                        found,
                    });
                }
            }
        }
        let has_puts = writes.iter().any(|w| matches!(w, Write::Put { .. }));
        let known = new_namespaces
            .iter()
            .find(|(ns, _)| ns == namespace)
            .map(|(_, id)| id.clone());
        let key_id = match known {
            Some(id) => Some(id),
            None => match self.key_id(namespace).await? {
                Some(id) => Some(id),
                None if has_puts => {
                    let info = self
                        .storage
                        .crypto
                        .call(|reply| crypto::Request::Generate {
                            owner: KEY_OWNER.into(),
                            algorithm: crypto::Algorithm::Aes256gcm,
                            reply,
                        })
                        .await
                        .map_err(unavailable)?
                        .map_err(|e| crypto_failed("creating the namespace key", e))?;
                    new_namespaces.push((namespace.to_owned(), info.id.clone()));
                    Some(info.id)
                }
                None => None,
            },
        };
        let mut changes = Vec::with_capacity(writes.len());
        for w in writes {
            match w {
                Write::Put { key, value } => {
                    let id = key_id
                        .clone()
                        .ok_or_else(|| Error::Internal("a put without a namespace key".into()))?;
                    let aad = associated_data(namespace, &key, seq);
                    let ciphertext = self
                        .storage
                        .crypto
                        .call(|reply| crypto::Request::Encrypt {
                            owner: KEY_OWNER.into(),
                            id,
                            plaintext: value,
                            aad,
                            reply,
                        })
                        .await
                        .map_err(unavailable)?
                        .map_err(|e| crypto_failed("encrypting", e))?;
                    let record = Record {
                        version: seq,
                        ciphertext,
                    }
                    .encode();
                    changes.push(Change::Put {
                        namespace: namespace.to_owned(),
                        key,
                        record,
                    });
                }
                Write::Delete { key } => changes.push(Change::Delete {
                    namespace: namespace.to_owned(),
                    key,
                }),
            }
        }
        tally
            .admit(
                &mut self.usages,
                &self.store,
                namespace,
                &changes,
                limits.quota,
            )
            .await?;
        for change in &changes {
            let (namespace, key, exists) = match change {
                Change::Put { namespace, key, .. } => (namespace, key, true),
                Change::Delete { namespace, key } => (namespace, key, false),
            };
            overlay.insert((namespace.clone(), key.clone()), exists);
        }
        Ok(changes)
    }

    /// Commits a group of write requests as one commit, advances the freshness counter, then
    /// answers each. A request that fails its checks is answered at once and leaves the rest alone.
    /// An error here ends the incarnation: a commit whose counter advance failed leaves memory and
    /// disk disagreeing, which only a fresh start (and its freshness check) sorts out.
    pub(super) async fn commit_group(
        &mut self,
        group: Vec<Pending>,
        limits: &Limits,
    ) -> Result<(), ServiceError> {
        match self.settle().await {
            Ok(()) => {}
            Err(Fatal::No(e)) => {
                for p in group {
                    p.reply.send(Err(e.clone()));
                }
                return Ok(());
            }
            Err(Fatal::Yes(message)) => {
                for p in group {
                    p.reply.send(Err(Error::Internal(message.clone())));
                }
                return Err(ServiceError::new(message));
            }
        }
        // On a shared database, the cluster's commit number is locked first: other nodes'
        // commits wait until this one is written.
        let locked = match self.store.lock().await {
            Ok(locked) => locked,
            Err(e) => {
                for p in group {
                    p.reply.send(Err(e.clone()));
                }
                return Ok(());
            }
        };
        if let Some(locked) = &locked {
            if locked.seq < self.seq {
                let message = format!(
                    "the database's commit number went back from {} to {}: it was replaced by \
                     an older copy while this node ran",
                    self.seq, locked.seq
                );
                for p in group {
                    p.reply.send(Err(Error::Internal(message.clone())));
                }
                return Err(ServiceError::new(message));
            }
            if locked.seq > self.seq {
                // Other nodes committed since: what this node remembers may have changed.
                self.seq = locked.seq;
                self.forget_what_others_changed();
            }
        }
        let seq = self.seq + 1;
        let mut overlay = HashMap::new();
        let mut new_namespaces = Vec::new();
        let mut tally = Tally::default();
        let mut changes = Vec::new();
        let mut accepted = Vec::with_capacity(group.len());
        for p in group {
            let prepared = self
                .prepare(
                    &p.namespace,
                    p.writes,
                    p.must_exist,
                    p.current,
                    limits,
                    seq,
                    &mut overlay,
                    &mut new_namespaces,
                    &mut tally,
                )
                .await;
            match prepared {
                Ok(mut c) => {
                    changes.append(&mut c);
                    accepted.push(p.reply);
                }
                Err(e) => p.reply.send(Err(e)),
            }
        }
        if changes.is_empty() && new_namespaces.is_empty() {
            self.store.release(locked).await;
            return Ok(());
        }
        // Out of the read cache before the commit: once it is acknowledged, no read returns what
        // it replaced.
        for change in &changes {
            let (Change::Put { namespace, key, .. } | Change::Delete { namespace, key }) = change;
            self.storage.cache.forget(namespace, key);
        }
        let written = self
            .store
            .commit(seq, new_namespaces.clone(), changes, tally.usage(), locked)
            .await;
        match self.count(seq, written).await {
            Ok(()) => {
                self.seq = seq;
                self.usages.commit(tally);
                self.namespace_keys.extend(new_namespaces);
                for reply in accepted {
                    reply.send(Ok(seq));
                }
                Ok(())
            }
            Err(Fatal::No(e)) => {
                for reply in accepted {
                    reply.send(Err(e.clone()));
                }
                Ok(())
            }
            Err(Fatal::Yes(message)) => {
                for reply in accepted {
                    reply.send(Err(Error::Internal(message.clone())));
                }
                Err(ServiceError::new(message))
            }
        }
    }

    /// After another node's commit overtook this one's: the commit number the database is at,
    /// and nothing remembered of what it may have changed.
    pub(super) async fn catch_up(&mut self) -> Result<(), Error> {
        self.seq = self.store.seq().await?;
        self.forget_what_others_changed();
        Ok(())
    }

    /// Forgets what other nodes' commits may have changed: the namespaces' usage and keys.
    fn forget_what_others_changed(&mut self) {
        self.usages = Usages::default();
        self.namespace_keys.clear();
    }
}
