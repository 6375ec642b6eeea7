//! Label selectors and label requirements, as `k8s.io/apimachinery` evaluates them.
//!
//! Mirrors `staging/src/k8s.io/apimachinery/pkg/labels/selector.go` (`NewRequirement`,
//! `Requirement.Matches`) and `staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/helpers.go`
//! (`LabelSelectorAsSelector`). The requirement type here is shared with node affinity
//! ([`super::affinity`]), which builds the same requirements with two extra operators (Gt, Lt).
//!
//! Non-goals: the string selector syntax (`labels.Parse`); nothing in hostset reads selectors as
//! strings.

use crate::spec::{LabelSelector, Labels};
use crate::syntax;

/// `selection.Operator`, restricted to the operators a LabelSelector or a NodeSelector can
/// produce (`=` comes from `matchLabels` and from a pod's `nodeSelector` map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operator {
    In,
    NotIn,
    Equals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// The operator as a user writes it in a manifest (`=` for matchLabels).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Equals => "=",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
            Operator::GreaterThan => "Gt",
            Operator::LessThan => "Lt",
        }
    }
}

/// A parsed `labels.Requirement`: only [`Requirement::new`] builds one, so every value in
/// memory passed `NewRequirement`'s checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirement {
    pub(crate) key: String,
    pub(crate) op: Operator,
    pub(crate) values: Vec<String>,
}

/// `strconv.ParseInt(s, 10, 64)`: optional sign, decimal digits, leading zeros allowed, no
/// underscores, int64 range. Rust's `i64::from_str` accepts exactly this language.
pub(crate) fn parse_int(s: &str) -> Option<i64> {
    s.parse::<i64>().ok()
}

/// Formats a value list as `[a, b]` for messages.
pub(crate) fn fmt_values(values: &[String]) -> String {
    format!("[{}]", values.join(", "))
}

impl Requirement {
    /// `labels.NewRequirement`: validates the key, the number of values for the operator, that
    /// Gt/Lt values parse as int64, and that every value is a valid label value. All problems
    /// are returned, in Kubernetes' order (key, operator/values, then each value).
    pub(crate) fn new(key: &str, op: Operator, values: &[String]) -> Result<Self, Vec<String>> {
        let errs = Self::problems(key, op, values);
        if errs.is_empty() {
            Ok(Requirement {
                key: key.to_string(),
                op,
                values: values.to_vec(),
            })
        } else {
            Err(errs)
        }
    }

    /// Whether [`Requirement::new`] accepts these parts, without building anything (the
    /// placement hot path: no allocation unless the requirement is invalid).
    pub(crate) fn is_valid(key: &str, op: Operator, values: &[String]) -> bool {
        let count_ok = match op {
            Operator::In | Operator::NotIn => !values.is_empty(),
            Operator::Equals => values.len() == 1,
            Operator::Exists | Operator::DoesNotExist => values.is_empty(),
            Operator::GreaterThan | Operator::LessThan => {
                values.len() == 1 && values.iter().all(|v| parse_int(v).is_some())
            }
        };
        count_ok
            && syntax::is_qualified_name(key).is_empty()
            && values
                .iter()
                .all(|v| syntax::is_valid_label_value(v).is_empty())
    }

    /// Everything [`Requirement::new`] finds wrong with these parts (empty when valid).
    fn problems(key: &str, op: Operator, values: &[String]) -> Vec<String> {
        let mut errs = Vec::new();
        let key_errs = syntax::is_qualified_name(key);
        if !key_errs.is_empty() {
            errs.push(format!("key {key:?}: {}", key_errs.join("; ")));
        }
        match op {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errs.push(
                        "values: for 'in', 'notin' operators, values set can't be empty".into(),
                    );
                }
            }
            Operator::Equals => {
                if values.len() != 1 {
                    errs.push("values: exact-match compatibility requires one single value".into());
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errs.push(format!(
                        "values {}: values set must be empty for exists and does not exist",
                        fmt_values(values)
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(format!(
                        "values {}: for 'Gt', 'Lt' operators, exactly one value is required",
                        fmt_values(values)
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if parse_int(v).is_none() {
                        errs.push(format!(
                            "values[{i}] {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                        ));
                    }
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            let value_errs = syntax::is_valid_label_value(v);
            if !value_errs.is_empty() {
                errs.push(format!("values[{i}] {v:?}: {}", value_errs.join("; ")));
            }
        }
        errs
    }

    /// `Requirement.Matches`.
    ///
    /// - In / `=`: the key is present and its value is in the set.
    /// - NotIn: the key is absent, or its value is not in the set.
    /// - Exists / DoesNotExist: presence only; an empty value counts as present.
    /// - Gt / Lt: the key is present, its value parses as int64, strict comparison. A
    ///   non-numeric label value never matches.
    pub(crate) fn matches(&self, labels: &Labels) -> bool {
        Self::parts_match(&self.key, self.op, &self.values, labels)
    }

    /// [`Requirement::matches`] of the parts of a requirement (that [`Requirement::is_valid`]
    /// accepts), without building it.
    pub(crate) fn parts_match(key: &str, op: Operator, values: &[String], labels: &Labels) -> bool {
        let value = labels.get(key);
        match op {
            Operator::In | Operator::Equals => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = value.and_then(|v| parse_int(v)) else {
                    return false;
                };
                let [want] = values else {
                    return false;
                };
                let Some(want) = parse_int(want) else {
                    return false;
                };
                if op == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }

    /// The requirement as written, e.g. `zone In [a, b]` or `gpu Exists`.
    pub(crate) fn describe(&self) -> String {
        match self.op {
            Operator::Exists | Operator::DoesNotExist => {
                format!("{} {}", self.key, self.op.as_str())
            }
            Operator::Equals => format!("{}={}", self.key, self.values.join(",")),
            _ => format!(
                "{} {} {}",
                self.key,
                self.op.as_str(),
                fmt_values(&self.values)
            ),
        }
    }

    /// What the labels hold for this requirement's key, for a failure message:
    /// `node has amd64`, `node has no label zone`, `node has "abc", which is not an integer`.
    pub(crate) fn observed(&self, labels: &Labels, owner: &str) -> String {
        match labels.get(&self.key) {
            None => format!("{owner} has no label {}", self.key),
            Some(v) if matches!(self.op, Operator::GreaterThan | Operator::LessThan) => {
                if parse_int(v).is_some() {
                    format!("{owner} has {v}")
                } else {
                    format!("{owner} has {v:?}, which is not an integer")
                }
            }
            Some(v) if v.is_empty() => format!("{owner} has {} with an empty value", self.key),
            Some(v) if matches!(self.op, Operator::Exists | Operator::DoesNotExist) => {
                format!("{owner} has {}={v}", self.key)
            }
            Some(v) => format!("{owner} has {v}"),
        }
    }
}

/// `metav1.LabelSelectorAsSelector` up to the requirements: matchLabels first (as `=`), then
/// matchExpressions in order. Stops at the first bad requirement, as Kubernetes does. The
/// operators are only In, NotIn, Exists and DoesNotExist, compared case-sensitively.
fn selector_requirements(sel: &LabelSelector) -> Result<Vec<Requirement>, String> {
    let mut reqs = Vec::with_capacity(sel.match_labels.len() + sel.match_expressions.len());
    for (k, v) in &sel.match_labels {
        let r = Requirement::new(k, Operator::Equals, std::slice::from_ref(v))
            .map_err(|errs| format!("matchLabels {k:?}: {}", errs.join(", ")))?;
        reqs.push(r);
    }
    for (i, expr) in sel.match_expressions.iter().enumerate() {
        let op = match expr.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(format!(
                    "matchExpressions[{i}]: {other:?} is not a valid label selector operator"
                ));
            }
        };
        let r = Requirement::new(&expr.key, op, &expr.values)
            .map_err(|errs| format!("matchExpressions[{i}]: {}", errs.join(", ")))?;
        reqs.push(r);
    }
    Ok(reqs)
}

/// `metav1.LabelSelectorAsSelector(sel)` followed by `Selector.Matches(labels)`
/// (`staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/helpers.go`).
///
/// - `None` is the nil selector, `labels.Nothing()`: it matches nothing.
/// - A selector with no matchLabels and no matchExpressions is `labels.Everything()`.
/// - Otherwise every requirement must hold (AND); the labels may be a superset.
///
/// # Errors
/// The message of the first requirement that `labels.NewRequirement` rejects (invalid key or
/// value, In/NotIn without values, Exists/DoesNotExist with values), or of an operator other than
/// In, NotIn, Exists, DoesNotExist (`Gt`/`Lt` included: label selectors do not have them).
pub fn label_selector_matches(
    sel: Option<&LabelSelector>,
    labels: &Labels,
) -> Result<bool, String> {
    let Some(sel) = sel else {
        return Ok(false);
    };
    let reqs = selector_requirements(sel)?;
    Ok(reqs.iter().all(|r| r.matches(labels)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn vals(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// staging/src/k8s.io/apimachinery/pkg/labels/selector_test.go TestRequirementConstructor
    #[test]
    fn requirement_constructor() {
        let ok = |k: &str, op, v: &[&str]| Requirement::new(k, op, &vals(v)).is_ok();
        assert!(!ok("x1", Operator::In, &[]));
        assert!(!ok("x2", Operator::NotIn, &[]));
        assert!(ok("x3", Operator::In, &["foo"]));
        assert!(ok("x4", Operator::NotIn, &["foo"]));
        assert!(!ok("x5", Operator::Equals, &["bar", "foo"]));
        assert!(ok("x6", Operator::Exists, &[]));
        assert!(ok("x7", Operator::DoesNotExist, &[]));
        assert!(!ok("x8", Operator::Exists, &["foo"]));
        assert!(ok("x11", Operator::GreaterThan, &["1"]));
        assert!(ok("x12", Operator::LessThan, &["6"]));
        assert!(!ok("x13", Operator::GreaterThan, &[]));
        assert!(!ok("x14", Operator::GreaterThan, &["bar"]));
        assert!(!ok("x15", Operator::LessThan, &["bar"]));
        assert!(!ok(&"a".repeat(254), Operator::Exists, &[]));
        assert!(!ok("x16", Operator::Equals, &[&"a".repeat(254)]));
        assert!(!ok("x17", Operator::Equals, &["a b"]));
    }

    /// All problems of one requirement are reported, key first.
    #[test]
    fn requirement_reports_every_problem() {
        let errs = Requirement::new("bad key", Operator::In, &vals(&["a b"])).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("key \"bad key\""), "{errs:?}");
        assert!(errs[1].starts_with("values[0] \"a b\""), "{errs:?}");
    }

    /// ParseInt semantics: sign and leading zeros are fine, underscores and blanks are not.
    #[test]
    fn parse_int_is_go_parse_int() {
        assert_eq!(parse_int("0204"), Some(204));
        assert_eq!(parse_int("+7"), Some(7));
        assert_eq!(parse_int("-7"), Some(-7));
        assert_eq!(parse_int("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int("9223372036854775808"), None);
        assert_eq!(parse_int("1_000"), None);
        assert_eq!(parse_int(""), None);
        assert_eq!(parse_int(" 1"), None);
        assert_eq!(parse_int("+"), None);
    }

    #[test]
    fn describe_and_observed() {
        let r = Requirement::new("kubernetes.io/arch", Operator::In, &vals(&["arm64"])).unwrap();
        assert_eq!(r.describe(), "kubernetes.io/arch In [arm64]");
        assert_eq!(
            r.observed(&labels(&[("kubernetes.io/arch", "amd64")]), "node"),
            "node has amd64"
        );
        assert_eq!(
            r.observed(&Labels::new(), "node"),
            "node has no label kubernetes.io/arch"
        );
        let gt = Requirement::new("cores", Operator::GreaterThan, &vals(&["4"])).unwrap();
        assert_eq!(
            gt.observed(&labels(&[("cores", "many")]), "node"),
            "node has \"many\", which is not an integer"
        );
    }
}
