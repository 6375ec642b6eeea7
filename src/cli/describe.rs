//! `hostset describe daemonset|node NAME`: one object from the coordinator in detail, as
//! `kubectl describe` prints it, with the reasons behind every node that is not as it
//! should be.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::anyhow;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{DaemonSetDetail, NodePlacement, NodeView};

use super::client::{Client, CoordinatorArgs, Subject};
use super::get::{labels_of, node_status};
use super::output::{DataFormat, indented_table, now, or_none, print_data, timestamp_with_age};

/// Show a daemonset or a node in detail, as kubectl describe does.
///
/// A daemonset: its selectors, strategy and revision, Kubernetes' status counters, every
/// node with its part in it, and why the daemon does not run (or is not ready or not
/// updated) where it should, and runs where it should not.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hostset describe daemonset log-collector
  hostset describe ds log-collector -o yaml
  hostset describe node db-1")]
pub struct Args {
    #[command(subcommand)]
    pub resource: Resource,
}

#[derive(Debug, clap::Subcommand)]
pub enum Resource {
    /// A daemonset: status counters, every node's part, and what is wrong where.
    #[command(
        name = "daemonset",
        visible_aliases = ["daemonsets", "ds"],
        after_help = "\
Examples:
  hostset describe daemonset log-collector
  hostset describe ds log-collector -o json | jq '.nodes[] | select(.problem != \"\")'"
    )]
    Daemonset(NameArgs),
    /// A node: labels, taints, addresses, its agent, and the daemonsets it reports.
    #[command(
        name = "node",
        visible_aliases = ["nodes", "no"],
        after_help = "\
Examples:
  hostset describe node db-1"
    )]
    Node(NameArgs),
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Output format [default: text for people].
    #[arg(short, long, value_enum, value_name = "FORMAT")]
    pub output: Option<DataFormat>,
}

pub fn run(args: Args, coordinator: &CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(coordinator)?;
    match args.resource {
        Resource::Daemonset(a) => {
            let subject = Subject {
                kind: "daemonset",
                name: &a.name,
            };
            let detail: DaemonSetDetail = client.get(&["daemonsets", &a.name], Some(subject))?;
            match a.output {
                Some(format) => print_data(&detail, format)?,
                None => print!("{}", describe_daemonset(&detail, now())),
            }
        }
        Resource::Node(a) => {
            let detail = node_detail(&client, &a.name)?;
            match a.output {
                Some(format) => print_data(&detail.raw, format)?,
                None => print!("{}", describe_node(&detail, now())),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `Title:` fields aligned in one block, kubectl's way (two spaces after the longest
/// title); a field with several values continues on lines of its own.
struct Fields(Vec<(String, Vec<String>)>);

impl Fields {
    fn new() -> Self {
        Fields(Vec::new())
    }

    fn one(&mut self, title: &str, value: impl Into<String>) -> &mut Self {
        self.0.push((title.to_string(), vec![value.into()]));
        self
    }

    fn many(&mut self, title: &str, values: Vec<String>) -> &mut Self {
        self.0.push((title.to_string(), values));
        self
    }

    fn render(&self, out: &mut String) {
        let width = self.0.iter().map(|(t, _)| t.len() + 1).max().unwrap_or(0) + 2;
        for (title, values) in &self.0 {
            let mut values = values.iter();
            let first = values.next().map_or("<none>", String::as_str);
            let _ = writeln!(out, "{:<width$}{first}", format!("{title}:"));
            for v in values {
                let _ = writeln!(out, "{:<width$}{v}", "");
            }
        }
    }
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

const RUNNING: &str = "active/running";

/// Why a node that should run the daemon is not as it should be: the coordinator's `problem`,
/// else what the fields say. `None` when it runs, ready and up to date.
fn shortfall(p: &NodePlacement, revision: &str) -> Option<String> {
    if !p.should_run {
        return None;
    }
    let problem = if !p.problem.is_empty() {
        p.problem.clone()
    } else if p.state != RUNNING {
        format!("not running (state {})", dash(&p.state))
    } else if !p.ready {
        "running, not ready".to_string()
    } else if !p.updated {
        format!("runs revision {}, not {revision}", dash(&p.revision))
    } else {
        return None;
    };
    Some(problem)
}

/// The text of `describe daemonset`.
pub(super) fn describe_daemonset(detail: &DaemonSetDetail, now: u64) -> String {
    let ds = &detail.daemonset;
    let s = &ds.status;
    let mut out = String::new();
    Fields::new()
        .one("Name", &ds.name)
        .one("File", or_none(&ds.file))
        .one("Selector", or_none(&ds.selector))
        .one("Node-Selector", or_none(&ds.node_selector))
        .one("Update Strategy", or_none(&ds.update_strategy))
        .one("Revision", or_none(&ds.revision))
        .one(
            "Generation",
            format!("{} (observed: {})", ds.generation, s.observed_generation),
        )
        .one("Created", timestamp_with_age(ds.created_at, now))
        .render(&mut out);
    let _ = writeln!(
        out,
        "Desired Number of Nodes Scheduled: {}",
        s.desired_number_scheduled
    );
    let _ = writeln!(
        out,
        "Current Number of Nodes Scheduled: {}",
        s.current_number_scheduled
    );
    let _ = writeln!(
        out,
        "Number of Nodes Scheduled with Up-to-date Daemons: {}",
        s.updated_number_scheduled
    );
    let _ = writeln!(
        out,
        "Number of Nodes Scheduled with Available Daemons: {}",
        s.number_available
    );
    let _ = writeln!(
        out,
        "Number of Nodes Misscheduled: {}",
        s.number_misscheduled
    );

    if let Some(r) = &ds.rollout {
        let p = &r.progress;
        let pinned = r
            .pinned_revision
            .map(|n| format!(" (pinned to revision {n} by the coordinator)"))
            .unwrap_or_default();
        let _ = writeln!(out, "Rollout:");
        let _ = writeln!(out, "  Revision:  {}{pinned}", r.revision_number);
        let _ = writeln!(
            out,
            "  Budget:    maxUnavailable {}, maxSurge {}{}",
            p.max_unavailable,
            p.max_surge,
            if r.paused { " (paused)" } else { "" }
        );
        for c in &r.conditions {
            let _ = writeln!(
                out,
                "  {}:  {} {}: {}",
                c.kind, c.status, c.reason, c.message
            );
        }
        for (what, nodes) in [
            ("In progress", &p.in_progress),
            ("Waiting", &p.waiting),
            ("Skipped (silent)", &p.skipped),
            ("Spec differs", &p.spec_differs),
        ] {
            if !nodes.is_empty() {
                let _ = writeln!(out, "  {what}:  {}", nodes.join(", "));
            }
        }
    }

    // kubectl's "Pods Status" counts the daemonset's pods by phase; here, the daemons on
    // nodes that should run one or have one: running, failed, or anything else (not there
    // yet, starting, stopping) as waiting.
    let (mut running, mut waiting, mut failed) = (0, 0, 0);
    for p in &detail.nodes {
        let has_unit = !p.unit.is_empty() || (!p.state.is_empty() && p.state != "absent");
        if !p.should_run && !has_unit {
            continue;
        }
        if p.state == RUNNING {
            running += 1;
        } else if p.state.starts_with("failed") {
            failed += 1;
        } else {
            waiting += 1;
        }
    }
    let _ = writeln!(
        out,
        "Daemons Status:  {running} Running / {waiting} Waiting / {failed} Failed"
    );

    if detail.nodes.is_empty() {
        out.push_str("Nodes:  <none>\n");
    } else {
        out.push_str("Nodes:\n");
        let mut rows = vec![
            [
                "NODE",
                "STATUS",
                "SHOULD-RUN",
                "STATE",
                "READY",
                "REVISION",
                "RESTARTS",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for p in &detail.nodes {
            rows.push(vec![
                p.node.clone(),
                dash(&p.node_status),
                p.should_run.to_string(),
                dash(&p.state),
                p.ready.to_string(),
                dash(&p.revision),
                p.restarts.to_string(),
            ]);
        }
        out.push_str(&indented_table(&rows, "  "));
    }

    let short: Vec<String> = detail
        .nodes
        .iter()
        .filter_map(|p| shortfall(p, &ds.revision).map(|why| format!("  {}: {why}", p.node)))
        .collect();
    section(&mut out, "Not running where it should", &short);

    let mis: Vec<String> = detail
        .nodes
        .iter()
        .filter(|p| p.misscheduled)
        .map(|p| {
            let why = if p.reasons.is_empty() {
                "should not run there".to_string()
            } else {
                p.reasons.join("; ")
            };
            let kept = if p.should_continue_running {
                " (kept running: shouldContinueRunning)"
            } else {
                ""
            };
            format!("  {}: {why}{kept}", p.node)
        })
        .collect();
    section(&mut out, "Misscheduled", &mis);
    out
}

fn section(out: &mut String, title: &str, lines: &[String]) {
    if lines.is_empty() {
        let _ = writeln!(out, "{title}:  <none>");
    } else {
        let _ = writeln!(out, "{title}:");
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// `GET /v1/nodes/{name}`: the node's [`NodeView`] and the daemonsets of its last report.
///
/// Read leniently: the view either is the answer or is its `node` field, and the daemonsets
/// are `daemonsets` or `report.daemonsets` (each an agent's `DaemonSetReport`, or anything
/// with a `name` or `daemonset` and the same field names).
pub(super) struct NodeDetail {
    pub node: NodeView,
    pub daemonsets: Vec<NodeDaemon>,
    /// The answer as served, for `-o json|yaml`.
    pub raw: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct NodeDaemon {
    #[serde(alias = "daemonset")]
    pub name: String,
    pub held: bool,
    pub should_run: Option<bool>,
    pub reasons: Vec<String>,
    pub unit: String,
    pub state: String,
    pub ready: bool,
    #[serde(alias = "revision")]
    pub current_revision: String,
    pub desired_revision: String,
    pub restarts: u32,
    pub last_error: String,
    pub problem: String,
}

pub(super) fn node_detail(client: &Client, name: &str) -> anyhow::Result<NodeDetail> {
    let subject = Subject { kind: "node", name };
    let raw: Value = client.get(&["nodes", name], Some(subject))?;
    parse_node_detail(raw).map_err(|e| {
        anyhow!(
            "the coordinator at {} answered GET /v1/nodes/{name} with something this hostset \
             does not understand ({e}); are the coordinator and the CLI the same version?",
            client.url()
        )
    })
}

fn parse_node_detail(raw: Value) -> Result<NodeDetail, serde_json::Error> {
    let view = match raw.get("node") {
        Some(n) if n.get("status").is_some_and(Value::is_string) => n.clone(),
        _ => raw.clone(),
    };
    let node: NodeView = serde_json::from_value(view)?;
    let list = [raw.get("daemonsets"), raw.pointer("/report/daemonsets")]
        .into_iter()
        .flatten()
        .find(|v| v.is_array());
    let daemonsets = match list {
        Some(v) => serde_json::from_value(v.clone())?,
        None => Vec::new(),
    };
    Ok(NodeDetail {
        node,
        daemonsets,
        raw,
    })
}

/// The text of `describe node`.
pub(super) fn describe_node(detail: &NodeDetail, now: u64) -> String {
    let n = &detail.node;
    let mut out = String::new();
    let mut fields = Fields::new();
    fields
        .one("Name", &n.name)
        .one("Status", node_status(n))
        .many("Labels", labels_of(n))
        .many("Taints", n.taints.clone())
        .one("Unschedulable", n.unschedulable.to_string())
        .many("Addresses", n.addresses.clone())
        .one("Agent Version", or_none(&n.agent_version));
    // [source.git]: the commit the node's agent has in force.
    if !n.commit.is_empty() {
        fields.one("Git Commit", &n.commit);
    }
    fields
        .one("First Seen", timestamp_with_age(n.first_seen, now))
        .one("Last Seen", timestamp_with_age(n.last_seen, now))
        .one("Daemons", n.daemons.to_string())
        .render(&mut out);
    if detail.daemonsets.is_empty() {
        out.push_str("DaemonSets:  <none>\n");
        return out;
    }
    out.push_str("DaemonSets:\n");
    let mut rows = vec![
        [
            "NAME",
            "SHOULD-RUN",
            "STATE",
            "READY",
            "REVISION",
            "RESTARTS",
            "WHY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for d in &detail.daemonsets {
        let revision = if d.current_revision.is_empty() || d.desired_revision.is_empty() {
            format!("{}{}", d.current_revision, d.desired_revision)
        } else if d.current_revision == d.desired_revision {
            d.current_revision.clone()
        } else {
            format!("{}→{}", d.current_revision, d.desired_revision)
        };
        let mut why: Vec<String> = Vec::new();
        if d.held {
            why.push("spec file invalid, last valid version kept".to_string());
        }
        why.extend(d.reasons.iter().cloned());
        for extra in [&d.problem, &d.last_error] {
            if !extra.is_empty() && !why.contains(extra) {
                why.push(extra.clone());
            }
        }
        rows.push(vec![
            d.name.clone(),
            d.should_run.map_or("-".to_string(), |b| b.to_string()),
            dash(&d.state),
            d.ready.to_string(),
            dash(&revision),
            d.restarts.to_string(),
            dash(&why.join("; ")),
        ]);
    }
    out.push_str(&indented_table(&rows, "  "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view() -> Value {
        json!({
            "name": "db-1", "status": "Ready", "labels": {"a": "b"}, "taints": [],
            "unschedulable": false, "addresses": ["10.0.0.1"], "agentVersion": "0.1.0",
            "daemons": 1, "firstSeen": 100, "lastSeen": 200
        })
    }

    #[test]
    fn node_detail_shapes() {
        let ds = json!([{"name": "log-collector", "shouldRun": true, "state": "active/running",
                          "ready": true, "currentRevision": "r1", "desiredRevision": "r1",
                          "restarts": 2, "reasons": [], "lastError": "", "held": false,
                          "unit": "hostset-log-collector.service", "file": "/x.toml"}]);
        // Flat, with the daemonsets beside the view.
        let mut flat = view();
        flat["daemonsets"] = ds.clone();
        let d = parse_node_detail(flat).unwrap();
        assert_eq!(d.node.name, "db-1");
        assert_eq!(d.daemonsets[0].restarts, 2);
        // Nested, with the agent's report.
        let nested =
            json!({"node": view(), "report": {"daemonsets": ds, "node": {"name": "db-1"}}});
        let d = parse_node_detail(nested).unwrap();
        assert_eq!(d.node.last_seen, 200);
        assert_eq!(d.daemonsets[0].name, "log-collector");
        // Just the view.
        let d = parse_node_detail(view()).unwrap();
        assert!(d.daemonsets.is_empty());
        // Not a node.
        assert!(parse_node_detail(json!({"error": "x"})).is_err());
    }
}
