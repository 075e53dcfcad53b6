//! Tool arguments as `context.arguments` for policies.
//!
//! A tool's arguments are arbitrary JSON; Cedar compares strings, whole
//! numbers, booleans, sets and records, and policies are validated in strict
//! mode against the declared type of `arguments` in the `call_tool` action's
//! context (for example `{ amount?: Long, path?: String }`). So only declared
//! fields are kept (a policy cannot name any other), each converted to its
//! declared type; a declared field whose value cannot be read as that type
//! refuses the call with a message saying which argument and why, rather
//! than letting a guardrail silently not match.

use serde_json::{Map, Value};

/// A Cedar type, as far as argument conversion cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CedarType {
    String,
    Long,
    Bool,
    Set(Box<CedarType>),
    /// Fields: name, optional, type.
    Record(Vec<(String, bool, CedarType)>),
    /// Entity and extension types: passed through as given.
    Other,
}

/// Parse a declared Cedar type (`{ amount?: Long, tags: Set<String> }`).
pub(crate) fn parse_type(text: &str) -> Result<CedarType, String> {
    let mut p = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    let ty = p.ty()?;
    p.skip_ws();
    if p.at != p.chars.len() {
        return Err(format!("unexpected text at position {} of '{text}'", p.at));
    }
    Ok(ty)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn skip_ws(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.at).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> String {
        self.skip_ws();
        let start = self.at;
        loop {
            match self.chars.get(self.at) {
                Some(c) if c.is_alphanumeric() || *c == '_' => self.at += 1,
                // `::` joins a namespace (`__cedar::String`); a lone `:`
                // ends a record attribute's name.
                Some(':') if self.chars.get(self.at + 1) == Some(&':') => self.at += 2,
                _ => break,
            }
        }
        self.chars[start..self.at].iter().collect()
    }

    fn quoted(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.chars.get(self.at).copied() {
                None => return Err("unterminated string".into()),
                Some('"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    if let Some(c) = self.chars.get(self.at + 1) {
                        out.push(*c);
                    }
                    self.at += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn ty(&mut self) -> Result<CedarType, String> {
        if self.eat('{') {
            let mut fields = Vec::new();
            loop {
                if self.eat('}') {
                    return Ok(CedarType::Record(fields));
                }
                let name = if self.eat('"') {
                    self.quoted()?
                } else {
                    self.ident()
                };
                if name.is_empty() {
                    return Err("expected an attribute name".into());
                }
                let optional = self.eat('?');
                if !self.eat(':') {
                    return Err(format!("expected ':' after '{name}'"));
                }
                let ty = self.ty()?;
                fields.push((name, optional, ty));
                if !self.eat(',') {
                    if self.eat('}') {
                        return Ok(CedarType::Record(fields));
                    }
                    return Err("expected ',' or '}' in a record type".into());
                }
            }
        }
        let name = self.ident();
        let base = name.rsplit("::").next().unwrap_or_default();
        match base {
            "String" => Ok(CedarType::String),
            "Long" => Ok(CedarType::Long),
            "Bool" | "Boolean" => Ok(CedarType::Bool),
            "Set" => {
                if !self.eat('<') {
                    return Err("expected '<' after Set".into());
                }
                let inner = self.ty()?;
                if !self.eat('>') {
                    return Err("expected '>' closing Set<...>".into());
                }
                Ok(CedarType::Set(Box::new(inner)))
            }
            "" => Err("expected a type".into()),
            _ => Ok(CedarType::Other),
        }
    }
}

/// `value` as the declared `ty`; `path` names it in messages.
fn conform(path: &str, ty: &CedarType, value: &Value) -> Result<Value, String> {
    let wrong = |expected: &str| {
        Err(format!(
            "argument '{path}' must be {expected} for the policies that read it, not {value}"
        ))
    };
    match ty {
        CedarType::String => match value {
            Value::String(_) => Ok(value.clone()),
            _ => wrong("a string"),
        },
        CedarType::Long => match value {
            Value::Number(n) if n.is_i64() => Ok(value.clone()),
            Value::Number(n) => match n.as_f64() {
                // 150.0 is the whole number 150; 1.5 has no Long value.
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
                _ => wrong("a whole number"),
            },
            _ => wrong("a whole number"),
        },
        CedarType::Bool => match value {
            Value::Bool(_) => Ok(value.clone()),
            _ => wrong("true or false"),
        },
        CedarType::Set(inner) => match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| conform(&format!("{path}[{i}]"), inner, v))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => wrong("a list"),
        },
        CedarType::Record(fields) => match value {
            Value::Object(map) => record(path, fields, map).map(Value::Object),
            _ => wrong("an object"),
        },
        CedarType::Other => match value {
            Value::Null => wrong("a value"),
            _ => Ok(value.clone()),
        },
    }
}

fn record(
    path: &str,
    fields: &[(String, bool, CedarType)],
    map: &Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (name, optional, ty) in fields {
        let here = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        match map.get(name) {
            None | Some(Value::Null) if *optional => {}
            None | Some(Value::Null) => {
                return Err(format!(
                    "argument '{here}' is required by the policies on this tool and is missing"
                ));
            }
            Some(v) => {
                out.insert(name.clone(), conform(&here, ty, v)?);
            }
        }
    }
    Ok(out)
}

/// The arguments of a call as `context.arguments`, given the declared type
/// of `arguments` (None: not declared, so no policy reads them).
pub(crate) fn for_policies(
    declared: Option<&str>,
    arguments: &Map<String, Value>,
) -> Result<Option<Value>, String> {
    let Some(declared) = declared else {
        return Ok(None);
    };
    let declared = declared.trim().trim_end_matches('?').trim();
    match parse_type(declared) {
        Ok(CedarType::Record(fields)) => {
            record("", &fields, arguments).map(Value::Object).map(Some)
        }
        Ok(_) => Err(format!(
            "the call_tool action declares 'arguments' as {declared}; declare it as a record ({{ name?: Type, ... }})"
        )),
        Err(e) => Err(format!(
            "the call_tool action's 'arguments' type cannot be read: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn keeps_declared_fields_converted_and_drops_the_rest() {
        let declared =
            r#"{ amount?: Long, path?: String, "to"?: Set<String>, opts?: { dry: Bool } }?"#;
        let out = for_policies(
            Some(declared),
            &args(json!({"amount": 150.0, "path": "/tmp/x", "to": ["a"], "note": 1.5, "opts": {"dry": true, "x": null}})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            out,
            json!({"amount": 150, "path": "/tmp/x", "to": ["a"], "opts": {"dry": true}})
        );
        assert_eq!(
            for_policies(Some(declared), &args(json!({"amount": null}))).unwrap(),
            Some(json!({}))
        );
    }

    #[test]
    fn refuses_values_policies_could_not_compare() {
        let declared = "{ amount?: Long, required: String }";
        let e = for_policies(
            Some(declared),
            &args(json!({"amount": 1.5, "required": "x"})),
        )
        .unwrap_err();
        assert!(e.contains("'amount' must be a whole number"), "{e}");
        let e = for_policies(Some(declared), &args(json!({}))).unwrap_err();
        assert!(e.contains("'required' is required"), "{e}");
        assert!(for_policies(Some("Long"), &args(json!({}))).is_err());
        assert_eq!(
            parse_type("{ n: __cedar::Long, \"s t\"?: Set<String> }"),
            Ok(CedarType::Record(vec![
                ("n".into(), false, CedarType::Long),
                (
                    "s t".into(),
                    true,
                    CedarType::Set(Box::new(CedarType::String))
                ),
            ]))
        );
        assert_eq!(for_policies(None, &args(json!({"a": 1}))).unwrap(), None);
    }
}
