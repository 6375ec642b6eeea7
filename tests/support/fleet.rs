//! A fleet of real systemd nodes for end-to-end tests.
//!
//! Each node is a `systemd-nspawn` container booted (`-b`) from one shared Debian bookworm
//! root filesystem with `--volatile=overlay`: systemd 252 as PID 1, journald, the D-Bus
//! system bus, and a throwaway writable layer of its own. The rootfs is built once by
//! `tests/fleet/rootfs.sh` and cached outside the repository (see that script).
//!
//! ```ignore
//! mod support;
//! use support::fleet::{Fleet, NodeOpts};
//!
//! #[test]
//! fn agent_starts_the_daemon() {
//!     let Some(fleet) = Fleet::new("agent_starts_the_daemon") else { return };
//!     let specs = fleet.shared_dir("specs");
//!     let node = fleet.boot(
//!         NodeOpts::new("web-1")
//!             .bind_ro(&specs, "/etc/hostset/daemonsets.d")
//!             .bind_ro(env!("CARGO_BIN_EXE_hostsetd"), "/usr/bin/hostsetd"),
//!     );
//!     node.exec_ok(&["systemd-run", "--unit=hostsetd", "/usr/bin/hostsetd"]);
//!     std::fs::write(specs.join("demo.toml"), "...").unwrap();
//!     node.wait_for(|n| n.unit_property("hostset-demo.service", "ActiveState") == "active",
//!         Duration::from_secs(10)).unwrap();
//! }
//! ```
//!
//! # Rules the harness keeps
//!
//! - **Root and systemd-nspawn are required.** Without them [`Fleet::new`] panics with the
//!   reason, unless `HOSTSET_SKIP_E2E=1` is set: then it prints a notice and returns
//!   `None`, and the test returns early. `HOSTSET_SKIP_E2E=1` always skips. CI runs as
//!   root with the tools installed by `.ci/run`, so there the tests really run.
//! - **One cgroup per node.** No systemd runs on the test host, so nspawn nests a node
//!   under the cgroup it was started in; nodes started from one cgroup would share one
//!   cgroup tree. Each node is started by a shell that first moves itself into
//!   `/sys/fs/cgroup/{systemd,unified}/hostset-test/<fleet>/<node>` (or the same path in
//!   a pure cgroup-v2 hierarchy) and then execs nspawn.
//! - **Unique names.** A fleet's id is `<test>-<pid>-<n>` and a node's machine name
//!   `hs-<pid>-<n>-<node>`, so tests in one binary can boot nodes called `a` at once.
//! - **Teardown** (dropping a [`Node`], [`Node::stop`], or dropping the [`Fleet`]): SIGTERM to
//!   the nspawn process this harness started (the node's systemd shuts down cleanly); after
//!   [`STOP_GRACE`] a second SIGTERM (nspawn then terminates the node at once); 5 s later
//!   SIGKILL to the node's init (which ends its whole PID namespace) and to nspawn. A node
//!   stopped before it finished booting gets the second SIGTERM after 1 s: systemd may not
//!   have installed the handler for the first one yet. Then the cgroup directories of the
//!   node, `hostset-test/<fleet>/<node>` and below, are removed, deepest first; nothing
//!   outside `hostset-test/` is touched.
//! - **A killed test leaves no node running.** Every node is started with
//!   `setpriv --pdeathsig TERM`, so it stops when the test process dies. The death signal
//!   follows the *thread* that spawned nspawn: boot nodes from the test's own thread (as
//!   [`Fleet::boot_many`] does), not from a short-lived helper thread. The empty cgroup
//!   directories such a test leaves are removed by the next test binary's first fleet.
//! - **Commands in a node** run as `timeout … nsenter -t <init pid> -a -- argv…` with a clean
//!   environment, never through a path on the host.
//! - Logs: the node's console (nspawn's output) is kept in the fleet's work directory
//!   (`target/tmp/hostset-fleet/<fleet>/`), which is removed on success and kept, with a
//!   notice, when the test panics or `HOSTSET_KEEP_E2E=1` is set.
//!
//! # Limits
//!
//! On a cgroup-v1 (hybrid) host, systemd in a node records `MemoryMax=`/`CPUQuota=` (visible in
//! `systemctl show` and over D-Bus) but the kernel does not enforce them: nspawn mounts
//! those controllers read-only. Test what systemd reports. Nodes share the host's network
//! namespace unless a test passes `--private-network` through [`NodeOpts::nspawn_arg`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// `HOSTSET_SKIP_E2E=1` skips every end-to-end test (with a notice).
pub const SKIP_ENV: &str = "HOSTSET_SKIP_E2E";
/// `HOSTSET_KEEP_E2E=1` keeps a fleet's work directory (console logs, shared dirs).
pub const KEEP_ENV: &str = "HOSTSET_KEEP_E2E";

/// How long [`Fleet::boot`] waits for `systemctl is-system-running` by default.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a command in a node may run by default ([`Node::exec`]).
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a booted node may take to shut down cleanly after SIGTERM before nspawn is
/// told to terminate it at once (a second SIGTERM), then killed 5 s later.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// The PATH commands run with inside a node (and nspawn on the host).
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Directory under each cgroup hierarchy that holds every fleet's cgroups.
const CGROUP_TOP: &str = "hostset-test";

/// Writes a line to the real stderr, past the test harness's output capture, so that
/// notices (skips, timings, kept logs) show in `cargo test` output even when tests pass.
pub fn notice(message: &str) {
    let _ = writeln!(io::stderr().lock(), "[fleet] {message}");
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes. Returns the time it took,
/// or an error saying how long it waited. Polling is for tests only.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "condition still false after {:.1?}",
                start.elapsed()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// Host prerequisites and the shared rootfs

/// Absolute paths of the host tools the harness runs.
#[derive(Debug, Clone)]
struct Tools {
    nspawn: PathBuf,
    nsenter: PathBuf,
    timeout: PathBuf,
    /// `setpriv --pdeathsig` (util-linux); without it nodes outlive a killed test process.
    setpriv: Option<PathBuf>,
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::env::split_paths(NODE_PATH))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The cgroup hierarchies a node must get a cgroup of its own in: the named `systemd`
/// hierarchy and the `unified` one on a hybrid (v1) host, or the root of a pure v2 host.
fn cgroup_roots() -> Result<Vec<PathBuf>, String> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return Ok(vec![base.to_path_buf()]);
    }
    let named = base.join("systemd");
    if !named.join("cgroup.procs").exists() {
        return Err(
            "no cgroup hierarchy for systemd: neither /sys/fs/cgroup/systemd (v1) \
                    nor a cgroup-v2 /sys/fs/cgroup is mounted"
                .into(),
        );
    }
    let mut roots = vec![named];
    let unified = base.join("unified");
    if unified.join("cgroup.procs").exists() {
        roots.push(unified);
    }
    Ok(roots)
}

/// Everything a fleet needs from the host, checked once per test binary.
fn host_check() -> Result<Tools, String> {
    let mut missing = Vec::new();
    match effective_uid() {
        Some(0) => {}
        Some(uid) => missing.push(format!("root (running as uid {uid})")),
        None => missing.push("root (cannot read /proc/self/status)".into()),
    }
    let nspawn = find_tool("systemd-nspawn");
    if nspawn.is_none() {
        missing.push("systemd-nspawn (apt-get install -y systemd-container)".into());
    }
    let nsenter = find_tool("nsenter");
    if nsenter.is_none() {
        missing.push("nsenter (util-linux)".into());
    }
    let timeout = find_tool("timeout");
    if timeout.is_none() {
        missing.push("timeout (coreutils)".into());
    }
    if let Err(e) = cgroup_roots() {
        missing.push(e);
    }
    match (nspawn, nsenter, timeout) {
        (Some(nspawn), Some(nsenter), Some(timeout)) if missing.is_empty() => Ok(Tools {
            nspawn,
            nsenter,
            timeout,
            setpriv: find_tool("setpriv"),
        }),
        _ => Err(missing.join("; ")),
    }
}

fn tools() -> &'static Result<Tools, String> {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    TOOLS.get_or_init(host_check)
}

/// The rootfs every node boots from: built (or found in the cache) by
/// `tests/fleet/rootfs.sh`, once per test binary.
fn rootfs() -> &'static Result<PathBuf, String> {
    static ROOTFS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fleet/rootfs.sh");
        let start = Instant::now();
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}):\n{}",
                script.display(),
                out.status,
                stderr.trim_end()
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
        if !path.join("lib/systemd/systemd").exists() {
            return Err(format!(
                "{} printed {:?}, which is not a bootable rootfs",
                script.display(),
                path
            ));
        }
        if start.elapsed() > Duration::from_secs(2) {
            for line in stderr.lines() {
                notice(line);
            }
            notice(&format!(
                "rootfs ready in {:.1?}: {}",
                start.elapsed(),
                path.display()
            ));
        }
        Ok(path)
    })
}

// ---------------------------------------------------------------------------------------
// Process and cgroup helpers (by PID only; only our own directories)

fn signal(pid: u32, sig: &str) -> bool {
    // The shell's builtin kill: no dependency on procps on the host.
    Command::new("/bin/sh")
        .args([
            "-c",
            "kill -s \"$1\" \"$2\" 2>/dev/null",
            "sh",
            sig,
            &pid.to_string(),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

fn pid_ns(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// Children of `parent`, from `/proc/*/stat`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

/// Every directory below `dir` (not `dir` itself), deepest first.
fn subdirs_deepest_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
                out.push(entry.path());
            }
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Removes `dir` and every cgroup below it, deepest first, retrying for a few seconds while
/// the last processes leave. Cgroup directories hold only kernel files, so `rmdir` is right.
fn remove_cgroup_tree(dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut last_err = None;
        for d in subdirs_deepest_first(dir)
            .into_iter()
            .chain([dir.to_path_buf()])
        {
            match fs::remove_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => last_err = Some(format!("rmdir {}: {e}", d.display())),
            }
        }
        match last_err {
            None => return Ok(()),
            Some(e) if Instant::now() >= deadline => {
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                return Err(format!(
                    "{e} (processes still in {}: {procs:?})",
                    dir.display()
                ));
            }
            Some(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Removes the empty cgroup directories of fleets whose test process died without tearing
/// down (killed, or aborted): `hostset-test/<test>-<pid>-<n>` where `<pid>` is gone. Their
/// nodes stopped with the process (`--pdeathsig`); a directory that still holds processes
/// is left alone, with a notice.
fn sweep_stale_cgroups(roots: &[PathBuf]) {
    for root in roots {
        let Ok(entries) = fs::read_dir(root.join(CGROUP_TOP)) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            let Some(pid) = pid else { continue };
            if !dir.is_dir()
                || pid == std::process::id()
                || Path::new(&format!("/proc/{pid}")).exists()
            {
                continue;
            }
            let mut busy = false;
            for d in subdirs_deepest_first(&dir).into_iter().chain([dir.clone()]) {
                if let Err(e) = fs::remove_dir(&d)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    busy = true;
                }
            }
            if busy {
                notice(&format!(
                    "stale fleet cgroup {} (test process {pid} is gone) still holds processes; left alone",
                    dir.display()
                ));
            } else {
                notice(&format!("removed stale fleet cgroup {}", dir.display()));
            }
        }
        // Empty unless other fleets live: then it fails and stays.
        let _ = fs::remove_dir(root.join(CGROUP_TOP));
    }
}

/// `hostset-test/` is shared by every fleet of this process: the first creates it, the
/// last removes it (if it is empty, i.e. no other test process uses it).
struct TopDir {
    users: usize,
    created: bool,
}

static TOP_DIR: Mutex<TopDir> = Mutex::new(TopDir {
    users: 0,
    created: false,
});

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sanitize(name: &str, max: usize) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect();
    if s.is_empty() { "test".into() } else { s }
}

fn valid_node_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 40
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// nspawn's `--bind=SRC:DST` syntax: a colon inside a path is written `\:`.
fn bind_escape(p: &Path) -> String {
    p.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
}

static NEXT_FLEET: AtomicU64 = AtomicU64::new(0);
static NEXT_NODE: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------------------------------
// Fleet

/// A set of nodes belonging to one test. Dropping it stops every node, removes the cgroup
/// directories it created and (unless the test panicked) its work directory.
pub struct Fleet {
    id: String,
    tools: Tools,
    rootfs: PathBuf,
    work_dir: PathBuf,
    /// `<hierarchy>/hostset-test/<id>` for every hierarchy.
    cgroup_dirs: Vec<PathBuf>,
    nodes: Mutex<Vec<Arc<NodeInner>>>,
}

/// How to boot one node.
#[derive(Debug, Clone)]
pub struct NodeOpts {
    /// The node's host name: lower-case letters, digits and `-`, at most 40 characters;
    /// unique within the fleet.
    pub name: String,
    /// Bind mounts `(host path, path in the node, read-only)`.
    pub binds: Vec<(PathBuf, PathBuf, bool)>,
    /// Extra `systemd-nspawn` arguments (e.g. `--private-network`, `--setenv=...`).
    pub nspawn_args: Vec<String>,
    /// How long to wait for `systemctl is-system-running` to say running/degraded.
    pub boot_timeout: Duration,
}

impl Default for NodeOpts {
    fn default() -> Self {
        NodeOpts {
            name: String::new(),
            binds: Vec::new(),
            nspawn_args: Vec::new(),
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
        }
    }
}

impl NodeOpts {
    pub fn new(name: &str) -> Self {
        NodeOpts {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Binds a host file or directory into the node, read-only.
    pub fn bind_ro(mut self, host: impl AsRef<Path>, node: impl AsRef<Path>) -> Self {
        self.binds
            .push((host.as_ref().into(), node.as_ref().into(), true));
        self
    }

    /// Binds a host file or directory into the node, writable from both sides.
    pub fn bind_rw(mut self, host: impl AsRef<Path>, node: impl AsRef<Path>) -> Self {
        self.binds
            .push((host.as_ref().into(), node.as_ref().into(), false));
        self
    }

    pub fn nspawn_arg(mut self, arg: impl Into<String>) -> Self {
        self.nspawn_args.push(arg.into());
        self
    }

    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }
}

impl Fleet {
    /// A fleet for the test `test_name`; builds or finds the rootfs. Panics with the reason
    /// when this host cannot boot nodes (not root, no systemd-nspawn, no rootfs), unless
    /// `HOSTSET_SKIP_E2E=1`: then it prints a notice and returns `None`.
    pub fn new(test_name: &str) -> Option<Fleet> {
        if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
            notice(&format!(
                "SKIPPED end-to-end test {test_name}: {SKIP_ENV}=1"
            ));
            return None;
        }
        let tools = match tools() {
            Ok(t) => t.clone(),
            Err(missing) => panic!(
                "end-to-end test {test_name} cannot run on this host: it needs {missing}. \
                 Run it as root on a host with systemd-container and debootstrap installed \
                 (.ci/run installs them), or set {SKIP_ENV}=1 to skip the end-to-end tests."
            ),
        };
        let rootfs = match rootfs() {
            Ok(p) => p.clone(),
            Err(e) => panic!("end-to-end test {test_name}: no rootfs for the test nodes: {e}"),
        };
        let roots = cgroup_roots().unwrap_or_else(|e| panic!("{e}"));
        static SWEPT: OnceLock<()> = OnceLock::new();
        SWEPT.get_or_init(|| sweep_stale_cgroups(&roots));

        let id = format!(
            "{}-{}-{}",
            sanitize(test_name, 40),
            std::process::id(),
            NEXT_FLEET.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let work_dir = tmp.join("hostset-fleet").join(&id);
        let _ = fs::remove_dir_all(&work_dir);
        fs::create_dir_all(&work_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", work_dir.display()));

        let mut cgroup_dirs = Vec::new();
        {
            let mut top = lock(&TOP_DIR);
            for root in &roots {
                let top_dir = root.join(CGROUP_TOP);
                let dir = top_dir.join(&id);
                // Another test process may remove an empty `hostset-test/` between the two
                // mkdirs (see `sweep_stale_cgroups`): then create it again.
                let mut attempts = 0;
                loop {
                    match fs::create_dir(&top_dir) {
                        Ok(()) => top.created = true,
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => panic!("cannot create cgroup {}: {e}", top_dir.display()),
                    }
                    match fs::create_dir(&dir) {
                        Ok(()) => break,
                        Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => {
                            attempts += 1
                        }
                        Err(e) => panic!("cannot create cgroup {}: {e}", dir.display()),
                    }
                }
                cgroup_dirs.push(dir);
            }
            top.users += 1;
        }

        Some(Fleet {
            id,
            tools,
            rootfs,
            work_dir,
            cgroup_dirs,
            nodes: Mutex::new(Vec::new()),
        })
    }

    /// `<test>-<pid>-<n>`: unique on this machine while the fleet lives.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// Host directory for this fleet's files (console logs, shared directories).
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The fleet's own cgroup directories (`.../hostset-test/<id>`, one per hierarchy).
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        &self.cgroup_dirs
    }

    /// A host directory (created empty) to bind into nodes, e.g. one spec directory for the
    /// whole fleet: `NodeOpts::new("a").bind_ro(&dir, "/etc/hostset/daemonsets.d")`. The test
    /// writes into it on the host; every node sees the change at once.
    pub fn shared_dir(&self, name: &str) -> PathBuf {
        let dir = self.work_dir.join("shared").join(sanitize(name, 60));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        dir
    }

    /// Boots one node and waits until its systemd is up. Panics (with the node's console
    /// output) when it does not come up in time.
    #[must_use = "dropping a Node stops it"]
    pub fn boot(&self, opts: NodeOpts) -> Node {
        self.try_boot(opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Fleet::boot`], returning the failure instead of panicking.
    pub fn try_boot(&self, opts: NodeOpts) -> Result<Node, String> {
        let timeout = opts.boot_timeout;
        let node = self.start(opts)?;
        node.wait_booted(timeout)?;
        Ok(node)
    }

    /// Boots several nodes in parallel: all are started at once, then waited for.
    #[must_use = "dropping a Node stops it"]
    pub fn boot_many(&self, opts: Vec<NodeOpts>) -> Vec<Node> {
        let timeouts: Vec<Duration> = opts.iter().map(|o| o.boot_timeout).collect();
        // Spawned from this thread (the death signal follows the spawning thread)...
        let nodes: Vec<Node> = opts
            .into_iter()
            .map(|o| self.start(o).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        // ... waited for in parallel.
        let results: Vec<Result<(), String>> = thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .zip(&timeouts)
                .map(|(node, timeout)| s.spawn(move || node.wait_booted(*timeout)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("boot waiter panicked"))
                .collect()
        });
        let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if !errors.is_empty() {
            panic!("{}", errors.join("\n\n"));
        }
        nodes
    }

    /// Starts systemd-nspawn for one node, in the node's own cgroups, without waiting.
    fn start(&self, opts: NodeOpts) -> Result<Node, String> {
        let name = opts.name;
        if !valid_node_name(&name) {
            return Err(format!(
                "invalid node name {name:?}: use 1-40 of a-z, 0-9 and '-', not at either end"
            ));
        }
        let mut nodes = lock(&self.nodes);
        if nodes.iter().any(|n| n.name == name && !n.is_stopped()) {
            return Err(format!(
                "fleet {} already has a running node {name}",
                self.id
            ));
        }
        let machine = format!(
            "hs-{}-{}-{name}",
            std::process::id(),
            NEXT_NODE.fetch_add(1, Ordering::Relaxed)
        );

        let mut nspawn_args: Vec<OsString> = vec![
            "-D".into(),
            self.rootfs.clone().into(),
            "--volatile=overlay".into(),
            "--register=no".into(),
            "--keep-unit".into(),
            "--boot".into(),
            format!("--machine={machine}").into(),
            format!("--hostname={name}").into(),
            "--console=read-only".into(),
            // Plain boot messages in the console log.
            "--setenv=SYSTEMD_COLORS=0".into(),
        ];
        for (host, node_path, read_only) in &opts.binds {
            if !node_path.is_absolute() {
                return Err(format!(
                    "bind target {} must be absolute",
                    node_path.display()
                ));
            }
            // A writable bind under the node's /tmp or /var/tmp would be cleaned by the
            // node's systemd-tmpfiles at boot and on its timer.
            if !read_only && (node_path.starts_with("/tmp") || node_path.starts_with("/var/tmp")) {
                return Err(format!(
                    "refusing a writable bind at {} in node {name}: the node's tmpfiles cleans it",
                    node_path.display()
                ));
            }
            let host = fs::canonicalize(host)
                .map_err(|e| format!("bind source {}: {e}", host.display()))?;
            let flag = if *read_only { "--bind-ro" } else { "--bind" };
            nspawn_args
                .push(format!("{flag}={}:{}", bind_escape(&host), bind_escape(node_path)).into());
        }
        nspawn_args.extend(opts.nspawn_args.iter().map(OsString::from));

        // The node's own cgroups, created empty here, entered by the shell below before it
        // execs nspawn.
        let mut cgroup_dirs: Vec<PathBuf> = Vec::new();
        for fleet_dir in &self.cgroup_dirs {
            let dir = fleet_dir.join(&name);
            if let Err(e) = fs::create_dir(&dir) {
                for d in &cgroup_dirs {
                    let _ = remove_cgroup_tree(d);
                }
                return Err(format!("cannot create cgroup {}: {e}", dir.display()));
            }
            cgroup_dirs.push(dir);
        }

        let log_path = self.work_dir.join(format!("{name}.console.log"));
        let log =
            File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;

        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(
                "n=$1; shift; \
                 while [ \"$n\" -gt 0 ]; do echo $$ > \"$1\" || exit 125; shift; n=$((n - 1)); done; \
                 exec \"$@\"",
            )
            .arg("hostset-node")
            .arg(cgroup_dirs.len().to_string())
            .args(cgroup_dirs.iter().map(|d| d.join("cgroup.procs")));
        if let Some(setpriv) = &self.tools.setpriv {
            cmd.arg(setpriv).args(["--pdeathsig", "TERM", "--"]);
        }
        cmd.arg(&self.tools.nspawn)
            .args(&nspawn_args)
            .env_clear()
            .env("PATH", NODE_PATH)
            .env("TERM", "dumb")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let command_line = format!(
            "{} {}",
            self.tools.nspawn.display(),
            nspawn_args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                for d in &cgroup_dirs {
                    let _ = remove_cgroup_tree(d);
                }
                return Err(format!("cannot start {command_line}: {e}"));
            }
        };

        let inner = Arc::new(NodeInner {
            name,
            machine,
            fleet_id: self.id.clone(),
            tools: self.tools.clone(),
            nspawn_pid: child.id(),
            command_line,
            log_path,
            started: Instant::now(),
            state: Mutex::new(NodeState {
                child: Some(child),
                init: None,
                booted_in: None,
            }),
            cgroup_dirs,
        });
        nodes.push(inner.clone());
        Ok(Node { inner })
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let nodes: Vec<Arc<NodeInner>> = lock(&self.nodes).drain(..).collect();
        // SIGTERM to all first, so they shut down in parallel.
        for node in &nodes {
            node.begin_stop();
        }
        let mut errors: Vec<String> = nodes.iter().filter_map(|n| n.finish_stop().err()).collect();
        for dir in &self.cgroup_dirs {
            if let Err(e) = remove_cgroup_tree(dir) {
                errors.push(e);
            }
        }
        {
            let mut top = lock(&TOP_DIR);
            top.users -= 1;
            if top.users == 0 && top.created {
                top.created = false;
                for dir in &self.cgroup_dirs {
                    // Fails harmlessly while another test process still uses it.
                    if let Some(parent) = dir.parent() {
                        let _ = fs::remove_dir(parent);
                    }
                }
            }
        }
        for e in &errors {
            notice(&format!("fleet {}: teardown: {e}", self.id));
        }
        let keep = std::env::var(KEEP_ENV).is_ok_and(|v| v == "1");
        if thread::panicking() || keep || !errors.is_empty() {
            notice(&format!(
                "fleet {}: kept {} (console logs of the nodes)",
                self.id,
                self.work_dir.display()
            ));
        } else {
            let _ = fs::remove_dir_all(&self.work_dir);
        }
        if !errors.is_empty() && !thread::panicking() {
            panic!("fleet {}: teardown failed: {}", self.id, errors.join("; "));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Node

/// One booted node. Dropping it stops it (as [`Node::stop`] does, without panicking).
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    name: String,
    machine: String,
    fleet_id: String,
    tools: Tools,
    nspawn_pid: u32,
    command_line: String,
    log_path: PathBuf,
    started: Instant,
    state: Mutex<NodeState>,
    cgroup_dirs: Vec<PathBuf>,
}

struct NodeState {
    /// The nspawn process; `None` once it has been reaped and the node cleaned up.
    child: Option<Child>,
    /// The node's init (PID 1 inside) and its PID namespace, once seen.
    init: Option<(u32, PathBuf)>,
    booted_in: Option<Duration>,
}

impl Node {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// nspawn's `--machine=` name, unique on this host: `hs-<pid>-<n>-<name>`.
    pub fn machine_name(&self) -> &str {
        &self.inner.machine
    }

    /// PID of the systemd-nspawn process the harness started.
    pub fn nspawn_pid(&self) -> u32 {
        self.inner.nspawn_pid
    }

    /// PID (on the host) of the node's systemd, PID 1 inside the node.
    pub fn init_pid(&self) -> u32 {
        self.inner.init_pid().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The node's own cgroup directories on the host, one per hierarchy
    /// (`.../hostset-test/<fleet>/<node>`); systemd's tree is below `payload/`.
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        &self.inner.cgroup_dirs
    }

    /// Time from starting nspawn to `systemctl is-system-running` = running/degraded.
    pub fn booted_in(&self) -> Option<Duration> {
        lock(&self.inner.state).booted_in
    }

    /// What the node printed on its console so far (boot and shutdown messages, nspawn's).
    pub fn console_log(&self) -> String {
        fs::read_to_string(&self.inner.log_path).unwrap_or_default()
    }

    pub fn is_running(&self) -> bool {
        !self.inner.is_stopped()
    }

    /// Runs `argv` inside the node (all its namespaces, a clean environment) under a 30 s
    /// `timeout`. A timed-out command exits with 124 (or 137 after the kill).
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.exec_with(argv, None, DEFAULT_EXEC_TIMEOUT)
    }

    /// [`Node::exec`] with its own time limit.
    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> Output {
        self.exec_with(argv, None, timeout)
    }

    /// Runs `argv` and returns its stdout; panics with both outputs unless it exits 0.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        if !out.status.success() {
            panic!(
                "node {}: {argv:?} failed: {}",
                self.inner.name,
                describe(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sh -c script` in the node.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// Runs `argv` in the node with `input` on its standard input.
    pub fn exec_with_input(&self, argv: &[&str], input: &[u8]) -> Output {
        self.exec_with(argv, Some(input), DEFAULT_EXEC_TIMEOUT)
    }

    fn exec_with(&self, argv: &[&str], input: Option<&[u8]>, timeout: Duration) -> Output {
        self.inner
            .exec(argv, input, timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `systemctl show UNIT -p PROP...` as a map (a property systemd does not know is absent).
    pub fn systemctl_show(&self, unit: &str, props: &[&str]) -> HashMap<String, String> {
        let mut argv = vec!["systemctl", "show", unit];
        let joined = props.join(",");
        if !props.is_empty() {
            argv.push("--property");
            argv.push(&joined);
        }
        let stdout = self.exec_ok(&argv);
        stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One property of a unit (`""` when absent).
    pub fn unit_property(&self, unit: &str, prop: &str) -> String {
        self.systemctl_show(unit, &[prop])
            .remove(prop)
            .unwrap_or_default()
    }

    /// `journalctl -b -u UNIT` (everything when `unit` is empty), for failure messages.
    pub fn journal(&self, unit: &str) -> String {
        let mut argv = vec!["journalctl", "-b", "--no-pager", "-o", "short-monotonic"];
        if !unit.is_empty() {
            argv.extend(["-u", unit]);
        }
        String::from_utf8_lossy(&self.exec(&argv).stdout).into_owned()
    }

    /// Polls `cond` (every 100 ms) until it holds or `timeout` passes; returns how long
    /// it took. For tests only: the product must not poll.
    pub fn wait_for(
        &self,
        mut cond: impl FnMut(&Node) -> bool,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            if cond(self) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(format!(
                    "node {}: condition still false after {:.1?}",
                    self.inner.name,
                    start.elapsed()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes `content` to `path` inside the node (its overlay, or a writable bind),
    /// creating parent directories; atomically, through a `.NAME.hostset-tmp` file in the
    /// same directory renamed over `path` (what editors and config management do).
    /// Goes through nsenter, so the node's symlinks resolve inside the node.
    pub fn write_file(&self, path: &str, content: impl AsRef<[u8]>) {
        assert!(path.starts_with('/'), "write_file: {path} is not absolute");
        let out = self.exec_with_input(
            &[
                "/bin/sh",
                "-c",
                "set -e; d=$(dirname \"$1\"); mkdir -p \"$d\"; \
                 t=\"$d/.$(basename \"$1\").hostset-tmp\"; cat > \"$t\"; mv -f \"$t\" \"$1\"",
                "sh",
                path,
            ],
            content.as_ref(),
        );
        if !out.status.success() {
            panic!("node {}: write {path}: {}", self.inner.name, describe(&out));
        }
    }

    /// The content of `path` inside the node, `None` when it does not exist.
    pub fn read_file(&self, path: &str) -> Option<String> {
        let out = self.exec(&[
            "/bin/sh",
            "-c",
            "[ -e \"$1\" ] || exit 3; cat -- \"$1\"",
            "sh",
            path,
        ]);
        match out.status.code() {
            Some(0) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
            Some(3) => None,
            _ => panic!("node {}: read {path}: {}", self.inner.name, describe(&out)),
        }
    }

    /// Removes `path` inside the node (no error when it is absent).
    pub fn remove_file(&self, path: &str) {
        let out = self.exec(&["rm", "-f", "--", path]);
        if !out.status.success() {
            panic!("node {}: rm {path}: {}", self.inner.name, describe(&out));
        }
    }

    /// Shuts the node down (SIGTERM to nspawn; see the module docs for the escalation) and
    /// removes its cgroups.
    /// Panics when that fails. Idempotent.
    pub fn stop(&self) {
        self.inner.begin_stop();
        if let Err(e) = self.inner.finish_stop() {
            panic!("{e}");
        }
    }

    fn wait_booted(&self, timeout: Duration) -> Result<(), String> {
        let inner = &self.inner;
        let fail = |why: String| -> Result<(), String> {
            inner.begin_stop();
            let stop = inner
                .finish_stop()
                .err()
                .map(|e| format!("\n(and: {e})"))
                .unwrap_or_default();
            let log = fs::read_to_string(&inner.log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "node {} (fleet {}) did not boot: {why}\ncommand: {}\n--- console (last 60 lines) ---\n{}{stop}",
                inner.name,
                inner.fleet_id,
                inner.command_line,
                tail.join("\n")
            ))
        };
        let deadline = inner.started + timeout;
        let mut last = String::from("(no answer yet)");
        loop {
            if let Some(status) = inner.exited() {
                return fail(format!("systemd-nspawn exited early ({status})"));
            }
            if lock(&inner.state).init.is_none() {
                inner.find_init();
            }
            if lock(&inner.state).init.is_some() {
                match inner.exec(
                    &["systemctl", "is-system-running"],
                    None,
                    Duration::from_secs(5),
                ) {
                    Ok(out) => {
                        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                        if state == "running" || state == "degraded" {
                            let elapsed = inner.started.elapsed();
                            lock(&inner.state).booted_in = Some(elapsed);
                            if state == "degraded" {
                                let failed = inner.exec(
                                    &["systemctl", "--failed", "--no-legend"],
                                    None,
                                    Duration::from_secs(5),
                                );
                                let failed = failed
                                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                                    .unwrap_or_default();
                                notice(&format!(
                                    "node {} booted degraded; failed units:\n{failed}",
                                    inner.name
                                ));
                            }
                            return Ok(());
                        }
                        last = format!("is-system-running said {:?} ({})", state, describe(&out));
                    }
                    Err(e) => last = e,
                }
            }
            if Instant::now() >= deadline {
                return fail(format!("not running after {timeout:?}; last check: {last}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.inner.begin_stop();
        if let Err(e) = self.inner.finish_stop() {
            notice(&e);
        }
    }
}

impl NodeInner {
    fn is_stopped(&self) -> bool {
        lock(&self.state).child.is_none()
    }

    /// `Some(exit status)` when nspawn has exited (reaping it, but keeping the state for
    /// [`NodeInner::finish_stop`] to clean up).
    fn exited(&self) -> Option<String> {
        let mut state = lock(&self.state);
        let child = state.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// Looks for the node's init: the child of nspawn in another PID namespace.
    fn find_init(&self) {
        let own_ns = pid_ns(std::process::id());
        for pid in children_of(self.nspawn_pid) {
            if let Some(ns) = pid_ns(pid)
                && Some(&ns) != own_ns.as_ref()
            {
                lock(&self.state).init = Some((pid, ns));
                return;
            }
        }
    }

    fn init_pid(&self) -> Result<u32, String> {
        let state = lock(&self.state);
        if state.child.is_none() {
            return Err(format!("node {} is stopped", self.name));
        }
        state
            .init
            .as_ref()
            .map(|(pid, _)| *pid)
            .ok_or_else(|| format!("node {} has no init yet", self.name))
    }

    fn exec(
        &self,
        argv: &[&str],
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, String> {
        let pid = self.init_pid()?;
        let secs = format!("{:.3}s", timeout.as_secs_f64());
        let mut cmd = Command::new(&self.tools.timeout);
        cmd.args(["--kill-after=5s", &secs])
            .arg(&self.tools.nsenter)
            .args(["-t", &pid.to_string(), "-a", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", NODE_PATH)
            .env("LC_ALL", "C")
            .env("TERM", "dumb")
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "cat")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("node {}: cannot run nsenter: {e}", self.name))?;
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("piped stdin");
            let input = input.to_vec();
            // Written from a thread so that a large input cannot deadlock against output.
            let writer = thread::spawn(move || stdin.write_all(&input));
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            let _ = writer.join();
            return Ok(out);
        }
        child
            .wait_with_output()
            .map_err(|e| format!("node {}: {argv:?}: {e}", self.name))
    }

    /// Sends SIGTERM to nspawn (once), which shuts the node's systemd down.
    fn begin_stop(&self) {
        let mut state = lock(&self.state);
        if let Some(child) = state.child.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            // Still our unreaped child, so the PID cannot have been reused.
            signal(self.nspawn_pid, "TERM");
        }
    }

    /// Waits for nspawn to exit (escalating after [`STOP_GRACE`]), then removes the
    /// node's cgroup directories.
    fn finish_stop(&self) -> Result<(), String> {
        let mut state = lock(&self.state);
        let Some(mut child) = state.child.take() else {
            return Ok(());
        };
        let mut errors = Vec::new();
        // nspawn turns the first SIGTERM into SIGRTMIN+3 for the node's systemd (a clean
        // shutdown) and a second one into immediate termination. Early in boot, before
        // systemd has installed its handlers, the kernel drops that SIGRTMIN+3 (a
        // namespace's init only gets the signals it handles), so a node that never booted
        // gets its second SIGTERM after a second; a booted one after STOP_GRACE.
        let booted = state.booted_in.is_some();
        let start = Instant::now();
        let second_term = start
            + if booted {
                STOP_GRACE
            } else {
                Duration::from_secs(1)
            };
        let kill_at = second_term + Duration::from_secs(5);
        let mut sent_second = false;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < kill_at => {
                    if !sent_second && Instant::now() >= second_term {
                        if booted {
                            errors.push(format!(
                                "did not shut down within {STOP_GRACE:?} of SIGTERM; terminated"
                            ));
                        }
                        signal(self.nspawn_pid, "TERM");
                        sent_second = true;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    errors.push("systemd-nspawn ignored SIGTERM twice; killed".into());
                    // The node's init first, if it is still the same process: killing PID 1
                    // of a PID namespace ends every process in it. nspawn alone would leave
                    // the node running.
                    if let Some((pid, ns)) = &state.init
                        && pid_ns(*pid).as_ref() == Some(ns)
                    {
                        signal(*pid, "KILL");
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Err(e) => {
                    errors.push(format!("waiting for systemd-nspawn: {e}"));
                    break;
                }
            }
        }
        // With nspawn gone, the node's init is gone too (nspawn waits for it); wait briefly
        // in case it was killed above.
        if let Some((pid, ns)) = &state.init {
            let _ = wait_until(Duration::from_secs(5), || pid_ns(*pid).as_ref() != Some(ns));
        }
        for dir in &self.cgroup_dirs {
            if let Err(e) = remove_cgroup_tree(dir) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "node {} (fleet {}): {}",
                self.name,
                self.fleet_id,
                errors.join("; ")
            ))
        }
    }
}

/// Exit status and both outputs of a command, for failure messages.
pub fn describe(out: &Output) -> String {
    let mut s = format!("{}", out.status);
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end();
        if !text.is_empty() {
            s.push_str(&format!("\n{name}: {text}"));
        }
    }
    s
}

/// Reads all of a file, for tests that look at host-side state; `""` when absent.
pub fn read_host(path: impl AsRef<Path>) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}
