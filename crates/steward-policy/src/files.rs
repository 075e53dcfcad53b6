//! Policy files: a `.cedar` file holds one or more policies, each named by an
//! `@id("...")` annotation, optionally with `@description("...")` and
//! `@owner("...")`.

use std::str::FromStr;

use cedar_policy::PolicySet;
use steward_core::Error;
use steward_types::{ErrorCode, PutPolicy};

/// Split a policy file into policies. Errors name the line and column.
pub fn split_policies(text: &str) -> Result<Vec<PutPolicy>, Error> {
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
    let mut out = Vec::new();
    for policy in set.policies() {
        let text = policy.to_string();
        let Some(id) = policy.annotation("id") else {
            let first = text.lines().next().unwrap_or_default();
            return Err(Error::new(
                ErrorCode::InvalidPolicy,
                format!("a policy has no @id(\"...\") annotation: {first}"),
            ));
        };
        out.push(PutPolicy {
            id: id.to_string(),
            description: policy
                .annotation("description")
                .unwrap_or_default()
                .to_string(),
            owner: policy.annotation("owner").unwrap_or_default().to_string(),
            text,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(w) = out.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(Error::new(
            ErrorCode::InvalidPolicy,
            format!("two policies have the id '{}'", w[0].id),
        ));
    }
    Ok(out)
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
        assert!(
            split_policies("permit(principal, action, resource);")
                .unwrap_err()
                .message
                .contains("@id")
        );
        let dup = "@id(\"a\") permit(principal, action, resource);\n@id(\"a\") forbid(principal, action, resource);";
        assert!(
            split_policies(dup)
                .unwrap_err()
                .message
                .contains("two policies")
        );
    }
}
