//! The agent's passes against the in-memory systemd: every lifecycle rule,
//! from files on disk to the calls systemd receives.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hostset::agent::config::Config;
use hostset::agent::run::{Agent, run};
use hostset::report::NodeReport;
use hostset::systemd::fake::{Call, FakeSystemd, Op};
use hostset::systemd::{Event, SystemdError};
use hostset::unit::UnitOptions;

struct Env {
    dir: PathBuf,
}

impl Env {
    fn new(name: &str) -> Env {
        let dir = std::env::temp_dir().join(format!("hostset-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("daemonsets.d")).unwrap();
        // The spec directory must not be writable by group or others.
        use std::os::unix::fs::PermissionsExt;
        for d in [&dir, &dir.join("daemonsets.d")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Env { dir }
    }
    fn spec_dir(&self) -> PathBuf {
        self.dir.join("daemonsets.d")
    }
    fn write_spec(&self, file: &str, text: &str) {
        write(&self.spec_dir().join(file), text);
    }
    fn remove_spec(&self, file: &str) {
        std::fs::remove_file(self.spec_dir().join(file)).unwrap();
    }
    fn write_node(&self, text: &str) {
        write(&self.dir.join("node.toml"), text);
    }
    fn status(&self) -> NodeReport {
        serde_json::from_slice(&std::fs::read(self.dir.join("status.json")).unwrap()).unwrap()
    }
    fn agent(&self, systemd: FakeSystemd) -> Agent<FakeSystemd> {
        let mut config = Config::defaults(&self.dir);
        config.spec_dir = self.spec_dir();
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
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Write through a temp file and rename, as careful writers do.
fn write(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&tmp, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn spec(name: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\ncommand = [\"/bin/sleep\", \"infinity\"]\n\
         selector.matchLabels = {{ app = \"{name}\" }}\ntemplate.labels = {{ app = \"{name}\" }}\n{extra}"
    )
}

/// One full pass, as the loop makes it after a file event.
async fn pass(agent: &mut Agent<FakeSystemd>) {
    agent.reload_node();
    agent.reload_specs();
    agent.reconcile().await;
}

fn started(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Start(u) => Some(u.name.clone()),
            _ => None,
        })
        .collect()
}

fn stopped(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Stop(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn spec_appears_starts_and_removal_cascades() {
    let env = Env::new("cascade");
    let fake = FakeSystemd::new();
    let mut agent = env.agent(fake.clone());
    env.write_spec("web.toml", &spec("web", ""));
    pass(&mut agent).await;
    assert_eq!(started(&fake.take_calls()), ["hostset-web.service"]);
    assert!(fake.unit("hostset-web.service").is_some());

    // Nothing changes: nothing is done.
    pass(&mut agent).await;
    let calls = fake.take_calls();
    assert!(
        started(&calls).is_empty() && stopped(&calls).is_empty(),
        "{calls:?}"
    );

    env.remove_spec("web.toml");
    pass(&mut agent).await;
    assert_eq!(stopped(&fake.take_calls()), ["hostset-web.service"]);
    assert!(fake.unit("hostset-web.service").is_none());
}

#[tokio::test]
async fn node_label_and_taint_changes_start_and_stop() {
    let env = Env::new("labels");
    let fake = FakeSystemd::new();
    let mut agent = env.agent(fake.clone());
    env.write_node("name = \"n1\"\n");
    env.write_spec(
        "ssd.toml",
        &spec("ssd", "nodeSelector = { disktype = \"ssd\" }\n"),
    );
    pass(&mut agent).await;
    assert!(
        started(&fake.take_calls()).is_empty(),
        "no disktype label yet"
    );
    let report = env.status();
    assert!(
        report.daemonsets[0].reasons[0].contains("disktype=ssd"),
        "{:?}",
        report.daemonsets
    );

    env.write_node("name = \"n1\"\nlabels = { disktype = \"ssd\" }\n");
    pass(&mut agent).await;
    assert_eq!(started(&fake.take_calls()), ["hostset-ssd.service"]);

    // NoSchedule: keeps running.
    env.write_node(
        "name = \"n1\"\nlabels = { disktype = \"ssd\" }\n[[taints]]\nkey = \"x\"\neffect = \"NoSchedule\"\n",
    );
    pass(&mut agent).await;
    assert!(stopped(&fake.take_calls()).is_empty());
    // NoExecute: evicted.
    env.write_node(
        "name = \"n1\"\nlabels = { disktype = \"ssd\" }\n[[taints]]\nkey = \"x\"\neffect = \"NoExecute\"\n",
    );
    pass(&mut agent).await;
    assert_eq!(stopped(&fake.take_calls()), ["hostset-ssd.service"]);
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_running_daemon() {
    let env = Env::new("lkg");
    let fake = FakeSystemd::new();
    let mut agent = env.agent(fake.clone());
    env.write_spec("web.toml", &spec("web", ""));
    pass(&mut agent).await;
    fake.take_calls();
    env.write_spec("web.toml", &spec("web", "[[toleration]]\nkey = \"typo\"\n"));
    pass(&mut agent).await;
    let calls = fake.take_calls();
    assert!(
        stopped(&calls).is_empty() && started(&calls).is_empty(),
        "{calls:?}"
    );
    let report = env.status();
    assert!(
        report
            .diagnostics
            .iter()
            .any(|d| d.contains("web.toml:5:3: toleration: unknown field \"toleration\"")),
        "{:?}",
        report.diagnostics
    );
    assert!(report.daemonsets[0].held);
}

#[tokio::test]
async fn agent_restart_adopts_running_units_without_restarting_them() {
    let env = Env::new("adopt");
    let fake = FakeSystemd::new();
    env.write_spec("web.toml", &spec("web", ""));
    let mut first = env.agent(fake.clone());
    pass(&mut first).await;
    let pid = fake.unit("hostset-web.service").unwrap().details.main_pid;
    drop(first);
    fake.take_calls();

    let mut second = env.agent(fake.clone());
    pass(&mut second).await;
    let calls = fake.take_calls();
    assert!(
        started(&calls).is_empty() && stopped(&calls).is_empty(),
        "{calls:?}"
    );
    assert_eq!(
        fake.unit("hostset-web.service").unwrap().details.main_pid,
        pid
    );

    // A broken file at agent start (no valid version known): the unit is held.
    env.write_spec("web.toml", "name = \"web\"\ncommand = \n");
    let mut third = env.agent(fake.clone());
    pass(&mut third).await;
    let calls = fake.take_calls();
    assert!(stopped(&calls).is_empty(), "{calls:?}");
}

#[tokio::test]
async fn a_changed_spec_replaces_the_unit() {
    let env = Env::new("update");
    let fake = FakeSystemd::new();
    let mut agent = env.agent(fake.clone());
    env.write_spec("web.toml", &spec("web", ""));
    pass(&mut agent).await;
    let old = fake.unit("hostset-web.service").unwrap().spec.revision;
    fake.take_calls();
    env.write_spec("web.toml", &spec("web", "env = { MODE = \"new\" }\n"));
    pass(&mut agent).await;
    assert_eq!(stopped(&fake.take_calls()), ["hostset-web.service"]);
    // The fake removes a stopped unit at once; the next pass starts the new revision.
    agent.reconcile().await;
    let calls = fake.take_calls();
    assert_eq!(started(&calls), ["hostset-web.service"]);
    assert_ne!(fake.unit("hostset-web.service").unwrap().spec.revision, old);
}

#[tokio::test]
async fn orphan_on_delete_then_adoption() {
    let env = Env::new("orphan");
    let fake = FakeSystemd::new();
    let mut agent = env.agent(fake.clone());
    env.write_spec(
        "web.toml",
        &spec(
            "web",
            "annotations = { \"hostset.io/orphan-on-delete\" = \"true\" }\n",
        ),
    );
    pass(&mut agent).await;
    fake.take_calls();
    env.remove_spec("web.toml");
    pass(&mut agent).await;
    let calls = fake.take_calls();
    assert!(stopped(&calls).is_empty(), "{calls:?}");
    assert!(
        calls.iter().any(|c| matches!(c, Call::SetDescription(u, d) if u == "hostset-web.service" && d.contains("orphan"))),
        "{calls:?}"
    );
    // A restarted agent leaves the orphan alone.
    let mut restarted = env.agent(fake.clone());
    pass(&mut restarted).await;
    assert!(stopped(&fake.take_calls()).is_empty());
    // The same spec again adopts it back, without a restart.
    env.write_spec("web.toml", &spec("web", ""));
    pass(&mut restarted).await;
    let calls = fake.take_calls();
    assert!(
        started(&calls).is_empty() && stopped(&calls).is_empty(),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, Call::SetDescription(_, d) if !d.contains("orphan"))),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_failing_start_backs_off_and_does_not_block_others() {
    let env = Env::new("backoff");
    let fake = FakeSystemd::new();
    let mut agent = env.agent(fake.clone());
    env.write_spec("a.toml", &spec("a", ""));
    env.write_spec("b.toml", &spec("b", ""));
    fake.fail_next(
        Op::Start,
        1,
        SystemdError::Call {
            op: "start",
            unit: "hostset-a.service".into(),
            name: "org.freedesktop.DBus.Error.InvalidArgs".into(),
            message: "boom".into(),
        },
    );
    pass(&mut agent).await;
    assert_eq!(
        started(&fake.take_calls()),
        ["hostset-a.service", "hostset-b.service"]
    );
    assert!(fake.unit("hostset-a.service").is_none());
    assert!(
        fake.unit("hostset-b.service").is_some(),
        "one failure does not block the others"
    );
    let report = env.status();
    assert!(
        report.daemonsets[0].last_error.contains("boom"),
        "{:?}",
        report.daemonsets[0]
    );
    // Within the backoff nothing is retried; after it, the start is.
    let wake = agent.reconcile().await;
    assert!(started(&fake.take_calls()).is_empty());
    let wake = wake.expect("the agent asks to be woken for the retry");
    tokio::time::sleep_until(wake.into()).await;
    agent.reconcile().await;
    assert_eq!(started(&fake.take_calls()), ["hostset-a.service"]);
}

#[tokio::test]
async fn a_failed_start_job_backs_off() {
    let env = Env::new("jobfail");
    let fake = FakeSystemd::new();
    let mut agent = env.agent(fake.clone());
    env.write_spec("a.toml", &spec("a", ""));
    pass(&mut agent).await;
    fake.take_calls();
    // systemd: the exec failed; the unit is collected at once.
    fake.remove("hostset-a.service");
    agent.on_event(&Event::JobRemoved {
        unit: "hostset-a.service".into(),
        result: "failed".into(),
    });
    agent.reconcile().await;
    assert!(
        started(&fake.take_calls()).is_empty(),
        "not restarted in a tight loop"
    );
    assert!(env.status().daemonsets[0].last_error.contains("failed"));
}

#[tokio::test]
async fn the_loop_reacts_to_a_new_file_within_a_second() {
    let env = Env::new("loop");
    let fake = FakeSystemd::new();
    let agent = env.agent(fake.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(agent, async {
        let _ = stop_rx.await;
    }));
    // Wait for the first pass.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !env.dir.join("status.json").exists() {
        assert!(tokio::time::Instant::now() < deadline, "no first pass");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let written = std::time::Instant::now();
    env.write_spec("web.toml", &spec("web", ""));
    loop {
        if fake.unit("hostset-web.service").is_some() {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "not started within a second"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A node label change acts within a second too.
    env.write_spec(
        "ssd.toml",
        &spec("ssd", "nodeSelector = { disktype = \"ssd\" }\n"),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(fake.unit("hostset-ssd.service").is_none());
    let written = std::time::Instant::now();
    env.write_node("labels = { disktype = \"ssd\" }\n");
    while fake.unit("hostset-ssd.service").is_none() {
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "label change not acted on within a second"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        fake.unit("hostset-web.service").is_some(),
        "stopping the agent leaves the daemons running"
    );
}
