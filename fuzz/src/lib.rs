//! What the fuzz targets share: an in-memory stream that hands its bytes out in reads of
//! fuzz-chosen sizes, a sink that keeps what is written, a context to poll futures and
//! readers without a runtime (none of these streams ever returns `Pending`), and an allocator
//! that watches the size of every single allocation against the bytes fed so far.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A context for polling things that never wait: the waker does nothing.
pub fn noop_context() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

/// Polls `f` once; it must be ready, since nothing it reads or writes ever waits.
pub fn poll_ready<T>(f: impl std::future::Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut noop_context()) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("pending on streams that never wait"),
    }
}

/// Read sizes taken from the front of a fuzz input: one byte says how many sizes follow (low
/// four bits), each following byte is a size (1 to 255; 0 means "as much as fits"). The reads
/// cycle through the sizes. Returns the sizes and the rest of the input.
pub fn split_spec(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = (n & 0x0f) as usize;
    let n = n.min(rest.len());
    let sizes = rest[..n]
        .iter()
        .map(|&b| if b == 0 { usize::MAX } else { b as usize })
        .collect();
    (sizes, &rest[n..])
}

/// The whole websocket frames at the start of `stream`, parsed leniently (no check but the
/// structure): each frame's first byte and its unmasked payload, up to the first frame that
/// is incomplete. The fuzz targets' independent reading of what they feed the reader.
pub fn raw_frames(stream: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = stream.get(at..at + 2) {
        let (b0, b1) = (h[0], h[1]);
        let (len, mut next) = match b1 & 0x7f {
            126 => match stream.get(at + 2..at + 4) {
                Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, at + 4),
                None => break,
            },
            127 => match stream.get(at + 2..at + 10) {
                Some(b) => (u64::from_be_bytes(b.try_into().unwrap()), at + 10),
                None => break,
            },
            n => (n as u64, at + 2),
        };
        let mask = if b1 & 0x80 != 0 {
            let Some(m) = stream.get(next..next + 4) else {
                break;
            };
            next += 4;
            [m[0], m[1], m[2], m[3]]
        } else {
            [0; 4]
        };
        if len > (stream.len() - next) as u64 {
            break;
        }
        let len = len as usize;
        let payload = stream[next..next + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        at = next + len;
        out.push((b0, payload));
    }
    out
}

/// An in-memory stream: hands out its bytes in reads of the given sizes (cycling; all that
/// fits when there are none), then end of stream. Never returns `Pending`. Every byte handed
/// out is counted as fed (see [`watch`]).
#[derive(Debug)]
pub struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    next: usize,
}

impl Chunked {
    /// A stream of `data` read in pieces of `sizes`.
    pub fn new(data: &[u8], sizes: Vec<usize>) -> Chunked {
        Chunked {
            data: data.to_vec(),
            pos: 0,
            sizes,
            next: 0,
        }
    }

    /// Bytes handed out so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let want = if self.sizes.is_empty() {
            usize::MAX
        } else {
            let s = self.sizes[self.next % self.sizes.len()];
            self.next += 1;
            s
        };
        let n = want.min(buf.remaining()).min(self.data.len() - self.pos);
        buf.put_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        watch::fed(n);
        Poll::Ready(Ok(()))
    }
}

/// A stream that reads from [`Chunked`] and keeps everything written to it, shared so that
/// it can still be read once the stream is gone.
#[derive(Debug)]
pub struct Duplex {
    /// Where reads come from.
    pub input: Chunked,
    /// What was written.
    pub output: Arc<Mutex<Vec<u8>>>,
    /// Set once the write side was shut down.
    pub shut: Arc<AtomicBool>,
}

impl AsyncRead for Duplex {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl AsyncWrite for Duplex {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        assert!(!self.shut.load(Ordering::Relaxed), "written after shutdown");
        self.output.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut.store(true, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

/// A sink that keeps everything written to it, shared so that it can be read while a writer
/// owns the sink.
#[derive(Debug, Default, Clone)]
pub struct Sink(pub Arc<Mutex<Vec<u8>>>);

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Watches single allocations while a decoder runs: none may exceed twice the bytes fed so
/// far plus [`watch::SLACK`]. Install [`Watching`] as the global allocator of a target to
/// use it.
pub mod watch {
    use super::*;

    /// Room an allocation may take beyond twice the bytes fed: a read buffer's first read
    /// size and then some.
    pub const SLACK: usize = 128 * 1024;

    static ON: AtomicBool = AtomicBool::new(false);
    static FED: AtomicUsize = AtomicUsize::new(0);
    static WORST: AtomicUsize = AtomicUsize::new(0);
    static WORST_FED: AtomicUsize = AtomicUsize::new(0);

    /// Starts watching, with nothing fed yet.
    pub fn start() {
        FED.store(0, Ordering::Relaxed);
        WORST.store(0, Ordering::Relaxed);
        WORST_FED.store(0, Ordering::Relaxed);
        ON.store(true, Ordering::Relaxed);
    }

    /// Stops watching for a while (checks of the target's own that allocate freely).
    pub fn pause() {
        ON.store(false, Ordering::Relaxed);
    }

    /// Watches again after [`pause`].
    pub fn resume() {
        ON.store(true, Ordering::Relaxed);
    }

    /// Counts `n` more bytes as fed to the decoder.
    pub fn fed(n: usize) {
        FED.fetch_add(n, Ordering::Relaxed);
    }

    /// Stops watching; the largest allocation over the budget and the bytes fed when it was
    /// made, if there was one.
    pub fn stop() -> Option<(usize, usize)> {
        ON.store(false, Ordering::Relaxed);
        match WORST.load(Ordering::Relaxed) {
            0 => None,
            n => Some((n, WORST_FED.load(Ordering::Relaxed))),
        }
    }

    pub(crate) fn check(size: usize) {
        if !ON.load(Ordering::Relaxed) {
            return;
        }
        let fed = FED.load(Ordering::Relaxed);
        if size > fed.saturating_mul(2).saturating_add(SLACK)
            && size > WORST.load(Ordering::Relaxed)
        {
            // No panic in here: only a note, checked by the target after the decoder ran.
            WORST.store(size, Ordering::Relaxed);
            WORST_FED.store(fed, Ordering::Relaxed);
        }
    }
}

/// The system allocator, with every allocation's size checked by [`watch`].
pub struct Watching;

// SAFETY: every call is passed on to the system allocator unchanged; the check only reads and
// writes atomics and never allocates.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        watch::check(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        watch::check(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        watch::check(new_size);
        System.realloc(ptr, layout, new_size)
    }
}
