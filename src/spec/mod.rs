//! Daemonset specs: the model, the decoders for each input format, and validation.
//!
//! Data flow: text → [`doc`] (a tree with positions) → a decoder ([`native`] for
//! TOML, [`k8s`] for Kubernetes YAML/JSON) → [`model::DaemonSet`] →
//! [`validate`] (Kubernetes' rules at canonical paths) → [`diag::Diagnostic`]s
//! that name the file, line, column and the field path as the file spells it.

pub mod decode;
pub mod diag;
pub mod doc;
pub mod k8s;
pub mod model;
pub mod native;
pub mod validate;

use std::path::Path;

pub use diag::{Diagnostic, Severity};
pub use model::*;

use decode::Cx;

/// What a file yielded: its objects, and every error and warning about it.
/// The objects are only to be used when [`Loaded::has_errors`] is false.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub items: Vec<T>,
    pub diagnostics: Vec<Diagnostic>,
}

impl<T> Loaded<T> {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The objects, or every diagnostic when any of them is an error.
    pub fn into_result(self) -> Result<(Vec<T>, Vec<Diagnostic>), Vec<Diagnostic>> {
        if self.has_errors() {
            Err(self.diagnostics)
        } else {
            Ok((self.items, self.diagnostics))
        }
    }
}

/// The format a file name announces: `.toml`, `.yaml`/`.yml`, `.json`.
pub fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()? {
        "toml" => Some(Format::Toml),
        "yaml" | "yml" => Some(Format::Yaml),
        "json" => Some(Format::Json),
        _ => None,
    }
}

/// A diagnostic about the whole file.
pub(crate) fn file_error(file: &str, pos: Option<doc::Pos>, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        pos,
        path: String::new(),
        severity: Severity::Error,
        message,
    }
}

/// Parse `text` into its documents: one for TOML, any number for YAML/JSON.
pub(crate) fn documents(
    file: &str,
    text: &str,
    format: Format,
) -> Result<Vec<doc::Node>, Diagnostic> {
    let parsed = match format {
        Format::Toml => doc::parse_toml(text).map(|d| vec![d]),
        Format::Yaml | Format::Json => doc::parse_yaml(text),
    };
    parsed.map_err(|e| {
        let kind = match format {
            Format::Toml => "TOML",
            Format::Yaml => "YAML",
            Format::Json => "JSON",
        };
        file_error(file, Some(e.pos), format!("invalid {kind}: {}", e.message))
    })
}

/// Turn a decoding context's diagnostics into the file's.
pub(crate) fn finish_diagnostics(file: &str, cx: Cx, out: &mut Vec<Diagnostic>) {
    out.extend(cx.diags.into_iter().map(|mut d| {
        d.file = file.to_string();
        d
    }));
}

/// Decode and validate every daemonset in one file's text.
pub fn parse_daemonsets(file: &str, text: &str, format: Format) -> Loaded<DaemonSet> {
    let mut loaded = Loaded {
        items: Vec::new(),
        diagnostics: Vec::new(),
    };
    let docs = match documents(file, text, format) {
        Ok(d) => d,
        Err(e) => {
            loaded.diagnostics.push(e);
            return loaded;
        }
    };
    if docs.is_empty() {
        loaded.diagnostics.push(file_error(
            file,
            None,
            "the file holds no daemonset".to_string(),
        ));
    }
    for root in &docs {
        let mut cx = Cx::default();
        let decoded = match format {
            Format::Toml => native::decode(&mut cx, root),
            Format::Yaml | Format::Json => k8s::decode_daemonset(&mut cx, root),
        };
        if let Some(ds) = decoded {
            for finding in validate::validate(&ds) {
                let translate = |p: &str| match format {
                    Format::Toml => native::path_from_k8s(p),
                    Format::Yaml | Format::Json => p.to_string(),
                };
                let path = translate(&finding.path);
                let pos = cx.pos_of(&translate(
                    finding.locate.as_deref().unwrap_or(&finding.path),
                ));
                cx.diags.push(Diagnostic {
                    file: String::new(),
                    pos,
                    path,
                    severity: finding.severity,
                    message: finding.message,
                });
            }
            loaded.items.push(ds);
        }
        finish_diagnostics(file, cx, &mut loaded.diagnostics);
    }
    // Several daemonsets in one file must not share a name.
    let mut seen = std::collections::HashSet::new();
    for ds in &loaded.items {
        if !ds.name.is_empty() && !seen.insert(ds.name.clone()) {
            loaded.diagnostics.push(file_error(
                file,
                None,
                format!(
                    "daemonset \"{}\" is defined more than once in this file",
                    ds.name
                ),
            ));
        }
    }
    loaded
        .diagnostics
        .sort_by_key(|d| (d.pos.map(|p| (p.line, p.col)), d.severity));
    loaded
}

/// Read and parse a daemonset file, choosing the format by extension.
pub fn read_daemonsets(path: &Path) -> Loaded<DaemonSet> {
    let file = path.display().to_string();
    match read_text(path) {
        Ok((text, format)) => parse_daemonsets(&file, &text, format),
        Err(d) => Loaded {
            items: Vec::new(),
            diagnostics: vec![d],
        },
    }
}

/// Read a file's text and tell its format, or say why not.
pub(crate) fn read_text(path: &Path) -> Result<(String, Format), Diagnostic> {
    let file = path.display().to_string();
    let Some(format) = format_of(path) else {
        return Err(file_error(
            &file,
            None,
            "unknown file type: name it *.toml (native), *.yaml, *.yml or *.json (Kubernetes)"
                .to_string(),
        ));
    };
    let text =
        std::fs::read(path).map_err(|e| file_error(&file, None, format!("cannot read: {e}")))?;
    let text = String::from_utf8(text)
        .map_err(|e| file_error(&file, None, format!("not UTF-8 text: {e}")))?;
    Ok((text, format))
}
