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
    if looks_like_id(value) {
        return Err(Error::invalid(
            field,
            format!(
                "'{value}' has the form of a Steward id (a prefix, '_', 32 hex digits); lookups take an id or a name, so a name may not look like an id"
            ),
        ));
    }
    Ok(())
}

/// Whether `value` has the form of the ids the store makes (`agt_` and 32
/// lower-case hex digits).
fn looks_like_id(value: &str) -> bool {
    value.split_once('_').is_some_and(|(prefix, rest)| {
        (2..=5).contains(&prefix.len())
            && prefix.bytes().all(|b| b.is_ascii_lowercase())
            && rest.len() == 32
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A person's name as they write it (any script: "Élodie Núñez", "李雷"):
/// 1 to 128 characters, no control characters, not blank.
pub fn display_name(field: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() || value.chars().count() > 128 || value.chars().any(char::is_control)
    {
        return Err(Error::invalid(
            field,
            format!(
                "'{value}' is not a valid display name (1-128 characters, no control characters)"
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
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(Error::invalid(
            field,
            format!("'{value}' is not an e-mail address"),
        ));
    }
    Ok(())
}

/// Free text no longer than [`MAX_TEXT`], without NUL characters (which
/// PostgreSQL cannot store).
pub fn text(field: &str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_TEXT {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_TEXT} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid(field, "contains a NUL character"));
    }
    Ok(())
}

/// Longest identifier accepted where one is free-form (a resource's id,
/// a type or action name in a decision, an external id): it is indexed.
pub const MAX_KEY: usize = 512;

/// A free-form identifier: 1 to [`MAX_KEY`] bytes, no control characters.
pub fn key(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_KEY {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_KEY} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains a control character"));
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
    fn keys_and_text_refuse_what_a_store_cannot_keep() {
        assert!(key("id", "repo/steward#1").is_ok());
        assert!(key("id", "").is_err());
        assert!(key("id", "a\0b").is_err());
        assert!(key("id", &"x".repeat(MAX_KEY + 1)).is_err());
        assert!(text("description", "a\0b").is_err());
        assert!(text("description", "line one\nline two").is_ok());
        assert!(email("email", "nul\0@example.com").is_err());
        assert!(display_name("display_name", "Élodie Núñez").is_ok());
        assert!(display_name("display_name", "李雷").is_ok());
        assert!(display_name("display_name", " ").is_err());
        assert!(display_name("display_name", "a\nb").is_err());
    }

    #[test]
    fn names_and_emails() {
        assert!(name("name", "support-bot_1.v2").is_ok());
        assert!(name("name", "Code Review Bot").is_ok());
        for bad in ["", "-x", "a/b", "a\u{0}", "x ", &"a".repeat(129)] {
            assert!(name("name", bad).is_err(), "{bad:?}");
        }
        // Names may not pass for ids, which lookups prefer.
        for id_like in [
            "agt_0190e1c2a3b4c5d6e7f8091a2b3c4d5e",
            "hold_0190e1c2a3b4c5d6e7f8091a2b3c4d5e",
        ] {
            assert!(name("name", id_like).is_err(), "{id_like}");
        }
        for fine in [
            "agt_reviewer",
            "AGT_0190E1C2A3B4C5D6E7F8091A2B3C4D5E",
            "agt_0190e1c2a3b4c5d6e7f8091a2b3c4d5",
            "longprefix_0190e1c2a3b4c5d6e7f8091a2b3c4d5e",
        ] {
            assert!(name("name", fine).is_ok(), "{fine}");
        }
        assert!(email("email", "alice@example.com").is_ok());
        for bad in ["alice", "@x.com", "a@b", "a b@c.com", "a@.com"] {
            assert!(email("email", bad).is_err(), "{bad:?}");
        }
    }
}
