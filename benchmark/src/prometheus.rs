//! A tiny client for a server's Prometheus endpoint: one HTTP/1.1 `GET` over a blocking socket,
//! and the samples of a metric read from the text exposition format. Enough to check kim's
//! counters after a benchmark run; not a general HTTP client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};

/// `GET path` from the HTTP server at `addr` (`HOST:PORT`); returns the body of a `200`
/// response (`Content-Length`, chunked, or up to the close), which must be UTF-8.
pub fn get(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<String> {
    String::from_utf8(get_bytes(addr, path, timeout)?).context("response body not UTF-8")
}

/// Like [`get`], for a body of any bytes (a profile).
pub fn get_bytes(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // One write: a server may answer (and close) as soon as it has the request line.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())?;
    // Read until the body is complete (by its length or its last chunk) or the server
    // closes, whichever comes first: a server may keep the connection open regardless.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut head: Option<Head> = None;
    loop {
        if let Some(h) = &head {
            if let Some(body) = h.body(&raw[h.len..])? {
                return Ok(body);
            }
        }
        let n = s
            .read(&mut buf)
            .with_context(|| format!("reading the response to GET {path} from {addr}"))?;
        raw.extend_from_slice(&buf[..n]);
        if head.is_none() {
            head = Head::parse(&raw)?;
            if let Some(h) = &head {
                if h.status != "200" {
                    bail!("GET {path} from {addr}: {}", h.status_line);
                }
            }
        }
        if n == 0 {
            let h = head.context("the server closed before the end of the response headers")?;
            let body = &raw[h.len..];
            return match h.body(body)? {
                Some(body) => Ok(body),
                None if h.length.is_none() && !h.chunked => Ok(body.to_vec()),
                None => bail!("the server closed before the end of the response body"),
            };
        }
    }
}

/// A response's status and framing.
struct Head {
    /// Bytes of the head, the blank line included.
    len: usize,
    status_line: String,
    status: String,
    chunked: bool,
    length: Option<usize>,
}

impl Head {
    /// The head at the start of `raw`, if all of it is there.
    fn parse(raw: &[u8]) -> anyhow::Result<Option<Head>> {
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&raw[..end]).context("response headers not UTF-8")?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut head = Head {
            len: end + 4,
            status_line,
            status,
            chunked: false,
            length: None,
        };
        for l in lines {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                head.length = Some(value.parse().context("bad Content-Length")?);
            }
        }
        Ok(Some(head))
    }

    /// The body, if `raw` (what followed the head so far) holds all of it.
    fn body(&self, raw: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        if self.chunked {
            dechunk(raw)
        } else if let Some(n) = self.length {
            Ok((raw.len() >= n).then(|| raw[..n].to_vec()))
        } else {
            Ok(None)
        }
    }
}

/// Decodes a chunked body (trailers ignored); `None` while its last chunk has not arrived.
fn dechunk(mut b: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size = std::str::from_utf8(&b[..eol]).context("bad chunk size")?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(size, 16).context("bad chunk size")?;
        b = &b[eol + 2..];
        if n == 0 {
            return Ok(Some(out));
        }
        if b.len() < n + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&b[..n]);
        b = &b[n + 2..];
    }
}

/// The sample of metric `name` with exactly the label set `labels` (as written between the
/// braces, such as `state="in_use"`).
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}}");
    text.lines()
        .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .filter(|rest| rest.starts_with([' ', '\t']))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(parse_value)
}

/// The sum of the samples of metric `name` over all its label sets, in Prometheus text
/// format; `None` if it has no sample.
pub fn sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = if let Some(labels) = rest.strip_prefix('{') {
            match labels_end(labels) {
                Some(i) => &labels[i + 1..],
                None => continue,
            }
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            // Another metric whose name starts with `name`.
            continue;
        };
        let Some(value) = rest.split_whitespace().next().and_then(parse_value) else {
            continue;
        };
        *total.get_or_insert(0.0) += value;
    }
    total
}

/// The index of the `}` that closes a label set, skipping quoted values.
fn labels_end(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP kim_messages_received_total Messages received.
# TYPE kim_messages_received_total counter
kim_messages_received_total{transport=\"ws\"} 1200
kim_messages_received_total{transport=\"tcp\",note=\"a } in \\\"quotes\\\"\"} 34 1700000000000
kim_messages_received_total_extra 99
kim_messages_sent_total 1.5e3
kim_handler_seconds_bucket{le=\"+Inf\"} 7
";

    #[test]
    fn sums_every_label_set_of_the_name_only() {
        assert_eq!(sum(TEXT, "kim_messages_received_total"), Some(1234.0));
        assert_eq!(sum(TEXT, "kim_messages_sent_total"), Some(1500.0));
        assert_eq!(sum(TEXT, "kim_handler_seconds_bucket"), Some(7.0));
        assert_eq!(sum(TEXT, "kim_messages"), None);
        assert_eq!(sum(TEXT, "absent_total"), None);
    }

    #[test]
    fn dechunks() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        assert_eq!(dechunk(body).unwrap().unwrap(), b"hello, world");
        assert_eq!(dechunk(b"5\r\nhel").unwrap(), None);
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
