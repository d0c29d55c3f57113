//! The keystore's change log, `keystore.log` beside `keystore.sealed`: one record per key
//! operation, so a create, rotate or delete writes that key (or its removal), not the whole
//! keystore.
//!
//! Record: length of the rest (4, BE) | generation (8, BE) | nonce (12) | AES-256-GCM ciphertext
//! of the change (JSON) with its tag. The key is the snapshot's data key; the associated data is
//! `CLKL0001` | generation | the previous record's tag (the snapshot's tag for the first one).
//! So each record is bound to its place: a record from another log, a record moved, or one taken
//! out of the middle breaks the chain and the keystore does not open. Generations follow the
//! snapshot's one by one; the last one is what the freshness counter judges, so a log cut short
//! (or deleted) is an older keystore.
//!
//! A record that does not end within the file, or a last record that fails its check, is a write
//! cut short by a crash: never acknowledged (the counter advances after the record is synced), so
//! it is dropped. Records at or below the snapshot's generation are what a compaction left when
//! it stopped between writing the snapshot and emptying the log; they are skipped, and only when
//! every record is such.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;
use crate::keys::Key;
use crate::keystore::{Chain, Stored};

const MAGIC: &[u8; 8] = b"CLKL0001";
/// Generation, nonce and tag: the least a record's length can be.
const MIN_RECORD: usize = 8 + 12 + 16;

/// One key operation as the log stores it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Change {
    /// A key created, or changed (rotated, a new encryption reservation): all of it.
    Put(Stored),
    /// A key deleted.
    Remove { owner: String, id: String },
}

impl Change {
    pub(crate) fn put(key: &Key) -> Change {
        Change::Put(Stored::of(key))
    }

    /// Applies the change to `keys`, as the service applied it in memory.
    fn apply(self, keys: &mut Vec<Key>) -> Result<(), &'static str> {
        match self {
            Change::Put(stored) => {
                let key = stored.key()?;
                match keys
                    .iter_mut()
                    .find(|k| k.id == key.id && k.owner == key.owner)
                {
                    Some(k) => *k = key,
                    None => keys.push(key),
                }
            }
            Change::Remove { owner, id } => {
                let before = keys.len();
                keys.retain(|k| !(k.id == id && k.owner == owner));
                if keys.len() == before {
                    return Err("a record removes a key that is not there");
                }
            }
        }
        Ok(())
    }
}

/// What reading the log found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// The generation after the last record (the snapshot's when none applies).
    pub(crate) generation: u64,
    /// Records applied.
    pub(crate) records: usize,
    /// The tag the next record is bound to.
    pub(crate) tag: [u8; 16],
    /// Where the records that count end; anything after is a write cut short (or, with `stale`,
    /// everything is left from a compaction).
    pub(crate) end: u64,
    /// Every record is at or below the snapshot's generation: the log is to be emptied.
    pub(crate) stale: bool,
}

/// Reads `bytes` after a snapshot at `base` with `chain`, applying each record to `keys`.
pub(crate) fn replay(
    bytes: &[u8],
    base: u64,
    chain: &Chain,
    keys: &mut Vec<Key>,
) -> Result<Replayed, Error> {
    let bad = |what: String| Error::Keystore(format!("keystore.log: {what}"));
    let cipher = Aes256Gcm::new_from_slice(chain.data_key.as_slice())
        .map_err(|_| bad("data key size".into()))?;
    let mut out = Replayed {
        generation: base,
        records: 0,
        tag: chain.tag,
        end: 0,
        stale: false,
    };
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Some(len) = bytes
            .get(pos..pos + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        else {
            break;
        };
        let start = pos + 4;
        let Some(record) = bytes.get(start..start + len).filter(|_| len >= MIN_RECORD) else {
            break; // cut short
        };
        let generation = u64::from_be_bytes(record[..8].try_into().expect("8 bytes"));
        let last = start + len == bytes.len();
        if generation <= base && out.records == 0 {
            out.stale = true;
            pos = start + len;
            continue;
        }
        if out.stale {
            return Err(bad(format!(
                "record {generation} follows records older than the snapshot ({base})"
            )));
        }
        if generation != out.generation.saturating_add(1) {
            if last {
                break; // the last write, cut short
            }
            return Err(bad(format!(
                "record {generation} where {} was due: a record is missing or moved",
                out.generation.saturating_add(1)
            )));
        }
        let mut aad = Vec::with_capacity(8 + 8 + 16);
        aad.extend_from_slice(MAGIC);
        aad.extend_from_slice(&generation.to_be_bytes());
        aad.extend_from_slice(&out.tag);
        let plain = match cipher.decrypt(
            Nonce::from_slice(&record[8..20]),
            Payload {
                msg: &record[20..],
                aad: &aad,
            },
        ) {
            Ok(plain) => Zeroizing::new(plain),
            Err(_) if last => break, // the last write, cut short
            Err(_) => {
                return Err(bad(format!(
                    "record {generation} fails its integrity check (modified, or not this \
                     keystore's)"
                )));
            }
        };
        let change: Change = serde_json::from_slice(&plain)
            .map_err(|e| bad(format!("record {generation} is unreadable: {e}")))?;
        change
            .apply(keys)
            .map_err(|e| bad(format!("record {generation}: {e}")))?;
        out.generation = generation;
        out.records += 1;
        out.tag = record[len - 16..].try_into().expect("16 bytes");
        pos = start + len;
        out.end = pos as u64;
    }
    if out.stale {
        out.end = 0;
    }
    Ok(out)
}

/// The log file, opened for appending after a snapshot.
pub(crate) struct Log {
    path: PathBuf,
    data_key: Zeroizing<[u8; 32]>,
    tag: [u8; 16],
    /// Bytes of whole records.
    len: u64,
    /// Records since the snapshot.
    pub(crate) records: usize,
    /// The file holds bytes that are not whole records of this chain (a failed append that
    /// could not be cut off): the next change goes to a snapshot.
    pub(crate) broken: bool,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("records", &self.records)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// `keystore.log` beside the keystore at `keystore`.
pub(crate) fn path_of(keystore: &Path) -> PathBuf {
    keystore.with_extension("log")
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Keystore(format!("{}: {e}", path.display()))
}

/// Reads the log, or nothing when there is none.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Cuts the log to `len` bytes, durably (when there is a log).
pub(crate) fn truncate(path: &Path, len: u64) -> Result<(), Error> {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f.set_len(len).and_then(|()| f.sync_all()).map_err(io(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

impl Log {
    /// The log after a snapshot with `chain`, holding `records` records in `len` bytes whose last
    /// tag is `tag`.
    pub(crate) fn new(path: PathBuf, chain: Chain, tag: [u8; 16], len: u64, records: usize) -> Log {
        Log {
            path,
            data_key: chain.data_key,
            tag,
            len,
            records,
            broken: false,
        }
    }

    /// Appends `change` as `generation` and syncs it. On failure the log is cut back to its whole
    /// records; if even that fails, it is marked broken.
    pub(crate) fn append(&mut self, generation: u64, change: &Change) -> Result<(), Error> {
        let plain =
            Zeroizing::new(serde_json::to_vec(change).map_err(|e| Error::Internal(e.to_string()))?);
        let cipher = Aes256Gcm::new_from_slice(self.data_key.as_slice())
            .map_err(|_| Error::Internal("key size".into()))?;
        let nonce: [u8; 12] = rand::random();
        let mut aad = Vec::with_capacity(8 + 8 + 16);
        aad.extend_from_slice(MAGIC);
        aad.extend_from_slice(&generation.to_be_bytes());
        aad.extend_from_slice(&self.tag);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Internal("change log encryption failed".into()))?;
        let len = 8 + 12 + ct.len();
        let mut record = Vec::with_capacity(4 + len);
        record.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        record.extend_from_slice(&generation.to_be_bytes());
        record.extend_from_slice(&nonce);
        record.extend_from_slice(&ct);
        let written = self.write(&record);
        if let Err(e) = written {
            if truncate(&self.path, self.len).is_err() {
                self.broken = true;
            }
            return Err(e);
        }
        self.len += record.len() as u64;
        self.records += 1;
        self.tag = ct[ct.len() - 16..].try_into().expect("a 16-byte tag");
        Ok(())
    }

    fn write(&self, record: &[u8]) -> Result<(), Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let new = self.len == 0;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io(&self.path))?;
        f.write_all(record)
            .and_then(|()| f.sync_data())
            .map_err(io(&self.path))?;
        if new && let Some(dir) = self.path.parent() {
            // The file may be new: its directory entry must be durable too.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.path))?;
        }
        Ok(())
    }
}
