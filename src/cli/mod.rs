//! The `hostset` command line. One file per command; `run` dispatches.
//!
//! Contract: data goes to stdout, human summaries and errors to stderr (except
//! `validate`, whose findings are its data). Exit codes: 0 success, 1 invalid
//! input or failed check, 2 usage error (clap's default).

mod eval;
mod node;
mod status;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kubernetes DaemonSet semantics for plain systemd hosts.
#[derive(Debug, Parser)]
#[command(name = "hostset", version, about, long_about = None, after_help = "\
Examples:
  hostset validate /etc/hostset/daemonsets.d/*.toml
  hostset eval examples/log-collector.toml
  hostset eval --node examples/nodes/control-plane.yaml examples/fluentd-elasticsearch.yaml -o json")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Validate(validate::Args),
    Eval(eval::Args),
    Node(node::Args),
    Status(status::Args),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Node(args) => node::run(args),
        Command::Status(args) => status::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hostset: {err:#}");
            ExitCode::FAILURE
        }
    }
}
