//! Policy files: a `.cedar` file holds one or more policies, each named by an
//! `@id("...")` annotation, optionally with `@description("...")` and
//! `@owner("...")`.

use std::str::FromStr;

use cedar_policy::PolicySet;
use steward_core::{Error, validate};
use steward_types::{ErrorCode, PutPolicy};

/// Check what is stored beside a policy's text: its id (the Cedar policy id
/// decisions name it by), its description and its owner (shown with every
/// decision it determines, so printable and bounded). Every way in (the
/// policies route, `POST /v1/apply`, a policy file) holds policies to the
/// same rules.
pub fn check_policy_fields(policy: &PutPolicy) -> Result<(), Error> {
    check_policy_id(&policy.id)?;
    validate::text("description", &policy.description)?;
    // No owner is allowed (the annotation is optional); one given is a key:
    // a person's e-mail or a team's name, on one line.
    if !policy.owner.is_empty() {
        validate::key("owner", &policy.owner)?;
    }
    Ok(())
}

/// Settle a policy sent as JSON: the text's `@description` and `@owner`
/// fill fields left empty, and a field that says something else than the
/// text's annotation (`@id` included) is refused, since decisions would
/// otherwise show one and the policy file say the other. Then the fields
/// are checked as [`check_policy_fields`] checks them.
pub fn settle_policy_fields(policy: &mut PutPolicy) -> Result<(), Error> {
    // Text that does not parse is refused, with where, when it is validated
    // against the schema; there is nothing to compare here.
    crate::shape::check_shape(&policy.text, true)?;
    let parsed = crate::shape::roomy(|| {
        cedar_policy::Policy::parse(None, &policy.text)
            .ok()
            .map(|p| {
                let said = |key| p.annotation(key).map(str::to_string);
                [said("id"), said("description"), said("owner")]
            })
    });
    if let Some([id, description, owner]) = parsed {
        for (key, field, said) in [
            ("id", &mut policy.id, id),
            ("description", &mut policy.description, description),
            ("owner", &mut policy.owner, owner),
        ] {
            let Some(said) = said else {
                continue;
            };
            if field.is_empty() {
                *field = said;
            } else if *field != said {
                return Err(Error::invalid(
                    key,
                    format!(
                        "'{field}' differs from the text's @{key}(\"{said}\"): \
                         make them the same, or leave one out"
                    ),
                ));
            }
        }
    }
    check_policy_fields(policy)
}

/// A policy id: the Cedar policy id decisions name it by.
pub fn check_policy_id(id: &str) -> Result<(), Error> {
    let id_ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if id_ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "id",
            format!("'{id}' is not a policy id (letters, digits, '-', '_', '.')"),
        ))
    }
}

/// An `invalid_policy` error at a line of the file.
fn at_line(line: usize, message: String) -> Error {
    Error::new(ErrorCode::InvalidPolicy, format!("line {line}: {message}"))
        .with_details(serde_json::json!({ "line": line }))
}

/// The line a policy or template starts on: where its text is in the file.
fn line_of(file: &str, text: &str) -> usize {
    file.find(text)
        .map_or(1, |offset| crate::engine::line_column(file, offset).0)
}

/// Split a policy file into policies. Errors name the line (and column, for
/// Cedar's syntax errors).
pub fn split_policies(text: &str) -> Result<Vec<PutPolicy>, Error> {
    crate::shape::check_shape(text, false)?;
    crate::shape::roomy(|| split_here(text))
}

fn split_here(text: &str) -> Result<Vec<PutPolicy>, Error> {
    let set = PolicySet::from_str(text).map_err(|e| {
        let offset = miette::Diagnostic::labels(&e)
            .and_then(|mut l| l.next())
            .map(|l| l.offset());
        let (line, column) = offset.map_or((1, 1), |o| crate::engine::line_column(text, o));
        Error::new(
            ErrorCode::InvalidPolicy,
            format!("line {line}, column {column}: {e}"),
        )
        .with_details(serde_json::json!({ "line": line, "column": column }))
    })?;
    // A template (a policy with `?principal` or `?resource` slots) parses,
    // but Steward stores and decides with static policies only: leaving it
    // out would drop a guardrail without a word.
    if let Some(line) = set.templates().map(|t| line_of(text, &t.to_string())).min() {
        return Err(at_line(
            line,
            "templates are not supported: this policy has ?principal or ?resource slots; \
             name the principal and resource (or leave them unconstrained) instead"
                .to_owned(),
        ));
    }
    let mut out = Vec::new();
    for policy in set.policies() {
        let text_of = policy.to_string();
        let line = line_of(text, &text_of);
        let Some(id) = policy.annotation("id") else {
            let first = text_of.lines().next().unwrap_or_default();
            return Err(at_line(
                line,
                format!("a policy has no @id(\"...\") annotation: {first}"),
            ));
        };
        crate::shape::check_shape(&text_of, true).map_err(|e| at_line(line, e.message))?;
        let put = PutPolicy {
            id: id.to_string(),
            description: policy
                .annotation("description")
                .unwrap_or_default()
                .to_string(),
            owner: policy.annotation("owner").unwrap_or_default().to_string(),
            text: text_of,
        };
        check_policy_fields(&put).map_err(|e| at_line(line, e.message))?;
        out.push((line, put));
    }
    out.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    if let Some(w) = out.windows(2).find(|w| w[0].1.id == w[1].1.id) {
        let (first, second) = (w[0].0.min(w[1].0), w[0].0.max(w[1].0));
        return Err(at_line(
            second,
            format!(
                "two policies have the id '{}' (the other is on line {first})",
                w[0].1.id
            ),
        ));
    }
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_id_and_locates_errors() {
        let text = "@id(\"a\")\n@description(\"first\")\n@owner(\"sec@example.com\")\npermit(principal, action, resource);\n\n// second\n@id(\"b\")\nforbid(principal, action, resource);\n";
        let p = split_policies(text).unwrap();
        assert_eq!(
            p.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            (p[0].description.as_str(), p[0].owner.as_str()),
            ("first", "sec@example.com")
        );
        assert!(p[1].text.contains("forbid"));
        let err =
            split_policies("@id(\"a\")\npermit(principal, action, resource);\npermit(principal,")
                .unwrap_err();
        assert!(err.message.contains("line 3"), "{}", err.message);
        let err = split_policies("\npermit(principal, action, resource);").unwrap_err();
        assert!(err.message.starts_with("line 2: "), "{}", err.message);
        assert!(err.message.contains("@id"), "{}", err.message);
        let dup = "@id(\"a\") permit(principal, action, resource);\n@id(\"a\") forbid(principal, action, resource);";
        let err = split_policies(dup).unwrap_err();
        assert!(err.message.contains("two policies"), "{}", err.message);
        assert!(err.message.starts_with("line 2: "), "{}", err.message);
    }

    #[test]
    fn a_template_is_refused_with_its_line_not_dropped() {
        let text = "@id(\"ok.one\")\npermit(principal, action == Action::\"read_ticket\", resource);\n\n@id(\"guard.tmpl\")\nforbid(principal == ?principal, action, resource);\n";
        let err = split_policies(text).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPolicy);
        assert!(
            err.message
                .starts_with("line 4: templates are not supported"),
            "{}",
            err.message
        );
        assert_eq!(err.details.unwrap()["line"], 4);
        let only = "@id(\"t\") permit(principal, action, resource in ?resource);";
        assert!(
            split_policies(only)
                .unwrap_err()
                .message
                .contains("templates")
        );
    }

    #[test]
    fn ids_descriptions_and_owners_are_checked_where_they_are_written() {
        let err =
            split_policies("// x\n@id(\"a1 \")\npermit(principal, action, resource);").unwrap_err();
        assert!(
            err.message
                .starts_with("line 2: id: 'a1 ' is not a policy id"),
            "{}",
            err.message
        );
        let long = format!(
            "@id(\"a\") @description(\"{}\") permit(principal, action, resource);",
            "d".repeat(5000)
        );
        assert!(
            split_policies(&long)
                .unwrap_err()
                .message
                .contains("description: longer than 4096 bytes")
        );
        let policy = |owner: &str| PutPolicy {
            id: "p".into(),
            description: String::new(),
            owner: owner.into(),
            text: String::new(),
        };
        assert!(check_policy_fields(&policy("")).is_ok());
        assert!(check_policy_fields(&policy("sec@example.com")).is_ok());
        assert!(check_policy_fields(&policy("a\nb")).is_err());
        assert!(check_policy_fields(&policy(&"o".repeat(600))).is_err());
    }

    #[test]
    fn a_file_with_a_policy_too_deep_or_too_long_is_refused_with_its_line() {
        let deep = format!(
            "@id(\"ok\")\npermit(principal, action, resource);\n\n@id(\"deep\")\n\
             permit(principal, action, resource) when {{ {}true{} }};",
            "(".repeat(200),
            ")".repeat(200)
        );
        let e = split_policies(&deep).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPolicy);
        assert!(e.message.starts_with("line 5,"), "{}", e.message);
        let long = format!(
            "@id(\"ok\")\npermit(principal, action, resource);\n@id(\"long\")\n\
             permit(principal, action, resource) when {{ {} }};",
            vec!["1 < 2"; 1200].join(" || ")
        );
        let e = split_policies(&long).unwrap_err();
        assert!(
            e.message.starts_with("line 3:") && e.message.contains("1000 operators"),
            "{}",
            e.message
        );
        let mut put = PutPolicy {
            id: "deep".into(),
            description: String::new(),
            owner: String::new(),
            text: deep,
        };
        assert_eq!(
            settle_policy_fields(&mut put).unwrap_err().code,
            ErrorCode::InvalidPolicy
        );
    }

    #[test]
    fn annotations_fill_empty_fields_and_must_agree_with_given_ones() {
        let text = "@id(\"a\") @description(\"reads\") @owner(\"sec@example.com\")\n\
                    permit(principal, action, resource);";
        let put = |id: &str, description: &str, owner: &str| PutPolicy {
            id: id.into(),
            description: description.into(),
            owner: owner.into(),
            text: text.into(),
        };
        let mut filled = put("a", "", "");
        settle_policy_fields(&mut filled).unwrap();
        assert_eq!(filled, put("a", "reads", "sec@example.com"));
        let mut same = put("a", "reads", "sec@example.com");
        settle_policy_fields(&mut same).unwrap();
        for (mut bad, field) in [
            (put("b", "", ""), "id"),
            (put("a", "writes", ""), "description"),
            (put("a", "", "ops@example.com"), "owner"),
        ] {
            let e = settle_policy_fields(&mut bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{field}");
            assert!(e.message.contains(&format!("@{field}(")), "{}", e.message);
        }
        // Unparsable text is left to the schema check, which says where.
        let mut broken = PutPolicy {
            text: "permit(".into(),
            ..put("a", "", "")
        };
        settle_policy_fields(&mut broken).unwrap();
    }
}
