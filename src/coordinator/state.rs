//! [`AppState`]: what the request handlers share — the store, the tokens, the specs in force,
//! the counters and the clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use super::auth::{Auth, TokenFileError};
use super::config::Config;
use super::metrics::Counters;
use super::specs;
use super::store::{SpecBook, Store, StoreError};
use crate::fleet::{NodeRecord, SpecRecord};
use crate::source::SpecDir;

/// Seconds since the Unix epoch. The coordinator asks it for "now" everywhere (`last_seen`,
/// `created_at`, readiness), so tests can move time instead of sleeping.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// The specs in force with their bookkeeping, by name.
pub type Specs = Arc<BTreeMap<String, SpecRecord>>;

/// Why the coordinator's state cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    #[error("cannot start following the git repository: {0}")]
    Git(std::io::Error),
}

/// The state shared by every request handler and the background tasks; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    auth: Auth,
    spec_dir: Mutex<SpecDir>,
    /// The specs in force with their bookkeeping, replaced whole after a rescan that changed
    /// them, and a version counted up each time (what [`crate::fleet::NodeFacts`] were
    /// computed against).
    records: RwLock<(u64, Specs)>,
    counters: Counters,
    /// `[source.git]`: the follower (its thread ends when the state is dropped) and its
    /// latest snapshot, in force beside the spec directory.
    git: Option<crate::gitsource::Handle>,
    git_snapshot: RwLock<Option<Arc<crate::gitsource::Snapshot>>>,
    clock: Clock,
    grace: u64,
    max_report_bytes: usize,
    rollouts: super::rollouts::Rollouts,
    /// Counts up with every change of the fleet's reports or specs (when rollout decisions
    /// must be made again).
    fleet_version: std::sync::atomic::AtomicU64,
}

impl AppState {
    /// Open the store in the state directory, read the token files and the spec directory.
    /// Blocking (file reads, a database open): call it before serving.
    pub fn open(config: &Config, clock: Clock) -> Result<AppState, OpenError> {
        let auth = Auth::load(&config.agent_token_file, &config.read_token_file)?;
        let store = Store::open(&config.state_dir)?;
        let git = match &config.git {
            Some(g) => {
                let dir = config.state_dir.join("git");
                tracing::info!(url = %g.url, reference = %g.reference, mirror = %dir.display(), "following a git repository");
                Some(
                    crate::gitsource::spawn(crate::gitsource::Follower::new(g.clone(), dir))
                        .map_err(OpenError::Git)?,
                )
            }
            None => None,
        };
        let first = git.as_ref().map(|g| g.subscribe().borrow().clone());
        let state = AppState {
            inner: Arc::new(Inner {
                store,
                auth,
                spec_dir: Mutex::new(SpecDir::new(&config.spec_dir).with_owner(config.spec_owner)),
                records: RwLock::new((0, Arc::default())),
                counters: Counters::default(),
                git,
                git_snapshot: RwLock::new(None),
                clock,
                grace: config.grace_period,
                max_report_bytes: config.max_report_bytes,
                rollouts: Default::default(),
                fleet_version: Default::default(),
            }),
        };
        match first {
            Some(snapshot) => state.apply_git(snapshot),
            None => state.rescan_specs(),
        }
        Ok(state)
    }

    pub(super) fn rollouts(&self) -> &super::rollouts::Rollouts {
        &self.inner.rollouts
    }

    /// The fleet's version (see [`AppState::bump_fleet_version`]).
    pub(super) fn fleet_version(&self) -> u64 {
        self.inner
            .fleet_version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Note that the fleet's reports or specs changed.
    pub(super) fn bump_fleet_version(&self) {
        self.inner
            .fleet_version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Store changed bookkeeping; with `pins_changed`, put the records they give in force.
    pub(super) fn put_books(&self, books: BTreeMap<String, SpecBook>, pins_changed: bool) {
        if pins_changed {
            let dir = self
                .inner
                .spec_dir
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.install(&dir, books);
        } else if let Err(e) = self.inner.store.set_spec_books(books) {
            tracing::error!(error = %e, "cannot store the rollout state: {e}; retrying at the next flush");
        }
    }

    pub(super) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(super) fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Now, by the state's clock.
    pub fn now(&self) -> u64 {
        (self.inner.clock)()
    }

    /// Seconds a silent node stays Ready.
    pub fn grace(&self) -> u64 {
        self.inner.grace
    }

    /// The largest report body accepted.
    pub fn max_report_bytes(&self) -> usize {
        self.inner.max_report_bytes
    }

    /// The specs in force.
    pub fn specs(&self) -> Specs {
        self.specs_versioned().1
    }

    /// The specs in force and their version.
    pub(super) fn specs_versioned(&self) -> (u64, Specs) {
        self.inner
            .records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.inner.store.nodes()
    }

    /// How many nodes are known.
    pub fn node_count(&self) -> usize {
        self.inner.store.len()
    }

    /// The git follower's snapshots (`None` without `[source.git]`).
    pub fn git_snapshots(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<Arc<crate::gitsource::Snapshot>>> {
        self.inner
            .git
            .as_ref()
            .map(crate::gitsource::Handle::subscribe)
    }

    /// Ask the git follower to fetch now (SIGHUP).
    pub fn sync_git(&self) {
        if let Some(g) = &self.inner.git {
            g.sync_now();
        }
    }

    /// The git follower's latest snapshot.
    pub fn git(&self) -> Option<Arc<crate::gitsource::Snapshot>> {
        self.inner
            .git_snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Put the git follower's snapshot in force beside the spec directory (which is re-read
    /// too). Blocking.
    pub fn apply_git(&self, snapshot: Arc<crate::gitsource::Snapshot>) {
        let mut dir = self
            .inner
            .spec_dir
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let git_change = dir.set_external(snapshot.files.clone(), snapshot.held.clone());
        self.update_specs(dir, git_change);
        // After the specs: whoever sees the new commit sees its daemonsets.
        *self
            .inner
            .git_snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
    }

    /// Re-read the spec directory, update each daemonset's generation and store it. Blocking;
    /// the server calls it on inotify events (debounced) and on SIGHUP.
    pub fn rescan_specs(&self) {
        let dir = self
            .inner
            .spec_dir
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.update_specs(dir, crate::source::Change::default());
    }

    fn update_specs(
        &self,
        mut dir: std::sync::MutexGuard<'_, SpecDir>,
        before: crate::source::Change,
    ) {
        let mut change = dir.rescan();
        change.added.extend(before.added);
        change.updated.extend(before.updated);
        change.removed.extend(before.removed);
        change.diagnostics_changed |= before.diagnostics_changed;
        if change.diagnostics_changed {
            for d in dir.diagnostics() {
                tracing::warn!("{d}");
            }
        }
        for (names, what) in [
            (&change.added, "added"),
            (&change.updated, "changed"),
            (&change.removed, "removed"),
        ] {
            for name in names {
                tracing::info!(daemonset = %name, "daemonset {name} {what}");
            }
        }
        let now = self.now();
        let mut books = specs::next_books(
            &self.inner.store.spec_books(),
            &dir.daemonsets(),
            |name| dir.holds(name),
            now,
        );
        specs::record_revisions(
            &mut books,
            &dir.daemonsets(),
            |name| {
                let path = dir.source_of(name)?;
                let file = path.file_name()?.to_string_lossy().into_owned();
                // A spec from git: its text as of the commit in force, and that commit.
                let git = self
                    .inner
                    .git_snapshot
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .and_then(|g| Some((g.texts.get(path)?.clone(), g.commit.clone())));
                if let Some((text, commit)) = git {
                    return Some(specs::Source { file, text, commit });
                }
                let text = std::fs::read_to_string(path).ok()?;
                Some(specs::Source {
                    file,
                    text,
                    commit: String::new(),
                })
            },
            now,
        );
        self.install(&dir, books);
    }

    /// Store `books` and put the records they give in force.
    fn install(&self, dir: &SpecDir, books: BTreeMap<String, SpecBook>) {
        self.inner
            .rollouts
            .set_pinned(books.values().any(|b| b.rollout.pin.is_some()));
        let records = specs::records(dir, &books);
        if let Err(e) = self.inner.store.set_spec_books(books) {
            tracing::error!(error = %e, "cannot store the daemonsets' generations: {e}; retrying at the next flush");
        }
        let mut current = self
            .inner
            .records
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if *current.1 != records {
            *current = (current.0 + 1, Arc::new(records));
            drop(current);
            self.bump_fleet_version();
        }
    }

    /// Write the heartbeats' `last_seen` to the store. Blocking.
    pub fn flush(&self) {
        match self.inner.store.flush() {
            Ok(0) => {}
            Ok(n) => tracing::debug!(nodes = n, "heartbeats written"),
            Err(e) => tracing::error!(error = %e, "cannot write heartbeats: {e}; retrying"),
        }
    }

    /// Re-read the token files now (SIGHUP). On an error the tokens in force stay.
    pub fn reload_tokens(&self) -> Result<(), TokenFileError> {
        self.inner.auth.reload()
    }

    /// The spec directory, for the watcher.
    pub(super) fn spec_dir_path(&self) -> std::path::PathBuf {
        self.inner
            .spec_dir
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dir()
            .to_path_buf()
    }
}
