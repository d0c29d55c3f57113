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
use std::sync::{Arc, Mutex};
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
#[derive(Debug, Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Mutex<Writer>,
    live: broadcast::Sender<Arc<Entry>>,
    path: Option<PathBuf>,
}

#[derive(Debug)]
struct Writer {
    file: Option<File>,
    /// The file's length after the last whole entry: where a torn append is cut back to.
    len: u64,
    next_seq: u64,
    last_hash: String,
    recent: VecDeque<Arc<Entry>>,
}

impl Journal {
    /// A journal kept only in memory (tests, benchmarks).
    pub fn in_memory() -> Self {
        Journal::with_writer(
            None,
            Writer {
                file: None,
                len: 0,
                next_seq: 1,
                last_hash: GENESIS.into(),
                recent: VecDeque::new(),
            },
        )
    }

    fn with_writer(path: Option<PathBuf>, writer: Writer) -> Self {
        let (live, _) = broadcast::channel(RECENT);
        Journal {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
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
        let journal = Journal::with_writer(
            Some(path.to_owned()),
            Writer {
                file: Some(file),
                len,
                next_seq: scanned.next_seq,
                last_hash: scanned.last_hash,
                recent: scanned.recent,
            },
        );
        Ok((journal, report))
    }

    /// Appends an event and returns the entry written.
    pub fn append(
        &self,
        service: Option<&ServiceName>,
        generation: Option<u64>,
        event: Event,
        cause: Cause,
    ) -> Arc<Entry> {
        let mut w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut entry = Entry {
            seq: w.next_seq,
            time: SystemTime::now(),
            service: service.cloned(),
            generation,
            event,
            cause,
            prev: w.last_hash.clone(),
            hash: String::new(),
        };
        let body = disk::body(&entry);
        entry.hash = disk::digest_of(&body);
        let before = w.len;
        if let Some(file) = w.file.as_mut() {
            let line = disk::line(body, &entry.hash);
            // One write per entry: a crash tears at most the last line, which open() cuts off.
            match file.write_all(&line) {
                Ok(()) => w.len = before + line.len() as u64,
                Err(e) => {
                    tracing::error!(error = %e, path = ?self.inner.path, "journal append failed; the entry is kept in memory only");
                    // Cut a partial line off, so the next entry does not land on it and the file
                    // still verifies (it only lacks this entry, which readers then pass over).
                    let _ = file.set_len(before);
                }
            }
        }
        w.next_seq += 1;
        w.last_hash = entry.hash.clone();
        let entry = Arc::new(entry);
        if w.recent.len() == RECENT {
            w.recent.pop_front();
        }
        w.recent.push_back(entry.clone());
        // Sent under the lock so live subscribers see entries in sequence order.
        let _ = self.inner.live.send(entry.clone());
        entry
    }

    /// Flushes appended entries to stable storage.
    pub fn sync(&self) -> Result<(), JournalError> {
        let w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
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
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_seq
            - 1
    }

    /// Up to `limit` entries with `seq > since`, oldest first. Entries no longer in memory are read from
    /// the file and verified on the way.
    pub fn read(&self, since: u64, limit: usize) -> Result<Vec<Arc<Entry>>, JournalError> {
        {
            let w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let in_memory = w.recent.front().is_none_or(|first| first.seq <= since + 1)
                || self.inner.path.is_none();
            if in_memory {
                return Ok(w
                    .recent
                    .iter()
                    .filter(|e| e.seq > since)
                    .take(limit)
                    .cloned()
                    .collect());
            }
        }
        self.read_file(since, limit)
    }

    fn read_file(&self, since: u64, limit: usize) -> Result<Vec<Arc<Entry>>, JournalError> {
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
