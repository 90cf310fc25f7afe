//! What a reload swaps, and the swap itself: the generation (routes, clusters) and the
//! listener set, shared by the [`ProxyHandle`](crate::ProxyHandle) (SIGHUP), the admin
//! API (`POST /reload`) and the workers.
//!
//! A swap validates and builds everything first — the configuration (when read from the
//! file), new sockets, TLS acceptors, the new generation — and only then commits: the
//! generation is stored, the new listener set published to the workers (they start and
//! stop their accept loops), and replaced listeners retired. Any error before the commit
//! leaves the proxy exactly as it was. Swaps are serialised.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use rpcgate_config::{Config, ConfigErrors, Server};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::error::StartError;
use crate::listeners::{self, ListenerSet};
use crate::state::{Generation, Generations};
use crate::stats::Stats;

/// Why a reload did not happen (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The proxy was started from a configuration text, not a file.
    #[error("the configuration was not read from a file, so there is nothing to reload")]
    NoFile,
    /// The file is not a valid configuration.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The configuration is valid but could not be put in place (a new listener address
    /// cannot be bound, an access-log file cannot be opened, …).
    #[error("{0}")]
    Apply(StartError),
}

/// The swappable state of a running proxy.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) generations: Arc<Generations>,
    /// The listener set the workers accept on.
    pub(crate) listeners: watch::Sender<Arc<ListenerSet>>,
    pub(crate) stats: Arc<Stats>,
    /// Where active health probers run.
    runtime: Handle,
    /// The file the configuration is read from on reload.
    source: Option<PathBuf>,
    /// What a reload cannot change (the worker threads), to say so when a file does.
    server: Server,
    /// The admin API's settings at start, likewise.
    admin: Option<rpcgate_config::Admin>,
    /// Serialises swaps.
    swapping: Mutex<()>,
}

impl Core {
    /// Whether the admin address serves xDS (`[admin]` with `xds` on, as at start).
    pub(crate) fn serves_xds(&self) -> bool {
        self.admin.as_ref().is_some_and(|a| a.xds)
    }

    /// The state of a proxy that starts with `config`.
    pub(crate) fn new(
        config: &Config,
        generation: Generation,
        listeners: ListenerSet,
        stats: Arc<Stats>,
        runtime: Handle,
    ) -> Self {
        Self {
            generations: Arc::new(Generations::from_pointee(generation)),
            listeners: watch::Sender::new(Arc::new(listeners)),
            stats,
            runtime,
            source: config.source.clone(),
            server: config.server.clone(),
            admin: config.admin.clone(),
            swapping: Mutex::new(()),
        }
    }

    /// Re-reads the configuration file, validates it as `rpcgate check` does (names
    /// resolve, certificates valid today, …: a reload refuses a bad change before it is
    /// made), and swaps it in.
    pub(crate) fn reload(&self) -> Result<u64, ReloadError> {
        let Some(path) = &self.source else {
            self.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
            return Err(ReloadError::NoFile);
        };
        match rpcgate_config::check(path) {
            Ok(config) => {
                for warning in &config.warnings {
                    tracing::warn!("{warning}");
                }
                self.swap(&config).map_err(ReloadError::Apply)
            }
            Err(errors) => {
                self.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                Err(ReloadError::Invalid(errors))
            }
        }
    }

    /// Makes `config` the one new connections and calls follow; returns its generation.
    pub(crate) fn swap(&self, config: &Config) -> Result<u64, StartError> {
        let _one_at_a_time = self.swapping.lock().unwrap_or_else(PoisonError::into_inner);
        match self.prepare_and_commit(config) {
            Ok(number) => {
                self.stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
                Ok(number)
            }
            Err(error) => {
                self.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    fn prepare_and_commit(&self, config: &Config) -> Result<u64, StartError> {
        let current = self.generations.load_full();
        let old_set = self.listeners.borrow().clone();
        let new_set = listeners::bind_set(config, &old_set, &self.stats)?;
        let next = Generation::build(config, Some(&current), &self.runtime, &self.stats)?;
        let number = next.number;
        let changes = changes(&current, &next, &old_set, &new_set);
        // Commit: the generation first, so a connection on a new listener finds its routes.
        self.generations.store(Arc::new(next));
        self.listeners.send_replace(Arc::new(new_set.clone()));
        listeners::retire_replaced(&old_set, &new_set);
        if config.server.workers != self.server.workers {
            tracing::warn!(
                running = self.server.workers,
                file = config.server.workers,
                "server.workers changes at the next restart; the running workers stay"
            );
        }
        if config.admin != self.admin {
            tracing::warn!("[admin] changes at the next restart; the admin API stays as it is");
        }
        tracing::info!(
            generation = number,
            "new configuration generation in use: {changes}"
        );
        Ok(number)
    }

    /// Retires every listener: its socket closes (new clients are refused) and its
    /// connections close gracefully (shutdown).
    pub(crate) fn retire_all(&self) {
        for listener in self.listeners.borrow().iter() {
            listener.retire();
        }
    }
}

/// The names of the routes whose settings differ, for two lists of the same routes to
/// the same clusters (the cluster's index may move when clusters are added; its name was
/// compared already).
fn changed_settings<'a>(
    before: impl Iterator<Item = &'a rpcgate_config::Route>,
    after: impl Iterator<Item = &'a rpcgate_config::Route>,
) -> Vec<String> {
    before
        .zip(after)
        .filter(|(was, now)| {
            let mut was = (*was).clone();
            was.cluster = now.cluster;
            was != **now
        })
        .map(|(_, now)| now.name.clone())
        .collect()
}

/// What a swap changed, in a few words for the log: clusters added, removed or changed,
/// routes changed, listeners bound, re-bound or removed.
fn changes(
    old: &Generation,
    new: &Generation,
    old_set: &ListenerSet,
    new_set: &ListenerSet,
) -> String {
    let mut parts = Vec::new();
    let names = |g: &Generation| -> Vec<String> {
        g.clusters().iter().map(|c| c.name.to_string()).collect()
    };
    let (before, after) = (names(old), names(new));
    let added: Vec<_> = after
        .iter()
        .filter(|n| !before.contains(n))
        .cloned()
        .collect();
    let removed: Vec<_> = before
        .iter()
        .filter(|n| !after.contains(n))
        .cloned()
        .collect();
    let changed: Vec<_> = new
        .clusters()
        .iter()
        .filter(|c| old.cluster(&c.name).is_some_and(|o| !Arc::ptr_eq(o, c)))
        .map(|c| c.name.to_string())
        .collect();
    for (what, list) in [
        ("clusters added", added),
        ("clusters removed", removed),
        ("clusters changed", changed),
    ] {
        if !list.is_empty() {
            parts.push(format!("{what}: {}", list.join(", ")));
        }
    }
    let routes = |g: &Generation, listener: &str| -> Vec<(String, String)> {
        g.listener(listener).map_or_else(Vec::new, |l| {
            l.routes
                .iter()
                .map(|r| (r.name.to_string(), r.cluster.name.to_string()))
                .collect()
        })
    };
    let mut changed_routes = Vec::new();
    for listener in new.listeners() {
        let Some(before) = old.listener(&listener.name) else {
            continue;
        };
        if routes(old, &listener.name) != routes(new, &listener.name) {
            parts.push(format!("routes of listener {} changed", listener.name));
            continue;
        }
        // Same routes to the same clusters: say which of them changed a setting.
        changed_routes.extend(changed_settings(
            before.routes.iter().map(|r| &r.config),
            listener.routes.iter().map(|r| &r.config),
        ));
    }
    if !changed_routes.is_empty() {
        parts.push(format!("routes changed: {}", changed_routes.join(", ")));
    }
    for listener in new_set.iter() {
        if old_set.iter().any(|o| Arc::ptr_eq(o, listener)) {
            continue;
        }
        let verb = if old_set.iter().any(|o| o.name == listener.name) {
            "re-bound"
        } else {
            "bound"
        };
        parts.push(format!(
            "listener {} {verb} on {}",
            listener.name, listener.address
        ));
    }
    for listener in old_set.iter() {
        if !new_set.iter().any(|n| n.name == listener.name) {
            parts.push(format!("listener {} removed", listener.name));
        }
    }
    if parts.is_empty() {
        "nothing changed".to_owned()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(extra: &str) -> Vec<rpcgate_config::Route> {
        let text = format!(
            "[[listeners]]\nname = \"edge\"\naddress = \"127.0.0.1:0\"\n\
             [[listeners.routes]]\nname = \"a\"\ncluster = \"c\"\n{extra}\n\
             [[listeners.routes]]\nname = \"b\"\ncluster = \"c\"\n\
             [[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n"
        );
        let config = rpcgate_config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        config.listeners[0].routes.clone()
    }

    #[test]
    fn a_changed_limit_names_its_route() {
        let before = routes("rate_limit = { requests_per_second = 1 }");
        let after = routes("rate_limit = { requests_per_second = 2 }");
        assert_eq!(changed_settings(before.iter(), after.iter()), ["a"]);
        assert!(changed_settings(before.iter(), before.iter()).is_empty());
        let headers = routes("response_headers = { \"x-frame-options\" = \"DENY\" }");
        assert_eq!(changed_settings(before.iter(), headers.iter()), ["a"]);
    }
}
