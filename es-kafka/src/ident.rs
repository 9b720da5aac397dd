//! Identifiers spliced into SQL (schema and slot names) must be plain.

use crate::error::SetupError;

/// Checks that `name` is a safe, unquoted PostgreSQL identifier (the same
/// rule es-postgres applies to its schema).
pub(crate) fn check(name: &str) -> Result<&str, SetupError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 48;
    if ok {
        Ok(name)
    } else {
        Err(SetupError::InvalidIdentifier(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rejects_anything_needing_quotes() {
        assert!(super::check("bank_1").is_ok());
        for bad in ["", "1bank", "Bank", "a-b", "a;drop", "a b"] {
            assert!(super::check(bad).is_err(), "{bad}");
        }
    }
}
