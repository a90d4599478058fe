//! Validation and compilation of a [`WorkflowSpec`] into a [`Dag`], in time linear in the size
//! of the workflow. Every problem is reported at once, each naming the field and the task.
//!
//! This is the only validator: `ork validate`, `ork run` and the controller all call it, so
//! they cannot disagree about what is valid.

mod dag;
mod expansion;
mod graph;
pub mod names;
mod params;
mod pod;
mod quantity;
mod resources;
mod workspaces;
pub use workspaces::{check_bindings, shared_read_write_once, unbound_required};

use std::collections::{HashMap, HashSet};

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::EnvVar;

use crate::api::{
    MAX_FAN_OUT, RETRY_ON, RetryPolicy, TRIGGERS, TaskDefaults, TaskSpec, WHEN_OPERATORS,
    WorkflowSpec,
};
use crate::problem::Problems;
use crate::text::{MAX_LIST_ITEMS, names, quoted};

pub use dag::{
    CompiledTask, Dag, ForEach, Input, InputSource, ItemSource, Retry, RetryOn, TaskId, Trigger,
    When, WhenSubject,
};
pub use params::{BoundParams, bind_params};

use dag::Adjacency;
use expansion::{EnvOrigin, TaskEnv, check_expansions};
use graph::{RefPlace, TaskRef};
use names::{
    RESERVED_ENV_PREFIX, dns_label_error, dns_subdomain_error, env_name_error, identifier_error,
};
use resources::check_resources;

/// Longest `timeoutSeconds` and `activeDeadlineSeconds` the CRD schema accepts: 2^53 - 1 (about
/// 285 million years), the largest whole number every JSON implementation reads exactly.
pub const MAX_SECONDS: u64 = (1 << 53) - 1;

/// Validates `spec` and compiles it. `base` is the path of the spec in its object (`spec`, or
/// `spec.workflow` for a run's inline definition) and prefixes every problem's field.
pub fn compile(spec: &WorkflowSpec, base: &str) -> Result<Dag, Problems> {
    let mut problems = Problems::default();
    if spec.tasks.is_empty() {
        problems.push(
            format!("{base}.tasks"),
            "a workflow needs at least one task",
        );
    }
    if spec.parallelism == Some(0) {
        problems.push(format!("{base}.parallelism"), "must be at least 1");
    }
    if let Some(why) = seconds_error(spec.active_deadline_seconds) {
        problems.push(format!("{base}.activeDeadlineSeconds"), why);
    }
    let param_index = check_params(spec, base, &mut problems);
    let workspaces = workspaces::declared(&spec.workspaces, base, &mut problems);
    let defaults = spec.defaults.clone().unwrap_or_default();
    check_defaults(&defaults, base, &mut problems);

    // Regular tasks, then the finally tasks: one namespace of names, one index space.
    let all: Vec<&TaskSpec> = spec.tasks.iter().chain(&spec.finally).collect();
    let regular = spec.tasks.len();
    let paths: Vec<String> = (0..all.len())
        .map(|i| match i.checked_sub(regular) {
            None => format!("{base}.tasks[{i}]"),
            Some(j) => format!("{base}.finally[{j}]"),
        })
        .collect();

    // Names first, so references can be resolved against the full set. A badly formed name is
    // still indexed: references to it resolve, and only the name itself is reported.
    let mut index: HashMap<String, TaskId> = HashMap::with_capacity(all.len());
    for (i, task) in all.iter().enumerate() {
        let field = format!("{}.name", paths[i]);
        let first = index.get(&task.name).copied();
        if let Some(err) = dns_label_error(&task.name) {
            problems.push(field, format!("task name {err}"));
        } else if let Some(first) = first {
            problems.push(
                field,
                format!(
                    "duplicate task name {} (also {})",
                    quoted(&task.name),
                    paths[first.index()]
                ),
            );
        }
        if first.is_none() {
            index.insert(task.name.clone(), TaskId(i as u32));
        }
    }

    let mut edges: Vec<(TaskId, TaskId)> = Vec::new();
    // `seen_parent[p] == child + 1` when p is already recorded as a parent of child: linear dedup.
    let mut seen_parent = vec![0u32; all.len()];
    let mut tasks = Vec::with_capacity(all.len());
    let mut task_refs: Vec<TaskRef> = Vec::new();
    let defaults_at = format!("{base}.defaults");
    let mut defaults_reported = vec![false; defaults.env.len()];
    for (i, task) in all.iter().enumerate() {
        let id = TaskId(i as u32);
        let at = &paths[i];
        let finally = i >= regular;
        let who = Owner::Task(&task.name);
        for (j, dep) in task.depends_on.iter().enumerate() {
            let field = format!("{at}.dependsOn[{j}]");
            match index.get(dep.as_str()) {
                None => problems.push(
                    field,
                    format!("{who} depends on unknown task {}", quoted(dep)),
                ),
                Some(&parent) if parent == id => {
                    problems.push(field, format!("{who} depends on itself"))
                }
                Some(&parent) if finally && parent.index() < regular => problems.push(
                    field,
                    format!(
                        "finally {who} depends on regular task {}: finally tasks start after \
                         every regular task anyway (read its outputs with inputs.fromTask)",
                        quoted(dep)
                    ),
                ),
                Some(&parent) if !finally && parent.index() >= regular => problems.push(
                    field,
                    format!(
                        "{who} depends on finally task {}: finally tasks run after every \
                         regular task",
                        quoted(dep)
                    ),
                ),
                Some(&parent) => {
                    if seen_parent[parent.index()] != id.0 + 1 {
                        seen_parent[parent.index()] = id.0 + 1;
                        edges.push((parent, id));
                    }
                }
            }
        }
        let mut context = TaskContext {
            id,
            regular,
            defaults: &defaults,
            defaults_at: &defaults_at,
            defaults_reported: &mut defaults_reported,
            tasks: &index,
            params: &param_index,
            problems: &mut problems,
            task_refs: &mut task_refs,
            workspaces: &workspaces,
        };
        tasks.push(compile_task(task, at, who, &mut context));
    }

    let children = Adjacency::from_edges(all.len(), &edges);
    let reversed: Vec<(TaskId, TaskId)> = edges.iter().map(|&(p, c)| (c, p)).collect();
    let parents = Adjacency::from_edges(all.len(), &reversed);
    match graph::topological_order(&children, &parents) {
        Ok(order) => graph::check_inputs_upstream(
            &all,
            &paths,
            &task_refs,
            &children,
            &parents,
            &order,
            &mut problems,
        ),
        Err(cycles) => {
            let name = |id: &TaskId| all[id.index()].name.as_str();
            for cycle in cycles {
                let mut message = format!(
                    "dependency cycle: {} (each task depends on the next)",
                    cycle_text(cycle.tasks.iter().map(name))
                );
                if !cycle.others.is_empty() {
                    message.push_str(&format!(
                        "; further cycles through these tasks also involve {}",
                        names(cycle.others.iter().map(name))
                    ));
                }
                problems.push(
                    format!("{}.dependsOn", paths[cycle.tasks[0].index()]),
                    message,
                );
            }
        }
    }

    let dag = Dag {
        tasks,
        index,
        children,
        parents,
        params: spec.params.clone(),
        parallelism: spec.parallelism,
        active_deadline: spec
            .active_deadline_seconds
            .map(|s| SignedDuration::from_secs(s.min(i64::MAX as u64) as i64)),
        regular,
        workspaces: spec.workspaces.clone(),
    };
    problems.into_result(dag)
}

/// Whose field a problem is about, as messages name it: `task "extract"` or `the defaults`.
/// Formatted only when a message is built: most tasks have no problem.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Owner<'a> {
    Task(&'a str),
    Defaults,
}

impl std::fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Task(name) => write!(f, "task {}", Quoted(name)),
            Owner::Defaults => f.write_str("the defaults"),
        }
    }
}

/// A name as [`quoted`] shows it, built only if a message is: most names are in none.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&quoted(self.0))
    }
}

/// `"a" -> "b" -> "c" -> "a"`: the first [`MAX_LIST_ITEMS`] tasks of a cycle, then how many more,
/// then the first again to close it.
fn cycle_text<'a>(mut tasks: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = tasks.len();
    let Some(first) = tasks.next() else {
        return String::new();
    };
    let mut text = quoted(first);
    for task in tasks.by_ref().take(MAX_LIST_ITEMS - 1) {
        text.push_str(" -> ");
        text.push_str(&quoted(task));
    }
    if total > MAX_LIST_ITEMS {
        text.push_str(&format!(" -> … ({} more)", total - MAX_LIST_ITEMS));
    }
    text.push_str(" -> ");
    text.push_str(&quoted(first));
    text
}

fn check_params(
    spec: &WorkflowSpec,
    base: &str,
    problems: &mut Problems,
) -> HashMap<String, usize> {
    let mut index = HashMap::with_capacity(spec.params.len());
    for (i, param) in spec.params.iter().enumerate() {
        let field = format!("{base}.params[{i}].name");
        // As for tasks, a badly formed name is still indexed so only the name is reported.
        let duplicate = index.contains_key(&param.name);
        if let Some(why) = identifier_error("parameter name", &param.name) {
            problems.push(field, why);
        } else if duplicate {
            problems.push(
                field,
                format!("duplicate parameter name {}", quoted(&param.name)),
            );
        }
        if !duplicate {
            index.insert(param.name.clone(), i);
        }
    }
    index
}

fn check_defaults(defaults: &TaskDefaults, base: &str, problems: &mut Problems) {
    let at = format!("{base}.defaults");
    let owner = Owner::Defaults;
    if defaults.image.as_deref() == Some("") {
        problems.push(
            format!("{at}.image"),
            format!("{owner}: image must not be empty"),
        );
    }
    if let Some(why) = seconds_error(defaults.timeout_seconds) {
        problems.push(format!("{at}.timeoutSeconds"), format!("{owner}: {why}"));
    }
    if let Some(retries) = &defaults.retries {
        check_retries(retries, &format!("{at}.retries"), owner, problems);
    }
    check_env(&defaults.env, &at, owner, problems);
    if let Some(resources) = &defaults.resources {
        check_resources(resources, &format!("{at}.resources"), owner, problems);
    }
    check_service_account(
        defaults.service_account_name.as_deref(),
        &at,
        owner,
        problems,
    );
    if let Some(settings) = &defaults.pod {
        pod::check_pod(settings, &format!("{at}.pod"), owner, problems);
    }
}

/// Why a number of seconds is out of range, if it is: as the CRD schema says, from 1 to
/// [`MAX_SECONDS`] (the largest whole number JSON readers agree on), so `ork validate` accepts
/// exactly what the API server does.
fn seconds_error(seconds: Option<u64>) -> Option<String> {
    match seconds? {
        0 => Some("must be at least 1".into()),
        s if s > MAX_SECONDS => Some(format!("{s} is above the maximum {MAX_SECONDS}")),
        _ => None,
    }
}

/// `serviceAccountName` of the object at `at`. An empty name is Kubernetes' default service
/// account; any other must be a DNS subdomain.
fn check_service_account(name: Option<&str>, at: &str, owner: Owner, problems: &mut Problems) {
    if let Some(why) = name.filter(|n| !n.is_empty()).and_then(dns_subdomain_error) {
        problems.push(
            format!("{at}.serviceAccountName"),
            format!("{owner}: service account name {why}"),
        );
    }
}

fn check_retries(retries: &RetryPolicy, at: &str, owner: Owner, problems: &mut Problems) {
    for (j, kind) in retries.retry_on.iter().enumerate() {
        if !RETRY_ON.contains(&kind.as_str()) {
            problems.push(
                format!("{at}.retryOn[{j}]"),
                format!(
                    "{owner}: unknown failure kind {}; use {}",
                    quoted(kind),
                    RETRY_ON.join(" or ")
                ),
            );
        }
    }
    if !retries.exit_codes.is_empty()
        && !retries.retry_on.is_empty()
        && !retries.retry_on.iter().any(|k| k == "Error")
    {
        problems.push(
            format!("{at}.exitCodes"),
            format!("{owner}: exitCodes only applies to Error, which retryOn leaves out"),
        );
    }
    for (j, code) in retries.exit_codes.iter().enumerate() {
        if *code == 0 {
            problems.push(
                format!("{at}.exitCodes[{j}]"),
                format!("{owner}: exit code 0 is a success, never retried"),
            );
        } else if !(1..=255).contains(code) {
            problems.push(
                format!("{at}.exitCodes[{j}]"),
                format!(
                    "{owner}: exit code {code} is outside 1..255, the codes a process can exit with"
                ),
            );
        }
    }
    let Some(backoff) = &retries.backoff else {
        return;
    };
    let mut check = |name: &str, value: Option<f64>, min: f64| {
        if let Some(v) = value
            && !(v.is_finite() && v >= min)
        {
            problems.push(
                format!("{at}.backoff.{name}"),
                format!("{owner}: must be a number of at least {min}, got {v}"),
            );
        }
    };
    check("initialSeconds", backoff.initial_seconds, 0.0);
    check("factor", backoff.factor, 1.0);
    check("maxSeconds", backoff.max_seconds, 0.0);
}

/// `env` of the object at `at`.
fn check_env(env: &[EnvVar], at: &str, owner: Owner, problems: &mut Problems) {
    for (j, var) in env.iter().enumerate() {
        if let Some(why) = env_name_error(&var.name) {
            problems.push(format!("{at}.env[{j}].name"), format!("{owner}: {why}"));
        } else if var.name.starts_with(RESERVED_ENV_PREFIX) {
            problems.push(
                format!("{at}.env[{j}].name"),
                format!(
                    "{owner}: env name {} uses the reserved prefix {RESERVED_ENV_PREFIX}",
                    quoted(&var.name)
                ),
            );
        }
        if var.value.is_some() && var.value_from.is_some() {
            problems.push(
                format!("{at}.env[{j}]"),
                format!(
                    "{owner}: env {} sets both value and valueFrom",
                    quoted(&var.name)
                ),
            );
        }
    }
}

/// What a task is compiled against, and where findings go.
struct TaskContext<'a> {
    id: TaskId,
    /// Number of regular tasks: ids from here on are finally tasks.
    regular: usize,
    defaults: &'a TaskDefaults,
    /// `spec.defaults`.
    defaults_at: &'a str,
    /// Which default env entries were already reported too long once expanded.
    defaults_reported: &'a mut [bool],
    tasks: &'a HashMap<String, TaskId>,
    params: &'a HashMap<String, usize>,
    problems: &'a mut Problems,
    /// `fromTask` inputs naming another existing task, checked once the graph is known.
    task_refs: &'a mut Vec<TaskRef>,
    /// The workflow's workspaces, by name.
    workspaces: &'a HashMap<&'a str, &'a crate::api::WorkspaceDecl>,
}

fn compile_task(task: &TaskSpec, at: &str, who: Owner, cx: &mut TaskContext<'_>) -> CompiledTask {
    let when = compile_when(task, at, who, cx);
    let for_each = compile_for_each(task, at, who, cx);
    let TaskContext {
        id,
        regular,
        defaults,
        defaults_at,
        ref mut defaults_reported,
        tasks,
        params,
        ref mut problems,
        ref mut task_refs,
        workspaces: declared_workspaces,
    } = *cx;
    let image = task.image.clone().or_else(|| defaults.image.clone());
    match (&task.image, &defaults.image) {
        (Some(own), _) if own.is_empty() => problems.push(
            format!("{at}.image"),
            format!("{who}: image must not be empty"),
        ),
        (None, None) => problems.push(
            format!("{at}.image"),
            format!("{who} has no image, and defaults.image is not set"),
        ),
        // An empty defaults.image is reported once, at the defaults.
        _ => {}
    }
    if task.command.is_empty() {
        problems.push(
            format!("{at}.command"),
            format!("{who} has no command (ork runs the command itself, with or without an image)"),
        );
    }
    if let Some(why) = seconds_error(task.timeout_seconds) {
        problems.push(format!("{at}.timeoutSeconds"), format!("{who}: {why}"));
    }
    if let Some(retries) = &task.retries {
        check_retries(retries, &format!("{at}.retries"), who, problems);
    }
    check_env(&task.env, at, who, problems);
    if let Some(resources) = &task.resources {
        check_resources(resources, &format!("{at}.resources"), who, problems);
    }
    check_service_account(task.service_account_name.as_deref(), at, who, problems);
    if let Some(settings) = &task.pod {
        pod::check_pod(settings, &format!("{at}.pod"), who, problems);
    }
    pod::check_volumes(&task.volumes, &task.volume_mounts, at, who, problems);
    let workspaces = workspaces::task_mounts(task, declared_workspaces, at, who, problems);

    let own_env: HashSet<&str> = task.env.iter().map(|e| e.name.as_str()).collect();
    let mut input_names: HashSet<&str> = HashSet::with_capacity(task.inputs.len());
    let mut inputs = Vec::with_capacity(task.inputs.len());
    for (j, input) in task.inputs.iter().enumerate() {
        let field = format!("{at}.inputs[{j}]");
        let name = input.name.as_str();
        let shown = Quoted(name);
        if let Some(why) = identifier_error("input name", name) {
            problems.push(format!("{field}.name"), format!("{who}: {why}"));
        } else if name.starts_with(RESERVED_ENV_PREFIX) {
            problems.push(
                format!("{field}.name"),
                format!("{who}: input name {shown} uses the reserved prefix {RESERVED_ENV_PREFIX}"),
            );
        } else if !input_names.insert(name) {
            problems.push(
                format!("{field}.name"),
                format!("{who}: duplicate input {shown}"),
            );
        } else if own_env.contains(name) {
            problems.push(
                format!("{field}.name"),
                format!("{who}: input {shown} collides with an env entry of the same name"),
            );
        }
        let sources = [
            input.value.is_some(),
            input.from_param.is_some(),
            input.from_task.is_some(),
        ];
        let count = sources.iter().filter(|s| **s).count();
        if count != 1 {
            problems.push(
                field.clone(),
                format!(
                    "{who}: input {shown} needs exactly one of value, fromParam or fromTask, \
                     found {count}"
                ),
            );
        }
        if input.output.is_some() && input.from_task.is_none() {
            problems.push(
                format!("{field}.output"),
                format!("{who}: input {shown} sets output without fromTask"),
            );
        }
        let source = if let Some(value) = &input.value {
            Some(InputSource::Value(value.clone()))
        } else if let Some(param) = &input.from_param {
            match params.get(param) {
                Some(&p) => Some(InputSource::Param(p)),
                None => {
                    problems.push(
                        format!("{field}.fromParam"),
                        format!(
                            "{who}: input {shown} reads undeclared parameter {}",
                            quoted(param)
                        ),
                    );
                    None
                }
            }
        } else if let Some(from) = &input.from_task {
            let output = match &input.output {
                Some(key) if !key.is_empty() => Some(key.clone()),
                _ => {
                    problems.push(
                        format!("{field}.output"),
                        format!(
                            "{who}: input {shown} reads task {} but names no output key",
                            quoted(from)
                        ),
                    );
                    None
                }
            };
            let upstream = match tasks.get(from.as_str()) {
                Some(&source) if source == id => {
                    problems.push(
                        format!("{field}.fromTask"),
                        format!("{who}: input {shown} reads the task's own output"),
                    );
                    Some(source)
                }
                Some(&source) => {
                    if let Some(why) = read_error(id, source, regular) {
                        problems.push(
                            format!("{field}.fromTask"),
                            format!("{who}: input {shown} reads task {}: {why}", quoted(from)),
                        );
                    } else if !(id.index() >= regular && source.index() < regular) {
                        task_refs.push(TaskRef {
                            consumer: id,
                            place: RefPlace::Input(j),
                            source,
                        });
                    }
                    Some(source)
                }
                None => {
                    problems.push(
                        format!("{field}.fromTask"),
                        format!("{who}: input {shown} reads unknown task {}", quoted(from)),
                    );
                    None
                }
            };
            upstream
                .zip(output)
                .map(|(task, output)| InputSource::Task { task, output })
        } else {
            None
        };
        if let Some(source) = source {
            inputs.push(Input {
                name: input.name.clone(),
                source,
            });
        }
    }

    let env = env_entries(&defaults.env, &task.env, &input_names);
    check_expansions(
        &TaskEnv {
            at,
            defaults_at,
            who,
            env: &env,
            inputs: &input_names,
            command: &task.command,
            args: &task.args,
        },
        defaults_reported,
        problems,
    );

    CompiledTask {
        name: task.name.clone(),
        image,
        command: task.command.clone(),
        args: task.args.clone(),
        env: env.into_iter().map(|(_, var)| var.clone()).collect(),
        inputs,
        retry: merge_retry(task.retries.as_ref(), defaults.retries.as_ref()),
        timeout: task
            .timeout_seconds
            .or(defaults.timeout_seconds)
            .map(|s| SignedDuration::from_secs(s.min(i64::MAX as u64) as i64)),
        resources: task
            .resources
            .clone()
            .or_else(|| defaults.resources.clone()),
        service_account_name: task
            .service_account_name
            .clone()
            .or_else(|| defaults.service_account_name.clone()),
        retry_on: retry_on(task.retries.as_ref().or(defaults.retries.as_ref())),
        finally: id.index() >= regular,
        when,
        trigger: compile_trigger(task.trigger.as_deref(), at, who, problems),
        continue_on_failure: task.continue_on_failure,
        for_each,
        pod: defaults
            .pod
            .clone()
            .unwrap_or_default()
            .merged(&task.pod.clone().unwrap_or_default()),
        security_context: task.security_context.clone(),
        volumes: task.volumes.clone(),
        volume_mounts: task.volume_mounts.clone(),
        workspaces,
    }
}

/// The task's `forEach`, checked: exactly one source (a literal list of at most
/// [`MAX_FAN_OUT`] items, a declared param, or an upstream task and an output key).
fn compile_for_each(
    task: &TaskSpec,
    at: &str,
    who: Owner,
    cx: &mut TaskContext<'_>,
) -> Option<ForEach> {
    let spec = task.for_each.as_ref()?;
    let field = format!("{at}.forEach");
    if spec.parallelism == Some(0) {
        cx.problems.push(
            format!("{field}.parallelism"),
            format!("{who}: forEach.parallelism must be at least 1"),
        );
    }
    let found = usize::from(spec.items.is_some())
        + usize::from(spec.from_param.is_some())
        + usize::from(spec.from_task.is_some());
    if found != 1 {
        cx.problems.push(
            field.clone(),
            format!(
                "{who}: forEach needs exactly one of items, fromParam or fromTask, found {found}"
            ),
        );
    }
    if spec.output.is_some() && spec.from_task.is_none() {
        cx.problems.push(
            format!("{field}.output"),
            format!("{who}: forEach sets output without fromTask"),
        );
    }
    let source = if let Some(items) = &spec.items {
        if items.len() > MAX_FAN_OUT {
            cx.problems.push(
                format!("{field}.items"),
                format!(
                    "{who}: forEach.items has {} items, at most {MAX_FAN_OUT} are allowed",
                    items.len()
                ),
            );
        }
        Some(ItemSource::Items(items.as_slice().into()))
    } else if let Some(param) = &spec.from_param {
        match cx.params.get(param) {
            Some(&p) => Some(ItemSource::Param(p)),
            None => {
                cx.problems.push(
                    format!("{field}.fromParam"),
                    format!(
                        "{who}: forEach reads undeclared parameter {}",
                        quoted(param)
                    ),
                );
                None
            }
        }
    } else if let Some(from) = &spec.from_task {
        let at = output_read(
            spec.output.as_deref(),
            from,
            &field,
            RefPlace::ForEach,
            who,
            cx,
        );
        at.map(|(task, output)| ItemSource::Task { task, output })
    } else {
        None
    };
    source.map(|source| ForEach {
        source,
        parallelism: spec.parallelism,
    })
}

/// The task's `when` entries, each checked: one subject (a declared param, or an upstream task
/// and an output key), a known operator, at least one value.
fn compile_when(task: &TaskSpec, at: &str, who: Owner, cx: &mut TaskContext<'_>) -> Vec<When> {
    let mut when = Vec::with_capacity(task.when.len());
    for (j, entry) in task.when.iter().enumerate() {
        let field = format!("{at}.when[{j}]");
        let negated = match entry.operator.as_str() {
            "In" => false,
            "NotIn" => true,
            other => {
                cx.problems.push(
                    format!("{field}.operator"),
                    format!(
                        "{who}: when[{j}] has unknown operator {}; use one of {}",
                        quoted(other),
                        WHEN_OPERATORS.join(", ")
                    ),
                );
                false
            }
        };
        if entry.values.is_empty() {
            cx.problems.push(
                format!("{field}.values"),
                format!("{who}: when[{j}] needs at least one value"),
            );
        }
        let subject = match (&entry.param, &entry.task) {
            (Some(param), None) => {
                if entry.output.is_some() {
                    cx.problems.push(
                        format!("{field}.output"),
                        format!("{who}: when[{j}] sets output without task"),
                    );
                }
                match cx.params.get(param) {
                    Some(&p) => Some(WhenSubject::Param(p)),
                    None => {
                        cx.problems.push(
                            format!("{field}.param"),
                            format!(
                                "{who}: when[{j}] reads undeclared parameter {}",
                                quoted(param)
                            ),
                        );
                        None
                    }
                }
            }
            (None, Some(from)) => output_read(
                entry.output.as_deref(),
                from,
                &field,
                RefPlace::When(j),
                who,
                cx,
            )
            .map(|(task, output)| WhenSubject::Task { task, output }),
            (param, from) => {
                let found = usize::from(param.is_some()) + usize::from(from.is_some());
                cx.problems.push(
                    field.clone(),
                    format!("{who}: when[{j}] needs exactly one of param or task, found {found}"),
                );
                None
            }
        };
        if let Some(subject) = subject {
            when.push(When {
                subject,
                negated,
                values: entry.values.clone(),
            });
        }
    }
    when
}

/// A read of output key `output` of task `from` by the task in `cx`, from a `when` entry or
/// `forEach` (`place`) at `field`: the key must be named, and the task exist, not be the reader
/// itself and, for a regular reader, not be a finally task. Whether it is upstream is checked
/// later, for every read at once; a finally task may read any regular task.
fn output_read(
    output: Option<&str>,
    from: &str,
    field: &str,
    place: RefPlace,
    who: Owner,
    cx: &mut TaskContext<'_>,
) -> Option<(TaskId, String)> {
    let (what, task_key) = match place {
        RefPlace::When(j) => (format!("when[{j}]"), "task"),
        RefPlace::ForEach => ("forEach".to_string(), "fromTask"),
        RefPlace::Input(j) => (format!("inputs[{j}]"), "fromTask"),
    };
    let output = match output {
        Some(key) if !key.is_empty() => Some(key.to_string()),
        _ => {
            cx.problems.push(
                format!("{field}.output"),
                format!(
                    "{who}: {what} reads task {} but names no output key",
                    quoted(from)
                ),
            );
            None
        }
    };
    let source = match cx.tasks.get(from) {
        None => {
            cx.problems.push(
                format!("{field}.{task_key}"),
                format!("{who}: {what} reads unknown task {}", quoted(from)),
            );
            return None;
        }
        Some(&source) if source == cx.id => {
            cx.problems.push(
                format!("{field}.{task_key}"),
                format!("{who}: {what} reads the task's own output"),
            );
            return None;
        }
        Some(&source) => source,
    };
    if let Some(why) = read_error(cx.id, source, cx.regular) {
        cx.problems.push(
            format!("{field}.{task_key}"),
            format!("{who}: {what} reads task {}: {why}", quoted(from)),
        );
    } else if !(cx.id.index() >= cx.regular && source.index() < cx.regular) {
        cx.task_refs.push(TaskRef {
            consumer: cx.id,
            place,
            source,
        });
    }
    output.map(|output| (source, output))
}

/// Why task `consumer` may not read an output of `source`, if it may not: a regular task
/// cannot read a finally task (it has not run yet).
fn read_error(consumer: TaskId, source: TaskId, regular: usize) -> Option<&'static str> {
    (consumer.index() < regular && source.index() >= regular)
        .then_some("a finally task, which runs after every regular task")
}

fn compile_trigger(
    trigger: Option<&str>,
    at: &str,
    who: Owner,
    problems: &mut Problems,
) -> Trigger {
    match trigger {
        None | Some("AllSucceeded") => Trigger::AllSucceeded,
        Some("AllDone") => Trigger::AllDone,
        Some("AnyFailed") => Trigger::AnyFailed,
        Some(other) => {
            problems.push(
                format!("{at}.trigger"),
                format!(
                    "{who}: unknown trigger {}; use one of {}",
                    quoted(other),
                    TRIGGERS.join(", ")
                ),
            );
            Trigger::AllSucceeded
        }
    }
}

/// The task's env: defaults first, then the task's own entries; a task entry or an input
/// replaces a default of the same name. Each entry with where it is written.
fn env_entries<'a>(
    defaults: &'a [EnvVar],
    own: &'a [EnvVar],
    inputs: &HashSet<&str>,
) -> Vec<(EnvOrigin, &'a EnvVar)> {
    let own_names: HashSet<&str> = own.iter().map(|e| e.name.as_str()).collect();
    let kept_defaults = defaults
        .iter()
        .enumerate()
        .filter(|(_, e)| !own_names.contains(e.name.as_str()) && !inputs.contains(e.name.as_str()))
        .map(|(j, e)| (EnvOrigin::Default(j), e));
    let own = own.iter().enumerate().map(|(j, e)| (EnvOrigin::Own(j), e));
    kept_defaults.chain(own).collect()
}

/// Which failures the task's retry policy (or the default's) retries.
fn retry_on(policy: Option<&RetryPolicy>) -> RetryOn {
    let Some(policy) = policy else {
        return RetryOn::default();
    };
    let named =
        |kind: &str| policy.retry_on.is_empty() || policy.retry_on.iter().any(|k| k == kind);
    RetryOn {
        error: named("Error"),
        timeout: named("Timeout"),
        exit_codes: policy.exit_codes.clone(),
    }
}

/// The task's `retries` replaces the default's limit; its backoff falls back to the default's.
fn merge_retry(own: Option<&RetryPolicy>, defaults: Option<&RetryPolicy>) -> Retry {
    let Some(policy) = own.or(defaults) else {
        return Retry::default();
    };
    let backoff = policy
        .backoff
        .as_ref()
        .or_else(|| defaults.and_then(|d| d.backoff.as_ref()));
    let pick = |f: fn(&crate::api::Backoff) -> Option<f64>, default: f64| {
        backoff.and_then(f).unwrap_or(default)
    };
    Retry {
        limit: policy.limit,
        initial_seconds: pick(|b| b.initial_seconds, Retry::DEFAULT_INITIAL_SECONDS),
        factor: pick(|b| b.factor, Retry::DEFAULT_FACTOR),
        max_seconds: pick(|b| b.max_seconds, Retry::DEFAULT_MAX_SECONDS),
    }
}

#[cfg(test)]
mod tests;
