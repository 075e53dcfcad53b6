//! Input validation shared by every resource: names, e-mail addresses, text.

use crate::Error;

/// Longest free text accepted in a single field.
pub const MAX_TEXT: usize = 4096;

/// A name: 1 to 128 characters, starting with a letter or digit, then letters,
/// digits, `.`, `_`, `-` or spaces.
pub fn name(field: &str, value: &str) -> Result<(), Error> {
    let ok_start = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ' '));
    if value.is_empty() || value.len() > 128 || !ok_start || !ok_chars || value.ends_with(' ') {
        return Err(Error::invalid(
            field,
            format!(
                "'{value}' is not a valid name (1-128 characters: letters, digits, '.', '_', '-', spaces; starting with a letter or digit)"
            ),
        ));
    }
    Ok(())
}

/// A plausible e-mail address: one `@`, something on both sides, a dot in the domain.
pub fn email(field: &str, value: &str) -> Result<(), Error> {
    let mut parts = value.splitn(2, '@');
    let local = parts.next().unwrap_or_default();
    let domain = parts.next().unwrap_or_default();
    let ok = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && value.len() <= 254
        && !value.chars().any(char::is_whitespace);
    if !ok {
        return Err(Error::invalid(
            field,
            format!("'{value}' is not an e-mail address"),
        ));
    }
    Ok(())
}

/// Free text no longer than [`MAX_TEXT`].
pub fn text(field: &str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_TEXT {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_TEXT} bytes"),
        ));
    }
    Ok(())
}

/// A list without duplicates whose items are valid names.
pub fn name_list(field: &str, values: &[String]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for v in values {
        name(field, v)?;
        if !seen.insert(v) {
            return Err(Error::invalid(field, format!("'{v}' is listed twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_emails() {
        assert!(name("name", "support-bot_1.v2").is_ok());
        assert!(name("name", "Code Review Bot").is_ok());
        for bad in ["", "-x", "a/b", "a\u{0}", "x ", &"a".repeat(129)] {
            assert!(name("name", bad).is_err(), "{bad:?}");
        }
        assert!(email("email", "alice@example.com").is_ok());
        for bad in ["alice", "@x.com", "a@b", "a b@c.com", "a@.com"] {
            assert!(email("email", bad).is_err(), "{bad:?}");
        }
    }
}
