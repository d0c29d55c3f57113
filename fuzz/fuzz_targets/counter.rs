//! Freshness counter files (`NAME.counter`, two sealed slots the host keeps): any bytes as the
//! file, and the same bytes padded to the file's size, read as storage and the keystore read
//! their counters at start. A counter read must then advance past what was read.
#![no_main]

use enclave::Counters;
use libfuzzer_sys::fuzz_target;

const SIZE: usize = 2 * 4096;

fuzz_target!(|data: &[u8]| {
    let sim = cloister_fuzz::simulation();
    let dir = cloister_fuzz::scratch();
    let counters = Counters::new(dir);
    let path = dir.join("fuzz.counter");
    std::fs::write(&path, data).expect("the scratch directory is writable");
    let _ = counters.read_if_present(sim, "fuzz");
    if data.len() < SIZE {
        let mut padded = data.to_vec();
        padded.resize(SIZE, 0);
        std::fs::write(&path, &padded).expect("the scratch directory is writable");
        if let Ok(Some(value)) = counters.read_if_present(sim, "fuzz")
            && let Some(next) = value.checked_add(1)
        {
            assert_eq!(counters.advance(sim, "fuzz").ok(), Some(next));
            assert_eq!(counters.read(sim, "fuzz").ok(), Some(next));
        }
    }
});
