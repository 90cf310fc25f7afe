//! Turning byte spans into `line:col` and key paths, and key paths into spans.
//!
//! Serde errors come with a byte span but no usable key path; validation errors come with
//! a key path (built while walking the file model) and the span of a value. Both are
//! resolved here against the parsed TOML tree, so every error line names the location
//! and the key the same way.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use crate::error::ConfigError;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A key in a table.
    Key(String),
    /// An element of an array (or array of tables).
    Index(usize),
}

/// A key path such as `listeners[0].routes[1].match.service`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// The path of a top-level key.
    pub(crate) fn root(key: &str) -> Self {
        Self(vec![Seg::Key(key.to_owned())])
    }

    /// This path followed by `key`.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path followed by `[index]`.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }
}

impl fmt::Display for KeyPath {
    /// Dotted keys and bracketed indices; a key that is not a TOML bare key is quoted
    /// (`request_headers."x.y"`), as it would be written in the file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The text being loaded, its name for messages, and its parsed tree.
pub(crate) struct Source<'a> {
    /// File name used in error lines.
    pub(crate) name: &'a str,
    /// The whole text.
    pub(crate) text: &'a str,
    /// The parsed TOML tree (with spans), once the syntax is known to be valid.
    pub(crate) root: Option<&'a DeTable<'a>>,
}

impl Source<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// An error at the start of `span`.
    pub(crate) fn error(
        &self,
        span: &Range<usize>,
        key: &KeyPath,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, col) = self.line_col(span.start);
        ConfigError::new(self.name, line, col, key.to_string(), message)
    }

    /// Where a key is written: the key itself for `key = value`, the header for a
    /// `[table]` or `[[array]]` (whose span starts before the key in it). `fallback` is
    /// used when the path is not in the tree.
    pub(crate) fn key_span(&self, path: &KeyPath, fallback: &Range<usize>) -> Range<usize> {
        let Some(mut table) = self.root else {
            return fallback.clone();
        };
        let mut found: Option<Range<usize>> = None;
        let mut value: Option<&DeValue<'_>> = None;
        for seg in &path.0 {
            match (seg, value) {
                (Seg::Key(k), None) | (Seg::Key(k), Some(DeValue::Table(_))) => {
                    if let Some(DeValue::Table(t)) = value {
                        table = t;
                    }
                    let Some((key, v)) = table.iter().find(|(key, _)| key.get_ref() == k) else {
                        return fallback.clone();
                    };
                    let (ks, vs) = (key.span(), v.span());
                    found = Some(if vs.start < ks.start { vs } else { ks });
                    value = Some(v.get_ref());
                }
                (Seg::Index(i), Some(DeValue::Array(a))) => {
                    let Some(v) = a.get(*i) else {
                        return fallback.clone();
                    };
                    found = Some(v.span());
                    value = Some(v.get_ref());
                }
                _ => return fallback.clone(),
            }
        }
        found.unwrap_or_else(|| fallback.clone())
    }

    /// The deepest key path whose key or value contains `offset` (for serde errors,
    /// which only carry a span). Empty when the offset is outside every key.
    pub(crate) fn path_at(&self, offset: usize) -> KeyPath {
        let mut path = KeyPath::default();
        if let Some(root) = self.root {
            find_in_table(root, offset, &mut path);
        }
        path
    }
}

/// Depth-first: children are searched whatever the parent's span, because a table's span
/// is only its header and its keys may come later in the file (`[listeners.tls]`).
fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut KeyPath) -> bool {
    for (key, value) in table.iter() {
        path.0.push(Seg::Key(key.get_ref().to_string()));
        if find_in_value(value.get_ref(), offset, path)
            || key.span().contains(&offset)
            || value.span().contains(&offset)
        {
            return true;
        }
        path.0.pop();
    }
    false
}

fn find_in_value(value: &DeValue<'_>, offset: usize, path: &mut KeyPath) -> bool {
    match value {
        DeValue::Table(t) => find_in_table(t, offset, path),
        DeValue::Array(a) => {
            for (i, elem) in a.iter().enumerate() {
                path.0.push(Seg::Index(i));
                if find_in_value(elem.get_ref(), offset, path) || elem.span().contains(&offset) {
                    return true;
                }
                path.0.pop();
            }
            false
        }
        _ => false,
    }
}
