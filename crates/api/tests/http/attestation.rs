//! Attestation: the quote binds the nonce and says it is a simulation.

use super::*;

#[tokio::test(start_paused = true)]
async fn attestation_binds_the_nonce_and_says_simulation() {
    let h = harness(false).await;
    let (status, _, body) = send(
        &h.app,
        "GET",
        "/v1/attestation?nonce=00ff10",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["platform"].as_str(), body["simulation"].as_bool()),
        (Some("simulation"), Some(true))
    );
    use base64::Engine;
    let quote = base64::engine::general_purpose::STANDARD
        .decode(body["quote"].as_str().expect("quote"))
        .expect("b64");
    let parsed = enclave::quote::Quote::parse(&quote).expect("parse");
    let rd = enclave::report_data_for_nonce(&[0x00, 0xff, 0x10]);
    assert_eq!(parsed.verify(true, Some(&rd), None), Ok(()));
    assert_eq!(
        hex::encode(parsed.body.mr_enclave),
        body["identity"]["measurement"].as_str().unwrap_or("")
    );
    for bad in ["zz".to_owned(), String::new(), "00".repeat(65)] {
        let (status, _, body) = send(
            &h.app,
            "GET",
            &format!("/v1/attestation?nonce={bad}"),
            Some(TOKEN),
            "",
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("attestation.invalid_nonce"))
        );
    }
    h.runtime.shutdown().await;
}
