//! SGX quotes in the DCAP version 3 layout: a 48-byte header, the 384-byte report body, and the
//! signature data (ECDSA P-256 over header and body, the attestation public key, the quoting
//! enclave's report and certification data).
//!
//! Simulation quotes use the same layout, signed by the simulation's attestation key, and say what
//! they are twice: the QE vendor id is `CLOISTER-SIMULAT` and the header's user data starts with
//! `SIMULATION`. A verifier rejects them unless told to accept simulations.
//!
//! Hardware quotes are verified against Intel's collateral by [`dcap`]; [`check`] is the one
//! entry point that takes either kind.

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

pub mod dcap;

use self::dcap::{HardwareCheck, HardwareVerdict, verify_hardware};
use crate::Identity;

pub const HEADER_LEN: usize = 48;
pub const BODY_LEN: usize = 384;
/// Header and report body: what the attestation key signs.
pub const SIGNED_LEN: usize = HEADER_LEN + BODY_LEN;
/// Offsets inside the report body.
pub const BODY_ATTRIBUTES: usize = 48;
pub const BODY_MR_ENCLAVE: usize = 64;
pub const BODY_MR_SIGNER: usize = 128;
pub const BODY_ISV_PROD_ID: usize = 256;
pub const BODY_ISV_SVN: usize = 258;
pub const BODY_REPORT_DATA: usize = 320;

pub const SIMULATION_VENDOR: [u8; 16] = *b"CLOISTER-SIMULAT";
pub const SIMULATION_USER_DATA: [u8; 20] = *b"SIMULATION-NOT-SGX\0\0";
const DEBUG_FLAG: u8 = 0x02;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("not a DCAP v3 quote: {0}")]
    Malformed(String),
    #[error(
        "the quote comes from the simulation platform, not from SGX hardware; accept it only in development"
    )]
    SimulationNotAccepted,
    #[error("the quote's signature does not verify with its attestation key")]
    BadSignature,
    #[error("the quote's report data does not match the expected binding")]
    ReportDataMismatch,
    #[error("the quote's attestation key is not the expected one")]
    UnexpectedKey,
    #[error(
        "a hardware quote is verified against Intel's collateral (PCK CRLs, TCB info, QE identity), and \
         none was given; fetch it with `cloister quote collateral QUOTE --pccs URL` and pass --collateral"
    )]
    CollateralNeeded,
    #[error(
        "the quote comes from the simulation platform: it can never verify as an SGX hardware quote"
    )]
    SimulationNotHardware,
    #[error("the collateral is not readable: {0}")]
    CollateralMalformed(String),
    #[error("the collateral does not belong to this quote: {0}")]
    CollateralMismatch(String),
    #[error(
        "the certificate chain or collateral signatures do not lead to Intel's SGX root CA: {0}"
    )]
    ChainUntrusted(String),
    #[error(
        "a certificate, CRL, TCB info or QE identity is not valid at the time checked (expired or not yet valid): {0}"
    )]
    Expired(String),
    #[error("revoked: {0}")]
    Revoked(String),
    #[error("the quoting enclave does not verify: {0}")]
    QuotingEnclave(String),
    #[error("the quote does not verify: {0}")]
    Rejected(String),
    #[error(
        "the platform's TCB status is {status} (advisories: {}), which is not accepted; \
         accept it explicitly with --allow-tcb {status} if that is your policy",
        if advisories.is_empty() { "none".to_owned() } else { advisories.join(", ") }
    )]
    TcbNotAccepted {
        status: dcap::TcbStatus,
        advisories: Vec<String>,
    },
    #[error("the enclave was built in debug mode: the host can read its memory")]
    DebugEnclave,
    #[error(
        "unknown TCB status {0:?}: expected one of UpToDate, SWHardeningNeeded, ConfigurationNeeded, \
         ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded"
    )]
    UnknownTcbStatus(String),
}

impl QuoteError {
    /// A stable name for the refusal, for machine-readable output (`cloister quote verify --json`).
    pub fn code(&self) -> &'static str {
        match self {
            QuoteError::Malformed(_) => "malformed",
            QuoteError::SimulationNotAccepted => "simulation_not_accepted",
            QuoteError::BadSignature => "bad_signature",
            QuoteError::ReportDataMismatch => "report_data_mismatch",
            QuoteError::UnexpectedKey => "unexpected_key",
            QuoteError::CollateralNeeded => "collateral_needed",
            QuoteError::SimulationNotHardware => "simulation_not_hardware",
            QuoteError::CollateralMalformed(_) => "collateral_malformed",
            QuoteError::CollateralMismatch(_) => "collateral_mismatch",
            QuoteError::ChainUntrusted(_) => "chain_untrusted",
            QuoteError::Expired(_) => "expired",
            QuoteError::Revoked(_) => "revoked",
            QuoteError::QuotingEnclave(_) => "quoting_enclave",
            QuoteError::Rejected(_) => "rejected",
            QuoteError::TcbNotAccepted { .. } => "tcb_not_accepted",
            QuoteError::DebugEnclave => "debug_enclave",
            QuoteError::UnknownTcbStatus(_) => "unknown_tcb_status",
        }
    }
}

/// The fields of an SGX report body that Cloister reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportBody {
    pub mr_enclave: [u8; 32],
    pub mr_signer: [u8; 32],
    pub isv_prod_id: u16,
    pub isv_svn: u16,
    pub debug: bool,
    pub report_data: [u8; 64],
}

impl ReportBody {
    pub fn parse(body: &[u8]) -> Result<ReportBody, QuoteError> {
        if body.len() < BODY_LEN {
            return Err(QuoteError::Malformed(format!(
                "a report body is {BODY_LEN} bytes, found {}",
                body.len()
            )));
        }
        let arr = |at: usize| -> [u8; 32] { body[at..at + 32].try_into().expect("32-byte slice") };
        Ok(ReportBody {
            mr_enclave: arr(BODY_MR_ENCLAVE),
            mr_signer: arr(BODY_MR_SIGNER),
            isv_prod_id: u16::from_le_bytes([body[BODY_ISV_PROD_ID], body[BODY_ISV_PROD_ID + 1]]),
            isv_svn: u16::from_le_bytes([body[BODY_ISV_SVN], body[BODY_ISV_SVN + 1]]),
            debug: body[BODY_ATTRIBUTES] & DEBUG_FLAG != 0,
            report_data: body[BODY_REPORT_DATA..BODY_REPORT_DATA + 64]
                .try_into()
                .expect("64-byte slice"),
        })
    }

    fn write(identity: &Identity, report_data: &[u8; 64], out: &mut [u8]) {
        out[BODY_ATTRIBUTES] = if identity.debug {
            DEBUG_FLAG | 0x01
        } else {
            0x01
        };
        out[BODY_MR_ENCLAVE..BODY_MR_ENCLAVE + 32].copy_from_slice(&identity.measurement);
        out[BODY_MR_SIGNER..BODY_MR_SIGNER + 32].copy_from_slice(&identity.signer);
        out[BODY_ISV_PROD_ID..BODY_ISV_PROD_ID + 2]
            .copy_from_slice(&identity.product_id.to_le_bytes());
        out[BODY_ISV_SVN..BODY_ISV_SVN + 2]
            .copy_from_slice(&identity.security_version.to_le_bytes());
        out[BODY_REPORT_DATA..BODY_REPORT_DATA + 64].copy_from_slice(report_data);
    }
}

/// A parsed quote.
#[derive(Debug, Clone)]
pub struct Quote {
    pub version: u16,
    pub attestation_key_type: u16,
    pub qe_vendor_id: [u8; 16],
    pub user_data: [u8; 20],
    pub body: ReportBody,
    signed: Vec<u8>,
    signature: [u8; 64],
    attestation_key: [u8; 64],
}

impl Quote {
    pub fn parse(bytes: &[u8]) -> Result<Quote, QuoteError> {
        if bytes.len() < SIGNED_LEN + 4 + 128 {
            return Err(QuoteError::Malformed(format!(
                "{} bytes is too short",
                bytes.len()
            )));
        }
        let version = u16::from_le_bytes([bytes[0], bytes[1]]);
        let attestation_key_type = u16::from_le_bytes([bytes[2], bytes[3]]);
        if version != 3 {
            return Err(QuoteError::Malformed(format!(
                "version {version}, expected 3"
            )));
        }
        if attestation_key_type != 2 {
            return Err(QuoteError::Malformed(format!(
                "attestation key type {attestation_key_type}, expected 2 (ECDSA P-256)"
            )));
        }
        let sig_len = u32::from_le_bytes(
            bytes[SIGNED_LEN..SIGNED_LEN + 4]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        let sig = &bytes[SIGNED_LEN + 4..];
        if sig_len < 128 || sig.len() < sig_len {
            return Err(QuoteError::Malformed(format!(
                "signature data of {sig_len} bytes does not fit"
            )));
        }
        Ok(Quote {
            version,
            attestation_key_type,
            qe_vendor_id: bytes[12..28].try_into().expect("16 bytes"),
            user_data: bytes[28..48].try_into().expect("20 bytes"),
            body: ReportBody::parse(&bytes[HEADER_LEN..SIGNED_LEN])?,
            signed: bytes[..SIGNED_LEN].to_vec(),
            signature: sig[..64].try_into().expect("64 bytes"),
            attestation_key: sig[64..128].try_into().expect("64 bytes"),
        })
    }

    /// Whether the quote says it comes from the simulation platform.
    pub fn is_simulation(&self) -> bool {
        self.qe_vendor_id == SIMULATION_VENDOR || self.user_data == SIMULATION_USER_DATA
    }

    /// The attestation public key, as uncompressed `x || y`.
    pub fn attestation_key(&self) -> &[u8; 64] {
        &self.attestation_key
    }

    /// Checks a simulation quote: its signature, and optionally the report data and the attestation
    /// key. Simulation quotes are refused unless `allow_simulation`; hardware quotes need Intel's
    /// collateral ([`check`] takes it) and are refused here with [`QuoteError::CollateralNeeded`].
    pub fn verify(
        &self,
        allow_simulation: bool,
        report_data: Option<&[u8; 64]>,
        expected_key: Option<&[u8; 64]>,
    ) -> Result<(), QuoteError> {
        if !self.is_simulation() {
            return Err(QuoteError::CollateralNeeded);
        }
        if !allow_simulation {
            return Err(QuoteError::SimulationNotAccepted);
        }
        let mut sec1 = [0u8; 65];
        sec1[0] = 0x04;
        sec1[1..].copy_from_slice(&self.attestation_key);
        let key = VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| QuoteError::BadSignature)?;
        let signature =
            Signature::from_slice(&self.signature).map_err(|_| QuoteError::BadSignature)?;
        key.verify(&self.signed, &signature)
            .map_err(|_| QuoteError::BadSignature)?;
        if let Some(expected) = expected_key
            && expected != &self.attestation_key
        {
            return Err(QuoteError::UnexpectedKey);
        }
        if let Some(rd) = report_data
            && rd != &self.body.report_data
        {
            return Err(QuoteError::ReportDataMismatch);
        }
        Ok(())
    }
}

/// What a quote must prove, and what it is checked against.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Accept a simulation quote (development only: it proves nothing about hardware).
    pub allow_simulation: bool,
    /// Intel's collateral and the caller's TCB policy, for hardware quotes; without it a hardware
    /// quote is refused with [`QuoteError::CollateralNeeded`].
    pub hardware: Option<HardwareCheck>,
}

/// How a quote verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// A simulation quote, accepted because the caller allows simulations.
    Simulation,
    /// A hardware quote, verified to Intel's root CA and accepted by the caller's TCB policy.
    Hardware(HardwareVerdict),
}

/// Checks `raw` as `trust` says: a simulation quote with its simulation key (if simulations are
/// allowed), a hardware quote against Intel's collateral and the TCB policy; then the report data
/// against `report_data` when given. Returns the parsed quote and how it verified.
pub fn check(
    raw: &[u8],
    trust: &Trust,
    report_data: Option<&[u8; 64]>,
) -> Result<(Quote, Verified), QuoteError> {
    let quote = Quote::parse(raw)?;
    if quote.is_simulation() {
        quote.verify(trust.allow_simulation, report_data, None)?;
        return Ok((quote, Verified::Simulation));
    }
    let hardware = trust
        .hardware
        .as_ref()
        .ok_or(QuoteError::CollateralNeeded)?;
    let verdict = verify_hardware(raw, &hardware.collateral, hardware.at_unix_secs)?;
    if let Some(rd) = report_data
        && rd != &verdict.body.report_data
    {
        return Err(QuoteError::ReportDataMismatch);
    }
    verdict.accepted_by(&hardware.policy)?;
    Ok((quote, Verified::Hardware(verdict)))
}

/// Builds a simulation quote for `identity` over `report_data`, signed by `key`.
pub(crate) fn simulate(identity: &Identity, report_data: &[u8; 64], key: &SigningKey) -> Vec<u8> {
    let mut q = vec![0u8; SIGNED_LEN];
    q[0..2].copy_from_slice(&3u16.to_le_bytes());
    q[2..4].copy_from_slice(&2u16.to_le_bytes());
    // Bytes 4..8: TEE type 0 (SGX); 8..12: QE and PCE security versions, 0 for the simulation.
    q[12..28].copy_from_slice(&SIMULATION_VENDOR);
    q[28..48].copy_from_slice(&SIMULATION_USER_DATA);
    ReportBody::write(identity, report_data, &mut q[HEADER_LEN..SIGNED_LEN]);
    let signature: Signature = key.sign(&q);
    let point = key.verifying_key().to_encoded_point(false);
    // Signature data: ISV signature, attestation key, QE report body and its signature (zeros: there
    // is no quoting enclave), QE authentication data (empty), certification data (type 0, empty).
    let mut sig = Vec::with_capacity(64 + 64 + BODY_LEN + 64 + 2 + 6);
    sig.extend_from_slice(&signature.to_bytes());
    sig.extend_from_slice(&point.as_bytes()[1..65]);
    sig.extend_from_slice(&[0u8; BODY_LEN + 64]);
    sig.extend_from_slice(&0u16.to_le_bytes());
    sig.extend_from_slice(&0u16.to_le_bytes());
    sig.extend_from_slice(&0u32.to_le_bytes());
    q.extend_from_slice(&(sig.len() as u32).to_le_bytes());
    q.extend_from_slice(&sig);
    q
}
