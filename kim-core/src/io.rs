//! The streams kim serves: [`Io`], what an [`Upgrader`](crate::Upgrader) is given, and
//! [`Generic`], which makes any stream one. (The buffers the transports read and write with
//! are the `kim-io` crate's.)

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream that kim can serve: readable, writable, and splittable into halves for a
/// client, which reads in one task while others write. (A server's channel is one task and
/// keeps its stream whole.)
///
/// TCP and Unix streams split without a lock. Any other stream (TLS, an in-memory duplex) can be
/// wrapped in [`Generic`], which splits it with [`tokio::io::split`].
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The half that reads.
    type ReadHalf: AsyncRead + Send + Unpin + 'static;
    /// The half that writes.
    type WriteHalf: AsyncWrite + Send + Unpin + 'static;

    /// Splits the stream into its two halves.
    fn split_io(self) -> (Self::ReadHalf, Self::WriteHalf);
}

impl Io for tokio::net::TcpStream {
    type ReadHalf = tokio::net::tcp::OwnedReadHalf;
    type WriteHalf = tokio::net::tcp::OwnedWriteHalf;

    fn split_io(self) -> (Self::ReadHalf, Self::WriteHalf) {
        self.into_split()
    }
}

impl Io for tokio::net::UnixStream {
    type ReadHalf = tokio::net::unix::OwnedReadHalf;
    type WriteHalf = tokio::net::unix::OwnedWriteHalf;

    fn split_io(self) -> (Self::ReadHalf, Self::WriteHalf) {
        self.into_split()
    }
}

/// Wraps any stream so that it can be served; its halves share a lock inside
/// [`tokio::io::split`], held only for the duration of one poll.
#[derive(Debug)]
pub struct Generic<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for Generic<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Generic<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for Generic<T> {
    type ReadHalf = tokio::io::ReadHalf<T>;
    type WriteHalf = tokio::io::WriteHalf<T>;

    fn split_io(self) -> (Self::ReadHalf, Self::WriteHalf) {
        tokio::io::split(self.0)
    }
}
