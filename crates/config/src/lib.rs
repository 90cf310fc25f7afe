//! rpcgate's configuration: `rpcgate.toml` in, a validated [`Config`] or every error out.
//!
//! Loading happens in two steps (contract §2 lists the keys):
//!
//! 1. [`file`](mod@file): the serde model of the file. Every struct is
//!    `deny_unknown_fields`, and values carry spans, so every error can name
//!    `file:line:col` and the key. Syntax and type errors stop here, but all of them are
//!    reported: each section, each `[[listeners]]`/`[[clusters]]` element and each route
//!    is checked on its own.
//! 2. [`validate`]: checks across the file (names unique, addresses parse, a route's
//!    cluster exists, `ring_hash` has a `hash_key`, …), applies the defaults of
//!    [`defaults`] and produces the typed runtime [`Config`] of [`runtime`], which is all
//!    the rest of rpcgate reads. Keys that a later release builds parse but are refused
//!    with `<key> is not implemented yet` ([`validate::NOT_IMPLEMENTED`]).
//!
//! Errors print one per line as `<file>:<line>:<col>: <key>: <message>` (the key is left
//! out when the message already names it, as in `clusters.discovery is not implemented yet`):
//!
//! ```
//! let config = rpcgate_config::parse(rpcgate_config::DEFAULT_CONFIG, "default.toml").unwrap();
//! assert_eq!(config.listeners[0].name, "edge");
//!
//! let errors = rpcgate_config::parse("[[listeners]]\nname = \"a\"\naddress = \"nope\"\n", "x.toml")
//!     .unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "x.toml:3:11: listeners[0].address: invalid address \"nope\": expected IP:PORT, \
//!      e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""
//! );
//! ```
//!
//! Adding a key: `docs/adding-a-key.md` lists every file to touch, in order.
//!
//! No other crate reads configuration files: the proxy and the binary call [`load`] or
//! [`parse`].

use std::path::Path;

pub mod defaults;
pub mod duration;
pub mod endpoints_file;
mod error;
pub mod file;
mod locate;
pub mod runtime;
pub mod validate;

pub use duration::parse_duration;
pub use endpoints_file::parse_endpoints_file;
pub use error::{ConfigError, ConfigErrors};
pub use runtime::*;

/// The embedded default configuration (`crates/config/default.toml`): one listener `edge`
/// on 127.0.0.1:8080 routing the pcbook Auth and Laptop services and, for everything else,
/// the Greeter, to backends on 127.0.0.1:50051..50053. `rpcgate demo` and the docs start
/// from it, so a test keeps it valid.
pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

/// Parses and validates a configuration held in memory; `file_name` is only used in
/// error messages. [`Config::source`] is `None`.
///
/// # Errors
/// Every problem found, each with `file_name:line:col` and the key.
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
    validate::parse_text(text, file_name, None, validate::Depth::Load)
}

/// [`parse`] for a thick client (`rpcgate-client`): the same `[[clusters]]` (and, when
/// present, `[[listeners]]` with their routes' `retry`) as rpcgate's own file, with the
/// same checks and messages, but `[[listeners]]` may be left out. So one file can serve
/// the proxies and the clients, or a client can carry only its clusters.
///
/// # Errors
/// As [`parse`].
pub fn parse_client(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
    validate::parse_text(text, file_name, None, validate::Depth::Client)
}

/// Reads, parses and validates the file at `path`; [`Config::source`] is `Some(path)`,
/// for reloads.
///
/// # Errors
/// Every problem found; a file that cannot be read (or is not UTF-8) gives one error
/// naming the path, without line and column.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    read_and_validate(path, validate::Depth::Load)
}

/// [`load`], and what `rpcgate check` looks at besides, like `nginx -t`: endpoint host
/// names resolve, the access-log file can be opened for appending (it is created, as
/// NGINX does), and each certificate (`cert`) is valid today. These depend on the
/// machine and the day, so `run` and reloads do not refuse a file for them.
///
/// # Errors
/// As [`load`], plus those checks' errors at the keys they concern.
pub fn check(path: &Path) -> Result<Config, ConfigErrors> {
    read_and_validate(path, validate::Depth::Check)
}

/// An error about the TLS `key` of the `index`-th `[[listeners]]` (`section =
/// "listeners"`) or `[[clusters]]` (`"clusters"`) of the file at `path`, at the place the
/// key is written: for problems only found when the TLS configuration is built (a key that
/// does not belong to its certificate), which `rpcgate check` reports like the others.
pub fn tls_key_error(path: &Path, section: &str, index: usize, message: &str) -> ConfigError {
    let name = path.display().to_string();
    let key = locate::KeyPath::root(section)
        .index(index)
        .key("tls")
        .key("key");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let root = toml::de::DeTable::parse(&text).ok();
    let src = locate::Source {
        name: &name,
        text: &text,
        root: root.as_ref().map(|r| r.get_ref()),
    };
    src.error(&src.key_span(&key, &(0..0)), &key, message)
}

fn read_and_validate(path: &Path, depth: validate::Depth) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigErrors::new(vec![ConfigError::whole_file(
            &name,
            format!("cannot read the configuration: {e}"),
        )])
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        ConfigErrors::new(vec![ConfigError::whole_file(
            &name,
            format!("the configuration is not UTF-8: {e}"),
        )])
    })?;
    validate::parse_text(&text, &name, Some(path.to_path_buf()), depth)
}
