//! Fleet-wide DaemonSet status (`hostset::fleet`) against Kubernetes' definitions.
//!
//! Every case carries a `source`: the Kubernetes code whose definition it checks (paths inside
//! kubernetes/kubernetes; `staging/src/k8s.io/X/...` is published as `k8s.io/X`), or the hostset
//! decision it pins where hostset deliberately differs. Fleets are built by hand: a few nodes,
//! each with its last report, and one daemonset parsed from a small native TOML spec.

use hostset::api::{DaemonSetStatus, EndpointPort};
use hostset::fleet::{
    self, DEFAULT_GRACE_SECONDS, NodeRecord, SpecRecord, daemonset_detail, daemonset_view,
    endpoints, node_ready, node_selector_string, node_view, parse_taint, placement_node,
    selector_string,
};
use hostset::report::{Condition, DaemonSetReport, NodeInfo, NodeReport};
use hostset::spec::{
    self, DaemonSet, Format, LabelSelector, LabelSelectorRequirement, Labels, Taint,
};
use hostset::unit;

// ---------------------------------------------------------------------------------------------
// Source paths.

const UPDATE_STATUS: &str = "pkg/controller/daemon/daemon_controller.go updateDaemonSetStatus";
const SHOULD_RUN: &str = "pkg/controller/daemon/daemon_controller.go NodeShouldRunDaemonPod";
const IS_POD_AVAILABLE: &str = "pkg/api/v1/pod/util.go IsPodAvailable";
const IS_POD_UPDATED: &str = "pkg/controller/daemon/util/daemonset_util.go IsPodUpdated";
const NODE_GRACE: &str = "pkg/controller/nodelifecycle/node_lifecycle_controller.go \
                          tryUpdateNodeHealth (now > probeTimestamp + gracePeriod)";
const FORMAT_SELECTOR: &str = "staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/helpers.go \
                               FormatLabelSelector + pkg/labels/selector.go Requirement.String";
const FORMAT_LABELS: &str = "staging/src/k8s.io/apimachinery/pkg/labels/labels.go FormatLabels";

// ---------------------------------------------------------------------------------------------
// Fleet builders.

/// The coordinator's clock in every case.
const NOW: u64 = 1_000_000;
const GRACE: u64 = DEFAULT_GRACE_SECONDS;
/// The revision of generation 1 in every spec's history (generation 2 is the current spec).
const OLD: &str = "oldrevision";

/// Runs on nodes labelled `role=web`.
const BASE: &str = r#"
name = "agent"
command = ["/usr/bin/agent"]
selector.matchLabels = { app = "agent" }
template.labels = { app = "agent" }
nodeSelector = { role = "web" }
"#;

fn parse(text: &str) -> DaemonSet {
    let loaded = spec::parse_daemonsets("agent.toml", text, Format::Toml);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.items.len(), 1);
    loaded.items.into_iter().next().unwrap()
}

/// [`BASE`] plus `extra` top-level TOML, at generation 2 with [`OLD`] as generation 1.
fn spec_with(extra: &str) -> SpecRecord {
    let ds = parse(&format!("{BASE}{extra}"));
    let revision = unit::revision(&ds.template);
    SpecRecord {
        ds,
        file: "/etc/hostset/daemonsets/agent.toml".into(),
        revision: revision.clone(),
        generation: 2,
        created_at: NOW - 3600,
        history: vec![(1, OLD.into()), (2, revision)],
    }
}

fn spec() -> SpecRecord {
    spec_with("")
}

/// A node: labelled `role=web`, heard from 5s ago, with a `Ready=True` condition.
struct N(NodeRecord);

fn node(name: &str) -> N {
    N(NodeRecord {
        report: NodeReport {
            agent_version: "0.1.0".into(),
            agent_instance: "i-1".into(),
            sequence: 7,
            generated_at: NOW - 5,
            node: NodeInfo {
                name: name.into(),
                labels: labels(&[("role", "web")]),
                taints: Vec::new(),
                unschedulable: false,
                addresses: vec![format!("10.0.0.{}", name.len())],
                conditions: vec![condition("Ready", "True")],
            },
            daemonsets: Vec::new(),
            diagnostics: Vec::new(),
            errors: Vec::new(),
            git: None,
        },
        first_seen: NOW - 1000,
        last_seen: NOW - 5,
    })
}

impl N {
    fn labels(mut self, pairs: &[(&str, &str)]) -> Self {
        self.0.report.node.labels = labels(pairs);
        self
    }
    fn taint(mut self, t: &str) -> Self {
        self.0.report.node.taints.push(t.into());
        self
    }
    /// Last heard from `secs` seconds before [`NOW`].
    fn silent(mut self, secs: u64) -> Self {
        self.0.last_seen = NOW - secs;
        self
    }
    fn ready_condition(self, status: &str) -> Self {
        self.conditions(vec![condition("Ready", status)])
    }
    fn conditions(mut self, conditions: Vec<Condition>) -> Self {
        self.0.report.node.conditions = conditions;
        self
    }
    fn reports(mut self, d: DaemonSetReport) -> Self {
        self.0.report.daemonsets.push(d);
        self
    }
    /// Runs `spec`'s current revision, ready and started long ago.
    fn running(self, spec: &SpecRecord) -> Self {
        self.reports(running(&spec.revision))
    }
    fn build(self) -> NodeRecord {
        self.0
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn condition(kind: &str, status: &str) -> Condition {
    Condition {
        kind: kind.into(),
        status: status.into(),
        reason: String::new(),
        message: String::new(),
    }
}

/// The daemonset `agent` running `rev` (desired and current), ready since an hour ago.
fn running(rev: &str) -> DaemonSetReport {
    DaemonSetReport {
        name: "agent".into(),
        file: "/etc/hostset/daemonsets/agent.toml".into(),
        held: false,
        should_run: true,
        should_continue_running: true,
        reasons: Vec::new(),
        unit: unit::unit_name("agent"),
        state: "active/running".into(),
        current_revision: rev.into(),
        desired_revision: rev.into(),
        evict_in_seconds: None,
        last_error: String::new(),
        ready: true,
        restarts: 0,
        main_pid: 4242,
        started_at: Some(NOW - 3600),
        memory_bytes: None,
        cpu_nanoseconds: None,
        ready_since: None,
        readiness: String::new(),
        ..Default::default()
    }
}

/// The daemonset known to the agent (at `rev`) but with no unit on the node.
fn absent(rev: &str) -> DaemonSetReport {
    DaemonSetReport {
        unit: String::new(),
        state: "absent".into(),
        current_revision: String::new(),
        ready: false,
        main_pid: 0,
        started_at: None,
        ..running(rev)
    }
}

/// The counters, in `DaemonSetStatus` field order.
#[allow(clippy::too_many_arguments)]
fn st(
    desired: u64,
    current: u64,
    misscheduled: u64,
    ready: u64,
    updated: u64,
    available: u64,
    unavailable: u64,
    observed_generation: u64,
) -> DaemonSetStatus {
    DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: current,
        number_misscheduled: misscheduled,
        number_ready: ready,
        updated_number_scheduled: updated,
        number_available: available,
        number_unavailable: unavailable,
        observed_generation,
    }
}

// ---------------------------------------------------------------------------------------------
// DaemonSetStatus.

struct Case {
    name: &'static str,
    /// The Kubernetes definition checked (or the hostset decision pinned).
    source: &'static str,
    spec: SpecRecord,
    nodes: Vec<NodeRecord>,
    want: DaemonSetStatus,
}

fn cases() -> Vec<Case> {
    let s = spec();
    let min_ready = spec_with("minReadySeconds = 10\n");
    let at = |secs_ago: u64| DaemonSetReport {
        started_at: Some(NOW - secs_ago),
        ..running(&min_ready.revision)
    };
    vec![
        Case {
            name: "every web node runs the current revision",
            source: UPDATE_STATUS,
            nodes: vec![
                node("a").running(&s).build(),
                node("b").running(&s).build(),
                node("c").running(&s).build(),
            ],
            want: st(3, 3, 0, 3, 3, 3, 0, 2),
            spec: s.clone(),
        },
        Case {
            name: "desiredNumberScheduled counts shouldRun nodes only (nodeSelector)",
            source: "daemon_controller.go updateDaemonSetStatus: desiredNumberScheduled; \
                     NodeShouldRunDaemonPod step 4 (!fitsNodeAffinity)",
            nodes: vec![
                node("a").running(&s).build(),
                node("b").running(&s).build(),
                node("db")
                    .labels(&[("role", "db")])
                    .reports(absent(&s.revision))
                    .build(),
            ],
            want: st(2, 2, 0, 2, 2, 2, 0, 2),
            spec: s.clone(),
        },
        Case {
            name: "a node without the daemonset in its report: desired, not current, \
                   observedGeneration 0",
            source: "daemon_controller.go updateDaemonSetStatus: a shouldRun node with no \
                     pod is desired only; observedGeneration per fleet::observed_generation",
            nodes: vec![node("a").running(&s).build(), node("b").build()],
            want: st(2, 1, 0, 1, 1, 1, 1, 0),
            spec: s.clone(),
        },
        Case {
            name: "the daemon known but absent on a node",
            source: "daemon_controller.go updateDaemonSetStatus: currentNumberScheduled \
                     needs a pod mapped to the node",
            nodes: vec![
                node("a").running(&s).build(),
                node("b").reports(absent(&s.revision)).build(),
            ],
            want: st(2, 1, 0, 1, 1, 1, 1, 2),
            spec: s.clone(),
        },
        Case {
            name: "misscheduled: an untolerated NoSchedule taint keeps the daemon \
                   (shouldContinueRunning) but it counts as misscheduled",
            source: "daemon_controller.go updateDaemonSetStatus: numberMisscheduled uses \
                     shouldRun, not shouldContinueRunning",
            nodes: vec![
                node("a").running(&s).build(),
                node("b").running(&s).build(),
                node("tainted")
                    .taint("dedicated=db:NoSchedule")
                    .running(&s)
                    .build(),
            ],
            want: st(2, 2, 1, 2, 2, 2, 0, 2),
            spec: s.clone(),
        },
        Case {
            name: "misscheduled: the node lost the selected label",
            source: "daemon_controller.go updateDaemonSetStatus: numberMisscheduled \
                     (!shouldRun and a pod mapped)",
            nodes: vec![
                node("a").running(&s).build(),
                node("db").labels(&[("role", "db")]).running(&s).build(),
            ],
            want: st(1, 1, 1, 1, 1, 1, 0, 2),
            spec: s.clone(),
        },
        Case {
            name: "a tolerated NoSchedule taint: desired and current, not misscheduled",
            source: SHOULD_RUN,
            nodes: vec![
                node("a")
                    .taint("node.kubernetes.io/unschedulable:NoSchedule")
                    .running(&s)
                    .build(),
            ],
            want: st(1, 1, 0, 1, 1, 1, 0, 2),
            spec: s.clone(),
        },
        Case {
            name: "a silent node stays desired: present, but not ready, not available",
            source: "hostset: no unreachable taints are synthesised (fleet module docs); \
                     daemon_controller.go updateDaemonSetStatus: numberUnavailable = \
                     desired - available",
            nodes: vec![
                node("a").running(&s).build(),
                node("b").running(&s).build(),
                node("silent").silent(GRACE + 1).running(&s).build(),
            ],
            want: st(3, 3, 0, 2, 3, 2, 1, 2),
            spec: s.clone(),
        },
        Case {
            name: "heard from exactly `grace` seconds ago: still Ready",
            source: NODE_GRACE,
            nodes: vec![node("a").silent(GRACE).running(&s).build()],
            want: st(1, 1, 0, 1, 1, 1, 0, 2),
            spec: s.clone(),
        },
        Case {
            name: "a node whose Ready condition is False: its daemon is not ready",
            source: "hostset node_ready: heard from within grace and Ready is not False",
            nodes: vec![
                node("a").running(&s).build(),
                node("b").ready_condition("False").running(&s).build(),
                node("c").ready_condition("Unknown").running(&s).build(),
            ],
            want: st(3, 3, 0, 2, 3, 2, 1, 2),
            spec: s.clone(),
        },
        Case {
            name: "a unit present but not ready (activating/auto-restart)",
            source: "daemon_controller.go updateDaemonSetStatus: numberReady (IsPodReady)",
            nodes: vec![
                node("a").running(&s).build(),
                node("b")
                    .reports(DaemonSetReport {
                        state: "activating/auto-restart".into(),
                        ready: false,
                        ..running(&s.revision)
                    })
                    .build(),
            ],
            want: st(2, 2, 0, 1, 2, 1, 1, 2),
            spec: s.clone(),
        },
        Case {
            name: "a lagging agent: older desired revision, older unit; \
                   observedGeneration is the lower generation",
            source: IS_POD_UPDATED,
            nodes: vec![
                node("a").running(&s).build(),
                node("b").running(&s).build(),
                node("lagging").reports(running(OLD)).build(),
            ],
            want: st(3, 3, 0, 3, 2, 3, 0, 1),
            spec: s.clone(),
        },
        Case {
            name: "an agent that has the current spec but still runs the old unit \
                   (update pending)",
            source: IS_POD_UPDATED,
            nodes: vec![
                node("a").running(&s).build(),
                node("b")
                    .reports(DaemonSetReport {
                        current_revision: OLD.into(),
                        ..running(&s.revision)
                    })
                    .build(),
            ],
            want: st(2, 2, 0, 2, 1, 2, 0, 2),
            spec: s.clone(),
        },
        Case {
            name: "a silent lagging node does not hold observedGeneration back",
            source: "fleet::observed_generation: the minimum over Ready nodes",
            nodes: vec![
                node("a").running(&s).build(),
                node("lagging").silent(300).reports(running(OLD)).build(),
            ],
            want: st(2, 2, 0, 1, 1, 1, 1, 2),
            spec: s.clone(),
        },
        Case {
            name: "no Ready node: observedGeneration is the spec's generation",
            source: "fleet::observed_generation: spec.generation without Ready nodes",
            nodes: vec![node("a").silent(300).reports(running(OLD)).build()],
            want: st(1, 1, 0, 0, 0, 0, 1, 2),
            spec: s.clone(),
        },
        Case {
            name: "a revision the coordinator never knew observes generation 0",
            source: "fleet::observed_generation: unknown revision -> 0",
            nodes: vec![
                node("a").running(&s).build(),
                node("b").reports(running("neverseen")).build(),
            ],
            want: st(2, 2, 0, 2, 1, 2, 0, 0),
            spec: s.clone(),
        },
        Case {
            name: "an adopted orphan's unit counts as present",
            source: "daemon_controller.go updateDaemonSetStatus: currentNumberScheduled \
                     counts any claimed pod (claimPods adopts orphans)",
            nodes: vec![
                node("a").running(&s).build(),
                node("b")
                    .reports(DaemonSetReport {
                        unit: "hostset-old-agent.service".into(),
                        current_revision: OLD.into(),
                        ..running(&s.revision)
                    })
                    .build(),
            ],
            want: st(2, 2, 0, 2, 1, 2, 0, 2),
            spec: s.clone(),
        },
        Case {
            name: "an adopted orphan on a node that should not run it is misscheduled",
            source: "daemon_controller.go updateDaemonSetStatus: numberMisscheduled",
            nodes: vec![
                node("db")
                    .labels(&[("role", "db")])
                    .reports(DaemonSetReport {
                        unit: "hostset-old-agent.service".into(),
                        ..running(&s.revision)
                    })
                    .build(),
            ],
            want: st(0, 0, 1, 0, 0, 0, 0, 2),
            spec: s.clone(),
        },
        Case {
            name: "minReadySeconds: ready exactly minReadySeconds ago is available \
                   (<= now), one second less is not, no start time is not",
            source: IS_POD_AVAILABLE,
            nodes: vec![
                node("a").reports(at(10)).build(),
                node("b").reports(at(9)).build(),
                node("c")
                    .reports(DaemonSetReport {
                        started_at: None,
                        ..running(&min_ready.revision)
                    })
                    .build(),
                node("d").reports(at(11)).build(),
            ],
            want: st(4, 4, 0, 4, 4, 2, 2, 2),
            spec: min_ready.clone(),
        },
        Case {
            name: "minReadySeconds counts from readySince (the readiness probe passing), not \
                   from the unit's start; startedAt only for agents without readySince",
            source: IS_POD_AVAILABLE,
            nodes: vec![
                // Started an hour ago, ready for 3 s: not available.
                node("a")
                    .reports(DaemonSetReport {
                        ready_since: Some(NOW - 3),
                        ..running(&min_ready.revision)
                    })
                    .build(),
                // Ready for exactly minReadySeconds.
                node("b")
                    .reports(DaemonSetReport {
                        started_at: Some(NOW - 3),
                        ready_since: Some(NOW - 10),
                        ..running(&min_ready.revision)
                    })
                    .build(),
                // An older agent: no readySince, started an hour ago.
                node("c").reports(running(&min_ready.revision)).build(),
            ],
            want: st(3, 3, 0, 3, 3, 2, 1, 2),
            spec: min_ready.clone(),
        },
        Case {
            name: "minReadySeconds 0: ready is available, start time or not",
            source: IS_POD_AVAILABLE,
            nodes: vec![
                node("a")
                    .reports(DaemonSetReport {
                        started_at: None,
                        ..running(&s.revision)
                    })
                    .build(),
                node("b")
                    .reports(DaemonSetReport {
                        started_at: Some(NOW),
                        ..running(&s.revision)
                    })
                    .build(),
            ],
            want: st(2, 2, 0, 2, 2, 2, 0, 2),
            spec: s.clone(),
        },
        Case {
            name: "the agent's own shouldRun is ignored: the coordinator evaluates",
            source: "daemon_controller.go updateDaemonSetStatus calls \
                     dsc.nodeShouldRunDaemonPod itself",
            nodes: vec![
                node("a")
                    .reports(DaemonSetReport {
                        should_run: false,
                        should_continue_running: false,
                        ..running(&s.revision)
                    })
                    .build(),
                node("db")
                    .labels(&[("role", "db")])
                    .reports(absent(&s.revision))
                    .build(),
            ],
            want: st(1, 1, 0, 1, 1, 1, 0, 2),
            spec: s.clone(),
        },
        Case {
            name: "an empty fleet",
            source: UPDATE_STATUS,
            nodes: Vec::new(),
            want: st(0, 0, 0, 0, 0, 0, 0, 2),
            spec: s.clone(),
        },
    ]
}

#[test]
fn daemonset_status_counters() {
    for c in cases() {
        let view = daemonset_view(&c.spec, &c.nodes, NOW, GRACE);
        assert_eq!(
            view.status, c.want,
            "case {:?} ({}): got {:#?}",
            c.name, c.source, view.status
        );
        let detail = daemonset_detail(&c.spec, &c.nodes, NOW, GRACE);
        assert_eq!(detail.daemonset, view, "case {:?}: detail vs view", c.name);
        assert_eq!(detail.nodes.len(), c.nodes.len(), "case {:?}", c.name);
        // The per-node flags add up to the counters.
        let count = |f: fn(&hostset::api::NodePlacement) -> bool| {
            detail.nodes.iter().filter(|p| f(p)).count() as u64
        };
        assert_eq!(count(|p| p.should_run), c.want.desired_number_scheduled);
        assert_eq!(count(|p| p.misscheduled), c.want.number_misscheduled);
        assert_eq!(count(|p| p.should_run && p.ready), c.want.number_ready);
        assert_eq!(
            count(|p| p.should_run && p.available),
            c.want.number_available
        );
        assert_eq!(
            count(|p| p.should_run && p.updated),
            c.want.updated_number_scheduled
        );
    }
}

// ---------------------------------------------------------------------------------------------
// NodePlacement.

#[test]
fn placements_are_sorted_and_filled() {
    let s = spec();
    let nodes = vec![
        node("c").running(&s).build(),
        node("a")
            .taint("dedicated=db:NoSchedule")
            .reports(DaemonSetReport {
                restarts: 3,
                ..running(&s.revision)
            })
            .build(),
        node("b").build(),
    ];
    let detail = daemonset_detail(&s, &nodes, NOW, GRACE);
    let names: Vec<&str> = detail.nodes.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);

    // shouldContinueRunning behind an untolerated NoSchedule taint (NodeShouldRunDaemonPod
    // step 5), counted as misscheduled.
    let a = &detail.nodes[0];
    assert_eq!(a.node_status, "Ready");
    assert!(!a.should_run && a.should_continue_running, "{a:?}");
    assert!(a.misscheduled);
    assert_eq!(a.reasons.len(), 1, "{:?}", a.reasons);
    assert!(a.reasons[0].contains("dedicated=db:NoSchedule"), "{a:?}");
    assert_eq!(a.unit, "hostset-agent.service");
    assert_eq!(a.state, "active/running");
    assert_eq!(a.revision, s.revision);
    assert_eq!(a.restarts, 3);
    assert_eq!(a.problem, format!("runs but should not: {}", a.reasons[0]));

    // Not reported at all.
    let b = &detail.nodes[1];
    assert!(b.should_run && b.should_continue_running && b.reasons.is_empty());
    assert_eq!((b.unit.as_str(), b.state.as_str()), ("", "unknown"));
    assert!(!b.ready && !b.available && !b.updated && !b.misscheduled);
    assert_eq!(
        b.problem,
        "the agent does not report this daemonset: its spec has not reached the node"
    );

    // All well.
    let c = &detail.nodes[2];
    assert!(c.should_run && c.ready && c.available && c.updated && !c.misscheduled);
    assert_eq!(c.problem, "");
}

#[test]
fn placement_problems() {
    let s = spec();
    let min_ready = spec_with("minReadySeconds = 10\n");
    let on_delete = spec_with("updateStrategy = { type = \"OnDelete\" }\n");
    let cases: Vec<(&str, &SpecRecord, NodeRecord, String)> = vec![
        (
            "silent node",
            &s,
            node("n").silent(73).running(&s).build(),
            "node is NotReady: its agent has not reported for 73s".into(),
        ),
        (
            "Ready condition False",
            &s,
            node("n")
                .conditions(vec![Condition {
                    reason: "KubeletNotReady".into(),
                    message: "PLEG is not healthy".into(),
                    ..condition("Ready", "False")
                }])
                .running(&s)
                .build(),
            "node is NotReady: its Ready condition is False \
             (KubeletNotReady: PLEG is not healthy)"
                .into(),
        ),
        (
            "last error",
            &s,
            node("n")
                .reports(DaemonSetReport {
                    last_error: "StartTransientUnit: access denied".into(),
                    ..absent(&s.revision)
                })
                .build(),
            "the agent reports: StartTransientUnit: access denied".into(),
        ),
        (
            "held",
            &s,
            node("n")
                .reports(DaemonSetReport {
                    held: true,
                    ..running(OLD)
                })
                .build(),
            "the spec file on the node is invalid (held)".into(),
        ),
        (
            "lagging agent",
            &s,
            node("n").reports(running(OLD)).build(),
            format!(
                "the agent has not seen the current spec (it wants revision {OLD}, \
                 the coordinator has {})",
                s.revision
            ),
        ),
        (
            "no unit yet",
            &s,
            node("n").reports(absent(&s.revision)).build(),
            "no unit runs it (state absent)".into(),
        ),
        (
            "not ready",
            &s,
            node("n")
                .reports(DaemonSetReport {
                    state: "activating/auto-restart".into(),
                    ready: false,
                    ..running(&s.revision)
                })
                .build(),
            "not ready: unit is activating/auto-restart".into(),
        ),
        (
            "not ready, with the agent's reason",
            &s,
            node("n")
                .reports(DaemonSetReport {
                    ready: false,
                    readiness: "readiness probe failed 3 times: HTTP GET \
                                http://127.0.0.1:9100/metrics: 503"
                        .into(),
                    ..running(&s.revision)
                })
                .build(),
            "not ready: readiness probe failed 3 times: HTTP GET http://127.0.0.1:9100/metrics: 503"
                .into(),
        ),
        (
            "minReadySeconds counted from readySince",
            &min_ready,
            node("n")
                .reports(DaemonSetReport {
                    ready_since: Some(NOW - 4),
                    ..running(&min_ready.revision)
                })
                .build(),
            "ready for 4s of minReadySeconds 10".into(),
        ),
        (
            "minReadySeconds not reached",
            &min_ready,
            node("n")
                .reports(DaemonSetReport {
                    started_at: Some(NOW - 3),
                    ..running(&min_ready.revision)
                })
                .build(),
            "ready for 3s of minReadySeconds 10".into(),
        ),
        (
            "no start time",
            &min_ready,
            node("n")
                .reports(DaemonSetReport {
                    started_at: None,
                    ..running(&min_ready.revision)
                })
                .build(),
            "ready, but the agent reports no ready time to count minReadySeconds 10 from".into(),
        ),
        (
            "update pending",
            &s,
            node("n")
                .reports(DaemonSetReport {
                    current_revision: OLD.into(),
                    ..running(&s.revision)
                })
                .build(),
            format!(
                "runs revision {OLD}, not the current {} (update pending)",
                s.revision
            ),
        ),
        (
            "OnDelete",
            &on_delete,
            node("n")
                .reports(DaemonSetReport {
                    current_revision: OLD.into(),
                    ..running(&on_delete.revision)
                })
                .build(),
            format!(
                "runs revision {OLD}, not the current {} \
                 (OnDelete: replaced once its unit is stopped)",
                on_delete.revision
            ),
        ),
        (
            "should not run and does not",
            &s,
            node("n")
                .labels(&[("role", "db")])
                .reports(absent(&s.revision))
                .build(),
            String::new(),
        ),
    ];
    for (name, spec, rec, want) in cases {
        let detail = daemonset_detail(spec, std::slice::from_ref(&rec), NOW, GRACE);
        assert_eq!(detail.nodes[0].problem, want, "case {name:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints.

#[test]
fn endpoints_list_nodes_with_a_unit() {
    let s = spec_with(
        "ports = [{ name = \"metrics\", port = 9100 }, \
         { name = \"dns\", port = 53, protocol = \"UDP\" }]\n",
    );
    let nodes = vec![
        node("web-2").running(&s).build(),
        node("web-1")
            .reports(DaemonSetReport {
                state: "activating/auto-restart".into(),
                ready: false,
                ..running(&s.revision)
            })
            .build(),
        node("web-3").reports(absent(&s.revision)).build(),
        node("web-4").silent(120).running(&s).build(),
        node("db")
            .labels(&[("role", "db")])
            .taint("x:NoSchedule")
            .running(&s)
            .build(),
    ];
    let eps = endpoints(&s, &nodes, NOW, GRACE);
    let got: Vec<(&str, bool)> = eps.iter().map(|e| (e.node.as_str(), e.ready)).collect();
    assert_eq!(
        got,
        [
            ("db", true),
            ("web-1", false),
            ("web-2", true),
            ("web-4", false)
        ]
    );
    assert_eq!(eps[2].addresses, ["10.0.0.5"]);
    assert_eq!(
        eps[0].ports,
        [
            EndpointPort {
                name: "metrics".into(),
                port: 9100,
                protocol: "TCP".into()
            },
            EndpointPort {
                name: "dns".into(),
                port: 53,
                protocol: "UDP".into()
            },
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Nodes.

#[test]
fn node_readiness_and_view() {
    let s = spec();
    let rec = node("web-1")
        .taint("dedicated=db:NoSchedule")
        .running(&s)
        .reports(DaemonSetReport {
            name: "other".into(),
            state: "failed/failed".into(),
            ready: false,
            ..running("x")
        })
        .reports(DaemonSetReport {
            name: "legacy".into(),
            ready: false,
            state: "active/running".into(),
            ..running("x")
        })
        .reports(DaemonSetReport {
            name: "gone".into(),
            ..absent("x")
        })
        .build();

    // NODE_GRACE: Ready up to and including `grace` seconds of silence.
    assert!(
        node_ready(&rec, rec.last_seen + GRACE, GRACE),
        "{NODE_GRACE}"
    );
    assert!(
        !node_ready(&rec, rec.last_seen + GRACE + 1, GRACE),
        "{NODE_GRACE}"
    );
    assert!(node_ready(&rec, rec.last_seen - 10, GRACE), "clock skew");
    let not_ready = node("n").ready_condition("False").build();
    assert!(!node_ready(&not_ready, NOW, GRACE));
    let no_conditions = node("n").conditions(Vec::new()).build();
    assert!(node_ready(&no_conditions, NOW, GRACE));

    let v = node_view(&rec, NOW, GRACE);
    assert_eq!(v.name, "web-1");
    assert_eq!(v.status, "Ready");
    assert_eq!(v.labels, labels(&[("role", "web")]));
    assert_eq!(v.taints, ["dedicated=db:NoSchedule"]);
    assert!(!v.unschedulable);
    assert_eq!(v.addresses, ["10.0.0.5"]);
    assert_eq!(v.agent_version, "0.1.0");
    assert_eq!(v.daemons, 2, "agent (ready) and legacy (active/running)");
    assert_eq!((v.first_seen, v.last_seen), (NOW - 1000, NOW - 5));
    assert_eq!(node_view(&rec, NOW + GRACE, GRACE).status, "NotReady");
}

#[test]
fn placement_node_parses_taints_back() {
    let rec = node("web-1")
        .taint("dedicated=db:NoSchedule")
        .taint("node.kubernetes.io/unschedulable:NoSchedule")
        .taint("not a taint")
        .build();
    let n = placement_node(&rec);
    assert_eq!(n.name, "web-1");
    assert_eq!(n.labels, labels(&[("role", "web")]));
    assert_eq!(
        n.taints,
        [
            Taint {
                key: "dedicated".into(),
                value: "db".into(),
                effect: "NoSchedule".into()
            },
            Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                value: String::new(),
                effect: "NoSchedule".into()
            },
        ]
    );
}

#[test]
fn parse_taint_is_the_inverse_of_display() {
    for s in [
        "a=b:NoSchedule",
        "example.com/gpu=true:NoExecute",
        "k:PreferNoSchedule",
        "k=:NoSchedule",
    ] {
        let t = parse_taint(s).unwrap_or_else(|| panic!("{s:?} should parse"));
        // `k=:E` has an empty value and prints as `k:E`.
        let want = s.replace("=:", ":");
        assert_eq!(t.to_string(), want, "{s:?}");
    }
    for bad in [
        "",
        "k",
        "k=v",
        ":NoSchedule",
        "k=v:Sometimes",
        "k=v:",
        "bad key=v:NoSchedule",
        "k=bad value:NoSchedule",
        "k=v=w:NoSchedule",
    ] {
        assert_eq!(parse_taint(bad), None, "{bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Selector strings.

fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

#[test]
fn selector_strings() {
    let sel = |ml: &[(&str, &str)], me: Vec<LabelSelectorRequirement>| LabelSelector {
        match_labels: labels(ml),
        match_expressions: me,
    };
    let cases: Vec<(&str, Option<LabelSelector>, &str)> = vec![
        ("nil selector: labels.Nothing()", None, "<none>"),
        (
            "empty selector: labels.Everything()",
            Some(sel(&[], vec![])),
            "<none>",
        ),
        ("matchLabels", Some(sel(&[("app", "x")], vec![])), "app=x"),
        (
            "every operator, sorted by key, values sorted",
            Some(sel(
                &[("app", "x")],
                vec![
                    req("tier", "In", &["b", "a"]),
                    req("gone", "DoesNotExist", &[]),
                    req("env", "NotIn", &["dev"]),
                    req("zone", "Exists", &[]),
                ],
            )),
            "app=x,env notin (dev),!gone,tier in (a,b),zone",
        ),
        (
            "equal keys keep their order (matchLabels first)",
            Some(sel(&[("app", "x")], vec![req("app", "NotIn", &["y", "w"])])),
            "app=x,app notin (w,y)",
        ),
        (
            "an operator LabelSelectorAsSelector rejects",
            Some(sel(&[], vec![req("cores", "Gt", &["4"])])),
            "<error>",
        ),
        (
            "In without values (NewRequirement rejects)",
            Some(sel(&[], vec![req("tier", "In", &[])])),
            "<error>",
        ),
    ];
    for (name, s, want) in cases {
        assert_eq!(
            selector_string(s.as_ref()),
            want,
            "case {name:?} ({FORMAT_SELECTOR})"
        );
    }
}

#[test]
fn node_selector_strings() {
    assert_eq!(
        node_selector_string(&Labels::new()),
        "<none>",
        "{FORMAT_LABELS}"
    );
    assert_eq!(
        node_selector_string(&labels(&[("role", "web"), ("disktype", "ssd")])),
        "disktype=ssd,role=web",
        "{FORMAT_LABELS}"
    );
}

#[test]
fn daemonset_view_fields_from_spec() {
    let s = spec_with(
        "updateStrategy = { type = \"OnDelete\" }\n\
         selector.matchExpressions = [{ key = \"tier\", operator = \"NotIn\", values = [\"b\", \"a\"] }]\n",
    );
    let v = daemonset_view(&s, &[], NOW, GRACE);
    assert_eq!(v.name, "agent");
    assert_eq!(v.file, "/etc/hostset/daemonsets/agent.toml");
    assert_eq!(v.generation, 2);
    assert_eq!(v.revision, s.revision);
    assert_eq!(v.selector, "app=agent,tier notin (a,b)");
    assert_eq!(v.node_selector, "role=web");
    assert_eq!(v.update_strategy, "OnDelete");
    assert_eq!(v.created_at, NOW - 3600);
    assert_eq!(fleet::DEFAULT_GRACE_SECONDS, 40);
}
