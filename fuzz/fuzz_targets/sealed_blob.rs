//! Sealed blobs (the host keeps them: keystore data keys, counters, storage's state key): any
//! bytes read as a blob and unsealed; and any bytes sealed must unseal to themselves, and only
//! with their associated data.
#![no_main]

use enclave::{KeyRequest, Policy, request_of, seal, unseal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sim = cloister_fuzz::simulation();
    let _ = request_of(data);
    let (aad, blob) = cloister_fuzz::split(data);
    let _ = unseal(sim, blob, aad);
    let _ = unseal(sim, data, b"");

    let request = KeyRequest {
        policy: if data.first().is_some_and(|b| b & 1 == 1) {
            Policy::Signer
        } else {
            Policy::Measurement
        },
        security_version: cloister_fuzz::SECURITY_VERSION,
        key_id: [7; 32],
    };
    let sealed = seal(sim, &request, blob, aad).expect("sealing succeeds");
    let opened = unseal(sim, &sealed, aad).expect("a blob unseals with its own associated data");
    assert_eq!(opened.as_slice(), blob);
    assert!(unseal(sim, &sealed, &[aad, b"!"].concat()).is_err());
    let read = request_of(&sealed).expect("a sealed blob names its key request");
    assert_eq!((read.policy, read.key_id), (request.policy, request.key_id));
});
