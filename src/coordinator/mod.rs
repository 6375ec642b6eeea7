//! `hostset-coordinator`: collects the agents' reports and serves fleet-wide coverage.
//!
//! Agents (`hostsetd`) send a full [`crate::report::NodeReport`] when something changed and a
//! heartbeat otherwise; the coordinator keeps each node's last report, reads the same spec
//! directory as the agents, and answers with Kubernetes' `DaemonSetStatus` arithmetic
//! ([`crate::fleet`]): a JSON API, Prometheus metrics and a status page.
//!
//! - [`config`]: `/etc/hostset/coordinator.toml` and the command line.
//! - [`auth`]: bearer tokens (agent tokens, node-bound or not; read tokens).
//! - [`store`]: the redb database in the state directory.
//! - [`specs`]: the spec directory with each daemonset's generation and revisions.
//! - [`rollouts`]: the slots of fleet-wide rolling updates, pause, undo, rollback.
//! - [`server`]: the routes, serving over HTTP or TLS, the background work.
//! - [`metrics`]: the Prometheus page.
//! - [`page`]: the HTML page.
//!
//! # Lifecycle
//!
//! Start: configuration, then the token files, the store and the spec directory are read
//! (any problem is fatal, with the file named), the address is bound and systemd is told
//! `READY=1` (`Type=notify`). Then requests are served, by one thread per CPU the process
//! may use (each a single-threaded tokio runtime accepting from the same socket; a report's
//! database commit is grouped with the others under way by the store's writer thread); the
//! spec directory is watched (inotify, debounced) and heartbeats are written every 5 s. SIGHUP re-reads the token
//! files and the spec directory at once. SIGTERM or SIGINT: open requests get 10 s, then
//! the heartbeats are written and the process exits 0.

pub mod auth;
pub mod config;
pub mod metrics;
pub mod page;
pub mod rollouts;
pub mod server;
pub mod specs;
mod state;
pub mod store;

use std::process::ExitCode;

use clap::Parser;

pub use server::{
    AppState, Clock, router, serve, serve_threads, serve_tls, serve_tls_threads, system_clock,
    tls_config,
};
pub use state::OpenError;

/// Entry point of `hostset-coordinator`.
pub fn main() -> ExitCode {
    let args = config::Args::parse();
    let journald = crate::service::init_logging("hostset-coordinator", args.log_format, "info");
    // Once: in the journal when logging goes there, on stderr unless that is the journal too.
    let stderr_is_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let fail = |e: &dyn std::fmt::Display| {
        if journald {
            tracing::error!(error = %e, "hostset-coordinator failed: {e}");
        }
        if !(journald && stderr_is_journal) {
            eprintln!("hostset-coordinator: {e}");
        }
        ExitCode::FAILURE
    };
    let config = match config::load(&args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
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
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

async fn run(config: config::Config) -> anyhow::Result<()> {
    use anyhow::Context;
    // For anything that asks rustls for the process-wide provider; the server's own
    // configuration names ring explicitly. Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = config
        .tls()?
        .map(|t| tls_config(&t))
        .transpose()
        .context("TLS")?;
    let state = AppState::open(&config, system_clock())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    if tls.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "serving plain HTTP on a non-loopback address: tokens cross the network in clear text; configure tls_cert and tls_key");
    }
    tracing::info!(
        listen = %config.listen,
        tls = tls.is_some(),
        client_certificates = config.client_ca_file.is_some(),
        state_dir = %config.state_dir.display(),
        spec_dir = %config.spec_dir.display(),
        nodes = state.node_count(),
        daemonsets = state.specs().len(),
        "serving on {}{}",
        config.listen,
        match (&tls, &config.client_ca_file) {
            (None, _) => " (plain HTTP)",
            (Some(_), None) => " (TLS)",
            (Some(_), Some(_)) => " (TLS, client certificates required)",
        }
    );
    tokio::spawn(reload_on_sighup(state.clone()));
    tokio::spawn(sync_on_usr1(state.clone()));
    crate::service::notify("READY=1");
    let shutdown = async {
        shutdown_signal().await;
        crate::service::notify("STOPPING=1");
        tracing::info!("stopping");
    };
    // One serving thread per CPU the process may use (each a single-threaded runtime).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    match tls {
        Some(tls) => serve_tls_threads(listener, state, tls, shutdown, threads).await,
        None => serve_threads(listener, state, shutdown, threads).await,
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

/// On SIGUSR1 (`hostset sync --unit hostset-coordinator.service`): fetch the git
/// repository now.
async fn sync_on_usr1(state: AppState) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    while usr1.recv().await.is_some() {
        tracing::info!("SIGUSR1: fetching the git repository now");
        state.sync_git();
    }
}

/// On SIGHUP: re-read the token files and the spec directory.
async fn reload_on_sighup(state: AppState) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!(
            "SIGHUP: re-reading the token files and the spec directory, fetching the git repository"
        );
        state.sync_git();
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = state.reload_tokens();
            state.rescan_specs();
        })
        .await;
    }
}
