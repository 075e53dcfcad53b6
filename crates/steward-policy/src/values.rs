//! Checking request values against declared attribute types, in plain Rust,
//! so a decision need not run Cedar's schema-directed parsing on every call.
//! Declared types are Cedar types (`String`, `Long`, `Bool`, `Set<T>`, a
//! record `{ ... }`, with `?` for optional); entity and extension types are
//! left to Cedar's evaluation (an error there denies when it is a guardrail).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use steward_core::Error;
use steward_types::ErrorCode;

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() => "an integer",
        Value::Number(_) => "a decimal number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn matches(ty: &str, v: &Value) -> bool {
    let ty = ty.trim();
    match ty {
        "String" => v.is_string(),
        "Long" => v.is_i64(),
        "Bool" => v.is_boolean(),
        _ if ty.starts_with("Set<") && ty.ends_with('>') => {
            let inner = &ty[4..ty.len() - 1];
            v.as_array()
                .is_some_and(|items| items.iter().all(|i| matches(inner, i)))
        }
        _ if ty.starts_with('{') => v.is_object(),
        _ => true,
    }
}

/// Check `values` against `declared` (name → type): every required attribute
/// present, every present one of its type. Undeclared values are the
/// caller's to drop.
pub fn check_attributes(
    what: &str,
    declared: &BTreeMap<String, String>,
    values: &Map<String, Value>,
) -> Result<(), Error> {
    for (name, ty) in declared {
        let ty = ty.trim();
        let (base, optional) = match ty.strip_suffix('?') {
            Some(b) => (b.trim(), true),
            None => (ty, false),
        };
        match values.get(name) {
            None if optional => {}
            None => {
                return Err(Error::new(
                    ErrorCode::InvalidEntity,
                    format!("{what}: the required attribute '{name}' ({base}) is missing"),
                )
                .with_details(serde_json::json!({ "attribute": name, "type": base })));
            }
            Some(v) if !matches(base, v) => {
                return Err(Error::new(
                    ErrorCode::InvalidEntity,
                    format!("{what}: attribute '{name}' must be {base}, not {}", kind(v)),
                )
                .with_details(serde_json::json!({ "attribute": name, "type": base })));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_and_presence() {
        let declared: BTreeMap<String, String> = [
            ("a".to_string(), "String".to_string()),
            ("n".to_string(), "Long?".to_string()),
            ("tags".to_string(), "Set<String>?".to_string()),
        ]
        .into();
        let ok = json!({"a": "x", "n": 3, "tags": ["t"]});
        assert!(check_attributes("resource", &declared, ok.as_object().unwrap()).is_ok());
        assert!(
            check_attributes(
                "resource",
                &declared,
                json!({"a": "x"}).as_object().unwrap()
            )
            .is_ok()
        );
        let missing = check_attributes("resource", &declared, json!({"n": 1}).as_object().unwrap())
            .unwrap_err();
        assert!(missing.message.contains("required attribute 'a'"));
        let wrong = check_attributes(
            "context",
            &declared,
            json!({"a": "x", "n": "lots"}).as_object().unwrap(),
        )
        .unwrap_err();
        assert!(
            wrong.message.contains("'n' must be Long, not a string"),
            "{}",
            wrong.message
        );
        assert!(
            check_attributes(
                "r",
                &declared,
                json!({"a": "x", "n": 1.5}).as_object().unwrap()
            )
            .is_err()
        );
        assert!(
            check_attributes(
                "r",
                &declared,
                json!({"a": "x", "tags": [1]}).as_object().unwrap()
            )
            .is_err()
        );
    }
}
