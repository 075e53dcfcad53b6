//! The canonical byte encoding of a log entry: the bytes its leaf hash
//! covers.

use serde_json::Value;

/// Encodes a JSON value canonically: object keys sorted, no whitespace.
///
/// - Keys are sorted by their UTF-8 bytes (Rust's `str` order) at every
///   depth. The sort is done here, on purpose: serde_json's `Map` is a
///   `BTreeMap` (sorted) only while its `preserve_order` feature is off, and
///   Cargo turns features on for the whole build. In Steward's server build
///   `cedar-policy-core` enables `preserve_order`, so a `Map` there keeps
///   insertion order and `serde_json::to_vec` would not be canonical.
/// - Strings are escaped exactly as serde_json escapes them (`"`, `\`, and
///   control characters; everything else is UTF-8 as is).
/// - Numbers are written as serde_json writes them.
///
/// This is canonical for Steward's entries, which hold strings, integers,
/// booleans and nulls; it is not RFC 8785 (JCS), which orders keys by UTF-16
/// code units and fixes a float format. Store these bytes and hash the stored
/// bytes when verifying: re-encoding a parsed value is only guaranteed to
/// give the same bytes for the same serde_json float formatter.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value);
    out
}

/// Appends `value` to `out` as [`canonical_json`] encodes it, for callers
/// that build a larger canonical document around it.
pub fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    write_value(out, value);
}

/// Appends `text` to `out` as a JSON string, escaped as [`canonical_json`]
/// escapes strings.
pub fn write_canonical_str(out: &mut Vec<u8>, text: &str) {
    write_string(out, text);
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => out.extend_from_slice(number.to_string().as_bytes()),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0x0f)]);
        } else {
            out.extend_from_slice(escape);
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_depth_and_whitespace_is_gone() {
        let value = json!({
            "zeta": 1,
            "alpha": {"b": [true, null, {"y": 2, "x": "s"}], "a": -3},
            "mid": 2.5
        });
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"alpha":{"a":-3,"b":[true,null,{"x":"s","y":2}]},"mid":2.5,"zeta":1}"#
        );
    }

    #[test]
    fn insertion_order_does_not_matter() {
        // With `preserve_order` on, these two maps iterate differently.
        let mut first = serde_json::Map::new();
        first.insert("b".into(), json!(1));
        first.insert("a".into(), json!(2));
        let mut second = serde_json::Map::new();
        second.insert("a".into(), json!(2));
        second.insert("b".into(), json!(1));
        assert_eq!(
            canonical_json(&Value::Object(first)),
            canonical_json(&Value::Object(second))
        );
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        let text = "quote\" backslash\\ nl\n tab\t nul\u{0} bell\u{7} del\u{7f} é 😀 /";
        assert_eq!(
            canonical_json(&json!(text)),
            serde_json::to_vec(&json!(text)).unwrap()
        );
    }

    /// Random JSON; floats only when asked, because serde_json's default
    /// parser may round a float's last bit, which spoils round trips.
    fn arbitrary_json(floats: bool) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::Bool),
            1 => any::<i64>().prop_map(|n| json!(n)),
            1 => any::<u64>().prop_map(|n| json!(n)),
            1 => any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(move |f| if floats { json!(f) } else { json!(f as i64) }),
            2 => any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A copy of `value` whose maps were built in sorted key order, so that
    /// serde_json writes them sorted whether or not `preserve_order` is on.
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            other => other.clone(),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_serde_json_on_sorted_values(value in arbitrary_json(true)) {
            prop_assert_eq!(canonical_json(&value), serde_json::to_vec(&sorted(&value)).unwrap());
        }

        #[test]
        fn parses_back_to_the_same_value_and_bytes(value in arbitrary_json(false)) {
            let bytes = canonical_json(&value);
            let parsed: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&parsed, &value);
            prop_assert_eq!(canonical_json(&parsed), bytes);
        }
    }
}
