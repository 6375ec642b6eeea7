//! The agent's prober: runs the probes of every unit whose spec declares any.
//!
//! The thresholds and timing are [`crate::probe::UnitProbes`]'s (pure); this is the edge
//! around it: which units are probed, running each probe (exec, HTTP GET, TCP connect) as a
//! task, killing a daemon whose liveness or startup probe failed, and keeping what a
//! restarted agent needs in `probes.json` beside the status file.
//!
//! # Which units
//!
//! A unit is probed while it is `active` and runs the desired revision of its daemonset
//! (keyed by unit name: during a surge rollout two units of one daemonset, of two
//! revisions, may run side by side). A unit of another revision is not probed: it counts as
//! ready when active. Each systemd invocation of the unit (`InvocationID`) starts the probes
//! afresh, as a container restart does in kubelet.
//!
//! # No probes, no timers
//!
//! The prober asks for a wake-up ([`Prober::next_wake`]) only when a probe or a kill is due;
//! with no probe declared it has no timer and no task.
//!
//! # The handlers
//!
//! - `exec`: the command runs directly (no shell) as the daemon's user and group (with the
//!   user's supplementary groups, as systemd's `User=` gives them), with the daemon's
//!   environment (the spec's `env` over `PATH`, `HOME`, `USER`, `LOGNAME`, `SHELL`) and
//!   working directory, in its own process group, killed (the whole group) at the timeout.
//!   Exit status 0 passes. It runs in the host's mount namespace, not the unit's.
//! - `httpGet`: `GET scheme://host:port/path` (host default `127.0.0.1`), HTTPS without
//!   certificate verification, redirects followed to the same host (up to 10; a redirect
//!   elsewhere counts as the 3xx it is), no proxy; `User-Agent: hostset-probe/<version>` and
//!   `Accept: */*` unless `httpHeaders` set them. A status from 200 to 399 passes.
//! - `tcpSocket`: a connection that opens within the timeout passes.
//!
//! # Liveness and startup failure
//!
//! The daemon's main process gets SIGTERM (`KillUnit(main)`); systemd's `Restart=always`
//! restarts it and counts it in `NRestarts`, as kubelet's restart counts in `restartCount`.
//! If the same invocation still runs after the grace period (the probe's
//! `terminationGracePeriodSeconds`, else the template's), every process of the unit gets
//! SIGKILL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::probe::{Effect, Kind, Outcome, Restored, UnitProbes};
use crate::spec::{DaemonSet, HttpGetAction, PortRef, Probe, ProbeHandler, Process};

/// The most of a failure message kept (exec output, error chains).
const MESSAGE_MAX: usize = 200;
/// The most output read from an exec probe (kubelet reads 10 KiB).
const OUTPUT_MAX: usize = 10 * 1024;
/// The default `PATH` of a systemd service.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One unit as the agent observed it in a pass.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub unit: &'a str,
    /// `ActiveState` is `active`.
    pub active: bool,
    /// `InvocationID`; empty when unknown.
    pub invocation: &'a str,
    /// `ActiveEnterTimestamp`, µs since the epoch.
    pub active_enter_usec: u64,
    /// The desired daemonset, when the unit runs its desired revision.
    pub desired: Option<&'a DaemonSet>,
}

/// A probe that finished.
#[derive(Debug)]
pub struct Done {
    unit: String,
    invocation: String,
    kind: Kind,
    outcome: Outcome,
}

/// A unit's readiness as the probes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// Seconds since the epoch it last became ready.
    pub ready_since: Option<u64>,
    /// Why not ready; empty when ready.
    pub reason: String,
}

/// What `probes.json` keeps of one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kept {
    invocation: String,
    startup_succeeded: bool,
    ready: bool,
    ready_since: Option<u64>,
}

/// The probes of one invocation of one unit.
struct Entry {
    invocation: String,
    probes: UnitProbes,
    /// The daemon: handlers, user, environment.
    process: Arc<Process>,
    /// The template's `terminationGracePeriodSeconds`.
    grace: i64,
    ready_since: Option<u64>,
}

impl Entry {
    fn probe(&self, kind: Kind) -> Option<&Probe> {
        match kind {
            Kind::Startup => self.process.startup_probe.as_ref(),
            Kind::Liveness => self.process.liveness_probe.as_ref(),
            Kind::Readiness => self.process.readiness_probe.as_ref(),
        }
    }

    fn kept(&self) -> Kept {
        let k = self.probes.keep();
        Kept {
            invocation: self.invocation.clone(),
            startup_succeeded: k.startup_succeeded,
            ready: k.ready,
            ready_since: self.ready_since,
        }
    }
}

/// A SIGKILL due unless the invocation has ended by then.
struct PendingKill {
    at: Duration,
    unit: String,
    invocation: String,
}

/// What to do about a unit after a probe finished.
pub enum Followup {
    /// Nothing.
    None,
    /// The unit's readiness changed: report.
    Report,
    /// Kill the unit's main process (SIGTERM), for this reason.
    Kill { unit: String, reason: String },
}

/// The prober. See the [module docs](self).
pub struct Prober {
    origin: Instant,
    units: HashMap<String, Entry>,
    running: JoinSet<Done>,
    kills: Vec<PendingKill>,
    state_path: Option<PathBuf>,
    /// What an earlier agent kept, until each unit is met.
    kept: HashMap<String, Kept>,
    /// Why the probes last killed a unit, until it is ready again.
    killed: HashMap<String, String>,
    /// `probes.json` is behind.
    dirty: bool,
}

fn epoch_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

impl Prober {
    /// A prober keeping its state in `state_path` (read now, if it exists).
    pub fn new(state_path: Option<PathBuf>) -> Prober {
        let kept = state_path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Prober {
            origin: Instant::now(),
            units: HashMap::new(),
            running: JoinSet::new(),
            kills: Vec::new(),
            state_path,
            kept,
            killed: HashMap::new(),
            dirty: false,
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Follow the units of a pass: start the probes of a new invocation, drop those of units
    /// no longer active, of another revision, or gone.
    pub fn sync<'a>(&mut self, observed: impl IntoIterator<Item = Observed<'a>>) {
        let now = self.now();
        let mut seen: Vec<&str> = Vec::new();
        for o in observed {
            let Some(ds) = o.desired.filter(|d| d.template.process.has_probes()) else {
                continue;
            };
            if !o.active || o.invocation.is_empty() {
                continue;
            }
            seen.push(o.unit);
            if self
                .units
                .get(o.unit)
                .is_some_and(|e| e.invocation == o.invocation)
            {
                continue;
            }
            let process = Arc::new(ds.template.process.clone());
            let since_start =
                epoch_now().saturating_sub(Duration::from_micros(o.active_enter_usec));
            let started = now.saturating_sub(since_start);
            let kept = self
                .kept
                .remove(o.unit)
                .filter(|k| k.invocation == o.invocation);
            let restored = kept.as_ref().map(|k| Restored {
                startup_succeeded: k.startup_succeeded,
                ready: k.ready,
            });
            let probes = UnitProbes::new(
                process.startup_probe.as_ref(),
                process.liveness_probe.as_ref(),
                process.readiness_probe.as_ref(),
                started,
                now,
                restored,
            );
            let ready_since = match &kept {
                Some(k) if k.ready => k.ready_since,
                _ if probes.ready() => Some(o.active_enter_usec / 1_000_000),
                _ => None,
            };
            debug!(unit = %o.unit, invocation = %o.invocation, restored = kept.is_some(), "probing");
            self.units.insert(
                o.unit.to_string(),
                Entry {
                    invocation: o.invocation.to_string(),
                    probes,
                    process,
                    grace: ds.template.termination_grace_period_seconds,
                    ready_since,
                },
            );
            self.dirty = true;
        }
        let before = self.units.len();
        self.units.retain(|unit, _| seen.contains(&unit.as_str()));
        self.dirty |= self.units.len() != before;
        // What an earlier agent kept is only good for units met in the first pass.
        self.kept.clear();
        self.save();
    }

    /// The readiness of `unit` as its probes see it; `None` when it is not probed.
    pub fn readiness(&self, unit: &str) -> Option<Readiness> {
        let e = self.units.get(unit)?;
        let ready = e.probes.ready();
        let mut reason = e.probes.reason();
        if !ready && let Some(why) = self.killed.get(unit) {
            reason = format!("{reason} (restarted after: {why})");
        }
        Some(Readiness {
            ready,
            ready_since: e.ready_since.filter(|_| ready),
            reason,
        })
    }

    /// Why the probes last killed `unit`, until it is ready again.
    pub fn killed(&self, unit: &str) -> Option<&str> {
        self.killed.get(unit).map(String::as_str)
    }

    /// When the prober next has something to do (a probe or a kill due); `None` when nothing
    /// is scheduled.
    pub fn next_wake(&self) -> Option<Instant> {
        let probes = self.units.values().filter_map(|e| e.probes.next_due());
        let kills = self.kills.iter().map(|k| k.at);
        probes.chain(kills).min().map(|d| self.origin + d)
    }

    /// Whether probes are running (their outcomes are to be awaited).
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// The next finished probe (pending forever when none runs).
    pub async fn next_done(&mut self) -> Done {
        loop {
            match self.running.join_next().await {
                Some(Ok(done)) => return done,
                Some(Err(e)) => warn!(error = %e, "a probe task failed"),
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Start every probe that is due.
    pub fn start_due(&mut self) {
        let now = self.now();
        for (unit, e) in &mut self.units {
            for (kind, timeout) in e.probes.take_due(now) {
                let Some(handler) = e.probe(kind).and_then(|p| p.handler.clone()) else {
                    continue;
                };
                let process = e.process.clone();
                let done = Done {
                    unit: unit.clone(),
                    invocation: e.invocation.clone(),
                    kind,
                    outcome: Outcome::Success,
                };
                self.running.spawn(async move {
                    let outcome = run(&handler, &process, timeout).await;
                    Done { outcome, ..done }
                });
            }
        }
    }

    /// The kills due now: `(unit, invocation)` to SIGKILL if that invocation still runs.
    pub fn take_due_kills(&mut self) -> Vec<(String, String)> {
        let now = self.now();
        let (due, later): (Vec<_>, Vec<_>) = self.kills.drain(..).partition(|k| k.at <= now);
        self.kills = later;
        due.into_iter().map(|k| (k.unit, k.invocation)).collect()
    }

    /// Take a finished probe's outcome.
    pub fn record(&mut self, done: Done) -> Followup {
        let now = self.now();
        let Some(e) = self.units.get_mut(&done.unit) else {
            return Followup::None;
        };
        if e.invocation != done.invocation {
            return Followup::None;
        }
        if let Outcome::Failure(m) = &done.outcome {
            debug!(unit = %done.unit, probe = %done.kind, message = %m, "probe failed");
        }
        let effect = e.probes.record(done.kind, done.outcome, now);
        let followup = match effect {
            Effect::None => Followup::None,
            Effect::ReadinessChanged => {
                let ready = e.probes.ready();
                e.ready_since = ready.then(|| epoch_now().as_secs());
                if ready {
                    info!(unit = %done.unit, "ready");
                    self.killed.remove(&done.unit);
                } else {
                    info!(unit = %done.unit, reason = %e.probes.reason(), "not ready");
                }
                Followup::Report
            }
            Effect::Restart(reason) => {
                let grace = e
                    .probe(done.kind)
                    .and_then(|p| p.termination_grace_period_seconds)
                    .unwrap_or(e.grace)
                    .max(1);
                self.kills.push(PendingKill {
                    at: now + Duration::from_secs(u64::try_from(grace).unwrap_or(1)),
                    unit: done.unit.clone(),
                    invocation: done.invocation.clone(),
                });
                self.killed.insert(done.unit.clone(), reason.clone());
                Followup::Kill {
                    unit: done.unit,
                    reason,
                }
            }
        };
        self.dirty = true;
        self.save();
        followup
    }

    /// Write `probes.json` when something in it changed.
    fn save(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let Some(path) = &self.state_path else {
            return;
        };
        let kept: HashMap<&str, Kept> = self
            .units
            .iter()
            .map(|(u, e)| (u.as_str(), e.kept()))
            .collect();
        let data = serde_json::to_vec_pretty(&kept).unwrap_or_default();
        if let Err(e) = super::run::write_atomically(path, &data) {
            warn!(path = %path.display(), error = %e, "cannot write the probe state");
        }
    }
}

/// Run one probe.
pub async fn run(handler: &ProbeHandler, process: &Process, timeout: Duration) -> Outcome {
    match handler {
        ProbeHandler::Exec { command } => exec(command, process, timeout).await,
        ProbeHandler::HttpGet(h) => http_get(h, process, timeout).await,
        ProbeHandler::TcpSocket { host, port } => tcp(host, port, process, timeout).await,
    }
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Shorten `s` to [`MESSAGE_MAX`] bytes (on a character boundary), on one line.
fn clip(s: &str) -> String {
    let one_line: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.len() <= MESSAGE_MAX {
        return one_line;
    }
    let mut end = MESSAGE_MAX;
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &one_line[..end])
}

fn host_or_local(host: &str) -> &str {
    if host.is_empty() { "127.0.0.1" } else { host }
}

fn resolve(port: &PortRef, process: &Process) -> Result<u16, Outcome> {
    process
        .resolve_port(port)
        .ok_or_else(|| Outcome::Failure(format!("no port named \"{port}\"")))
}

async fn tcp(host: &str, port: &PortRef, process: &Process, timeout: Duration) -> Outcome {
    let port = match resolve(port, process) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let host = host_or_local(host);
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&target)).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(clip(&format!("TCP connect {target}: {e}"))),
        Err(_) => Outcome::Failure(format!(
            "TCP connect {target}: timed out after {}",
            seconds(timeout)
        )),
    }
}

/// The innermost cause of an error (reqwest's own message only names the URL).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn http_get(h: &HttpGetAction, process: &Process, timeout: Duration) -> Outcome {
    let port = match resolve(&h.port, process) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let host = host_or_local(&h.host);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url = format!(
        "{}://{host}:{port}{}",
        h.scheme.to_ascii_lowercase(),
        h.path
    );
    let fail = |m: String| Outcome::Failure(clip(&format!("HTTP GET {url}: {m}")));
    let parsed = match reqwest::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => return fail(e.to_string()),
    };
    super::report::install_crypto_provider();
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let same_host =
            attempt.previous().first().map(|u| u.host_str()) == Some(attempt.url().host_str());
        if attempt.previous().len() > 10 {
            attempt.error("stopped after 10 redirects")
        } else if same_host {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    let client = match reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .redirect(redirects)
        .timeout(timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(root_cause(&e)),
    };
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::USER_AGENT,
        reqwest::header::HeaderValue::from_static(concat!(
            "hostset-probe/",
            env!("CARGO_PKG_VERSION")
        )),
    );
    headers.insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static("*/*"),
    );
    let mut written: Vec<reqwest::header::HeaderName> = Vec::new();
    for header in &h.http_headers {
        let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(header.name.as_bytes()),
            reqwest::header::HeaderValue::from_str(&header.value),
        ) else {
            return fail(format!("invalid header {}", header.name));
        };
        // The spec's headers replace the defaults; repeated ones are all sent.
        if !written.contains(&name) {
            headers.remove(&name);
            written.push(name.clone());
        }
        headers.append(name, value);
    }
    match client.get(parsed).headers(headers).send().await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            if (200..400).contains(&code) {
                Outcome::Success
            } else {
                fail(code.to_string())
            }
        }
        Err(e) if e.is_timeout() => fail(format!("timed out after {}", seconds(timeout))),
        Err(e) => fail(root_cause(&e)),
    }
}

/// The user and groups an exec probe runs as: `None` for the agent's own.
struct Identity {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    groups: Vec<nix::unistd::Gid>,
    env: Vec<(String, String)>,
}

/// The daemon's user and group, as systemd's `User=`/`Group=` resolve them.
fn identity(process: &Process) -> Result<Option<Identity>, String> {
    use nix::unistd::{Gid, Group, Uid, User};
    if process.user.is_empty() && process.group.is_empty() {
        return Ok(None);
    }
    let user = if process.user.is_empty() {
        User::from_uid(Uid::current()).ok().flatten()
    } else if let Ok(n) = process.user.parse::<u32>() {
        User::from_uid(Uid::from_raw(n)).ok().flatten()
    } else {
        Some(
            User::from_name(&process.user)
                .map_err(|e| format!("cannot look up user {}: {e}", process.user))?
                .ok_or_else(|| format!("no user {}", process.user))?,
        )
    };
    let uid = match (&user, process.user.parse::<u32>()) {
        (Some(u), _) => u.uid,
        (None, Ok(n)) => Uid::from_raw(n),
        (None, Err(_)) => Uid::current(),
    };
    let gid = if process.group.is_empty() {
        user.as_ref().map_or(Gid::from_raw(uid.as_raw()), |u| u.gid)
    } else if let Ok(n) = process.group.parse::<u32>() {
        Gid::from_raw(n)
    } else {
        Group::from_name(&process.group)
            .map_err(|e| format!("cannot look up group {}: {e}", process.group))?
            .ok_or_else(|| format!("no group {}", process.group))?
            .gid
    };
    let mut groups = vec![gid];
    let mut env = Vec::new();
    if let Some(u) = &user {
        if let Ok(name) = std::ffi::CString::new(u.name.clone())
            && let Ok(list) = nix::unistd::getgrouplist(&name, gid)
        {
            groups = list;
        }
        env.push(("HOME".to_string(), u.dir.display().to_string()));
        env.push(("USER".to_string(), u.name.clone()));
        env.push(("LOGNAME".to_string(), u.name.clone()));
        env.push(("SHELL".to_string(), u.shell.display().to_string()));
    }
    Ok(Some(Identity {
        uid,
        gid,
        groups,
        env,
    }))
}

async fn exec(command: &[String], process: &Process, timeout: Duration) -> Outcome {
    use tokio::io::AsyncReadExt;
    let shown = format!("exec {}", command.join(" "));
    let fail = |m: String| Outcome::Failure(clip(&format!("{shown}: {m}")));
    let Some(program) = command.first() else {
        return fail("no command".into());
    };
    let identity = match identity(process) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&command[1..])
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .current_dir(if process.working_dir.is_empty() {
            Path::new("/")
        } else {
            Path::new(&process.working_dir)
        })
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(id) = &identity {
        cmd.envs(id.env.iter().map(|(k, v)| (k, v)));
        let (uid, gid, groups) = (id.uid, id.gid, id.groups.clone());
        // SAFETY: only async-signal-safe system calls run between fork and exec, on values
        // prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
                Ok(())
            });
        }
    }
    cmd.envs(process.env.iter().map(|e| (&e.name, &e.value)));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot run: {e}")),
    };
    let pgid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let collect = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(OUTPUT_MAX as u64).read_to_end(&mut out).await;
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(OUTPUT_MAX as u64).read_to_end(&mut err).await;
        }
        let status = child.wait().await;
        out.extend_from_slice(&err);
        (status, out)
    };
    let result = tokio::time::timeout(timeout, collect).await;
    match result {
        Ok((Ok(status), _)) if status.success() => Outcome::Success,
        Ok((Ok(status), output)) => {
            let text = String::from_utf8_lossy(&output);
            let why = match status.code() {
                Some(c) => format!("exit status {c}"),
                None => format!("killed by {status}"),
            };
            if text.trim().is_empty() {
                fail(why)
            } else {
                fail(format!("{why}: {}", text.trim()))
            }
        }
        Ok((Err(e), _)) => fail(e.to_string()),
        Err(_) => {
            // The whole group: a shell's children too.
            if let Some(pgid) = pgid {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            }
            fail(format!("timed out after {}", seconds(timeout)))
        }
    }
}
