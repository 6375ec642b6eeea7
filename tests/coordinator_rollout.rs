//! The coordinator's rollout decisions over real HTTP reports: an in-process server on
//! 127.0.0.1:0 with its own state, spec directory and token files under the system's temp
//! directory. Time is the state's injected clock (an atomic the test moves), never a sleep;
//! the spec directory is re-read by calling `rescan_specs` (no waiting for inotify).
#![cfg(feature = "coordinator")]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hostset::coordinator::config::Config;
use hostset::coordinator::{self, AppState};
use hostset::report::{DaemonSetReport, NodeInfo, NodeReport};

const AGENT: &str = "agent-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";
const T0: u64 = 1_700_000_000;

fn spec(version: u32) -> String {
    format!(
        "name = \"web\"\nselector.matchLabels = {{ app = \"web\" }}\n\
         template.labels = {{ app = \"web\" }}\ncommand = [\"/usr/bin/web\"]\n\
         env = {{ VERSION = \"{version}\" }}\nminReadySeconds = 2\n\
         updateStrategy = {{ type = \"RollingUpdate\", maxUnavailable = 1 }}\n"
    )
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str, mode: u32) {
    let tmp = path.with_file_name(".tmp");
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// The revision the agents compute for the spec directory's daemonset.
fn revision(dir: &Path) -> String {
    let uid = fs::metadata(dir).unwrap().uid();
    let mut sd = hostset::source::SpecDir::new(dir).with_owner(uid);
    sd.rescan();
    hostset::unit::revision(&sd.daemonsets()[0].template)
}

/// `node`'s report: the unit of `current` (ready since `ready_since`, or starting), the spec
/// asking for `desired`.
fn report(
    node: &str,
    sequence: u64,
    current: &str,
    desired: &str,
    ready_since: Option<u64>,
) -> NodeReport {
    NodeReport {
        agent_version: "0.1.0".into(),
        agent_instance: format!("instance-of-{node}"),
        sequence,
        generated_at: T0,
        node: NodeInfo {
            name: node.into(),
            labels: [("kubernetes.io/hostname".to_string(), node.to_string())]
                .into_iter()
                .collect(),
            taints: Vec::new(),
            unschedulable: false,
            addresses: Vec::new(),
            conditions: Vec::new(),
        },
        daemonsets: vec![DaemonSetReport {
            name: "web".into(),
            file: "web.toml".into(),
            should_run: true,
            should_continue_running: true,
            unit: "hostset-web.service".into(),
            state: if ready_since.is_some() {
                "active/running"
            } else {
                "activating/start"
            }
            .into(),
            current_revision: current.into(),
            desired_revision: desired.into(),
            ready: ready_since.is_some(),
            ready_since,
            rollout: if current == desired { "" } else { "waiting" }.into(),
            ..DaemonSetReport::default()
        }],
        diagnostics: Vec::new(),
        errors: Vec::new(),
        git: None,
    }
}

/// A decision made with an older clock reading than the decision before it must not take
/// back what that one saw. A request reads the clock, then may wait for the decision lock
/// behind a newer decision (and the system clock may step back): before the fix, that late
/// decision found the nodes the newer one had counted available unavailable again, gave
/// their released slots back to them next to the slots already handed on, and showed twice
/// maxUnavailable nodes unavailable (benches/rollout_sim.rs showed 200 of 100 under load).
#[tokio::test]
async fn a_decision_with_an_older_clock_reading_does_not_take_back_availability() {
    let root = std::env::temp_dir().join(format!(
        "hostset-coordinator-rollout-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("specs")).unwrap();
    let _cleanup = TempDir(root.clone());
    for d in [&root, &root.join("specs")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    write(&root.join("agent-tokens"), &format!("{AGENT}\n"), 0o600);
    write(&root.join("read-tokens"), &format!("{READER}\n"), 0o600);
    let specs = root.join("specs");
    write(&specs.join("web.toml"), &spec(1), 0o644);
    let mut config = Config::defaults(&root, Some(&root.join("state")));
    config.spec_dir = specs.clone();
    config.spec_owner = fs::metadata(&root).unwrap().uid();
    config.agent_token_file = root.join("agent-tokens");
    config.read_token_file = root.join("read-tokens");
    let clock = Arc::new(AtomicU64::new(T0));
    let state = {
        let clock = clock.clone();
        AppState::open(&config, Arc::new(move || clock.load(Ordering::SeqCst))).unwrap()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coordinator::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let send = |r: NodeReport| {
        let req = client
            .post(format!("{base}/v1/reports"))
            .bearer_auth(AGENT)
            .json(&r);
        async move {
            let status = req.send().await.unwrap().status();
            assert!(status.is_success(), "report: {status}");
        }
    };

    let r1 = revision(&specs);
    for node in ["a", "b"] {
        send(report(node, 1, &r1, &r1, Some(T0 - 100))).await;
    }
    write(&specs.join("web.toml"), &spec(2), 0o644);
    state.rescan_specs();
    let r2 = revision(&specs);
    assert_ne!(r1, r2);

    // Both wait for a slot; maxUnavailable 1 grants a.
    for node in ["a", "b"] {
        send(report(node, 2, &r1, &r2, Some(T0 - 100))).await;
    }
    state.decide_rollouts(true);
    let p = state.rollout_view("web").unwrap().progress;
    assert_eq!(
        (p.in_progress.clone(), p.waiting.clone()),
        (vec!["a".to_string()], vec!["b".to_string()])
    );

    // a runs the new revision, ready since T0 + 1; available (minReadySeconds 2) at T0 + 3.
    clock.store(T0 + 1, Ordering::SeqCst);
    send(report("a", 3, &r2, &r2, Some(T0 + 1))).await;
    clock.store(T0 + 3, Ordering::SeqCst);
    state.decide_rollouts(true);
    let p = state.rollout_view("web").unwrap().progress;
    assert_eq!(
        p.in_progress,
        vec!["b".to_string()],
        "a's slot went to b: {p:?}"
    );
    assert_eq!((p.updated_available, p.unavailable), (1, 1));

    // A decision with the reading of a second before: nothing is taken back.
    clock.store(T0 + 2, Ordering::SeqCst);
    state.decide_rollouts(true);
    let p = state.rollout_view("web").unwrap().progress;
    assert_eq!(
        (p.in_progress.clone(), p.updated_available, p.unavailable),
        (vec!["b".to_string()], 1, 1),
        "a decision with an older clock reading took back a's availability: {p:?}"
    );
    assert!(p.unavailable <= p.max_unavailable);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
