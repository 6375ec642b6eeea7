//! The coordinator with real agents: three systemd-nspawn nodes run hostsetd
//! (its unit file, real systemd), the coordinator runs on the host on
//! loopback (the nodes share the host's network), and the fleet's numbers are
//! read with the real CLI: `hostset get daemonsets -o json`, as an operator
//! would. Labels change, a node powers off and comes back, the coordinator
//! restarts, and bad requests are refused without changing anything.
//!
//! Needs root, systemd-nspawn and the test rootfs (`.ci/run` installs them);
//! `HOSTSET_SKIP_E2E=1` skips.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::coordinator::{
    AGENT_TOKEN, Coordinator, READ_TOKEN, agent_node, free_port, start_agent, write_spec,
};
use support::fleet::{Fleet, Node, notice, wait_until};

const GRACE: u64 = 3;
const WAIT: Duration = Duration::from_secs(20);

/// `hostset ARGS` with the read token; its JSON output.
fn hostset(c: &Coordinator, args: &[&str]) -> Value {
    c.json(args)
}

fn status_of(c: &Coordinator, ds: &str) -> Option<Value> {
    let list = hostset(c, &["get", "daemonsets", "-o", "json"]);
    list.as_array()?
        .iter()
        .find(|d| d["name"] == ds)
        .map(|d| d["status"].clone())
}

fn node_status(c: &Coordinator, node: &str) -> Option<String> {
    let list = hostset(c, &["get", "nodes", "-o", "json"]);
    list.as_array()?
        .iter()
        .find(|n| n["name"] == node)
        .map(|n| n["status"].as_str().unwrap().to_string())
}

/// Wait until the daemonset's status has these (field, value) pairs.
fn expect_status(c: &Coordinator, ds: &str, want: &[(&str, u64)]) {
    let mut last = None;
    let ok = wait_until(WAIT, || {
        last = status_of(c, ds);
        last.as_ref()
            .is_some_and(|s| want.iter().all(|(k, v)| s[*k] == *v))
    });
    if ok.is_err() {
        panic!(
            "daemonset {ds}: wanted {want:?}, have {last:#?}\n--- coordinator ---\n{}",
            c.log()
        );
    }
}

/// The node's file, then the agent.
fn start_agent_with(node: &Node, node_toml: &str) {
    node.write_file("/etc/hostset/node.toml", node_toml);
    start_agent(node);
}

#[test]
fn the_coordinator_counts_a_real_fleet() {
    let Some(fleet) = Fleet::new("coordinator_fleet") else {
        return;
    };
    let specs = fleet.shared_dir("specs");
    let conf = fleet.shared_dir("coordinator");
    for d in [&specs, &conf] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let log_collector = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/log-collector.toml"),
    )
    .unwrap();
    write_spec(&specs, "log-collector.toml", &log_collector);
    write_spec(
        &specs,
        "ssd-only.toml",
        "name = \"ssd-only\"\ncommand = [\"/bin/sleep\", \"infinity\"]\n\
         selector.matchLabels = { app = \"ssd-only\" }\ntemplate.labels = { app = \"ssd-only\" }\n\
         nodeSelector = { disktype = \"ssd\" }\n",
    );

    let port = free_port();
    let coordinator = Coordinator::start(&conf, &specs, port, GRACE);
    let agent_toml = conf.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[coordinator]\nurl = \"http://127.0.0.1:{port}\"\ntoken_file = \"/etc/hostset/token\"\nheartbeat_interval = 1\n"
        ),
    )
    .unwrap();

    let node_files = [
        ("n1", "labels = { disktype = \"ssd\" }\n"),
        ("n2", "labels = { disktype = \"hdd\" }\n"),
        (
            "n3",
            "labels = { disktype = \"ssd\" }\n[[taints]]\nkey = \"dedicated\"\nvalue = \"db\"\neffect = \"NoSchedule\"\n",
        ),
    ];
    let nodes = fleet.boot_many(
        node_files
            .iter()
            .map(|(n, _)| agent_node(n, &specs, &agent_toml))
            .collect(),
    );
    for (node, (_, toml)) in nodes.iter().zip(&node_files) {
        start_agent_with(node, toml);
    }

    // Coverage: log-collector on n1, n2 (n3's taint is not tolerated); ssd-only on n1.
    expect_status(
        &coordinator,
        "log-collector",
        &[
            ("desiredNumberScheduled", 2),
            ("currentNumberScheduled", 2),
            ("numberReady", 2),
            ("updatedNumberScheduled", 2),
            ("numberAvailable", 2),
            ("numberUnavailable", 0),
            ("numberMisscheduled", 0),
        ],
    );
    expect_status(
        &coordinator,
        "ssd-only",
        &[("desiredNumberScheduled", 1), ("numberReady", 1)],
    );
    for n in ["n1", "n2", "n3"] {
        assert_eq!(node_status(&coordinator, n).as_deref(), Some("Ready"));
    }

    // A label change: n2 becomes an ssd node.
    nodes[1].exec_ok(&["hostset", "node", "label", "--overwrite", "disktype=ssd"]);
    expect_status(
        &coordinator,
        "ssd-only",
        &[
            ("desiredNumberScheduled", 2),
            ("currentNumberScheduled", 2),
            ("numberReady", 2),
        ],
    );
    // A NoSchedule taint: the daemon stays on n2 but is misscheduled there.
    nodes[1].exec_ok(&["hostset", "node", "taint", "maintenance=soon:NoSchedule"]);
    expect_status(
        &coordinator,
        "ssd-only",
        &[
            ("desiredNumberScheduled", 1),
            ("numberMisscheduled", 1),
            ("numberReady", 1),
        ],
    );
    nodes[1].exec_ok(&["hostset", "node", "taint", "maintenance:NoSchedule-"]);
    expect_status(
        &coordinator,
        "ssd-only",
        &[("desiredNumberScheduled", 2), ("numberMisscheduled", 0)],
    );

    // The describe view says why a node does not run a daemonset.
    let detail = hostset(
        &coordinator,
        &["describe", "daemonset", "log-collector", "-o", "json"],
    );
    let n3 = detail["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node"] == "n3")
        .unwrap();
    assert_eq!(n3["shouldRun"], false);
    assert!(
        n3["reasons"][0]
            .as_str()
            .unwrap()
            .contains("dedicated=db:NoSchedule"),
        "{n3:#}"
    );
    let endpoints = hostset(
        &coordinator,
        &["get", "endpoints", "log-collector", "-o", "json"],
    );
    assert_eq!(endpoints.as_array().unwrap().len(), 2, "{endpoints:#}");

    // Power off n1: NotReady after the grace period, its daemons unavailable.
    nodes[0].stop();
    wait_until(WAIT, || {
        node_status(&coordinator, "n1").as_deref() == Some("NotReady")
    })
    .unwrap_or_else(|e| panic!("n1 not NotReady: {e}"));
    expect_status(
        &coordinator,
        "log-collector",
        &[
            ("desiredNumberScheduled", 2),
            ("numberReady", 1),
            ("numberAvailable", 1),
            ("numberUnavailable", 1),
        ],
    );

    // The coordinator restarts: state kept (n1 is still known, still NotReady).
    let coordinator = coordinator.restart();
    let nodes_after = hostset(&coordinator, &["get", "nodes", "-o", "json"]);
    assert_eq!(nodes_after.as_array().unwrap().len(), 3, "{nodes_after:#}");
    assert_eq!(node_status(&coordinator, "n1").as_deref(), Some("NotReady"));

    // n1 comes back (a new boot of the same host): Ready again, numbers recover.
    let n1 = fleet.boot(agent_node("n1", &specs, &agent_toml));
    start_agent_with(&n1, node_files[0].1);
    wait_until(WAIT, || {
        node_status(&coordinator, "n1").as_deref() == Some("Ready")
    })
    .unwrap_or_else(|e| panic!("n1 not Ready again: {e}"));
    expect_status(
        &coordinator,
        "log-collector",
        &[("numberReady", 2), ("numberUnavailable", 0)],
    );

    // Bad requests are refused and change nothing.
    let before = hostset(&coordinator, &["get", "nodes", "-o", "json"]);
    let raw = |request: String| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.lines().next().unwrap_or_default().to_string()
    };
    let body = r#"{"agentVersion":"x","generatedAt":1,"node":{"name":"intruder","labels":{},"taints":[],"unschedulable":false},"daemonsets":[],"diagnostics":[],"errors":[]}"#;
    let post = |auth: &str, body: &str| {
        raw(format!(
            "POST /v1/reports HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    };
    assert!(post("", body).contains(" 401 "), "no token");
    assert!(
        post("Authorization: Bearer wrong-token-0123456789\r\n", body).contains(" 401 "),
        "wrong token"
    );
    assert!(
        post(&format!("Authorization: Bearer {READ_TOKEN}\r\n"), body).contains(" 403 "),
        "read token writing"
    );
    assert!(
        post(
            &format!("Authorization: Bearer {AGENT_TOKEN}\r\n"),
            "{not json"
        )
        .contains(" 400 "),
        "malformed"
    );
    let delete = raw(format!(
        "DELETE /v1/nodes/n2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ_TOKEN}\r\nConnection: close\r\n\r\n"
    ));
    assert!(
        delete.contains(" 403 "),
        "a reader cannot delete nodes: {delete}"
    );
    let after = hostset(&coordinator, &["get", "nodes", "-o", "json"]);
    let names = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&before),
        names(&after),
        "refused requests changed the fleet"
    );

    // The metrics speak kube-state-metrics.
    let metrics = raw(format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ_TOKEN}\r\nConnection: close\r\n\r\n"
    ));
    assert!(metrics.contains(" 200 "), "{metrics}");
    notice(
        "coordinator e2e: coverage, label change, misscheduled, power-off, restart, return, refusals",
    );
}
