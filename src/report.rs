//! What an agent says about its node: the wire and file format shared by the
//! agent (which writes it to `/run/hostset/status.json` on every pass and
//! sends it to the coordinator: `POST /v1/reports`), the `hostset status`
//! command, and the coordinator.
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
    /// Random per agent process start: a coordinator that sees a new instance
    /// knows the agent restarted (and its sequence numbers restarted).
    #[serde(default)]
    pub agent_instance: String,
    /// Increases with every report of one agent instance.
    #[serde(default)]
    pub sequence: u64,
    /// Seconds since the Unix epoch when the report was made.
    pub generated_at: u64,
    pub node: NodeInfo,
    pub daemonsets: Vec<DaemonSetReport>,
    /// Problems with spec files and the node file, as `FILE:LINE:COL: PATH: message`.
    pub diagnostics: Vec<String>,
    /// Failures talking to systemd in the last pass.
    pub errors: Vec<String>,
    /// `[source.git]`: the commit in force and how following the repository goes; absent
    /// when the agent follows no repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitReport>,
}

/// How a daemon (agent or coordinator) follows its `[source.git]` repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitReport {
    /// The repository URL, as configured.
    pub url: String,
    /// The reference followed: `refs/heads/main`, `refs/tags/v1`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The commit in force (full id); empty when no commit has been applied yet.
    pub commit: String,
    /// When the commit in force was committed (committer time, seconds since the epoch).
    #[serde(default)]
    pub committed_at: Option<u64>,
    /// With signature verification: the principal of the allowed signer whose key signed the
    /// commit in force (`alice@example.com`); empty without verification.
    #[serde(default)]
    pub signed_by: String,
    /// The commit the reference pointed to at the last successful fetch; empty before one.
    pub head: String,
    /// When the last fetch succeeded.
    #[serde(default)]
    pub fetched_at: Option<u64>,
    /// When the last fetch was tried.
    #[serde(default)]
    pub attempted_at: Option<u64>,
    /// How many fetches were tried since the daemon started (`hostset sync` waits for it to
    /// move).
    #[serde(default)]
    pub fetches: u64,
    /// Why the last fetch failed (remote unreachable, authentication, ...); empty when it
    /// worked.
    #[serde(default)]
    pub fetch_error: String,
    /// The head commit when it is refused (invalid spec, bad or missing signature); the
    /// commit in force stays. Empty when the head is in force.
    #[serde(default)]
    pub refused: String,
    /// Why `refused` is refused, as `COMMIT:FILE:LINE:COL: PATH: message` lines.
    #[serde(default)]
    pub refused_because: Vec<String>,
    /// Other things worth knowing: history rewritten (force-push), the mirror re-created.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The commit each git-defined daemonset's unit was started from (`HOSTSET_COMMIT`), by
    /// daemonset; agents only. A unit keeps the commit it was started from until its
    /// template changes.
    #[serde(default)]
    pub units: std::collections::BTreeMap<String, String>,
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
    /// The host's non-loopback IP addresses (for the endpoints view).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Kubernetes-style node conditions: `Ready`, `MemoryPressure`, `DiskPressure`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A node condition, as in a Kubernetes Node's `status.conditions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

/// One daemonset on this node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
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
    /// The daemon is ready: its unit is active (a `Type=notify` daemon's unit is active only
    /// after it sent `READY=1`), its startup probe (if any) has succeeded, and its readiness
    /// probe (if any) passes. For a unit of another revision than the desired one (the old
    /// unit beside a surging new one) only the unit state counts.
    #[serde(default)]
    pub ready: bool,
    /// Seconds since the epoch when the daemon last became ready; `None` while it is not
    /// ready. The basis of `minReadySeconds` availability. Without probes it is the unit's
    /// `ActiveEnterTimestamp`; with probes, when the readiness probe last started to pass. It
    /// survives agent restarts.
    #[serde(default)]
    pub ready_since: Option<u64>,
    /// Why the daemon is not ready (e.g. `readiness probe failed 3 times: HTTP GET
    /// http://127.0.0.1:9100/metrics: 503`); empty when it is ready.
    #[serde(default)]
    pub readiness: String,
    /// `NRestarts` of the unit.
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub main_pid: u32,
    /// Seconds since the epoch when the unit last became active (`ActiveEnterTimestamp`).
    /// Availability counts from `ready_since` (from this only for agents that do not report
    /// `ready_since`).
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub cpu_nanoseconds: Option<u64>,
    /// The rolling update here: empty, `waiting` (for a slot from the coordinator),
    /// `replacing` (the old unit stops, the new revision starts in its place) or `surging`
    /// (the new revision runs beside the old one until it is available).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rollout: String,
    /// Why the rollout waits here, when it does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rollout_message: String,
    /// During a surge: the new revision's unit, beside `unit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second: Option<SecondUnitReport>,
    /// The coordinator pinned this daemonset to another revision (`rollout undo`, automatic
    /// rollback): the revision number it runs instead of the spec file's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_revision: Option<u64>,
}

/// The second unit of a daemonset during a surge rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondUnitReport {
    pub unit: String,
    pub state: String,
    pub revision: String,
    pub ready: bool,
    /// Seconds since the epoch when it last became ready.
    #[serde(default)]
    pub ready_since: Option<u64>,
    /// Why it is not ready (as [`DaemonSetReport::readiness`]); empty when it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub readiness: String,
}

/// `POST /v1/nodes/{name}/heartbeat`: the agent is alive and its last full
/// report still holds. A coordinator that does not know the node, or has an
/// older sequence for this instance, answers 409 and the agent sends a full
/// report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub agent_instance: String,
    /// The sequence of the last full report sent.
    pub sequence: u64,
    pub generated_at: u64,
}
