//! The coordinator's memory: one redb database, `STATE_DIR/coordinator.redb`.
//!
//! # Tables
//!
//! - `nodes`: node name → JSON [`NodeRecord`] (the last full report, first and last seen).
//!   The report is kept as the agent sent it (it was parsed, so it reads back the same).
//! - `last_seen`: node name → seconds since the epoch when a heartbeat last moved the node's
//!   `last_seen` (the node's `last_seen` is the later of this and its record's). A database
//!   from before this table gets it when opened; a coordinator from before it ignores it
//!   (its nodes then look silent since their last report until their next heartbeat).
//! - `specs`: daemonset name → JSON [`SpecBook`] (generation, created_at, history, content
//!   hash). The specs themselves are not stored: they are read from the spec directory.
//! - `meta`: `schema` → the format version ([`SCHEMA`]); a database of another version is
//!   refused rather than misread.
//!
//! # Writes
//!
//! - A full report, a goodbye (`DELETE`) and a change of spec bookkeeping are committed
//!   (fsync) before the request is answered: an answered report survives a crash.
//! - Commits are grouped: one writer thread commits, in one transaction, every write that
//!   arrived while the previous commit was under way, then answers all of them. There is no
//!   waiting window: a lone write is committed at once, and under load one fsync serves many
//!   reports. Writes are committed in the order they were accepted.
//! - A heartbeat only moves `last_seen` in memory and marks the node dirty; [`Store::flush`]
//!   writes the dirty nodes' `last_seen` (eight bytes each, not their reports) in one
//!   transaction. The server flushes every [`FLUSH_INTERVAL`] and at shutdown, so a crash
//!   loses at most that much of `last_seen`: the node may look silent a few seconds early
//!   after a restart, until its next heartbeat.
//! - The in-memory copy is updated when a write is accepted, before its commit: a reader may
//!   see a report a few milliseconds before it is durable, and its agent gets its answer
//!   only once it is. When a commit fails, the requests it carried get an error (their agents
//!   send again), and the records stay in memory, marked to be written again at the next
//!   flush.
//! - Writers take one lock, so a check and the write it decides on (a report's sequence) are
//!   atomic; heartbeats take a read lock only, and readers read the in-memory copy and never
//!   wait for a disk write.
//! - After a crash (no clean close), redb checks the whole file when it is opened: with 50,000
//!   nodes (about 500 MB) a restart takes a few seconds longer than after a clean stop.
//! - A record that cannot be decoded when the database is opened (written by a newer
//!   version, say) is skipped with a warning: its agent gets 409 on its next heartbeat and
//!   sends a full report.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::fleet::{NodeFacts, NodeRecord};
use crate::report::{Heartbeat, NodeReport};

/// The database's file name in the state directory.
pub const DB_FILE: &str = "coordinator.redb";
/// The format of the records; bumped when it changes incompatibly.
pub const SCHEMA: u64 = 1;
/// How often the server writes heartbeats' `last_seen`.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// redb's page cache. Every record lives in memory anyway (the database is read once, at
/// start), so the cache only has to hold what a commit writes.
const CACHE_BYTES: usize = 64 << 20;
/// The most writes one commit carries.
const MAX_GROUP: usize = 4096;

const NODES: TableDefinition<&str, &str> = TableDefinition::new("nodes");
const LAST_SEEN: TableDefinition<&str, u64> = TableDefinition::new("last_seen");
const SPECS: TableDefinition<&str, &str> = TableDefinition::new("specs");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The coordinator's bookkeeping for one daemonset (Kubernetes keeps these in the object's
/// metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecBook {
    /// `metadata.generation`.
    pub generation: u64,
    /// Seconds since the epoch when the coordinator first saw the daemonset.
    pub created_at: u64,
    /// `(generation, revision)` of each generation, oldest first.
    pub history: Vec<(u64, String)>,
    /// The hash of the spec content the generation stands for (see
    /// [`super::specs::content_hash`]).
    pub hash: String,
    /// The revisions of the template, oldest first, numbered as Kubernetes numbers
    /// ControllerRevisions (a template seen again gets the next number), with the spec file's
    /// text, kept up to `revisionHistoryLimit` besides the current one.
    #[serde(default)]
    pub revisions: Vec<RevisionRecord>,
    /// The rollout's own state.
    #[serde(default)]
    pub rollout: RolloutBook,
}

/// One revision of a daemonset's template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    pub number: u64,
    /// The template hash ([`crate::unit::revision`]).
    pub revision: String,
    /// Seconds since the epoch when the coordinator first saw it (as this number).
    pub created_at: u64,
    /// The spec file it was read from, and its text then (empty when it could not be read).
    pub file: String,
    pub text: String,
    /// The git commit it came from (`[source.git]`); empty for the spec directory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
}

/// What the coordinator keeps of a daemonset's rollout across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutBook {
    /// `hostset rollout pause`.
    #[serde(default)]
    pub paused: bool,
    /// The rollout halted by itself (progress deadline).
    #[serde(default)]
    pub halt: Option<crate::rollout::Halt>,
    /// The revision the fleet runs instead of the spec file's (`rollout undo`, rollback).
    #[serde(default)]
    pub pin: Option<crate::rollout::Pin>,
    /// The last revision whose rollout completed (the target of an automatic rollback).
    #[serde(default)]
    pub complete_revision: String,
    /// Why the last automatic rollback happened.
    #[serde(default)]
    pub rolled_back: Option<crate::rollout::Halt>,
}

/// A database error (shared: one failed commit fails every write it carried).
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct DbError(Arc<redb::Error>);

impl<E: Into<redb::Error>> From<E> for DbError {
    fn from(e: E) -> DbError {
        DbError(Arc::new(e.into()))
    }
}

/// The store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{}: cannot open the state database: {error}", file.display())]
    Open { file: PathBuf, error: DbError },
    #[error(
        "{}: the state database has format {found}, this coordinator reads format {SCHEMA}: \
         it was written by another version of hostset-coordinator",
        file.display()
    )]
    Schema { file: PathBuf, found: u64 },
    #[error("cannot write the state database: {0}")]
    Write(DbError),
}

/// What became of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Stored; `new` when the node was not known before.
    Stored { new: bool },
    /// The same agent instance already reported a later sequence: ignored.
    Stale { stored_sequence: u64 },
}

/// What became of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// `last_seen` moved.
    Alive,
    /// No report from this node is known.
    UnknownNode,
    /// The stored report is from another agent instance or sequence.
    Mismatch { instance: String, sequence: u64 },
}

/// One node in memory: its last report, when it was last heard from, and the server's cache
/// of what the report means for each daemonset.
pub(super) struct Entry {
    /// The last full report; its `last_seen` is the report's time (see [`Entry::last_seen`]).
    record: NodeRecord,
    /// Moved by heartbeats.
    last_seen: AtomicU64,
    /// `last_seen` moved since it was last written.
    dirty: AtomicBool,
    /// The commit of `record` failed: write it at the next flush.
    unsaved: AtomicBool,
    /// [`NodeFacts`] of `record` computed when it arrived (kept inline: reading every node's
    /// facts is the hot loop of `GET /v1/daemonsets`).
    facts: Option<NodeFacts>,
    /// [`NodeFacts`] of `record` for a later version of the specs, computed on demand.
    later: Mutex<Option<Arc<NodeFacts>>>,
}

/// A node's facts: kept in its entry, or computed since.
pub(super) enum FactsRef<'a> {
    Kept(&'a NodeFacts),
    Later(Arc<NodeFacts>),
}

impl std::borrow::Borrow<NodeFacts> for FactsRef<'_> {
    fn borrow(&self) -> &NodeFacts {
        self
    }
}

impl std::ops::Deref for FactsRef<'_> {
    type Target = NodeFacts;

    fn deref(&self) -> &NodeFacts {
        match self {
            FactsRef::Kept(f) => f,
            FactsRef::Later(f) => f,
        }
    }
}

impl Entry {
    fn new(record: NodeRecord, last_seen: u64, facts: Option<NodeFacts>) -> Entry {
        Entry {
            record,
            last_seen: AtomicU64::new(last_seen),
            dirty: AtomicBool::new(false),
            unsaved: AtomicBool::new(false),
            facts,
            later: Mutex::new(None),
        }
    }

    /// The last full report (its `last_seen` field is the report's time).
    pub(super) fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// The node's name.
    pub(super) fn name(&self) -> &str {
        &self.record.report.node.name
    }

    /// When the node was last heard from.
    pub(super) fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// The record with its current `last_seen`.
    fn current(&self) -> NodeRecord {
        NodeRecord {
            last_seen: self.last_seen(),
            ..self.record.clone()
        }
    }

    /// The latest facts known, of whatever version of the specs.
    pub(super) fn latest_facts(&self) -> Option<FactsRef<'_>> {
        let later = self.later.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match (later, &self.facts) {
            (Some(l), Some(f)) if f.specs_version >= l.specs_version => Some(FactsRef::Kept(f)),
            (Some(l), _) => Some(FactsRef::Later(l)),
            (None, f) => f.as_ref().map(FactsRef::Kept),
        }
    }

    /// The facts for `version` of the specs: the kept ones, or `compute`d (and cached).
    pub(super) fn facts(
        &self,
        version: u64,
        compute: impl FnOnce(&NodeReport) -> NodeFacts,
    ) -> FactsRef<'_> {
        if let Some(f) = &self.facts
            && f.specs_version == version
        {
            return FactsRef::Kept(f);
        }
        let mut later = self.later.lock().unwrap_or_else(|e| e.into_inner());
        match &*later {
            Some(f) if f.specs_version == version => FactsRef::Later(f.clone()),
            _ => {
                let f = Arc::new(compute(&self.record.report));
                *later = Some(f.clone());
                FactsRef::Later(f)
            }
        }
    }
}

struct Memory {
    /// By name, hashed: a heartbeat's lookup is one hash, not a walk of string comparisons
    /// (the views that list nodes sort them).
    nodes: HashMap<String, Arc<Entry>>,
    specs: BTreeMap<String, SpecBook>,
    /// The `specs` table failed to be written: rewrite it at the next flush.
    specs_dirty: bool,
}

/// One write for the committer.
enum Op {
    PutNode(String, String),
    DeleteNode(String),
    PutLastSeen(Vec<(String, u64)>),
    PutSpecs(Vec<(String, String)>),
    DeleteSpecs(Vec<String>),
    /// Replace the whole `specs` table.
    ReplaceSpecs(Vec<(String, String)>),
    /// These, in order.
    All(Vec<Op>),
}

/// Tells a writer its commit is done (or failed).
enum Done {
    Blocking(mpsc::Sender<Result<(), DbError>>),
    Async(tokio::sync::oneshot::Sender<Result<(), DbError>>),
}

impl Done {
    fn send(self, result: Result<(), DbError>) {
        match self {
            Done::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Done::Async(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

struct Job {
    op: Op,
    done: Done,
}

/// A report accepted and waiting for its commit.
pub(super) struct Pending {
    done: tokio::sync::oneshot::Receiver<Result<(), DbError>>,
    entry: Arc<Entry>,
}

impl Pending {
    /// Wait for the commit. When it fails the record stays in memory, to be written at the
    /// next flush.
    pub(super) async fn durable(self) -> Result<(), StoreError> {
        let result = self.done.await.unwrap_or_else(|_| Err(writer_gone()));
        if result.is_err() {
            self.entry.unsaved.store(true, Ordering::Relaxed);
        }
        result.map_err(StoreError::Write)
    }
}

fn writer_gone() -> DbError {
    DbError::from(std::io::Error::other("the database writer has stopped"))
}

/// The database and its in-memory copy. See the [module docs](self).
pub struct Store {
    /// To the committer thread, which owns the database.
    jobs: Option<mpsc::Sender<Job>>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// Held by every writer, across the check and the hand-over to the committer, so that
    /// writes are committed in the order they were decided.
    writer: Mutex<()>,
    memory: RwLock<Memory>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // The committer commits what it has, then stops and closes the database.
        drop(self.jobs.take());
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

impl Store {
    /// Open (or create) the database in `dir`, creating `dir` if needed, and read it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let file = dir.join(DB_FILE);
        let open_error = |error: DbError| StoreError::Open {
            file: file.clone(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.into()))?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&file)
            .map_err(|e| open_error(e.into()))?;

        // Create the tables and check the format.
        let txn = db.begin_write().map_err(|e| open_error(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| open_error(e.into()))?;
            let found = meta
                .get("schema")
                .map_err(|e| open_error(e.into()))?
                .map(|v| v.value());
            match found {
                Some(v) if v != SCHEMA => {
                    return Err(StoreError::Schema {
                        file: file.clone(),
                        found: v,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("schema", SCHEMA)
                        .map_err(|e| open_error(e.into()))?;
                }
            }
            txn.open_table(NODES).map_err(|e| open_error(e.into()))?;
            txn.open_table(LAST_SEEN)
                .map_err(|e| open_error(e.into()))?;
            txn.open_table(SPECS).map_err(|e| open_error(e.into()))?;
        }
        txn.commit().map_err(|e| open_error(e.into()))?;

        let mut memory = Memory {
            nodes: HashMap::new(),
            specs: BTreeMap::new(),
            specs_dirty: false,
        };
        let txn = db.begin_read().map_err(|e| open_error(e.into()))?;
        let seen = txn
            .open_table(LAST_SEEN)
            .map_err(|e| open_error(e.into()))?;
        let mut heartbeats: HashMap<String, u64> = HashMap::new();
        for item in seen.iter().map_err(|e| open_error(e.into()))? {
            let (k, v) = item.map_err(|e| open_error(e.into()))?;
            heartbeats.insert(k.value().to_string(), v.value());
        }
        let nodes = txn.open_table(NODES).map_err(|e| open_error(e.into()))?;
        for item in nodes.iter().map_err(|e| open_error(e.into()))? {
            let (k, v) = item.map_err(|e| open_error(e.into()))?;
            match serde_json::from_str::<NodeRecord>(v.value()) {
                Ok(rec) => {
                    let name = k.value().to_string();
                    let last_seen = heartbeats
                        .get(&name)
                        .map_or(rec.last_seen, |&s| s.max(rec.last_seen));
                    memory
                        .nodes
                        .insert(name, Arc::new(Entry::new(rec, last_seen, None)));
                }
                Err(e) => {
                    tracing::warn!(node = k.value(), error = %e, "skipping stored node {}, which cannot be read ({e}): its agent will report again", k.value())
                }
            }
        }
        let specs = txn.open_table(SPECS).map_err(|e| open_error(e.into()))?;
        for item in specs.iter().map_err(|e| open_error(e.into()))? {
            let (k, v) = item.map_err(|e| open_error(e.into()))?;
            match serde_json::from_str::<SpecBook>(v.value()) {
                Ok(book) => {
                    memory.specs.insert(k.value().to_string(), book);
                }
                Err(e) => {
                    tracing::warn!(daemonset = k.value(), error = %e, "skipping the stored generation of daemonset {}, which cannot be read ({e}): it starts again", k.value())
                }
            }
        }
        drop((seen, nodes, specs, txn));

        let (jobs, queue) = mpsc::channel::<Job>();
        let committer = std::thread::Builder::new()
            .name("hostset-store".into())
            .spawn(move || commit_loop(db, queue))
            .map_err(|e| open_error(e.into()))?;
        Ok(Store {
            jobs: Some(jobs),
            committer: Some(committer),
            writer: Mutex::new(()),
            memory: RwLock::new(memory),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Memory> {
        self.memory.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Memory> {
        self.memory.write().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hand `op` to the committer. Call with the writer lock held.
    fn submit(&self, op: Op, done: Done) -> Result<(), StoreError> {
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(Job { op, done }));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(StoreError::Write(writer_gone())),
        }
    }

    /// Hand `op` to the committer and wait for its commit (blocking).
    fn submit_and_wait(&self, writer: MutexGuard<'_, ()>, op: Op) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        self.submit(op, Done::Blocking(tx))?;
        drop(writer);
        rx.recv()
            .unwrap_or_else(|_| Err(writer_gone()))
            .map_err(StoreError::Write)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.sorted_entries().iter().map(|e| e.current()).collect()
    }

    /// Every node as shared entries (no copy of the reports), in no particular order.
    pub(super) fn entries(&self) -> Vec<Arc<Entry>> {
        self.read().nodes.values().cloned().collect()
    }

    /// `f` over every node's entry, in no particular order, under the read lock (writers
    /// wait for it: keep `f` short).
    pub(super) fn with_entries<R>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = &Entry>) -> R,
    ) -> R {
        let memory = self.read();
        f(&mut memory.nodes.values().map(|e| &**e))
    }

    /// [`Store::entries`] by name.
    pub(super) fn sorted_entries(&self) -> Vec<Arc<Entry>> {
        let mut entries = self.entries();
        entries.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        entries
    }

    /// How many nodes are known.
    pub(super) fn len(&self) -> usize {
        self.read().nodes.len()
    }

    /// One node's shared entry.
    pub(super) fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.read().nodes.get(name).cloned()
    }

    /// One node.
    pub fn node(&self, name: &str) -> Option<NodeRecord> {
        self.read().nodes.get(name).map(|e| e.current())
    }

    /// The spec bookkeeping, by daemonset name.
    pub fn spec_books(&self) -> BTreeMap<String, SpecBook> {
        self.read().specs.clone()
    }

    /// The bookkeeping of daemonset `name` (one copy, not all of them).
    pub fn spec_book(&self, name: &str) -> Option<SpecBook> {
        self.read().specs.get(name).cloned()
    }

    /// `f` over the bookkeeping in place, under the read lock (keep `f` short: it takes no
    /// other lock): what it needs without copying every revision's spec text.
    pub(super) fn with_spec_books<R>(&self, f: impl FnOnce(&BTreeMap<String, SpecBook>) -> R) -> R {
        f(&self.read().specs)
    }

    /// Store a full report received at `now`, unless the same agent instance already
    /// reported a later sequence. The same sequence again (a retry) is stored. Blocking: it
    /// returns once the report is committed.
    pub fn put_report(&self, report: NodeReport, now: u64) -> Result<ReportOutcome, StoreError> {
        let (tx, rx) = mpsc::channel();
        let report_json = json(&report);
        let (outcome, entry, replaced) =
            self.accept_report(report, &report_json, now, None, Done::Blocking(tx))?;
        drop(replaced);
        if let Some(entry) = entry {
            let result = rx.recv().unwrap_or_else(|_| Err(writer_gone()));
            if result.is_err() {
                entry.unsaved.store(true, Ordering::Relaxed);
            }
            result.map_err(StoreError::Write)?;
        }
        Ok(outcome)
    }

    /// [`Store::put_report`] without waiting: the report is in memory and handed to the
    /// committer; await [`Pending::durable`] before answering. `report_json` is `report` as
    /// JSON (made by the caller, outside the writer lock); `facts` the report's
    /// [`NodeFacts`], if the caller has them.
    pub(super) fn submit_report(
        &self,
        report: NodeReport,
        report_json: &str,
        now: u64,
        facts: Option<NodeFacts>,
    ) -> Result<(ReportOutcome, Option<Pending>), StoreError> {
        let (tx, done) = tokio::sync::oneshot::channel();
        let (outcome, entry, replaced) =
            self.accept_report(report, report_json, now, facts, Done::Async(tx))?;
        // The replaced report is freed here, out of the writer lock.
        drop(replaced);
        Ok((outcome, entry.map(|entry| Pending { done, entry })))
    }

    /// Check, update memory and hand the write over; the new entry when stored, and the one
    /// it replaced (for the caller to drop out of the lock).
    #[allow(clippy::type_complexity)]
    fn accept_report(
        &self,
        report: NodeReport,
        report_json: &str,
        now: u64,
        facts: Option<NodeFacts>,
        done: Done,
    ) -> Result<(ReportOutcome, Option<Arc<Entry>>, Option<Arc<Entry>>), StoreError> {
        let _writer = self.writer();
        let name = report.node.name.clone();
        let previous = self.read().nodes.get(&name).cloned();
        if let Some(prev) = &previous
            && prev.record.report.agent_instance == report.agent_instance
            && prev.record.report.sequence > report.sequence
        {
            let stale = ReportOutcome::Stale {
                stored_sequence: prev.record.report.sequence,
            };
            return Ok((stale, None, previous));
        }
        let new = previous.is_none();
        let first_seen = previous.as_ref().map_or(now, |p| p.record.first_seen);
        // `NodeRecord` as serde writes it, around the report serialized by the caller.
        let value =
            format!("{{\"report\":{report_json},\"firstSeen\":{first_seen},\"lastSeen\":{now}}}");
        let record = NodeRecord {
            report,
            first_seen,
            last_seen: now,
        };
        let entry = Arc::new(Entry::new(record, now, facts));
        self.submit(Op::PutNode(name.clone(), value), done)?;
        let replaced = self.write().nodes.insert(name, entry.clone());
        drop(previous);
        Ok((ReportOutcome::Stored { new }, Some(entry), replaced))
    }

    /// A heartbeat from `name` at `now`: moves `last_seen` (in memory) when it matches the
    /// stored report's agent instance and sequence.
    pub fn heartbeat(&self, name: &str, hb: &Heartbeat, now: u64) -> HeartbeatOutcome {
        let memory = self.read();
        let Some(entry) = memory.nodes.get(name) else {
            return HeartbeatOutcome::UnknownNode;
        };
        let report = &entry.record.report;
        if report.agent_instance != hb.agent_instance || report.sequence != hb.sequence {
            return HeartbeatOutcome::Mismatch {
                instance: report.agent_instance.clone(),
                sequence: report.sequence,
            };
        }
        if entry.last_seen.fetch_max(now, Ordering::Relaxed) < now {
            entry.dirty.store(true, Ordering::Relaxed);
        }
        HeartbeatOutcome::Alive
    }

    /// Forget a node. False when it is unknown.
    pub fn delete_node(&self, name: &str) -> Result<bool, StoreError> {
        let writer = self.writer();
        let Some(entry) = self.write().nodes.remove(name) else {
            return Ok(false);
        };
        let result = self.submit_and_wait(writer, Op::DeleteNode(name.to_string()));
        if result.is_err() {
            // Not deleted after all, unless a report came in meanwhile.
            let _writer = self.writer();
            self.write().nodes.entry(name.to_string()).or_insert(entry);
        }
        result.map(|()| true)
    }

    /// Replace the spec bookkeeping with `books`, writing what changed. When the write fails
    /// the new bookkeeping is in force anyway (in memory) and is written at the next
    /// [`Store::flush`].
    pub fn set_spec_books(&self, books: BTreeMap<String, SpecBook>) -> Result<(), StoreError> {
        let writer = self.writer();
        let old = self.spec_books();
        let changed: Vec<(String, String)> = books
            .iter()
            .filter(|(name, book)| old.get(*name) != Some(*book))
            .map(|(name, book)| (name.clone(), json(book)))
            .collect();
        let removed: Vec<String> = old
            .keys()
            .filter(|n| !books.contains_key(*n))
            .cloned()
            .collect();
        self.write().specs = books;
        let result = match (changed.is_empty(), removed.is_empty()) {
            (true, true) => Ok(()),
            (false, true) => self.submit_and_wait(writer, Op::PutSpecs(changed)),
            (true, false) => self.submit_and_wait(writer, Op::DeleteSpecs(removed)),
            (false, false) => {
                // One commit for both: the whole table.
                let all = self
                    .read()
                    .specs
                    .iter()
                    .map(|(n, b)| (n.clone(), json(b)))
                    .collect();
                self.submit_and_wait(writer, Op::ReplaceSpecs(all))
            }
        };
        self.write().specs_dirty = result.is_err();
        result
    }

    /// Write the heartbeats' `last_seen` of the dirty nodes (and the records and spec
    /// bookkeeping whose writes failed). Returns how many nodes were written.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let writer = self.writer();
        let memory = self.read();
        let dirty: Vec<Arc<Entry>> = memory
            .nodes
            .values()
            .filter(|e| e.dirty.swap(false, Ordering::Relaxed))
            .cloned()
            .collect();
        let unsaved: Vec<Arc<Entry>> = memory
            .nodes
            .values()
            .filter(|e| e.unsaved.swap(false, Ordering::Relaxed))
            .cloned()
            .collect();
        let specs: Option<Vec<(String, String)>> = memory.specs_dirty.then(|| {
            memory
                .specs
                .iter()
                .map(|(n, b)| (n.clone(), json(b)))
                .collect()
        });
        drop(memory);
        if dirty.is_empty() && unsaved.is_empty() && specs.is_none() {
            return Ok(0);
        }
        let name = |e: &Arc<Entry>| e.record.report.node.name.clone();
        let mut ops = Vec::new();
        for e in &unsaved {
            ops.push(Op::PutNode(name(e), json(&e.record)));
        }
        if !dirty.is_empty() {
            ops.push(Op::PutLastSeen(
                dirty.iter().map(|e| (name(e), e.last_seen())).collect(),
            ));
        }
        if let Some(specs) = &specs {
            ops.push(Op::ReplaceSpecs(specs.clone()));
        }
        let result = self.submit_and_wait(writer, Op::All(ops));
        if result.is_err() {
            for e in &dirty {
                e.dirty.store(true, Ordering::Relaxed);
            }
            for e in &unsaved {
                e.unsaved.store(true, Ordering::Relaxed);
            }
        } else if specs.is_some() {
            self.write().specs_dirty = false;
        }
        result.map(|()| dirty.len().max(unsaved.len()))
    }
}

/// The committer: take every waiting job, commit them in one transaction, answer them all.
fn commit_loop(db: Database, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let result = commit(&db, &jobs);
        if let Err(e) = &result {
            tracing::error!(error = %e, writes = jobs.len(), "cannot commit {} writes to the state database: {e}", jobs.len());
        }
        for job in jobs {
            job.done.send(result.clone());
        }
    }
}

/// Apply `jobs` in order in one write transaction and commit it durably.
fn commit(db: &Database, jobs: &[Job]) -> Result<(), DbError> {
    let txn = db.begin_write()?;
    {
        let mut tables = Tables {
            nodes: txn.open_table(NODES)?,
            seen: txn.open_table(LAST_SEEN)?,
            specs: txn.open_table(SPECS)?,
        };
        for job in jobs {
            tables.apply(&job.op)?;
        }
    }
    txn.commit()?;
    Ok(())
}

struct Tables<'txn> {
    nodes: redb::Table<'txn, &'static str, &'static str>,
    seen: redb::Table<'txn, &'static str, u64>,
    specs: redb::Table<'txn, &'static str, &'static str>,
}

impl Tables<'_> {
    fn apply(&mut self, op: &Op) -> Result<(), DbError> {
        match op {
            Op::PutNode(name, record) => {
                self.nodes.insert(name.as_str(), record.as_str())?;
            }
            Op::DeleteNode(name) => {
                self.nodes.remove(name.as_str())?;
                self.seen.remove(name.as_str())?;
            }
            Op::PutLastSeen(all) => {
                for (name, at) in all {
                    self.seen.insert(name.as_str(), *at)?;
                }
            }
            Op::PutSpecs(all) => {
                for (name, book) in all {
                    self.specs.insert(name.as_str(), book.as_str())?;
                }
            }
            Op::DeleteSpecs(all) => {
                for name in all {
                    self.specs.remove(name.as_str())?;
                }
            }
            Op::ReplaceSpecs(all) => {
                self.specs.retain(|_, _| false)?;
                for (name, book) in all {
                    self.specs.insert(name.as_str(), book.as_str())?;
                }
            }
            Op::All(ops) => {
                for op in ops {
                    self.apply(op)?;
                }
            }
        }
        Ok(())
    }
}

/// A record as stored. Serializing these types cannot fail (no maps with non-string keys).
pub(super) fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
