//! The gRPC length-prefix reader on any byte stream, fed in chunks of any size: never a
//! panic, and the same verdict whole or in pieces (the reader keeps only its position).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcgate_proxy::grpc_framing::FrameReader;

/// Feeds `stream` in chunks of `size` and returns the first error, or the end's verdict.
fn verdict(limit: u32, compressed: bool, stream: &[u8], size: usize) -> String {
    let mut reader = FrameReader::new(limit, compressed);
    for chunk in stream.chunks(size.max(1)) {
        if let Err(error) = reader.feed(chunk) {
            return format!("feed: {error}");
        }
    }
    match reader.finish() {
        Ok(()) => "ok".to_owned(),
        Err(error) => format!("finish: {error}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit, size, flags, stream @ ..] = data else {
        return;
    };
    let limit = u32::from(*limit) * 16;
    let compressed = flags & 1 == 1;
    let whole = verdict(limit, compressed, stream, stream.len());
    let pieces = verdict(limit, compressed, stream, usize::from(*size));
    assert_eq!(whole, pieces);
});
