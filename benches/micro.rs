//! Micro-benchmarks of the pure core: placement, the selector matcher, spec and node parsing,
//! and the agent's planner.
//!
//! ```sh
//! cargo bench --bench micro               # the full criterion run (about 5 minutes)
//! cargo bench --bench micro -- --quick    # criterion's quick mode
//! cargo bench --bench micro -- parse/     # one group (criterion's name filter)
//! ```
//!
//! Each measurement has a baseline measured in the same run, so the ratio holds on any
//! machine even when the absolute times do not:
//!
//! - parsing: the raw parse of the same text into a generic tree (`toml::Value`,
//!   `yaml_rust2::Yaml`, `serde_json::Value`), i.e. what decoding + validation + positions
//!   add over reading the syntax;
//! - the selector matcher: a hand-written matcher over the same selector and labels with no
//!   Kubernetes validation (what `Requirement::new` costs on every call);
//! - placement: the typical case for the worst cases, and a hand-written
//!   nodeSelector + taints check for the typical case;
//! - plan: `placement::evaluate` of every spec alone (the part of a pass that placement
//!   takes), and the 50-spec plan for the 500-spec one (how it scales).
//!
//! At the end it reads criterion's estimates of this run (`<criterion dir>/<group>/<name>/
//! new/estimates.json`, only those written by this process), prints a summary table and
//! writes `target/bench/micro.json` in the schema `benches/run` reads (documented there).
//! Nothing here asserts a time: the targets are reported as met or missed, never enforced.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use hostset::node::{HostFacts, NodeFile, parse_node};
use hostset::placement::evaluate;
use hostset::placement::selector::label_selector_matches;
use hostset::plan::{Desired, Input, ObservedUnit, plan};
use hostset::spec::{
    DaemonSet, Format, LabelSelector, LabelSelectorRequirement, Labels, Node, Taint, doc,
    parse_daemonsets,
};
use hostset::unit::{self, Markers, UnitOptions, unit_spec};

// ---------------------------------------------------------------------------------------------
// Inputs

const LOG_COLLECTOR_TOML: &str = include_str!("../examples/log-collector.toml");
const FLUENTD_YAML: &str = include_str!("../examples/fluentd-elasticsearch.yaml");
const NODE_WEB_TOML: &str = include_str!("../examples/nodes/web-1.toml");
const NODE_CP_YAML: &str = include_str!("../examples/nodes/control-plane.yaml");

/// Sizes of the worst case: labels and taints on the node, tolerations, affinity terms and
/// expressions per term, nodeSelector pairs.
const WORST_LABELS: usize = 128;
const WORST_TAINTS: usize = 32;
const WORST_EXTRA_TOLERATIONS: usize = 32;
const WORST_TERMS: usize = 8;
const WORST_EXPRESSIONS: usize = 16;
const WORST_NODE_SELECTOR: usize = 16;

fn daemonset(file: &str, text: &str, format: Format) -> DaemonSet {
    let loaded = parse_daemonsets(file, text, format);
    assert!(!loaded.has_errors(), "{file}: {:#?}", loaded.diagnostics);
    loaded.items.into_iter().next().expect("one daemonset")
}

fn node_from(file: &str, text: &str, format: Format, facts: Option<&HostFacts>) -> Node {
    let loaded = parse_node(file, text, format);
    assert!(!loaded.has_errors(), "{file}: {:#?}", loaded.diagnostics);
    let nf: NodeFile = loaded.items.into_iter().next().expect("one node");
    nf.resolve(facts)
}

/// A typical node: web-1.toml with the automatic labels of a Debian host, and the
/// control-plane taint (which the log collector tolerates).
fn typical_node() -> Node {
    let facts = HostFacts::from_sources(
        "web-1",
        Some("ID=debian\nVERSION_ID=\"13\"\n"),
        Some("6.12.48+deb13-amd64"),
    );
    let mut node = node_from("web-1.toml", NODE_WEB_TOML, Format::Toml, Some(&facts));
    node.taints.push(Taint {
        key: "node-role.kubernetes.io/control-plane".into(),
        value: String::new(),
        effect: "NoSchedule".into(),
    });
    node
}

fn label_key(i: usize) -> String {
    format!("bench.example.com/label-{i:03}")
}

/// A node with [`WORST_LABELS`] labels (plus an integer `cores` label) and [`WORST_TAINTS`]
/// taints alternating NoSchedule / NoExecute / PreferNoSchedule. `other` changes every
/// label value and taint key, so that a daemonset written for the first node fails every
/// predicate on the second.
fn big_node(other: bool) -> Node {
    let tag = if other { "other" } else { "value" };
    let mut labels: Labels = (0..WORST_LABELS)
        .map(|i| (label_key(i), format!("{tag}-{i}")))
        .collect();
    labels.insert("bench.example.com/cores".into(), "64".into());
    labels.insert("kubernetes.io/hostname".into(), "big-1".into());
    let effects = ["NoSchedule", "NoExecute", "PreferNoSchedule"];
    let taints = (0..WORST_TAINTS)
        .map(|i| Taint {
            key: format!(
                "bench.example.com/{}taint-{i:02}",
                if other { "x-" } else { "" }
            ),
            value: format!("v{i}"),
            effect: effects[i % effects.len()].into(),
        })
        .collect();
    Node {
        name: "big-1".into(),
        labels,
        taints,
        unschedulable: false,
    }
}

/// The worst-case daemonset, as native TOML: [`WORST_NODE_SELECTOR`] nodeSelector pairs,
/// [`WORST_TERMS`] affinity terms of [`WORST_EXPRESSIONS`] expressions each where every term
/// but the last fails on its last expression (so every expression is evaluated), and
/// [`WORST_EXTRA_TOLERATIONS`] tolerations that tolerate nothing ahead of one per taint,
/// listed in reverse taint order (so every taint scans most of the list).
fn worst_toml() -> String {
    let mut s = String::from(
        "name = \"worst-case\"\ncommand = [\"/bin/sleep\", \"infinity\"]\n\
         selector.matchLabels = { app = \"worst-case\" }\n\
         template.labels = { app = \"worst-case\" }\n",
    );
    s.push_str("nodeSelector = { ");
    let pairs: Vec<String> = (0..WORST_NODE_SELECTOR)
        .map(|i| format!("\"{}\" = \"value-{i}\"", label_key(i)))
        .collect();
    s.push_str(&pairs.join(", "));
    s.push_str(" }\n");
    for term in 0..WORST_TERMS {
        s.push_str("\n[[nodeSelectorTerms]]\nmatchExpressions = [\n");
        for e in 0..WORST_EXPRESSIONS {
            let i = (term * WORST_EXPRESSIONS + e) % WORST_LABELS;
            let key = label_key(i);
            let last = e == WORST_EXPRESSIONS - 1;
            let fail = last && term != WORST_TERMS - 1;
            let expr = match e % 4 {
                _ if fail => format!(r#"{{ key = "{key}", operator = "DoesNotExist" }}"#),
                0 => {
                    // In with eight values, the matching one last.
                    let mut values: Vec<String> = (0..7).map(|v| format!("\"nope-{v}\"")).collect();
                    values.push(format!("\"value-{i}\""));
                    format!(
                        r#"{{ key = "{key}", operator = "In", values = [{}] }}"#,
                        values.join(", ")
                    )
                }
                1 => format!(
                    r#"{{ key = "{key}", operator = "NotIn", values = ["nope-1", "nope-2", "nope-3"] }}"#
                ),
                2 => format!(r#"{{ key = "{key}", operator = "Exists" }}"#),
                _ => r#"{ key = "bench.example.com/cores", operator = "Gt", values = ["8"] }"#
                    .to_string(),
            };
            let _ = writeln!(s, "  {expr},");
        }
        s.push_str("]\n");
    }
    for i in 0..WORST_EXTRA_TOLERATIONS {
        let _ = write!(
            s,
            "\n[[tolerations]]\nkey = \"bench.example.com/unrelated-{i:02}\"\n\
             operator = \"Equal\"\nvalue = \"v{i}\"\neffect = \"NoExecute\"\n"
        );
    }
    let effects = ["NoSchedule", "NoExecute", "PreferNoSchedule"];
    for i in (0..WORST_TAINTS).rev() {
        let _ = write!(
            s,
            "\n[[tolerations]]\nkey = \"bench.example.com/taint-{i:02}\"\n\
             operator = \"Equal\"\nvalue = \"v{i}\"\neffect = \"{}\"\n",
            effects[i % effects.len()]
        );
    }
    s
}

/// The fluentd YAML as the equivalent JSON manifest (`kubectl get -o json`-shaped).
fn yaml_to_json(text: &str) -> String {
    fn conv(y: &yaml_rust2::Yaml) -> serde_json::Value {
        use yaml_rust2::Yaml;
        match y {
            Yaml::Real(r) => serde_json::Value::from(r.parse::<f64>().expect("a real")),
            Yaml::Integer(i) => serde_json::Value::from(*i),
            Yaml::String(s) => serde_json::Value::from(s.as_str()),
            Yaml::Boolean(b) => serde_json::Value::from(*b),
            Yaml::Array(a) => serde_json::Value::Array(a.iter().map(conv).collect()),
            Yaml::Hash(h) => serde_json::Value::Object(
                h.iter()
                    .map(|(k, v)| (k.as_str().expect("string keys").to_string(), conv(v)))
                    .collect(),
            ),
            _ => serde_json::Value::Null,
        }
    }
    let docs = yaml_rust2::YamlLoader::load_from_str(text).expect("valid YAML");
    serde_json::to_string_pretty(&conv(&docs[0])).expect("JSON")
}

/// `n` daemonsets with a mix of placement rules, and `n` units as systemd would list them on
/// a typical node: most running at the desired revision, some at an older one (stop), some
/// failed (grace), and for every tenth daemonset no unit of its own but one of a deleted
/// daemonset (start + cascade stop).
fn plan_world(n: usize) -> (Vec<Desired>, Vec<ObservedUnit>) {
    let opts = UnitOptions::default();
    let mut desired = Vec::with_capacity(n);
    let mut units = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("ds-{i:04}");
        let mut text = format!(
            "name = \"{name}\"\ncommand = [\"/usr/bin/daemon\", \"--id\", \"{i}\"]\n\
             selector.matchLabels = {{ app = \"{name}\" }}\n\
             template.labels = {{ app = \"{name}\" }}\n\
             resources.limits = {{ memory = \"64Mi\", cpu = \"250m\" }}\n"
        );
        if i % 3 == 0 {
            text.push_str("nodeSelector = { role = \"web\" }\n");
        }
        if i % 4 == 0 {
            text.push_str(
                "[[nodeSelectorTerms]]\nmatchExpressions = [\n  \
                 { key = \"kubernetes.io/arch\", operator = \"In\", values = [\"amd64\", \"arm64\"] },\n\
                 ]\n",
            );
        }
        if i % 5 == 0 {
            text.push_str(
                "[[tolerations]]\nkey = \"node-role.kubernetes.io/control-plane\"\n\
                 operator = \"Exists\"\neffect = \"NoSchedule\"\n",
            );
        }
        let ds = daemonset("plan.toml", &text, Format::Toml);
        let unit = unit_spec(&ds, &opts);
        let observed = |name: &str, ds: &str, revision: &str, state: (&str, &str)| ObservedUnit {
            name: name.to_string(),
            description: unit::description(ds, revision),
            active_state: state.0.into(),
            sub_state: state.1.into(),
            markers: Some(Markers {
                daemonset: ds.to_string(),
                revision: revision.to_string(),
                labels: [("app".to_string(), ds.to_string())].into(),
            }),
        };
        match i % 10 {
            0 => {
                let gone = format!("gone-{i:04}");
                units.push(observed(
                    &unit::unit_name(&gone),
                    &gone,
                    "0123456789abcdef",
                    ("active", "running"),
                ));
            }
            1 => units.push(observed(
                &unit.name,
                &name,
                "0123456789abcdef",
                ("active", "running"),
            )),
            2 => units.push(observed(
                &unit.name,
                &name,
                &unit.revision,
                ("failed", "failed"),
            )),
            _ => units.push(observed(
                &unit.name,
                &name,
                &unit.revision,
                ("active", "running"),
            )),
        }
        desired.push(Desired { ds, unit });
    }
    (desired, units)
}

// ---------------------------------------------------------------------------------------------
// Baselines written here

/// nodeSelector and NoSchedule/NoExecute taints against the template's tolerations, with no
/// affinity, no automatic tolerations, no reasons: the least a placement check can do.
fn naive_placement(ds: &DaemonSet, node: &Node) -> bool {
    let t = &ds.template;
    t.node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && node
            .taints
            .iter()
            .filter(|taint| taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            .all(|taint| {
                t.tolerations.iter().any(|tol| {
                    (tol.effect.is_empty() || tol.effect == taint.effect)
                        && (tol.key.is_empty() || tol.key == taint.key)
                        && (tol.operator == "Exists" || tol.value == taint.value)
                })
            })
}

/// A label selector matched by hand: no key/value validation, no requirement objects.
fn naive_selector(sel: &LabelSelector, labels: &Labels) -> bool {
    sel.match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel
            .match_expressions
            .iter()
            .all(|r| match r.operator.as_str() {
                "In" => labels.get(&r.key).is_some_and(|v| r.values.contains(v)),
                "NotIn" => labels.get(&r.key).is_none_or(|v| !r.values.contains(v)),
                "Exists" => labels.contains_key(&r.key),
                _ => !labels.contains_key(&r.key),
            })
}

/// A selector with four matchLabels and sixteen expressions (In with eight values, NotIn,
/// Exists, DoesNotExist), all holding on [`big_node`]'s labels.
fn worst_selector() -> LabelSelector {
    let match_labels = (0..4)
        .map(|i| (label_key(i), format!("value-{i}")))
        .collect();
    let match_expressions = (0..16)
        .map(|e| {
            let i = 4 + e;
            let (operator, values) = match e % 4 {
                0 => {
                    let mut v: Vec<String> = (0..7).map(|n| format!("nope-{n}")).collect();
                    v.push(format!("value-{i}"));
                    ("In", v)
                }
                1 => ("NotIn", vec!["nope-1".into(), "nope-2".into()]),
                2 => ("Exists", vec![]),
                _ => ("DoesNotExist", vec![]),
            };
            let key = if operator == "DoesNotExist" {
                format!("bench.example.com/absent-{e}")
            } else {
                label_key(i)
            };
            LabelSelectorRequirement {
                key,
                operator: operator.into(),
                values,
            }
        })
        .collect();
    LabelSelector {
        match_labels,
        match_expressions,
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmarks

fn bench_placement(c: &mut Criterion) {
    let typical_ds = daemonset("log-collector.toml", LOG_COLLECTOR_TOML, Format::Toml);
    let typical = typical_node();
    let worst_ds = daemonset("worst.toml", &worst_toml(), Format::Toml);
    let big = big_node(false);
    let big_other = big_node(true);

    // The inputs must exercise the paths they are named after.
    let v = evaluate(&typical_ds, &typical);
    assert!(v.should_run, "typical: {:?}", v.reasons);
    assert!(naive_placement(&typical_ds, &typical));
    let v = evaluate(&worst_ds, &big);
    assert!(v.should_run, "worst match: {:?}", v.reasons);
    let v = evaluate(&worst_ds, &big_other);
    assert!(!v.should_continue_running);
    assert!(
        v.reasons.len() > WORST_NODE_SELECTOR + WORST_TAINTS / 2,
        "worst reject explains every failing predicate: {}",
        v.reasons.len()
    );

    let mut g = c.benchmark_group("evaluate");
    g.bench_function("baseline_naive", |b| {
        b.iter(|| naive_placement(black_box(&typical_ds), black_box(&typical)))
    });
    g.bench_function("typical", |b| {
        b.iter(|| evaluate(black_box(&typical_ds), black_box(&typical)))
    });
    g.bench_function("worst_match", |b| {
        b.iter(|| evaluate(black_box(&worst_ds), black_box(&big)))
    });
    g.bench_function("worst_reject", |b| {
        b.iter(|| evaluate(black_box(&worst_ds), black_box(&big_other)))
    });
    g.finish();
}

fn bench_selector(c: &mut Criterion) {
    let ds = daemonset("log-collector.toml", LOG_COLLECTOR_TOML, Format::Toml);
    let small = ds.selector.clone().expect("a selector");
    let small_labels = ds.template.labels.clone();
    let worst = worst_selector();
    let labels = big_node(false).labels;
    assert_eq!(
        label_selector_matches(Some(&small), &small_labels),
        Ok(true)
    );
    assert_eq!(label_selector_matches(Some(&worst), &labels), Ok(true));
    assert!(naive_selector(&worst, &labels));

    let mut g = c.benchmark_group("selector");
    g.bench_function("baseline_naive_1", |b| {
        b.iter(|| naive_selector(black_box(&small), black_box(&small_labels)))
    });
    g.bench_function("match_labels_1", |b| {
        b.iter(|| label_selector_matches(Some(black_box(&small)), black_box(&small_labels)))
    });
    g.bench_function("baseline_naive_20", |b| {
        b.iter(|| naive_selector(black_box(&worst), black_box(&labels)))
    });
    g.bench_function("expressions_20", |b| {
        b.iter(|| label_selector_matches(Some(black_box(&worst)), black_box(&labels)))
    });
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let json = yaml_to_json(FLUENTD_YAML);
    let worst = worst_toml();
    // Every input decodes and validates cleanly, and the JSON form is the same daemonset.
    let from_yaml = daemonset("fluentd.yaml", FLUENTD_YAML, Format::Yaml);
    assert_eq!(daemonset("fluentd.json", &json, Format::Json), from_yaml);
    daemonset("log-collector.toml", LOG_COLLECTOR_TOML, Format::Toml);
    daemonset("worst.toml", &worst, Format::Toml);

    let mut g = c.benchmark_group("parse");
    g.bench_function("baseline_toml_value", |b| {
        b.iter(|| toml::from_str::<toml::Value>(black_box(LOG_COLLECTOR_TOML)).unwrap())
    });
    g.bench_function("doc_toml", |b| {
        b.iter(|| doc::parse_toml(black_box(LOG_COLLECTOR_TOML)).unwrap())
    });
    g.bench_function("native_toml", |b| {
        b.iter(|| {
            parse_daemonsets(
                "log-collector.toml",
                black_box(LOG_COLLECTOR_TOML),
                Format::Toml,
            )
        })
    });
    g.bench_function("baseline_yaml_rust2", |b| {
        b.iter(|| yaml_rust2::YamlLoader::load_from_str(black_box(FLUENTD_YAML)).unwrap())
    });
    g.bench_function("doc_yaml", |b| {
        b.iter(|| doc::parse_yaml(black_box(FLUENTD_YAML)).unwrap())
    });
    g.bench_function("k8s_yaml", |b| {
        b.iter(|| parse_daemonsets("fluentd.yaml", black_box(FLUENTD_YAML), Format::Yaml))
    });
    g.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(&json)).unwrap())
    });
    g.bench_function("k8s_json", |b| {
        b.iter(|| parse_daemonsets("fluentd.json", black_box(&json), Format::Json))
    });
    g.bench_function("baseline_toml_value_worst", |b| {
        b.iter(|| toml::from_str::<toml::Value>(black_box(&worst)).unwrap())
    });
    g.bench_function("doc_toml_worst", |b| {
        b.iter(|| doc::parse_toml(black_box(&worst)).unwrap())
    });
    g.bench_function("native_toml_worst", |b| {
        b.iter(|| parse_daemonsets("worst.toml", black_box(&worst), Format::Toml))
    });
    g.finish();
}

fn bench_node(c: &mut Criterion) {
    node_from("web-1.toml", NODE_WEB_TOML, Format::Toml, None);
    node_from("control-plane.yaml", NODE_CP_YAML, Format::Yaml, None);

    let mut g = c.benchmark_group("node");
    g.bench_function("baseline_toml_value", |b| {
        b.iter(|| toml::from_str::<toml::Value>(black_box(NODE_WEB_TOML)).unwrap())
    });
    g.bench_function("native_toml", |b| {
        b.iter(|| parse_node("web-1.toml", black_box(NODE_WEB_TOML), Format::Toml))
    });
    g.bench_function("baseline_yaml_rust2", |b| {
        b.iter(|| yaml_rust2::YamlLoader::load_from_str(black_box(NODE_CP_YAML)).unwrap())
    });
    g.bench_function("k8s_yaml", |b| {
        b.iter(|| parse_node("control-plane.yaml", black_box(NODE_CP_YAML), Format::Yaml))
    });
    g.finish();
}

fn bench_plan(c: &mut Criterion) {
    let node = typical_node();
    let held = BTreeSet::new();
    let orphaning = BTreeSet::new();
    let empty = BTreeMap::new();
    let mut g = c.benchmark_group("plan");
    for n in [50, 500] {
        let (desired, units) = plan_world(n);
        let input = Input {
            node: &node,
            desired: &desired,
            held: &held,
            orphaning: &orphaning,
            units: &units,
            now: Duration::from_secs(1000),
            no_execute_since: &empty,
            failed_since: &empty,
            backoff_until: &empty,
            gates: &BTreeMap::new(),
            ready_since: &empty,
        };
        let p = plan(&input);
        assert_eq!(p.statuses.len(), n);
        assert!(
            p.actions.len() >= n / 10,
            "the world asks for work: {} actions",
            p.actions.len()
        );
        g.bench_function(format!("baseline_evaluate_{n}"), |b| {
            b.iter(|| {
                for d in black_box(&desired) {
                    black_box(evaluate(&d.ds, &node));
                }
            })
        });
        g.bench_function(format!("specs{n}_units{n}"), |b| {
            b.iter(|| plan(black_box(&input)))
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Summary

/// What a scenario is held to.
#[derive(Clone, Copy)]
enum Target {
    /// The median at most this many microseconds.
    MedianUs(f64),
    /// The ratio to the baseline at most this.
    Ratio(f64),
}

/// One row of the summary: a measurement, the baseline it is compared with, the target.
struct Scenario {
    name: &'static str,
    id: &'static str,
    baseline: &'static str,
    target: Target,
}

/// The targets come from the agent's budget: a pass (every spec file parsed, then one plan)
/// should stay well inside the 250 ms file-event debounce even with hundreds of daemonsets
/// on a host, so a spec parses in under 1 ms, placement of one daemonset takes microseconds
/// even in the worst case, and the plan grows linearly with the number of daemonsets.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "evaluate, typical (log-collector on web-1)",
        id: "evaluate/typical",
        baseline: "evaluate/baseline_naive",
        target: Target::MedianUs(5.0),
    },
    Scenario {
        name: "evaluate, worst case that matches",
        id: "evaluate/worst_match",
        baseline: "evaluate/typical",
        target: Target::MedianUs(100.0),
    },
    Scenario {
        name: "evaluate, worst case that fails every predicate",
        id: "evaluate/worst_reject",
        baseline: "evaluate/typical",
        target: Target::MedianUs(100.0),
    },
    Scenario {
        name: "selector, 1 matchLabel",
        id: "selector/match_labels_1",
        baseline: "selector/baseline_naive_1",
        target: Target::MedianUs(2.0),
    },
    Scenario {
        name: "selector, 4 matchLabels + 16 expressions",
        id: "selector/expressions_20",
        baseline: "selector/baseline_naive_20",
        target: Target::MedianUs(20.0),
    },
    Scenario {
        name: "parse + validate log-collector.toml",
        id: "parse/native_toml",
        baseline: "parse/baseline_toml_value",
        target: Target::MedianUs(1000.0),
    },
    Scenario {
        name: "parse + validate fluentd-elasticsearch.yaml",
        id: "parse/k8s_yaml",
        baseline: "parse/baseline_yaml_rust2",
        target: Target::MedianUs(1000.0),
    },
    Scenario {
        name: "parse + validate fluentd-elasticsearch as JSON",
        id: "parse/k8s_json",
        baseline: "parse/baseline_serde_json_value",
        target: Target::MedianUs(1000.0),
    },
    Scenario {
        name: "positioned tree (spec::doc) of log-collector.toml",
        id: "parse/doc_toml",
        baseline: "parse/baseline_toml_value",
        target: Target::MedianUs(1000.0),
    },
    Scenario {
        name: "positioned tree (spec::doc) of fluentd-elasticsearch.yaml",
        id: "parse/doc_yaml",
        baseline: "parse/baseline_yaml_rust2",
        target: Target::MedianUs(1000.0),
    },
    Scenario {
        name: "positioned tree (spec::doc) of the worst-case spec",
        id: "parse/doc_toml_worst",
        baseline: "parse/baseline_toml_value_worst",
        target: Target::MedianUs(5000.0),
    },
    Scenario {
        name: "parse + validate the worst-case spec (TOML)",
        id: "parse/native_toml_worst",
        baseline: "parse/baseline_toml_value_worst",
        target: Target::MedianUs(5000.0),
    },
    Scenario {
        name: "node file web-1.toml",
        id: "node/native_toml",
        baseline: "node/baseline_toml_value",
        target: Target::MedianUs(1000.0),
    },
    Scenario {
        name: "node file control-plane.yaml (v1 Node)",
        id: "node/k8s_yaml",
        baseline: "node/baseline_yaml_rust2",
        target: Target::MedianUs(1000.0),
    },
    Scenario {
        name: "plan, 50 specs × 50 units",
        id: "plan/specs50_units50",
        baseline: "plan/baseline_evaluate_50",
        target: Target::MedianUs(5_000.0),
    },
    Scenario {
        name: "plan, 500 specs × 500 units",
        id: "plan/specs500_units500",
        baseline: "plan/baseline_evaluate_500",
        target: Target::MedianUs(50_000.0),
    },
    Scenario {
        name: "plan scaling, 500 over 50 (linear = 10)",
        id: "plan/specs500_units500",
        baseline: "plan/specs50_units50",
        target: Target::Ratio(12.0),
    },
];

/// Criterion's output directory, found as criterion finds it: `$CRITERION_HOME`,
/// `$CARGO_TARGET_DIR/criterion`, the target directory this binary was built in (the
/// ancestor holding cargo's `CACHEDIR.TAG`), `target/criterion`.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    target_dir().join("criterion")
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// A measurement of this run: median and the bounds of its confidence interval, in ns.
struct Estimate {
    median: f64,
    lower: f64,
    upper: f64,
}

/// The estimate criterion wrote for `id` in this run, if it wrote one since `since`.
fn estimate(dir: &Path, id: &str, since: SystemTime) -> Option<Estimate> {
    let path = dir.join(id).join("new/estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    let m = &v["median"];
    Some(Estimate {
        median: m["point_estimate"].as_f64()?,
        lower: m["confidence_interval"]["lower_bound"].as_f64()?,
        upper: m["confidence_interval"]["upper_bound"].as_f64()?,
    })
}

fn human(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// Print the summary table and write `target/bench/micro.json`. Returns false when this run
/// measured nothing (test mode, `--list`, a filter that matched nothing).
fn summarize(since: SystemTime, quick: bool) -> bool {
    let dir = criterion_dir();
    let mut rows = Vec::new();
    let mut table = String::from(
        "| scenario | median | baseline | baseline median | ratio | target | met |\n\
         |---|---:|---|---:|---:|---|---|\n",
    );
    for s in SCENARIOS {
        let Some(e) = estimate(&dir, s.id, since) else {
            continue;
        };
        let base = estimate(&dir, s.baseline, since);
        let ratio = base.as_ref().map(|b| e.median / b.median);
        let (target_text, metric, max, value) = match s.target {
            Target::MedianUs(us) => (
                format!("median ≤ {}", human(us * 1e3)),
                "median_ms",
                us / 1e3,
                Some(e.median / 1e6),
            ),
            Target::Ratio(r) => (format!("ratio ≤ {r}"), "ratio", r, ratio),
        };
        let met = value.map(|v| v <= max);
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            human(e.median),
            s.baseline,
            base.as_ref().map_or("not run".into(), |b| human(b.median)),
            ratio.map_or("–".into(), |r| format!("{r:.2}×")),
            target_text,
            match (met, value) {
                (Some(true), Some(v)) => format!("met ({:.0}% of target)", 100.0 * v / max),
                (Some(false), Some(v)) => format!("**missed** ({:.2}× target)", v / max),
                _ => "–".into(),
            }
        );
        rows.push(serde_json::json!({
            "name": s.name,
            "id": s.id,
            "median_ms": e.median / 1e6,
            "median_ci_ms": [e.lower / 1e6, e.upper / 1e6],
            "p99_ms": null,
            "baseline": s.baseline,
            "baseline_median_ms": base.as_ref().map(|b| b.median / 1e6),
            "ratio": ratio,
            "target": { "metric": metric, "max": max, "text": target_text },
            "value": value,
            "met": met,
        }));
    }
    if rows.is_empty() {
        return false;
    }
    println!("\nSummary (medians of this run; ratio = median / baseline median):\n\n{table}");
    let doc = serde_json::json!({
        "bench": "micro",
        "quick": quick,
        "unit_note": "times per call, criterion's medians (criterion measures no p99); ratio = \
                      median / the baseline's median, the baselines as benches/micro.rs \
                      describes them; median_ci_ms: the median's 95% confidence interval",
        "criterion_dir": dir.display().to_string(),
        "scenarios": rows,
    });
    let out = target_dir().join("bench");
    let written = std::fs::create_dir_all(&out).and_then(|()| {
        std::fs::write(
            out.join("micro.json"),
            serde_json::to_string_pretty(&doc).expect("JSON") + "\n",
        )
    });
    match written {
        Ok(()) => println!("wrote {}", out.join("micro.json").display()),
        Err(e) => eprintln!("cannot write {}: {e}", out.join("micro.json").display()),
    }
    true
}

fn main() {
    // Estimates older than this are an earlier run's: the summary leaves them out.
    let since = SystemTime::now() - Duration::from_secs(1);
    let quick = std::env::args().any(|a| a == "--quick");
    let mut c = Criterion::default().configure_from_args();
    bench_placement(&mut c);
    bench_selector(&mut c);
    bench_parse(&mut c);
    bench_node(&mut c);
    bench_plan(&mut c);
    c.final_summary();
    summarize(since, quick);
}
