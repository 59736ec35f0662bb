//! The read buffer: memory only while there is something in it, one pointer otherwise.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;

use super::pool::{self, Boxed};

/// A read buffer that holds memory only while there is something in it.
///
/// Frame decoders look at [`ReadBuffer::buf`], ask for more with [`ReadBuffer::poll_fill`], and
/// split complete payloads off the front with `split_to(n).freeze()`: the payload keeps the
/// allocation alive, nothing is copied.
///
/// 16 bytes: the buffer is boxed (and absent while empty), and the read sizes are `u32`.
#[derive(Debug)]
pub struct ReadBuffer {
    /// The bytes read and not yet consumed, or `None` while the connection is idle.
    buf: Option<Boxed>,
    /// The configured read size.
    chunk: u32,
    /// The read size in use: doubles (up to [`MAX_READ_SIZE`]) while reads fill the buffer,
    /// so a connection that receives large messages reads each in one go instead of growing
    /// (and copying) its buffer message after message.
    next: u32,
}

/// The largest read size [`ReadBuffer`] grows to on its own.
pub const MAX_READ_SIZE: usize = 64 * 1024;

/// A configured read size as kept: at least 64 bytes, at most `u32::MAX`.
fn read_size(chunk: usize) -> u32 {
    chunk.clamp(64, u32::MAX as usize) as u32
}

impl ReadBuffer {
    /// A buffer that reads in chunks of `chunk` bytes (at least 64). Allocates nothing yet.
    pub fn new(chunk: usize) -> ReadBuffer {
        ReadBuffer {
            buf: None,
            chunk: read_size(chunk),
            next: read_size(chunk),
        }
    }

    /// A buffer that starts with bytes already read from the stream (for example, bytes that
    /// arrived behind an HTTP upgrade request).
    pub fn with_bytes(chunk: usize, bytes: BytesMut) -> ReadBuffer {
        ReadBuffer {
            buf: (!bytes.is_empty()).then(|| Box::new(bytes)),
            ..ReadBuffer::new(chunk)
        }
    }

    /// The bytes read and not yet consumed. (A decoder need not look while
    /// [`ReadBuffer::is_empty`]: on an idle connection this allocates an empty buffer's box,
    /// which the next [`ReadBuffer::poll_fill`] replaces with a buffer sized for its read.)
    pub fn buf(&mut self) -> &mut BytesMut {
        self.buf.get_or_insert_with(Default::default)
    }

    /// How many bytes are buffered.
    pub fn len(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len())
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How much memory the buffer holds right now (0 for an idle connection).
    pub fn capacity(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.capacity())
    }

    /// Reads once from `io`, making room first for `want` more bytes (a decoder that knows the
    /// length of the frame it is reading passes the missing length).
    ///
    /// A declared length is the peer's word, not bytes: room grows with what has arrived, at
    /// most doubling the buffered bytes per step (or one read size, [`MAX_READ_SIZE`], when
    /// little is buffered), so a header that claims 4 MiB costs nothing until the 4 MiB come.
    /// The memory for a growth step is requested fallibly: when it cannot be had, the read
    /// fails with [`io::ErrorKind::OutOfMemory`] and only this connection ends.
    ///
    /// Returns the number of bytes read; 0 means end of stream. When the read would block and
    /// nothing is buffered, the memory is released before returning `Pending`.
    pub fn poll_fill<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        let want = want.min(self.len().max(MAX_READ_SIZE));
        let size = want.max(self.next as usize);
        if self.capacity() == 0 {
            if let Some(b) = pool::take(size) {
                self.buf = Some(b);
            }
        }
        // Without a cached buffer, an empty one that `grow` sizes exactly.
        let buf = self.buf.get_or_insert_with(Default::default);
        let spare = buf.capacity() - buf.len();
        if spare < want.max(1) || spare < 64 {
            if let Err(e) = grow(buf, size) {
                return Poll::Ready(Err(e));
            }
        }
        let room = buf.capacity() - buf.len();
        // Only a read into an empty buffer says how large messages are: one that completes a
        // message read in part returns its last few bytes, which must not shrink the next read
        // (a 16 KiB message would then be read in two calls every time).
        let fresh = buf.is_empty();
        match tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut **buf) {
            Poll::Pending => {
                if buf.is_empty() {
                    if let Some(b) = self.buf.take() {
                        pool::give(b);
                    }
                }
                Poll::Pending
            }
            Poll::Ready(Ok(n)) => {
                let max = MAX_READ_SIZE as u32;
                if n == room && self.next < max {
                    self.next = self.next.saturating_mul(2).min(max);
                } else if fresh && n < (self.next / 8) as usize && self.next > self.chunk {
                    self.next = (self.next / 2).max(self.chunk);
                }
                Poll::Ready(Ok(n))
            }
            err => err,
        }
    }
}

/// Makes room in `buf` for `additional` more bytes: in place when the buffer's own memory can
/// be reclaimed; otherwise in a new allocation of exactly what is needed, requested fallibly,
/// into which what is buffered moves.
///
/// Exactly: `BytesMut::reserve` would grow the allocation the way a `Vec` does, to twice its
/// size, and a buffer from the cache may be large already (64 KiB read for a message that is
/// no longer coming), so a few bytes fed could cost 128 KiB.
fn grow(buf: &mut BytesMut, additional: usize) -> io::Result<()> {
    if buf.try_reclaim(additional) {
        return Ok(());
    }
    let cap = buf.len().saturating_add(additional);
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(cap).map_err(|_| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("cannot allocate {cap} bytes for a read buffer"),
        )
    })?;
    v.extend_from_slice(buf);
    // A Vec with spare capacity becomes a BytesMut without a copy.
    *buf = BytesMut::from(Bytes::from(v));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;
    use tokio::io::AsyncReadExt;

    /// Every idle connection carries a read buffer and a write buffer: one pointer (and the
    /// read sizes) each.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn idle_buffers_are_a_pointer_each() {
        assert_eq!(std::mem::size_of::<ReadBuffer>(), 16);
        assert_eq!(std::mem::size_of::<crate::WriteBuffer>(), 16);
        let mut rb = ReadBuffer::new(4096);
        assert_eq!((rb.len(), rb.capacity()), (0, 0));
        rb.buf().extend_from_slice(b"abc");
        assert_eq!(rb.len(), 3);
    }

    #[tokio::test]
    async fn read_buffer_grows_with_the_bytes_that_arrive_not_with_what_is_declared() {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let (mut rd, _wr) = tokio::io::split(b);
        let mut rb = ReadBuffer::new(4096);
        let declared = 4 << 20;
        tokio::io::AsyncWriteExt::write_all(&mut a, &[7u8; 15])
            .await
            .unwrap();
        let n = poll_fn(|cx| rb.poll_fill(&mut rd, cx, declared))
            .await
            .unwrap();
        assert_eq!(n, 15);
        assert!(
            rb.capacity() <= 2 * MAX_READ_SIZE,
            "15 bytes declaring 4 MiB hold {} bytes",
            rb.capacity()
        );
        // As the bytes come, room grows in steps that at most double what is buffered.
        let chunk = vec![1u8; 256 * 1024];
        while rb.len() < declared {
            tokio::io::AsyncWriteExt::write_all(&mut a, &chunk)
                .await
                .unwrap();
            while rb.len() < declared {
                let want = declared - rb.len();
                let before = rb.len();
                let r = poll_fn(|cx| Poll::Ready(rb.poll_fill(&mut rd, cx, want))).await;
                match r {
                    Poll::Ready(Ok(n)) => assert!(n > 0),
                    _ => break,
                }
                assert!(
                    rb.capacity() <= 4 * before.max(MAX_READ_SIZE) + 2 * MAX_READ_SIZE,
                    "{} bytes buffered hold {} bytes",
                    rb.len(),
                    rb.capacity()
                );
            }
        }
        assert!(rb.len() >= declared);
    }

    #[tokio::test]
    async fn the_last_bytes_of_a_message_do_not_shrink_the_next_read() {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let (mut rd, _wr) = tokio::io::split(b);
        // Reading 16 KiB messages: the read size has grown past them.
        let mut rb = ReadBuffer::with_bytes(4096, BytesMut::from(&[1u8; 16 * 1024][..]));
        rb.next = 32 * 1024;
        // The message's last 8 bytes complete it: they say nothing of the next message.
        tokio::io::AsyncWriteExt::write_all(&mut a, &[1u8; 8])
            .await
            .unwrap();
        let n = poll_fn(|cx| rb.poll_fill(&mut rd, cx, 8)).await.unwrap();
        assert_eq!(n, 8);
        assert_eq!(rb.next, 32 * 1024);
        // A read into an empty buffer that brings little does shrink it.
        rb.buf().clear();
        tokio::io::AsyncWriteExt::write_all(&mut a, &[1u8; 8])
            .await
            .unwrap();
        poll_fn(|cx| rb.poll_fill(&mut rd, cx, 1)).await.unwrap();
        assert_eq!(rb.next, 16 * 1024);
    }

    #[tokio::test]
    async fn a_cached_buffer_grows_to_what_is_needed_not_twice_its_size() {
        // A read buffer of a past large message, back in the cache.
        let mut big = BytesMut::with_capacity(MAX_READ_SIZE);
        big.extend_from_slice(&[0u8; 100]);
        drop(big.split_to(100).freeze());
        pool::give(Box::new(big));
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let (mut rd, _wr) = tokio::io::split(b);
        let mut rb = ReadBuffer::new(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, &[1u8; 16])
            .await
            .unwrap();
        let n = poll_fn(|cx| rb.poll_fill(&mut rd, cx, 8)).await.unwrap();
        assert_eq!(n, 16);
        // A header declared a large message: room for one more read size, no more.
        let n = poll_fn(|cx| Poll::Ready(rb.poll_fill(&mut rd, cx, 4 << 20))).await;
        assert!(n.is_pending());
        assert!(
            rb.capacity() <= 16 + MAX_READ_SIZE,
            "16 bytes buffered hold {} bytes",
            rb.capacity()
        );
    }

    #[tokio::test]
    async fn read_buffer_releases_memory_when_idle() {
        let (mut a, b) = tokio::io::duplex(64);
        let (mut rd, _wr) = tokio::io::split(b);
        let mut rb = ReadBuffer::new(4096);
        // Nothing to read: the poll is pending and the buffer gives its memory back.
        let pending = poll_fn(|cx| Poll::Ready(rb.poll_fill(&mut rd, cx, 0).is_pending())).await;
        assert!(pending);
        assert_eq!(rb.capacity(), 0);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"hello")
            .await
            .unwrap();
        let n = poll_fn(|cx| rb.poll_fill(&mut rd, cx, 0)).await.unwrap();
        assert_eq!(n, 5);
        assert_eq!(&rb.buf()[..], b"hello");
        drop(a);
        let n = poll_fn(|cx| rb.poll_fill(&mut rd, cx, 0)).await.unwrap();
        assert_eq!(n, 0, "end of stream");
        let mut rest = Vec::new();
        rd.read_to_end(&mut rest).await.unwrap();
    }
}
