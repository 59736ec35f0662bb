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
///
/// While the head is incomplete, `check` sees the bytes received so far (and how many of them
/// it saw before) after every read; a refusal from it ends the read at once, so a request that
/// the bytes already prove invalid is answered without waiting for a blank line that may never
/// come.
pub(crate) async fn read_head<R, C>(
    io: &mut R,
    limit: usize,
    mut check: C,
) -> Result<(BytesMut, usize), HeadError>
where
    R: AsyncRead + Unpin,
    C: FnMut(&[u8], usize) -> Result<(), Refusal>,
{
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
        check(&buf, searched).map_err(HeadError::Invalid)?;
    }
}

/// Why a head could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    Io(std::io::Error),
    Eof,
    TooLarge,
    /// The bytes received so far cannot start a valid head.
    Invalid(Refusal),
}

/// The reason given to a TLS client that reached the plaintext port.
const NOT_TLS: &str = "malformed request: this port speaks plain HTTP, not TLS";
/// The reason given to a request whose lines end in a bare LF.
const BARE_LF: &str = "malformed request: lines must end in CRLF, not in a bare LF";

/// The first byte of a TLS handshake record (a ClientHello starts with it).
const TLS_HANDSHAKE: u8 = 0x16;

/// True if some LF in `buf[from..]` does not follow a CR. Kim does not take a bare LF as a
/// line end (RFC 9112 section 2.2 allows either), so a head with one can never be complete.
fn has_bare_lf(buf: &[u8], from: usize) -> bool {
    let from = from.min(buf.len());
    buf.iter()
        .enumerate()
        .skip(from)
        .any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
}

fn check_line_ends(buf: &[u8], from: usize) -> Result<(), Refusal> {
    if has_bare_lf(buf, from) {
        return Err(Refusal::new(400, BARE_LF));
    }
    Ok(())
}

/// Checks the bytes of a response head received so far (the client's side): a bare LF can
/// never be part of a head that ends.
pub(crate) fn check_response_prefix(buf: &[u8], from: usize) -> Result<(), Refusal> {
    if has_bare_lf(buf, from) {
        return Err(Refusal::new(
            400,
            "lines must end in CRLF, not in a bare LF",
        ));
    }
    Ok(())
}

/// Header fields an upgrade request must carry exactly once. Host: RFC 9112 section 3.2;
/// the other two: RFC 6455 sections 11.3.1 and 11.3.5.
const ONCE: [&str; 3] = ["Host", "Sec-WebSocket-Key", "Sec-WebSocket-Version"];

fn repeated(name: &str) -> Refusal {
    Refusal::new(400, format!("{name} header given more than once"))
}

/// Checks the bytes of an upgrade request received so far, its head still incomplete (`from`:
/// how many of them were checked before). Refuses only what no further byte could make valid:
/// a TLS handshake, a bare LF, a method other than GET, a version other than HTTP/1.1, bytes
/// the HTTP grammar does not allow, too many header fields, or a field that must appear once
/// appearing twice. A valid request split across any number of reads always passes.
pub(crate) fn check_request_prefix(buf: &[u8], from: usize) -> Result<(), Refusal> {
    if buf.first() == Some(&TLS_HANDSHAKE) {
        return Err(Refusal::new(400, NOT_TLS));
    }
    check_line_ends(buf, from)?;
    // Empty lines before the request line are allowed (RFC 9112 section 2.2).
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let method = &buf[start..];
    let n = method.len().min(4);
    // (A lone CR may be the start of one more empty line: the parser judges what follows it.)
    if method.first() != Some(&b'\r') && method[..n] != b"GET "[..n] {
        return Err(Refusal::new(400, "the upgrade request must be a GET"));
    }
    // What follows parses the whole buffer: it runs when a line was completed since the last
    // check, not on every read, so a head trickled in a byte at a time costs a parse per line
    // (at most the header limit's worth), not a parse per byte.
    if from > 0 && !buf[from.min(buf.len())..].contains(&b'\n') {
        return Ok(());
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(_) => {}
        Err(e) => return Err(parse_error(e)),
    }
    check_request_line(req.method, req.version)?;
    // Fields on complete lines (behind the request line) are final: count those that must
    // appear once.
    let mut counts = [0usize; ONCE.len()];
    let mut lines = buf[start..].split(|&b| b == b'\n');
    lines.next(); // the request line
    let complete = buf[start..].iter().filter(|&&b| b == b'\n').count();
    for line in lines.take(complete.saturating_sub(1)) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        for (i, once) in ONCE.iter().enumerate() {
            if name.eq_ignore_ascii_case(once.as_bytes()) {
                counts[i] += 1;
                if counts[i] > 1 {
                    return Err(repeated(once));
                }
            }
        }
    }
    Ok(())
}

fn parse_error(e: httparse::Error) -> Refusal {
    match e {
        httparse::Error::TooManyHeaders => Refusal::new(431, "too many header fields"),
        e => Refusal::new(400, format!("malformed request: {e}")),
    }
}

/// Checks the method and version, as far as they are known.
fn check_request_line(method: Option<&str>, version: Option<u8>) -> Result<(), Refusal> {
    if method.is_some_and(|m| m != "GET") {
        return Err(Refusal::new(400, "the upgrade request must be a GET"));
    }
    if version.is_some_and(|v| v != 1) {
        return Err(Refusal::new(400, "the upgrade request must be HTTP/1.1"));
    }
    Ok(())
}

/// The value of the one field called `name`; a refusal if there are several.
fn single<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &str,
) -> Result<Option<&'a [u8]>, Refusal> {
    let mut found = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    let first = found.next().map(|h| h.value);
    if found.next().is_some() {
        return Err(repeated(name));
    }
    Ok(first)
}

/// True if any field called `name` (a comma-separated list, possibly split over several
/// field lines) contains `token` (case-insensitive).
fn list_has(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .any(|h| has_token(h.value, token))
}

/// True if a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses and checks an upgrade request head.
pub(crate) fn parse_request(head: &[u8]) -> Result<Request, Refusal> {
    if head.first() == Some(&TLS_HANDSHAKE) {
        return Err(Refusal::new(400, NOT_TLS));
    }
    check_line_ends(head, 0)?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Refusal::new(400, "incomplete request")),
        Err(e) => return Err(parse_error(e)),
    }
    check_request_line(req.method, req.version)?;
    let h = &*req.headers;
    let host = single(h, "Host")?;
    let version = single(h, "Sec-WebSocket-Version")?;
    let key = single(h, "Sec-WebSocket-Key")?;
    if host.is_none() {
        return Err(Refusal::new(400, "missing Host header"));
    }
    if !list_has(h, "upgrade", "websocket") {
        return Err(Refusal::new(400, "missing Upgrade: websocket"));
    }
    if !list_has(h, "connection", "upgrade") {
        return Err(Refusal::new(400, "missing Connection: upgrade"));
    }
    if version.map(|v| v.trim_ascii()) != Some(b"13") {
        return Err(Refusal::new(
            426,
            "unsupported Sec-WebSocket-Version; use 13",
        ));
    }
    let key = key
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
        extensions: Default::default(),
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

/// The `101 Switching Protocols` response, with the selected subprotocol and the accepted
/// extension, if any.
pub(crate) fn accept_response(
    key: &str,
    protocol: Option<&str>,
    extension: Option<&str>,
) -> String {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        r.push_str("Sec-WebSocket-Protocol: ");
        r.push_str(p);
        r.push_str("\r\n");
    }
    if let Some(e) = extension {
        r.push_str("Sec-WebSocket-Extensions: ");
        r.push_str(e);
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
        assert!(accept_response(&r.key, None, None)
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
        let (buf, end) = read_head(&mut &input[..], 8192, check_request_prefix)
            .await
            .unwrap();
        assert_eq!(end, GOOD.len());
        assert_eq!(&buf[end..], b"\x81\x80rest");
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(matches!(
            read_head(&mut big.as_bytes(), 8192, check_request_prefix).await,
            Err(HeadError::TooLarge)
        ));
        assert!(matches!(
            read_head(&mut &b"GET / HT"[..], 8192, check_request_prefix).await,
            Err(HeadError::Eof)
        ));
    }

    /// Reads a head from `pieces`, one read per piece, as a socket might deliver them.
    struct Pieces(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some(mut p) = self.0.pop_front() {
                let n = p.len().min(buf.remaining());
                buf.put_slice(&p[..n]);
                if n < p.len() {
                    self.0.push_front(p.split_off(n));
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    async fn read_pieces(pieces: &[&[u8]]) -> Result<(BytesMut, usize), HeadError> {
        let mut io = Pieces(pieces.iter().map(|p| p.to_vec()).collect());
        read_head(&mut io, 8192, check_request_prefix).await
    }

    #[test]
    fn fields_that_must_appear_once_are_refused_when_repeated() {
        let twice = [
            (
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                "Sec-WebSocket-Key",
            ),
            ("Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Version"),
            ("Host: x\r\n", "Host"),
            // Case does not make a field another one.
            (
                "sec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==\r\n",
                "Sec-WebSocket-Key",
            ),
            ("HOST: y\r\n", "Host"),
        ];
        for (line, name) in twice {
            let req = GOOD.replacen("\r\n\r\n", &format!("\r\n{line}\r\n"), 1);
            let e = parse_request(req.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400, "{req:?}");
            assert!(e.reason.contains(name), "{:?} lacks {name:?}", e.reason);
            assert!(e.reason.contains("more than once"), "{:?}", e.reason);
            // The partial check refuses it as soon as the second line is complete.
            let at = req.rfind(line).unwrap() + line.len();
            assert_eq!(check_request_prefix(&req.as_bytes()[..at], 0), Err(e));
            assert!(check_request_prefix(&req.as_bytes()[..at - 1], 0).is_ok());
        }
    }

    #[test]
    fn list_fields_may_be_split_over_several_lines() {
        let req = GOOD.replace(
            "Connection: keep-alive, Upgrade\r\n",
            "Connection: keep-alive\r\nConnection: Upgrade\r\n",
        );
        assert!(parse_request(req.as_bytes()).is_ok());
        let req = GOOD.replace(
            "Upgrade: WebSocket\r\n",
            "Upgrade: h2c\r\nUpgrade: websocket\r\n",
        );
        assert!(parse_request(req.as_bytes()).is_ok());
    }

    #[test]
    fn bare_lf_and_tls_are_refused_from_any_prefix_that_shows_them() {
        let lf = GOOD.replace("\r\n", "\n");
        let e = parse_request(lf.as_bytes()).unwrap_err();
        assert_eq!((e.status, e.reason.as_str()), (400, BARE_LF));
        let first_lf = lf.find('\n').unwrap();
        assert!(check_request_prefix(&lf.as_bytes()[..first_lf], 0).is_ok());
        assert_eq!(
            check_request_prefix(&lf.as_bytes()[..first_lf + 1], 0).unwrap_err(),
            e
        );
        // One bare LF among CRLFs is enough.
        let mixed = GOOD.replacen("Host: x\r\n", "Host: x\n", 1);
        assert_eq!(parse_request(mixed.as_bytes()).unwrap_err(), e);
        let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
        for n in 1..hello.len() {
            let e = check_request_prefix(&hello[..n], 0).unwrap_err();
            assert_eq!((e.status, e.reason.as_str()), (400, NOT_TLS));
        }
        assert_eq!(
            parse_request(b"\x16\x03\x01\r\n\r\n").unwrap_err().reason,
            NOT_TLS
        );
    }

    #[test]
    fn prefixes_of_a_valid_request_all_pass() {
        let with_empty_lines = format!("\r\n\r\n{GOOD}");
        for req in [GOOD, with_empty_lines.as_str()] {
            let bytes = req.as_bytes();
            let end = head_end(bytes, 0).unwrap();
            for n in 1..end {
                for from in [0, n / 2, n - 1] {
                    let r = check_request_prefix(&bytes[..n], from);
                    assert!(r.is_ok(), "{:?} from {from}: {r:?}", &req[..n]);
                }
            }
        }
    }

    #[test]
    fn prefixes_that_prove_a_bad_request_are_refused() {
        let cases: [(&[u8], u16, &str); 7] = [
            (b"P", 400, "GET"),
            (b"\r\nGE ", 400, "GET"),
            (b"GET / HTTP/1.0\r", 400, "HTTP/1.1"),
            (b"GET / HTTP/1.1\r\nHo st", 400, "malformed"),
            (b"GET /\x00", 400, "malformed"),
            (b"GET / HTTP/1.1\rX", 400, "malformed"),
            (b"\n", 400, "CRLF"),
        ];
        for (bytes, status, text) in cases {
            let e = check_request_prefix(bytes, 0).unwrap_err();
            assert_eq!(e.status, status, "{bytes:?}");
            assert!(
                e.reason.contains(text),
                "{bytes:?}: {:?} lacks {text:?}",
                e.reason
            );
        }
        let many: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}");
        assert_eq!(
            check_request_prefix(req.as_bytes(), 0).unwrap_err().status,
            431
        );
    }

    #[tokio::test]
    async fn a_request_split_into_single_bytes_is_read_whole() {
        let pieces: Vec<&[u8]> = GOOD.as_bytes().chunks(1).collect();
        let (buf, end) = read_pieces(&pieces).await.unwrap();
        assert_eq!(&buf[..end], GOOD.as_bytes());
        assert!(parse_request(&buf[..end]).is_ok());
        // The CR and LF of the blank line in separate reads.
        let n = GOOD.len();
        let pieces = [&GOOD.as_bytes()[..n - 1], &GOOD.as_bytes()[n - 1..]];
        let (_, end) = read_pieces(&pieces).await.unwrap();
        assert_eq!(end, n);
    }

    #[tokio::test]
    async fn head_reading_stops_at_the_first_read_that_proves_the_request_bad() {
        let lf = GOOD.replace("\r\n", "\n");
        let pieces: Vec<&[u8]> = lf.as_bytes().chunks(10).collect();
        match read_pieces(&pieces).await {
            Err(HeadError::Invalid(r)) => assert_eq!(r.reason, BARE_LF),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A TLS ClientHello never ends in a blank line: refused from its first byte.
        match read_pieces(&[b"\x16", b"\x03\x01"]).await {
            Err(HeadError::Invalid(r)) => assert_eq!(r.reason, NOT_TLS),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
