//! Declared attribute types, and request values checked against them and
//! made into Cedar values, in plain Rust: a decision need not run Cedar's
//! schema-directed parsing on every call, yet no value reaches a policy in
//! a type other than the one declared (a guardrail comparing
//! `context.target.env == "prod"` must never see `["prod"]` and let it
//! pass).
//!
//! Declared types are Cedar schema types: `String`, `Long`, `Bool` (also
//! spelt `__cedar::String` and so on), `Set<T>`, records `{ name: T,
//! "other"?: T }`, the extension types `decimal`, `ipaddr`, `datetime`
//! and `duration`, and entity types by name; `?` after a top-level
//! attribute's type makes it optional. Parsed once, when an engine is
//! built (or a declaration checked).

use std::collections::BTreeMap;
use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde_json::{Map, Value};
use steward_core::Error;
use steward_types::ErrorCode;

/// A declared type.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrType {
    /// `String`.
    String,
    /// `Long`: a 64-bit integer.
    Long,
    /// `Bool`.
    Bool,
    /// `Set<T>`.
    Set(Box<AttrType>),
    /// A record: its attributes.
    Record(Declared),
    /// An extension type.
    Extension(Extension),
    /// An entity of this type: given as its id, or `{"type", "id"}`.
    Entity(EntityTypeName),
    /// A type stored before Steward could read it: no value fits, so
    /// nothing unchecked reaches a policy (declare the attribute again).
    Unreadable(String),
}

/// Cedar's extension types, each given as the text its constructor takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    /// `decimal("12.5")`: up to four decimal places.
    Decimal,
    /// `ip("10.0.0.1")`, `ip("10.0.0.0/8")`.
    Ipaddr,
    /// `datetime("2026-11-29")`, `datetime("2026-11-29T09:00:00Z")`.
    Datetime,
    /// `duration("1h30m")`.
    Duration,
}

impl Extension {
    fn type_name(self) -> &'static str {
        match self {
            Extension::Decimal => "decimal",
            Extension::Ipaddr => "ipaddr",
            Extension::Datetime => "datetime",
            Extension::Duration => "duration",
        }
    }

    /// The constructor's name (`{"__extn": {"fn": ..., "arg": ...}}`).
    fn constructor(self) -> &'static str {
        match self {
            Extension::Ipaddr => "ip",
            other => other.type_name(),
        }
    }

    fn build(self, text: &str) -> RestrictedExpression {
        match self {
            Extension::Decimal => RestrictedExpression::new_decimal(text),
            Extension::Ipaddr => RestrictedExpression::new_ip(text),
            Extension::Datetime => RestrictedExpression::new_datetime(text),
            Extension::Duration => RestrictedExpression::new_duration(text),
        }
    }

    /// Whether Cedar takes `text` for a value of this type: the value is
    /// built into a throwaway entity, as a decision would build it.
    fn check(self, text: &str) -> Result<(), String> {
        let uid = EntityUid::from_type_name_and_id(
            EntityTypeName::from_str("Check").map_err(|e| e.to_string())?,
            EntityId::new("value"),
        );
        let attrs = std::collections::HashMap::from([("value".to_string(), self.build(text))]);
        cedar_policy::Entity::new(uid, attrs, Default::default())
            .map(|_| ())
            .map_err(|_| format!("'{text}' is not a well-formed {}", self.type_name()))
    }
}

/// Declared attributes: name → (type, optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared(BTreeMap<String, (AttrType, bool)>);

/// Where in a value a problem is (`target.env`), and what it is.
struct Misfit {
    path: Vec<String>,
    problem: String,
}

impl Misfit {
    fn new(problem: impl Into<String>) -> Misfit {
        Misfit {
            path: Vec::new(),
            problem: problem.into(),
        }
    }

    fn at(mut self, name: &str) -> Misfit {
        self.path.insert(0, name.to_string());
        self
    }

    fn into_error(self, what: &str) -> Error {
        let path = self.path.join(".");
        Error::new(
            ErrorCode::InvalidEntity,
            format!("{what}: attribute '{path}' {}", self.problem),
        )
        .with_details(serde_json::json!({ "attribute": path }))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() => "an integer",
        Value::Number(n) if n.is_u64() => "an integer over 2^63 - 1",
        Value::Number(_) => "a decimal number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl std::fmt::Display for AttrType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttrType::String => f.write_str("String"),
            AttrType::Long => f.write_str("Long"),
            AttrType::Bool => f.write_str("Bool"),
            AttrType::Set(inner) => write!(f, "Set<{inner}>"),
            AttrType::Record(_) => f.write_str("a record"),
            AttrType::Extension(e) => f.write_str(e.type_name()),
            AttrType::Entity(t) => write!(f, "an entity of type {t}"),
            AttrType::Unreadable(text) => write!(f, "'{text}'"),
        }
    }
}

impl AttrType {
    /// Parse a declared type (without a top-level `?`).
    pub fn parse(text: &str) -> Result<AttrType, String> {
        let mut p = Parser { rest: text };
        let ty = p.ty(0)?;
        p.skip_space();
        if !p.rest.is_empty() {
            return Err(format!("unexpected '{}' after the type", p.rest));
        }
        Ok(ty)
    }

    /// Check `v` against this type; with `build`, also make the Cedar value.
    fn fit(&self, v: &Value, build: bool) -> Result<Option<RestrictedExpression>, Misfit> {
        let wrong = || Misfit::new(format!("must be {self}, not {}", kind(v)));
        Ok(match (self, v) {
            (AttrType::String, Value::String(s)) => {
                build.then(|| RestrictedExpression::new_string(s.clone()))
            }
            (AttrType::Bool, Value::Bool(b)) => build.then(|| RestrictedExpression::new_bool(*b)),
            (AttrType::Long, Value::Number(n)) => {
                let n = n.as_i64().ok_or_else(wrong)?;
                build.then(|| RestrictedExpression::new_long(n))
            }
            (AttrType::Set(inner), Value::Array(items)) => {
                let mut built = Vec::with_capacity(if build { items.len() } else { 0 });
                for (i, item) in items.iter().enumerate() {
                    let one = inner.fit(item, build).map_err(|m| m.at(&i.to_string()))?;
                    built.extend(one);
                }
                build.then(|| RestrictedExpression::new_set(built))
            }
            (AttrType::Record(declared), Value::Object(fields)) => {
                let pairs = declared.fit(fields, build, &|_| true)?;
                match build {
                    // Names come from a map, so they are distinct.
                    true => Some(
                        RestrictedExpression::new_record(pairs)
                            .map_err(|e| Misfit::new(e.to_string()))?,
                    ),
                    false => None,
                }
            }
            (AttrType::Extension(e), v) => {
                let text = extension_text(*e, v).ok_or_else(wrong)?;
                if build {
                    Some(e.build(&text))
                } else {
                    // Not built (no policy reads it), but recorded: a value
                    // Cedar would refuse is refused whether or not a policy
                    // happens to read it.
                    e.check(&text).map_err(Misfit::new)?;
                    None
                }
            }
            (AttrType::Entity(ty), v) => {
                let id = entity_id(ty, v).ok_or_else(|| {
                    Misfit::new(format!(
                        "must be an entity of type {ty} (its id, or {{\"type\": \"{ty}\", \"id\": ...}}), not {}",
                        kind(v)
                    ))
                })?;
                build.then(|| {
                    RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                        ty.clone(),
                        EntityId::new(id),
                    ))
                })
            }
            (AttrType::Unreadable(text), _) => {
                return Err(Misfit::new(format!(
                    "has a declared type Steward cannot read ('{text}'): declare it again"
                )));
            }
            _ => return Err(wrong()),
        })
    }
}

/// The text an extension value is made from: a string, a number for a
/// decimal (`5` is `5.0`), or Cedar's `{"__extn": {"fn", "arg"}}`. Whether
/// the text is well formed is Cedar's to say when the value is built.
fn extension_text(e: Extension, v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if e == Extension::Decimal => Some(match n.as_i64() {
            Some(i) => format!("{i}.0"),
            None => n.to_string(),
        }),
        Value::Object(o) => {
            let call = o.get("__extn")?.as_object()?;
            let fits = call.get("fn")?.as_str()? == e.constructor();
            fits.then(|| call.get("arg")?.as_str().map(String::from))?
        }
        _ => None,
    }
}

/// The id of an entity value of type `ty`: the id itself, or an object
/// naming the type and id (Cedar's `__entity` escape too).
fn entity_id<'a>(ty: &EntityTypeName, v: &'a Value) -> Option<&'a str> {
    match v {
        Value::String(id) => Some(id),
        Value::Object(o) => {
            let o = match o.get("__entity") {
                Some(Value::Object(inner)) => inner,
                _ => o,
            };
            let named = o.get("type")?.as_str()?;
            (named == ty.to_string()).then_some(())?;
            o.get("id")?.as_str()
        }
        _ => None,
    }
}

impl Declared {
    /// Parse declarations already accepted once: one Steward cannot read is
    /// kept, as a type no value fits.
    pub fn parse_stored(declared: &BTreeMap<String, String>) -> Declared {
        Declared(
            declared
                .iter()
                .map(|(name, text)| {
                    let (ty, optional) = split_optional(text);
                    let parsed =
                        AttrType::parse(ty).unwrap_or_else(|_| AttrType::Unreadable(ty.into()));
                    (name.clone(), (parsed, optional))
                })
                .collect(),
        )
    }

    /// Check `values` (undeclared ones are left out, for the caller to
    /// drop); `what` names them in an error (`context`, `resource`).
    pub fn check(&self, what: &str, values: &Map<String, Value>) -> Result<(), Error> {
        self.fit(values, false, &|_| false)
            .map(|_| ())
            .map_err(|m| m.into_error(what))
    }

    /// Check `values` and make the Cedar values of the declared ones
    /// `wanted` (the others are only checked).
    pub fn build(
        &self,
        what: &str,
        values: &Map<String, Value>,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(String, RestrictedExpression)>, Error> {
        self.fit(values, true, wanted)
            .map_err(|m| m.into_error(what))
    }

    fn fit(
        &self,
        values: &Map<String, Value>,
        build: bool,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(String, RestrictedExpression)>, Misfit> {
        let mut built = Vec::new();
        for (name, (ty, optional)) in &self.0 {
            match values.get(name) {
                None if *optional => {}
                None => {
                    return Err(Misfit::new(format!("({ty}) is required and missing")).at(name));
                }
                Some(v) => {
                    let keep = build && wanted(name);
                    if let Some(value) = ty.fit(v, keep).map_err(|m| m.at(name))? {
                        built.push((name.clone(), value));
                    }
                }
            }
        }
        Ok(built)
    }

    /// Whether `name` is declared.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

fn split_optional(text: &str) -> (&str, bool) {
    let text = text.trim();
    match text.strip_suffix('?') {
        Some(ty) => (ty.trim(), true),
        None => (text, false),
    }
}

/// Records nest at most this deep in a declared type.
const MAX_DEPTH: usize = 16;

/// A recursive-descent reader of Cedar schema types.
struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected '{token}' at '{}'", self.rest))
        }
    }

    fn ident(&mut self) -> Option<&str> {
        self.skip_space();
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest.len());
        let first = self.rest.chars().next()?;
        if end == 0 || first.is_ascii_digit() {
            return None;
        }
        let (ident, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(ident)
    }

    /// A name with its namespace (`A::B::C`).
    fn path(&mut self) -> Result<String, String> {
        let at = self.rest;
        let mut name = self
            .ident()
            .ok_or_else(|| format!("expected a type at '{at}'"))?
            .to_string();
        while self.rest.starts_with("::") {
            self.rest = &self.rest[2..];
            let next = self
                .ident()
                .ok_or_else(|| format!("expected a name after '{name}::'"))?;
            name.push_str("::");
            name.push_str(next);
        }
        Ok(name)
    }

    fn ty(&mut self, depth: usize) -> Result<AttrType, String> {
        if depth > MAX_DEPTH {
            return Err(format!("types nest at most {MAX_DEPTH} deep"));
        }
        if self.eat("{") {
            return self.record(depth).map(AttrType::Record);
        }
        let name = self.path()?;
        let builtin = name.strip_prefix("__cedar::").unwrap_or(&name);
        Ok(match builtin {
            "String" => AttrType::String,
            "Long" => AttrType::Long,
            "Bool" => AttrType::Bool,
            "decimal" => AttrType::Extension(Extension::Decimal),
            "ipaddr" => AttrType::Extension(Extension::Ipaddr),
            "datetime" => AttrType::Extension(Extension::Datetime),
            "duration" => AttrType::Extension(Extension::Duration),
            "Set" if name == "Set" => {
                self.expect("<")?;
                let inner = self.ty(depth + 1)?;
                self.expect(">")?;
                AttrType::Set(Box::new(inner))
            }
            _ => AttrType::Entity(
                EntityTypeName::from_str(&name)
                    .map_err(|e| format!("'{name}' is not a type name: {e}"))?,
            ),
        })
    }

    /// A record's attributes, after its `{`.
    fn record(&mut self, depth: usize) -> Result<Declared, String> {
        let mut fields = BTreeMap::new();
        loop {
            if self.eat("}") {
                return Ok(Declared(fields));
            }
            let name = if self.eat("\"") {
                self.quoted()?
            } else {
                let at = self.rest;
                self.ident()
                    .ok_or_else(|| format!("expected an attribute name at '{at}'"))?
                    .to_string()
            };
            let optional = self.eat("?");
            self.expect(":")?;
            let ty = self.ty(depth + 1)?;
            if fields.insert(name.clone(), (ty, optional)).is_some() {
                return Err(format!("attribute '{name}' is declared twice"));
            }
            if !self.eat(",") {
                self.expect("}")?;
                return Ok(Declared(fields));
            }
        }
    }

    /// A quoted name's text, after its opening quote.
    fn quoted(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[i + 1..];
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\'))) => out.push(e),
                    _ => return Err("only \\\" and \\\\ may be escaped in a name".into()),
                },
                c => out.push(c),
            }
        }
        Err("a quoted name is not closed".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(pairs: &[(&str, &str)], values: Value) -> Result<(), String> {
        Declared::parse_stored(&declared(pairs))
            .check("context", values.as_object().unwrap())
            .map_err(|e| e.message)
    }

    #[test]
    fn types_and_presence() {
        let d = [("a", "String"), ("n", "Long?"), ("tags", "Set<String>?")];
        assert!(check(&d, json!({"a": "x", "n": 3, "tags": ["t"]})).is_ok());
        assert!(check(&d, json!({"a": "x"})).is_ok());
        let missing = check(&d, json!({"n": 1})).unwrap_err();
        assert!(missing.contains("'a' (String) is required"), "{missing}");
        let wrong = check(&d, json!({"a": "x", "n": "lots"})).unwrap_err();
        assert!(wrong.contains("'n' must be Long, not a string"), "{wrong}");
        assert!(check(&d, json!({"a": "x", "n": 1.5})).is_err());
        let big = check(&d, json!({"a": "x", "n": 9223372036854775808u64})).unwrap_err();
        assert!(big.contains("over 2^63"), "{big}");
        let inner = check(&d, json!({"a": "x", "tags": ["t", 1]})).unwrap_err();
        assert!(inner.contains("'tags.1' must be String"), "{inner}");
    }

    /// Inside a record every field is checked to its type: a guardrail on
    /// `context.target.env == "prod"` never sees a list, a number or an
    /// object there.
    #[test]
    fn records_are_checked_field_by_field() {
        let d = [("target", r#"{ "env": String, region?: Set<String> }"#)];
        assert!(check(&d, json!({"target": {"env": "prod"}})).is_ok());
        assert!(
            check(
                &d,
                json!({"target": {"env": "prod", "region": ["eu"], "x": 1}})
            )
            .is_ok()
        );
        for bad in [json!(["prod"]), json!(1), json!({"x": 1}), json!(null)] {
            let e = check(&d, json!({"target": {"env": bad}})).unwrap_err();
            assert!(e.contains("'target.env' must be String"), "{e}");
        }
        let e = check(&d, json!({"target": {}})).unwrap_err();
        assert!(e.contains("'target.env' (String) is required"), "{e}");
        let e = check(&d, json!({"target": "prod"})).unwrap_err();
        assert!(e.contains("'target' must be a record"), "{e}");
    }

    #[test]
    fn spellings_cedar_accepts_are_read() {
        for (text, ty) in [
            ("__cedar::String", AttrType::String),
            (" Set < Long > ", AttrType::Set(Box::new(AttrType::Long))),
            ("__cedar::decimal", AttrType::Extension(Extension::Decimal)),
            ("ipaddr", AttrType::Extension(Extension::Ipaddr)),
        ] {
            assert_eq!(AttrType::parse(text).unwrap(), ty, "{text}");
        }
        let d = [("env", "__cedar::String"), ("tags", "Set <String>")];
        assert!(check(&d, json!({"env": ["prod"]})).is_err());
        assert!(check(&d, json!({"env": "prod", "tags": "a"})).is_err());
        assert!(matches!(
            AttrType::parse("Human").unwrap(),
            AttrType::Entity(_)
        ));
        for bad in [
            "",
            "Set<",
            "Set<String",
            "{ a: }",
            "{ a String }",
            "String String",
            "1x",
        ] {
            assert!(AttrType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extensions_and_entities_take_their_forms() {
        let d = [("price", "decimal"), ("owner", "Human?")];
        assert!(check(&d, json!({"price": "5.25"})).is_ok());
        assert!(check(&d, json!({"price": 5})).is_ok());
        assert!(
            check(
                &d,
                json!({"price": {"__extn": {"fn": "decimal", "arg": "5.0"}}})
            )
            .is_ok()
        );
        assert!(check(&d, json!({"price": {"__extn": {"fn": "ip", "arg": "5.0"}}})).is_err());
        assert!(check(&d, json!({"price": true})).is_err());
        assert!(check(&d, json!({"price": "1.0", "owner": "hum_1"})).is_ok());
        assert!(
            check(
                &d,
                json!({"price": "1.0", "owner": {"type": "Human", "id": "h"}})
            )
            .is_ok()
        );
        let e = check(
            &d,
            json!({"price": "1.0", "owner": {"type": "Agent", "id": "h"}}),
        )
        .unwrap_err();
        assert!(e.contains("must be an entity of type Human"), "{e}");
    }

    #[test]
    fn malformed_extension_values_are_refused_even_unbuilt() {
        let d = [
            ("cost", "decimal?"),
            ("addr", "ipaddr?"),
            ("at", "datetime?"),
            ("for", "duration?"),
        ];
        for good in [
            json!({"cost": "1.25", "addr": "10.0.0.1", "at": "2026-11-29", "for": "1h30m"}),
            json!({"addr": "10.0.0.0/8", "at": "2026-11-29T12:00:00Z"}),
        ] {
            assert!(check(&d, good.clone()).is_ok(), "{good}");
        }
        for (bad, says) in [
            (json!({"cost": "not-a-decimal"}), "cost"),
            (json!({"addr": "999.1.1.1"}), "addr"),
            (json!({"at": "yesterday"}), "at"),
            (json!({"for": "long"}), "for"),
        ] {
            let e = check(&d, bad.clone()).unwrap_err();
            assert!(e.contains(says) && e.contains("well-formed"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_type_stored_before_it_could_be_read_fits_nothing() {
        let d = Declared::parse_stored(&declared(&[("x", "@doc(\"?\") String")]));
        let e = d
            .check("context", json!({"x": "a"}).as_object().unwrap())
            .unwrap_err();
        assert!(e.message.contains("declare it again"), "{}", e.message);
    }
}
