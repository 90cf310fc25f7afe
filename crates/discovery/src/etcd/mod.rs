//! `discovery = { etcd = ["HOST:PORT", …], prefix = "/rpcgate/services/NAME/" }`: every key
//! under the prefix is an endpoint, in etcd's own naming format ([`naming`]), and
//! [`registration`] writes such keys with a lease.
//!
//! The source reads the prefix once (a range read, which also gives the store's revision),
//! then watches it from the next revision, so an endpoint joins or leaves the moment its
//! key is put or deleted — or its lease ends. After a disconnect or an etcd restart the
//! watch resumes from the last revision seen, so nothing that happened meanwhile is
//! missed; when etcd has compacted that history away (or the store is a new one, with an
//! older revision), the prefix is read afresh instead. While etcd cannot be reached, the
//! last good set stays (at start: none, and calls get UNAVAILABLE naming etcd); the source
//! retries with a backoff up to 2 s and logs each distinct error once (`reconnect`).
//!
//! The clients are generated from etcd's own protos (`api`, see `proto/README.md`) rather
//! than taken from the `etcd-client` crate, whose build script needs `protoc`.

pub mod api;
pub mod naming;
pub mod registration;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::etcdserverpb::watch_client::WatchClient;
use api::etcdserverpb::watch_request::RequestUnion;
use api::etcdserverpb::{RangeRequest, WatchCreateRequest, WatchRequest, kv_client::KvClient};
use api::mvccpb::{KeyValue, event::EventType};
use rpcgate_balance::EndpointSpec;
use tonic::transport::{Channel, Endpoint};

use crate::reconnect::Reconnect;
use crate::{Apply, Report};

/// How long a connect to one etcd address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on the etcd connection, so a silent etcd is noticed within this twice.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Connects to the first of `servers` that answers.
pub(crate) async fn connect(servers: &[String]) -> Result<Channel, String> {
    let mut errors = Vec::new();
    for server in servers {
        let endpoint = Endpoint::from_shared(format!("http://{server}"))
            .map_err(|e| format!("{server}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true);
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) => errors.push(format!("{server}: {}", error_chain(&e))),
        }
    }
    Err(format!("cannot reach etcd ({})", errors.join("; ")))
}

/// An error with its causes, which is where tonic puts "connection refused".
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A status as one line.
pub(crate) fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// The key just past every key that starts with `prefix` (etcd's `range_end` for a
/// prefix): the prefix with its last byte below 0xff incremented.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// What to follow.
#[derive(Debug, Clone)]
pub(crate) struct EtcdSource {
    pub(crate) servers: Vec<String>,
    pub(crate) prefix: String,
}

/// What the source knows: the endpoint of each key, and the revision it is current at.
#[derive(Debug, Default)]
struct Known {
    keys: BTreeMap<Vec<u8>, EndpointSpec>,
    /// `None` until a range read succeeded, and after a compaction: read afresh.
    revision: Option<i64>,
    /// The set last handed to the balancer.
    applied: Option<Vec<EndpointSpec>>,
}

impl Known {
    /// Records a put of `kv`; a value that is no endpoint is logged and leaves the key out.
    fn put(&mut self, cluster: &str, kv: &KeyValue) {
        match naming::parse(&kv.value) {
            Ok(spec) => {
                self.keys.insert(kv.key.clone(), spec);
            }
            Err(why) => {
                self.keys.remove(&kv.key);
                tracing::warn!(
                    cluster,
                    key = %String::from_utf8_lossy(&kv.key),
                    "etcd key ignored: {why}"
                );
            }
        }
    }

    /// Hands the set to the balancer if it changed.
    fn apply(&mut self, source: &EtcdSource, cluster: &str, apply: &Apply, report: &Report) {
        let mut set: Vec<EndpointSpec> = self.keys.values().cloned().collect();
        set.sort_by(|a, b| a.address.cmp(&b.address));
        let keys = set.len();
        set.dedup_by(|a, b| a.address == b.address);
        if self.applied.as_ref() != Some(&set) {
            if set.len() < keys {
                tracing::warn!(
                    cluster,
                    "{} etcd keys hold an address another key holds too: each address counts once, with the weight of one of them",
                    keys - set.len()
                );
            }
            if set.is_empty() {
                let why = format!(
                    "etcd ({}) has no endpoint under {}",
                    source.servers.join(","),
                    source.prefix
                );
                tracing::warn!(
                    cluster,
                    prefix = source.prefix.as_str(),
                    "{why}: the cluster is empty until a backend registers there (is the prefix right?)"
                );
                report.set(why);
            } else {
                report.clear();
            }
            tracing::info!(
                cluster,
                endpoints = set.len(),
                "etcd membership changed: the cluster follows it"
            );
            apply(set.clone());
            self.applied = Some(set);
        }
    }
}

/// Follows the prefix until the task is aborted.
pub(crate) async fn follow(source: EtcdSource, cluster: Arc<str>, apply: Apply, report: Report) {
    let mut known = Known::default();
    let mut reconnect = Reconnect::new();
    loop {
        let mut progressed = false;
        let error = session(
            &source,
            &cluster,
            &apply,
            &report,
            &mut known,
            &mut progressed,
        )
        .await;
        if progressed {
            reconnect.answered();
        }
        if known.applied.as_ref().is_none_or(Vec::is_empty) {
            report.set(format!("etcd not reached: {error}"));
        }
        if reconnect.failed(&error) {
            match known.applied.as_ref().map(Vec::len) {
                Some(kept) => tracing::warn!(
                    cluster = &*cluster,
                    prefix = source.prefix.as_str(),
                    kept,
                    "etcd discovery interrupted, the last good set ({kept} endpoints) stays while it retries: {error}"
                ),
                None => tracing::warn!(
                    cluster = &*cluster,
                    prefix = source.prefix.as_str(),
                    "etcd discovery has no set yet, the cluster stays empty while it retries: {error}"
                ),
            }
        }
        tokio::time::sleep(reconnect.next_wait()).await;
    }
}

/// One connection's worth of following: read if needed, then watch. Returns why it ended;
/// `progressed` is set once etcd answered.
async fn session(
    source: &EtcdSource,
    cluster: &str,
    apply: &Apply,
    report: &Report,
    known: &mut Known,
    progressed: &mut bool,
) -> String {
    let channel = match connect(&source.servers).await {
        Ok(channel) => channel,
        Err(e) => return e,
    };
    let prefix = source.prefix.as_bytes();
    loop {
        let revision = match known.revision {
            Some(revision) => revision,
            None => match read(channel.clone(), cluster, prefix, known).await {
                Ok(revision) => {
                    *progressed = true;
                    known.apply(source, cluster, apply, report);
                    revision
                }
                Err(e) => return e,
            },
        };
        let watching = Watching {
            source,
            cluster,
            apply,
            report,
        };
        match watch(channel.clone(), &watching, revision, known, progressed).await {
            Ok(()) => continue, // history gone: read afresh on this connection
            Err(e) => return e,
        }
    }
}

/// Reads every key under the prefix; returns the store's revision.
async fn read(
    channel: Channel,
    cluster: &str,
    prefix: &[u8],
    known: &mut Known,
) -> Result<i64, String> {
    let answer = KvClient::new(channel)
        .range(RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..RangeRequest::default()
        })
        .await
        .map_err(|s| format!("range read failed: {}", status_text(&s)))?
        .into_inner();
    let revision = answer.header.map_or(0, |h| h.revision);
    known.keys.clear();
    for kv in &answer.kvs {
        known.put(cluster, kv);
    }
    known.revision = Some(revision);
    tracing::debug!(
        cluster,
        revision,
        keys = answer.kvs.len(),
        "etcd prefix read"
    );
    Ok(revision)
}

/// What a watch applies its changes with.
struct Watching<'a> {
    source: &'a EtcdSource,
    cluster: &'a str,
    apply: &'a Apply,
    report: &'a Report,
}

/// Watches from `revision + 1`, applying each change. `Ok` means etcd no longer has that
/// history (compacted, or a new store): the caller reads afresh. `Err` says why the
/// stream ended otherwise.
async fn watch(
    channel: Channel,
    watching: &Watching<'_>,
    revision: i64,
    known: &mut Known,
    progressed: &mut bool,
) -> Result<(), String> {
    let (cluster, prefix) = (watching.cluster, watching.source.prefix.as_bytes());
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            start_revision: revision + 1,
            ..WatchCreateRequest::default()
        })),
    };
    // The request side stays open: etcd ties the watch to the stream.
    let requests = futures_util::stream::iter([create]).chain(futures_util::stream::pending());
    let mut responses = WatchClient::new(channel)
        .watch(requests)
        .await
        .map_err(|s| format!("watch failed: {}", status_text(&s)))?
        .into_inner();
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err("etcd closed the watch".to_owned()),
            Err(s) => return Err(format!("watch broke: {}", status_text(&s))),
        };
        let store_revision = response.header.as_ref().map_or(0, |h| h.revision);
        if response.compact_revision != 0 {
            tracing::info!(
                cluster,
                revision,
                compacted = response.compact_revision,
                "etcd compacted the history since the last revision seen: reading the prefix afresh"
            );
            known.revision = None;
            return Ok(());
        }
        if response.canceled {
            return Err(format!(
                "etcd cancelled the watch: {}",
                response.cancel_reason
            ));
        }
        if response.created {
            *progressed = true;
            if store_revision < revision {
                tracing::info!(
                    cluster,
                    revision,
                    store_revision,
                    "etcd's store is older than the revision seen (a new store?): reading the prefix afresh"
                );
                known.revision = None;
                return Ok(());
            }
            tracing::info!(
                cluster,
                prefix = watching.source.prefix.as_str(),
                from = revision + 1,
                "watching the etcd prefix"
            );
            continue;
        }
        for event in &response.events {
            let Some(kv) = &event.kv else { continue };
            if event.r#type == EventType::Delete as i32 {
                known.keys.remove(&kv.key);
            } else {
                known.put(cluster, kv);
            }
            known.revision = Some(kv.mod_revision.max(known.revision.unwrap_or(0)));
        }
        if !response.fragment {
            known.apply(watching.source, cluster, watching.apply, watching.report);
        }
    }
}

use futures_util::StreamExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
