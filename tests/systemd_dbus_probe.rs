//! A probe of [`hostset::systemd::dbus::Bus`] against a real systemd.
//!
//! Not part of CI: it starts, kills and stops units, so it must run inside a
//! throwaway systemd node (a booted `systemd-nspawn` container), never on a
//! host that matters. Run it there with the bus address in `HOSTSET_PROBE_BUS`
//! (`system` for the default system bus address):
//!
//! ```text
//! cargo test --test systemd_dbus_probe --no-run   # note the binary path
//! nsenter -t <node init pid> -a env HOSTSET_PROBE_BUS=unix:path=/run/dbus/system_bus_socket \
//!     /probe/systemd_dbus_probe-<hash> --ignored --nocapture --test-threads=1
//! ```
//!
//! It needs `kill` and `systemctl` in the node, and prints what it measured.
#![cfg(feature = "systemd")]

use std::time::{Duration, Instant};

use hostset::spec::Labels;
use hostset::systemd::dbus::Bus;
use hostset::systemd::{Event, Systemd, SystemdError, UnitState};
use hostset::unit::{BindMount, ExecCommand, PropValue, Property, UNIT_PATTERN, UnitSpec};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const ENV_BUS: &str = "HOSTSET_PROBE_BUS";
const MAIN: &str = "hostset-probe-main.service";
const FAILING: &str = "hostset-probe-fail.service";
const FOREIGN: &str = "other-probe.service";
const BINDS: &str = "hostset-probe-binds.service";
const WAIT: Duration = Duration::from_secs(10);

fn prop(name: &'static str, value: PropValue) -> Property {
    Property { name, value }
}

fn strs(items: &[&str]) -> PropValue {
    PropValue::Strs(items.iter().map(|s| s.to_string()).collect())
}

fn exec(argv: &[&str]) -> PropValue {
    PropValue::Exec(vec![ExecCommand {
        path: argv[0].to_string(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ignore_failure: false,
    }])
}

/// Every property shape of `unit.rs`, with the values measured in the notes.
fn full_spec(name: &str) -> UnitSpec {
    UnitSpec {
        name: name.to_string(),
        daemonset: "probe-main".to_string(),
        revision: "abc123".to_string(),
        labels: Labels::default(),
        properties: vec![
            prop(
                "Description",
                PropValue::Str("probe main [hostset abc123]".into()),
            ),
            prop(
                "Documentation",
                strs(&["https://hostset.invalid/spec#abc123"]),
            ),
            prop("Type", PropValue::Str("exec".into())),
            prop("ExecStart", exec(&["/bin/sleep", "infinity"])),
            prop("Restart", PropValue::Str("always".into())),
            prop("RestartUSec", PropValue::U64(200_000)),
            prop("StartLimitIntervalUSec", PropValue::U64(0)),
            prop("TimeoutStopUSec", PropValue::U64(5_000_000)),
            prop("Slice", PropValue::Str("hostset.slice".into())),
            prop("CollectMode", PropValue::Str("inactive-or-failed".into())),
            prop("MemoryAccounting", PropValue::Bool(true)),
            prop("CPUAccounting", PropValue::Bool(true)),
            prop("TasksAccounting", PropValue::Bool(true)),
            prop("MemoryMax", PropValue::U64(268_435_456)),
            prop("CPUQuotaPerSecUSec", PropValue::U64(500_000)),
            prop("CPUWeight", PropValue::U64(200)),
            prop("TasksMax", PropValue::U64(64)),
            prop(
                "Environment",
                strs(&[
                    "HOSTSET_DAEMONSET=probe-main",
                    "HOSTSET_REVISION=abc123",
                    "HOSTSET_LABELS=app=probe;tier=x",
                    "WEIRD=$HOME ${X} ; \\ %",
                ]),
            ),
            prop(
                "BindReadOnlyPaths",
                PropValue::Binds(vec![
                    BindMount {
                        source: "/usr/share".into(),
                        destination: "/mnt/share".into(),
                        ignore_missing: false,
                        recursive: true,
                    },
                    BindMount {
                        source: "/nonexistent-probe".into(),
                        destination: "/mnt/missing".into(),
                        ignore_missing: true,
                        recursive: false,
                    },
                ]),
            ),
            prop(
                "BindPaths",
                PropValue::Binds(vec![BindMount {
                    source: "/var/tmp".into(),
                    destination: "/mnt/rw".into(),
                    ignore_missing: false,
                    recursive: false,
                }]),
            ),
            prop(
                "LogExtraFields",
                PropValue::Bytes(vec![b"HOSTSET_REVISION=abc123".to_vec()]),
            ),
        ],
    }
}

fn simple_spec(name: &str, argv: &[&str]) -> UnitSpec {
    UnitSpec {
        name: name.to_string(),
        daemonset: "probe".to_string(),
        revision: "r".to_string(),
        labels: Labels::default(),
        properties: vec![
            prop("Type", PropValue::Str("exec".into())),
            prop("ExecStart", exec(argv)),
            prop("Environment", strs(&["HOSTSET_DAEMONSET=probe"])),
        ],
    }
}

/// Receives events until one satisfies `pred`; returns everything seen and
/// the time it took.
async fn wait_for(
    rx: &mut Receiver<Event>,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> (Vec<Event>, Duration) {
    let t = Instant::now();
    let mut seen = Vec::new();
    loop {
        match timeout(WAIT, rx.recv()).await {
            Ok(Some(e)) => {
                let done = pred(&e);
                seen.push(e);
                if done {
                    return (seen, t.elapsed());
                }
            }
            Ok(None) => panic!("event channel closed while waiting for {what}; saw {seen:?}"),
            Err(_) => panic!("no {what} within {WAIT:?}; saw {seen:?}"),
        }
    }
}

/// Everything queued right now, after a short settle.
async fn drain(rx: &mut Receiver<Event>, settle: Duration) -> Vec<Event> {
    tokio::time::sleep(settle).await;
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

async fn row(bus: &Bus, unit: &str) -> Option<UnitState> {
    bus.list(UNIT_PATTERN)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == unit)
}

fn sh(cmd: &str, args: &[&str]) {
    let status = std::process::Command::new(cmd).args(args).status().unwrap();
    assert!(status.success(), "{cmd} {args:?}: {status}");
}

/// `system` means [`Bus::system`]; anything else is a D-Bus address.
async fn connect(address: &str) -> Bus {
    let bus = if address == "system" {
        Bus::system().await
    } else {
        Bus::at(address).await
    };
    bus.unwrap_or_else(|e| panic!("connect to {address}: {e}"))
}

fn output(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn job_is(unit: &str, result: &'static str) -> impl Fn(&Event) -> bool {
    let unit = unit.to_string();
    move |e| matches!(e, Event::JobRemoved { unit: u, result: r } if *u == unit && r == result)
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs a systemd node"]
async fn probe_real_systemd() {
    let address = std::env::var(ENV_BUS)
        .unwrap_or_else(|_| panic!("set {ENV_BUS} to the node's system bus address"));
    let metrics = tokio::runtime::Handle::current().metrics();
    // Leftovers of an earlier, failed run.
    for unit in [MAIN, FAILING, FOREIGN, BINDS] {
        let _ = std::process::Command::new("systemctl")
            .args(["stop", unit])
            .output();
        let _ = std::process::Command::new("systemctl")
            .args(["reset-failed", unit])
            .output();
    }

    let t = Instant::now();
    let bus = connect(&address).await;
    println!("connect: {}", ms(t.elapsed()));
    let tasks_before = metrics.num_alive_tasks();
    let t = Instant::now();
    let mut rx = bus.events().await.expect("events");
    println!(
        "events() (2 AddMatch + Subscribe + spawn): {}; tasks alive {tasks_before} -> {}",
        ms(t.elapsed()),
        metrics.num_alive_tasks()
    );
    // A second subscription on the same connection skips Subscribe.
    let mut rx2 = bus.events().await.expect("second events()");
    // A second connection subscribes for itself.
    let bus2 = connect(&address).await;
    let mut rx3 = bus2
        .events()
        .await
        .expect("events() on a second connection");

    // -- start with the full property set -----------------------------------
    let spec = full_spec(MAIN);
    let t = Instant::now();
    bus.start_transient(&spec).await.expect("start");
    let reply = t.elapsed();
    let (seen, job) = wait_for(&mut rx, "JobRemoved done", job_is(MAIN, "done")).await;
    println!(
        "start: reply {}, JobRemoved done after {}",
        ms(reply),
        ms(job)
    );
    println!("  events: {seen:?}");
    assert!(
        seen.contains(&Event::UnitChanged(MAIN.into())),
        "no UnitChanged before the job end"
    );
    let r = row(&bus, MAIN).await.expect("listed");
    println!("  list row: {r:?}");
    assert_eq!(
        (r.load_state.as_str(), r.active_state.as_str()),
        ("loaded", "active")
    );
    assert_eq!(r.sub_state, "running");
    assert_eq!(r.description, "probe main [hostset abc123]");
    let (seen2, _) = wait_for(&mut rx2, "JobRemoved on rx2", job_is(MAIN, "done")).await;
    let (seen3, _) = wait_for(&mut rx3, "JobRemoved on rx3", job_is(MAIN, "done")).await;
    println!(
        "  second receiver saw {} events, second connection {}",
        seen2.len(),
        seen3.len()
    );
    drop(rx2);

    let t = Instant::now();
    let d = bus.details(MAIN).await.expect("details");
    println!("details: {} -> {d:?}", ms(t.elapsed()));
    assert!(d.main_pid > 1);
    assert_eq!(d.n_restarts, 0);
    assert_eq!(d.result, "success");
    assert_eq!(
        d.environment,
        [
            "HOSTSET_DAEMONSET=probe-main",
            "HOSTSET_REVISION=abc123",
            "HOSTSET_LABELS=app=probe;tier=x",
            "WEIRD=$HOME ${X} ; \\ %"
        ]
    );
    assert_eq!(d.invocation_id.len(), 32);
    assert!(d.active_enter_timestamp_usec > 0);
    let t = Instant::now();
    let all = bus.list("*").await.unwrap();
    println!("list(\"*\"): {} units in {}", all.len(), ms(t.elapsed()));

    // What systemd made of the property values (their D-Bus signatures).
    let show = output(
        "systemctl",
        &[
            "show",
            MAIN,
            "-p",
            "Description,Documentation,Type,ExecStart,Restart,RestartUSec,StartLimitIntervalUSec,\
             TimeoutStopUSec,Slice,CollectMode,MemoryAccounting,CPUAccounting,TasksAccounting,\
             MemoryMax,CPUQuotaPerSecUSec,CPUWeight,TasksMax,Environment,BindReadOnlyPaths,\
             BindPaths,LogExtraFields,Transient",
        ],
    );
    println!("systemctl show:\n{show}");
    for line in [
        "Type=exec",
        "Restart=always",
        "RestartUSec=200ms",
        "MemoryMax=268435456",
        "CPUQuotaPerSecUSec=500ms",
        "CPUWeight=200",
        "TasksMax=64",
        "TimeoutStopUSec=5s",
        "Slice=hostset.slice",
        "CollectMode=inactive-or-failed",
        "MemoryAccounting=yes",
        "LogExtraFields=HOSTSET_REVISION=abc123",
        "Documentation=https://hostset.invalid/spec#abc123",
        "BindReadOnlyPaths=/usr/share:/mnt/share:rbind -/nonexistent-probe:/mnt/missing",
        "BindPaths=/var/tmp:/mnt/rw",
        "Transient=yes",
    ] {
        assert!(
            show.lines().any(|l| l == line),
            "systemctl show lacks {line}"
        );
    }
    // The daemon sees the recursive read-only bind.
    let share = std::fs::read_dir(format!("/proc/{}/root/mnt/share", d.main_pid))
        .expect("the daemon's /mnt/share")
        .count();
    println!("the daemon's /mnt/share holds {share} entries");
    assert!(share > 0);

    // -- an empty BindPaths after BindReadOnlyPaths wipes both ----------------
    let mut binds = simple_spec(BINDS, &["/bin/sleep", "infinity"]);
    binds.properties.push(prop(
        "BindReadOnlyPaths",
        PropValue::Binds(vec![BindMount {
            source: "/usr/share".into(),
            destination: "/mnt/share".into(),
            ignore_missing: false,
            recursive: true,
        }]),
    ));
    binds
        .properties
        .push(prop("BindPaths", PropValue::Binds(vec![])));
    bus.start_transient(&binds).await.expect("start binds");
    let show = output(
        "systemctl",
        &["show", BINDS, "-p", "BindReadOnlyPaths,BindPaths"],
    );
    println!("BindReadOnlyPaths then an empty BindPaths: {show:?}");
    sh("systemctl", &["stop", BINDS]);

    // -- duplicate start --------------------------------------------------
    assert_eq!(
        bus.start_transient(&spec).await,
        Err(SystemdError::UnitExists(MAIN.into()))
    );
    println!("duplicate start: UnitExists");

    // -- kill -9: systemd restarts it ---------------------------------------
    let old_pid = d.main_pid;
    let t = Instant::now();
    sh("kill", &["-9", &old_pid.to_string()]);
    let (seen, restart_job) = wait_for(&mut rx, "restart JobRemoved", job_is(MAIN, "done")).await;
    println!(
        "kill -9 {old_pid}: restart job done after {}",
        ms(restart_job)
    );
    println!("  events: {seen:?}");
    assert!(
        seen.iter()
            .filter(|e| **e == Event::UnitChanged(MAIN.into()))
            .count()
            >= 2
    );
    let mut d2 = bus.details(MAIN).await.unwrap();
    while d2.main_pid == 0 || d2.main_pid == old_pid {
        assert!(t.elapsed() < WAIT, "no new MainPID: {d2:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
        d2 = bus.details(MAIN).await.unwrap();
    }
    println!("  after {}: {d2:?}", ms(t.elapsed()));
    assert_eq!(d2.n_restarts, 1);
    assert_ne!(d2.invocation_id, d.invocation_id);
    assert!(d2.active_enter_timestamp_usec > d.active_enter_timestamp_usec);
    let r = row(&bus, MAIN).await.unwrap();
    assert_eq!(
        (r.active_state.as_str(), r.sub_state.as_str()),
        ("active", "running")
    );

    // -- set_description -------------------------------------------------
    let t = Instant::now();
    bus.set_description(MAIN, "probe main [hostset def456]")
        .await
        .expect("set_description");
    println!("set_description: {}", ms(t.elapsed()));
    assert_eq!(
        row(&bus, MAIN).await.unwrap().description,
        "probe main [hostset def456]"
    );
    println!(
        "  events: {:?}",
        drain(&mut rx, Duration::from_millis(100)).await
    );

    // -- reset_failed on a running unit: what happens to NRestarts --------
    bus.reset_failed(MAIN)
        .await
        .expect("reset_failed on a running unit");
    let d3 = bus.details(MAIN).await.unwrap();
    println!(
        "reset_failed on a running unit: NRestarts {} -> {}, Result {}, still {:?}, events {:?}",
        d2.n_restarts,
        d3.n_restarts,
        d3.result,
        row(&bus, MAIN).await.map(|r| r.sub_state),
        drain(&mut rx, Duration::from_millis(100)).await
    );

    // -- daemon-reload: Reloaded -------------------------------------------
    let t = Instant::now();
    sh("systemctl", &["daemon-reload"]);
    let (seen, _) = wait_for(&mut rx, "Reloaded", |e| *e == Event::Reloaded).await;
    println!(
        "daemon-reload: Reloaded {} after the call ({seen:?})",
        ms(t.elapsed())
    );
    // The UnitRemoved/UnitNew systemd emits for every unit during a reload are hidden.
    assert_eq!(seen, [Event::Reloaded]);
    let d4 = bus.details(MAIN).await.unwrap();
    assert_eq!(d4.main_pid, d2.main_pid, "daemon-reload restarted the unit");
    assert_eq!(d4.environment, d.environment);

    // -- daemon-reexec: Reloaded, and the subscription survives ---------------
    let t = Instant::now();
    sh("systemctl", &["daemon-reexec"]);
    let (seen, _) = wait_for(&mut rx, "Reloaded", |e| *e == Event::Reloaded).await;
    println!(
        "daemon-reexec: Reloaded {} after the call ({seen:?})",
        ms(t.elapsed())
    );
    assert_eq!(seen, [Event::Reloaded]);
    assert_eq!(bus.details(MAIN).await.unwrap().main_pid, d2.main_pid);
    bus.set_description(MAIN, "probe main [hostset abc123]")
        .await
        .expect("set_description after reexec");
    let (seen, _) = wait_for(&mut rx, "UnitChanged after reexec", |e| {
        *e == Event::UnitChanged(MAIN.into())
    })
    .await;
    println!("  after reexec, set_description gave {seen:?}");

    // -- a consumer that stops reading does not stall the connection ---------
    drain(&mut rx, Duration::from_millis(100)).await;
    let mut idle = bus.events().await.expect("events() for an idle consumer");
    let t = Instant::now();
    const CALLS: usize = hostset::systemd::dbus::EVENT_CHANNEL_CAPACITY + 500;
    for i in 0..CALLS {
        bus.set_description(MAIN, &format!("probe main [hostset abc123] {i}"))
            .await
            .expect("set_description while the channel is full");
    }
    println!(
        "{CALLS} set_description with nobody reading: {}",
        ms(t.elapsed())
    );
    for (name, rx) in [("idle", &mut idle), ("main", &mut rx)] {
        let mut events = drain(rx, Duration::from_millis(300)).await;
        let queued = events.len();
        // The backlog moves into the channel once there is room.
        events.extend(drain(rx, Duration::from_millis(100)).await);
        println!(
            "  {name} receiver: {queued} events queued, then {} more, the last {:?}",
            events.len() - queued,
            events.last()
        );
        assert_eq!(queued, hostset::systemd::dbus::EVENT_CHANNEL_CAPACITY);
        assert!(events.len() <= queued + 1);
        assert_eq!(events.last(), Some(&Event::UnitChanged(MAIN.into())));
    }
    drop(idle);

    // -- stop ----------------------------------------------------------------
    let t = Instant::now();
    bus.stop(MAIN).await.expect("stop");
    let reply = t.elapsed();
    let (seen, gone) = wait_for(&mut rx, "UnitRemoved", |e| {
        *e == Event::UnitRemoved(MAIN.into())
    })
    .await;
    println!(
        "stop: reply {}, UnitRemoved after {} ({seen:?})",
        ms(reply),
        ms(gone)
    );
    assert!(seen.iter().any(job_is(MAIN, "done")));
    assert_eq!(
        bus.details(MAIN).await,
        Err(SystemdError::NoSuchUnit(MAIN.into()))
    );
    assert!(row(&bus, MAIN).await.is_none());

    // -- a failing unit lingers until reset_failed ---------------------------
    let failing = simple_spec(FAILING, &["/bin/false"]);
    bus.start_transient(&failing).await.expect("start failing");
    let (seen, _) = wait_for(
        &mut rx,
        "the failing unit's job",
        |e| matches!(e, Event::JobRemoved { unit, .. } if unit == FAILING),
    )
    .await;
    println!("failing unit: {seen:?}");
    let t = Instant::now();
    let mut r = row(&bus, FAILING).await;
    while r.as_ref().map(|r| r.active_state.as_str()) != Some("failed") {
        assert!(t.elapsed() < WAIT, "not failed: {r:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
        r = row(&bus, FAILING).await;
    }
    println!("  row: {r:?}");
    let d = bus.details(FAILING).await.unwrap();
    println!("  details: {d:?}");
    assert_eq!((d.main_pid, d.result.as_str()), (0, "exit-code"));
    assert_eq!(
        bus.start_transient(&failing).await,
        Err(SystemdError::UnitExists(FAILING.into()))
    );
    bus.stop(FAILING).await.expect("stop on a failed unit");
    let (seen, _) = wait_for(
        &mut rx,
        "stop job on the failed unit",
        |e| matches!(e, Event::JobRemoved { unit, .. } if unit == FAILING),
    )
    .await;
    println!(
        "  stop on the failed unit: {seen:?}; still listed: {:?}",
        row(&bus, FAILING).await.map(|r| r.active_state)
    );
    let t = Instant::now();
    bus.reset_failed(FAILING).await.expect("reset_failed");
    let (seen, gone) = wait_for(&mut rx, "UnitRemoved", |e| {
        *e == Event::UnitRemoved(FAILING.into())
    })
    .await;
    println!(
        "  reset_failed: UnitRemoved after {} ({seen:?})",
        ms(gone.max(t.elapsed()))
    );
    assert!(row(&bus, FAILING).await.is_none());

    // -- errors on units that are not loaded ---------------------------------
    let missing = "hostset-probe-missing.service";
    println!("stop(missing): {:?}", bus.stop(missing).await);
    println!(
        "reset_failed(missing): {:?}",
        bus.reset_failed(missing).await
    );
    println!(
        "set_description(missing): {:?}",
        bus.set_description(missing, "x").await
    );
    assert_eq!(
        bus.details(missing).await,
        Err(SystemdError::NoSuchUnit(missing.into()))
    );
    // GetUnit did not load it.
    assert!(bus.list(missing).await.unwrap().is_empty());
    let mut bad = simple_spec("hostset-probe-bad.service", &["/bin/true"]);
    bad.properties
        .push(prop("Restart", PropValue::Str("sometimes".into())));
    let e = bus.start_transient(&bad).await.unwrap_err();
    println!("bad property: {e}");
    assert!(matches!(
        &e,
        SystemdError::Call { op: "StartTransientUnit", unit, name, .. }
            if unit == "hostset-probe-bad.service" && name == "org.freedesktop.DBus.Error.InvalidArgs"
    ));
    let mut wrong_type = simple_spec("hostset-probe-bad.service", &["/bin/true"]);
    wrong_type
        .properties
        .push(prop("MemoryMax", PropValue::Str("1G".into())));
    println!(
        "wrong variant type: {}",
        bus.start_transient(&wrong_type).await.unwrap_err()
    );

    // -- events for other units are not forwarded ---------------------------
    drain(&mut rx, Duration::from_millis(100)).await;
    let foreign = simple_spec(FOREIGN, &["/bin/sleep", "infinity"]);
    bus.start_transient(&foreign).await.expect("start foreign");
    tokio::time::sleep(Duration::from_millis(200)).await;
    bus.stop(FOREIGN).await.expect("stop foreign");
    let leaked = drain(&mut rx, Duration::from_millis(300)).await;
    println!("events for {FOREIGN}: {leaked:?}");
    assert!(leaked.is_empty());

    // -- closing the connection ends the forwarding task ---------------------
    let bus4 = connect(&address).await;
    let mut rx4 = bus4
        .events()
        .await
        .expect("events() on the fourth connection");
    let t = Instant::now();
    bus4.connection().clone().close().await.expect("close");
    assert_eq!(timeout(WAIT, rx4.recv()).await, Ok(None));
    println!(
        "connection closed: channel closed after {}",
        ms(t.elapsed())
    );
    drop(bus4);

    // -- dropping the receiver ends the forwarding task ----------------------
    drop(rx);
    drop(rx3);
    drop(bus2);
    let t = Instant::now();
    while metrics.num_alive_tasks() > tasks_before {
        assert!(
            t.elapsed() < WAIT,
            "{} tasks alive, {tasks_before} before",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "tasks alive after dropping the receivers: {} (before events(): {tasks_before})",
        metrics.num_alive_tasks()
    );
}
