//! The smallest end-to-end check: one call through the proxy reaches a backend.
#![allow(clippy::unwrap_used)]

mod common;

use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};

#[tokio::test]
async fn a_call_passes_through_the_proxy() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = common::start_proxy(&common::simple_config(&[&backend], ""));
    let mut client = GreeterClient::new(proxy.channel().await);
    let reply = client
        .say_hello(HelloRequest { name: "Ann".into() })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().message, "Hello Ann from b1");
    assert_eq!(common::served_by(reply.metadata()), "b1");
    proxy.shutdown().await;
}
