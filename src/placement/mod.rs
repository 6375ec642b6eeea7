//! The DaemonSet controller's per-node placement decision.
//!
//! [`evaluate`] is `NodeShouldRunDaemonPod` from `pkg/controller/daemon/daemon_controller.go`:
//! given one daemonset and one node it says whether a daemon should be started there
//! (`shouldRun`) and whether an already running one may stay (`shouldContinueRunning`).
//! The building blocks live in submodules, each mirroring the Kubernetes code it is named after:
//!
//! - [`selector`]: `metav1.LabelSelectorAsSelector` and `labels.Requirement`.
//! - [`affinity`]: `nodeSelector` and required node affinity (`RequiredNodeAffinity.Match`).
//! - [`taints`]: `ToleratesTaint`, `FindMatchingUntoleratedTaint` and the automatic DaemonSet
//!   tolerations.
//!
//! Everything here is pure. Inputs the decision does not use, as in Kubernetes:
//! `node.unschedulable` (only the `node.kubernetes.io/unschedulable` taint counts, and it is
//! tolerated automatically), `PreferNoSchedule` taints, `tolerationSeconds`, resources, ports
//! and other daemons on the node.

pub mod affinity;
pub mod selector;
pub mod taints;

use crate::spec::{DaemonSet, Node, Taint};

/// The outcome of [`evaluate`]: Kubernetes' two booleans plus the reasons behind them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `shouldRun`: start a daemon on this node if none runs there.
    pub should_run: bool,
    /// `shouldContinueRunning`: keep a daemon that already runs there. Always true when
    /// `should_run` is.
    pub should_continue_running: bool,
    /// One sentence per failing predicate, in evaluation order (node name, nodeSelector pairs
    /// in key order, required node affinity, untolerated taints in node order). Empty exactly
    /// when `should_run` is true.
    pub reasons: Vec<String>,
}

/// `NodeShouldRunDaemonPod(node, ds)` (`pkg/controller/daemon/daemon_controller.go`, with
/// `predicates` and `NewPod`).
///
/// 1. `spec.template.spec.nodeName` set and different from the node's name: (false, false).
/// 2. nodeSelector AND required node affinity do not match
///    ([`affinity::node_selector_matches`], [`affinity::required_affinity_matches`]; affinity
///    parse errors ignored): (false, false).
/// 3. A NoSchedule or NoExecute taint is not tolerated by the template's tolerations plus the
///    automatic DaemonSet ones ([`taints::daemon_tolerations`]): (false, true) when only
///    NoSchedule taints are untolerated, (false, false) when a NoExecute one is.
/// 4. Otherwise (true, true).
///
/// The booleans are exactly Kubernetes'. The reasons explain *every* failing predicate, even
/// those Kubernetes does not look at after an earlier failure, so one run shows everything to
/// fix.
pub fn evaluate(ds: &DaemonSet, node: &Node) -> Verdict {
    let (should_run, should_continue_running) = decide(ds, node);
    let reasons = if should_run {
        Vec::new()
    } else {
        explain(ds, node)
    };
    Verdict {
        should_run,
        should_continue_running,
        reasons,
    }
}

/// [`evaluate`]'s two booleans, `(shouldRun, shouldContinueRunning)`, without the reasons:
/// what a caller that only counts needs. Builds nothing (no allocation unless an affinity
/// requirement is invalid): the template's tolerations and the automatic ones are consulted
/// in place ([`taints::daemon_tolerates`]), affinity terms are matched without being parsed
/// into new values.
pub fn decide(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    let template = &ds.template;
    let fits = (template.node_name.is_empty() || template.node_name == node.name)
        && affinity::node_selector_matches(&template.node_selector, node)
        && affinity::required_affinity_matches(template.required_node_affinity.as_ref(), node);
    if !fits {
        return (false, false);
    }
    let mut untolerated_no_schedule = false;
    for taint in &node.taints {
        let counted =
            taint.effect == taints::EFFECT_NO_SCHEDULE || taint.effect == taints::EFFECT_NO_EXECUTE;
        if counted && !taints::daemon_tolerates(template, taint) {
            if taint.effect == taints::EFFECT_NO_EXECUTE {
                return (false, false);
            }
            untolerated_no_schedule = true;
        }
    }
    if untolerated_no_schedule {
        (false, true)
    } else {
        (true, true)
    }
}

/// One sentence per failing predicate, in [`Verdict::reasons`]' order; empty when the node
/// fits.
fn explain(ds: &DaemonSet, node: &Node) -> Vec<String> {
    let template = &ds.template;
    let mut reasons = Vec::new();
    if !(template.node_name.is_empty() || template.node_name == node.name) {
        reasons.push(format!(
            "node name {:?} is not spec.template.spec.nodeName {:?}",
            node.name, template.node_name
        ));
    }
    if !affinity::node_selector_matches(&template.node_selector, node) {
        reasons.extend(affinity::explain_node_selector(
            &template.node_selector,
            node,
        ));
    }
    if let Some(why) =
        affinity::explain_required_affinity(template.required_node_affinity.as_ref(), node)
    {
        reasons.push(why);
    }
    let counted =
        |t: &Taint| t.effect == taints::EFFECT_NO_SCHEDULE || t.effect == taints::EFFECT_NO_EXECUTE;
    let mut untolerated = node
        .taints
        .iter()
        .filter(|t| counted(t) && !taints::daemon_tolerates(template, t))
        .peekable();
    if untolerated.peek().is_some() {
        // Only now the merged list, for the near-miss hints.
        let tolerations = taints::daemon_tolerations(template);
        let automatic = taints::automatic_tolerations(template.host_network);
        for taint in untolerated {
            reasons.push(taints::explain_untolerated(taint, &tolerations, &automatic));
        }
    }
    reasons
}
