//! Fleet-wide rolling updates: the coordinator's decisions, as pure functions.
//!
//! # How a new revision crosses the fleet
//!
//! Every agent reads the daemonset's spec itself (its spec directory or git). When an agent
//! finds a spec whose revision differs from the unit it runs, and the daemonset's strategy is
//! `RollingUpdate`, it does not replace the unit on its own: it says so in its report
//! ([`crate::report::DaemonSetReport::rollout`] `= "waiting"`) and waits for a **slot**. The
//! coordinator answers every report, heartbeat and directives poll with the node's
//! [`Directives`]: the slots granted to it, the daemonsets pinned to another revision
//! (`rollout undo`, automatic rollback), and why the others wait.
//!
//! [`decide`] is the coordinator's arithmetic, per daemonset, over every node's latest report:
//!
//! - **Budgets** (`updatedDesiredNodeCounts`): `maxUnavailable` and `maxSurge` resolved
//!   against `desiredNumberScheduled`, percentages rounded up; both zero becomes
//!   `maxUnavailable = 1`.
//! - **maxSurge = 0** (replace in place): a node counts unavailable when its daemon is not
//!   available (absent, not ready, ready for less than `minReadySeconds`, its node silent
//!   within the skip timeout) or when it holds a slot it has not finished with. A waiting node
//!   whose old daemon is not available gets a slot at once (Kubernetes' "allowed
//!   replacement": replacing it makes nothing worse); the others, in node-name order, while the
//!   unavailable count stays below `maxUnavailable`.
//! - **maxSurge > 0** (new beside old): the agent starts the new revision under the
//!   daemonset's second unit name and stops the old unit once the new one is available. Nodes
//!   with a slot and no available new daemon count against `maxSurge`; a node whose old daemon
//!   is not available gets a slot at once.
//! - **Silent nodes** count unavailable (as Kubernetes counts a dead node's pod) until they
//!   have been silent for the skip timeout; then they are **skipped**: left out of the budget,
//!   listed, and updated whenever they come back (their report then waits for a slot like any
//!   other).
//! - **Progress deadline** (`hostset.io/progress-deadline-seconds`, default 600): a node that
//!   has held a slot that long without an available new daemon **halts** the rollout: no more
//!   slots, and the status names the hosts and why. With `hostset.io/auto-rollback: "true"` the
//!   coordinator pins the daemonset back to the last revision that completed a rollout.
//! - **Paused** (`hostset rollout pause`): no new slots; slots granted stay granted.
//! - A node whose own spec has another revision than the coordinator's is left alone and listed
//!   ("spec differs"): the coordinator never grants a revision it does not know.
//!
//! What Kubernetes does not have and hostset adds: pause for daemonsets, the progress deadline
//! and automatic rollback (Deployments have the first two), the skip timeout for silent
//! nodes (a Kubernetes rollout stalls on a dead node until the node object is deleted).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{DaemonSet, IntOrPercent, UpdateStrategy};

/// Annotation: seconds a node may hold a slot without an available new daemon before the
/// rollout halts (Deployment's `progressDeadlineSeconds`). Default [`DEFAULT_PROGRESS_DEADLINE`].
pub const ANNOTATION_PROGRESS_DEADLINE: &str = "hostset.io/progress-deadline-seconds";
/// Annotation: `"true"` returns a halted rollout to the last revision that completed.
pub const ANNOTATION_AUTO_ROLLBACK: &str = "hostset.io/auto-rollback";
/// Annotation: `"true"` lets agents replace this daemonset's units without a slot while the
/// coordinator cannot be reached (otherwise they keep the old revision running and retry).
pub const ANNOTATION_WITHOUT_COORDINATOR: &str = "hostset.io/rollout-without-coordinator";

/// Annotation: seconds a node may be silent before a rollout skips it. Default
/// [`DEFAULT_SKIP_SILENT`].
pub const ANNOTATION_SKIP_SILENT: &str = "hostset.io/skip-silent-node-seconds";

/// Default skip timeout for silent nodes, seconds.
pub const DEFAULT_SKIP_SILENT: u64 = 300;

/// Default progress deadline, seconds (Deployment's default).
pub const DEFAULT_PROGRESS_DEADLINE: u64 = 600;

/// The rollout settings hostset reads from a daemonset's annotations. Validation
/// ([`check_annotations`]) rejects values these would misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub progress_deadline_seconds: u64,
    pub skip_silent_seconds: u64,
    pub auto_rollback: bool,
    pub without_coordinator: bool,
}

/// The daemonset's [`Settings`].
pub fn settings(ds: &DaemonSet) -> Settings {
    let a = &ds.annotations;
    Settings {
        progress_deadline_seconds: a
            .get(ANNOTATION_PROGRESS_DEADLINE)
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE),
        skip_silent_seconds: a
            .get(ANNOTATION_SKIP_SILENT)
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .unwrap_or(DEFAULT_SKIP_SILENT),
        auto_rollback: a.get(ANNOTATION_AUTO_ROLLBACK).is_some_and(|v| v == "true"),
        without_coordinator: a
            .get(ANNOTATION_WITHOUT_COORDINATOR)
            .is_some_and(|v| v == "true"),
    }
}

/// Problems with the rollout annotations: `(annotation key, message)`.
pub fn check_annotations(annotations: &crate::spec::Labels) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in [ANNOTATION_PROGRESS_DEADLINE, ANNOTATION_SKIP_SILENT] {
        if let Some(v) = annotations.get(key)
            && !v.parse::<u64>().is_ok_and(|n| n > 0)
        {
            out.push((
                key.to_string(),
                format!("invalid value \"{v}\": must be a whole number of seconds greater than 0"),
            ));
        }
    }
    for key in [ANNOTATION_AUTO_ROLLBACK, ANNOTATION_WITHOUT_COORDINATOR] {
        if let Some(v) = annotations.get(key)
            && v != "true"
            && v != "false"
        {
            out.push((
                key.to_string(),
                format!("invalid value \"{v}\": must be \"true\" or \"false\""),
            ));
        }
    }
    out
}

/// `intstr.GetScaledValueFromIntOrPercent(v, total, roundUp=true)`. A malformed value (which
/// validation rejects) counts as 0.
pub fn scaled(v: &IntOrPercent, total: u64) -> u64 {
    match v {
        IntOrPercent::Int(i) => u64::try_from(*i).unwrap_or(0),
        IntOrPercent::Str(s) => {
            let p: u64 = s
                .strip_suffix('%')
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (p * total).div_ceil(100)
        }
    }
}

/// The resolved budgets of a rolling update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_unavailable: u64,
    pub max_surge: u64,
}

/// The budgets of `strategy` for `desired` nodes (`updatedDesiredNodeCounts`): 0/0 for OnDelete.
pub fn budget(strategy: &UpdateStrategy, desired: u64) -> Budget {
    let (mut max_unavailable, max_surge) = match (&*strategy.kind, &strategy.rolling_update) {
        ("RollingUpdate", Some(ru)) => (
            scaled(&ru.max_unavailable, desired),
            scaled(&ru.max_surge, desired),
        ),
        _ => {
            return Budget {
                max_unavailable: 0,
                max_surge: 0,
            };
        }
    };
    if desired > 0 && max_unavailable == 0 && max_surge == 0 {
        max_unavailable = 1;
    }
    Budget {
        max_unavailable,
        max_surge,
    }
}

/// Whether the strategy starts the new revision beside the old one (`util.AllowsSurge`):
/// a RollingUpdate whose maxSurge is not zero.
pub fn allows_surge(strategy: &UpdateStrategy) -> bool {
    strategy.kind == "RollingUpdate"
        && strategy
            .rolling_update
            .as_ref()
            .is_some_and(|ru| scaled(&ru.max_surge, 100) > 0)
}

/// What the coordinator tells one node, in answer to its report, heartbeat or poll.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Directives {
    /// Daemonset → the revision this node may replace its unit with now.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grants: BTreeMap<String, String>,
    /// Daemonset → the revision to run instead of the node's own spec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, Pin>,
    /// Daemonset → why the node waits (for `hostset status`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waits: BTreeMap<String, String>,
    /// Daemonsets the node waits for that the coordinator has no spec of (host-specific
    /// ones): the coordinator cannot pace them, the node replaces them on its own.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub unmanaged: std::collections::BTreeSet<String>,
}

impl Directives {
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
            && self.pins.is_empty()
            && self.waits.is_empty()
            && self.unmanaged.is_empty()
    }

    /// A tag of the content (FNV-1a 64 of the JSON, 16 hex digits): an agent's directives
    /// poll names the directives it has, and the coordinator answers once they differ.
    pub fn etag(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// Run revision `to` (from `text`, the spec file it was read from) in place of the node's own
/// spec while that spec has revision `from` (`rollout undo`, automatic rollback). A new
/// revision in the node's spec ends the pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    pub from: String,
    pub to: String,
    /// The revision's number in the coordinator's history.
    pub number: u64,
    /// The file name the text was read from (its extension tells the format).
    pub file: String,
    pub text: String,
}

/// One node as [`decide`] sees it for one daemonset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    pub node: String,
    /// Placement: the daemonset should run here.
    pub should_run: bool,
    /// Seconds since the node was last heard from, when more than the grace period.
    pub silent_for: Option<u64>,
    /// The node's (oldest) daemon is available (ready for minReadySeconds).
    pub available: bool,
    /// A unit of the target revision runs and is available (with surge: the new unit).
    pub updated_available: bool,
    /// The node's unit runs the target revision (the oldest unit, as Kubernetes counts).
    pub updated: bool,
    /// The node's agent waits for a slot to replace its unit with `wants`'s revision.
    pub wants: Option<String>,
    /// What is wrong with the daemon here, for the halt message.
    pub problem: String,
}

/// A slot held by a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    pub revision: String,
    /// Seconds since the epoch when it was granted (or first seen in use).
    pub since: u64,
}

/// Why a rollout stopped by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Halt {
    pub revision: String,
    pub at: u64,
    /// `node: problem` for each node past the deadline.
    pub hosts: Vec<String>,
    pub message: String,
}

/// The rollout state of one daemonset that [`decide`] reads and updates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// Node → its slot.
    pub slots: BTreeMap<String, Slot>,
    pub paused: bool,
    pub halt: Option<Halt>,
}

/// What [`decide`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub desired: u64,
    pub updated: u64,
    pub updated_available: u64,
    pub unavailable: u64,
    pub max_unavailable: u64,
    pub max_surge: u64,
    /// Nodes holding a slot.
    pub in_progress: Vec<String>,
    /// Nodes waiting for a slot.
    pub waiting: Vec<String>,
    /// Nodes left out after being silent for the skip timeout.
    pub skipped: Vec<String>,
    /// Nodes whose own spec has another revision.
    pub spec_differs: Vec<String>,
    /// Every desired, non-skipped node runs the target revision, available.
    pub complete: bool,
    /// Newly halted by this decision.
    #[serde(skip)]
    pub halted_now: bool,
}

/// Per daemonset: given the target `revision`, its strategy and settings and every node's
/// state, update `state` (slots granted, released, a halt) at time `now` and return the
/// progress. `skip_after`: seconds of silence after which a node is skipped.
pub fn decide(
    revision: &str,
    strategy: &UpdateStrategy,
    settings: &Settings,
    nodes: &[NodeState],
    state: &mut State,
    now: u64,
    skip_after: u64,
) -> Progress {
    let desired: Vec<&NodeState> = nodes.iter().filter(|n| n.should_run).collect();
    let budget = budget(strategy, desired.len() as u64);
    let surge = budget.max_surge > 0;
    let mut p = Progress {
        desired: desired.len() as u64,
        max_unavailable: budget.max_unavailable,
        max_surge: budget.max_surge,
        ..Progress::default()
    };
    // Slots of another revision, or of nodes no longer desired, are void.
    let desired_names: BTreeMap<&str, &NodeState> =
        desired.iter().map(|n| (n.node.as_str(), *n)).collect();
    state.slots.retain(|node, slot| {
        slot.revision == revision
            && desired_names
                .get(node.as_str())
                .is_some_and(|n| n.silent_for.is_none_or(|s| s <= skip_after))
    });

    let mut unavailable = 0u64;
    let mut surging = 0u64;
    let mut candidates: Vec<&NodeState> = Vec::new();
    for n in &desired {
        if n.silent_for.is_some_and(|s| s > skip_after) {
            p.skipped.push(n.node.clone());
            continue;
        }
        if n.updated {
            p.updated += 1;
        }
        if n.updated_available {
            p.updated_available += 1;
        }
        let done = n.updated && n.updated_available && n.available;
        if done {
            state.slots.remove(&n.node);
        } else if (n.updated || n.updated_available) && n.silent_for.is_none() {
            // The new revision runs but is not available yet: it is in progress even
            // without a slot on record (the coordinator restarted, or the node had no old
            // daemon): start the deadline clock now.
            state.slots.entry(n.node.clone()).or_insert(Slot {
                revision: revision.to_string(),
                since: now,
            });
        }
        if !n.available {
            unavailable += 1;
        }
        if let Some(slot) = state.slots.get(&n.node) {
            p.in_progress.push(n.node.clone());
            if surge {
                if !n.updated_available {
                    surging += 1;
                }
            } else if n.available {
                // Granted, old daemon not stopped yet: it will be unavailable.
                unavailable += 1;
            }
            let _ = slot;
            continue;
        }
        match &n.wants {
            Some(r) if r == revision => candidates.push(n),
            Some(_) => p.spec_differs.push(n.node.clone()),
            None => {}
        }
    }

    // The progress deadline.
    if state.halt.as_ref().is_none_or(|h| h.revision != revision) {
        state.halt = None;
        let deadline = settings.progress_deadline_seconds;
        // A silent node is the skip timeout's business, not the deadline's.
        let late: Vec<String> = state
            .slots
            .iter()
            .filter(|(node, s)| {
                s.since.saturating_add(deadline) <= now
                    && desired_names
                        .get(node.as_str())
                        .is_some_and(|n| n.silent_for.is_none())
            })
            .map(|(node, _)| {
                let problem = desired_names
                    .get(node.as_str())
                    .map(|n| n.problem.as_str())
                    .filter(|p| !p.is_empty())
                    .unwrap_or("the new revision is not available");
                format!("{node}: {problem}")
            })
            .collect();
        if !late.is_empty() {
            state.halt = Some(Halt {
                revision: revision.to_string(),
                at: now,
                message: format!(
                    "progress deadline exceeded: {} node(s) not available {deadline}s after \
                     starting revision {revision}",
                    late.len()
                ),
                hosts: late,
            });
            p.halted_now = true;
        }
    }

    if !state.paused && state.halt.is_none() {
        for n in candidates {
            let grant = if !n.available {
                // Allowed replacement: nothing gets worse.
                true
            } else if surge {
                surging < budget.max_surge && {
                    surging += 1;
                    true
                }
            } else {
                unavailable < budget.max_unavailable && {
                    unavailable += 1;
                    true
                }
            };
            if grant {
                state.slots.insert(
                    n.node.clone(),
                    Slot {
                        revision: revision.to_string(),
                        since: now,
                    },
                );
                p.in_progress.push(n.node.clone());
            } else {
                p.waiting.push(n.node.clone());
            }
        }
    } else {
        p.waiting.extend(candidates.iter().map(|n| n.node.clone()));
    }
    p.in_progress.sort();
    p.unavailable = unavailable;
    p.complete = desired
        .iter()
        .filter(|n| !p.skipped.contains(&n.node))
        .all(|n| n.updated && n.updated_available && n.available);
    p
}

/// Why a node that wants a slot waits, for its directives.
pub fn wait_reason(state: &State, p: &Progress) -> String {
    if state.paused {
        "the rollout is paused (hostset rollout resume)".to_string()
    } else if let Some(h) = &state.halt {
        format!("the rollout is halted: {}", h.message)
    } else if p.max_surge > 0 {
        // No live counts here: a message that changes with every node's progress would make
        // every waiting node send a new report each time.
        format!(
            "waiting for a slot: at most maxSurge {} node(s) surge at once",
            p.max_surge
        )
    } else {
        format!(
            "waiting for a slot: at most maxUnavailable {} node(s) may be unavailable at once",
            p.max_unavailable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RollingUpdate;

    fn ru(mu: IntOrPercent, ms: IntOrPercent) -> UpdateStrategy {
        UpdateStrategy {
            kind: "RollingUpdate".into(),
            rolling_update: Some(RollingUpdate {
                max_unavailable: mu,
                max_surge: ms,
            }),
        }
    }

    #[test]
    fn budgets_round_up_as_kubernetes() {
        let s = ru(IntOrPercent::Str("10%".into()), IntOrPercent::Int(0));
        assert_eq!(budget(&s, 5).max_unavailable, 1);
        assert_eq!(budget(&s, 1000).max_unavailable, 100);
        assert_eq!(budget(&s, 1001).max_unavailable, 101);
        let zero = ru(IntOrPercent::Str("0%".into()), IntOrPercent::Int(0));
        assert_eq!(budget(&zero, 3).max_unavailable, 1);
        assert_eq!(budget(&zero, 0).max_unavailable, 0);
        let on_delete = UpdateStrategy {
            kind: "OnDelete".into(),
            rolling_update: None,
        };
        assert_eq!(
            budget(&on_delete, 9),
            Budget {
                max_unavailable: 0,
                max_surge: 0
            }
        );
    }

    fn node(name: &str) -> NodeState {
        NodeState {
            node: name.into(),
            should_run: true,
            available: true,
            ..NodeState::default()
        }
    }

    fn waiting(name: &str) -> NodeState {
        NodeState {
            wants: Some("new".into()),
            ..node(name)
        }
    }

    fn done(name: &str) -> NodeState {
        NodeState {
            updated: true,
            updated_available: true,
            ..node(name)
        }
    }

    const SETTINGS: Settings = Settings {
        progress_deadline_seconds: 60,
        skip_silent_seconds: 300,
        auto_rollback: false,
        without_coordinator: false,
    };

    fn one() -> UpdateStrategy {
        ru(IntOrPercent::Int(1), IntOrPercent::Int(0))
    }

    #[test]
    fn max_unavailable_one_grants_one_slot_at_a_time() {
        let mut st = State::default();
        let nodes = vec![waiting("a"), waiting("b"), waiting("c")];
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 100, 300);
        assert_eq!(p.in_progress, vec!["a"]);
        assert_eq!(p.waiting, vec!["b", "c"]);
        // Asked again before anything changed: still only a.
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 101, 300);
        assert_eq!(
            (p.in_progress.clone(), p.unavailable),
            (vec!["a".to_string()], 1)
        );
        // a stopped its old daemon and starts the new one: still a's slot.
        let a_starting = NodeState {
            available: false,
            updated: true,
            wants: None,
            ..node("a")
        };
        let nodes = vec![a_starting, waiting("b"), waiting("c")];
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 102, 300);
        assert_eq!(p.in_progress, vec!["a"]);
        assert_eq!(p.waiting, vec!["b", "c"]);
        // a is available: its slot is released and b gets one.
        let nodes = vec![done("a"), waiting("b"), waiting("c")];
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 103, 300);
        assert_eq!(p.in_progress, vec!["b"]);
        assert_eq!(p.updated, 1);
        assert!(!p.complete);
        let nodes = vec![done("a"), done("b"), done("c")];
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 104, 300);
        assert!(p.complete && p.in_progress.is_empty() && st.slots.is_empty());
    }

    #[test]
    fn an_unavailable_old_daemon_is_replaced_at_once_and_counts() {
        let mut st = State::default();
        let broken = NodeState {
            available: false,
            ..waiting("b")
        };
        let nodes = vec![waiting("a"), broken, waiting("c")];
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 100, 300);
        // b is an allowed replacement; it uses up the budget, so a and c wait.
        assert_eq!(p.in_progress, vec!["b"]);
        assert_eq!(p.waiting, vec!["a", "c"]);
    }

    #[test]
    fn percent_budget_grants_a_wave() {
        let mut st = State::default();
        let nodes: Vec<NodeState> = (0..20).map(|i| waiting(&format!("n{i:02}"))).collect();
        let s = ru(IntOrPercent::Str("10%".into()), IntOrPercent::Int(0));
        let p = decide("new", &s, &SETTINGS, &nodes, &mut st, 100, 300);
        assert_eq!(p.in_progress, vec!["n00", "n01"]);
        assert_eq!(p.max_unavailable, 2);
    }

    #[test]
    fn surge_counts_nodes_whose_new_daemon_is_not_available() {
        let mut st = State::default();
        let s = ru(IntOrPercent::Int(0), IntOrPercent::Int(1));
        let nodes = vec![waiting("a"), waiting("b")];
        let p = decide("new", &s, &SETTINGS, &nodes, &mut st, 100, 300);
        assert_eq!(
            (p.in_progress.clone(), p.waiting.clone()),
            (vec!["a".into()], vec!["b".into()])
        );
        // a: new started beside old (old still available, oldest is old).
        let a = NodeState {
            wants: None,
            ..node("a")
        };
        let p = decide(
            "new",
            &s,
            &SETTINGS,
            &[a.clone(), waiting("b")],
            &mut st,
            101,
            300,
        );
        assert_eq!(p.waiting, vec!["b"]);
        assert_eq!(p.unavailable, 0, "surge never makes a node unavailable");
        // a's new daemon is available; old not yet stopped: the surge slot is free.
        let a = NodeState {
            updated_available: true,
            ..a
        };
        let p = decide("new", &s, &SETTINGS, &[a, waiting("b")], &mut st, 102, 300);
        assert_eq!(p.in_progress, vec!["a", "b"]);
    }

    #[test]
    fn silent_nodes_count_until_skipped() {
        let mut st = State::default();
        let silent = NodeState {
            silent_for: Some(100),
            available: false,
            ..node("dead")
        };
        let nodes = vec![silent.clone(), waiting("a")];
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 100, 300);
        assert_eq!(p.waiting, vec!["a"], "the dead node uses the budget");
        let dead_long = NodeState {
            silent_for: Some(301),
            ..silent
        };
        let nodes = vec![dead_long, waiting("a")];
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 400, 300);
        assert_eq!(p.in_progress, vec!["a"]);
        assert_eq!(p.skipped, vec!["dead"]);
        let nodes = vec![
            NodeState {
                silent_for: Some(301),
                available: false,
                ..node("dead")
            },
            done("a"),
        ];
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 401, 300);
        assert!(p.complete, "complete without the skipped node");
    }

    #[test]
    fn deadline_halts_and_pause_stops_granting() {
        let mut st = State::default();
        let nodes = vec![waiting("a"), waiting("b")];
        decide("new", &one(), &SETTINGS, &nodes, &mut st, 100, 300);
        let a = NodeState {
            available: false,
            updated: true,
            wants: None,
            problem: "unit failed".into(),
            ..node("a")
        };
        let nodes = vec![a, waiting("b")];
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 159, 300);
        assert!(st.halt.is_none() && !p.halted_now);
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 160, 300);
        assert!(p.halted_now);
        let h = st.halt.clone().unwrap();
        assert_eq!(h.hosts, vec!["a: unit failed"]);
        assert!(h.message.contains("60s"), "{}", h.message);
        // Halted: b never gets a slot, even when a recovers; a new revision clears it.
        let nodes = vec![done("a"), waiting("b")];
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 161, 300);
        assert_eq!(p.waiting, vec!["b"]);
        assert!(wait_reason(&st, &p).contains("halted"));
        let nodes = vec![
            NodeState {
                wants: Some("newer".into()),
                ..node("a")
            },
            NodeState {
                wants: Some("newer".into()),
                ..node("b")
            },
        ];
        st.paused = true;
        let p = decide("newer", &one(), &SETTINGS, &nodes, &mut st, 162, 300);
        assert!(st.halt.is_none());
        assert_eq!(p.waiting, vec!["a", "b"]);
        assert!(wait_reason(&st, &p).contains("paused"));
        st.paused = false;
        let p = decide("newer", &one(), &SETTINGS, &nodes, &mut st, 163, 300);
        assert_eq!(p.in_progress, vec!["a"]);
    }

    #[test]
    fn other_revisions_are_not_granted() {
        let mut st = State::default();
        let nodes = vec![NodeState {
            wants: Some("other".into()),
            ..node("a")
        }];
        let p = decide("new", &one(), &SETTINGS, &nodes, &mut st, 100, 300);
        assert_eq!(p.spec_differs, vec!["a"]);
        assert!(p.in_progress.is_empty());
    }

    #[test]
    fn annotations_are_checked() {
        let mut a = crate::spec::Labels::new();
        a.insert(ANNOTATION_PROGRESS_DEADLINE.into(), "0".into());
        a.insert(ANNOTATION_AUTO_ROLLBACK.into(), "yes".into());
        let problems = check_annotations(&a);
        assert_eq!(problems.len(), 2);
        assert!(problems[1].1.contains("\"true\" or \"false\""));
    }
}
