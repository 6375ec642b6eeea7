//! The agent's inputs: the spec directory with last-known-good, trust checks and held units
//! (`hostset::source`), node conditions as taints (`hostset::agent::conditions`) and
//! the agent's configuration and flags (`hostset::agent::config`).
//!
//! Every test works in its own directory under `std::env::temp_dir()`, removed at the end.
//! The spec directory trusts the uid running the tests (root in CI), so the tests also pass
//! for an ordinary user; the `chown` test needs root and says so when skipped.
#![cfg(feature = "agent")]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hostset::agent::conditions::{
    self, FsStats, MemoryThreshold, Pressure, PressureTracker, Thresholds,
};
use hostset::agent::config::{self, Args, ConfigError, LogFormat};
use hostset::config_file::FileError;
use hostset::source::{Change, FileStatus, SpecDir, is_relevant};
use hostset::spec::Taint;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A directory of its own under the system's temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "hostset-agent-inputs-{}-{n}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// A sub-directory, mode 0755.
    fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Write `text` to `dir/name`, mode 0644 whatever the umask.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    p
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn my_uid(dir: &Path) -> u32 {
    fs::metadata(dir).unwrap().uid()
}

/// The spec directory `dir`, trusting whoever runs the tests.
fn spec_dir(dir: &Path) -> SpecDir {
    SpecDir::new(dir).with_owner(my_uid(dir))
}

/// A valid native daemonset named `name` running `command`.
fn native(name: &str, command: &str) -> String {
    format!(
        "name = \"{name}\"\ncommand = [\"{command}\"]\nselector.matchLabels = {{ app = \"{name}\" \
         }}\ntemplate.labels = {{ app = \"{name}\" }}\n"
    )
}

/// A valid Kubernetes DaemonSet document named `name` running `command`.
fn manifest(name: &str, command: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n  selector:\n    \
         matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: \
         {name}\n    spec:\n      containers:\n      - name: main\n        command: [\"{command}\"]\n"
    )
}

fn names(sd: &SpecDir) -> Vec<String> {
    sd.daemonsets().iter().map(|d| d.name.clone()).collect()
}

fn argv0(sd: &SpecDir, name: &str) -> String {
    sd.get(name).unwrap().template.process.argv[0].clone()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn messages(sd: &SpecDir) -> Vec<String> {
    sd.diagnostics().iter().map(|d| d.to_string()).collect()
}

fn errors(sd: &SpecDir) -> Vec<String> {
    sd.diagnostics()
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect()
}

fn assert_any(lines: &[String], needle: &str) {
    assert!(
        lines.iter().any(|l| l.contains(needle)),
        "no line contains {needle:?}:\n{}",
        lines.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Last-known-good

#[test]
fn last_known_good_lifecycle() {
    let tmp = TempDir::new("lkg");
    let dir = tmp.path();
    let file = write(dir, "agent.toml", &native("agent", "/usr/bin/v1"));
    let mut sd = spec_dir(dir);

    // Valid: in force.
    let change = sd.rescan();
    assert_eq!(change.added, set(&["agent"]));
    assert!(change.updated.is_empty() && change.removed.is_empty());
    assert_eq!(names(&sd), ["agent"]);
    assert_eq!(sd.source_of("agent"), Some(file.as_path()));
    assert!(sd.diagnostics().is_empty(), "{:?}", messages(&sd));
    assert!(sd.held().is_empty() && sd.held_stems().is_empty() && !sd.hold_all());

    // Nothing changed: nothing to report.
    assert!(sd.rescan().is_empty());

    // A typo: the last valid version stays in force, the errors are reported.
    write(
        dir,
        "agent.toml",
        &native("agent", "/usr/bin/v2").replace("command", "comand"),
    );
    let change = sd.rescan();
    assert!(change.names().is_empty(), "{change:?}");
    assert!(change.held_changed && change.diagnostics_changed);
    assert_eq!(argv0(&sd, "agent"), "/usr/bin/v1");
    assert_eq!(sd.held(), set(&["agent"]));
    assert!(sd.held_stems().is_empty(), "the name is known from the LKG");
    assert!(sd.holds("agent"));
    let errs = errors(&sd);
    assert_any(
        &errs,
        "agent.toml:2:1: comand: unknown field \"comand\", did you mean \"command\"?",
    );
    assert_any(
        &messages(&sd),
        "warning: the last valid version of this file stays in force (daemonset \"agent\")",
    );
    assert_eq!(sd.files()[0].status, FileStatus::Invalid);

    // Fixed: the new version replaces the old.
    write(dir, "agent.toml", &native("agent", "/usr/bin/v3"));
    let change = sd.rescan();
    assert_eq!(change.updated, set(&["agent"]));
    assert!(change.held_changed);
    assert_eq!(argv0(&sd, "agent"), "/usr/bin/v3");
    assert!(sd.held().is_empty());
    assert!(sd.diagnostics().is_empty(), "{:?}", messages(&sd));

    // Deleted: gone.
    fs::remove_file(&file).unwrap();
    let change = sd.rescan();
    assert_eq!(change.removed, set(&["agent"]));
    assert!(sd.daemonsets().is_empty());
    assert!(sd.files().is_empty());
}

#[test]
fn a_file_never_valid_contributes_nothing_and_holds_its_stem() {
    let tmp = TempDir::new("never-valid");
    let dir = tmp.path();
    // Broken from the start (an agent restarted after the edit): the name cannot be known
    // from an LKG, so the stem is held; the decodable name is held too.
    write(
        dir,
        "web.toml",
        &native("web-server", "/usr/bin/web").replace("selector", "selectr"),
    );
    // Not even TOML: only the stem is known.
    write(dir, "db.toml", "name = \"db\"\ncommand = [\"/usr/bin/db\"");
    let mut sd = spec_dir(dir);
    let change = sd.rescan();
    assert!(change.names().is_empty());
    assert!(sd.daemonsets().is_empty());
    assert_eq!(sd.held_stems(), set(&["db", "web"]));
    assert_eq!(sd.held(), set(&["web-server"]));
    assert!(sd.holds("web") && sd.holds("web-server") && sd.holds("db"));
    assert!(!sd.holds("other"));
    assert_any(&errors(&sd), "db.toml:");
    assert_any(&messages(&sd), "has not been valid since hostsetd started");

    write(dir, "db.toml", &native("db", "/usr/bin/db"));
    let change = sd.rescan();
    assert_eq!(change.added, set(&["db"]));
    assert!(change.held_changed);
    assert_eq!(sd.held_stems(), set(&["web"]));
}

#[test]
fn a_half_written_file_is_covered_by_its_last_known_good() {
    let tmp = TempDir::new("partial");
    let dir = tmp.path();
    let full = manifest("collector", "/usr/bin/collector");
    write(dir, "collector.yaml", &full);
    let mut sd = spec_dir(dir);
    sd.rescan();
    assert_eq!(names(&sd), ["collector"]);

    // The writer has written only part of the new version (and an empty file first).
    for cut in [0, full.len() / 3, full.len() - 20] {
        write(
            dir,
            "collector.yaml",
            &full[..cut].replace("/usr/bin/collector", "/usr/bin/new"),
        );
        let change = sd.rescan();
        assert!(change.names().is_empty(), "cut {cut}: {change:?}");
        assert_eq!(argv0(&sd, "collector"), "/usr/bin/collector", "cut {cut}");
        assert!(!errors(&sd).is_empty(), "cut {cut}");
    }
    write(
        dir,
        "collector.yaml",
        &full.replace("/usr/bin/collector", "/usr/bin/new"),
    );
    assert_eq!(sd.rescan().updated, set(&["collector"]));
    assert_eq!(argv0(&sd, "collector"), "/usr/bin/new");
}

#[test]
fn same_size_rewrites_in_quick_succession_are_seen() {
    let tmp = TempDir::new("racy");
    let dir = tmp.path();
    let mut sd = spec_dir(dir);
    // Same length, written within the same clock tick more often than not.
    for (i, cmd) in ["/usr/bin/aa", "/usr/bin/bb", "/usr/bin/cc"]
        .into_iter()
        .enumerate()
    {
        write(dir, "x.toml", &native("x", cmd));
        let change = sd.rescan();
        if i == 0 {
            assert_eq!(change.added, set(&["x"]));
        } else {
            assert_eq!(change.updated, set(&["x"]), "{cmd}");
        }
        assert_eq!(argv0(&sd, "x"), cmd);
    }
}

#[test]
fn a_stem_that_differs_from_the_name_is_a_warning() {
    let tmp = TempDir::new("stem");
    let dir = tmp.path();
    write(dir, "monitor.toml", &native("disk-monitor", "/usr/bin/m"));
    let mut sd = spec_dir(dir);
    sd.rescan();
    assert_eq!(names(&sd), ["disk-monitor"]);
    assert!(errors(&sd).is_empty());
    assert_any(
        &messages(&sd),
        "warning: the file defines daemonset \"disk-monitor\" but is named monitor.toml",
    );
}

// ---------------------------------------------------------------------------------------------
// Which files count

#[test]
fn relevant_names() {
    let relevant = [
        "a.toml",
        "a.yaml",
        "a.yml",
        "a.json",
        "/etc/hostset/daemonsets.d/log-collector.toml",
        "a.b.toml",
    ];
    let ignored = [
        ".a.toml",
        ".#a.toml",
        "#a.toml#",
        "a.toml~",
        "a.toml.swp",
        ".a.toml.swp",
        "a.toml.swx",
        "a.toml.tmp",
        "a.tmp",
        "a.toml.bak",
        "a.toml.dpkg-new",
        "a.toml.dpkg-old",
        "a.toml.dpkg-dist",
        "a.toml.rpmnew",
        "a.toml.rpmsave",
        "a.toml.rpmorig",
        "a.toml.ucf-dist",
        "a.TOML",
        "a.txt",
        "README",
        "toml",
        ".toml",
        "",
        "/",
    ];
    for name in relevant {
        assert!(is_relevant(Path::new(name)), "{name} should count");
    }
    for name in ignored {
        assert!(!is_relevant(Path::new(name)), "{name} should not count");
    }
}

#[test]
fn ignored_files_are_not_read() {
    let tmp = TempDir::new("ignored");
    let dir = tmp.path();
    for (i, name) in [
        ".hidden.toml",
        ".#lock.toml",
        "#autosave.toml#",
        "backup.toml~",
        "swap.toml.swp",
        "new.toml.tmp",
        "pkg.toml.dpkg-new",
        "pkg.toml.dpkg-old",
        "pkg.toml.rpmnew",
        "pkg.toml.rpmsave",
        "notes.txt",
    ]
    .into_iter()
    .enumerate()
    {
        write(dir, name, &native(&format!("ds{i}"), "/bin/true"));
    }
    // Even a broken or insecure one.
    let loose = write(dir, "broken.toml.dpkg-old", "not toml at all [");
    chmod(&loose, 0o666);
    // A sub-directory is not descended into.
    let sub = tmp.mkdir("sub");
    write(&sub, "nested.toml", &native("nested", "/bin/true"));

    let mut sd = spec_dir(dir);
    let change = sd.rescan();
    assert!(change.is_empty(), "{change:?}");
    assert!(sd.daemonsets().is_empty());
    assert!(sd.diagnostics().is_empty(), "{:?}", messages(&sd));
}

#[test]
fn a_directory_with_a_spec_name_is_an_invalid_file() {
    let tmp = TempDir::new("not-regular");
    tmp.mkdir("weird.toml");
    let mut sd = spec_dir(tmp.path());
    sd.rescan();
    assert_any(&errors(&sd), "weird.toml: the file is not a regular file");
    assert_eq!(sd.held_stems(), set(&["weird"]));
}

#[test]
fn a_missing_spec_directory_is_empty() {
    let tmp = TempDir::new("missing");
    let dir = tmp.path().join("daemonsets.d");
    let mut sd = SpecDir::new(&dir).with_owner(my_uid(tmp.path()));
    let change = sd.rescan();
    assert!(change.names().is_empty());
    assert!(!sd.hold_all());
    assert!(errors(&sd).is_empty());
    assert_any(&messages(&sd), "warning: the spec directory does not exist");

    // Created later: read.
    tmp.mkdir("daemonsets.d");
    write(&dir, "a.toml", &native("a", "/bin/a"));
    assert_eq!(sd.rescan().added, set(&["a"]));
    assert!(sd.diagnostics().is_empty());

    // Removed: everything is gone.
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(sd.rescan().removed, set(&["a"]));
}

// ---------------------------------------------------------------------------------------------
// Trust

#[test]
fn group_or_world_writable_files_are_refused_and_keep_their_lkg() {
    let tmp = TempDir::new("writable");
    let dir = tmp.path();
    let file = write(dir, "agent.toml", &native("agent", "/usr/bin/v1"));
    let mut sd = spec_dir(dir);
    sd.rescan();
    assert_eq!(names(&sd), ["agent"]);

    for mode in [0o664, 0o646, 0o666] {
        // Someone else could have written this: not read.
        write(dir, "agent.toml", &native("agent", "/usr/bin/evil"));
        chmod(&file, mode);
        let change = sd.rescan();
        assert!(change.names().is_empty(), "{mode:o}: {change:?}");
        assert_eq!(argv0(&sd, "agent"), "/usr/bin/v1");
        assert_eq!(sd.held(), set(&["agent"]));
        assert_eq!(sd.files()[0].status, FileStatus::Refused);
        let expected = format!(
            "agent.toml: refused: the file is writable by group/others (mode {mode:04o}): \
             anyone who can write it can run code as root; chmod 644 {}",
            file.display()
        );
        assert_any(&errors(&sd), &expected);
    }

    // chmod 644: read again, now trusted.
    chmod(&file, 0o644);
    let change = sd.rescan();
    assert_eq!(change.updated, set(&["agent"]));
    assert_eq!(argv0(&sd, "agent"), "/usr/bin/evil");
    assert!(sd.diagnostics().is_empty(), "{:?}", messages(&sd));
}

#[test]
fn a_refused_file_without_lkg_holds_its_stem() {
    let tmp = TempDir::new("refused-new");
    let dir = tmp.path();
    let file = write(dir, "agent.toml", &native("agent", "/usr/bin/v1"));
    chmod(&file, 0o666);
    let mut sd = spec_dir(dir);
    sd.rescan();
    assert!(sd.daemonsets().is_empty());
    assert_eq!(sd.held_stems(), set(&["agent"]));
    assert!(sd.held().is_empty(), "a refused file is not read");
    assert_any(&errors(&sd), "writable by group/others");
}

#[test]
fn files_owned_by_another_user_are_refused() {
    if my_uid(&std::env::temp_dir()) != 0 || !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let tmp = TempDir::new("chown");
    let dir = tmp.path();
    let file = write(dir, "agent.toml", &native("agent", "/usr/bin/v1"));
    let mut sd = SpecDir::new(dir);
    sd.rescan();
    assert_eq!(names(&sd), ["agent"]);

    std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
    let change = sd.rescan();
    assert!(change.names().is_empty());
    assert_eq!(argv0(&sd, "agent"), "/usr/bin/v1");
    assert_any(
        &errors(&sd),
        &format!(
            "agent.toml: refused: the file is owned by uid 65534, not root: its owner can run \
             code as root; chown root: {}",
            file.display()
        ),
    );

    // The directory owned by someone else: everything is frozen.
    std::os::unix::fs::chown(&file, Some(0), None).unwrap();
    std::os::unix::fs::chown(dir, Some(65534), None).unwrap();
    write(dir, "agent.toml", &native("agent", "/usr/bin/v2"));
    let change = sd.rescan();
    assert!(change.names().is_empty());
    assert!(sd.hold_all() && sd.holds("anything"));
    assert_eq!(argv0(&sd, "agent"), "/usr/bin/v1");
    assert_any(&errors(&sd), "is owned by uid 65534, not root");

    std::os::unix::fs::chown(dir, Some(0), None).unwrap();
    assert_eq!(sd.rescan().updated, set(&["agent"]));
    assert!(!sd.hold_all());
}

#[test]
fn a_writable_directory_freezes_everything() {
    let tmp = TempDir::new("dir-writable");
    let dir = tmp.mkdir("daemonsets.d");
    write(&dir, "a.toml", &native("a", "/usr/bin/a"));
    let mut sd = spec_dir(&dir);
    sd.rescan();
    assert_eq!(names(&sd), ["a"]);

    for mode in [0o775, 0o757, 0o1777] {
        chmod(&dir, mode);
        // Neither an edit nor a deletion nor a new file is applied.
        write(&dir, "a.toml", &native("a", "/usr/bin/changed"));
        write(&dir, "b.toml", &native("b", "/usr/bin/b"));
        let change = sd.rescan();
        assert!(change.names().is_empty(), "{mode:o}: {change:?}");
        assert!(sd.hold_all());
        assert_eq!(sd.held(), set(&["a"]));
        assert_eq!(names(&sd), ["a"]);
        assert_eq!(argv0(&sd, "a"), "/usr/bin/a");
        let errs = errors(&sd);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_any(
            &errs,
            &format!(
                "refused: directory {} is writable by group/others (mode {mode:04o})",
                dir.display()
            ),
        );
        assert_any(&errs, &format!("chmod go-w {}", dir.display()));
        fs::remove_file(dir.join("b.toml")).unwrap();
    }

    chmod(&dir, 0o755);
    let change = sd.rescan();
    assert_eq!(change.updated, set(&["a"]));
    assert!(change.held_changed);
    assert!(!sd.hold_all());
}

#[test]
fn a_writable_ancestor_is_refused_unless_sticky() {
    let tmp = TempDir::new("ancestor");
    let parent = tmp.mkdir("etc");
    let dir = tmp.mkdir("etc/daemonsets.d");
    write(&dir, "a.toml", &native("a", "/usr/bin/a"));
    let mut sd = spec_dir(&dir);

    chmod(&parent, 0o777);
    sd.rescan();
    assert!(sd.hold_all());
    assert_any(
        &errors(&sd),
        &format!("directory {} is writable by group/others", parent.display()),
    );

    // Sticky (like /tmp): nobody else can rename the spec directory away.
    chmod(&parent, 0o1777);
    assert_eq!(sd.rescan().added, set(&["a"]));
    assert!(!sd.hold_all());
}

#[test]
fn symlinks_are_followed_and_their_targets_checked() {
    let tmp = TempDir::new("symlink");
    let dir = tmp.mkdir("daemonsets.d");
    let store = tmp.mkdir("store");
    let target = write(&store, "real.toml", &native("linked", "/usr/bin/linked"));
    std::os::unix::fs::symlink(&target, dir.join("linked.toml")).unwrap();
    let mut sd = spec_dir(&dir);
    assert_eq!(sd.rescan().added, set(&["linked"]));

    // The target writable by others: refused, naming the target.
    chmod(&target, 0o666);
    sd.rescan();
    assert_eq!(names(&sd), ["linked"], "LKG kept");
    assert_any(
        &errors(&sd),
        &format!(
            "linked.toml: refused: the symlink's target {} is writable by group/others (mode \
             0666)",
            fs::canonicalize(&target).unwrap().display()
        ),
    );

    // The target's directory writable by others: refused too.
    chmod(&target, 0o644);
    chmod(&store, 0o777);
    sd.rescan();
    assert_any(
        &errors(&sd),
        &format!(
            "directory {} is writable by group/others",
            fs::canonicalize(&store).unwrap().display()
        ),
    );
    chmod(&store, 0o755);
    sd.rescan();
    assert!(errors(&sd).is_empty(), "{:?}", messages(&sd));

    // A dangling symlink is a broken file, not a deletion.
    fs::remove_file(&target).unwrap();
    let change = sd.rescan();
    assert!(change.removed.is_empty());
    assert_eq!(names(&sd), ["linked"]);
    assert_any(
        &errors(&sd),
        "linked.toml: the symlink's target does not exist",
    );
}

// ---------------------------------------------------------------------------------------------
// Duplicate names, several daemonsets per file

#[test]
fn a_name_defined_twice_stays_with_its_previous_owner() {
    let tmp = TempDir::new("duplicates");
    let dir = tmp.path();
    let a = write(dir, "agent.toml", &native("agent", "/usr/bin/from-toml"));
    let mut sd = spec_dir(dir);
    sd.rescan();

    // A manifest defines the same name, and another daemonset.
    let b = dir.join("more.yaml");
    write(
        dir,
        "more.yaml",
        &format!(
            "{}---\n{}",
            manifest("agent", "/usr/bin/from-yaml"),
            manifest("other", "/usr/bin/other")
        ),
    );
    let change = sd.rescan();
    assert_eq!(change.added, set(&["other"]), "the other daemonset is fine");
    assert!(change.updated.is_empty());
    assert_eq!(argv0(&sd, "agent"), "/usr/bin/from-toml");
    assert_eq!(sd.source_of("agent"), Some(a.as_path()));
    let errs = errors(&sd);
    let expected = format!(
        "daemonset \"agent\" is defined in {} and {}: the version from {}, in force before, \
         stays in force and the others are ignored; remove it from all files but one",
        a.display(),
        b.display(),
        a.display()
    );
    assert_eq!(
        errs,
        [
            format!("{}: {expected}", a.display()),
            format!("{}: {expected}", b.display())
        ]
    );
    assert!(sd.held().is_empty());

    // The owner's edits still apply.
    write(dir, "agent.toml", &native("agent", "/usr/bin/from-toml-2"));
    assert_eq!(sd.rescan().updated, set(&["agent"]));
    assert_eq!(argv0(&sd, "agent"), "/usr/bin/from-toml-2");

    // The owner lets go: the other definition takes over.
    fs::remove_file(&a).unwrap();
    let change = sd.rescan();
    assert_eq!(change.updated, set(&["agent"]));
    assert_eq!(argv0(&sd, "agent"), "/usr/bin/from-yaml");
    assert!(errors(&sd).is_empty());
}

#[test]
fn a_name_defined_twice_at_startup_is_held() {
    let tmp = TempDir::new("duplicates-startup");
    let dir = tmp.path();
    write(dir, "agent.toml", &native("agent", "/usr/bin/one"));
    write(dir, "agent.json", &native_json("agent", "/usr/bin/two"));
    write(dir, "solo.toml", &native("solo", "/usr/bin/solo"));
    let mut sd = spec_dir(dir);
    let change = sd.rescan();
    assert_eq!(change.added, set(&["solo"]));
    assert_eq!(names(&sd), ["solo"]);
    assert_eq!(sd.held(), set(&["agent"]));
    assert_eq!(errors(&sd).len(), 2);
    assert_any(
        &errors(&sd),
        "none of them is applied, and a running unit is left as it is",
    );

    // Resolved: in force.
    fs::remove_file(dir.join("agent.json")).unwrap();
    let change = sd.rescan();
    assert_eq!(change.added, set(&["agent"]));
    assert!(change.held_changed);
    assert!(sd.held().is_empty());
}

/// A Kubernetes DaemonSet in JSON.
fn native_json(name: &str, command: &str) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {{"name": "{name}"}},
"spec": {{"selector": {{"matchLabels": {{"app": "{name}"}}}},
"template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
"spec": {{"containers": [{{"name": "main", "command": ["{command}"]}}]}}}}}}}}"#
    )
}

#[test]
fn multi_document_yaml() {
    let tmp = TempDir::new("multi-doc");
    let dir = tmp.path();
    let both = format!(
        "{}---\n{}",
        manifest("first", "/usr/bin/first"),
        manifest("second", "/usr/bin/second")
    );
    write(dir, "stack.yaml", &both);
    let mut sd = spec_dir(dir);
    assert_eq!(sd.rescan().added, set(&["first", "second"]));
    assert_eq!(names(&sd), ["first", "second"]);

    // One document broken: the whole file is invalid, both keep their LKG.
    write(
        dir,
        "stack.yaml",
        &format!(
            "{}---\n{}",
            manifest("first", "/usr/bin/first-2"),
            manifest("second", "relative/path")
        ),
    );
    let change = sd.rescan();
    assert!(change.names().is_empty(), "{change:?}");
    assert_eq!(argv0(&sd, "first"), "/usr/bin/first");
    assert_eq!(sd.held(), set(&["first", "second"]));
    assert_any(
        &messages(&sd),
        "stays in force (daemonset \"first\" and \"second\")",
    );

    // A document dropped: its daemonset is removed.
    write(dir, "stack.yml", &manifest("first", "/usr/bin/first-3"));
    fs::remove_file(dir.join("stack.yaml")).unwrap();
    let change = sd.rescan();
    assert_eq!(change.updated, set(&["first"]));
    assert_eq!(change.removed, set(&["second"]));
    assert_eq!(
        change.names().into_iter().collect::<Vec<_>>(),
        ["first", "second"]
    );
}

#[test]
fn change_is_empty_by_default() {
    assert!(Change::default().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Conditions

const MEMINFO: &str = "MemTotal:        8000000 kB
MemFree:          100000 kB
MemAvailable:    AVAIL kB
Buffers:          10000 kB
Cached:           20000 kB
HugePages_Total:       0
";

fn meminfo(available_kib: u64) -> String {
    MEMINFO.replace("AVAIL", &available_kib.to_string())
}

fn psi(avg10: &str) -> String {
    format!(
        "some avg10={avg10} avg60=0.00 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 \
         avg300=0.00 total=0\n"
    )
}

#[test]
fn memory_pressure_table() {
    let default = Thresholds::default();
    let psi_20 = Thresholds {
        memory_psi_some_avg10: Some(20.0),
        ..Thresholds::default()
    };
    let percent_10 = Thresholds {
        memory_available: MemoryThreshold::Percent(10.0),
        ..Thresholds::default()
    };
    // MemTotal 8000000 kB: 10% is 800000 kB. 100Mi is 102400 kB.
    let cases: &[(&str, String, Option<String>, &Thresholds, bool)] = &[
        ("plenty", meminfo(4_000_000), None, &default, false),
        ("just above 100Mi", meminfo(102_401), None, &default, false),
        ("exactly 100Mi", meminfo(102_400), None, &default, false),
        ("below 100Mi", meminfo(102_399), None, &default, true),
        ("none left", meminfo(0), None, &default, true),
        (
            "PSI ignored without a threshold",
            meminfo(4_000_000),
            Some(psi("90.00")),
            &default,
            false,
        ),
        (
            "PSI above",
            meminfo(4_000_000),
            Some(psi("25.50")),
            &psi_20,
            true,
        ),
        (
            "PSI at",
            meminfo(4_000_000),
            Some(psi("20.00")),
            &psi_20,
            false,
        ),
        (
            "PSI threshold, no PSI file",
            meminfo(4_000_000),
            None,
            &psi_20,
            false,
        ),
        (
            "PSI low, memory low",
            meminfo(1),
            Some(psi("0.00")),
            &psi_20,
            true,
        ),
        (
            "garbled PSI",
            meminfo(4_000_000),
            Some("some avg10=x\n".into()),
            &psi_20,
            false,
        ),
        ("percent, above", meminfo(800_001), None, &percent_10, false),
        ("percent, below", meminfo(799_999), None, &percent_10, true),
        (
            "old kernel: MemFree+Buffers+Cached = 130000 kB",
            MEMINFO.replace("MemAvailable:    AVAIL kB\n", ""),
            None,
            &default,
            false,
        ),
        (
            "old kernel, low",
            "MemTotal: 8000000 kB\nMemFree: 1000 kB\nBuffers: 0 kB\nCached: 0 kB\n".into(),
            None,
            &default,
            true,
        ),
        ("empty meminfo", String::new(), None, &default, false),
        (
            "garbage",
            "MemAvailable: lots\n".into(),
            None,
            &default,
            false,
        ),
    ];
    for (what, info, p, t, expected) in cases {
        assert_eq!(
            conditions::memory_pressure(info, p.as_deref(), t),
            *expected,
            "{what}"
        );
    }
    assert_eq!(
        conditions::mem_available(&meminfo(5)),
        Some(5 * 1024),
        "bytes"
    );
    assert_eq!(conditions::psi_some_avg10(&psi("1.25")), Some(1.25));
}

#[test]
fn disk_pressure_table() {
    let t = Thresholds::default();
    let five = Thresholds {
        disk_available_percent: 5.0,
        ..Thresholds::default()
    };
    let fs = |capacity_bytes, available_bytes| FsStats {
        capacity_bytes,
        available_bytes,
    };
    let cases = [
        (fs(1000, 500), &t, false),
        (fs(1000, 100), &t, false),
        (fs(1000, 99), &t, true),
        (fs(1000, 0), &t, true),
        (fs(0, 0), &t, false),
        (fs(1000, 60), &five, false),
        (fs(1000, 49), &five, true),
        (fs(u64::MAX, u64::MAX / 20), &t, true),
    ];
    for (stats, thresholds, expected) in cases {
        assert_eq!(
            conditions::disk_pressure(&stats, thresholds),
            expected,
            "{stats:?} at {}%",
            thresholds.disk_available_percent
        );
    }
}

#[test]
fn pressure_becomes_taints() {
    let taint = |key: &str| Taint {
        key: key.into(),
        value: String::new(),
        effect: "NoSchedule".into(),
    };
    let cases = [
        (false, false, vec![]),
        (
            true,
            false,
            vec![taint("node.kubernetes.io/memory-pressure")],
        ),
        (false, true, vec![taint("node.kubernetes.io/disk-pressure")]),
        (
            true,
            true,
            vec![
                taint("node.kubernetes.io/memory-pressure"),
                taint("node.kubernetes.io/disk-pressure"),
            ],
        ),
    ];
    for (memory, disk, expected) in cases {
        assert_eq!(conditions::taints(Pressure { memory, disk }), expected);
    }
    assert_eq!(
        conditions::taints(Pressure {
            memory: true,
            disk: true
        })
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>(),
        [
            "node.kubernetes.io/memory-pressure:NoSchedule",
            "node.kubernetes.io/disk-pressure:NoSchedule"
        ]
    );
}

#[test]
fn pressure_outlives_its_signal_for_the_transition_period() {
    let mut tracker = PressureTracker::new(Duration::from_secs(300));
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let on = Pressure {
        memory: true,
        disk: false,
    };
    let off = Pressure::default();
    assert_eq!(tracker.update(at(0), off), off);
    assert_eq!(tracker.update(at(10), on), on);
    assert_eq!(tracker.update(at(20), off), on, "still within 5 minutes");
    assert_eq!(tracker.update(at(309), off), on);
    assert_eq!(tracker.update(at(310), off), off, "5 minutes after");
    // Flapping keeps it on.
    for s in [400, 500, 600] {
        tracker.update(at(s), on);
        assert_eq!(tracker.update(at(s + 50), off), on);
    }

    // Without a transition period, the condition follows the signal.
    let mut direct = PressureTracker::new(Duration::ZERO);
    assert_eq!(direct.update(at(0), on), on);
    assert_eq!(direct.update(at(0), off), off);
}

#[test]
fn sampling_this_host_works() {
    let dir = TempDir::new("sample");
    let t = Thresholds {
        disk_path: dir.path().to_path_buf(),
        ..Thresholds::default()
    };
    let observation = conditions::observe(&t);
    if Path::new("/proc/meminfo").exists() {
        assert!(observation.problems.is_empty(), "{observation:?}");
    }
    let stats = conditions::fs_stats(dir.path()).unwrap();
    assert!(stats.capacity_bytes >= stats.available_bytes);
    // Nothing can be that short of memory or disk with thresholds of zero.
    let zero = Thresholds {
        memory_available: MemoryThreshold::Bytes(0),
        disk_available_percent: 0.0,
        ..t.clone()
    };
    assert!(conditions::sample(&zero).is_empty());
    // A path that does not exist is no pressure, but a problem.
    let missing = Thresholds {
        disk_path: dir.path().join("nope"),
        ..zero
    };
    let observation = conditions::observe(&missing);
    assert!(!observation.pressure.disk);
    assert!(
        observation
            .problems
            .iter()
            .any(|p| p.starts_with("cannot statvfs")),
        "{observation:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration

fn args(argv: &[&str]) -> Args {
    Args::try_parse_from(std::iter::once("hostsetd").chain(argv.iter().copied())).unwrap()
}

#[test]
fn config_defaults_without_a_file() {
    let tmp = TempDir::new("config-defaults");
    let config = config::load_in(&args(&[]), tmp.path()).unwrap();
    assert_eq!(config.file, None);
    assert_eq!(config.spec_dir, tmp.path().join("daemonsets.d"));
    assert_eq!(config.node_file, tmp.path().join("node.toml"));
    assert_eq!(config.coordinator, None);
    assert_eq!(config.thresholds, Thresholds::default());
    assert_eq!(
        config.thresholds.memory_available,
        MemoryThreshold::Bytes(100 * 1024 * 1024)
    );
    assert_eq!(config.thresholds.disk_available_percent, 10.0);
    assert_eq!(config.thresholds.disk_path, Path::new("/"));
    assert_eq!(config.restart_delay, Duration::from_secs(1));
    assert_eq!(config.log_format, LogFormat::Auto);

    let etc = config::Config::defaults(Path::new("/etc/hostset"));
    assert_eq!(etc.spec_dir, Path::new("/etc/hostset/daemonsets.d"));
    assert_eq!(etc.node_file, Path::new("/etc/hostset/node.toml"));
}

#[test]
fn config_file_then_flags() {
    let tmp = TempDir::new("config-file");
    let file = write(
        tmp.path(),
        "agent.toml",
        r#"
spec_dir = "/srv/specs"
node_file = "/srv/node.yaml"
restart_delay = 2.5

[coordinator]
url = "https://coordinator.example.com:8443"
token_file = "/etc/hostset/token"

[thresholds]
memory_available = "1Gi"
memory_psi_some_avg10 = 40
disk_available_percent = 15.5
disk_path = "/var"
pressure_transition_period = 60
"#,
    );
    // The default file of the configuration directory.
    let config = config::load_in(&args(&[]), tmp.path()).unwrap();
    assert_eq!(config.file.as_deref(), Some(file.as_path()));
    assert_eq!(config.spec_dir, Path::new("/srv/specs"));
    assert_eq!(config.node_file, Path::new("/srv/node.yaml"));
    assert_eq!(config.restart_delay, Duration::from_millis(2500));
    let coordinator = config.coordinator.as_ref().unwrap();
    assert_eq!(coordinator.url, "https://coordinator.example.com:8443");
    assert_eq!(
        coordinator.token_file.as_deref(),
        Some(Path::new("/etc/hostset/token"))
    );
    assert_eq!(
        config.thresholds,
        Thresholds {
            memory_available: MemoryThreshold::Bytes(1 << 30),
            memory_psi_some_avg10: Some(40.0),
            disk_available_percent: 15.5,
            disk_path: PathBuf::from("/var"),
            transition_period: Duration::from_secs(60),
        }
    );

    // Flags win.
    let flagged = config::load_in(
        &args(&[
            "--spec-dir",
            "specs",
            "--node-file",
            "/tmp/node.toml",
            "--log-format",
            "text",
        ]),
        tmp.path(),
    )
    .unwrap();
    assert_eq!(flagged.spec_dir, Path::new("specs"));
    assert_eq!(flagged.node_file, Path::new("/tmp/node.toml"));
    assert_eq!(flagged.log_format, LogFormat::Text);
    assert_eq!(flagged.thresholds, config.thresholds);

    // --config names another file; the default one is then not read.
    let other = write(
        tmp.path(),
        "other.toml",
        "[thresholds]\nmemory_available = \"5%\"\n",
    );
    let explicit = config::load_in(
        &args(&["--config", other.to_str().unwrap(), "--log-format=journald"]),
        tmp.path(),
    )
    .unwrap();
    assert_eq!(explicit.file.as_deref(), Some(other.as_path()));
    assert_eq!(explicit.spec_dir, tmp.path().join("daemonsets.d"));
    assert_eq!(
        explicit.thresholds.memory_available,
        MemoryThreshold::Percent(5.0)
    );
    assert_eq!(explicit.log_format, LogFormat::Journald);
}

#[test]
fn config_memory_available_forms() {
    let tmp = TempDir::new("config-memory");
    for (written, expected) in [
        ("\"100Mi\"", MemoryThreshold::Bytes(100 << 20)),
        ("\"1G\"", MemoryThreshold::Bytes(1_000_000_000)),
        ("\"0.5Gi\"", MemoryThreshold::Bytes(1 << 29)),
        ("\"1500\"", MemoryThreshold::Bytes(1500)),
        ("1500", MemoryThreshold::Bytes(1500)),
        ("\"10%\"", MemoryThreshold::Percent(10.0)),
        ("\"2.5%\"", MemoryThreshold::Percent(2.5)),
    ] {
        let file = write(
            tmp.path(),
            "agent.toml",
            &format!("[thresholds]\nmemory_available = {written}\n"),
        );
        let config = config::load_in(&args(&["--config", file.to_str().unwrap()]), tmp.path())
            .unwrap_or_else(|e| panic!("{written}: {e}"));
        assert_eq!(config.thresholds.memory_available, expected, "{written}");
    }
}

/// The error message for a configuration file holding `text`, `FILE` standing for its path.
fn config_error(tmp: &TempDir, text: &str) -> String {
    let file = write(tmp.path(), "agent.toml", text);
    let err = config::load_in(&args(&[]), tmp.path()).unwrap_err();
    err.to_string().replace(file.to_str().unwrap(), "FILE")
}

#[test]
fn config_errors_name_the_file() {
    let tmp = TempDir::new("config-errors");
    let cases = [
        (
            "spec_dir = \"/x\"\nspecdir = \"/y\"\n",
            "FILE:2:1: unknown field `specdir`, expected one of",
        ),
        (
            "[thresholds]\ndisk_available = 5\n",
            "FILE:2:1: unknown field `disk_available`",
        ),
        (
            "[coordinator]\nurl = \"https://c\"\ntoken = \"x\"\n",
            "FILE:3:1: unknown field `token`",
        ),
        (
            "[coordinator]\ntoken_file = \"/t\"\n",
            "FILE:1:1: missing field `url`",
        ),
        ("[logging]\n", "FILE:1:2: unknown field `logging`"),
        ("restart_delay = \"1s\"\n", "FILE:1:17: invalid type"),
        ("spec_dir = [\n", "FILE:1:"),
        (
            "spec_dir = \"relative/dir\"\n",
            "FILE: spec_dir: must be an absolute path, not \"relative/dir\"",
        ),
        (
            "restart_delay = -1\n",
            "FILE: restart_delay: must be a number of seconds, 0 or more, not -1",
        ),
        (
            "[thresholds]\ndisk_available_percent = 150\n",
            "FILE: thresholds.disk_available_percent: must be a percentage from 0 to 100, not 150",
        ),
        (
            "[thresholds]\nmemory_available = \"100MB\"\n",
            "FILE: thresholds.memory_available: invalid quantity \"100MB\"",
        ),
        (
            "[thresholds]\nmemory_available = \"-1Gi\"\n",
            "FILE: thresholds.memory_available: must not be negative",
        ),
        (
            "[thresholds]\nmemory_available = \"120%\"\n",
            "FILE: thresholds.memory_available: invalid percentage \"120%\"",
        ),
        (
            "[thresholds]\nmemory_available = true\n",
            "FILE:2:20: invalid type: boolean `true`, expected a quantity string",
        ),
        (
            "[coordinator]\nurl = \"coordinator:8443\"\n",
            "FILE: coordinator.url: must be an http:// or https:// URL",
        ),
    ];
    for (text, expected) in cases {
        let message = config_error(&tmp, text);
        assert!(
            message.starts_with(expected),
            "for {text:?}\n got: {message}\nwant: {expected}..."
        );
    }
}

#[test]
fn config_missing_files() {
    let tmp = TempDir::new("config-missing");
    // The default file may be missing...
    assert!(config::load_in(&args(&[]), tmp.path()).is_ok());
    // ...a named one may not.
    let named = tmp.path().join("absent.toml");
    let err =
        config::load_in(&args(&["--config", named.to_str().unwrap()]), tmp.path()).unwrap_err();
    assert!(
        matches!(err, ConfigError::File(FileError::Read { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "{}: cannot read the configuration: No such file or directory",
            named.display()
        )),
        "{err}"
    );
}

#[test]
fn flags_and_help() {
    assert_eq!(args(&[]), Args::default());
    let err = Args::try_parse_from(["hostsetd", "--log-format", "xml"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("possible values: auto, journald, text")
    );
    assert!(Args::try_parse_from(["hostsetd", "--spec-dir"]).is_err());
    assert!(Args::try_parse_from(["hostsetd", "extra"]).is_err());

    let help = Args::try_parse_from(["hostsetd", "--help"])
        .unwrap_err()
        .to_string();
    for needle in [
        "--config <FILE>",
        "--spec-dir <DIR>",
        "--node-file <FILE>",
        "--log-format <FORMAT>",
        "Examples:",
        "hostsetd --spec-dir",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}
