//! The spec directory, `/etc/hostset/daemonsets.d/`, as the agent sees it: which daemonsets
//! are in force, which files are broken, and which units must be left alone.
//!
//! [`SpecDir::rescan`] re-reads the directory and reports what changed ([`Change`]); the
//! accessors say what is in force ([`SpecDir::daemonsets`]), what is wrong
//! ([`SpecDir::diagnostics`]) and what must not be touched ([`SpecDir::held`],
//! [`SpecDir::held_stems`], [`SpecDir::hold_all`]). The agent's watcher calls
//! [`is_relevant`] to drop events about files that can never matter.
//!
//! # Which files count
//!
//! A directory entry counts when its name ([`is_relevant`]):
//! - ends in `.toml` (native), `.yaml`, `.yml` or `.json` (Kubernetes), lower case, as
//!   [`crate::spec::format_of`] reads them;
//! - does not start with `.` (hidden files, which also covers Emacs lock files `.#*` and Vim
//!   swap files `.name.toml.swp`);
//! - is none of the editor and package-manager leftovers: `*~`, `#*#`, `.#*`, `*.swp`,
//!   `*.swx`, `*.tmp`, `*.bak`, `*.dpkg-new`, `*.dpkg-old`, `*.dpkg-dist`, `*.dpkg-tmp`,
//!   `*.rpmnew`, `*.rpmsave`, `*.rpmorig`, `*.ucf-new`, `*.ucf-old`, `*.ucf-dist`. (With the
//!   extension rule most of these could not count anyway; the list is checked explicitly so
//!   the rule stays obvious and survives a new extension.)
//! - is valid UTF-8 (a daemonset file name that is not cannot be reported faithfully).
//!
//! Sub-directories are not descended into. An entry with a relevant name that is not a
//! regular file (a directory called `x.toml`, a FIFO, a device) is an invalid file.
//!
//! # Trust
//!
//! Every daemonset runs as root (or as any user it names), so whoever can write a spec file
//! can run code as root. A file is **refused** unless:
//! - it is a regular file owned by root (uid 0) or by the configured owner
//!   ([`SpecDir::with_owner`]; default root, so only root), and
//! - it is not writable by group or others (`mode & 0o022 == 0`).
//!
//! The spec directory must be owned the same way and not be writable by group or others;
//! each of its ancestors must be owned by root or the configured owner and must not be
//! writable by group or others unless it has the sticky bit (as `/tmp` has: nobody else can
//! rename or delete the entries in it). Sticky does not excuse the spec directory itself.
//!
//! **Symlinks** are followed (packaging and configuration management like to link specs in),
//! but what counts is the target: the target must pass the file rules above and every
//! directory on its canonical path must pass the ancestor rule. The symlink itself lives in
//! the trusted directory, so only its owner could re-point it. The spec directory may be a
//! symlink too; its canonical path is checked.
//!
//! A refused file is treated like an invalid one (see below): its last-known-good version
//! stays in force and its diagnostic says why and what command fixes it. Its content is not
//! read. An untrusted or unreadable spec directory freezes everything: nothing is read,
//! nothing changes, and [`SpecDir::hold_all`] is true until the directory is fixed. A
//! missing spec directory is an empty one (a warning says so): every daemonset is gone.
//!
//! File contents are checked on the opened file (`fstat`), so a file swapped between the
//! check and the read is not trusted by mistake. Files are opened non-blocking and read up to
//! [`MAX_FILE_SIZE`] bytes; a larger file is invalid.
//!
//! # Last-known-good
//!
//! "A typo never takes a running daemon down." Per file, the agent keeps the daemonsets of
//! the last content that was valid (no error; warnings are fine) — its **last-known-good**
//! (LKG). When a file becomes invalid (a parse error, a validation error, a half-written
//! file, a refusal), its LKG stays in force and the file's diagnostics say what is wrong.
//! When it becomes valid again, its new content replaces the LKG. A file that has not been
//! valid since the agent started contributes nothing, but is reported, and its names are held
//! (below). A deleted file (or one renamed to an irrelevant name) takes its daemonsets with
//! it: they are removed. A file that vanishes between listing and reading is deleted; a
//! symlink whose target vanished is an invalid file (its LKG stays).
//!
//! # Held units
//!
//! A unit must be left alone — neither stopped nor removed, however it looks — when the spec
//! that would decide its fate is broken. Right after an agent restart nothing is known about
//! a file that is already broken, so the rules are:
//! - [`SpecDir::held`]: the names of every invalid or refused file's LKG, the names the
//!   file's current (invalid) content still decodes to, and every name defined by several
//!   files where none of them owned it before (see below);
//! - [`SpecDir::held_stems`]: the file stems (`NAME` of `NAME.toml`, `NAME.yaml`, ...) of the
//!   invalid or refused files that have no LKG. By convention the native file `NAME.toml`
//!   defines the daemonset `NAME` (a warning says so when it does not), so the agent must
//!   treat the unit `hostset-NAME.service` as held too;
//! - [`SpecDir::hold_all`]: the directory itself could not be trusted or read; hold every
//!   unit.
//!
//! [`SpecDir::holds`] answers for one daemonset name, combining the three.
//!
//! # Duplicate names
//!
//! A name defined by two (or more) files is an error in each of them ("daemonset "x" is
//! defined in A and B"). The file that owned the name before the conflict arose (whose
//! version was in force) keeps it: its LKG for that name stays in force, including later
//! valid edits of that file. The other file's definition of that name is ignored; its other
//! daemonsets are unaffected. When none of the files owned the name (the agent started with
//! the conflict, or the owner dropped it while two others define it), nothing is in force for
//! the name and the name is held, so its running unit is left alone. Remove the name from
//! all files but one to resolve it.
//!
//! # Partial writes and change detection
//!
//! A rescan re-reads a file only when its identity changed: device, inode, size, mode, owner,
//! modification and status-change times (`ctime`, so a `chmod` or `chown` is seen). A file
//! modified within [`RACY_WINDOW`] of being read is re-read on the next rescan whatever its
//! stamp (a second write within one clock tick of the first may leave the stamp unchanged;
//! Git calls this "racily clean"); unchanged content (by hash) is not parsed again. A
//! half-written file is usually invalid and then simply waits under its LKG until it is
//! complete. A truncated file can be valid, though (the tail of a TOML file lost): the agent
//! debounces events ([`RECOMMENDED_DEBOUNCE`]), and writers should write a temporary file
//! and `rename(2)` it into place (hidden and `*.tmp` names are ignored for that reason).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, Metadata};
use std::hash::Hasher;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::spec::{DaemonSet, Diagnostic, Format, Severity, format_of, parse_daemonsets};

/// Where the agent looks for daemonset specs.
pub const DEFAULT_DIR: &str = "/etc/hostset/daemonsets.d";

/// Larger spec files are invalid (Kubernetes stores objects of at most 1.5 MiB).
pub const MAX_FILE_SIZE: u64 = 4 << 20;

/// A file modified less than this before it was read is read again on the next rescan.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// How long the watcher should wait for quiet after an event before rescanning.
pub const RECOMMENDED_DEBOUNCE: Duration = Duration::from_millis(250);

/// File-name suffixes that never count, even with a relevant extension before them.
const IGNORED_SUFFIXES: &[&str] = &[
    "~",
    ".swp",
    ".swx",
    ".tmp",
    ".bak",
    ".dpkg-new",
    ".dpkg-old",
    ".dpkg-dist",
    ".dpkg-tmp",
    ".rpmnew",
    ".rpmsave",
    ".rpmorig",
    ".ucf-new",
    ".ucf-old",
    ".ucf-dist",
];

/// Whether a change to `path` can matter: its file name is a spec file name (see the
/// [module docs](self#which-files-count)). Only the last component is looked at; events
/// about the spec directory itself (its removal, a `chmod`) call for a rescan too.
pub fn is_relevant(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') || (name.starts_with('#') && name.ends_with('#')) {
        return false;
    }
    if IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return false;
    }
    format_of(Path::new(name)).is_some()
}

/// What a [`SpecDir::rescan`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Daemonsets now in force that were not before.
    pub added: BTreeSet<String>,
    /// Daemonsets in force before and after, with a different definition.
    pub updated: BTreeSet<String>,
    /// Daemonsets no longer in force.
    pub removed: BTreeSet<String>,
    /// [`SpecDir::held`], [`SpecDir::held_stems`] or [`SpecDir::hold_all`] changed: a unit
    /// that was held may now be removed (or the reverse).
    pub held_changed: bool,
    /// [`SpecDir::diagnostics`] changed.
    pub diagnostics_changed: bool,
}

impl Change {
    /// Nothing changed at all.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.updated.is_empty()
            && self.removed.is_empty()
            && !self.held_changed
            && !self.diagnostics_changed
    }

    /// The daemonsets added, updated or removed.
    pub fn names(&self) -> BTreeSet<&str> {
        self.added
            .iter()
            .chain(&self.updated)
            .chain(&self.removed)
            .map(String::as_str)
            .collect()
    }
}

/// How a file's current content stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Valid: its daemonsets are its last-known-good.
    Valid,
    /// Unreadable, unparsable or failing validation: its last-known-good (if any) stays.
    Invalid,
    /// Not trusted (owner, mode): not read; its last-known-good (if any) stays.
    Refused,
}

/// One spec file, as [`SpecDir::files`] reports it.
#[derive(Debug, Clone)]
pub struct FileView<'a> {
    pub path: &'a Path,
    pub status: FileStatus,
    /// The daemonsets of the last valid content, `None` when it has not been valid since the
    /// agent started.
    pub last_known_good: Option<&'a [DaemonSet]>,
    /// The file's own diagnostics (not the conflict errors, see [`SpecDir::diagnostics`]).
    pub diagnostics: &'a [Diagnostic],
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    uid: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mode: meta.mode(),
            uid: meta.uid(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// What the agent knows about one spec file.
#[derive(Debug, Clone)]
struct FileState {
    status: FileStatus,
    /// The stamp of the content last read (None: nothing read, e.g. refused or unreadable).
    stamp: Option<Stamp>,
    /// Read again on the next rescan, whatever the stamp says.
    racy: bool,
    /// Hash of the content last parsed.
    hash: Option<u64>,
    /// The daemonsets of the last valid content.
    lkg: Option<Vec<DaemonSet>>,
    /// The names the current content decodes to, valid or not.
    current_names: BTreeSet<String>,
    /// Parse, validation, trust and LKG diagnostics of the current content.
    diagnostics: Vec<Diagnostic>,
}

impl FileState {
    fn new() -> FileState {
        FileState {
            status: FileStatus::Invalid,
            stamp: None,
            racy: false,
            hash: None,
            lkg: None,
            current_names: BTreeSet::new(),
            diagnostics: Vec::new(),
        }
    }

    fn lkg_names(&self) -> impl Iterator<Item = &str> {
        self.lkg.iter().flatten().map(|ds| ds.name.as_str())
    }
}

/// The spec directory with last-known-good per file. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct SpecDir {
    dir: PathBuf,
    /// Besides root, the uid allowed to own the directory and its files.
    owner: u32,
    by_file: BTreeMap<PathBuf, FileState>,
    /// Name → (owning file, definition) of every daemonset in force.
    in_force: BTreeMap<String, (PathBuf, DaemonSet)>,
    /// Names defined by several files, none of which owned them.
    contested: BTreeSet<String>,
    /// "defined in A and B" errors.
    conflicts: Vec<Diagnostic>,
    /// Errors and warnings about the directory itself.
    dir_diagnostics: Vec<Diagnostic>,
    /// The directory could not be trusted or read: everything is frozen.
    frozen: bool,
    /// Daemonsets from another source ([`SpecDir::set_external`]), by the name of the file
    /// they come from there (`git:daemonsets/web.toml`).
    external: BTreeMap<PathBuf, Vec<DaemonSet>>,
    /// Names the other source holds.
    external_held: BTreeSet<String>,
}

/// The state a [`Change`] is computed against.
struct Before {
    force: BTreeMap<String, DaemonSet>,
    held: Held,
    diagnostics: Vec<Diagnostic>,
}

/// A snapshot of everything a [`Change`] compares.
#[derive(PartialEq)]
struct Held {
    names: BTreeSet<String>,
    stems: BTreeSet<String>,
    all: bool,
}

impl SpecDir {
    /// The spec directory `dir`, not read yet: call [`SpecDir::rescan`]. Files must be owned
    /// by root.
    pub fn new(dir: impl Into<PathBuf>) -> SpecDir {
        SpecDir {
            dir: dir.into(),
            owner: 0,
            by_file: BTreeMap::new(),
            in_force: BTreeMap::new(),
            contested: BTreeSet::new(),
            conflicts: Vec::new(),
            dir_diagnostics: Vec::new(),
            frozen: false,
            external: BTreeMap::new(),
            external_held: BTreeSet::new(),
        }
    }

    /// Put the daemonsets of another source (`[source.git]`) beside the directory's: `files`
    /// maps each of that source's file names (which must not be paths of the directory, e.g.
    /// `git:daemonsets/web.toml`) to its daemonsets, all valid; `held` are names that source
    /// cannot decide now (its units must be left alone). They replace what was set before.
    /// A name defined both here and in the directory is a duplicate like any other (see the
    /// [module docs](self#duplicate-names)): an error on both files.
    pub fn set_external(
        &mut self,
        files: BTreeMap<PathBuf, Vec<DaemonSet>>,
        held: BTreeSet<String>,
    ) -> Change {
        let before = self.before();
        self.external = files;
        self.external_held = held;
        self.resolve();
        self.change_since(before)
    }

    /// Also trust the directory and files owned by `uid` (besides root). For tests that do
    /// not run as root; an agent keeps the default, root only.
    pub fn with_owner(mut self, uid: u32) -> SpecDir {
        self.owner = uid;
        self
    }

    /// The directory, as given.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemonsets in force, by name: each file's last-known-good, duplicates resolved.
    pub fn daemonsets(&self) -> Vec<&DaemonSet> {
        self.in_force.values().map(|(_, ds)| ds).collect()
    }

    /// The daemonset in force under `name`.
    pub fn get(&self, name: &str) -> Option<&DaemonSet> {
        self.in_force.get(name).map(|(_, ds)| ds)
    }

    /// The file the daemonset `name` in force comes from.
    pub fn source_of(&self, name: &str) -> Option<&Path> {
        self.in_force.get(name).map(|(p, _)| p.as_path())
    }

    /// Every error and warning: about the directory, each file (in file order), and
    /// duplicate names. While the directory is frozen, only the directory's.
    pub fn diagnostics(&self) -> Vec<&Diagnostic> {
        let mut out: Vec<&Diagnostic> = self.dir_diagnostics.iter().collect();
        if !self.frozen {
            out.extend(self.by_file.values().flat_map(|f| &f.diagnostics));
            out.extend(&self.conflicts);
        }
        out
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics().iter().any(|d| d.is_error())
    }

    /// Daemonset names whose units must be left alone: see the
    /// [module docs](self#held-units).
    pub fn held(&self) -> BTreeSet<String> {
        let mut held: BTreeSet<String> = self.contested.clone();
        held.extend(self.external_held.iter().cloned());
        for f in self.by_file.values() {
            if f.status != FileStatus::Valid {
                held.extend(f.lkg_names().map(str::to_string));
                held.extend(f.current_names.iter().cloned());
            }
        }
        if self.frozen {
            held.extend(self.in_force.keys().cloned());
        }
        held
    }

    /// The stems of invalid or refused files without last-known-good: the unit
    /// `hostset-STEM.service` is held (see the [module docs](self#held-units)).
    pub fn held_stems(&self) -> BTreeSet<String> {
        self.by_file
            .iter()
            .filter(|(_, f)| f.status != FileStatus::Valid && f.lkg.is_none())
            .filter_map(|(p, _)| Some(p.file_stem()?.to_str()?.to_string()))
            .collect()
    }

    /// The directory itself is untrusted or unreadable: hold every unit.
    pub fn hold_all(&self) -> bool {
        self.frozen
    }

    /// Whether the unit of daemonset `name` must be left alone: [`SpecDir::hold_all`], or
    /// `name` in [`SpecDir::held`] or [`SpecDir::held_stems`].
    pub fn holds(&self, name: &str) -> bool {
        self.frozen || self.held().contains(name) || self.held_stems().contains(name)
    }

    /// Every spec file known, in path order.
    pub fn files(&self) -> Vec<FileView<'_>> {
        self.by_file
            .iter()
            .map(|(path, f)| FileView {
                path,
                status: f.status,
                last_known_good: f.lkg.as_deref(),
                diagnostics: &f.diagnostics,
            })
            .collect()
    }

    fn held_snapshot(&self) -> Held {
        Held {
            names: self.held(),
            stems: self.held_stems(),
            all: self.frozen,
        }
    }

    /// Re-read the directory and say what changed. Never fails: what cannot be read is
    /// reported in [`SpecDir::diagnostics`] and handled by the rules of the
    /// [module docs](self).
    pub fn rescan(&mut self) -> Change {
        let before = self.before();
        self.scan();
        self.change_since(before)
    }

    /// What [`SpecDir::change_since`] compares.
    fn before(&self) -> Before {
        Before {
            force: self
                .in_force
                .iter()
                .map(|(n, (_, ds))| (n.clone(), ds.clone()))
                .collect(),
            held: self.held_snapshot(),
            diagnostics: self.diagnostics().into_iter().cloned().collect(),
        }
    }

    fn change_since(&self, before: Before) -> Change {
        let Before {
            force: before_force,
            held: before_held,
            diagnostics: before_diags,
        } = before;
        let mut change = Change::default();
        for (name, (_, ds)) in &self.in_force {
            match before_force.get(name) {
                None => {
                    change.added.insert(name.clone());
                }
                Some(old) if old != ds => {
                    change.updated.insert(name.clone());
                }
                Some(_) => {}
            }
        }
        change.removed = before_force
            .keys()
            .filter(|n| !self.in_force.contains_key(*n))
            .cloned()
            .collect();
        change.held_changed = self.held_snapshot() != before_held;
        change.diagnostics_changed = self.diagnostics().into_iter().ne(before_diags.iter());
        change
    }

    fn scan(&mut self) {
        self.dir_diagnostics.clear();
        let dir_display = self.dir.display().to_string();
        let entries = match self.list() {
            Ok(entries) => entries,
            Err(DirProblem::Missing) => {
                self.frozen = false;
                self.dir_diagnostics.push(diag(
                    &dir_display,
                    Severity::Warning,
                    "the spec directory does not exist: no daemonsets are defined".to_string(),
                ));
                Vec::new()
            }
            Err(DirProblem::Frozen(message)) => {
                self.frozen = true;
                self.dir_diagnostics.push(diag(
                    &dir_display,
                    Severity::Error,
                    format!(
                        "{message}; nothing in the directory is read or changed, and every \
                         hostset unit is left as it is until this is fixed"
                    ),
                ));
                return;
            }
        };
        self.frozen = false;

        let present: BTreeSet<PathBuf> = entries.iter().cloned().collect();
        self.by_file.retain(|p, _| present.contains(p));
        for path in entries {
            let mut state = self.by_file.remove(&path).unwrap_or_else(FileState::new);
            let keep = self.refresh(&path, &mut state);
            if keep {
                self.by_file.insert(path, state);
            }
        }
        self.resolve();
    }

    /// The relevant entries of the directory, after checking the directory's trust.
    fn list(&self) -> Result<Vec<PathBuf>, DirProblem> {
        let canonical = match std::fs::canonicalize(&self.dir) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(DirProblem::Missing),
            Err(e) => {
                return Err(DirProblem::Frozen(format!(
                    "cannot read the spec directory: {e}"
                )));
            }
        };
        let meta = std::fs::metadata(&canonical)
            .map_err(|e| DirProblem::Frozen(format!("cannot read the spec directory: {e}")))?;
        if !meta.is_dir() {
            return Err(DirProblem::Frozen(
                "the spec directory is not a directory".to_string(),
            ));
        }
        if let Some(problem) = self.untrusted_dir(&canonical, &meta, false) {
            return Err(DirProblem::Frozen(problem));
        }
        if let Some(parent) = canonical.parent()
            && let Some(problem) = self.untrusted_ancestors(parent)
        {
            return Err(DirProblem::Frozen(problem));
        }
        let read = std::fs::read_dir(&self.dir)
            .map_err(|e| DirProblem::Frozen(format!("cannot read the spec directory: {e}")))?;
        let mut out = Vec::new();
        for entry in read {
            let entry = entry
                .map_err(|e| DirProblem::Frozen(format!("cannot list the spec directory: {e}")))?;
            let path = self.dir.join(entry.file_name());
            if is_relevant(&path) {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }

    fn trusted_uid(&self, uid: u32) -> bool {
        uid == 0 || uid == self.owner
    }

    fn owner_words(&self) -> String {
        if self.owner == 0 {
            "root".to_string()
        } else {
            format!("root or uid {}", self.owner)
        }
    }

    /// Why the directory `path` cannot be trusted, if it cannot. `sticky_ok`: an ancestor,
    /// where the sticky bit makes group/world write harmless.
    fn untrusted_dir(&self, path: &Path, meta: &Metadata, sticky_ok: bool) -> Option<String> {
        let shown = path.display();
        let mode = meta.permissions().mode();
        if !self.trusted_uid(meta.uid()) {
            return Some(format!(
                "refused: directory {shown} is owned by uid {}, not {}: its owner can add a \
                 daemonset and run code as root; chown root: {shown}",
                meta.uid(),
                self.owner_words()
            ));
        }
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !(sticky_ok && sticky) {
            return Some(format!(
                "refused: directory {shown} is writable by group/others (mode {:04o}): anyone \
                 who can write it can add a daemonset and run code as root; chmod go-w {shown}",
                mode & 0o7777
            ));
        }
        None
    }

    /// Why some directory from `dir` up to `/` cannot be trusted, if one cannot.
    fn untrusted_ancestors(&self, dir: &Path) -> Option<String> {
        for ancestor in dir.ancestors() {
            match std::fs::metadata(ancestor) {
                Ok(meta) => {
                    if let Some(problem) = self.untrusted_dir(ancestor, &meta, true) {
                        return Some(problem);
                    }
                }
                Err(e) => return Some(format!("cannot check {}: {e}", ancestor.display())),
            }
        }
        None
    }

    /// Why the file behind `meta` cannot be trusted, if it cannot. `shown` names it in
    /// words, `path` in the command that fixes it.
    fn untrusted_file(&self, shown: &str, path: &Path, meta: &Metadata) -> Option<String> {
        let mode = meta.permissions().mode();
        let path = path.display();
        if !meta.file_type().is_file() {
            return Some(format!(
                "{shown} is not a regular file: a spec must be a regular file (or a symlink to \
                 one)"
            ));
        }
        if !self.trusted_uid(meta.uid()) {
            return Some(format!(
                "refused: {shown} is owned by uid {}, not {}: its owner can run code as root; \
                 chown root: {path}",
                meta.uid(),
                self.owner_words()
            ));
        }
        if mode & 0o022 != 0 {
            return Some(format!(
                "refused: {shown} is writable by group/others (mode {:04o}): anyone who can \
                 write it can run code as root; chmod 644 {path}",
                mode & 0o7777
            ));
        }
        None
    }

    /// Bring one file's state up to date. False when the file is gone (deleted).
    fn refresh(&self, path: &Path, state: &mut FileState) -> bool {
        let file = path.display().to_string();
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Gone since the listing, or a dangling symlink.
                match std::fs::symlink_metadata(path) {
                    Ok(_) => {
                        unreadable(
                            state,
                            &file,
                            format!("the symlink's target does not exist: {e}"),
                        );
                        return true;
                    }
                    Err(_) => return false,
                }
            }
            Err(e) => {
                unreadable(state, &file, format!("cannot read: {e}"));
                return true;
            }
        };

        // A symlink: check the target's directories too.
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let target = if is_link {
            match std::fs::canonicalize(path) {
                Ok(t) => Some(t),
                Err(e) => {
                    unreadable(state, &file, format!("cannot read: {e}"));
                    return true;
                }
            }
        } else {
            None
        };
        let shown = match &target {
            Some(t) => format!("the symlink's target {}", t.display()),
            None => "the file".to_string(),
        };
        let real = target.as_deref().unwrap_or(path);
        if let Some(problem) = self.untrusted_file(&shown, real, &meta).or_else(|| {
            target
                .as_deref()
                .and_then(Path::parent)
                .and_then(|d| self.untrusted_ancestors(d))
        }) {
            refuse(state, &file, problem);
            return true;
        }

        let stamp = Stamp::of(&meta);
        if state.status != FileStatus::Refused && state.stamp == Some(stamp) && !state.racy {
            return true;
        }

        // Read what was opened, checking the opened file itself.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOCTTY.bits())
            .open(path);
        let mut handle = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
            Err(e) => {
                unreadable(state, &file, format!("cannot read: {e}"));
                return true;
            }
        };
        let meta = match handle.metadata() {
            Ok(m) => m,
            Err(e) => {
                unreadable(state, &file, format!("cannot read: {e}"));
                return true;
            }
        };
        if let Some(problem) = self.untrusted_file(&shown, real, &meta) {
            refuse(state, &file, problem);
            return true;
        }
        let bytes = match read_limited(&mut handle) {
            Ok(b) => b,
            Err(message) => {
                unreadable(state, &file, message);
                return true;
            }
        };
        let stamp = Stamp::of(&meta);
        state.stamp = Some(stamp);
        state.racy = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_none_or(|age| age < RACY_WINDOW);

        let mut hasher = DefaultHasher::new();
        hasher.write(&bytes);
        let hash = hasher.finish();
        if state.hash == Some(hash) && state.status != FileStatus::Refused {
            return true;
        }
        state.hash = Some(hash);
        self.parse(path, &file, bytes, state);
        true
    }

    /// Parse fresh content into the file's state.
    fn parse(&self, path: &Path, file: &str, bytes: Vec<u8>, state: &mut FileState) {
        // `is_relevant` guarantees a format.
        let format = format_of(path).unwrap_or(Format::Toml);
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                invalid(
                    state,
                    vec![diag(file, Severity::Error, format!("not UTF-8 text: {e}"))],
                );
                return;
            }
        };
        let loaded = parse_daemonsets(file, &text, format);
        let names: BTreeSet<String> = loaded
            .items
            .iter()
            .map(|ds| ds.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        if loaded.has_errors() {
            invalid(state, loaded.diagnostics);
            state.current_names = names;
            return;
        }
        let mut diagnostics = loaded.diagnostics;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if format == Format::Toml
            && let [ds] = loaded.items.as_slice()
            && ds.name != stem
        {
            diagnostics.push(diag(
                file,
                Severity::Warning,
                format!(
                    "the file defines daemonset \"{}\" but is named {stem}.toml: name it {}.toml, \
                     or an agent restarted while the file is broken cannot tell which unit it \
                     must leave alone",
                    ds.name, ds.name
                ),
            ));
        }
        state.status = FileStatus::Valid;
        state.lkg = Some(loaded.items);
        state.current_names = names;
        state.diagnostics = diagnostics;
    }

    /// Decide the daemonsets in force from every file's LKG, resolving duplicate names.
    fn resolve(&mut self) {
        let mut candidates: BTreeMap<&str, Vec<(&PathBuf, &DaemonSet)>> = BTreeMap::new();
        for (path, f) in &self.by_file {
            for ds in f.lkg.iter().flatten() {
                candidates
                    .entry(ds.name.as_str())
                    .or_default()
                    .push((path, ds));
            }
        }
        for (path, items) in &self.external {
            for ds in items {
                candidates
                    .entry(ds.name.as_str())
                    .or_default()
                    .push((path, ds));
            }
        }
        let mut in_force = BTreeMap::new();
        let mut contested = BTreeSet::new();
        let mut conflicts = Vec::new();
        for (name, defs) in candidates {
            if let [(path, ds)] = defs.as_slice() {
                in_force.insert(name.to_string(), ((*path).clone(), (*ds).clone()));
                continue;
            }
            let files: Vec<String> = defs.iter().map(|(p, _)| p.display().to_string()).collect();
            let listed = join_and(&files);
            let previous = self.in_force.get(name).map(|(p, _)| p);
            let owner = defs.iter().find(|(p, _)| Some(*p) == previous);
            let consequence = match owner {
                Some((path, ds)) => {
                    in_force.insert(name.to_string(), ((*path).clone(), (*ds).clone()));
                    format!(
                        "the version from {}, in force before, stays in force and the others \
                         are ignored",
                        path.display()
                    )
                }
                None => {
                    contested.insert(name.to_string());
                    "none of them is applied, and a running unit is left as it is".to_string()
                }
            };
            for file in &files {
                conflicts.push(diag(
                    file,
                    Severity::Error,
                    format!(
                        "daemonset \"{name}\" is defined in {listed}: {consequence}; remove it \
                         from all files but one"
                    ),
                ));
            }
        }
        conflicts.sort_by(|a, b| a.file.cmp(&b.file));
        self.in_force = in_force;
        self.contested = contested;
        self.conflicts = conflicts;
    }
}

enum DirProblem {
    Missing,
    Frozen(String),
}

fn diag(file: &str, severity: Severity, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        pos: None,
        path: String::new(),
        severity,
        message,
    }
}

/// "A", "A and B", "A, B and C".
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Read at most [`MAX_FILE_SIZE`] bytes; more is an error.
fn read_limited(file: &mut File) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(format!(
            "the file is larger than {} MiB: that is no daemonset spec",
            MAX_FILE_SIZE >> 20
        ));
    }
    Ok(bytes)
}

/// The note that explains what an invalid file means for its daemonsets.
fn lkg_note(file: &str, state: &FileState) -> Diagnostic {
    let names: Vec<String> = state.lkg_names().map(|n| format!("\"{n}\"")).collect();
    let message = if state.lkg.is_some() {
        format!(
            "the last valid version of this file stays in force (daemonset {}) until the \
             errors are fixed",
            join_and(&names)
        )
    } else {
        "this file has not been valid since hostsetd started: it defines nothing, and the units \
         it may have defined are left as they are until it is fixed"
            .to_string()
    };
    diag(file, Severity::Warning, message)
}

/// Mark the file invalid with `diagnostics`, keeping its LKG.
fn invalid(state: &mut FileState, mut diagnostics: Vec<Diagnostic>) {
    state.status = FileStatus::Invalid;
    if let Some(first) = diagnostics.first() {
        let file = first.file.clone();
        diagnostics.push(lkg_note(&file, state));
    }
    state.diagnostics = diagnostics;
}

/// Mark the file invalid because it could not be read: read it again next time.
fn unreadable(state: &mut FileState, file: &str, message: String) {
    state.stamp = None;
    state.hash = None;
    invalid(state, vec![diag(file, Severity::Error, message)]);
}

/// Mark the file refused, keeping its LKG; its content is forgotten so it is read again
/// once trusted.
fn refuse(state: &mut FileState, file: &str, problem: String) {
    state.status = FileStatus::Refused;
    state.stamp = None;
    state.hash = None;
    state.current_names.clear();
    state.diagnostics = vec![diag(file, Severity::Error, problem)];
    let note = lkg_note(file, state);
    state.diagnostics.push(note);
}
