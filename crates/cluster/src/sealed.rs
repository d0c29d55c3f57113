//! The cluster key sealed in the data directory (`cluster.key`): the cluster id and the key,
//! sealed through the platform with the signer policy (as the keystore's data key), so an
//! upgraded enclave of the same signer still opens it. Written to a temporary file, synced,
//! renamed.

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

/// The cluster key sealed in `dir`, if there is one.
pub(crate) fn load(
    platform: &dyn enclave::Platform,
    dir: &Path,
) -> Result<Option<(ClusterId, ClusterKey)>, Error> {
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
    let plain = enclave::unseal(platform, &blob, AAD)
        .map_err(|e| Error::Sealed(format!("{}: {e}", path.display())))?;
    if plain.len() != 48 {
        return Err(Error::Sealed(format!(
            "{} holds {} bytes, expected 48 (cluster id and key)",
            path.display(),
            plain.len()
        )));
    }
    let id = ClusterId(plain[..16].try_into().expect("16 bytes"));
    let key = ClusterKey::from_bytes(plain[16..].try_into().expect("32 bytes"));
    Ok(Some((id, key)))
}

/// Seals `key` of cluster `id` into `dir`, replacing nothing: the file must not exist.
pub(crate) fn store(
    platform: &dyn enclave::Platform,
    dir: &Path,
    id: &ClusterId,
    key: &ClusterKey,
) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(48));
    plain.extend_from_slice(&id.0);
    plain.extend_from_slice(key.bytes());
    let blob = enclave::seal(platform, &request(platform), &plain, AAD)
        .map_err(|e| Error::Sealed(e.to_string()))?;
    let target = path(dir);
    if target.exists() {
        return Err(Error::Sealed(format!(
            "{} exists already; it is never replaced",
            target.display()
        )));
    }
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
        store(&sim, dir.path(), &id, &key).expect("store");
        let (id2, key2) = load(&sim, dir.path()).expect("load").expect("a key");
        assert_eq!((id2, key2.bytes()), (id, key.bytes()));
        assert!(store(&sim, dir.path(), &id, &ClusterKey::random()).is_err());

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
