//! The ADS service over a real h2c connection: a client subscribes, ACKs, NACKs; the
//! server answers the first request, stays quiet on an ACK, counts the NACK, pushes when
//! the resources change, and ends the stream when it drains.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;
use rpcgate_xds::resources::{self, EndpointView, Resources, Snapshot, type_url};
use rpcgate_xds::{AdsService, AdsStats};
use tokio::sync::{mpsc, watch};

const CONFIG: &str = r#"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
[[listeners.routes]]
cluster = "main"
[[clusters]]
name = "main"
endpoints = ["127.0.0.1:50051"]
"#;

fn resources(weight: u32) -> Resources {
    let config = rpcgate_config::parse(CONFIG, "t.toml").unwrap();
    let mut endpoints = BTreeMap::new();
    endpoints.insert(
        "main".to_owned(),
        vec![EndpointView {
            address: "127.0.0.1:50051".parse().unwrap(),
            weight,
            healthy: true,
        }],
    );
    resources::build(&Snapshot {
        generation: 1,
        config: Arc::new(config),
        endpoints,
    })
}

fn request(type_url: &str, names: &[&str], last: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        version_info: last.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: last.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

async fn next(stream: &mut tonic::Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a response within 10 s")
        .unwrap()
        .expect("the stream is open")
}

#[tokio::test]
async fn subscribe_ack_nack_push_and_drain() {
    let (publish, published) = watch::channel(Arc::new(resources(1)));
    let (drain, draining) = watch::channel(false);
    let stats = Arc::new(AdsStats::default());
    let service = AdsService::new(published, draining, stats.clone()).into_server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let (requests, inbound) = mpsc::channel::<DiscoveryRequest>(8);
    let outbound =
        futures_util::stream::unfold(
            inbound,
            |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
        );
    let mut stream = client
        .stream_aggregated_resources(outbound)
        .await
        .unwrap()
        .into_inner();

    // LDS for the listener: its Listener comes back.
    requests
        .send(request(type_url::LISTENER, &["edge"], None))
        .await
        .unwrap();
    let lds = next(&mut stream).await;
    assert_eq!(lds.type_url, type_url::LISTENER);
    assert_eq!(lds.resources.len(), 1);
    // ACK, then CDS: the next response is the CDS one (the ACK got none).
    requests
        .send(request(type_url::LISTENER, &["edge"], Some(&lds)))
        .await
        .unwrap();
    requests
        .send(request(type_url::CLUSTER, &["main"], None))
        .await
        .unwrap();
    let cds = next(&mut stream).await;
    assert_eq!(cds.type_url, type_url::CLUSTER);
    // EDS subscribed; then a NACK of CDS is counted and answered with nothing.
    requests
        .send(request(type_url::ENDPOINT, &["main"], None))
        .await
        .unwrap();
    let eds = next(&mut stream).await;
    assert_eq!(eds.type_url, type_url::ENDPOINT);
    let mut nack = request(type_url::CLUSTER, &["main"], Some(&cds));
    nack.version_info = String::new();
    nack.error_detail = Some(Status {
        code: 3,
        message: "unsupported policy".into(),
        ..Default::default()
    });
    requests.send(nack).await.unwrap();
    let started = tokio::time::Instant::now();
    while stats.nacks.load(Ordering::Relaxed) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the NACK was not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A weight change: only EDS moves, and only EDS is pushed.
    publish.send_replace(Arc::new(resources(3)));
    let push = next(&mut stream).await;
    assert_eq!(push.type_url, type_url::ENDPOINT);
    assert_ne!(push.version_info, eds.version_info);
    assert_eq!(stats.streams.load(Ordering::Relaxed), 1);

    // Draining ends the stream.
    drain.send_replace(true);
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
}
