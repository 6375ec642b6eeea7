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
//! - [`unit`]: a daemonset as a transient systemd unit (properties, revision, markers).
//! - [`plan`]: the agent's decisions: desired specs + node + observed units → actions.
//! - [`probe`]: kubelet's probe thresholds and timing as a pure state machine.
//! - [`report`]: what an agent says about its node (status file, the coordinator's input).
//! - [`api`]: the coordinator's read API types.
//! - [`fleet`]: fleet-wide status arithmetic (Kubernetes' DaemonSetStatus) from agents' reports.
//! - [`config_file`]: what the daemons' TOML configuration files share (errors with file,
//!   line and key; value checks; the `[source.git]` section).
//! - `coordinator` (feature `coordinator`): the coordinator service.
//! - `systemd` (feature `systemd`): the narrow trait over systemd's D-Bus API, its zbus
//!   implementation and an in-memory fake.
//! - `source` (feature `source`): the spec directory with each file's last-known-good version.
//! - `gitsource` (feature `git`): `[source.git]`, specs from a git repository, a commit at
//!   a time.
//! - `agent` (feature `agent`): `hostsetd`, the event loop around [`plan`].
//! - `cli` (feature `cli`): the `hostset` command line.
//!
//! The decisions are pure functions over plain data; the only side effects in the
//! library core are reading the files and host facts they are asked to read
//! (`spec::read_daemonsets`, `node::read_node`, `node::HostFacts::detect`).

#[cfg(feature = "agent")]
pub mod agent;
pub mod api;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config_file;
#[cfg(feature = "coordinator")]
pub mod coordinator;
pub mod fleet;
#[cfg(feature = "git")]
pub mod gitsource;
pub mod node;
pub mod placement;
pub mod plan;
pub mod probe;
pub mod quantity;
pub mod report;
pub mod rollout;
#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "source")]
pub mod source;
pub mod spec;
pub mod syntax;
#[cfg(feature = "systemd")]
pub mod systemd;
pub mod unit;
