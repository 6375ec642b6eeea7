//! The in-memory systemd (`hostset::systemd::fake`): what it records, the
//! systemd behaviour it models, failure injection and events.
#![cfg(feature = "systemd")]

use hostset::spec::Labels;
use hostset::systemd::fake::{Call, FIRST_PID, FakeSystemd, Op};
use hostset::systemd::{Event, Systemd, SystemdError};
use hostset::unit::{ExecCommand, PropValue, Property, UNIT_PATTERN, UnitSpec};
use tokio::sync::mpsc::Receiver;

/// A unit spec like the ones `unit::unit_spec` builds, written by hand.
fn spec(name: &str) -> UnitSpec {
    let unit = format!("hostset-{name}.service");
    UnitSpec {
        name: unit,
        daemonset: name.to_string(),
        revision: "abc123".to_string(),
        labels: Labels::default(),
        properties: vec![
            Property {
                name: "Description",
                value: PropValue::Str(format!("{name} [hostset abc123]")),
            },
            Property {
                name: "Type",
                value: PropValue::Str("exec".into()),
            },
            Property {
                name: "ExecStart",
                value: PropValue::Exec(vec![ExecCommand {
                    path: "/bin/sleep".into(),
                    argv: vec!["/bin/sleep".into(), "infinity".into()],
                    ignore_failure: false,
                }]),
            },
            Property {
                name: "Environment",
                value: PropValue::Strs(vec![
                    format!("HOSTSET_DAEMONSET={name}"),
                    "HOSTSET_REVISION=abc123".into(),
                ]),
            },
            Property {
                name: "CollectMode",
                value: PropValue::Str("inactive-or-failed".into()),
            },
        ],
    }
}

fn drain(rx: &mut Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn changed(unit: &str) -> Event {
    Event::UnitChanged(unit.to_string())
}

fn job_done(unit: &str) -> Event {
    Event::JobRemoved {
        unit: unit.to_string(),
        result: "done".to_string(),
    }
}

#[tokio::test]
async fn start_lists_and_reads_back_the_markers() {
    let sd = FakeSystemd::new();
    let a = spec("a");
    sd.start_transient(&a).await.unwrap();

    let rows = sd.list(UNIT_PATTERN).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "hostset-a.service");
    assert_eq!(rows[0].description, "a [hostset abc123]");
    assert_eq!(rows[0].load_state, "loaded");
    assert_eq!(
        (rows[0].active_state.as_str(), rows[0].sub_state.as_str()),
        ("active", "running")
    );

    let d = sd.details("hostset-a.service").await.unwrap();
    assert_eq!(
        d.environment,
        ["HOSTSET_DAEMONSET=a", "HOSTSET_REVISION=abc123"]
    );
    assert_eq!(d.main_pid, FIRST_PID);
    assert_eq!(d.n_restarts, 0);
    assert_eq!(d.result, "success");
    assert_eq!((d.memory_current, d.cpu_usage_nsec), (None, None));
    assert!(d.active_enter_timestamp_usec > 0);
    assert_eq!(d.invocation_id.len(), 32);

    assert_eq!(
        sd.calls(),
        [
            Call::Start(a),
            Call::List,
            Call::Details("hostset-a.service".into()),
        ]
    );
}

#[tokio::test]
async fn a_unit_without_description_shows_its_name() {
    let sd = FakeSystemd::new();
    let mut a = spec("a");
    a.properties.retain(|p| p.name != "Description");
    sd.start_transient(&a).await.unwrap();
    assert_eq!(
        sd.list("*").await.unwrap()[0].description,
        "hostset-a.service"
    );
}

#[tokio::test]
async fn duplicate_start_is_unit_exists_and_changes_nothing() {
    let sd = FakeSystemd::new();
    sd.start_transient(&spec("a")).await.unwrap();
    let before = sd.unit("hostset-a.service").unwrap();
    let mut other = spec("a");
    other.revision = "def456".into();
    assert_eq!(
        sd.start_transient(&other).await,
        Err(SystemdError::UnitExists("hostset-a.service".into()))
    );
    assert_eq!(sd.unit("hostset-a.service").unwrap(), before);
    // The failed call is recorded too.
    assert_eq!(sd.calls().len(), 2);
}

#[tokio::test]
async fn each_started_unit_gets_its_own_pid_and_invocation() {
    let sd = FakeSystemd::new();
    sd.start_transient(&spec("a")).await.unwrap();
    sd.start_transient(&spec("b")).await.unwrap();
    let a = sd.details("hostset-a.service").await.unwrap();
    let b = sd.details("hostset-b.service").await.unwrap();
    assert_ne!(a.main_pid, b.main_pid);
    assert_ne!(a.invocation_id, b.invocation_id);
}

#[tokio::test]
async fn stop_removes_the_unit_and_emits_job_then_unit_removed() {
    let sd = FakeSystemd::new();
    sd.start_transient(&spec("a")).await.unwrap();
    let mut rx = sd.events().await.unwrap();
    sd.stop("hostset-a.service").await.unwrap();
    assert_eq!(
        drain(&mut rx),
        [
            job_done("hostset-a.service"),
            Event::UnitRemoved("hostset-a.service".into())
        ]
    );
    assert!(sd.list(UNIT_PATTERN).await.unwrap().is_empty());
    assert_eq!(
        sd.details("hostset-a.service").await,
        Err(SystemdError::NoSuchUnit("hostset-a.service".into()))
    );
    // The name can be reused at once.
    sd.start_transient(&spec("a")).await.unwrap();
}

#[tokio::test]
async fn operations_on_a_unit_that_is_not_loaded_are_no_such_unit() {
    let sd = FakeSystemd::new();
    let gone = || Err(SystemdError::NoSuchUnit("hostset-x.service".into()));
    assert_eq!(sd.stop("hostset-x.service").await, gone());
    assert_eq!(sd.reset_failed("hostset-x.service").await, gone());
    assert_eq!(sd.set_description("hostset-x.service", "d").await, gone());
    assert_eq!(
        sd.details("hostset-x.service").await,
        gone().map(|()| Default::default())
    );
}

#[tokio::test]
async fn start_emits_unit_changed_and_job_done() {
    let sd = FakeSystemd::new();
    let mut rx = sd.events().await.unwrap();
    sd.start_transient(&spec("a")).await.unwrap();
    assert_eq!(
        drain(&mut rx),
        [changed("hostset-a.service"), job_done("hostset-a.service")]
    );
}

#[tokio::test]
async fn events_only_name_hostset_units() {
    let sd = FakeSystemd::new();
    let mut rx = sd.events().await.unwrap();
    let mut other = spec("a");
    other.name = "other.service".into();
    sd.start_transient(&other).await.unwrap();
    sd.crash("other.service");
    sd.stop("other.service").await.unwrap();
    assert!(drain(&mut rx).is_empty());
    // `emit` delivers anything.
    sd.emit(Event::Reloaded);
    assert_eq!(drain(&mut rx), [Event::Reloaded]);
}

#[tokio::test]
async fn every_subscriber_gets_every_event_and_dropped_ones_are_forgotten() {
    let sd = FakeSystemd::new();
    let mut one = sd.events().await.unwrap();
    let two = sd.events().await.unwrap();
    drop(two);
    let mut three = sd.events().await.unwrap();
    sd.start_transient(&spec("a")).await.unwrap();
    assert_eq!(drain(&mut one).len(), 2);
    assert_eq!(drain(&mut three).len(), 2);
}

#[tokio::test]
async fn a_full_channel_owes_one_reloaded() {
    let sd = FakeSystemd::new();
    sd.start_transient(&spec("a")).await.unwrap();
    let mut rx = sd.events().await.unwrap();
    let capacity = hostset::systemd::fake::EVENT_CHANNEL_CAPACITY;
    for _ in 0..capacity + 10 {
        sd.set_state("hostset-a.service", "active", "running");
    }
    assert_eq!(drain(&mut rx).len(), capacity);
    sd.set_state("hostset-a.service", "failed", "failed");
    assert_eq!(
        drain(&mut rx),
        [Event::Reloaded, changed("hostset-a.service")]
    );
}

#[tokio::test]
async fn crash_restarts_with_a_new_pid() {
    let sd = FakeSystemd::new();
    sd.start_transient(&spec("a")).await.unwrap();
    let before = sd.details("hostset-a.service").await.unwrap();
    let mut rx = sd.events().await.unwrap();
    sd.crash("hostset-a.service");
    sd.crash("hostset-a.service");
    let after = sd.details("hostset-a.service").await.unwrap();
    assert_eq!(after.n_restarts, 2);
    assert_ne!(after.main_pid, before.main_pid);
    assert_ne!(after.invocation_id, before.invocation_id);
    assert_eq!(after.environment, before.environment);
    let row = &sd.list(UNIT_PATTERN).await.unwrap()[0];
    assert_eq!(
        (row.active_state.as_str(), row.sub_state.as_str()),
        ("active", "running")
    );
    let events = drain(&mut rx);
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[..2],
        [changed("hostset-a.service"), job_done("hostset-a.service")]
    );
}

#[tokio::test]
async fn reset_failed_removes_failed_units_only() {
    let sd = FakeSystemd::new();
    sd.start_transient(&spec("a")).await.unwrap();
    sd.start_transient(&spec("b")).await.unwrap();
    sd.set_state("hostset-a.service", "failed", "failed");
    sd.update_details("hostset-a.service", |d| {
        d.main_pid = 0;
        d.result = "exit-code".into();
    });
    assert_eq!(
        sd.details("hostset-a.service").await.unwrap().result,
        "exit-code"
    );
    // A failed unit blocks its name.
    assert_eq!(
        sd.start_transient(&spec("a")).await,
        Err(SystemdError::UnitExists("hostset-a.service".into()))
    );
    sd.crash("hostset-b.service");
    let mut rx = sd.events().await.unwrap();
    sd.reset_failed("hostset-a.service").await.unwrap();
    sd.reset_failed("hostset-b.service").await.unwrap();
    assert_eq!(
        drain(&mut rx),
        [Event::UnitRemoved("hostset-a.service".into())]
    );
    // On a unit that is not failed, systemd only resets the restart counter.
    let b = sd.details("hostset-b.service").await.unwrap();
    assert_eq!((b.n_restarts, b.result.as_str()), (0, "success"));
    assert_eq!(sd.list(UNIT_PATTERN).await.unwrap()[0].sub_state, "running");
    assert_eq!(sd.unit_names(), ["hostset-b.service"]);
    sd.start_transient(&spec("a")).await.unwrap();
}

#[tokio::test]
async fn set_description_changes_the_listed_description_and_the_spec() {
    let sd = FakeSystemd::new();
    sd.start_transient(&spec("a")).await.unwrap();
    let mut rx = sd.events().await.unwrap();
    sd.set_description("hostset-a.service", "a [hostset def456]")
        .await
        .unwrap();
    assert_eq!(
        sd.list(UNIT_PATTERN).await.unwrap()[0].description,
        "a [hostset def456]"
    );
    let unit = sd.unit("hostset-a.service").unwrap();
    let descriptions: Vec<_> = unit
        .spec
        .properties
        .iter()
        .filter(|p| p.name == "Description")
        .collect();
    assert_eq!(descriptions.len(), 1);
    assert_eq!(
        descriptions[0].value,
        PropValue::Str("a [hostset def456]".into())
    );
    assert_eq!(drain(&mut rx), [changed("hostset-a.service")]);
    assert_eq!(
        sd.take_calls().get(1),
        Some(&Call::SetDescription(
            "hostset-a.service".into(),
            "a [hostset def456]".into()
        ))
    );
}

#[tokio::test]
async fn insert_running_pre_seeds_without_calls_or_events() {
    let sd = FakeSystemd::new();
    let mut rx = sd.events().await.unwrap();
    sd.insert_running(spec("old"), 4242);
    assert!(sd.calls().is_empty());
    assert!(drain(&mut rx).is_empty());
    let d = sd.details("hostset-old.service").await.unwrap();
    assert_eq!(d.main_pid, 4242);
    assert_eq!(d.environment[0], "HOSTSET_DAEMONSET=old");
    // PIDs handed out later do not collide with the seeded one.
    sd.start_transient(&spec("new")).await.unwrap();
    assert_eq!(
        sd.details("hostset-new.service").await.unwrap().main_pid,
        4243
    );
}

#[tokio::test]
async fn fail_next_fails_exactly_n_calls_of_that_operation() {
    let sd = FakeSystemd::new();
    let boom = SystemdError::Call {
        op: "StartTransientUnit",
        unit: "hostset-a.service".into(),
        name: "org.freedesktop.DBus.Error.InvalidArgs".into(),
        message: "Invalid Restart setting: sometimes".into(),
    };
    sd.fail_next(Op::Start, 2, boom.clone());
    sd.fail_next(
        Op::List,
        1,
        SystemdError::Bus("ListUnitsByPatterns: connection lost".into()),
    );
    assert_eq!(sd.start_transient(&spec("a")).await, Err(boom.clone()));
    // Other operations are unaffected, apart from their own failures.
    assert!(sd.list(UNIT_PATTERN).await.is_err());
    assert!(sd.list(UNIT_PATTERN).await.unwrap().is_empty());
    assert_eq!(sd.start_transient(&spec("a")).await, Err(boom));
    // A failed call changed nothing.
    assert!(sd.unit_names().is_empty());
    sd.start_transient(&spec("a")).await.unwrap();
    assert_eq!(sd.take_calls().len(), 5);
    assert!(sd.calls().is_empty());
}

#[tokio::test]
async fn fail_next_queues_per_operation_and_covers_events() {
    let sd = FakeSystemd::new();
    sd.start_transient(&spec("a")).await.unwrap();
    sd.fail_next(Op::Stop, 1, SystemdError::Bus("first".into()));
    sd.fail_next(Op::Stop, 1, SystemdError::Bus("second".into()));
    sd.fail_next(Op::Events, 1, SystemdError::Bus("AddMatch".into()));
    assert_eq!(
        sd.stop("hostset-a.service").await,
        Err(SystemdError::Bus("first".into()))
    );
    assert_eq!(
        sd.stop("hostset-a.service").await,
        Err(SystemdError::Bus("second".into()))
    );
    assert!(sd.events().await.is_err());
    assert!(sd.events().await.is_ok());
    sd.stop("hostset-a.service").await.unwrap();
    assert_eq!(
        sd.calls()
            .iter()
            .filter(|c| matches!(c, Call::Stop(_)))
            .count(),
        3
    );
}

#[tokio::test]
async fn clones_share_state() {
    let sd = FakeSystemd::new();
    let clone = sd.clone();
    clone.start_transient(&spec("a")).await.unwrap();
    assert_eq!(sd.unit_names(), ["hostset-a.service"]);
    assert_eq!(sd.calls().len(), 1);
}

#[tokio::test]
async fn list_filters_by_glob() {
    let sd = FakeSystemd::new();
    for name in ["a", "b"] {
        sd.start_transient(&spec(name)).await.unwrap();
    }
    let mut other = spec("c");
    other.name = "other.service".into();
    sd.start_transient(&other).await.unwrap();
    let names = |rows: Vec<hostset::systemd::UnitState>| -> Vec<String> {
        rows.into_iter().map(|r| r.name).collect()
    };
    assert_eq!(
        names(sd.list(UNIT_PATTERN).await.unwrap()),
        ["hostset-a.service", "hostset-b.service"]
    );
    assert_eq!(
        names(sd.list("hostset-b.service").await.unwrap()),
        ["hostset-b.service"]
    );
    assert_eq!(sd.list("*").await.unwrap().len(), 3);
}

#[tokio::test]
async fn remove_simulates_garbage_collection() {
    let sd = FakeSystemd::new();
    sd.start_transient(&spec("a")).await.unwrap();
    let mut rx = sd.events().await.unwrap();
    assert!(sd.remove("hostset-a.service"));
    assert!(!sd.remove("hostset-a.service"));
    assert_eq!(
        drain(&mut rx),
        [Event::UnitRemoved("hostset-a.service".into())]
    );
}

/// The fake is usable where the agent wants `impl Systemd` (Send + Sync,
/// futures Send), including from a spawned task.
#[tokio::test]
async fn works_across_tasks() {
    fn assert_systemd<S: Systemd + Clone + 'static>(_: &S) {}
    let sd = FakeSystemd::new();
    assert_systemd(&sd);
    let task = tokio::spawn({
        let sd = sd.clone();
        async move { sd.start_transient(&spec("a")).await }
    });
    task.await.unwrap().unwrap();
    assert_eq!(sd.unit_names(), ["hostset-a.service"]);
}
