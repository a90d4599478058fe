use std::process::ExitCode;

use clap::Parser;
use ork::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The controller sets up its own logging (JSON off a terminal); the CLI logs warnings only.
    if !matches!(cli.command, Command::Controller { .. }) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("ORK_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    ork::cli::main(cli)
}
