//! The redb layer: four tables and the record format. Everything here is synchronous; the service
//! runs commits on the blocking pool.
//!
//! - `values`: `(namespace, key)` → record: format (1 byte, `1`) | version (8, LE) | ciphertext
//!   from the crypto service.
//! - `namespaces`: namespace → the id of its key in the crypto service.
//! - `meta`: `"commit"` → the sequence number of the last commit; every record's version is the
//!   sequence number of the commit that wrote it.
//! - `state`: `"key"` → the state key, sealed; `"tag"` → the tag of the committed state at that
//!   commit number (`digest.rs`). A commit updates data, commit number and tag in one transaction.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::digest::{Root, StateKey};

const VALUES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("values");
const NAMESPACES: TableDefinition<&str, &str> = TableDefinition::new("namespaces");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const COMMIT: &str = "commit";
const STATE_KEY: &str = "key";
const TAG: &str = "tag";
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

/// What one namespace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) keys: u64,
    /// Keys and records, as stored (a record is its value encrypted, plus a 9-byte header).
    pub(crate) bytes: u64,
}

/// A record as stored: the version that wrote it and the ciphertext. The database file is the
/// host's, so [`Record::decode`] reads any bytes (the fuzz targets in `fuzz/` check it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub version: u64,
    pub ciphertext: Vec<u8>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.ciphertext.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// `None` if the bytes are not a record (so: damaged). Takes the bytes so the ciphertext is not
    /// copied again on the read path.
    pub fn decode(mut bytes: Vec<u8>) -> Option<Record> {
        let version = Self::version_of(&bytes)?;
        bytes.drain(..9);
        Some(Record {
            version,
            ciphertext: bytes,
        })
    }

    /// The version of an encoded record, without decoding the rest.
    pub fn version_of(bytes: &[u8]) -> Option<u64> {
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
#[derive(Debug, PartialEq, Eq)]
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

/// What the database says about its own state, before anything is checked.
#[derive(Debug)]
pub(crate) struct Stored {
    /// The last commit's sequence number, as written (the tag says whether to believe it).
    pub(crate) seq: u64,
    /// The sealed state key and the tag; `None` in a database written before they existed, or
    /// whose state table was removed.
    pub(crate) sealed: Option<(Vec<u8>, Vec<u8>)>,
    /// No values and no namespaces.
    pub(crate) empty: bool,
}

/// Takes out of `root` the entry of `(namespace, key)` as `table` holds it now, if any.
fn take_out(
    table: &redb::Table<'_, (&'static str, &'static str), &'static [u8]>,
    keys: &StateKey,
    root: &mut Root,
    namespace: &str,
    key: &str,
) -> Result<(), DbError> {
    if let Some(old) = table.get((namespace, key)).map_err(DbError::from)? {
        root.toggle(keys.record(namespace, key, old.value()));
    }
    Ok(())
}

/// Writes the commit number and the tag of `root` at it into `txn`.
fn write_tag(
    txn: &redb::WriteTransaction,
    seq: u64,
    keys: &StateKey,
    root: &Root,
) -> Result<(), DbError> {
    txn.open_table(META)
        .map_err(DbError::from)?
        .insert(COMMIT, seq)
        .map_err(DbError::from)?;
    txn.open_table(STATE)
        .map_err(DbError::from)?
        .insert(TAG, keys.tag(seq, root).as_slice())
        .map_err(DbError::from)?;
    Ok(())
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

    /// The commit number, the sealed state key and tag, and whether there is any data.
    pub(crate) fn stored(&self) -> Result<Stored, DbError> {
        guarded(|| {
            let txn = self.db().begin_read().map_err(DbError::from)?;
            let meta = txn.open_table(META).map_err(DbError::from)?;
            let seq = meta
                .get(COMMIT)
                .map_err(DbError::from)?
                .map_or(0, |v| v.value());
            let sealed = match txn.open_table(STATE) {
                Ok(t) => {
                    let get = |name| {
                        t.get(name)
                            .map(|v| v.map(|v| v.value().to_vec()))
                            .map_err(DbError::from)
                    };
                    get(STATE_KEY)?.zip(get(TAG)?)
                }
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(DbError::from(e)),
            };
            let values = txn.open_table(VALUES).map_err(DbError::from)?;
            let namespaces = txn.open_table(NAMESPACES).map_err(DbError::from)?;
            let empty = values.is_empty().map_err(DbError::from)?
                && namespaces.is_empty().map_err(DbError::from)?;
            Ok(Stored { seq, sealed, empty })
        })
    }

    /// The root over every value and namespace mapping, and how many entries there are: one scan
    /// of the database, made once at start.
    pub(crate) fn scan(&self, keys: &StateKey) -> Result<(Root, u64), DbError> {
        guarded(|| {
            let txn = self.db().begin_read().map_err(DbError::from)?;
            let mut root = Root::default();
            let mut entries = 0u64;
            let values = txn.open_table(VALUES).map_err(DbError::from)?;
            for entry in values.iter().map_err(DbError::from)? {
                let (k, v) = entry.map_err(DbError::from)?;
                let (namespace, key) = k.value();
                root.toggle(keys.record(namespace, key, v.value()));
                entries += 1;
            }
            let namespaces = txn.open_table(NAMESPACES).map_err(DbError::from)?;
            for entry in namespaces.iter().map_err(DbError::from)? {
                let (k, v) = entry.map_err(DbError::from)?;
                root.toggle(keys.namespace(k.value(), v.value()));
                entries += 1;
            }
            Ok((root, entries))
        })
    }

    /// Seals the state as it is: commit number `seq`, the tag of `root` at it, and the sealed
    /// state key if given (a new key). For a new database and for a state the operator accepted.
    pub(crate) fn seal_state(
        &self,
        seq: u64,
        keys: &StateKey,
        root: &Root,
        sealed_key: Option<&[u8]>,
    ) -> Result<(), DbError> {
        guarded(|| {
            let txn = self.db().begin_write().map_err(DbError::from)?;
            if let Some(sealed) = sealed_key {
                txn.open_table(STATE)
                    .map_err(DbError::from)?
                    .insert(STATE_KEY, sealed)
                    .map_err(DbError::from)?;
            }
            write_tag(&txn, seq, keys, root)?;
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

    /// What `namespace` holds: its keys, and their bytes as stored (key and record).
    pub(crate) fn usage(&self, namespace: &str) -> Result<Usage, DbError> {
        guarded(|| {
            let txn = self.db().begin_read().map_err(DbError::from)?;
            let t = txn.open_table(VALUES).map_err(DbError::from)?;
            let mut usage = Usage::default();
            for entry in t.range((namespace, "")..).map_err(DbError::from)? {
                let (k, v) = entry.map_err(DbError::from)?;
                let (ns, key) = k.value();
                if ns != namespace {
                    break;
                }
                usage.keys += 1;
                usage.bytes += (key.len() + v.value().len()) as u64;
            }
            Ok(usage)
        })
    }

    /// The bytes one stored entry takes (key and record), if it exists.
    pub(crate) fn entry_bytes(&self, namespace: &str, key: &str) -> Result<Option<u64>, DbError> {
        guarded(|| {
            let txn = self.db().begin_read().map_err(DbError::from)?;
            let t = txn.open_table(VALUES).map_err(DbError::from)?;
            Ok(t.get((namespace, key))
                .map_err(DbError::from)?
                .map(|v| (key.len() + v.value().len()) as u64))
        })
    }

    /// Commits `changes` as sequence number `seq`, recording `new_namespaces` (namespace, key id),
    /// and the tag of the new state; `root` is the committed state's, and the new one is answered.
    /// Deletes of absent keys are no-ops. A commit that is not `durable` is on disk only once a
    /// later durable one is (`replay.rs` says when that is enough).
    pub(crate) fn commit(
        &self,
        seq: u64,
        new_namespaces: &[(String, String)],
        changes: &[Change],
        keys: &StateKey,
        mut root: Root,
        durable: bool,
    ) -> Result<Root, DbError> {
        guarded(|| {
            let txn = self.begin_write(durable)?;
            {
                let mut values = txn.open_table(VALUES).map_err(DbError::from)?;
                for change in changes {
                    match change {
                        Change::Put {
                            namespace,
                            key,
                            record,
                        } => {
                            take_out(&values, keys, &mut root, namespace, key)?;
                            root.toggle(keys.record(namespace, key, record));
                            values
                                .insert((namespace.as_str(), key.as_str()), record.as_slice())
                                .map_err(DbError::from)?;
                        }
                        Change::Delete { namespace, key } => {
                            take_out(&values, keys, &mut root, namespace, key)?;
                            values
                                .remove((namespace.as_str(), key.as_str()))
                                .map_err(DbError::from)?;
                        }
                    }
                }
                let mut namespaces = txn.open_table(NAMESPACES).map_err(DbError::from)?;
                for (namespace, key_id) in new_namespaces {
                    let old = namespaces
                        .insert(namespace.as_str(), key_id.as_str())
                        .map_err(DbError::from)?;
                    if let Some(old) = old {
                        root.toggle(keys.namespace(namespace, old.value()));
                    }
                    root.toggle(keys.namespace(namespace, key_id));
                }
            }
            write_tag(&txn, seq, keys, &root)?;
            txn.commit().map_err(DbError::from)?;
            Ok(root)
        })
    }

    /// Deletes every value of `namespace` and its key mapping, as commit `seq` (with the tag of
    /// the new state, as [`Db::commit`]); answers how many values there were and the new root.
    pub(crate) fn drop_namespace(
        &self,
        seq: u64,
        namespace: &str,
        keys: &StateKey,
        mut root: Root,
        durable: bool,
    ) -> Result<(usize, Root), DbError> {
        guarded(|| {
            let txn = self.begin_write(durable)?;
            let dropped;
            {
                let mut values = txn.open_table(VALUES).map_err(DbError::from)?;
                let mut names = Vec::new();
                for entry in values.range((namespace, "")..).map_err(DbError::from)? {
                    let (k, v) = entry.map_err(DbError::from)?;
                    let (ns, key) = k.value();
                    if ns != namespace {
                        break;
                    }
                    root.toggle(keys.record(ns, key, v.value()));
                    names.push(key.to_owned());
                }
                for key in &names {
                    values
                        .remove((namespace, key.as_str()))
                        .map_err(DbError::from)?;
                }
                dropped = names.len();
                let mut namespaces = txn.open_table(NAMESPACES).map_err(DbError::from)?;
                if let Some(old) = namespaces.remove(namespace).map_err(DbError::from)? {
                    root.toggle(keys.namespace(namespace, old.value()));
                }
            }
            write_tag(&txn, seq, keys, &root)?;
            txn.commit().map_err(DbError::from)?;
            Ok((dropped, root))
        })
    }

    fn begin_write(&self, durable: bool) -> Result<redb::WriteTransaction, DbError> {
        let mut txn = self.db().begin_write().map_err(DbError::from)?;
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| DbError(format!("a commit without a sync: {e}")))?;
        }
        Ok(txn)
    }

    /// Makes every commit so far durable (an empty commit that syncs).
    pub(crate) fn sync(&self) -> Result<(), DbError> {
        guarded(|| {
            self.db()
                .begin_write()
                .map_err(DbError::from)?
                .commit()
                .map_err(DbError::from)
        })
    }

    /// Whether `key` exists.
    #[cfg(test)]
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
        let k = StateKey::of(&[1; 32]);
        let root = db
            .commit(
                1,
                &[("alice".into(), "key_x".into())],
                &changes,
                &k,
                Root::default(),
                true,
            )
            .expect("commit");
        let root = db
            .commit(
                2,
                &[("bob".into(), "key_y".into())],
                &[Change::Put {
                    namespace: "bob".into(),
                    key: "a/9".into(),
                    record: rec(2),
                }],
                &k,
                root,
                true,
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
        assert_eq!(db.stored().expect("stored").seq, 2);
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
            &k,
            root,
            true,
        )
        .expect("commit");
        assert!(!db.contains("alice", "a").expect("contains"));
    }

    /// The root a commit keeps up to date is the root a scan finds, through puts over existing
    /// keys, deletes of present and absent keys, and a dropped namespace; and each commit's tag is
    /// the tag of that root at its commit number.
    #[test]
    fn the_incremental_root_is_the_scanned_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("s.redb")).expect("open");
        let k = StateKey::of(&[9; 32]);
        let put = |ns: &str, key: &str, v: u64| Change::Put {
            namespace: ns.into(),
            key: key.into(),
            record: Record {
                version: v,
                ciphertext: vec![v as u8; 3],
            }
            .encode(),
        };
        let delete = |ns: &str, key: &str| Change::Delete {
            namespace: ns.into(),
            key: key.into(),
        };
        let check = |seq: u64, root: Root| {
            let (scanned, _) = db.scan(&k).expect("scan");
            assert_eq!(scanned, root, "commit {seq}");
            let stored = db.stored().expect("stored");
            assert_eq!(stored.seq, seq);
            let (_, tag) = stored.sealed.expect("sealed");
            assert!(k.verify(seq, &scanned, &tag), "commit {seq}");
        };
        db.seal_state(0, &k, &Root::default(), Some(b"a sealed key"))
            .expect("seal");
        let mut root = Root::default();
        type NewNamespaces = Vec<(String, String)>;
        let commits: Vec<(NewNamespaces, Vec<Change>)> = vec![
            (
                vec![("a".into(), "ka".into()), ("b".into(), "kb".into())],
                vec![put("a", "1", 1), put("a", "2", 1), put("b", "1", 1)],
            ),
            (
                vec![],
                vec![put("a", "1", 2), delete("a", "2"), delete("a", "zz")],
            ),
            (vec![("a".into(), "ka2".into())], vec![put("a", "3", 3)]),
        ];
        for (i, (namespaces, changes)) in commits.into_iter().enumerate() {
            let seq = i as u64 + 1;
            root = db
                .commit(seq, &namespaces, &changes, &k, root, true)
                .expect("commit");
            check(seq, root);
        }
        let (dropped, root) = db.drop_namespace(4, "a", &k, root, true).expect("drop");
        assert_eq!(dropped, 2);
        check(4, root);
    }
}
