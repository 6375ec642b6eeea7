//! Bearer tokens: who may report, and who may read.
//!
//! # Token files
//!
//! The **agent token file** holds one token per line, optionally followed by a node name:
//!
//! ```text
//! # hostset agent tokens
//! 3b1d0c6f0e9a4c2e8f7a6b5c4d3e2f1a              # may report for any node
//! 9f8e7d6c5b4a39281706f5e4d3c2b1a0  db-1        # may report for db-1 only
//! ```
//!
//! - A token alone may report, heartbeat and say goodbye (`DELETE /v1/nodes/NAME`) for any
//!   node; a token followed by a node name (a DNS-1123 subdomain) only for that node. Agent
//!   tokens may read too.
//! - The **read token file** holds one token per line; such a token may only read (`GET
//!   /v1/...`, `/metrics`). A token followed by the word `operator` may also steer rollouts
//!   (`hostset rollout pause|resume|undo`) — the operators' token, not the agents'.
//! - `#` at the start of a line, or after whitespace, starts a comment; blank lines are fine.
//! - A token is at least [`MIN_TOKEN_LEN`] characters of visible ASCII (what an HTTP header
//!   can carry); `openssl rand -hex 32` makes a good one. A token may appear only once across
//!   both files. Any other line is an error naming the file and line.
//! - Neither file may be accessible by group or others (`chmod 600`): the coordinator
//!   refuses to start otherwise. (systemd's credential copies, under
//!   `$CREDENTIALS_DIRECTORY`, are private to the service: their group bits show an ACL's
//!   mask and are not checked.)
//!
//! # Reloading
//!
//! The files are looked at again when a request arrives at least a second after the last
//! look (their size, modification and change times and inode are compared, so an edit in
//! place and a rename into place are both seen), and at once on [`Auth::reload`] (`SIGHUP`):
//! a new token works, and a removed one stops working, within a second. A file that has
//! become invalid (or unreadable, or group/world-accessible) is logged and the tokens
//! read before stay in force until it is fixed. Credentials passed by systemd are copies
//! made when the service starts: after editing the source file, restart the service.
//!
//! # Checks
//!
//! `Authorization: Bearer TOKEN` (the scheme in any case). Missing or malformed: 401 with
//! `WWW-Authenticate: Bearer`. An unknown token: 401. A known token lacking the right (a
//! read token on a write route, a node-bound token for another node): 403.
//!
//! The presented token is looked up by a keyed hash (SipHash with a key drawn at random when
//! the coordinator starts), and the token found there, if any, is compared in constant time.
//! So the answer's timing does not tell how much of a guess was right (which stored token
//! gets compared depends on a hash an attacker cannot compute), and it stays flat however
//! many tokens there are: a fleet of 50,000 nodes with a node-bound token each costs one
//! hash per request, not 50,000 comparisons.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// How often, at most, the token files are looked at for changes.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An agent token: read, and write for `node` (any node when `None`).
    Agent { node: Option<String> },
    /// A read token.
    Reader,
    /// A read token marked `operator`: reads, and steers rollouts.
    Operator,
}

/// Why a read token may not write.
const READ_ONLY: &str = "this token may only read: writing needs an agent token";

impl Principal {
    /// This principal, if it is an agent token (a read token may not write).
    pub fn require_agent(self) -> Result<Principal, Denied> {
        match self {
            Principal::Reader | Principal::Operator => {
                Err(Denied::Forbidden(READ_ONLY.to_string()))
            }
            agent => Ok(agent),
        }
    }

    /// Whether this token may report, heartbeat or say goodbye for `node`.
    pub fn may_write(&self, node: &str) -> Result<(), Denied> {
        match self {
            Principal::Agent { node: None } => Ok(()),
            Principal::Agent { node: Some(own) } if own == node => Ok(()),
            Principal::Agent { node: Some(own) } => Err(Denied::Forbidden(format!(
                "this token may only act for node \"{own}\", not \"{node}\""
            ))),
            Principal::Reader | Principal::Operator => {
                Err(Denied::Forbidden(READ_ONLY.to_string()))
            }
        }
    }

    /// Whether this token may pause, resume or undo rollouts.
    pub fn may_operate(&self) -> Result<(), Denied> {
        match self {
            Principal::Operator => Ok(()),
            _ => Err(Denied::Forbidden(
                "steering rollouts needs an operator token (a read token followed by the word \
                 `operator` in the read token file)"
                    .to_string(),
            )),
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization` header (401).
    Missing,
    /// An `Authorization` header that is not `Bearer TOKEN` (401).
    Malformed,
    /// A token nobody issued (401).
    Unknown,
    /// A known token without the right (403).
    Forbidden(String),
}

impl Denied {
    /// The error message for the client.
    pub fn message(&self) -> String {
        match self {
            Denied::Missing => {
                "authentication required: send the header \"Authorization: Bearer TOKEN\"".into()
            }
            Denied::Malformed => "malformed Authorization header: expected \"Bearer TOKEN\"".into(),
            Denied::Unknown => "unknown token".into(),
            Denied::Forbidden(why) => why.clone(),
        }
    }

    /// Whether this is a 403 rather than a 401.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Denied::Forbidden(_))
    }
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("{}: cannot read the token file: {error}", file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{}: the token file is accessible by group or others (mode {mode:04o}): anyone who can \
         read it can pose as an agent; chmod 600 {}",
        file.display(),
        file.display()
    )]
    Exposed { file: PathBuf, mode: u32 },
    #[error("{}:{line}: {message}", file.display())]
    Line {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// One token and its right.
#[derive(Debug, Clone)]
struct Entry {
    token: Vec<u8>,
    principal: Principal,
}

/// What identifies a file's content without reading it.
type Stamp = (u64, u64, i64, i64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

struct Loaded {
    entries: Vec<Entry>,
    /// The entries by the keyed hash of their token ([`Auth::hasher`]).
    index: HashMap<u64, Vec<usize>>,
    stamps: [Option<Stamp>; 2],
    checked: Instant,
    /// The last reload error, logged once.
    problem: Option<String>,
}

/// The agent and read tokens, re-read when their files change. See the [module docs](self).
pub struct Auth {
    agent_file: PathBuf,
    read_file: PathBuf,
    /// The key of the token index, random per process.
    hasher: RandomState,
    loaded: RwLock<Loaded>,
}

impl Auth {
    /// Read both token files; any problem is an error.
    pub fn load(agent_file: &Path, read_file: &Path) -> Result<Auth, TokenFileError> {
        let stamps = [stamp(agent_file), stamp(read_file)];
        let entries = read_both(agent_file, read_file)?;
        if !entries
            .iter()
            .any(|e| matches!(e.principal, Principal::Agent { .. }))
        {
            tracing::warn!(file = %agent_file.display(), "{}: no agent tokens: no agent can report", agent_file.display());
        }
        let hasher = RandomState::new();
        Ok(Auth {
            agent_file: agent_file.to_path_buf(),
            read_file: read_file.to_path_buf(),
            loaded: RwLock::new(Loaded {
                index: index(&hasher, &entries),
                entries,
                stamps,
                checked: Instant::now(),
                problem: None,
            }),
            hasher,
        })
    }

    /// Re-read both files now. On an error the tokens in force stay, and the error is
    /// returned (and logged once).
    pub fn reload(&self) -> Result<(), TokenFileError> {
        let stamps = [stamp(&self.agent_file), stamp(&self.read_file)];
        let result = read_both(&self.agent_file, &self.read_file);
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        loaded.stamps = stamps;
        loaded.checked = Instant::now();
        match result {
            Ok(entries) => {
                if loaded.problem.take().is_some() || !same_tokens(&loaded.entries, &entries) {
                    tracing::info!(
                        agent_tokens = entries
                            .iter()
                            .filter(|e| matches!(e.principal, Principal::Agent { .. }))
                            .count(),
                        read_tokens = entries
                            .iter()
                            .filter(|e| e.principal == Principal::Reader)
                            .count(),
                        "token files read"
                    );
                }
                loaded.index = index(&self.hasher, &entries);
                loaded.entries = entries;
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                if loaded.problem.as_deref() != Some(&message) {
                    tracing::error!(error = %message, "cannot reload the tokens: {message}; the tokens read before stay in force");
                    loaded.problem = Some(message);
                }
                Err(e)
            }
        }
    }

    /// Reload when a file changed, at most once per [`RECHECK_INTERVAL`].
    fn refresh(&self) {
        {
            let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            if loaded.checked.elapsed() < RECHECK_INTERVAL {
                return;
            }
        }
        let stamps = [stamp(&self.agent_file), stamp(&self.read_file)];
        let changed = {
            let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
            loaded.checked = Instant::now();
            loaded.stamps != stamps
        };
        if changed {
            let _ = self.reload();
        }
    }

    /// Who sends these headers: a known token's [`Principal`], or why not.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Denied> {
        let presented = bearer(headers)?;
        self.refresh();
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        // Only the tokens under the presented one's keyed hash are compared (almost always
        // one or none), each in constant time: see the module docs.
        let presented = presented.as_bytes();
        let mut found: Option<&Principal> = None;
        for &i in loaded
            .index
            .get(&self.hasher.hash_one(presented))
            .map_or(&[][..], Vec::as_slice)
        {
            let e = &loaded.entries[i];
            if constant_time_eq(&e.token, presented) {
                found = Some(&e.principal);
            }
        }
        found.cloned().ok_or(Denied::Unknown)
    }
}

/// The positions of `entries` by the keyed hash of their token.
fn index(hasher: &RandomState, entries: &[Entry]) -> HashMap<u64, Vec<usize>> {
    let mut index: HashMap<u64, Vec<usize>> = HashMap::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        index
            .entry(hasher.hash_one(e.token.as_slice()))
            .or_default()
            .push(i);
    }
    index
}

/// The token of `Authorization: Bearer TOKEN`.
fn bearer(headers: &HeaderMap) -> Result<&str, Denied> {
    let value = headers.get(AUTHORIZATION).ok_or(Denied::Missing)?;
    let value = value.to_str().map_err(|_| Denied::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(Denied::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(Denied::Malformed);
    }
    Ok(token)
}

/// Equal bytes, in a time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i).copied().unwrap_or(!x);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn same_tokens(a: &[Entry], b: &[Entry]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.token == y.token && x.principal == y.principal)
}

/// Both files, with duplicates across them refused.
fn read_both(agent_file: &Path, read_file: &Path) -> Result<Vec<Entry>, TokenFileError> {
    let mut entries: Vec<Entry> = read_file_checked(agent_file, true)?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let agent_tokens: std::collections::HashSet<Vec<u8>> =
        entries.iter().map(|e| e.token.clone()).collect();
    for (line, e) in read_file_checked(read_file, false)? {
        if agent_tokens.contains(&e.token) {
            return Err(TokenFileError::Line {
                file: read_file.to_path_buf(),
                line,
                message: format!(
                    "this token is also an agent token in {}: give each token one right",
                    agent_file.display()
                ),
            });
        }
        entries.push(e);
    }
    Ok(entries)
}

/// Read and parse one token file after checking its mode.
fn read_file_checked(file: &Path, agent: bool) -> Result<Vec<(usize, Entry)>, TokenFileError> {
    use std::os::unix::fs::PermissionsExt;
    let read_error = |error| TokenFileError::Read {
        file: file.to_path_buf(),
        error,
    };
    let meta = std::fs::metadata(file).map_err(read_error)?;
    let mode = meta.permissions().mode() & 0o7777;
    // systemd's credential copies are private to the service, with an ACL granting it read
    // access; the group bits of such a file show the ACL's mask, not a group's access.
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .is_some_and(|d| !d.is_empty() && file.starts_with(d));
    let exposed = if credential { 0o007 } else { 0o077 };
    if mode & exposed != 0 {
        return Err(TokenFileError::Exposed {
            file: file.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(file).map_err(read_error)?;
    parse(file, &text, agent)
}

/// Parse a token file's text (see the [module docs](self)); `agent`: the agent token file,
/// where a node name may follow the token. Returns each entry with its line number.
fn parse(file: &Path, text: &str, agent: bool) -> Result<Vec<(usize, Entry)>, TokenFileError> {
    let mut out: Vec<(usize, Entry)> = Vec::new();
    // Each token's line, to refuse duplicates without comparing every pair.
    let mut lines: HashMap<&str, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let error = |message: String| TokenFileError::Line {
            file: file.to_path_buf(),
            line,
            message,
        };
        let mut words = Vec::new();
        for word in raw.split_whitespace() {
            if word.starts_with('#') {
                break;
            }
            words.push(word);
        }
        let mut operator = false;
        let (token, node) = match words.as_slice() {
            [] => continue,
            [token] => (*token, None),
            [token, node] if agent => (*token, Some(*node)),
            [token, "operator"] => {
                operator = true;
                (*token, None)
            }
            [_, _] => {
                return Err(error(
                    "a read token file has one token per line, optionally followed by the \
                     word `operator`, and nothing else"
                        .into(),
                ));
            }
            _ => {
                return Err(error(
                    "expected TOKEN or TOKEN NODE-NAME, and nothing else".into(),
                ));
            }
        };
        if token.len() < MIN_TOKEN_LEN {
            return Err(error(format!(
                "the token is {} characters long: use at least {MIN_TOKEN_LEN} (e.g. openssl \
                 rand -hex 32)",
                token.len()
            )));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(error(
                "a token must be visible ASCII characters (what an HTTP header can carry)".into(),
            ));
        }
        if let Some(node) = node {
            let problems = crate::syntax::is_dns1123_subdomain(node);
            if !problems.is_empty() {
                return Err(error(format!(
                    "invalid node name \"{node}\": {}",
                    problems.join("; ")
                )));
            }
        }
        if let Some(first) = lines.insert(token, line) {
            return Err(error(format!(
                "this token is already on line {first}: give each token one line"
            )));
        }
        let principal = if agent {
            Principal::Agent {
                node: node.map(str::to_string),
            }
        } else if operator {
            Principal::Operator
        } else {
            Principal::Reader
        };
        out.push((
            line,
            Entry {
                token: token.as_bytes().to_vec(),
                principal,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbb";

    fn principals(text: &str, agent: bool) -> Result<Vec<(usize, Principal)>, TokenFileError> {
        parse(Path::new("f"), text, agent)
            .map(|v| v.into_iter().map(|(l, e)| (l, e.principal)).collect())
    }

    #[test]
    fn agent_file_lines() {
        let text = format!("# comment\n\n{A}\n  {B}   db-1.example  # bound\n");
        let parsed = principals(&text, true).unwrap();
        assert_eq!(
            parsed,
            vec![
                (3, Principal::Agent { node: None }),
                (
                    4,
                    Principal::Agent {
                        node: Some("db-1.example".into())
                    }
                ),
            ]
        );
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [
            (
                format!("{A} db-1 extra\n"),
                true,
                "f:1: expected TOKEN or TOKEN NODE-NAME",
            ),
            (
                format!("{A} db-1\n"),
                false,
                "f:1: a read token file has one token per line",
            ),
            (
                "\nshort\n".to_string(),
                true,
                "f:2: the token is 5 characters long",
            ),
            (
                format!("{A} Not_A_Node\n"),
                true,
                "f:1: invalid node name \"Not_A_Node\"",
            ),
            (
                format!("{A}\n{A}\n"),
                false,
                "f:2: this token is already on line 1",
            ),
        ];
        for (text, agent, want) in cases {
            let err = principals(&text, agent).unwrap_err().to_string();
            assert!(
                err.starts_with(want),
                "{text:?}: got {err:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Err(Denied::Missing));
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), Err(Denied::Malformed));
        h.insert(AUTHORIZATION, "Bearer".parse().unwrap());
        assert_eq!(bearer(&h), Err(Denied::Malformed));
        h.insert(AUTHORIZATION, format!("bearer {A}").parse().unwrap());
        assert_eq!(bearer(&h), Ok(A));
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn rights() {
        let any = Principal::Agent { node: None };
        let bound = Principal::Agent {
            node: Some("a".into()),
        };
        assert!(any.may_write("x").is_ok());
        assert!(bound.may_write("a").is_ok());
        assert!(bound.may_write("b").unwrap_err().is_forbidden());
        assert!(Principal::Reader.may_write("a").unwrap_err().is_forbidden());
    }
}
