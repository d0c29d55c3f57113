//! Freshness counters: named monotonic counters kept by the platform, so a store can tell that the
//! host handed it an older copy of its data.
//!
//! SGX has no monotonic counter service any more (the platform services' counters are deprecated) and
//! Gramine offers none, so both backends keep each counter as a sealed file in the data directory,
//! written atomically. That detects a host that swaps in an older database; a host that rolls back the
//! database and the counter file together is not detected, which needs an external counter (a
//! replicated or TPM-backed one) and is out of scope here.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{KeyRequest, Platform, Policy, SealError, seal, unseal};

/// The counters of one data directory.
#[derive(Debug)]
pub struct Counters {
    dir: PathBuf,
    /// Read-modify-write of a counter, and its temporary file, are one writer's at a time.
    writing: std::sync::Mutex<()>,
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

    /// The counter's value; 0 if it was never advanced.
    pub fn read(&self, platform: &dyn Platform, name: &str) -> Result<u64, SealError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SealError::Malformed(format!(
                "counter name {name:?}: use letters, digits, '-' and '_'"
            )));
        }
        let path = self.path(name);
        let blob = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(SealError::Platform(crate::Error::Io { path, source: e })),
        };
        let plain = unseal(platform, &blob, name.as_bytes())?;
        let bytes: [u8; 8] = plain.as_slice().try_into().map_err(|_| {
            SealError::Malformed(format!("counter {name} holds {} bytes, not 8", plain.len()))
        })?;
        Ok(u64::from_le_bytes(bytes))
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
        let tmp = self.dir.join(format!(".{name}.counter.tmp"));
        let io = |source| {
            SealError::Platform(crate::Error::Io {
                path: path.clone(),
                source,
            })
        };
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&blob)
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        // The rename itself must reach the disk too.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
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
        let path = dir.path().join("storage.counter");
        let mut blob = std::fs::read(&path).expect("read");
        let last = blob.len() - 1;
        blob[last] ^= 1;
        std::fs::write(&path, &blob).expect("write");
        assert!(matches!(
            counters.read(&sim, "storage"),
            Err(SealError::Integrity)
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
