//! Canonical JSON: the exact bytes a report's signature and `request_hash` cover.

use serde_json::Value;

/// `value` as canonical JSON: object keys sorted by their UTF-8 bytes (which is Unicode code point
/// order, as Python's `sort_keys` has it), no insignificant whitespace, strings and numbers as
/// serde_json writes them.
///
/// The keys are sorted here rather than left to `serde_json::Map`: whether that map is sorted
/// depends on its `preserve_order` feature, which any crate in the build can turn on (dcap-qvl
/// does), and a signature must not change with the dependency graph.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).expect("a string serializes"));
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_json_sorts_keys_whatever_order_the_map_keeps() {
        // Built in reverse order: with serde_json's `preserve_order` on (as a dependency turns
        // it on in this build), the map keeps that order and only the writer can sort it.
        let mut inner = serde_json::Map::new();
        inner.insert("z".into(), json!(1));
        inner.insert("é".into(), json!("ü\n"));
        inner.insert("a".into(), json!([{"y": 1.5, "b": null}]));
        let mut outer = serde_json::Map::new();
        outer.insert("zz".into(), Value::Object(inner));
        outer.insert("Z".into(), json!(true));
        assert_eq!(
            canonical_json(&Value::Object(outer)),
            r#"{"Z":true,"zz":{"a":[{"b":null,"y":1.5}],"z":1,"é":"ü\n"}}"#
        );
    }
}
