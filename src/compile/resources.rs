//! A task's `resources`, checked against the API server's rules for a container, so that a
//! workflow ork accepts never has its Jobs refused (the run would wait for them forever).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as QuantityText;

use super::Owner;
use super::names::{MAX_SUBDOMAIN_LEN, is_qualified_name};
use super::quantity::Quantity;
use crate::problem::Problems;
use crate::text::{MAX_NAME_CHARS, quoted};

/// What the API server makes of a resource name in a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `cpu`, `memory`, `ephemeral-storage` or a `kubernetes.io/` name: requests may be below
    /// limits.
    Native,
    /// `hugepages-<size>`: requests equal limits, amounts are whole pages.
    HugePages,
    /// A domain-prefixed name such as `example.com/gpu`: requests equal limits, whole units.
    Extended,
}

impl Kind {
    fn may_overcommit(self) -> bool {
        self == Kind::Native
    }
}

const HUGE_PAGES_PREFIX: &str = "hugepages-";

/// The kind of resource `name` is, or why the API server refuses it in a container.
fn classify(name: &str) -> Result<Kind, String> {
    if !is_qualified_name(name) {
        return Err(format!(
            "resource name {} is not valid: an optional DNS subdomain and '/', then at most 63 \
             letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            quoted(name)
        ));
    }
    if !name.contains('/') {
        return match name {
            "cpu" | "memory" | "ephemeral-storage" => Ok(Kind::Native),
            _ if name.starts_with(HUGE_PAGES_PREFIX) => Ok(Kind::HugePages),
            _ => Err(format!(
                "resource name {} is not a container resource: use cpu, memory, \
                 ephemeral-storage, hugepages-<size>, or an extended resource with a domain \
                 such as example.com/gpu",
                quoted(name)
            )),
        };
    }
    if name.contains("kubernetes.io/") {
        return Ok(Kind::Native);
    }
    // The API server also checks the name as a quota would write it, `requests.<name>`.
    const QUOTA_PREFIX: &str = "requests.";
    let domain = name.split('/').next().unwrap_or_default();
    if name.starts_with(QUOTA_PREFIX) || domain.len() + QUOTA_PREFIX.len() > MAX_SUBDOMAIN_LEN {
        return Err(format!(
            "resource name {} is not a valid extended resource name: its domain must not \
             start with \"requests.\" and has at most {} characters",
            quoted(name),
            MAX_SUBDOMAIN_LEN - QUOTA_PREFIX.len()
        ));
    }
    Ok(Kind::Extended)
}

/// A quantity as written, bounded for messages.
fn shown(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= MAX_NAME_CHARS {
        text.to_string()
    } else {
        quoted(text)
    }
}

/// One entry of `limits` or `requests` that passed its own checks.
struct Entry<'a> {
    kind: Kind,
    text: &'a str,
    value: Quantity,
}

/// Checks `resources` at `at` (e.g. `spec.tasks[2].resources`); `owner` names the task or the
/// defaults.
pub(super) fn check_resources(
    resources: &ResourceRequirements,
    at: &str,
    owner: Owner,
    problems: &mut Problems,
) {
    if resources.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        problems.push(
            format!("{at}.claims"),
            format!("{owner}: resource claims are not supported (ork's Pods declare none)"),
        );
    }
    let limits = check_list(resources.limits.as_ref(), at, "limits", owner, problems);
    let requests = check_list(resources.requests.as_ref(), at, "requests", owner, problems);

    for (name, request) in &requests {
        let field = format!("{at}.requests.{name}");
        match limits.get(name) {
            Some(limit) => match request.value.cmp(&limit.value) {
                Ordering::Greater => problems.push(
                    field,
                    format!(
                        "{owner}: requests.{name} {} is above limits.{name} {}",
                        shown(request.text),
                        shown(limit.text)
                    ),
                ),
                Ordering::Less if !request.kind.may_overcommit() => problems.push(
                    field,
                    format!(
                        "{owner}: requests.{name} {} must equal limits.{name} {} \
                         ({name} cannot be overcommitted)",
                        shown(request.text),
                        shown(limit.text)
                    ),
                ),
                _ => {}
            },
            None if !request.kind.may_overcommit() => problems.push(
                format!("{at}.limits"),
                format!(
                    "{owner}: {name} is requested, so limits.{name} must be set too \
                     ({name} cannot be overcommitted)"
                ),
            ),
            None => {}
        }
    }

    // Whatever their values, as the API server counts them.
    let names = || {
        [&resources.limits, &resources.requests]
            .into_iter()
            .flatten()
            .flat_map(|list| list.keys())
    };
    let huge_pages = names().any(|n| n.starts_with(HUGE_PAGES_PREFIX));
    if huge_pages && !names().any(|n| n == "cpu" || n == "memory") {
        problems.push(
            at.to_string(),
            format!("{owner}: hugepages need a cpu or memory request or limit too"),
        );
    }
}

/// Checks the names and values of `limits` or `requests`; returns the entries whose name and
/// value are valid, by name.
fn check_list<'a>(
    list: Option<&'a BTreeMap<String, QuantityText>>,
    at: &str,
    which: &str,
    owner: Owner,
    problems: &mut Problems,
) -> BTreeMap<&'a str, Entry<'a>> {
    let mut valid = BTreeMap::new();
    for (name, QuantityText(text)) in list.into_iter().flatten() {
        let kind = match classify(name) {
            Ok(kind) => kind,
            Err(why) => {
                problems.push(format!("{at}.{which}"), format!("{owner}: {why}"));
                continue;
            }
        };
        // A valid name is short and plain: it can be part of the field.
        let field = format!("{at}.{which}.{name}");
        let Some(value) = Quantity::parse(text) else {
            problems.push(
                field,
                format!(
                    "{owner}: {} is not a Kubernetes quantity (e.g. 500m, 2, 1Gi)",
                    quoted(text)
                ),
            );
            continue;
        };
        if value.is_negative() {
            problems.push(
                field,
                format!(
                    "{owner}: {which}.{name} {} must not be negative",
                    shown(text)
                ),
            );
            continue;
        }
        if let Some(why) = amount_error(kind, name, &value) {
            problems.push(
                field,
                format!("{owner}: {which}.{name} {} {why}", shown(text)),
            );
            continue;
        }
        valid.insert(name.as_str(), Entry { kind, text, value });
    }
    valid
}

/// Why a non-negative `value` is not a valid amount of the resource `name`, if it is not.
fn amount_error(kind: Kind, name: &str, value: &Quantity) -> Option<String> {
    match kind {
        Kind::Native => None,
        Kind::Extended => (!value.is_integer())
            .then(|| "must be a whole number (an extended resource counts units)".to_string()),
        Kind::HugePages => {
            let page = name
                .strip_prefix(HUGE_PAGES_PREFIX)
                .and_then(Quantity::parse_exact)
                .filter(Quantity::is_positive)
                .and_then(|page| page.to_u64());
            let whole_pages = page.is_some_and(|page| value.ceil_mod(page) == 0);
            (!whole_pages).then(|| format!("must be a whole number of {name} pages"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        for (name, want) in [
            ("cpu", Kind::Native),
            ("memory", Kind::Native),
            ("ephemeral-storage", Kind::Native),
            ("kubernetes.io/anything", Kind::Native),
            ("hugepages-2Mi", Kind::HugePages),
            ("example.com/gpu", Kind::Extended),
            ("nvidia.com/gpu", Kind::Extended),
        ] {
            assert_eq!(classify(name), Ok(want), "{name}");
        }
        let long_domain = format!("{}/gpu", "a".repeat(245));
        for bad in [
            "gpu",
            "pods",
            "CPU",
            "",
            "cpu ",
            "/gpu",
            "a/b/c",
            "requests.example.com/gpu",
            &long_domain,
            &"x".repeat(100_000),
        ] {
            let why = classify(bad).expect_err(bad);
            assert!(why.len() < 400, "{why}");
        }
        assert_eq!(
            classify(&format!("{}/gpu", "a".repeat(244))),
            Ok(Kind::Extended)
        );
    }
}
