//! Compiles `proto/*.proto` into Rust without needing `protoc` on the machine: `protox`
//! (pure Rust) parses the files into a `FileDescriptorSet`, which `tonic-prost-build`
//! turns into messages, clients and servers. The encoded descriptor set is written too,
//! so the crate can expose it (for reflection or tools that want the schema).

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &["proto/helloworld.proto", "proto/pcbook.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("demo_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
