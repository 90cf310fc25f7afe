//! Compiles etcd's v3 API (`proto/`, vendored) into tonic clients with `protox`, so no
//! `protoc` is needed on the machine (see `proto/README.md`).

const PROTOS: &[&str] = &["proto/etcd/api/etcdserverpb/rpc.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
