//! Shared support for integration tests: `mod support;` in a test file.
//!
//! - [`fleet`]: real systemd nodes (systemd-nspawn containers booted from a Debian
//!   rootfs) for end-to-end tests of the agent.
//! - [`coordinator`]: the real coordinator on host loopback, the CLI against it, and
//!   starting the agent on a node.

// Each test binary compiles this module anew and uses only part of it.
#![allow(dead_code)]

pub mod coordinator;
pub mod fleet;
