//! Oracle requests (`POST /v1/oracle/requests`, and `Request::Fetch` from other services): any
//! bytes as the JSON body, checked as the service checks a request before fetching; an accepted
//! request has a hash and reads back from its own JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oracle::{OracleRequest, RequestLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(axum::Json(request)) = axum::Json::<OracleRequest>::from_bytes(data) else {
        return;
    };
    if request.check(RequestLimits { max_sources: 8 }).is_ok() {
        let _ = request.hash();
    }
    let json = serde_json::to_vec(&request).expect("a request serializes");
    let again: OracleRequest =
        serde_json::from_slice(&json).expect("a request reads back from its own JSON");
    assert_eq!(again.sources.len(), request.sources.len());
});
