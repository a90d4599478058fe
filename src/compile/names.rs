//! Naming rules shared by the validator and the drivers.

/// Longest DNS-1123 label Kubernetes accepts.
pub const MAX_LABEL_LEN: usize = 63;

/// Prefix of the environment variables ork sets itself; users may not define their own.
pub const RESERVED_ENV_PREFIX: &str = "ORK_";

/// Why `name` is not a DNS-1123 label, or `None` when it is one.
pub fn dns_label_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_LABEL_LEN {
        return Some(format!(
            "{:?} is {} characters long, at most {MAX_LABEL_LEN} are allowed",
            name,
            name.len()
        ));
    }
    let bytes = name.as_bytes();
    let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !bytes.iter().all(ok_char) || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Some(format!(
            "{name:?} is not a DNS-1123 label (lowercase letters, digits and '-', \
             starting and ending with a letter or digit)"
        ));
    }
    None
}

/// Whether `name` matches `^[A-Za-z_][A-Za-z0-9_]*$` (parameter and input names).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for good in ["a", "extract", "load-2", "0abc", &"a".repeat(63)] {
            assert_eq!(dns_label_error(good), None, "{good}");
        }
        for bad in ["", "Extract", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(dns_label_error(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn identifiers() {
        for good in ["a", "_", "DAY", "row_count2"] {
            assert!(is_identifier(good), "{good}");
        }
        for bad in ["", "2x", "a-b", "a.b", "é"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }
}
