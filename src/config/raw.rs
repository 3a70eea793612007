//! A small typed reader over the span-carrying YAML tree: it collects *every* error
//! (file:line:col, key path, what was expected) instead of stopping at the first one,
//! which serde cannot do, and expands `${NAME}` in every scalar before it is typed.

use super::spans::Spans;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, Node};
use marked_yaml::Span;
use std::fmt;

/// One configuration problem, rendered as `FILE:LINE:COL: key.path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.column, self.path, self.message
            )
        }
    }
}

/// Where a value sits in the file, kept on typed values that later checks report on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub fn of(span: &Span) -> Pos {
        span.start()
            .map(|m| Pos {
                line: m.line(),
                column: m.column(),
            })
            .unwrap_or_default()
    }
}

/// A scalar after `${NAME}` expansion.
pub struct Scalar {
    pub text: String,
    /// Quoted scalars are always strings; plain `null`/`~`/empty is a YAML null.
    pub quoted: bool,
    pub pos: Pos,
}

impl Scalar {
    pub fn is_null(&self) -> bool {
        !self.quoted && matches!(self.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }
}

/// Collects errors and warnings while typed values are read.
pub struct Decoder<'e> {
    file: String,
    env: &'e dyn Fn(&str) -> Option<String>,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// Where the values that later checks report on are written.
    pub spans: Spans,
}

impl<'e> Decoder<'e> {
    pub fn new(file: &str, env: &'e dyn Fn(&str) -> Option<String>) -> Self {
        Decoder {
            file: file.to_string(),
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
            spans: Spans::default(),
        }
    }

    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.errors.push(self.diagnostic(pos, path, message.into()));
    }

    pub fn warn(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.warnings
            .push(self.diagnostic(pos, path, message.into()));
    }

    fn diagnostic(&self, pos: Pos, path: &str, message: String) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message,
        }
    }

    /// The scalar at `node`, `${NAME}`-expanded; reports a non-scalar.
    pub fn scalar(&mut self, node: &Node, path: &str, expected: &str) -> Option<Scalar> {
        match node {
            Node::Scalar(s) => self.expand(s, path),
            _ => {
                self.error(
                    Pos::of(node.span()),
                    path,
                    format!("expected {expected}, found {}", kind_name(node)),
                );
                None
            }
        }
    }

    fn expand(&mut self, s: &MarkedScalarNode, path: &str) -> Option<Scalar> {
        let pos = Pos::of(s.span());
        let raw = s.as_str();
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                self.error(pos, path, "unterminated ${...} reference");
                return None;
            };
            let name = &after[..end];
            if name.is_empty() {
                self.error(pos, path, "empty ${} reference");
                return None;
            }
            match (self.env)(name) {
                Some(value) => out.push_str(&value),
                None => {
                    self.error(pos, path, format!("environment variable {name} is not set"));
                    return None;
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Some(Scalar {
            text: out,
            quoted: !s.may_coerce(),
            pos,
        })
    }

    /// A scalar parsed by `parse`; `expected` describes the accepted form in the error.
    pub fn parse<T>(
        &mut self,
        node: &Node,
        path: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let s = self.scalar(node, path, expected)?;
        match parse(&s.text) {
            Some(v) => Some(v),
            None => {
                self.error(s.pos, path, format!("{:?} is not {expected}", s.text));
                None
            }
        }
    }

    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.scalar(node, path, "a string")?;
        if s.is_null() {
            self.error(s.pos, path, "expected a string, found null");
            return None;
        }
        Some(s.text)
    }

    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        self.parse(node, path, "true or false", |s| match s {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => None,
        })
    }

    pub fn number<T: std::str::FromStr>(&mut self, node: &Node, path: &str) -> Option<T> {
        self.parse(node, path, "a whole number", |s| s.parse().ok())
    }

    /// A sequence of items; a single scalar is accepted as a one-item list when `scalar_ok`.
    pub fn list<T>(
        &mut self,
        node: &Node,
        path: &str,
        scalar_ok: bool,
        mut item: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Vec<T> {
        match node {
            Node::Sequence(seq) => seq
                .iter()
                .enumerate()
                .filter_map(|(i, n)| item(self, n, &format!("{path}[{i}]")))
                .collect(),
            Node::Scalar(s) if scalar_ok && !s.as_str().is_empty() => {
                item(self, node, path).into_iter().collect()
            }
            Node::Scalar(s) if s.may_coerce() && matches!(s.as_str(), "" | "~" | "null") => {
                Vec::new()
            }
            _ => {
                self.error(
                    Pos::of(node.span()),
                    path,
                    format!("expected a list, found {}", kind_name(node)),
                );
                Vec::new()
            }
        }
    }

    /// Opens a mapping for keyed reads; `None` (with an error) when `node` is not one.
    /// An empty/null value counts as an empty mapping.
    pub fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<Map<'n>> {
        match node {
            Node::Mapping(m) => Some(Map {
                node: Some(m),
                path: path.to_string(),
                pos: Pos::of(m.span()),
                used: Vec::new(),
            }),
            Node::Scalar(s) if s.may_coerce() && matches!(s.as_str(), "" | "~" | "null") => {
                Some(Map {
                    node: None,
                    path: path.to_string(),
                    pos: Pos::of(s.span()),
                    used: Vec::new(),
                })
            }
            _ => {
                self.error(
                    Pos::of(node.span()),
                    path,
                    format!("expected a mapping, found {}", kind_name(node)),
                );
                None
            }
        }
    }
}

/// A mapping being read key by key; `finish` reports keys nobody asked for.
pub struct Map<'n> {
    node: Option<&'n MarkedMappingNode>,
    pub path: String,
    pub pos: Pos,
    used: Vec<&'static str>,
}

impl<'n> Map<'n> {
    /// The value of `key`, marking it as known.
    pub fn get(&mut self, key: &'static str) -> Option<&'n Node> {
        self.used.push(key);
        self.node.and_then(|m| m.get_node(key))
    }

    /// The key path of a child, e.g. `pools[0].backends`.
    pub fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Where `key` itself is written (for reference errors about the whole entry).
    pub fn key_pos(&self, key: &str) -> Pos {
        self.node
            .and_then(|m| m.keys().find(|k| k.as_str() == key))
            .map(|k| Pos::of(k.span()))
            .unwrap_or(self.pos)
    }

    /// Where the value of `key` is written (falls back to the mapping).
    pub fn value_pos(&self, key: &str) -> Pos {
        self.node
            .and_then(|m| m.get_node(key))
            .map(|n| Pos::of(n.span()))
            .unwrap_or(self.pos)
    }

    /// Reports unknown keys; `hint` gives a special message for a known-unsupported key.
    pub fn finish(self, d: &mut Decoder, hint: impl Fn(&str) -> Option<&'static str>) {
        let Some(node) = self.node else { return };
        for key in node.keys() {
            if self.used.contains(&key.as_str()) {
                continue;
            }
            let message = match hint(key.as_str()) {
                Some(h) => h.to_string(),
                None => format!(
                    "unknown key {:?} (expected one of: {})",
                    key.as_str(),
                    self.used.join(", ")
                ),
            };
            d.error(Pos::of(key.span()), &self.child(key.as_str()), message);
        }
    }
}

fn kind_name(node: &Node) -> &'static str {
    match node {
        Node::Scalar(_) => "a scalar",
        Node::Sequence(_) => "a list",
        Node::Mapping(_) => "a mapping",
    }
}
