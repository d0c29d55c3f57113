//! The journal on disk: one JSON line per entry, each hashed over its other fields and chained to the
//! line before; reading a file back verifies every line, and a torn last line is cut off.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{JournalError, OpenReport, RECENT};
use crate::event::{Cause, Entry, Event, serialize_time};
use crate::name::ServiceName;

/// The `prev` of the first entry.
pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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

/// The hashed part of `entry` as JSON: the entry without its hash.
pub(super) fn body(entry: &Entry) -> Vec<u8> {
    let body = Body {
        seq: entry.seq,
        time: &entry.time,
        service: &entry.service,
        generation: &entry.generation,
        event: &entry.event,
        cause: &entry.cause,
        prev: &entry.prev,
    };
    serde_json::to_vec(&body).expect("journal bodies always serialize")
}

/// The SHA-256 of a body's JSON, hex.
pub(super) fn digest_of(body: &[u8]) -> String {
    // Into a buffer of its size: `hex::encode` builds its string one char at a time, which was a
    // visible share of a restart's journal entries.
    let mut out = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(body), &mut out).expect("a SHA-256 digest is 32 bytes");
    std::str::from_utf8(&out)
        .expect("hex digits are ASCII")
        .to_owned()
}

pub(super) fn digest(entry: &Entry) -> String {
    digest_of(&body(entry))
}

/// The entry's line on disk, newline included, made from its body's JSON and its hash: the same
/// bytes as serializing the whole entry (its hash is its last field, and hex needs no escaping),
/// without serializing it a second time.
pub(super) fn line(mut body: Vec<u8>, hash: &str) -> Vec<u8> {
    debug_assert_eq!(body.last(), Some(&b'}'));
    body.pop();
    body.reserve(hash.len() + 12);
    body.extend_from_slice(b",\"hash\":\"");
    body.extend_from_slice(hash.as_bytes());
    body.extend_from_slice(b"\"}\n");
    body
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

/// What an existing file holds: where its chain ends, and its last entries.
pub(super) struct Scanned {
    pub(super) last_hash: String,
    pub(super) next_seq: u64,
    pub(super) recent: VecDeque<Arc<Entry>>,
}

/// Reads every line of the journal `file` (at `path`) and verifies it, reporting the first damage
/// and cutting a torn last line off, so appends continue the chain from the last whole entry.
pub(super) fn scan(file: &mut File, path: &Path) -> Result<(Scanned, OpenReport), JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_owned(),
        source,
    };
    let mut report = OpenReport::default();
    let mut reader = BufReader::new(&mut *file);
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
    Ok((
        Scanned {
            last_hash,
            next_seq,
            recent,
        },
        report,
    ))
}

/// Up to `limit` entries with `seq > since` from the file at `path`, verifying the chain from its first
/// line on.
pub(super) fn read(path: &Path, since: u64, limit: usize) -> Result<Vec<Arc<Entry>>, JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_owned(),
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
