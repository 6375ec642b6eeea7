//! hostsetd on real systemd: nodes booted with systemd-nspawn, the agent
//! installed as `units/hostsetd.service` (Type=notify) in each, one spec
//! directory shared by the fleet. Everything is asserted through systemd
//! itself (`systemctl show`), never through the agent's own word.
//!
//! Needs root, systemd-nspawn and the test rootfs (`.ci/run` installs and builds
//! them); `HOSTSET_SKIP_E2E=1` skips.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::coordinator::{start_hostsetd, write_spec};
use support::fleet::{Fleet, Node, NodeOpts, notice};

const SPECS: &str = "/etc/hostset/daemonsets.d";
const WAIT: Duration = Duration::from_secs(15);

/// A node with the agent's binaries and unit bound in, and the fleet's specs.
fn agent_node(name: &str, specs: &Path) -> NodeOpts {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("units/hostsetd.service");
    NodeOpts::new(name)
        .bind_ro(env!("CARGO_BIN_EXE_hostsetd"), "/usr/bin/hostsetd")
        .bind_ro(env!("CARGO_BIN_EXE_hostset"), "/usr/bin/hostset")
        .bind_ro(unit, "/etc/systemd/system/hostsetd.service")
        .bind_ro(specs, SPECS)
}

/// Write the node file and start the agent; returns once it is ready
/// (Type=notify: `systemctl start` waits for READY=1, sent after the first pass).
fn start_agent(node: &Node, node_toml: &str) {
    node.write_file("/etc/hostset/node.toml", node_toml);
    start_hostsetd(node);
}

fn show(node: &Node, unit: &str, props: &[&str]) -> HashMap<String, String> {
    node.systemctl_show(unit, props)
}

fn active(node: &Node, unit: &str) -> bool {
    let s = show(node, unit, &["LoadState", "ActiveState"]);
    s.get("LoadState").is_some_and(|v| v == "loaded")
        && s.get("ActiveState").is_some_and(|v| v == "active")
}

fn absent(node: &Node, unit: &str) -> bool {
    show(node, unit, &["LoadState"])
        .get("LoadState")
        .is_some_and(|v| v == "not-found")
}

fn main_pid(node: &Node, unit: &str) -> String {
    node.unit_property(unit, "MainPID")
}

/// Wait until `cond` holds, failing with the agent's journal when it does not.
fn expect(node: &Node, what: &str, cond: impl FnMut(&Node) -> bool) -> Duration {
    match node.wait_for(cond, WAIT) {
        Ok(d) => d,
        Err(e) => panic!(
            "{}: {what}: {e}\n--- hostsetd journal ---\n{}\n--- status ---\n{}",
            node.name(),
            node.journal("hostsetd"),
            String::from_utf8_lossy(&node.exec(&["hostset", "status"]).stdout)
        ),
    }
}

/// Poll tightly (for reaction-time checks): returns the time until `cond` held.
fn time_until(node: &Node, what: &str, mut cond: impl FnMut(&Node) -> bool) -> Duration {
    let start = Instant::now();
    while !cond(node) {
        assert!(
            start.elapsed() < WAIT,
            "{}: {what}: not within {WAIT:?}\n{}",
            node.name(),
            node.journal("hostsetd")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

const LOG_COLLECTOR: &str = "examples/log-collector.toml";

fn ssd_only(extra: &str) -> String {
    format!(
        "name = \"ssd-only\"\ncommand = [\"/bin/sleep\", \"infinity\"]\n\
         selector.matchLabels = {{ app = \"ssd-only\" }}\ntemplate.labels = {{ app = \"ssd-only\" }}\n\
         nodeSelector = {{ disktype = \"ssd\" }}\n\
         resources.limits = {{ cpu = \"250m\", memory = \"64Mi\" }}\n\
         resources.requests = {{ cpu = \"250m\" }}\n\
         terminationGracePeriodSeconds = 5\n{extra}"
    )
}

#[test]
fn a_fleet_runs_each_daemonset_exactly_where_it_matches() {
    let Some(fleet) = Fleet::new("agent_fleet") else {
        return;
    };
    let specs = fleet.shared_dir("specs");
    std::fs::set_permissions(&specs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log_collector =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(LOG_COLLECTOR)).unwrap();
    write_spec(&specs, "log-collector.toml", &log_collector);
    write_spec(&specs, "ssd-only.toml", &ssd_only(""));

    let nodes = fleet.boot_many(vec![
        agent_node("web-1", &specs),
        agent_node("web-2", &specs),
        agent_node("db-1", &specs),
    ]);
    let (web1, web2, db1) = (&nodes[0], &nodes[1], &nodes[2]);
    start_agent(web1, "labels = { disktype = \"ssd\", role = \"web\" }\n");
    start_agent(web2, "labels = { disktype = \"hdd\", role = \"web\" }\n");
    start_agent(
        db1,
        "labels = { disktype = \"ssd\", role = \"db\" }\n[[taints]]\nkey = \"dedicated\"\nvalue = \"db\"\neffect = \"NoSchedule\"\n",
    );

    // Placement: log-collector on both web nodes (db-1's taint is not tolerated),
    // ssd-only on web-1 only.
    let lc = "hostset-log-collector.service";
    let ssd = "hostset-ssd-only.service";
    expect(web1, "log-collector runs", |n| active(n, lc));
    expect(web1, "ssd-only runs", |n| active(n, ssd));
    expect(web2, "log-collector runs", |n| active(n, lc));
    assert!(absent(web2, ssd), "ssd-only must not run on an hdd node");
    assert!(
        absent(db1, lc) && absent(db1, ssd),
        "nothing tolerates dedicated=db:NoSchedule"
    );

    // The limits, as systemd reports them.
    let p = show(
        web1,
        lc,
        &[
            "MemoryMax",
            "MemoryLow",
            "CPUWeight",
            "TimeoutStopUSec",
            "Slice",
            "BindPaths",
            "BindReadOnlyPaths",
            "Environment",
        ],
    );
    assert_eq!(p["MemoryMax"], "209715200", "limits.memory 200Mi");
    assert_eq!(p["MemoryLow"], "209715200", "requests.memory 200Mi");
    assert_eq!(
        p["CPUWeight"], "4",
        "requests.cpu 100m -> shares 102 -> weight 4"
    );
    assert_eq!(
        p["TimeoutStopUSec"], "30s",
        "terminationGracePeriodSeconds 30"
    );
    assert_eq!(p["Slice"], "hostset.slice");
    assert!(p["BindPaths"].contains("/var/log:/var/log"), "{p:?}");
    assert!(
        p["BindReadOnlyPaths"].contains("/var/lib/docker/containers"),
        "{p:?}"
    );
    assert!(
        p["Environment"].contains("HOSTSET_DAEMONSET=log-collector"),
        "{p:?}"
    );
    let p = show(
        web1,
        ssd,
        &[
            "CPUQuotaPerSecUSec",
            "CPUWeight",
            "MemoryMax",
            "TimeoutStopUSec",
        ],
    );
    assert_eq!(p["CPUQuotaPerSecUSec"], "250ms", "limits.cpu 250m");
    assert_eq!(
        p["CPUWeight"], "10",
        "requests.cpu 250m -> shares 256 -> weight 10"
    );
    assert_eq!(p["MemoryMax"], "67108864");
    assert_eq!(p["TimeoutStopUSec"], "5s");

    // A label change adds within a second, and removes within a second.
    web2.write_file(
        "/etc/hostset/node.toml",
        "labels = { disktype = \"ssd\", role = \"web\" }\n",
    );
    let added = time_until(web2, "ssd-only starts after the label change", |n| {
        active(n, ssd)
    });
    web2.write_file(
        "/etc/hostset/node.toml",
        "labels = { disktype = \"hdd\", role = \"web\" }\n",
    );
    let removed = time_until(web2, "ssd-only goes after the label change", |n| {
        absent(n, ssd)
    });
    notice(&format!(
        "label change to unit active: {added:?}; to unit gone: {removed:?}"
    ));
    assert!(
        added < Duration::from_secs(1),
        "label change acted on in {added:?}"
    );
    assert!(
        removed < Duration::from_secs(1),
        "label removal acted on in {removed:?}"
    );

    // `hostset node` edits the file the agent watches.
    let out = web2.exec(&["hostset", "node", "label", "--overwrite", "disktype=ssd"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    expect(web2, "ssd-only starts after hostset node label", |n| {
        active(n, ssd)
    });

    // An untolerated NoExecute taint evicts; NoSchedule would not.
    let pid = main_pid(web2, lc);
    web2.exec_ok(&["hostset", "node", "taint", "maintenance=now:NoSchedule"]);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        main_pid(web2, lc),
        pid,
        "NoSchedule keeps the running daemon"
    );
    web2.exec_ok(&["hostset", "node", "taint", "maintenance=now:NoExecute"]);
    expect(web2, "NoExecute evicts log-collector", |n| absent(n, lc));

    // Cascade: removing the spec stops its units on every node.
    std::fs::remove_file(specs.join("log-collector.toml")).unwrap();
    expect(web1, "log-collector stops after its spec is removed", |n| {
        absent(n, lc)
    });
    assert!(active(web1, ssd), "other daemonsets are untouched");

    // Status reads like kubectl/systemctl, and says why not.
    let out = db1.exec_ok(&["hostset", "status"]);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.contains("taint dedicated=db:NoSchedule is not tolerated"),
        "{out}"
    );
}

#[test]
fn lifecycle_on_one_node_restart_crash_typo_orphan_and_ownership() {
    let Some(fleet) = Fleet::new("agent_lifecycle") else {
        return;
    };
    let specs = fleet.shared_dir("specs");
    std::fs::set_permissions(&specs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let web = |extra: &str| {
        format!(
            "name = \"web\"\ncommand = [\"/bin/sleep\", \"infinity\"]\n\
             selector.matchLabels = {{ app = \"web\" }}\ntemplate.labels = {{ app = \"web\" }}\n{extra}"
        )
    };
    write_spec(&specs, "web.toml", &web(""));
    let node = fleet.boot(agent_node("n1", &specs));
    start_agent(&node, "labels = { role = \"web\" }\n");
    let unit = "hostset-web.service";
    expect(&node, "web runs", |n| active(n, unit));
    let pid = main_pid(&node, unit);

    // Agent restart: the daemon is adopted, not restarted.
    node.exec_ok(&["systemctl", "restart", "hostsetd"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        main_pid(&node, unit),
        pid,
        "an agent restart must not restart daemons"
    );
    // Agent stop: the daemon keeps running.
    node.exec_ok(&["systemctl", "stop", "hostsetd"]);
    assert!(
        active(&node, unit),
        "stopping the agent leaves the daemons running"
    );
    node.exec_ok(&["systemctl", "start", "hostsetd"]);
    assert_eq!(main_pid(&node, unit), pid);

    // kill -9: systemd restarts the daemon; the agent reports the restart.
    node.exec_ok(&["kill", "-9", &pid]);
    expect(&node, "web restarted after kill -9", |n| {
        let p = n.systemctl_show(unit, &["MainPID", "NRestarts", "ActiveState"]);
        p["ActiveState"] == "active"
            && p["MainPID"] != pid
            && p["MainPID"] != "0"
            && p["NRestarts"] == "1"
    });
    let pid = main_pid(&node, unit);
    let status = node.exec_ok(&["hostset", "status", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["daemonsets"][0]["restarts"], 1, "{status}");

    // A typo keeps the running daemon (last-known-good) and is reported.
    write_spec(&specs, "web.toml", &web("[[toleration]]\nkey = \"x\"\n"));
    expect(&node, "the typo is reported", |n| {
        String::from_utf8_lossy(&n.exec(&["hostset", "status"]).stderr)
            .contains("unknown field \"toleration\"")
    });
    assert_eq!(
        main_pid(&node, unit),
        pid,
        "an invalid spec must not touch the daemon"
    );
    // ... even across an agent restart, when no valid version is known.
    node.exec_ok(&["systemctl", "restart", "hostsetd"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        main_pid(&node, unit),
        pid,
        "a broken file at agent start holds its unit"
    );

    // A spec file others can write is refused (anyone could run code as root).
    write_spec(&specs, "web.toml", &web(""));
    write_spec(&specs, "other.toml", &web("").replace("web", "other"));
    std::fs::set_permissions(
        specs.join("other.toml"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    expect(&node, "the writable file is refused", |n| {
        String::from_utf8_lossy(&n.exec(&["hostset", "status"]).stderr)
            .contains("writable by group/others")
    });
    assert!(absent(&node, "hostset-other.service"));
    // ... and so is a file not owned by root.
    std::fs::set_permissions(
        specs.join("other.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::os::unix::fs::chown(specs.join("other.toml"), Some(1000), Some(1000)).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        absent(&node, "hostset-other.service"),
        "a spec not owned by root must not run"
    );
    std::fs::remove_file(specs.join("other.toml")).unwrap();

    // Orphan on delete, then adoption by the same spec without a restart.
    write_spec(
        &specs,
        "web.toml",
        &web("annotations = { \"hostset.io/orphan-on-delete\" = \"true\" }\n"),
    );
    std::thread::sleep(Duration::from_millis(700));
    let pid = main_pid(&node, unit);
    std::fs::remove_file(specs.join("web.toml")).unwrap();
    expect(&node, "web becomes an orphan", |n| {
        n.unit_property(unit, "Description").contains("orphan")
    });
    assert_eq!(main_pid(&node, unit), pid, "an orphan keeps running");
    node.exec_ok(&["systemctl", "restart", "hostsetd"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        active(&node, unit),
        "a restarted agent leaves the orphan alone"
    );
    write_spec(
        &specs,
        "web.toml",
        &web("annotations = { \"hostset.io/orphan-on-delete\" = \"true\" }\n"),
    );
    expect(&node, "web is adopted back", |n| {
        !n.unit_property(unit, "Description").contains("orphan")
    });
    assert_eq!(main_pid(&node, unit), pid, "adoption does not restart");
}

#[test]
fn dollar_and_semicolon_arguments_survive_daemon_reload() {
    let Some(fleet) = Fleet::new("agent_reload") else {
        return;
    };
    let specs = fleet.shared_dir("specs");
    std::fs::set_permissions(&specs, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The shell prints its arguments verbatim; systemd 252 would expand $HOME
    // and mangle `;` after a daemon-reload if they were in ExecStart.
    write_spec(
        &specs,
        "echo.toml",
        "name = \"echo\"\n\
         command = [\"/bin/sh\", \"-c\", \"printf '%s|' \\\"$0\\\" \\\"$@\\\" > /run/echo.out; exec sleep infinity\", \"cost: $5; ${HOME} $$ %n\", \"a;b\"]\n\
         selector.matchLabels = { app = \"echo\" }\ntemplate.labels = { app = \"echo\" }\n",
    );
    let node = fleet.boot(agent_node("n1", &specs));
    start_agent(&node, "");
    let unit = "hostset-echo.service";
    expect(&node, "echo runs", |n| active(n, unit));
    let expected = "cost: $5; ${HOME} $$ %n|a;b|";
    expect(&node, "echo wrote its arguments", |n| {
        n.read_file("/run/echo.out").is_some()
    });
    assert_eq!(node.read_file("/run/echo.out").unwrap(), expected);

    // A package upgrade runs daemon-reload; the next restart must see the same argv.
    node.remove_file("/run/echo.out");
    node.exec_ok(&["systemctl", "daemon-reload"]);
    let pid = main_pid(&node, unit);
    node.exec_ok(&["kill", "-9", &pid]);
    expect(&node, "echo restarted after the reload", |n| {
        n.read_file("/run/echo.out").is_some() && main_pid(n, unit) != pid
    });
    assert_eq!(
        node.read_file("/run/echo.out").unwrap(),
        expected,
        "arguments mangled by daemon-reload"
    );
    assert!(active(&node, unit));
}
