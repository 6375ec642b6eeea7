//! Kubernetes `apps/v1` DaemonSet manifests, in YAML or JSON.
//!
//! A manifest is read as `kubectl apply -f` takes it, and also as `kubectl get ds -o yaml`
//! prints it (server-populated metadata, `status` and the values the API server defaults are
//! accepted without a word). Paths in diagnostics are Kubernetes' canonical field paths
//! (`spec.template.spec.tolerations[0].operator`, map keys as `metadata.labels[app]`).
//!
//! The decoder does structure only: types, unknown fields (with "did you mean"), what a host
//! cannot honour, and rules specific to the manifest's shape (apiVersion and kind, one
//! container, volumes joined with their mounts). The rules of Kubernetes validation that the
//! model carries are checked afterwards, for every format alike, by [`super::validate`].
//!
//! A field is treated in one of five ways:
//!
//! - **used**: decoded into the model, defaulted as the API server defaults it;
//! - **checked**: read only to be checked (a value hostset cannot honour is an error);
//! - **warned**: accepted, without effect on a host, with a warning saying why. A value that
//!   asks for nothing hostset does not do anyway (Kubernetes' default, `false`, an empty list)
//!   passes silently, so that `kubectl get -o yaml` output is quiet;
//! - **skipped**: accepted silently (server-populated, or meaningless on a host);
//! - **error**: rejected, saying why and what to write instead. An empty list or mapping asks
//!   for nothing and passes.
//!
//! Container fields are under `spec.template.spec.containers[0]`, pod fields under
//! `spec.template.spec`.
//!
//! | Field | Treatment | Why |
//! |---|---|---|
//! | `apiVersion` | checked | must be `apps/v1` (the beta versions were removed in Kubernetes 1.16); otherwise the document is reported once and skipped |
//! | `kind` | checked | must be `DaemonSet`: hostset runs DaemonSets only; a `List` must be split into documents (`---`) |
//! | `metadata.name` | used | the unit is `hostset-<name>.service` |
//! | `metadata.labels`, `metadata.annotations` | used | |
//! | `metadata.namespace` | warned | namespaces do not exist on a host; silent when absent or `default` |
//! | `metadata.generateName` | error | without `name`: the unit needs a fixed name (skipped when `name` is set, as Kubernetes ignores it then) |
//! | `metadata.uid`, `resourceVersion`, `generation`, `creationTimestamp`, `managedFields`, `selfLink`, `ownerReferences`, `finalizers`, `deletionTimestamp`, `deletionGracePeriodSeconds` | skipped | server-populated |
//! | `status` | skipped | server-populated |
//! | `spec.selector` | used | absent or null is Kubernetes' nil selector (model `None`) |
//! | `spec.updateStrategy.type` | used | default `RollingUpdate` |
//! | `spec.updateStrategy.rollingUpdate.maxUnavailable`, `.maxSurge` | used | defaults 1 and 0 |
//! | `spec.updateStrategy.rollingUpdate` with type `OnDelete` | warned | Kubernetes ignores it too |
//! | `spec.minReadySeconds` | used | default 0 |
//! | `spec.revisionHistoryLimit` | used | default 10 |
//! | `spec.template.metadata.labels`, `.annotations` | used | |
//! | `spec.template.metadata` (other fields) | skipped | a template's name, namespace and timestamps mean nothing |
//! | `nodeName`, `nodeSelector`, `tolerations` | used | placement |
//! | `affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution` | used | placement |
//! | `affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution` | warned | one daemon per matching host: there is no scheduler to weigh preferences |
//! | `affinity.podAffinity`, `affinity.podAntiAffinity` | warned | placement is by node only; there are no other pods to be near or away from |
//! | `restartPolicy` | used | default `Always` (validation allows only `Always`) |
//! | `terminationGracePeriodSeconds` | used | default 30 |
//! | `hostNetwork` | used | default `false`; the daemon always uses the host's network, but placement (automatic tolerations) and port validation depend on the value, as in Kubernetes |
//! | `hostPID`, `hostIPC`, `shareProcessNamespace` | skipped | a unit always shares the host's PID and IPC namespaces; one process shares with nobody |
//! | `hostUsers` | warned | when `false`: hostset creates no user namespace |
//! | `dnsPolicy` | warned | unless `ClusterFirst` or `Default` (on the host network both mean the host's resolver): there is no cluster DNS |
//! | `dnsConfig` | warned | the daemon uses the host's `/etc/resolv.conf` |
//! | `hostAliases` | warned | the daemon reads the host's `/etc/hosts` |
//! | `hostname`, `subdomain`, `setHostnameAsFQDN` | warned | the daemon sees the host's own hostname |
//! | `serviceAccountName`, `serviceAccount` | warned | unless `default`: there is no API server and no token to mount |
//! | `automountServiceAccountToken` | warned | when `true`: no token to mount |
//! | `priorityClassName`, `priority`, `preemptionPolicy` | warned | no scheduler, nothing to preempt |
//! | `schedulerName` | warned | unless `default-scheduler`: hostset places the daemon itself |
//! | `runtimeClassName` | warned | the daemon runs on the host, not in a container runtime |
//! | `topologySpreadConstraints` | warned | one daemon per host leaves nothing to spread |
//! | `readinessGates` | warned | there are no pod conditions to gate on: readiness is the unit's state and the probes |
//! | `overhead` | warned | there is no pod sandbox to account for |
//! | `os.name` | checked | `linux` only: hostset runs on Linux hosts |
//! | `imagePullSecrets`, `enableServiceLinks` | skipped | no images are pulled; there are no Services to link |
//! | `securityContext.runAsUser`, `.runAsGroup` | used | the process's uid and gid, unless the container sets its own (as in Kubernetes) |
//! | `securityContext.runAsNonRoot` (pod or container) | checked | an error when the daemon would run as root (no `runAsUser`, or 0: a host has no image user to fall back on) |
//! | `securityContext.seccompProfile`, `.appArmorProfile` (pod or container) | warned | unless `Unconfined`: hostset applies no profile |
//! | `securityContext.seLinuxOptions`, `.windowsOptions` (pod or container) | warned | hostset sets no SELinux context; hosts are Linux |
//! | `securityContext.supplementalGroups` | warned | not supported yet: the daemon has its user's groups |
//! | `securityContext.fsGroup` | warned | hostset does not change the ownership of host paths |
//! | `securityContext.sysctls` | warned | a sysctl would apply to the whole host: set it in `/etc/sysctl.d` |
//! | `securityContext.fsGroupChangePolicy`, `.supplementalGroupsPolicy`, `.seLinuxChangePolicy` | skipped | they only qualify fields above |
//! | `initContainers`, `ephemeralContainers` | error | hostset runs one process per daemonset |
//! | `activeDeadlineSeconds` | error | forbidden in DaemonSets, as in Kubernetes |
//! | `schedulingGates` | error | nothing on a host would remove them, and the daemon would start at once |
//! | `resourceClaims` | error | dynamic resource allocation needs an API server |
//! | `resources` (pod-level) | error | set them on the container: with one process they mean the same |
//! | `containers` | used | exactly one: none is a Required error, a second is an error at `containers[1]` (run sidecars as their own daemonset) |
//! | `name` | used | the process name |
//! | `command`, `args` | used | argv is `command` followed by `args`; `args` without `command` is an error (a host knows no image entrypoint) |
//! | `image` | warned | with `command`: hostset runs the host's program; without `command` an error |
//! | `imagePullPolicy`, `terminationMessagePath`, `terminationMessagePolicy` | skipped | no image; the journal keeps the daemon's last words |
//! | `env[].name`, `env[].value` | used | |
//! | `env[].valueFrom`, `envFrom` | error | no API server to resolve them: write the values |
//! | `workingDir` | used | |
//! | `resources.requests`, `resources.limits` | used | validation allows cpu and memory |
//! | `resources.claims` | error | dynamic resource allocation needs an API server |
//! | `resizePolicy` | warned | hostset applies changed resources its own way |
//! | `ports[].containerPort`, `.hostPort`, `.name`, `.protocol` | used | protocol default `TCP` |
//! | `ports[].hostIP` | warned | the daemon binds what it chooses; nothing is forwarded |
//! | `volumeMounts[].name`, `.mountPath`, `.readOnly` | used | joined with their volume into one mount each; `name` must name a volume, `mountPath` must be absolute, unique and free of `:` |
//! | `volumeMounts[].subPath`, `.subPathExpr` | error | mount the sub-path itself as a hostPath volume |
//! | `volumeMounts[].mountPropagation`, `.recursiveReadOnly` | warned | the bind mount gets systemd's defaults |
//! | `volumeDevices` | error | raw block volumes come from PersistentVolumeClaims |
//! | `securityContext.privileged`, `.capabilities.add` | warned | only for a non-root daemon, which gets no privileges beyond its user's; a root daemon has them all |
//! | `securityContext.capabilities.drop` | warned | hostset drops no capabilities |
//! | `securityContext.allowPrivilegeEscalation` | warned | when `false`: not enforced |
//! | `securityContext.readOnlyRootFilesystem` | warned | when `true`: the daemon sees the host's filesystem |
//! | `securityContext.procMount` | skipped | the daemon sees the host's `/proc` |
//! | `livenessProbe`, `readinessProbe`, `startupProbe` | used | run by the agent: `exec` (as the daemon's user, in its environment and working directory), `httpGet` (host default `127.0.0.1`: the daemon is on the host's network; HTTPS without certificate verification, as kubelet), `tcpSocket`; timing and thresholds defaulted as Kubernetes; a named port must name one of the container's ports |
//! | `livenessProbe.grpc` (and the others') | error | hostset has no gRPC client: use `tcpSocket` on the same port, or `exec` with a health-check command |
//! | `metadata.annotations[hostset.io/notify]` (template) | used | `"true"`: the daemon signals `READY=1` (`Type=notify`); its unit is active, and so ready, only after that |
//! | `lifecycle` | warned | hooks are not yet supported |
//! | `stdin`, `stdinOnce`, `tty` | warned | when `true`: a daemon's input is `/dev/null`, its output goes to the journal |
//! | `restartPolicy`, `restartPolicyRules` (container) | error | for sidecar init containers; the pod's `restartPolicy` applies |
//! | `volumes[].name` | used | a DNS-1123 label, unique; the mount's name |
//! | `volumes[].hostPath.path` | used | absolute, free of `:` (systemd's `BindPaths=` separator) |
//! | `volumes[].hostPath.type` | warned | hostset neither checks nor creates the path; an unknown type is an error |
//! | `volumes[]` of any other type (`configMap`, `secret`, `emptyDir`, ...) | error | hostset binds host paths only |
//! | a hostPath volume no mount uses | warned | nothing is bound |
//! | unknown fields | error | with "did you mean"; a pod field written in the container (or the reverse) says where it belongs; `spec.replicas` says a DaemonSet has none |
//! | `null` | as absent | as Kubernetes reads it; a wrong type is an error naming the expected one |

use crate::syntax::is_dns1123_label;

use super::decode::{Cx, Obj, required_path};
use super::doc::{Node, Pos, Value};
use super::model::*;
use super::native::{
    ANNOTATION_NOTIFY, PROCESS_NAME, label_requirement, node_selector_term, probes, quantities,
    toleration,
};
use super::validate::TEMPLATE_SPEC;

/// The only apiVersion read.
const API_VERSION: &str = "apps/v1";
/// The only kind read.
const KIND: &str = "DaemonSet";

/// `ObjectMeta` fields the API server fills in; accepted silently.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "ownerReferences",
    "finalizers",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// `PodSpec` fields that are not also `Container` fields, for saying where a misplaced one
/// belongs.
const POD_FIELDS: &[&str] = &[
    "volumes",
    "initContainers",
    "ephemeralContainers",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "nodeSelector",
    "serviceAccountName",
    "automountServiceAccountToken",
    "nodeName",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "imagePullSecrets",
    "hostname",
    "affinity",
    "tolerations",
    "priorityClassName",
    "dnsConfig",
    "runtimeClassName",
    "topologySpreadConstraints",
];

/// `Container` fields that are not also `PodSpec` fields.
const CONTAINER_FIELDS: &[&str] = &[
    "image",
    "command",
    "args",
    "workingDir",
    "ports",
    "env",
    "envFrom",
    "volumeMounts",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "imagePullPolicy",
    "stdin",
    "tty",
];

/// Every `VolumeSource` of `core/v1`.
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// `HostPathType` values, `""` being the default (no check).
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

const ONE_PROCESS: &str =
    "hostset runs one process per daemonset; run sidecars as their own daemonset";
const NO_API_SERVER_CLAIMS: &str = "resource claims are not supported: dynamic resource \
     allocation needs an API server, which a host does not have";
const DNS: &str =
    "ignored: there is no cluster DNS; the daemon uses the host's resolver (/etc/resolv.conf)";
const HOSTNAME: &str = "ignored: the daemon sees the host's own hostname";
const SERVICE_ACCOUNT: &str =
    "ignored: there is no API server, so there is no service account token to mount";
const PRIORITY: &str = "ignored: there is no scheduler and nothing to preempt; the daemon runs \
     on every matching host";
const POD_AFFINITY: &str = "ignored: hostset places one daemon per host by node labels, taints \
     and nodeName; there are no other pods to be near or away from";
const NO_PROFILE: &str = "ignored: hostset applies no seccomp or AppArmor profile";
const INTERACTIVE: &str = "ignored: a daemon has no interactive input; systemd connects its \
     standard input to /dev/null and its output to the journal";
const SUBPATH: &str = "not supported: mount the sub-path itself as a hostPath volume";

/// Decode one Kubernetes object (one YAML document) into a daemonset.
///
/// `None` when the document is not an `apps/v1` `DaemonSet` at all (after saying so; nothing
/// else about it is reported). Otherwise the daemonset, to be validated, with every structural
/// problem recorded in `cx`.
pub fn decode_daemonset(cx: &mut Cx, root: &Node) -> Option<DaemonSet> {
    let mut o = Obj::new(cx, "", root)?;
    if !header(cx, &mut o) {
        return None;
    }
    let mut ds = DaemonSet {
        name: String::new(),
        labels: Labels::new(),
        annotations: Labels::new(),
        selector: None,
        template: PodTemplate {
            restart_policy: "Always".into(),
            termination_grace_period_seconds: 30,
            ..PodTemplate::default()
        },
        update_strategy: UpdateStrategy::default(),
        min_ready_seconds: 0,
        revision_history_limit: 10,
    };
    if let Some(m) = o.obj(cx, "metadata") {
        metadata(cx, m, &mut ds);
    }
    let has_process = match o.obj(cx, "spec") {
        Some(s) => spec(cx, s, &mut ds),
        None => containers_required(cx),
    };
    if !has_process {
        // The missing container is reported; a placeholder name keeps validation from also
        // calling the absent container's name invalid.
        ds.template.process.name = PROCESS_NAME.into();
    }
    o.skip(cx, "status");
    o.finish(cx);
    Some(ds)
}

/// Report that `containers` is missing or empty. Returns false: there is no process.
fn containers_required(cx: &mut Cx) -> bool {
    let p = format!("{TEMPLATE_SPEC}.containers");
    cx.error(
        &p,
        cx.pos_of(&p),
        "required: one container, naming the daemon's program in command",
    );
    false
}

/// `apiVersion` and `kind`: whether this is an `apps/v1` `DaemonSet`.
fn header(cx: &mut Cx, o: &mut Obj<'_>) -> bool {
    let api_version = required_string(cx, o, "apiVersion", "required: apiVersion: apps/v1");
    let kind = required_string(cx, o, "kind", "required: kind: DaemonSet");
    let mut ok = api_version.is_some() && kind.is_some();
    if let Some((pos, v)) = api_version
        && v != API_VERSION
    {
        let removed = if matches!(v.as_str(), "extensions/v1beta1" | "apps/v1beta2") {
            " (the beta versions were removed in Kubernetes 1.16)"
        } else {
            ""
        };
        cx.error(
            "apiVersion",
            Some(pos),
            format!(
                "unsupported apiVersion \"{v}\": hostset reads {API_VERSION} DaemonSets{removed}; \
                 write apiVersion: {API_VERSION}"
            ),
        );
        ok = false;
    }
    if let Some((pos, v)) = kind
        && v != KIND
    {
        let hint = if v.eq_ignore_ascii_case(KIND) {
            " (kinds are case-sensitive: write DaemonSet)"
        } else if matches!(v.as_str(), "List" | "DaemonSetList") {
            "; write each item as its own YAML document, separated by ---"
        } else {
            ""
        };
        cx.error(
            "kind",
            Some(pos),
            format!("unsupported kind \"{v}\": hostset runs DaemonSets only{hint}"),
        );
        ok = false;
    }
    ok
}

/// A top-level string that must be written: its position and value, or `None` after an error.
fn required_string(
    cx: &mut Cx,
    o: &mut Obj<'_>,
    key: &'static str,
    why: &str,
) -> Option<(Pos, String)> {
    match o.get(cx, key) {
        Some((p, n)) => cx.string(&p, n).map(|v| (n.pos, v)),
        None => {
            let p = o.child(key);
            cx.error(&p, cx.pos_of(&p).or(Some(o.pos)), why);
            None
        }
    }
}

/// `metadata`.
fn metadata(cx: &mut Cx, mut m: Obj<'_>, ds: &mut DaemonSet) {
    ds.name = m.string(cx, "name").unwrap_or_default();
    // Kubernetes uses generateName only when name is empty.
    if m.string(cx, "generateName").is_some_and(|g| !g.is_empty()) && ds.name.is_empty() {
        let p = m.child("generateName");
        cx.error(
            &p,
            cx.pos_of(&p),
            "not supported: the unit hostset-<name>.service needs a fixed name; set metadata.name",
        );
    }
    if let Some(ns) = m.string(cx, "namespace")
        && !ns.is_empty()
        && ns != "default"
    {
        let p = m.child("namespace");
        let name = if ds.name.is_empty() {
            "<name>"
        } else {
            &ds.name
        };
        let message = format!(
            "ignored: namespaces do not exist on a host; the unit is hostset-{name}.service"
        );
        cx.warn(&p, cx.pos_of(&p), message);
    }
    ds.labels = m.string_map(cx, "labels");
    ds.annotations = m.string_map(cx, "annotations");
    for &key in SERVER_METADATA {
        m.skip(cx, key);
    }
    m.finish(cx);
}

/// `spec`. Returns whether the template's container was decoded.
fn spec(cx: &mut Cx, mut s: Obj<'_>, ds: &mut DaemonSet) -> bool {
    ds.selector = s.obj(cx, "selector").map(|mut o| {
        let sel = LabelSelector {
            match_labels: o.string_map(cx, "matchLabels"),
            match_expressions: o
                .list(cx, "matchExpressions")
                .into_iter()
                .filter_map(|(p, n)| label_requirement(cx, &p, n))
                .collect(),
        };
        o.finish(cx);
        sel
    });
    let has_process = match s.obj(cx, "template") {
        Some(t) => template(cx, t, &mut ds.template),
        None => containers_required(cx),
    };
    if let Some(u) = s.obj(cx, "updateStrategy") {
        ds.update_strategy = update_strategy(cx, u);
    }
    ds.min_ready_seconds = s.int(cx, "minReadySeconds").unwrap_or(0);
    if let Some(limit) = s.int(cx, "revisionHistoryLimit") {
        ds.revision_history_limit = limit;
    }
    s.finish_with(cx, |key| match key {
        "replicas" => {
            Some("a DaemonSet has no replicas: it runs one daemon on every matching host".into())
        }
        "strategy" => {
            Some("\"strategy\" is a Deployment field: a DaemonSet has updateStrategy".into())
        }
        _ => belongs_in_pod_spec(key),
    });
    has_process
}

/// `spec.updateStrategy`, defaulted as `SetDefaults_DaemonSet` does.
fn update_strategy(cx: &mut Cx, mut u: Obj<'_>) -> UpdateStrategy {
    let kind = u
        .string(cx, "type")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "RollingUpdate".into());
    // Validation reports an unsupported type at `spec.updateStrategy`: point it at the type.
    if let Some(pos) = cx.spans.get(&u.child("type")).copied() {
        cx.spans.insert(u.path.clone(), pos);
    }
    let mut written = None;
    if let Some(mut r) = u.obj(cx, "rollingUpdate") {
        let max_unavailable = r
            .get(cx, "maxUnavailable")
            .and_then(|(p, n)| cx.int_or_string(&p, n));
        let max_surge = r
            .get(cx, "maxSurge")
            .and_then(|(p, n)| cx.int_or_string(&p, n));
        if kind == "OnDelete" {
            cx.warn(
                &r.path,
                cx.pos_of(&r.path),
                "ignored: rollingUpdate applies to type RollingUpdate only (Kubernetes ignores \
                 it too)",
            );
        }
        r.finish(cx);
        written = Some((max_unavailable, max_surge));
    }
    u.finish(cx);
    let rolling_update = (kind == "RollingUpdate").then(|| {
        let (max_unavailable, max_surge) = written.unwrap_or_default();
        let defaults = RollingUpdate::default();
        RollingUpdate {
            max_unavailable: max_unavailable.unwrap_or(defaults.max_unavailable),
            max_surge: max_surge.unwrap_or(defaults.max_surge),
        }
    });
    UpdateStrategy {
        kind,
        rolling_update,
    }
}

/// `spec.template`. Returns whether its container was decoded.
fn template(cx: &mut Cx, mut t: Obj<'_>, out: &mut PodTemplate) -> bool {
    if let Some(mut m) = t.obj(cx, "metadata") {
        out.labels = m.string_map(cx, "labels");
        out.annotations = m.string_map(cx, "annotations");
        // Validation reports template labels at `spec.template.labels`, as Kubernetes does.
        for (field, map) in [("labels", &out.labels), ("annotations", &out.annotations)] {
            let from = format!("{}.{field}", m.path);
            let to = format!("{}.{field}", t.path);
            alias(cx, &from, &to);
            for key in map.keys() {
                alias(cx, &format!("{from}[{key}]"), &format!("{to}[{key}]"));
            }
        }
        for &key in SERVER_METADATA
            .iter()
            .chain(&["name", "generateName", "namespace"])
        {
            m.skip(cx, key);
        }
        m.finish(cx);
    }
    let has_process = match t.obj(cx, "spec") {
        Some(s) => pod_spec(cx, s, out),
        None => containers_required(cx),
    };
    t.finish_with(cx, belongs_in_pod_spec);
    has_process
}

/// `spec.template.spec`. Returns whether its container was decoded.
fn pod_spec(cx: &mut Cx, mut o: Obj<'_>, t: &mut PodTemplate) -> bool {
    let mut vols = volumes(cx, &mut o);
    let pod_security = match o.obj(cx, "securityContext") {
        Some(s) => security_context(cx, s, true),
        None => Security::default(),
    };
    let containers = o.list(cx, "containers");
    let has_process = match containers.first() {
        Some((p, n)) => container(cx, p, n, &mut vols, &pod_security, t),
        None => containers_required(cx),
    };
    if let Some((p, _)) = containers.get(1) {
        cx.error(p, cx.pos_of(p), ONE_PROCESS);
    } else {
        // With more containers, the others' mounts would count; the error above says enough.
        for v in vols.iter().filter(|v| v.host_path.is_some() && !v.used) {
            let message = format!("ignored: no volumeMount uses volume \"{}\"", v.name);
            cx.warn(&v.path, cx.pos_of(&v.path), message);
        }
    }

    t.node_name = o.string(cx, "nodeName").unwrap_or_default();
    t.node_selector = o.string_map(cx, "nodeSelector");
    if let Some(a) = o.obj(cx, "affinity") {
        affinity(cx, a, t);
    }
    t.tolerations = o
        .list(cx, "tolerations")
        .into_iter()
        .filter_map(|(p, n)| toleration(cx, &p, n))
        .collect();
    if let Some(policy) = o.string(cx, "restartPolicy").filter(|p| !p.is_empty()) {
        t.restart_policy = policy;
    }
    if let Some(grace) = o.int(cx, "terminationGracePeriodSeconds") {
        t.termination_grace_period_seconds = grace;
    }
    t.host_network = o.bool(cx, "hostNetwork").unwrap_or(false);

    for key in [
        "hostPID",
        "hostIPC",
        "shareProcessNamespace",
        "imagePullSecrets",
        "enableServiceLinks",
    ] {
        o.skip(cx, key);
    }
    warn_unless(
        cx,
        &mut o,
        "hostUsers",
        |v| *v == Value::Bool(true),
        "ignored: the daemon runs in the host's user namespace; hostset creates none",
    );
    warn_unless(
        cx,
        &mut o,
        "dnsPolicy",
        |v| is_str(v, &["", "ClusterFirst", "Default"]),
        DNS,
    );
    warn(cx, &mut o, "dnsConfig", DNS);
    warn(
        cx,
        &mut o,
        "hostAliases",
        "ignored: the daemon reads the host's /etc/hosts",
    );
    for key in ["hostname", "subdomain", "setHostnameAsFQDN"] {
        warn(cx, &mut o, key, HOSTNAME);
    }
    for key in ["serviceAccountName", "serviceAccount"] {
        warn_unless(
            cx,
            &mut o,
            key,
            |v| is_str(v, &["", "default"]),
            SERVICE_ACCOUNT,
        );
    }
    warn(cx, &mut o, "automountServiceAccountToken", SERVICE_ACCOUNT);
    for key in ["priorityClassName", "priority", "preemptionPolicy"] {
        warn(cx, &mut o, key, PRIORITY);
    }
    warn_unless(
        cx,
        &mut o,
        "schedulerName",
        |v| is_str(v, &["", "default-scheduler"]),
        "ignored: hostset places the daemon itself; there is no scheduler to choose",
    );
    warn(
        cx,
        &mut o,
        "runtimeClassName",
        "ignored: the daemon runs directly on the host, not in a container runtime",
    );
    warn(
        cx,
        &mut o,
        "topologySpreadConstraints",
        "ignored: one daemon per host leaves nothing to spread",
    );
    warn(
        cx,
        &mut o,
        "readinessGates",
        "ignored: there are no pod conditions to gate on; readiness is the unit's state and the \
         probes",
    );
    warn(
        cx,
        &mut o,
        "overhead",
        "ignored: there is no pod sandbox whose overhead to account for",
    );
    if let Some(mut os) = o.obj(cx, "os") {
        if let Some(name) = os.string(cx, "name")
            && name != "linux"
        {
            let p = os.child("name");
            let message =
                format!("\"{name}\" is not supported: hostset runs daemons on Linux hosts");
            cx.error(&p, cx.pos_of(&p), message);
        }
        os.finish(cx);
    }

    refuse(
        cx,
        &mut o,
        "initContainers",
        "init containers are not supported: hostset runs one process per daemonset; do the \
         setup in the program itself",
    );
    refuse(
        cx,
        &mut o,
        "ephemeralContainers",
        "ephemeral containers are not allowed in a pod template, and hostset runs one process \
         per daemonset",
    );
    refuse(
        cx,
        &mut o,
        "activeDeadlineSeconds",
        "forbidden: a daemon runs until its daemonset is removed; activeDeadlineSeconds is not \
         allowed in a DaemonSet (as in Kubernetes)",
    );
    refuse(
        cx,
        &mut o,
        "schedulingGates",
        "scheduling gates are not supported: nothing on a host would remove them, and hostset \
         would start the daemon at once",
    );
    refuse(cx, &mut o, "resourceClaims", NO_API_SERVER_CLAIMS);
    refuse(
        cx,
        &mut o,
        "resources",
        "pod-level resources are not supported: set them on containers[0].resources (with one \
         process they mean the same)",
    );
    o.finish_with(cx, |key| {
        CONTAINER_FIELDS.contains(&key).then(|| {
            format!(
                "\"{key}\" belongs in a container (spec.template.spec.containers[0]), not in the \
                 pod spec"
            )
        })
    });
    has_process
}

/// `spec.template.spec.affinity`.
fn affinity(cx: &mut Cx, mut a: Obj<'_>, t: &mut PodTemplate) {
    if let Some(mut na) = a.obj(cx, "nodeAffinity") {
        if let Some(mut req) = na.obj(cx, "requiredDuringSchedulingIgnoredDuringExecution") {
            let terms = req
                .list(cx, "nodeSelectorTerms")
                .into_iter()
                .filter_map(|(p, n)| node_selector_term(cx, &p, n))
                .collect();
            req.finish(cx);
            t.required_node_affinity = Some(NodeSelector { terms });
        }
        warn(
            cx,
            &mut na,
            "preferredDuringSchedulingIgnoredDuringExecution",
            "ignored: a daemonset runs one daemon on every matching host; there is no scheduler \
             to weigh preferences (use requiredDuringSchedulingIgnoredDuringExecution)",
        );
        na.finish(cx);
    }
    warn(cx, &mut a, "podAffinity", POD_AFFINITY);
    warn(cx, &mut a, "podAntiAffinity", POD_AFFINITY);
    a.finish(cx);
}

/// A volume of the pod, as far as mounts need it.
struct Volume {
    name: String,
    /// `spec.template.spec.volumes[i]`.
    path: String,
    /// The host path of a valid hostPath volume; `None` for any other (reported) volume.
    host_path: Option<String>,
    used: bool,
}

/// `spec.template.spec.volumes`, in the order written, without duplicates.
fn volumes(cx: &mut Cx, o: &mut Obj<'_>) -> Vec<Volume> {
    let mut out: Vec<Volume> = Vec::new();
    for (path, n) in o.list(cx, "volumes") {
        let Some(v) = volume(cx, path, n) else {
            continue;
        };
        if v.name.is_empty() {
            continue;
        }
        if out.iter().any(|w| w.name == v.name) {
            let p = format!("{}.name", v.path);
            let message = format!(
                "duplicate value \"{}\": volume names must be unique",
                v.name
            );
            cx.error(&p, cx.pos_of(&p), message);
            continue;
        }
        out.push(v);
    }
    out
}

/// One `volumes[i]`: only hostPath volumes have a host path.
fn volume(cx: &mut Cx, path: String, n: &Node) -> Option<Volume> {
    let mut o = Obj::new(cx, &path, n)?;
    let name = o.string(cx, "name").unwrap_or_default();
    let name_path = o.child("name");
    if name.is_empty() {
        cx.error(
            &name_path,
            cx.pos_of(&name_path),
            "required: the volume's name, for volumeMounts to refer to",
        );
    } else {
        for m in is_dns1123_label(&name) {
            let message = format!("invalid value \"{name}\": {m}");
            cx.error(&name_path, cx.pos_of(&name_path), message);
        }
    }
    let mut host_path = None;
    let mut typed = false;
    for &source in VOLUME_SOURCES {
        let Some((p, n)) = o.get(cx, source) else {
            continue;
        };
        typed = true;
        if source == "hostPath" {
            host_path = Obj::new(cx, &p, n).and_then(|h| host_path_source(cx, h));
        } else {
            cx.error(
                &path,
                cx.pos_of(&path),
                format!(
                    "{source} volumes are not supported: hostset binds host paths only (hostPath)"
                ),
            );
        }
    }
    // No source at all is an error; a misspelt one is left to `finish` ("did you mean").
    let only_known = match &n.value {
        Value::Map(entries) => entries.iter().all(|e| e.key == "name"),
        _ => true,
    };
    if !typed && only_known {
        cx.error(
            &path,
            cx.pos_of(&path),
            "required: a volume source; hostset supports hostPath",
        );
    }
    o.finish(cx);
    Some(Volume {
        name,
        path,
        host_path,
        used: false,
    })
}

/// `volumes[i].hostPath`: the path, if valid.
fn host_path_source(cx: &mut Cx, mut h: Obj<'_>) -> Option<String> {
    let path = required_path(cx, &mut h, "path", "required: the path on the host");
    if let Some(kind) = h.string(cx, "type") {
        let p = h.child("type");
        let pos = cx.pos_of(&p);
        let shown = path.as_deref().unwrap_or("the path");
        match kind.as_str() {
            "" => {}
            "DirectoryOrCreate" | "FileOrCreate" => cx.warn(
                &p,
                pos,
                format!(
                    "ignored: hostset does not create missing host paths; create {shown} on the \
                     host"
                ),
            ),
            k if HOST_PATH_TYPES.contains(&k) => cx.warn(
                &p,
                pos,
                format!("ignored: hostset does not check that {shown} is a {k}"),
            ),
            k => {
                let supported = HOST_PATH_TYPES
                    .iter()
                    .map(|t| format!("\"{t}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                cx.error(
                    &p,
                    pos,
                    format!("unsupported value \"{k}\": supported values: {supported}"),
                );
            }
        }
    }
    h.finish(cx);
    path
}

/// `containers[0]`: the process and its mounts. Returns false when it is not a mapping.
fn container(
    cx: &mut Cx,
    path: &str,
    n: &Node,
    vols: &mut [Volume],
    pod_security: &Security,
    t: &mut PodTemplate,
) -> bool {
    let Some(mut o) = Obj::new(cx, path, n) else {
        return false;
    };
    let process = &mut t.process;
    process.name = o.string(cx, "name").unwrap_or_default();

    let command = o.string_list(cx, "command");
    let args = o.string_list(cx, "args");
    if command.is_empty() && !args.is_empty() {
        let at = o.child("args");
        cx.error(
            &at,
            cx.pos_of(&at),
            "args without command: a host knows no image entrypoint to pass them to; put the \
             program's path in command",
        );
    }
    if o.string(cx, "image").is_some_and(|i| !i.is_empty()) {
        let at = o.child("image");
        if command.is_empty() {
            cx.error(
                &at,
                cx.pos_of(&at),
                "hostset runs host programs, not images: set command to the program's path",
            );
        } else {
            cx.warn(
                &at,
                cx.pos_of(&at),
                "ignored: hostset runs command on the host, not the image",
            );
        }
    }
    if !command.is_empty() {
        process.argv = command.into_iter().chain(args).collect();
    }
    process.working_dir = o.string(cx, "workingDir").unwrap_or_default();
    process.env = o
        .list(cx, "env")
        .into_iter()
        .filter_map(|(p, n)| env_var(cx, &p, n))
        .collect();
    refuse(
        cx,
        &mut o,
        "envFrom",
        "envFrom is not supported: ConfigMaps and Secrets live in an API server, which a host \
         does not have; list the variables under env",
    );
    if let Some(mut r) = o.obj(cx, "resources") {
        process.resources.requests = quantities(cx, &mut r, "requests");
        process.resources.limits = quantities(cx, &mut r, "limits");
        refuse(cx, &mut r, "claims", NO_API_SERVER_CLAIMS);
        r.finish(cx);
    }
    process.ports = o
        .list(cx, "ports")
        .into_iter()
        .filter_map(|(p, n)| port(cx, &p, n))
        .collect();

    let mut mount_paths: Vec<String> = Vec::new();
    for (mp, mn) in o.list(cx, "volumeMounts") {
        if let Some(m) = volume_mount(cx, &mp, mn, vols, &mut mount_paths) {
            t.mounts.push(m);
        }
    }
    refuse(
        cx,
        &mut o,
        "volumeDevices",
        "volumeDevices is not supported: raw block volumes come from PersistentVolumeClaims; \
         a daemon on the host can open the device itself",
    );

    let security = match o.obj(cx, "securityContext") {
        Some(s) => security_context(cx, s, false),
        None => Security::default(),
    }
    .over(pod_security);
    apply_security(cx, path, security, &mut t.process);

    probes(cx, &mut o, &mut t.process);
    t.process.notify = t.annotations.get(ANNOTATION_NOTIFY).map(String::as_str) == Some("true");
    warn(
        cx,
        &mut o,
        "lifecycle",
        "ignored: lifecycle hooks are not yet supported",
    );
    for key in ["stdin", "stdinOnce", "tty"] {
        warn(cx, &mut o, key, INTERACTIVE);
    }
    warn(
        cx,
        &mut o,
        "resizePolicy",
        "ignored: hostset applies changed resources its own way",
    );
    for key in [
        "imagePullPolicy",
        "terminationMessagePath",
        "terminationMessagePolicy",
    ] {
        o.skip(cx, key);
    }
    for key in ["restartPolicy", "restartPolicyRules"] {
        refuse(
            cx,
            &mut o,
            key,
            "not supported: a container's own restart policy is for sidecar init containers; \
             the daemon restarts as spec.template.spec.restartPolicy says",
        );
    }
    o.finish_with(cx, |key| {
        (POD_FIELDS.contains(&key) || key == "containers")
            .then(|| format!("\"{key}\" belongs in spec.template.spec, not in a container"))
    });
    true
}

/// `env[i]`.
fn env_var(cx: &mut Cx, path: &str, n: &Node) -> Option<EnvVar> {
    let mut o = Obj::new(cx, path, n)?;
    let var = EnvVar {
        name: o.string(cx, "name").unwrap_or_default(),
        value: o.string(cx, "value").unwrap_or_default(),
    };
    refuse(
        cx,
        &mut o,
        "valueFrom",
        "valueFrom is not supported: there is no API server to resolve it; give the value itself",
    );
    o.finish(cx);
    Some(var)
}

/// `ports[i]`. A missing containerPort stays 0, which validation reports.
fn port(cx: &mut Cx, path: &str, n: &Node) -> Option<Port> {
    let mut o = Obj::new(cx, path, n)?;
    let port = Port {
        name: o.string(cx, "name").unwrap_or_default(),
        container_port: o.int(cx, "containerPort").unwrap_or(0),
        host_port: o.int(cx, "hostPort").unwrap_or(0),
        protocol: o
            .string(cx, "protocol")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "TCP".into()),
    };
    warn(
        cx,
        &mut o,
        "hostIP",
        "ignored: the daemon binds the addresses it chooses; hostset forwards no ports",
    );
    o.finish(cx);
    Some(port)
}

/// `volumeMounts[j]`, joined with the volume it names.
fn volume_mount(
    cx: &mut Cx,
    path: &str,
    n: &Node,
    vols: &mut [Volume],
    seen: &mut Vec<String>,
) -> Option<Mount> {
    let mut o = Obj::new(cx, path, n)?;
    let name = o.string(cx, "name").unwrap_or_default();
    let name_path = o.child("name");
    let volume = if name.is_empty() {
        cx.error(
            &name_path,
            cx.pos_of(&name_path),
            "required: the name of a volume in spec.template.spec.volumes",
        );
        None
    } else if let Some(v) = vols.iter_mut().find(|v| v.name == name) {
        v.used = true;
        Some(v)
    } else {
        cx.error(
            &name_path,
            cx.pos_of(&name_path),
            format!("no volume named \"{name}\" in spec.template.spec.volumes"),
        );
        None
    };
    let mount_path = required_path(
        cx,
        &mut o,
        "mountPath",
        "required: where the daemon sees the volume, e.g. /var/log",
    );
    if let Some(mp) = &mount_path {
        if seen.contains(mp) {
            let p = o.child("mountPath");
            cx.error(
                &p,
                cx.pos_of(&p),
                format!("invalid value \"{mp}\": must be unique"),
            );
        }
        seen.push(mp.clone());
    }
    let read_only = o.bool(cx, "readOnly").unwrap_or(false);
    refuse(cx, &mut o, "subPath", SUBPATH);
    refuse(cx, &mut o, "subPathExpr", SUBPATH);
    warn(
        cx,
        &mut o,
        "mountPropagation",
        "ignored: the bind mount gets systemd's default propagation",
    );
    warn(
        cx,
        &mut o,
        "recursiveReadOnly",
        "ignored: systemd decides how submounts of a read-only bind mount behave",
    );
    o.finish(cx);
    Some(Mount {
        name,
        host_path: volume?.host_path.clone()?,
        mount_path: mount_path?,
        read_only,
    })
}

/// What a pod's or container's `securityContext` asks of the process.
#[derive(Debug, Default)]
struct Security {
    /// `runAsUser`: where it was written and the uid.
    user: Option<(String, String)>,
    /// `runAsGroup`: where it was written and the gid.
    group: Option<(String, String)>,
    /// `runAsNonRoot`: where it was written and the value.
    non_root: Option<(String, bool)>,
    /// Where fields ask for more than a non-root user's privileges (`privileged`,
    /// `capabilities.add`).
    root_only: Vec<String>,
}

impl Security {
    /// The container's settings over the pod's, as Kubernetes merges them.
    fn over(self, pod: &Security) -> Security {
        Security {
            user: self.user.or_else(|| pod.user.clone()),
            group: self.group.or_else(|| pod.group.clone()),
            non_root: self.non_root.or_else(|| pod.non_root.clone()),
            root_only: self.root_only,
        }
    }
}

/// A pod's (`pod`) or a container's `securityContext`.
fn security_context(cx: &mut Cx, mut o: Obj<'_>, pod: bool) -> Security {
    let user = numeric_id(cx, &mut o, "runAsUser");
    let group = numeric_id(cx, &mut o, "runAsGroup");
    let non_root = o
        .bool(cx, "runAsNonRoot")
        .map(|v| (o.child("runAsNonRoot"), v));
    let mut s = Security {
        user,
        group,
        non_root,
        root_only: Vec::new(),
    };
    for key in ["seccompProfile", "appArmorProfile"] {
        warn_unless(cx, &mut o, key, is_unconfined, NO_PROFILE);
    }
    warn(
        cx,
        &mut o,
        "seLinuxOptions",
        "ignored: hostset sets no SELinux context; the daemon runs in its unit's default context",
    );
    warn(
        cx,
        &mut o,
        "windowsOptions",
        "ignored: hostset runs daemons on Linux hosts",
    );
    if pod {
        warn(
            cx,
            &mut o,
            "supplementalGroups",
            "ignored: not supported yet; the daemon has its user's supplementary groups",
        );
        warn(
            cx,
            &mut o,
            "fsGroup",
            "ignored: hostset does not change the ownership of host paths",
        );
        warn(
            cx,
            &mut o,
            "sysctls",
            "ignored: a sysctl would apply to the whole host; set it in /etc/sysctl.d if the \
             host should have it",
        );
        for key in [
            "fsGroupChangePolicy",
            "supplementalGroupsPolicy",
            "seLinuxChangePolicy",
        ] {
            o.skip(cx, key);
        }
    } else {
        if o.bool(cx, "privileged") == Some(true) {
            s.root_only.push(o.child("privileged"));
        }
        if let Some(mut caps) = o.obj(cx, "capabilities") {
            if !caps.string_list(cx, "add").is_empty() {
                s.root_only.push(caps.child("add"));
            }
            if !caps.string_list(cx, "drop").is_empty() {
                let p = caps.child("drop");
                cx.warn(
                    &p,
                    cx.pos_of(&p),
                    "ignored: hostset drops no capabilities; a root daemon keeps all of them",
                );
            }
            caps.finish(cx);
        }
        warn_unless(
            cx,
            &mut o,
            "allowPrivilegeEscalation",
            |v| *v == Value::Bool(true),
            "ignored: not enforced; a set-user-ID program the daemon runs gains its owner's \
             privileges",
        );
        warn(
            cx,
            &mut o,
            "readOnlyRootFilesystem",
            "ignored: the daemon sees the host's root filesystem, writable as its user may",
        );
        o.skip(cx, "procMount");
    }
    o.finish(cx);
    s
}

/// `runAsUser` or `runAsGroup`: where it was written and the id.
fn numeric_id(cx: &mut Cx, o: &mut Obj<'_>, key: &'static str) -> Option<(String, String)> {
    let (p, n) = o.get(cx, key)?;
    cx.int(&p, n).map(|i| (p, i.to_string()))
}

/// Put the merged security settings into the process, and report what they cannot have.
fn apply_security(cx: &mut Cx, container: &str, s: Security, p: &mut Process) {
    // Validation reports a bad uid or gid at the container's field: point it at the pod's
    // when the value comes from there.
    if let Some((from, uid)) = s.user {
        alias(cx, &from, &format!("{container}.securityContext.runAsUser"));
        p.user = uid;
    }
    if let Some((from, gid)) = s.group {
        alias(
            cx,
            &from,
            &format!("{container}.securityContext.runAsGroup"),
        );
        p.group = gid;
    }
    let root = matches!(p.user.as_str(), "" | "0");
    if let Some((at, true)) = s.non_root
        && root
    {
        cx.error(
            &at,
            cx.pos_of(&at),
            "the daemon would run as root: set runAsUser to a non-zero uid (without runAsUser a \
             host runs the program as root)",
        );
    }
    if !root {
        for at in s.root_only {
            let message = format!(
                "ignored: the daemon runs as uid {}, with that user's privileges only (a root \
                 daemon has them all)",
                p.user
            );
            cx.warn(&at, cx.pos_of(&at), message);
        }
    }
}

/// For a pod field (or `containers`) written too high up: where it belongs.
fn belongs_in_pod_spec(key: &str) -> Option<String> {
    (POD_FIELDS.contains(&key) || key == "containers")
        .then(|| format!("\"{key}\" belongs in spec.template.spec"))
}

/// Let validation findings at `to` point where `from` was written.
fn alias(cx: &mut Cx, from: &str, to: &str) {
    if from != to
        && let Some(pos) = cx.spans.get(from).copied()
    {
        cx.spans.entry(to.to_string()).or_insert(pos);
    }
}

/// Whether a value asks for nothing: `false`, `""`, `[]` or `{}`.
fn asks_nothing(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Str(s) => s.is_empty(),
        Value::Seq(items) => items.is_empty(),
        Value::Map(entries) => entries.is_empty(),
        _ => false,
    }
}

/// Whether `v` is one of the strings `among`.
fn is_str(v: &Value, among: &[&str]) -> bool {
    matches!(v, Value::Str(s) if among.contains(&s.as_str()))
}

/// A seccomp or AppArmor profile of type `Unconfined`: what a host gives anyway.
fn is_unconfined(v: &Value) -> bool {
    match v {
        Value::Map(entries) => entries
            .iter()
            .any(|e| e.key == "type" && is_str(&e.value.value, &["Unconfined"])),
        other => asks_nothing(other),
    }
}

/// Accept a field that has no effect on a host, warning `why` unless it asks for nothing.
fn warn(cx: &mut Cx, o: &mut Obj<'_>, key: &'static str, why: &str) {
    warn_unless(cx, o, key, asks_nothing, why);
}

/// Accept a field that has no effect on a host, warning `why` unless `harmless` says its
/// value asks for nothing hostset does not do anyway. The warning points at the key of a
/// list or mapping (as every recorded path does), at the value of a scalar.
fn warn_unless(
    cx: &mut Cx,
    o: &mut Obj<'_>,
    key: &'static str,
    harmless: impl Fn(&Value) -> bool,
    why: &str,
) {
    if let Some((p, n)) = o.get(cx, key)
        && !harmless(&n.value)
    {
        cx.warn(&p, cx.pos_of(&p), why);
    }
}

/// Reject a field hostset cannot honour, unless it asks for nothing (`[]`, `{}`).
fn refuse(cx: &mut Cx, o: &mut Obj<'_>, key: &'static str, why: &str) {
    if let Some((p, n)) = o.get(cx, key)
        && !asks_nothing(&n.value)
    {
        cx.error(&p, cx.pos_of(&p), why);
    }
}
