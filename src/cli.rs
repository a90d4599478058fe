//! The `ork` command line.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand, ValueEnum};
use jiff::Timestamp;

use crate::api::{Run, RunPhase};
use crate::compile::{bind_params, compile};
use crate::local::{OrchestratorConfig, Progress, Style, plan_rerun, plan_run, run_local, summary};
use crate::manifest::{
    Document, LoadError, MAX_PROBLEMS, Manifest, duplicate_workflows, load_file, name_problems,
    referenced_workflow,
};
use crate::text::quoted;

mod cluster;
use crate::kubernetes::run_commands::RunCommand;
use cluster::{dashboard, get, logs, on_cluster, run_command, run_name, submit, watch};

/// Where the dashboard listens unless told otherwise: this machine only.
pub const DEFAULT_DASHBOARD_ADDRESS: &str = "127.0.0.1:8484";

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
        /// Manifest file (YAML, documents separated by ---; at most 32 MiB).
        #[arg(required_unless_present = "rerun_of")]
        file: Option<PathBuf>,
        /// Run a finished run again from its `run.json` (in its log directory): what succeeded
        /// there, with everything upstream of it, is reused; the rest runs. Takes the
        /// definition and params from that run: no FILE, no --param.
        #[arg(long, value_name = "RUN_JSON", conflicts_with_all = ["file", "param"])]
        rerun_of: Option<PathBuf>,
        /// A run parameter, overriding the Run's own value.
        #[arg(short, long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        param: Vec<(String, String)>,
        /// The directory of a workspace (created if missing); without it a workspace gets a
        /// fresh directory in the run's log directory.
        #[arg(short, long = "workspace", value_name = "NAME=DIR", value_parser = parse_workspace)]
        workspace: Vec<(String, PathBuf)>,
        /// text: progress and a summary; json: only the final Run object on stdout.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Directory for run files: each run's RUN/TASK/attempt-N.{stdout,stderr,output.json}.
        /// Default: $XDG_STATE_HOME/ork/runs, else ~/.local/state/ork/runs. It is created
        /// private (mode 0700) and must be a directory of yours that nobody else can write.
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Print only the summary, no per-task progress.
        #[arg(short, long)]
        quiet: bool,
        /// Also serve the dashboard for this run (`--dashboard=ADDRESS`, default
        /// 127.0.0.1:8484); it stays up after the run ends (its result printed), until Ctrl-C.
        #[arg(long, value_name = "ADDRESS", num_args = 0..=1, require_equals = true,
              default_missing_value = DEFAULT_DASHBOARD_ADDRESS)]
        dashboard: Option<String>,
    },
    /// Check manifests without running anything. Exit code: 0 valid, 2 otherwise.
    Validate {
        /// Manifest files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Draw a workflow's DAG, for docs: Graphviz DOT, Mermaid, or SVG. Exit code: 0 drawn, 2
    /// invalid input.
    Graph {
        /// Manifest file holding one Workflow (or a Run with an inline workflow).
        file: PathBuf,
        /// dot (default), mermaid or svg.
        #[arg(short, long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Show a Run from the cluster: its task table, or (`-o json|yaml`) the whole Run with every
    /// task's record, whatever its size (a run of more than 1,000 tasks keeps them in RunShards;
    /// this joins them).
    Get {
        /// `run/NAME`, `runs/NAME` or `NAME` (a Run).
        run: String,
        /// table: every task's phase, attempts, duration and outcome; json or yaml: the whole
        /// Run.
        #[arg(short, long, value_enum, default_value_t = GetFormat::Table)]
        output: GetFormat,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Start a Run on the cluster: from FILE (a Workflow, sent inline, or a Run), or from a
    /// Workflow already in the namespace. With --watch, show its progress as `ork run` does;
    /// exit code then 0 succeeded, 1 failed, 130 cancelled (2 invalid input).
    Submit {
        /// Manifest file holding one Workflow or one Run.
        #[arg(required_unless_present = "workflow")]
        file: Option<PathBuf>,
        /// The Workflow (in the namespace) to run, instead of a file.
        #[arg(long, value_name = "NAME", conflicts_with = "file")]
        workflow: Option<String>,
        /// A run parameter, overriding the Run's own value.
        #[arg(short, long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        param: Vec<(String, String)>,
        /// Follow the run until it ends, then print its task table.
        #[arg(short, long)]
        watch: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Follow a Run on the cluster until it ends, as `ork run` shows a local run, then print its
    /// task table. Exit code: 0 succeeded, 1 failed, 130 cancelled.
    Watch {
        /// The Run's name.
        run: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print a task's logs (from its Pod), or with no TASK every task's, each line prefixed
    /// with its task. TASK may be a fan-out instance (`p[3]`) or a fan-out task (all its
    /// instances).
    Logs {
        /// The Run's name.
        run: String,
        /// The task; every task when left out.
        task: Option<String>,
        /// The attempt (1 is the first); the latest by default.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        attempt: Option<u32>,
        /// Keep printing as the task writes, and (without --attempt) pick up attempts and tasks
        /// that start later, until the run has ended.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// List the Runs of a namespace: name, workflow, phase, progress, age.
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Only Runs of this Workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only Runs in this phase (Pending, Running, Succeeded, Failed, Cancelled).
        #[arg(long, value_parser = parse_phase)]
        phase: Option<crate::api::RunPhase>,
    },
    /// Cancel a Run (its finally tasks still run) and wait until it has ended.
    Cancel {
        /// The Run's name.
        run: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Suspend a Run: no new attempt starts until it is resumed; waits until the controller
    /// says so.
    Suspend {
        /// The Run's name.
        run: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Resume a suspended Run.
    Resume {
        /// The Run's name.
        run: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Run a finished Run again (a new Run with `rerunOf`): what succeeded is reused.
    Rerun {
        /// The finished Run's name.
        run: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Delete a Run, with its Jobs, Pods and workspace claims, and wait until it is gone.
    Delete {
        /// The Run's name.
        run: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Serve a web dashboard of the cluster's runs (with your kubeconfig's credentials, so your
    /// RBAC applies): runs by namespace, a run's graph live, task logs, and run buttons.
    Dashboard {
        /// Where to listen (HOST:PORT; port 0 picks a free one).
        #[arg(long, default_value = DEFAULT_DASHBOARD_ADDRESS)]
        address: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Work with Schedule manifests.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
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
        /// Runs of up to this many tasks keep every task's record in the Run's status; larger
        /// runs keep them in RunShards (at most 1000).
        #[arg(long, env = "ORK_INLINE_TASKS", default_value_t = 1000,
              value_parser = clap::value_parser!(u32).range(0..=1000))]
        inline_tasks: u32,
        /// For tests only: `ORIGIN,RATE[,SHOWN]` makes Schedules tick by a clock that shows
        /// SHOWN (default ORIGIN; never earlier) at the real RFC 3339 instant ORIGIN and from
        /// then on runs RATE times faster than the real one.
        #[arg(long, env = "ORK_TEST_SCHEDULE_CLOCK", hide = true, value_name = "ORIGIN,RATE[,SHOWN]",
              value_parser = parse_test_clock)]
        test_schedule_clock: Option<crate::kubernetes::schedule_reconciler::ScheduleClock>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Print the next tick times of the Schedule in FILE, one RFC 3339 time with the zone's
    /// offset per line. Exit code: 0, or 2 when the Schedule is invalid.
    Next {
        /// Manifest file holding one Schedule (or several: each is printed under its name).
        file: PathBuf,
        /// How many ticks.
        #[arg(short = 'n', long = "count", default_value_t = 5,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        count: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GetFormat {
    Table,
    Json,
    Yaml,
}

/// Where a command on the cluster goes: the user's kubeconfig and namespace, as kubectl.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Kubeconfig file; by default $KUBECONFIG or ~/.kube/config, then in-cluster config.
    #[arg(long, env = "ORK_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

fn parse_phase(text: &str) -> Result<crate::api::RunPhase, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("{text:?}: expected Pending, Running, Succeeded, Failed or Cancelled"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Svg,
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

fn parse_workspace(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_string(), PathBuf::from(dir)))
        }
        _ => Err(format!("expected NAME=DIR, got {text:?}")),
    }
}

fn parse_test_clock(
    text: &str,
) -> Result<crate::kubernetes::schedule_reconciler::ScheduleClock, String> {
    let parts: Vec<&str> = text.split(',').collect();
    let (origin, rate, shown) = match parts.as_slice() {
        [origin, rate] => (*origin, *rate, *origin),
        [origin, rate, shown] => (*origin, *rate, *shown),
        _ => return Err(format!("expected ORIGIN,RATE[,SHOWN], got {text:?}")),
    };
    let instant = |text: &str| -> Result<Timestamp, String> {
        text.parse().map_err(|e| format!("{text:?}: {e}"))
    };
    let rate: u32 = rate
        .parse()
        .ok()
        .filter(|r| (1..=3600).contains(r))
        .ok_or_else(|| format!("RATE {rate:?}: expected a whole number from 1 to 3600"))?;
    Ok(
        crate::kubernetes::schedule_reconciler::ScheduleClock::scaled(
            instant(origin)?,
            instant(shown)?,
            rate,
        ),
    )
}

/// Runs the command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate { files } => validate(&files),
        Command::Graph { file, format } => graph(&file, format),
        Command::List {
            cluster,
            workflow,
            phase,
        } => on_cluster(&cluster, None, |client, namespace| async move {
            crate::kubernetes::run_commands::list(
                &client,
                &namespace,
                workflow.as_deref(),
                phase,
                Timestamp::now(),
            )
            .await
        }),
        Command::Submit {
            file,
            workflow,
            param,
            watch,
            cluster,
        } => submit(file, workflow, param.into_iter().collect(), watch, &cluster),
        Command::Watch { run, cluster } => watch(&run, &cluster),
        Command::Logs {
            run,
            task,
            attempt,
            follow,
            cluster,
        } => logs(
            &cluster,
            crate::kubernetes::logs::LogRequest {
                run: run_name(&run).to_string(),
                task,
                attempt,
                follow,
            },
        ),
        Command::Cancel { run, cluster } => run_command(&cluster, &run, RunCommand::Cancel),
        Command::Suspend { run, cluster } => run_command(&cluster, &run, RunCommand::Suspend),
        Command::Resume { run, cluster } => run_command(&cluster, &run, RunCommand::Resume),
        Command::Rerun { run, cluster } => run_command(&cluster, &run, RunCommand::Rerun),
        Command::Delete { run, cluster } => run_command(&cluster, &run, RunCommand::Delete),
        Command::Run {
            file,
            rerun_of,
            param,
            workspace,
            output,
            work_dir,
            quiet,
            dashboard,
        } => {
            let source = match (file, rerun_of) {
                (_, Some(previous)) => RunSource::Rerun(previous),
                (Some(file), None) => RunSource::File(file),
                (None, None) => {
                    eprintln!("error: give a manifest FILE, or --rerun-of RUN_JSON");
                    return ExitCode::from(2);
                }
            };
            let inputs = RunInputs {
                params: param.into_iter().collect(),
                workspaces: workspace,
            };
            run(source, inputs, output, work_dir, quiet, dashboard)
        }
        Command::Get {
            run,
            output,
            cluster,
        } => get(&run, &cluster, output),
        Command::Dashboard { address, cluster } => dashboard(&address, &cluster),
        Command::Schedule {
            command: ScheduleCommand::Next { file, count },
        } => schedule_next(&file, count as usize),
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
            inline_tasks,
            test_schedule_clock,
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
                inline_tasks: inline_tasks as usize,
                ..crate::kubernetes::decide::Config::default()
            };
            let settings = crate::kubernetes::Settings {
                namespaces: namespace,
                concurrency: concurrency.max(1),
                http_address,
                leader_election,
                run,
                schedule_clock: test_schedule_clock.unwrap_or_default(),
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

/// Most bytes of one printed problem; a longer one is cut, saying so.
const MAX_LINE_BYTES: usize = 4096;
/// Most bytes of problems printed by one command; past it the rest are only counted.
const MAX_REPORT_BYTES: usize = 512 * 1024;

/// Prints problems and warnings on stderr, bounded whatever the input: at most
/// [`MAX_PROBLEMS`] problems per document, each line at most [`MAX_LINE_BYTES`], and
/// [`MAX_REPORT_BYTES`] in all; what is left out is counted per document at the end.
#[derive(Default)]
struct Report {
    /// Per origin (`FILE (document N)`, or empty): problems shown and left out, in order.
    origins: Vec<(String, usize, usize)>,
    bytes: usize,
}

impl Report {
    fn error(&mut self, origin: &str, problem: &str) {
        let index = match self.origins.iter().rposition(|(o, _, _)| o == origin) {
            Some(i) => i,
            None => {
                self.origins.push((origin.to_string(), 0, 0));
                self.origins.len() - 1
            }
        };
        let entry = &mut self.origins[index];
        if entry.1 >= MAX_PROBLEMS || self.bytes >= MAX_REPORT_BYTES {
            entry.2 += 1;
            return;
        }
        entry.1 += 1;
        let line = if origin.is_empty() {
            format!("error: {problem}")
        } else {
            format!("error: {origin}: {problem}")
        };
        let line = crate::text::cap(line, MAX_LINE_BYTES);
        self.bytes += line.len() + 1;
        eprintln!("{line}");
    }

    fn warning(&mut self, warning: &str) {
        let line = crate::text::cap(format!("warning: {warning}"), MAX_LINE_BYTES);
        self.bytes += line.len() + 1;
        eprintln!("{line}");
    }

    fn has_errors(&self) -> bool {
        !self.origins.is_empty()
    }

    /// Counts what was left out; exit code 2 when there was any problem, else 0.
    fn finish(self) -> ExitCode {
        for (origin, _, hidden) in &self.origins {
            if *hidden > 0 {
                let s = if *hidden == 1 { "" } else { "s" };
                let at = if origin.is_empty() {
                    String::new()
                } else {
                    format!("{origin}: ")
                };
                eprintln!("error: {at}… and {hidden} more problem{s}");
            }
        }
        if self.has_errors() {
            ExitCode::from(EXIT_INVALID)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// The documents of every file; warnings and problems go to `report`.
fn load(files: &[PathBuf], report: &mut Report) -> Vec<Document> {
    let mut documents = Vec::new();
    for file in files {
        let loaded = load_file(file);
        for warning in &loaded.warnings {
            report.warning(warning);
        }
        match loaded.documents {
            Ok(docs) => documents.extend(docs),
            Err(LoadError::Documents(failures)) => {
                for (origin, problems) in failures {
                    for problem in problems.iter() {
                        report.error(&origin, &problem.to_string());
                    }
                }
            }
            Err(other) => report.error("", &other.to_string()),
        }
    }
    documents
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut report = Report::default();
    let documents = load(files, &mut report);
    if report.has_errors() {
        return report.finish();
    }
    let duplicates = duplicate_workflows(&documents);
    for (i, doc) in documents.iter().enumerate() {
        let what = doc.describe();
        let mut problems: Vec<String> = name_problems(doc, false)
            .iter()
            .chain(duplicates.iter().filter(|(j, _)| *j == i).map(|(_, p)| p))
            .map(ToString::to_string)
            .collect();
        let mut note = String::new();
        match &doc.manifest {
            Manifest::Workflow(workflow) => match compile(&workflow.spec, "spec") {
                Ok(dag) => {
                    let s = if dag.len() == 1 { "" } else { "s" };
                    note = format!(" ({} task{s})", dag.len());
                }
                Err(p) => problems.extend(p.iter().map(ToString::to_string)),
            },
            Manifest::Run(run) if run.spec.rerun_of.is_some() => {
                if let Some(problem) = rerun_spec_problem(&run.spec) {
                    problems.push(problem.into());
                }
            }
            Manifest::Run(run) => {
                let spec = match (&run.spec.workflow_ref, &run.spec.workflow) {
                    (Some(reference), None) => match referenced_workflow(run, &documents) {
                        Ok(Some((_, workflow))) => Some((&workflow.spec, "spec", false)),
                        Ok(None) => {
                            note = format!(
                                " (Workflow {} is not among the files; its parameters were not checked)",
                                quoted(&reference.name)
                            );
                            None
                        }
                        Err(problem) => {
                            problems.push(problem.to_string());
                            None
                        }
                    },
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
                            let bindings = crate::compile::check_bindings(
                                &dag,
                                &run.spec.workspaces,
                                "spec.workspaces",
                            );
                            problems.extend(bindings.iter().map(ToString::to_string));
                            for warning in
                                crate::compile::shared_read_write_once(&dag, &run.spec.workspaces)
                            {
                                report.warning(&format!("{}: {what}: {warning}", doc.origin));
                            }
                        }
                        // A referenced workflow's own problems are reported with it.
                        Err(p) if inline => problems.extend(p.iter().map(ToString::to_string)),
                        Err(_) => {}
                    }
                }
            }
            Manifest::Schedule(schedule) => {
                match crate::schedule::check::validate(schedule, &documents, Timestamp::now()) {
                    Ok(valid) => note = valid,
                    Err(found) => problems.extend(found),
                }
            }
        }
        if problems.is_empty() {
            println!("{}: {what} is valid{note}", doc.origin);
        } else {
            for problem in problems {
                report.error(&doc.origin, &format!("{what}: {problem}"));
            }
        }
    }
    report.finish()
}

/// `ork graph`: the one workflow of `file` (a Workflow, or a Run's inline one), drawn.
fn graph(file: &std::path::Path, format: GraphFormat) -> ExitCode {
    let mut report = Report::default();
    let documents = load(std::slice::from_ref(&file.to_path_buf()), &mut report);
    if report.has_errors() {
        return report.finish();
    }
    let mut workflows: Vec<(&str, &crate::api::WorkflowSpec, &str)> = Vec::new();
    for doc in &documents {
        match &doc.manifest {
            Manifest::Workflow(w) => workflows.push((
                w.metadata.name.as_deref().unwrap_or("workflow"),
                &w.spec,
                "spec",
            )),
            Manifest::Run(r) => {
                if let Some(spec) = &r.spec.workflow {
                    let name = r.metadata.name.as_deref().unwrap_or("run");
                    workflows.push((name, spec, "spec.workflow"));
                }
            }
            Manifest::Schedule(_) => {}
        }
    }
    let (name, spec, base) = match workflows.as_slice() {
        [one] => *one,
        [] => {
            report.error(
                &file.display().to_string(),
                "no workflow to draw: give a file with a Workflow, or a Run with an inline workflow",
            );
            return report.finish();
        }
        several => {
            report.error(
                &file.display().to_string(),
                &format!(
                    "{} workflows in the file; ork graph draws one",
                    several.len()
                ),
            );
            return report.finish();
        }
    };
    let dag = match compile(spec, base) {
        Ok(dag) => dag,
        Err(problems) => {
            for problem in problems.iter() {
                report.error(&file.display().to_string(), &problem.to_string());
            }
            return report.finish();
        }
    };
    let drawn = match format {
        GraphFormat::Dot => Ok(crate::drawing::dot(&dag, name)),
        GraphFormat::Mermaid => Ok(crate::drawing::mermaid(&dag)),
        GraphFormat::Svg => crate::drawing::svg(&dag),
    };
    match drawn {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            report.error(&file.display().to_string(), &e);
            report.finish()
        }
    }
}

fn schedule_next(file: &std::path::Path, count: usize) -> ExitCode {
    let mut report = Report::default();
    let documents = load(std::slice::from_ref(&file.to_path_buf()), &mut report);
    if report.has_errors() {
        return report.finish();
    }
    let schedules: Vec<(&Document, &crate::api::Schedule)> = documents
        .iter()
        .filter_map(|d| match &d.manifest {
            Manifest::Schedule(s) => Some((d, s.as_ref())),
            _ => None,
        })
        .collect();
    if schedules.is_empty() {
        report.error(&file.display().to_string(), "holds no Schedule");
        return report.finish();
    }
    let now = Timestamp::now();
    let several = schedules.len() > 1;
    for (doc, schedule) in schedules {
        let what = doc.describe();
        match crate::schedule::check::next_ticks(schedule, now, count) {
            Ok(lines) => {
                if several {
                    println!("# {what}");
                }
                for line in lines {
                    println!("{line}");
                }
            }
            Err(problems) => {
                for problem in problems {
                    report.error(&doc.origin, &format!("{what}: {problem}"));
                }
            }
        }
    }
    report.finish()
}

/// Why a Run's spec with `rerunOf` is not valid, if it is not: the definition and params come
/// from the run it reruns.
pub fn rerun_spec_problem(spec: &crate::api::RunSpec) -> Option<&'static str> {
    (spec.workflow_ref.is_some() || spec.workflow.is_some() || !spec.params.is_empty()).then_some(
        "spec.rerunOf: a rerun takes its definition and params from the run it reruns; remove \
         workflowRef, workflow and params",
    )
}

/// What `ork run` runs: a manifest file, or a finished run again.
enum RunSource {
    File(PathBuf),
    Rerun(PathBuf),
}

/// What the command line gives a run besides its manifest.
struct RunInputs {
    params: BTreeMap<String, String>,
    workspaces: Vec<(String, PathBuf)>,
}

fn run(
    source: RunSource,
    inputs: RunInputs,
    output: OutputFormat,
    work_dir: Option<PathBuf>,
    quiet: bool,
    dashboard: Option<String>,
) -> ExitCode {
    let mut report = Report::default();
    let planned = match source {
        RunSource::Rerun(path) => plan_rerun(&path, &inputs.workspaces),
        RunSource::File(file) => {
            let documents = load(std::slice::from_ref(&file), &mut report);
            if report.has_errors() {
                return report.finish();
            }
            plan_run(&documents, &inputs.params, &inputs.workspaces)
        }
    };
    let plan = match planned {
        Ok(plan) => plan,
        Err(errors) => {
            for error in errors {
                report.error("", &error);
            }
            return report.finish();
        }
    };
    if let Some(note) = crate::local::kubernetes_only(&plan.dag) {
        report.warning(&note);
    }
    let mut config = OrchestratorConfig::default();
    if let Some(dir) = work_dir {
        config.work_dir = dir;
    }
    // Nothing runs unless the run's files can go somewhere private.
    let run_dir = match config.prepare_run_dir(&plan.identity.run) {
        Ok(dir) => dir,
        Err(error) => {
            report.error("", &error);
            return report.finish();
        }
    };

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
        let refresher = Progress::keep_refreshed(&progress);
        let mut watcher: Arc<Mutex<dyn crate::local::Watcher>> = progress.clone();
        // A Run that says `cancel: true` is cancelled before anything starts; after that each
        // Ctrl-C or SIGTERM is one more request to stop.
        let stops = futures::stream::unfold(plan.run.spec.cancel, |already| async move {
            if !already {
                interrupted().await;
            }
            Some(((), false))
        });
        let (cancels, cancelled) = tokio::sync::mpsc::unbounded_channel();
        let page_stops = futures::stream::unfold(cancelled, |mut r| async move {
            r.recv().await.map(|()| ((), r))
        });
        let stops = futures::stream::select(stops, page_stops);
        let mut server = None;
        if let Some(address) = &dashboard {
            let (listener, access) = crate::dashboard::bind(address).await?;
            let (live, tee) = local_dashboard(&plan, Arc::clone(&watcher));
            watcher = tee;
            let source = crate::dashboard::Source::Local(crate::dashboard::LocalSource::new(
                live,
                run_dir.clone(),
                cancels,
                crate::drawing::layout(&plan.dag).ok(),
            ));
            let page = access.url(&format!(
                "#/runs/{}/{}",
                crate::dashboard::LOCAL_NAMESPACE,
                plan.identity.run
            ));
            eprintln!("dashboard: {page}");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = tokio::spawn(crate::dashboard::serve(
                listener,
                source,
                access,
                async move {
                    let _ = stopped.await;
                },
            ));
            server = Some((stop, serving, page));
        }
        let result = run_local(plan, &config, Some(watcher), stops).await;
        if let Some(task) = refresher {
            task.abort();
        }
        Ok::<_, String>((result, server))
    });
    let (result, server) = match result {
        Ok(result) => result,
        Err(problem) => {
            eprintln!("error: dashboard: {problem}");
            return ExitCode::FAILURE;
        }
    };
    let run = match result {
        Ok(run) => run,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Kept for `ork run --rerun-of`; losing it loses no result, so it is only a warning.
    if let Err(e) = write_run_json(&run, &run_dir) {
        eprintln!(
            "warning: cannot keep {}: {e}",
            run_dir.join(RUN_JSON).display()
        );
    }
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
    // The page stays up to be looked at after the run (its result already printed), until
    // Ctrl-C.
    if let Some((stop, serving, page)) = server {
        eprintln!("the run has ended; the dashboard stays at {page} until Ctrl-C");
        runtime.block_on(async {
            interrupted().await;
            let _ = stop.send(());
            let _ = serving.await;
        });
    }
    match run.status.and_then(|s| s.phase) {
        Some(RunPhase::Succeeded) => ExitCode::SUCCESS,
        Some(RunPhase::Cancelled) => ExitCode::from(130),
        _ => ExitCode::from(1),
    }
}

/// The dashboard's copy of the local run (its tasks Pending to start with), and a watcher that
/// keeps it current as well as telling `first`.
fn local_dashboard(
    plan: &crate::local::RunPlan,
    first: Arc<Mutex<dyn crate::local::Watcher>>,
) -> (
    tokio::sync::watch::Receiver<Run>,
    Arc<Mutex<dyn crate::local::Watcher>>,
) {
    let mut run = plan.run.clone();
    run.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now(),
    ));
    let status = run.status.get_or_insert_default();
    status.phase = Some(RunPhase::Running);
    status.tasks = plan
        .dag
        .tasks()
        .map(|(id, task)| crate::api::TaskStatus {
            finally: plan.dag.is_finally(id),
            ..crate::api::TaskStatus::pending(task.name.clone())
        })
        .collect();
    let (live, receiver) = tokio::sync::watch::channel(run);
    let tee = crate::dashboard::Tee { first, live };
    (receiver, Arc::new(Mutex::new(tee)))
}

/// Name of the file, in a run's directory, that keeps the finished Run.
const RUN_JSON: &str = "run.json";

fn write_run_json(run: &Run, run_dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let json = serde_json::to_vec_pretty(run).map_err(std::io::Error::other)?;
    let mut file = crate::local::create_file(&run_dir.join(RUN_JSON))?;
    file.write_all(&json)?;
    file.write_all(b"\n")
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
