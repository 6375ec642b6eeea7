//! The coordinator's memory: one redb database, `STATE_DIR/coordinator.redb`.
//!
//! # Tables
//!
//! - `nodes`: node name → JSON [`NodeRecord`] (the last full report, first and last seen).
//! - `specs`: daemonset name → JSON [`SpecBook`] (generation, created_at, history, content
//!   hash). The specs themselves are not stored: they are read from the spec directory.
//! - `meta`: `schema` → the format version ([`SCHEMA`]); a database of another version is
//!   refused rather than misread.
//!
//! # Writes
//!
//! - A full report, a goodbye (`DELETE`) and a change of spec bookkeeping are committed
//!   (fsync) before the request is answered: an answered report survives a crash.
//! - A heartbeat only moves `last_seen` in memory and marks the node dirty; [`Store::flush`]
//!   writes the dirty nodes in one transaction. The server flushes every
//!   [`FLUSH_INTERVAL`] and at shutdown, so a crash loses at most that much of `last_seen`:
//!   the node may look silent a few seconds early after a restart, until its next heartbeat.
//! - Writers take one lock, so a check and the write it decides on (a report's sequence, a
//!   heartbeat's match) are atomic; readers read the in-memory copy and never wait for a
//!   disk write.
//! - A record that cannot be decoded when the database is opened (written by a newer
//!   version, say) is skipped with a warning: its agent gets 409 on its next heartbeat and
//!   sends a full report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::fleet::NodeRecord;
use crate::report::{Heartbeat, NodeReport};

/// The database's file name in the state directory.
pub const DB_FILE: &str = "coordinator.redb";
/// The format of the records; bumped when it changes incompatibly.
pub const SCHEMA: u64 = 1;
/// How often the server writes heartbeats' `last_seen`.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);

const NODES: TableDefinition<&str, &str> = TableDefinition::new("nodes");
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
}

/// A database error (boxed: redb's error type is large).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DbError(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for DbError {
    fn from(e: E) -> DbError {
        DbError(Box::new(e.into()))
    }
}

/// The store could not do what was asked.
#[derive(Debug, thiserror::Error)]
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

#[derive(Default)]
struct Memory {
    nodes: BTreeMap<String, NodeRecord>,
    /// Nodes whose `last_seen` moved since the last flush.
    dirty: BTreeSet<String>,
    specs: BTreeMap<String, SpecBook>,
    /// The `specs` table failed to be written: rewrite it at the next flush.
    specs_dirty: bool,
}

/// The database and its in-memory copy. See the [module docs](self).
pub struct Store {
    db: Database,
    /// Held by every writer, across the check and the write.
    writer: Mutex<()>,
    memory: RwLock<Memory>,
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
        let db = Database::create(&file).map_err(|e| open_error(e.into()))?;

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
            txn.open_table(SPECS).map_err(|e| open_error(e.into()))?;
        }
        txn.commit().map_err(|e| open_error(e.into()))?;

        let mut memory = Memory::default();
        let txn = db.begin_read().map_err(|e| open_error(e.into()))?;
        let nodes = txn.open_table(NODES).map_err(|e| open_error(e.into()))?;
        for item in nodes.iter().map_err(|e| open_error(e.into()))? {
            let (k, v) = item.map_err(|e| open_error(e.into()))?;
            match serde_json::from_str::<NodeRecord>(v.value()) {
                Ok(rec) => {
                    memory.nodes.insert(k.value().to_string(), rec);
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
        drop((nodes, specs, txn));
        Ok(Store {
            db,
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

    /// Every node, by name.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.read().nodes.values().cloned().collect()
    }

    /// One node.
    pub fn node(&self, name: &str) -> Option<NodeRecord> {
        self.read().nodes.get(name).cloned()
    }

    /// The spec bookkeeping, by daemonset name.
    pub fn spec_books(&self) -> BTreeMap<String, SpecBook> {
        self.read().specs.clone()
    }

    /// Store a full report received at `now`, unless the same agent instance already
    /// reported a later sequence. The same sequence again (a retry) is stored.
    pub fn put_report(&self, report: NodeReport, now: u64) -> Result<ReportOutcome, StoreError> {
        let _writer = self.writer();
        let name = report.node.name.clone();
        let previous = self.node(&name);
        if let Some(prev) = &previous
            && prev.report.agent_instance == report.agent_instance
            && prev.report.sequence > report.sequence
        {
            return Ok(ReportOutcome::Stale {
                stored_sequence: prev.report.sequence,
            });
        }
        let new = previous.is_none();
        let record = NodeRecord {
            report,
            first_seen: previous.map_or(now, |p| p.first_seen),
            last_seen: now,
        };
        self.commit(|txn| {
            let mut t = txn.open_table(NODES)?;
            t.insert(name.as_str(), json(&record).as_str())?;
            Ok(())
        })?;
        let mut memory = self.write();
        memory.dirty.remove(&name);
        memory.nodes.insert(name, record);
        Ok(ReportOutcome::Stored { new })
    }

    /// A heartbeat from `name` at `now`: moves `last_seen` (in memory) when it matches the
    /// stored report's agent instance and sequence.
    pub fn heartbeat(&self, name: &str, hb: &Heartbeat, now: u64) -> HeartbeatOutcome {
        let mut memory = self.write();
        let Some(rec) = memory.nodes.get_mut(name) else {
            return HeartbeatOutcome::UnknownNode;
        };
        if rec.report.agent_instance != hb.agent_instance || rec.report.sequence != hb.sequence {
            return HeartbeatOutcome::Mismatch {
                instance: rec.report.agent_instance.clone(),
                sequence: rec.report.sequence,
            };
        }
        rec.last_seen = rec.last_seen.max(now);
        memory.dirty.insert(name.to_string());
        HeartbeatOutcome::Alive
    }

    /// Forget a node. False when it is unknown.
    pub fn delete_node(&self, name: &str) -> Result<bool, StoreError> {
        let _writer = self.writer();
        if !self.read().nodes.contains_key(name) {
            return Ok(false);
        }
        self.commit(|txn| {
            txn.open_table(NODES)?.remove(name)?;
            Ok(())
        })?;
        let mut memory = self.write();
        memory.nodes.remove(name);
        memory.dirty.remove(name);
        Ok(true)
    }

    /// Replace the spec bookkeeping with `books`, writing what changed. When the write fails
    /// the new bookkeeping is in force anyway (in memory) and is written at the next
    /// [`Store::flush`].
    pub fn set_spec_books(&self, books: BTreeMap<String, SpecBook>) -> Result<(), StoreError> {
        let _writer = self.writer();
        let old = self.spec_books();
        let changed: Vec<(&String, &SpecBook)> = books
            .iter()
            .filter(|(name, book)| old.get(*name) != Some(*book))
            .collect();
        let removed: Vec<&String> = old.keys().filter(|n| !books.contains_key(*n)).collect();
        let result = if changed.is_empty() && removed.is_empty() {
            Ok(())
        } else {
            self.commit(|txn| {
                let mut t = txn.open_table(SPECS)?;
                for (name, book) in &changed {
                    t.insert(name.as_str(), json(book).as_str())?;
                }
                for name in &removed {
                    t.remove(name.as_str())?;
                }
                Ok(())
            })
        };
        let mut memory = self.write();
        memory.specs_dirty = result.is_err();
        memory.specs = books;
        result
    }

    /// Write the heartbeats' `last_seen` of the dirty nodes (and the spec bookkeeping, if a
    /// write of it failed). Returns how many nodes were written.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let _writer = self.writer();
        let (records, specs) = {
            let memory = self.read();
            let records: Vec<(String, u64, String)> = memory
                .dirty
                .iter()
                .filter_map(|n| {
                    let r = memory.nodes.get(n)?;
                    Some((n.clone(), r.last_seen, json(r)))
                })
                .collect();
            let specs: Option<Vec<(String, String)>> = memory.specs_dirty.then(|| {
                memory
                    .specs
                    .iter()
                    .map(|(n, b)| (n.clone(), json(b)))
                    .collect()
            });
            (records, specs)
        };
        if records.is_empty() && specs.is_none() {
            return Ok(0);
        }
        self.commit(|txn| {
            let mut t = txn.open_table(NODES)?;
            for (name, _, record) in &records {
                t.insert(name.as_str(), record.as_str())?;
            }
            if let Some(specs) = &specs {
                let mut t = txn.open_table(SPECS)?;
                t.retain(|_, _| false)?;
                for (name, book) in specs {
                    t.insert(name.as_str(), book.as_str())?;
                }
            }
            Ok(())
        })?;
        let mut memory = self.write();
        // Heartbeats do not wait for the writer lock: a node whose last_seen moved on while
        // this was written stays dirty.
        for (name, written, _) in &records {
            if memory
                .nodes
                .get(name)
                .is_some_and(|r| r.last_seen == *written)
            {
                memory.dirty.remove(name);
            }
        }
        if specs.is_some() {
            memory.specs_dirty = false;
        }
        Ok(records.len())
    }

    /// Run `f` in a write transaction and commit it durably.
    fn commit(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), DbError>,
    ) -> Result<(), StoreError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| StoreError::Write(e.into()))?;
        f(&txn).map_err(StoreError::Write)?;
        txn.commit().map_err(|e| StoreError::Write(e.into()))
    }
}

/// A record as stored. Serializing these types cannot fail (no maps with non-string keys).
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
