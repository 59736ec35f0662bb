//! The write buffer: small pieces copied together, large payloads written by reference, and
//! nothing held once a batch is flushed.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use super::pool::{self, Boxed};

/// Bytes waiting to be written, in order: small pieces are copied together into one staging
/// buffer, large payloads are kept as they are and written with vectored writes, so a payload
/// of any size is never copied on its way to the socket.
///
/// 16 bytes: the staging buffer and the queue of large payloads are each behind a pointer and
/// absent while there is nothing to write, and what is pending is counted from them.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    /// Large payloads ready to go, in order, before `staging`; absent unless one is queued.
    // Boxed: one pointer, where an empty queue is four words; large payloads are rare.
    #[allow(clippy::box_collection)]
    segments: Option<Box<VecDeque<Bytes>>>,
    /// Small pieces copied together; always written after `segments`.
    staging: Option<Boxed>,
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
        let staged = self.staging.as_ref().map_or(0, |s| s.len());
        match &self.segments {
            None => staged,
            Some(segments) => staged + segments.iter().map(Bytes::len).sum::<usize>(),
        }
    }

    /// True when nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// Memory held for staging (0 once a batch has been flushed).
    pub fn capacity(&self) -> usize {
        self.staging.as_ref().map_or(0, |s| s.capacity())
    }

    /// Drops everything queued and not yet written.
    pub fn clear(&mut self) {
        self.segments = None;
        if let Some(s) = self.staging.take() {
            pool::give(s);
        }
    }

    /// The staging buffer, for a codec to encode a header (or a small frame) into.
    pub fn staging(&mut self) -> &mut BytesMut {
        self.staging
            .get_or_insert_with(|| pool::take_or_new(0, pool::MIN_POOLED_SIZE))
    }

    /// Records that `n` bytes were appended to [`WriteBuffer::staging`]. (They are counted
    /// from the staging buffer itself; this says so at the call site.)
    pub fn staged(&mut self, n: usize) {
        debug_assert!(self.staging.as_ref().map_or(0, |s| s.len()) >= n);
    }

    /// Queues a payload: copied into staging when small, kept by reference when large.
    pub fn push_payload(&mut self, payload: Bytes) {
        if payload.is_empty() {
            return;
        }
        if payload.len() <= COPY_THRESHOLD {
            self.staging().extend_from_slice(&payload);
        } else {
            let segments = self.segments.get_or_insert_with(Default::default);
            if let Some(staged) = self.staging.as_mut().filter(|s| !s.is_empty()) {
                segments.push_back(staged.split().freeze());
            }
            segments.push_back(payload);
        }
    }

    /// Queues bytes shared with other writers (a room's publish, encoded once): copied into
    /// staging when small, like a payload; shared by reference when large.
    pub fn push_shared(&mut self, bytes: &Bytes) {
        if bytes.len() <= COPY_THRESHOLD {
            if !bytes.is_empty() {
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
        loop {
            let staged: &[u8] = self.staging.as_deref().map_or(&[], |s| &s[..]);
            let n = match self.segments.as_deref().filter(|s| !s.is_empty()) {
                None if staged.is_empty() => break,
                None => ready!(Pin::new(&mut *io).poll_write(cx, staged))?,
                Some(segments) => {
                    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                    let mut count = 0;
                    for seg in segments.iter().take(MAX_IOVECS) {
                        slices[count] = IoSlice::new(seg);
                        count += 1;
                    }
                    if count < MAX_IOVECS && !staged.is_empty() {
                        slices[count] = IoSlice::new(staged);
                        count += 1;
                    }
                    ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(n);
        }
        if let Some(s) = self.staging.take() {
            pool::give(s);
        }
        self.segments = None;
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
        if let Some(segments) = self.segments.as_mut() {
            while n > 0 {
                let Some(front) = segments.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    segments.pop_front();
                } else {
                    front.advance(n);
                    return;
                }
            }
        }
        if n > 0 {
            if let Some(s) = self.staging.as_mut() {
                s.advance(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

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
}
