//! `grpc-timeout` parsing on any bytes: never a panic; what parses formats back to a
//! value that parses to at most the same duration (the finest unit that fits 8 digits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcgate_proxy::deadline::{format_grpc_timeout, parse_grpc_timeout};

fuzz_target!(|data: &[u8]| {
    if let Some(timeout) = parse_grpc_timeout(data) {
        let formatted = format_grpc_timeout(timeout);
        let again = parse_grpc_timeout(formatted.as_bytes())
            .unwrap_or_else(|| panic!("{formatted:?} does not parse"));
        assert!(again <= timeout, "{timeout:?} became {again:?}");
    }
});
