//! Values read lately, decrypted, kept in enclave memory so a read of a hot key costs neither the
//! database nor AES-GCM, and so the HTTP API can answer it on its own task without a bus hop
//! ([`Reads`]).
//!
//! The storage service is the only writer (redb has one): it fills the cache from its own reads,
//! and takes out every key a commit writes before the commit is made, so once a write is
//! acknowledged no read, in the service or through [`Reads`], returns the value it replaced. An
//! incarnation empties the cache when it starts, and on a database shared with other nodes
//! (PostgreSQL) nothing is cached: their commits would not take anything out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use runtime::setting::Setting;
use tokio::time::Instant;

use crate::{Handle, Value};

/// Most bytes of values (and their keys) the read cache holds (`read_cache_bytes`; 0: none).
pub const READ_CACHE_BYTES: Setting<usize> = Setting::new(
    "read_cache_bytes",
    16 << 20,
    0,
    1 << 30,
    "most bytes of decrypted values kept in enclave memory for reads (0: none)",
);

/// Values larger than this are not cached: one would push out many small ones.
const LARGEST: usize = 64 << 10;

#[derive(Debug, Default)]
struct Inner {
    /// Namespace → key → value.
    values: HashMap<String, HashMap<String, Value>>,
    bytes: usize,
    budget: usize,
}

fn size(key: &str, value: &Value) -> usize {
    key.len() + value.data.len() + 64
}

/// The cache, shared by the recipe's incarnations and lent out as [`Reads`].
#[derive(Debug, Default)]
pub(crate) struct ReadCache(RwLock<Inner>);

impl ReadCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, namespace: &str, key: &str) -> Option<Value> {
        self.read().values.get(namespace)?.get(key).cloned()
    }

    /// Keeps `value`, read from the database, if it fits; older entries make room.
    pub(crate) fn insert(&self, namespace: &str, key: &str, value: &Value) {
        let cost = size(key, value);
        let mut inner = self.write();
        if value.data.len() > LARGEST || cost > inner.budget {
            return;
        }
        let Inner {
            values,
            bytes,
            budget,
        } = &mut *inner;
        // Room first: whole namespaces other than this one, then keys of this one.
        while *bytes + cost > *budget {
            let victim = values.keys().find(|n| n.as_str() != namespace).cloned();
            match victim {
                Some(n) => {
                    let gone = values.remove(&n).unwrap_or_default();
                    *bytes -= gone.iter().map(|(k, v)| size(k, v)).sum::<usize>();
                }
                None => {
                    let Some(own) = values.get_mut(namespace) else {
                        break;
                    };
                    let Some(k) = own.keys().next().cloned() else {
                        break;
                    };
                    if let Some(v) = own.remove(&k) {
                        *bytes -= size(&k, &v);
                    }
                }
            }
        }
        let old = values
            .entry(namespace.to_owned())
            .or_default()
            .insert(key.to_owned(), value.clone());
        *bytes += cost;
        if let Some(old) = old {
            *bytes -= size(key, &old);
        }
    }

    /// Takes out `key`: a commit is about to write it.
    pub(crate) fn forget(&self, namespace: &str, key: &str) {
        let mut inner = self.write();
        let removed = inner
            .values
            .get_mut(namespace)
            .and_then(|keys| keys.remove(key));
        if let Some(v) = removed {
            inner.bytes -= size(key, &v);
        }
    }

    /// Takes out every key of `namespace`: it is about to be dropped.
    pub(crate) fn forget_namespace(&self, namespace: &str) {
        let mut inner = self.write();
        if let Some(gone) = inner.values.remove(namespace) {
            inner.bytes -= gone.iter().map(|(k, v)| size(k, v)).sum::<usize>();
        }
    }

    /// Empties the cache and sets its budget (0: nothing is cached).
    pub(crate) fn reset(&self, budget: usize) {
        let mut inner = self.write();
        inner.values.clear();
        inner.bytes = 0;
        inner.budget = budget;
    }

    /// Sets the budget, emptying the cache if it shrank.
    pub(crate) fn set_budget(&self, budget: usize) {
        let shrank = budget < self.read().budget;
        if shrank {
            self.reset(budget);
        } else {
            self.write().budget = budget;
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.read().bytes
    }
}

/// Lent by the storage recipe ([`crate::Storage::reads`]): answers a read of a value the service
/// has in its read cache on the caller's own task, and counts it in the service's figures as the
/// `get` it replaces. It answers only while the service takes requests; anything it cannot answer
/// is the caller's to ask the service.
#[derive(Debug, Clone)]
pub struct Reads(pub(crate) Arc<ReadCache>);

impl Reads {
    /// The value at `key` in `namespace`, if the service has it cached and takes requests now.
    pub fn get(&self, handle: &Handle, namespace: &str, key: &str) -> Option<Value> {
        let started = Instant::now();
        if !handle.is_open() {
            return None;
        }
        let value = self.0.get(namespace, key)?;
        handle.count_local("get", started);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: usize, version: u64) -> Value {
        Value {
            data: vec![7; n],
            version,
        }
    }

    #[test]
    fn the_cache_keeps_to_its_budget_and_forgets_what_it_is_told() {
        let cache = ReadCache::default();
        cache.insert("a", "k", &value(10, 1));
        assert_eq!(cache.get("a", "k"), None, "no budget, nothing kept");
        cache.reset(1000);
        cache.insert("a", "k", &value(10, 1));
        cache.insert("a", "k", &value(20, 2));
        assert_eq!(cache.get("a", "k"), Some(value(20, 2)));
        assert_eq!(cache.bytes(), size("k", &value(20, 2)));
        // Over the budget: other namespaces go first, then this one's keys.
        cache.insert("b", "x", &value(300, 1));
        cache.insert("a", "l", &value(300, 1));
        cache.insert("a", "m", &value(300, 1));
        assert!(cache.bytes() <= 1000);
        assert_eq!(cache.get("b", "x"), None);
        assert_eq!(cache.get("a", "m"), Some(value(300, 1)));
        let before = cache.bytes();
        cache.forget("a", "m");
        assert_eq!(cache.get("a", "m"), None);
        assert_eq!(cache.bytes(), before - size("m", &value(300, 1)));
        cache.forget("a", "nothing");
        cache.forget_namespace("a");
        assert_eq!(cache.bytes(), 0);
        // A value too large for the cache is not kept; a smaller budget empties it.
        cache.insert("a", "big", &value(LARGEST + 1, 1));
        assert_eq!(cache.get("a", "big"), None);
        cache.insert("a", "k", &value(10, 1));
        cache.set_budget(2000);
        assert_eq!(
            cache.get("a", "k"),
            Some(value(10, 1)),
            "a larger budget keeps"
        );
        cache.set_budget(500);
        assert_eq!(cache.get("a", "k"), None, "a smaller one empties");
        assert_eq!(cache.bytes(), 0);
    }
}
