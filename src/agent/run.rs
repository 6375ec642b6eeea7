//! The agent's loop: rebuild the picture, plan, act; wait for the next event.
//!
//! # Guarantees
//! - Every pass starts from scratch: specs from disk (with each file's
//!   last-known-good version), the node file, the host's conditions, and the
//!   `hostset-*` units systemd has. Adoption after an agent restart therefore
//!   needs no local database: units carry their daemonset and revision.
//! - Nothing is polled while nothing changes: inotify on the spec directory
//!   and the node file, systemd's signals, and the planner's own deadlines
//!   (evictions, backoff) wake the loop. The only periodic work is sampling
//!   memory and disk for pressure conditions, the watchdog ping, the probes of
//!   daemons that declare any ([`super::probes`]; none without probes), and (with a
//!   coordinator) the reporter's heartbeat.
//! - A complete file is acted on at once; a file in the middle of being written is
//!   waited for ([`FileDebounce`]). A file renamed into place (`IN_MOVED_TO`: what
//!   editors, package managers and config management do), closed after writing
//!   (`IN_CLOSE_WRITE`) or chmod/chown-ed is complete: the files are re-read right
//!   away. While any relevant file is being written (created or modified, not yet
//!   closed), or was removed or renamed away and has not come back (an editor that
//!   renames the old version aside before writing the new one), or an event names
//!   nothing the agent can follow (the directory itself, an inotify overflow), the
//!   re-read waits for [`FILE_DEBOUNCE`] of quiet, at most [`FILE_DEBOUNCE_MAX`]
//!   after the first event, as before. Reads (`IN_OPEN`, `IN_CLOSE_NOWRITE`, the
//!   agent's own included) are not changes and wake nothing.
//! - A failing systemd call is retried with per-daemonset exponential backoff
//!   (1 s doubling to 30 s) and reported; it never blocks the other daemonsets.
//! - On SIGTERM the agent stops reconciling and exits; the daemons keep running
//!   (transient units do not depend on their creator).
//! - Every report (each pass, and each metrics read that changed a number) is written to the
//!   status file and handed to the reporter ([`super::report`]) through a watch channel:
//!   the loop never waits for the coordinator.
//! - The live numbers of a unit (MainPID, NRestarts, ActiveEnterTimestamp, memory, CPU) are
//!   cached per unit, read again when systemd signals a change of the unit (UnitChanged,
//!   JobRemoved), dropped when it is removed and forgotten on a systemd reload. Memory and
//!   CPU change without a signal; they are read for every unit only when the reporter asks,
//!   at the heartbeat that is due to carry them to the coordinator (at most once a minute by
//!   default; see [`super::report`]). Nothing reads them on a timer: without a coordinator the
//!   status file's `memoryBytes`/`cpuNanoseconds` are as of the unit's last change, and
//!   `hostset status` reads the current ones from systemd itself.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, info_span, warn};

use crate::node::{HostFacts, NodeFile, read_node};
use crate::placement::taints::EFFECT_NO_EXECUTE;
use crate::plan::{self, Action, Desired, ObservedUnit, orphans_on_delete, taint_id};
use crate::report::{DaemonSetReport, NodeInfo, NodeReport};
use crate::spec::{DaemonSet, Diagnostic, Node, Taint};
use crate::systemd::{Event, Systemd, SystemdError, UnitDetails};
use crate::unit::{self, Markers, UnitOptions};

use super::conditions;
use super::config::Config;
use super::probes::{self, Followup, Prober};
use super::report::{self, Control, RefreshRequest, Reporter};
use crate::gitsource;
use crate::service as sdnotify;
use crate::source::SpecDir;

/// Quiet time after a file event before the directory is re-read, while a
/// relevant file is being written or was removed (see [`FileDebounce`]):
/// editors write temp files and rename, package managers write in several steps.
const FILE_DEBOUNCE: Duration = crate::source::RECOMMENDED_DEBOUNCE;
/// Upper bound on how long a stream of file events can postpone a pass.
const FILE_DEBOUNCE_MAX: Duration = Duration::from_millis(500);
/// File events the loop has not taken yet before the watcher falls back to
/// "something changed, wait for quiet" ([`FileChange::Unknown`]).
const FILE_CHANNEL_CAPACITY: usize = 1024;
/// Coalescing of systemd signals (a unit start sends several).
const UNIT_DEBOUNCE: Duration = Duration::from_millis(20);
/// How often memory and disk are sampled for pressure conditions.
const CONDITIONS_INTERVAL: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// What the prober keeps across agent restarts, beside the status file.
pub const PROBE_STATE_FILE: &str = "probes.json";

/// Per-daemonset retry state after a failed systemd call.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Duration,
    delay: Duration,
}

/// The agent: its inputs, its memory between passes, and its systemd.
pub struct Agent<S: Systemd> {
    systemd: S,
    config: Config,
    specs: SpecDir,
    facts: Option<HostFacts>,
    /// The node file's last valid content.
    node_file: Option<NodeFile>,
    node_diagnostics: Vec<Diagnostic>,
    condition_taints: Vec<Taint>,
    pressure: conditions::PressureTracker,
    /// Condition signals that could not be read, last time (logged on change).
    condition_problems: Vec<String>,
    unit_options: UnitOptions,
    origin: Instant,
    no_execute_since: BTreeMap<String, Duration>,
    failed_since: BTreeMap<String, Duration>,
    backoff: BTreeMap<String, Backoff>,
    /// Deleted daemonsets whose units are to become orphans.
    orphaning: BTreeSet<String>,
    /// Markers of each unit, read once per unit lifetime.
    markers: HashMap<String, Option<Markers>>,
    /// The daemonsets in force after the last pass.
    in_force: BTreeMap<String, DaemonSet>,
    /// Units started in the last passes whose job has not completed yet.
    starting: BTreeMap<String, String>,
    last_error: BTreeMap<String, String>,
    status_path: Option<PathBuf>,
    /// Live numbers of each loaded `hostset-*` unit.
    live: HashMap<String, UnitDetails>,
    /// Units whose live numbers are outdated: systemd signalled a change since.
    live_stale: HashSet<String>,
    /// This agent start's identity in reports.
    instance: String,
    /// The host's addresses, last time they were sampled.
    addresses: Vec<String>,
    /// The last report, written and published.
    last_report: Option<NodeReport>,
    /// `[source.git]`: the follower's latest snapshot.
    git: Option<Arc<gitsource::Snapshot>>,
    /// The commit each loaded unit was started from (`HOSTSET_COMMIT`), read with its
    /// markers.
    unit_commits: HashMap<String, Option<String>>,
    /// The latest report, for the reporter.
    reports: watch::Sender<Option<NodeReport>>,
    /// Set by the first pass; `READY=1` is sent after it.
    pub passes: u64,
    /// The daemons' probes.
    prober: Prober,
    /// The coordinator's directives, as the reporter last heard them.
    control: watch::Sender<Control>,
    /// Pinned specs decoded from the coordinator's directives: (daemonset, revision) → spec.
    pinned: HashMap<(String, String), Result<DaemonSet, String>>,
    /// Per daemonset in force: the pinned revision's number, when a pin applies.
    pins_applied: BTreeMap<String, u64>,
}

impl<S: Systemd> Agent<S> {
    /// An agent over `systemd`. `facts` are this host's (None in tests that
    /// describe the node completely in its file).
    pub fn new(
        systemd: S,
        config: Config,
        facts: Option<HostFacts>,
        unit_options: UnitOptions,
        status_path: Option<PathBuf>,
    ) -> Self {
        let specs = SpecDir::new(&config.spec_dir);
        let instance = report::new_instance_id();
        let prober = Prober::new(
            status_path
                .as_ref()
                .map(|p| p.with_file_name(PROBE_STATE_FILE)),
            &instance,
        );
        let pressure = conditions::PressureTracker::new(config.thresholds.transition_period);
        Agent {
            pressure,
            condition_problems: Vec::new(),
            systemd,
            config,
            specs,
            facts,
            node_file: None,
            node_diagnostics: Vec::new(),
            condition_taints: Vec::new(),
            unit_options,
            origin: Instant::now(),
            no_execute_since: BTreeMap::new(),
            failed_since: BTreeMap::new(),
            backoff: BTreeMap::new(),
            orphaning: BTreeSet::new(),
            markers: HashMap::new(),
            in_force: BTreeMap::new(),
            starting: BTreeMap::new(),
            last_error: BTreeMap::new(),
            status_path,
            live: HashMap::new(),
            live_stale: HashSet::new(),
            instance,
            addresses: Vec::new(),
            last_report: None,
            git: None,
            unit_commits: HashMap::new(),
            reports: watch::Sender::new(None),
            passes: 0,
            prober,
            control: watch::Sender::new(Control::default()),
            pinned: HashMap::new(),
            pins_applied: BTreeMap::new(),
        }
    }

    /// The channel the reporter puts the coordinator's directives in.
    pub fn control(&self) -> watch::Sender<Control> {
        self.control.clone()
    }

    /// The specs in force with the coordinator's pins applied: a pin replaces the spec of
    /// its daemonset while the spec file has the revision the pin is from.
    fn apply_pins(&mut self, in_force: &mut BTreeMap<String, DaemonSet>) {
        let pins = self.control.borrow().directives.pins.clone();
        self.pins_applied.clear();
        self.pinned
            .retain(|(name, rev), _| pins.get(name).is_some_and(|p| &p.to == rev));
        for (name, pin) in pins {
            let Some(ds) = in_force.get(&name) else {
                continue;
            };
            if unit::revision(&ds.template) != pin.from {
                continue;
            }
            let decoded = self
                .pinned
                .entry((name.clone(), pin.to.clone()))
                .or_insert_with(|| decode_pin(&name, &pin));
            match decoded {
                Ok(pinned) => {
                    self.pins_applied.insert(name.clone(), pin.number);
                    in_force.insert(name, pinned.clone());
                }
                Err(e) => {
                    warn!(daemonset = %name, "the coordinator's pinned revision cannot be used: {e}")
                }
            }
        }
    }

    /// Per daemonset, whether its units may move to a new revision now.
    fn gates(&self, desired: &[Desired]) -> BTreeMap<String, plan::Gate> {
        let c = self.control.borrow();
        let mut gates = BTreeMap::new();
        if !c.configured {
            return gates;
        }
        for d in desired {
            let name = &d.ds.name;
            let gate = if c.directives.grants.get(name) == Some(&d.unit.revision) {
                plan::Gate::Granted
            } else if c.directives.unmanaged.contains(name)
                || (!c.reachable && crate::rollout::settings(&d.ds).without_coordinator)
            {
                // Not the coordinator's to pace (a host-specific daemonset), or allowed to
                // go on without it.
                plan::Gate::Free
            } else if let Some(why) = c.directives.waits.get(name) {
                plan::Gate::Wait(why.clone())
            } else if !c.reachable && !c.problem.is_empty() {
                plan::Gate::Wait(format!(
                    "the coordinator cannot be reached ({}): the running revision is kept",
                    c.problem
                ))
            } else {
                plan::Gate::Wait("waiting for a slot from the coordinator".to_string())
            };
            gates.insert(name.clone(), gate);
        }
        gates
    }

    /// Since when each active unit has been ready (seconds since the epoch): its probes'
    /// word when it has probes, else since it became active (`ActiveEnterTimestamp`).
    /// `None` when it is not ready.
    fn unit_ready_since(&self, unit: &str, active: bool) -> Option<u64> {
        if !active {
            return None;
        }
        if let Some(r) = self.prober.readiness(unit) {
            return r.ready_since.filter(|_| r.ready);
        }
        // A unit of the desired revision whose spec declares probes (the revision is
        // hashed only for daemonsets with probes).
        let probed = self
            .markers
            .get(unit)
            .and_then(Option::as_ref)
            .is_some_and(|m| {
                self.in_force.get(&m.daemonset).is_some_and(|ds| {
                    ds.template.process.has_probes() && m.revision == unit::revision(&ds.template)
                })
            });
        if probed {
            // Its probes have not started yet.
            return None;
        }
        self.live
            .get(unit)
            .map(|d| d.active_enter_timestamp_usec / 1_000_000)
            .filter(|&t| t > 0)
    }

    /// [`Agent::unit_ready_since`] of every unit, on the agent's clock (for the planner).
    fn ready_since(&self, units: &[ObservedUnit]) -> BTreeMap<String, Duration> {
        let now = self.now();
        let epoch_now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        units
            .iter()
            .filter_map(|u| {
                let since = self.unit_ready_since(&u.name, u.active_state == "active")?;
                let ago = epoch_now.saturating_sub(Duration::from_secs(since));
                Some((u.name.clone(), now.saturating_sub(ago)))
            })
            .collect()
    }

    /// The reports of every pass from now on (`None` until the first pass), latest only.
    pub fn subscribe(&self) -> watch::Receiver<Option<NodeReport>> {
        self.reports.subscribe()
    }

    /// The last report made (as written to the status file).
    pub fn last_report(&self) -> Option<&NodeReport> {
        self.last_report.as_ref()
    }

    /// This agent start's `agentInstance`.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Read the host's addresses; true when they changed.
    pub fn sample_addresses(&mut self) -> bool {
        let addresses = report::host_addresses();
        if addresses != self.addresses {
            info!(?addresses, "node addresses");
            self.addresses = addresses;
            true
        } else {
            false
        }
    }

    /// Also trust spec files owned by `uid` (tests running unprivileged).
    pub fn trust_owner(mut self, uid: u32) -> Self {
        self.specs = SpecDir::new(&self.config.spec_dir).with_owner(uid);
        self
    }

    pub fn systemd(&self) -> &S {
        &self.systemd
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Re-read the node file. An invalid file keeps the last valid node.
    pub fn reload_node(&mut self) {
        let path = &self.config.node_file;
        if !path.exists() {
            self.node_file = None;
            self.node_diagnostics.clear();
            return;
        }
        let loaded = read_node(path);
        if loaded.has_errors() {
            if loaded.diagnostics != self.node_diagnostics {
                for d in &loaded.diagnostics {
                    warn!("{d} (the node file's last valid version stays in force)");
                }
            }
        } else if let Some(nf) = loaded.items.into_iter().next() {
            self.node_file = Some(nf);
        }
        self.node_diagnostics = loaded.diagnostics;
    }

    /// Sample memory and disk; true when the condition taints changed.
    pub fn sample_conditions(&mut self) -> bool {
        let observed = conditions::observe(&self.config.thresholds);
        if observed.problems != self.condition_problems {
            for p in &observed.problems {
                warn!(problem = %p, "cannot read a node condition; counting it as no pressure");
            }
            self.condition_problems = observed.problems;
        }
        let pressure = self.pressure.update(Instant::now(), observed.pressure);
        let taints = conditions::taints(pressure);
        if taints != self.condition_taints {
            info!(taints = ?taints.iter().map(ToString::to_string).collect::<Vec<_>>(), "node conditions changed");
            self.condition_taints = taints;
            true
        } else {
            false
        }
    }

    /// The node as placement sees it: the node file (or nothing) resolved with
    /// the host's facts, plus the taints of its conditions.
    pub fn node(&self) -> Node {
        let empty = NodeFile::Native {
            name: None,
            labels: Default::default(),
            taints: Vec::new(),
            unschedulable: false,
        };
        let mut node = self
            .node_file
            .as_ref()
            .unwrap_or(&empty)
            .resolve(self.facts.as_ref());
        for t in &self.condition_taints {
            if !node
                .taints
                .iter()
                .any(|n| n.key == t.key && n.effect == t.effect)
            {
                node.taints.push(t.clone());
            }
        }
        node
    }

    /// Re-read the spec directory. New diagnostics are logged once.
    pub fn reload_specs(&mut self) {
        let change = self.specs.rescan();
        if change.diagnostics_changed {
            for d in self.specs.diagnostics() {
                warn!("{d}");
            }
        }
    }

    /// Put the git follower's latest snapshot in force beside the spec directory. Changed
    /// diagnostics are logged once.
    pub fn apply_git(&mut self, snapshot: Arc<gitsource::Snapshot>) {
        let change = self
            .specs
            .set_external(snapshot.files.clone(), snapshot.held.clone());
        if change.diagnostics_changed {
            for d in self.specs.diagnostics() {
                warn!("{d}");
            }
        }
        self.git = Some(snapshot);
    }

    /// The `hostset-*` units with their markers.
    async fn observe(&mut self) -> Result<Vec<ObservedUnit>, SystemdError> {
        let listed = self.systemd.list(unit::UNIT_PATTERN).await?;
        let live: BTreeSet<&str> = listed.iter().map(|u| u.name.as_str()).collect();
        self.markers.retain(|name, _| live.contains(name.as_str()));
        self.unit_commits
            .retain(|name, _| live.contains(name.as_str()));
        self.live.retain(|name, _| live.contains(name.as_str()));
        self.live_stale.retain(|name| live.contains(name.as_str()));
        let mut out = Vec::with_capacity(listed.len());
        for u in &listed {
            if u.load_state != "loaded" {
                continue;
            }
            let known = self.markers.get(&u.name).cloned();
            let fresh = self.live.contains_key(&u.name) && !self.live_stale.contains(&u.name);
            let markers = match known {
                Some(m) if fresh => m,
                known => match self.systemd.details(&u.name).await {
                    Ok(d) => {
                        let m = known.unwrap_or_else(|| {
                            let m = unit::markers_from_environment(&d.environment);
                            self.markers.insert(u.name.clone(), m.clone());
                            self.unit_commits.insert(
                                u.name.clone(),
                                unit::commit_from_environment(&d.environment),
                            );
                            m
                        });
                        self.live_stale.remove(&u.name);
                        self.live.insert(u.name.clone(), d);
                        m
                    }
                    // Gone between the list and the read: next pass.
                    Err(SystemdError::NoSuchUnit(_)) => continue,
                    // Only the live numbers are missing: they stay as they were.
                    Err(e) if known.is_some() => {
                        debug!(unit = %u.name, error = %e, "cannot refresh the unit's numbers");
                        known.unwrap_or_default()
                    }
                    Err(e) => return Err(e),
                },
            };
            out.push(ObservedUnit {
                name: u.name.clone(),
                description: u.description.clone(),
                active_state: u.active_state.clone(),
                sub_state: u.sub_state.clone(),
                markers,
            });
        }
        Ok(out)
    }

    fn note_failure(&mut self, daemonset: &str, error: String) {
        let now = self.now();
        let delay = self
            .backoff
            .get(daemonset)
            .map_or(BACKOFF_START, |b| (b.delay * 2).min(BACKOFF_MAX));
        warn!(daemonset, error = %error, retry_in = ?delay, "systemd call failed");
        self.backoff.insert(
            daemonset.to_string(),
            Backoff {
                until: now + delay,
                delay,
            },
        );
        self.last_error.insert(daemonset.to_string(), error);
    }

    /// Handle a systemd event; true when a pass is due.
    pub fn on_event(&mut self, event: &Event) -> bool {
        match event {
            Event::UnitRemoved(name) => {
                self.markers.remove(name);
                self.unit_commits.remove(name);
                self.failed_since.remove(name);
                self.live.remove(name);
                self.live_stale.remove(name);
            }
            Event::JobRemoved { unit, result } => {
                self.live_stale.insert(unit.clone());
                if let Some(ds) = self.starting.remove(unit) {
                    if result == "done" {
                        self.backoff.remove(&ds);
                        self.last_error.remove(&ds);
                    } else {
                        self.note_failure(
                            &ds,
                            format!("start job of {unit} ended with result {result}"),
                        );
                    }
                }
            }
            Event::UnitChanged(name) => {
                self.live_stale.insert(name.clone());
            }
            Event::Reloaded => {
                self.markers.clear();
                self.unit_commits.clear();
                self.live.clear();
                self.live_stale.clear();
            }
        }
        true
    }

    /// One pass. Returns when the next pass is due with nothing else happening.
    pub async fn reconcile(&mut self) -> Option<Instant> {
        self.passes += 1;
        let span = info_span!("reconcile", pass = self.passes);
        let _guard = span.enter();
        let now = self.now();
        let node = self.node();

        // NoExecute taints: when each was first seen (for tolerationSeconds).
        let present: BTreeSet<String> = node
            .taints
            .iter()
            .filter(|t| t.effect == EFFECT_NO_EXECUTE)
            .map(taint_id)
            .collect();
        self.no_execute_since.retain(|id, _| present.contains(id));
        for id in present {
            self.no_execute_since.entry(id).or_insert(now);
        }

        // Daemonsets in force, and those deleted since the last pass.
        let in_force: BTreeMap<String, DaemonSet> = self
            .specs
            .daemonsets()
            .into_iter()
            .map(|d| (d.name.clone(), d.clone()))
            .collect();
        let mut held = self.specs.held();
        // An invalid file never valid since the agent started: NAME.toml holds hostset-NAME.
        held.extend(self.specs.held_stems());
        for (name, ds) in &self.in_force {
            if !in_force.contains_key(name) && !held.contains(name) && orphans_on_delete(ds) {
                info!(daemonset = %name, "deleted with orphan-on-delete: its unit keeps running");
                self.orphaning.insert(name.clone());
            }
        }
        self.orphaning.retain(|n| !in_force.contains_key(n));
        let mut in_force = in_force;
        self.apply_pins(&mut in_force);
        self.in_force = in_force;

        let units = match self.observe().await {
            Ok(u) => u,
            Err(e) => {
                warn!(error = %e, "cannot list units; retrying");
                let retry = self.now() + BACKOFF_START;
                self.write_report(&node, &[], &plan::Plan::default(), vec![e.to_string()]);
                return Some(self.origin + retry);
            }
        };
        if self.git.as_ref().is_some_and(|g| g.unsettled) {
            // No commit in force and the head cannot be had: the units started from git are
            // left as they are.
            held.extend(units.iter().filter_map(|u| {
                let m = u.markers.as_ref()?;
                self.unit_commits
                    .get(&u.name)?
                    .as_ref()
                    .map(|_| m.daemonset.clone())
            }));
        }
        if self.specs.hold_all() {
            // The spec directory cannot be trusted or read: touch nothing.
            held.extend(
                units
                    .iter()
                    .filter_map(|u| u.markers.as_ref())
                    .map(|m| m.daemonset.clone()),
            );
        }
        let live: BTreeSet<&str> = units.iter().map(|u| u.name.as_str()).collect();
        self.failed_since.retain(|n, _| live.contains(n.as_str()));
        for u in units.iter().filter(|u| u.active_state == "failed") {
            self.failed_since.entry(u.name.clone()).or_insert(now);
        }

        let desired: Vec<Desired> = self
            .in_force
            .values()
            .map(|ds| {
                let mut unit = unit::unit_spec(ds, &self.unit_options);
                if let Some(g) = &self.git
                    && self.is_from_git(&ds.name)
                {
                    unit::set_commit(&mut unit, &g.commit);
                }
                Desired {
                    ds: ds.clone(),
                    unit,
                }
            })
            .collect();
        let backoff_until: BTreeMap<String, Duration> = self
            .backoff
            .iter()
            .map(|(k, b)| (k.clone(), b.until))
            .collect();
        let gates = self.gates(&desired);
        let ready_since = self.ready_since(&units);
        let p = plan::plan(&plan::Input {
            node: &node,
            desired: &desired,
            held: &held,
            orphaning: &self.orphaning,
            units: &units,
            now,
            no_execute_since: &self.no_execute_since,
            failed_since: &self.failed_since,
            backoff_until: &backoff_until,
            gates: &gates,
            ready_since: &ready_since,
        });

        let mut errors = Vec::new();
        for action in &p.actions {
            if let Err((ds, e)) = self.act(action).await {
                errors.push(format!("{ds}: {e}"));
                self.note_failure(&ds, e.to_string());
            }
        }
        self.sync_probes(&units, &desired);
        self.write_report(&node, &desired, &p, errors);
        let wake = p.wake_at.map(|w| self.origin + w);
        // A failed call is retried when its backoff ends.
        let retry = self
            .backoff
            .values()
            .map(|b| self.origin + b.until)
            .filter(|t| *t > Instant::now())
            .min();
        match (wake, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn act(&mut self, action: &Action) -> Result<(), (String, SystemdError)> {
        match action {
            Action::Start { unit, reason } => {
                info!(daemonset = %unit.daemonset, unit = %unit.name, revision = %unit.revision, %reason, "starting");
                match self.systemd.start_transient(unit).await {
                    Ok(()) => {
                        self.starting
                            .insert(unit.name.clone(), unit.daemonset.clone());
                        Ok(())
                    }
                    // Listed a moment ago as absent: it appeared meanwhile; next pass sees it.
                    Err(SystemdError::UnitExists(_)) => Ok(()),
                    Err(e) => Err((unit.daemonset.clone(), e)),
                }
            }
            Action::Stop {
                unit,
                daemonset,
                reason,
            } => {
                info!(%daemonset, %unit, %reason, "stopping");
                match self.systemd.stop(unit).await {
                    Ok(()) | Err(SystemdError::NoSuchUnit(_)) => Ok(()),
                    Err(e) => Err((daemonset.clone(), e)),
                }
            }
            Action::ResetFailed { unit, daemonset } => {
                info!(%daemonset, %unit, "clearing failed unit");
                match self.systemd.reset_failed(unit).await {
                    Ok(()) | Err(SystemdError::NoSuchUnit(_)) => Ok(()),
                    Err(e) => Err((daemonset.clone(), e)),
                }
            }
            Action::Orphan {
                unit,
                daemonset,
                description,
            } => {
                info!(%daemonset, %unit, "orphaning");
                self.systemd
                    .set_description(unit, description)
                    .await
                    .map(|()| {
                        self.orphaning.remove(daemonset);
                    })
                    .map_err(|e| (daemonset.clone(), e))
            }
            Action::Adopt {
                unit,
                daemonset,
                description,
            } => {
                info!(%daemonset, %unit, "adopting orphan");
                self.systemd
                    .set_description(unit, description)
                    .await
                    .map_err(|e| (daemonset.clone(), e))
            }
        }
    }

    /// Whether the daemonset `name` in force comes from `[source.git]`.
    fn is_from_git(&self, name: &str) -> bool {
        self.specs
            .source_of(name)
            .and_then(Path::to_str)
            .is_some_and(|p| p.starts_with(gitsource::FILE_PREFIX))
    }

    /// The git part of the report: the follower's, with the commit of each git-defined
    /// daemonset's unit.
    fn git_report(&self, daemonsets: &[DaemonSetReport]) -> Option<crate::report::GitReport> {
        let g = self.git.as_ref()?;
        let mut r = g.report.clone();
        r.units = daemonsets
            .iter()
            .filter_map(|ds| {
                let commit = self.unit_commits.get(&ds.unit)?.clone()?;
                Some((ds.name.clone(), commit))
            })
            .collect();
        Some(r)
    }

    /// The report of this pass, also written to the status file.
    fn report(
        &self,
        node: &Node,
        desired: &[Desired],
        p: &plan::Plan,
        errors: Vec<String>,
    ) -> NodeReport {
        let now = self.now();
        let mut held = self.specs.held();
        held.extend(self.specs.held_stems());
        let mut daemonsets: Vec<DaemonSetReport> = p
            .statuses
            .iter()
            .map(|s| DaemonSetReport {
                name: s.daemonset.clone(),
                file: self
                    .specs
                    .source_of(&s.daemonset)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                held: held.contains(&s.daemonset),
                should_run: s.verdict.should_run,
                should_continue_running: s.verdict.should_continue_running,
                reasons: s.verdict.reasons.clone(),
                unit: s.unit.clone().unwrap_or_default(),
                state: s.state.clone(),
                current_revision: s.current_revision.clone(),
                desired_revision: s.desired_revision.clone(),
                evict_in_seconds: s.evict_at.map(|at| at.saturating_sub(now).as_secs()),
                last_error: self
                    .last_error
                    .get(&s.daemonset)
                    .cloned()
                    .unwrap_or_default(),
                ready: s.state == "active/running",
                rollout: s.rollout.clone(),
                rollout_message: s.rollout_message.clone(),
                second: s.second.as_ref().map(|u| {
                    let mut second = crate::report::SecondUnitReport {
                        unit: u.unit.clone(),
                        state: u.state.clone(),
                        revision: u.revision.clone(),
                        ready: false,
                        ready_since: None,
                        readiness: String::new(),
                    };
                    self.fill_second_readiness(&mut second);
                    second
                }),
                pinned_revision: self.pins_applied.get(&s.daemonset).copied(),
                restarts: 0,
                main_pid: 0,
                started_at: None,
                memory_bytes: None,
                cpu_nanoseconds: None,
                ready_since: None,
                readiness: String::new(),
            })
            .map(|mut ds| {
                self.fill_live(&mut ds);
                ds
            })
            .collect();
        // Held daemonsets with no valid version: known only by their unit.
        for name in &held {
            if !desired.iter().any(|d| &d.ds.name == name) {
                let mut ds = DaemonSetReport {
                    name: name.clone(),
                    file: String::new(),
                    held: true,
                    should_run: false,
                    should_continue_running: false,
                    reasons: vec!["its spec file is invalid and no valid version is known: the unit is left as it is".into()],
                    unit: unit::unit_name(name),
                    state: String::new(),
                    current_revision: String::new(),
                    desired_revision: String::new(),
                    evict_in_seconds: None,
                    last_error: String::new(),
                    ready: false,
                    restarts: 0,
                    main_pid: 0,
                    started_at: None,
                    memory_bytes: None,
                    cpu_nanoseconds: None,
                    ready_since: None,
                    readiness: String::new(),
                    ..Default::default()
                };
                self.fill_live(&mut ds);
                daemonsets.push(ds);
            }
        }
        let git = self.git_report(&daemonsets);
        NodeReport {
            git,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            agent_instance: self.instance.clone(),
            // Numbered by the reporter, per report sent.
            sequence: 0,
            generated_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            node: NodeInfo {
                name: node.name.clone(),
                labels: node.labels.clone(),
                taints: node.taints.iter().map(ToString::to_string).collect(),
                unschedulable: node.unschedulable,
                addresses: self.addresses.clone(),
                conditions: report::node_conditions(&self.condition_taints),
            },
            daemonsets,
            diagnostics: self
                .node_diagnostics
                .iter()
                .chain(self.specs.diagnostics())
                .chain(self.git.iter().flat_map(|g| &g.diagnostics))
                .map(ToString::to_string)
                .collect(),
            errors,
        }
    }

    fn write_report(
        &mut self,
        node: &Node,
        desired: &[Desired],
        p: &plan::Plan,
        errors: Vec<String>,
    ) {
        let report = self.report(node, desired, p, errors);
        self.publish(report);
    }

    /// Write `report` to the status file and hand it to the reporter.
    fn publish(&mut self, report: NodeReport) {
        if let Some(path) = &self.status_path
            && let Err(e) = write_atomically(
                path,
                &serde_json::to_vec_pretty(&report).unwrap_or_default(),
            )
        {
            warn!(path = %path.display(), error = %e, "cannot write the status file");
        }
        self.reports.send_replace(Some(report.clone()));
        self.last_report = Some(report);
    }

    /// The live numbers of `ds.unit`, from the cache (zero and `None` when unknown).
    fn fill_live(&self, ds: &mut DaemonSetReport) {
        let d = self.live.get(&ds.unit);
        ds.restarts = d.map_or(0, |d| d.n_restarts);
        ds.main_pid = d.map_or(0, |d| d.main_pid);
        ds.started_at = d
            .map(|d| d.active_enter_timestamp_usec / 1_000_000)
            .filter(|&s| s > 0);
        ds.memory_bytes = d.and_then(|d| d.memory_current);
        ds.cpu_nanoseconds = d.and_then(|d| d.cpu_usage_nsec);
        self.fill_readiness(ds);
    }

    /// `ready`, `ready_since` and `readiness` of `ds` (after its live numbers): the unit is
    /// active and, for a unit of the desired revision, its probes say it is ready.
    fn fill_readiness(&self, ds: &mut DaemonSetReport) {
        let active = ds.state == "active/running";
        let of_desired =
            !ds.current_revision.is_empty() && ds.current_revision == ds.desired_revision;
        let process = self
            .in_force
            .get(&ds.name)
            .filter(|_| of_desired)
            .map(|d| &d.template.process);
        if active && let Some(r) = self.prober.readiness(&ds.unit) {
            ds.ready = r.ready;
            ds.ready_since = r.ready_since;
            ds.readiness = r.reason;
            return;
        }
        if active && process.is_some_and(|p| p.has_probes()) {
            // Met before its live numbers could be read: the probes start with them.
            ds.ready = false;
            ds.ready_since = None;
            ds.readiness = "the probes have not started yet".to_string();
            return;
        }
        ds.ready = active;
        ds.ready_since = if active { ds.started_at } else { None };
        ds.readiness = if active {
            String::new()
        } else if ds.state.is_empty() || ds.state == "absent" {
            "no unit runs it".to_string()
        } else {
            let mut why = format!("unit is {}", ds.state);
            if ds.state == "activating/start" && process.is_some_and(|p| p.notify) {
                why.push_str(": waiting for the daemon to send READY=1");
            }
            if let Some(killed) = self.prober.killed(&ds.unit) {
                why = format!("{why} (restarted after: {killed})");
            }
            why
        };
    }

    /// The last report with the readiness of its units filled in again; written and sent
    /// when it changed.
    fn republish(&mut self) {
        let Some(mut report) = self.last_report.clone() else {
            return;
        };
        for ds in &mut report.daemonsets {
            self.fill_readiness(ds);
            if let Some(s) = &mut ds.second {
                self.fill_second_readiness(s);
            }
        }
        if Some(&report) != self.last_report.as_ref() {
            report.generated_at = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.publish(report);
        }
    }

    /// `ready`, `ready_since` and `readiness` of a surge's second unit.
    fn fill_second_readiness(&self, s: &mut crate::report::SecondUnitReport) {
        s.ready_since = self.unit_ready_since(&s.unit, s.state == "active/running");
        s.ready = s.ready_since.is_some();
        s.readiness = self.unit_readiness(&s.unit, &s.state);
    }

    /// Why `unit` (in `state`) is not ready; empty when it is (or when nothing is known).
    fn unit_readiness(&self, unit: &str, state: &str) -> String {
        if state != "active/running" {
            return format!("unit is {state}");
        }
        match self.prober.readiness(unit) {
            Some(r) => r.reason,
            None if self.unit_ready_since(unit, true).is_none() => {
                "the probes have not started yet".to_string()
            }
            None => String::new(),
        }
    }

    /// Hand the units of this pass to the prober.
    fn sync_probes(&mut self, units: &[ObservedUnit], desired: &[Desired]) {
        let live = &self.live;
        let observed = units.iter().map(|u| {
            let details = live.get(&u.name);
            probes::Observed {
                unit: &u.name,
                active: u.active_state == "active",
                invocation: details.map_or("", |d| d.invocation_id.as_str()),
                active_enter_usec: details.map_or(0, |d| d.active_enter_timestamp_usec),
                desired: u.markers.as_ref().and_then(|m| {
                    desired
                        .iter()
                        .find(|d| d.ds.name == m.daemonset && d.unit.revision == m.revision)
                        .map(|d| &d.ds)
                }),
            }
        });
        self.prober.sync(observed);
    }

    /// When the prober next needs the loop (a probe or a kill due); `None` without probes.
    pub fn probe_wake(&self) -> Option<Instant> {
        self.prober.next_wake().map(tokio::time::Instant::into_std)
    }

    /// Send SIGKILL where a daemon outlived its grace period after a probe killed it, and
    /// start the probes that are due.
    pub async fn probe_tick(&mut self) {
        for (unit, invocation) in self.prober.take_due_kills() {
            match self.systemd.details(&unit).await {
                Ok(d) if d.invocation_id == invocation && d.main_pid != 0 => {
                    warn!(%unit, "still running after its grace period; sending SIGKILL");
                    if let Err(e) = self.systemd.kill(&unit, "all", SIGKILL).await {
                        warn!(%unit, error = %e, "cannot kill the daemon");
                    }
                }
                _ => {}
            }
        }
        self.prober.start_due(&self.systemd, &self.unit_options);
    }

    /// Reset the exec probes' units an earlier agent left failed (it stopped during a run,
    /// before it could read and reset them): a failed oneshot unit stays loaded for good.
    pub async fn clear_probe_units(&mut self) {
        let pattern = format!("{}*", unit::PROBE_UNIT_PREFIX);
        let Ok(units) = self.systemd.list(&pattern).await else {
            return;
        };
        for u in units.iter().filter(|u| u.active_state == "failed") {
            debug!(unit = %u.name, "resetting a failed probe unit of an earlier agent");
            let _ = self.systemd.reset_failed(&u.name).await;
        }
    }

    /// Whether probes are running.
    pub fn probing(&self) -> bool {
        self.prober.busy()
    }

    /// The next probe to finish (pending forever when none runs).
    pub async fn probe_done(&mut self) -> probes::Done {
        self.prober.next_done().await
    }

    /// Take a finished probe; kill a daemon whose liveness or startup probe failed (systemd
    /// restarts it). True when a pass is due: readiness changed (the report says so, and a
    /// surge rollout may stop the old unit now) or a daemon was killed.
    pub async fn on_probe(&mut self, done: probes::Done) -> bool {
        match self.prober.record(done) {
            Followup::None => false,
            Followup::Refresh => {
                self.republish();
                false
            }
            Followup::Report => true,
            Followup::Kill { unit, reason } => {
                warn!(%unit, %reason, "restarting {unit}: {reason}");
                if let Err(e) = self.systemd.kill(&unit, "main", SIGTERM).await {
                    warn!(%unit, error = %e, "cannot kill the daemon");
                }
                true
            }
        }
    }

    /// Read every cached unit's numbers again (memory and CPU change without a signal) and,
    /// when any number in the last report changed, write and publish it. The loop does this
    /// when the reporter asks ([`RefreshRequest`]), never on a timer.
    pub async fn refresh_live(&mut self) {
        let names: Vec<String> = self.live.keys().cloned().collect();
        for name in names {
            match self.systemd.details(&name).await {
                Ok(d) => {
                    self.live_stale.remove(&name);
                    self.live.insert(name, d);
                }
                Err(SystemdError::NoSuchUnit(_)) => {
                    self.live.remove(&name);
                    self.live_stale.remove(&name);
                }
                Err(e) => debug!(unit = %name, error = %e, "cannot refresh the unit's numbers"),
            }
        }
        let Some(mut report) = self.last_report.clone() else {
            return;
        };
        for ds in &mut report.daemonsets {
            self.fill_live(ds);
        }
        if Some(&report) != self.last_report.as_ref() {
            report.generated_at = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.publish(report);
        }
    }
}

/// Write `data` to `path` through a temporary file and a rename.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// What woke the loop.
enum Wake {
    Files(FileChange),
    Systemd(Event),
    Timer,
    Conditions,
    Refresh(RefreshRequest),
    Watchdog,
    Probe(probes::Done),
    /// The coordinator's directives changed (a slot, a pin, a wait).
    Control,
    /// The git follower published a snapshot.
    Git,
    /// SIGUSR1 (`hostset sync`): fetch now.
    SyncNow,
    Shutdown,
}

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

/// Run the agent until `shutdown` completes, reporting to the configured coordinator, if
/// any. Unusable TLS material for the coordinator (`ca_file`, `cert_file`, `key_file`) is an
/// error.
pub async fn run<S: Systemd>(
    agent: Agent<S>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let reporter = match &agent.config.coordinator {
        Some(c) => Some(Reporter::new(c).context("configuring the coordinator client")?),
        None => None,
    };
    run_with_reporter(agent, reporter, shutdown).await
}

/// [`run`] with the given reporter (or none), whatever the configuration says.
pub async fn run_with_reporter<S: Systemd>(
    mut agent: Agent<S>,
    reporter: Option<Reporter>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    /// Stops the reporter when the loop ends, however it ends.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    // The reporter asks for fresh metrics through this when it is about to send them.
    let (refresh_tx, mut refresh_rx) = mpsc::channel::<RefreshRequest>(1);
    let _reporting = match reporter {
        Some(r) => {
            info!(url = %r.url(), instance = %agent.instance, "reporting to the coordinator");
            let r = r.with_control(agent.control()).with_refresh(refresh_tx);
            Some(AbortOnDrop(tokio::spawn(r.run(agent.subscribe()))))
        }
        None => {
            drop(refresh_tx);
            info!("no coordinator configured; the status file is the only report");
            None
        }
    };
    let mut control = agent.control.subscribe();
    let mut events = agent.systemd.events().await?;
    let (file_tx, mut file_rx) = mpsc::channel::<FileChange>(FILE_CHANNEL_CAPACITY);
    let file_overflow = Arc::new(AtomicBool::new(false));
    let mut watcher = watch_files(
        &agent.config.spec_dir,
        &agent.config.node_file,
        file_tx,
        file_overflow.clone(),
    )?;
    let mut spec_dir_watched = agent.config.spec_dir.is_dir();
    // [source.git]: the follower on its own thread; its first snapshot (the commit applied
    // before a restart, if any) is in force before the first pass.
    let git = match &agent.config.git {
        Some(g) => {
            let dir = agent.config.state_dir.join("git");
            info!(url = %g.url, reference = %g.reference, mirror = %dir.display(), "following a git repository");
            Some(gitsource::spawn(gitsource::Follower::new(g.clone(), dir))?)
        }
        None => None,
    };
    let mut git_rx = git.as_ref().map(gitsource::Handle::subscribe);
    if let Some(rx) = &mut git_rx {
        let first = rx.borrow_and_update().clone();
        agent.apply_git(first);
    }
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .map_err(|e| warn!(error = %e, "cannot catch SIGUSR1: hostset sync will not work"))
        .ok();

    agent.clear_probe_units().await;
    agent.sample_conditions();
    agent.sample_addresses();
    agent.reload_node();
    agent.reload_specs();
    let mut next = agent.reconcile().await;
    sdnotify::notify("READY=1\nSTATUS=reconciled");
    info!(passes = agent.passes, "ready");

    let watchdog = sdnotify::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut conditions_tick = tokio::time::interval(CONDITIONS_INTERVAL);
    conditions_tick.tick().await;
    watchdog_tick.tick().await;
    tokio::pin!(shutdown);

    // Pending work, and when it is due: re-reading the files (at once, or after
    // quiet while a file is being written), and a pass (after systemd events and
    // condition changes, or the planner's deadline).
    let mut files = FileDebounce::default();
    let mut files_due: Option<Instant> = None;
    let mut pass_due: Option<Instant> = None;
    let earliest = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    loop {
        let deadline = earliest(
            earliest(earliest(files_due, pass_due), next),
            agent.probe_wake(),
        );
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let wake = tokio::select! {
            _ = &mut shutdown => Wake::Shutdown,
            Some(change) = file_rx.recv() => Wake::Files(change),
            Some(ev) = events.recv() => Wake::Systemd(ev),
            _ = sleep => Wake::Timer,
            _ = conditions_tick.tick() => Wake::Conditions,
            Some(reply) = refresh_rx.recv() => Wake::Refresh(reply),
            _ = watchdog_tick.tick(), if watchdog.is_some() => Wake::Watchdog,
            done = agent.probe_done(), if agent.probing() => Wake::Probe(done),
            Ok(()) = control.changed() => Wake::Control,
            Ok(()) = async { git_rx.as_mut().expect("guarded").changed().await }, if git_rx.is_some() => Wake::Git,
            Some(()) = async { usr1.as_mut().expect("guarded").recv().await }, if usr1.is_some() => Wake::SyncNow,
        };
        let now = Instant::now();
        match wake {
            Wake::Shutdown => {
                sdnotify::notify("STOPPING=1");
                info!("stopping; the daemons keep running");
                return Ok(());
            }
            Wake::Files(change) => {
                if !spec_dir_watched && agent.config.spec_dir.is_dir() {
                    use notify::Watcher;
                    spec_dir_watched = watcher
                        .watch(&agent.config.spec_dir, notify::RecursiveMode::NonRecursive)
                        .is_ok();
                }
                // Everything that arrived together is one batch (a burst of renames).
                files.note(change, now);
                while let Ok(change) = file_rx.try_recv() {
                    files.note(change, now);
                }
                if file_overflow.swap(false, Ordering::AcqRel) {
                    files.note(FileChange::Unknown, now);
                }
                files_due = files.due();
            }
            Wake::Systemd(ev) => {
                debug!(event = ?ev, "systemd");
                if agent.on_event(&ev) {
                    pass_due = earliest(pass_due, Some(now + UNIT_DEBOUNCE));
                }
            }
            Wake::Conditions => {
                // Both samples, whatever the first says.
                if agent.sample_conditions() | agent.sample_addresses() {
                    pass_due = Some(now);
                }
            }
            Wake::Refresh(reply) => {
                agent.refresh_live().await;
                let _ = reply.send(());
            }
            Wake::Watchdog => sdnotify::notify("WATCHDOG=1"),
            Wake::Probe(done) => {
                if agent.on_probe(done).await {
                    pass_due = earliest(pass_due, Some(now));
                }
            }
            Wake::Control => {
                control.borrow_and_update();
                pass_due = Some(now);
            }
            Wake::Git => {
                if let Some(rx) = &mut git_rx {
                    let snapshot = rx.borrow_and_update().clone();
                    agent.apply_git(snapshot);
                    pass_due = Some(now);
                }
            }
            Wake::SyncNow => match &git {
                Some(g) => {
                    info!("SIGUSR1: fetching the git repository now");
                    g.sync_now();
                }
                None => info!("SIGUSR1: no [source.git] to sync"),
            },
            Wake::Timer => {
                let mut due = next.is_some_and(|t| t <= now) || pass_due.is_some_and(|t| t <= now);
                if files_due.is_some_and(|t| t <= now) {
                    agent.reload_node();
                    agent.reload_specs();
                    files = FileDebounce::default();
                    files_due = None;
                    due = true;
                }
                if due {
                    pass_due = None;
                    next = agent.reconcile().await;
                }
                agent.probe_tick().await;
            }
        }
    }
}

/// Watch the spec directory and the node file's directory; every relevant
/// change is sent, classified ([`classify`]), to the loop. When the channel is
/// full, `overflow` is set instead and the loop falls back to waiting for quiet.
fn watch_files(
    spec_dir: &Path,
    node_file: &Path,
    tx: mpsc::Sender<FileChange>,
    overflow: Arc<AtomicBool>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let node_file = node_file.to_path_buf();
    let node_name = node_file.file_name().map(|n| n.to_os_string());
    let spec_dir_owned = spec_dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let changes = match res {
            Ok(ev) => classify(&ev, |p| {
                if p == spec_dir_owned {
                    Relevance::Directory
                } else if (p.parent() == Some(spec_dir_owned.as_path())
                    && crate::source::is_relevant(p))
                    || (node_name.is_some() && p.file_name() == node_name.as_deref())
                {
                    Relevance::File
                } else {
                    Relevance::None
                }
            }),
            // The watcher lost track (e.g. it could not read its events): re-read after quiet.
            Err(_) => vec![FileChange::Unknown],
        };
        for change in changes {
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(change) {
                overflow.store(true, Ordering::Release);
            }
        }
    })?;
    if spec_dir.is_dir() {
        watcher.watch(spec_dir, RecursiveMode::NonRecursive)?;
    } else {
        warn!(dir = %spec_dir.display(), "spec directory does not exist; watching its parent");
    }
    // The node file's directory (the file itself may be replaced by rename),
    // and the spec directory's parent, to notice the directory appearing.
    let mut parents: Vec<PathBuf> = Vec::new();
    for p in [node_file.parent(), spec_dir.parent()]
        .into_iter()
        .flatten()
    {
        if p.is_dir() && !parents.iter().any(|q| q == p) && p != spec_dir {
            parents.push(p.to_path_buf());
        }
    }
    for p in parents {
        watcher.watch(&p, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// What one file event says about a file the agent reads (the spec files, the node file).
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileChange {
    /// Its new content is complete: renamed into place (`IN_MOVED_TO`) or closed
    /// after writing (`IN_CLOSE_WRITE`).
    Complete(PathBuf),
    /// Its owner or mode changed (`IN_ATTRIB`): complete, unless it is being written.
    Metadata(PathBuf),
    /// Being written (`IN_CREATE`, `IN_MODIFY`): more may follow.
    Writing(PathBuf),
    /// Removed or renamed away (`IN_DELETE`, `IN_MOVED_FROM`): perhaps only for a
    /// moment, as when an editor renames the old version aside and writes a new one.
    Removed(PathBuf),
    /// Something that names no file: the directory itself, an inotify queue overflow.
    Unknown,
}

/// What a path of an event is to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relevance {
    /// A spec file or the node file.
    File,
    /// The spec directory itself.
    Directory,
    /// Anything else (hidden and temporary files, other extensions).
    None,
}

/// The changes one notify event stands for. Reads (`IN_OPEN`, `IN_CLOSE_NOWRITE`)
/// change nothing, and the agent's own reads must not wake it.
fn classify(ev: &notify::Event, relevance: impl Fn(&Path) -> Relevance) -> Vec<FileChange> {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    if ev.need_rescan() {
        return vec![FileChange::Unknown];
    }
    let of = |p: &PathBuf, f: fn(PathBuf) -> FileChange| match relevance(p) {
        Relevance::File => Some(f(p.clone())),
        Relevance::Directory => Some(FileChange::Unknown),
        Relevance::None => None,
    };
    let each = |f: fn(PathBuf) -> FileChange| ev.paths.iter().filter_map(|p| of(p, f)).collect();
    match &ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => each(FileChange::Complete),
        EventKind::Access(_) => Vec::new(),
        // notify reports a rename within the directory three times: From, To, and
        // Both with [from, to].
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if ev.paths.len() == 2 => [
            of(&ev.paths[0], FileChange::Removed),
            of(&ev.paths[1], FileChange::Complete),
        ]
        .into_iter()
        .flatten()
        .collect(),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => each(FileChange::Complete),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => each(FileChange::Removed),
        EventKind::Modify(ModifyKind::Metadata(_)) => each(FileChange::Metadata),
        EventKind::Modify(ModifyKind::Data(_)) | EventKind::Create(_) => each(FileChange::Writing),
        EventKind::Remove(_) => each(FileChange::Removed),
        // Any other rename, modification or event: not followed, re-read after quiet.
        _ => {
            let touched = ev.paths.iter().any(|p| relevance(p) != Relevance::None);
            if touched {
                vec![FileChange::Unknown]
            } else {
                Vec::new()
            }
        }
    }
}

/// When to re-read the files after changes: at once when every file that changed is
/// complete; after [`FILE_DEBOUNCE`] of quiet (at most [`FILE_DEBOUNCE_MAX`] after the
/// first change) while a file is being written, was removed and has not come back, or a
/// change could not be attributed. Reset after every re-read.
#[derive(Debug, Default)]
struct FileDebounce {
    /// Files created or modified and not yet closed or renamed into place.
    writing: HashSet<PathBuf>,
    /// Files removed or renamed away, not back since.
    removed: HashSet<PathBuf>,
    /// A change that names no file.
    unknown: bool,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl FileDebounce {
    fn note(&mut self, change: FileChange, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        match change {
            FileChange::Complete(p) => {
                self.writing.remove(&p);
                self.removed.remove(&p);
            }
            // A chmod in the middle of a write changes nothing about the write.
            FileChange::Metadata(_) => {}
            FileChange::Writing(p) => {
                self.removed.remove(&p);
                self.writing.insert(p);
            }
            FileChange::Removed(p) => {
                self.writing.remove(&p);
                self.removed.insert(p);
            }
            FileChange::Unknown => self.unknown = true,
        }
    }

    /// When the files are to be re-read; `None` when nothing changed.
    fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        if self.writing.is_empty() && self.removed.is_empty() && !self.unknown {
            Some(last)
        } else {
            Some((last + FILE_DEBOUNCE).min(first + FILE_DEBOUNCE_MAX))
        }
    }
}

/// The daemonset `name` from a pin's spec text, checked to have the pinned revision.
fn decode_pin(name: &str, pin: &crate::rollout::Pin) -> Result<DaemonSet, String> {
    let format = crate::spec::format_of(Path::new(&pin.file))
        .ok_or_else(|| format!("{}: not a spec file name", pin.file))?;
    let loaded = crate::spec::parse_daemonsets(&pin.file, &pin.text, format);
    if let Some(d) = loaded
        .diagnostics
        .iter()
        .find(|d| d.severity == crate::spec::Severity::Error)
    {
        return Err(d.to_string());
    }
    let ds = loaded
        .items
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| format!("{} holds no daemonset {name}", pin.file))?;
    let revision = unit::revision(&ds.template);
    if revision != pin.to {
        return Err(format!(
            "its text has revision {revision}, not the pinned {}",
            pin.to
        ));
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::EventKind;
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind,
        RenameMode,
    };

    const DIR: &str = "/etc/hostset/daemonsets.d";

    fn relevance(p: &Path) -> Relevance {
        if p == Path::new(DIR) {
            Relevance::Directory
        } else if p.parent() == Some(Path::new(DIR)) && crate::source::is_relevant(p) {
            Relevance::File
        } else {
            Relevance::None
        }
    }

    fn event(kind: EventKind, names: &[&str]) -> notify::Event {
        names.iter().fold(notify::Event::new(kind), |ev, n| {
            ev.add_path(if n.is_empty() {
                PathBuf::from(DIR)
            } else {
                Path::new(DIR).join(n)
            })
        })
    }

    fn changes(kind: EventKind, names: &[&str]) -> Vec<FileChange> {
        classify(&event(kind, names), relevance)
    }

    fn path(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    /// The events of a sequence, noted at `t0`, and when the re-read is then due.
    fn due_after(events: &[(EventKind, &[&str])]) -> (Instant, Option<Instant>) {
        let t0 = Instant::now();
        let mut d = FileDebounce::default();
        for (kind, names) in events {
            for c in changes(*kind, names) {
                d.note(c, t0);
            }
        }
        (t0, d.due())
    }

    const RENAME_TO: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    const RENAME_FROM: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::From));
    const RENAME_BOTH: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
    const CREATE: EventKind = EventKind::Create(CreateKind::File);
    const MODIFY: EventKind = EventKind::Modify(ModifyKind::Data(DataChange::Any));
    const CLOSE_WRITE: EventKind = EventKind::Access(AccessKind::Close(AccessMode::Write));
    const CLOSE_READ: EventKind = EventKind::Access(AccessKind::Close(AccessMode::Read));
    const OPEN: EventKind = EventKind::Access(AccessKind::Open(AccessMode::Any));
    const ATTRIB: EventKind = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any));
    const DELETE: EventKind = EventKind::Remove(RemoveKind::File);

    #[test]
    fn events_are_classified_by_what_they_say_about_the_content() {
        assert_eq!(
            changes(RENAME_TO, &["a.toml"]),
            [FileChange::Complete(path("a.toml"))]
        );
        assert_eq!(
            changes(RENAME_BOTH, &[".a.toml.tmp", "a.toml"]),
            [FileChange::Complete(path("a.toml"))]
        );
        assert_eq!(
            changes(RENAME_BOTH, &["a.toml", "a.toml~"]),
            [FileChange::Removed(path("a.toml"))]
        );
        assert_eq!(
            changes(CLOSE_WRITE, &["a.toml"]),
            [FileChange::Complete(path("a.toml"))]
        );
        assert_eq!(
            changes(CREATE, &["a.toml"]),
            [FileChange::Writing(path("a.toml"))]
        );
        assert_eq!(
            changes(MODIFY, &["a.toml"]),
            [FileChange::Writing(path("a.toml"))]
        );
        assert_eq!(
            changes(ATTRIB, &["a.toml"]),
            [FileChange::Metadata(path("a.toml"))]
        );
        assert_eq!(
            changes(DELETE, &["a.toml"]),
            [FileChange::Removed(path("a.toml"))]
        );
        assert_eq!(
            changes(RENAME_FROM, &["a.toml"]),
            [FileChange::Removed(path("a.toml"))]
        );
        // Reads are not changes: the agent's own reads must not wake it.
        assert!(changes(OPEN, &["a.toml"]).is_empty());
        assert!(changes(CLOSE_READ, &["a.toml"]).is_empty());
        // Files the agent ignores, and the directory itself.
        assert!(changes(CREATE, &[".a.toml.tmp"]).is_empty());
        assert!(changes(CLOSE_WRITE, &["notes.txt"]).is_empty());
        assert_eq!(changes(ATTRIB, &[""]), [FileChange::Unknown]);
        assert_eq!(
            classify(
                &notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan),
                relevance
            ),
            [FileChange::Unknown]
        );
    }

    #[test]
    fn a_complete_file_is_read_at_once() {
        // Written aside and renamed into place (the documented way, and what the
        // hostset CLI, package managers and config management do).
        let (t0, due) = due_after(&[
            (CREATE, &[".a.toml.tmp"]),
            (MODIFY, &[".a.toml.tmp"]),
            (CLOSE_WRITE, &[".a.toml.tmp"]),
            (RENAME_FROM, &[".a.toml.tmp"]),
            (RENAME_TO, &["a.toml"]),
            (RENAME_BOTH, &[".a.toml.tmp", "a.toml"]),
        ]);
        assert_eq!(due, Some(t0));
        // Written in place and closed (cp, nano).
        let (t0, due) = due_after(&[
            (CREATE, &["a.toml"]),
            (MODIFY, &["a.toml"]),
            (CLOSE_WRITE, &["a.toml"]),
            (ATTRIB, &["a.toml"]),
        ]);
        assert_eq!(due, Some(t0));
        // vim: the old version renamed aside, the new one written and closed.
        let (t0, due) = due_after(&[
            (RENAME_FROM, &["a.toml"]),
            (RENAME_TO, &["a.toml~"]),
            (RENAME_BOTH, &["a.toml", "a.toml~"]),
            (CREATE, &["a.toml"]),
            (MODIFY, &["a.toml"]),
            (CLOSE_WRITE, &["a.toml"]),
            (DELETE, &["a.toml~"]),
        ]);
        assert_eq!(due, Some(t0));
        // A chown or chmod.
        let (t0, due) = due_after(&[(ATTRIB, &["a.toml"])]);
        assert_eq!(due, Some(t0));
        // Nothing relevant: nothing due.
        assert_eq!(
            due_after(&[(OPEN, &["a.toml"]), (CREATE, &["x.tmp"])]).1,
            None
        );
    }

    #[test]
    fn a_file_being_written_or_gone_waits_for_quiet() {
        let quiet = |t0: Instant| Some(t0 + FILE_DEBOUNCE);
        // Written, not closed yet: whatever else is complete meanwhile.
        let (t0, due) = due_after(&[
            (CREATE, &["a.toml"]),
            (MODIFY, &["a.toml"]),
            (RENAME_TO, &["b.toml"]),
            (ATTRIB, &["a.toml"]),
        ]);
        assert_eq!(due, quiet(t0));
        // Removed (perhaps an editor about to write the new version).
        let (t0, due) = due_after(&[(DELETE, &["a.toml"])]);
        assert_eq!(due, quiet(t0));
        let (t0, due) = due_after(&[(RENAME_FROM, &["a.toml"]), (RENAME_TO, &["b.toml"])]);
        assert_eq!(due, quiet(t0));
        // Created and deleted again.
        let (t0, due) = due_after(&[(CREATE, &["a.toml"]), (DELETE, &["a.toml"])]);
        assert_eq!(due, quiet(t0));
        // The directory itself.
        let (t0, due) = due_after(&[(ATTRIB, &[""]), (RENAME_TO, &["a.toml"])]);
        assert_eq!(due, quiet(t0));
    }

    #[test]
    fn quiet_is_waited_for_at_most_the_maximum() {
        let t0 = Instant::now();
        let mut d = FileDebounce::default();
        let mut t = t0;
        while t < t0 + FILE_DEBOUNCE_MAX * 2 {
            d.note(FileChange::Writing(path("a.toml")), t);
            t += Duration::from_millis(50);
        }
        assert_eq!(d.due(), Some(t0 + FILE_DEBOUNCE_MAX));
        // The writer closes the file: at once.
        d.note(FileChange::Complete(path("a.toml")), t);
        assert_eq!(d.due(), Some(t));
    }
}
