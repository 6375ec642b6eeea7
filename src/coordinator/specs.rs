//! The spec directory as the coordinator reads it: the agents' own [`SpecDir`] (same files,
//! same last-known-good and trust rules, so the coordinator's idea of a daemonset is the one
//! the agents act on), plus Kubernetes' object bookkeeping, which files do not carry.
//!
//! # Generation
//!
//! Each daemonset's `generation` starts at 1 when the coordinator first sees it and
//! increases by one each time its **spec** changes, as `metadata.generation` does in
//! Kubernetes: the selector, the template, the update strategy, `minReadySeconds` and
//! `revisionHistoryLimit`. A change to the daemonset's own labels or annotations, a
//! reformatted file, or the daemonset moving to another file is no new generation.
//!
//! The change is detected with [`content_hash`]: FNV-1a 64 over the `Debug` form of those
//! decoded fields, which is deterministic (the model has no hash maps) and independent of
//! the file's layout. It is stored, so a coordinator restarted over an edited directory
//! counts the edit once. A hostset upgrade that changes the model's `Debug` form counts as
//! one new generation of every daemonset (harmless: nothing acts on generations but the
//! status). `created_at` is set on first sight; `history` lists `(generation, revision)` of
//! the last [`MAX_HISTORY`] generations, which `observedGeneration` maps agents'
//! revisions through.
//!
//! A daemonset that leaves the directory loses its bookkeeping (a later one of the same
//! name starts at generation 1 again, as a re-created Kubernetes object does) — unless its
//! name is held ([`SpecDir::holds`]: its file is broken, or the directory cannot be
//! trusted), in which case it is kept for when the file is fixed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::store::{RevisionRecord, SpecBook};
use crate::fleet::SpecRecord;
use crate::source::{SpecDir, is_relevant};
use crate::spec::DaemonSet;

/// How many `(generation, revision)` entries a daemonset's history keeps.
pub const MAX_HISTORY: usize = 100;

/// The hash of the fields of `ds` whose change is a new generation (see the
/// [module docs](self)), as 16 hex digits.
pub fn content_hash(ds: &DaemonSet) -> String {
    // Destructured so that a new field must be placed on one side or the other.
    let DaemonSet {
        name: _,
        labels: _,
        annotations: _,
        selector,
        template,
        update_strategy,
        min_ready_seconds,
        revision_history_limit,
    } = ds;
    let text = format!(
        "{selector:?}\n{template:?}\n{update_strategy:?}\n{min_ready_seconds}\n\
         {revision_history_limit}"
    );
    // FNV-1a 64: stable across Rust releases, unlike std's DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The bookkeeping after a rescan: `old` updated for the daemonsets `in_force` at `now`;
/// the entries of other names are kept when `keep(name)` (held) and dropped otherwise.
pub fn next_books(
    old: &BTreeMap<String, SpecBook>,
    in_force: &[&DaemonSet],
    keep: impl Fn(&str) -> bool,
    now: u64,
) -> BTreeMap<String, SpecBook> {
    let mut books: BTreeMap<String, SpecBook> = old
        .iter()
        .filter(|(name, _)| keep(name))
        .map(|(n, b)| (n.clone(), b.clone()))
        .collect();
    for ds in in_force {
        let hash = content_hash(ds);
        let revision = crate::unit::revision(&ds.template);
        let book = match old.get(&ds.name) {
            Some(b) if b.hash == hash => b.clone(),
            Some(b) => {
                let generation = b.generation + 1;
                let mut history = b.history.clone();
                history.push((generation, revision));
                let excess = history.len().saturating_sub(MAX_HISTORY);
                history.drain(..excess);
                SpecBook {
                    generation,
                    created_at: b.created_at,
                    history,
                    hash,
                    revisions: b.revisions.clone(),
                    rollout: b.rollout.clone(),
                }
            }
            None => SpecBook {
                generation: 1,
                created_at: now,
                history: vec![(1, revision)],
                hash,
                revisions: Vec::new(),
                rollout: Default::default(),
            },
        };
        books.insert(ds.name.clone(), book);
    }
    books
}

/// Record each daemonset's current template in its numbered revisions (Kubernetes'
/// ControllerRevisions): a new template gets the next number, a template seen before is
/// renumbered as the newest (as `kubectl rollout undo` leaves it), and at most
/// `revisionHistoryLimit` old revisions are kept besides the current one. `text_of(name)`
/// gives the spec file's name and text (and its git commit), kept so that the revision can be run again
/// (`rollout undo`, automatic rollback). A pin from a revision the file no longer has ends.
/// Where a daemonset's spec was read from: the file's name, its text, and the git commit
/// it came from (empty for the spec directory).
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub file: String,
    pub text: String,
    pub commit: String,
}

pub fn record_revisions(
    books: &mut BTreeMap<String, SpecBook>,
    in_force: &[&DaemonSet],
    text_of: impl Fn(&str) -> Option<Source>,
    now: u64,
) {
    for ds in in_force {
        let Some(book) = books.get_mut(&ds.name) else {
            continue;
        };
        let revision = crate::unit::revision(&ds.template);
        if book
            .rollout
            .pin
            .as_ref()
            .is_some_and(|p| p.from != revision)
        {
            tracing::info!(daemonset = %ds.name, "the spec has a new revision: the pinned revision no longer applies");
            book.rollout.pin = None;
        }
        // While a pin from this revision holds, the pinned revision is the newest.
        let pinned_from_here = book
            .rollout
            .pin
            .as_ref()
            .is_some_and(|p| p.from == revision);
        let newest = book.revisions.last().map(|r| r.revision.as_str());
        if newest != Some(revision.as_str()) && !pinned_from_here {
            let number = book.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1;
            let source = text_of(&ds.name).unwrap_or_default();
            book.revisions.retain(|r| r.revision != revision);
            book.revisions.push(RevisionRecord {
                number,
                revision: revision.clone(),
                created_at: now,
                file: source.file,
                text: source.text,
                commit: source.commit,
            });
        }
        let keep = usize::try_from(ds.revision_history_limit.max(0)).unwrap_or(0) + 1;
        // The pinned revision is kept whatever the limit.
        let pinned = book.rollout.pin.as_ref().map(|p| p.to.clone());
        while book.revisions.len() > keep {
            let Some(i) = book
                .revisions
                .iter()
                .position(|r| Some(&r.revision) != pinned.as_ref())
            else {
                break;
            };
            if i + 1 == book.revisions.len() {
                break;
            }
            book.revisions.remove(i);
        }
    }
}

/// The daemonset in force for `ds` given its bookkeeping: the pinned revision's spec when a
/// pin applies (and decodes), else `ds` itself; with the pinned revision's number.
pub fn effective(ds: &DaemonSet, book: &SpecBook) -> (DaemonSet, Option<u64>) {
    let Some(pin) = &book.rollout.pin else {
        return (ds.clone(), None);
    };
    if pin.from != crate::unit::revision(&ds.template) {
        return (ds.clone(), None);
    }
    let Some(format) = crate::spec::format_of(Path::new(&pin.file)) else {
        return (ds.clone(), None);
    };
    let loaded = crate::spec::parse_daemonsets(&pin.file, &pin.text, format);
    match loaded.items.into_iter().find(|d| d.name == ds.name) {
        Some(pinned) if crate::unit::revision(&pinned.template) == pin.to => {
            (pinned, Some(pin.number))
        }
        _ => {
            tracing::warn!(daemonset = %ds.name, "the pinned revision's text no longer decodes to it; the spec file's revision is in force");
            (ds.clone(), None)
        }
    }
}

/// The records the status arithmetic works on: each daemonset in force with its bookkeeping.
pub fn records(dir: &SpecDir, books: &BTreeMap<String, SpecBook>) -> BTreeMap<String, SpecRecord> {
    dir.daemonsets()
        .into_iter()
        .filter_map(|ds| {
            let book = books.get(&ds.name)?;
            let (ds, _pinned) = effective(ds, book);
            Some((
                ds.name.clone(),
                SpecRecord {
                    file: dir
                        .source_of(&ds.name)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    revision: crate::unit::revision(&ds.template),
                    ds,
                    generation: book.generation,
                    created_at: book.created_at,
                    history: book.history.clone(),
                },
            ))
        })
        .collect()
}

/// Watch the spec directory (and its parent, to notice the directory appear): every
/// relevant change sends a unit message. Call [`SpecWatcher::rewatch`] before each rescan, to
/// watch a directory that has appeared (or been replaced) since.
pub struct SpecWatcher {
    watcher: notify::RecommendedWatcher,
    dir: PathBuf,
}

impl SpecWatcher {
    pub fn new(dir: &Path, tx: mpsc::Sender<()>) -> notify::Result<SpecWatcher> {
        use notify::{RecursiveMode, Watcher};
        let owned = dir.to_path_buf();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let relevant = match res {
                    Ok(ev) => ev.paths.iter().any(|p| {
                        p == &owned || (p.parent() == Some(owned.as_path()) && is_relevant(p))
                    }),
                    // Lost events (queue overflow): rescan to be sure.
                    Err(_) => true,
                };
                if relevant {
                    // A full channel already holds a wake-up.
                    let _ = tx.try_send(());
                }
            })?;
        if let Some(parent) = dir.parent().filter(|p| p.is_dir()) {
            watcher.watch(parent, RecursiveMode::NonRecursive)?;
        }
        let mut w = SpecWatcher {
            watcher,
            dir: dir.to_path_buf(),
        };
        w.rewatch();
        Ok(w)
    }

    /// Watch the directory, if it exists (again: adding a watch is idempotent, and a
    /// replaced directory needs a new one).
    pub fn rewatch(&mut self) {
        use notify::{RecursiveMode, Watcher};
        if self.dir.is_dir()
            && let Err(e) = self.watcher.watch(&self.dir, RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch the spec directory {}: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Format, parse_daemonsets};

    fn ds(text: &str) -> DaemonSet {
        let loaded = parse_daemonsets("x.toml", text, Format::Toml);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        loaded.items.into_iter().next().unwrap()
    }

    const BASE: &str = "name = \"x\"\nselector.matchLabels = { app = \"x\" }\n\
                        template.labels = { app = \"x\" }\ncommand = [\"/bin/true\"]\n";

    #[test]
    fn generations_count_spec_changes_only() {
        let v1 = ds(BASE);
        let books = next_books(&BTreeMap::new(), &[&v1], |_| false, 100);
        let b = &books["x"];
        assert_eq!((b.generation, b.created_at, b.history.len()), (1, 100, 1));

        // Same spec, other labels, another layout: same generation.
        let relabelled = ds(&format!("labels = {{ team = \"a\" }}\n\n{BASE}"));
        let same = next_books(&books, &[&relabelled], |_| false, 200);
        assert_eq!(same, books);

        // A template change: generation 2, new revision in the history.
        let v2 = ds(&BASE.replace("/bin/true", "/bin/false"));
        let books2 = next_books(&books, &[&v2], |_| false, 300);
        let b2 = &books2["x"];
        assert_eq!((b2.generation, b2.created_at), (2, 100));
        assert_eq!(b2.history[1], (2, crate::unit::revision(&v2.template)));
        assert_ne!(b2.history[0].1, b2.history[1].1);

        // minReadySeconds: a spec change without a new revision.
        let v3 = ds(&format!(
            "minReadySeconds = 5\n{}",
            BASE.replace("/bin/true", "/bin/false")
        ));
        let b3 = &next_books(&books2, &[&v3], |_| false, 400)["x"];
        assert_eq!(b3.generation, 3);
        assert_eq!(b3.history[2].1, b2.history[1].1);
    }

    #[test]
    fn gone_daemonsets_lose_their_bookkeeping_unless_held() {
        let v1 = ds(BASE);
        let books = next_books(&BTreeMap::new(), &[&v1], |_| false, 100);
        assert!(next_books(&books, &[], |_| false, 200).is_empty());
        assert_eq!(next_books(&books, &[], |n| n == "x", 200), books);
    }

    #[test]
    fn history_is_bounded() {
        let mut books = BTreeMap::new();
        for i in 0..(MAX_HISTORY + 5) {
            let v = ds(&BASE.replace("/bin/true", &format!("/bin/v{i}")));
            books = next_books(&books, &[&v], |_| false, 0);
        }
        let b = &books["x"];
        assert_eq!(b.generation, (MAX_HISTORY + 5) as u64);
        assert_eq!(b.history.len(), MAX_HISTORY);
        assert_eq!(b.history.last().unwrap().0, b.generation);
    }

    #[test]
    fn revisions_are_numbered_with_their_text_and_commit() {
        let v1 = ds(BASE);
        let v2 = ds(&BASE.replace("/bin/true", "/bin/false"));
        let source = |commit: &str| {
            let commit = commit.to_string();
            move |_: &str| {
                Some(Source {
                    file: "x.toml".into(),
                    text: "the text".into(),
                    commit: commit.clone(),
                })
            }
        };
        let mut books = next_books(&BTreeMap::new(), &[&v1], |_| false, 100);
        record_revisions(&mut books, &[&v1], source("c1"), 100);
        let mut books = next_books(&books, &[&v2], |_| false, 200);
        record_revisions(&mut books, &[&v2], source("c2"), 200);
        let r = &books["x"].revisions;
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].number, r[0].commit.as_str()), (1, "c1"));
        assert_eq!(
            (r[1].number, r[1].commit.as_str(), r[1].text.as_str()),
            (2, "c2", "the text")
        );
        // v1 again: the next number, as Kubernetes numbers a template seen again.
        let mut books = next_books(&books, &[&v1], |_| false, 300);
        record_revisions(&mut books, &[&v1], source("c3"), 300);
        let r = &books["x"].revisions;
        assert_eq!(
            r.iter()
                .map(|r| (r.number, r.commit.as_str()))
                .collect::<Vec<_>>(),
            [(2, "c2"), (3, "c3")]
        );
    }
}
