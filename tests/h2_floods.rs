//! HTTP/2 floods and malformed requests against the real proxy, with hand-built frames
//! on a raw TCP connection (CONTINUATION flood, HPACK bomb, SETTINGS/PING/empty-DATA/
//! WINDOW_UPDATE floods, stream exhaustion, malformed requests; `h2_abuse.rs` covers the
//! others). A flood may cost its own connection, never the
//! process: the proxy closes the connection or keeps up without unbounded memory (the
//! proxy runs in this process, so its memory is this process's RSS), a fresh client is
//! served within 2 s, and a malformed request never reaches a backend (or, when only its
//! DATA shows it malformed, is reset there before it completes).
//!
//! Every flood is bounded by bytes and seconds; the RSS-measuring tests run alone (a
//! lock) so that no other test's allocations count as theirs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use common::raw_h2::{SAY_HELLO, hello_message};
use common::rss::RssPeak;
use common::{OneCluster, TestProxy, WAIT, start_proxy};
use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
use rpcgate_demo::{BackendHandle, meta, spawn_backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc, watch};
use tokio::time::{Instant, timeout, timeout_at};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const NO_ERROR: u32 = 0x0;
const PROTOCOL_ERROR: u32 = 0x1;
const REFUSED_STREAM: u32 = 0x7;

/// `SETTINGS_MAX_CONCURRENT_STREAMS`.
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// The largest frame payload a peer must accept before any SETTINGS say more.
const MAX_FRAME: usize = 16_384;

/// How many bytes one flood may send at most.
const FLOOD_BYTES: u64 = 24 << 20;
/// How long one flood may last at most.
const FLOOD_TIME: Duration = Duration::from_secs(8);
/// A write that makes no progress for this long means the proxy stopped reading
/// (back-pressure): the flood ends there.
const STALL: Duration = Duration::from_millis(500);
/// How far the proxy's (this process's) RSS may grow during one attack.
const RSS_LIMIT_KIB: u64 = 50 * 1024;
/// How soon a fresh client must be served during and after an attack.
const SERVED_BOUND: Duration = Duration::from_secs(2);
/// How long a refused request may take to be answered (reset, response or close).
const ANSWER_BOUND: Duration = Duration::from_secs(3);

/// The tests of a file share one process, hence one RSS: a test that measures it holds
/// this for writing, the others for reading, so no other test's allocations count as
/// the attack's.
static RSS_LOCK: RwLock<()> = RwLock::const_new(());

// ---------------------------------------------------------------------------------------
// Frames and HPACK, by hand.

/// One frame: 24-bit length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    assert!(length < 1 << 24);
    let mut out = length.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `count` copies of `one` back to back: a flood's unit of writing.
fn repeated(one: &[u8], count: usize) -> Vec<u8> {
    one.repeat(count)
}

/// An HPACK integer with a `prefix_bits`-bit prefix, whose first byte also carries
/// `pattern` (RFC 7541 §5.1).
fn hpack_int(pattern: u8, prefix_bits: u32, value: usize, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(pattern | u8::try_from(value).unwrap());
        return;
    }
    out.push(pattern | u8::try_from(max).unwrap());
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(u8::try_from(rest & 0x7f).unwrap() | 0x80);
        rest >>= 7;
    }
    out.push(u8::try_from(rest).unwrap());
}

/// A raw (non-Huffman) HPACK string literal.
fn hpack_str(bytes: &[u8], out: &mut Vec<u8>) {
    hpack_int(0x00, 7, bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// A literal field without indexing, new name (RFC 7541 §6.2.2): the decoder's table
/// is untouched, so blocks can be replayed in any order.
fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    hpack_str(name, &mut out);
    hpack_str(value, &mut out);
    out
}

/// A literal field with incremental indexing, new name (RFC 7541 §6.2.1): the field is
/// added to the decoder's dynamic table (as index 62 when the table was empty).
fn literal_indexed(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40];
    hpack_str(name, &mut out);
    hpack_str(value, &mut out);
    out
}

/// A request's fields, in order.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The fields of a well-formed gRPC SayHello request to `addr`, with `extra` appended.
fn grpc_fields(addr: SocketAddr, extra: &[(&str, &str)]) -> Fields {
    let mut fields: Fields = [
        (":method", "POST".to_owned()),
        (":scheme", "http".to_owned()),
        (":path", SAY_HELLO.to_owned()),
        (":authority", addr.to_string()),
        ("content-type", "application/grpc".to_owned()),
        ("te", "trailers".to_owned()),
    ]
    .into_iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.into_bytes()))
    .collect();
    fields.extend(
        extra
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())),
    );
    fields
}

/// A header block of literal fields.
fn block(fields: &Fields) -> Vec<u8> {
    fields.iter().flat_map(|(n, v)| literal(n, v)).collect()
}

/// The `:status` of a response header block, when it comes first as the h2 crate sends
/// it (an indexed static entry, or a literal with a Huffman- or raw-coded number).
fn response_status(block: &[u8]) -> Option<u16> {
    let (&first, rest) = block.split_first()?;
    if first & 0x80 != 0 {
        return match first & 0x7f {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    // A literal whose name is a static `:status` entry (indices 8-14).
    let index = if first & 0xc0 == 0x40 {
        first & 0x3f
    } else if first & 0xe0 == 0 {
        first & 0x0f
    } else {
        return None;
    };
    if !(8..=14).contains(&index) {
        return None;
    }
    let (&head, value) = rest.split_first()?;
    let value = value.get(..usize::from(head & 0x7f))?;
    let text = if head & 0x80 != 0 {
        huffman_digits(value)?
    } else {
        String::from_utf8(value.to_vec()).ok()?
    };
    text.parse().ok()
}

/// Decodes a Huffman-coded string of decimal digits (RFC 7541 Appendix B: `0`-`2` have
/// 5-bit codes 00000-00010, `3`-`9` 6-bit codes 011001-011111).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let take = |at: usize, n: usize| -> Option<u8> {
        bits.get(at..at + n)
            .map(|b| b.iter().fold(0, |acc, bit| acc << 1 | bit))
    };
    let mut out = String::new();
    let mut at = 0;
    while at < bits.len() {
        if bits[at..].iter().all(|&b| b == 1) && bits.len() - at < 8 {
            break; // padding
        }
        match take(at, 5)? {
            code @ 0..=2 => {
                out.push(char::from(b'0' + code));
                at += 5;
            }
            _ => match take(at, 6)? {
                code @ 0b011001..=0b011111 => {
                    out.push(char::from(b'3' + code - 0b011001));
                    at += 6;
                }
                _ => return None,
            },
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// A raw connection.

/// A frame the proxy sent.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        Some(u32::from_be_bytes(
            self.payload.get(at..at + 4)?.try_into().unwrap(),
        ))
    }
}

/// What the proxy made of one request stream.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// RST_STREAM with this code.
    Reset(u32),
    /// Response HEADERS with this `:status` (`None`: not decoded).
    Response(Option<u16>),
    /// GOAWAY with this code (a connection error).
    GoAway(u32),
    /// The connection ended (EOF or reset) with no frame about the stream.
    Closed,
    /// Nothing within the bound.
    Silent,
}

/// How a connection ended up after an attack.
#[derive(Debug, PartialEq)]
enum End {
    /// It still answers a PING, after everything sent before.
    Alive,
    /// It was closed, after a GOAWAY with this code if one was read.
    Closed(Option<u32>),
}

/// A raw HTTP/2 connection past the handshake.
struct Conn {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    buf: Vec<u8>,
    /// The proxy's SETTINGS.
    settings: Vec<(u16, u32)>,
}

/// The next thing read from a connection.
enum Next {
    Frame(Frame),
    Closed,
    TimedOut,
}

impl Conn {
    /// Connects and completes the handshake: preface and SETTINGS both ways, each side's
    /// SETTINGS acknowledged. The PING round trip at the end proves the proxy has applied
    /// our ACK, so its own SETTINGS (such as its stream limit) are in force.
    async fn open(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (read, write) = tcp.into_split();
        let mut conn = Self {
            read,
            write,
            buf: Vec::new(),
            settings: Vec::new(),
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        conn.send(&hello).await.unwrap();
        let until = Instant::now() + WAIT;
        loop {
            match conn.next_frame(until).await {
                Next::Frame(f) if f.kind == SETTINGS && f.flags & ACK == 0 => {
                    conn.settings = f
                        .payload
                        .chunks_exact(6)
                        .map(|s| {
                            (
                                u16::from_be_bytes([s[0], s[1]]),
                                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                            )
                        })
                        .collect();
                    break;
                }
                Next::Frame(_) => {}
                Next::Closed | Next::TimedOut => panic!("no SETTINGS from the proxy"),
            }
        }
        let mut ack = frame(SETTINGS, ACK, 0, &[]);
        ack.extend(frame(PING, 0, 0, b"handshk!"));
        conn.send(&ack).await.unwrap();
        loop {
            match conn.next_frame(until).await {
                Next::Frame(f) if f.kind == PING && f.flags & ACK != 0 => break,
                Next::Frame(_) => {}
                Next::Closed | Next::TimedOut => panic!("no PING ACK in the handshake"),
            }
        }
        conn
    }

    /// A setting the proxy announced.
    fn setting(&self, id: u16) -> Option<u32> {
        self.settings
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write.write_all(bytes).await
    }

    /// Reads the next frame, until `until`.
    async fn next_frame(&mut self, until: Instant) -> Next {
        Reader {
            read: &mut self.read,
            buf: &mut self.buf,
        }
        .next_frame(until)
        .await
    }

    /// What the proxy does about `stream`, within `bound`: the first RST_STREAM or
    /// response HEADERS for it, a GOAWAY, or the end of the connection.
    async fn outcome(&mut self, stream: u32, bound: Duration) -> Outcome {
        let until = Instant::now() + bound;
        loop {
            match self.next_frame(until).await {
                Next::Frame(f) if f.kind == GOAWAY => {
                    return Outcome::GoAway(f.error_code().unwrap());
                }
                Next::Frame(f) if f.stream == stream && f.kind == RST_STREAM => {
                    return Outcome::Reset(f.error_code().unwrap());
                }
                Next::Frame(f) if f.stream == stream && f.kind == HEADERS => {
                    return Outcome::Response(response_status(&f.payload));
                }
                Next::Frame(_) => {}
                Next::Closed => return Outcome::Closed,
                Next::TimedOut => return Outcome::Silent,
            }
        }
    }

    /// After an attack: writes what the attack left half-written, then a PING, while
    /// reading everything the proxy sends, until the PING's ACK (the connection is alive
    /// and has processed the whole attack) or the end of the connection.
    async fn alive_or_closed(&mut self, unwritten: &[u8]) -> End {
        let mut bytes = unwritten.to_vec();
        bytes.extend(frame(PING, 0, 0, b"probe..!"));
        let until = Instant::now() + WAIT;
        let Self {
            read, write, buf, ..
        } = self;
        let writing = async {
            // A failed write means the proxy closed the connection; the reader sees it.
            let _ = timeout_at(until, write.write_all(&bytes)).await;
        };
        let reading = async {
            let mut reader = Reader { read, buf };
            let mut goaway = None;
            loop {
                match reader.next_frame(until).await {
                    Next::Frame(f) if f.kind == GOAWAY => goaway = f.error_code(),
                    Next::Frame(f)
                        if f.kind == PING
                            && f.flags & ACK != 0
                            && f.payload == b"probe..!"
                            && goaway.is_none() =>
                    {
                        return End::Alive;
                    }
                    Next::Frame(_) => {}
                    Next::Closed => return End::Closed(goaway),
                    Next::TimedOut => panic!("the connection neither answered nor closed"),
                }
            }
        };
        tokio::join!(writing, reading).1
    }
}

/// The read side of a [`Conn`], borrowed while its write side is busy.
struct Reader<'a> {
    read: &'a mut OwnedReadHalf,
    buf: &'a mut Vec<u8>,
}

impl Reader<'_> {
    async fn next_frame(&mut self, until: Instant) -> Next {
        loop {
            if self.buf.len() >= 9 {
                let length = usize::try_from(u32::from_be_bytes([
                    0,
                    self.buf[0],
                    self.buf[1],
                    self.buf[2],
                ]))
                .unwrap();
                if self.buf.len() >= 9 + length {
                    let rest = self.buf.split_off(9 + length);
                    let bytes = std::mem::replace(self.buf, rest);
                    return Next::Frame(Frame {
                        kind: bytes[3],
                        flags: bytes[4],
                        stream: u32::from_be_bytes(bytes[5..9].try_into().unwrap()) & 0x7fff_ffff,
                        payload: bytes[9..].to_vec(),
                    });
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            match timeout_at(until, self.read.read(&mut chunk)).await {
                Err(_) => return Next::TimedOut,
                Ok(Ok(0) | Err(_)) => return Next::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Floods, memory and liveness.

/// How a flood ended.
#[derive(Debug, PartialEq)]
enum FloodEnd {
    /// It reached its byte or time bound.
    Limit,
    /// A write made no progress for [`STALL`]: the proxy stopped reading.
    Stalled,
    /// A write failed: the proxy closed the connection.
    WriteFailed,
}

/// What a flood did.
#[derive(Debug)]
struct Flood {
    sent: u64,
    end: FloodEnd,
    took: Duration,
    /// The part of the last unit that was not written (after a stall), so that the
    /// connection's frames stay aligned for the check that follows.
    unwritten: Vec<u8>,
}

/// Writes `unit` again and again, never reading, until [`FLOOD_BYTES`] or `max_bytes`,
/// [`FLOOD_TIME`], a stall or a write error. `progress` tells the bytes sent so far and
/// is dropped when the flood ends.
async fn flood(
    write: &mut OwnedWriteHalf,
    unit: &[u8],
    max_bytes: u64,
    progress: watch::Sender<u64>,
) -> Flood {
    let started = Instant::now();
    let max_bytes = max_bytes.min(FLOOD_BYTES);
    let mut sent = 0u64;
    let mut offset = 0;
    let end = loop {
        if offset == 0 && (sent >= max_bytes || started.elapsed() >= FLOOD_TIME) {
            break FloodEnd::Limit;
        }
        match timeout(STALL, write.write(&unit[offset..])).await {
            Err(_) => break FloodEnd::Stalled,
            Ok(Ok(0) | Err(_)) => break FloodEnd::WriteFailed,
            Ok(Ok(n)) => {
                offset = (offset + n) % unit.len();
                sent += n as u64;
                progress.send_replace(sent);
            }
        }
    };
    Flood {
        sent,
        took: started.elapsed(),
        unwritten: if end == FloodEnd::Stalled {
            unit[offset..].to_vec()
        } else {
            Vec::new()
        },
        end,
    }
}

/// A proxy in front of one backend `b1`, with these listener keys, after one call went
/// through (so that first-use allocations are not counted as attack growth).
async fn proxy_with(listener: &str) -> (BackendHandle, TestProxy) {
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&OneCluster::backends(&[&backend]).listener(listener).build());
    fresh_client_served(&proxy, WAIT).await;
    (backend, proxy)
}

/// A fresh client on a new connection gets a normal answer within `bound`.
async fn fresh_client_served(proxy: &TestProxy, bound: Duration) {
    let served = timeout(bound, async {
        let mut client = GreeterClient::new(proxy.channel().await);
        client.say_hello(HelloRequest { name: "Ann".into() }).await
    })
    .await
    .expect("a fresh client was not served in time")
    .unwrap();
    assert_eq!(served.get_ref().message, "Hello Ann from b1");
}

/// Runs a flood of `unit` on `conn` (whose setup is done), checks that a fresh client is
/// served while it runs (after 1 MiB, or when it ended sooner) and after it, and returns
/// how the flood and the connection ended and how far RSS grew.
async fn run_flood(
    proxy: &TestProxy,
    conn: &mut Conn,
    unit: &[u8],
    max_bytes: u64,
) -> (Flood, End, u64) {
    let rss = RssPeak::start();
    let (progress, mut sent) = watch::channel(0u64);
    let (flooded, ()) = tokio::join!(flood(&mut conn.write, unit, max_bytes, progress), async {
        // Err: the flood ended before 1 MiB.
        let _ = sent.wait_for(|&n| n >= 1 << 20).await;
        fresh_client_served(proxy, SERVED_BOUND).await;
    });
    let end = conn.alive_or_closed(&flooded.unwritten).await;
    fresh_client_served(proxy, SERVED_BOUND).await;
    let growth = rss.growth();
    (flooded, end, growth)
}

/// Takes [`RSS_LOCK`] alone, to measure RSS (a failed test does not poison it).
async fn rss_lock() -> RwLockWriteGuard<'static, ()> {
    RSS_LOCK.write().await
}

/// Takes [`RSS_LOCK`] shared, for a test that does not measure RSS.
async fn no_rss_lock() -> RwLockReadGuard<'static, ()> {
    RSS_LOCK.read().await
}

/// A request on stream 1: HEADERS with `fields`, then `data` (if any) in one DATA frame
/// ending the stream; both in one write, as an attacker would.
fn request(fields: &Fields, data: Option<&[u8]>) -> Vec<u8> {
    let flags = END_HEADERS | if data.is_none() { END_STREAM } else { 0 };
    let mut bytes = frame(HEADERS, flags, 1, &block(fields));
    if let Some(data) = data {
        bytes.extend(frame(DATA, END_STREAM, 1, data));
    }
    bytes
}

/// Checks the RSS growth of an attack and logs it.
fn assert_rss(attack: &str, growth_kib: u64) {
    eprintln!("{attack}: RSS growth {} KiB", growth_kib);
    assert!(
        growth_kib < RSS_LIMIT_KIB,
        "{attack}: RSS grew by {} MiB",
        growth_kib / 1024
    );
}

// ---------------------------------------------------------------------------------------
// Attack 3: CONTINUATION flood.

/// HEADERS without END_HEADERS, then CONTINUATION frames without end, full of small
/// well-formed fields (the CPU variant: each frame can be decoded as it comes). The proxy
/// must close the connection long before 16 MiB, within bounded memory, and never call
/// the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_of_small_fields_closes_the_connection() {
    let _rss = rss_lock().await;
    let (backend, proxy) = proxy_with("").await;
    let mut conn = Conn::open(proxy.addr).await;
    conn.send(&frame(HEADERS, 0, 1, &block(&grpc_fields(proxy.addr, &[]))))
        .await
        .unwrap();
    // 16 fields of exactly 1 KiB fill one maximal frame.
    let field = literal(b"x-pad", &[b'a'; 1014]);
    assert_eq!(field.len(), 1024);
    let continuation = frame(CONTINUATION, 0, 1, &repeated(&field, MAX_FRAME / 1024));
    let (flooded, end, growth) =
        run_flood(&proxy, &mut conn, &repeated(&continuation, 4), 16 << 20).await;
    eprintln!("continuation flood (small fields): {flooded:?}, connection {end:?}");
    assert!(
        matches!(end, End::Closed(_)),
        "connection still open: {end:?}"
    );
    assert!(
        flooded.sent < 8 << 20,
        "the proxy read {} bytes of one header block before closing",
        flooded.sent
    );
    assert_rss("continuation flood (small fields)", growth);
    // The warm-up call and two fresh clients; the attack never reached the backend.
    assert_eq!(backend.calls(), 3);
    drop(conn);
    proxy.shutdown().await;
}

/// The same with one endless header value (declared 16 MiB long) spread over the
/// CONTINUATION frames: the memory variant, where a decoder must buffer until the value
/// is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_of_one_endless_value_closes_the_connection() {
    let _rss = rss_lock().await;
    let (backend, proxy) = proxy_with("").await;
    let mut conn = Conn::open(proxy.addr).await;
    let mut start = block(&grpc_fields(proxy.addr, &[]));
    start.push(0x00);
    hpack_str(b"x-endless", &mut start);
    hpack_int(0x00, 7, 16 << 20, &mut start); // the value's length; the value follows
    conn.send(&frame(HEADERS, 0, 1, &start)).await.unwrap();
    let continuation = frame(CONTINUATION, 0, 1, &[b'v'; MAX_FRAME]);
    let (flooded, end, growth) =
        run_flood(&proxy, &mut conn, &repeated(&continuation, 4), 16 << 20).await;
    eprintln!("continuation flood (endless value): {flooded:?}, connection {end:?}");
    assert!(
        matches!(end, End::Closed(_)),
        "connection still open: {end:?}"
    );
    assert!(
        flooded.sent < 8 << 20,
        "the proxy read {} bytes of one header block before closing",
        flooded.sent
    );
    assert_rss("continuation flood (endless value)", growth);
    assert_eq!(backend.calls(), 3);
    drop(conn);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Attack 4: HPACK bomb and an over-long header list.

/// One 4 KiB field added to the HPACK dynamic table, then referenced 10 000 times by
/// 1-byte indexed fields in one 14 KiB header block: ~40 MB decoded against an 8 KiB
/// `max_header_bytes`. Refused (reset, 431 or GOAWAY), never forwarded, bounded memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_is_refused() {
    let _rss = rss_lock().await;
    let (backend, proxy) = proxy_with("max_header_bytes = 8192").await;
    let rss = RssPeak::start();
    let mut conn = Conn::open(proxy.addr).await;
    let mut bomb = block(&grpc_fields(proxy.addr, &[]));
    bomb.extend(literal_indexed(b"x-bomb", &[b'b'; 4000]));
    bomb.extend(std::iter::repeat_n(0x80 | 62, 10_000)); // indexed: dynamic entry 62
    assert!(bomb.len() <= MAX_FRAME);
    conn.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &bomb))
        .await
        .unwrap();
    let outcome = conn.outcome(1, ANSWER_BOUND).await;
    eprintln!("hpack bomb: {outcome:?}");
    assert!(
        matches!(
            outcome,
            Outcome::Reset(_) | Outcome::Response(Some(431)) | Outcome::GoAway(_) | Outcome::Closed
        ) && outcome != Outcome::Reset(NO_ERROR)
            && outcome != Outcome::GoAway(NO_ERROR),
        "the bomb was not refused: {outcome:?}"
    );
    fresh_client_served(&proxy, SERVED_BOUND).await;
    assert_rss("hpack bomb", rss.growth());
    assert_eq!(backend.calls(), 2, "the bomb reached the backend");
    drop(conn);
    proxy.shutdown().await;
}

/// A header list a little over `max_header_bytes` (three 4 KiB fields against 8 KiB) is
/// refused as a stream error (431 or a reset); the connection goes on serving.
#[tokio::test]
async fn a_header_list_over_the_limit_is_refused_on_its_own_stream() {
    let _shared = no_rss_lock().await;
    let (backend, proxy) = proxy_with("max_header_bytes = 8192").await;
    let mut conn = Conn::open(proxy.addr).await;
    let big = "h".repeat(4000);
    let fields = grpc_fields(
        proxy.addr,
        &[("x-big-1", &big), ("x-big-2", &big), ("x-big-3", &big)],
    );
    conn.send(&request(&fields, Some(&hello_message())))
        .await
        .unwrap();
    let outcome = conn.outcome(1, ANSWER_BOUND).await;
    eprintln!("header list over the limit: {outcome:?}");
    assert!(
        matches!(
            outcome,
            Outcome::Response(Some(431)) | Outcome::Reset(REFUSED_STREAM | PROTOCOL_ERROR)
        ),
        "not refused as a stream error: {outcome:?}"
    );
    assert_eq!(backend.calls(), 1, "the request reached the backend");
    assert_eq!(conn.alive_or_closed(&[]).await, End::Alive);
    fresh_client_served(&proxy, SERVED_BOUND).await;
    drop(conn);
    proxy.shutdown().await;
}

/// Many tiny fields: each costs its name, value and 32 bytes in the decoded size, so the
/// field count is bounded too (here 300 one-byte fields, 10 KB decoded in a 3 KB block,
/// over an 8 KiB limit).
#[tokio::test]
async fn many_tiny_header_fields_are_refused_by_the_decoded_size() {
    let _shared = no_rss_lock().await;
    let (backend, proxy) = proxy_with("max_header_bytes = 8192").await;
    let mut conn = Conn::open(proxy.addr).await;
    let names: Vec<String> = (0..300).map(|i| format!("x{i}")).collect();
    let extra: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let fields = grpc_fields(proxy.addr, &extra);
    conn.send(&request(&fields, Some(&hello_message())))
        .await
        .unwrap();
    let outcome = conn.outcome(1, ANSWER_BOUND).await;
    assert!(
        matches!(
            outcome,
            Outcome::Response(Some(431)) | Outcome::Reset(REFUSED_STREAM | PROTOCOL_ERROR)
        ),
        "not refused as a stream error: {outcome:?}"
    );
    assert_eq!(backend.calls(), 1, "the request reached the backend");
    assert_eq!(conn.alive_or_closed(&[]).await, End::Alive);
    fresh_client_served(&proxy, SERVED_BOUND).await;
    drop(conn);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Attack 6: control-frame floods, never reading what the proxy answers.

/// Runs a flood of `one_frame` (repeated) on a new connection, after opening request
/// stream 1 if `open_stream`, and checks memory and liveness. Returns the connection's end.
async fn control_flood(attack: &str, open_stream: bool, one_frame: &[u8]) -> End {
    let _rss = rss_lock().await;
    let (backend, proxy) = proxy_with("").await;
    let mut conn = Conn::open(proxy.addr).await;
    if open_stream {
        let fields = grpc_fields(proxy.addr, &[]);
        conn.send(&frame(HEADERS, END_HEADERS, 1, &block(&fields)))
            .await
            .unwrap();
    }
    let unit = repeated(one_frame, (64 * 1024) / one_frame.len());
    let (flooded, end, growth) = run_flood(&proxy, &mut conn, &unit, FLOOD_BYTES).await;
    eprintln!(
        "{attack}: sent {} KiB in {:?}, flood ended by {:?}, connection {end:?}",
        flooded.sent / 1024,
        flooded.took,
        flooded.end
    );
    assert_rss(attack, growth);
    drop(conn);
    // Any stream the flood opened is cancelled upstream once its connection is gone.
    tokio::time::timeout(WAIT, backend.wait_until(|b| b.in_flight() == 0))
        .await
        .expect("a call of the flood connection still runs upstream");
    proxy.shutdown().await;
    end
}

/// SETTINGS frames whose ACKs are never read (CVE-2019-9515).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_bounded() {
    control_flood("settings flood", false, &frame(SETTINGS, 0, 0, &[])).await;
}

/// PING frames whose ACKs are never read (CVE-2019-9512).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_bounded() {
    control_flood("ping flood", false, &frame(PING, 0, 0, b"pingpong")).await;
}

/// Empty DATA frames without END_STREAM on an open request stream (CVE-2019-9518).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_data_flood_is_bounded() {
    control_flood("empty DATA flood", true, &frame(DATA, 0, 1, &[])).await;
}

/// WINDOW_UPDATE frames (increment 1) on the connection: nothing to answer, but each
/// must be processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_update_flood_is_bounded() {
    control_flood(
        "WINDOW_UPDATE flood",
        false,
        &frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()),
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Attack 7: stream-concurrency exhaustion.

/// `max_concurrent_streams + 50` request streams that never end on one connection: the
/// excess is refused with REFUSED_STREAM (retry-safe), the allowed ones reach the backend,
/// a second client on a new connection is served within 2 s, and closing the attacking
/// connection cancels its calls upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_limit_are_refused_and_others_are_served() {
    let _shared = no_rss_lock().await;
    const LIMIT: u32 = 10;
    let (backend, proxy) = proxy_with(&format!("max_concurrent_streams = {LIMIT}")).await;
    let mut conn = Conn::open(proxy.addr).await;
    assert_eq!(conn.setting(MAX_CONCURRENT_STREAMS), Some(LIMIT));
    let fields = grpc_fields(proxy.addr, &[(meta::DELAY_MS, "60000")]);
    let ids: Vec<u32> = (0..LIMIT + 50).map(|i| 1 + 2 * i).collect();
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&id| frame(HEADERS, END_HEADERS, id, &block(&fields)))
        .collect();
    conn.send(&bytes).await.unwrap();

    let mut refused = Vec::new();
    let until = Instant::now() + WAIT;
    while refused.len() < 50 {
        match conn.next_frame(until).await {
            Next::Frame(f) if f.kind == RST_STREAM => {
                assert_eq!(f.error_code(), Some(REFUSED_STREAM), "stream {}", f.stream);
                refused.push(f.stream);
            }
            Next::Frame(f) if f.kind == GOAWAY => panic!("GOAWAY {:?}", f.error_code()),
            Next::Frame(_) => {}
            Next::Closed => panic!("the proxy closed the connection"),
            Next::TimedOut => panic!("only {} streams refused", refused.len()),
        }
    }
    refused.sort_unstable();
    assert_eq!(
        refused,
        ids[LIMIT as usize..],
        "the wrong streams were refused"
    );
    timeout(
        WAIT,
        backend.wait_until(|b| b.in_flight() == u64::from(LIMIT)),
    )
    .await
    .unwrap_or_else(|_| panic!("{} calls upstream, not {LIMIT}", backend.in_flight()));

    fresh_client_served(&proxy, SERVED_BOUND).await;
    assert_eq!(backend.calls(), 1 + u64::from(LIMIT) + 1);
    drop(conn);
    timeout(WAIT, backend.wait_until(|b| b.in_flight() == 0))
        .await
        .unwrap_or_else(|_| panic!("{} calls still run upstream", backend.in_flight()));
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Attack 10: malformed requests, each on its own connection (RFC 9113 §8.1.1, §8.2).

/// Whether an outcome refuses a malformed request: RST_STREAM PROTOCOL_ERROR, a 4xx
/// answer, or a connection error.
fn refused(outcome: &Outcome) -> bool {
    match *outcome {
        Outcome::Reset(code) => code == PROTOCOL_ERROR,
        Outcome::Response(Some(status)) => (400..500).contains(&status),
        Outcome::GoAway(code) => code != NO_ERROR,
        Outcome::Closed => true,
        Outcome::Response(None) | Outcome::Silent => false,
    }
}

/// Sends `bytes` (a request on stream 1, built for the proxy's address) on a fresh
/// connection: the proxy must refuse it (RST_STREAM PROTOCOL_ERROR, a 4xx answer, or a
/// connection error) and the backend must never see it.
async fn assert_refused(case: &str, build: impl FnOnce(SocketAddr) -> Vec<u8>) {
    let _shared = no_rss_lock().await;
    let (backend, proxy) = proxy_with("").await;
    let mut conn = Conn::open(proxy.addr).await;
    conn.send(&build(proxy.addr)).await.unwrap();
    let outcome = conn.outcome(1, ANSWER_BOUND).await;
    eprintln!("{case}: {outcome:?}");
    let refused = refused(&outcome);
    // A fresh call after the answer: had the bad request been forwarded, the backend
    // would have seen it first.
    fresh_client_served(&proxy, SERVED_BOUND).await;
    let seen = backend.last_request();
    assert!(refused, "{case}: not refused: {outcome:?}");
    assert_eq!(
        backend.calls(),
        2,
        "{case}: the backend saw {} calls (warm-up, fresh client, and the bad request?); last: {seen:?}",
        backend.calls()
    );
    drop(conn); // else shutdown waits for it to go
    proxy.shutdown().await;
}

#[tokio::test]
async fn uppercase_header_name_is_refused() {
    assert_extra_header_refused("uppercase header name", "X-Upper", "1").await;
}

#[tokio::test]
async fn pseudo_header_after_a_regular_one_is_refused() {
    assert_refused("pseudo-header after a regular header", |addr| {
        let mut fields = grpc_fields(addr, &[]);
        let authority = fields.remove(3);
        assert_eq!(authority.0, b":authority");
        fields.push(authority);
        request(&fields, Some(&hello_message()))
    })
    .await;
}

/// A gRPC request carrying one extra (invalid) header must be refused.
async fn assert_extra_header_refused(what: &str, name: &'static str, value: &'static str) {
    assert_refused(what, move |addr| {
        request(&grpc_fields(addr, &[(name, value)]), Some(&hello_message()))
    })
    .await;
}

#[tokio::test]
async fn duplicate_path_is_refused() {
    assert_refused("duplicate :path", |addr| {
        let mut fields = grpc_fields(addr, &[]);
        fields.insert(
            3,
            (b":path".to_vec(), b"/helloworld.Greeter/Other".to_vec()),
        );
        request(&fields, Some(&hello_message()))
    })
    .await;
}

#[tokio::test]
async fn connection_header_is_refused() {
    assert_extra_header_refused("connection: keep-alive", "connection", "keep-alive").await;
}

#[tokio::test]
async fn transfer_encoding_is_refused() {
    assert_extra_header_refused("transfer-encoding: chunked", "transfer-encoding", "chunked").await;
}

#[tokio::test]
async fn te_other_than_trailers_is_refused() {
    assert_refused("te: gzip", |addr| {
        let mut fields = grpc_fields(addr, &[]);
        assert_eq!(fields[5].0, b"te");
        fields[5].1 = b"gzip".to_vec();
        request(&fields, Some(&hello_message()))
    })
    .await;
}

#[tokio::test]
async fn cr_lf_in_a_value_is_refused() {
    assert_extra_header_refused("CR LF in a value", "x-smuggle", "a\r\nx-injected: 1").await;
}

#[tokio::test]
async fn nul_in_a_value_is_refused() {
    assert_extra_header_refused("NUL in a value", "x-smuggle", "a\0b").await;
}

/// `content-length: 10` on a HEADERS frame that ends the stream (no body at all).
#[tokio::test]
async fn content_length_without_a_body_is_refused() {
    assert_refused("content-length 10, no DATA", |addr| {
        request(&grpc_fields(addr, &[("content-length", "10")]), None)
    })
    .await;
}

// A request whose DATA contradicts its content-length can only be found out once the
// DATA arrives. A streaming proxy may have opened the upstream stream by then; it must
// reset it, so that the backend never gets a complete request of the wrong length. (The
// demo backend cannot tell a reset from a short body, so these use a recording one.)

/// What a recording backend saw.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the fields are read through Debug, in failure messages"
)]
enum Upstream {
    /// A request stream opened with these headers.
    Opened(http::HeaderMap),
    /// Its body ended: `Ok` with END_STREAM, `Err` reset or broken; after these bytes.
    Ended {
        body: Vec<u8>,
        end: Result<(), String>,
    },
}

/// An h2c backend (the `h2` crate, no gRPC library) that reports each request stream
/// when it opens and when its body ends, and answers a complete one with a trailers-only
/// gRPC OK.
async fn spawn_recording_backend() -> (SocketAddr, mpsc::UnboundedReceiver<Upstream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, streams) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let (parts, mut body) = request.into_parts();
                    let _ = seen.send(Upstream::Opened(parts.headers));
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let mut bytes = Vec::new();
                        let end = loop {
                            match body.data().await {
                                Some(Ok(chunk)) => {
                                    let _ = body.flow_control().release_capacity(chunk.len());
                                    bytes.extend_from_slice(&chunk);
                                }
                                Some(Err(error)) => break Err(error.to_string()),
                                None => break Ok(()),
                            }
                        };
                        let complete = end.is_ok();
                        let _ = seen.send(Upstream::Ended { body: bytes, end });
                        if complete {
                            let response = http::Response::builder()
                                .header("content-type", "application/grpc")
                                .header("grpc-status", "0")
                                .body(())
                                .unwrap();
                            let _ = respond.send_response(response, true);
                        }
                    });
                }
            });
        }
    });
    (addr, streams)
}

/// Sends `head` then `rest` (a request on stream 1 whose DATA contradicts its
/// content-length) through a proxy in front of a recording backend; when `wait_between`,
/// `rest` goes only once the backend saw the stream open (or after 1 s, should the proxy
/// wait for the body). The client must get a refusal and the backend, if it saw the
/// stream at all, a reset and never its end.
async fn assert_never_completed_upstream(
    case: &str,
    build: impl FnOnce(SocketAddr) -> (Vec<u8>, Vec<u8>),
    wait_between: bool,
) {
    let _shared = no_rss_lock().await;
    /// How long a forwarded stream may take to show up at the backend.
    const FORWARD_BOUND: Duration = Duration::from_secs(1);
    let (backend, mut seen) = spawn_recording_backend().await;
    let proxy = start_proxy(&OneCluster::new(common::address_list(&[backend])).build());
    let mut conn = Conn::open(proxy.addr).await;
    let (head, rest) = build(proxy.addr);
    conn.send(&head).await.unwrap();
    let mut opened = None;
    if wait_between {
        opened = timeout(FORWARD_BOUND, seen.recv()).await.ok().flatten();
    }
    conn.send(&rest).await.unwrap();
    let outcome = conn.outcome(1, ANSWER_BOUND).await;
    if opened.is_none() {
        opened = timeout(FORWARD_BOUND, seen.recv()).await.ok().flatten();
    }
    let ended = match opened {
        Some(Upstream::Opened(_)) => Some(timeout(WAIT, seen.recv()).await.unwrap().unwrap()),
        Some(ended @ Upstream::Ended { .. }) => panic!("ended before it opened: {ended:?}"),
        None => None,
    };
    eprintln!("{case}: {outcome:?}; upstream: {ended:?}");
    assert!(refused(&outcome), "{case}: not refused: {outcome:?}");
    if let Some(ended) = ended {
        assert!(
            matches!(ended, Upstream::Ended { end: Err(_), .. }),
            "{case}: the backend got a complete request: {ended:?}"
        );
    }
    drop(conn);
    proxy.shutdown().await;
}

/// `content-length: 100` and one 10-byte DATA frame ending the stream, in one write.
#[tokio::test]
async fn content_length_longer_than_the_data_is_refused() {
    assert_never_completed_upstream(
        "content-length 100, 10 bytes of DATA",
        |addr| {
            let body = hello_message();
            assert_eq!(body.len(), 10);
            (
                request(
                    &grpc_fields(addr, &[("content-length", "100")]),
                    Some(&body),
                ),
                Vec::new(),
            )
        },
        false,
    )
    .await;
}

/// `content-length: 5` and one 10-byte DATA frame, in one write.
#[tokio::test]
async fn content_length_shorter_than_the_data_is_refused() {
    assert_never_completed_upstream(
        "content-length 5, 10 bytes of DATA",
        |addr| {
            (
                request(
                    &grpc_fields(addr, &[("content-length", "5")]),
                    Some(&hello_message()),
                ),
                Vec::new(),
            )
        },
        false,
    )
    .await;
}

/// `content-length: 100` on HEADERS; the 10-byte DATA frame ending the stream only once
/// the proxy has forwarded the head.
#[tokio::test]
async fn content_length_longer_than_data_sent_later_is_reset_upstream() {
    assert_never_completed_upstream(
        "content-length 100, 10 bytes of DATA after the head was forwarded",
        |addr| {
            let fields = grpc_fields(addr, &[("content-length", "100")]);
            (
                frame(HEADERS, END_HEADERS, 1, &block(&fields)),
                frame(DATA, END_STREAM, 1, &hello_message()),
            )
        },
        true,
    )
    .await;
}

/// `content-length: 5` on HEADERS; 10 bytes of DATA once the proxy has forwarded it.
#[tokio::test]
async fn content_length_shorter_than_data_sent_later_is_reset_upstream() {
    assert_never_completed_upstream(
        "content-length 5, 10 bytes of DATA after the head was forwarded",
        |addr| {
            let fields = grpc_fields(addr, &[("content-length", "5")]);
            (
                frame(HEADERS, END_HEADERS, 1, &block(&fields)),
                frame(DATA, END_STREAM, 1, &hello_message()),
            )
        },
        true,
    )
    .await;
}

/// A client that made one call, then floods PINGs and never reads the ACKs: the proxy
/// stops reading it (back-pressure, see `ping_flood_is_bounded`), and once the call is
/// over the connection is idle, so `idle_timeout` must close it. Its graceful close
/// queues a GOAWAY the client never reads, so the proxy drops the connection after a
/// short grace instead of holding it (and ~8 MiB of socket buffers) for as long as the
/// client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_ping_flood_is_closed_by_the_idle_timeout() {
    let _rss = rss_lock().await;
    let (_backend, proxy) = proxy_with("idle_timeout = \"1s\"").await;
    let mut conn = Conn::open(proxy.addr).await;
    // One call first, so the first-request deadline is out of the way.
    conn.send(&request(
        &grpc_fields(proxy.addr, &[]),
        Some(&hello_message()),
    ))
    .await
    .unwrap();
    assert_eq!(conn.outcome(1, WAIT).await, Outcome::Response(Some(200)));
    let unit = repeated(&frame(PING, 0, 0, b"pingpong"), 4096);
    let (progress, _sent) = watch::channel(0u64);
    let flooded = flood(&mut conn.write, &unit, FLOOD_BYTES, progress).await;
    assert_eq!(flooded.end, FloodEnd::Stalled, "{flooded:?}");
    // Go on writing, never reading: once the proxy closes the connection, a write fails.
    let bound = Duration::from_secs(5);
    let closed = timeout(bound, async {
        let mut bytes = flooded.unwritten.clone();
        while conn.write.write_all(&bytes).await.is_ok() {
            bytes.clone_from(&unit);
        }
    })
    .await
    .is_ok();
    assert!(
        closed,
        "the stalled connection was still open {bound:?} after the flood, with idle_timeout 1 s"
    );
    drop(conn);
    proxy.shutdown().await;
}
