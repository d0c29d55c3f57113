//! The redb layer: three tables and the record format. Everything here is synchronous; the service
//! runs commits on the blocking pool.
//!
//! - `values`: `(namespace, key)` → record: format (1 byte, `1`) | version (8, LE) | ciphertext
//!   from the crypto service.
//! - `namespaces`: namespace → the id of its key in the crypto service.
//! - `meta`: `"commit"` → the sequence number of the last commit; every record's version is the
//!   sequence number of the commit that wrote it.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const VALUES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("values");
const NAMESPACES: TableDefinition<&str, &str> = TableDefinition::new("namespaces");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const COMMIT: &str = "commit";
const FORMAT: u8 = 1;

/// A failure of the database itself (not of one record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage database: {0}")]
pub struct DbError(pub String);

impl DbError {
    fn from(e: impl Into<redb::Error>) -> DbError {
        DbError(e.into().to_string())
    }
}

/// Runs a redb operation, turning a panic into an error: redb trusts its file and panics on some
/// damage (found by flipping every byte of a database), and damage must be an error, not a crash.
fn guarded<T>(f: impl FnOnce() -> Result<T, DbError>) -> Result<T, DbError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no detail");
            Err(DbError(format!("the database file is damaged ({detail})")))
        }
    }
}

/// Creates `path` with mode 0600 if it does not exist, and sets an existing file's mode to 0600.
fn private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

/// A record as stored: the version that wrote it and the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) version: u64,
    pub(crate) ciphertext: Vec<u8>,
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.ciphertext.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// `None` if the bytes are not a record (so: damaged). Takes the bytes so the ciphertext is not
    /// copied again on the read path.
    pub(crate) fn decode(mut bytes: Vec<u8>) -> Option<Record> {
        let version = Self::version_of(&bytes)?;
        bytes.drain(..9);
        Some(Record {
            version,
            ciphertext: bytes,
        })
    }

    /// The version of an encoded record, without decoding the rest.
    pub(crate) fn version_of(bytes: &[u8]) -> Option<u64> {
        match bytes {
            [FORMAT, version @ ..] if version.len() >= 8 => {
                Some(u64::from_le_bytes(version[..8].try_into().ok()?))
            }
            _ => None,
        }
    }
}

/// The associated data of a value: it binds namespace, key and version, so a ciphertext moved to
/// another key, another namespace or another version does not decrypt.
pub(crate) fn associated_data(namespace: &str, key: &str, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + namespace.len() + key.len());
    aad.extend_from_slice(b"cloister storage v1\0");
    for part in [namespace.as_bytes(), key.as_bytes()] {
        aad.extend_from_slice(&(part.len() as u32).to_le_bytes());
        aad.extend_from_slice(part);
    }
    aad.extend_from_slice(&version.to_le_bytes());
    aad
}

/// One change in a commit.
#[derive(Debug)]
pub(crate) enum Change {
    Put {
        namespace: String,
        key: String,
        record: Vec<u8>,
    },
    Delete {
        namespace: String,
        key: String,
    },
}

/// What a listing returns per key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Listed {
    pub key: String,
    pub version: u64,
}

#[derive(Debug)]
pub(crate) struct Db {
    /// Always `Some` until dropped; taken in `drop` so closing is guarded too.
    db: Option<Database>,
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            let _ = guarded(|| {
                drop(db);
                Ok(())
            });
        }
    }
}

impl Db {
    fn db(&self) -> &Database {
        self.db.as_ref().expect("present until dropped")
    }

    /// Opens or creates the database; redb repairs an interrupted commit here. The file is the
    /// owner's alone (0600), like every other file in the data directory, also when an earlier
    /// version left it readable by others.
    pub(crate) fn open(path: &Path) -> Result<Db, DbError> {
        private(path).map_err(|e| {
            DbError(format!(
                "cannot make {} readable by its owner only: {e}",
                path.display()
            ))
        })?;
        guarded(|| {
            let db = Database::create(path).map_err(DbError::from)?;
            // Tables exist from the first open on, so readers never meet a missing table. A database
            // that has them is not written to here: opening changes nothing on disk.
            let fresh = {
                let txn = db.begin_read().map_err(DbError::from)?;
                match txn.open_table(META) {
                    Ok(_) => false,
                    Err(redb::TableError::TableDoesNotExist(_)) => true,
                    Err(e) => return Err(DbError::from(e)),
                }
            };
            if fresh {
                let txn = db.begin_write().map_err(DbError::from)?;
                txn.open_table(VALUES).map_err(DbError::from)?;
                txn.open_table(NAMESPACES).map_err(DbError::from)?;
                txn.open_table(META).map_err(DbError::from)?;
                txn.commit().map_err(DbError::from)?;
            }
            Ok(Db { db: Some(db) })
        })
    }

    pub(crate) fn commit_seq(&self) -> Result<u64, DbError> {
        guarded(|| {
            let txn = self.db().begin_read().map_err(DbError::from)?;
            let meta = txn.open_table(META).map_err(DbError::from)?;
            Ok(meta
                .get(COMMIT)
                .map_err(DbError::from)?
                .map_or(0, |v| v.value()))
        })
    }

    /// Moves the commit sequence forward without changing data (an accepted rollback).
    pub(crate) fn fast_forward(&self, seq: u64) -> Result<(), DbError> {
        guarded(|| {
            let txn = self.db().begin_write().map_err(DbError::from)?;
            txn.open_table(META)
                .map_err(DbError::from)?
                .insert(COMMIT, seq)
                .map_err(DbError::from)?;
            txn.commit().map_err(DbError::from)
        })
    }

    pub(crate) fn namespace_key(&self, namespace: &str) -> Result<Option<String>, DbError> {
        guarded(|| {
            let txn = self.db().begin_read().map_err(DbError::from)?;
            let t = txn.open_table(NAMESPACES).map_err(DbError::from)?;
            Ok(t.get(namespace)
                .map_err(DbError::from)?
                .map(|v| v.value().to_owned()))
        })
    }

    pub(crate) fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        guarded(|| {
            let txn = self.db().begin_read().map_err(DbError::from)?;
            let t = txn.open_table(VALUES).map_err(DbError::from)?;
            Ok(t.get((namespace, key))
                .map_err(DbError::from)?
                .map(|v| v.value().to_vec()))
        })
    }

    /// Up to `limit` keys of `namespace` starting with `prefix`, strictly after `after`; and
    /// whether more follow.
    pub(crate) fn list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Listed>, bool), DbError> {
        guarded(|| {
            let txn = self.db().begin_read().map_err(DbError::from)?;
            let t = txn.open_table(VALUES).map_err(DbError::from)?;
            let start = match after {
                Some(a) if a > prefix => a,
                _ => prefix,
            };
            let mut out = Vec::new();
            for entry in t.range((namespace, start)..).map_err(DbError::from)? {
                let (k, v) = entry.map_err(DbError::from)?;
                let (ns, key) = k.value();
                if ns != namespace || !key.starts_with(prefix) {
                    break;
                }
                if after.is_some_and(|a| key <= a) {
                    continue;
                }
                if out.len() == limit {
                    return Ok((out, true));
                }
                // A damaged record still lists (with version 0): reading it names the damage.
                let version = Record::version_of(v.value()).unwrap_or(0);
                out.push(Listed {
                    key: key.to_owned(),
                    version,
                });
            }
            Ok((out, false))
        })
    }

    /// Commits `changes` as sequence number `seq`, recording `new_namespaces` (namespace, key id).
    /// Deletes of absent keys are no-ops.
    pub(crate) fn commit(
        &self,
        seq: u64,
        new_namespaces: &[(String, String)],
        changes: &[Change],
    ) -> Result<(), DbError> {
        guarded(|| {
            let txn = self.db().begin_write().map_err(DbError::from)?;
            {
                let mut values = txn.open_table(VALUES).map_err(DbError::from)?;
                for change in changes {
                    match change {
                        Change::Put {
                            namespace,
                            key,
                            record,
                        } => {
                            values
                                .insert((namespace.as_str(), key.as_str()), record.as_slice())
                                .map_err(DbError::from)?;
                        }
                        Change::Delete { namespace, key } => {
                            values
                                .remove((namespace.as_str(), key.as_str()))
                                .map_err(DbError::from)?;
                        }
                    }
                }
                let mut namespaces = txn.open_table(NAMESPACES).map_err(DbError::from)?;
                for (namespace, key_id) in new_namespaces {
                    namespaces
                        .insert(namespace.as_str(), key_id.as_str())
                        .map_err(DbError::from)?;
                }
                txn.open_table(META)
                    .map_err(DbError::from)?
                    .insert(COMMIT, seq)
                    .map_err(DbError::from)?;
            }
            txn.commit().map_err(DbError::from)
        })
    }

    /// Deletes every value of `namespace` and its key mapping, as commit `seq`; answers how many
    /// values there were.
    pub(crate) fn drop_namespace(&self, seq: u64, namespace: &str) -> Result<usize, DbError> {
        guarded(|| {
            let txn = self.db().begin_write().map_err(DbError::from)?;
            let dropped;
            {
                let mut values = txn.open_table(VALUES).map_err(DbError::from)?;
                let mut keys = Vec::new();
                for entry in values.range((namespace, "")..).map_err(DbError::from)? {
                    let (k, _) = entry.map_err(DbError::from)?;
                    let (ns, key) = k.value();
                    if ns != namespace {
                        break;
                    }
                    keys.push(key.to_owned());
                }
                for key in &keys {
                    values
                        .remove((namespace, key.as_str()))
                        .map_err(DbError::from)?;
                }
                dropped = keys.len();
                txn.open_table(NAMESPACES)
                    .map_err(DbError::from)?
                    .remove(namespace)
                    .map_err(DbError::from)?;
                txn.open_table(META)
                    .map_err(DbError::from)?
                    .insert(COMMIT, seq)
                    .map_err(DbError::from)?;
            }
            txn.commit().map_err(DbError::from)?;
            Ok(dropped)
        })
    }

    /// Whether `key` exists (for deletes that must name a missing key).
    pub(crate) fn contains(&self, namespace: &str, key: &str) -> Result<bool, DbError> {
        Ok(self.get(namespace, key)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_not_a_record() {
        let r = Record {
            version: 42,
            ciphertext: vec![1, 2, 3],
        };
        assert_eq!(Record::decode(r.encode()), Some(r.clone()));
        let mut bad = r.encode();
        bad[0] = 2;
        assert_eq!(Record::decode(bad), None);
        assert_eq!(Record::decode(vec![FORMAT, 0, 0]), None);
        assert_eq!(Record::decode(vec![]), None);
    }

    #[test]
    fn associated_data_is_unambiguous() {
        assert_ne!(associated_data("ab", "c", 1), associated_data("a", "bc", 1));
        assert_ne!(associated_data("a", "b", 1), associated_data("a", "b", 2));
    }

    #[test]
    fn the_database_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("storage.redb");
        let mode = || {
            std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        drop(Db::open(&path).expect("created"));
        assert_eq!(mode(), 0o600, "a new database");
        // A file an earlier version created 0644 is made private when opened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        drop(Db::open(&path).expect("opened"));
        assert_eq!(mode(), 0o600, "an existing database");
    }

    #[test]
    fn listing_pages_by_prefix_within_one_namespace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("s.redb")).expect("open");
        let rec = |v| {
            Record {
                version: v,
                ciphertext: vec![0; 4],
            }
            .encode()
        };
        let changes: Vec<Change> = ["a/1", "a/2", "a/3", "b/1", "a"]
            .iter()
            .map(|k| Change::Put {
                namespace: "alice".into(),
                key: (*k).into(),
                record: rec(1),
            })
            .collect();
        db.commit(1, &[("alice".into(), "key_x".into())], &changes)
            .expect("commit");
        db.commit(
            2,
            &[("bob".into(), "key_y".into())],
            &[Change::Put {
                namespace: "bob".into(),
                key: "a/9".into(),
                record: rec(2),
            }],
        )
        .expect("commit");
        let keys = |(l, more): (Vec<Listed>, bool)| {
            (l.into_iter().map(|l| l.key).collect::<Vec<_>>(), more)
        };
        assert_eq!(
            keys(db.list("alice", "a/", None, 2).expect("list")),
            (vec!["a/1".to_owned(), "a/2".to_owned()], true)
        );
        assert_eq!(
            keys(db.list("alice", "a/", Some("a/2"), 2).expect("list")),
            (vec!["a/3".to_owned()], false)
        );
        assert_eq!(
            keys(db.list("alice", "", None, 10).expect("list")).0,
            ["a", "a/1", "a/2", "a/3", "b/1"]
        );
        assert_eq!(keys(db.list("bob", "", None, 10).expect("list")).0, ["a/9"]);
        assert_eq!(db.commit_seq().expect("seq"), 2);
        assert_eq!(
            db.namespace_key("alice").expect("ns").as_deref(),
            Some("key_x")
        );
        db.commit(
            3,
            &[],
            &[
                Change::Delete {
                    namespace: "alice".into(),
                    key: "a".into(),
                },
                Change::Delete {
                    namespace: "alice".into(),
                    key: "nope".into(),
                },
            ],
        )
        .expect("commit");
        assert!(!db.contains("alice", "a").expect("contains"));
    }
}
