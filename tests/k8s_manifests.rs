//! Kubernetes `apps/v1` DaemonSet manifests through the public API
//! (`hostset::spec::parse_daemonsets`): the canonical example from the Kubernetes docs, the same
//! in JSON, `kubectl get -o yaml` output, several documents in one file, and one test per way a
//! field is treated (used, error, warning, silently accepted), asserting the exact diagnostics
//! a user sees (`FILE:LINE:COL: PATH: message`).

use std::collections::BTreeMap;

use hostset::spec::{
    DaemonSet, Format, IntOrPercent, LabelSelector, Loaded, Mount, PodTemplate, Process, Resources,
    RollingUpdate, Toleration, UpdateStrategy, parse_daemonsets,
};

/// Parse `text` as the YAML file `ds.yaml`.
fn yaml(text: &str) -> Loaded<DaemonSet> {
    parse_daemonsets("ds.yaml", text, Format::Yaml)
}

/// Every diagnostic, as displayed.
fn shown(loaded: &Loaded<DaemonSet>) -> Vec<String> {
    loaded.diagnostics.iter().map(ToString::to_string).collect()
}

/// Every diagnostic about the YAML `text`, as displayed.
fn diags(text: &str) -> Vec<String> {
    shown(&yaml(text))
}

/// The one daemonset of a file that decodes without errors.
fn only(loaded: Loaded<DaemonSet>) -> DaemonSet {
    let shown = shown(&loaded);
    let (mut items, _) = loaded
        .into_result()
        .unwrap_or_else(|_| panic!("errors: {shown:#?}"));
    assert_eq!(items.len(), 1);
    items.remove(0)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A minimal valid daemonset up to `spec.template.spec:` (line 11); each test writes the pod
/// spec from line 12 on.
const HEAD: &str = "\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
";

/// `HEAD` followed by `pod` (starting on line 12).
fn pod(pod: &str) -> String {
    format!("{HEAD}{pod}")
}

/// `HEAD` and one container named agent running /usr/bin/agent (lines 12-14), followed by
/// `rest` (starting on line 15, indented as container fields or pod fields as needed).
fn agent(rest: &str) -> String {
    pod(&format!(
        "      containers:\n      - name: agent\n        command: [/usr/bin/agent]\n{rest}"
    ))
}

// ---------------------------------------------------------------------------------------------
// The canonical example: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/
// (content/en/examples/controllers/daemonset.yaml), verbatim.

const FLUENTD: &str = "\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: fluentd-elasticsearch
  namespace: kube-system
  labels:
    k8s-app: fluentd-logging
spec:
  selector:
    matchLabels:
      name: fluentd-elasticsearch
  template:
    metadata:
      labels:
        name: fluentd-elasticsearch
    spec:
      tolerations:
      # these tolerations are to have the daemonset runnable on control plane nodes
      # remove them if your control plane nodes should not run pods
      - key: node-role.kubernetes.io/control-plane
        operator: Exists
        effect: NoSchedule
      - key: node-role.kubernetes.io/master
        operator: Exists
        effect: NoSchedule
      containers:
      - name: fluentd-elasticsearch
        image: quay.io/fluentd_elasticsearch/fluentd:v5.0.1
        resources:
          limits:
            memory: 200Mi
          requests:
            cpu: 100m
            memory: 200Mi
        volumeMounts:
        - name: varlog
          mountPath: /var/log
      # it may be desirable to set a high priority class to ensure that a DaemonSet Pod
      # preempts running Pods
      # priorityClassName: important
      terminationGracePeriodSeconds: 30
      volumes:
      - name: varlog
        hostPath:
          path: /var/log
";

/// The line added to the docs' container to make it runnable on a host.
const FLUENTD_COMMAND: &str = "        command: [/usr/bin/fluentd, -c, /etc/fluent/fluent.conf]\n";

fn fluentd_with_command() -> String {
    let image = "        image: quay.io/fluentd_elasticsearch/fluentd:v5.0.1\n";
    FLUENTD.replace(image, &format!("{image}{FLUENTD_COMMAND}"))
}

/// What the docs' example (with a command) decodes to.
fn fluentd_model() -> DaemonSet {
    let control_plane = |key: &str| Toleration {
        key: key.into(),
        operator: "Exists".into(),
        effect: "NoSchedule".into(),
        ..Toleration::default()
    };
    DaemonSet {
        name: "fluentd-elasticsearch".into(),
        labels: map(&[("k8s-app", "fluentd-logging")]),
        annotations: BTreeMap::new(),
        selector: Some(LabelSelector {
            match_labels: map(&[("name", "fluentd-elasticsearch")]),
            match_expressions: vec![],
        }),
        template: PodTemplate {
            labels: map(&[("name", "fluentd-elasticsearch")]),
            tolerations: vec![
                control_plane("node-role.kubernetes.io/control-plane"),
                control_plane("node-role.kubernetes.io/master"),
            ],
            restart_policy: "Always".into(),
            termination_grace_period_seconds: 30,
            host_network: false,
            process: Process {
                name: "fluentd-elasticsearch".into(),
                argv: vec![
                    "/usr/bin/fluentd".into(),
                    "-c".into(),
                    "/etc/fluent/fluent.conf".into(),
                ],
                resources: Resources {
                    requests: map(&[("cpu", "100m"), ("memory", "200Mi")]),
                    limits: map(&[("memory", "200Mi")]),
                },
                ..Process::default()
            },
            mounts: vec![Mount {
                name: "varlog".into(),
                host_path: "/var/log".into(),
                mount_path: "/var/log".into(),
                read_only: false,
            }],
            ..PodTemplate::default()
        },
        update_strategy: UpdateStrategy {
            kind: "RollingUpdate".into(),
            rolling_update: Some(RollingUpdate {
                max_unavailable: IntOrPercent::Int(1),
                max_surge: IntOrPercent::Int(0),
            }),
        },
        min_ready_seconds: 0,
        revision_history_limit: 10,
    }
}

#[test]
fn docs_example_as_published_names_an_image_not_a_program() {
    assert_eq!(
        diags(FLUENTD),
        [
            "ds.yaml:5:14: metadata.namespace: warning: ignored: namespaces do not exist on a \
             host; the unit is hostset-fluentd-elasticsearch.service",
            "ds.yaml:27:9: spec.template.spec.containers[0].command: required: hostset runs a \
             program installed on the host; give its path and arguments, e.g. \
             [\"/usr/bin/fluent-bit\", \"-c\", \"/etc/fluent-bit/fluent-bit.conf\"]",
            "ds.yaml:28:16: spec.template.spec.containers[0].image: hostset runs host programs, \
             not images: set command to the program's path",
        ]
    );
}

#[test]
fn docs_example_with_a_command_is_valid() {
    let loaded = yaml(&fluentd_with_command());
    assert_eq!(
        shown(&loaded),
        [
            "ds.yaml:5:14: metadata.namespace: warning: ignored: namespaces do not exist on a \
             host; the unit is hostset-fluentd-elasticsearch.service",
            "ds.yaml:28:16: spec.template.spec.containers[0].image: warning: ignored: hostset \
             runs command on the host, not the image",
        ]
    );
    assert_eq!(only(loaded), fluentd_model());
}

const FLUENTD_JSON: &str = r#"{
  "apiVersion": "apps/v1",
  "kind": "DaemonSet",
  "metadata": {
    "name": "fluentd-elasticsearch",
    "namespace": "kube-system",
    "labels": {
      "k8s-app": "fluentd-logging"
    }
  },
  "spec": {
    "selector": {
      "matchLabels": {
        "name": "fluentd-elasticsearch"
      }
    },
    "template": {
      "metadata": {
        "labels": {
          "name": "fluentd-elasticsearch"
        }
      },
      "spec": {
        "tolerations": [
          {
            "key": "node-role.kubernetes.io/control-plane",
            "operator": "Exists",
            "effect": "NoSchedule"
          },
          {
            "key": "node-role.kubernetes.io/master",
            "operator": "Exists",
            "effect": "NoSchedule"
          }
        ],
        "containers": [
          {
            "name": "fluentd-elasticsearch",
            "image": "quay.io/fluentd_elasticsearch/fluentd:v5.0.1",
            "command": ["/usr/bin/fluentd", "-c", "/etc/fluent/fluent.conf"],
            "resources": {
              "limits": {
                "memory": "200Mi"
              },
              "requests": {
                "cpu": "100m",
                "memory": "200Mi"
              }
            },
            "volumeMounts": [
              {
                "name": "varlog",
                "mountPath": "/var/log"
              }
            ]
          }
        ],
        "terminationGracePeriodSeconds": 30,
        "volumes": [
          {
            "name": "varlog",
            "hostPath": {
              "path": "/var/log"
            }
          }
        ]
      }
    }
  }
}
"#;

#[test]
fn docs_example_in_json() {
    let loaded = parse_daemonsets("ds.json", FLUENTD_JSON, Format::Json);
    assert_eq!(
        shown(&loaded),
        [
            "ds.json:6:18: metadata.namespace: warning: ignored: namespaces do not exist on a \
             host; the unit is hostset-fluentd-elasticsearch.service",
            "ds.json:39:22: spec.template.spec.containers[0].image: warning: ignored: hostset \
             runs command on the host, not the image",
        ]
    );
    assert_eq!(only(loaded), fluentd_model());
}

#[test]
fn json_errors_have_positions_and_canonical_paths() {
    let text = FLUENTD_JSON
        .replace(
            r#""operator": "Exists",
            "effect": "NoSchedule"
          },
          {"#,
            r#""operator": "Exists", "value": "x",
            "effect": "NoSchedule"
          },
          {"#,
        )
        .replace(r#""cpu": "100m""#, r#""cpu": 0.5, "gpu": 1"#);
    let loaded = parse_daemonsets("ds.json", &text, Format::Json);
    assert_eq!(
        shown(&loaded)[1..],
        [
            "ds.json:27:25: spec.template.spec.tolerations[0].operator: invalid value \"x\": \
             value must be empty when `operator` is 'Exists'",
            "ds.json:39:22: spec.template.spec.containers[0].image: warning: ignored: hostset \
             runs command on the host, not the image",
            "ds.json:46:29: spec.template.spec.containers[0].resources.requests[gpu]: \
             unsupported resource \"gpu\": a systemd unit can be limited in \"cpu\" and \"memory\"",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// What `kubectl get ds -o yaml` prints: server-populated metadata, defaulted fields, status.

const KUBECTL_GET: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  annotations:
    deprecated.daemonset.template.generation: "1"
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"annotations":{},"name":"node-exporter","namespace":"default"}}
  creationTimestamp: "2024-05-02T09:13:41Z"
  generation: 1
  labels:
    app: node-exporter
  managedFields:
  - apiVersion: apps/v1
    fieldsType: FieldsV1
    fieldsV1:
      f:metadata:
        f:annotations:
          .: {}
          f:deprecated.daemonset.template.generation: {}
    manager: kube-controller-manager
    operation: Update
    time: "2024-05-02T09:13:41Z"
  name: node-exporter
  namespace: default
  resourceVersion: "48613"
  uid: 6f1c3f5e-2f07-4c55-9c43-8d3c1b6a4f10
spec:
  revisionHistoryLimit: 10
  selector:
    matchLabels:
      app: node-exporter
  template:
    metadata:
      creationTimestamp: null
      labels:
        app: node-exporter
    spec:
      containers:
      - args:
        - --path.rootfs=/host
        command:
        - /usr/bin/node_exporter
        image: quay.io/prometheus/node-exporter:v1.8.0
        imagePullPolicy: IfNotPresent
        name: node-exporter
        ports:
        - containerPort: 9100
          hostPort: 9100
          name: metrics
          protocol: TCP
        resources: {}
        terminationMessagePath: /dev/termination-log
        terminationMessagePolicy: File
        volumeMounts:
        - mountPath: /host
          name: root
          readOnly: true
      dnsPolicy: ClusterFirst
      hostNetwork: true
      hostPID: true
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
      volumes:
      - hostPath:
          path: /
          type: ""
        name: root
  updateStrategy:
    rollingUpdate:
      maxSurge: 0
      maxUnavailable: 1
    type: RollingUpdate
status:
  currentNumberScheduled: 3
  desiredNumberScheduled: 3
  numberAvailable: 3
  numberMisscheduled: 0
  numberReady: 3
  observedGeneration: 1
  updatedNumberScheduled: 3
"#;

#[test]
fn kubectl_get_output_is_read_quietly() {
    let loaded = yaml(KUBECTL_GET);
    assert_eq!(
        shown(&loaded),
        [
            "ds.yaml:43:16: spec.template.spec.containers[0].image: warning: ignored: hostset runs \
          command on the host, not the image"
        ]
    );
    let ds = only(loaded);
    assert_eq!(ds.name, "node-exporter");
    assert_eq!(ds.annotations.len(), 2);
    assert!(ds.template.host_network);
    assert_eq!(
        ds.template.process.argv,
        ["/usr/bin/node_exporter", "--path.rootfs=/host"]
    );
    assert_eq!(ds.template.process.ports[0].host_port, 9100);
    assert_eq!(
        ds.template.mounts,
        [Mount {
            name: "root".into(),
            host_path: "/".into(),
            mount_path: "/host".into(),
            read_only: true
        }]
    );
    assert_eq!(ds.update_strategy, UpdateStrategy::default());
}

// ---------------------------------------------------------------------------------------------
// Several documents in one file.

#[test]
fn two_daemonsets_in_one_file() {
    let text = format!(
        "# first\n---\n{}---\n{}",
        agent(""),
        agent("        ports: [{containerPort: 0}]\n")
            .replace("name: agent\nspec", "name: other\nspec")
    );
    let loaded = yaml(&text);
    // The second document starts on line 18; its ports are on line 15 of it.
    assert_eq!(
        shown(&loaded),
        [
            "ds.yaml:32:33: spec.template.spec.containers[0].ports[0].containerPort: must be \
          between 1 and 65535, inclusive"
        ]
    );
    let names: Vec<_> = loaded.items.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["agent", "other"]);
}

#[test]
fn each_document_must_be_a_daemonset() {
    let text = format!("{}---\napiVersion: v1\nkind: List\nitems: []\n", agent(""));
    let loaded = yaml(&text);
    assert_eq!(
        shown(&loaded),
        [
            "ds.yaml:16:13: apiVersion: unsupported apiVersion \"v1\": hostset reads apps/v1 \
             DaemonSets; write apiVersion: apps/v1",
            "ds.yaml:17:7: kind: unsupported kind \"List\": hostset runs DaemonSets only; write \
             each item as its own YAML document, separated by ---",
        ]
    );
    assert_eq!(loaded.items.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn wrong_api_version() {
    let text = agent("").replace("apps/v1", "extensions/v1beta1");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:1:13: apiVersion: unsupported apiVersion \"extensions/v1beta1\": hostset reads \
          apps/v1 DaemonSets (the beta versions were removed in Kubernetes 1.16); write \
          apiVersion: apps/v1"
        ]
    );
}

#[test]
fn wrong_kind() {
    assert_eq!(
        diags(&agent("").replace("kind: DaemonSet", "kind: Deployment")),
        ["ds.yaml:2:7: kind: unsupported kind \"Deployment\": hostset runs DaemonSets only"]
    );
    assert_eq!(
        diags(&agent("").replace("kind: DaemonSet", "kind: daemonset")),
        [
            "ds.yaml:2:7: kind: unsupported kind \"daemonset\": hostset runs DaemonSets only (kinds \
          are case-sensitive: write DaemonSet)"
        ]
    );
    assert_eq!(
        diags("metadata: {name: a}\n"),
        [
            "ds.yaml:1:1: apiVersion: required: apiVersion: apps/v1",
            "ds.yaml:1:1: kind: required: kind: DaemonSet"
        ]
    );
}

#[test]
fn unknown_field_with_did_you_mean() {
    let text = agent("      toleration:\n      - operator: Exists\n");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:15:7: spec.template.spec.toleration: unknown field \"toleration\", did you mean \
          \"tolerations\"?"
        ]
    );
    // Far from any field: the valid ones are listed.
    assert_eq!(
        diags(&agent("        colour: red\n")),
        [
            "ds.yaml:15:9: spec.template.spec.containers[0].colour: unknown field \"colour\"; valid \
          fields here: args, command, env, envFrom, image, imagePullPolicy, lifecycle, \
          livenessProbe, name, ports, readinessProbe, resizePolicy, resources, restartPolicy, \
          restartPolicyRules, securityContext, startupProbe, stdin, stdinOnce, \
          terminationMessagePath, terminationMessagePolicy, tty, volumeDevices, volumeMounts, \
          workingDir"
        ]
    );
}

#[test]
fn misplaced_fields_say_where_they_belong() {
    let text = agent("        tolerations: []\n      image: agent:1\n")
        .replace("  selector:\n", "  replicas: 3\n  selector:\n");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:6:3: spec.replicas: a DaemonSet has no replicas: it runs one daemon on every \
             matching host",
            "ds.yaml:16:9: spec.template.spec.containers[0].tolerations: \"tolerations\" belongs \
             in spec.template.spec, not in a container",
            "ds.yaml:17:7: spec.template.spec.image: \"image\" belongs in a container \
             (spec.template.spec.containers[0]), not in the pod spec",
        ]
    );
}

#[test]
fn two_containers() {
    let text = agent("      - name: sidecar\n        command: [/usr/bin/sidecar]\n");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:15:9: spec.template.spec.containers[1]: hostset runs one process per daemonset; \
          run sidecars as their own daemonset"
        ]
    );
}

#[test]
fn no_container() {
    // Validation adds that the program is missing, as it does for a container without one.
    let command_required = |at: &str| {
        format!(
            "ds.yaml:{at}: spec.template.spec.containers[0].command: required: hostset runs a \
             program installed on the host; give its path and arguments, e.g. \
             [\"/usr/bin/fluent-bit\", \"-c\", \"/etc/fluent-bit/fluent-bit.conf\"]"
        )
    };
    assert_eq!(
        diags(&pod("      containers: []\n")),
        [
            "ds.yaml:12:7: spec.template.spec.containers: required: one container, naming the \
             daemon's program in command"
                .to_string(),
            command_required("12:7"),
        ]
    );
    assert_eq!(
        diags(&pod("      hostNetwork: true\n")),
        [
            "ds.yaml:11:5: spec.template.spec.containers: required: one container, naming the \
             daemon's program in command"
                .to_string(),
            command_required("11:5"),
        ]
    );
}

#[test]
fn config_map_volume() {
    let text = agent(
        "        volumeMounts:\n        - {name: config, mountPath: /etc/agent}\n      volumes:\n      \
         - name: config\n        configMap:\n          name: agent-config\n",
    );
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:18:9: spec.template.spec.volumes[0]: configMap volumes are not supported: \
          hostset binds host paths only (hostPath)"
        ]
    );
}

#[test]
fn env_value_from() {
    let text = agent(
        "        env:\n        - name: NODE_NAME\n          valueFrom:\n            fieldRef:\n              \
         fieldPath: spec.nodeName\n",
    );
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:17:11: spec.template.spec.containers[0].env[0].valueFrom: valueFrom is not \
          supported: there is no API server to resolve it; give the value itself"
        ]
    );
}

#[test]
fn env_from() {
    let text = agent("        envFrom:\n        - configMapRef: {name: agent}\n");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:15:9: spec.template.spec.containers[0].envFrom: envFrom is not supported: \
          ConfigMaps and Secrets live in an API server, which a host does not have; list the \
          variables under env"
        ]
    );
}

#[test]
fn args_without_command() {
    let text = pod("      containers:\n      - name: agent\n        args: [--verbose]\n");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:13:9: spec.template.spec.containers[0].command: required: hostset runs a \
             program installed on the host; give its path and arguments, e.g. \
             [\"/usr/bin/fluent-bit\", \"-c\", \"/etc/fluent-bit/fluent-bit.conf\"]",
            "ds.yaml:14:9: spec.template.spec.containers[0].args: args without command: a host \
             knows no image entrypoint to pass them to; put the program's path in command",
        ]
    );
}

#[test]
fn image_without_command() {
    let text =
        pod("      containers:\n      - name: agent\n        image: example.com/agent:1.0\n");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:13:9: spec.template.spec.containers[0].command: required: hostset runs a \
             program installed on the host; give its path and arguments, e.g. \
             [\"/usr/bin/fluent-bit\", \"-c\", \"/etc/fluent-bit/fluent-bit.conf\"]",
            "ds.yaml:14:16: spec.template.spec.containers[0].image: hostset runs host programs, \
             not images: set command to the program's path",
        ]
    );
}

#[test]
fn command_and_args_make_argv() {
    let ds = only(yaml(&agent("        args: [--port, \"9100\"]\n")));
    assert_eq!(
        ds.template.process.argv,
        ["/usr/bin/agent", "--port", "9100"]
    );
}

#[test]
fn bad_toleration_is_reported_at_operator() {
    let text = agent(
        "      tolerations:\n      - key: dedicated\n        operator: Exists\n        value: logs\n",
    );
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:17:19: spec.template.spec.tolerations[0].operator: invalid value \"logs\": value \
          must be empty when `operator` is 'Exists'"
        ]
    );
}

#[test]
fn selector_not_matching_template_labels() {
    let text = agent("").replace("labels: {app: agent}", "labels: {app: other}");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:10:7: spec.template.metadata.labels: `selector` does not match template `labels`"
        ]
    );
}

#[test]
fn nil_selector() {
    let text = agent("").replace("  selector:\n    matchLabels: {app: agent}\n", "");
    let loaded = yaml(&text);
    assert_eq!(loaded.items[0].selector, None);
    assert_eq!(
        shown(&loaded),
        [
            "ds.yaml:5:1: spec.selector: required: the selector picks the daemonset's own units by \
          template label; set matchLabels to the template's labels"
        ]
    );
}

#[test]
fn max_surge_alone_is_invalid_after_defaulting() {
    let text = format!(
        "{}  updateStrategy:\n    rollingUpdate:\n      maxSurge: 1\n",
        agent("")
    );
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:17:17: spec.updateStrategy.rollingUpdate.maxSurge: may not be set when \
          maxUnavailable is non-zero (maxUnavailable defaults to 1: set it to 0 to replace daemons \
          surge-first)"
        ]
    );
    let surge_first = text.replace("maxSurge: 1", "maxSurge: 1\n      maxUnavailable: 0");
    let ds = only(yaml(&surge_first));
    assert_eq!(
        ds.update_strategy.rolling_update,
        Some(RollingUpdate {
            max_unavailable: IntOrPercent::Int(0),
            max_surge: IntOrPercent::Int(1)
        })
    );
}

#[test]
fn unsupported_update_strategy_type_points_at_the_type() {
    let text = format!("{}  updateStrategy:\n    type: rollingUpdate\n", agent(""));
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:16:11: spec.updateStrategy: unsupported value \"rollingUpdate\": supported \
          values: \"OnDelete\", \"RollingUpdate\""
        ]
    );
}

#[test]
fn pod_fields_a_host_cannot_honour() {
    let text = agent(
        "      initContainers:\n      - name: setup\n      ephemeralContainers: []\n      \
         activeDeadlineSeconds: 60\n      schedulingGates: [{name: wait}]\n      os: {name: windows}\n",
    );
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:15:7: spec.template.spec.initContainers: init containers are not supported: \
             hostset runs one process per daemonset; do the setup in the program itself",
            "ds.yaml:18:30: spec.template.spec.activeDeadlineSeconds: forbidden: a daemon runs \
             until its daemonset is removed; activeDeadlineSeconds is not allowed in a DaemonSet \
             (as in Kubernetes)",
            "ds.yaml:19:7: spec.template.spec.schedulingGates: scheduling gates are not \
             supported: nothing on a host would remove them, and hostset would start the daemon \
             at once",
            "ds.yaml:20:18: spec.template.spec.os.name: \"windows\" is not supported: hostset \
             runs daemons on Linux hosts",
        ]
    );
}

#[test]
fn generate_name_needs_a_name() {
    let text = agent("").replace("  name: agent\n", "  generateName: agent-\n");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:3:1: metadata.name: required: a DNS-1123 subdomain such as \"log-collector\"",
            "ds.yaml:4:17: metadata.generateName: not supported: the unit \
             hostset-<name>.service needs a fixed name; set metadata.name",
        ]
    );
    // With a name, Kubernetes ignores generateName, and so does hostset.
    let both = agent("").replace("  name: agent\n", "  name: agent\n  generateName: agent-\n");
    assert_eq!(diags(&both), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Volumes and mounts.

#[test]
fn host_path_volumes_join_their_mounts() {
    let text = agent(
        "        volumeMounts:\n        - {name: logs, mountPath: /var/log}\n        - {name: logs, \
         mountPath: /logs, readOnly: true}\n        - {name: run, mountPath: /run/agent}\n      \
         volumes:\n      - {name: logs, hostPath: {path: /var/log}}\n      - {name: run, hostPath: \
         {path: /run/agent}}\n",
    );
    let ds = only(yaml(&text));
    let mount = |name: &str, host: &str, at: &str, ro| Mount {
        name: name.into(),
        host_path: host.into(),
        mount_path: at.into(),
        read_only: ro,
    };
    assert_eq!(
        ds.template.mounts,
        [
            mount("logs", "/var/log", "/var/log", false),
            mount("logs", "/var/log", "/logs", true),
            mount("run", "/run/agent", "/run/agent", false),
        ]
    );
}

#[test]
fn volume_mount_errors() {
    let text = agent(
        "        volumeMounts:\n        - name: logz\n          mountPath: /var/log\n        - name: \
         logs\n          mountPath: var/log\n        - name: logs\n          mountPath: /a:b\n          \
         subPath: x\n      volumes:\n      - name: logs\n        hostPath:\n          path: /var/log\n",
    );
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:16:17: spec.template.spec.containers[0].volumeMounts[0].name: no volume named \
             \"logz\" in spec.template.spec.volumes",
            "ds.yaml:19:22: spec.template.spec.containers[0].volumeMounts[1].mountPath: \
             \"var/log\" must be an absolute path",
            "ds.yaml:21:22: spec.template.spec.containers[0].volumeMounts[2].mountPath: \"/a:b\" \
             must not contain ':', which systemd's BindPaths= reads as a separator",
            "ds.yaml:22:20: spec.template.spec.containers[0].volumeMounts[2].subPath: not \
             supported: mount the sub-path itself as a hostPath volume",
        ]
    );
}

#[test]
fn volume_errors_and_warnings() {
    let text = agent(
        "        volumeMounts: [{name: logs, mountPath: /var/log}]\n      volumes:\n      - name: logs\n        \
         hostPath: {path: /var/log, type: DirectoryOrCreate}\n      - name: logs\n        hostPath: \
         {path: /srv}\n      - name: spare\n        hostPath: {path: \"srv:x\"}\n      - name: \
         cache\n        emptyDir: {}\n      - name: nothing\n",
    );
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:18:42: spec.template.spec.volumes[0].hostPath.type: warning: ignored: hostset \
             does not create missing host paths; create /var/log on the host",
            "ds.yaml:19:15: spec.template.spec.volumes[1].name: duplicate value \"logs\": volume \
             names must be unique",
            "ds.yaml:22:26: spec.template.spec.volumes[2].hostPath.path: \"srv:x\" must be an \
             absolute path",
            "ds.yaml:22:26: spec.template.spec.volumes[2].hostPath.path: \"srv:x\" must not \
             contain ':', which systemd's BindPaths= reads as a separator",
            "ds.yaml:23:9: spec.template.spec.volumes[3]: emptyDir volumes are not supported: \
             hostset binds host paths only (hostPath)",
            "ds.yaml:25:9: spec.template.spec.volumes[4]: required: a volume source; hostset \
             supports hostPath",
        ]
    );
}

#[test]
fn unused_host_path_volume_warns() {
    let text = agent(
        "      volumes:\n      - name: spare\n        hostPath:\n          path: /srv\n          type: Directory\n",
    );
    let loaded = yaml(&text);
    assert_eq!(
        shown(&loaded),
        [
            "ds.yaml:16:9: spec.template.spec.volumes[0]: warning: ignored: no volumeMount uses \
             volume \"spare\"",
            "ds.yaml:19:17: spec.template.spec.volumes[0].hostPath.type: warning: ignored: hostset \
             does not check that /srv is a Directory",
        ]
    );
    assert!(only(loaded).template.mounts.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Warnings: accepted, without effect on a host.

#[test]
fn warned_no_ops() {
    let text = agent(
        "        livenessProbe:\n          httpGet: {path: /healthz, port: 8080}\n        \
         ports:\n        - {containerPort: 8080, hostIP: 127.0.0.1}\n      dnsPolicy: None\n      \
         serviceAccountName: agent\n      priorityClassName: system-node-critical\n      affinity:\n        \
         nodeAffinity:\n          preferredDuringSchedulingIgnoredDuringExecution: []\n          \
         requiredDuringSchedulingIgnoredDuringExecution:\n            nodeSelectorTerms:\n            \
         - matchExpressions:\n              - {key: disk, operator: In, values: [ssd]}\n        \
         podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - \
         topologyKey: kubernetes.io/hostname\n",
    )
    .replace("  name: agent\n", "  name: agent\n  namespace: monitoring\n");
    let loaded = yaml(&text);
    assert_eq!(
        shown(&loaded),
        [
            "ds.yaml:5:14: metadata.namespace: warning: ignored: namespaces do not exist on a \
             host; the unit is hostset-agent.service",
            "ds.yaml:19:41: spec.template.spec.containers[0].ports[0].hostIP: warning: ignored: \
             the daemon binds the addresses it chooses; hostset forwards no ports",
            "ds.yaml:20:18: spec.template.spec.dnsPolicy: warning: ignored: there is no cluster \
             DNS; the daemon uses the host's resolver (/etc/resolv.conf)",
            "ds.yaml:21:27: spec.template.spec.serviceAccountName: warning: ignored: there is no \
             API server, so there is no service account token to mount",
            "ds.yaml:22:26: spec.template.spec.priorityClassName: warning: ignored: there is no \
             scheduler and nothing to preempt; the daemon runs on every matching host",
            "ds.yaml:30:9: spec.template.spec.affinity.podAntiAffinity: warning: ignored: hostset \
             places one daemon per host by node labels, taints and nodeName; there are no other \
             pods to be near or away from",
        ]
    );
    let ds = only(loaded);
    let terms = &ds.template.required_node_affinity.as_ref().unwrap().terms;
    assert_eq!(terms[0].match_expressions[0].values, ["ssd"]);
}

#[test]
fn on_delete_ignores_rolling_update() {
    let text = format!(
        "{}  updateStrategy:\n    type: OnDelete\n    rollingUpdate: {{maxUnavailable: 0, maxSurge: 0}}\n",
        agent("")
    );
    let loaded = yaml(&text);
    assert_eq!(
        shown(&loaded),
        [
            "ds.yaml:17:5: spec.updateStrategy.rollingUpdate: warning: ignored: rollingUpdate applies \
          to type RollingUpdate only (Kubernetes ignores it too)"
        ]
    );
    assert_eq!(
        only(loaded).update_strategy,
        UpdateStrategy {
            kind: "OnDelete".into(),
            rolling_update: None
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Silently accepted.

#[test]
fn server_fields_and_defaults_pass_silently() {
    let text = agent(
        "        imagePullPolicy: Always\n        terminationMessagePath: /dev/termination-log\n        \
         securityContext: {privileged: true, allowPrivilegeEscalation: true}\n        stdin: \
         false\n      hostPID: true\n      dnsPolicy: ClusterFirst\n      schedulerName: \
         default-scheduler\n      enableServiceLinks: true\n      imagePullSecrets: [{name: \
         registry}]\n      securityContext: {}\n      initContainers: []\n\
         status: {numberReady: 3}\n",
    )
    .replace(
        "  name: agent\n",
        "  name: agent\n  namespace: default\n  uid: 42\n  resourceVersion: \"7\"\n  finalizers: \
         [x]\n  ownerReferences: []\n",
    )
    .replace("    metadata:\n", "    metadata:\n      name: ignored\n      creationTimestamp: null\n");
    assert_eq!(diags(&text), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Security context.

#[test]
fn run_as_user_and_group() {
    let pod_level =
        agent("      securityContext: {runAsUser: 1000, runAsGroup: 1000, runAsNonRoot: true}\n");
    let ds = only(yaml(&pod_level));
    assert_eq!(
        (
            ds.template.process.user.as_str(),
            ds.template.process.group.as_str()
        ),
        ("1000", "1000")
    );

    // The container's settings override the pod's.
    let both = agent(
        "        securityContext: {runAsUser: 65534}\n      securityContext: {runAsUser: 1000, \
         runAsGroup: 100}\n",
    );
    let ds = only(yaml(&both));
    assert_eq!(
        (
            ds.template.process.user.as_str(),
            ds.template.process.group.as_str()
        ),
        ("65534", "100")
    );
}

#[test]
fn run_as_non_root_needs_a_user() {
    let text = agent(
        "        securityContext:\n          runAsNonRoot: true\n          capabilities: {drop: [ALL]}\n",
    );
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:16:25: spec.template.spec.containers[0].securityContext.runAsNonRoot: the \
             daemon would run as root: set runAsUser to a non-zero uid (without runAsUser a host \
             runs the program as root)",
            "ds.yaml:17:26: spec.template.spec.containers[0].securityContext.capabilities.drop: \
             warning: ignored: hostset drops no capabilities; a root daemon keeps all of them",
        ]
    );
}

#[test]
fn privileges_beyond_a_non_root_user_warn() {
    let text = agent("        securityContext: {runAsUser: 1000, privileged: true}\n");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:15:56: spec.template.spec.containers[0].securityContext.privileged: warning: \
          ignored: the daemon runs as uid 1000, with that user's privileges only (a root daemon \
          has them all)"
        ]
    );
}

#[test]
fn pod_level_uid_errors_point_at_the_pod_level() {
    let text = agent("      securityContext:\n        runAsUser: -5\n");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:16:20: spec.template.spec.containers[0].securityContext.runAsUser: \"-5\" is not \
          a valid user name or numeric uid"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Validation findings keep Kubernetes' canonical paths and find their lines.

#[test]
fn validation_paths_are_canonical() {
    let text = agent(
        "        env: [{name: A, value: \"1\"}, {name: \"2B\", value: x}]\n        resources:\n          \
         limits: {memory: 1Gi, cpu: \"0\"}\n      nodeSelector: {\"bad key\": x}\n",
    )
    .replace("labels: {app: agent}", "labels: {app: agent, \"-x\": y}");
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:10:28: spec.template.labels: invalid label key \"-x\": name part must consist \
             of alphanumeric characters, '-', '_' or '.', and must start and end with an \
             alphanumeric character (e.g. 'MyName', 'my.name', or '123-abc')",
            "ds.yaml:15:45: spec.template.spec.containers[0].env[1].name: invalid value \"2B\": a \
             valid environment variable name must consist of letters, digits and '_', and must \
             not start with a digit (systemd accepts no other names)",
            "ds.yaml:17:33: spec.template.spec.containers[0].resources.limits[cpu]: a cpu limit \
             of 0 would starve the daemon; omit it for no limit",
            "ds.yaml:18:22: spec.template.spec.nodeSelector: invalid label key \"bad key\": name \
             part must consist of alphanumeric characters, '-', '_' or '.', and must start and \
             end with an alphanumeric character (e.g. 'MyName', 'my.name', or '123-abc')",
        ]
    );
}

#[test]
fn type_errors_and_nulls() {
    let text = agent(
        "        env:\n        - name: PORT\n          value: 8080\n      hostNetwork: \"true\"\n      \
         terminationGracePeriodSeconds: ~\n",
    );
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:17:18: spec.template.spec.containers[0].env[0].value: must be a string, not an \
             integer (quote the value to make it a string)",
            "ds.yaml:18:20: spec.template.spec.hostNetwork: must be true or false, not a string",
        ]
    );
    let ds = only(yaml(&agent(
        "      terminationGracePeriodSeconds: ~\n      restartPolicy: \"\"\n",
    )));
    assert_eq!(ds.template.termination_grace_period_seconds, 30);
    assert_eq!(ds.template.restart_policy, "Always");
}

// ---------------------------------------------------------------------------------------------
// Probes and Type=notify.

#[test]
fn probes_are_decoded_with_kubernetes_defaults() {
    use hostset::spec::{HttpGetAction, HttpHeader, PortRef, Probe, ProbeHandler};
    let text = agent(
        "        ports:\n        - {name: metrics, containerPort: 9100}\n        \
         readinessProbe:\n          httpGet:\n            path: /metrics\n            port: metrics\n            \
         httpHeaders:\n            - {name: X-Probe, value: hostset}\n          periodSeconds: 5\n        \
         livenessProbe:\n          tcpSocket: {port: 9100}\n          failureThreshold: 0\n          \
         terminationGracePeriodSeconds: 5\n        \
         startupProbe:\n          exec: {command: [/usr/bin/test, -e, /run/agent.ready]}\n          \
         failureThreshold: 30\n          periodSeconds: 1\n",
    );
    let ds = only(yaml(&text));
    let p = &ds.template.process;
    assert_eq!(
        p.readiness_probe,
        Some(Probe {
            period_seconds: 5,
            ..Probe::new(ProbeHandler::HttpGet(HttpGetAction {
                path: "/metrics".into(),
                port: PortRef::Name("metrics".into()),
                host: String::new(),
                scheme: "HTTP".into(),
                http_headers: vec![HttpHeader {
                    name: "X-Probe".into(),
                    value: "hostset".into(),
                }],
            }))
        })
    );
    // failureThreshold 0 takes the default, as Go's zero value does.
    assert_eq!(
        p.liveness_probe,
        Some(Probe {
            termination_grace_period_seconds: Some(5),
            ..Probe::new(ProbeHandler::TcpSocket {
                host: String::new(),
                port: PortRef::Number(9100),
            })
        })
    );
    assert_eq!(
        p.startup_probe,
        Some(Probe {
            failure_threshold: 30,
            period_seconds: 1,
            ..Probe::new(ProbeHandler::Exec {
                command: vec![
                    "/usr/bin/test".into(),
                    "-e".into(),
                    "/run/agent.ready".into()
                ],
            })
        })
    );
    assert_eq!(p.resolve_port(&PortRef::Name("metrics".into())), Some(9100));
    assert!(!p.notify);
}

#[test]
fn probe_errors_name_the_field() {
    let text = agent(
        "        readinessProbe:\n          grpc: {port: 9090}\n        \
         livenessProbe:\n          httpGet: {port: http, scheme: FTP, path: metrics}\n          \
         initialDelaySeconds: 2\n          successThreshold: 2\n        \
         startupProbe:\n          periodSeconds: -1\n          tcpSocket: {port: 70000, host: \"bad host\"}\n",
    );
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:16:11: spec.template.spec.containers[0].readinessProbe.grpc: grpc \
             probes are not supported (hostset has no gRPC client): use tcpSocket with the same \
             port to check that it accepts connections, or exec with a health-check command such \
             as grpc_health_probe -addr=127.0.0.1:PORT",
            "ds.yaml:18:27: spec.template.spec.containers[0].livenessProbe.httpGet.port: \
             invalid value \"http\": no port of the process has this name (the process declares \
             no named ports); give the number, or name the port under ports",
            "ds.yaml:18:41: spec.template.spec.containers[0].livenessProbe.httpGet.scheme: \
             unsupported value \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
            "ds.yaml:18:52: spec.template.spec.containers[0].livenessProbe.httpGet.path: \
             invalid value \"metrics\": must start with '/'",
            "ds.yaml:20:29: spec.template.spec.containers[0].livenessProbe.successThreshold: \
             invalid value 2: must be 1 (one success is enough to count a liveness probe \
             as passed)",
            "ds.yaml:22:26: spec.template.spec.containers[0].startupProbe.periodSeconds: \
             invalid value -1: must be greater than or equal to 0",
            "ds.yaml:23:29: spec.template.spec.containers[0].startupProbe.tcpSocket.port: \
             invalid value 70000: must be between 1 and 65535, inclusive",
            "ds.yaml:23:42: spec.template.spec.containers[0].startupProbe.tcpSocket.host: \
             invalid value \"bad host\": must be an IP address or a host name: a lowercase \
             RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character (e.g. 'example.com')",
        ]
    );
}

#[test]
fn a_probe_needs_a_handler_and_a_readiness_probe_no_grace_period() {
    let text = agent(
        "        readinessProbe:\n          periodSeconds: 3\n          terminationGracePeriodSeconds: 10\n        \
         livenessProbe:\n          exec: {command: []}\n          terminationGracePeriodSeconds: 0\n          \
         httpGet: {port: 8080, httpHeaders: [{name: \"Bad Header\", value: x}]}\n",
    );
    assert_eq!(
        diags(&text),
        [
            "ds.yaml:16:11: spec.template.spec.containers[0].readinessProbe: must specify a \
             handler type: exec, httpGet or tcpSocket",
            "ds.yaml:17:42: spec.template.spec.containers[0].readinessProbe.terminationGracePeriodSeconds: \
             must not be set for readinessProbes (a failing readiness probe restarts nothing)",
            "ds.yaml:19:18: spec.template.spec.containers[0].livenessProbe.exec.command: \
             required: the program to run and its arguments, e.g. [\"/usr/bin/test\", \"-S\", \
             \"/run/daemon.sock\"]",
            "ds.yaml:20:42: spec.template.spec.containers[0].livenessProbe.terminationGracePeriodSeconds: \
             invalid value 0: must be greater than 0",
            "ds.yaml:21:11: spec.template.spec.containers[0].livenessProbe.httpGet: may not \
             specify more than 1 handler type",
        ]
    );
}

#[test]
fn the_notify_annotation_makes_a_notify_daemon() {
    let with = |value: &str| {
        agent("").replace(
            "      labels: {app: agent}\n",
            &format!(
                "      labels: {{app: agent}}\n      annotations: {{hostset.io/notify: \"{value}\"}}\n"
            ),
        )
    };
    assert!(only(yaml(&with("true"))).template.process.notify);
    assert!(!only(yaml(&with("false"))).template.process.notify);
    assert_eq!(
        diags(&with("yes")),
        [
            "ds.yaml:11:21: spec.template.annotations: invalid value \"yes\" for \
          hostset.io/notify: \"true\" (the daemon sends READY=1 through sd_notify when it is \
          ready) or \"false\""
        ]
    );
}
