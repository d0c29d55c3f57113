//! Freshness counters: named monotonic counters kept by the platform, so a store can tell that the
//! host handed it an older copy of its data.
//!
//! SGX has no monotonic counter service any more (the platform services' counters are deprecated) and
//! Gramine offers none, so both backends keep each counter as a sealed file in the data directory.
//! That detects a host that swaps in an older database; a host that rolls back the database and the
//! counter file together is not detected, which needs an external counter (a replicated or
//! TPM-backed one) and is out of scope here.
//!
//! A counter file is a row of slots, each a sealed value: value `n` goes to slot `n % slots`,
//! overwritten in place and synced once. A write torn by a crash damages only the slot it was
//! writing, so the others still hold earlier values; reading takes the highest value that unseals.
//! (Write-new-then-rename would cost a second sync, of the directory, on every advance.) Two
//! layouts, told apart by the file's length:
//!
//! - plain: two 4 KiB slots, each holding the value alone (every counter starts so);
//! - carrying ([`CounterLog`]): [`LOG_SLOTS`] slots of 64 KiB (2 MiB), each holding the value and what its
//!   advance carried, so the last few advances can be read back with their payloads. A store
//!   writes what a commit changes there and the counter's advance is the commit's one sync (the
//!   storage service's redb commits, `storage/src/store.rs`).

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{KeyRequest, Platform, Policy, SealError, seal, unseal};

/// How many slots a carrying counter file has: the advances whose payloads can be read back.
pub const LOG_SLOTS: u64 = 32;

/// A counter file's layout: its slots, their size, and the width of each slot's length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    slots: usize,
    size: usize,
    prefix: usize,
}

const PLAIN: Layout = Layout {
    slots: 2,
    size: 4096,
    prefix: 2,
};

const CARRYING: Layout = Layout {
    slots: LOG_SLOTS as usize,
    size: 64 * 1024,
    prefix: 4,
};

/// A sealed blob's bytes beyond its plaintext (header and tag), with room to spare.
const SEAL_OVERHEAD: usize = 256;

impl Layout {
    fn of_len(len: usize) -> Option<Layout> {
        [PLAIN, CARRYING]
            .into_iter()
            .find(|l| l.slots * l.size == len)
    }

    fn offset(&self, value: u64) -> usize {
        (value % self.slots as u64) as usize * self.size
    }

    /// One slot's bytes for `blob`: its length, then the blob.
    fn slot(&self, blob: &[u8]) -> Result<Vec<u8>, SealError> {
        if self.prefix + blob.len() > self.size {
            return Err(SealError::Malformed(
                "a sealed counter outgrew its slot".into(),
            ));
        }
        let mut slot = Vec::with_capacity(self.prefix + blob.len());
        match self.prefix {
            2 => slot.extend_from_slice(&(blob.len() as u16).to_le_bytes()),
            _ => slot.extend_from_slice(&(blob.len() as u32).to_le_bytes()),
        }
        slot.extend_from_slice(blob);
        Ok(slot)
    }

    /// The sealed blob in a slot's bytes; `None` for a slot never written.
    fn blob<'a>(&self, slot: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, SealError> {
        let len = match self.prefix {
            2 => usize::from(u16::from_le_bytes([slot[0], slot[1]])),
            _ => u32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]) as usize,
        };
        if len == 0 {
            return Ok(None);
        }
        slot.get(self.prefix..self.prefix + len)
            .map(Some)
            .ok_or_else(|| SealError::Malformed(format!("counter {name}: slot length {len}")))
    }
}

/// What a counter file holds: its highest value, and the payloads its slots still carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// The counter's value.
    pub value: u64,
    /// Value → what the advance to it carried, for the advances still in the file (a plain
    /// counter, or an advance that carried nothing, has none).
    pub payloads: BTreeMap<u64, Vec<u8>>,
}

/// The counters of one data directory.
#[derive(Debug)]
pub struct Counters {
    dir: PathBuf,
    /// Read-modify-write of a counter is one writer's at a time.
    writing: std::sync::Mutex<()>,
}

fn check_name(name: &str) -> Result<(), SealError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(SealError::Malformed(format!(
            "counter name {name:?}: use letters, digits, '-' and '_'"
        )));
    }
    Ok(())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SealError + '_ {
    move |source| {
        SealError::Platform(crate::Error::Io {
            path: path.to_owned(),
            source,
        })
    }
}

fn request(platform: &dyn Platform, name: &str) -> KeyRequest {
    let key_id: [u8; 32] =
        Sha256::digest([b"cloister counter v1\0".as_slice(), name.as_bytes()].concat()).into();
    KeyRequest {
        policy: Policy::Signer,
        security_version: platform.identity().security_version,
        key_id,
    }
}

/// The sealed slot content for `value` carrying `payload` (nothing, in the plain layout).
fn sealed(
    platform: &dyn Platform,
    name: &str,
    value: u64,
    payload: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut plain = Vec::with_capacity(8 + payload.len());
    plain.extend_from_slice(&value.to_le_bytes());
    plain.extend_from_slice(payload);
    seal(platform, &request(platform, name), &plain, name.as_bytes())
}

/// Reads a whole counter file: `None` if it does not exist.
fn read_file(
    platform: &dyn Platform,
    path: &Path,
    name: &str,
) -> Result<Option<(Layout, Carried)>, SealError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let layout = Layout::of_len(bytes.len()).ok_or_else(|| {
        SealError::Malformed(format!(
            "counter {name} is {} bytes, neither {} nor {}",
            bytes.len(),
            PLAIN.slots * PLAIN.size,
            CARRYING.slots * CARRYING.size
        ))
    })?;
    let mut best: Option<u64> = None;
    let mut payloads = BTreeMap::new();
    let mut damage = None;
    for (index, slot) in bytes.chunks(layout.size).enumerate() {
        let opened = layout.blob(slot, name).and_then(|blob| match blob {
            None => Ok(None),
            Some(blob) => unseal(platform, blob, name.as_bytes()).and_then(|plain| {
                let value = plain
                    .get(..8)
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map(u64::from_le_bytes)
                    .filter(|&v| layout.offset(v) == index * layout.size)
                    .ok_or_else(|| {
                        SealError::Malformed(format!("counter {name}: a slot out of place"))
                    })?;
                Ok(Some((value, plain[8..].to_vec())))
            }),
        });
        match opened {
            Ok(None) => {}
            Ok(Some((value, payload))) => {
                best = best.max(Some(value));
                if !payload.is_empty() {
                    payloads.insert(value, payload);
                }
            }
            Err(e) => damage = Some(e),
        }
    }
    match (best, damage) {
        (Some(value), _) => Ok(Some((layout, Carried { value, payloads }))),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(Some((layout, Carried::default()))),
    }
}

/// Writes a whole counter file of `layout` holding `slot` at `offset`, through a temporary file
/// renamed into place, with the directory synced: a counter's first write, or a change of layout.
fn write_whole(
    dir: &Path,
    name: &str,
    path: &Path,
    layout: Layout,
    offset: usize,
    slot: &[u8],
) -> Result<(), SealError> {
    let io = io(path);
    let mut whole = vec![0u8; layout.slots * layout.size];
    whole[offset..offset + slot.len()].copy_from_slice(slot);
    let tmp = dir.join(format!(".{name}.counter.tmp"));
    // The owner's alone, like every other file in the data directory.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(&io)?;
    file.write_all(&whole)
        .and_then(|()| file.sync_all())
        .map_err(&io)?;
    std::fs::rename(&tmp, path).map_err(&io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(&io)
}

impl Counters {
    pub fn new(dir: &Path) -> Counters {
        Counters {
            dir: dir.to_owned(),
            writing: std::sync::Mutex::new(()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.counter"))
    }

    /// The counter's value; 0 if it was never advanced.
    pub fn read(&self, platform: &dyn Platform, name: &str) -> Result<u64, SealError> {
        Ok(self.read_if_present(platform, name)?.unwrap_or(0))
    }

    /// The counter's value, or `None` if its file does not exist: never created, or deleted. A
    /// store that starts new creates its counter (`advance_to(.., 0)`), so that later a missing
    /// file means a lost counter (see [`crate::fresh`]).
    pub fn read_if_present(
        &self,
        platform: &dyn Platform,
        name: &str,
    ) -> Result<Option<u64>, SealError> {
        Ok(self.carried(platform, name)?.map(|c| c.value))
    }

    /// The counter's value and the payloads its last advances carried ([`CounterLog::advance`]), or
    /// `None` if its file does not exist.
    pub fn carried(
        &self,
        platform: &dyn Platform,
        name: &str,
    ) -> Result<Option<Carried>, SealError> {
        check_name(name)?;
        Ok(read_file(platform, &self.path(name), name)?.map(|(_, carried)| carried))
    }

    /// Adds one and returns the new value, durably: when this returns, a crash keeps the new value.
    pub fn advance(&self, platform: &dyn Platform, name: &str) -> Result<u64, SealError> {
        let _one_writer = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let next = self.read(platform, name)? + 1;
        self.write(platform, name, next)?;
        Ok(next)
    }

    /// Moves the counter forward to `value` (an operator accepting a state the counter has not seen);
    /// a counter never moves back, so a `value` below the current one is refused.
    pub fn advance_to(
        &self,
        platform: &dyn Platform,
        name: &str,
        value: u64,
    ) -> Result<(), SealError> {
        let _one_writer = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.read(platform, name)?;
        if value < current {
            return Err(SealError::Malformed(format!(
                "counter {name} is at {current}; it never moves back to {value}"
            )));
        }
        // Reading takes the highest slot, so the others (at most `current`) can stay.
        self.write(platform, name, value)
    }

    /// Writes `value`, carrying nothing, into its slot of the file's layout (a new file is plain).
    fn write(&self, platform: &dyn Platform, name: &str, value: u64) -> Result<(), SealError> {
        let path = self.path(name);
        let io = io(&path);
        let blob = sealed(platform, name, value, &[])?;
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(mut file) => {
                // A file of another size is rewritten whole below, not patched.
                let len = file.metadata().map_err(&io)?.len();
                if let Some(layout) = usize::try_from(len).ok().and_then(Layout::of_len) {
                    let slot = layout.slot(&blob)?;
                    file.seek(SeekFrom::Start(layout.offset(value) as u64))
                        .map_err(&io)?;
                    file.write_all(&slot).map_err(&io)?;
                    return file.sync_data().map_err(&io);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let slot = PLAIN.slot(&blob)?;
        write_whole(&self.dir, name, &path, PLAIN, PLAIN.offset(value), &slot)
    }

    /// Opens counter `name` for advances that carry a payload, turning its file into the carrying
    /// layout if it is plain (its value kept). The counter must exist. One [`CounterLog`] per
    /// counter at a time: it remembers the value it last wrote, and advances from there.
    pub fn log(&self, platform: &dyn Platform, name: &str) -> Result<CounterLog, SealError> {
        check_name(name)?;
        let _one_writer = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path(name);
        let Some((layout, carried)) = read_file(platform, &path, name)? else {
            return Err(SealError::Malformed(format!(
                "counter {name} does not exist: create it before logging to it"
            )));
        };
        if layout != CARRYING {
            let slot = CARRYING.slot(&sealed(platform, name, carried.value, &[])?)?;
            write_whole(
                &self.dir,
                name,
                &path,
                CARRYING,
                CARRYING.offset(carried.value),
                &slot,
            )?;
        }
        Ok(CounterLog {
            path,
            name: name.to_owned(),
            value: carried.value,
        })
    }
}

/// A counter whose advances carry a payload: what a store's commit changed, written with the
/// commit's number in one synced slot, so the counter's advance and the record of the commit are
/// one write. The last [`LOG_SLOTS`] advances' payloads can be read back
/// ([`Counters::carried`]).
#[derive(Debug)]
pub struct CounterLog {
    path: PathBuf,
    name: String,
    value: u64,
}

impl CounterLog {
    /// The largest payload an advance can carry.
    pub const CAPACITY: usize = CARRYING.size - CARRYING.prefix - 8 - SEAL_OVERHEAD;

    /// The value last written.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// Moves the counter to `value`, carrying `payload` (empty: nothing), durably: when this
    /// returns, a crash keeps the new value and its payload. The value must be above the current
    /// one, and the payload at most [`CounterLog::CAPACITY`] bytes.
    pub fn advance(
        &mut self,
        platform: &dyn Platform,
        value: u64,
        payload: &[u8],
    ) -> Result<(), SealError> {
        if value <= self.value {
            return Err(SealError::Malformed(format!(
                "counter {} is at {}; it only moves forward, not to {value}",
                self.name, self.value
            )));
        }
        if payload.len() > Self::CAPACITY {
            return Err(SealError::Malformed(format!(
                "counter {}: a payload of {} bytes is over the slot's {}",
                self.name,
                payload.len(),
                Self::CAPACITY
            )));
        }
        let slot = CARRYING.slot(&sealed(platform, &self.name, value, payload)?)?;
        let io = io(&self.path);
        // Opened for each advance, so a file that went away or was replaced is written where it
        // is now, or the advance fails, rather than going to a file nobody will read.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(&io)?;
        let len = file.metadata().map_err(&io)?.len();
        if len != (CARRYING.slots * CARRYING.size) as u64 {
            return Err(SealError::Malformed(format!(
                "counter {} is {len} bytes now, not the {} it was opened with",
                self.name,
                CARRYING.slots * CARRYING.size
            )));
        }
        file.write_all_at(&slot, CARRYING.offset(value) as u64)
            .and_then(|()| file.sync_data())
            .map_err(&io)?;
        self.value = value;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Simulation;

    const SLOT: usize = PLAIN.size;

    #[test]
    fn advances_survive_reopen_and_tampering_is_an_integrity_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = Simulation::open(dir.path(), b"bin", b"", 1).expect("sim");
        let counters = Counters::new(dir.path());
        assert_eq!(counters.read(&sim, "storage").expect("read"), 0);
        assert_eq!(
            counters.read_if_present(&sim, "storage").expect("read"),
            None
        );
        counters.advance_to(&sim, "storage", 0).expect("create");
        assert_eq!(
            counters.read_if_present(&sim, "storage").expect("read"),
            Some(0)
        );
        assert_eq!(counters.advance(&sim, "storage").expect("advance"), 1);
        assert_eq!(counters.advance(&sim, "storage").expect("advance"), 2);
        assert_eq!(counters.read(&sim, "other").expect("read"), 0);
        counters.advance_to(&sim, "other", 7).expect("forward");
        assert_eq!(counters.read(&sim, "other").expect("read"), 7);
        assert!(counters.advance_to(&sim, "other", 6).is_err());
        assert_eq!(counters.read(&sim, "other").expect("read"), 7);
        assert!(matches!(
            counters.advance(&sim, "../escape"),
            Err(SealError::Malformed(_))
        ));
        let sim2 = Simulation::open(dir.path(), b"bin v2", b"", 2).expect("upgraded");
        assert_eq!(
            Counters::new(dir.path())
                .read(&sim2, "storage")
                .expect("read after upgrade"),
            2
        );
        // Value 2 is in slot 0, value 1 in slot 1. A damaged newer slot (a torn write) leaves the
        // older value; both damaged is an integrity error.
        let path = dir.path().join("storage.counter");
        let mut file = std::fs::read(&path).expect("read");
        file[SLOT - 1] ^= 1; // padding: harmless
        std::fs::write(&path, &file).expect("write");
        assert_eq!(counters.read(&sim, "storage").expect("read"), 2);
        file[40] ^= 1;
        std::fs::write(&path, &file).expect("write");
        assert_eq!(counters.read(&sim, "storage").expect("read"), 1);
        file[SLOT + 40] ^= 1;
        std::fs::write(&path, &file).expect("write");
        assert!(matches!(
            counters.read(&sim, "storage"),
            Err(SealError::Integrity)
        ));
        std::fs::write(&path, &file[..100]).expect("truncate");
        assert!(matches!(
            counters.read(&sim, "storage"),
            Err(SealError::Malformed(_))
        ));
        // A counter file renamed to another counter does not open as that one.
        let _ = counters.advance(&sim, "a").expect("advance");
        std::fs::copy(dir.path().join("a.counter"), dir.path().join("b.counter")).expect("copy");
        assert!(matches!(
            counters.read(&sim, "b"),
            Err(SealError::Integrity)
        ));
    }

    #[test]
    fn a_log_carries_the_last_advances_payloads_and_survives_a_torn_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = Simulation::open(dir.path(), b"bin", b"", 1).expect("sim");
        let counters = Counters::new(dir.path());
        let read_back = |counters: &Counters| {
            counters
                .carried(&sim, "storage")
                .expect("read")
                .expect("present")
        };
        assert!(
            counters.log(&sim, "storage").is_err(),
            "a log needs its counter"
        );
        // A plain counter at 5 becomes a carrying one, its value kept.
        counters.advance_to(&sim, "storage", 5).expect("create");
        let mut log = counters.log(&sim, "storage").expect("log");
        assert_eq!(log.value(), 5);
        let path = dir.path().join("storage.counter");
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the owner's alone");
        }
        assert_eq!(
            std::fs::metadata(&path).expect("file").len() as usize,
            CARRYING.slots * CARRYING.size
        );
        assert_eq!(counters.read(&sim, "storage").expect("read"), 5);

        log.advance(&sim, 6, b"six").expect("advance");
        log.advance(&sim, 7, b"").expect("advance carrying nothing");
        let carried = read_back(&counters);
        assert_eq!(carried.value, 7);
        assert_eq!(
            carried.payloads,
            BTreeMap::from([(6, b"six".to_vec())]),
            "an empty payload is none"
        );
        // It never moves back or stays, and a payload must fit its slot.
        assert!(log.advance(&sim, 7, b"again").is_err());
        assert!(log.advance(&sim, 3, b"back").is_err());
        let big = vec![0u8; CounterLog::CAPACITY + 1];
        assert!(log.advance(&sim, 8, &big).is_err());
        log.advance(&sim, 8, &big[1..])
            .expect("the capacity is usable");

        // Only the last LOG_SLOTS advances keep their payloads.
        let last = 12 + LOG_SLOTS;
        for v in 9..=last {
            log.advance(&sim, v, &v.to_le_bytes()).expect("advance");
        }
        let carried = read_back(&counters);
        assert_eq!(carried.value, last);
        assert_eq!(
            carried.payloads.keys().copied().collect::<Vec<_>>(),
            (13..=last).collect::<Vec<_>>()
        );
        assert_eq!(carried.payloads[&last], last.to_le_bytes());

        // A write torn by a crash damages its own slot only: the value before it is read.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[CARRYING.offset(last) + 100] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let carried = read_back(&counters);
        assert_eq!(carried.value, last - 1);
        assert!(!carried.payloads.contains_key(&last));
        assert!(carried.payloads.contains_key(&13));

        // A slot moved to another place is not taken for that place's value.
        let (from, to) = (CARRYING.offset(last - 1), CARRYING.offset(last - 2));
        let moved = bytes[from..from + CARRYING.size].to_vec();
        bytes[to..to + CARRYING.size].copy_from_slice(&moved);
        std::fs::write(&path, &bytes).expect("write");
        let carried = read_back(&counters);
        assert_eq!(carried.value, last - 1);
        assert!(!carried.payloads.contains_key(&(last - 2)));

        // The plain advance works on a carrying file too.
        let counters = Counters::new(dir.path());
        assert_eq!(counters.advance(&sim, "storage").expect("advance"), last);
        assert_eq!(counters.read(&sim, "storage").expect("read"), last);
    }
}
