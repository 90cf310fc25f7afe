//! The `rpcgate` binary (in progress).
fn main() {}
