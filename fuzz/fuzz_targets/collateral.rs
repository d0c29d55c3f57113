//! DCAP collateral (`cloister quote verify --collateral FILE`, and what a PCCS answers): any bytes
//! as collateral JSON, and a collateral that parses is used to verify the recorded quote.
#![no_main]

use enclave::quote::dcap::{parse_collateral, verify_hardware};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(collateral) = parse_collateral(data) {
        let _ = verify_hardware(
            cloister_fuzz::SGX_QUOTE,
            &collateral,
            cloister_fuzz::COLLATERAL_VALID_AT,
        );
    }
});
