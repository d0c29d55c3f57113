//! Signed oracle reports and key attestations (`cloister oracle verify`, and any verifier): any
//! bytes as the report and as the attestation, verified with simulation quotes allowed.
#![no_main]

use enclave::quote::Trust;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (report, attestation) = cloister_fuzz::split(data);
    let (Ok(report), Ok(attestation)) = (
        std::str::from_utf8(report),
        std::str::from_utf8(attestation),
    ) else {
        return;
    };
    let trust = Trust {
        allow_simulation: true,
        hardware: None,
    };
    let _ = oracle::verify(report, None, &trust);
    let _ = oracle::verify(report, Some(attestation), &trust);
});
