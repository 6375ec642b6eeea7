//! `hostset eval [--node NODEFILE] SPECFILE`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::node::{HostFacts, NodeFile, read_node};
use crate::placement::evaluate;
use crate::spec::{Diagnostic, Node, read_daemonsets};

/// Would this daemonset run on this node, and why (not)?
///
/// Answers with the Kubernetes DaemonSet controller's rules: nodeName,
/// nodeSelector, required node affinity, and taints against tolerations
/// (including the tolerations Kubernetes adds to every daemonset).
/// `shouldRun` says whether a new daemon may start on the node;
/// `shouldContinueRunning` whether one already running may stay.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without --node, the node is this host: its automatic labels (kubernetes.io/hostname,
kubernetes.io/os, kubernetes.io/arch, hostset.io/os-id, ...) overlaid with
$HOSTSET_CONFIG_DIR/node.toml (default /etc/hostset/node.toml), as the agent sees it.
With --node, the file describes the node completely.

Examples:
  hostset eval /etc/hostset/daemonsets.d/log-collector.toml
  hostset eval --node examples/nodes/control-plane.yaml examples/log-collector.toml
  hostset eval --node node.json fluentd.yaml -o json | jq .shouldRun")]
pub struct Args {
    /// The node: a native node.toml or a Kubernetes v1 Node in YAML or JSON.
    #[arg(long, value_name = "NODEFILE")]
    pub node: Option<PathBuf>,
    /// The daemonset: *.toml, *.yaml, *.yml or *.json. A YAML stream with several
    /// daemonsets gives one answer per daemonset.
    #[arg(value_name = "SPECFILE")]
    pub spec: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON object per daemonset, one per line.
    Json,
}

/// The JSON answer; field names are part of the CLI contract.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'a> {
    node: &'a str,
    daemonset: &'a str,
    should_run: bool,
    should_continue_running: bool,
    reasons: &'a [String],
}

fn config_dir() -> PathBuf {
    std::env::var_os("HOSTSET_CONFIG_DIR")
        .map_or_else(|| PathBuf::from("/etc/hostset"), PathBuf::from)
}

/// Print diagnostics to stderr; true when any is an error.
fn report(diags: &[Diagnostic]) -> bool {
    for d in diags {
        eprintln!("{d}");
    }
    diags.iter().any(Diagnostic::is_error)
}

fn load_node(path: Option<&Path>) -> Result<Node, ExitCode> {
    let (file, facts) = match path {
        Some(p) => (Some(p.to_path_buf()), None),
        None => {
            let default = config_dir().join("node.toml");
            (
                default.exists().then_some(default),
                Some(HostFacts::detect()),
            )
        }
    };
    let Some(file) = file else {
        let empty = NodeFile::Native {
            name: None,
            labels: Default::default(),
            taints: Vec::new(),
            unschedulable: false,
        };
        return Ok(empty.resolve(facts.as_ref()));
    };
    let loaded = read_node(&file);
    if report(&loaded.diagnostics) {
        return Err(ExitCode::FAILURE);
    }
    let node_file = loaded.items.into_iter().next().ok_or(ExitCode::FAILURE)?;
    Ok(node_file.resolve(facts.as_ref()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = read_daemonsets(&args.spec);
    let spec_invalid = report(&loaded.diagnostics);
    let node = match load_node(args.node.as_deref()) {
        Ok(n) => n,
        Err(code) => return Ok(code),
    };
    if spec_invalid {
        return Ok(ExitCode::FAILURE);
    }
    for ds in &loaded.items {
        let verdict = evaluate(ds, &node);
        match args.output {
            Output::Json => {
                let answer = Answer {
                    node: &node.name,
                    daemonset: &ds.name,
                    should_run: verdict.should_run,
                    should_continue_running: verdict.should_continue_running,
                    reasons: &verdict.reasons,
                };
                println!("{}", serde_json::to_string(&answer)?);
            }
            Output::Text => {
                let subject = format!("daemonset {} on node {}", ds.name, node.name);
                if verdict.should_run {
                    println!("{subject}: would run");
                } else {
                    println!(
                        "{subject}: would not run, because {}",
                        verdict.reasons.join("; and ")
                    );
                    if verdict.should_continue_running {
                        println!(
                            "{subject}: a daemon already running there would keep running \
                             (shouldContinueRunning)"
                        );
                    } else {
                        println!("{subject}: a daemon already running there would be stopped");
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
