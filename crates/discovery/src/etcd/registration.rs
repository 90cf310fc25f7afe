//! Keeping a backend registered in etcd: the key `PREFIX/NAME/ADDR` holds the backend in
//! etcd's naming format ([`super::naming`]) under a lease of `ttl`, kept alive every
//! third of it. Stopping ([`Registration::deregister`]) revokes the lease, which deletes
//! the key at once; a process that dies without stopping loses its key when the lease
//! ends, so discovery never keeps a dead backend for longer than the TTL.
//!
//! If etcd goes away, the registration reconnects (with the same backoff as discovery)
//! and registers again under a fresh lease; if the lease was lost meanwhile (etcd
//! restarted after the TTL, or a long partition), the key comes back as soon as etcd
//! answers. `rpcgate register` and `rpcgate-client`'s helper both use this.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::api::etcdserverpb::lease_client::LeaseClient;
use super::api::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, kv_client::KvClient,
};
use super::naming::NamingValue;
use super::{connect, status_text};
use crate::reconnect::Reconnect;

/// The shortest lease etcd grants reliably (its minimum TTL is about 1.5 × its election
/// timeout, 1.5 s by default).
pub const MIN_TTL: Duration = Duration::from_secs(2);

/// What to register.
#[derive(Debug, Clone)]
pub struct RegistrationSpec {
    /// etcd's client addresses (`HOST:PORT`), tried in turn.
    pub servers: Vec<String>,
    /// The key; see [`RegistrationSpec::key_for`].
    pub key: String,
    /// The backend's `HOST:PORT`.
    pub address: String,
    /// Its relative share (≥ 1).
    pub weight: u32,
    /// The lease's time to live; at least [`MIN_TTL`].
    pub ttl: Duration,
}

impl RegistrationSpec {
    /// `PREFIX` + `SERVICE/ADDRESS`, the layout rpcgate's etcd discovery reads with
    /// `prefix = PREFIX + SERVICE + "/"` (PREFIX defaults to `/rpcgate/services/`).
    pub fn key_for(prefix: &str, service: &str, address: &str) -> String {
        let slash = if prefix.ends_with('/') { "" } else { "/" };
        format!("{prefix}{slash}{service}/{address}")
    }
}

/// Where a registration is, for logs and for whoever waits on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not (or no longer) registered; the text says why, while it retries.
    Retrying(String),
    /// The key is in etcd under this lease.
    Registered {
        /// The lease's id.
        lease: i64,
    },
}

/// A live registration; [`Registration::deregister`] ends it cleanly. Dropping it stops
/// the keep-alives, and (on a tokio runtime) revokes the lease in the background.
#[derive(Debug)]
pub struct Registration {
    task: Option<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
    state: watch::Receiver<RegistrationState>,
    /// The last lease granted and the channel it was granted on, for the revoke: kept
    /// when the connection breaks, since the lease (and the key) may well outlive it.
    current: Arc<Mutex<Option<(Channel, i64)>>>,
}

impl Registration {
    /// Starts registering on the current tokio runtime.
    pub fn start(spec: RegistrationSpec) -> Self {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (state_tx, state) =
            watch::channel(RegistrationState::Retrying("connecting to etcd".to_owned()));
        let current = Arc::new(Mutex::new(None));
        let task = tokio::spawn(keep(spec, stop_rx, state_tx, current.clone()));
        Self {
            task: Some(task),
            stop: Some(stop_tx),
            state,
            current,
        }
    }

    /// The registration's state now, and its changes.
    pub fn state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Waits until the key is in etcd (for a caller that must not serve unregistered).
    pub async fn registered(&self) -> i64 {
        let mut state = self.state.clone();
        loop {
            if let RegistrationState::Registered { lease } = &*state.borrow_and_update() {
                return *lease;
            }
            if state.changed().await.is_err() {
                // The task ended; a deregistered registration is never registered again.
                return std::future::pending().await;
            }
        }
    }

    /// Stops the keep-alives and revokes the lease, which deletes the key. An error says
    /// why not: etcd could not be told (the key then goes when its lease ends), or
    /// nothing was ever registered.
    pub async fn deregister(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let lease = self.current.lock().map(|mut c| c.take()).unwrap_or(None);
        match lease {
            Some((channel, lease)) => revoke(channel, lease)
                .await
                .map_err(|e| format!("{e}; the key goes when its lease ends (within the TTL)")),
            None => Err("nothing was registered: etcd never answered".to_owned()),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let lease = self.current.lock().map(|mut c| c.take()).unwrap_or(None);
        if let (Some((channel, lease)), Ok(runtime)) =
            (lease, tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                if let Err(e) = revoke(channel, lease).await {
                    tracing::warn!(
                        lease,
                        "could not revoke the etcd lease (the key goes when it ends): {e}"
                    );
                }
            });
        }
    }
}

/// Revokes `lease`, deleting every key attached to it.
/// How long a revoke may take: a stopping process must not hang on a silent etcd.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(3);

async fn revoke(channel: Channel, lease: i64) -> Result<(), String> {
    let revoked = tokio::time::timeout(
        REVOKE_TIMEOUT,
        LeaseClient::new(channel).lease_revoke(LeaseRevokeRequest { id: lease }),
    )
    .await
    .map_err(|_| format!("etcd did not answer the lease revoke within {REVOKE_TIMEOUT:?}"))?;
    match revoked {
        Ok(_) => Ok(()),
        // Already gone (expired, or etcd lost it): so is the key.
        Err(s) if s.message().contains("requested lease not found") => Ok(()),
        Err(s) => Err(format!("lease revoke failed: {}", status_text(&s))),
    }
}

/// Registers and keeps the lease alive until told to stop.
async fn keep(
    spec: RegistrationSpec,
    mut stop: oneshot::Receiver<()>,
    state: watch::Sender<RegistrationState>,
    current: Arc<Mutex<Option<(Channel, i64)>>>,
) {
    let ttl = spec.ttl.max(MIN_TTL);
    let mut reconnect = Reconnect::new();
    loop {
        let why = tokio::select! {
            why = session(&spec, ttl, &state, &current, &mut reconnect) => why,
            _ = &mut stop => return,
        };
        let changed = !matches!(&*state.borrow(), RegistrationState::Retrying(w) if *w == why);
        if changed {
            tracing::warn!(
                key = spec.key.as_str(),
                "etcd registration interrupted, retrying: {why}"
            );
            state.send_replace(RegistrationState::Retrying(why));
        }
        tokio::select! {
            () = tokio::time::sleep(reconnect.next_wait()) => {}
            _ = &mut stop => return,
        }
    }
}

/// Grants a lease, puts the key under it and keeps it alive; returns why that ended.
async fn session(
    spec: &RegistrationSpec,
    ttl: Duration,
    state: &watch::Sender<RegistrationState>,
    current: &Mutex<Option<(Channel, i64)>>,
    reconnect: &mut Reconnect,
) -> String {
    let channel = match connect(&spec.servers).await {
        Ok(channel) => channel,
        Err(e) => return e,
    };
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let mut leases = LeaseClient::new(channel.clone());
    let lease = match leases
        .lease_grant(LeaseGrantRequest {
            ttl: ttl_secs,
            id: 0,
        })
        .await
    {
        Ok(granted) => granted.into_inner().id,
        Err(s) => return format!("lease grant failed: {}", status_text(&s)),
    };
    if let Ok(mut c) = current.lock() {
        *c = Some((channel.clone(), lease));
    }
    let put = PutRequest {
        key: spec.key.clone().into_bytes(),
        value: NamingValue::new(&spec.address, spec.weight)
            .to_json()
            .into_bytes(),
        lease,
        ..PutRequest::default()
    };
    if let Err(s) = KvClient::new(channel.clone()).put(put).await {
        return format!("put failed: {}", status_text(&s));
    }
    reconnect.answered();
    tracing::info!(
        key = spec.key.as_str(),
        lease,
        ttl_s = ttl_secs,
        "registered in etcd"
    );
    state.send_replace(RegistrationState::Registered { lease });
    let every = ttl / 3;
    let pings =
        futures_util::stream::unfold(tokio::time::interval(every), move |mut tick| async move {
            tick.tick().await;
            Some((LeaseKeepAliveRequest { id: lease }, tick))
        });
    let mut answers = match leases.lease_keep_alive(pings).await {
        Ok(answers) => answers.into_inner(),
        Err(s) => return format!("lease keep-alive failed: {}", status_text(&s)),
    };
    loop {
        match answers.next().await {
            Some(Ok(answer)) if answer.ttl <= 0 => {
                return format!("lease {lease} ended (etcd no longer knows it)");
            }
            Some(Ok(_)) => {}
            Some(Err(s)) => return format!("lease keep-alive broke: {}", status_text(&s)),
            None => return "etcd closed the lease keep-alive".to_owned(),
        }
    }
}
