//! The Cedar schema of a tenant: Steward's own entity types plus the resource
//! types and actions the tenant declares.
//!
//! ```text
//! entity Team; entity Role; entity Persona;
//! entity Human in [Team, Role] { email, external_id, active, display_name };
//! entity Agent in [Team, Role, Persona] { name, owner, risk_tier, classifications,
//!     labels (Set<String> of "key=value"), depth, platform, model, purpose,
//!     persona, team, active, orphaned };
//! entity <declared type> { <declared attributes> };
//! action "<declared action>" appliesTo { principal: [Agent, Human],
//!     resource: [<its types>], context: { <declared context> } };
//! ```

use std::fmt::Write as _;

use steward_core::Error;
use steward_types::{ActionDef, ErrorCode, PutAction, PutResourceType};

/// Entity types Steward defines itself; declared types may not reuse them.
pub const BUILTIN_TYPES: &[&str] = &[
    "Agent", "Human", "Team", "Role", "Persona", "Action", "Tenant",
];

/// Built-in types that may also be the resource of an action.
pub const BUILTIN_RESOURCE_TYPES: &[&str] = &["Agent", "Human", "Team"];

const RESERVED: &[&str] = &[
    "true",
    "false",
    "if",
    "then",
    "else",
    "in",
    "is",
    "like",
    "has",
    "principal",
    "action",
    "resource",
    "context",
    "permit",
    "forbid",
    "when",
    "unless",
    "__cedar",
];

const BASE: &str = r#"entity Team;
entity Role;
entity Persona;
entity Human in [Team, Role] {
  "email": String,
  "external_id": String,
  "display_name": String,
  "active": Bool,
};
entity Agent in [Team, Role, Persona] {
  "name": String,
  "owner": String,
  "risk_tier": String,
  "classifications": Set<String>,
  "labels": Set<String>,
  "depth": Long,
  "platform": String,
  "model": String,
  "purpose": String,
  "persona": String,
  "team": String,
  "active": Bool,
  "orphaned": Bool,
};
"#;

/// Check a resource type declaration before it reaches Cedar.
pub fn check_resource_type(rt: &PutResourceType) -> Result<(), Error> {
    check_identifier("name", &rt.name)?;
    if BUILTIN_TYPES.contains(&rt.name.as_str()) {
        return Err(schema_error(format!(
            "name: '{}' is one of Steward's own entity types",
            rt.name
        )));
    }
    for (attr, ty) in &rt.attributes {
        check_attribute("attributes", attr, ty)?;
    }
    Ok(())
}

/// Check an action declaration; `known_types` are the declared resource types.
pub fn check_action(action: &PutAction, known_types: &[String]) -> Result<(), Error> {
    if action.name.is_empty()
        || action.name.len() > 128
        || action.name.chars().any(|c| c.is_control())
    {
        return Err(schema_error(
            "name: an action name has 1 to 128 printable characters",
        ));
    }
    if action.resource_types.is_empty() {
        return Err(schema_error(
            "resource_types: an action applies to at least one resource type",
        ));
    }
    for t in &action.resource_types {
        if !BUILTIN_RESOURCE_TYPES.contains(&t.as_str()) && !known_types.contains(t) {
            return Err(Error::new(
                ErrorCode::UnknownResourceType,
                format!(
                    "resource_types: '{t}' is not a declared resource type (declare it first, or use Agent, Human or Team)"
                ),
            ));
        }
    }
    for (attr, ty) in &action.context {
        check_attribute("context", attr, ty)?;
    }
    Ok(())
}

fn schema_error(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidSchema, message)
}

fn check_identifier(field: &str, name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
        && !RESERVED.contains(&name);
    if ok {
        Ok(())
    } else {
        Err(schema_error(format!(
            "{field}: '{name}' is not a Cedar identifier (letters, digits, '_', not starting with a digit, not a keyword)"
        )))
    }
}

fn check_attribute(field: &str, name: &str, ty: &str) -> Result<(), Error> {
    if name.is_empty()
        || name.len() > 64
        || name
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(schema_error(format!(
            "{field}: '{name}' is not a valid attribute name"
        )));
    }
    let base = ty.trim().trim_end_matches('?').trim();
    if base.is_empty() || ty.contains(';') || ty.contains("//") {
        return Err(schema_error(format!(
            "{field}.{name}: '{ty}' is not a Cedar type (String, Long, Bool, Set<String>, a record {{ ... }}; add '?' for optional)"
        )));
    }
    // Values are checked against the type as Steward reads it, so a type
    // it cannot read is refused here rather than fitting no value later.
    crate::values::AttrType::parse(base).map_err(|e| {
        schema_error(format!(
            "{field}.{name}: '{ty}' is not a type Steward can check ({e}); use String, Long, Bool, \
             decimal, ipaddr, datetime, duration, an entity type, Set<T> or a record {{ name: T, other?: T }}"
        ))
    })?;
    Ok(())
}

fn attribute_lines(out: &mut String, attrs: &std::collections::BTreeMap<String, String>) {
    for (name, ty) in attrs {
        let ty = ty.trim();
        let (ty, optional) = match ty.strip_suffix('?') {
            Some(t) => (t.trim(), "?"),
            None => (ty, ""),
        };
        let _ = writeln!(out, "  \"{name}\"{optional}: {ty},");
    }
}

/// The Cedar schema text for the declarations.
pub fn schema_text<'a>(
    resource_types: impl IntoIterator<Item = (&'a str, &'a std::collections::BTreeMap<String, String>)>,
    actions: &[ActionDef],
) -> String {
    let mut out = String::from(BASE);
    for (name, attrs) in resource_types {
        let _ = writeln!(out, "entity {name} {{");
        attribute_lines(&mut out, attrs);
        out.push_str("};\n");
    }
    for action in actions {
        let name = action.name.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            out,
            "action \"{name}\" appliesTo {{\n  principal: [Agent, Human],\n  resource: [{}],\n  context: {{",
            action.resource_types.join(", ")
        );
        attribute_lines(&mut out, &action.context);
        out.push_str("  }\n};\n");
    }
    out
}
