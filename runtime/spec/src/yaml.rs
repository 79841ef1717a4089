//! A YAML document as a tree of nodes that remember where they were written.
//!
//! `serde_yaml` reports only the first error and forgets positions once a value is parsed; validation
//! needs every error with its line and column, so the spec is first read into this tree using the
//! event parser of `yaml-rust2`.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in the YAML source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Pos {
    fn from(mark: Marker) -> Self {
        Pos {
            line: mark.line(),
            column: mark.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// Key/value pairs in source order (duplicates are kept so validation can report them).
    Map(Vec<(Key, Node)>),
    Seq(Vec<Node>),
    Scalar {
        text: String,
        quoted: bool,
    },
    /// An alias (`*name`); the spec language does not use anchors, so it is reported as an error.
    Alias,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub pos: Pos,
}

/// What a scalar looks like to a human, used in "expected X, found Y" messages.
impl Node {
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Map(_) => "a mapping",
            NodeKind::Seq(_) => "a list",
            NodeKind::Alias => "an alias",
            NodeKind::Scalar { quoted: true, .. } => "a string",
            NodeKind::Scalar { text, .. } => match plain_scalar_type(text) {
                PlainType::Null => "null",
                PlainType::Bool => "a boolean",
                PlainType::Int => "an integer",
                PlainType::Float => "a number",
                PlainType::Str => "a string",
            },
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, quoted: false } if plain_scalar_type(text) == PlainType::Null)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainType {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

/// YAML 1.2 core schema resolution of an unquoted scalar.
pub fn plain_scalar_type(text: &str) -> PlainType {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return PlainType::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return PlainType::Bool,
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return PlainType::Int;
    }
    if text.parse::<f64>().is_ok() && text.bytes().any(|b| b.is_ascii_digit()) {
        return PlainType::Float;
    }
    PlainType::Str
}

/// A YAML syntax error, with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document into a positioned tree. An empty document gives a null scalar.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(source);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        pos: Pos::from(*e.marker()),
        message: e.info().to_string(),
    })?;
    if builder.documents > 1 {
        return Err(SyntaxError {
            pos: builder.second_document_pos,
            message: "expected one YAML document, found several (remove the extra `---`)".into(),
        });
    }
    Ok(builder.root.unwrap_or(Node {
        kind: NodeKind::Scalar {
            text: String::new(),
            quoted: false,
        },
        pos: Pos { line: 1, column: 1 },
    }))
}

/// Builds nodes from parser events with a stack of open collections.
#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Open>,
    root: Option<Node>,
    documents: usize,
    second_document_pos: Pos,
}

enum Open {
    Map {
        pos: Pos,
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
    },
    Seq {
        pos: Pos,
        items: Vec<Node>,
    },
}

impl TreeBuilder {
    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    // A key: the spec language only has string keys; a non-scalar key keeps its text form.
                    let name = match node.kind {
                        NodeKind::Scalar { text, .. } => text,
                        _ => "<complex key>".to_string(),
                    };
                    *pending_key = Some(Key {
                        name,
                        pos: node.pos,
                    });
                }
            },
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    self.second_document_pos = pos;
                }
            }
            Event::Scalar(text, style, _, _) => self.push_node(Node {
                kind: NodeKind::Scalar {
                    text,
                    quoted: style != TScalarStyle::Plain,
                },
                pos,
            }),
            Event::Alias(_) => self.push_node(Node {
                kind: NodeKind::Alias,
                pos,
            }),
            Event::SequenceStart(..) => self.stack.push(Open::Seq {
                pos,
                items: Vec::new(),
            }),
            Event::MappingStart(..) => self.stack.push(Open::Map {
                pos,
                entries: Vec::new(),
                pending_key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Open::Seq { pos, items }) => Node {
                        kind: NodeKind::Seq(items),
                        pos,
                    },
                    Some(Open::Map { pos, entries, .. }) => Node {
                        kind: NodeKind::Map(entries),
                        pos,
                    },
                    None => return,
                };
                self.push_node(node);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let root = parse("a: 1\nb:\n  c: \"x\"\n").unwrap();
        let NodeKind::Map(entries) = root.kind else {
            panic!("expected a map")
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[1].0.name, "b");
        let NodeKind::Map(inner) = &entries[1].1.kind else {
            panic!("expected a map")
        };
        assert_eq!(inner[0].0.pos, Pos { line: 3, column: 3 });
        assert_eq!(inner[0].1.describe(), "a string");
    }

    #[test]
    fn plain_scalars_resolve_like_yaml_1_2() {
        assert_eq!(plain_scalar_type("2"), PlainType::Int);
        assert_eq!(plain_scalar_type("0.5"), PlainType::Float);
        assert_eq!(plain_scalar_type("2Gi"), PlainType::Str);
        assert_eq!(plain_scalar_type("true"), PlainType::Bool);
        assert_eq!(plain_scalar_type("~"), PlainType::Null);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }
}
