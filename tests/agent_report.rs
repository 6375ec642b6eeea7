//! The agent reporting to a coordinator: a stub coordinator (axum, in process, on
//! 127.0.0.1) records every request and answers 204 unless told otherwise; the agent runs
//! its real loop over the in-memory systemd. Also `hostsetd goodbye` (the binary), the
//! `[coordinator]` keys and flags, and the pure helpers (addresses, conditions).
//!
//! Waits are real but bounded (heartbeats every 200 ms here): the reporter talks over real
//! sockets, where paused tokio time would fire its request timeouts early.

#![cfg(all(feature = "agent", feature = "coordinator"))]

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use clap::Parser;
use hostset::agent::config::{self, Args, Config, ConfigError, Coordinator};
use hostset::agent::report::{self, Reporter};
use hostset::agent::run::{Agent, run, run_with_reporter};
use hostset::report::NodeReport;
use hostset::spec::Taint;
use hostset::systemd::Event;
use hostset::systemd::fake::{Call, FakeSystemd};
use hostset::unit::UnitOptions;
use serde_json::Value;
use tokio::time::Instant;

const HEARTBEAT: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The stub coordinator

/// One request the stub received, and what it answered.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    auth: Option<String>,
    body: Value,
    status: u16,
    at: Instant,
}

impl Seen {
    fn kind(&self) -> &'static str {
        match (self.method.as_str(), self.path.as_str()) {
            ("POST", "/v1/reports") => "report",
            ("POST", p) if p.starts_with("/v1/nodes/") && p.ends_with("/heartbeat") => "heartbeat",
            ("DELETE", p) if p.starts_with("/v1/nodes/") => "delete",
            _ => "other",
        }
    }
    fn report(&self) -> NodeReport {
        serde_json::from_value(self.body.clone()).expect("a NodeReport")
    }
}

#[derive(Default)]
struct Stub {
    seen: Mutex<Vec<Seen>>,
    /// One-shot answers: the first one queued for a request's kind is used up.
    answers: Mutex<VecDeque<(&'static str, u16)>>,
    /// When set, requests without `Bearer <this>` get 401.
    token: Mutex<Option<String>>,
}

impl Stub {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn of(&self, kind: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.kind() == kind)
            .collect()
    }
    fn answer_next(&self, kind: &'static str, status: u16) {
        self.answers.lock().unwrap().push_back((kind, status));
    }
    fn require_token(&self, token: &str) {
        *self.token.lock().unwrap() = Some(token.to_string());
    }
}

async fn handle(
    State(stub): State<Arc<Stub>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut seen = Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        auth: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status: 204,
        at: Instant::now(),
    };
    let kind = seen.kind();
    let wanted = stub.token.lock().unwrap().clone();
    if let Some(t) = wanted
        && seen.auth.as_deref() != Some(&format!("Bearer {t}"))
    {
        seen.status = 401;
    } else {
        let mut answers = stub.answers.lock().unwrap();
        if let Some(i) = answers.iter().position(|(k, _)| *k == kind) {
            seen.status = answers.remove(i).unwrap().1;
        }
    }
    let status = StatusCode::from_u16(seen.status).unwrap();
    let body = if status.is_success() {
        String::new()
    } else {
        format!("{{\"error\":\"stub says {}\"}}", seen.status)
    };
    stub.seen.lock().unwrap().push(seen);
    (status, body)
}

/// Serve `stub` on `listener`.
fn serve(listener: tokio::net::TcpListener, stub: Arc<Stub>) -> Arc<Stub> {
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(stub.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    stub
}

/// A stub on a fresh port, and its URL.
async fn stub() -> (Arc<Stub>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (serve(listener, Arc::default()), url)
}

/// Poll `f` until it gives something, for at most [`WAIT`].
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The agent's side

struct Env {
    dir: PathBuf,
}

impl Env {
    fn new(name: &str) -> Env {
        let dir = std::env::temp_dir().join(format!(
            "hostset-agent-report-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("daemonsets.d")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for d in [&dir, &dir.join("daemonsets.d")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let env = Env { dir };
        env.write("node.toml", "name = \"n1\"\n");
        env.write("token", "s3cret\n");
        env
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn write(&self, name: &str, text: &str) {
        write(&self.path(name), text);
    }
    fn write_spec(&self, name: &str) {
        self.write(
            &format!("daemonsets.d/{name}.toml"),
            &format!(
                "name = \"{name}\"\ncommand = [\"/bin/sleep\", \"infinity\"]\n\
                 selector.matchLabels = {{ app = \"{name}\" }}\ntemplate.labels = {{ app = \"{name}\" }}\n"
            ),
        );
    }
    fn status(&self) -> Option<NodeReport> {
        serde_json::from_slice(&std::fs::read(self.path("status.json")).ok()?).ok()
    }
    fn coordinator(&self, url: &str) -> Coordinator {
        let mut c = Coordinator::new(url);
        c.token_file = Some(self.path("token"));
        c.heartbeat_interval = HEARTBEAT;
        c
    }
    fn agent(&self, systemd: FakeSystemd, coordinator: Option<Coordinator>) -> Agent<FakeSystemd> {
        let mut config = Config::defaults(&self.dir);
        config.coordinator = coordinator;
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&self.dir).unwrap());
        Agent::new(
            systemd,
            config,
            None,
            UnitOptions::default(),
            Some(self.path("status.json")),
        )
        .trust_owner(uid)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The agent's loop in the background; dropping the guard stops it.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn start(agent: Agent<FakeSystemd>, reporter: Option<Option<Reporter>>) -> Running {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = match reporter {
            // As configured.
            None => tokio::spawn(run(agent, shutdown)),
            Some(r) => tokio::spawn(run_with_reporter(agent, r, shutdown)),
        };
        Running {
            stop: Some(stop),
            task,
        }
    }
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap().unwrap();
    }
}

/// A free port nobody listens on (for now), and the agent's loop reporting to it with short
/// backoffs.
fn with_absent_coordinator(env: &Env) -> (u16, Running) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let agent = env.agent(FakeSystemd::new(), None);
    let reporter = Reporter::new(&env.coordinator(&url))
        .unwrap()
        .with_backoff(Duration::from_millis(50), Duration::from_millis(300));
    (port, Running::start(agent, Some(Some(reporter))))
}

fn daemonset<'a>(r: &'a NodeReport, name: &str) -> Option<&'a hostset::report::DaemonSetReport> {
    r.daemonsets.iter().find(|d| d.name == name)
}

// ---------------------------------------------------------------------------------------------
// Reporting

#[tokio::test]
async fn full_report_then_heartbeats_then_reports_on_change_with_live_numbers() {
    let env = Env::new("flow");
    let (stub, url) = stub().await;
    let fake = FakeSystemd::new();
    let agent = env.agent(fake.clone(), Some(env.coordinator(&url)));
    let instance = agent.instance().to_string();
    let running = Running::start(agent, None);

    // A full report on start, with the token.
    let first = wait_for("the first report", || stub.of("report").first().cloned()).await;
    assert_eq!(first.auth.as_deref(), Some("Bearer s3cret"));
    assert_eq!(first.status, 204);
    let r = first.report();
    assert_eq!(r.sequence, 1);
    assert_eq!(r.agent_instance, instance);
    assert_eq!(r.agent_instance.len(), 32, "{}", r.agent_instance);
    assert!(r.agent_instance.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(r.node.name, "n1");
    assert!(r.generated_at > 0);
    let kinds: Vec<(&str, &str)> = r
        .node
        .conditions
        .iter()
        .map(|c| (c.kind.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(kinds[0], ("Ready", "True"), "{kinds:?}");
    assert!(
        kinds.iter().any(|(k, _)| *k == "MemoryPressure"),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|(k, _)| *k == "DiskPressure"), "{kinds:?}");
    assert!(r.node.conditions.iter().all(|c| !c.reason.is_empty()));
    // The addresses are the host's (none in an isolated network namespace): sorted, no loopback.
    assert!(
        r.node
            .addresses
            .iter()
            .all(|a| a != "127.0.0.1" && a != "::1")
    );
    assert_eq!(r.node.addresses, report::host_addresses());
    // The status file carries the instance too.
    assert_eq!(env.status().unwrap().agent_instance, instance);

    // Nothing changes: heartbeats only, carrying the report's sequence.
    let beats = wait_for("two heartbeats", || {
        let b = stub.of("heartbeat");
        (b.len() >= 2).then_some(b)
    })
    .await;
    assert_eq!(stub.of("report").len(), 1, "{:?}", stub.seen());
    for b in &beats {
        assert_eq!(b.path, "/v1/nodes/n1/heartbeat");
        assert_eq!(b.auth.as_deref(), Some("Bearer s3cret"));
        assert_eq!(b.body["agentInstance"], instance.as_str());
        assert_eq!(b.body["sequence"], 1);
        assert!(b.body["generatedAt"].as_u64().unwrap() > 0);
    }
    let gap = beats[1].at - beats[0].at;
    assert!(
        gap >= HEARTBEAT.mul_f64(0.85) && gap <= HEARTBEAT * 5,
        "heartbeats {gap:?} apart"
    );

    // A change: a full report with the new daemonset and its live numbers.
    env.write_spec("web");
    let running_web = wait_for("a report with web running", || {
        stub.of("report")
            .into_iter()
            .map(|s| s.report())
            .find(|r| daemonset(r, "web").is_some_and(|d| d.ready && d.main_pid != 0))
    })
    .await;
    let web = daemonset(&running_web, "web").unwrap();
    let unit = fake.unit("hostset-web.service").unwrap();
    assert_eq!(web.main_pid, unit.details.main_pid);
    assert_eq!(
        web.started_at,
        Some(unit.details.active_enter_timestamp_usec / 1_000_000)
    );
    assert_eq!(web.restarts, 0);
    assert!(running_web.sequence > 1);
    let sequences: Vec<u64> = stub
        .of("report")
        .iter()
        .map(|s| s.report().sequence)
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");

    // A crash and restart: systemd signals it; the report follows.
    fake.crash("hostset-web.service");
    let restarted = wait_for("a report with the restart", || {
        stub.of("report")
            .into_iter()
            .map(|s| s.report())
            .find(|r| daemonset(r, "web").is_some_and(|d| d.restarts == 1))
    })
    .await;
    let unit = fake.unit("hostset-web.service").unwrap();
    assert_eq!(
        daemonset(&restarted, "web").unwrap().main_pid,
        unit.details.main_pid
    );
    let reports_before_metrics = stub.of("report").len();

    // Memory and CPU change without a signal: the heartbeat that ends the METRICS_EVERY
    // window has the loop read them (into the status file too) and carries them in a full
    // report; heartbeats go on meanwhile.
    fake.update_details("hostset-web.service", |d| {
        d.memory_current = Some(123_456);
        d.cpu_usage_nsec = Some(7_000);
    });
    wait_for("memory in the status file", || {
        env.status()
            .and_then(|r| daemonset(&r, "web").and_then(|d| d.memory_bytes))
            .filter(|&m| m == 123_456)
    })
    .await;
    let with_metrics = wait_for("a report with the metrics", || {
        stub.seen()
            .into_iter()
            .skip_while(|s| s.kind() != "report" || s.report().sequence != restarted.sequence)
            .position(|s| {
                s.kind() == "report"
                    && daemonset(&s.report(), "web")
                        .is_some_and(|d| d.memory_bytes == Some(123_456))
            })
    })
    .await;
    assert!(
        with_metrics >= 2,
        "heartbeats came before the metrics report"
    );
    let last = stub.of("report").last().unwrap().report();
    assert_eq!(
        daemonset(&last, "web").unwrap().cpu_nanoseconds,
        Some(7_000)
    );
    assert_eq!(stub.of("report").len(), reports_before_metrics + 1);

    running.stop().await;
    assert!(
        fake.unit("hostset-web.service").is_some(),
        "the daemon keeps running"
    );
}

#[tokio::test]
async fn a_heartbeat_answered_409_brings_a_full_report() {
    let env = Env::new("conflict");
    let (stub, url) = stub().await;
    stub.answer_next("heartbeat", 409);
    let agent = env.agent(FakeSystemd::new(), Some(env.coordinator(&url)));
    let running = Running::start(agent, None);
    let seen = wait_for("a second report", || {
        let s = stub.seen();
        (s.iter().filter(|s| s.kind() == "report").count() >= 2).then_some(s)
    })
    .await;
    let kinds: Vec<(&str, u16)> = seen.iter().map(|s| (s.kind(), s.status)).collect();
    assert_eq!(
        kinds[..3],
        [("report", 204), ("heartbeat", 409), ("report", 204)],
        "{kinds:?}"
    );
    let (a, b) = (seen[0].report(), seen[2].report());
    assert_eq!(b.sequence, a.sequence + 1);
    assert!(report::same_content(&a, &b));
    // Then heartbeats again, with the new sequence.
    let beat = wait_for("a heartbeat after the report", || {
        stub.of("heartbeat").into_iter().find(|h| h.status == 204)
    })
    .await;
    assert_eq!(beat.body["sequence"], b.sequence);
    running.stop().await;
}

#[tokio::test]
async fn a_coordinator_down_then_up_gets_the_latest_report() {
    let env = Env::new("down");
    // A port nobody listens on, for now.
    let (port, running) = with_absent_coordinator(&env);

    // The agent works without its coordinator.
    wait_for("the first pass", || env.status()).await;
    env.write_spec("web");
    wait_for("web running", || {
        env.status()
            .filter(|r| daemonset(r, "web").is_some_and(|d| d.ready && d.main_pid != 0))
    })
    .await;

    // The coordinator comes up, first failing with 500 once.
    let listener = wait_for("the port", || {
        std::net::TcpListener::bind(("127.0.0.1", port)).ok()
    })
    .await;
    listener.set_nonblocking(true).unwrap();
    let stub = Arc::new(Stub::default());
    stub.answer_next("report", 500);
    let stub = serve(tokio::net::TcpListener::from_std(listener).unwrap(), stub);
    let delivered = wait_for("a delivered report", || {
        stub.of("report").into_iter().find(|s| s.status == 204)
    })
    .await;
    let kinds: Vec<(&str, u16)> = stub.seen().iter().map(|s| (s.kind(), s.status)).collect();
    assert_eq!(kinds[..2], [("report", 500), ("report", 204)], "{kinds:?}");
    let r = delivered.report();
    let web = daemonset(&r, "web").expect("the latest state, with web");
    assert!(web.ready && web.main_pid != 0, "{web:?}");
    // Every attempt has its own sequence.
    let first = stub.of("report")[0].report();
    assert!(r.sequence > first.sequence);
    running.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_read_again() {
    let env = Env::new("auth");
    let (stub, url) = stub().await;
    stub.require_token("rotated");
    let agent = env.agent(FakeSystemd::new(), None);
    let reporter = Reporter::new(&env.coordinator(&url))
        .unwrap()
        .with_backoff(Duration::from_millis(50), Duration::from_millis(200));
    let running = Running::start(agent, Some(Some(reporter)));
    let refused = wait_for("a 401", || {
        stub.seen().into_iter().find(|s| s.status == 401)
    })
    .await;
    assert_eq!(refused.auth.as_deref(), Some("Bearer s3cret"));
    env.write("token", "rotated\n");
    let accepted = wait_for("a report with the new token", || {
        stub.of("report").into_iter().find(|s| s.status == 204)
    })
    .await;
    assert_eq!(accepted.auth.as_deref(), Some("Bearer rotated"));
    running.stop().await;
}

#[tokio::test]
async fn a_refused_report_is_sent_again_as_soon_as_it_changes() {
    let env = Env::new("refused");
    let (stub, url) = stub().await;
    stub.answer_next("report", 413);
    let agent = env.agent(FakeSystemd::new(), None);
    // A backoff far longer than the test: only the change can bring the next attempt.
    let reporter = Reporter::new(&env.coordinator(&url))
        .unwrap()
        .with_backoff(Duration::from_secs(60), Duration::from_secs(60));
    let running = Running::start(agent, Some(Some(reporter)));
    wait_for("the refused report", || {
        stub.of("report").into_iter().find(|s| s.status == 413)
    })
    .await;
    // A pass that changes nothing (the node file rewritten as it was): not sent again.
    let mtime = || {
        std::fs::metadata(env.path("status.json"))
            .and_then(|m| m.modified())
            .ok()
    };
    let before = mtime();
    tokio::time::sleep(Duration::from_millis(20)).await;
    env.write("node.toml", "name = \"n1\"\n");
    wait_for("a pass", || (mtime() != before).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stub.of("report").len(), 1, "{:?}", stub.seen());
    // A change: sent at once.
    env.write_spec("web");
    let accepted = wait_for("the changed report", || {
        stub.of("report").into_iter().find(|s| s.status == 204)
    })
    .await;
    assert!(daemonset(&accepted.report(), "web").is_some());
    running.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_with_growing_delays() {
    let env = Env::new("backoff");
    let (stub, url) = stub().await;
    for _ in 0..3 {
        stub.answer_next("report", 503);
    }
    let agent = env.agent(FakeSystemd::new(), None);
    let reporter = Reporter::new(&env.coordinator(&url))
        .unwrap()
        .with_backoff(Duration::from_millis(100), Duration::from_millis(400));
    let running = Running::start(agent, Some(Some(reporter)));
    let reports = wait_for("the delivered report", || {
        let r = stub.of("report");
        r.iter().any(|s| s.status == 204).then_some(r)
    })
    .await;
    let statuses: Vec<u16> = reports.iter().map(|s| s.status).collect();
    assert_eq!(statuses[..4], [503, 503, 503, 204]);
    // 100 ms, 200 ms, 400 ms, each ±10 %.
    for (i, floor) in [90, 180, 360].into_iter().enumerate() {
        let gap = reports[i + 1].at - reports[i].at;
        assert!(gap >= Duration::from_millis(floor), "attempt {i}: {gap:?}");
    }
    running.stop().await;
}

#[tokio::test]
async fn no_coordinator_no_requests() {
    let env = Env::new("none");
    let (stub, _url) = stub().await;
    let agent = env.agent(FakeSystemd::new(), None);
    let running = Running::start(agent, None);
    wait_for("the first pass", || env.status()).await;
    tokio::time::sleep(HEARTBEAT * 2).await;
    assert!(stub.seen().is_empty());
    running.stop().await;
}

/// The live numbers' cache, pass by pass: read once per unit, again after a change signal,
/// when the reporter asks for the metrics (`refresh_live`), and after a systemd reload;
/// nothing else reads them.
#[tokio::test]
async fn live_numbers_are_cached_and_refreshed_on_signals_and_ticks() {
    let env = Env::new("live");
    let fake = FakeSystemd::new();
    let mut agent = env.agent(fake.clone(), None);
    let details = |calls: Vec<Call>| -> usize {
        calls
            .iter()
            .filter(|c| matches!(c, Call::Details(_)))
            .count()
    };
    let web = |agent: &Agent<FakeSystemd>| daemonset(agent.last_report().unwrap(), "web").cloned();
    env.write_spec("web");
    agent.reload_specs();
    agent.reconcile().await; // starts it
    agent.reconcile().await; // sees it running: reads its details once
    let unit = fake.unit("hostset-web.service").unwrap();
    let w = web(&agent).unwrap();
    assert!(w.ready);
    assert_eq!(
        (w.main_pid, w.restarts, w.started_at),
        (
            unit.details.main_pid,
            0,
            Some(unit.details.active_enter_timestamp_usec / 1_000_000)
        )
    );
    assert_eq!(env.status().unwrap(), *agent.last_report().unwrap());
    fake.take_calls();

    // Nothing signalled: the cache answers.
    fake.update_details("hostset-web.service", |d| d.n_restarts = 5);
    agent.reconcile().await;
    assert_eq!(details(fake.take_calls()), 0);
    assert_eq!(web(&agent).unwrap().restarts, 0);

    // A change signal: read again.
    agent.on_event(&Event::UnitChanged("hostset-web.service".into()));
    agent.reconcile().await;
    assert_eq!(details(fake.take_calls()), 1);
    assert_eq!(web(&agent).unwrap().restarts, 5);

    // A finished job too.
    fake.update_details("hostset-web.service", |d| d.main_pid = 4242);
    agent.on_event(&Event::JobRemoved {
        unit: "hostset-web.service".into(),
        result: "done".into(),
    });
    agent.reconcile().await;
    assert_eq!(web(&agent).unwrap().main_pid, 4242);

    // The reporter's request: memory and CPU, without a signal; written to the status file.
    fake.update_details("hostset-web.service", |d| {
        d.memory_current = Some(1 << 20);
        d.cpu_usage_nsec = Some(5);
    });
    fake.take_calls();
    agent.refresh_live().await;
    assert_eq!(details(fake.take_calls()), 1);
    let w = web(&agent).unwrap();
    assert_eq!(
        (w.memory_bytes, w.cpu_nanoseconds),
        (Some(1 << 20), Some(5))
    );
    assert_eq!(
        daemonset(&env.status().unwrap(), "web")
            .unwrap()
            .memory_bytes,
        Some(1 << 20)
    );

    // systemd reloaded: everything is read again.
    fake.update_details("hostset-web.service", |d| d.n_restarts = 6);
    agent.on_event(&Event::Reloaded);
    agent.reconcile().await;
    assert_eq!(web(&agent).unwrap().restarts, 6);

    // The unit goes away: its numbers with it.
    fake.remove("hostset-web.service");
    agent.on_event(&Event::UnitRemoved("hostset-web.service".into()));
    agent.refresh_live().await;
    fake.take_calls();
    agent.refresh_live().await;
    assert_eq!(details(fake.take_calls()), 0, "a removed unit is not read");
}

/// Through the loop, without a coordinator (nothing reads the units on a timer): a crash
/// shows in the status file at once, from systemd's signals alone.
#[tokio::test]
async fn a_restart_shows_in_the_status_file_without_waiting_for_a_tick() {
    let env = Env::new("crash");
    let fake = FakeSystemd::new();
    env.write_spec("web");
    let running = Running::start(env.agent(fake.clone(), None), None);
    wait_for("web running", || {
        env.status()
            .filter(|r| daemonset(r, "web").is_some_and(|d| d.ready && d.main_pid != 0))
    })
    .await;
    let crashed_at = Instant::now();
    fake.crash("hostset-web.service");
    let pid = fake.unit("hostset-web.service").unwrap().details.main_pid;
    wait_for("the restart in the status file", || {
        env.status()
            .filter(|r| daemonset(r, "web").is_some_and(|d| d.restarts == 1 && d.main_pid == pid))
    })
    .await;
    assert!(crashed_at.elapsed() < Duration::from_secs(2));
    running.stop().await;
}

/// Without a coordinator nothing reads the units' numbers on a timer: an idle agent makes
/// no systemd call at all, however long it runs (ten minutes of paused time here; the old
/// statistics tick read every unit every 10 s).
#[tokio::test(start_paused = true)]
async fn an_idle_agent_without_a_coordinator_makes_no_systemd_call() {
    let env = Env::new("idle");
    let fake = FakeSystemd::new();
    env.write_spec("web");
    env.write_spec("db");
    let running = Running::start(env.agent(fake.clone(), None), None);
    wait_for("both running", || {
        env.status().filter(|r| {
            ["web", "db"]
                .iter()
                .all(|n| daemonset(r, n).is_some_and(|d| d.ready && d.main_pid != 0))
        })
    })
    .await;
    // The start's own signals settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    fake.take_calls();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let calls = fake.take_calls();
    assert!(calls.is_empty(), "idle for 10 min: {calls:?}");
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// hostsetd goodbye

/// Run `hostsetd goodbye ARGS` with `$HOSTSET_CONFIG_DIR` = `dir`: exit code and stderr.
async fn goodbye(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hostsetd"));
    cmd.arg("goodbye")
        .args(args)
        .env("HOSTSET_CONFIG_DIR", dir)
        .env_remove("HOSTSET_LOG");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn goodbye_deletes_the_node() {
    let env = Env::new("goodbye");
    let (stub, url) = stub().await;
    env.write("node.toml", "name = \"gone-1\"\n");
    env.write(
        "agent.toml",
        &format!(
            "[coordinator]\nurl = \"{url}\"\ntoken_file = \"{}\"\n",
            env.path("token").display()
        ),
    );
    let (code, stderr) = goodbye(&env.dir, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("forgot node gone-1"), "{stderr}");
    let deletes = stub.of("delete");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].path, "/v1/nodes/gone-1");
    assert_eq!(deletes[0].auth.as_deref(), Some("Bearer s3cret"));

    // 404: the coordinator never knew it; fine.
    stub.answer_next("delete", 404);
    let (code, stderr) = goodbye(&env.dir, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("did not know node gone-1"), "{stderr}");

    // Anything else: 1, with the reason.
    stub.answer_next("delete", 500);
    let (code, stderr) = goodbye(&env.dir, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("500") && stderr.contains("stub says 500"),
        "{stderr}"
    );

    // A coordinator nobody listens on: 1, once, at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, stderr) = goodbye(
        &env.dir,
        &["--coordinator", &format!("http://127.0.0.1:{port}")],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");

    // Flags instead of the file; the node file's name.
    std::fs::remove_file(env.path("agent.toml")).unwrap();
    env.write("other-token", "other\n");
    let other = env.path("other-token");
    let (code, stderr) = goodbye(
        &env.dir,
        &[
            "--coordinator",
            &url,
            "--token-file",
            other.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let last = stub.of("delete").pop().unwrap();
    assert_eq!(last.auth.as_deref(), Some("Bearer other"));
    assert_eq!(last.path, "/v1/nodes/gone-1");

    // No coordinator: nothing to say goodbye to.
    let (code, stderr) = goodbye(&env.dir, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("no coordinator configured"), "{stderr}");

    // An invalid node file: the name is unknown; nothing is sent.
    env.write("node.toml", "name = \n");
    let before = stub.seen().len();
    let (code, stderr) = goodbye(&env.dir, &["--coordinator", &url]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("node file is invalid"), "{stderr}");
    assert_eq!(stub.seen().len(), before);
}

// ---------------------------------------------------------------------------------------------
// TLS

/// Run `openssl ARGS` in `dir`; false when it is not installed or fails.
fn openssl(dir: &Path, args: &str) -> bool {
    std::process::Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_pki(dir: &Path) -> bool {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &format!(
            "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=hostset-test-ca \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
        ),
    ) && ["server", "client"].iter().all(|who| {
        openssl(
            dir,
            &format!("req -new {ec} -keyout {who}.key -out {who}.csr -subj /CN={who}"),
        ) && openssl(
            dir,
            &format!(
                "x509 -req -in {who}.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                 -out {who}.pem -days 2 -extfile {who}.ext"
            ),
        )
    })
}

/// https with `ca_file` and a client certificate (mTLS) against a server that requires one;
/// without the client certificate, and with CAs that do not know the server's, nothing
/// gets through. Skipped without the `openssl` command.
#[tokio::test]
async fn https_with_a_private_ca_and_a_client_certificate() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let env = Env::new("tls-e2e");
    if !make_pki(&env.dir) {
        eprintln!("skipped: cannot make certificates with the openssl command");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(env.path("ca.pem")).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let chain = CertificateDer::pem_file_iter(env.path("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(env.path("server.key")).unwrap();
    let mut server = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let stub = Arc::new(Stub::default());
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(stub.clone());
    tokio::spawn(
        axum_server::from_tcp_rustls(
            listener,
            axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(server)),
        )
        .serve(app.into_make_service()),
    );

    let mut c = env.coordinator(&url);
    c.ca_file = Some(env.path("ca.pem"));
    c.cert_file = Some(env.path("client.pem"));
    c.key_file = Some(env.path("client.key"));
    let outcome = Reporter::new(&c).unwrap().goodbye("n1").await;
    assert_eq!(outcome, Ok(report::Goodbye::Removed));
    let deletes = stub.of("delete");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].auth.as_deref(), Some("Bearer s3cret"));

    // No client certificate: the server refuses the handshake.
    let mut anonymous = c.clone();
    anonymous.cert_file = None;
    anonymous.key_file = None;
    let err = Reporter::new(&anonymous)
        .unwrap()
        .goodbye("n1")
        .await
        .unwrap_err();
    assert!(
        err.starts_with(&format!("DELETE {url}/v1/nodes/n1: ")),
        "{err}"
    );

    // The system's CAs do not know the test CA.
    let mut system = c.clone();
    system.ca_file = None;
    if let Ok(mut reporter) = Reporter::new(&system) {
        let err = reporter.goodbye("n1").await.unwrap_err();
        assert!(err.contains("certificate"), "{err}");
    }
    assert_eq!(stub.of("delete").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Configuration

fn args(list: &[&str]) -> Args {
    Args::try_parse_from(std::iter::once("hostsetd").chain(list.iter().copied())).unwrap()
}

#[test]
fn coordinator_keys_and_flags() {
    let env = Env::new("config");
    env.write(
        "agent.toml",
        "[coordinator]\nurl = \"https://c.example:8443\"\ntoken_file = \"/etc/hostset/t\"\n\
         ca_file = \"/etc/hostset/ca.pem\"\ncert_file = \"/etc/hostset/a.pem\"\n\
         key_file = \"/etc/hostset/a.key\"\nheartbeat_interval = 2.5\n",
    );
    let c = config::load_in(&args(&[]), &env.dir)
        .unwrap()
        .coordinator
        .unwrap();
    assert_eq!(
        c,
        Coordinator {
            url: "https://c.example:8443".into(),
            token_file: Some("/etc/hostset/t".into()),
            ca_file: Some("/etc/hostset/ca.pem".into()),
            cert_file: Some("/etc/hostset/a.pem".into()),
            key_file: Some("/etc/hostset/a.key".into()),
            heartbeat_interval: Duration::from_millis(2500),
        }
    );
    // Flags replace the URL and the token file, keeping the rest.
    let flagged = config::load_in(
        &args(&["--coordinator", "http://other:1", "--token-file", "tok"]),
        &env.dir,
    )
    .unwrap()
    .coordinator
    .unwrap();
    assert_eq!(flagged.url, "http://other:1");
    assert_eq!(flagged.token_file.as_deref(), Some(Path::new("tok")));
    assert_eq!(flagged.ca_file, c.ca_file);

    // Defaults.
    env.write("agent.toml", "[coordinator]\nurl = \"http://c\"\n");
    let c = config::load_in(&args(&[]), &env.dir)
        .unwrap()
        .coordinator
        .unwrap();
    assert_eq!(c, Coordinator::new("http://c"));
    assert_eq!(c.heartbeat_interval, Duration::from_secs(10));

    // --coordinator alone configures one; --token-file alone is an error.
    std::fs::remove_file(env.path("agent.toml")).unwrap();
    let c = config::load_in(&args(&["--coordinator", "https://x"]), &env.dir)
        .unwrap()
        .coordinator
        .unwrap();
    assert_eq!(c, Coordinator::new("https://x"));
    let err = config::load_in(&args(&["--token-file", "/t"]), &env.dir).unwrap_err();
    assert!(matches!(err, ConfigError::Flag { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("--token-file: there is no coordinator"),
        "{err}"
    );
    let err = Args::try_parse_from(["hostsetd", "--coordinator", "c:8443"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("must be an http:// or https:// URL"),
        "{err}"
    );
    let help = Args::try_parse_from(["hostsetd", "--help"])
        .unwrap_err()
        .to_string();
    assert!(help.contains("--coordinator <URL>") && help.contains("--token-file <FILE>"));
}

#[test]
fn coordinator_key_errors() {
    let env = Env::new("config-errors");
    for (text, expected) in [
        (
            "cert_file = \"/a.pem\"\n",
            "coordinator.key_file: is required with coordinator.cert_file",
        ),
        (
            "key_file = \"/a.key\"\n",
            "coordinator.cert_file: is required with coordinator.key_file",
        ),
        (
            "ca_file = \"ca.pem\"\n",
            "coordinator.ca_file: must be an absolute path",
        ),
        (
            "heartbeat_interval = 0\n",
            "coordinator.heartbeat_interval: must be more than 0 seconds",
        ),
        (
            "heartbeat_interval = -1\n",
            "coordinator.heartbeat_interval: must be a number of seconds",
        ),
        ("heartbeat = 5\n", "unknown field `heartbeat`"),
    ] {
        env.write(
            "agent.toml",
            &format!("[coordinator]\nurl = \"http://c\"\n{text}"),
        );
        let err = config::load_in(&args(&[]), &env.dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn unusable_tls_files_are_errors_naming_them() {
    let env = Env::new("tls");
    let mut c = Coordinator::new("https://c.example");
    c.ca_file = Some(env.path("missing-ca.pem"));
    let err = Reporter::new(&c).err().unwrap().to_string();
    assert!(
        err.contains("missing-ca.pem: cannot read the CA certificates"),
        "{err}"
    );
    env.write("ca.pem", "not a certificate\n");
    c.ca_file = Some(env.path("ca.pem"));
    let err = Reporter::new(&c).err().unwrap().to_string();
    assert!(err.contains("ca.pem: holds no PEM certificate"), "{err}");
    // A client certificate that is no certificate.
    c.ca_file = None;
    c.url = "http://c.example".into();
    env.write("a.pem", "junk\n");
    env.write("a.key", "junk\n");
    c.cert_file = Some(env.path("a.pem"));
    c.key_file = Some(env.path("a.key"));
    let err = Reporter::new(&c).err().unwrap().to_string();
    assert!(err.contains("a.pem: with"), "{err}");
    let err = Reporter::new(&Coordinator::new("http://"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("coordinator.url \"http://\""), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Helpers

#[test]
fn addresses_from_proc() {
    let fib = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
     |-- 169.254.3.4
        /32 host LOCAL
     |-- 10.0.0.9
        /16 link UNICAST
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 192.0.2.2
        /32 host LOCAL
     |-- 198.51.100.7
        /32 link BROADCAST
";
    assert_eq!(
        report::parse_fib_trie(fib.as_bytes()),
        [Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(192, 0, 2, 2)]
    );
    let inet6 = "\
fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
20010db8000000000000000000000001 05 40 00 08     eth1
20010db8000000000000000000000abc 05 40 00 00     eth1
garbage line
";
    assert_eq!(
        report::parse_if_inet6(inet6),
        [
            "2001:db8::abc".parse::<Ipv6Addr>().unwrap(),
            "fd00::2".parse::<Ipv6Addr>().unwrap(),
        ]
    );
    let host = report::host_addresses();
    let mut sorted = host.clone();
    sorted.sort_by_key(|a| a.parse::<std::net::IpAddr>().unwrap());
    assert_eq!(host, sorted);
}

#[test]
fn conditions_from_the_condition_taints() {
    let taint = |key: &str| Taint {
        key: key.into(),
        value: String::new(),
        effect: "NoSchedule".into(),
    };
    let status = |taints: &[Taint]| -> Vec<(String, String, String)> {
        report::node_conditions(taints)
            .into_iter()
            .map(|c| (c.kind, c.status, c.reason))
            .collect()
    };
    let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        status(&[]),
        [
            t("Ready", "True", "AgentReady"),
            t("MemoryPressure", "False", "AgentHasSufficientMemory"),
            t("DiskPressure", "False", "AgentHasNoDiskPressure"),
        ]
    );
    assert_eq!(
        status(&[
            taint("node.kubernetes.io/memory-pressure"),
            taint("node.kubernetes.io/disk-pressure"),
        ]),
        [
            t("Ready", "True", "AgentReady"),
            t("MemoryPressure", "True", "AgentHasInsufficientMemory"),
            t("DiskPressure", "True", "AgentHasDiskPressure"),
        ]
    );
}

#[test]
fn instance_ids_are_random_hex() {
    let a = report::new_instance_id();
    let b = report::new_instance_id();
    assert_eq!(a.len(), 32);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

// ---------------------------------------------------------------------------------------------
// Rolling updates without the coordinator

#[tokio::test]
async fn an_unreachable_coordinator_holds_the_running_revision() {
    let env = Env::new("hold");
    let (_, running) = with_absent_coordinator(&env);
    let spec = |name: &str, version: &str, extra: &str| {
        format!(
            "name = \"{name}\"\n{extra}command = [\"/bin/sleep\", \"infinity\"]\n\
             env = {{ V = \"{version}\" }}\nselector.matchLabels = {{ app = \"{name}\" }}\n\
             template.labels = {{ app = \"{name}\" }}\n"
        )
    };
    // A first start needs no slot.
    env.write("daemonsets.d/held.toml", &spec("held", "1", ""));
    let free = "annotations = { \"hostset.io/rollout-without-coordinator\" = \"true\" }\n";
    env.write("daemonsets.d/free.toml", &spec("free", "1", free));
    let first = wait_for("both running", || {
        env.status().filter(|r| {
            ["held", "free"]
                .iter()
                .all(|n| daemonset(r, n).is_some_and(|d| d.ready && d.main_pid != 0))
        })
    })
    .await;
    let pid = |r: &NodeReport, n: &str| daemonset(r, n).unwrap().main_pid;

    // New revisions while the coordinator cannot be reached.
    env.write("daemonsets.d/held.toml", &spec("held", "2", ""));
    env.write("daemonsets.d/free.toml", &spec("free", "2", free));
    let r = wait_for("free replaced, held waiting", || {
        env.status().filter(|r| {
            let (h, f) = (daemonset(r, "held").unwrap(), daemonset(r, "free").unwrap());
            f.current_revision == f.desired_revision && f.ready && h.rollout == "waiting"
        })
    })
    .await;
    let held = daemonset(&r, "held").unwrap();
    assert_ne!(held.current_revision, held.desired_revision);
    assert_eq!(
        pid(&r, "held"),
        pid(&first, "held"),
        "the old daemon keeps running"
    );
    assert!(
        held.rollout_message.contains("cannot be reached"),
        "{}",
        held.rollout_message
    );
    assert_ne!(pid(&r, "free"), pid(&first, "free"));
    // Still held a while later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = env.status().unwrap();
    assert_eq!(pid(&r, "held"), pid(&first, "held"));
    running.stop().await;
}
