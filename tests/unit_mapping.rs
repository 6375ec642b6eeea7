//! A daemonset as a transient systemd unit: the property map, revisions,
//! markers and the exec shim (`hostset::unit`).

use std::collections::BTreeSet;
use std::path::Path;

use hostset::spec::{
    DaemonSet, EnvVar, LabelSelector, Labels, Mount, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PodTemplate, Port, Process, Toleration, UpdateStrategy,
};
use hostset::unit::*;

// ---------------------------------------------------------------------------
// Helpers

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A small daemonset built by hand, independent of the decoders.
fn demo() -> DaemonSet {
    DaemonSet {
        name: "demo".into(),
        labels: Labels::new(),
        annotations: Labels::new(),
        selector: Some(LabelSelector {
            match_labels: labels(&[("app", "demo")]),
            match_expressions: Vec::new(),
        }),
        template: PodTemplate {
            labels: labels(&[("app", "demo")]),
            restart_policy: "Always".into(),
            termination_grace_period_seconds: 30,
            process: Process {
                name: "demo".into(),
                argv: strings(&["/bin/sleep", "infinity"]),
                ..Process::default()
            },
            ..PodTemplate::default()
        },
        update_strategy: UpdateStrategy::default(),
        min_ready_seconds: 0,
        revision_history_limit: 10,
    }
}

fn log_collector() -> DaemonSet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/log-collector.toml");
    let (mut items, _warnings) = hostset::spec::read_daemonsets(&path)
        .into_result()
        .unwrap_or_else(|d| panic!("examples/log-collector.toml does not load: {d:#?}"));
    assert_eq!(items.len(), 1);
    items.remove(0)
}

fn spec(ds: &DaemonSet) -> UnitSpec {
    unit_spec(ds, &UnitOptions::default())
}

fn names(u: &UnitSpec) -> Vec<&'static str> {
    u.properties.iter().map(|p| p.name).collect()
}

fn u64_prop(u: &UnitSpec, name: &str) -> Option<u64> {
    match u.property(name)? {
        PropValue::U64(v) => Some(*v),
        other => panic!("{name} is not a u64: {other:?}"),
    }
}

fn str_prop<'a>(u: &'a UnitSpec, name: &str) -> Option<&'a str> {
    match u.property(name)? {
        PropValue::Str(v) => Some(v),
        other => panic!("{name} is not a string: {other:?}"),
    }
}

fn environment(u: &UnitSpec) -> Vec<String> {
    match u.property("Environment") {
        Some(PropValue::Strs(v)) => v.clone(),
        other => panic!("Environment: {other:?}"),
    }
}

fn exec_start(u: &UnitSpec) -> ExecCommand {
    match u.property("ExecStart") {
        Some(PropValue::Exec(cmds)) => {
            assert_eq!(cmds.len(), 1);
            cmds[0].clone()
        }
        other => panic!("ExecStart: {other:?}"),
    }
}

fn with_resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> UnitSpec {
    let mut ds = demo();
    ds.template.process.resources.requests = labels(requests);
    ds.template.process.resources.limits = labels(limits);
    spec(&ds)
}

fn prop(name: &'static str, value: PropValue) -> Property {
    Property { name, value }
}

fn s(v: &str) -> PropValue {
    PropValue::Str(v.to_string())
}

// ---------------------------------------------------------------------------
// The complete unit of the example

#[test]
fn log_collector_complete_property_list() {
    let ds = log_collector();
    let opts = UnitOptions {
        exec_shim: "/usr/local/bin/hostsetd".into(),
        restart_usec: 1_500_000,
    };
    let u = unit_spec(&ds, &opts);
    let rev = revision(&ds.template);

    assert_eq!(u.name, "hostset-log-collector.service");
    assert_eq!(u.daemonset, "log-collector");
    assert_eq!(u.revision, rev);
    assert_eq!(u.labels, labels(&[("name", "log-collector")]));

    let expected = vec![
        prop(
            "Description",
            s(&format!("hostset daemonset log-collector (revision {rev})")),
        ),
        prop("Slice", s("hostset.slice")),
        prop("Type", s("exec")),
        prop(
            "ExecStart",
            PropValue::Exec(vec![ExecCommand {
                path: "/usr/bin/tail".into(),
                argv: strings(&[
                    "/usr/bin/tail",
                    "--quiet",
                    "--lines=0",
                    "--follow=name",
                    "--retry",
                    "/var/log/syslog",
                    "/var/log/messages",
                ]),
                ignore_failure: false,
            }]),
        ),
        prop(
            "Environment",
            PropValue::Strs(vec![
                "TZ=UTC".into(),
                "HOSTSET_DAEMONSET=log-collector".into(),
                format!("HOSTSET_REVISION={rev}"),
                "HOSTSET_LABELS=name=log-collector".into(),
            ]),
        ),
        prop("User", s("root")),
        prop("WorkingDirectory", s("/var/log")),
        prop("Restart", s("always")),
        prop("RestartUSec", PropValue::U64(1_500_000)),
        prop("StartLimitIntervalUSec", PropValue::U64(0)),
        prop("CollectMode", s("inactive-or-failed")),
        prop("MemoryAccounting", PropValue::Bool(true)),
        prop("CPUAccounting", PropValue::Bool(true)),
        prop("TasksAccounting", PropValue::Bool(true)),
        // limits.memory = 200Mi
        prop("MemoryMax", PropValue::U64(209_715_200)),
        // requests.memory = 200Mi
        prop("MemoryLow", PropValue::U64(209_715_200)),
        // no cpu limit: no CPUQuotaPerSecUSec; requests.cpu = 100m -> 102 shares -> 4
        prop("CPUWeight", PropValue::U64(4)),
        prop("TimeoutStopUSec", PropValue::U64(30_000_000)),
        prop("KillMode", s("mixed")),
        prop(
            "BindPaths",
            PropValue::Binds(vec![BindMount {
                source: "/var/log".into(),
                destination: "/var/log".into(),
                ignore_missing: true,
                recursive: true,
            }]),
        ),
        prop(
            "BindReadOnlyPaths",
            PropValue::Binds(vec![BindMount {
                source: "/var/lib/docker/containers".into(),
                destination: "/var/lib/docker/containers".into(),
                ignore_missing: true,
                recursive: true,
            }]),
        ),
        prop(
            "LogExtraFields",
            PropValue::Bytes(vec![
                b"HOSTSET_DAEMONSET=log-collector".to_vec(),
                format!("HOSTSET_REVISION={rev}").into_bytes(),
            ]),
        ),
    ];
    assert_eq!(u.properties, expected);
}

/// The example's revision, pinned. If this fails while
/// `revision_of_a_fixed_template_is_pinned` passes, the decoders (or the
/// example) changed what they put into the template: every running daemon
/// of such a spec would be restarted after an upgrade. Update the literal
/// only if that is intended.
#[test]
fn log_collector_revision_is_pinned() {
    assert_eq!(revision(&log_collector().template), "tb2gzh76k4");
}

#[test]
fn minimal_unit_sets_only_what_the_spec_asks_for() {
    let u = spec(&demo());
    assert_eq!(
        names(&u),
        [
            "Description",
            "Slice",
            "Type",
            "ExecStart",
            "Environment",
            "Restart",
            "RestartUSec",
            "StartLimitIntervalUSec",
            "CollectMode",
            "MemoryAccounting",
            "CPUAccounting",
            "TasksAccounting",
            "CPUWeight",
            "TimeoutStopUSec",
            "KillMode",
            "LogExtraFields",
        ]
    );
    // No user, group or working directory: systemd's defaults (root, /).
    for absent in [
        "User",
        "Group",
        "WorkingDirectory",
        "MemoryMax",
        "MemoryLow",
        "CPUQuotaPerSecUSec",
        "BindPaths",
        "BindReadOnlyPaths",
        "Documentation",
    ] {
        assert!(u.property(absent).is_none(), "{absent} must not be set");
    }
    assert_eq!(u64_prop(&u, "RestartUSec"), Some(1_000_000));
    // No cpu request: BestEffort weight.
    assert_eq!(u64_prop(&u, "CPUWeight"), Some(BEST_EFFORT_CPU_WEIGHT));
    assert_eq!(BEST_EFFORT_CPU_WEIGHT, 1);
}

#[test]
fn every_property_has_the_dbus_signature_systemd_expects() {
    // The shapes measured on systemd 252 (notes §3).
    let mut ds = log_collector();
    ds.template.process.group = "adm".into();
    ds.template.process.resources.limits = labels(&[("cpu", "1"), ("memory", "1Gi")]);
    let u = spec(&ds);
    for p in &u.properties {
        let sig = match &p.value {
            PropValue::Str(_) => "s",
            PropValue::Bool(_) => "b",
            PropValue::U64(_) => "t",
            PropValue::Strs(_) => "as",
            PropValue::Exec(_) => "a(sasb)",
            PropValue::Binds(_) => "a(ssbt)",
            PropValue::Bytes(_) => "aay",
        };
        let want = match p.name {
            "Description" | "Slice" | "Type" | "User" | "Group" | "WorkingDirectory"
            | "Restart" | "CollectMode" | "KillMode" => "s",
            "MemoryAccounting" | "CPUAccounting" | "TasksAccounting" => "b",
            "RestartUSec"
            | "StartLimitIntervalUSec"
            | "MemoryMax"
            | "MemoryLow"
            | "CPUQuotaPerSecUSec"
            | "CPUWeight"
            | "TimeoutStopUSec" => "t",
            "Environment" => "as",
            "ExecStart" => "a(sasb)",
            "BindPaths" | "BindReadOnlyPaths" => "a(ssbt)",
            "LogExtraFields" => "aay",
            other => panic!("unexpected property {other}"),
        };
        assert_eq!(sig, want, "{}", p.name);
    }
    let all: BTreeSet<_> = names(&u).into_iter().collect();
    assert_eq!(all.len(), u.properties.len(), "a property is sent twice");
    assert!(all.contains("Group") && all.contains("CPUQuotaPerSecUSec"));
    // Never ExecStartEx (breaks on daemon-reload in 252, notes §9.2) nor SourcePath (§5).
    assert!(!all.contains("ExecStartEx") && !all.contains("SourcePath"));
}

// ---------------------------------------------------------------------------
// Names and descriptions

#[test]
fn unit_names() {
    assert_eq!(unit_name("log-collector"), "hostset-log-collector.service");
    assert_eq!(unit_name("a.b-c"), "hostset-a.b-c.service");
    for name in ["log-collector", "a", "a.b-c", "node-exporter.v2"] {
        assert_eq!(daemonset_of(&unit_name(name)), Some(name));
    }
    for unit in [
        "hostset-.service",
        "hostset-foo.socket",
        "hostset-foo",
        "other-foo.service",
        "hostset-Foo.service",
        "hostset-foo@bar.service",
        "hostset-foo_bar.service",
        "hostset--foo.service",
        "hostset.slice",
        "",
    ] {
        assert_eq!(daemonset_of(unit), None, "{unit}");
    }
    assert!(UNIT_PATTERN.starts_with(UNIT_PREFIX) && UNIT_PATTERN.ends_with(UNIT_SUFFIX));
}

#[test]
fn longest_daemonset_name_gives_a_unit_name_systemd_accepts() {
    assert_eq!(MAX_DAEMONSET_NAME_LEN, 239);
    let name = "a".repeat(MAX_DAEMONSET_NAME_LEN);
    assert_eq!(unit_name(&name).len(), 255);
    assert_eq!(daemonset_of(&unit_name(&name)), Some(name.as_str()));
}

#[test]
fn descriptions_and_orphans() {
    assert_eq!(
        description("log-collector", "tb2gzh76k4"),
        "hostset daemonset log-collector (revision tb2gzh76k4)"
    );
    assert_eq!(
        orphan_description("log-collector", "tb2gzh76k4"),
        "hostset orphan of daemonset log-collector (revision tb2gzh76k4)"
    );
    assert!(is_orphan(&orphan_description("x", "r")));
    assert!(!is_orphan(&description("x", "r")));
    assert!(!is_orphan(""));
    assert!(!is_orphan("something else"));
    // A daemonset whose name starts like the orphan marker is not an orphan.
    assert!(!is_orphan(&description("orphan-of-x", "r")));
}

// ---------------------------------------------------------------------------
// Resources

#[test]
fn memory_limit_and_request() {
    let u = with_resources(&[("memory", "100Mi")], &[("memory", "200Mi")]);
    assert_eq!(u64_prop(&u, "MemoryMax"), Some(209_715_200));
    assert_eq!(u64_prop(&u, "MemoryLow"), Some(104_857_600));

    // Decimal suffixes, exponents, rounding up to whole bytes.
    let u = with_resources(&[("memory", "1e3")], &[("memory", "1G")]);
    assert_eq!(u64_prop(&u, "MemoryMax"), Some(1_000_000_000));
    assert_eq!(u64_prop(&u, "MemoryLow"), Some(1000));
    let u = with_resources(&[], &[("memory", "1500m")]);
    assert_eq!(u64_prop(&u, "MemoryMax"), Some(2));

    // A request alone: protection, no limit.
    let u = with_resources(&[("memory", "64Mi")], &[]);
    assert_eq!(u64_prop(&u, "MemoryMax"), None);
    assert_eq!(u64_prop(&u, "MemoryLow"), Some(67_108_864));

    // A limit alone: the request defaults to it (SetDefaults_Pod).
    let u = with_resources(&[], &[("memory", "1Gi")]);
    assert_eq!(u64_prop(&u, "MemoryMax"), Some(1_073_741_824));
    assert_eq!(u64_prop(&u, "MemoryLow"), Some(1_073_741_824));

    // A request of 0 is systemd's default: nothing to send.
    let u = with_resources(&[("memory", "0")], &[]);
    assert_eq!(u64_prop(&u, "MemoryLow"), None);

    // Neither.
    let u = with_resources(&[], &[]);
    assert_eq!(u64_prop(&u, "MemoryMax"), None);
    assert_eq!(u64_prop(&u, "MemoryLow"), None);
}

#[test]
fn cpu_quota_per_sec() {
    for (limit, usec) in [
        ("250m", 250_000),
        ("100m", 100_000),
        ("1", 1_000_000),
        ("1.5", 1_500_000),
        ("1500m", 1_500_000),
        ("2", 2_000_000),
        // kubelet's floor: 1 ms per 100 ms period = 10m.
        ("10m", 10_000),
        ("5m", 10_000),
        ("1m", 10_000),
    ] {
        let u = with_resources(&[], &[("cpu", limit)]);
        assert_eq!(u64_prop(&u, "CPUQuotaPerSecUSec"), Some(usec), "{limit}");
    }
    assert_eq!(cpu_quota_per_sec_usec(0), None);
    assert_eq!(cpu_quota_per_sec_usec(-5), None);
    assert_eq!(cpu_quota_per_sec_usec(i64::MAX), Some(u64::MAX));
    // A request sets no quota.
    let u = with_resources(&[("cpu", "1")], &[]);
    assert_eq!(u64_prop(&u, "CPUQuotaPerSecUSec"), None);
}

#[test]
fn cpu_weight_table() {
    for (milli, weight) in [
        (i64::MIN, 1),
        (-1, 1),
        (0, 1),   // MinShares 2 -> 1
        (1, 1),   // 1 share, clamped to 2
        (2, 1),   // 2 shares
        (3, 1),   // 3 shares
        (100, 4), // 102 shares
        (250, 10),
        (500, 20),
        (1000, 39), // 1024 shares
        (1500, 59),
        (2000, 79),
        (4000, 157),
        (255_999, 9999),   // 262142 shares
        (256_000, 10_000), // 262144 shares = MaxShares
        (300_000, 10_000), // clamped to MaxShares
        (i64::MAX, 10_000),
    ] {
        assert_eq!(cpu_weight(milli), weight, "{milli}m");
    }
    // Always inside systemd's range (10001 is refused, notes §3).
    for milli in (0..300_000).step_by(997) {
        assert!((1..=10_000).contains(&cpu_weight(milli)));
    }
}

#[test]
fn cpu_weight_in_the_unit() {
    let weight = |requests: &[(&str, &str)], limits: &[(&str, &str)]| {
        u64_prop(&with_resources(requests, limits), "CPUWeight")
    };
    assert_eq!(weight(&[("cpu", "100m")], &[]), Some(4));
    assert_eq!(weight(&[("cpu", "1")], &[("cpu", "2")]), Some(39));
    // A limit alone: the request defaults to it.
    assert_eq!(weight(&[], &[("cpu", "2")]), Some(79));
    // An explicit request of 0 is kubelet's MinShares.
    assert_eq!(weight(&[("cpu", "0")], &[]), Some(1));
    // No cpu at all: BestEffort.
    assert_eq!(
        weight(&[("memory", "1Gi")], &[]),
        Some(BEST_EFFORT_CPU_WEIGHT)
    );
}

#[test]
fn timeout_stop() {
    for (seconds, usec) in [
        (30, 30_000_000),
        (5, 5_000_000),
        (1, 1_000_000),
        // 0 would mean "no timeout" to systemd: kubelet's floor of 1 s instead.
        (0, 1_000_000),
        (-3, 1_000_000),
        (i64::MAX, u64::MAX),
    ] {
        assert_eq!(timeout_stop_usec(seconds), usec, "{seconds}");
    }
    let mut ds = demo();
    ds.template.termination_grace_period_seconds = 0;
    assert_eq!(u64_prop(&spec(&ds), "TimeoutStopUSec"), Some(1_000_000));
    ds.template.termination_grace_period_seconds = 120;
    assert_eq!(u64_prop(&spec(&ds), "TimeoutStopUSec"), Some(120_000_000));
}

// ---------------------------------------------------------------------------
// Process fields and mounts

#[test]
fn user_group_and_working_directory() {
    let mut ds = demo();
    ds.template.process.user = "1000".into();
    ds.template.process.group = "adm".into();
    ds.template.process.working_dir = "/srv/demo".into();
    let u = spec(&ds);
    assert_eq!(str_prop(&u, "User"), Some("1000"));
    assert_eq!(str_prop(&u, "Group"), Some("adm"));
    assert_eq!(str_prop(&u, "WorkingDirectory"), Some("/srv/demo"));
    let n = names(&u);
    let at = |name| n.iter().position(|p| *p == name).unwrap();
    assert!(at("Environment") < at("User") && at("User") < at("Group"));
    assert!(at("Group") < at("WorkingDirectory") && at("WorkingDirectory") < at("Restart"));

    // Group alone.
    let mut ds = demo();
    ds.template.process.group = "adm".into();
    let u = spec(&ds);
    assert_eq!(str_prop(&u, "User"), None);
    assert_eq!(str_prop(&u, "Group"), Some("adm"));
    assert_eq!(str_prop(&u, "WorkingDirectory"), None);
}

#[test]
fn bare_program_name_stays_bare() {
    let mut ds = demo();
    ds.template.process.argv = strings(&["sleep", "infinity"]);
    let cmd = exec_start(&spec(&ds));
    assert_eq!(cmd.path, "sleep");
    assert_eq!(cmd.argv, strings(&["sleep", "infinity"]));
    assert!(!cmd.ignore_failure);
}

#[test]
fn bind_mounts_read_write_and_read_only() {
    let mount = |name: &str, host: &str, at: &str, ro: bool| Mount {
        name: name.into(),
        host_path: host.into(),
        mount_path: at.into(),
        read_only: ro,
    };
    let mut ds = demo();
    ds.template.mounts = vec![
        mount("a", "/var/log", "/var/log", false),
        mount("b", "/etc/demo", "/etc/demo", true),
        mount("c", "/srv/data", "/data", false),
        mount("d", "/run/secrets/demo", "/secrets", true),
    ];
    let u = spec(&ds);
    // Same-path mounts tolerate a missing source; remapped ones do not.
    let bind = |src: &str, dst: &str| BindMount {
        source: src.into(),
        destination: dst.into(),
        ignore_missing: src == dst,
        recursive: true,
    };
    assert_eq!(
        u.property("BindPaths"),
        Some(&PropValue::Binds(vec![
            bind("/var/log", "/var/log"),
            bind("/srv/data", "/data"),
        ]))
    );
    assert_eq!(
        u.property("BindReadOnlyPaths"),
        Some(&PropValue::Binds(vec![
            bind("/etc/demo", "/etc/demo"),
            bind("/run/secrets/demo", "/secrets"),
        ]))
    );

    // Only read-only mounts: no BindPaths at all.
    ds.template.mounts = vec![mount("b", "/etc/demo", "/etc/demo", true)];
    let u = spec(&ds);
    assert!(u.property("BindPaths").is_none());
    assert!(u.property("BindReadOnlyPaths").is_some());
    // Only read-write ones.
    ds.template.mounts = vec![mount("a", "/var/log", "/var/log", false)];
    let u = spec(&ds);
    assert!(u.property("BindPaths").is_some());
    assert!(u.property("BindReadOnlyPaths").is_none());
}

#[test]
fn log_extra_fields() {
    let u = spec(&demo());
    assert_eq!(
        u.property("LogExtraFields"),
        Some(&PropValue::Bytes(vec![
            b"HOSTSET_DAEMONSET=demo".to_vec(),
            format!("HOSTSET_REVISION={}", u.revision).into_bytes(),
        ]))
    );
}

// ---------------------------------------------------------------------------
// Revision

/// The canonical encoding is part of hostset's contract: a change here means
/// every daemon restarts on upgrade. Do not update these literals casually.
#[test]
fn revision_of_a_fixed_template_is_pinned() {
    assert_eq!(revision(&demo().template), "mfnz894n8m");
    assert_eq!(revision(&PodTemplate::default()), "s6vf8jvv2p");
}

#[test]
fn revision_shape_and_determinism() {
    let alphabet = "bcdfghjklmnpqrstvwxz2456789";
    for t in [
        demo().template,
        log_collector().template,
        PodTemplate::default(),
    ] {
        let r = revision(&t);
        assert_eq!(r.len(), 10);
        assert!(r.chars().all(|c| alphabet.contains(c)), "{r}");
        assert_eq!(revision(&t.clone()), r);
        assert_eq!(revision(&t), r);
    }
}

#[test]
fn revision_ignores_what_is_not_the_template() {
    let base = demo();
    let r = revision(&base.template);
    let mut ds = base.clone();
    ds.name = "other".into();
    ds.labels = labels(&[("x", "y")]);
    ds.annotations = labels(&[("x", "y")]);
    ds.selector = None;
    ds.update_strategy.kind = "OnDelete".into();
    ds.update_strategy.rolling_update = None;
    ds.min_ready_seconds = 7;
    ds.revision_history_limit = 3;
    assert_eq!(spec(&ds).revision, r);
    // Nor the host's options.
    let u = unit_spec(
        &base,
        &UnitOptions {
            exec_shim: "/opt/hostsetd".into(),
            restart_usec: 5,
        },
    );
    assert_eq!(u.revision, r);
}

#[test]
fn revision_changes_with_every_field_that_matters() {
    type Change = (&'static str, fn(&mut PodTemplate));
    let changes: &[Change] = &[
        ("argv value", |t| t.process.argv[1] = "60".into()),
        ("argv split", |t| {
            t.process.argv = strings(&["/bin/sleep infinity"]);
        }),
        ("argv joined differently", |t| {
            t.process.argv = strings(&["/bin/sleepi", "nfinity"]);
        }),
        ("argv appended", |t| t.process.argv.push("x".into())),
        ("argv empty element", |t| t.process.argv.push(String::new())),
        ("env added", |t| {
            t.process.env.push(EnvVar {
                name: "A".into(),
                value: "1".into(),
            })
        }),
        ("env empty value", |t| {
            t.process.env.push(EnvVar {
                name: "A".into(),
                value: String::new(),
            })
        }),
        ("env two", |t| {
            t.process.env = vec![
                EnvVar {
                    name: "A".into(),
                    value: "1".into(),
                },
                EnvVar {
                    name: "B".into(),
                    value: "2".into(),
                },
            ]
        }),
        ("env two, other order", |t| {
            t.process.env = vec![
                EnvVar {
                    name: "B".into(),
                    value: "2".into(),
                },
                EnvVar {
                    name: "A".into(),
                    value: "1".into(),
                },
            ]
        }),
        ("memory limit", |t| {
            t.process.resources.limits = labels(&[("memory", "200Mi")])
        }),
        ("memory limit spelled otherwise", |t| {
            t.process.resources.limits = labels(&[("memory", "209715200")])
        }),
        ("memory request", |t| {
            t.process.resources.requests = labels(&[("memory", "200Mi")])
        }),
        ("cpu limit", |t| {
            t.process.resources.limits = labels(&[("cpu", "200m")])
        }),
        ("cpu request", |t| {
            t.process.resources.requests = labels(&[("cpu", "200m")])
        }),
        ("user", |t| t.process.user = "nobody".into()),
        ("group", |t| t.process.group = "nogroup".into()),
        ("user and group swapped", |t| {
            t.process.group = "nobody".into();
        }),
        ("working dir", |t| t.process.working_dir = "/srv".into()),
        ("process name", |t| t.process.name = "other".into()),
        ("port", |t| {
            t.process.ports.push(Port {
                name: "http".into(),
                container_port: 8080,
                host_port: 0,
                protocol: "TCP".into(),
            })
        }),
        ("mount", |t| {
            t.mounts.push(Mount {
                name: "m".into(),
                host_path: "/var/log".into(),
                mount_path: "/var/log".into(),
                read_only: false,
            })
        }),
        ("mount read-only", |t| {
            t.mounts.push(Mount {
                name: "m".into(),
                host_path: "/var/log".into(),
                mount_path: "/var/log".into(),
                read_only: true,
            })
        }),
        ("mount remapped", |t| {
            t.mounts.push(Mount {
                name: "m".into(),
                host_path: "/var/log".into(),
                mount_path: "/logs".into(),
                read_only: false,
            })
        }),
        ("label value", |t| {
            t.labels.insert("app".into(), "other".into());
        }),
        ("label added", |t| {
            t.labels.insert("tier".into(), "node".into());
        }),
        ("label boundary", |t| {
            t.labels = labels(&[("ap", "pdemo")]);
        }),
        ("annotation", |t| {
            t.annotations = labels(&[("kubectl.kubernetes.io/restartedAt", "now")]);
        }),
        ("node selector", |t| {
            t.node_selector = labels(&[("kubernetes.io/os", "linux")]);
        }),
        ("node name", |t| t.node_name = "web-1".into()),
        ("affinity: empty but present", |t| {
            t.required_node_affinity = Some(NodeSelector::default());
        }),
        ("affinity: a term", |t| {
            t.required_node_affinity = Some(NodeSelector {
                terms: vec![NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement {
                        key: "disk".into(),
                        operator: "In".into(),
                        values: strings(&["ssd"]),
                    }],
                    match_fields: Vec::new(),
                }],
            });
        }),
        ("affinity: same term as a field", |t| {
            t.required_node_affinity = Some(NodeSelector {
                terms: vec![NodeSelectorTerm {
                    match_expressions: Vec::new(),
                    match_fields: vec![NodeSelectorRequirement {
                        key: "disk".into(),
                        operator: "In".into(),
                        values: strings(&["ssd"]),
                    }],
                }],
            });
        }),
        ("toleration", |t| {
            t.tolerations.push(Toleration {
                key: "node-role.kubernetes.io/control-plane".into(),
                operator: "Exists".into(),
                effect: "NoSchedule".into(),
                ..Toleration::default()
            })
        }),
        ("toleration seconds 0", |t| {
            t.tolerations.push(Toleration {
                key: "node-role.kubernetes.io/control-plane".into(),
                operator: "Exists".into(),
                effect: "NoSchedule".into(),
                toleration_seconds: Some(0),
                ..Toleration::default()
            })
        }),
        ("empty toleration (tolerates everything)", |t| {
            t.tolerations.push(Toleration::default())
        }),
        ("grace period", |t| t.termination_grace_period_seconds = 31),
        ("grace period 0", |t| t.termination_grace_period_seconds = 0),
        ("host network", |t| t.host_network = true),
        ("restart policy", |t| t.restart_policy = "OnFailure".into()),
    ];
    let base = demo().template;
    let mut seen = std::collections::BTreeMap::new();
    seen.insert(revision(&base), "base");
    for (what, change) in changes {
        let mut t = base.clone();
        change(&mut t);
        assert_ne!(t, base, "{what}: the change changes nothing");
        let r = revision(&t);
        if let Some(earlier) = seen.insert(r.clone(), what) {
            panic!("{what} gives the same revision {r} as {earlier}");
        }
    }
}

// ---------------------------------------------------------------------------
// `$` and `;`: the exec shim

#[test]
fn which_argv_needs_the_shim() {
    for argv in [
        &["/bin/sh", "-c", "echo $HOME"][..],
        &["/bin/echo", "${HOME}"],
        &["/bin/echo", "$$"],
        &["/bin/echo", "a;b"],
        &["/bin/echo", ";"],
        &["/opt/$weird/bin"],
        // A bare name systemd would read as an ExecStart= prefix.
        &["-daemon"],
        &["@daemon", "x"],
        &["+daemon"],
        &["!daemon"],
        &[":daemon"],
    ] {
        assert!(needs_exec_shim(&strings(argv)), "{argv:?}");
    }
    for argv in [
        &["/usr/bin/tail", "--follow=name", "/var/log/syslog"][..],
        &["sleep", "infinity"],
        // Seen to survive daemon-reload (notes §9.1).
        &["/bin/echo", "100%", "%n"],
        &["/bin/echo", "back\\slash"],
        &["/bin/echo", "\"quoted\"", "'single'"],
        &["/bin/echo", "with space", "with\ttab"],
        // Prefix characters are harmless after argv[0].
        &["/bin/echo", "-n", "@x", "+y", "!z", ":w"],
        &[],
    ] {
        assert!(!needs_exec_shim(&strings(argv)), "{argv:?}");
    }
}

#[test]
fn argv_with_dollar_or_semicolon_goes_through_the_shim() {
    let argv = strings(&["/bin/sh", "-c", "exec sleep ${DELAY:-60}; echo $$ done"]);
    let mut ds = demo();
    ds.template.process.argv = argv.clone();
    ds.template.process.env = vec![EnvVar {
        name: "DELAY".into(),
        value: "5".into(),
    }];
    let opts = UnitOptions {
        exec_shim: "/usr/sbin/hostsetd".into(),
        restart_usec: 1_000_000,
    };
    let u = unit_spec(&ds, &opts);
    assert_eq!(
        exec_start(&u),
        ExecCommand {
            path: "/usr/sbin/hostsetd".into(),
            argv: strings(&["/usr/sbin/hostsetd", "exec"]),
            ignore_failure: false,
        }
    );
    assert_eq!(
        environment(&u),
        vec![
            "DELAY=5".to_string(),
            "HOSTSET_ARGC=3".into(),
            "HOSTSET_ARGV_0=/bin/sh".into(),
            "HOSTSET_ARGV_1=-c".into(),
            "HOSTSET_ARGV_2=exec sleep ${DELAY:-60}; echo $$ done".into(),
            "HOSTSET_DAEMONSET=demo".into(),
            format!("HOSTSET_REVISION={}", u.revision),
            "HOSTSET_LABELS=app=demo".into(),
        ]
    );

    // What `hostsetd exec` sees: the unit's environment, split at the first `=`.
    let vars = environment(&u).into_iter().map(|e| {
        let (k, v) = e.split_once('=').unwrap();
        (k.to_string(), v.to_string())
    });
    assert_eq!(argv_from_env(vars), Some(argv));
    // The markers are still found.
    let m = markers_from_environment(&environment(&u)).unwrap();
    assert_eq!(
        (m.daemonset.as_str(), m.revision.as_str()),
        ("demo", u.revision.as_str())
    );
}

#[test]
fn argv_env_round_trip() {
    let cases: &[&[&str]] = &[
        &["/bin/true"],
        &["sleep", "infinity"],
        &["/bin/sh", "-c", "echo $HOME; echo ${PATH} $$"],
        &["/bin/echo", "", "a=b", "=", "==x", "HOSTSET_ARGC=9"],
        &[
            "/bin/echo",
            "multi\nline",
            "tab\there",
            "back\\slash",
            "ünïcödé",
            "%n%%",
        ],
        &[
            "/bin/echo",
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
            "7",
            "8",
            "9",
            "10",
            "11",
            "12",
        ],
    ];
    for argv in cases {
        let argv = strings(argv);
        let env = argv_env(&argv);
        assert_eq!(env.len(), argv.len() + 1);
        assert_eq!(env[0], format!("HOSTSET_ARGC={}", argv.len()));
        let pairs = env.iter().map(|e| {
            let (k, v) = e.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        });
        assert_eq!(argv_from_env(pairs), Some(argv.clone()), "{argv:?}");
        // Order does not matter, and other variables are ignored.
        let mut shuffled: Vec<(String, String)> = env
            .iter()
            .rev()
            .map(|e| {
                let (k, v) = e.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        shuffled.insert(0, ("PATH".into(), "/usr/bin".into()));
        shuffled.push(("HOSTSET_DAEMONSET".into(), "demo".into()));
        assert_eq!(argv_from_env(shuffled.into_iter()), Some(argv));
    }
}

#[test]
fn argv_from_env_refuses_incomplete_input() {
    let vars = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    };
    assert_eq!(argv_from_env(vars(&[])), None);
    assert_eq!(
        argv_from_env(vars(&[("HOSTSET_ARGV_0", "/bin/true")])),
        None
    );
    assert_eq!(argv_from_env(vars(&[("HOSTSET_ARGC", "0")])), None);
    assert_eq!(argv_from_env(vars(&[("HOSTSET_ARGC", "")])), None);
    assert_eq!(
        argv_from_env(vars(&[("HOSTSET_ARGC", "-1"), ("HOSTSET_ARGV_0", "x")])),
        None
    );
    assert_eq!(
        argv_from_env(vars(&[("HOSTSET_ARGC", "+1"), ("HOSTSET_ARGV_0", "x")])),
        None
    );
    assert_eq!(
        argv_from_env(vars(&[("HOSTSET_ARGC", "one"), ("HOSTSET_ARGV_0", "x")])),
        None
    );
    assert_eq!(
        argv_from_env(vars(&[
            ("HOSTSET_ARGC", "99999999999999999999999"),
            ("HOSTSET_ARGV_0", "x")
        ])),
        None
    );
    // A gap.
    assert_eq!(
        argv_from_env(vars(&[
            ("HOSTSET_ARGC", "2"),
            ("HOSTSET_ARGV_0", "/bin/echo"),
            ("HOSTSET_ARGV_2", "x"),
        ])),
        None
    );
    // `01` is not argument 1.
    assert_eq!(
        argv_from_env(vars(&[
            ("HOSTSET_ARGC", "2"),
            ("HOSTSET_ARGV_0", "/bin/echo"),
            ("HOSTSET_ARGV_01", "x"),
        ])),
        None
    );
    // Extra arguments beyond ARGC are ignored; the last assignment wins.
    assert_eq!(
        argv_from_env(vars(&[
            ("HOSTSET_ARGC", "1"),
            ("HOSTSET_ARGV_0", "/bin/false"),
            ("HOSTSET_ARGV_0", "/bin/true"),
            ("HOSTSET_ARGV_1", "ignored"),
        ])),
        Some(strings(&["/bin/true"]))
    );
}

// ---------------------------------------------------------------------------
// Markers

#[test]
fn markers_round_trip() {
    let mut ds = demo();
    ds.template.labels = labels(&[("app", "demo"), ("tier", "node"), ("k8s.io/part-of", "x")]);
    ds.template.process.env = vec![EnvVar {
        name: "A".into(),
        value: "1".into(),
    }];
    let u = spec(&ds);
    let env = environment(&u);
    assert!(env.contains(&"HOSTSET_LABELS=app=demo,k8s.io/part-of=x,tier=node".to_string()));
    assert_eq!(
        markers_from_environment(&env),
        Some(Markers {
            daemonset: "demo".into(),
            revision: u.revision.clone(),
            labels: u.labels.clone(),
        })
    );
    assert_eq!(u.labels, ds.template.labels);
    assert_eq!(parse_labels_value(&labels_value(&u.labels)), u.labels);

    // No template labels.
    ds.template.labels.clear();
    let u = spec(&ds);
    assert!(environment(&u).contains(&"HOSTSET_LABELS=".to_string()));
    assert_eq!(
        markers_from_environment(&environment(&u)).unwrap().labels,
        Labels::new()
    );
}

#[test]
fn markers_need_daemonset_and_revision() {
    let env = |items: &[&str]| strings(items);
    assert_eq!(markers_from_environment(&[]), None);
    assert_eq!(
        markers_from_environment(&env(&["HOSTSET_REVISION=abc"])),
        None
    );
    assert_eq!(
        markers_from_environment(&env(&["HOSTSET_DAEMONSET=x"])),
        None
    );
    assert_eq!(
        markers_from_environment(&env(&["HOSTSET_DAEMONSET=", "HOSTSET_REVISION=abc"])),
        None
    );
    assert_eq!(
        markers_from_environment(&env(&["HOSTSET_DAEMONSET=x", "HOSTSET_REVISION="])),
        None
    );
    // Labels are optional.
    assert_eq!(
        markers_from_environment(&env(&[
            "PATH=/bin",
            "HOSTSET_DAEMONSET=x",
            "HOSTSET_REVISION=abc",
            "JUNK"
        ])),
        Some(Markers {
            daemonset: "x".into(),
            revision: "abc".into(),
            labels: Labels::new(),
        })
    );
}

#[test]
fn labels_are_parsed_leniently() {
    assert_eq!(parse_labels_value(""), Labels::new());
    assert_eq!(
        parse_labels_value("a=1,,b,=orphan,c=2=3,d=,a=4"),
        labels(&[("a", "4"), ("c", "2=3"), ("d", "")])
    );
}

#[test]
fn spec_env_cannot_forge_the_markers() {
    // systemd keeps the last assignment of a name; the markers come last.
    let mut ds = demo();
    ds.template.process.env = vec![
        EnvVar {
            name: "HOSTSET_DAEMONSET".into(),
            value: "forged".into(),
        },
        EnvVar {
            name: "HOSTSET_REVISION".into(),
            value: "forged".into(),
        },
    ];
    let u = spec(&ds);
    let m = markers_from_environment(&environment(&u)).unwrap();
    assert_eq!(m.daemonset, "demo");
    assert_eq!(m.revision, u.revision);

    // Nor the shim's argv.
    ds.template.process.argv = strings(&["/bin/echo", "$x"]);
    ds.template.process.env.push(EnvVar {
        name: "HOSTSET_ARGV_0".into(),
        value: "/bin/rm".into(),
    });
    let u = spec(&ds);
    let vars = environment(&u).into_iter().map(|e| {
        let (k, v) = e.split_once('=').unwrap();
        (k.to_string(), v.to_string())
    });
    assert_eq!(argv_from_env(vars), Some(strings(&["/bin/echo", "$x"])));
}

#[test]
fn a_notify_daemon_is_type_notify_with_notify_access_all() {
    let mut ds = demo();
    ds.template.process.notify = true;
    let u = spec(&ds);
    assert_eq!(u.property("Type"), Some(&s("notify")));
    assert_eq!(u.property("NotifyAccess"), Some(&s("all")));
    let plain = spec(&demo());
    assert_eq!(plain.property("Type"), Some(&s("exec")));
    assert_eq!(plain.property("NotifyAccess"), None);
}

#[test]
fn probes_and_notify_are_part_of_the_revision() {
    use hostset::spec::{PortRef, Probe, ProbeHandler};
    let base = revision(&demo().template);
    let tcp = Probe::new(ProbeHandler::TcpSocket {
        host: String::new(),
        port: PortRef::Number(80),
    });
    let mut seen = BTreeSet::from([base]);
    type Change<'a> = Box<dyn Fn(&mut hostset::spec::Process) + 'a>;
    let variants: Vec<Change> = vec![
        Box::new(|p| p.notify = true),
        Box::new(|p| p.readiness_probe = Some(tcp.clone())),
        Box::new(|p| p.liveness_probe = Some(tcp.clone())),
        Box::new(|p| p.startup_probe = Some(tcp.clone())),
        Box::new(|p| {
            p.readiness_probe = Some(Probe {
                period_seconds: 5,
                ..tcp.clone()
            })
        }),
        Box::new(|p| {
            p.readiness_probe = Some(Probe::new(ProbeHandler::TcpSocket {
                host: String::new(),
                port: PortRef::Name("http".into()),
            }))
        }),
    ];
    for change in &variants {
        let mut ds = demo();
        change(&mut ds.template.process);
        assert!(seen.insert(revision(&ds.template)), "a revision repeats");
    }
}

#[test]
fn an_exec_probe_runs_in_a_oneshot_unit_shaped_like_the_daemon() {
    let mut ds = demo();
    ds.template.process.user = "nobody".into();
    ds.template.process.working_dir = "/srv".into();
    ds.template.process.env = vec![hostset::spec::EnvVar {
        name: "MODE".into(),
        value: "probe".into(),
    }];
    ds.template.mounts = vec![hostset::spec::Mount {
        name: "data".into(),
        host_path: "/var/lib/demo".into(),
        mount_path: "/data".into(),
        read_only: true,
    }];
    let opts = UnitOptions::default();
    let command = strings(&["/bin/sh", "-c", "test -S \"$SOCK\""]);
    let u = probe_unit_spec(
        &ds,
        "hostset.probe-abc-1.service",
        "readiness",
        &command,
        2_000_000,
        &opts,
    );
    assert_eq!(u.name, "hostset.probe-abc-1.service");
    assert!(!u.name.starts_with(UNIT_PREFIX));
    assert_eq!(
        u.property("Description"),
        Some(&s("hostset readiness probe of daemonset demo"))
    );
    assert_eq!(u.property("Type"), Some(&s("oneshot")));
    assert_eq!(u.property("Slice"), Some(&s("hostset.slice")));
    assert_eq!(u.property("User"), Some(&s("nobody")));
    assert_eq!(u.property("WorkingDirectory"), Some(&s("/srv")));
    assert_eq!(
        u.property("TimeoutStartUSec"),
        Some(&PropValue::U64(2_000_000))
    );
    let daemon = spec(&ds);
    assert_eq!(
        u.property("BindReadOnlyPaths"),
        daemon.property("BindReadOnlyPaths")
    );
    // `$` in an argument: through the shim, as the daemon's own ExecStart would be.
    assert_eq!(
        u.property("ExecStart"),
        Some(&PropValue::Exec(vec![ExecCommand {
            path: opts.exec_shim.clone(),
            argv: vec![opts.exec_shim.clone(), "exec".into()],
            ignore_failure: false,
        }]))
    );
    let Some(PropValue::Strs(env)) = u.property("Environment") else {
        panic!("no Environment");
    };
    assert_eq!(env[0], "MODE=probe");
    assert_eq!(
        argv_from_env(env.iter().filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })),
        Some(command)
    );
    assert!(!env.iter().any(|e| e.starts_with("HOSTSET_DAEMONSET=")));
    // No restart, no CollectMode: a failed run stays to be read.
    assert_eq!(u.property("Restart"), None);
    assert_eq!(u.property("CollectMode"), None);
}
