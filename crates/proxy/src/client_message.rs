//! What a client reads in the `grpc-message` (or plain-HTTP body) of an error the proxy
//! made: what happened and in which cluster, but no backend address and no internal
//! error chain — those are the operator's, and go to the log (`log.client_error_detail =
//! "reason"`, the default). With `"full"` the client reads the log's text, for
//! development.

use rpcgate_config::ClientErrorDetail;

use crate::upstream::ConnectError;
use crate::verdict::{Cause, ConnectFailure};

/// The message for a client about `cause`, in `cluster` when the call had one.
pub(crate) fn client_message(
    cause: &Cause,
    cluster: Option<&str>,
    detail: ClientErrorDetail,
) -> String {
    if detail == ClientErrorDetail::Full {
        return cause.to_string();
    }
    let of = |what: &str| match cluster {
        Some(cluster) => format!("{what} of cluster {cluster}"),
        None => what.to_owned(),
    };
    match cause {
        Cause::Connect {
            error: ConnectFailure::H2(error),
            ..
        } => connect_message(error, &of("a backend")),
        Cause::Connect { .. } => format!("could not connect to {}", of("a backend")),
        Cause::Refused { .. } => format!("{} refused the stream", of("a backend")),
        Cause::GoingAway { .. } => format!(
            "{} is going away (GOAWAY) and did not take the stream",
            of("a backend")
        ),
        Cause::NoBackendTookIt { cluster, last } => {
            let why = last.as_deref().map_or_else(String::new, |last| {
                format!(": {}", client_message(last, None, detail))
            });
            format!("no backend of cluster {cluster} could take the call{why}")
        }
        Cause::ResetBeforeHead(_) => format!("{} reset the stream", of("a backend")),
        Cause::ConnectionLost { .. } | Cause::Http1Lost { .. } => {
            format!("the connection to {} was lost", of("a backend"))
        }
        Cause::BrokenMidStream(_) => {
            format!("the response from {} broke off mid-call", of("a backend"))
        }
        Cause::Http1BodyFailed(_) => {
            format!("the response body from {} failed", of("a backend"))
        }
        Cause::UpstreamHttpError(status) => format!(
            "{} answered HTTP {status} without a gRPC status",
            of("a backend")
        ),
        Cause::DeadlineBeforeHead(timeout) => format!(
            "deadline exceeded after {timeout:?} waiting for {}",
            of("a backend")
        ),
        Cause::PerTryTimeout(timeout) => format!(
            "{} did not answer within per_try_timeout ({timeout:?})",
            of("a backend")
        ),
        Cause::DeadlineMidStream => format!(
            "deadline exceeded while {} was still answering",
            of("a backend")
        ),
        Cause::ClientCancelled(_) => "the client cancelled the call".to_owned(),
        Cause::BadRequest(_) => "bad request: it cannot be forwarded".to_owned(),
        // These name no address and no internal error already.
        Cause::Completed { .. }
        | Cause::NoRoute { .. }
        | Cause::NoEndpoint { .. }
        | Cause::ClientGone
        | Cause::SendTimeout
        | Cause::Panicked
        | Cause::ShuttingDown
        | Cause::NotAllowed { .. }
        | Cause::RateLimited { .. }
        | Cause::BadMessage(_)
        | Cause::CircuitOpen { .. }
        | Cause::AtMaxRequests { .. } => cause.to_string(),
    }
}

/// A failed connect by step, in fixed words: which step failed and what kind of failure
/// it was (a refused port, a certificate problem), never the error's own text, which can
/// name hosts, addresses and certificate names of the network behind the proxy.
fn connect_message(error: &ConnectError, backend: &str) -> String {
    match error {
        ConnectError::Timeout(_) => format!("connect to {backend} timed out"),
        ConnectError::Io(_, io) => format!("could not connect to {backend} ({})", io.kind()),
        ConnectError::Tls(_, tls) if tls.to_ascii_lowercase().contains("certificate") => {
            format!("TLS handshake with {backend} failed (a certificate was not accepted)")
        }
        ConnectError::Tls(..) => format!("TLS handshake with {backend} failed"),
        ConnectError::Handshake(..) => format!("HTTP/2 handshake with {backend} failed"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rpcgate_balance::{Endpoint, EndpointSpec, PassiveHealthPolicy};

    use super::*;

    #[test]
    fn connect_failures_say_the_step_and_kind_in_fixed_words() {
        let tls = ConnectError::Tls(
            "10.1.2.3:443".into(),
            "invalid peer certificate: certificate not valid for name \"pay.internal\"".into(),
        );
        let io = ConnectError::Io(
            "10.1.2.3:443".into(),
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(
            connect_message(&tls, "a backend of cluster pay"),
            "TLS handshake with a backend of cluster pay failed (a certificate was not accepted)"
        );
        assert_eq!(
            connect_message(&io, "a backend"),
            "could not connect to a backend (connection refused)"
        );
    }

    #[test]
    fn reasons_name_the_cluster_but_never_the_backend() {
        let endpoint = Arc::new(Endpoint::new(
            EndpointSpec::new("10.1.2.3:50051"),
            PassiveHealthPolicy::OFF,
        ));
        let causes = [
            Cause::Refused {
                endpoint: endpoint.clone(),
            },
            Cause::GoingAway {
                endpoint: endpoint.clone(),
            },
            Cause::NoBackendTookIt {
                cluster: "greeter".into(),
                last: Some(Box::new(Cause::Refused { endpoint })),
            },
            Cause::PerTryTimeout(Duration::from_millis(500)),
            Cause::ResetBeforeHead(h2::Reason::INTERNAL_ERROR),
        ];
        for cause in &causes {
            let reason = client_message(cause, Some("greeter"), ClientErrorDetail::Reason);
            assert!(reason.contains("greeter"), "{reason}");
            assert!(!reason.contains("10.1.2.3"), "{reason}");
        }
        let full = client_message(&causes[0], Some("greeter"), ClientErrorDetail::Full);
        assert!(full.contains("10.1.2.3:50051"), "{full}");
        assert_eq!(
            client_message(&causes[2], None, ClientErrorDetail::Reason),
            "no backend of cluster greeter could take the call: a backend refused the stream"
        );
    }
}
