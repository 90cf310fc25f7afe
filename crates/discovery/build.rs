//! Compiles etcd's v3 API (`proto/`, vendored) into tonic clients, and rpcgate's
//! look-aside API (`/proto/rpcgate/lookaside/v1/lookaside.proto` at the repository's root,
//! shipped there for clients in other languages) into a client and a server, with
//! `protox`, so no `protoc` is needed on the machine (see `proto/README.md`).

const PROTOS: &[&str] = &["proto/etcd/api/etcdserverpb/rpc.proto"];
const LOOKASIDE: &str = "../../proto/rpcgate/lookaside/v1/lookaside.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;

    println!("cargo:rerun-if-changed={LOOKASIDE}");
    let fds = protox::compile([LOOKASIDE], ["../../proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
