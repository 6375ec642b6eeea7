//! `hostset status`: this host's daemonsets, as the agent sees them and as
//! systemd runs them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::report::{DaemonSetReport, NodeReport};
use crate::systemd::{Systemd, UnitDetails};

/// One row per daemonset on this host: its unit, state, revision, restarts,
/// memory and CPU, and why it does not run when it does not.
///
/// The agent writes what it decided to $RUNTIME_DIRECTORY/status.json
/// (/run/hostset/status.json); the live numbers come from systemd over D-Bus.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hostset status
  hostset status -o json | jq '.daemonsets[] | select(.ready == false)'
  systemctl status hostset-log-collector      # the unit itself
  journalctl -u hostset-log-collector         # its logs")]
pub struct Args {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The agent's status file.
    #[arg(
        long,
        value_name = "FILE",
        env = "HOSTSET_STATUS_FILE",
        default_value = "/run/hostset/status.json"
    )]
    pub status_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Columns, like kubectl and systemctl.
    Table,
    /// The agent's report with the live numbers added, as one JSON object.
    Json,
}

/// One daemonset with its live numbers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row<'a> {
    #[serde(flatten)]
    report: &'a DaemonSetReport,
    main_pid: u32,
    restarts: u32,
    memory_bytes: Option<u64>,
    cpu_nanoseconds: Option<u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    node: &'a crate::report::NodeInfo,
    generated_at: u64,
    daemonsets: Vec<Row<'a>>,
    diagnostics: &'a [String],
    errors: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    git: Option<&'a crate::report::GitReport>,
}

/// `12.3Mi`-style memory.
fn memory(bytes: Option<u64>) -> String {
    let Some(b) = bytes else { return "-".into() };
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// `1.234s`-style CPU time.
fn cpu(nsec: Option<u64>) -> String {
    nsec.map_or_else(|| "-".into(), |n| format!("{:.3}s", n as f64 / 1e9))
}

fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let last = r.len() - 1;
        for (c, cell) in r.iter().enumerate() {
            if c == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = match std::fs::read(&args.status_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "hostset: hostsetd is not running on this host ({} does not exist); start it with \
                 `systemctl start hostsetd`",
                args.status_file.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.status_file.display())),
    };
    let report: NodeReport = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not a hostset status report",
            args.status_file.display()
        )
    })?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let details: Vec<Option<UnitDetails>> = runtime.block_on(async {
        let bus = crate::systemd::dbus::Bus::system().await.ok();
        let mut out = Vec::new();
        for ds in &report.daemonsets {
            let d = match (&bus, ds.unit.is_empty()) {
                (Some(bus), false) => bus.details(&ds.unit).await.ok(),
                _ => None,
            };
            out.push(d);
        }
        out
    });

    let rows: Vec<Row> = report
        .daemonsets
        .iter()
        .zip(&details)
        .map(|(ds, d)| Row {
            report: ds,
            main_pid: d.as_ref().map_or(0, |d| d.main_pid),
            restarts: d.as_ref().map_or(0, |d| d.n_restarts),
            memory_bytes: d.as_ref().and_then(|d| d.memory_current),
            cpu_nanoseconds: d.as_ref().and_then(|d| d.cpu_usage_nsec),
        })
        .collect();

    match args.output {
        Output::Json => {
            let status = Status {
                node: &report.node,
                generated_at: report.generated_at,
                daemonsets: rows,
                diagnostics: &report.diagnostics,
                errors: &report.errors,
                git: report.git.as_ref(),
            };
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        Output::Table => {
            let git = report.git.as_ref();
            if let Some(g) = git {
                println!("{}\n", super::sync::summary(g).0);
            }
            let mut header = vec![
                "NAME", "UNIT", "STATE", "REVISION", "READY", "RESTARTS", "MEMORY", "CPU", "WHY",
            ];
            if git.is_some() {
                header.insert(4, "COMMIT");
            }
            let mut lines = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
            for r in &rows {
                let ds = r.report;
                let want = u8::from(ds.should_run || !ds.unit.is_empty());
                let mut why = ds.reasons.join("; ");
                if ds.held {
                    why = format!(
                        "spec file invalid, last valid version kept{}",
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!("; {why}")
                        }
                    );
                }
                if !ds.ready && !ds.readiness.is_empty() && want == 1 {
                    why = if why.is_empty() {
                        format!("not ready: {}", ds.readiness)
                    } else {
                        format!("{why}; not ready: {}", ds.readiness)
                    };
                }
                if !ds.rollout.is_empty() {
                    let mut rollout = format!("rollout: {}", ds.rollout);
                    if let Some(second) = &ds.second {
                        rollout = format!("{rollout} ({} is {})", second.unit, second.state);
                    }
                    if !ds.rollout_message.is_empty() {
                        rollout = format!("{rollout}: {}", ds.rollout_message);
                    }
                    why = if why.is_empty() {
                        rollout
                    } else {
                        format!("{why}; {rollout}")
                    };
                }
                if let Some(n) = ds.pinned_revision {
                    let pin = format!("pinned to revision {n} by the coordinator");
                    why = if why.is_empty() {
                        pin
                    } else {
                        format!("{why}; {pin}")
                    };
                }
                if !ds.last_error.is_empty() {
                    why = if why.is_empty() {
                        ds.last_error.clone()
                    } else {
                        format!("{why}; {}", ds.last_error)
                    };
                }
                let revision = if ds.current_revision.is_empty()
                    || ds.current_revision == ds.desired_revision
                {
                    ds.desired_revision.clone()
                } else {
                    format!("{}→{}", ds.current_revision, ds.desired_revision)
                };
                let mut line = vec![
                    ds.name.clone(),
                    if ds.unit.is_empty() {
                        "-".into()
                    } else {
                        ds.unit.clone()
                    },
                    if ds.state.is_empty() {
                        "-".into()
                    } else {
                        ds.state.clone()
                    },
                    revision,
                    format!("{}/{}", u8::from(ds.ready), want),
                    r.restarts.to_string(),
                    memory(r.memory_bytes),
                    cpu(r.cpu_nanoseconds),
                    if why.is_empty() { "-".into() } else { why },
                ];
                if let Some(g) = git {
                    // The commit the unit was started from; `-` for the spec directory's.
                    let commit = g
                        .units
                        .get(&ds.name)
                        .map_or("-".to_string(), |c| c.chars().take(12).collect());
                    line.insert(4, commit);
                }
                lines.push(line);
            }
            print!("{}", table(&lines));
            for d in &report.diagnostics {
                eprintln!("{d}");
            }
            for e in &report.errors {
                eprintln!("hostsetd: {e}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(memory(None), "-");
        assert_eq!(memory(Some(512)), "512");
        assert_eq!(memory(Some(209_715_200)), "200.0Mi");
        assert_eq!(cpu(Some(1_234_000_000)), "1.234s");
    }
}
