//! Fleet-wide status arithmetic: Kubernetes' `DaemonSetStatus` from the agents' reports.
//!
//! The coordinator keeps one [`SpecRecord`] per daemonset and one [`NodeRecord`] per node
//! (the node's last full [`NodeReport`] and when it was last heard from). Everything here is
//! a pure function of those records and the current time: no I/O, no clock, no async.
//!
//! # Definitions
//!
//! The counters follow `pkg/controller/daemon/daemon_controller.go#updateDaemonSetStatus`
//! (shared notes §9), with a systemd unit standing in for the pod:
//!
//! - *shouldRun* / *shouldContinueRunning* are computed here, by the coordinator, with
//!   [`placement::evaluate`] on its own copy of the spec and the node's last reported labels
//!   and taints ([`placement_node`]), as Kubernetes' controller computes them from its own
//!   informers. The agent's booleans in the report are not trusted.
//! - The unit is *present* on a node when the node's report has a [`DaemonSetReport`] with
//!   the daemonset's name whose `unit` is non-empty and whose `state` is not `absent` (an
//!   adopted orphan's unit counts: it stands for the daemonset there). This is "≥ 1 pod is
//!   mapped to the node".
//! - `desiredNumberScheduled`: nodes with shouldRun.
//! - `currentNumberScheduled`: shouldRun and present.
//! - `numberMisscheduled`: !shouldRun and present. It counts nodes, and a daemon kept only by
//!   shouldContinueRunning (an untolerated NoSchedule taint) is misscheduled, as in Kubernetes.
//! - `numberReady`: shouldRun, present, the node is Ready ([`node_ready`]) and the report says
//!   the daemon is ready.
//! - `updatedNumberScheduled`: shouldRun, present, and the unit runs the spec's current
//!   revision (`IsPodUpdated`: the `controller-revision-hash` equals the current hash).
//! - `numberAvailable`: ready, and `minReadySeconds == 0` or `ready_since + minReadySeconds <=
//!   now` (`IsPodAvailable`, with the `<=` of current Kubernetes, counting from the report's
//!   `readySince`, or from `startedAt` for agents that do not report it). A ready daemon whose
//!   ready time the agent does not report is not available while `minReadySeconds > 0`.
//! - `numberUnavailable`: `desiredNumberScheduled - numberAvailable`.
//! - `observedGeneration`: the generation every Ready node has seen. Kubernetes sets it to
//!   `metadata.generation` once its one controller has acted on that generation; in hostset
//!   each agent is the controller of its node, so the fleet has observed a generation only
//!   when every Ready node's agent has. A Ready node's generation is the latest generation in
//!   [`SpecRecord::history`] whose revision is the `desired_revision` the node reports for
//!   the daemonset (the current generation for the current revision); 0 when the report
//!   lacks the daemonset or names a revision the coordinator never knew. The status carries
//!   the minimum over Ready nodes, or the current generation when no node is Ready (a silent
//!   agent can neither hold it back nor vouch for it).
//!
//! # Silent nodes
//!
//! A node whose agent has been silent for longer than the grace period is NotReady. In
//! Kubernetes the node lifecycle controller would then add the `node.kubernetes.io/unreachable`
//! taints (NoSchedule, then NoExecute), which every DaemonSet tolerates automatically, so the
//! node would stay desired anyway. hostset deliberately does **not** synthesise those taints:
//! a silent node is evaluated on its last reported labels and taints and *stays desired*. Its
//! daemon counts as present (the last report said so) but not ready and not available, so the
//! status shows exactly where a daemon should run and cannot be vouched for.

use crate::api::{
    DaemonSetDetail, DaemonSetStatus, DaemonSetView, Endpoint, EndpointPort, NodePlacement,
    NodeView,
};
use crate::placement::{self, Verdict, selector::label_selector_matches, taints};
use crate::report::{DaemonSetReport, NodeReport};
use crate::spec::{DaemonSet, LabelSelector, Labels, Node, Taint};
use crate::syntax;

/// kube-controller-manager's `--node-monitor-grace-period` default (40s): how long a node may
/// be silent before it is NotReady.
pub const DEFAULT_GRACE_SECONDS: u64 = 40;

/// A daemonset as the coordinator knows it.
///
/// Not serde: [`DaemonSet`] has no serde form. The store persists the other fields and
/// re-reads the spec from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecRecord {
    /// The spec in force.
    pub ds: DaemonSet,
    /// The spec file it was read from.
    pub file: String,
    /// The revision (template hash, [`crate::unit::revision`]) of `ds`.
    pub revision: String,
    /// `metadata.generation`: increases each time the spec's content changes.
    pub generation: u64,
    /// Seconds since the epoch when the coordinator first saw this daemonset.
    pub created_at: u64,
    /// `(generation, revision)` of every generation seen, oldest first.
    pub history: Vec<(u64, String)>,
}

/// A node as the coordinator knows it: its last full report and when it was last heard from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The last full report.
    pub report: NodeReport,
    /// Seconds since the epoch (coordinator clock) of the first report.
    pub first_seen: u64,
    /// Seconds since the epoch (coordinator clock) of the last report or heartbeat.
    pub last_seen: u64,
}

/// Whether the node is Ready: heard from within `grace` seconds (`now - last_seen <= grace`,
/// as the node lifecycle controller marks a node Unknown only once
/// `now > probeTimestamp + gracePeriod`) and its report's `Ready` condition, if there is one,
/// is not `False`.
pub fn node_ready(rec: &NodeRecord, now: u64, grace: u64) -> bool {
    ready_at(&rec.report, rec.last_seen, now, grace)
}

/// [`node_ready`] of a node last heard from at `last_seen` (which overrides the record's).
pub fn node_ready_at(rec: &NodeRecord, last_seen: u64, now: u64, grace: u64) -> bool {
    ready_at(&rec.report, last_seen, now, grace)
}

/// [`node_ready`] of a node whose last report is `report`, last heard from at `last_seen`.
fn ready_at(report: &NodeReport, last_seen: u64, now: u64, grace: u64) -> bool {
    heard_within(last_seen, now, grace) && !ready_condition_false(report)
}

fn heard_within(last_seen: u64, now: u64, grace: u64) -> bool {
    now.saturating_sub(last_seen) <= grace
}

/// The report's `Ready` condition, when its status is `False`.
fn ready_condition_false(report: &NodeReport) -> bool {
    report
        .node
        .conditions
        .iter()
        .any(|c| c.kind == "Ready" && c.status == "False")
}

/// The placement [`Node`] rebuilt from the node's last report: name, labels, taints (parsed
/// back from their `key=value:Effect` strings; a string that does not parse is dropped) and
/// `unschedulable`.
pub fn placement_node(rec: &NodeRecord) -> Node {
    placement_node_of(&rec.report)
}

fn placement_node_of(report: &NodeReport) -> Node {
    let info = &report.node;
    Node {
        name: info.name.clone(),
        labels: info.labels.clone(),
        taints: info.taints.iter().filter_map(|t| parse_taint(t)).collect(),
        unschedulable: info.unschedulable,
    }
}

/// Parses a taint in kubectl's form, `key=value:Effect` or `key:Effect` (the inverse of
/// [`Taint`]'s `Display`).
///
/// As kubectl's `parseTaint`: the key must be a qualified name, the value a label value, and
/// the effect one of NoSchedule, PreferNoSchedule, NoExecute. `None` otherwise.
pub fn parse_taint(s: &str) -> Option<Taint> {
    let (key_value, effect) = s.rsplit_once(':')?;
    let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
    let effect_ok = [
        taints::EFFECT_NO_SCHEDULE,
        taints::EFFECT_PREFER_NO_SCHEDULE,
        taints::EFFECT_NO_EXECUTE,
    ]
    .contains(&effect);
    let valid = effect_ok
        && syntax::is_qualified_name(key).is_empty()
        && syntax::is_valid_label_value(value).is_empty();
    valid.then(|| Taint {
        key: key.to_string(),
        value: value.to_string(),
        effect: effect.to_string(),
    })
}

/// `GET /v1/nodes`: one node's row.
///
/// `daemons` counts the node's daemonset reports whose daemon is ready (`ready`, or state
/// `active/running` from agents that predate the `ready` field).
pub fn node_view(rec: &NodeRecord, now: u64, grace: u64) -> NodeView {
    node_view_at(rec, rec.last_seen, now, grace)
}

/// [`node_view`] of a node last heard from at `last_seen` (which overrides the record's).
pub fn node_view_at(rec: &NodeRecord, last_seen: u64, now: u64, grace: u64) -> NodeView {
    let r = &rec.report;
    let ready = ready_at(&rec.report, last_seen, now, grace);
    NodeView {
        name: r.node.name.clone(),
        status: if ready { "Ready" } else { "NotReady" }.to_string(),
        labels: r.node.labels.clone(),
        taints: r.node.taints.clone(),
        unschedulable: r.node.unschedulable,
        addresses: r.node.addresses.clone(),
        agent_version: r.agent_version.clone(),
        daemons: r
            .daemonsets
            .iter()
            .filter(|d| d.ready || d.state == "active/running")
            .count() as u64,
        first_seen: rec.first_seen,
        last_seen,
        commit: r.git.as_ref().map(|g| g.commit.clone()).unwrap_or_default(),
    }
}

/// A repository URL without its user part (`https://ci:***@host/x` and `https://host/x`, or
/// `ssh://git@host/x` and `ssh://deploy@host/x`, name the same repository).
fn without_user(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if scheme.is_empty() {
        // user@host:path
        let host_path = url.rsplit_once('@').map_or(url, |(_, h)| h);
        return host_path.to_string();
    }
    format!("{scheme}://{host}{path}")
}

/// The nodes following `git`'s repository and reference (the same URL, users aside, and the
/// same reference) that do not run its head, by name, and how many do; nothing lags before
/// `git` has fetched a head.
pub fn lagging<'a>(
    git: &crate::report::GitReport,
    reports: impl IntoIterator<Item = &'a NodeReport>,
) -> (Vec<crate::api::LaggingNode>, u64) {
    let mut behind = Vec::new();
    let mut current = 0;
    if git.head.is_empty() {
        return (behind, current);
    }
    for r in reports {
        let Some(g) = &r.git else { continue };
        if without_user(&g.url) != without_user(&git.url) || g.reference != git.reference {
            continue;
        }
        if g.commit == git.head {
            current += 1;
            continue;
        }
        let reason = if !g.fetch_error.is_empty() {
            g.fetch_error.clone()
        } else if !g.refused.is_empty() {
            format!(
                "refuses commit {}: {}",
                g.refused,
                g.refused_because.first().cloned().unwrap_or_default()
            )
        } else if g.head != git.head {
            "has not fetched the head yet".to_string()
        } else {
            String::new()
        };
        behind.push(crate::api::LaggingNode {
            node: r.node.name.clone(),
            commit: g.commit.clone(),
            head: g.head.clone(),
            reason,
        });
    }
    behind.sort_by(|a, b| a.node.cmp(&b.node));
    (behind, current)
}

/// One node's part in one daemonset, computed once and read by every view.
struct Assessment<'a> {
    rec: &'a NodeRecord,
    /// When the node was last heard from (the record's, or a newer heartbeat's).
    last_seen: u64,
    node_ready: bool,
    verdict: Verdict,
    /// The node's report about this daemonset, if any.
    report: Option<&'a DaemonSetReport>,
    /// A unit stands for the daemonset on the node.
    present: bool,
    /// numberReady's condition, minus shouldRun.
    ready: bool,
    /// numberAvailable's condition, minus shouldRun.
    available: bool,
    /// updatedNumberScheduled's condition, minus shouldRun.
    updated: bool,
}

impl Assessment<'_> {
    fn name(&self) -> &str {
        &self.rec.report.node.name
    }
}

/// The daemonset's report on a node: the first one with its name.
fn daemonset_report<'a>(rec: &'a NodeRecord, name: &str) -> Option<&'a DaemonSetReport> {
    rec.report.daemonsets.iter().find(|d| d.name == name)
}

/// Whether a unit stands for the daemonset on the node (Kubernetes: ≥ 1 pod mapped to it).
fn unit_present(report: Option<&DaemonSetReport>) -> bool {
    report.is_some_and(|d| !d.unit.is_empty() && d.state != "absent")
}

/// `minReadySeconds` as a duration; validation forbids negative values, treated as 0.
fn min_ready_seconds(ds: &DaemonSet) -> u64 {
    u64::try_from(ds.min_ready_seconds).unwrap_or(0)
}

/// `IsPodAvailable`: ready, and ready for `minReadySeconds` (`ready_since + minReadySeconds <=
/// now`). Without a ready time the daemon cannot be shown to have been ready long enough.
fn available(ready: bool, ready_since: Option<u64>, min_ready: u64, now: u64) -> bool {
    ready && (min_ready == 0 || ready_since.is_some_and(|t| t.saturating_add(min_ready) <= now))
}

/// When the daemon became ready: `readySince`, or the unit's start for agents that predate it.
fn ready_since(d: &DaemonSetReport) -> Option<u64> {
    d.ready_since.or(d.started_at)
}

fn assess<'a>(
    spec: &SpecRecord,
    rec: &'a NodeRecord,
    last_seen: u64,
    now: u64,
    grace: u64,
) -> Assessment<'a> {
    let node_ready = ready_at(&rec.report, last_seen, now, grace);
    let verdict = placement::evaluate(&spec.ds, &placement_node(rec));
    let report = daemonset_report(rec, &spec.ds.name);
    let present = unit_present(report);
    let ready = present && node_ready && report.is_some_and(|d| d.ready);
    let available = available(
        ready,
        report.and_then(ready_since),
        min_ready_seconds(&spec.ds),
        now,
    );
    let updated = present && report.is_some_and(|d| d.current_revision == spec.revision);
    Assessment {
        rec,
        last_seen,
        node_ready,
        verdict,
        report,
        present,
        ready,
        available,
        updated,
    }
}

/// Every node's assessment, sorted by node name.
fn assess_all<'a>(
    spec: &SpecRecord,
    nodes: impl IntoIterator<Item = (&'a NodeRecord, u64)>,
    now: u64,
    grace: u64,
) -> Vec<Assessment<'a>> {
    let mut all: Vec<Assessment<'a>> = nodes
        .into_iter()
        .map(|(rec, last_seen)| assess(spec, rec, last_seen, now, grace))
        .collect();
    all.sort_by(|a, b| a.name().cmp(b.name()));
    all
}

/// The counters of `updateDaemonSetStatus` over the assessed nodes.
fn status(spec: &SpecRecord, all: &[Assessment<'_>]) -> DaemonSetStatus {
    let mut s = DaemonSetStatus::default();
    for a in all {
        if a.verdict.should_run {
            s.desired_number_scheduled += 1;
            if a.present {
                s.current_number_scheduled += 1;
            }
            if a.ready {
                s.number_ready += 1;
            }
            if a.available {
                s.number_available += 1;
            }
            if a.updated {
                s.updated_number_scheduled += 1;
            }
        } else if a.present {
            s.number_misscheduled += 1;
        }
    }
    s.number_unavailable = s.desired_number_scheduled - s.number_available;
    s.observed_generation = observed_generation(spec, all);
    s
}

/// `observedGeneration`: the minimum over Ready nodes of the generation each has seen
/// (module docs, "Definitions").
fn observed_generation(spec: &SpecRecord, all: &[Assessment<'_>]) -> u64 {
    all.iter()
        .filter(|a| a.node_ready)
        .map(|a| {
            a.report
                .map_or(0, |d| generation_of(spec, &d.desired_revision))
        })
        .min()
        .unwrap_or(spec.generation)
}

/// The latest generation whose revision is `revision`; 0 when unknown.
fn generation_of(spec: &SpecRecord, revision: &str) -> u64 {
    if revision.is_empty() {
        return 0;
    }
    let from_history = spec
        .history
        .iter()
        .filter(|(_, r)| r == revision)
        .map(|(g, _)| *g)
        .max();
    let current = (revision == spec.revision).then_some(spec.generation);
    from_history.max(current).unwrap_or(0)
}

/// The one-sentence `problem` of a [`NodePlacement`]; empty when there is none.
fn problem(spec: &SpecRecord, a: &Assessment<'_>, now: u64, grace: u64) -> String {
    if !a.verdict.should_run {
        return if a.present {
            format!("runs but should not: {}", a.verdict.reasons.join("; "))
        } else {
            String::new()
        };
    }
    if a.available && a.updated {
        return String::new();
    }
    if !heard_within(a.last_seen, now, grace) {
        return format!(
            "node is NotReady: its agent has not reported for {}s",
            now.saturating_sub(a.last_seen)
        );
    }
    if !a.node_ready {
        return not_ready_condition(&a.rec.report);
    }
    let Some(d) = a.report else {
        return "the agent does not report this daemonset: its spec has not reached the node"
            .to_string();
    };
    if !d.last_error.is_empty() {
        return format!("the agent reports: {}", d.last_error);
    }
    if d.held {
        return "the spec file on the node is invalid (held)".to_string();
    }
    if d.desired_revision != spec.revision {
        let wants = if d.desired_revision.is_empty() {
            "no revision".to_string()
        } else {
            format!("revision {}", d.desired_revision)
        };
        return format!(
            "the agent has not seen the current spec (it wants {wants}, the coordinator has {})",
            spec.revision
        );
    }
    if !a.present {
        let state = if d.state.is_empty() {
            "absent"
        } else {
            &d.state
        };
        return format!("no unit runs it (state {state})");
    }
    if !a.ready {
        return if d.readiness.is_empty() {
            format!("not ready: unit is {}", d.state)
        } else {
            format!("not ready: {}", d.readiness)
        };
    }
    if !a.available {
        let min_ready = min_ready_seconds(&spec.ds);
        return match ready_since(d) {
            Some(t) => format!(
                "ready for {}s of minReadySeconds {min_ready}",
                now.saturating_sub(t)
            ),
            None => format!(
                "ready, but the agent reports no ready time to count minReadySeconds {min_ready} from"
            ),
        };
    }
    // Not updated.
    let pending = if spec.ds.update_strategy.kind == "OnDelete" {
        "OnDelete: replaced once its unit is stopped"
    } else {
        "update pending"
    };
    format!(
        "runs revision {}, not the current {} ({pending})",
        d.current_revision, spec.revision
    )
}

/// How the rolling update of `spec` sees the node `rec` (last heard from at `last_seen`).
pub fn rollout_node_state(
    spec: &SpecRecord,
    rec: &NodeRecord,
    last_seen: u64,
    now: u64,
    grace: u64,
) -> crate::rollout::NodeState {
    let a = assess(spec, rec, last_seen, now, grace);
    let d = a.report;
    let heard = heard_within(last_seen, now, grace);
    let min_ready = min_ready_seconds(&spec.ds);
    // With a surge under way, the new revision's unit is the second one.
    let second_available = d
        .and_then(|d| d.second.as_ref())
        .filter(|u| u.revision == spec.revision)
        .map(|u| heard && available(u.ready, u.ready_since, min_ready, now));
    let updated_available = second_available.unwrap_or(a.updated && a.available);
    let mut problem = problem(spec, &a, now, grace);
    if let Some(u) = d.and_then(|d| d.second.as_ref())
        && u.revision == spec.revision
        && !updated_available
    {
        problem = format!("the new revision's unit {} is {}", u.unit, u.state);
    }
    crate::rollout::NodeState {
        node: a.name().to_string(),
        should_run: a.verdict.should_run,
        silent_for: (!heard).then(|| now.saturating_sub(last_seen)),
        available: a.available,
        updated_available,
        updated: a.updated,
        wants: d
            .filter(|d| d.rollout == crate::plan::ROLLOUT_WAITING)
            .map(|d| d.desired_revision.clone()),
        problem,
    }
}

/// "node is NotReady: its Ready condition is False (reason: message)".
fn not_ready_condition(report: &NodeReport) -> String {
    let why = report
        .node
        .conditions
        .iter()
        .find(|c| c.kind == "Ready" && c.status == "False")
        .map(|c| match (c.reason.is_empty(), c.message.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!(" ({})", c.reason),
            (true, false) => format!(" ({})", c.message),
            (false, false) => format!(" ({}: {})", c.reason, c.message),
        })
        .unwrap_or_default();
    format!("node is NotReady: its Ready condition is False{why}")
}

fn node_placement(spec: &SpecRecord, a: &Assessment<'_>, now: u64, grace: u64) -> NodePlacement {
    let d = a.report;
    NodePlacement {
        node: a.name().to_string(),
        node_status: if a.node_ready { "Ready" } else { "NotReady" }.to_string(),
        should_run: a.verdict.should_run,
        should_continue_running: a.verdict.should_continue_running,
        reasons: a.verdict.reasons.clone(),
        unit: d
            .filter(|_| a.present)
            .map(|d| d.unit.clone())
            .unwrap_or_default(),
        state: d.map_or_else(|| "unknown".to_string(), |d| d.state.clone()),
        ready: a.ready,
        available: a.available,
        updated: a.updated,
        revision: d
            .filter(|_| a.present)
            .map(|d| d.current_revision.clone())
            .unwrap_or_default(),
        restarts: d.map_or(0, |d| d.restarts),
        misscheduled: !a.verdict.should_run && a.present,
        problem: problem(spec, a, now, grace),
        rollout: d.map(|d| d.rollout.clone()).unwrap_or_default(),
    }
}

fn view(spec: &SpecRecord, status: DaemonSetStatus) -> DaemonSetView {
    DaemonSetView {
        name: spec.ds.name.clone(),
        file: spec.file.clone(),
        generation: spec.generation,
        revision: spec.revision.clone(),
        selector: selector_string(spec.ds.selector.as_ref()),
        node_selector: node_selector_string(&spec.ds.template.node_selector),
        update_strategy: spec.ds.update_strategy.kind.clone(),
        created_at: spec.created_at,
        status,
        rollout: None,
    }
}

/// `GET /v1/daemonsets/{name}`: the daemonset with its status, and every node's part in it
/// (all nodes, sorted by name).
pub fn daemonset_detail(
    spec: &SpecRecord,
    nodes: &[NodeRecord],
    now: u64,
    grace: u64,
) -> DaemonSetDetail {
    daemonset_detail_of(spec, records(nodes), now, grace)
}

/// Each record with its own `last_seen`.
fn records(nodes: &[NodeRecord]) -> impl Iterator<Item = (&NodeRecord, u64)> {
    nodes.iter().map(|n| (n, n.last_seen))
}

/// [`daemonset_detail`] over nodes given as `(record, last_seen)`, `last_seen` overriding the
/// record's (a heartbeat moves it without a new record).
pub fn daemonset_detail_of<'a>(
    spec: &SpecRecord,
    nodes: impl IntoIterator<Item = (&'a NodeRecord, u64)>,
    now: u64,
    grace: u64,
) -> DaemonSetDetail {
    let all = assess_all(spec, nodes, now, grace);
    DaemonSetDetail {
        daemonset: view(spec, status(spec, &all)),
        nodes: all
            .iter()
            .map(|a| node_placement(spec, a, now, grace))
            .collect(),
    }
}

/// `GET /v1/daemonsets`: one daemonset with its status; the `daemonset` of
/// [`daemonset_detail`].
pub fn daemonset_view(
    spec: &SpecRecord,
    nodes: &[NodeRecord],
    now: u64,
    grace: u64,
) -> DaemonSetView {
    let all = assess_all(spec, records(nodes), now, grace);
    view(spec, status(spec, &all))
}

/// `GET /v1/daemonsets/{name}/endpoints`: every node where a unit stands for the daemonset
/// (misscheduled ones included, as a pod kept by shouldContinueRunning stays an endpoint),
/// sorted by node name, with the node's addresses, the spec's declared ports and whether the
/// daemon is ready there (node Ready and daemon ready).
///
/// The port is `containerPort`: the daemon is a host process, so the port it listens on is
/// the port clients reach.
pub fn endpoints(spec: &SpecRecord, nodes: &[NodeRecord], now: u64, grace: u64) -> Vec<Endpoint> {
    endpoints_of(spec, records(nodes), now, grace)
}

/// [`endpoints`] over nodes given as `(record, last_seen)` (see [`daemonset_detail_of`]).
pub fn endpoints_of<'a>(
    spec: &SpecRecord,
    nodes: impl IntoIterator<Item = (&'a NodeRecord, u64)>,
    now: u64,
    grace: u64,
) -> Vec<Endpoint> {
    let ports: Vec<EndpointPort> = spec
        .ds
        .template
        .process
        .ports
        .iter()
        .map(|p| EndpointPort {
            name: p.name.clone(),
            port: p.container_port,
            protocol: p.protocol.clone(),
        })
        .collect();
    assess_all(spec, nodes, now, grace)
        .iter()
        .filter(|a| a.present)
        .map(|a| Endpoint {
            node: a.name().to_string(),
            addresses: a.rec.report.node.addresses.clone(),
            ports: ports.clone(),
            ready: a.ready,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The fleet-wide status at scale

/// The time-independent part of one node's assessment against every daemonset in force: what
/// placement says about the node and what its last report says about each daemon.
///
/// It changes only with the node's report or with the specs, so the coordinator computes it
/// once per report (and again after the specs change) and [`daemonset_views`] sums it up at
/// read time with the two things that move on their own: the node's `last_seen` and the
/// clock. [`daemonset_view`] gives the same answer from scratch.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    /// The caller's version of the specs these were computed against (in that order).
    pub specs_version: u64,
    ready_condition_false: bool,
    daemonsets: Vec<DaemonSetFacts>,
}

/// One daemonset on one node; see [`assess`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct DaemonSetFacts {
    should_run: bool,
    present: bool,
    /// The report says the daemon is ready.
    daemon_ready: bool,
    updated: bool,
    /// [`ready_since`], `u64::MAX` when the report has none.
    ready_since: u64,
    /// The generation the node's agent has seen (its term of `observedGeneration`).
    generation: u64,
}

/// The [`NodeFacts`] of the node whose last report is `report`, against `specs` (the order of
/// `specs` is the order [`daemonset_views`] must be given them in), tagged `specs_version`.
pub fn node_facts<'a>(
    specs: impl IntoIterator<Item = &'a SpecRecord>,
    specs_version: u64,
    report: &NodeReport,
) -> NodeFacts {
    node_facts_after(specs, specs_version, report, None)
}

/// [`node_facts`] of a node's new `report`, given the facts of its `previous` report: when
/// those are of the same specs version and the node's name, labels, taints and
/// `unschedulable` did not change (an agent's reports mostly carry new daemon states and
/// metrics), placement's verdicts are taken from them instead of evaluated again.
pub fn node_facts_after<'a>(
    specs: impl IntoIterator<Item = &'a SpecRecord>,
    specs_version: u64,
    report: &NodeReport,
    previous: Option<(&NodeReport, &NodeFacts)>,
) -> NodeFacts {
    let reusable = previous
        .filter(|(prev, facts)| {
            facts.specs_version == specs_version && same_placement_inputs(prev, report)
        })
        .map(|(_, facts)| facts);
    let node = reusable.is_none().then(|| placement_node_of(report));
    let daemonsets = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let should_run = match (reusable, &node) {
                (Some(facts), _) => facts.daemonsets.get(i).is_some_and(|f| f.should_run),
                (None, Some(node)) => placement::decide(&spec.ds, node).0,
                (None, None) => unreachable!("a node when the facts are not reused"),
            };
            let d = report.daemonsets.iter().find(|d| d.name == spec.ds.name);
            let present = unit_present(d);
            DaemonSetFacts {
                should_run,
                present,
                daemon_ready: d.is_some_and(|d| d.ready),
                updated: present && d.is_some_and(|d| d.current_revision == spec.revision),
                ready_since: d.and_then(ready_since).unwrap_or(u64::MAX),
                generation: d.map_or(0, |d| generation_of(spec, &d.desired_revision)),
            }
        })
        .collect();
    NodeFacts {
        specs_version,
        ready_condition_false: ready_condition_false(report),
        daemonsets,
    }
}

/// Whether placement sees the same node in both reports.
fn same_placement_inputs(a: &NodeReport, b: &NodeReport) -> bool {
    let (a, b) = (&a.node, &b.node);
    a.name == b.name
        && a.unschedulable == b.unschedulable
        && a.taints == b.taints
        && a.labels == b.labels
}

/// `GET /v1/daemonsets` from precomputed facts: one view per spec of `specs` (in the order the
/// facts were computed for), each node given as its facts and when it was last heard from.
/// The same views as [`daemonset_view`] for each spec, in time linear in nodes × daemonsets
/// with no allocation per node.
pub fn daemonset_views<F: std::borrow::Borrow<NodeFacts>>(
    specs: &[&SpecRecord],
    nodes: impl IntoIterator<Item = (F, u64)>,
    now: u64,
    grace: u64,
) -> Vec<DaemonSetView> {
    // The hot loop of `GET /v1/daemonsets` (nodes × daemonsets): counted without branches,
    // as the flags vary from one node to the next.
    let mut statuses = vec![DaemonSetStatus::default(); specs.len()];
    let mut observed = vec![u64::MAX; specs.len()];
    let mut any_ready = false;
    let min_ready: Vec<u64> = specs.iter().map(|s| min_ready_seconds(&s.ds)).collect();
    for (facts, last_seen) in nodes {
        let facts: &NodeFacts = facts.borrow();
        let node_ready = heard_within(last_seen, now, grace) && !facts.ready_condition_false;
        any_ready |= node_ready;
        // A node that is not Ready does not hold observedGeneration back.
        let unready = if node_ready { 0 } else { u64::MAX };
        let rows = statuses
            .iter_mut()
            .zip(observed.iter_mut())
            .zip(&min_ready)
            .zip(&facts.daemonsets);
        for (((s, observed), &min_ready), f) in rows {
            let should_run = u64::from(f.should_run);
            let present = u64::from(f.present);
            let ready = f.present & node_ready & f.daemon_ready;
            // IsPodAvailable, as `available` (a missing ready time is u64::MAX).
            let available =
                ready & ((min_ready == 0) | (f.ready_since.saturating_add(min_ready) <= now));
            s.desired_number_scheduled += should_run;
            s.current_number_scheduled += should_run & present;
            s.number_ready += should_run & u64::from(ready);
            s.number_available += should_run & u64::from(available);
            s.updated_number_scheduled += should_run & u64::from(f.updated);
            s.number_misscheduled += (1 - should_run) & present;
            *observed = (*observed).min(f.generation | unready);
        }
    }
    specs
        .iter()
        .zip(statuses)
        .zip(observed)
        .map(|((spec, mut s), observed)| {
            s.number_unavailable = s.desired_number_scheduled - s.number_available;
            s.observed_generation = if any_ready { observed } else { spec.generation };
            view(spec, s)
        })
        .collect()
}

/// `metav1.FormatLabelSelector`: the selector as kubectl prints it
/// (`staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/helpers.go`, `labels.Requirement.String`).
///
/// Requirements sorted by key (stable, matchLabels before matchExpressions on equal keys):
/// `k=v` for matchLabels, `k in (a,b)`, `k notin (a,b)` (values sorted), `k` for Exists, `!k`
/// for DoesNotExist, joined by `,`. `<none>` for a nil selector and for an empty one (their
/// strings are empty); `<error>` for a selector `LabelSelectorAsSelector` rejects.
pub fn selector_string(sel: Option<&LabelSelector>) -> String {
    let Some(sel) = sel else {
        return "<none>".to_string();
    };
    if label_selector_matches(Some(sel), &Labels::new()).is_err() {
        return "<error>".to_string();
    }
    let mut reqs: Vec<(&str, String)> = sel
        .match_labels
        .iter()
        .map(|(k, v)| (k.as_str(), format!("{k}={v}")))
        .collect();
    for e in &sel.match_expressions {
        let values = || {
            let mut v = e.values.clone();
            v.sort();
            v.join(",")
        };
        let s = match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, values()),
            "NotIn" => format!("{} notin ({})", e.key, values()),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => return "<error>".to_string(),
        };
        reqs.push((e.key.as_str(), s));
    }
    reqs.sort_by(|a, b| a.0.cmp(b.0));
    let s: Vec<String> = reqs.into_iter().map(|(_, s)| s).collect();
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.join(",")
    }
}

/// `labels.FormatLabels`: `disktype=ssd,role=web` (keys sorted), `<none>` when empty.
pub fn node_selector_string(ns: &Labels) -> String {
    if ns.is_empty() {
        return "<none>".to_string();
    }
    ns.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_repository_is_the_same_whoever_fetches_it() {
        use super::without_user;
        assert_eq!(
            without_user("https://ci:***@git.example.com/fleet.git"),
            without_user("https://git.example.com/fleet.git")
        );
        assert_eq!(
            without_user("ssh://deploy@h:2222/fleet.git"),
            without_user("ssh://git@h:2222/fleet.git")
        );
        assert_eq!(without_user("git@h:ops/fleet.git"), "h:ops/fleet.git");
        assert_ne!(
            without_user("https://h/a.git"),
            without_user("https://h/b.git")
        );
    }
    use super::*;
    use crate::report::{Condition, NodeInfo};

    fn spec(text: &str, generation: u64, history: Vec<(u64, String)>) -> SpecRecord {
        let loaded = crate::spec::parse_daemonsets("t.toml", text, crate::spec::Format::Toml);
        let (mut items, _) = loaded.into_result().expect("valid spec");
        let ds = items.remove(0);
        let revision = crate::unit::revision(&ds.template);
        SpecRecord {
            ds,
            file: "t.toml".into(),
            revision,
            generation,
            created_at: 0,
            history,
        }
    }

    /// Nodes with every combination the status looks at: placement, presence, readiness,
    /// revisions, start times, Ready conditions and silence.
    fn node(i: usize, specs: &[SpecRecord], now: u64) -> NodeRecord {
        let mut labels = Labels::new();
        labels.insert("zone".into(), format!("z{}", i % 3));
        if i.is_multiple_of(2) {
            labels.insert("disk".into(), "ssd".into());
        }
        let taints = if i % 7 == 3 {
            vec!["dedicated=x:NoSchedule".to_string()]
        } else {
            Vec::new()
        };
        let daemonsets = specs
            .iter()
            .enumerate()
            .filter(|(d, _)| (i + d) % 5 != 4)
            .map(|(d, s)| DaemonSetReport {
                name: s.ds.name.clone(),
                file: String::new(),
                held: false,
                should_run: true,
                should_continue_running: true,
                reasons: Vec::new(),
                unit: if (i + d) % 6 == 5 {
                    String::new()
                } else {
                    crate::unit::unit_name(&s.ds.name)
                },
                state: if (i + d) % 4 == 3 {
                    "absent".into()
                } else {
                    "active/running".into()
                },
                current_revision: if (i + d).is_multiple_of(3) {
                    "old".into()
                } else {
                    s.revision.clone()
                },
                desired_revision: match (i + d) % 4 {
                    0 => "old".into(),
                    1 => String::new(),
                    _ => s.revision.clone(),
                },
                evict_in_seconds: None,
                last_error: String::new(),
                ready: !(i + d).is_multiple_of(9),
                restarts: 0,
                main_pid: 0,
                started_at: (!(i + d).is_multiple_of(8)).then(|| now - (i as u64 % 50)),
                memory_bytes: None,
                cpu_nanoseconds: None,
                ready_since: None,
                readiness: String::new(),
                ..Default::default()
            })
            .collect();
        let condition = match i % 11 {
            0 => vec![Condition {
                kind: "Ready".into(),
                status: "False".into(),
                reason: String::new(),
                message: String::new(),
            }],
            _ => Vec::new(),
        };
        NodeRecord {
            report: NodeReport {
                agent_version: String::new(),
                agent_instance: String::new(),
                sequence: 1,
                generated_at: now,
                node: NodeInfo {
                    name: format!("n{i:03}"),
                    labels,
                    taints,
                    unschedulable: false,
                    addresses: Vec::new(),
                    conditions: condition,
                },
                daemonsets,
                diagnostics: Vec::new(),
                errors: Vec::new(),
                git: None,
            },
            first_seen: 0,
            last_seen: now - (i as u64 * 3) % 60,
        }
    }

    #[test]
    fn views_from_facts_equal_views_from_scratch() {
        let now = 1_000_000;
        let specs = vec![
            spec(
                "name = \"all\"\nselector.matchLabels = { a = \"b\" }\n\
                 template.labels = { a = \"b\" }\ncommand = [\"/x\"]\n",
                1,
                Vec::new(),
            ),
            spec(
                "name = \"ssd\"\nselector.matchLabels = { a = \"c\" }\n\
                 template.labels = { a = \"c\" }\ncommand = [\"/x\"]\n\
                 nodeSelector = { disk = \"ssd\" }\nminReadySeconds = 20\n",
                3,
                vec![(2, "old".into())],
            ),
            spec(
                "name = \"z1\"\nselector.matchLabels = { a = \"d\" }\n\
                 template.labels = { a = \"d\" }\ncommand = [\"/x\"]\n\
                 [[nodeSelectorTerms]]\nmatchExpressions = [{ key = \"zone\", \
                 operator = \"NotIn\", values = [\"z1\"] }]\n\
                 [[tolerations]]\nkey = \"dedicated\"\noperator = \"Exists\"\n",
                2,
                vec![(1, "old".into())],
            ),
        ];
        let refs: Vec<&SpecRecord> = specs.iter().collect();
        for n in [0, 1, 5, 60] {
            let nodes: Vec<NodeRecord> = (0..n).map(|i| node(i, &specs, now)).collect();
            let facts: Vec<NodeFacts> = nodes
                .iter()
                .map(|r| node_facts(refs.iter().copied(), 7, &r.report))
                .collect();
            for grace in [0, 10, 40] {
                let fast = daemonset_views(
                    &refs,
                    facts.iter().zip(nodes.iter().map(|r| r.last_seen)),
                    now,
                    grace,
                );
                let slow: Vec<DaemonSetView> = specs
                    .iter()
                    .map(|s| daemonset_view(s, &nodes, now, grace))
                    .collect();
                assert_eq!(fast, slow, "{n} nodes, grace {grace}");
            }
        }
    }

    #[test]
    fn facts_reuse_verdicts_only_when_placement_sees_the_same_node() {
        let now = 1_000_000;
        let specs = vec![spec(
            "name = \"ssd\"\nselector.matchLabels = { a = \"c\" }\n\
             template.labels = { a = \"c\" }\ncommand = [\"/x\"]\n\
             nodeSelector = { disk = \"ssd\" }\n",
            1,
            Vec::new(),
        )];
        let refs: Vec<&SpecRecord> = specs.iter().collect();
        let ssd = node(0, &specs, now);
        let facts = node_facts(refs.iter().copied(), 1, &ssd.report);
        assert!(facts.daemonsets[0].should_run);
        // Same node, new daemon states: the verdicts carry over.
        let mut again = ssd.report.clone();
        again.sequence += 1;
        let reused = node_facts_after(refs.iter().copied(), 1, &again, Some((&ssd.report, &facts)));
        assert_eq!(reused, node_facts(refs.iter().copied(), 1, &again));
        // The label placement reads changed: evaluated again.
        let mut hdd = again.clone();
        hdd.node.labels.remove("disk");
        let after = node_facts_after(refs.iter().copied(), 1, &hdd, Some((&ssd.report, &facts)));
        assert!(!after.daemonsets[0].should_run);
        // Facts of another version of the specs are not reused.
        let other = node_facts_after(refs.iter().copied(), 2, &hdd, Some((&hdd, &facts)));
        assert!(!other.daemonsets[0].should_run);
    }
}
