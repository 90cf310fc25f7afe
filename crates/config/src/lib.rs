//! rpcgate's configuration, in two steps (see `docs/` and SPEC §2).
//!
//! 1. [`file`]: the serde model of `rpcgate.toml`, `deny_unknown_fields` everywhere, with
//!    spans so that every error can name `file:line:col` and the key.
//! 2. [`validate`]: checks across the file (a route's cluster exists, names are unique,
//!    addresses parse, keys that a later release builds are refused) and produces the typed
//!    runtime [`Config`] in [`runtime`] that the rest of rpcgate uses.
//!
//! No other crate reads configuration files: the proxy and the binary call [`load`] or
//! [`parse`].

pub mod runtime;

pub use runtime::*;
