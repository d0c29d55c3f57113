//! What a caller asks for: sources, how to extract a value from each, and how to aggregate them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// Why the oracle will not send a request header of this name, if it will not. `Host` would let a
/// report carry one server's answer under another's name; hop-by-hop headers belong to the
/// connection the oracle makes, not to the caller; proxy and forwarding headers would speak for
/// the enclave's network position.
pub(crate) fn refused_header(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "host" => Some("the host is the URL's"),
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade"
        | "content-length" | "expect" => Some("a hop-by-hop header belongs to the connection"),
        "forwarded" | "via" | "x-real-ip" => Some("forwarding headers are not sent"),
        _ if lower.starts_with("proxy-") => Some("proxy headers are not sent"),
        _ if lower.starts_with("x-forwarded-") => Some("forwarding headers are not sent"),
        _ if !is_token(&lower) => Some("not a header name"),
        _ => None,
    }
}

/// Whether `name` is an HTTP token (RFC 9110), as a header name must be: the OpenAPI document's
/// [`HEADER_NAME_PATTERN`].
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What a header name may be, as a regular expression.
pub const HEADER_NAME_PATTERN: &str = "^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$";

/// The schema of a source's headers: at most [`MAX_HEADERS`], each named by a token.
fn headers_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(MAX_HEADERS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(HEADER_NAME_PATTERN)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new().schema_type(Type::String).into(),
        )))
        .build()
}

/// The most headers one source may send, and the largest request body it may send.
pub const MAX_HEADERS: usize = 32;
pub const MAX_REQUEST_BODY: usize = 64 << 10;
/// The longest script an extraction may run.
pub const MAX_SCRIPT_BYTES: usize = 64 << 10;

/// One oracle request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OracleRequest)]
pub struct OracleRequest {
    /// 1 to `max_sources` sources, fetched in parallel.
    #[schema(min_items = 1)]
    pub sources: Vec<Source>,
    pub aggregation: Aggregation,
}

/// Where to fetch from and how to read a value out of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// `https://...`, or `http://...` to a host in `plain_http_hosts`. Redirects are not followed.
    pub url: String,
    #[serde(default)]
    pub method: Method,
    /// Request headers (at most 32).
    #[serde(default)]
    #[schema(schema_with = headers_schema)]
    pub headers: BTreeMap<String, String>,
    /// A request body (POST only), sent as given (at most 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 65536)]
    pub body: Option<String>,
    pub extract: Extraction,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Post,
}

/// How to read the value out of a source's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Extraction {
    /// An RFC 9535 JSONPath over the JSON body that selects exactly one value, e.g. `$.data.price`.
    JsonPath(String),
    /// The body of an async JavaScript function run by the computation service with
    /// `args = {body, status}` (`body` as text; `JSON.parse(args.body)` for JSON): return the
    /// value. Needs the token scope `computation:run`. It runs without capabilities (reading `kv`
    /// or `crypto` refuses the request) and deterministic; the report marks its value with the
    /// script's SHA-256.
    Script(String),
}

/// `{"json_path": PATH}` or `{"script": CODE}`, nothing else.
impl utoipa::PartialSchema for Extraction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let one = |name: &str, description: &str, max_length: Option<usize>| {
            let mut value = serde_json::json!({"type": "string", "description": description});
            if let Some(max) = max_length {
                value["maxLength"] = serde_json::json!(max);
            }
            serde_json::json!({
                "type": "object",
                "title": name,
                "required": [name],
                "properties": {name: value},
                "additionalProperties": false,
            })
        };
        serde_json::from_value(serde_json::json!({
            "description": "How to read the value out of a source's answer.",
            "oneOf": [
                one(
                    "json_path",
                    "An RFC 9535 JSONPath over the JSON body that selects exactly one value, \
                     e.g. `$.data.price`",
                    None,
                ),
                one(
                    "script",
                    "The body of an async JavaScript function run with `args = {body, status}`; \
                     needs the token scope `computation:run`; runs without capabilities and \
                     deterministic",
                    Some(MAX_SCRIPT_BYTES),
                ),
            ],
        }))
        .expect("a schema")
    }
}

impl utoipa::ToSchema for Extraction {}

/// How to combine the sources' values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Aggregation {
    pub method: AggregationMethod,
    /// Sources that must agree for a result (default 1): at most the number of sources.
    #[serde(default = "one", deserialize_with = "wire::integer::whole")]
    #[schema(minimum = 1)]
    pub min_agreeing: usize,
    /// For `median` only: a source agrees when its value is within this fraction of the median
    /// (default: every number agrees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub max_deviation: Option<f64>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AggregationMethod {
    /// Numbers: the median (the mean of the middle two for an even count).
    Median,
    /// Any values: the most common one (a tie is no result).
    Mode,
    /// Any values: the value a strict majority of all sources returned.
    Quorum,
}

/// The limits a request is held to, from the service's settings.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// `[services.oracle] max_sources`.
    pub max_sources: usize,
}

impl OracleRequest {
    /// Refuses what can be refused before anything is fetched.
    pub fn check(&self, limits: RequestLimits) -> Result<(), Error> {
        let bad = |field, reason: String| Error::BadInput {
            source_index: None,
            field,
            reason,
        };
        let unfit = |field, reason: String| Error::Unfit {
            source_index: None,
            field,
            reason,
        };
        if self.sources.is_empty() {
            return Err(bad("sources", "give at least one source".into()));
        }
        if self.sources.len() > limits.max_sources {
            return Err(bad(
                "sources",
                format!(
                    "{} sources; at most {} ([services.oracle] max_sources)",
                    self.sources.len(),
                    limits.max_sources
                ),
            ));
        }
        let a = &self.aggregation;
        if a.min_agreeing == 0 {
            return Err(bad(
                "aggregation.min_agreeing",
                "aggregation.min_agreeing must be at least 1".into(),
            ));
        }
        if a.min_agreeing > self.sources.len() {
            return Err(unfit(
                "aggregation.min_agreeing",
                format!(
                    "aggregation.min_agreeing must be from 1 to the number of sources ({})",
                    self.sources.len()
                ),
            ));
        }
        if let Some(d) = a.max_deviation
            && !(d.is_finite() && d >= 0.0)
        {
            return Err(bad(
                "aggregation.max_deviation",
                "aggregation.max_deviation must be a finite fraction of 0 or more".into(),
            ));
        }
        if a.max_deviation.is_some() && a.method != AggregationMethod::Median {
            return Err(unfit(
                "aggregation.max_deviation",
                "aggregation.max_deviation applies to median only".into(),
            ));
        }
        for (i, s) in self.sources.iter().enumerate() {
            let at = |field, reason: String| Error::BadInput {
                source_index: Some(i),
                field,
                reason,
            };
            let unfit_at = |field, reason: String| Error::Unfit {
                source_index: Some(i),
                field,
                reason,
            };
            if s.headers.len() > MAX_HEADERS {
                return Err(at("headers", format!("at most {MAX_HEADERS} headers")));
            }
            for name in s.headers.keys() {
                if let Some(why) = refused_header(name) {
                    // A name that is not a token breaks the document; a token the oracle will
                    // not send does not.
                    let reason = format!("header {name:?} is not sent: {why}");
                    return Err(if is_token(name) {
                        unfit_at("headers", reason)
                    } else {
                        at("headers", reason)
                    });
                }
            }
            match (&s.method, &s.body) {
                (Method::Get, Some(_)) => {
                    return Err(unfit_at("body", "a GET sends no body".into()));
                }
                (_, Some(b)) if b.len() > MAX_REQUEST_BODY => {
                    return Err(at(
                        "body",
                        format!("the body is over {MAX_REQUEST_BODY} bytes"),
                    ));
                }
                _ => {}
            }
            match &s.extract {
                Extraction::JsonPath(p) => {
                    serde_json_path::JsonPath::parse(p).map_err(|e| {
                        unfit_at("extract.json_path", format!("extract.json_path {p:?}: {e}"))
                    })?;
                }
                Extraction::Script(code) if code.len() > MAX_SCRIPT_BYTES => {
                    return Err(at(
                        "extract.script",
                        format!("extract.script is over {MAX_SCRIPT_BYTES} bytes"),
                    ));
                }
                Extraction::Script(_) => {}
            }
        }
        Ok(())
    }

    /// SHA-256 of the request's canonical JSON (keys sorted, no spaces): what the report commits to.
    pub fn hash(&self) -> String {
        let value = serde_json::to_value(self).expect("a request serializes");
        hex::encode(Sha256::digest(
            crate::canonical::canonical_json(&value).as_bytes(),
        ))
    }
}

/// Why a source's answer gives no value by its JSONPath; the source's report says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotExtracted(String);

/// The one value `path` selects in `body`, a source's answer as fetched (the source's bytes, not
/// ours: the fuzz targets in `fuzz/` feed it any).
pub fn extract_json_path(path: &str, body: &[u8]) -> Result<serde_json::Value, NotExtracted> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| NotExtracted(format!("the body is not JSON: {e}")))?;
    let path = serde_json_path::JsonPath::parse(path)
        .map_err(|e| NotExtracted(format!("bad JSONPath: {e}")))?;
    let nodes = path.query(&json).all();
    match nodes.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(NotExtracted(format!(
            "the JSONPath {path} matches nothing in the body"
        ))),
        many => Err(NotExtracted(format!(
            "the JSONPath {path} matches {} values; make it select one",
            many.len()
        ))),
    }
}
