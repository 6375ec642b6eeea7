//! An in-memory systemd for tests.
//!
//! [`FakeSystemd`] implements [`Systemd`] over a map of units, records every
//! call as a typed [`Call`], can fail the next calls of an operation
//! ([`FakeSystemd::fail_next`]) and delivers [`Event`]s through the same
//! channel API as the real bus. Test helpers simulate what systemd does on its
//! own: a crash and restart ([`FakeSystemd::crash`]), a state change
//! ([`FakeSystemd::set_state`]), garbage collection ([`FakeSystemd::remove`]),
//! a unit left running by a previous agent ([`FakeSystemd::insert_running`]).
//!
//! It models what hostset relies on, as measured on systemd 252 (see
//! `notes/systemd-dbus.md`):
//! - `start_transient` fails with [`SystemdError::UnitExists`] while a unit of
//!   that name is loaded (running or failed);
//! - `stop` removes the unit at once (`CollectMode=inactive-or-failed`) and
//!   emits `JobRemoved { result: "done" }` then `UnitRemoved`, in systemd's
//!   order;
//! - `kill` of an active unit's processes is a crash: systemd restarts it
//!   (`Restart=always`), as [`FakeSystemd::crash`] does, whatever the signal;
//! - `run_oneshot` runs the unit's `ExecStart` on this machine (through the exec shim's
//!   argv when the unit carries one), with its `Environment` (only) and
//!   `WorkingDirectory`, as the current user, killed after `TimeoutStartUSec`; the result is
//!   `success`, `exit-code` (with the status), `signal` or `timeout`. It loads no unit;
//! - `reset_failed` removes a failed unit; on any other it only resets
//!   NRestarts to 0 and Result to `success`, without an event (as systemd
//!   252 does);
//! - `stop`, `reset_failed`, `set_description` and `details` on a unit that is
//!   not loaded fail with [`SystemdError::NoSuchUnit`];
//! - `details().environment` is the unit's `Environment` property (the
//!   markers), `list()`'s description its `Description` property (the unit
//!   name when it has none), both as sent;
//! - events are delivered only for `hostset-*` units (plus
//!   [`Event::Reloaded`]), like [`super::dbus::Bus::events`].
//!
//! Everything happens synchronously inside the call: a started unit is
//! `active`/`running` with a fresh MainPID by the time `start_transient`
//! returns, and its events are already queued.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::{Event, RunResult, Systemd, SystemdError, UnitDetails, UnitState};
use crate::unit::{PropValue, Property, UNIT_PREFIX, UnitSpec};

/// Capacity of each channel [`FakeSystemd::events`] returns.
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// The first MainPID the fake hands out.
pub const FIRST_PID: u32 = 1000;

/// One call made through the [`Systemd`] trait, as recorded by the fake.
/// Calls are recorded even when they fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `start_transient(spec)`.
    Start(UnitSpec),
    /// `stop(unit)`.
    Stop(String),
    /// `kill(unit, whom, signal)`.
    Kill(String, String, i32),
    /// `run_oneshot(spec)`.
    RunOneshot(UnitSpec),
    /// `reset_failed(unit)`.
    ResetFailed(String),
    /// `set_description(unit, description)`.
    SetDescription(String, String),
    /// `list(pattern)`.
    List,
    /// `details(unit)`.
    Details(String),
}

/// An operation of the [`Systemd`] trait, for [`FakeSystemd::fail_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Start,
    Stop,
    Kill,
    RunOneshot,
    ResetFailed,
    SetDescription,
    List,
    Details,
    Events,
}

/// One unit of the fake: what was sent, and what systemd would report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUnit {
    /// The spec it was started with (its `Description` property follows
    /// `set_description`).
    pub spec: UnitSpec,
    /// The row `list` returns.
    pub state: UnitState,
    /// What `details` returns.
    pub details: UnitDetails,
}

/// An in-memory systemd. Clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct FakeSystemd {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    units: BTreeMap<String, FakeUnit>,
    calls: Vec<Call>,
    failures: Vec<Failure>,
    subscribers: Vec<Subscriber>,
    /// Last MainPID handed out (0: none yet).
    last_pid: u32,
    invocations: u128,
}

#[derive(Debug)]
struct Failure {
    op: Op,
    remaining: usize,
    error: SystemdError,
}

#[derive(Debug)]
struct Subscriber {
    tx: mpsc::Sender<Event>,
    /// Events were dropped because the channel was full; a `Reloaded` is owed.
    lost: bool,
}

impl FakeSystemd {
    /// An empty systemd: no units, no calls.
    pub fn new() -> FakeSystemd {
        FakeSystemd::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock must not hide the state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Every call so far, oldest first; the record is emptied.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The next `n` calls of `op` fail with `error` (after being recorded,
    /// and before they change anything). Queues after earlier `fail_next` for
    /// the same operation.
    pub fn fail_next(&self, op: Op, n: usize, error: SystemdError) {
        if n > 0 {
            self.lock().failures.push(Failure {
                op,
                remaining: n,
                error,
            });
        }
    }

    /// A unit that is already running, as left by a previous agent: no call is
    /// recorded and no event is emitted.
    pub fn insert_running(&self, spec: UnitSpec, main_pid: u32) {
        let mut inner = self.lock();
        inner.last_pid = inner.last_pid.max(main_pid);
        let unit = inner.new_unit(spec, main_pid);
        inner.units.insert(unit.spec.name.clone(), unit);
    }

    /// The unit's main process died and systemd restarted it
    /// (`Restart=always`): NRestarts + 1, a new MainPID, a new invocation, a
    /// new ActiveEnterTimestamp; the unit ends `active`/`running`. Emits
    /// `UnitChanged` and the restart job's `JobRemoved { result: "done" }`.
    ///
    /// # Panics
    /// If the unit is not loaded.
    pub fn crash(&self, unit: &str) {
        let mut inner = self.lock();
        let pid = inner.next_pid();
        let invocation = inner.next_invocation();
        let u = inner.unit_mut(unit);
        u.details.n_restarts += 1;
        u.details.main_pid = pid;
        u.details.invocation_id = invocation;
        u.details.active_enter_timestamp_usec = now_usec();
        u.details.result = "success".to_string();
        u.state.active_state = "active".to_string();
        u.state.sub_state = "running".to_string();
        inner.emit_for(unit, Event::UnitChanged(unit.to_string()));
        inner.emit_for(
            unit,
            Event::JobRemoved {
                unit: unit.to_string(),
                result: "done".to_string(),
            },
        );
    }

    /// Sets ActiveState and SubState (nothing else) and emits `UnitChanged`.
    /// Use [`FakeSystemd::update_details`] for MainPID, Result and the rest.
    ///
    /// # Panics
    /// If the unit is not loaded.
    pub fn set_state(&self, unit: &str, active: &str, sub: &str) {
        let mut inner = self.lock();
        let u = inner.unit_mut(unit);
        u.state.active_state = active.to_string();
        u.state.sub_state = sub.to_string();
        inner.emit_for(unit, Event::UnitChanged(unit.to_string()));
    }

    /// Changes the unit's details in place and emits `UnitChanged`.
    ///
    /// # Panics
    /// If the unit is not loaded.
    pub fn update_details(&self, unit: &str, f: impl FnOnce(&mut UnitDetails)) {
        let mut inner = self.lock();
        f(&mut inner.unit_mut(unit).details);
        inner.emit_for(unit, Event::UnitChanged(unit.to_string()));
    }

    /// systemd garbage-collected the unit (for instance a failed unit with
    /// `CollectMode=inactive-or-failed`): it is gone, `UnitRemoved` is
    /// emitted. Returns whether it was loaded.
    pub fn remove(&self, unit: &str) -> bool {
        let mut inner = self.lock();
        let removed = inner.units.remove(unit).is_some();
        if removed {
            inner.emit_for(unit, Event::UnitRemoved(unit.to_string()));
        }
        removed
    }

    /// Delivers `event` to every subscriber, whatever unit it names.
    pub fn emit(&self, event: Event) {
        self.lock().emit(event);
    }

    /// A unit, if loaded.
    pub fn unit(&self, name: &str) -> Option<FakeUnit> {
        self.lock().units.get(name).cloned()
    }

    /// The names of the loaded units, sorted.
    pub fn unit_names(&self) -> Vec<String> {
        self.lock().units.keys().cloned().collect()
    }

    /// Records `call`, then fails it if a failure is queued for `op`.
    fn enter(&self, op: Op, call: Call) -> Result<MutexGuard<'_, Inner>, SystemdError> {
        let mut inner = self.lock();
        inner.calls.push(call);
        if let Some(i) = inner.failures.iter().position(|f| f.op == op) {
            let failure = &mut inner.failures[i];
            failure.remaining -= 1;
            let error = failure.error.clone();
            if failure.remaining == 0 {
                inner.failures.remove(i);
            }
            return Err(error);
        }
        Ok(inner)
    }
}

impl Inner {
    fn next_pid(&mut self) -> u32 {
        self.last_pid = self.last_pid.max(FIRST_PID - 1) + 1;
        self.last_pid
    }

    fn next_invocation(&mut self) -> String {
        self.invocations += 1;
        format!("{:032x}", self.invocations)
    }

    fn new_unit(&mut self, spec: UnitSpec, main_pid: u32) -> FakeUnit {
        let state = UnitState {
            name: spec.name.clone(),
            description: description(&spec),
            load_state: "loaded".to_string(),
            active_state: "active".to_string(),
            sub_state: "running".to_string(),
        };
        let details = UnitDetails {
            environment: environment(&spec),
            main_pid,
            n_restarts: 0,
            result: "success".to_string(),
            memory_current: None,
            cpu_usage_nsec: None,
            active_enter_timestamp_usec: now_usec(),
            invocation_id: self.next_invocation(),
        };
        FakeUnit {
            spec,
            state,
            details,
        }
    }

    fn unit_mut(&mut self, unit: &str) -> &mut FakeUnit {
        match self.units.get_mut(unit) {
            Some(u) => u,
            None => panic!("FakeSystemd: unit {unit} is not loaded"),
        }
    }

    fn loaded(&mut self, unit: &str) -> Result<&mut FakeUnit, SystemdError> {
        self.units
            .get_mut(unit)
            .ok_or_else(|| SystemdError::NoSuchUnit(unit.to_string()))
    }

    /// Emits `event` if `unit` is a hostset unit, as the real event stream filters.
    fn emit_for(&mut self, unit: &str, event: Event) {
        if unit.starts_with(UNIT_PREFIX) {
            self.emit(event);
        }
    }

    /// Sends without blocking. A full channel drops the event and owes the
    /// subscriber one `Reloaded` ("re-read everything"), sent as soon as there
    /// is room; subscribers whose receiver is gone are forgotten.
    fn emit(&mut self, event: Event) {
        self.subscribers.retain_mut(|s| {
            if s.lost {
                match s.tx.try_send(Event::Reloaded) {
                    Ok(()) => s.lost = false,
                    Err(mpsc::error::TrySendError::Full(_)) => return true,
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            match s.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.lost = true;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

impl Systemd for FakeSystemd {
    async fn start_transient(&self, unit: &UnitSpec) -> Result<(), SystemdError> {
        let mut inner = self.enter(Op::Start, Call::Start(unit.clone()))?;
        if inner.units.contains_key(&unit.name) {
            return Err(SystemdError::UnitExists(unit.name.clone()));
        }
        let pid = inner.next_pid();
        let new = inner.new_unit(unit.clone(), pid);
        inner.units.insert(unit.name.clone(), new);
        inner.emit_for(&unit.name, Event::UnitChanged(unit.name.clone()));
        inner.emit_for(
            &unit.name,
            Event::JobRemoved {
                unit: unit.name.clone(),
                result: "done".to_string(),
            },
        );
        Ok(())
    }

    async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        let mut inner = self.enter(Op::Stop, Call::Stop(unit.to_string()))?;
        inner.loaded(unit)?;
        inner.units.remove(unit);
        inner.emit_for(
            unit,
            Event::JobRemoved {
                unit: unit.to_string(),
                result: "done".to_string(),
            },
        );
        inner.emit_for(unit, Event::UnitRemoved(unit.to_string()));
        Ok(())
    }

    async fn kill(&self, unit: &str, whom: &str, signal: i32) -> Result<(), SystemdError> {
        let call = Call::Kill(unit.to_string(), whom.to_string(), signal);
        let active = {
            let mut inner = self.enter(Op::Kill, call)?;
            inner.loaded(unit)?.state.active_state == "active"
        };
        if active {
            self.crash(unit);
        }
        Ok(())
    }

    async fn run_oneshot(&self, unit: &UnitSpec) -> Result<RunResult, SystemdError> {
        drop(self.enter(Op::RunOneshot, Call::RunOneshot(unit.clone()))?);
        run_locally(unit).await
    }

    async fn reset_failed(&self, unit: &str) -> Result<(), SystemdError> {
        let mut inner = self.enter(Op::ResetFailed, Call::ResetFailed(unit.to_string()))?;
        let u = inner.loaded(unit)?;
        if u.state.active_state == "failed" {
            inner.units.remove(unit);
            inner.emit_for(unit, Event::UnitRemoved(unit.to_string()));
        } else {
            // systemd 252 resets the restart counter and the result of a
            // unit that is not failed (measured: NRestarts 1 -> 0), and
            // emits no PropertiesChanged for it.
            u.details.n_restarts = 0;
            u.details.result = "success".to_string();
        }
        Ok(())
    }

    async fn set_description(&self, unit: &str, description: &str) -> Result<(), SystemdError> {
        let call = Call::SetDescription(unit.to_string(), description.to_string());
        let mut inner = self.enter(Op::SetDescription, call)?;
        let u = inner.loaded(unit)?;
        u.state.description = description.to_string();
        let value = PropValue::Str(description.to_string());
        match u
            .spec
            .properties
            .iter_mut()
            .find(|p| p.name == "Description")
        {
            Some(p) => p.value = value,
            None => u.spec.properties.push(Property {
                name: "Description",
                value,
            }),
        }
        inner.emit_for(unit, Event::UnitChanged(unit.to_string()));
        Ok(())
    }

    async fn list(&self, pattern: &str) -> Result<Vec<UnitState>, SystemdError> {
        let inner = self.enter(Op::List, Call::List)?;
        Ok(inner
            .units
            .values()
            .filter(|u| glob_match(pattern.as_bytes(), u.spec.name.as_bytes()))
            .map(|u| u.state.clone())
            .collect())
    }

    async fn details(&self, unit: &str) -> Result<UnitDetails, SystemdError> {
        let mut inner = self.enter(Op::Details, Call::Details(unit.to_string()))?;
        Ok(inner.loaded(unit)?.details.clone())
    }

    async fn events(&self) -> Result<mpsc::Receiver<Event>, SystemdError> {
        let mut inner = self.lock();
        if let Some(i) = inner.failures.iter().position(|f| f.op == Op::Events) {
            let failure = &mut inner.failures[i];
            failure.remaining -= 1;
            let error = failure.error.clone();
            if failure.remaining == 0 {
                inner.failures.remove(i);
            }
            return Err(error);
        }
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        inner.subscribers.push(Subscriber { tx, lost: false });
        Ok(rx)
    }
}

/// [`FakeSystemd::run_oneshot`]: the unit's command, run here.
async fn run_locally(unit: &UnitSpec) -> Result<RunResult, SystemdError> {
    let prop = |name: &str| {
        unit.properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.value)
    };
    let env: Vec<String> = match prop("Environment") {
        Some(PropValue::Strs(v)) => v.clone(),
        _ => Vec::new(),
    };
    let mut argv = match prop("ExecStart") {
        Some(PropValue::Exec(cmds)) if !cmds.is_empty() => cmds[0].argv.clone(),
        _ => {
            return Err(SystemdError::Call {
                op: "StartTransientUnit",
                unit: unit.name.clone(),
                name: "org.freedesktop.systemd1.BadUnitSetting".into(),
                message: format!("Unit {} has a bad unit file setting.", unit.name),
            });
        }
    };
    let pairs: Vec<(String, String)> = env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Through the exec shim: the argv travels in the environment.
    if argv.get(1).map(String::as_str) == Some(crate::unit::EXEC_SHIM_SUBCOMMAND)
        && let Some(real) = crate::unit::argv_from_env(pairs.iter().cloned())
    {
        argv = real;
    }
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(pairs)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(PropValue::Str(dir)) = prop("WorkingDirectory") {
        cmd.current_dir(dir);
    }
    let timeout = match prop("TimeoutStartUSec") {
        Some(PropValue::U64(us)) => std::time::Duration::from_micros(*us),
        _ => std::time::Duration::from_secs(90),
    };
    let mut child = match cmd.spawn() {
        // systemd's status for a program it cannot execute (203/EXEC).
        Err(_) => {
            return Ok(RunResult {
                result: "exit-code".into(),
                exit_status: 203,
            });
        }
        Ok(c) => c,
    };
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Err(_) => {
            let _ = child.kill().await;
            return Ok(RunResult {
                result: "timeout".into(),
                exit_status: 0,
            });
        }
        Ok(Err(e)) => return Err(SystemdError::Bus(format!("waiting for {}: {e}", unit.name))),
        Ok(Ok(status)) => status,
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(0), _) => RunResult {
            result: "success".into(),
            exit_status: 0,
        },
        (Some(code), _) => RunResult {
            result: "exit-code".into(),
            exit_status: code,
        },
        (None, signal) => RunResult {
            result: "signal".into(),
            exit_status: signal.unwrap_or(0),
        },
    })
}

/// The unit's `Description` property, else its name (as systemd shows it).
fn description(spec: &UnitSpec) -> String {
    spec.properties
        .iter()
        .rev()
        .find_map(|p| match (&p.name, &p.value) {
            (&"Description", PropValue::Str(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| spec.name.clone())
}

/// Every string of the unit's `Environment` properties, in order.
fn environment(spec: &UnitSpec) -> Vec<String> {
    spec.properties
        .iter()
        .filter(|p| p.name == "Environment")
        .flat_map(|p| match &p.value {
            PropValue::Strs(items) => items.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// fnmatch-style glob over unit names: `*`, `?` and `[...]` (with `!` or `^`
/// negation and ranges), as `ListUnitsByPatterns` takes.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            match (class_match(rest, name.first().copied()), name.split_first()) {
                (Some((true, after)), Some((_, name_rest))) => glob_match(after, name_rest),
                (Some(_), _) => false,
                // No closing bracket: a literal '['.
                (None, _) => name.first() == Some(&b'[') && glob_match(rest, &name[1..]),
            }
        }
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

/// Matches `c` against the class after `[`; returns whether it matched and
/// the pattern after the closing `]`, or None when the class is unclosed.
fn class_match(class: &[u8], c: Option<u8>) -> Option<(bool, &[u8])> {
    let (negate, mut i) = match class.first() {
        Some(b'!' | b'^') => (true, 1),
        _ => (false, 0),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        let &b = class.get(i)?;
        if b == b']' && !first {
            return Some((c.is_some() && matched != negate, &class[i + 1..]));
        }
        first = false;
        if class.get(i + 1) == Some(&b'-') && class.get(i + 2).is_some_and(|&e| e != b']') {
            let end = class[i + 2];
            matched |= c.is_some_and(|c| b <= c && c <= end);
            i += 3;
        } else {
            matched |= c == Some(b);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        let m = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
        assert!(m("hostset-*.service", "hostset-a.service"));
        assert!(m("hostset-*.service", "hostset-.service"));
        assert!(!m("hostset-*.service", "hostset-a.socket"));
        assert!(!m("hostset-*.service", "other-a.service"));
        assert!(m("*", ""));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("x[a-c]y", "xby"));
        assert!(!m("x[!a-c]y", "xby"));
        assert!(m("x[!a-c]y", "xdy"));
        assert!(m("x[]]y", "x]y"));
        assert!(m("x[ab", "x[ab"));
        assert!(m("exact.service", "exact.service"));
    }
}
