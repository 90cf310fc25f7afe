//! Configuration errors with their location, printed one per line as
//! `<file>:<line>:<col>: <key>: <message>` so that `rpcgate check`, a reload and an editor
//! can all point at the offending key.

use std::fmt;

/// One problem in a configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: String,
    line: usize,
    col: usize,
    key: String,
    message: String,
    message_names_key: bool,
}

impl ConfigError {
    /// An error at a 1-based line and column of `file`; `key` is the key path
    /// (`listeners[0].routes[1].cluster`), empty when the error is not about one key.
    pub(crate) fn new(
        file: &str,
        line: usize,
        col: usize,
        key: String,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.to_owned(),
            line,
            col,
            key,
            message: message.into(),
            message_names_key: false,
        }
    }

    /// An error about the whole file (it cannot be read): no line, column or key.
    pub(crate) fn whole_file(file: &str, message: impl Into<String>) -> Self {
        Self::new(file, 0, 0, String::new(), message)
    }

    /// Marks a message that already names its key as a sentence (`listeners.tls is not
    /// implemented yet`), so that the line does not repeat the key path.
    pub(crate) fn with_message_naming_key(mut self) -> Self {
        self.message_names_key = true;
        self
    }

    /// The file name as given to [`crate::parse`] or the path given to [`crate::load`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// 1-based line of the error; 0 when the error concerns the whole file (I/O).
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based column (in characters) of the error; 0 when the error concerns the whole file.
    pub fn col(&self) -> usize {
        self.col
    }

    /// The key path, e.g. `listeners[0].routes[1].cluster`; empty when there is none
    /// (a TOML syntax error outside any key, an unreadable file).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong, for a human.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    /// `<file>:<line>:<col>: <key>: <message>`; the location is left out for whole-file
    /// errors and the key when there is none or when the message already names it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        if !self.key.is_empty() && !self.message_names_key {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in a configuration (never empty): validation does not stop at the
/// first one, so that a user fixes a file in one round, as with `nginx -t`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(&self.errors))]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
    /// Warnings found beside the errors (`file:line:col: key: message` lines), so that
    /// `check` can show both at once.
    warnings: Vec<String>,
}

fn render(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigErrors {
    /// Wraps a non-empty list of errors.
    pub(crate) fn new(errors: Vec<ConfigError>) -> Self {
        debug_assert!(!errors.is_empty());
        Self {
            errors,
            warnings: Vec::new(),
        }
    }

    /// The same errors, with the warnings found beside them.
    pub(crate) fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    /// Warnings found beside the errors (empty when validation stopped early).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The errors in file order (syntax errors first, as nothing else is checked then).
    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    /// How many errors there are (at least 1).
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Always `false`; here because clippy expects it beside [`ConfigErrors::len`].
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    /// Lets a caller log the errors one by one.
    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    /// Lets a caller log the errors one by one.
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}
