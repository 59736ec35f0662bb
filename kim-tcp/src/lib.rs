//! kim-tcp: the raw TCP transport for kim.
//!
//! Every frame is `[op u8][len u32 big-endian][payload]`, with the websocket opcode values
//! (text 1, binary 2, close 8, ping 9, pong 10). There is no handshake: [`TcpUpgrader`] frames
//! the stream as soon as it is accepted. A close frame's payload is the reason, as UTF-8 text.
//!
//! The decoder checks a frame's header before it allocates anything: a length over the maximum
//! message size closes the connection with a close frame that says so, and a frame is read
//! into a buffer of its final size and handed on without a copy.

#![warn(missing_docs)]

use std::io;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kim_client::{Client, ClientError, ClientOptions};
use kim_core::io::Io;
use kim_core::{
    CloseReason, Conn, ConnConfig, Frame, FrameReader, FrameWriter, OpCode, ReadError, SharedFrame,
    UpgradeError, Upgrader,
};
use kim_io::{ReadBuffer, WriteBuffer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Length of a frame header: one opcode byte and a 32-bit length.
pub const HEADER_LEN: usize = 5;

/// The raw TCP transport: no handshake, length-prefixed frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpUpgrader;

impl TcpUpgrader {
    /// The transport.
    pub fn new() -> TcpUpgrader {
        TcpUpgrader
    }
}

impl<IO: Io> Upgrader<IO> for TcpUpgrader {
    type Framed = TcpFramed<IO>;

    fn name(&self) -> &'static str {
        "tcp"
    }

    async fn upgrade(
        &self,
        io: IO,
        config: ConnConfig,
    ) -> Result<Conn<Self::Framed>, UpgradeError> {
        Ok(Conn {
            framed: TcpFramed::new(io, config),
            handshake: None,
        })
    }
}

/// `[op][len][payload]` frames over `IO`: read when `IO` reads ([`FrameReader`]), written
/// when it writes ([`FrameWriter`]), a batch in as few writes as the socket takes.
///
/// A server's connection is one of these over the whole socket, driven by its channel's one
/// task (no halves, so nothing shared to allocate); a client has one over the read half and
/// one over the write half.
#[derive(Debug)]
pub struct TcpFramed<IO> {
    io: IO,
    rbuf: ReadBuffer,
    wbuf: WriteBuffer,
    max: usize,
}

impl<IO> TcpFramed<IO> {
    /// Frames over `io` with the given limits.
    pub fn new(io: IO, config: ConnConfig) -> TcpFramed<IO> {
        TcpFramed {
            io,
            rbuf: ReadBuffer::new(config.read_buffer_size),
            wbuf: WriteBuffer::new(),
            max: config.max_message_size,
        }
    }
}

/// What the buffer holds: a complete frame, or how many more bytes one needs.
enum Decoded {
    Frame(Frame),
    Need(usize),
}

fn decode(buf: &mut bytes::BytesMut, max: usize) -> Result<Decoded, ReadError> {
    if buf.len() < HEADER_LEN {
        // Check the opcode as soon as it arrives: garbage fails at its first byte.
        if let Some(&b) = buf.first() {
            check_op(b)?;
        }
        return Ok(Decoded::Need(HEADER_LEN - buf.len()));
    }
    let op = check_op(buf[0])?;
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > max {
        return Err(ReadError::Protocol(CloseReason::too_big(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        ))));
    }
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Ok(Decoded::Need(total - buf.len()));
    }
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    if op == OpCode::Text && std::str::from_utf8(&payload).is_err() {
        return Err(ReadError::Protocol(CloseReason::new(
            CloseReason::INVALID_PAYLOAD,
            "text frame is not valid UTF-8",
        )));
    }
    Ok(Decoded::Frame(Frame { op, payload }))
}

fn check_op(b: u8) -> Result<OpCode, ReadError> {
    match OpCode::from_u8(b) {
        Some(OpCode::Continuation) | None => Err(ReadError::Protocol(CloseReason::protocol(
            format!("invalid opcode {b}"),
        ))),
        Some(op) => Ok(op),
    }
}

impl<IO: AsyncRead + Send + Unpin + 'static> FrameReader for TcpFramed<IO> {
    fn poll_read_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, ReadError>> {
        loop {
            // Nothing buffered: straight to the read, which takes a buffer sized for it.
            let need = if self.rbuf.is_empty() {
                1
            } else {
                match decode(self.rbuf.buf(), self.max)? {
                    Decoded::Frame(f) => return Poll::Ready(Ok(Some(f))),
                    Decoded::Need(n) => n,
                }
            };
            let n = ready!(self.rbuf.poll_fill(&mut self.io, cx, need))?;
            if n == 0 {
                return Poll::Ready(if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::UnexpectedEof)
                });
            }
        }
    }

    fn close_reason(&self, payload: &Bytes) -> CloseReason {
        // The wire carries a reason and no code.
        CloseReason::new(
            CloseReason::NO_STATUS,
            String::from_utf8_lossy(payload).into_owned(),
        )
    }

    fn set_max_message_size(&mut self, max: usize) {
        self.max = max;
    }
}

impl<IO: AsyncWrite + Send + Unpin + 'static> FrameWriter for TcpFramed<IO> {
    fn start_frame(&mut self, frame: Frame) {
        let len = u32::try_from(frame.payload.len()).unwrap_or(u32::MAX);
        let staging = self.wbuf.staging();
        staging.put_u8(frame.op as u8);
        staging.put_u32(len);
        self.wbuf.staged(HEADER_LEN);
        self.wbuf.push_payload(frame.payload.slice(..len as usize));
    }

    fn start_prefixed(&mut self, prefix: &[u8], frame: &Frame) {
        let total = prefix.len() + frame.payload.len();
        let Ok(len) = u32::try_from(total) else {
            return self.start_frame(frame.clone());
        };
        let staging = self.wbuf.staging();
        staging.put_u8(frame.op as u8);
        staging.put_u32(len);
        staging.extend_from_slice(prefix);
        self.wbuf.staged(HEADER_LEN + prefix.len());
        self.wbuf.push_shared(&frame.payload);
    }

    fn encode_shared(frame: &Frame) -> Option<Bytes> {
        let len = u32::try_from(frame.payload.len()).ok()?;
        let mut wire = BytesMut::with_capacity(HEADER_LEN + frame.payload.len());
        wire.put_u8(frame.op as u8);
        wire.put_u32(len);
        wire.extend_from_slice(&frame.payload);
        Some(wire.freeze())
    }

    fn start_shared(&mut self, shared: &SharedFrame) {
        match shared.wire() {
            Some(wire) => self.wbuf.push_shared(wire),
            None => self.start_frame(shared.frame().clone()),
        }
    }

    fn close_frame(&self, reason: &CloseReason) -> Frame {
        Frame::new(OpCode::Close, Bytes::from(reason.reason.to_string()))
    }

    fn pending(&self) -> usize {
        self.wbuf.pending()
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wbuf.poll_flush(&mut self.io, cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wbuf.poll_shutdown(&mut self.io, cx)
    }
}

/// A raw TCP client.
pub type TcpClient =
    Client<TcpFramed<tokio::net::tcp::OwnedReadHalf>, TcpFramed<tokio::net::tcp::OwnedWriteHalf>>;

/// Connects to a kim server over raw TCP, within the connect timeout.
pub async fn connect(addr: &str, options: &ClientOptions) -> Result<TcpClient, ClientError> {
    let stream = tokio::time::timeout(options.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ClientError::ConnectTimeout(addr.to_string()))?
        .map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    stream.set_nodelay(true)?;
    Ok(client_over(stream, options))
}

/// A raw TCP frames client over a stream the caller opened (TLS, say, with
/// `kim_tls::connect`).
pub fn client_over<IO: Io>(
    io: IO,
    options: &ClientOptions,
) -> Client<TcpFramed<IO::ReadHalf>, TcpFramed<IO::WriteHalf>> {
    let (r, w) = io.split_io();
    let config = ConnConfig {
        max_message_size: options.max_message_size,
        read_buffer_size: options.read_buffer_size,
    };
    Client::new(
        TcpFramed::new(r, config),
        TcpFramed::new(w, config),
        options,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kim_core::{FrameReaderExt, FrameWriterExt};

    fn frame_bytes(op: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![op];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decode_checks_before_allocating() {
        let mut b = BytesMut::from(&[2u8, 0xff, 0xff, 0xff, 0xff][..]);
        match decode(&mut b, 1024) {
            Err(ReadError::Protocol(r)) => assert_eq!(r.code, CloseReason::TOO_BIG),
            _ => panic!("expected a too-big error"),
        }
        let mut b = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        match decode(&mut b, 1024) {
            Err(ReadError::Protocol(r)) => {
                assert_eq!(r.code, CloseReason::PROTOCOL);
                assert!(r.reason.contains("invalid opcode 71"), "{r:?}");
            }
            _ => panic!("expected a protocol error"),
        }
        let mut b = BytesMut::from(&frame_bytes(1, &[0xff, 0xfe])[..]);
        match decode(&mut b, 1024) {
            Err(ReadError::Protocol(r)) => assert_eq!(r.code, CloseReason::INVALID_PAYLOAD),
            _ => panic!("expected an invalid-payload error"),
        }
    }

    #[test]
    fn decode_splits_without_copy() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&frame_bytes(2, b"hello"));
        b.extend_from_slice(&frame_bytes(9, b""));
        b.extend_from_slice(&[1, 0, 0]);
        let base = b.as_ptr() as usize;
        let Ok(Decoded::Frame(f)) = decode(&mut b, 1024) else {
            panic!("expected a frame")
        };
        assert_eq!(f.op, OpCode::Binary);
        assert_eq!(&f.payload[..], b"hello");
        assert_eq!(
            f.payload.as_ptr() as usize,
            base + HEADER_LEN,
            "payload not copied"
        );
        let Ok(Decoded::Frame(f)) = decode(&mut b, 1024) else {
            panic!("expected a frame")
        };
        assert_eq!((f.op, f.payload.len()), (OpCode::Ping, 0));
        assert!(matches!(decode(&mut b, 1024), Ok(Decoded::Need(2))));
    }

    /// A server's connection lives in every idle connection's task (see kim-core's session):
    /// 72 bytes over a TCP stream of 32 (40 in debug builds, where mio adds a field).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_servers_connection_stays_small() {
        let own = std::mem::size_of::<TcpFramed<TcpStream>>() - std::mem::size_of::<TcpStream>();
        assert!(own <= 40, "the connection's own state grew to {own} bytes");
    }

    #[tokio::test]
    async fn frames_round_trip_over_a_socket() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            let (_r, w) = s.into_split();
            let mut w = TcpFramed::new(w, ConnConfig::default());
            w.start_frame(Frame::text("hi"));
            w.start_frame(Frame::binary(vec![7u8; 100_000]));
            w.start_frame(Frame::ping("p"));
            w.flush().await.unwrap();
            w.shutdown().await.unwrap();
        });
        let (s, _) = l.accept().await.unwrap();
        // The server's side whole, as a server runs it.
        let mut r = TcpFramed::new(s, ConnConfig::default());
        let f = r.read_frame().await.unwrap().unwrap();
        assert_eq!((f.op, &f.payload[..]), (OpCode::Text, &b"hi"[..]));
        let f = r.read_frame().await.unwrap().unwrap();
        assert_eq!((f.op, f.payload.len()), (OpCode::Binary, 100_000));
        assert!(f.payload.iter().all(|&b| b == 7));
        let f = r.read_frame().await.unwrap().unwrap();
        assert_eq!((f.op, &f.payload[..]), (OpCode::Ping, &b"p"[..]));
        assert!(r.read_frame().await.unwrap().is_none());
        client.await.unwrap();
    }
}
