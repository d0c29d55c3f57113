//! Per-account quotas: how many keys, and how many bytes as stored, one namespace may hold
//! (`max_account_keys`, `max_account_bytes`). The service's own namespaces (`@...`) have none.
//!
//! What a namespace holds is read from the database once, when it is first written in an
//! incarnation, and kept up to date by every commit. A group commit checks each request against the
//! usage its earlier requests left ([`Tally`]), so a group cannot pass a quota that its requests
//! one by one could not. A request that does not add to an exceeded figure (a delete, a smaller
//! overwrite) is never refused: an account over its quota (the quota lowered) can always shrink.

use std::collections::HashMap;

use runtime::setting::Setting;

use crate::Error;
use crate::db::{Change, Usage};
use crate::store::Store;

/// Most keys one account's namespace may hold (`max_account_keys`).
pub const MAX_ACCOUNT_KEYS: Setting<u64> = Setting::new(
    "max_account_keys",
    1_000_000,
    1,
    1 << 40,
    "most keys one account's namespace may hold",
);
/// Most bytes one account's namespace may hold, keys and encrypted values as stored
/// (`max_account_bytes`).
pub const MAX_ACCOUNT_BYTES: Setting<u64> = Setting::new(
    "max_account_bytes",
    1 << 30,
    1,
    1 << 50,
    "most bytes one account's namespace may hold, keys and encrypted values as stored",
);

/// The quotas in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub(crate) keys: u64,
    pub(crate) bytes: u64,
}

/// What a refused write would have made the namespace hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Keys,
    Bytes,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Exceeded::Keys => "keys",
            Exceeded::Bytes => "bytes",
        })
    }
}

/// Committed usage of the namespaces written so far in this incarnation.
#[derive(Debug, Default)]
pub(crate) struct Usages(HashMap<String, Usage>);

impl Usages {
    /// Forgets a namespace (dropped): read again when next written.
    pub(crate) fn forget(&mut self, namespace: &str) {
        self.0.remove(namespace);
    }

    /// Takes in a committed group's usage.
    pub(crate) fn commit(&mut self, tally: Tally) {
        self.0.extend(tally.usage);
    }
}

/// One group commit's view: usage and entry sizes as its accepted requests leave them.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    usage: HashMap<String, Usage>,
    sizes: HashMap<(String, String), Option<u64>>,
}

impl Tally {
    /// The usage of each namespace the group writes, as its accepted requests leave it.
    pub(crate) fn usage(&self) -> Vec<(String, Usage)> {
        self.usage.iter().map(|(n, u)| (n.clone(), *u)).collect()
    }

    /// Accepts `changes` to `namespace` if they keep it within `quota`, or refuses them and
    /// changes nothing.
    pub(crate) async fn admit(
        &mut self,
        committed: &mut Usages,
        db: &Store,
        namespace: &str,
        changes: &[Change],
        quota: Quota,
    ) -> Result<(), Error> {
        let before = match self.usage.get(namespace) {
            Some(usage) => *usage,
            None => match committed.0.get(namespace) {
                Some(usage) => *usage,
                None => {
                    let usage = db.usage(namespace).await?;
                    committed.0.insert(namespace.to_owned(), usage);
                    usage
                }
            },
        };
        let mut after = before;
        let mut sizes = Vec::with_capacity(changes.len());
        for change in changes {
            let (key, new) = match change {
                Change::Put { key, record, .. } => (key, Some((key.len() + record.len()) as u64)),
                Change::Delete { key, .. } => (key, None),
            };
            let id = (namespace.to_owned(), key.clone());
            let old = match sizes.iter().rev().find(|(k, _)| k == &id) {
                Some((_, size)) => *size,
                None => match self.sizes.get(&id) {
                    Some(size) => *size,
                    None => db.entry_bytes(namespace, key).await?,
                },
            };
            if old.is_some() {
                after.keys = after.keys.saturating_sub(1);
            }
            after.bytes = after.bytes.saturating_sub(old.unwrap_or(0));
            if let Some(new) = new {
                after.keys += 1;
                after.bytes += new;
            }
            sizes.push((id, new));
        }
        if !namespace.starts_with('@') {
            let refuse = |what, used, limit, setting: &Setting<u64>| Error::Quota {
                what,
                used,
                limit,
                setting: setting.name(),
            };
            if after.keys > quota.keys && after.keys > before.keys {
                return Err(refuse(
                    Exceeded::Keys,
                    after.keys,
                    quota.keys,
                    &MAX_ACCOUNT_KEYS,
                ));
            }
            if after.bytes > quota.bytes && after.bytes > before.bytes {
                return Err(refuse(
                    Exceeded::Bytes,
                    after.bytes,
                    quota.bytes,
                    &MAX_ACCOUNT_BYTES,
                ));
            }
        }
        self.usage.insert(namespace.to_owned(), after);
        self.sizes.extend(sizes);
        Ok(())
    }
}
