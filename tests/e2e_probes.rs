//! Readiness on real systemd: probes and Type=notify daemons on a systemd-nspawn node running
//! hostsetd (systemd 252). Readiness is read from the agent's status file; restarts and unit
//! types from systemd itself (`systemctl show`).
//!
//! Needs root, systemd-nspawn and the test rootfs (`.ci/run` installs and builds them);
//! `HOSTSET_SKIP_E2E=1` skips.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hostset::report::{DaemonSetReport, NodeReport};
use support::coordinator::{start_hostsetd, write_spec};
use support::fleet::{Fleet, Node, NodeOpts, notice};

const SPECS: &str = "/etc/hostset/daemonsets.d";
const WAIT: Duration = Duration::from_secs(30);

fn agent_node(name: &str, specs: &Path) -> NodeOpts {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("units/hostsetd.service");
    NodeOpts::new(name)
        .bind_ro(env!("CARGO_BIN_EXE_hostsetd"), "/usr/bin/hostsetd")
        .bind_ro(env!("CARGO_BIN_EXE_hostset"), "/usr/bin/hostset")
        .bind_ro(unit, "/etc/systemd/system/hostsetd.service")
        .bind_ro(specs, SPECS)
}

/// A TCP port free on the host (the nodes share its network) at the time of asking.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spec(name: &str, body: &str) -> String {
    format!(
        "name = \"{name}\"\nselector.matchLabels = {{ app = \"{name}\" }}\n\
         template.labels = {{ app = \"{name}\" }}\nterminationGracePeriodSeconds = 2\n{body}"
    )
}

fn report(node: &Node, name: &str) -> Option<DaemonSetReport> {
    let text = node.read_file("/run/hostset/status.json")?;
    let report: NodeReport = serde_json::from_str(&text).ok()?;
    report.daemonsets.into_iter().find(|d| d.name == name)
}

/// Wait until the report of `name` satisfies `cond`; returns it.
fn expect(
    node: &Node,
    name: &str,
    what: &str,
    cond: impl Fn(&DaemonSetReport) -> bool,
) -> DaemonSetReport {
    let mut last = None;
    let waited = node.wait_for(
        |n| {
            last = report(n, name);
            last.as_ref().is_some_and(&cond)
        },
        WAIT,
    );
    match waited {
        Ok(_) => last.unwrap(),
        Err(e) => panic!(
            "{name}: {what}: {e}\nlast report: {last:#?}\n--- hostsetd journal ---\n{}",
            node.journal("hostsetd")
        ),
    }
}

/// A Perl HTTP server that starts listening on ADDR after 4 s and answers `GET /ready` with
/// 200 (perl-base is in every Debian).
const SLOW_SERVER: &str = r#"
use strict; use warnings; use IO::Socket::INET;
$| = 1;
$SIG{TERM} = sub { exit 0 };
sleep 4;
my $server = IO::Socket::INET->new(LocalAddr => $ENV{ADDR}, Listen => 8, ReuseAddr => 1)
    or die "cannot listen on $ENV{ADDR}: $@";
while (my $client = $server->accept) {
    my $request = <$client> // "";
    while (my $line = <$client>) { last if $line =~ /^\r?$/ }
    my $status = $request =~ m{^GET /ready } ? "200 OK" : "404 Not Found";
    print $client "HTTP/1.0 $status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    close $client;
}
"#;

#[test]
fn probes_and_notify_on_real_systemd() {
    let Some(fleet) = Fleet::new("probes") else {
        return;
    };
    let specs = fleet.shared_dir("specs");
    std::fs::set_permissions(&specs, std::fs::Permissions::from_mode(0o755)).unwrap();

    let web_port = free_port();
    let dead_port = free_port();
    write_spec(
        &specs,
        "slow-web.toml",
        &spec(
            "slow-web",
            &format!(
                "command = [\"/usr/bin/perl\", \"-e\", '''{SLOW_SERVER}''']\n\
                 env = {{ ADDR = \"127.0.0.1:{web_port}\" }}\n\
                 readinessProbe.httpGet = {{ port = \"web\", path = \"/ready\" }}\n\
                 readinessProbe.periodSeconds = 1\n\
                 readinessProbe.failureThreshold = 1\n\
                 [[ports]]\nname = \"web\"\nport = {web_port}\n"
            ),
        ),
    );
    write_spec(
        &specs,
        "not-alive.toml",
        &spec(
            "not-alive",
            &format!(
                "command = [\"/bin/sleep\", \"infinity\"]\n\
                 livenessProbe.tcpSocket = {{ port = {dead_port} }}\n\
                 livenessProbe.periodSeconds = 1\n\
                 livenessProbe.failureThreshold = 2\n"
            ),
        ),
    );
    write_spec(
        &specs,
        "exec-ready.toml",
        &spec(
            "exec-ready",
            "command = [\"/bin/sleep\", \"infinity\"]\nuser = \"nobody\"\n\
             readinessProbe.exec.command = [\"/bin/sh\", \"-c\", \
             \"test \\\"$(id -u)\\\" = 65534 && test -e /run/exec-flag\"]\n\
             readinessProbe.periodSeconds = 1\n\
             readinessProbe.failureThreshold = 1\n",
        ),
    );
    write_spec(
        &specs,
        "notifier.toml",
        &spec(
            "notifier",
            "command = [\"/bin/bash\", \"-c\", \"sleep 3; systemd-notify --ready; exec sleep infinity\"]\n\
             notify = true\n\
             user = \"nobody\"\n",
        ),
    );

    write_spec(
        &specs,
        "slow-probe.toml",
        &spec(
            "slow-probe",
            "command = [\"/bin/sleep\", \"infinity\"]\n\
             readinessProbe.exec.command = [\"/bin/sleep\", \"30\"]\n\
             readinessProbe.timeoutSeconds = 1\n\
             readinessProbe.periodSeconds = 2\n\
             readinessProbe.failureThreshold = 1\n",
        ),
    );

    let node = fleet.boot(agent_node("probe-1", &specs));
    start_hostsetd(&node);

    // Type=notify: activating until READY=1 from a child of the main process, as a non-root
    // user (which NotifyAccess=main would not accept).
    let notifier = "hostset-notifier.service";
    let p = node.systemctl_show(notifier, &["Type", "NotifyAccess"]);
    assert_eq!(p["Type"], "notify");
    assert_eq!(p["NotifyAccess"], "all");
    let d = expect(&node, "notifier", "waits for READY=1", |d| {
        d.state == "activating/start"
    });
    assert!(!d.ready);
    assert_eq!(
        d.readiness,
        "unit is activating/start: waiting for the daemon to send READY=1"
    );
    let d = expect(&node, "notifier", "ready after READY=1", |d| d.ready);
    assert_eq!(node.unit_property(notifier, "ActiveState"), "active");
    assert_eq!(d.ready_since, d.started_at);

    // HTTP readiness: not ready while the server does not listen, then ready.
    let d = expect(&node, "slow-web", "the probe fails first", |d| {
        d.state == "active/running" && !d.ready && d.readiness.starts_with("readiness probe failed")
    });
    assert!(
        d.readiness.starts_with(&format!(
            "readiness probe failed 1 time: HTTP GET http://127.0.0.1:{web_port}/ready: "
        )),
        "{}",
        d.readiness
    );
    assert_eq!(d.ready_since, None);
    let d = expect(&node, "slow-web", "ready once it answers", |d| d.ready);
    let since = d.ready_since.expect("readySince when ready");
    let started = d.started_at.expect("startedAt");
    notice(&format!(
        "slow-web: active at {started}, ready at {since} (the server listens after 4 s)"
    ));
    assert!(
        since >= started + 2,
        "readySince {since} is not the unit's start {started}"
    );

    // Exec readiness as the daemon's user.
    let d = expect(&node, "exec-ready", "the exec probe fails", |d| {
        d.readiness.starts_with("readiness probe failed")
    });
    assert!(d.readiness.ends_with(": exit status 1"), "{}", d.readiness);
    node.write_file("/run/exec-flag", "");
    expect(&node, "exec-ready", "ready once the flag exists", |d| {
        d.ready
    });

    // systemd kills an exec probe at its timeout (the oneshot unit's TimeoutStartUSec).
    let d = expect(&node, "slow-probe", "the timeout is reported", |d| {
        d.readiness.starts_with("readiness probe failed")
    });
    assert_eq!(
        d.readiness,
        "readiness probe failed 1 time: exec /bin/sleep 30: timed out after 1s"
    );
    // No probe unit is left behind, failed or running, once a run is over.
    std::thread::sleep(Duration::from_millis(300));
    let left = node.exec_ok(&[
        "systemctl",
        "list-units",
        "--all",
        "--no-legend",
        "hostset.probe-*",
    ]);
    let lingering: Vec<&str> = left.lines().filter(|l| l.contains("failed")).collect();
    assert!(lingering.is_empty(), "{left}");

    // Liveness: the daemon is killed and systemd restarts it.
    let unit = "hostset-not-alive.service";
    match node.wait_for(
        |n| {
            n.unit_property(unit, "NRestarts")
                .parse::<u32>()
                .is_ok_and(|r| r >= 1)
        },
        WAIT,
    ) {
        Ok(_) => {}
        Err(e) => panic!("{e}\n{}", node.journal("hostsetd")),
    }
    assert!(
        node.journal("hostsetd")
            .contains("liveness probe failed 2 times"),
        "{}",
        node.journal("hostsetd")
    );
    // Between kills (it is running again, not waiting to restart):
    let d = expect(&node, "not-alive", "restarts reported", |d| {
        d.restarts >= 1 && d.state == "active/running"
    });
    assert!(
        d.ready,
        "a failing liveness probe alone does not make it unready: {d:#?}"
    );

    // An agent restart keeps the ready daemon ready, with its readySince.
    let before = report(&node, "slow-web").unwrap();
    assert!(before.ready);
    let out = node.exec(&["systemctl", "restart", "hostsetd"]);
    assert!(out.status.success(), "{}", node.journal("hostsetd"));
    // Type=notify: the restart returns after the new agent's first pass wrote its report.
    let after = report(&node, "slow-web").unwrap();
    assert!(after.ready, "{after:#?}");
    assert_eq!(after.ready_since, before.ready_since);

    // hostset status shows it.
    let out = node.exec_ok(&["hostset", "status"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("slow-web "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(" 1/1 "), "{out}");
}
