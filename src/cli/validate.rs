//! `hostset validate FILE...`

use std::path::PathBuf;
use std::process::ExitCode;

use crate::spec::read_daemonsets;

/// Check daemonset files (native TOML, Kubernetes YAML or JSON) without running anything.
///
/// Prints one line per finding, `FILE:LINE:COL: FIELD.PATH: message`, and
/// exits 1 when any file has an error. Warnings (fields that have no effect on
/// a systemd host) are printed as `...: warning: message` and do not fail.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hostset validate /etc/hostset/daemonsets.d/*.toml
  hostset validate fluentd-elasticsearch.yaml
  hostset validate --quiet spec.toml && echo valid")]
pub struct Args {
    /// Daemonset files: *.toml (native), *.yaml, *.yml or *.json (Kubernetes apps/v1 DaemonSet).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print errors only, no warnings and no summary.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (mut invalid, mut errors, mut warnings) = (0, 0, 0);
    for file in &args.files {
        let loaded = read_daemonsets(file);
        if loaded.has_errors() {
            invalid += 1;
        }
        for d in &loaded.diagnostics {
            if d.is_error() {
                errors += 1;
            } else {
                warnings += 1;
                if args.quiet {
                    continue;
                }
            }
            println!("{d}");
        }
    }
    if !args.quiet {
        let n = args.files.len();
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        eprintln!(
            "{} checked: {} valid, {} invalid ({}, {})",
            plural(n, "file"),
            n - invalid,
            invalid,
            plural(errors, "error"),
            plural(warnings, "warning"),
        );
    }
    Ok(if invalid > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
