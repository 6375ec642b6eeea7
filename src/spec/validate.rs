//! Validation of a decoded [`DaemonSet`], with Kubernetes' rules and field paths.
//!
//! Mirrors `pkg/apis/apps/validation.ValidateDaemonSet` and the parts of
//! `pkg/apis/core/validation.ValidatePodTemplateSpec` that a systemd host
//! honours, plus the few rules a systemd unit adds (unit-name length, absolute
//! paths, cpu and memory only). Paths are always the canonical Kubernetes
//! ones (`spec.template.spec.tolerations[0].operator`); a decoder translates
//! them into its own format's vocabulary before showing them.

use std::cmp::Ordering;

use crate::quantity::Quantity;
use crate::syntax::{
    is_dns1123_label, is_dns1123_subdomain, is_env_var_name, is_qualified_name,
    is_valid_label_value,
};

use super::diag::Severity;
use super::model::*;

/// One finding, at a canonical Kubernetes path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The field path shown to the user.
    pub path: String,
    /// A more precise path used only to find the line (e.g. the map key
    /// `metadata.labels[app]` for an error reported at `metadata.labels`).
    pub locate: Option<String>,
    pub severity: Severity,
    pub message: String,
}

/// Longest daemonset name whose unit name `hostset-<name>.service` still fits
/// systemd's 255-byte unit-name limit.
pub const MAX_NAME_LEN: usize = 255 - "hostset-".len() - ".service".len();

pub const TEMPLATE_SPEC: &str = "spec.template.spec";
pub const CONTAINER: &str = "spec.template.spec.containers[0]";
pub const REQUIRED_AFFINITY: &str =
    "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution";

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(path.into(), None, Severity::Error, message.into());
    }
    fn error_at(&mut self, path: impl Into<String>, locate: String, message: impl Into<String>) {
        self.push(path.into(), Some(locate), Severity::Error, message.into());
    }
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(path.into(), None, Severity::Warning, message.into());
    }
    fn push(&mut self, path: String, locate: Option<String>, severity: Severity, message: String) {
        self.0.push(Finding {
            path,
            locate,
            severity,
            message,
        });
    }
}

/// Every problem with `ds`, in document order as far as practical.
pub fn validate(ds: &DaemonSet) -> Vec<Finding> {
    let mut f = Findings::default();
    validate_name(&mut f, &ds.name);
    validate_labels(&mut f, "metadata.labels", &ds.labels);
    validate_annotations(&mut f, "metadata.annotations", &ds.annotations);
    if let Some(v) = ds.annotations.get(crate::plan::ANNOTATION_ORPHAN_ON_DELETE)
        && v != "true"
        && v != "false"
    {
        f.error_at(
            "metadata.annotations",
            format!("metadata.annotations[{}]", crate::plan::ANNOTATION_ORPHAN_ON_DELETE),
            format!(
                "invalid value \"{v}\" for {}: \"true\" (deleting the spec leaves the units running) \
                 or \"false\"",
                crate::plan::ANNOTATION_ORPHAN_ON_DELETE
            ),
        );
    }

    match &ds.selector {
        None => f.error(
            "spec.selector",
            "required: the selector picks the daemonset's own units by template label; \
             set matchLabels to the template's labels",
        ),
        Some(sel) if sel.match_labels.is_empty() && sel.match_expressions.is_empty() => {
            f.error("spec.selector", "empty selector is invalid for daemonset")
        }
        Some(sel) => {
            let ok = validate_label_selector(&mut f, "spec.selector", sel);
            if ok
                && crate::placement::selector::label_selector_matches(
                    Some(sel),
                    &ds.template.labels,
                ) != Ok(true)
            {
                f.error(
                    "spec.template.metadata.labels",
                    "`selector` does not match template `labels`",
                );
            }
        }
    }

    validate_labels(&mut f, "spec.template.labels", &ds.template.labels);
    validate_annotations(
        &mut f,
        "spec.template.annotations",
        &ds.template.annotations,
    );
    if let Some(v) = ds
        .template
        .annotations
        .get(super::native::ANNOTATION_NOTIFY)
        && v != "true"
        && v != "false"
    {
        f.error_at(
            "spec.template.annotations",
            format!(
                "spec.template.annotations[{}]",
                super::native::ANNOTATION_NOTIFY
            ),
            format!(
                "invalid value \"{v}\" for {}: \"true\" (the daemon sends READY=1 through \
                 sd_notify when it is ready) or \"false\"",
                super::native::ANNOTATION_NOTIFY
            ),
        );
    }
    validate_pod_spec(&mut f, &ds.template);
    validate_update_strategy(&mut f, &ds.update_strategy);
    if crate::rollout::allows_surge(&ds.update_strategy)
        && ds.name.len() > crate::unit::MAX_SURGE_DAEMONSET_NAME_LEN
    {
        f.error(
            "metadata.name",
            format!(
                "must be no more than {} characters when maxSurge is not 0, so that the second \
                 unit name hostset-<name>_2.service fits systemd's limit",
                crate::unit::MAX_SURGE_DAEMONSET_NAME_LEN
            ),
        );
    }
    if crate::rollout::allows_surge(&ds.update_strategy) && !ds.template.process.ports.is_empty() {
        let ports: Vec<String> = ds
            .template
            .process
            .ports
            .iter()
            .map(|p| {
                let port = if p.host_port != 0 {
                    p.host_port
                } else {
                    p.container_port
                };
                format!("{port}/{}", p.protocol)
            })
            .collect();
        f.warn(
            "spec.updateStrategy.rollingUpdate.maxSurge",
            format!(
                "during a surge the old and the new daemon run at once on each host, and both \
                 would bind {}: unless the daemon shares its ports (SO_REUSEPORT), the new one \
                 cannot start; use maxUnavailable instead",
                ports.join(", ")
            ),
        );
    }
    for (key, message) in crate::rollout::check_annotations(&ds.annotations) {
        f.error_at(
            "metadata.annotations",
            format!("metadata.annotations[{key}]"),
            format!("{key}: {message}"),
        );
    }
    if ds.min_ready_seconds < 0 {
        f.error("spec.minReadySeconds", "must be greater than or equal to 0");
    }
    if ds.revision_history_limit < 0 {
        f.error(
            "spec.revisionHistoryLimit",
            "must be greater than or equal to 0",
        );
    }
    f.0
}

fn validate_name(f: &mut Findings, name: &str) {
    if name.is_empty() {
        f.error(
            "metadata.name",
            "required: a DNS-1123 subdomain such as \"log-collector\"",
        );
        return;
    }
    for m in is_dns1123_subdomain(name) {
        f.error("metadata.name", format!("invalid value \"{name}\": {m}"));
    }
    if name.len() > MAX_NAME_LEN {
        f.error(
            "metadata.name",
            format!(
                "must be no more than {MAX_NAME_LEN} characters, so that the unit name \
                 hostset-<name>.service fits systemd's limit"
            ),
        );
    }
}

/// `ValidateLabels`: keys are qualified names, values label values.
fn validate_labels(f: &mut Findings, path: &str, labels: &Labels) {
    for (k, v) in labels {
        let at = format!("{path}[{k}]");
        for m in is_qualified_name(k) {
            f.error_at(path, at.clone(), format!("invalid label key \"{k}\": {m}"));
        }
        for m in is_valid_label_value(v) {
            f.error_at(
                path,
                at.clone(),
                format!("invalid label value \"{v}\" for key \"{k}\": {m}"),
            );
        }
    }
}

/// Kubernetes' limit on the total size of an object's annotations.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// `ValidateAnnotations`: keys are qualified names after lower-casing; total size bounded.
fn validate_annotations(f: &mut Findings, path: &str, annotations: &Labels) {
    let mut total = 0;
    for (k, v) in annotations {
        total += k.len() + v.len();
        for m in is_qualified_name(&k.to_lowercase()) {
            f.error_at(
                path,
                format!("{path}[{k}]"),
                format!("invalid annotation key \"{k}\": {m}"),
            );
        }
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        f.error(
            path,
            format!("too long: must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"),
        );
    }
}

/// The value rules of the set-based operators, shared by label selectors and
/// node selector requirements. Returns false when `op` is none of them.
fn check_set_operator(f: &mut Findings, p: &str, op: &str, values: &[String]) -> bool {
    match op {
        "In" | "NotIn" if values.is_empty() => f.error(
            format!("{p}.values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        ),
        "Exists" | "DoesNotExist" if !values.is_empty() => f.error(
            format!("{p}.values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        ),
        "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
        _ => return false,
    }
    true
}

/// `ValidateLabelSelector`. Returns whether the selector is valid.
fn validate_label_selector(f: &mut Findings, path: &str, sel: &LabelSelector) -> bool {
    let before = f.0.len();
    validate_labels(f, &format!("{path}.matchLabels"), &sel.match_labels);
    for (i, req) in sel.match_expressions.iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        match req.operator.as_str() {
            op if check_set_operator(f, &p, op, &req.values) => {}
            op => f.error(
                format!("{p}.operator"),
                format!(
                    "not a valid selector operator \"{op}\"; supported values: \"In\", \"NotIn\", \
                     \"Exists\", \"DoesNotExist\""
                ),
            ),
        }
        for m in is_qualified_name(&req.key) {
            f.error(
                format!("{p}.key"),
                format!("invalid label key \"{}\": {m}", req.key),
            );
        }
        for (j, v) in req.values.iter().enumerate() {
            for m in is_valid_label_value(v) {
                f.error(
                    format!("{p}.values[{j}]"),
                    format!("invalid label value \"{v}\": {m}"),
                );
            }
        }
    }
    f.0.len() == before
}

fn validate_pod_spec(f: &mut Findings, t: &PodTemplate) {
    if !t.node_name.is_empty() {
        for m in is_dns1123_subdomain(&t.node_name) {
            f.error(
                format!("{TEMPLATE_SPEC}.nodeName"),
                format!("invalid value \"{}\": {m}", t.node_name),
            );
        }
    }
    validate_labels(
        f,
        &format!("{TEMPLATE_SPEC}.nodeSelector"),
        &t.node_selector,
    );
    if let Some(ns) = &t.required_node_affinity {
        validate_node_selector(f, ns);
    }
    validate_tolerations(f, &t.tolerations);
    if t.restart_policy != "Always" {
        f.error(
            format!("{TEMPLATE_SPEC}.restartPolicy"),
            format!(
                "unsupported value \"{}\": supported values: \"Always\" (a daemonset's daemon is \
                 always restarted)",
                t.restart_policy
            ),
        );
    }
    if t.termination_grace_period_seconds < 0 {
        f.error(
            format!("{TEMPLATE_SPEC}.terminationGracePeriodSeconds"),
            "must be greater than or equal to 0",
        );
    }
    validate_process(f, &t.process, t.host_network);
}

fn validate_node_selector(f: &mut Findings, ns: &NodeSelector) {
    let base = format!("{REQUIRED_AFFINITY}.nodeSelectorTerms");
    if ns.terms.is_empty() {
        f.error(base.clone(), "must have at least one node selector term");
    }
    for (i, term) in ns.terms.iter().enumerate() {
        let tp = format!("{base}[{i}]");
        if term.match_expressions.is_empty() && term.match_fields.is_empty() {
            f.warn(
                tp.clone(),
                "an empty term matches no node (Kubernetes accepts it but it never selects anything)",
            );
        }
        for (j, req) in term.match_expressions.iter().enumerate() {
            let p = format!("{tp}.matchExpressions[{j}]");
            match req.operator.as_str() {
                op if check_set_operator(f, &p, op, &req.values) => {}
                "Gt" | "Lt" => {
                    if req.values.len() != 1 {
                        f.error(
                            format!("{p}.values"),
                            "must be specified single value when `operator` is 'Lt' or 'Gt'",
                        );
                    } else if req.values[0].parse::<i64>().is_err() {
                        f.warn(
                            format!("{p}.values[0]"),
                            format!(
                                "\"{}\" is not an integer, so this term never matches (Kubernetes \
                                 accepts it; Gt and Lt compare integers)",
                                req.values[0]
                            ),
                        );
                    }
                }
                op => f.error(
                    format!("{p}.operator"),
                    format!(
                        "not a valid selector operator \"{op}\"; supported values: \"In\", \"NotIn\", \
                         \"Exists\", \"DoesNotExist\", \"Gt\", \"Lt\""
                    ),
                ),
            }
            for m in is_qualified_name(&req.key) {
                f.error(
                    format!("{p}.key"),
                    format!("invalid label key \"{}\": {m}", req.key),
                );
            }
            if matches!(req.operator.as_str(), "In" | "NotIn") {
                for (k, v) in req.values.iter().enumerate() {
                    if !is_valid_label_value(v).is_empty() {
                        f.warn(
                            format!("{p}.values[{k}]"),
                            format!(
                                "\"{v}\" is not a valid label value, so this term never matches"
                            ),
                        );
                    }
                }
            }
        }
        for (j, req) in term.match_fields.iter().enumerate() {
            let p = format!("{tp}.matchFields[{j}]");
            match req.operator.as_str() {
                "In" | "NotIn" => {
                    if req.values.len() != 1 {
                        f.error(
                            format!("{p}.values"),
                            "must be only one value when `operator` is 'In' or 'NotIn' for node \
                             field selector",
                        );
                    }
                }
                op => f.error(
                    format!("{p}.operator"),
                    format!(
                        "not a valid selector operator \"{op}\" for a node field selector; supported \
                         values: \"In\", \"NotIn\""
                    ),
                ),
            }
            if req.key != "metadata.name" {
                f.error(
                    format!("{p}.key"),
                    format!(
                        "not a valid field selector key \"{}\"; the only node field is \"metadata.name\"",
                        req.key
                    ),
                );
            } else {
                for (k, v) in req.values.iter().enumerate() {
                    for m in is_dns1123_subdomain(v) {
                        f.error(
                            format!("{p}.values[{k}]"),
                            format!("invalid node name \"{v}\": {m}"),
                        );
                    }
                }
            }
        }
    }
}

const EFFECTS: &str =
    "\"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\" (or empty for all effects)";

/// `ValidateTolerations`.
fn validate_tolerations(f: &mut Findings, tolerations: &[Toleration]) {
    for (i, t) in tolerations.iter().enumerate() {
        let p = format!("{TEMPLATE_SPEC}.tolerations[{i}]");
        if !t.key.is_empty() {
            for m in is_qualified_name(&t.key) {
                f.error(
                    format!("{p}.key"),
                    format!("invalid key \"{}\": {m}", t.key),
                );
            }
        }
        if t.key.is_empty() && t.operator != "Exists" {
            f.error(
                format!("{p}.operator"),
                format!(
                    "invalid value \"{}\": operator must be Exists when `key` is empty, which means \
                     \"match all values and all keys\"",
                    t.operator
                ),
            );
        }
        if t.toleration_seconds.is_some() && t.effect != "NoExecute" {
            f.error(
                format!("{p}.effect"),
                format!(
                    "invalid value \"{}\": effect must be 'NoExecute' when `tolerationSeconds` is set",
                    t.effect
                ),
            );
        }
        match t.operator.as_str() {
            "" | "Equal" => {
                for m in is_valid_label_value(&t.value) {
                    f.error(
                        format!("{p}.operator"),
                        format!("invalid value \"{}\": {m}", t.value),
                    );
                }
            }
            "Exists" => {
                if !t.value.is_empty() {
                    f.error(
                        format!("{p}.operator"),
                        format!(
                            "invalid value \"{}\": value must be empty when `operator` is 'Exists'",
                            t.value
                        ),
                    );
                }
            }
            op => f.error(
                format!("{p}.operator"),
                format!("unsupported value \"{op}\": supported values: \"Equal\", \"Exists\""),
            ),
        }
        if !matches!(
            t.effect.as_str(),
            "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute"
        ) {
            f.error(
                format!("{p}.effect"),
                format!(
                    "unsupported value \"{}\": supported values: {EFFECTS}",
                    t.effect
                ),
            );
        }
    }
}

/// A systemd user or group: a numeric id or a name as `useradd` accepts it.
fn valid_user_or_group(s: &str) -> bool {
    if s.bytes().all(|c| c.is_ascii_digit()) {
        return s.parse::<u32>().is_ok_and(|id| id < u32::MAX - 1);
    }
    let b = s.as_bytes();
    b.len() <= 31
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// `IsValidPortName` (IANA_SVC_NAME).
fn port_name_problems(name: &str) -> Option<&'static str> {
    if name.len() > 15 {
        return Some("must be no more than 15 characters");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if name.contains("--") {
        return Some("must not contain consecutive hyphens");
    }
    if !name.bytes().any(|c| c.is_ascii_lowercase()) {
        return Some("must contain at least one letter (a-z)");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("must not begin or end with a hyphen");
    }
    None
}

fn validate_process(f: &mut Findings, p: &Process, host_network: bool) {
    for m in is_dns1123_label(&p.name) {
        f.error(
            format!("{CONTAINER}.name"),
            format!("invalid value \"{}\": {m}", p.name),
        );
    }
    match p.argv.first() {
        None => f.error(
            format!("{CONTAINER}.command"),
            "required: hostset runs a program installed on the host; give its path and arguments, \
             e.g. [\"/usr/bin/fluent-bit\", \"-c\", \"/etc/fluent-bit/fluent-bit.conf\"]",
        ),
        Some(prog) if prog.is_empty() => {
            f.error(format!("{CONTAINER}.command[0]"), "the program must not be empty")
        }
        Some(prog) if prog.contains('/') && !prog.starts_with('/') => f.error(
            format!("{CONTAINER}.command[0]"),
            format!(
                "\"{prog}\" is a relative path: give an absolute path, or a bare program name to look \
                 up in PATH"
            ),
        ),
        Some(_) => {}
    }
    for (i, a) in p.argv.iter().enumerate() {
        if a.contains('\0') {
            f.error(
                format!("{CONTAINER}.command[{i}]"),
                "must not contain a NUL character",
            );
        }
    }
    for (i, e) in p.env.iter().enumerate() {
        for m in is_env_var_name(&e.name) {
            f.error(
                format!("{CONTAINER}.env[{i}].name"),
                format!("invalid value \"{}\": {m}", e.name),
            );
        }
        if e.name.starts_with("HOSTSET_") {
            f.error(
                format!("{CONTAINER}.env[{i}].name"),
                format!(
                    "invalid value \"{}\": names starting with HOSTSET_ are reserved for the \
                     markers hostset puts on the unit",
                    e.name
                ),
            );
        }
        if e.value.contains('\0') {
            f.error(
                format!("{CONTAINER}.env[{i}].value"),
                "must not contain a NUL character",
            );
        }
    }
    if !p.working_dir.is_empty() && !p.working_dir.starts_with('/') {
        f.error(
            format!("{CONTAINER}.workingDir"),
            format!("\"{}\" must be an absolute path", p.working_dir),
        );
    }
    if !p.user.is_empty() && !valid_user_or_group(&p.user) {
        f.error(
            format!("{CONTAINER}.securityContext.runAsUser"),
            format!("\"{}\" is not a valid user name or numeric uid", p.user),
        );
    }
    if !p.group.is_empty() && !valid_user_or_group(&p.group) {
        f.error(
            format!("{CONTAINER}.securityContext.runAsGroup"),
            format!("\"{}\" is not a valid group name or numeric gid", p.group),
        );
    }
    validate_resources(f, &p.resources);
    validate_ports(f, &p.ports, host_network);
    for (key, probe) in [
        ("livenessProbe", &p.liveness_probe),
        ("readinessProbe", &p.readiness_probe),
        ("startupProbe", &p.startup_probe),
    ] {
        if let Some(probe) = probe {
            validate_probe(f, p, key, probe);
        }
    }
}

/// `validateProbe` and the container rules about probes (`successThreshold` 1 for liveness
/// and startup probes, no `terminationGracePeriodSeconds` on a readiness probe), plus what
/// the agent needs to run the handler: a named port must be one of the process's ports.
fn validate_probe(f: &mut Findings, process: &Process, key: &str, probe: &Probe) {
    let base = format!("{CONTAINER}.{key}");
    for (field, v) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if v < 0 {
            f.error(
                format!("{base}.{field}"),
                format!("invalid value {v}: must be greater than or equal to 0"),
            );
        }
    }
    if key != "readinessProbe" && probe.success_threshold != 1 && probe.success_threshold >= 0 {
        f.error(
            format!("{base}.successThreshold"),
            format!(
                "invalid value {}: must be 1 (one success is enough to count a {} as passed)",
                probe.success_threshold,
                if key == "livenessProbe" {
                    "liveness probe"
                } else {
                    "startup probe"
                }
            ),
        );
    }
    match probe.termination_grace_period_seconds {
        Some(_) if key == "readinessProbe" => f.error(
            format!("{base}.terminationGracePeriodSeconds"),
            "must not be set for readinessProbes (a failing readiness probe restarts nothing)",
        ),
        Some(g) if g <= 0 => f.error(
            format!("{base}.terminationGracePeriodSeconds"),
            format!("invalid value {g}: must be greater than 0"),
        ),
        _ => {}
    }
    match &probe.handler {
        // The decoders report a missing handler (or a refused grpc one).
        None => {}
        Some(ProbeHandler::Exec { command }) => {
            let p = format!("{base}.exec.command");
            match command.first() {
                None => f.error(
                    p.clone(),
                    "required: the program to run and its arguments, e.g. \
                     [\"/usr/bin/test\", \"-S\", \"/run/daemon.sock\"]",
                ),
                Some(prog) if prog.is_empty() => {
                    f.error(format!("{p}[0]"), "the program must not be empty")
                }
                Some(prog) if prog.contains('/') && !prog.starts_with('/') => f.error(
                    format!("{p}[0]"),
                    format!(
                        "\"{prog}\" is a relative path: give an absolute path, or a bare \
                         program name to look up in PATH"
                    ),
                ),
                Some(_) => {}
            }
            for (i, a) in command.iter().enumerate() {
                if a.contains('\0') {
                    f.error(format!("{p}[{i}]"), "must not contain a NUL character");
                }
            }
        }
        Some(ProbeHandler::HttpGet(h)) => {
            let p = format!("{base}.httpGet");
            validate_probe_port(f, process, &format!("{p}.port"), &h.port);
            if !matches!(h.scheme.as_str(), "HTTP" | "HTTPS") {
                f.error(
                    format!("{p}.scheme"),
                    format!(
                        "unsupported value \"{}\": supported values: \"HTTP\", \"HTTPS\"",
                        h.scheme
                    ),
                );
            }
            if !h.path.starts_with('/') {
                f.error(
                    format!("{p}.path"),
                    format!("invalid value \"{}\": must start with '/'", h.path),
                );
            }
            if h.path.bytes().any(|c| c.is_ascii_control() || c == b' ') {
                f.error(
                    format!("{p}.path"),
                    format!(
                        "invalid value {:?}: must not contain spaces or control characters                          (percent-encode them)",
                        h.path
                    ),
                );
            }
            validate_probe_host(f, &format!("{p}.host"), &h.host);
            for (i, header) in h.http_headers.iter().enumerate() {
                if header.name.is_empty()
                    || !header
                        .name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-')
                {
                    f.error(
                        format!("{p}.httpHeaders[{i}].name"),
                        format!(
                            "invalid value \"{}\": a valid HTTP header must consist of alphanumeric \
                             characters or '-' (e.g. 'X-Header-Name', regex used for validation is \
                             '[-A-Za-z0-9]+')",
                            header.name
                        ),
                    );
                }
                if header
                    .value
                    .bytes()
                    .any(|c| c == b'\r' || c == b'\n' || c == 0)
                {
                    f.error(
                        format!("{p}.httpHeaders[{i}].value"),
                        "must not contain line breaks or NUL characters",
                    );
                }
            }
        }
        Some(ProbeHandler::TcpSocket { host, port }) => {
            let p = format!("{base}.tcpSocket");
            validate_probe_port(f, process, &format!("{p}.port"), port);
            validate_probe_host(f, &format!("{p}.host"), host);
        }
    }
}

/// `ValidatePortNumOrName`, and a name must name one of the process's ports.
fn validate_probe_port(f: &mut Findings, process: &Process, path: &str, port: &PortRef) {
    match port {
        PortRef::Number(n) if !(1..=65535).contains(n) => f.error(
            path,
            format!("invalid value {n}: must be between 1 and 65535, inclusive"),
        ),
        PortRef::Number(_) => {}
        PortRef::Name(name) => {
            if let Some(m) = port_name_problems(name) {
                f.error(path, format!("invalid value \"{name}\": {m}"));
            } else if !process.ports.iter().any(|p| &p.name == name) {
                let named: Vec<String> = process
                    .ports
                    .iter()
                    .filter(|p| !p.name.is_empty())
                    .map(|p| format!("\"{}\"", p.name))
                    .collect();
                let known = if named.is_empty() {
                    "the process declares no named ports".to_string()
                } else {
                    format!("named ports: {}", named.join(", "))
                };
                f.error(
                    path,
                    format!(
                        "invalid value \"{name}\": no port of the process has this name ({known}); \
                         give the number, or name the port under ports"
                    ),
                );
            }
        }
    }
}

/// A probe's `host`: empty (the host itself), an IP address or a DNS name.
fn validate_probe_host(f: &mut Findings, path: &str, host: &str) {
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return;
    }
    let problems = is_dns1123_subdomain(&host.to_ascii_lowercase());
    if let Some(m) = problems.first() {
        f.error(
            path,
            format!("invalid value \"{host}\": must be an IP address or a host name: {m}"),
        );
    }
}

fn validate_resources(f: &mut Findings, r: &Resources) {
    let base = format!("{CONTAINER}.resources");
    let parse = |f: &mut Findings, kind: &str, map: &std::collections::BTreeMap<String, String>| {
        let mut out = std::collections::BTreeMap::new();
        for (name, value) in map {
            let p = format!("{base}.{kind}[{name}]");
            if !matches!(name.as_str(), "cpu" | "memory") {
                f.error(
                    p,
                    format!(
                        "unsupported resource \"{name}\": a systemd unit can be limited in \"cpu\" and \
                         \"memory\""
                    ),
                );
                continue;
            }
            match value.parse::<Quantity>() {
                Err(e) => f.error(
                    p,
                    format!("invalid quantity \"{value}\": {e} (e.g. \"100m\", \"0.5\", \"200Mi\", \"1G\")"),
                ),
                Ok(q) if q.is_negative() => f.error(p, "must be greater than or equal to 0"),
                Ok(q) if kind == "limits" && q.is_zero() => {
                    f.error(p, format!("a {name} limit of 0 would starve the daemon; omit it for no limit"))
                }
                Ok(q) => {
                    out.insert(name.clone(), q);
                }
            }
        }
        out
    };
    let requests = parse(f, "requests", &r.requests);
    let limits = parse(f, "limits", &r.limits);
    for (name, req) in &requests {
        if let Some(lim) = limits.get(name)
            && req.cmp_exact(lim) == Ordering::Greater
        {
            f.error(
                format!("{base}.requests[{name}]"),
                format!("must be less than or equal to {name} limit of {lim}"),
            );
        }
    }
}

fn validate_ports(f: &mut Findings, ports: &[Port], host_network: bool) {
    let mut names = std::collections::HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = format!("{CONTAINER}.ports[{i}]");
        if !port.name.is_empty() {
            if let Some(m) = port_name_problems(&port.name) {
                f.error(
                    format!("{p}.name"),
                    format!("invalid value \"{}\": {m}", port.name),
                );
            }
            if !names.insert(port.name.as_str()) {
                f.error(
                    format!("{p}.name"),
                    format!("duplicate value \"{}\"", port.name),
                );
            }
        }
        if !(1..=65535).contains(&port.container_port) {
            f.error(
                format!("{p}.containerPort"),
                "must be between 1 and 65535, inclusive",
            );
        }
        if !(0..=65535).contains(&port.host_port) {
            f.error(
                format!("{p}.hostPort"),
                "must be between 1 and 65535, inclusive",
            );
        }
        if !matches!(port.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
            f.error(
                format!("{p}.protocol"),
                format!(
                    "unsupported value \"{}\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                    port.protocol
                ),
            );
        }
        if host_network && port.host_port != 0 && port.host_port != port.container_port {
            f.error(
                format!("{p}.hostPort"),
                format!(
                    "invalid value {}: must match `containerPort` when `hostNetwork` is true",
                    port.host_port
                ),
            );
        }
    }
}

/// `ValidateDaemonSetUpdateStrategy` and `ValidateRollingUpdateDaemonSet`.
fn validate_update_strategy(f: &mut Findings, s: &UpdateStrategy) {
    match s.kind.as_str() {
        "OnDelete" => {}
        "RollingUpdate" => {
            let Some(ru) = &s.rolling_update else {
                f.error(
                    "spec.updateStrategy.rollingUpdate",
                    "required when type is RollingUpdate",
                );
                return;
            };
            let base = "spec.updateStrategy.rollingUpdate";
            let unavailable =
                check_int_or_percent(f, &format!("{base}.maxUnavailable"), &ru.max_unavailable);
            let surge = check_int_or_percent(f, &format!("{base}.maxSurge"), &ru.max_surge);
            match (unavailable, surge) {
                (Some(0), Some(0)) => f.error(
                    format!("{base}.maxUnavailable"),
                    "cannot be 0 when maxSurge is 0",
                ),
                (Some(u), Some(s)) if u != 0 && s != 0 => f.error(
                    format!("{base}.maxSurge"),
                    "may not be set when maxUnavailable is non-zero (maxUnavailable defaults to 1: \
                     set it to 0 to replace daemons surge-first)",
                ),
                _ => {}
            }
        }
        other => f.error(
            "spec.updateStrategy",
            format!(
                "unsupported value \"{other}\": supported values: \"OnDelete\", \"RollingUpdate\""
            ),
        ),
    }
}

/// Validates an int-or-percent; returns its number (percent or count) when valid.
fn check_int_or_percent(f: &mut Findings, path: &str, v: &IntOrPercent) -> Option<i64> {
    match v {
        IntOrPercent::Int(i) if *i < 0 => {
            f.error(path, "must be greater than or equal to 0");
            None
        }
        IntOrPercent::Int(i) => Some(*i),
        IntOrPercent::Str(s) => {
            let digits = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()));
            match digits.map(str::parse::<i64>) {
                Some(Ok(pct)) if pct > 100 => {
                    f.error(
                        path,
                        format!("invalid value \"{s}\": must not be greater than 100%"),
                    );
                    None
                }
                Some(Ok(pct)) => Some(pct),
                _ => {
                    f.error(
                        path,
                        format!(
                            "invalid value \"{s}\": a valid percent string must be a numeric string \
                             followed by an ending '%' (e.g. '1%', or '93%'), or give an integer"
                        ),
                    );
                    None
                }
            }
        }
    }
}
