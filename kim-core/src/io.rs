//! Byte-level plumbing shared by the transports: splitting a stream into halves, a read buffer
//! that costs nothing while its connection is idle, and a write buffer that sends a batch of
//! frames with vectored writes.
//!
//! Idle connections dominate an IM gateway: tens of thousands of clients that send a heartbeat
//! a minute. A read buffer held per connection would cost more than everything else kim keeps
//! per channel, so [`ReadBuffer`] allocates when a read is attempted and gives the memory back
//! when the read would block with nothing buffered. [`WriteBuffer`] does the same once a batch
//! has been flushed.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream that kim can serve: readable, writable, and splittable into halves that are
/// used from the read side and the write side of a channel.
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

/// A read buffer that holds memory only while there is something in it.
///
/// Frame decoders look at [`ReadBuffer::buf`], ask for more with [`ReadBuffer::poll_fill`], and
/// split complete payloads off the front with `split_to(n).freeze()`: the payload keeps the
/// allocation alive, nothing is copied.
#[derive(Debug)]
pub struct ReadBuffer {
    buf: BytesMut,
    /// The configured read size.
    chunk: usize,
    /// The read size in use: doubles (up to [`MAX_READ_SIZE`]) while reads fill the buffer,
    /// so a connection that receives large messages reads each in one go instead of growing
    /// (and copying) its buffer message after message.
    next: usize,
}

/// The largest read size [`ReadBuffer`] grows to on its own.
pub const MAX_READ_SIZE: usize = 64 * 1024;

impl ReadBuffer {
    /// A buffer that reads in chunks of `chunk` bytes (at least 64). Allocates nothing yet.
    pub fn new(chunk: usize) -> ReadBuffer {
        ReadBuffer {
            buf: BytesMut::new(),
            chunk: chunk.max(64),
            next: chunk.max(64),
        }
    }

    /// A buffer that starts with bytes already read from the stream (for example, bytes that
    /// arrived behind an HTTP upgrade request).
    pub fn with_bytes(chunk: usize, bytes: BytesMut) -> ReadBuffer {
        ReadBuffer {
            buf: bytes,
            chunk: chunk.max(64),
            next: chunk.max(64),
        }
    }

    /// The bytes read and not yet consumed.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// How many bytes are buffered.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// How much memory the buffer holds right now (0 for an idle connection).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
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
        let want = want.min(self.buf.len().max(MAX_READ_SIZE));
        let size = want.max(self.next);
        if self.buf.capacity() == 0 {
            if let Some(b) = pool::take(size) {
                self.buf = b;
            }
        }
        let spare = self.buf.capacity() - self.buf.len();
        if spare < want.max(1) || spare < 64 {
            if let Err(e) = self.grow(size) {
                return Poll::Ready(Err(e));
            }
        }
        let room = self.buf.capacity() - self.buf.len();
        // Only a read into an empty buffer says how large messages are: one that completes a
        // message read in part returns its last few bytes, which must not shrink the next read
        // (a 16 KiB message would then be read in two calls every time).
        let fresh = self.buf.is_empty();
        match tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf) {
            Poll::Pending => {
                if self.buf.is_empty() && self.buf.capacity() > 0 {
                    pool::give(std::mem::take(&mut self.buf));
                }
                Poll::Pending
            }
            Poll::Ready(Ok(n)) => {
                if n == room && self.next < MAX_READ_SIZE {
                    self.next = (self.next * 2).min(MAX_READ_SIZE);
                } else if fresh && n < self.next / 8 && self.next > self.chunk {
                    self.next = (self.next / 2).max(self.chunk);
                }
                Poll::Ready(Ok(n))
            }
            err => err,
        }
    }

    /// Makes room for `additional` more bytes: in place when the buffer's own memory can be
    /// reclaimed; otherwise in a new allocation of exactly what is needed, requested
    /// fallibly, into which what is buffered moves.
    ///
    /// Exactly: `BytesMut::reserve` would grow the allocation the way a `Vec` does, to twice
    /// its size, and a buffer from the cache may be large already (64 KiB read for a message
    /// that is no longer coming), so a few bytes fed could cost 128 KiB.
    fn grow(&mut self, additional: usize) -> io::Result<()> {
        if self.buf.try_reclaim(additional) {
            return Ok(());
        }
        let cap = self.buf.len().saturating_add(additional);
        let mut v: Vec<u8> = Vec::new();
        v.try_reserve_exact(cap).map_err(|_| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate {cap} bytes for a read buffer"),
            )
        })?;
        v.extend_from_slice(&self.buf);
        // A Vec with spare capacity becomes a BytesMut without a copy.
        self.buf = BytesMut::from(Bytes::from(v));
        Ok(())
    }
}

/// A small per-thread cache of empty buffers. A busy connection releases its read buffer
/// whenever a read would block and takes one again with the next message; the cache turns
/// that into a pop and a push instead of a free and a malloc, while idle connections still
/// hold nothing. Bounded: at most [`pool::MAX_POOLED`] buffers of at most
/// [`pool::MAX_POOLED_SIZE`] bytes per thread.
pub mod pool {
    use std::cell::RefCell;

    use bytes::BytesMut;

    /// Buffers kept per thread.
    pub const MAX_POOLED: usize = 16;
    /// The smallest buffer kept, and the least a staging buffer is given: one read's worth,
    /// so that a buffer a writer gave back serves the next read. (Smaller ones, kept, would
    /// be taken for a read, found too small and let go: a miss, then an allocation.)
    pub const MIN_POOLED_SIZE: usize = 4096;
    /// The largest buffer kept.
    pub const MAX_POOLED_SIZE: usize = 64 * 1024;

    thread_local! {
        static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer with room for at least `min` bytes, if one is cached.
    ///
    /// A cached buffer may still share its allocation with payloads split off it earlier,
    /// and its room shrinks by what they took; `try_reclaim` gives the room back without
    /// allocating once they are gone. One that cannot serve this caller (too small, or still
    /// shared) stays for another.
    pub fn take(min: usize) -> Option<BytesMut> {
        POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            // The most recently given first (its memory is the likeliest to be in cache);
            // one too small for this read, or still shared, stays for another.
            let i = p.iter_mut().rposition(|b| b.try_reclaim(min))?;
            Some(p.remove(i))
        })
        .ok()
        .flatten()
    }

    /// Returns a buffer to the cache unless it is too large or the cache is full; otherwise
    /// frees it (its memory, once no payload shares it).
    pub fn give(mut b: BytesMut) {
        b.clear();
        // Payloads split off the front took their room with them; `take` gets it back once
        // they are gone. Only a buffer with little room left is checked here, so that one
        // that is truly small is not kept.
        if b.capacity() < MIN_POOLED_SIZE / 2 && !b.try_reclaim(MIN_POOLED_SIZE) {
            return;
        }
        if b.capacity() > MAX_POOLED_SIZE {
            return;
        }
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < MAX_POOLED {
                p.push(b);
            }
        });
    }
}

/// Bytes waiting to be written, in order: small pieces are copied together into one staging
/// buffer, large payloads are kept as they are and written with vectored writes, so a payload
/// of any size is never copied on its way to the socket.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    /// Segments ready to go, in order, before `staging`.
    segments: VecDeque<Bytes>,
    /// Small pieces copied together; always written after `segments`.
    staging: BytesMut,
    /// Total bytes not yet written.
    pending: usize,
}

/// Payloads up to this size are copied into the staging buffer, so that a batch of them goes
/// out with one plain `send`. A vectored write costs the kernel more than the copy it saves
/// until payloads reach several KiB: echoing 1 KiB messages, the `writev` path (importing and
/// walking the iovec, copying from two pieces) took about 400 ns more per message than `send`
/// (perf, uWebSockets' load_test, 10 connections), where copying 1 KiB costs a few tens.
pub const COPY_THRESHOLD: usize = 4096;

/// The most slices handed to one vectored write.
const MAX_IOVECS: usize = 64;

impl WriteBuffer {
    /// An empty buffer; allocates nothing until something is queued.
    pub fn new() -> WriteBuffer {
        WriteBuffer::default()
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// True when nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Memory held for staging (0 once a batch has been flushed).
    pub fn capacity(&self) -> usize {
        self.staging.capacity()
    }

    /// Drops everything queued and not yet written.
    pub fn clear(&mut self) {
        self.segments.clear();
        self.staging.clear();
        self.pending = 0;
    }

    /// The staging buffer, for a codec to encode a header (or a small frame) into.
    pub fn staging(&mut self) -> &mut BytesMut {
        if self.staging.capacity() == 0 {
            self.staging =
                pool::take(0).unwrap_or_else(|| BytesMut::with_capacity(pool::MIN_POOLED_SIZE));
        }
        &mut self.staging
    }

    /// Records that `n` bytes were appended to [`WriteBuffer::staging`].
    pub fn staged(&mut self, n: usize) {
        self.pending += n;
    }

    /// Queues a payload: copied into staging when small, kept by reference when large.
    pub fn push_payload(&mut self, payload: Bytes) {
        if payload.is_empty() {
            return;
        }
        self.pending += payload.len();
        if payload.len() <= COPY_THRESHOLD {
            self.staging().extend_from_slice(&payload);
        } else {
            if !self.staging.is_empty() {
                self.segments.push_back(self.staging.split().freeze());
            }
            self.segments.push_back(payload);
        }
    }

    /// Queues bytes shared with other writers (a room's publish, encoded once): copied into
    /// staging when small, like a payload; shared by reference when large.
    pub fn push_shared(&mut self, bytes: &Bytes) {
        if bytes.len() <= COPY_THRESHOLD {
            if !bytes.is_empty() {
                self.pending += bytes.len();
                self.staging().extend_from_slice(bytes);
            }
        } else {
            self.push_payload(bytes.clone());
        }
    }

    /// Writes everything queued, then flushes `io`. Memory is released once all is written.
    pub fn poll_flush<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending > 0 {
            let n = if self.segments.is_empty() {
                ready!(Pin::new(&mut *io).poll_write(cx, &self.staging))?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for seg in self.segments.iter().take(MAX_IOVECS) {
                    slices[count] = IoSlice::new(seg);
                    count += 1;
                }
                if count < MAX_IOVECS && !self.staging.is_empty() {
                    slices[count] = IoSlice::new(&self.staging);
                    count += 1;
                }
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(n);
        }
        if self.staging.capacity() > 0 {
            pool::give(std::mem::take(&mut self.staging));
        }
        if self.segments.capacity() > 0 {
            self.segments = VecDeque::new();
        }
        Pin::new(&mut *io).poll_flush(cx)
    }

    /// Writes everything queued, flushes, then shuts the write direction of `io` down.
    pub fn poll_shutdown<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(io, cx))?;
        Pin::new(io).poll_shutdown(cx)
    }

    fn consume(&mut self, mut n: usize) {
        self.pending -= n;
        while n > 0 {
            if let Some(front) = self.segments.front_mut() {
                if n >= front.len() {
                    n -= front.len();
                    self.segments.pop_front();
                } else {
                    front.advance(n);
                    return;
                }
            } else {
                self.staging.advance(n);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncReadExt;

    /// A writer that accepts at most `limit` bytes per call, to exercise partial writes.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn write_buffer_keeps_order_across_partial_writes() {
        let mut wb = WriteBuffer::new();
        let mut expect = Vec::new();
        for i in 0..50usize {
            let header = [i as u8; 3];
            wb.staging().extend_from_slice(&header);
            wb.staged(3);
            let payload = Bytes::from(vec![
                (i * 7) as u8;
                if i % 3 == 0 {
                    COPY_THRESHOLD + 1000
                } else {
                    10
                }
            ]);
            expect.extend_from_slice(&header);
            expect.extend_from_slice(&payload);
            wb.push_payload(payload);
        }
        assert_eq!(wb.pending(), expect.len());
        for limit in [1, 7, 1000, usize::MAX] {
            let mut copy = WriteBuffer::new();
            copy.staging().extend_from_slice(&expect);
            copy.staged(expect.len());
            let mut w = Trickle { out: vec![], limit };
            poll_fn(|cx| copy.poll_flush(&mut w, cx)).await.unwrap();
            assert_eq!(w.out, expect);
        }
        let mut w = Trickle {
            out: vec![],
            limit: 333,
        };
        poll_fn(|cx| wb.poll_flush(&mut w, cx)).await.unwrap();
        assert_eq!(w.out, expect);
        assert!(wb.is_empty());
        assert_eq!(wb.capacity(), 0, "memory is released after a flush");
    }

    #[tokio::test]
    async fn shared_bytes_go_out_in_order_copied_when_small_and_referenced_when_large() {
        let small = Bytes::from(vec![1u8; 100]);
        let large = Bytes::from(vec![2u8; COPY_THRESHOLD + 1]);
        let mut wb = WriteBuffer::new();
        for b in [&small, &large, &small, &Bytes::new()] {
            wb.push_shared(b);
        }
        assert_eq!(wb.pending(), 200 + large.len());
        let mut w = Trickle {
            out: vec![],
            limit: 77,
        };
        poll_fn(|cx| wb.poll_flush(&mut w, cx)).await.unwrap();
        let mut expect = small.to_vec();
        expect.extend_from_slice(&large);
        expect.extend_from_slice(&small);
        assert_eq!(w.out, expect);
        // The large one was shared, not copied: its owner and the buffer held it (now 1).
        assert!(large.is_unique());
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
        pool::give(big);
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

    #[test]
    fn a_buffer_given_back_after_its_payloads_are_gone_is_taken_again_whole() {
        let mut b = BytesMut::with_capacity(8192);
        b.extend_from_slice(&[7u8; 100]);
        let payload = b.split_to(100).freeze();
        let base = b.as_ptr() as usize - 100;
        drop(payload);
        pool::give(b);
        // A small buffer given back is not kept: it could serve no read.
        pool::give(BytesMut::with_capacity(16));
        let again = pool::take(8192).expect("the buffer is cached");
        assert_eq!(
            again.as_ptr() as usize,
            base,
            "the same memory, from its start"
        );
        assert!(again.capacity() >= 8192);
        assert!(pool::take(1).is_none(), "nothing else was kept");
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
