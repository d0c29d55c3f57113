//! What the fuzz targets share: a simulation platform with a fixed root secret (so the committed
//! seeds, sealed by `examples/seeds.rs` under the same root, open in the targets), a scratch
//! directory for the parsers that read files, and the recorded DCAP quote with its collateral.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use enclave::Simulation;

/// The simulation's root secret in the targets and in the seeds they start from. Not a secret:
/// only what was sealed for fuzzing is sealed under it.
pub const ROOT: [u8; 32] = *b"cloister fuzz simulation root 32";

/// The security version of the simulated enclave.
pub const SECURITY_VERSION: u16 = 1;

/// The recorded SGX quote and its collateral (`crates/enclave/tests/fixtures/dcap`), and a time
/// inside the collateral's validity window (as `crates/enclave/tests/dcap.rs` checks it).
pub const SGX_QUOTE: &[u8] = include_bytes!("../../crates/enclave/tests/fixtures/dcap/sgx_quote");
pub const SGX_COLLATERAL: &[u8] =
    include_bytes!("../../crates/enclave/tests/fixtures/dcap/sgx_quote_collateral.json");
pub const COLLATERAL_VALID_AT: u64 = 1_751_328_000;

/// Opens the simulation in `dir`, with [`ROOT`] as its root secret.
pub fn simulation_in(dir: &Path) -> Simulation {
    std::fs::write(dir.join("simulation-root.key"), ROOT)
        .expect("the scratch directory is writable");
    Simulation::open(dir, b"cloister fuzz", b"", SECURITY_VERSION)
        .expect("a simulation opens with a 32-byte root")
}

/// This process's scratch directory, removed by `run.sh` with the rest of its temporary files.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("cloister-fuzz-")
            .tempdir()
            .expect("a temporary directory")
            .keep()
    })
}

/// The simulation the targets unseal with.
pub fn simulation() -> &'static Simulation {
    static SIM: OnceLock<Simulation> = OnceLock::new();
    SIM.get_or_init(|| simulation_in(scratch()))
}

/// `data` cut in two at the length its first two bytes give (little-endian), for targets that
/// read two files or two fields.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return (&[], &[]);
    };
    let at = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    rest.split_at(at)
}

/// Prefixes `first` with its length, as [`split`] reads it.
pub fn join(first: &[u8], second: &[u8]) -> Vec<u8> {
    let len = u16::try_from(first.len()).expect("a first part under 64 KiB");
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(first);
    out.extend_from_slice(second);
    out
}
