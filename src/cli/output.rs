//! What the coordinator commands print: kubectl-style tables, ages, timestamps, and YAML.
//!
//! The YAML emitter is small on purpose: it writes a `serde_json::Value` as block YAML the
//! way kubectl prints objects (block mappings, sequences at their key's indentation, keys in
//! the order of the value's map, which is sorted), and quotes every string that a YAML 1.1 or
//! 1.2 reader could take for something else. Quoted strings are always double-quoted, with
//! escapes for line breaks and control characters, so every string round-trips.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// `-o` of `get daemonsets` and `get nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// The objects as the coordinator serves them, as JSON.
    Json,
    /// The same, as YAML.
    Yaml,
    /// The table with more columns.
    Wide,
}

/// `-o` of `describe` and `get endpoints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataFormat {
    /// The object(s) as the coordinator serves them, as JSON.
    Json,
    /// The same, as YAML.
    Yaml,
}

/// Print a value as pretty JSON or YAML on stdout.
pub fn print_data<T: serde::Serialize>(value: &T, format: DataFormat) -> anyhow::Result<()> {
    match format {
        DataFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        DataFormat::Yaml => print!("{}", to_yaml(&serde_json::to_value(value)?)),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tables

/// Columns left-aligned, three spaces apart, the last one unpadded (kubectl's tabwriter
/// settings: padding 3). `rows[0]` is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    indented_table(rows, "")
}

/// [`table`] with every line prefixed, for the tables inside `describe`.
pub fn indented_table(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        out.push_str(indent);
        let last = row.len().saturating_sub(1);
        for (c, cell) in row.iter().enumerate() {
            if c == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}   ", w = widths[c]);
            }
        }
        out.push('\n');
    }
    out
}

/// kubectl's rendering of an empty list or string.
pub fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

/// Comma-joined, `<none>` when empty (kubectl's LABELS, TAINTS, ADDRESSES).
pub fn joined<S: AsRef<str>>(items: &[S]) -> String {
    let v: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    or_none(&v.join(","))
}

// ---------------------------------------------------------------------------------------------
// Time

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// kubectl's AGE of a timestamp (seconds since the epoch): `<unknown>` for none (0),
/// else [`human_duration`] of the time since.
pub fn age(timestamp: u64, now: u64) -> String {
    if timestamp == 0 {
        return "<unknown>".to_string();
    }
    human_duration(now as i64 - timestamp as i64)
}

/// `duration.HumanDuration` of k8s.io/apimachinery (`pkg/util/duration/duration.go`), which
/// kubectl prints in AGE columns: `45s`, `3m20s`, `20m`, `5h`, `5h30m`, `2d`, `3d4h`, `400d`,
/// `2y10d`. A clock up to one second behind gives `0s`; more is `<invalid>`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// RFC 3339 in UTC (`2024-05-01T12:00:00Z`), `<unknown>` for 0.
pub fn timestamp(seconds: u64) -> String {
    if seconds == 0 {
        return "<unknown>".to_string();
    }
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `timestamp (age ago)`, as describe prints times.
pub fn timestamp_with_age(seconds: u64, now: u64) -> String {
    if seconds == 0 {
        return "<unknown>".to_string();
    }
    format!("{} ({} ago)", timestamp(seconds), age(seconds, now))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---------------------------------------------------------------------------------------------
// YAML

/// A JSON value as a YAML document (block style, ending with a newline).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

/// A value that fits on its key's line: a scalar, `{}` or `[]`.
fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        Value::Array(_) => "[]".to_string(),
        Value::Object(_) => "{}".to_string(),
    }
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        _ => false,
    }
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar(key));
        out.push(':');
        match value {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                write_map(out, m, indent + 2);
            }
            // kubectl's style: a sequence in a mapping starts at its key's indentation.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, indent);
            }
            scalar => {
                out.push(' ');
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        if is_block(item) {
            // The item as a block two columns in, its first line's indentation replaced by
            // the dash: `- key: v` / `  other: w`, or `- - a` for a sequence in a sequence.
            let mut block = String::new();
            match item {
                Value::Object(m) => write_map(&mut block, m, indent + 2),
                Value::Array(a) => write_seq(&mut block, a, indent + 2),
                _ => unreachable!("is_block"),
            }
            out.push_str(&" ".repeat(indent));
            out.push_str("- ");
            out.push_str(&block[indent + 2..]);
        } else {
            out.push_str(&" ".repeat(indent));
            out.push_str("- ");
            out.push_str(&inline(item));
            out.push('\n');
        }
    }
}

/// A string as a YAML scalar: plain when no reader could take it for anything else (or
/// misparse it), else double-quoted.
pub fn scalar(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        double_quoted(s)
    }
}

/// Words YAML 1.1 or 1.2 readers resolve to booleans, null or special floats.
const RESERVED: [&str; 14] = [
    "true", "false", "null", "yes", "no", "on", "off", "y", "n", "~", ".inf", "+.inf", "-.inf",
    ".nan",
];

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let last = s.chars().next_back().unwrap_or(first);
    if first.is_whitespace() || last.is_whitespace() {
        return false;
    }
    // Indicators that start something else, and `=` (YAML 1.1's value key) and `<` (`<<`).
    if "-?:,[]{}#&*!|>'\"%@`=<~".contains(first) {
        return false;
    }
    if s.starts_with("...") || RESERVED.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        return false;
    }
    if looks_numeric(s) {
        return false;
    }
    if s.ends_with(':') || s.contains(": ") || s.contains(" #") {
        return false;
    }
    // Flow indicators mean nothing here in block context, but readers disagree at the
    // edges (and the result would not paste into a flow collection): quote them.
    if s.contains([',', '[', ']', '{', '}']) {
        return false;
    }
    s.chars()
        .all(|c| !c.is_control() && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}'))
}

/// Anything a YAML 1.1 or 1.2 reader could resolve as a number or a timestamp: it starts
/// with a digit, or with a sign or a dot and a digit (`12`, `-1`, `.5`, `0x1F`, `1e3`,
/// YAML 1.1's sexagesimal `1:20` and dates `2024-05-01T12:00:00Z`). Deliberately broad:
/// `10.0.0.1` and `6.1.0-v8` are quoted too, which is harmless.
fn looks_numeric(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let body = body.strip_prefix('.').unwrap_or(body);
    body.starts_with(|c: char| c.is_ascii_digit())
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}') =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::doc::{self, parse_yaml};
    use serde_json::json;

    /// The crate's own YAML reader's tree as JSON.
    fn to_json(node: &doc::Node) -> Value {
        match &node.value {
            doc::Value::Null => Value::Null,
            doc::Value::Bool(b) => Value::Bool(*b),
            doc::Value::Int(i) => json!(i),
            doc::Value::Float(f) => json!(f),
            doc::Value::Str(s) => Value::String(s.clone()),
            doc::Value::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
            doc::Value::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), to_json(&e.value)))
                    .collect(),
            ),
        }
    }

    fn round_trip(value: &Value) {
        let yaml = to_yaml(value);
        let docs = parse_yaml(&yaml).unwrap_or_else(|e| panic!("{yaml}\ndoes not parse: {e:?}"));
        // A null document is dropped by the reader.
        let back = docs.first().map_or(Value::Null, to_json);
        assert_eq!(&back, value, "round trip of\n{yaml}");
    }

    #[test]
    fn kubectl_layout() {
        let v = json!({
            "name": "log-collector",
            "status": {"desiredNumberScheduled": 3, "numberReady": 2},
            "taints": ["dedicated=db:NoSchedule", "example.com/gpu:NoExecute"],
            "nodes": [{"node": "a", "ready": true}, {"node": "b", "reasons": []}],
            "empty": {},
            "none": [],
            "matrix": [[1, 2], [], [{"x": null}]],
        });
        assert_eq!(
            to_yaml(&v),
            "\
empty: {}
matrix:
- - 1
  - 2
- []
- - x: null
name: log-collector
nodes:
- node: a
  ready: true
- node: b
  reasons: []
none: []
status:
  desiredNumberScheduled: 3
  numberReady: 2
taints:
- dedicated=db:NoSchedule
- example.com/gpu:NoExecute
"
        );
        round_trip(&v);
    }

    #[test]
    fn scalars_at_the_top() {
        assert_eq!(to_yaml(&json!("x")), "x\n");
        assert_eq!(to_yaml(&json!([])), "[]\n");
        assert_eq!(to_yaml(&json!({})), "{}\n");
        assert_eq!(to_yaml(&json!(null)), "null\n");
        assert_eq!(to_yaml(&json!(["a", {"b": 1}])), "- a\n- b: 1\n");
        for v in [json!("x"), json!([]), json!({}), json!(1.5), json!(-3)] {
            round_trip(&v);
        }
    }

    #[test]
    fn quoting() {
        let plain = [
            "log-collector",
            "active/running",
            "kubernetes.io/hostname",
            "dedicated=db:NoSchedule",
            "app=x",
            "C#",
            "it's",
            "a \"quote\" inside",
            "deadbeef",
            "Ready",
            "v1.2.3",
            "é",
            ".hidden",
            "truely",
            "a - b",
            "x:y",
        ];
        for s in plain {
            assert_eq!(scalar(s), s, "{s:?} should be plain");
        }
        let quoted = [
            ("", r#""""#),
            ("true", r#""true""#),
            ("False", r#""False""#),
            ("NULL", r#""NULL""#),
            ("yes", r#""yes""#),
            ("No", r#""No""#),
            ("on", r#""on""#),
            ("OFF", r#""OFF""#),
            ("y", r#""y""#),
            ("~", r#""~""#),
            (".inf", r#"".inf""#),
            ("-.Inf", r#""-.Inf""#),
            (".NaN", r#"".NaN""#),
            ("12", r#""12""#),
            ("-12", r#""-12""#),
            ("+1", r#""+1""#),
            ("1.5", r#""1.5""#),
            ("1e3", r#""1e3""#),
            ("0x1F", r#""0x1F""#),
            ("0o17", r#""0o17""#),
            ("1_000", r#""1_000""#),
            ("1:20", r#""1:20""#),
            (".5", r#"".5""#),
            ("1.2.3", r#""1.2.3""#),
            ("10.0.0.1", r#""10.0.0.1""#),
            ("6.1.21-v8", r#""6.1.21-v8""#),
            ("2024-05-01T12:00:00Z", r#""2024-05-01T12:00:00Z""#),
            ("3d", r#""3d""#),
            (" lead", r#"" lead""#),
            ("trail ", r#""trail ""#),
            ("- dash", r#""- dash""#),
            ("-", r#""-""#),
            ("---", r#""---""#),
            ("...", r#""...""#),
            ("?q", r#""?q""#),
            (":c", r#"":c""#),
            ("key: value", r#""key: value""#),
            ("ends:", r#""ends:""#),
            ("a #comment", r##""a #comment""##),
            ("#x", r##""#x""##),
            ("{a}", r#""{a}""#),
            ("[a]", r#""[a]""#),
            ("a,b", r#""a,b""#),
            ("tier in (a,b)", r#""tier in (a,b)""#),
            ("&anchor", r#""&anchor""#),
            ("*alias", r#""*alias""#),
            ("!tag", r#""!tag""#),
            ("|", r#""|""#),
            (">", r#"">""#),
            ("<none>", r#""<none>""#),
            ("<<", r#""<<""#),
            ("=", r#""=""#),
            ("%x", r#""%x""#),
            ("@x", r#""@x""#),
            ("`x`", r#""`x`""#),
            ("'x'", r#""'x'""#),
            ("\"x\"", r#""\"x\"""#),
            ("two\nlines", r#""two\nlines""#),
            ("tab\there", r#""tab\there""#),
            ("back\\slash\n", r#""back\\slash\n""#),
            ("bell\u{7}", r#""bell\x07""#),
            ("nul\0", r#""nul\0""#),
            ("ls\u{2028}", r#""ls\u2028""#),
            ("nel\u{85}", r#""nel\u0085""#),
        ];
        for (s, want) in quoted {
            assert_eq!(scalar(s), want, "{s:?}");
        }
        // Every one of them reads back as the same string, as a value and as a key.
        let values: Vec<Value> = plain
            .iter()
            .chain(quoted.iter().map(|(s, _)| s))
            .map(|s| json!(s))
            .collect();
        round_trip(&Value::Array(values.clone()));
        let keys: serde_json::Map<String, Value> = values
            .iter()
            .map(|v| (v.as_str().unwrap().to_string(), json!(1)))
            .collect();
        round_trip(&Value::Object(keys));
    }

    #[test]
    fn api_objects_round_trip() {
        let detail = json!({
            "daemonset": {
                "name": "log-collector",
                "file": "/etc/hostset/daemonsets.d/log-collector.toml",
                "generation": 3,
                "revision": "tb2gzh76k4",
                "selector": "app=log-collector,tier in (a,b)",
                "nodeSelector": "<none>",
                "updateStrategy": "RollingUpdate",
                "createdAt": 1_700_000_000u64,
                "status": {"desiredNumberScheduled": 3, "numberUnavailable": 0},
            },
            "nodes": [{
                "node": "db-1",
                "reasons": ["taint dedicated=db:NoSchedule is not tolerated (add a toleration: key \"dedicated\")"],
                "problem": "",
                "restarts": 0,
                "ready": false,
                "labels": {"true": "yes", "kubernetes.io/os": "linux", "n": ""},
            }],
        });
        round_trip(&detail);
    }

    #[test]
    fn ages_like_kubectl() {
        // Each branch of HumanDuration (k8s.io/apimachinery/pkg/util/duration), at its edges.
        let cases: [(i64, &str); 22] = [
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (1, "1s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (9 * 60 + 59, "9m59s"),
            (10 * 60, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 30 * 60, "5h30m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (8 * 86_400, "8d"),
            (400 * 86_400, "400d"),
            (2 * 365 * 86_400, "2y"),
            (2 * 365 * 86_400 + 10 * 86_400, "2y10d"),
            (9 * 365 * 86_400, "9y"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s}s");
        }
        assert_eq!(age(0, 100), "<unknown>");
        assert_eq!(age(55, 100), "45s");
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "<unknown>");
        assert_eq!(timestamp(1), "1970-01-01T00:00:01Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(timestamp(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(
            timestamp_with_age(1_700_000_000, 1_700_000_045),
            "2023-11-14T22:13:20Z (45s ago)"
        );
    }

    #[test]
    fn tables() {
        let rows = vec![
            vec!["NAME".to_string(), "STATUS".into(), "AGE".into()],
            vec!["node-1".to_string(), "Ready".into(), "2d".into()],
        ];
        assert_eq!(
            table(&rows),
            "NAME     STATUS   AGE\nnode-1   Ready    2d\n"
        );
        assert_eq!(
            indented_table(&rows, "  "),
            "  NAME     STATUS   AGE\n  node-1   Ready    2d\n"
        );
        assert_eq!(joined::<&str>(&[]), "<none>");
        assert_eq!(joined(&["a=b", "c=d"]), "a=b,c=d");
    }
}
