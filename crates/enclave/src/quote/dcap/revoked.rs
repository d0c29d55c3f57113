//! Which certificate a CRL lists, when `dcap-qvl` refuses a chain as revoked without saying which
//! (its words are webpki's `CertRevoked`).
//!
//! Called only after the library refused the chain: it has checked the CRLs' signatures and
//! dates. Here they are only read, to name the certificate in the refusal.

use base64::Engine as _;
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::der::Decode;
use x509_cert::name::Name;

use super::Collateral;

/// "the PCK certificate "Intel SGX PCK Certificate" (serial E9:32:…) is listed in the PCK CRL
/// issued by "Intel SGX PCK Processor CA" (revoked 2025-06-01T00:00:00Z)", for the first
/// certificate of the chains the library checked (the PCK chain, the collateral's or else the
/// quote's; the TCB info and QE identity signing chains) that a CRL of `collateral` lists; `None`
/// when none is.
pub(super) fn listed(quote: &dcap_qvl::quote::Quote, collateral: &Collateral) -> Option<String> {
    let crls: Vec<(&str, CertificateList)> = [
        ("root CA CRL", &collateral.root_ca_crl),
        ("PCK CRL", &collateral.pck_crl),
    ]
    .into_iter()
    .filter_map(|(which, der)| Some((which, CertificateList::from_der(der).ok()?)))
    .collect();
    let pck_chain = match &collateral.pck_certificate_chain {
        Some(pem) => pem_certificates(pem),
        None => dcap_qvl::intel::extract_cert_chain(quote).unwrap_or_default(),
    };
    let chains = [
        ("PCK", pck_chain),
        (
            "TCB info signing",
            pem_certificates(&collateral.tcb_info_issuer_chain),
        ),
        (
            "QE identity signing",
            pem_certificates(&collateral.qe_identity_issuer_chain),
        ),
    ];
    for (chain, certificates) in &chains {
        for (position, der) in certificates.iter().enumerate() {
            let Ok(certificate) = Certificate::from_der(der) else {
                continue;
            };
            let tbs = certificate.tbs_certificate();
            for (which, crl) in &crls {
                let list = &crl.tbs_cert_list;
                if list.issuer != *tbs.issuer() {
                    continue;
                }
                let Some(entry) = list
                    .revoked_certificates
                    .iter()
                    .flatten()
                    .find(|entry| entry.serial_number == *tbs.serial_number())
                else {
                    continue;
                };
                let role = if position == 0 {
                    format!("the {chain} certificate")
                } else if tbs.subject() == tbs.issuer() {
                    "the root CA certificate".to_owned()
                } else {
                    format!("the {chain} chain's CA certificate")
                };
                return Some(format!(
                    "{role} {:?} (serial {}) is listed in the {which} issued by {:?} (revoked {})",
                    common_name(tbs.subject()),
                    tbs.serial_number(),
                    common_name(&list.issuer),
                    entry.revocation_date,
                ));
            }
        }
    }
    None
}

fn common_name(name: &Name) -> String {
    match name.common_name() {
        Ok(Some(cn)) => cn.value().into_owned(),
        _ => name.to_string(),
    }
}

/// The DER certificates of a PEM chain; a block that does not decode is left out (the library
/// has already refused what it could not read).
fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    pem.split(BEGIN)
        .skip(1)
        .filter_map(|block| {
            let body = block.split(END).next()?;
            let base64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(base64)
                .ok()
        })
        .collect()
}
