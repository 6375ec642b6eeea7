//! `hostset node`: the node file edited the way kubectl edits a node. Black-box, through the
//! binary, each test in its own directory.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory unique to one test, removed on drop. It is the test's
/// HOSTSET_CONFIG_DIR, so `node.toml` in it is the default node file.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("hostset-cli-node-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn node_file(&self) -> PathBuf {
        self.path("node.toml")
    }

    fn write(&self, text: &str) {
        fs::write(self.node_file(), text).unwrap();
    }

    fn read(&self) -> String {
        fs::read_to_string(self.node_file()).unwrap()
    }

    /// `hostset node ARGS...` with this directory as HOSTSET_CONFIG_DIR.
    fn node(&self, args: &[&str]) -> Output {
        hostset_node(&self.0, args)
    }

    /// The directory's entries, sorted: temporary files would show here.
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn hostset_node(config_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostset"))
        .arg("node")
        .args(args)
        .env("HOSTSET_CONFIG_DIR", config_dir)
        .output()
        .expect("run hostset")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Assert success; the stdout.
#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Assert exit code `code` and an empty stdout; the stderr.
#[track_caller]
fn fails(o: &Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    assert_eq!(stdout(o), "", "nothing on stdout when failing");
    stderr(o)
}

/// A node file as an operator writes it: comments everywhere, aligned values, blank lines.
const COMMENTED: &str = r#"# /etc/hostset/node.toml of db-1. Managed by hand.
name = "db-1"   # the node name

# Labels, added to the automatic labels.
[labels]
  # where it stands
  "topology.kubernetes.io/zone" = "eu-west-1a"

  # Storage labels.

  disktype = "ssd"  # NVMe since 2024
  role = "db"

# Taints, one table each.
[[taints]]
key = "dedicated"
value = "db"            # optional, default ""
effect = "NoSchedule"   # required

# The GPU is for batch jobs only.
[[taints]]
key = "example.com/gpu"
effect = "NoExecute"

# end of file
"#;

// ---------------------------------------------------------------------------------------------
// label

#[test]
fn label_creates_a_missing_file_with_mode_0644() {
    let s = Scratch::new("label-create");
    let out = ok(&s.node(&["label", "role=db", "topology.kubernetes.io/zone=eu-west-1a"]));
    // Without `name`, the node is named after the host.
    assert!(
        out.starts_with("node/") && out.ends_with(" labeled\n") && out.lines().count() == 1,
        "{out:?}"
    );
    assert_eq!(
        s.read(),
        "[labels]\nrole = \"db\"\n\"topology.kubernetes.io/zone\" = \"eu-west-1a\"\n"
    );
    let meta = fs::metadata(s.node_file()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    assert_eq!(s.entries(), ["node.toml"]);
}

#[test]
fn label_keeps_comments_and_layout() {
    let s = Scratch::new("label-comments");
    s.write(COMMENTED);
    let out = ok(&s.node(&["label", "--overwrite", "role=web", "example.com/rack=r12"]));
    assert_eq!(out, "node/db-1 labeled\n");
    // The changed value keeps its place; the new label takes the table's indentation.
    let expected = COMMENTED.replace(
        "  role = \"db\"\n",
        "  role = \"web\"\n  \"example.com/rack\" = \"r12\"\n",
    );
    assert_eq!(s.read(), expected);

    // A removed label takes its own line and the comment right above it; a comment separated
    // from it by a blank line stays.
    let out = ok(&s.node(&["label", "disktype-", "topology.kubernetes.io/zone-"]));
    assert_eq!(out, "node/db-1 labeled\n");
    let expected = expected
        .replace("  disktype = \"ssd\"  # NVMe since 2024\n", "")
        .replace(
            "  # where it stands\n  \"topology.kubernetes.io/zone\" = \"eu-west-1a\"\n",
            "",
        );
    assert_eq!(s.read(), expected);
    assert!(expected.contains("[labels]\n\n  # Storage labels.\n\n  role = \"web\"\n"));
}

#[test]
fn label_inline_table_stays_inline() {
    let s = Scratch::new("label-inline");
    s.write("name = \"web-1\"\nlabels = { role = \"web\", disktype = \"ssd\" }\n");
    assert_eq!(
        ok(&s.node(&["label", "zone=a", "disktype-"])),
        "node/web-1 labeled\n"
    );
    assert_eq!(
        s.read(),
        "name = \"web-1\"\nlabels = { role = \"web\", zone = \"a\" }\n"
    );
}

#[test]
fn label_overwrite_rules() {
    let s = Scratch::new("label-overwrite");
    let before = "name = \"db-1\"\n\n[labels]\nrole = \"db\"\n";
    s.write(before);

    // A different value needs --overwrite, as in kubectl.
    let err = fails(&s.node(&["label", "role=web"]), 1);
    assert_eq!(
        err,
        "hostset: 'role' already has a value (db), and --overwrite is false\n"
    );
    assert_eq!(s.read(), before);

    // The same value is no change.
    assert_eq!(
        ok(&s.node(&["label", "role=db"])),
        "node/db-1 not labeled\n"
    );
    assert_eq!(s.read(), before);

    assert_eq!(
        ok(&s.node(&["label", "--overwrite", "role=web"])),
        "node/db-1 labeled\n"
    );
    assert_eq!(s.read(), "name = \"db-1\"\n\n[labels]\nrole = \"web\"\n");

    // Automatic labels count as values the node has.
    if cfg!(target_os = "linux") {
        let err = fails(&s.node(&["label", "kubernetes.io/os=windows"]), 1);
        assert_eq!(
            err,
            "hostset: 'kubernetes.io/os' already has a value (linux), and --overwrite is false\n"
        );
    }
    let err = fails(&s.node(&["label", "kubernetes.io/hostname=other"]), 1);
    assert!(err.contains("already has a value (db-1)"), "{err}");
    // --overwrite overrides an automatic label in the file.
    ok(&s.node(&["label", "--overwrite", "kubernetes.io/hostname=other"]));
    assert!(
        s.read()
            .ends_with("role = \"web\"\n\"kubernetes.io/hostname\" = \"other\"\n")
    );
}

#[test]
fn label_removal_forms() {
    let s = Scratch::new("label-remove");
    s.write("name = \"db-1\"\n\n[labels]\nrole = \"db\"\n\"kubernetes.io/os\" = \"linux\"\n");
    let o = s.node(&["label", "role-", "absent-"]);
    assert_eq!(ok(&o), "node/db-1 labeled\n");
    assert_eq!(stderr(&o), "label \"absent\" not found.\n");
    assert_eq!(
        s.read(),
        "name = \"db-1\"\n\n[labels]\n\"kubernetes.io/os\" = \"linux\"\n"
    );

    // Removing what is not there changes nothing, as kubectl says.
    let o = s.node(&["label", "role-"]);
    assert_eq!(ok(&o), "node/db-1 not labeled\n");
    assert_eq!(stderr(&o), "label \"role\" not found.\n");

    // An automatic label written in the file can be removed from it; the automatic value
    // then shows through.
    let o = s.node(&["label", "kubernetes.io/os-"]);
    assert_eq!(ok(&o), "node/db-1 labeled\n");
    assert!(
        stderr(&o).contains("\"kubernetes.io/os\" is also an automatic label"),
        "{}",
        stderr(&o)
    );
    assert_eq!(s.read(), "name = \"db-1\"\n\n[labels]\n");

    // An automatic label alone cannot be removed.
    let err = fails(&s.node(&["label", "kubernetes.io/hostname-"]), 1);
    assert!(err.contains("is set automatically"), "{err}");

    // Setting and removing one label in one command is refused.
    let err = fails(&s.node(&["label", "role=x", "role-"]), 1);
    assert_eq!(
        err,
        "hostset: can not both modify and remove label \"role\" in the same command\n"
    );
    assert_eq!(s.read(), "name = \"db-1\"\n\n[labels]\n");
}

#[test]
fn invalid_label_exits_1_and_leaves_the_file_alone() {
    let s = Scratch::new("label-invalid");
    s.write(COMMENTED);
    let before_inode = fs::metadata(s.node_file()).unwrap().ino();
    for args in [
        &["bad key=x"][..],
        &["example.com/=x"],
        &["Example.com/a=x"],
        &["k=-x"],
        &["k=a=b"],
        &["k"],
        // All or nothing: the valid label is not written either.
        &["good=yes", "k=has space"],
    ] {
        let err = fails(&s.node(&[&["label"][..], args].concat()), 1);
        assert!(err.starts_with("hostset: invalid label"), "{args:?}: {err}");
        assert_eq!(s.read(), COMMENTED, "{args:?}");
    }
    let err = fails(&s.node(&["label", "bad/key/x=1"]), 1);
    assert!(err.contains("invalid label key \"bad/key/x\""), "{err}");
    assert_eq!(fs::metadata(s.node_file()).unwrap().ino(), before_inode);
    assert_eq!(s.entries(), ["node.toml"]);
}

// ---------------------------------------------------------------------------------------------
// taint

#[test]
fn taint_add_overwrite_and_remove() {
    let s = Scratch::new("taint");
    s.write("name = \"db-1\"\n");

    assert_eq!(
        ok(&s.node(&[
            "taint",
            "dedicated=db:NoSchedule",
            "example.com/gpu:NoExecute"
        ])),
        "node/db-1 tainted\n"
    );
    let tainted = "name = \"db-1\"\n\n[[taints]]\nkey = \"dedicated\"\nvalue = \"db\"\neffect = \"NoSchedule\"\n\n[[taints]]\nkey = \"example.com/gpu\"\neffect = \"NoExecute\"\n";
    assert_eq!(s.read(), tainted);

    // Same key and effect, another value: needs --overwrite (kubectl's message).
    let err = fails(&s.node(&["taint", "dedicated=web:NoSchedule"]), 1);
    assert_eq!(
        err,
        "hostset: node db-1 already has dedicated taint(s) with same effect(s) and --overwrite is false\n"
    );
    assert_eq!(s.read(), tainted);

    // The same taint again changes nothing.
    assert_eq!(
        ok(&s.node(&["taint", "dedicated=db:NoSchedule"])),
        "node/db-1 unchanged\n"
    );
    assert_eq!(s.read(), tainted);

    // Another effect is another taint.
    assert_eq!(
        ok(&s.node(&["taint", "dedicated=db:PreferNoSchedule"])),
        "node/db-1 tainted\n"
    );

    // kubectl says "modified" when a value is overwritten.
    assert_eq!(
        ok(&s.node(&["taint", "--overwrite", "dedicated=web:NoSchedule"])),
        "node/db-1 modified\n"
    );
    assert!(
        s.read()
            .contains("key = \"dedicated\"\nvalue = \"web\"\neffect = \"NoSchedule\"\n")
    );

    // A value added to a taint without one goes between key and effect.
    assert_eq!(
        ok(&s.node(&["taint", "--overwrite", "example.com/gpu=batch:NoExecute"])),
        "node/db-1 modified\n"
    );
    assert!(
        s.read()
            .contains("key = \"example.com/gpu\"\nvalue = \"batch\"\neffect = \"NoExecute\"\n")
    );

    assert_eq!(
        ok(&s.node(&["taint", "dedicated-", "example.com/gpu:NoExecute-"])),
        "node/db-1 untainted\n"
    );
    // The last taint gone, so is `taints`.
    assert_eq!(s.read(), "name = \"db-1\"\n");
}

#[test]
fn taint_removal_forms() {
    let s = Scratch::new("taint-remove");
    s.write("name = \"db-1\"\n");
    ok(&s.node(&[
        "taint",
        "gpu:NoSchedule",
        "gpu=x:NoExecute",
        "other:NoSchedule",
    ]));

    // KEY:EFFECT- removes that taint only; a value in the spec is ignored, as in kubectl.
    assert_eq!(
        ok(&s.node(&["taint", "gpu=whatever:NoExecute-"])),
        "node/db-1 untainted\n"
    );
    assert_eq!(
        s.read(),
        "name = \"db-1\"\n\n[[taints]]\nkey = \"gpu\"\neffect = \"NoSchedule\"\n\n[[taints]]\nkey = \"other\"\neffect = \"NoSchedule\"\n"
    );
    ok(&s.node(&["taint", "gpu:NoExecute"]));

    // KEY- removes every taint with the key.
    assert_eq!(ok(&s.node(&["taint", "gpu-"])), "node/db-1 untainted\n");
    let only_other = "name = \"db-1\"\n\n[[taints]]\nkey = \"other\"\neffect = \"NoSchedule\"\n";
    assert_eq!(s.read(), only_other);

    // Removing a taint the node does not have is an error, as in kubectl.
    let err = fails(&s.node(&["taint", "gpu-"]), 1);
    assert_eq!(err, "hostset: taint \"gpu\" not found\n");
    let err = fails(&s.node(&["taint", "other:NoExecute-"]), 1);
    assert_eq!(err, "hostset: taint \"other:NoExecute\" not found\n");
    // ... and nothing else of the command happens.
    let err = fails(&s.node(&["taint", "new:NoSchedule", "gpu-"]), 1);
    assert_eq!(err, "hostset: taint \"gpu\" not found\n");
    assert_eq!(s.read(), only_other);

    // Adding and removing one taint in one command is refused.
    let err = fails(&s.node(&["taint", "a:NoSchedule", "a-"]), 1);
    assert!(
        err.contains("can not both modify and remove the following taint(s)"),
        "{err}"
    );

    // Adding and removing different taints: "modified".
    assert_eq!(
        ok(&s.node(&["taint", "new:NoSchedule", "other-"])),
        "node/db-1 modified\n"
    );
}

#[test]
fn invalid_taint_exits_1_and_leaves_the_file_alone() {
    let s = Scratch::new("taint-invalid");
    s.write(COMMENTED);
    for (spec, message) in [
        (
            "dedicated=db:NoSchedul",
            "hostset: invalid taint spec \"dedicated=db:NoSchedul\": unsupported effect \"NoSchedul\" (did you mean \"NoSchedule\"?): supported effects: NoSchedule, PreferNoSchedule, NoExecute\n",
        ),
        (
            "dedicated=db",
            "hostset: invalid taint spec \"dedicated=db\": an effect is required: KEY[=VALUE]:EFFECT, EFFECT one of NoSchedule, PreferNoSchedule, NoExecute\n",
        ),
        (
            "dedicated",
            "hostset: invalid taint spec \"dedicated\": an effect is required: KEY[=VALUE]:EFFECT, EFFECT one of NoSchedule, PreferNoSchedule, NoExecute\n",
        ),
        (
            "a:b:NoSchedule",
            "hostset: invalid taint spec \"a:b:NoSchedule\": write KEY[=VALUE]:EFFECT to add a taint, KEY[:EFFECT]- to remove taints\n",
        ),
        (
            "bad key:NoSchedule",
            "hostset: invalid taint spec \"bad key:NoSchedule\": invalid key \"bad key\": ",
        ),
        (
            "k=-v:NoSchedule",
            "hostset: invalid taint spec \"k=-v:NoSchedule\": invalid value \"-v\": ",
        ),
        (
            "k=a=b:NoSchedule",
            "hostset: invalid taint spec \"k=a=b:NoSchedule\": a taint value cannot contain '='\n",
        ),
    ] {
        let err = fails(&s.node(&["taint", spec]), 1);
        assert!(err.starts_with(message), "{spec}: {err}");
        assert_eq!(s.read(), COMMENTED, "{spec}");
    }
    let err = fails(&s.node(&["taint", "a:NoSchedule", "a=x:NoSchedule"]), 1);
    assert_eq!(
        err,
        "hostset: duplicated taints with the same key and effect: a=x:NoSchedule\n"
    );
    assert_eq!(s.entries(), ["node.toml"]);
}

#[test]
fn taints_keep_comments_and_layout() {
    let s = Scratch::new("taint-comments");
    s.write(COMMENTED);
    assert_eq!(
        ok(&s.node(&[
            "taint",
            "--overwrite",
            "dedicated=web:NoSchedule",
            "spot:PreferNoSchedule"
        ])),
        "node/db-1 modified\n"
    );
    // The value changes in place, its comment stays; the new taint follows the others.
    let expected = COMMENTED
        .replace(
            "value = \"db\"            # optional",
            "value = \"web\"            # optional",
        )
        .replace(
            "effect = \"NoExecute\"\n",
            "effect = \"NoExecute\"\n\n[[taints]]\nkey = \"spot\"\neffect = \"PreferNoSchedule\"\n",
        );
    assert_eq!(s.read(), expected);

    // A removed taint takes its table and the comment right above it, nothing else.
    assert_eq!(
        ok(&s.node(&["taint", "example.com/gpu-"])),
        "node/db-1 untainted\n"
    );
    let expected = expected.replace(
        "\n# The GPU is for batch jobs only.\n[[taints]]\nkey = \"example.com/gpu\"\neffect = \"NoExecute\"\n",
        "",
    );
    assert_eq!(s.read(), expected);
    assert!(expected.ends_with("effect = \"PreferNoSchedule\"\n\n# end of file\n"));
}

// ---------------------------------------------------------------------------------------------
// cordon, uncordon

#[test]
fn cordon_and_uncordon() {
    let s = Scratch::new("cordon");
    s.write(COMMENTED);

    assert_eq!(ok(&s.node(&["cordon"])), "node/db-1 cordoned\n");
    // After the other top-level keys, before the first table.
    let cordoned = COMMENTED.replace(
        "name = \"db-1\"   # the node name\n",
        "name = \"db-1\"   # the node name\nunschedulable = true\n",
    );
    assert_eq!(s.read(), cordoned);

    // Twice: kubectl's answer, and the file is not even rewritten.
    let inode = fs::metadata(s.node_file()).unwrap().ino();
    assert_eq!(ok(&s.node(&["cordon"])), "node/db-1 already cordoned\n");
    assert_eq!(s.read(), cordoned);
    assert_eq!(fs::metadata(s.node_file()).unwrap().ino(), inode);

    // The agent sees the unschedulable taint; it cannot be removed as a taint.
    let err = fails(
        &s.node(&["taint", "node.kubernetes.io/unschedulable:NoSchedule-"]),
        1,
    );
    assert!(err.contains("hostset node uncordon"), "{err}");

    assert_eq!(ok(&s.node(&["uncordon"])), "node/db-1 uncordoned\n");
    assert_eq!(
        s.read(),
        cordoned.replace("unschedulable = true", "unschedulable = false")
    );
    assert_eq!(ok(&s.node(&["uncordon"])), "node/db-1 already uncordoned\n");
}

#[test]
fn cordon_a_file_with_tables_only_or_none() {
    let s = Scratch::new("cordon-tables");
    // No top-level key yet: the new one goes after the file's opening comment, and a blank
    // line separates it from the first table.
    s.write("# node file\n\n# roles\n[labels]\nrole = \"db\"\n");
    ok(&s.node(&["cordon"]));
    assert_eq!(
        s.read(),
        "# node file\n\nunschedulable = true\n\n# roles\n[labels]\nrole = \"db\"\n"
    );

    // Uncordoning a node without a file writes nothing.
    let s = Scratch::new("uncordon-none");
    let out = ok(&s.node(&["uncordon"]));
    assert!(out.ends_with(" already uncordoned\n"), "{out}");
    assert_eq!(s.entries(), Vec::<String>::new());
    let out = ok(&s.node(&["cordon"]));
    assert!(out.ends_with(" cordoned\n"), "{out}");
    assert_eq!(s.read(), "unschedulable = true\n");
}

// ---------------------------------------------------------------------------------------------
// show

const SHOWN: &str = r#"name = "db-1"
unschedulable = true

[labels]
role = "db"
"kubernetes.io/arch" = "fakearch"

[[taints]]
key = "dedicated"
value = "db"
effect = "NoSchedule"
"#;

#[test]
fn show_json_contract() {
    let s = Scratch::new("show-json");
    s.write(SHOWN);
    let out = ok(&s.node(&["show", "-o", "json"]));
    assert_eq!(out.lines().count(), 1, "one JSON object on one line: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["labels", "name", "taints", "unschedulable"]);
    assert_eq!(v["name"], "db-1");
    assert_eq!(v["unschedulable"], true);
    // The file's labels, over the automatic ones; kubernetes.io/hostname is the node name.
    let labels = v["labels"].as_object().unwrap();
    assert_eq!(labels["role"], "db");
    assert_eq!(labels["kubernetes.io/arch"], "fakearch");
    assert_eq!(labels["kubernetes.io/hostname"], "db-1");
    if cfg!(target_os = "linux") {
        assert_eq!(labels["kubernetes.io/os"], "linux");
    }
    assert!(labels.values().all(serde_json::Value::is_string));
    // The file's taints, then the one `unschedulable = true` adds; `value` always present.
    assert_eq!(
        v["taints"],
        serde_json::json!([
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unschedulable", "value": "", "effect": "NoSchedule"},
        ])
    );
}

#[test]
fn show_text() {
    let s = Scratch::new("show-text");
    s.write(SHOWN);
    let out = ok(&s.node(&["show"]));
    assert!(
        out.starts_with("Name:          db-1\nLabels:        "),
        "{out}"
    );
    assert!(out.contains("\n               role=db\n"), "{out}");
    assert!(
        out.ends_with(
            "Taints:        dedicated=db:NoSchedule\n               node.kubernetes.io/unschedulable:NoSchedule\nUnschedulable: true\n"
        ),
        "{out}"
    );
}

#[test]
fn show_without_a_file_and_with_an_invalid_one() {
    let s = Scratch::new("show-none");
    let v: serde_json::Value = serde_json::from_str(&ok(&s.node(&["show", "-o", "json"]))).unwrap();
    assert_eq!(v["taints"], serde_json::json!([]));
    assert_eq!(v["unschedulable"], false);
    assert_eq!(s.entries(), Vec::<String>::new(), "show writes nothing");

    s.write("name = \"Bad_Name\"\n");
    let err = fails(&s.node(&["show"]), 1);
    assert!(
        err.contains("node.toml:1:8: name: invalid value \"Bad_Name\""),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Files

#[test]
fn kubernetes_node_files_are_shown_not_edited() {
    let s = Scratch::new("kubernetes");
    let yaml = s.path("node.yaml");
    let text =
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: cp-1\n  labels:\n    role: control-plane\n";
    fs::write(&yaml, text).unwrap();
    let y = yaml.to_str().unwrap();

    let v: serde_json::Value =
        serde_json::from_str(&ok(&s.node(&["show", "--node-file", y, "-o", "json"]))).unwrap();
    assert_eq!(v["name"], "cp-1");
    assert_eq!(v["labels"], serde_json::json!({"role": "control-plane"}));

    for args in [
        &["label", "--node-file", y, "a=b"][..],
        &["taint", "--node-file", y, "a:NoSchedule"],
        &["cordon", "--node-file", y],
    ] {
        let err = fails(&s.node(args), 1);
        assert!(
            err.contains("is a Kubernetes v1 Node (YAML)") && err.contains("switch to node.toml"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&yaml).unwrap(), text);
    }
    let json = s.path("node.json");
    fs::write(&json, "{\"apiVersion\": \"v1\", \"kind\": \"Node\"}").unwrap();
    let err = fails(
        &s.node(&["uncordon", "--node-file", json.to_str().unwrap()]),
        1,
    );
    assert!(err.contains("is a Kubernetes v1 Node (JSON)"), "{err}");

    // A Node saved under the native name is recognised too.
    s.write(text);
    let err = fails(&s.node(&["label", "a=b"]), 1);
    assert!(err.contains("is a Kubernetes v1 Node"), "{err}");
    assert_eq!(s.read(), text);
}

#[test]
fn an_invalid_file_is_not_edited() {
    let s = Scratch::new("invalid-file");
    let text = "name = \"db-1\"\nlabels = { role = 1 }\n";
    s.write(text);
    let err = fails(&s.node(&["label", "a=b"]), 1);
    assert!(
        err.starts_with("/") && err.contains("node.toml:2:19: labels[role]: must be a string"),
        "{err}"
    );
    assert!(err.ends_with("is invalid: fix the errors above first (the file was not changed)\n"));
    assert_eq!(s.read(), text);

    s.write("name = \"db-1\"\n[[taints]\n");
    let err = fails(&s.node(&["cordon"]), 1);
    assert!(err.contains("invalid TOML"), "{err}");
}

#[test]
fn the_write_is_atomic_and_keeps_the_mode() {
    let s = Scratch::new("atomic");
    s.write("name = \"db-1\"\n");
    fs::set_permissions(s.node_file(), fs::Permissions::from_mode(0o600)).unwrap();
    let inode = fs::metadata(s.node_file()).unwrap().ino();

    ok(&s.node(&["label", "role=db"]));
    let meta = fs::metadata(s.node_file()).unwrap();
    // Replaced by a rename, not written in place: the agent never reads half a file.
    assert_ne!(meta.ino(), inode);
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(s.entries(), ["node.toml"], "no temporary file left behind");

    // Refused edits leave nothing behind either.
    fails(&s.node(&["label", "role=web"]), 1);
    fails(&s.node(&["taint", "x-"]), 1);
    assert_eq!(s.entries(), ["node.toml"]);
}

#[test]
fn node_file_option_and_symlinks() {
    let s = Scratch::new("node-file");
    let real = s.path("real.toml");
    fs::write(&real, "name = \"n1\"\n").unwrap();
    let r = real.to_str().unwrap();

    // Before or after the subcommand.
    assert_eq!(
        ok(&s.node(&["--node-file", r, "label", "a=1"])),
        "node/n1 labeled\n"
    );
    assert_eq!(
        ok(&s.node(&["label", "b=2", "--node-file", r])),
        "node/n1 labeled\n"
    );
    assert_eq!(
        fs::read_to_string(&real).unwrap(),
        "name = \"n1\"\n\n[labels]\na = \"1\"\nb = \"2\"\n"
    );
    assert!(!s.node_file().exists(), "the default file is not touched");

    // A symlinked node file stays a symlink; its target is edited.
    std::os::unix::fs::symlink(&real, s.node_file()).unwrap();
    assert_eq!(ok(&s.node(&["cordon"])), "node/n1 cordoned\n");
    assert!(
        fs::symlink_metadata(s.node_file())
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::read_to_string(&real)
            .unwrap()
            .contains("unschedulable = true\n")
    );
    assert_eq!(s.entries(), ["node.toml", "real.toml"]);
}

#[test]
fn concurrent_edits_are_serialized() {
    let s = Scratch::new("concurrent");
    s.write("name = \"db-1\"\n");
    let children: Vec<_> = (0..12)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_hostset"))
                .args(["node", "label", &format!("k{i}=v{i}")])
                .env("HOSTSET_CONFIG_DIR", &s.0)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert_eq!(ok(&o), "node/db-1 labeled\n");
    }
    // No update lost: every label is there.
    let text = s.read();
    for i in 0..12 {
        assert!(
            text.contains(&format!("k{i} = \"v{i}\"\n")),
            "k{i} lost:\n{text}"
        );
    }
    assert_eq!(s.entries(), ["node.toml"]);
}

#[test]
fn usage_errors_exit_2() {
    let s = Scratch::new("usage");
    for args in [
        &["label"][..],
        &["taint"],
        &["bogus"],
        &["show", "-o", "yaml"],
        &["label", "--overwrite"],
    ] {
        let o = s.node(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(s.entries(), Vec::<String>::new());
}
