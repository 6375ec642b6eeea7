//! The end-to-end harness itself, on real systemd: three nodes boot at once from the shared
//! rootfs, each with its own systemd, system bus and cgroups, sharing one read-only spec
//! directory; transient units on one node are independent of the others; teardown leaves
//! no process and no cgroup behind.
//!
//! Needs root and systemd-nspawn (`.ci/run` installs it); `HOSTSET_SKIP_E2E=1` skips.

mod support;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::fleet::{Fleet, KEEP_ENV, Node, NodeOpts, notice};

const SPECS: &str = "/etc/hostset/daemonsets.d";

/// Whether any process on the host still belongs to a node: its nspawn PID alive as
/// systemd-nspawn, or any process mentioning its machine name.
fn leftovers(nspawn_pids: &[u32], machines: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for pid in nspawn_pids {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("systemd-nspawn") {
            found.push(format!("nspawn pid {pid} still runs"));
        }
    }
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        for machine in machines {
            if cmdline.contains(&format!("--machine={machine}")) {
                found.push(format!("pid {pid}: {cmdline}"));
            }
        }
    }
    found
}

fn smoke_unit_state(node: &Node) -> (String, String) {
    let show = node.systemctl_show("smoke.service", &["LoadState", "ActiveState"]);
    (show["LoadState"].clone(), show["ActiveState"].clone())
}

#[test]
fn three_nodes_boot_in_parallel_and_stay_independent() {
    let Some(fleet) = Fleet::new("three_nodes") else {
        return;
    };

    // One spec directory for the whole fleet, bound read-only into every node.
    let specs = fleet.shared_dir("specs");
    fs::write(
        specs.join("log-collector.toml"),
        "name = \"log-collector\"\n",
    )
    .unwrap();

    let boot_start = Instant::now();
    let nodes = fleet.boot_many(
        ["node-a", "node-b", "node-c"]
            .into_iter()
            .map(|name| NodeOpts::new(name).bind_ro(&specs, SPECS))
            .collect(),
    );
    let boot_all = boot_start.elapsed();
    let per_node: Vec<String> = nodes
        .iter()
        .map(|n| format!("{} {:.2?}", n.name(), n.booted_in().unwrap()))
        .collect();
    notice(&format!(
        "booted 3 nodes in {boot_all:.2?} ({})",
        per_node.join(", ")
    ));
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };

    // Every node is a systemd machine of its own: host name, machine ID, PID 1.
    let mut machine_ids = HashSet::new();
    for node in &nodes {
        assert_eq!(node.exec_ok(&["hostname"]).trim(), node.name());
        assert_eq!(node.exec_ok(&["cat", "/proc/1/comm"]).trim(), "systemd");
        let id = node.read_file("/etc/machine-id").unwrap();
        assert_eq!(id.trim().len(), 32, "machine-id of {}: {id:?}", node.name());
        machine_ids.insert(id);
    }
    assert_eq!(machine_ids.len(), 3, "every node has its own machine ID");

    // The system bus is up (the agent's zbus needs it) and systemd is on it.
    for node in &nodes {
        let out = node.exec(&["test", "-S", "/run/dbus/system_bus_socket"]);
        assert!(
            out.status.success(),
            "{}: no /run/dbus/system_bus_socket",
            node.name()
        );
        let names = node.exec_ok(&["busctl", "--system", "--no-pager", "--no-legend", "list"]);
        assert!(
            names.contains("org.freedesktop.systemd1"),
            "{}: systemd is not on the bus:\n{names}",
            node.name()
        );
    }

    // The shared spec directory: the same files everywhere, read-only in the nodes, and
    // a file the test adds on the host shows up in every node.
    for node in &nodes {
        assert_eq!(
            node.read_file(&format!("{SPECS}/log-collector.toml"))
                .as_deref(),
            Some("name = \"log-collector\"\n")
        );
        let out = node.sh(&format!("echo x > {SPECS}/written-by-node.toml"));
        assert!(
            !out.status.success(),
            "{}: the spec directory is writable",
            node.name()
        );
    }
    fs::write(specs.join("disk-monitor.toml"), "name = \"disk-monitor\"\n").unwrap();
    for node in &nodes {
        assert!(
            node.read_file(&format!("{SPECS}/disk-monitor.toml"))
                .is_some()
        );
    }

    // Files written into one node land in its own overlay only.
    a.write_file("/etc/hostset/node.toml", "name = \"node-a\"\n");
    assert_eq!(
        a.read_file("/etc/hostset/node.toml").as_deref(),
        Some("name = \"node-a\"\n")
    );
    assert_eq!(b.read_file("/etc/hostset/node.toml"), None);

    // A transient unit with resource limits on each node, as the agent will start them.
    for node in &nodes {
        node.exec_ok(&[
            "systemd-run",
            "--unit=smoke",
            "-p",
            "MemoryMax=200M",
            "-p",
            "CPUQuota=10%",
            "/bin/sleep",
            "1000",
        ]);
    }
    let mut main_pids = Vec::new();
    for node in &nodes {
        node.wait_for(
            |n| smoke_unit_state(n).1 == "active",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", node.journal("smoke.service")));
        let show = node.systemctl_show(
            "smoke.service",
            &[
                "MemoryMax",
                "CPUQuotaPerSecUSec",
                "MainPID",
                "FragmentPath",
                "ControlGroup",
            ],
        );
        assert_eq!(show["MemoryMax"], "209715200", "{}: {show:?}", node.name());
        assert_eq!(
            show["CPUQuotaPerSecUSec"],
            "100ms",
            "{}: {show:?}",
            node.name()
        );
        assert_eq!(show["FragmentPath"], "/run/systemd/transient/smoke.service");
        assert_eq!(show["ControlGroup"], "/system.slice/smoke.service");
        let main_pid: u32 = show["MainPID"].parse().unwrap();
        assert!(main_pid > 0, "{}: {show:?}", node.name());
        main_pids.push(main_pid);
    }

    // One cgroup tree per node on the host: each node's smoke.service is a directory of
    // its own, holding that node's sleep only.
    let unit_cgroup = |node: &Node| -> PathBuf {
        node.cgroup_dirs()[0].join("payload/system.slice/smoke.service")
    };
    let mut host_pids = HashSet::new();
    for node in &nodes {
        let procs = fs::read_to_string(unit_cgroup(node).join("cgroup.procs"))
            .unwrap_or_else(|e| panic!("{}: {e}", unit_cgroup(node).display()));
        let pids: Vec<&str> = procs.split_whitespace().collect();
        assert_eq!(pids.len(), 1, "{}: {procs:?}", unit_cgroup(node).display());
        assert!(
            host_pids.insert(pids[0].to_string()),
            "two nodes share a unit cgroup"
        );
        let comm = fs::read_to_string(format!("/proc/{}/comm", pids[0])).unwrap();
        assert_eq!(comm.trim(), "sleep");
    }

    // Stopping the unit on node A leaves B and C alone.
    a.exec_ok(&["systemctl", "stop", "smoke.service"]);
    a.wait_for(
        |n| smoke_unit_state(n).0 == "not-found",
        Duration::from_secs(10),
    )
    .expect("the transient unit is gone from node-a after stop");
    assert!(!unit_cgroup(a).exists(), "node-a's unit cgroup is removed");
    for (node, pid) in [(b, main_pids[1]), (c, main_pids[2])] {
        assert_eq!(
            smoke_unit_state(node),
            ("loaded".into(), "active".into()),
            "{}",
            node.name()
        );
        assert_eq!(
            node.unit_property("smoke.service", "MainPID"),
            pid.to_string()
        );
        assert!(unit_cgroup(node).exists());
    }

    // Teardown: no process and no cgroup directory of the fleet survives.
    let nspawn_pids: Vec<u32> = nodes.iter().map(Node::nspawn_pid).collect();
    let init_pids: Vec<u32> = nodes.iter().map(Node::init_pid).collect();
    let machines: Vec<String> = nodes.iter().map(|n| n.machine_name().to_string()).collect();
    let mut cgroups: Vec<PathBuf> = fleet.cgroup_dirs().to_vec();
    cgroups.extend(nodes.iter().flat_map(|n| n.cgroup_dirs().to_vec()));
    let work_dir = fleet.work_dir().to_path_buf();
    let teardown_start = Instant::now();
    drop(fleet); // stops the nodes in parallel
    drop(nodes);
    notice(&format!(
        "tore down 3 nodes in {:.2?}",
        teardown_start.elapsed()
    ));

    let left = leftovers(&nspawn_pids, &machines);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
    for pid in init_pids {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_ne!(
            comm.trim(),
            "systemd",
            "a node's init (pid {pid}) still runs"
        );
    }
    for dir in &cgroups {
        assert!(!dir.exists(), "cgroup left behind: {}", dir.display());
    }
    if std::env::var(KEEP_ENV).is_err() {
        assert!(
            !work_dir.exists(),
            "work dir left behind: {}",
            work_dir.display()
        );
    }
}

/// A second fleet in the same test binary, running at the same time as the first and
/// using a node name the other also uses: names and cgroups must not collide. Also a
/// writable bind, and an explicit stop while the fleet lives on.
#[test]
fn single_node_with_writable_bind_stops_cleanly() {
    let Some(fleet) = Fleet::new("single_node") else {
        return;
    };
    let out = fleet.shared_dir("out");

    // A project binary bound in as a file, the way agent tests bind hostsetd.
    let node = fleet.boot(
        NodeOpts::new("node-a")
            .bind_rw(&out, "/srv/out")
            .bind_ro(env!("CARGO_BIN_EXE_hostset"), "/usr/bin/hostset"),
    );
    notice(&format!(
        "booted 1 node in {:.2?}",
        node.booted_in().unwrap()
    ));
    node.exec_ok(&["/bin/sh", "-c", "hostname > /srv/out/from-node"]);
    assert_eq!(
        fs::read_to_string(out.join("from-node")).unwrap(),
        "node-a\n"
    );

    // The host-built binary runs in the node and sees the node as "this host".
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/log-collector.toml"),
        out.join("log-collector.toml"),
    )
    .unwrap();
    let eval = node.exec_ok(&[
        "hostset",
        "eval",
        "-o",
        "json",
        "/srv/out/log-collector.toml",
    ]);
    assert!(eval.contains(r#""node":"node-a""#), "{eval}");

    // Binds must not be writable under the node's /tmp (its tmpfiles would clean them).
    let refused = fleet.try_boot(NodeOpts::new("node-b").bind_rw(&out, "/tmp/out"));
    assert!(refused.is_err());

    let dirs: Vec<PathBuf> = node.cgroup_dirs().to_vec();
    assert!(dirs.iter().all(|d| d.join("payload").is_dir()), "{dirs:?}");
    let start = Instant::now();
    node.stop();
    notice(&format!("stopped 1 node in {:.2?}", start.elapsed()));
    assert!(!node.is_running());
    assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?}");
    assert!(fleet.cgroup_dirs().iter().all(|d| d.is_dir()));
    assert!(
        node.console_log().contains("has been shut down"),
        "{}",
        node.console_log()
    );

    // The same name can boot again in the same fleet once the first is gone.
    let again = fleet.boot(NodeOpts::new("node-a"));
    assert_eq!(again.exec_ok(&["hostname"]).trim(), "node-a");
    assert!(Path::new(&format!("/proc/{}", again.init_pid())).exists());
}

/// A node that does not come up fails with the reason and nspawn's output, and leaves
/// nothing behind.
#[test]
fn boot_failures_say_why_and_clean_up() {
    let Some(fleet) = Fleet::new("boot_failures") else {
        return;
    };

    // nspawn itself refuses: a bind source that does not exist.
    let err = fleet
        .try_boot(NodeOpts::new("bad-bind").nspawn_arg("--bind-ro=/nonexistent/hostset:/x"))
        .err()
        .expect("a node with a missing bind source must not boot");
    assert!(err.contains("systemd-nspawn exited early"), "{err}");
    assert!(
        err.contains("/nonexistent/hostset"),
        "nspawn's own message: {err}"
    );

    // systemd does not reach running in time: the node is stopped and reported.
    let err = fleet
        .try_boot(NodeOpts::new("too-slow").boot_timeout(Duration::from_millis(1)))
        .err()
        .expect("no node boots in 1 ms");
    assert!(err.contains("did not boot"), "{err}");
    assert!(err.contains("--- console"), "{err}");

    for name in ["bad-bind", "too-slow"] {
        for dir in fleet.cgroup_dirs() {
            assert!(
                !dir.join(name).exists(),
                "cgroup left behind: {}/{name}",
                dir.display()
            );
        }
    }
}
