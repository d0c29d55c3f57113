//! Every request's id: the caller's `x-request-id` when it is sane, else a new one. It is answered
//! in the `x-request-id` header, carried by the `request` span every log line of the request is
//! in, and put in error bodies (`error.request_id`).

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The header, in requests and answers.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a caller.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being answered on this task, if any.
pub(crate) fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The caller's id if it is sane (1 to [`MAX_LEN`] characters of `A-Z a-z 0-9 - _ . :`, so it
/// cannot forge a log line or smuggle anything into one), else `None`.
pub fn sane(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty()
        && text.len() <= MAX_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| text.to_owned())
}

/// The middleware: the id chosen, the request run in its span and task-local, the header added.
/// One line per answered request (at debug for the probes and the metrics, info otherwise)
/// names the method, the route's template (never the path itself: a storage key is the
/// caller's) and the status.
pub(crate) async fn layer(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(sane)
        .unwrap_or_else(|| runtime::id::new_id("req"));
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(none)".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!("request", request_id = %id);
    let quiet = [
        crate::probes::LIVEZ,
        crate::probes::READYZ,
        crate::probes::METRICS,
    ]
    .contains(&route.as_str());
    let mut response = CURRENT
        .scope(id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    span.in_scope(|| {
        let status = response.status().as_u16();
        if quiet {
            tracing::debug!(%method, %route, status, "answered");
        } else {
            tracing::info!(%method, %route, status, "answered");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::sane;

    #[test]
    fn only_a_sane_caller_id_is_taken() {
        let ok = |s: &str| sane(&HeaderValue::from_str(s).expect("header"));
        assert_eq!(ok("abc-123_x.y:z").as_deref(), Some("abc-123_x.y:z"));
        assert_eq!(ok(""), None);
        assert_eq!(ok("a b"), None, "no spaces");
        assert_eq!(ok("a\"b"), None, "no quotes");
        assert_eq!(ok(&"a".repeat(129)), None, "at most 128");
        assert!(ok(&"a".repeat(128)).is_some());
        assert_eq!(
            sane(&HeaderValue::from_bytes(b"caf\xc3\xa9").expect("bytes")),
            None
        );
    }
}
