//! The `hostset` command line. One file per command; `run` dispatches.
//!
//! Contract: data goes to stdout, human summaries and errors to stderr (except
//! `validate`, whose findings are its data). Exit codes: 0 success, 1 invalid
//! input or failed check, 2 usage error (clap's default).

mod client;
mod completions;
mod describe;
mod eval;
mod get;
mod node;
pub mod output;
mod rollout;
mod status;
pub mod sync;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kubernetes DaemonSet semantics for plain systemd hosts.
#[derive(Debug, Parser)]
#[command(name = "hostset", version, about, long_about = None, after_help = "\
Examples:
  hostset validate /etc/hostset/daemonsets.d/*.toml
  hostset eval examples/log-collector.toml
  hostset eval --node examples/nodes/control-plane.yaml examples/fluentd-elasticsearch.yaml -o json
  hostset get daemonsets
  hostset describe daemonset log-collector
  hostset rollout status log-collector")]
pub struct Cli {
    /// How to reach the coordinator (get, describe, node delete).
    #[command(flatten)]
    pub coordinator: client::CoordinatorArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Validate(validate::Args),
    Eval(eval::Args),
    Node(node::Args),
    Status(status::Args),
    Sync(sync::Args),
    Get(get::Args),
    Describe(describe::Args),
    /// Fleet-wide rolling updates: status, history, undo, pause, resume.
    Rollout(rollout::Args),
    Completions(completions::Args),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Node(args) => node::run(args, &cli.coordinator),
        Command::Status(args) => status::run(args),
        Command::Sync(args) => sync::run(args),
        Command::Get(args) => get::run(args, &cli.coordinator),
        Command::Describe(args) => describe::run(args, &cli.coordinator),
        Command::Rollout(args) => rollout::run(args, &cli.coordinator),
        Command::Completions(args) => completions::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hostset: {err:#}");
            ExitCode::FAILURE
        }
    }
}
