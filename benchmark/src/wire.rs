//! The load generator's side of the wire, kept as cheap as possible so that the server under
//! test, not the client, is what a run measures: requests are encoded (and masked) once and
//! written again and again, and replies are counted by length, not decoded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};

/// The transport a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    /// Websocket.
    Ws,
    /// kim's raw TCP frames.
    Tcp,
}

impl Wire {
    /// The name kim's examples take for `--transport`.
    pub fn name(self) -> &'static str {
        match self {
            Wire::Ws => "ws",
            Wire::Tcp => "tcp",
        }
    }

    /// A client frame carrying `payload` (binary; masked for websocket).
    pub fn request(self, payload: &[u8]) -> Vec<u8> {
        match self {
            Wire::Tcp => tcp_frame(2, payload),
            Wire::Ws => ws_client_frame(0x82, payload),
        }
    }

    /// A text frame carrying `payload` (for logins).
    pub fn text_request(self, payload: &[u8]) -> Vec<u8> {
        match self {
            Wire::Tcp => tcp_frame(1, payload),
            Wire::Ws => ws_client_frame(0x81, payload),
        }
    }

    /// A normal close frame (1000) from the client.
    pub fn close_request(self) -> Vec<u8> {
        match self {
            Wire::Tcp => tcp_frame(8, b""),
            Wire::Ws => ws_client_frame(0x88, &1000u16.to_be_bytes()),
        }
    }

    /// The length of the server's frame carrying `payload_len` bytes.
    pub fn reply_len(self, payload_len: usize) -> usize {
        match self {
            Wire::Tcp => 5 + payload_len,
            Wire::Ws if payload_len < 126 => 2 + payload_len,
            Wire::Ws if payload_len < 65536 => 4 + payload_len,
            Wire::Ws => 10 + payload_len,
        }
    }
}

fn tcp_frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(op);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ws_client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    kim_ws::internals::encode_frame(first, payload, Some([0x5a, 0x13, 0xc7, 0x2e]))
}

/// Connects a blocking socket and performs the websocket handshake if `wire` needs one.
pub fn connect(addr: &str, wire: Wire) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    if wire == Wire::Ws {
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        s.write_all(req.as_bytes())?;
        // Read the response head byte by byte: nothing may be consumed past it.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte)? == 0 {
                bail!("closed during the handshake");
            }
            head.push(byte[0]);
            if head.len() > 8192 {
                bail!("handshake response too large");
            }
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            bail!("handshake refused: {}", String::from_utf8_lossy(&head));
        }
    }
    Ok(s)
}

/// Hands a connected socket to an epoll loop: non-blocking, registered under `token` for
/// reading and writing.
pub fn register(
    s: TcpStream,
    poll: &mio::Poll,
    token: usize,
) -> std::io::Result<mio::net::TcpStream> {
    s.set_nonblocking(true)?;
    let mut stream = mio::net::TcpStream::from_std(s);
    poll.registry().register(
        &mut stream,
        mio::Token(token),
        mio::Interest::READABLE | mio::Interest::WRITABLE,
    )?;
    Ok(stream)
}

/// Connects and logs in with the mock protocol as `id`; expects the `ok` reply.
pub fn login(addr: &str, wire: Wire, id: &str) -> anyhow::Result<TcpStream> {
    let mut s = connect(addr, wire)?;
    s.write_all(&wire.text_request(id.as_bytes()))?;
    let mut ok = vec![0u8; wire.reply_len(2)];
    s.read_exact(&mut ok)?;
    if !ok.ends_with(b"ok") {
        bail!("login as {id} not answered with ok: {ok:?}");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kim_core::{ConnConfig, FrameReaderExt, FrameWriter};
    use kim_io::ReadBuffer;

    /// The load generator's requests decode as kim's servers decode them, and its reply
    /// lengths match what kim's writers produce.
    #[tokio::test]
    async fn requests_and_replies_agree_with_kims_codecs() {
        for size in [0usize, 20, 125, 126, 1024, 65535, 65536, 200_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            for wire in [Wire::Ws, Wire::Tcp] {
                let bytes = wire.request(&payload);
                let frame = match wire {
                    Wire::Ws => {
                        let mut r = kim_ws::WsStream::new(
                            std::io::Cursor::new(bytes.clone()),
                            kim_ws::Role::Server,
                            1 << 20,
                            ReadBuffer::new(4096),
                        );
                        r.read_frame().await.unwrap().unwrap()
                    }
                    Wire::Tcp => {
                        let mut r = kim_tcp::TcpFramed::new(
                            std::io::Cursor::new(bytes.clone()),
                            ConnConfig::default(),
                        );
                        r.read_frame().await.unwrap().unwrap()
                    }
                };
                assert_eq!(frame.payload, payload, "{wire:?} {size}");
                let written = match wire {
                    Wire::Ws => {
                        let mut w = kim_ws::WsStream::new(
                            Vec::new(),
                            kim_ws::Role::Server,
                            0,
                            ReadBuffer::new(0),
                        );
                        w.start_frame(frame);
                        w.pending()
                    }
                    Wire::Tcp => {
                        let mut w = kim_tcp::TcpFramed::new(Vec::new(), ConnConfig::default());
                        w.start_frame(frame);
                        w.pending()
                    }
                };
                assert_eq!(wire.reply_len(size), written, "{wire:?} {size}");
            }
        }
    }
}
