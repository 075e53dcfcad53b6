//! Bounds on a policy's shape, checked on its text before Cedar parses it.
//!
//! Cedar's parser, validator and the trees they build recurse once per
//! level of nesting and once per operator in a chain (`a || b || c ...`
//! becomes a tree as deep as the chain is long), with no limit of their
//! own: 150 nested parentheses, or a chain of about 5 000 `||`, overflowed
//! a server thread's stack and took the whole process down. So a policy
//! may nest at most [`MAX_NESTING`] deep and hold at most [`MAX_OPERATORS`]
//! operators, and the work on policies runs with [`ROOMY_STACK`] of stack.

use steward_core::Error;
use steward_types::ErrorCode;

/// The deepest a policy may nest parentheses, brackets and braces.
pub const MAX_NESTING: usize = 32;

/// The most operators (`||`, `&&`, comparisons, arithmetic, `!`, `.`,
/// `in`, `has`, `like`, `is`) one policy may hold.
pub const MAX_OPERATORS: usize = 1000;

/// The most bytes of Cedar text one policy may have.
pub const MAX_TEXT: usize = 64 * 1024;

/// The stack policy work gets when it moves: enough for a policy at the
/// bounds above even in a debug build (about 10 KiB per operator there).
pub(crate) const ROOMY_STACK: usize = 64 * 1024 * 1024;

/// Run `work` (parsing, validating, compiling policies) with room on the
/// stack for policies at the bounds: on a fresh [`ROOMY_STACK`] unless
/// half of one is left already (work nested in work stays where it is).
pub(crate) fn roomy<R>(work: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(ROOMY_STACK / 2, ROOMY_STACK, work)
}

/// Check that `text` (one policy, or a file of them when `per_policy` is
/// false: the operator count then is not checked) stays within the bounds.
/// The error is `invalid_policy` with the line.
pub fn check_shape(text: &str, per_policy: bool) -> Result<(), Error> {
    if per_policy && text.len() > MAX_TEXT {
        return Err(Error::new(
            ErrorCode::InvalidPolicy,
            format!(
                "the policy's text is {} bytes, more than the {MAX_TEXT} a policy may have: \
                 split it into several policies",
                text.len()
            ),
        ));
    }
    let bytes = text.as_bytes();
    let (mut depth, mut operators) = (0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        match b {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if next == Some(b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(at(
                        text,
                        i,
                        format!(
                            "parentheses, brackets or braces nest more than {MAX_NESTING} deep"
                        ),
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'|' | b'&' | b'=' | b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'.' => {
                operators += 1;
                // `||`, `&&`, `==`, `!=`, `<=`, `>=` are one operator each.
                if matches!(
                    (b, next),
                    (b'|', Some(b'|'))
                        | (b'&', Some(b'&'))
                        | (b'=' | b'!' | b'<' | b'>', Some(b'='))
                ) {
                    i += 1;
                }
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while i + 1 < bytes.len()
                    && (bytes[i + 1].is_ascii_alphanumeric() || bytes[i + 1] == b'_')
                {
                    i += 1;
                }
                if matches!(&text[start..=i], "in" | "has" | "like" | "is") {
                    operators += 1;
                }
            }
            _ => {}
        }
        if per_policy && operators > MAX_OPERATORS {
            return Err(at(
                text,
                i,
                format!(
                    "the policy has more than {MAX_OPERATORS} operators: test membership \
                     with a set (`[\"a\", \"b\"].contains(resource.name)`) rather than a \
                     chain of `||`, or split it into several policies"
                ),
            ));
        }
        i += 1;
    }
    Ok(())
}

fn at(text: &str, offset: usize, message: String) -> Error {
    let (line, column) = crate::engine::line_column(text, offset);
    Error::new(
        ErrorCode::InvalidPolicy,
        format!("line {line}, column {column}: {message}"),
    )
    .with_details(serde_json::json!({ "line": line, "column": column }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!(
            "permit(principal, action, resource) when {{ {}true{} }};",
            "(".repeat(levels),
            ")".repeat(levels)
        )
    }

    fn chain(terms: usize) -> String {
        format!(
            "permit(principal, action, resource) when {{ {} }};",
            vec!["1 < 2"; terms].join(" || ")
        )
    }

    #[test]
    fn deep_or_long_policies_are_refused_before_cedar_parses_them() {
        assert!(check_shape(&nested(MAX_NESTING - 2), true).is_ok());
        let e = check_shape(&nested(200), true).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPolicy);
        assert!(e.message.contains("nest more than 32"), "{}", e.message);
        assert!(check_shape(&chain(300), true).is_ok());
        let e = check_shape(&chain(5000), true).unwrap_err();
        assert!(
            e.message.contains("more than 1000 operators"),
            "{}",
            e.message
        );
        assert!(check_shape(&"x".repeat(MAX_TEXT + 1), true).is_err());
        // A file of many policies is not one long policy.
        let file = (0..600)
            .map(|i| format!("@id(\"p{i}\") {}", chain(2)))
            .collect::<String>();
        assert!(check_shape(&file, false).is_ok());
    }

    #[test]
    fn strings_and_comments_do_not_count() {
        let text = format!(
            "// (((((((((((((((((((((((((((((((((((( || || ||\n\
             permit(principal, action, resource) when {{ resource.name == \"{}\\\"((\" }};",
            "((((||&&".repeat(500)
        );
        assert!(check_shape(&text, true).is_ok());
    }

    #[test]
    fn policies_at_the_bounds_parse_and_validate_without_overflowing() {
        let text = format!(
            "permit(principal, action, resource) when {{ {}{}{} }};",
            "(".repeat(MAX_NESTING - 2),
            vec!["1 < 2"; MAX_OPERATORS / 2 - 20].join(" && "),
            ")".repeat(MAX_NESTING - 2)
        );
        check_shape(&text, true).unwrap();
        let parsed = roomy(|| {
            cedar_policy::Policy::parse(None, &text)
                .ok()
                .map(|p| p.to_string())
        });
        assert!(parsed.is_some());
    }
}
