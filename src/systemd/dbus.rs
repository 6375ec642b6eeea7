//! systemd over the system bus, with zbus.
//!
//! [`Bus`] implements [`Systemd`] with hand-written proxy traits for the small
//! part of `org.freedesktop.systemd1` hostset uses: [`ManagerProxy`],
//! [`UnitProxy`] and [`ServiceProxy`]. Arguments are borrowed (`&str`,
//! `&[(&str, Value)]`); every acronym property spells its D-Bus name
//! (`MainPID`, `NRestarts`, `CPUUsageNSec`, `InvocationID`), because zbus's
//! automatic conversion would ask for `MainPid`.
//!
//! Facts this module relies on (measured on systemd 252, see
//! `notes/systemd-dbus.md`):
//! - `Subscribe` must be called once per connection, or systemd emits no
//!   `PropertiesChanged` for units on a host where nothing else subscribed; a
//!   second call fails with `org.freedesktop.systemd1.AlreadySubscribed`.
//! - `MemoryCurrent` and `CPUUsageNSec` never appear in `PropertiesChanged`, so
//!   [`Bus::details`] reads every property with an explicit `Get` (proxies built
//!   with [`CacheProperties::No`]).
//! - zbus 5 panics on systemd's private socket (`/run/systemd/private`), so
//!   connect through the bus daemon ([`Bus::system`], or [`Bus::at`] with a bus
//!   address such as `unix:path=/run/dbus/system_bus_socket`).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, Value};
use zbus::{Connection, MatchRule, MessageStream};

use super::{Event, RunResult, Systemd, SystemdError, UnitDetails, UnitState};
use crate::unit::{PropValue, UNIT_PREFIX, UnitSpec};

/// systemd's well-known bus name.
pub const SYSTEMD_SERVICE: &str = "org.freedesktop.systemd1";
/// The manager object.
pub const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";
/// Unit objects live below this path: `UNIT_PATH_PREFIX/` + [`escape_unit_name`].
pub const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit";
/// The manager interface (methods and the job/unit signals).
pub const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";
/// The interface every unit object has.
pub const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";

/// Capacity of the channel [`Bus::events`] returns.
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;
/// How many distinct events the forwarding task holds while the channel is
/// full before it gives up on details and collapses them into one
/// [`Event::Reloaded`] ("re-read everything").
pub const EVENT_BACKLOG_LIMIT: usize = 4096;
/// Queue length asked of zbus for each of the two signal streams, so that a
/// burst (hundreds of units changing at once) does not stall the socket reader
/// while the forwarding task catches up.
const SIGNAL_QUEUE: usize = 1024;

const ERR_NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
const ERR_UNIT_EXISTS: &str = "org.freedesktop.systemd1.UnitExists";
const ERR_ALREADY_SUBSCRIBED: &str = "org.freedesktop.systemd1.AlreadySubscribed";

/// One row of `ListUnitsByPatterns` (`a(ssssssouso)`): name, description,
/// load state, active state, sub state, followed unit, unit path, job id, job
/// type, job path.
pub type ListedUnit = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

/// `org.freedesktop.systemd1.Manager`: the methods and signals hostset uses.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
pub trait Manager {
    /// `StartTransientUnit(ssa(sv)a(sa(sv))) -> o`: returns the job path.
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;

    /// `StopUnit(ss) -> o`: returns the job path.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// `KillUnit(ssi)`.
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;

    /// `ResetFailedUnit(s)`.
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;

    /// `SetUnitProperties(sba(sv))`.
    fn set_unit_properties(
        &self,
        name: &str,
        runtime: bool,
        properties: &[(&str, Value<'_>)],
    ) -> zbus::Result<()>;

    /// `ListUnitsByPatterns(asas) -> a(ssssssouso)`; only loaded units.
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<ListedUnit>>;

    /// `GetUnit(s) -> o`; `NoSuchUnit` when the unit is not loaded.
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// `Subscribe()`: ask systemd to emit unit and job signals to this client.
    fn subscribe(&self) -> zbus::Result<()>;

    /// `JobRemoved(uoss)`: a job finished; `result` is `done`, `failed`, `canceled`, ...
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;

    /// `UnitNew(so)`: a unit was loaded.
    #[zbus(signal)]
    fn unit_new(&self, id: &str, unit: ObjectPath<'_>) -> zbus::Result<()>;

    /// `UnitRemoved(so)`: a unit was unloaded (garbage-collected).
    #[zbus(signal)]
    fn unit_removed(&self, id: &str, unit: ObjectPath<'_>) -> zbus::Result<()>;

    /// `Reloading(b)`: `true` when a reload or re-exec starts, `false` when it ended.
    #[zbus(signal)]
    fn reloading(&self, active: bool) -> zbus::Result<()>;
}

/// `org.freedesktop.systemd1.Unit`: the properties hostset reads.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Unit {
    /// `LoadState` (s): `loaded`, `not-found`, `bad-setting`, ...
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    /// `ActiveState` (s).
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    /// `SubState` (s).
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    /// `ActiveEnterTimestamp` (t), µs since the epoch.
    #[zbus(property)]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
    /// `InvocationID` (ay), 16 bytes.
    #[zbus(property, name = "InvocationID")]
    fn invocation_id(&self) -> zbus::Result<Vec<u8>>;
    /// `Description` (s).
    #[zbus(property)]
    fn description(&self) -> zbus::Result<String>;
}

/// `org.freedesktop.systemd1.Service`: the properties hostset reads.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Service {
    /// `MainPID` (u); 0 when not running.
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    /// `NRestarts` (u).
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
    /// `Result` (s).
    #[zbus(property, name = "Result")]
    fn result(&self) -> zbus::Result<String>;
    /// `ExecMainStatus` (i).
    #[zbus(property, name = "ExecMainStatus")]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    /// `Environment` (as).
    #[zbus(property)]
    fn environment(&self) -> zbus::Result<Vec<String>>;
    /// `MemoryCurrent` (t); `u64::MAX` when unknown. Not in `PropertiesChanged`.
    #[zbus(property(emits_changed_signal = "false"), name = "MemoryCurrent")]
    fn memory_current(&self) -> zbus::Result<u64>;
    /// `CPUUsageNSec` (t); `u64::MAX` when unknown. Not in `PropertiesChanged`.
    #[zbus(property(emits_changed_signal = "false"), name = "CPUUsageNSec")]
    fn cpu_usage_nsec(&self) -> zbus::Result<u64>;
}

/// A connection to systemd through the bus daemon.
///
/// Cheap to clone: clones share the connection (and its `Subscribe`).
#[derive(Clone, Debug)]
pub struct Bus {
    conn: Connection,
    manager: ManagerProxy<'static>,
    subscribed: Arc<AtomicBool>,
}

impl Bus {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else
    /// `/run/dbus/system_bus_socket`).
    pub async fn system() -> Result<Bus, SystemdError> {
        let conn = Connection::system()
            .await
            .map_err(|e| SystemdError::Bus(format!("connect to the system bus: {e}")))?;
        Bus::from_connection(conn).await
    }

    /// Connects to the bus at `address` (a D-Bus address such as
    /// `unix:path=/run/dbus/system_bus_socket`). Not systemd's private socket:
    /// zbus cannot talk to it.
    pub async fn at(address: &str) -> Result<Bus, SystemdError> {
        let conn = zbus::connection::Builder::address(address)
            .map_err(|e| SystemdError::Bus(format!("bus address {address}: {e}")))?
            .build()
            .await
            .map_err(|e| SystemdError::Bus(format!("connect to {address}: {e}")))?;
        Bus::from_connection(conn).await
    }

    /// Wraps an existing bus connection.
    pub async fn from_connection(conn: Connection) -> Result<Bus, SystemdError> {
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| SystemdError::Bus(format!("systemd manager proxy: {e}")))?;
        Ok(Bus {
            conn,
            manager,
            subscribed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The underlying connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The manager proxy (for calls the [`Systemd`] trait does not cover).
    pub fn manager(&self) -> &ManagerProxy<'static> {
        &self.manager
    }

    /// A non-caching [`UnitProxy`] for the unit object at `path`.
    pub async fn unit_proxy(&self, path: ObjectPath<'_>) -> zbus::Result<UnitProxy<'static>> {
        UnitProxy::builder(&self.conn)
            .path(path.into_owned())?
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    /// A non-caching [`ServiceProxy`] for the unit object at `path`.
    pub async fn service_proxy(&self, path: ObjectPath<'_>) -> zbus::Result<ServiceProxy<'static>> {
        ServiceProxy::builder(&self.conn)
            .path(path.into_owned())?
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    /// `Subscribe`, once per connection; `AlreadySubscribed` counts as success.
    async fn subscribe_once(&self) -> Result<(), SystemdError> {
        if self.subscribed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match self.manager.subscribe().await {
            Ok(()) => Ok(()),
            Err(e) if error_name(&e).as_deref() == Some(ERR_ALREADY_SUBSCRIBED) => Ok(()),
            Err(e) => {
                self.subscribed.store(false, Ordering::Release);
                Err(map_error("Subscribe", SYSTEMD_SERVICE, e))
            }
        }
    }
}

impl Systemd for Bus {
    async fn start_transient(&self, unit: &UnitSpec) -> Result<(), SystemdError> {
        let properties: Vec<(&str, Value<'_>)> = unit
            .properties
            .iter()
            .map(|p| (p.name, prop_value(&p.value)))
            .collect();
        self.manager
            .start_transient_unit(&unit.name, "fail", &properties, &[])
            .await
            .map(drop)
            .map_err(|e| map_error("StartTransientUnit", &unit.name, e))
    }

    async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        self.manager
            .stop_unit(unit, "replace")
            .await
            .map(drop)
            .map_err(|e| map_error("StopUnit", unit, e))
    }

    async fn kill(&self, unit: &str, whom: &str, signal: i32) -> Result<(), SystemdError> {
        self.manager
            .kill_unit(unit, whom, signal)
            .await
            .map_err(|e| map_error("KillUnit", unit, e))
    }

    async fn run_oneshot(&self, unit: &UnitSpec) -> Result<RunResult, SystemdError> {
        self.subscribe_once().await?;
        // The stream (its match rule) before the start: the signal may come before the reply.
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .map_err(|e| map_error("JobRemoved", &unit.name, e))?;
        let properties: Vec<(&str, Value<'_>)> = unit
            .properties
            .iter()
            .map(|p| (p.name, prop_value(&p.value)))
            .collect();
        let job = self
            .manager
            .start_transient_unit(&unit.name, "fail", &properties, &[])
            .await
            .map_err(|e| map_error("StartTransientUnit", &unit.name, e))?;
        let result = loop {
            let Some(signal) = removed.next().await else {
                return Err(SystemdError::Bus(format!(
                    "the JobRemoved stream ended while {} ran",
                    unit.name
                )));
            };
            if let Ok(args) = signal.args()
                && args.job().as_str() == job.as_str()
            {
                break args.result().to_string();
            }
        };
        if result == "done" {
            return Ok(RunResult {
                result: "success".into(),
                exit_status: 0,
            });
        }
        let read = async {
            let path = self.manager.get_unit(&unit.name).await?;
            let service = self.service_proxy(path.as_ref()).await?;
            Ok::<_, zbus::Error>(RunResult {
                result: service.result().await?,
                exit_status: service.exec_main_status().await?,
            })
        }
        .await;
        let _ = self.manager.reset_failed_unit(&unit.name).await;
        Ok(read.unwrap_or(RunResult {
            result,
            exit_status: 0,
        }))
    }

    async fn reset_failed(&self, unit: &str) -> Result<(), SystemdError> {
        self.manager
            .reset_failed_unit(unit)
            .await
            .map_err(|e| map_error("ResetFailedUnit", unit, e))
    }

    async fn set_description(&self, unit: &str, description: &str) -> Result<(), SystemdError> {
        self.manager
            .set_unit_properties(unit, true, &[("Description", Value::from(description))])
            .await
            .map_err(|e| map_error("SetUnitProperties", unit, e))
    }

    async fn list(&self, pattern: &str) -> Result<Vec<UnitState>, SystemdError> {
        let rows = self
            .manager
            .list_units_by_patterns(&[], &[pattern])
            .await
            .map_err(|e| map_error("ListUnitsByPatterns", pattern, e))?;
        Ok(rows
            .into_iter()
            .map(
                |(name, description, load_state, active_state, sub_state, ..)| UnitState {
                    name,
                    description,
                    load_state,
                    active_state,
                    sub_state,
                },
            )
            .collect())
    }

    async fn details(&self, unit: &str) -> Result<UnitDetails, SystemdError> {
        let path = self
            .manager
            .get_unit(unit)
            .await
            .map_err(|e| map_error("GetUnit", unit, e))?;
        let err = |e| map_error("Get", unit, e);
        let u = self.unit_proxy(path.as_ref()).await.map_err(err)?;
        let s = self.service_proxy(path.as_ref()).await.map_err(err)?;
        // Pipelined: all Gets go out before the first reply is read.
        let (
            load_state,
            timestamp,
            invocation,
            environment,
            main_pid,
            n_restarts,
            result,
            mem,
            cpu,
        ) = tokio::try_join!(
            u.load_state(),
            u.active_enter_timestamp(),
            u.invocation_id(),
            s.environment(),
            s.main_pid(),
            s.n_restarts(),
            s.result(),
            s.memory_current(),
            s.cpu_usage_nsec(),
        )
        .map_err(err)?;
        // The unit was collected between GetUnit and the Gets: reading its
        // path loaded a `not-found` stub.
        if load_state == "not-found" {
            return Err(SystemdError::NoSuchUnit(unit.to_string()));
        }
        Ok(UnitDetails {
            environment,
            main_pid,
            n_restarts,
            result,
            memory_current: known(mem),
            cpu_usage_nsec: known(cpu),
            active_enter_timestamp_usec: timestamp,
            invocation_id: hex(&invocation),
        })
    }

    async fn events(&self) -> Result<mpsc::Receiver<Event>, SystemdError> {
        let err = |e| map_error("AddMatch", SYSTEMD_SERVICE, e);
        // Match rules first, so nothing emitted after Subscribe is missed.
        let manager_rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(SYSTEMD_SERVICE)
            .and_then(|b| b.path(SYSTEMD_PATH))
            .and_then(|b| b.interface(MANAGER_INTERFACE))
            .map_err(err)?
            .build();
        let properties_rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(SYSTEMD_SERVICE)
            .and_then(|b| b.path_namespace(UNIT_PATH_PREFIX))
            .and_then(|b| b.interface("org.freedesktop.DBus.Properties"))
            .and_then(|b| b.member("PropertiesChanged"))
            .map_err(err)?
            .build();
        let manager_stream =
            MessageStream::for_match_rule(manager_rule, &self.conn, Some(SIGNAL_QUEUE))
                .await
                .map_err(err)?;
        let properties_stream =
            MessageStream::for_match_rule(properties_rule, &self.conn, Some(SIGNAL_QUEUE))
                .await
                .map_err(err)?;
        self.subscribe_once().await?;
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        tokio::spawn(forward_events(
            self.conn.clone(),
            manager_stream,
            properties_stream,
            tx,
        ));
        Ok(rx)
    }
}

/// The forwarding task behind [`Bus::events`].
///
/// It never waits on the consumer while a signal is available: zbus stops
/// reading the socket when a stream's queue is full, which would also stall
/// method replies on this connection. When the channel is full, events wait in
/// a local backlog, deduplicated (each event is a hint to re-read a unit, so
/// two identical pending hints are worth one) and kept in arrival order. If
/// the backlog reaches [`EVENT_BACKLOG_LIMIT`] distinct events, it is replaced
/// by a single [`Event::Reloaded`]. The task ends when the receiver is dropped
/// or the connection closes.
async fn forward_events(
    conn: Connection,
    mut manager: MessageStream,
    mut properties: MessageStream,
    tx: mpsc::Sender<Event>,
) {
    let mut backlog = Backlog::default();
    let mut reload = ReloadFilter::default();
    let mut manager_open = true;
    let mut properties_open = true;
    while manager_open || properties_open {
        let signal = tokio::select! {
            _ = tx.closed() => break,
            _ = conn.closed() => break,
            permit = tx.reserve(), if !backlog.is_empty() => {
                match permit {
                    Ok(permit) => {
                        if let Some(event) = backlog.pop() {
                            permit.send(event);
                        }
                        continue;
                    }
                    Err(_) => break,
                }
            }
            msg = manager.next(), if manager_open => match msg {
                Some(Ok(msg)) => manager_signal(&msg),
                Some(Err(e)) => {
                    tracing::debug!("systemd manager signal stream: {e}");
                    None
                }
                None => {
                    manager_open = false;
                    None
                }
            },
            msg = properties.next(), if properties_open => match msg {
                Some(Ok(msg)) => properties_signal(&msg),
                Some(Err(e)) => {
                    tracing::debug!("systemd PropertiesChanged stream: {e}");
                    None
                }
                None => {
                    properties_open = false;
                    None
                }
            },
        };
        let Some(signal) = signal else { continue };
        for event in reload.filter(signal, Instant::now()) {
            if !offer(&tx, &mut backlog, event) {
                tracing::debug!("systemd event receiver dropped");
                return;
            }
        }
    }
    tracing::debug!("systemd event forwarding ended");
}

/// Sends `event` without waiting, or queues it behind the backlog; false when
/// the receiver is gone.
fn offer(tx: &mpsc::Sender<Event>, backlog: &mut Backlog, event: Event) -> bool {
    if !backlog.is_empty() {
        backlog.push(event);
        return true;
    }
    match tx.try_send(event) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(event)) => {
            backlog.push(event);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// A decoded systemd signal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Signal {
    /// An event about a `hostset-*` unit.
    Unit(Event),
    /// `Reloading(true)`.
    ReloadStarted,
    /// `Reloading(false)`.
    ReloadFinished,
}

/// How long unit events are held back after `Reloading(true)` when no
/// `Reloading(false)` follows (a reload takes milliseconds to seconds).
pub const RELOAD_QUIET_MAX: Duration = Duration::from_secs(60);

/// Drops the unit events of a reload.
///
/// On `daemon-reload` and `daemon-reexec`, systemd 252 emits `UnitRemoved`
/// for every unit, then `UnitNew` for every unit again, between
/// `Reloading(true)` and `Reloading(false)` (measured: 149 of each for 149
/// units; after a re-exec they come from a new unique bus name). Forwarded,
/// they would tell the agent that its running units were removed. Instead,
/// unit events between the two are dropped, and `Reloading(false)` becomes
/// [`Event::Reloaded`], which means "re-read everything". If no
/// `Reloading(false)` arrives within [`RELOAD_QUIET_MAX`], the next unit event
/// ends the quiet period with a `Reloaded` of its own.
#[derive(Debug, Default)]
struct ReloadFilter {
    since: Option<Instant>,
}

impl ReloadFilter {
    fn filter(&mut self, signal: Signal, now: Instant) -> Vec<Event> {
        match signal {
            Signal::ReloadStarted => {
                self.since.get_or_insert(now);
                Vec::new()
            }
            Signal::ReloadFinished => {
                self.since = None;
                vec![Event::Reloaded]
            }
            Signal::Unit(event) => match self.since {
                None => vec![event],
                Some(since) if now.duration_since(since) < RELOAD_QUIET_MAX => Vec::new(),
                Some(_) => {
                    self.since = None;
                    vec![Event::Reloaded, event]
                }
            },
        }
    }
}

/// Events waiting for room in the channel: ordered, deduplicated, bounded.
#[derive(Default)]
struct Backlog {
    queue: VecDeque<Event>,
    seen: HashSet<(u8, String, String)>,
}

impl Backlog {
    fn key(event: &Event) -> (u8, String, String) {
        match event {
            Event::UnitChanged(u) => (0, u.clone(), String::new()),
            Event::UnitRemoved(u) => (1, u.clone(), String::new()),
            Event::JobRemoved { unit, result } => (2, unit.clone(), result.clone()),
            Event::Reloaded => (3, String::new(), String::new()),
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn push(&mut self, event: Event) {
        if !self.seen.insert(Self::key(&event)) {
            return;
        }
        if self.queue.len() >= EVENT_BACKLOG_LIMIT {
            tracing::warn!(
                "systemd events: consumer is {} events behind; collapsing them into one Reloaded",
                self.queue.len()
            );
            self.queue.clear();
            self.seen.clear();
            self.seen.insert(Self::key(&Event::Reloaded));
            self.queue.push_back(Event::Reloaded);
            return;
        }
        self.queue.push_back(event);
    }

    fn pop(&mut self) -> Option<Event> {
        let event = self.queue.pop_front()?;
        self.seen.remove(&Self::key(&event));
        Some(event)
    }
}

/// Decodes a Manager signal: an event for a `hostset-*` unit, or a reload.
fn manager_signal(msg: &zbus::Message) -> Option<Signal> {
    if let Some(signal) = JobRemoved::from_message(msg.clone()) {
        let args = signal.args().ok()?;
        return is_ours(args.unit).then(|| {
            Signal::Unit(Event::JobRemoved {
                unit: args.unit.to_string(),
                result: args.result.to_string(),
            })
        });
    }
    if let Some(signal) = UnitNew::from_message(msg.clone()) {
        let args = signal.args().ok()?;
        return is_ours(args.id).then(|| Signal::Unit(Event::UnitChanged(args.id.to_string())));
    }
    if let Some(signal) = UnitRemoved::from_message(msg.clone()) {
        let args = signal.args().ok()?;
        return is_ours(args.id).then(|| Signal::Unit(Event::UnitRemoved(args.id.to_string())));
    }
    if let Some(signal) = Reloading::from_message(msg.clone()) {
        let args = signal.args().ok()?;
        return Some(if args.active {
            Signal::ReloadStarted
        } else {
            Signal::ReloadFinished
        });
    }
    None
}

/// Decodes `PropertiesChanged` on a unit object into [`Event::UnitChanged`].
///
/// systemd emits two per state change, one for the type's interface
/// (`.Service`) and then one for `.Unit`, each a full snapshot; only the
/// `.Unit` one is forwarded, so a transition yields one event.
fn properties_signal(msg: &zbus::Message) -> Option<Signal> {
    let signal = zbus::fdo::PropertiesChanged::from_message(msg.clone())?;
    let args = signal.args().ok()?;
    if args.interface_name.as_str() != UNIT_INTERFACE {
        return None;
    }
    let header = msg.header();
    let name = unit_name_from_path(header.path()?.as_str())?;
    is_ours(&name).then_some(Signal::Unit(Event::UnitChanged(name)))
}

fn is_ours(unit: &str) -> bool {
    unit.starts_with(UNIT_PREFIX)
}

/// Converts a property value to a variant with the exact D-Bus signature
/// systemd expects (see [`PropValue`]).
pub fn prop_value(value: &PropValue) -> Value<'_> {
    match value {
        PropValue::Str(s) => Value::from(s.as_str()),
        PropValue::Bool(b) => Value::from(*b),
        PropValue::U64(n) => Value::from(*n),
        PropValue::Strs(items) => Value::from(items.iter().map(String::as_str).collect::<Vec<_>>()),
        PropValue::Exec(cmds) => Value::from(
            cmds.iter()
                .map(|c| {
                    (
                        c.path.as_str(),
                        c.argv.iter().map(String::as_str).collect::<Vec<_>>(),
                        c.ignore_failure,
                    )
                })
                .collect::<Vec<_>>(),
        ),
        PropValue::Binds(binds) => Value::from(
            binds
                .iter()
                .map(|b| {
                    let flags: u64 = if b.recursive { MS_REC } else { 0 };
                    (
                        b.source.as_str(),
                        b.destination.as_str(),
                        b.ignore_missing,
                        flags,
                    )
                })
                .collect::<Vec<_>>(),
        ),
        PropValue::Bytes(items) => {
            Value::from(items.iter().map(|b| b.as_slice()).collect::<Vec<&[u8]>>())
        }
    }
}

/// `MS_REC` from `<sys/mount.h>`: the bind mount flag for a recursive bind.
const MS_REC: u64 = 16384;

/// The object path of unit `name`: [`UNIT_PATH_PREFIX`] + `/` + the escaped
/// name (every byte that is not an ASCII letter, or a digit after the first
/// position, becomes `_xx` in lowercase hex; `hostset-a.service` →
/// `hostset_2da_2eservice`).
pub fn unit_path(name: &str) -> String {
    format!("{UNIT_PATH_PREFIX}/{}", escape_unit_name(name))
}

/// systemd's object-path label escaping (`bus_label_escape`).
pub fn escape_unit_name(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    let mut out = String::with_capacity(name.len() * 2);
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The unit name of a unit object path, or None when `path` is not below
/// [`UNIT_PATH_PREFIX`] or its label is not a valid escape.
pub fn unit_name_from_path(path: &str) -> Option<String> {
    let label = path.strip_prefix(UNIT_PATH_PREFIX)?.strip_prefix('/')?;
    if label == "_" {
        return Some(String::new());
    }
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if bytes[i].is_ascii_alphanumeric() {
            out.push(bytes[i]);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// `u64::MAX` is systemd's "not available".
fn known(value: u64) -> Option<u64> {
    (value != u64::MAX).then_some(value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The D-Bus error name of a method error, if `e` is one.
fn error_name(e: &zbus::Error) -> Option<String> {
    use zbus::DBusError;
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            zbus::fdo::Error::ZBus(inner) => error_name(inner),
            other => Some(other.name().to_string()),
        },
        _ => None,
    }
}

/// Maps a zbus error of operation `op` on `unit` to a [`SystemdError`].
fn map_error(op: &'static str, unit: &str, e: zbus::Error) -> SystemdError {
    use zbus::DBusError;
    let (name, message) = match &e {
        zbus::Error::MethodError(name, message, _) => {
            (name.to_string(), message.clone().unwrap_or_default())
        }
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            zbus::fdo::Error::ZBus(inner) => return map_error(op, unit, inner.clone()),
            other => (
                other.name().to_string(),
                other.description().unwrap_or_default().to_string(),
            ),
        },
        other => return SystemdError::Bus(format!("{op} {unit}: {other}")),
    };
    match name.as_str() {
        ERR_UNIT_EXISTS => SystemdError::UnitExists(unit.to_string()),
        ERR_NO_SUCH_UNIT => SystemdError::NoSuchUnit(unit.to_string()),
        _ => SystemdError::Call {
            op,
            unit: unit.to_string(),
            name,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::{BindMount, ExecCommand};

    #[test]
    fn property_values_have_systemd_signatures() {
        let cases = [
            (PropValue::Str("x".into()), "s"),
            (PropValue::Bool(true), "b"),
            (PropValue::U64(7), "t"),
            (PropValue::Strs(vec![]), "as"),
            (PropValue::Strs(vec!["A=1".into()]), "as"),
            (PropValue::Exec(vec![]), "a(sasb)"),
            (
                PropValue::Exec(vec![ExecCommand {
                    path: "/bin/sleep".into(),
                    argv: vec![],
                    ignore_failure: false,
                }]),
                "a(sasb)",
            ),
            (
                PropValue::Binds(vec![BindMount {
                    source: "/a".into(),
                    destination: "/b".into(),
                    ignore_missing: true,
                    recursive: true,
                }]),
                "a(ssbt)",
            ),
            (PropValue::Binds(vec![]), "a(ssbt)"),
            (PropValue::Bytes(vec![b"K=v".to_vec()]), "aay"),
            (PropValue::Bytes(vec![]), "aay"),
        ];
        for (value, signature) in cases {
            assert_eq!(
                prop_value(&value).value_signature().to_string(),
                signature,
                "{value:?}"
            );
        }
    }

    #[test]
    fn bind_flags_are_ms_rec_when_recursive() {
        let bind = |recursive| {
            PropValue::Binds(vec![BindMount {
                source: "/a".into(),
                destination: "/b".into(),
                ignore_missing: false,
                recursive,
            }])
        };
        let flags = |v: &PropValue| -> u64 {
            let Value::Array(a) = prop_value(v) else {
                panic!("not an array")
            };
            let Value::Structure(s) = &a[0] else {
                panic!("not a struct")
            };
            let Value::U64(flags) = s.fields()[3] else {
                panic!("flags not t")
            };
            flags
        };
        assert_eq!(flags(&bind(true)), 16384);
        assert_eq!(flags(&bind(false)), 0);
    }

    #[test]
    fn unit_paths_escape_and_unescape() {
        assert_eq!(
            unit_path("hostset-demo.service"),
            "/org/freedesktop/systemd1/unit/hostset_2ddemo_2eservice"
        );
        assert_eq!(escape_unit_name("0a1"), "_30a1");
        assert_eq!(escape_unit_name(""), "_");
        for name in [
            "hostset-a_b.c@d:e.service",
            "0ab",
            "",
            "Probe-UPPER9.service",
        ] {
            assert_eq!(unit_name_from_path(&unit_path(name)).as_deref(), Some(name));
        }
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/bad_2"),
            None
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/job/12"),
            None
        );
        assert_eq!(unit_name_from_path("/org/freedesktop/systemd1/unitx"), None);
    }

    #[test]
    fn backlog_dedups_keeps_order_and_collapses() {
        let mut b = Backlog::default();
        b.push(Event::UnitChanged("hostset-a.service".into()));
        b.push(Event::UnitChanged("hostset-b.service".into()));
        b.push(Event::UnitChanged("hostset-a.service".into()));
        assert_eq!(
            b.pop(),
            Some(Event::UnitChanged("hostset-a.service".into()))
        );
        b.push(Event::UnitChanged("hostset-a.service".into()));
        assert_eq!(
            b.pop(),
            Some(Event::UnitChanged("hostset-b.service".into()))
        );
        assert_eq!(
            b.pop(),
            Some(Event::UnitChanged("hostset-a.service".into()))
        );
        assert_eq!(b.pop(), None);
        for i in 0..=EVENT_BACKLOG_LIMIT {
            b.push(Event::UnitChanged(format!("hostset-{i}.service")));
        }
        assert_eq!(b.pop(), Some(Event::Reloaded));
        assert!(b.is_empty());
    }

    fn signal<B>(path: &str, iface: &str, member: &str, body: &B) -> zbus::Message
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        zbus::Message::signal(path, iface, member)
            .unwrap()
            .build(body)
            .unwrap()
    }

    #[test]
    fn manager_signals_decode_for_hostset_units_only() {
        let job = ObjectPath::try_from("/org/freedesktop/systemd1/job/7").unwrap();
        let unit = ObjectPath::try_from(unit_path("hostset-a.service")).unwrap();
        let m = |member: &str, msg: zbus::Message| {
            assert_eq!(msg.header().member().unwrap().as_str(), member);
            manager_signal(&msg)
        };
        let body = (7u32, &job, "hostset-a.service", "done");
        assert_eq!(
            m(
                "JobRemoved",
                signal(SYSTEMD_PATH, MANAGER_INTERFACE, "JobRemoved", &body)
            ),
            Some(Signal::Unit(Event::JobRemoved {
                unit: "hostset-a.service".into(),
                result: "done".into()
            }))
        );
        let body = (7u32, &job, "sshd.service", "done");
        assert_eq!(
            m(
                "JobRemoved",
                signal(SYSTEMD_PATH, MANAGER_INTERFACE, "JobRemoved", &body)
            ),
            None
        );
        let body = ("hostset-a.service", &unit);
        assert_eq!(
            m(
                "UnitNew",
                signal(SYSTEMD_PATH, MANAGER_INTERFACE, "UnitNew", &body)
            ),
            Some(Signal::Unit(Event::UnitChanged("hostset-a.service".into())))
        );
        assert_eq!(
            m(
                "UnitRemoved",
                signal(SYSTEMD_PATH, MANAGER_INTERFACE, "UnitRemoved", &body)
            ),
            Some(Signal::Unit(Event::UnitRemoved("hostset-a.service".into())))
        );
        assert_eq!(
            m(
                "Reloading",
                signal(SYSTEMD_PATH, MANAGER_INTERFACE, "Reloading", &(true,))
            ),
            Some(Signal::ReloadStarted)
        );
        assert_eq!(
            m(
                "Reloading",
                signal(SYSTEMD_PATH, MANAGER_INTERFACE, "Reloading", &(false,))
            ),
            Some(Signal::ReloadFinished)
        );
        let body = (7u32, &job);
        assert_eq!(
            m(
                "JobNew",
                signal(SYSTEMD_PATH, MANAGER_INTERFACE, "JobNew", &body)
            ),
            None
        );
    }

    #[test]
    fn properties_changed_maps_the_path_back_to_the_unit() {
        let changed = |path: &str, iface: &str| {
            let body = (
                iface,
                std::collections::HashMap::<&str, Value<'_>>::new(),
                Vec::<&str>::new(),
            );
            properties_signal(&signal(
                path,
                "org.freedesktop.DBus.Properties",
                "PropertiesChanged",
                &body,
            ))
        };
        assert_eq!(
            changed(&unit_path("hostset-a.service"), UNIT_INTERFACE),
            Some(Signal::Unit(Event::UnitChanged("hostset-a.service".into())))
        );
        assert_eq!(
            changed(
                &unit_path("hostset-a.service"),
                "org.freedesktop.systemd1.Service"
            ),
            None
        );
        assert_eq!(changed(&unit_path("sshd.service"), UNIT_INTERFACE), None);
        assert_eq!(
            changed("/org/freedesktop/systemd1/job/3", UNIT_INTERFACE),
            None
        );
    }

    #[test]
    fn reload_hides_the_unit_events_of_the_reload() {
        let t0 = Instant::now();
        let removed = Signal::Unit(Event::UnitRemoved("hostset-a.service".into()));
        let new = Signal::Unit(Event::UnitChanged("hostset-a.service".into()));
        let mut f = ReloadFilter::default();
        assert_eq!(
            f.filter(new.clone(), t0),
            [Event::UnitChanged("hostset-a.service".into())]
        );
        assert!(f.filter(Signal::ReloadStarted, t0).is_empty());
        assert!(f.filter(removed.clone(), t0).is_empty());
        assert!(
            f.filter(new.clone(), t0 + Duration::from_millis(70))
                .is_empty()
        );
        assert_eq!(f.filter(Signal::ReloadFinished, t0), [Event::Reloaded]);
        assert_eq!(f.filter(removed.clone(), t0).len(), 1);
        // A reload that never finishes stops hiding events after RELOAD_QUIET_MAX.
        assert!(f.filter(Signal::ReloadStarted, t0).is_empty());
        assert!(
            f.filter(removed.clone(), t0 + RELOAD_QUIET_MAX / 2)
                .is_empty()
        );
        assert_eq!(
            f.filter(removed, t0 + RELOAD_QUIET_MAX),
            [
                Event::Reloaded,
                Event::UnitRemoved("hostset-a.service".into())
            ]
        );
        assert_eq!(f.filter(new, t0 + RELOAD_QUIET_MAX).len(), 1);
        // Reloading(false) alone (subscribed mid-reload) is still a Reloaded.
        assert_eq!(
            ReloadFilter::default().filter(Signal::ReloadFinished, t0),
            [Event::Reloaded]
        );
    }

    #[test]
    fn errors_map_by_name() {
        let method_error = |name: &str| {
            let msg = zbus::Message::method_call("/", "M")
                .unwrap()
                .build(&())
                .unwrap();
            zbus::Error::MethodError(
                zbus::names::OwnedErrorName::try_from(name.to_string()).unwrap(),
                Some("text".into()),
                msg,
            )
        };
        assert_eq!(
            map_error("StartTransientUnit", "u", method_error(ERR_UNIT_EXISTS)),
            SystemdError::UnitExists("u".into())
        );
        assert_eq!(
            map_error("GetUnit", "u", method_error(ERR_NO_SUCH_UNIT)),
            SystemdError::NoSuchUnit("u".into())
        );
        assert_eq!(
            map_error(
                "StopUnit",
                "u",
                method_error("org.freedesktop.DBus.Error.InvalidArgs")
            ),
            SystemdError::Call {
                op: "StopUnit",
                unit: "u".into(),
                name: "org.freedesktop.DBus.Error.InvalidArgs".into(),
                message: "text".into(),
            }
        );
        let fdo = zbus::Error::FDO(Box::new(zbus::fdo::Error::UnknownProperty("no X".into())));
        assert_eq!(
            map_error("Get", "u", fdo),
            SystemdError::Call {
                op: "Get",
                unit: "u".into(),
                name: "org.freedesktop.DBus.Error.UnknownProperty".into(),
                message: "no X".into(),
            }
        );
        assert!(matches!(
            map_error("StopUnit", "u", zbus::Error::InvalidReply),
            SystemdError::Bus(m) if m.starts_with("StopUnit u:")
        ));
    }
}
