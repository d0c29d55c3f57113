//! ONNX uploads (`POST /v1/ai/models`): any bytes loaded as the ai service loads a model (parsed,
//! typed, optimized). tract panics on some malformed models; the service catches those and
//! answers `ai.invalid_model`, so a caught panic is not a crash here, only an uncaught one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: {
    // libFuzzer's hook aborts at the first panic, even one the service catches: keep the abort
    // for uncaught panics only (libfuzzer-sys aborts on those) and print nothing for the others.
    std::panic::set_hook(Box::new(|_| {}));
}, |data: &[u8]| {
    if let Ok(model) = ai::load_model(data) {
        let _ = format!("{model:?}");
    }
});
