//! Switchyard's configuration: the TOML schema, its defaults, and validation that reports every
//! problem of a file at once as `file:line: message`.
//!
//! ```
//! let cfg = switchyard_config::load_str(r#"
//! [[slot]]
//! name = "hello"
//! kind = "static"
//! body = "hi"
//!
//! [[route]]
//! name = "root"
//! path = "/"
//! stable = "hello"
//! "#).unwrap();
//! assert_eq!(cfg.routes[0].stable, "hello");
//! ```

mod schema;
mod validate;

use std::fmt;
use std::path::Path;

pub use schema::*;
pub use validate::{
    MAX_SIDE_LIMIT, MAX_TILE_BATCH, check_sticky, check_upstream_url, resolve, valid_name,
};

/// The configuration used when no file is given: one route answering from a static slot.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/default.toml");

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, when the problem can be tied to one.
    pub line: Option<usize>,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    /// The file name used in messages.
    pub file: String,
    /// The problems, in file order where lines are known.
    pub items: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{}:{}: {}", self.file, line, p.message)?,
                None => write!(f, "{}: {}", self.file, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// A segment of the path to a value in the TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, Problems> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Problems {
        file: file.clone(),
        items: vec![Problem {
            line: None,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    load_named(&text, &file, path.parent())
}

/// Parses and validates configuration text (file name `<config>` in messages; relative paths
/// resolve against the current directory).
pub fn load_str(text: &str) -> Result<Config, Problems> {
    load_named(text, "<config>", None)
}

/// Parses and validates configuration text, naming it `file` in messages. Relative file paths in the
/// configuration (TLS certificates) are checked against `base_dir` when given.
pub fn load_named(text: &str, file: &str, base_dir: Option<&Path>) -> Result<Config, Problems> {
    let fail = |items: Vec<Problem>| Problems {
        file: file.to_string(),
        items,
    };
    let doc = toml::de::DeTable::parse(text).map_err(|e| fail(vec![toml_problem(text, &e)]))?;
    let mut unknown: Vec<Vec<Seg>> = Vec::new();
    let de = toml::de::Deserializer::from(doc);
    let parsed: Result<Config, _> =
        serde_ignored::deserialize(de, |path| unknown.push(ignored_path(&path)));
    let config = parsed.map_err(|e| fail(vec![toml_problem(text, &e)]))?;

    let lines = LineIndex::new(text);
    let doc = toml::de::DeTable::parse(text).map_err(|e| fail(vec![toml_problem(text, &e)]))?;
    let locate = |path: &[Seg]| span_of(doc.get_ref(), path).map(|off| lines.line_of(off));

    let mut items: Vec<Problem> = unknown
        .iter()
        .map(|path| Problem {
            line: locate(path),
            message: format!("unknown key `{}`", render_path(path)),
        })
        .collect();
    for (path, message) in validate::validate(&config, base_dir) {
        items.push(Problem {
            line: locate(&path),
            message,
        });
    }
    if items.is_empty() {
        let mut config = config;
        for r in &mut config.routes {
            if let (Some(b), Some(g), Some(a)) = (&r.blue, &r.green, r.active.as_deref()) {
                r.stable = if a == "blue" { b.clone() } else { g.clone() };
            }
        }
        Ok(config)
    } else {
        items.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(fail(items))
    }
}

fn toml_problem(text: &str, e: &toml::de::Error) -> Problem {
    let line = e.span().map(|s| LineIndex::new(text).line_of(s.start));
    Problem {
        line,
        message: e.message().trim().to_string(),
    }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path as P;
    let mut out = match path {
        P::Root => return Vec::new(),
        P::Seq { parent, .. }
        | P::Map { parent, .. }
        | P::Some { parent }
        | P::NewtypeStruct { parent }
        | P::NewtypeVariant { parent } => ignored_path(parent),
    };
    match path {
        P::Seq { index, .. } => out.push(Seg::Index(*index)),
        P::Map { key, .. } => out.push(Seg::Key(key.clone())),
        _ => {}
    }
    out
}

/// Renders a path as the user wrote it: `route[1].match[0].slot`.
pub(crate) fn render_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Byte offset of the deepest element of `path` present in the document (so a problem with a
/// missing key points at its table).
fn span_of(table: &toml::de::DeTable<'_>, path: &[Seg]) -> Option<usize> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(k) = first else { return None };
    let (key, value) = table.get_key_value(k.as_str())?;
    let mut best = key.span().start;
    let mut cur = value;
    for seg in rest {
        let next = match (seg, cur.get_ref()) {
            (Seg::Key(k), toml::de::DeValue::Table(t)) => t
                .get_key_value(k.as_str())
                .map(|(key, v)| (key.span().start, v)),
            (Seg::Index(i), toml::de::DeValue::Array(a)) => a.get(*i).map(|v| (v.span().start, v)),
            _ => None,
        };
        match next {
            Some((start, v)) => {
                best = start;
                cur = v;
            }
            None => break,
        }
    }
    Some(best)
}

struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    fn line_of(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

#[cfg(test)]
mod tests;
