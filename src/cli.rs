//! The `ork` command line.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::RunPhase;
use crate::compile::{bind_params, compile};
use crate::local::{OrchestratorConfig, Progress, Style, plan_run, run_local, summary};
use crate::manifest::{Document, LoadError, Manifest, load_file};

/// Exit code for invalid input: nothing was run.
pub const EXIT_INVALID: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "ork",
    version,
    about = "Run DAG workflows on this machine or on Kubernetes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow on this machine: every task's command runs as a local process.
    ///
    /// FILE holds a Workflow, or a Run with an inline workflow or one referencing a Workflow in
    /// the same file. Exit code: 0 succeeded, 1 failed, 2 invalid input, 130 cancelled.
    Run {
        /// Manifest file (YAML, documents separated by ---).
        file: PathBuf,
        /// A run parameter, overriding the Run's own value.
        #[arg(short, long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        param: Vec<(String, String)>,
        /// text: progress and a summary; json: only the final Run object on stdout.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Directory for run files (task stdout, stderr and outputs).
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Print only the summary, no per-task progress.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Check manifests without running anything. Exit code: 0 valid, 2 otherwise.
    Validate {
        /// Manifest files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the CustomResourceDefinitions (YAML), for `kubectl apply --server-side -f -`.
    Crds,
    /// Run the Kubernetes controller: reconcile Workflows and Runs, one Job per task attempt.
    Controller {
        /// Kubeconfig file; by default in-cluster config, then $KUBECONFIG or ~/.kube/config.
        #[arg(long, env = "ORK_KUBECONFIG", value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// Watch only these namespaces (repeat, or comma-separate; default: all namespaces).
        #[arg(long, env = "ORK_NAMESPACES", value_name = "NS", value_delimiter = ',')]
        namespace: Vec<String>,
        /// Runs reconciled at once.
        #[arg(long, env = "ORK_CONCURRENCY", default_value_t = 16)]
        concurrency: u16,
        /// Log format; `auto` is text on a terminal and JSON otherwise.
        #[arg(long, env = "ORK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
        log_format: LogFormat,
        /// Serve /healthz, /readyz and /metrics here; `off` to serve nothing.
        #[arg(long, env = "ORK_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
        metrics_address: String,
        /// Reconcile only while holding a Lease, so several replicas can run.
        #[arg(long, env = "ORK_LEADER_ELECT")]
        leader_elect: bool,
        /// Name of the leader Lease.
        #[arg(long, env = "ORK_LEASE_NAME", default_value = "ork-controller")]
        lease_name: String,
        /// Namespace of the leader Lease (default: $POD_NAMESPACE, else `default`).
        #[arg(long, env = "ORK_LEASE_NAMESPACE")]
        lease_namespace: Option<String>,
        /// Seconds a lease lasts without renewal; a standby takes over within about this long.
        #[arg(long, env = "ORK_LEASE_SECONDS", default_value_t = 15)]
        lease_seconds: u64,
        /// Seconds an attempt waits for an image that cannot be pulled before it fails; 0 waits
        /// for ever.
        #[arg(long, env = "ORK_IMAGE_PULL_TIMEOUT", default_value_t = 300)]
        image_pull_timeout: u32,
        /// Delete each finished Job (and its Pod, with its logs) this many seconds after it
        /// finishes (`ttlSecondsAfterFinished`); by default Jobs stay until their Run is deleted.
        #[arg(long, env = "ORK_JOB_TTL_SECONDS", value_name = "SECONDS")]
        job_ttl_seconds: Option<u32>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

/// Runs the command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate { files } => validate(&files),
        Command::Run {
            file,
            param,
            output,
            work_dir,
            quiet,
        } => run(file, param.into_iter().collect(), output, work_dir, quiet),
        Command::Crds => match crate::kubernetes::crd::crds_yaml() {
            Ok(yaml) => {
                use std::io::Write;
                match std::io::stdout().write_all(yaml.as_bytes()) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(_) => ExitCode::FAILURE, // e.g. a closed pipe
                }
            }
            Err(e) => {
                eprintln!("error: cannot render the CRDs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Controller {
            kubeconfig,
            namespace,
            concurrency,
            log_format,
            metrics_address,
            leader_elect,
            lease_name,
            lease_namespace,
            lease_seconds,
            image_pull_timeout,
            job_ttl_seconds,
        } => {
            init_logging(log_format);
            let http_address = match metrics_address.as_str() {
                "off" | "" => None,
                text => match text.parse() {
                    Ok(address) => Some(address),
                    Err(e) => {
                        eprintln!("error: --metrics-address {text:?}: {e}");
                        return ExitCode::from(EXIT_INVALID);
                    }
                },
            };
            let leader_election = leader_elect.then(|| crate::kubernetes::LeaderElection {
                lease_name,
                lease_namespace: lease_namespace
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_else(|| "default".into()),
                identity: std::env::var("POD_NAME")
                    .or_else(|_| std::env::var("HOSTNAME"))
                    .unwrap_or_else(|_| format!("ork-{}", std::process::id())),
                lease_seconds: lease_seconds.max(2),
            });
            let run = crate::kubernetes::decide::Config {
                image_pull_timeout: (image_pull_timeout > 0)
                    .then(|| jiff::SignedDuration::from_secs(i64::from(image_pull_timeout))),
                job_ttl_seconds: job_ttl_seconds.map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
                ..crate::kubernetes::decide::Config::default()
            };
            let settings = crate::kubernetes::Settings {
                namespaces: namespace,
                concurrency: concurrency.max(1),
                http_address,
                leader_election,
                run,
            };
            controller(kubeconfig, settings)
        }
    }
}

/// Logs for the controller: `ORK_LOG` (e.g. `info`, `ork=debug`) picks what is logged.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ORK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless; keep the first.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn controller(kubeconfig: Option<PathBuf>, settings: crate::kubernetes::Settings) -> ExitCode {
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let metrics = Arc::new(crate::kubernetes::Metrics::default());
        let client =
            crate::kubernetes::client::client(kubeconfig.as_deref(), Arc::clone(&metrics)).await?;
        let result =
            crate::kubernetes::run(client, settings, Arc::clone(&metrics), interrupted()).await;
        let counts: Vec<String> = metrics
            .requests_by_verb()
            .into_iter()
            .map(|(verb, n)| format!("{verb}={n}"))
            .collect();
        tracing::info!(requests = %counts.join(" "), "API requests made");
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "controller stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(files: &[PathBuf]) -> Result<Vec<Document>, Vec<String>> {
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match load_file(file) {
            Ok(docs) => documents.extend(docs),
            Err(LoadError::Documents(failures)) => {
                for (origin, problems) in failures {
                    errors.extend(problems.iter().map(|p| format!("{origin}: {p}")));
                }
            }
            Err(other) => errors.push(other.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(documents)
    } else {
        Err(errors)
    }
}

fn report_errors(errors: &[String]) -> ExitCode {
    for error in errors {
        eprintln!("error: {error}");
    }
    ExitCode::from(EXIT_INVALID)
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let documents = match load(files) {
        Ok(docs) => docs,
        Err(errors) => return report_errors(&errors),
    };
    let mut errors = Vec::new();
    let workflows: Vec<&crate::api::Workflow> = documents
        .iter()
        .filter_map(|d| match &d.manifest {
            Manifest::Workflow(w) => Some(w.as_ref()),
            Manifest::Run(_) => None,
        })
        .collect();
    for doc in &documents {
        let what = doc.describe();
        let mut problems: Vec<String> = Vec::new();
        let mut note = String::new();
        match &doc.manifest {
            Manifest::Workflow(workflow) => {
                if workflow.metadata.name.as_deref().is_none_or(str::is_empty) {
                    problems.push("metadata.name: a Workflow needs a name".into());
                }
                match compile(&workflow.spec, "spec") {
                    Ok(dag) => {
                        let s = if dag.len() == 1 { "" } else { "s" };
                        note = format!(" ({} task{s})", dag.len());
                    }
                    Err(p) => problems.extend(p.iter().map(ToString::to_string)),
                }
            }
            Manifest::Run(run) => {
                let spec = match (&run.spec.workflow_ref, &run.spec.workflow) {
                    (Some(reference), None) => {
                        let found = workflows
                            .iter()
                            .find(|w| w.metadata.name.as_deref() == Some(reference.name.as_str()));
                        if found.is_none() {
                            note = format!(
                                " (Workflow {:?} is not among the files; its parameters were not checked)",
                                reference.name
                            );
                        }
                        found.map(|w| (&w.spec, "spec", false))
                    }
                    (None, Some(inline)) => Some((inline, "spec.workflow", true)),
                    _ => {
                        problems.push(
                            "spec: exactly one of workflowRef or workflow must be set".into(),
                        );
                        None
                    }
                };
                if let Some((spec, base, inline)) = spec {
                    match compile(spec, base) {
                        Ok(dag) => {
                            if let Err(p) = bind_params(&dag, &run.spec.params, "spec.params") {
                                problems.extend(p.iter().map(ToString::to_string));
                            }
                        }
                        // A referenced workflow's own problems are reported with it.
                        Err(p) if inline => problems.extend(p.iter().map(ToString::to_string)),
                        Err(_) => {}
                    }
                }
            }
        }
        if problems.is_empty() {
            println!("{}: {what} is valid{note}", doc.origin);
        } else {
            errors.extend(
                problems
                    .into_iter()
                    .map(|p| format!("{}: {what}: {p}", doc.origin)),
            );
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        report_errors(&errors)
    }
}

fn run(
    file: PathBuf,
    params: BTreeMap<String, String>,
    output: OutputFormat,
    work_dir: Option<PathBuf>,
    quiet: bool,
) -> ExitCode {
    let documents = match load(std::slice::from_ref(&file)) {
        Ok(docs) => docs,
        Err(errors) => return report_errors(&errors),
    };
    let plan = match plan_run(&documents, &params) {
        Ok(plan) => plan,
        Err(errors) => return report_errors(&errors),
    };
    let mut config = OrchestratorConfig::default();
    if let Some(dir) = work_dir {
        config.work_dir = dir;
    }
    let run_dir = config.run_dir(&plan.identity.run);

    // Human output goes to stdout, unless stdout carries the JSON result.
    let (human, terminal): (Box<dyn std::io::Write + Send>, bool) = match output {
        OutputFormat::Text => (Box::new(std::io::stdout()), std::io::stdout().is_terminal()),
        OutputFormat::Json => (Box::new(std::io::stderr()), std::io::stderr().is_terminal()),
    };
    let style = match (quiet, terminal) {
        (true, _) => Style::Quiet,
        (false, true) => Style::Live,
        (false, false) => Style::Plain,
    };
    let progress = Arc::new(Mutex::new(Progress::new(style, human, plan.dag.len())));

    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let refresher = (style == Style::Live).then(|| {
            let progress = Arc::clone(&progress);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_millis(200));
                loop {
                    every.tick().await;
                    if let Ok(mut p) = progress.lock() {
                        p.refresh();
                    }
                }
            })
        });
        let watcher: Arc<Mutex<dyn crate::local::Watcher>> = progress.clone();
        let result = run_local(plan, &config, Some(watcher), interrupted()).await;
        if let Some(task) = refresher {
            task.abort();
        }
        result
    });
    let run = match result {
        Ok(run) => run,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(mut p) = progress.lock() {
        p.finish();
        let text = summary(&run, &run_dir, terminal);
        p.write_raw(&text);
    }
    if output == OutputFormat::Json {
        match serde_json::to_string_pretty(&run) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: cannot encode the run: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match run.status.and_then(|s| s.phase) {
        Some(RunPhase::Succeeded) => ExitCode::SUCCESS,
        Some(RunPhase::Cancelled) => ExitCode::from(130),
        _ => ExitCode::from(1),
    }
}

fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, Ctrl-C alone still cancels.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
