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
    let template = &ds.template;
    let mut reasons = Vec::new();

    let fits_node_name = template.node_name.is_empty() || template.node_name == node.name;
    if !fits_node_name {
        reasons.push(format!(
            "node name {:?} is not spec.template.spec.nodeName {:?}",
            node.name, template.node_name
        ));
    }

    let fits_node_selector = affinity::node_selector_matches(&template.node_selector, node);
    if !fits_node_selector {
        reasons.extend(affinity::explain_node_selector(
            &template.node_selector,
            node,
        ));
    }

    let affinity = template.required_node_affinity.as_ref();
    let fits_affinity = affinity::required_affinity_matches(affinity, node);
    if let Some(why) = affinity::explain_required_affinity(affinity, node) {
        reasons.push(why);
    }

    let tolerations = taints::daemon_tolerations(template);
    let untolerated = taints::untolerated_taints(&node.taints, &tolerations, |t: &Taint| {
        t.effect == taints::EFFECT_NO_SCHEDULE || t.effect == taints::EFFECT_NO_EXECUTE
    });
    for taint in &untolerated {
        reasons.push(taints::explain_untolerated(
            taint,
            &tolerations,
            template.host_network,
        ));
    }

    let (should_run, should_continue_running) =
        if !fits_node_name || !fits_node_selector || !fits_affinity {
            (false, false)
        } else if !untolerated.is_empty() {
            let untolerated_no_execute = untolerated
                .iter()
                .any(|t| t.effect == taints::EFFECT_NO_EXECUTE);
            (false, !untolerated_no_execute)
        } else {
            (true, true)
        };

    Verdict {
        should_run,
        should_continue_running,
        reasons,
    }
}
