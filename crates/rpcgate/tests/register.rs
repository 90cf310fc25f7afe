//! `rpcgate register` against a real etcd: the key `/rpcgate/services/NAME/ADDR` holds the
//! backend in etcd's naming format while the command runs; SIGTERM deletes it at once
//! (exit 0); a SIGKILLed registration disappears when its lease ends; bad arguments are
//! refused with a message naming the flag.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;
#[path = "../../../tests/common/etcd.rs"]
#[allow(dead_code)] // reason: shared with tests/etcd.rs, which uses the rest
mod etcd;

use std::time::Duration;

use common::{Running, WAIT, rpcgate, scratch, text};
use etcd::{Etcd, etcd_or_skip};
use rpcgate_discovery::etcd::api::etcdserverpb::RangeRequest;
use tokio::time::{Instant, sleep};

/// Waits (bounded) until the keys under `prefix` are `want`; returns how long it took.
async fn until_keys(etcd: &Etcd, prefix: &str, want: &[&str]) -> Duration {
    let started = Instant::now();
    loop {
        let keys = etcd.keys(prefix).await;
        if keys == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < WAIT, "keys {keys:?}, wanted {want:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

fn register(etcd: &Etcd, address: &str, ttl: &str) -> std::process::Command {
    let mut command = rpcgate();
    command.args([
        "register",
        "--etcd",
        &etcd.client.to_string(),
        "--service",
        "laptop",
    ]);
    command.args(["--address", address, "--ttl", ttl, "--weight", "3"]);
    command
}

#[tokio::test]
async fn register_holds_the_key_until_sigterm_and_a_killed_one_goes_with_its_lease() {
    if !etcd_or_skip("rpcgate register") {
        return;
    }
    let etcd = Etcd::start().await;
    let dir = scratch("register");
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = "/rpcgate/services/laptop/";

    let mut first = Running::spawn(
        &mut register(&etcd, "127.0.0.1:50051", "10s"),
        dir.join("a.log"),
    );
    until_keys(&etcd, prefix, &["/rpcgate/services/laptop/127.0.0.1:50051"]).await;
    let value = etcd
        .kv()
        .await
        .range(RangeRequest {
            key: b"/rpcgate/services/laptop/127.0.0.1:50051".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .kvs[0]
        .value
        .clone();
    assert_eq!(
        String::from_utf8(value).unwrap(),
        r#"{"Addr":"127.0.0.1:50051","Metadata":{"weight":3}}"#
    );
    first.until_said("registered in etcd").await;
    first.sigterm();
    assert!(first.exit().await.success(), "{}", first.output());
    // Revoked, not expired: gone well before the 10 s lease would end.
    assert!(until_keys(&etcd, prefix, &[]).await < Duration::from_secs(5));
    assert!(
        first.output().contains("deregistered from etcd"),
        "{}",
        first.output()
    );

    // SIGINT (Ctrl-C) deregisters too.
    let mut interrupted = Running::spawn(
        &mut register(&etcd, "127.0.0.1:50053", "10s"),
        dir.join("c.log"),
    );
    until_keys(&etcd, prefix, &["/rpcgate/services/laptop/127.0.0.1:50053"]).await;
    interrupted.signal("INT");
    assert!(
        interrupted.exit().await.success(),
        "{}",
        interrupted.output()
    );
    assert!(until_keys(&etcd, prefix, &[]).await < Duration::from_secs(5));

    // SIGKILL: nothing deregisters, the 2 s lease ends.
    let mut killed = Running::spawn(
        &mut register(&etcd, "127.0.0.1:50052", "2s"),
        dir.join("b.log"),
    );
    until_keys(&etcd, prefix, &["/rpcgate/services/laptop/127.0.0.1:50052"]).await;
    killed.signal("KILL");
    killed.exit().await;
    let gone = until_keys(&etcd, prefix, &[]).await;
    assert!(
        gone > Duration::from_millis(300),
        "the key went with the lease, not at once: {gone:?}"
    );
}

#[test]
fn register_refuses_bad_arguments_naming_the_flag() {
    for (args, says) in [
        (&["--address", "nohost"][..], "--address <ADDRESS>"),
        (
            &["--address", "h:1", "--ttl", "1s"],
            "etcd grants leases of at least 2s",
        ),
        (&["--address", "h:1", "--weight", "0"], "--weight <WEIGHT>"),
        (
            &["--address", "h:1", "--etcd", "etcd.local"],
            "--etcd <ETCD>",
        ),
    ] {
        let mut command = rpcgate();
        command.args(["register", "--service", "s"]).args(args);
        if !args.contains(&"--etcd") {
            command.args(["--etcd", "127.0.0.1:2379"]);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(text(&output).contains(says), "{args:?}: {}", text(&output));
    }
}

#[tokio::test]
async fn stopping_while_etcd_is_away_says_the_key_stays_until_its_lease_ends() {
    if !etcd_or_skip("rpcgate register") {
        return;
    }
    let mut etcd = Etcd::start().await;
    let dir = scratch("register-away");
    std::fs::create_dir_all(&dir).unwrap();
    let mut sidecar = Running::spawn(
        &mut register(&etcd, "127.0.0.1:50051", "10s"),
        dir.join("a.log"),
    );
    until_keys(
        &etcd,
        "/rpcgate/services/laptop/",
        &["/rpcgate/services/laptop/127.0.0.1:50051"],
    )
    .await;
    sidecar.until_said("registered in etcd").await;
    etcd.kill();
    sidecar.until_said("etcd registration interrupted").await;
    sidecar.sigterm();
    assert!(sidecar.exit().await.success(), "{}", sidecar.output());
    let output = sidecar.output();
    assert!(
        output.contains("not deregistered: ")
            && output.contains("the key goes when its lease ends"),
        "{output}"
    );
    assert!(!output.contains("deregistered from etcd"), "{output}");
}
