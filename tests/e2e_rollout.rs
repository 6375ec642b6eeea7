//! Fleet-wide rolling updates on real systemd nodes: four systemd-nspawn nodes run hostsetd,
//! the real coordinator runs on host loopback, the operator uses the real CLI.
//!
//! A sampler on the host reads every node's units (`systemctl` in each node) all along and
//! records, at each instant, how many nodes had no active daemon (maxUnavailable) and which
//! nodes ever ran two at once (maxSurge). Phases, on one fleet:
//!
//! 1. maxUnavailable=1: v1 → v2; never more than one node without an active daemon; the
//!    rollout completes (`hostset rollout status` exits 0).
//! 2. pause: a new revision waits while paused (no node changes); resume completes it.
//! 3. undo: `hostset rollout undo` returns every node to the previous revision.
//! 4. maxSurge=1 (maxUnavailable=0, minReadySeconds=2): old and new overlap on every node and
//!    no node is ever without an active daemon.
//! 5. a crash-looping revision halts after the first node (progress deadline 8 s), the
//!    others keep their daemon (same MainPID); with autoRollback the fleet is back on the last
//!    good revision and `rollout status` exits 1.
//! 6. a powered-off node is skipped after `hostset.io/skip-silent-node-seconds` and the
//!    rollout completes on the others.
//! 7. OnDelete: nothing is replaced until a unit is stopped by hand.
//!
//! Needs root, systemd-nspawn and the test rootfs (`.ci/run` installs them);
//! `HOSTSET_SKIP_E2E=1` skips.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::coordinator::{Coordinator, agent_node, free_port, start_agent, write_spec};
use support::fleet::{Fleet, Node, notice, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// A daemonset running `sleep` with `VERSION=version` (each version a revision).
fn spec(name: &str, version: &str, strategy: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\n{extra}selector.matchLabels = {{ app = \"{name}\" }}\n\
         template.labels = {{ app = \"{name}\" }}\ncommand = [\"/bin/sleep\", \"infinity\"]\n\
         env = {{ VERSION = \"{version}\" }}\nterminationGracePeriodSeconds = 2\n\
         updateStrategy = {strategy}\n"
    )
}

/// Each node's active units of daemonset `ds`, with the VERSION each runs.
fn units_of(node: &Node, ds: &str) -> Vec<(String, String)> {
    let out = node.sh(&format!(
        "for u in $(systemctl list-units --plain --no-legend --state=active 'hostset-{ds}*' \
         | awk '{{print $1}}'); do echo \"$u $(systemctl show -p Environment --value $u \
         | tr ' ' '\\n' | sed -n 's/^VERSION=//p')\"; done"
    ));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next().unwrap_or("").to_string()))
        })
        .collect()
}

/// What the sampler saw.
#[derive(Default, Debug)]
struct Seen {
    /// The most nodes without an active daemon at one instant.
    max_without: usize,
    /// Nodes seen running two units of the daemonset at once.
    overlapped: BTreeSet<String>,
    samples: usize,
}

/// Run `f` while a thread samples the nodes' units of `ds`; what `f` returned and what the
/// sampler saw.
fn sampling<R>(nodes: &[Node], ds: &str, f: impl FnOnce() -> R) -> (R, Seen) {
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let r = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Acquire) {
                let mut without = 0;
                let mut both = Vec::new();
                for n in nodes {
                    let units = units_of(n, ds);
                    if units.is_empty() {
                        without += 1;
                    }
                    if units.len() >= 2 {
                        both.push(n.name().to_string());
                    }
                }
                let mut o = seen.lock().unwrap();
                o.max_without = o.max_without.max(without);
                o.overlapped.extend(both);
                o.samples += 1;
            }
        });
        let r = f();
        stop.store(true, Ordering::Release);
        r
    });
    (r, seen.into_inner().unwrap())
}

/// Every node runs exactly one unit of `ds`, at `version`.
fn all_at(nodes: &[Node], ds: &str, version: &str) -> bool {
    nodes.iter().all(|n| {
        let u = units_of(n, ds);
        u.len() == 1 && u[0].1 == version
    })
}

/// Wait until the coordinator counts `nodes` nodes with `ds` updated and available: it has
/// read the spec and the agents reported.
fn wait_settled(c: &Coordinator, ds: &str, nodes: u64) {
    let mut last = Value::Null;
    let ok = wait_until(WAIT, || {
        let out = c.cli(false, &["get", "daemonsets", "-o", "json"]);
        last = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        last.as_array().is_some_and(|l| {
            l.iter().any(|d| {
                d["name"] == ds
                    && d["status"]["updatedNumberScheduled"] == nodes
                    && d["status"]["numberAvailable"] == nodes
            })
        })
    });
    if let Err(e) = ok {
        panic!("{ds} not settled: {e}: {last:#}\n{}", c.log());
    }
}

fn wait_all_at(c: &Coordinator, nodes: &[Node], ds: &str, version: &str) {
    if let Err(e) = wait_until(WAIT, || all_at(nodes, ds, version)) {
        let now: BTreeMap<String, Vec<(String, String)>> = nodes
            .iter()
            .map(|n| (n.name().to_string(), units_of(n, ds)))
            .collect();
        panic!(
            "{ds}: not every node at {version}: {e}: {now:?}\n{}\n--- coordinator ---\n{}",
            detail(c, ds),
            c.log()
        );
    }
}

fn detail(c: &Coordinator, ds: &str) -> Value {
    c.json(&["describe", "daemonset", ds, "-o", "json"])
}

/// `hostset rollout status NAME --timeout 60s`: (exit code, output).
fn rollout_status(c: &Coordinator, ds: &str) -> (i32, String) {
    let out = c.cli(false, &["rollout", "status", ds, "--timeout", "60s"]);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn operator(c: &Coordinator, args: &[&str]) -> String {
    let out = c.cli(true, args);
    assert!(
        out.status.success(),
        "hostset {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn main_pids(nodes: &[Node], ds: &str) -> BTreeMap<String, String> {
    nodes
        .iter()
        .map(|n| {
            (
                n.name().to_string(),
                n.unit_property(&format!("hostset-{ds}.service"), "MainPID"),
            )
        })
        .collect()
}

#[test]
fn rolling_updates_across_a_real_fleet() {
    let Some(fleet) = Fleet::new("rollout_fleet") else {
        return;
    };
    let started = Instant::now();
    let specs = fleet.shared_dir("specs");
    let conf = fleet.shared_dir("coordinator");
    for d in [&specs, &conf] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let one = "{ type = \"RollingUpdate\", maxUnavailable = 1 }";
    write_spec(&specs, "roll.toml", &spec("roll", "1", one, ""));

    let port = free_port();
    let coordinator = Coordinator::start(&conf, &specs, port, 3);
    let agent_toml = conf.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[coordinator]\nurl = \"http://127.0.0.1:{port}\"\ntoken_file = \"/etc/hostset/token\"\nheartbeat_interval = 1\n"
        ),
    )
    .unwrap();
    let names = ["r1", "r2", "r3", "r4"];
    let nodes = fleet.boot_many(
        names
            .iter()
            .map(|n| agent_node(n, &specs, &agent_toml))
            .collect(),
    );
    for n in &nodes {
        start_agent(n);
    }
    wait_all_at(&coordinator, &nodes, "roll", "1");
    wait_settled(&coordinator, "roll", 4);

    // 1. maxUnavailable=1.
    let phase = Instant::now();
    let ((code, out), seen) = sampling(&nodes, "roll", || {
        write_spec(&specs, "roll.toml", &spec("roll", "2", one, ""));
        let r = rollout_status(&coordinator, "roll");
        wait_all_at(&coordinator, &nodes, "roll", "2");
        r
    });
    assert_eq!(code, 0, "rollout status: {out}");
    assert!(out.contains("successfully rolled out"), "{out}");
    assert!(
        seen.max_without <= 1,
        "maxUnavailable=1 but {} nodes were without a daemon at once ({seen:?})",
        seen.max_without
    );
    notice(&format!(
        "maxUnavailable=1 over 4 nodes: {:.1}s, {} samples, at most {} node(s) without a daemon",
        phase.elapsed().as_secs_f64(),
        seen.samples,
        seen.max_without
    ));

    // 2. pause / resume.
    operator(&coordinator, &["rollout", "pause", "roll"]);
    write_spec(&specs, "roll.toml", &spec("roll", "3", one, ""));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        all_at(&nodes, "roll", "2"),
        "paused, yet a node moved: {}",
        detail(&coordinator, "roll")
    );
    let d = detail(&coordinator, "roll");
    assert_eq!(d["daemonset"]["rollout"]["paused"], true, "{d:#}");
    assert_eq!(
        d["daemonset"]["rollout"]["progress"]["waiting"]
            .as_array()
            .map(Vec::len),
        Some(4),
        "{d:#}"
    );
    let status = nodes[0].exec_ok(&["hostset", "status", "-o", "json"]);
    assert!(
        status.contains("paused"),
        "the node says why it waits: {status}"
    );
    operator(&coordinator, &["rollout", "resume", "roll"]);
    wait_all_at(&coordinator, &nodes, "roll", "3");

    // 3. undo: back to version 2 on every node; history lists the revisions.
    let history = String::from_utf8_lossy(
        &coordinator
            .cli(false, &["rollout", "history", "roll"])
            .stdout,
    )
    .into_owned();
    assert!(
        history.contains("(current)") && history.lines().count() >= 4,
        "{history}"
    );
    operator(&coordinator, &["rollout", "undo", "roll"]);
    wait_all_at(&coordinator, &nodes, "roll", "2");
    let d = detail(&coordinator, "roll");
    assert_eq!(
        d["daemonset"]["rollout"]["pinnedRevision"], 4,
        "revision 2 again, as revision 4: {d:#}"
    );
    let (code, out) = rollout_status(&coordinator, "roll");
    assert_eq!(code, 0, "{out}");

    // 4. maxSurge=1: overlap on every node, never a node without a daemon.
    let surge = "{ type = \"RollingUpdate\", maxUnavailable = 0, maxSurge = 1 }";
    write_spec(
        &specs,
        "surge.toml",
        &spec("surge", "1", surge, "minReadySeconds = 2\n"),
    );
    wait_all_at(&coordinator, &nodes, "surge", "1");
    wait_settled(&coordinator, "surge", 4);
    let phase = Instant::now();
    let ((code, out), seen) = sampling(&nodes, "surge", || {
        write_spec(
            &specs,
            "surge.toml",
            &spec("surge", "2", surge, "minReadySeconds = 2\n"),
        );
        let r = rollout_status(&coordinator, "surge");
        wait_all_at(&coordinator, &nodes, "surge", "2");
        r
    });
    assert_eq!(code, 0, "{out}");
    assert_eq!(seen.max_without, 0, "a node was without a daemon: {seen:?}");
    assert_eq!(
        seen.overlapped.len(),
        4,
        "old and new overlap on every node: {seen:?}"
    );
    notice(&format!(
        "maxSurge=1 over 4 nodes: {:.1}s, overlap seen on {:?}",
        phase.elapsed().as_secs_f64(),
        seen.overlapped
    ));

    // 5. A crash-looping revision halts after the first node and rolls back.
    // minReadySeconds: a daemon that crashes right after starting is active for a moment;
    // like Kubernetes, only minReadySeconds tells that apart from a good start.
    let guarded = "annotations = { \"hostset.io/progress-deadline-seconds\" = \"8\", \
                   \"hostset.io/auto-rollback\" = \"true\" }\nminReadySeconds = 3\n";
    let before = main_pids(&nodes, "roll");
    let crashing = spec("roll", "4", one, guarded).replace(
        "command = [\"/bin/sleep\", \"infinity\"]",
        "command = [\"/bin/sh\", \"-c\", \"exit 3\"]",
    );
    // First the annotations alone (same template: no new revision, nothing restarts).
    write_spec(&specs, "roll.toml", &spec("roll", "2", one, guarded));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        main_pids(&nodes, "roll"),
        before,
        "annotations restarted daemons"
    );
    write_spec(&specs, "roll.toml", &crashing);
    let halted = wait_until(WAIT, || {
        detail(&coordinator, "roll")["daemonset"]["rollout"]["rolledBack"].is_object()
    });
    let d = detail(&coordinator, "roll");
    assert!(halted.is_ok(), "no rollback: {d:#}\n{}", coordinator.log());
    let rb = &d["daemonset"]["rollout"]["rolledBack"];
    assert_eq!(rb["hosts"].as_array().map(Vec::len), Some(1), "{rb:#}");
    wait_all_at(&coordinator, &nodes, "roll", "2");
    let after = main_pids(&nodes, "roll");
    let restarted: Vec<&String> = before
        .iter()
        .filter(|(n, pid)| after.get(*n) != Some(pid))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        restarted.len(),
        1,
        "only the first node's daemon was replaced (and rolled back): {restarted:?}"
    );
    let (code, out) = rollout_status(&coordinator, "roll");
    assert_eq!(code, 1, "a rolled-back rollout is not a success: {out}");
    assert!(out.contains("rollback"), "{out}");

    // 6. A powered-off node is skipped after the timeout.
    let skip = "annotations = { \"hostset.io/skip-silent-node-seconds\" = \"6\" }\n";
    write_spec(&specs, "skip.toml", &spec("skip", "1", one, skip));
    wait_all_at(&coordinator, &nodes, "skip", "1");
    wait_settled(&coordinator, "skip", 4);
    nodes[3].stop();
    let alive = &nodes[..3];
    write_spec(&specs, "skip.toml", &spec("skip", "2", one, skip));
    wait_all_at(&coordinator, alive, "skip", "2");
    let (code, out) = rollout_status(&coordinator, "skip");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("skipped") && out.contains("r4"), "{out}");

    // 7. OnDelete: replaced only when stopped by hand.
    let on_delete = "{ type = \"OnDelete\" }";
    write_spec(&specs, "od.toml", &spec("od", "1", on_delete, ""));
    wait_all_at(&coordinator, alive, "od", "1");
    wait_settled(&coordinator, "od", 3);
    write_spec(&specs, "od.toml", &spec("od", "2", on_delete, ""));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        all_at(alive, "od", "1"),
        "OnDelete replaced a running daemon"
    );
    alive[0].exec_ok(&["systemctl", "stop", "hostset-od.service"]);
    wait_until(WAIT, || {
        let u = units_of(&alive[0], "od");
        u.len() == 1 && u[0].1 == "2"
    })
    .unwrap_or_else(|e| panic!("the stopped unit did not come back at 2: {e}"));
    assert!(
        all_at(&alive[1..], "od", "1"),
        "OnDelete replaced another node"
    );

    notice(&format!(
        "rollout e2e: maxUnavailable, pause/resume, undo, surge, halt + rollback, skip, OnDelete in {:.0}s",
        started.elapsed().as_secs_f64()
    ));
}
