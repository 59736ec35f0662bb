//! A server-side TLS stream on rustls' unbuffered API, whose buffers are kim's and are given
//! back whenever they are empty.
//!
//! rustls' buffered connection (and tokio-rustls over it) keeps a 4 KiB receive buffer for
//! the life of every connection, however idle: more than everything else kim keeps for a
//! logged-in channel. Here the ciphertext received, the plaintext decrypted and the ciphertext
//! to send each live in a `Vec` that is freed as soon as it holds nothing, so an idle TLS
//! connection costs rustls' connection state and nothing more. rustls still does all of TLS;
//! this file only moves bytes between the socket, rustls and the framing above (websocket or
//! TCP frames).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 4096;
/// The most ciphertext held unsent before a write waits for the socket: a few records.
const MAX_UNSENT: usize = 64 * 1024;
/// The largest incoming TLS record (16 KiB of plaintext and its overhead), or handshake
/// message rustls accepts (64 KiB), with room for a read beside it.
const MAX_INCOMING: usize = 64 * 1024 + 5 + READ_SIZE;

/// TLS over an accepted TCP connection, server side.
pub struct TlsStream {
    io: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext received; `incoming[..received]` is not yet processed.
    incoming: Vec<u8>,
    received: usize,
    /// Plaintext decrypted; `plain[taken..]` is not yet read.
    plain: Vec<u8>,
    taken: usize,
    /// Ciphertext to send; `outgoing[sent..]` is not yet sent.
    outgoing: Vec<u8>,
    sent: usize,
    /// The peer sent close_notify, or the stream ended.
    peer_done: bool,
    /// Our close_notify is queued.
    closing: bool,
    /// The host name the client asked for (SNI).
    server_name: Option<String>,
}

/// Where processing the received records left the connection.
enum Next {
    /// Application data can be sent (the handshake is done), and no whole record waits.
    Write,
    /// The handshake needs more from the peer.
    Read,
}

/// A TLS failure as an I/O error, rustls' error inside it (the upgrader counts failures by
/// it).
fn invalid<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    /// A stream whose first bytes, the ClientHello, were already read into `incoming`.
    pub(crate) fn new(
        io: TcpStream,
        conn: UnbufferedServerConnection,
        incoming: Vec<u8>,
        server_name: Option<String>,
    ) -> TlsStream {
        TlsStream {
            io,
            conn,
            received: incoming.len(),
            incoming,
            plain: Vec::new(),
            taken: 0,
            outgoing: Vec::new(),
            sent: 0,
            peer_done: false,
            closing: false,
            server_name,
        }
    }

    /// The host name the client asked for (SNI), if it sent one.
    pub(crate) fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The connection's state, for what the handshake negotiated.
    pub(crate) fn connection(&self) -> &UnbufferedServerConnection {
        &self.conn
    }

    /// Drops `n` processed bytes from the front of `incoming`.
    fn discard(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.incoming.copy_within(n..self.received, 0);
        self.received -= n;
    }

    /// Hands rustls what was received, until it needs more from the peer or the connection
    /// can carry application data: decrypted data goes to `plain`, what rustls has to send
    /// goes to `outgoing`. On a TLS error, rustls' alert is queued for sending first.
    fn process(&mut self) -> io::Result<Next> {
        loop {
            let UnbufferedStatus { mut discard, state } = self
                .conn
                .process_tls_records(&mut self.incoming[..self.received]);
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    self.discard(discard);
                    self.queue_alert();
                    return Err(invalid(e));
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(invalid)?;
                        discard += record.discard;
                        if self.taken == self.plain.len() {
                            self.plain.clear();
                            self.taken = 0;
                        }
                        self.plain.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::ReadEarlyData(mut records) => {
                    // 0-RTT is not enabled; drain whatever comes anyway.
                    while let Some(record) = records.next_record() {
                        discard += record.map_err(invalid)?.discard;
                    }
                }
                ConnectionState::EncodeTlsData(mut tls) => {
                    let at = self.outgoing.len();
                    let mut room = 1024;
                    loop {
                        self.outgoing.resize(at + room, 0);
                        match tls.encode(&mut self.outgoing[at..]) {
                            Ok(n) => {
                                self.outgoing.truncate(at + n);
                                break;
                            }
                            Err(EncodeError::InsufficientSize(s)) => room = s.required_size,
                            Err(e) => {
                                self.outgoing.truncate(at);
                                return Err(invalid(e));
                            }
                        }
                    }
                }
                // What was encoded goes out with the next flush, in order, once.
                ConnectionState::TransmitTlsData(tls) => tls.done(),
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.peer_done = true;
                    self.discard(discard);
                    return Ok(Next::Write);
                }
                ConnectionState::WriteTraffic(_) => {
                    self.discard(discard);
                    return Ok(Next::Write);
                }
                ConnectionState::BlockedHandshake => {
                    self.discard(discard);
                    return Ok(Next::Read);
                }
                _ => {
                    self.discard(discard);
                    return Err(invalid("unexpected TLS connection state"));
                }
            }
            self.discard(discard);
        }
    }

    /// After a TLS error: encodes the alert rustls queued, to be sent before the socket
    /// closes.
    fn queue_alert(&mut self) {
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::EncodeTlsData(mut tls)) = state {
            let at = self.outgoing.len();
            self.outgoing.resize(at + 64, 0);
            let n = tls.encode(&mut self.outgoing[at..]).unwrap_or(0);
            self.outgoing.truncate(at + n);
        }
    }

    /// Encrypts `data` (application data, or with `data` empty and `close` set, a
    /// close_notify) into `outgoing`. The caller made sure the connection can write.
    fn encrypt(&mut self, data: &[u8], close: bool) -> io::Result<()> {
        let UnbufferedStatus { state, .. } = self
            .conn
            .process_tls_records(&mut self.incoming[..self.received]);
        let Ok(ConnectionState::WriteTraffic(mut traffic)) = state else {
            return Err(invalid("TLS connection cannot send application data"));
        };
        let at = self.outgoing.len();
        // Each record of up to 16 KiB adds a header, a content type and a tag.
        let mut room = data.len() + 64 * (data.len() / 16384 + 1);
        loop {
            self.outgoing.resize(at + room, 0);
            let out = &mut self.outgoing[at..];
            let done = if close {
                traffic.queue_close_notify(out)
            } else {
                traffic.encrypt(data, out)
            };
            match done {
                Ok(n) => {
                    self.outgoing.truncate(at + n);
                    return Ok(());
                }
                Err(EncryptError::InsufficientSize(s)) => room = s.required_size,
                Err(e) => {
                    self.outgoing.truncate(at);
                    return Err(invalid(e));
                }
            }
        }
    }

    /// Reads from the socket into `incoming`: `Ready(0)` at its end. While nothing is
    /// buffered, waiting for the socket holds no buffer.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.received >= MAX_INCOMING - READ_SIZE {
            return Poll::Ready(Err(invalid("TLS record or handshake message too large")));
        }
        if self.incoming.len() < self.received + READ_SIZE {
            self.incoming.resize(self.received + READ_SIZE, 0);
        }
        let mut buf = ReadBuf::new(&mut self.incoming[self.received..]);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                self.received += n;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.received == 0 {
                    self.incoming = Vec::new();
                }
                Poll::Pending
            }
        }
    }

    /// Sends what `outgoing` holds; once all of it is out, the buffer is freed.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Drives the handshake to its end (the session tickets that follow it included).
    pub(crate) fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let next = self.process();
            // Whatever rustls wrote (its flight, or an alert) goes out first.
            let sent = self.poll_send(cx)?;
            match next? {
                Next::Write if !self.conn.is_handshaking() => {
                    ready!(sent);
                    return Poll::Ready(Ok(()));
                }
                Next::Write | Next::Read => {
                    if ready!(self.poll_receive(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }

    /// Encrypts `data` and starts sending it: all of it is taken unless the ciphertext not
    /// yet sent is already over [`MAX_UNSENT`].
    fn poll_write_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.outgoing.len() - self.sent >= MAX_UNSENT {
            ready!(self.poll_send(cx))?;
        }
        self.process()?;
        self.encrypt(data, false)?;
        let _ = self.poll_send(cx)?;
        Poll::Ready(Ok(data.len()))
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.taken);
                buf.put_slice(&this.plain[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.plain.len() {
                    this.plain = Vec::new();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_done {
                return Poll::Ready(Ok(()));
            }
            // A key update or ticket rustls answers goes out on the way.
            let processed = this.process();
            let _ = this.poll_send(cx)?;
            processed?;
            if this.taken < this.plain.len() || this.peer_done {
                continue;
            }
            if ready!(this.poll_receive(cx))? == 0 {
                this.peer_done = true;
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_data(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // One encryption for the batch: records as large as they can be, not one per slice.
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (slices.next(), slices.next()) {
            return self.get_mut().poll_write_data(cx, only);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut data = Vec::with_capacity(total);
        for b in bufs {
            data.extend_from_slice(b);
        }
        self.get_mut().poll_write_data(cx, &data)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            this.process()?;
            this.encrypt(&[], true)?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
