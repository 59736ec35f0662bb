//! The HTTP/1.1 upgrade, parsed straight off the stream: no HTTP framework in the path.
//!
//! The server reads the request head into one small buffer (refusing it past the header
//! limit), parses it with `httparse`, checks what RFC 6455 section 4.2.1 requires, and answers
//! `101 Switching Protocols`, or a status with a short reason and closes. Bytes that arrived
//! after the head (a client that sends its first frame at once) stay in the buffer and become
//! the start of the frame reader's buffer.

use base64::Engine;
use bytes::BytesMut;
use kim_core::{Handshake, UpgradeError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Headers parsed at most; a request with more gets 431.
const MAX_HEADERS: usize = 64;

/// A refusal of an upgrade: an HTTP status and a short reason, sent as the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status (400, 401, 403, 426, 431, ...).
    pub status: u16,
    /// A short reason, sent as a text/plain body.
    pub reason: String,
}

impl Refusal {
    /// A refusal with this status and reason.
    pub fn new(status: u16, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
}

/// The parts of a valid upgrade request the response needs.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) key: String,
    pub(crate) protocols: Vec<String>,
    pub(crate) info: Handshake,
}

/// Finds the end of an HTTP head (`\r\n\r\n`), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| start + p + 4)
}

/// Reads an HTTP head of at most `limit` bytes. Returns the buffer and the head's length;
/// whatever follows the head stays in the buffer.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    limit: usize,
) -> Result<(BytesMut, usize), HeadError> {
    let mut buf = BytesMut::with_capacity(1024.min(limit + 4));
    loop {
        let searched = buf.len();
        if buf.capacity() == buf.len() {
            buf.reserve(1024);
        }
        let n = io.read_buf(&mut buf).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Eof);
        }
        if let Some(end) = head_end(&buf, searched) {
            if end > limit {
                return Err(HeadError::TooLarge);
            }
            return Ok((buf, end));
        }
        if buf.len() > limit {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Why a head could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    Io(std::io::Error),
    Eof,
    TooLarge,
}

fn header<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// True if a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses and checks an upgrade request head.
pub(crate) fn parse_request(head: &[u8]) -> Result<Request, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Refusal::new(400, "incomplete request")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(431, "too many header fields"))
        }
        Err(e) => return Err(Refusal::new(400, format!("malformed request: {e}"))),
    }
    if req.method != Some("GET") {
        return Err(Refusal::new(400, "the upgrade request must be a GET"));
    }
    if req.version != Some(1) {
        return Err(Refusal::new(400, "the upgrade request must be HTTP/1.1"));
    }
    let h = &*req.headers;
    if header(h, "host").is_none() {
        return Err(Refusal::new(400, "missing Host header"));
    }
    if !header(h, "upgrade").is_some_and(|v| has_token(v, "websocket")) {
        return Err(Refusal::new(400, "missing Upgrade: websocket"));
    }
    if !header(h, "connection").is_some_and(|v| has_token(v, "upgrade")) {
        return Err(Refusal::new(400, "missing Connection: upgrade"));
    }
    if header(h, "sec-websocket-version").map(|v| v.trim_ascii()) != Some(b"13") {
        return Err(Refusal::new(
            426,
            "unsupported Sec-WebSocket-Version; use 13",
        ));
    }
    let key = header(h, "sec-websocket-key")
        .map(|v| v.trim_ascii())
        .ok_or_else(|| Refusal::new(400, "missing Sec-WebSocket-Key"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| Refusal::new(400, "Sec-WebSocket-Key is not base64"))?;
    if decoded.len() != 16 {
        return Err(Refusal::new(
            400,
            "Sec-WebSocket-Key must decode to 16 bytes",
        ));
    }
    let protocols = h
        .iter()
        .filter(|x| x.name.eq_ignore_ascii_case("sec-websocket-protocol"))
        .flat_map(|x| x.value.split(|&b| b == b','))
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let info = Handshake {
        path: req.path.unwrap_or("/").to_string(),
        headers: h
            .iter()
            .map(|x| {
                (
                    x.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(x.value).into_owned(),
                )
            })
            .collect(),
        protocol: None,
    };
    Ok(Request {
        key: String::from_utf8_lossy(key).into_owned(),
        protocols,
        info,
    })
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Refused",
    }
}

/// Answers a refused upgrade and shuts the stream's write side; returns the matching error.
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(io: &mut W, refusal: Refusal) -> UpgradeError {
    let extra = if refusal.status == 426 {
        "Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{}",
        refusal.status,
        reason_phrase(refusal.status),
        refusal.reason.len(),
        refusal.reason
    );
    let _ = io.write_all(response.as_bytes()).await;
    let _ = io.shutdown().await;
    UpgradeError::Refused {
        status: refusal.status,
        reason: refusal.reason,
    }
}

/// The `101 Switching Protocols` response.
pub(crate) fn accept_response(key: &str, protocol: Option<&str>) -> String {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        r.push_str("Sec-WebSocket-Protocol: ");
        r.push_str(p);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /im?token=t1 HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat.v2, chat.v1\r\n\r\n";

    #[test]
    fn a_good_request_parses() {
        let r = parse_request(GOOD.as_bytes()).unwrap();
        assert_eq!(r.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(r.protocols, vec!["chat.v2", "chat.v1"]);
        assert_eq!(r.info.query("token"), Some("t1"));
        assert_eq!(r.info.header("upgrade"), Some("WebSocket"));
        // The RFC's own example key and accept value.
        assert!(accept_response(&r.key, None)
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn each_bad_request_gets_its_status() {
        let cases = [
            (GOOD.replace("GET", "POST"), 400, "GET"),
            (GOOD.replace("HTTP/1.1", "HTTP/1.0"), 400, "HTTP/1.1"),
            (GOOD.replace("Host: x\r\n", ""), 400, "Host"),
            (
                GOOD.replace("Upgrade: WebSocket", "Upgrade: h2c"),
                400,
                "Upgrade",
            ),
            (
                GOOD.replace("keep-alive, Upgrade", "keep-alive"),
                400,
                "Connection",
            ),
            (GOOD.replace("Version: 13", "Version: 8"), 426, "13"),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!"),
                400,
                "base64",
            ),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhl"),
                400,
                "16 bytes",
            ),
            ("GARBAGE\r\n\r\n".to_string(), 400, "malformed"),
        ];
        for (req, status, text) in cases {
            let e = parse_request(req.as_bytes()).unwrap_err();
            assert_eq!(e.status, status, "{req:?}");
            assert!(e.reason.contains(text), "{:?} lacks {text:?}", e.reason);
        }
        let many: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
        let req = GOOD.replace("Host: x\r\n", &format!("Host: x\r\n{many}"));
        assert_eq!(parse_request(req.as_bytes()).unwrap_err().status, 431);
    }

    #[tokio::test]
    async fn head_reading_keeps_what_follows_and_enforces_the_limit() {
        let mut input = GOOD.as_bytes().to_vec();
        input.extend_from_slice(b"\x81\x80rest");
        let (buf, end) = read_head(&mut &input[..], 8192).await.unwrap();
        assert_eq!(end, GOOD.len());
        assert_eq!(&buf[end..], b"\x81\x80rest");
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(matches!(
            read_head(&mut big.as_bytes(), 8192).await,
            Err(HeadError::TooLarge)
        ));
        assert!(matches!(
            read_head(&mut &b"GET / HT"[..], 8192).await,
            Err(HeadError::Eof)
        ));
    }
}
