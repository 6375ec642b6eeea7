//! Property tests: no input makes a spec or node parser panic, and every
//! diagnostic names its file.
//!
//! Three generators: arbitrary text; valid examples with random edits (which
//! reach deep into the decoders and validation, unlike random text); and
//! documents assembled from the grammar's own keys and values.

use hostset::spec::{Format, parse_daemonsets};
use proptest::prelude::*;

const FORMATS: [Format; 3] = [Format::Toml, Format::Yaml, Format::Json];

fn check(text: &str) {
    for format in FORMATS {
        let loaded = parse_daemonsets("f", text, format);
        for d in &loaded.diagnostics {
            assert_eq!(d.file, "f");
            assert!(!d.message.is_empty());
            let _ = d.to_string();
        }
        if !loaded.has_errors() {
            for ds in &loaded.items {
                // Anything valid can be evaluated against any node.
                let _ = hostset::placement::evaluate(ds, &hostset::spec::Node::default());
            }
        }
    }
}

/// Every example spec: mutations of realistic files reach deep into the decoders.
fn seeds() -> Vec<String> {
    let mut paths: Vec<_> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && hostset::spec::format_of(p).is_some())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// A random edit of a seed: delete, insert or replace a few bytes at char boundaries.
fn mutate(seed: &str, edits: &[(usize, u8, String)]) -> String {
    let mut s = seed.to_string();
    for (at, kind, text) in edits {
        if s.is_empty() {
            s.push_str(text);
            continue;
        }
        let mut i = at % s.len();
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        let mut j = (i + text.len().max(1)).min(s.len());
        while !s.is_char_boundary(j) {
            j -= 1;
        }
        match kind % 3 {
            0 => s.replace_range(i..j, ""),
            1 => s.insert_str(i, text),
            _ => s.replace_range(i..j, text),
        }
    }
    s
}

const TOKENS: &[&str] = &[
    "name",
    "labels",
    "selector",
    "matchLabels",
    "matchExpressions",
    "template",
    "tolerations",
    "operator",
    "Exists",
    "Equal",
    "In",
    "NotIn",
    "Gt",
    "Lt",
    "effect",
    "NoExecute",
    "key",
    "value",
    "values",
    "command",
    "resources",
    "limits",
    "requests",
    "cpu",
    "memory",
    "100m",
    "1e3",
    "200Mi",
    "nodeSelectorTerms",
    "matchFields",
    "metadata.name",
    "updateStrategy",
    "maxSurge",
    "10%",
    "maxUnavailable",
    "mounts",
    "hostPath",
    "ports",
    "port",
    "apiVersion",
    "apps/v1",
    "kind",
    "DaemonSet",
    "spec",
    "containers",
    "volumes",
    "volumeMounts",
    "-",
    ":",
    "=",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "\n",
    "  ",
    ",",
    "&a",
    "*a",
    "!!str",
    "---",
    "null",
    "~",
    "true",
    "-1",
    "0x10",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in "\\PC{0,400}") {
        check(&text);
    }

    #[test]
    fn edited_examples(
        seed in 0usize..64,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), "\\PC{0,12}"), 1..6),
    ) {
        let seeds = seeds();
        check(&mutate(&seeds[seed % seeds.len()], &edits));
    }

    #[test]
    fn token_soup(tokens in proptest::collection::vec(proptest::sample::select(TOKENS), 0..80)) {
        check(&tokens.join(" "));
        check(&tokens.join(""));
    }
}

#[test]
fn deep_nesting_is_refused_or_handled() {
    // Deeply nested flow collections must not overflow the stack.
    for depth in [100, 10_000] {
        check(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
        check(&format!("a = {}1{}", "[".repeat(depth), "]".repeat(depth)));
    }
}
