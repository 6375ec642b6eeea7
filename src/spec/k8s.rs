//! Kubernetes apps/v1 DaemonSet manifests (placeholder while being written).
use super::decode::Cx;
use super::doc::Node;
use super::model::DaemonSet;

pub fn decode_daemonset(cx: &mut Cx, root: &Node) -> Option<DaemonSet> {
    cx.error("", Some(root.pos), "Kubernetes manifests are not read yet");
    None
}
