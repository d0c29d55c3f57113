//! The authenticated digest of the committed state: what makes the whole database, not only each
//! record, tamper- and rollback-evident.
//!
//! - Every entry gets a MAC under the state key `k` (HMAC-SHA256): a value
//!   `h = HMAC(k, "record" | namespace | key | record)` (the record is the stored bytes: format,
//!   version, ciphertext), a namespace mapping `h = HMAC(k, "namespace" | namespace | key id)`.
//!   Every part is length-prefixed.
//! - The *root* is the XOR of every entry's `h`, so a put, delete or namespace change updates it
//!   in O(1) from the entry's old and new bytes.
//! - The *tag* is `HMAC(k, "state" | seq | root)`, stored in the database beside the commit number
//!   `seq`, written in the same redb transaction as the data.
//!
//! The entries' MACs and the root never leave the enclave: only the tag is stored. A XOR of MACs
//! the host cannot compute is a MAC of the set (XOR-MAC); a stored `h` would let the host solve for
//! a set of old records with the same XOR, so none is stored. `k` is random, made when the database
//! is, and stored sealed (signer policy) in the database itself.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

const RECORD: &[u8] = b"cloister storage record v1\0";
const NAMESPACE: &[u8] = b"cloister storage namespace v1\0";
const STATE: &[u8] = b"cloister storage state v1\0";
/// The associated data the state key is sealed with.
const SEALED_AAD: &[u8] = b"cloister storage state key v1";

/// The XOR of every entry's MAC.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Root([u8; 32]);

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secret: it is what the tag is made of.
        f.write_str("Root(..)")
    }
}

impl Root {
    /// Adds an entry, or takes it out (XOR is its own inverse).
    pub(crate) fn toggle(&mut self, mac: [u8; 32]) {
        for (r, m) in self.0.iter_mut().zip(mac) {
            *r ^= m;
        }
    }
}

/// The state key, ready to MAC with.
#[derive(Clone)]
pub(crate) struct StateKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(..)")
    }
}

fn request(platform: &dyn enclave::Platform) -> enclave::KeyRequest {
    enclave::KeyRequest {
        policy: enclave::Policy::Signer,
        security_version: platform.identity().security_version,
        key_id: Sha256::digest(SEALED_AAD).into(),
    }
}

fn part(mac: &mut HmacSha256, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_le_bytes());
    mac.update(bytes);
}

impl StateKey {
    /// The key with these bytes (tests use fixed ones).
    pub(crate) fn of(bytes: &[u8]) -> StateKey {
        StateKey {
            mac: HmacSha256::new_from_slice(bytes).expect("HMAC takes a key of any length"),
        }
    }

    /// A new random key, and the same key sealed for the database.
    pub(crate) fn generate(
        platform: &dyn enclave::Platform,
    ) -> Result<(StateKey, Vec<u8>), enclave::SealError> {
        let key = Zeroizing::new(rand::random::<[u8; 32]>());
        let sealed = enclave::seal(platform, &request(platform), key.as_slice(), SEALED_AAD)?;
        Ok((StateKey::of(key.as_slice()), sealed))
    }

    /// The key sealed in the database.
    pub(crate) fn unseal(
        platform: &dyn enclave::Platform,
        sealed: &[u8],
    ) -> Result<StateKey, enclave::SealError> {
        let key = enclave::unseal(platform, sealed, SEALED_AAD)?;
        Ok(StateKey::of(&key))
    }

    fn finish(mac: HmacSha256) -> [u8; 32] {
        mac.finalize().into_bytes().into()
    }

    /// The MAC of a value entry: its place and its stored bytes.
    pub(crate) fn record(&self, namespace: &str, key: &str, record: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(RECORD);
        part(&mut mac, namespace.as_bytes());
        part(&mut mac, key.as_bytes());
        part(&mut mac, record);
        Self::finish(mac)
    }

    /// The MAC of a namespace's key mapping.
    pub(crate) fn namespace(&self, namespace: &str, key_id: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(NAMESPACE);
        part(&mut mac, namespace.as_bytes());
        part(&mut mac, key_id.as_bytes());
        Self::finish(mac)
    }

    fn state(&self, seq: u64, root: &Root) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(STATE);
        mac.update(&seq.to_le_bytes());
        mac.update(&root.0);
        mac
    }

    /// The tag of the state `root` at commit `seq`.
    pub(crate) fn tag(&self, seq: u64, root: &Root) -> [u8; 32] {
        Self::finish(self.state(seq, root))
    }

    /// Whether `tag` is the tag of `root` at `seq` (in constant time).
    pub(crate) fn verify(&self, seq: u64, root: &Root, tag: &[u8]) -> bool {
        self.state(seq, root).verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_order_free_and_each_part_is_bound() {
        let k = StateKey::of(&[7; 32]);
        let (a, b) = (k.record("ns", "a", b"1"), k.record("ns", "b", b"2"));
        let (mut one, mut two) = (Root::default(), Root::default());
        one.toggle(a);
        one.toggle(b);
        two.toggle(b);
        two.toggle(a);
        assert_eq!(one, two);
        // Taking an entry out restores the root without it.
        two.toggle(b);
        let mut only_a = Root::default();
        only_a.toggle(a);
        assert_eq!(two, only_a);
        // Length prefixes keep parts apart; a value and a namespace entry differ.
        assert_ne!(k.record("ab", "c", b""), k.record("a", "bc", b""));
        assert_ne!(k.record("n", "k", b"x"), k.namespace("n", "k"));
        // The tag binds the sequence number and the root, and only this key makes it.
        let tag = k.tag(3, &one);
        assert!(k.verify(3, &one, &tag));
        assert!(!k.verify(4, &one, &tag));
        assert!(!k.verify(3, &only_a, &tag));
        assert!(!StateKey::of(&[8; 32]).verify(3, &one, &tag));
        assert!(!k.verify(3, &one, &tag[..31]));
    }

    #[test]
    fn the_sealed_key_unseals_to_the_same_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = enclave::Simulation::open(dir.path(), b"bin", b"", 1).expect("sim");
        let (key, sealed) = StateKey::generate(&sim).expect("generate");
        let again = StateKey::unseal(&sim, &sealed).expect("unseal");
        let root = Root::default();
        assert!(again.verify(1, &root, &key.tag(1, &root)));
        let mut bad = sealed.clone();
        *bad.last_mut().expect("not empty") ^= 1;
        assert!(StateKey::unseal(&sim, &bad).is_err());
    }
}
