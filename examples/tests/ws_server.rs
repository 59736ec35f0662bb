//! The DefaultServer over websocket: the upgrade parsed off the raw stream, frames checked and
//! reassembled, the mock protocol end to end. Real clients and raw sockets on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use kim_client::ClientError;
use kim_core::{
    Accepted, Acceptor, CloseReason, DefaultServer, Frame, FrameReaderExt, LoginConn, OpCode,
    Reject,
};
use kim_examples::MockListener;
use kim_io::ReadBuffer;
use kim_ws::{Refusal, Role, WsStream, WsUpgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
    )
}

/// A masked client frame, built by hand so that tests can send anything.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    kim_ws::internals::encode_frame(first, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// A raw websocket connection: the handshake done by hand, then a frame reader for what the
/// server sends and the write half for whatever the test wants to send.
struct Raw {
    reader: WsStream<OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

async fn raw_ws(addr: &str, first_bytes: &[u8]) -> Raw {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut out = upgrade_request("/", "").into_bytes();
    out.extend_from_slice(first_bytes);
    wr.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let end = loop {
        let n = tokio::time::timeout(EVENT, rd.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed during the handshake");
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let response = String::from_utf8_lossy(&buf[..end]);
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    let rest = buf.split_off(end);
    Raw {
        reader: WsStream::new(
            rd,
            Role::Client,
            1 << 24,
            ReadBuffer::with_bytes(4096, rest),
        ),
        writer: wr,
    }
}

impl Raw {
    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(EVENT, self.reader.read_frame())
            .await
            .expect("a frame within the event bound")
            .expect("a well-formed server frame")
    }

    /// Expects a close frame with `code`, then the end of the stream once we answer it.
    async fn expect_close(&mut self, code: u16, text: &str) {
        let f = self.next().await.expect("a close frame");
        assert_eq!(f.op, OpCode::Close, "{f:?}");
        let r = kim_ws::decode_close(&f.payload);
        assert_eq!(r.code, code, "{r:?}");
        assert!(r.reason.contains(text), "{r:?} lacks {text:?}");
        let _ = self.writer.write_all(&masked(0x88, &f.payload)).await;
        assert!(
            self.next().await.is_none(),
            "the server closes after the handshake"
        );
    }
}

/// Sends raw bytes and returns the whole HTTP response.
async fn http(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(EVENT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn ws_server() -> Server {
    start_on(WsUpgrader::new(), options().build().unwrap()).await
}

#[tokio::test]
async fn mock_protocol_over_websocket() {
    let mut s = ws_server().await;
    let mut alice = login_ws(&s.addr, "alice").await;
    let mut bob = login_ws(&s.addr, "bob").await;
    alice.send_text("hi").await.unwrap();
    let f = read(&mut alice).await.unwrap();
    assert_eq!((f.op, &f.payload[..]), (OpCode::Text, &b"hi"[..]));
    alice.send_binary(&b"@bob hello"[..]).await.unwrap();
    let f = read(&mut bob).await.unwrap();
    assert_eq!(
        (f.op, &f.payload[..]),
        (OpCode::Binary, &b"alice: hello"[..])
    );
    bob.send_text("@nobody x").await.unwrap();
    assert_eq!(
        &read(&mut bob).await.unwrap().payload[..],
        b"offline nobody"
    );

    // Refusals are close frames 1008 with the reason.
    let mut dup = kim_ws::connect(&s.addr, &no_heartbeat()).await.unwrap();
    match dup.login("alice").await {
        Err(ClientError::Closed(r)) => {
            assert_eq!(
                (r.code, r.reason.as_ref()),
                (1008, "channel id is repeated")
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut bad = kim_ws::connect(&s.addr, &no_heartbeat()).await.unwrap();
    match bad.login("").await {
        Err(ClientError::Closed(r)) => {
            assert_eq!(r.code, 1008);
            assert!(r.reason.contains("invalid user id"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Close handshake started by the client: the server answers with the same code.
    let answer = alice.close().await.unwrap();
    assert_eq!(answer.map(|r| r.code), Some(1000));
    assert_eq!(s.next_disconnect().await.as_str(), "alice");
    assert_eq!(s.disconnects_of("alice"), 1);
}

#[tokio::test]
async fn close_handshake_started_by_the_server() {
    let mut s = start_on(
        WsUpgrader::new(),
        options()
            .close_wait(Duration::from_secs(20))
            .build()
            .unwrap(),
    )
    .await;
    let mut c = login_ws(&s.addr, "carol").await;
    let started = Instant::now();
    s.handle
        .channel("carol")
        .unwrap()
        .close(CloseReason::normal("bye now"));
    let r = expect_close(&mut c, "bye now").await;
    assert_eq!(r.code, 1000);
    // The client's answer ends the channel at once, not at close_wait.
    assert_eq!(s.next_disconnect().await.as_str(), "carol");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn login_wait_applies_over_websocket() {
    let s = start_on(
        WsUpgrader::new(),
        options()
            .login_wait(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .await;
    let mut raw = raw_ws(&s.addr, b"").await;
    raw.expect_close(1008, "login timeout").await;
}

#[tokio::test]
async fn each_invalid_upgrade_gets_its_status() {
    let s = ws_server().await;
    let good = upgrade_request("/", "");
    let cases: Vec<(String, &str, &str)> = vec![
        (good.replace("GET", "POST"), "400", "GET"),
        (
            good.replace("HTTP/1.1\r\n", "HTTP/1.0\r\n"),
            "400",
            "HTTP/1.1",
        ),
        (good.replace("Host: test\r\n", ""), "400", "Host"),
        (
            good.replace("Upgrade: websocket", "Upgrade: h2c"),
            "400",
            "Upgrade",
        ),
        (
            good.replace("Connection: Upgrade", "Connection: close"),
            "400",
            "Connection",
        ),
        (good.replace("Version: 13", "Version: 7"), "426", "13"),
        (good.replace(KEY, "not base64!"), "400", "base64"),
        (good.replace(KEY, "c2hvcnQ="), "400", "16 bytes"),
        (
            "\x16\x03\x01\x02\x00\x01\x00\r\n\r\n".to_string(),
            "400",
            "malformed",
        ),
        (
            good.replace(
                "Host: test\r\n",
                &format!("Host: test\r\nX-Big: {}\r\n", "a".repeat(9000)),
            ),
            "431",
            "8192",
        ),
    ];
    for (req, status, text) in cases {
        let resp = http(&s.addr, req.as_bytes()).await;
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req:?} -> {resp}"
        );
        assert!(resp.contains(text), "{resp} lacks {text:?}");
        if status == "426" {
            assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"), "{resp}");
        }
    }
    // None of that disturbed a logged-in client.
    let mut c = login_ws(&s.addr, "calm").await;
    c.send_text("ok?").await.unwrap();
    assert_eq!(&read(&mut c).await.unwrap().payload[..], b"ok?");
}

#[tokio::test]
async fn a_trickling_upgrade_is_dropped_at_login_wait_while_others_connect() {
    let login_wait = Duration::from_millis(500);
    let s = start_on(
        WsUpgrader::new(),
        options().login_wait(login_wait).build().unwrap(),
    )
    .await;
    let addr = s.addr.clone();
    let trickler = tokio::spawn(async move {
        let started = Instant::now();
        let mut sock = TcpStream::connect(&addr).await.unwrap();
        for b in upgrade_request("/", "").bytes() {
            if sock.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest).await;
        (started.elapsed(), rest)
    });
    for i in 0..20 {
        let mut c = login_ws(&s.addr, &format!("fast-{i}")).await;
        c.send_text("quick").await.unwrap();
        assert_eq!(&read(&mut c).await.unwrap().payload[..], b"quick");
    }
    let (elapsed, rest) = tokio::time::timeout(EVENT, trickler)
        .await
        .unwrap()
        .unwrap();
    assert!(elapsed >= login_wait, "{elapsed:?}");
    assert!(elapsed < login_wait * 6, "{elapsed:?}");
    assert!(rest.is_empty(), "no response to an unfinished request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_handshakes() {
    let s = ws_server().await;
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let addr = s.addr.clone();
            tokio::spawn(async move {
                let mut c = login_ws(&addr, &format!("u{i}")).await;
                c.send_text(format!("m{i}")).await.unwrap();
                let f = read(&mut c).await.unwrap();
                assert_eq!(f.payload, format!("m{i}").as_bytes());
                c
            })
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    assert_eq!(s.handle.channel_count(), 1000);
    assert_eq!(s.handle.stats().logins, 1000);
}

#[tokio::test]
async fn a_pipelined_first_frame_is_kept() {
    let s = ws_server().await;
    let mut first = masked(0x81, b"pipelined");
    first.extend(masked(0x81, b"and a message"));
    let mut raw = raw_ws(&s.addr, &first).await;
    let f = raw.next().await.unwrap();
    assert_eq!((f.op, &f.payload[..]), (OpCode::Binary, &b"ok"[..]));
    let f = raw.next().await.unwrap();
    assert_eq!(&f.payload[..], b"and a message");
    assert!(s.handle.channel("pipelined").is_some());
}

#[tokio::test]
async fn pings_are_answered_between_fragments() {
    let s = ws_server().await;
    let mut raw = raw_ws(&s.addr, &masked(0x81, b"pinger")).await;
    assert_eq!(&raw.next().await.unwrap().payload[..], b"ok");
    let mut bytes = masked(0x01, b"frag");
    bytes.extend(masked(0x89, b"are you there"));
    bytes.extend(masked(0x80, "mented €".as_bytes()));
    raw.send(&bytes).await;
    let f = raw.next().await.unwrap();
    assert_eq!(
        (f.op, &f.payload[..]),
        (OpCode::Pong, &b"are you there"[..])
    );
    let f = raw.next().await.unwrap();
    assert_eq!(
        (f.op, &f.payload[..]),
        (OpCode::Text, "fragmented €".as_bytes())
    );
}

#[tokio::test]
async fn invalid_utf8_is_closed_with_1007() {
    let mut s = ws_server().await;
    let mut neighbour = login_ws(&s.addr, "neighbour").await;

    let mut raw = raw_ws(&s.addr, &masked(0x81, b"u1")).await;
    assert_eq!(&raw.next().await.unwrap().payload[..], b"ok");
    raw.send(&masked(0x81, &[b'a', 0xc3, 0x28])).await;
    raw.expect_close(1007, "UTF-8").await;
    assert_eq!(s.next_disconnect().await.as_str(), "u1");

    // Across fragments: the bad byte fails its fragment, before the message ends.
    let mut raw = raw_ws(&s.addr, &masked(0x81, b"u2")).await;
    assert_eq!(&raw.next().await.unwrap().payload[..], b"ok");
    let euro = "€".as_bytes();
    let mut bytes = masked(0x01, &euro[..2]);
    bytes.extend(masked(0x00, &[euro[2], 0xff]));
    raw.send(&bytes).await;
    raw.expect_close(1007, "UTF-8").await;

    neighbour.send_text("unbothered").await.unwrap();
    assert_eq!(
        &read(&mut neighbour).await.unwrap().payload[..],
        b"unbothered"
    );
}

#[tokio::test]
async fn before_login_frames_are_held_to_the_login_limit() {
    let s = start_on(
        WsUpgrader::new(),
        options()
            .max_login_message_size(100)
            .max_message_size(1 << 20)
            .build()
            .unwrap(),
    )
    .await;
    // A login frame over the login limit is refused from its header...
    let mut header = vec![0x81, 0x80 | 126];
    header.extend_from_slice(&101u16.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let mut raw = raw_ws(&s.addr, &header).await;
    raw.expect_close(1009, "exceeds the limit of 100").await;
    // ...and once logged in, the full limit applies.
    let mut raw = raw_ws(&s.addr, &masked(0x81, b"after")).await;
    assert_eq!(&raw.next().await.unwrap().payload[..], b"ok");
    raw.send(&masked(0x82, &[7u8; 50_000])).await;
    assert_eq!(raw.next().await.unwrap().payload.len(), 50_000);
}

#[tokio::test]
async fn oversized_frames_and_messages_are_closed_with_1009() {
    let s = start_on(
        WsUpgrader::new(),
        options().max_message_size(1024).build().unwrap(),
    )
    .await;
    let mut raw = raw_ws(&s.addr, &masked(0x81, b"big1")).await;
    assert_eq!(&raw.next().await.unwrap().payload[..], b"ok");
    // A header announcing 2^40 bytes: refused from the header alone.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    raw.send(&header).await;
    raw.expect_close(1009, "exceeds the limit of 1024").await;

    let mut raw = raw_ws(&s.addr, &masked(0x81, b"big2")).await;
    assert_eq!(&raw.next().await.unwrap().payload[..], b"ok");
    let mut bytes = masked(0x02, &[1u8; 600]);
    bytes.extend(masked(0x80, &[2u8; 600]));
    raw.send(&bytes).await;
    raw.expect_close(1009, "message of more than 1200 bytes")
        .await;

    // Exactly the limit, in two fragments, is fine.
    let mut raw = raw_ws(&s.addr, &masked(0x81, b"fits")).await;
    assert_eq!(&raw.next().await.unwrap().payload[..], b"ok");
    let mut bytes = masked(0x02, &[1u8; 512]);
    bytes.extend(masked(0x80, &[2u8; 512]));
    raw.send(&bytes).await;
    assert_eq!(raw.next().await.unwrap().payload.len(), 1024);
}

#[tokio::test]
async fn protocol_errors_are_closed_with_1002() {
    let s = ws_server().await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x81, 0x02, b'h', b'i'], "not masked"),
        (masked(0x81 | 0x40, b"x"), "reserved bits"),
        (masked(0x83, b"x"), "reserved opcode 3"),
        (masked(0x09, b"x"), "fragmented control frame"),
        (masked(0x89, &[0u8; 126]), "over 125"),
        (masked(0x80, b"x"), "continuation frame without"),
        (
            [masked(0x01, b"a"), masked(0x81, b"b")].concat(),
            "new message before",
        ),
        (masked(0x88, &[0x03, 0xed]), "invalid close code 1005"),
        (masked(0x88, &[0x03]), "1-byte payload"),
    ];
    for (i, (bytes, text)) in cases.into_iter().enumerate() {
        let id = format!("p{i}");
        let mut raw = raw_ws(&s.addr, &masked(0x81, id.as_bytes())).await;
        assert_eq!(&raw.next().await.unwrap().payload[..], b"ok");
        raw.send(&bytes).await;
        raw.expect_close(1002, text).await;
    }
}

/// An acceptor that logs in from the upgrade request: `?uid=` in the query, and a cookie.
struct QueryLogin;

impl Acceptor for QueryLogin {
    async fn accept(&self, login: &mut LoginConn<'_>) -> Result<Accepted, Reject> {
        let hs = login
            .handshake()
            .ok_or_else(|| Reject::new("no handshake"))?;
        let uid = hs.query("uid").ok_or_else(|| Reject::new("no uid"))?;
        let meta = kim_core::Meta::new()
            .with("cookie", hs.header("cookie").unwrap_or(""))
            .with("protocol", hs.protocol.clone().unwrap_or_default());
        Ok(Accepted::new(uid)
            .with_meta(meta)
            .with_reply(Frame::text(format!("hello {uid}"))))
    }
}

#[tokio::test]
async fn the_hook_and_the_acceptor_see_the_request() {
    let upgrader = WsUpgrader::new()
        .with_protocols(["kim.v2", "kim.v1"])
        .with_hook(|req| {
            if req.path.starts_with("/im") {
                Ok(())
            } else {
                Err(Refusal::new(404, "no such endpoint"))
            }
        });
    let handle = DefaultServer::new(upgrader, MockListener)
        .with_acceptor(QueryLogin)
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let addr = handle.local_addr().to_string();

    let resp = http(&addr, upgrade_request("/other", "").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 404 "), "{resp}");
    assert!(resp.ends_with("no such endpoint"), "{resp}");

    let url = format!("ws://{addr}/im?uid=dave");
    let mut c = kim_ws::connect_with(
        &url,
        &[
            ("Cookie", "session=s1"),
            ("Sec-WebSocket-Protocol", "kim.v1, kim.v2"),
        ],
        &no_heartbeat(),
    )
    .await
    .unwrap();
    let hello = read(&mut c).await.unwrap();
    assert_eq!(&hello.payload[..], b"hello dave");
    let chan = handle.channel("dave").unwrap();
    assert_eq!(chan.meta().get("cookie"), Some("session=s1"));
    assert_eq!(
        chan.meta().get("protocol"),
        Some("kim.v2"),
        "the server's preference"
    );

    let mut no_uid = kim_ws::connect(&format!("ws://{addr}/im"), &no_heartbeat())
        .await
        .unwrap();
    match read(&mut no_uid).await {
        Err(ClientError::Closed(r)) => assert_eq!((r.code, r.reason.as_ref()), (1008, "no uid")),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_large_message_round_trips() {
    let s = ws_server().await;
    let mut c = login_ws(&s.addr, "large").await;
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    c.send_binary(payload.clone()).await.unwrap();
    let f = read(&mut c).await.unwrap();
    assert_eq!(f.payload.len(), payload.len());
    assert!(f.payload == payload);
}
