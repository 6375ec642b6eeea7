//! hostset: Kubernetes DaemonSet semantics for plain systemd hosts.
//!
//! # Layout
//! - [`syntax`]: Kubernetes name and label syntax (DNS-1123, qualified names, label values).
//! - [`quantity`]: Kubernetes resource quantities (`100m`, `200Mi`, `1e3`).
//! - [`spec`]: the daemonset and node model, the decoders (native TOML, Kubernetes YAML/JSON)
//!   and validation with file/line/field-path diagnostics.
//! - [`placement`]: the DaemonSet controller's `shouldRun` / `shouldContinueRunning`.
//! - [`node`]: node files (`node.toml`, Kubernetes `v1` Node) and the host facts behind
//!   the automatic labels.
//! - `cli` (feature `cli`): the `hostset` command line.
//!
//! The decisions are pure functions over plain data; the only side effects in the
//! library core are reading the files and host facts they are asked to read
//! (`spec::read_daemonsets`, `node::read_node`, `node::HostFacts::detect`).

#[cfg(feature = "cli")]
pub mod cli;
pub mod node;
pub mod placement;
pub mod quantity;
pub mod spec;
pub mod syntax;
