//! Table-driven conformance tests for `hostset::placement` against Kubernetes' own behaviour.
//!
//! Every case carries a `source`: the Kubernetes test (file, function and case name) it was taken
//! from, or the code path it was derived from when Kubernetes has no test for it. Paths are inside
//! kubernetes/kubernetes; `staging/src/k8s.io/X/...` is published as the `k8s.io/X` module. Cases
//! were translated, not copied: Go string selectors become metav1 selectors (`x!=y` is NotIn with
//! one value, `x` is Exists, `!x` is DoesNotExist), and node names with `_` use `-`.

use hostset::placement::{self, affinity, selector, taints};
use hostset::spec::{
    DaemonSet, LabelSelector, LabelSelectorRequirement, Labels, Node, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, PodTemplate, Port, Taint, Toleration,
    UpdateStrategy,
};

// ---------------------------------------------------------------------------------------------
// Source paths.

macro_rules! labels_test {
    ($case:literal) => {
        concat!(
            "staging/src/k8s.io/apimachinery/pkg/labels/selector_test.go ",
            $case
        )
    };
}
macro_rules! meta_test {
    ($case:literal) => {
        concat!(
            "staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/helpers_test.go ",
            $case
        )
    };
}
macro_rules! nodeaffinity_test {
    ($case:literal) => {
        concat!(
            "staging/src/k8s.io/component-helpers/scheduling/corev1/nodeaffinity/nodeaffinity_test.go ",
            $case
        )
    };
}
macro_rules! helpers_test {
    ($case:literal) => {
        concat!(
            "staging/src/k8s.io/component-helpers/scheduling/corev1/helpers_test.go ",
            $case
        )
    };
}
macro_rules! toleration_test {
    ($case:literal) => {
        concat!("staging/src/k8s.io/api/core/v1/toleration_test.go ", $case)
    };
}
macro_rules! daemon_test {
    ($case:literal) => {
        concat!("pkg/controller/daemon/daemon_controller_test.go ", $case)
    };
}

const LABEL_SELECTOR_AS_SELECTOR: &str =
    "staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/helpers.go LabelSelectorAsSelector";
const NEW_REQUIREMENT: &str =
    "staging/src/k8s.io/apimachinery/pkg/labels/selector.go NewRequirement";
const REQUIREMENT_MATCHES: &str =
    "staging/src/k8s.io/apimachinery/pkg/labels/selector.go Requirement.Matches";
const SELECTOR_FROM_SET: &str = "staging/src/k8s.io/component-helpers/scheduling/corev1/nodeaffinity/nodeaffinity.go NewRequiredNodeAffinity (labels.SelectorFromSet)";
const LAZY_MATCH: &str = "staging/src/k8s.io/component-helpers/scheduling/corev1/nodeaffinity/nodeaffinity.go LazyErrorNodeSelector.Match";
const TERM_MATCH: &str = "staging/src/k8s.io/component-helpers/scheduling/corev1/nodeaffinity/nodeaffinity.go nodeSelectorTerm.match";
const AS_SELECTOR: &str = "staging/src/k8s.io/component-helpers/scheduling/corev1/nodeaffinity/nodeaffinity.go nodeSelectorRequirementsAsSelector";
const AS_FIELD_SELECTOR: &str = "staging/src/k8s.io/component-helpers/scheduling/corev1/nodeaffinity/nodeaffinity.go nodeSelectorRequirementsAsFieldSelector + apimachinery/pkg/fields Set.Get";
const TOLERATES_TAINT: &str = "staging/src/k8s.io/api/core/v1/toleration.go ToleratesTaint";
const FIND_UNTOLERATED: &str = "staging/src/k8s.io/component-helpers/scheduling/corev1/helpers.go FindMatchingUntoleratedTaint";
const DAEMON_TOLERATIONS: &str =
    "pkg/controller/daemon/util/daemonset_util.go AddOrUpdateDaemonPodTolerations";
const ADD_OR_UPDATE: &str = "pkg/apis/core/v1/helper/helpers.go AddOrUpdateTolerationInPodSpec";
const SHOULD_RUN: &str = "pkg/controller/daemon/daemon_controller.go NodeShouldRunDaemonPod";

// ---------------------------------------------------------------------------------------------
// Model constructors.

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn lreq(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: strs(values),
    }
}

fn sel(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
    LabelSelector {
        match_labels: l(match_labels),
        match_expressions: exprs,
    }
}

fn nreq(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: strs(values),
    }
}

fn term(
    exprs: Vec<NodeSelectorRequirement>,
    fields: Vec<NodeSelectorRequirement>,
) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: exprs,
        match_fields: fields,
    }
}

/// A term with matchExpressions only.
fn ex(exprs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    term(exprs, vec![])
}

/// A term with matchFields only.
fn fl(fields: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    term(vec![], fields)
}

fn aff(terms: Vec<NodeSelectorTerm>) -> Option<NodeSelector> {
    Some(NodeSelector { terms })
}

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        name: name.into(),
        labels: l(labels),
        ..Node::default()
    }
}

fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: value.into(),
        effect: effect.into(),
    }
}

fn tainted(name: &str, taints: Vec<Taint>) -> Node {
    Node {
        name: name.into(),
        taints,
        ..Node::default()
    }
}

fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
    Toleration {
        key: key.into(),
        operator: op.into(),
        value: value.into(),
        effect: effect.into(),
        toleration_seconds: None,
    }
}

fn tol_s(key: &str, op: &str, value: &str, effect: &str, secs: i64) -> Toleration {
    Toleration {
        toleration_seconds: Some(secs),
        ..tol(key, op, value, effect)
    }
}

/// A valid DaemonSet in the spirit of `newDaemonSet` in daemon_controller_test.go.
fn ds() -> DaemonSet {
    let labels = l(&[("name", "simple-daemon"), ("type", "production")]);
    DaemonSet {
        name: "foo".into(),
        labels: Labels::new(),
        annotations: Labels::new(),
        selector: Some(LabelSelector {
            match_labels: labels.clone(),
            match_expressions: vec![],
        }),
        template: PodTemplate {
            labels,
            restart_policy: "Always".into(),
            termination_grace_period_seconds: 30,
            ..PodTemplate::default()
        },
        update_strategy: UpdateStrategy::default(),
        min_ready_seconds: 0,
        revision_history_limit: 10,
    }
}

fn with(f: impl FnOnce(&mut PodTemplate)) -> DaemonSet {
    let mut d = ds();
    f(&mut d.template);
    d
}

/// Reports every failing case at once, each with its source.
fn report(failures: Vec<String>, total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// Labels of daemon_controller_test.go.
const SIMPLE_DAEMON_SET_LABEL: &[(&str, &str)] =
    &[("name", "simple-daemon"), ("type", "production")];
const SIMPLE_DAEMON_SET_LABEL2: &[(&str, &str)] = &[("name", "simple-daemon"), ("type", "test")];
const SIMPLE_NODE_LABEL: &[(&str, &str)] = &[("color", "blue"), ("speed", "fast")];
const SIMPLE_NODE_LABEL2: &[(&str, &str)] = &[("color", "red"), ("speed", "fast")];

// ---------------------------------------------------------------------------------------------
// Label selectors.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Match,
    NoMatch,
    Error,
}

struct SelectorCase {
    source: &'static str,
    selector: Option<LabelSelector>,
    labels: Labels,
    want: Want,
}

fn sc(
    source: &'static str,
    selector: Option<LabelSelector>,
    labels: &[(&str, &str)],
    want: Want,
) -> SelectorCase {
    SelectorCase {
        source,
        selector,
        labels: l(labels),
        want,
    }
}

fn selector_cases() -> Vec<SelectorCase> {
    use Want::*;
    let long = "a".repeat(254);
    let foo_bar = &[("foo", "bar"), ("baz", "blah")];
    vec![
        // TestLabelSelectorAsSelector: nil, empty, matchLabels, matchExpressions, both, Exists+values.
        sc(
            meta_test!("TestLabelSelectorAsSelector/nil"),
            None,
            &[("foo", "bar")],
            NoMatch,
        ),
        sc(
            meta_test!("TestLabelSelectorAsSelector/nil"),
            None,
            &[],
            NoMatch,
        ),
        sc(
            meta_test!("TestLabelSelectorAsSelector/empty"),
            Some(sel(&[], vec![])),
            &[("foo", "bar")],
            Match,
        ),
        sc(
            meta_test!("TestLabelSelectorAsSelector/empty"),
            Some(sel(&[], vec![])),
            &[],
            Match,
        ),
        sc(
            meta_test!("TestLabelSelectorAsSelector/matchLabels"),
            Some(sel(&[("foo", "bar")], vec![])),
            &[("foo", "bar")],
            Match,
        ),
        sc(
            meta_test!("TestLabelSelectorAsSelector/matchExpressions"),
            Some(sel(&[], vec![lreq("baz", "In", &["qux", "norf"])])),
            &[("baz", "norf")],
            Match,
        ),
        sc(
            meta_test!("TestLabelSelectorAsSelector/both"),
            Some(sel(
                &[("foo", "bar")],
                vec![lreq("baz", "In", &["qux", "norf"])],
            )),
            &[("foo", "bar"), ("baz", "qux")],
            Match,
        ),
        sc(
            meta_test!("TestLabelSelectorAsSelector/both"),
            Some(sel(
                &[("foo", "bar")],
                vec![lreq("baz", "In", &["qux", "norf"])],
            )),
            &[("foo", "bar"), ("baz", "other")],
            NoMatch,
        ),
        sc(
            meta_test!("TestLabelSelectorAsSelector/Exists with values"),
            Some(sel(&[], vec![lreq("baz", "Exists", &["qux", "norf"])])),
            &[("baz", "qux")],
            Error,
        ),
        // TestSelectorMatches, translated from string selectors.
        sc(
            labels_test!("TestSelectorMatches \"\""),
            Some(sel(&[], vec![])),
            &[("x", "y")],
            Match,
        ),
        sc(
            labels_test!("TestSelectorMatches x=y"),
            Some(sel(&[("x", "y")], vec![])),
            &[("x", "y")],
            Match,
        ),
        sc(
            labels_test!("TestSelectorMatches x=y,z=w"),
            Some(sel(&[("x", "y"), ("z", "w")], vec![])),
            &[("x", "y"), ("z", "w")],
            Match,
        ),
        sc(
            labels_test!("TestSelectorMatches x!=y,z!=w"),
            Some(sel(
                &[],
                vec![lreq("x", "NotIn", &["y"]), lreq("z", "NotIn", &["w"])],
            )),
            &[("x", "z"), ("z", "a")],
            Match,
        ),
        sc(
            labels_test!("TestSelectorMatches notin=in"),
            Some(sel(&[("notin", "in")], vec![])),
            &[("notin", "in")],
            Match,
        ),
        sc(
            labels_test!("TestSelectorMatches x"),
            Some(sel(&[], vec![lreq("x", "Exists", &[])])),
            &[("x", "z")],
            Match,
        ),
        sc(
            labels_test!("TestSelectorMatches !x"),
            Some(sel(&[], vec![lreq("x", "DoesNotExist", &[])])),
            &[("y", "z")],
            Match,
        ),
        sc(
            labels_test!("TestSelectorMatches x=z (no match)"),
            Some(sel(&[("x", "z")], vec![])),
            &[],
            NoMatch,
        ),
        sc(
            labels_test!("TestSelectorMatches x=y (no match)"),
            Some(sel(&[("x", "y")], vec![])),
            &[("x", "z")],
            NoMatch,
        ),
        sc(
            labels_test!("TestSelectorMatches x=y,z=w (no match)"),
            Some(sel(&[("x", "y"), ("z", "w")], vec![])),
            &[("x", "w"), ("z", "w")],
            NoMatch,
        ),
        sc(
            labels_test!("TestSelectorMatches x!=y,z!=w (no match)"),
            Some(sel(
                &[],
                vec![lreq("x", "NotIn", &["y"]), lreq("z", "NotIn", &["w"])],
            )),
            &[("x", "z"), ("z", "w")],
            NoMatch,
        ),
        sc(
            labels_test!("TestSelectorMatches x (no match)"),
            Some(sel(&[], vec![lreq("x", "Exists", &[])])),
            &[("y", "z")],
            NoMatch,
        ),
        sc(
            labels_test!("TestSelectorMatches !x (no match)"),
            Some(sel(&[], vec![lreq("x", "DoesNotExist", &[])])),
            &[("x", "z")],
            NoMatch,
        ),
        sc(
            labels_test!("TestSelectorMatches foo=bar"),
            Some(sel(&[("foo", "bar")], vec![])),
            foo_bar,
            Match,
        ),
        sc(
            labels_test!("TestSelectorMatches foo=bar,baz=blah"),
            Some(sel(&[("foo", "bar"), ("baz", "blah")], vec![])),
            foo_bar,
            Match,
        ),
        sc(
            labels_test!("TestSelectorMatches foo=blah"),
            Some(sel(&[("foo", "blah")], vec![])),
            foo_bar,
            NoMatch,
        ),
        sc(
            labels_test!("TestSelectorMatches foo=bar,foobar=bar,baz=blah"),
            Some(sel(
                &[("foo", "bar"), ("foobar", "bar"), ("baz", "blah")],
                vec![],
            )),
            foo_bar,
            NoMatch,
        ),
        // Gt/Lt exist in string selectors (TestSelectorMatches "x>1") but not in metav1.LabelSelector.
        sc(
            labels_test!("TestSelectorMatches x>1, as metav1 operator Gt"),
            Some(sel(&[], vec![lreq("x", "Gt", &["1"])])),
            &[("x", "2")],
            Error,
        ),
        sc(
            labels_test!("TestSelectorMatches x<1, as metav1 operator Lt"),
            Some(sel(&[], vec![lreq("x", "Lt", &["1"])])),
            &[("x", "0")],
            Error,
        ),
        // TestRequirementSelectorMatching.
        sc(
            labels_test!("TestRequirementSelectorMatching x In foo, y NotIn alpha"),
            Some(sel(
                &[],
                vec![lreq("x", "In", &["foo"]), lreq("y", "NotIn", &["alpha"])],
            )),
            &[("x", "foo"), ("y", "baz")],
            Match,
        ),
        sc(
            labels_test!("TestRequirementSelectorMatching x In foo, y In alpha"),
            Some(sel(
                &[],
                vec![lreq("x", "In", &["foo"]), lreq("y", "In", &["alpha"])],
            )),
            &[("x", "foo"), ("y", "baz")],
            NoMatch,
        ),
        sc(
            labels_test!("TestRequirementSelectorMatching x NotIn \"\", y Exists"),
            Some(sel(
                &[],
                vec![lreq("x", "NotIn", &[""]), lreq("y", "Exists", &[])],
            )),
            &[("y", "")],
            Match,
        ),
        sc(
            labels_test!("TestRequirementSelectorMatching x DoesNotExist, y Exists"),
            Some(sel(
                &[],
                vec![lreq("x", "DoesNotExist", &[]), lreq("y", "Exists", &[])],
            )),
            &[("y", "")],
            Match,
        ),
        sc(
            labels_test!("TestRequirementSelectorMatching x NotIn \"\", y DoesNotExist"),
            Some(sel(
                &[],
                vec![lreq("x", "NotIn", &[""]), lreq("y", "DoesNotExist", &[])],
            )),
            &[("y", "")],
            NoMatch,
        ),
        sc(
            labels_test!("TestRequirementSelectorMatching x In \"\""),
            Some(sel(&[], vec![lreq("x", "In", &[""])])),
            &[("y", "baz")],
            NoMatch,
        ),
        // TestRequirementConstructor, as selector parse errors.
        sc(
            labels_test!("TestRequirementConstructor x1 In without values"),
            Some(sel(&[], vec![lreq("x1", "In", &[])])),
            &[("x1", "a")],
            Error,
        ),
        sc(
            labels_test!("TestRequirementConstructor x2 NotIn without values"),
            Some(sel(&[], vec![lreq("x2", "NotIn", &[])])),
            &[],
            Error,
        ),
        sc(
            labels_test!("TestRequirementConstructor x3 In foo"),
            Some(sel(&[], vec![lreq("x3", "In", &["foo"])])),
            &[("x3", "foo")],
            Match,
        ),
        sc(
            labels_test!("TestRequirementConstructor x4 NotIn foo"),
            Some(sel(&[], vec![lreq("x4", "NotIn", &["foo"])])),
            &[("x4", "foo")],
            NoMatch,
        ),
        sc(
            labels_test!("TestRequirementConstructor x6 Exists"),
            Some(sel(&[], vec![lreq("x6", "Exists", &[])])),
            &[("x6", "")],
            Match,
        ),
        sc(
            labels_test!("TestRequirementConstructor x7 DoesNotExist"),
            Some(sel(&[], vec![lreq("x7", "DoesNotExist", &[])])),
            &[],
            Match,
        ),
        sc(
            labels_test!("TestRequirementConstructor x8 Exists with values"),
            Some(sel(&[], vec![lreq("x8", "Exists", &["foo"])])),
            &[("x8", "foo")],
            Error,
        ),
        sc(
            labels_test!("TestRequirementConstructor key longer than 253"),
            Some(sel(&[], vec![lreq(&long, "Exists", &[])])),
            &[],
            Error,
        ),
        sc(
            labels_test!("TestRequirementConstructor x16 value longer than 63"),
            Some(sel(&[("x16", &long)], vec![])),
            &[],
            Error,
        ),
        sc(
            labels_test!("TestRequirementConstructor x17 value \"a b\""),
            Some(sel(&[("x17", "a b")], vec![])),
            &[("x17", "a b")],
            Error,
        ),
        sc(
            labels_test!("TestRequirementConstructor x18 unsupportedOp"),
            Some(sel(&[], vec![lreq("x18", "unsupportedOp", &[])])),
            &[],
            Error,
        ),
        // Derived from the code paths.
        sc(
            LABEL_SELECTOR_AS_SELECTOR,
            Some(sel(&[], vec![lreq("x", "in", &["a"])])),
            &[("x", "a")],
            Error,
        ),
        sc(
            LABEL_SELECTOR_AS_SELECTOR,
            Some(sel(&[], vec![lreq("x", "Equals", &["a"])])),
            &[("x", "a")],
            Error,
        ),
        sc(
            LABEL_SELECTOR_AS_SELECTOR,
            Some(sel(&[], vec![lreq("x", "", &["a"])])),
            &[("x", "a")],
            Error,
        ),
        sc(
            LABEL_SELECTOR_AS_SELECTOR,
            Some(sel(&[("a", "b")], vec![lreq("x", "Gt", &["1"])])),
            &[],
            Error,
        ),
        sc(
            NEW_REQUIREMENT,
            Some(sel(&[("bad key", "v")], vec![])),
            &[("bad key", "v")],
            Error,
        ),
        sc(
            NEW_REQUIREMENT,
            Some(sel(&[("Example.com/app", "v")], vec![])),
            &[],
            Error,
        ),
        sc(
            NEW_REQUIREMENT,
            Some(sel(&[("a/b/c", "v")], vec![])),
            &[],
            Error,
        ),
        sc(
            NEW_REQUIREMENT,
            Some(sel(&[], vec![lreq("app", "In", &["ok", "-bad"])])),
            &[("app", "ok")],
            Error,
        ),
        sc(
            NEW_REQUIREMENT,
            Some(sel(&[], vec![lreq("app", "DoesNotExist", &["x"])])),
            &[],
            Error,
        ),
        sc(
            NEW_REQUIREMENT,
            Some(sel(&[("example.com/App_1", "v.2")], vec![])),
            &[("example.com/App_1", "v.2")],
            Match,
        ),
        sc(
            NEW_REQUIREMENT,
            Some(sel(&[("app", "")], vec![])),
            &[("app", "")],
            Match,
        ),
        sc(
            REQUIREMENT_MATCHES,
            Some(sel(&[("app", "")], vec![])),
            &[],
            NoMatch,
        ),
        sc(
            REQUIREMENT_MATCHES,
            Some(sel(&[("app", "web")], vec![])),
            &[("app", "Web")],
            NoMatch,
        ),
        sc(
            REQUIREMENT_MATCHES,
            Some(sel(&[("app", "web")], vec![])),
            &[("App", "web")],
            NoMatch,
        ),
        sc(
            REQUIREMENT_MATCHES,
            Some(sel(&[], vec![lreq("tier", "NotIn", &["db"])])),
            &[],
            Match,
        ),
        sc(
            REQUIREMENT_MATCHES,
            Some(sel(&[], vec![lreq("tier", "In", &["db", "cache"])])),
            &[("tier", "cache"), ("extra", "x")],
            Match,
        ),
        sc(
            REQUIREMENT_MATCHES,
            Some(sel(
                &[],
                vec![lreq("tier", "Exists", &[]), lreq("tier", "NotIn", &["db"])],
            )),
            &[("tier", "web")],
            Match,
        ),
    ]
}

#[test]
fn label_selectors() {
    let cases = selector_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let got = match selector::label_selector_matches(c.selector.as_ref(), &c.labels) {
            Ok(true) => Want::Match,
            Ok(false) => Want::NoMatch,
            Err(_) => Want::Error,
        };
        if got != c.want {
            failures.push(format!(
                "[{}] selector {:?} labels {:?}: want {:?}, got {:?}",
                c.source, c.selector, c.labels, c.want, got
            ));
        }
    }
    report(failures, cases.len());
}

/// An error names the offending requirement.
#[test]
fn label_selector_errors_are_specific() {
    let err = selector::label_selector_matches(
        Some(&sel(
            &[],
            vec![lreq("a", "In", &["x"]), lreq("b", "Gt", &["1"])],
        )),
        &Labels::new(),
    )
    .unwrap_err();
    assert!(err.contains("matchExpressions[1]"), "{err}");
    assert!(
        err.contains("\"Gt\" is not a valid label selector operator"),
        "{err}"
    );

    let err = selector::label_selector_matches(
        Some(&sel(&[], vec![lreq("app", "In", &[])])),
        &Labels::new(),
    )
    .unwrap_err();
    assert!(err.contains("values set can't be empty"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// nodeSelector.

struct NodeSelectorCase {
    source: &'static str,
    node_selector: Labels,
    node: Node,
    want: bool,
}

fn nsc(
    source: &'static str,
    node_selector: &[(&str, &str)],
    node_labels: &[(&str, &str)],
    want: bool,
) -> NodeSelectorCase {
    NodeSelectorCase {
        source,
        node_selector: l(node_selector),
        node: node("node-1", node_labels),
        want,
    }
}

fn node_selector_cases() -> Vec<NodeSelectorCase> {
    vec![
        nsc(
            nodeaffinity_test!("TestPodMatchesNodeSelectorAndAffinityTerms/no selector"),
            &[],
            &[],
            true,
        ),
        nsc(
            nodeaffinity_test!("TestPodMatchesNodeSelectorAndAffinityTerms/missing labels"),
            &[("foo", "bar")],
            &[],
            false,
        ),
        nsc(
            nodeaffinity_test!("TestPodMatchesNodeSelectorAndAffinityTerms/same labels"),
            &[("foo", "bar")],
            &[("foo", "bar")],
            true,
        ),
        nsc(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/node labels are superset"
            ),
            &[("foo", "bar")],
            &[("foo", "bar"), ("baz", "blah")],
            true,
        ),
        nsc(
            nodeaffinity_test!("TestPodMatchesNodeSelectorAndAffinityTerms/node labels are subset"),
            &[("foo", "bar"), ("baz", "blah")],
            &[("foo", "bar")],
            false,
        ),
        nsc(
            labels_test!("TestSetMatches"),
            &[("foo", "bar"), ("baz", "blah")],
            &[("foo", "bar"), ("baz", "blah")],
            true,
        ),
        nsc(
            daemon_test!("TestSelectorDaemonLaunchesPods (labelled node)"),
            SIMPLE_NODE_LABEL,
            SIMPLE_NODE_LABEL,
            true,
        ),
        nsc(
            daemon_test!("TestSelectorDaemonLaunchesPods (unlabelled node)"),
            SIMPLE_NODE_LABEL,
            &[],
            false,
        ),
        nsc(
            daemon_test!("TestBadSelectorDaemonDoesNothing"),
            SIMPLE_NODE_LABEL2,
            SIMPLE_NODE_LABEL,
            false,
        ),
        nsc(
            SELECTOR_FROM_SET,
            &[("disktype", "")],
            &[("disktype", "")],
            true,
        ),
        nsc(SELECTOR_FROM_SET, &[("disktype", "")], &[], false),
        nsc(
            SELECTOR_FROM_SET,
            &[("disktype", "")],
            &[("disktype", "ssd")],
            false,
        ),
        nsc(
            SELECTOR_FROM_SET,
            &[("disktype", "ssd")],
            &[("disktype", "")],
            false,
        ),
        nsc(
            SELECTOR_FROM_SET,
            &[("disktype", "ssd")],
            &[("disktype", "SSD")],
            false,
        ),
        nsc(
            SELECTOR_FROM_SET,
            &[("disktype", "ssd")],
            &[("Disktype", "ssd")],
            false,
        ),
        // SelectorFromSet does no validation: a syntactically invalid pair still matches.
        nsc(
            SELECTOR_FROM_SET,
            &[("bad key", "a b")],
            &[("bad key", "a b")],
            true,
        ),
    ]
}

#[test]
fn node_selectors() {
    let cases = node_selector_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let got = affinity::node_selector_matches(&c.node_selector, &c.node);
        if got != c.want {
            failures.push(format!(
                "[{}] nodeSelector {:?} node labels {:?}: want {}, got {got}",
                c.source, c.node_selector, c.node.labels, c.want
            ));
        }
    }
    report(failures, cases.len());
}

// ---------------------------------------------------------------------------------------------
// Required node affinity.

struct AffinityCase {
    source: &'static str,
    affinity: Option<NodeSelector>,
    node: Node,
    want: bool,
}

fn ac(
    source: &'static str,
    affinity: Option<NodeSelector>,
    node: Node,
    want: bool,
) -> AffinityCase {
    AffinityCase {
        source,
        affinity,
        node,
        want,
    }
}

fn affinity_cases() -> Vec<AffinityCase> {
    let n = |labels: &[(&str, &str)]| node("node-1", labels);
    let name_in = |v: &str| nreq("metadata.name", "In", &[v]);
    vec![
        // TestPodMatchesNodeSelectorAndAffinityTerms.
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/Pod with no Affinity will schedule onto a node"
            ),
            None,
            n(&[("foo", "bar")]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/matchExpressions using In operator that matches"
            ),
            aff(vec![ex(vec![nreq("foo", "In", &["bar", "value2"])])]),
            n(&[("foo", "bar")]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/matchExpressions using Gt operator that matches"
            ),
            aff(vec![ex(vec![nreq("kernel-version", "Gt", &["0204"])])]),
            n(&[("kernel-version", "0206")]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/matchExpressions using NotIn operator that matches"
            ),
            aff(vec![ex(vec![nreq("mem-type", "NotIn", &["DDR", "DDR2"])])]),
            n(&[("mem-type", "DDR3")]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/matchExpressions using Exists operator that matches"
            ),
            aff(vec![ex(vec![nreq("GPU", "Exists", &[])])]),
            n(&[("GPU", "NVIDIA-GRID-K1")]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/affinity that don't match node's labels"
            ),
            aff(vec![ex(vec![nreq("foo", "In", &["value1", "value2"])])]),
            n(&[("foo", "bar")]),
            false,
        ),
        ac(
            nodeaffinity_test!("TestPodMatchesNodeSelectorAndAffinityTerms/nil []NodeSelectorTerm"),
            aff(vec![]),
            n(&[("foo", "bar")]),
            false,
        ),
        ac(
            nodeaffinity_test!("TestPodMatchesNodeSelectorAndAffinityTerms/empty MatchExpressions"),
            aff(vec![ex(vec![])]),
            n(&[("foo", "bar")]),
            false,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/multiple matchExpressions ANDed that matches"
            ),
            aff(vec![ex(vec![
                nreq("GPU", "Exists", &[]),
                nreq("GPU", "NotIn", &["AMD", "INTER"]),
            ])]),
            n(&[("GPU", "NVIDIA-GRID-K1")]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/multiple matchExpressions ANDed that doesn't match"
            ),
            aff(vec![ex(vec![
                nreq("GPU", "Exists", &[]),
                nreq("GPU", "In", &["AMD", "INTER"]),
            ])]),
            n(&[("GPU", "NVIDIA-GRID-K1")]),
            false,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/multiple NodeSelectorTerms ORed"
            ),
            aff(vec![
                ex(vec![nreq("foo", "In", &["bar", "value2"])]),
                ex(vec![nreq("diffkey", "In", &["wrong", "value2"])]),
            ]),
            n(&[("foo", "bar")]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/invalid value in Affinity term"
            ),
            aff(vec![ex(vec![nreq(
                "foo",
                "NotIn",
                &["invalid value: ___@#$%^"],
            )])]),
            n(&[("foo", "bar")]),
            false,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/matchFields using In operator that matches"
            ),
            aff(vec![fl(vec![name_in("node-1")])]),
            n(&[]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/matchFields using In operator that does not match"
            ),
            aff(vec![fl(vec![name_in("node-1")])]),
            node("node-2", &[]),
            false,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/two terms: matchFields does not match, but matchExpressions matches"
            ),
            aff(vec![
                fl(vec![name_in("node-1")]),
                ex(vec![nreq("foo", "In", &["bar"])]),
            ]),
            node("node-2", &[("foo", "bar")]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/one term: matchFields does not match, but matchExpressions matches"
            ),
            aff(vec![term(
                vec![nreq("foo", "In", &["bar"])],
                vec![name_in("node-1")],
            )]),
            node("node-2", &[("foo", "bar")]),
            false,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/one term: both matchFields and matchExpressions match"
            ),
            aff(vec![term(
                vec![nreq("foo", "In", &["bar"])],
                vec![name_in("node-1")],
            )]),
            node("node-1", &[("foo", "bar")]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestPodMatchesNodeSelectorAndAffinityTerms/two terms: both matchFields and matchExpressions do not match"
            ),
            aff(vec![
                fl(vec![name_in("node-1")]),
                ex(vec![nreq("foo", "In", &["not-match-to-bar"])]),
            ]),
            node("node-2", &[("foo", "bar")]),
            false,
        ),
        // TestMatchNodeSelectorTerms.
        ac(
            helpers_test!("TestMatchNodeSelectorTerms/node label matches matchExpressions terms"),
            aff(vec![ex(vec![nreq("label_1", "In", &["label_1_val"])])]),
            n(&[("label_1", "label_1_val")]),
            true,
        ),
        ac(
            helpers_test!("TestMatchNodeSelectorTerms/node field matches matchFields terms"),
            aff(vec![fl(vec![name_in("host-1")])]),
            node("host-1", &[]),
            true,
        ),
        ac(
            helpers_test!("TestMatchNodeSelectorTerms/invalid node field requirement"),
            aff(vec![fl(vec![nreq(
                "metadata.name",
                "In",
                &["host-1", "host-2"],
            )])]),
            node("host-1", &[]),
            false,
        ),
        ac(
            helpers_test!("TestMatchNodeSelectorTerms/fieldSelectorTerm with node labels"),
            aff(vec![fl(vec![name_in("host-1")])]),
            node("not-host-1", &[("metadata.name", "host-1")]),
            false,
        ),
        ac(
            helpers_test!("TestMatchNodeSelectorTerms/labelSelectorTerm with node fields"),
            aff(vec![ex(vec![nreq("metadata.name", "In", &["host-1"])])]),
            node("host-1", &[]),
            false,
        ),
        ac(
            helpers_test!(
                "TestMatchNodeSelectorTerms/labelSelectorTerm and fieldSelectorTerm was set, but only node fields"
            ),
            aff(vec![term(
                vec![nreq("label_1", "In", &["label_1_val"])],
                vec![name_in("host-1")],
            )]),
            node("host-1", &[]),
            false,
        ),
        ac(
            helpers_test!("TestMatchNodeSelectorTerms/both node fields and labels (both matched)"),
            aff(vec![term(
                vec![nreq("label_1", "In", &["label_1_val"])],
                vec![name_in("host-1")],
            )]),
            node("host-1", &[("label_1", "label_1_val")]),
            true,
        ),
        ac(
            helpers_test!(
                "TestMatchNodeSelectorTerms/both node fields and labels (one mismatched)"
            ),
            aff(vec![term(
                vec![nreq("label_1", "In", &["label_1_val"])],
                vec![name_in("host-1")],
            )]),
            node("host-1", &[("label_1", "label_1_val-failed")]),
            false,
        ),
        ac(
            helpers_test!(
                "TestMatchNodeSelectorTerms/multi-selector was set, both node fields and labels (one mismatched)"
            ),
            aff(vec![
                ex(vec![nreq("label_1", "In", &["label_1_val"])]),
                fl(vec![name_in("host-1")]),
            ]),
            node("host-1", &[("label_1", "label_1_val-failed")]),
            true,
        ),
        // TestNodeSelectorMatch.
        ac(
            nodeaffinity_test!("TestNodeSelectorMatch/node matches field selector, but not labels"),
            aff(vec![term(
                vec![nreq("label_1", "In", &["label_1_val"])],
                vec![name_in("host-1")],
            )]),
            node("host-1", &[]),
            false,
        ),
        ac(
            nodeaffinity_test!("TestNodeSelectorMatch/second term matches"),
            aff(vec![
                ex(vec![nreq("label_1", "In", &["label_1_val"])]),
                fl(vec![name_in("host-1")]),
            ]),
            node("host-1", &[]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestNodeSelectorMatch/invalid field selector and label selector, evaluated lazily"
            ),
            aff(vec![
                fl(vec![nreq("metadata.name", "In", &["host-1", "host-2"])]),
                term(
                    vec![nreq("label_1", "In", &["label_1_val"])],
                    vec![name_in("host-1")],
                ),
                ex(vec![nreq("invalid key", "In", &["label_value"])]),
            ]),
            node("host-1", &[("label_1", "label_1_val")]),
            true,
        ),
        ac(
            nodeaffinity_test!(
                "TestNodeSelectorMatch/invalid field selector and label selector, no valid term matches"
            ),
            aff(vec![
                fl(vec![nreq("metadata.name", "In", &["host-1", "host-2"])]),
                term(
                    vec![nreq("label_1", "In", &["label_1_val"])],
                    vec![name_in("host-1")],
                ),
                ex(vec![nreq("invalid key", "In", &["label_value"])]),
            ]),
            node("host-1", &[("invalid key", "label_value")]),
            false,
        ),
        // TestNodeSelectorRequirementsAsSelector.
        ac(
            nodeaffinity_test!("TestNodeSelectorRequirementsAsSelector/Exists with values"),
            aff(vec![ex(vec![nreq("foo", "Exists", &["bar", "baz"])])]),
            n(&[("foo", "bar")]),
            false,
        ),
        ac(
            nodeaffinity_test!("TestNodeSelectorRequirementsAsSelector/foo>1"),
            aff(vec![ex(vec![nreq("foo", "Gt", &["1"])])]),
            n(&[("foo", "2")]),
            true,
        ),
        ac(
            nodeaffinity_test!("TestNodeSelectorRequirementsAsSelector/bar<7"),
            aff(vec![ex(vec![nreq("bar", "Lt", &["7"])])]),
            n(&[("bar", "6")]),
            true,
        ),
        ac(
            nodeaffinity_test!("TestNodeSelectorRequirementsAsSelector/invalid operator"),
            aff(vec![ex(vec![nreq("baz", "invalid", &["5"])])]),
            n(&[("baz", "5")]),
            false,
        ),
        // TestNodeAffinityDaemonLaunchesPods.
        ac(
            daemon_test!("TestNodeAffinityDaemonLaunchesPods (labelled node)"),
            aff(vec![ex(vec![nreq("color", "In", &["blue"])])]),
            n(SIMPLE_NODE_LABEL),
            true,
        ),
        ac(
            daemon_test!("TestNodeAffinityDaemonLaunchesPods (unlabelled node)"),
            aff(vec![ex(vec![nreq("color", "In", &["blue"])])]),
            n(&[]),
            false,
        ),
        // Gt / Lt: ParseInt on both sides, strict comparison.
        ac(
            labels_test!("TestRequirementSelectorMatching z Gt 1 vs v2"),
            aff(vec![ex(vec![nreq("z", "Gt", &["1"])])]),
            n(&[("z", "v2")]),
            false,
        ),
        ac(
            labels_test!("TestSelectorMatches x>1 vs 0"),
            aff(vec![ex(vec![nreq("x", "Gt", &["1"])])]),
            n(&[("x", "0")]),
            false,
        ),
        ac(
            labels_test!("TestSelectorMatches x<1 vs 0"),
            aff(vec![ex(vec![nreq("x", "Lt", &["1"])])]),
            n(&[("x", "0")]),
            true,
        ),
        ac(
            labels_test!("TestSelectorMatches x<1 vs 2"),
            aff(vec![ex(vec![nreq("x", "Lt", &["1"])])]),
            n(&[("x", "2")]),
            false,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("cores", "Gt", &["007"])])]),
            n(&[("cores", "8")]),
            true,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("cores", "Gt", &["8"])])]),
            n(&[("cores", "0008")]),
            false,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("cores", "Lt", &["010"])])]),
            n(&[("cores", "9")]),
            true,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("cores", "Lt", &["9"])])]),
            n(&[("cores", "9")]),
            false,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("cores", "Gt", &["4"])])]),
            n(&[]),
            false,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("cores", "Gt", &["4"])])]),
            n(&[("cores", "")]),
            false,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("cores", "Lt", &["4"])])]),
            n(&[("cores", "many")]),
            false,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("cores", "Gt", &["4"])])]),
            n(&[("cores", "9223372036854775808")]),
            false,
        ),
        ac(
            NEW_REQUIREMENT,
            aff(vec![ex(vec![nreq("cores", "Gt", &["abc"])])]),
            n(&[("cores", "8")]),
            false,
        ),
        ac(
            NEW_REQUIREMENT,
            aff(vec![ex(vec![nreq("cores", "Gt", &["1", "2"])])]),
            n(&[("cores", "8")]),
            false,
        ),
        ac(
            NEW_REQUIREMENT,
            aff(vec![ex(vec![nreq("cores", "Gt", &[])])]),
            n(&[("cores", "8")]),
            false,
        ),
        // "-1" parses as an integer but is not a valid label value, so the requirement is invalid.
        ac(
            NEW_REQUIREMENT,
            aff(vec![ex(vec![nreq("temp", "Gt", &["-1"])])]),
            n(&[("temp", "5")]),
            false,
        ),
        // Other operators and parse rules.
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("gpu", "DoesNotExist", &[])])]),
            n(&[]),
            true,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("gpu", "DoesNotExist", &[])])]),
            n(&[("gpu", "")]),
            false,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("gpu", "Exists", &[])])]),
            n(&[("gpu", "")]),
            true,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("zone", "NotIn", &["a"])])]),
            n(&[]),
            true,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("zone", "In", &["a"])])]),
            n(&[("Zone", "a")]),
            false,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("zone", "In", &["a"])])]),
            n(&[("zone", "A")]),
            false,
        ),
        ac(
            REQUIREMENT_MATCHES,
            aff(vec![ex(vec![nreq("zone", "In", &[""])])]),
            n(&[("zone", "")]),
            true,
        ),
        ac(
            AS_SELECTOR,
            aff(vec![ex(vec![nreq("zone", "In", &[])])]),
            n(&[("zone", "a")]),
            false,
        ),
        ac(
            AS_SELECTOR,
            aff(vec![ex(vec![nreq("gpu", "DoesNotExist", &["x"])])]),
            n(&[]),
            false,
        ),
        ac(
            AS_SELECTOR,
            aff(vec![ex(vec![nreq("zone", "in", &["a"])])]),
            n(&[("zone", "a")]),
            false,
        ),
        ac(
            AS_SELECTOR,
            aff(vec![ex(vec![nreq("zone", "Equals", &["a"])])]),
            n(&[("zone", "a")]),
            false,
        ),
        ac(
            AS_SELECTOR,
            aff(vec![ex(vec![nreq("bad key", "Exists", &[])])]),
            n(&[("bad key", "x")]),
            false,
        ),
        ac(
            AS_SELECTOR,
            aff(vec![ex(vec![
                nreq("zone", "In", &["a"]),
                nreq("zone", "Bogus", &[]),
            ])]),
            n(&[("zone", "a")]),
            false,
        ),
        // Lazy errors: a broken term is skipped, another term can still match.
        ac(
            LAZY_MATCH,
            aff(vec![
                ex(vec![nreq("zone", "In", &[])]),
                ex(vec![nreq("zone", "In", &["a"])]),
            ]),
            n(&[("zone", "a")]),
            true,
        ),
        ac(
            LAZY_MATCH,
            aff(vec![
                ex(vec![nreq("zone", "In", &["a"])]),
                ex(vec![nreq("cores", "Gt", &["abc"])]),
            ]),
            n(&[("zone", "a")]),
            true,
        ),
        ac(
            LAZY_MATCH,
            aff(vec![ex(vec![nreq("cores", "Gt", &["abc"])])]),
            n(&[("cores", "5")]),
            false,
        ),
        ac(
            LAZY_MATCH,
            aff(vec![
                term(vec![], vec![]),
                ex(vec![nreq("zone", "In", &["a"])]),
            ]),
            n(&[("zone", "a")]),
            true,
        ),
        ac(
            LAZY_MATCH,
            aff(vec![term(vec![], vec![]), term(vec![], vec![])]),
            n(&[("zone", "a")]),
            false,
        ),
        // matchFields.
        ac(
            AS_FIELD_SELECTOR,
            aff(vec![fl(vec![nreq("metadata.name", "NotIn", &["node-2"])])]),
            node("node-1", &[]),
            true,
        ),
        ac(
            AS_FIELD_SELECTOR,
            aff(vec![fl(vec![nreq("metadata.name", "NotIn", &["node-1"])])]),
            node("node-1", &[]),
            false,
        ),
        ac(
            AS_FIELD_SELECTOR,
            aff(vec![fl(vec![nreq("metadata.name", "NotIn", &["a", "b"])])]),
            node("node-1", &[]),
            false,
        ),
        ac(
            AS_FIELD_SELECTOR,
            aff(vec![fl(vec![nreq("metadata.name", "In", &[])])]),
            node("node-1", &[]),
            false,
        ),
        ac(
            AS_FIELD_SELECTOR,
            aff(vec![fl(vec![nreq("metadata.name", "Exists", &[])])]),
            node("node-1", &[]),
            false,
        ),
        ac(
            AS_FIELD_SELECTOR,
            aff(vec![fl(vec![nreq("metadata.name", "Gt", &["1"])])]),
            node("node-1", &[]),
            false,
        ),
        ac(
            AS_FIELD_SELECTOR,
            aff(vec![fl(vec![
                name_in("node-1"),
                nreq("metadata.name", "NotIn", &["node-2"]),
            ])]),
            node("node-1", &[]),
            true,
        ),
        ac(
            AS_FIELD_SELECTOR,
            aff(vec![fl(vec![name_in("Node-1")])]),
            node("node-1", &[]),
            false,
        ),
        // An unknown field reads as "" (fields.Set.Get), and nothing validates the key here.
        ac(
            AS_FIELD_SELECTOR,
            aff(vec![fl(vec![nreq("metadata.foo", "In", &["bar"])])]),
            node("node-1", &[]),
            false,
        ),
        ac(
            AS_FIELD_SELECTOR,
            aff(vec![fl(vec![nreq("metadata.foo", "In", &[""])])]),
            node("node-1", &[]),
            true,
        ),
        ac(
            AS_FIELD_SELECTOR,
            aff(vec![fl(vec![nreq("metadata.foo", "NotIn", &["bar"])])]),
            node("node-1", &[]),
            true,
        ),
        // extractNodeFields gives nothing for a nameless node, and the field part is skipped.
        ac(
            TERM_MATCH,
            aff(vec![fl(vec![name_in("node-1")])]),
            node("", &[]),
            true,
        ),
        ac(
            TERM_MATCH,
            aff(vec![term(
                vec![nreq("zone", "In", &["a"])],
                vec![name_in("node-1")],
            )]),
            node("", &[]),
            false,
        ),
    ]
}

#[test]
fn required_node_affinity() {
    let cases = affinity_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let got = affinity::required_affinity_matches(c.affinity.as_ref(), &c.node);
        if got != c.want {
            failures.push(format!(
                "[{}] affinity {:?} node {:?} {:?}: want {}, got {got}",
                c.source, c.affinity, c.node.name, c.node.labels, c.want
            ));
        }
    }
    report(failures, cases.len());
}

// ---------------------------------------------------------------------------------------------
// Toleration.ToleratesTaint.

struct TolerationCase {
    source: &'static str,
    toleration: Toleration,
    taint: Taint,
    want: bool,
}

fn tc(source: &'static str, toleration: Toleration, taint: Taint, want: bool) -> TolerationCase {
    TolerationCase {
        source,
        toleration,
        taint,
        want,
    }
}

fn toleration_cases() -> Vec<TolerationCase> {
    let sla = "node.kubernetes.io/sla";
    vec![
        tc(
            toleration_test!(
                "TestTolerationToleratesTaint/same key and effect, Exists, taint has no value"
            ),
            tol("foo", "Exists", "", "NoSchedule"),
            taint("foo", "", "NoSchedule"),
            true,
        ),
        tc(
            toleration_test!(
                "TestTolerationToleratesTaint/same key and effect, Exists, taint has some value"
            ),
            tol("foo", "Exists", "", "NoSchedule"),
            taint("foo", "bar", "NoSchedule"),
            true,
        ),
        tc(
            toleration_test!(
                "TestTolerationToleratesTaint/same effect, empty key and Exists matches all taints"
            ),
            tol("", "Exists", "", "NoSchedule"),
            taint("foo", "bar", "NoSchedule"),
            true,
        ),
        tc(
            toleration_test!("TestTolerationToleratesTaint/same key, effect and value, Equal"),
            tol("foo", "Equal", "bar", "NoSchedule"),
            taint("foo", "bar", "NoSchedule"),
            true,
        ),
        tc(
            toleration_test!(
                "TestTolerationToleratesTaint/same key and effect, different values, Equal"
            ),
            tol("foo", "Equal", "value1", "NoSchedule"),
            taint("foo", "value2", "NoSchedule"),
            false,
        ),
        tc(
            toleration_test!(
                "TestTolerationToleratesTaint/same key and value, different effects, Equal"
            ),
            tol("foo", "Equal", "bar", "NoSchedule"),
            taint("foo", "bar", "NoExecute"),
            false,
        ),
        // The Gt/Lt cases of that test enable the alpha gate; with default gates none tolerates.
        tc(
            toleration_test!("TestTolerationToleratesTaint/Gt, taint value greater (gate off)"),
            tol(sla, "Gt", "750", "NoSchedule"),
            taint(sla, "950", "NoSchedule"),
            false,
        ),
        tc(
            toleration_test!("TestTolerationToleratesTaint/Gt, taint value less (gate off)"),
            tol(sla, "Gt", "950", "NoSchedule"),
            taint(sla, "800", "NoSchedule"),
            false,
        ),
        tc(
            toleration_test!("TestTolerationToleratesTaint/Lt, taint value less (gate off)"),
            tol(sla, "Lt", "950", "NoSchedule"),
            taint(sla, "800", "NoSchedule"),
            false,
        ),
        tc(
            toleration_test!("TestTolerationToleratesTaint/Lt, taint value greater (gate off)"),
            tol(sla, "Lt", "800", "NoSchedule"),
            taint(sla, "950", "NoSchedule"),
            false,
        ),
        tc(
            daemon_test!("TestTaintedNodeDaemonLaunchesToleratePod (operator \"\")"),
            tol("dedicated", "", "user1", "NoSchedule"),
            taint("dedicated", "user1", "NoSchedule"),
            true,
        ),
        // Derived from ToleratesTaint.
        tc(
            TOLERATES_TAINT,
            tol("", "Exists", "", ""),
            taint("anything", "x", "NoExecute"),
            true,
        ),
        tc(
            TOLERATES_TAINT,
            tol("", "Exists", "", ""),
            taint("node.kubernetes.io/out-of-service", "", "NoExecute"),
            true,
        ),
        tc(
            TOLERATES_TAINT,
            tol("", "Exists", "", "NoSchedule"),
            taint("foo", "bar", "NoExecute"),
            false,
        ),
        tc(
            TOLERATES_TAINT,
            tol("foo", "Exists", "", ""),
            taint("foo", "bar", "NoExecute"),
            true,
        ),
        tc(
            TOLERATES_TAINT,
            tol("foo", "Exists", "", ""),
            taint("foo", "bar", "PreferNoSchedule"),
            true,
        ),
        tc(
            TOLERATES_TAINT,
            tol("foo", "Equal", "", "NoSchedule"),
            taint("foo", "", "NoSchedule"),
            true,
        ),
        tc(
            TOLERATES_TAINT,
            tol("foo", "", "", "NoSchedule"),
            taint("foo", "", "NoSchedule"),
            true,
        ),
        tc(
            TOLERATES_TAINT,
            tol("foo", "Equal", "", "NoSchedule"),
            taint("foo", "bar", "NoSchedule"),
            false,
        ),
        tc(
            TOLERATES_TAINT,
            tol("foo", "Equal", "bar", "NoSchedule"),
            taint("foo", "", "NoSchedule"),
            false,
        ),
        // An empty key matches every key whatever the operator; Equal then compares values.
        tc(
            TOLERATES_TAINT,
            tol("", "Equal", "", ""),
            taint("foo", "", "NoSchedule"),
            true,
        ),
        tc(
            TOLERATES_TAINT,
            tol("", "Equal", "", ""),
            taint("foo", "bar", "NoSchedule"),
            false,
        ),
        // Case sensitivity of key, value, effect and operator.
        tc(
            TOLERATES_TAINT,
            tol("Dedicated", "Exists", "", "NoSchedule"),
            taint("dedicated", "db", "NoSchedule"),
            false,
        ),
        tc(
            TOLERATES_TAINT,
            tol("dedicated", "Equal", "DB", "NoSchedule"),
            taint("dedicated", "db", "NoSchedule"),
            false,
        ),
        tc(
            TOLERATES_TAINT,
            tol("dedicated", "Equal", "db", "noschedule"),
            taint("dedicated", "db", "NoSchedule"),
            false,
        ),
        tc(
            TOLERATES_TAINT,
            tol("dedicated", "exists", "", "NoSchedule"),
            taint("dedicated", "db", "NoSchedule"),
            false,
        ),
        tc(
            TOLERATES_TAINT,
            tol("dedicated", "equal", "db", "NoSchedule"),
            taint("dedicated", "db", "NoSchedule"),
            false,
        ),
        tc(
            TOLERATES_TAINT,
            tol("dedicated", "Bogus", "db", "NoSchedule"),
            taint("dedicated", "db", "NoSchedule"),
            false,
        ),
        // PreferNoSchedule is an effect like the others for ToleratesTaint.
        tc(
            TOLERATES_TAINT,
            tol("foo", "Exists", "", "NoSchedule"),
            taint("foo", "", "PreferNoSchedule"),
            false,
        ),
        // tolerationSeconds is ignored, 0 included.
        tc(
            TOLERATES_TAINT,
            tol_s("foo", "Exists", "", "NoExecute", 0),
            taint("foo", "", "NoExecute"),
            true,
        ),
        tc(
            TOLERATES_TAINT,
            tol_s("foo", "Equal", "bar", "NoExecute", 300),
            taint("foo", "bar", "NoExecute"),
            true,
        ),
        tc(
            TOLERATES_TAINT,
            tol_s("foo", "Equal", "bar", "NoExecute", -1),
            taint("foo", "bar", "NoExecute"),
            true,
        ),
        // Lt/Gt never tolerate with default gates, whatever the values.
        tc(
            TOLERATES_TAINT,
            tol("foo", "Lt", "10", "NoSchedule"),
            taint("foo", "1", "NoSchedule"),
            false,
        ),
        tc(
            TOLERATES_TAINT,
            tol("", "Gt", "0", ""),
            taint("foo", "1", "NoSchedule"),
            false,
        ),
    ]
}

#[test]
fn tolerations_tolerate_taints() {
    let cases = toleration_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let got = taints::tolerates(&c.toleration, &c.taint);
        if got != c.want {
            failures.push(format!(
                "[{}] toleration {:?} taint {}: want {}, got {got}",
                c.source, c.toleration, c.taint, c.want
            ));
        }
    }
    report(failures, cases.len());
}

// ---------------------------------------------------------------------------------------------
// FindMatchingUntoleratedTaint, returning all untolerated taints.

#[derive(Clone, Copy)]
enum Filter {
    All,
    None,
    NoExecute,
    Daemon,
}

impl Filter {
    fn keep(self, t: &Taint) -> bool {
        match self {
            Filter::All => true,
            Filter::None => false,
            Filter::NoExecute => t.effect == "NoExecute",
            Filter::Daemon => t.effect == "NoExecute" || t.effect == "NoSchedule",
        }
    }
}

struct UntoleratedCase {
    source: &'static str,
    taints: Vec<Taint>,
    tolerations: Vec<Toleration>,
    filter: Filter,
    /// Keys of the untolerated taints, in node order.
    want: Vec<&'static str>,
}

fn uc(
    source: &'static str,
    taints: Vec<Taint>,
    tolerations: Vec<Toleration>,
    filter: Filter,
    want: Vec<&'static str>,
) -> UntoleratedCase {
    UntoleratedCase {
        source,
        taints,
        tolerations,
        filter,
        want,
    }
}

fn untolerated_cases() -> Vec<UntoleratedCase> {
    let sla = "node.kubernetes.io/sla";
    vec![
        uc(
            helpers_test!(
                "TestFindMatchingUntoleratedTaint/empty tolerations tolerate empty taints"
            ),
            vec![],
            vec![],
            Filter::All,
            vec![],
        ),
        uc(
            helpers_test!(
                "TestFindMatchingUntoleratedTaint/non-empty tolerations tolerate empty taints"
            ),
            vec![],
            vec![tol("foo", "Exists", "", "NoSchedule")],
            Filter::All,
            vec![],
        ),
        uc(
            helpers_test!("TestFindMatchingUntoleratedTaint/tolerations match all taints"),
            vec![taint("foo", "", "NoSchedule")],
            vec![tol("foo", "Exists", "", "NoSchedule")],
            Filter::All,
            vec![],
        ),
        uc(
            helpers_test!("TestFindMatchingUntoleratedTaint/no taints apply to the filter"),
            vec![taint("bar", "", "NoSchedule")],
            vec![tol("foo", "Exists", "", "NoSchedule")],
            Filter::None,
            vec![],
        ),
        uc(
            helpers_test!(
                "TestFindMatchingUntoleratedTaint/no filterFunc, tolerations don't match taints"
            ),
            vec![taint("bar", "", "NoSchedule")],
            vec![tol("foo", "Exists", "", "NoSchedule")],
            Filter::All,
            vec!["bar"],
        ),
        uc(
            helpers_test!(
                "TestFindMatchingUntoleratedTaint/tolerations match taints (NoExecute filter)"
            ),
            vec![
                taint("foo", "", "NoExecute"),
                taint("bar", "", "NoSchedule"),
            ],
            vec![tol("foo", "Exists", "", "NoExecute")],
            Filter::NoExecute,
            vec![],
        ),
        uc(
            helpers_test!(
                "TestFindMatchingUntoleratedTaint/numeric Gt operator with taint value above threshold (gate off)"
            ),
            vec![taint(sla, "950", "NoSchedule")],
            vec![tol(sla, "Gt", "750", "NoSchedule")],
            Filter::All,
            vec![sla],
        ),
        uc(
            FIND_UNTOLERATED,
            vec![
                taint("a", "", "NoSchedule"),
                taint("b", "", "NoExecute"),
                taint("c", "x", "NoSchedule"),
            ],
            vec![tol("b", "Exists", "", "")],
            Filter::Daemon,
            vec!["a", "c"],
        ),
        uc(
            FIND_UNTOLERATED,
            vec![taint("c", "", "NoExecute"), taint("a", "", "NoSchedule")],
            vec![],
            Filter::Daemon,
            vec!["c", "a"],
        ),
        uc(
            FIND_UNTOLERATED,
            vec![taint("p", "", "PreferNoSchedule")],
            vec![],
            Filter::Daemon,
            vec![],
        ),
        uc(
            FIND_UNTOLERATED,
            vec![
                taint("p", "", "PreferNoSchedule"),
                taint("q", "", "NoSchedule"),
            ],
            vec![],
            Filter::All,
            vec!["p", "q"],
        ),
        uc(
            FIND_UNTOLERATED,
            vec![taint("a", "1", "NoSchedule")],
            vec![
                tol("a", "Equal", "2", "NoSchedule"),
                tol("a", "Equal", "1", "NoSchedule"),
            ],
            Filter::Daemon,
            vec![],
        ),
        uc(
            FIND_UNTOLERATED,
            vec![taint("a", "1", "NoSchedule"), taint("a", "1", "NoExecute")],
            vec![tol("a", "Equal", "1", "NoSchedule")],
            Filter::Daemon,
            vec!["a"],
        ),
    ]
}

#[test]
fn untolerated_taints() {
    let cases = untolerated_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let got: Vec<&str> =
            taints::untolerated_taints(&c.taints, &c.tolerations, |t| c.filter.keep(t))
                .into_iter()
                .map(|t| t.key.as_str())
                .collect();
        if got != c.want {
            failures.push(format!(
                "[{}] taints {:?} tolerations {:?}: want {:?}, got {got:?}",
                c.source, c.taints, c.tolerations, c.want
            ));
        }
    }
    report(failures, cases.len());
}

/// Both filters that NodeShouldRunDaemonPod uses, on the taints and the position the result
/// points at: the returned references are the node's own taints.
#[test]
fn untolerated_taints_borrow_the_node_taints() {
    let node_taints = vec![taint("a", "", "NoSchedule"), taint("b", "", "NoExecute")];
    let got = taints::untolerated_taints(&node_taints, &[], |_| true);
    assert!(std::ptr::eq(got[0], &node_taints[0]));
    assert!(std::ptr::eq(got[1], &node_taints[1]));
}

// ---------------------------------------------------------------------------------------------
// Automatic DaemonSet tolerations.

fn defaults(host_network: bool) -> Vec<Toleration> {
    let mut v = vec![
        tol("node.kubernetes.io/not-ready", "Exists", "", "NoExecute"),
        tol("node.kubernetes.io/unreachable", "Exists", "", "NoExecute"),
        tol(
            "node.kubernetes.io/disk-pressure",
            "Exists",
            "",
            "NoSchedule",
        ),
        tol(
            "node.kubernetes.io/memory-pressure",
            "Exists",
            "",
            "NoSchedule",
        ),
        tol(
            "node.kubernetes.io/pid-pressure",
            "Exists",
            "",
            "NoSchedule",
        ),
        tol(
            "node.kubernetes.io/unschedulable",
            "Exists",
            "",
            "NoSchedule",
        ),
    ];
    if host_network {
        v.push(tol(
            "node.kubernetes.io/network-unavailable",
            "Exists",
            "",
            "NoSchedule",
        ));
    }
    v
}

struct DefaultsCase {
    source: &'static str,
    user: Vec<Toleration>,
    host_network: bool,
    want: Vec<Toleration>,
}

fn concat(a: Vec<Toleration>, b: Vec<Toleration>) -> Vec<Toleration> {
    a.into_iter().chain(b).collect()
}

fn defaults_cases() -> Vec<DefaultsCase> {
    let nr = |secs: Option<i64>| Toleration {
        toleration_seconds: secs,
        ..tol("node.kubernetes.io/not-ready", "Exists", "", "NoExecute")
    };
    let dedicated = tol("dedicated", "Equal", "db", "NoSchedule");
    let other = tol("other", "Exists", "", "");
    let rest = || defaults(false)[1..].to_vec();
    let net = |secs: Option<i64>| Toleration {
        toleration_seconds: secs,
        ..tol(
            "node.kubernetes.io/network-unavailable",
            "Exists",
            "",
            "NoSchedule",
        )
    };
    vec![
        DefaultsCase {
            source: DAEMON_TOLERATIONS,
            user: vec![],
            host_network: false,
            want: defaults(false),
        },
        DefaultsCase {
            source: DAEMON_TOLERATIONS,
            user: vec![],
            host_network: true,
            want: defaults(true),
        },
        DefaultsCase {
            source: DAEMON_TOLERATIONS,
            user: vec![dedicated.clone()],
            host_network: false,
            want: concat(vec![dedicated.clone()], defaults(false)),
        },
        // A user toleration MatchToleration-equal to a default is replaced in place by it.
        DefaultsCase {
            source: ADD_OR_UPDATE,
            user: vec![dedicated.clone(), nr(Some(300)), other.clone()],
            host_network: false,
            want: concat(vec![dedicated.clone(), nr(None), other.clone()], rest()),
        },
        DefaultsCase {
            source: ADD_OR_UPDATE,
            user: vec![nr(Some(0))],
            host_network: false,
            want: defaults(false),
        },
        // Deep-equal: left alone, not duplicated.
        DefaultsCase {
            source: ADD_OR_UPDATE,
            user: vec![other.clone(), nr(None)],
            host_network: false,
            want: concat(vec![other.clone(), nr(None)], rest()),
        },
        // Different operator, value or effect: the user's stays and the default is appended.
        DefaultsCase {
            source: ADD_OR_UPDATE,
            user: vec![tol(
                "node.kubernetes.io/not-ready",
                "Equal",
                "",
                "NoExecute",
            )],
            host_network: false,
            want: concat(
                vec![tol(
                    "node.kubernetes.io/not-ready",
                    "Equal",
                    "",
                    "NoExecute",
                )],
                defaults(false),
            ),
        },
        DefaultsCase {
            source: ADD_OR_UPDATE,
            user: vec![tol_s(
                "node.kubernetes.io/not-ready",
                "Exists",
                "x",
                "NoExecute",
                60,
            )],
            host_network: false,
            want: concat(
                vec![tol_s(
                    "node.kubernetes.io/not-ready",
                    "Exists",
                    "x",
                    "NoExecute",
                    60,
                )],
                defaults(false),
            ),
        },
        DefaultsCase {
            source: ADD_OR_UPDATE,
            user: vec![tol_s(
                "node.kubernetes.io/not-ready",
                "Exists",
                "",
                "NoSchedule",
                60,
            )],
            host_network: false,
            want: concat(
                vec![tol_s(
                    "node.kubernetes.io/not-ready",
                    "Exists",
                    "",
                    "NoSchedule",
                    60,
                )],
                defaults(false),
            ),
        },
        DefaultsCase {
            source: ADD_OR_UPDATE,
            user: vec![tol_s(
                "node.kubernetes.io/not-ready",
                "",
                "",
                "NoExecute",
                60,
            )],
            host_network: false,
            want: concat(
                vec![tol_s(
                    "node.kubernetes.io/not-ready",
                    "",
                    "",
                    "NoExecute",
                    60,
                )],
                defaults(false),
            ),
        },
        // network-unavailable is a default only with hostNetwork.
        DefaultsCase {
            source: DAEMON_TOLERATIONS,
            user: vec![net(Some(30))],
            host_network: false,
            want: concat(vec![net(Some(30))], defaults(false)),
        },
        DefaultsCase {
            source: ADD_OR_UPDATE,
            user: vec![net(Some(30))],
            host_network: true,
            want: concat(vec![net(None)], defaults(false)),
        },
        // Two entries equal to one default: the first is replaced, then the deep-equal second
        // aborts that update, so nothing changes for not-ready.
        DefaultsCase {
            source: ADD_OR_UPDATE,
            user: vec![nr(Some(300)), nr(None)],
            host_network: false,
            want: concat(vec![nr(Some(300)), nr(None)], rest()),
        },
        DefaultsCase {
            source: ADD_OR_UPDATE,
            user: vec![nr(Some(300)), nr(Some(600))],
            host_network: false,
            want: concat(vec![nr(None), nr(None)], rest()),
        },
    ]
}

#[test]
fn automatic_daemon_tolerations() {
    let cases = defaults_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let template = PodTemplate {
            tolerations: c.user.clone(),
            host_network: c.host_network,
            ..PodTemplate::default()
        };
        let got = taints::daemon_tolerations(&template);
        if got != c.want {
            failures.push(format!(
                "[{}] user {:?} hostNetwork {}:\n  want {:?}\n  got  {got:?}",
                c.source, c.user, c.host_network, c.want
            ));
        }
    }
    report(failures, cases.len());
}

// ---------------------------------------------------------------------------------------------
// NodeShouldRunDaemonPod.

struct EvalCase {
    source: &'static str,
    ds: DaemonSet,
    node: Node,
    should_run: bool,
    should_continue_running: bool,
    /// Number of reasons expected (each failing predicate explained).
    reasons: usize,
}

fn ec(
    source: &'static str,
    ds: DaemonSet,
    node: Node,
    (should_run, should_continue_running): (bool, bool),
    reasons: usize,
) -> EvalCase {
    EvalCase {
        source,
        ds,
        node,
        should_run,
        should_continue_running,
        reasons,
    }
}

fn eval_cases() -> Vec<EvalCase> {
    let test_node = || node("test-node", SIMPLE_DAEMON_SET_LABEL);
    let with_taints = |name: &str, t: Vec<Taint>| tainted(name, t);
    let user1 = |effect: &str| taint("dedicated", "user1", effect);
    let nr = "node.kubernetes.io/not-ready";
    let unreachable = "node.kubernetes.io/unreachable";
    let requests = |mem: &str, cpu: &str| {
        with(|t| {
            t.process
                .resources
                .requests
                .insert("memory".into(), mem.into());
            t.process
                .resources
                .requests
                .insert("cpu".into(), cpu.into());
        })
    };
    vec![
        // TestNodeShouldRunDaemonPod (node "test-node" labelled simpleDaemonSetLabel).
        ec(
            daemon_test!("TestNodeShouldRunDaemonPod/ShouldRunDaemonPod"),
            requests("50M", "0.5"),
            test_node(),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNodeShouldRunDaemonPod/InsufficientResourceError"),
            requests("200M", "0.5"),
            test_node(),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNodeShouldRunDaemonPod/ErrPodNotMatchHostName"),
            with(|t| t.node_name = "other-node".into()),
            test_node(),
            (false, false),
            1,
        ),
        ec(
            daemon_test!("TestNodeShouldRunDaemonPod/ErrPodNotFitsHostPorts"),
            with(|t| {
                t.process.ports.push(Port {
                    name: String::new(),
                    container_port: 666,
                    host_port: 666,
                    protocol: "TCP".into(),
                })
            }),
            test_node(),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNodeShouldRunDaemonPod/ErrNodeSelectorNotMatch"),
            with(|t| t.node_selector = l(SIMPLE_DAEMON_SET_LABEL2)),
            test_node(),
            (false, false),
            1,
        ),
        ec(
            daemon_test!("TestNodeShouldRunDaemonPod/ShouldRunDaemonPod (nodeSelector)"),
            with(|t| t.node_selector = l(SIMPLE_DAEMON_SET_LABEL)),
            test_node(),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNodeShouldRunDaemonPod/ErrPodAffinityNotMatch"),
            with(|t| t.required_node_affinity = aff(vec![ex(vec![nreq("type", "In", &["test"])])])),
            test_node(),
            (false, false),
            1,
        ),
        ec(
            daemon_test!("TestNodeShouldRunDaemonPod/ShouldRunDaemonPod (affinity)"),
            with(|t| {
                t.required_node_affinity = aff(vec![ex(vec![nreq("type", "In", &["production"])])])
            }),
            test_node(),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNodeShouldRunDaemonPod/ShouldRunDaemonPodOnUnschedulableNode"),
            requests("50M", "0.5"),
            Node {
                unschedulable: true,
                ..test_node()
            },
            (true, true),
            0,
        ),
        // Other daemon_controller_test.go tests, as single-node decisions.
        ec(
            daemon_test!("TestOneNodeDaemonLaunchesPod"),
            ds(),
            node("only-node", &[]),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNotReadyNodeDaemonDoesLaunchPod"),
            ds(),
            node("not-ready", &[]),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNetworkUnavailableNodeDaemonLaunchesPod"),
            ds(),
            node("network-unavailable", &[]),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNoScheduleTaintedDoesntEvicitRunningIntolerantPod"),
            ds(),
            with_taints("tainted", vec![user1("NoSchedule")]),
            (false, true),
            1,
        ),
        ec(
            daemon_test!("TestNoExecuteTaintedDoesEvicitRunningIntolerantPod"),
            ds(),
            with_taints("tainted", vec![user1("NoExecute")]),
            (false, false),
            1,
        ),
        ec(
            daemon_test!("TestTaintedNodeDaemonDoesNotLaunchIntolerantPod"),
            ds(),
            with_taints("tainted", vec![user1("NoSchedule")]),
            (false, true),
            1,
        ),
        ec(
            daemon_test!("TestTaintedNodeDaemonLaunchesToleratePod"),
            with(|t| t.tolerations = vec![tol("dedicated", "", "user1", "NoSchedule")]),
            with_taints("tainted", vec![user1("NoSchedule")]),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNotReadyNodeDaemonLaunchesPod"),
            ds(),
            with_taints("tainted", vec![taint(nr, "", "NoExecute")]),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestUnreachableNodeDaemonLaunchesPod"),
            ds(),
            with_taints("tainted", vec![taint(unreachable, "", "NoExecute")]),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNodeDaemonLaunchesToleratePod"),
            with(|t| t.tolerations = vec![tol("dedicated", "", "user1", "NoSchedule")]),
            node("node-0", &[]),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestTaintPressureNodeDaemonLaunchesPod"),
            ds(),
            with_taints(
                "resources-pressure",
                vec![
                    taint("node.kubernetes.io/disk-pressure", "", "NoSchedule"),
                    taint("node.kubernetes.io/memory-pressure", "", "NoSchedule"),
                    taint("node.kubernetes.io/pid-pressure", "", "NoSchedule"),
                ],
            ),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestSelectorDaemonLaunchesPods (labelled node)"),
            with(|t| t.node_selector = l(SIMPLE_NODE_LABEL)),
            node("node-4", SIMPLE_NODE_LABEL),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestSelectorDaemonLaunchesPods (unlabelled node)"),
            with(|t| t.node_selector = l(SIMPLE_NODE_LABEL)),
            node("node-0", &[]),
            (false, false),
            2,
        ),
        ec(
            daemon_test!("TestBadSelectorDaemonDoesNothing"),
            with(|t| t.node_selector = l(SIMPLE_NODE_LABEL2)),
            node("node-4", SIMPLE_NODE_LABEL),
            (false, false),
            1,
        ),
        ec(
            daemon_test!("TestNameDaemonSetLaunchesPods"),
            with(|t| t.node_name = "node-0".into()),
            node("node-0", &[]),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNameDaemonSetLaunchesPods (other node)"),
            with(|t| t.node_name = "node-0".into()),
            node("node-1", &[]),
            (false, false),
            1,
        ),
        ec(
            daemon_test!("TestBadNameDaemonSetDoesNothing"),
            with(|t| t.node_name = "node-10".into()),
            node("node-0", &[]),
            (false, false),
            1,
        ),
        ec(
            daemon_test!("TestNameAndSelectorDaemonSetLaunchesPods"),
            with(|t| {
                t.node_selector = l(SIMPLE_NODE_LABEL);
                t.node_name = "node-6".into();
            }),
            node("node-6", SIMPLE_NODE_LABEL),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestInconsistentNameSelectorDaemonSetDoesNothing (named node)"),
            with(|t| {
                t.node_selector = l(SIMPLE_NODE_LABEL);
                t.node_name = "node-0".into();
            }),
            node("node-0", &[]),
            (false, false),
            2,
        ),
        ec(
            daemon_test!("TestInconsistentNameSelectorDaemonSetDoesNothing (selected node)"),
            with(|t| {
                t.node_selector = l(SIMPLE_NODE_LABEL);
                t.node_name = "node-0".into();
            }),
            node("node-4", SIMPLE_NODE_LABEL),
            (false, false),
            1,
        ),
        ec(
            daemon_test!("TestNodeAffinityDaemonLaunchesPods (labelled node)"),
            with(|t| {
                t.required_node_affinity = aff(vec![ex(vec![nreq("color", "In", &["blue"])])])
            }),
            node("node-4", SIMPLE_NODE_LABEL),
            (true, true),
            0,
        ),
        ec(
            daemon_test!("TestNodeAffinityDaemonLaunchesPods (unlabelled node)"),
            with(|t| {
                t.required_node_affinity = aff(vec![ex(vec![nreq("color", "In", &["blue"])])])
            }),
            node("node-0", &[]),
            (false, false),
            1,
        ),
        // Automatic tolerations: only the NoExecute variants of not-ready / unreachable.
        ec(
            SHOULD_RUN,
            ds(),
            with_taints("n", vec![taint(nr, "", "NoSchedule")]),
            (false, true),
            1,
        ),
        ec(
            SHOULD_RUN,
            ds(),
            with_taints("n", vec![taint(unreachable, "", "NoSchedule")]),
            (false, true),
            1,
        ),
        ec(
            SHOULD_RUN,
            ds(),
            with_taints(
                "n",
                vec![taint(nr, "", "NoSchedule"), taint(nr, "", "NoExecute")],
            ),
            (false, true),
            1,
        ),
        ec(
            SHOULD_RUN,
            ds(),
            with_taints(
                "n",
                vec![taint(
                    "node.kubernetes.io/out-of-service",
                    "nodeshutdown",
                    "NoExecute",
                )],
            ),
            (false, false),
            1,
        ),
        ec(
            SHOULD_RUN,
            ds(),
            with_taints(
                "n",
                vec![taint("node.kubernetes.io/memory-pressure", "", "NoExecute")],
            ),
            (false, false),
            1,
        ),
        ec(
            SHOULD_RUN,
            ds(),
            with_taints(
                "n",
                vec![taint("node.kubernetes.io/unschedulable", "", "NoSchedule")],
            ),
            (true, true),
            0,
        ),
        ec(
            SHOULD_RUN,
            ds(),
            Node {
                unschedulable: true,
                ..with_taints(
                    "n",
                    vec![taint("node.kubernetes.io/unschedulable", "", "NoSchedule")],
                )
            },
            (true, true),
            0,
        ),
        ec(
            SHOULD_RUN,
            ds(),
            with_taints(
                "n",
                vec![taint(
                    "node.kubernetes.io/network-unavailable",
                    "",
                    "NoSchedule",
                )],
            ),
            (false, true),
            1,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.host_network = true),
            with_taints(
                "n",
                vec![taint(
                    "node.kubernetes.io/network-unavailable",
                    "",
                    "NoSchedule",
                )],
            ),
            (true, true),
            0,
        ),
        // Ignored inputs: PreferNoSchedule, tolerationSeconds.
        ec(
            SHOULD_RUN,
            ds(),
            with_taints("n", vec![taint("dedicated", "db", "PreferNoSchedule")]),
            (true, true),
            0,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.tolerations = vec![tol_s("dedicated", "Equal", "db", "NoExecute", 0)]),
            with_taints("n", vec![taint("dedicated", "db", "NoExecute")]),
            (true, true),
            0,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.tolerations = vec![tol_s(nr, "Exists", "", "NoExecute", 300)]),
            with_taints("n", vec![taint(nr, "", "NoExecute")]),
            (true, true),
            0,
        ),
        // Several failing predicates: booleans from the first, every reason reported.
        ec(
            SHOULD_RUN,
            ds(),
            with_taints(
                "n",
                vec![taint("a", "", "NoSchedule"), taint("b", "", "NoExecute")],
            ),
            (false, false),
            2,
        ),
        ec(
            SHOULD_RUN,
            ds(),
            with_taints(
                "n",
                vec![taint("a", "", "NoSchedule"), taint("b", "", "NoSchedule")],
            ),
            (false, true),
            2,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.required_node_affinity = aff(vec![ex(vec![nreq("zone", "In", &["a"])])])),
            with_taints("n", vec![taint("a", "", "NoSchedule")]),
            (false, false),
            2,
        ),
        ec(
            SHOULD_RUN,
            with(|t| {
                t.node_name = "web-1".into();
                t.node_selector = l(&[("disktype", "ssd"), ("zone", "a")]);
                t.required_node_affinity =
                    aff(vec![ex(vec![nreq("kubernetes.io/arch", "In", &["arm64"])])]);
            }),
            Node {
                labels: l(&[("disktype", "hdd")]),
                ..with_taints(
                    "web-2",
                    vec![
                        taint("dedicated", "db", "NoSchedule"),
                        taint("gone", "", "NoExecute"),
                        taint("soft", "", "PreferNoSchedule"),
                    ],
                )
            },
            (false, false),
            6,
        ),
        // Toleration operators.
        ec(
            SHOULD_RUN,
            with(|t| t.tolerations = vec![tol("dedicated", "Gt", "1", "NoSchedule")]),
            with_taints("n", vec![taint("dedicated", "5", "NoSchedule")]),
            (false, true),
            1,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.tolerations = vec![tol("", "Exists", "", "")]),
            with_taints(
                "n",
                vec![
                    taint("node.kubernetes.io/out-of-service", "", "NoExecute"),
                    taint("x", "y", "NoSchedule"),
                ],
            ),
            (true, true),
            0,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.tolerations = vec![tol("", "Exists", "", "NoSchedule")]),
            with_taints(
                "n",
                vec![taint("x", "y", "NoSchedule"), taint("z", "", "NoExecute")],
            ),
            (false, false),
            1,
        ),
        // Affinity details through the whole decision.
        ec(
            SHOULD_RUN,
            with(|t| {
                t.required_node_affinity = aff(vec![
                    ex(vec![nreq("zone", "In", &[])]),
                    ex(vec![nreq("zone", "In", &["a"])]),
                ])
            }),
            node("n", &[("zone", "a")]),
            (true, true),
            0,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.required_node_affinity = aff(vec![term(vec![], vec![])])),
            node("n", &[("zone", "a")]),
            (false, false),
            1,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.required_node_affinity = aff(vec![])),
            node("n", &[]),
            (false, false),
            1,
        ),
        ec(
            SHOULD_RUN,
            with(|t| {
                t.required_node_affinity =
                    aff(vec![ex(vec![nreq("metadata.name", "In", &["web-1"])])])
            }),
            node("web-1", &[]),
            (false, false),
            1,
        ),
        ec(
            SHOULD_RUN,
            with(|t| {
                t.required_node_affinity =
                    aff(vec![fl(vec![nreq("metadata.name", "In", &["web-1"])])])
            }),
            node("web-1", &[]),
            (true, true),
            0,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.required_node_affinity = aff(vec![ex(vec![nreq("cores", "Gt", &["04"])])])),
            node("n", &[("cores", "016")]),
            (true, true),
            0,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.required_node_affinity = aff(vec![ex(vec![nreq("cores", "Gt", &["4"])])])),
            node("n", &[("cores", "sixteen")]),
            (false, false),
            1,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.node_selector = l(&[("edge", "")])),
            node("n", &[("edge", "")]),
            (true, true),
            0,
        ),
        ec(
            SHOULD_RUN,
            with(|t| t.node_selector = l(&[("edge", "")])),
            node("n", &[]),
            (false, false),
            1,
        ),
        // The spec.selector plays no part in placement.
        ec(
            SHOULD_RUN,
            DaemonSet {
                selector: None,
                ..ds()
            },
            node("n", &[]),
            (true, true),
            0,
        ),
    ]
}

#[test]
fn node_should_run_daemon_pod() {
    let cases = eval_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let v = placement::evaluate(&c.ds, &c.node);
        let want = (c.should_run, c.should_continue_running);
        let got = (v.should_run, v.should_continue_running);
        if got != want {
            failures.push(format!(
                "[{}] node {:?}: want {want:?}, got {got:?}; reasons {:?}",
                c.source, c.node.name, v.reasons
            ));
        } else if v.reasons.len() != c.reasons {
            failures.push(format!(
                "[{}] node {:?}: want {} reasons, got {:?}",
                c.source, c.node.name, c.reasons, v.reasons
            ));
        }
        // Invariants: shouldRun implies shouldContinueRunning; reasons exactly when not running.
        if v.should_run && !v.should_continue_running {
            failures.push(format!(
                "[{}] shouldRun without shouldContinueRunning",
                c.source
            ));
        }
        if v.should_run != v.reasons.is_empty() {
            failures.push(format!(
                "[{}] reasons {:?} do not agree with shouldRun {}",
                c.source, v.reasons, v.should_run
            ));
        }
        if placement::evaluate(&c.ds, &c.node) != v {
            failures.push(format!("[{}] evaluate is not deterministic", c.source));
        }
    }
    report(failures, cases.len());
}

// ---------------------------------------------------------------------------------------------
// Reasons: exact sentences.

struct ReasonCase {
    source: &'static str,
    ds: DaemonSet,
    node: Node,
    reasons: Vec<&'static str>,
}

fn reason_cases() -> Vec<ReasonCase> {
    vec![
        ReasonCase {
            source: daemon_test!("TestNodeShouldRunDaemonPod/ErrPodNotMatchHostName"),
            ds: with(|t| t.node_name = "web-1".into()),
            node: node("web-2", &[]),
            reasons: vec![r#"node name "web-2" is not spec.template.spec.nodeName "web-1""#],
        },
        ReasonCase {
            source: daemon_test!("TestNodeShouldRunDaemonPod/ErrNodeSelectorNotMatch"),
            ds: with(|t| t.node_selector = l(&[("disktype", "ssd"), ("zone", "a")])),
            node: node("n", &[("disktype", "hdd")]),
            reasons: vec![
                "nodeSelector requires label disktype=ssd, node has disktype=hdd",
                "nodeSelector requires label zone=a, node has no label zone",
            ],
        },
        ReasonCase {
            source: SELECTOR_FROM_SET,
            ds: with(|t| t.node_selector = l(&[("edge", "")])),
            node: node("n", &[("edge", "yes")]),
            reasons: vec![
                "nodeSelector requires label edge with an empty value, node has edge=yes",
            ],
        },
        ReasonCase {
            source: daemon_test!("TestNodeShouldRunDaemonPod/ErrPodAffinityNotMatch"),
            ds: with(|t| {
                t.required_node_affinity = aff(vec![
                    ex(vec![nreq("kubernetes.io/arch", "In", &["arm64"])]),
                    ex(vec![
                        nreq("gpu", "Exists", &[]),
                        nreq("cores", "Gt", &["8"]),
                    ]),
                    ex(vec![nreq("zone", "In", &[])]),
                    term(vec![], vec![]),
                    fl(vec![nreq("metadata.name", "NotIn", &["n"])]),
                ])
            }),
            node: node("n", &[("kubernetes.io/arch", "amd64"), ("cores", "4")]),
            reasons: vec![
                "no term of required node affinity matches: \
                 term 0: kubernetes.io/arch In [arm64] (node has amd64); \
                 term 1: gpu Exists (node has no label gpu) and cores Gt [8] (node has 4); \
                 term 2: invalid, so Kubernetes treats it as not matching: matchExpressions[0] \
                 values: for 'in', 'notin' operators, values set can't be empty; \
                 term 3: empty term (no matchExpressions, no matchFields) matches nothing; \
                 term 4: metadata.name NotIn [n] (node name is n)",
            ],
        },
        ReasonCase {
            source: LAZY_MATCH,
            ds: with(|t| t.required_node_affinity = aff(vec![])),
            node: node("n", &[]),
            reasons: vec!["required node affinity has no nodeSelectorTerms, so it matches no node"],
        },
        ReasonCase {
            source: daemon_test!("TestTaintedNodeDaemonDoesNotLaunchIntolerantPod"),
            ds: ds(),
            node: tainted("n", vec![taint("dedicated", "db", "NoSchedule")]),
            reasons: vec![
                r#"taint dedicated=db:NoSchedule is not tolerated (add a toleration: key "dedicated", operator "Equal", value "db", effect "NoSchedule"); a running daemon keeps running, but none is started"#,
            ],
        },
        ReasonCase {
            source: daemon_test!("TestNoExecuteTaintedDoesEvicitRunningIntolerantPod"),
            ds: with(|t| t.tolerations = vec![tol("dedicated", "Equal", "db", "NoSchedule")]),
            node: tainted("n", vec![taint("dedicated", "db", "NoExecute")]),
            reasons: vec![
                r#"taint dedicated=db:NoExecute is not tolerated (add a toleration: key "dedicated", operator "Equal", value "db", effect "NoExecute"); a running daemon would be evicted; toleration (key "dedicated", operator "Equal", value "db", effect "NoSchedule") has effect "NoSchedule", the taint has "NoExecute""#,
            ],
        },
        ReasonCase {
            source: DAEMON_TOLERATIONS,
            ds: ds(),
            node: tainted(
                "n",
                vec![taint("node.kubernetes.io/unreachable", "", "NoSchedule")],
            ),
            reasons: vec![
                r#"taint node.kubernetes.io/unreachable:NoSchedule is not tolerated (add a toleration: key "node.kubernetes.io/unreachable", operator "Exists", effect "NoSchedule"); a running daemon keeps running, but none is started; the automatic DaemonSet toleration (key "node.kubernetes.io/unreachable", operator "Exists", effect "NoExecute") covers only effect NoExecute"#,
            ],
        },
        ReasonCase {
            source: TOLERATES_TAINT,
            ds: with(|t| t.tolerations = vec![tol("dedicated", "Lt", "9", "NoSchedule")]),
            node: tainted("n", vec![taint("dedicated", "5", "NoSchedule")]),
            reasons: vec![
                r#"taint dedicated=5:NoSchedule is not tolerated (add a toleration: key "dedicated", operator "Equal", value "5", effect "NoSchedule"); a running daemon keeps running, but none is started; toleration (key "dedicated", operator "Lt", value "9", effect "NoSchedule") uses operator Lt, which tolerates nothing unless the alpha feature gate TaintTolerationComparisonOperators is on"#,
            ],
        },
        ReasonCase {
            source: SHOULD_RUN,
            ds: with(|t| {
                t.node_name = "web-1".into();
                t.node_selector = l(&[("disktype", "ssd")]);
            }),
            node: Node {
                labels: l(&[("disktype", "hdd")]),
                ..tainted(
                    "web-2",
                    vec![taint("b", "", "NoExecute"), taint("a", "", "NoSchedule")],
                )
            },
            reasons: vec![
                r#"node name "web-2" is not spec.template.spec.nodeName "web-1""#,
                "nodeSelector requires label disktype=ssd, node has disktype=hdd",
                r#"taint b:NoExecute is not tolerated (add a toleration: key "b", operator "Exists", effect "NoExecute"); a running daemon would be evicted"#,
                r#"taint a:NoSchedule is not tolerated (add a toleration: key "a", operator "Exists", effect "NoSchedule"); a running daemon keeps running, but none is started"#,
            ],
        },
    ]
}

#[test]
fn reasons_are_specific() {
    let cases = reason_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let v = placement::evaluate(&c.ds, &c.node);
        if v.reasons != c.reasons {
            failures.push(format!(
                "[{}]\n  want {:#?}\n  got  {:#?}",
                c.source, c.reasons, v.reasons
            ));
        }
    }
    report(failures, cases.len());
}

/// The number of table cases, so a shrinking table is noticed.
#[test]
fn case_count() {
    let total = selector_cases().len()
        + node_selector_cases().len()
        + affinity_cases().len()
        + toleration_cases().len()
        + untolerated_cases().len()
        + defaults_cases().len()
        + eval_cases().len()
        + reason_cases().len();
    assert!(total >= 250, "only {total} cases");
}
