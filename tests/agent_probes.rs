//! The agent's probes against the in-memory systemd and real local servers: readiness in the
//! report, liveness kills, exec probes, no timers without probes, and an agent restart that
//! keeps a ready daemon ready.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostset::agent::config::Config;
use hostset::agent::run::{Agent, run};
use hostset::report::{DaemonSetReport, NodeReport};
use hostset::systemd::fake::{Call, FakeSystemd};
use hostset::unit::UnitOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a test waits for something the agent should do within a few probe periods.
const PATIENCE: Duration = Duration::from_secs(30);

struct Env {
    dir: PathBuf,
}

impl Env {
    fn new(name: &str) -> Env {
        let dir =
            std::env::temp_dir().join(format!("hostset-probes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("daemonsets.d")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for d in [&dir, &dir.join("daemonsets.d")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Env { dir }
    }

    fn write_spec(&self, file: &str, text: &str) {
        let path = self.dir.join("daemonsets.d").join(file);
        let tmp = path.with_file_name(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    fn status(&self) -> Option<NodeReport> {
        serde_json::from_slice(&std::fs::read(self.dir.join("status.json")).ok()?).ok()
    }

    fn daemonset(&self, name: &str) -> Option<DaemonSetReport> {
        self.status()?
            .daemonsets
            .into_iter()
            .find(|d| d.name == name)
    }

    fn agent(&self, systemd: FakeSystemd) -> Agent<FakeSystemd> {
        let mut config = Config::defaults(&self.dir);
        config.spec_dir = self.dir.join("daemonsets.d");
        config.node_file = self.dir.join("node.toml");
        let uid = std::fs::metadata(&self.dir)
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap();
        Agent::new(
            systemd,
            config,
            None,
            UnitOptions::default(),
            Some(self.dir.join("status.json")),
        )
        .trust_owner(uid)
    }

    /// Wait until the report of `name` satisfies `f`; the last report seen when it does not.
    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        f: impl Fn(&DaemonSetReport) -> bool,
    ) -> DaemonSetReport {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let d = self.daemonset(name);
            if let Some(d) = &d
                && f(d)
            {
                return d.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: last report {d:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spec(name: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\ncommand = [\"/bin/sleep\", \"infinity\"]\n\
         selector.matchLabels = {{ app = \"{name}\" }}\ntemplate.labels = {{ app = \"{name}\" }}\n{extra}"
    )
}

/// An HTTP server on 127.0.0.1 answering 503 until `healthy` is set, then 200; it keeps the
/// request heads it received.
struct Server {
    port: u16,
    healthy: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn server() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let healthy = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (h, r) = (healthy.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (h, r) = (h.clone(), r.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                r.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let status = if h.load(Ordering::SeqCst) {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    Server {
        port,
        healthy,
        requests,
    }
}

/// Run the agent's loop until the returned sender is used or dropped.
fn start(
    agent: Agent<FakeSystemd>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(agent, async {
        let _ = stop_rx.await;
    }));
    (stop_tx, task)
}

#[tokio::test]
async fn an_http_readiness_probe_decides_ready_and_ready_since() {
    let env = Env::new("http");
    let srv = server().await;
    env.write_spec(
        "web.toml",
        &spec(
            "web",
            &format!(
                "readinessProbe.httpGet = {{ port = {}, path = \"/ready\", httpHeaders = [{{ name = \"X-Check\", value = \"1\" }}] }}\n\
                 readinessProbe.periodSeconds = 1\n\
                 readinessProbe.failureThreshold = 2\n",
                srv.port
            ),
        ),
    );
    let fake = FakeSystemd::new();
    let (stop, task) = start(env.agent(fake.clone()));

    let d = env
        .wait_for("web", "the failing probe is reported", |d| {
            d.readiness.contains("failed 2 times")
        })
        .await;
    assert_eq!(d.state, "active/running");
    assert!(!d.ready);
    assert_eq!(d.ready_since, None);
    assert_eq!(
        d.readiness,
        format!(
            "readiness probe failed 2 times: HTTP GET http://127.0.0.1:{}/ready: 503",
            srv.port
        )
    );

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    srv.healthy.store(true, Ordering::SeqCst);
    let d = env
        .wait_for("web", "ready once the probe passes", |d| d.ready)
        .await;
    assert_eq!(d.readiness, "");
    let since = d.ready_since.expect("readySince is set when ready");
    assert!(
        since >= before,
        "readySince {since} is when it became ready, not the unit's start"
    );

    let requests = srv.requests.lock().unwrap().clone();
    let first = &requests[0];
    assert!(first.starts_with("GET /ready HTTP/1.1\r\n"), "{first}");
    let lower = first.to_ascii_lowercase();
    assert!(lower.contains("\r\nx-check: 1\r\n"), "{first}");
    assert!(lower.contains("\r\nuser-agent: hostset-probe/"), "{first}");

    // Failing again (failureThreshold 2): not ready, readySince gone.
    srv.healthy.store(false, Ordering::SeqCst);
    let d = env.wait_for("web", "not ready again", |d| !d.ready).await;
    assert_eq!(d.ready_since, None);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_failing_liveness_probe_kills_the_daemon_for_a_restart() {
    let env = Env::new("liveness");
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.write_spec(
        "db.toml",
        &spec(
            "db",
            &format!(
                "livenessProbe.tcpSocket = {{ port = {port} }}\n\
                 livenessProbe.periodSeconds = 1\n\
                 livenessProbe.failureThreshold = 2\n"
            ),
        ),
    );
    let fake = FakeSystemd::new();
    let (stop, task) = start(env.agent(fake.clone()));
    let deadline = std::time::Instant::now() + PATIENCE;
    let unit = "hostset-db.service";
    loop {
        let kills: Vec<Call> = fake
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Call::Kill(..)))
            .collect();
        if !kills.is_empty() {
            assert_eq!(kills[0], Call::Kill(unit.into(), "main".into(), 15));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // systemd restarted it (NRestarts), and the report says why.
    assert!(fake.unit(unit).unwrap().details.n_restarts >= 1);
    let d = env
        .wait_for("db", "the restart counted", |d| d.restarts >= 1)
        .await;
    // Liveness alone does not make a daemon unready.
    assert!(d.ready, "{d:#?}");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_exec_probe_runs_the_command_with_the_daemons_environment() {
    let env = Env::new("exec");
    let flag = env.dir.join("ready.flag");
    env.write_spec(
        "job.toml",
        &spec(
            "job",
            &format!(
                "env = {{ FLAG = \"{}\" }}\n\
                 workingDir = \"{}\"\n\
                 readinessProbe.exec.command = [\"/bin/sh\", \"-c\", \"test -e \\\"$FLAG\\\" && test \\\"$PWD\\\" = {} || {{ echo not yet; exit 3; }}\"]\n\
                 readinessProbe.periodSeconds = 1\n\
                 readinessProbe.failureThreshold = 1\n",
                flag.display(),
                env.dir.display(),
                env.dir.display(),
            ),
        ),
    );
    let fake = FakeSystemd::new();
    let (stop, task) = start(env.agent(fake.clone()));
    let d = env
        .wait_for("job", "the exec probe fails", |d| {
            d.readiness.starts_with("readiness probe failed")
        })
        .await;
    assert!(d.readiness.ends_with(": exit status 3"), "{}", d.readiness);
    // It ran in a oneshot unit shaped like the daemon's (the fake runs its ExecStart here).
    let run = fake
        .calls()
        .into_iter()
        .find_map(|c| match c {
            Call::RunOneshot(u) => Some(u),
            _ => None,
        })
        .expect("a oneshot unit ran the probe");
    assert!(run.name.starts_with("hostset.probe-"), "{}", run.name);
    use hostset::unit::PropValue;
    assert_eq!(
        run.property("Type"),
        Some(&PropValue::Str("oneshot".into()))
    );
    assert_eq!(
        run.property("Slice"),
        Some(&PropValue::Str("hostset.slice".into()))
    );
    assert_eq!(
        run.property("WorkingDirectory"),
        Some(&PropValue::Str(env.dir.display().to_string()))
    );
    assert_eq!(
        run.property("TimeoutStartUSec"),
        Some(&PropValue::U64(1_000_000))
    );
    match run.property("Environment") {
        Some(PropValue::Strs(vars)) => {
            assert!(
                vars.contains(&format!("FLAG={}", flag.display())),
                "{vars:?}"
            );
            assert!(
                !vars.iter().any(|v| v.starts_with("HOSTSET_DAEMONSET=")),
                "no markers: {vars:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&flag, "").unwrap();
    env.wait_for("job", "ready once the command succeeds", |d| d.ready)
        .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_exec_probe_is_killed_at_its_timeout() {
    let env = Env::new("timeout");
    env.write_spec(
        "slow.toml",
        &spec(
            "slow",
            "readinessProbe.exec.command = [\"/bin/sleep\", \"30\"]\n\
             readinessProbe.periodSeconds = 1\n\
             readinessProbe.timeoutSeconds = 1\n\
             readinessProbe.failureThreshold = 1\n",
        ),
    );
    let fake = FakeSystemd::new();
    let (stop, task) = start(env.agent(fake.clone()));
    let d = env
        .wait_for("slow", "the timeout is reported", |d| {
            d.readiness.starts_with("readiness probe failed")
        })
        .await;
    assert_eq!(
        d.readiness,
        "readiness probe failed 1 time: exec /bin/sleep 30: timed out after 1s"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn without_probes_there_is_no_probe_timer() {
    let env = Env::new("quiet");
    let fake = FakeSystemd::new();
    let mut agent = env.agent(fake.clone());
    env.write_spec("plain.toml", &spec("plain", ""));
    agent.reload_specs();
    agent.reconcile().await;
    assert!(fake.unit("hostset-plain.service").is_some());
    // The report of the pass that started it says what was there before.
    agent.reconcile().await;
    assert_eq!(agent.probe_wake(), None);
    assert!(!agent.probing());
    let d = &agent.last_report().unwrap().daemonsets[0];
    assert!(d.ready);
    assert_eq!(d.ready_since, d.started_at);

    // With a probe: a wake-up is due.
    env.write_spec(
        "probed.toml",
        &spec("probed", "readinessProbe.tcpSocket = { port = 1 }\n"),
    );
    agent.reload_specs();
    agent.reconcile().await;
    agent.reconcile().await;
    assert!(agent.probe_wake().is_some());
    let d = agent
        .last_report()
        .unwrap()
        .daemonsets
        .iter()
        .find(|d| d.name == "probed")
        .cloned()
        .unwrap();
    assert!(!d.ready);
    assert_eq!(d.readiness, "readiness probe has not succeeded yet");
}

#[tokio::test]
async fn an_agent_restart_keeps_a_ready_daemon_ready_and_its_ready_since() {
    let env = Env::new("restart");
    let srv = server().await;
    srv.healthy.store(true, Ordering::SeqCst);
    env.write_spec(
        "web.toml",
        &spec(
            "web",
            &format!(
                "readinessProbe.httpGet = {{ port = {} }}\nreadinessProbe.periodSeconds = 1\n",
                srv.port
            ),
        ),
    );
    let fake = FakeSystemd::new();
    let (stop, task) = start(env.agent(fake.clone()));
    let first = env.wait_for("web", "ready", |d| d.ready).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    // Let a second pass: readySince is in seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A new agent over the same systemd and /run: ready from its first pass on.
    let mut agent = env.agent(fake.clone());
    agent.reload_specs();
    agent.reconcile().await;
    let d = agent.last_report().unwrap().daemonsets[0].clone();
    assert!(d.ready, "{d:#?}");
    assert_eq!(d.ready_since, first.ready_since);
    assert!(Path::new(&env.dir.join("probes.json")).exists());

    // A new invocation of the unit (systemd restarted it) starts from scratch.
    fake.crash("hostset-web.service");
    // As the loop does on systemd's signal.
    agent.on_event(&hostset::systemd::Event::UnitChanged(
        "hostset-web.service".into(),
    ));
    agent.reconcile().await;
    let d = agent.last_report().unwrap().daemonsets[0].clone();
    assert!(!d.ready);
    assert_eq!(d.readiness, "readiness probe has not succeeded yet");
}

#[tokio::test]
async fn failed_probe_units_of_an_earlier_agent_are_reset() {
    use hostset::unit::{PropValue, Property, UnitSpec};
    let env = Env::new("leftovers");
    let fake = FakeSystemd::new();
    let leftover = |name: &str| UnitSpec {
        name: name.into(),
        daemonset: "web".into(),
        revision: String::new(),
        labels: Default::default(),
        properties: vec![Property {
            name: "Type",
            value: PropValue::Str("oneshot".into()),
        }],
    };
    fake.insert_running(leftover("hostset.probe-old-1.service"), 4000);
    fake.insert_running(leftover("hostset.probe-old-2.service"), 4001);
    fake.set_state("hostset.probe-old-1.service", "failed", "failed");
    let mut agent = env.agent(fake.clone());
    agent.clear_probe_units().await;
    assert_eq!(
        fake.unit_names(),
        ["hostset.probe-old-2.service"],
        "the failed one is reset (and goes), the running one finishes on its own"
    );
}

#[tokio::test]
async fn a_surge_keeps_the_old_unit_until_the_new_ones_probe_passes() {
    let env = Env::new("surge");
    let surge = "updateStrategy = { type = \"RollingUpdate\", maxUnavailable = 0, maxSurge = 1 }\n";
    env.write_spec("web.toml", &spec("web", surge));
    let fake = FakeSystemd::new();
    let (stop, task) = start(env.agent(fake.clone()));
    let old = env
        .wait_for("web", "the first revision runs", |d| d.ready)
        .await;

    // The new revision declares a readiness probe on a port nobody listens on yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    env.write_spec(
        "web.toml",
        &spec(
            "web",
            &format!(
                "{surge}readinessProbe.tcpSocket = {{ port = {port} }}\n\
                 readinessProbe.periodSeconds = 1\nreadinessProbe.failureThreshold = 1\n"
            ),
        ),
    );
    let d = env
        .wait_for("web", "the new revision surges, not ready", |d| {
            d.second
                .as_ref()
                .is_some_and(|s| s.readiness.starts_with("readiness probe failed"))
        })
        .await;
    // The old unit (another revision: no probes) is ready, and stays.
    assert_eq!(d.unit, old.unit);
    assert!(d.ready, "{d:#?}");
    let second = d.second.unwrap();
    assert!(!second.ready);
    assert_eq!(second.ready_since, None);
    assert!(
        second
            .readiness
            .contains(&format!("TCP connect 127.0.0.1:{port}")),
        "{}",
        second.readiness
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fake.unit(&old.unit).is_some(), "the old unit must stay");

    // The port opens: the new unit is ready, and the old one goes.
    let _listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while fake.unit(&old.unit).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old unit is still there: {:#?}",
            env.daemonset("web")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
