//! Configuration: YAML with spans → typed `Config`, with every error reported at once
//! as `FILE:LINE:COL: key.path: what was expected` (SPEC §1, §3).

pub mod cache;
pub mod files;
pub mod keyword;
pub mod model;
pub mod pool;
pub mod process;
pub mod raw;
pub mod read;
pub mod ser;
pub mod spans;
pub mod traffic;
pub mod validate;
pub mod value;

pub use cache::{CacheConfig, CacheKeyPart, RouteCacheConfig};
pub use model::*;
pub use raw::Diagnostic;
pub use value::{AccessLogKeyword, LogLevel};

use marked_yaml::types::{MarkedScalarNode, Node};
use marked_yaml::{parse_yaml_with_options, LoadError, LoaderOptions};
use raw::{Decoder, Pos};
use std::path::Path;

/// A configuration that passed every check, with the warnings it produced.
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Reads, parses and validates `path`, opening every referenced file too.
pub fn load(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            file: display.clone(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the configuration: {e}"),
        }]
    })?;
    parse_str(&display, &text, &|name| std::env::var(name).ok(), true)
}

/// Parses configuration text; `env` resolves `${NAME}`; `open_files` checks certificates.
pub fn parse_str(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    open_files: bool,
) -> Result<Loaded, Vec<Diagnostic>> {
    let mut d = Decoder::new(file, env);
    let text = if text.trim().is_empty() { "{}" } else { text };
    if let Some(line) = second_document(text) {
        let pos = Pos { line, column: 1 };
        d.error(pos, "", "only one YAML document is allowed");
        return Err(d.errors);
    }
    let strict = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = match parse_yaml_with_options(0, text, strict) {
        Ok(root) => root,
        Err(LoadError::DuplicateKey(dup)) => {
            // Report it with its full key path, then go on with the rest of the file
            // (duplicates allowed) so that every other error is reported too.
            let Ok(root) = parse_yaml_with_options(0, text, LoaderOptions::default()) else {
                d.error(
                    pos_of(&dup.key),
                    dup.key.as_str(),
                    format!("duplicate key {:?}", dup.key.as_str()),
                );
                return Err(d.errors);
            };
            let path =
                key_path(&root, "", &dup.prev_key).unwrap_or_else(|| dup.key.as_str().to_string());
            d.error(
                pos_of(&dup.key),
                &path,
                format!("duplicate key {:?}", dup.key.as_str()),
            );
            root
        }
        Err(e) => {
            let (pos, path, message) = describe_load_error(&e);
            d.error(pos, &path, message);
            return Err(d.errors);
        }
    };
    let config = read::read_config(&mut d, &root);
    if let Some(c) = &config {
        // Reference checks run on what did parse, so they are reported with value errors.
        validate::check(&mut d, c);
        if d.errors.is_empty() && open_files {
            files::check(&mut d, c);
        }
    }
    match config {
        Some(config) if d.errors.is_empty() => Ok(Loaded {
            config,
            warnings: d.warnings,
        }),
        _ => Err(d.errors),
    }
}

/// The line (1-based) where a second YAML document starts, if the text has one: a
/// `---` after content, or content after a `...` end marker. YAML forbids these markers
/// at column 1 inside any scalar, so a line scan is exact. The parser would silently
/// ignore everything after the first document.
fn second_document(text: &str) -> Option<usize> {
    let marker = |line: &str, m: &str| {
        line.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
    };
    let mut content = false;
    let mut ended = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let directive = line.starts_with('%') && !content;
        let blank = trimmed.is_empty() || trimmed.starts_with('#') || directive;
        if marker(line, "---") {
            if content || ended {
                return Some(i + 1);
            }
            let rest = line[3..].trim_start();
            content = !rest.is_empty() && !rest.starts_with('#');
        } else if marker(line, "...") {
            ended = true;
        } else if !blank {
            if ended {
                return Some(i + 1);
            }
            content = true;
        }
    }
    None
}

fn pos_of(key: &MarkedScalarNode) -> Pos {
    Pos::of(key.span())
}

/// The key path (`pools[0].algorithm`) of the mapping key written at `key`'s position.
fn key_path(node: &Node, path: &str, key: &MarkedScalarNode) -> Option<String> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match node {
        Node::Mapping(m) => m.iter().find_map(|(k, v)| {
            if k.as_str() == key.as_str() && pos_of(k) == pos_of(key) {
                Some(join(k.as_str()))
            } else {
                key_path(v, &join(k.as_str()), key)
            }
        }),
        Node::Sequence(s) => s
            .iter()
            .enumerate()
            .find_map(|(i, v)| key_path(v, &format!("{path}[{i}]"), key)),
        Node::Scalar(_) => None,
    }
}

fn describe_load_error(e: &LoadError) -> (Pos, String, String) {
    let at = |m: &marked_yaml::Marker| Pos {
        line: m.line(),
        column: m.column(),
    };
    match e {
        LoadError::DuplicateKey(inner) => {
            let pos = inner.key.span().start().map(at).unwrap_or_default();
            (
                pos,
                inner.key.as_str().to_string(),
                format!("duplicate key {:?}", inner.key.as_str()),
            )
        }
        LoadError::TopLevelMustBeMapping(m) => (
            at(m),
            String::new(),
            "the top level must be a mapping".into(),
        ),
        LoadError::UnexpectedAnchor(m) => (
            at(m),
            String::new(),
            "YAML anchors and aliases are not supported".into(),
        ),
        LoadError::UnexpectedTag(m) => (at(m), String::new(), "YAML tags are not supported".into()),
        LoadError::MappingKeyMustBeScalar(m) => (
            at(m),
            String::new(),
            "mapping keys must be plain strings".into(),
        ),
        LoadError::ScanError(m, err) => (
            at(m),
            String::new(),
            format!("invalid YAML: {}", err.info()),
        ),
        other => (
            Pos::default(),
            String::new(),
            format!("invalid YAML: {other}"),
        ),
    }
}

#[cfg(test)]
mod tests;
