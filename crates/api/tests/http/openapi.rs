//! The OpenAPI document: routes, document and docs/api.md agree, and a validator accepts it.

use super::*;

/// The endpoints docs/api.md names, as (method, path) with `{param}` placeholders and no query.
/// "`POST /v1/services/{name}/restart`, `/stop`, `/start`" names three.
fn reference_endpoints() -> std::collections::BTreeSet<(String, String)> {
    let text = include_str!("../../../../docs/api.md");
    let mut found = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut last: Option<(String, String)> = None;
        for (i, code) in line.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            if let Some((method, path)) = code.split_once(' ')
                && ["GET", "PUT", "POST", "DELETE"].contains(&method)
                && path.starts_with('/')
            {
                let path = path.split('?').next().unwrap_or(path).to_owned();
                found.insert((method.to_owned(), path.clone()));
                last = Some((method.to_owned(), path));
            } else if let Some((method, base)) = &last
                && code.starts_with('/')
                && !code.contains(' ')
                && code.matches('/').count() == 1
            {
                let parent = base.rsplit_once('/').map_or("", |(p, _)| p);
                found.insert((method.clone(), format!("{parent}{code}")));
            }
        }
    }
    found
}

/// The document is served without a token, every operation in it is routed (a made-up path
/// would fall through to `http.not_found` or answer 405), every endpoint the API reference names
/// is in it and every one in it is in the reference, and every schema it refers to is defined.
#[tokio::test]
async fn the_openapi_document_matches_the_routes_and_the_reference() {
    let h = harness_with(true, true).await;
    let (status, headers, doc) = send(&h.app, "GET", "/v1/openapi.json", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(doc["openapi"], "3.1.0");
    // A signed report's parsed payload keeps its schema, though the report type lives below the
    // oracle that owns the payload's.
    assert_eq!(
        doc["components"]["schemas"]["SignedReport"]["properties"]["report"]["$ref"],
        "#/components/schemas/ReportPayload"
    );
    assert!(doc["components"]["schemas"]["ReportPayload"]["properties"]["sources"].is_object());
    let ops = operations(&doc);
    assert!(ops.len() > 40, "only {} operations documented", ops.len());

    for (method, path) in &ops {
        let uri = path
            .replace("{key}", "some/key")
            .replace("{version}", "999")
            .replace("{name}", "nope")
            .replace("{id}", "nope")
            .replace("{token_id}", "nope");
        let request = Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{"))
            .expect("request");
        let response = h.app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not routed"
        );
        if status == StatusCode::NOT_FOUND {
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let body: Value = serde_json::from_slice(&bytes).expect("json error");
            assert_ne!(
                body["error"]["code"], "http.not_found",
                "{method} {path} is documented but not routed"
            );
        }
    }

    let reference = reference_endpoints();
    let missing: Vec<_> = reference.difference(&ops).collect();
    assert!(
        missing.is_empty(),
        "docs/api.md names endpoints the OpenAPI document lacks: {missing:?}"
    );
    let undocumented: Vec<_> = ops.difference(&reference).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from docs/api.md: {undocumented:?}"
    );

    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for reference in text.split("#/components/schemas/").skip(1) {
        let name: String = reference.chars().take_while(|c| *c != '"').collect();
        assert!(schemas.contains_key(&name), "dangling reference to {name}");
    }
    // Every error any operation documents has the one error shape.
    let services = &doc["paths"]["/v1/services"]["get"]["responses"];
    for status in ["401", "403", "503"] {
        assert_eq!(
            services[status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
}

/// The fault-injection endpoint is documented exactly where it exists.
#[tokio::test(start_paused = true)]
async fn the_openapi_document_has_fault_injection_only_where_it_is_enabled() {
    let faults = ("POST".to_owned(), "/v1/services/{name}/faults".to_owned());
    let on = harness(true).await;
    let (_, _, doc) = send(&on.app, "GET", "/v1/openapi.json", None, "").await;
    assert!(operations(&doc).contains(&faults));
    let off = harness(false).await;
    let (_, _, doc) = send(&off.app, "GET", "/v1/openapi.json", None, "").await;
    assert!(!operations(&doc).contains(&faults));
}

/// An independent validator (Python's openapi-spec-validator) accepts the document as OpenAPI 3.1.
#[tokio::test(start_paused = true)]
async fn the_openapi_document_is_valid_for_an_independent_validator() {
    let h = harness(true).await;
    let (_, _, doc) = send(&h.app, "GET", "/v1/openapi.json", None, "").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).expect("write");
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             validate(json.load(open(sys.argv[1])))\n",
        )
        .arg(&file)
        .output()
        .expect("python3 runs (install it, or run .ci/run)");
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document (pip install openapi-spec-validator, or run \
         .ci/run):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The paths the router itself serves, read from its route table (axum prints it in its `Debug`
/// form; there is no other way to list it). The fallback is not a route.
fn served_paths(app: &axum::Router) -> std::collections::BTreeSet<String> {
    let table = format!("{app:?}");
    let routes = table
        .split_once("path_router:")
        .and_then(|(_, rest)| rest.split_once("fallback_router:"))
        .map(|(routes, _)| routes)
        .expect("axum's Router debug form names path_router and fallback_router");
    routes
        .split("RouteId(")
        .skip(1)
        .filter_map(|entry| {
            let (_, rest) = entry.split_once("): \"")?;
            let (path, _) = rest.split_once('"')?;
            Some(path.to_owned())
        })
        .collect()
}

/// The reverse of the check above: every method on every path the router serves is in the
/// OpenAPI document. A route added beside `routes!` (a plain `.route(...)`) fails here.
#[tokio::test]
async fn every_route_the_router_serves_is_in_the_openapi_document() {
    let h = harness_with(true, true).await;
    let (_, _, doc) = send(&h.app, "GET", "/v1/openapi.json", None, "").await;
    let documented = operations(&doc);
    let paths = served_paths(&h.app);
    assert!(
        paths.len() > 30,
        "only {} paths read from the router: {paths:?}",
        paths.len()
    );
    let mut undocumented = Vec::new();
    for path in &paths {
        // axum spells the storage wildcard `{*key}`; the document spells it `{key}`.
        let documented_as = path.replace("{*", "{");
        let uri = documented_as
            .replace("{key}", "some/key")
            .replace("{version}", "999")
            .replace("{name}", "nope")
            .replace("{id}", "nope")
            .replace("{token_id}", "nope");
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let request = Request::builder()
                .method(method)
                .uri(&uri)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{"))
                .expect("request");
            let response = h.app.clone().oneshot(request).await.expect("response");
            let status = response.status();
            // Only a 404's body is read: a served stream does not end.
            let fell_through = status == StatusCode::NOT_FOUND && {
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                serde_json::from_slice::<Value>(&bytes)
                    .is_ok_and(|b| b["error"]["code"] == "http.not_found")
            };
            let served = status != StatusCode::METHOD_NOT_ALLOWED && !fell_through;
            if served && !documented.contains(&(method.to_owned(), documented_as.clone())) {
                undocumented.push(format!("{method} {path} ({status})"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "served but not in the OpenAPI document: {undocumented:?}"
    );
    h.runtime.shutdown().await;
}
