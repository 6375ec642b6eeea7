//! Node files (native TOML, Kubernetes v1 Node in YAML and JSON), host facts, automatic
//! labels and resolution into the node placement sees.
//!
//! Validation cases follow `pkg/apis/core/validation/validation.go` (`ValidateNode`,
//! `validateNodeTaints`); messages are asserted as the exact `FILE:LINE:COL: PATH: message`
//! lines a user sees.

use std::path::PathBuf;

use hostset::node::{
    HostFacts, NodeFile, automatic_labels, go_arch, parse_node, parse_os_release, read_node,
};
use hostset::spec::{Format, Labels, Loaded, Node, Taint};

// Kubernetes' wording, from `k8s.io/apimachinery/pkg/util/validation` (see `hostset::syntax`).
const DNS1123_SUBDOMAIN_FMT: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')";
const QUALIFIED_NAME_FMT: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', \
and must start and end with an alphanumeric character (e.g. 'MyName', 'my.name', or '123-abc')";
const LABEL_VALUE_FMT: &str = "a valid label must be an empty string or consist of alphanumeric \
characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', \
'my_value', or '12345')";
const EFFECTS: &str = "\"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"";

fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: value.into(),
        effect: effect.into(),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The one node of a file that must be free of diagnostics.
fn clean(file: &str, text: &str, format: Format) -> NodeFile {
    let loaded = parse_node(file, text, format);
    let shown: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        shown.is_empty(),
        "unexpected diagnostics:\n{}",
        shown.join("\n")
    );
    assert_eq!(loaded.items.len(), 1);
    loaded.items.into_iter().next().unwrap()
}

/// Every diagnostic of a file, as displayed.
fn shown(file: &str, text: &str, format: Format) -> Vec<String> {
    diagnostics(&parse_node(file, text, format))
}

fn diagnostics<T>(loaded: &Loaded<T>) -> Vec<String> {
    loaded.diagnostics.iter().map(ToString::to_string).collect()
}

fn assert_lines(got: Vec<String>, want: &[String]) {
    assert_eq!(got, want, "\ngot:\n{}\n", got.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Native node.toml

const NATIVE: &str = r#"# /etc/hostset/node.toml
name = "db-1"
unschedulable = true

[labels]
"topology.kubernetes.io/zone" = "eu-west-1a"
"node-role.example.com/db" = ""
disktype = "ssd"

[[taints]]
key = "dedicated"
value = "db"
effect = "NoSchedule"

[[taints]]
key = "example.com/maintenance"
effect = "NoExecute"
"#;

#[test]
fn native_file() {
    let file = clean("node.toml", NATIVE, Format::Toml);
    assert_eq!(
        file,
        NodeFile::Native {
            name: Some("db-1".into()),
            labels: labels(&[
                ("topology.kubernetes.io/zone", "eu-west-1a"),
                ("node-role.example.com/db", ""),
                ("disktype", "ssd"),
            ]),
            taints: vec![
                taint("dedicated", "db", "NoSchedule"),
                taint("example.com/maintenance", "", "NoExecute"),
            ],
            unschedulable: true,
        }
    );
}

#[test]
fn native_file_may_be_empty() {
    let want = NodeFile::Native {
        name: None,
        labels: Labels::new(),
        taints: vec![],
        unschedulable: false,
    };
    assert_eq!(clean("node.toml", "", Format::Toml), want);
    assert_eq!(clean("node.toml", "# nothing to add\n", Format::Toml), want);
}

#[test]
fn native_name_errors() {
    assert_lines(
        shown("node.toml", "name = \"DB_1\"\n", Format::Toml),
        &[format!(
            "node.toml:1:8: name: invalid value \"DB_1\": {DNS1123_SUBDOMAIN_FMT}"
        )],
    );
    assert_lines(
        shown("node.toml", "name = \"\"\n", Format::Toml),
        &[
            "node.toml:1:8: name: must not be empty: remove `name` to name the node after the host"
                .into(),
        ],
    );
    let long = "a".repeat(254);
    assert_lines(
        shown("node.toml", &format!("name = \"{long}\"\n"), Format::Toml),
        &[format!(
            "node.toml:1:8: name: invalid value \"{long}\": must be no more than 253 characters"
        )],
    );
    assert_lines(
        shown("node.toml", "name = 7\n", Format::Toml),
        &["node.toml:1:8: name: must be a string, not an integer (quote the value to make it a string)".into()],
    );
}

#[test]
fn native_label_errors() {
    let text = "[labels]\n\"-bad\" = \"ok\"\ngood = \"not ok!\"\n\"a/b/c\" = \"x\"\nlong = \""
        .to_string()
        + &"v".repeat(64)
        + "\"\n";
    assert_lines(
        shown("node.toml", &text, Format::Toml),
        &[
            format!("node.toml:2:1: labels: invalid label key \"-bad\": {QUALIFIED_NAME_FMT}"),
            format!(
                "node.toml:3:1: labels: invalid label value \"not ok!\" for key \"good\": {LABEL_VALUE_FMT}"
            ),
            "node.toml:4:1: labels: invalid label key \"a/b/c\": a qualified name must consist of \
             alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
             character (e.g. 'MyName', 'my.name', or '123-abc') with an optional DNS subdomain prefix \
             and '/' (e.g. 'example.com/MyName'); \"a/b/c\" has more than one '/'"
                .into(),
            format!(
                "node.toml:5:1: labels: invalid label value \"{}\" for key \"long\": must be no more than \
                 63 characters",
                "v".repeat(64)
            ),
        ],
    );
    assert_lines(
        shown("node.toml", "labels = { zone = 1 }\n", Format::Toml),
        &["node.toml:1:19: labels[zone]: must be a string, not an integer (quote the value to make it a \
           string)"
            .into()],
    );
}

#[test]
fn native_taint_errors() {
    let text = r#"[[taints]]
key = ""
value = "x"
effect = ""

[[taints]]
key = "a/"
value = "-v"
effect = "noschedule"

[[taints]]
key = "dedicated"
effect = "NoSchedule"

[[taints]]
key = "dedicated"
value = "other"
effect = "NoSchedule"

[[taints]]
key = "dedicated"
effect = "NoExecute"

[[taints]]
value = "x"

[[taints]]
key = "k"
effect = "Evict"
"#;
    assert_lines(
        shown("node.toml", text, Format::Toml),
        &[
            "node.toml:2:7: taints[0].key: required: a label key such as \"dedicated\" or \"example.com/gpu\"".into(),
            format!("node.toml:4:10: taints[0].effect: required: one of {EFFECTS}"),
            "node.toml:7:7: taints[1].key: invalid key \"a/\": name part must be non-empty".into(),
            format!("node.toml:8:9: taints[1].value: invalid value \"-v\": {LABEL_VALUE_FMT}"),
            format!(
                "node.toml:9:10: taints[1].effect: unsupported value \"noschedule\" (did you mean \
                 \"NoSchedule\"?): supported values: {EFFECTS}"
            ),
            "node.toml:15:1: taints[3]: duplicate taint \"dedicated=other:NoSchedule\": taints[2] has the \
             same key and effect; taints must be unique by key and effect pair"
                .into(),
            "node.toml:24:1: taints[5].key: required: a label key such as \"dedicated\" or \"example.com/gpu\""
                .into(),
            format!("node.toml:24:1: taints[5].effect: required: one of {EFFECTS}"),
            format!("node.toml:29:10: taints[6].effect: unsupported value \"Evict\": supported values: {EFFECTS}"),
        ],
    );
}

#[test]
fn native_unknown_fields_and_types() {
    let text = r#"nme = "x"
unschedulable = "yes"
taints = [{ key = "k", effect = "NoSchedule", tolerationSeconds = 3 }, "k=v:NoSchedule"]
[lables]
a = "b"
"#;
    assert_lines(
        shown("node.toml", text, Format::Toml),
        &[
            "node.toml:1:1: nme: unknown field \"nme\", did you mean \"name\"?".into(),
            "node.toml:2:17: unschedulable: must be true or false, not a string".into(),
            "node.toml:3:47: taints[0].tolerationSeconds: unknown field \"tolerationSeconds\"; valid fields \
             here: effect, key, value"
                .into(),
            "node.toml:3:72: taints[1]: must be a mapping, not a string".into(),
            "node.toml:4:2: lables: unknown field \"lables\", did you mean \"labels\"?".into(),
        ],
    );
}

#[test]
fn native_syntax_error() {
    let got = shown("node.toml", "name = \"a\"\nlabels = {\n", Format::Toml);
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("node.toml:2:"), "{got:?}");
    assert!(got[0].contains(": invalid TOML: "), "{got:?}");
}

// ---------------------------------------------------------------------------------------------
// Kubernetes v1 Node, as `kubectl get node NAME -o yaml` prints it

const KUBECTL_YAML: &str = r#"apiVersion: v1
kind: Node
metadata:
  annotations:
    kubeadm.alpha.kubernetes.io/cri-socket: unix:///var/run/containerd/containerd.sock
    node.alpha.kubernetes.io/ttl: "0"
    volumes.kubernetes.io/controller-managed-attach-detach: "true"
  creationTimestamp: "2024-05-02T09:14:31Z"
  labels:
    beta.kubernetes.io/arch: amd64
    beta.kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: worker-1
    kubernetes.io/os: linux
    node.kubernetes.io/instance-type: m5.large
    topology.kubernetes.io/zone: eu-west-1a
  managedFields:
  - apiVersion: v1
    fieldsType: FieldsV1
    fieldsV1:
      f:metadata:
        f:annotations:
          .: {}
          f:volumes.kubernetes.io/controller-managed-attach-detach: {}
        f:labels:
          .: {}
          f:kubernetes.io/hostname: {}
    manager: kubelet
    operation: Update
    time: "2024-05-02T09:14:31Z"
  - apiVersion: v1
    fieldsType: FieldsV1
    fieldsV1:
      f:status:
        f:conditions:
          k:{"type":"Ready"}:
            f:lastHeartbeatTime: {}
    manager: kubelet
    operation: Update
    subresource: status
    time: "2024-06-11T16:02:10Z"
  name: worker-1
  resourceVersion: "5723194"
  uid: 0b9f6a3e-2a4c-4b59-8b8e-6f1d2f0d9a11
spec:
  podCIDR: 10.244.1.0/24
  podCIDRs:
  - 10.244.1.0/24
  providerID: aws:///eu-west-1a/i-0abc123def4567890
  taints:
  - effect: NoSchedule
    key: dedicated
    value: db
  - effect: NoSchedule
    key: node.kubernetes.io/unschedulable
    timeAdded: "2024-06-11T16:01:00Z"
  - effect: NoExecute
    key: node.kubernetes.io/unreachable
    timeAdded: "2024-06-11T16:05:00Z"
  unschedulable: true
status:
  addresses:
  - address: 10.0.1.23
    type: InternalIP
  - address: worker-1
    type: Hostname
  allocatable:
    cpu: "2"
    ephemeral-storage: "95551679124"
    hugepages-1Gi: "0"
    hugepages-2Mi: "0"
    memory: 7865484Ki
    pods: "110"
  capacity:
    cpu: "2"
    ephemeral-storage: 101430960Ki
    hugepages-1Gi: "0"
    hugepages-2Mi: "0"
    memory: 7967884Ki
    pods: "110"
  conditions:
  - lastHeartbeatTime: "2024-06-11T16:02:10Z"
    lastTransitionTime: "2024-05-02T09:15:02Z"
    message: kubelet is posting ready status
    reason: KubeletReady
    status: "True"
    type: Ready
  daemonEndpoints:
    kubeletEndpoint:
      Port: 10250
  images:
  - names:
    - registry.k8s.io/kube-proxy@sha256:2d0a6e1b9f4c2a8d0f1e3c5b7a9d8e6f4c2b0a1d3e5f7a9c8b6d4e2f0a1c3e5b
    - registry.k8s.io/kube-proxy:v1.30.1
    sizeBytes: 29020473
  - names:
    - registry.k8s.io/pause:3.9
    sizeBytes: 321520
  nodeInfo:
    architecture: amd64
    bootID: 7f3c9a52-1b7e-4d8e-9c1f-2a6b3c4d5e6f
    containerRuntimeVersion: containerd://1.7.16
    kernelVersion: 6.8.0-1008-aws
    kubeProxyVersion: v1.30.1
    kubeletVersion: v1.30.1
    machineID: ec2a1b2c3d4e5f60718293a4b5c6d7e8
    operatingSystem: linux
    osImage: Ubuntu 24.04 LTS
    systemUUID: ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8
"#;

const KUBECTL_JSON: &str = r#"{
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "annotations": {
            "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true"
        },
        "creationTimestamp": "2024-05-02T09:14:31Z",
        "labels": {
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": "worker-1",
            "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": "m5.large",
            "topology.kubernetes.io/zone": "eu-west-1a"
        },
        "managedFields": [
            {
                "apiVersion": "v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/hostname": {}}}},
                "manager": "kubelet",
                "operation": "Update",
                "time": "2024-05-02T09:14:31Z"
            }
        ],
        "name": "worker-1",
        "resourceVersion": "5723194",
        "uid": "0b9f6a3e-2a4c-4b59-8b8e-6f1d2f0d9a11"
    },
    "spec": {
        "podCIDR": "10.244.1.0/24",
        "podCIDRs": ["10.244.1.0/24"],
        "providerID": "aws:///eu-west-1a/i-0abc123def4567890",
        "taints": [
            {"effect": "NoSchedule", "key": "dedicated", "value": "db"},
            {"effect": "NoSchedule", "key": "node.kubernetes.io/unschedulable", "timeAdded": "2024-06-11T16:01:00Z"},
            {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "timeAdded": "2024-06-11T16:05:00Z"}
        ],
        "unschedulable": true
    },
    "status": {
        "addresses": [{"address": "10.0.1.23", "type": "InternalIP"}],
        "allocatable": {"cpu": "2", "memory": "7865484Ki", "pods": "110"},
        "conditions": [{"status": "True", "type": "Ready", "reason": "KubeletReady"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "images": [{"names": ["registry.k8s.io/pause:3.9"], "sizeBytes": 321520}],
        "nodeInfo": {"architecture": "amd64", "kernelVersion": "6.8.0-1008-aws", "osImage": "Ubuntu 24.04 LTS"}
    }
}
"#;

fn kubectl_node() -> Node {
    Node {
        name: "worker-1".into(),
        labels: labels(&[
            ("beta.kubernetes.io/arch", "amd64"),
            ("beta.kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("kubernetes.io/hostname", "worker-1"),
            ("kubernetes.io/os", "linux"),
            ("node.kubernetes.io/instance-type", "m5.large"),
            ("topology.kubernetes.io/zone", "eu-west-1a"),
        ]),
        taints: vec![
            taint("dedicated", "db", "NoSchedule"),
            taint("node.kubernetes.io/unschedulable", "", "NoSchedule"),
            taint("node.kubernetes.io/unreachable", "", "NoExecute"),
        ],
        unschedulable: true,
    }
}

#[test]
fn kubectl_yaml_node() {
    assert_eq!(
        clean("worker-1.yaml", KUBECTL_YAML, Format::Yaml),
        NodeFile::Kubernetes(kubectl_node())
    );
}

#[test]
fn kubectl_json_node() {
    assert_eq!(
        clean("worker-1.json", KUBECTL_JSON, Format::Json),
        NodeFile::Kubernetes(kubectl_node())
    );
}

#[test]
fn kubectl_list_of_one_node() {
    let list = "apiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: \"\"\nitems:\n"
        .to_string()
        + &KUBECTL_YAML
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
            .replacen("  apiVersion", "- apiVersion", 1);
    assert_eq!(
        clean("nodes.yaml", &list, Format::Yaml),
        NodeFile::Kubernetes(kubectl_node())
    );

    let two = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Node, metadata: {name: a}}\n\
               - {apiVersion: v1, kind: Node, metadata: {name: b}}\n";
    assert_lines(
        shown("nodes.yaml", two, Format::Yaml),
        &["nodes.yaml:3:1: items: holds 2 items: a node file describes exactly one node, this host \
           (`kubectl get node NAME -o yaml` prints just that one)"
            .into()],
    );
    let bad_item = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    name: A\n";
    assert_lines(
        shown("nodes.yaml", bad_item, Format::Yaml),
        &[format!(
            "nodes.yaml:7:11: items[0].metadata.name: invalid value \"A\": {DNS1123_SUBDOMAIN_FMT}"
        )],
    );
}

#[test]
fn kubernetes_node_errors() {
    let text = r#"apiVersion: v1
kind: Node
metadata:
  name: Worker_1
  namespace: default
  label:
    zone: a
  labels:
    "example.com/": x
spec:
  taints:
  - key: dedicated
    effect: NoSchedule
  - key: dedicated
    value: again
    effect: NoSchedule
  - key: gpu
    effect: NoScheduel
  - key: gpu
    value: "yes please"
  taint: []
  unschedulable: "true"
status:
  anything: goes
"#;
    assert_lines(
        shown("node.yaml", text, Format::Yaml),
        &[
            format!("node.yaml:4:9: metadata.name: invalid value \"Worker_1\": {DNS1123_SUBDOMAIN_FMT}"),
            "node.yaml:5:14: metadata.namespace: invalid value \"default\": nodes have no namespace; remove it"
                .into(),
            "node.yaml:6:3: metadata.label: unknown field \"label\", did you mean \"labels\"?".into(),
            "node.yaml:9:5: metadata.labels: invalid label key \"example.com/\": name part must be non-empty".into(),
            "node.yaml:14:5: spec.taints[1]: duplicate taint \"dedicated=again:NoSchedule\": spec.taints[0] has \
             the same key and effect; taints must be unique by key and effect pair"
                .into(),
            format!(
                "node.yaml:18:13: spec.taints[2].effect: unsupported value \"NoScheduel\" (did you mean \
                 \"NoSchedule\"?): supported values: {EFFECTS}"
            ),
            format!("node.yaml:19:5: spec.taints[3].effect: required: one of {EFFECTS}"),
            format!("node.yaml:20:12: spec.taints[3].value: invalid value \"yes please\": {LABEL_VALUE_FMT}"),
            "node.yaml:21:3: spec.taint: unknown field \"taint\", did you mean \"taints\"?".into(),
            "node.yaml:22:18: spec.unschedulable: must be true or false, not a string".into(),
        ],
    );
}

#[test]
fn kubernetes_node_json_errors() {
    let text = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Node\",\n  \"metadata\": {\"name\": \"\"},\n  \
                \"spec\": {\"taints\": [{\"key\": \"k\", \"effect\": \"NoExecute\", \"timeAdded\": null, \
                \"tolerationSeconds\": 5}]}\n}\n";
    assert_lines(
        shown("node.json", text, Format::Json),
        &[
            "node.json:4:24: metadata.name: required: the node's name, a DNS-1123 subdomain such as \"worker-1\""
                .into(),
            "node.json:5:78: spec.taints[0].tolerationSeconds: unknown field \"tolerationSeconds\"; valid \
             fields here: effect, key, timeAdded, value"
                .into(),
        ],
    );
}

#[test]
fn kubernetes_object_kind_and_version() {
    assert_lines(
        shown(
            "ds.yaml",
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: x\n",
            Format::Yaml,
        ),
        &[
            "ds.yaml:2:7: kind: unsupported value \"DaemonSet\": a node file holds a \"Node\""
                .into(),
        ],
    );
    assert_lines(
        shown("node.yaml", "apiVersion: apps/v1\nkind: Node\nmetadata:\n  name: x\n", Format::Yaml),
        &["node.yaml:1:13: apiVersion: unsupported value \"apps/v1\": a Node's apiVersion is \"v1\"".into()],
    );
    // A native node written in YAML.
    assert_lines(
        shown("node.yaml", "name: x\nlabels:\n  a: b\n", Format::Yaml),
        &[
            "node.yaml:1:1: kind: required: \"Node\" (a YAML or JSON node file is a Kubernetes v1 Node; the \
             native node file is TOML)"
                .into(),
            "node.yaml:1:1: apiVersion: required: \"v1\"".into(),
            "node.yaml:1:1: metadata.name: required: the node's name, a DNS-1123 subdomain such as \"worker-1\""
                .into(),
            "node.yaml:1:1: name: unknown field \"name\"; valid fields here: apiVersion, kind, metadata, spec, \
             status"
                .into(),
            "node.yaml:2:1: labels: unknown field \"labels\"; valid fields here: apiVersion, kind, metadata, \
             spec, status"
                .into(),
        ],
    );
}

#[test]
fn exactly_one_node_per_file() {
    assert_lines(
        shown("node.yaml", "", Format::Yaml),
        &["node.yaml: the file holds no node: write a Kubernetes v1 Node (apiVersion: v1, kind: Node)".into()],
    );
    let two = "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: b}\n";
    assert_lines(
        shown("node.yaml", two, Format::Yaml),
        &["node.yaml:5:1: the file holds 2 documents: a node file describes exactly one node, this host".into()],
    );
    let got = shown("node.yaml", "metadata: [\n", Format::Yaml);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("node.yaml:") && got[0].contains(": invalid YAML: "),
        "{got:?}"
    );
}

#[test]
fn reading_files() {
    let dir = std::env::temp_dir().join(format!("hostset-node-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };

    let toml = write("node.toml", NATIVE);
    let loaded = read_node(&toml);
    assert!(!loaded.has_errors(), "{:?}", diagnostics(&loaded));
    assert_eq!(loaded.items, vec![clean("node.toml", NATIVE, Format::Toml)]);

    let yaml = write("node.yml", KUBECTL_YAML);
    assert_eq!(
        read_node(&yaml).items,
        vec![NodeFile::Kubernetes(kubectl_node())]
    );
    let json = write("node.json", KUBECTL_JSON);
    assert_eq!(
        read_node(&json).items,
        vec![NodeFile::Kubernetes(kubectl_node())]
    );

    let bad = write("node.toml.bak", "");
    assert_eq!(
        diagnostics(&read_node(&bad)),
        [format!(
            "{}: unknown file type: name it *.toml (native), *.yaml, *.yml or *.json (Kubernetes)",
            bad.display()
        )]
    );
    let wrong = write("bad.toml", "name = \"A\"\n");
    assert_eq!(
        diagnostics(&read_node(&wrong)),
        [format!(
            "{}:1:8: name: invalid value \"A\": {DNS1123_SUBDOMAIN_FMT}",
            wrong.display()
        )]
    );
    let missing = dir.join("absent.toml");
    let got = diagnostics(&read_node(&missing));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with(&format!("{}: cannot read: ", missing.display())),
        "{got:?}"
    );

    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// os-release (os-release(5), parsed as systemd's env-file.c does)

#[test]
fn os_release_quoting_and_escapes() {
    let text = concat!(
        "# comment\n",
        "; also a comment\n",
        "\n",
        "NAME=\"Fancy Linux\"\n",
        "ID='fancy'\n",
        "PLAIN=bare-value   \n",
        "  SPACED  =   value with spaces  \n",
        "DQ=\"a \\\"quoted\\\" \\$HOME \\`cmd\\` back\\\\slash \\n kept\"\n",
        "SQ='no \\escapes \"here\"'\n",
        "BARE=one\\ two\\\\three\n",
        "JOINED=\"first \\\nsecond\"\n",
        "CONT=abc\\\ndef\n",
        "MIXED=\"quoted\"tail\n",
        "EMPTY=\n",
        "EMPTYQ=\"\"\n",
        "NOT A LINE\n",
        "ID_LIKE=\"rhel centos\"\r\n",
        "INLINE=value # not a comment\n",
        "ID=fancy2\n",
        "LAST=\"unterminated",
    );
    let got = parse_os_release(text);
    let want: Vec<(&str, &str)> = vec![
        ("BARE", "one two\\three"),
        ("CONT", "abcdef"),
        ("DQ", "a \"quoted\" $HOME `cmd` back\\slash \\n kept"),
        ("EMPTY", ""),
        ("EMPTYQ", ""),
        ("ID", "fancy2"),
        ("ID_LIKE", "rhel centos"),
        ("INLINE", "value # not a comment"),
        ("JOINED", "first second"),
        ("LAST", "unterminated"),
        ("MIXED", "quotedtail"),
        ("NAME", "Fancy Linux"),
        ("PLAIN", "bare-value"),
        ("SPACED", "value with spaces"),
        ("SQ", "no \\escapes \"here\""),
    ];
    assert_eq!(
        got.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        want
    );
}

const UBUNTU: &str = r#"PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
UBUNTU_CODENAME=noble
LOGO=ubuntu-logo
"#;

const DEBIAN_SID: &str = r#"PRETTY_NAME="Debian GNU/Linux trixie/sid"
NAME="Debian GNU/Linux"
VERSION_CODENAME=trixie
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"#;

const ARCH_LINUX: &str = r#"NAME="Arch Linux"
PRETTY_NAME="Arch Linux"
ID=arch
BUILD_ID=rolling
ANSI_COLOR="38;2;23;147;209"
HOME_URL="https://archlinux.org/"
LOGO=archlinux-logo
"#;

const RHEL: &str = r#"NAME="Red Hat Enterprise Linux"
VERSION="9.4 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.4"
PLATFORM_ID="platform:el9"
"#;

#[test]
fn host_facts_from_os_release() {
    let f = HostFacts::from_sources(" Web-01\n", Some(UBUNTU), Some("6.8.0-45-generic\n"));
    assert_eq!(f.hostname, "Web-01");
    assert_eq!(f.os, "linux");
    assert_eq!(f.os_id.as_deref(), Some("ubuntu"));
    assert_eq!(f.os_version_id.as_deref(), Some("24.04"));
    assert_eq!(f.kernel_release.as_deref(), Some("6.8.0-45-generic"));

    let rhel = HostFacts::from_sources("h", Some(RHEL), None);
    assert_eq!(
        (rhel.os_id.as_deref(), rhel.os_version_id.as_deref()),
        (Some("rhel"), Some("9.4"))
    );
    assert_eq!(rhel.kernel_release, None);

    // Debian testing/unstable and Arch Linux have no VERSION_ID.
    for (text, id) in [(DEBIAN_SID, "debian"), (ARCH_LINUX, "arch")] {
        let f = HostFacts::from_sources("h", Some(text), Some("6.10.1-arch1-1"));
        assert_eq!(f.os_id.as_deref(), Some(id));
        assert_eq!(f.os_version_id, None, "{id}");
    }

    // os-release(5): "If not set, a default of "ID=linux" may be used."
    let no_id = HostFacts::from_sources("h", Some("NAME=Custom\nVERSION_ID=\"\"\n"), None);
    assert_eq!(
        (no_id.os_id.as_deref(), no_id.os_version_id),
        (Some("linux"), None)
    );
    // No os-release at all: nothing is known.
    let none = HostFacts::from_sources("h", None, Some("  "));
    assert_eq!(
        (none.os_id, none.os_version_id, none.kernel_release),
        (None, None, None)
    );
}

// ---------------------------------------------------------------------------------------------
// Architecture names: Rust's std::env::consts::ARCH to Go's GOARCH

#[test]
fn arch_mapping() {
    let cases = [
        ("x86_64", false, "amd64"),
        ("x86", false, "386"),
        ("aarch64", false, "arm64"),
        ("aarch64", true, "arm64be"),
        ("arm", false, "arm"),
        ("powerpc64", false, "ppc64le"),
        ("powerpc64", true, "ppc64"),
        ("s390x", true, "s390x"),
        ("riscv64", false, "riscv64"),
        ("loongarch64", false, "loong64"),
        ("mips", true, "mips"),
        ("mips", false, "mipsle"),
        ("mips64", false, "mips64le"),
        ("sparc64", true, "sparc64"),
        ("wasm32", false, "wasm"),
        ("m68k", true, "m68k"),
    ];
    for (rust, big_endian, go) in cases {
        assert_eq!(
            go_arch(rust, big_endian),
            go,
            "{rust} big_endian={big_endian}"
        );
    }
    let facts = HostFacts::from_sources("h", None, None);
    assert_eq!(
        facts.arch,
        go_arch(std::env::consts::ARCH, cfg!(target_endian = "big"))
    );
    if cfg!(target_arch = "x86_64") {
        assert_eq!(facts.arch, "amd64");
    }
    if cfg!(target_arch = "aarch64") {
        assert_eq!(facts.arch, "arm64");
    }
}

#[test]
fn detect_reads_this_host() {
    let facts = HostFacts::detect();
    assert_eq!(facts.os, "linux");
    assert_eq!(
        facts.arch,
        go_arch(std::env::consts::ARCH, cfg!(target_endian = "big"))
    );
    assert_eq!(facts.hostname, facts.hostname.trim());
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        assert_eq!(facts.hostname, h.trim());
    }
    if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        assert_eq!(facts.kernel_release.as_deref(), Some(k.trim()));
    }
}

// ---------------------------------------------------------------------------------------------
// Automatic labels

fn facts(
    hostname: &str,
    os_id: Option<&str>,
    version: Option<&str>,
    kernel: Option<&str>,
) -> HostFacts {
    HostFacts {
        hostname: hostname.into(),
        os: "linux".into(),
        arch: "amd64".into(),
        os_id: os_id.map(Into::into),
        os_version_id: version.map(Into::into),
        kernel_release: kernel.map(Into::into),
    }
}

#[test]
fn automatic_labels_from_facts() {
    let f = facts(
        "Web-01",
        Some("ubuntu"),
        Some("24.04"),
        Some("6.8.0-45-generic"),
    );
    assert_eq!(
        automatic_labels(&f),
        labels(&[
            ("kubernetes.io/hostname", "web-01"),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("hostset.io/os-id", "ubuntu"),
            ("hostset.io/os-version-id", "24.04"),
            ("hostset.io/kernel-release", "6.8.0-45-generic"),
        ])
    );
    let sparse = facts("arch-box", Some("arch"), None, None);
    assert_eq!(
        automatic_labels(&sparse),
        labels(&[
            ("kubernetes.io/hostname", "arch-box"),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("hostset.io/os-id", "arch"),
        ])
    );
}

#[test]
fn automatic_labels_sanitize_or_omit() {
    let get = |f: &HostFacts, key: &str| automatic_labels(f).get(key).cloned();
    // Kernel releases as node-feature-discovery sanitizes them (kubernetes-sigs/node-feature-discovery
    // #308, #390): invalid characters become '_', then '-', '_', '.' are trimmed at both ends.
    for (kernel, label) in [
        ("6.1.21-v8+", Some("6.1.21-v8")),
        (
            "4.9.140-l4t-r32.3.1+g47e7e1cb0b49",
            Some("4.9.140-l4t-r32.3.1_g47e7e1cb0b49"),
        ),
        (
            "5.15.153.1-microsoft-standard-WSL2",
            Some("5.15.153.1-microsoft-standard-WSL2"),
        ),
        ("6.9.0-rc1+ #1 SMP", Some("6.9.0-rc1___1_SMP")),
        ("+++", None),
        (&format!("6.8.0-{}", "x".repeat(60)), None),
    ] {
        let f = facts("h", None, None, Some(kernel));
        assert_eq!(
            get(&f, "hostset.io/kernel-release").as_deref(),
            label,
            "{kernel}"
        );
    }
    // os-release values outside the documented [a-z0-9._-] are sanitized the same way.
    let odd = facts("h", Some("my distro"), Some("2024.1 beta"), None);
    assert_eq!(get(&odd, "hostset.io/os-id").as_deref(), Some("my_distro"));
    assert_eq!(
        get(&odd, "hostset.io/os-version-id").as_deref(),
        Some("2024.1_beta")
    );
    // A host name is used as is or not at all.
    for bad in ["", "host name", "bad!host", &"h".repeat(64)] {
        assert_eq!(
            get(&facts(bad, None, None, None), "kubernetes.io/hostname"),
            None,
            "{bad:?}"
        );
    }
    assert_eq!(
        get(
            &facts("  My_Host.Example  ", None, None, None),
            "kubernetes.io/hostname"
        )
        .as_deref(),
        Some("my_host.example")
    );
}

// ---------------------------------------------------------------------------------------------
// Resolution

fn native(
    name: Option<&str>,
    file_labels: &[(&str, &str)],
    taints: Vec<Taint>,
    unschedulable: bool,
) -> NodeFile {
    NodeFile::Native {
        name: name.map(Into::into),
        labels: labels(file_labels),
        taints,
        unschedulable,
    }
}

#[test]
fn resolve_with_facts() {
    let f = facts(
        "Web-01",
        Some("ubuntu"),
        Some("24.04"),
        Some("6.8.0-45-generic"),
    );
    let node = native(None, &[("disktype", "ssd")], vec![], false).resolve(Some(&f));
    assert_eq!(
        node,
        Node {
            name: "web-01".into(),
            labels: labels(&[
                ("disktype", "ssd"),
                ("kubernetes.io/hostname", "web-01"),
                ("kubernetes.io/os", "linux"),
                ("kubernetes.io/arch", "amd64"),
                ("hostset.io/os-id", "ubuntu"),
                ("hostset.io/os-version-id", "24.04"),
                ("hostset.io/kernel-release", "6.8.0-45-generic"),
            ]),
            taints: vec![],
            unschedulable: false,
        }
    );
}

#[test]
fn resolve_precedence() {
    let f = facts("web-01", Some("ubuntu"), Some("24.04"), None);
    // The name override is also the hostname label (kubelet's --hostname-override).
    let node = native(Some("db-1"), &[], vec![], false).resolve(Some(&f));
    assert_eq!(node.name, "db-1");
    assert_eq!(node.labels["kubernetes.io/hostname"], "db-1");
    // The file's labels win over automatic ones.
    let node = native(
        None,
        &[
            ("kubernetes.io/hostname", "alias"),
            ("hostset.io/os-version-id", "24.04.1"),
            ("kubernetes.io/arch", ""),
        ],
        vec![],
        false,
    )
    .resolve(Some(&f));
    assert_eq!(node.name, "web-01");
    assert_eq!(node.labels["kubernetes.io/hostname"], "alias");
    assert_eq!(node.labels["hostset.io/os-version-id"], "24.04.1");
    assert_eq!(node.labels["kubernetes.io/arch"], "");
    assert_eq!(node.labels["hostset.io/os-id"], "ubuntu");
    // A host name too long for a label: the node keeps it as name, without the label.
    let long = format!("{}.example.com", "a".repeat(60));
    let node = native(None, &[], vec![], false).resolve(Some(&facts(&long, None, None, None)));
    assert_eq!(node.name, long);
    assert!(!node.labels.contains_key("kubernetes.io/hostname"));
}

#[test]
fn resolve_without_facts() {
    let node = native(Some("db-1"), &[("a", "b")], vec![], false).resolve(None);
    assert_eq!(node.name, "db-1");
    assert_eq!(
        node.labels,
        labels(&[("a", "b"), ("kubernetes.io/hostname", "db-1")])
    );
    let node = native(
        Some("db-1"),
        &[("kubernetes.io/hostname", "other")],
        vec![],
        false,
    )
    .resolve(None);
    assert_eq!(node.labels, labels(&[("kubernetes.io/hostname", "other")]));
    let node = native(None, &[], vec![], false).resolve(None);
    assert_eq!(node, Node::default());
}

#[test]
fn resolve_unschedulable_taint() {
    let unschedulable = taint("node.kubernetes.io/unschedulable", "", "NoSchedule");
    let dedicated = taint("dedicated", "db", "NoSchedule");
    let node = native(Some("n"), &[], vec![dedicated.clone()], true).resolve(None);
    assert_eq!(node.taints, vec![dedicated.clone(), unschedulable.clone()]);
    assert!(node.unschedulable);
    // Already present (identity is key and effect): not added again.
    let own = taint("node.kubernetes.io/unschedulable", "cordoned", "NoSchedule");
    let node = native(Some("n"), &[], vec![own.clone()], true).resolve(None);
    assert_eq!(node.taints, vec![own.clone()]);
    // Same key, other effect: the NoSchedule taint is still added.
    let no_execute = taint("node.kubernetes.io/unschedulable", "", "NoExecute");
    let node = native(Some("n"), &[], vec![no_execute.clone()], true).resolve(None);
    assert_eq!(node.taints, vec![no_execute, unschedulable]);
    // Schedulable: nothing added, an explicit taint kept.
    let node = native(Some("n"), &[], vec![own.clone()], false).resolve(None);
    assert_eq!(node.taints, vec![own]);
    assert!(
        native(Some("n"), &[], vec![], false)
            .resolve(None)
            .taints
            .is_empty()
    );
}

#[test]
fn resolve_native_file_end_to_end() {
    let f = HostFacts::from_sources("ip-10-0-1-23", Some(UBUNTU), Some("6.8.0-1008-aws"));
    let node = clean("node.toml", NATIVE, Format::Toml).resolve(Some(&f));
    let arch = f.arch.clone();
    assert_eq!(
        node,
        Node {
            name: "db-1".into(),
            labels: labels(&[
                ("topology.kubernetes.io/zone", "eu-west-1a"),
                ("node-role.example.com/db", ""),
                ("disktype", "ssd"),
                ("kubernetes.io/hostname", "db-1"),
                ("kubernetes.io/os", "linux"),
                ("kubernetes.io/arch", &arch),
                ("hostset.io/os-id", "ubuntu"),
                ("hostset.io/os-version-id", "24.04"),
                ("hostset.io/kernel-release", "6.8.0-1008-aws"),
            ]),
            taints: vec![
                taint("dedicated", "db", "NoSchedule"),
                taint("example.com/maintenance", "", "NoExecute"),
                taint("node.kubernetes.io/unschedulable", "", "NoSchedule"),
            ],
            unschedulable: true,
        }
    );
}

#[test]
fn resolve_kubernetes_node_as_written() {
    let file = clean("worker-1.yaml", KUBECTL_YAML, Format::Yaml);
    let f = facts("elsewhere", Some("debian"), None, None);
    assert_eq!(file.resolve(Some(&f)), kubectl_node());
    assert_eq!(file.resolve(None), kubectl_node());
    // Complete as written: spec.unschedulable adds no taint, no hostname label is made up.
    let bare = clean(
        "n.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nspec:\n  unschedulable: true\n",
        Format::Yaml,
    );
    assert_eq!(
        bare.resolve(Some(&f)),
        Node {
            name: "n1".into(),
            labels: Labels::new(),
            taints: vec![],
            unschedulable: true
        }
    );
}

#[test]
fn kubernetes_null_kind_and_version_are_missing() {
    assert_lines(
        shown("n.yaml", "apiVersion:\nkind: ~\nmetadata:\n  name: n\n", Format::Yaml),
        &[
            "n.yaml:1:1: apiVersion: required: \"v1\"".into(),
            "n.yaml:2:1: kind: required: \"Node\" (a YAML or JSON node file is a Kubernetes v1 Node; the \
             native node file is TOML)"
                .into(),
        ],
    );
}
