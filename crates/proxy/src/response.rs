//! The response stage: a backend's answer becomes the client's response.
//!
//! The response head is passed on with the route's `response_headers` set. A gRPC call
//! answered with an HTTP error and no `grpc-status` (an HTML 502 from something in
//! between) becomes the status a gRPC client would derive, as a proper trailers-only
//! response. A trailers-only answer ends the call at once; anything else streams through
//! a [`crate::response_body`] body that ends the call when the stream does.

use http::{Response, StatusCode};
use hyper::body::Incoming;
use rpcgate_balance::CallGuard;

use crate::attempt::{Answer, Answered, Target};
use crate::body::ProxyBody;
use crate::call_end::CallEnd;
use crate::headers;
use crate::hold::Held;
use crate::response_body::{Http1Body, UpstreamBody};
use crate::upstream::StreamSlot;
use crate::verdict::{Cause, Verdict, grpc_status};

/// Builds the client's response from the attempt that answered.
pub(crate) fn deliver(
    answered: Answered,
    target: &Target<'_>,
    mut end: CallEnd,
) -> Response<ProxyBody> {
    match answered.answer {
        Answer::H2(answer) => {
            end.count_bytes_in(answer.bytes_in);
            from_h2(
                answer.response,
                answer.slot,
                answer.first,
                answered.guard,
                target,
                end,
            )
        }
        Answer::Http1(response) => from_http1(response, answered.guard, target, end),
    }
}

fn from_h2(
    response: Response<h2::RecvStream>,
    slot: StreamSlot,
    first: Option<Box<Held>>,
    guard: CallGuard,
    target: &Target<'_>,
    mut end: CallEnd,
) -> Response<ProxyBody> {
    let (mut head, recv) = response.into_parts();
    // Answered in the client's HTTP version, not the backend hop's.
    head.version = http::Version::default();
    end.hold(guard, target.cluster.name.clone());
    end.status = head.status.as_u16();
    if end.grpc && head.status != StatusCode::OK && !head.headers.contains_key("grpc-status") {
        let mut answer = end.respond(Verdict::new(Cause::UpstreamHttpError(head.status)));
        headers::set_all(answer.headers_mut(), &target.route.response_headers);
        return answer;
    }
    // No hop-by-hop scan: the h2 codec refuses a response carrying such headers.
    headers::hide_backend(&mut head.headers);
    headers::set_all(&mut head.headers, &target.route.response_headers);
    if end.retries > 0 {
        // gRPC's retry design: the client learns how many attempts came before (those
        // that reached a backend; transparent retries are not counted).
        head.headers
            .insert("grpc-previous-rpc-attempts", end.retries.into());
    }
    if first.is_none() && recv.is_end_stream() {
        // Trailers-only (or empty) response: nothing more will come.
        end.finish(
            Verdict::completed(grpc_status(&head.headers), head.status),
            0,
        );
        return Response::from_parts(head, ProxyBody::empty());
    }
    let deadline = target
        .deadline
        .map(|deadline| Box::pin(tokio::time::sleep_until(deadline.at)));
    let status = head.status;
    Response::from_parts(
        head,
        ProxyBody::stream(UpstreamBody::new(recv, status, first, deadline, end, slot)),
    )
}

fn from_http1(
    response: Response<Incoming>,
    guard: CallGuard,
    target: &Target<'_>,
    mut end: CallEnd,
) -> Response<ProxyBody> {
    let (mut head, incoming) = response.into_parts();
    // The backend's HTTP version is its own hop's: the client is answered in its own
    // (an HTTP/1.0 backend must not make HTTP/1.1 clients close after each answer).
    head.version = http::Version::default();
    // hyper's HTTP/1.1 client gives no trailers to wait for: the head is the outcome.
    Verdict::completed(None, head.status).settle(guard, &target.cluster.name);
    end.status = head.status.as_u16();
    headers::strip_hop_by_hop(&mut head.headers);
    headers::hide_backend(&mut head.headers);
    headers::set_all(&mut head.headers, &target.route.response_headers);
    let status = head.status;
    Response::from_parts(
        head,
        ProxyBody::stream(Http1Body::new(incoming, status, end)),
    )
}
