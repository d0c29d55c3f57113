//! The event journal: every transition as a sequence-numbered, hash-chained entry, appended to a file
//! in the data directory and broadcast live.
//!
//! Each line is one JSON entry. Its `hash` is SHA-256 over the entry's other fields (as JSON, `hash`
//! left out) and `prev` is the hash of the line before, so editing, inserting or deleting a past line is
//! reported when the journal is read. A torn last line (the process died mid-write) is cut off at open
//! and reported as such. Truncating whole lines off the end is not detectable from the file alone.

mod disk;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

pub use crate::event::{Cause, Entry, Event, ExitOutcome, Fault, RuntimeLevel};
use crate::name::ServiceName;
use disk::GENESIS;

/// Entries kept in memory for readers and for the live stream's catch-up.
const RECENT: usize = 8192;

/// Why the journal could not be opened, read or synced.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be read or written.
    #[error("journal {path}: {source}")]
    Io {
        /// The journal's file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// An entry does not verify: the file was changed.
    #[error("journal entry {seq} (line {line}) fails its integrity check: {reason}")]
    Tampered {
        /// The entry's sequence number (0 if the line is not an entry at all).
        seq: u64,
        /// The line in the file, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl crate::Classify for JournalError {
    fn kind(&self) -> crate::ErrorKind {
        match self {
            JournalError::Io { .. } => crate::ErrorKind::Internal,
            // Answered 409 since the journal API began: the file is not what was written.
            JournalError::Tampered { .. } => crate::ErrorKind::Conflict,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            JournalError::Io { .. } => "journal.io",
            JournalError::Tampered { .. } => "journal.integrity",
        }
    }
}

/// What [`Journal::open`] found in an existing file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Whole entries found.
    pub entries: u64,
    /// Bytes of a partly written last line that were cut off.
    pub torn_bytes: u64,
    /// The first entry that failed verification, if any.
    pub violation: Option<String>,
}

/// The journal. Cheap to clone; appends are serialized inside.
///
/// An entry is made in two steps. Appending it takes its sequence number and time, under a small
/// lock ([`Pending`]). Chaining it serializes it, hashes it onto the entry before, writes its line
/// and makes it visible: to [`Journal::read`], to live subscribers, and to the entry's echo. That
/// is the expensive part (JSON, SHA-256, a `write`). [`Journal::append`] does both before it
/// returns; [`Journal::append_deferred`], on the supervisor's path, only the first, and a task of
/// the supervisor's chains its entries after the tasks the supervisor woke ([`Journal::chain`]).
/// Nothing can see an entry half made: readers chain whatever is pending before they read, under
/// the chain's lock, and entries are chained in sequence order whoever does it.
#[derive(Debug, Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Taken before `pending` by whoever takes both.
    chain: Mutex<Chain>,
    pending: Mutex<Pending>,
    live: broadcast::Sender<Arc<Entry>>,
    path: Option<PathBuf>,
}

/// The chained end of the journal.
#[derive(Debug)]
struct Chain {
    file: Option<File>,
    /// The file's length after the last whole entry: where a torn append is cut back to.
    len: u64,
    last_hash: String,
    recent: VecDeque<Arc<Entry>>,
}

/// Entries appended and not chained yet.
#[derive(Debug)]
struct Pending {
    next_seq: u64,
    entries: Vec<Appended>,
}

/// Told of each entry [`Journal::append_deferred`] made once it is chained (the supervisor
/// publishes it on the bus). Called under the chain's lock, in sequence order.
pub(crate) type Echo = Arc<dyn Fn(&Arc<Entry>) + Send + Sync>;

/// An entry as appended: everything but its place in the chain.
struct Appended {
    seq: u64,
    time: SystemTime,
    service: Option<ServiceName>,
    generation: Option<u64>,
    event: Event,
    cause: Cause,
    echo: Option<Echo>,
}

impl std::fmt::Debug for Appended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appended")
            .field("seq", &self.seq)
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// A journal kept only in memory (tests, benchmarks).
    pub fn in_memory() -> Self {
        Journal::with_chain(
            None,
            1,
            Chain {
                file: None,
                len: 0,
                last_hash: GENESIS.into(),
                recent: VecDeque::new(),
            },
        )
    }

    fn with_chain(path: Option<PathBuf>, next_seq: u64, chain: Chain) -> Self {
        let (live, _) = broadcast::channel(RECENT);
        Journal {
            inner: Arc::new(Inner {
                chain: Mutex::new(chain),
                pending: Mutex::new(Pending {
                    next_seq,
                    entries: Vec::new(),
                }),
                live,
                path,
            }),
        }
    }

    /// Opens (or creates) the journal at `path`, verifying every entry already in it.
    pub fn open(path: &Path) -> Result<(Journal, OpenReport), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?
        };
        let (scanned, report) = disk::scan(&mut file, path)?;
        let len = file.metadata().map_err(io)?.len();
        let journal = Journal::with_chain(
            Some(path.to_owned()),
            scanned.next_seq,
            Chain {
                file: Some(file),
                len,
                last_hash: scanned.last_hash,
                recent: scanned.recent,
            },
        );
        Ok((journal, report))
    }

    /// Appends an event and returns the entry written: chained, on its way to the file, and seen
    /// by readers and live subscribers when this returns.
    pub fn append(
        &self,
        service: Option<&ServiceName>,
        generation: Option<u64>,
        event: Event,
        cause: Cause,
    ) -> Arc<Entry> {
        // Holding the chain from before the entry is numbered, so this chaining is the one that
        // makes it.
        let mut chain = self.inner.lock_chain();
        let (seq, _) = self.inner.enqueue(service, generation, event, cause, None);
        let mut ours = None;
        self.inner.chain_pending(&mut chain, |entry| {
            if entry.seq == seq {
                ours = Some(entry.clone());
            }
        });
        ours.expect("an entry numbered under the chain's lock is chained with it")
    }

    /// Appends an event without chaining it: it gets its sequence number and time now, and is
    /// serialized, hashed, written, broadcast and then given to `echo` by the next
    /// [`Journal::chain`], read or append, whichever comes first. For the supervisor, whose every
    /// restart makes a dozen entries while a caller waits. Returns whether it is the only entry
    /// pending, which the appender then has chained soon.
    pub(crate) fn append_deferred(
        &self,
        service: Option<&ServiceName>,
        generation: Option<u64>,
        event: Event,
        cause: Cause,
        echo: Option<&Echo>,
    ) -> bool {
        let (_, pending) = self
            .inner
            .enqueue(service, generation, event, cause, echo.cloned());
        pending == 1
    }

    /// Chains every entry appended so far (see [`Journal::append_deferred`]).
    pub(crate) fn chain(&self) {
        drop(self.inner.chained());
    }

    /// Flushes appended entries to stable storage.
    pub fn sync(&self) -> Result<(), JournalError> {
        let w = self.inner.chained();
        if let (Some(file), Some(path)) = (w.file.as_ref(), self.inner.path.as_ref()) {
            file.sync_data().map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The sequence number of the newest entry (0 if empty).
    pub fn last_seq(&self) -> u64 {
        self.inner.lock_pending().next_seq - 1
    }

    /// Up to `limit` entries with `seq > since`, oldest first. Entries no longer in memory are read from
    /// the file and verified on the way.
    pub fn read(&self, since: u64, limit: usize) -> Result<Vec<Arc<Entry>>, JournalError> {
        {
            let w = self.inner.chained();
            let in_memory = w.recent.front().is_none_or(|first| first.seq <= since + 1)
                || self.inner.path.is_none();
            if in_memory {
                // The recent entries are in sequence order: the first one after `since` is found
                // by bisection, not by looking at every entry kept (up to `RECENT`).
                let from = w.recent.partition_point(|e| e.seq <= since);
                return Ok(w.recent.range(from..).take(limit).cloned().collect());
            }
        }
        self.read_file(since, limit)
    }

    fn read_file(&self, since: u64, limit: usize) -> Result<Vec<Arc<Entry>>, JournalError> {
        // What is pending goes to the file first.
        drop(self.inner.chained());
        match &self.inner.path {
            Some(path) => disk::read(path, since, limit),
            None => Ok(Vec::new()),
        }
    }

    /// Live entries from now on. A subscriber that falls behind gets `Lagged` and should re-read by
    /// cursor with [`Journal::read`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Entry>> {
        self.inner.live.subscribe()
    }

    /// Waits for the first entry after `since` that matches `pred`, up to `timeout` (tokio time, so it
    /// is exact under a paused clock). For tests and tools that wait on events instead of sleeping.
    pub async fn wait_for(
        &self,
        since: u64,
        timeout: Duration,
        mut pred: impl FnMut(&Entry) -> bool,
    ) -> Option<Arc<Entry>> {
        let mut live = self.subscribe();
        let mut cursor = since;
        let search = async {
            loop {
                for entry in self.read(cursor, usize::MAX).ok()? {
                    cursor = entry.seq;
                    if pred(&entry) {
                        return Some(entry);
                    }
                }
                match live.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        tokio::time::timeout(timeout, search).await.ok().flatten()
    }
}

impl Inner {
    fn lock_chain(&self) -> MutexGuard<'_, Chain> {
        // Nothing under these locks panics short of a bug; a poisoned lock's data is whole.
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chain, with every entry appended so far in it.
    fn chained(&self) -> MutexGuard<'_, Chain> {
        let mut chain = self.lock_chain();
        self.chain_pending(&mut chain, |_| {});
        chain
    }

    /// Numbers an entry and queues it for chaining; returns its number and how many entries are
    /// pending now.
    fn enqueue(
        &self,
        service: Option<&ServiceName>,
        generation: Option<u64>,
        event: Event,
        cause: Cause,
        echo: Option<Echo>,
    ) -> (u64, usize) {
        let mut pending = self.lock_pending();
        let seq = pending.next_seq;
        pending.next_seq += 1;
        pending.entries.push(Appended {
            seq,
            time: SystemTime::now(),
            service: service.cloned(),
            generation,
            event,
            cause,
            echo,
        });
        (seq, pending.entries.len())
    }

    /// Chains every pending entry, in order, calling `seen` with each.
    fn chain_pending(&self, chain: &mut Chain, mut seen: impl FnMut(&Arc<Entry>)) {
        let batch = std::mem::take(&mut self.lock_pending().entries);
        if !batch.is_empty() {
            chain.extend(batch, &self.live, self.path.as_deref(), &mut seen);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: whatever is still pending is chained and written now.
        let entries = std::mem::take(
            &mut self
                .pending
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .entries,
        );
        let chain = self.chain.get_mut().unwrap_or_else(|p| p.into_inner());
        chain.extend(entries, &self.live, self.path.as_deref(), &mut |_| {});
    }
}

impl Chain {
    /// Chains `batch` (in sequence order) onto the end: each entry hashed onto the one before, the
    /// batch's lines written in one `write`, then each entry kept among the recent, broadcast and
    /// echoed.
    fn extend(
        &mut self,
        batch: Vec<Appended>,
        live: &broadcast::Sender<Arc<Entry>>,
        path: Option<&Path>,
        seen: &mut dyn FnMut(&Arc<Entry>),
    ) {
        let mut lines = Vec::new();
        let mut chained = Vec::with_capacity(batch.len());
        for a in batch {
            let mut entry = Entry {
                seq: a.seq,
                time: a.time,
                service: a.service,
                generation: a.generation,
                event: a.event,
                cause: a.cause,
                prev: std::mem::take(&mut self.last_hash),
                hash: String::new(),
            };
            let body = disk::body(&entry);
            entry.hash = disk::digest_of(&body);
            if self.file.is_some() {
                lines.extend_from_slice(&disk::line(body, &entry.hash));
            }
            self.last_hash.clone_from(&entry.hash);
            chained.push((Arc::new(entry), a.echo));
        }
        if let Some(file) = self.file.as_mut() {
            let before = self.len;
            // One write for the batch: a crash leaves a prefix of it, whole lines and at most one
            // torn line at the end, which open() cuts off.
            match file.write_all(&lines) {
                Ok(()) => self.len = before + lines.len() as u64,
                Err(e) => {
                    tracing::error!(error = %e, ?path, entries = chained.len(), "journal append failed; the entries are kept in memory only");
                    // Cut a partial line off, so the next entry does not land on it and the file
                    // still verifies (it only lacks these entries, which readers then pass over).
                    let _ = file.set_len(before);
                }
            }
        }
        for (entry, echo) in chained {
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(entry.clone());
            // Sent under the chain's lock so live subscribers see entries in sequence order.
            let _ = live.send(entry.clone());
            if let Some(echo) = echo {
                echo(&entry);
            }
            seen(&entry);
        }
    }
}
