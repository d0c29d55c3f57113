//! The JSON body of every endpoint that takes one: the first byte picks the endpoint, the rest is
//! the body, read as the API's extractor reads it (axum's `Json::from_bytes`, into the endpoint's
//! type). A body that reads and has a JSON form reads back from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reads `body` as `T`; when it reads, its own JSON reads as `T` too.
fn round_trip<T: DeserializeOwned + Serialize>(body: &[u8]) {
    if let Ok(axum::Json(value)) = axum::Json::<T>::from_bytes(body) {
        let json = serde_json::to_vec(&value).expect("a body serializes");
        if let Err(e) = axum::Json::<T>::from_bytes(&json) {
            panic!(
                "{} does not read back from its own JSON {}: {e}",
                std::any::type_name::<T>(),
                String::from_utf8_lossy(&json)
            );
        }
    }
}

/// Reads `body` as `T`, a type without a JSON form of its own.
fn read<T: DeserializeOwned>(body: &[u8]) {
    let _ = axum::Json::<T>::from_bytes(body);
}

fuzz_target!(|data: &[u8]| {
    let Some((&endpoint, body)) = data.split_first() else {
        return;
    };
    match endpoint % 14 {
        // POST /v1/accounts
        0 => round_trip::<wire::accounts::CreateBody>(body),
        // POST /v1/accounts/{id}/tokens
        1 => read::<api::bodies::IssueBody>(body),
        // POST /v1/services/{name}/faults
        2 => read::<api::bodies::FaultBody>(body),
        // POST /v1/storage
        3 => round_trip::<wire::storage::BatchBody>(body),
        // POST /v1/crypto/keys
        4 => round_trip::<wire::crypto::GenerateBody>(body),
        // POST /v1/crypto/keys/{id}/sign
        5 => round_trip::<wire::crypto::SignBody>(body),
        // POST /v1/crypto/keys/{id}/verify
        6 => round_trip::<wire::crypto::VerifyBody>(body),
        // POST /v1/crypto/keys/{id}/encrypt
        7 => round_trip::<wire::crypto::EncryptBody>(body),
        // POST /v1/crypto/keys/{id}/decrypt
        8 => round_trip::<wire::crypto::DecryptBody>(body),
        // POST /v1/crypto/keys/{id}/derive
        9 => round_trip::<wire::crypto::DeriveBody>(body),
        // POST /v1/computation/run and /v1/computation/jobs
        10 => round_trip::<computation::Program>(body),
        // POST /v1/oracle/requests
        11 => round_trip::<oracle::OracleRequest>(body),
        // POST /v1/ai/models/{id}/predict
        12 => round_trip::<ai::PredictInput>(body),
        // POST /v1/ai/train
        13 => round_trip::<ai::TrainRequest>(body),
        _ => {}
    }
});
