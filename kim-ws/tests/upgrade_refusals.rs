//! Upgrade requests that can never succeed are answered with a 400 at once, over a real
//! socket on 127.0.0.1, long before the login deadline; a valid request that arrives in many
//! small pieces is still upgraded.

use std::time::{Duration, Instant};

use kim_core::{Channel, DefaultServer, Frame, MessageListener, ServerHandle, ServerOptions};
use kim_ws::WsUpgrader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far longer than any answer below may take: a test that waits for it has failed.
const LOGIN_WAIT: Duration = Duration::from_secs(20);
/// How long an answer may take.
const PROMPT: Duration = Duration::from_secs(5);

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

struct Echo;

impl MessageListener for Echo {
    async fn receive(&self, agent: &Channel, m: Frame) {
        let _ = agent.push_frame(m);
    }
}

async fn server() -> (ServerHandle, String) {
    let options = ServerOptions::builder()
        .login_wait(LOGIN_WAIT)
        .build()
        .unwrap();
    let handle = DefaultServer::new(WsUpgrader::new(), Echo)
        .with_options(options)
        .start("127.0.0.1:0")
        .await
        .expect("server starts");
    let addr = handle.local_addr().to_string();
    (handle, addr)
}

fn request(lines: &[&str]) -> String {
    let mut r = String::new();
    for l in lines {
        r.push_str(l);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

fn good_lines() -> Vec<String> {
    vec![
        "GET /im HTTP/1.1".into(),
        "Host: test".into(),
        "Upgrade: websocket".into(),
        "Connection: Upgrade".into(),
        "Sec-WebSocket-Version: 13".into(),
        format!("Sec-WebSocket-Key: {KEY}"),
    ]
}

/// Sends `pieces` (pausing between them) and reads until the server closes or `PROMPT` runs
/// out; returns what was read and how long the answer took.
async fn exchange(addr: &str, pieces: &[&[u8]]) -> (String, Duration) {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.set_nodelay(true).unwrap();
    let started = Instant::now();
    for (i, p) in pieces.iter().enumerate() {
        sock.write_all(p).await.unwrap();
        if i + 1 < pieces.len() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(PROMPT, async {
        let mut chunk = [0u8; 4096];
        loop {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
            // A 101 is not followed by a close: stop once its head is in.
            if out.starts_with(b"HTTP/1.1 101") && out.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        read.is_ok(),
        "no answer within {PROMPT:?} (read so far: {text:?})"
    );
    (text, started.elapsed())
}

fn assert_refused(resp: &str, reason: &str) {
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    assert!(resp.contains(reason), "{resp} lacks {reason:?}");
}

#[tokio::test]
async fn a_second_sec_websocket_key_is_refused() {
    let (_h, addr) = server().await;
    let mut lines = good_lines();
    lines.push("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==".into());
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (resp, _) = exchange(&addr, &[request(&lines).as_bytes()]).await;
    assert_refused(&resp, "Sec-WebSocket-Key header given more than once");
}

#[tokio::test]
async fn a_second_host_or_version_is_refused() {
    let (_h, addr) = server().await;
    for (extra, name) in [
        ("Host: other", "Host"),
        ("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version"),
    ] {
        let mut lines = good_lines();
        lines.insert(2, extra.into());
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (resp, _) = exchange(&addr, &[request(&lines).as_bytes()]).await;
        assert_refused(&resp, &format!("{name} header given more than once"));
    }
}

#[tokio::test]
async fn lines_ending_in_lf_alone_are_refused_at_once() {
    let (_h, addr) = server().await;
    let lines = good_lines();
    let lf: String = lines.iter().map(|l| format!("{l}\n")).collect::<String>() + "\n";
    let (resp, took) = exchange(&addr, &[lf.as_bytes()]).await;
    assert_refused(&resp, "CRLF");
    assert!(took < PROMPT, "{took:?}");
    // Refused from the first bare LF, without waiting for the rest.
    let first_line = format!("{}\n", lines[0]);
    let (resp, _) = exchange(&addr, &[first_line.as_bytes()]).await;
    assert_refused(&resp, "CRLF");
}

#[tokio::test]
async fn a_tls_client_hello_is_refused_at_once() {
    let (_h, addr) = server().await;
    // The start of a TLS 1.2/1.3 ClientHello record: no blank line will ever follow.
    let hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03, 0x03, 0x5a, 0x10, 0x0d, 0x0a,
    ];
    let (resp, took) = exchange(&addr, &[hello]).await;
    assert_refused(&resp, "this port speaks plain HTTP, not TLS");
    assert!(took < PROMPT, "{took:?}");
}

#[tokio::test]
async fn a_valid_request_in_many_small_pieces_is_upgraded() {
    let (_h, addr) = server().await;
    let lines = good_lines();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let req = request(&lines);
    // Pieces that split the CRLFs, the method and a header name.
    let pieces: Vec<&[u8]> = req.as_bytes().chunks(3).collect();
    let (resp, _) = exchange(&addr, &pieces).await;
    assert!(resp.starts_with("HTTP/1.1 101 "), "{resp}");
    assert!(
        resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{resp}"
    );
}
