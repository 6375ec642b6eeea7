//! `[source.git]` against real repositories made here with the git CLI (the product itself
//! uses libgit2 in process): file://, a loopback `git daemon`, ssh to a loopback sshd, and
//! smart HTTP (`git http-backend` behind a small server of the test); atomic commits, refusals
//! with commit/file/line/field, ssh signatures made with ssh-keygen, force-push, the remote
//! down, a corrupted mirror, and the agent (over the in-memory systemd) following a branch
//! with the spec directory beside it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hostset::agent::config::Config;
use hostset::agent::run::{Agent, run};
use hostset::config_file::{GitRef, GitSource, Transport};
use hostset::gitsource::{Follower, Snapshot};
use hostset::report::NodeReport;
use hostset::systemd::fake::FakeSystemd;
use hostset::unit::{PropValue, UnitOptions};

/// A directory of its own, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("hostset-git-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A bare "remote" repository and a work tree that pushes to it.
struct Repo {
    tmp: Tmp,
}

impl Repo {
    fn new(tag: &str) -> Repo {
        let tmp = Tmp::new(tag);
        let remote = tmp.0.join("remote.git");
        let work = tmp.0.join("work");
        std::fs::create_dir_all(&remote).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        git(&remote, &["init", "-q", "--bare", "-b", "main"]);
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["config", "user.name", "Ops"]);
        git(&work, &["config", "user.email", "ops@example.com"]);
        git(&work, &["config", "commit.gpgsign", "false"]);
        git(
            &work,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        Repo { tmp }
    }

    fn work(&self) -> PathBuf {
        self.tmp.0.join("work")
    }

    fn url(&self) -> String {
        format!("file://{}", self.tmp.0.join("remote.git").display())
    }

    /// Write `files` (`None`: remove), commit (signed with `key` if given) and push.
    fn commit(&self, files: &[(&str, Option<&str>)], key: Option<&Path>) -> String {
        let work = self.work();
        for (path, text) in files {
            let p = work.join(path);
            match text {
                Some(t) => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, t).unwrap();
                }
                None => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        git(&work, &["add", "-A"]);
        let mut args = vec!["-c".to_string(), "gpg.format=ssh".to_string()];
        if let Some(k) = key {
            args.extend([
                "-c".to_string(),
                format!("user.signingkey={}", k.display()),
                "commit".to_string(),
                "-q".to_string(),
                "-S".to_string(),
            ]);
        } else {
            args.extend(["commit".to_string(), "-q".to_string()]);
        }
        args.extend([
            "--allow-empty".to_string(),
            "-m".to_string(),
            "change".to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        git(&work, &args);
        git(&work, &["push", "-q", "-f", "origin", "main"]);
        git(&work, &["rev-parse", "HEAD"])
    }

    fn source(&self, url: &str) -> GitSource {
        GitSource {
            url: url.to_string(),
            transport: if url.starts_with("git://") {
                Transport::Git
            } else {
                Transport::File
            },
            reference: GitRef::Branch("main".into()),
            subdirectory: "daemonsets".into(),
            poll_interval: Duration::from_millis(500),
            ssh_key_file: None,
            known_hosts_file: PathBuf::from("/nonexistent"),
            token_file: None,
            username: "git".into(),
            allowed_signers_file: None,
        }
    }
}

fn spec(name: &str, command: &str) -> String {
    format!(
        "name = \"{name}\"\ncommand = [\"/bin/sleep\", \"{command}\"]\n\
         selector.matchLabels = {{ app = \"{name}\" }}\ntemplate.labels = {{ app = \"{name}\" }}\n"
    )
}

/// Line 4 has a field with a value that is not allowed.
fn invalid_spec(name: &str) -> String {
    format!(
        "name = \"{name}\"\ncommand = [\"/bin/sleep\", \"1\"]\n\
         selector.matchLabels = {{ app = \"{name}\" }}\ntemplate.labels = {{ app = \"other\" }}\n"
    )
}

fn names(s: &Snapshot) -> BTreeSet<String> {
    s.files.values().flatten().map(|d| d.name.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn commits_apply_as_a_whole_or_not_at_all() {
    let repo = Repo::new("atomic");
    let state = Tmp::new("atomic-state");
    let a = repo.commit(
        &[
            ("daemonsets/web.toml", Some(&spec("web", "1"))),
            ("daemonsets/README.md", Some("not a spec")),
            ("other/db.toml", Some(&spec("db", "1"))),
        ],
        None,
    );
    let mut f = Follower::new(repo.source(&repo.url()), state.0.join("git"));
    let s = f.snapshot();
    assert_eq!(
        (s.commit.as_str(), s.unsettled),
        ("", true),
        "before the first fetch, units from git are left alone"
    );
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, a);
    assert_eq!(s.report.head, a);
    assert_eq!(names(&s), set(&["web"]));
    assert!(s.files.contains_key(Path::new("git:daemonsets/web.toml")));
    assert!(s.report.fetch_error.is_empty() && s.report.refused.is_empty());

    // One invalid file among valid changes: the whole commit is refused.
    let b = repo.commit(
        &[
            ("daemonsets/web.toml", Some(&spec("web", "2"))),
            ("daemonsets/db.toml", Some(&invalid_spec("db"))),
        ],
        None,
    );
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, a, "the last good commit stays in force");
    assert_eq!(s.report.head, b);
    assert_eq!(s.report.refused, b);
    let web = &s.files[Path::new("git:daemonsets/web.toml")][0];
    assert_eq!(web.template.process.argv, ["/bin/sleep", "1"]);
    let because = s.report.refused_because.join("\n");
    let want = format!("{}:daemonsets/db.toml:4:", &b[..12]);
    assert!(because.contains(&want), "{because}");
    assert!(
        because.contains("template.labels") || because.contains("selector"),
        "{because}"
    );
    let diags: Vec<String> = s.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        diags.iter().any(|d| d.contains(&format!(
            "commit {} of branch main is refused; commit {} stays in force",
            &b[..12],
            &a[..12]
        ))),
        "{diags:?}"
    );

    // A name defined twice in one commit is refused too.
    let c = repo.commit(
        &[
            ("daemonsets/db.toml", Some(&spec("db", "1"))),
            ("daemonsets/db2.yaml", Some(&k8s_daemonset("db"))),
        ],
        None,
    );
    f.poll();
    let s = f.snapshot();
    assert_eq!(
        (s.commit.as_str(), s.report.refused.as_str()),
        (a.as_str(), c.as_str())
    );
    assert!(
        s.report
            .refused_because
            .join("\n")
            .contains("daemonset \"db\" is defined in"),
        "{:?}",
        s.report.refused_because
    );

    // Fixed: the next commit applies, all of it.
    let d = repo.commit(&[("daemonsets/db2.yaml", None)], None);
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, d);
    assert_eq!(names(&s), set(&["db", "web"]));
    assert!(s.report.refused.is_empty() && s.report.refused_because.is_empty());
    let web = &s.files[Path::new("git:daemonsets/web.toml")][0];
    assert_eq!(web.template.process.argv, ["/bin/sleep", "2"]);

    // A commit without the subdirectory is refused, not an empty fleet.
    let e = repo.commit(
        &[
            ("daemonsets/db.toml", None),
            ("daemonsets/web.toml", None),
            ("daemonsets/README.md", None),
            ("README", Some("moved")),
        ],
        None,
    );
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, d);
    assert_eq!(s.report.refused, e);
    assert!(
        s.report.refused_because[0].contains("has no directory daemonsets"),
        "{:?}",
        s.report.refused_because
    );

    // A restarted daemon runs the applied commit at once, even with the remote gone.
    let remote = repo.tmp.0.join("remote.git");
    let away = repo.tmp.0.join("remote.git.away");
    std::fs::rename(&remote, &away).unwrap();
    let mut again = Follower::new(repo.source(&repo.url()), state.0.join("git"));
    assert_eq!(again.snapshot().commit, d);
    again.poll();
    let s = again.snapshot();
    assert_eq!(s.commit, d);
    assert!(!s.unsettled);
    assert!(
        s.report.fetch_error.contains("cannot fetch"),
        "{:?}",
        s.report
    );
    // Another repository (or branch, or subdirectory) does not inherit it.
    let other = Follower::new(
        repo.source("file:///nonexistent/hostset/remote.git"),
        state.0.join("git"),
    );
    assert_eq!(other.snapshot().commit, "");
    std::fs::rename(&away, &remote).unwrap();
}

fn k8s_daemonset(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n  selector:\n    \
         matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    \
         spec:\n      containers:\n      - name: c\n        command: [/bin/sleep, '1']\n"
    )
}

/// `git daemon` on a loopback port, ended (by PID) on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(base: &Path, port: u16) -> Daemon {
        // git-daemon itself, not `git daemon`: the `git` wrapper would run it as a child that
        // outlives a kill of the wrapper.
        let exec_path = git(base, &["--exec-path"]);
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                base.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, port }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn over_git_daemon_the_remote_going_down_changes_nothing() {
    let repo = Repo::new("daemon");
    let state = Tmp::new("daemon-state");
    let a = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "1")))], None);
    let port = free_port();
    let daemon = Daemon::start(&repo.tmp.0, port);
    let url = format!("git://127.0.0.1:{}/remote.git", daemon.port);
    let mut f = Follower::new(repo.source(&url), state.0.join("git"));
    f.poll();
    assert_eq!(f.snapshot().commit, a);

    // Down: reported, nothing changes.
    drop(daemon);
    let b = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "2")))], None);
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, a);
    assert_eq!(s.report.head, a, "the head seen last");
    assert!(
        s.report
            .fetch_error
            .starts_with(&format!("cannot fetch branch main from {url}")),
        "{:?}",
        s.report.fetch_error
    );
    assert!(!s.unsettled, "a commit is in force");
    let diags: Vec<String> = s.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        diags
            .iter()
            .any(|d| d.contains(&format!("commit {} stays in force", &a[..12]))),
        "{diags:?}"
    );

    // Back: the new head is applied and the error is gone.
    let _daemon = Daemon::start(&repo.tmp.0, port);
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, b);
    assert!(s.report.fetch_error.is_empty());
}

#[test]
fn with_nothing_applied_yet_an_unreachable_remote_holds_the_git_units() {
    let repo = Repo::new("unsettled");
    let state = Tmp::new("unsettled-state");
    let mut f = Follower::new(
        repo.source("git://127.0.0.1:1/remote.git"),
        state.0.join("git"),
    );
    f.poll();
    let s = f.snapshot();
    assert!(s.unsettled);
    assert_eq!(s.commit, "");
    assert!(!s.report.fetch_error.is_empty());
    assert!(
        s.diagnostics[0]
            .to_string()
            .contains("no commit has been applied yet"),
        "{:?}",
        s.diagnostics
    );

    // The head refused with nothing in force: its names are held.
    let _ = repo.commit(&[("daemonsets/web.toml", Some(&invalid_spec("web")))], None);
    let mut f = Follower::new(repo.source(&repo.url()), state.0.join("git"));
    f.poll();
    let s = f.snapshot();
    assert!(s.unsettled);
    assert_eq!(s.held, set(&["web"]));
}

#[test]
fn a_force_push_is_followed_and_reported() {
    let repo = Repo::new("force");
    let state = Tmp::new("force-state");
    let a = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "1")))], None);
    let b = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "2")))], None);
    // Over git://, shallow: whether the new head contains the old one is looked up deeper.
    let daemon = Daemon::start(&repo.tmp.0, free_port());
    let url = format!("git://127.0.0.1:{}/remote.git", daemon.port);
    let mut f = Follower::new(repo.source(&url), state.0.join("git"));
    f.poll();
    assert_eq!(f.snapshot().commit, b);
    // A fast-forward is no rewrite, even several commits ahead.
    let _ = repo.commit(&[("daemonsets/x.toml", Some(&spec("x", "1")))], None);
    let _ = repo.commit(&[("daemonsets/x.toml", None)], None);
    let c = repo.commit(&[("daemonsets/db.toml", Some(&spec("db", "1")))], None);
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, c);
    assert!(s.report.notes.is_empty(), "{:?}", s.report.notes);

    // Rewrite: back to a, a different commit on top, pushed with force.
    git(&repo.work(), &["reset", "-q", "--hard", &a]);
    let d = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "3")))], None);
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, d);
    assert_eq!(names(&s), set(&["web"]));
    assert!(
        s.report.notes.iter().any(|n| n.contains(&format!(
            "history rewritten: branch main moved from {} to {}",
            &c[..12],
            &d[..12]
        ))),
        "{:?}",
        s.report.notes
    );
}

#[test]
fn a_corrupted_mirror_heals_itself() {
    let repo = Repo::new("heal");
    let state = Tmp::new("heal-state");
    let a = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "1")))], None);
    let mut f = Follower::new(repo.source(&repo.url()), state.0.join("git"));
    f.poll();
    assert_eq!(f.snapshot().commit, a);

    // Every object file garbled; the next commit keeps web.toml, whose blob the mirror has
    // (garbled), and adds db.toml.
    let mirror = state.0.join("git/mirror.git");
    let mut garbled = 0;
    for entry in walk(&mirror.join("objects")) {
        std::fs::write(&entry, b"garbage").unwrap();
        garbled += 1;
    }
    assert!(garbled > 0);
    let b = repo.commit(&[("daemonsets/db.toml", Some(&spec("db", "2")))], None);
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, b, "{:?}", s.report);
    assert!(
        s.report.notes.iter().any(|n| n.contains("was re-created")),
        "{:?}",
        s.report.notes
    );

    // Not a repository at all any more.
    std::fs::remove_file(mirror.join("HEAD")).unwrap();
    std::fs::write(mirror.join("config"), "[[[").unwrap();
    let c = repo.commit(&[("daemonsets/db.toml", Some(&spec("db", "1")))], None);
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, c, "{:?}", s.report);
    assert_eq!(names(&s), set(&["db", "web"]));
    assert!(s.report.fetch_error.is_empty());
    // And the healed mirror works for the next poll, with no note.
    f.poll();
    assert!(f.snapshot().report.notes.is_empty());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An ssh key pair made by ssh-keygen: (private key file, public key line).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

#[test]
fn with_verification_only_commits_signed_by_allowed_keys_apply() {
    let repo = Repo::new("signed");
    let state = Tmp::new("signed-state");
    let keys = Tmp::new("signed-keys");
    let (alice, alice_pub) = keygen(&keys.0, "alice");
    let (mallory, _) = keygen(&keys.0, "mallory");
    let (bob, bob_pub) = keygen(&keys.0, "bob");
    let allowed = keys.0.join("allowed_signers");
    std::fs::write(
        &allowed,
        format!(
            "# who may change the fleet\nalice@example.com {alice_pub}\n\
             bob@example.com namespaces=\"file\" {bob_pub}\n"
        ),
    )
    .unwrap();
    let mut source = repo.source(&repo.url());
    source.allowed_signers_file = Some(allowed.clone());
    let mut f = Follower::new(source, state.0.join("git"));

    // Unsigned: refused, nothing was ever applied.
    let u = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "1")))], None);
    f.poll();
    let s = f.snapshot();
    assert_eq!(
        (s.commit.as_str(), s.report.refused.as_str()),
        ("", u.as_str())
    );
    assert!(s.unsettled);
    assert!(
        s.report.refused_because[0].contains("the commit is not signed"),
        "{:?}",
        s.report.refused_because
    );

    // Signed by alice: applied, with her name.
    let a = repo.commit(
        &[("daemonsets/web.toml", Some(&spec("web", "2")))],
        Some(&alice),
    );
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, a, "{:?}", s.report);
    assert_eq!(s.report.signed_by, "alice@example.com");

    // Signed by a key that is not allowed: refused, alice's commit stays.
    let m = repo.commit(
        &[("daemonsets/web.toml", Some(&spec("web", "3")))],
        Some(&mallory),
    );
    f.poll();
    let s = f.snapshot();
    assert_eq!(
        (s.commit.as_str(), s.report.refused.as_str()),
        (a.as_str(), m.as_str())
    );
    assert!(
        s.report.refused_because[0].contains("which is not in the allowed signers file"),
        "{:?}",
        s.report.refused_because
    );
    assert_eq!(
        s.files[Path::new("git:daemonsets/web.toml")][0]
            .template
            .process
            .argv,
        ["/bin/sleep", "2"]
    );

    // Bob's key may not sign git commits.
    let b = repo.commit(
        &[("daemonsets/web.toml", Some(&spec("web", "4")))],
        Some(&bob),
    );
    f.poll();
    let s = f.snapshot();
    assert_eq!(
        (s.commit.as_str(), s.report.refused.as_str()),
        (a.as_str(), b.as_str())
    );
    assert!(
        s.report.refused_because[0].contains("may not sign git commits"),
        "{:?}",
        s.report.refused_because
    );

    // Mallory's key added to the file: her commit now applies (read on every poll).
    let mallory_pub = std::fs::read_to_string(mallory.with_extension("pub")).unwrap();
    std::fs::write(
        &allowed,
        format!(
            "alice@example.com {alice_pub}\nmallory@example.com {}\n",
            mallory_pub.trim()
        ),
    )
    .unwrap();
    let m2 = repo.commit(
        &[("daemonsets/web.toml", Some(&spec("web", "5")))],
        Some(&mallory),
    );
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, m2, "{:?}", s.report);
    assert_eq!(s.report.signed_by, "mallory@example.com");
}

// ---------------------------------------------------------------------------------------------
// The agent following a repository, over the in-memory systemd.

fn status(dir: &Path) -> Option<NodeReport> {
    serde_json::from_slice(&std::fs::read(dir.join("status.json")).ok()?).ok()
}

fn unit_commit(fake: &FakeSystemd, unit: &str) -> Option<String> {
    let u = fake.unit(unit)?;
    u.spec
        .properties
        .iter()
        .find_map(|p| match (&p.value, p.name) {
            (PropValue::Strs(env), "Environment") => env
                .iter()
                .rev()
                .find_map(|e| e.strip_prefix("HOSTSET_COMMIT=").map(str::to_string)),
            _ => None,
        })
}

fn unit_argv(fake: &FakeSystemd, unit: &str) -> Vec<String> {
    let Some(u) = fake.unit(unit) else {
        return Vec::new();
    };
    u.spec
        .properties
        .iter()
        .find_map(|p| match &p.value {
            PropValue::Exec(cmds) => cmds.first().map(|c| c.argv.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Wait until the status satisfies `ok`; panics after `within`.
async fn until(
    dir: &Path,
    within: Duration,
    what: &str,
    ok: impl Fn(&NodeReport) -> bool,
) -> NodeReport {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = status(dir)
            && ok(&s)
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last status {:#?}",
            status(dir).and_then(|s| s.git)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fetch count of the status now.
fn fetches(dir: &Path) -> u64 {
    status(dir).and_then(|s| s.git).map_or(0, |g| g.fetches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_a_branch_beside_its_spec_directory() {
    let repo = Repo::new("agent");
    let env = Tmp::new("agent-env");
    let spec_dir = env.0.join("daemonsets.d");
    std::fs::create_dir_all(&spec_dir).unwrap();
    let a = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "1")))], None);

    let mut config = Config::defaults(&env.0);
    config.spec_dir = spec_dir.clone();
    config.node_file = env.0.join("node.toml");
    config.state_dir = env.0.join("state");
    config.git = Some(repo.source(&repo.url()));
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&env.0).unwrap());
    let fake = FakeSystemd::new();
    let agent = Agent::new(
        fake.clone(),
        config,
        None,
        UnitOptions::default(),
        Some(env.0.join("status.json")),
    )
    .trust_owner(uid);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(agent, async {
        let _ = stop_rx.await;
    }));
    let patience = Duration::from_secs(30);

    // The first commit: the unit carries it.
    until(&env.0, patience, "commit a in force", |s| {
        s.git.as_ref().is_some_and(|g| g.commit == a)
    })
    .await;
    let deadline = Instant::now() + patience;
    while unit_commit(&fake, "hostset-web.service").as_deref() != Some(a.as_str()) {
        assert!(Instant::now() < deadline, "web not started from {a}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = until(&env.0, patience, "units reported", |s| {
        s.git
            .as_ref()
            .is_some_and(|g| g.units.get("web") == Some(&a))
    })
    .await;
    let web = s.daemonsets.iter().find(|d| d.name == "web").unwrap();
    assert_eq!(web.file, "git:daemonsets/web.toml");

    // A new commit is applied by the first poll that starts after the push: within one
    // poll interval.
    let before = fetches(&env.0);
    let b = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "2")))], None);
    let s = until(&env.0, patience, "a poll after the push", |s| {
        s.git.as_ref().is_some_and(|g| g.fetches >= before + 2)
    })
    .await;
    assert_eq!(s.git.as_ref().unwrap().commit, b);
    assert_eq!(
        unit_commit(&fake, "hostset-web.service").as_deref(),
        Some(b.as_str())
    );
    assert_eq!(unit_argv(&fake, "hostset-web.service"), ["/bin/sleep", "2"]);

    // An invalid commit: refused as a whole, web keeps running from b.
    let c = repo.commit(
        &[
            ("daemonsets/web.toml", Some(&spec("web", "3"))),
            ("daemonsets/db.toml", Some(&invalid_spec("db"))),
        ],
        None,
    );
    let s = until(&env.0, patience, "c refused", |s| {
        s.git.as_ref().is_some_and(|g| g.refused == c)
    })
    .await;
    assert_eq!(s.git.as_ref().unwrap().commit, b);
    assert!(
        s.diagnostics
            .iter()
            .any(|d| d.starts_with(&format!("{}:daemonsets/db.toml:4:", &c[..12]))),
        "{:?}",
        s.diagnostics
    );
    assert_eq!(unit_argv(&fake, "hostset-web.service"), ["/bin/sleep", "2"]);
    assert!(fake.unit("hostset-db.service").is_none());

    // The spec directory beside git: its own daemonsets run; a name defined in both is an
    // error on both, and the version in force (git's, from c and d) stays.
    let d = repo.commit(&[("daemonsets/db.toml", None)], None);
    until(&env.0, patience, "d in force", |s| {
        s.git.as_ref().is_some_and(|g| g.commit == d)
    })
    .await;
    write_spec(&spec_dir.join("local.toml"), &spec("local", "1"));
    write_spec(&spec_dir.join("web.toml"), &spec("web", "9"));
    let s = until(&env.0, patience, "the duplicate reported", |s| {
        s.diagnostics.iter().any(|d| d.contains("is defined in"))
    })
    .await;
    let dup: Vec<&String> = s
        .diagnostics
        .iter()
        .filter(|d| d.contains("daemonset \"web\" is defined in"))
        .collect();
    assert_eq!(dup.len(), 2, "{:?}", s.diagnostics);
    assert!(
        dup.iter().any(|d| d.starts_with("git:daemonsets/web.toml")),
        "{dup:?}"
    );
    assert!(
        dup.iter()
            .any(|d| d.starts_with(&spec_dir.join("web.toml").display().to_string())),
        "{dup:?}"
    );
    let deadline = Instant::now() + patience;
    while fake.unit("hostset-local.service").is_none() {
        assert!(Instant::now() < deadline, "local not started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(unit_argv(&fake, "hostset-web.service"), ["/bin/sleep", "3"]);
    assert_eq!(
        unit_commit(&fake, "hostset-web.service").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(unit_commit(&fake, "hostset-local.service"), None);
    let s = until(&env.0, patience, "local reported", |s| {
        s.daemonsets.iter().any(|d| d.name == "local")
    })
    .await;
    assert!(!s.git.as_ref().unwrap().units.contains_key("local"));

    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

fn write_spec(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The coordinator following the repository: its daemonsets, and the nodes lagging behind.

const AGENT_TOKEN: &str = "agent-token-0123456789abcdef";
const READ_TOKEN: &str = "read-token-0123456789abcdef";

fn private_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn node_report(node: &str, git: Option<hostset::report::GitReport>) -> NodeReport {
    NodeReport {
        agent_version: "0.1.0".into(),
        agent_instance: format!("{node}-instance"),
        sequence: 1,
        generated_at: 1,
        node: hostset::report::NodeInfo {
            name: node.into(),
            labels: Default::default(),
            taints: Vec::new(),
            unschedulable: false,
            addresses: Vec::new(),
            conditions: Vec::new(),
        },
        daemonsets: Vec::new(),
        diagnostics: Vec::new(),
        errors: Vec::new(),
        git,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_shows_the_head_and_the_hosts_lagging_behind_it() {
    use hostset::api::{NodeView, SourceView};
    let repo = Repo::new("coordinator");
    let root = Tmp::new("coordinator-env");
    let a = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "1")))], None);
    let specs = root.0.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    write_spec(&specs.join("local.toml"), &spec("local", "1"));
    private_file(&root.0.join("agent-tokens"), &format!("{AGENT_TOKEN}\n"));
    private_file(&root.0.join("read-tokens"), &format!("{READ_TOKEN}\n"));
    let mut config =
        hostset::coordinator::config::Config::defaults(&root.0, Some(&root.0.join("state")));
    config.spec_dir = specs.clone();
    config.spec_owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&root.0).unwrap());
    config.agent_token_file = root.0.join("agent-tokens");
    config.read_token_file = root.0.join("read-tokens");
    config.git = Some(repo.source(&repo.url()));
    let state = hostset::coordinator::AppState::open(&config, hostset::coordinator::system_clock())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hostset::coordinator::serve(listener, state, async {
        let _ = stop_rx.await;
    }));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let req = client
            .get(format!("{base}{path}"))
            .bearer_auth(READ_TOKEN)
            .send();
        async move {
            let resp = req.await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.text().await.unwrap()
        }
    };
    let source = || async { serde_json::from_str::<SourceView>(&get("/v1/source").await).unwrap() };

    // The head fetched: the daemonsets of git and of the directory together.
    let b = repo.commit(&[("daemonsets/db.toml", Some(&spec("db", "1")))], None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while source().await.git.is_none_or(|g| g.commit != b) {
        assert!(Instant::now() < deadline, "{:?}", source().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let daemonsets: serde_json::Value = serde_json::from_str(&get("/v1/daemonsets").await).unwrap();
    let files: BTreeSet<String> = daemonsets
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}={}",
                d["name"].as_str().unwrap(),
                d["file"].as_str().unwrap()
            )
        })
        .collect();
    let want: BTreeSet<String> = [
        "db=git:daemonsets/db.toml".to_string(),
        format!("local={}", specs.join("local.toml").display()),
        "web=git:daemonsets/web.toml".to_string(),
    ]
    .into();
    assert_eq!(files, want);

    // Three nodes: at the head, behind (its fetch fails), following nothing.
    let git = |commit: &str, head: &str, error: &str| hostset::report::GitReport {
        url: repo.url(),
        reference: "refs/heads/main".into(),
        commit: commit.into(),
        head: head.into(),
        fetch_error: error.into(),
        ..Default::default()
    };
    for r in [
        node_report("node-a", Some(git(&b, &b, ""))),
        node_report(
            "node-b",
            Some(git(&a, &a, "cannot fetch branch main: timed out")),
        ),
        node_report("node-c", None),
    ] {
        let resp = client
            .post(format!("{base}/v1/reports"))
            .bearer_auth(AGENT_TOKEN)
            .json(&r)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    let s = source().await;
    assert_eq!(s.current, 1);
    assert_eq!(s.lagging.len(), 1, "{s:?}");
    assert_eq!(s.lagging[0].node, "node-b");
    assert_eq!(s.lagging[0].commit, a);
    assert_eq!(s.lagging[0].reason, "cannot fetch branch main: timed out");
    // The same from the command line.
    let token_file = root.0.join("read-token");
    private_file(&token_file, READ_TOKEN);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hostset"))
        .args(["--coordinator", &base, "--token-file"])
        .arg(&token_file)
        .args(["get", "source"])
        .env("HOSTSET_CONFIG_DIR", &root.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("REPOSITORY"), "{text}");
    for cell in [repo.url().as_str(), "refs/heads/main", &b[..12], "<none>"] {
        assert!(lines[1].contains(cell), "{cell}: {text}");
    }
    let lagging = lines
        .iter()
        .find(|l| l.starts_with("node-b"))
        .unwrap_or_else(|| panic!("node-b lags: {text}"));
    assert!(
        lagging.contains(&a[..12]) && lagging.ends_with("cannot fetch branch main: timed out"),
        "{lagging}"
    );

    let metrics = get("/metrics").await;
    let labels = format!("{{url=\"{}\",ref=\"refs/heads/main\"}}", repo.url());
    for line in [
        format!("hostset_git_nodes_lagging{labels} 1"),
        format!("hostset_git_nodes_current{labels} 1"),
        format!("hostset_git_fetch_ok{labels} 1"),
        format!("hostset_git_head_refused{labels} 0"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let nodes: Vec<NodeView> = serde_json::from_str(&get("/v1/nodes").await).unwrap();
    let commits: Vec<(String, String)> = nodes.into_iter().map(|n| (n.name, n.commit)).collect();
    assert!(
        commits.contains(&("node-a".into(), b.clone())),
        "{commits:?}"
    );
    assert!(
        commits.contains(&("node-c".into(), String::new())),
        "{commits:?}"
    );

    // A name in both git and the directory: the coordinator keeps the definition in force
    // before (git's), as the agents do.
    write_spec(&specs.join("web.toml"), &spec("web", "9"));
    let c = repo.commit(&[("daemonsets/db.toml", Some(&spec("db", "2")))], None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while source().await.git.is_none_or(|g| g.commit != c) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let web: serde_json::Value = serde_json::from_str(&get("/v1/daemonsets/web").await).unwrap();
    assert_eq!(web["daemonset"]["file"], "git:daemonsets/web.toml", "{web}");
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// ssh: libssh2 in process, a key file, the remote's host key checked against known_hosts.

/// sshd on a loopback port with its own host key, admitting `authorized` as root; ended (by
/// PID) on drop.
struct Sshd {
    child: Child,
    port: u16,
    host_public: String,
}

impl Sshd {
    fn start(dir: &Path, authorized: &str) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd is missing: apt-get install openssh-server (.ci/run installs it)"
        );
        // sshd's privilege separation directory (the package makes it at boot).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let (host_key, host_public) = keygen(dir, "host_key");
        let authorized_keys = dir.join("authorized_keys");
        std::fs::write(&authorized_keys, format!("{authorized}\n")).unwrap();
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n",
                host_key.display(),
                authorized_keys.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd {
            child,
            port,
            host_public,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn over_ssh_the_key_file_and_the_known_host_key_are_used() {
    let repo = Repo::new("ssh");
    let state = Tmp::new("ssh-state");
    let keys = Tmp::new("ssh-keys");
    let (client, client_public) = keygen(&keys.0, "client");
    let (stranger, _) = keygen(&keys.0, "stranger");
    let sshd = Sshd::start(&keys.0, &client_public);
    let a = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "1")))], None);
    let key_only = |public: &str| {
        public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let known_hosts = keys.0.join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            sshd.port,
            key_only(&sshd.host_public)
        ),
    )
    .unwrap();
    let remote = repo.tmp.0.join("remote.git");
    let source = |key: &Path| GitSource {
        url: format!("ssh://root@127.0.0.1:{}{}", sshd.port, remote.display()),
        transport: Transport::Ssh,
        ssh_key_file: Some(key.to_path_buf()),
        known_hosts_file: known_hosts.clone(),
        ..repo.source(&repo.url())
    };
    let log = || std::fs::read_to_string(keys.0.join("sshd.log")).unwrap_or_default();

    let mut f = Follower::new(source(&client), state.0.join("git"));
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, a, "{:?}\n{}", s.report, log());
    assert_eq!(names(&s), set(&["web"]));

    // A key the server does not admit: an authentication failure, a remains.
    let b = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "2")))], None);
    let mut wrong_key = Follower::new(source(&stranger), state.0.join("git"));
    wrong_key.poll();
    let s = wrong_key.snapshot();
    assert_eq!(s.commit, a);
    assert!(
        s.report.fetch_error.contains("authentication failed"),
        "{:?}",
        s.report.fetch_error
    );

    // Another host key than the one known: refused before any credential is sent.
    let (_, other_host) = keygen(&keys.0, "other_host");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}\n", sshd.port, key_only(&other_host)),
    )
    .unwrap();
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, a);
    assert!(
        s.report.fetch_error.contains("does NOT match"),
        "{:?}",
        s.report.fetch_error
    );
    // Not listed at all.
    std::fs::write(&known_hosts, "").unwrap();
    f.poll();
    assert!(
        f.snapshot()
            .report
            .fetch_error
            .contains(&format!("[127.0.0.1]:{} is not listed", sshd.port)),
        "{:?}",
        f.snapshot().report.fetch_error
    );

    // Known again: the new head is applied.
    std::fs::write(
        &known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            sshd.port,
            key_only(&sshd.host_public)
        ),
    )
    .unwrap();
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, b, "{:?}", s.report);
    assert!(s.report.fetch_error.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Smart HTTP: `git http-backend` behind a minimal HTTP/1.1 server of this test (Basic
// authentication with a token), on a loopback port; libgit2's HTTP transport is the one its
// https:// uses, minus TLS.

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The HTTP server; stops (and its threads end) on drop.
struct HttpGit {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Requests answered 401, and requests served.
    counts: std::sync::Arc<std::sync::Mutex<(u32, u32)>>,
}

impl HttpGit {
    fn start(root: &Path, token: &str) -> HttpGit {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new((0, 0)));
        let (root, expected) = (
            root.to_path_buf(),
            format!("Basic {}", base64(format!("git:{token}").as_bytes())),
        );
        let thread = {
            let (stop, counts) = (stop.clone(), counts.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            serve_one(stream, &root, &expected, &counts);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        HttpGit {
            port,
            stop,
            thread: Some(thread),
            counts,
        }
    }
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request (the connection is closed after it): 401 without the token, else the CGI.
fn serve_one(
    stream: std::net::TcpStream,
    root: &Path,
    expected: &str,
    counts: &std::sync::Mutex<(u32, u32)>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(n) = headers.get("content-length") {
        body.resize(n.parse().unwrap(), 0);
        reader.read_exact(&mut body).unwrap();
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let mut out = stream;
    if headers.get("authorization").map(String::as_str) != Some(expected) {
        counts.lock().unwrap().0 += 1;
        let _ = out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    counts.lock().unwrap().1 += 1;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env(
            "CONTENT_TYPE",
            headers.get("content-type").cloned().unwrap_or_default(),
        )
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_GIT_PROTOCOL",
            headers.get("git-protocol").cloned().unwrap_or_default(),
        )
        .env("REMOTE_USER", "git")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cgi.stdin.take().unwrap().write_all(&body).unwrap();
    let output = cgi.wait_with_output().unwrap();
    let raw = output.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .unwrap_or((raw.len(), 0));
    let head = String::from_utf8_lossy(&raw[..split.0]).to_string();
    let payload = &raw[(split.0 + split.1).min(raw.len())..];
    let mut status = "200 OK".to_string();
    let mut response = String::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            Some(_) => response.push_str(&format!("{h}\r\n")),
            None => {}
        }
    }
    let _ = out.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        )
        .as_bytes(),
    );
    let _ = out.write_all(payload);
}

#[test]
fn over_http_with_a_token() {
    let repo = Repo::new("http");
    let state = Tmp::new("http-state");
    let secrets = Tmp::new("http-secrets");
    let a = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "1")))], None);
    let server = HttpGit::start(&repo.tmp.0, "s3cret-token");
    let token_file = secrets.0.join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let source = |token: Option<&Path>| GitSource {
        url: format!("http://127.0.0.1:{}/remote.git", server.port),
        transport: Transport::Http,
        token_file: token.map(Path::to_path_buf),
        ..repo.source(&repo.url())
    };

    // The token, as the basic-auth password of user git: fetched, shallow.
    let mut f = Follower::new(source(Some(&token_file)), state.0.join("git"));
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, a, "{:?}", s.report);
    assert!(server.counts.lock().unwrap().1 > 0);
    assert!(
        state.0.join("git/mirror.git/shallow").exists(),
        "a shallow fetch"
    );

    // Without a token: the remote asks, nothing is configured, a stays.
    let b = repo.commit(&[("daemonsets/web.toml", Some(&spec("web", "2")))], None);
    let mut anonymous = Follower::new(source(None), state.0.join("git"));
    anonymous.poll();
    let s = anonymous.snapshot();
    assert_eq!(s.commit, a);
    assert!(
        s.report.fetch_error.contains("none are configured"),
        "{:?}",
        s.report.fetch_error
    );

    // A wrong token: refused, a stays.
    std::fs::write(&token_file, "wrong\n").unwrap();
    f.poll();
    let s = f.snapshot();
    assert_eq!(s.commit, a);
    assert!(
        s.report
            .fetch_error
            .contains("authentication failed: the remote refused"),
        "{:?}",
        s.report.fetch_error
    );

    // The right one again: b.
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    f.poll();
    assert_eq!(f.snapshot().commit, b, "{:?}", f.snapshot().report);
}

#[tokio::test]
async fn with_the_state_lost_and_the_remote_down_the_units_from_git_are_left_alone() {
    use hostset::systemd::fake::Call;
    let env = Tmp::new("lost-env");
    let spec_dir = env.0.join("daemonsets.d");
    std::fs::create_dir_all(&spec_dir).unwrap();
    let parse = |text: &str| {
        hostset::spec::parse_daemonsets("x.toml", text, hostset::spec::Format::Toml)
            .items
            .remove(0)
    };
    // Running since an earlier agent: web from git, old from the spec directory (its file
    // since removed).
    let fake = FakeSystemd::new();
    let mut web = hostset::unit::unit_spec(&parse(&spec("web", "1")), &UnitOptions::default());
    hostset::unit::set_commit(&mut web, "0123456789abcdef0123456789abcdef01234567");
    fake.insert_running(web, 100);
    let old = hostset::unit::unit_spec(&parse(&spec("old", "1")), &UnitOptions::default());
    fake.insert_running(old, 101);

    let mut config = Config::defaults(&env.0);
    config.spec_dir = spec_dir;
    config.node_file = env.0.join("node.toml");
    config.state_dir = env.0.join("state");
    let mut source = Repo::new("lost").source("git://127.0.0.1:1/fleet.git");
    source.poll_interval = Duration::from_secs(3600);
    config.git = Some(source.clone());
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&env.0).unwrap());
    let mut agent =
        Agent::new(fake.clone(), config, None, UnitOptions::default(), None).trust_owner(uid);
    let mut follower = Follower::new(source, env.0.join("state/git"));
    for polled in [false, true] {
        if polled {
            follower.poll();
            assert!(!follower.snapshot().report.fetch_error.is_empty());
        }
        agent.apply_git(std::sync::Arc::new(follower.snapshot()));
        agent.reload_specs();
        agent.reconcile().await;
    }
    let stopped: Vec<String> = fake
        .take_calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Stop(u) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(
        stopped,
        ["hostset-old.service"],
        "web is git's, old is nobody's"
    );
    assert!(fake.unit("hostset-web.service").is_some());
}
