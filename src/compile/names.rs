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

/// Longest DNS-1123 subdomain, the rule for object names.
pub const MAX_SUBDOMAIN_LEN: usize = 253;

/// Why `name` cannot name a `kind` object (`Workflow`, `Run`), or `None` when it can. Object
/// names follow Kubernetes' rule for custom resources (a DNS-1123 subdomain: lowercase letters,
/// digits, '-' and '.'); a Run's name is at most 63 characters because it labels the run's Jobs
/// and Pods. The same rule holds in `ork validate`, `ork run` (where the name becomes a
/// directory, so `..` or `/` must never get through) and the controller.
pub fn object_name_error(kind: &str, name: &str) -> Option<String> {
    let max = if kind == "Run" {
        MAX_LABEL_LEN
    } else {
        MAX_SUBDOMAIN_LEN
    };
    let shown = crate::text::quoted(name);
    if name.is_empty() {
        return Some(format!("a {kind} name must not be empty"));
    }
    if name.len() > max {
        return Some(format!(
            "{kind} name {shown} is {} characters long, at most {max} are allowed",
            name.len()
        ));
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let part_ok = |part: &str| {
        let b = part.as_bytes();
        !b.is_empty()
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter().all(|&c| alnum(c) || c == b'-')
    };
    if !name.split('.').all(part_ok) {
        return Some(format!(
            "{kind} name {shown} is not valid: use lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit"
        ));
    }
    None
}

/// Why `prefix` cannot be a `generateName` of a `kind` object, or `None`. The API server
/// appends five characters, so the prefix may end with '-' and leaves room for them.
pub fn generate_name_error(kind: &str, prefix: &str) -> Option<String> {
    let max = if kind == "Run" {
        MAX_LABEL_LEN
    } else {
        MAX_SUBDOMAIN_LEN
    } - 5;
    let shown = crate::text::quoted(prefix);
    if prefix.len() > max {
        return Some(format!(
            "{kind} generateName {shown} is {} characters long, at most {max} are allowed              (five random characters are added)",
            prefix.len()
        ));
    }
    let completed = format!("{prefix}x");
    match object_name_error(kind, &completed) {
        Some(_) if !prefix.is_empty() => Some(format!(
            "{kind} generateName {shown} is not valid: use lowercase letters, digits, '-' and              '.', starting with a letter or digit"
        )),
        _ => None,
    }
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
    fn object_names() {
        for good in ["etl", "etl-2026.11", "a", &"a".repeat(63)] {
            assert_eq!(object_name_error("Run", good), None, "{good}");
        }
        assert_eq!(object_name_error("Workflow", &"a".repeat(253)), None);
        for bad in [
            "",
            "../x",
            "/abs",
            "a/b",
            "Upper",
            "a..b",
            ".a",
            "a.",
            "nul\0",
            "esc\u{1b}[31m",
            "sp ace",
            &"a".repeat(64),
        ] {
            assert!(object_name_error("Run", bad).is_some(), "{bad:?}");
        }
        assert!(object_name_error("Workflow", &"a".repeat(254)).is_some());
        let long = object_name_error("Run", &"x".repeat(100_000)).unwrap();
        assert!(long.len() < 200, "{long}");
        assert_eq!(generate_name_error("Run", "etl-"), None);
        assert_eq!(generate_name_error("Run", "etl."), None);
        assert!(generate_name_error("Run", "-etl").is_some());
        assert!(generate_name_error("Run", "../").is_some());
        assert!(generate_name_error("Run", &"a".repeat(59)).is_some());
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
