//! The event journal: every transition as a sequence-numbered, hash-chained entry, appended to a file
//! in the data directory and broadcast live.
//!
//! Each line is one JSON entry. Its `hash` is SHA-256 over the entry's other fields (as JSON, `hash`
//! left out) and `prev` is the hash of the line before, so editing, inserting or deleting a past line is
//! reported when the journal is read. A torn last line (the process died mid-write) is cut off at open
//! and reported as such. Truncating whole lines off the end is not detectable from the file alone.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::health::Health;
use crate::{ServiceName, Strategy};

/// Entries kept in memory for readers and for the live stream's catch-up.
const RECENT: usize = 8192;
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    pub seq: u64,
    #[serde(
        serialize_with = "serialize_time",
        deserialize_with = "deserialize_time"
    )]
    #[schema(value_type = String, format = DateTime)]
    pub time: SystemTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    pub event: Event,
    pub cause: Cause,
    pub prev: String,
    pub hash: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    RuntimeStarted {
        version: String,
        services: usize,
    },
    RuntimeStopping,
    RuntimeStopped,
    /// The runtime's own readiness changed (a critical service failed, an optional one degraded it...).
    RuntimeHealth {
        level: RuntimeLevel,
        reasons: Vec<String>,
    },
    /// The journal file was found damaged when opened.
    JournalIntegrity {
        problem: String,
    },
    Registered,
    Starting {
        replica: u32,
        restart: bool,
        degraded_mode: bool,
    },
    Ready {
        replica: u32,
    },
    /// Every launched replica is ready: the service is up.
    Up {
        replicas: u32,
    },
    HealthChanged {
        health: Health,
    },
    Exited {
        replica: u32,
        outcome: ExitOutcome,
    },
    BackoffScheduled {
        attempt: u32,
        delay_ms: u64,
    },
    /// A replica failed while others keep serving from the shared mailbox.
    Failover {
        replica: u32,
        serving: u32,
    },
    Stopping,
    Stopped {
        dead_lettered: usize,
    },
    Failed {
        reason: String,
    },
    FaultInjected {
        replica: u32,
        fault: Fault,
    },
    /// The replica count changed.
    Scaled {
        from: u32,
        to: u32,
        reason: String,
    },
    /// A scale-out that must not happen (budget, maximum, crash loop).
    ScaleRefused {
        reason: String,
    },
    /// A signal left its learned baseline; `action` is what the runtime did about it.
    Anomaly {
        signal: String,
        evidence: crate::anomaly::Evidence,
        action: crate::config::AnomalyAction,
    },
    AnomalyCleared {
        signal: String,
        evidence: crate::anomaly::Evidence,
    },
    /// The same failure repeated: recovery will not help by itself.
    CrashLoop {
        failure: String,
        count: u32,
    },
    /// A new configuration version is running (the watch window starts).
    ConfigApplied {
        version: u64,
        hash: String,
        changed: Vec<String>,
    },
    ConfigRejected {
        problems: Vec<String>,
    },
    /// The watch window of `version` closed without trouble.
    ConfigConfirmed {
        version: u64,
    },
    ConfigRolledBack {
        from: u64,
        to: u64,
        reason: String,
    },
    /// The circuit breaker on the `caller` -> this service edge opened or closed.
    Circuit {
        caller: Option<ServiceName>,
        state: crate::bus::BreakerState,
        consecutive_failures: u32,
    },
    /// A service took a new spec: live, or by a restart.
    Reconfigured {
        live: bool,
        changes: Vec<String>,
    },
    /// A change a service made to what it keeps (an account created, a token revoked): `action` names
    /// it (`account.created`), `subject` is what it changed, `detail` the rest. Never secrets.
    Audit {
        action: String,
        subject: String,
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        detail: std::collections::BTreeMap<String, String>,
    },
}

/// How an incarnation ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ExitOutcome {
    /// Returned after being asked to stop.
    Stopped,
    /// Returned without being asked to: a failure.
    Returned,
    Error {
        message: String,
    },
    Panic {
        message: String,
    },
    /// Its pings went unanswered `missed` times in a row; it was aborted.
    Hung {
        missed: u32,
    },
    /// It did not become ready within its start timeout; it was aborted.
    StartTimeout,
    /// It did not stop within its grace period; it was aborted.
    Aborted,
}

impl ExitOutcome {
    pub fn is_failure(&self) -> bool {
        !matches!(self, ExitOutcome::Stopped)
    }
}

/// Faults an operator can inject when `[testing] fault_injection` is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The incarnation panics.
    Panic,
    /// The incarnation stops answering anything, pings included.
    Hang,
    /// The incarnation returns an error.
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeLevel {
    Ready,
    Degraded,
    NotReady,
}

/// Why it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Cause {
    Startup,
    Shutdown,
    Operator {
        command: String,
    },
    /// Recovery after a failure, under this strategy.
    Recovery {
        strategy: Strategy,
    },
    /// Follows from what happened to another service.
    Dependency {
        service: ServiceName,
    },
    /// The service reported it.
    Service,
    /// A liveness probe.
    Probe,
    Registration,
    Journal,
    Autoscaler,
    /// The performance monitor's anomaly detection.
    Monitor,
    /// A configuration change, identified by its version.
    Config {
        version: u64,
    },
}

pub(crate) fn serialize_time<S: serde::Serializer>(
    t: &SystemTime,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*t))
}

fn deserialize_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal entry {seq} (line {line}) fails its integrity check: {reason}")]
    Tampered {
        seq: u64,
        line: usize,
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
    next_seq: u64,
    last_hash: String,
    recent: VecDeque<Arc<Entry>>,
}

/// The hashed part of an entry, in the field order of [`Entry`].
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    #[serde(serialize_with = "serialize_time")]
    time: &'a SystemTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: &'a Option<ServiceName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: &'a Option<u64>,
    event: &'a Event,
    cause: &'a Cause,
    prev: &'a str,
}

fn digest(entry: &Entry) -> String {
    let body = Body {
        seq: entry.seq,
        time: &entry.time,
        service: &entry.service,
        generation: &entry.generation,
        event: &entry.event,
        cause: &entry.cause,
        prev: &entry.prev,
    };
    let json = serde_json::to_vec(&body).expect("journal bodies always serialize");
    hex::encode(Sha256::digest(&json))
}

/// Checks one line (without its newline) against the hash of the line before it. Lines are bytes, not
/// text: a damaged line need not be UTF-8, and is reported like any other damage.
fn verify_line(line: &[u8], line_no: usize, prev_hash: &str) -> Result<Entry, JournalError> {
    let entry: Entry = serde_json::from_slice(line).map_err(|e| JournalError::Tampered {
        seq: 0,
        line: line_no,
        reason: format!("not a journal entry: {e}"),
    })?;
    // Compare the raw line too: a re-serialized entry that differs means fields were added or reordered.
    let expected = digest(&entry);
    if entry.hash != expected {
        return Err(JournalError::Tampered {
            seq: entry.seq,
            line: line_no,
            reason: "its hash does not match its content".into(),
        });
    }
    if entry.prev != prev_hash {
        return Err(JournalError::Tampered {
            seq: entry.seq,
            line: line_no,
            reason: "it does not chain to the entry before it (an entry was changed, removed or inserted)".into(),
        });
    }
    Ok(entry)
}

impl Journal {
    /// A journal kept only in memory (tests, benchmarks).
    pub fn in_memory() -> Self {
        Journal::with_writer(
            None,
            Writer {
                file: None,
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
        let mut report = OpenReport::default();
        let mut reader = BufReader::new(&mut file);
        let mut last_hash = GENESIS.to_owned();
        let mut next_seq = 1;
        let mut recent = VecDeque::new();
        let mut good_len: u64 = 0;
        let mut buf = Vec::new();
        let mut line_no = 0;
        loop {
            buf.clear();
            // Bytes, not text: a line torn inside a character must still be found and cut off.
            let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let Some(line) = buf.strip_suffix(b"\n") else {
                report.torn_bytes = n as u64;
                break;
            };
            let entry = match verify_line(line, line_no, &last_hash) {
                Ok(entry) => entry,
                Err(e) => {
                    if report.violation.is_none() {
                        report.violation = Some(e.to_string());
                    }
                    // Keep going from what the line says, so later entries are still readable and the
                    // chain continues from the end of the file.
                    match serde_json::from_slice::<Entry>(line) {
                        Ok(entry) => entry,
                        Err(_) => {
                            good_len += n as u64;
                            continue;
                        }
                    }
                }
            };
            good_len += n as u64;
            last_hash = entry.hash.clone();
            next_seq = entry.seq + 1;
            report.entries += 1;
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(Arc::new(entry));
        }
        drop(reader);
        if report.torn_bytes > 0 {
            file.set_len(good_len).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        let journal = Journal::with_writer(
            Some(path.to_owned()),
            Writer {
                file: Some(file),
                next_seq,
                last_hash,
                recent,
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
        entry.hash = digest(&entry);
        if let Some(file) = w.file.as_mut() {
            let mut line = serde_json::to_vec(&entry).expect("journal entries always serialize");
            line.push(b'\n');
            // One write per entry: a crash tears at most the last line, which open() cuts off.
            let before = file.metadata().map(|m| m.len()).ok();
            if let Err(e) = file.write_all(&line) {
                tracing::error!(error = %e, path = ?self.inner.path, "journal append failed; the entry is kept in memory only");
                // Cut a partial line off, so the next entry does not land on it and the file still
                // verifies (it only lacks this entry, which readers then pass over).
                if let Some(len) = before {
                    let _ = file.set_len(len);
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
        let Some(path) = &self.inner.path else {
            return Ok(Vec::new());
        };
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let reader = BufReader::new(File::open(path).map_err(io)?);
        let mut prev = GENESIS.to_owned();
        let mut out = Vec::new();
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line.map_err(io)?;
            let entry = verify_line(&line, i + 1, &prev)?;
            prev = entry.hash.clone();
            if entry.seq > since {
                out.push(Arc::new(entry));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(j: &Journal, n: usize) {
        let svc = ServiceName::from_static("svc");
        for i in 0..n {
            j.append(
                Some(&svc),
                Some(i as u64),
                Event::Ready { replica: 0 },
                Cause::Startup,
            );
        }
    }

    #[test]
    fn survives_reopen_and_reads_by_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.log");
        let (j, report) = Journal::open(&path).expect("open");
        assert_eq!(report, OpenReport::default());
        fill(&j, 5);
        drop(j);
        let (j, report) = Journal::open(&path).expect("reopen");
        assert_eq!(report.entries, 5);
        assert_eq!(report.violation, None);
        fill(&j, 1);
        let seqs: Vec<u64> = j.read(3, 10).expect("read").iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [4, 5, 6]);
        assert_eq!(j.read_file(0, 100).expect("file read").len(), 6);
    }

    #[test]
    fn a_modified_past_entry_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.log");
        let (j, _) = Journal::open(&path).expect("open");
        fill(&j, 4);
        drop(j);
        let text = std::fs::read_to_string(&path).expect("read");
        let tampered = text.replacen("\"generation\":1", "\"generation\":7", 1);
        assert_ne!(text, tampered);
        std::fs::write(&path, tampered).expect("write");
        let (j, report) = Journal::open(&path).expect("reopen");
        let violation = report.violation.expect("tamper reported at open");
        assert!(violation.contains("entry 2 (line 2)"), "{violation}");
        match j.read_file(0, 100) {
            Err(JournalError::Tampered { seq: 2, .. }) => {}
            other => panic!("expected tamper at seq 2, got {other:?}"),
        }
    }

    #[test]
    fn a_deleted_entry_breaks_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.log");
        let (j, _) = Journal::open(&path).expect("open");
        fill(&j, 3);
        drop(j);
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).expect("write");
        let (_, report) = Journal::open(&path).expect("reopen");
        assert!(
            report
                .violation
                .expect("reported")
                .contains("does not chain")
        );
    }

    /// Appends entries whose text is not all ASCII, so a cut can land inside a character.
    fn fill_varied(j: &Journal, n: usize) {
        let svc = ServiceName::from_static("svc");
        for i in 0..n {
            j.append(
                Some(&svc),
                Some(i as u64),
                Event::Failed {
                    reason: format!("naïve — attempt {i} ✓"),
                },
                Cause::Startup,
            );
        }
    }

    fn hashes(entries: &[Arc<Entry>]) -> Vec<(u64, String)> {
        entries.iter().map(|e| (e.seq, e.hash.clone())).collect()
    }

    /// Promise: a journal whose last line was cut mid-write opens, keeps every complete entry, and
    /// appends on with a valid chain. Tried at every byte the last line could have been cut at.
    #[test]
    fn a_cut_journal_tail_is_read_back_and_continued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let whole = dir.path().join("whole.log");
        let (j, _) = Journal::open(&whole).expect("open");
        fill_varied(&j, 4);
        let written = j.read(0, usize::MAX).expect("read");
        drop(j);
        let bytes = std::fs::read(&whole).expect("read");
        let last_line = bytes[..bytes.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .expect("several lines")
            + 1;
        let path = dir.path().join("journal.log");
        for cut in last_line + 1..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).expect("write");
            let (j, report) =
                Journal::open(&path).unwrap_or_else(|e| panic!("cut at byte {cut}: {e}"));
            assert_eq!(
                (report.entries, report.torn_bytes, report.violation),
                (3, (cut - last_line) as u64, None),
                "cut at byte {cut}"
            );
            let kept = j.read(0, usize::MAX).expect("read");
            assert_eq!(hashes(&kept), hashes(&written[..3]), "cut at byte {cut}");
            fill_varied(&j, 1);
            let next = j.read(3, usize::MAX).expect("read");
            assert_eq!(next.len(), 1);
            assert_eq!((next[0].seq, &next[0].prev), (4, &written[2].hash));
            drop(j);
            let (j, report) = Journal::open(&path).expect("reopen");
            assert_eq!(
                (report.entries, report.torn_bytes, report.violation),
                (4, 0, None),
                "cut at byte {cut}"
            );
            assert_eq!(
                j.read_file(0, usize::MAX)
                    .expect("the chain verifies")
                    .len(),
                4
            );
        }
    }

    /// A damaged line in the middle (edited into garbage, or bytes that are not text) is reported with
    /// its line at open, the entries around it stay readable, and reading the file from disk refuses
    /// the broken chain (what the API answers as `journal.integrity`).
    #[test]
    fn a_corrupted_middle_line_is_reported_and_the_rest_is_kept() {
        let garbage: [&[u8]; 3] = [
            b"{\"seq\":2,\"this is not",
            b"not json at all",
            b"\xff\xfe\x00 binary",
        ];
        for junk in garbage {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("journal.log");
            let (j, _) = Journal::open(&path).expect("open");
            fill_varied(&j, 4);
            let written = j.read(0, usize::MAX).expect("read");
            drop(j);
            let text = std::fs::read(&path).expect("read");
            let mut lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
            let mut damaged = junk.to_vec();
            damaged.push(b'\n');
            lines[1] = &damaged;
            std::fs::write(&path, lines.concat()).expect("write");

            let (j, report) = Journal::open(&path).expect("a damaged journal still opens");
            let violation = report.violation.expect("the damage is reported");
            assert!(violation.contains("(line 2)"), "{violation}");
            assert_eq!(report.torn_bytes, 0);
            let kept = j.read(0, usize::MAX).expect("read");
            assert_eq!(
                hashes(&kept),
                [&written[0], &written[2], &written[3]]
                    .iter()
                    .map(|e| (e.seq, e.hash.clone()))
                    .collect::<Vec<_>>()
            );
            fill_varied(&j, 1);
            assert_eq!(
                j.read(4, usize::MAX).expect("read")[0].prev,
                written[3].hash,
                "appends continue from the end of the file"
            );
            match j.read_file(0, usize::MAX) {
                Err(JournalError::Tampered { line: 2, .. }) => {}
                other => panic!("expected the damage at line 2, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_chain_continues() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.log");
        let (j, _) = Journal::open(&path).expect("open");
        fill(&j, 2);
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"seq\":3,\"ti").expect("write");
        drop(f);
        let (j, report) = Journal::open(&path).expect("reopen");
        assert_eq!(report.torn_bytes, 12);
        assert_eq!(report.violation, None);
        fill(&j, 1);
        drop(j);
        let (_, report) = Journal::open(&path).expect("reopen again");
        assert_eq!(
            (report.entries, report.violation, report.torn_bytes),
            (3, None, 0)
        );
    }
}
