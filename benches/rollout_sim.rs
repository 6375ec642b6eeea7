//! ROLLOUT SIMULATION: a fleet-wide rolling update across 1,000 simulated agents, against the
//! ideal `waves × (start + minReadySeconds)`.
//!
//! `cargo bench --bench rollout_sim` (`-- --quick` is accepted and changes nothing: one run
//! takes about a minute). Table on stdout, `target/bench/rollout.json` for `benches/run`.
//!
//! # What runs
//!
//! - **The coordinator, in this process**: [`AppState::open`] on a fresh state directory
//!   (redb under the system temp directory, real commits), a spec directory, node-bound agent
//!   tokens (one per node, the secure deployment) and a read token in files of mode 600, and
//!   the real router served by [`hostset::coordinator::serve_threads`] on a loopback listener,
//!   one serving thread per CPU as `hostset-coordinator` does, with its background work (the
//!   inotify rescan of the spec directory, the 1-second rollout tick, heartbeat flushes). It
//!   runs on threads of its own so that its CPU time can be told apart from the agents'.
//! - **1,000 simulated agents**, tokio tasks speaking the real protocol through the agent's
//!   own client, [`hostset::agent::report::Reporter`]: full reports when the content changes,
//!   heartbeats every `heartbeat_interval` (the agent's default, 10 s), the held directives
//!   poll while a report carries a rollout phase, the directives of every answer. What is
//!   simulated is only what lies under the reporter — systemd and the agent's planner, as
//!   `src/plan.rs` and `src/agent/run.rs` behave for a replace-in-place rollout: a unit of an
//!   older revision is kept and reported `rollout: "waiting"` (with the coordinator's wait
//!   reason as `rolloutMessage`, exactly as the agent's gate does) until the directives grant
//!   this node a slot for the desired revision; then the old daemon stops at once and the new
//!   one is `activating` for the fixed **start delay** (1 s), then `active/running` and ready
//!   with `readySince` = that second (the unit's `ActiveEnterTimestamp`, in whole seconds as
//!   the agent reports it). Every state change is a new report, sent at once (the agent's
//!   unit debounce is 20 ms; it is left out).
//! - **The daemonset**: `RollingUpdate` with `maxUnavailable = "10%"` (100 of 1,000) and
//!   `minReadySeconds = 2`. Every agent starts on revision 1, ready for an hour.
//!
//! # What is measured
//!
//! The spec file is rewritten (a temp file renamed over it) with a new template. At that
//! instant, **T0**, every simulated agent learns the new revision (real agents watch their own
//! copy of the spec directory; they and the coordinator see a change at about the same time),
//! and the coordinator sees the file through inotify and its 250 ms debounce. The **rollout
//! time** runs from T0 to the first moment the coordinator's own rollout view
//! ([`AppState::rollout_view`], sampled every 20 ms) says the new revision is complete.
//!
//! **Ideal** = `waves × (start delay + minReadySeconds)`, `waves = ceil(1000 / 100) = 10`:
//! a coordinator that hands over each slot the instant it frees, to agents that need no time
//! to hear of it. The ratio measured / ideal is the pacing overhead.
//!
//! Where the gap comes from (the per-wave table shows it):
//!
//! - **First grant**: the coordinator reads the new spec after its 250 ms debounce, then
//!   decides on the next report, heartbeat or 1 s tick.
//! - **The 1 s decision tick, in whole seconds.** A node becomes available through time alone
//!   (`readySince + minReadySeconds ≤ now`), not through a report: the coordinator notices on
//!   its 1-second rollout tick, with its clock in whole seconds. `readySince` is in whole
//!   seconds too, truncated, so availability can be counted up to 1 s *early* (as in
//!   Kubernetes, whose `lastTransitionTime` also has whole seconds) while the tick's phase
//!   adds up to 1 s: per wave the hand-over is somewhere between −1 s and +1 s.
//! - **Round trips**: the grant reaches the agent through its held poll (woken when the slots
//!   change); its ready report travels back; each costs a request, and a decision over every
//!   node.
//! - **Completion**: the last wave's availability is noticed on a tick as well.
//!
//! Safety is measured, not assumed: the simulated agents count exactly, at every transition,
//! how many hosts are without a ready daemon (old stopped, new not ready yet) — it must never
//! exceed maxUnavailable; a sampler (every 20 ms) also counts the hosts whose daemon is not
//! *available* (ready for minReadySeconds) both as the protocol counts it (whole seconds) and
//! by the exact elapsed time, and the coordinator's own `unavailable` count.
//!
//! CPU: the process's CPU time (`/proc/self/stat`, every thread that ever ran) minus the
//! threads of the simulated agents (named `sim-*`, alive to the end) and of the main thread
//! is the coordinator's; both are shown, with the machine's busy time (other work on the
//! machine disturbs the timings: the table says how much).
//!
//! Knobs (environment): `HOSTSET_SIM_NODES` (1000), `HOSTSET_SIM_START_MS` (1000),
//! `HOSTSET_SIM_MIN_READY` (2), `HOSTSET_SIM_MAX_UNAVAILABLE` ("10%"). Needs no root: the
//! coordinator is told to trust spec files owned by the user running the bench (root, when
//! `benches/run` runs as root). No test asserts a time; the bench fails only when the
//! rollout does not complete within 10 × the ideal or when maxUnavailable was exceeded.

// serde_json::json! of the result object nests deeper than the default limit.
#![recursion_limit = "256"]

use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostset::agent::config::Coordinator;
use hostset::agent::report::{Control, Reporter, same_content};
use hostset::coordinator::AppState;
use hostset::coordinator::config::Config;
use hostset::report::{Condition, DaemonSetReport, NodeInfo, NodeReport};
use serde_json::json;
use tokio::sync::watch;

const DS: &str = "web";
const FILE: &str = "web.toml";
const UNIT: &str = "hostset-web.service";
const READ_TOKEN: &str = "rollout-sim-read-token-0123456789";
/// The coordinator's view and the agents' state are sampled this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Not ready (a node's `ready_ms`).
const NOT_READY: u64 = u64::MAX;

struct Opts {
    nodes: usize,
    start_delay: Duration,
    min_ready: u64,
    max_unavailable: String,
    quick: bool,
    out: PathBuf,
}

impl Opts {
    fn from_env() -> Opts {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        Opts {
            nodes: env("HOSTSET_SIM_NODES")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000),
            start_delay: Duration::from_millis(
                env("HOSTSET_SIM_START_MS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000),
            ),
            min_ready: env("HOSTSET_SIM_MIN_READY")
                .and_then(|v| v.parse().ok())
                .unwrap_or(2),
            max_unavailable: env("HOSTSET_SIM_MAX_UNAVAILABLE").unwrap_or_else(|| "10%".into()),
            quick: std::env::args().any(|a| a == "--quick"),
            out: target.join("bench").join("rollout.json"),
        }
    }

    /// maxUnavailable resolved as the coordinator resolves it.
    fn budget(&self) -> u64 {
        let v = match self.max_unavailable.parse::<i64>() {
            Ok(i) => hostset::spec::IntOrPercent::Int(i),
            Err(_) => hostset::spec::IntOrPercent::Str(self.max_unavailable.clone()),
        };
        hostset::rollout::scaled(&v, self.nodes as u64).max(1)
    }
}

fn spec_text(opts: &Opts, version: u32) -> String {
    let mu = match opts.max_unavailable.parse::<i64>() {
        Ok(i) => i.to_string(),
        Err(_) => format!("\"{}\"", opts.max_unavailable),
    };
    format!(
        "name = \"{DS}\"\nselector.matchLabels = {{ app = \"{DS}\" }}\n\
         template.labels = {{ app = \"{DS}\" }}\ncommand = [\"/usr/bin/web\"]\n\
         env = {{ VERSION = \"{version}\" }}\nminReadySeconds = {}\n\
         updateStrategy = {{ type = \"RollingUpdate\", maxUnavailable = {mu} }}\n",
        opts.min_ready
    )
}

/// Write `text` to `path` with `mode` through a temp file and a rename.
fn write(path: &Path, text: &str, mode: u32) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    std::fs::write(&tmp, text).expect("write a temp file");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename");
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The revision the agents compute for the spec directory's daemonset (`unit::revision`).
fn revision_in(dir: &Path, uid: u32) -> String {
    let mut sd = hostset::source::SpecDir::new(dir).with_owner(uid);
    sd.rescan();
    let ds = sd
        .daemonsets()
        .into_iter()
        .find(|d| d.name == DS)
        .unwrap_or_else(|| panic!("the spec directory has no daemonset {DS}"));
    hostset::unit::revision(&ds.template)
}

// ---------------------------------------------------------------------------------------------
// CPU accounting (/proc, USER_HZ = 100)

fn stat_ticks(path: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Some((name, (t(11) + t(12)) / 100.0))
}

/// (the whole process, its threads named `sim-*` and the main thread) in CPU seconds.
fn cpu_split() -> (f64, f64) {
    let total = stat_ticks("/proc/self/stat").map_or(0.0, |(_, s)| s);
    let pid = std::process::id().to_string();
    let mut sim = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let tid = e.file_name().to_string_lossy().into_owned();
            if let Some((name, s)) = stat_ticks(&format!("/proc/self/task/{tid}/stat"))
                && (name.starts_with("sim-") || tid == pid)
            {
                sim += s;
            }
        }
    }
    (total, sim)
}

/// Busy CPU seconds of the whole machine (`/proc/stat`: all but idle and iowait).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = f.iter().take(8).sum();
    (total - f.get(3).unwrap_or(&0.0) - f.get(4).unwrap_or(&0.0)) / 100.0
}

// ---------------------------------------------------------------------------------------------
// The simulated fleet

/// What the simulated agents share with the harness.
struct Fleet {
    /// Per node: epoch milliseconds when its daemon became ready, [`NOT_READY`] while not.
    ready_ms: Vec<AtomicU64>,
    /// Per node: milliseconds after T0 when it saw its grant and when its new daemon was
    /// ready (0: not yet).
    granted_at: Vec<AtomicU64>,
    ready_at: Vec<AtomicU64>,
    /// Hosts without a ready daemon now, and the most ever.
    without_ready: AtomicUsize,
    max_without_ready: AtomicUsize,
    /// Passes of the agents' planners, and those whose report differs from the one before
    /// (each one a full report: `POST /v1/reports`), and of those, the ones where only the
    /// coordinator's wait reason (`rolloutMessage`) changed.
    passes: AtomicU64,
    reports: AtomicU64,
    wait_reports: AtomicU64,
    t0: Mutex<Option<Instant>>,
}

impl Fleet {
    fn since_t0_ms(&self) -> u64 {
        self.t0
            .lock()
            .unwrap()
            .map_or(0, |t| t.elapsed().as_millis() as u64)
            .max(1)
    }
}

#[derive(Clone, PartialEq)]
enum Phase {
    /// Active and ready since this epoch second.
    Running { ready_since: u64 },
    /// Starting; ready at this instant.
    Starting { until: tokio::time::Instant },
}

struct Unit {
    revision: String,
    phase: Phase,
}

/// The agent's gate (`src/agent/run.rs`, `gates`) for a unit of an older revision: granted,
/// or why it waits.
fn gate(c: &Control, desired: &str) -> Result<(), String> {
    if c.directives.grants.get(DS).map(String::as_str) == Some(desired) {
        Ok(())
    } else if let Some(why) = c.directives.waits.get(DS) {
        Err(why.clone())
    } else if !c.reachable && !c.problem.is_empty() {
        Err(format!(
            "the coordinator cannot be reached ({}): the running revision is kept",
            c.problem
        ))
    } else {
        Err("waiting for a slot from the coordinator".to_string())
    }
}

fn node_report(name: &str, instance: &str, unit: &Unit, desired: &str, wait: &str) -> NodeReport {
    let mut labels = hostset::spec::Labels::new();
    labels.insert("kubernetes.io/hostname".into(), name.into());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    let (state, ready, ready_since, readiness) = match &unit.phase {
        Phase::Running { ready_since } => ("active/running", true, Some(*ready_since), ""),
        Phase::Starting { .. } => ("activating/start", false, None, "the unit is activating"),
    };
    let old = unit.revision != desired;
    NodeReport {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        agent_instance: instance.into(),
        sequence: 0,
        generated_at: epoch_ms() / 1000,
        node: NodeInfo {
            name: name.into(),
            labels,
            taints: Vec::new(),
            unschedulable: false,
            addresses: vec!["10.0.0.1".into()],
            conditions: vec![Condition {
                kind: "Ready".into(),
                status: "True".into(),
                reason: "AgentReady".into(),
                message: "hostsetd is posting ready status".into(),
            }],
        },
        daemonsets: vec![DaemonSetReport {
            name: DS.into(),
            file: FILE.into(),
            should_run: true,
            should_continue_running: true,
            unit: UNIT.into(),
            state: state.into(),
            current_revision: unit.revision.clone(),
            desired_revision: desired.into(),
            ready,
            ready_since,
            readiness: readiness.into(),
            main_pid: if ready { 4242 } else { 0 },
            started_at: ready_since,
            rollout: if old { "waiting".into() } else { String::new() },
            rollout_message: if old { wait.into() } else { String::new() },
            ..DaemonSetReport::default()
        }],
        diagnostics: Vec::new(),
        errors: Vec::new(),
        git: None,
    }
}

/// One simulated agent: its planner and systemd, over the real reporter.
async fn agent(
    i: usize,
    fleet: Arc<Fleet>,
    coordinator: Coordinator,
    mut spec: watch::Receiver<String>,
    start_delay: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let name = format!("sim-{i:04}");
    let instance = format!("{:032x}", 0x5eed_0000u64 + i as u64);
    let control = watch::Sender::new(Control::default());
    let mut control_rx = control.subscribe();
    let reporter = Reporter::new(&coordinator)
        .expect("a reporter")
        .with_control(control.clone());
    let (reports, reports_rx) = watch::channel(None);
    let reporting = tokio::spawn(reporter.run(reports_rx));
    let mut desired = spec.borrow_and_update().clone();
    let mut unit = Unit {
        revision: desired.clone(),
        phase: Phase::Running {
            ready_since: epoch_ms() / 1000 - 3600,
        },
    };
    fleet.ready_ms[i].store(epoch_ms() - 3_600_000, Ordering::Release);
    let mut last: Option<NodeReport> = None;
    loop {
        // The pass.
        control_rx.borrow_and_update();
        let c = control.borrow().clone();
        let mut wait = String::new();
        if unit.revision != desired {
            match gate(&c, &desired) {
                Ok(()) => {
                    // Granted: the old daemon stops, the new one starts.
                    fleet.granted_at[i].store(fleet.since_t0_ms(), Ordering::Release);
                    fleet.ready_ms[i].store(NOT_READY, Ordering::Release);
                    let n = fleet.without_ready.fetch_add(1, Ordering::AcqRel) + 1;
                    fleet.max_without_ready.fetch_max(n, Ordering::AcqRel);
                    unit = Unit {
                        revision: desired.clone(),
                        phase: Phase::Starting {
                            until: tokio::time::Instant::now() + start_delay,
                        },
                    };
                }
                Err(why) => wait = why,
            }
        }
        fleet.passes.fetch_add(1, Ordering::Relaxed);
        let report = node_report(&name, &instance, &unit, &desired, &wait);
        if let Some(before) = &last
            && !same_content(before, &report)
        {
            fleet.reports.fetch_add(1, Ordering::Relaxed);
            let mut b = before.clone();
            b.daemonsets[0].rollout_message = wait.clone();
            if same_content(&b, &report) {
                fleet.wait_reports.fetch_add(1, Ordering::Relaxed);
            }
        }
        last = Some(report.clone());
        reports.send_replace(Some(report));
        let starting = match unit.phase {
            Phase::Starting { until } => Some(until),
            Phase::Running { .. } => None,
        };
        tokio::select! {
            _ = stop.changed() => break,
            r = spec.changed() => {
                if r.is_err() {
                    break;
                }
                desired = spec.borrow_and_update().clone();
            }
            r = control_rx.changed() => {
                if r.is_err() {
                    break;
                }
            }
            () = async { tokio::time::sleep_until(starting.unwrap_or_else(tokio::time::Instant::now)).await }, if starting.is_some() => {
                let ms = epoch_ms();
                unit.phase = Phase::Running { ready_since: ms / 1000 };
                fleet.ready_ms[i].store(ms, Ordering::Release);
                fleet.ready_at[i].store(fleet.since_t0_ms(), Ordering::Release);
                fleet.without_ready.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    drop(reports);
    reporting.abort();
}

// ---------------------------------------------------------------------------------------------
// The run

struct Sample {
    /// Most hosts not available as the protocol counts (whole seconds) and by elapsed time.
    max_unavailable_protocol: usize,
    max_unavailable_exact: usize,
    /// Most unavailable in the coordinator's view (new revision in force).
    max_unavailable_coordinator: u64,
    complete_ms: Option<u64>,
}

fn sampler(
    state: AppState,
    fleet: Arc<Fleet>,
    nodes: usize,
    min_ready: u64,
    new_revision_number: u64,
    timeout: Duration,
) -> Sample {
    let mut s = Sample {
        max_unavailable_protocol: 0,
        max_unavailable_exact: 0,
        max_unavailable_coordinator: 0,
        complete_ms: None,
    };
    let started = Instant::now();
    while started.elapsed() < timeout {
        let now = epoch_ms();
        let (mut protocol, mut exact) = (0, 0);
        for r in &fleet.ready_ms[..nodes] {
            let r = r.load(Ordering::Acquire);
            if r == NOT_READY || r / 1000 + min_ready > now / 1000 {
                protocol += 1;
            }
            if r == NOT_READY || r + min_ready * 1000 > now {
                exact += 1;
            }
        }
        s.max_unavailable_protocol = s.max_unavailable_protocol.max(protocol);
        s.max_unavailable_exact = s.max_unavailable_exact.max(exact);
        if let Some(v) = state.rollout_view(DS)
            && v.revision_number == new_revision_number
        {
            s.max_unavailable_coordinator =
                s.max_unavailable_coordinator.max(v.progress.unavailable);
            if v.progress.complete && v.progress.updated_available == nodes as u64 {
                s.complete_ms = Some(fleet.since_t0_ms());
                break;
            }
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    s
}

fn main() {
    let opts = Opts::from_env();
    let wall = Instant::now();
    let uid = nix::unistd::geteuid().as_raw();
    let root = std::env::temp_dir().join(format!("hostset-rollout-sim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["specs", "state", "tokens"] {
        std::fs::create_dir_all(root.join(d)).expect("create the bench directories");
    }
    for d in [&root, &root.join("specs")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let result = std::panic::catch_unwind(|| run(&opts, &root, uid, wall));
    let _ = std::fs::remove_dir_all(&root);
    match result {
        Ok(Ok(())) => eprintln!(
            "rollout_sim: {:.0} s; wrote {}",
            wall.elapsed().as_secs_f64(),
            opts.out.display()
        ),
        Ok(Err(e)) => {
            eprintln!("rollout_sim: {e}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(1),
    }
}

fn run(opts: &Opts, root: &Path, uid: u32, wall: Instant) -> Result<(), String> {
    let n = opts.nodes;
    let budget = opts.budget();
    let waves = (n as u64).div_ceil(budget);
    let ideal = (opts.start_delay + Duration::from_secs(opts.min_ready)) * waves as u32;

    // The coordinator's files.
    let specs = root.join("specs");
    write(&specs.join(FILE), &spec_text(opts, 1), 0o644);
    let mut tokens = String::from("# node-bound agent tokens\n");
    for i in 0..n {
        let token = format!("rollout-sim-agent-{i:04}-0123456789abcdef");
        writeln!(tokens, "{token} sim-{i:04}").unwrap();
        write(&root.join(format!("tokens/sim-{i:04}")), &token, 0o600);
    }
    write(&root.join("agent-tokens"), &tokens, 0o600);
    write(&root.join("read-tokens"), &format!("{READ_TOKEN}\n"), 0o600);
    let mut config = Config::defaults(root, Some(&root.join("state")));
    config.spec_dir = specs.clone();
    config.spec_owner = std::fs::metadata(&specs).map_or(uid, |m| m.uid());
    config.agent_token_file = root.join("agent-tokens");
    config.read_token_file = root.join("read-tokens");
    let state = AppState::open(&config, hostset::coordinator::system_clock())
        .map_err(|e| format!("cannot open the coordinator's state: {e}"))?;

    // The coordinator on threads of its own.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_coordinator, stopped) = tokio::sync::oneshot::channel::<()>();
    let coordinator = {
        let state = state.clone();
        std::thread::Builder::new()
            .name("coordinator".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("coordinator-blocking")
                    .build()
                    .expect("the coordinator's runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind 127.0.0.1:0");
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    hostset::coordinator::serve_threads(
                        listener,
                        state,
                        async {
                            let _ = stopped.await;
                        },
                        threads,
                    )
                    .await
                })
            })
            .expect("the coordinator's thread")
    };
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the coordinator did not start".to_string())?;

    // The fleet, on a runtime of its own (threads named sim-*).
    let fleet = Arc::new(Fleet {
        ready_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
        granted_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        ready_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        without_ready: AtomicUsize::new(0),
        max_without_ready: AtomicUsize::new(0),
        passes: AtomicU64::new(0),
        reports: AtomicU64::new(0),
        wait_reports: AtomicU64::new(0),
        t0: Mutex::new(None),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("sim-agents")
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .map_err(|e| format!("the agents' runtime: {e}"))?;
    let revision_1 = revision_in(&specs, config.spec_owner);
    let (spec_tx, spec_rx) = watch::channel(revision_1.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let registration = Instant::now();
    let mut handles = Vec::new();
    {
        let _guard = rt.enter();
        for i in 0..n {
            let mut c = Coordinator::new(format!("http://{addr}"));
            c.token_file = Some(root.join(format!("tokens/sim-{i:04}")));
            handles.push(rt.spawn(agent(
                i,
                fleet.clone(),
                c,
                spec_rx.clone(),
                opts.start_delay,
                stop_rx.clone(),
            )));
        }
    }
    // Every node known, and revision 1 complete in the coordinator's view.
    let deadline = Instant::now() + Duration::from_secs(60);
    while state.node_count() < n {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {n} nodes registered within 60 s",
                state.node_count()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let registered_s = registration.elapsed().as_secs_f64();
    // Let the registration burst settle (heartbeats go on).
    std::thread::sleep(Duration::from_secs(2));

    // The spec change.
    let (cpu0, sim0) = cpu_split();
    let busy0 = machine_busy_seconds();
    let loadavg0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    write(&specs.join(FILE), &spec_text(opts, 2), 0o644);
    let t0 = Instant::now();
    *fleet.t0.lock().unwrap() = Some(t0);
    let passes0 = fleet.passes.load(Ordering::Relaxed);
    let reports0 = fleet.reports.load(Ordering::Relaxed);
    let wait_reports0 = fleet.wait_reports.load(Ordering::Relaxed);
    let revision_2 = revision_in(&specs, config.spec_owner);
    spec_tx.send_replace(revision_2.clone());

    let timeout = ideal * 10 + Duration::from_secs(30);
    let sample = {
        let (state, fleet) = (state.clone(), fleet.clone());
        let min_ready = opts.min_ready;
        std::thread::Builder::new()
            .name("sim-sampler".into())
            .spawn(move || sampler(state, fleet, n, min_ready, 2, timeout))
            .expect("the sampler thread")
            .join()
            .map_err(|_| "the sampler panicked".to_string())?
    };
    let measured_wall = t0.elapsed();
    let (cpu1, sim1) = cpu_split();
    let busy1 = machine_busy_seconds();
    let passes = fleet.passes.load(Ordering::Relaxed) - passes0;
    let reports_sent = fleet.reports.load(Ordering::Relaxed) - reports0;
    let wait_reports = fleet.wait_reports.load(Ordering::Relaxed) - wait_reports0;
    let counters = state.nodes().len();

    // Stop everything.
    let _ = stop_tx.send(true);
    rt.block_on(async {
        for h in handles {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let _ = stop_coordinator.send(());
    let _ = coordinator.join();

    let Some(complete_ms) = sample.complete_ms else {
        return Err(format!(
            "the rollout did not complete within {:.0} s",
            timeout.as_secs_f64()
        ));
    };
    let measured = Duration::from_millis(complete_ms);
    let ratio = measured.as_secs_f64() / ideal.as_secs_f64();
    let coordinator_cpu = (cpu1 - cpu0) - (sim1 - sim0);
    let agents_cpu = sim1 - sim0;
    let machine_cpu = busy1 - busy0;
    let window = measured_wall.as_secs_f64();
    let max_without_ready = fleet.max_without_ready.load(Ordering::Acquire);

    // Slot hand-overs. Grants in time order; with `budget` slots, the j-th grant past the
    // first `budget` takes the slot freed by the (j - budget)-th daemon to become available
    // (exactly: ready + minReadySeconds), in time order. Its hand-over is the time between.
    let min_ready_ms = opts.min_ready * 1000;
    let mut grants: Vec<u64> = (0..n)
        .map(|i| fleet.granted_at[i].load(Ordering::Acquire))
        .collect();
    let mut available: Vec<u64> = (0..n)
        .map(|i| fleet.ready_at[i].load(Ordering::Acquire) + min_ready_ms)
        .collect();
    grants.sort_unstable();
    available.sort_unstable();
    let b = budget as usize;
    let handovers: Vec<i64> = (b..n)
        .map(|j| grants[j] as i64 - available[j - b] as i64)
        .collect();
    let mut sorted = handovers.clone();
    sorted.sort_unstable();
    let pct = |q: f64| -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[i] as f64 / 1000.0
    };
    let (handover_min, handover_median, handover_p90, handover_max) =
        (pct(0.0), pct(0.5), pct(0.9), pct(1.0));
    let first_grant_ms = grants.first().copied().unwrap_or(0);
    let last_available_ms = available.last().copied().unwrap_or(0);
    let grant_to_ready_max = (0..n)
        .map(|i| {
            fleet.ready_at[i]
                .load(Ordering::Acquire)
                .saturating_sub(fleet.granted_at[i].load(Ordering::Acquire))
        })
        .max()
        .unwrap_or(0);
    // Per wave of `budget` grants: when it was granted, and its hand-overs.
    let mut md_waves = String::from(
        "| wave | grants from | to | median hand-over | slowest hand-over |\n|---:|---:|---:|---:|---:|\n",
    );
    let mut wave_rows = Vec::new();
    for (w, chunk) in grants.chunks(b).enumerate() {
        let hs: Vec<i64> = if w == 0 {
            Vec::new()
        } else {
            let mut h =
                handovers[(w - 1) * b..((w - 1) * b + chunk.len()).min(handovers.len())].to_vec();
            h.sort_unstable();
            h
        };
        let med = hs.get(hs.len() / 2).map(|h| *h as f64 / 1000.0);
        let max = hs.last().map(|h| *h as f64 / 1000.0);
        let text = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:+.2} s"));
        writeln!(
            md_waves,
            "| {} | {:.2} s | {:.2} s | {} | {} |",
            w + 1,
            chunk[0] as f64 / 1000.0,
            chunk[chunk.len() - 1] as f64 / 1000.0,
            text(med),
            text(max)
        )
        .unwrap();
        wave_rows.push(json!({
            "wave": w + 1,
            "first_grant_s": chunk[0] as f64 / 1000.0,
            "last_grant_s": chunk[chunk.len() - 1] as f64 / 1000.0,
            "median_handover_s": med,
            "max_handover_s": max,
        }));
    }

    let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let mut md = String::new();
    writeln!(
        md,
        "{n} simulated agents (the agent's own reporter over loopback HTTP) and the coordinator in \
         one process; daemonset `RollingUpdate`, maxUnavailable {} (= {budget}), start delay {}, \
         minReadySeconds {}; agents' heartbeat interval 10 s.\n",
        opts.max_unavailable,
        s(opts.start_delay),
        opts.min_ready
    )
    .unwrap();
    md.push_str("| measure | value |\n|---|---:|\n");
    let rows: Vec<(String, String)> = vec![
        (
            "rollout time (spec file rewritten → coordinator: complete)".into(),
            format!("{:.2} s", measured.as_secs_f64()),
        ),
        (
            format!(
                "ideal: {waves} waves × ({} start + {} s minReadySeconds)",
                s(opts.start_delay),
                opts.min_ready
            ),
            format!("{:.2} s", ideal.as_secs_f64()),
        ),
        ("ratio measured / ideal".into(), format!("{ratio:.2}×")),
        (
            "spec file rewritten → first slot granted".into(),
            format!("{:.2} s", first_grant_ms as f64 / 1000.0),
        ),
        (
            "slot hand-over: a daemon available (exactly) → its slot granted again; min / median / p90 / max"
                .into(),
            format!(
                "{handover_min:+.2} / {handover_median:+.2} / {handover_p90:+.2} / {handover_max:+.2} s"
            ),
        ),
        (
            "last daemon available → coordinator says complete".into(),
            format!(
                "{:+.2} s",
                (complete_ms as f64 - last_available_ms as f64) / 1000.0
            ),
        ),
        (
            "longest grant → ready (start delay is the floor)".into(),
            format!("{:.2} s", grant_to_ready_max as f64 / 1000.0),
        ),
        (
            format!("most hosts without a ready daemon at once (exact; limit {budget})"),
            max_without_ready.to_string(),
        ),
        (
            "most hosts unavailable, coordinator's view (sampled every 20 ms)".into(),
            sample.max_unavailable_coordinator.to_string(),
        ),
        (
            "most hosts not available, whole-second readySince as the protocol counts (sampled)"
                .into(),
            sample.max_unavailable_protocol.to_string(),
        ),
        (
            "most hosts not available by exact elapsed time (sampled)".into(),
            sample.max_unavailable_exact.to_string(),
        ),
        (
            "coordinator CPU during the rollout".into(),
            format!(
                "{coordinator_cpu:.2} s ({:.0}% of one core)",
                100.0 * coordinator_cpu / window
            ),
        ),
        (
            "simulated agents' CPU (1000 reporters, planners)".into(),
            format!("{agents_cpu:.2} s"),
        ),
        (
            "machine busy CPU during the rollout (all processes)".into(),
            format!(
                "{machine_cpu:.2} s of {:.2} s ({threads} CPUs × {window:.1} s)",
                threads as f64 * window
            ),
        ),
        (
            "agents' full reports during the rollout (of them: only the wait reason changed)"
                .into(),
            format!("{reports_sent} ({wait_reports}); {passes} planner passes"),
        ),
        (
            "registration of the fleet (first reports)".into(),
            format!("{registered_s:.2} s"),
        ),
        (
            "load average when the spec changed".into(),
            loadavg0.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        ),
    ];
    for (k, v) in &rows {
        writeln!(md, "| {k} | {v} |").unwrap();
    }
    md.push_str(
        "\n### Waves\n\nGrants in time order, by maxUnavailable at a time; times from the spec \
         change. A hand-over is the time from a daemon becoming available (ready + \
         minReadySeconds, exactly) to its slot being granted to the next node (negative: the \
         coordinator counts `readySince` in whole seconds, as Kubernetes counts \
         `lastTransitionTime`, and may find a daemon available up to 1 s early).\n\n",
    );
    md.push_str(&md_waves);
    write!(
        md,
        "\n### Where the time goes\n\n\
         - **First grant**, {first:.2} s after the file was written: the coordinator's inotify \
         debounce (250 ms), then the first decision after the agents' `waiting` reports; the \
         first wave's grants spread over the time the 1,000 reports take to arrive.\n\
         - **Slot hand-overs** (median {med:+.2} s, p90 {p90:+.2} s): a daemon becomes available \
         through time alone, and the coordinator notices at its next decision — on a report, a \
         heartbeat (about 100 a second from 1,000 agents) or its 1-second tick — with its clock \
         in whole seconds; `readySince` is in whole seconds too, truncated, so a daemon may be \
         counted available up to 1 s early. The two roughly cancel; a wave whose daemons became \
         ready on both sides of a second boundary is released in two decisions, a second apart.\n\
         - **Round trips**: the grant reaches the agent through its held directives poll (woken \
         when the slots change) and the ready report travels back: the slowest grant → ready \
         took {g2r:.2} s for a start delay of {start:.2} s.\n\
         - **Completion**, {done:+.2} s after the last daemon became available (noticed by a \
         decision, as any availability).\n\
         - **Safety**: at most {without} hosts without a ready daemon (limit {budget}); the \
         coordinator never counted more than {coord} unavailable. By the exact elapsed time, up \
         to {exact} hosts had been ready for less than minReadySeconds at once: whole-second \
         `readySince` lets the next wave start up to 1 s before the previous one has been ready \
         for the full minReadySeconds (Kubernetes counts the same way).\n",
        first = first_grant_ms as f64 / 1000.0,
        med = handover_median,
        p90 = handover_p90,
        g2r = grant_to_ready_max as f64 / 1000.0,
        start = opts.start_delay.as_secs_f64(),
        done = (complete_ms as f64 - last_available_ms as f64) / 1000.0,
        without = max_without_ready,
        coord = sample.max_unavailable_coordinator,
        exact = sample.max_unavailable_exact,
    )
    .unwrap();
    println!("{md}");

    let ok = max_without_ready as u64 <= budget;
    let v = json!({
        "bench": "rollout_sim",
        "quick": opts.quick,
        "seconds": wall.elapsed().as_secs_f64(),
        "nodes": n,
        "registered": counters,
        "max_unavailable": opts.max_unavailable,
        "budget": budget,
        "start_delay_s": opts.start_delay.as_secs_f64(),
        "min_ready_seconds": opts.min_ready,
        "waves": waves,
        "measured_s": measured.as_secs_f64(),
        "ideal_s": ideal.as_secs_f64(),
        "ratio": ratio,
        "first_grant_s": first_grant_ms as f64 / 1000.0,
        "handover_s": {"min": handover_min, "median": handover_median, "p90": handover_p90, "max": handover_max},
        "reports": reports_sent,
        "wait_reason_reports": wait_reports,
        "passes": passes,
        "complete_after_last_available_s": (complete_ms as f64 - last_available_ms as f64) / 1000.0,
        "max_without_ready": max_without_ready,
        "max_unavailable_coordinator": sample.max_unavailable_coordinator,
        "max_unavailable_protocol": sample.max_unavailable_protocol,
        "max_unavailable_exact": sample.max_unavailable_exact,
        "coordinator_cpu_s": coordinator_cpu,
        "agents_cpu_s": agents_cpu,
        "machine_busy_cpu_s": machine_cpu,
        "cpus": threads,
        "revisions": [revision_1, revision_2],
        "wave_table": wave_rows,
        "scenarios": [
            {
                "name": format!("rollout of {n} nodes, maxUnavailable {}, start {} + minReadySeconds {}", opts.max_unavailable, s(opts.start_delay), opts.min_ready),
                "median_ms": measured.as_secs_f64() * 1000.0,
                "p99_ms": null,
                "shown": format!("{:.1} s", measured.as_secs_f64()),
                "baseline": format!("ideal: {waves} waves × (start + minReadySeconds)"),
                "baseline_median_ms": ideal.as_secs_f64() * 1000.0,
                "ratio": ratio,
                "target": {"metric": "max_without_ready", "max": budget, "text": format!("never more than {budget} hosts without a ready daemon")},
                "max_without_ready": max_without_ready,
                "value": max_without_ready,
                "met": ok,
            }
        ],
        "markdown": md,
    });
    if let Some(dir) = opts.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(
        &opts.out,
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", opts.out.display()))?;
    if !ok {
        return Err(format!(
            "maxUnavailable exceeded: {max_without_ready} hosts were without a ready daemon at once (limit {budget})"
        ));
    }
    Ok(())
}
