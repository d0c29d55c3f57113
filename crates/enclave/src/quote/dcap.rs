//! Hardware SGX quotes verified offline, with `dcap-qvl`, against Intel's collateral (the PCK
//! certificate chain and CRLs, TCB info, QE identity) pinned to Intel's SGX root CA.
//!
//! `dcap-qvl` checks the chain, the signatures and the quoting enclave, and reports the platform's
//! TCB status; it returns `OutOfDate` and its kind as success. What the caller accepts is decided
//! here: [`TcbPolicy`] accepts `UpToDate` and only the statuses it lists, and refuses debug
//! enclaves unless told otherwise. Every refusal is a [`QuoteError`] variant naming what failed.

mod revoked;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::{BODY_LEN, HEADER_LEN, Quote, QuoteError, ReportBody};

/// Intel's collateral for one quote, in `dcap-qvl`'s JSON form (what `cloister quote collateral`
/// writes).
pub type Collateral = dcap_qvl::QuoteCollateralV3;

/// A platform's TCB status, as Intel's TCB info gives it for the platform's SVNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum TcbStatus {
    UpToDate,
    SWHardeningNeeded,
    ConfigurationNeeded,
    ConfigurationAndSWHardeningNeeded,
    OutOfDate,
    OutOfDateConfigurationNeeded,
    Revoked,
}

impl TcbStatus {
    pub const ALL: [TcbStatus; 7] = [
        TcbStatus::UpToDate,
        TcbStatus::SWHardeningNeeded,
        TcbStatus::ConfigurationNeeded,
        TcbStatus::ConfigurationAndSWHardeningNeeded,
        TcbStatus::OutOfDate,
        TcbStatus::OutOfDateConfigurationNeeded,
        TcbStatus::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::Revoked => "Revoked",
        }
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TcbStatus {
    type Err = QuoteError;

    fn from_str(s: &str) -> Result<TcbStatus, QuoteError> {
        TcbStatus::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| QuoteError::UnknownTcbStatus(s.to_owned()))
    }
}

/// What a verified hardware quote must also satisfy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcbPolicy {
    /// Statuses accepted besides `UpToDate` (`Revoked` is never accepted).
    pub allow: Vec<TcbStatus>,
    /// Accept an enclave built with the debug flag (its memory is readable by the host).
    pub allow_debug: bool,
}

/// Everything a hardware quote is checked against.
#[derive(Debug, Clone)]
pub struct HardwareCheck {
    pub collateral: Collateral,
    /// The time (seconds since the Unix epoch) at which the collateral and certificates must be
    /// valid: now, or a past time to check an old quote with the collateral of its day.
    pub at_unix_secs: u64,
    pub policy: TcbPolicy,
}

/// What a hardware quote proved: its chain and signatures verified up to Intel's root CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareVerdict {
    pub tcb_status: TcbStatus,
    /// Intel security advisories (`INTEL-SA-…`) that apply to the platform's TCB level.
    pub advisory_ids: Vec<String>,
    /// The platform family (FMSPC) of the PCK certificate, hex.
    pub fmspc: String,
    pub body: ReportBody,
}

impl HardwareVerdict {
    /// Whether `policy` accepts this platform and enclave: the TCB status, then the debug flag.
    pub fn accepted_by(&self, policy: &TcbPolicy) -> Result<(), QuoteError> {
        let allowed = self.tcb_status == TcbStatus::UpToDate
            || (self.tcb_status != TcbStatus::Revoked && policy.allow.contains(&self.tcb_status));
        if !allowed {
            return Err(QuoteError::TcbNotAccepted {
                status: self.tcb_status,
                advisories: self.advisory_ids.clone(),
            });
        }
        if self.body.debug && !policy.allow_debug {
            return Err(QuoteError::DebugEnclave);
        }
        Ok(())
    }
}

/// Reads collateral from its JSON form.
pub fn parse_collateral(json: &[u8]) -> Result<Collateral, QuoteError> {
    serde_json::from_slice(json).map_err(|e| QuoteError::CollateralMalformed(e.to_string()))
}

/// What identifies the collateral a hardware quote needs: its PCK certificate chain (PEM), the
/// platform's FMSPC (hex, upper case) and the PCK CA that issued it (`processor` or `platform`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PckIdentity {
    pub chain_pem: String,
    pub fmspc: String,
    pub ca: &'static str,
}

/// The PCK identity of a hardware quote that carries its PCK certificate chain (certification
/// data type 5, what Gramine's quotes carry).
pub fn pck_identity(raw: &[u8]) -> Result<PckIdentity, QuoteError> {
    hardware_quote(raw)?;
    let parsed = library_quote(raw)?;
    if parsed.inner_cert_type() != 5 {
        return Err(QuoteError::Malformed(format!(
            "certification data type {}, only type 5 (the PCK certificate chain in the quote) is supported",
            parsed.inner_cert_type()
        )));
    }
    let chain_pem = String::from_utf8(parsed.inner_cert_data().to_vec())
        .map_err(|_| QuoteError::Malformed("the PCK certificate chain is not PEM".into()))?;
    let fmspc = dcap_qvl::intel::quote_fmspc(&parsed)
        .map_err(|e| QuoteError::Malformed(format!("the PCK certificate: {e:#}")))?;
    let ca = dcap_qvl::intel::quote_ca(&parsed)
        .map_err(|e| QuoteError::Malformed(format!("the PCK certificate's issuer: {e:#}")))?;
    Ok(PckIdentity {
        chain_pem,
        fmspc: hex::encode_upper(fmspc),
        ca: ca.as_id_str(),
    })
}

/// Verifies a hardware quote against `collateral` at `at_unix_secs`: Intel's root CA, the CRLs,
/// the TCB info and QE identity signatures, the PCK chain, the quoting enclave's report, and the
/// quote's own signature. A simulation quote never verifies here, whatever its bytes say. The TCB
/// status is reported, not judged: see [`HardwareVerdict::accepted_by`].
pub fn verify_hardware(
    raw: &[u8],
    collateral: &Collateral,
    at_unix_secs: u64,
) -> Result<HardwareVerdict, QuoteError> {
    verify_with(
        raw,
        collateral,
        at_unix_secs,
        dcap_qvl::verify::QuoteVerifier::new_prod(),
    )
}

/// [`verify_hardware`] with `root_ca_der` as the trust anchor in place of Intel's SGX root CA.
///
/// **For test PKIs only**: it lets a test sign its own CRLs (a revoked PCK certificate can only be
/// listed by a CA whose key the test holds). Nothing that verifies real evidence calls it; a quote
/// trusted under any root but Intel's proves nothing about SGX hardware.
#[doc(hidden)]
pub fn verify_hardware_with_root(
    raw: &[u8],
    collateral: &Collateral,
    at_unix_secs: u64,
    root_ca_der: &[u8],
) -> Result<HardwareVerdict, QuoteError> {
    verify_with(
        raw,
        collateral,
        at_unix_secs,
        dcap_qvl::verify::QuoteVerifier::new(root_ca_der.to_vec()),
    )
}

fn verify_with(
    raw: &[u8],
    collateral: &Collateral,
    at_unix_secs: u64,
    verifier: dcap_qvl::verify::QuoteVerifier,
) -> Result<HardwareVerdict, QuoteError> {
    hardware_quote(raw)?;
    let parsed = library_quote(raw)?;
    let fmspc = dcap_qvl::intel::quote_fmspc(&parsed)
        .map(hex::encode_upper)
        .map_err(|e| QuoteError::ChainUntrusted(format!("the quote's PCK certificate: {e:#}")))?;
    same_platform(&fmspc, collateral)?;
    let report = verifier
        .allow_debug(true)
        .verify(raw, collateral, at_unix_secs)
        .map_err(|e| {
            let message = format!("{e:#}");
            match classify(&message) {
                // The library says a certificate is revoked, not which: named here.
                QuoteError::Revoked(_) if message.contains("CertRevoked") => {
                    QuoteError::Revoked(match revoked::listed(&parsed, collateral) {
                        Some(named) => format!("{named} ({message})"),
                        None => message,
                    })
                }
                other => other,
            }
        })?;
    let tcb_status: TcbStatus = report.status.parse()?;
    if tcb_status == TcbStatus::Revoked {
        return Err(QuoteError::Revoked(
            "the platform's TCB status is Revoked".into(),
        ));
    }
    let sgx = report.report.as_sgx().ok_or_else(|| {
        QuoteError::Malformed("the verified report is not an SGX enclave's".into())
    })?;
    let mut body = [0u8; BODY_LEN];
    body[..16].copy_from_slice(&sgx.cpu_svn);
    body[super::BODY_ATTRIBUTES..super::BODY_ATTRIBUTES + 16].copy_from_slice(&sgx.attributes);
    body[super::BODY_MR_ENCLAVE..super::BODY_MR_ENCLAVE + 32].copy_from_slice(&sgx.mr_enclave);
    body[super::BODY_MR_SIGNER..super::BODY_MR_SIGNER + 32].copy_from_slice(&sgx.mr_signer);
    body[super::BODY_ISV_PROD_ID..super::BODY_ISV_PROD_ID + 2]
        .copy_from_slice(&sgx.isv_prod_id.to_le_bytes());
    body[super::BODY_ISV_SVN..super::BODY_ISV_SVN + 2].copy_from_slice(&sgx.isv_svn.to_le_bytes());
    body[super::BODY_REPORT_DATA..].copy_from_slice(&sgx.report_data);
    Ok(HardwareVerdict {
        tcb_status,
        advisory_ids: report.advisory_ids,
        fmspc,
        body: ReportBody::parse(&body)?,
    })
}

/// Our own parse first: the layout, the version, and the simulation's marks.
fn hardware_quote(raw: &[u8]) -> Result<Quote, QuoteError> {
    let quote = Quote::parse(raw)?;
    if quote.is_simulation() {
        return Err(QuoteError::SimulationNotHardware);
    }
    if raw.len() < HEADER_LEN || raw[4..8] != [0, 0, 0, 0] {
        return Err(QuoteError::Malformed(
            "the TEE type is not SGX (0): Cloister verifies SGX quotes".into(),
        ));
    }
    Ok(quote)
}

fn library_quote(raw: &[u8]) -> Result<dcap_qvl::quote::Quote, QuoteError> {
    dcap_qvl::quote::Quote::parse(raw).map_err(|e| QuoteError::Malformed(format!("{e:#}")))
}

/// The collateral's TCB info must be SGX's, for the quote's platform family: said plainly here,
/// before the library would say "Fmspc mismatch" after checking every signature.
fn same_platform(fmspc: &str, collateral: &Collateral) -> Result<(), QuoteError> {
    #[derive(serde::Deserialize)]
    struct Info {
        id: Option<String>,
        fmspc: String,
    }
    let info: Info = serde_json::from_str(&collateral.tcb_info)
        .map_err(|e| QuoteError::CollateralMalformed(format!("tcb_info: {e}")))?;
    let id = info.id.unwrap_or_else(|| "SGX".into());
    if id != "SGX" {
        return Err(QuoteError::CollateralMismatch(format!(
            "the collateral's TCB info is for {id}, the quote is SGX's"
        )));
    }
    if !info.fmspc.eq_ignore_ascii_case(fmspc) {
        return Err(QuoteError::CollateralMismatch(format!(
            "the quote's platform is FMSPC {fmspc}, the collateral's TCB info is for FMSPC {}",
            info.fmspc.to_uppercase()
        )));
    }
    Ok(())
}

/// `dcap-qvl` reports failures as text; each is sorted into the variant that names what failed,
/// the library's words kept as the detail.
fn classify(message: &str) -> QuoteError {
    let m = message.to_owned();
    let has = |needles: &[&str]| needles.iter().any(|n| message.contains(n));
    if has(&["Revoked"]) {
        QuoteError::Revoked(m)
    } else if has(&[
        "Expired",
        "expired",
        "NotValidYet",
        "in the future",
        "not yet valid",
    ]) {
        QuoteError::Expired(m)
    } else if has(&["ISV enclave report signature"]) {
        QuoteError::BadSignature
    } else if has(&[
        "qe_report",
        "QE report",
        "QE ISVSVN",
        "QE Identity",
        "MRSIGNER",
    ]) {
        QuoteError::QuotingEnclave(m)
    } else if has(&[
        "Fmspc mismatch",
        "non-SGX TCB info",
        "No matching TCB level",
    ]) {
        QuoteError::CollateralMismatch(m)
    } else if has(&[
        "UnknownIssuer",
        "Signature is invalid",
        "BadSignature",
        "root ca",
        "certificate",
        "Certificate",
        "CRL",
        "crl",
    ]) {
        QuoteError::ChainUntrusted(m)
    } else if has(&[
        "decode quote",
        "quote version",
        "QE vendor",
        "attestation key type",
    ]) {
        QuoteError::Malformed(m)
    } else {
        QuoteError::Rejected(m)
    }
}
