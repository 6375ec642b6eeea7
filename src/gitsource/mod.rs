//! `[source.git]`: daemonset specs from a branch or tag of a git repository, followed by a
//! shallow mirror in the daemon's state directory and applied a whole commit at a time.
//!
//! [`Follower::poll`] fetches the reference (depth 1, libgit2 in process: no `git` binary),
//! reads the spec files of the commit's subdirectory (the names [`crate::source::is_relevant`]
//! accepts, not descending into sub-directories), and decides:
//!
//! - **Atomic.** A commit is applied as a whole set of specs. A commit with any error (a file
//!   that does not parse or validate, a daemonset defined twice, a symlink or other non-file
//!   entry with a spec name, a missing subdirectory) is refused as a whole: the commit in
//!   force stays in force, and the errors are reported as `COMMIT:FILE:LINE:COL: PATH:
//!   message` (`git show COMMIT:FILE` shows the file).
//! - **Signatures** (with `allowed_signers_file`): a head without an ssh signature, or signed
//!   by a key that is not allowed, or whose signature does not verify, is refused the same
//!   way. The file is read again on every poll (a key added or revoked counts at once).
//! - **Network faults** (remote unreachable, authentication, timeouts) are reported
//!   (`fetchError`); nothing changes. **Force-push**: the new head is applied like any
//!   other (the branch is the truth), and a note says the history was rewritten.
//!   **A corrupted mirror** (it cannot be opened, fetched into or read) is removed and
//!   fetched anew in the same poll; a note says so.
//! - **Restarts.** The applied commit's files are kept in `applied.json` beside the mirror
//!   and applied at start, before any fetch, so a restarted daemon runs the same commit even
//!   with the remote down or the mirror lost.
//!
//! [`spawn`] runs a follower on its own thread, polling every `poll_interval` (±10 %
//! jitter) or when asked ([`Handle::sync_now`]), and publishes a [`Snapshot`] after each
//! poll.

pub mod known_hosts;
pub mod signers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config_file::{GitRef, GitSource, Transport};
use crate::report::GitReport;
use crate::source::{MAX_FILE_SIZE, is_relevant};
use crate::spec::{DaemonSet, Diagnostic, Format, Severity, format_of, parse_daemonsets};

/// The prefix of the names git-defined daemonsets' files have in the spec set
/// (`git:daemonsets/web.toml`).
pub const FILE_PREFIX: &str = "git:";
/// How much of a commit id the error messages show.
const SHORT: usize = 12;
/// How deep a second fetch looks for the applied commit before calling a move a rewrite.
const ANCESTRY_DEPTH: i32 = 50;

/// How long connecting to the remote may take (libgit2's server connect timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read or write of the remote may take (libgit2's server timeout): a remote
/// that stops answering fails the poll instead of hanging the follower.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Set libgit2's process-wide network timeouts (the daemons: [`CONNECT_TIMEOUT`],
/// [`IO_TIMEOUT`]). Call at start, before any thread uses libgit2.
pub fn set_network_timeouts(connect: Duration, io: Duration) {
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: libgit2 keeps these in plain globals; they are written here, at start, before
    // any follower thread exists, and only read afterwards.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect));
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms(io));
    }
}

/// One file of a commit's spec directory, as read from the tree.
#[derive(Debug, Clone)]
pub struct TreeFile {
    /// The path in the repository (`daemonsets/web.toml`).
    pub path: String,
    /// The content, or why it cannot be a spec (a symlink, a directory, too large).
    pub content: Result<Vec<u8>, String>,
}

/// A commit's specs, checked: every file valid, every name defined once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitSet {
    /// `git:PATH` → its daemonsets.
    pub files: BTreeMap<PathBuf, Vec<DaemonSet>>,
    /// Warnings (a commit with warnings is applied).
    pub warnings: Vec<Diagnostic>,
    /// `git:PATH` → the file's text (kept so that a revision can be run again: `hostset
    /// rollout undo`, automatic rollback).
    pub texts: BTreeMap<PathBuf, String>,
}

impl CommitSet {
    /// Every daemonset name of the commit.
    pub fn names(&self) -> BTreeSet<String> {
        self.files
            .values()
            .flatten()
            .map(|d| d.name.clone())
            .collect()
    }
}

/// Check the spec files of commit `commit` as a whole: the set, or every error (files named
/// `SHORTID:PATH`) and the names the files still decode to.
pub fn check_commit(
    commit: &str,
    files: &[TreeFile],
) -> Result<CommitSet, (Vec<Diagnostic>, BTreeSet<String>)> {
    let short = &commit[..commit.len().min(SHORT)];
    let mut set = CommitSet::default();
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();
    let mut defined: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let label = format!("{short}:{}", f.path);
        let text = match &f.content {
            Ok(bytes) => match std::str::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(diag(&label, format!("not UTF-8 text: {e}")));
                    continue;
                }
            },
            Err(m) => {
                errors.push(diag(&label, m.clone()));
                continue;
            }
        };
        let format = format_of(Path::new(&f.path)).unwrap_or(Format::Toml);
        let loaded = parse_daemonsets(&label, text, format);
        names.extend(
            loaded
                .items
                .iter()
                .map(|d| d.name.clone())
                .filter(|n| !n.is_empty()),
        );
        for ds in &loaded.items {
            defined
                .entry(ds.name.clone())
                .or_default()
                .push(label.clone());
        }
        if loaded.has_errors() {
            errors.extend(loaded.diagnostics);
        } else {
            set.warnings.extend(loaded.diagnostics);
            let key = PathBuf::from(format!("{FILE_PREFIX}{}", f.path));
            set.texts.insert(key.clone(), text.to_string());
            set.files.insert(key, loaded.items);
        }
    }
    for (name, labels) in &defined {
        if labels.len() > 1 {
            let listed = labels.join(" and ");
            for l in labels {
                errors.push(diag(
                    l,
                    format!("daemonset \"{name}\" is defined in {listed}: define it once"),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err((errors, names))
    }
}

fn diag(file: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        pos: None,
        path: String::new(),
        severity: Severity::Error,
        message,
    }
}

/// `url` as reports and logs show it: a password in it (`https://user:TOKEN@host/...`) is
/// replaced by `***` (use `token_file` instead).
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_string(),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(SHORT)]
}

/// What a follower publishes after each poll.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The commit in force, empty when none.
    pub commit: String,
    /// Its specs (`git:PATH` → daemonsets).
    pub files: BTreeMap<PathBuf, Vec<DaemonSet>>,
    /// Their texts (`git:PATH` → text).
    pub texts: BTreeMap<PathBuf, String>,
    /// Names whose units must be left alone: with no commit in force, the names a refused
    /// head defines.
    pub held: BTreeSet<String>,
    /// No commit is in force (none applied before, none fetched and applied yet, or the head
    /// cannot be fetched or is refused): every unit started from a commit (`HOSTSET_COMMIT`)
    /// must be left alone.
    pub unsettled: bool,
    /// What to report.
    pub report: GitReport,
    /// Errors and warnings (refused head, fetch failure, signers file) for the report's
    /// diagnostics.
    pub diagnostics: Vec<Diagnostic>,
}

/// The applied commit, as kept in `applied.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Applied {
    url: String,
    reference: String,
    subdirectory: String,
    commit: String,
    committed_at: Option<u64>,
    signed_by: String,
    files: Vec<AppliedFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AppliedFile {
    path: String,
    text: String,
}

/// Follows one repository. See the [module docs](self).
pub struct Follower {
    config: GitSource,
    /// `STATE/git`: `mirror.git` and `applied.json`.
    dir: PathBuf,
    applied: Option<(Applied, CommitSet)>,
    report: GitReport,
    /// With no commit in force: the names the refused head defines.
    refused_names: BTreeSet<String>,
    diagnostics: Vec<Diagnostic>,
    /// Why the last ssh host key was refused (libgit2 replaces the callback's message).
    host_key_problem: std::cell::RefCell<Option<String>>,
}

/// Seconds since the epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Follower {
    /// A follower of `config` keeping its mirror in `dir` (created when needed). The commit
    /// applied last time, if `dir` holds one for the same URL, reference and subdirectory, is
    /// in force at once.
    pub fn new(config: GitSource, dir: impl Into<PathBuf>) -> Follower {
        let dir = dir.into();
        let mut f = Follower {
            report: GitReport {
                url: shown_url(&config.url),
                reference: config.reference.full_name(),
                ..GitReport::default()
            },
            config,
            dir,
            applied: None,
            refused_names: BTreeSet::new(),
            diagnostics: Vec::new(),
            host_key_problem: Default::default(),
        };
        f.load_applied();
        f
    }

    fn applied_path(&self) -> PathBuf {
        self.dir.join("applied.json")
    }

    fn mirror_path(&self) -> PathBuf {
        self.dir.join("mirror.git")
    }

    fn load_applied(&mut self) {
        let Ok(bytes) = std::fs::read(self.applied_path()) else {
            return;
        };
        let Ok(a) = serde_json::from_slice::<Applied>(&bytes) else {
            tracing::warn!(file = %self.applied_path().display(), "cannot read the applied commit; waiting for the first fetch");
            return;
        };
        if a.url != self.report.url
            || a.reference != self.config.reference.full_name()
            || a.subdirectory != self.config.subdirectory
        {
            return;
        }
        let files: Vec<TreeFile> = a
            .files
            .iter()
            .map(|f| TreeFile {
                path: f.path.clone(),
                content: Ok(f.text.clone().into_bytes()),
            })
            .collect();
        match check_commit(&a.commit, &files) {
            Ok(set) => {
                tracing::info!(commit = %a.commit, "git: the commit applied before the restart is in force");
                self.set_applied(a, set);
            }
            // Specs a newer hostset no longer accepts: wait for the head.
            Err((errors, _)) => {
                for e in errors {
                    tracing::warn!("git: the commit applied before the restart: {e}");
                }
            }
        }
    }

    fn set_applied(&mut self, a: Applied, set: CommitSet) {
        self.report.commit = a.commit.clone();
        self.report.committed_at = a.committed_at;
        self.report.signed_by = a.signed_by.clone();
        self.applied = Some((a, set));
    }

    fn save_applied(&self) {
        let Some((a, _)) = &self.applied else {
            return;
        };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let tmp = self.dir.join(".applied.json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(a).unwrap_or_default())?;
            std::fs::rename(&tmp, self.applied_path())
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "git: cannot save the applied commit: after a restart the head will be fetched first");
        }
    }

    /// What this follower publishes now.
    pub fn snapshot(&self) -> Snapshot {
        let (commit, files, texts) = match &self.applied {
            Some((a, set)) => (a.commit.clone(), set.files.clone(), set.texts.clone()),
            None => (String::new(), BTreeMap::new(), BTreeMap::new()),
        };
        // Nothing applied: until a head is fetched and applied, the units started from git
        // (by an earlier agent whose state is gone) are not this source's to remove.
        let unsettled = self.applied.is_none();
        let mut diagnostics = self.diagnostics.clone();
        if let Some((_, set)) = &self.applied {
            diagnostics.extend(set.warnings.iter().cloned());
        }
        Snapshot {
            commit,
            files,
            texts,
            held: if self.applied.is_none() {
                self.refused_names.clone()
            } else {
                BTreeSet::new()
            },
            unsettled,
            report: self.report.clone(),
            diagnostics,
        }
    }

    /// Fetch and decide (see the [module docs](self)). Blocking: network and disk.
    pub fn poll(&mut self) {
        let started = now();
        self.report.attempted_at = Some(started);
        self.report.fetches += 1;
        self.report.notes.clear();
        self.diagnostics.clear();
        let head = match self.fetch_healing() {
            Ok(h) => h,
            Err(e) => {
                if self.report.fetch_error != e {
                    tracing::warn!(url = %self.report.url, "git: {e}");
                }
                self.report.fetch_error = e.clone();
                self.diagnostics
                    .push(diag(&self.report.url, format!("{e}{}", self.keeps())));
                return;
            }
        };
        self.report.fetch_error.clear();
        self.report.fetched_at = Some(started);
        self.report.head = head.commit.clone();
        if self.report.commit == head.commit {
            self.report.refused.clear();
            self.report.refused_because.clear();
            self.refused_names.clear();
            return;
        }
        match self.decide(&head) {
            Ok((a, set)) => {
                tracing::info!(commit = %a.commit, signed_by = %a.signed_by, "git: applying commit");
                self.report.refused.clear();
                self.report.refused_because.clear();
                self.refused_names.clear();
                self.set_applied(a, set);
                self.save_applied();
            }
            Err((errors, names)) => {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                if self.report.refused != head.commit {
                    tracing::warn!(commit = %head.commit, errors = ?lines, "git: refusing commit{}", self.keeps());
                }
                self.report.refused = head.commit.clone();
                self.report.refused_because = lines;
                self.refused_names = names;
                self.diagnostics.push(diag(
                    &self.report.url,
                    format!(
                        "commit {} of {} is refused{}",
                        short(&head.commit),
                        self.config.reference,
                        self.keeps()
                    ),
                ));
                self.diagnostics.extend(errors);
            }
        }
    }

    /// What stays in force while the head cannot be applied, in words.
    fn keeps(&self) -> String {
        match &self.applied {
            Some((a, _)) => format!("; commit {} stays in force", short(&a.commit)),
            None => "; no commit has been applied yet: the units started from git are left \
                     as they are"
                .to_string(),
        }
    }

    /// Signature and specs of the fetched head.
    fn decide(
        &self,
        head: &Head,
    ) -> Result<(Applied, CommitSet), (Vec<Diagnostic>, BTreeSet<String>)> {
        let label = format!("{}:", short(&head.commit));
        let mut signed_by = String::new();
        if let Some(file) = &self.config.allowed_signers_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                (
                    vec![diag(
                        &label,
                        format!(
                            "cannot read the allowed signers file {}: {e}; no commit can be \
                             verified",
                            file.display()
                        ),
                    )],
                    BTreeSet::new(),
                )
            })?;
            let (signers, problems) = signers::parse(&text);
            for p in problems {
                tracing::warn!(
                    "git: allowed signers file {}: {p} (skipped)",
                    file.display()
                );
            }
            let verdict = match &head.signature {
                None => Err("the commit is not signed, and signatures are required \
                             (allowed_signers_file)"
                    .to_string()),
                Some((sig, data)) => {
                    signers::verify(&signers, sig, data, head.committed_at.unwrap_or(0))
                }
            };
            match verdict {
                Ok(principal) => signed_by = principal,
                Err(m) => return Err((vec![diag(&label, m)], BTreeSet::new())),
            }
        }
        let files = match &head.files {
            Ok(f) => f,
            Err(m) => return Err((vec![diag(&label, m.clone())], BTreeSet::new())),
        };
        let set = check_commit(&head.commit, files)?;
        Ok((
            Applied {
                url: self.report.url.clone(),
                reference: self.config.reference.full_name(),
                subdirectory: self.config.subdirectory.clone(),
                commit: head.commit.clone(),
                committed_at: head.committed_at,
                signed_by,
                files: files
                    .iter()
                    .filter_map(|f| {
                        Some(AppliedFile {
                            path: f.path.clone(),
                            text: String::from_utf8(f.content.clone().ok()?).ok()?,
                        })
                    })
                    .collect(),
            },
            set,
        ))
    }

    /// Fetch and read the head; a mirror that cannot be used is re-created once.
    fn fetch_healing(&mut self) -> Result<Head, String> {
        match self.fetch() {
            Ok(h) => Ok(h),
            Err(Failure::Remote(e)) => Err(e),
            Err(Failure::Mirror(e)) => {
                let mirror = self.mirror_path();
                tracing::warn!(mirror = %mirror.display(), error = %e, "git: the mirror is unusable; re-creating it");
                self.report.notes.push(format!(
                    "the mirror {} was unusable ({e}) and was re-created",
                    mirror.display()
                ));
                if let Err(e) = std::fs::remove_dir_all(&mirror)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(format!(
                        "the mirror {} is unusable and cannot be removed: {e}",
                        mirror.display()
                    ));
                }
                self.fetch().map_err(|f| match f {
                    Failure::Remote(e) => e,
                    Failure::Mirror(e) => format!(
                        "the mirror {} is unusable even after re-creating it: {e}",
                        mirror.display()
                    ),
                })
            }
        }
    }

    fn open_mirror(&self) -> Result<git2::Repository, Failure> {
        let path = self.mirror_path();
        if path.exists() {
            git2::Repository::open_bare(&path)
                .map_err(|e| Failure::Mirror(format!("cannot open it: {}", e.message())))
        } else {
            std::fs::create_dir_all(&self.dir).map_err(|e| {
                Failure::Mirror(format!("cannot create {}: {e}", self.dir.display()))
            })?;
            git2::Repository::init_bare(&path)
                .map_err(|e| Failure::Mirror(format!("cannot create it: {}", e.message())))
        }
    }

    fn fetch(&mut self) -> Result<Head, Failure> {
        let repo = self.open_mirror()?;
        let tracking = "refs/hostset/head";
        let refspec = format!("+{}:{tracking}", self.config.reference.full_name());
        self.fetch_depth(&repo, &refspec, 1)?;
        let oid = repo.refname_to_id(tracking).map_err(|e| {
            Failure::Mirror(format!("the fetched reference is missing: {}", e.message()))
        })?;
        let commit = repo
            .find_object(oid, None)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| {
                Failure::Mirror(format!("cannot read the head commit: {}", e.message()))
            })?;
        let id = commit.id().to_string();
        // History rewritten? Only a branch moves; compare with the commit in force.
        if let (GitRef::Branch(_), Some((a, _))) = (&self.config.reference, &self.applied)
            && a.commit != id
            && let Ok(old) = git2::Oid::from_str(&a.commit)
            && !self.descends(&repo, &refspec, commit.id(), old)
        {
            self.report.notes.push(format!(
                "history rewritten: {} moved from {} to {}, which does not contain it \
                 (force-push); the new head is applied like any other",
                self.config.reference,
                short(&a.commit),
                short(&id)
            ));
        }
        let signature = repo
            .extract_signature(&commit.id(), None)
            .ok()
            .map(|(sig, data)| (String::from_utf8_lossy(&sig).into_owned(), data.to_vec()));
        let committed_at = u64::try_from(commit.committer().when().seconds()).ok();
        let files = self
            .read_tree(&repo, &commit, &id)
            .map_err(|e| Failure::Mirror(format!("cannot read commit {}: {}", short(&id), e)))?;
        Ok(Head {
            commit: id,
            committed_at,
            signature,
            files,
        })
    }

    /// Whether `new` descends from `old`: looked up in the shallow history, then in a deeper
    /// fetch of [`ANCESTRY_DEPTH`] commits.
    fn descends(
        &self,
        repo: &git2::Repository,
        refspec: &str,
        new: git2::Oid,
        old: git2::Oid,
    ) -> bool {
        let parents_reach = |repo: &git2::Repository| {
            repo.find_commit(new)
                .map(|c| c.parent_ids().any(|p| p == old))
                .unwrap_or(false)
                || repo.graph_descendant_of(new, old).unwrap_or(false)
        };
        if parents_reach(repo) {
            return true;
        }
        self.fetch_depth(repo, refspec, ANCESTRY_DEPTH).is_ok() && parents_reach(repo)
    }

    fn fetch_depth(
        &self,
        repo: &git2::Repository,
        refspec: &str,
        depth: i32,
    ) -> Result<(), Failure> {
        let mut remote = repo.remote_anonymous(&self.config.url).map_err(|e| {
            Failure::Remote(format!("invalid URL {}: {}", self.report.url, e.message()))
        })?;
        let mut options = git2::FetchOptions::new();
        options
            .remote_callbacks(self.callbacks())
            .download_tags(git2::AutotagOption::None)
            .update_fetchhead(false);
        // libgit2's local transport (file://) cannot fetch shallow; it copies from a local
        // disk anyway.
        if self.config.transport != Transport::File {
            options.depth(depth);
        }
        remote
            .fetch(&[refspec], Some(&mut options), None)
            .map_err(|e| self.classify(e))
    }

    /// A fetch error: the remote's (network, authentication, a missing reference) or the
    /// mirror's (anything about local objects and files).
    fn classify(&self, e: git2::Error) -> Failure {
        use git2::ErrorClass as C;
        let url = &self.report.url;
        let what = &self.config.reference;
        let message = e.message().trim_end().to_string();
        if let Some(problem) = self.host_key_problem.borrow_mut().take() {
            return Failure::Remote(format!(
                "cannot fetch {what} from {url}: {problem} (source.git.known_hosts_file)"
            ));
        }
        match (e.class(), e.code()) {
            (_, git2::ErrorCode::Auth) | (C::Ssh, _) if message.contains("auth") => {
                Failure::Remote(format!(
                    "cannot fetch {what} from {url}: authentication failed ({message}); check \
                     source.git.ssh_key_file or source.git.token_file"
                ))
            }
            (_, git2::ErrorCode::Certificate) => Failure::Remote(format!(
                "cannot fetch {what} from {url}: the remote's identity is not trusted \
                 ({message})"
            )),
            (C::Net | C::Ssh | C::Http | C::Ssl | C::Callback, _) => {
                Failure::Remote(format!("cannot fetch {what} from {url}: {message}"))
            }
            (C::Reference, _) | (_, git2::ErrorCode::NotFound)
                if message.contains("couldn't find remote ref")
                    || message.contains("not found") && message.contains("ref") =>
            {
                Failure::Remote(format!(
                    "cannot fetch {what} from {url}: the remote has no {}",
                    what.full_name()
                ))
            }
            // An OS error about the mirror's own files; others (connect, DNS) are the remote's.
            (C::Os | C::Filesystem, _)
                if message.contains(&*self.mirror_path().to_string_lossy()) =>
            {
                Failure::Mirror(message)
            }
            (C::Odb | C::Zlib | C::Object | C::Repository | C::Index | C::Reference, _) => {
                Failure::Mirror(message)
            }
            _ => Failure::Remote(format!("cannot fetch {what} from {url}: {message}")),
        }
    }

    fn callbacks(&self) -> git2::RemoteCallbacks<'_> {
        let mut cb = git2::RemoteCallbacks::new();
        let config = &self.config;
        let mut tries = 0;
        cb.credentials(move |_url, user_from_url, allowed| {
            tries += 1;
            if tries > 3 {
                return Err(git2::Error::from_str(
                    "authentication failed: the remote refused the configured credentials \
                     (source.git.token_file, source.git.ssh_key_file)",
                ));
            }
            let user = user_from_url.unwrap_or(&config.username);
            if allowed.contains(git2::CredentialType::USERNAME) {
                return git2::Cred::username(user);
            }
            if allowed.contains(git2::CredentialType::SSH_KEY)
                && let Some(key) = &config.ssh_key_file
            {
                return git2::Cred::ssh_key(user, None, key, None);
            }
            if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT)
                && let Some(file) = &config.token_file
            {
                let token = std::fs::read_to_string(file).map_err(|e| {
                    git2::Error::from_str(&format!(
                        "cannot read the token file {}: {e}",
                        file.display()
                    ))
                })?;
                return git2::Cred::userpass_plaintext(&config.username, token.trim());
            }
            Err(git2::Error::from_str(
                "the remote asks for credentials and none are configured \
                 (source.git.token_file, source.git.ssh_key_file)",
            ))
        });
        if config.transport == Transport::Ssh {
            let known = config.known_hosts_file.clone();
            let port = known_hosts::ssh_port(&config.url);
            let problem = &self.host_key_problem;
            problem.borrow_mut().take();
            cb.certificate_check(move |cert, host| {
                let Some(key) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
                    return Err(git2::Error::from_str("the ssh remote sent no host key"));
                };
                known_hosts::check(&known, host, port, key)
                    .map(|()| git2::CertificateCheckStatus::CertificateOk)
                    .map_err(|m| {
                        let e = git2::Error::new(
                            git2::ErrorCode::Certificate,
                            git2::ErrorClass::Ssh,
                            &m,
                        );
                        *problem.borrow_mut() = Some(m);
                        e
                    })
            });
        }
        cb
    }

    /// The spec files of the configured subdirectory of `commit`; the inner error is a
    /// refusal (no such directory), the outer one a mirror problem.
    fn read_tree(
        &self,
        repo: &git2::Repository,
        commit: &git2::Commit<'_>,
        id: &str,
    ) -> Result<Result<Vec<TreeFile>, String>, String> {
        let root = commit.tree().map_err(|e| e.message().to_string())?;
        let sub = &self.config.subdirectory;
        let tree = if sub.is_empty() {
            root
        } else {
            match root.get_path(Path::new(sub)) {
                Ok(entry) if entry.kind() == Some(git2::ObjectType::Tree) => entry
                    .to_object(repo)
                    .and_then(|o| o.peel_to_tree())
                    .map_err(|e| e.message().to_string())?,
                _ => {
                    return Ok(Err(format!(
                        "commit {} has no directory {sub} (source.git.subdirectory)",
                        short(id)
                    )));
                }
            }
        };
        let mut files = Vec::new();
        for entry in tree.iter() {
            let Some(name) = entry.name() else { continue };
            let path = if sub.is_empty() {
                name.to_string()
            } else {
                format!("{sub}/{name}")
            };
            if !is_relevant(Path::new(name)) {
                continue;
            }
            let content = match (entry.kind(), entry.filemode()) {
                (Some(git2::ObjectType::Blob), 0o120000) => {
                    Err("a symlink: specs in git must be regular files".to_string())
                }
                (Some(git2::ObjectType::Blob), _) => {
                    let blob = repo
                        .find_blob(entry.id())
                        .map_err(|e| e.message().to_string())?;
                    if blob.size() as u64 > MAX_FILE_SIZE {
                        Err(format!(
                            "the file is larger than {} MiB: that is no daemonset spec",
                            MAX_FILE_SIZE >> 20
                        ))
                    } else {
                        Ok(blob.content().to_vec())
                    }
                }
                _ => Err("not a regular file: a spec must be a file".to_string()),
            };
            files.push(TreeFile { path, content });
        }
        Ok(Ok(files))
    }
}

/// A fetched head.
struct Head {
    commit: String,
    committed_at: Option<u64>,
    /// `gpgsig` and the signed data.
    signature: Option<(String, Vec<u8>)>,
    /// The spec files, or why the commit has none (refused).
    files: Result<Vec<TreeFile>, String>,
}

enum Failure {
    /// Nothing wrong here: the remote could not be reached, refused, or lacks the reference.
    Remote(String),
    /// The mirror is unusable: re-create it.
    Mirror(String),
}

/// A follower running on its own thread.
pub struct Handle {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    sync: std::sync::mpsc::Sender<()>,
}

impl Handle {
    /// The snapshots, latest only (one is there at once: the commit applied before a
    /// restart, if any).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }

    /// Poll now, not at the next interval.
    pub fn sync_now(&self) {
        let _ = self.sync.send(());
    }
}

/// Run `follower` on its own thread until the [`Handle`] is dropped: a poll at once, then
/// every `poll_interval` ±10 %, or when [`Handle::sync_now`] asks.
pub fn spawn(mut follower: Follower) -> std::io::Result<Handle> {
    let (tx, rx) = watch::channel(Arc::new(follower.snapshot()));
    let (sync, wake) = std::sync::mpsc::channel::<()>();
    let interval = follower.config.poll_interval;
    std::thread::Builder::new()
        .name("git-follower".into())
        .spawn(move || {
            loop {
                follower.poll();
                tx.send_replace(Arc::new(follower.snapshot()));
                match wake.recv_timeout(jittered(interval)) {
                    Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        while wake.try_recv().is_ok() {}
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
                if tx.is_closed() {
                    return;
                }
            }
        })?;
    Ok(Handle {
        snapshots: rx,
        sync,
    })
}

/// `d` ±10 %.
fn jittered(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let unit = (h.finish() % 10_001) as f64 / 10_000.0; // 0..=1
    d.mul_f64(0.9 + 0.2 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> TreeFile {
        TreeFile {
            path: path.into(),
            content: Ok(text.as_bytes().to_vec()),
        }
    }

    const WEB: &str = "name = \"web\"\nselector.matchLabels = { app = \"web\" }\n\
                       template.labels = { app = \"web\" }\ncommand = [\"/bin/sleep\", \"1000\"]\n";

    #[test]
    fn a_valid_commit_is_one_set() {
        let set = check_commit(
            "0123456789abcdef0123",
            &[
                file("ds/web.toml", WEB),
                file("ds/db.toml", &WEB.replace("web", "db")),
            ],
        )
        .unwrap();
        assert_eq!(set.names(), BTreeSet::from(["db".into(), "web".into()]));
        assert!(set.files.contains_key(Path::new("git:ds/web.toml")));
    }

    #[test]
    fn one_bad_file_refuses_the_commit_naming_commit_file_line_and_field() {
        let bad = WEB.replace("web", "db").replace(
            "command = [\"/bin/sleep\", \"1000\"]",
            "command = [\"/bin/sleep\"]\nrestartPolicy = \"Never\"",
        );
        let (errors, names) = check_commit(
            "0123456789abcdef0123",
            &[file("ds/web.toml", WEB), file("ds/db.toml", &bad)],
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("0123456789ab:ds/db.toml:")),
            "{text:?}"
        );
        assert!(names.contains("db") && names.contains("web"));
    }

    #[test]
    fn a_name_defined_twice_in_a_commit_refuses_it() {
        let (errors, _) = check_commit(
            "0123456789abcdef0123",
            &[file("a.toml", WEB), file("b.toml", WEB)],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0]
                .to_string()
                .contains("is defined in 0123456789ab:a.toml and")
        );
        let (errors, _) = check_commit(
            "0123456789abcdef0123",
            &[TreeFile {
                path: "x.toml".into(),
                content: Err("a symlink: specs in git must be regular files".into()),
            }],
        )
        .unwrap_err();
        assert!(
            errors[0]
                .to_string()
                .starts_with("0123456789ab:x.toml: a symlink")
        );
    }

    #[test]
    fn passwords_in_urls_are_not_shown() {
        assert_eq!(
            shown_url("https://ci:ghp_secret@git.example.com/ops/fleet.git"),
            "https://ci:***@git.example.com/ops/fleet.git"
        );
        for url in [
            "https://git.example.com/a@b.git",
            "ssh://git@h:2222/r.git",
            "git@h:ops/fleet.git",
            "file:///srv/fleet.git",
        ] {
            assert_eq!(shown_url(url), url);
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(30));
            assert!(
                j >= Duration::from_secs(27) && j <= Duration::from_secs(33),
                "{j:?}"
            );
        }
    }
}
