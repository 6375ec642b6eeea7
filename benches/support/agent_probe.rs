//! The in-node half of `benches/agent_systemd.rs`: the bench binary bound into a node and run
//! there as `hostset-bench-probe --probe SUBCOMMAND key=value...` (through nsenter). Each
//! subcommand does one scenario inside the node and prints one JSON object on stdout;
//! progress goes to stderr.
//!
//! Every time is taken in this one process with `Instant` (CLOCK_MONOTONIC): `t0` right
//! before the action (the `rename(2)` of a spec file into the spec directory, the
//! `StartTransientUnit` call, the spawn of `systemd-run`, `supervisorctl update`), the end
//! when systemd's signal saying so is read from the bus. The signals come from a watcher
//! thread with its own bus connection, subscribed (`Subscribe`) with match rules for
//! `PropertiesChanged` of every unit object (`ActiveState`) and the manager's `JobRemoved`
//! and `UnitRemoved`; it stamps each signal as it reads it. Nothing is polled. The peer
//! (supervisord) is observed the same way through its own mechanism: an event listener
//! (`PROCESS_STATE_RUNNING`), this binary again, that forwards each event as a datagram.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hostset::spec::{Format, parse_daemonsets};
use hostset::systemd::Systemd;
use hostset::systemd::dbus::{
    Bus, MANAGER_INTERFACE, SYSTEMD_PATH, SYSTEMD_SERVICE, UNIT_INTERFACE, UNIT_PATH_PREFIX,
    prop_value, unit_name_from_path,
};
use hostset::unit::{UnitOptions, unit_spec};
use serde_json::{Value as Json, json};
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

/// Where the node's agent reads its specs (its default).
pub const SPEC_DIR: &str = "/etc/hostset/daemonsets.d";
pub const AGENT_UNIT: &str = "hostsetd.service";
const STATUS_FILE: &str = "/run/hostset/status.json";
/// The datagram socket the supervisord event listener reports to.
const SV_SOCKET: &str = "/run/hostset-bench-sv.sock";
const SV_CONF_DIR: &str = "/etc/supervisor/conf.d";
/// How long any single wait may take before the scenario fails.
const WAIT: Duration = Duration::from_secs(60);

type Res<T> = Result<T, String>;

fn log(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "[probe] {msg}");
}

/// Entry point: `args` are what follows `--probe`. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("probe: missing subcommand");
        return 2;
    };
    let opts: HashMap<String, String> = rest
        .iter()
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let num = |k: &str, default: usize| -> usize {
        opts.get(k).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let result = match cmd.as_str() {
        "latency" => latency(num("seq", 100), num("burst", 50), num("gap_ms", 50) as u64),
        "labels" => labels(num("n", 50), num("rounds", 5)),
        "cold" => cold(num("n", 500)),
        "setup" => setup(num("n", 50)),
        "idle" => idle(
            opts.get("unit").map_or(AGENT_UNIT, String::as_str),
            num("seconds", 60) as u64,
        ),
        "supervisor" => supervisor(num("n", 50)),
        "sv-listener" => return sv_listener(),
        other => Err(format!("unknown probe subcommand {other:?}")),
    };
    match result {
        Ok(v) => {
            println!("{v}");
            0
        }
        Err(e) => {
            eprintln!("probe {cmd}: {e}");
            1
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------
// Signals

/// One signal from systemd, decoded.
#[derive(Debug, Clone)]
enum Obs {
    /// `PropertiesChanged` of `org.freedesktop.systemd1.Unit` carrying `ActiveState`.
    State {
        unit: String,
        active: String,
    },
    JobRemoved {
        unit: String,
        job: String,
        result: String,
    },
    Removed {
        unit: String,
    },
}

impl Obs {
    fn unit(&self) -> &str {
        match self {
            Obs::State { unit, .. } | Obs::JobRemoved { unit, .. } | Obs::Removed { unit } => unit,
        }
    }
}

fn is_active(o: &Obs) -> bool {
    matches!(o, Obs::State { active, .. } if active == "active")
}

fn is_gone(o: &Obs) -> bool {
    match o {
        Obs::State { active, .. } => active == "inactive" || active == "failed",
        Obs::Removed { .. } => true,
        Obs::JobRemoved { .. } => false,
    }
}

struct Stamped {
    at: Instant,
    obs: Obs,
}

/// The signal watcher: a thread with its own runtime and bus connection.
struct Watcher {
    rx: mpsc::Receiver<Stamped>,
    log: Vec<Stamped>,
}

impl Watcher {
    fn start() -> Res<Watcher> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel::<Res<()>>();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("runtime: {e}")));
                    return;
                }
            };
            let r = rt.block_on(watch(tx, ready_tx.clone()));
            if let Err(e) = r {
                let _ = ready_tx.send(Err(e));
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Watcher {
                rx,
                log: Vec::new(),
            }),
            Ok(Err(e)) => Err(format!("signal watcher: {e}")),
            Err(e) => Err(format!("signal watcher did not start: {e}")),
        }
    }

    fn take(&mut self, timeout: Duration) -> Res<bool> {
        match self.rx.recv_timeout(timeout) {
            Ok(s) => {
                self.log.push(s);
                Ok(true)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(false),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("signal watcher ended".into()),
        }
    }

    /// Reads whatever arrived, without waiting.
    fn drain(&mut self) -> Res<()> {
        while self.take(Duration::ZERO)? {}
        Ok(())
    }

    /// For each of `units`, the first signal at or after `since` that satisfies `pred`.
    fn wait_all(
        &mut self,
        units: &[String],
        since: Instant,
        timeout: Duration,
        pred: fn(&Obs) -> bool,
    ) -> Res<HashMap<String, Instant>> {
        let want: HashSet<&str> = units.iter().map(String::as_str).collect();
        let mut found: HashMap<String, Instant> = HashMap::new();
        let mut seen = 0;
        let deadline = since.max(Instant::now()) + timeout;
        loop {
            for s in &self.log[seen..] {
                if s.at >= since
                    && pred(&s.obs)
                    && want.contains(s.obs.unit())
                    && !found.contains_key(s.obs.unit())
                {
                    found.insert(s.obs.unit().to_string(), s.at);
                }
            }
            seen = self.log.len();
            if found.len() == want.len() {
                return Ok(found);
            }
            let now = Instant::now();
            if now >= deadline {
                let mut missing: Vec<&str> = want
                    .iter()
                    .copied()
                    .filter(|u| !found.contains_key(*u))
                    .collect();
                missing.sort();
                let shown: Vec<&str> = missing.iter().copied().take(5).collect();
                return Err(format!(
                    "{} of {} units not seen within {timeout:?}: {}{}",
                    missing.len(),
                    want.len(),
                    shown.join(", "),
                    if missing.len() > 5 { ", ..." } else { "" }
                ));
            }
            self.take(deadline - now)?;
        }
    }

    fn wait_one(&mut self, unit: &str, since: Instant, pred: fn(&Obs) -> bool) -> Res<Instant> {
        let units = [unit.to_string()];
        Ok(self.wait_all(&units, since, WAIT, pred)?[unit])
    }

    /// `JobRemoved` of `job`: when, and its result.
    fn wait_job(&mut self, job: &str, timeout: Duration) -> Res<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            for s in &self.log[seen..] {
                if let Obs::JobRemoved { job: j, result, .. } = &s.obs
                    && j == job
                {
                    return Ok((s.at, result.clone()));
                }
            }
            seen = self.log.len();
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("job {job} did not finish within {timeout:?}"));
            }
            self.take(deadline - now)?;
        }
    }

    /// Signals at or after `since` about `hostset-*` units.
    fn hostset_signals_since(&self, since: Instant) -> Vec<&Obs> {
        self.log
            .iter()
            .filter(|s| s.at >= since && s.obs.unit().starts_with("hostset-"))
            .map(|s| &s.obs)
            .collect()
    }

    fn forget(&mut self) {
        self.log.clear();
    }
}

async fn watch(tx: mpsc::Sender<Stamped>, ready: mpsc::Sender<Res<()>>) -> Res<()> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: zbus::Error| format!("{what}: {err}")
    };
    let conn = zbus::Connection::system().await.map_err(e("connect"))?;
    let manager_rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(SYSTEMD_SERVICE)
        .and_then(|b| b.path(SYSTEMD_PATH))
        .and_then(|b| b.interface(MANAGER_INTERFACE))
        .map_err(e("match rule"))?
        .build();
    let properties_rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(SYSTEMD_SERVICE)
        .and_then(|b| b.path_namespace(UNIT_PATH_PREFIX))
        .and_then(|b| b.interface("org.freedesktop.DBus.Properties"))
        .and_then(|b| b.member("PropertiesChanged"))
        .and_then(|b| b.arg(0, UNIT_INTERFACE))
        .map_err(e("match rule"))?
        .build();
    let mut manager = zbus::MessageStream::for_match_rule(manager_rule, &conn, Some(65536))
        .await
        .map_err(e("AddMatch"))?;
    let mut properties = zbus::MessageStream::for_match_rule(properties_rule, &conn, Some(65536))
        .await
        .map_err(e("AddMatch"))?;
    conn.call_method(
        Some(SYSTEMD_SERVICE),
        SYSTEMD_PATH,
        Some(MANAGER_INTERFACE),
        "Subscribe",
        &(),
    )
    .await
    .map_err(e("Subscribe"))?;
    let _ = ready.send(Ok(()));
    loop {
        let obs = tokio::select! {
            m = manager.next() => match m {
                Some(Ok(m)) => manager_obs(&m),
                Some(Err(_)) => None,
                None => break,
            },
            m = properties.next() => match m {
                Some(Ok(m)) => properties_obs(&m),
                Some(Err(_)) => None,
                None => break,
            },
        };
        if let Some(obs) = obs {
            let at = Instant::now();
            if tx.send(Stamped { at, obs }).is_err() {
                break;
            }
        }
    }
    Ok(())
}

fn manager_obs(msg: &zbus::Message) -> Option<Obs> {
    let header = msg.header();
    match header.member()?.as_str() {
        "JobRemoved" => {
            let (_id, job, unit, result): (u32, OwnedObjectPath, String, String) =
                msg.body().deserialize().ok()?;
            Some(Obs::JobRemoved {
                unit,
                job: job.as_str().to_string(),
                result,
            })
        }
        "UnitRemoved" => {
            let (unit, _path): (String, OwnedObjectPath) = msg.body().deserialize().ok()?;
            Some(Obs::Removed { unit })
        }
        _ => None,
    }
}

fn properties_obs(msg: &zbus::Message) -> Option<Obs> {
    let header = msg.header();
    let unit = unit_name_from_path(header.path()?.as_str())?;
    let (iface, changed, _invalidated): (String, HashMap<String, OwnedValue>, Vec<String>) =
        msg.body().deserialize().ok()?;
    if iface != UNIT_INTERFACE {
        return None;
    }
    let active = match &**changed.get("ActiveState")? {
        Value::Str(s) => s.as_str().to_string(),
        _ => return None,
    };
    Some(Obs::State { unit, active })
}

// ---------------------------------------------------------------------------------------
// Calls (this thread's own runtime and connection)

struct Sd {
    rt: tokio::runtime::Runtime,
    bus: Bus,
}

impl Sd {
    fn connect() -> Res<Sd> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let bus = rt.block_on(Bus::system()).map_err(|e| e.to_string())?;
        Ok(Sd { rt, bus })
    }

    /// A manager method taking `(name, mode)` and returning a job path.
    fn job_call(&self, method: &str, unit: &str) -> Res<String> {
        self.rt.block_on(async {
            let reply = self
                .bus
                .connection()
                .call_method(
                    Some(SYSTEMD_SERVICE),
                    SYSTEMD_PATH,
                    Some(MANAGER_INTERFACE),
                    method,
                    &(unit, "replace"),
                )
                .await
                .map_err(|e| format!("{method} {unit}: {e}"))?;
            let job: OwnedObjectPath = reply
                .body()
                .deserialize()
                .map_err(|e| format!("{method} {unit}: reply: {e}"))?;
            Ok(job.as_str().to_string())
        })
    }

    fn start_transient(
        &self,
        name: &str,
        props: &[(&'static str, hostset::unit::PropValue)],
    ) -> Res<()> {
        self.rt.block_on(async {
            let props: Vec<(&str, Value<'_>)> =
                props.iter().map(|(n, v)| (*n, prop_value(v))).collect();
            self.bus
                .manager()
                .start_transient_unit(name, "fail", &props, &[])
                .await
                .map(drop)
                .map_err(|e| format!("StartTransientUnit {name}: {e}"))
        })
    }

    fn stop(&self, unit: &str) -> Res<()> {
        self.rt.block_on(self.bus.stop(unit)).or_else(|e| match e {
            hostset::systemd::SystemdError::NoSuchUnit(_) => Ok(()),
            e => Err(e.to_string()),
        })
    }

    fn main_pid(&self, unit: &str) -> Res<u32> {
        self.rt
            .block_on(self.bus.details(unit))
            .map(|d| d.main_pid)
            .map_err(|e| format!("{unit}: {e}"))
    }

    fn active_state(&self, unit: &str) -> Res<String> {
        self.rt.block_on(async {
            let path = match self.bus.manager().get_unit(unit).await {
                Ok(p) => p,
                Err(_) => return Ok("not-loaded".to_string()),
            };
            let u = self
                .bus
                .unit_proxy(path.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            u.active_state().await.map_err(|e| e.to_string())
        })
    }
}

/// Starts the agent and waits for its start job (Type=notify: READY=1 after the first pass).
fn start_agent(sd: &Sd, w: &mut Watcher) -> Res<Duration> {
    let t0 = Instant::now();
    let job = sd.job_call("StartUnit", AGENT_UNIT)?;
    let (at, result) = w.wait_job(&job, WAIT)?;
    if result != "done" {
        return Err(format!("starting {AGENT_UNIT}: job {result}"));
    }
    Ok(at - t0)
}

// ---------------------------------------------------------------------------------------
// Files

fn spec_text(name: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\ncommand = [\"/bin/sleep\", \"infinity\"]\n\
         selector.matchLabels = {{ app = \"{name}\" }}\ntemplate.labels = {{ app = \"{name}\" }}\n{extra}"
    )
}

/// A file written next to its final place under a hidden name, ready to be renamed in.
struct Staged {
    tmp: PathBuf,
    path: PathBuf,
}

fn stage(dir: &str, file: &str, text: &str) -> Res<Staged> {
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{file}.bench-tmp"));
    std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    Ok(Staged {
        tmp,
        path: dir.join(file),
    })
}

impl Staged {
    fn commit(&self) -> Res<()> {
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| format!("rename {}: {e}", self.path.display()))
    }
}

fn write_now(dir: &str, file: &str, text: &str) -> Res<()> {
    stage(dir, file, text)?.commit()
}

fn remove(path: &Path) -> Res<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("rm {}: {e}", path.display())),
    }
}

fn hostset_unit(name: &str) -> String {
    format!("hostset-{name}.service")
}

/// The properties the agent sends for the daemonset of `spec_text(name, "")`.
fn agent_properties(name: &str) -> Res<Vec<(&'static str, hostset::unit::PropValue)>> {
    let loaded = parse_daemonsets("bench.toml", &spec_text(name, ""), Format::Toml);
    let ds = loaded
        .items
        .first()
        .ok_or_else(|| format!("bench spec does not parse: {:?}", loaded.diagnostics))?;
    Ok(unit_spec(ds, &UnitOptions::default())
        .properties
        .into_iter()
        .map(|p| (p.name, p.value))
        .collect())
}

// ---------------------------------------------------------------------------------------
// 1. Spec to running, against systemd-run and a direct StartTransientUnit

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path3 {
    Direct,
    SystemdRun,
    Agent,
}

impl Path3 {
    const ALL: [Path3; 3] = [Path3::Direct, Path3::SystemdRun, Path3::Agent];
    fn key(self) -> &'static str {
        match self {
            Path3::Direct => "direct",
            Path3::SystemdRun => "systemd_run",
            Path3::Agent => "agent",
        }
    }
    fn name(self, tag: &str, i: usize) -> String {
        match self {
            Path3::Direct => format!("bench-direct-{tag}{i}"),
            Path3::SystemdRun => format!("bench-run-{tag}{i}"),
            Path3::Agent => format!("bench-agent-{tag}{i}"),
        }
    }
    fn unit(self, tag: &str, i: usize) -> String {
        match self {
            Path3::Agent => hostset_unit(&self.name(tag, i)),
            _ => format!("{}.service", self.name(tag, i)),
        }
    }
}

fn systemd_run(name: &str) -> Command {
    let mut c = Command::new("systemd-run");
    c.args([
        &format!("--unit={name}"),
        "--service-type=exec",
        "--slice=hostset.slice",
        "--collect",
        "--quiet",
        "-p",
        "Restart=always",
        "/bin/sleep",
        "infinity",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

fn reap(children: Vec<(String, std::process::Child)>) -> Res<()> {
    for (name, child) in children {
        let out = child
            .wait_with_output()
            .map_err(|e| format!("systemd-run {name}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "systemd-run {name}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Starts the units of `path` for indices `range` "at once" (back to back), returning `t0`.
fn launch(
    sd: &Sd,
    path: Path3,
    tag: &str,
    range: std::ops::Range<usize>,
    props: &[(&'static str, hostset::unit::PropValue)],
) -> Res<(Instant, Vec<(String, std::process::Child)>)> {
    let mut children = Vec::new();
    match path {
        Path3::Agent => {
            let staged: Vec<Staged> = range
                .clone()
                .map(|i| {
                    let name = path.name(tag, i);
                    stage(SPEC_DIR, &format!("{name}.toml"), &spec_text(&name, ""))
                })
                .collect::<Res<_>>()?;
            let t0 = Instant::now();
            for s in &staged {
                s.commit()?;
            }
            Ok((t0, children))
        }
        Path3::Direct => {
            let t0 = Instant::now();
            for i in range {
                sd.start_transient(&path.unit(tag, i), props)?;
            }
            Ok((t0, children))
        }
        Path3::SystemdRun => {
            let mut cmds: Vec<(String, Command)> = range
                .map(|i| (path.name(tag, i), systemd_run(&path.name(tag, i))))
                .collect();
            let t0 = Instant::now();
            for (name, cmd) in &mut cmds {
                let child = cmd.spawn().map_err(|e| format!("spawn systemd-run: {e}"))?;
                children.push((name.clone(), child));
            }
            Ok((t0, children))
        }
    }
}

/// Stops the units of `path` (the agent's by removing their spec files) and waits until
/// they are gone.
fn teardown(sd: &Sd, w: &mut Watcher, path: Path3, tag: &str, n: usize) -> Res<()> {
    let units: Vec<String> = (0..n).map(|i| path.unit(tag, i)).collect();
    let t0 = Instant::now();
    match path {
        Path3::Agent => {
            for i in 0..n {
                remove(&Path::new(SPEC_DIR).join(format!("{}.toml", path.name(tag, i))))?;
            }
        }
        _ => {
            for u in &units {
                sd.stop(u)?;
            }
        }
    }
    w.wait_all(&units, t0, WAIT, is_gone)?;
    Ok(())
}

fn latency(seq: usize, burst: usize, gap_ms: u64) -> Res<Json> {
    let mut w = Watcher::start()?;
    let sd = Sd::connect()?;
    let ready = start_agent(&sd, &mut w)?;
    log(&format!("agent ready in {:.1} ms", ms(ready)));
    let props = agent_properties("bench-direct")?;
    let gap = Duration::from_millis(gap_ms);
    std::thread::sleep(Duration::from_millis(300));

    // One at a time, the three paths interleaved so that they share the node's conditions.
    let mut seq_ms: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for i in 0..seq {
        for path in Path3::ALL {
            let (t0, children) = launch(&sd, path, "s", i..i + 1, &props)?;
            let at = w.wait_one(&path.unit("s", i), t0, is_active)?;
            reap(children)?;
            seq_ms.entry(path.key()).or_default().push(ms(at - t0));
            std::thread::sleep(gap);
        }
        if i % 25 == 24 {
            log(&format!("one at a time: {} of {seq}", i + 1));
        }
    }
    for path in Path3::ALL {
        teardown(&sd, &mut w, path, "s", seq)?;
    }
    w.forget();
    std::thread::sleep(Duration::from_millis(500));

    // At once: `burst` units back to back, each path alone, from the same starting state.
    let mut bursts = serde_json::Map::new();
    for path in Path3::ALL {
        let (t0, children) = launch(&sd, path, "b", 0..burst, &props)?;
        let units: Vec<String> = (0..burst).map(|i| path.unit("b", i)).collect();
        let seen = w.wait_all(&units, t0, WAIT, is_active)?;
        reap(children)?;
        let mut per_unit: Vec<f64> = units.iter().map(|u| ms(seen[u] - t0)).collect();
        per_unit.sort_by(f64::total_cmp);
        let all = per_unit.last().copied().unwrap_or(0.0);
        log(&format!(
            "{burst} at once, {}: all active in {all:.1} ms",
            path.key()
        ));
        bursts.insert(
            path.key().into(),
            json!({ "per_unit_ms": per_unit, "all_ms": all }),
        );
        std::thread::sleep(Duration::from_millis(300));
        teardown(&sd, &mut w, path, "b", burst)?;
        w.forget();
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(json!({
        "agent_ready_ms": ms(ready),
        "gap_ms": gap_ms,
        "seq_ms": seq_ms,
        "burst": bursts,
    }))
}

// ---------------------------------------------------------------------------------------
// 2. Node label change

fn node_toml(bench: &str) -> String {
    format!("labels = {{ bench = \"{bench}\" }}\n")
}

fn labels(n: usize, rounds: usize) -> Res<Json> {
    let mut w = Watcher::start()?;
    let sd = Sd::connect()?;
    write_now("/etc/hostset", "node.toml", &node_toml("off"))?;
    let names: Vec<String> = (0..n).map(|i| format!("bench-label-{i}")).collect();
    for name in &names {
        write_now(
            SPEC_DIR,
            &format!("{name}.toml"),
            &spec_text(name, "nodeSelector = { bench = \"on\" }\n"),
        )?;
    }
    start_agent(&sd, &mut w)?;
    std::thread::sleep(Duration::from_millis(500));
    let units: Vec<String> = names.iter().map(|n| hostset_unit(n)).collect();
    for u in &units {
        let s = sd.active_state(u)?;
        if s != "not-loaded" && s != "inactive" {
            return Err(format!("{u} is {s} before the label is set"));
        }
    }
    let mut start_all = Vec::new();
    let mut start_median = Vec::new();
    let mut stop_all = Vec::new();
    for _ in 0..rounds {
        let on = stage("/etc/hostset", "node.toml", &node_toml("on"))?;
        let t0 = Instant::now();
        on.commit()?;
        let seen = w.wait_all(&units, t0, WAIT, is_active)?;
        let mut each: Vec<f64> = seen.values().map(|t| ms(*t - t0)).collect();
        each.sort_by(f64::total_cmp);
        start_all.push(each.last().copied().unwrap_or(0.0));
        start_median.push(each[each.len() / 2]);
        std::thread::sleep(Duration::from_millis(500));

        let off = stage("/etc/hostset", "node.toml", &node_toml("off"))?;
        let t0 = Instant::now();
        off.commit()?;
        let seen = w.wait_all(&units, t0, WAIT, is_gone)?;
        stop_all.push(seen.values().map(|t| ms(*t - t0)).fold(0.0, f64::max));
        w.forget();
        std::thread::sleep(Duration::from_millis(500));
    }
    log(&format!(
        "label on → all {n} active: {start_all:.1?} ms; off → all stopped: {stop_all:.1?} ms"
    ));
    Ok(json!({
        "n": n,
        "start_all_ms": start_all,
        "start_median_ms": start_median,
        "stop_all_ms": stop_all,
    }))
}

// ---------------------------------------------------------------------------------------
// 3. Cold start and restart with many units

fn agent_proc(sd: &Sd) -> Res<ProcSample> {
    let pid = sd.main_pid(AGENT_UNIT)?;
    ProcSample::read(pid)
}

fn cold(n: usize) -> Res<Json> {
    let mut w = Watcher::start()?;
    let sd = Sd::connect()?;
    let names: Vec<String> = (0..n).map(|i| format!("bench-cold-{i}")).collect();
    for name in &names {
        write_now(SPEC_DIR, &format!("{name}.toml"), &spec_text(name, ""))?;
    }
    let units: Vec<String> = names.iter().map(|n| hostset_unit(n)).collect();

    // Cold start: the agent starts with n spec files and no unit.
    let t0 = Instant::now();
    let job = sd.job_call("StartUnit", AGENT_UNIT)?;
    let (ready_at, result) = w.wait_job(&job, WAIT)?;
    if result != "done" {
        return Err(format!("starting {AGENT_UNIT}: job {result}"));
    }
    let seen = w.wait_all(&units, t0, WAIT, is_active)?;
    let all_active = seen.values().map(|t| ms(*t - t0)).fold(0.0, f64::max);
    log(&format!(
        "cold start: ready after {:.0} ms, all {n} active after {all_active:.0} ms",
        ms(ready_at - t0)
    ));
    std::thread::sleep(Duration::from_secs(2));
    let after_start = agent_proc(&sd)?;

    // Restart: every unit must be adopted as it is.
    let mut pids: BTreeMap<String, u32> = BTreeMap::new();
    for u in &units {
        pids.insert(u.clone(), sd.main_pid(u)?);
    }
    w.drain()?;
    w.forget();
    let t1 = Instant::now();
    let job = sd.job_call("RestartUnit", AGENT_UNIT)?;
    let (ready2, result) = w.wait_job(&job, WAIT)?;
    if result != "done" {
        return Err(format!("restarting {AGENT_UNIT}: job {result}"));
    }
    let adopted_ms = ms(ready2 - t1);
    std::thread::sleep(Duration::from_secs(1));
    w.drain()?;
    let touched: BTreeMap<String, usize> =
        w.hostset_signals_since(t1)
            .iter()
            .fold(BTreeMap::new(), |mut m, o| {
                *m.entry(o.unit().to_string()).or_default() += 1;
                m
            });
    let mut changed_pids = 0;
    for (u, pid) in &pids {
        if sd.main_pid(u)? != *pid {
            changed_pids += 1;
        }
    }
    let status: Json = std::fs::read_to_string(STATUS_FILE)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Json::Null);
    let reported = status["daemonsets"].as_array().map_or(0, |a| {
        a.iter()
            .filter(|d| {
                d["ready"].as_bool() == Some(true)
                    && pids.get(d["unit"].as_str().unwrap_or("")).copied()
                        == d["mainPid"].as_u64().map(|p| p as u32)
            })
            .count()
    });
    let after_restart = agent_proc(&sd)?;
    log(&format!(
        "restart: ready (all adopted) after {adopted_ms:.0} ms; MainPIDs changed: {changed_pids}; \
         units signalled: {}; status file lists {reported} ready with the same MainPID",
        touched.len()
    ));
    Ok(json!({
        "n": n,
        "cold_ready_ms": ms(ready_at - t0),
        "cold_all_active_ms": all_active,
        "restart_ready_ms": adopted_ms,
        "restart_main_pids_changed": changed_pids,
        "restart_units_signalled": touched.len(),
        "restart_status_ready_same_pid": reported,
        "rss_after_cold_start": after_start.to_json(),
        "rss_after_restart": after_restart.to_json(),
    }))
}

// ---------------------------------------------------------------------------------------
// 4. Footprint

/// Starts the agent, renames `n` spec files in at once (the job supervisord gets: programs
/// added by configuration to the running daemon) and waits until every unit is active.
fn setup(n: usize) -> Res<Json> {
    let mut w = Watcher::start()?;
    let sd = Sd::connect()?;
    start_agent(&sd, &mut w)?;
    std::thread::sleep(Duration::from_millis(300));
    let names: Vec<String> = (0..n).map(|i| format!("bench-idle-{i}")).collect();
    let staged: Vec<Staged> = names
        .iter()
        .map(|name| stage(SPEC_DIR, &format!("{name}.toml"), &spec_text(name, "")))
        .collect::<Res<_>>()?;
    let t0 = Instant::now();
    for s in &staged {
        s.commit()?;
    }
    let units: Vec<String> = names.iter().map(|n| hostset_unit(n)).collect();
    let seen = w.wait_all(&units, t0, WAIT, is_active)?;
    let all = seen.values().map(|t| ms(*t - t0)).fold(0.0, f64::max);
    log(&format!("{n} spec files → all active in {all:.1} ms"));
    Ok(json!({ "n": n, "all_active_ms": all }))
}

/// What /proc says about one process (all its threads).
#[derive(Debug, Clone, Default)]
struct ProcSample {
    pid: u32,
    vm_rss_kb: u64,
    vm_hwm_kb: u64,
    rss_kb: u64,
    pss_kb: u64,
    /// `Anonymous`: heap, stacks, other private memory (what the process itself allocated).
    anon_kb: u64,
    /// `Private_Clean` + `Private_Dirty` (USS).
    uss_kb: u64,
    threads: u64,
    utime_ticks: u64,
    stime_ticks: u64,
    /// Sum over threads of `schedstat`'s time on CPU.
    cpu_ns: u64,
    voluntary: u64,
    involuntary: u64,
    comm: String,
    /// Per thread: id, name, context switches (voluntary + involuntary).
    per_thread: Vec<(u32, String, u64)>,
    /// Resident KiB by kind of mapping (`smaps`): the binary, shared libraries, heap and
    /// other anonymous memory, stacks.
    rss_by_kind: BTreeMap<&'static str, u64>,
}

fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl ProcSample {
    fn read(pid: u32) -> Res<ProcSample> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let status = std::fs::read_to_string(dir.join("status"))
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        let rollup = std::fs::read_to_string(dir.join("smaps_rollup")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let after_comm: Vec<&str> = stat
            .rfind(')')
            .map(|i| stat[i + 1..].split_whitespace().collect())
            .unwrap_or_default();
        // Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
        let tick = |i: usize| after_comm.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut s = ProcSample {
            pid,
            vm_rss_kb: field(&status, "VmRSS:"),
            vm_hwm_kb: field(&status, "VmHWM:"),
            rss_kb: field(&rollup, "Rss:"),
            pss_kb: field(&rollup, "Pss:"),
            anon_kb: field(&rollup, "Anonymous:"),
            uss_kb: field(&rollup, "Private_Clean:") + field(&rollup, "Private_Dirty:"),
            threads: field(&status, "Threads:"),
            utime_ticks: tick(11),
            stime_ticks: tick(12),
            comm: std::fs::read_to_string(dir.join("comm"))
                .unwrap_or_default()
                .trim()
                .to_string(),
            ..Default::default()
        };
        let tasks = std::fs::read_dir(dir.join("task")).map_err(|e| e.to_string())?;
        for t in tasks.flatten() {
            let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let (v, i) = (
                field(&st, "voluntary_ctxt_switches:"),
                field(&st, "nonvoluntary_ctxt_switches:"),
            );
            s.voluntary += v;
            s.involuntary += i;
            let tid = t
                .file_name()
                .to_str()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            s.per_thread.push((tid, name.trim().to_string(), v + i));
            let sched = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            s.cpu_ns += sched
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        let exe = std::fs::read_link(dir.join("exe")).unwrap_or_default();
        let smaps = std::fs::read_to_string(dir.join("smaps")).unwrap_or_default();
        let mut kind = "anon";
        for line in smaps.lines() {
            let mut parts = line.split_whitespace();
            let first = parts.next().unwrap_or("");
            if first.contains('-') && !first.ends_with(':') {
                // A mapping's header: range perms offset dev inode [path].
                let path = line.split_whitespace().nth(5).unwrap_or("");
                kind = if path.is_empty() {
                    "anon"
                } else if Path::new(path) == exe {
                    "binary"
                } else if path == "[heap]" {
                    "heap"
                } else if path.starts_with("[stack") {
                    "stack"
                } else if path.starts_with('[') {
                    "kernel"
                } else {
                    "libraries"
                };
            } else if first == "Rss:" {
                let kb: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                *s.rss_by_kind.entry(kind).or_default() += kb;
            }
        }
        Ok(s)
    }

    fn to_json(&self) -> Json {
        json!({
            "pid": self.pid,
            "comm": self.comm,
            "vm_rss_kb": self.vm_rss_kb,
            "vm_hwm_kb": self.vm_hwm_kb,
            "rss_kb": self.rss_kb,
            "pss_kb": self.pss_kb,
            "anon_kb": self.anon_kb,
            "uss_kb": self.uss_kb,
            "threads": self.threads,
            "utime_ticks": self.utime_ticks,
            "stime_ticks": self.stime_ticks,
            "cpu_ns": self.cpu_ns,
            "voluntary_ctxt_switches": self.voluntary,
            "nonvoluntary_ctxt_switches": self.involuntary,
            "rss_kb_by_kind": self.rss_by_kind,
        })
    }
}

/// Samples the main process of `unit` now and `seconds` later. The probe closes its bus
/// connection first: during the window nothing of it touches the bus.
fn idle(unit: &str, seconds: u64) -> Res<Json> {
    let pid = {
        let sd = Sd::connect()?;
        sd.main_pid(unit)?
    };
    if pid == 0 {
        return Err(format!("{unit} has no main process"));
    }
    let before = ProcSample::read(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let after = ProcSample::read(pid)?;
    let secs = t0.elapsed().as_secs_f64();
    let ticks = (after.utime_ticks + after.stime_ticks)
        .saturating_sub(before.utime_ticks + before.stime_ticks);
    let cpu_ns = after.cpu_ns.saturating_sub(before.cpu_ns);
    let switches =
        (after.voluntary + after.involuntary).saturating_sub(before.voluntary + before.involuntary);
    let per_thread: Vec<Json> = after
        .per_thread
        .iter()
        .map(|(tid, name, n)| {
            let was = before
                .per_thread
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(0, |(_, _, b)| *b);
            json!({ "tid": tid, "comm": name, "context_switches": n.saturating_sub(was) })
        })
        .collect();
    Ok(json!({
        "unit": unit,
        "seconds": secs,
        "before": before.to_json(),
        "after": after.to_json(),
        "cpu_seconds": if cpu_ns > 0 { cpu_ns as f64 / 1e9 } else { ticks as f64 / 100.0 },
        "cpu_seconds_ticks": ticks as f64 / 100.0,
        "cpu_percent_of_core": 100.0 * (if cpu_ns > 0 { cpu_ns as f64 / 1e9 } else { ticks as f64 / 100.0 }) / secs,
        "context_switches": switches,
        "voluntary": after.voluntary.saturating_sub(before.voluntary),
        "involuntary": after.involuntary.saturating_sub(before.involuntary),
        "wakeups_per_minute": switches as f64 * 60.0 / secs,
        "per_thread": per_thread,
    }))
}

// ---------------------------------------------------------------------------------------
// 5. The peer: supervisord

fn supervisorctl(args: &[&str]) -> Res<String> {
    let out = Command::new("supervisorctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("supervisorctl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // `status` exits 3 when some process is not running; that is an answer too.
    if out.status.success() || args.first() == Some(&"status") {
        Ok(text)
    } else {
        Err(format!(
            "supervisorctl {args:?}: {}: {}{}",
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn supervisor(n: usize) -> Res<Json> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // supervisord must be up (the package starts it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while supervisorctl(&["pid"]).is_err() {
        if Instant::now() > deadline {
            return Err("supervisord does not answer supervisorctl".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(SV_SOCKET);
    let sock = UnixDatagram::bind(SV_SOCKET).map_err(|e| format!("bind {SV_SOCKET}: {e}"))?;
    write_now(
        SV_CONF_DIR,
        "bench-listener.conf",
        &format!(
            "[eventlistener:bench-listener]\ncommand={} --probe sv-listener\n\
             events=PROCESS_STATE_RUNNING\nbuffer_size=1024\nautorestart=true\n",
            exe.display()
        ),
    )?;
    supervisorctl(&["update"])?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    loop {
        let len = sock
            .recv(&mut buf)
            .map_err(|e| format!("the event listener did not say hello: {e}"))?;
        if &buf[..len] == b"hello" {
            break;
        }
    }

    // 50 programs by configuration + `supervisorctl update`; RUNNING events stamped here.
    let names: Vec<String> = (0..n).map(|i| format!("bench-sv-{i}")).collect();
    let staged: Vec<Staged> = names
        .iter()
        .map(|name| {
            stage(
                SV_CONF_DIR,
                &format!("{name}.conf"),
                &format!(
                    "[program:{name}]\ncommand=/bin/sleep infinity\nautostart=true\n\
                     autorestart=true\nstartsecs=0\n"
                ),
            )
        })
        .collect::<Res<_>>()?;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let reader = sock.try_clone().map_err(|e| e.to_string())?;
    reader
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    let want = n;
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut got = 0;
        while got < want {
            let Ok(len) = reader.recv(&mut buf) else {
                return;
            };
            let at = Instant::now();
            let msg = String::from_utf8_lossy(&buf[..len]).into_owned();
            if let Some(name) = msg.strip_prefix("RUNNING ")
                && name.starts_with("bench-sv-")
            {
                got += 1;
                if tx.send((at, name.to_string())).is_err() {
                    return;
                }
            }
        }
    });
    let t0 = Instant::now();
    for s in &staged {
        s.commit()?;
    }
    let update = Command::new("supervisorctl")
        .arg("update")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("supervisorctl update: {e}"))?;
    let update_ms = ms(t0.elapsed());
    if !update.status.success() {
        return Err(format!(
            "supervisorctl update: {}: {}",
            update.status,
            String::from_utf8_lossy(&update.stderr).trim()
        ));
    }
    let mut running: HashMap<String, Instant> = HashMap::new();
    while running.len() < n {
        match rx.recv_timeout(WAIT) {
            Ok((at, name)) => {
                running.entry(name).or_insert(at);
            }
            Err(_) => {
                return Err(format!(
                    "only {} of {n} programs reported RUNNING",
                    running.len()
                ));
            }
        }
    }
    let _ = thread.join();
    let mut each: Vec<f64> = running.values().map(|t| ms(*t - t0)).collect();
    each.sort_by(f64::total_cmp);
    let all = each.last().copied().unwrap_or(0.0);
    log(&format!(
        "supervisord: {n} programs RUNNING {all:.0} ms after the configs + `supervisorctl update` \
         (which returned after {update_ms:.0} ms)"
    ));

    // Leave exactly the 50 programs for the idle measurement.
    remove(&Path::new(SV_CONF_DIR).join("bench-listener.conf"))?;
    supervisorctl(&["update"])?;
    let status = supervisorctl(&["status"])?;
    let running_now = status
        .lines()
        .filter(|l| l.starts_with("bench-sv-") && l.contains("RUNNING"))
        .count();
    if running_now != n {
        return Err(format!("{running_now} of {n} programs RUNNING:\n{status}"));
    }
    let _ = std::fs::remove_file(SV_SOCKET);
    Ok(json!({
        "n": n,
        "all_running_ms": all,
        "per_program_ms": each,
        "update_returned_ms": update_ms,
    }))
}

/// A supervisord event listener: READY, read one event, report it, `RESULT 2\nOK`, again.
fn sv_listener() -> i32 {
    let Ok(sock) = UnixDatagram::unbound() else {
        return 1;
    };
    let _ = sock.send_to(b"hello", SV_SOCKET);
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout().lock();
    loop {
        if out
            .write_all(b"READY\n")
            .and_then(|()| out.flush())
            .is_err()
        {
            return 1;
        }
        let mut header = String::new();
        match input.read_line(&mut header) {
            Ok(0) | Err(_) => return 0,
            Ok(_) => {}
        }
        let field = |key: &str| {
            header
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .map(str::to_string)
        };
        let len: usize = field("len:").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut payload = vec![0u8; len];
        if input.read_exact(&mut payload).is_err() {
            return 1;
        }
        let payload = String::from_utf8_lossy(&payload);
        if field("eventname:").as_deref() == Some("PROCESS_STATE_RUNNING")
            && let Some(name) = payload
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("processname:"))
        {
            let _ = sock.send_to(format!("RUNNING {name}").as_bytes(), SV_SOCKET);
        }
        if out
            .write_all(b"RESULT 2\nOK")
            .and_then(|()| out.flush())
            .is_err()
        {
            return 1;
        }
    }
}
