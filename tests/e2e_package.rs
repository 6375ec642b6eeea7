//! The packages, installed: the `hostset` .deb on a real systemd node (install, a daemon
//! from a dropped-in spec, upgrade, removal, purge) and the .rpm files read with `rpm`.
//!
//! The packages are built by `bash packaging/build` (`.ci/run` runs it before the tests),
//! not by this test: building them means a release build, completions, man pages and
//! lintian, minutes that do not belong in `cargo test`. This test takes them from
//! `target/debian/` and `target/generate-rpm/`, fails with that command when they are
//! missing, and says so when they are older than the sources. Needs root, systemd-nspawn
//! and the test rootfs like every `e2e_*` test; `HOSTSET_SKIP_E2E=1` skips.
//!
//! Each node is a fresh Debian bookworm (minbase + systemd, dbus): `dpkg -i` needs nothing
//! else, the package's dependencies (libc6, systemd, a D-Bus system bus) are all there.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use support::fleet::{Fleet, Node, NodeOpts, SKIP_ENV, describe, notice};

/// Where the node sees the host's `target/debian/`.
const PACKAGES: &str = "/srv/hostset-packages";
const DAEMON: &str = "hostset-log-collector.service";
const WAIT: Duration = Duration::from_secs(15);
/// dpkg runs the maintainer scripts, which wait for systemd jobs.
const DPKG_TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory (`CARGO_TARGET_TMPDIR` is `<target>/tmp`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}

/// The Debian architecture name of this build, as cargo-deb names the file.
fn deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        other => other,
    }
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn skipped(test: &str) -> bool {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        notice(&format!("SKIPPED package test {test}: {SKIP_ENV}=1"));
        return true;
    }
    false
}

/// The newest modification time under `path` (files only, recursively).
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

/// A package built by `packaging/build`: panics with the command when it is missing, and
/// warns when it is older than the sources it was built from.
fn built_package(path: PathBuf) -> PathBuf {
    if !path.is_file() {
        panic!(
            "{} is missing: build the packages first with `bash packaging/build` \
             (.ci/run does), or set {SKIP_ENV}=1 to skip the end-to-end tests",
            path.display()
        );
    }
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let sources = [
        "src",
        "units",
        "packaging",
        "examples",
        "Cargo.toml",
        "Cargo.lock",
    ]
    .iter()
    .filter_map(|p| newest_mtime(&repo().join(p)))
    .max();
    if let (Some(built), Some(sources)) = (built, sources)
        && sources > built
    {
        notice(&format!(
            "{} is older than the sources: this tests the package as last built; \
             `bash packaging/build` rebuilds it",
            path.display()
        ));
    }
    path
}

/// A package built by `packaging/build`: `hostset` or `hostset-coordinator`, revision 1 (the
/// package) or 2 (the same one rebuilt, to upgrade to).
fn deb(name: &str, revision: u32) -> PathBuf {
    let file = format!("{name}_{}-{revision}_{}.deb", version(), deb_arch());
    let dir = target_dir().join("debian");
    built_package(if revision == 1 {
        dir.join(file)
    } else {
        dir.join("upgrade-test").join(file)
    })
}

/// The path of a package inside the node.
fn in_node(deb: &Path) -> String {
    let rel = deb
        .strip_prefix(target_dir().join("debian"))
        .expect("packages live in target/debian");
    format!("{PACKAGES}/{}", rel.display())
}

/// A fresh node with `target/debian/` bound in, read-only.
fn package_node(fleet: &Fleet, name: &str) -> Node {
    fleet.boot(node_opts(name))
}

fn node_opts(name: &str) -> NodeOpts {
    NodeOpts::new(name).bind_ro(target_dir().join("debian"), PACKAGES)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs a dpkg command in the node (with `env` first, when given), prints what it said,
/// returns how long it took; panics with the agent's journal when it fails.
fn dpkg(node: &Node, env: &[&str], args: &[&str]) -> Duration {
    let mut argv = vec!["env", "DEBIAN_FRONTEND=noninteractive"];
    argv.extend(env);
    argv.push("dpkg");
    argv.extend(args);
    let start = Instant::now();
    let out = node.exec_timeout(&argv, DPKG_TIMEOUT);
    let took = start.elapsed();
    notice(&format!(
        "{}: dpkg {} ({took:.1?}):\n{}",
        node.name(),
        args.join(" "),
        describe(&out)
    ));
    assert!(
        out.status.success(),
        "{}: dpkg {args:?} failed: {}\n--- hostsetd journal ---\n{}",
        node.name(),
        describe(&out),
        node.journal("hostsetd")
    );
    took
}

fn sh_ok(node: &Node, script: &str) -> String {
    let out = node.sh(script);
    assert!(
        out.status.success(),
        "{}: `{script}` failed: {}",
        node.name(),
        describe(&out)
    );
    stdout(&out)
}

fn is_active(node: &Node, unit: &str) -> String {
    stdout(&node.exec(&["systemctl", "is-active", unit]))
}

fn main_pid(node: &Node, unit: &str) -> String {
    node.unit_property(unit, "MainPID")
}

fn load_state(node: &Node, unit: &str) -> String {
    node.unit_property(unit, "LoadState")
}

/// Waits for `cond`, failing with the agent's journal and status when it does not hold.
fn expect(node: &Node, what: &str, cond: impl FnMut(&Node) -> bool) -> Duration {
    match node.wait_for(cond, WAIT) {
        Ok(took) => took,
        Err(e) => panic!(
            "{}: {what}: {e}\n--- hostsetd journal ---\n{}\n--- hostset status ---\n{}",
            node.name(),
            node.journal("hostsetd"),
            describe(&node.exec(&["hostset", "status"]))
        ),
    }
}

/// The README's way to run an example: copy the packaged one into the spec directory.
/// Returns the daemon's MainPID once it runs, and how long that took.
fn drop_example(node: &Node) -> (String, Duration) {
    sh_ok(
        node,
        "cp /usr/share/doc/hostset/examples/log-collector.toml /etc/hostset/daemonsets.d/",
    );
    let took = expect(node, "the example's daemon runs", |n| {
        is_active(n, DAEMON) == "active" && main_pid(n, DAEMON) != "0"
    });
    (main_pid(node, DAEMON), took)
}

/// Whether `path` exists in the node (a file, a directory, or a symlink to either).
fn exists(node: &Node, path: &str) -> bool {
    node.exec(&["test", "-e", path]).status.success()
}

fn process_exists(node: &Node, pid: &str) -> bool {
    exists(node, &format!("/proc/{pid}"))
}

#[test]
fn deb_installs_runs_a_daemon_upgrades_and_purges() {
    let Some(fleet) = Fleet::new("package_deb") else {
        return;
    };
    let (v1, v2) = (deb("hostset", 1), deb("hostset", 2));
    let node = package_node(&fleet, "pkg-1");

    // Install: the agent is enabled and running when dpkg returns.
    let install = dpkg(&node, &[], &["-i", &in_node(&v1)]);
    assert_eq!(is_active(&node, "hostsetd"), "active");
    assert_eq!(
        stdout(&node.exec(&["systemctl", "is-enabled", "hostsetd"])),
        "enabled"
    );
    let conffiles = sh_ok(&node, "dpkg-query -W -f='${Conffiles}' hostset");
    for f in [
        "/etc/hostset/agent.toml",
        "/etc/hostset/node.toml",
        "/etc/hostset/daemonsets.d/README",
    ] {
        assert!(conffiles.contains(f), "{f} is not a conffile: {conffiles}");
    }
    for f in [
        "/usr/bin/hostsetd",
        "/usr/bin/hostset",
        "/lib/systemd/system/hostsetd.service",
        "/lib/systemd/system/hostset.slice",
        "/usr/share/bash-completion/completions/hostset",
        "/usr/share/zsh/vendor-completions/_hostset",
        "/usr/share/man/man8/hostsetd.8.gz",
    ] {
        assert!(exists(&node, f), "{f} was not installed");
    }
    sh_ok(&node, "hostset --version && hostsetd --version");
    let completion = sh_ok(
        &node,
        "bash -c '. /usr/share/bash-completion/completions/hostset && complete -p hostset'",
    );
    assert!(
        completion.contains("_hostset"),
        "bash completion: {completion}"
    );

    // A spec dropped into the spec directory runs, with its limits.
    let (pid, started) = drop_example(&node);
    assert_eq!(
        node.unit_property(DAEMON, "MemoryMax"),
        "209715200",
        "limits.memory 200Mi"
    );
    assert_eq!(node.unit_property(DAEMON, "Slice"), "hostset.slice");
    let status = node.exec(&["systemctl", "status", "--no-pager", "hostset-log-collector"]);
    assert!(
        status.status.success() && stdout(&status).contains("Active: active (running)"),
        "systemctl status hostset-log-collector: {}",
        describe(&status)
    );

    // Upgrade to the rebuilt package: the agent restarts (a new invocation), the daemon
    // keeps running with the same MainPID, a changed conffile is kept.
    let agent_before = node.unit_property("hostsetd.service", "InvocationID");
    node.write_file(
        "/etc/hostset/agent.toml",
        format!(
            "{}# changed by the install test\n",
            node.read_file("/etc/hostset/agent.toml").unwrap()
        ),
    );
    let upgrade = dpkg(&node, &[], &["-i", &in_node(&v2)]);
    assert_eq!(
        sh_ok(&node, "dpkg-query -W -f='${Version}' hostset"),
        format!("{}-2", version())
    );
    assert_eq!(is_active(&node, "hostsetd"), "active");
    let agent_after = node.unit_property("hostsetd.service", "InvocationID");
    assert_ne!(
        agent_before, agent_after,
        "the upgrade must restart the agent"
    );
    // The restarted agent has made its first pass (Type=notify: `restart` waited for it);
    // give it a moment more to do anything it would do wrongly.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(is_active(&node, DAEMON), "active");
    assert_eq!(
        main_pid(&node, DAEMON),
        pid,
        "the upgrade must not restart the daemon\n{}",
        node.journal("hostsetd")
    );
    assert!(
        node.read_file("/etc/hostset/agent.toml")
            .unwrap()
            .contains("# changed by the install test"),
        "the upgrade overwrote a changed conffile"
    );

    // Purge: no agent, no daemon, no hostset unit at all, no /etc/hostset.
    let purge = dpkg(&node, &[], &["--purge", "hostset"]);
    assert_eq!(load_state(&node, "hostsetd.service"), "not-found");
    assert_eq!(load_state(&node, DAEMON), "not-found");
    assert!(
        !process_exists(&node, &pid),
        "the daemon's process {pid} outlived the purge"
    );
    let units = sh_ok(
        &node,
        "systemctl list-units --all --plain --no-legend 'hostset*'",
    );
    assert!(units.is_empty(), "units left after the purge:\n{units}");
    for path in ["/etc/hostset", "/run/hostset", "/usr/bin/hostsetd"] {
        assert!(!exists(&node, path), "{path} is left after the purge");
    }
    assert!(
        !node.exec(&["dpkg-query", "-W", "hostset"]).status.success(),
        "dpkg still knows hostset after the purge"
    );

    notice(&format!(
        "package timings: dpkg -i {install:.1?}, daemon running {started:.1?} after the spec was \
         dropped, upgrade {upgrade:.1?}, purge {purge:.1?}"
    ));
}

#[test]
fn removal_keeps_the_daemons_when_the_operator_asks() {
    let Some(fleet) = Fleet::new("package_keep") else {
        return;
    };
    let v1 = deb("hostset", 1);
    let node = package_node(&fleet, "pkg-keep");
    dpkg(&node, &[], &["-i", &in_node(&v1)]);
    let (pid, _) = drop_example(&node);

    // The flag file: `dpkg -r` stops the agent, not the daemon.
    sh_ok(&node, "touch /etc/hostset/keep-daemons-on-remove");
    dpkg(&node, &[], &["-r", "hostset"]);
    assert_ne!(is_active(&node, "hostsetd"), "active");
    assert_eq!(is_active(&node, DAEMON), "active");
    assert_eq!(main_pid(&node, DAEMON), pid);

    // Installed again, the agent adopts the daemon as it runs.
    dpkg(&node, &[], &["-i", &in_node(&v1)]);
    assert_eq!(is_active(&node, "hostsetd"), "active");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        main_pid(&node, DAEMON),
        pid,
        "the new agent must adopt the daemon"
    );

    // HOSTSET_KEEP_DAEMONS=1 for one purge: configuration gone, daemon running.
    sh_ok(&node, "rm /etc/hostset/keep-daemons-on-remove");
    dpkg(&node, &["HOSTSET_KEEP_DAEMONS=1"], &["--purge", "hostset"]);
    assert_eq!(load_state(&node, "hostsetd.service"), "not-found");
    assert!(!exists(&node, "/etc/hostset"));
    assert_eq!(is_active(&node, DAEMON), "active");
    assert_eq!(main_pid(&node, DAEMON), pid);
}

#[test]
fn coordinator_deb_installs_disabled_and_shares_the_spec_directory() {
    let Some(fleet) = Fleet::new("package_coordinator") else {
        return;
    };
    let (agent, coordinator) = (deb("hostset", 1), deb("hostset-coordinator", 1));
    // Its own network namespace: the coordinator listens on 127.0.0.1:8470, which the
    // host and other nodes must not share.
    let node = fleet.boot(node_opts("pkg-coord").nspawn_arg("--private-network"));
    let coord = "hostset-coordinator.service";

    // Installed, not enabled, not started; the token files exist, root's alone.
    dpkg(&node, &[], &["-i", &in_node(&coordinator)]);
    assert_eq!(
        stdout(&node.exec(&["systemctl", "is-enabled", coord])),
        "disabled"
    );
    assert_eq!(is_active(&node, coord), "inactive");
    assert_eq!(
        sh_ok(
            &node,
            "stat -c '%a %U' /etc/hostset/coordinator /etc/hostset/coordinator/agent-tokens \
             /etc/hostset/coordinator/read-tokens /etc/hostset/daemonsets.d"
        ),
        "700 root\n600 root\n600 root\n755 root"
    );
    // ... and enough to start it (on the loopback address, admitting nobody yet).
    let out = node.exec(&["systemctl", "start", coord]);
    assert!(
        out.status.success(),
        "hostset-coordinator did not start: {}\n{}",
        describe(&out),
        node.journal("hostset-coordinator")
    );
    assert!(exists(&node, "/var/lib/hostset-coordinator"));

    // The agent beside it: purging the agent stops its daemons, not the coordinator, and
    // keeps the spec directory the coordinator serves.
    dpkg(&node, &[], &["-i", &in_node(&agent)]);
    let (pid, _) = drop_example(&node);
    dpkg(&node, &[], &["--purge", "hostset"]);
    assert!(
        !process_exists(&node, &pid),
        "the daemon outlived the purge"
    );
    assert_eq!(is_active(&node, coord), "active");
    assert!(!exists(&node, "/etc/hostset/agent.toml"));
    assert!(exists(&node, "/etc/hostset/coordinator.toml"));
    assert!(
        exists(&node, "/etc/hostset/daemonsets.d/log-collector.toml"),
        "the spec directory the coordinator serves must stay"
    );

    // Purging the coordinator: its unit, its state, and /etc/hostset are gone.
    dpkg(&node, &[], &["--purge", "hostset-coordinator"]);
    assert_eq!(load_state(&node, coord), "not-found");
    for path in [
        "/var/lib/hostset-coordinator",
        "/var/lib/private/hostset-coordinator",
        "/etc/hostset",
    ] {
        assert!(!exists(&node, path), "{path} is left after the purge");
    }
}

/// `rpm -qp ARGS FILE` on the host; panics with its output when it fails.
fn rpm_query(args: &[&str], file: &Path) -> String {
    let out = Command::new("rpm")
        .args(["-qp"])
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run rpm ({e}): apt-get install -y rpm"));
    assert!(
        out.status.success(),
        "rpm -qp {args:?} {}: {}",
        file.display(),
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rpm_file(name: &str) -> PathBuf {
    let dir = target_dir().join("generate-rpm");
    let prefix = format!("{name}-{}-", version());
    let found = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".rpm"))
        });
    built_package(found.unwrap_or_else(|| dir.join(format!("{prefix}1.<arch>.rpm"))))
}

/// The body of one scriptlet (`postinstall`, `preuninstall`, ...) in `rpm -qp --scripts`
/// output, `""` when the package has none. Each starts with a line `NAME scriptlet:` or
/// `NAME scriptlet (using PROG):`.
fn scriptlet(scripts: &str, name: &str) -> String {
    let is_header = |line: &str| {
        line.split_once(" scriptlet")
            .is_some_and(|(n, rest)| !n.contains(' ') && rest.ends_with(':'))
    };
    scripts
        .lines()
        .skip_while(|l| !(is_header(l) && l.starts_with(&format!("{name} scriptlet"))))
        .skip(1)
        .take_while(|l| !is_header(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `%{FILEFLAGS:fflags}` of `path` in the `rpm -qp --qf` listing below.
fn file_flags<'a>(listing: &'a str, path: &str) -> &'a str {
    listing
        .lines()
        .find_map(|l| {
            l.split_once(' ')
                .filter(|(_, p)| *p == path)
                .map(|(f, _)| f)
        })
        .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
}

#[test]
fn rpm_packages_hold_their_files_and_scriptlets() {
    if skipped("rpm_packages_hold_their_files_and_scriptlets") {
        return;
    }
    let flags_query = ["--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]"];

    let agent = rpm_file("hostset");
    let info = rpm_query(&["-il"], &agent);
    let scripts = rpm_query(&["--scripts"], &agent);
    let requires = rpm_query(&["-R"], &agent);
    notice(&format!(
        "rpm -qpil {}:\n{info}\nrpm -qp --scripts:\n{scripts}\nrpm -qpR:\n{requires}",
        agent.display()
    ));
    for f in [
        "/usr/bin/hostsetd",
        "/usr/bin/hostset",
        "/usr/lib/systemd/system/hostsetd.service",
        "/usr/lib/systemd/system/hostset.slice",
        "/usr/lib/hostset/stop-daemons",
        "/usr/share/bash-completion/completions/hostset",
        "/usr/share/zsh/site-functions/_hostset",
        "/usr/share/doc/hostset/examples/log-collector.toml",
    ] {
        assert!(
            info.lines().any(|l| l == f),
            "{f} is not in {}",
            agent.display()
        );
    }
    let flags = rpm_query(&flags_query, &agent);
    for conf in [
        "/etc/hostset/agent.toml",
        "/etc/hostset/node.toml",
        "/etc/hostset/daemonsets.d/README",
    ] {
        let f = file_flags(&flags, conf);
        assert!(
            f.contains('c') && f.contains('n'),
            "{conf} must be %config(noreplace), has flags {f:?}"
        );
    }
    for (name, needle) in [
        (
            "postinstall",
            "systemctl --no-reload enable hostsetd.service",
        ),
        ("postinstall", "systemctl start hostsetd.service"),
        ("preuninstall", "hostsetd goodbye"),
        ("preuninstall", "systemctl stop hostsetd.service"),
        ("preuninstall", "/usr/lib/hostset/stop-daemons"),
        ("postuninstall", "systemctl try-restart hostsetd.service"),
    ] {
        assert!(
            scriptlet(&scripts, name).contains(needle),
            "{}: the {name} scriptlet lacks {needle:?}:\n{scripts}",
            agent.display()
        );
    }
    for dep in ["systemd", "dbus"] {
        assert!(
            requires.lines().any(|l| l.trim() == dep),
            "{} does not require {dep}:\n{requires}",
            agent.display()
        );
    }

    let coordinator = rpm_file("hostset-coordinator");
    let info = rpm_query(&["-il"], &coordinator);
    let scripts = rpm_query(&["--scripts"], &coordinator);
    notice(&format!(
        "rpm -qpil {}:\n{info}\nrpm -qp --scripts:\n{scripts}",
        coordinator.display()
    ));
    for f in [
        "/usr/bin/hostset-coordinator",
        "/usr/lib/systemd/system/hostset-coordinator.service",
    ] {
        assert!(
            info.lines().any(|l| l == f),
            "{f} is not in {}",
            coordinator.display()
        );
    }
    let flags = rpm_query(&flags_query, &coordinator);
    let f = file_flags(&flags, "/etc/hostset/coordinator.toml");
    assert!(
        f.contains('c') && f.contains('n'),
        "coordinator.toml flags {f:?}"
    );
    let post = scriptlet(&scripts, "postinstall");
    assert!(
        !post.is_empty()
            && !post.contains("systemctl --no-reload enable")
            && !post.contains("systemctl start"),
        "the coordinator must be installed, not enabled or started:\n{scripts}"
    );
    assert!(
        scriptlet(&scripts, "preuninstall").contains("systemctl stop hostset-coordinator.service"),
        "{scripts}"
    );
    assert!(
        scriptlet(&scripts, "postuninstall").contains("try-restart hostset-coordinator.service"),
        "{scripts}"
    );
}
