//! The native TOML format: decoding, defaults, and every diagnostic's exact
//! text, file, line, column and field path.

use hostset::spec::{DaemonSet, Format, IntOrPercent, parse_daemonsets};

const FILE: &str = "ds.toml";

const MINIMAL: &str = r#"
name = "agent"
command = ["/usr/bin/agent"]
# Dotted keys keep the selector and the template labels at the top level,
# so that the tests can append top-level fields.
selector.matchLabels = { app = "agent" }
template.labels = { app = "agent" }
"#;

fn parse_ok(text: &str) -> DaemonSet {
    let loaded = parse_daemonsets(FILE, text, Format::Toml);
    assert!(
        !loaded.has_errors(),
        "unexpected errors: {:#?}",
        loaded.diagnostics
    );
    assert_eq!(loaded.items.len(), 1);
    loaded.items.into_iter().next().unwrap()
}

/// Every diagnostic as it prints.
fn diagnostics(text: &str) -> Vec<String> {
    parse_daemonsets(FILE, text, Format::Toml)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn assert_diag(text: &str, expected: &str) {
    let got = diagnostics(text);
    assert!(
        got.iter().any(|d| d == expected),
        "expected {expected:?} among {got:#?}"
    );
}

#[test]
fn example_log_collector_is_valid_and_complete() {
    let text = std::fs::read_to_string("examples/log-collector.toml").unwrap();
    let loaded = parse_daemonsets("examples/log-collector.toml", &text, Format::Toml);
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let ds = &loaded.items[0];
    assert_eq!(ds.name, "log-collector");
    let t = &ds.template;
    assert_eq!(t.process.argv[0], "/usr/bin/tail");
    assert_eq!(t.process.resources.limits["memory"], "200Mi");
    assert_eq!(t.process.resources.requests["cpu"], "100m");
    assert_eq!(t.process.resources.requests["memory"], "200Mi");
    assert_eq!(t.termination_grace_period_seconds, 30);
    assert_eq!(t.tolerations.len(), 2);
    assert_eq!(t.mounts.len(), 2);
    assert_eq!(t.mounts[0].host_path, "/var/log");
    assert_eq!(t.mounts[0].mount_path, "/var/log");
    assert!(!t.mounts[0].read_only);
    assert!(t.mounts[1].read_only);
}

#[test]
fn every_example_is_valid() {
    for entry in std::fs::read_dir("examples").unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let loaded = hostset::spec::read_daemonsets(&path);
            assert!(
                !loaded.has_errors(),
                "{}: {:#?}",
                path.display(),
                loaded.diagnostics
            );
        }
    }
}

#[test]
fn defaults_follow_kubernetes() {
    // pkg/apis/apps/v1/defaults.go SetDefaults_DaemonSet; core/v1 pod defaults.
    let ds = parse_ok(MINIMAL);
    assert_eq!(ds.update_strategy.kind, "RollingUpdate");
    let ru = ds.update_strategy.rolling_update.unwrap();
    assert_eq!(ru.max_unavailable, IntOrPercent::Int(1));
    assert_eq!(ru.max_surge, IntOrPercent::Int(0));
    assert_eq!(ds.revision_history_limit, 10);
    assert_eq!(ds.min_ready_seconds, 0);
    assert_eq!(ds.template.restart_policy, "Always");
    assert_eq!(ds.template.termination_grace_period_seconds, 30);
    // Native specs run on the host network, and say so for placement.
    assert!(ds.template.host_network);
}

#[test]
fn env_keeps_written_order_and_numbers_are_quantities() {
    let ds = parse_ok(&format!(
        "{MINIMAL}\nenv = {{ ZED = \"1\", ALPHA = \"2\" }}\n[resources]\nlimits = {{ cpu = 0.5, memory = 1073741824 }}\n"
    ));
    let names: Vec<_> = ds
        .template
        .process
        .env
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["ZED", "ALPHA"]);
    assert_eq!(ds.template.process.resources.limits["cpu"], "0.5");
    assert_eq!(ds.template.process.resources.limits["memory"], "1073741824");
}

#[test]
fn misspelled_field_is_an_error_with_a_suggestion() {
    // A misspelled `tolerations` must not be ignored: it would schedule everywhere.
    let text = format!("{MINIMAL}\n[[toleration]]\nkey = \"x\"\noperator = \"Exists\"\n");
    assert_diag(
        &text,
        "ds.toml:9:3: toleration: unknown field \"toleration\", did you mean \"tolerations\"?",
    );
    let text = format!("{MINIMAL}node_selector = {{ a = \"b\" }}\n");
    assert_diag(
        &text,
        "ds.toml:8:1: node_selector: unknown field \"node_selector\", did you mean \"nodeSelector\"?",
    );
}

#[test]
fn unknown_field_without_a_close_match_lists_valid_ones() {
    let got = diagnostics(&format!(
        "{MINIMAL}\n[resources]\nlimits = {{}}\nburst = 1\n"
    ));
    assert!(
        got.iter().any(|d| d == "ds.toml:11:1: resources.burst: unknown field \"burst\"; valid fields here: limits, requests"),
        "{got:#?}"
    );
}

#[test]
fn all_errors_of_a_file_are_reported_at_once() {
    let text = r#"
name = "Bad_Name"
command = []
restartPolicy = "Never"
[selector]
matchLabels = { app = "x" }
[template]
labels = { app = "y" }
[[tolerations]]
operator = "Equal"
value = "v"
[[tolerations]]
key = "k"
operator = "Exists"
value = "v"
effect = "NoSchedule"
tolerationSeconds = 10
[updateStrategy]
maxSurge = 1
"#;
    let got = diagnostics(text);
    let expected = [
        "ds.toml:2:8: name: invalid value \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')",
        "ds.toml:3:1: command: required: hostset runs a program installed on the host; give its path and arguments, e.g. [\"/usr/bin/fluent-bit\", \"-c\", \"/etc/fluent-bit/fluent-bit.conf\"]",
        "ds.toml:4:17: restartPolicy: unsupported value \"Never\": supported values: \"Always\" (a daemonset's daemon is always restarted)",
        "ds.toml:8:1: template.labels: `selector` does not match template `labels`",
        "ds.toml:10:12: tolerations[0].operator: invalid value \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        "ds.toml:14:12: tolerations[1].operator: invalid value \"v\": value must be empty when `operator` is 'Exists'",
        "ds.toml:16:10: tolerations[1].effect: invalid value \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
        "ds.toml:19:12: updateStrategy.maxSurge: may not be set when maxUnavailable is non-zero (maxUnavailable defaults to 1: set it to 0 to replace daemons surge-first)",
    ];
    for e in expected {
        assert!(got.iter().any(|d| d == e), "missing {e:?} in {got:#?}");
    }
    assert_eq!(got.len(), expected.len(), "{got:#?}");
}

#[test]
fn type_errors_say_what_was_expected() {
    assert_diag(
        &format!("{MINIMAL}hostNetwork = \"yes\"\n"),
        "ds.toml:8:15: hostNetwork: must be true or false, not a string",
    );
    let text = MINIMAL.replace(
        "matchLabels = { app = \"agent\" }",
        "matchLabels = { app = 1 }",
    );
    assert_diag(
        &text,
        "ds.toml:6:32: selector.matchLabels[app]: must be a string, not an integer (quote the value to make it a string)",
    );
    assert_diag(
        &format!("{MINIMAL}tolerations = \"all\"\n"),
        "ds.toml:8:15: tolerations: must be a list, not a string",
    );
}

#[test]
fn selector_rules() {
    // Missing and empty selectors (ValidateDaemonSetSpec).
    let no_selector =
        "name = \"a\"\ncommand = [\"/bin/true\"]\n[template]\nlabels = { app = \"a\" }\n";
    assert_diag(
        no_selector,
        "ds.toml:1:1: selector: required: the selector picks the daemonset's own units by template label; set matchLabels to the template's labels",
    );
    let empty = format!("{no_selector}[selector]\n");
    assert_diag(
        &empty,
        "ds.toml:5:2: selector: empty selector is invalid for daemonset",
    );
    // Bad operator and values (ValidateLabelSelectorRequirement).
    let bad = MINIMAL.replace(
        "selector.matchLabels = { app = \"agent\" }",
        "selector.matchLabels = { app = \"agent\" }\nselector.matchExpressions = [{ key = \"tier\", operator = \"Gt\", values = [\"1\"] }, { key = \"x\", operator = \"In\" }]",
    );
    let got = diagnostics(&bad);
    assert_eq!(
        got,
        [
            "ds.toml:7:57: selector.matchExpressions[0].operator: not a valid selector operator \"Gt\"; supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\"",
            "ds.toml:7:81: selector.matchExpressions[1].values: must be specified when `operator` is 'In' or 'NotIn'",
        ]
    );
}

#[test]
fn quantities_and_resources() {
    let with = |res: &str| format!("{MINIMAL}[resources]\n{res}\n");
    assert_diag(
        &with("limits = { memory = \"200MB\" }"),
        "ds.toml:9:12: resources.limits[memory]: invalid quantity \"200MB\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (e.g. \"100m\", \"0.5\", \"200Mi\", \"1G\")",
    );
    assert_diag(
        &with("requests = { cpu = \"2\" }\nlimits = { cpu = \"500m\" }"),
        "ds.toml:9:14: resources.requests[cpu]: must be less than or equal to cpu limit of 500m",
    );
    assert_diag(
        &with("limits = { \"nvidia.com/gpu\" = \"1\" }"),
        "ds.toml:9:12: resources.limits[nvidia.com/gpu]: unsupported resource \"nvidia.com/gpu\": a systemd unit can be limited in \"cpu\" and \"memory\"",
    );
    assert_diag(
        &with("limits = { memory = \"-1\" }"),
        "ds.toml:9:12: resources.limits[memory]: must be greater than or equal to 0",
    );
}

#[test]
fn update_strategy_rules() {
    // pkg/apis/apps/validation ValidateRollingUpdateDaemonSet.
    let with = |s: &str| format!("{MINIMAL}[updateStrategy]\n{s}\n");
    assert!(
        parse_daemonsets(
            FILE,
            &with("maxUnavailable = 0\nmaxSurge = \"10%\""),
            Format::Toml
        )
        .diagnostics
        .is_empty()
    );
    assert!(
        parse_daemonsets(
            FILE,
            &with("type = \"OnDelete\"\nmaxUnavailable = 0"),
            Format::Toml
        )
        .diagnostics
        .is_empty()
    );
    assert_diag(
        &with("maxUnavailable = 0"),
        "ds.toml:9:18: updateStrategy.maxUnavailable: cannot be 0 when maxSurge is 0",
    );
    assert_diag(
        &with("maxUnavailable = \"0%\""),
        "ds.toml:9:18: updateStrategy.maxUnavailable: cannot be 0 when maxSurge is 0",
    );
    assert_diag(
        &with("maxUnavailable = \"101%\""),
        "ds.toml:9:18: updateStrategy.maxUnavailable: invalid value \"101%\": must not be greater than 100%",
    );
    assert_diag(
        &with("maxUnavailable = \"50\""),
        "ds.toml:9:18: updateStrategy.maxUnavailable: invalid value \"50\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%', or '93%'), or give an integer",
    );
    assert_diag(
        &with("maxUnavailable = -1"),
        "ds.toml:9:18: updateStrategy.maxUnavailable: must be greater than or equal to 0",
    );
    assert_diag(
        &with("type = \"Recreate\""),
        "ds.toml:9:8: updateStrategy.type: unsupported value \"Recreate\": supported values: \"OnDelete\", \"RollingUpdate\"",
    );
}

#[test]
fn process_rules() {
    let with = |extra: &str| MINIMAL.replace("command = [\"/usr/bin/agent\"]", extra);
    assert_diag(
        &with("command = [\"/a\"]\nenv = { HOSTSET_REVISION = \"x\" }"),
        "ds.toml:4:9: env[0].name: invalid value \"HOSTSET_REVISION\": names starting with HOSTSET_ are reserved for the markers hostset puts on the unit",
    );
    assert_diag(
        &with("command = [\"/a\"]\nenv = { \"my.var\" = \"1\" }"),
        "ds.toml:4:9: env[0].name: invalid value \"my.var\": a valid environment variable name must consist of letters, digits and '_', and must not start with a digit (systemd accepts no other names)",
    );
    assert_diag(
        &with("command = [\"bin/agent\"]"),
        "ds.toml:3:12: command[0]: \"bin/agent\" is a relative path: give an absolute path, or a bare program name to look up in PATH",
    );
    assert!(
        parse_daemonsets(
            FILE,
            &with("command = [\"agent\", \"--flag\"]"),
            Format::Toml
        )
        .diagnostics
        .is_empty()
    );
    assert_diag(
        &with("command = [\"/a\"]\nworkingDir = \"tmp\""),
        "ds.toml:4:14: workingDir: \"tmp\" must be an absolute path",
    );
    assert_diag(
        &with("command = [\"/a\"]\nuser = \"bad user\""),
        "ds.toml:4:8: user: \"bad user\" is not a valid user name or numeric uid",
    );
    assert_diag(
        &with("command = [\"/a\"]\nenv = { \"A=B\" = \"1\" }"),
        "ds.toml:4:9: env[0].name: invalid value \"A=B\": a valid environment variable name must consist of letters, digits and '_', and must not start with a digit (systemd accepts no other names)",
    );
    assert!(
        parse_daemonsets(
            FILE,
            &with("command = [\"/a\"]\nuser = 1000\ngroup = \"adm\""),
            Format::Toml
        )
        .diagnostics
        .is_empty()
    );
}

#[test]
fn mounts_and_ports() {
    let with = |extra: &str| format!("{MINIMAL}{extra}\n");
    assert_diag(
        &with("[[mounts]]\nreadOnly = true"),
        "ds.toml:8:1: mounts[0].hostPath: required: the host directory or file to bind",
    );
    assert_diag(
        &with("[[mounts]]\nhostPath = \"var/log\""),
        "ds.toml:9:12: mounts[0].hostPath: \"var/log\" must be an absolute path",
    );
    assert_diag(
        &with("[[mounts]]\nhostPath = \"/a:b\""),
        "ds.toml:9:12: mounts[0].hostPath: \"/a:b\" must not contain ':', which systemd's BindPaths= reads as a separator",
    );
    assert_diag(
        &with(
            "[[mounts]]\nhostPath = \"/srv\"\nmountPath = \"/data\"\n[[mounts]]\nhostPath = \"/data\"",
        ),
        "ds.toml:11:1: mounts[1].mountPath: invalid value \"/data\": must be unique",
    );
    assert_diag(
        &with("[[ports]]\nname = \"metrics\"\nport = 70000"),
        "ds.toml:10:8: ports[0].port: must be between 1 and 65535, inclusive",
    );
    assert_diag(
        &with("[[ports]]\nname = \"Metrics\"\nport = 9100"),
        "ds.toml:9:8: ports[0].name: invalid value \"Metrics\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
    );
    assert!(
        parse_daemonsets(
            FILE,
            &with("[[ports]]\nname = \"metrics\"\nport = 9100\nprotocol = \"UDP\""),
            Format::Toml
        )
        .diagnostics
        .is_empty()
    );
}

#[test]
fn affinity_terms() {
    let with = |extra: &str| format!("{MINIMAL}{extra}\n");
    assert!(parse_daemonsets(FILE, &with("[[nodeSelectorTerms]]\nmatchFields = [{ key = \"metadata.name\", operator = \"In\", values = [\"web-1\"] }]"), Format::Toml).diagnostics.is_empty());
    assert_diag(
        &with(
            "[[nodeSelectorTerms]]\nmatchFields = [{ key = \"metadata.labels\", operator = \"In\", values = [\"x\"] }]",
        ),
        "ds.toml:9:24: nodeSelectorTerms[0].matchFields[0].key: not a valid field selector key \"metadata.labels\"; the only node field is \"metadata.name\"",
    );
    assert_diag(
        &with(
            "[[nodeSelectorTerms]]\nmatchExpressions = [{ key = \"cores\", operator = \"Gt\", values = [\"1\", \"2\"] }]",
        ),
        "ds.toml:9:55: nodeSelectorTerms[0].matchExpressions[0].values: must be specified single value when `operator` is 'Lt' or 'Gt'",
    );
    // Kubernetes accepts Gt with a non-integer and an empty term; both never match: warn.
    let got = diagnostics(&with(
        "[[nodeSelectorTerms]]\nmatchExpressions = [{ key = \"cores\", operator = \"Gt\", values = [\"many\"] }]\n[[nodeSelectorTerms]]",
    ));
    assert!(got.iter().any(|d| d.contains("nodeSelectorTerms[0].matchExpressions[0].values[0]: warning: \"many\" is not an integer")), "{got:#?}");
    assert!(
        got.iter()
            .any(|d| d.contains("nodeSelectorTerms[1]: warning: an empty term matches no node")),
        "{got:#?}"
    );
    assert_diag(
        &with("nodeSelectorTerms = []"),
        "ds.toml:8:1: nodeSelectorTerms: must have at least one node selector term",
    );
}

#[test]
fn syntax_errors_point_at_the_spot() {
    let got = diagnostics("name = \"a\"\ncommand = [\"/bin/true\"\n");
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].starts_with("ds.toml:2:"), "{got:#?}");
    assert!(got[0].contains("invalid TOML"), "{got:#?}");
}

#[test]
fn orphan_on_delete_annotation_is_true_or_false() {
    assert_diag(
        &format!("{MINIMAL}annotations = {{ \"hostset.io/orphan-on-delete\" = \"yes\" }}\n"),
        "ds.toml:8:17: annotations: invalid value \"yes\" for hostset.io/orphan-on-delete: \"true\" (deleting the spec leaves the units running) or \"false\"",
    );
}

#[test]
fn probes_and_notify() {
    use hostset::spec::{HttpGetAction, PortRef, Probe, ProbeHandler};
    let ds = parse_ok(&format!(
        "{MINIMAL}notify = true\n\
         ports = [{{ name = \"metrics\", port = 9100 }}]\n\
         readinessProbe.httpGet = {{ port = \"metrics\", path = \"/metrics\" }}\n\
         readinessProbe.periodSeconds = 5\n\
         livenessProbe.tcpSocket = {{ port = 9100 }}\n\
         startupProbe.exec.command = [\"/usr/bin/test\", \"-e\", \"/run/agent.ready\"]\n"
    ));
    let p = &ds.template.process;
    assert!(p.notify);
    assert_eq!(
        p.readiness_probe,
        Some(Probe {
            period_seconds: 5,
            ..Probe::new(ProbeHandler::HttpGet(HttpGetAction {
                path: "/metrics".into(),
                port: PortRef::Name("metrics".into()),
                host: String::new(),
                scheme: "HTTP".into(),
                http_headers: Vec::new(),
            }))
        })
    );
    assert_eq!(
        p.liveness_probe,
        Some(Probe::new(ProbeHandler::TcpSocket {
            host: String::new(),
            port: PortRef::Number(9100),
        }))
    );
    assert!(matches!(
        &p.startup_probe,
        Some(Probe { handler: Some(ProbeHandler::Exec { command }), .. }) if command.len() == 3
    ));
    // Without probes and notify, nothing changes (nor does the revision: see unit_mapping).
    let plain = parse_ok(MINIMAL);
    assert!(!plain.template.process.notify);
    assert!(!plain.template.process.has_probes());
}

#[test]
fn probe_diagnostics_use_the_native_paths() {
    let got = diagnostics(&format!(
        "{MINIMAL}readinessProbe.httpGet = {{ port = 9100, path = \"/metrics\" }}\n\
         readinessProbe.periodSecond = 5\n\
         livenessProbe.httpGet = {{ port = \"web\" }}\n\
         livenessProbe.successThreshold = 3\n\
         startupProbe.grpc = {{ port = 9090 }}\n\
         notify = \"yes\"\n"
    ));
    assert_eq!(
        got,
        [
            "ds.toml:9:16: readinessProbe.periodSecond: unknown field \"periodSecond\", did you \
             mean \"periodSeconds\"?",
            "ds.toml:10:34: livenessProbe.httpGet.port: invalid value \"web\": no port of the \
             process has this name (the process declares no named ports); give the number, or \
             name the port under ports",
            "ds.toml:11:34: livenessProbe.successThreshold: invalid value 3: must be 1 (one \
             success is enough to count a liveness probe as passed)",
            "ds.toml:12:14: startupProbe.grpc: grpc probes are not supported (hostset has no gRPC \
             client): use tcpSocket with the same port to check that it accepts connections, or \
             exec with a health-check command such as grpc_health_probe -addr=127.0.0.1:PORT",
            "ds.toml:13:10: notify: must be true or false, not a string",
        ]
    );
}

#[test]
fn rollout_annotations_and_surge_ports_are_checked() {
    let text = "name = \"exp\"\nselector.matchLabels = { app = \"exp\" }\n\
                template.labels = { app = \"exp\" }\ncommand = [\"/bin/sleep\", \"infinity\"]\n\
                annotations = { \"hostset.io/auto-rollback\" = \"maybe\", \
                \"hostset.io/progress-deadline-seconds\" = \"0\" }\n\
                updateStrategy = { type = \"RollingUpdate\", maxUnavailable = 0, maxSurge = 1 }\n\
                [[ports]]\nname = \"metrics\"\nport = 9100\n";
    let loaded = hostset::spec::parse_daemonsets("exp.toml", text, hostset::spec::Format::Toml);
    let lines: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        lines.iter().any(|l| l.contains(
            "annotations: hostset.io/auto-rollback: invalid value \"maybe\": must be \"true\" or \"false\""
        )),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("hostset.io/progress-deadline-seconds: invalid value \"0\"")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("updateStrategy.maxSurge: warning:") && l.contains("9100/TCP")),
        "{lines:#?}"
    );
}
