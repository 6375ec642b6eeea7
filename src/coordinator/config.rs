//! `hostset-coordinator`'s configuration: `/etc/hostset/coordinator.toml` and the command line.
//!
//! ```toml
//! # /etc/hostset/coordinator.toml: every key is optional; the defaults are shown.
//! listen = "127.0.0.1:8470"                      # IP address and port; "[::]:8470" for all
//! state_dir = "/var/lib/hostset-coordinator"     # the store (coordinator.redb)
//! spec_dir = "/etc/hostset/daemonsets.d"         # the same directory the agents read
//! agent_token_file = "/etc/hostset/coordinator/agent-tokens"
//! read_token_file = "/etc/hostset/coordinator/read-tokens"
//! # tls_cert = "/etc/hostset/coordinator/tls.crt" # PEM chain; with tls_key: serve HTTPS
//! # tls_key = "/etc/hostset/coordinator/tls.key"  # PEM private key (PKCS#8, PKCS#1 or SEC1)
//! # client_ca_file = "/etc/hostset/coordinator/clients-ca.crt" # require client certificates
//! grace_period = 40                              # seconds a silent node stays Ready
//! max_report_bytes = 1048576                     # larger reports are refused (413)
//!
//! # Optional: follow the git repository the agents follow, to show its head and the
//! # hosts lagging behind it ([source.git] as in agent.toml; the mirror is kept in
//! # state_dir/git).
//! [source.git]
//! url = "https://git.example.com/ops/fleet.git"
//! branch = "main"
//! ```
//!
//! Rules:
//! - Precedence: flags, then the file, then `$STATE_DIRECTORY` (systemd's
//!   `StateDirectory=`) for `state_dir`, then the defaults.
//! - The file is `--config FILE`, else `coordinator.toml` in the configuration directory
//!   (`$HOSTSET_CONFIG_DIR`, default `/etc/hostset`, as for the agent). A missing default file
//!   is an empty one; a missing `--config FILE` is an error. Unknown keys and values of the
//!   wrong type are errors naming the file, line and column.
//! - Paths in the file must be absolute; paths given as flags are taken as given.
//! - The default port is **8470**, on the loopback address: serving agents on other hosts is
//!   a decision (`listen = "[::]:8470"`, with TLS: the bearer tokens would otherwise cross the
//!   network in clear text, which is logged as a warning).
//! - The token files default to `/etc/hostset/coordinator/agent-tokens` and `read-tokens`.
//!   Both must exist (an empty read token file is fine: agent tokens may read too). See
//!   [`super::auth`] for their format.
//! - **systemd credentials.** The unit runs as a `DynamicUser=`, which cannot read the
//!   root-only files of `/etc/hostset/coordinator/`; it passes that directory as credentials
//!   instead (`LoadCredential=coordinator:/etc/hostset/coordinator`, copies named
//!   `$CREDENTIALS_DIRECTORY/coordinator_NAME`). Any configured file of that directory —
//!   token files, `tls_cert`, `tls_key`, `client_ca_file` — is read from its copy when the
//!   copy exists. The copies are made when the service starts: after editing those files,
//!   `systemctl restart hostset-coordinator`.
//! - `tls_cert` and `tls_key` come together; `client_ca_file` needs them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config_file::{self, FileError, FileSource, GitSource, Keys};

/// The configuration directory unless `$HOSTSET_CONFIG_DIR` says otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/hostset";
/// The configuration file's name in the configuration directory.
pub const CONFIG_FILE: &str = "coordinator.toml";
/// The spec directory's name in the configuration directory.
pub const SPEC_DIR: &str = "daemonsets.d";
/// The directory of the token files (and TLS files, by convention) in the configuration
/// directory.
pub const TOKEN_DIR: &str = "coordinator";
/// The agent token file's name, in [`TOKEN_DIR`] and as a systemd credential.
pub const AGENT_TOKENS: &str = "agent-tokens";
/// The read token file's name, in [`TOKEN_DIR`] and as a systemd credential.
pub const READ_TOKENS: &str = "read-tokens";
/// Where the coordinator listens by default.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8470,
));
/// The state directory unless systemd (`$STATE_DIRECTORY`) or the configuration says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hostset-coordinator";
/// Default `max_report_bytes`: 1 MiB.
pub const DEFAULT_MAX_REPORT_BYTES: usize = 1 << 20;

pub use crate::service::LogFormat;

/// The hostset coordinator: collects the agents' reports and serves fleet-wide daemonset
/// coverage (JSON API, Prometheus metrics, a status page).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Parser)]
#[command(
    name = "hostset-coordinator",
    version,
    long_about = None,
    after_help = "\
Configuration: /etc/hostset/coordinator.toml (or $HOSTSET_CONFIG_DIR/coordinator.toml) when it
exists; flags override it.
Agent token file: one token per line, `TOKEN` (may report for any node) or `TOKEN NODE-NAME`
(may report for that node only); read token file: one token per line. `#` starts a comment.
Both must be private (chmod 600). Under systemd (units/hostset-coordinator.service) the files
of /etc/hostset/coordinator/ are read from their credential copies: restart after editing them.

Examples:
  hostset-coordinator
  hostset-coordinator --listen '[::]:8470' --tls-cert /etc/hostset/coordinator/tls.crt \\
      --tls-key /etc/hostset/coordinator/tls.key
  hostset-coordinator --state-dir /tmp/coord --spec-dir ./daemonsets.d \\
      --agent-token-file ./agent-tokens --read-token-file ./read-tokens --log-format text"
)]
pub struct Args {
    /// The configuration file [default: /etc/hostset/coordinator.toml; a missing default file
    /// is fine, a missing given one an error].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address and port to listen on [default: 127.0.0.1:8470].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Where the store lives [default: $STATE_DIRECTORY, else /var/lib/hostset-coordinator].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The directory of daemonset specs, as the agents read it [default:
    /// /etc/hostset/daemonsets.d].
    #[arg(long, value_name = "DIR")]
    pub spec_dir: Option<PathBuf>,
    /// Agents' bearer tokens [default: /etc/hostset/coordinator/agent-tokens].
    #[arg(long, value_name = "FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// Read-only bearer tokens [default: /etc/hostset/coordinator/read-tokens].
    #[arg(long, value_name = "FILE")]
    pub read_token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates issued by these CAs (PEM); needs --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Seconds an agent may be silent before its node is NotReady [default: 40].
    #[arg(long, value_name = "SECONDS")]
    pub grace_period: Option<u64>,
    /// Largest report accepted, in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_report_bytes: Option<usize>,
    /// Where and how to log.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

/// The TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates are required, issued by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// The coordinator's configuration, every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The configuration file that was read; `None` when the default one does not exist.
    pub file: Option<PathBuf>,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub spec_dir: PathBuf,
    /// Besides root, the uid trusted to own spec files ([`crate::source::SpecDir::with_owner`]).
    /// Not configurable: 0 (root only), except in tests that do not run as root.
    pub spec_owner: u32,
    pub agent_token_file: PathBuf,
    pub read_token_file: PathBuf,
    /// Serve HTTPS with this certificate chain; see [`Config::tls`].
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    /// Seconds.
    pub grace_period: u64,
    pub max_report_bytes: usize,
    /// `[source.git]`: specs from a git repository, beside the spec directory.
    pub git: Option<GitSource>,
    pub log_format: LogFormat,
}

impl Config {
    /// The configuration without file or flags, for the configuration directory `config_dir`
    /// and the state directory systemd gives the service (`$STATE_DIRECTORY`), if any.
    pub fn defaults(config_dir: &Path, state_dir: Option<&Path>) -> Config {
        let token_dir = config_dir.join(TOKEN_DIR);
        Config {
            file: None,
            listen: DEFAULT_LISTEN,
            state_dir: state_dir
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), Path::to_path_buf),
            spec_dir: config_dir.join(SPEC_DIR),
            spec_owner: 0,
            agent_token_file: token_dir.join(AGENT_TOKENS),
            read_token_file: token_dir.join(READ_TOKENS),
            tls_cert: None,
            tls_key: None,
            client_ca_file: None,
            grace_period: crate::fleet::DEFAULT_GRACE_SECONDS,
            max_report_bytes: DEFAULT_MAX_REPORT_BYTES,
            git: None,
            log_format: LogFormat::Auto,
        }
    }

    /// The TLS files, `None` to serve plain HTTP; an error when the three settings do not go
    /// together (`tls_cert` and `tls_key` come together, `client_ca_file` needs them).
    pub fn tls(&self) -> Result<Option<Tls>, ConfigError> {
        let problem = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                return Ok(Some(Tls {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.client_ca_file.clone(),
                }));
            }
            (None, None) if self.client_ca_file.is_none() => return Ok(None),
            (None, None) => "--client-ca-file (client_ca_file) needs --tls-cert and --tls-key",
            (Some(_), None) => "--tls-cert (tls_cert) needs --tls-key (tls_key)",
            (None, Some(_)) => "--tls-key (tls_key) needs --tls-cert (tls_cert)",
        };
        Err(ConfigError::Combination(problem.to_string()))
    }
}

/// Why the configuration cannot be loaded. Every message about the file names it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read, is not valid TOML, or has a value that is not allowed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Settings that do not go together (from the file, the flags or both).
    #[error("{0}")]
    Combination(String),
}

/// `$HOSTSET_CONFIG_DIR`, else [`DEFAULT_CONFIG_DIR`].
pub fn config_dir() -> PathBuf {
    env_path("HOSTSET_CONFIG_DIR").unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR))
}

/// A non-empty environment variable as a path; for `$STATE_DIRECTORY` (a colon-separated list
/// when the unit names several directories) the first one.
fn env_path(name: &str) -> Option<PathBuf> {
    let value = std::env::var_os(name).filter(|v| !v.is_empty())?;
    let first = value
        .as_encoded_bytes()
        .split(|b| *b == b':')
        .next()?
        .to_vec();
    // SAFETY: a prefix of an OsStr's bytes ending before an ASCII ':' is valid encoded bytes.
    let first = unsafe { std::ffi::OsString::from_encoded_bytes_unchecked(first) };
    Some(PathBuf::from(first))
}

/// The directories systemd gives the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemdDirs {
    /// `$STATE_DIRECTORY` (`StateDirectory=`).
    pub state: Option<PathBuf>,
    /// `$CREDENTIALS_DIRECTORY` (`LoadCredential=`).
    pub credentials: Option<PathBuf>,
}

impl SystemdDirs {
    /// From the environment.
    pub fn from_env() -> SystemdDirs {
        SystemdDirs {
            state: env_path("STATE_DIRECTORY"),
            credentials: env_path("CREDENTIALS_DIRECTORY"),
        }
    }
}

/// The credential ID under which the unit passes the files of `/etc/hostset/coordinator/`
/// (`LoadCredential=coordinator:/etc/hostset/coordinator`): systemd names each file's copy
/// `coordinator_NAME`.
pub const CREDENTIAL_ID: &str = "coordinator";

/// The configuration for the flags, with the configuration directory and systemd's
/// directories from the environment. See the [module docs](self) for the rules.
pub fn load(args: &Args) -> Result<Config, ConfigError> {
    load_in(args, &config_dir(), &SystemdDirs::from_env())
}

/// [`load`] with an explicit configuration directory and systemd directories.
pub fn load_in(
    args: &Args,
    config_dir: &Path,
    systemd: &SystemdDirs,
) -> Result<Config, ConfigError> {
    let mut config = Config::defaults(config_dir, systemd.state.as_deref());
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (config_dir.join(CONFIG_FILE), false),
    };
    if let Some(text) = config_file::read(&path, explicit)? {
        apply_file(&mut config, &path, &text)?;
        config.file = Some(path);
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    for (value, target) in [
        (&args.state_dir, &mut config.state_dir),
        (&args.spec_dir, &mut config.spec_dir),
        (&args.agent_token_file, &mut config.agent_token_file),
        (&args.read_token_file, &mut config.read_token_file),
    ] {
        if let Some(v) = value {
            target.clone_from(v);
        }
    }
    if let Some(g) = args.grace_period {
        config.grace_period = g;
    }
    if let Some(m) = args.max_report_bytes {
        config.max_report_bytes = m;
    }
    for (value, target) in [
        (&args.tls_cert, &mut config.tls_cert),
        (&args.tls_key, &mut config.tls_key),
        (&args.client_ca_file, &mut config.client_ca_file),
    ] {
        if value.is_some() {
            target.clone_from(value);
        }
    }
    config.tls()?;
    if config.grace_period == 0 {
        return Err(ConfigError::Combination(
            "--grace-period must be at least 1 second".into(),
        ));
    }
    if config.max_report_bytes < MIN_REPORT_BYTES {
        return Err(ConfigError::Combination(format!(
            "--max-report-bytes must be at least {MIN_REPORT_BYTES}: no report would fit"
        )));
    }
    config.log_format = args.log_format;
    if let Some(credentials) = &systemd.credentials {
        let token_dir = config_dir.join(TOKEN_DIR);
        let copy = |p: &mut PathBuf| *p = credential_copy(p, &token_dir, credentials);
        copy(&mut config.agent_token_file);
        copy(&mut config.read_token_file);
        for p in [
            &mut config.tls_cert,
            &mut config.tls_key,
            &mut config.client_ca_file,
        ]
        .into_iter()
        .flatten()
        {
            copy(p);
        }
    }
    Ok(config)
}

/// `path`, or its credential copy when it is a file of `token_dir` that systemd passed (see
/// [`CREDENTIAL_ID`]).
fn credential_copy(path: &Path, token_dir: &Path, credentials: &Path) -> PathBuf {
    if path.parent() == Some(token_dir)
        && let Some(name) = path.file_name().and_then(|n| n.to_str())
    {
        let copy = credentials.join(format!("{CREDENTIAL_ID}_{name}"));
        if copy.is_file() {
            return copy;
        }
    }
    path.to_path_buf()
}

/// The smallest `max_report_bytes` allowed: a report with no daemonsets is about 300 bytes.
pub const MIN_REPORT_BYTES: usize = 1024;

/// Parse the text of a configuration file named `file` over `config`.
pub fn apply_file(config: &mut Config, file: &Path, text: &str) -> Result<(), ConfigError> {
    let parsed: FileConfig = config_file::parse(file, text)?;
    let keys = Keys::new(file);
    config.git = config_file::git_source(&keys, parsed.source)?;
    if let Some(listen) = parsed.listen {
        config.listen = listen.parse().map_err(|_| {
            keys.error(
                "listen",
                format!(
                    "must be an IP address and a port (\"127.0.0.1:8470\", \"[::]:8470\"), not \
                     \"{listen}\""
                ),
            )
        })?;
    }
    let paths = [
        ("state_dir", parsed.state_dir, &mut config.state_dir),
        ("spec_dir", parsed.spec_dir, &mut config.spec_dir),
        (
            "agent_token_file",
            parsed.agent_token_file,
            &mut config.agent_token_file,
        ),
        (
            "read_token_file",
            parsed.read_token_file,
            &mut config.read_token_file,
        ),
    ];
    for (key, value, target) in paths {
        if let Some(p) = value {
            *target = keys.absolute(key, p)?;
        }
    }
    let optional_paths = [
        ("tls_cert", parsed.tls_cert, &mut config.tls_cert),
        ("tls_key", parsed.tls_key, &mut config.tls_key),
        (
            "client_ca_file",
            parsed.client_ca_file,
            &mut config.client_ca_file,
        ),
    ];
    for (key, value, target) in optional_paths {
        if let Some(p) = value {
            *target = Some(keys.absolute(key, p)?);
        }
    }
    if let Some(g) = parsed.grace_period {
        if g == 0 {
            return Err(keys
                .error("grace_period", "must be at least 1 second")
                .into());
        }
        config.grace_period = g;
    }
    if let Some(m) = parsed.max_report_bytes {
        if m < MIN_REPORT_BYTES {
            return Err(keys
                .error(
                    "max_report_bytes",
                    format!("must be at least {MIN_REPORT_BYTES}, not {m}"),
                )
                .into());
        }
        config.max_report_bytes = m;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The file's shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    state_dir: Option<PathBuf>,
    spec_dir: Option<PathBuf>,
    agent_token_file: Option<PathBuf>,
    read_token_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    grace_period: Option<u64>,
    max_report_bytes: Option<usize>,
    #[serde(default)]
    source: FileSource,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A directory of its own, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "hostset-coordinator-config-{}-{tag}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn args(flags: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("hostset-coordinator").chain(flags.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults_without_a_file() {
        let d = Dir::new("defaults");
        let c = load_in(&args(&[]), &d.0, &SystemdDirs::default()).unwrap();
        assert_eq!(c.file, None);
        assert_eq!(c.listen, "127.0.0.1:8470".parse().unwrap());
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/hostset-coordinator"));
        assert_eq!(c.spec_dir, d.0.join("daemonsets.d"));
        assert_eq!(c.agent_token_file, d.0.join("coordinator/agent-tokens"));
        assert_eq!(c.read_token_file, d.0.join("coordinator/read-tokens"));
        assert_eq!((c.grace_period, c.max_report_bytes), (40, 1 << 20));
        assert_eq!(c.tls().unwrap(), None);

        let systemd = SystemdDirs {
            state: Some("/var/lib/private/x".into()),
            credentials: None,
        };
        let c = load_in(&args(&[]), &d.0, &systemd).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/private/x"));
    }

    #[test]
    fn flags_override_the_file() {
        let d = Dir::new("override");
        std::fs::write(
            d.0.join(CONFIG_FILE),
            "listen = \"[::]:9000\"\ngrace_period = 60\nspec_dir = \"/srv/specs\"\n\
             tls_cert = \"/etc/c.crt\"\ntls_key = \"/etc/c.key\"\n",
        )
        .unwrap();
        let c = load_in(
            &args(&[
                "--grace-period",
                "5",
                "--tls-key",
                "/k",
                "--max-report-bytes",
                "2048",
            ]),
            &d.0,
            &SystemdDirs::default(),
        )
        .unwrap();
        assert_eq!(c.file, Some(d.0.join(CONFIG_FILE)));
        assert_eq!(c.listen, "[::]:9000".parse().unwrap());
        assert_eq!(c.spec_dir, PathBuf::from("/srv/specs"));
        assert_eq!((c.grace_period, c.max_report_bytes), (5, 2048));
        let tls = c.tls().unwrap().unwrap();
        assert_eq!((tls.cert, tls.key), ("/etc/c.crt".into(), "/k".into()));
    }

    #[test]
    fn file_errors_name_the_file() {
        let d = Dir::new("errors");
        let file = d.0.join(CONFIG_FILE);
        let cases = [
            ("listen = \"x\"\nport = 1\n", ":2:1: unknown field `port`"),
            ("grace_period = \"a\"\n", ":1:16: invalid type"),
            (
                "spec_dir = \"specs\"\n",
                ": spec_dir: must be an absolute path",
            ),
            (
                "listen = \"localhost\"\n",
                ": listen: must be an IP address and a port",
            ),
            (
                "grace_period = 0\n",
                ": grace_period: must be at least 1 second",
            ),
            (
                "max_report_bytes = 10\n",
                ": max_report_bytes: must be at least 1024",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&file, text).unwrap();
            let err = load_in(&args(&[]), &d.0, &SystemdDirs::default())
                .unwrap_err()
                .to_string();
            let want = format!("{}{want}", file.display());
            assert!(
                err.starts_with(&want),
                "{text:?}: got {err:?}, want {want:?}"
            );
        }
        let missing = d.0.join("nope.toml");
        let err = load_in(
            &args(&["--config", missing.to_str().unwrap()]),
            &d.0,
            &SystemdDirs::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::File(FileError::Read { .. })),
            "{err}"
        );
    }

    #[test]
    fn tls_settings_go_together() {
        let d = Dir::new("tls");
        for (flags, want) in [
            (
                &["--tls-cert", "/c"][..],
                "--tls-cert (tls_cert) needs --tls-key",
            ),
            (
                &["--tls-key", "/k"][..],
                "--tls-key (tls_key) needs --tls-cert",
            ),
            (
                &["--client-ca-file", "/ca"][..],
                "--client-ca-file (client_ca_file) needs",
            ),
        ] {
            let err = load_in(&args(flags), &d.0, &SystemdDirs::default()).unwrap_err();
            assert!(err.to_string().starts_with(want), "{flags:?}: {err}");
        }
        let c = load_in(
            &args(&[
                "--tls-cert",
                "/c",
                "--tls-key",
                "/k",
                "--client-ca-file",
                "/ca",
            ]),
            &d.0,
            &SystemdDirs::default(),
        )
        .unwrap();
        assert_eq!(c.tls().unwrap().unwrap().client_ca, Some("/ca".into()));
    }

    #[test]
    fn files_of_the_token_directory_come_from_systemd_credentials() {
        let d = Dir::new("credentials");
        let creds = d.0.join("creds");
        std::fs::create_dir_all(&creds).unwrap();
        for name in ["coordinator_agent-tokens", "coordinator_tls.key"] {
            std::fs::write(creds.join(name), "").unwrap();
        }
        let systemd = SystemdDirs {
            state: None,
            credentials: Some(creds.clone()),
        };
        let token_dir = d.0.join("coordinator");
        let cert = token_dir.join("tls.crt");
        let key = token_dir.join("tls.key");
        let c = load_in(
            &args(&[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ]),
            &d.0,
            &systemd,
        )
        .unwrap();
        assert_eq!(c.agent_token_file, creds.join("coordinator_agent-tokens"));
        assert_eq!(c.tls_key, Some(creds.join("coordinator_tls.key")));
        // No copy: the path as configured (and its error, if unreadable, names it).
        assert_eq!(c.read_token_file, token_dir.join("read-tokens"));
        assert_eq!(c.tls_cert, Some(cert));
        // Files elsewhere are never replaced.
        let elsewhere = d.0.join("agent-tokens");
        let c = load_in(
            &args(&["--agent-token-file", elsewhere.to_str().unwrap()]),
            &d.0,
            &systemd,
        )
        .unwrap();
        assert_eq!(c.agent_token_file, elsewhere);
    }
}
