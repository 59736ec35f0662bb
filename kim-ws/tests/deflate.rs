//! permessage-deflate over real sockets on 127.0.0.1: negotiation as browsers offer it, messages
//! compressed by another implementation (flate2's miniz_oxide) read by kim and the other way
//! round, fragments, declined offers, decompression bombs, broken data, context takeover, and
//! a room publish compressed once for its members.

use std::time::Duration;

use bytes::Bytes;
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress};
use kim_client::ClientOptions;
use kim_core::{
    Channel, DefaultServer, Frame, MessageListener, OpCode, ServerHandle, ServerOptions,
};
use kim_ws::internals::encode_frame;
use kim_ws::{Compression, WsUpgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROMPT: Duration = Duration::from_secs(5);
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const CHROME_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Echoes every message; `join` joins room `r`; `pub <text>` publishes `<text>` to it.
struct Listener;

impl MessageListener for Listener {
    async fn receive(&self, agent: &Channel, m: Frame) {
        if &m.payload[..] == b"join" {
            agent.join("r").unwrap();
            let _ = agent.push_frame(Frame::text("joined"));
        } else if let Some(text) = m.payload.strip_prefix(b"pub ") {
            let frame = Frame::new(m.op, Bytes::copy_from_slice(text));
            agent.publish("r", frame).unwrap();
        } else {
            let _ = agent.push_frame(m);
        }
    }
}

async fn server(compression: Option<Compression>, max_message: usize) -> (ServerHandle, String) {
    let mut upgrader = WsUpgrader::new();
    if let Some(c) = compression {
        upgrader = upgrader.with_compression(c);
    }
    let options = ServerOptions::builder()
        .max_message_size(max_message)
        .build()
        .unwrap();
    let handle = DefaultServer::new(upgrader, Listener)
        .with_options(options)
        .start("127.0.0.1:0")
        .await
        .expect("server starts");
    let addr = handle.local_addr().to_string();
    (handle, addr)
}

/// A chat message as an IM app sends it.
fn chat_json(i: usize) -> String {
    format!(
        r#"{{"type":"message","room":"general","from":"alice","to":"bob","id":{i},"text":"see you at the standup tomorrow, I will bring the notes from today's review","ts":1764720000{i}}}"#
    )
}

/// Raw deflate with a sync flush, its tail stripped: what a browser sends.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Inflates one message with `d` (a fresh one, or one that keeps the server's context).
fn inflate(d: &mut Decompress, data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// Inflates one message with a window of `2^bits` bytes, which fails on any match reaching
/// further back: proof that the sender kept to that window.
fn inflate_within(bits: u8, data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut d = zlib_rs::Inflate::new(false, bits);
    let mut out = vec![0u8; 1 << 20];
    d.decompress(&input, &mut out, zlib_rs::InflateFlush::SyncFlush)
        .expect("inflates within the window");
    out.truncate(d.total_out() as usize);
    out
}

/// A raw websocket client that sees the bytes on the wire.
struct Raw {
    sock: TcpStream,
    buf: Vec<u8>,
    /// The response's Sec-WebSocket-Extensions, if any.
    extensions: Option<String>,
}

impl Raw {
    async fn connect(addr: &str, offer: Option<&str>) -> Raw {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        sock.set_nodelay(true).unwrap();
        let mut req = String::from(
            "GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        );
        if let Some(o) = offer {
            req.push_str(&format!("Sec-WebSocket-Extensions: {o}\r\n"));
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Raw {
            sock,
            buf: Vec::new(),
            extensions: None,
        };
        let end = loop {
            if let Some(p) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            raw.fill().await;
        };
        let head = String::from_utf8(raw.buf.drain(..end).collect()).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        raw.extensions = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
            .map(str::to_string);
        raw
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(PROMPT, self.sock.read(&mut chunk))
            .await
            .expect("the server answers in time")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    async fn send(&mut self, first: u8, payload: &[u8]) {
        let frame = encode_frame(first, payload, Some(MASK));
        self.sock.write_all(&frame).await.unwrap();
    }

    /// The next frame: its first byte (FIN, RSV bits, opcode) and payload.
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let first = self.buf[0];
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return (first, payload);
                }
            }
            self.fill().await;
        }
    }

    /// The close code the server sent.
    async fn close_code(&mut self) -> u16 {
        let (first, payload) = self.frame().await;
        assert_eq!(first, 0x88, "a close frame");
        u16::from_be_bytes([payload[0], payload[1]])
    }
}

#[tokio::test]
async fn a_browser_offer_is_accepted_and_messages_travel_compressed() {
    let (_h, addr) = server(Some(Compression::new()), 1 << 20).await;
    let mut c = Raw::connect(&addr, Some(CHROME_OFFER)).await;
    assert_eq!(
        c.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let history: String = (0..20).map(chat_json).collect::<Vec<_>>().join("\n");
    // A compressed message is read, and the echo comes back compressed.
    let packed = deflate(history.as_bytes());
    c.send(0xc1, &packed).await;
    let (first, payload) = c.frame().await;
    assert_eq!(first, 0xc1, "text, FIN and RSV1");
    assert!(
        payload.len() < history.len() / 4,
        "{} of {}",
        payload.len(),
        history.len()
    );
    let mut fresh = Decompress::new(false);
    assert_eq!(inflate(&mut fresh, &payload), history.as_bytes());
    // Under the threshold, the echo goes uncompressed, whichever way it came.
    c.send(0xc1, &deflate(b"Hello")).await;
    assert_eq!(c.frame().await, (0x81, b"Hello".to_vec()));
    c.send(0x81, b"Hello").await;
    assert_eq!(c.frame().await, (0x81, b"Hello".to_vec()));
    // A compressed message in three fragments, a ping between them: RSV1 on the first only.
    let third = packed.len() / 3;
    c.send(0x41, &packed[..third]).await;
    c.send(0x89, b"still there?").await;
    c.send(0x00, &packed[third..2 * third]).await;
    c.send(0x80, &packed[2 * third..]).await;
    assert_eq!(c.frame().await, (0x8a, b"still there?".to_vec()));
    let (first, payload) = c.frame().await;
    assert_eq!(first, 0xc1);
    assert_eq!(
        inflate(&mut Decompress::new(false), &payload),
        history.as_bytes()
    );
    // Binary too.
    let bin: Vec<u8> = history.bytes().rev().collect();
    c.send(0xc2, &deflate(&bin)).await;
    let (first, payload) = c.frame().await;
    assert_eq!(first, 0xc2);
    assert_eq!(inflate(&mut Decompress::new(false), &payload), bin);
}

#[tokio::test]
async fn offers_kim_cannot_honour_are_declined_and_the_connection_goes_on() {
    let (_h, addr) = server(Some(Compression::new()), 1 << 20).await;
    for offer in [
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; mystery_param",
        "x-webkit-deflate-frame",
    ] {
        let mut c = Raw::connect(&addr, Some(offer)).await;
        assert_eq!(c.extensions, None, "{offer}");
        c.send(0x81, b"plain").await;
        assert_eq!(c.frame().await, (0x81, b"plain".to_vec()));
        // Without an agreement RSV1 means nothing: the connection fails with 1002.
        c.send(0xc1, &deflate(b"plain")).await;
        assert_eq!(c.close_code().await, 1002, "{offer}");
    }
    // A window limit kim can honour is answered and kept to.
    let mut c = Raw::connect(&addr, Some("permessage-deflate; server_max_window_bits=10")).await;
    assert!(c
        .extensions
        .as_deref()
        .unwrap()
        .ends_with("server_max_window_bits=10"));
    let text = chat_json(1).repeat(40);
    c.send(0x81, text.as_bytes()).await;
    let (first, payload) = c.frame().await;
    assert_eq!(first, 0xc1);
    assert_eq!(inflate_within(10, &payload), text.as_bytes());
    // A server without compression answers no offer.
    let (_h2, plain) = server(None, 1 << 20).await;
    assert_eq!(
        Raw::connect(&plain, Some(CHROME_OFFER)).await.extensions,
        None
    );
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_with_1009_and_disturbs_no_one() {
    let (_h, addr) = server(Some(Compression::new()), 64 * 1024).await;
    let mut bystander = Raw::connect(&addr, Some(CHROME_OFFER)).await;
    let mut bomber = Raw::connect(&addr, Some(CHROME_OFFER)).await;
    // 16 MiB of zeros is about 16 KiB compressed: under the 64 KiB frame limit.
    let packed = deflate(&vec![0u8; 16 << 20]);
    assert!(packed.len() < 64 * 1024, "{}", packed.len());
    bomber.send(0xc2, &packed).await;
    assert_eq!(bomber.close_code().await, 1009);
    // The other connection is served as before.
    let text = chat_json(9).repeat(10);
    bystander.send(0xc1, &deflate(text.as_bytes())).await;
    let (first, payload) = bystander.frame().await;
    assert_eq!(first, 0xc1);
    assert_eq!(
        inflate(&mut Decompress::new(false), &payload),
        text.as_bytes()
    );
    // Just under the limit is fine.
    let mut c = Raw::connect(&addr, Some(CHROME_OFFER)).await;
    c.send(0xc2, &deflate(&vec![7u8; 64 * 1024])).await;
    let (first, payload) = c.frame().await;
    assert_eq!(first, 0xc2);
    assert_eq!(
        inflate(&mut Decompress::new(false), &payload),
        vec![7u8; 64 * 1024]
    );
}

#[tokio::test]
async fn broken_compressed_data_and_misplaced_rsv1_fail_the_connection() {
    let (_h, addr) = server(Some(Compression::new()), 1 << 20).await;
    let hello = deflate(b"Hello");
    /// Frames to send (first byte, payload) and the close code they earn.
    type Case = (Vec<(u8, Vec<u8>)>, u16);
    let cases: Vec<Case> = vec![
        // Block type 3 does not exist.
        (vec![(0xc1, vec![0xff, 0xff, 0xff])], 1007),
        // Text that inflates to bytes that are not UTF-8.
        (vec![(0xc1, deflate(&[b'a', 0xff, 0xfe]))], 1007),
        // RSV1 is for a message's first frame, not a continuation or a control frame.
        (
            vec![(0x41, hello[..2].to_vec()), (0xc0, hello[2..].to_vec())],
            1002,
        ),
        (vec![(0xc9, b"ping".to_vec())], 1002),
    ];
    for (frames, code) in cases {
        let mut c = Raw::connect(&addr, Some(CHROME_OFFER)).await;
        for (first, payload) in &frames {
            c.send(*first, payload).await;
        }
        assert_eq!(c.close_code().await, code, "{frames:?}");
    }
}

#[tokio::test]
async fn kims_client_and_server_agree_with_and_without_context_takeover() {
    let opts = ClientOptions::default();
    for compression in [
        Compression::new(),
        Compression::new().with_threshold(0).with_level(1),
        Compression::new().with_context_takeover(9, 1),
        Compression::new().with_context_takeover(15, 8),
    ] {
        let (_h, addr) = server(Some(compression), 4 << 20).await;
        let mut client = kim_ws::connect_compressed(&addr, &[], &Compression::new(), &opts)
            .await
            .unwrap();
        for len in [0usize, 1, 1023, 1024, 70_000, 1 << 20] {
            let text: String = chat_json(len).chars().cycle().take(len).collect();
            client.send(Frame::text(text.clone())).await.unwrap();
            let echo = client.read().await.unwrap();
            assert_eq!(
                (echo.op, &echo.payload[..]),
                (OpCode::Text, text.as_bytes())
            );
        }
        // Repeated messages, where a kept context pays.
        for i in 0..50 {
            let text = chat_json(i);
            client.send(Frame::text(text.clone())).await.unwrap();
            let echo = client.read().await.unwrap();
            assert_eq!(&echo.payload[..], text.as_bytes(), "{compression:?}");
        }
    }
}

#[tokio::test]
async fn with_context_takeover_repeated_messages_shrink_on_the_wire() {
    let c = Compression::new()
        .with_context_takeover(11, 2)
        .with_threshold(0);
    let (_h, addr) = server(Some(c), 1 << 20).await;
    let mut raw = Raw::connect(&addr, Some(CHROME_OFFER)).await;
    assert_eq!(
        raw.extensions.as_deref(),
        Some("permessage-deflate; client_no_context_takeover")
    );
    // One decompressor for the whole connection, as the server's context is kept.
    let mut kept = Decompress::new(false);
    let mut sizes = Vec::new();
    for i in 0..5 {
        let text = chat_json(i);
        raw.send(0xc1, &deflate(text.as_bytes())).await;
        let (first, payload) = raw.frame().await;
        assert_eq!(first, 0xc1);
        sizes.push(payload.len());
        assert_eq!(inflate(&mut kept, &payload), text.as_bytes());
    }
    assert!(
        sizes[4] * 3 < sizes[0],
        "later messages reuse the window: {sizes:?}"
    );
    // A client that asks for no context takeover gets none.
    let offer = "permessage-deflate; server_no_context_takeover";
    let raw = Raw::connect(&addr, Some(offer)).await;
    let agreed = raw.extensions.unwrap();
    assert!(agreed.contains("server_no_context_takeover"), "{agreed}");
}

#[tokio::test]
async fn a_room_publish_reaches_compressed_and_plain_members() {
    let (_h, addr) = server(Some(Compression::new()), 1 << 20).await;
    let mut a = Raw::connect(&addr, Some(CHROME_OFFER)).await;
    let mut b = Raw::connect(&addr, Some(CHROME_OFFER)).await;
    let mut plain = Raw::connect(&addr, None).await;
    let mut narrow =
        Raw::connect(&addr, Some("permessage-deflate; server_max_window_bits=9")).await;
    for c in [&mut a, &mut b, &mut plain, &mut narrow] {
        c.send(0x81, b"join").await;
        assert_eq!(c.frame().await, (0x81, b"joined".to_vec()));
    }
    let text = (0..10).map(chat_json).collect::<Vec<_>>().join("\n");
    plain.send(0x81, format!("pub {text}").as_bytes()).await;
    let (fa, pa) = a.frame().await;
    let (fb, pb) = b.frame().await;
    assert_eq!((fa, fb), (0xc1, 0xc1));
    assert_eq!(pa, pb, "members with the same settings get the same bytes");
    assert_eq!(inflate(&mut Decompress::new(false), &pa), text.as_bytes());
    let (fp, pp) = plain.frame().await;
    assert_eq!((fp, &pp[..]), (0x81, text.as_bytes()));
    let (fn_, pn) = narrow.frame().await;
    assert_eq!(fn_, 0xc1);
    assert_eq!(inflate_within(9, &pn), text.as_bytes());
    // Short publishes go uncompressed to everyone.
    plain.send(0x81, b"pub hi").await;
    for c in [&mut a, &mut b, &mut plain, &mut narrow] {
        assert_eq!(c.frame().await, (0x81, b"hi".to_vec()));
    }
}
