//! The cluster key sealed in the data directory (`cluster.key`): the cluster id, the key, its
//! generation and, after a rotation, the generation before it (whose keys may still be being
//! re-wrapped), sealed through the platform with the signer policy (as the keystore's data key),
//! so an upgraded enclave of the same signer still opens it. Written to a temporary file, synced,
//! renamed.
//!
//! ```text
//! plain = cluster id (16) || key (32)                                       (the first format: generation 1)
//!       | cluster id (16) || key (32) || generation (8, BE)
//!       | cluster id (16) || key (32) || generation (8, BE) || previous key (32)
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{ClusterId, ClusterKey, Error};

/// The file's name in the data directory.
pub(crate) const FILE: &str = "cluster.key";
/// The associated data every sealed key binds.
const AAD: &[u8] = b"cloister cluster key v1";

fn request(platform: &dyn enclave::Platform) -> enclave::KeyRequest {
    enclave::KeyRequest {
        policy: enclave::Policy::Signer,
        security_version: platform.identity().security_version,
        key_id: Sha256::digest(b"cloister cluster key v1").into(),
    }
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// What `cluster.key` holds.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub(crate) id: ClusterId,
    pub(crate) key: ClusterKey,
    pub(crate) generation: u64,
    /// The key of `generation - 1`, kept after a rotation.
    pub(crate) previous: Option<ClusterKey>,
}

/// The cluster key sealed in `dir`, if there is one.
pub(crate) fn load(platform: &dyn enclave::Platform, dir: &Path) -> Result<Option<Sealed>, Error> {
    let path = path(dir);
    let blob = match std::fs::read(&path) {
        Ok(blob) => blob,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Sealed(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let plain = zeroize::Zeroizing::new(
        enclave::unseal(platform, &blob, AAD)
            .map_err(|e| Error::Sealed(format!("{}: {e}", path.display())))?,
    );
    if ![48, 56, 88].contains(&plain.len()) {
        return Err(Error::Sealed(format!(
            "{} holds {} bytes, expected 48, 56 or 88 (cluster id, key, generation, previous key)",
            path.display(),
            plain.len()
        )));
    }
    let key_at =
        |at: usize| ClusterKey::from_bytes(plain[at..at + 32].try_into().expect("32 bytes"));
    Ok(Some(Sealed {
        id: ClusterId(plain[..16].try_into().expect("16 bytes")),
        key: key_at(16),
        generation: match plain.get(48..56) {
            Some(bytes) => u64::from_be_bytes(bytes.try_into().expect("8 bytes")),
            None => 1,
        },
        previous: (plain.len() == 88).then(|| key_at(56)),
    }))
}

/// Seals `sealed` into `dir`, replacing nothing: the file must not exist (init, join).
pub(crate) fn store(
    platform: &dyn enclave::Platform,
    dir: &Path,
    sealed: &Sealed,
) -> Result<(), Error> {
    let target = path(dir);
    if target.exists() {
        return Err(Error::Sealed(format!(
            "{} exists already; it is never replaced",
            target.display()
        )));
    }
    replace(platform, dir, sealed)
}

/// Seals `sealed` into `dir` in place of the key there, if any (a rotation): the new file is
/// complete and synced before it takes the old one's name.
pub(crate) fn replace(
    platform: &dyn enclave::Platform,
    dir: &Path,
    sealed: &Sealed,
) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(88));
    plain.extend_from_slice(&sealed.id.0);
    plain.extend_from_slice(sealed.key.bytes());
    plain.extend_from_slice(&sealed.generation.to_be_bytes());
    if let Some(previous) = &sealed.previous {
        plain.extend_from_slice(previous.bytes());
    }
    let blob = enclave::seal(platform, &request(platform), &plain, AAD)
        .map_err(|e| Error::Sealed(e.to_string()))?;
    let target = path(dir);
    let temporary = dir.join(format!("{FILE}.tmp"));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(&blob)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    written.map_err(|e| Error::Sealed(format!("cannot write {}: {e}", target.display())))
}

/// Removes the key file (an init whose database record was not written).
pub(crate) fn remove(dir: &Path) {
    let _ = std::fs::remove_file(path(dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_in_the_same_enclave_and_is_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = enclave::Simulation::open(dir.path(), b"code", b"config", 1).expect("sim");
        assert!(load(&sim, dir.path()).expect("load").is_none());
        let (id, key) = (ClusterId::random(), ClusterKey::random());
        let first = Sealed {
            id,
            key: ClusterKey::from_bytes(*key.bytes()),
            generation: 1,
            previous: None,
        };
        store(&sim, dir.path(), &first).expect("store");
        let opened = load(&sim, dir.path()).expect("load").expect("a key");
        assert_eq!(
            (opened.id, opened.key.bytes(), opened.generation),
            (id, key.bytes(), 1)
        );
        assert!(opened.previous.is_none());
        assert!(store(&sim, dir.path(), &first).is_err());

        // A rotation replaces it, keeping the key before.
        let next = ClusterKey::random();
        let rotated = Sealed {
            id,
            key: ClusterKey::from_bytes(*next.bytes()),
            generation: 2,
            previous: Some(ClusterKey::from_bytes(*key.bytes())),
        };
        replace(&sim, dir.path(), &rotated).expect("replace");
        let opened = load(&sim, dir.path()).expect("load").expect("a key");
        assert_eq!((opened.key.bytes(), opened.generation), (next.bytes(), 2));
        assert_eq!(
            opened.previous.expect("the previous key").bytes(),
            key.bytes()
        );

        // Another platform (another simulation root, so other sealing keys) cannot open it.
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other =
            enclave::Simulation::open(other_dir.path(), b"code", b"config", 1).expect("sim");
        assert!(matches!(load(&other, dir.path()), Err(Error::Sealed(_))));
        // A changed byte is refused.
        let mut blob = std::fs::read(path(dir.path())).expect("read");
        let last = blob.len() - 1;
        blob[last] ^= 1;
        std::fs::write(path(dir.path()), blob).expect("write");
        assert!(matches!(load(&sim, dir.path()), Err(Error::Sealed(_))));
    }
}
