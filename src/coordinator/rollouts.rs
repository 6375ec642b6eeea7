//! The coordinator's side of rolling updates: the slots it grants, per daemonset, from the
//! decisions of [`crate::rollout::decide`] over every node's latest report, and what it
//! keeps across restarts (pause, halt, pin, the last complete revision: in the store's
//! [`super::store::RolloutBook`]).
//!
//! Slots live in memory. After a restart the coordinator rebuilds them from the reports: a
//! node whose new revision runs but is not available yet holds a slot again (its progress
//! deadline restarts); a node that had a slot and had not yet stopped its old daemon gets
//! one again when its turn comes.
//!
//! Decisions are made again when a report that matters for a rollout arrives, when a
//! rollout is steered, and every second while a rollout is under way (the deadline);
//! agents polling for directives are woken when the slots change.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;

use super::state::AppState;
use super::store::SpecBook;
use crate::api::{RolloutCondition, RolloutView};
use crate::rollout::{self, Directives, Pin, Progress, Slot};

/// The rollouts' state in memory.
#[derive(Default)]
pub(super) struct Rollouts {
    inner: Mutex<Inner>,
    /// Counts up whenever any node's directives may have changed.
    changed: watch::Sender<u64>,
    /// A report mentioned a rollout since the last decision.
    hinted: std::sync::atomic::AtomicBool,
    /// Some daemonset is pinned to a revision (its agents need the pin in every answer).
    pinned: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// Daemonset → node → its slot.
    slots: BTreeMap<String, BTreeMap<String, Slot>>,
    /// Daemonset → the last decision's progress.
    progress: BTreeMap<String, Progress>,
    /// When the decisions were last made (the clock, the fleet's version).
    decided: Option<(u64, u64)>,
}

impl Rollouts {
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Note a report that mentions a rollout.
    pub(super) fn hint(&self) {
        self.hinted
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a report mentioned a rollout since the last call.
    pub(super) fn take_hint(&self) -> bool {
        self.hinted.swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Record whether any daemonset is pinned.
    pub(super) fn set_pinned(&self, pinned: bool) {
        self.pinned
            .store(pinned, std::sync::atomic::Ordering::Release);
    }

    /// Whether any rollout is under way (slots held or nodes waiting).
    pub(super) fn active(&self) -> bool {
        let inner = self.lock();
        inner.slots.values().any(|s| !s.is_empty())
            || inner
                .progress
                .values()
                .any(|p| !p.waiting.is_empty() || !p.in_progress.is_empty())
    }
}

/// Why a rollout cannot be steered as asked.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("no daemonset \"{0}\"")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(String),
}

impl AppState {
    /// Make the rollout decisions again if the fleet or the clock moved since the last
    /// time (or `force`). Blocking (it may write the store).
    pub fn decide_rollouts(&self, force: bool) {
        let rollouts = self.rollouts();
        let mut inner = rollouts.lock();
        // The clock and the fleet's version are read under the lock, and the clock never
        // goes back behind the last decision: availability is a function of time, so a
        // decision made with an older reading than the one before it (read before waiting
        // for the lock, or the system clock stepped back) would take back what the newer one
        // saw — nodes found available again unavailable, their released slots re-created
        // next to the slots handed on — and show more nodes unavailable than maxUnavailable
        // allows (benches/rollout_sim.rs found it under load).
        let version = self.fleet_version();
        let now = self.now().max(inner.decided.map_or(0, |(t, _)| t));
        if !force && inner.decided == Some((now, version)) {
            return;
        }
        inner.decided = Some((now, version));
        let (_, specs) = self.specs_versioned();
        let mut books = self.store().spec_books();
        let entries = self.store().sorted_entries();
        let grace = self.grace();
        let mut books_changed = false;
        let mut pins_changed = false;
        let slots_before = inner.slots.clone();
        inner.slots.retain(|name, _| specs.contains_key(name));
        inner.progress.retain(|name, _| specs.contains_key(name));
        for (name, spec) in specs.iter() {
            if spec.ds.update_strategy.kind != "RollingUpdate" {
                inner.slots.remove(name);
                inner.progress.remove(name);
                continue;
            }
            let Some(book) = books.get_mut(name) else {
                continue;
            };
            let settings = rollout::settings(&spec.ds);
            let nodes: Vec<rollout::NodeState> = entries
                .iter()
                .map(|e| {
                    crate::fleet::rollout_node_state(spec, e.record(), e.last_seen(), now, grace)
                })
                .collect();
            let mut state = rollout::State {
                slots: inner.slots.remove(name).unwrap_or_default(),
                paused: book.rollout.paused,
                halt: book.rollout.halt.clone(),
            };
            let p = rollout::decide(
                &spec.revision,
                &spec.ds.update_strategy,
                &settings,
                &nodes,
                &mut state,
                now,
                settings.skip_silent_seconds,
            );
            if state.halt != book.rollout.halt {
                if let Some(h) = &state.halt {
                    tracing::warn!(daemonset = %name, hosts = ?h.hosts, "rollout halted: {}", h.message);
                }
                book.rollout.halt = state.halt.clone();
                books_changed = true;
            }
            if p.complete && book.rollout.complete_revision != spec.revision {
                tracing::info!(daemonset = %name, revision = %spec.revision, skipped = ?p.skipped, "rollout complete");
                book.rollout.complete_revision = spec.revision.clone();
                books_changed = true;
            }
            if p.halted_now && settings.auto_rollback {
                match rollback_pin(book, &spec.revision) {
                    Ok(pin) => {
                        tracing::warn!(daemonset = %name, to = pin.number, "automatic rollback to revision {}", pin.number);
                        book.rollout.rolled_back = book.rollout.halt.take();
                        book.rollout.pin = Some(pin);
                        state.slots.clear();
                        pins_changed = true;
                        books_changed = true;
                    }
                    Err(e) => {
                        tracing::error!(daemonset = %name, "automatic rollback impossible: {e}")
                    }
                }
            }
            inner.slots.insert(name.clone(), state.slots);
            inner.progress.insert(name.clone(), p);
        }
        let slots_changed = inner.slots != slots_before;
        drop(inner);
        if books_changed {
            self.put_books(books, pins_changed);
        }
        if slots_changed || books_changed {
            rollouts.changed.send_modify(|v| *v += 1);
        }
    }

    /// What node `node` is to do, from the latest decisions.
    pub fn directives(&self, node: &str) -> Directives {
        self.decide_rollouts(false);
        let mut d = Directives::default();
        // The pins, and each daemonset's pause and halt (for the wait reasons), without
        // copying the revisions' texts.
        let mut steering: BTreeMap<String, (bool, Option<rollout::Halt>)> = BTreeMap::new();
        self.store().with_spec_books(|books| {
            for (name, book) in books {
                if let Some(pin) = &book.rollout.pin {
                    d.pins.insert(name.clone(), pin.clone());
                }
                steering.insert(
                    name.clone(),
                    (book.rollout.paused, book.rollout.halt.clone()),
                );
            }
        });
        // What the node waits for that the coordinator has no spec of: not its to pace.
        let (_, specs) = self.specs_versioned();
        if let Some(e) = self.store().entry(node) {
            for ds in &e.record().report.daemonsets {
                if ds.rollout == crate::plan::ROLLOUT_WAITING && !specs.contains_key(&ds.name) {
                    d.unmanaged.insert(ds.name.clone());
                }
            }
        }
        let inner = self.rollouts().lock();
        for (name, slots) in &inner.slots {
            if let Some(slot) = slots.get(node) {
                d.grants.insert(name.clone(), slot.revision.clone());
            }
        }
        for (name, p) in &inner.progress {
            if p.waiting.iter().any(|n| n == node) {
                let (paused, halt) = steering.get(name).cloned().unwrap_or_default();
                let state = rollout::State {
                    slots: BTreeMap::new(),
                    paused,
                    halt,
                };
                d.waits
                    .insert(name.clone(), rollout::wait_reason(&state, p));
            }
        }
        d
    }

    /// The directives to put in the answer to a report or heartbeat of `node`: `None` when
    /// there is nothing for it (no rollout touches it, nothing is pinned), which is the
    /// common case and costs no decision.
    pub fn directives_for_answer(&self, node: &str) -> Option<Directives> {
        if !self.wants_directives(node) {
            return None;
        }
        Some(self.directives(node)).filter(|d| !d.is_empty())
    }

    /// Whether anything may be said to `node` (cheap: no decision is made): it reported a
    /// rollout, holds a slot, or some daemonset is pinned.
    pub fn wants_directives(&self, node: &str) -> bool {
        let rolling_here = self.store().entry(node).is_some_and(|e| {
            e.record()
                .report
                .daemonsets
                .iter()
                .any(|d| !d.rollout.is_empty())
        });
        let pinned = self
            .rollouts()
            .pinned
            .load(std::sync::atomic::Ordering::Acquire);
        let holds_slot = self
            .rollouts()
            .lock()
            .slots
            .values()
            .any(|s| s.contains_key(node));
        rolling_here || pinned || holds_slot
    }

    /// The rollout view of daemonset `name`, from the latest decisions.
    pub fn rollout_view(&self, name: &str) -> Option<RolloutView> {
        let (_, specs) = self.specs_versioned();
        let spec = specs.get(name)?;
        if spec.ds.update_strategy.kind != "RollingUpdate" {
            return None;
        }
        let book = self.store().spec_book(name)?;
        let progress = self
            .rollouts()
            .lock()
            .progress
            .get(name)
            .cloned()
            .unwrap_or_default();
        let revision_number = book
            .revisions
            .iter()
            .find(|r| r.revision == spec.revision)
            .map_or(0, |r| r.number);
        let pinned_revision = book
            .rollout
            .pin
            .as_ref()
            .filter(|p| p.to == spec.revision)
            .map(|p| p.number);
        let conditions = conditions(&book, &progress, &spec.revision);
        Some(RolloutView {
            revision_number,
            paused: book.rollout.paused,
            pinned_revision,
            progress,
            halt: book.rollout.halt.clone(),
            rolled_back: book.rollout.rolled_back.clone(),
            conditions,
        })
    }

    /// `hostset rollout pause|resume`.
    pub fn set_paused(&self, name: &str, paused: bool) -> Result<(), SteerError> {
        self.steer(name, |book, _| {
            book.rollout.paused = paused;
            Ok(false)
        })
    }

    /// `hostset rollout undo [--to-revision N]`: pin the daemonset to revision `to` (the
    /// one before the revision in force when `None`). Returns the revision number now in
    /// force, and the git commit that brought the spec file's revision (empty when the spec
    /// is not from git): reverting it makes the undo permanent. Undoing to the spec file's own
    /// revision ends the pin.
    pub fn undo(&self, name: &str, to: Option<u64>) -> Result<(u64, String), SteerError> {
        let mut number = 0;
        let mut revert = String::new();
        let file_revision = {
            let (_, specs) = self.specs_versioned();
            let spec = specs
                .get(name)
                .ok_or_else(|| SteerError::NotFound(name.to_string()))?;
            // The spec file's revision: the pin's `from` when pinned.
            self.store()
                .spec_books()
                .get(name)
                .and_then(|b| b.rollout.pin.as_ref().map(|p| p.from.clone()))
                .unwrap_or_else(|| spec.revision.clone())
        };
        self.steer(name, |book, current| {
            let target = match to {
                Some(n) => book
                    .revisions
                    .iter()
                    .find(|r| r.number == n)
                    .ok_or_else(|| {
                        SteerError::Invalid(format!(
                            "no revision {n} of daemonset {name} is kept; `hostset rollout \
                             history {name}` lists them"
                        ))
                    })?
                    .clone(),
                None => book
                    .revisions
                    .iter()
                    .rev()
                    .find(|r| r.revision != current)
                    .ok_or_else(|| {
                        SteerError::Invalid(format!(
                            "daemonset {name} has no earlier revision to return to"
                        ))
                    })?
                    .clone(),
            };
            if target.revision == file_revision {
                book.rollout.pin = None;
                number = target.number;
            } else {
                if target.text.is_empty() {
                    return Err(SteerError::Invalid(format!(
                        "revision {} of daemonset {name} has no spec text kept",
                        target.number
                    )));
                }
                // As `kubectl rollout undo`: the old template comes back as the newest
                // revision, with the next number.
                let next = book.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1;
                book.revisions.retain(|r| r.revision != target.revision);
                let mut again = target.clone();
                again.number = next;
                book.revisions.push(again);
                number = next;
                book.rollout.pin = Some(Pin {
                    from: file_revision.clone(),
                    to: target.revision.clone(),
                    number: next,
                    file: target.file.clone(),
                    text: target.text.clone(),
                });
            }
            revert = book
                .revisions
                .iter()
                .find(|r| r.revision == file_revision)
                .map(|r| r.commit.clone())
                .unwrap_or_default();
            book.rollout.halt = None;
            Ok(true)
        })?;
        Ok((number, revert))
    }

    /// Apply `f` to the book of `name` (given the revision in force) and store it.
    fn steer(
        &self,
        name: &str,
        f: impl FnOnce(&mut SpecBook, &str) -> Result<bool, SteerError>,
    ) -> Result<(), SteerError> {
        let (_, specs) = self.specs_versioned();
        let spec = specs
            .get(name)
            .ok_or_else(|| SteerError::NotFound(name.to_string()))?;
        let mut books = self.store().spec_books();
        let book = books
            .get_mut(name)
            .ok_or_else(|| SteerError::NotFound(name.to_string()))?;
        let pins_changed = f(book, &spec.revision)?;
        if pins_changed {
            // The revision changes: slots of the old target are void.
            self.rollouts().lock().slots.remove(name);
        }
        self.put_books(books, pins_changed);
        self.bump_fleet_version();
        self.decide_rollouts(true);
        self.rollouts().changed.send_modify(|v| *v += 1);
        Ok(())
    }
}

/// The pin of an automatic rollback from `revision`: the last complete revision.
fn rollback_pin(book: &SpecBook, revision: &str) -> Result<Pin, String> {
    let good = &book.rollout.complete_revision;
    if good.is_empty() || good == revision {
        return Err("no earlier revision completed a rollout".to_string());
    }
    let r = book
        .revisions
        .iter()
        .find(|r| &r.revision == good)
        .ok_or_else(|| format!("revision {good} is no longer kept"))?;
    if r.text.is_empty() {
        return Err(format!("revision {} has no spec text kept", r.number));
    }
    let from = book
        .rollout
        .pin
        .as_ref()
        .map_or_else(|| revision.to_string(), |p| p.from.clone());
    Ok(Pin {
        from,
        to: r.revision.clone(),
        number: r.number,
        file: r.file.clone(),
        text: r.text.clone(),
    })
}

/// The `Progressing` condition, Deployment-style.
fn conditions(book: &SpecBook, p: &Progress, revision: &str) -> Vec<RolloutCondition> {
    let c = |status: &str, reason: &str, message: String| RolloutCondition {
        kind: "Progressing".to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
    };
    let progressing = if let Some(h) = book
        .rollout
        .halt
        .as_ref()
        .filter(|h| h.revision == revision)
    {
        c(
            "False",
            "ProgressDeadlineExceeded",
            format!("{}: {}", h.message, h.hosts.join("; ")),
        )
    } else if book.rollout.paused {
        c(
            "Unknown",
            "RolloutPaused",
            "the rollout is paused: `hostset rollout resume` continues it".to_string(),
        )
    } else if p.complete {
        let skipped = if p.skipped.is_empty() {
            String::new()
        } else {
            format!(" (skipped, silent: {})", p.skipped.join(", "))
        };
        c(
            "True",
            "RolloutComplete",
            format!(
                "{} of {} node(s) run revision {revision}{skipped}",
                p.updated_available, p.desired
            ),
        )
    } else {
        c(
            "True",
            "NewRevisionRolling",
            format!(
                "{} of {} node(s) updated and available; {} in progress, {} waiting",
                p.updated_available,
                p.desired,
                p.in_progress.len(),
                p.waiting.len()
            ),
        )
    };
    let mut out = vec![progressing];
    if let Some(rb) = &book.rollout.rolled_back {
        out.push(RolloutCondition {
            kind: "RolledBack".to_string(),
            status: "True".to_string(),
            reason: "AutoRollback".to_string(),
            message: format!(
                "revision {} halted ({}); rolled back",
                rb.revision, rb.message
            ),
        });
    }
    out
}

/// Seconds a held directives poll may wait, at most.
pub const MAX_POLL_WAIT: u64 = 30;
