//! A task's Pod settings (`pod`, `volumes`, `volumeMounts`), checked against the API server's
//! rules for a Pod, so that a workflow ork accepts does not have its Jobs refused; and ork's
//! own labels and annotations kept ork's.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Volume, VolumeMount};

use super::Owner;
use super::names::{dns_label_error, dns_subdomain_error, is_qualified_name};
use crate::api::PodSettings;
use crate::problem::Problems;
use crate::text::quoted;

/// Labels and annotations under this prefix are ork's.
pub const RESERVED_PREFIX: &str = "ork.dev/";
/// Where a task's container writes its outputs: nothing may be mounted there.
const OUTPUT_PATH: &str = "/dev/termination-log";

/// A mount path (at `field`) of a task: absolute, not where ork writes the outputs, and not a
/// path in `taken` (the task's mounts so far, without a trailing `/`; this one is added).
/// `clash` says what two mounts at one path are (`two volumes are`).
pub(super) fn check_mount_path(
    path: &str,
    taken: &mut HashSet<String>,
    field: &str,
    clash: &str,
    who: Owner,
    problems: &mut Problems,
) {
    let trimmed = path.trim_end_matches('/');
    let shown = quoted(path);
    let message = if !path.starts_with('/') {
        format!("mount path {shown} is not absolute")
    } else if trimmed.is_empty() || trimmed == OUTPUT_PATH {
        format!("mount path {shown} is not allowed: ork needs it for the task")
    } else if !taken.insert(trimmed.to_string()) {
        format!("{clash} mounted at {shown}")
    } else {
        return;
    };
    problems.push(field, format!("{who}: {message}"));
}

/// `pod` of the object at `at` (`…pod`).
pub(super) fn check_pod(pod: &PodSettings, at: &str, owner: Owner, problems: &mut Problems) {
    check_keys(
        &pod.node_selector,
        &format!("{at}.nodeSelector"),
        "node selector",
        true,
        owner,
        problems,
    );
    check_keys(
        &pod.labels,
        &format!("{at}.labels"),
        "label",
        true,
        owner,
        problems,
    );
    check_keys(
        &pod.annotations,
        &format!("{at}.annotations"),
        "annotation",
        false,
        owner,
        problems,
    );
    for (field, map) in [("labels", &pod.labels), ("annotations", &pod.annotations)] {
        for key in map.keys().filter(|k| k.starts_with(RESERVED_PREFIX)) {
            problems.push(
                format!("{at}.{field}"),
                format!(
                    "{owner}: {} is under {RESERVED_PREFIX}, which is ork's own",
                    quoted(key)
                ),
            );
        }
    }
    if let Some(why) = pod
        .priority_class_name
        .as_deref()
        .and_then(dns_subdomain_error)
    {
        problems.push(
            format!("{at}.priorityClassName"),
            format!("{owner}: priority class name {why}"),
        );
    }
    for (i, secret) in pod.image_pull_secrets.iter().flatten().enumerate() {
        if let Some(why) = dns_subdomain_error(&secret.name) {
            problems.push(
                format!("{at}.imagePullSecrets[{i}].name"),
                format!("{owner}: secret name {why}"),
            );
        }
    }
}

/// Keys (and, for labels, values) of a map the API server checks as label keys do.
fn check_keys(
    map: &BTreeMap<String, String>,
    at: &str,
    what: &str,
    values_too: bool,
    owner: Owner,
    problems: &mut Problems,
) {
    for (key, value) in map {
        if !is_qualified_name(key) {
            problems.push(
                at.to_string(),
                format!(
                    "{owner}: {what} key {} is not valid: an optional DNS subdomain and '/', \
                     then at most 63 letters, digits, '-', '_' and '.', starting and ending with a \
                     letter or digit",
                    quoted(key)
                ),
            );
        } else if values_too && !is_label_value(value) {
            problems.push(
                at.to_string(),
                format!(
                    "{owner}: {what} {}'s value {} is not valid: at most 63 letters, digits, \
                     '-', '_' and '.', starting and ending with a letter or digit, or empty",
                    quoted(key),
                    quoted(value)
                ),
            );
        }
    }
}

/// A label value: empty, or at most 63 of `[-_.A-Za-z0-9]` with alphanumeric ends.
fn is_label_value(value: &str) -> bool {
    let b = value.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

/// A task's `volumes` and `volumeMounts` (at `at`, the task): names unique DNS labels, each
/// mount naming one of the task's volumes, at an absolute path of its own.
pub(super) fn check_volumes(
    volumes: &[Volume],
    mounts: &[VolumeMount],
    at: &str,
    who: Owner,
    problems: &mut Problems,
) {
    let mut names = HashSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        if let Some(why) = dns_label_error(&volume.name) {
            problems.push(
                format!("{at}.volumes[{i}].name"),
                format!("{who}: volume name {why}"),
            );
        } else if !names.insert(volume.name.as_str()) {
            problems.push(
                format!("{at}.volumes[{i}].name"),
                format!("{who}: volume {} is declared twice", quoted(&volume.name)),
            );
        }
    }
    let mut paths: HashSet<String> = HashSet::new();
    for (i, mount) in mounts.iter().enumerate() {
        let field = format!("{at}.volumeMounts[{i}]");
        if !names.contains(mount.name.as_str()) {
            problems.push(
                format!("{field}.name"),
                format!(
                    "{who}: volume mount names {}, which is not one of the task's volumes",
                    quoted(&mount.name)
                ),
            );
        }
        check_mount_path(
            &mount.mount_path,
            &mut paths,
            &format!("{field}.mountPath"),
            "two volumes are",
            who,
            problems,
        );
    }
}
