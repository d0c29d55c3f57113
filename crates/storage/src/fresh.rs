//! The start-up check: is this database the committed state, the latest one, and untouched?
//!
//! 1. The sealed state key unseals (it is in the database, sealed to the enclave's signer).
//! 2. One scan recomputes the root over every value and namespace mapping (`digest.rs`), and the
//!    stored tag must be the tag of that root at the stored commit number: a record modified,
//!    deleted, added or copied in from another copy, or an edited commit number, fails here
//!    ([`StateError::StateMismatch`]).
//! 3. The commit number, now authenticated, is judged against the freshness counter
//!    ([`enclave::fresh::judge`]). Behind it, with the counter's slots holding every commit the
//!    database lacks (a crash before the database synced them, `replay.rs`), those commits are
//!    applied and the database is current; behind it otherwise is an older copy
//!    ([`StateError::RolledBack`]); ahead by more than a crash leaves, or no counter file for a
//!    database that is not new, is a lost counter ([`StateError::CounterLost`]); one ahead is a
//!    crash between a commit too large for the counter's slot and the counter's advance, and the
//!    counter catches up.
//!
//! A database without a sealed state (new, or written before the state digest existed) is sealed
//! here if it is empty and at commit 0; otherwise it is refused ([`StateError::Untagged`]) until
//! the operator accepts it. An operator's accept (`--accept-storage-rollback SEQ`) names the
//! commit number found, and lifts any refusal at that number: the state is sealed as it is, at the
//! higher of that number and the counter, so no commit number is ever reused.

use enclave::fresh::{Stale, Verdict, judge};
use enclave::{Counters, Platform};

use std::collections::BTreeMap;

use crate::db::{Db, DbError};
use crate::digest::{Root, StateKey};
use crate::postgres::Pg;
use crate::replay;

/// The freshness counter's name.
pub(crate) const COUNTER: &str = "storage";
/// The freshness counter's name when the records are in PostgreSQL: another counter, so a node
/// moved from redb to a new database is not taken for a rollback.
pub(crate) const COUNTER_POSTGRES: &str = "storage-postgres";

/// Why the database is not taken as the committed state; each names what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error(
        "is at commit {found}, but the freshness counter says commit {expected} was acknowledged: \
         the host may have replaced the database with an older copy"
    )]
    RolledBack { found: u64, expected: u64 },
    #[error(
        "is at commit {found}, but the freshness counter {}: the counter file ({COUNTER}.counter, \
         or {COUNTER_POSTGRES}.counter on PostgreSQL) was deleted or replaced, so rollbacks \
         cannot be ruled out",
        match counter { Some(c) => format!("is at {c}"), None => "is missing".to_owned() }
    )]
    CounterLost { found: u64, counter: Option<u64> },
    #[error(
        "says it is at commit {found}, but its content ({entries} values and namespaces) does not \
         match the sealed digest of that commit: a record was modified, deleted, added or copied \
         in from another copy of the database, or the commit number was edited"
    )]
    StateMismatch { found: u64, entries: u64 },
    #[error(
        "is at commit {found} but has no sealed digest of its state (written by a Cloister older \
         than the digest, or the digest was removed), so nothing shows it is current"
    )]
    Untagged { found: u64 },
    #[error("is at commit {found}, but its sealed state key does not unseal: {detail}")]
    StateKey { found: u64, detail: String },
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("the freshness counter: {0}")]
    Counter(String),
}

impl StateError {
    /// The commit number found, for a refusal an operator can accept; `None` for a failure a
    /// restart may fix (the database or the counter could not be read).
    pub fn refused_at(&self) -> Option<u64> {
        match self {
            StateError::RolledBack { found, .. }
            | StateError::CounterLost { found, .. }
            | StateError::StateMismatch { found, .. }
            | StateError::Untagged { found }
            | StateError::StateKey { found, .. } => Some(*found),
            StateError::Database(_) | StateError::Counter(_) => None,
        }
    }

    fn stale(stale: Stale) -> StateError {
        match stale {
            Stale::RolledBack { found, expected } => StateError::RolledBack { found, expected },
            Stale::CounterLost { found, counter } => StateError::CounterLost { found, counter },
        }
    }
}

fn counter_error(e: enclave::SealError) -> StateError {
    StateError::Counter(e.to_string())
}

/// What a database and its counter say, once the state is checked against its tag.
struct Examined {
    seq: u64,
    counter: Option<u64>,
    /// The commits the counter's slots carry (`replay.rs`).
    payloads: BTreeMap<u64, Vec<u8>>,
    state: State,
}

enum State {
    /// The state key and the root of the content; `authentic` if the tag matches.
    Sealed {
        keys: Box<StateKey>,
        root: Root,
        entries: u64,
        authentic: bool,
    },
    /// No sealed state: `empty` if there are no values and no namespaces.
    Unsealed { empty: bool },
    /// The state key does not unseal.
    BadKey(String),
}

fn examine(db: &Db, platform: &dyn Platform, counters: &Counters) -> Result<Examined, StateError> {
    let stored = db.stored()?;
    let carried = counters.carried(platform, COUNTER).map_err(counter_error)?;
    let (counter, payloads) = match carried {
        Some(c) => (Some(c.value), c.payloads),
        None => (None, BTreeMap::new()),
    };
    let state = match stored.sealed {
        None => State::Unsealed {
            empty: stored.empty,
        },
        Some((sealed, tag)) => match StateKey::unseal(platform, &sealed) {
            Err(e) => State::BadKey(e.to_string()),
            Ok(keys) => {
                let (root, entries) = db.scan(&keys)?;
                let authentic = keys.verify(stored.seq, &root, &tag);
                State::Sealed {
                    keys: Box::new(keys),
                    root,
                    entries,
                    authentic,
                }
            }
        },
    };
    Ok(Examined {
        seq: stored.seq,
        counter,
        payloads,
        state,
    })
}

/// The committed state, checked: what an incarnation starts from.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) seq: u64,
    pub(crate) keys: StateKey,
    pub(crate) root: Root,
    /// The refusal the operator's accept lifted, if it was used.
    pub(crate) accepted: Option<StateError>,
}

/// What [`verify`] found: an authentic state at `seq`, with `entries` values and namespaces, and
/// `pending` commits after it that the freshness counter carries and the next start applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub seq: u64,
    pub entries: u64,
    pub pending: u64,
}

/// Checks the database as a start does and changes nothing: no new database is sealed, no
/// counter catches up, nothing is accepted.
pub(crate) fn verify(
    db: &Db,
    platform: &dyn Platform,
    counters: &Counters,
) -> Result<Verified, StateError> {
    let Examined {
        seq,
        counter,
        payloads,
        state,
    } = examine(db, platform, counters)?;
    let entries = match state {
        State::Sealed {
            authentic: false,
            entries,
            ..
        } => {
            return Err(StateError::StateMismatch {
                found: seq,
                entries,
            });
        }
        State::Sealed { entries, .. } => entries,
        State::Unsealed { empty: true } if seq == 0 => 0,
        State::Unsealed { .. } => return Err(StateError::Untagged { found: seq }),
        State::BadKey(detail) => return Err(StateError::StateKey { found: seq, detail }),
    };
    if let Some(c) = counter.filter(|&c| replay::covers(&payloads, seq, c)) {
        return Ok(Verified {
            seq,
            entries,
            pending: c - seq,
        });
    }
    judge(seq, counter, None).map_err(StateError::stale)?;
    Ok(Verified {
        seq,
        entries,
        pending: 0,
    })
}

/// Checks the database at start, and makes it ready: seals a new database, lets the counter catch
/// up after a crash, or seals a state the operator accepted (`accept`, the commit number found).
pub(crate) fn open(
    db: &Db,
    platform: &dyn Platform,
    counters: &Counters,
    accept: Option<u64>,
) -> Result<Opened, StateError> {
    let Examined {
        mut seq,
        counter,
        payloads,
        state,
    } = examine(db, platform, counters)?;
    // Moves the counter to `to` unless it is there (creating it at 0 for a new database).
    let counter_to = |to: u64| -> Result<(), StateError> {
        if counter != Some(to) {
            counters
                .advance_to(platform, COUNTER, to)
                .map_err(counter_error)?;
        }
        Ok(())
    };
    let (sealed, refusal) = match state {
        State::Sealed {
            keys,
            mut root,
            authentic: true,
            ..
        } => {
            // Commits the counter carries and the database lacks (a crash before it synced them)
            // are applied, unless the operator accepts this database as it is.
            if let Some(c) =
                counter.filter(|&c| accept != Some(seq) && replay::covers(&payloads, seq, c))
            {
                root = replay::apply(db, &keys, root, seq, c, &payloads)?;
                tracing::info!(
                    from = seq + 1,
                    to = c,
                    "storage: applied the commits the freshness counter carries and the database lacked"
                );
                seq = c;
            }
            match judge(seq, counter, accept).map_err(StateError::stale)? {
                Verdict::Current => {
                    counter_to(seq)?;
                    return Ok(Opened {
                        seq,
                        keys: *keys,
                        root,
                        accepted: None,
                    });
                }
                Verdict::CatchUp => {
                    let now = counters.advance(platform, COUNTER).map_err(counter_error)?;
                    if now != seq {
                        return Err(StateError::Counter(format!(
                            "advanced to {now} to catch up with commit {seq}: another writer?"
                        )));
                    }
                    return Ok(Opened {
                        seq,
                        keys: *keys,
                        root,
                        accepted: None,
                    });
                }
                Verdict::Accepted { stale, to } => {
                    db.seal_state(to, &keys, &root, None)?;
                    counter_to(to)?;
                    return Ok(Opened {
                        seq: to,
                        keys: *keys,
                        root,
                        accepted: Some(StateError::stale(stale)),
                    });
                }
            }
        }
        State::Sealed {
            keys,
            root,
            entries,
            authentic: false,
        } => (
            Some((keys, root)),
            StateError::StateMismatch {
                found: seq,
                entries,
            },
        ),
        State::Unsealed { empty: true } if seq == 0 => {
            // A new database: sealed at 0, unless the counter says otherwise (then it is a
            // rollback to nothing, judged as any other).
            let to = match judge(0, counter, accept).map_err(StateError::stale)? {
                Verdict::Accepted { to, .. } => to,
                Verdict::Current | Verdict::CatchUp => 0,
            };
            let opened = seal_new(db, platform, to, None)?;
            counter_to(to)?;
            return Ok(opened);
        }
        State::Unsealed { .. } => (None, StateError::Untagged { found: seq }),
        State::BadKey(detail) => (None, StateError::StateKey { found: seq, detail }),
    };
    if accept != Some(seq) {
        return Err(refusal);
    }
    let to = seq.max(counter.unwrap_or(0));
    let opened = match sealed {
        Some((keys, root)) => {
            db.seal_state(to, &keys, &root, None)?;
            Opened {
                seq: to,
                keys: *keys,
                root,
                accepted: Some(refusal),
            }
        }
        None => seal_new(db, platform, to, Some(refusal))?,
    };
    counter_to(to)?;
    Ok(opened)
}

/// Seals the database's content as it is, at `to`, under a new state key.
fn seal_new(
    db: &Db,
    platform: &dyn Platform,
    to: u64,
    accepted: Option<StateError>,
) -> Result<Opened, StateError> {
    let (keys, sealed) = StateKey::generate(platform).map_err(|e| StateError::StateKey {
        found: to,
        detail: e.to_string(),
    })?;
    let (root, _) = db.scan(&keys)?;
    db.seal_state(to, &keys, &root, Some(&sealed))?;
    Ok(Opened {
        seq: to,
        keys,
        root,
        accepted,
    })
}

/// The PostgreSQL start check: the database's commit number, judged against this node's freshness
/// counter. There is no digest of the whole state to check (each record's AES-GCM tag is checked
/// when it is read). The database is shared: other nodes of a cluster commit to it too, so a
/// number ahead of the counter is their commits, and the counter catches up; a number behind it
/// is an older copy of the database ([`StateError::RolledBack`]), refused. No counter at all for a
/// database that is not new is a lost counter ([`StateError::CounterLost`]), unless this node has
/// just been admitted to the cluster (`newcomer`): it has seen nothing yet, and takes the number as
/// it is. An operator's accept moves the database's commit number and the counter to the higher of
/// the two, so no commit number is reused. Answers the commit number to go on from, and the
/// refusal the accept lifted.
pub(crate) async fn open_postgres(
    pg: &Pg,
    platform: &dyn Platform,
    counters: &Counters,
    accept: Option<u64>,
    newcomer: bool,
) -> Result<(u64, Option<StateError>), StateError> {
    let unreadable = |e: crate::Error| StateError::Database(DbError(e.to_string()));
    let seq = pg.seq().await.map_err(unreadable)?;
    let counter = counters
        .read_if_present(platform, COUNTER_POSTGRES)
        .map_err(counter_error)?;
    let verdict = match counter {
        Some(c) if seq >= c => Verdict::Current,
        None if newcomer => {
            tracing::info!(
                commit = seq,
                "storage: a new member of the cluster starts from the database's commit number"
            );
            Verdict::Current
        }
        _ => judge(seq, counter, accept).map_err(StateError::stale)?,
    };
    match verdict {
        Verdict::Current | Verdict::CatchUp => {
            if counter != Some(seq) {
                counters
                    .advance_to(platform, COUNTER_POSTGRES, seq)
                    .map_err(counter_error)?;
            }
            Ok((seq, None))
        }
        Verdict::Accepted { stale, to } => {
            if to != seq {
                pg.set_seq(to).await.map_err(unreadable)?;
            }
            if counter != Some(to) {
                counters
                    .advance_to(platform, COUNTER_POSTGRES, to)
                    .map_err(counter_error)?;
            }
            Ok((to, Some(StateError::stale(stale))))
        }
    }
}
