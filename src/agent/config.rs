//! The agent's configuration: `/etc/hostset/agent.toml`, overridden by `hostsetd`'s flags.
//!
//! ```toml
//! # Where daemonset specs are read from (default /etc/hostset/daemonsets.d).
//! spec_dir = "/etc/hostset/daemonsets.d"
//! # The node file (default /etc/hostset/node.toml).
//! node_file = "/etc/hostset/node.toml"
//! # Seconds between a daemon's exit and its restart (systemd's RestartSec=; default 1).
//! restart_delay = 1
//!
//! # Optional: the coordinator the agent reports to (see crate::agent::report).
//! [coordinator]
//! url = "https://hostset.example.com"
//! token_file = "/etc/hostset/coordinator.token"  # the bearer token; none: no Authorization
//! ca_file = "/etc/hostset/coordinator-ca.pem"     # trust only these CAs (PEM); default:
//!                                                 # the system bundle
//! cert_file = "/etc/hostset/agent.pem"            # client certificate (mTLS), PEM, with
//! key_file = "/etc/hostset/agent-key.pem"         # its private key; both or neither
//! heartbeat_interval = 10                         # seconds (±10 % jitter); default 10
//!
//! # Where the agent keeps its state (the git mirror); default $STATE_DIRECTORY (systemd's
//! # StateDirectory=), else /var/lib/hostset.
//! state_dir = "/var/lib/hostset"
//!
//! # Optional: daemonset specs from a git repository, beside spec_dir (README: "Git-synced
//! # specs"; crate::config_file::GitSource).
//! [source.git]
//! url = "https://git.example.com/ops/fleet.git"   # https, http, ssh, git, file, user@host:path
//! branch = "main"                                 # or tag = "v1"; default branch main
//! subdirectory = "daemonsets"                     # default: the top of the tree
//! poll_interval = 30                              # seconds (±10 % jitter)
//! token_file = "/etc/hostset/git/token"           # https: the token (basic auth password)
//! # username = "git"                              # with token_file, or the ssh user
//! # ssh_key_file = "/etc/hostset/git/id_ed25519"  # ssh URLs: required
//! # known_hosts_file = "/etc/ssh/ssh_known_hosts" # ssh URLs: the remote's host keys
//! # allowed_signers_file = "/etc/hostset/git/allowed_signers" # apply signed commits only
//!
//! # When the node gets the memory-pressure and disk-pressure taints.
//! [thresholds]
//! memory_available = "100Mi"        # a quantity (bytes) or "N%" of MemTotal
//! memory_psi_some_avg10 = 40        # optional: PSI "some avg10" percentage; default off
//! disk_available_percent = 10       # free space on disk_path, percent
//! disk_path = "/"
//! pressure_transition_period = 300  # seconds a condition outlives its signal
//! ```
//!
//! Rules:
//! - Every key is optional; the defaults are those shown (see
//!   [`crate::agent::conditions`] for the thresholds' meaning). Unknown keys are errors
//!   naming the file, line and column, as are values of the wrong type.
//! - Paths in the file must be absolute (the agent runs with `/` as its working directory,
//!   so a relative path would be ambiguous). Paths given as flags are taken as given.
//! - Precedence: flags, then the file, then the defaults.
//! - The file is `--config FILE`, else `agent.toml` in the configuration directory
//!   (`$HOSTSET_CONFIG_DIR`, default `/etc/hostset`, the variable `hostset eval` honours
//!   too). The default spec directory and node file live in that directory as well. A
//!   missing default file is an empty one; a missing `--config FILE` is an error.
//! - `restart_delay` is a top-level key, not a threshold: it is how the agent runs units.
//! - `--coordinator URL` replaces `coordinator.url` (or configures a coordinator when the file
//!   has none); `--token-file FILE` replaces `coordinator.token_file` and needs a coordinator
//!   from either place. Without a coordinator the agent reports to nobody (the status file
//!   only).
//! - Numbers may be integers or floats (`10`, `2.5`); `memory_available` may also be an
//!   integer number of bytes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::agent::conditions::{MemoryThreshold, Thresholds};
use crate::config_file::{self, FileError, FileSource, GitSource, Keys};
use crate::quantity::Quantity;

/// The configuration directory unless `$HOSTSET_CONFIG_DIR` says otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/hostset";
/// The configuration file's name in the configuration directory.
pub const CONFIG_FILE: &str = "agent.toml";
/// The spec directory's name in the configuration directory.
pub const SPEC_DIR: &str = "daemonsets.d";
/// The node file's name in the configuration directory.
pub const NODE_FILE: &str = "node.toml";
/// The agent's state directory (the git mirror) unless systemd (`$STATE_DIRECTORY`) or the
/// configuration says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hostset";
/// Default `restart_delay`.
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(1);
/// Default `coordinator.heartbeat_interval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

pub use crate::service::LogFormat;

/// The hostset node agent: runs the daemonsets of the spec directory that match this host as
/// transient systemd units hostset-NAME.service.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Parser)]
#[command(
    name = "hostsetd",
    version,
    long_about = None,
    after_help = "\
Configuration: /etc/hostset/agent.toml (or $HOSTSET_CONFIG_DIR/agent.toml) when it exists;
flags override it. Daemonset specs: *.toml (native), *.yaml, *.yml, *.json (Kubernetes
DaemonSets), owned by root and writable by nobody else.

Examples:
  hostsetd
  hostsetd --config /etc/hostset/agent.toml --log-format journald
  hostsetd --spec-dir /srv/hostset/daemonsets.d --node-file /srv/hostset/node.toml --log-format text
  hostsetd --coordinator https://hostset.example.com --token-file /etc/hostset/coordinator.token
  hostsetd goodbye      # tell the coordinator this node is gone (package removal)"
)]
pub struct Args {
    /// The agent's configuration file [default: /etc/hostset/agent.toml; a missing default
    /// file is fine, a missing given one an error].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The directory of daemonset specs [default: spec_dir of the configuration, else
    /// /etc/hostset/daemonsets.d].
    #[arg(long, value_name = "DIR")]
    pub spec_dir: Option<PathBuf>,
    /// The node file: a native node.toml or a Kubernetes v1 Node [default: node_file of the
    /// configuration, else /etc/hostset/node.toml].
    #[arg(long, value_name = "FILE")]
    pub node_file: Option<PathBuf>,
    /// Where and how to log.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// The coordinator to report to, http:// or https:// [default: coordinator.url of the
    /// configuration; none: no reporting].
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub coordinator: Option<String>,
    /// The file holding the coordinator's bearer token [default: coordinator.token_file of
    /// the configuration].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// `--coordinator`: an http:// or https:// URL.
fn parse_url(s: &str) -> Result<String, String> {
    if s.starts_with("https://") || s.starts_with("http://") {
        Ok(s.to_string())
    } else {
        Err(format!("must be an http:// or https:// URL, not \"{s}\""))
    }
}

/// `[coordinator]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    /// `url`: `http://` or `https://`.
    pub url: String,
    /// `token_file`: where the bearer token is (not read here).
    pub token_file: Option<PathBuf>,
    /// `ca_file`: PEM certificates of the CAs trusted for an https:// URL, instead of the
    /// system's bundle.
    pub ca_file: Option<PathBuf>,
    /// `cert_file`: the agent's client certificate (PEM, chain allowed), for mTLS.
    pub cert_file: Option<PathBuf>,
    /// `key_file`: the private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// `heartbeat_interval`: how often the agent says it is alive when nothing changed.
    pub heartbeat_interval: Duration,
}

impl Coordinator {
    /// A coordinator at `url` with every other key at its default.
    pub fn new(url: impl Into<String>) -> Coordinator {
        Coordinator {
            url: url.into(),
            token_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
        }
    }
}

/// The agent's configuration, every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The configuration file that was read; `None` when the default one does not exist.
    pub file: Option<PathBuf>,
    pub spec_dir: PathBuf,
    pub node_file: PathBuf,
    pub coordinator: Option<Coordinator>,
    /// `state_dir`: where the agent keeps what it must remember (the git mirror).
    pub state_dir: PathBuf,
    /// `[source.git]`: specs from a git repository, beside the spec directory.
    pub git: Option<GitSource>,
    pub thresholds: Thresholds,
    pub restart_delay: Duration,
    pub log_format: LogFormat,
}

impl Config {
    /// The configuration without file or flags, for the configuration directory
    /// `config_dir`.
    pub fn defaults(config_dir: &Path) -> Config {
        Config {
            file: None,
            spec_dir: config_dir.join(SPEC_DIR),
            node_file: config_dir.join(NODE_FILE),
            coordinator: None,
            state_dir: std::env::var_os("STATE_DIRECTORY")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), PathBuf::from),
            git: None,
            thresholds: Thresholds::default(),
            restart_delay: DEFAULT_RESTART_DELAY,
            log_format: LogFormat::Auto,
        }
    }
}

/// Why the configuration cannot be loaded. Every message about the file names it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read, is not valid TOML, or has a value that is not allowed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Flags that do not fit together with the configuration.
    #[error("{flag}: {message}")]
    Flag { flag: String, message: String },
}

/// `$HOSTSET_CONFIG_DIR`, else [`DEFAULT_CONFIG_DIR`].
pub fn config_dir() -> PathBuf {
    std::env::var_os("HOSTSET_CONFIG_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR), PathBuf::from)
}

/// The configuration for `hostsetd`'s flags, with the configuration directory of
/// [`config_dir`]. See the [module docs](self) for the rules.
pub fn load(args: &Args) -> Result<Config, ConfigError> {
    load_in(args, &config_dir())
}

/// [`load`] with an explicit configuration directory.
pub fn load_in(args: &Args, config_dir: &Path) -> Result<Config, ConfigError> {
    let mut config = Config::defaults(config_dir);
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (config_dir.join(CONFIG_FILE), false),
    };
    if let Some(text) = config_file::read(&path, explicit)? {
        apply_file(&mut config, &path, &text)?;
        config.file = Some(path);
    }
    if let Some(dir) = &args.spec_dir {
        config.spec_dir = dir.clone();
    }
    if let Some(file) = &args.node_file {
        config.node_file = file.clone();
    }
    if let Some(url) = &args.coordinator {
        match &mut config.coordinator {
            Some(c) => c.url = url.clone(),
            None => config.coordinator = Some(Coordinator::new(url.clone())),
        }
    }
    if let Some(file) = &args.token_file {
        match &mut config.coordinator {
            Some(c) => c.token_file = Some(file.clone()),
            None => {
                return Err(ConfigError::Flag {
                    flag: "--token-file".into(),
                    message: format!(
                        "there is no coordinator to send the token to: give --coordinator URL \
                         or set [coordinator] url in {}",
                        config
                            .file
                            .as_deref()
                            .unwrap_or(&config_dir.join(CONFIG_FILE))
                            .display()
                    ),
                });
            }
        }
    }
    config.log_format = args.log_format;
    Ok(config)
}

/// Parse the text of a configuration file named `file` over `config`.
pub fn apply_file(config: &mut Config, file: &Path, text: &str) -> Result<(), ConfigError> {
    let parsed: FileConfig = config_file::parse(file, text)?;
    let keys = Keys::new(file);
    if let Some(p) = parsed.spec_dir {
        config.spec_dir = keys.absolute("spec_dir", p)?;
    }
    if let Some(p) = parsed.node_file {
        config.node_file = keys.absolute("node_file", p)?;
    }
    if let Some(p) = parsed.state_dir {
        config.state_dir = keys.absolute("state_dir", p)?;
    }
    config.git = config_file::git_source(&keys, parsed.source)?;
    if let Some(v) = parsed.restart_delay {
        config.restart_delay = keys.seconds("restart_delay", v)?;
    }
    if let Some(c) = parsed.coordinator {
        if !(c.url.starts_with("https://") || c.url.starts_with("http://")) {
            return Err(keys
                .error(
                    "coordinator.url",
                    format!("must be an http:// or https:// URL, not \"{}\"", c.url),
                )
                .into());
        }
        let file_key = |key: &str, p: Option<PathBuf>| keys.absolute_opt(key, p);
        let cert_file = file_key("coordinator.cert_file", c.cert_file)?;
        let key_file = file_key("coordinator.key_file", c.key_file)?;
        if cert_file.is_some() != key_file.is_some() {
            let (given, missing) = if cert_file.is_some() {
                ("cert_file", "key_file")
            } else {
                ("key_file", "cert_file")
            };
            return Err(keys
                .error(
                    &format!("coordinator.{missing}"),
                    format!(
                        "is required with coordinator.{given} (a client certificate needs its key)"
                    ),
                )
                .into());
        }
        let heartbeat_interval = match c.heartbeat_interval {
            None => DEFAULT_HEARTBEAT_INTERVAL,
            Some(v) => keys.positive_seconds("coordinator.heartbeat_interval", v)?,
        };
        config.coordinator = Some(Coordinator {
            url: c.url,
            token_file: file_key("coordinator.token_file", c.token_file)?,
            ca_file: file_key("coordinator.ca_file", c.ca_file)?,
            cert_file,
            key_file,
            heartbeat_interval,
        });
    }
    let t = parsed.thresholds;
    let thresholds = &mut config.thresholds;
    if let Some(m) = t.memory_available {
        let key = "thresholds.memory_available";
        thresholds.memory_available = match m {
            Amount::Bytes(b) if b < 0 => {
                return Err(keys
                    .error(key, format!("must not be negative, not {b}"))
                    .into());
            }
            Amount::Bytes(b) => MemoryThreshold::Bytes(b as u64),
            Amount::Text(s) => parse_memory(&s).map_err(|m| keys.error(key, m))?,
        };
    }
    if let Some(v) = t.memory_psi_some_avg10 {
        thresholds.memory_psi_some_avg10 =
            Some(keys.percent("thresholds.memory_psi_some_avg10", v)?);
    }
    if let Some(v) = t.disk_available_percent {
        thresholds.disk_available_percent = keys.percent("thresholds.disk_available_percent", v)?;
    }
    if let Some(p) = t.disk_path {
        thresholds.disk_path = keys.absolute("thresholds.disk_path", p)?;
    }
    if let Some(v) = t.pressure_transition_period {
        thresholds.transition_period = keys.seconds("thresholds.pressure_transition_period", v)?;
    }
    Ok(())
}

/// `"100Mi"`, `"1G"`, `"104857600"` or `"10%"`.
fn parse_memory(s: &str) -> Result<MemoryThreshold, String> {
    if let Some(p) = s.strip_suffix('%') {
        return match p.trim().parse::<f64>() {
            Ok(v) if (0.0..=100.0).contains(&v) => Ok(MemoryThreshold::Percent(v)),
            _ => Err(format!(
                "invalid percentage \"{s}\": write a number from 0 to 100 followed by %"
            )),
        };
    }
    let q: Quantity = s
        .parse()
        .map_err(|e| format!("invalid quantity \"{s}\": {e} (e.g. \"100Mi\", \"1G\", \"10%\")"))?;
    if q.is_negative() {
        return Err(format!("must not be negative, not \"{s}\""));
    }
    Ok(MemoryThreshold::Bytes(q.value() as u64))
}

// ---------------------------------------------------------------------------------------------
// The file's shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    spec_dir: Option<PathBuf>,
    node_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "config_file::number")]
    restart_delay: Option<f64>,
    state_dir: Option<PathBuf>,
    coordinator: Option<FileCoordinator>,
    #[serde(default)]
    source: FileSource,
    #[serde(default)]
    thresholds: FileThresholds,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCoordinator {
    url: String,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "config_file::number")]
    heartbeat_interval: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileThresholds {
    memory_available: Option<Amount>,
    #[serde(default, deserialize_with = "config_file::number")]
    memory_psi_some_avg10: Option<f64>,
    #[serde(default, deserialize_with = "config_file::number")]
    disk_available_percent: Option<f64>,
    disk_path: Option<PathBuf>,
    #[serde(default, deserialize_with = "config_file::number")]
    pressure_transition_period: Option<f64>,
}

/// A quantity string or an integer number of bytes.
#[derive(Debug)]
enum Amount {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quantity string like \"100Mi\" or \"10%\", or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                Ok(Amount::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                Ok(Amount::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
