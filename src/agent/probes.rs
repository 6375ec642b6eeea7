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
//! - `exec`: the command runs (no shell) in a transient oneshot unit
//!   ([`unit::probe_unit_spec`]) with the daemon's `User`, `Group`, `WorkingDirectory`, bind
//!   mounts and `env`, in `hostset.slice`: as the daemon runs, and outside the agent's own
//!   sandbox (hostsetd.service has no CAP_SETUID, a private /tmp, a read-only /usr). systemd
//!   kills it (every process) at the timeout. Exit status 0 passes. Its output goes to the
//!   journal (`journalctl HOSTSET_DAEMONSET=<name> HOSTSET_PROBE=readiness`).
//! - `httpGet`: `GET scheme://host:port/path` (host default `127.0.0.1`), HTTPS without
//!   certificate verification, redirects followed to the same host (up to 10; a redirect
//!   elsewhere counts as the 3xx it is), no proxy; `User-Agent: hostset-probe/<version>` and
//!   `Accept: */*` unless `httpHeaders` set them. A status from 200 to 399 passes.
//! - `tcpSocket`: a connection that opens within the timeout passes.
//!
//! HTTP GET and TCP connect run in the agent (its network is the host's); the agent's
//! sandbox does not matter to them.
//!
//! # Liveness and startup failure
//!
//! The daemon's main process gets SIGTERM (`KillUnit(main)`); systemd's `Restart=always`
//! restarts it and counts it in `NRestarts`, as kubelet's restart counts in `restartCount`.
//! If the same invocation still runs after the grace period (the probe's
//! `terminationGracePeriodSeconds`, else the template's), every process of the unit gets
//! SIGKILL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::probe::{Effect, Kind, Outcome, Restored, UnitProbes};
use crate::spec::{DaemonSet, HttpGetAction, PortRef, Probe, ProbeHandler, Process};
use crate::systemd::Systemd;
use crate::unit::{self, UnitOptions, UnitSpec};

/// The most of a failure message kept (exec output, error chains).
const MESSAGE_MAX: usize = 200;
/// How much longer than an exec probe's timeout the agent waits for systemd's answer.
const BUS_GRACE: Duration = Duration::from_secs(10);

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
    /// The daemonset as desired (its process: handlers, user, environment).
    ds: Arc<DaemonSet>,
    /// The template's `terminationGracePeriodSeconds`.
    grace: i64,
    ready_since: Option<u64>,
}

impl Entry {
    fn probe(&self, kind: Kind) -> Option<&Probe> {
        let process = &self.ds.template.process;
        match kind {
            Kind::Startup => process.startup_probe.as_ref(),
            Kind::Liveness => process.liveness_probe.as_ref(),
            Kind::Readiness => process.readiness_probe.as_ref(),
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
    /// Only why the unit is not ready changed: report it.
    Refresh,
    /// The unit's readiness changed: make a pass (it reports, and may act on it).
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
    /// Names the exec probes' units: `hostset.probe-<instance>-<n>.service`.
    instance: String,
    runs: u64,
}

fn epoch_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

impl Prober {
    /// A prober keeping its state in `state_path` (read now, if it exists); `instance` (the
    /// agent start's identity) names the exec probes' units.
    pub fn new(state_path: Option<PathBuf>, instance: &str) -> Prober {
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
            instance: instance.to_string(),
            runs: 0,
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
            let ds = Arc::new(ds.clone());
            let process = &ds.template.process;
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
                    grace: ds.template.termination_grace_period_seconds,
                    ds,
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

    /// Start every probe that is due; exec probes run in oneshot units of `systemd`.
    pub fn start_due<S: Systemd>(&mut self, systemd: &S, options: &UnitOptions) {
        let now = self.now();
        for (unit, e) in &mut self.units {
            for (kind, timeout) in e.probes.take_due(now) {
                let Some(handler) = e.probe(kind).and_then(|p| p.handler.clone()) else {
                    continue;
                };
                let exec_unit = match &handler {
                    ProbeHandler::Exec { command } => {
                        self.runs += 1;
                        let name = format!(
                            "{}{}-{}.service",
                            unit::PROBE_UNIT_PREFIX,
                            self.instance,
                            self.runs
                        );
                        let word = match kind {
                            Kind::Startup => "startup",
                            Kind::Liveness => "liveness",
                            Kind::Readiness => "readiness",
                        };
                        let spec = unit::probe_unit_spec(
                            &e.ds,
                            &name,
                            word,
                            command,
                            u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX),
                            options,
                        );
                        Some((systemd.clone(), spec))
                    }
                    _ => None,
                };
                let ds = e.ds.clone();
                let done = Done {
                    unit: unit.clone(),
                    invocation: e.invocation.clone(),
                    kind,
                    outcome: Outcome::Success,
                };
                self.running.spawn(async move {
                    let outcome = run(&handler, &ds, exec_unit, timeout).await;
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
        let kept_before = e.kept();
        let reason_before = e.probes.reason();
        let effect = e.probes.record(done.kind, done.outcome, now);
        let ready = e.probes.ready();
        if effect == Effect::ReadinessChanged {
            e.ready_since = ready.then(|| epoch_now().as_secs());
        }
        // probes.json changes only with what it keeps (startup, readiness, since when).
        self.dirty |= e.kept() != kept_before;
        let reason = e.probes.reason();
        let grace = e
            .probe(done.kind)
            .and_then(|p| p.termination_grace_period_seconds)
            .unwrap_or(e.grace)
            .max(1);
        let followup = match effect {
            Effect::None if reason != reason_before => Followup::Refresh,
            Effect::None => Followup::None,
            Effect::ReadinessChanged => {
                if ready {
                    info!(unit = %done.unit, "{} is ready", done.unit);
                    self.killed.remove(&done.unit);
                } else {
                    info!(unit = %done.unit, %reason, "{} is not ready: {reason}", done.unit);
                }
                Followup::Report
            }
            Effect::Restart(why) => {
                self.kills.push(PendingKill {
                    at: now + Duration::from_secs(u64::try_from(grace).unwrap_or(1)),
                    unit: done.unit.clone(),
                    invocation: done.invocation.clone(),
                });
                self.killed.insert(done.unit.clone(), why.clone());
                Followup::Kill {
                    unit: done.unit,
                    reason: why,
                }
            }
        };
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
async fn run<S: Systemd>(
    handler: &ProbeHandler,
    ds: &DaemonSet,
    exec_unit: Option<(S, UnitSpec)>,
    timeout: Duration,
) -> Outcome {
    let process = &ds.template.process;
    match (handler, exec_unit) {
        (ProbeHandler::Exec { command }, Some((systemd, unit))) => {
            exec(systemd, unit, command, timeout).await
        }
        (ProbeHandler::Exec { .. }, None) => Outcome::Failure("exec: no unit to run it in".into()),
        (ProbeHandler::HttpGet(h), _) => http_get(h, process, timeout).await,
        (ProbeHandler::TcpSocket { host, port }, _) => tcp(host, port, process, timeout).await,
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

/// systemd's own exit statuses for a unit whose process could not start (`systemd.exec(5)`).
fn exit_status_hint(status: i32) -> &'static str {
    match status {
        200 => " (systemd could not change to the working directory)",
        203 => " (systemd could not execute the program)",
        216 => " (the group does not exist)",
        217 => " (the user does not exist)",
        _ => "",
    }
}

/// Run an exec probe's command once, in the oneshot unit `unit` ([`unit::probe_unit_spec`]).
async fn exec<S: Systemd>(
    systemd: S,
    unit: UnitSpec,
    command: &[String],
    timeout: Duration,
) -> Outcome {
    let shown = format!("exec {}", command.join(" "));
    let fail = |m: String| Outcome::Failure(clip(&format!("{shown}: {m}")));
    // systemd kills the command at the timeout; this only guards against a bus that hangs.
    let answer = tokio::time::timeout(timeout + BUS_GRACE, systemd.run_oneshot(&unit)).await;
    match answer {
        Err(_) => fail("no answer from systemd".into()),
        Ok(Err(e)) => fail(format!("cannot run: {e}")),
        Ok(Ok(r)) => match r.result.as_str() {
            "success" => Outcome::Success,
            "exit-code" => fail(format!(
                "exit status {}{}",
                r.exit_status,
                exit_status_hint(r.exit_status)
            )),
            "timeout" => fail(format!("timed out after {}", seconds(timeout))),
            "signal" | "core-dump" => fail(format!("killed by signal {}", r.exit_status)),
            other => fail(format!("failed ({other})")),
        },
    }
}
