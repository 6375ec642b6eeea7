//! The coordinator's read API (`/v1`), shared by the coordinator, the CLI and
//! tests. JSON, camelCase like Kubernetes; the status fields carry Kubernetes'
//! own names and definitions (`DaemonSetStatus`, see shared notes §9).

use serde::{Deserialize, Serialize};

use crate::spec::Labels;

/// `GET /v1/daemonsets` returns a list of these; `GET /v1/daemonsets/{name}` one
/// [`DaemonSetDetail`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetView {
    pub name: String,
    /// The spec file the coordinator read it from.
    pub file: String,
    /// Increases each time the spec's content changes (`metadata.generation`).
    pub generation: u64,
    /// The revision (template hash) of the current spec.
    pub revision: String,
    /// The selector in kubectl's form (`app=x,tier in (a,b)`).
    pub selector: String,
    /// `nodeSelector` in kubectl's form (`disktype=ssd`), `<none>` when empty.
    pub node_selector: String,
    /// `RollingUpdate` or `OnDelete`.
    pub update_strategy: String,
    /// Seconds since the epoch when the coordinator first saw this daemonset.
    pub created_at: u64,
    pub status: DaemonSetStatus,
    /// The rolling update (RollingUpdate daemonsets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
}

/// A daemonset's rolling update as the coordinator paces it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// The number of the revision in force (`hostset rollout history`).
    pub revision_number: u64,
    /// `hostset rollout pause`.
    pub paused: bool,
    /// The coordinator runs this revision number instead of the spec file's (`rollout undo`,
    /// automatic rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_revision: Option<u64>,
    /// Slots, waiting, skipped and unavailable nodes.
    pub progress: crate::rollout::Progress,
    /// Why the rollout stopped by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt: Option<crate::rollout::Halt>,
    /// The last automatic rollback, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<crate::rollout::Halt>,
    /// Deployment-style conditions: `Progressing` (`NewRevisionRolling`, `RolloutComplete`,
    /// `ProgressDeadlineExceeded`, `RolloutPaused`, `RolledBack`).
    pub conditions: Vec<RolloutCondition>,
}

/// A condition of a rollout, as in a Deployment's `status.conditions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCondition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// `GET /v1/daemonsets/{name}/history`: one per revision kept, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    pub number: u64,
    /// The template hash.
    pub revision: String,
    pub created_at: u64,
    /// The revision in force.
    pub current: bool,
    pub file: String,
    /// The git commit it came from (`[source.git]`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    /// The spec file's text (only with `?revision=N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `POST /v1/daemonsets/{name}/rollout/undo`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UndoRequest {
    /// The revision number to return to; the one before the current when absent.
    #[serde(default)]
    pub to_revision: Option<u64>,
}

/// Kubernetes' `DaemonSetStatus`, with Kubernetes' definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetStatus {
    /// Nodes that should run the daemon (`shouldRun`).
    pub desired_number_scheduled: u64,
    /// Nodes that should run it and run it.
    pub current_number_scheduled: u64,
    /// Nodes that run it but should not (`!shouldRun`, even when kept by shouldContinueRunning).
    pub number_misscheduled: u64,
    /// Nodes that should run it whose daemon is ready.
    pub number_ready: u64,
    /// Nodes that should run it whose daemon runs the current revision.
    pub updated_number_scheduled: u64,
    /// Nodes that should run it whose daemon has been ready for minReadySeconds.
    pub number_available: u64,
    /// `desiredNumberScheduled - numberAvailable`.
    pub number_unavailable: u64,
    /// The generation all reporting agents have seen.
    pub observed_generation: u64,
}

/// One node's part in a daemonset (`hostset describe daemonset`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlacement {
    pub node: String,
    /// The node's status: `Ready`, `NotReady`.
    pub node_status: String,
    /// As the coordinator computes it from the node's labels and taints and
    /// its own copy of the spec.
    pub should_run: bool,
    pub should_continue_running: bool,
    /// Why not (placement reasons), when either is false.
    pub reasons: Vec<String>,
    /// The unit running it there, if any.
    pub unit: String,
    /// `active/running`, `absent`, ...
    pub state: String,
    pub ready: bool,
    pub available: bool,
    /// The daemon runs the current revision.
    pub updated: bool,
    /// The revision the node runs.
    pub revision: String,
    pub restarts: u32,
    /// Runs there but should not.
    pub misscheduled: bool,
    /// For a node that should run it and does not (or not ready, or not
    /// updated): why, in one sentence (agent's last error, held spec, node
    /// silent, agent lagging behind the spec...).
    pub problem: String,
    /// The rolling update on this node: empty, `waiting`, `replacing` or `surging`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rollout: String,
}

/// `GET /v1/daemonsets/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetDetail {
    pub daemonset: DaemonSetView,
    pub nodes: Vec<NodePlacement>,
}

/// `GET /v1/nodes` returns a list of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    /// `Ready`, or `NotReady` when its agent has been silent for longer than the grace period.
    pub status: String,
    pub labels: Labels,
    /// `key=value:Effect`.
    pub taints: Vec<String>,
    pub unschedulable: bool,
    pub addresses: Vec<String>,
    pub agent_version: String,
    /// Daemons running there (units active).
    pub daemons: u64,
    /// Seconds since the epoch.
    pub first_seen: u64,
    pub last_seen: u64,
    /// `[source.git]`: the commit the node's agent has in force; empty when it follows no
    /// repository (or has applied no commit yet).
    #[serde(default)]
    pub commit: String,
}

/// `GET /v1/daemonsets/{name}/endpoints` returns a list of these: where the
/// daemon runs, with the node's addresses and the declared ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub node: String,
    pub addresses: Vec<String>,
    pub ports: Vec<EndpointPort>,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    pub name: String,
    pub port: i64,
    pub protocol: String,
}

/// An error body: `{"error": "..."}` with the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// `GET /v1/source`: the repository the coordinator follows (`[source.git]`) and the nodes
/// behind its head.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceView {
    /// The coordinator's own follower; `None` without `[source.git]`.
    pub git: Option<crate::report::GitReport>,
    /// Nodes following the same repository and reference whose commit in force is not the
    /// head the coordinator fetched last, by name.
    pub lagging: Vec<LaggingNode>,
    /// Nodes following the same repository and reference at the head.
    pub current: u64,
}

/// A node behind the branch head.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaggingNode {
    pub node: String,
    /// Its commit in force (empty: none yet).
    pub commit: String,
    /// The head it saw at its last fetch.
    pub head: String,
    /// Why it is behind, as far as it says: its fetch error or the refusal of the head.
    pub reason: String,
}
