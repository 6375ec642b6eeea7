//! `hostset get|describe|node delete` against the coordinator's read API. Black-box: the
//! binary talks to a stub coordinator started in-process on 127.0.0.1:0, which serves canned
//! `hostset::api` objects, checks the bearer token and records every request.
//!
//! Times in the fixture are relative to the moment of the request, chosen so that their AGE
//! cannot change while a test runs (`3d`, `5h`, `20m`), except LAST-SEEN's `4s`, which may
//! read `5s` when a second turns between the stub's answer and the CLI's clock.
#![cfg(all(feature = "cli", feature = "coordinator"))]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use hostset::api::{
    DaemonSetDetail, DaemonSetStatus, DaemonSetView, Endpoint, EndpointPort, NodePlacement,
    NodeView,
};
use hostset::cli::output::timestamp;
use hostset::report::{Condition, DaemonSetReport, NodeInfo, NodeReport};
use hostset::spec::doc;

const READ_TOKEN: &str = "read-token";
const AGENT_TOKEN: &str = "agent-token";

// ---------------------------------------------------------------------------------------------
// The fixture

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const DAY: u64 = 86_400;
const HOUR: u64 = 3_600;
const MINUTE: u64 = 60;

fn daemonsets(now: u64) -> Vec<DaemonSetView> {
    vec![
        DaemonSetView {
            name: "log-collector".into(),
            file: "/etc/hostset/daemonsets.d/log-collector.toml".into(),
            generation: 3,
            revision: "tb2gzh76k4".into(),
            selector: "app=log-collector".into(),
            node_selector: "<none>".into(),
            update_strategy: "RollingUpdate".into(),
            created_at: now - 3 * DAY - 100,
            status: DaemonSetStatus {
                desired_number_scheduled: 3,
                current_number_scheduled: 2,
                number_misscheduled: 1,
                number_ready: 2,
                updated_number_scheduled: 2,
                number_available: 2,
                number_unavailable: 1,
                observed_generation: 3,
            },
            rollout: None,
        },
        DaemonSetView {
            name: "disk-monitor".into(),
            file: "/etc/hostset/daemonsets.d/disk-monitor.yaml".into(),
            generation: 1,
            revision: "q5m2x8r4dd".into(),
            selector: "app=disk-monitor,tier in (infra)".into(),
            node_selector: "disktype=ssd".into(),
            update_strategy: "OnDelete".into(),
            created_at: now - 5 * HOUR - 10,
            status: DaemonSetStatus {
                desired_number_scheduled: 1,
                current_number_scheduled: 1,
                number_misscheduled: 0,
                number_ready: 1,
                updated_number_scheduled: 1,
                number_available: 1,
                number_unavailable: 0,
                observed_generation: 1,
            },
            rollout: None,
        },
    ]
}

fn placement(node: &str) -> NodePlacement {
    NodePlacement {
        node: node.into(),
        node_status: "Ready".into(),
        should_run: true,
        should_continue_running: true,
        reasons: vec![],
        unit: "hostset-log-collector.service".into(),
        state: "active/running".into(),
        ready: true,
        available: true,
        updated: true,
        revision: "tb2gzh76k4".into(),
        restarts: 0,
        misscheduled: false,
        problem: String::new(),
        rollout: String::new(),
    }
}

const TAINT_REASON: &str = "taint dedicated=db:NoSchedule is not tolerated (add a toleration: \
                            key \"dedicated\", operator \"Equal\", value \"db\", effect \
                            \"NoSchedule\"); a running daemon keeps running, but none is started";

fn detail(now: u64, name: &str) -> Option<DaemonSetDetail> {
    let daemonset = daemonsets(now).into_iter().find(|d| d.name == name)?;
    let nodes = if name == "log-collector" {
        vec![
            placement("node-1"),
            NodePlacement {
                restarts: 2,
                ..placement("node-2")
            },
            NodePlacement {
                node_status: "NotReady".into(),
                unit: String::new(),
                state: "absent".into(),
                ready: false,
                available: false,
                updated: false,
                revision: String::new(),
                problem: "the node's agent has not reported for 15m (grace period 5m)".into(),
                ..placement("node-3")
            },
            NodePlacement {
                should_run: false,
                reasons: vec![TAINT_REASON.into()],
                misscheduled: true,
                ..placement("db-1")
            },
        ]
    } else {
        vec![NodePlacement {
            unit: "hostset-disk-monitor.service".into(),
            revision: "q5m2x8r4dd".into(),
            ..placement("db-1")
        }]
    };
    Some(DaemonSetDetail { daemonset, nodes })
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn nodes(now: u64) -> Vec<NodeView> {
    vec![
        NodeView {
            name: "node-1".into(),
            status: "Ready".into(),
            labels: labels(&[
                ("kubernetes.io/hostname", "node-1"),
                ("kubernetes.io/os", "linux"),
            ]),
            taints: vec![],
            unschedulable: false,
            addresses: vec!["10.0.0.1".into()],
            agent_version: "0.1.0".into(),
            daemons: 1,
            first_seen: now - 20 * MINUTE - 10,
            last_seen: now - 4,
            commit: "3f2c9a1b7d4e5f60718293a4b5c6d7e8f9a0b1c2".into(),
        },
        NodeView {
            name: "db-1".into(),
            status: "Ready".into(),
            labels: labels(&[("disktype", "ssd")]),
            taints: vec!["dedicated=db:NoSchedule".into()],
            unschedulable: true,
            addresses: vec!["10.0.0.9".into(), "fd00::9".into()],
            agent_version: "0.1.0".into(),
            daemons: 2,
            first_seen: now - 3 * DAY - 100,
            last_seen: now - 4,
            commit: String::new(),
        },
        NodeView {
            name: "node-3".into(),
            status: "NotReady".into(),
            labels: BTreeMap::new(),
            taints: vec![],
            unschedulable: false,
            addresses: vec![],
            agent_version: "0.1.0".into(),
            daemons: 0,
            first_seen: now - 5 * HOUR - 10,
            last_seen: now - 15 * MINUTE - 10,
            commit: String::new(),
        },
    ]
}

fn report(name: &str, should_run: bool, revision: &str) -> DaemonSetReport {
    DaemonSetReport {
        name: name.into(),
        file: format!("/etc/hostset/daemonsets.d/{name}.toml"),
        held: false,
        should_run,
        should_continue_running: true,
        reasons: if should_run {
            vec![]
        } else {
            vec![TAINT_REASON.into()]
        },
        unit: format!("hostset-{name}.service"),
        state: "active/running".into(),
        current_revision: revision.into(),
        desired_revision: revision.into(),
        evict_in_seconds: None,
        last_error: String::new(),
        ready: true,
        restarts: 0,
        main_pid: 4242,
        started_at: None,
        memory_bytes: None,
        cpu_nanoseconds: None,
        ready_since: None,
        readiness: String::new(),
        ..Default::default()
    }
}

/// `GET /v1/nodes/{name}`: the view and the node's last report, as the coordinator serves
/// them.
fn node_detail(now: u64, name: &str) -> Option<Value> {
    let node = nodes(now).into_iter().find(|n| n.name == name)?;
    let daemonsets = if name == "db-1" {
        vec![
            report("disk-monitor", true, "q5m2x8r4dd"),
            report("log-collector", false, "tb2gzh76k4"),
        ]
    } else {
        vec![]
    };
    let report = NodeReport {
        agent_version: node.agent_version.clone(),
        agent_instance: "4f6c0e".into(),
        sequence: 17,
        generated_at: node.last_seen,
        node: NodeInfo {
            name: node.name.clone(),
            labels: node.labels.clone(),
            taints: node.taints.clone(),
            unschedulable: node.unschedulable,
            addresses: node.addresses.clone(),
            conditions: vec![Condition {
                kind: "Ready".into(),
                status: "True".into(),
                reason: String::new(),
                message: String::new(),
            }],
        },
        daemonsets,
        diagnostics: vec![],
        errors: vec![],
        git: None,
    };
    Some(json!({"node": node, "report": report}))
}

fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            node: "node-1".into(),
            addresses: vec!["10.0.0.1".into()],
            ports: vec![EndpointPort {
                name: "metrics".into(),
                port: 9100,
                protocol: "TCP".into(),
            }],
            ready: true,
        },
        Endpoint {
            node: "db-1".into(),
            addresses: vec!["10.0.0.9".into(), "fd00::9".into()],
            ports: vec![
                EndpointPort {
                    name: "metrics".into(),
                    port: 9100,
                    protocol: "TCP".into(),
                },
                EndpointPort {
                    name: String::new(),
                    port: 24224,
                    protocol: "UDP".into(),
                },
            ],
            ready: false,
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// The stub coordinator

// A test CA and a server certificate it signed for 127.0.0.1 and localhost, valid from 2000
// to 2100 (ECDSA P-256; made once with `openssl ca -startdate ... -enddate ...`).
const TEST_CA: &str = "\
-----BEGIN CERTIFICATE-----
MIIBaDCCAQ6gAwIBAgICEAAwCgYIKoZIzj0EAwIwGjEYMBYGA1UEAwwPaG9zdHNl
dCB0ZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAaMRgw
FgYDVQQDDA9ob3N0c2V0IHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AASjReaN/Wl0x20ZcRb4YEMbo+CJmityLOAaDUbPENHgYKHd5rc9dQV9aYt/YvYe
evpmbkk3Zw8UeAQ9Cg09FMFPo0IwQDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB
/wQEAwIBBjAdBgNVHQ4EFgQUNBMBnk8kMot8RQ1zem3JsPDb1I0wCgYIKoZIzj0E
AwIDSAAwRQIhAL8w0r5SXSnFQFI+kjv3WQakIzgQrg0y8pUbpi88AjGbAiBW7ZbS
FwCQ+4j/q0ETLepR53zS72ChtsWOCfbVTCC5PQ==
-----END CERTIFICATE-----
";
const SERVER_CERT: &str = "\
-----BEGIN CERTIFICATE-----
MIIBsDCCAVagAwIBAgICEAEwCgYIKoZIzj0EAwIwGjEYMBYGA1UEAwwPaG9zdHNl
dCB0ZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAUMRIw
EAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQfKlcg
V2dYA7tGCtBkCG6GVJqgbVMfAi7dWYsVQdqCSP/Oeqefdg9gOpONfdtIaQa8ANYv
a0ya9YCUWvGXNXLso4GPMIGMMAkGA1UdEwQCMAAwDgYDVR0PAQH/BAQDAgeAMBMG
A1UdJQQMMAoGCCsGAQUFBwMBMBoGA1UdEQQTMBGHBH8AAAGCCWxvY2FsaG9zdDAd
BgNVHQ4EFgQUdqV+72TGYtASsf2mkJ2NhadSr60wHwYDVR0jBBgwFoAUNBMBnk8k
Mot8RQ1zem3JsPDb1I0wCgYIKoZIzj0EAwIDSAAwRQIgUZtJ+P57r859++zeIiPg
7YvHI8H9Hc0h90y54GdkqloCIQDqoOne84ES9W8mSjtkw1Q49KqntWWvcn4my11S
2vbUew==
-----END CERTIFICATE-----
";
const SERVER_KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgwljEmWY4PL2wzrBr
NrwUQ8etSdK4NWGtQmq2lgRRNomhRANCAAQfKlcgV2dYA7tGCtBkCG6GVJqgbVMf
Ai7dWYsVQdqCSP/Oeqefdg9gOpONfdtIaQa8ANYva0ya9YCUWvGXNXLs
-----END PRIVATE KEY-----
";

/// One request the stub answered.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    status: u16,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

struct Stub {
    url: String,
    log: Log,
}

impl Stub {
    fn start() -> Stub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log: Log = Arc::default();
        let state = log.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Stub { url, log }
    }

    /// The same over HTTPS, with [`SERVER_CERT`].
    fn start_tls() -> Stub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let log: Log = Arc::default();
        let state = log.clone();
        let _ = rustls::crypto::ring::default_provider().install_default();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let config = axum_server::tls_rustls::RustlsConfig::from_pem(
                    SERVER_CERT.as_bytes().to_vec(),
                    SERVER_KEY.as_bytes().to_vec(),
                )
                .await
                .unwrap();
                let app = axum::Router::new().fallback(handle).with_state(state);
                axum_server::from_tcp_rustls(listener, config)
                    .serve(app.into_make_service())
                    .await
                    .unwrap();
            });
        });
        Stub { url, log }
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// The body of the last answer to `method path`.
    fn served(&self, method: &str, path: &str) -> Value {
        self.seen()
            .into_iter()
            .rev()
            .find(|s| s.method == method && s.path == path)
            .unwrap_or_else(|| panic!("no {method} {path} in {:?}", self.seen()))
            .body
    }
}

async fn handle(State(log): State<Log>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, body) = answer(&method, uri.path(), authorization.as_deref());
    log.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization,
        status: status.as_u16(),
        body: body.clone(),
    });
    if status == StatusCode::NO_CONTENT {
        return status.into_response();
    }
    (status, Json(body)).into_response()
}

fn error(status: StatusCode, message: &str) -> (StatusCode, Value) {
    (status, json!({ "error": message }))
}

fn answer(method: &Method, path: &str, authorization: Option<&str>) -> (StatusCode, Value) {
    let write = match authorization.and_then(|a| a.strip_prefix("Bearer ")) {
        Some(AGENT_TOKEN) => true,
        Some(READ_TOKEN) => false,
        Some(_) => return error(StatusCode::UNAUTHORIZED, "unknown token"),
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "authentication required: send the header \"Authorization: Bearer TOKEN\"",
            );
        }
    };
    let now = now();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ok = |v: Value| (StatusCode::OK, v);
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["v1", "daemonsets"]) => ok(json!(daemonsets(now))),
        ("GET", ["v1", "daemonsets", "broken"]) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the store: disk full",
        ),
        ("GET", ["v1", "daemonsets", name]) => match detail(now, name) {
            Some(d) => ok(json!(d)),
            None => error(StatusCode::NOT_FOUND, "no such daemonset"),
        },
        ("GET", ["v1", "daemonsets", name, "endpoints"]) => match detail(now, name) {
            Some(_) => ok(json!(endpoints())),
            None => error(StatusCode::NOT_FOUND, "no such daemonset"),
        },
        ("GET", ["v1", "nodes"]) => ok(json!(nodes(now))),
        ("GET", ["v1", "nodes", name]) => match node_detail(now, name) {
            Some(d) => ok(d),
            None => error(StatusCode::NOT_FOUND, "no such node"),
        },
        ("DELETE", ["v1", "nodes", name]) => {
            if !write {
                error(
                    StatusCode::FORBIDDEN,
                    "this token may only read: writing needs an agent token",
                )
            } else if node_detail(now, name).is_some() {
                (StatusCode::NO_CONTENT, Value::Null)
            } else {
                error(StatusCode::NOT_FOUND, "no such node")
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such path"),
    }
}

// ---------------------------------------------------------------------------------------------
// Running the CLI

/// A scratch directory: the test's HOSTSET_CONFIG_DIR and its token files.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hostset-cli-coordinator-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("read.token"), format!("{READ_TOKEN}\n")).unwrap();
        fs::write(dir.join("agent.token"), AGENT_TOKEN).unwrap();
        fs::write(dir.join("wrong.token"), "guess\n").unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn token(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `hostset ARGS` with a clean environment: no coordinator variables, and `config_dir` as
/// HOSTSET_CONFIG_DIR (so the machine's /etc/hostset/agent.toml is never read).
fn hostset_in(config_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostset"));
    cmd.args(args)
        .env_remove("HOSTSET_COORDINATOR")
        .env_remove("HOSTSET_TOKEN_FILE")
        .env_remove("HOSTSET_CA_FILE")
        .env("HOSTSET_CONFIG_DIR", config_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run hostset")
}

/// `hostset --coordinator STUB --token-file read.token ARGS`.
fn hostset(stub: &Stub, scratch: &Scratch, args: &[&str]) -> Output {
    let token = scratch.token("read.token");
    let mut all = vec!["--coordinator", &stub.url, "--token-file", &token];
    all.extend_from_slice(args);
    hostset_in(&scratch.0, &[], &all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Assert success; the stdout.
#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Assert exit code `code` and an empty stdout; the stderr.
#[track_caller]
fn fails(o: &Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    assert_eq!(stdout(o), "", "nothing on stdout when failing");
    stderr(o)
}

/// Exact text, where a `4s` may have become `5s` (see the top of the file).
#[track_caller]
fn assert_text(actual: &str, expected: &str) {
    if actual != expected {
        assert_eq!(
            actual,
            expected.replace("4s", "5s"),
            "expected:\n{expected}"
        );
    }
}

/// The crate's own YAML reader's tree as JSON.
fn yaml_to_json(text: &str) -> Value {
    fn convert(node: &doc::Node) -> Value {
        match &node.value {
            doc::Value::Null => Value::Null,
            doc::Value::Bool(b) => json!(b),
            doc::Value::Int(i) => json!(i),
            doc::Value::Float(f) => json!(f),
            doc::Value::Str(s) => json!(s),
            doc::Value::Seq(items) => Value::Array(items.iter().map(convert).collect()),
            doc::Value::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), convert(&e.value)))
                    .collect(),
            ),
        }
    }
    let docs = doc::parse_yaml(text).unwrap_or_else(|e| panic!("{text}\nis not YAML: {e:?}"));
    assert_eq!(docs.len(), 1, "one document:\n{text}");
    convert(&docs[0])
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}\nis not JSON: {e}"))
}

// ---------------------------------------------------------------------------------------------
// get daemonsets

#[test]
fn get_daemonsets_table() {
    let stub = Stub::start();
    let s = Scratch::new("ds-table");
    let out = ok(&hostset(&stub, &s, &["get", "daemonsets"]));
    assert_text(
        &out,
        "\
NAME            DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR   AGE
log-collector   3         2         2       2            2           <none>          3d
disk-monitor    1         1         1       1            1           disktype=ssd    5h
",
    );
    // The token went along, as a bearer token.
    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/v1/daemonsets");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer read-token"),
        "the token file's trailing newline is not part of the token"
    );
}

#[test]
fn get_daemonsets_wide() {
    let stub = Stub::start();
    let s = Scratch::new("ds-wide");
    let out = ok(&hostset(&stub, &s, &["get", "ds", "-o", "wide"]));
    assert_text(
        &out,
        "\
NAME            DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR   AGE   SELECTOR                           REVISION     GENERATION
log-collector   3         2         2       2            2           <none>          3d    app=log-collector                  tb2gzh76k4   3
disk-monitor    1         1         1       1            1           disktype=ssd    5h    app=disk-monitor,tier in (infra)   q5m2x8r4dd   1
",
    );
}

#[test]
fn get_daemonsets_json_is_the_list_as_served() {
    let stub = Stub::start();
    let s = Scratch::new("ds-json");
    let out = json_of(&ok(&hostset(
        &stub,
        &s,
        &["get", "daemonsets", "-o", "json"],
    )));
    assert_eq!(out, stub.served("GET", "/v1/daemonsets"));
    // The contract other tools rely on.
    let first = &out[0];
    assert_eq!(first["name"], "log-collector");
    for (field, value) in [
        ("desiredNumberScheduled", 3),
        ("currentNumberScheduled", 2),
        ("numberReady", 2),
        ("updatedNumberScheduled", 2),
        ("numberAvailable", 2),
        ("numberUnavailable", 1),
        ("numberMisscheduled", 1),
        ("observedGeneration", 3),
    ] {
        assert_eq!(first["status"][field], value, "{field}");
    }
}

#[test]
fn get_daemonsets_yaml_reads_back_as_the_json() {
    let stub = Stub::start();
    let s = Scratch::new("ds-yaml");
    let out = ok(&hostset(&stub, &s, &["get", "daemonsets", "-o", "yaml"]));
    assert!(out.starts_with("- createdAt: "), "{out}");
    assert!(out.contains("  nodeSelector: \"<none>\"\n"), "{out}");
    assert!(
        out.contains("  selector: \"app=disk-monitor,tier in (infra)\"\n"),
        "{out}"
    );
    assert_eq!(yaml_to_json(&out), stub.served("GET", "/v1/daemonsets"));
}

#[test]
fn get_one_daemonset_by_any_name_of_the_kind() {
    let stub = Stub::start();
    let s = Scratch::new("ds-one");
    for kind in ["daemonset", "daemonsets", "ds"] {
        let out = ok(&hostset(&stub, &s, &["get", kind, "disk-monitor"]));
        assert_text(
            &out,
            "\
NAME           DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR   AGE
disk-monitor   1         1         1       1            1           disktype=ssd    5h
",
        );
    }
    // One object, not a list: the daemonset part of the detail.
    let out = json_of(&ok(&hostset(
        &stub,
        &s,
        &["get", "ds", "disk-monitor", "-o", "json"],
    )));
    assert_eq!(
        out,
        stub.served("GET", "/v1/daemonsets/disk-monitor")["daemonset"]
    );
    let out = ok(&hostset(
        &stub,
        &s,
        &["get", "ds", "disk-monitor", "-o", "yaml"],
    ));
    assert_eq!(
        yaml_to_json(&out),
        stub.served("GET", "/v1/daemonsets/disk-monitor")["daemonset"]
    );
}

// ---------------------------------------------------------------------------------------------
// get nodes

#[test]
fn get_nodes_table_and_wide() {
    let stub = Stub::start();
    let s = Scratch::new("nodes");
    let out = ok(&hostset(&stub, &s, &["get", "nodes"]));
    assert_text(
        &out,
        "\
NAME     STATUS                     DAEMONS   LABELS         AGE   LAST-SEEN
node-1   Ready                      1         <none>         20m   4s
db-1     Ready,SchedulingDisabled   2         disktype=ssd   3d    4s
node-3   NotReady                   0         <none>         5h    15m
",
    );
    let out = ok(&hostset(&stub, &s, &["get", "no", "-o", "wide"]));
    assert_text(
        &out,
        "\
NAME     STATUS                     DAEMONS   LABELS                                                 AGE   LAST-SEEN   ADDRESSES          TAINTS                    VERSION   COMMIT
node-1   Ready                      1         kubernetes.io/hostname=node-1,kubernetes.io/os=linux   20m   4s          10.0.0.1           <none>                    0.1.0     3f2c9a1b7d4e
db-1     Ready,SchedulingDisabled   2         disktype=ssd                                           3d    4s          10.0.0.9,fd00::9   dedicated=db:NoSchedule   0.1.0     <none>
node-3   NotReady                   0         <none>                                                 5h    15m         <none>             <none>                    0.1.0     <none>
",
    );
}

#[test]
fn get_nodes_json_and_yaml() {
    let stub = Stub::start();
    let s = Scratch::new("nodes-json");
    let out = json_of(&ok(&hostset(&stub, &s, &["get", "nodes", "-o", "json"])));
    assert_eq!(out, stub.served("GET", "/v1/nodes"));
    assert_eq!(out[0]["name"], "node-1");
    assert_eq!(out[0]["status"], "Ready");
    assert_eq!(out[2]["status"], "NotReady");
    let out = ok(&hostset(&stub, &s, &["get", "nodes", "-o", "yaml"]));
    assert_eq!(yaml_to_json(&out), stub.served("GET", "/v1/nodes"));

    // One node: its view, from GET /v1/nodes/{name}.
    let out = json_of(&ok(&hostset(
        &stub,
        &s,
        &["get", "node", "db-1", "-o", "json"],
    )));
    assert_eq!(out, stub.served("GET", "/v1/nodes/db-1")["node"]);
    let out = ok(&hostset(&stub, &s, &["get", "node", "node-3"]));
    assert_text(
        &out,
        "\
NAME     STATUS     DAEMONS   LABELS   AGE   LAST-SEEN
node-3   NotReady   0         <none>   5h    15m
",
    );
}

// ---------------------------------------------------------------------------------------------
// get endpoints

#[test]
fn get_endpoints() {
    let stub = Stub::start();
    let s = Scratch::new("endpoints");
    let out = ok(&hostset(&stub, &s, &["get", "endpoints", "log-collector"]));
    assert_text(
        &out,
        "\
NODE     ADDRESSES          PORTS                        READY
node-1   10.0.0.1           metrics:9100/TCP             true
db-1     10.0.0.9,fd00::9   metrics:9100/TCP,24224/UDP   false
",
    );
    assert_eq!(
        stub.seen()[0].path,
        "/v1/daemonsets/log-collector/endpoints"
    );
    let out = json_of(&ok(&hostset(
        &stub,
        &s,
        &["get", "ep", "log-collector", "-o", "json"],
    )));
    assert_eq!(
        out,
        stub.served("GET", "/v1/daemonsets/log-collector/endpoints")
    );
    let out = ok(&hostset(
        &stub,
        &s,
        &["get", "ep", "log-collector", "-o", "yaml"],
    ));
    assert_eq!(
        yaml_to_json(&out),
        stub.served("GET", "/v1/daemonsets/log-collector/endpoints")
    );
    let err = fails(&hostset(&stub, &s, &["get", "endpoints", "nope"]), 1);
    assert_eq!(err, "hostset: daemonset \"nope\" not found\n");
}

// ---------------------------------------------------------------------------------------------
// describe

#[test]
fn describe_daemonset_text() {
    let stub = Stub::start();
    let s = Scratch::new("describe-ds");
    let out = ok(&hostset(
        &stub,
        &s,
        &["describe", "daemonset", "log-collector"],
    ));
    let served = stub.served("GET", "/v1/daemonsets/log-collector");
    let created = timestamp(served["daemonset"]["createdAt"].as_u64().unwrap());
    let expected = format!(
        "\
Name:             log-collector
File:             /etc/hostset/daemonsets.d/log-collector.toml
Selector:         app=log-collector
Node-Selector:    <none>
Update Strategy:  RollingUpdate
Revision:         tb2gzh76k4
Generation:       3 (observed: 3)
Created:          {created} (3d ago)
Desired Number of Nodes Scheduled: 3
Current Number of Nodes Scheduled: 2
Number of Nodes Scheduled with Up-to-date Daemons: 2
Number of Nodes Scheduled with Available Daemons: 2
Number of Nodes Misscheduled: 1
Daemons Status:  3 Running / 1 Waiting / 0 Failed
Nodes:
  NODE     STATUS     SHOULD-RUN   STATE            READY   REVISION     RESTARTS
  node-1   Ready      true         active/running   true    tb2gzh76k4   0
  node-2   Ready      true         active/running   true    tb2gzh76k4   2
  node-3   NotReady   true         absent           false   -            0
  db-1     Ready      false        active/running   true    tb2gzh76k4   0
Not running where it should:
  node-3: the node's agent has not reported for 15m (grace period 5m)
Misscheduled:
  db-1: {TAINT_REASON} (kept running: shouldContinueRunning)
"
    );
    assert_eq!(out, expected);

    // The alias, and a daemonset with nothing wrong.
    let out = ok(&hostset(&stub, &s, &["describe", "ds", "disk-monitor"]));
    assert!(
        out.ends_with("Not running where it should:  <none>\nMisscheduled:  <none>\n"),
        "{out}"
    );
    assert!(out.contains("Node-Selector:    disktype=ssd\n"), "{out}");
}

#[test]
fn describe_daemonset_data() {
    let stub = Stub::start();
    let s = Scratch::new("describe-ds-data");
    let out = json_of(&ok(&hostset(
        &stub,
        &s,
        &["describe", "ds", "log-collector", "-o", "json"],
    )));
    let served = stub.served("GET", "/v1/daemonsets/log-collector");
    assert_eq!(out, served);
    assert_eq!(out["nodes"][2]["problem"], served["nodes"][2]["problem"]);
    let out = ok(&hostset(
        &stub,
        &s,
        &["describe", "ds", "log-collector", "-o", "yaml"],
    ));
    assert_eq!(
        yaml_to_json(&out),
        stub.served("GET", "/v1/daemonsets/log-collector")
    );
}

#[test]
fn describe_node() {
    let stub = Stub::start();
    let s = Scratch::new("describe-node");
    let out = ok(&hostset(&stub, &s, &["describe", "node", "db-1"]));
    let served = stub.served("GET", "/v1/nodes/db-1");
    let first = timestamp(served["node"]["firstSeen"].as_u64().unwrap());
    let last = timestamp(served["node"]["lastSeen"].as_u64().unwrap());
    let expected = format!(
        "\
Name:           db-1
Status:         Ready,SchedulingDisabled
Labels:         disktype=ssd
Taints:         dedicated=db:NoSchedule
Unschedulable:  true
Addresses:      10.0.0.9
                fd00::9
Agent Version:  0.1.0
First Seen:     {first} (3d ago)
Last Seen:      {last} (4s ago)
Daemons:        2
DaemonSets:
  NAME            SHOULD-RUN   STATE            READY   REVISION     RESTARTS   WHY
  disk-monitor    true         active/running   true    q5m2x8r4dd   0          -
  log-collector   false        active/running   true    tb2gzh76k4   0          {TAINT_REASON}
"
    );
    assert_text(&out, &expected);

    let out = ok(&hostset(&stub, &s, &["describe", "no", "node-3"]));
    assert!(out.contains("Labels:         <none>\n"), "{out}");
    // A node following a git repository: its commit in force.
    let out = ok(&hostset(&stub, &s, &["describe", "node", "node-1"]));
    assert!(
        out.contains(
            "Agent Version:  0.1.0\nGit Commit:     3f2c9a1b7d4e5f60718293a4b5c6d7e8f9a0b1c2\n"
        ),
        "{out}"
    );
    assert!(out.ends_with("DaemonSets:  <none>\n"), "{out}");

    let out = json_of(&ok(&hostset(
        &stub,
        &s,
        &["describe", "node", "db-1", "-o", "json"],
    )));
    assert_eq!(out, stub.served("GET", "/v1/nodes/db-1"));
    let out = ok(&hostset(
        &stub,
        &s,
        &["describe", "node", "db-1", "-o", "yaml"],
    ));
    assert_eq!(yaml_to_json(&out), stub.served("GET", "/v1/nodes/db-1"));

    let err = fails(&hostset(&stub, &s, &["describe", "node", "ghost"]), 1);
    assert_eq!(err, "hostset: node \"ghost\" not found\n");
}

// ---------------------------------------------------------------------------------------------
// node delete

#[test]
fn node_delete() {
    let stub = Stub::start();
    let s = Scratch::new("delete");
    let agent = s.token("agent.token");
    let out = ok(&hostset_in(
        &s.0,
        &[],
        &[
            "--coordinator",
            &stub.url,
            "--token-file",
            &agent,
            "node",
            "delete",
            "db-1",
        ],
    ));
    assert_eq!(out, "node/db-1 deleted\n");
    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("DELETE", "/v1/nodes/db-1")
    );
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer agent-token"));
    // No node file was created by the node command.
    assert!(!s.path("node.toml").exists());

    let err = fails(
        &hostset_in(
            &s.0,
            &[],
            &[
                "--coordinator",
                &stub.url,
                "--token-file",
                &agent,
                "node",
                "delete",
                "ghost",
            ],
        ),
        1,
    );
    assert_eq!(err, "hostset: node \"ghost\" not found\n");

    // A read-only token.
    let err = fails(&hostset(&stub, &s, &["node", "delete", "db-1"]), 1);
    assert!(
        err.contains(
            "(403 Forbidden: this token may only read: writing needs an agent token): this \
             needs an agent token"
        ),
        "{err}"
    );
    assert!(
        err.contains(&s.token("read.token")),
        "names the token file: {err}"
    );

    // Usage.
    let o = hostset(&stub, &s, &["node", "delete"]);
    assert_eq!(o.status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn not_found() {
    let stub = Stub::start();
    let s = Scratch::new("not-found");
    for args in [
        vec!["get", "ds", "nope"],
        vec!["describe", "ds", "nope"],
        vec!["describe", "daemonset", "nope", "-o", "json"],
    ] {
        let err = fails(&hostset(&stub, &s, &args), 1);
        assert_eq!(err, "hostset: daemonset \"nope\" not found\n", "{args:?}");
    }
    let err = fails(&hostset(&stub, &s, &["get", "node", "ghost"]), 1);
    assert_eq!(err, "hostset: node \"ghost\" not found\n");
}

#[test]
fn the_servers_error_message_is_shown() {
    let stub = Stub::start();
    let s = Scratch::new("server-error");
    let err = fails(&hostset(&stub, &s, &["get", "ds", "broken"]), 1);
    assert_eq!(stub.seen()[0].status, 500);
    assert_eq!(
        err,
        format!(
            "hostset: the coordinator at {} answered GET /v1/daemonsets/broken with 500 Internal \
             Server Error: cannot read the store: disk full\n",
            stub.url
        )
    );
}

#[test]
fn missing_token() {
    let stub = Stub::start();
    let s = Scratch::new("no-token");
    let err = fails(
        &hostset_in(&s.0, &[], &["--coordinator", &stub.url, "get", "ds"]),
        1,
    );
    assert!(
        err.starts_with(&format!(
            "hostset: the coordinator at {} wants a token, and none was given (401 \
             Unauthorized: authentication required: send the header \"Authorization: Bearer \
             TOKEN\"): use --token-file FILE, set \
             HOSTSET_TOKEN_FILE",
            stub.url
        )),
        "{err}"
    );
    assert_eq!(stub.seen()[0].authorization, None);
}

#[test]
fn wrong_token() {
    let stub = Stub::start();
    let s = Scratch::new("wrong-token");
    let wrong = s.token("wrong.token");
    let err = fails(
        &hostset_in(
            &s.0,
            &[],
            &[
                "--coordinator",
                &stub.url,
                "--token-file",
                &wrong,
                "get",
                "nodes",
            ],
        ),
        1,
    );
    assert_eq!(
        err,
        format!(
            "hostset: the coordinator at {} does not accept the token in {wrong} (401 \
             Unauthorized: unknown token): the token is wrong or has been \
             revoked\n",
            stub.url
        )
    );
}

#[test]
fn unreadable_token_file() {
    let stub = Stub::start();
    let s = Scratch::new("token-file");
    let missing = s.token("missing.token");
    let err = fails(
        &hostset_in(
            &s.0,
            &[],
            &[
                "--coordinator",
                &stub.url,
                "--token-file",
                &missing,
                "get",
                "ds",
            ],
        ),
        1,
    );
    assert!(
        err.starts_with(&format!("hostset: cannot read the token file {missing}: ")),
        "{err}"
    );
    fs::write(s.path("empty.token"), "\n").unwrap();
    let err = fails(
        &hostset_in(
            &s.0,
            &[],
            &[
                "--coordinator",
                &stub.url,
                "--token-file",
                &s.token("empty.token"),
                "get",
                "ds",
            ],
        ),
        1,
    );
    assert!(err.contains("is empty"), "{err}");
    assert!(stub.seen().is_empty(), "nothing was sent");
}

#[test]
fn unreachable_coordinator() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let s = Scratch::new("unreachable");
    for args in [
        vec!["get", "daemonsets"],
        vec!["describe", "node", "x"],
        vec!["node", "delete", "x"],
    ] {
        let mut all = vec!["--coordinator", url.as_str()];
        all.extend(args);
        let err = fails(&hostset_in(&s.0, &[], &all), 1);
        assert!(
            err.starts_with(&format!("hostset: cannot reach the coordinator at {url}: ")),
            "{err}"
        );
        assert!(err.contains("refused"), "{err}");
    }
}

#[test]
fn no_coordinator_configured() {
    let s = Scratch::new("unconfigured");
    let err = fails(&hostset_in(&s.0, &[], &["get", "ds"]), 1);
    assert_eq!(
        err,
        format!(
            "hostset: no coordinator given: use --coordinator URL, set HOSTSET_COORDINATOR, or \
             set url in the [coordinator] table of {}\n",
            s.path("agent.toml").display()
        )
    );
    let err = fails(
        &hostset_in(&s.0, &[], &["--coordinator", "ftp://x", "get", "ds"]),
        1,
    );
    assert!(err.contains("invalid coordinator URL \"ftp://x\""), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Where the coordinator comes from

#[test]
fn environment_variables() {
    let stub = Stub::start();
    let s = Scratch::new("env");
    let token = s.token("read.token");
    let out = ok(&hostset_in(
        &s.0,
        &[
            ("HOSTSET_COORDINATOR", &stub.url),
            ("HOSTSET_TOKEN_FILE", &token),
        ],
        &["get", "nodes", "-o", "json"],
    ));
    assert_eq!(json_of(&out), stub.served("GET", "/v1/nodes"));
    assert_eq!(
        stub.seen()[0].authorization.as_deref(),
        Some("Bearer read-token")
    );
}

#[test]
fn agent_toml_is_the_fallback() {
    let stub = Stub::start();
    let s = Scratch::new("agent-toml");
    // The agent's file, with tables and keys the CLI does not care about.
    fs::write(
        s.path("agent.toml"),
        format!(
            "spec_dir = \"/etc/hostset/daemonsets.d\"\n\n[thresholds]\nmemory_available = \
             \"100Mi\"\n\n[coordinator]\nurl = \"{}/\"\ntoken_file = \"{}\"\n",
            stub.url,
            s.token("read.token")
        ),
    )
    .unwrap();
    let out = ok(&hostset_in(&s.0, &[], &["get", "ds", "-o", "json"]));
    assert_eq!(json_of(&out), stub.served("GET", "/v1/daemonsets"));
    assert_eq!(
        stub.seen()[0].authorization.as_deref(),
        Some("Bearer read-token")
    );

    // A token file named on the command line wins over the file's.
    let agent = s.token("agent.token");
    ok(&hostset_in(
        &s.0,
        &[],
        &["--token-file", &agent, "get", "ds"],
    ));
    assert_eq!(
        stub.seen()[1].authorization.as_deref(),
        Some("Bearer agent-token")
    );

    // The same coordinator named by the environment keeps the file's token...
    ok(&hostset_in(
        &s.0,
        &[("HOSTSET_COORDINATOR", &stub.url)],
        &["get", "nodes"],
    ));
    assert_eq!(
        stub.seen()[2].authorization.as_deref(),
        Some("Bearer read-token")
    );

    // ...another one does not get it.
    let other = Stub::start();
    let err = fails(
        &hostset_in(&s.0, &[], &["--coordinator", &other.url, "get", "ds"]),
        1,
    );
    assert!(err.contains("wants a token, and none was given"), "{err}");
    assert_eq!(other.seen()[0].authorization, None);
}

#[test]
fn tls_with_the_coordinators_ca() {
    let stub = Stub::start_tls();
    let s = Scratch::new("tls");
    fs::write(s.path("ca.pem"), TEST_CA).unwrap();
    let ca = s.token("ca.pem");
    let token = s.token("read.token");
    let out = ok(&hostset_in(
        &s.0,
        &[],
        &[
            "--coordinator",
            &stub.url,
            "--token-file",
            &token,
            "--ca-file",
            &ca,
            "get",
            "ds",
            "-o",
            "json",
        ],
    ));
    assert_eq!(json_of(&out), stub.served("GET", "/v1/daemonsets"));

    // The CA from the environment, and from agent.toml.
    ok(&hostset_in(
        &s.0,
        &[("HOSTSET_CA_FILE", &ca)],
        &[
            "--coordinator",
            &stub.url,
            "--token-file",
            &token,
            "get",
            "ds",
        ],
    ));
    fs::write(
        s.path("agent.toml"),
        format!(
            "[coordinator]\nurl = \"{}\"\ntoken_file = \"read.token\"\nca_file = \"ca.pem\"\n",
            stub.url
        ),
    )
    .unwrap();
    ok(&hostset_in(&s.0, &[], &["get", "nodes"]));
    assert_eq!(stub.seen().len(), 3);

    // Without it, the certificate is not trusted, and nothing is sent.
    fs::remove_file(s.path("agent.toml")).unwrap();
    let err = fails(
        &hostset_in(
            &s.0,
            &[],
            &[
                "--coordinator",
                &stub.url,
                "--token-file",
                &token,
                "get",
                "ds",
            ],
        ),
        1,
    );
    assert!(
        err.starts_with(&format!(
            "hostset: cannot reach the coordinator at {}: invalid peer certificate",
            stub.url
        )),
        "{err}"
    );
    assert!(err.contains("--ca-file"), "{err}");
    assert_eq!(stub.seen().len(), 3);

    // A CA file that is not one.
    let err = fails(
        &hostset_in(
            &s.0,
            &[],
            &["--coordinator", &stub.url, "--ca-file", &token, "get", "ds"],
        ),
        1,
    );
    assert_eq!(
        err,
        format!("hostset: the CA file {token} holds no PEM certificate\n")
    );
}

#[test]
fn help_has_examples() {
    let s = Scratch::new("help");
    for args in [
        vec!["get", "--help"],
        vec!["get", "daemonsets", "--help"],
        vec!["get", "nodes", "--help"],
        vec!["get", "endpoints", "--help"],
        vec!["describe", "--help"],
        vec!["describe", "daemonset", "--help"],
        vec!["describe", "node", "--help"],
        vec!["node", "delete", "--help"],
    ] {
        let out = ok(&hostset_in(&s.0, &[], &args));
        assert!(out.contains("Examples:"), "{args:?}: {out}");
    }
    let o = hostset_in(&s.0, &[], &["get", "ds", "-o", "xml"]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
    let o = hostset_in(&s.0, &[], &["get", "pods"]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
}
