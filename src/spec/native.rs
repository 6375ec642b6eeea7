//! The native TOML format: one daemonset per file, flat where Kubernetes nests.
//!
//! Field names are Kubernetes' own (camelCase), so that knowledge and error
//! paths carry over; the pod template's nesting is flattened away because a
//! systemd host runs exactly one process per daemonset. See README.md
//! ("Spec format") for every field.

use super::decode::{Cx, Obj, required_path};
use super::doc::{Node, Value};
use super::model::*;

/// The container name given to a native spec's process.
pub const PROCESS_NAME: &str = "main";

/// Fields of the top level, for the hint when one is written under a table
/// header by mistake.
const TOP_LEVEL: &[&str] = &[
    "name",
    "labels",
    "annotations",
    "selector",
    "template",
    "nodeName",
    "nodeSelector",
    "nodeSelectorTerms",
    "tolerations",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "hostNetwork",
    "command",
    "env",
    "workingDir",
    "user",
    "group",
    "resources",
    "ports",
    "mounts",
    "notify",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "updateStrategy",
    "minReadySeconds",
    "revisionHistoryLimit",
];

/// TOML's trap: every key after a `[table]` header belongs to that table.
fn misplaced_top_level(table: &'static str) -> impl Fn(&str) -> Option<String> {
    move |key| {
        TOP_LEVEL.contains(&key).then(|| {
            format!(
                "\"{key}\" is a top-level field, but in TOML every key after a [{table}] header \
                 belongs to that table: move it above the first [header], or write \
                 {table}.FIELD = ... with dotted keys instead of the header"
            )
        })
    }
}

/// Decode a native TOML document.
pub fn decode(cx: &mut Cx, root: &Node) -> Option<DaemonSet> {
    let mut o = Obj::new(cx, "", root)?;
    let name = o.string(cx, "name");
    if name.is_none() && !o.has("name") {
        cx.error(
            "name",
            Some(o.pos),
            "required: the daemonset's name, e.g. name = \"log-collector\"",
        );
    }
    let labels = o.string_map(cx, "labels");
    let annotations = o.string_map(cx, "annotations");

    let selector = o.obj(cx, "selector").map(|mut s| {
        let sel = LabelSelector {
            match_labels: s.string_map(cx, "matchLabels"),
            match_expressions: s
                .list(cx, "matchExpressions")
                .into_iter()
                .filter_map(|(p, n)| label_requirement(cx, &p, n))
                .collect(),
        };
        s.finish_with(cx, misplaced_top_level("selector"));
        sel
    });

    let mut template = PodTemplate {
        restart_policy: "Always".into(),
        termination_grace_period_seconds: 30,
        host_network: true,
        ..PodTemplate::default()
    };
    if let Some(mut t) = o.obj(cx, "template") {
        template.labels = t.string_map(cx, "labels");
        template.annotations = t.string_map(cx, "annotations");
        t.finish_with(cx, misplaced_top_level("template"));
    }
    template.node_name = o.string(cx, "nodeName").unwrap_or_default();
    template.node_selector = o.string_map(cx, "nodeSelector");
    if let Some((p, n)) = o.get(cx, "nodeSelectorTerms") {
        let terms = cx.list(&p, n);
        template.required_node_affinity = Some(NodeSelector {
            terms: terms
                .into_iter()
                .filter_map(|(p, n)| node_selector_term(cx, &p, n))
                .collect(),
        });
    }
    template.tolerations = o
        .list(cx, "tolerations")
        .into_iter()
        .filter_map(|(p, n)| toleration(cx, &p, n))
        .collect();
    if let Some(rp) = o.string(cx, "restartPolicy") {
        template.restart_policy = rp;
    }
    if let Some(g) = o.int(cx, "terminationGracePeriodSeconds") {
        template.termination_grace_period_seconds = g;
    }
    if let Some(h) = o.bool(cx, "hostNetwork") {
        template.host_network = h;
    }

    let notify_annotation = template
        .annotations
        .get(ANNOTATION_NOTIFY)
        .map(String::as_str)
        == Some("true");
    let process = &mut template.process;
    process.name = PROCESS_NAME.into();
    process.argv = o.string_list(cx, "command");
    if let Some((p, n)) = o.get(cx, "env") {
        process.env = cx
            .string_pairs(&p, n)
            .into_iter()
            .map(|(name, value)| EnvVar { name, value })
            .collect();
        // Validation speaks of env[i]; point it at the i-th key.
        for (i, e) in process.env.iter().enumerate() {
            if let Some(pos) = cx.spans.get(&format!("{p}[{}]", e.name)).copied() {
                cx.spans.insert(format!("{p}[{i}]"), pos);
            }
        }
    }
    process.working_dir = o.string(cx, "workingDir").unwrap_or_default();
    process.user = id_or_name(cx, &mut o, "user").unwrap_or_default();
    process.group = id_or_name(cx, &mut o, "group").unwrap_or_default();
    if let Some(mut r) = o.obj(cx, "resources") {
        process.resources.requests = quantities(cx, &mut r, "requests");
        process.resources.limits = quantities(cx, &mut r, "limits");
        r.finish_with(cx, misplaced_top_level("resources"));
    }
    process.ports = o
        .list(cx, "ports")
        .into_iter()
        .filter_map(|(p, n)| port(cx, &p, n))
        .collect();
    probes(cx, &mut o, process);
    process.notify = o.bool(cx, "notify").unwrap_or(false) || notify_annotation;
    let mounts: Vec<(String, Mount)> = o
        .list(cx, "mounts")
        .into_iter()
        .enumerate()
        .filter_map(|(i, (p, n))| mount(cx, i, &p, n).map(|m| (p, m)))
        .collect();
    check_unique_mount_paths(cx, &mounts);
    template.mounts = mounts.into_iter().map(|(_, m)| m).collect();

    let mut update_strategy = UpdateStrategy::default();
    if let Some(mut u) = o.obj(cx, "updateStrategy") {
        let kind = u
            .string(cx, "type")
            .unwrap_or_else(|| "RollingUpdate".into());
        let max_unavailable = u
            .get(cx, "maxUnavailable")
            .and_then(|(p, n)| cx.int_or_string(&p, n));
        let max_surge = u
            .get(cx, "maxSurge")
            .and_then(|(p, n)| cx.int_or_string(&p, n));
        let defaults = RollingUpdate::default();
        update_strategy = UpdateStrategy {
            rolling_update: (kind == "RollingUpdate").then(|| RollingUpdate {
                max_unavailable: max_unavailable.unwrap_or(defaults.max_unavailable),
                max_surge: max_surge.unwrap_or(defaults.max_surge),
            }),
            kind,
        };
        u.finish_with(cx, misplaced_top_level("updateStrategy"));
    }
    let min_ready_seconds = o.int(cx, "minReadySeconds").unwrap_or(0);
    let revision_history_limit = o.int(cx, "revisionHistoryLimit").unwrap_or(10);
    o.finish(cx);

    Some(DaemonSet {
        name: name.unwrap_or_default(),
        labels,
        annotations,
        selector,
        template,
        update_strategy,
        min_ready_seconds,
        revision_history_limit,
    })
}

/// `user = "nobody"` or `user = 65534`.
fn id_or_name(cx: &mut Cx, o: &mut Obj<'_>, key: &'static str) -> Option<String> {
    let (p, n) = o.get(cx, key)?;
    match &n.value {
        Value::Int(i) => Some(i.to_string()),
        _ => cx.string(&p, n),
    }
}

/// A quantity map; numbers are accepted as Kubernetes accepts them in JSON (`cpu = 0.5`).
/// Resource names are free-form keys here; validation says which are supported.
pub(crate) fn quantities(
    cx: &mut Cx,
    o: &mut Obj<'_>,
    key: &'static str,
) -> std::collections::BTreeMap<String, String> {
    let Some(mut m) = o.obj(cx, key) else {
        return Default::default();
    };
    m.take_all(cx)
        .into_iter()
        .filter_map(|(name, path, n)| {
            let v = match &n.value {
                Value::Int(i) => Some(i.to_string()),
                Value::Float(f) if f.is_finite() => Some(f.to_string()),
                _ => cx.string(&path, n),
            }?;
            Some((name, v))
        })
        .collect()
}

pub(crate) fn label_requirement(
    cx: &mut Cx,
    path: &str,
    n: &Node,
) -> Option<LabelSelectorRequirement> {
    let mut o = Obj::new(cx, path, n)?;
    let r = LabelSelectorRequirement {
        key: o.string(cx, "key").unwrap_or_default(),
        operator: o.string(cx, "operator").unwrap_or_default(),
        values: o.string_list(cx, "values"),
    };
    o.finish(cx);
    Some(r)
}

pub(crate) fn node_selector_term(cx: &mut Cx, path: &str, n: &Node) -> Option<NodeSelectorTerm> {
    let mut o = Obj::new(cx, path, n)?;
    let req = |o: &mut Obj<'_>, cx: &mut Cx, key| {
        o.list(cx, key)
            .into_iter()
            .filter_map(|(p, n)| {
                label_requirement(cx, &p, n).map(|r| NodeSelectorRequirement {
                    key: r.key,
                    operator: r.operator,
                    values: r.values,
                })
            })
            .collect()
    };
    let term = NodeSelectorTerm {
        match_expressions: req(&mut o, cx, "matchExpressions"),
        match_fields: req(&mut o, cx, "matchFields"),
    };
    o.finish(cx);
    Some(term)
}

pub(crate) fn toleration(cx: &mut Cx, path: &str, n: &Node) -> Option<Toleration> {
    let mut o = Obj::new(cx, path, n)?;
    let t = Toleration {
        key: o.string(cx, "key").unwrap_or_default(),
        operator: o.string(cx, "operator").unwrap_or_default(),
        value: o.string(cx, "value").unwrap_or_default(),
        effect: o.string(cx, "effect").unwrap_or_default(),
        toleration_seconds: o.int(cx, "tolerationSeconds"),
    };
    o.finish(cx);
    Some(t)
}

fn port(cx: &mut Cx, path: &str, n: &Node) -> Option<Port> {
    let mut o = Obj::new(cx, path, n)?;
    let number = o.int(cx, "port");
    if number.is_none() && !o.has("port") {
        cx.error(
            &o.child("port"),
            Some(o.pos),
            "required: the port number the daemon listens on",
        );
    }
    let p = Port {
        name: o.string(cx, "name").unwrap_or_default(),
        container_port: number.unwrap_or(0),
        host_port: number.unwrap_or(0),
        protocol: o.string(cx, "protocol").unwrap_or_else(|| "TCP".into()),
    };
    o.finish(cx);
    number.map(|_| p)
}

fn mount(cx: &mut Cx, index: usize, path: &str, n: &Node) -> Option<Mount> {
    let mut o = Obj::new(cx, path, n)?;
    let host_path = required_path(
        cx,
        &mut o,
        "hostPath",
        "required: the host directory or file to bind",
    );
    let mount_path = if o.has("mountPath") {
        required_path(
            cx,
            &mut o,
            "mountPath",
            "must be the absolute path the daemon sees",
        )
    } else {
        host_path.clone()
    };
    let read_only = o.bool(cx, "readOnly").unwrap_or(false);
    o.finish(cx);
    Some(Mount {
        name: format!("mount-{index}"),
        host_path: host_path?,
        mount_path: mount_path?,
        read_only,
    })
}

/// Two mounts on one path would hide each other.
fn check_unique_mount_paths(cx: &mut Cx, mounts: &[(String, Mount)]) {
    let mut seen = std::collections::HashSet::new();
    for (path, m) in mounts {
        if !seen.insert(m.mount_path.as_str()) {
            let p = format!("{path}.mountPath");
            cx.error(
                &p,
                cx.pos_of(&p),
                format!("invalid value \"{}\": must be unique", m.mount_path),
            );
        }
    }
}

/// Translate a canonical Kubernetes field path into this format's path.
pub fn path_from_k8s(k8s: &str) -> String {
    const CONTAINER: &str = "spec.template.spec.containers[0].";
    const TABLE: &[(&str, &str)] = &[
        (
            "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
            "nodeSelectorTerms",
        ),
        ("spec.template.metadata.", "template."),
        ("spec.template.labels", "template.labels"),
        ("spec.template.annotations", "template.annotations"),
        ("spec.template.spec.", ""),
        ("spec.updateStrategy.rollingUpdate.", "updateStrategy."),
        ("spec.updateStrategy.rollingUpdate", "updateStrategy"),
        ("spec.updateStrategy", "updateStrategy.type"),
        ("spec.", ""),
        ("metadata.", ""),
    ];
    if let Some(rest) = k8s.strip_prefix(CONTAINER) {
        for (from, to) in [
            ("securityContext.runAsUser", "user"),
            ("securityContext.runAsGroup", "group"),
            ("args", "command"),
        ] {
            if let Some(tail) = rest.strip_prefix(from) {
                return format!("{to}{tail}");
            }
        }
        return rest
            .replace(".containerPort", ".port")
            .replace(".hostPort", ".port");
    }
    for (from, to) in TABLE {
        if let Some(tail) = k8s.strip_prefix(from) {
            return format!("{to}{tail}");
        }
    }
    k8s.to_string()
}

/// The probe fields of a process, in the order they are read.
pub(crate) const PROBE_FIELDS: [&str; 3] = ["livenessProbe", "readinessProbe", "startupProbe"];

/// The template annotation that declares a `Type=notify` daemon in a Kubernetes manifest
/// (native specs may write `notify = true` instead).
pub const ANNOTATION_NOTIFY: &str = "hostset.io/notify";

/// Kubernetes' default `periodSeconds`, `timeoutSeconds`, `successThreshold`,
/// `failureThreshold` (`SetDefaults_Probe`): a value of 0 takes the default.
fn probe_int(cx: &mut Cx, o: &mut Obj<'_>, key: &'static str, default: i64) -> i64 {
    match o.int(cx, key) {
        None | Some(0) => default,
        Some(v) => v,
    }
}

/// A probe's `port`: an integer or a port name.
fn port_ref(cx: &mut Cx, o: &mut Obj<'_>) -> Option<PortRef> {
    let Some((p, n)) = o.get(cx, "port") else {
        let p = o.child("port");
        cx.error(
            &p,
            Some(o.pos),
            "required: the port number, or the name of one of the process's ports",
        );
        return None;
    };
    match &n.value {
        Value::Int(i) => Some(PortRef::Number(*i)),
        Value::Str(s) => Some(PortRef::Name(s.clone())),
        _ => {
            cx.error(
                &p,
                Some(n.pos),
                format!(
                    "must be a port number or the name of one of the process's ports, not {}",
                    n.value.kind()
                ),
            );
            None
        }
    }
}

/// `livenessProbe`, `readinessProbe` or `startupProbe` (`v1.Probe`), in either format.
/// Structure only: exactly one handler (`exec`, `httpGet`, `tcpSocket`), `grpc` refused;
/// the values are checked by validation.
pub(crate) fn probe(cx: &mut Cx, path: &str, n: &Node) -> Option<Probe> {
    let mut o = Obj::new(cx, path, n)?;
    let mut handlers: Vec<(String, ProbeHandler)> = Vec::new();
    if let Some(mut e) = o.obj(cx, "exec") {
        let command = e.string_list(cx, "command");
        handlers.push((e.path.clone(), ProbeHandler::Exec { command }));
        e.finish(cx);
    }
    if let Some(mut h) = o.obj(cx, "httpGet") {
        let path_value = h.string(cx, "path").unwrap_or_default();
        let port = port_ref(cx, &mut h);
        let host = h.string(cx, "host").unwrap_or_default();
        let scheme = h
            .string(cx, "scheme")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "HTTP".into());
        let http_headers = h
            .list(cx, "httpHeaders")
            .into_iter()
            .filter_map(|(p, n)| {
                let mut o = Obj::new(cx, &p, n)?;
                let header = HttpHeader {
                    name: o.string(cx, "name").unwrap_or_default(),
                    value: o.string(cx, "value").unwrap_or_default(),
                };
                o.finish(cx);
                Some(header)
            })
            .collect();
        if let Some(port) = port {
            handlers.push((
                h.path.clone(),
                ProbeHandler::HttpGet(HttpGetAction {
                    path: if path_value.is_empty() {
                        "/".into()
                    } else {
                        path_value
                    },
                    port,
                    host,
                    scheme,
                    http_headers,
                }),
            ));
        }
        h.finish(cx);
    }
    if let Some(mut t) = o.obj(cx, "tcpSocket") {
        let port = port_ref(cx, &mut t);
        let host = t.string(cx, "host").unwrap_or_default();
        if let Some(port) = port {
            handlers.push((t.path.clone(), ProbeHandler::TcpSocket { host, port }));
        }
        t.finish(cx);
    }
    let grpc = o.get(cx, "grpc");
    if let Some((p, n)) = &grpc {
        cx.error(
            p,
            cx.pos_of(p).or(Some(n.pos)),
            "grpc probes are not supported (hostset has no gRPC client): use tcpSocket with the \
             same port to check that it accepts connections, or exec with a health-check \
             command such as grpc_health_probe -addr=127.0.0.1:PORT",
        );
    }
    let written = o.has("exec") || o.has("httpGet") || o.has("tcpSocket");
    if grpc.is_none() && !written {
        cx.error(
            path,
            Some(o.pos),
            "must specify a handler type: exec, httpGet or tcpSocket",
        );
    }
    for (p, _) in handlers.iter().skip(1) {
        cx.error(p, cx.pos_of(p), "may not specify more than 1 handler type");
    }
    let probe = Probe {
        handler: handlers.into_iter().next().map(|(_, h)| h),
        initial_delay_seconds: o.int(cx, "initialDelaySeconds").unwrap_or(0),
        timeout_seconds: probe_int(cx, &mut o, "timeoutSeconds", 1),
        period_seconds: probe_int(cx, &mut o, "periodSeconds", 10),
        success_threshold: probe_int(cx, &mut o, "successThreshold", 1),
        failure_threshold: probe_int(cx, &mut o, "failureThreshold", 3),
        termination_grace_period_seconds: o.int(cx, "terminationGracePeriodSeconds"),
    };
    o.finish(cx);
    Some(probe)
}

/// The process's three probes, from the object that holds them (the top level of a native
/// spec, the container of a manifest).
pub(crate) fn probes(cx: &mut Cx, o: &mut Obj<'_>, process: &mut Process) {
    for key in PROBE_FIELDS {
        let decoded = o.get(cx, key).and_then(|(p, n)| probe(cx, &p, n));
        match key {
            "livenessProbe" => process.liveness_probe = decoded,
            "readinessProbe" => process.readiness_probe = decoded,
            _ => process.startup_probe = decoded,
        }
    }
}
