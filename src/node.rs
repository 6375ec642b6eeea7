//! The node this host is: its node file, the facts the host reports, and the [`Node`] that
//! placement sees.
//!
//! An agent knows exactly one node, its own. It reads the node file ([`read_node`]), detects
//! the host's facts ([`HostFacts::detect`]) and combines the two ([`NodeFile::resolve`]) into
//! the name, labels and taints that [`crate::placement::evaluate`] matches daemonsets against.
//! Parsing and resolution are pure; only [`read_node`] and [`HostFacts::detect`] read files.
//!
//! # The node file
//!
//! The native node file is `/etc/hostset/node.toml` ([`DEFAULT_PATH`]). Every field is
//! optional; an empty file (or none) is a node named after the host with only the automatic
//! labels. Field names are Kubernetes' own.
//!
//! ```toml
//! # Optional: the node's name. Default: the host name, lower-cased.
//! name = "db-1"
//!
//! # Cordon the node: adds the taint node.kubernetes.io/unschedulable:NoSchedule.
//! # (Top-level keys come before the first [table] header.)
//! unschedulable = false
//!
//! # Labels, added to (and overriding) the automatic labels.
//! [labels]
//! "topology.kubernetes.io/zone" = "eu-west-1a"
//! "node-role.example.com/db" = ""
//! disktype = "ssd"
//!
//! # Taints, one table each.
//! [[taints]]
//! key = "dedicated"
//! value = "db"            # optional, default ""
//! effect = "NoSchedule"   # required: NoSchedule, PreferNoSchedule or NoExecute
//! ```
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `name` | string | The node name, a DNS-1123 subdomain (lower case, digits, `-`, `.`). Replaces the host name as kubelet's `--hostname-override` does, so it also becomes the `kubernetes.io/hostname` label. |
//! | `labels` | table of strings | Keys are label keys (`[prefix/]name`), values label values (at most 63 characters of `A-Za-z0-9-_.`, alphanumeric at both ends, or empty). They win over automatic labels of the same key. |
//! | `taints` | array of tables | `key` (a label key, required), `value` (a label value, default `""`), `effect` (required: `NoSchedule`, `PreferNoSchedule` or `NoExecute`). No two taints may share key and effect. |
//! | `unschedulable` | boolean | `true` adds `node.kubernetes.io/unschedulable:NoSchedule` unless a taint with that key and effect is already listed. Daemonsets tolerate it automatically, as in Kubernetes, so it only holds back daemonsets that opt out. |
//!
//! Instead of TOML, a node file may be a Kubernetes `v1` `Node` in YAML (`.yaml`, `.yml`) or
//! JSON (`.json`), e.g. the output of `kubectl get node NAME -o yaml` (a `v1` `List` holding
//! exactly one Node is accepted too, as `kubectl get nodes -o yaml` prints on a one-node
//! cluster). Read are `metadata.name` (required), `metadata.labels`, `spec.taints` and
//! `spec.unschedulable`. Fields the API server writes are skipped silently: the rest of
//! `metadata` (`uid`, `resourceVersion`, `managedFields`, `annotations`, ...),
//! `spec.podCIDR(s)`, `spec.providerID`, `spec.externalID`, `spec.configSource`,
//! `spec.taints[*].timeAdded` and all of `status`. Any other field is an error. Such a node is
//! complete as written: no automatic labels are added and nothing is derived from
//! `spec.unschedulable` (a cordoned node read from the API server already carries its
//! taint).
//!
//! Every value is checked with Kubernetes' node validation
//! (`pkg/apis/core/validation/validation.go`, `ValidateNode` and `validateNodeTaints`), and
//! each problem is reported as `FILE:LINE:COL: PATH: message`, the path spelled as in the
//! file (`taints[1].effect` in TOML, `spec.taints[1].effect` in YAML/JSON).
//!
//! # Automatic labels
//!
//! [`automatic_labels`] derives these from [`HostFacts`]:
//!
//! | label | value | source |
//! |---|---|---|
//! | `kubernetes.io/hostname` | the host name, lower-cased (kubelet's `GetHostname`) | `/proc/sys/kernel/hostname` |
//! | `kubernetes.io/os` | Go's `GOOS`: `linux` | compile target |
//! | `kubernetes.io/arch` | Go's `GOARCH`: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`, ... ([`go_arch`]) | compile target |
//! | `hostset.io/os-id` | `ID` (e.g. `ubuntu`, `debian`, `rhel`, `arch`) | `/etc/os-release`, else `/usr/lib/os-release` |
//! | `hostset.io/os-version-id` | `VERSION_ID` (e.g. `24.04`, `12`, `9.4`) | same |
//! | `hostset.io/kernel-release` | the kernel release, as `uname -r` prints it | `/proc/sys/kernel/osrelease` |
//!
//! A label is only set when its value can be a label value. The host name is used as is
//! (after lower-casing) or not at all: a label that differs from the host name would mislead
//! a `nodeSelector`. The os-release and kernel values are sanitized the way
//! node-feature-discovery sanitizes its kernel-version label
//! (`source/kernel/kernel.go`): every character other than `A-Za-z0-9-_.` becomes `_`, then
//! `-`, `_` and `.` are trimmed from both ends (`6.1.21-v8+` becomes `6.1.21-v8`). Values
//! still empty or longer than 63 characters are omitted, e.g. `VERSION_ID` on Debian sid and
//! Arch Linux, which have none. Without an `ID` the os-release default `linux` applies.
//!
//! # Resolution
//!
//! [`NodeFile::resolve`] builds the node of a native file: the name is `name`, else the host
//! name lower-cased; the labels are the automatic labels, then `kubernetes.io/hostname` set to
//! the node name, then the file's labels (the file wins); the taints are the file's, plus the
//! unschedulable taint when `unschedulable = true`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::placement::taints::{
    EFFECT_NO_EXECUTE, EFFECT_NO_SCHEDULE, EFFECT_PREFER_NO_SCHEDULE, TAINT_NODE_UNSCHEDULABLE,
};
use crate::spec::decode::{Cx, Obj};
use crate::spec::diag::did_you_mean;
use crate::spec::doc::{self, Pos, Value};
use crate::spec::{
    Format, Labels, Loaded, Node, Taint, documents, file_error, finish_diagnostics, read_text,
};
use crate::syntax::{is_dns1123_subdomain, is_qualified_name, is_valid_label_value};

/// Where the agent looks for its node file.
pub const DEFAULT_PATH: &str = "/etc/hostset/node.toml";

/// `v1.LabelHostname` (`staging/src/k8s.io/api/core/v1/well_known_labels.go`).
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// `v1.LabelOSStable` (`well_known_labels.go`).
pub const LABEL_OS: &str = "kubernetes.io/os";
/// `v1.LabelArchStable` (`well_known_labels.go`).
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
/// os-release `ID`.
pub const LABEL_OS_ID: &str = "hostset.io/os-id";
/// os-release `VERSION_ID`.
pub const LABEL_OS_VERSION_ID: &str = "hostset.io/os-version-id";
/// The kernel release (`uname -r`).
pub const LABEL_KERNEL_RELEASE: &str = "hostset.io/kernel-release";

/// What a node file says, before the host's facts are added.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeFile {
    /// The native `node.toml`: what the operator adds to what the host reports.
    Native {
        /// `name`: replaces the host name (kubelet's `--hostname-override`).
        name: Option<String>,
        /// `labels`: added to the automatic labels, winning on equal keys.
        labels: Labels,
        /// `taints`, in the order written.
        taints: Vec<Taint>,
        /// `unschedulable`.
        unschedulable: bool,
    },
    /// A Kubernetes `v1` `Node`: complete as written.
    Kubernetes(Node),
}

impl NodeFile {
    /// The node placement sees.
    ///
    /// For [`NodeFile::Native`]:
    /// - name: the file's `name`, else `facts.hostname` trimmed and lower-cased (kubelet's
    ///   `GetHostname`), else empty;
    /// - labels: [`automatic_labels`] (when `facts` is given), then `kubernetes.io/hostname`
    ///   set to the name (kubelet labels a node with its `--hostname-override`; without facts
    ///   this is the only automatic label), then the file's labels, which win;
    /// - taints: the file's, then `node.kubernetes.io/unschedulable:NoSchedule` appended when
    ///   `unschedulable` is true and no taint with that key and effect is listed. In
    ///   Kubernetes the node lifecycle controller adds this taint
    ///   (`pkg/controller/nodelifecycle/node_lifecycle_controller.go`,
    ///   `doNoScheduleTaintingPass`: "If unschedulable, append related taint"). An explicit
    ///   unschedulable taint is kept even when `unschedulable` is false.
    ///
    /// A [`NodeFile::Kubernetes`] node is returned as written; `facts` are not consulted.
    ///
    /// The name is not validated here: a host name that is no DNS-1123 subdomain (one with
    /// `_`, say) gives such a node name. Check it with
    /// [`crate::syntax::is_dns1123_subdomain`] and ask for `name` in the node file.
    pub fn resolve(&self, facts: Option<&HostFacts>) -> Node {
        let (name, file_labels, taints, unschedulable) = match self {
            NodeFile::Kubernetes(node) => return node.clone(),
            NodeFile::Native {
                name,
                labels,
                taints,
                unschedulable,
            } => (name, labels, taints, *unschedulable),
        };
        let name = match (name, facts) {
            (Some(name), _) => name.clone(),
            (None, Some(f)) => kubelet_hostname(&f.hostname),
            (None, None) => String::new(),
        };
        let mut labels = facts.map(automatic_labels).unwrap_or_default();
        if !name.is_empty() && is_valid_label_value(&name).is_empty() {
            labels.insert(LABEL_HOSTNAME.to_string(), name.clone());
        } else {
            labels.remove(LABEL_HOSTNAME);
        }
        labels.extend(file_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut taints = taints.clone();
        if unschedulable
            && !taints
                .iter()
                .any(|t| t.key == TAINT_NODE_UNSCHEDULABLE && t.effect == EFFECT_NO_SCHEDULE)
        {
            taints.push(Taint {
                key: TAINT_NODE_UNSCHEDULABLE.to_string(),
                value: String::new(),
                effect: EFFECT_NO_SCHEDULE.to_string(),
            });
        }
        Node {
            name,
            labels,
            taints,
            unschedulable,
        }
    }
}

/// Read and check a node file, choosing the format by extension (`.toml`, `.yaml`/`.yml`,
/// `.json`).
pub fn read_node(path: &Path) -> Loaded<NodeFile> {
    match read_text(path) {
        Ok((text, format)) => parse_node(&path.display().to_string(), &text, format),
        Err(d) => Loaded {
            items: Vec::new(),
            diagnostics: vec![d],
        },
    }
}

/// Decode and check one node file's text. `file` names it in diagnostics.
///
/// `items` holds the node when the file could be decoded at all; use it only when
/// [`Loaded::has_errors`] is false. Diagnostics are in file order.
pub fn parse_node(file: &str, text: &str, format: Format) -> Loaded<NodeFile> {
    let mut loaded = Loaded {
        items: Vec::new(),
        diagnostics: Vec::new(),
    };
    let docs = match documents(file, text, format) {
        Ok(d) => d,
        Err(e) => {
            loaded.diagnostics.push(e);
            return loaded;
        }
    };
    match docs.as_slice() {
        [] => loaded.diagnostics.push(file_error(
            file,
            None,
            "the file holds no node: write a Kubernetes v1 Node (apiVersion: v1, kind: Node)"
                .to_string(),
        )),
        [root] => {
            let mut cx = Cx::default();
            let decoded = match format {
                Format::Toml => decode_native(&mut cx, root),
                Format::Yaml | Format::Json => decode_kubernetes(&mut cx, root),
            };
            loaded.items.extend(decoded);
            finish_diagnostics(file, cx, &mut loaded.diagnostics);
        }
        [_, second, ..] => loaded.diagnostics.push(file_error(
            file,
            Some(start(second)),
            format!(
                "the file holds {} documents: a node file describes exactly one node, this host",
                docs.len()
            ),
        )),
    }
    loaded
        .diagnostics
        .sort_by_key(|d| (d.pos.map(|p| (p.line, p.col)), d.severity));
    loaded
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// The native `node.toml`.
fn decode_native(cx: &mut Cx, root: &doc::Node) -> Option<NodeFile> {
    let mut o = Obj::new(cx, "", root)?;
    let name = o.string(cx, "name");
    let labels = o.string_map(cx, "labels");
    let taints = o.list(cx, "taints");
    let taints = decode_taints(cx, taints, false);
    let unschedulable = o.bool(cx, "unschedulable").unwrap_or(false);
    o.finish(cx);

    if let Some(name) = &name {
        if name.is_empty() {
            cx.error(
                "name",
                cx.pos_of("name"),
                "must not be empty: remove `name` to name the node after the host",
            );
        } else {
            check_name(cx, "name", name);
        }
    }
    check_labels(cx, "labels", &labels);
    check_taints(cx, &taints);
    Some(NodeFile::Native {
        name,
        labels,
        taints: taints.into_iter().map(|(_, t)| t).collect(),
        unschedulable,
    })
}

/// Where a value starts as a reader sees it: a mapping at its first key (YAML parsers place
/// a block mapping where its first value begins).
fn start(node: &doc::Node) -> Pos {
    match &node.value {
        Value::Map(entries) if !entries.is_empty() => entries[0].key_pos,
        _ => node.pos,
    }
}

/// Where a field of a mapping is written (its key), else where the mapping starts: the place
/// to report the field as missing.
fn field_pos(node: &doc::Node, key: &str) -> Pos {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|e| e.key == key)
            .map_or_else(|| start(node), |e| e.key_pos),
        _ => node.pos,
    }
}

/// The value of a top-level string field, without taking it.
fn peek_string<'n>(root: &'n doc::Node, key: &str) -> Option<&'n str> {
    let Value::Map(entries) = &root.value else {
        return None;
    };
    match &entries.iter().find(|e| e.key == key)?.value.value {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// A Kubernetes `v1` `Node`, or a `v1` `List` of exactly one.
fn decode_kubernetes(cx: &mut Cx, root: &doc::Node) -> Option<NodeFile> {
    if peek_string(root, "kind") != Some("List") {
        return kubernetes_node(cx, "", root).map(NodeFile::Kubernetes);
    }
    let mut o = Obj::new(cx, "", root)?;
    o.skip(cx, "kind");
    check_api_version(cx, &mut o, root);
    o.skip(cx, "metadata");
    let Some((items_path, items_node)) = o.get(cx, "items") else {
        cx.error(
            "items",
            Some(start(root)),
            "required: a List holding the one Node of this host",
        );
        o.finish(cx);
        return None;
    };
    let items = cx.list(&items_path, items_node);
    o.finish(cx);
    match items.as_slice() {
        [(path, item)] => kubernetes_node(cx, path, item).map(NodeFile::Kubernetes),
        _ => {
            cx.error(
                &items_path,
                cx.pos_of(&items_path),
                format!(
                    "holds {} items: a node file describes exactly one node, this host \
                     (`kubectl get node NAME -o yaml` prints just that one)",
                    items.len()
                ),
            );
            None
        }
    }
}

/// `apiVersion` must be `v1`.
fn check_api_version(cx: &mut Cx, o: &mut Obj<'_>, node: &doc::Node) {
    let path = o.child("apiVersion");
    match o.string(cx, "apiVersion") {
        Some(v) if v == "v1" => {}
        Some(v) => cx.error(
            &path,
            cx.pos_of(&path),
            format!("unsupported value \"{v}\": a Node's apiVersion is \"v1\""),
        ),
        None => cx.error(
            &path,
            Some(field_pos(node, "apiVersion")),
            "required: \"v1\"",
        ),
    }
}

/// One `v1` `Node` object at `path` (`""` for the document root).
fn kubernetes_node(cx: &mut Cx, path: &str, node: &doc::Node) -> Option<Node> {
    let mut o = Obj::new(cx, path, node)?;
    let start = start(node);
    let kind_path = o.child("kind");
    match o.string(cx, "kind") {
        Some(k) if k == "Node" => {}
        Some(k) => {
            cx.error(
                &kind_path,
                cx.pos_of(&kind_path),
                format!("unsupported value \"{k}\": a node file holds a \"Node\""),
            );
            return None;
        }
        None => cx.error(
            &kind_path,
            Some(field_pos(node, "kind")),
            "required: \"Node\" (a YAML or JSON node file is a Kubernetes v1 Node; the native \
             node file is TOML)",
        ),
    }
    check_api_version(cx, &mut o, node);

    let name_path = o.child("metadata.name");
    let has_metadata = o.has("metadata");
    let mut name = None;
    let mut labels = Labels::new();
    if let Some(mut m) = o.obj(cx, "metadata") {
        name = m.string(cx, "name");
        labels = m.string_map(cx, "labels");
        if let Some(ns) = m.string(cx, "namespace")
            && !ns.is_empty()
        {
            let p = m.child("namespace");
            cx.error(
                &p,
                cx.pos_of(&p),
                format!("invalid value \"{ns}\": nodes have no namespace; remove it"),
            );
        }
        for key in [
            "annotations",
            "generateName",
            "selfLink",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "ownerReferences",
            "finalizers",
            "managedFields",
        ] {
            m.skip(cx, key);
        }
        m.finish(cx);
    }
    match name.as_deref() {
        None | Some("") => cx.error(
            &name_path,
            if has_metadata {
                cx.pos_of(&name_path)
            } else {
                Some(start)
            },
            "required: the node's name, a DNS-1123 subdomain such as \"worker-1\"",
        ),
        Some(n) => check_name(cx, &name_path, n),
    }
    check_labels(cx, &o.child("metadata.labels"), &labels);

    let mut taints = Vec::new();
    let mut unschedulable = false;
    if let Some(mut s) = o.obj(cx, "spec") {
        let items = s.list(cx, "taints");
        taints = decode_taints(cx, items, true);
        unschedulable = s.bool(cx, "unschedulable").unwrap_or(false);
        for key in [
            "podCIDR",
            "podCIDRs",
            "providerID",
            "externalID",
            "configSource",
        ] {
            s.skip(cx, key);
        }
        s.finish(cx);
    }
    check_taints(cx, &taints);
    o.skip(cx, "status");
    o.finish(cx);

    Some(Node {
        name: name.unwrap_or_default(),
        labels,
        taints: taints.into_iter().map(|(_, t)| t).collect(),
        unschedulable,
    })
}

/// The items of a `taints` list, each with its path. In a Kubernetes Node, `timeAdded` (set
/// by the API server on NoExecute taints) is skipped.
fn decode_taints(
    cx: &mut Cx,
    items: Vec<(String, &doc::Node)>,
    kubernetes: bool,
) -> Vec<(String, Taint)> {
    let mut out = Vec::new();
    for (path, n) in items {
        let Some(mut o) = Obj::new(cx, &path, n) else {
            continue;
        };
        if kubernetes {
            // Errors about the taint as a whole point at its first field, not where the YAML
            // parser places the mapping.
            cx.spans.insert(path.clone(), start(n));
        }
        let taint = Taint {
            key: o.string(cx, "key").unwrap_or_default(),
            value: o.string(cx, "value").unwrap_or_default(),
            effect: o.string(cx, "effect").unwrap_or_default(),
        };
        if kubernetes {
            o.skip(cx, "timeAdded");
        }
        o.finish(cx);
        out.push((path, taint));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Validation: `ValidateNode` (`pkg/apis/core/validation/validation.go`), on decoded values.

/// `ValidateNodeName`: a DNS-1123 subdomain.
fn check_name(cx: &mut Cx, path: &str, name: &str) {
    for m in is_dns1123_subdomain(name) {
        cx.error(
            path,
            cx.pos_of(path),
            format!("invalid value \"{name}\": {m}"),
        );
    }
}

/// `ValidateLabels`: keys are qualified names, values label values. Reported at the map's
/// path, located at the offending key.
fn check_labels(cx: &mut Cx, path: &str, labels: &Labels) {
    for (k, v) in labels {
        let pos = cx.pos_of(&format!("{path}[{k}]"));
        for m in is_qualified_name(k) {
            cx.error(path, pos, format!("invalid label key \"{k}\": {m}"));
        }
        for m in is_valid_label_value(v) {
            cx.error(
                path,
                pos,
                format!("invalid label value \"{v}\" for key \"{k}\": {m}"),
            );
        }
    }
}

const TAINT_EFFECTS: [&str; 3] = [
    EFFECT_NO_SCHEDULE,
    EFFECT_PREFER_NO_SCHEDULE,
    EFFECT_NO_EXECUTE,
];
const TAINT_EFFECTS_LIST: &str = "\"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"";

/// `validateNodeTaints`: key a qualified name, value a label value, effect one of three and
/// required, and no two taints with the same key and effect.
fn check_taints(cx: &mut Cx, taints: &[(String, Taint)]) {
    let mut seen: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for (path, t) in taints {
        let at = |field: &str| format!("{path}.{field}");
        let (key_path, value_path, effect_path) = (at("key"), at("value"), at("effect"));
        if t.key.is_empty() {
            cx.error(
                &key_path,
                cx.pos_of(&key_path),
                "required: a label key such as \"dedicated\" or \"example.com/gpu\"",
            );
        } else {
            for m in is_qualified_name(&t.key) {
                cx.error(
                    &key_path,
                    cx.pos_of(&key_path),
                    format!("invalid key \"{}\": {m}", t.key),
                );
            }
        }
        for m in is_valid_label_value(&t.value) {
            cx.error(
                &value_path,
                cx.pos_of(&value_path),
                format!("invalid value \"{}\": {m}", t.value),
            );
        }
        if t.effect.is_empty() {
            cx.error(
                &effect_path,
                cx.pos_of(&effect_path),
                format!("required: one of {TAINT_EFFECTS_LIST}"),
            );
        } else if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
            let hint = did_you_mean(&t.effect, &TAINT_EFFECTS)
                .map(|s| format!(" (did you mean \"{s}\"?)"))
                .unwrap_or_default();
            cx.error(
                &effect_path,
                cx.pos_of(&effect_path),
                format!(
                    "unsupported value \"{}\"{hint}: supported values: {TAINT_EFFECTS_LIST}",
                    t.effect
                ),
            );
        }
        // A taint without key or effect has its "required" error already.
        if t.key.is_empty() || t.effect.is_empty() {
            continue;
        }
        match seen.get(&(t.key.as_str(), t.effect.as_str())) {
            Some(first) => cx.error(
                path,
                cx.pos_of(path),
                format!(
                    "duplicate taint \"{t}\": {first} has the same key and effect; taints must be \
                     unique by key and effect pair"
                ),
            ),
            None => {
                seen.insert((&t.key, &t.effect), path);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host facts

/// What the host itself reports about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The kernel's host name, trimmed, as written (not lower-cased).
    pub hostname: String,
    /// Go's `GOOS` for this build: `linux`.
    pub os: String,
    /// Go's `GOARCH` for this build ([`go_arch`]): `amd64`, `arm64`, ...
    pub arch: String,
    /// os-release `ID`; `linux` when os-release has none, `None` without os-release.
    pub os_id: Option<String>,
    /// os-release `VERSION_ID`, when set (rolling releases have none).
    pub os_version_id: Option<String>,
    /// The kernel release (`uname -r`), when known.
    pub kernel_release: Option<String>,
}

impl HostFacts {
    /// Read the facts of the running host:
    /// - host name: `/proc/sys/kernel/hostname` (what Go's `os.Hostname` and so kubelet read),
    ///   else the first line of `/etc/hostname` that is not a comment, else empty;
    /// - os-release: `/etc/os-release`, else `/usr/lib/os-release` (os-release(5));
    /// - kernel release: `/proc/sys/kernel/osrelease`.
    ///
    /// Never fails: what cannot be read is empty or `None`.
    pub fn detect() -> HostFacts {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let hostname = read("/proc/sys/kernel/hostname")
            .filter(|h| !h.trim().is_empty())
            .or_else(|| {
                read("/etc/hostname")?
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let os_release = read("/etc/os-release").or_else(|| read("/usr/lib/os-release"));
        let kernel = read("/proc/sys/kernel/osrelease");
        HostFacts::from_sources(&hostname, os_release.as_deref(), kernel.as_deref())
    }

    /// The facts from given texts: the host name, the contents of os-release (`None` when
    /// there is none) and the kernel release. `os` and `arch` are those of this build.
    pub fn from_sources(
        hostname: &str,
        os_release: Option<&str>,
        kernel_release: Option<&str>,
    ) -> HostFacts {
        let fields = os_release.map(parse_os_release);
        let field = |key: &str| {
            fields
                .as_ref()?
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        HostFacts {
            hostname: hostname.trim().to_string(),
            os: go_os(std::env::consts::OS).to_string(),
            arch: go_arch(std::env::consts::ARCH, cfg!(target_endian = "big")),
            // os-release(5), ID: "If not set, a default of "ID=linux" may be used."
            os_id: field("ID").or_else(|| fields.as_ref().map(|_| "linux".to_string())),
            os_version_id: field("VERSION_ID"),
            kernel_release: kernel_release
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string),
        }
    }
}

/// Go's `GOOS` for a Rust `std::env::consts::OS`.
fn go_os(rust_os: &str) -> &str {
    match rust_os {
        "macos" => "darwin",
        other => other,
    }
}

/// Go's `GOARCH` (the value of `kubernetes.io/arch`) for a Rust `std::env::consts::ARCH`.
///
/// Rust names one architecture for both byte orders where Go has two names, hence
/// `big_endian`. Architectures Go does not know keep their Rust name.
pub fn go_arch(rust_arch: &str, big_endian: bool) -> String {
    let go = match (rust_arch, big_endian) {
        ("x86_64", _) => "amd64",
        ("x86", _) => "386",
        ("aarch64", false) => "arm64",
        ("aarch64", true) => "arm64be",
        ("arm", false) => "arm",
        ("arm", true) => "armbe",
        ("powerpc64", false) => "ppc64le",
        ("powerpc64", true) => "ppc64",
        ("powerpc", _) => "ppc",
        ("s390x", _) => "s390x",
        ("riscv64", _) => "riscv64",
        ("riscv32", _) => "riscv",
        ("loongarch64", _) => "loong64",
        ("mips" | "mips32r6", false) => "mipsle",
        ("mips" | "mips32r6", true) => "mips",
        ("mips64" | "mips64r6", false) => "mips64le",
        ("mips64" | "mips64r6", true) => "mips64",
        ("sparc64", _) => "sparc64",
        ("sparc", _) => "sparc",
        ("wasm32", _) => "wasm",
        (other, _) => other,
    };
    go.to_string()
}

/// The assignments of an os-release file (os-release(5)), later ones winning.
///
/// Parsed as systemd parses it (`src/basic/env-file.c`, `parse_env_file_internal`):
/// `KEY=value` lines; blank lines and lines starting with `#` or `;` are ignored; whitespace
/// around the key and before the value is dropped. A value may be `"double quoted"` (where
/// `\"`, `\\`, `` \` `` and `\$` stand for the character, `\` before a newline joins lines,
/// and any other `\` is kept), `'single quoted'` (taken literally), or bare (where `\` takes
/// the next character literally and trailing whitespace is dropped). Text after a closing
/// quote is appended as bare text. A line without `=` is ignored.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        PreKey,
        Key,
        PreValue,
        Value,
        ValueEscape,
        SingleQuote,
        DoubleQuote,
        DoubleQuoteEscape,
        Comment,
    }
    /// `SHELL_NEED_ESCAPE` in systemd's `escape.h`.
    const NEED_ESCAPE: &str = "\"\\`$";
    let is_newline = |c: char| c == '\n' || c == '\r';
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');

    let mut out = BTreeMap::new();
    let mut state = State::PreKey;
    let (mut key, mut value) = (String::new(), String::new());
    // Byte lengths at which trailing whitespace began, to be cut off.
    let (mut key_ws, mut value_ws): (Option<usize>, Option<usize>) = (None, None);
    let mut push =
        |key: &mut String, value: &mut String, key_ws: Option<usize>, value_ws: Option<usize>| {
            if let Some(n) = key_ws {
                key.truncate(n);
            }
            if let Some(n) = value_ws {
                value.truncate(n);
            }
            out.insert(std::mem::take(key), std::mem::take(value));
        };

    for c in text.chars() {
        match state {
            State::PreKey => {
                if c == '#' || c == ';' {
                    state = State::Comment;
                } else if !is_space(c) {
                    state = State::Key;
                    key_ws = None;
                    key.push(c);
                }
            }
            State::Key => {
                if is_newline(c) {
                    state = State::PreKey;
                    key.clear();
                } else if c == '=' {
                    state = State::PreValue;
                    value_ws = None;
                } else {
                    if !is_space(c) {
                        key_ws = None;
                    } else if key_ws.is_none() {
                        key_ws = Some(key.len());
                    }
                    key.push(c);
                }
            }
            State::PreValue => {
                if is_newline(c) {
                    state = State::PreKey;
                    push(&mut key, &mut value, key_ws, None);
                } else if c == '\'' {
                    state = State::SingleQuote;
                } else if c == '"' {
                    state = State::DoubleQuote;
                } else if c == '\\' {
                    state = State::ValueEscape;
                } else if !is_space(c) {
                    state = State::Value;
                    value.push(c);
                }
            }
            State::Value => {
                if is_newline(c) {
                    state = State::PreKey;
                    push(&mut key, &mut value, key_ws, value_ws);
                } else if c == '\\' {
                    state = State::ValueEscape;
                    value_ws = None;
                } else {
                    if !is_space(c) {
                        value_ws = None;
                    } else if value_ws.is_none() {
                        value_ws = Some(value.len());
                    }
                    value.push(c);
                }
            }
            State::ValueEscape => {
                state = State::Value;
                // An escaped newline joins the lines.
                if !is_newline(c) {
                    value.push(c);
                }
            }
            State::SingleQuote => {
                if c == '\'' {
                    state = State::Value;
                } else {
                    value.push(c);
                }
            }
            State::DoubleQuote => {
                if c == '"' {
                    state = State::Value;
                } else if c == '\\' {
                    state = State::DoubleQuoteEscape;
                } else {
                    value.push(c);
                }
            }
            State::DoubleQuoteEscape => {
                state = State::DoubleQuote;
                if NEED_ESCAPE.contains(c) {
                    value.push(c);
                } else if c != '\n' {
                    value.push('\\');
                    value.push(c);
                }
            }
            State::Comment => {
                if is_newline(c) {
                    state = State::PreKey;
                }
            }
        }
    }
    match state {
        State::Value => push(&mut key, &mut value, key_ws, value_ws),
        State::PreValue
        | State::ValueEscape
        | State::SingleQuote
        | State::DoubleQuote
        | State::DoubleQuoteEscape => push(&mut key, &mut value, key_ws, None),
        State::PreKey | State::Key | State::Comment => {}
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Automatic labels

/// kubelet's node host name: trimmed and lower-cased (`GetHostname`,
/// `staging/src/k8s.io/component-helpers/node/util/hostname.go`, formerly `pkg/util/node`).
fn kubelet_hostname(hostname: &str) -> String {
    hostname.trim().to_lowercase()
}

/// node-feature-discovery's kernel-version sanitizing (`source/kernel/kernel.go`): characters
/// outside `[-A-Za-z0-9_.]` become `_`, then `-_.` are trimmed from both ends. `None` when the
/// result is empty or still no valid label value (longer than 63 characters).
fn sanitize_label_value(s: &str) -> Option<String> {
    let replaced: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = replaced.trim_matches(['-', '_', '.']);
    (!trimmed.is_empty() && is_valid_label_value(trimmed).is_empty()).then(|| trimmed.to_string())
}

/// The labels a host gets without being told: see the [module docs](self#automatic-labels).
///
/// `kubernetes.io/hostname` is the host name lower-cased, as kubelet sets it
/// (`pkg/kubelet/kubelet_node_status.go`, `initialNode`), and is left out when that is not a
/// valid label value. `kubernetes.io/os` and `kubernetes.io/arch` are kubelet's `GOOS` and
/// `GOARCH`. The `hostset.io/` labels carry os-release `ID` and `VERSION_ID` and the kernel
/// release, sanitized, and are left out when unknown or unusable.
pub fn automatic_labels(facts: &HostFacts) -> Labels {
    let mut labels = Labels::new();
    let hostname = kubelet_hostname(&facts.hostname);
    if !hostname.is_empty() && is_valid_label_value(&hostname).is_empty() {
        labels.insert(LABEL_HOSTNAME.to_string(), hostname);
    }
    let sanitized = [
        (LABEL_OS, Some(facts.os.as_str())),
        (LABEL_ARCH, Some(facts.arch.as_str())),
        (LABEL_OS_ID, facts.os_id.as_deref()),
        (LABEL_OS_VERSION_ID, facts.os_version_id.as_deref()),
        (LABEL_KERNEL_RELEASE, facts.kernel_release.as_deref()),
    ];
    for (key, value) in sanitized {
        if let Some(v) = value.and_then(sanitize_label_value) {
            labels.insert(key.to_string(), v);
        }
    }
    labels
}
