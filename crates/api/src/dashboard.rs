//! The operator's dashboard: a single page, built from `dashboard/` into `crates/api/assets/` and
//! compiled into the binary, so serving it needs no files, no build tool and no network. The page
//! itself holds no secret: it asks for the admin token and talks to the same admin API as the CLI.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Only the binary's own origin: no CDN, no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

const INDEX: &[u8] = include_bytes!("../assets/index.html");
const APP_JS: &[u8] = include_bytes!("../assets/app.js");
const APP_CSS: &[u8] = include_bytes!("../assets/app.css");

fn asset(body: &'static [u8], content_type: &'static str, cache: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

// The page is tiny and versioned with the binary: revalidate rather than serve a stale build.
const REVALIDATE: &str = "no-cache";

/// The dashboard page (it asks for the admin token).
#[utoipa::path(get, path = "/", tag = "dashboard", security(()),
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
pub(crate) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8", REVALIDATE)
}

/// The dashboard's script.
#[utoipa::path(get, path = "/assets/app.js", tag = "dashboard", security(()),
    responses((status = 200, description = "JavaScript module", content_type = "text/javascript", body = String)))]
pub(crate) async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8", REVALIDATE)
}

/// The dashboard's style sheet.
#[utoipa::path(get, path = "/assets/app.css", tag = "dashboard", security(()),
    responses((status = 200, description = "CSS", content_type = "text/css", body = String)))]
pub(crate) async fn style() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8", REVALIDATE)
}
