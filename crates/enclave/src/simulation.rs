//! The simulation platform: behaves like an SGX enclave (same quote layout, same sealing rules) for
//! development and CI, and says in every quote that it is a simulation.
//!
//! Its root secret lives in the data directory (`simulation-root.key`, owner-only), so anyone who can
//! read that directory can derive its keys: simulation is not confidential, only faithful.

use std::io::Write;
use std::path::Path;

use p256::ecdsa::SigningKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Error, Identity, KeyRequest, Platform, PlatformKind, Policy, SealingKey};

const ROOT_FILE: &str = "simulation-root.key";

pub struct Simulation {
    identity: Identity,
    root: Zeroizing<[u8; 32]>,
    attestation: SigningKey,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// Opens (or creates) the simulation in `data_dir`. The measurement covers `code` (the binary)
    /// and `measured` (the start-only configuration), as MRENCLAVE covers an enclave's pages.
    pub fn open(
        data_dir: &Path,
        code: &[u8],
        measured: &[u8],
        security_version: u16,
    ) -> Result<Simulation, Error> {
        let root = load_or_create_root(&data_dir.join(ROOT_FILE))?;
        let mut m = Sha256::new();
        m.update(b"cloister simulation measurement v1\0");
        m.update(Sha256::digest(code));
        m.update(Sha256::digest(measured));
        let signer: [u8; 32] = Sha256::digest(b"cloister simulation signer v1").into();
        let identity = Identity {
            platform: PlatformKind::Simulation,
            measurement: m.finalize().into(),
            signer,
            product_id: 1,
            security_version,
            debug: true,
        };
        let attestation = attestation_key(&root);
        Ok(Simulation {
            identity,
            root,
            attestation,
        })
    }

    /// The measurement of the running binary with `measured` start-only settings.
    pub fn open_for_current_exe(
        data_dir: &Path,
        measured: &[u8],
        security_version: u16,
    ) -> Result<Simulation, Error> {
        let exe = std::env::current_exe().map_err(Error::io("current executable"))?;
        let code = std::fs::read(&exe).map_err(Error::io(&exe))?;
        Simulation::open(data_dir, &code, measured, security_version)
    }

    /// The same simulation with product id `id` (ISVPRODID; 1 unless the configuration says).
    /// Sealing keys are bound to it, as under SGX.
    pub fn with_product_id(mut self, id: u16) -> Simulation {
        self.identity.product_id = id;
        self
    }

    /// The simulation attestation key's public part, uncompressed `x || y`.
    pub fn attestation_public_key(&self) -> [u8; 64] {
        let point = self.attestation.verifying_key().to_encoded_point(false);
        point.as_bytes()[1..65]
            .try_into()
            .expect("an uncompressed P-256 point is 65 bytes")
    }
}

fn load_or_create_root(path: &Path) -> Result<Zeroizing<[u8; 32]>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let root: [u8; 32] = bytes.as_slice().try_into().map_err(|_| Error::Malformed {
                path: path.to_owned(),
                message: format!(
                    "the simulation root secret must be 32 bytes, found {}; everything sealed under it is lost \
                     if it is replaced",
                    bytes.len()
                ),
            })?;
            Ok(Zeroizing::new(root))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt;
            let root = Zeroizing::new(rand::random::<[u8; 32]>());
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(Error::io(path))?;
            file.write_all(root.as_slice())
                .and_then(|()| file.sync_all())
                .map_err(Error::io(path))?;
            Ok(root)
        }
        Err(e) => Err(Error::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

fn attestation_key(root: &[u8; 32]) -> SigningKey {
    let hk = hkdf::Hkdf::<Sha256>::new(None, root);
    for counter in 0u8.. {
        let mut scalar = Zeroizing::new([0u8; 32]);
        hk.expand(
            &[
                b"cloister simulation attestation key v1".as_slice(),
                &[counter],
            ]
            .concat(),
            scalar.as_mut(),
        )
        .expect("32 bytes is a valid HKDF-SHA256 output length");
        if let Ok(key) = SigningKey::from_bytes(scalar.as_slice().into()) {
            return key;
        }
    }
    unreachable!("a valid P-256 scalar is found within a few tries")
}

impl Platform for Simulation {
    fn identity(&self) -> &Identity {
        &self.identity
    }

    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, Error> {
        Ok(crate::quote::simulate(
            &self.identity,
            report_data,
            &self.attestation,
        ))
    }

    fn sealing_key(&self, request: &KeyRequest) -> Result<SealingKey, Error> {
        if request.security_version > self.identity.security_version {
            return Err(Error::SecurityVersionTooNew {
                requested: request.security_version,
                current: self.identity.security_version,
            });
        }
        let bound = match request.policy {
            Policy::Measurement => &self.identity.measurement,
            Policy::Signer => &self.identity.signer,
        };
        Ok(crate::derive(
            self.root.as_slice(),
            request,
            bound,
            self.identity.product_id,
        ))
    }
}
