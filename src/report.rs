//! What an agent says about its node: the wire and file format shared by the
//! agent (which writes it to `/run/hostset/status.json` on every pass), the
//! `hostset status` command, and later the coordinator.
//!
//! Field names are camelCase, like the Kubernetes objects they echo.

use serde::{Deserialize, Serialize};

use crate::spec::Labels;

/// The agent's view of its node and of every daemonset it knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    /// hostset version of the agent.
    pub agent_version: String,
    /// Seconds since the Unix epoch when the report was made.
    pub generated_at: u64,
    pub node: NodeInfo,
    pub daemonsets: Vec<DaemonSetReport>,
    /// Problems with spec files and the node file, as `FILE:LINE:COL: PATH: message`.
    pub diagnostics: Vec<String>,
    /// Failures talking to systemd in the last pass.
    pub errors: Vec<String>,
}

/// The node as placement sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    /// `key=value:Effect` strings.
    pub taints: Vec<String>,
    pub unschedulable: bool,
}

/// One daemonset on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetReport {
    pub name: String,
    /// The spec file it comes from; empty for a unit whose spec is gone.
    pub file: String,
    /// True when the file is invalid now and this is its last valid version
    /// (or, with no valid version known, when its unit is left untouched).
    pub held: bool,
    pub should_run: bool,
    pub should_continue_running: bool,
    /// Why not, when either answer is false.
    pub reasons: Vec<String>,
    /// `hostset-<name>.service`, or the adopted orphan's unit.
    pub unit: String,
    /// `active/running`, `absent`, ...
    pub state: String,
    pub current_revision: String,
    pub desired_revision: String,
    /// Seconds until an eviction by a NoExecute taint with tolerationSeconds.
    pub evict_in_seconds: Option<u64>,
    /// The last failure starting or stopping its unit, if any.
    pub last_error: String,
}
