//! The crypto service's keystore (`keystore.sealed` and its change log `keystore.log`, both the
//! host's to write): the two files' bytes, read as the service reads them at start.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (snapshot, log) = cloister_fuzz::split(data);
    let _ = crypto::read_keystore(snapshot, log, cloister_fuzz::simulation());
});
