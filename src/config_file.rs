//! What the daemons' TOML configuration files (`agent.toml`, `coordinator.toml`) share: reading
//! the file, errors that name the file with the line and column (syntax, unknown keys, wrong
//! types) or with the dotted key (values that are not allowed), the value checks (absolute
//! paths, seconds, percentages), and the sections both files have (`[source.git]`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// Why a configuration file cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read (a missing `--config FILE`, permissions, ...).
    #[error("{}: cannot read the configuration: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{}{}: {message}", file.display(), pos.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Syntax {
        file: PathBuf,
        /// Line and column, 1-based.
        pos: Option<(usize, usize)>,
        message: String,
    },
    /// A value of the right type that is not allowed.
    #[error("{}: {key}: {message}", file.display())]
    Value {
        file: PathBuf,
        /// The key, dotted: `thresholds.disk_available_percent`.
        key: String,
        message: String,
    },
}

/// The text of the configuration file `path`; `None` when it does not exist and was not asked
/// for explicitly (a missing default file is an empty one, a missing `--config FILE` an
/// error).
pub fn read(path: &Path, explicit: bool) -> Result<Option<String>, FileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(source) => Err(FileError::Read {
            file: path.to_path_buf(),
            source,
        }),
    }
}

/// Parse `text`, the content of `file`, into the file's shape `T`. Errors carry the line and
/// column.
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, FileError> {
    toml::from_str(text).map_err(|e| FileError::Syntax {
        file: file.to_path_buf(),
        pos: e.span().map(|s| line_col(text, s.start)),
        message: e.message().trim_end().to_string(),
    })
}

/// The value checks of one file: each error names the file and the dotted key.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    file: &'a Path,
}

impl<'a> Keys<'a> {
    pub fn new(file: &'a Path) -> Keys<'a> {
        Keys { file }
    }

    /// The error "`key`: `message`" in this file.
    pub fn error(&self, key: &str, message: impl Into<String>) -> FileError {
        FileError::Value {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// `p`, which must be absolute.
    pub fn absolute(&self, key: &str, p: PathBuf) -> Result<PathBuf, FileError> {
        if p.is_absolute() {
            Ok(p)
        } else {
            Err(self.error(
                key,
                format!("must be an absolute path, not \"{}\"", p.display()),
            ))
        }
    }

    /// [`Keys::absolute`] for an optional key.
    pub fn absolute_opt(
        &self,
        key: &str,
        p: Option<PathBuf>,
    ) -> Result<Option<PathBuf>, FileError> {
        p.map(|p| self.absolute(key, p)).transpose()
    }

    /// `v`, a percentage from 0 to 100.
    pub fn percent(&self, key: &str, v: f64) -> Result<f64, FileError> {
        if (0.0..=100.0).contains(&v) {
            Ok(v)
        } else {
            Err(self.error(key, format!("must be a percentage from 0 to 100, not {v}")))
        }
    }

    /// `v` seconds, 0 or more.
    pub fn seconds(&self, key: &str, v: f64) -> Result<Duration, FileError> {
        Duration::try_from_secs_f64(v).map_err(|_| {
            self.error(
                key,
                format!("must be a number of seconds, 0 or more, not {v}"),
            )
        })
    }

    /// `v` seconds, more than 0.
    pub fn positive_seconds(&self, key: &str, v: f64) -> Result<Duration, FileError> {
        match self.seconds(key, v)? {
            d if d.is_zero() => Err(self.error(key, "must be more than 0 seconds")),
            d => Ok(d),
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// Serde: an optional integer or float, as `f64` (`#[serde(default, deserialize_with =
/// "crate::config_file::number")]`).
pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
    }
    d.deserialize_any(V).map(Some)
}

// ---------------------------------------------------------------------------------------------
// [source.git]

/// Default `source.git.poll_interval`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Default `source.git.branch` when neither a branch nor a tag is given.
pub const DEFAULT_BRANCH: &str = "main";
/// Default `source.git.known_hosts_file` (ssh URLs).
pub const DEFAULT_KNOWN_HOSTS: &str = "/etc/ssh/ssh_known_hosts";

/// What `[source.git]` follows: a branch (its head moves) or a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    Branch(String),
    Tag(String),
}

impl GitRef {
    /// The full reference name: `refs/heads/NAME` or `refs/tags/NAME`.
    pub fn full_name(&self) -> String {
        match self {
            GitRef::Branch(b) => format!("refs/heads/{b}"),
            GitRef::Tag(t) => format!("refs/tags/{t}"),
        }
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitRef::Branch(b) => write!(f, "branch {b}"),
            GitRef::Tag(t) => write!(f, "tag {t}"),
        }
    }
}

/// How the remote is reached, from the URL's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `https://`, `http://`.
    Http,
    /// `ssh://`, `user@host:path`.
    Ssh,
    /// `git://` (unauthenticated, read-only).
    Git,
    /// `file://`.
    File,
}

/// `[source.git]`: daemonset specs from a branch or tag of a git repository (see the
/// README's "Git-synced specs").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// `url`.
    pub url: String,
    pub transport: Transport,
    /// `branch` or `tag` (default: branch `main`).
    pub reference: GitRef,
    /// `subdirectory`: where the specs are in the tree, `/`-separated, no leading or trailing
    /// `/`; empty for the top of the tree.
    pub subdirectory: String,
    /// `poll_interval` (jittered by ±10 %).
    pub poll_interval: Duration,
    /// `ssh_key_file`: the private key for ssh URLs (OpenSSH or PEM format, unencrypted).
    pub ssh_key_file: Option<PathBuf>,
    /// `known_hosts_file`: the host keys an ssh remote may present (ssh URLs only).
    pub known_hosts_file: PathBuf,
    /// `token_file`: a token sent as the password of HTTP basic authentication (https URLs).
    pub token_file: Option<PathBuf>,
    /// `username`: the user name sent with `token_file` (default `git`), or the ssh user when
    /// the URL has none (default `git`).
    pub username: String,
    /// `allowed_signers_file`: when set, only commits with an ssh signature by one of these
    /// keys (`ssh-keygen -Y verify`'s format, git's `gpg.ssh.allowedSignersFile`) are applied.
    pub allowed_signers_file: Option<PathBuf>,
}

/// The `[source]` table's shape (`source.git`, more sources may follow).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    git: Option<FileGit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGit {
    url: String,
    branch: Option<String>,
    tag: Option<String>,
    subdirectory: Option<String>,
    #[serde(default, deserialize_with = "number")]
    poll_interval: Option<f64>,
    ssh_key_file: Option<PathBuf>,
    known_hosts_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    username: Option<String>,
    allowed_signers_file: Option<PathBuf>,
}

/// The transport of `url`, or why it is no repository URL hostset can follow.
pub fn transport_of(url: &str) -> Result<Transport, String> {
    let bad = || {
        format!(
            "must be an https://, http://, ssh://, git:// or file:// URL, or user@host:path, not \
             \"{url}\""
        )
    };
    let rest = |prefix: &str| url.strip_prefix(prefix).filter(|r| !r.is_empty());
    if rest("https://").or_else(|| rest("http://")).is_some() {
        Ok(Transport::Http)
    } else if rest("ssh://").is_some() {
        Ok(Transport::Ssh)
    } else if rest("git://").is_some() {
        Ok(Transport::Git)
    } else if let Some(path) = rest("file://") {
        if path.starts_with('/') {
            Ok(Transport::File)
        } else {
            Err(format!(
                "a file:// URL needs an absolute path (file:///srv/fleet.git), not \"{url}\""
            ))
        }
    } else if !url.contains("://")
        && let Some((host, path)) = url.split_once(':')
        && !host.is_empty()
        && !path.is_empty()
        && !host.contains('/')
    {
        Ok(Transport::Ssh)
    } else {
        Err(bad())
    }
}

/// Why `name` is no branch or tag name git accepts (`git check-ref-format`, in short).
fn ref_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.starts_with('-') || name.starts_with('/') || name.ends_with('/') {
        return Some("must not start with - or /, nor end with /");
    }
    if name.ends_with(".lock") || name.ends_with('.') || name.contains("..") || name.contains("//")
    {
        return Some("must not contain .. or //, nor end with . or .lock");
    }
    if name.starts_with("refs/") {
        return Some("is the short name (main), not refs/heads/main");
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
        || name.contains("@{")
    {
        return Some("must not contain spaces, control characters or any of ~ ^ : ? * [ \\ @{");
    }
    None
}

/// The `[source]` table of a configuration file, checked: `None` without `[source.git]`.
pub fn git_source(keys: &Keys, source: FileSource) -> Result<Option<GitSource>, FileError> {
    let Some(g) = source.git else {
        return Ok(None);
    };
    let transport = transport_of(&g.url).map_err(|m| keys.error("source.git.url", m))?;
    let reference = match (g.branch, g.tag) {
        (Some(_), Some(_)) => {
            return Err(keys.error("source.git.tag", "give a branch or a tag, not both"));
        }
        (Some(b), None) => GitRef::Branch(b),
        (None, Some(t)) => GitRef::Tag(t),
        (None, None) => GitRef::Branch(DEFAULT_BRANCH.to_string()),
    };
    let (key, name) = match &reference {
        GitRef::Branch(b) => ("source.git.branch", b),
        GitRef::Tag(t) => ("source.git.tag", t),
    };
    if let Some(problem) = ref_name_problem(name) {
        return Err(keys.error(key, format!("\"{name}\" {problem}")));
    }
    let subdirectory = match g.subdirectory {
        None => String::new(),
        Some(s) => {
            let trimmed = s.trim_matches('/');
            if s.starts_with('/')
                || trimmed
                    .split('/')
                    .any(|c| c.is_empty() && !trimmed.is_empty() || c == "." || c == "..")
            {
                return Err(keys.error(
                    "source.git.subdirectory",
                    format!(
                        "must be a path inside the repository (\"fleet/daemonsets\"), without \
                         leading /, . or .. components, not \"{s}\""
                    ),
                ));
            }
            trimmed.to_string()
        }
    };
    let poll_interval = match g.poll_interval {
        None => DEFAULT_POLL_INTERVAL,
        Some(v) => keys.positive_seconds("source.git.poll_interval", v)?,
    };
    let ssh_key_file = keys.absolute_opt("source.git.ssh_key_file", g.ssh_key_file)?;
    let token_file = keys.absolute_opt("source.git.token_file", g.token_file)?;
    let known_hosts_file = keys
        .absolute_opt("source.git.known_hosts_file", g.known_hosts_file)?
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KNOWN_HOSTS));
    let allowed_signers_file =
        keys.absolute_opt("source.git.allowed_signers_file", g.allowed_signers_file)?;
    match transport {
        Transport::Ssh if ssh_key_file.is_none() => {
            return Err(keys.error(
                "source.git.ssh_key_file",
                "is required with an ssh URL (the agent has no ssh-agent): the private key \
                 file, e.g. \"/etc/hostset/git/id_ed25519\"",
            ));
        }
        Transport::Ssh => {}
        _ if ssh_key_file.is_some() => {
            return Err(keys.error(
                "source.git.ssh_key_file",
                "is only for ssh URLs (ssh://host/repo or user@host:repo)",
            ));
        }
        _ => {}
    }
    if token_file.is_some() && transport != Transport::Http {
        return Err(keys.error(
            "source.git.token_file",
            "is only for https:// (and http://) URLs",
        ));
    }
    Ok(Some(GitSource {
        url: g.url,
        transport,
        reference,
        subdirectory,
        poll_interval,
        ssh_key_file,
        known_hosts_file,
        token_file,
        username: g.username.unwrap_or_else(|| "git".to_string()),
        allowed_signers_file,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Shape {
        #[serde(default, deserialize_with = "number")]
        delay: Option<f64>,
    }

    #[test]
    fn errors_name_the_file_the_position_and_the_key() {
        let file = Path::new("/etc/x.toml");
        let e = parse::<Shape>(file, "delay = 1\n\nother = 2\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/x.toml:3:1: unknown field `other`, expected `delay`"
        );
        let e = parse::<Shape>(file, "delay = \"x\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with("/etc/x.toml:1:9: invalid type"),
            "{e}"
        );
        assert_eq!(
            parse::<Shape>(file, "delay = 2\n").unwrap().delay,
            Some(2.0)
        );
        assert_eq!(
            parse::<Shape>(file, "delay = 2.5\n").unwrap().delay,
            Some(2.5)
        );
        let keys = Keys::new(file);
        assert_eq!(
            keys.absolute("a.b", "rel".into()).unwrap_err().to_string(),
            "/etc/x.toml: a.b: must be an absolute path, not \"rel\""
        );
        assert!(keys.positive_seconds("t", 0.0).is_err());
        assert!(keys.seconds("t", -1.0).is_err());
        assert!(keys.percent("p", 101.0).is_err());
        assert_eq!(line_col("ab\ncdé\nx", 7), (2, 4));
    }

    #[test]
    fn a_missing_default_file_is_empty_a_missing_given_one_an_error() {
        let p = Path::new("/nonexistent/hostset/x.toml");
        assert!(read(p, false).unwrap().is_none());
        assert!(matches!(read(p, true), Err(FileError::Read { .. })));
    }

    fn git(text: &str) -> Result<Option<GitSource>, String> {
        #[derive(Deserialize)]
        struct F {
            #[serde(default)]
            source: FileSource,
        }
        let file = Path::new("/etc/hostset/agent.toml");
        let f: F = parse(file, text).map_err(|e| e.to_string())?;
        git_source(&Keys::new(file), f.source).map_err(|e| e.to_string())
    }

    #[test]
    fn the_git_section_with_its_defaults() {
        assert_eq!(git("").unwrap(), None);
        let g = git("[source.git]\nurl = \"https://git.example.com/fleet.git\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(g.transport, Transport::Http);
        assert_eq!(g.reference, GitRef::Branch("main".into()));
        assert_eq!(g.reference.full_name(), "refs/heads/main");
        assert_eq!(g.subdirectory, "");
        assert_eq!(g.poll_interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(g.username, "git");
        assert_eq!(g.allowed_signers_file, None);
        let g = git(
            "[source.git]\nurl = \"git@git.example.com:ops/fleet.git\"\ntag = \"v1.2\"\n\
             subdirectory = \"hosts/daemonsets/\"\npoll_interval = 2.5\n\
             ssh_key_file = \"/etc/hostset/git/id_ed25519\"\n\
             allowed_signers_file = \"/etc/hostset/git/allowed_signers\"\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(g.transport, Transport::Ssh);
        assert_eq!(g.reference, GitRef::Tag("v1.2".into()));
        assert_eq!(g.subdirectory, "hosts/daemonsets");
        assert_eq!(g.poll_interval, Duration::from_millis(2500));
        assert_eq!(g.known_hosts_file, PathBuf::from(DEFAULT_KNOWN_HOSTS));
        for (url, t) in [
            ("ssh://git@h/r.git", Transport::Ssh),
            ("git://127.0.0.1:9418/r.git", Transport::Git),
            ("file:///srv/r.git", Transport::File),
            ("http://h/r", Transport::Http),
        ] {
            assert_eq!(transport_of(url), Ok(t), "{url}");
        }
    }

    #[test]
    fn git_section_errors_name_the_key_and_what_is_valid() {
        let cases = [
            ("url = \"ftp://x/y\"", "source.git.url: must be an https://"),
            (
                "url = \"file://relative\"",
                "source.git.url: a file:// URL needs an absolute path",
            ),
            ("url = \"/srv/x.git\"", "source.git.url: must be"),
            (
                "url = \"https://h/r\"\nbranch = \"a\"\ntag = \"b\"",
                "source.git.tag: give a branch or a tag",
            ),
            (
                "url = \"https://h/r\"\nbranch = \"a b\"",
                "source.git.branch: \"a b\" must not contain spaces",
            ),
            (
                "url = \"https://h/r\"\nbranch = \"refs/heads/main\"",
                "source.git.branch: \"refs/heads/main\" is the short name",
            ),
            (
                "url = \"https://h/r\"\nsubdirectory = \"../x\"",
                "source.git.subdirectory: must be a path inside",
            ),
            (
                "url = \"https://h/r\"\nsubdirectory = \"/x\"",
                "source.git.subdirectory: must be a path inside",
            ),
            (
                "url = \"https://h/r\"\npoll_interval = 0",
                "source.git.poll_interval: must be more than 0 seconds",
            ),
            (
                "url = \"ssh://h/r\"",
                "source.git.ssh_key_file: is required with an ssh URL",
            ),
            (
                "url = \"https://h/r\"\nssh_key_file = \"/k\"",
                "source.git.ssh_key_file: is only for ssh URLs",
            ),
            (
                "url = \"ssh://h/r\"\nssh_key_file = \"/k\"\ntoken_file = \"/t\"",
                "source.git.token_file: is only for https://",
            ),
            (
                "url = \"https://h/r\"\ntoken_file = \"t\"",
                "source.git.token_file: must be an absolute path",
            ),
            (
                "url = \"https://h/r\"\nbrnach = \"x\"",
                "/etc/hostset/agent.toml:3:1: unknown field `brnach`",
            ),
        ];
        for (body, want) in cases {
            let err = git(&format!("[source.git]\n{body}\n")).unwrap_err();
            assert!(err.contains(want), "{body:?}: got {err:?}, want {want:?}");
        }
    }
}
