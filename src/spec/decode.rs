//! Reading a [`Node`] tree into typed values while collecting every problem.
//!
//! The decoders of each format walk the tree with [`Obj`] and the typed
//! getters of [`Cx`]. Nothing stops at the first problem: each getter records
//! a diagnostic and returns `None`, and the walk goes on, so a user sees all
//! errors of a file at once. Every visited path is remembered with its
//! position, so that later (format-independent) validation can point at the
//! line of the value it complains about.

use std::collections::{BTreeMap, HashMap};

use super::diag::{Diagnostic, Severity, did_you_mean};
use super::doc::{Entry, Node, Pos, Value};
use super::model::IntOrPercent;

/// Decoding context: the diagnostics so far and the position of every path seen.
#[derive(Debug, Default)]
pub struct Cx {
    pub diags: Vec<Diagnostic>,
    pub spans: HashMap<String, Pos>,
}

impl Cx {
    pub fn error(&mut self, path: &str, pos: Option<Pos>, message: impl Into<String>) {
        self.push(path, pos, Severity::Error, message.into());
    }

    pub fn warn(&mut self, path: &str, pos: Option<Pos>, message: impl Into<String>) {
        self.push(path, pos, Severity::Warning, message.into());
    }

    fn push(&mut self, path: &str, pos: Option<Pos>, severity: Severity, message: String) {
        self.diags.push(Diagnostic {
            file: String::new(),
            pos,
            path: path.to_string(),
            severity,
            message,
        });
    }

    /// The position of `path`, or of its nearest recorded ancestor.
    pub fn pos_of(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.spans.get(p) {
                return Some(*pos);
            }
            if p.is_empty() {
                return None;
            }
            p = p.rfind(['.', '[']).map_or("", |cut| &p[..cut]);
        }
    }

    fn type_error(&mut self, path: &str, node: &Node, want: &str) {
        let hint = match (&node.value, want) {
            (Value::Int(_) | Value::Float(_) | Value::Bool(_), "a string") => {
                " (quote the value to make it a string)"
            }
            _ => "",
        };
        self.error(
            path,
            Some(node.pos),
            format!("must be {want}, not {}{hint}", node.value.kind()),
        );
    }

    /// A string; `None` (and no error) for null.
    pub fn string(&mut self, path: &str, node: &Node) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Null => None,
            _ => {
                self.type_error(path, node, "a string");
                None
            }
        }
    }

    pub fn int(&mut self, path: &str, node: &Node) -> Option<i64> {
        match &node.value {
            Value::Int(i) => Some(*i),
            Value::Null => None,
            _ => {
                self.type_error(path, node, "an integer");
                None
            }
        }
    }

    pub fn bool(&mut self, path: &str, node: &Node) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            _ => {
                self.type_error(path, node, "true or false");
                None
            }
        }
    }

    /// An integer or a string (`intstr.IntOrString`).
    pub fn int_or_string(&mut self, path: &str, node: &Node) -> Option<IntOrPercent> {
        match &node.value {
            Value::Int(i) => Some(IntOrPercent::Int(*i)),
            Value::Str(s) => Some(IntOrPercent::Str(s.clone())),
            Value::Null => None,
            _ => {
                self.type_error(
                    path,
                    node,
                    "an integer or a percentage string such as \"10%\"",
                );
                None
            }
        }
    }

    /// The items of a list with their paths; empty for null.
    pub fn list<'n>(&mut self, path: &str, node: &'n Node) -> Vec<(String, &'n Node)> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let p = format!("{path}[{i}]");
                    self.spans.insert(p.clone(), n.pos);
                    (p, n)
                })
                .collect(),
            Value::Null => Vec::new(),
            _ => {
                self.type_error(path, node, "a list");
                Vec::new()
            }
        }
    }

    pub fn string_list(&mut self, path: &str, node: &Node) -> Vec<String> {
        self.list(path, node)
            .into_iter()
            .filter_map(|(p, n)| {
                let s = self.string(&p, n);
                if s.is_none() && n.value == Value::Null {
                    self.error(&p, Some(n.pos), "must be a string, not null");
                }
                s
            })
            .collect()
    }

    /// A free-form map of strings (labels, annotations, env, nodeSelector).
    /// Each entry's key position is recorded as `path[key]`.
    pub fn string_map(&mut self, path: &str, node: &Node) -> BTreeMap<String, String> {
        self.string_pairs(path, node).into_iter().collect()
    }

    /// Like [`Cx::string_map`], keeping the order written.
    pub fn string_pairs(&mut self, path: &str, node: &Node) -> Vec<(String, String)> {
        let entries = match &node.value {
            Value::Map(e) => e,
            Value::Null => return Vec::new(),
            _ => {
                self.type_error(path, node, "a mapping of strings to strings");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for Entry {
            key,
            key_pos,
            value,
        } in entries
        {
            let p = format!("{path}[{key}]");
            self.spans.insert(p.clone(), *key_pos);
            match &value.value {
                Value::Str(s) => out.push((key.clone(), s.clone())),
                // Kubernetes reads a null map value as "".
                Value::Null => out.push((key.clone(), String::new())),
                other => {
                    self.type_error(&p, value, "a string");
                    // Keep a scalar's text so that later checks do not cascade
                    // (a dropped selector label would read as an empty selector).
                    let text = match other {
                        Value::Int(i) => Some(i.to_string()),
                        Value::Float(f) => Some(f.to_string()),
                        Value::Bool(b) => Some(b.to_string()),
                        _ => None,
                    };
                    out.extend(text.map(|t| (key.clone(), t)));
                }
            }
        }
        out
    }
}

/// A mapping being read field by field. [`Obj::finish`] reports the fields
/// nobody asked for.
pub struct Obj<'n> {
    pub path: String,
    pub pos: Pos,
    entries: &'n [Entry],
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'n> Obj<'n> {
    /// `None` (after recording an error) when `node` is not a mapping; an
    /// empty object for null.
    pub fn new(cx: &mut Cx, path: &str, node: &'n Node) -> Option<Self> {
        const NO_ENTRIES: &[Entry] = &[];
        let entries = match &node.value {
            Value::Map(e) => e.as_slice(),
            Value::Null => NO_ENTRIES,
            _ => {
                cx.type_error(path, node, "a mapping");
                return None;
            }
        };
        cx.spans.entry(path.to_string()).or_insert(node.pos);
        Some(Obj {
            path: path.to_string(),
            pos: node.pos,
            entries,
            used: vec![false; entries.len()],
            known: Vec::new(),
        })
    }

    /// The path of a field of this object.
    pub fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Take a field (null counts as absent). Records its position.
    pub fn get(&mut self, cx: &mut Cx, key: &'static str) -> Option<(String, &'n Node)> {
        self.known.push(key);
        let i = self.entries.iter().position(|e| e.key == key)?;
        self.used[i] = true;
        let node = &self.entries[i].value;
        let path = self.child(key);
        // Point at the value for scalars, at the key for collections (a YAML
        // block collection starts on the next line, which reads oddly).
        let pos = match node.value {
            Value::Map(_) | Value::Seq(_) => self.entries[i].key_pos,
            _ => node.pos,
        };
        cx.spans.insert(path.clone(), pos);
        if node.value == Value::Null {
            return None;
        }
        Some((path, node))
    }

    /// Take a field and report it as an error if present.
    pub fn reject(&mut self, cx: &mut Cx, key: &'static str, why: &str) {
        if let Some((p, n)) = self.get(cx, key) {
            cx.error(&p, Some(n.pos), why);
        }
    }

    /// Take a field and warn that it has no effect, if present.
    pub fn ignore(&mut self, cx: &mut Cx, key: &'static str, why: &str) {
        if let Some((p, n)) = self.get(cx, key) {
            cx.warn(&p, Some(n.pos), why);
        }
    }

    /// Take a field silently (accepted, meaningless here, not worth a warning:
    /// server-populated metadata and the like).
    pub fn skip(&mut self, cx: &mut Cx, key: &'static str) {
        let _ = self.get(cx, key);
    }

    pub fn string(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        let (p, n) = self.get(cx, key)?;
        cx.string(&p, n)
    }

    pub fn int(&mut self, cx: &mut Cx, key: &'static str) -> Option<i64> {
        let (p, n) = self.get(cx, key)?;
        cx.int(&p, n)
    }

    pub fn bool(&mut self, cx: &mut Cx, key: &'static str) -> Option<bool> {
        let (p, n) = self.get(cx, key)?;
        cx.bool(&p, n)
    }

    pub fn string_map(&mut self, cx: &mut Cx, key: &'static str) -> BTreeMap<String, String> {
        match self.get(cx, key) {
            Some((p, n)) => cx.string_map(&p, n),
            None => BTreeMap::new(),
        }
    }

    pub fn string_list(&mut self, cx: &mut Cx, key: &'static str) -> Vec<String> {
        match self.get(cx, key) {
            Some((p, n)) => cx.string_list(&p, n),
            None => Vec::new(),
        }
    }

    /// A nested object.
    pub fn obj(&mut self, cx: &mut Cx, key: &'static str) -> Option<Obj<'n>> {
        let (p, n) = self.get(cx, key)?;
        Obj::new(cx, &p, n)
    }

    /// The items of a list field, each with its path.
    pub fn list(&mut self, cx: &mut Cx, key: &'static str) -> Vec<(String, &'n Node)> {
        match self.get(cx, key) {
            Some((p, n)) => cx.list(&p, n),
            None => Vec::new(),
        }
    }

    /// Take every remaining entry of a free-form mapping: `(key, path, value)`.
    /// Paths are `path[key]`, as Kubernetes writes map keys.
    pub fn take_all(&mut self, cx: &mut Cx) -> Vec<(String, String, &'n Node)> {
        let mut out = Vec::new();
        for (entry, used) in self.entries.iter().zip(self.used.iter_mut()) {
            if !*used {
                *used = true;
                let p = format!("{}[{}]", self.path, entry.key);
                cx.spans.insert(p.clone(), entry.key_pos);
                out.push((entry.key.clone(), p, &entry.value));
            }
        }
        out
    }

    /// Whether the field is written at all (even as null).
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    /// Report every field that was not taken as unknown, with a "did you mean" hint.
    pub fn finish(self, cx: &mut Cx) {
        self.finish_with(cx, |_| None);
    }

    /// [`Obj::finish`], asking `elsewhere` first whether an unknown key is a
    /// field that belongs somewhere else; its answer becomes the message.
    pub fn finish_with(self, cx: &mut Cx, elsewhere: impl Fn(&str) -> Option<String>) {
        for (entry, used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let path = self.child(&entry.key);
            let message = elsewhere(&entry.key).unwrap_or_else(|| {
                match did_you_mean(&entry.key, &self.known) {
                    Some(s) => format!("unknown field \"{}\", did you mean \"{s}\"?", entry.key),
                    None => {
                        let mut valid = self.known.clone();
                        valid.sort_unstable();
                        valid.dedup();
                        format!(
                            "unknown field \"{}\"; valid fields here: {}",
                            entry.key,
                            valid.join(", ")
                        )
                    }
                }
            });
            cx.error(&path, Some(entry.key_pos), message);
        }
    }
}

/// A path field that must be written, absolute and free of ':' (systemd's `BindPaths=`
/// cannot carry one). `None` after an error.
pub fn required_path(cx: &mut Cx, o: &mut Obj<'_>, key: &'static str, why: &str) -> Option<String> {
    let p = o.child(key);
    let Some(value) = o.string(cx, key).filter(|v| !v.is_empty()) else {
        cx.error(&p, cx.pos_of(&p), why);
        return None;
    };
    let pos = cx.pos_of(&p);
    let mut ok = true;
    if !value.starts_with('/') {
        cx.error(&p, pos, format!("\"{value}\" must be an absolute path"));
        ok = false;
    }
    if value.contains(':') {
        cx.error(
            &p,
            pos,
            format!(
                "\"{value}\" must not contain ':', which systemd's BindPaths= reads as a separator"
            ),
        );
        ok = false;
    }
    ok.then_some(value)
}
