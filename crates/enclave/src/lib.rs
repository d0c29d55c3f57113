//! The enclave platform seam: who this enclave is (identity), evidence of it (quotes over 64 bytes
//! of report data), keys only it can derive (sealing keys from key requests), and sealed blobs that
//! carry their key request so an upgraded enclave can still open them.
//!
//! [`Counters`] are freshness counters (advance, read) kept sealed in the data directory, and
//! [`fresh::judge`] is how a store's sequence number is judged against its counter at start.
//!
//! Two backends implement [`Platform`]: [`Simulation`] (the default, for development and CI; every
//! piece of evidence it makes says it is a simulation) and [`Gramine`] (inside an SGX enclave, through
//! Gramine's `/dev/attestation` files).

mod counter;
pub mod fresh;
mod gramine;
pub mod quote;
mod seal;
mod simulation;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use zeroize::Zeroizing;

pub use counter::{Carried, CounterLog, Counters, LOG_SLOTS};
pub use gramine::Gramine;
/// Hardware SGX quotes verified against Intel's collateral (the verifier lives beside the quote
/// format, in `quote/dcap.rs`).
pub use quote::dcap;
pub use seal::{SealError, request_of, seal, unseal};
pub use simulation::Simulation;

/// Which platform produced an identity or a quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = Platform)]
#[serde(rename_all = "snake_case")]
pub enum PlatformKind {
    Simulation,
    Gramine,
}

/// What the enclave is: its measurement (MRENCLAVE), its signer (MRSIGNER), product id, security
/// version (ISVSVN) and debug flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Identity {
    pub platform: PlatformKind,
    /// Hex.
    #[serde(serialize_with = "hex_bytes", deserialize_with = "hex_bytes_from")]
    #[schema(value_type = String)]
    pub measurement: [u8; 32],
    /// Hex.
    #[serde(serialize_with = "hex_bytes", deserialize_with = "hex_bytes_from")]
    #[schema(value_type = String)]
    pub signer: [u8; 32],
    pub product_id: u16,
    pub security_version: u16,
    pub debug: bool,
}

fn hex_bytes<S: serde::Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

fn hex_bytes_from<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
    Ok(out)
}

/// What a sealing key is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = SealPolicy)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// This exact enclave build (MRENCLAVE): a new build cannot open it.
    Measurement,
    /// Any enclave from the same signer and product (MRSIGNER): survives upgrades.
    Signer,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Measurement => "measurement",
            Policy::Signer => "signer",
        })
    }
}

/// The inputs of a sealing key, stored beside every sealed blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRequest {
    pub policy: Policy,
    /// The security version the key belongs to; an enclave derives keys for its own version and
    /// older ones, never newer.
    pub security_version: u16,
    /// Separates keys for different purposes.
    pub key_id: [u8; 32],
}

/// A 256-bit sealing key, wiped when dropped.
pub struct SealingKey(pub(crate) Zeroizing<[u8; 32]>);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not running under Gramine: {} does not exist", .0.display())]
    NotGramine(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A platform file has the wrong size or content.
    #[error("{}: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
    #[error(
        "a sealing key for security version {requested} was requested, but this enclave is at {current}; \
         keys of newer versions are never released to older enclaves"
    )]
    SecurityVersionTooNew { requested: u16, current: u16 },
    #[error("not supported on this platform: {0}")]
    Unsupported(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The seam every enclave backend implements.
pub trait Platform: Send + Sync + fmt::Debug + 'static {
    fn identity(&self) -> &Identity;

    /// A quote (SGX DCAP v3 layout) whose report carries `report_data`.
    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, Error>;

    /// The key for `request`; refused for a security version above this enclave's.
    fn sealing_key(&self, request: &KeyRequest) -> Result<SealingKey, Error>;
}

/// Report data binding a caller's nonce: SHA-256 over a domain string and the nonce, then zeros.
pub fn report_data_for_nonce(nonce: &[u8]) -> [u8; 64] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"cloister attestation nonce v1\0");
    h.update(nonce);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&h.finalize());
    out
}

/// Derives a 256-bit key with HKDF-SHA256 from `ikm` and the key request, bound to `bound_to`.
pub(crate) fn derive(
    ikm: &[u8],
    request: &KeyRequest,
    bound_to: &[u8; 32],
    product_id: u16,
) -> SealingKey {
    let mut info = Vec::with_capacity(96);
    info.extend_from_slice(b"cloister seal v1\0");
    info.push(match request.policy {
        Policy::Measurement => 0,
        Policy::Signer => 1,
    });
    info.extend_from_slice(bound_to);
    info.extend_from_slice(&request.security_version.to_le_bytes());
    info.extend_from_slice(&product_id.to_le_bytes());
    info.extend_from_slice(&request.key_id);
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(None, ikm)
        .expand(&info, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    SealingKey(key)
}
