//! Freshness counters: named monotonic counters kept by the platform, so a store can tell that the
//! host handed it an older copy of its data.
//!
//! SGX has no monotonic counter service any more (the platform services' counters are deprecated) and
//! Gramine offers none, so both backends keep each counter as a sealed file in the data directory.
//! That detects a host that swaps in an older database; a host that rolls back the database and the
//! counter file together is not detected, which needs an external counter (a replicated or
//! TPM-backed one) and is out of scope here.
//!
//! A counter file has two slots, 4 KiB apart, each a sealed value: value `n` goes to slot `n % 2`,
//! overwritten in place and synced once. A write torn by a crash damages only the slot it was
//! writing, so the other still holds the previous value; reading takes the highest value that
//! unseals. (Write-new-then-rename would cost a second sync, of the directory, on every advance.)

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{KeyRequest, Platform, Policy, SealError, seal, unseal};

const SLOT: usize = 4096;

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

    fn request(platform: &dyn Platform, name: &str) -> KeyRequest {
        let key_id: [u8; 32] =
            Sha256::digest([b"cloister counter v1\0".as_slice(), name.as_bytes()].concat()).into();
        KeyRequest {
            policy: Policy::Signer,
            security_version: platform.identity().security_version,
            key_id,
        }
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> SealError + '_ {
        move |source| {
            SealError::Platform(crate::Error::Io {
                path: path.to_owned(),
                source,
            })
        }
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
        check_name(name)?;
        let path = self.path(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(&path)(e)),
        };
        if bytes.len() != 2 * SLOT {
            return Err(SealError::Malformed(format!(
                "counter {name} is {} bytes, not {}",
                bytes.len(),
                2 * SLOT
            )));
        }
        let mut best: Option<u64> = None;
        let mut damage = None;
        for slot in bytes.chunks(SLOT) {
            let len = usize::from(u16::from_le_bytes([slot[0], slot[1]]));
            if len == 0 {
                continue; // never written
            }
            let value = slot
                .get(2..2 + len)
                .ok_or_else(|| SealError::Malformed(format!("counter {name}: slot length {len}")))
                .and_then(|blob| unseal(platform, blob, name.as_bytes()))
                .and_then(|plain| {
                    <[u8; 8]>::try_from(plain.as_slice())
                        .map(u64::from_le_bytes)
                        .map_err(|_| SealError::Malformed(format!("counter {name}: not 8 bytes")))
                });
            match value {
                Ok(v) => best = best.max(Some(v)),
                Err(e) => damage = Some(e),
            }
        }
        match (best, damage) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(Some(0)),
        }
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
        // Reading takes the higher slot, so the other one (at most `current`) can stay.
        self.write(platform, name, value)
    }

    fn write(&self, platform: &dyn Platform, name: &str, value: u64) -> Result<(), SealError> {
        let blob = seal(
            platform,
            &Self::request(platform, name),
            &value.to_le_bytes(),
            name.as_bytes(),
        )?;
        let path = self.path(name);
        let io = Self::io(&path);
        let mut slot = vec![0u8; SLOT];
        let len = u16::try_from(blob.len())
            .ok()
            .filter(|&l| usize::from(l) + 2 <= SLOT)
            .ok_or_else(|| SealError::Malformed("a sealed counter outgrew its slot".into()))?;
        slot[..2].copy_from_slice(&len.to_le_bytes());
        slot[2..2 + blob.len()].copy_from_slice(&blob);
        let offset = (value % 2) as usize * SLOT;
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(mut file) => {
                // A file of the wrong size is rewritten whole below, not patched.
                if file.metadata().map_err(&io)?.len() == (2 * SLOT) as u64 {
                    file.seek(SeekFrom::Start(offset as u64)).map_err(&io)?;
                    file.write_all(&slot).map_err(&io)?;
                    return file.sync_data().map_err(&io);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        // First write: both slots through a temporary file, renamed into place, directory synced.
        let mut whole = vec![0u8; 2 * SLOT];
        whole[offset..offset + SLOT].copy_from_slice(&slot);
        let tmp = self.dir.join(format!(".{name}.counter.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(&io)?;
        file.write_all(&whole)
            .and_then(|()| file.sync_all())
            .map_err(&io)?;
        std::fs::rename(&tmp, &path).map_err(&io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(&io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Simulation;

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
}
