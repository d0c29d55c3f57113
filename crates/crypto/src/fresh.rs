//! The keystore's freshness: every write is the next *generation*, stored in the keystore's
//! authenticated header and then in the freshness counter `keystore` before the change is
//! answered, so an older `keystore.sealed` (a deleted key back, a rotated key signing with its old
//! version) is refused at start, as storage refuses an older database. The decision is
//! [`enclave::fresh::judge`], shared with storage; an operator accepts a refused keystore with
//! `cloister run --accept-keystore-rollback N`, N the generation found (0 for a keystore written
//! before generations).
//!
//! The keystore is two files: the snapshot `keystore.sealed` and the change log `keystore.log`
//! after it (`changes.rs`). A key operation appends one record to the log as the next
//! generation; after [`COMPACT_AFTER`] records (or when the log cannot be appended to) the next
//! generation is a whole snapshot instead, and the log is emptied. The generation judged is the
//! last record's, so restoring either file, or both, to an older copy is refused here as before.

use std::path::Path;

use enclave::fresh::{Stale, Verdict, judge};
use enclave::{Counters, Platform};

use crate::Error;
use crate::changes::{self, Change, Log, Replayed};
use crate::keys::Key;
use crate::keystore::{Chain, Keystore, Loaded};

/// The freshness counter's name.
const COUNTER: &str = "keystore";

/// Records in the change log before the next change writes a snapshot instead: a key operation
/// writes one key, and one in this many writes them all.
pub(crate) const COMPACT_AFTER: usize = 256;

/// Why the keystore on disk is not taken as the latest one; each names what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaleKeystore {
    #[error(
        "is at generation {found}, but the freshness counter says generation {expected} was \
         written: the host may have replaced it with an older copy (a deleted or rotated key \
         would be back)"
    )]
    RolledBack { found: u64, expected: u64 },
    #[error(
        "is at generation {found}, but the freshness counter {}: the counter file \
         ({COUNTER}.counter) was deleted or replaced, so rollbacks cannot be ruled out",
        match counter { Some(c) => format!("is at {c}"), None => "is missing".to_owned() }
    )]
    CounterLost { found: u64, counter: Option<u64> },
    #[error(
        "has no generation (written by a Cloister older than the keystore's freshness counter), \
         so nothing shows it is current"
    )]
    Unversioned,
}

impl StaleKeystore {
    /// The generation to accept this keystore with (`--accept-keystore-rollback`).
    pub fn found(&self) -> u64 {
        match self {
            StaleKeystore::RolledBack { found, .. } | StaleKeystore::CounterLost { found, .. } => {
                *found
            }
            StaleKeystore::Unversioned => 0,
        }
    }
}

impl From<Stale> for StaleKeystore {
    fn from(stale: Stale) -> StaleKeystore {
        match stale {
            Stale::RolledBack { found, expected } => StaleKeystore::RolledBack { found, expected },
            Stale::CounterLost { found, counter } => StaleKeystore::CounterLost { found, counter },
        }
    }
}

/// Why the keystore could not be opened.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Not fresh: for the operator.
    Stale(StaleKeystore),
    /// Unreadable or the counter failed: a restart may help.
    Failed(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        Refusal::Failed(e)
    }
}

/// A save that did not go through.
#[derive(Debug)]
pub(crate) enum Unsaved {
    /// Nothing was written: undo the change in memory and go on.
    NotWritten(Error),
    /// Written, but the counter did not advance: the change is on disk and not acknowledged, so
    /// the incarnation ends and the next start lets the counter catch up.
    Unacknowledged(Error),
}

/// The keystore with its freshness counter.
#[derive(Debug)]
pub(crate) struct Store {
    file: Keystore,
    /// The change log after the snapshot; `None` until there is a snapshot to chain it to.
    log: Option<Log>,
    counters: Counters,
    /// The generation on disk, and in the counter.
    generation: u64,
}

fn counter_error(e: enclave::SealError) -> Error {
    Error::Keystore(format!("the freshness counter: {e}"))
}

/// An opened keystore: its keys, and the refusal the operator's accept lifted, if it was used.
pub(crate) struct Opened {
    pub(crate) store: Store,
    pub(crate) keys: Vec<Key>,
    pub(crate) accepted: Option<StaleKeystore>,
}

/// A snapshot with its change log replayed after it.
pub(crate) struct Followed {
    pub(crate) keys: Vec<Key>,
    /// The last record's generation (the snapshot's without records); `None` for a `CLKS0001`
    /// snapshot.
    pub(crate) generation: Option<u64>,
    /// What the log is chained to and what replaying it found; `None` when there is no log to
    /// follow (no snapshot, or a `CLKS0001` one).
    pub(crate) log: Option<(Chain, Replayed)>,
}

/// Applies the change log `log_bytes` to the snapshot `loaded`. The log is read only after a
/// `CLKS0002` snapshot: a `CLKS0001` one is refused or rewritten. The paths only name the files
/// in errors.
pub(crate) fn follow(
    loaded: Loaded,
    log_bytes: &[u8],
    path: &Path,
    log_path: &Path,
) -> Result<Followed, Error> {
    let mut keys = loaded.keys;
    match (loaded.generation, loaded.chain) {
        (Some(base), Some(chain)) => {
            let replayed = changes::replay(log_bytes, base, &chain, &mut keys)?;
            Ok(Followed {
                keys,
                generation: Some(replayed.generation),
                log: Some((chain, replayed)),
            })
        }
        (generation, _) if log_bytes.is_empty() => Ok(Followed {
            keys,
            generation,
            log: None,
        }),
        (_, _) => Err(Error::Keystore(format!(
            "{} has records but {} is not a keystore they can follow",
            log_path.display(),
            path.display()
        ))),
    }
}

impl Store {
    /// Loads the keystore at `path` and checks it against its counter (in the same directory);
    /// `accept` is the generation the operator accepted.
    pub(crate) fn open(
        path: &Path,
        platform: &dyn Platform,
        accept: Option<u64>,
    ) -> Result<Opened, Refusal> {
        let file = Keystore::new(path);
        let counters = Counters::new(path.parent().unwrap_or(Path::new(".")));
        let loaded = file.load(platform)?;
        let log_path = changes::path_of(path);
        let log_bytes = changes::read(&log_path)?;
        let Followed {
            keys,
            generation,
            log,
        } = follow(loaded, &log_bytes, path, &log_path)?;
        let (log, tidy) = match log {
            Some((chain, replayed)) => {
                let tidy = (replayed.end < log_bytes.len() as u64).then_some(replayed.end);
                let log = Log::new(
                    log_path.clone(),
                    chain,
                    replayed.tag,
                    replayed.end,
                    replayed.records,
                );
                (Some(log), tidy)
            }
            None => (None, None),
        };
        let counter = counters
            .read_if_present(platform, COUNTER)
            .map_err(counter_error)?;
        let found = generation.unwrap_or(0);
        let verdict = match generation {
            Some(found) => match judge(found, counter, accept) {
                Ok(Verdict::Accepted { stale, to }) => Err((stale.into(), to)),
                Ok(verdict) => Ok(verdict),
                Err(stale) => return Err(Refusal::Stale(stale.into())),
            },
            None if accept == Some(0) => Err((StaleKeystore::Unversioned, counter.unwrap_or(0))),
            None => return Err(Refusal::Stale(StaleKeystore::Unversioned)),
        };
        // Judged: now the log may be tidied (a write cut short, or records a compaction left).
        if let Some(end) = tidy {
            changes::truncate(&log_path, end)?;
        }
        let mut store = Store {
            file,
            log,
            counters,
            generation: found,
        };
        let accepted = match verdict {
            Ok(Verdict::CatchUp) => {
                let now = store
                    .counters
                    .advance(platform, COUNTER)
                    .map_err(counter_error)?;
                if now != found {
                    return Err(Refusal::Failed(Error::Keystore(format!(
                        "the freshness counter advanced to {now} to catch up with generation \
                         {found}: another writer?"
                    ))));
                }
                None
            }
            Ok(_) => {
                store.counter_to(platform, counter, found)?;
                None
            }
            Err((lifted, to)) => {
                // Rewritten at `to` (a `CLKS0001` file too, which gets its generation), then the
                // counter moves: no generation number is ever reused.
                if to != found || generation.is_none() {
                    store.snapshot(platform, &keys, to)?;
                }
                store.generation = to;
                store.counter_to(platform, counter, to)?;
                Some(lifted)
            }
        };
        Ok(Opened {
            store,
            keys,
            accepted,
        })
    }

    /// Moves the counter to `to` unless it is there (creating it at 0 for a new keystore).
    fn counter_to(
        &self,
        platform: &dyn Platform,
        counter: Option<u64>,
        to: u64,
    ) -> Result<(), Error> {
        if counter != Some(to) {
            self.counters
                .advance_to(platform, COUNTER, to)
                .map_err(counter_error)?;
        }
        Ok(())
    }

    /// Writes `keys` whole as `generation`, then empties the log, which now follows it.
    fn snapshot(
        &mut self,
        platform: &dyn Platform,
        keys: &[Key],
        generation: u64,
    ) -> Result<(), Error> {
        let chain = self.file.save(platform, keys, generation)?;
        let log_path = changes::path_of(self.file.path());
        let tag = chain.tag;
        let mut log = Log::new(log_path.clone(), chain, tag, 0, 0);
        // The snapshot is written: what the log still holds is at or below its generation and
        // skipped at start; if it cannot be emptied now, the next change writes a snapshot too.
        log.broken = changes::truncate(&log_path, 0).is_err();
        self.log = Some(log);
        Ok(())
    }

    /// Persists `change` as the next generation, then advances the counter to it: one record
    /// appended to the log, or, every [`COMPACT_AFTER`] records, `keys` (the keys after the
    /// change) written whole.
    pub(crate) fn save(
        &mut self,
        platform: &dyn Platform,
        change: &Change,
        keys: &[Key],
    ) -> Result<(), Unsaved> {
        let next = self.generation + 1;
        let written = match &mut self.log {
            Some(log) if log.records < COMPACT_AFTER && !log.broken => log.append(next, change),
            _ => self.snapshot(platform, keys, next),
        };
        written.map_err(Unsaved::NotWritten)?;
        let now = self
            .counters
            .advance(platform, COUNTER)
            .map_err(|e| Unsaved::Unacknowledged(counter_error(e)))?;
        if now != next {
            return Err(Unsaved::Unacknowledged(Error::Keystore(format!(
                "the freshness counter moved to {now}, expected {next}: another writer?"
            ))));
        }
        self.generation = next;
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Algorithm;
    use crate::keys::{Secret, Version};

    fn key(id: &str) -> Key {
        Key {
            id: id.into(),
            owner: "alice".into(),
            algorithm: Algorithm::Ed25519,
            created_ms: 0,
            versions: vec![Version::new(
                1,
                0,
                Secret::generate(Algorithm::Ed25519),
                Algorithm::Ed25519,
                1,
            )],
        }
    }

    /// The service's way: change the keys in memory, then persist that one change.
    fn put(store: &mut Store, sim: &dyn Platform, keys: &mut Vec<Key>, k: Key) {
        keys.retain(|old| old.id != k.id);
        let change = Change::put(&k);
        keys.push(k);
        store.save(sim, &change, keys).expect("save");
    }

    fn remove(store: &mut Store, sim: &dyn Platform, keys: &mut Vec<Key>, id: &str) {
        keys.retain(|k| k.id != id);
        let change = Change::Remove {
            owner: "alice".into(),
            id: id.into(),
        };
        store.save(sim, &change, keys).expect("save");
    }

    fn refusal(r: Result<Opened, Refusal>) -> StaleKeystore {
        match r {
            Err(Refusal::Stale(stale)) => stale,
            Err(Refusal::Failed(e)) => panic!("failed: {e}"),
            Ok(_) => panic!("opened"),
        }
    }

    fn failure(r: Result<Opened, Refusal>) -> String {
        match r {
            Err(Refusal::Failed(e)) => e.to_string(),
            Err(Refusal::Stale(stale)) => panic!("stale: {stale}"),
            Ok(_) => panic!("opened"),
        }
    }

    fn ids(keys: &[Key]) -> Vec<&str> {
        keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Both files of a keystore, as the host could keep a copy of them.
    struct Copy {
        sealed: Vec<u8>,
        log: Option<Vec<u8>>,
    }

    fn copy(path: &Path) -> Copy {
        Copy {
            sealed: std::fs::read(path).expect("sealed"),
            log: std::fs::read(changes::path_of(path)).ok(),
        }
    }

    fn restore(path: &Path, copy: &Copy) {
        std::fs::write(path, &copy.sealed).expect("sealed");
        match &copy.log {
            Some(log) => std::fs::write(changes::path_of(path), log).expect("log"),
            None => {
                let _ = std::fs::remove_file(changes::path_of(path));
            }
        }
    }

    /// The log's records, as (start, end) byte ranges.
    fn records(log: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos + 4 <= log.len() {
            let len = u32::from_be_bytes(log[pos..pos + 4].try_into().expect("4")) as usize;
            out.push((pos, pos + 4 + len));
            pos += 4 + len;
        }
        out
    }

    #[test]
    fn each_refusal_is_typed_and_each_accept_moves_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = enclave::Simulation::open(dir.path(), b"bin", b"", 1).expect("sim");
        let path = dir.path().join("keystore.sealed");
        let counters = Counters::new(dir.path());
        // New: generation 0, and the counter is created at 0.
        let mut opened = Store::open(&path, &sim, None).expect("new");
        assert_eq!(
            counters.read_if_present(&sim, COUNTER).expect("counter"),
            Some(0)
        );
        let mut keys = Vec::new();
        put(&mut opened.store, &sim, &mut keys, key("a")); // 1
        let one = copy(&path);
        put(&mut opened.store, &sim, &mut keys, key("b")); // 2
        remove(&mut opened.store, &sim, &mut keys, "a"); // 3: a deleted

        // An older copy.
        restore(&path, &one);
        assert_eq!(
            refusal(Store::open(&path, &sim, None)),
            StaleKeystore::RolledBack {
                found: 1,
                expected: 3
            }
        );
        assert_eq!(
            refusal(Store::open(&path, &sim, Some(2))),
            StaleKeystore::RolledBack {
                found: 1,
                expected: 3
            }
        );
        let accepted = Store::open(&path, &sim, Some(1)).expect("accepted");
        assert_eq!(ids(&accepted.keys), ["a"]);
        assert_eq!(accepted.store.generation, 3, "moved up to the counter");
        // Now current: a normal open.
        let mut opened = Store::open(&path, &sim, None).expect("current");
        assert!(opened.accepted.is_none());
        let mut keys = opened.keys;
        put(&mut opened.store, &sim, &mut keys, key("c")); // 4

        // A keystore from before generations (and so before the change log).
        let _ = std::fs::remove_file(changes::path_of(&path));
        let file = Keystore::new(&path);
        file.save_v1(&sim, &[key("old")]).expect("v1");
        assert_eq!(
            refusal(Store::open(&path, &sim, None)),
            StaleKeystore::Unversioned
        );
        let adopted = Store::open(&path, &sim, Some(0)).expect("adopted");
        assert_eq!(adopted.accepted, Some(StaleKeystore::Unversioned));
        assert_eq!(ids(&adopted.keys), ["old"]);
        let reopened = Store::open(&path, &sim, None).expect("now versioned");
        assert_eq!(
            (ids(&reopened.keys), reopened.store.generation),
            (vec!["old"], 4)
        );

        // The counter file deleted.
        std::fs::remove_file(dir.path().join("keystore.counter")).expect("remove");
        assert_eq!(
            refusal(Store::open(&path, &sim, None)),
            StaleKeystore::CounterLost {
                found: 4,
                counter: None
            }
        );
    }

    /// A key operation appends one record; the host cutting the log short, deleting it, taking
    /// a record out of the middle or splicing in one from another keystore is refused.
    #[test]
    fn the_change_log_is_bound_to_its_snapshot_and_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = enclave::Simulation::open(dir.path(), b"bin", b"", 1).expect("sim");
        let path = dir.path().join("keystore.sealed");
        let log_path = changes::path_of(&path);
        let mut opened = Store::open(&path, &sim, None).expect("new");
        let mut keys = Vec::new();
        put(&mut opened.store, &sim, &mut keys, key("a")); // 1: the first write is a snapshot
        let snapshot = std::fs::read(&path).expect("snapshot");
        for id in ["b", "c", "d", "e", "f"] {
            put(&mut opened.store, &sim, &mut keys, key(id)); // 2 to 6
        }
        assert_eq!(
            std::fs::read(&path).expect("snapshot"),
            snapshot,
            "a key operation leaves the snapshot alone"
        );
        let log = std::fs::read(&log_path).expect("log");
        let ranges = records(&log);
        assert_eq!(ranges.len(), 5, "one record per operation");
        let full = copy(&path);
        let current = Store::open(&path, &sim, None).expect("opens");
        assert_eq!(
            (ids(&current.keys), current.store.generation),
            (vec!["a", "b", "c", "d", "e", "f"], 6)
        );

        // The last record cut off: an older keystore.
        std::fs::write(&log_path, &log[..ranges[4].0]).expect("cut");
        assert_eq!(
            refusal(Store::open(&path, &sim, None)),
            StaleKeystore::RolledBack {
                found: 5,
                expected: 6
            }
        );
        // The log deleted: the snapshot alone is older still.
        std::fs::remove_file(&log_path).expect("delete");
        assert_eq!(
            refusal(Store::open(&path, &sim, None)),
            StaleKeystore::RolledBack {
                found: 1,
                expected: 6
            }
        );
        // A record out of the middle.
        let mut holed = log[..ranges[1].0].to_vec();
        holed.extend_from_slice(&log[ranges[1].1..]);
        std::fs::write(&log_path, &holed).expect("hole");
        let reason = failure(Store::open(&path, &sim, None));
        assert!(reason.contains("record 4 where 3 was due"), "{reason}");
        // Two records swapped.
        let mut swapped = log[..ranges[1].0].to_vec();
        swapped.extend_from_slice(&log[ranges[2].0..ranges[2].1]);
        swapped.extend_from_slice(&log[ranges[1].0..ranges[1].1]);
        std::fs::write(&log_path, &swapped).expect("swap");
        let reason = failure(Store::open(&path, &sim, None));
        assert!(reason.contains("record 4 where 3 was due"), "{reason}");
        // A record with its generation edited to fit the hole: its chain does not.
        let mut edited = holed.clone();
        let at = ranges[1].0 + 4;
        edited[at..at + 8].copy_from_slice(&3u64.to_be_bytes());
        edited.extend_from_slice(&log[ranges[2].0..]); // so the edited one is not the last
        std::fs::write(&log_path, &edited).expect("edit");
        let reason = failure(Store::open(&path, &sim, None));
        assert!(
            reason.contains("record 3 fails its integrity check"),
            "{reason}"
        );

        // A record spliced in from another keystore at the same generation.
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other_path = other_dir.path().join("keystore.sealed");
        let mut other = Store::open(&other_path, &sim, None).expect("other");
        let mut other_keys = Vec::new();
        for id in ["x", "y", "z", "w", "v"] {
            put(&mut other.store, &sim, &mut other_keys, key(id));
        }
        let other_log = std::fs::read(changes::path_of(&other_path)).expect("other log");
        let other_ranges = records(&other_log);
        let mut spliced = log[..ranges[1].0].to_vec();
        spliced.extend_from_slice(&other_log[other_ranges[1].0..other_ranges[1].1]);
        spliced.extend_from_slice(&log[ranges[2].0..]);
        std::fs::write(&log_path, &spliced).expect("splice");
        let reason = failure(Store::open(&path, &sim, None));
        assert!(
            reason.contains("record 3 fails its integrity check"),
            "{reason}"
        );
        // The other keystore's whole log after this snapshot.
        std::fs::write(&log_path, &other_log).expect("other log");
        let reason = failure(Store::open(&path, &sim, None));
        assert!(
            reason.contains("record 2 fails its integrity check"),
            "{reason}"
        );

        // Put back as it was, it opens.
        restore(&path, &full);
        let back = Store::open(&path, &sim, None).expect("opens");
        assert_eq!(back.store.generation, 6);
    }

    /// A crash mid-append leaves part of a record that was never acknowledged: dropped at start.
    /// After `COMPACT_AFTER` records the next change is a snapshot and the log starts over; a crash
    /// before the log was emptied leaves records the snapshot covers, which are skipped.
    #[test]
    fn a_torn_append_is_dropped_and_compaction_survives_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = enclave::Simulation::open(dir.path(), b"bin", b"", 1).expect("sim");
        let path = dir.path().join("keystore.sealed");
        let log_path = changes::path_of(&path);
        let mut opened = Store::open(&path, &sim, None).expect("new");
        let mut keys = Vec::new();
        put(&mut opened.store, &sim, &mut keys, key("a")); // 1
        put(&mut opened.store, &sim, &mut keys, key("b")); // 2
        let log = std::fs::read(&log_path).expect("log");
        // Half of a third record, whose counter advance never happened.
        let mut torn = log.clone();
        torn.extend_from_slice(&log[..log.len() / 2]);
        std::fs::write(&log_path, &torn).expect("torn");
        let reopened = Store::open(&path, &sim, None).expect("opens");
        assert_eq!(
            (ids(&reopened.keys), reopened.store.generation),
            (vec!["a", "b"], 2)
        );
        assert_eq!(
            std::fs::read(&log_path).expect("log"),
            log,
            "the torn tail cut off"
        );
        let mut store = reopened.store;
        let mut keys = reopened.keys;
        put(&mut store, &sim, &mut keys, key("c")); // 3, appended after the cut

        // Fill the log up to the compaction.
        let mut n = 0;
        while store.log.as_ref().expect("log").records < COMPACT_AFTER {
            put(&mut store, &sim, &mut keys, key(&format!("k{n}")));
            n += 1;
        }
        let before = std::fs::read(&log_path).expect("full log");
        let generation = store.generation;
        put(&mut store, &sim, &mut keys, key("after")); // a snapshot
        assert_eq!(store.generation, generation + 1);
        assert_eq!(std::fs::read(&log_path).expect("log").len(), 0, "emptied");
        // The crash between the snapshot and emptying the log: the old records come back.
        std::fs::write(&log_path, &before).expect("crash");
        let reopened = Store::open(&path, &sim, None).expect("opens");
        assert_eq!(reopened.store.generation, generation + 1);
        assert_eq!(reopened.keys.len(), keys.len());
        assert_eq!(std::fs::read(&log_path).expect("log").len(), 0, "tidied");
        let mut store = reopened.store;
        put(&mut store, &sim, &mut keys, key("later"));
        let reopened = Store::open(&path, &sim, None).expect("opens");
        assert_eq!(reopened.keys.len(), keys.len());
    }

    /// A keystore written before the change log (a `CLKS0002` file and nothing else) opens as it
    /// is, and the next change goes to a log after it.
    #[test]
    fn a_keystore_from_before_the_log_opens_and_gets_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = enclave::Simulation::open(dir.path(), b"bin", b"", 1).expect("sim");
        let path = dir.path().join("keystore.sealed");
        Keystore::new(&path)
            .save(&sim, &[key("old")], 7)
            .expect("written as before");
        Counters::new(dir.path())
            .advance_to(&sim, COUNTER, 7)
            .expect("counter");
        let mut opened = Store::open(&path, &sim, None).expect("opens");
        assert_eq!(ids(&opened.keys), ["old"]);
        let mut keys = opened.keys;
        put(&mut opened.store, &sim, &mut keys, key("new"));
        assert!(std::fs::metadata(changes::path_of(&path)).is_ok(), "a log");
        let reopened = Store::open(&path, &sim, None).expect("opens");
        assert_eq!(
            (ids(&reopened.keys), reopened.store.generation),
            (vec!["old", "new"], 8)
        );
    }
}
