//! A connection after its transport upgrade: one value that reads frames and writes them.
//!
//! A server's channel is driven by one task, which reads, handles and writes in turn, so its
//! connection is one [`Framed`] value that owns the stream whole: splitting a socket into
//! halves that two tasks could use would cost a shared allocation per connection (48 bytes of
//! every idle one) for nothing. Clients, which read in one task and write from others, use a
//! reader over the read half and a writer over the write half. Both traits are poll-based,
//! which lets one task drive reading, handling and writing of a channel without boxing a
//! future per read; [`FrameReaderExt`] and [`FrameWriterExt`] give the `async` forms for code
//! that prefers them (login, clients).

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::close::CloseReason;
use crate::error::ReadError;
use crate::extensions::Extensions;
use crate::frame::Frame;
use crate::shared_frame::SharedFrame;

/// Reads frames from one connection.
pub trait FrameReader: Send + Unpin + 'static {
    /// Reads the next frame. `Ok(None)` is a clean end of stream (between frames).
    ///
    /// Text frames are checked to be UTF-8 by the transport. Close frames come back as they
    /// are; [`FrameReader::close_reason`] decodes their payload.
    fn poll_read_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, ReadError>>;

    /// Decodes the payload of a close frame this reader returned.
    fn close_reason(&self, payload: &Bytes) -> CloseReason;

    /// Changes the largest frame (and message) accepted from now on. The server reads the
    /// login under a small limit and raises it once the connection has logged in.
    fn set_max_message_size(&mut self, max: usize);
}

/// Writes frames to one connection: frames are queued with [`FrameWriter::start_frame`] and
/// written, as one batch, by [`FrameWriter::poll_flush`].
pub trait FrameWriter: Send + Unpin + 'static {
    /// Encodes `frame` into the pending batch. Never does I/O.
    fn start_frame(&mut self, frame: Frame);

    /// The bytes a server's writer of this transport sends for `frame`, when they are the same
    /// on every connection (no mask, no per-connection state): a room's publish encodes its
    /// frame once with this, and every member's writer gets it in a [`SharedFrame`] through
    /// [`FrameWriter::start_shared`]. `None`, the default, has each writer encode the frame
    /// itself.
    fn encode_shared(frame: &Frame) -> Option<Bytes>
    where
        Self: Sized,
    {
        let _ = frame;
        None
    }

    /// Queues a frame shared with other channels: its [`SharedFrame::wire`] bytes when this
    /// writer's encoding matches them, or a [`SharedFrame::variant`] it shares with writers of
    /// the same settings. The default encodes the frame itself.
    fn start_shared(&mut self, shared: &SharedFrame) {
        self.start_frame(shared.frame().clone());
    }

    /// Queues one frame of `frame`'s opcode whose payload is `prefix` followed by
    /// `frame.payload` (a session's number before a message): a writer that can writes the
    /// prefix beside the header and the payload by reference, as [`FrameWriter::start_frame`]
    /// would. The default copies both into one payload.
    fn start_prefixed(&mut self, prefix: &[u8], frame: &Frame) {
        let mut payload = bytes::BytesMut::with_capacity(prefix.len() + frame.payload.len());
        payload.extend_from_slice(prefix);
        payload.extend_from_slice(&frame.payload);
        self.start_frame(Frame::new(frame.op, payload.freeze()));
    }

    /// The frame that closes a connection for `reason`, in this transport's encoding.
    fn close_frame(&self, reason: &CloseReason) -> Frame;

    /// Bytes queued and not yet written.
    fn pending(&self) -> usize;

    /// Writes everything queued and flushes the stream.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Shuts the write direction of the stream down (after a flush).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// A connection that both reads and writes frames: what an [`Upgrader`](crate::Upgrader)
/// makes of an accepted stream. Implemented by every type that is both.
pub trait Framed: FrameReader + FrameWriter {}

impl<T: FrameReader + FrameWriter> Framed for T {}

/// What a transport learned during its upgrade that an acceptor may want: for websocket, the
/// request path (with query) and headers, where many IM clients carry a login token.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// The request target, path and query (`/im?token=...`).
    pub path: String,
    /// Request headers, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
    /// What the transport's upgrade hook attached for the acceptor (a user, token claims).
    pub extensions: Extensions,
}

impl Handshake {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of a query parameter in the path, undecoded.
    pub fn query(&self, key: &str) -> Option<&str> {
        let (_, q) = self.path.split_once('?')?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }
}

/// An upgraded connection.
#[derive(Debug)]
pub struct Conn<F> {
    /// Reads and writes the connection's frames.
    pub framed: F,
    /// What the upgrade learned, if the transport has a handshake.
    pub handshake: Option<Box<Handshake>>,
}

/// `async` forms of [`FrameReader`]'s methods.
pub trait FrameReaderExt: FrameReader {
    /// Reads the next frame; `None` at a clean end of stream.
    fn read_frame(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Frame>, ReadError>> + Send
    where
        Self: Sized,
    {
        poll_fn(move |cx| self.poll_read_frame(cx))
    }
}

impl<R: FrameReader + ?Sized> FrameReaderExt for R {}

/// `async` forms of [`FrameWriter`]'s methods.
pub trait FrameWriterExt: FrameWriter {
    /// Writes one frame and flushes.
    fn send(&mut self, frame: Frame) -> impl std::future::Future<Output = io::Result<()>> + Send
    where
        Self: Sized,
    {
        self.start_frame(frame);
        poll_fn(move |cx| self.poll_flush(cx))
    }

    /// Writes everything queued and flushes.
    fn flush(&mut self) -> impl std::future::Future<Output = io::Result<()>> + Send
    where
        Self: Sized,
    {
        poll_fn(move |cx| self.poll_flush(cx))
    }

    /// Shuts the write direction down.
    fn shutdown(&mut self) -> impl std::future::Future<Output = io::Result<()>> + Send
    where
        Self: Sized,
    {
        poll_fn(move |cx| self.poll_shutdown(cx))
    }
}

impl<W: FrameWriter + ?Sized> FrameWriterExt for W {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_lookups() {
        let h = Handshake {
            path: "/im?uid=42&token=abc&flag".into(),
            headers: vec![("cookie".into(), "s=1".into())],
            protocol: None,
            extensions: Extensions::new(),
        };
        assert_eq!(h.query("token"), Some("abc"));
        assert_eq!(h.query("flag"), Some(""));
        assert_eq!(h.query("nope"), None);
        assert_eq!(h.header("Cookie"), Some("s=1"));
    }
}
