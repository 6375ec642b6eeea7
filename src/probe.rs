//! Probe thresholds and timing: kubelet's prober worker as a pure state machine.
//!
//! One [`UnitProbes`] follows the probes of one run of one unit (one systemd invocation:
//! a restart of the unit starts a new one, as a container restart starts new probe workers
//! in kubelet). It never runs a probe itself: the agent asks it which probes are due
//! ([`UnitProbes::take_due`]), runs them, and hands back each outcome
//! ([`UnitProbes::record`]). Time is a [`Duration`] on the caller's monotonic clock, so the
//! machine is tested without waiting.
//!
//! # Semantics (`pkg/kubelet/prober/worker.go`, `prober_manager.go`)
//!
//! - Results before any probe: readiness *failure* (not ready until a probe passes),
//!   liveness *success*, startup *unknown* (not started).
//! - A probe runs every `periodSeconds`, the first time `initialDelaySeconds` after the unit
//!   became active. Ticks missed while a probe was running (a timeout longer than the period)
//!   are skipped, as with kubelet's ticker.
//! - The liveness and readiness probes do not run until the startup probe (if any) has
//!   succeeded; then they start at once (subject to their initial delay). The startup probe
//!   stops after its first success.
//! - A result changes only after `successThreshold` consecutive successes or
//!   `failureThreshold` consecutive failures.
//! - A liveness or startup result of failure asks for a restart ([`Effect::Restart`]), and
//!   that probe stops until the unit runs again (kubelet's `onHold`).
//! - Ready: startup succeeded (or none) and readiness passing (or none).

use std::time::Duration;

use crate::spec::Probe;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Startup, Kind::Liveness, Kind::Readiness];

    /// `startup probe`, `liveness probe`, `readiness probe`.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Startup => "startup probe",
            Kind::Liveness => "liveness probe",
            Kind::Readiness => "readiness probe",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.noun())
    }
}

/// The timing of one probe, from the spec (validated: non-negative, thresholds ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    /// The timing `probe` declares. Zero period, timeout and thresholds (which defaulting
    /// leaves no way to reach) are taken as 1.
    pub fn of(probe: &Probe) -> Timing {
        let secs = |s: i64| Duration::from_secs(u64::try_from(s).unwrap_or(0));
        let at_least_one = |v: i64| u32::try_from(v.max(1)).unwrap_or(u32::MAX);
        Timing {
            initial_delay: secs(probe.initial_delay_seconds),
            period: secs(probe.period_seconds.max(1)),
            timeout: secs(probe.timeout_seconds.max(1)),
            success_threshold: at_least_one(probe.success_threshold),
            failure_threshold: at_least_one(probe.failure_threshold),
        }
    }
}

/// What one run of a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Why, e.g. `HTTP GET http://127.0.0.1:9100/metrics: 503`.
    Failure(String),
}

/// What an outcome asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing changed that anyone outside needs to know.
    None,
    /// [`UnitProbes::ready`] changed.
    ReadinessChanged,
    /// Kill the daemon so that systemd restarts it; the reason names the probe, e.g.
    /// `liveness probe failed 3 times: TCP connect 127.0.0.1:6000: connection refused`.
    Restart(String),
}

/// One probe's state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracker {
    kind: Kind,
    timing: Timing,
    /// When it is due next; `None` while it waits for the startup probe, runs, or is done.
    due: Option<Duration>,
    /// The tick it was taken at, while it runs.
    running_since: Option<Duration>,
    /// The current result (see the module documentation for the initial ones).
    passing: Option<bool>,
    /// The last outcome's verdict and how many in a row.
    last: Option<bool>,
    run: u32,
    /// The last failure's message.
    message: String,
    /// A restart was asked for: no more runs in this invocation.
    on_hold: bool,
}

impl Tracker {
    fn new(kind: Kind, probe: &Probe) -> Tracker {
        Tracker {
            kind,
            timing: Timing::of(probe),
            due: None,
            running_since: None,
            passing: match kind {
                Kind::Readiness => Some(false),
                Kind::Liveness => Some(true),
                Kind::Startup => None,
            },
            last: None,
            run: 0,
            message: String::new(),
            on_hold: false,
        }
    }
}

/// What an agent that restarts keeps of a unit's probes (per invocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    pub startup_succeeded: bool,
    pub ready: bool,
}

/// The probes of one invocation of one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitProbes {
    /// When the unit became active.
    started: Duration,
    trackers: Vec<Tracker>,
    /// The startup probe succeeded (true when there is none).
    startup_succeeded: bool,
}

impl UnitProbes {
    /// The probes of a unit that became active at `started` (possibly before `now`, when the
    /// agent meets a running unit), with what an earlier agent knew of this same invocation.
    pub fn new(
        startup: Option<&Probe>,
        liveness: Option<&Probe>,
        readiness: Option<&Probe>,
        started: Duration,
        now: Duration,
        restored: Option<Restored>,
    ) -> UnitProbes {
        let mut trackers: Vec<Tracker> = [
            (Kind::Startup, startup),
            (Kind::Liveness, liveness),
            (Kind::Readiness, readiness),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.map(|p| Tracker::new(k, p)))
        .collect();
        let has_startup = trackers.iter().any(|t| t.kind == Kind::Startup);
        let mut startup_succeeded = !has_startup;
        if let Some(r) = restored {
            startup_succeeded |= r.startup_succeeded;
            for t in &mut trackers {
                match t.kind {
                    Kind::Startup if r.startup_succeeded => t.passing = Some(true),
                    // Ready before the restart: stays ready until the probe fails
                    // failureThreshold times, as it would have without the restart.
                    Kind::Readiness if r.ready => {
                        t.passing = Some(true);
                        t.last = Some(true);
                        t.run = t.timing.success_threshold;
                    }
                    _ => {}
                }
            }
        }
        let mut probes = UnitProbes {
            started,
            trackers,
            startup_succeeded,
        };
        for t in &mut probes.trackers {
            let waits = t.kind != Kind::Startup && !probes.startup_succeeded;
            let done = t.kind == Kind::Startup && probes.startup_succeeded;
            if !waits && !done {
                t.due = Some((started + t.timing.initial_delay).max(now));
            }
        }
        probes
    }

    /// Whether the daemon is ready as far as the probes go: the startup probe has succeeded
    /// (or there is none) and the readiness probe passes (or there is none).
    pub fn ready(&self) -> bool {
        self.startup_succeeded
            && self
                .trackers
                .iter()
                .filter(|t| t.kind == Kind::Readiness)
                .all(|t| t.passing == Some(true))
    }

    /// Whether the startup probe has succeeded (true when there is none).
    pub fn startup_succeeded(&self) -> bool {
        self.startup_succeeded
    }

    /// What to keep across an agent restart.
    pub fn keep(&self) -> Restored {
        Restored {
            startup_succeeded: self.startup_succeeded,
            ready: self.ready(),
        }
    }

    /// When the next probe is due; `None` when none will run (all done, waiting or running).
    pub fn next_due(&self) -> Option<Duration> {
        self.trackers.iter().filter_map(|t| t.due).min()
    }

    /// The probes due at `now`, each with its timeout; they count as running until their
    /// outcome is [recorded](Self::record).
    pub fn take_due(&mut self, now: Duration) -> Vec<(Kind, Duration)> {
        let mut out = Vec::new();
        for t in &mut self.trackers {
            if let Some(due) = t.due
                && due <= now
            {
                t.due = None;
                t.running_since = Some(due);
                out.push((t.kind, t.timing.timeout));
            }
        }
        out
    }

    /// Record the outcome of a `kind` probe that finished at `now`.
    pub fn record(&mut self, kind: Kind, outcome: Outcome, now: Duration) -> Effect {
        let ready_before = self.ready();
        let Some(t) = self.trackers.iter_mut().find(|t| t.kind == kind) else {
            return Effect::None;
        };
        let Some(tick) = t.running_since.take() else {
            // Not taken (a stale outcome): ignore.
            return Effect::None;
        };
        if t.on_hold {
            return Effect::None;
        }
        let success = outcome == Outcome::Success;
        if let Outcome::Failure(m) = outcome {
            t.message = m;
        }
        if t.last == Some(success) {
            t.run = t.run.saturating_add(1);
        } else {
            t.last = Some(success);
            t.run = 1;
        }
        let threshold = if success {
            t.timing.success_threshold
        } else {
            t.timing.failure_threshold
        };
        if t.run >= threshold {
            t.passing = Some(success);
        }
        // The next tick of the period after the one just run, skipping those missed.
        let mut next = tick + t.timing.period;
        while next < now {
            next += t.timing.period;
        }
        t.due = Some(next);

        let mut effect = Effect::None;
        match (t.kind, t.passing) {
            (Kind::Startup, Some(true)) => {
                t.due = None;
                self.startup_succeeded = true;
                let started = self.started;
                for o in &mut self.trackers {
                    if o.kind != Kind::Startup && !o.on_hold {
                        o.due = Some((started + o.timing.initial_delay).max(now));
                    }
                }
            }
            (Kind::Startup | Kind::Liveness, Some(false)) => {
                t.due = None;
                t.on_hold = true;
                effect = Effect::Restart(format!(
                    "{} failed {} {}: {}",
                    t.kind,
                    t.run,
                    times(t.run),
                    t.message
                ));
            }
            _ => {}
        }
        if effect == Effect::None && self.ready() != ready_before {
            effect = Effect::ReadinessChanged;
        }
        effect
    }

    /// Why the daemon is not ready, as far as the probes go; empty when it is.
    pub fn reason(&self) -> String {
        if !self.startup_succeeded {
            return self
                .trackers
                .iter()
                .find(|t| t.kind == Kind::Startup)
                .map(describe)
                .unwrap_or_default();
        }
        self.trackers
            .iter()
            .find(|t| t.kind == Kind::Readiness && t.passing != Some(true))
            .map(describe)
            .unwrap_or_default()
    }
}

fn times(n: u32) -> &'static str {
    if n == 1 { "time" } else { "times" }
}

/// A probe that does not (yet) pass, in words.
fn describe(t: &Tracker) -> String {
    match t.last {
        None if t.running_since.is_some() || t.due.is_some() => {
            format!("{} has not succeeded yet", t.kind)
        }
        None => format!("{} has not run yet", t.kind),
        Some(false) => {
            // Once the result is failure the count stops growing in the message: a report
            // is sent on every change of it, and "failed 3 times" says all there is.
            let n = if t.passing == Some(false) {
                t.run.min(t.timing.failure_threshold)
            } else {
                t.run
            };
            format!("{} failed {n} {}: {}", t.kind, times(n), t.message)
        }
        Some(true) => format!(
            "{} succeeded {} of successThreshold {} times after failing: {}",
            t.kind, t.run, t.timing.success_threshold, t.message
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PortRef, ProbeHandler};

    fn probe(period: i64, success: i64, failure: i64, delay: i64) -> Probe {
        Probe {
            initial_delay_seconds: delay,
            period_seconds: period,
            success_threshold: success,
            failure_threshold: failure,
            ..Probe::new(ProbeHandler::TcpSocket {
                host: String::new(),
                port: PortRef::Number(80),
            })
        }
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn fail(m: &str) -> Outcome {
        Outcome::Failure(m.to_string())
    }

    /// Run every probe due at `now` with the outcome `f` gives it.
    fn tick(p: &mut UnitProbes, now: Duration, f: impl Fn(Kind) -> Outcome) -> Vec<Effect> {
        p.take_due(now)
            .into_iter()
            .map(|(k, _)| p.record(k, f(k), now))
            .collect()
    }

    #[test]
    fn readiness_starts_failed_and_passes_after_success_threshold() {
        let r = probe(5, 2, 3, 0);
        let mut p = UnitProbes::new(None, None, Some(&r), s(100), s(100), None);
        assert!(!p.ready());
        assert_eq!(p.reason(), "readiness probe has not succeeded yet");
        assert_eq!(p.next_due(), Some(s(100)));
        assert_eq!(tick(&mut p, s(100), |_| fail("503")), [Effect::None]);
        assert_eq!(p.reason(), "readiness probe failed 1 time: 503");
        assert_eq!(p.next_due(), Some(s(105)));
        assert_eq!(tick(&mut p, s(105), |_| Outcome::Success), [Effect::None]);
        assert!(!p.ready());
        assert_eq!(
            p.reason(),
            "readiness probe succeeded 1 of successThreshold 2 times after failing: 503"
        );
        assert_eq!(
            tick(&mut p, s(110), |_| Outcome::Success),
            [Effect::ReadinessChanged]
        );
        assert!(p.ready());
        assert_eq!(p.reason(), "");
        // Two failures are not enough to fail with failureThreshold 3; the third is.
        assert_eq!(tick(&mut p, s(115), |_| fail("503")), [Effect::None]);
        assert_eq!(tick(&mut p, s(120), |_| fail("503")), [Effect::None]);
        assert!(p.ready());
        assert_eq!(
            tick(&mut p, s(125), |_| fail("timeout")),
            [Effect::ReadinessChanged]
        );
        assert_eq!(p.reason(), "readiness probe failed 3 times: timeout");
        // Further failures do not change the reason (each change is a report).
        assert_eq!(tick(&mut p, s(127), |_| fail("timeout")), []);
        assert_eq!(tick(&mut p, s(130), |_| fail("timeout")), [Effect::None]);
        assert_eq!(p.reason(), "readiness probe failed 3 times: timeout");
        // A success in between resets the count.
        assert_eq!(tick(&mut p, s(135), |_| Outcome::Success), [Effect::None]);
        assert_eq!(tick(&mut p, s(140), |_| fail("x")), [Effect::None]);
        assert_eq!(p.reason(), "readiness probe failed 1 time: x");
    }

    #[test]
    fn nothing_runs_before_it_is_due_or_twice_at_once() {
        let r = probe(10, 1, 3, 7);
        let mut p = UnitProbes::new(None, None, Some(&r), s(0), s(2), None);
        assert_eq!(p.next_due(), Some(s(7)));
        assert!(p.take_due(s(6)).is_empty());
        assert_eq!(p.take_due(s(7)), [(Kind::Readiness, s(1))]);
        // Running: not due again, and nothing to wait for.
        assert_eq!(p.next_due(), None);
        assert!(p.take_due(s(100)).is_empty());
        // An outcome nobody asked for is ignored.
        let mut q = p.clone();
        assert_eq!(q.record(Kind::Liveness, fail("?"), s(8)), Effect::None);
        assert_eq!(
            p.record(Kind::Readiness, Outcome::Success, s(8)),
            Effect::ReadinessChanged
        );
        assert_eq!(p.record(Kind::Readiness, fail("late"), s(8)), Effect::None);
        assert!(p.ready());
        assert_eq!(p.next_due(), Some(s(17)));
    }

    #[test]
    fn a_slow_probe_skips_the_ticks_it_missed() {
        let r = probe(2, 1, 3, 0);
        let mut p = UnitProbes::new(None, None, Some(&r), s(0), s(0), None);
        assert_eq!(p.take_due(s(0)).len(), 1);
        // Finished after 5 s (ticks at 2 and 4 missed): next at 6.
        p.record(Kind::Readiness, Outcome::Success, s(5));
        assert_eq!(p.next_due(), Some(s(6)));
    }

    #[test]
    fn a_unit_met_running_is_probed_at_once_after_its_initial_delay() {
        let r = probe(10, 1, 3, 30);
        // Active since 100, the agent starts at 500: due now.
        let p = UnitProbes::new(None, None, Some(&r), s(100), s(500), None);
        assert_eq!(p.next_due(), Some(s(500)));
        // Active since 490: due at 520.
        let p = UnitProbes::new(None, None, Some(&r), s(490), s(500), None);
        assert_eq!(p.next_due(), Some(s(520)));
    }

    #[test]
    fn liveness_failure_asks_for_one_restart_and_holds() {
        let l = probe(10, 1, 3, 0);
        let mut p = UnitProbes::new(None, Some(&l), None, s(0), s(0), None);
        // Liveness alone does not make the daemon unready.
        assert!(p.ready());
        assert_eq!(tick(&mut p, s(0), |_| fail("refused")), [Effect::None]);
        assert_eq!(tick(&mut p, s(10), |_| fail("refused")), [Effect::None]);
        assert_eq!(
            tick(&mut p, s(20), |_| fail("connection refused")),
            [Effect::Restart(
                "liveness probe failed 3 times: connection refused".into()
            )]
        );
        // On hold until the unit runs again (a new UnitProbes).
        assert_eq!(p.next_due(), None);
        assert!(p.ready());
    }

    #[test]
    fn startup_gates_liveness_and_readiness() {
        let st = probe(1, 1, 5, 0);
        let l = probe(10, 1, 3, 0);
        let r = probe(5, 1, 3, 2);
        let mut p = UnitProbes::new(Some(&st), Some(&l), Some(&r), s(0), s(0), None);
        assert_eq!(p.reason(), "startup probe has not succeeded yet");
        // Only the startup probe runs.
        assert_eq!(p.take_due(s(0)), [(Kind::Startup, s(1))]);
        assert_eq!(p.record(Kind::Startup, fail("no"), s(0)), Effect::None);
        assert_eq!(p.reason(), "startup probe failed 1 time: no");
        assert_eq!(p.next_due(), Some(s(1)));
        assert_eq!(p.take_due(s(1)), [(Kind::Startup, s(1))]);
        // Success: liveness at once, readiness after its initial delay (counted from the
        // start, already over).
        assert_eq!(
            p.record(Kind::Startup, Outcome::Success, s(4)),
            Effect::None
        );
        assert!(p.startup_succeeded());
        assert!(!p.ready());
        assert_eq!(p.reason(), "readiness probe has not succeeded yet");
        let mut due = p.take_due(s(4));
        due.sort();
        assert_eq!(due, [(Kind::Liveness, s(1)), (Kind::Readiness, s(1))]);
        assert_eq!(
            p.record(Kind::Liveness, Outcome::Success, s(4)),
            Effect::None
        );
        assert_eq!(
            p.record(Kind::Readiness, Outcome::Success, s(4)),
            Effect::ReadinessChanged
        );
        // The startup probe is done.
        assert_eq!(p.next_due(), Some(s(9)));
        let mut due = p.take_due(s(14));
        due.sort();
        assert_eq!(due, [(Kind::Liveness, s(1)), (Kind::Readiness, s(1))]);
    }

    #[test]
    fn startup_failure_asks_for_a_restart() {
        let st = probe(1, 1, 2, 0);
        let mut p = UnitProbes::new(Some(&st), None, None, s(0), s(0), None);
        assert!(!p.ready());
        assert_eq!(tick(&mut p, s(0), |_| fail("no")), [Effect::None]);
        assert_eq!(
            tick(&mut p, s(1), |_| fail("still no")),
            [Effect::Restart(
                "startup probe failed 2 times: still no".into()
            )]
        );
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn startup_alone_makes_ready_on_success() {
        let st = probe(1, 1, 2, 0);
        let mut p = UnitProbes::new(Some(&st), None, None, s(0), s(0), None);
        assert_eq!(
            tick(&mut p, s(0), |_| Outcome::Success),
            [Effect::ReadinessChanged]
        );
        assert!(p.ready());
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn an_agent_restart_keeps_a_ready_daemon_ready() {
        let st = probe(1, 1, 2, 0);
        let r = probe(10, 3, 3, 0);
        let kept = Restored {
            startup_succeeded: true,
            ready: true,
        };
        let mut p = UnitProbes::new(Some(&st), None, Some(&r), s(0), s(1000), Some(kept));
        assert!(p.ready());
        assert_eq!(p.keep(), kept);
        // Probed at once; ready until failureThreshold failures, as before the restart.
        assert_eq!(p.take_due(s(1000)), [(Kind::Readiness, s(1))]);
        assert_eq!(p.record(Kind::Readiness, fail("x"), s(1000)), Effect::None);
        assert!(p.ready());
        // Without what was kept: not ready until successThreshold successes.
        let p = UnitProbes::new(Some(&st), None, Some(&r), s(0), s(1000), None);
        assert!(!p.ready());
        assert_eq!(p.next_due(), Some(s(1000)));
    }

    #[test]
    fn timing_of_a_probe() {
        let mut pr = probe(5, 1, 3, 2);
        pr.timeout_seconds = 4;
        assert_eq!(
            Timing::of(&pr),
            Timing {
                initial_delay: s(2),
                period: s(5),
                timeout: s(4),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
    }
}
