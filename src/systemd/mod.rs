//! The narrow seam between hostset and systemd.
//!
//! [`Systemd`] is exactly as wide as the D-Bus calls hostset makes. The real
//! implementation, [`dbus::Bus`], talks to `org.freedesktop.systemd1` over the
//! system bus with zbus; [`fake::FakeSystemd`] is an in-memory systemd for the
//! agent's unit tests, recording every call and able to fail the next ones.

pub mod dbus;
pub mod fake;

use std::future::Future;

use crate::unit::UnitSpec;

/// One row of `ListUnitsByPatterns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    pub name: String,
    pub description: String,
    /// `loaded`, `not-found`, ...
    pub load_state: String,
    /// `active`, `activating`, `deactivating`, `inactive`, `failed`, ...
    pub active_state: String,
    /// `running`, `auto-restart`, `dead`, `failed`, ...
    pub sub_state: String,
}

/// Properties of one unit, read on demand.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitDetails {
    /// `Service.Environment`, `NAME=value` strings (carries the markers).
    pub environment: Vec<String>,
    /// `Service.MainPID`; 0 when not running.
    pub main_pid: u32,
    /// `Service.NRestarts`.
    pub n_restarts: u32,
    /// `Service.Result`: `success`, `exit-code`, `signal`, ...
    pub result: String,
    /// `Service.MemoryCurrent`; None when systemd does not know (u64::MAX).
    pub memory_current: Option<u64>,
    /// `Service.CPUUsageNSec`; None when unknown.
    pub cpu_usage_nsec: Option<u64>,
    /// `Unit.ActiveEnterTimestamp` in µs since the epoch; 0 when never active.
    pub active_enter_timestamp_usec: u64,
    /// `Unit.InvocationID` as 32 hex characters (journal `_SYSTEMD_INVOCATION_ID`).
    pub invocation_id: String,
}

/// How the run of a oneshot unit ended ([`Systemd::run_oneshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// `Service.Result`: `success`, `exit-code`, `signal`, `timeout`, `core-dump`, ...
    pub result: String,
    /// `Service.ExecMainStatus`: the exit status, or the signal with `signal`.
    pub exit_status: i32,
}

/// Something changed in systemd that may matter to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A unit's state changed (PropertiesChanged on a `hostset-*` unit, or UnitNew).
    UnitChanged(String),
    /// `UnitRemoved`.
    UnitRemoved(String),
    /// `JobRemoved` for a `hostset-*` unit: `result` is `done`, `failed`, `canceled`, ...
    JobRemoved { unit: String, result: String },
    /// systemd reloaded or re-executed (`Reloading(false)`): re-read everything.
    Reloaded,
}

/// Errors from systemd, naming the unit and the operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SystemdError {
    /// The name is taken by a loaded unit (`org.freedesktop.systemd1.UnitExists`).
    #[error("unit {0} already exists")]
    UnitExists(String),
    /// `org.freedesktop.systemd1.NoSuchUnit`.
    #[error("unit {0} is not loaded")]
    NoSuchUnit(String),
    /// Any other method error: the operation, the unit, the D-Bus error name and message.
    #[error("{op} {unit}: {name}: {message}")]
    Call {
        op: &'static str,
        unit: String,
        name: String,
        message: String,
    },
    /// The bus itself failed (not connected, connection lost).
    #[error("D-Bus: {0}")]
    Bus(String),
}

/// The calls hostset makes. Methods return once systemd has accepted the
/// request (the job is queued); completion arrives as [`Event::JobRemoved`].
/// Cheap to clone (clones share the connection), so that work can run in tasks of its own.
pub trait Systemd: Send + Sync + Clone + 'static {
    /// `StartTransientUnit(name, "fail", properties, [])`.
    fn start_transient(
        &self,
        unit: &UnitSpec,
    ) -> impl Future<Output = Result<(), SystemdError>> + Send;
    /// `StopUnit(name, "replace")`.
    fn stop(&self, unit: &str) -> impl Future<Output = Result<(), SystemdError>> + Send;
    /// `KillUnit(name, whom, signal)`: `whom` is `main` (the main process) or `all` (every
    /// process of the unit). With `Restart=always` systemd restarts a daemon killed so, and
    /// counts it in `NRestarts`.
    fn kill(
        &self,
        unit: &str,
        whom: &str,
        signal: i32,
    ) -> impl Future<Output = Result<(), SystemdError>> + Send;
    /// Start `unit`, a transient `Type=oneshot` unit, and wait until its process ended
    /// (`JobRemoved` of its start job). A unit that failed stays loaded (the default
    /// `CollectMode=inactive`) until its result is read; then it is reset, so that it goes.
    /// Its name must not start with `hostset-`: it is no daemon's unit.
    fn run_oneshot(
        &self,
        unit: &UnitSpec,
    ) -> impl Future<Output = Result<RunResult, SystemdError>> + Send;
    /// `ResetFailedUnit(name)`.
    fn reset_failed(&self, unit: &str) -> impl Future<Output = Result<(), SystemdError>> + Send;
    /// `SetUnitProperties(name, runtime=true, [("Description", s)])`.
    fn set_description(
        &self,
        unit: &str,
        description: &str,
    ) -> impl Future<Output = Result<(), SystemdError>> + Send;
    /// `ListUnitsByPatterns([], [pattern])`.
    fn list(
        &self,
        pattern: &str,
    ) -> impl Future<Output = Result<Vec<UnitState>, SystemdError>> + Send;
    /// Properties of one unit.
    fn details(&self, unit: &str)
    -> impl Future<Output = Result<UnitDetails, SystemdError>> + Send;
    /// Subscribe (once per connection) and deliver events for `hostset-*`
    /// units until the receiver is dropped.
    fn events(
        &self,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<Event>, SystemdError>> + Send;
}
