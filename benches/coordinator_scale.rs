//! COORDINATOR SCALE: the real `hostset-coordinator` binary on loopback under simulated agents.
//!
//! `cargo bench --bench coordinator_scale` (add `-- --quick` for a short run). Cargo builds
//! the coordinator binary with the bench profile (release) and hands its path to this
//! harness-less bench (`CARGO_BIN_EXE_hostset-coordinator`).
//!
//! # What runs
//!
//! For each fleet size (1,000, 10,000 and 50,000 nodes by default; `HOSTSET_BENCH_SCALES=1000,10000`
//! to choose), a fresh coordinator process with its own state directory (redb, on the
//! machine's disk under the system temp directory, so commits really fsync), a spec directory
//! of 20 daemonsets with varied placement (nodeSelector, required node affinity with In,
//! NotIn, DoesNotExist and ORed terms, tolerations, an OnDelete canary with
//! `minReadySeconds`), one node-bound agent token per node (the secure deployment: a token
//! may only report for its node) and a read token. Every simulated node has its own labels
//! and taints, so placement differs per node; its report says what the agent would: the
//! daemonsets that should run there as `active/running` (a few not ready, a few outdated, a
//! few misscheduled), the others `absent` with the placement's reasons.
//!
//! The load generator is this process: a tokio multi-thread runtime and a minimal HTTP/1.1
//! client over keep-alive TCP connections (the real protocol: JSON bodies, bearer tokens),
//! `CONNECTIONS` of them, each owning the nodes `i % CONNECTIONS == c` so a node's requests
//! never race each other. It shares the machine's cores with the coordinator: every number
//! is "coordinator + load generator on the same cores", and the table shows the CPU each
//! used. The client is hand-rolled (no reqwest) so that it takes as little of that CPU as
//! possible; it is not a second implementation of the protocol's meaning, only of HTTP
//! framing.
//!
//! Phases, per fleet size:
//!
//! 1. **Registration**: every node sends its first full report, closed loop (`CONNECTIONS`
//!    in flight).
//! 2. **Ladders** (open loop: each connection sends on a fixed schedule whatever the answers
//!    do, and latency counts from the *scheduled* send time, so a server that falls behind
//!    shows its queueing instead of slowing the generator down — no coordinated omission):
//!    heartbeats only; full reports only (each one a new sequence, so a real store); and the
//!    agents' steady-state mix, 5 heartbeats to 1 full report (an agent sends its metrics in
//!    a full report every 6th heartbeat interval). Offered load climbs until the coordinator
//!    no longer keeps up (achieved < 90 % of offered, or p99 over 500 ms): that step is past
//!    the knee and the ladder stops.
//! 3. **Reads**: `GET /v1/daemonsets` and `GET /v1/daemonsets/{name}` (describe), idle and
//!    under a background mix load.
//! 4. **Crash check**: SIGKILL the coordinator, start it again on the same state directory,
//!    and send every node a heartbeat carrying the sequence of its last *answered* full
//!    report: each must be accepted (204), i.e. every answered report was in the database.
//!    (A SIGKILL keeps the page cache: this checks that answers wait for the commit, not
//!    that the disk honours fsync.) The restart time is reported, and the restart time after
//!    a clean stop (SIGTERM).
//!
//! `sustained` is the highest offered rate served in full (achieved ≥ 95 % of offered, no
//! errors) with p99 ≤ 20 ms. The coordinator's RSS is read from `/proc` after each phase.
//! Each step also shows the CPU the coordinator, the load generator and everything else on
//! the machine used (from `/proc`), and the coordinator's CPU time per answered request: a
//! step disturbed by other work shows it, and the per-request cost stays comparable.
//!
//! Output: a markdown table on stdout and `target/bench/coordinator.json` (the runner's
//! `benches/run` schema: `targets`, `scenarios`, `markdown`, and every step under `scales`).
//!
//! Knobs: `--quick` (or `HOSTSET_BENCH_QUICK=1`: 1k and 10k nodes, shorter steps),
//! `HOSTSET_BENCH_SCALES=1000,10000`, `HOSTSET_BENCH_CONNECTIONS` (default 250),
//! `HOSTSET_BENCH_GETS` (idle reads per kind, default 50).
//!
//! Limits: loopback only, every phase bounded in requests and time; a full run takes about
//! three minutes on 2 cores. The coordinator refuses spec files not owned by root, so the
//! bench needs root (elsewhere it says so and writes a JSON marked skipped).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostset::report::{Condition, DaemonSetReport, NodeInfo, NodeReport};
use hostset::spec::{DaemonSet, Labels, Node, Taint};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Daemonsets in the spec directory.
const DAEMONSETS: usize = 20;
/// The mix: one full report per this many requests.
const MIX_FULL_EVERY: u64 = 6;
/// A connection this far behind its schedule skips sends (counted as missed).
const MAX_LAG: Duration = Duration::from_secs(1);
/// Past the knee: achieved below this share of offered...
const SATURATED_SHARE: f64 = 0.90;
/// ... or p99 above this.
const SATURATED_P99: Duration = Duration::from_millis(500);
/// The latency objective of `sustained`.
const SLO_P99: Duration = Duration::from_millis(20);
const READ_TOKEN: &str = "bench-read-token-0123456789abcdef";

const HEARTBEAT_LADDER: &[f64] = &[
    5e3, 10e3, 20e3, 30e3, 40e3, 50e3, 60e3, 70e3, 80e3, 100e3, 120e3,
];
const FULL_LADDER: &[f64] = &[1e3, 2e3, 5e3, 10e3, 15e3, 20e3, 30e3, 40e3, 50e3, 60e3];
const MIX_LADDER: &[f64] = &[5e3, 10e3, 20e3, 30e3, 40e3, 50e3, 60e3, 70e3, 80e3, 100e3];

// ---------------------------------------------------------------------------------------------
// Options

struct Opts {
    scales: Vec<usize>,
    step: Duration,
    connections: usize,
    quick: bool,
    out: PathBuf,
    work: PathBuf,
}

impl Opts {
    fn from_env() -> Opts {
        let quick = std::env::args().any(|a| a == "--quick")
            || std::env::var("HOSTSET_BENCH_QUICK").is_ok_and(|v| v == "1");
        let scales = std::env::var("HOSTSET_BENCH_SCALES")
            .ok()
            .map(|s| {
                s.split(',')
                    .filter_map(|n| n.trim().replace('_', "").parse().ok())
                    .collect()
            })
            .unwrap_or_else(|| {
                if quick {
                    vec![1_000, 10_000]
                } else {
                    vec![1_000, 10_000, 50_000]
                }
            });
        let step = Duration::from_millis(if quick { 800 } else { 1_500 });
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        Opts {
            scales,
            step,
            connections: std::env::var("HOSTSET_BENCH_CONNECTIONS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(250),
            quick,
            out: target.join("bench").join("coordinator.json"),
            work: std::env::temp_dir()
                .join(format!("hostset-bench-coordinator-{}", std::process::id())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fleet: specs, nodes, their reports

fn spec_files() -> Vec<(String, String)> {
    let specs: [(&str, &str); DAEMONSETS] = [
        (
            "node-exporter",
            "[[ports]]\nname = \"metrics\"\nport = 9100\n",
        ),
        ("log-collector", "[[tolerations]]\noperator = \"Exists\"\n"),
        (
            "disk-monitor",
            "nodeSelector = { disktype = \"ssd\" }\n\
             [[nodeSelectorTerms]]\nmatchExpressions = [{ key = \"kubernetes.io/arch\", \
             operator = \"In\", values = [\"amd64\", \"arm64\"] }]\n\
             [[tolerations]]\nkey = \"maintenance\"\noperator = \"Exists\"\n\
             effect = \"NoExecute\"\ntolerationSeconds = 300\n",
        ),
        (
            "gpu-monitor",
            "[[nodeSelectorTerms]]\nmatchExpressions = [{ key = \"nvidia.com/gpu.present\", \
             operator = \"In\", values = [\"true\"] }]\n\
             [[tolerations]]\nkey = \"nvidia.com/gpu\"\noperator = \"Exists\"\n\
             effect = \"NoSchedule\"\n",
        ),
        (
            "proxy-z0",
            "nodeSelector = { \"topology.kubernetes.io/zone\" = \"z0\" }\n",
        ),
        (
            "proxy-z1",
            "nodeSelector = { \"topology.kubernetes.io/zone\" = \"z1\" }\n",
        ),
        ("web-agent", "nodeSelector = { role = \"web\" }\n"),
        (
            "db-backup",
            "nodeSelector = { role = \"db\" }\n[[tolerations]]\nkey = \"dedicated\"\n\
             operator = \"Equal\"\nvalue = \"db\"\neffect = \"NoSchedule\"\n",
        ),
        ("cache-warmer", "nodeSelector = { role = \"cache\" }\n"),
        (
            "batch-runner",
            "nodeSelector = { role = \"batch\" }\n[[nodeSelectorTerms]]\n\
             matchExpressions = [{ key = \"kubernetes.io/arch\", operator = \"NotIn\", \
             values = [\"arm64\"] }]\n",
        ),
        (
            "arm-probe",
            "nodeSelector = { \"kubernetes.io/arch\" = \"arm64\" }\n",
        ),
        ("hdd-scrubber", "nodeSelector = { disktype = \"hdd\" }\n"),
        (
            "rack-agent",
            "[[nodeSelectorTerms]]\nmatchExpressions = [{ key = \"rack\", operator = \"In\", \
             values = [\"r0\", \"r1\", \"r2\", \"r3\", \"r4\", \"r5\", \"r6\", \"r7\", \"r8\", \
             \"r9\"] }]\n",
        ),
        (
            "not-z3",
            "[[nodeSelectorTerms]]\nmatchExpressions = [{ key = \
             \"topology.kubernetes.io/zone\", operator = \"NotIn\", values = [\"z3\"] }]\n",
        ),
        (
            "cpu-only",
            "[[nodeSelectorTerms]]\nmatchExpressions = [{ key = \"nvidia.com/gpu.present\", \
             operator = \"DoesNotExist\" }]\n",
        ),
        ("frontend-cache", "nodeSelector = { tier = \"frontend\" }\n"),
        (
            "security-agent",
            "[[tolerations]]\noperator = \"Exists\"\n[[ports]]\nname = \"api\"\nport = 7443\n",
        ),
        (
            "ssd-web",
            "nodeSelector = { disktype = \"ssd\", role = \"web\" }\n",
        ),
        (
            "z2-or-db",
            "[[nodeSelectorTerms]]\nmatchExpressions = [{ key = \
             \"topology.kubernetes.io/zone\", operator = \"In\", values = [\"z2\"] }]\n\
             [[nodeSelectorTerms]]\nmatchExpressions = [{ key = \"role\", operator = \"In\", \
             values = [\"db\"] }]\n",
        ),
        (
            "canary",
            "nodeSelector = { canary = \"true\" }\nminReadySeconds = 30\n\
             updateStrategy = { type = \"OnDelete\" }\n",
        ),
    ];
    specs
        .iter()
        .map(|(name, extra)| {
            let text = format!(
                "name = \"{name}\"\nselector.matchLabels = {{ app = \"{name}\" }}\n\
                 template.labels = {{ app = \"{name}\" }}\n\
                 command = [\"/usr/bin/{name}\", \"--serve\"]\n\
                 resources.limits = {{ cpu = \"100m\", memory = \"64Mi\" }}\n{extra}"
            );
            (format!("{name}.toml"), text)
        })
        .collect()
}

fn node_name(i: usize) -> String {
    format!("node-{i:06}")
}

/// Node `i` as placement sees it: labels and taints vary with `i`.
fn sim_node(i: usize) -> Node {
    let name = node_name(i);
    let mut labels = Labels::new();
    let mut label = |k: &str, v: &str| {
        labels.insert(k.to_string(), v.to_string());
    };
    label("kubernetes.io/hostname", &name);
    label(
        "kubernetes.io/arch",
        if i.is_multiple_of(5) {
            "arm64"
        } else {
            "amd64"
        },
    );
    label("topology.kubernetes.io/zone", &format!("z{}", i % 4));
    label("disktype", if i.is_multiple_of(3) { "ssd" } else { "hdd" });
    label("role", ["web", "db", "cache", "batch", "web", "web"][i % 6]);
    label("rack", &format!("r{}", (i / 7) % 40));
    label("tier", if i % 4 == 1 { "frontend" } else { "backend" });
    if i.is_multiple_of(10) {
        label("canary", "true");
    }
    let gpu = i % 20 == 7;
    if gpu {
        label("nvidia.com/gpu.present", "true");
    }
    let mut taints = Vec::new();
    let mut taint = |k: &str, v: &str, e: &str| {
        taints.push(Taint {
            key: k.into(),
            value: v.into(),
            effect: e.into(),
        })
    };
    if gpu {
        taint("nvidia.com/gpu", "present", "NoSchedule");
    }
    if i.is_multiple_of(53) {
        taint("dedicated", "db", "NoSchedule");
    }
    if i.is_multiple_of(97) {
        taint("maintenance", "true", "NoExecute");
    }
    let unschedulable = i.is_multiple_of(101);
    if unschedulable {
        taint("node.kubernetes.io/unschedulable", "", "NoSchedule");
    }
    Node {
        name,
        labels,
        taints,
        unschedulable,
    }
}

/// The report the agent of node `i` would send (sequence 0: the bench splices the real one).
fn sim_report(i: usize, specs: &[(DaemonSet, String)], now: u64) -> NodeReport {
    let node = sim_node(i);
    let daemonsets = specs
        .iter()
        .enumerate()
        .map(|(d, (ds, revision))| {
            let verdict = hostset::placement::evaluate(ds, &node);
            // A few nodes run a daemon they should not (misscheduled), a few are not ready,
            // a few run an outdated revision.
            let runs = verdict.should_run || (i + d).is_multiple_of(89);
            let ready = runs && !(i + d).is_multiple_of(37);
            let outdated = runs && (i + 3 * d).is_multiple_of(23);
            let unit = hostset::unit::unit_name(&ds.name);
            DaemonSetReport {
                name: ds.name.clone(),
                file: format!("/etc/hostset/daemonsets.d/{}.toml", ds.name),
                held: false,
                should_run: verdict.should_run,
                should_continue_running: verdict.should_continue_running,
                reasons: verdict.reasons,
                unit: if runs { unit } else { String::new() },
                state: match (runs, ready) {
                    (false, _) => "absent",
                    (true, true) => "active/running",
                    (true, false) => "activating/start",
                }
                .to_string(),
                current_revision: if !runs {
                    String::new()
                } else if outdated {
                    "b4d9f0c2x1".to_string()
                } else {
                    revision.clone()
                },
                desired_revision: revision.clone(),
                evict_in_seconds: None,
                last_error: String::new(),
                ready,
                restarts: u32::from(runs && (i + d).is_multiple_of(13)),
                main_pid: if runs {
                    1000 + (i * 7 + d) as u32 % 60000
                } else {
                    0
                },
                started_at: runs.then(|| now - 3600 + (i % 3000) as u64),
                memory_bytes: runs.then(|| 10_000_000 + ((i * 31 + d * 17) % 50_000_000) as u64),
                cpu_nanoseconds: runs.then(|| 1_000_000_000 + (i * 13 + d) as u64 * 1_000_003),
                ready_since: None,
                readiness: String::new(),
                ..Default::default()
            }
        })
        .collect();
    let condition = |kind: &str, status: &str, reason: &str| Condition {
        kind: kind.into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
    };
    NodeReport {
        agent_version: "0.1.0".into(),
        agent_instance: format!("{:016x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        sequence: 0,
        generated_at: now,
        node: NodeInfo {
            name: node.name.clone(),
            labels: node.labels,
            taints: node.taints.iter().map(ToString::to_string).collect(),
            unschedulable: node.unschedulable,
            // Documentation ranges: strings in a report, never connected to.
            addresses: vec![
                format!("198.51.{}.{}", (i / 250) % 250, i % 250 + 1),
                format!("2001:db8::{:x}", i + 1),
            ],
            conditions: vec![
                condition("Ready", "True", "AgentReady"),
                condition("MemoryPressure", "False", "MemoryAvailable"),
                condition("DiskPressure", "False", "DiskAvailable"),
            ],
        },
        daemonsets,
        diagnostics: Vec::new(),
        errors: Vec::new(),
        git: None,
    }
}

/// One simulated node: its token, and its report as JSON split around `sequence`.
struct SimNode {
    name: String,
    token: String,
    instance: String,
    head: Vec<u8>,
    tail: Vec<u8>,
    /// The sequence of the last answered full report (0: none yet). Only the connection that
    /// owns the node touches it.
    seq: AtomicU64,
}

struct Fleet {
    nodes: Vec<SimNode>,
    daemonsets: Vec<String>,
    report_bytes: usize,
}

fn build_fleet(n: usize, spec_dir: &Path) -> Fleet {
    let mut specs: Vec<(DaemonSet, String)> = Vec::new();
    for (file, _) in spec_files() {
        let (items, _) = hostset::spec::read_daemonsets(&spec_dir.join(&file))
            .into_result()
            .unwrap_or_else(|d| panic!("{file}: {d:?}"));
        for ds in items {
            let revision = hostset::unit::revision(&ds.template);
            specs.push((ds, revision));
        }
    }
    assert_eq!(specs.len(), DAEMONSETS);
    let now = unix_now();
    let mut report_bytes = 0;
    let nodes = (0..n)
        .map(|i| {
            let report = sim_report(i, &specs, now);
            let text = serde_json::to_string(&report).expect("a report serializes");
            let marker = "\"sequence\":0,";
            let at = text.find(marker).expect("sequence field") + marker.len() - 2;
            report_bytes += text.len();
            SimNode {
                name: report.node.name.clone(),
                token: format!("bench-agent-{i:06}-{:016x}", (i as u64) ^ 0x5a5a_1234_abcd),
                instance: report.agent_instance.clone(),
                head: text.as_bytes()[..at].to_vec(),
                tail: text.as_bytes()[at + 1..].to_vec(),
                seq: AtomicU64::new(0),
            }
        })
        .collect();
    Fleet {
        nodes,
        daemonsets: specs.into_iter().map(|(ds, _)| ds.name).collect(),
        report_bytes: report_bytes / n.max(1),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Requests and a minimal HTTP/1.1 keep-alive client

fn full_request(buf: &mut Vec<u8>, node: &SimNode, seq: u64) {
    let seq = seq.to_string();
    let len = node.head.len() + seq.len() + node.tail.len();
    buf.clear();
    let _ = write!(
        Bytes(buf),
        "POST /v1/reports HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {len}\r\n\r\n",
        node.token
    );
    buf.extend_from_slice(&node.head);
    buf.extend_from_slice(seq.as_bytes());
    buf.extend_from_slice(&node.tail);
}

fn heartbeat_request(buf: &mut Vec<u8>, node: &SimNode, seq: u64, now: u64) {
    let body = format!(
        "{{\"agentInstance\":\"{}\",\"sequence\":{seq},\"generatedAt\":{now}}}",
        node.instance
    );
    buf.clear();
    let _ = write!(
        Bytes(buf),
        "POST /v1/nodes/{}/heartbeat HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        node.name,
        node.token,
        body.len()
    );
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {READ_TOKEN}\r\n\r\n")
        .into_bytes()
}

/// `fmt::Write` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

struct Response {
    status: u16,
    body_len: usize,
}

struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 << 10),
        }
    }

    /// One request and its whole answer; reconnects once when a kept-alive connection was
    /// closed under it.
    async fn send(&mut self, request: &[u8]) -> std::io::Result<Response> {
        let reused = self.stream.is_some();
        match self.round_trip(request).await {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.stream = None;
                self.round_trip(request).await
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn round_trip(&mut self, request: &[u8]) -> std::io::Result<Response> {
        use std::io::{Error, ErrorKind};
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(request).await?;
        let buf = &mut self.buf;
        buf.clear();
        let head_end = loop {
            if let Some(p) = find(buf, b"\r\n\r\n") {
                break p + 4;
            }
            read_more(stream, buf).await?;
        };
        let head = std::str::from_utf8(&buf[..head_end])
            .map_err(|_| Error::new(ErrorKind::InvalidData, "response head is not UTF-8"))?;
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no status"))?;
        let mut length = 0usize;
        let mut chunked = false;
        let mut close = false;
        for line in head.split("\r\n").skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.eq_ignore_ascii_case("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }
        let body_len = if chunked {
            let mut at = head_end;
            let mut total = 0;
            loop {
                let line_end = loop {
                    if let Some(p) = find(&buf[at..], b"\r\n") {
                        break at + p;
                    }
                    read_more(stream, buf).await?;
                };
                let size_text = std::str::from_utf8(&buf[at..line_end]).unwrap_or("");
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or(""), 16)
                    .map_err(|_| Error::new(ErrorKind::InvalidData, "bad chunk size"))?;
                let need = line_end + 2 + size + 2;
                while buf.len() < need {
                    read_more(stream, buf).await?;
                }
                at = need;
                total += size;
                if size == 0 {
                    break total;
                }
            }
        } else {
            while buf.len() < head_end + length {
                read_more(stream, buf).await?;
            }
            length
        };
        if close {
            self.stream = None;
        }
        Ok(Response { status, body_len })
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.reserve(64 << 10);
    if stream.read_buf(buf).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Load

#[derive(Debug, Clone, Copy, PartialEq)]
enum Traffic {
    Heartbeats,
    Full,
    Mix,
}

impl Traffic {
    fn label(self) -> &'static str {
        match self {
            Traffic::Heartbeats => "heartbeats",
            Traffic::Full => "full reports",
            Traffic::Mix => "mix 5:1",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Traffic::Heartbeats => "heartbeats",
            Traffic::Full => "full_reports",
            Traffic::Mix => "mix",
        }
    }
}

/// One connection and the nodes it owns (`i % connections == id`).
struct Worker {
    id: usize,
    of: usize,
    conn: Conn,
    cursor: usize,
    request: Vec<u8>,
}

impl Worker {
    fn owned(&self, n: usize) -> usize {
        (n + self.of - 1 - self.id) / self.of
    }

    fn next_node(&mut self, n: usize) -> usize {
        let owned = self.owned(n).max(1);
        let i = self.id + (self.cursor % owned) * self.of;
        self.cursor += 1;
        i
    }

    /// Send one request of `traffic` for the next node: whether it was a full report, and
    /// the answer's status (`None`: no answer).
    async fn one(
        &mut self,
        fleet: &Fleet,
        traffic: Traffic,
        tally: &mut Tally,
    ) -> Option<(bool, u16)> {
        let full = match traffic {
            Traffic::Heartbeats => false,
            Traffic::Full => true,
            Traffic::Mix => self.cursor as u64 % MIX_FULL_EVERY == MIX_FULL_EVERY - 1,
        };
        let i = self.next_node(fleet.nodes.len());
        let node = &fleet.nodes[i];
        let seq = node.seq.load(Ordering::Relaxed);
        if full {
            full_request(&mut self.request, node, seq + 1);
        } else {
            heartbeat_request(&mut self.request, node, seq, unix_now());
        }
        match self.conn.send(&self.request).await {
            Ok(r) => {
                if r.status == 204 && full {
                    node.seq.store(seq + 1, Ordering::Relaxed);
                }
                if r.status != 204 {
                    tally.bad_status += 1;
                    tally.last_bad = r.status;
                }
                Some((full, r.status))
            }
            Err(_) => {
                tally.io_errors += 1;
                None
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    ok_full: u64,
    ok_heartbeats: u64,
    bad_status: u64,
    last_bad: u16,
    io_errors: u64,
    missed: u64,
    latencies_us: Vec<u32>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.ok_full += o.ok_full;
        self.ok_heartbeats += o.ok_heartbeats;
        self.bad_status += o.bad_status;
        self.last_bad = self.last_bad.max(o.last_bad);
        self.io_errors += o.io_errors;
        self.missed += o.missed;
        self.latencies_us.extend(o.latencies_us);
    }

    fn ok(&self) -> u64 {
        self.ok_full + self.ok_heartbeats
    }

    fn errors(&self) -> u64 {
        self.bad_status + self.io_errors
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

/// Milliseconds.
fn percentiles(lat: &mut [u32]) -> Percentiles {
    if lat.is_empty() {
        return Percentiles::default();
    }
    lat.sort_unstable();
    let at = |q: f64| {
        let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 1000.0
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        max: f64::from(lat[lat.len() - 1]) / 1000.0,
    }
}

/// CPU seconds used so far by `pid` (utime + stime, USER_HZ = 100 on Linux).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Busy CPU seconds of the whole machine so far (`/proc/stat`: all but idle and iowait).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = f.iter().take(8).sum();
    let idle = f.get(3).unwrap_or(&0.0) + f.get(4).unwrap_or(&0.0);
    (total - idle) / 100.0
}

/// CPU used during a phase, in cores: the coordinator, this process, everything else on the
/// machine (other work sharing the cores disturbs the numbers: this shows how much).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    coordinator: f64,
    loadgen: f64,
    others: f64,
    /// Coordinator CPU seconds.
    coordinator_seconds: f64,
}

struct CpuMeter<'a> {
    pid: &'a str,
    start: (f64, f64, f64),
    wall: Instant,
}

impl CpuMeter<'_> {
    fn start(pid: &str) -> CpuMeter<'_> {
        CpuMeter {
            pid,
            start: (
                cpu_seconds(pid),
                cpu_seconds("self"),
                machine_busy_seconds(),
            ),
            wall: Instant::now(),
        }
    }

    fn stop(&self) -> Cpu {
        let secs = self.wall.elapsed().as_secs_f64();
        let c = cpu_seconds(self.pid) - self.start.0;
        let g = cpu_seconds("self") - self.start.1;
        let all = machine_busy_seconds() - self.start.2;
        Cpu {
            coordinator: c / secs,
            loadgen: g / secs,
            others: ((all - c - g) / secs).max(0.0),
            coordinator_seconds: c,
        }
    }
}

/// (VmRSS, VmHWM) of `pid`, MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Step {
    traffic: Traffic,
    offered: f64,
    achieved: f64,
    achieved_full: f64,
    achieved_heartbeats: f64,
    lat: Percentiles,
    errors: u64,
    last_bad: u16,
    missed: u64,
    cpu: Cpu,
    /// Coordinator CPU microseconds per answered request.
    cpu_us_per_request: f64,
}

impl Step {
    fn served(&self) -> bool {
        self.achieved >= 0.95 * self.offered && self.errors == 0
    }

    fn meets_slo(&self) -> bool {
        self.served() && self.lat.p99 <= SLO_P99.as_secs_f64() * 1000.0
    }

    fn saturated(&self) -> bool {
        self.achieved < SATURATED_SHARE * self.offered
            || self.lat.p99 > SATURATED_P99.as_secs_f64() * 1000.0
            || self.errors > 0
    }

    fn json(&self) -> Value {
        json!({
            "traffic": self.traffic.key(),
            "offered_per_s": self.offered.round(),
            "achieved_per_s": self.achieved.round(),
            "achieved_full_reports_per_s": self.achieved_full.round(),
            "achieved_heartbeats_per_s": self.achieved_heartbeats.round(),
            "p50_ms": round3(self.lat.p50),
            "p99_ms": round3(self.lat.p99),
            "max_ms": round3(self.lat.max),
            "errors": self.errors,
            "missed": self.missed,
            "coordinator_cpu_cores": round3(self.cpu.coordinator),
            "coordinator_cpu_us_per_request": round3(self.cpu_us_per_request),
            "loadgen_cpu_cores": round3(self.cpu.loadgen),
            "other_processes_cpu_cores": round3(self.cpu.others),
            "meets_slo": self.meets_slo(),
        })
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Open loop: each worker sends at `rate / workers` per second on a fixed schedule for
/// `duration`; latency from the scheduled time.
async fn open_loop(
    fleet: &Arc<Fleet>,
    workers: Vec<Worker>,
    traffic: Traffic,
    rate: f64,
    duration: Duration,
    coordinator_pid: &str,
) -> (Vec<Worker>, Step) {
    let n_workers = workers.len();
    let interval = Duration::from_secs_f64(n_workers as f64 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let end = start + duration;
    let meter = CpuMeter::start(coordinator_pid);
    let handles: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let fleet = fleet.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut next = start + interval.mul_f64(w.id as f64 / n_workers as f64);
                while next < end {
                    let now = tokio::time::Instant::now();
                    if now < next {
                        tokio::time::sleep_until(next).await;
                    } else if now - next > MAX_LAG {
                        let behind = (now - next).as_secs_f64() / interval.as_secs_f64();
                        let skip = behind.floor().max(1.0) as u32;
                        tally.missed += u64::from(skip);
                        next += interval * skip;
                        continue;
                    }
                    let scheduled = next;
                    next += interval;
                    if let Some((full, 204)) = w.one(&fleet, traffic, &mut tally).await {
                        if full {
                            tally.ok_full += 1;
                        } else {
                            tally.ok_heartbeats += 1;
                        }
                        tally.latencies_us.push(micros(scheduled.elapsed()));
                    }
                }
                (w, tally)
            })
        })
        .collect();
    let mut workers = Vec::with_capacity(n_workers);
    let mut tally = Tally::default();
    for h in handles {
        let (w, t) = h.await.expect("worker");
        workers.push(w);
        tally.merge(t);
    }
    workers.sort_by_key(|w| w.id);
    let cpu = meter.stop();
    let secs = duration.as_secs_f64();
    let lat = percentiles(&mut tally.latencies_us);
    let step = Step {
        traffic,
        offered: rate,
        achieved: tally.ok() as f64 / secs,
        achieved_full: tally.ok_full as f64 / secs,
        achieved_heartbeats: tally.ok_heartbeats as f64 / secs,
        lat,
        errors: tally.errors(),
        last_bad: tally.last_bad,
        missed: tally.missed,
        cpu,
        cpu_us_per_request: cpu.coordinator_seconds * 1e6 / tally.ok().max(1) as f64,
    };
    (workers, step)
}

/// Closed loop: every node's first full report, `workers` in flight.
async fn register(
    fleet: &Arc<Fleet>,
    workers: Vec<Worker>,
    coordinator_pid: &str,
) -> (Vec<Worker>, Value, String) {
    let meter = CpuMeter::start(coordinator_pid);
    let handles: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let fleet = fleet.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for _ in 0..w.owned(fleet.nodes.len()) {
                    let t = Instant::now();
                    if let Some((_, 204)) = w.one(&fleet, Traffic::Full, &mut tally).await {
                        tally.ok_full += 1;
                        tally.latencies_us.push(micros(t.elapsed()));
                    }
                }
                w.cursor = 0;
                (w, tally)
            })
        })
        .collect();
    let mut workers = Vec::new();
    let mut tally = Tally::default();
    for h in handles {
        let (w, t) = h.await.expect("worker");
        workers.push(w);
        tally.merge(t);
    }
    workers.sort_by_key(|w| w.id);
    let secs = meter.wall.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let lat = percentiles(&mut tally.latencies_us);
    let rate = tally.ok_full as f64 / secs;
    let per_request = cpu.coordinator_seconds * 1e6 / tally.ok().max(1) as f64;
    assert_eq!(
        tally.errors(),
        0,
        "registration failed: {} errors (last status {})",
        tally.errors(),
        tally.last_bad
    );
    let row = format!(
        "| {} | first full reports (closed loop) | – | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {:.0} | {:.2} | {:.2} |",
        fleet.nodes.len(),
        rate,
        lat.p50,
        lat.p99,
        lat.max,
        tally.errors(),
        cpu.coordinator,
        per_request,
        cpu.loadgen,
        cpu.others
    );
    let v = json!({
        "nodes": fleet.nodes.len(),
        "seconds": round3(secs),
        "reports_per_s": rate.round(),
        "p50_ms": round3(lat.p50),
        "p99_ms": round3(lat.p99),
        "max_ms": round3(lat.max),
        "coordinator_cpu_cores": round3(cpu.coordinator),
        "coordinator_cpu_us_per_request": round3(per_request),
        "loadgen_cpu_cores": round3(cpu.loadgen),
        "other_processes_cpu_cores": round3(cpu.others),
    });
    (workers, v, row)
}

/// Timed GETs of `paths`, one at a time, until `count` requests or `budget` elapsed, after
/// one untimed GET (the connection, the server's first blocking thread).
async fn timed_gets(
    addr: SocketAddr,
    paths: &[String],
    count: usize,
    budget: Duration,
) -> (Percentiles, usize, usize) {
    let mut conn = Conn::new(addr);
    conn.send(&get_request(&paths[0])).await.expect("GET");
    let started = Instant::now();
    let mut lat = Vec::new();
    let mut bytes = 0;
    let mut i = 0;
    while i < count && (i < 3 || started.elapsed() < budget) {
        let req = get_request(&paths[i % paths.len()]);
        let t = Instant::now();
        let r = conn.send(&req).await.expect("GET");
        assert_eq!(r.status, 200, "GET {}", paths[i % paths.len()]);
        lat.push(micros(t.elapsed()));
        bytes = bytes.max(r.body_len);
        i += 1;
    }
    (percentiles(&mut lat), i, bytes)
}

// ---------------------------------------------------------------------------------------------
// The coordinator process

struct Coordinator {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Coordinator {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn start(dir: &Path) -> Coordinator {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("address").port()
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.join("coordinator.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_hostset-coordinator"))
            .arg("--config")
            .arg(dir.join("coordinator.toml"))
            .args(["--listen", &addr.to_string(), "--log-format", "text"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--spec-dir")
            .arg(dir.join("specs"))
            .arg("--agent-token-file")
            .arg(dir.join("agent-tokens"))
            .arg("--read-token-file")
            .arg(dir.join("read-tokens"))
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hostset-coordinator");
        Coordinator {
            child,
            addr,
            dir: dir.to_path_buf(),
        }
    }

    /// Wait until `/healthz` answers; the time it took.
    async fn ready(&mut self) -> Duration {
        let t = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "hostset-coordinator exited ({status}); its log:\n{}",
                    std::fs::read_to_string(self.dir.join("coordinator.log")).unwrap_or_default()
                );
            }
            let mut conn = Conn::new(self.addr);
            if let Ok(r) = conn.send(&get_request("/healthz")).await
                && r.status == 200
            {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "hostset-coordinator not ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&mut self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal);
        let _ = self.child.wait();
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn write_private(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The coordinator's files for a fleet of `n`: specs, tokens, an empty configuration.
fn lay_out(dir: &Path, n: usize) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("specs")).expect("mkdir");
    for d in [dir, &dir.join("specs")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for (file, text) in spec_files() {
        write_private(&dir.join("specs").join(file), &text, 0o644);
    }
    let mut tokens = String::with_capacity(n * 48);
    for i in 0..n {
        let _ = writeln!(
            tokens,
            "bench-agent-{i:06}-{:016x} {}",
            (i as u64) ^ 0x5a5a_1234_abcd,
            node_name(i)
        );
    }
    write_private(&dir.join("agent-tokens"), &tokens, 0o600);
    write_private(&dir.join("read-tokens"), &format!("{READ_TOKEN}\n"), 0o600);
    write_private(&dir.join("coordinator.toml"), "", 0o644);
}

// ---------------------------------------------------------------------------------------------
// One fleet size

struct ScaleResult {
    json: Value,
    rows: Vec<String>,
    summary: String,
}

fn fmt_rate(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0}"))
}

async fn run_scale(opts: &Opts, n: usize) -> ScaleResult {
    let dir = opts.work.join(format!("n{n}"));
    lay_out(&dir, n);
    let fleet = Arc::new(build_fleet(n, &dir.join("specs")));
    let mut coord = Coordinator::start(&dir);
    let startup = coord.ready().await;
    let pid = coord.pid();
    let child_pid = coord.child.id();
    eprintln!(
        "coordinator_scale: {n} nodes, reports of {} bytes, coordinator pid {pid} on {}",
        fleet.report_bytes, coord.addr
    );
    let connections = opts.connections.min(n);
    let mut workers: Vec<Worker> = (0..connections)
        .map(|id| Worker {
            id,
            of: connections,
            conn: Conn::new(coord.addr),
            cursor: 0,
            request: Vec::with_capacity(fleet.report_bytes + 512),
        })
        .collect();

    let mut rows = Vec::new();
    let (w, registration, row) = register(&fleet, workers, &pid).await;
    workers = w;
    rows.push(row);
    let rss_registered = rss_mib(child_pid);

    // Reads, idle: every node known, no writes.
    eprintln!("  {n} reads, idle");
    let list = vec!["/v1/daemonsets".to_string()];
    let describe: Vec<String> = fleet
        .daemonsets
        .iter()
        .map(|d| format!("/v1/daemonsets/{d}"))
        .collect();
    let gets = std::env::var("HOSTSET_BENCH_GETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if opts.quick { 20 } else { 50 });
    let (list_idle, list_n, list_bytes) =
        timed_gets(coord.addr, &list, gets, Duration::from_secs(5)).await;
    let (describe_idle, describe_n, describe_bytes) =
        timed_gets(coord.addr, &describe, gets, Duration::from_secs(5)).await;

    // Ladders.
    let mut ladders = serde_json::Map::new();
    let mut sustained: Vec<(Traffic, Option<f64>, Option<Step>)> = Vec::new();
    for (traffic, ladder) in [
        (Traffic::Heartbeats, HEARTBEAT_LADDER),
        (Traffic::Full, FULL_LADDER),
        (Traffic::Mix, MIX_LADDER),
    ] {
        let mut steps = Vec::new();
        let mut best: Option<Step> = None;
        let mut peak: f64 = 0.0;
        for &rate in ladder {
            let (w, step) = open_loop(&fleet, workers, traffic, rate, opts.step, &pid).await;
            workers = w;
            eprintln!(
                "  {n} {} offered {rate:.0}/s: achieved {:.0}/s p50 {:.2} ms p99 {:.2} ms, errors {}{}",
                traffic.label(),
                step.achieved,
                step.lat.p50,
                step.lat.p99,
                step.errors,
                if step.errors > 0 {
                    format!(" (last status {})", step.last_bad)
                } else {
                    String::new()
                }
            );
            rows.push(format!(
                "| {n} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {:.0} | {:.2} | {:.2} |",
                traffic.label(),
                step.offered,
                step.achieved,
                step.lat.p50,
                step.lat.p99,
                step.lat.max,
                step.errors,
                step.cpu.coordinator,
                step.cpu_us_per_request,
                step.cpu.loadgen,
                step.cpu.others
            ));
            steps.push(step.json());
            peak = peak.max(step.achieved);
            let saturated = step.saturated();
            if step.meets_slo() {
                best = Some(step);
            }
            // Let a backlog drain before the next step or ladder.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if saturated {
                break;
            }
        }
        let best_rate = best.as_ref().map(|s| s.achieved);
        ladders.insert(
            traffic.key().into(),
            json!({
                "steps": steps,
                "sustained_per_s": best_rate.map(f64::round),
                "sustained_p99_ms": best.as_ref().map(|s| round3(s.lat.p99)),
                "sustained_full_reports_per_s": best.as_ref().map(|s| s.achieved_full.round()),
                "sustained_heartbeats_per_s": best.as_ref().map(|s| s.achieved_heartbeats.round()),
                "peak_achieved_per_s": peak.round(),
            }),
        );
        sustained.push((traffic, best_rate, best));
    }

    // Reads under a background mix load at a quarter of the mix's sustained rate.
    let background = sustained
        .iter()
        .find(|(t, _, _)| *t == Traffic::Mix)
        .and_then(|(_, r, _)| *r)
        .map_or(2_000.0, |r| (r / 4.0).max(1_000.0));
    let load = {
        let fleet = fleet.clone();
        let pid = pid.clone();
        let duration = Duration::from_secs(if opts.quick { 2 } else { 4 });
        tokio::spawn(async move {
            open_loop(&fleet, workers, Traffic::Mix, background, duration, &pid).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let budget = Duration::from_secs(if opts.quick { 1 } else { 3 });
    let (list_load, _, _) = timed_gets(coord.addr, &list, 1000, budget / 2).await;
    let (describe_load, _, _) = timed_gets(coord.addr, &describe, 1000, budget / 2).await;
    let (w, bg_step) = load.await.expect("background load");
    workers = w;
    drop(workers);
    let (rss, hwm) = rss_mib(child_pid);

    // Crash check: SIGKILL, restart, every node's last answered report must be there.
    coord.signal(nix::sys::signal::Signal::SIGKILL);
    let mut coord = Coordinator::start(&dir);
    let restart = coord.ready().await;
    let (rss_restarted, _) = rss_mib(coord.child.id());
    let recovered = {
        let fleet = fleet.clone();
        let addr = coord.addr;
        let per = connections;
        let handles: Vec<_> = (0..per)
            .map(|c| {
                let fleet = fleet.clone();
                tokio::spawn(async move {
                    let mut conn = Conn::new(addr);
                    let mut buf = Vec::new();
                    let mut ok = 0usize;
                    for i in (c..fleet.nodes.len()).step_by(per) {
                        let node = &fleet.nodes[i];
                        heartbeat_request(
                            &mut buf,
                            node,
                            node.seq.load(Ordering::Relaxed),
                            unix_now(),
                        );
                        if conn.send(&buf).await.is_ok_and(|r| r.status == 204) {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        let mut ok = 0;
        for h in handles {
            ok += h.await.expect("check");
        }
        ok
    };
    // And after a clean stop (SIGTERM: the database is closed properly, no repair).
    coord.signal(nix::sys::signal::Signal::SIGTERM);
    let mut coord = Coordinator::start(&dir);
    let clean_restart = coord.ready().await;
    coord.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = std::fs::remove_dir_all(&dir);

    let get = |p: Percentiles| format!("{:.1} / {:.1}", p.p50, p.p99);
    let rate_of = |t: Traffic| sustained.iter().find(|s| s.0 == t).and_then(|s| s.1);
    let summary = format!(
        "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} ({:.0} peak) | {:.1} s, {recovered}/{n} | {:.1} s |",
        fmt_rate(registration["reports_per_s"].as_f64()),
        fmt_rate(rate_of(Traffic::Heartbeats)),
        fmt_rate(rate_of(Traffic::Full)),
        fmt_rate(rate_of(Traffic::Mix)),
        get(list_idle),
        get(list_load),
        get(describe_idle),
        get(describe_load),
        rss,
        hwm,
        restart.as_secs_f64(),
        clean_restart.as_secs_f64(),
    );
    let pj = |p: Percentiles| json!({"p50_ms": round3(p.p50), "p99_ms": round3(p.p99), "max_ms": round3(p.max)});
    let json = json!({
        "nodes": n,
        "daemonsets": DAEMONSETS,
        "connections": connections,
        "report_bytes": fleet.report_bytes,
        "startup_s": round3(startup.as_secs_f64()),
        "registration": registration,
        "ladders": ladders,
        "get_daemonsets": {
            "idle": pj(list_idle), "idle_requests": list_n,
            "under_load": pj(list_load), "response_bytes": list_bytes,
        },
        "describe_daemonset": {
            "idle": pj(describe_idle), "idle_requests": describe_n,
            "under_load": pj(describe_load), "response_bytes": describe_bytes,
        },
        "background_load": bg_step.json(),
        "rss_mib": {
            "after_registration": round3(rss_registered.0),
            "end": round3(rss),
            "peak": round3(hwm),
            "after_restart": round3(rss_restarted),
        },
        "clean_restart_s": round3(clean_restart.as_secs_f64()),
        "crash_check": {
            "restart_s": round3(restart.as_secs_f64()),
            "nodes_recovered": recovered,
            "nodes": n,
        },
    });
    ScaleResult {
        json,
        rows,
        summary,
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let opts = Opts::from_env();
    if let Some(dir) = opts.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "coordinator_scale: skipped: hostset-coordinator trusts only root-owned spec files, \
             and this bench is not running as root"
        );
        let v = json!({"bench": "coordinator_scale", "skipped": "not root"});
        let _ = std::fs::write(
            &opts.out,
            serde_json::to_string_pretty(&v).unwrap_or_default(),
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let results: Vec<ScaleResult> = runtime.block_on(async {
        let mut results = Vec::new();
        for &n in &opts.scales {
            results.push(run_scale(&opts, n).await);
        }
        results
    });
    let _ = std::fs::remove_dir_all(&opts.work);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Coordinator scale ({DAEMONSETS} daemonsets, real binary on loopback, {cores} cores \
         shared with the load generator)\n"
    );
    let _ = writeln!(
        out,
        "| nodes | first reports/s | heartbeats/s | full reports/s | mix 5:1/s | \
         GET /v1/daemonsets p50/p99 ms idle | … under load | describe p50/p99 ms idle | \
         … under load | RSS MiB | SIGKILL, restart: time, nodes recovered | SIGTERM, restart |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        let _ = writeln!(out, "{}", r.summary);
    }
    let _ = writeln!(
        out,
        "\nRates are sustained: the highest offered rate served in full with p99 ≤ {} ms \
         (open loop, latency from the scheduled send). The target's \"reports/s\" is the mix: \
         what agents send in the steady state (5 heartbeats, then a full report with the \
         metrics); heartbeats only and full reports only bound it from above and below.\n",
        SLO_P99.as_millis()
    );
    let _ = writeln!(
        out,
        "| nodes | traffic | offered/s | achieved/s | p50 ms | p99 ms | max ms | errors | \
         coordinator CPU (cores) | coordinator CPU µs/request | load generator CPU (cores) | \
         other processes CPU (cores) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        for row in &r.rows {
            let _ = writeln!(out, "{row}");
        }
    }
    print!("{out}");

    let targets = results.iter().find(|r| r.json["nodes"] == 10_000).map(|r| {
        let l = &r.json["ladders"];
        let hb = l["heartbeats"]["sustained_per_s"].as_f64().unwrap_or(0.0);
        let mix = l["mix"]["sustained_per_s"].as_f64().unwrap_or(0.0);
        let full = l["full_reports"]["sustained_per_s"].as_f64().unwrap_or(0.0);
        let get = r.json["get_daemonsets"]["idle"]["p99_ms"]
            .as_f64()
            .unwrap_or(f64::MAX);
        // "Reports/s" is what agents send in the steady state: 5 heartbeats, then a full report
        // carrying the metrics (the agent's rule, agent::report::METRICS_EVERY), i.e. the mix.
        // Heartbeats alone and full reports alone are shown beside it, not counted as targets.
        json!({
            "reports_per_s_at_10k_p99_20ms": {
                "target": 50_000, "mix_5_heartbeats_to_1_full": mix,
                "heartbeats_only": hb, "full_reports_only": full,
                "met": mix > 50_000.0,
            },
            "get_daemonsets_ms_at_10k": {
                "target": 20, "p99_ms": get, "met": get < 20.0,
            },
        })
    });
    // One row per read and fleet size for the runner's table (BENCHMARKS.md).
    let mut scenarios = Vec::new();
    for r in &results {
        let n = r.json["nodes"].as_u64().unwrap_or(0);
        for (key, what) in [
            ("get_daemonsets", "GET /v1/daemonsets"),
            ("describe_daemonset", "GET /v1/daemonsets/{name}"),
        ] {
            let idle = &r.json[key]["idle"];
            let mut row = json!({
                "name": format!("{what}, {n} nodes × {DAEMONSETS} daemonsets, idle"),
                "median_ms": idle["p50_ms"],
                "p99_ms": idle["p99_ms"],
            });
            if key == "get_daemonsets" && n == 10_000 {
                row["target"] = json!({"metric": "p99_ms", "max": 20, "text": "p99 < 20 ms"});
            }
            scenarios.push(row);
        }
    }
    let v = json!({
        "bench": "coordinator_scale",
        "scenarios": scenarios,
        "cores": cores,
        "quick": opts.quick,
        "seconds": round3(started.elapsed().as_secs_f64()),
        "note": "coordinator and load generator share the cores; see benches/coordinator_scale.rs",
        "targets": targets,
        "scales": results.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
        "markdown": out,
    });
    std::fs::write(
        &opts.out,
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
    )
    .expect("write the JSON");
    eprintln!(
        "coordinator_scale: {:.0} s; wrote {}",
        started.elapsed().as_secs_f64(),
        opts.out.display()
    );
}
