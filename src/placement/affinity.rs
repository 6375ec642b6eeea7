//! `nodeSelector` and required node affinity, as `RequiredNodeAffinity.Match` evaluates them.
//!
//! Mirrors `staging/src/k8s.io/component-helpers/scheduling/corev1/nodeaffinity/nodeaffinity.go`
//! (`NewRequiredNodeAffinity`, `RequiredNodeAffinity.Match`, `LazyErrorNodeSelector`,
//! `nodeSelectorRequirementsAsSelector`, `nodeSelectorRequirementsAsFieldSelector`,
//! `extractNodeFields`) and, for the field requirements, `staging/src/k8s.io/apimachinery/pkg/fields`
//! (`OneTermEqualSelector`, `OneTermNotEqualSelector`, `Set.Get`).
//!
//! Besides the booleans, this module explains a failure in one sentence per failing predicate,
//! for [`super::evaluate`].

use super::selector::{Operator, Requirement, fmt_values};
use crate::spec::{Labels, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};

/// The one field a node exposes to `matchFields` (`metav1.ObjectNameField`).
pub const OBJECT_NAME_FIELD: &str = "metadata.name";

/// `nodeSelector` as `labels.SelectorFromSet(pod.spec.nodeSelector).Matches(node.labels)`
/// (`NewRequiredNodeAffinity` in `nodeaffinity.go`).
///
/// No validation happens here: every `k: v` pair needs label `k` present with exactly the value
/// `v` (`{k: ""}` needs `k` present with an empty value). An empty map matches every node.
pub fn node_selector_matches(node_selector: &Labels, node: &Node) -> bool {
    node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
}

/// One sentence per nodeSelector pair the node does not satisfy, in key order.
pub(crate) fn explain_node_selector(node_selector: &Labels, node: &Node) -> Vec<String> {
    node_selector
        .iter()
        .filter_map(|(k, want)| {
            let required = if want.is_empty() {
                format!("nodeSelector requires label {k} with an empty value")
            } else {
                format!("nodeSelector requires label {k}={want}")
            };
            match node.labels.get(k) {
                Some(have) if have == want => None,
                Some(have) if have.is_empty() => {
                    Some(format!("{required}, node has {k} with an empty value"))
                }
                Some(have) => Some(format!("{required}, node has {k}={have}")),
                None => Some(format!("{required}, node has no label {k}")),
            }
        })
        .collect()
}

/// A `matchFields` requirement after `nodeSelectorRequirementsAsFieldSelector`: In becomes
/// `key == value`, NotIn becomes `key != value`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    key: String,
    equal: bool,
    value: String,
}

impl FieldRequirement {
    /// `fields.Set.Get`: a field the node does not expose reads as `""`.
    fn matches(&self, fields: &[(&str, &str)]) -> bool {
        let have = fields
            .iter()
            .find(|(k, _)| *k == self.key)
            .map_or("", |(_, v)| *v);
        (have == self.value) == self.equal
    }

    fn describe(&self) -> String {
        let op = if self.equal { "In" } else { "NotIn" };
        format!("{} {op} [{}]", self.key, self.value)
    }

    fn observed(&self, node: &Node) -> String {
        if self.key == OBJECT_NAME_FIELD {
            format!("node name is {}", node.name)
        } else {
            format!(
                "node has no field {}, which reads as empty; only {OBJECT_NAME_FIELD} exists",
                self.key
            )
        }
    }
}

/// `nodeSelectorTerm` after `newNodeSelectorTerm`: `None` for a part the term does not have
/// (the `nil` selector that `match` skips).
struct ParsedTerm {
    labels: Option<Vec<Requirement>>,
    fields: Option<Vec<FieldRequirement>>,
}

/// `isEmptyNodeSelectorTerm`: a term with neither matchExpressions nor matchFields selects
/// nothing and is dropped before parsing.
fn is_empty_term(term: &NodeSelectorTerm) -> bool {
    term.match_expressions.is_empty() && term.match_fields.is_empty()
}

/// `extractNodeFields`: `metadata.name`, only when the name is non-empty.
fn node_fields(node: &Node) -> Vec<(&str, &str)> {
    if node.name.is_empty() {
        Vec::new()
    } else {
        vec![(OBJECT_NAME_FIELD, node.name.as_str())]
    }
}

/// An expression's operator as `nodeSelectorRequirementsAsSelector` reads it; `None` for an
/// unknown one.
fn expression_operator(operator: &str) -> Option<Operator> {
    Some(match operator {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::GreaterThan,
        "Lt" => Operator::LessThan,
        _ => return None,
    })
}

/// `nodeSelectorTerm.match` of a term that is not empty, as [`parse_term`] then
/// [`term_failures`] would decide it, without building either: a term that does not parse
/// matches nothing; labels, then fields (skipped when the node has no name). No allocation
/// unless a requirement is invalid.
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    // Every part must parse, whatever matches: a failing match and a parse error both make
    // the term false, so one pass that stops at either is the same decision.
    let labels_ok = term.match_expressions.iter().all(|e| {
        expression_operator(&e.operator).is_some_and(|op| {
            Requirement::is_valid(&e.key, op, &e.values)
                && Requirement::parts_match(&e.key, op, &e.values, &node.labels)
        })
    });
    if !labels_ok {
        return false;
    }
    term.match_fields.iter().all(|f| {
        let equal = match f.operator.as_str() {
            "In" => true,
            "NotIn" => false,
            _ => return false,
        };
        let [value] = f.values.as_slice() else {
            return false;
        };
        // `extractNodeFields`: no fields at all for a node without a name.
        if node.name.is_empty() {
            return true;
        }
        let have = if f.key == OBJECT_NAME_FIELD {
            node.name.as_str()
        } else {
            ""
        };
        (have == value) == equal
    })
}

/// `nodeSelectorRequirementsAsSelector`: every expression is parsed and all errors are kept.
fn parse_expressions(exprs: &[NodeSelectorRequirement]) -> Result<Vec<Requirement>, Vec<String>> {
    let mut errs = Vec::new();
    let mut reqs = Vec::new();
    for (i, expr) in exprs.iter().enumerate() {
        let Some(op) = expression_operator(&expr.operator) else {
            errs.push(format!(
                "matchExpressions[{i}].operator {:?} is not one of In, NotIn, Exists, \
                 DoesNotExist, Gt, Lt",
                expr.operator
            ));
            continue;
        };
        match Requirement::new(&expr.key, op, &expr.values) {
            Ok(r) => reqs.push(r),
            Err(e) => errs.extend(e.into_iter().map(|m| format!("matchExpressions[{i}] {m}"))),
        }
    }
    if errs.is_empty() { Ok(reqs) } else { Err(errs) }
}

/// `nodeSelectorRequirementsAsFieldSelector`: only In and NotIn, each with exactly one value.
/// Neither the key nor the value is validated here (API validation restricts the key to
/// `metadata.name`).
fn parse_fields(exprs: &[NodeSelectorRequirement]) -> Result<Vec<FieldRequirement>, Vec<String>> {
    let mut errs = Vec::new();
    let mut reqs = Vec::new();
    for (i, expr) in exprs.iter().enumerate() {
        let equal = match expr.operator.as_str() {
            "In" => true,
            "NotIn" => false,
            other => {
                errs.push(format!(
                    "matchFields[{i}].operator {other:?} is not one of In, NotIn"
                ));
                continue;
            }
        };
        match expr.values.as_slice() {
            [value] => reqs.push(FieldRequirement {
                key: expr.key.clone(),
                equal,
                value: value.clone(),
            }),
            values => errs.push(format!(
                "matchFields[{i}].values {}: must have one element",
                fmt_values(values)
            )),
        }
    }
    if errs.is_empty() { Ok(reqs) } else { Err(errs) }
}

/// `newNodeSelectorTerm`: parse both parts, keeping every error of both.
fn parse_term(term: &NodeSelectorTerm) -> Result<ParsedTerm, Vec<String>> {
    let mut errs = Vec::new();
    let mut parsed = ParsedTerm {
        labels: None,
        fields: None,
    };
    if !term.match_expressions.is_empty() {
        match parse_expressions(&term.match_expressions) {
            Ok(r) => parsed.labels = Some(r),
            Err(e) => errs.extend(e),
        }
    }
    if !term.match_fields.is_empty() {
        match parse_fields(&term.match_fields) {
            Ok(r) => parsed.fields = Some(r),
            Err(e) => errs.extend(e),
        }
    }
    if errs.is_empty() {
        Ok(parsed)
    } else {
        Err(errs)
    }
}

/// Why one parsed term does not match: the failing requirements, empty when it matches.
/// This is `nodeSelectorTerm.match`: labels first, then fields, the field part skipped when
/// the node has no name.
fn term_failures(term: &ParsedTerm, node: &Node) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(reqs) = &term.labels {
        for r in reqs.iter().filter(|r| !r.matches(&node.labels)) {
            failures.push(format!(
                "{} ({})",
                r.describe(),
                r.observed(&node.labels, "node")
            ));
        }
    }
    let fields = node_fields(node);
    if let Some(reqs) = &term.fields
        && !fields.is_empty()
    {
        for r in reqs.iter().filter(|r| !r.matches(&fields)) {
            failures.push(format!("{} ({})", r.describe(), r.observed(node)));
        }
    }
    failures
}

/// The required node affinity (`spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`)
/// as `LazyErrorNodeSelector.Match` with the error ignored, as the DaemonSet controller does
/// (`nodeaffinity.go`; `predicates` in `pkg/controller/daemon/daemon_controller.go`).
///
/// - `None` (no required affinity) matches every node.
/// - Terms are ORed; within a term all matchExpressions and matchFields are ANDed.
/// - A term with neither matchExpressions nor matchFields matches nothing, so `terms: []` and
///   `terms: [{}]` match no node.
/// - A term that fails to parse (unknown operator, In without values, Gt with a non-integer,
///   invalid key or value, matchFields without exactly one value, ...) counts as not matching;
///   another term can still match.
/// - matchExpressions read node *labels* (a key `metadata.name` is a label); matchFields read
///   node fields, of which only `metadata.name` exists; they are skipped when the node name is
///   empty.
/// - Gt/Lt compare `strconv.ParseInt` values, so leading zeros are fine (`"0204"` is 204) and a
///   non-numeric label never matches.
pub fn required_affinity_matches(affinity: Option<&NodeSelector>, node: &Node) -> bool {
    let Some(selector) = affinity else {
        return true;
    };
    selector
        .terms
        .iter()
        .filter(|t| !is_empty_term(t))
        .any(|t| term_matches(t, node))
}

/// One sentence explaining why the required node affinity rejects the node, `None` when it
/// matches. Every term is described, including terms Kubernetes drops or cannot parse.
pub(crate) fn explain_required_affinity(
    affinity: Option<&NodeSelector>,
    node: &Node,
) -> Option<String> {
    if required_affinity_matches(affinity, node) {
        return None;
    }
    let selector = affinity?;
    if selector.terms.is_empty() {
        return Some(
            "required node affinity has no nodeSelectorTerms, so it matches no node".to_string(),
        );
    }
    let parts: Vec<String> = selector
        .terms
        .iter()
        .enumerate()
        .map(|(i, term)| {
            let why = if is_empty_term(term) {
                "empty term (no matchExpressions, no matchFields) matches nothing".to_string()
            } else {
                match parse_term(term) {
                    Err(errs) => format!(
                        "invalid, so Kubernetes treats it as not matching: {}",
                        errs.join(", ")
                    ),
                    Ok(parsed) => term_failures(&parsed, node).join(" and "),
                }
            };
            format!("term {i}: {why}")
        })
        .collect();
    Some(format!(
        "no term of required node affinity matches: {}",
        parts.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nreq(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Node::default()
        }
    }

    /// `term_matches` (nothing built) decides as parsing the term and finding no failure,
    /// over a grid of operators, keys, value lists, fields and node names, valid or not.
    #[test]
    fn term_matches_is_parse_then_match() {
        let ops = [
            "In",
            "NotIn",
            "Exists",
            "DoesNotExist",
            "Gt",
            "Lt",
            "in",
            "",
        ];
        let keys = ["zone", "cores", "bad key", "metadata.name"];
        let value_lists: [&[&str]; 6] = [&[], &["a"], &["a", "b"], &["8"], &["007"], &["x y"]];
        let mut exprs = vec![];
        for op in ops {
            for key in keys {
                for values in value_lists {
                    exprs.push(nreq(key, op, values));
                }
            }
        }
        let fields = [
            nreq("metadata.name", "In", &["web-1"]),
            nreq("metadata.name", "NotIn", &["web-1"]),
            nreq("metadata.name", "In", &["web-1", "web-2"]),
            nreq("metadata.name", "Exists", &[]),
            nreq("spec.unschedulable", "In", &[""]),
            nreq("spec.unschedulable", "NotIn", &[""]),
        ];
        let nodes = [
            node("web-1", &[("zone", "a"), ("cores", "16")]),
            node("web-2", &[("zone", "b"), ("cores", "x")]),
            node("", &[("metadata.name", "a"), ("cores", "8")]),
            node("web-1", &[]),
        ];
        let check = |term: &NodeSelectorTerm| {
            for n in &nodes {
                let slow = parse_term(term).is_ok_and(|p| term_failures(&p, n).is_empty());
                assert_eq!(term_matches(term, n), slow, "{term:?} on {n:?}");
            }
        };
        for (i, e) in exprs.iter().enumerate() {
            check(&NodeSelectorTerm {
                match_expressions: vec![e.clone()],
                match_fields: vec![],
            });
            // Pairs with a neighbour: an invalid one after a failing one, and the reverse.
            check(&NodeSelectorTerm {
                match_expressions: vec![e.clone(), exprs[(i * 7 + 3) % exprs.len()].clone()],
                match_fields: vec![],
            });
            for f in &fields {
                check(&NodeSelectorTerm {
                    match_expressions: vec![e.clone()],
                    match_fields: vec![f.clone()],
                });
            }
        }
        for f in &fields {
            check(&NodeSelectorTerm {
                match_expressions: vec![],
                match_fields: vec![f.clone()],
            });
        }
    }

    /// nodeaffinity_test.go TestNodeSelectorMatch/"invalid field selector and label selector":
    /// every error of every term is collected.
    #[test]
    fn parse_errors_are_collected_per_term() {
        let bad_fields = NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![nreq("metadata.name", "In", &["host-1", "host-2"])],
        };
        assert_eq!(parse_term(&bad_fields).err().map(|e| e.len()), Some(1));
        let bad_both = NodeSelectorTerm {
            match_expressions: vec![nreq("invalid key", "In", &["v"]), nreq("k", "Foo", &[])],
            match_fields: vec![nreq("metadata.name", "Exists", &[])],
        };
        assert_eq!(parse_term(&bad_both).err().map(|e| e.len()), Some(3));
    }

    #[test]
    fn explanation_names_each_term() {
        let sel = NodeSelector {
            terms: vec![
                NodeSelectorTerm {
                    match_expressions: vec![nreq("kubernetes.io/arch", "In", &["arm64"])],
                    match_fields: vec![],
                },
                NodeSelectorTerm::default(),
                NodeSelectorTerm {
                    match_expressions: vec![],
                    match_fields: vec![nreq("metadata.name", "In", &["web-1"])],
                },
            ],
        };
        let n = node("web-2", &[("kubernetes.io/arch", "amd64")]);
        assert_eq!(
            explain_required_affinity(Some(&sel), &n).unwrap(),
            "no term of required node affinity matches: \
             term 0: kubernetes.io/arch In [arm64] (node has amd64); \
             term 1: empty term (no matchExpressions, no matchFields) matches nothing; \
             term 2: metadata.name In [web-1] (node name is web-2)"
        );
    }

    #[test]
    fn node_selector_explanations() {
        let sel: Labels = [("a", "1"), ("b", ""), ("c", "3"), ("d", "4")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let n = node("n", &[("a", "1"), ("b", "x"), ("c", "")]);
        assert_eq!(
            explain_node_selector(&sel, &n),
            vec![
                "nodeSelector requires label b with an empty value, node has b=x",
                "nodeSelector requires label c=3, node has c with an empty value",
                "nodeSelector requires label d=4, node has no label d",
            ]
        );
    }
}
