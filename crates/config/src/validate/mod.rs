//! Step 2: the file model ([`crate::file`]) becomes the runtime [`Config`], or every
//! error found on the way.
//!
//! Checks are made in one pass that records errors and carries on, so one run of
//! `rpcgate check` lists everything wrong with a file. The runtime value is only handed
//! out when no error was recorded.
//!
//! Keys that a later release builds are parsed and then refused here with
//! `<key> is not implemented yet`; the list is [`NOT_IMPLEMENTED`].
//!
//! This file holds the entry (`parse_text`), the pass that reports every shape (serde)
//! error, and the `Validator` core: error recording and the checks shared by all
//! sections. Each section of [`crate::file`] is checked and mapped in its own file, as
//! `impl Validator` blocks; the values used when a key is absent are in
//! [`crate::defaults`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::duration::parse_duration;
use crate::error::{ConfigError, ConfigErrors};
use crate::file::{ClusterFile, FileConfig, ListenerFile, RouteFile, Spanned};
use crate::locate::{KeyPath, Source};
use crate::runtime::{Cluster, Config, Listener};

mod access;
mod cluster;
pub(crate) use cluster::check_host_port;
mod listener;
mod rate_limit;
mod route;
mod server;
mod tls;
mod warnings;

/// Keys that parse but that this release does not act on yet; using one is an error
/// (`<key> is not implemented yet`) rather than a setting that silently does nothing.
///
/// The release that builds one of them deletes its line here, maps the key into
/// [`crate::runtime`] in its section's file of this module, and removes the "not
/// implemented" test for it (`docs/adding-a-key.md` lists every file to touch).
/// Keys with a "do nothing" value (`max_connection_age = "0s"`, `grpc_web = false`, …)
/// are accepted with that value; validation only consults this list otherwise.
pub const NOT_IMPLEMENTED: &[&str] = &["listeners.grpc_web", "listeners.cors_allowed_origins"];

/// How far validation looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Depth {
    /// What `run` and reloads need: the file and the files it names.
    Load,
    /// Also what depends on the machine and the day (`rpcgate check`): names resolve,
    /// the access log opens, certificates are valid now.
    Check,
    /// What a thick client (`rpcgate-client`) needs: as `Load`, but `[[listeners]]` may be
    /// left out — a client's file may hold only `[[clusters]]`.
    Client,
}

/// Parses and validates `text`; `name` is the file name used in errors.
pub(crate) fn parse_text(
    text: &str,
    name: &str,
    source_path: Option<PathBuf>,
    depth: Depth,
) -> Result<Config, ConfigErrors> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        // The recovered tree is a guess; checking it would report errors that are only
        // echoes of the syntax error.
        let src = Source {
            name,
            text,
            root: None,
        };
        let errors = syntax_errors
            .iter()
            .map(|e| {
                let span = e.span().unwrap_or(0..0);
                src.error(&span, &KeyPath::default(), e.message().trim())
            })
            .collect();
        return Err(ConfigErrors::new(errors));
    }
    let src = Source {
        name,
        text,
        root: Some(root.get_ref()),
    };
    let base_dir = source_path
        .as_deref()
        .and_then(std::path::Path::parent)
        .map(std::path::Path::to_path_buf);
    let mut v = Validator {
        src: &src,
        errors: Vec::new(),
        warnings: Vec::new(),
        base_dir,
        depth,
    };
    let file = match FileConfig::deserialize(toml::de::Deserializer::from(root.clone())) {
        Ok(file) => file,
        Err(first) => {
            let (mut errors, repaired) = shape_errors(&src, root.get_ref(), &first);
            // The value checks on what is left, so their errors come in the same round.
            let repaired = Spanned::new(root.span(), repaired);
            if let Ok(file) = FileConfig::deserialize(toml::de::Deserializer::from(repaired)) {
                v.config(&file, None);
                // Not about a table whose key was taken out (a missing `endpoints`, say,
                // would only echo the mistake inside it).
                let near = |a: &str, b: &str| a.starts_with(b) || b.starts_with(a);
                let shaped: Vec<String> = errors.iter().map(|e| e.key().to_owned()).collect();
                errors.extend(
                    std::mem::take(&mut v.errors)
                        .into_iter()
                        .filter(|e| !shaped.iter().any(|k| near(k, e.key()))),
                );
            }
            errors.sort_by_key(|e| (e.line(), e.col()));
            errors.dedup_by(|a, b| a.to_string() == b.to_string());
            return Err(ConfigErrors::new(errors).with_warnings(v.warnings));
        }
    };
    let mut config = v.config(&file, source_path);
    if v.errors.is_empty() {
        config.warnings = v.warnings;
        Ok(config)
    } else {
        v.errors.sort_by_key(|e| (e.line(), e.col()));
        Err(ConfigErrors::new(v.errors).with_warnings(v.warnings))
    }
}

/// Serde stops at the first error; to report them all, each section and each element of
/// `[[listeners]]` / `[[clusters]]` is deserialized again on its own. Returns the errors
/// and the tree with every bad key taken out, so that the value checks can still run on
/// what is left (a wrong type then hides no other mistake of the file).
fn shape_errors<'t>(
    src: &Source<'_>,
    root: &DeTable<'t>,
    first: &toml::de::Error,
) -> (Vec<ConfigError>, DeTable<'t>) {
    let mut errors = Vec::new();
    let mut repaired = DeTable::new();
    // serde stops at a table's first bad key; each bad key is taken out in turn and the
    // table checked again, so a wrong type does not hide the next key's mistake.
    let check = |value: &Spanned<DeValue<'t>>,
                 errors: &mut Vec<ConfigError>,
                 f: fn(ValueDeserializer<'_>) -> Option<toml::de::Error>|
     -> Spanned<DeValue<'t>> {
        let mut current = value.clone();
        for round in 0..MAX_ERRORS_PER_TABLE {
            let Some(e) = f(ValueDeserializer::from(current.clone())) else {
                break;
            };
            // Once a key was taken out, "missing field" may be its echo: not reported.
            if round > 0 && e.message().starts_with("missing field") {
                break;
            }
            errors.push(serde_error(src, &e, &value.span()));
            let Some(at) = e.span().map(|s| s.start) else {
                break;
            };
            let DeValue::Table(table) = current.get_ref() else {
                break;
            };
            let bad = table
                .iter()
                .find(|(k, v)| k.span().contains(&at) || v.span().contains(&at))
                .map(|(k, _)| k.get_ref().clone());
            let Some(bad) = bad else { break };
            let mut rest = table.clone();
            rest.remove(bad.as_ref());
            current = Spanned::new(current.span(), DeValue::Table(rest));
        }
        current
    };
    for (key, value) in root.iter() {
        let kept = match key.get_ref().as_ref() {
            "server" => check(
                value,
                &mut errors,
                de_err::<Spanned<crate::file::ServerFile>>,
            ),
            "admin" => check(
                value,
                &mut errors,
                de_err::<Spanned<crate::file::AdminFile>>,
            ),
            "log" => check(value, &mut errors, de_err::<Spanned<crate::file::LogFile>>),
            "listeners" => match value.get_ref() {
                DeValue::Array(items) => {
                    let kept = items
                        .iter()
                        .map(|item| listener_shape_errors(item, &mut errors, &check))
                        .collect();
                    Spanned::new(value.span(), DeValue::Array(kept))
                }
                _ => check(value, &mut errors, de_err::<Vec<IgnoredAny>>),
            },
            "clusters" => match value.get_ref() {
                DeValue::Array(items) => {
                    let kept = items
                        .iter()
                        .map(|item| check(item, &mut errors, de_err::<Spanned<ClusterFile>>))
                        .collect();
                    Spanned::new(value.span(), DeValue::Array(kept))
                }
                _ => check(value, &mut errors, de_err::<Vec<IgnoredAny>>),
            },
            other => {
                errors.push(src.error(
                    &src.key_span(&KeyPath::root(other), &key.span()),
                    &KeyPath::root(other),
                    format!(
                        "unknown key `{other}`, expected one of `server`, `admin`, `log`, `listeners`, `clusters`"
                    ),
                ));
                continue;
            }
        };
        repaired.insert(key.clone(), kept);
    }
    if errors.is_empty() {
        errors.push(serde_error(src, first, &(0..0)));
    }
    // `[listeners.tls]` before any `[[listeners]]` makes `listeners` a table: say how to
    // write it rather than only what serde expected.
    for e in &mut errors {
        for section in ["listeners", "clusters"] {
            if e.key().starts_with(section)
                && e.message().contains("invalid type: map, expected an array")
            {
                *e = src.error(
                    &src.key_span(&KeyPath::root(section), &(0..0)),
                    &KeyPath::root(section),
                    format!(
                        "`{section}` is an array of tables: write `[[{section}]]` (double brackets) before its sub-tables such as `[{section}.tls]`"
                    ),
                );
            }
        }
    }
    errors.sort_by_key(|e| (e.line(), e.col()));
    (errors, repaired)
}

/// A bound on the errors reported for one table (each costs a deserialization).
const MAX_ERRORS_PER_TABLE: usize = 32;

/// How [`shape_errors`] checks one value: deserialize it as a given type, record the
/// errors, return the value without its bad keys.
type ShapeCheck<'c, 't> = dyn Fn(
        &Spanned<DeValue<'t>>,
        &mut Vec<ConfigError>,
        fn(ValueDeserializer<'_>) -> Option<toml::de::Error>,
    ) -> Spanned<DeValue<'t>>
    + 'c;

/// A listener's own keys and each of its routes are checked apart, so that mistakes in
/// two routes are both reported.
fn listener_shape_errors<'t>(
    item: &Spanned<DeValue<'t>>,
    errors: &mut Vec<ConfigError>,
    check: &ShapeCheck<'_, 't>,
) -> Spanned<DeValue<'t>> {
    let DeValue::Table(table) = item.get_ref() else {
        return check(item, errors, de_err::<Spanned<ListenerFile>>);
    };
    let mut without_routes = table.clone();
    let routes = without_routes.remove("routes");
    let own = Spanned::new(item.span(), DeValue::Table(without_routes));
    let own = check(&own, errors, de_err::<Spanned<ListenerFile>>);
    let DeValue::Table(mut kept) = own.into_inner() else {
        return item.clone();
    };
    if let Some(routes) = routes {
        match routes.get_ref() {
            DeValue::Array(items) => {
                let checked = items
                    .iter()
                    .map(|route| check(route, errors, de_err::<Spanned<RouteFile>>))
                    .collect();
                let key = table
                    .keys()
                    .find(|k| k.get_ref() == "routes")
                    .cloned()
                    .unwrap_or_else(|| Spanned::new(0..0, "routes".into()));
                kept.insert(key, Spanned::new(routes.span(), DeValue::Array(checked)));
            }
            _ => {
                check(&routes, errors, de_err::<Vec<IgnoredAny>>);
            }
        }
    }
    Spanned::new(item.span(), DeValue::Table(kept))
}

/// The error of deserializing the value as `T`, if any.
fn de_err<T: DeserializeOwned>(d: ValueDeserializer<'_>) -> Option<toml::de::Error> {
    T::deserialize(d).err()
}

/// A serde error as a config error, at its span (or `fallback` when it has none).
fn serde_error(src: &Source<'_>, e: &toml::de::Error, fallback: &Range<usize>) -> ConfigError {
    let span = e.span().unwrap_or_else(|| fallback.clone());
    src.error(
        &span,
        &src.path_at(span.start),
        with_suggestion(e.message().trim()),
    )
}

/// serde's "unknown field `adress`, expected one of `name`, `address`, …" with a "did
/// you mean `address`?" when one expected key is a small edit away.
fn with_suggestion(message: &str) -> String {
    // serde names Rust types; a user reads numbers.
    let plain = message
        .replace("expected usize", "expected a whole number")
        .replace("expected u32", "expected a whole number")
        .replace("expected u64", "expected a whole number")
        .replace("expected f64", "expected a number")
        .replace("expected i64", "expected a whole number")
        .replace(
            "expected a sequence",
            "expected an array, e.g. [\"…\", \"…\"]",
        );
    // "expected struct RateLimitFile": a table of keys, not a Rust type.
    let plain = match plain.split_once("expected struct ") {
        Some((before, _)) => format!("{before}expected a table, e.g. {{ key = value, … }}"),
        None => plain,
    };
    let message = plain.as_str();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, candidate)) => format!("{message}; did you mean `{candidate}`?"),
        None => message.to_owned(),
    }
}

/// Levenshtein distance (keys are short: the quadratic table is fine).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// One validation run: walks the file model, records every error and warning, and builds
/// the runtime value (which is only handed out when no error was recorded).
struct Validator<'s> {
    /// The text being validated, for turning spans and key paths into error lines.
    src: &'s Source<'s>,
    /// Errors found so far, in the order found (sorted by position at the end).
    errors: Vec<ConfigError>,
    /// Valid but risky settings, formatted like errors.
    warnings: Vec<String>,
    /// The config file's folder: relative TLS file paths are resolved against it.
    base_dir: Option<PathBuf>,
    /// How far to look (see [`Depth`]).
    depth: Depth,
}

impl Validator<'_> {
    /// A warning about a value, at the value.
    fn warn(&mut self, span: &Range<usize>, key: &KeyPath, message: impl Into<String>) {
        let w = self.src.error(span, key, message);
        self.warnings.push(w.to_string());
    }

    /// An error about a value, at the value.
    fn err(&mut self, span: &Range<usize>, key: &KeyPath, message: impl Into<String>) {
        let e = self.src.error(span, key, message);
        self.errors.push(e);
    }

    /// An error about a key as a whole, at the key (or its table header).
    fn key_err(&mut self, fallback: &Range<usize>, key: &KeyPath, message: impl Into<String>) {
        let span = self.src.key_span(key, fallback);
        self.err(&span, key, message);
    }

    /// Refuses a key of [`NOT_IMPLEMENTED`] (`name` is its entry there).
    fn not_implemented(&mut self, name: &str, key: &KeyPath, fallback: &Range<usize>) {
        if NOT_IMPLEMENTED.contains(&name) {
            let span = self.src.key_span(key, fallback);
            let e = self
                .src
                .error(&span, key, format!("{name} is not implemented yet"))
                .with_message_naming_key();
            self.errors.push(e);
        }
    }

    /// A duration string (`"250ms"`, `"2s"`); an error at the value when it does not parse.
    fn duration(&mut self, value: &Spanned<String>, key: &KeyPath) -> Option<Duration> {
        match parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
            Err(message) => {
                self.err(&value.span(), key, message);
                None
            }
        }
    }

    /// An optional duration that must be > 0 when given; `default` when absent (or wrong).
    fn positive_duration(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &KeyPath,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match self.duration(value, key) {
            Some(Duration::ZERO) => {
                self.err(&value.span(), key, "must be greater than 0s");
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// An optional share that must be greater than 0 and at most 1 when given; `default`
    /// when absent (or wrong). `what` says what it is a share of, for the message.
    fn ratio(
        &mut self,
        value: Option<&Spanned<f64>>,
        key: &KeyPath,
        default: f64,
        what: &str,
    ) -> f64 {
        match value {
            Some(v) if !(*v.get_ref() > 0.0 && *v.get_ref() <= 1.0) => {
                self.err(
                    &v.span(),
                    key,
                    format!("must be greater than 0 and at most 1 ({what})"),
                );
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        }
    }

    /// An optional number that must be at least 1 when given; `default` when absent (or
    /// wrong).
    fn at_least_one<T: Copy + PartialOrd + From<u8>>(
        &mut self,
        value: Option<&Spanned<T>>,
        key: &KeyPath,
        default: T,
    ) -> T {
        match value {
            Some(v) if *v.get_ref() < T::from(1) => {
                self.err(&v.span(), key, "must be at least 1");
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        }
    }

    /// The whole file: each section, then the checks across sections (unique names, routes'
    /// clusters, unique listener addresses).
    fn config(&mut self, file: &FileConfig, source: Option<PathBuf>) -> Config {
        let server = self.server(file);
        let admin = self.admin(file);
        let log = self.log(file);
        let clusters: Vec<Cluster> = file
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| self.cluster(c, &KeyPath::root("clusters").index(i)))
            .collect();
        self.unique_names(
            file.clusters.iter().map(|c| &c.get_ref().name),
            "clusters",
            "cluster",
        );
        let cluster_index: HashMap<&str, usize> = file
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.get_ref().name.get_ref().as_str(), i))
            .collect();
        if file.listeners.is_empty() && self.depth != Depth::Client {
            self.err(
                &(0..0),
                &KeyPath::root("listeners"),
                "at least one [[listeners]] is required",
            );
        }
        let listeners: Vec<Listener> = file
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| self.listener(l, &KeyPath::root("listeners").index(i), &cluster_index))
            .collect();
        self.unique_names(
            file.listeners.iter().map(|l| &l.get_ref().name),
            "listeners",
            "listener",
        );
        self.unique_addresses(file);
        self.warnings_about(file, &server, &listeners);
        Config {
            source,
            server,
            admin,
            log,
            listeners,
            clusters,
            warnings: Vec::new(),
        }
    }

    /// Each `name` of a `[[table]]` once; a repeat is an error at the repeat.
    fn unique_names<'f>(
        &mut self,
        names: impl Iterator<Item = &'f Spanned<String>>,
        table: &str,
        what: &str,
    ) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            if let Some(first) = seen.insert(name.get_ref(), i) {
                seen.insert(name.get_ref(), first);
                self.err(
                    &name.span(),
                    &KeyPath::root(table).index(i).key("name"),
                    format!(
                        "duplicate {what} name `{}` (also {table}[{first}])",
                        name.get_ref()
                    ),
                );
            }
        }
    }

    /// An `IP:PORT` to bind (listeners, admin); an error at the value when it does not parse.
    fn socket_addr(&mut self, value: &Spanned<String>, key: &KeyPath) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    &value.span(),
                    key,
                    format!(
                        "invalid address {:?}: expected IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }
}
