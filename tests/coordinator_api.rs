//! The coordinator service (`hostset::coordinator`) over real HTTP: an in-process server on
//! 127.0.0.1:0 with its own state directory, spec directory and token files under the
//! system's temp directory, and reqwest as the client.
//!
//! Time is the state's injected clock (an atomic the tests move), never a sleep; the only
//! real waiting is for inotify to see a spec file change.
//!
//! One end-to-end test runs `units/hostset-coordinator.service` under systemd 252 in a
//! systemd-nspawn node (`tests/support/fleet.rs`: root, systemd-nspawn and the test rootfs;
//! `HOSTSET_SKIP_E2E=1` skips it).
#![cfg(feature = "coordinator")]

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hostset::api::{DaemonSetDetail, DaemonSetView, Endpoint, NodeView};
use hostset::coordinator::config::Config;
use hostset::coordinator::{self, AppState};
use hostset::report::{DaemonSetReport, Heartbeat, NodeInfo, NodeReport};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Fixtures

const AGENT: &str = "agent-token-0123456789abcdef";
const BOUND_A: &str = "bound-token-for-node-a-0123456";
const READER: &str = "reader-token-0123456789abcdef";
const WRONG: &str = "nobody-issued-this-token-0123";
const T0: u64 = 1_700_000_000;

const WEB: &str = "name = \"web\"\nselector.matchLabels = { app = \"web\" }\n\
                   template.labels = { app = \"web\" }\ncommand = [\"/usr/bin/web\"]\n\
                   [[ports]]\nname = \"http\"\nport = 8080\n";
const SSD: &str = "name = \"ssd-only\"\nselector.matchLabels = { app = \"ssd\" }\n\
                   template.labels = { app = \"ssd\" }\ncommand = [\"/usr/bin/ssd\"]\n\
                   nodeSelector = { disktype = \"ssd\" }\n";

/// A directory of its own under the system's temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "hostset-coordinator-api-{}-{n}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(path.join("specs")).unwrap();
        for d in [&path, &path.join("specs")] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Write `text` to `path` with `mode`, through a temp file and a rename (as careful writers do).
fn write(path: &Path, text: &str, mode: u32) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_str().unwrap()
    ));
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// The files of a coordinator: state, specs, tokens; and its configuration.
struct Setup {
    dir: TempDir,
    config: Config,
    clock: Arc<AtomicU64>,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let dir = TempDir::new(tag);
        let root = dir.0.clone();
        write(
            &root.join("agent-tokens"),
            &format!("# agents\n{AGENT}\n{BOUND_A} node-a\n"),
            0o600,
        );
        write(&root.join("read-tokens"), &format!("{READER}\n"), 0o600);
        write(&root.join("specs/web.toml"), WEB, 0o644);
        write(&root.join("specs/ssd-only.toml"), SSD, 0o644);
        let mut config = Config::defaults(&root, Some(&root.join("state")));
        config.spec_dir = root.join("specs");
        config.spec_owner = fs::metadata(&root).unwrap().uid();
        config.agent_token_file = root.join("agent-tokens");
        config.read_token_file = root.join("read-tokens");
        Setup {
            dir,
            config,
            clock: Arc::new(AtomicU64::new(T0)),
        }
    }

    fn root(&self) -> &Path {
        &self.dir.0
    }

    fn open(&self) -> AppState {
        let clock = self.clock.clone();
        AppState::open(&self.config, Arc::new(move || clock.load(Ordering::SeqCst))).unwrap()
    }

    /// Move the clock.
    fn advance(&self, seconds: u64) {
        self.clock.fetch_add(seconds, Ordering::SeqCst);
    }

    async fn start(&self) -> Server {
        let state = self.open();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(coordinator::serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Server {
            base,
            client: client(),
            state: Some(state),
            shutdown: Some(tx),
            task: Some(task),
        }
    }
}

/// A plain HTTP client (reqwest with rustls needs the process's crypto provider even so).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A running coordinator.
struct Server {
    base: String,
    client: reqwest::Client,
    state: Option<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// What a request got back.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `error` of an error answer.
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {}", self.body))
            .to_string()
    }
}

impl Server {
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        Answer {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(Method::GET, path, token, None).await
    }

    async fn report(&self, token: Option<&str>, report: &NodeReport) -> Answer {
        let body = serde_json::to_vec(report).unwrap();
        self.send(Method::POST, "/v1/reports", token, Some(body))
            .await
    }

    async fn heartbeat(
        &self,
        token: Option<&str>,
        node: &str,
        instance: &str,
        sequence: u64,
    ) -> Answer {
        let hb = Heartbeat {
            agent_instance: instance.to_string(),
            sequence,
            generated_at: T0,
        };
        let path = format!("/v1/nodes/{node}/heartbeat");
        self.send(
            Method::POST,
            &path,
            token,
            Some(serde_json::to_vec(&hb).unwrap()),
        )
        .await
    }

    async fn daemonsets(&self) -> Vec<DaemonSetView> {
        let a = self.get("/v1/daemonsets", Some(READER)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        serde_json::from_str(&a.body).unwrap()
    }

    async fn daemonset(&self, name: &str) -> DaemonSetView {
        self.daemonsets()
            .await
            .into_iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no daemonset {name}"))
    }

    async fn nodes(&self) -> Vec<NodeView> {
        let a = self.get("/v1/nodes", Some(READER)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        serde_json::from_str(&a.body).unwrap()
    }

    /// Everything a refused request must leave as it was.
    async fn snapshot(&self) -> (String, String) {
        let nodes = self.get("/v1/nodes", Some(AGENT)).await.body;
        let daemonsets = self.get("/v1/daemonsets", Some(AGENT)).await.body;
        (nodes, daemonsets)
    }

    /// Stop serving (as on SIGTERM) and wait for the heartbeats to be written.
    async fn stop(mut self) {
        self.state.take();
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// A report of `node` by agent `instance`, with `daemonsets`.
fn report(
    node: &str,
    instance: &str,
    sequence: u64,
    daemonsets: Vec<DaemonSetReport>,
) -> NodeReport {
    NodeReport {
        agent_version: "0.1.0".into(),
        agent_instance: instance.into(),
        sequence,
        generated_at: T0,
        node: NodeInfo {
            name: node.into(),
            labels: [("kubernetes.io/hostname".to_string(), node.to_string())]
                .into_iter()
                .collect(),
            taints: Vec::new(),
            unschedulable: false,
            addresses: vec![format!("10.0.0.{}", node.len())],
            conditions: Vec::new(),
        },
        daemonsets,
        diagnostics: Vec::new(),
        errors: Vec::new(),
        git: None,
    }
}

/// The daemonset `name` running (and ready) at `revision`.
fn running(name: &str, revision: &str) -> DaemonSetReport {
    DaemonSetReport {
        name: name.into(),
        file: format!("/etc/hostset/daemonsets.d/{name}.toml"),
        held: false,
        should_run: true,
        should_continue_running: true,
        reasons: Vec::new(),
        unit: format!("hostset-{name}.service"),
        state: "active/running".into(),
        current_revision: revision.into(),
        desired_revision: revision.into(),
        evict_in_seconds: None,
        last_error: String::new(),
        ready: true,
        restarts: 0,
        main_pid: 42,
        started_at: Some(T0 - 100),
        memory_bytes: None,
        cpu_nanoseconds: None,
        ready_since: None,
        readiness: String::new(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Reports and views

#[tokio::test]
async fn reports_show_in_every_view() {
    let setup = Setup::new("views");
    let s = setup.start().await;
    let web = s.daemonset("web").await;
    assert_eq!((web.generation, web.created_at), (1, T0));
    assert_eq!(web.status.desired_number_scheduled, 0, "no nodes yet");

    // node-a runs web at the current revision; node-b does not run it (yet).
    let a = s
        .report(
            Some(AGENT),
            &report("node-a", "i-a", 1, vec![running("web", &web.revision)]),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert!(a.body.is_empty());
    let b = s
        .report(Some(AGENT), &report("node-b", "i-b", 1, Vec::new()))
        .await;
    assert_eq!(b.status, StatusCode::NO_CONTENT, "{}", b.body);

    let st = s.daemonset("web").await.status;
    assert_eq!(
        (
            st.desired_number_scheduled,
            st.current_number_scheduled,
            st.number_ready,
            st.updated_number_scheduled,
            st.number_available,
            st.number_unavailable,
            st.number_misscheduled,
        ),
        (2, 1, 1, 1, 1, 1, 0)
    );
    // ssd-only: no node has disktype=ssd.
    assert_eq!(
        s.daemonset("ssd-only")
            .await
            .status
            .desired_number_scheduled,
        0
    );

    let nodes = s.nodes().await;
    let names: Vec<(&str, &str)> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.status.as_str()))
        .collect();
    assert_eq!(names, [("node-a", "Ready"), ("node-b", "Ready")]);
    assert_eq!((nodes[0].first_seen, nodes[0].last_seen), (T0, T0));

    let node = s.get("/v1/nodes/node-a", Some(READER)).await;
    assert_eq!(node.status, StatusCode::OK);
    let node = node.json();
    assert_eq!(node["node"]["name"], "node-a");
    assert_eq!(node["report"]["agentInstance"], "i-a");
    assert_eq!(node["report"]["daemonsets"][0]["name"], "web");

    let detail = s.get("/v1/daemonsets/web", Some(READER)).await;
    assert_eq!(detail.status, StatusCode::OK);
    let detail: DaemonSetDetail = serde_json::from_str(&detail.body).unwrap();
    assert_eq!(detail.daemonset.name, "web");
    assert_eq!(detail.nodes.len(), 2);

    let endpoints = s.get("/v1/daemonsets/web/endpoints", Some(READER)).await;
    assert_eq!(endpoints.status, StatusCode::OK);
    let endpoints: Vec<Endpoint> = serde_json::from_str(&endpoints.body).unwrap();
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    assert_eq!(endpoints[0].node, "node-a");
    assert_eq!(endpoints[0].ports[0].port, 8080);

    for path in [
        "/v1/daemonsets/nope",
        "/v1/daemonsets/nope/endpoints",
        "/v1/nodes/nope",
        "/v1/nothing-here",
    ] {
        let a = s.get(path, Some(READER)).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            a.error().contains("nope") || a.error().contains("no such path"),
            "{path}: {}",
            a.body
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn heartbeats_keep_a_node_ready_and_conflicts_ask_for_a_report() {
    let setup = Setup::new("heartbeat");
    let s = setup.start().await;

    // Unknown node: 409.
    let a = s.heartbeat(Some(AGENT), "node-a", "i-a", 1).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(a.error().contains("unknown"), "{}", a.body);

    assert_eq!(
        s.report(Some(AGENT), &report("node-a", "i-a", 3, Vec::new()))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    setup.advance(30);
    let a = s.heartbeat(Some(AGENT), "node-a", "i-a", 3).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let n = &s.nodes().await[0];
    assert_eq!(
        (n.first_seen, n.last_seen, n.status.as_str()),
        (T0, T0 + 30, "Ready")
    );

    // Another sequence or another instance: 409, and last_seen stays.
    setup.advance(5);
    for (instance, seq) in [("i-a", 2), ("i-a", 4), ("i-other", 3)] {
        let a = s.heartbeat(Some(AGENT), "node-a", instance, seq).await;
        assert_eq!(a.status, StatusCode::CONFLICT, "{instance} {seq}");
        assert!(a.error().contains("send a full report"), "{}", a.body);
    }
    assert_eq!(s.nodes().await[0].last_seen, T0 + 30);

    // A stale report (older sequence, same instance): 409, the stored report stays.
    let a = s
        .report(
            Some(AGENT),
            &report("node-a", "i-a", 2, vec![running("web", "old")]),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(a.error().contains("stale"), "{}", a.body);
    let stored = s.get("/v1/nodes/node-a", Some(READER)).await.json();
    assert_eq!(stored["report"]["sequence"], 3);
    assert_eq!(stored["report"]["daemonsets"], json!([]));

    // A restarted agent (new instance) starts its sequence again: accepted.
    let a = s
        .report(Some(AGENT), &report("node-a", "i-new", 1, Vec::new()))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let n = &s.nodes().await[0];
    assert_eq!((n.first_seen, n.last_seen), (T0, T0 + 35));
    assert_eq!(
        s.heartbeat(Some(AGENT), "node-a", "i-new", 1).await.status,
        StatusCode::NO_CONTENT
    );
    s.stop().await;
}

#[tokio::test]
async fn a_silent_node_becomes_not_ready_after_the_grace_period() {
    let setup = Setup::new("grace");
    let s = setup.start().await;
    let rev = s.daemonset("web").await.revision;
    s.report(
        Some(AGENT),
        &report("node-a", "i-a", 1, vec![running("web", &rev)]),
    )
    .await;

    setup.advance(40); // exactly the grace period: still Ready
    assert_eq!(s.nodes().await[0].status, "Ready");
    assert_eq!(s.daemonset("web").await.status.number_ready, 1);

    setup.advance(1);
    assert_eq!(s.nodes().await[0].status, "NotReady");
    let st = s.daemonset("web").await.status;
    assert_eq!(
        (
            st.desired_number_scheduled,
            st.number_ready,
            st.number_available
        ),
        (1, 0, 0),
        "a silent node stays desired, its daemon is not vouched for"
    );

    // The next heartbeat brings it back.
    assert_eq!(
        s.heartbeat(Some(AGENT), "node-a", "i-a", 1).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.nodes().await[0].status, "Ready");
    assert_eq!(s.daemonset("web").await.status.number_ready, 1);
    s.stop().await;
}

#[tokio::test]
async fn goodbye_removes_a_node_from_coverage() {
    let setup = Setup::new("delete");
    let s = setup.start().await;
    let rev = s.daemonset("web").await.revision;
    for node in ["node-a", "node-b"] {
        s.report(
            Some(AGENT),
            &report(node, node, 1, vec![running("web", &rev)]),
        )
        .await;
    }
    assert_eq!(s.daemonset("web").await.status.desired_number_scheduled, 2);

    let a = s
        .send(Method::DELETE, "/v1/nodes/node-b", Some(AGENT), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let names: Vec<String> = s.nodes().await.into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["node-a"]);
    let st = s.daemonset("web").await.status;
    assert_eq!(
        (st.desired_number_scheduled, st.current_number_scheduled),
        (1, 1)
    );
    assert_eq!(
        s.get("/v1/nodes/node-b", Some(READER)).await.status,
        StatusCode::NOT_FOUND
    );

    let a = s
        .send(Method::DELETE, "/v1/nodes/node-b", Some(AGENT), None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.error().contains("node-b"), "{}", a.body);
    // Its heartbeat now asks for a full report.
    assert_eq!(
        s.heartbeat(Some(AGENT), "node-b", "node-b", 1).await.status,
        StatusCode::CONFLICT
    );
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Authentication and authorization

#[tokio::test]
async fn refused_requests_change_nothing() {
    let setup = Setup::new("auth");
    let s = setup.start().await;
    assert_eq!(
        s.report(Some(AGENT), &report("node-a", "i-a", 1, Vec::new()))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.report(Some(AGENT), &report("node-b", "i-b", 1, Vec::new()))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let before = s.snapshot().await;

    let newer_a =
        serde_json::to_vec(&report("node-a", "i-a", 2, vec![running("web", "x")])).unwrap();
    let newer_b =
        serde_json::to_vec(&report("node-b", "i-b", 2, vec![running("web", "x")])).unwrap();
    let hb_b = serde_json::to_vec(&Heartbeat {
        agent_instance: "i-b".into(),
        sequence: 1,
        generated_at: T0,
    })
    .unwrap();
    setup.advance(10); // a refused heartbeat must not move last_seen either

    struct Case {
        what: &'static str,
        method: Method,
        path: &'static str,
        token: Option<&'static str>,
        raw_auth: Option<&'static str>,
        body: Option<Vec<u8>>,
        status: StatusCode,
    }
    let case = |what, method, path, token, body: Option<&Vec<u8>>, status| Case {
        what,
        method,
        path,
        token,
        raw_auth: None,
        body: body.cloned(),
        status,
    };
    let mut cases = vec![
        case(
            "report without a token",
            Method::POST,
            "/v1/reports",
            None,
            Some(&newer_a),
            StatusCode::UNAUTHORIZED,
        ),
        case(
            "report with an unknown token",
            Method::POST,
            "/v1/reports",
            Some(WRONG),
            Some(&newer_a),
            StatusCode::UNAUTHORIZED,
        ),
        case(
            "report with a read token",
            Method::POST,
            "/v1/reports",
            Some(READER),
            Some(&newer_a),
            StatusCode::FORBIDDEN,
        ),
        case(
            "report for another node",
            Method::POST,
            "/v1/reports",
            Some(BOUND_A),
            Some(&newer_b),
            StatusCode::FORBIDDEN,
        ),
        case(
            "heartbeat without a token",
            Method::POST,
            "/v1/nodes/node-b/heartbeat",
            None,
            Some(&hb_b),
            StatusCode::UNAUTHORIZED,
        ),
        case(
            "heartbeat with a read token",
            Method::POST,
            "/v1/nodes/node-b/heartbeat",
            Some(READER),
            Some(&hb_b),
            StatusCode::FORBIDDEN,
        ),
        case(
            "heartbeat for another node",
            Method::POST,
            "/v1/nodes/node-b/heartbeat",
            Some(BOUND_A),
            Some(&hb_b),
            StatusCode::FORBIDDEN,
        ),
        case(
            "goodbye without a token",
            Method::DELETE,
            "/v1/nodes/node-b",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        case(
            "goodbye with an unknown token",
            Method::DELETE,
            "/v1/nodes/node-b",
            Some(WRONG),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        case(
            "goodbye with a read token",
            Method::DELETE,
            "/v1/nodes/node-b",
            Some(READER),
            None,
            StatusCode::FORBIDDEN,
        ),
        case(
            "goodbye for another node",
            Method::DELETE,
            "/v1/nodes/node-b",
            Some(BOUND_A),
            None,
            StatusCode::FORBIDDEN,
        ),
        case(
            "nodes without a token",
            Method::GET,
            "/v1/nodes",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        case(
            "daemonsets with an unknown token",
            Method::GET,
            "/v1/daemonsets",
            Some(WRONG),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        case(
            "metrics without a token",
            Method::GET,
            "/metrics",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (what, raw) in [
        ("report with Basic auth", "Basic YWdlbnQ6dG9rZW4="),
        ("report with an empty bearer", "Bearer "),
    ] {
        cases.push(Case {
            raw_auth: Some(raw),
            ..case(
                what,
                Method::POST,
                "/v1/reports",
                None,
                Some(&newer_a),
                StatusCode::UNAUTHORIZED,
            )
        });
    }
    for c in cases {
        let mut req = s
            .client
            .request(c.method.clone(), format!("{}{}", s.base, c.path));
        if let Some(t) = c.token {
            req = req.bearer_auth(t);
        }
        if let Some(raw) = c.raw_auth {
            req = req.header("authorization", raw);
        }
        if let Some(b) = c.body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let challenge = resp.headers().get("www-authenticate").cloned();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, c.status, "{}: {body}", c.what);
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}: {body}",
            c.what
        );
        if status == StatusCode::UNAUTHORIZED {
            let challenge = challenge.unwrap_or_else(|| panic!("{}: no WWW-Authenticate", c.what));
            assert!(
                challenge.to_str().unwrap().starts_with("Bearer"),
                "{}",
                c.what
            );
        }
        assert_eq!(s.snapshot().await, before, "{} changed something", c.what);
    }

    // What each token may do.
    for token in [READER, AGENT, BOUND_A] {
        for path in [
            "/v1/nodes",
            "/v1/daemonsets",
            "/v1/daemonsets/web",
            "/v1/nodes/node-b",
            "/metrics",
        ] {
            assert_eq!(
                s.get(path, Some(token)).await.status,
                StatusCode::OK,
                "{token} GET {path}"
            );
        }
    }
    for path in ["/healthz", "/"] {
        let a = s.get(path, None).await;
        assert_eq!(a.status, StatusCode::OK, "{path} needs no token");
    }
    assert_eq!(s.get("/healthz", None).await.body, "ok");
    let a = s
        .report(Some(BOUND_A), &report("node-a", "i-a", 2, Vec::new()))
        .await;
    assert_eq!(
        a.status,
        StatusCode::NO_CONTENT,
        "a node-bound token reports for its node: {}",
        a.body
    );
    let a = s.heartbeat(Some(BOUND_A), "node-a", "i-a", 2).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = s
        .send(Method::DELETE, "/v1/nodes/node-a", Some(BOUND_A), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    s.stop().await;
}

#[tokio::test]
async fn token_files_are_reread_and_must_be_private() {
    let setup = Setup::new("tokens");
    let s = setup.start().await;
    const NEW: &str = "a-token-added-later-0123456789";
    assert_eq!(
        s.get("/v1/nodes", Some(NEW)).await.status,
        StatusCode::UNAUTHORIZED
    );

    let agent_file = setup.root().join("agent-tokens");
    write(&agent_file, &format!("{NEW} node-z\n"), 0o600);
    s.state.as_ref().unwrap().reload_tokens().unwrap(); // as on SIGHUP
    assert_eq!(s.get("/v1/nodes", Some(NEW)).await.status, StatusCode::OK);
    assert_eq!(
        s.get("/v1/nodes", Some(AGENT)).await.status,
        StatusCode::UNAUTHORIZED,
        "removed"
    );
    let a = s
        .report(Some(NEW), &report("node-a", "i", 1, Vec::new()))
        .await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "bound to node-z: {}",
        a.body
    );

    // Without a signal: seen within a second.
    write(&agent_file, &format!("{AGENT}\n"), 0o600);
    let mut waited = Duration::ZERO;
    while s.get("/v1/nodes", Some(AGENT)).await.status != StatusCode::OK {
        assert!(
            waited < Duration::from_secs(3),
            "the edited token file was not re-read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }

    // A broken or exposed file keeps the tokens in force.
    write(&agent_file, "short\n", 0o600);
    let err = s
        .state
        .as_ref()
        .unwrap()
        .reload_tokens()
        .unwrap_err()
        .to_string();
    assert!(err.contains("agent-tokens:1:"), "{err}");
    assert_eq!(s.get("/v1/nodes", Some(AGENT)).await.status, StatusCode::OK);
    write(&agent_file, &format!("{AGENT}\n"), 0o640);
    let err = s
        .state
        .as_ref()
        .unwrap()
        .reload_tokens()
        .unwrap_err()
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");
    s.stop().await;

    // ... and a coordinator does not start with it.
    let err = AppState::open(&setup.config, coordinator::system_clock())
        .err()
        .expect("an exposed token file is refused")
        .to_string();
    assert!(
        err.contains("agent-tokens") && err.contains("0640"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bodies

#[tokio::test]
async fn oversized_and_malformed_reports_are_refused_with_a_reason() {
    let mut setup = Setup::new("bodies");
    setup.config.max_report_bytes = 4096;
    let s = setup.start().await;
    assert_eq!(
        s.report(Some(AGENT), &report("node-a", "i-a", 1, Vec::new()))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let before = s.snapshot().await;

    let mut big = report("node-a", "i-a", 2, Vec::new());
    big.diagnostics = vec!["x".repeat(5000)];
    let a = s.report(Some(AGENT), &big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.error().contains("4096"), "{}", a.body);

    let mut unnamed = report("node-a", "i-a", 2, Vec::new());
    unnamed.node.name = String::new();
    let mut misnamed = report("node-a", "i-a", 2, Vec::new());
    misnamed.node.name = "Node_A".into();
    let bodies: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not JSON",
            b"{\"agentVersion\": ".to_vec(),
            "invalid report",
        ),
        ("wrong shape", b"{\"node\": 1}".to_vec(), "invalid report"),
        (
            "empty name",
            serde_json::to_vec(&unnamed).unwrap(),
            "node.name is empty",
        ),
        (
            "invalid name",
            serde_json::to_vec(&misnamed).unwrap(),
            "Node_A",
        ),
    ];
    for (what, body, reason) in bodies {
        let a = s
            .send(Method::POST, "/v1/reports", Some(AGENT), Some(body))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{what}: {}", a.body);
        assert!(a.error().contains(reason), "{what}: {}", a.body);
    }
    let a = s
        .send(
            Method::POST,
            "/v1/nodes/node-a/heartbeat",
            Some(AGENT),
            Some(b"[]".to_vec()),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("invalid heartbeat"), "{}", a.body);
    assert_eq!(s.snapshot().await, before);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Specs

/// Wait (inotify, debounced) until `check` holds for the daemonsets.
async fn eventually(s: &Server, what: &str, check: impl Fn(&[DaemonSetView]) -> bool) {
    for _ in 0..100 {
        if check(&s.daemonsets().await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not seen within 5 s: {:?}", s.daemonsets().await);
}

#[tokio::test]
async fn spec_changes_are_new_generations() {
    let setup = Setup::new("generation");
    let s = setup.start().await;
    let web = s.daemonset("web").await;
    assert_eq!(web.generation, 1);
    let file = setup.root().join("specs/web.toml");
    assert_eq!(web.file, file.display().to_string());

    // A new process: generation 2, a new revision, the same creation time.
    setup.advance(100);
    write(&file, &WEB.replace("/usr/bin/web", "/usr/bin/web2"), 0o644);
    eventually(&s, "generation 2", |d| {
        d.iter().any(|d| d.name == "web" && d.generation == 2)
    })
    .await;
    let web2 = s.daemonset("web").await;
    assert_ne!(web2.revision, web.revision);
    assert_eq!(web2.created_at, T0);

    // Labels of the daemonset itself are no spec change.
    write(
        &file,
        &format!(
            "labels = {{ team = \"a\" }}\n{}",
            WEB.replace("/usr/bin/web", "/usr/bin/web2")
        ),
        0o644,
    );
    // An invalid file keeps the last valid version (and its generation).
    write(
        &setup.root().join("specs/ssd-only.toml"),
        "name = \"ssd-only\"\nbogus = 1\n",
        0o644,
    );
    write(
        &setup.root().join("specs/new.toml"),
        &WEB.replace("\"web\"", "\"new\""),
        0o644,
    );
    eventually(&s, "new daemonset", |d| d.iter().any(|d| d.name == "new")).await;
    assert_eq!(s.daemonset("web").await.generation, 2);
    assert_eq!(s.daemonset("ssd-only").await.generation, 1);
    assert_eq!(s.daemonset("new").await.created_at, T0 + 100);

    // Removed: gone from the API.
    fs::remove_file(setup.root().join("specs/new.toml")).unwrap();
    eventually(&s, "removal", |d| !d.iter().any(|d| d.name == "new")).await;
    assert_eq!(
        s.get("/v1/daemonsets/new", Some(READER)).await.status,
        StatusCode::NOT_FOUND
    );
    s.stop().await;

    // Edited while the coordinator was down: counted once at start.
    write(&file, WEB, 0o644);
    let s = setup.start().await;
    let web = s.daemonset("web").await;
    assert_eq!((web.generation, web.created_at), (3, T0));
    s.stop().await;
}

#[tokio::test]
async fn a_spec_directory_that_appears_later_is_watched() {
    let setup = Setup::new("late-dir");
    let specs = setup.root().join("specs");
    fs::remove_dir_all(&specs).unwrap();
    let s = setup.start().await;
    assert!(s.daemonsets().await.is_empty());

    fs::create_dir(&specs).unwrap();
    fs::set_permissions(&specs, fs::Permissions::from_mode(0o755)).unwrap();
    write(&specs.join("web.toml"), WEB, 0o644);
    eventually(&s, "the new directory's daemonset", |d| d.len() == 1).await;
    // And it is watched now.
    write(&specs.join("ssd-only.toml"), SSD, 0o644);
    eventually(&s, "a second daemonset", |d| d.len() == 2).await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Restart

#[tokio::test]
async fn state_survives_a_restart() {
    let setup = Setup::new("restart");
    let s = setup.start().await;
    let rev = s.daemonset("web").await.revision;
    s.report(
        Some(AGENT),
        &report("node-a", "i-a", 7, vec![running("web", &rev)]),
    )
    .await;
    s.report(Some(AGENT), &report("node-b", "i-b", 1, Vec::new()))
        .await;
    setup.advance(20);
    // A heartbeat is only in memory until a flush: shutdown writes it.
    assert_eq!(
        s.heartbeat(Some(AGENT), "node-a", "i-a", 7).await.status,
        StatusCode::NO_CONTENT
    );
    let nodes_before = s.nodes().await;
    let views_before = s.daemonsets().await;
    s.stop().await;

    let s = setup.start().await;
    assert_eq!(s.nodes().await, nodes_before);
    assert_eq!(s.daemonsets().await, views_before);
    let a = s
        .nodes()
        .await
        .into_iter()
        .find(|n| n.name == "node-a")
        .unwrap();
    assert_eq!((a.first_seen, a.last_seen), (T0, T0 + 20));
    // The agent carries on with heartbeats: the coordinator still knows its report.
    assert_eq!(
        s.heartbeat(Some(AGENT), "node-a", "i-a", 7).await.status,
        StatusCode::NO_CONTENT
    );
    // And a stale report is still recognised.
    assert_eq!(
        s.report(Some(AGENT), &report("node-a", "i-a", 6, Vec::new()))
            .await
            .status,
        StatusCode::CONFLICT
    );
    let st = s.daemonset("web").await.status;
    assert_eq!((st.desired_number_scheduled, st.number_ready), (2, 1));
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[tokio::test]
async fn metrics_in_prometheus_text_format() {
    let setup = Setup::new("metrics");
    let s = setup.start().await;
    let rev = s.daemonset("web").await.revision;
    s.report(
        Some(AGENT),
        &report("node-a", "i-a", 1, vec![running("web", &rev)]),
    )
    .await;
    s.report(Some(AGENT), &report("node-b", "i-b", 1, Vec::new()))
        .await;
    s.heartbeat(Some(AGENT), "node-a", "i-a", 1).await;
    s.get("/v1/nodes", None).await; // unauthorized
    s.get("/v1/nodes", Some(WRONG)).await; // unauthorized
    s.report(Some(READER), &report("node-a", "i-a", 2, Vec::new()))
        .await; // forbidden
    s.report(Some(AGENT), &report("node-a", "i-a", 0, Vec::new()))
        .await; // stale
    setup.advance(41);
    s.heartbeat(Some(AGENT), "node-b", "i-b", 1).await; // node-a silent, node-b not

    let a = s.get("/metrics", Some(READER)).await;
    assert_eq!(a.status, StatusCode::OK);
    let content_type = a.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = a.body;
    let t = T0 + 41;
    for line in [
        "# HELP hostset_daemonset_status_desired_number_scheduled ",
        "# TYPE hostset_daemonset_status_desired_number_scheduled gauge",
        "hostset_daemonset_status_desired_number_scheduled{daemonset=\"web\"} 2",
        "hostset_daemonset_status_desired_number_scheduled{daemonset=\"ssd-only\"} 0",
        "hostset_daemonset_status_current_number_scheduled{daemonset=\"web\"} 1",
        "hostset_daemonset_status_number_misscheduled{daemonset=\"web\"} 0",
        "hostset_daemonset_status_number_ready{daemonset=\"web\"} 0",
        "hostset_daemonset_status_updated_number_scheduled{daemonset=\"web\"} 1",
        "hostset_daemonset_status_number_available{daemonset=\"web\"} 0",
        "hostset_daemonset_status_number_unavailable{daemonset=\"web\"} 2",
        "hostset_daemonset_metadata_generation{daemonset=\"web\"} 1",
        "# TYPE hostset_daemonset_status_observed_generation gauge",
        "hostset_node_status_ready{node=\"node-a\"} 0",
        "hostset_node_status_ready{node=\"node-b\"} 1",
        &format!("hostset_node_last_seen_timestamp_seconds{{node=\"node-a\"}} {T0}"),
        &format!("hostset_node_last_seen_timestamp_seconds{{node=\"node-b\"}} {t}"),
        "# TYPE hostset_coordinator_reports_total counter",
        "hostset_coordinator_reports_total 2",
        "hostset_coordinator_heartbeats_total 2",
        "hostset_coordinator_rejected_requests_total{reason=\"unauthorized\"} 2",
        "hostset_coordinator_rejected_requests_total{reason=\"forbidden\"} 1",
        "hostset_coordinator_rejected_requests_total{reason=\"stale\"} 1",
        "hostset_coordinator_rejected_requests_total{reason=\"too_large\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in:\n{text}"
        );
    }
    // Every sample line is `name{labels} value` with a family declared before it.
    let mut declared = std::collections::BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            declared.insert(rest.split(' ').next().unwrap().to_string());
        } else if !l.starts_with('#') {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(declared.contains(name), "{l}: no TYPE before it");
            assert!(l.rsplit(' ').next().unwrap().parse::<u64>().is_ok(), "{l}");
        }
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    ca: String,
    client: String,
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hostset test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) =
        leaf(vec!["node-a".into()], ExtendedKeyUsagePurpose::ClientAuth);
    write(&dir.join("ca.crt"), &ca.pem(), 0o644);
    write(&dir.join("tls.crt"), &server_cert, 0o644);
    write(&dir.join("tls.key"), &server_key, 0o600);
    Pki {
        ca: ca.pem(),
        client: format!("{client_cert}{client_key}"),
    }
}

async fn start_tls(setup: &Setup) -> (String, oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = setup.config.tls().unwrap().expect("TLS configured");
    let tls = coordinator::tls_config(&tls).unwrap();
    let state = setup.open();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(coordinator::serve_tls(listener, state, tls, async {
        let _ = rx.await;
    }));
    (base, tx, task)
}

fn https_client(ca: &str, identity: Option<&str>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(id.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn https_serves_the_api() {
    let mut setup = Setup::new("tls");
    let pki = pki(setup.root());
    setup.config.tls_cert = Some(setup.root().join("tls.crt"));
    setup.config.tls_key = Some(setup.root().join("tls.key"));
    let (base, stop, task) = start_tls(&setup).await;

    let client = https_client(&pki.ca, None);
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = serde_json::to_vec(&report("node-a", "i-a", 1, Vec::new())).unwrap();
    let r = client
        .post(format!("{base}/v1/reports"))
        .bearer_auth(AGENT)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = client
        .get(format!("{base}/v1/nodes"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    let nodes: Vec<NodeView> = r.json().await.unwrap();
    assert_eq!(nodes[0].name, "node-a");

    // A client that does not trust the CA gets nowhere.
    let stranger = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(
        stranger
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn client_certificates_are_required_with_a_client_ca() {
    let mut setup = Setup::new("mtls");
    let pki = pki(setup.root());
    setup.config.tls_cert = Some(setup.root().join("tls.crt"));
    setup.config.tls_key = Some(setup.root().join("tls.key"));
    setup.config.client_ca_file = Some(setup.root().join("ca.crt"));
    let (base, stop, task) = start_tls(&setup).await;

    let anonymous = https_client(&pki.ca, None);
    let refused = anonymous.get(format!("{base}/healthz")).send().await;
    assert!(
        refused.is_err(),
        "a client without a certificate was served: {refused:?}"
    );

    let client = https_client(&pki.ca, Some(&pki.client));
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .get(format!("{base}/v1/nodes"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the certificate comes on top of the token"
    );
    let r = client.get(format!("{base}/v1/nodes")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The unit, under systemd

/// `units/hostset-coordinator.service` as shipped: DynamicUser, the token files as
/// credentials, Type=notify, the hardening; the store survives a restart.
#[test]
fn the_unit_runs_under_systemd() {
    use support::fleet::{Fleet, NodeOpts};
    let Some(fleet) = Fleet::new("coordinator_unit") else {
        return;
    };
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("units/hostset-coordinator.service");
    let node = fleet.boot(
        NodeOpts::new("coord")
            .bind_ro(
                env!("CARGO_BIN_EXE_hostset-coordinator"),
                "/usr/bin/hostset-coordinator",
            )
            .bind_ro(unit, "/etc/systemd/system/hostset-coordinator.service"),
    );
    // Nodes share the host's network: a free port on the host is free in the node.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    node.write_file(
        "/etc/hostset/coordinator.toml",
        format!("listen = \"127.0.0.1:{port}\"\n"),
    );
    node.write_file("/etc/hostset/daemonsets.d/web.toml", WEB);
    // As the package creates them: root's alone.
    node.exec_ok(&["install", "-d", "-m", "0700", "/etc/hostset/coordinator"]);
    node.write_file(
        "/etc/hostset/coordinator/agent-tokens",
        format!("{AGENT}\n{BOUND_A} node-a\n"),
    );
    node.write_file(
        "/etc/hostset/coordinator/read-tokens",
        format!("{READER}\n"),
    );
    node.exec_ok(&[
        "chmod",
        "600",
        "/etc/hostset/coordinator/agent-tokens",
        "/etc/hostset/coordinator/read-tokens",
    ]);

    let start = |verb: &str| {
        let out = node.exec(&["systemctl", verb, "hostset-coordinator"]);
        assert!(
            out.status.success(),
            "systemctl {verb} hostset-coordinator: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            node.journal("hostset-coordinator")
        );
    };
    start("start"); // Type=notify: returns after READY=1

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    // No pooled connections: the coordinator restarts in between.
    let _ = client();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let get = |path: &str| {
        let req = client.get(format!("{base}{path}")).bearer_auth(READER);
        runtime.block_on(async { req.send().await.unwrap().text().await.unwrap() })
    };
    let views: Vec<DaemonSetView> = serde_json::from_str(&get("/v1/daemonsets")).unwrap();
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0].file, "/etc/hostset/daemonsets.d/web.toml");

    let body = serde_json::to_vec(&report(
        "node-a",
        "i-a",
        1,
        vec![running("web", &views[0].revision)],
    ))
    .unwrap();
    let req = client
        .post(format!("{base}/v1/reports"))
        .bearer_auth(BOUND_A)
        .body(body);
    let status = runtime.block_on(async { req.send().await.unwrap().status() });
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "{}",
        node.journal("hostset-coordinator")
    );

    let show = node.systemctl_show(
        "hostset-coordinator",
        &["User", "DynamicUser", "ActiveState"],
    );
    assert_eq!(show["ActiveState"], "active");
    assert_eq!(show["DynamicUser"], "yes");
    let journal = node.journal("hostset-coordinator");
    assert!(
        journal.contains("serving"),
        "the journal has the coordinator's logs:\n{journal}"
    );

    start("reload"); // SIGHUP
    start("restart");
    let nodes: Vec<NodeView> = serde_json::from_str(&get("/v1/nodes")).unwrap();
    assert_eq!(nodes.len(), 1, "the store survives a restart: {nodes:?}");
    let ready: Vec<DaemonSetView> = serde_json::from_str(&get("/v1/daemonsets")).unwrap();
    assert_eq!(ready[0].status.number_ready, 1);

    start("stop");
    let show = node.systemctl_show("hostset-coordinator", &["ActiveState", "Result"]);
    assert_eq!(
        (show["ActiveState"].as_str(), show["Result"].as_str()),
        ("inactive", "success")
    );
}

// ---------------------------------------------------------------------------------------------
// Rolling updates

const OPERATOR: &str = "operator-token-0123456789abcd";

/// `running` at `old`, waiting for a slot to move to `new`.
fn waiting(name: &str, old: &str, new: &str) -> DaemonSetReport {
    DaemonSetReport {
        desired_revision: new.into(),
        rollout: "waiting".into(),
        ..running(name, old)
    }
}

#[tokio::test]
async fn slots_pace_a_rolling_update_and_operators_steer_it() {
    let setup = Setup::new("rollout");
    write(
        &setup.root().join("read-tokens"),
        &format!("{READER}\n{OPERATOR} operator\n"),
        0o600,
    );
    let s = setup.start().await;
    let v1 = s.daemonset("web").await.revision;
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        let r = report(n, n, 1, vec![running("web", &v1)]);
        assert_eq!(
            s.report(Some(AGENT), &r).await.status,
            StatusCode::NO_CONTENT,
            "nothing to say to {i}"
        );
    }
    // A new revision: every node waits; one slot (maxUnavailable 1 of 3), by node name.
    let file = setup.root().join("specs/web.toml");
    write(&file, &WEB.replace("/usr/bin/web", "/usr/bin/web2"), 0o644);
    eventually(&s, "revision 2", |d| {
        d.iter().any(|d| d.name == "web" && d.revision != v1)
    })
    .await;
    let v2 = s.daemonset("web").await.revision;
    let mut answers = Vec::new();
    for n in ["a", "b", "c"] {
        let a = s
            .report(
                Some(AGENT),
                &report(n, n, 2, vec![waiting("web", &v1, &v2)]),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        answers.push(a.json());
    }
    assert_eq!(answers[0]["grants"]["web"], v2, "{:#}", answers[0]);
    for a in &answers[1..] {
        assert!(a["grants"].is_null(), "{a:#}");
        assert!(
            a["waits"]["web"]
                .as_str()
                .unwrap()
                .contains("maxUnavailable 1"),
            "{a:#}"
        );
    }
    // A held poll answers at once when the directives differ from what the agent has...
    let b = s
        .get("/v1/nodes/b/directives?wait=5&known=0000", Some(AGENT))
        .await;
    assert_eq!(b.status, StatusCode::OK);
    let etag = serde_json::from_str::<hostset::rollout::Directives>(&b.body)
        .unwrap()
        .etag();
    // ... and is woken when a slot frees up: a is updated and available.
    let poll = {
        let (base, client) = (s.base.clone(), s.client.clone());
        tokio::spawn(async move {
            client
                .get(format!("{base}/v1/nodes/b/directives?wait=20&known={etag}"))
                .bearer_auth(AGENT)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !poll.is_finished(),
        "the poll is held while nothing changes"
    );
    s.report(Some(AGENT), &report("a", "a", 3, vec![running("web", &v2)]))
        .await;
    let woken: Value = serde_json::from_str(
        &tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(woken["grants"]["web"], v2, "{woken:#}");

    // Steering needs an operator token.
    let pause = "/v1/daemonsets/web/rollout/pause";
    for t in [READER, AGENT] {
        let a = s
            .send(Method::POST, pause, Some(t), Some(b"{}".to_vec()))
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
        assert!(a.error().contains("operator"), "{}", a.error());
    }
    let a = s
        .send(Method::POST, pause, Some(OPERATOR), Some(b"{}".to_vec()))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    // Paused: c gets no slot even once b is done.
    s.report(Some(AGENT), &report("b", "b", 3, vec![running("web", &v2)]))
        .await;
    let c = s
        .report(
            Some(AGENT),
            &report("c", "c", 3, vec![waiting("web", &v1, &v2)]),
        )
        .await
        .json();
    assert!(
        c["waits"]["web"].as_str().unwrap().contains("paused"),
        "{c:#}"
    );
    let view = s.daemonset("web").await.rollout.unwrap();
    assert!(view.paused);
    assert_eq!(view.conditions[0].reason, "RolloutPaused");
    s.send(
        Method::POST,
        "/v1/daemonsets/web/rollout/resume",
        Some(OPERATOR),
        None,
    )
    .await;
    let c = s
        .report(
            Some(AGENT),
            &report("c", "c", 4, vec![waiting("web", &v1, &v2)]),
        )
        .await
        .json();
    assert_eq!(c["grants"]["web"], v2, "{c:#}");
    s.report(Some(AGENT), &report("c", "c", 5, vec![running("web", &v2)]))
        .await;
    let view = s.daemonset("web").await.rollout.unwrap();
    assert!(view.progress.complete, "{view:#?}");
    assert_eq!(view.revision_number, 2);

    // History and undo: revision 1 comes back as a pin, sent with every answer.
    let h = s
        .get("/v1/daemonsets/web/history", Some(READER))
        .await
        .json();
    assert_eq!(h.as_array().unwrap().len(), 2, "{h:#}");
    assert_eq!(h[1]["current"], true);
    let text = s
        .get("/v1/daemonsets/web/history?revision=1", Some(READER))
        .await
        .json();
    assert_eq!(text[0]["text"], WEB);
    let bad = s
        .send(
            Method::POST,
            "/v1/daemonsets/web/rollout/undo",
            Some(OPERATOR),
            Some(br#"{"toRevision": 9}"#.to_vec()),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(bad.error().contains("no revision 9"), "{}", bad.error());
    let undo = s
        .send(
            Method::POST,
            "/v1/daemonsets/web/rollout/undo",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(
        undo.json()["revertCommit"],
        "",
        "not from git: nothing to revert"
    );
    assert_eq!(
        undo.json()["revision"],
        3,
        "the old template as the newest revision: {}",
        undo.body
    );
    assert_eq!(
        s.daemonset("web").await.revision,
        v1,
        "the pinned revision is in force"
    );
    let a = s.heartbeat(Some(AGENT), "a", "a", 3).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let pin = &a.json()["pins"]["web"];
    assert_eq!(
        (pin["from"].as_str(), pin["to"].as_str()),
        (Some(v2.as_str()), Some(v1.as_str()))
    );
    assert_eq!(pin["text"], WEB);
    s.stop().await;

    // The pin and the history survive a restart.
    let s = setup.start().await;
    assert_eq!(
        s.daemonset("web").await.rollout.unwrap().pinned_revision,
        Some(3)
    );
    let h = s
        .get("/v1/daemonsets/web/history", Some(READER))
        .await
        .json();
    let numbers: Vec<(u64, bool)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["number"].as_u64().unwrap(),
                r["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(numbers, [(2, false), (3, true)], "{h:#}");
    s.stop().await;
}

#[tokio::test]
async fn a_slot_held_past_the_progress_deadline_halts_the_rollout() {
    let setup = Setup::new("deadline");
    let guarded = WEB.replace(
        "name = \"web\"\n",
        "name = \"web\"\nannotations = { \"hostset.io/progress-deadline-seconds\" = \"60\" }\n",
    );
    write(&setup.root().join("specs/web.toml"), &guarded, 0o644);
    let s = setup.start().await;
    let v1 = s.daemonset("web").await.revision;
    for n in ["a", "b"] {
        s.report(Some(AGENT), &report(n, n, 1, vec![running("web", &v1)]))
            .await;
    }
    write(
        &setup.root().join("specs/web.toml"),
        &guarded.replace("/usr/bin/web", "/usr/bin/bad"),
        0o644,
    );
    eventually(&s, "revision 2", |d| {
        d.iter().any(|d| d.name == "web" && d.revision != v1)
    })
    .await;
    let v2 = s.daemonset("web").await.revision;
    let a = s
        .report(
            Some(AGENT),
            &report("a", "a", 2, vec![waiting("web", &v1, &v2)]),
        )
        .await
        .json();
    assert_eq!(a["grants"]["web"], v2);
    // a's new daemon never becomes ready.
    let failing = DaemonSetReport {
        state: "activating/auto-restart".into(),
        ready: false,
        ..running("web", &v2)
    };
    s.report(Some(AGENT), &report("a", "a", 3, vec![failing]))
        .await;
    setup.advance(59);
    // (a keeps in touch: a silent node is the skip timeout's business, not the deadline's.)
    s.heartbeat(Some(AGENT), "a", "a", 3).await;
    let b = s
        .report(
            Some(AGENT),
            &report("b", "b", 2, vec![waiting("web", &v1, &v2)]),
        )
        .await
        .json();
    assert!(
        b["waits"]["web"]
            .as_str()
            .unwrap()
            .contains("waiting for a slot"),
        "{b:#}"
    );
    setup.advance(1);
    s.heartbeat(Some(AGENT), "a", "a", 3).await;
    let b = s
        .report(
            Some(AGENT),
            &report("b", "b", 3, vec![waiting("web", &v1, &v2)]),
        )
        .await
        .json();
    assert!(
        b["waits"]["web"].as_str().unwrap().contains("halted"),
        "{b:#}"
    );
    let view = s.daemonset("web").await.rollout.unwrap();
    let halt = view.halt.unwrap();
    assert_eq!(halt.hosts.len(), 1);
    assert!(halt.hosts[0].starts_with("a: "), "{:?}", halt.hosts);
    assert_eq!(view.conditions[0].reason, "ProgressDeadlineExceeded");
    assert_eq!(view.conditions[0].status, "False");
    s.stop().await;
}

#[tokio::test]
async fn daemonsets_the_coordinator_has_no_spec_of_are_the_nodes_own() {
    let setup = Setup::new("unmanaged");
    let s = setup.start().await;
    // A host-specific daemonset (in the node's own spec directory only) waits for a slot.
    let local = waiting("local-only", "r1", "r2");
    let a = s
        .report(Some(AGENT), &report("a", "a", 1, vec![local]))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let d: hostset::rollout::Directives = serde_json::from_str(&a.body).unwrap();
    assert!(d.unmanaged.contains("local-only"), "{d:?}");
    assert!(d.grants.is_empty() && d.waits.is_empty(), "{d:?}");
    s.stop().await;
}
