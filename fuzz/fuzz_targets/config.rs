//! The TOML configuration (`cloister.toml`, and `PUT /v1/config` bodies), parsed against the
//! catalogue of services as `cloister run` parses it.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use runtime::config::Config;

fuzz_target!(|data: &[u8]| {
    static CATALOG: OnceLock<Vec<runtime::Spec>> = OnceLock::new();
    let catalog = CATALOG.get_or_init(stack::catalog);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text, catalog) {
        // What the supervisor does next with an accepted configuration.
        let _ = config.resolve(catalog);
    }
});
