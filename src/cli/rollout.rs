//! `hostset rollout status|history|undo|pause|resume NAME`: fleet-wide rolling updates, from
//! the coordinator (as `kubectl rollout` does for a DaemonSet).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::client::{Client, CoordinatorArgs, Subject};
use crate::api::{DaemonSetDetail, RevisionView, UndoRequest};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Verb,
}

#[derive(Debug, clap::Subcommand)]
pub enum Verb {
    /// Follow a daemonset's rollout until it completes (exit 0) or halts (exit 1).
    Status {
        /// The daemonset.
        name: String,
        /// Print the state once instead of following it (exit 0 when complete, 1 otherwise).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        watch: bool,
        /// Give up after this long (e.g. 90s, 10m); exit 1. Default: no limit.
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        timeout: Option<Duration>,
    },
    /// The revisions the coordinator keeps for a daemonset.
    History {
        name: String,
        /// Print the spec text of this revision number.
        #[arg(long, value_name = "N")]
        revision: Option<u64>,
    },
    /// Return the fleet to an earlier revision (the one before the current by default). The
    /// coordinator pins the daemonset to that revision until its spec file changes again; to
    /// make it permanent, write the old spec back (`hostset rollout history NAME --revision
    /// N` prints it).
    Undo {
        name: String,
        #[arg(long, value_name = "N")]
        to_revision: Option<u64>,
    },
    /// Grant no more rollout slots for a daemonset (daemons being replaced finish).
    Pause { name: String },
    /// Continue a paused rollout.
    Resume { name: String },
}

/// `90`, `90s`, `10m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration \"{s}\": write e.g. 90s, 10m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => {
            return Err(format!(
                "invalid duration \"{s}\": write e.g. 90s, 10m or 1h"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

pub fn run(args: Args, coordinator: &CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(coordinator)?;
    match args.command {
        Verb::Status {
            name,
            watch,
            timeout,
        } => status(&client, &name, watch, timeout),
        Verb::History { name, revision } => history(&client, &name, revision),
        Verb::Undo { name, to_revision } => {
            let body = client.post(
                &["daemonsets", &name, "rollout", "undo"],
                &UndoRequest { to_revision },
                Some(Subject {
                    kind: "daemonset",
                    name: &name,
                }),
            )?;
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let number = answer["revision"].as_u64().unwrap_or(0);
            println!("daemonset {name} rolled back to revision {number}");
            match answer["revertCommit"].as_str().filter(|c| !c.is_empty()) {
                // The fleet follows git: the files are the repository's.
                Some(commit) => println!(
                    "its spec comes from git: to make this permanent, revert the commit that \
                     brought the current revision: git revert {commit}"
                ),
                None => println!(
                    "the coordinator pins it until the spec file changes; to make this \
                     permanent, write revision {number} back: hostset rollout history {name} \
                     --revision {number}"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Pause { name } => steer(&client, &name, "pause", "paused"),
        Verb::Resume { name } => steer(&client, &name, "resume", "resumed"),
    }
}

fn steer(client: &Client, name: &str, verb: &str, done: &str) -> anyhow::Result<ExitCode> {
    client.post(
        &["daemonsets", name, "rollout", verb],
        &serde_json::json!({}),
        Some(Subject {
            kind: "daemonset",
            name,
        }),
    )?;
    println!("daemonset {name} rollout {done}");
    Ok(ExitCode::SUCCESS)
}

fn history(client: &Client, name: &str, revision: Option<u64>) -> anyhow::Result<ExitCode> {
    let subject = Some(Subject {
        kind: "daemonset",
        name,
    });
    let n = revision.map(|n| n.to_string());
    let query: Vec<(&str, &str)> = n.iter().map(|n| ("revision", n.as_str())).collect();
    let revisions: Vec<RevisionView> =
        client.get_query(&["daemonsets", name, "history"], &query, subject)?;
    if let Some(n) = revision {
        let Some(r) = revisions.iter().find(|r| r.number == n) else {
            bail!("daemonset {name} has no revision {n}");
        };
        print!("{}", r.text.clone().unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    println!("daemonset.apps/{name}");
    let mut rows = vec![vec![
        "REVISION".to_string(),
        "HASH".to_string(),
        "CREATED".to_string(),
        "FILE".to_string(),
        "".to_string(),
    ]];
    let now = super::output::now();
    let git = revisions.iter().any(|r| !r.commit.is_empty());
    if git {
        rows[0].insert(4, "COMMIT".to_string());
    }
    for r in &revisions {
        let mut row = vec![
            r.number.to_string(),
            r.revision.clone(),
            super::output::age(r.created_at, now),
            r.file.clone(),
            if r.current { "(current)" } else { "" }.to_string(),
        ];
        if git {
            row.insert(4, r.commit.chars().take(12).collect());
        }
        rows.push(row);
    }
    print!("{}", super::output::table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// One look at the rollout: a line for the whole, and one per node whose part changed.
fn summary(d: &DaemonSetDetail) -> (String, Outcome) {
    let name = &d.daemonset.name;
    let Some(r) = &d.daemonset.rollout else {
        let s = &d.daemonset.status;
        return if s.updated_number_scheduled >= s.desired_number_scheduled {
            (
                format!(
                    "daemon set \"{name}\" has no rolling update (OnDelete): {} of {} updated",
                    s.updated_number_scheduled, s.desired_number_scheduled
                ),
                Outcome::Complete,
            )
        } else {
            (
                format!(
                    "daemon set \"{name}\" updates OnDelete: {} of {} daemons updated (replaced when their units are stopped)",
                    s.updated_number_scheduled, s.desired_number_scheduled
                ),
                Outcome::Waiting,
            )
        };
    };
    let p = &r.progress;
    if let Some(h) = &r.halt {
        return (
            format!(
                "error: daemon set \"{name}\" rollout halted: {}\n  {}",
                h.message,
                h.hosts.join("\n  ")
            ),
            Outcome::Halted,
        );
    }
    if p.complete {
        let skipped = if p.skipped.is_empty() {
            String::new()
        } else {
            format!(" (skipped silent nodes: {})", p.skipped.join(", "))
        };
        let rolled_back = r
            .rolled_back
            .as_ref()
            .map(|rb| format!(" after an automatic rollback ({})", rb.message))
            .unwrap_or_default();
        return (
            format!("daemon set \"{name}\" successfully rolled out{rolled_back}{skipped}"),
            if r.rolled_back.is_some() {
                Outcome::RolledBack
            } else {
                Outcome::Complete
            },
        );
    }
    let paused = if r.paused { " (paused)" } else { "" };
    let line = if p.updated < p.desired {
        format!(
            "Waiting for daemon set \"{name}\" rollout to finish: {} out of {} new daemons have been updated...{paused}",
            p.updated, p.desired
        )
    } else {
        format!(
            "Waiting for daemon set \"{name}\" rollout to finish: {} of {} updated daemons are available...{paused}",
            p.updated_available, p.desired
        )
    };
    (line, Outcome::Waiting)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Waiting,
    Complete,
    RolledBack,
    Halted,
}

/// A node's part, as a short phrase.
fn node_line(n: &crate::api::NodePlacement, revision: &str) -> Option<String> {
    if !n.should_run {
        return None;
    }
    let what = if !n.rollout.is_empty() {
        n.rollout.clone()
    } else if n.updated && n.available {
        format!("updated to {revision}, available")
    } else if n.updated {
        format!("updated to {revision}, not available yet")
    } else if n.problem.is_empty() {
        format!("runs {}", n.revision)
    } else {
        n.problem.clone()
    };
    Some(format!("{}: {what}", n.node))
}

fn status(
    client: &Client,
    name: &str,
    watch: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let terminal = std::io::stdout().is_terminal();
    let mut last_line = String::new();
    let mut last_nodes: std::collections::BTreeMap<String, String> = Default::default();
    let mut out = std::io::stdout().lock();
    loop {
        let d: DaemonSetDetail = client.get(
            &["daemonsets", name],
            Some(Subject {
                kind: "daemonset",
                name,
            }),
        )?;
        let (line, outcome) = summary(&d);
        if watch {
            for n in &d.nodes {
                let Some(text) = node_line(n, &d.daemonset.revision) else {
                    continue;
                };
                if last_nodes.get(&n.node) != Some(&text) {
                    if terminal {
                        // Clear the progress line, print the node's line, redraw below.
                        write!(out, "\r\x1b[K")?;
                    }
                    writeln!(out, "  {text}")?;
                    last_nodes.insert(n.node.clone(), text);
                    last_line.clear();
                }
            }
        }
        if outcome != Outcome::Waiting || !watch {
            if terminal && !last_line.is_empty() {
                write!(out, "\r\x1b[K")?;
            }
            writeln!(out, "{line}")?;
            return Ok(match outcome {
                Outcome::Complete => ExitCode::SUCCESS,
                // Back on the old revision: the update did not happen.
                Outcome::RolledBack | Outcome::Halted | Outcome::Waiting => ExitCode::FAILURE,
            });
        }
        if line != last_line {
            if terminal {
                let bar = d.daemonset.rollout.as_ref().map_or(String::new(), |r| {
                    bar(r.progress.updated_available, r.progress.desired)
                });
                write!(out, "\r\x1b[K{bar} {line}")?;
            } else {
                writeln!(out, "{line}")?;
            }
            out.flush()?;
            last_line = line;
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            if terminal {
                writeln!(out)?;
            }
            bail!(
                "timed out after {}s waiting for daemonset {name}'s rollout",
                started.elapsed().as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `[#####.....] 5/10`.
fn bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 20;
    let filled = (done.min(total) * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    format!(
        "[{}{}] {done}/{total}",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("1d").is_err());
        assert_eq!(bar(1, 4), "[#####...............] 1/4");
    }
}
