//! The daemonset model: one in-memory shape for every accepted input format.
//!
//! Native TOML and Kubernetes `apps/v1` DaemonSet manifests both decode into
//! [`DaemonSet`]. The model keeps Kubernetes' vocabulary (selector, template,
//! tolerations, ...) so that placement and validation can follow Kubernetes'
//! code paths one to one. Everything here is plain data: no I/O, no defaults
//! computed lazily. Defaults (Kubernetes' `SetDefaults_DaemonSet`) are applied
//! by the decoders, so a value in the model is the value in force.

use std::collections::BTreeMap;

/// Label or annotation map. Ordered, so that output and hashes are stable.
pub type Labels = BTreeMap<String, String>;

/// The format a daemonset or node was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Native hostset TOML.
    Toml,
    /// Kubernetes object in YAML.
    Yaml,
    /// Kubernetes object in JSON.
    Json,
}

/// A daemonset: run one copy of a process on every matching node.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSet {
    /// `metadata.name`: a DNS-1123 subdomain; the unit is `hostset-<name>.service`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `metadata.annotations`.
    pub annotations: Labels,
    /// `spec.selector`. `None` is Kubernetes' nil selector (matches nothing).
    pub selector: Option<LabelSelector>,
    /// `spec.template`.
    pub template: PodTemplate,
    /// `spec.updateStrategy`, defaulted.
    pub update_strategy: UpdateStrategy,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i64,
    /// `spec.revisionHistoryLimit`, default 10.
    pub revision_history_limit: i64,
}

/// `metav1.LabelSelector`: matchLabels AND matchExpressions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry of a label selector.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// As written; validation restricts it to In, NotIn, Exists, DoesNotExist.
    pub operator: String,
    pub values: Vec<String>,
}

/// `spec.template`: the pod template, reduced to what a systemd host can honour.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodTemplate {
    /// `spec.template.metadata.labels`.
    pub labels: Labels,
    /// `spec.template.metadata.annotations`.
    pub annotations: Labels,
    /// `spec.template.spec.nodeName`: empty, or the one node this may run on.
    pub node_name: String,
    /// `spec.template.spec.nodeSelector`.
    pub node_selector: Labels,
    /// `spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub required_node_affinity: Option<NodeSelector>,
    /// `spec.template.spec.tolerations`, as written (no automatic ones).
    pub tolerations: Vec<Toleration>,
    /// `spec.template.spec.restartPolicy`; validation allows only `Always`.
    pub restart_policy: String,
    /// `spec.template.spec.terminationGracePeriodSeconds`, default 30.
    pub termination_grace_period_seconds: i64,
    /// `spec.template.spec.hostNetwork`.
    pub host_network: bool,
    /// The one process: `containers[0]`.
    pub process: Process,
    /// `spec.template.spec.volumes` of type hostPath, with their mounts.
    pub mounts: Vec<Mount>,
}

/// The process the unit runs (a Kubernetes container without the image).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Process {
    /// Container name (DNS-1123 label); defaults to the daemonset name in TOML.
    pub name: String,
    /// argv: `command` followed by `args`. `argv[0]` is an absolute path or a
    /// bare program name looked up in PATH.
    pub argv: Vec<String>,
    /// Environment, in the order written.
    pub env: Vec<EnvVar>,
    /// Working directory; empty means systemd's default (`/`).
    pub working_dir: String,
    /// User name or numeric uid; empty means root.
    pub user: String,
    /// Group name or numeric gid; empty means the user's primary group.
    pub group: String,
    pub resources: Resources,
    pub ports: Vec<Port>,
    /// The daemon tells systemd when it is ready (`sd_notify("READY=1")`): the unit gets
    /// `Type=notify` and is active only from then on. Native `notify = true`; in Kubernetes
    /// manifests the template annotation `hostset.io/notify: "true"`.
    pub notify: bool,
    /// `livenessProbe`: failing it restarts the unit.
    pub liveness_probe: Option<Probe>,
    /// `readinessProbe`: the daemon is ready only while it passes.
    pub readiness_probe: Option<Probe>,
    /// `startupProbe`: the other two wait until it has succeeded; failing it restarts the unit.
    pub startup_probe: Option<Probe>,
}

/// `v1.Probe`, defaulted as `SetDefaults_Probe` does (a value of 0 takes the default, as
/// Go's zero value does in Kubernetes).
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// `None` when no handler was written (validation reports it).
    pub handler: Option<ProbeHandler>,
    /// `initialDelaySeconds`, default 0.
    pub initial_delay_seconds: i64,
    /// `timeoutSeconds`, default 1.
    pub timeout_seconds: i64,
    /// `periodSeconds`, default 10.
    pub period_seconds: i64,
    /// `successThreshold`, default 1 (must be 1 for liveness and startup probes).
    pub success_threshold: i64,
    /// `failureThreshold`, default 3.
    pub failure_threshold: i64,
    /// `terminationGracePeriodSeconds` of the probe: the stop timeout when a liveness or
    /// startup failure restarts the daemon (instead of the template's).
    pub termination_grace_period_seconds: Option<i64>,
}

impl Probe {
    /// A probe with `handler` and Kubernetes' default timing.
    pub fn new(handler: ProbeHandler) -> Probe {
        Probe {
            handler: Some(handler),
            initial_delay_seconds: 0,
            timeout_seconds: 1,
            period_seconds: 10,
            success_threshold: 1,
            failure_threshold: 3,
            termination_grace_period_seconds: None,
        }
    }
}

/// The one action of a probe.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeHandler {
    /// `exec.command`: run as the daemon's user, in its environment and directory; exit
    /// status 0 passes.
    Exec { command: Vec<String> },
    /// `httpGet`: a status from 200 to 399 passes.
    HttpGet(HttpGetAction),
    /// `tcpSocket`: a connection that opens passes.
    TcpSocket { host: String, port: PortRef },
}

/// `v1.HTTPGetAction`, defaulted (`path` `/`, `scheme` `HTTP`, `host` `127.0.0.1`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpGetAction {
    pub path: String,
    pub port: PortRef,
    /// As written; empty means the host itself (`127.0.0.1`: the daemon shares the host's
    /// network).
    pub host: String,
    /// `HTTP` or `HTTPS` (validation rejects others).
    pub scheme: String,
    /// `httpHeaders`, in order.
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// A probe's `port`: a number or the name of one of the process's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Number(i64),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(s) => f.write_str(s),
        }
    }
}

impl Process {
    /// The number `port` stands for: itself, or the `containerPort` of the port of that name.
    pub fn resolve_port(&self, port: &PortRef) -> Option<u16> {
        match port {
            PortRef::Number(n) => u16::try_from(*n).ok().filter(|&n| n != 0),
            PortRef::Name(name) => self
                .ports
                .iter()
                .find(|p| &p.name == name)
                .and_then(|p| u16::try_from(p.container_port).ok()),
        }
    }

    /// Whether any probe is declared.
    pub fn has_probes(&self) -> bool {
        self.liveness_probe.is_some()
            || self.readiness_probe.is_some()
            || self.startup_probe.is_some()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// `resources.requests` / `resources.limits`, keyed by resource name
/// (`cpu`, `memory`), values kept as written and checked by validation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resources {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub name: String,
    pub container_port: i64,
    /// 0 when unset.
    pub host_port: i64,
    /// TCP, UDP or SCTP; default TCP.
    pub protocol: String,
}

/// A hostPath volume bound into the daemon's view of the filesystem.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// Volume name (Kubernetes manifests; generated for TOML).
    pub name: String,
    /// Path on the host.
    pub host_path: String,
    /// Path the daemon sees (equal to `host_path` unless remapped).
    pub mount_path: String,
    pub read_only: bool,
}

/// `spec.updateStrategy`, defaulted as `SetDefaults_DaemonSet` does.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateStrategy {
    /// `RollingUpdate` or `OnDelete` (validation rejects anything else).
    pub kind: String,
    /// Present for RollingUpdate (defaulted to maxUnavailable 1, maxSurge 0).
    pub rolling_update: Option<RollingUpdate>,
}

impl Default for UpdateStrategy {
    fn default() -> Self {
        UpdateStrategy {
            kind: "RollingUpdate".into(),
            rolling_update: Some(RollingUpdate::default()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RollingUpdate {
    pub max_unavailable: IntOrPercent,
    pub max_surge: IntOrPercent,
}

impl Default for RollingUpdate {
    fn default() -> Self {
        RollingUpdate {
            max_unavailable: IntOrPercent::Int(1),
            max_surge: IntOrPercent::Int(0),
        }
    }
}

/// Kubernetes `intstr.IntOrString` as used by rolling updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrPercent {
    Int(i64),
    /// The string as written, e.g. `"10%"`; validation checks the form.
    Str(String),
}

/// `v1.NodeSelector`: terms are ORed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeSelector {
    pub terms: Vec<NodeSelectorTerm>,
}

/// `v1.NodeSelectorTerm`: all expressions and fields are ANDed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeSelectorTerm {
    pub match_expressions: Vec<NodeSelectorRequirement>,
    pub match_fields: Vec<NodeSelectorRequirement>,
}

/// `v1.NodeSelectorRequirement`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSelectorRequirement {
    pub key: String,
    /// As written: In, NotIn, Exists, DoesNotExist, Gt, Lt.
    pub operator: String,
    pub values: Vec<String>,
}

/// `v1.Toleration`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Toleration {
    pub key: String,
    /// As written: `""`, `Equal` or `Exists`.
    pub operator: String,
    pub value: String,
    /// As written: `""` (all effects), NoSchedule, PreferNoSchedule, NoExecute.
    pub effect: String,
    pub toleration_seconds: Option<i64>,
}

/// `v1.Taint` on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: String,
}

impl std::fmt::Display for Taint {
    /// `key=value:Effect`, or `key:Effect` with an empty value (kubectl's form).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect)
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect)
        }
    }
}

/// What placement knows about a node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    /// `spec.unschedulable`. Placement ignores it (only the taint counts), as
    /// Kubernetes' DaemonSet controller does.
    pub unschedulable: bool,
}
