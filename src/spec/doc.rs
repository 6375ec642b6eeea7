//! A format-neutral document tree that remembers where every value was written.
//!
//! TOML, YAML and JSON are each parsed into [`Node`]s carrying a line and
//! column, so that every later error can point at the exact place in the file.
//! JSON goes through the YAML parser (YAML 1.2 is a superset of JSON).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a source file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// One key of a mapping, with the position of the key itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in the order written.
    Map(Vec<Entry>),
}

impl Value {
    /// How the type reads in an error message ("a string", "a table", ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A document that could not be parsed at all.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Byte offset -> position, for parsers that report byte spans. The line starts
/// are found once, so that a position costs a binary search and one line's
/// characters (scanning from the top for every value made large files quadratic).
struct Lines<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Self {
        let starts = std::iter::once(0)
            .chain(
                text.bytes()
                    .enumerate()
                    .filter(|(_, b)| *b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        Lines { text, starts }
    }

    fn pos_at(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset);
        let line_start = self.starts[line - 1];
        let col = self.text[line_start..]
            .char_indices()
            .take_while(|(i, _)| line_start + i < offset)
            .count()
            + 1;
        Pos { line, col }
    }
}

fn pos_at(text: &str, offset: usize) -> Pos {
    Lines::new(text).pos_at(offset)
}

/// Parse a TOML document.
pub fn parse_toml(text: &str) -> Result<Node, SyntaxError> {
    use toml::de::{DeTable, DeValue};
    let table = DeTable::parse(text).map_err(|e| SyntaxError {
        pos: pos_at(text, e.span().map_or(0, |s| s.start)),
        message: e.message().trim().to_string(),
    })?;

    fn convert(text: &Lines<'_>, value: &DeValue<'_>, start: usize) -> Node {
        let pos = text.pos_at(start);
        let value = match value {
            DeValue::String(s) => Value::Str(s.to_string()),
            DeValue::Integer(i) => {
                match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                    Ok(v) => Value::Int(v),
                    Err(_) => Value::Str(i.as_str().to_string()),
                }
            }
            DeValue::Float(f) => {
                Value::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN))
            }
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(d) => Value::Str(d.to_string()),
            DeValue::Array(items) => Value::Seq(
                items
                    .iter()
                    .map(|v| convert(text, v.get_ref(), v.span().start))
                    .collect(),
            ),
            DeValue::Table(t) => Value::Map(convert_table(text, t)),
        };
        Node { value, pos }
    }

    fn convert_table(text: &Lines<'_>, t: &DeTable<'_>) -> Vec<Entry> {
        let mut entries: Vec<(usize, Entry)> = t
            .iter()
            .map(|(k, v)| {
                let key_start = k.span().start;
                (
                    key_start,
                    Entry {
                        key: k.get_ref().to_string(),
                        key_pos: text.pos_at(key_start),
                        value: convert(text, v.get_ref(), v.span().start),
                    },
                )
            })
            .collect();
        // The TOML map is sorted by key; restore the order the file was written in.
        entries.sort_by_key(|(start, _)| *start);
        entries.into_iter().map(|(_, e)| e).collect()
    }

    let lines = Lines::new(text);
    Ok(Node {
        value: Value::Map(convert_table(&lines, table.get_ref())),
        pos: Pos { line: 1, col: 1 },
    })
}

/// Upper bound on nodes built from one YAML stream, so that alias expansion
/// ("billion laughs") cannot exhaust memory.
const MAX_YAML_NODES: usize = 200_000;

/// Parse a YAML (or JSON) stream into its documents. Empty documents are dropped.
pub fn parse_yaml(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = YamlBuilder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        pos: marker_pos(e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder
        .docs
        .into_iter()
        .filter(|d| d.value != Value::Null)
        .collect())
}

fn marker_pos(m: &Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

/// A collection being built: the node, its anchor id (0 for none) and, for
/// a mapping, the key read whose value has not come yet.
struct Open {
    node: Node,
    anchor: usize,
    pending_key: Option<(String, Pos)>,
}

#[derive(Default)]
struct YamlBuilder {
    docs: Vec<Node>,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    count: usize,
    error: Option<SyntaxError>,
}

impl YamlBuilder {
    fn fail(&mut self, pos: Pos, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError { pos, message });
        }
    }

    fn count_nodes(node: &Node) -> usize {
        match &node.value {
            Value::Seq(items) => 1 + items.iter().map(Self::count_nodes).sum::<usize>(),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|e| Self::count_nodes(&e.value))
                    .sum::<usize>()
            }
            _ => 1,
        }
    }

    /// Attach a finished node to its parent (or finish a document).
    fn push(&mut self, node: Node, anchor: usize) {
        if self.error.is_some() {
            return;
        }
        self.count += Self::count_nodes(&node);
        if self.count > MAX_YAML_NODES {
            self.fail(
                node.pos,
                format!("document too large (more than {MAX_YAML_NODES} values)"),
            );
            return;
        }
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(Open {
            node: parent,
            pending_key: pending,
            ..
        }) = self.stack.last_mut()
        else {
            self.docs.push(node);
            return;
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match pending.take() {
                None => {
                    let key = match node.value {
                        Value::Str(s) => s,
                        Value::Int(i) => i.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Null => "null".to_string(),
                        Value::Seq(_) | Value::Map(_) => {
                            let pos = node.pos;
                            self.fail(pos, "a mapping key must be a scalar".to_string());
                            return;
                        }
                    };
                    if entries.iter().any(|e| e.key == key) {
                        let pos = node.pos;
                        self.fail(pos, format!("mapping key \"{key}\" already defined"));
                        return;
                    }
                    *pending = Some((key, node.pos));
                }
                Some((key, key_pos)) => entries.push(Entry {
                    key,
                    key_pos,
                    value: node,
                }),
            },
            _ => unreachable!("only collections are pushed on the stack"),
        }
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let int = if let Some(hex) = s.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = s.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()
    } else if s
        .bytes()
        .enumerate()
        .all(|(i, c)| c.is_ascii_digit() || (i == 0 && (c == b'-' || c == b'+')))
        && s.bytes().any(|c| c.is_ascii_digit())
    {
        s.parse::<i64>().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Value::Int(i);
    }
    let looks_float = s.bytes().any(|c| c.is_ascii_digit())
        && s.bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_float && let Ok(f) = s.parse::<f64>() {
        return Value::Float(f);
    }
    Value::Str(s.to_string())
}

impl MarkedEventReceiver for YamlBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = marker_pos(&mark);
        match ev {
            Event::Scalar(s, style, anchor, tag) => {
                let value = match (&style, &tag) {
                    (_, Some(t)) if t.suffix == "str" => Value::Str(s),
                    (TScalarStyle::Plain, _) => resolve_plain(&s),
                    _ => Value::Str(s),
                };
                self.push(Node { value, pos }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                let node = Node {
                    value: Value::Seq(Vec::new()),
                    pos,
                };
                self.stack.push(Open {
                    node,
                    anchor,
                    pending_key: None,
                });
            }
            Event::MappingStart(anchor, _) => {
                let node = Node {
                    value: Value::Map(Vec::new()),
                    pos,
                };
                self.stack.push(Open {
                    node,
                    anchor,
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(mut open) = self.stack.pop() {
                    // A block mapping's event is marked after its first key; a
                    // mapping starts where its first key does.
                    if let Value::Map(entries) = &open.node.value
                        && let Some(first) = entries.first()
                        && (first.key_pos.line, first.key_pos.col)
                            < (open.node.pos.line, open.node.pos.col)
                    {
                        open.node.pos = first.key_pos;
                    }
                    self.push(open.node, open.anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.pos = pos;
                    self.push(node, 0);
                }
                None => self.fail(pos, "alias refers to an unknown anchor".to_string()),
            },
            Event::DocumentStart
            | Event::DocumentEnd
            | Event::StreamStart
            | Event::StreamEnd
            | Event::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: &Node) -> &[Entry] {
        match &n.value {
            Value::Map(e) => e,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn toml_positions_and_order() {
        let doc = parse_toml("name = \"x\"\n\n[env]\nZ = \"1\"\nA = \"2\"\n").unwrap();
        let top = map(&doc);
        assert_eq!(top[0].key, "name");
        assert_eq!(top[0].key_pos, Pos { line: 1, col: 1 });
        assert_eq!(top[0].value.pos, Pos { line: 1, col: 8 });
        let env = map(&top[1].value);
        assert_eq!(
            env.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["Z", "A"]
        );
        assert_eq!(env[1].key_pos, Pos { line: 5, col: 1 });
    }

    #[test]
    fn toml_syntax_error_has_position() {
        let err = parse_toml("a = 1\nb = \n").unwrap_err();
        assert_eq!(err.pos.line, 2);
    }

    #[test]
    fn yaml_positions_types_and_docs() {
        let docs = parse_yaml("a: 1\nb:\n  - \"2\"\n  - x\n---\n---\nc: true\n").unwrap();
        assert_eq!(docs.len(), 2);
        let top = map(&docs[0]);
        assert_eq!(top[0].value.value, Value::Int(1));
        assert_eq!(top[0].key_pos, Pos { line: 1, col: 1 });
        assert_eq!(top[0].value.pos, Pos { line: 1, col: 4 });
        let Value::Seq(items) = &top[1].value.value else {
            panic!()
        };
        assert_eq!(items[0].value, Value::Str("2".into()));
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
        assert_eq!(map(&docs[1])[0].value.value, Value::Bool(true));
    }

    #[test]
    fn json_through_yaml() {
        let docs = parse_yaml("{\n  \"a\": [1, \"b\", null],\n  \"c\": {\"d\": 1.5}\n}").unwrap();
        let top = map(&docs[0]);
        assert_eq!(top[0].key_pos.line, 2);
        let Value::Seq(items) = &top[0].value.value else {
            panic!()
        };
        assert_eq!(items[2].value, Value::Null);
    }

    #[test]
    fn yaml_duplicate_keys_and_bombs_are_errors() {
        assert!(
            parse_yaml("a: 1\na: 2\n")
                .unwrap_err()
                .message
                .contains("already defined")
        );
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            bomb.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        assert!(parse_yaml(&bomb).unwrap_err().message.contains("too large"));
    }

    #[test]
    fn plain_scalar_resolution() {
        assert_eq!(resolve_plain("0x1f"), Value::Int(31));
        assert_eq!(resolve_plain("-5"), Value::Int(-5));
        assert_eq!(resolve_plain("1.5"), Value::Float(1.5));
        assert_eq!(resolve_plain("1e3"), Value::Float(1000.0));
        assert_eq!(resolve_plain("100m"), Value::Str("100m".into()));
        assert_eq!(resolve_plain("10%"), Value::Str("10%".into()));
        assert_eq!(resolve_plain("yes"), Value::Str("yes".into()));
        assert_eq!(resolve_plain("~"), Value::Null);
    }
}
