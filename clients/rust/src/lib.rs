//! kim-client: a client of kim gateways over any transport.
//!
//! - [`Client`]: one connection over a transport's frame reader and writer: log in, send,
//!   read, heartbeat, close. The transports build it after their own connect and handshake
//!   (`kim_tcp::connect`, `kim_ws::connect`, and over TLS `kim_tls`'s); the examples, the
//!   tests and the benchmark use it.
//! - [`SessionClient`]: a session kept across connections (`PROTOCOL.md`): every message
//!   from the server once and in order, the client's own kept until the server's app took
//!   them, reconnects with jittered backoff ([`Backoff`]), resumes by itself, and tells the
//!   app when it must resync. It connects through a [`Dial`] (any transport, any login) and
//!   speaks an [`Encoding`] ([`DefaultEncoding`] is `PROTOCOL.md`'s).
#![warn(missing_docs)]

pub mod backoff;
pub mod encoding;
pub mod session;

pub use backoff::Backoff;
pub use encoding::{DefaultEncoding, Encoding, How, ServerFrame};
pub use session::{Dial, Event, Login, SendError, SessionClient, SessionOptions, SessionSender};

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use kim_core::{
    CloseReason, Frame, FrameReader, FrameReaderExt, FrameWriter, FrameWriterExt, OpCode, ReadError,
};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time allowed to connect (and, for websocket, to complete the handshake). Default 5 s.
    pub connect_timeout: Duration,
    /// Interval between heartbeat pings; `None` sends none. Default 55 s (KIM's).
    pub heartbeat: Option<Duration>,
    /// The largest frame accepted from the server. Default 4 MiB.
    pub max_message_size: usize,
    /// Bytes per socket read. Default 4 KiB.
    pub read_buffer_size: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            heartbeat: Some(Duration::from_secs(55)),
            max_message_size: 4 << 20,
            read_buffer_size: 4096,
        }
    }
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// What failed.
        source: io::Error,
    },
    /// Connecting (or the handshake) took longer than the connect timeout.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// The transport's handshake was refused.
    #[error("handshake refused: {0}")]
    Handshake(String),
    /// Reading or writing failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A frame from the server broke the protocol.
    #[error("bad frame from server: {0}")]
    Read(#[from] ReadError),
    /// The server closed the channel with this reason.
    #[error("closed by server: {0}")]
    Closed(CloseReason),
    /// The connection ended without a close frame.
    #[error("connection ended")]
    Eof,
}

/// A connected client. Reading needs `&mut self`; sending works through `&self` (and through
/// [`Client::sender`] from other tasks) because the writer sits behind an async lock that the
/// heartbeat shares.
pub struct Client<R: FrameReader, W: FrameWriter> {
    reader: R,
    writer: Arc<Mutex<W>>,
    heartbeat: Option<JoinHandle<()>>,
    pongs: Arc<AtomicU64>,
}

/// A cloneable handle that sends on a [`Client`]'s connection.
pub struct Sender<W: FrameWriter> {
    writer: Arc<Mutex<W>>,
}

impl<W: FrameWriter> Clone for Sender<W> {
    fn clone(&self) -> Self {
        Sender {
            writer: self.writer.clone(),
        }
    }
}

impl<W: FrameWriter> Sender<W> {
    /// Sends one frame and flushes it.
    pub async fn send(&self, frame: Frame) -> Result<(), ClientError> {
        send_on(&self.writer, frame).await
    }
}

/// Sends through the shared writer. A free function, so that the futures of `&mut self`
/// methods borrow the writer alone and stay `Send` whatever the reader is.
async fn send_on<W: FrameWriter>(writer: &Mutex<W>, frame: Frame) -> Result<(), ClientError> {
    writer.lock().await.send(frame).await?;
    Ok(())
}

impl<R: FrameReader, W: FrameWriter> Client<R, W> {
    /// A client over an established connection; starts the heartbeat if one is configured.
    pub fn new(reader: R, writer: W, options: &ClientOptions) -> Client<R, W> {
        let writer = Arc::new(Mutex::new(writer));
        let heartbeat = options.heartbeat.map(|every| {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    if writer.lock().await.send(Frame::ping("")).await.is_err() {
                        break;
                    }
                }
            })
        });
        Client {
            reader,
            writer,
            heartbeat,
            pongs: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Sends `credentials` as a text frame and returns the server's first message. A refused
    /// login comes back as [`ClientError::Closed`] with the server's reason.
    pub async fn login(&mut self, credentials: impl Into<Bytes>) -> Result<Frame, ClientError> {
        send_on(&self.writer, Frame::text(credentials)).await?;
        self.read().await
    }

    /// Sends one frame and flushes it.
    pub async fn send(&self, frame: Frame) -> Result<(), ClientError> {
        send_on(&self.writer, frame).await
    }

    /// Sends a text message.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), ClientError> {
        self.send(Frame::text(text.into())).await
    }

    /// Sends a binary message.
    pub async fn send_binary(&self, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        self.send(Frame::binary(payload)).await
    }

    /// Sends a ping now.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.send(Frame::ping("")).await
    }

    /// A handle that sends from other tasks.
    pub fn sender(&self) -> Sender<W> {
        Sender {
            writer: self.writer.clone(),
        }
    }

    /// Pongs received so far.
    pub fn pongs(&self) -> u64 {
        self.pongs.load(Ordering::Relaxed)
    }

    /// Reads the next text or binary message. Pings are answered and pongs counted on the way.
    /// A close from the server is answered and returned as [`ClientError::Closed`].
    pub async fn read(&mut self) -> Result<Frame, ClientError> {
        loop {
            let frame = self.reader.read_frame().await?.ok_or(ClientError::Eof)?;
            match frame.op {
                OpCode::Text | OpCode::Binary => return Ok(frame),
                OpCode::Ping => send_on(&self.writer, Frame::pong(frame.payload)).await?,
                OpCode::Pong => {
                    self.pongs.fetch_add(1, Ordering::Relaxed);
                }
                OpCode::Close => {
                    let reason = self.reader.close_reason(&frame.payload);
                    let mut w = self.writer.lock().await;
                    let answer = w.close_frame(&reason);
                    let _ = w.send(answer).await;
                    return Err(ClientError::Closed(reason));
                }
                OpCode::Continuation => {}
            }
        }
    }

    /// Closes the connection: sends a normal close and waits (at most 5 s) for the server's.
    /// Returns the server's close reason, if it sent one.
    pub async fn close(mut self) -> Result<Option<CloseReason>, ClientError> {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        {
            let mut w = self.writer.lock().await;
            let frame = w.close_frame(&CloseReason::normal(""));
            w.send(frame).await?;
        }
        let wait = async {
            loop {
                match self.reader.read_frame().await {
                    Ok(Some(f)) if f.op == OpCode::Close => {
                        return Some(self.reader.close_reason(&f.payload))
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return None,
                }
            }
        };
        let reason = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .ok()
            .flatten();
        let _ = self.writer.lock().await.shutdown().await;
        Ok(reason)
    }
}

impl<R: FrameReader, W: FrameWriter> Drop for Client<R, W> {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}
