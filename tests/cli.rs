//! The CLI's output contract: exact forms that other tools and tests rely on.

use std::path::PathBuf;
use std::process::{Command, Output};

fn hostset(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostset"))
        .args(args)
        // "This host" must not depend on the machine running the tests.
        .env("HOSTSET_CONFIG_DIR", "/nonexistent")
        .output()
        .expect("run hostset")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A scratch directory unique to one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hostset-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn validate_valid_files_exits_0() {
    let o = hostset(&[
        "validate",
        "examples/log-collector.toml",
        "examples/disk-monitor.toml",
        "examples/fluentd-elasticsearch.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // The manifest is the Kubernetes documentation's, namespace and image included:
    // both are documented no-ops on a host, reported as warnings that do not fail.
    assert_eq!(
        stdout(&o),
        "examples/fluentd-elasticsearch.yaml:8:14: metadata.namespace: warning: ignored: namespaces do not exist on a host; the unit is hostset-fluentd-elasticsearch.service\n\
         examples/fluentd-elasticsearch.yaml:31:16: spec.template.spec.containers[0].image: warning: ignored: hostset runs command on the host, not the image\n"
    );
    assert_eq!(
        stderr(&o),
        "3 files checked: 3 valid, 0 invalid (0 errors, 2 warnings)\n"
    );
    let o = hostset(&["validate", "--quiet", "examples/fluentd-elasticsearch.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "", "--quiet prints errors only");
    assert_eq!(stderr(&o), "");
}

#[test]
fn validate_prints_one_line_per_error_and_exits_1() {
    let s = Scratch::new("validate");
    let bad = s.file(
        "bad.toml",
        "name = \"x\"\ncommand = [\"/bin/true\"]\nselector.matchLabels = { app = \"x\" }\ntemplate.labels = { app = \"x\" }\n\n[[toleration]]\nkey = \"a\"\n\n[[tolerations]]\nkey = \"b\"\noperator = \"Exists\"\nvalue = \"v\"\n",
    );
    let good = s.file("good.toml", "name = \"y\"\ncommand = [\"/bin/true\"]\nselector.matchLabels = { app = \"y\" }\ntemplate.labels = { app = \"y\" }\n");
    let o = hostset(&["validate", &bad, &good]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        format!(
            "{bad}:6:3: toleration: unknown field \"toleration\", did you mean \"tolerations\"?\n\
             {bad}:11:12: tolerations[0].operator: invalid value \"v\": value must be empty when `operator` is 'Exists'\n"
        )
    );
    assert_eq!(
        stderr(&o),
        "2 files checked: 1 valid, 1 invalid (2 errors, 0 warnings)\n"
    );
}

#[test]
fn validate_reports_unreadable_and_unknown_files() {
    let s = Scratch::new("unreadable");
    let txt = s.file("spec.txt", "name = \"x\"\n");
    let o = hostset(&["validate", "/nonexistent/spec.toml", &txt]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.starts_with("/nonexistent/spec.toml: cannot read: No such file or directory"),
        "{out}"
    );
    assert!(out.contains(&format!("{txt}: unknown file type: name it *.toml (native), *.yaml, *.yml or *.json (Kubernetes)")), "{out}");
}

#[test]
fn validate_needs_a_file() {
    let o = hostset(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn eval_json_contract() {
    let o = hostset(&[
        "eval",
        "--node",
        "examples/nodes/db-1.toml",
        "examples/log-collector.toml",
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["node"], "db-1");
    assert_eq!(v["daemonset"], "log-collector");
    assert_eq!(v["shouldRun"], false);
    assert_eq!(v["shouldContinueRunning"], true);
    let reasons = v["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0]
            .as_str()
            .unwrap()
            .starts_with("taint dedicated=db:NoSchedule is not tolerated"),
        "{reasons:?}"
    );
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 5, "exactly the contract's fields: {keys:?}");
}

#[test]
fn eval_runs_on_a_matching_node_with_no_reasons() {
    let o = hostset(&[
        "eval",
        "--node",
        "examples/nodes/web-1.toml",
        "examples/disk-monitor.toml",
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "{\"node\":\"web-1\",\"daemonset\":\"disk-monitor\",\"shouldRun\":true,\"shouldContinueRunning\":true,\"reasons\":[]}\n"
    );
    let o = hostset(&[
        "eval",
        "--node",
        "examples/nodes/web-1.toml",
        "examples/disk-monitor.toml",
    ]);
    assert_eq!(
        stdout(&o),
        "daemonset disk-monitor on node web-1: would run\n"
    );
}

#[test]
fn eval_text_explains_why_not() {
    // The control-plane node is arm64 without disktype=ssd: nodeSelector fails.
    let o = hostset(&[
        "eval",
        "--node",
        "examples/nodes/control-plane.yaml",
        "examples/disk-monitor.toml",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.starts_with("daemonset disk-monitor on node cp-1: would not run, because nodeSelector requires label disktype=ssd, node has no label disktype"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "daemonset disk-monitor on node cp-1: a daemon already running there would be stopped\n"
        ),
        "{out}"
    );
    // The log collector tolerates the control-plane taint.
    let o = hostset(&[
        "eval",
        "--node",
        "examples/nodes/control-plane.yaml",
        "examples/log-collector.toml",
    ]);
    assert_eq!(
        stdout(&o),
        "daemonset log-collector on node cp-1: would run\n"
    );
}

#[test]
fn eval_on_an_invalid_spec_exits_1_with_validate_style_errors() {
    let s = Scratch::new("eval-invalid");
    let bad = s.file(
        "bad.yaml",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: Bad\n",
    );
    let o = hostset(&["eval", "--node", "examples/nodes/web-1.toml", &bad]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "",
        "nothing on stdout when evaluation did not happen"
    );
    assert!(
        stderr(&o).contains(&format!("{bad}:4:9: metadata.name: invalid value \"Bad\"")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn eval_on_an_invalid_node_exits_1() {
    let s = Scratch::new("eval-node");
    let node = s.file("node.toml", "name = \"n\"\n[[taints]]\nkey = \"k\"\n");
    let o = hostset(&["eval", "--node", &node, "examples/log-collector.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&format!("{node}:")), "{}", stderr(&o));
    assert!(stderr(&o).contains("taints[0].effect"), "{}", stderr(&o));
}

#[test]
fn eval_without_node_uses_this_host() {
    let o = hostset(&["eval", "examples/log-collector.toml", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(!v["node"].as_str().unwrap().is_empty());
    assert_eq!(
        v["shouldRun"], true,
        "nothing on a plain host blocks the log collector"
    );
}

#[test]
fn eval_uses_the_node_file_of_this_host() {
    let s = Scratch::new("eval-host");
    s.file(
        "node.toml",
        "name = \"tainted\"\n[[taints]]\nkey = \"gpu\"\neffect = \"NoExecute\"\n",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_hostset"))
        .args(["eval", "examples/log-collector.toml", "-o", "json"])
        .env("HOSTSET_CONFIG_DIR", &s.0)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["node"], "tainted");
    assert_eq!(v["shouldRun"], false);
    assert_eq!(
        v["shouldContinueRunning"], false,
        "an untolerated NoExecute taint evicts"
    );
}

#[test]
fn every_command_has_help_with_examples() {
    for args in [
        vec!["--help"],
        vec!["validate", "--help"],
        vec!["eval", "--help"],
    ] {
        let o = hostset(&args);
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout(&o).contains("Examples:"), "{args:?}: {}", stdout(&o));
    }
}

#[test]
fn status_without_an_agent_says_so() {
    let o = Command::new(env!("CARGO_BIN_EXE_hostset"))
        .args(["status"])
        .env("HOSTSET_STATUS_FILE", "/nonexistent/status.json")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("hostsetd is not running on this host"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn status_table_and_json() {
    let s = Scratch::new("status");
    let report = r#"{
      "agentVersion": "0.1.0", "generatedAt": 1,
      "node": {"name": "n1", "labels": {}, "taints": ["dedicated=db:NoSchedule"], "unschedulable": false},
      "daemonsets": [
        {"name": "web", "file": "/etc/hostset/daemonsets.d/web.toml", "held": false, "shouldRun": true,
         "shouldContinueRunning": true, "reasons": [], "unit": "hostset-web.service", "state": "active/running",
         "currentRevision": "abc", "desiredRevision": "abc", "evictInSeconds": null, "lastError": "",
         "ready": true, "readySince": 1700000000, "readiness": ""},
        {"name": "api", "file": "/etc/hostset/daemonsets.d/api.toml", "held": false, "shouldRun": true,
         "shouldContinueRunning": true, "reasons": [], "unit": "hostset-api.service", "state": "active/running",
         "currentRevision": "ghj", "desiredRevision": "ghj", "evictInSeconds": null, "lastError": "",
         "ready": false, "readiness": "readiness probe failed 3 times: HTTP GET http://127.0.0.1:8080/healthz: 503"},
        {"name": "db-backup", "file": "/etc/hostset/daemonsets.d/db-backup.toml", "held": false, "shouldRun": false,
         "shouldContinueRunning": true, "reasons": ["taint dedicated=db:NoSchedule is not tolerated"], "unit": "",
         "state": "absent", "currentRevision": "", "desiredRevision": "def", "evictInSeconds": null, "lastError": ""}
      ],
      "diagnostics": ["/etc/hostset/daemonsets.d/x.toml:1:1: name: required"], "errors": []
    }"#;
    let file = s.file("status.json", report);
    let o = Command::new(env!("CARGO_BIN_EXE_hostset"))
        .args(["status", "--status-file", &file])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "NAME        UNIT                  STATE            REVISION   READY   RESTARTS   MEMORY   CPU   WHY"
    );
    assert_eq!(
        lines[1],
        "web         hostset-web.service   active/running   abc        1/1     0          -        -     -"
    );
    assert!(
        lines[2].ends_with(
            "0/1     0          -        -     not ready: readiness probe failed 3 times: HTTP GET \
             http://127.0.0.1:8080/healthz: 503"
        ),
        "{out}"
    );
    assert!(
        lines[3].ends_with("taint dedicated=db:NoSchedule is not tolerated"),
        "{out}"
    );
    assert!(lines[3].contains("0/0"), "{out}");
    assert!(stderr(&o).contains("x.toml:1:1: name: required"));

    let o = Command::new(env!("CARGO_BIN_EXE_hostset"))
        .args(["status", "--status-file", &file, "-o", "json"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["daemonsets"][0]["name"], "web");
    assert_eq!(v["daemonsets"][0]["ready"], true);
    assert_eq!(v["daemonsets"][0]["readySince"], 1700000000);
    assert_eq!(v["daemonsets"][1]["ready"], false);
    assert_eq!(
        v["daemonsets"][1]["readiness"],
        "readiness probe failed 3 times: HTTP GET http://127.0.0.1:8080/healthz: 503"
    );
    assert_eq!(v["daemonsets"][2]["ready"], false);
    assert_eq!(v["node"]["name"], "n1");
}
