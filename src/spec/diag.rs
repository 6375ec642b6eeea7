//! Diagnostics: what is wrong, in which file, on which line, at which field.

use std::fmt;

use super::doc::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    /// A field accepted but without effect on a systemd host.
    Warning,
}

/// One finding about a file. Displays as `FILE:LINE:COL: FIELD.PATH: message`
/// (warnings: `FILE:LINE:COL: FIELD.PATH: warning: message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// Where the offending value (or its nearest written ancestor) starts.
    pub pos: Option<Pos>,
    /// Field path in the file's own vocabulary, e.g. `spec.template.spec.tolerations[0].operator`.
    /// Empty for errors about the file as a whole.
    pub path: String,
    pub severity: Severity,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(p) = self.pos {
            write!(f, ":{}:{}", p.line, p.col)?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate to `word`, if it is close enough to be a likely typo
/// (also catches snake_case or kebab-case spellings of a camelCase field).
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let squash = |s: &str| s.replace(['_', '-'], "").to_lowercase();
    if let Some(c) = candidates.iter().find(|c| squash(c) == squash(word)) {
        return Some(c);
    }
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let d = Diagnostic {
            file: "a.toml".into(),
            pos: Some(Pos { line: 3, col: 5 }),
            path: "tolerations[0].operator".into(),
            severity: Severity::Error,
            message: "bad".into(),
        };
        assert_eq!(d.to_string(), "a.toml:3:5: tolerations[0].operator: bad");
        let w = Diagnostic {
            severity: Severity::Warning,
            pos: None,
            path: String::new(),
            ..d
        };
        assert_eq!(w.to_string(), "a.toml: warning: bad");
    }

    #[test]
    fn suggestions() {
        let fields = ["tolerations", "nodeSelector", "command", "env"];
        assert_eq!(did_you_mean("toleration", &fields), Some("tolerations"));
        assert_eq!(did_you_mean("node_selector", &fields), Some("nodeSelector"));
        assert_eq!(did_you_mean("nodeselector", &fields), Some("nodeSelector"));
        assert_eq!(did_you_mean("commnd", &fields), Some("command"));
        assert_eq!(did_you_mean("volumes", &fields), None);
    }
}
