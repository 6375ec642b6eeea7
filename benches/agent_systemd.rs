//! The agent against systemd itself, on real systemd nodes (issue "Benchmarks"):
//!
//! 1. **spec → running**: from the `rename(2)` of a spec file into the spec directory to the
//!    unit `active`, one daemonset at a time and 50 at once, next to the same command started
//!    with `systemd-run` and the agent's exact `StartTransientUnit` call made directly (zbus),
//!    in the same node and the same run;
//! 2. **label change**: the node file renamed with a label 50 daemonsets select, to all 50
//!    units active; renamed back, to all 50 stopped;
//! 3. **cold start** with 500 spec files to all 500 units active; **restart** with 500 running
//!    units to the agent ready again (its first pass adopts every unit), with every MainPID
//!    checked unchanged;
//! 4. **footprint** of the release `hostsetd` running 50 daemonsets: VmRSS, Pss
//!    (`smaps_rollup`), CPU and context switches (every thread, `/proc/PID/task/*`) over
//!    60 s idle;
//! 5. **the peer**: supervisord (Debian's `supervisor`) doing the same jobs in a node of its
//!    own: 50 programs by configuration + `supervisorctl update`, to all RUNNING; its idle
//!    RSS and CPU with the 50 programs, measured in the same 60 s window as the agent's.
//!
//! ```sh
//! cargo bench --bench agent_systemd                      # everything, about 2-3 minutes, as root
//! cargo bench --bench agent_systemd -- latency labels    # some scenarios: latency labels cold footprint
//! cargo bench --bench agent_systemd -- --quick           # 50 one at a time, 3 label rounds, 20 s idle
//! HOSTSET_BENCH_HOSTSETD=/path/to/hostsetd cargo bench --bench agent_systemd -- footprint
//!                                                        # another build of the agent (profile settings)
//! HOSTSET_BENCH_IDLE_SECONDS=20 ...                      # another idle window
//! ```
//!
//! Each scenario boots its own node (`tests/support/fleet.rs`: systemd-nspawn from the cached
//! Debian rootfs, `units/hostsetd.service` installed, the release `hostsetd` that `cargo bench`
//! builds). Inside the node the scenario is run by this same binary (`--probe`, see
//! `support/agent_probe.rs`), which takes every time itself and observes systemd through its
//! D-Bus signals, never by polling. The peer's `.deb`s (supervisor, python3) are downloaded
//! once on the host (`apt-get --download-only` against the rootfs's dpkg status) into
//! `/var/cache/hostset-test/bench-debs-<rootfs>/` and installed into that node's throwaway
//! overlay.
//!
//! Output: a markdown table on stdout and `target/bench/agent.json` (the schema of
//! `target/bench/micro.json`: one object per measured row, plus the probes' raw numbers).
//! Nothing here asserts a time: targets are reported as met or missed. Needs root and what the
//! end-to-end tests need; `HOSTSET_SKIP_E2E=1` skips. Under `cargo test --benches` it does
//! nothing.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "support/agent_probe.rs"]
mod probe;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use support::fleet::{Fleet, Node, NodeOpts, describe};

/// Where the bench binary is bound in each node.
const PROBE_PATH: &str = "/usr/local/bin/hostset-bench-probe";
/// Where the peer's packages are bound in its node.
const DEBS_IN_NODE: &str = "/var/cache/hostset-bench-debs";

/// One at a time: this many daemonsets (p99 of 100 samples is the second largest); 50 with
/// `--quick`.
const SEQ: usize = 100;
const SEQ_QUICK: usize = 50;
/// At once.
const BURST: usize = 50;
/// Pause between two one-at-a-time measurements.
const GAP_MS: u64 = 50;
const LABEL_DAEMONSETS: usize = 50;
const LABEL_ROUNDS: usize = 5;
const LABEL_ROUNDS_QUICK: usize = 3;
const COLD_DAEMONSETS: usize = 500;
const IDLE_DAEMONSETS: usize = 50;
/// The idle window (20 s with `--quick`); `HOSTSET_BENCH_IDLE_SECONDS` overrides both.
const IDLE_SECONDS: u64 = 60;
const IDLE_SECONDS_QUICK: u64 = 20;

/// The sizes of this run: full, or shortened by `--quick` (as `benches/run --quick` asks).
#[derive(Clone, Copy)]
struct Params {
    quick: bool,
    seq: usize,
    label_rounds: usize,
    idle_seconds: u64,
}

impl Params {
    fn new(quick: bool) -> Params {
        let idle = std::env::var("HOSTSET_BENCH_IDLE_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|s| *s > 0);
        Params {
            quick,
            seq: if quick { SEQ_QUICK } else { SEQ },
            label_rounds: if quick {
                LABEL_ROUNDS_QUICK
            } else {
                LABEL_ROUNDS
            },
            idle_seconds: idle.unwrap_or(if quick {
                IDLE_SECONDS_QUICK
            } else {
                IDLE_SECONDS
            }),
        }
    }
}

// Targets (issue "Benchmarks").
const TARGET_RATIO_TO_DIRECT: f64 = 2.0;
const TARGET_RSS_KB: f64 = 8.0 * 1024.0;
const TARGET_CPU_PERCENT: f64 = 0.1;
const TARGET_RSS_SHARE_OF_SUPERVISORD: f64 = 0.2;
/// With no coordinator, the only timers an idle agent should have are the memory/disk
/// sample (10 s) and the watchdog ping (15 s): 10 wake-ups a minute, allowing about 3
/// context switches each; more means periodic work beyond them.
const TARGET_WAKEUPS_PER_MINUTE: f64 = 30.0;
/// README: a label change is acted on "within a second".
const TARGET_LABEL_MS: f64 = 1000.0;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--probe") {
        let code = probe::main(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("agent_systemd: a benchmark; run it with `cargo bench --bench agent_systemd`");
        return ExitCode::SUCCESS;
    }
    let all = ["latency", "labels", "cold", "footprint"];
    let wanted: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Some(bad) = wanted.iter().find(|w| !all.contains(w)) {
        eprintln!("agent_systemd: unknown scenario {bad:?}; scenarios: {all:?}");
        return ExitCode::FAILURE;
    }
    let run = |s: &str| wanted.is_empty() || wanted.contains(&s);
    let params = Params::new(args.iter().any(|a| a == "--quick"));
    if cfg!(debug_assertions) {
        eprintln!("agent_systemd: warning: not an optimized build; footprint numbers mean little");
    }
    let Some(fleet) = Fleet::new("agent-bench") else {
        return ExitCode::SUCCESS;
    };
    let started = Instant::now();
    let mut report = Report {
        quick: params.quick,
        ..Report::default()
    };
    let binary = hostsetd();
    let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
    note(&format!(
        "hostsetd under test: {} ({:.1} MiB)",
        binary.display(),
        size as f64 / (1024.0 * 1024.0)
    ));
    report.raw.insert(
        "hostsetd".into(),
        json!({ "path": binary.display().to_string(), "bytes": size }),
    );
    if run("latency") {
        step(&mut report, "latency", || latency(&fleet, params));
    }
    if run("labels") {
        step(&mut report, "labels", || labels(&fleet, params));
    }
    if run("cold") {
        step(&mut report, "cold", || cold(&fleet));
    }
    if run("footprint") {
        step(&mut report, "footprint", || footprint(&fleet, params));
    }
    drop(fleet);
    report.systemd_version = SYSTEMD_VERSION.get().cloned();
    let elapsed = started.elapsed();
    report.print(elapsed);
    report.write(elapsed);
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn note(msg: &str) {
    eprintln!("[agent_systemd] {msg}");
}

fn step(report: &mut Report, name: &str, f: impl FnOnce() -> Result<Scenario, String>) {
    let t = Instant::now();
    note(&format!("{name}: starting"));
    match f() {
        Ok(s) => {
            note(&format!("{name}: done in {:.0?}", t.elapsed()));
            report.raw.insert(name.to_string(), s.raw);
            report.rows.extend(s.rows);
        }
        Err(e) => {
            note(&format!("{name}: FAILED: {e}"));
            report.failures.push(format!("{name}: {e}"));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Nodes and probes

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `hostsetd` under test: the one `cargo bench` built (release profile), or
/// `HOSTSET_BENCH_HOSTSETD` (to compare another build, e.g. other profile settings).
fn hostsetd() -> PathBuf {
    std::env::var_os("HOSTSET_BENCH_HOSTSETD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hostsetd")))
}

fn node_opts(name: &str) -> Result<NodeOpts, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    Ok(NodeOpts::new(name)
        .bind_ro(hostsetd(), "/usr/bin/hostsetd")
        .bind_ro(
            manifest_dir().join("units/hostsetd.service"),
            "/etc/systemd/system/hostsetd.service",
        )
        .bind_ro(exe, PROBE_PATH))
}

/// The nodes' systemd, as the first booted node says (`systemctl --version`).
static SYSTEMD_VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn boot(fleet: &Fleet, opts: NodeOpts) -> Result<Node, String> {
    let node = fleet.try_boot(opts)?;
    note_systemd_version(&node);
    Ok(node)
}

fn note_systemd_version(node: &Node) {
    if SYSTEMD_VERSION.get().is_none() {
        let out = node.exec(&["systemctl", "--version"]);
        let text = String::from_utf8_lossy(&out.stdout);
        // "systemd 252 (252.39-1~deb12u2)": the package version, else the number.
        if let Some(first) = text.lines().next() {
            let version = first
                .split_once('(')
                .and_then(|(_, v)| v.split_once(')'))
                .map_or(first.trim_start_matches("systemd ").trim(), |(v, _)| v);
            let _ = SYSTEMD_VERSION.set(version.to_string());
        }
    }
}

/// Runs one probe subcommand in `node`; its stderr goes to ours, its stdout is one JSON object.
fn probe(node: &Node, args: &[&str], timeout: Duration) -> Result<Json, String> {
    let mut argv = vec![PROBE_PATH, "--probe"];
    argv.extend_from_slice(args);
    let out = node.exec_timeout(&argv, timeout);
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        eprintln!("  {}: {line}", node.name());
    }
    if !out.status.success() {
        let journal = node.journal("hostsetd");
        let tail: Vec<&str> = journal.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "probe {args:?} in node {}: {}\n--- hostsetd journal (tail) ---\n{}",
            node.name(),
            describe(&out),
            tail.join("\n")
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).map_err(|e| {
        format!(
            "probe {args:?} in node {}: not JSON ({e}): {stdout}",
            node.name()
        )
    })
}

// ---------------------------------------------------------------------------------------
// Numbers

fn numbers(v: &Json) -> Vec<f64> {
    let mut out: Vec<f64> = v
        .as_array()
        .map(|a| a.iter().filter_map(Json::as_f64).collect())
        .unwrap_or_default();
    out.sort_by(f64::total_cmp);
    out
}

/// Nearest-rank percentile of sorted `xs`.
fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn ms_text(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn kb_text(kb: f64) -> String {
    format!("{:.1} MiB", kb / 1024.0)
}

/// A target and how the row's value stands against it.
struct Target {
    /// What is compared: `ratio`, `median_ms`, `rss_kb`, ...
    metric: &'static str,
    max: f64,
    text: String,
}

struct Row {
    group: &'static str,
    name: String,
    id: String,
    /// The row's value as shown.
    shown: String,
    median_ms: Option<f64>,
    p99_ms: Option<f64>,
    baseline: Option<String>,
    baseline_shown: Option<String>,
    baseline_median_ms: Option<f64>,
    ratio: Option<f64>,
    target: Option<Target>,
    /// The number compared with the target.
    value: Option<f64>,
    extra: Json,
}

impl Row {
    fn new(group: &'static str, id: &str, name: &str, shown: String) -> Row {
        Row {
            group,
            name: name.into(),
            id: id.into(),
            shown,
            median_ms: None,
            p99_ms: None,
            baseline: None,
            baseline_shown: None,
            baseline_median_ms: None,
            ratio: None,
            target: None,
            value: None,
            extra: Json::Null,
        }
    }

    fn met(&self) -> Option<bool> {
        Some(self.value? <= self.target.as_ref()?.max)
    }

    fn verdict(&self) -> String {
        match (self.met(), self.value, &self.target) {
            (Some(true), Some(v), Some(t)) if t.max > 0.0 => {
                format!("met ({:.0}% of target)", 100.0 * v / t.max)
            }
            (Some(true), _, _) => "met".into(),
            (Some(false), Some(v), Some(t)) if t.max > 0.0 => {
                format!("**missed** ({:.2}× target)", v / t.max)
            }
            (Some(false), _, _) => "**missed**".into(),
            _ => "–".into(),
        }
    }
}

struct Scenario {
    rows: Vec<Row>,
    raw: Json,
}

#[derive(Default)]
struct Report {
    quick: bool,
    /// The nodes' systemd (`systemctl --version`), once a node has booted.
    systemd_version: Option<String>,
    rows: Vec<Row>,
    raw: serde_json::Map<String, Json>,
    failures: Vec<String>,
}

impl Report {
    fn print(&self, elapsed: Duration) {
        println!("{}", self.markdown(elapsed));
    }

    fn markdown(&self, elapsed: Duration) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "\n## hostsetd against systemd (agent_systemd, {:.0?} wall)\n",
            elapsed
        );
        let _ = writeln!(
            t,
            "| scenario | measurement | value | baseline | baseline value | ratio | target | result |"
        );
        let _ = writeln!(t, "|---|---|---:|---|---:|---:|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.group,
                r.name,
                r.shown,
                r.baseline.as_deref().unwrap_or("–"),
                r.baseline_shown.as_deref().unwrap_or("–"),
                r.ratio.map_or("–".into(), |x| format!("{x:.2}×")),
                r.target.as_ref().map_or("–", |t| t.text.as_str()),
                r.verdict(),
            );
        }
        for f in &self.failures {
            let first = f.lines().next().unwrap_or("");
            let _ = writeln!(t, "| {first} | | | | | | | **failed** |");
        }
        t
    }

    fn write(&self, elapsed: Duration) {
        let rows: Vec<Json> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "name": format!("{}: {}", r.group, r.name),
                    "id": r.id,
                    "shown": r.shown,
                    "median_ms": r.median_ms,
                    "p99_ms": r.p99_ms,
                    // The runner shows this name only: with the value when it is no time.
                    "baseline": match (&r.baseline, &r.baseline_shown) {
                        (Some(b), Some(v)) => Some(format!("{b}: {v}")),
                        (b, _) => b.clone(),
                    },
                    "baseline_median_ms": r.baseline_median_ms,
                    "ratio": r.ratio,
                    "target": r.target.as_ref().map(|t| json!({
                        "metric": t.metric, "max": t.max, "text": t.text,
                    })),
                    "value": r.value,
                    "met": r.met(),
                    "extra": r.extra,
                })
            })
            .collect();
        let doc = json!({
            "bench": "agent",
            "quick": self.quick,
            "systemd_version": self.systemd_version,
            "wall_seconds": elapsed.as_secs_f64(),
            "unit_note": "times in ms from the action (rename of the spec or node file, the \
                          StartTransientUnit call, the systemd-run spawn, supervisorctl update) \
                          to systemd's signal (PropertiesChanged ActiveState) or supervisord's \
                          PROCESS_STATE_RUNNING event; p99 is nearest-rank; memory in KiB",
            "scenarios": rows,
            "failures": self.failures,
            "raw": self.raw,
        });
        let out = target_dir().join("bench");
        let path = out.join("agent.json");
        let written = std::fs::create_dir_all(&out).and_then(|()| {
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&doc).expect("JSON") + "\n",
            )
        });
        match written {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}

/// The target directory this binary was built in (as `benches/micro.rs` finds it).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| manifest_dir().join("target"))
}

// ---------------------------------------------------------------------------------------
// 1. Spec to running

const PATHS: [(&str, &str); 3] = [
    ("agent", "hostset agent (spec file renamed in)"),
    ("systemd_run", "systemd-run, same command"),
    ("direct", "StartTransientUnit, direct (zbus)"),
];

fn latency(fleet: &Fleet, params: Params) -> Result<Scenario, String> {
    let node = boot(fleet, node_opts("lat")?)?;
    let raw = probe(
        &node,
        &[
            "latency",
            &format!("seq={}", params.seq),
            &format!("burst={BURST}"),
            &format!("gap_ms={GAP_MS}"),
        ],
        Duration::from_secs(300),
    )?;
    drop(node);
    let mut rows = Vec::new();
    let seq = |k: &str| numbers(&raw["seq_ms"][k]);
    let direct = seq("direct");
    let direct_median = median(&direct);
    for (key, name) in PATHS {
        let xs = seq(key);
        let (m, p99) = (median(&xs), percentile(&xs, 99.0));
        let mut r = Row::new(
            "1. spec → running",
            &format!("agent/spec_to_running/one_at_a_time/{key}"),
            &format!(
                "{name}, one at a time ({} daemonsets): median / p99",
                xs.len()
            ),
            format!("{} / {}", ms_text(m), ms_text(p99)),
        );
        r.median_ms = Some(m);
        r.p99_ms = Some(p99);
        if key != "direct" {
            r.baseline = Some("direct StartTransientUnit".into());
            r.baseline_shown = Some(format!(
                "{} / {}",
                ms_text(direct_median),
                ms_text(percentile(&direct, 99.0))
            ));
            r.baseline_median_ms = Some(direct_median);
            r.ratio = Some(m / direct_median);
        }
        if key == "agent" {
            r.target = Some(Target {
                metric: "ratio",
                max: TARGET_RATIO_TO_DIRECT,
                text: format!("median ≤ {TARGET_RATIO_TO_DIRECT}× direct"),
            });
            r.value = r.ratio;
        }
        rows.push(r);
    }
    let burst = |k: &str| {
        let b = &raw["burst"][k];
        (
            numbers(&b["per_unit_ms"]),
            b["all_ms"].as_f64().unwrap_or(f64::NAN),
        )
    };
    let (direct_each, direct_all) = burst("direct");
    for (key, name) in PATHS {
        let (each, all) = burst(key);
        let mut r = Row::new(
            "1. spec → running",
            &format!("agent/spec_to_running/at_once/{key}"),
            &format!("{name}, {} at once: all active / median unit", each.len()),
            format!("{} / {}", ms_text(all), ms_text(median(&each))),
        );
        r.median_ms = Some(median(&each));
        r.p99_ms = Some(percentile(&each, 99.0));
        r.extra = json!({ "all_ms": all });
        if key != "direct" {
            r.baseline = Some("direct StartTransientUnit".into());
            r.baseline_shown = Some(format!(
                "{} / {}",
                ms_text(direct_all),
                ms_text(median(&direct_each))
            ));
            r.baseline_median_ms = Some(median(&direct_each));
            r.ratio = Some(all / direct_all);
        }
        rows.push(r);
    }
    Ok(Scenario { rows, raw })
}

// ---------------------------------------------------------------------------------------
// 2. Label change

fn labels(fleet: &Fleet, params: Params) -> Result<Scenario, String> {
    let node = boot(fleet, node_opts("labels")?)?;
    let raw = probe(
        &node,
        &[
            "labels",
            &format!("n={LABEL_DAEMONSETS}"),
            &format!("rounds={}", params.label_rounds),
        ],
        Duration::from_secs(180),
    )?;
    drop(node);
    let mut rows = Vec::new();
    for (key, what) in [
        ("start_all_ms", "label added → all started"),
        ("stop_all_ms", "label removed → all stopped"),
    ] {
        let xs = numbers(&raw[key]);
        let mut r = Row::new(
            "2. label change",
            &format!("agent/label_change/{}", key.trim_end_matches("_ms")),
            &format!(
                "{what} ({LABEL_DAEMONSETS} daemonsets, {} rounds): median / max",
                xs.len()
            ),
            format!(
                "{} / {}",
                ms_text(median(&xs)),
                ms_text(xs.last().copied().unwrap_or(f64::NAN))
            ),
        );
        r.median_ms = Some(median(&xs));
        r.p99_ms = xs.last().copied();
        r.target = Some(Target {
            metric: "max_ms",
            max: TARGET_LABEL_MS,
            text: "all within 1 s (README)".into(),
        });
        r.value = xs.last().copied();
        rows.push(r);
    }
    Ok(Scenario { rows, raw })
}

// ---------------------------------------------------------------------------------------
// 3. Cold start and restart

fn cold(fleet: &Fleet) -> Result<Scenario, String> {
    let node = boot(fleet, node_opts("cold")?)?;
    let raw = probe(
        &node,
        &["cold", &format!("n={COLD_DAEMONSETS}")],
        Duration::from_secs(240),
    )?;
    drop(node);
    let n = COLD_DAEMONSETS;
    let f = |k: &str| raw[k].as_f64().unwrap_or(f64::NAN);
    let mut rows = Vec::new();
    let mut r = Row::new(
        "3. cold start",
        "agent/cold_start/all_active",
        &format!("agent start, {n} spec files → all {n} units active (agent ready)"),
        format!(
            "{} ({})",
            ms_text(f("cold_all_active_ms")),
            ms_text(f("cold_ready_ms"))
        ),
    );
    r.median_ms = Some(f("cold_all_active_ms"));
    rows.push(r);
    let changed = f("restart_main_pids_changed");
    let signalled = f("restart_units_signalled");
    let mut r = Row::new(
        "3. cold start",
        "agent/restart/adopted",
        &format!(
            "agent restart, {n} running units → ready, all adopted (MainPIDs changed; units signalled)"
        ),
        format!(
            "{} ({changed:.0}; {signalled:.0})",
            ms_text(f("restart_ready_ms"))
        ),
    );
    r.median_ms = Some(f("restart_ready_ms"));
    r.target = Some(Target {
        metric: "main_pids_changed",
        max: 0.0,
        text: "no unit restarted".into(),
    });
    r.value = Some(changed + signalled);
    rows.push(r);
    let rss = &raw["rss_after_restart"];
    let mut r = Row::new(
        "3. cold start",
        "agent/restart/rss_500",
        &format!("agent VmRSS / Pss with {n} units, after the restart"),
        format!(
            "{} / {}",
            kb_text(rss["vm_rss_kb"].as_f64().unwrap_or(f64::NAN)),
            kb_text(rss["pss_kb"].as_f64().unwrap_or(f64::NAN))
        ),
    );
    r.extra = rss.clone();
    rows.push(r);
    Ok(Scenario { rows, raw })
}

// ---------------------------------------------------------------------------------------
// 4 and 5. Footprint, and supervisord side by side

/// The `.deb`s supervisor needs on top of the node rootfs, downloaded once and cached beside
/// the rootfs (the host's apt, the rootfs's dpkg status: exactly what the rootfs lacks).
fn supervisor_debs(rootfs: &Path) -> Result<PathBuf, String> {
    let name = rootfs
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("rootfs has no name")?;
    let parent = rootfs.parent().ok_or("rootfs has no parent")?;
    let dir = parent.join(format!("bench-debs-{name}"));
    if dir.join("complete").is_file() {
        return Ok(dir);
    }
    let tmp = parent.join(format!(".bench-debs-{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("partial")).map_err(|e| format!("mkdir: {e}"))?;
    let status = rootfs.join("var/lib/dpkg/status");
    let download = || {
        Command::new("apt-get")
            .args(["-q", "-y", "--download-only", "--no-install-recommends"])
            .arg("-o")
            .arg(format!("Dir::State::status={}", status.display()))
            .arg("-o")
            .arg(format!("Dir::Cache::archives={}", tmp.display()))
            .args(["-o", "APT::Sandbox::User=root", "install", "supervisor"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
    };
    note("downloading supervisor and its dependencies for the peer node (once)");
    let mut out = download().map_err(|e| format!("apt-get: {e}"))?;
    if !out.status.success() {
        note("apt-get download failed; apt-get update, then once more");
        let _ = Command::new("apt-get")
            .args(["-q", "update"])
            .stdin(Stdio::null())
            .output();
        out = download().map_err(|e| format!("apt-get: {e}"))?;
    }
    if !out.status.success() {
        return Err(format!(
            "apt-get --download-only supervisor: {}",
            describe(&out)
        ));
    }
    let _ = std::fs::remove_dir_all(tmp.join("partial"));
    let _ = std::fs::remove_file(tmp.join("lock"));
    std::fs::write(tmp.join("complete"), "").map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &dir).map_err(|e| format!("rename {}: {e}", dir.display()))?;
    Ok(dir)
}

fn footprint(fleet: &Fleet, params: Params) -> Result<Scenario, String> {
    let idle = params.idle_seconds;
    let debs = supervisor_debs(fleet.rootfs());
    if let Err(e) = &debs {
        note(&format!("the peer is skipped: {e}"));
    }
    let mut opts = vec![node_opts("idle")?];
    if let Ok(dir) = &debs {
        opts.push(node_opts("peer")?.bind_ro(dir, DEBS_IN_NODE));
    }
    let mut nodes = fleet.boot_many(opts).into_iter();
    if let Some(n) = nodes.as_slice().first() {
        note_systemd_version(n);
    }
    let idle_node = nodes.next().ok_or("no node")?;
    let peer_node = nodes.next();

    let setup = probe(
        &idle_node,
        &["setup", &format!("n={IDLE_DAEMONSETS}")],
        Duration::from_secs(120),
    )?;
    let mut peer = Json::Null;
    let mut install_s = None;
    if let Some(node) = &peer_node {
        let t = Instant::now();
        let out = node.exec_timeout(
            &[
                "/bin/sh",
                "-c",
                // apt orders the pre-dependencies (python3-minimal) that a plain
                // `dpkg -i *.deb` trips over; every package is local, no list is needed.
                "DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends \"$1\"/*.deb",
                "sh",
                DEBS_IN_NODE,
            ],
            Duration::from_secs(300),
        );
        if !out.status.success() {
            return Err(format!(
                "dpkg -i supervisor in the peer node: {}",
                describe(&out)
            ));
        }
        install_s = Some(t.elapsed().as_secs_f64());
        note(&format!(
            "supervisor installed in the peer node in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        peer = probe(
            node,
            &["supervisor", &format!("n={IDLE_DAEMONSETS}")],
            Duration::from_secs(120),
        )?;
    }
    // Both idle windows at once: neither node does anything else meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    note(&format!("{idle} s idle window"));
    let seconds = format!("seconds={idle}");
    let window = Duration::from_secs(idle + 60);
    let (agent_idle, sv_idle) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            probe(
                &idle_node,
                &["idle", "unit=hostsetd.service", &seconds],
                window,
            )
        });
        let b = peer_node.as_ref().map(|n| {
            let seconds = &seconds;
            s.spawn(move || probe(n, &["idle", "unit=supervisor.service", seconds], window))
        });
        (
            a.join().expect("probe thread"),
            b.map(|h| h.join().expect("probe thread")),
        )
    });
    drop(idle_node);
    drop(peer_node);
    let agent_idle = agent_idle?;
    let sv_idle = sv_idle.transpose()?;

    let mut rows = Vec::new();
    let g = "4. footprint";
    let kb = |v: &Json, k: &str| v["after"][k].as_f64().unwrap_or(f64::NAN);
    let a_rss = kb(&agent_idle, "vm_rss_kb");
    let a_pss = kb(&agent_idle, "pss_kb");
    let sv_rss = sv_idle.as_ref().map(|v| kb(v, "vm_rss_kb"));
    let sv_pss = sv_idle.as_ref().map(|v| kb(v, "pss_kb"));

    let mut r = Row::new(
        g,
        "agent/footprint/rss",
        &format!("hostsetd VmRSS, {IDLE_DAEMONSETS} daemonsets, idle (release build)"),
        kb_text(a_rss),
    );
    r.target = Some(Target {
        metric: "rss_kb",
        max: TARGET_RSS_KB,
        text: "< 8 MiB".into(),
    });
    r.value = Some(a_rss);
    if let Some(sv) = sv_rss {
        r.baseline = Some("supervisord VmRSS".into());
        r.baseline_shown = Some(kb_text(sv));
        r.ratio = Some(a_rss / sv);
    }
    r.extra = agent_idle["after"].clone();
    rows.push(r);

    let mut r = Row::new(
        g,
        "agent/footprint/pss",
        "hostsetd Pss (smaps_rollup)",
        kb_text(a_pss),
    );
    if let Some(sv) = sv_pss {
        r.baseline = Some("supervisord Pss".into());
        r.baseline_shown = Some(kb_text(sv));
        r.ratio = Some(a_pss / sv);
    }
    rows.push(r);

    // What RSS is made of: the agent's own (anonymous) memory against the pages of its
    // binary and of the shared libraries (clean, file-backed).
    let a_anon = kb(&agent_idle, "anon_kb");
    let by_kind = &agent_idle["after"]["rss_kb_by_kind"];
    let part = |k: &str| by_kind[k].as_f64().unwrap_or(0.0);
    let mut r = Row::new(
        g,
        "agent/footprint/anon",
        "hostsetd anonymous memory (heap, stacks) [RSS of its binary's pages / libraries]",
        format!(
            "{} [{} / {}]",
            kb_text(a_anon),
            kb_text(part("binary")),
            kb_text(part("libraries"))
        ),
    );
    if let Some(sv) = &sv_idle {
        let sv_anon = kb(sv, "anon_kb");
        r.baseline = Some("supervisord anonymous".into());
        r.baseline_shown = Some(kb_text(sv_anon));
        r.ratio = Some(a_anon / sv_anon);
    }
    r.extra = json!({ "rss_kb_by_kind": by_kind });
    rows.push(r);

    if let Some(sv) = sv_rss {
        let mut r = Row::new(
            g,
            "agent/footprint/rss_share_of_supervisord",
            &format!("hostsetd RSS / supervisord RSS, same {IDLE_DAEMONSETS} programs"),
            format!("{:.2}", a_rss / sv),
        );
        r.target = Some(Target {
            metric: "ratio",
            max: TARGET_RSS_SHARE_OF_SUPERVISORD,
            text: "≤ 1/5".into(),
        });
        r.value = Some(a_rss / sv);
        rows.push(r);
    }

    let cpu = |v: &Json| v["cpu_percent_of_core"].as_f64().unwrap_or(f64::NAN);
    let cpu_s = |v: &Json| v["cpu_seconds"].as_f64().unwrap_or(f64::NAN);
    let mut r = Row::new(
        g,
        "agent/footprint/cpu",
        &format!("hostsetd CPU over {idle} s idle (% of one core; CPU seconds)"),
        format!("{:.3}% ({:.3} s)", cpu(&agent_idle), cpu_s(&agent_idle)),
    );
    r.target = Some(Target {
        metric: "cpu_percent",
        max: TARGET_CPU_PERCENT,
        text: "< 0.1% of a core".into(),
    });
    r.value = Some(cpu(&agent_idle));
    if let Some(sv) = &sv_idle {
        r.baseline = Some("supervisord".into());
        r.baseline_shown = Some(format!("{:.3}% ({:.3} s)", cpu(sv), cpu_s(sv)));
        r.ratio = Some(cpu(&agent_idle) / cpu(sv));
    }
    rows.push(r);

    let wake = |v: &Json| v["wakeups_per_minute"].as_f64().unwrap_or(f64::NAN);
    let mut r = Row::new(
        g,
        "agent/footprint/wakeups",
        &format!("hostsetd wake-ups (context switches, all threads) per minute, {idle} s idle"),
        format!("{:.1}", wake(&agent_idle)),
    );
    r.target = Some(Target {
        metric: "wakeups_per_minute",
        max: TARGET_WAKEUPS_PER_MINUTE,
        text: "≤ 30/min (10 s sample + 15 s watchdog only)".into(),
    });
    r.value = Some(wake(&agent_idle));
    r.extra = json!({
        "per_thread": agent_idle["per_thread"],
        "supervisord_per_thread": sv_idle.as_ref().map(|v| v["per_thread"].clone()),
    });
    if let Some(sv) = &sv_idle {
        r.baseline = Some("supervisord".into());
        r.baseline_shown = Some(format!("{:.1}", wake(sv)));
        r.ratio = Some(wake(&agent_idle) / wake(sv));
    }
    rows.push(r);

    let g = "5. peer";
    if let Some(sv) = peer.as_object() {
        let all = sv["all_running_ms"].as_f64().unwrap_or(f64::NAN);
        let mut r = Row::new(
            g,
            "agent/peer/supervisord_50_running",
            &format!(
                "supervisord: {IDLE_DAEMONSETS} programs by config + `supervisorctl update` → all RUNNING (update returned)"
            ),
            format!(
                "{} ({})",
                ms_text(all),
                ms_text(sv["update_returned_ms"].as_f64().unwrap_or(f64::NAN))
            ),
        );
        r.median_ms = Some(all);
        r.extra = json!({ "install_seconds": install_s });
        rows.push(r);
        let mut r = Row::new(
            g,
            "agent/peer/hostset_50_running",
            &format!(
                "hostset: {IDLE_DAEMONSETS} spec files renamed into a running agent's directory → all active"
            ),
            ms_text(setup["all_active_ms"].as_f64().unwrap_or(f64::NAN)),
        );
        r.baseline = Some("supervisord".into());
        r.baseline_shown = Some(ms_text(all));
        r.ratio = setup["all_active_ms"].as_f64().map(|h| h / all);
        rows.push(r);
    }
    Ok(Scenario {
        rows,
        raw: json!({
            "setup": setup,
            "agent_idle": agent_idle,
            "supervisor": peer,
            "supervisor_idle": sv_idle,
            "supervisor_install_seconds": install_s,
        }),
    })
}
