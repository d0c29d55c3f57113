//! The cryptography of the cluster key's rotation as pure functions (docs/cluster.md, "Rotating
//! the cluster key"): each member's static key and the tag it registers it with, and the grant,
//! a new cluster key sealed to one member by a holder of the key it replaces.
//!
//! ```text
//! member secret = HKDF-SHA256(IKM = sealing key (signer policy, key id SHA-256(MEMBER_KEY_ID)),
//!                             info = MEMBER_SECRET_INFO || node id), an X25519 secret; never stored
//! member tag    = HMAC-SHA256(HKDF-SHA256(IKM = cluster key, info = MEMBER_TAG_INFO || cluster id),
//!                             generation (8, BE) || len(node id) (4, BE) || node id || member public (32))
//! grant         = ephemeral public (32) || nonce (12) || AES-256-GCM(k, nonce, new key, context)
//! context       = GRANT_INFO || cluster id (16) || generation (8, BE) || len(node id) (4, BE)
//!                 || node id || member public (32) || ephemeral public (32)
//! k             = HKDF-SHA256(salt = the cluster key being replaced, IKM = X25519(ephemeral, member),
//!                             info = context)
//! ```
//!
//! A member registers its public key with a tag under the key it holds, so a public key put in
//! the table by anyone without the cluster key is never granted anything. A grant opens only with
//! the member's secret (so a node left out, a removed one, cannot read another's), and only for a
//! holder of the replaced key (so a grant written by anyone without it is refused).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use x25519_dalek::{EphemeralSecret, PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::{ClusterId, ClusterKey, Error};

/// The sealing key id's preimage for the member secret.
pub const MEMBER_KEY_ID: &[u8] = b"cloister cluster member key v1";
/// HKDF info prefix of the member secret (the node id follows).
pub const MEMBER_SECRET_INFO: &[u8] = b"cloister cluster member secret v1\0";
/// HKDF info prefix of the member tag's key (the cluster id follows).
pub const MEMBER_TAG_INFO: &[u8] = b"cloister cluster member tag v1\0";
/// The grant's context prefix.
pub const GRANT_INFO: &[u8] = b"cloister cluster grant v1\0";
/// A grant's length: ephemeral public key, nonce, the key and its tag.
pub const GRANT_LEN: usize = 32 + 12 + 32 + 16;

/// This node's static X25519 secret, derived from its sealing key and node id: the same at every
/// start on this platform, never written anywhere.
pub(crate) fn member_secret(
    platform: &dyn enclave::Platform,
    node: &str,
) -> Result<StaticSecret, Error> {
    let sealing = platform
        .sealing_key(&enclave::KeyRequest {
            policy: enclave::Policy::Signer,
            security_version: platform.identity().security_version,
            key_id: Sha256::digest(MEMBER_KEY_ID).into(),
        })
        .map_err(|e| Error::Sealed(format!("the member key's sealing key: {e}")))?;
    let mut secret = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(None, sealing.bytes())
        .expand_multi_info(&[MEMBER_SECRET_INFO, node.as_bytes()], secret.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Ok(StaticSecret::from(*secret))
}

fn put_len(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(part);
}

fn tag_mac(key: &ClusterKey, id: &ClusterId) -> Hmac<Sha256> {
    let mut tag_key = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(None, key.bytes())
        .expand_multi_info(&[MEMBER_TAG_INFO, &id.0], tag_key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    <Hmac<Sha256> as Mac>::new_from_slice(tag_key.as_slice()).expect("any key length")
}

fn tag_input(generation: u64, node: &str, public: &[u8; 32]) -> Vec<u8> {
    let mut input = generation.to_be_bytes().to_vec();
    put_len(&mut input, node.as_bytes());
    input.extend_from_slice(public);
    input
}

/// The tag a member registers its public key with, under the key of `generation` it holds.
pub fn member_tag(
    key: &ClusterKey,
    id: &ClusterId,
    generation: u64,
    node: &str,
    public: &[u8; 32],
) -> [u8; 32] {
    let mut mac = tag_mac(key, id);
    mac.update(&tag_input(generation, node, public));
    mac.finalize().into_bytes().into()
}

/// Whether `tag` is the member tag of `node`'s `public` key at `generation`, under `key`.
pub fn check_member_tag(
    key: &ClusterKey,
    id: &ClusterId,
    generation: u64,
    node: &str,
    public: &[u8; 32],
    tag: &[u8],
) -> bool {
    let mut mac = tag_mac(key, id);
    mac.update(&tag_input(generation, node, public));
    mac.verify_slice(tag).is_ok()
}

fn context(
    id: &ClusterId,
    generation: u64,
    node: &str,
    member: &[u8; 32],
    ephemeral: &[u8; 32],
) -> Vec<u8> {
    let mut out = GRANT_INFO.to_vec();
    out.extend_from_slice(&id.0);
    out.extend_from_slice(&generation.to_be_bytes());
    put_len(&mut out, node.as_bytes());
    out.extend_from_slice(member);
    out.extend_from_slice(ephemeral);
    out
}

fn grant_cipher(replaced: &ClusterKey, shared: &[u8; 32], context: &[u8]) -> Aes256Gcm {
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(Some(replaced.bytes()), shared)
        .expand(context, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new_from_slice(key.as_slice()).expect("a 32-byte key")
}

/// The key of `generation`, `new`, sealed to member `node`'s public key by a holder of the key it
/// replaces.
pub fn grant(
    replaced: &ClusterKey,
    id: &ClusterId,
    generation: u64,
    node: &str,
    member: &[u8; 32],
    new: &ClusterKey,
) -> Result<Vec<u8>, Error> {
    let secret = EphemeralSecret::random_from_rng(rand::rngs::OsRng);
    let ephemeral = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(*member));
    if !shared.was_contributory() {
        return Err(Error::Invalid(format!(
            "node {node}'s public key is of low order"
        )));
    }
    let context = context(id, generation, node, member, &ephemeral);
    let nonce: [u8; 12] = rand::random();
    let sealed = grant_cipher(replaced, shared.as_bytes(), &context)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: new.bytes(),
                aad: &context,
            },
        )
        .map_err(|_| Error::Internal("AES-GCM refused to encrypt 32 bytes".into()))?;
    let mut out = Vec::with_capacity(GRANT_LEN);
    out.extend_from_slice(&ephemeral);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens the grant of `generation` to this member (`node`, `secret`), with the key it replaces.
pub fn open_grant(
    replaced: &ClusterKey,
    id: &ClusterId,
    generation: u64,
    node: &str,
    secret: &StaticSecret,
    grant: &[u8],
) -> Result<ClusterKey, Error> {
    let refused = |why: &str| Error::BadGrant(format!("generation {generation}: {why}"));
    if grant.len() != GRANT_LEN {
        return Err(refused(&format!(
            "{} bytes, expected {GRANT_LEN}",
            grant.len()
        )));
    }
    let ephemeral: [u8; 32] = grant[..32].try_into().expect("32 bytes");
    let member = PublicKey::from(secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(ephemeral));
    if !shared.was_contributory() {
        return Err(refused("the ephemeral public key is of low order"));
    }
    let context = context(id, generation, node, &member, &ephemeral);
    let key = Zeroizing::new(
        grant_cipher(replaced, shared.as_bytes(), &context)
            .decrypt(
                Nonce::from_slice(&grant[32..44]),
                Payload {
                    msg: &grant[44..],
                    aad: &context,
                },
            )
            .map_err(|_| {
                refused(
                    "it does not open with this member's key and the cluster key it replaces \
                     (written by someone without the cluster key, or for another member)",
                )
            })?,
    );
    let bytes: [u8; 32] = key
        .as_slice()
        .try_into()
        .map_err(|_| refused("the key is not 32 bytes"))?;
    Ok(ClusterKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> (StaticSecret, [u8; 32]) {
        let secret = StaticSecret::random_from_rng(rand::rngs::OsRng);
        let public = PublicKey::from(&secret).to_bytes();
        (secret, public)
    }

    #[test]
    fn a_grant_opens_only_for_its_member_generation_and_replaced_key() {
        let id = ClusterId([3; 16]);
        let (old, new) = (ClusterKey::random(), ClusterKey::random());
        let (secret, public) = member();
        let sealed = grant(&old, &id, 2, "a", &public, &new).expect("grant");
        assert_eq!(sealed.len(), GRANT_LEN);
        let opened = open_grant(&old, &id, 2, "a", &secret, &sealed).expect("opens");
        assert_eq!(opened.bytes(), new.bytes());

        // Another member's secret, another node id or generation, another cluster: refused.
        let (other, _) = member();
        assert!(open_grant(&old, &id, 2, "a", &other, &sealed).is_err());
        assert!(open_grant(&old, &id, 2, "b", &secret, &sealed).is_err());
        assert!(open_grant(&old, &id, 3, "a", &secret, &sealed).is_err());
        assert!(open_grant(&old, &ClusterId([4; 16]), 2, "a", &secret, &sealed).is_err());
        // A grant made by someone who knows the member's public key but not the replaced key.
        let forged = grant(&ClusterKey::random(), &id, 2, "a", &public, &new).expect("grant");
        let e = open_grant(&old, &id, 2, "a", &secret, &forged).expect_err("forged");
        assert!(matches!(e, Error::BadGrant(_)), "{e}");
        // A changed byte, a short grant.
        let mut flipped = sealed.clone();
        flipped[50] ^= 1;
        assert!(open_grant(&old, &id, 2, "a", &secret, &flipped).is_err());
        assert!(open_grant(&old, &id, 2, "a", &secret, &sealed[1..]).is_err());
    }

    #[test]
    fn a_member_tag_binds_key_generation_node_and_public_key() {
        let id = ClusterId([3; 16]);
        let key = ClusterKey::random();
        let (_, public) = member();
        let tag = member_tag(&key, &id, 1, "a", &public);
        assert!(check_member_tag(&key, &id, 1, "a", &public, &tag));
        assert!(!check_member_tag(&key, &id, 2, "a", &public, &tag));
        assert!(!check_member_tag(&key, &id, 1, "b", &public, &tag));
        assert!(!check_member_tag(&key, &id, 1, "a", &[9; 32], &tag));
        assert!(!check_member_tag(
            &ClusterKey::random(),
            &id,
            1,
            "a",
            &public,
            &tag
        ));
        assert!(!check_member_tag(&key, &id, 1, "a", &public, &tag[..31]));
    }

    #[test]
    fn the_member_secret_is_the_same_at_every_start_and_differs_by_node_and_platform() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = enclave::Simulation::open(dir.path(), b"code", b"config", 1).expect("sim");
        let public = |p: &dyn enclave::Platform, node: &str| {
            PublicKey::from(&member_secret(p, node).expect("secret")).to_bytes()
        };
        assert_eq!(public(&sim, "a"), public(&sim, "a"));
        assert_ne!(public(&sim, "a"), public(&sim, "b"));
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other =
            enclave::Simulation::open(other_dir.path(), b"code", b"config", 1).expect("sim");
        assert_ne!(public(&sim, "a"), public(&other, "a"));
    }
}
