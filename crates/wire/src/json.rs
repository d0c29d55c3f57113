//! JSON kept as its text: a value that is carried, stored and answered but never looked into (a
//! script's result), without the tree `serde_json::Value` would build for it. A tree of small
//! values takes up to ten times its text in memory; the text takes its length.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A JSON value as its (valid, compact or not) text.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// `null`.
    pub fn null() -> JsonText {
        JsonText(RawValue::NULL.to_owned())
    }

    /// `text`, checked to be one JSON value.
    pub fn from_text(text: String) -> Result<JsonText, serde_json::Error> {
        RawValue::from_string(text).map(JsonText)
    }

    /// The text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// The value as a tree, for a caller that looks into it.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Never: the shortest JSON value has one byte.
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }
}

impl Default for JsonText {
    fn default() -> Self {
        JsonText::null()
    }
}

impl From<&serde_json::Value> for JsonText {
    fn from(value: &serde_json::Value) -> Self {
        JsonText(serde_json::value::to_raw_value(value).expect("a Value always serializes to JSON"))
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

/// Equal when they are the same value (whatever their spacing).
impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text() || self.value() == other.value()
    }
}

impl PartialEq<serde_json::Value> for JsonText {
    fn eq(&self, other: &serde_json::Value) -> bool {
        &self.value() == other
    }
}

impl PartialEq<JsonText> for serde_json::Value {
    fn eq(&self, other: &JsonText) -> bool {
        other == self
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::JsonText;

    #[test]
    fn json_text_keeps_its_text_and_compares_as_a_value() {
        let text = JsonText::from_text("[1, 2,  {\"a\": null}]".into()).expect("valid");
        assert_eq!(text, json!([1, 2, {"a": null}]));
        assert_eq!(text.text(), "[1, 2,  {\"a\": null}]");
        assert_eq!(
            serde_json::to_string(&json!({ "result": text })).expect("serializes"),
            r#"{"result":[1,2,{"a":null}]}"#
        );
        assert!(JsonText::from_text("[1,".into()).is_err());
        assert_eq!(JsonText::null(), json!(null));
        assert_eq!(JsonText::from(&json!({"b": true})).text(), r#"{"b":true}"#);
    }
}

/// A value that JSON must give as an object. serde's derived structs also read an array of their
/// fields in order (`[null, null]` for two optional fields), which the API's document does not
/// allow: request bodies, and fields whose every part is optional, are read through this instead
/// (`#[serde(deserialize_with = "wire::json::object")]`).
pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Object<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(Object(std::marker::PhantomData))
}

/// A request body: a JSON object, read as `T` (see [`object`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Object<T>, D::Error> {
        object(d).map(Object)
    }
}

#[cfg(test)]
mod object_tests {
    use serde::Deserialize;

    use super::Object;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Optional {
        a: Option<u32>,
        b: Option<u32>,
    }

    #[test]
    fn an_object_is_read_and_an_array_of_fields_is_refused() {
        let read = |t: &str| serde_json::from_str::<Object<Optional>>(t).map(|o| o.0);
        assert_eq!(
            read(r#"{"a": 1}"#).expect("an object"),
            Optional {
                a: Some(1),
                b: None
            }
        );
        assert!(
            serde_json::from_str::<Optional>("[null, null]").is_ok(),
            "serde's own reading"
        );
        let e = read("[null, null]").expect_err("an array");
        assert!(e.to_string().contains("a JSON object"), "{e}");
        let e = read(r#"{"c": 1}"#).expect_err("an unknown field");
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
