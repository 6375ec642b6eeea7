//! Taints, tolerations and the DaemonSet's automatic tolerations.
//!
//! Mirrors `staging/src/k8s.io/api/core/v1/toleration.go` (`ToleratesTaint`, `MatchToleration`),
//! `staging/src/k8s.io/component-helpers/scheduling/corev1/helpers.go`
//! (`FindMatchingUntoleratedTaint`, `TolerationsTolerateTaint`),
//! `pkg/controller/daemon/util/daemonset_util.go` (`AddOrUpdateDaemonPodTolerations`) and
//! `pkg/apis/core/v1/helper/helpers.go` (`AddOrUpdateTolerationInPodSpec`).
//!
//! Default feature gates are assumed: toleration operators `Lt`/`Gt` (alpha gate
//! `TaintTolerationComparisonOperators`) never tolerate anything. `tolerationSeconds` is never
//! consulted: time-bounded eviction belongs to the taint-eviction controller, not to placement.

use crate::spec::{PodTemplate, Taint, Toleration};

/// `v1.TaintNodeNotReady` (`staging/src/k8s.io/api/core/v1/well_known_taints.go`).
pub const TAINT_NODE_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// `v1.TaintNodeUnreachable` (`well_known_taints.go`).
pub const TAINT_NODE_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// `v1.TaintNodeUnschedulable` (`well_known_taints.go`).
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// `v1.TaintNodeMemoryPressure` (`well_known_taints.go`).
pub const TAINT_NODE_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// `v1.TaintNodeDiskPressure` (`well_known_taints.go`).
pub const TAINT_NODE_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// `v1.TaintNodeNetworkUnavailable` (`well_known_taints.go`).
pub const TAINT_NODE_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
/// `v1.TaintNodePIDPressure` (`well_known_taints.go`).
pub const TAINT_NODE_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// `v1.TaintNodeOutOfService` (`well_known_taints.go`); no automatic toleration covers it.
pub const TAINT_NODE_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// `v1.TaintEffectNoSchedule` (`staging/src/k8s.io/api/core/v1/types.go`).
pub const EFFECT_NO_SCHEDULE: &str = "NoSchedule";
/// `v1.TaintEffectPreferNoSchedule` (`types.go`); placement ignores it.
pub const EFFECT_PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";
/// `v1.TaintEffectNoExecute` (`types.go`).
pub const EFFECT_NO_EXECUTE: &str = "NoExecute";

/// `Toleration.ToleratesTaint(logger, taint, enableComparisonOperators=false)`
/// (`staging/src/k8s.io/api/core/v1/toleration.go`).
///
/// 1. A non-empty toleration effect must equal the taint's; an empty one matches every effect.
/// 2. A non-empty toleration key must equal the taint's; an empty one matches every key,
///    whatever the operator.
/// 3. Operator `""` or `Equal`: exact, case-sensitive value comparison (`""` equals `""`).
///    `Exists`: any value. `Lt`/`Gt`: false (alpha gate off). Anything else: false.
///
/// `tolerationSeconds` is not consulted.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if !t.effect.is_empty() && t.effect != taint.effect {
        return false;
    }
    if !t.key.is_empty() && t.key != taint.key {
        return false;
    }
    match t.operator.as_str() {
        "" | "Equal" => t.value == taint.value,
        "Exists" => true,
        // "Lt" | "Gt" need the TaintTolerationComparisonOperators gate, off by default.
        _ => false,
    }
}

/// `Toleration.MatchToleration`: same key, effect, operator and value
/// (`staging/src/k8s.io/api/core/v1/toleration.go`). `tolerationSeconds` is not compared.
pub(crate) fn match_toleration(a: &Toleration, b: &Toleration) -> bool {
    a.key == b.key && a.effect == b.effect && a.operator == b.operator && a.value == b.value
}

/// `v1helper.AddOrUpdateTolerationInPodSpec` (`pkg/apis/core/v1/helper/helpers.go`).
///
/// Every toleration that `MatchToleration`-equals `toleration` is replaced by it in place; if
/// none does, it is appended. If one of them is already deeply equal (same
/// `tolerationSeconds` too), the list is left exactly as it was. Returns whether it changed.
pub(crate) fn add_or_update_toleration(
    list: &mut Vec<Toleration>,
    toleration: &Toleration,
) -> bool {
    let mut updated = false;
    let mut out = Vec::with_capacity(list.len() + 1);
    for existing in list.iter() {
        if match_toleration(toleration, existing) {
            if existing == toleration {
                return false;
            }
            out.push(toleration.clone());
            updated = true;
        } else {
            out.push(existing.clone());
        }
    }
    if !updated {
        out.push(toleration.clone());
    }
    *list = out;
    true
}

fn exists(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: key.to_string(),
        operator: "Exists".to_string(),
        value: String::new(),
        effect: effect.to_string(),
        toleration_seconds: None,
    }
}

/// The tolerations `AddOrUpdateDaemonPodTolerations` adds, in its order: not-ready and
/// unreachable for NoExecute; disk-, memory-, pid-pressure and unschedulable for NoSchedule;
/// network-unavailable for NoSchedule only with `hostNetwork`. All `Exists`, no value, no
/// `tolerationSeconds`.
pub(crate) fn automatic_tolerations(host_network: bool) -> Vec<Toleration> {
    let n = if host_network {
        AUTOMATIC.len()
    } else {
        AUTOMATIC.len() - 1
    };
    AUTOMATIC[..n]
        .iter()
        .map(|(key, effect)| exists(key, effect))
        .collect()
}

/// The tolerations a daemon pod carries: the template's, with the automatic DaemonSet
/// tolerations merged in one by one (`util.AddOrUpdateDaemonPodTolerations` in
/// `pkg/controller/daemon/util/daemonset_util.go`, called from `NewPod` and
/// `CreatePodTemplate`).
///
/// Merging uses `AddOrUpdateTolerationInPodSpec`: a user toleration with the same key, effect,
/// operator and value as a default is replaced by the (infinite) default, so its
/// `tolerationSeconds` is lost; a user toleration differing in operator or value stays, and the
/// default is appended after the user's list.
pub fn daemon_tolerations(template: &PodTemplate) -> Vec<Toleration> {
    let mut list = template.tolerations.clone();
    for t in automatic_tolerations(template.host_network) {
        add_or_update_toleration(&mut list, &t);
    }
    list
}

/// The (key, effect) of each automatic DaemonSet toleration, in [`automatic_tolerations`]'
/// order (all `Exists`); the last only with `hostNetwork`.
const AUTOMATIC: [(&str, &str); 7] = [
    (TAINT_NODE_NOT_READY, EFFECT_NO_EXECUTE),
    (TAINT_NODE_UNREACHABLE, EFFECT_NO_EXECUTE),
    (TAINT_NODE_DISK_PRESSURE, EFFECT_NO_SCHEDULE),
    (TAINT_NODE_MEMORY_PRESSURE, EFFECT_NO_SCHEDULE),
    (TAINT_NODE_PID_PRESSURE, EFFECT_NO_SCHEDULE),
    (TAINT_NODE_UNSCHEDULABLE, EFFECT_NO_SCHEDULE),
    (TAINT_NODE_NETWORK_UNAVAILABLE, EFFECT_NO_SCHEDULE),
];

/// Whether the daemon pod's tolerations ([`daemon_tolerations`] of `template`) tolerate
/// `taint`, without building them: the merge only replaces a template toleration by an
/// automatic one that `MatchToleration`-equals it (same key, effect, operator and value, so
/// the same [`tolerates`]) or appends the automatic one, so the merged list tolerates exactly
/// what the template's list or the automatic tolerations tolerate.
pub fn daemon_tolerates(template: &PodTemplate, taint: &Taint) -> bool {
    template.tolerations.iter().any(|t| tolerates(t, taint))
        || automatically_tolerated(taint, template.host_network)
}

/// Whether an automatic DaemonSet toleration tolerates `taint`.
fn automatically_tolerated(taint: &Taint, host_network: bool) -> bool {
    let n = if host_network {
        AUTOMATIC.len()
    } else {
        AUTOMATIC.len() - 1
    };
    AUTOMATIC[..n]
        .iter()
        .any(|(key, effect)| taint.key == *key && taint.effect == *effect)
}

/// `v1helper.FindMatchingUntoleratedTaint(taints, tolerations, filter)`
/// (`staging/src/k8s.io/component-helpers/scheduling/corev1/helpers.go`), extended to return
/// every taint that passes `filter` and that no toleration tolerates (per [`tolerates`]), in
/// node order. Kubernetes returns only the first of them; "some taint is untolerated" is
/// `!result.is_empty()`.
pub fn untolerated_taints<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Vec<&'a Taint> {
    taints
        .iter()
        .filter(|taint| filter(taint))
        .filter(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
        .collect()
}

/// `key "k", operator "Equal", value "v", effect "E"` (value left out when empty).
fn describe_toleration(t: &Toleration) -> String {
    let mut s = format!("key {:?}, operator {:?}", t.key, t.operator);
    if !t.value.is_empty() {
        s.push_str(&format!(", value {:?}", t.value));
    }
    s.push_str(&format!(", effect {:?}", t.effect));
    s
}

/// The toleration that would tolerate `taint` and nothing with another key or effect.
fn suggested_toleration(taint: &Taint) -> Toleration {
    if taint.value.is_empty() {
        exists(&taint.key, &taint.effect)
    } else {
        Toleration {
            key: taint.key.clone(),
            operator: "Equal".to_string(),
            value: taint.value.clone(),
            effect: taint.effect.clone(),
            toleration_seconds: None,
        }
    }
}

/// Why a toleration that looks meant for `taint` does not tolerate it, if it looks meant for it
/// (same key, or same key up to case).
fn near_miss(t: &Toleration, taint: &Taint, automatic: bool) -> Option<String> {
    if t.key.is_empty() || tolerates(t, taint) {
        return None;
    }
    let who = if automatic {
        format!(
            "the automatic DaemonSet toleration ({})",
            describe_toleration(t)
        )
    } else {
        format!("toleration ({})", describe_toleration(t))
    };
    if t.key != taint.key {
        return t.key.eq_ignore_ascii_case(&taint.key).then(|| {
            format!(
                "{who} differs from the taint key {:?} only in case; keys are case-sensitive",
                taint.key
            )
        });
    }
    if !t.effect.is_empty() && t.effect != taint.effect {
        return Some(if automatic {
            format!("{who} covers only effect {}", t.effect)
        } else {
            format!(
                "{who} has effect {:?}, the taint has {:?}",
                t.effect, taint.effect
            )
        });
    }
    Some(match t.operator.as_str() {
        "" | "Equal" => {
            let case = if t.value.eq_ignore_ascii_case(&taint.value) {
                "; values are case-sensitive"
            } else {
                ""
            };
            format!(
                "{who} wants value {:?}, the taint has {:?}{case}",
                t.value, taint.value
            )
        }
        "Lt" | "Gt" => format!(
            "{who} uses operator {}, which tolerates nothing unless the alpha feature gate \
             TaintTolerationComparisonOperators is on",
            t.operator
        ),
        other => format!("{who} has operator {other:?}, which tolerates nothing"),
    })
}

/// One sentence for an untolerated taint: what to add, what happens to a running daemon for
/// NoExecute, and which existing tolerations nearly match and why they do not.
/// `automatic` is [`automatic_tolerations`] of the template.
pub(crate) fn explain_untolerated(
    taint: &Taint,
    tolerations: &[Toleration],
    automatic: &[Toleration],
) -> String {
    let mut s = format!(
        "taint {taint} is not tolerated (add a toleration: {})",
        describe_toleration(&suggested_toleration(taint))
    );
    if taint.effect == EFFECT_NO_EXECUTE {
        s.push_str("; a running daemon would be evicted");
    } else {
        s.push_str("; a running daemon keeps running, but none is started");
    }
    for t in tolerations {
        if let Some(hint) = near_miss(t, taint, automatic.contains(t)) {
            s.push_str("; ");
            s.push_str(&hint);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(key: &str, op: &str, value: &str, effect: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: key.into(),
            operator: op.into(),
            value: value.into(),
            effect: effect.into(),
            toleration_seconds: secs,
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        }
    }

    /// AddOrUpdateTolerationInPodSpec: a deep-equal entry stops the update altogether, even
    /// when an earlier entry was a MatchToleration-equal one with other seconds.
    #[test]
    fn add_or_update_stops_on_deep_equal() {
        let default = tol(TAINT_NODE_NOT_READY, "Exists", "", "NoExecute", None);
        let with_secs = tol(TAINT_NODE_NOT_READY, "Exists", "", "NoExecute", Some(300));
        let mut list = vec![with_secs.clone(), default.clone()];
        assert!(!add_or_update_toleration(&mut list, &default));
        assert_eq!(list, vec![with_secs.clone(), default.clone()]);

        let mut list = vec![with_secs.clone(), with_secs];
        assert!(add_or_update_toleration(&mut list, &default));
        assert_eq!(list, vec![default.clone(), default]);
    }

    /// `daemon_tolerates` (no list built) decides exactly as `tolerates` over the merged
    /// `daemon_tolerations`, over a grid of template tolerations and taints that hits every
    /// automatic toleration, near misses of them and replacements by MatchToleration.
    #[test]
    fn daemon_tolerates_is_the_merged_list() {
        let keys = [
            "",
            TAINT_NODE_NOT_READY,
            TAINT_NODE_NETWORK_UNAVAILABLE,
            TAINT_NODE_DISK_PRESSURE,
            "example.com/gpu",
        ];
        let effects = ["", "NoSchedule", "NoExecute", "PreferNoSchedule"];
        let ops = ["", "Equal", "Exists", "Lt"];
        let values = ["", "v"];
        let mut singles = vec![];
        for k in keys {
            for e in effects {
                for o in ops {
                    for v in values {
                        singles.push(tol(k, o, v, e, (v == "v").then_some(30)));
                    }
                }
            }
        }
        let mut taints = vec![];
        for k in keys.iter().filter(|k| !k.is_empty()) {
            for e in &effects[1..] {
                for v in values {
                    taints.push(taint(k, v, e));
                }
            }
        }
        for host_network in [false, true] {
            for (i, first) in singles.iter().enumerate() {
                // One toleration, or two (the next one too).
                for n in 1..=2 {
                    let template = PodTemplate {
                        tolerations: singles.iter().skip(i).take(n).cloned().collect(),
                        host_network,
                        ..PodTemplate::default()
                    };
                    let merged = daemon_tolerations(&template);
                    for t in &taints {
                        assert_eq!(
                            daemon_tolerates(&template, t),
                            merged.iter().any(|m| tolerates(m, t)),
                            "{first:?} (+{}) hostNetwork {host_network}, taint {t}",
                            n - 1
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn explanation_for_not_ready_no_schedule() {
        let t = taint(TAINT_NODE_NOT_READY, "", "NoSchedule");
        let tols = automatic_tolerations(false);
        assert_eq!(
            explain_untolerated(&t, &tols, &automatic_tolerations(false)),
            "taint node.kubernetes.io/not-ready:NoSchedule is not tolerated (add a toleration: \
             key \"node.kubernetes.io/not-ready\", operator \"Exists\", effect \"NoSchedule\"); \
             a running daemon keeps running, but none is started; the automatic DaemonSet \
             toleration (key \"node.kubernetes.io/not-ready\", operator \"Exists\", effect \
             \"NoExecute\") covers only effect NoExecute"
        );
    }

    #[test]
    fn explanation_hints() {
        let t = taint("dedicated", "db", "NoExecute");
        let tols = vec![
            tol("Dedicated", "Equal", "db", "NoExecute", None),
            tol("dedicated", "Equal", "DB", "NoExecute", None),
            tol("dedicated", "Gt", "1", "", None),
            tol("other", "Exists", "", "", None),
        ];
        let s = explain_untolerated(&t, &tols, &automatic_tolerations(false));
        assert!(s.contains("a running daemon would be evicted"), "{s}");
        assert!(s.contains("only in case; keys are case-sensitive"), "{s}");
        assert!(s.contains("values are case-sensitive"), "{s}");
        assert!(s.contains("TaintTolerationComparisonOperators"), "{s}");
        assert!(!s.contains("\"other\""), "{s}");
    }
}
