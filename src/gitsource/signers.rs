//! ssh commit signatures: the allowed-signers file (`ssh-keygen -Y verify`'s format, git's
//! `gpg.ssh.allowedSignersFile`) and the verification of a commit's `gpgsig` SSHSIG, in
//! process.
//!
//! A line is `PRINCIPALS [OPTIONS] KEYTYPE BASE64-KEY [COMMENT]`; `#` starts a comment line.
//! Options honoured: `namespaces="git,..."` (the key may sign in these namespaces only; git
//! signs in `git`), `valid-after="YYYYMMDD[HHMM[SS]]"` and `valid-before=...` (UTC, compared
//! with the commit's committer time, as git does). A `cert-authority` line is not supported:
//! it is reported and skipped.

use ssh_key::{PublicKey, SshSig};

/// One allowed signer.
#[derive(Debug, Clone)]
pub struct Signer {
    /// The first principal of the line (what the report shows).
    pub principal: String,
    pub key: PublicKey,
    namespaces: Option<Vec<String>>,
    valid_after: Option<u64>,
    valid_before: Option<u64>,
}

/// The signers of an allowed-signers file's text, and the problems of lines that are skipped
/// (`LINE: message`).
pub fn parse(text: &str) -> (Vec<Signer>, Vec<String>) {
    let mut signers = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(s) => signers.push(s),
            Err(m) => problems.push(format!("line {}: {m}", i + 1)),
        }
    }
    (signers, problems)
}

/// Whitespace-separated fields, a `"..."` kept together.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn is_key_type(s: &str) -> bool {
    s.starts_with("ssh-") || s.starts_with("ecdsa-") || s.starts_with("sk-")
}

fn parse_line(line: &str) -> Result<Signer, String> {
    let f = fields(line);
    let (principals, options, key_at) = match f.as_slice() {
        [p, t, ..] if is_key_type(t) => (p, None, 1),
        [p, o, t, ..] if is_key_type(t) => (p, Some(o), 2),
        _ => return Err("expected PRINCIPALS [OPTIONS] KEYTYPE BASE64-KEY".to_string()),
    };
    let key_text = format!("{} {}", f[key_at], f.get(key_at + 1).map_or("", |s| s));
    let key = PublicKey::from_openssh(key_text.trim())
        .map_err(|e| format!("cannot read the public key: {e}"))?;
    let mut signer = Signer {
        principal: principals
            .trim_matches('"')
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string(),
        key,
        namespaces: None,
        valid_after: None,
        valid_before: None,
    };
    if let Some(options) = options {
        for option in split_options(options) {
            let (name, value) = match option.split_once('=') {
                Some((n, v)) => (n.to_ascii_lowercase(), v.trim_matches('"').to_string()),
                None => (option.to_ascii_lowercase(), String::new()),
            };
            match name.as_str() {
                "namespaces" => {
                    signer.namespaces = Some(value.split(',').map(str::to_string).collect());
                }
                "valid-after" => signer.valid_after = Some(parse_time(&value)?),
                "valid-before" => signer.valid_before = Some(parse_time(&value)?),
                "cert-authority" => {
                    return Err("cert-authority lines are not supported: list the keys".into());
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
    }
    Ok(signer)
}

/// `a="x,y",b` → `a="x,y"`, `b`.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS` (UTC, optionally ending in `Z`) as seconds
/// since the epoch.
fn parse_time(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid time \"{s}\": write YYYYMMDD[HHMM[SS]]");
    let d = s.strip_suffix('Z').unwrap_or(s);
    if !matches!(d.len(), 8 | 12 | 14) || !d.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n = |a: usize, b: usize| d.get(a..b).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let (y, m, day) = (n(0, 4), n(4, 6), n(6, 8));
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || y < 1970 {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = (y as i64 - i64::from(m <= 2), m as i64);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days as u64 * 86_400 + n(8, 10) * 3600 + n(10, 12) * 60 + n(12, 14))
}

/// Verify `armored` (a commit's `gpgsig` header) over `signed` (the commit without it),
/// made at `at` (committer time): the principal of the allowed signer, or why not.
pub fn verify(signers: &[Signer], armored: &str, signed: &[u8], at: u64) -> Result<String, String> {
    if armored.contains("BEGIN PGP SIGNATURE") {
        return Err("the commit has an OpenPGP signature; only ssh signatures are verified".into());
    }
    if armored.contains("BEGIN SIGNED MESSAGE") {
        return Err("the commit has an X.509 signature; only ssh signatures are verified".into());
    }
    let sig = SshSig::from_pem(armored.trim())
        .map_err(|e| format!("the commit's signature is not a valid ssh signature: {e}"))?;
    if sig.namespace() != "git" {
        return Err(format!(
            "the signature is for namespace \"{}\", not \"git\"",
            sig.namespace()
        ));
    }
    let fingerprint = || {
        PublicKey::new(sig.public_key().clone(), "")
            .fingerprint(Default::default())
            .to_string()
    };
    let candidates: Vec<&Signer> = signers
        .iter()
        .filter(|s| s.key.key_data() == sig.public_key())
        .collect();
    if candidates.is_empty() {
        return Err(format!(
            "signed by key {} which is not in the allowed signers file",
            fingerprint()
        ));
    }
    let mut why = String::new();
    for s in candidates {
        if let Some(ns) = &s.namespaces
            && !ns.iter().any(|n| n == "git")
        {
            why = format!(
                "key {} of {} may not sign git commits (namespaces=\"{}\")",
                fingerprint(),
                s.principal,
                ns.join(",")
            );
            continue;
        }
        if s.valid_after.is_some_and(|t| at < t) || s.valid_before.is_some_and(|t| at > t) {
            why = format!(
                "key {} of {} was not valid when the commit was made",
                fingerprint(),
                s.principal
            );
            continue;
        }
        return match s.key.verify("git", signed, &sig) {
            Ok(()) => Ok(s.principal.clone()),
            Err(e) => Err(format!(
                "the signature by key {} of {} does not match the commit ({e}): the commit \
                 was changed after signing, or the signature is forged",
                fingerprint(),
                s.principal
            )),
        };
    }
    Err(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIUF1tt37tLrKcOqxyLbXOicGyarmcsIe0MMaxVdHS5A";

    #[test]
    fn allowed_signers_lines() {
        let text = format!(
            "# ops\n\nalice@example.com {KEY} alice\n\
             bob@example.com,robert@example.com namespaces=\"file,git\",valid-after=\"20200101\" {KEY}\n\
             carol@example.com cert-authority {KEY}\n\
             dave@example.com ssh-ed25519 notbase64\n\
             eve@example.com\n"
        );
        let (signers, problems) = parse(&text);
        assert_eq!(signers.len(), 2);
        assert_eq!(signers[0].principal, "alice@example.com");
        assert_eq!(signers[1].principal, "bob@example.com");
        assert_eq!(
            signers[1].namespaces.as_deref(),
            Some(&["file".to_string(), "git".to_string()][..])
        );
        assert_eq!(signers[1].valid_after, Some(1_577_836_800));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("line 5: cert-authority"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("line 6: cannot read the public key"));
        assert!(problems[2].starts_with("line 7: expected PRINCIPALS"));
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("19700101"), Ok(0));
        assert_eq!(parse_time("20240229123456Z"), Ok(1_709_210_096));
        assert!(parse_time("2024").is_err());
        assert!(parse_time("20241301").is_err());
    }

    #[test]
    fn signatures_of_other_kinds_are_named() {
        let err = verify(&[], "-----BEGIN PGP SIGNATURE-----\nx\n", b"", 0).unwrap_err();
        assert!(err.contains("OpenPGP"), "{err}");
        let err = verify(
            &[],
            "-----BEGIN SSH SIGNATURE-----\nxx\n-----END SSH SIGNATURE-----",
            b"",
            0,
        )
        .unwrap_err();
        assert!(err.contains("not a valid ssh signature"), "{err}");
    }
}
