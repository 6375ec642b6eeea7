//! Reporting to the coordinator: what the agent adds to its [`NodeReport`] about the host
//! (addresses, conditions, its instance), and the [`Reporter`] task that delivers reports.
//!
//! # Protocol (the coordinator's side: `crate::coordinator`)
//! - `POST {url}/v1/reports`, a JSON [`NodeReport`] → 204. 409: stale (the coordinator has a
//!   newer report of this instance): ignored.
//! - `POST {url}/v1/nodes/{name}/heartbeat`, a JSON [`Heartbeat`] → 204, or 409 (also 404):
//!   "send a full report".
//! - `DELETE {url}/v1/nodes/{name}` → 204 or 404: the node is gone (`hostsetd goodbye`).
//! - Every request carries `Authorization: Bearer <token>` when a `token_file` is configured.
//!
//! # Guarantees
//! - The reconcile loop never waits for the network: it hands each report to the reporter
//!   through a `tokio::sync::watch` channel, which keeps only the latest one. A coordinator
//!   that is down or slow delays reports, never the daemons.
//! - A full report goes out when the content changed since the last delivered one
//!   (`generatedAt`, `sequence` and the metrics `memoryBytes`/`cpuNanoseconds` aside), when
//!   the coordinator asks for one (409 on a heartbeat), and after every failed attempt (so a
//!   coordinator that comes back gets the latest state, not a heartbeat about an older one).
//!   Otherwise a heartbeat goes out every `heartbeat_interval` (±10 % jitter).
//! - Metrics change all the time and emit no signal: a change in them alone is sent with a
//!   full report in place of a heartbeat at most every [`METRICS_EVERY`] heartbeat intervals
//!   (one minute by default), so idle nodes send heartbeats, not reports.
//! - The metrics are read when they are about to be sent, not on a timer of their own: at
//!   the heartbeat that ends such a window, the reporter asks the agent's loop (the channel
//!   given to [`Reporter::with_refresh`]) to read every unit's numbers again, waits for that
//!   at most [`REFRESH_WAIT`], and sends whatever report is latest then. An idle agent
//!   therefore wakes for the heartbeat and for nothing else.
//! - `sequence` increases with every full report sent (every attempt), starting at 1 for
//!   each agent instance; a heartbeat carries the sequence of the last delivered report.
//! - Failures (network errors, timeouts, 5xx, 429, 401/403, other 4xx) are retried with
//!   exponential backoff, 1 s doubling to 60 s. 401 re-reads the token file first; 401/403
//!   are logged as errors naming the token file. 400/413 (the coordinator refuses this
//!   report) are logged with the coordinator's reason and retried after the backoff, or at
//!   once when the report changes. A problem is logged when it starts or changes, and the
//!   recovery once; not every retry.
//! - TLS: rustls with the ring provider. `ca_file` replaces the system's CA bundle (only
//!   those CAs are trusted); `cert_file` + `key_file` present a client certificate (mTLS).
//!   Unreadable or invalid files are errors when the reporter is built (agent start).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::api::ApiError;
use crate::node::HostFacts;
use crate::placement::taints::{TAINT_NODE_DISK_PRESSURE, TAINT_NODE_MEMORY_PRESSURE};
use crate::report::{Condition, Heartbeat, NodeReport};
use crate::spec::Taint;

use super::config::{Config, Coordinator};

/// First retry delay after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Metrics-only changes are sent at most once per this many heartbeat intervals.
pub const METRICS_EVERY: u32 = 6;
/// How long the reporter waits for the agent's loop to read the metrics again (the loop may
/// be in the middle of a pass); after that it goes on with the report it has.
pub const REFRESH_WAIT: Duration = Duration::from_secs(2);

/// What the reporter sends to the agent's loop to have the units' memory and CPU read again:
/// the loop answers on it once the report with the fresh numbers (if any changed) is
/// published.
pub type RefreshRequest = tokio::sync::oneshot::Sender<()>;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an error body goes into a log line.
const REASON_MAX: usize = 300;
/// Where distributions keep the system's CA bundle, tried in order for https:// without
/// `ca_file`.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

// ---------------------------------------------------------------------------------------------
// What the agent adds to a report

/// A random identifier for this agent start: 16 bytes of `/dev/urandom`, as 32 hex digits.
pub fn new_instance_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom (a bare chroot): std's randomly keyed hasher stands in.
        bytes[..8].copy_from_slice(&random_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&random_u64().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random number, good enough for jitter.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// `d` ± 10 %.
fn jitter(d: Duration) -> Duration {
    let unit = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(0.9 + 0.2 * unit)
}

/// The IPv4 addresses of this host's interfaces in the text of `/proc/net/fib_trie`: the
/// leaves with a `/32 host LOCAL` entry (as `ip route show table local` lists them).
/// Loopback and link-local addresses are left out; the result is sorted and deduplicated.
pub fn parse_fib_trie(text: impl BufRead) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let Ok(line) = line else { break };
        let t = line.trim_start();
        if let Some(addr) = t.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
        } else if t.starts_with("+-- ") || !line.starts_with(' ') {
            // An inner node or a table header ("Main:", "Local:").
            leaf = None;
        } else if t.starts_with("/32 host LOCAL")
            && let Some(a) = leaf
            && !a.is_loopback()
            && !a.is_link_local()
            && !a.is_unspecified()
        {
            out.push(a);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The IPv6 addresses in the text of `/proc/net/if_inet6` (`ADDR IFINDEX PREFIXLEN SCOPE
/// FLAGS NAME`), without loopback, link-local (scope 0x20) and duplicate-address-detection
/// failures; sorted.
pub fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    const SCOPE_HOST: u32 = 0x10;
    const SCOPE_LINK: u32 = 0x20;
    const IFA_F_DADFAILED: u32 = 0x08;
    let mut out: Vec<Ipv6Addr> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let hex = f.next()?;
            let _ifindex = f.next()?;
            let _prefix = f.next()?;
            let scope = u32::from_str_radix(f.next()?, 16).ok()?;
            let flags = u32::from_str_radix(f.next()?, 16).ok()?;
            let addr = Ipv6Addr::from(
                u128::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 32)?,
            );
            let usable = scope != SCOPE_HOST
                && scope != SCOPE_LINK
                && flags & IFA_F_DADFAILED == 0
                && !addr.is_loopback()
                && !addr.is_unspecified()
                && (addr.segments()[0] & 0xffc0) != 0xfe80;
            usable.then_some(addr)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// This host's addresses (IPv4 first, then IPv6, each sorted): from `/proc/net/fib_trie` and
/// `/proc/net/if_inet6` of the agent's network namespace. Unreadable files give none.
pub fn host_addresses() -> Vec<String> {
    let v4 = std::fs::File::open("/proc/net/fib_trie")
        .map(|f| parse_fib_trie(std::io::BufReader::new(f)))
        .unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/if_inet6")
        .map(|t| parse_if_inet6(&t))
        .unwrap_or_default();
    v4.into_iter()
        .map(IpAddr::V4)
        .chain(v6.into_iter().map(IpAddr::V6))
        .map(|a| a.to_string())
        .collect()
}

/// The node's conditions, kubelet-style: `Ready` (the agent is up and reporting), then
/// `MemoryPressure` and `DiskPressure` from the condition taints in force.
pub fn node_conditions(condition_taints: &[Taint]) -> Vec<Condition> {
    let has = |key: &str| condition_taints.iter().any(|t| t.key == key);
    let condition = |kind: &str, on: bool, yes: (&str, &str), no: (&str, &str)| {
        let (reason, message) = if on { yes } else { no };
        Condition {
            kind: kind.to_string(),
            status: if on { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
        }
    };
    vec![
        condition(
            "Ready",
            true,
            ("AgentReady", "hostsetd is posting ready status"),
            ("", ""),
        ),
        condition(
            "MemoryPressure",
            has(TAINT_NODE_MEMORY_PRESSURE),
            (
                "AgentHasInsufficientMemory",
                "hostsetd has insufficient memory available (thresholds.memory_available or \
                 thresholds.memory_psi_some_avg10); the node is tainted \
                 node.kubernetes.io/memory-pressure:NoSchedule",
            ),
            (
                "AgentHasSufficientMemory",
                "hostsetd has sufficient memory available",
            ),
        ),
        condition(
            "DiskPressure",
            has(TAINT_NODE_DISK_PRESSURE),
            (
                "AgentHasDiskPressure",
                "hostsetd has disk pressure (thresholds.disk_available_percent of \
                 thresholds.disk_path); the node is tainted \
                 node.kubernetes.io/disk-pressure:NoSchedule",
            ),
            ("AgentHasNoDiskPressure", "hostsetd has no disk pressure"),
        ),
    ]
}

/// `r` without what changes on every report (`generatedAt`, `sequence`, the git poll's times
/// and count) and, unless
/// `with_metrics`, without the metrics (`memoryBytes`, `cpuNanoseconds`).
fn essence(r: &NodeReport, with_metrics: bool) -> NodeReport {
    let mut r = r.clone();
    r.generated_at = 0;
    r.sequence = 0;
    // Every poll of the git repository: only what it found counts.
    if let Some(g) = &mut r.git {
        g.attempted_at = None;
        g.fetched_at = None;
        g.fetches = 0;
    }
    if !with_metrics {
        for ds in &mut r.daemonsets {
            ds.memory_bytes = None;
            ds.cpu_nanoseconds = None;
        }
    }
    r
}

/// True when `a` and `b` say the same thing, `generatedAt`, `sequence` and the metrics aside.
pub fn same_content(a: &NodeReport, b: &NodeReport) -> bool {
    essence(a, false) == essence(b, false)
}

fn same_metrics(a: &NodeReport, b: &NodeReport) -> bool {
    essence(a, true) == essence(b, true)
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------------
// The client

/// Why a [`Reporter`] cannot be built. Every message names the file or key.
#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    #[error("coordinator.url \"{url}\": {message}")]
    Url { url: String, message: String },
    #[error("{}: cannot read {what}: {source}", file.display())]
    Read {
        file: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", file.display())]
    Invalid { file: PathBuf, message: String },
    #[error(
        "no CA certificates for https: none of {} exists; set [coordinator] ca_file",
        SYSTEM_CA_BUNDLES.join(", ")
    )]
    NoCaBundle,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// How one request went.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// 2xx.
    Done,
    /// 409.
    Conflict,
    /// 404, with the coordinator's reason.
    NotFound(String),
    /// 401 or 403, with the coordinator's reason.
    Auth(StatusCode, String),
    /// 400, 413 or 422: the coordinator refuses this content.
    Rejected(StatusCode, String),
    /// Anything else: a network error, a timeout, 5xx, 429, another status.
    Failed(String),
}

/// What [`Reporter::goodbye`] heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    /// 204: the coordinator forgot the node.
    Removed,
    /// 404: the coordinator did not know it.
    Unknown,
}

/// The agent's client of the coordinator. See the [module docs](self).
pub struct Reporter {
    client: reqwest::Client,
    base: reqwest::Url,
    token_file: Option<PathBuf>,
    token: Option<String>,
    /// The token file's problem, last time it was read (logged on change).
    token_problem: Option<String>,
    heartbeat_interval: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    /// Where the coordinator's directives go (the agent's loop reads them).
    control: watch::Sender<Control>,
    /// The body of the last successful answer.
    answer_body: Option<(StatusCode, Vec<u8>)>,
    /// The agent's loop, asked to read the metrics again when they are due.
    refresh: Option<tokio::sync::mpsc::Sender<RefreshRequest>>,
}

/// What the agent knows of the coordinator's will: the directives of its last answer, and
/// whether it answers at all. Read by the agent's loop to gate rolling updates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    /// A coordinator is configured: rolling updates wait for its slots.
    pub configured: bool,
    /// The last exchange with the coordinator succeeded.
    pub reachable: bool,
    /// What the coordinator said last (kept while it cannot be reached).
    pub directives: crate::rollout::Directives,
    /// Why the coordinator cannot be reached, when it cannot.
    pub problem: String,
}

/// How long a directives poll may be held by the coordinator.
const POLL_WAIT: Duration = Duration::from_secs(20);

/// Install rustls' ring provider as the process default, once (reqwest's
/// `-no-provider` features use the default provider).
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Already installed by someone else in this process: fine, theirs is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn read_file(file: &Path, what: &'static str) -> Result<Vec<u8>, ReporterError> {
    std::fs::read(file).map_err(|source| ReporterError::Read {
        file: file.to_path_buf(),
        what,
        source,
    })
}

impl Reporter {
    /// A reporter for `[coordinator]`: the HTTP client with its TLS material, and the token
    /// (a missing or unreadable token file is logged and read again before each request
    /// until it is there).
    pub fn new(c: &Coordinator) -> Result<Reporter, ReporterError> {
        let url_error = |message: String| ReporterError::Url {
            url: c.url.clone(),
            message,
        };
        let mut base = reqwest::Url::parse(&c.url).map_err(|e| url_error(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(url_error("must be http:// or https://".into()));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(url_error("has no host".into()));
        }
        base.set_query(None);
        base.set_fragment(None);
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("hostsetd/", env!("CARGO_PKG_VERSION")));
        let roots = match &c.ca_file {
            Some(file) => Some((file.clone(), read_file(file, "the CA certificates")?)),
            None if base.scheme() == "https" => {
                let found = SYSTEM_CA_BUNDLES
                    .iter()
                    .map(Path::new)
                    .find(|p| p.is_file())
                    .ok_or(ReporterError::NoCaBundle)?;
                Some((
                    found.to_path_buf(),
                    read_file(found, "the system CA bundle")?,
                ))
            }
            None => None,
        };
        if let Some((file, pem)) = roots {
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ReporterError::Invalid {
                    file: file.clone(),
                    message: format!("not PEM certificates: {e}"),
                }
            })?;
            if certs.is_empty() {
                return Err(ReporterError::Invalid {
                    file,
                    message: "holds no PEM certificate".into(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&c.cert_file, &c.key_file) {
            let mut pem = read_file(cert, "the client certificate")?;
            pem.push(b'\n');
            pem.extend(read_file(key, "the client key")?);
            let identity =
                reqwest::Identity::from_pem(&pem).map_err(|e| ReporterError::Invalid {
                    file: cert.clone(),
                    message: format!(
                        "with {}: not a PEM certificate and private key: {e}",
                        key.display()
                    ),
                })?;
            builder = builder.identity(identity);
        }
        let client = builder
            .build()
            .map_err(|e| ReporterError::Client(format!("{e:#}")))?;
        if base.scheme() == "http" && c.token_file.is_some() {
            warn!(url = %c.url, "the coordinator's token is sent in clear text over http://");
        }
        let mut reporter = Reporter {
            client,
            base,
            token_file: c.token_file.clone(),
            token: None,
            token_problem: None,
            heartbeat_interval: c.heartbeat_interval,
            control: watch::Sender::new(Control {
                configured: true,
                ..Control::default()
            }),
            answer_body: None,
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
            refresh: None,
        };
        reporter.reload_token();
        Ok(reporter)
    }

    /// Retry delays from `min` doubling to `max` instead of 1 s to 60 s (tests).
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Reporter {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// Ask `loop_` to read the metrics again when they are due (see the
    /// [module docs](self)); without it, the reporter sends the numbers it is given.
    pub fn with_refresh(mut self, loop_: tokio::sync::mpsc::Sender<RefreshRequest>) -> Reporter {
        self.refresh = Some(loop_);
        self
    }

    /// Ask the agent's loop for fresh metrics; wait for its answer at most [`REFRESH_WAIT`].
    async fn refresh_metrics(&self) {
        let Some(tx) = &self.refresh else {
            return;
        };
        let (reply, answered) = tokio::sync::oneshot::channel();
        let asked = async {
            if tx.send(reply).await.is_ok() {
                let _ = answered.await;
            }
        };
        if tokio::time::timeout(REFRESH_WAIT, asked).await.is_err() {
            debug!("the agent's loop did not read the metrics in time; sending the last ones");
        }
    }

    /// The coordinator's base URL.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// `{base}/seg/seg...`, each segment percent-encoded.
    fn endpoint(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Read the token file (again).
    fn reload_token(&mut self) {
        let Some(file) = &self.token_file else {
            return;
        };
        let (token, problem) = match std::fs::read_to_string(file) {
            Ok(t) if t.trim().is_empty() => (None, Some(format!("{} is empty", file.display()))),
            Ok(t) => (Some(t.trim().to_string()), None),
            Err(e) => (None, Some(format!("cannot read {}: {e}", file.display()))),
        };
        if problem != self.token_problem {
            match &problem {
                Some(p) => {
                    error!(problem = %p, "no coordinator token; requests go without one until the token file is readable")
                }
                None => info!(file = %file.display(), "coordinator token read"),
            }
            self.token_problem = problem;
        }
        self.token = token;
    }

    /// Send the coordinator's directives to `control` from now on (the agent's loop).
    pub fn with_control(mut self, control: watch::Sender<Control>) -> Reporter {
        control.send_modify(|c| c.configured = true);
        self.control = control;
        self
    }

    /// The directives in the last successful answer (none in a 204).
    fn answered_directives(&mut self) -> crate::rollout::Directives {
        match self.answer_body.take() {
            Some((StatusCode::OK, body)) if !body.is_empty() => serde_json::from_slice(&body)
                .unwrap_or_else(|e| {
                    warn!(error = %e, "the coordinator's directives cannot be read; ignored");
                    crate::rollout::Directives::default()
                }),
            _ => crate::rollout::Directives::default(),
        }
    }

    /// Record an answer from the coordinator (or its absence).
    fn note_contact(&self, directives: Option<crate::rollout::Directives>, problem: Option<&str>) {
        self.control.send_if_modified(|c| {
            let before = c.clone();
            match problem {
                None => {
                    c.reachable = true;
                    c.problem.clear();
                }
                Some(p) => {
                    c.reachable = false;
                    c.problem = p.to_string();
                }
            }
            if let Some(d) = directives {
                c.directives = d;
            }
            *c != before
        });
    }

    /// `GET /v1/nodes/{node}/directives`: held by the coordinator until the directives differ
    /// from `known` or `POLL_WAIT` passes.
    async fn poll_directives(&mut self, node: &str, known: &str) -> Answer {
        let mut url = self.endpoint(&["v1", "nodes", node, "directives"]);
        url.query_pairs_mut()
            .append_pair("wait", &POLL_WAIT.as_secs().to_string())
            .append_pair("known", known);
        self.request(reqwest::Method::GET, url, None).await
    }

    /// Send one request; classify the answer.
    async fn request(
        &mut self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<Vec<u8>>,
    ) -> Answer {
        if self.token.is_none() {
            self.reload_token();
        }
        let mut req = self.client.request(method, url);
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(token) = &self.token
            && let Ok(mut value) =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Failed(describe(e)),
        };
        let status = response.status();
        if status.is_success() {
            let body = response
                .bytes()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            self.answer_body = Some((status, body));
            return Answer::Done;
        }
        let reason = reason(status, response.bytes().await.unwrap_or_default().as_ref());
        match status {
            StatusCode::CONFLICT => Answer::Conflict,
            StatusCode::UNAUTHORIZED => {
                // A rotated token: read it again for the next attempt.
                self.reload_token();
                Answer::Auth(status, reason)
            }
            StatusCode::FORBIDDEN => Answer::Auth(status, reason),
            StatusCode::NOT_FOUND => Answer::NotFound(reason),
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNPROCESSABLE_ENTITY => Answer::Rejected(status, reason),
            _ => Answer::Failed(reason),
        }
    }

    async fn send_report(&mut self, report: &NodeReport) -> Answer {
        let url = self.endpoint(&["v1", "reports"]);
        let body = serde_json::to_vec(report).unwrap_or_default();
        match self.request(reqwest::Method::POST, url, Some(body)).await {
            // No such route: a wrong url, or a coordinator too old.
            Answer::NotFound(reason) => Answer::Failed(reason),
            answer => answer,
        }
    }

    async fn send_heartbeat(&mut self, node: &str, heartbeat: &Heartbeat) -> Answer {
        let url = self.endpoint(&["v1", "nodes", node, "heartbeat"]);
        let body = serde_json::to_vec(heartbeat).unwrap_or_default();
        match self.request(reqwest::Method::POST, url, Some(body)).await {
            // A coordinator that does not know the node: the full report introduces it.
            Answer::NotFound(_) => Answer::Conflict,
            answer => answer,
        }
    }

    /// `DELETE /v1/nodes/{node}`, once. `Err` holds the URL and the reason for anything
    /// but 2xx and 404.
    pub async fn goodbye(&mut self, node: &str) -> Result<Goodbye, String> {
        let url = self.endpoint(&["v1", "nodes", node]);
        match self
            .request(reqwest::Method::DELETE, url.clone(), None)
            .await
        {
            Answer::Done => Ok(Goodbye::Removed),
            Answer::NotFound(_) => Ok(Goodbye::Unknown),
            Answer::Conflict => Err(format!("DELETE {url}: HTTP 409 Conflict")),
            Answer::Auth(_, r) | Answer::Rejected(_, r) | Answer::Failed(r) => {
                Err(format!("DELETE {url}: {r}"))
            }
        }
    }

    /// Deliver the reports `reports` carries until its sender is dropped. See the
    /// [module docs](self) for the rules.
    pub async fn run(mut self, mut reports: watch::Receiver<Option<NodeReport>>) {
        // The last full report delivered (with its sequence), and when.
        let mut delivered: Option<NodeReport> = None;
        let mut delivered_at = Instant::now();
        let mut sequence = 0u64;
        let mut need_full = true;
        let mut next_heartbeat = Instant::now();
        // When the metrics were last read for a report (see `refresh_metrics`).
        let mut metrics_read_at = Instant::now();
        let metrics_window = self.heartbeat_interval * METRICS_EVERY;
        let mut delay = self.backoff_min;
        // The problem logged last, and how many attempts failed since the last success.
        let mut problem: Option<String> = None;
        let mut failures = 0u32;
        // A report the coordinator refused (400, 413): not sent again before the backoff
        // ends unless its content changes.
        let mut refused: Option<(NodeReport, Instant)> = None;
        loop {
            let latest = reports.borrow_and_update().clone();
            let Some(latest) = latest else {
                if reports.changed().await.is_err() {
                    return;
                }
                continue;
            };
            let now = Instant::now();
            if let Some((report, until)) = &refused {
                if now < *until && same_content(report, &latest) {
                    if !pause(&mut reports, *until, true).await {
                        return;
                    }
                    continue;
                }
                refused = None;
            }
            let changed = delivered.as_ref().is_none_or(|d| !same_content(d, &latest));
            let heartbeat_due = now >= next_heartbeat;
            if heartbeat_due
                && !need_full
                && !changed
                && self.refresh.is_some()
                && now.duration_since(delivered_at.max(metrics_read_at)) >= metrics_window
            {
                // The window ends with this heartbeat: read the metrics now, then decide
                // between a full report and a heartbeat on the latest report.
                metrics_read_at = now;
                self.refresh_metrics().await;
                continue;
            }
            let metrics_due = heartbeat_due
                && delivered
                    .as_ref()
                    .is_some_and(|d| !same_metrics(d, &latest))
                && now.duration_since(delivered_at) >= metrics_window;
            let answer = if need_full || changed || metrics_due {
                sequence += 1;
                let mut report = latest;
                report.sequence = sequence;
                debug!(sequence, "sending a full report");
                let answer = self.send_report(&report).await;
                match answer {
                    // 409 on a report: the coordinator has a newer one of this instance.
                    Answer::Done | Answer::Conflict => {
                        if answer == Answer::Done {
                            let d = self.answered_directives();
                            self.note_contact(Some(d), None);
                        }
                        delivered = Some(report);
                        delivered_at = Instant::now();
                        need_full = false;
                    }
                    Answer::Rejected(..) => {
                        refused = Some((report, Instant::now() + jitter(delay)));
                    }
                    _ => {}
                }
                (answer, "report")
            } else if heartbeat_due && let Some(last) = &delivered {
                let heartbeat = Heartbeat {
                    agent_instance: last.agent_instance.clone(),
                    sequence: last.sequence,
                    generated_at: epoch_seconds(),
                };
                let node = last.node.name.clone();
                let answer = self.send_heartbeat(&node, &heartbeat).await;
                if answer == Answer::Done {
                    let d = self.answered_directives();
                    self.note_contact(Some(d), None);
                }
                if answer == Answer::Conflict {
                    debug!("the coordinator asks for a full report");
                    need_full = true;
                    continue;
                }
                (answer, "heartbeat")
            } else if let Some(last) = delivered.as_ref().filter(|d| rolling(d)) {
                // A rollout under way here: hold a directives poll open until the next
                // heartbeat, so that a slot is used the moment it is granted.
                let node = last.node.name.clone();
                let known = self.control.borrow().directives.etag();
                let until = next_heartbeat;
                let answer = tokio::select! {
                    a = self.poll_directives(&node, &known) => Some(a),
                    r = reports.changed() => {
                        if r.is_err() {
                            return;
                        }
                        None
                    }
                    _ = tokio::time::sleep_until(until) => None,
                };
                match answer {
                    None => continue,
                    Some(Answer::Done) => {
                        let d = self.answered_directives();
                        self.note_contact(Some(d), None);
                        continue;
                    }
                    Some(a) => (a, "directives poll"),
                }
            } else {
                // Nothing to send: wait for a new report or the next heartbeat.
                if !pause(&mut reports, next_heartbeat, true).await {
                    return;
                }
                continue;
            };

            let (answer, what) = answer;
            // What went wrong; whether it is an error (needs a person) rather than a warning
            // (transient).
            let (message, severe) = match answer {
                Answer::Done | Answer::Conflict => {
                    if failures > 0 {
                        info!(url = %self.base, failed_attempts = failures, "the coordinator takes reports again");
                    } else if sequence == 1 && what == "report" {
                        info!(url = %self.base, "first report delivered");
                    }
                    problem = None;
                    failures = 0;
                    delay = self.backoff_min;
                    next_heartbeat = Instant::now() + jitter(self.heartbeat_interval);
                    continue;
                }
                Answer::Auth(status, reason) => (
                    format!(
                        "the coordinator refuses the agent's credentials ({status}): {reason}; \
                         check coordinator.token_file ({}) and the client certificate",
                        self.token_file
                            .as_deref()
                            .map_or_else(|| "not set".to_string(), |p| p.display().to_string())
                    ),
                    true,
                ),
                Answer::Rejected(status, reason) => (
                    format!("the coordinator refuses the {what} ({status}): {reason}"),
                    true,
                ),
                Answer::Failed(reason) | Answer::NotFound(reason) => (
                    format!("the {what} did not reach the coordinator: {reason}"),
                    false,
                ),
            };
            failures += 1;
            self.note_contact(None, Some(&message));
            // Whatever the coordinator saw or lost meanwhile, the next attempt is the latest
            // full report.
            need_full = true;
            if problem.as_deref() != Some(message.as_str()) {
                if severe {
                    error!(url = %self.base, retry_in = ?delay, "{message}");
                } else {
                    warn!(url = %self.base, retry_in = ?delay, "{message}; the daemons keep running");
                }
                problem = Some(message);
            } else {
                debug!(retry_in = ?delay, failures, "coordinator still failing");
            }
            let wait = jitter(delay);
            delay = (delay * 2).min(self.backoff_max);
            // A refused report waits at the top of the loop, where a change ends the wait.
            if refused.is_none() && !pause(&mut reports, Instant::now() + wait, false).await {
                return;
            }
        }
    }
}

/// Whether a rollout is under way on the node `report` describes (a unit waiting for a slot,
/// being replaced, or surging).
fn rolling(report: &NodeReport) -> bool {
    report.daemonsets.iter().any(|d| !d.rollout.is_empty())
}

/// Wait until `until`, or (with `wake_on_change`) until a new report arrives. False when the
/// sender is gone.
async fn pause(
    reports: &mut watch::Receiver<Option<NodeReport>>,
    until: Instant,
    wake_on_change: bool,
) -> bool {
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return true,
            r = reports.changed() => {
                if r.is_err() {
                    return false;
                }
                if wake_on_change {
                    return true;
                }
            }
        }
    }
}

/// A request error in one line, with its causes (reqwest's Display omits them), without the
/// URL (the caller names it).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `HTTP 413 Payload Too Large: <the coordinator's error>`.
fn reason(status: StatusCode, body: &[u8]) -> String {
    let detail = serde_json::from_slice::<ApiError>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string());
    let mut detail: String = detail.chars().take(REASON_MAX).collect();
    if detail.is_empty() {
        detail = "no reason given".into();
    }
    format!("HTTP {status}: {detail}")
}

// ---------------------------------------------------------------------------------------------
// `hostsetd goodbye`

/// This node's name as the agent resolves it: the node file with the host's facts. An
/// invalid node file is an error naming its problems (a guessed name could remove another
/// node from the coordinator).
pub fn node_name(config: &Config, facts: Option<&HostFacts>) -> Result<String, String> {
    let empty = crate::node::NodeFile::Native {
        name: None,
        labels: Default::default(),
        taints: Vec::new(),
        unschedulable: false,
    };
    let file = if config.node_file.exists() {
        let loaded = crate::node::read_node(&config.node_file);
        if loaded.has_errors() {
            let problems: Vec<String> =
                loaded.diagnostics.iter().map(ToString::to_string).collect();
            return Err(format!(
                "the node file is invalid, so the node's name is unknown: {}",
                problems.join("; ")
            ));
        }
        loaded.items.into_iter().next().unwrap_or(empty)
    } else {
        empty
    };
    let name = file.resolve(facts).name;
    if name.is_empty() {
        return Err(format!(
            "the node has no name: set name in {} (the host name is empty)",
            config.node_file.display()
        ));
    }
    Ok(name)
}

/// How long `hostsetd goodbye` waits for the coordinator, in all (removal scripts run it
/// under `timeout 20`; this answers with a reason before).
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(15);

/// `hostsetd goodbye`: `DELETE /v1/nodes/{name}` once, within [`GOODBYE_TIMEOUT`].
/// `Ok(None)` when no coordinator is configured (nothing to do); `Err` holds a one-line
/// reason.
pub async fn goodbye(
    config: &Config,
    facts: Option<&HostFacts>,
) -> Result<Option<(String, Goodbye)>, String> {
    let Some(c) = &config.coordinator else {
        return Ok(None);
    };
    let name = node_name(config, facts)?;
    let mut reporter = Reporter::new(c).map_err(|e| e.to_string())?;
    let outcome = tokio::time::timeout(GOODBYE_TIMEOUT, reporter.goodbye(&name))
        .await
        .map_err(|_| {
            format!(
                "DELETE {}: no answer within {} s",
                reporter.endpoint(&["v1", "nodes", &name]),
                GOODBYE_TIMEOUT.as_secs()
            )
        })??;
    Ok(Some((name, outcome)))
}
