//! The real `hostset-coordinator` on host loopback for end-to-end tests, stopped by its PID
//! on drop, and the real `hostset` CLI against it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::fleet::{Node, NodeOpts, wait_until};

pub const AGENT_TOKEN: &str = "agent-token-0123456789abcdef";
pub const READ_TOKEN: &str = "read-token-0123456789abcdef";
pub const OPERATOR_TOKEN: &str = "operator-token-0123456789abcdef";

/// Write a file only its owner may read (token files).
pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Write a spec file atomically (a temporary file and a rename), mode 644.
pub fn write_spec(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where agents find their specs on a node.
pub const SPECS: &str = "/etc/hostset/daemonsets.d";

/// A node running the agent under its unit file: this build's binaries, the shared spec
/// directory `specs` and the agent configuration `config` bound in.
pub fn agent_node(name: &str, specs: &Path, config: &Path) -> NodeOpts {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("units/hostsetd.service");
    NodeOpts::new(name)
        .bind_ro(env!("CARGO_BIN_EXE_hostsetd"), "/usr/bin/hostsetd")
        .bind_ro(env!("CARGO_BIN_EXE_hostset"), "/usr/bin/hostset")
        .bind_ro(unit, "/etc/systemd/system/hostsetd.service")
        .bind_ro(specs, SPECS)
        .bind_ro(config, "/etc/hostset/agent.toml")
}

/// The agent token in place, then the agent ([`start_hostsetd`]).
pub fn start_agent(node: &Node) {
    node.write_file("/etc/hostset/token", AGENT_TOKEN);
    node.exec_ok(&["chmod", "600", "/etc/hostset/token"]);
    start_hostsetd(node);
}

/// `systemctl start hostsetd` on `node`; returns once it is ready (Type=notify: READY=1 is
/// sent after the first pass), and panics with the journal when it did not start.
pub fn start_hostsetd(node: &Node) {
    let out = node.exec(&["systemctl", "start", "hostsetd"]);
    assert!(
        out.status.success(),
        "{}: hostsetd did not start: {}\n{}",
        node.name(),
        String::from_utf8_lossy(&out.stderr),
        node.journal("hostsetd")
    );
}

/// The coordinator process on the host.
pub struct Coordinator {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub specs: PathBuf,
    grace: String,
}

impl Coordinator {
    /// Token files in `dir` (agent, read, operator), then the coordinator on `port` over the
    /// spec directory `specs`, with a grace period of `grace` seconds.
    pub fn start(dir: &Path, specs: &Path, port: u16, grace: u64) -> Coordinator {
        write_private(&dir.join("agent-tokens"), &format!("{AGENT_TOKEN}\n"));
        write_private(
            &dir.join("read-tokens"),
            &format!("{READ_TOKEN}\n{OPERATOR_TOKEN} operator\n"),
        );
        write_private(&dir.join("read-token"), READ_TOKEN);
        write_private(&dir.join("operator-token"), OPERATOR_TOKEN);
        Self::spawn(dir, specs, port, grace.to_string())
    }

    fn spawn(dir: &Path, specs: &Path, port: u16, grace: String) -> Coordinator {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Self::log_path(dir))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hostset-coordinator"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--spec-dir")
            .arg(specs)
            .arg("--agent-token-file")
            .arg(dir.join("agent-tokens"))
            .arg("--read-token-file")
            .arg(dir.join("read-tokens"))
            .args(["--grace-period", &grace, "--log-format", "text"])
            .env("HOSTSET_CONFIG_DIR", dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start hostset-coordinator");
        let c = Coordinator {
            child,
            port,
            dir: dir.to_path_buf(),
            specs: specs.to_path_buf(),
            grace,
        };
        wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .unwrap_or_else(|e| panic!("coordinator not listening: {e}\n{}", c.log()));
        c
    }

    fn log_path(dir: &Path) -> PathBuf {
        dir.join(format!("coordinator-{}.log", std::process::id()))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(Self::log_path(&self.dir)).unwrap_or_default()
    }

    /// Stop it and start it again on the same state.
    pub fn restart(mut self) -> Coordinator {
        self.stop();
        let (dir, specs, port, grace) = (
            self.dir.clone(),
            self.specs.clone(),
            self.port,
            self.grace.clone(),
        );
        std::mem::forget(self);
        Self::spawn(&dir, &specs, port, grace)
    }

    /// SIGTERM to our child, then wait for it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// `hostset --coordinator URL --token-file FILE ARGS...` with the read token (or the
    /// operator token), as it ran.
    pub fn cli(&self, operator: bool, args: &[&str]) -> Output {
        let token = if operator {
            "operator-token"
        } else {
            "read-token"
        };
        Command::new(env!("CARGO_BIN_EXE_hostset"))
            .args(["--coordinator", &self.url(), "--token-file"])
            .arg(self.dir.join(token))
            .args(args)
            .output()
            .unwrap()
    }

    /// [`Coordinator::cli`] with the read token, which must succeed; its stdout as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(false, args);
        assert!(
            out.status.success(),
            "hostset {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop();
    }
}
