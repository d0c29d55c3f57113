//! The admission exchange's cryptography as pure functions; docs/cluster.md specifies each byte.
//!
//! - The cluster key: 32 random bytes; its check value `HMAC-SHA256(key, KEY_CHECK_INFO || id)`
//!   tells whether a key is the cluster's without showing it.
//! - The member's challenge: stateless, `expiry (8, big-endian Unix seconds) || random (16) ||
//!   tag (16)`, the tag a truncated HMAC-SHA256 under a key derived from the cluster key.
//! - The report data each side's quote binds: the joiner's binds the challenge and its ephemeral
//!   public key; the member's binds the joiner's report data and every byte of its answer.
//! - The cluster key wrapped to the joiner's ephemeral X25519 key: the member's own ephemeral
//!   X25519 key, HKDF-SHA256 over the shared secret, AES-256-GCM with the cluster id as
//!   associated data.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use x25519_dalek::{EphemeralSecret, PublicKey};
use zeroize::Zeroizing;

use crate::Error;

/// HMAC input prefix of the key check value.
pub const KEY_CHECK_INFO: &[u8] = b"cloister cluster key check v1\0";
/// HKDF info of the key that authenticates challenges.
pub const CHALLENGE_KEY_INFO: &[u8] = b"cloister cluster challenge v1\0";
/// Domain of the joiner's report data.
pub const REQUEST_DOMAIN: &[u8] = b"cloister cluster join request v1\0";
/// Domain of the member's report data.
pub const ANSWER_DOMAIN: &[u8] = b"cloister cluster join answer v1\0";
/// HKDF info prefix of the key and nonce that wrap the cluster key (the cluster id follows).
pub const WRAP_INFO: &[u8] = b"cloister cluster key wrap v1\0";
/// A challenge's length: expiry (8) || random (16) || tag (16).
pub const CHALLENGE_LEN: usize = 40;
/// How long a challenge is good for.
pub const CHALLENGE_LIFETIME_SECS: u64 = 60;
/// A wrapped cluster key's length: 32 bytes of key and the 16-byte GCM tag.
pub const WRAPPED_LEN: usize = 48;

/// A cluster's id: 16 random bytes, shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub [u8; 16]);

impl ClusterId {
    /// A new random id.
    pub fn random() -> ClusterId {
        ClusterId(rand::random())
    }

    /// Parses 32 hex digits.
    pub fn parse(text: &str) -> Option<ClusterId> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(ClusterId(out))
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The cluster key: 256 random bits, wiped when dropped.
pub struct ClusterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// A new random key.
    pub fn random() -> ClusterKey {
        ClusterKey(Zeroizing::new(rand::random()))
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> ClusterKey {
        ClusterKey(Zeroizing::new(bytes))
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `HMAC-SHA256(key, KEY_CHECK_INFO || id)`: equal for two nodes exactly when they hold the
    /// same key for the same cluster; it tells nothing about the key.
    pub fn check(&self, id: &ClusterId) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_slice()).expect("any key length");
        mac.update(KEY_CHECK_INFO);
        mac.update(&id.0);
        mac.finalize().into_bytes().into()
    }

    fn challenge_mac(&self) -> Hmac<Sha256> {
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<Sha256>::new(None, self.0.as_slice())
            .expand(CHALLENGE_KEY_INFO, key.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice()).expect("any key length")
    }
}

/// A new challenge, good until `now_secs + CHALLENGE_LIFETIME_SECS`.
pub fn challenge(key: &ClusterKey, now_secs: u64) -> [u8; CHALLENGE_LEN] {
    let mut out = [0u8; CHALLENGE_LEN];
    out[..8].copy_from_slice(&(now_secs + CHALLENGE_LIFETIME_SECS).to_be_bytes());
    out[8..24].copy_from_slice(&rand::random::<[u8; 16]>());
    let mut mac = key.challenge_mac();
    mac.update(&out[..24]);
    out[24..].copy_from_slice(&mac.finalize().into_bytes()[..16]);
    out
}

/// Checks that `challenge` was made with `key` and has not expired at `now_secs`.
pub fn check_challenge(key: &ClusterKey, challenge: &[u8], now_secs: u64) -> Result<(), Error> {
    if challenge.len() != CHALLENGE_LEN {
        return Err(Error::BadChallenge(format!(
            "is {} bytes; a challenge is {CHALLENGE_LEN}",
            challenge.len()
        )));
    }
    let mut mac = key.challenge_mac();
    mac.update(&challenge[..24]);
    mac.verify_truncated_left(&challenge[24..])
        .map_err(|_| Error::BadChallenge("was not made by this cluster".into()))?;
    let expiry = u64::from_be_bytes(challenge[..8].try_into().expect("8 bytes"));
    if expiry < now_secs {
        return Err(Error::ChallengeExpired);
    }
    Ok(())
}

/// The joiner's report data: `SHA-256(REQUEST_DOMAIN || challenge || public key) || 32 zeros`.
pub fn request_report_data(challenge: &[u8], joiner: &[u8; 32]) -> [u8; 64] {
    let mut h = Sha256::new();
    h.update(REQUEST_DOMAIN);
    h.update(challenge);
    h.update(joiner);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&h.finalize());
    out
}

/// The member's report data: `SHA-256(ANSWER_DOMAIN || request report data (64) || cluster id
/// (16) || member public key (32) || wrapped key (48)) || 32 zeros`.
pub fn answer_report_data(
    request: &[u8; 64],
    id: &ClusterId,
    member: &[u8; 32],
    wrapped: &[u8],
) -> [u8; 64] {
    let mut h = Sha256::new();
    h.update(ANSWER_DOMAIN);
    h.update(request);
    h.update(id.0);
    h.update(member);
    h.update(wrapped);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&h.finalize());
    out
}

/// The AES-256-GCM key and nonce of one exchange: HKDF-SHA256 with salt `joiner || member`, the
/// X25519 shared secret as input, info `WRAP_INFO || id`, 44 bytes out (key 32, nonce 12). Both
/// ephemeral keys are fresh, so a key is used once and the nonce can be derived.
fn wrapping(
    shared: &[u8; 32],
    joiner: &[u8; 32],
    member: &[u8; 32],
    id: &ClusterId,
) -> (Aes256Gcm, [u8; 12]) {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(joiner);
    salt[32..].copy_from_slice(member);
    let mut info = WRAP_INFO.to_vec();
    info.extend_from_slice(&id.0);
    let mut okm = Zeroizing::new([0u8; 44]);
    hkdf::Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(&info, okm.as_mut())
        .expect("44 bytes is a valid HKDF-SHA256 output length");
    let cipher = Aes256Gcm::new_from_slice(&okm[..32]).expect("a 32-byte key");
    let nonce: [u8; 12] = okm[32..].try_into().expect("12 bytes");
    (cipher, nonce)
}

/// An X25519 public key from its 32 bytes.
pub fn public_key(bytes: &[u8]) -> Result<[u8; 32], Error> {
    bytes.try_into().map_err(|_| {
        Error::Invalid(format!(
            "an X25519 public key is 32 bytes, found {}",
            bytes.len()
        ))
    })
}

/// What a member sends back: its ephemeral public key and the cluster key wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// The member's ephemeral X25519 public key.
    pub member: [u8; 32],
    /// The cluster key under AES-256-GCM, `WRAPPED_LEN` bytes.
    pub wrapped: Vec<u8>,
}

/// Wraps `key` to the joiner's ephemeral public key `joiner`, with a fresh key of the member's.
/// A low-order public key (whose shared secret is all zeros) is refused.
pub fn wrap(key: &ClusterKey, id: &ClusterId, joiner: &[u8; 32]) -> Result<Wrapped, Error> {
    let secret = EphemeralSecret::random_from_rng(rand::rngs::OsRng);
    let member = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(*joiner));
    if !shared.was_contributory() {
        return Err(Error::Invalid(
            "the public key is of low order: no secret can be agreed with it".into(),
        ));
    }
    let (cipher, nonce) = wrapping(shared.as_bytes(), joiner, &member, id);
    let wrapped = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key.bytes(),
                aad: &id.0,
            },
        )
        .map_err(|_| Error::Internal("AES-GCM refused to encrypt 32 bytes".into()))?;
    Ok(Wrapped { member, wrapped })
}

/// The joiner's side of one exchange: its ephemeral X25519 key pair.
pub struct Ephemeral {
    secret: EphemeralSecret,
    public: [u8; 32],
}

impl std::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ephemeral")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

impl Ephemeral {
    /// A fresh key pair.
    pub fn new() -> Ephemeral {
        let secret = EphemeralSecret::random_from_rng(rand::rngs::OsRng);
        let public = PublicKey::from(&secret).to_bytes();
        Ephemeral { secret, public }
    }

    /// The public key, sent to the member.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// Opens the member's answer; the key pair is spent.
    pub fn unwrap(
        self,
        id: &ClusterId,
        member: &[u8; 32],
        wrapped: &[u8],
    ) -> Result<ClusterKey, Error> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(Error::BadAnswer(format!(
                "the wrapped key is {} bytes, expected {WRAPPED_LEN}",
                wrapped.len()
            )));
        }
        let shared = self.secret.diffie_hellman(&PublicKey::from(*member));
        if !shared.was_contributory() {
            return Err(Error::BadAnswer(
                "the member's public key is of low order".into(),
            ));
        }
        let (cipher, nonce) = wrapping(shared.as_bytes(), &self.public, member, id);
        let key = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: wrapped,
                        aad: &id.0,
                    },
                )
                .map_err(|_| {
                    Error::BadAnswer(
                        "the wrapped key does not decrypt with this exchange's key".into(),
                    )
                })?,
        );
        let bytes: [u8; 32] = key
            .as_slice()
            .try_into()
            .map_err(|_| Error::BadAnswer("the cluster key is not 32 bytes".into()))?;
        Ok(ClusterKey::from_bytes(bytes))
    }
}

impl Default for Ephemeral {
    fn default() -> Self {
        Ephemeral::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_opens_only_with_the_joiners_secret_for_the_same_cluster() {
        let key = ClusterKey::random();
        let id = ClusterId::random();
        let joiner = Ephemeral::new();
        let w = wrap(&key, &id, joiner.public()).expect("wrap");
        assert_eq!(w.wrapped.len(), WRAPPED_LEN);
        let opened = joiner.unwrap(&id, &w.member, &w.wrapped).expect("unwrap");
        assert_eq!(opened.bytes(), key.bytes());

        // Another ephemeral key (an eavesdropper's, or a replay to another joiner) cannot.
        let other = Ephemeral::new();
        assert!(matches!(
            other.unwrap(&id, &w.member, &w.wrapped),
            Err(Error::BadAnswer(_))
        ));
        // The cluster id is bound: the same bytes under another id do not open.
        let joiner = Ephemeral::new();
        let w = wrap(&key, &id, joiner.public()).expect("wrap");
        assert!(matches!(
            joiner.unwrap(&ClusterId::random(), &w.member, &w.wrapped),
            Err(Error::BadAnswer(_))
        ));
        // Every flipped byte of the wrapped key is refused.
        for i in 0..WRAPPED_LEN {
            let joiner = Ephemeral::new();
            let mut w = wrap(&key, &id, joiner.public()).expect("wrap");
            w.wrapped[i] ^= 1;
            assert!(
                matches!(
                    joiner.unwrap(&id, &w.member, &w.wrapped),
                    Err(Error::BadAnswer(_))
                ),
                "byte {i}"
            );
        }
    }

    #[test]
    fn a_low_order_public_key_is_refused() {
        let key = ClusterKey::random();
        // The identity point and a point of order 8 give an all-zero shared secret.
        for low in [[0u8; 32], {
            let mut p = [0u8; 32];
            p[0] = 1;
            p
        }] {
            assert!(matches!(
                wrap(&key, &ClusterId::random(), &low),
                Err(Error::Invalid(_))
            ));
        }
    }

    #[test]
    fn the_key_check_tells_keys_and_clusters_apart() {
        let key = ClusterKey::from_bytes([7; 32]);
        let id = ClusterId([1; 16]);
        assert_eq!(key.check(&id), ClusterKey::from_bytes([7; 32]).check(&id));
        assert_ne!(key.check(&id), ClusterKey::from_bytes([8; 32]).check(&id));
        assert_ne!(key.check(&id), key.check(&ClusterId([2; 16])));
        // As docs/cluster.md specifies it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[7; 32]).expect("key");
        mac.update(b"cloister cluster key check v1\0");
        mac.update(&[1; 16]);
        assert_eq!(
            key.check(&id),
            <[u8; 32]>::from(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn a_challenge_is_good_only_from_its_cluster_and_until_it_expires() {
        let key = ClusterKey::random();
        let c = challenge(&key, 1000);
        assert!(check_challenge(&key, &c, 1000).is_ok());
        assert!(check_challenge(&key, &c, 1000 + CHALLENGE_LIFETIME_SECS).is_ok());
        assert!(matches!(
            check_challenge(&key, &c, 1001 + CHALLENGE_LIFETIME_SECS),
            Err(Error::ChallengeExpired)
        ));
        assert!(matches!(
            check_challenge(&ClusterKey::random(), &c, 1000),
            Err(Error::BadChallenge(_))
        ));
        // A later expiry written over the first is caught by the tag.
        let mut extended = c;
        extended[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            check_challenge(&key, &extended, 5000),
            Err(Error::BadChallenge(_))
        ));
        for i in 0..CHALLENGE_LEN {
            let mut bad = c;
            bad[i] ^= 0x80;
            assert!(check_challenge(&key, &bad, 1000).is_err(), "byte {i}");
        }
        assert!(matches!(
            check_challenge(&key, &c[..39], 1000),
            Err(Error::BadChallenge(_))
        ));
    }

    #[test]
    fn report_data_binds_every_input() {
        let c = [3u8; CHALLENGE_LEN];
        let rd = request_report_data(&c, &[4; 32]);
        assert_eq!(&rd[32..], &[0u8; 32]);
        assert_ne!(rd, request_report_data(&c, &[5; 32]));
        assert_ne!(rd, request_report_data(&[6; CHALLENGE_LEN], &[4; 32]));
        let mut h = Sha256::new();
        h.update(b"cloister cluster join request v1\0");
        h.update(c);
        h.update([4u8; 32]);
        assert_eq!(&rd[..32], h.finalize().as_slice());

        let id = ClusterId([9; 16]);
        let a = answer_report_data(&rd, &id, &[1; 32], &[2; WRAPPED_LEN]);
        assert_eq!(&a[32..], &[0u8; 32]);
        for other in [
            answer_report_data(&[0; 64], &id, &[1; 32], &[2; WRAPPED_LEN]),
            answer_report_data(&rd, &ClusterId([8; 16]), &[1; 32], &[2; WRAPPED_LEN]),
            answer_report_data(&rd, &id, &[7; 32], &[2; WRAPPED_LEN]),
            answer_report_data(&rd, &id, &[1; 32], &[3; WRAPPED_LEN]),
        ] {
            assert_ne!(a, other);
        }
    }
}
