//! ssh host keys: the remote must present a key listed for its host in
//! `source.git.known_hosts_file` (OpenSSH's `known_hosts` format, default
//! `/etc/ssh/ssh_known_hosts`).
//!
//! Host patterns are matched as OpenSSH does for plain entries: `host`, `[host]:port` for a
//! port other than 22, `*` and `?` wildcards, `!pattern` negation. Hashed entries (`|1|...`,
//! `ssh-keyscan -H`) are not matched: list the host in clear (`ssh-keyscan host`). A
//! `@revoked` key is refused; `@cert-authority` lines are ignored.

use std::path::Path;

use ssh_key::known_hosts::{Entry, HostPatterns, Marker};

/// The port of an ssh URL (`ssh://host:2222/x`), 22 otherwise (`user@host:path`).
pub fn ssh_port(url: &str) -> u16 {
    url.strip_prefix("ssh://")
        .and_then(|rest| rest.split('/').next())
        .map(|authority| authority.rsplit_once('@').map_or(authority, |(_, h)| h))
        .and_then(|hostport| {
            // [v6]:port or host:port
            let (_, port) = hostport.rsplit_once(':')?;
            if hostport.ends_with(']') {
                return None;
            }
            port.parse().ok()
        })
        .unwrap_or(22)
}

/// `*` and `?` glob.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether `patterns` (one line's) match `name`.
fn matches(patterns: &[String], name: &str) -> bool {
    let mut hit = false;
    for p in patterns {
        if let Some(negated) = p.strip_prefix('!') {
            if glob(negated, name) {
                return false;
            }
        } else if glob(p, name) {
            hit = true;
        }
    }
    hit
}

/// Whether `key` (the SSH wire encoding of the host key libssh2 received) is a known key of
/// `host` on `port`, according to the file `known_hosts`.
pub fn check(known_hosts: &Path, host: &str, port: u16, key: &[u8]) -> Result<(), String> {
    let text = std::fs::read_to_string(known_hosts).map_err(|e| {
        format!(
            "cannot read the known hosts file {} (source.git.known_hosts_file): {e}; add the \
             remote's host key with `ssh-keyscan {host} >> {}`",
            known_hosts.display(),
            known_hosts.display()
        )
    })?;
    check_text(&text, &known_hosts.display().to_string(), host, port, key)
}

fn check_text(text: &str, shown: &str, host: &str, port: u16, key: &[u8]) -> Result<(), String> {
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut listed = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Ok(entry) = line.parse::<Entry>() else {
            continue;
        };
        let HostPatterns::Patterns(patterns) = entry.host_patterns() else {
            continue;
        };
        if !matches(patterns, &name) {
            continue;
        }
        let same = entry.public_key().to_bytes().is_ok_and(|b| b == key);
        match entry.marker() {
            Some(Marker::Revoked) if same => {
                return Err(format!(
                    "the host key of {name} is marked @revoked in {shown}"
                ));
            }
            Some(_) => continue,
            None => {}
        }
        listed = true;
        if same {
            return Ok(());
        }
    }
    if listed {
        Err(format!(
            "the host key of {name} does NOT match the keys listed for it in {shown}: the key \
             changed, or someone is intercepting the connection"
        ))
    } else {
        Err(format!(
            "{name} is not listed in {shown}: add its host key (`ssh-keyscan{} {host} >> {shown}`, \
             after checking it)",
            if port == 22 {
                String::new()
            } else {
                format!(" -p {port}")
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIUF1tt37tLrKcOqxyLbXOicGyarmcsIe0MMaxVdHS5A";

    fn blob() -> Vec<u8> {
        ssh_key::PublicKey::from_openssh(KEY)
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    #[test]
    fn ports() {
        assert_eq!(ssh_port("ssh://git@h:2222/r.git"), 2222);
        assert_eq!(ssh_port("ssh://h/r.git"), 22);
        assert_eq!(ssh_port("git@h:r.git"), 22);
        assert_eq!(ssh_port("ssh://[::1]/r"), 22);
    }

    #[test]
    fn host_keys() {
        let text = format!(
            "# hosts\ngit.example.com,10.0.0.1 {KEY}\n[gitlab.example.com]:2222 {KEY}\n*.corp,!bad.corp {KEY}\n"
        );
        assert!(check_text(&text, "kh", "git.example.com", 22, &blob()).is_ok());
        assert!(check_text(&text, "kh", "gitlab.example.com", 2222, &blob()).is_ok());
        assert!(check_text(&text, "kh", "a.corp", 22, &blob()).is_ok());
        let e = check_text(&text, "kh", "bad.corp", 22, &blob()).unwrap_err();
        assert!(e.contains("bad.corp is not listed in kh"), "{e}");
        let e = check_text(&text, "kh", "gitlab.example.com", 22, &blob()).unwrap_err();
        assert!(e.contains("not listed"), "{e}");
        let mut other = blob();
        let last = other.len() - 1;
        other[last] ^= 1;
        let e = check_text(&text, "kh", "git.example.com", 22, &other).unwrap_err();
        assert!(e.contains("does NOT match"), "{e}");
        let revoked = format!("@revoked git.example.com {KEY}\ngit.example.com {KEY}\n");
        assert!(
            check_text(&revoked, "kh", "git.example.com", 22, &blob())
                .unwrap_err()
                .contains("@revoked")
        );
    }
}
