//! Naming rules shared by the validator and the drivers: Kubernetes' rules, so that what ork
//! accepts the API server accepts too.

use crate::text::quoted;

/// Longest DNS-1123 label Kubernetes accepts.
pub const MAX_LABEL_LEN: usize = 63;

/// Prefix of the environment variables ork sets itself; users may not define their own.
pub const RESERVED_ENV_PREFIX: &str = "ORK_";

/// Why `name` is not a DNS-1123 label, or `None` when it is one.
pub fn dns_label_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    let shown = quoted(name);
    if name.len() > MAX_LABEL_LEN {
        return Some(format!(
            "{shown} is {} characters long, at most {MAX_LABEL_LEN} are allowed",
            name.len()
        ));
    }
    if !is_dns_label(name) {
        return Some(format!(
            "{shown} is not a DNS-1123 label (lowercase letters, digits and '-', \
             starting and ending with a letter or digit)"
        ));
    }
    None
}

/// Lowercase letters, digits and '-', starting and ending with a letter or digit (any length).
fn is_dns_label(name: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = name.as_bytes();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// Dot-separated DNS-1123 labels (any length).
fn is_dns_subdomain(name: &str) -> bool {
    name.split('.').all(is_dns_label)
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
    let shown = quoted(name);
    if name.is_empty() {
        return Some(format!("a {kind} name must not be empty"));
    }
    if name.len() > max {
        return Some(format!(
            "{kind} name {shown} is {} characters long, at most {max} are allowed",
            name.len()
        ));
    }
    if !is_dns_subdomain(name) {
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
    let shown = quoted(prefix);
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

/// Why `name` is not a DNS-1123 subdomain (the rule for a service account name), or `None`.
pub fn dns_subdomain_error(name: &str) -> Option<String> {
    let shown = quoted(name);
    if name.len() > MAX_SUBDOMAIN_LEN {
        return Some(format!(
            "{shown} is {} characters long, at most {MAX_SUBDOMAIN_LEN} are allowed",
            name.len()
        ));
    }
    if !is_dns_subdomain(name) {
        return Some(format!(
            "{shown} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit)"
        ));
    }
    None
}

/// [`env_name_error`] as a pattern, for the CRD schema: Kubernetes' `[-._a-zA-Z][-._a-zA-Z0-9]*`
/// without `.`, `..` or a `..` prefix (a name starting with '.' goes on with anything but '.').
pub const ENV_NAME_PATTERN: &str = r"^(\.[-_a-zA-Z0-9][-._a-zA-Z0-9]*|[-_a-zA-Z][-._a-zA-Z0-9]*)$";

/// [`dns_label_error`] as a pattern, for the CRD schema (with a `maxLength` of
/// [`MAX_LABEL_LEN`]).
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A DNS-1123 subdomain or nothing, as a pattern, for the CRD schema (with a `maxLength` of
/// [`MAX_SUBDOMAIN_LEN`]).
pub const DNS_SUBDOMAIN_OR_EMPTY_PATTERN: &str =
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$";

/// [`is_identifier`] as a pattern: parameter and input names.
pub const IDENTIFIER_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// Why `name` cannot name an environment variable, or `None`. Kubernetes' rule: letters, digits,
/// '_', '-' and '.', not starting with a digit, and not `.`, `..` or starting with `..`.
pub fn env_name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("env name must not be empty".into());
    }
    if let Some(why) = too_long("env name", name) {
        return Some(why);
    }
    let ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_');
    let b = name.as_bytes();
    if !b.iter().all(|&c| ok(c)) || b[0].is_ascii_digit() {
        return Some(format!(
            "env name {} is not valid: use letters, digits, '_', '-' and '.', \
             not starting with a digit",
            quoted(name)
        ));
    }
    if name == "." || name.starts_with("..") {
        return Some(format!(
            "env name {} must not be '.' or start with '..'",
            quoted(name)
        ));
    }
    None
}

/// Longest name part of a qualified name (`[prefix/]name`).
pub const MAX_QUALIFIED_NAME_LEN: usize = 63;

/// Whether `name` is a Kubernetes qualified name: an optional DNS-1123 subdomain prefix and
/// '/', then at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or
/// digit (the rule for resource names, label keys and the like).
pub fn is_qualified_name(name: &str) -> bool {
    let (prefix, name) = match name.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, name),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= MAX_SUBDOMAIN_LEN && is_dns_subdomain(p));
    let b = name.as_bytes();
    let edge = |c: u8| c.is_ascii_alphanumeric();
    prefix_ok
        && !b.is_empty()
        && b.len() <= MAX_QUALIFIED_NAME_LEN
        && edge(b[0])
        && edge(b[b.len() - 1])
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Longest parameter, input or env name. Kubernetes sets none for env names, but nobody needs
/// more, and every name ork echoes or stores should stay small.
pub const MAX_IDENTIFIER_LEN: usize = 253;

/// Why `name` (a parameter or input name, described as `what`) is not one, or `None`: it
/// must match `^[A-Za-z_][A-Za-z0-9_]*$` and be at most [`MAX_IDENTIFIER_LEN`] long.
pub fn identifier_error(what: &str, name: &str) -> Option<String> {
    if !is_identifier(name) {
        return Some(format!(
            "{what} {} must match ^[A-Za-z_][A-Za-z0-9_]*$",
            quoted(name)
        ));
    }
    too_long(what, name)
}

fn too_long(what: &str, name: &str) -> Option<String> {
    (name.len() > MAX_IDENTIFIER_LEN).then(|| {
        format!(
            "{what} {} is {} characters long, at most {MAX_IDENTIFIER_LEN} are allowed",
            quoted(name),
            name.len()
        )
    })
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
    fn dns_subdomains() {
        for good in ["default", "etl-runner", "a.b-c.d", &"a".repeat(253)] {
            assert_eq!(dns_subdomain_error(good), None, "{good}");
        }
        for bad in [
            "",
            "Upper",
            "a..b",
            ".a",
            "a.",
            "-a",
            "a_b",
            "sp ace",
            &"a".repeat(254),
        ] {
            assert!(dns_subdomain_error(bad).is_some(), "{bad:?}");
        }
        let long = dns_subdomain_error(&"x".repeat(100_000)).unwrap();
        assert!(long.len() < 200, "{long}");
    }

    #[test]
    fn env_names_follow_kubernetes() {
        for good in [
            "A",
            "_",
            "my.env-name",
            "MY_ENV.NAME",
            "MyEnvName1",
            "-x",
            ".a",
            "a..b",
        ] {
            assert_eq!(env_name_error(good), None, "{good}");
        }
        for bad in [
            "", "1A", "A=B", "A B", "A\nB", "A\0", "é", "a/b", "$(X)", ".", "..", "..a",
        ] {
            assert!(env_name_error(bad).is_some(), "{bad:?}");
        }
        let long = env_name_error(&format!("{}=", "x".repeat(100_000))).unwrap();
        assert!(long.len() < 200, "{long}");
    }

    #[test]
    fn qualified_names() {
        let longest_prefix = format!("{}/a", "a".repeat(253));
        for good in [
            "cpu",
            "memory",
            "hugepages-2Mi",
            "example.com/gpu",
            "a",
            "A_b.c-9",
            &"a".repeat(63),
            &longest_prefix,
        ] {
            assert!(is_qualified_name(good), "{good}");
        }
        let long_prefix = format!("{}/a", "a".repeat(254));
        for bad in [
            "",
            "/gpu",
            "example.com/",
            "a/b/c",
            "Example.com/gpu",
            "-cpu",
            "cpu-",
            "c pu",
            "cpu\n",
            &"a".repeat(64),
            &long_prefix,
        ] {
            assert!(!is_qualified_name(bad), "{bad:?}");
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
