//! `hostset node label|taint|cordon|uncordon|show`: this host's node file, edited the way
//! kubectl edits a node. (`hostset node delete NAME` is the coordinator's: see [`delete`].)
//!
//! Every edit is one read-modify-write of the native node file:
//! 1. an advisory lock (`flock`) on the file's directory serializes concurrent `hostset node`
//!    commands (a lock on the file itself would be lost when the file is replaced);
//! 2. the file is read and must be valid (`parse_node`); a missing file is an empty node;
//! 3. the change is checked like kubectl checks it (`--overwrite`, removal of what is absent)
//!    and applied with `toml_edit`, which keeps the operator's comments and layout;
//! 4. the result is decoded and validated again; only a valid file is written, to a temporary
//!    `.NAME.PID.N.tmp` in the same directory (the agent's watcher ignores dot files), synced
//!    and renamed over the file, which keeps its mode and owner (new files: 0644).

use std::fs::{self, File, OpenOptions, Permissions, TryLockError};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde::Serialize;
use toml_edit::{DocumentMut, InlineTable, Item, Key, Table, Value};

use super::client::{Client, CoordinatorArgs, Subject};
use crate::node::{HostFacts, NodeFile, parse_node, read_node};
use crate::placement::taints::{
    EFFECT_NO_EXECUTE, EFFECT_NO_SCHEDULE, EFFECT_PREFER_NO_SCHEDULE, TAINT_NODE_UNSCHEDULABLE,
};
use crate::spec::diag::did_you_mean;
use crate::spec::{Diagnostic, Format, Labels, Node, Taint, format_of};
use crate::syntax::{is_qualified_name, is_valid_label_value};

/// Edit this host's node file the way kubectl edits a node: labels, taints, cordon.
///
/// The agent reads the node file and reacts within a second. Edits keep the file's comments
/// and layout, are checked as `hostset validate` checks before anything is written, and replace
/// the file atomically. Concurrent `hostset node` commands wait for each other.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The node file is $HOSTSET_CONFIG_DIR/node.toml (default /etc/hostset/node.toml); it is
created (mode 0644) when missing. A Kubernetes v1 Node file (YAML/JSON) can be shown, not edited.

Examples:
  hostset node label disktype=ssd topology.kubernetes.io/zone=eu-west-1a
  hostset node taint dedicated=db:NoSchedule
  hostset node cordon
  hostset node show -o json")]
pub struct Args {
    /// The node file [default: $HOSTSET_CONFIG_DIR/node.toml, i.e. /etc/hostset/node.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub node_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    Label(LabelArgs),
    Taint(TaintArgs),
    /// Mark the node unschedulable (`unschedulable = true`), as `kubectl cordon` does.
    ///
    /// Adds the taint node.kubernetes.io/unschedulable:NoSchedule. Daemonsets tolerate it, as
    /// in Kubernetes, so running daemons stay; only daemonsets that opt out are held back.
    #[command(after_help = "\
Examples:
  hostset node cordon
  hostset node cordon --node-file /srv/test/node.toml")]
    Cordon,
    /// Mark the node schedulable again (`unschedulable = false`), as `kubectl uncordon` does.
    #[command(after_help = "\
Examples:
  hostset node uncordon")]
    Uncordon,
    Show(ShowArgs),
    Delete(DeleteArgs),
}

/// Add, change or remove labels of the node, as `kubectl label node` does.
///
/// KEY=VALUE sets a label (VALUE may be empty), KEY- removes one. Changing the value of a
/// label the node already has (the automatic ones included) needs --overwrite. Automatic
/// labels can be overridden, not removed.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hostset node label disktype=ssd
  hostset node label --overwrite disktype=nvme
  hostset node label node-role.example.com/db= topology.kubernetes.io/zone=eu-west-1a
  hostset node label disktype-")]
pub struct LabelArgs {
    /// KEY=VALUE to set a label, KEY- to remove one.
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    pub labels: Vec<String>,
    /// Allow changing the value of a label the node already has.
    #[arg(long)]
    pub overwrite: bool,
}

/// Add or remove taints of the node, as `kubectl taint node` does.
///
/// KEY[=VALUE]:EFFECT adds a taint; EFFECT is NoSchedule, PreferNoSchedule or NoExecute.
/// KEY:EFFECT- removes that taint, KEY- every taint with that key. A taint with the same key
/// and effect as one the node has but another value needs --overwrite.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hostset node taint dedicated=db:NoSchedule
  hostset node taint --overwrite dedicated=web:NoSchedule
  hostset node taint example.com/gpu:NoExecute
  hostset node taint dedicated:NoSchedule-
  hostset node taint dedicated-")]
pub struct TaintArgs {
    /// KEY[=VALUE]:EFFECT to add a taint, KEY[:EFFECT]- to remove taints.
    #[arg(required = true, value_name = "KEY[=VALUE]:EFFECT|KEY[:EFFECT]-")]
    pub taints: Vec<String>,
    /// Allow changing the value of a taint with the same key and effect.
    #[arg(long)]
    pub overwrite: bool,
}

/// Print the node as the agent sees it.
///
/// Its name, labels (the automatic ones included), taints (with the one `unschedulable = true`
/// adds) and whether it is unschedulable.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hostset node show
  hostset node show -o json | jq -r '.labels[\"kubernetes.io/arch\"]'")]
pub struct ShowArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Remove a node from the coordinator, as `kubectl delete node` does.
///
/// The coordinator forgets the node and its last report: its daemons no longer count in any
/// daemonset's status. This host's node file is not involved, and nothing stops on the node;
/// an agent that still runs there reports again and brings the node back. Needs an agent token
/// (one for any node, or for this one); read tokens are read-only.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hostset node delete db-1
  hostset --coordinator https://coordinator.example:8443 --token-file agent.token node delete db-1")]
pub struct DeleteArgs {
    /// The node's name, as `hostset get nodes` lists it.
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON object: name, labels, taints, unschedulable.
    Json,
}

pub fn run(args: Args, coordinator: &CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let explicit = args.node_file.is_some();
    let file = args
        .node_file
        .unwrap_or_else(|| config_dir().join("node.toml"));
    match args.command {
        NodeCommand::Show(a) => show(&file, explicit, a.output),
        NodeCommand::Label(a) => edit(&file, |s| label(s, &a.labels, a.overwrite)),
        NodeCommand::Taint(a) => edit(&file, |s| taint(s, &a.taints, a.overwrite)),
        NodeCommand::Cordon => edit(&file, |s| cordon(s, true)),
        NodeCommand::Uncordon => edit(&file, |s| cordon(s, false)),
        NodeCommand::Delete(a) => delete(coordinator, &a.name),
    }
}

/// `DELETE /v1/nodes/{name}` on the coordinator.
fn delete(coordinator: &CoordinatorArgs, name: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(coordinator)?;
    client.delete(&["nodes", name], Some(Subject { kind: "node", name }))?;
    println!("node/{name} deleted");
    Ok(ExitCode::SUCCESS)
}

fn config_dir() -> PathBuf {
    std::env::var_os("HOSTSET_CONFIG_DIR")
        .map_or_else(|| PathBuf::from("/etc/hostset"), PathBuf::from)
}

const EFFECTS: [&str; 3] = [
    EFFECT_NO_SCHEDULE,
    EFFECT_PREFER_NO_SCHEDULE,
    EFFECT_NO_EXECUTE,
];

// ---------------------------------------------------------------------------------------------
// show

/// The JSON of `show`; field names are part of the CLI contract.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    name: &'a str,
    labels: &'a Labels,
    taints: Vec<ShownTaint<'a>>,
    unschedulable: bool,
}

#[derive(Debug, Serialize)]
struct ShownTaint<'a> {
    key: &'a str,
    value: &'a str,
    effect: &'a str,
}

fn show(file: &Path, explicit: bool, output: Output) -> anyhow::Result<ExitCode> {
    let facts = HostFacts::detect();
    let node_file = if fs::symlink_metadata(file).is_ok() {
        let loaded = read_node(file);
        for d in &loaded.diagnostics {
            eprintln!("{d}");
        }
        if loaded.has_errors() {
            return Ok(ExitCode::FAILURE);
        }
        loaded
            .items
            .into_iter()
            .next()
            .context("the node file holds no node")?
    } else {
        if explicit {
            eprintln!(
                "hostset: note: {} does not exist: the node has the automatic labels only",
                file.display()
            );
        }
        empty_node_file()
    };
    let node = node_file.resolve(Some(&facts));
    match output {
        Output::Json => {
            let shown = Shown {
                name: &node.name,
                labels: &node.labels,
                taints: node
                    .taints
                    .iter()
                    .map(|t| ShownTaint {
                        key: &t.key,
                        value: &t.value,
                        effect: &t.effect,
                    })
                    .collect(),
                unschedulable: node.unschedulable,
            };
            println!("{}", serde_json::to_string(&shown)?);
        }
        Output::Text => print!("{}", describe(&node)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `kubectl describe node`'s first lines.
fn describe(node: &Node) -> String {
    fn field(out: &mut String, title: &str, values: &[String]) {
        let mut values = values.iter();
        let first = values.next().map_or("<none>", String::as_str);
        out.push_str(&format!("{title:<15}{first}\n"));
        for v in values {
            out.push_str(&format!("{:<15}{v}\n", ""));
        }
    }
    let mut out = String::new();
    field(&mut out, "Name:", std::slice::from_ref(&node.name));
    let labels: Vec<String> = node
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    field(&mut out, "Labels:", &labels);
    let taints: Vec<String> = node.taints.iter().map(Taint::to_string).collect();
    field(&mut out, "Taints:", &taints);
    field(
        &mut out,
        "Unschedulable:",
        &[node.unschedulable.to_string()],
    );
    out
}

fn empty_node_file() -> NodeFile {
    NodeFile::Native {
        name: None,
        labels: Labels::new(),
        taints: Vec::new(),
        unschedulable: false,
    }
}

// ---------------------------------------------------------------------------------------------
// The read-modify-write

/// The node file as found, under the lock, and the document being edited.
struct Session {
    doc: DocumentMut,
    /// The file's labels (without the automatic ones).
    labels: Labels,
    /// The file's taints, in file order (without the one `unschedulable` adds).
    taints: Vec<Taint>,
    unschedulable: bool,
    /// The node the agent sees now.
    node: Node,
    /// The labels the node would have with none in the file.
    automatic: Labels,
    /// Human notes, printed to stderr whatever the outcome.
    notes: Vec<String>,
}

enum Outcome {
    /// Write the document, then print `node/NAME VERB`.
    Changed(&'static str),
    /// Nothing to write: print `node/NAME MESSAGE`.
    Unchanged(&'static str),
    /// Refused: each message on stderr, exit 1, the file untouched.
    Refused(Vec<String>),
}

fn edit(given: &Path, change: impl FnOnce(&mut Session) -> Outcome) -> anyhow::Result<ExitCode> {
    let shown = given.display().to_string();
    match format_of(given) {
        Some(Format::Toml) => {}
        Some(format) => {
            eprintln!("{}", kubernetes_refusal(&shown, format));
            return Ok(ExitCode::FAILURE);
        }
        None => {
            bail!("{shown}: unknown file type: `hostset node` edits the native node file, *.toml")
        }
    }
    let path = follow_symlink(given)?;
    let dir = parent_dir(&path);
    let _lock = lock_dir(dir)?;

    let (text, existing) = match fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).with_context(|| format!("{shown}: not UTF-8"))?;
            let meta = fs::metadata(&path).with_context(|| format!("cannot read {shown}"))?;
            (text, Some(meta))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {shown}")),
    };
    let loaded = parse_node(&shown, &text, Format::Toml);
    if loaded.has_errors() {
        if text.parse::<DocumentMut>().is_err()
            && text.contains("apiVersion")
            && text.contains("kind")
        {
            eprintln!("{}", kubernetes_refusal(&shown, Format::Yaml));
            return Ok(ExitCode::FAILURE);
        }
        print_diagnostics(&loaded.diagnostics);
        eprintln!(
            "hostset: {shown} is invalid: fix the errors above first (the file was not changed)"
        );
        return Ok(ExitCode::FAILURE);
    }
    let Some(NodeFile::Native {
        name,
        labels,
        taints,
        unschedulable,
    }) = loaded.items.into_iter().next()
    else {
        bail!("{shown}: not a native node file");
    };
    let doc: DocumentMut = text
        .parse()
        .with_context(|| format!("{shown}: this TOML cannot be edited"))?;
    let facts = HostFacts::detect();
    let bare = NodeFile::Native {
        name: name.clone(),
        labels: Labels::new(),
        taints: Vec::new(),
        unschedulable: false,
    };
    let automatic = bare.resolve(Some(&facts)).labels;
    let node = NodeFile::Native {
        name,
        labels: labels.clone(),
        taints: taints.clone(),
        unschedulable,
    }
    .resolve(Some(&facts));
    let mut session = Session {
        doc,
        labels,
        taints,
        unschedulable,
        node,
        automatic,
        notes: Vec::new(),
    };

    let outcome = change(&mut session);
    for note in &session.notes {
        eprintln!("{note}");
    }
    let subject = if session.node.name.is_empty() {
        "node/(unnamed)".to_string()
    } else {
        format!("node/{}", session.node.name)
    };
    match outcome {
        Outcome::Refused(errors) => {
            for e in errors {
                eprintln!("hostset: {e}");
            }
            Ok(ExitCode::FAILURE)
        }
        Outcome::Unchanged(message) => {
            println!("{subject} {message}");
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Changed(verb) => {
            let edited = session.doc.to_string();
            let after = parse_node(&format!("{shown} (as edited)"), &edited, Format::Toml);
            if after.has_errors() {
                eprintln!(
                    "hostset: {shown} was not changed: the edited file would be invalid (lines as \
                     edited):"
                );
                print_diagnostics(&after.diagnostics);
                return Ok(ExitCode::FAILURE);
            }
            if edited != text {
                write_atomically(&path, &edited, existing.as_ref())
                    .with_context(|| format!("cannot write {shown}"))?;
            }
            println!("{subject} {verb}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

fn kubernetes_refusal(shown: &str, format: Format) -> String {
    let kind = if format == Format::Json {
        "JSON"
    } else {
        "YAML"
    };
    format!(
        "hostset: {shown} is a Kubernetes v1 Node ({kind}): `hostset node` edits only the native \
         node.toml. Edit this file with Kubernetes tools (e.g. `kubectl label`/`kubectl taint` \
         on the cluster, then save it again with `kubectl get node NAME -o yaml`), or switch to \
         node.toml: `hostset node show --node-file {shown}` lists the labels and taints to move \
         (README, section \"Nodes\")."
    )
}

/// The file a symlink points to (so that the link stays a link), else the path itself.
fn follow_symlink(path: &Path) -> anyhow::Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(path)
            .with_context(|| format!("{}: cannot follow the symlink", path.display())),
        _ => Ok(path.to_path_buf()),
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An exclusive advisory lock on `dir`, held until the returned file is dropped.
///
/// The directory, not the node file: the file is replaced by a rename, and a lock on the
/// replaced file would not exclude the next editor.
fn lock_dir(dir: &Path) -> anyhow::Result<File> {
    let f =
        File::open(dir).with_context(|| format!("cannot open the directory {}", dir.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            eprintln!(
                "hostset: waiting for another `hostset node` command to finish with {}",
                dir.display()
            );
            f.lock()
                .with_context(|| format!("cannot lock {}", dir.display()))?;
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", dir.display()));
        }
    }
    Ok(f)
}

/// Replace `path` with `text`: a temporary dot file in the same directory, synced, renamed
/// over it. The file keeps the mode, owner and group of `existing`; a new file gets 0644.
fn write_atomically(path: &Path, text: &str, existing: Option<&fs::Metadata>) -> io::Result<()> {
    let dir = parent_dir(path);
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "node.toml".to_string());
    let (tmp_path, mut tmp) = create_temp(dir, &base)?;
    let mut guard = RemoveOnDrop(Some(tmp_path.clone()));
    if let Some(old) = existing {
        let own = tmp.metadata()?;
        if (own.uid(), own.gid()) != (old.uid(), old.gid()) {
            std::os::unix::fs::fchown(&tmp, Some(old.uid()), Some(old.gid()))?;
        }
    }
    let mode = existing.map_or(0o644, |m| m.permissions().mode() & 0o7777);
    tmp.set_permissions(Permissions::from_mode(mode))?;
    tmp.write_all(text.as_bytes())?;
    tmp.sync_all()?;
    drop(tmp);
    fs::rename(&tmp_path, path)?;
    guard.0 = None;
    // Make the rename itself durable. Best effort: the new file is in place either way.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn create_temp(dir: &Path, base: &str) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    let mut n = 0;
    loop {
        let p = dir.join(format!(".{base}.{pid}.{n}.tmp"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// label

/// Labels to set (in the order given) and label keys to remove.
type LabelChanges = (Vec<(String, String)>, Vec<String>);

/// `kubectl label`'s `parseLabels`: `KEY=VALUE` to set, `KEY-` to remove. Keys and values are
/// checked here, with Kubernetes' messages.
fn parse_label_specs(specs: &[String]) -> Result<LabelChanges, Vec<String>> {
    let (mut set, mut remove, mut errors) =
        (Vec::<(String, String)>::new(), Vec::new(), Vec::new());
    for spec in specs {
        if let Some((key, value)) = spec.split_once('=') {
            if value.contains('=') {
                errors.push(format!(
                    "invalid label spec \"{spec}\": write KEY=VALUE; a label value cannot contain '='"
                ));
                continue;
            }
            let mut ok = true;
            for m in is_qualified_name(key) {
                errors.push(format!("invalid label key \"{key}\": {m}"));
                ok = false;
            }
            for m in is_valid_label_value(value) {
                errors.push(format!(
                    "invalid label value \"{value}\" for key \"{key}\": {m}"
                ));
                ok = false;
            }
            if !ok {
                continue;
            }
            match set.iter().find(|(k, _)| k == key) {
                Some((_, v)) if v != value => errors.push(format!(
                    "label \"{key}\" is given twice, as \"{v}\" and as \"{value}\""
                )),
                Some(_) => {}
                None => set.push((key.to_string(), value.to_string())),
            }
        } else if let Some(key) = spec.strip_suffix('-').filter(|k| !k.is_empty()) {
            if !remove.iter().any(|k| k == key) {
                remove.push(key.to_string());
            }
        } else {
            errors.push(format!(
                "invalid label spec \"{spec}\": write KEY=VALUE to set a label, KEY- to remove one"
            ));
        }
    }
    for key in &remove {
        if set.iter().any(|(k, _)| k == key) {
            errors.push(format!(
                "can not both modify and remove label \"{key}\" in the same command"
            ));
        }
    }
    if errors.is_empty() {
        Ok((set, remove))
    } else {
        Err(errors)
    }
}

fn label(s: &mut Session, specs: &[String], overwrite: bool) -> Outcome {
    let (set, remove) = match parse_label_specs(specs) {
        Ok(x) => x,
        Err(errors) => return Outcome::Refused(errors),
    };
    let mut errors = Vec::new();
    if !overwrite {
        // kubectl's validateNoOverwrites, against the labels the node has (automatic included).
        for (key, value) in &set {
            if let Some(current) = s.node.labels.get(key)
                && current != value
            {
                errors.push(format!(
                    "'{key}' already has a value ({current}), and --overwrite is false"
                ));
            }
        }
    }
    for key in &remove {
        if !s.labels.contains_key(key)
            && let Some(auto) = s.automatic.get(key)
        {
            errors.push(format!(
                "label \"{key}\" is set automatically ({key}={auto}) and cannot be removed; \
                 override it with `hostset node label --overwrite {key}=VALUE`"
            ));
        }
    }
    if !errors.is_empty() {
        return Outcome::Refused(errors);
    }

    let mut changed = false;
    for (key, value) in &set {
        if s.labels.get(key) != Some(value) {
            if let Err(e) = set_label(&mut s.doc, key, value) {
                return Outcome::Refused(vec![e]);
            }
            changed = true;
        }
    }
    for key in &remove {
        if !s.labels.contains_key(key) {
            s.notes.push(format!("label \"{key}\" not found."));
            continue;
        }
        if let Err(e) = remove_label(&mut s.doc, key) {
            return Outcome::Refused(vec![e]);
        }
        changed = true;
        if let Some(auto) = s.automatic.get(key) {
            s.notes.push(format!(
                "hostset: note: \"{key}\" is also an automatic label: the node keeps {key}={auto}"
            ));
        }
    }
    if changed {
        Outcome::Changed("labeled")
    } else {
        Outcome::Unchanged("not labeled")
    }
}

fn set_label(doc: &mut DocumentMut, key: &str, value: &str) -> Result<(), String> {
    match doc.get_mut("labels") {
        None => {
            let mut t = Table::new();
            t.insert(key, toml_edit::value(value));
            doc.insert("labels", Item::Table(t));
        }
        Some(Item::Table(t)) => match t.get_mut(key) {
            Some(item) => replace_value(item, Value::from(value)),
            None => {
                let mut k = Key::new(key);
                if !t.is_dotted()
                    && let Some(indent) = last_key_indent(t)
                {
                    k.leaf_decor_mut().set_prefix(indent);
                }
                t.insert_formatted(&k, toml_edit::value(value));
            }
        },
        Some(Item::Value(Value::InlineTable(t))) => inline_set(t, key, Value::from(value)),
        Some(_) => return Err("cannot edit `labels`: it is not a table".to_string()),
    }
    Ok(())
}

fn remove_label(doc: &mut DocumentMut, key: &str) -> Result<(), String> {
    let table_pos = match doc.get_mut("labels") {
        Some(Item::Table(t)) => {
            let keys: Vec<String> = t.iter().map(|(k, _)| k.to_string()).collect();
            let next = keys
                .iter()
                .skip_while(|k| k.as_str() != key)
                .nth(1)
                .cloned();
            let prefix = t
                .key(key)
                .and_then(|k| k.leaf_decor().prefix())
                .and_then(|p| p.as_str())
                .unwrap_or("")
                .to_string();
            t.remove(key);
            let detached = if t.is_dotted() {
                None
            } else {
                detached_comments(&prefix)
            };
            match (detached, next) {
                (None, _) => return Ok(()),
                (Some(text), Some(next)) => {
                    if let Some(mut k) = t.key_mut(&next) {
                        let old = decor_str(k.leaf_decor().prefix());
                        k.leaf_decor_mut().set_prefix(join_prefix(&text, &old));
                    }
                    return Ok(());
                }
                (Some(text), None) => (t.position(), text),
            }
        }
        Some(Item::Value(Value::InlineTable(t))) => {
            inline_remove(t, key);
            return Ok(());
        }
        _ => return Err("cannot edit `labels`: it is not a table".to_string()),
    };
    let (pos, text) = table_pos;
    keep_after(doc, pos, &text);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// taint

/// A taint to remove: a key, and an effect or all of them.
#[derive(Debug)]
struct Removal {
    spec: String,
    key: String,
    effect: Option<String>,
}

/// kubectl's `parseTaint`: `KEY`, `KEY:EFFECT` or `KEY=VALUE:EFFECT`.
fn parse_taint(spec: &str) -> Result<(String, String, Option<String>), String> {
    let bad = |why: String| format!("invalid taint spec \"{spec}\": {why}");
    let (key, value, effect) = match spec.split(':').collect::<Vec<_>>().as_slice() {
        [key] if key.contains('=') => {
            return Err(bad(
                "write KEY=VALUE:EFFECT to add a taint, KEY- or KEY:EFFECT- to remove taints"
                    .to_string(),
            ));
        }
        [key] => (*key, "", None),
        [kv, effect] => {
            if !EFFECTS.contains(effect) {
                let hint = did_you_mean(effect, &EFFECTS)
                    .map(|s| format!(" (did you mean \"{s}\"?)"))
                    .unwrap_or_default();
                return Err(bad(format!(
                    "unsupported effect \"{effect}\"{hint}: supported effects: {}",
                    EFFECTS.join(", ")
                )));
            }
            match kv.split('=').collect::<Vec<_>>().as_slice() {
                [key] => (*key, "", Some(*effect)),
                [key, value] => (*key, *value, Some(*effect)),
                _ => return Err(bad("a taint value cannot contain '='".to_string())),
            }
        }
        _ => {
            return Err(bad(
                "write KEY[=VALUE]:EFFECT to add a taint, KEY[:EFFECT]- to remove taints"
                    .to_string(),
            ));
        }
    };
    if let Some(m) = is_qualified_name(key).into_iter().next() {
        return Err(bad(format!("invalid key \"{key}\": {m}")));
    }
    if let Some(m) = is_valid_label_value(value).into_iter().next() {
        return Err(bad(format!("invalid value \"{value}\": {m}")));
    }
    Ok((
        key.to_string(),
        value.to_string(),
        effect.map(str::to_string),
    ))
}

/// kubectl's `ParseTaints`, plus its check that no taint is both added and removed.
fn parse_taint_specs(specs: &[String]) -> Result<(Vec<Taint>, Vec<Removal>), Vec<String>> {
    let (mut add, mut remove, mut errors) =
        (Vec::<Taint>::new(), Vec::<Removal>::new(), Vec::new());
    for spec in specs {
        if let Some(body) = spec.strip_suffix('-') {
            match parse_taint(body) {
                Ok((key, _, effect)) => remove.push(Removal {
                    spec: body.to_string(),
                    key,
                    effect,
                }),
                Err(e) => errors.push(e),
            }
            continue;
        }
        let parsed = if spec.contains(':') {
            parse_taint(spec)
        } else {
            Ok((String::new(), String::new(), None))
        };
        match parsed {
            Ok((_, _, None)) => errors.push(format!(
                "invalid taint spec \"{spec}\": an effect is required: KEY[=VALUE]:EFFECT, EFFECT \
                 one of {}",
                EFFECTS.join(", ")
            )),
            Ok((key, value, Some(effect))) => {
                let taint = Taint { key, value, effect };
                if add
                    .iter()
                    .any(|t| t.key == taint.key && t.effect == taint.effect)
                {
                    errors.push(format!(
                        "duplicated taints with the same key and effect: {taint}"
                    ));
                } else {
                    add.push(taint);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let conflicts: Vec<String> = remove
        .iter()
        .filter(|r| {
            add.iter()
                .any(|t| t.key == r.key && r.effect.as_ref().is_none_or(|e| *e == t.effect))
        })
        .map(|r| r.spec.clone())
        .collect();
    if !conflicts.is_empty() {
        errors.push(format!(
            "can not both modify and remove the following taint(s) in the same command: {}",
            conflicts.join(", ")
        ));
    }
    if errors.is_empty() {
        Ok((add, remove))
    } else {
        Err(errors)
    }
}

fn taint(s: &mut Session, specs: &[String], overwrite: bool) -> Outcome {
    let (add, remove) = match parse_taint_specs(specs) {
        Ok(x) => x,
        Err(errors) => return Outcome::Refused(errors),
    };
    let mut errors = Vec::new();
    if !overwrite {
        let clashing: Vec<&str> = add
            .iter()
            .filter(|t| {
                s.taints
                    .iter()
                    .any(|c| c.key == t.key && c.effect == t.effect && c.value != t.value)
            })
            .map(|t| t.key.as_str())
            .collect();
        if !clashing.is_empty() {
            errors.push(format!(
                "node {} already has {} taint(s) with same effect(s) and --overwrite is false",
                s.node.name,
                clashing.join(",")
            ));
        }
    }
    for r in &remove {
        let matches =
            |t: &Taint| t.key == r.key && r.effect.as_ref().is_none_or(|e| *e == t.effect);
        if s.taints.iter().any(matches) {
            continue;
        }
        let mut message = format!("taint \"{}\" not found", r.spec);
        if s.unschedulable
            && r.key == TAINT_NODE_UNSCHEDULABLE
            && r.effect.as_deref().is_none_or(|e| e == EFFECT_NO_SCHEDULE)
        {
            message.push_str(
                " in the file: `unschedulable = true` adds it; remove it with `hostset node \
                 uncordon`",
            );
        }
        errors.push(message);
    }
    if !errors.is_empty() {
        return Outcome::Refused(errors);
    }

    let (mut added, mut modified, mut removed) = (false, false, false);
    for t in &add {
        let result = match s
            .taints
            .iter()
            .position(|c| c.key == t.key && c.effect == t.effect)
        {
            Some(i) if s.taints[i].value == t.value => Ok(()),
            Some(i) => {
                modified = true;
                set_taint_value(&mut s.doc, i, &t.value)
            }
            None => {
                added = true;
                push_taint(&mut s.doc, t)
            }
        };
        if let Err(e) = result {
            return Outcome::Refused(vec![e]);
        }
    }
    // From the last taint to the first, so that indices stay valid.
    for i in (0..s.taints.len()).rev() {
        let t = &s.taints[i];
        if remove
            .iter()
            .any(|r| t.key == r.key && r.effect.as_ref().is_none_or(|e| *e == t.effect))
        {
            if let Err(e) = remove_taint(&mut s.doc, i) {
                return Outcome::Refused(vec![e]);
            }
            removed = true;
        }
    }
    // kubectl: "modified" when taints were both added and removed (or values overwritten).
    if modified || (added && removed) {
        Outcome::Changed("modified")
    } else if added {
        Outcome::Changed("tainted")
    } else if removed {
        Outcome::Changed("untainted")
    } else {
        Outcome::Unchanged("unchanged")
    }
}

fn push_taint(doc: &mut DocumentMut, t: &Taint) -> Result<(), String> {
    match doc.get_mut("taints") {
        None => {
            let mut aot = toml_edit::ArrayOfTables::new();
            aot.push(taint_table(t));
            doc.insert("taints", Item::ArrayOfTables(aot));
        }
        Some(Item::ArrayOfTables(aot)) => aot.push(taint_table(t)),
        Some(Item::Value(Value::Array(a))) => {
            let mut it = InlineTable::new();
            it.insert("key", Value::from(t.key.as_str()));
            if !t.value.is_empty() {
                it.insert("value", Value::from(t.value.as_str()));
            }
            it.insert("effect", Value::from(t.effect.as_str()));
            it.fmt();
            array_push(a, Value::InlineTable(it));
        }
        Some(_) => return Err("cannot edit `taints`: it is not a list of tables".to_string()),
    }
    Ok(())
}

fn taint_table(t: &Taint) -> Table {
    let mut table = Table::new();
    table.insert("key", toml_edit::value(t.key.as_str()));
    if !t.value.is_empty() {
        table.insert("value", toml_edit::value(t.value.as_str()));
    }
    table.insert("effect", toml_edit::value(t.effect.as_str()));
    table
}

fn set_taint_value(doc: &mut DocumentMut, i: usize, value: &str) -> Result<(), String> {
    let err = || "cannot edit `taints`: it is not a list of tables".to_string();
    match doc.get_mut("taints") {
        Some(Item::ArrayOfTables(aot)) => {
            let t = aot.get_mut(i).ok_or_else(err)?;
            if let Some(item) = t.get_mut("value") {
                replace_value(item, Value::from(value));
            } else if !value.is_empty() {
                // Written between key and effect, the order of `kubectl get node -o yaml`.
                let effect = t.remove_entry("effect");
                t.insert("value", toml_edit::value(value));
                if let Some((k, item)) = effect {
                    t.insert_formatted(&k, item);
                }
            }
        }
        Some(Item::Value(Value::Array(a))) => {
            let t = a
                .get_mut(i)
                .and_then(Value::as_inline_table_mut)
                .ok_or_else(err)?;
            if let Some(v) = t.get_mut("value") {
                let decor = v.decor().clone();
                *v = Value::from(value);
                *v.decor_mut() = decor;
            } else if !value.is_empty() {
                let effect = t.remove_entry("effect");
                inline_set(t, "value", Value::from(value));
                if let Some((k, v)) = effect {
                    t.insert_formatted(&k, v);
                }
            }
        }
        _ => return Err(err()),
    }
    Ok(())
}

fn remove_taint(doc: &mut DocumentMut, i: usize) -> Result<(), String> {
    let err = || "cannot edit `taints`: it is not a list of tables".to_string();
    let kept = match doc.get_mut("taints") {
        Some(Item::ArrayOfTables(aot)) => {
            let t = aot.get(i).ok_or_else(err)?;
            let pos = t.position();
            let detached = detached_comments(&decor_str(t.decor().prefix()));
            aot.remove(i);
            if aot.is_empty() {
                doc.remove("taints");
            }
            detached.map(|text| (pos, text))
        }
        Some(Item::Value(Value::Array(a))) => {
            if i >= a.len() {
                return Err(err());
            }
            array_remove(a, i);
            if a.is_empty() {
                doc.remove("taints");
            }
            None
        }
        _ => return Err(err()),
    };
    if let Some((pos, text)) = kept {
        keep_after(doc, pos, &text);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// cordon, uncordon

fn cordon(s: &mut Session, on: bool) -> Outcome {
    if s.unschedulable == on {
        return Outcome::Unchanged(if on {
            "already cordoned"
        } else {
            "already uncordoned"
        });
    }
    match s.doc.get_mut("unschedulable") {
        Some(item) => replace_value(item, Value::from(on)),
        None => insert_root_value(&mut s.doc, "unschedulable", Value::from(on)),
    }
    if !on
        && s.taints
            .iter()
            .any(|t| t.key == TAINT_NODE_UNSCHEDULABLE && t.effect == EFFECT_NO_SCHEDULE)
    {
        s.notes.push(format!(
            "hostset: warning: the taint {TAINT_NODE_UNSCHEDULABLE}:{EFFECT_NO_SCHEDULE} is \
             listed in the file and stays; remove it with `hostset node taint \
             {TAINT_NODE_UNSCHEDULABLE}:{EFFECT_NO_SCHEDULE}-`"
        ));
    }
    Outcome::Changed(if on { "cordoned" } else { "uncordoned" })
}

// ---------------------------------------------------------------------------------------------
// Formatting-preserving helpers

/// Replace a value, keeping the whitespace and comment around it.
fn replace_value(item: &mut Item, mut new: Value) {
    if let Some(old) = item.as_value() {
        *new.decor_mut() = old.decor().clone();
    }
    *item = Item::Value(new);
}

/// Set a key of an inline table; a new key goes last, taking over the space before `}`.
fn inline_set(t: &mut InlineTable, key: &str, mut new: Value) {
    if let Some(v) = t.get_mut(key) {
        *new.decor_mut() = v.decor().clone();
        *v = new;
        return;
    }
    if let Some((_, last)) = t.iter_mut().last() {
        let suffix = decor_str(last.decor().suffix());
        last.decor_mut().set_suffix("");
        new.decor_mut().set_suffix(suffix);
    }
    t.insert(key, new);
}

/// Remove a key of an inline table; when it was the last, the one before takes over the
/// space before `}`.
fn inline_remove(t: &mut InlineTable, key: &str) {
    let was_last = t.iter().last().is_some_and(|(k, _)| k == key);
    let Some(removed) = t.remove(key) else {
        return;
    };
    if was_last && let Some((_, last)) = t.iter_mut().last() {
        last.decor_mut()
            .set_suffix(decor_str(removed.decor().suffix()));
    }
}

/// Append to an inline array, formatted like the element before it.
fn array_push(a: &mut toml_edit::Array, mut new: Value) {
    if let Some(last) = a.iter().last() {
        let prefix = decor_str(last.decor().prefix());
        let suffix = decor_str(last.decor().suffix());
        new.decor_mut().set_prefix(if prefix.contains('\n') {
            prefix
        } else {
            " ".to_string()
        });
        new.decor_mut().set_suffix(suffix);
        if let Some(last) = a.iter_mut().last() {
            last.decor_mut().set_suffix("");
        }
    } else {
        new.decor_mut().set_prefix("");
        new.decor_mut().set_suffix("");
    }
    a.push_formatted(new);
}

/// Remove from an inline array; the first and last places keep their formatting.
fn array_remove(a: &mut toml_edit::Array, i: usize) {
    let removed = a.remove(i);
    if i == 0
        && let Some(next) = a.get_mut(0)
    {
        next.decor_mut()
            .set_prefix(decor_str(removed.decor().prefix()));
    }
    if i == a.len()
        && i > 0
        && let Some(prev) = a.get_mut(i - 1)
    {
        prev.decor_mut()
            .set_suffix(decor_str(removed.decor().suffix()));
    }
}

fn decor_str(raw: Option<&toml_edit::RawString>) -> String {
    raw.and_then(|r| r.as_str()).unwrap_or("").to_string()
}

/// The indentation of a table's last key.
fn last_key_indent(t: &Table) -> Option<String> {
    let (k, _) = t.iter().last()?;
    let prefix = decor_str(t.key(k)?.leaf_decor().prefix());
    let indent = prefix.rsplit('\n').next().unwrap_or("");
    (!indent.is_empty() && indent.trim().is_empty()).then(|| indent.to_string())
}

/// The text before an entry, split after its last blank line: what is separated from the
/// entry, and what is its own (the comment lines right above it, its indentation).
fn split_prefix(prefix: &str) -> (&str, &str) {
    let mut at = 0;
    let mut offset = 0;
    for line in prefix.split_inclusive('\n') {
        offset += line.len();
        if line.ends_with('\n') && line.trim().is_empty() {
            at = offset;
        }
    }
    prefix.split_at(at)
}

/// What of the text before a removed entry does not belong to it: the lines up to and
/// including its last blank line, when they hold a comment. The comment lines right above
/// the entry (no blank line between) are its own and go with it.
fn detached_comments(prefix: &str) -> Option<String> {
    let (detached, _) = split_prefix(prefix);
    detached
        .lines()
        .any(|l| l.trim_start().starts_with('#'))
        .then(|| detached.to_string())
}

/// Insert a top-level key. It goes after the other top-level keys, before the first table
/// header; when there are no other top-level keys, after the comments that open the file
/// and with a blank line before the first header.
fn insert_root_value(doc: &mut DocumentMut, key: &str, value: Value) {
    let has_values = doc
        .as_table()
        .iter()
        .any(|(_, item)| item.is_value() || item.as_table().is_some_and(Table::is_dotted));
    let mut k = Key::new(key);
    if !has_values
        && let Some(pos) = next_header_position(doc.as_table(), isize::MIN)
        && let Some(header) = table_at_position(doc.as_table_mut(), pos)
    {
        let prefix = decor_str(header.decor().prefix());
        let (top, own) = split_prefix(&prefix);
        if top.lines().any(|l| !l.trim().is_empty()) {
            k.leaf_decor_mut().set_prefix(top);
        }
        header.decor_mut().set_prefix(format!("\n{own}"));
    }
    doc.as_table_mut().insert_formatted(&k, Item::Value(value));
}

/// `text` (ending with a blank line) put before `prefix`, without doubling the blank line.
fn join_prefix(text: &str, prefix: &str) -> String {
    let starts_blank = prefix
        .split_inclusive('\n')
        .next()
        .is_some_and(|l| l.ends_with('\n') && l.trim().is_empty());
    if starts_blank {
        format!("{}\n{prefix}", text.trim_end())
    } else {
        format!("{text}{prefix}")
    }
}

/// Keep `text` where a removed entry of the table at `pos` was: before the next table header,
/// else at the end of the document.
fn keep_after(doc: &mut DocumentMut, pos: Option<isize>, text: &str) {
    let after = pos.unwrap_or(isize::MIN);
    let next = next_header_position(doc.as_table(), after);
    if let Some(target) = next
        && let Some(t) = table_at_position(doc.as_table_mut(), target)
    {
        let old = decor_str(t.decor().prefix());
        t.decor_mut().set_prefix(join_prefix(text, &old));
        return;
    }
    let old = decor_str(Some(doc.trailing()));
    let joined = join_prefix(text, &old);
    doc.set_trailing(joined);
}

/// The smallest position of a table written with a header after `after`.
fn next_header_position(t: &Table, after: isize) -> Option<isize> {
    let mut best: Option<isize> = None;
    let consider = |sub: &Table, best: &mut Option<isize>| {
        if !sub.is_implicit()
            && !sub.is_dotted()
            && let Some(p) = sub.position()
            && p > after
            && best.is_none_or(|b| p < b)
        {
            *best = Some(p);
        }
        if let Some(p) = next_header_position(sub, after)
            && best.is_none_or(|b| p < b)
        {
            *best = Some(p);
        }
    };
    for (_, item) in t.iter() {
        match item {
            Item::Table(sub) => consider(sub, &mut best),
            Item::ArrayOfTables(aot) => {
                for sub in aot.iter() {
                    consider(sub, &mut best);
                }
            }
            _ => {}
        }
    }
    best
}

/// The table with a header at position `pos`.
fn table_at_position(t: &mut Table, pos: isize) -> Option<&mut Table> {
    for (_, item) in t.iter_mut() {
        let subs: Vec<&mut Table> = match item {
            Item::Table(sub) => vec![sub],
            Item::ArrayOfTables(aot) => aot.iter_mut().collect(),
            _ => continue,
        };
        for sub in subs {
            if !sub.is_implicit() && !sub.is_dotted() && sub.position() == Some(pos) {
                return Some(sub);
            }
            if let Some(found) = table_at_position(sub, pos) {
                return Some(found);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn label_specs() {
        let (set, remove) = parse_label_specs(&specs(&["a=1", "b=", "c-", "a=1"])).unwrap();
        assert_eq!(set, [("a".into(), "1".into()), ("b".into(), String::new())]);
        assert_eq!(remove, ["c"]);
        for bad in ["a", "-", "a=b=c", "bad key=x", "k=bad value", "a=1 a-"] {
            let args: Vec<String> = bad.split(' ').map(str::to_string).collect();
            assert!(parse_label_specs(&args).is_err(), "{bad}");
        }
        assert!(parse_label_specs(&specs(&["a=1", "a=2"])).is_err());
    }

    #[test]
    fn taint_specs() {
        let (add, remove) = parse_taint_specs(&specs(&[
            "a=1:NoSchedule",
            "b:NoExecute",
            "c-",
            "d:NoSchedule-",
        ]))
        .unwrap();
        assert_eq!(add[0].to_string(), "a=1:NoSchedule");
        assert_eq!(add[1].to_string(), "b:NoExecute");
        assert_eq!(
            (remove[0].key.as_str(), remove[0].effect.as_deref()),
            ("c", None)
        );
        assert_eq!(remove[1].effect.as_deref(), Some("NoSchedule"));
        for bad in [
            "a",
            "a=1",
            "a:Never",
            "a:b:NoSchedule",
            "a=b=c:NoSchedule",
            "bad key:NoSchedule",
            "a=bad value:NoSchedule",
            "a:NoSchedule a=2:NoSchedule",
            "a:NoSchedule a-",
            "a:NoSchedule a:NoSchedule-",
        ] {
            let args: Vec<String> = bad.split(' ').map(str::to_string).collect();
            assert!(parse_taint_specs(&args).is_err(), "{bad}");
        }
        let e = parse_taint_specs(&specs(&["a:NoSchedul"])).unwrap_err();
        assert!(e[0].contains("did you mean \"NoSchedule\""), "{e:?}");
        // Different effects of one key are different taints.
        assert!(
            parse_taint_specs(&specs(&[
                "a:NoSchedule",
                "a:NoExecute",
                "a:PreferNoSchedule-"
            ]))
            .is_ok()
        );
    }

    #[test]
    fn detached_comments_are_those_before_a_blank_line() {
        assert_eq!(detached_comments("# mine\n"), None);
        assert_eq!(detached_comments("\n# mine\n"), None);
        assert_eq!(
            detached_comments("# section\n\n# mine\n  "),
            Some("# section\n\n".to_string())
        );
        assert_eq!(detached_comments("\n\n"), None);
        assert_eq!(join_prefix("# s\n\n", "\n# next\n"), "# s\n\n# next\n");
        assert_eq!(join_prefix("# s\n\n", ""), "# s\n\n");
    }
}
