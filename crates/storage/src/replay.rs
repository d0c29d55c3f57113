//! The commit log: what each redb commit changes, carried by the freshness counter's advance
//! ([`enclave::CounterLog`]), so a commit costs one sync (the counter's slot) instead of two (the
//! database's and the counter's), and the database is synced once every [`LOG_SLOTS`] commits.
//!
//! The order that makes it safe (`store.rs`): the counter's slot carrying commit `n` is synced
//! before commit `n` goes to redb, and the database is made durable before the slot of a commit
//! it does not hold yet would be overwritten. So at start the database may be behind the counter,
//! and the counter's slots then hold every commit it lacks: they are applied here, in order, onto
//! the authenticated state ([`apply`]). A database behind by a commit the slots no longer hold is
//! an older copy, refused as before (`fresh.rs`).
//!
//! A commit too large for a slot ([`enclave::CounterLog::CAPACITY`]) is committed durably first and
//! the counter advanced after it, carrying nothing: the old order, whose crash gap is a database
//! one ahead of the counter.

use std::collections::BTreeMap;

pub(crate) use enclave::LOG_SLOTS;

use crate::db::{Change, Db, DbError};
use crate::digest::{Root, StateKey};

/// One commit, as the counter's slot carries it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Commit {
        new_namespaces: Vec<(String, String)>,
        changes: Vec<Change>,
    },
    Drop {
        namespace: String,
    },
}

const COMMIT: u8 = 1;
const DROP: u8 = 2;
const PUT: u8 = 1;
const DELETE: u8 = 2;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The bytes of a commit of `changes` recording `new_namespaces`.
pub(crate) fn encode_commit(new_namespaces: &[(String, String)], changes: &[Change]) -> Vec<u8> {
    let size: usize = changes
        .iter()
        .map(|c| match c {
            Change::Put {
                namespace,
                key,
                record,
            } => 13 + namespace.len() + key.len() + record.len(),
            Change::Delete { namespace, key } => 9 + namespace.len() + key.len(),
        })
        .sum();
    let mut out = Vec::with_capacity(9 + size + 64 * new_namespaces.len());
    out.push(COMMIT);
    out.extend_from_slice(&(new_namespaces.len() as u32).to_le_bytes());
    for (namespace, key_id) in new_namespaces {
        put_bytes(&mut out, namespace.as_bytes());
        put_bytes(&mut out, key_id.as_bytes());
    }
    out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    for change in changes {
        match change {
            Change::Put {
                namespace,
                key,
                record,
            } => {
                out.push(PUT);
                put_bytes(&mut out, namespace.as_bytes());
                put_bytes(&mut out, key.as_bytes());
                put_bytes(&mut out, record);
            }
            Change::Delete { namespace, key } => {
                out.push(DELETE);
                put_bytes(&mut out, namespace.as_bytes());
                put_bytes(&mut out, key.as_bytes());
            }
        }
    }
    out
}

/// The bytes of dropping `namespace`.
pub(crate) fn encode_drop(namespace: &str) -> Vec<u8> {
    let mut out = vec![DROP];
    put_bytes(&mut out, namespace.as_bytes());
    out
}

/// Reads what [`encode_commit`] and [`encode_drop`] wrote; `None` for anything else.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn count(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.count()?;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

impl Entry {
    pub(crate) fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut r = Reader(bytes);
        let entry = match r.byte()? {
            COMMIT => {
                let n = r.count()?;
                let mut new_namespaces = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    new_namespaces.push((r.string()?, r.string()?));
                }
                let n = r.count()?;
                let mut changes = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    changes.push(match r.byte()? {
                        PUT => Change::Put {
                            namespace: r.string()?,
                            key: r.string()?,
                            record: r.bytes()?.to_vec(),
                        },
                        DELETE => Change::Delete {
                            namespace: r.string()?,
                            key: r.string()?,
                        },
                        _ => return None,
                    });
                }
                Entry::Commit {
                    new_namespaces,
                    changes,
                }
            }
            DROP => Entry::Drop {
                namespace: r.string()?,
            },
            _ => return None,
        };
        r.0.is_empty().then_some(entry)
    }
}

/// Whether `payloads` hold every commit after `seq` up to `counter`: then the database at `seq`
/// is brought up to the counter by [`apply`].
pub(crate) fn covers(payloads: &BTreeMap<u64, Vec<u8>>, seq: u64, counter: u64) -> bool {
    seq < counter && (seq + 1..=counter).all(|s| payloads.contains_key(&s))
}

/// Applies the commits after `seq` up to `counter` from `payloads` (which [`covers`] them) onto the
/// database at `seq` with state `root`, durably; answers the new root.
pub(crate) fn apply(
    db: &Db,
    keys: &StateKey,
    mut root: Root,
    seq: u64,
    counter: u64,
    payloads: &BTreeMap<u64, Vec<u8>>,
) -> Result<Root, DbError> {
    for s in seq + 1..=counter {
        let entry = payloads
            .get(&s)
            .and_then(|bytes| Entry::decode(bytes))
            .ok_or_else(|| {
                DbError(format!(
                    "the freshness counter's record of commit {s} does not read: it cannot be applied"
                ))
            })?;
        let durable = s == counter;
        root = match entry {
            Entry::Commit {
                new_namespaces,
                changes,
            } => db.commit(s, &new_namespaces, &changes, keys, root, durable)?,
            Entry::Drop { namespace } => db.drop_namespace(s, &namespace, keys, root, durable)?.1,
        };
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written_and_anything_else_is_refused() {
        let changes = vec![
            Change::Put {
                namespace: "acct:a".into(),
                key: "k".into(),
                record: vec![1, 2, 3],
            },
            Change::Delete {
                namespace: "acct:a".into(),
                key: "gone".into(),
            },
        ];
        let namespaces = vec![("acct:a".to_owned(), "key-1".to_owned())];
        let bytes = encode_commit(&namespaces, &changes);
        assert_eq!(
            Entry::decode(&bytes),
            Some(Entry::Commit {
                new_namespaces: namespaces,
                changes
            })
        );
        assert_eq!(
            Entry::decode(&encode_drop("acct:b")),
            Some(Entry::Drop {
                namespace: "acct:b".into()
            })
        );
        for cut in 0..bytes.len() {
            assert_eq!(Entry::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Entry::decode(&longer), None, "trailing bytes");
        assert_eq!(Entry::decode(&[9]), None, "unknown kind");
    }

    #[test]
    fn the_log_covers_a_database_only_when_it_holds_every_commit_it_lacks() {
        let payloads: BTreeMap<u64, Vec<u8>> = (5..=9).map(|s| (s, vec![])).collect();
        assert!(covers(&payloads, 4, 9));
        assert!(covers(&payloads, 8, 9));
        assert!(!covers(&payloads, 9, 9), "nothing to apply");
        assert!(!covers(&payloads, 3, 9), "commit 4 is gone");
        assert!(!covers(&payloads, 4, 10), "commit 10 is not there");
    }
}
