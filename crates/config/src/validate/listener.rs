//! `[[listeners]]`: each listener's own keys (its `[listeners.tls]` is in [`super::tls`],
//! its routes in [`super::route`]), and the check that no two listeners bind one address.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::Validator;
use crate::defaults;
use crate::file::{FileConfig, ListenerFile, Spanned};
use crate::locate::KeyPath;
use crate::runtime::Listener;

impl Validator<'_> {
    /// One `[[listeners]]` element; `clusters` maps cluster names to their index.
    pub(super) fn listener(
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
            defaults::MAX_CONNECTIONS,
        );
        let max_concurrent_streams = self.at_least_one(
            l.max_concurrent_streams.as_ref(),
            &key.key("max_concurrent_streams"),
            defaults::MAX_CONCURRENT_STREAMS,
        );
        let max_header_bytes = self.at_least_one(
            l.max_header_bytes.as_ref(),
            &key.key("max_header_bytes"),
            defaults::MAX_HEADER_BYTES,
        );
        let max_send_buffer_bytes = self.at_least_one(
            l.max_send_buffer_bytes.as_ref(),
            &key.key("max_send_buffer_bytes"),
            defaults::MAX_SEND_BUFFER_BYTES,
        );
        let idle_timeout = self.positive_duration(
            l.idle_timeout.as_ref(),
            &key.key("idle_timeout"),
            defaults::IDLE_TIMEOUT,
        );

        // "0s" (or absent): connections are never aged out.
        let max_connection_age = l
            .max_connection_age
            .as_ref()
            .and_then(|age| self.duration(age, &key.key("max_connection_age")))
            .filter(|age| !age.is_zero());

        // Keys of a later release, accepted only with their "off" value.
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
        let compression = l.compression.as_ref().is_some_and(|v| *v.get_ref());
        let access = self.access_list(&l.allow, &l.deny, key);
        let rate_limit = self.rate_limit(l.rate_limit.as_ref(), key);
        let send_timeout = self.positive_duration(
            l.send_timeout.as_ref(),
            &key.key("send_timeout"),
            defaults::SEND_TIMEOUT,
        );
        let tls = l
            .tls
            .as_ref()
            .and_then(|tls| self.listener_tls(tls.get_ref(), &key.key("tls")));

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
            max_send_buffer_bytes,
            idle_timeout,
            max_connection_age,
            routes,
            tls,
            access,
            rate_limit,
            compression,
            send_timeout,
        }
    }

    /// No two listeners bind the same address; a repeat is an error at the repeat.
    pub(super) fn unique_addresses(&mut self, file: &FileConfig) {
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
        // The admin API binds too: the same address as a listener would fail at start.
        // A wildcard address (0.0.0.0, [::]) takes its port on every address.
        let overlaps = |a: &SocketAddr, b: &SocketAddr| {
            a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        };
        if let Some(admin) = &file.admin
            && let Ok(address) = admin.get_ref().address.get_ref().parse::<SocketAddr>()
            && address.port() != 0
            && let Some((taken, listener)) = bound.iter().find(|(l, _)| overlaps(l, &address))
        {
            self.err(
                &admin.get_ref().address.span(),
                &KeyPath::root("admin").key("address"),
                format!(
                    "port {} is already taken by listener `{listener}` ({taken}); give the admin API another port",
                    address.port()
                ),
            );
        }
    }
}
