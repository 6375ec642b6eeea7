//! The agent's decisions: desired daemonsets + this node + the units systemd
//! has → the actions that bring the node to the desired state.
//!
//! [`plan`] is pure and idempotent. The agent rebuilds the whole picture on
//! every pass (specs from disk, units from systemd) and calls it; events only
//! shorten the wait for the next pass. Nothing here remembers anything between
//! passes: what must be remembered (when a NoExecute taint appeared, when a
//! unit was first seen failed, backoff after a failed start, which deleted
//! daemonsets asked to orphan their units) is passed in by the agent.
//!
//! # Rules (Kubernetes DaemonSet semantics, per node)
//! - `shouldRun` and no unit → start one (`manage`: "create one").
//! - a unit and not `shouldContinueRunning` → stop it (untolerated NoExecute
//!   taint, nodeSelector or affinity no longer matching, nodeName elsewhere).
//!   An untolerated NoSchedule taint keeps a running unit and starts nothing.
//! - a NoExecute taint tolerated only for `tolerationSeconds` → the unit is
//!   evicted that long after the taint was first seen (Kubernetes' taint
//!   eviction controller, `getMinTolerationTime`), and not started again
//!   while the taint stays.
//! - a unit running an older revision → RollingUpdate: stop it, and start the
//!   new revision on the next pass once the old unit is gone (the unit name is
//!   the same, so one node cannot surge); OnDelete: keep it until it is gone.
//! - a unit whose daemonset is gone → stop it (cascade), unless the deleted
//!   daemonset asked to orphan its units (annotation
//!   `hostset.io/orphan-on-delete: "true"`): then its description is changed to
//!   mark it an orphan, and it keeps running.
//! - an orphan whose labels match a daemonset's selector is adopted: with the
//!   same unit name its description is set back; under another name the
//!   daemonset's own unit replaces it (RollingUpdate), or it is kept as the
//!   daemonset's daemon on this node (OnDelete).
//! - a daemonset whose spec file is invalid and has no last-known-good version
//!   is *held*: its unit is left exactly as it is.
//! - units without hostset markers are not ours: left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::placement::selector::label_selector_matches;
use crate::placement::taints::{EFFECT_NO_EXECUTE, daemon_tolerations, tolerates};
use crate::placement::{Verdict, evaluate};
use crate::spec::{DaemonSet, Node, Taint};
use crate::unit::{self, Markers, UnitSpec};

/// Annotation by which a daemonset asks that deleting it leave its units running.
pub const ANNOTATION_ORPHAN_ON_DELETE: &str = "hostset.io/orphan-on-delete";

/// How long a unit may be seen `failed` before the agent clears it: systemd
/// passes through `failed` for about a millisecond before every automatic
/// restart, which must not be mistaken for a final failure.
pub const FAILED_GRACE: Duration = Duration::from_secs(2);

/// A unit as systemd lists it, with its markers when it has any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedUnit {
    pub name: String,
    pub description: String,
    pub active_state: String,
    pub sub_state: String,
    /// `None` for a `hostset-*` unit hostset did not make.
    pub markers: Option<Markers>,
}

impl ObservedUnit {
    fn is_orphan(&self) -> bool {
        unit::is_orphan(&self.description)
    }
}

/// A daemonset in force on this node, with the unit it would run.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub ds: DaemonSet,
    pub unit: UnitSpec,
}

/// Whether a unit running an older revision may be replaced now (RollingUpdate).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Gate {
    /// No coordinator gates this daemonset: the node replaces its unit on its own.
    #[default]
    Free,
    /// The coordinator granted this node a slot for the desired revision.
    Granted,
    /// Keep the old revision running, for this reason.
    Wait(String),
}

/// Rollout phases of a daemonset on a node, as reported.
pub const ROLLOUT_WAITING: &str = "waiting";
/// The old unit is being stopped to start the new revision in its place.
pub const ROLLOUT_REPLACING: &str = "replacing";
/// The new revision runs beside the old one until it is available.
pub const ROLLOUT_SURGING: &str = "surging";

/// Everything one pass decides from. Times are monotonic durations since an
/// arbitrary origin chosen by the agent.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub node: &'a Node,
    /// Daemonsets in force (last-known-good included), sorted by name or not.
    pub desired: &'a [Desired],
    /// Daemonsets whose units must be left alone (invalid file, nothing known to be good).
    pub held: &'a BTreeSet<String>,
    /// Daemonsets deleted with `orphan-on-delete`: their units become orphans.
    pub orphaning: &'a BTreeSet<String>,
    /// `hostset-*` units as systemd lists them.
    pub units: &'a [ObservedUnit],
    pub now: Duration,
    /// When each NoExecute taint (`key:NoExecute`) was first seen on the node.
    pub no_execute_since: &'a BTreeMap<String, Duration>,
    /// When each unit was first seen in the `failed` state.
    pub failed_since: &'a BTreeMap<String, Duration>,
    /// Daemonsets not to be started before the given time (after a failed start).
    pub backoff_until: &'a BTreeMap<String, Duration>,
    /// Per daemonset, whether an older revision may be replaced now; absent is [`Gate::Free`].
    pub gates: &'a BTreeMap<String, Gate>,
    /// Per unit, since when it has been ready (active, and its readiness probe passing);
    /// absent when it is not ready. A surge rollout stops the old unit once the new one has
    /// been ready for `minReadySeconds`.
    pub ready_since: &'a BTreeMap<String, Duration>,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start {
        unit: UnitSpec,
        reason: String,
    },
    Stop {
        unit: String,
        daemonset: String,
        reason: String,
    },
    ResetFailed {
        unit: String,
        daemonset: String,
    },
    /// Mark a unit an orphan (its daemonset was deleted with orphan-on-delete).
    Orphan {
        unit: String,
        daemonset: String,
        description: String,
    },
    /// Make an orphan the daemonset's own again.
    Adopt {
        unit: String,
        daemonset: String,
        description: String,
    },
}

/// What a pass found out about one daemonset on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub daemonset: String,
    pub verdict: Verdict,
    /// The unit that runs (or ran) it here, if any.
    pub unit: Option<String>,
    /// `active/running`, `activating/auto-restart`, ... or `absent`.
    pub state: String,
    /// The revision the running unit has (empty when none runs).
    pub current_revision: String,
    /// The revision the spec asks for.
    pub desired_revision: String,
    /// When an eviction by a NoExecute taint with tolerationSeconds is due.
    pub evict_at: Option<Duration>,
    /// The rollout phase here: empty, [`ROLLOUT_WAITING`], [`ROLLOUT_REPLACING`] or
    /// [`ROLLOUT_SURGING`].
    pub rollout: String,
    /// Why it waits, when it does.
    pub rollout_message: String,
    /// During a surge: the new revision's unit, beside `unit`.
    pub second: Option<SecondUnit>,
}

/// The second unit of a daemonset during a surge rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondUnit {
    pub unit: String,
    pub state: String,
    pub revision: String,
}

/// The result of one pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub statuses: Vec<Status>,
    /// The next time the plan would change with nothing else happening
    /// (an eviction, a backoff ending, a failed unit's grace ending).
    pub wake_at: Option<Duration>,
}

impl Plan {
    fn wake(&mut self, at: Duration) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// The identity of a taint for first-seen bookkeeping: `key:Effect`.
pub fn taint_id(t: &Taint) -> String {
    format!("{}:{}", t.key, t.effect)
}

/// Whether the daemonset asks to leave its units running when it is deleted.
pub fn orphans_on_delete(ds: &DaemonSet) -> bool {
    ds.annotations
        .get(ANNOTATION_ORPHAN_ON_DELETE)
        .is_some_and(|v| v == "true")
}

/// The earliest eviction time from NoExecute taints that the daemonset
/// tolerates only for a while (`getMinTolerationTime` over the matching
/// tolerations: any matching toleration without `tolerationSeconds` tolerates
/// forever). Returns the deadline and the taint behind it.
fn eviction_deadline<'n>(
    ds: &DaemonSet,
    node: &'n Node,
    since: &BTreeMap<String, Duration>,
    now: Duration,
) -> Option<(Duration, &'n Taint, i64)> {
    if !node.taints.iter().any(|t| t.effect == EFFECT_NO_EXECUTE) {
        return None;
    }
    let tolerations = daemon_tolerations(&ds.template);
    let mut earliest: Option<(Duration, &Taint, i64)> = None;
    for taint in node.taints.iter().filter(|t| t.effect == EFFECT_NO_EXECUTE) {
        let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() || matching.iter().any(|t| t.toleration_seconds.is_none()) {
            // Untolerated (placement already evicts) or tolerated forever.
            continue;
        }
        let seconds = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .min()
            .unwrap_or(0);
        let first_seen = since.get(&taint_id(taint)).copied().unwrap_or(now);
        let deadline = first_seen + Duration::from_secs(seconds.max(0) as u64);
        if earliest.is_none_or(|(d, _, _)| deadline < d) {
            earliest = Some((deadline, taint, seconds));
        }
    }
    earliest
}

fn state_of(u: &ObservedUnit) -> String {
    format!("{}/{}", u.active_state, u.sub_state)
}

/// One pass: the actions that bring this node towards the desired state.
pub fn plan(input: &Input<'_>) -> Plan {
    let mut out = Plan::default();
    let desired_names: BTreeSet<&str> = input.desired.iter().map(|d| d.ds.name.as_str()).collect();
    let by_name: BTreeMap<&str, &ObservedUnit> =
        input.units.iter().map(|u| (u.name.as_str(), u)).collect();

    // Orphans: which daemonset adopts each (the first by name whose selector
    // matches the orphan's labels).
    let mut adopted_by: BTreeMap<&str, &ObservedUnit> = BTreeMap::new();
    for u in input.units.iter().filter(|u| u.is_orphan()) {
        let Some(m) = &u.markers else { continue };
        let mut candidates: Vec<&Desired> = input
            .desired
            .iter()
            .filter(|d| label_selector_matches(d.ds.selector.as_ref(), &m.labels) == Ok(true))
            .collect();
        candidates.sort_by(|a, b| a.ds.name.cmp(&b.ds.name));
        if let Some(d) = candidates.first() {
            adopted_by.entry(d.ds.name.as_str()).or_insert(u);
        }
    }

    // Units whose daemonset is not (or no longer) in force.
    for u in input.units {
        let Some(m) = &u.markers else { continue };
        if u.is_orphan() {
            // Adopted orphans are handled with their adopter below.
            continue;
        }
        let ds = m.daemonset.as_str();
        if desired_names.contains(ds) || input.held.contains(ds) {
            continue;
        }
        if input.orphaning.contains(ds) {
            out.actions.push(Action::Orphan {
                unit: u.name.clone(),
                daemonset: ds.to_string(),
                description: unit::orphan_description(ds, &m.revision),
            });
        } else if u.active_state != "deactivating" {
            out.actions.push(Action::Stop {
                unit: u.name.clone(),
                daemonset: ds.to_string(),
                reason: format!("daemonset {ds} was deleted"),
            });
        }
    }

    let mut desired: Vec<&Desired> = input.desired.iter().collect();
    desired.sort_by(|a, b| a.ds.name.cmp(&b.ds.name));
    for d in desired {
        plan_one(
            input,
            d,
            &by_name,
            adopted_by.get(d.ds.name.as_str()).copied(),
            &mut out,
        );
    }
    out
}

fn plan_one(
    input: &Input<'_>,
    d: &Desired,
    by_name: &BTreeMap<&str, &ObservedUnit>,
    orphan: Option<&ObservedUnit>,
    out: &mut Plan,
) {
    let name = d.ds.name.as_str();
    let mut verdict = evaluate(&d.ds, input.node);
    let mut evict_at = None;
    if let Some((deadline, taint, seconds)) =
        eviction_deadline(&d.ds, input.node, input.no_execute_since, input.now)
    {
        if input.now >= deadline {
            verdict.should_run = false;
            verdict.should_continue_running = false;
            verdict.reasons.push(format!(
                "taint {taint} is tolerated for {seconds}s only (tolerationSeconds), and that time is up"
            ));
        } else {
            evict_at = Some(deadline);
            out.wake(deadline);
        }
    }

    let own = by_name.get(unit::unit_name(name).as_str()).copied();
    // The unit that stands for this daemonset here: its own, or an adopted orphan.
    let current = own.filter(|u| !u.is_orphan()).or(own).or(orphan);
    let mut status = Status {
        daemonset: name.to_string(),
        verdict: verdict.clone(),
        unit: current.map(|u| u.name.clone()),
        state: current.map_or_else(|| "absent".to_string(), state_of),
        current_revision: current
            .and_then(|u| u.markers.as_ref())
            .map(|m| m.revision.clone())
            .unwrap_or_default(),
        desired_revision: d.unit.revision.clone(),
        evict_at,
        rollout: String::new(),
        rollout_message: String::new(),
        second: None,
    };

    // Two units of ours under the daemonset's two names: a surge in progress.
    let second_name = unit::second_unit_name(name);
    let ours = |u: &&ObservedUnit| {
        !u.is_orphan() && u.markers.as_ref().is_some_and(|m| m.daemonset == name)
    };
    let second = by_name.get(second_name.as_str()).copied().filter(ours);
    if let (Some(first), Some(second)) = (own.filter(ours), second) {
        plan_pair(input, d, &verdict, first, second, &mut status, out);
        out.statuses.push(status);
        return;
    }
    // The daemon lives under the second name (since a surge): it is the daemonset's unit.
    let moved = own.is_none() && second.is_some();
    let own = own.or(second);
    if moved {
        status.unit = own.map(|u| u.name.clone());
        status.state = own.map_or_else(|| "absent".to_string(), state_of);
        status.current_revision = own
            .and_then(|u| u.markers.as_ref())
            .map(|m| m.revision.clone())
            .unwrap_or_default();
    }

    // An adopted orphan under another name.
    if let Some(o) = orphan.filter(|o| o.name != d.unit.name) {
        let on_delete = d.ds.update_strategy.kind == "OnDelete";
        if !verdict.should_continue_running && o.active_state != "deactivating" {
            out.actions.push(Action::Stop {
                unit: o.name.clone(),
                daemonset: name.to_string(),
                reason: format!(
                    "adopted orphan may not run here: {}",
                    verdict.reasons.join("; ")
                ),
            });
        } else if on_delete {
            // OnDelete: the orphan is this daemonset's daemon until it is gone.
            if own.is_none() {
                out.statuses.push(status);
                return;
            }
        } else if o.active_state != "deactivating" && verdict.should_run {
            out.actions.push(Action::Stop {
                unit: o.name.clone(),
                daemonset: name.to_string(),
                reason: format!("adopted by daemonset {name}, replaced by its own unit"),
            });
        }
    }

    match own {
        Some(u) if u.is_orphan() && orphan.is_some_and(|o| o.name == u.name) => {
            // Our own name, marked orphan: adopt it back; revisions are compared next pass.
            out.actions.push(Action::Adopt {
                unit: u.name.clone(),
                daemonset: name.to_string(),
                description: unit::description(
                    name,
                    u.markers.as_ref().map_or("", |m| m.revision.as_str()),
                ),
            });
        }
        Some(u) if u.is_orphan() => {
            // An orphan with our name that our selector does not match: not ours.
            status.state = format!(
                "blocked: {} is an orphan this daemonset does not select",
                u.name
            );
        }
        Some(u) if u.active_state == "deactivating" => {}
        Some(u) if !verdict.should_continue_running => out.actions.push(Action::Stop {
            unit: u.name.clone(),
            daemonset: name.to_string(),
            reason: verdict.reasons.join("; "),
        }),
        Some(u) if u.active_state == "failed" => {
            let since = input
                .failed_since
                .get(&u.name)
                .copied()
                .unwrap_or(input.now);
            if input.now >= since + FAILED_GRACE {
                out.actions.push(Action::ResetFailed {
                    unit: u.name.clone(),
                    daemonset: name.to_string(),
                });
            } else {
                out.wake(since + FAILED_GRACE);
            }
        }
        Some(u) => {
            let running = u.markers.as_ref().map_or("", |m| m.revision.as_str());
            if running != d.unit.revision && d.ds.update_strategy.kind != "OnDelete" {
                let gate = input.gates.get(name).cloned().unwrap_or_default();
                let other = unit::other_unit_name(name, &u.name);
                match gate {
                    Gate::Wait(why) => {
                        status.rollout = ROLLOUT_WAITING.to_string();
                        status.rollout_message = why;
                    }
                    _ if crate::rollout::allows_surge(&d.ds.update_strategy)
                        && verdict.should_run =>
                    {
                        status.rollout = ROLLOUT_SURGING.to_string();
                        // The other name must be free (a unit still stopping there: wait
                        // for its removal event).
                        if !by_name.contains_key(other.as_str()) {
                            let mut unit = d.unit.clone();
                            unit.name = other;
                            out.actions.push(Action::Start {
                                unit,
                                reason: format!(
                                    "revision {} starts beside revision {running} (maxSurge)",
                                    d.unit.revision
                                ),
                            });
                        }
                    }
                    _ => {
                        status.rollout = ROLLOUT_REPLACING.to_string();
                        out.actions.push(Action::Stop {
                            unit: u.name.clone(),
                            daemonset: name.to_string(),
                            reason: format!(
                                "revision {running} is replaced by {}",
                                d.unit.revision
                            ),
                        });
                    }
                }
            }
        }
        None if verdict.should_run => {
            // One daemon per node: an adopted orphan under another name goes
            // first (OnDelete: it stays and stands for this daemonset).
            let waiting_for_orphan = orphan.is_some_and(|o| o.name != d.unit.name);
            match input.backoff_until.get(name) {
                Some(until) if *until > input.now => out.wake(*until),
                _ if waiting_for_orphan => {}
                _ => {
                    // After a surge the daemon may have lived under the second name: start
                    // under the first name unless a unit is still stopping there.
                    let mut unit = d.unit.clone();
                    if by_name.contains_key(unit.name.as_str())
                        && !by_name.contains_key(second_name.as_str())
                    {
                        unit.name = second_name.clone();
                    }
                    out.actions.push(Action::Start {
                        unit,
                        reason: "should run on this node".to_string(),
                    })
                }
            }
        }
        None => {}
    }
    out.statuses.push(status);
}

/// Two units of one daemonset on the node (a surge in progress, or its remains): keep the
/// one of the desired revision and the other until the first is available, as
/// Kubernetes' `podsShouldBeOnNode` does with an old and a new pod.
fn plan_pair(
    input: &Input<'_>,
    d: &Desired,
    verdict: &crate::placement::Verdict,
    first: &ObservedUnit,
    second: &ObservedUnit,
    status: &mut Status,
    out: &mut Plan,
) {
    let name = d.ds.name.as_str();
    let rev = |u: &ObservedUnit| {
        u.markers
            .as_ref()
            .map_or(String::new(), |m| m.revision.clone())
    };
    let stop = |u: &ObservedUnit, reason: String, out: &mut Plan| {
        if u.active_state != "deactivating" {
            out.actions.push(Action::Stop {
                unit: u.name.clone(),
                daemonset: name.to_string(),
                reason,
            });
        }
    };
    let desired = d.unit.revision.as_str();
    let (new, old) = if rev(second) == desired && rev(first) != desired {
        (second, first)
    } else if rev(first) == desired && rev(second) != desired {
        (first, second)
    } else {
        // Both of one revision (desired or not): one is enough; the first name stays.
        status.unit = Some(first.name.clone());
        status.state = state_of(first);
        status.current_revision = rev(first);
        stop(
            second,
            format!("a second unit of revision {} is not needed", rev(second)),
            out,
        );
        if !verdict.should_continue_running {
            stop(first, verdict.reasons.join("; "), out);
        }
        return;
    };
    // Kubernetes counts the oldest pod: the old unit stands for the daemonset until it goes.
    status.unit = Some(old.name.clone());
    status.state = state_of(old);
    status.current_revision = rev(old);
    status.second = Some(SecondUnit {
        unit: new.name.clone(),
        state: state_of(new),
        revision: rev(new),
    });
    status.rollout = ROLLOUT_SURGING.to_string();
    if !verdict.should_continue_running {
        let why = verdict.reasons.join("; ");
        stop(old, why.clone(), out);
        stop(new, why, out);
        return;
    }
    let min_ready = Duration::from_secs(u64::try_from(d.ds.min_ready_seconds).unwrap_or(0));
    match input.ready_since.get(&new.name) {
        Some(since) if *since + min_ready <= input.now => stop(
            old,
            format!(
                "revision {desired} is available in {}: revision {} stops (maxSurge)",
                new.name,
                rev(old)
            ),
            out,
        ),
        Some(since) => out.wake(*since + min_ready),
        None => {}
    }
}
