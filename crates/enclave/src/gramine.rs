//! The Gramine platform: inside an SGX enclave, Gramine exposes attestation and sealing as files
//! under `/dev/attestation` (a parameter here, so tests can point it at a directory that behaves
//! the same way).
//!
//! - `user_report_data`: write exactly 64 bytes; `report` then holds the 432-byte SGX report and
//!   `quote` a quote over them.
//! - `attestation_type`: `none`, `epid` or `dcap`.
//! - `keys/_sgx_mrenclave`, `keys/_sgx_mrsigner`: 16-byte SGX sealing keys at the enclave's own
//!   security version.

use std::path::{Path, PathBuf};

use crate::quote::{BODY_LEN, ReportBody};
use crate::{Error, Identity, KeyRequest, Platform, PlatformKind, Policy, SealingKey};

const REPORT_LEN: usize = 432;
const SGX_KEY_LEN: usize = 16;

#[derive(Debug)]
pub struct Gramine {
    root: PathBuf,
    identity: Identity,
    attestation_type: String,
    /// Writing `user_report_data` and reading `quote` is one step: two callers must not interleave.
    quoting: std::sync::Mutex<()>,
}

impl Gramine {
    /// Opens the attestation interface at `root` (in an enclave: `/dev/attestation`).
    pub fn open(root: &Path) -> Result<Gramine, Error> {
        if !root.exists() {
            return Err(Error::NotGramine(root.to_owned()));
        }
        let type_path = root.join("attestation_type");
        let attestation_type = std::fs::read_to_string(&type_path)
            .map_err(Error::io(&type_path))?
            .trim()
            .to_owned();
        let body = report(root, &[0u8; 64])?;
        let body = ReportBody::parse(&body[..BODY_LEN]).map_err(|e| Error::Malformed {
            path: root.join("report"),
            message: e.to_string(),
        })?;
        let identity = Identity {
            platform: PlatformKind::Gramine,
            measurement: body.mr_enclave,
            signer: body.mr_signer,
            product_id: body.isv_prod_id,
            security_version: body.isv_svn,
            debug: body.debug,
        };
        Ok(Gramine {
            root: root.to_owned(),
            identity,
            attestation_type,
            quoting: std::sync::Mutex::new(()),
        })
    }

    pub fn attestation_type(&self) -> &str {
        &self.attestation_type
    }
}

fn write_report_data(root: &Path, report_data: &[u8; 64]) -> Result<(), Error> {
    let path = root.join("user_report_data");
    std::fs::write(&path, report_data).map_err(Error::io(&path))
}

fn report(root: &Path, report_data: &[u8; 64]) -> Result<Vec<u8>, Error> {
    write_report_data(root, report_data)?;
    let path = root.join("report");
    let report = std::fs::read(&path).map_err(Error::io(&path))?;
    if report.len() != REPORT_LEN {
        return Err(Error::Malformed {
            path,
            message: format!(
                "an SGX report is {REPORT_LEN} bytes, found {}",
                report.len()
            ),
        });
    }
    Ok(report)
}

impl Platform for Gramine {
    fn identity(&self) -> &Identity {
        &self.identity
    }

    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, Error> {
        if self.attestation_type == "none" {
            return Err(Error::Unsupported(
                "Gramine runs with sgx.remote_attestation = \"none\": there is no quote to give; set it to \"dcap\" in the manifest"
                    .into(),
            ));
        }
        let _one_at_a_time = self.quoting.lock().unwrap_or_else(|p| p.into_inner());
        write_report_data(&self.root, report_data)?;
        let path = self.root.join("quote");
        let quote = std::fs::read(&path).map_err(Error::io(&path))?;
        let parsed = crate::quote::Quote::parse(&quote).map_err(|e| Error::Malformed {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if &parsed.body.report_data != report_data {
            return Err(Error::Malformed {
                path,
                message: "the quote does not carry the report data just written".into(),
            });
        }
        Ok(quote)
    }

    fn sealing_key(&self, request: &KeyRequest) -> Result<SealingKey, Error> {
        let current = self.identity.security_version;
        if request.security_version > current {
            return Err(Error::SecurityVersionTooNew {
                requested: request.security_version,
                current,
            });
        }
        if request.security_version < current {
            return Err(Error::Unsupported(format!(
                "Gramine's key files give keys for the enclave's own security version ({current}) only; a blob sealed \
                 at version {} must be resealed by an enclave of that version before the upgrade",
                request.security_version
            )));
        }
        let (file, bound) = match request.policy {
            Policy::Measurement => ("_sgx_mrenclave", &self.identity.measurement),
            Policy::Signer => ("_sgx_mrsigner", &self.identity.signer),
        };
        let path = self.root.join("keys").join(file);
        let key = zeroize::Zeroizing::new(std::fs::read(&path).map_err(Error::io(&path))?);
        if key.len() != SGX_KEY_LEN {
            return Err(Error::Malformed {
                path,
                message: format!(
                    "an SGX sealing key is {SGX_KEY_LEN} bytes, found {}",
                    key.len()
                ),
            });
        }
        Ok(crate::derive(
            key.as_slice(),
            request,
            bound,
            self.identity.product_id,
        ))
    }
}
