//! `GET /metrics`: Prometheus text format (version 0.0.4), named after kube-state-metrics'
//! DaemonSet and Node metrics with the `hostset_` prefix, plus the coordinator's own counters.
//!
//! | metric | type | labels | value |
//! |---|---|---|---|
//! | `hostset_daemonset_status_desired_number_scheduled` | gauge | `daemonset` | `desiredNumberScheduled` |
//! | `hostset_daemonset_status_current_number_scheduled` | gauge | `daemonset` | `currentNumberScheduled` |
//! | `hostset_daemonset_status_number_misscheduled` | gauge | `daemonset` | `numberMisscheduled` |
//! | `hostset_daemonset_status_number_ready` | gauge | `daemonset` | `numberReady` |
//! | `hostset_daemonset_status_updated_number_scheduled` | gauge | `daemonset` | `updatedNumberScheduled` |
//! | `hostset_daemonset_status_number_available` | gauge | `daemonset` | `numberAvailable` |
//! | `hostset_daemonset_status_number_unavailable` | gauge | `daemonset` | `numberUnavailable` |
//! | `hostset_daemonset_metadata_generation` | gauge | `daemonset` | `generation` |
//! | `hostset_daemonset_status_observed_generation` | gauge | `daemonset` | `observedGeneration` |
//! | `hostset_node_status_ready` | gauge | `node` | 1 when Ready, else 0 |
//! | `hostset_node_last_seen_timestamp_seconds` | gauge | `node` | last report or heartbeat, seconds since the epoch |
//! | `hostset_coordinator_reports_total` | counter | | full reports stored |
//! | `hostset_coordinator_heartbeats_total` | counter | | heartbeats accepted |
//! | `hostset_coordinator_rejected_requests_total` | counter | `reason` | requests answered with an error, by [`Reason`] |
//!
//! With `[source.git]`, also (labels `url`, `ref`):
//!
//! | metric | type | value |
//! |---|---|---|
//! | `hostset_git_fetch_ok` | gauge | 1 when the coordinator's last fetch worked, else 0 |
//! | `hostset_git_last_fetch_timestamp_seconds` | gauge | the last successful fetch (0: none) |
//! | `hostset_git_head_refused` | gauge | 1 when the head is refused (invalid, unsigned), else 0 |
//! | `hostset_git_nodes_lagging` | gauge | nodes following the repository that do not run its head |
//! | `hostset_git_nodes_current` | gauge | nodes following the repository that run its head |
//!
//! Counters count since the coordinator started. Label values are escaped as the format
//! requires (`\\`, `\"`, `\n`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::{DaemonSetStatus, DaemonSetView};
use crate::fleet::{self, NodeRecord, SpecRecord};

/// Why a request was refused: the `reason` label of
/// `hostset_coordinator_rejected_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 401: no token, a malformed header, an unknown token.
    Unauthorized,
    /// 403: a token without the right.
    Forbidden,
    /// 400: a body that is not a valid report or heartbeat.
    Invalid,
    /// 413: a body over the limit.
    TooLarge,
    /// 409 to a report: an older sequence of the same agent instance.
    Stale,
    /// 409 to a heartbeat: unknown node, other instance or sequence.
    Conflict,
    /// 404: no such daemonset, node or path.
    NotFound,
    /// 500: the store could not be written.
    Internal,
    /// Any other error status (405, ...).
    Other,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Unauthorized,
        Reason::Forbidden,
        Reason::Invalid,
        Reason::TooLarge,
        Reason::Stale,
        Reason::Conflict,
        Reason::NotFound,
        Reason::Internal,
        Reason::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unauthorized => "unauthorized",
            Reason::Forbidden => "forbidden",
            Reason::Invalid => "invalid",
            Reason::TooLarge => "too_large",
            Reason::Stale => "stale",
            Reason::Conflict => "conflict",
            Reason::NotFound => "not_found",
            Reason::Internal => "internal",
            Reason::Other => "other",
        }
    }
}

/// The coordinator's counters.
#[derive(Debug, Default)]
pub struct Counters {
    reports: AtomicU64,
    heartbeats: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
}

impl Counters {
    pub fn report(&self) {
        self.reports.fetch_add(1, Ordering::Relaxed);
    }

    pub fn heartbeat(&self) {
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, reason: Reason) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The metrics page for these specs and nodes at `now`.
pub fn render(
    specs: &[&SpecRecord],
    nodes: &[NodeRecord],
    now: u64,
    grace: u64,
    counters: &Counters,
) -> String {
    let views: Vec<DaemonSetView> = specs
        .iter()
        .map(|s| fleet::daemonset_view(s, nodes, now, grace))
        .collect();
    let nodes: Vec<NodeSample<'_>> = nodes
        .iter()
        .map(|n| NodeSample {
            name: &n.report.node.name,
            ready: fleet::node_ready(n, now, grace),
            last_seen: n.last_seen,
        })
        .collect();
    render_views(&views, &nodes, counters)
}

/// What the page says about one node.
pub struct NodeSample<'a> {
    pub name: &'a str,
    pub ready: bool,
    pub last_seen: u64,
}

/// [`render`] from the daemonsets' views (as `GET /v1/daemonsets` has them) and the nodes.
pub fn render_views(
    views: &[DaemonSetView],
    nodes: &[NodeSample<'_>],
    counters: &Counters,
) -> String {
    let statuses: Vec<(&str, u64, DaemonSetStatus)> = views
        .iter()
        .map(|v| (v.name.as_str(), v.generation, v.status))
        .collect();
    let mut out = String::new();
    type Field = fn(u64, &DaemonSetStatus) -> u64;
    let daemonset_gauges: [(&str, &str, Field); 9] = [
        (
            "status_desired_number_scheduled",
            "The number of nodes that should be running the daemon.",
            |_, s| s.desired_number_scheduled,
        ),
        (
            "status_current_number_scheduled",
            "The number of nodes running at least one daemon and that are supposed to.",
            |_, s| s.current_number_scheduled,
        ),
        (
            "status_number_misscheduled",
            "The number of nodes running a daemon but are not supposed to.",
            |_, s| s.number_misscheduled,
        ),
        (
            "status_number_ready",
            "The number of nodes that should be running the daemon and have it running and ready.",
            |_, s| s.number_ready,
        ),
        (
            "status_updated_number_scheduled",
            "The total number of nodes that are running the updated daemon.",
            |_, s| s.updated_number_scheduled,
        ),
        (
            "status_number_available",
            "The number of nodes that should be running the daemon and have it running and available.",
            |_, s| s.number_available,
        ),
        (
            "status_number_unavailable",
            "The number of nodes that should be running the daemon and have none running and available.",
            |_, s| s.number_unavailable,
        ),
        (
            "metadata_generation",
            "Sequence number representing a specific generation of the desired state.",
            |g, _| g,
        ),
        (
            "status_observed_generation",
            "The most recent generation observed by the agents of every Ready node.",
            |_, s| s.observed_generation,
        ),
    ];
    for (name, help, field) in daemonset_gauges {
        family(
            &mut out,
            &format!("hostset_daemonset_{name}"),
            help,
            "gauge",
        );
        for (ds, generation, status) in &statuses {
            sample(
                &mut out,
                &format!("hostset_daemonset_{name}"),
                &[("daemonset", ds)],
                field(*generation, status),
            );
        }
    }

    type NodeValue = fn(&NodeSample<'_>) -> u64;
    let node_gauges: [(&str, &str, NodeValue); 2] = [
        (
            "hostset_node_status_ready",
            "Whether the node is Ready: its agent reported within the grace period (1) or not (0).",
            |n| u64::from(n.ready),
        ),
        (
            "hostset_node_last_seen_timestamp_seconds",
            "When the node's agent last reported or sent a heartbeat, in seconds since the epoch.",
            |n| n.last_seen,
        ),
    ];
    for (name, help, value) in node_gauges {
        family(&mut out, name, help, "gauge");
        for n in nodes {
            sample(&mut out, name, &[("node", n.name)], value(n));
        }
    }

    let counted = [
        (
            "hostset_coordinator_reports_total",
            "Full node reports stored since the coordinator started.",
            &counters.reports,
        ),
        (
            "hostset_coordinator_heartbeats_total",
            "Heartbeats accepted since the coordinator started.",
            &counters.heartbeats,
        ),
    ];
    for (name, help, value) in counted {
        family(&mut out, name, help, "counter");
        sample(&mut out, name, &[], value.load(Ordering::Relaxed));
    }
    family(
        &mut out,
        "hostset_coordinator_rejected_requests_total",
        "Requests answered with an error since the coordinator started, by reason.",
        "counter",
    );
    for reason in Reason::ALL {
        sample(
            &mut out,
            "hostset_coordinator_rejected_requests_total",
            &[("reason", reason.as_str())],
            counters.rejected[reason as usize].load(Ordering::Relaxed),
        );
    }
    out
}

/// The `[source.git]` gauges (see the [module docs](self)), appended to `out`.
pub fn render_git(out: &mut String, git: &crate::report::GitReport, lagging: u64, current: u64) {
    let labels = [("url", git.url.as_str()), ("ref", git.reference.as_str())];
    let gauges: [(&str, &str, u64); 5] = [
        (
            "hostset_git_fetch_ok",
            "Whether the coordinator's last fetch of the repository worked (1) or not (0).",
            u64::from(git.fetch_error.is_empty() && git.fetched_at.is_some()),
        ),
        (
            "hostset_git_last_fetch_timestamp_seconds",
            "When the repository was last fetched successfully, in seconds since the epoch.",
            git.fetched_at.unwrap_or(0),
        ),
        (
            "hostset_git_head_refused",
            "Whether the head commit is refused (an invalid spec, a missing or bad signature).",
            u64::from(!git.refused.is_empty()),
        ),
        (
            "hostset_git_nodes_lagging",
            "Nodes following the repository whose commit in force is not the head.",
            lagging,
        ),
        (
            "hostset_git_nodes_current",
            "Nodes following the repository that run its head.",
            current,
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, help, "gauge");
        sample(out, name, &labels, value);
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the text format writes it: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let mut out = String::new();
        sample(&mut out, "m", &[("node", "q\"x"), ("b", "2")], 7);
        assert_eq!(out, "m{node=\"q\\\"x\",b=\"2\"} 7\n");
    }

    #[test]
    fn empty_fleet_still_has_every_family() {
        let c = Counters::default();
        c.rejected(Reason::Forbidden);
        c.report();
        let text = render(&[], &[], 0, 40, &c);
        assert!(text.contains("# TYPE hostset_daemonset_status_number_ready gauge\n"));
        assert!(text.contains("hostset_coordinator_reports_total 1\n"));
        assert!(
            text.contains("hostset_coordinator_rejected_requests_total{reason=\"forbidden\"} 1\n")
        );
        assert!(text.contains("hostset_coordinator_rejected_requests_total{reason=\"stale\"} 0\n"));
    }
}
