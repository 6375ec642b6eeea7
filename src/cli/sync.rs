//! `hostset sync`: fetch the git repository now (`[source.git]`), without waiting for the
//! poll interval.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::report::{GitReport, NodeReport};

/// Ask hostsetd to fetch its git repository ([source.git]) now and wait for the result: the
/// commit in force, or why the head is refused or cannot be fetched.
///
/// hostsetd is sent SIGUSR1 through systemd (KillUnit); the result is read from its status
/// file. With --unit hostset-coordinator.service the coordinator is asked instead (SIGUSR1;
/// its view is GET /v1/source), without waiting.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit status: 0 when the head of the branch is in force; 1 when it is refused, cannot be
fetched, or hostsetd did not answer in time.

Examples:
  hostset sync
  hostset sync --timeout 120
  hostset sync --unit hostset-coordinator.service")]
pub struct Args {
    /// The systemd unit of the daemon to ask.
    #[arg(long, value_name = "UNIT", default_value = "hostsetd.service")]
    pub unit: String,
    /// The agent's status file.
    #[arg(
        long,
        value_name = "FILE",
        env = "HOSTSET_STATUS_FILE",
        default_value = "/run/hostset/status.json"
    )]
    pub status_file: PathBuf,
    /// How long to wait for the fetch, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
}

fn read_git(file: &std::path::Path) -> anyhow::Result<Option<GitReport>> {
    let text = std::fs::read(file).with_context(|| {
        format!(
            "reading {} (is hostsetd running? `systemctl status hostsetd`)",
            file.display()
        )
    })?;
    let report: NodeReport = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a hostset status report", file.display()))?;
    Ok(report.git)
}

/// The outcome in words, and whether the head is in force.
pub fn summary(g: &GitReport) -> (String, bool) {
    let short = |c: &str| c.chars().take(12).collect::<String>();
    let commit = if g.commit.is_empty() {
        "no commit".to_string()
    } else {
        format!("commit {}", short(&g.commit))
    };
    let signed = if g.signed_by.is_empty() {
        String::new()
    } else {
        format!(" (signed by {})", g.signed_by)
    };
    let mut lines = vec![format!(
        "{} {}: {commit}{signed} in force",
        g.url, g.reference
    )];
    let mut ok = true;
    if !g.fetch_error.is_empty() {
        ok = false;
        lines.push(format!("fetch failed: {}", g.fetch_error));
    } else if !g.refused.is_empty() {
        ok = false;
        lines.push(format!("head {} refused:", short(&g.refused)));
        lines.extend(g.refused_because.iter().map(|l| format!("  {l}")));
    } else if g.head != g.commit {
        ok = false;
        lines.push(format!("head {} not in force yet", short(&g.head)));
    }
    lines.extend(g.notes.iter().map(|n| format!("note: {n}")));
    (lines.join("\n"), ok)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let agent = args.unit == "hostsetd.service" || args.unit == "hostsetd";
    let before = if agent {
        match read_git(&args.status_file)? {
            Some(g) => Some(g.fetches),
            None => {
                eprintln!(
                    "hostset: hostsetd follows no git repository: configure [source.git] in \
                     /etc/hostset/agent.toml"
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(async {
            let bus = crate::systemd::dbus::Bus::system().await?;
            bus.manager()
                .kill_unit(&args.unit, "main", nix::sys::signal::Signal::SIGUSR1 as i32)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .with_context(|| format!("asking {} to fetch (SIGUSR1 through systemd)", args.unit))?;
    let Some(before) = before else {
        eprintln!(
            "hostset: asked {} to fetch now; its view: GET /v1/source",
            args.unit
        );
        return Ok(ExitCode::SUCCESS);
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        // The status file is rewritten after every pass; a half-read one is read again.
        if let Ok(Some(g)) = read_git(&args.status_file)
            && g.fetches != before
        {
            let (text, ok) = summary(&g);
            println!("{text}");
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        if Instant::now() >= deadline {
            eprintln!(
                "hostset: hostsetd did not report a fetch within {} s (see `journalctl -u \
                 hostsetd`)",
                args.timeout
            );
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
