//! Every lifecycle rule of the agent's planner, on plain data.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hostset::plan::{Action, Desired, FAILED_GRACE, Gate, Input, ObservedUnit, Plan, plan};
use hostset::spec::{DaemonSet, Format, Node, Taint, parse_daemonsets};
use hostset::unit::{self, Markers, UnitOptions, unit_spec};

fn ds(name: &str, extra: &str) -> DaemonSet {
    let text = format!(
        "name = \"{name}\"\ncommand = [\"/bin/sleep\", \"infinity\"]\n\
         selector.matchLabels = {{ app = \"{name}\" }}\ntemplate.labels = {{ app = \"{name}\" }}\n{extra}"
    );
    let loaded = parse_daemonsets("t.toml", &text, Format::Toml);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    loaded.items.into_iter().next().unwrap()
}

fn desired(ds: DaemonSet) -> Desired {
    let unit = unit_spec(&ds, &UnitOptions::default());
    Desired { ds, unit }
}

fn node(labels: &[(&str, &str)], taints: &[(&str, &str, &str)]) -> Node {
    Node {
        name: "n1".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        taints: taints
            .iter()
            .map(|(k, v, e)| Taint {
                key: k.to_string(),
                value: v.to_string(),
                effect: e.to_string(),
            })
            .collect(),
        unschedulable: false,
    }
}

/// A running unit of `d`, at revision `rev` (the desired one when None).
fn running(d: &Desired, rev: Option<&str>) -> ObservedUnit {
    let revision = rev.unwrap_or(&d.unit.revision).to_string();
    ObservedUnit {
        name: d.unit.name.clone(),
        description: unit::description(&d.ds.name, &revision),
        active_state: "active".into(),
        sub_state: "running".into(),
        markers: Some(Markers {
            daemonset: d.ds.name.clone(),
            revision,
            labels: d.ds.template.labels.clone(),
        }),
    }
}

#[derive(Default)]
struct World {
    held: BTreeSet<String>,
    orphaning: BTreeSet<String>,
    no_execute_since: BTreeMap<String, Duration>,
    failed_since: BTreeMap<String, Duration>,
    backoff_until: BTreeMap<String, Duration>,
    gates: BTreeMap<String, Gate>,
    ready_since: BTreeMap<String, Duration>,
    now: Duration,
}

impl World {
    fn plan(&self, node: &Node, desired: &[Desired], units: &[ObservedUnit]) -> Plan {
        plan(&Input {
            node,
            desired,
            held: &self.held,
            orphaning: &self.orphaning,
            units,
            now: self.now,
            no_execute_since: &self.no_execute_since,
            failed_since: &self.failed_since,
            backoff_until: &self.backoff_until,
            gates: &self.gates,
            ready_since: &self.ready_since,
        })
    }
}

fn starts(p: &Plan) -> Vec<&str> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { unit, .. } => Some(unit.name.as_str()),
            _ => None,
        })
        .collect()
}

fn stops(p: &Plan) -> Vec<&str> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { unit, .. } => Some(unit.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn starts_what_should_run_and_nothing_else() {
    let w = World::default();
    let a = desired(ds("a", ""));
    let b = desired(ds("b", "nodeSelector = { disktype = \"ssd\" }\n"));
    let p = w.plan(&node(&[], &[]), &[a, b], &[]);
    assert_eq!(starts(&p), ["hostset-a.service"]);
    assert_eq!(p.statuses.len(), 2);
    assert!(!p.statuses[1].verdict.should_run);
    assert_eq!(p.statuses[1].state, "absent");
}

#[test]
fn a_running_unit_at_the_right_revision_is_left_alone() {
    let w = World::default();
    let a = desired(ds("a", ""));
    let units = [running(&a, None)];
    let p = w.plan(&node(&[], &[]), &[a], &units);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.statuses[0].state, "active/running");
}

#[test]
fn label_change_stops_a_daemon_whose_selector_no_longer_matches() {
    let w = World::default();
    let d = desired(ds("ssd", "nodeSelector = { disktype = \"ssd\" }\n"));
    let units = [running(&d, None)];
    let p = w.plan(
        &node(&[("disktype", "ssd")], &[]),
        std::slice::from_ref(&d),
        &units,
    );
    assert!(p.actions.is_empty());
    let p = w.plan(&node(&[("disktype", "hdd")], &[]), &[d], &units);
    assert_eq!(stops(&p), ["hostset-ssd.service"]);
}

#[test]
fn untolerated_no_schedule_keeps_running_but_starts_nothing() {
    // NodeShouldRunDaemonPod: (false, true).
    let w = World::default();
    let a = desired(ds("a", ""));
    let tainted = node(&[], &[("dedicated", "db", "NoSchedule")]);
    let p = w.plan(&tainted, std::slice::from_ref(&a), &[]);
    assert!(p.actions.is_empty(), "nothing new starts");
    let units = [running(&a, None)];
    let p = w.plan(&tainted, &[a], &units);
    assert!(p.actions.is_empty(), "the running daemon stays");
}

#[test]
fn untolerated_no_execute_evicts() {
    let w = World::default();
    let a = desired(ds("a", ""));
    let units = [running(&a, None)];
    let p = w.plan(
        &node(&[], &[("maintenance", "", "NoExecute")]),
        &[a],
        &units,
    );
    assert_eq!(stops(&p), ["hostset-a.service"]);
}

#[test]
fn no_execute_with_toleration_seconds_evicts_when_the_time_is_up() {
    let a = desired(ds(
        "a",
        "[[tolerations]]\nkey = \"maintenance\"\noperator = \"Exists\"\neffect = \"NoExecute\"\ntolerationSeconds = 30\n",
    ));
    let tainted = node(&[], &[("maintenance", "", "NoExecute")]);
    let units = [running(&a, None)];
    let mut w = World::default();
    w.no_execute_since
        .insert("maintenance:NoExecute".into(), Duration::from_secs(100));
    w.now = Duration::from_secs(110);
    let p = w.plan(&tainted, std::slice::from_ref(&a), &units);
    assert!(p.actions.is_empty());
    assert_eq!(
        p.wake_at,
        Some(Duration::from_secs(130)),
        "the agent wakes for the eviction"
    );
    assert_eq!(p.statuses[0].evict_at, Some(Duration::from_secs(130)));
    w.now = Duration::from_secs(130);
    let p = w.plan(&tainted, std::slice::from_ref(&a), &units);
    assert_eq!(stops(&p), ["hostset-a.service"]);
    // ... and it is not started again while the taint stays.
    let p = w.plan(&tainted, &[a], &[]);
    assert!(starts(&p).is_empty());
}

#[test]
fn a_toleration_without_seconds_tolerates_forever() {
    let a = desired(ds(
        "a",
        "[[tolerations]]\nkey = \"maintenance\"\noperator = \"Exists\"\neffect = \"NoExecute\"\ntolerationSeconds = 30\n\
         [[tolerations]]\nkey = \"maintenance\"\noperator = \"Exists\"\n",
    ));
    let w = World {
        now: Duration::from_secs(10_000),
        ..World::default()
    };
    let units = [running(&a, None)];
    let p = w.plan(
        &node(&[], &[("maintenance", "", "NoExecute")]),
        &[a],
        &units,
    );
    assert!(p.actions.is_empty());
    assert_eq!(p.wake_at, None);
}

#[test]
fn deleted_daemonset_cascades() {
    let w = World::default();
    let a = desired(ds("a", ""));
    let units = [running(&a, None)];
    let p = w.plan(&node(&[], &[]), &[], &units);
    assert_eq!(
        p.actions,
        [Action::Stop {
            unit: "hostset-a.service".into(),
            daemonset: "a".into(),
            reason: "daemonset a was deleted".into()
        }]
    );
}

#[test]
fn deleted_daemonset_with_orphan_on_delete_leaves_an_orphan() {
    let mut w = World::default();
    let a = desired(ds(
        "a",
        "annotations = { \"hostset.io/orphan-on-delete\" = \"true\" }\n",
    ));
    assert!(hostset::plan::orphans_on_delete(&a.ds));
    w.orphaning.insert("a".into());
    let units = [running(&a, None)];
    let p = w.plan(&node(&[], &[]), &[], &units);
    assert_eq!(
        p.actions,
        [Action::Orphan {
            unit: "hostset-a.service".into(),
            daemonset: "a".into(),
            description: unit::orphan_description("a", &a.unit.revision),
        }]
    );
    // Once marked, an orphan nobody selects is left alone, even without the
    // orphaning memory (after an agent restart).
    let mut orphan = running(&a, None);
    orphan.description = unit::orphan_description("a", &a.unit.revision);
    let p = World::default().plan(&node(&[], &[]), &[], &[orphan]);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn an_orphan_is_adopted_by_a_matching_selector() {
    let old = desired(ds("a", ""));
    let mut orphan = running(&old, None);
    orphan.description = unit::orphan_description("a", &old.unit.revision);

    // Same name and template: adopted back, nothing restarted.
    let p = World::default().plan(
        &node(&[], &[]),
        std::slice::from_ref(&old),
        std::slice::from_ref(&orphan),
    );
    assert_eq!(
        p.actions,
        [Action::Adopt {
            unit: "hostset-a.service".into(),
            daemonset: "a".into(),
            description: unit::description("a", &old.unit.revision),
        }]
    );

    // Another daemonset selecting the orphan's labels (app=a): RollingUpdate
    // replaces the orphan with its own unit: stop first, start once it is gone.
    let adopter = desired(ds("b", "").clone_with_selector("a"));
    let p = World::default().plan(
        &node(&[], &[]),
        std::slice::from_ref(&adopter),
        std::slice::from_ref(&orphan),
    );
    assert_eq!(stops(&p), ["hostset-a.service"]);
    assert!(
        starts(&p).is_empty(),
        "one daemon per node: the orphan goes first"
    );
    let p = World::default().plan(&node(&[], &[]), std::slice::from_ref(&adopter), &[]);
    assert_eq!(starts(&p), ["hostset-b.service"]);

    // OnDelete: the orphan stays and stands for the adopter.
    let mut on_delete =
        ds("b", "updateStrategy = { type = \"OnDelete\" }\n").clone_with_selector("a");
    on_delete.update_strategy.rolling_update = None;
    let on_delete = desired(on_delete);
    let p = World::default().plan(&node(&[], &[]), &[on_delete], std::slice::from_ref(&orphan));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.statuses[0].unit.as_deref(), Some("hostset-a.service"));
}

trait WithSelector {
    fn clone_with_selector(self, app: &str) -> DaemonSet;
}

impl WithSelector for DaemonSet {
    /// The same daemonset, selecting and labelled `app=<app>`.
    fn clone_with_selector(mut self, app: &str) -> DaemonSet {
        let labels: BTreeMap<String, String> = [("app".to_string(), app.to_string())].into();
        self.selector.as_mut().unwrap().match_labels = labels.clone();
        self.template.labels = labels;
        self
    }
}

#[test]
fn held_daemonsets_are_not_touched() {
    let mut w = World::default();
    let a = desired(ds("a", ""));
    let units = [running(&a, None)];
    w.held.insert("a".into());
    let p = w.plan(&node(&[], &[]), &[], &units);
    assert!(
        p.actions.is_empty(),
        "an invalid file must not take its daemon down"
    );
}

#[test]
fn a_new_revision_replaces_the_unit_under_rolling_update() {
    let w = World::default();
    let a = desired(ds("a", ""));
    let units = [running(&a, Some("oldrevision"))];
    let p = w.plan(&node(&[], &[]), std::slice::from_ref(&a), &units);
    assert_eq!(stops(&p), ["hostset-a.service"]);
    assert!(
        starts(&p).is_empty(),
        "the new revision starts once the old unit is gone"
    );
    // While it stops, nothing is repeated.
    let mut stopping = units[0].clone();
    stopping.active_state = "deactivating".into();
    let p = w.plan(&node(&[], &[]), std::slice::from_ref(&a), &[stopping]);
    assert!(p.actions.is_empty());
    let p = w.plan(&node(&[], &[]), &[a], &[]);
    assert_eq!(starts(&p), ["hostset-a.service"]);
}

#[test]
fn on_delete_keeps_the_old_revision_until_the_unit_is_gone() {
    let w = World::default();
    let mut d = ds("a", "updateStrategy = { type = \"OnDelete\" }\n");
    d.update_strategy.rolling_update = None;
    let a = desired(d);
    let units = [running(&a, Some("oldrevision"))];
    let p = w.plan(&node(&[], &[]), std::slice::from_ref(&a), &units);
    assert!(p.actions.is_empty());
    assert_eq!(p.statuses[0].current_revision, "oldrevision");
    assert_ne!(
        p.statuses[0].current_revision,
        p.statuses[0].desired_revision
    );
}

#[test]
fn a_failed_unit_is_reset_after_the_grace_only() {
    let a = desired(ds("a", ""));
    let mut failed = running(&a, None);
    failed.active_state = "failed".into();
    failed.sub_state = "failed".into();
    let mut w = World::default();
    w.failed_since
        .insert(failed.name.clone(), Duration::from_secs(5));
    w.now = Duration::from_secs(5);
    let p = w.plan(
        &node(&[], &[]),
        std::slice::from_ref(&a),
        std::slice::from_ref(&failed),
    );
    assert!(
        p.actions.is_empty(),
        "failed flashes by before every auto-restart"
    );
    assert_eq!(p.wake_at, Some(Duration::from_secs(5) + FAILED_GRACE));
    w.now = Duration::from_secs(5) + FAILED_GRACE;
    let p = w.plan(&node(&[], &[]), &[a], &[failed]);
    assert_eq!(
        p.actions,
        [Action::ResetFailed {
            unit: "hostset-a.service".into(),
            daemonset: "a".into()
        }]
    );
}

#[test]
fn backoff_delays_a_start() {
    let a = desired(ds("a", ""));
    let mut w = World::default();
    w.backoff_until.insert("a".into(), Duration::from_secs(3));
    w.now = Duration::from_secs(1);
    let p = w.plan(&node(&[], &[]), std::slice::from_ref(&a), &[]);
    assert!(p.actions.is_empty());
    assert_eq!(p.wake_at, Some(Duration::from_secs(3)));
    w.now = Duration::from_secs(3);
    assert_eq!(
        starts(&w.plan(&node(&[], &[]), &[a], &[])),
        ["hostset-a.service"]
    );
}

#[test]
fn units_without_markers_are_not_ours() {
    let foreign = ObservedUnit {
        name: "hostset-handmade.service".into(),
        description: "made by hand".into(),
        active_state: "active".into(),
        sub_state: "running".into(),
        markers: None,
    };
    let p = World::default().plan(&node(&[], &[]), &[], &[foreign]);
    assert!(p.actions.is_empty());
}

#[test]
fn node_name_pins_a_daemonset() {
    let a = desired(ds("a", "nodeName = \"n2\"\n"));
    let p = World::default().plan(&node(&[], &[]), &[a], &[]);
    assert!(p.actions.is_empty());
    assert!(
        p.statuses[0].verdict.reasons[0].contains("nodeName"),
        "{:?}",
        p.statuses[0].verdict
    );
}

// --- Rolling updates gated by the coordinator ---------------------------------------------

fn as_unit(mut u: ObservedUnit, name: &str) -> ObservedUnit {
    u.name = name.to_string();
    u
}

#[test]
fn an_old_revision_waits_for_its_slot_and_is_replaced_with_it() {
    let a = desired(ds("a", ""));
    let units = [running(&a, Some("old"))];
    let mut w = World::default();
    w.gates.insert(
        "a".into(),
        Gate::Wait(
            "waiting for a slot: at most maxUnavailable 1 node(s) may be unavailable at once"
                .into(),
        ),
    );
    let p = w.plan(&node(&[], &[]), std::slice::from_ref(&a), &units);
    assert!(
        p.actions.is_empty(),
        "the old revision keeps running: {:?}",
        p.actions
    );
    assert_eq!(p.statuses[0].rollout, "waiting");
    assert!(p.statuses[0].rollout_message.contains("maxUnavailable"));
    w.gates.insert("a".into(), Gate::Granted);
    let p = w.plan(&node(&[], &[]), std::slice::from_ref(&a), &units);
    assert_eq!(stops(&p), ["hostset-a.service"]);
    assert_eq!(p.statuses[0].rollout, "replacing");
    // Once the old unit is gone, the new revision starts: no slot needed for a start.
    w.gates.insert("a".into(), Gate::Wait("paused".into()));
    let p = w.plan(&node(&[], &[]), &[a], &[]);
    assert_eq!(starts(&p), ["hostset-a.service"]);
}

#[test]
fn without_a_coordinator_the_node_replaces_on_its_own() {
    let a = desired(ds("a", ""));
    let units = [running(&a, Some("old"))];
    let p = World::default().plan(&node(&[], &[]), &[a], &units);
    assert_eq!(stops(&p), ["hostset-a.service"]);
}

#[test]
fn surge_starts_beside_the_old_unit_and_stops_it_once_the_new_is_available() {
    let a = desired(ds(
        "a",
        "minReadySeconds = 5\nupdateStrategy = { type = \"RollingUpdate\", maxUnavailable = 0, maxSurge = 1 }\n",
    ));
    let old = running(&a, Some("old"));
    let mut w = World::default();
    w.gates.insert("a".into(), Gate::Granted);
    w.now = Duration::from_secs(100);
    let p = w.plan(
        &node(&[], &[]),
        std::slice::from_ref(&a),
        std::slice::from_ref(&old),
    );
    assert_eq!(starts(&p), ["hostset-a_2.service"], "the second name");
    assert!(stops(&p).is_empty(), "the old unit keeps running");
    assert_eq!(p.statuses[0].rollout, "surging");

    // Both run; the new one ready since 98 s: available at 103 s.
    let new = as_unit(running(&a, None), "hostset-a_2.service");
    let units = [old.clone(), new.clone()];
    w.ready_since
        .insert("hostset-a_2.service".into(), Duration::from_secs(98));
    let p = w.plan(&node(&[], &[]), std::slice::from_ref(&a), &units);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.wake_at, Some(Duration::from_secs(103)));
    let s = &p.statuses[0];
    assert_eq!(
        (s.unit.as_deref(), s.current_revision.as_str()),
        (Some("hostset-a.service"), "old"),
        "the oldest unit stands for the daemonset, as Kubernetes counts"
    );
    assert_eq!(s.second.as_ref().unwrap().unit, "hostset-a_2.service");
    w.now = Duration::from_secs(103);
    let p = w.plan(&node(&[], &[]), std::slice::from_ref(&a), &units);
    assert_eq!(stops(&p), ["hostset-a.service"]);

    // The daemon now lives under the second name; the next surge goes back to the first.
    let p = w.plan(
        &node(&[], &[]),
        std::slice::from_ref(&a),
        std::slice::from_ref(&new),
    );
    assert!(p.actions.is_empty());
    assert_eq!(p.statuses[0].unit.as_deref(), Some("hostset-a_2.service"));
    let b = desired(ds(
        "a",
        "minReadySeconds = 5\nupdateStrategy = { type = \"RollingUpdate\", maxUnavailable = 0, maxSurge = 1 }\nenv = { V = \"3\" }\n",
    ));
    let p = w.plan(&node(&[], &[]), &[b], std::slice::from_ref(&new));
    assert_eq!(starts(&p), ["hostset-a.service"]);
}

#[test]
fn a_second_unit_of_the_same_revision_is_stopped() {
    let a = desired(ds("a", ""));
    let units = [
        running(&a, None),
        as_unit(running(&a, None), "hostset-a_2.service"),
    ];
    let p = World::default().plan(&node(&[], &[]), &[a], &units);
    assert_eq!(stops(&p), ["hostset-a_2.service"]);
}

#[test]
fn a_node_that_may_no_longer_run_it_stops_both_units_of_a_surge() {
    let a = desired(ds(
        "a",
        "nodeSelector = { disktype = \"ssd\" }\nupdateStrategy = { type = \"RollingUpdate\", maxUnavailable = 0, maxSurge = 1 }\n",
    ));
    let units = [
        running(&a, Some("old")),
        as_unit(running(&a, None), "hostset-a_2.service"),
    ];
    let p = World::default().plan(&node(&[("disktype", "hdd")], &[]), &[a], &units);
    let mut stopped = stops(&p);
    stopped.sort();
    assert_eq!(stopped, ["hostset-a.service", "hostset-a_2.service"]);
}
