//! `[source.git]` on real systemd: two nspawn nodes running hostsetd follow one repository
//! (a bare repository on the host, bound read-only into each node as `file:///srv/fleet.git`).
//! A new commit reaches both nodes' units with its commit id; an invalid commit is refused
//! and the daemons keep running untouched; `hostset sync` fetches at once on a node whose poll
//! interval is long. Everything about units is asserted through systemd (`systemctl show`).
//!
//! Needs root, systemd-nspawn and the test rootfs (`.ci/run`); `HOSTSET_SKIP_E2E=1` skips.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::coordinator::start_hostsetd;
use support::fleet::{Fleet, Node, NodeOpts};

const WAIT: Duration = Duration::from_secs(30);

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

fn spec(name: &str, seconds: &str) -> String {
    format!(
        "name = \"{name}\"\ncommand = [\"/bin/sleep\", \"{seconds}\"]\n\
         selector.matchLabels = {{ app = \"{name}\" }}\ntemplate.labels = {{ app = \"{name}\" }}\n\
         terminationGracePeriodSeconds = 2\n"
    )
}

/// Commit `files` (`None`: remove) in `work` and push to its origin; the commit id.
fn commit(work: &Path, files: &[(&str, Option<&str>)]) -> String {
    for (path, text) in files {
        let p = work.join(path);
        match text {
            Some(t) => {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, t).unwrap();
            }
            None => std::fs::remove_file(&p).unwrap(),
        }
    }
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", "fleet change"]);
    git(work, &["push", "-q", "origin", "main"]);
    git(work, &["rev-parse", "HEAD"])
}

fn agent_node(name: &str, specs: &Path, repo: &Path) -> NodeOpts {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("units/hostsetd.service");
    NodeOpts::new(name)
        .bind_ro(env!("CARGO_BIN_EXE_hostsetd"), "/usr/bin/hostsetd")
        .bind_ro(env!("CARGO_BIN_EXE_hostset"), "/usr/bin/hostset")
        .bind_ro(unit, "/etc/systemd/system/hostsetd.service")
        .bind_ro(specs, "/etc/hostset/daemonsets.d")
        .bind_ro(repo, "/srv/fleet.git")
}

fn start_agent(node: &Node, poll_interval: u64) {
    node.write_file(
        "/etc/hostset/agent.toml",
        format!(
            "[source.git]\nurl = \"file:///srv/fleet.git\"\nbranch = \"main\"\n\
             subdirectory = \"daemonsets\"\npoll_interval = {poll_interval}\n"
        ),
    );
    start_hostsetd(node);
}

/// The unit's `HOSTSET_COMMIT`, as systemd has it.
fn unit_commit(node: &Node, unit: &str) -> Option<String> {
    node.unit_property(unit, "Environment")
        .split_whitespace()
        .rev()
        .find_map(|a| a.strip_prefix("HOSTSET_COMMIT="))
        .map(str::to_string)
}

fn active(node: &Node, unit: &str) -> bool {
    node.unit_property(unit, "ActiveState") == "active"
}

fn expect(node: &Node, what: &str, cond: impl FnMut(&Node) -> bool) {
    if let Err(e) = node.wait_for(cond, WAIT) {
        panic!(
            "{}: {what}: {e}\n--- hostsetd journal ---\n{}\n--- status ---\n{}",
            node.name(),
            node.journal("hostsetd"),
            String::from_utf8_lossy(&node.exec(&["hostset", "status"]).stdout)
        );
    }
}

#[test]
fn a_fleet_follows_one_repository() {
    let Some(fleet) = Fleet::new("git_fleet") else {
        return;
    };
    let specs = fleet.shared_dir("specs");
    std::fs::set_permissions(&specs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let git_dir = fleet.shared_dir("git");
    let bare = git_dir.join("fleet.git");
    let work = git_dir.join("work");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["config", "user.name", "Ops"]);
    git(&work, &["config", "user.email", "ops@example.com"]);
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    let a = commit(
        &work,
        &[("daemonsets/web.toml", Some(&spec("web", "infinity")))],
    );

    let nodes = fleet.boot_many(vec![
        agent_node("git-1", &specs, &bare),
        agent_node("git-2", &specs, &bare),
    ]);
    let (polling, syncing) = (&nodes[0], &nodes[1]);
    start_agent(polling, 1);
    // A poll interval no test waits for: only `hostset sync` brings it new commits.
    start_agent(syncing, 3600);

    let web = "hostset-web.service";
    for n in &nodes {
        expect(n, "web runs from commit a", |n| {
            active(n, web) && unit_commit(n, web).as_deref() == Some(a.as_str())
        });
    }
    let status = polling.exec_ok(&["hostset", "status"]);
    assert!(
        status.contains(&format!("commit {} in force", &a[..12])),
        "{status}"
    );
    assert!(status.contains("COMMIT"), "{status}");

    // A new commit: the polling node follows; the other one when asked.
    let b = commit(
        &work,
        &[("daemonsets/web.toml", Some(&spec("web", "100000")))],
    );
    expect(polling, "web restarted from commit b", |n| {
        active(n, web) && unit_commit(n, web).as_deref() == Some(b.as_str())
    });
    assert_eq!(unit_commit(syncing, web).as_deref(), Some(a.as_str()));
    let out = syncing.exec(&["hostset", "sync"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hostset sync: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("commit {} in force", &b[..12])),
        "{text}"
    );
    expect(syncing, "web restarted from commit b after sync", |n| {
        active(n, web) && unit_commit(n, web).as_deref() == Some(b.as_str())
    });
    let pids: Vec<String> = nodes
        .iter()
        .map(|n| n.unit_property(web, "MainPID"))
        .collect();

    // An invalid commit: refused as a whole on every node; the daemons are not touched.
    let c = commit(
        &work,
        &[
            ("daemonsets/web.toml", Some(&spec("web", "200000"))),
            (
                "daemonsets/db.toml",
                Some(
                    "name = \"db\"\ncommand = [\"/bin/sleep\", \"1\"]\nselector.matchLabels = { app = \"db\" }\ntemplate.labels = { app = \"other\" }\n",
                ),
            ),
        ],
    );
    let out = syncing.exec(&["hostset", "sync"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a refused head is a failed sync: {text}"
    );
    assert!(
        text.contains(&format!("head {} refused", &c[..12])),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}:daemonsets/db.toml:4:", &c[..12])),
        "{text}"
    );
    expect(polling, "c refused", |n| {
        String::from_utf8_lossy(&n.exec(&["hostset", "status"]).stdout)
            .contains(&format!("head {} refused", &c[..12]))
    });
    for (n, pid) in nodes.iter().zip(&pids) {
        assert_eq!(
            &n.unit_property(web, "MainPID"),
            pid,
            "{}: web untouched",
            n.name()
        );
        assert_eq!(unit_commit(n, web).as_deref(), Some(b.as_str()));
        assert_eq!(
            n.unit_property("hostset-db.service", "LoadState"),
            "not-found"
        );
    }

    // Fixed: applied everywhere; a restarted agent keeps the commit and the daemons.
    let d = commit(&work, &[("daemonsets/db.toml", None)]);
    assert!(syncing.exec(&["hostset", "sync"]).status.success());
    for n in &nodes {
        expect(n, "web restarted from commit d", |n| {
            active(n, web) && unit_commit(n, web).as_deref() == Some(d.as_str())
        });
    }
    let pid = syncing.unit_property(web, "MainPID");
    syncing.exec_ok(&["systemctl", "restart", "hostsetd"]);
    let status = syncing.exec_ok(&["hostset", "status"]);
    assert!(
        status.contains(&format!("commit {} in force", &d[..12])),
        "{status}"
    );
    assert_eq!(
        syncing.unit_property(web, "MainPID"),
        pid,
        "an agent restart restarts nothing"
    );
}
