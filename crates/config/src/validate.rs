//! Step 2: the file model ([`crate::file`]) becomes the runtime [`Config`], or every
//! error found on the way.
//!
//! Checks are made in one pass that records errors and carries on, so one run of
//! `rpcgate check` lists everything wrong with a file. The runtime value is only handed
//! out when no error was recorded.
//!
//! Keys that a later release builds are parsed and then refused here with
//! `<key> is not implemented yet`; the list is [`NOT_IMPLEMENTED`].

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
use crate::file::{
    ClusterFile, ClusterTlsFile, EndpointFile, FileConfig, HeaderMapFile, ListenerFile, MatchFile,
    RouteFile, Spanned,
};
use crate::locate::{KeyPath, Source};
use crate::runtime::{
    AccessLogTarget, Admin, ClientAuth, Cluster, ClusterTls, Config, Endpoint, HashKey, LbPolicy,
    Listener, ListenerTls, Log, LogFormat, PassiveHealth, PemFile, Route, RouteMatch, Server,
    UpstreamProtocol,
};

/// Keys that parse but that this release does not act on yet; using one is an error
/// (`<key> is not implemented yet`) rather than a setting that silently does nothing.
///
/// The release that builds one of them deletes its line here, maps the key into
/// [`crate::runtime`] in this module, and removes the "not implemented" test for it.
/// Keys with a "do nothing" value (`max_connection_age = "0s"`, `grpc_web = false`, …)
/// are accepted with that value; validation only consults this list otherwise.
pub const NOT_IMPLEMENTED: &[&str] = &[
    "admin",
    "listeners.max_connection_age",
    "listeners.grpc_web",
    "listeners.cors_allowed_origins",
    "listeners.compression",
    "listeners.allow",
    "listeners.deny",
    "listeners.rate_limit",
    "routes.retry",
    "routes.rate_limit",
    "clusters.slow_start",
    "clusters.max_requests",
    "clusters.active_health",
    "clusters.circuit_breaker",
    "clusters.discovery",
];

/// Parses and validates `text`; `name` is the file name used in errors.
pub(crate) fn parse_text(
    text: &str,
    name: &str,
    source_path: Option<PathBuf>,
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
    let file = match FileConfig::deserialize(toml::de::Deserializer::from(root.clone())) {
        Ok(file) => file,
        Err(first) => {
            return Err(ConfigErrors::new(shape_errors(
                &src,
                root.get_ref(),
                &first,
            )));
        }
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
    };
    let mut config = v.config(&file, source_path);
    if v.errors.is_empty() {
        config.warnings = v.warnings;
        Ok(config)
    } else {
        v.errors.sort_by_key(|e| (e.line(), e.col()));
        Err(ConfigErrors::new(v.errors))
    }
}

/// Serde stops at the first error; to report them all, each section and each element of
/// `[[listeners]]` / `[[clusters]]` is deserialized again on its own.
fn shape_errors(src: &Source<'_>, root: &DeTable<'_>, first: &toml::de::Error) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let check = |value: &Spanned<DeValue<'_>>,
                 errors: &mut Vec<ConfigError>,
                 f: fn(ValueDeserializer<'_>) -> Option<toml::de::Error>| {
        if let Some(e) = f(ValueDeserializer::from(value.clone())) {
            errors.push(serde_error(src, &e, &value.span()));
        }
    };
    for (key, value) in root.iter() {
        match key.get_ref().as_ref() {
            "server" => check(value, &mut errors, de_err::<Spanned<crate::file::ServerFile>>),
            "admin" => check(value, &mut errors, de_err::<Spanned<crate::file::AdminFile>>),
            "log" => check(value, &mut errors, de_err::<Spanned<crate::file::LogFile>>),
            "listeners" => match value.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        listener_shape_errors(item, &mut errors, &check);
                    }
                }
                _ => check(value, &mut errors, de_err::<Vec<IgnoredAny>>),
            },
            "clusters" => match value.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        check(item, &mut errors, de_err::<Spanned<ClusterFile>>);
                    }
                }
                _ => check(value, &mut errors, de_err::<Vec<IgnoredAny>>),
            },
            other => errors.push(src.error(
                &src.key_span(&KeyPath::root(other), &key.span()),
                &KeyPath::root(other),
                format!(
                    "unknown key `{other}`, expected one of `server`, `admin`, `log`, `listeners`, `clusters`"
                ),
            )),
        }
    }
    if errors.is_empty() {
        errors.push(serde_error(src, first, &(0..0)));
    }
    errors.sort_by_key(|e| (e.line(), e.col()));
    errors
}

type ShapeCheck<'c> = dyn Fn(
        &Spanned<DeValue<'_>>,
        &mut Vec<ConfigError>,
        fn(ValueDeserializer<'_>) -> Option<toml::de::Error>,
    ) + 'c;

/// A listener's own keys and each of its routes are checked apart, so that mistakes in
/// two routes are both reported.
fn listener_shape_errors(
    item: &Spanned<DeValue<'_>>,
    errors: &mut Vec<ConfigError>,
    check: &ShapeCheck<'_>,
) {
    let DeValue::Table(table) = item.get_ref() else {
        check(item, errors, de_err::<Spanned<ListenerFile>>);
        return;
    };
    let mut without_routes = table.clone();
    let routes = without_routes.remove("routes");
    let own = Spanned::new(item.span(), DeValue::Table(without_routes));
    check(&own, errors, de_err::<Spanned<ListenerFile>>);
    match routes.as_ref().map(|r| (r, r.get_ref())) {
        Some((_, DeValue::Array(routes))) => {
            for route in routes.iter() {
                check(route, errors, de_err::<Spanned<RouteFile>>);
            }
        }
        Some((routes, _)) => check(routes, errors, de_err::<Vec<IgnoredAny>>),
        None => {}
    }
}

fn de_err<T: DeserializeOwned>(d: ValueDeserializer<'_>) -> Option<toml::de::Error> {
    T::deserialize(d).err()
}

fn serde_error(src: &Source<'_>, e: &toml::de::Error, fallback: &Range<usize>) -> ConfigError {
    let span = e.span().unwrap_or_else(|| fallback.clone());
    src.error(&span, &src.path_at(span.start), e.message().trim())
}

/// The default of a listener setting, with its reason in [`crate::runtime`].
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
const DEFAULT_MAX_HEADER_BYTES: u32 = 16 * 1024;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Validator<'s> {
    src: &'s Source<'s>,
    errors: Vec<ConfigError>,
    /// Valid but risky settings, formatted like errors.
    warnings: Vec<String>,
    /// The config file's folder: relative TLS file paths are resolved against it.
    base_dir: Option<PathBuf>,
}

/// What a PEM file must contain.
#[derive(Debug, Clone, Copy)]
enum PemKind {
    /// One or more certificates (a chain or a CA bundle).
    Certificates,
    /// One private key.
    PrivateKey,
}

impl Validator<'_> {
    /// A warning about a value, at the value.
    fn warn(&mut self, span: &Range<usize>, key: &KeyPath, message: impl Into<String>) {
        let w = self.src.error(span, key, message);
        self.warnings.push(w.to_string());
    }

    /// Reads and checks a PEM file named at `value` (relative to the config's folder).
    fn pem_file(
        &mut self,
        value: &Spanned<String>,
        key: &KeyPath,
        kind: PemKind,
    ) -> Option<PemFile> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let named = PathBuf::from(value.get_ref());
        let path = match &self.base_dir {
            Some(dir) if named.is_relative() => dir.join(&named),
            _ => named,
        };
        // Only regular files: reading a FIFO named here would hang `check` and reloads.
        let regular = std::fs::metadata(&path).map(|m| m.is_file());
        if let Ok(false) = regular {
            let message = format!("{} is not a regular file", path.display());
            self.err(&value.span(), key, message);
            return None;
        }
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) => {
                self.err(
                    &value.span(),
                    key,
                    format!("cannot read {}: {e}", path.display()),
                );
                return None;
            }
        };
        let problem = match kind {
            PemKind::Certificates => {
                let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
                match certs {
                    Ok(certs) if certs.is_empty() => Some("no CERTIFICATE block found".to_owned()),
                    Ok(_) => None,
                    Err(e) => Some(format!("not a valid PEM certificate file: {e}")),
                }
            }
            PemKind::PrivateKey => match PrivateKeyDer::from_pem_slice(&pem) {
                Ok(_) => None,
                Err(e) => Some(format!(
                    "no usable private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM): {e}"
                )),
            },
        };
        if let Some(problem) = problem {
            self.err(&value.span(), key, format!("{}: {problem}", path.display()));
            return None;
        }
        Some(PemFile { path, pem })
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

    fn duration(&mut self, value: &Spanned<String>, key: &KeyPath) -> Option<Duration> {
        match parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
            Err(message) => {
                self.err(&value.span(), key, message);
                None
            }
        }
    }

    /// An optional duration that must be > 0 when given.
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

    fn config(&mut self, file: &FileConfig, source: Option<PathBuf>) -> Config {
        let server = self.server(file);
        let admin = file.admin.as_ref().and_then(|admin| {
            let key = KeyPath::root("admin");
            self.not_implemented("admin", &key, &admin.span());
            let address = &admin.get_ref().address;
            self.socket_addr(address, &key.key("address"))
                .map(|address| Admin { address })
        });
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
        if file.listeners.is_empty() {
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
        let mut bound: HashMap<SocketAddr, &str> = HashMap::new();
        for (i, l) in file.listeners.iter().enumerate() {
            let l = l.get_ref();
            // An address that does not parse is already an error.
            let Ok(address) = l.address.get_ref().parse::<SocketAddr>() else {
                continue;
            };
            if let Some(first) = bound.insert(address, l.name.get_ref()) {
                bound.insert(address, first);
                self.err(
                    &l.address.span(),
                    &KeyPath::root("listeners").index(i).key("address"),
                    format!("address {address} is already used by listener `{first}`"),
                );
            }
        }
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

    fn server(&mut self, file: &FileConfig) -> Server {
        let key = KeyPath::root("server");
        let server = file.server.as_ref().map(Spanned::get_ref);
        let workers = match server.and_then(|s| s.workers.as_ref()) {
            Some(w) if *w.get_ref() > 0 => *w.get_ref(),
            // 0 or absent: one worker per CPU, as NGINX's `worker_processes auto`.
            _ => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        };
        let drain_timeout = server
            .and_then(|s| s.drain_timeout.as_ref())
            .and_then(|d| self.duration(d, &key.key("drain_timeout")))
            .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
        Server {
            workers,
            drain_timeout,
        }
    }

    fn log(&mut self, file: &FileConfig) -> Log {
        let key = KeyPath::root("log");
        let log = file.log.as_ref().map(Spanned::get_ref);
        let mut level = "info".to_owned();
        if let Some(l) = log.and_then(|l| l.level.as_ref()) {
            let lower = l.get_ref().to_ascii_lowercase();
            if ["error", "warn", "info", "debug", "trace"].contains(&lower.as_str()) {
                level = lower;
            } else {
                self.err(
                    &l.span(),
                    &key.key("level"),
                    format!(
                        "unknown level {:?}, expected one of error, warn, info, debug, trace",
                        l.get_ref()
                    ),
                );
            }
        }
        let access_log = match log.and_then(|l| l.access_log.as_ref()) {
            None => AccessLogTarget::Stdout,
            Some(a) => match a.get_ref().as_str() {
                "stdout" => AccessLogTarget::Stdout,
                "stderr" => AccessLogTarget::Stderr,
                "off" => AccessLogTarget::Off,
                "" => {
                    self.err(
                        &a.span(),
                        &key.key("access_log"),
                        "must be stdout, stderr, off or a file path",
                    );
                    AccessLogTarget::Stdout
                }
                path => AccessLogTarget::File(PathBuf::from(path)),
            },
        };
        let format = match log.and_then(|l| l.format.as_ref()) {
            None => LogFormat::Json,
            Some(f) => match f.get_ref().as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                other => {
                    self.err(
                        &f.span(),
                        &key.key("format"),
                        format!("unknown format {other:?}, expected json or text"),
                    );
                    LogFormat::Json
                }
            },
        };
        Log {
            level,
            access_log,
            format,
        }
    }

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

    fn listener(
        &mut self,
        spanned: &Spanned<ListenerFile>,
        key: &KeyPath,
        clusters: &HashMap<&str, usize>,
    ) -> Listener {
        let l = spanned.get_ref();
        let name = l.name.get_ref().clone();
        if name.is_empty() {
            self.err(&l.name.span(), &key.key("name"), "must not be empty");
        }
        let address = self
            .socket_addr(&l.address, &key.key("address"))
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let max_connections = self.at_least_one(
            l.max_connections.as_ref(),
            &key.key("max_connections"),
            DEFAULT_MAX_CONNECTIONS,
        );
        let max_concurrent_streams = self.at_least_one(
            l.max_concurrent_streams.as_ref(),
            &key.key("max_concurrent_streams"),
            DEFAULT_MAX_CONCURRENT_STREAMS,
        );
        let max_header_bytes = self.at_least_one(
            l.max_header_bytes.as_ref(),
            &key.key("max_header_bytes"),
            DEFAULT_MAX_HEADER_BYTES,
        );
        let idle_timeout = self.positive_duration(
            l.idle_timeout.as_ref(),
            &key.key("idle_timeout"),
            DEFAULT_IDLE_TIMEOUT,
        );

        // Keys of a later release, accepted only with their "off" value.
        if let Some(age) = &l.max_connection_age {
            let k = key.key("max_connection_age");
            if self.duration(age, &k).is_some_and(|d| !d.is_zero()) {
                self.not_implemented("listeners.max_connection_age", &k, &age.span());
            }
        }
        if let Some(v) = l.grpc_web.as_ref().filter(|v| *v.get_ref()) {
            self.not_implemented("listeners.grpc_web", &key.key("grpc_web"), &v.span());
        }
        if let Some(v) = l
            .cors_allowed_origins
            .as_ref()
            .filter(|v| !v.get_ref().is_empty())
        {
            let k = key.key("cors_allowed_origins");
            self.not_implemented("listeners.cors_allowed_origins", &k, &v.span());
        }
        if let Some(v) = l.compression.as_ref().filter(|v| *v.get_ref()) {
            self.not_implemented("listeners.compression", &key.key("compression"), &v.span());
        }
        if let Some(v) = &l.allow {
            self.not_implemented("listeners.allow", &key.key("allow"), &v.span());
        }
        if let Some(v) = &l.deny {
            self.not_implemented("listeners.deny", &key.key("deny"), &v.span());
        }
        if let Some(v) = &l.rate_limit {
            self.not_implemented("listeners.rate_limit", &key.key("rate_limit"), &v.span());
        }
        let tls = l.tls.as_ref().and_then(|tls| {
            let k = key.key("tls");
            let t = tls.get_ref();
            let mut client_auth = if t.client_ca.is_some() {
                ClientAuth::Required
            } else {
                ClientAuth::None
            };
            if let Some(auth) = &t.client_auth {
                if t.client_ca.is_none() {
                    self.key_err(
                        &auth.span(),
                        &k.key("client_auth"),
                        "client_auth needs client_ca (the CA that client certificates must chain to)",
                    );
                } else {
                    match auth.get_ref().as_str() {
                        "required" => client_auth = ClientAuth::Required,
                        "optional" => client_auth = ClientAuth::Optional,
                        other => self.err(
                            &auth.span(),
                            &k.key("client_auth"),
                            format!("unknown value {other:?}, expected required or optional"),
                        ),
                    }
                }
            }
            let handshake_timeout = self.positive_duration(
                t.handshake_timeout.as_ref(),
                &k.key("handshake_timeout"),
                DEFAULT_HANDSHAKE_TIMEOUT,
            );
            let cert = self.pem_file(&t.cert, &k.key("cert"), PemKind::Certificates);
            let private_key = self.pem_file(&t.key, &k.key("key"), PemKind::PrivateKey);
            let client_ca = match &t.client_ca {
                Some(ca) => Some(self.pem_file(ca, &k.key("client_ca"), PemKind::Certificates)?),
                None => None,
            };
            Some(ListenerTls {
                cert: cert?,
                key: private_key?,
                client_ca,
                client_auth,
                handshake_timeout,
            })
        });

        let routes = l
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| self.route(r, &key.key("routes").index(i), &name, i, clusters))
            .collect();
        Listener {
            name,
            address,
            max_connections,
            max_concurrent_streams,
            max_header_bytes,
            idle_timeout,
            routes,
            tls,
        }
    }

    fn route(
        &mut self,
        spanned: &Spanned<RouteFile>,
        key: &KeyPath,
        listener: &str,
        index: usize,
        clusters: &HashMap<&str, usize>,
    ) -> Route {
        let r = spanned.get_ref();
        let name = match &r.name {
            Some(n) if n.get_ref().is_empty() => {
                self.err(&n.span(), &key.key("name"), "must not be empty");
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => format!("{listener}/{index}"),
        };
        let matcher = match &r.matcher {
            Some(m) => self.route_match(m.get_ref(), &key.key("match")),
            None => RouteMatch::default(),
        };
        let cluster = match clusters.get(r.cluster.get_ref().as_str()) {
            Some(&i) => i,
            None => {
                let mut known: Vec<&str> = clusters.keys().copied().collect();
                known.sort_unstable();
                let known = if known.is_empty() {
                    "no [[clusters]] are defined".to_owned()
                } else {
                    format!("defined clusters: {}", known.join(", "))
                };
                self.err(
                    &r.cluster.span(),
                    &key.key("cluster"),
                    format!("unknown cluster `{}` ({known})", r.cluster.get_ref()),
                );
                0
            }
        };
        let timeout = r
            .timeout
            .as_ref()
            .map(|t| self.positive_duration(Some(t), &key.key("timeout"), Duration::ZERO));
        if let Some(v) = &r.retry {
            self.not_implemented("routes.retry", &key.key("retry"), &v.span());
        }
        if let Some(v) = &r.rate_limit {
            self.not_implemented("routes.rate_limit", &key.key("rate_limit"), &v.span());
        }
        let request_headers = r
            .request_headers
            .as_ref()
            .map(|h| self.headers(h.get_ref(), &key.key("request_headers")))
            .unwrap_or_default();
        let response_headers = r
            .response_headers
            .as_ref()
            .map(|h| self.headers(h.get_ref(), &key.key("response_headers")))
            .unwrap_or_default();
        Route {
            name,
            matcher,
            cluster,
            timeout,
            request_headers,
            response_headers,
        }
    }

    fn route_match(&mut self, m: &MatchFile, key: &KeyPath) -> RouteMatch {
        let mut check =
            |v: &Option<Spanned<String>>, field: &str, ok: fn(&str) -> bool, what: &str| {
                let v = v.as_ref()?;
                if ok(v.get_ref()) {
                    Some(v.get_ref().clone())
                } else {
                    self.err(
                        &v.span(),
                        &key.key(field),
                        format!("{:?}: {what}", v.get_ref()),
                    );
                    None
                }
            };
        let service = check(
            &m.service,
            "service",
            |s| !s.is_empty() && !s.contains('/'),
            "expected a fully-qualified gRPC service name without '/', e.g. \"pkg.Service\"",
        );
        let method = check(
            &m.method,
            "method",
            |s| {
                s.split_once('/')
                    .is_some_and(|(svc, m)| !svc.is_empty() && !m.is_empty() && !m.contains('/'))
            },
            "expected \"pkg.Service/Method\" (without a leading '/')",
        );
        let path = check(
            &m.path,
            "path",
            |s| s.starts_with('/'),
            "must start with '/'",
        );
        let path_prefix = check(
            &m.path_prefix,
            "path_prefix",
            |s| s.starts_with('/'),
            "must start with '/'",
        );
        let authority = check(
            &m.authority,
            "authority",
            |s| !s.is_empty(),
            "must not be empty",
        );
        let headers = m
            .headers
            .as_ref()
            .map(|h| self.headers(h.get_ref(), &key.key("headers")))
            .unwrap_or_default();
        RouteMatch {
            service,
            method,
            path,
            path_prefix,
            authority,
            headers,
            grpc: m.grpc.as_ref().map(|g| *g.get_ref()),
        }
    }

    /// Header names are lower-cased (HTTP/2 requires it) and must be valid and distinct;
    /// values must be valid header values.
    fn headers(&mut self, map: &HeaderMapFile, key: &KeyPath) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(map.len());
        for (name, value) in map {
            let k = key.key(name.get_ref());
            let lower = name.get_ref().to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                self.err(
                    &name.span(),
                    &k,
                    format!("invalid HTTP header name {:?}", name.get_ref()),
                );
                continue;
            }
            if http::HeaderValue::from_str(value.get_ref()).is_err() {
                self.err(
                    &value.span(),
                    &k,
                    "invalid HTTP header value (control characters are not allowed)",
                );
                continue;
            }
            if out.iter().any(|(n, _)| *n == lower) {
                self.err(
                    &name.span(),
                    &k,
                    format!("header {lower:?} is given twice (names are case-insensitive)"),
                );
                continue;
            }
            out.push((lower, value.get_ref().clone()));
        }
        // TOML tables do not keep file order; sorting by the lower-case name at least
        // makes the order independent of how names were capitalised.
        out.sort();
        out
    }

    fn cluster(&mut self, spanned: &Spanned<ClusterFile>, key: &KeyPath) -> Cluster {
        let c = spanned.get_ref();
        let span = spanned.span();
        if c.name.get_ref().is_empty() {
            self.err(&c.name.span(), &key.key("name"), "must not be empty");
        }

        let endpoints = self.endpoints(c, key, &span);

        let lb_name = c.lb.as_ref().map(|l| l.get_ref().as_str());
        let hash_key = c.hash_key.as_ref().and_then(|h| {
            let k = key.key("hash_key");
            if lb_name != Some("ring_hash") {
                self.key_err(
                    &h.span(),
                    &k,
                    "hash_key is only used with lb = \"ring_hash\"",
                );
                return None;
            }
            self.hash_key(h, &k)
        });
        let lb = match &c.lb {
            None => LbPolicy::RoundRobin,
            Some(l) => match l.get_ref().as_str() {
                "round_robin" => LbPolicy::RoundRobin,
                "least_request" => LbPolicy::LeastRequest,
                "p2c_ewma" => LbPolicy::P2cEwma,
                "random" => LbPolicy::Random,
                "ring_hash" => {
                    if c.hash_key.is_none() {
                        self.err(
                            &l.span(),
                            &key.key("lb"),
                            "lb = \"ring_hash\" needs hash_key (\"header:NAME\" or \"client_ip\")",
                        );
                    }
                    LbPolicy::RingHash(hash_key.unwrap_or(HashKey::ClientIp))
                }
                other => {
                    self.err(
                        &l.span(),
                        &key.key("lb"),
                        format!(
                            "unknown lb {other:?}, expected one of round_robin, least_request, p2c_ewma, random, ring_hash"
                        ),
                    );
                    LbPolicy::RoundRobin
                }
            },
        };

        let protocol = match &c.protocol {
            None => UpstreamProtocol::H2c,
            Some(p) => match p.get_ref().as_str() {
                "h2c" => UpstreamProtocol::H2c,
                "http1" => UpstreamProtocol::Http1,
                "h2" => UpstreamProtocol::H2,
                other => {
                    self.err(
                        &p.span(),
                        &key.key("protocol"),
                        format!("unknown protocol {other:?}, expected h2c, h2 or http1"),
                    );
                    UpstreamProtocol::H2c
                }
            },
        };
        let tls = match &c.tls {
            Some(tls) => {
                let k = key.key("tls");
                if protocol != UpstreamProtocol::H2 {
                    self.key_err(
                        &tls.span(),
                        &k,
                        "[clusters.tls] needs protocol = \"h2\" (TLS towards the backends)",
                    );
                }
                Some(self.cluster_tls(tls.get_ref(), &k, &tls.span()))
            }
            // `protocol = "h2"` alone: verify backends against the system's roots.
            None if protocol == UpstreamProtocol::H2 => Some(ClusterTls::default()),
            None => None,
        };

        let authority = c
            .authority
            .as_ref()
            .map(|a| a.get_ref().clone())
            .filter(|a| !a.is_empty());
        let connect_timeout = self.positive_duration(
            c.connect_timeout.as_ref(),
            &key.key("connect_timeout"),
            DEFAULT_CONNECT_TIMEOUT,
        );
        if let Some(s) = &c.slow_start {
            let k = key.key("slow_start");
            if self.duration(s, &k).is_some_and(|d| !d.is_zero()) {
                self.not_implemented("clusters.slow_start", &k, &s.span());
            }
        }
        if let Some(m) = c.max_requests.as_ref().filter(|m| *m.get_ref() != 0) {
            self.not_implemented("clusters.max_requests", &key.key("max_requests"), &m.span());
        }
        let mut passive_health = PassiveHealth::default();
        if let Some(p) = &c.passive_health {
            let k = key.key("passive_health");
            let p = p.get_ref();
            if let Some(m) = &p.max_fails {
                passive_health.max_fails = *m.get_ref();
            }
            passive_health.fail_timeout = self.positive_duration(
                p.fail_timeout.as_ref(),
                &k.key("fail_timeout"),
                passive_health.fail_timeout,
            );
        }
        if let Some(v) = &c.active_health {
            self.not_implemented(
                "clusters.active_health",
                &key.key("active_health"),
                &v.span(),
            );
        }
        if let Some(v) = &c.circuit_breaker {
            let k = key.key("circuit_breaker");
            self.not_implemented("clusters.circuit_breaker", &k, &v.span());
        }
        if let Some(d) = &c.discovery {
            let k = key.key("discovery");
            self.not_implemented("clusters.discovery", &k, &d.span());
            let dd = d.get_ref();
            let sources = [dd.dns.is_some(), dd.etcd.is_some(), dd.file.is_some()];
            if sources.iter().filter(|s| **s).count() != 1 {
                self.key_err(&d.span(), &k, "needs exactly one of dns, etcd or file");
            }
        }

        Cluster {
            name: c.name.get_ref().clone(),
            endpoints,
            lb,
            protocol,
            authority,
            connect_timeout,
            passive_health,
            tls,
        }
    }

    fn cluster_tls(&mut self, t: &ClusterTlsFile, k: &KeyPath, span: &Range<usize>) -> ClusterTls {
        let ca =
            t.ca.as_ref()
                .and_then(|ca| self.pem_file(ca, &k.key("ca"), PemKind::Certificates));
        let identity = match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => {
                let cert = self.pem_file(cert, &k.key("cert"), PemKind::Certificates);
                let key = self.pem_file(key, &k.key("key"), PemKind::PrivateKey);
                cert.zip(key)
            }
            (Some(_), None) => {
                self.key_err(
                    span,
                    &k.key("cert"),
                    "cert needs key (mutual TLS towards the backends)",
                );
                None
            }
            (None, Some(_)) => {
                self.key_err(
                    span,
                    &k.key("key"),
                    "key needs cert (mutual TLS towards the backends)",
                );
                None
            }
            (None, None) => None,
        };
        let server_name = t.server_name.as_ref().and_then(|name| {
            let value = name.get_ref();
            if rustls_pki_types::ServerName::try_from(value.as_str()).is_err() {
                self.err(
                    &name.span(),
                    &k.key("server_name"),
                    format!("invalid server name {value:?}"),
                );
                return None;
            }
            Some(value.clone())
        });
        let insecure_skip_verify = t.insecure_skip_verify.as_ref().is_some_and(|v| {
            if *v.get_ref() {
                self.warn(
                    &v.span(),
                    &k.key("insecure_skip_verify"),
                    "backend certificates are NOT verified: anyone on the path can impersonate the backends; use it for tests only",
                );
            }
            *v.get_ref()
        });
        ClusterTls {
            ca,
            identity,
            server_name,
            insecure_skip_verify,
        }
    }

    fn endpoints(&mut self, c: &ClusterFile, key: &KeyPath, span: &Range<usize>) -> Vec<Endpoint> {
        let k = key.key("endpoints");
        let Some(list) = &c.endpoints else {
            if c.discovery.is_none() {
                self.key_err(span, key, "a cluster needs `endpoints` (or `discovery`)");
            }
            return Vec::new();
        };
        if list.get_ref().is_empty() && c.discovery.is_none() {
            self.err(&list.span(), &k, "must not be empty");
        }
        let mut out: Vec<Endpoint> = Vec::with_capacity(list.get_ref().len());
        for (i, e) in list.get_ref().iter().enumerate() {
            let ek = k.index(i);
            let (address, address_span, weight) = match e.get_ref() {
                EndpointFile::Address(a) => (a.clone(), e.span(), 1),
                EndpointFile::Table(t) => {
                    let weight = match &t.weight {
                        None => 1,
                        Some(w) => match u32::try_from(*w.get_ref()) {
                            Ok(w) if w >= 1 => w,
                            _ => {
                                self.err(
                                    &w.span(),
                                    &ek.key("weight"),
                                    format!("weight must be between 1 and {}", u32::MAX),
                                );
                                1
                            }
                        },
                    };
                    (t.address.get_ref().clone(), t.address.span(), weight)
                }
            };
            let address_key = match e.get_ref() {
                EndpointFile::Address(_) => ek.clone(),
                EndpointFile::Table(_) => ek.key("address"),
            };
            if let Err(why) = check_host_port(&address) {
                self.err(
                    &address_span,
                    &address_key,
                    format!("invalid endpoint address {address:?}: {why}"),
                );
                continue;
            }
            if out.iter().any(|o| o.address == address) {
                self.err(
                    &address_span,
                    &address_key,
                    format!("duplicate endpoint {address:?} (raise its weight instead)"),
                );
                continue;
            }
            out.push(Endpoint { address, weight });
        }
        out
    }

    fn hash_key(&mut self, h: &Spanned<String>, key: &KeyPath) -> Option<HashKey> {
        let text = h.get_ref();
        if text == "client_ip" {
            return Some(HashKey::ClientIp);
        }
        if let Some(name) = text.strip_prefix("header:") {
            let lower = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_ok() {
                return Some(HashKey::Header(lower));
            }
            self.err(
                &h.span(),
                key,
                format!("invalid HTTP header name {name:?} in hash_key"),
            );
            return None;
        }
        self.err(
            &h.span(),
            key,
            format!("unknown hash_key {text:?}, expected \"header:NAME\" or \"client_ip\""),
        );
        None
    }
}

/// `host:port` with a port in 1..=65535 and a plausible host: a DNS name, an IPv4
/// address or a bracketed IPv6 address. Resolution happens when connecting.
fn check_host_port(address: &str) -> Result<(), &'static str> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or("expected host:port, e.g. \"127.0.0.1:50051\"")?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err("the port must be a number from 1 to 65535"),
        Ok(_) => {}
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "invalid IPv6 address between the brackets");
    }
    if host.is_empty() {
        return Err("the host is missing");
    }
    if host.contains(':') {
        return Err("an IPv6 address must be in brackets, e.g. \"[::1]:50051\"");
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err("the host may only contain letters, digits, '-', '.' and '_'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_host_port;

    #[test]
    fn host_port_forms() {
        for ok in [
            "127.0.0.1:50051",
            "localhost:1",
            "backend.internal:65535",
            "[::1]:50051",
            "my_host-1.example:80",
        ] {
            assert_eq!(check_host_port(ok), Ok(()), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:x",
            ":80",
            "::1:80",
            "[::zz]:80",
            "a b:80",
            "host:",
            "",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }
}
