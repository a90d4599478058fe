//! The commands on a cluster's Runs: they run with the user's kubeconfig and namespace, as
//! kubectl does, and say what went wrong in the user's terms.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use super::{ClusterArgs, EXIT_INVALID, GetFormat, Report, load, runtime};
use crate::api::RunPhase;
use crate::kubernetes::run_commands::{CommandError, RunCommand};
use crate::local::{Progress, Style};

/// `ork get`'s table: the tasks, then the run's phase, progress and message.
fn run_table(run: &crate::api::Run) -> String {
    let Some(status) = &run.status else {
        return format!(
            "Run {} has no status yet: the controller has not looked at it",
            crate::text::quoted(run.metadata.name.as_deref().unwrap_or("?"))
        );
    };
    let message = status.message().unwrap_or_default();
    format!(
        "{}\nRun {} {:?} ({}): {message}",
        crate::local::task_table(&status.tasks, false).trim_end(),
        run.metadata.name.as_deref().unwrap_or("?"),
        status.phase.unwrap_or(crate::api::RunPhase::Pending),
        status.progress.as_deref().unwrap_or("0/0"),
    )
}

/// How long a command on a Run waits for the controller's answer.
const COMMAND_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub(super) fn run_command(cluster: &ClusterArgs, target: &str, command: RunCommand) -> ExitCode {
    let name = run_name(target).to_string();
    let checked = name.clone();
    on_cluster(cluster, Some(&checked), |client, namespace| async move {
        crate::kubernetes::run_commands::run_command(
            &client,
            &namespace,
            &name,
            command,
            COMMAND_WAIT,
        )
        .await
    })
}

/// `run/NAME`, `runs/NAME` or `NAME`.
pub(super) fn run_name(target: &str) -> &str {
    ["run/", "runs/", "run.ork.dev/", "runs.ork.dev/"]
        .iter()
        .find_map(|prefix| target.strip_prefix(prefix))
        .unwrap_or(target)
}

/// Runs `command` with a client for `cluster` and its namespace, printing what it says: exit 0,
/// 1 when the cluster refused or failed, 2 for a name no Run can have.
pub(super) fn on_cluster<F, Fut>(cluster: &ClusterArgs, name: Option<&str>, command: F) -> ExitCode
where
    F: FnOnce(kube::Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<String, CommandError>>,
{
    if let Some(problem) = name.and_then(|n| crate::compile::names::object_name_error("Run", n)) {
        eprintln!("error: {problem}");
        return ExitCode::from(EXIT_INVALID);
    }
    with_cluster(cluster, |client, namespace| async move {
        let text = command(client, namespace).await?;
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        Ok(match writeln!(out, "{}", text.trim_end()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE, // e.g. a closed pipe
        })
    })
}

/// `ork get`: exit 0 with the Run on stdout, 1 when it cannot be read, 2 for a bad name.
pub(super) fn get(target: &str, cluster: &ClusterArgs, output: GetFormat) -> ExitCode {
    let name = run_name(target).to_string();
    let checked = name.clone();
    on_cluster(cluster, Some(&checked), |client, namespace| async move {
        let run = crate::kubernetes::get::full_run(&client, &namespace, &name)
            .await
            .map_err(|e| {
                CommandError(format!(
                    "cannot get Run {}: {e}",
                    crate::text::quoted(&name)
                ))
            })?;
        let encoded = match output {
            GetFormat::Table => return Ok(run_table(&run)),
            GetFormat::Json => serde_json::to_string_pretty(&run).map_err(|e| e.to_string()),
            GetFormat::Yaml => serde_saphyr::to_string(&run).map_err(|e| e.to_string()),
        };
        encoded.map_err(|e| CommandError(format!("cannot encode the Run: {e}")))
    })
}

/// `ork submit`: creates the Run; with `watch`, follows it as `ork watch` does.
pub(super) fn submit(
    file: Option<PathBuf>,
    workflow: Option<String>,
    params: BTreeMap<String, String>,
    watch: bool,
    cluster: &ClusterArgs,
) -> ExitCode {
    use crate::kubernetes::submit::{Source, create, submission};
    let mut report = Report::default();
    let documents = match &file {
        Some(file) => load(std::slice::from_ref(file), &mut report),
        None => Vec::new(),
    };
    if report.has_errors() {
        return report.finish();
    }
    let source = match &workflow {
        Some(name) => {
            if let Some(problem) = crate::compile::names::object_name_error("Workflow", name) {
                eprintln!("error: --workflow: {problem}");
                return ExitCode::from(EXIT_INVALID);
            }
            Source::Workflow(name)
        }
        None => Source::Documents(&documents),
    };
    let run = match submission(source, &params) {
        Ok(run) => run,
        Err(problems) => {
            for problem in problems {
                report.error("", &problem);
            }
            return report.finish();
        }
    };
    let chosen = cluster.namespace.is_some();
    with_cluster(cluster, |client, namespace| async move {
        let name = create(&client, &namespace, chosen, run).await?;
        if !watch {
            println!(
                "Run {} created in namespace {namespace}",
                crate::text::quoted(&name)
            );
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "Run {} created in namespace {namespace}",
            crate::text::quoted(&name)
        );
        follow(&client, &namespace, &name).await
    })
}

/// `ork watch RUN`.
pub(super) fn watch(target: &str, cluster: &ClusterArgs) -> ExitCode {
    let name = run_name(target).to_string();
    if let Some(problem) = crate::compile::names::object_name_error("Run", &name) {
        eprintln!("error: {problem}");
        return ExitCode::from(EXIT_INVALID);
    }
    with_cluster(cluster, |client, namespace| async move {
        follow(&client, &namespace, &name).await
    })
}

/// Shows Run `name`'s progress until it ends, then its table; the exit code says how it ended.
async fn follow(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<ExitCode, CommandError> {
    let terminal = std::io::stdout().is_terminal();
    let style = if terminal { Style::Live } else { Style::Plain };
    let progress = Arc::new(std::sync::Mutex::new(Progress::new(
        style,
        Box::new(std::io::stdout()),
        0,
    )));
    let refresher = Progress::keep_refreshed(&progress);
    let mut shown = ProgressRef(Arc::clone(&progress));
    let followed = tokio::select! {
        run = crate::kubernetes::watch_run::follow(
            client,
            namespace,
            name,
            |total| {
                if let Ok(mut p) = progress.lock() {
                    p.set_total(total);
                }
            },
            &mut shown,
        ) => Some(run),
        () = super::interrupted() => None,
    };
    if let Some(task) = refresher {
        task.abort();
    }
    if let Ok(mut p) = progress.lock() {
        p.finish();
    }
    let Some(run) = followed else {
        eprintln!(
            "stopped watching; Run {} goes on (ork cancel {name} stops it)",
            crate::text::quoted(name)
        );
        return Ok(ExitCode::from(130));
    };
    let run = run?;
    println!("{}", run_table(&run));
    println!("logs: ork logs {name} [TASK]");
    Ok(match run.status.and_then(|s| s.phase) {
        Some(RunPhase::Succeeded) => ExitCode::SUCCESS,
        Some(RunPhase::Cancelled) => ExitCode::from(130),
        _ => ExitCode::from(1),
    })
}

/// Lets the shared progress printer take task changes.
struct ProgressRef(Arc<std::sync::Mutex<Progress>>);

impl crate::local::Watcher for ProgressRef {
    fn task_changed(&mut self, before: &crate::api::TaskStatus, after: &crate::api::TaskStatus) {
        if let Ok(mut p) = self.0.lock() {
            p.task_changed(before, after);
        }
    }

    fn run_changed(&mut self, status: &crate::api::RunStatus) {
        if let Ok(mut p) = self.0.lock() {
            p.run_changed(status);
        }
    }
}

/// `ork logs`: lines as they come; exit 0, 1 when the run or task cannot be read.
pub(super) fn logs(
    cluster: &ClusterArgs,
    request: crate::kubernetes::logs::LogRequest,
) -> ExitCode {
    if let Some(problem) = crate::compile::names::object_name_error("Run", &request.run) {
        eprintln!("error: {problem}");
        return ExitCode::from(EXIT_INVALID);
    }
    with_cluster(cluster, |client, namespace| async move {
        let (lines, mut printed) = tokio::sync::mpsc::unbounded_channel();
        let printer = tokio::spawn(async move {
            use std::io::Write;
            while let Some(line) = printed.recv().await {
                let mut out = std::io::stdout().lock();
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return; // e.g. a closed pipe
                }
            }
        });
        let result = crate::kubernetes::logs::logs(&client, &namespace, &request, lines).await;
        let _ = printer.await;
        result.map(|()| ExitCode::SUCCESS)
    })
}

/// Runs `command` with a client for `cluster` and its namespace: its exit code, or 1 with its
/// error on stderr.
fn with_cluster<F, Fut>(cluster: &ClusterArgs, command: F) -> ExitCode
where
    F: FnOnce(kube::Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, CommandError>>,
{
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let (client, namespace) = connect(cluster).await?;
        command(client, namespace).await
    });
    result.unwrap_or_else(|CommandError(message)| {
        eprintln!("error: {message}");
        ExitCode::FAILURE
    })
}

/// A client for the user's kubeconfig, and the namespace to work in.
async fn connect(cluster: &ClusterArgs) -> Result<(kube::Client, String), CommandError> {
    let metrics = Arc::new(crate::kubernetes::Metrics::default());
    let client = crate::kubernetes::client::client(cluster.kubeconfig.as_deref(), metrics)
        .await
        .map_err(|e| CommandError(format!("cannot reach the cluster: {e}")))?;
    let namespace = cluster
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    Ok((client, namespace))
}

/// `ork dashboard`: serves the page until Ctrl-C.
pub(super) fn dashboard(address: &str, cluster: &ClusterArgs) -> ExitCode {
    let address = address.to_string();
    with_cluster(cluster, |client, namespace| async move {
        let (listener, access) = crate::dashboard::bind(&address)
            .await
            .map_err(CommandError)?;
        if !access.at.ip().is_loopback() {
            eprintln!(
                "warning: the dashboard acts with your credentials for anyone who can reach \
                 {} and has its address (token included); keep it on 127.0.0.1 unless that is \
                 what you want",
                access.at
            );
        }
        println!(
            "ork dashboard: {} (namespace {namespace}; Ctrl-C stops it)",
            access.url("")
        );
        let source = crate::dashboard::Source::Cluster(crate::dashboard::ClusterSource::new(
            client, namespace,
        ));
        crate::dashboard::serve(listener, source, access, super::interrupted())
            .await
            .map_err(|e| CommandError(format!("the dashboard stopped: {e}")))?;
        Ok(ExitCode::SUCCESS)
    })
}
