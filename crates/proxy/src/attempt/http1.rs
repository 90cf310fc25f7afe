//! One attempt towards an HTTP/1.1 backend (`protocol = "http1"`), with hyper-util's
//! pooled client.
//!
//! The request body is read ahead up to the 64 KiB replay buffer before the first attempt
//! ([`RequestBody::for_http1`]), so a POST whose connect fails is sent again to another
//! endpoint just like an HTTP/2 call; a longer body streams through and is not replayed.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rpcgate_balance::Endpoint;

use super::{Answer, Target};
use crate::body::RequestBodyBox;
use crate::headers;
use crate::request_body::RequestBody;
use crate::verdict::{Cause, ConnectFailure};

/// Sends the call to `endpoint` and waits for the response head.
pub(super) async fn attempt(
    target: &Target<'_>,
    parts: &http::request::Parts,
    body: &mut RequestBody,
    endpoint: &Arc<Endpoint>,
) -> Result<Answer, Cause> {
    let cluster = target.cluster;
    let client = target
        .upstreams
        .http1_client(cluster.pool, cluster.connect_timeout);
    let request_body: RequestBodyBox = if body.is_empty() {
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        body.for_http1().await.map_err(Cause::ClientCancelled)?
    };
    let request = headers::http1_request(
        parts,
        target.authority.as_ref(),
        endpoint.address(),
        request_body,
    )
    .map_err(Cause::BadRequest)?;
    match client.request(request).await {
        Ok(response) => Ok(Answer::Http1(response)),
        Err(error) if error.is_connect() => Err(Cause::Connect {
            endpoint: endpoint.clone(),
            error: ConnectFailure::Http1(error),
        }),
        Err(error) => Err(Cause::Http1Lost {
            endpoint: endpoint.clone(),
            error,
        }),
    }
}
