//! hostset: Kubernetes DaemonSet semantics for plain systemd hosts.
//!
//! # Layout
//! - [`syntax`]: Kubernetes name and label syntax (DNS-1123, qualified names, label values).
//! - [`quantity`]: Kubernetes resource quantities (`100m`, `200Mi`, `1e3`).
//! - [`spec`]: the daemonset and node model, the decoders (native TOML, Kubernetes YAML/JSON)
//!   and validation with file/line/field-path diagnostics.
//! - [`placement`]: the DaemonSet controller's `shouldRun` / `shouldContinueRunning`.
//!
//! Everything in the library core is pure: text in, data out. Side effects live in the binaries.

pub mod placement;
pub mod quantity;
pub mod spec;
pub mod syntax;
