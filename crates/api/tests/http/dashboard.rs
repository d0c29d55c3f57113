//! The dashboard's files, served with a same-origin Content-Security-Policy.

use super::*;

/// The dashboard's page, script and style come from the binary itself, each with a
/// Content-Security-Policy that allows this origin only (no other origin, no inline script, no
/// framing), and the page refers to nothing but its own origin.
#[tokio::test(start_paused = true)]
async fn the_dashboard_is_served_with_a_same_origin_content_security_policy() {
    let h = harness(false).await;
    for (path, content_type) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let (status, headers, body) = send(&h.app, "GET", path, None, "").await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|t| t.starts_with(content_type)),
            "{path}: {:?}",
            headers[header::CONTENT_TYPE]
        );
        assert!(body.as_str().is_some_and(|b| !b.is_empty()), "{path}");
        let csp = headers
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap_or_else(|| panic!("{path} has no Content-Security-Policy"))
            .to_str()
            .expect("ascii");
        let directives: std::collections::BTreeMap<&str, Vec<&str>> = csp
            .split(';')
            .filter_map(|d| {
                let mut words = d.split_whitespace();
                Some((words.next()?, words.collect()))
            })
            .collect();
        assert_eq!(directives["default-src"], ["'self'"], "{path}: {csp}");
        assert_eq!(directives["frame-ancestors"], ["'none'"], "{path}: {csp}");
        let scripts = directives
            .get("script-src")
            .unwrap_or(&directives["default-src"]);
        assert!(
            scripts.iter().all(|s| !s.starts_with("'unsafe")),
            "{path}: inline script allowed: {csp}"
        );
        for (name, sources) in &directives {
            for source in sources {
                let allowed = matches!(*source, "'self'" | "'none'")
                    || (*name == "style-src" && *source == "'unsafe-inline'")
                    || (*name == "img-src" && *source == "data:");
                assert!(allowed, "{path}: {name} allows {source}: {csp}");
            }
        }
    }
    // Every src and href of the page is a path on this origin (or an inline data: icon).
    let (_, _, page) = send(&h.app, "GET", "/", None, "").await;
    let page = page.as_str().expect("html");
    let mut references = 0;
    for attribute in ["src=\"", "href=\""] {
        for rest in page.split(attribute).skip(1) {
            let target = rest.split('"').next().unwrap_or_default();
            references += 1;
            assert!(
                (target.starts_with('/') && !target.starts_with("//"))
                    || target.starts_with("data:"),
                "the page refers to {target}"
            );
        }
    }
    assert!(references >= 2, "the page loads its script and style");
    h.runtime.shutdown().await;
}
