//! What the oracle reads out of a fetched answer: a JSONPath (the caller's) over a body (the
//! source's, any bytes), and the arguments an extraction script gets from a body, which must be
//! JSON whatever the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (path, body) = cloister_fuzz::split(data);
    if let Ok(path) = std::str::from_utf8(path) {
        let _ = oracle::extract_json_path(path, body);
    }
    let status = u16::from_le_bytes([
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ]);
    let args = oracle::report::script_args(status, body);
    serde_json::value::RawValue::from_string(args).expect("script arguments are JSON");
});
