//! Quotes: any bytes as a quote, checked as `cloister quote verify` and the oracle's verifier check
//! them (a simulation quote with simulations allowed; a hardware quote against the recorded
//! collateral at a time it is valid), and read for the PCK identity `cloister quote collateral`
//! fetches by.
#![no_main]

use std::sync::OnceLock;

use enclave::quote::dcap::{HardwareCheck, TcbPolicy, parse_collateral, pck_identity};
use enclave::quote::{Quote, Trust, check};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    let trust = TRUST.get_or_init(|| Trust {
        allow_simulation: true,
        hardware: Some(HardwareCheck {
            collateral: parse_collateral(cloister_fuzz::SGX_COLLATERAL)
                .expect("the recorded collateral parses"),
            at_unix_secs: cloister_fuzz::COLLATERAL_VALID_AT,
            policy: TcbPolicy::default(),
        }),
    });
    if let Ok(quote) = Quote::parse(data) {
        let _ = quote.is_simulation();
    }
    let _ = check(data, trust, Some(&[0u8; 64]));
    let _ = check(data, trust, None);
    let _ = pck_identity(data);
});
