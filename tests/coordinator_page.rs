//! The coordinator's page in a real browser.
//!
//! Starts the real coordinator in-process on a loopback port, feeds it agents' reports for
//! three nodes and three daemonsets so that every kind of matrix cell appears (ready, not
//! ready, missing, misscheduled, not eligible, a silent node), then runs headless Chromium
//! on `/#token=READ`: `--dump-dom` to check the cells by their data attributes, and
//! `--screenshot` to `target/coordinator-page.png` (1280×800) to look at.
//!
//! Chromium is required (`apt-get install chromium`; CI installs it in `.ci/run`): without
//! it the test fails saying so, unless `HOSTSET_SKIP_BROWSER=1`.

#![cfg(feature = "coordinator")]

use std::collections::HashMap;
use std::fs::Permissions;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostset::coordinator::config::Config;
use hostset::coordinator::{AppState, Clock, serve};
use serde_json::{Value, json};

/// The page as the coordinator embeds it.
const PAGE: &str = include_str!("../src/coordinator/page.html");

/// `HOSTSET_SKIP_BROWSER=1` skips the browser test (with a notice).
const SKIP_ENV: &str = "HOSTSET_SKIP_BROWSER";
const READ_TOKEN: &str = "read-token-for-the-page-test";
const AGENT_TOKEN: &str = "agent-token-for-the-page-test";

// ---------------------------------------------------------------------------------------
// Chromium

/// The Chromium binary, `None` when skipped; panics with the remedy when it is missing.
fn chromium() -> Option<PathBuf> {
    if std::env::var_os(SKIP_ENV).is_some_and(|v| v == "1") {
        eprintln!("notice: {SKIP_ENV}=1: the coordinator page browser test is skipped");
        return None;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    panic!(
        "headless Chromium is needed for the coordinator page test and was not found in PATH: \
         install it with `apt-get install chromium` (.ci/run does), or set {SKIP_ENV}=1 to skip"
    );
}

/// Runs headless Chromium with `args` after the flags this machine needs (no sandbox as
/// root, no GPU, no background connections, a new empty profile); returns its stdout.
fn run_chromium(chromium: &Path, work: &Path, args: &[String]) -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let profile = work.join(format!("profile-{}", RUNS.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {args:?} did not finish within 90 s; stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap().unwrap();
    let stderr = err.join().unwrap();
    assert!(
        status.success(),
        "chromium {args:?} failed ({status}); stderr:\n{stderr}"
    );
    let _ = std::fs::remove_dir_all(&profile);
    stdout
}

// ---------------------------------------------------------------------------------------
// A small reader for the serialized DOM: the start tags of one element name with their
// attributes (Chromium writes them `name="value"`, with `&amp;` `&quot;` `&lt;` `&gt;`).

fn start_tags(dom: &str, tag: &str) -> Vec<HashMap<String, String>> {
    let open = format!("<{tag}");
    let mut found = Vec::new();
    let markup = without_scripts(dom);
    let mut rest = markup.as_str();
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        rest = after;
        if !after.starts_with([' ', '>', '\n', '\t', '/']) {
            continue;
        }
        let mut attrs = HashMap::new();
        let mut s = after.trim_start();
        while !s.starts_with('>') && !s.starts_with("/>") && !s.is_empty() {
            let end = s.find(['=', ' ', '>']).unwrap_or(s.len());
            let name = s[..end].to_string();
            s = &s[end..];
            let value = if let Some(v) = s.strip_prefix("=\"") {
                let close = v.find('"').expect("unterminated attribute in the DOM");
                let value = unescape(&v[..close]);
                s = &v[close + 1..];
                value
            } else {
                String::new()
            };
            attrs.insert(name, value);
            s = s.trim_start();
        }
        found.push(attrs);
    }
    found
}

/// The DOM without the contents of its `<script>` elements (the page's own code).
fn without_scripts(dom: &str) -> String {
    let mut out = String::with_capacity(dom.len());
    let mut rest = dom;
    while let Some(at) = rest.find("<script") {
        out.push_str(&rest[..at]);
        rest = rest[at..]
            .split_once("</script>")
            .map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

// ---------------------------------------------------------------------------------------
// The real coordinator, in-process on a loopback port

/// The coordinator serving on `127.0.0.1:port` from its own thread and runtime; stopped
/// (gracefully) when dropped.
struct Coordinator {
    port: u16,
    /// Seconds subtracted from the real time by the coordinator's clock.
    behind: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Coordinator {
    fn start(work: &Path, specs: &[(&str, &str)]) -> Coordinator {
        let spec_dir = work.join("daemonsets.d");
        let state_dir = work.join("state");
        let tokens = work.join("tokens");
        for dir in [&spec_dir, &state_dir, &tokens] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::set_permissions(dir, Permissions::from_mode(0o755)).unwrap();
        }
        for (name, text) in specs {
            let file = spec_dir.join(format!("{name}.toml"));
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        }
        let agent_tokens = tokens.join("agent-tokens");
        let read_tokens = tokens.join("read-tokens");
        for (file, text) in [(&agent_tokens, AGENT_TOKEN), (&read_tokens, READ_TOKEN)] {
            std::fs::write(file, format!("{text}\n")).unwrap();
            std::fs::set_permissions(file, Permissions::from_mode(0o600)).unwrap();
        }

        let mut config = Config::defaults(work, Some(&state_dir));
        config.spec_dir = spec_dir.clone();
        // Root, or the user running the test (who owns the files it just wrote).
        config.spec_owner = std::fs::metadata(&spec_dir).unwrap().uid();
        config.agent_token_file = agent_tokens;
        config.read_token_file = read_tokens;

        let behind = Arc::new(AtomicU64::new(0));
        let clock_behind = behind.clone();
        let clock: Clock = Arc::new(move || {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            now - clock_behind.load(Ordering::SeqCst)
        });
        let state = AppState::open(&config, clock).expect("the coordinator's state opens");

        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                serve(listener, state, async {
                    let _ = stopped.await;
                })
                .await
                .expect("the coordinator serves");
            });
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the coordinator listens");
        Coordinator {
            port,
            behind,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain HTTP/1.1 request; returns the status and the body.
    fn request(&self, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (status, body)
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.request("GET", path, READ_TOKEN, "");
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    fn report(&self, report: &Value) {
        let (status, body) = self.request("POST", "/v1/reports", AGENT_TOKEN, &report.to_string());
        assert_eq!(status, 204, "POST /v1/reports: {body}");
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The fleet: three nodes, three daemonsets.
//
// | daemonset \ node | db-1 (silent)             | web-1                  | web-2                 |
// |------------------|---------------------------|------------------------|-----------------------|
// | disk-monitor     | runs, cannot be vouched   | missing (start failed) | not eligible (no ssd) |
// | log-collector    | not eligible (taint)      | ready                  | crash-looping         |
// | node-exporter    | not eligible (no label)   | old revision (OnDelete)| misscheduled          |

const LOG_COLLECTOR: &str = r#"
name = "log-collector"
selector.matchLabels = { name = "log-collector" }
template.labels = { name = "log-collector" }
command = ["/usr/bin/tail", "--follow=name", "--retry", "/var/log/syslog"]
"#;

const DISK_MONITOR: &str = r#"
name = "disk-monitor"
selector.matchLabels = { name = "disk-monitor" }
template.labels = { name = "disk-monitor" }
nodeSelector = { disktype = "ssd" }
command = ["/usr/local/bin/disk-monitor"]

[[tolerations]]
operator = "Exists"
"#;

const NODE_EXPORTER: &str = r#"
name = "node-exporter"
selector.matchLabels = { name = "node-exporter" }
template.labels = { name = "node-exporter" }
nodeSelector = { monitoring = "on" }
command = ["/usr/bin/prometheus-node-exporter"]
updateStrategy = { type = "OnDelete" }
"#;

/// One daemonset as an agent reports it. `state` "absent" means no unit.
fn daemon(
    name: &str,
    revision: &str,
    state: &str,
    ready: bool,
    restarts: u32,
    last_error: &str,
) -> Value {
    let present = state != "absent";
    json!({
        "name": name,
        "file": format!("/etc/hostset/daemonsets.d/{name}.toml"),
        "held": false,
        "shouldRun": true,
        "shouldContinueRunning": true,
        "reasons": [],
        "unit": if present { format!("hostset-{name}.service") } else { String::new() },
        "state": state,
        "currentRevision": if present { revision } else { "" },
        "desiredRevision": revision,
        "evictInSeconds": null,
        "lastError": last_error,
        "ready": ready,
        "restarts": restarts,
        "mainPid": if ready { 4242 } else { 0 },
        "startedAt": null,
    })
}

fn node_report(
    name: &str,
    labels: Value,
    taints: Value,
    address: &str,
    daemons: Vec<Value>,
    now: u64,
) -> Value {
    json!({
        "agentVersion": env!("CARGO_PKG_VERSION"),
        "agentInstance": format!("{name}-instance"),
        "sequence": 1,
        "generatedAt": now,
        "node": {
            "name": name,
            "labels": labels,
            "taints": taints,
            "unschedulable": false,
            "addresses": [address],
            "conditions": [],
        },
        "daemonsets": daemons,
        "diagnostics": [],
        "errors": [],
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Every (daemonset, node) → (data-state, silent) the matrix must show.
const EXPECTED: &[(&str, &str, &str, bool)] = &[
    ("disk-monitor", "db-1", "progressing", true),
    ("disk-monitor", "web-1", "missing", false),
    ("disk-monitor", "web-2", "ineligible", false),
    ("log-collector", "db-1", "ineligible", true),
    ("log-collector", "web-1", "ready", false),
    ("log-collector", "web-2", "progressing", false),
    ("node-exporter", "db-1", "ineligible", true),
    ("node-exporter", "web-1", "progressing", false),
    ("node-exporter", "web-2", "misscheduled", false),
];

// ---------------------------------------------------------------------------------------
// The test

#[test]
fn the_page_shows_every_kind_of_cell_in_a_real_browser() {
    let Some(chromium) = chromium() else { return };
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let work = tmp.join(format!("coordinator-page-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    let coordinator = Coordinator::start(
        &work,
        &[
            ("log-collector", LOG_COLLECTOR),
            ("disk-monitor", DISK_MONITOR),
            ("node-exporter", NODE_EXPORTER),
        ],
    );
    let revisions: HashMap<String, String> = coordinator
        .get_json("/v1/daemonsets")
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["revision"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        revisions.len(),
        3,
        "the coordinator reads the three specs: {revisions:?}"
    );
    let rev = |name: &str| revisions[name].as_str();

    // db-1 reported ten minutes ago and fell silent.
    coordinator.behind.store(600, Ordering::SeqCst);
    coordinator.report(&node_report(
        "db-1",
        json!({"role": "db", "disktype": "ssd"}),
        json!(["dedicated=db:NoSchedule"]),
        "192.0.2.13",
        vec![
            daemon(
                "disk-monitor",
                rev("disk-monitor"),
                "active/running",
                true,
                0,
                "",
            ),
            daemon(
                "log-collector",
                rev("log-collector"),
                "absent",
                false,
                0,
                "",
            ),
            daemon(
                "node-exporter",
                rev("node-exporter"),
                "absent",
                false,
                0,
                "",
            ),
        ],
        unix_now() - 600,
    ));
    coordinator.behind.store(0, Ordering::SeqCst);
    coordinator.report(&node_report(
        "web-1",
        json!({"role": "web", "disktype": "ssd", "monitoring": "on"}),
        json!([]),
        "192.0.2.11",
        vec![
            daemon(
                "disk-monitor",
                rev("disk-monitor"),
                "absent",
                false,
                0,
                "starting hostset-disk-monitor.service: /usr/local/bin/disk-monitor: No such file or directory",
            ),
            daemon("log-collector", rev("log-collector"), "active/running", true, 0, ""),
            // OnDelete: the old revision keeps running until its unit is stopped.
            {
                let mut d = daemon("node-exporter", rev("node-exporter"), "active/running", true, 1, "");
                d["currentRevision"] = json!("0ldrev1s10n");
                d
            },
        ],
        unix_now(),
    ));
    coordinator.report(&node_report(
        "web-2",
        json!({"role": "web"}),
        json!([]),
        "192.0.2.12",
        vec![
            daemon("disk-monitor", rev("disk-monitor"), "absent", false, 0, ""),
            daemon(
                "log-collector",
                rev("log-collector"),
                "activating/auto-restart",
                false,
                7,
                "",
            ),
            // Its node lost the monitoring label; the agent has not stopped it yet.
            daemon(
                "node-exporter",
                rev("node-exporter"),
                "active/running",
                true,
                0,
                "",
            ),
        ],
        unix_now(),
    ));
    let nodes = coordinator.get_json("/v1/nodes");
    let status: HashMap<&str, &str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        HashMap::from([("db-1", "NotReady"), ("web-1", "Ready"), ("web-2", "Ready")]),
        "the fleet as the API sees it"
    );

    // The page needs no token and is the embedded file.
    let (status, body) = coordinator.request("GET", "/", "", "");
    assert_eq!(status, 200);
    assert_eq!(body, PAGE, "GET / serves src/coordinator/page.html");

    let url = format!("{}/#token={READ_TOKEN}", coordinator.url());

    // The DOM after the page's first refreshes.
    let dom = run_chromium(
        &chromium,
        &work,
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            url.clone(),
        ],
    );
    std::fs::write(work.join("dom.html"), &dom).unwrap();
    let ctx = format!("(the DOM is in {})", work.join("dom.html").display());

    let cells: HashMap<(String, String), HashMap<String, String>> = start_tags(&dom, "td")
        .into_iter()
        .filter(|a| a.contains_key("data-state"))
        .map(|a| ((a["data-daemonset"].clone(), a["data-node"].clone()), a))
        .collect();
    assert_eq!(
        cells.len(),
        EXPECTED.len(),
        "one cell per daemonset and node {ctx}"
    );
    for &(ds, node, state, silent) in EXPECTED {
        let cell = &cells[&(ds.to_string(), node.to_string())];
        assert_eq!(cell["data-state"], state, "{ds} on {node} {ctx}");
        assert_eq!(
            cell.get("data-silent").is_some(),
            silent,
            "{ds} on {node}: silent {ctx}"
        );
        let title = &cell["title"];
        assert!(
            title.starts_with(&format!("{node}: ")),
            "{ds} on {node}: the hover text {title:?}"
        );
    }
    // The hover texts say why.
    let title = |ds: &str, node: &str| cells[&(ds.to_string(), node.to_string())]["title"].clone();
    assert!(
        title("disk-monitor", "web-1").contains("No such file or directory"),
        "{}",
        title("disk-monitor", "web-1")
    );
    assert!(
        title("disk-monitor", "web-2").contains("disktype"),
        "{}",
        title("disk-monitor", "web-2")
    );
    assert!(
        title("log-collector", "db-1").contains("dedicated=db:NoSchedule"),
        "{}",
        title("log-collector", "db-1")
    );
    assert!(
        title("log-collector", "web-2").contains("restarts 7"),
        "{}",
        title("log-collector", "web-2")
    );
    assert!(
        title("node-exporter", "web-1").contains("0ldrev1s10n"),
        "{}",
        title("node-exporter", "web-1")
    );
    assert!(
        title("node-exporter", "web-2").contains("monitoring"),
        "{}",
        title("node-exporter", "web-2")
    );
    assert!(
        title("disk-monitor", "db-1").contains("NotReady"),
        "{}",
        title("disk-monitor", "db-1")
    );

    // The fleet totals: the sums of the API's statuses.
    let totals: HashMap<String, String> = start_tags(&dom, "div")
        .into_iter()
        .filter_map(|a| Some((a.get("data-total")?.clone(), a.get("data-value")?.clone())))
        .collect();
    let mut expected_totals = HashMap::from([
        ("daemonsets", 3),
        ("nodes", 3),
        ("notready", 1),
        ("desired", 0),
        ("current", 0),
        ("ready", 0),
        ("up-to-date", 0),
        ("available", 0),
        ("misscheduled", 0),
    ]);
    for d in coordinator.get_json("/v1/daemonsets").as_array().unwrap() {
        let s = &d["status"];
        for (total, field) in [
            ("desired", "desiredNumberScheduled"),
            ("current", "currentNumberScheduled"),
            ("ready", "numberReady"),
            ("up-to-date", "updatedNumberScheduled"),
            ("available", "numberAvailable"),
            ("misscheduled", "numberMisscheduled"),
        ] {
            *expected_totals.get_mut(total).unwrap() += s[field].as_u64().unwrap();
        }
    }
    let expected_totals: HashMap<String, String> = expected_totals
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(totals, expected_totals, "fleet totals {ctx}");
    // Sanity of the fixture itself: something in every counter.
    assert_eq!(totals["misscheduled"], "1");
    assert_eq!(totals["desired"], "5");

    // The silent nodes section lists db-1 alone.
    let silent: Vec<_> = start_tags(&dom, "tr")
        .into_iter()
        .filter(|a| a.get("data-node-status").is_some_and(|s| s == "NotReady"))
        .map(|a| a["data-node"].clone())
        .collect();
    assert_eq!(silent, ["db-1"], "silent nodes {ctx}");
    assert!(
        dom.contains("<span class=\"ago\">10m "),
        "db-1 last seen ten minutes ago {ctx}"
    );
    // Loaded, no error, no login form, and the token is nowhere in the page.
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page loaded its data {ctx}"
    );
    let hidden = |id: &str| {
        start_tags(&dom, "div")
            .into_iter()
            .chain(start_tags(&dom, "section"))
            .find(|a| a.get("id").is_some_and(|v| v == id))
            .unwrap_or_else(|| panic!("no #{id} {ctx}"))
            .contains_key("hidden")
    };
    assert!(hidden("error"), "no error banner {ctx}");
    assert!(hidden("login"), "no token form {ctx}");
    assert!(!hidden("content"), "the content shows {ctx}");
    assert!(
        !dom.contains(READ_TOKEN),
        "the token does not appear in the page {ctx}"
    );

    // A refused token: the page asks for one, and shows no data.
    let refused = run_chromium(
        &chromium,
        &work,
        &[
            "--virtual-time-budget=3000".into(),
            "--dump-dom".into(),
            format!(
                "{}/#token=not-a-token-of-this-coordinator",
                coordinator.url()
            ),
        ],
    );
    let login = start_tags(&refused, "section")
        .into_iter()
        .find(|a| a.get("id").is_some_and(|v| v == "login"))
        .unwrap();
    assert!(
        !login.contains_key("hidden"),
        "a refused token brings the token form:\n{refused}"
    );
    assert!(
        refused.contains("HTTP 401"),
        "the form says why:\n{refused}"
    );
    assert!(
        !refused.contains("data-state=\""),
        "no data without a valid token"
    );

    // The screenshot, to look at: target/coordinator-page.png.
    let png = tmp.parent().unwrap().join("coordinator-page.png");
    let _ = std::fs::remove_file(&png);
    run_chromium(
        &chromium,
        &work,
        &[
            "--virtual-time-budget=5000".into(),
            format!("--screenshot={}", png.display()),
            "--window-size=1280,800".into(),
            url,
        ],
    );
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        png.display()
    );
    let (width, height) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!((width, height), (1280, 800), "the screenshot's size");
    // A blank 1280×800 page compresses to a few kilobytes; text, colours and a table do not.
    assert!(
        bytes.len() > 30_000,
        "the screenshot looks empty ({} bytes): {}",
        bytes.len(),
        png.display()
    );
    eprintln!("screenshot: {}", png.display());

    drop(coordinator);
    let _ = std::fs::remove_dir_all(&work);
}

/// The page works offline and leaks nothing: no external resource of any kind, no referrer,
/// and the token only ever travels in the `Authorization` header of same-origin requests.
#[test]
fn the_page_is_self_contained() {
    for external in [
        "http:",
        "https:",
        "//",
        "src=",
        "@import",
        "url(",
        "<link rel=\"stylesheet",
    ] {
        let hits: Vec<&str> = PAGE
            .lines()
            .filter(|l| l.contains(external))
            // `//` also starts a comment in the script; a URL would need a scheme or `src=`.
            .filter(|l| external != "//" || l.contains("\"//") || l.contains("'//"))
            .collect();
        assert!(hits.is_empty(), "the page refers to {external:?}: {hits:?}");
    }
    assert!(PAGE.contains(r#"<meta name="referrer" content="no-referrer">"#));
    assert!(
        PAGE.contains(r#"<link rel="icon" href="data:,">"#),
        "no favicon request"
    );
    for path in ["\"/v1/daemonsets\"", "\"/v1/nodes\"", "\"/v1/daemonsets/\""] {
        assert!(
            PAGE.contains(path),
            "the page reads {path} from its own origin"
        );
    }
    assert!(
        PAGE.contains("sessionStorage"),
        "the token is kept for the tab only"
    );
    assert!(
        !PAGE.contains("localStorage"),
        "the token is never kept beyond the tab"
    );
    assert!(
        PAGE.contains("history.replaceState"),
        "the token leaves the address bar"
    );
    assert!(
        PAGE.len() < 64 << 10,
        "the page stays small: {} bytes",
        PAGE.len()
    );
}
