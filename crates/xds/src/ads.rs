//! One ADS stream's state (state of the world, xDS protocol §"ACK/NACK and resource
//! type instance version"): per type URL, the names the client subscribed to, what was
//! last sent (version and nonce) and what the client last accepted.
//!
//! - A request whose `response_nonce` is not the last one sent for its type is stale: it
//!   is ignored, subscription and all (the client will send another).
//! - A request with `error_detail` is a NACK: logged and counted, the client keeps the
//!   version it had, and nothing is resent until the resources change (or the names do).
//! - Otherwise it is the first request or an ACK: the subscription is updated, and a
//!   response goes out only if what the client would get differs from what it was sent.
//! - When the resources change, every subscribed type whose version moved is pushed.
//!
//! Responses carry every subscribed resource that exists (LDS and CDS must; EDS may), so a
//! name that appears later — a cluster added by a reload — arrives with the next push.
//! An empty name list for LDS or CDS is a wildcard subscription: every resource.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::resources::{Resources, type_url};

/// What one type of one stream is at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TypeState {
    /// Subscribed names; empty with `wildcard` for LDS/CDS wildcard subscriptions.
    names: BTreeSet<String>,
    wildcard: bool,
    /// The version and nonce of the last response sent.
    sent_version: Option<String>,
    sent_nonce: Option<String>,
    /// The names that response was built for.
    sent_names: BTreeSet<String>,
    wildcard_sent: bool,
    /// The version the client last accepted.
    acked_version: Option<String>,
}

/// A NACK, for logging and counting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The resource type refused.
    pub type_url: String,
    /// The version the client refused.
    pub version: String,
    /// Its reason.
    pub message: String,
}

/// What a request led to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The response to send, if any.
    pub response: Option<DiscoveryResponse>,
    /// The request was a NACK.
    pub nack: Option<Nack>,
    /// The request was stale (an old nonce) and was ignored.
    pub stale: bool,
}

/// One stream's state machine.
#[derive(Debug, Default)]
pub struct AdsStream {
    types: BTreeMap<String, TypeState>,
    nonces: u64,
}

/// Whether an empty name list means "every resource" for this type.
fn wildcard_type(type_url: &str) -> bool {
    type_url == type_url::LISTENER || type_url == type_url::CLUSTER
}

impl AdsStream {
    /// A new stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one request against the current resources.
    pub fn on_request(&mut self, request: &DiscoveryRequest, resources: &Resources) -> Outcome {
        let type_url = request.type_url.clone();
        let state = self.types.entry(type_url.clone()).or_default();
        if !request.response_nonce.is_empty()
            && state.sent_nonce.as_deref() != Some(request.response_nonce.as_str())
        {
            return Outcome {
                stale: true,
                ..Outcome::default()
            };
        }
        let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
        let wildcard = names.is_empty() && wildcard_type(&type_url);
        let names_changed = names != state.names || wildcard != state.wildcard;
        state.names = names;
        state.wildcard = wildcard;
        let mut outcome = Outcome::default();
        if let Some(error) = &request.error_detail {
            outcome.nack = Some(Nack {
                type_url: type_url.clone(),
                version: state.sent_version.clone().unwrap_or_default(),
                message: error.message.clone(),
            });
        } else if !request.response_nonce.is_empty() {
            state.acked_version = Some(request.version_info.clone());
        }
        let current = resources.version(&type_url);
        let up_to_date = state.sent_version.as_deref() == Some(current.as_str())
            && state.sent_names == state.names
            && state.wildcard_sent == state.wildcard;
        if (outcome.nack.is_some() && !names_changed) || (up_to_date && state.sent_nonce.is_some())
        {
            return outcome;
        }
        outcome.response = Some(self.respond(&type_url, resources));
        outcome
    }

    /// The pushes the new `resources` call for: one per subscribed type whose version
    /// moved since its last response.
    pub fn on_change(&mut self, resources: &Resources) -> Vec<DiscoveryResponse> {
        let due: Vec<String> = self
            .types
            .iter()
            .filter(|(type_url, state)| {
                state.sent_nonce.is_some()
                    && state.sent_version.as_deref() != Some(resources.version(type_url).as_str())
            })
            .map(|(type_url, _)| type_url.clone())
            .collect();
        due.iter()
            .map(|type_url| self.respond(type_url, resources))
            .collect()
    }

    /// The version the client last accepted for `type_url`.
    pub fn acked(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.acked_version.as_deref()
    }

    /// A response with every subscribed resource of `type_url` that exists.
    fn respond(&mut self, type_url: &str, resources: &Resources) -> DiscoveryResponse {
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let version = resources.version(type_url);
        let state = self.types.entry(type_url.to_owned()).or_default();
        let chosen = resources
            .of(type_url)
            .map(|all| {
                all.iter()
                    .filter(|(name, _)| state.wildcard || state.names.contains(*name))
                    .map(|(_, any)| any.clone())
                    .collect()
            })
            .unwrap_or_default();
        state.sent_version = Some(version.clone());
        state.sent_nonce = Some(nonce.clone());
        state.sent_names = state.names.clone();
        state.wildcard_sent = state.wildcard;
        DiscoveryResponse {
            version_info: version,
            resources: chosen,
            type_url: type_url.to_owned(),
            nonce,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests fail loudly

    use std::collections::BTreeMap;

    use envoy_types::pb::google::protobuf::Any;
    use envoy_types::pb::google::rpc::Status;

    use super::*;

    fn resources(clusters: &[(&str, u8)]) -> Resources {
        let mut by_type = BTreeMap::new();
        by_type.insert(
            type_url::CLUSTER,
            clusters
                .iter()
                .map(|(name, v)| {
                    (
                        (*name).to_owned(),
                        Any {
                            type_url: type_url::CLUSTER.into(),
                            value: vec![*v],
                        },
                    )
                })
                .collect(),
        );
        Resources { by_type }
    }

    fn request(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url::CLUSTER.into(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn first_request_is_answered_and_its_ack_is_not() {
        let r = resources(&[("a", 1), ("b", 2)]);
        let mut s = AdsStream::new();
        let first = s.on_request(&request(&["a"], "", ""), &r).response.unwrap();
        assert_eq!(first.resources.len(), 1);
        let ack = s.on_request(&request(&["a"], &first.version_info, &first.nonce), &r);
        assert!(ack.response.is_none() && ack.nack.is_none() && !ack.stale);
        assert_eq!(
            s.acked(type_url::CLUSTER),
            Some(first.version_info.as_str())
        );
    }

    #[test]
    fn a_nack_keeps_the_version_and_resends_nothing_until_a_change() {
        let r = resources(&[("a", 1)]);
        let mut s = AdsStream::new();
        let first = s.on_request(&request(&["a"], "", ""), &r).response.unwrap();
        s.on_request(&request(&["a"], &first.version_info, &first.nonce), &r);
        let changed = resources(&[("a", 9)]);
        let push = s.on_change(&changed);
        assert_eq!(push.len(), 1);
        let mut nack = request(&["a"], &first.version_info, &push[0].nonce);
        nack.error_detail = Some(Status {
            code: 3,
            message: "bad cluster".into(),
            ..Default::default()
        });
        let out = s.on_request(&nack, &changed);
        assert!(out.response.is_none());
        assert_eq!(out.nack.unwrap().message, "bad cluster");
        assert_eq!(
            s.acked(type_url::CLUSTER),
            Some(first.version_info.as_str())
        );
        // Nothing new: no push. A further change: pushed.
        assert!(s.on_change(&changed).is_empty());
        assert_eq!(s.on_change(&resources(&[("a", 10)])).len(), 1);
    }

    #[test]
    fn a_stale_nonce_is_ignored() {
        let r = resources(&[("a", 1)]);
        let mut s = AdsStream::new();
        let first = s.on_request(&request(&["a"], "", ""), &r).response.unwrap();
        let push = s.on_change(&resources(&[("a", 2)]));
        assert_eq!(push.len(), 1);
        // The ACK of the first response arrives after the push went out: stale.
        let out = s.on_request(&request(&["a", "b"], &first.version_info, &first.nonce), &r);
        assert!(out.stale && out.response.is_none());
    }

    #[test]
    fn a_name_that_appears_later_is_pushed_and_new_names_are_answered() {
        let mut s = AdsStream::new();
        let r = resources(&[("a", 1)]);
        let first = s
            .on_request(&request(&["a", "late"], "", ""), &r)
            .response
            .unwrap();
        assert_eq!(first.resources.len(), 1, "late does not exist yet");
        s.on_request(
            &request(&["a", "late"], &first.version_info, &first.nonce),
            &r,
        );
        let later = resources(&[("a", 1), ("late", 5)]);
        let push = s.on_change(&later);
        assert_eq!(push[0].resources.len(), 2);
        // A new subscription on the same version is answered at once.
        let ack = s.on_request(
            &request(&["a", "late"], &push[0].version_info, &push[0].nonce),
            &later,
        );
        assert!(ack.response.is_none());
        let more = s.on_request(
            &request(&["a"], &push[0].version_info, &push[0].nonce),
            &later,
        );
        assert_eq!(more.response.unwrap().resources.len(), 1);
    }

    #[test]
    fn an_empty_cds_subscription_is_a_wildcard() {
        let r = resources(&[("a", 1), ("b", 2)]);
        let mut s = AdsStream::new();
        let all = s.on_request(&request(&[], "", ""), &r).response.unwrap();
        assert_eq!(all.resources.len(), 2);
    }
}
