//! The oracle over HTTP: requests against loopback sources, signed reports, its key and its limits.

use super::*;

/// docs/api.md: 429 `oracle.rate_limited`, with `Retry-After`, over `requests_per_minute`.
#[tokio::test]
async fn error_code_oracle_rate_limited_is_429_with_retry_after() {
    let h = start(Setup {
        with_storage: true,
        services: "[services.oracle]\nrequests_per_minute = 1\n",
        ..Setup::default()
    })
    .await;
    // A host nobody allowed: the source fails without a fetch, and the report says so.
    let request = r#"{"sources":[{"url":"https://not-allowed.invalid/x","extract":{"json_path":"$.v"}}],"aggregation":{"method":"median"}}"#;
    let (status, _, report) =
        send(&h.app, "POST", "/v1/oracle/requests", Some(TOKEN), request).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let answer = send(&h.app, "POST", "/v1/oracle/requests", Some(TOKEN), request).await;
    // One request a minute: the next is about a minute away.
    assert_error(
        &answer,
        StatusCode::TOO_MANY_REQUESTS,
        "oracle.rate_limited",
        Some(1..=60),
    );
    h.runtime.shutdown().await;
}
