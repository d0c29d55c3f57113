//! Training requests (`POST /v1/ai/train`): any bytes as the JSON body, checked as the ai service
//! checks a dataset (with small limits, so that each input trains quickly), and trained when
//! accepted.
#![no_main]

use std::sync::atomic::AtomicBool;

use ai::TrainRequest;
use ai::train::{DataLimits, check, train};
use libfuzzer_sys::fuzz_target;

const LIMITS: DataLimits = DataLimits {
    max_rows: 64,
    max_features: 8,
    max_work: 200_000,
};

fuzz_target!(|data: &[u8]| {
    let Ok(axum::Json(request)) = axum::Json::<TrainRequest>::from_bytes(data) else {
        return;
    };
    if check(
        &request.dataset,
        &request.model,
        request.test_fraction,
        LIMITS,
    )
    .is_ok()
    {
        let _ = train(
            &request.dataset,
            &request.model,
            request.test_fraction,
            &AtomicBool::new(false),
        );
    }
});
