//! The keystore's freshness: every write is the next *generation*, stored in the keystore's
//! authenticated header and then in the freshness counter `keystore` before the change is
//! answered, so an older `keystore.sealed` (a deleted key back, a rotated key signing with its old
//! version) is refused at start, as storage refuses an older database. The decision is
//! [`enclave::fresh::judge`], shared with storage; an operator accepts a refused keystore with
//! `cloister run --accept-keystore-rollback N`, N the generation found (0 for a keystore written
//! before generations).

use std::path::Path;

use enclave::fresh::{Stale, Verdict, judge};
use enclave::{Counters, Platform};

use crate::Error;
use crate::keys::Key;
use crate::keystore::Keystore;

/// The freshness counter's name.
const COUNTER: &str = "keystore";

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
        let counter = counters
            .read_if_present(platform, COUNTER)
            .map_err(counter_error)?;
        let found = loaded.generation.unwrap_or(0);
        let verdict = match loaded.generation {
            Some(found) => match judge(found, counter, accept) {
                Ok(Verdict::Accepted { stale, to }) => Err((stale.into(), to)),
                Ok(verdict) => Ok(verdict),
                Err(stale) => return Err(Refusal::Stale(stale.into())),
            },
            None if accept == Some(0) => Err((StaleKeystore::Unversioned, counter.unwrap_or(0))),
            None => return Err(Refusal::Stale(StaleKeystore::Unversioned)),
        };
        let mut store = Store {
            file,
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
                if to != found || loaded.generation.is_none() {
                    store.file.save(platform, &loaded.keys, to)?;
                }
                store.generation = to;
                store.counter_to(platform, counter, to)?;
                Some(lifted)
            }
        };
        Ok(Opened {
            store,
            keys: loaded.keys,
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

    /// Writes `keys` as the next generation, then advances the counter to it.
    pub(crate) fn save(&mut self, platform: &dyn Platform, keys: &[Key]) -> Result<(), Unsaved> {
        let next = self.generation + 1;
        self.file
            .save(platform, keys, next)
            .map_err(Unsaved::NotWritten)?;
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
            versions: vec![Version {
                version: 1,
                created_ms: 0,
                secret: Secret::generate(Algorithm::Ed25519),
            }],
        }
    }

    fn refusal(r: Result<Opened, Refusal>) -> StaleKeystore {
        match r {
            Err(Refusal::Stale(stale)) => stale,
            Err(Refusal::Failed(e)) => panic!("failed: {e}"),
            Ok(_) => panic!("opened"),
        }
    }

    fn ids(keys: &[Key]) -> Vec<&str> {
        keys.iter().map(|k| k.id.as_str()).collect()
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
        opened.store.save(&sim, &[key("a")]).expect("save"); // 1
        let one = std::fs::read(&path).expect("read");
        opened
            .store
            .save(&sim, &[key("a"), key("b")])
            .expect("save"); // 2
        opened.store.save(&sim, &[key("b")]).expect("save"); // 3: a deleted

        // An older copy.
        std::fs::write(&path, &one).expect("swap");
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
        opened.store.save(&sim, &[key("c")]).expect("save"); // 4

        // A keystore from before generations.
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
}
