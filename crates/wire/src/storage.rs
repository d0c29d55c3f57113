//! The storage service's requests and answers (`/v1/storage`). Single values travel raw, not as
//! JSON; a batch is JSON with its values in base64.

use serde::{Deserialize, Serialize};

/// The header carrying a value's version (the commit that wrote it).
pub const VERSION_HEADER: &str = "x-cloister-version";

/// `PUT /v1/storage/{key}`: stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stored {
    /// The key.
    pub key: String,
    /// The commit that wrote it.
    pub version: u64,
}

/// `DELETE /v1/storage/{key}`: deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deleted {
    /// The key.
    pub key: String,
    /// The commit that deleted it.
    pub version: u64,
    /// Always true.
    pub deleted: bool,
}

/// `POST /v1/storage`: the batch's commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Committed {
    /// The commit.
    pub version: u64,
}

/// One page of a listing; `next` is the `after` of the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = StoragePage)]
pub struct Page {
    /// The keys, in order.
    pub keys: Vec<Listed>,
    /// Pass as `after` for the next page; `None` on the last one.
    pub next: Option<String>,
}

/// A key in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Listed {
    /// The key.
    pub key: String,
    /// The commit that wrote it.
    pub version: u64,
}

/// A value with its version, as `GET /v1/storage/{key}` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The value, raw.
    pub data: Vec<u8>,
    /// The commit that wrote it.
    pub version: u64,
}

/// The body of `POST /v1/storage`: puts and deletes committed together, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// At least one.
    #[schema(min_items = 1)]
    pub writes: Vec<BatchWrite>,
}

/// `{"key": K, "value": BASE64}` or `{"key": K, "delete": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchWrite {
    pub key: String,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

/// A write is a put (a value, `delete` absent or false) or a delete (`delete: true`, no value):
/// the two shapes, each closed, as the API reads them.
impl utoipa::PartialSchema for BatchWrite {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let key = serde_json::json!({"type": "string", "minLength": 1, "description": "The key"});
        serde_json::from_value(serde_json::json!({
            "description": "`{\"key\": K, \"value\": BASE64}` or `{\"key\": K, \"delete\": true}`.",
            "oneOf": [
                {
                    "type": "object",
                    "title": "Put",
                    "required": ["key", "value"],
                    "properties": {
                        "key": key,
                        "value": {"type": "string", "format": "byte", "description": "Base64"},
                        "delete": {"type": "boolean", "enum": [false]},
                    },
                    "additionalProperties": false,
                },
                {
                    "type": "object",
                    "title": "Delete",
                    "required": ["key", "delete"],
                    "properties": {
                        "key": key,
                        "value": {"type": "null"},
                        "delete": {"type": "boolean", "enum": [true]},
                    },
                    "additionalProperties": false,
                },
            ],
        }))
        .expect("a schema")
    }
}

impl utoipa::ToSchema for BatchWrite {}
