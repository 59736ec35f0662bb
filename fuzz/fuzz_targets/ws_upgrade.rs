//! The websocket upgrade (`kim_ws::WsUpgrader` through `kim_core::Upgrader::upgrade`) over
//! an in-memory stream of fuzz-chosen bytes, delivered in reads of fuzz-chosen sizes; after a
//! `101`, the frames that followed the request are read too.
//!
//! Input: one byte of configuration (bit 0: a header limit of 8 KiB or 256 bytes; bit 1: the
//! server offers a subprotocol), the read sizes (see `kim_fuzz::split_spec`), then the stream.
//!
//! Promises checked: no panic; the upgrade finishes without waiting on a stream that never
//! waits; a `101` goes only to a request whose head (up to the first blank line) is a GET of
//! HTTP/1.1 with exactly one Host, exactly one `Sec-WebSocket-Key` of 16 bytes in base64,
//! exactly one `Sec-WebSocket-Version: 13`, `Upgrade: websocket` and `Connection: upgrade`
//! (checked here by a reading of the request of our own); any other answer is a complete
//! HTTP response with a 4xx status and a body of its Content-Length; and whether the request
//! is upgraded does not depend on how its bytes were split into reads.
#![no_main]

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use kim_core::io::Generic;
use kim_core::{ConnConfig, FrameReader, FrameWriter, Upgrader};
use kim_fuzz::{noop_context, poll_ready, split_spec, Chunked, Duplex};
use kim_ws::WsUpgrader;
use libfuzzer_sys::fuzz_target;

struct Outcome {
    upgraded: bool,
    /// The subprotocol selected, when upgraded.
    protocol: Option<String>,
    response: Vec<u8>,
}

fn upgrade(upgrader: &WsUpgrader, stream: &[u8], sizes: Vec<usize>) -> Outcome {
    let output = Arc::new(Mutex::new(Vec::new()));
    let io = Generic(Duplex {
        input: Chunked::new(stream, sizes),
        output: output.clone(),
        shut: Arc::new(AtomicBool::new(false)),
    });
    let config = ConnConfig {
        max_message_size: 64 * 1024,
        read_buffer_size: 4096,
    };
    let result = poll_ready(Upgrader::<Generic<Duplex>>::upgrade(upgrader, io, config));
    let (upgraded, protocol) = match result {
        Ok(mut conn) => {
            let hs = conn
                .handshake
                .take()
                .expect("a websocket upgrade has a handshake");
            let _ = hs.query("token");
            // The 101 is queued in the writer and goes out with its first flush.
            let mut cx = noop_context();
            match conn.framed.poll_flush(&mut cx) {
                Poll::Ready(Ok(())) => {}
                other => panic!("flushing the 101 to a stream that never waits: {other:?}"),
            }
            // The bytes behind the request are the start of the frames.
            for _ in 0..256 {
                match conn.framed.poll_read_frame(&mut cx) {
                    Poll::Ready(Ok(Some(_))) => {}
                    Poll::Ready(_) => break,
                    Poll::Pending => panic!("pending on a stream that never waits"),
                }
            }
            (true, hs.protocol)
        }
        Err(_) => (false, None),
    };
    let response = output.lock().unwrap().clone();
    Outcome {
        upgraded,
        protocol,
        response,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// Decodes standard base64 with padding; `None` if it is not that.
fn base64(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    for (i, q) in s.chunks(4).enumerate() {
        let last = i == s.len() / 4 - 1;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = n << 6 | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// Our own reading of what a request must be for a `101`; `Err` says what it lacks.
fn must_be_upgradable(stream: &[u8]) -> Result<(), String> {
    let end = find(stream, b"\r\n\r\n").ok_or("no blank line")? + 2;
    let mut head = &stream[..end];
    while head.starts_with(b"\r\n") {
        head = &head[2..];
    }
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().ok_or("no request line")?;
    if !request_line.starts_with(b"GET ") || !request_line.ends_with(b" HTTP/1.1") {
        return Err(format!(
            "request line {:?}",
            String::from_utf8_lossy(request_line)
        ));
    }
    let (mut host, mut key, mut version) = (Vec::new(), Vec::new(), Vec::new());
    let (mut upgrade, mut connection) = (false, false);
    for line in lines.filter(|l| !l.is_empty()) {
        let colon = find(line, b":").ok_or("a header line without a colon")?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"host") {
            host.push(value);
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            key.push(value);
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            version.push(value);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade |= has_token(value, b"websocket");
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection |= has_token(value, b"upgrade");
        }
    }
    if host.len() != 1 {
        return Err(format!("{} Host fields", host.len()));
    }
    match key.as_slice() {
        [k] if base64(k).is_some_and(|d| d.len() == 16) => {}
        keys => return Err(format!("Sec-WebSocket-Key fields {keys:?}")),
    }
    if version.as_slice() != [b"13"] {
        return Err(format!("Sec-WebSocket-Version fields {version:?}"));
    }
    if !upgrade || !connection {
        return Err("no Upgrade: websocket or no Connection: upgrade".into());
    }
    Ok(())
}

/// A refusal: a whole HTTP response with a 4xx status and a body of its Content-Length.
fn check_refusal(resp: &[u8]) {
    if resp.is_empty() {
        return; // closed without an answer: the stream ended before a head did
    }
    let text = String::from_utf8_lossy(resp);
    assert!(text.starts_with("HTTP/1.1 4"), "answer {text:?}");
    let end = find(resp, b"\r\n\r\n").expect("a whole response head") + 4;
    let len = text[..end]
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .expect("a Content-Length");
    assert_eq!(resp.len() - end, len, "body length in {text:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let mut upgrader = WsUpgrader::new();
    if config & 1 != 0 {
        upgrader = upgrader.with_max_header(256);
    }
    if config & 2 != 0 {
        upgrader = upgrader.with_protocols(["chat.v1", "chat.v2"]);
    }
    let (sizes, stream) = split_spec(rest);
    let split = upgrade(&upgrader, stream, sizes);
    if split.upgraded {
        if let Err(why) = must_be_upgradable(stream) {
            panic!(
                "upgraded a request that must be refused ({why}): {:?}",
                String::from_utf8_lossy(stream)
            );
        }
        assert!(split
            .response
            .starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        let named = find(&split.response, b"\r\nSec-WebSocket-Protocol: ").is_some();
        match split.protocol.as_deref() {
            None => assert!(!named, "a protocol named but none selected"),
            Some(p) => {
                assert!(
                    config & 2 != 0 && ["chat.v1", "chat.v2"].contains(&p),
                    "{p:?}"
                );
                let line = format!("\r\nSec-WebSocket-Protocol: {p}\r\n");
                assert!(find(&split.response, line.as_bytes()).is_some());
            }
        }
    } else {
        check_refusal(&split.response);
    }
    // The same bytes in reads as large as the reader takes.
    let whole = upgrade(&upgrader, stream, Vec::new());
    assert_eq!(
        split.upgraded,
        whole.upgraded,
        "the split into reads changed the outcome: {:?} / {:?}",
        String::from_utf8_lossy(&split.response),
        String::from_utf8_lossy(&whole.response)
    );
});
