//! The hostile-input corpus: every case is a manifest (or a path to something that is not one)
//! run through the real binary as `ork validate FILE` and `ork run --work-dir DIR FILE`, each
//! under a memory limit and a deadline. Each must end with exit code 2, no panic, no signal, a
//! bounded stderr that names the problem, and nothing run (every task would touch a marker).
//!
//! `input_cases` are refused while reading the manifest (file, YAML, schema, names, documents
//! together); `compile_cases` are refused by the validator (`src/compile/`).

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ORK: &str = env!("CARGO_BIN_EXE_ork");

/// Address space each `ork` may use.
const MEMORY_LIMIT: u64 = 1 << 30;
/// Most stderr a refused manifest may produce.
const MAX_STDERR: usize = 1 << 20;
/// How long one command may take; `Case::slow` ones (100,000 tasks, in a debug build) more.
const DEADLINE: Duration = Duration::from_secs(20);
const SLOW_DEADLINE: Duration = Duration::from_secs(90);
/// Commands run at once.
const WORKERS: usize = 2;

/// Replaced in a manifest by the path of the case's marker file.
const MARKER: &str = "@MARKER@";

enum Input {
    /// A manifest, `@MARKER@` replaced by the marker's path.
    Text(String),
    /// Bytes as they are.
    Bytes(Vec<u8>),
    /// A path prepared in the case's directory (a link to a device, a pipe, a directory…).
    Prepared(fn(&Path) -> PathBuf),
}

struct Case {
    name: String,
    input: Input,
    /// In the stderr of both commands.
    expect: String,
    slow: bool,
}

fn case(name: &str, input: Input, expect: &str) -> Case {
    Case {
        name: name.into(),
        input,
        expect: expect.into(),
        slow: false,
    }
}

fn text(name: &str, manifest: impl Into<String>, expect: &str) -> Case {
    case(name, Input::Text(manifest.into()), expect)
}

/// A task that leaves the marker behind if it ever runs.
fn marker_task(name: &str) -> String {
    format!("{{name: {name}, image: busybox, command: [touch, '{MARKER}']}}")
}

/// A Workflow named `wf` whose spec is `spec` (flow-style mapping body, without braces).
fn workflow_spec(spec: &str) -> String {
    format!(
        "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: wf}}\nspec: {{{spec}}}\n"
    )
}

/// A Workflow whose one task has `fields` added.
fn task_with(fields: &str) -> String {
    workflow_spec(&format!(
        "tasks: [{{name: t, image: busybox, command: [touch, '{MARKER}'], {fields}}}]"
    ))
}

/// A Workflow named by `metadata` (flow-style mapping body).
fn workflow_meta(metadata: &str) -> String {
    format!(
        "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {{{metadata}}}\n\
         spec: {{tasks: [{}]}}\n",
        marker_task("t")
    )
}

/// A Run with an inline workflow, named by `metadata`, with `spec` fields added.
fn run_with(metadata: &str, spec: &str) -> String {
    format!(
        "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {{{metadata}}}\n\
         spec: {{workflow: {{tasks: [{}]}}{spec}}}\n",
        marker_task("t")
    )
}

/// Cases refused while reading: file, YAML, schema, object names, documents together.
fn input_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let t = |name: &str, manifest: String, expect: &str| text(name, manifest, expect);

    // YAML syntax.
    let head = "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: wf}\n";
    for (name, body, expect) in [
        ("unclosed-bracket", "spec: {tasks: [\n", "invalid YAML"),
        ("mapping-in-plain", "spec: a: b\n", "invalid YAML"),
        ("unterminated-quote", "spec: 'abc\n", "invalid YAML"),
        ("bad-escape", "spec: \"\\q\"\n", "invalid YAML"),
        (
            "bad-indentation",
            "spec:\n  tasks:\n - a\n  b: c\n",
            "invalid YAML",
        ),
        ("unknown-anchor", "spec: *nope\n", "not defined before it"),
        (
            "self-alias",
            "spec: &s {tasks: [*s]}\n",
            "an alias refers to itself",
        ),
        (
            "complex-key",
            "? [a]\n: b\nspec: {}\n",
            "a mapping key must be a scalar",
        ),
        (
            "nan",
            "spec: {activeDeadlineSeconds: .nan, tasks: []}\n",
            "is not a finite number",
        ),
        (
            "infinity",
            "spec: {parallelism: 1e999, tasks: []}\n",
            "is not a finite number",
        ),
        (
            "bad-tag",
            "spec: {parallelism: !!int many, tasks: []}\n",
            "does not match its tag",
        ),
        (
            "merge-scalar",
            "spec: {<<: 1, tasks: []}\n",
            "merge key (<<)",
        ),
        (
            "duplicate-root-key",
            "spec: {}\nspec: {}\n",
            "duplicate key \"spec\" in a mapping",
        ),
        (
            "duplicate-task-key",
            "spec: {tasks: [{name: t, name: u}]}\n",
            "duplicate key \"name\"",
        ),
        (
            "duplicate-meta-key",
            "spec: {tasks: []}\nmetadata: {name: b}\n",
            "duplicate key \"metadata\"",
        ),
        ("tab-indent", "spec:\n\ttasks: []\n", "invalid YAML"),
        (
            "null-key",
            "spec: {tasks: [], ~: 1}\n",
            "a mapping key is empty or null",
        ),
    ] {
        cases.push(t(&format!("yaml-{name}"), format!("{head}{body}"), expect));
    }
    cases.push(t(
        "duplicate-param-key",
        run_with("name: r", ", params: {a: x, a: y}"),
        "duplicate key \"a\"",
    ));
    cases.push(case(
        "not-utf8",
        Input::Bytes(b"apiVersion: \xff\xfe\n".to_vec()),
        "is not UTF-8 text",
    ));
    cases.push(case(
        "nul-byte",
        Input::Bytes(b"apiVersion: a\0b\nkind: Workflow\n".to_vec()),
        "unexpected character",
    ));
    cases.push(t("empty-file", String::new(), "no documents"));
    cases.push(t(
        "only-comments",
        "# nothing\n# here\n".into(),
        "no documents",
    ));
    cases.push(t(
        "only-separators",
        "---\n---\n...\n".into(),
        "no documents",
    ));
    cases.push(t(
        "top-level-list",
        "- a\n- b\n".into(),
        "a manifest must be a mapping",
    ));
    cases.push(t(
        "top-level-scalar",
        "hello\n".into(),
        "a manifest must be a mapping",
    ));
    cases.push(t(
        "long-plain-key",
        format!("{}: 1\n", "k".repeat(5_000)),
        "invalid YAML",
    ));

    // Bombs.
    let mut laughs = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        let p = i - 1;
        let row = vec![format!("*a{p}"); 10].join(", ");
        laughs.push_str(&format!("a{i}: &a{i} [{row}]\n"));
    }
    cases.push(t(
        "bomb-billion-laughs",
        laughs,
        "aliases expand to more than",
    ));
    let mut scalar_bomb = format!(
        "{head}spec:\n  description: &d '{}'\n  tasks:\n",
        "x".repeat(100_000)
    );
    scalar_bomb.push_str(&"  - *d\n".repeat(40_000));
    cases.push(t(
        "bomb-aliased-100k-scalar",
        scalar_bomb,
        "more than 64 MiB of text",
    ));
    let mut many_anchors = String::from("a:\n");
    for i in 0..500 {
        many_anchors.push_str(&format!("- &x{i} '{}'\n", "y".repeat(20_000)));
    }
    many_anchors.push_str("b:\n");
    for i in 0..4_000 {
        many_anchors.push_str(&format!("- *x{}\n", i % 500));
    }
    cases.push(t(
        "bomb-many-anchors",
        many_anchors,
        "more than 64 MiB of text",
    ));
    let ratio = format!("a: &x y\nb: [{}]\n", vec!["*x"; 500].join(", "));
    cases.push(t(
        "bomb-alias-ratio",
        ratio,
        "too many aliases for the anchors defined",
    ));
    cases.push(t(
        "bomb-deep-flow",
        format!("{head}spec: {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
        "nesting deeper than 64 levels",
    ));
    cases.push(t(
        "bomb-deep-flow-maps",
        format!("{head}spec: {}x{}\n", "{a: ".repeat(200), "}".repeat(200)),
        "nesting deeper than 64 levels",
    ));
    let deep_block: String = (0..2_000)
        .map(|i| format!("{}- \n", " ".repeat(i * 2)))
        .collect();
    cases.push(t(
        "bomb-deep-block",
        deep_block,
        "nesting deeper than 64 levels",
    ));
    let deep_alias = format!(
        "a: &a [[[[[[[[x]]]]]]]]\nb: &b [*a, *a]\nc: [{}]\n",
        ["*b"; 8].join(",")
    );
    cases.push(t(
        "deep-aliases-are-fine-but-no-kind",
        deep_alias,
        "kind: must be Workflow, Run or Schedule",
    ));
    cases.push(t(
        "bomb-many-documents",
        "---\na: 1\n".repeat(5_000),
        "more than 1024 documents",
    ));
    let mut bad_docs = String::new();
    for i in 0..1_000 {
        let unknown: String = (0..10).map(|k| format!("x{k}: 1\n")).collect();
        bad_docs.push_str(&format!(
            "---\napiVersion: v{i}\nkind: Workflow\nmetadata: {{name: n}}\n{unknown}"
        ));
    }
    cases.push(t(
        "many-bad-documents-bounded",
        bad_docs,
        "(document 1000): … and 12 more problems",
    ));
    let huge = "x".repeat(20_000_000);
    cases.push(Case {
        slow: true,
        ..t(
            "huge-scalar",
            format!("apiVersion: {huge}\nkind: Workflow\n"),
            "(20000000 characters)",
        )
    });
    let mut unknown = String::from("spec:\n  tasks:\n  - name: t\n");
    for i in 0..10_000 {
        unknown.push_str(&format!("    bogus{i}: 1\n"));
    }
    cases.push(t(
        "ten-thousand-unknown-fields",
        format!("{head}{unknown}"),
        "… and 9001 more problems",
    ));
    // An explicit key (`? `): an implicit one may not pass 1024 characters.
    let hostile_key = format!(
        "{head}spec:\n  tasks: []\n  ? {}\n  : 1\n",
        "k".repeat(200_000)
    );
    cases.push(t("huge-unknown-key", hostile_key, "(200000 characters)"));
    cases.push(t(
        "escape-unknown-key",
        format!("{head}spec: {{tasks: [], \"\\e[2J\\e[31mred\": 1}}\n"),
        "\"\\u{1b}[2J\\u{1b}[31mred\": unknown field",
    ));

    // Size limits and paths that are not manifests.
    cases.push(case(
        "file-over-32-mib",
        Input::Prepared(big_file),
        "is larger than 32 MiB",
    ));
    cases.push(case(
        "sparse-6-gb-file",
        Input::Prepared(huge_file),
        "is larger than 32 MiB",
    ));
    cases.push(case(
        "link-to-fifo-without-writer",
        Input::Prepared(link_to_fifo),
        "nothing to read",
    ));
    cases.push(case(
        "link-to-dev-zero",
        Input::Prepared(link_to_zero),
        "is larger than 32 MiB",
    ));
    cases.push(case(
        "fifo-without-writer",
        Input::Prepared(fifo),
        "nothing to read",
    ));
    cases.push(case(
        "directory",
        Input::Prepared(directory),
        "it is a directory",
    ));
    cases.push(case(
        "missing-file",
        Input::Prepared(missing),
        "no such file",
    ));
    cases.push(case(
        "dangling-link",
        Input::Prepared(dangling),
        "no such file",
    ));

    // Wrong types, out-of-range numbers, unknown fields.
    for (name, manifest, expect) in [
        ("api-version-number", format!("apiVersion: 5\nkind: Workflow\nmetadata: {{name: wf}}\nspec: {{tasks: [{}]}}\n", marker_task("t")), "apiVersion: must be ork.dev/v1alpha1, got 5"),
        ("kind-list", "apiVersion: ork.dev/v1alpha1\nkind: []\nspec: {}\n".to_string(), "kind: must be Workflow, Run or Schedule, got a list"),
        ("kind-other", "apiVersion: ork.dev/v1alpha1\nkind: ConfigMap\n".into(), "kind: must be Workflow, Run or Schedule, got \"ConfigMap\""),
        ("metadata-string", format!("apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: x\nspec: {{tasks: [{}]}}\n", marker_task("t")), "metadata: must be a mapping, got \"x\""),
        ("metadata-name-number", workflow_meta("name: 5"), "metadata.name: must be a string, got 5"),
        ("labels-list", workflow_meta("name: wf, labels: [a]"), "metadata.labels: must be a mapping, got a list"),
        ("label-number", workflow_meta("name: wf, labels: {a: 1}"), "metadata.labels.a: must be a string, got 1"),
        ("generation-string", workflow_meta("name: wf, generation: x"), "metadata.generation: must be a whole number"),
        ("metadata-unknown", workflow_meta("name: wf, bogus: 1"), "metadata.bogus: unknown field"),
        ("spec-string", "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: wf}\nspec: x\n".into(), "spec: must be a mapping, got \"x\""),
        ("spec-list", "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: wf}\nspec: [1]\n".into(), "spec: must be a mapping, got a list"),
        ("spec-missing", "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: wf}\n".into(), "spec: required field is missing"),
        ("tasks-string", workflow_spec("tasks: x"), "spec.tasks: must be a list, got \"x\""),
        ("tasks-mapping", workflow_spec("tasks: {a: 1}"), "spec.tasks: must be a list, got a mapping"),
        ("tasks-null", workflow_spec("tasks: null"), "spec.tasks: must be a list, got nothing"),
        ("tasks-missing", workflow_spec("parallelism: 1"), "spec.tasks: required field is missing"),
        ("task-string", workflow_spec("tasks: [x]"), "spec.tasks[0]: must be a mapping, got \"x\""),
        ("task-name-number", workflow_spec(&format!("tasks: [{{name: 5, command: [touch, '{MARKER}']}}]")), "spec.tasks[0].name: must be a string, got 5; quote it"),
        ("task-name-list", workflow_spec("tasks: [{name: [a]}]"), "spec.tasks[0].name: must be a string, got a list"),
        ("task-name-null", workflow_spec("tasks: [{name: null}]"), "spec.tasks[0].name: must be a string, got nothing"),
        ("task-name-missing", workflow_spec("tasks: [{image: i}]"), "spec.tasks[0].name: required field is missing"),
        ("image-list", workflow_spec(&format!("defaults: {{image: [a]}}, tasks: [{}]", marker_task("t"))), "spec.defaults.image: must be a string, got a list"),
        ("command-string", workflow_spec("tasks: [{name: t, command: sh}]"), "spec.tasks[0].command: must be a list, got \"sh\""),
        ("command-nested", workflow_spec("tasks: [{name: t, command: [[x]]}]"), "spec.tasks[0].command[0]: must be a string, got a list"),
        ("args-number", task_with("args: 5"), "spec.tasks[0].args: must be a list, got 5"),
        ("env-string", task_with("env: x"), "spec.tasks[0].env: must be a list, got \"x\""),
        ("env-entry-string", task_with("env: [x]"), "spec.tasks[0].env[0]: must be a mapping, got \"x\""),
        ("env-name-missing", task_with("env: [{value: x}]"), "spec.tasks[0].env[0].name: required field is missing"),
        ("env-value-number", task_with("env: [{name: A, value: 5}]"), "spec.tasks[0].env[0].value: must be a string, got 5; quote it"),
        ("env-value-from-string", task_with("env: [{name: A, valueFrom: x}]"), "spec.tasks[0].env[0].valueFrom: must be a mapping"),
        ("env-unknown", task_with("env: [{name: A, bogus: x}]"), "spec.tasks[0].env[0].bogus: unknown field"),
        ("depends-on-string", task_with("dependsOn: a"), "spec.tasks[0].dependsOn: must be a list"),
        ("depends-on-number", task_with("dependsOn: [1]"), "spec.tasks[0].dependsOn[0]: must be a string, got 1; quote it"),
        ("inputs-string", task_with("inputs: x"), "spec.tasks[0].inputs: must be a list"),
        ("input-value-mapping", task_with("inputs: [{name: A, value: {}}]"), "spec.tasks[0].inputs[0].value: must be a string, got a mapping"),
        ("retries-list", task_with("retries: [3]"), "spec.tasks[0].retries: must be a mapping, got a list"),
        ("retries-number", task_with("retries: 3"), "spec.tasks[0].retries: must be a mapping, got 3"),
        ("retries-limit-huge", task_with("retries: {limit: 99999999999}"), "spec.tasks[0].retries.limit: 99999999999 is above the maximum 4294967295"),
        ("retries-limit-word", task_with("retries: {limit: many}"), "spec.tasks[0].retries.limit: must be a whole number from 0 to 4294967295, got \"many\""),
        ("retries-limit-float", task_with("retries: {limit: 1.5}"), "spec.tasks[0].retries.limit: must be a whole number from 0 to 4294967295, got 1.5"),
        ("retries-limit-negative", task_with("retries: {limit: -1}"), "spec.tasks[0].retries.limit: -1 is below the minimum 0"),
        ("retries-limit-missing", task_with("retries: {}"), "spec.tasks[0].retries.limit: required field is missing"),
        ("backoff-factor-word", task_with("retries: {limit: 1, backoff: {factor: x}}"), "spec.tasks[0].retries.backoff.factor: must be a number, got \"x\""),
        ("backoff-list", task_with("retries: {limit: 1, backoff: [1]}"), "spec.tasks[0].retries.backoff: must be a mapping"),
        ("timeout-negative", task_with("timeoutSeconds: -5"), "spec.tasks[0].timeoutSeconds: -5 is below the minimum 0"),
        ("timeout-word", task_with("timeoutSeconds: soon"), "spec.tasks[0].timeoutSeconds: must be a whole number from 0 to 18446744073709551615, got \"soon\""),
        ("timeout-float", task_with("timeoutSeconds: 2.5"), "spec.tasks[0].timeoutSeconds: must be a whole number"),
        ("timeout-huge", task_with("timeoutSeconds: 99999999999999999999999"), "spec.tasks[0].timeoutSeconds: 1e+23 is above the maximum 18446744073709551615"),
        ("resources-string", task_with("resources: x"), "spec.tasks[0].resources: must be a mapping"),
        ("limits-list", task_with("resources: {limits: [1]}"), "spec.tasks[0].resources.limits: must be a mapping, got a list"),
        ("quantity-bool", task_with("resources: {limits: {cpu: true}}"), "spec.tasks[0].resources.limits.cpu: must be a string or a number, got true"),
        ("quantity-mapping", task_with("resources: {requests: {memory: {a: 1}}}"), "spec.tasks[0].resources.requests.memory: must be a string or a number, got a mapping"),
        ("service-account-number", task_with("serviceAccountName: 5"), "spec.tasks[0].serviceAccountName: must be a string, got 5"),
        ("task-unknown", task_with("dependson: [x]"), "spec.tasks[0].dependson: unknown field"),
        ("spec-unknown", workflow_spec(&format!("tasks: [{}], bogus: 1", marker_task("t"))), "spec.bogus: unknown field"),
        ("root-unknown", format!("{}extra: 1\n", workflow_spec(&format!("tasks: [{}]", marker_task("t")))), "extra: unknown field"),
        ("params-string", workflow_spec(&format!("params: x, tasks: [{}]", marker_task("t"))), "spec.params: must be a list"),
        ("param-name-number", workflow_spec(&format!("params: [{{name: 5}}], tasks: [{}]", marker_task("t"))), "spec.params[0].name: must be a string, got 5"),
        ("param-default-list", workflow_spec(&format!("params: [{{name: a, default: [1]}}], tasks: [{}]", marker_task("t"))), "spec.params[0].default: must be a string, got a list"),
        ("defaults-string", workflow_spec(&format!("defaults: x, tasks: [{}]", marker_task("t"))), "spec.defaults: must be a mapping"),
        ("defaults-retries-limit", workflow_spec(&format!("defaults: {{retries: {{limit: -3}}}}, tasks: [{}]", marker_task("t"))), "spec.defaults.retries.limit: -3 is below the minimum 0"),
        ("parallelism-word", workflow_spec(&format!("parallelism: lots, tasks: [{}]", marker_task("t"))), "spec.parallelism: must be a whole number from 0 to 4294967295, got \"lots\""),
        ("parallelism-float", workflow_spec(&format!("parallelism: 2.5, tasks: [{}]", marker_task("t"))), "spec.parallelism: must be a whole number"),
        ("deadline-negative", workflow_spec(&format!("activeDeadlineSeconds: -1, tasks: [{}]", marker_task("t"))), "spec.activeDeadlineSeconds: -1 is below the minimum 0"),
        ("description-list", workflow_spec(&format!("description: [a], tasks: [{}]", marker_task("t"))), "spec.description: must be a string, got a list"),
        ("several-problems-at-once", task_with("retries: {limit: x}, timeoutSeconds: y, bogus: 1"), "spec.tasks[0].timeoutSeconds: must be a whole number"),
        ("run-params-list", run_with("name: r", ", params: [a]"), "spec.params: must be a mapping, got a list"),
        ("run-param-number", run_with("name: r", ", params: {a: 1}"), "spec.params.a: must be a string, got 1; quote it"),
        ("run-param-mapping", run_with("name: r", ", params: {a: {b: c}}"), "spec.params.a: must be a string, got a mapping"),
        ("run-workflow-ref-string", "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {name: r}\nspec: {workflowRef: etl}\n".into(), "spec.workflowRef: must be a mapping, got \"etl\""),
        ("run-workflow-ref-no-name", "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {name: r}\nspec: {workflowRef: {}}\n".into(), "spec.workflowRef.name: required field is missing"),
        ("run-workflow-string", "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {name: r}\nspec: {workflow: x}\n".into(), "spec.workflow: must be a mapping, got \"x\""),
        ("run-inline-task-limit", "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {name: r}\nspec: {workflow: {tasks: [{name: t, retries: {limit: 99999999999}}]}}\n".into(), "spec.workflow.tasks[0].retries.limit: 99999999999 is above the maximum 4294967295"),
        ("run-status-phase", format!("{}status: {{phase: Bogus}}\n", run_with("name: r", "")), "status.phase: must be one of Pending, Running, Succeeded, Failed, Cancelled, got \"Bogus\""),
        ("run-status-string", format!("{}status: x\n", run_with("name: r", "")), "status: must be a mapping, got \"x\""),
    ] {
        cases.push(t(&format!("type-{name}"), manifest, expect));
    }

    // Object names of Workflows and Runs.
    let long = "x".repeat(200_000);
    for (name, metadata, expect) in [
        (
            "workflow-dotdot",
            "name: ../x".to_string(),
            "Workflow name \"../x\" is not valid",
        ),
        (
            "workflow-absolute",
            "name: /etc/passwd".into(),
            "Workflow name \"/etc/passwd\" is not valid",
        ),
        (
            "workflow-nul",
            "name: \"a\\0b\"".into(),
            "Workflow name \"a\\0b\" is not valid",
        ),
        (
            "workflow-escape",
            "name: \"a\\e[31mb\"".into(),
            "Workflow name \"a\\u{1b}[31mb\" is not valid",
        ),
        (
            "workflow-uppercase",
            "name: Etl".into(),
            "Workflow name \"Etl\" is not valid",
        ),
        (
            "workflow-254",
            format!("name: {}", "a".repeat(254)),
            "254 characters long, at most 253",
        ),
        (
            "workflow-200kb",
            format!("name: {long}"),
            "200000 characters long",
        ),
        (
            "workflow-empty",
            "name: ''".into(),
            "a Workflow name must not be empty",
        ),
        (
            "workflow-unnamed",
            "labels: {a: b}".into(),
            "a Workflow needs a name",
        ),
        (
            "workflow-generate-name",
            "name: wf, generateName: '../'".into(),
            "Workflow generateName \"../\" is not valid",
        ),
    ] {
        cases.push(t(&format!("name-{name}"), workflow_meta(&metadata), expect));
    }
    for (name, metadata, expect) in [
        (
            "run-dotdot",
            "name: ../x".to_string(),
            "Run name \"../x\" is not valid",
        ),
        (
            "run-slash",
            "name: a/b".into(),
            "Run name \"a/b\" is not valid",
        ),
        (
            "run-dot",
            "name: '..'".into(),
            "Run name \"..\" is not valid",
        ),
        (
            "run-nul",
            "name: \"r\\0\"".into(),
            "Run name \"r\\0\" is not valid",
        ),
        (
            "run-newline",
            "name: \"r\\nx\"".into(),
            "Run name \"r\\nx\" is not valid",
        ),
        (
            "run-uppercase",
            "name: Run1".into(),
            "Run name \"Run1\" is not valid",
        ),
        (
            "run-64",
            format!("name: {}", "r".repeat(64)),
            "64 characters long, at most 63",
        ),
        (
            "run-200kb",
            format!("name: {long}"),
            "200000 characters long",
        ),
        (
            "run-generate-dotdot",
            "generateName: ../".into(),
            "Run generateName \"../\" is not valid",
        ),
        (
            "run-generate-59",
            format!("generateName: {}", "g".repeat(59)),
            "59 characters long, at most 58",
        ),
        (
            "run-generate-uppercase",
            "generateName: Etl-".into(),
            "Run generateName \"Etl-\" is not valid",
        ),
    ] {
        cases.push(t(&format!("name-{name}"), run_with(&metadata, ""), expect));
    }

    // What the API server checks across objects.
    let two = format!(
        "{}---\n{}",
        workflow_meta("name: etl"),
        workflow_meta("name: etl")
    );
    let reference = "---\napiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {name: r}\nspec: {workflowRef: {name: etl}}\n";
    cases.push(t(
        "workflow-defined-twice",
        format!("{two}{reference}"),
        "Workflow \"etl\" is defined 2 times",
    ));
    cases.push(t(
        "namespace-mismatch",
        format!(
            "{}---\napiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {{name: r, namespace: b}}\n\
             spec: {{workflowRef: {{name: etl}}}}\n",
            workflow_meta("name: etl, namespace: a")
        ),
        "a Run may only reference a Workflow in its own namespace",
    ));
    // Schedules: what the API server's schema refuses, `ork validate` and `ork run` refuse too.
    let schedule = |metadata: &str, spec: &str| {
        format!(
            "apiVersion: ork.dev/v1alpha1\nkind: Schedule\nmetadata: {{{metadata}}}\n\
             spec: {{workflowRef: {{name: w}}{spec}}}\n"
        )
    };
    for (name, manifest, expect) in [
        (
            "schedule-policy",
            schedule(
                "name: s",
                ", cron: '* * * * *', concurrencyPolicy: Sometimes",
            ),
            "must be one of Allow, Forbid, Replace",
        ),
        (
            "schedule-no-cron",
            schedule("name: s", ""),
            "spec.cron: required field is missing",
        ),
        (
            "schedule-unnamed",
            schedule("generateName: s-", ", cron: '* * * * *'"),
            "a Schedule needs a name",
        ),
        (
            "schedule-param-list",
            schedule("name: s", ", cron: '* * * * *', params: {a: [1, 2]}"),
            "spec.params.a: must be a string",
        ),
        (
            "schedule-negative-limit",
            schedule("name: s", ", cron: '* * * * *', failedRunsHistoryLimit: -3"),
            "is below the minimum 0",
        ),
        (
            "schedule-huge-deadline",
            schedule(
                "name: s",
                ", cron: '* * * * *', startingDeadlineSeconds: 1e400",
            ),
            "\"1e400\" is not a finite number",
        ),
        (
            "schedule-cron-map",
            schedule("name: s", ", cron: {minute: 5}"),
            "spec.cron: must be a string",
        ),
        (
            "schedule-suspend-text",
            schedule("name: s", ", cron: '* * * * *', suspend: sometimes"),
            "spec.suspend: must be true or false",
        ),
    ] {
        cases.push(text(name, manifest, expect));
    }
    cases
}

/// Cases refused by the validator (`src/compile/`): its messages and limits.
fn compile_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let t = |name: &str, manifest: String, expect: &str| text(name, manifest, expect);
    let long = "x".repeat(200_000);

    for (name, task_name, expect) in [
        ("task-200kb", long.clone(), "(200000 characters)"),
        ("task-nul", "\"t\\0\"".into(), "t\\0"),
        ("task-escape", "\"t\\e[31m\"".into(), "\\u{1b}"),
        ("task-dotdot", "../x".into(), "../x"),
        ("task-uppercase", "Extract".into(), "Extract"),
        ("task-64", "t".repeat(64), "64"),
    ] {
        cases.push(t(
            &format!("name-{name}"),
            workflow_spec(&format!(
                "tasks: [{{name: {task_name}, image: i, command: [touch, '{MARKER}']}}]"
            )),
            expect,
        ));
    }
    for (name, param, expect) in [
        ("param-200kb", long.clone(), "(200000 characters)"),
        ("param-escape", "\"p\\e[2J\"".into(), "\\u{1b}"),
        ("param-dash", "a-b".into(), "a-b"),
    ] {
        cases.push(t(
            &format!("name-{name}"),
            workflow_spec(&format!(
                "params: [{{name: {param}, default: x}}], tasks: [{}]",
                marker_task("t")
            )),
            expect,
        ));
    }
    for (name, input, expect) in [
        ("input-200kb", long.clone(), "(200000 characters)"),
        ("input-nul", "\"I\\0\"".into(), "I\\0"),
        ("input-dash", "a-b".into(), "a-b"),
    ] {
        cases.push(t(
            &format!("name-{name}"),
            task_with(&format!("inputs: [{{name: {input}, value: x}}]")),
            expect,
        ));
    }
    for (name, env, expect) in [
        ("env-200kb", long.clone(), "(200000 characters)"),
        ("env-equals", "\"A=B\"".into(), "A=B"),
        ("env-newline", "\"A\\nB\"".into(), "A\\nB"),
        ("env-empty", "''".into(), "env"),
    ] {
        cases.push(t(
            &format!("name-{name}"),
            task_with(&format!("env: [{{name: {env}, value: x}}]")),
            expect,
        ));
    }

    // Graph.
    cases.push(t(
        "cycle-three",
        workflow_spec(&format!(
            "defaults: {{image: i}}, tasks: [{{name: a, dependsOn: [c], command: [touch, '{MARKER}']}}, \
             {{name: b, dependsOn: [a], command: [x]}}, {{name: c, dependsOn: [b], command: [x]}}]"
        )),
        "cycle",
    ));
    // JSON (quoted scalars) is the quickest YAML to parse, which matters in a debug build.
    let tasks: Vec<String> = (0..100_000)
        .map(|i| {
            let command = if i == 0 { MARKER } else { "x" };
            format!(
                r#"{{"name": "t{i}", "dependsOn": ["t{}"], "command": ["touch", "{command}"]}}"#,
                (i + 1) % 100_000
            )
        })
        .collect();
    let cycle = format!(
        r#"{{"apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {{"name": "c"}}, "spec": {{"defaults": {{"image": "i"}}, "tasks": [{}]}}}}"#,
        tasks.join(",\n")
    );
    cases.push(Case {
        slow: true,
        ..t("cycle-100k-tasks", cycle, "cycle")
    });
    cases.push(t(
        "unknown-dependency",
        task_with("dependsOn: [nowhere]"),
        "nowhere",
    ));
    cases.push(t("self-dependency", task_with("dependsOn: [t]"), "itself"));
    cases.push(t(
        "duplicate-task-names",
        workflow_spec(&format!(
            "tasks: [{}, {}]",
            marker_task("t"),
            marker_task("t")
        )),
        "\"t\"",
    ));

    // Params.
    let mut params = String::from(
        "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {name: r}\nspec:\n  params:\n",
    );
    for i in 0..5_000 {
        params.push_str(&format!("    u{i}: x\n"));
    }
    params.push_str("  workflow:\n    params:\n");
    for i in 0..5_000 {
        params.push_str(&format!("    - name: p{i}\n"));
    }
    params.push_str(&format!("    tasks: [{}]\n", marker_task("t")));
    cases.push(t("params-5000-declared-5000-unknown", params, "u0"));
    cases.push(t(
        "param-missing",
        run_with("name: r", "").replace("{workflow: {", "{workflow: {params: [{name: date}], "),
        "date",
    ));
    cases.push(t(
        "param-unknown",
        run_with("name: r", ", params: {nope: x}"),
        "nope",
    ));

    // Inputs.
    cases.push(t(
        "input-two-sources",
        task_with("inputs: [{name: A, value: x, fromParam: p}]"),
        "A",
    ));
    cases.push(t("input-no-source", task_with("inputs: [{name: A}]"), "A"));
    cases.push(t(
        "input-output-without-task",
        task_with("inputs: [{name: A, output: k}]"),
        "A",
    ));
    cases.push(t(
        "input-from-task-not-upstream",
        workflow_spec(&format!(
            "tasks: [{}, {{name: b, image: i, command: [x], inputs: [{{name: A, fromTask: t, output: k}}]}}]",
            marker_task("t")
        )),
        "upstream",
    ));
    cases.push(t(
        "input-from-unknown-param",
        task_with("inputs: [{name: A, fromParam: nope}]"),
        "nope",
    ));

    // $(VAR) expansion bombs: E1 is 64 x, each next one 64 references to the one before.
    let mut env = vec![format!("{{name: E1, value: {}}}", "x".repeat(64))];
    for i in 2..=6 {
        env.push(format!(
            "{{name: E{i}, value: '{}'}}",
            format!("$(E{})", i - 1).repeat(64)
        ));
    }
    cases.push(t(
        "expansion-bomb-env",
        task_with(&format!("env: [{}]", env.join(", "))),
        "E",
    ));
    let args = format!("args: ['{}']", "$(E5)".repeat(64));
    cases.push(t(
        "expansion-bomb-args",
        task_with(&format!("env: [{}], {args}", env[..5].join(", "))),
        "E",
    ));

    // Resources and service accounts.
    cases.push(t(
        "quantity-banana",
        task_with("resources: {limits: {cpu: banana}}"),
        "banana",
    ));
    cases.push(t(
        "requests-above-limits",
        task_with("resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}"),
        "cpu",
    ));
    cases.push(t(
        "service-account-invalid",
        task_with("serviceAccountName: 'Not Valid'"),
        "Not Valid",
    ));
    cases.push(t(
        "service-account-200kb",
        task_with(&format!("serviceAccountName: {long}")),
        "(200000 characters)",
    ));
    // Finally tasks, conditions and the retry policy: one problem each.
    let two = |first: &str, second: &str| {
        workflow_spec(&format!(
            "params: [{{name: env, default: x}}], tasks: [{}, {{name: u, image: i, \
             command: [touch, '{MARKER}'], {second}}}], finally: [{first}]",
            marker_task("t")
        ))
    };
    let fin = marker_task("f");
    for (name, manifest, expect) in [
        (
            "trigger-unknown",
            task_with("trigger: Sometimes"),
            "must be one of AllSucceeded, AllDone, AnyFailed, got \"Sometimes\"",
        ),
        (
            "trigger-lowercase",
            task_with("trigger: allDone"),
            "got \"allDone\"",
        ),
        (
            "when-operator",
            two(&fin, "when: [{param: env, operator: Equals, values: [a]}]"),
            "must be one of In, NotIn, got \"Equals\"",
        ),
        (
            "when-no-values",
            two(&fin, "when: [{param: env, operator: In, values: []}]"),
            "at least one value",
        ),
        (
            "when-no-subject",
            two(&fin, "when: [{operator: In, values: [a]}]"),
            "exactly one of param or task",
        ),
        (
            "when-both",
            two(
                &fin,
                "when: [{param: env, task: t, output: k, operator: In, values: [a]}]",
            ),
            "found 2",
        ),
        (
            "when-undeclared-param",
            two(&fin, "when: [{param: nope, operator: In, values: [a]}]"),
            "undeclared parameter \"nope\"",
        ),
        (
            "when-not-upstream",
            two(
                &fin,
                "when: [{task: t, output: k, operator: In, values: [a]}]",
            ),
            "not upstream",
        ),
        (
            "when-no-output",
            two(
                &fin,
                "dependsOn: [t], when: [{task: t, operator: In, values: [a]}]",
            ),
            "names no output key",
        ),
        (
            "when-unknown-task",
            two(
                &fin,
                "when: [{task: ghost, output: k, operator: In, values: [a]}]",
            ),
            "unknown task \"ghost\"",
        ),
        (
            "when-finally-task",
            two(
                &fin,
                "when: [{task: f, output: k, operator: In, values: [a]}]",
            ),
            "a finally task",
        ),
        (
            "depends-on-finally",
            two(&fin, "dependsOn: [f]"),
            "depends on finally task \"f\"",
        ),
        (
            "input-from-finally",
            two(&fin, "inputs: [{name: X, fromTask: f, output: k}]"),
            "a finally task",
        ),
        (
            "finally-depends-on-regular",
            two(
                "{name: f, image: i, command: [touch, '@MARKER@'], dependsOn: [t]}",
                "timeoutSeconds: 5",
            ),
            "depends on regular task \"t\"",
        ),
        (
            "finally-duplicate-name",
            two(
                "{name: t, image: i, command: [touch, '@MARKER@']}",
                "timeoutSeconds: 5",
            ),
            "duplicate task name \"t\"",
        ),
        (
            "finally-cycle",
            two(
                "{name: f, image: i, command: [x], dependsOn: [g]}, {name: g, image: i, command: [x], dependsOn: [f]}",
                "timeoutSeconds: 5",
            ),
            "dependency cycle",
        ),
        (
            "retry-on-unknown",
            task_with("retries: {limit: 1, retryOn: [Crash]}"),
            "must be one of Error, Timeout, got \"Crash\"",
        ),
        (
            "exit-code-zero",
            task_with("retries: {limit: 1, exitCodes: [0]}"),
            "exit code 0",
        ),
        (
            "exit-code-300",
            task_with("retries: {limit: 1, exitCodes: [300]}"),
            "outside 1..255",
        ),
        (
            "exit-codes-without-error",
            task_with("retries: {limit: 1, retryOn: [Timeout], exitCodes: [3]}"),
            "retryOn leaves out",
        ),
        (
            "for-each-no-source",
            task_with("forEach: {parallelism: 2}"),
            "exactly one of items, fromParam or fromTask, found 0",
        ),
        (
            "for-each-two-sources",
            task_with("forEach: {items: [a], fromParam: p}"),
            "found 2",
        ),
        (
            "for-each-parallelism-zero",
            task_with("forEach: {items: [a], parallelism: 0}"),
            "forEach.parallelism",
        ),
        (
            "for-each-own-output",
            task_with("forEach: {fromTask: t, output: l}"),
            "forEach reads the task's own output",
        ),
        (
            "for-each-not-a-list",
            task_with("forEach: {items: {a: 1}}"),
            "forEach.items",
        ),
        (
            "for-each-too-many-items",
            task_with(&format!(
                "forEach: {{items: [{}]}}",
                vec!["0"; 10_001].join(",")
            )),
            "10001 items, at most 10000",
        ),
        (
            "pod-reserved-label",
            task_with("pod: {labels: {ork.dev/run: other}}"),
            "is under ork.dev/, which is ork's own",
        ),
        (
            "pod-toleration-seconds-huge",
            task_with("pod: {tolerations: [{key: k, operator: Exists, tolerationSeconds: 1e30}]}"),
            "tolerationSeconds",
        ),
        (
            "pod-affinity-not-a-mapping",
            task_with("pod: {affinity: [1, 2]}"),
            "pod.affinity",
        ),
        (
            "volume-mount-of-no-volume",
            task_with("volumeMounts: [{name: x, mountPath: /x}]"),
            "not one of the task's volumes",
        ),
        (
            "volume-mount-over-termination-log",
            task_with(
                "volumes: [{name: x, emptyDir: {}}], volumeMounts: [{name: x, mountPath: /dev/termination-log}]",
            ),
            "ork needs it",
        ),
    ] {
        cases.push(t(&format!("flow-{name}"), manifest, expect));
    }
    cases
}

// Paths that are not manifests.

fn big_file(dir: &Path) -> PathBuf {
    let path = dir.join("big.yaml");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(33 * 1024 * 1024).unwrap();
    path
}

fn huge_file(dir: &Path) -> PathBuf {
    let path = dir.join("huge.yaml");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(6 << 30).unwrap();
    path
}

fn link_to_fifo(dir: &Path) -> PathBuf {
    let target = fifo(dir);
    let path = dir.join("link-to-fifo.yaml");
    std::os::unix::fs::symlink(target, &path).unwrap();
    path
}

fn link_to_zero(dir: &Path) -> PathBuf {
    let path = dir.join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    path
}

fn fifo(dir: &Path) -> PathBuf {
    let path = dir.join("fifo.yaml");
    let status = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(status.success());
    path
}

fn directory(dir: &Path) -> PathBuf {
    let path = dir.join("dir.yaml");
    std::fs::create_dir(&path).unwrap();
    path
}

fn missing(dir: &Path) -> PathBuf {
    dir.join("missing.yaml")
}

fn dangling(dir: &Path) -> PathBuf {
    let path = dir.join("dangling.yaml");
    std::os::unix::fs::symlink(dir.join("nowhere"), &path).unwrap();
    path
}

/// What one command did.
struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: Vec<u8>,
    stderr_len: usize,
    elapsed: Duration,
}

/// Keeps the first `MAX_STDERR * 2` bytes of a stream and counts the rest, so a runaway writer
/// never blocks on a full pipe.
fn drain(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<(Vec<u8>, usize)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut total = 0;
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
            if kept.len() < MAX_STDERR * 2 {
                kept.extend_from_slice(&buf[..n]);
            }
        }
        (kept, total)
    })
}

fn run_ork(args: &[&std::ffi::OsStr], deadline: Duration) -> Result<Outcome, String> {
    let mut command = Command::new(ORK);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only calls setrlimit, which is async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            use nix::sys::resource::{Resource, setrlimit};
            setrlimit(Resource::RLIMIT_AS, MEMORY_LIMIT, MEMORY_LIMIT).map_err(std::io::Error::from)
        });
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start ork: {e}"))?;
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {deadline:?} (killed)"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = stdout.join();
    let (stderr, stderr_len) = stderr.join().map_err(|_| "stderr reader panicked")?;
    Ok(Outcome {
        code: status.code(),
        signal: status.signal(),
        stderr,
        stderr_len,
        elapsed: started.elapsed(),
    })
}

/// Runs `case` as both commands; `Err` says every way it failed.
fn check(case: &Case, root: &Path) -> Result<Duration, String> {
    let dir = root.join(&case.name);
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("MARKER");
    let input = match &case.input {
        Input::Text(text) => {
            let path = dir.join("manifest.yaml");
            std::fs::write(&path, text.replace(MARKER, marker.to_str().unwrap())).unwrap();
            path
        }
        Input::Bytes(bytes) => {
            let path = dir.join("manifest.yaml");
            std::fs::write(&path, bytes).unwrap();
            path
        }
        Input::Prepared(prepare) => prepare(&dir),
    };
    let deadline = if case.slow { SLOW_DEADLINE } else { DEADLINE };
    let work = dir.join("work");
    let commands: [Vec<&std::ffi::OsStr>; 2] = [
        vec!["validate".as_ref(), input.as_os_str()],
        vec![
            "run".as_ref(),
            "--work-dir".as_ref(),
            work.as_os_str(),
            input.as_os_str(),
        ],
    ];
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    for args in &commands {
        let what = args[0].to_string_lossy();
        match run_ork(args, deadline) {
            Err(e) => failures.push(format!("{what}: {e}")),
            Ok(out) => {
                slowest = slowest.max(out.elapsed);
                let stderr = String::from_utf8_lossy(&out.stderr);
                let head: String = stderr.chars().take(600).collect();
                if let Some(signal) = out.signal {
                    failures.push(format!("{what}: killed by signal {signal}; stderr: {head}"));
                }
                if out.code == Some(101) || stderr.contains("panicked") {
                    failures.push(format!("{what}: panicked: {head}"));
                }
                if out.code != Some(2) {
                    failures.push(format!(
                        "{what}: exit code {:?}, expected 2; stderr: {head}",
                        out.code
                    ));
                }
                if out.stderr_len >= MAX_STDERR {
                    failures.push(format!("{what}: {} bytes of stderr", out.stderr_len));
                }
                if !stderr.contains(&case.expect) {
                    failures.push(format!("{what}: stderr lacks {:?}: {head}", case.expect));
                }
            }
        }
    }
    if marker.exists() {
        failures.push("a task ran (the marker exists)".into());
    }
    if failures.is_empty() {
        Ok(slowest)
    } else {
        Err(failures.join("\n    "))
    }
}

/// Runs every case on a few threads, the slow ones first; panics listing every failure.
fn run_corpus(mut cases: Vec<Case>) {
    cases.sort_by_key(|c| !c.slow);
    let root = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let slowest = Mutex::new((Duration::ZERO, String::new()));
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                while let Some(case) = cases.get(next.fetch_add(1, Ordering::SeqCst)) {
                    match check(case, root.path()) {
                        Ok(took) => {
                            if took > Duration::from_secs(5) {
                                eprintln!("slow: {} ({took:.1?})", case.name);
                            }
                            let mut s = slowest.lock().unwrap();
                            if took > s.0 {
                                *s = (took, case.name.clone());
                            }
                        }
                        Err(why) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{}:\n    {why}", case.name)),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    let (took, name) = slowest.into_inner().unwrap();
    eprintln!(
        "{} cases; slowest command: {name} ({took:.1?})",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_inputs_are_refused_cleanly() {
    let cases = input_cases();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    run_corpus(cases);
}

/// The validator's part of the corpus (`src/compile/`).
#[test]
fn hostile_workflows_are_refused_by_the_validator() {
    run_corpus(compile_cases());
}

#[test]
fn the_corpus_has_at_least_120_distinct_cases() {
    let mut names: Vec<String> = input_cases()
        .into_iter()
        .chain(compile_cases())
        .map(|c| c.name)
        .collect();
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), total, "case names repeat");
    assert!(total >= 120, "{total} cases");
}
