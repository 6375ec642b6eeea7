//! The coordinator's read API (`/v1`) from the command line: where the coordinator is, the
//! token, TLS, and errors that say what to do.
//!
//! Where the coordinator is, in order: `--coordinator URL`, `$HOSTSET_COORDINATOR`, else the
//! `[coordinator]` table of `$HOSTSET_CONFIG_DIR/agent.toml` (default
//! `/etc/hostset/agent.toml`), so a host with an agent needs no flags. The token file and the
//! CA file come from their flags or variables, else from the same table, but only when the
//! coordinator is the one that table names: a host's token is never sent to another server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::api::ApiError;

/// How long to wait for a connection, and for a whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where system CA bundles live (Debian/Ubuntu, Fedora/RHEL, openSUSE, Alpine and others),
/// read when no `--ca-file` is given: the build carries no root store of its own.
const SYSTEM_CA_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The global options that say how to reach the coordinator.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CoordinatorArgs {
    /// The coordinator's URL [default: `url` in the [coordinator] table of
    /// $HOSTSET_CONFIG_DIR/agent.toml, i.e. /etc/hostset/agent.toml].
    #[arg(
        long,
        global = true,
        env = "HOSTSET_COORDINATOR",
        value_name = "URL",
        help_heading = "Coordinator"
    )]
    pub coordinator: Option<String>,
    /// A file holding the bearer token [default: `token_file` in agent.toml's [coordinator]].
    #[arg(
        long,
        global = true,
        env = "HOSTSET_TOKEN_FILE",
        value_name = "FILE",
        help_heading = "Coordinator"
    )]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the coordinator's certificate [default: `ca_file` in
    /// agent.toml's [coordinator], else the system's CA bundle].
    #[arg(
        long,
        global = true,
        env = "HOSTSET_CA_FILE",
        value_name = "FILE",
        help_heading = "Coordinator"
    )]
    pub ca_file: Option<PathBuf>,
}

/// The `[coordinator]` table of agent.toml, read leniently: other tables and keys are the
/// agent's business.
#[derive(Debug, Default, PartialEq, Eq)]
struct FromConfig {
    file: PathBuf,
    url: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

fn config_file() -> PathBuf {
    std::env::var_os("HOSTSET_CONFIG_DIR")
        .map_or_else(|| PathBuf::from("/etc/hostset"), PathBuf::from)
        .join("agent.toml")
}

/// `Ok(None)` when the file does not exist.
fn read_config(file: &Path) -> anyhow::Result<Option<FromConfig>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    parse_config(file, &text).map(Some)
}

fn parse_config(file: &Path, text: &str) -> anyhow::Result<FromConfig> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| anyhow!("{} is not valid TOML: {}", file.display(), e.message()))?;
    let mut config = FromConfig {
        file: file.to_path_buf(),
        ..FromConfig::default()
    };
    let Some(coordinator) = table.get("coordinator").and_then(toml::Value::as_table) else {
        return Ok(config);
    };
    let string = |key: &str| coordinator.get(key).and_then(toml::Value::as_str);
    let base = file.parent().unwrap_or(Path::new("/"));
    config.url = string("url").map(str::to_string);
    config.token_file = string("token_file").map(|p| base.join(p));
    config.ca_file = string("ca_file").map(|p| base.join(p));
    Ok(config)
}

fn same_coordinator(a: &Url, b: &str) -> bool {
    Url::parse(b).is_ok_and(|b| {
        a.scheme() == b.scheme()
            && a.host_str() == b.host_str()
            && a.port_or_known_default() == b.port_or_known_default()
            && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
    })
}

/// The bearer token and where it came from, for messages.
struct Token {
    value: String,
    file: PathBuf,
}

/// A connection to the coordinator: one blocking call at a time.
pub struct Client {
    base: Url,
    /// The URL as messages show it.
    shown: String,
    token: Option<Token>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// What a path names, for a 404: `daemonset "x" not found`.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub kind: &'a str,
    pub name: &'a str,
}

impl Client {
    /// Resolve the options (flags, environment, agent.toml), read the token and CA files,
    /// and build the HTTP client. Nothing is sent yet.
    pub fn new(args: &CoordinatorArgs) -> anyhow::Result<Client> {
        let config_path = config_file();
        // An empty value (`HOSTSET_COORDINATOR=`) counts as none.
        let given = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        let coordinator = args.coordinator.clone().filter(|u| !u.is_empty());
        let (url, config) = match coordinator {
            Some(url) => (url, read_config(&config_path).ok().flatten()),
            None => {
                let config = read_config(&config_path)
                    .context("no coordinator given (--coordinator URL or HOSTSET_COORDINATOR)")?;
                let Some(url) = config.as_ref().and_then(|c| c.url.clone()) else {
                    bail!(
                        "no coordinator given: use --coordinator URL, set HOSTSET_COORDINATOR, \
                         or set url in the [coordinator] table of {}",
                        config_path.display()
                    );
                };
                (url, config)
            }
        };
        let shown = url.trim_end_matches('/').to_string();
        let base =
            Url::parse(&url).map_err(|e| anyhow!("invalid coordinator URL \"{url}\": {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("invalid coordinator URL \"{url}\": it must start with https:// or http://");
        }
        // The host's own settings apply to the host's own coordinator only.
        let config =
            config.filter(|c| c.url.as_deref().is_some_and(|u| same_coordinator(&base, u)));
        let token = match (given(&args.token_file), &config) {
            (Some(file), _) => Some(read_token(file, None)?),
            (
                None,
                Some(FromConfig {
                    token_file: Some(file),
                    file: origin,
                    ..
                }),
            ) => Some(read_token(file.clone(), Some(origin))?),
            _ => None,
        };
        let ca_file =
            given(&args.ca_file).or_else(|| config.as_ref().and_then(|c| c.ca_file.clone()));

        // reqwest is built without a crypto provider of its own: install ring's, once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("hostset/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // Never follow a redirect with the token.
            .redirect(reqwest::redirect::Policy::none());
        if base.scheme() == "https" {
            for cert in ca_certificates(ca_file.as_deref())? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().context("cannot set up the HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Client {
            base,
            shown,
            token,
            http,
            runtime,
        })
    }

    /// The coordinator's URL as given.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// `GET /v1/{path...}`, decoded. `subject` names what a 404 means.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &[&str],
        subject: Option<Subject>,
    ) -> anyhow::Result<T> {
        self.get_query(path, &[], subject)
    }

    /// `GET /v1/{path...}?query`, decoded.
    pub fn get_query<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
        subject: Option<Subject>,
    ) -> anyhow::Result<T> {
        let (url, body) = self.call(Method::GET, path, query, None, subject)?;
        serde_json::from_slice(&body).map_err(|e| {
            anyhow!(
                "the coordinator at {} answered GET {} with something this hostset does not \
                 understand ({e}); are the coordinator and the CLI the same version?",
                self.shown,
                url.path()
            )
        })
    }

    /// `DELETE /v1/{path...}`.
    pub fn delete(&self, path: &[&str], subject: Option<Subject>) -> anyhow::Result<()> {
        self.call(Method::DELETE, path, &[], None, subject)
            .map(drop)
    }

    /// `POST /v1/{path...}` with a JSON body; the answer's body.
    pub fn post(
        &self,
        path: &[&str],
        body: &impl serde::Serialize,
        subject: Option<Subject>,
    ) -> anyhow::Result<Vec<u8>> {
        let body = serde_json::to_vec(body)?;
        self.call(Method::POST, path, &[], Some(body), subject)
            .map(|(_, b)| b)
    }

    fn call(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        subject: Option<Subject>,
    ) -> anyhow::Result<(Url, Vec<u8>)> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow!("invalid coordinator URL {}", self.shown))?
            .pop_if_empty()
            .push("v1")
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(&token.value);
        }
        let (status, body) = self
            .runtime
            .block_on(async {
                let response = request.send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, body))
            })
            .map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            return Ok((url, body.to_vec()));
        }
        Err(self.status_error(&method, &url, status, &body, subject))
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        if e.is_timeout() {
            return anyhow!(
                "cannot reach the coordinator at {}: timed out (after {} s to connect, {} s in \
                 all)",
                self.shown,
                CONNECT_TIMEOUT.as_secs(),
                REQUEST_TIMEOUT.as_secs()
            );
        }
        // reqwest's own message ("error sending request for url (...)") says nothing the
        // user needs; the innermost cause does ("Connection refused (os error 111)",
        // "invalid peer certificate: UnknownIssuer").
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let cause = cause.to_string();
        let hint = if cause.contains("certificate") || cause.contains("Certificate") {
            " (give the CA that signed the coordinator's certificate with --ca-file FILE)"
        } else {
            ""
        };
        anyhow!(
            "cannot reach the coordinator at {}: {cause}{hint}",
            self.shown
        )
    }

    fn status_error(
        &self,
        method: &Method,
        url: &Url,
        status: StatusCode,
        body: &[u8],
        subject: Option<Subject>,
    ) -> anyhow::Error {
        let message = serde_json::from_slice::<ApiError>(body)
            .map(|e| e.error)
            .unwrap_or_else(|_| {
                // Not the API's error body (a proxy's page?): its first line, shortened.
                let text = String::from_utf8_lossy(body);
                let line = text.trim().lines().next().unwrap_or("");
                let mut short: String = line.chars().take(200).collect();
                if short.len() < line.len() {
                    short.push('…');
                }
                short
            });
        let said = if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        };
        let code = status.as_u16();
        let reason = status.canonical_reason().unwrap_or("");
        match (status, &self.token, subject) {
            (StatusCode::UNAUTHORIZED, None, _) => anyhow!(
                "the coordinator at {} wants a token, and none was given ({code} {reason}{said}): \
                 use --token-file FILE, set HOSTSET_TOKEN_FILE, or set token_file in the \
                 [coordinator] table of {}",
                self.shown,
                config_file().display()
            ),
            (StatusCode::UNAUTHORIZED, Some(token), _) => anyhow!(
                "the coordinator at {} does not accept the token in {} ({code} {reason}{said}): \
                 the token is wrong or has been revoked",
                self.shown,
                token.file.display()
            ),
            (StatusCode::FORBIDDEN, token, _) => {
                let whose = token.as_ref().map_or_else(
                    || "without a token".to_string(),
                    |t| format!("with the token in {}", t.file.display()),
                );
                let why = if *method == Method::GET {
                    "the token may not read this"
                } else if *method == Method::POST {
                    "steering a rollout needs an operator token (a read token marked `operator` \
                     in the coordinator's read token file)"
                } else {
                    "this needs an agent token that may act for this node (a read token is \
                     read-only)"
                };
                anyhow!(
                    "the coordinator at {} refuses {method} {} {whose} ({code} {reason}{said}): \
                     {why}",
                    self.shown,
                    url.path()
                )
            }
            (StatusCode::NOT_FOUND, _, Some(s)) => anyhow!("{} \"{}\" not found", s.kind, s.name),
            _ => anyhow!(
                "the coordinator at {} answered {method} {} with {code} {reason}{said}",
                self.shown,
                url.path()
            ),
        }
    }
}

/// The token in `file`; `origin` is the agent.toml that named it, for messages.
fn read_token(file: PathBuf, origin: Option<&Path>) -> anyhow::Result<Token> {
    let shown = match origin {
        Some(o) => format!(
            "{} (token_file in the [coordinator] table of {})",
            file.display(),
            o.display()
        ),
        None => file.display().to_string(),
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read the token file {shown}"))?;
    let value = text.trim().to_string();
    if value.is_empty() {
        bail!("the token file {shown} is empty");
    }
    if !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        bail!("the token file {shown} must hold one token on one line (printable ASCII)");
    }
    Ok(Token { value, file })
}

/// The CA file's certificates, or the system's bundle when none is given.
fn ca_certificates(ca_file: Option<&Path>) -> anyhow::Result<Vec<reqwest::Certificate>> {
    if let Some(file) = ca_file {
        let pem = std::fs::read(file)
            .with_context(|| format!("cannot read the CA file {}", file.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .with_context(|| format!("the CA file {} holds no PEM certificate", file.display()))?;
        return Ok(certs);
    }
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(pem) = std::fs::read(&path)
            && let Ok(certs) = reqwest::Certificate::from_pem_bundle(&pem)
            && !certs.is_empty()
        {
            return Ok(certs);
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_read_leniently() {
        let file = Path::new("/etc/hostset/agent.toml");
        let c = parse_config(
            file,
            r#"
spec_dir = "/x"
unknown = 1
[thresholds]
memory_available = "1Gi"
[coordinator]
url = "https://c.example:8443"
token_file = "/etc/hostset/coordinator.token"
ca_file = "ca.pem"
other = true
"#,
        )
        .unwrap();
        assert_eq!(c.url.as_deref(), Some("https://c.example:8443"));
        assert_eq!(
            c.token_file.as_deref(),
            Some(Path::new("/etc/hostset/coordinator.token"))
        );
        assert_eq!(c.ca_file.as_deref(), Some(Path::new("/etc/hostset/ca.pem")));

        let none = parse_config(file, "spec_dir = \"/x\"\n").unwrap();
        assert_eq!(none.url, None);
        let wrong_type = parse_config(file, "coordinator = 3\n").unwrap();
        assert_eq!(wrong_type.url, None);
        let err = parse_config(file, "[coordinator\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/hostset/agent.toml is not valid TOML"),
            "{err}"
        );
    }

    #[test]
    fn same_coordinator_ignores_spelling() {
        let a = Url::parse("https://C.example:443/").unwrap();
        assert!(same_coordinator(&a, "https://c.example"));
        assert!(same_coordinator(&a, "https://c.example/"));
        assert!(!same_coordinator(&a, "http://c.example"));
        assert!(!same_coordinator(&a, "https://c.example:8443"));
        assert!(!same_coordinator(&a, "https://d.example"));
        assert!(!same_coordinator(&a, "not a url"));
    }
}
