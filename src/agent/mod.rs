//! `hostsetd`, the node agent.
//!
//! - [`config`]: `/etc/hostset/agent.toml` and the command line.
//! - [`conditions`]: memory and disk pressure as node taints.
//! - [`probes`]: running the daemons' probes (exec, HTTP GET, TCP connect).
//! - [`report`]: reporting to the coordinator (full reports, heartbeats, goodbye).
//! - [`run`]: the event loop around [`crate::plan`].
//!
//! `hostsetd exec` is the argv shim used by units whose arguments hold `$` or
//! `;` (see [`crate::unit::UnitOptions::exec_shim`]).
//!
//! `hostsetd goodbye [--config FILE] [--node-file FILE] [--coordinator URL] [--token-file
//! FILE]` tells the coordinator this node is gone (`DELETE /v1/nodes/{name}`, once), for the
//! package's removal script: exit 0 when the coordinator forgot the node (204) or never knew
//! it (404), or when no coordinator is configured; 1 otherwise, with the reason on stderr.

pub mod conditions;
pub mod config;
pub mod probes;
pub mod report;
pub mod run;

use std::process::ExitCode;

use clap::Parser;

/// Entry point of `hostsetd`.
pub fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "exec") {
        return exec_shim();
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "goodbye") {
        return goodbye();
    }
    let args = config::Args::parse();
    crate::service::init_logging("hostsetd", args.log_format, "info");
    let config = match config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            eprintln!("hostsetd: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before any thread: libgit2's timeouts are process-wide globals.
    crate::gitsource::set_network_timeouts(
        crate::gitsource::CONNECT_TIMEOUT,
        crate::gitsource::IO_TIMEOUT,
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hostsetd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "hostsetd failed");
            eprintln!("hostsetd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: config::Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let bus = crate::systemd::dbus::Bus::system()
        .await
        .context("connecting to systemd over the system bus")?;
    if !config.spec_dir.exists()
        && let Err(e) = std::fs::create_dir_all(&config.spec_dir)
    {
        tracing::warn!(dir = %config.spec_dir.display(), error = %e, "cannot create the spec directory; waiting for it to appear");
    }
    let exec_shim = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or_else(|| "/usr/bin/hostsetd".to_string());
    let options = crate::unit::UnitOptions {
        exec_shim,
        restart_usec: config.restart_delay.as_micros() as u64,
    };
    let status_path = std::env::var_os("RUNTIME_DIRECTORY")
        .map(|d| std::path::PathBuf::from(d).join("status.json"))
        .unwrap_or_else(|| std::path::PathBuf::from("/run/hostset/status.json"));
    let facts = crate::node::HostFacts::detect();
    let agent = run::Agent::new(bus, config, Some(facts), options, Some(status_path));
    run::run(agent, shutdown_signal()).await
}

/// `hostsetd goodbye`: see the [module docs](self).
fn goodbye() -> ExitCode {
    let argv = std::iter::once(std::ffi::OsString::from("hostsetd goodbye"))
        .chain(std::env::args_os().skip(2));
    let args = match config::Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    // Problems the client meets on the way (an unreadable token file) go to stderr.
    crate::service::init_logging("hostsetd", config::LogFormat::Text, "warn");
    let config = match config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hostsetd goodbye: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hostsetd goodbye: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let facts = crate::node::HostFacts::detect();
    match runtime.block_on(report::goodbye(&config, Some(&facts))) {
        Ok(None) => {
            eprintln!("hostsetd goodbye: no coordinator configured; nothing to do");
            ExitCode::SUCCESS
        }
        Ok(Some((node, report::Goodbye::Removed))) => {
            eprintln!("hostsetd goodbye: the coordinator forgot node {node}");
            ExitCode::SUCCESS
        }
        Ok(Some((node, report::Goodbye::Unknown))) => {
            eprintln!("hostsetd goodbye: the coordinator did not know node {node}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("hostsetd goodbye: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `hostsetd exec`: run the argv a unit carries in its environment
/// (`HOSTSET_ARGC`, `HOSTSET_ARGV_<i>`), without the shim's variables.
fn exec_shim() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let Some(argv) = crate::unit::argv_from_env(std::env::vars()) else {
        eprintln!("hostsetd exec: HOSTSET_ARGC/HOSTSET_ARGV_* are missing or incomplete");
        return ExitCode::from(127);
    };
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    for (k, _) in std::env::vars_os() {
        if k.to_str()
            .is_some_and(|k| k == "HOSTSET_ARGC" || k.starts_with("HOSTSET_ARGV_"))
        {
            cmd.env_remove(k);
        }
    }
    let err = cmd.exec();
    eprintln!("hostsetd exec: cannot run {}: {err}", argv[0]);
    ExitCode::from(127)
}
