//! Receiving: datagrams put back together into messages, small ones split off a shared
//! arena and large ones read straight into their final buffer.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{Header, Kind, BEGIN, END, HEADER_LEN, MIN_CHUNK};

/// One `recvmsg` into a header buffer and a body buffer. Returns the datagram's real length
/// (`MSG_TRUNC`), which is more than was stored when the buffers were too short.
fn recv_two(
    fd: RawFd,
    header: &mut [u8; HEADER_LEN],
    body: &mut [MaybeUninit<u8>],
    peek: bool,
) -> io::Result<usize> {
    let mut iov = [
        libc::iovec {
            iov_base: header.as_mut_ptr() as *mut libc::c_void,
            iov_len: HEADER_LEN,
        },
        libc::iovec {
            iov_base: body.as_mut_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    // SAFETY: as in send_two; the kernel writes at most iov_len bytes into each buffer.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = if body.is_empty() { 1 } else { 2 };
    let mut flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC;
    if peek {
        flags |= libc::MSG_PEEK;
    }
    loop {
        // SAFETY: msg is valid and its buffers are writable for their lengths.
        let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A message put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// What the message is.
    pub kind: Kind,
    /// The channel key, or 0.
    pub key: u64,
    /// Kind-specific byte.
    pub aux: u8,
    /// The payload: for a multi-datagram message, the very buffer its chunks were read into.
    pub payload: Bytes,
}

/// Counters of a receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// Messages delivered whole.
    pub messages: u64,
    /// Datagrams read.
    pub datagrams: u64,
    /// Chunks that arrived with no BEGIN (for example, the rest of a message whose receiver
    /// died after its BEGIN), consumed and dropped.
    pub orphan_chunks: u64,
    /// Partial messages dropped after the TTL.
    pub expired: u64,
    /// Messages refused for a total length over the maximum.
    pub refused: u64,
    /// Datagrams dropped as malformed (short, unknown version or kind, wrong offset).
    pub malformed: u64,
}

impl RecvStats {
    /// Adds another receiver's counters to these.
    pub fn add(&mut self, o: &RecvStats) {
        self.messages += o.messages;
        self.datagrams += o.datagrams;
        self.orphan_chunks += o.orphan_chunks;
        self.expired += o.expired;
        self.refused += o.refused;
        self.malformed += o.malformed;
    }
}

struct Partial {
    kind: Kind,
    key: u64,
    aux: u8,
    total: usize,
    /// `None` for a refused message whose chunks are being discarded.
    buf: Option<BytesMut>,
    /// Bytes received so far (== buf.len() when buf is Some).
    got: usize,
    started: Instant,
}

/// The arena for single-datagram messages is renewed in blocks of at least this size.
const ARENA_BLOCK: usize = 256 * 1024;

/// Puts datagrams back together into messages (see the module docs).
pub struct Reassembler {
    max_message: usize,
    max_chunk: usize,
    ttl: Duration,
    partials: HashMap<u32, Partial>,
    arena: BytesMut,
    stats: RecvStats,
    last_sweep: Instant,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("partials", &self.partials.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Reassembler {
    /// A receiver for messages of at most `max_message` bytes in datagrams of at most
    /// `max_chunk` payload bytes; partial messages older than `ttl` are dropped.
    pub fn new(max_message: usize, max_chunk: usize, ttl: Duration) -> Reassembler {
        Reassembler {
            max_message,
            max_chunk: max_chunk.max(MIN_CHUNK),
            ttl,
            partials: HashMap::new(),
            arena: BytesMut::new(),
            stats: RecvStats::default(),
            last_sweep: Instant::now(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> RecvStats {
        self.stats
    }

    /// Messages in progress.
    pub fn partial_count(&self) -> usize {
        self.partials.len()
    }

    /// Where the final buffer of message `msg_id` (in progress) starts, to check that the
    /// payload delivered at its END is that very buffer.
    #[cfg(test)]
    pub(crate) fn partial_buffer(&self, msg_id: u32) -> Option<*const u8> {
        self.partials
            .get(&msg_id)
            .and_then(|p| p.buf.as_ref())
            .map(|b| b.as_ptr())
    }

    /// Drops partial messages older than the TTL.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        let before = self.partials.len();
        self.partials
            .retain(|_, p| now.saturating_duration_since(p.started) < ttl);
        let dropped = before - self.partials.len();
        if dropped > 0 {
            self.stats.expired += dropped as u64;
            tracing::warn!(dropped, "ipc: partial messages expired");
        }
        self.last_sweep = now;
    }

    /// Reads datagrams from the non-blocking socket `fd` until one completes a message.
    /// `Err(WouldBlock)` when the socket is empty; other errors are the socket's.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<Received> {
        loop {
            if let Some(m) = self.recv_one(fd)? {
                return Ok(m);
            }
        }
    }

    /// Reads one datagram; `Some` when it completed a message.
    pub fn recv_one(&mut self, fd: BorrowedFd<'_>) -> io::Result<Option<Received>> {
        let fd = fd.as_raw_fd();
        if !self.partials.is_empty() && self.last_sweep.elapsed() >= self.ttl / 4 {
            self.expire(Instant::now());
        }
        let mut hdr = [0u8; HEADER_LEN];
        if self.partials.is_empty() {
            // Nothing in progress: the next datagram is a whole message, a BEGIN or an
            // orphan; read it straight into the arena.
            return self.recv_into_arena(fd, &mut hdr);
        }
        let len = recv_two(fd, &mut hdr, &mut [], true)?;
        let Some(h) = self.check(len, &hdr) else {
            recv_two(fd, &mut hdr, &mut [], false)?;
            return Ok(None);
        };
        let body = len - HEADER_LEN;
        if h.flags & BEGIN != 0 && h.flags & END != 0 {
            return self.recv_into_arena(fd, &mut hdr);
        }
        if h.flags & BEGIN != 0 {
            recv_two(fd, &mut hdr, &mut [], false)?;
            self.stats.datagrams += 1;
            self.begin(&h);
            return Ok(None);
        }
        let Some(p) = self.partials.get_mut(&h.msg_id) else {
            recv_two(fd, &mut hdr, &mut [], false)?;
            self.stats.datagrams += 1;
            self.stats.orphan_chunks += 1;
            return Ok(None);
        };
        if h.offset as usize != p.got || p.got + body > p.total || h.kind != p.kind {
            recv_two(fd, &mut hdr, &mut [], false)?;
            self.stats.datagrams += 1;
            self.stats.malformed += 1;
            self.partials.remove(&h.msg_id);
            return Ok(None);
        }
        match p.buf.as_mut() {
            Some(buf) => {
                let tail = &mut buf.spare_capacity_mut()[..body];
                let n = recv_two(fd, &mut hdr, tail, false)?;
                debug_assert_eq!(n, len);
                // SAFETY: the kernel wrote `body` bytes into the spare capacity (the peeked
                // datagram, which only this receiver consumes).
                unsafe { buf.set_len(buf.len() + body) };
            }
            None => {
                recv_two(fd, &mut hdr, &mut [], false)?;
            }
        }
        self.stats.datagrams += 1;
        p.got += body;
        if h.flags & END == 0 {
            return Ok(None);
        }
        let p = self.partials.remove(&h.msg_id).expect("present");
        if p.got != p.total {
            self.stats.malformed += 1;
            return Ok(None);
        }
        let Some(buf) = p.buf else {
            return Ok(None);
        };
        self.stats.messages += 1;
        Ok(Some(Received {
            kind: p.kind,
            key: p.key,
            aux: p.aux,
            payload: buf.freeze(),
        }))
    }

    /// Validates a datagram's length and header.
    fn check(&mut self, len: usize, hdr: &[u8; HEADER_LEN]) -> Option<Header> {
        let h = (len >= HEADER_LEN)
            .then(|| Header::decode(hdr))
            .flatten()
            .filter(|_| len - HEADER_LEN <= self.max_chunk);
        if h.is_none() {
            self.stats.datagrams += 1;
            self.stats.malformed += 1;
        }
        h
    }

    fn begin(&mut self, h: &Header) {
        let total = h.total as usize;
        let buf = if total > self.max_message {
            self.stats.refused += 1;
            tracing::warn!(
                total,
                max = self.max_message,
                "ipc: message over the maximum size refused"
            );
            None
        } else {
            // The one allocation of the message: its final buffer.
            Some(BytesMut::with_capacity(total))
        };
        if self.partials.contains_key(&h.msg_id) {
            self.stats.malformed += 1;
        }
        self.partials.insert(
            h.msg_id,
            Partial {
                kind: h.kind,
                key: h.key,
                aux: h.aux,
                total,
                buf,
                got: 0,
                started: Instant::now(),
            },
        );
    }

    fn recv_into_arena(
        &mut self,
        fd: RawFd,
        hdr: &mut [u8; HEADER_LEN],
    ) -> io::Result<Option<Received>> {
        if self.arena.capacity() - self.arena.len() < self.max_chunk {
            self.arena = BytesMut::with_capacity(ARENA_BLOCK.max(self.max_chunk * 2));
        }
        let len = recv_two(fd, hdr, self.arena.spare_capacity_mut(), false)?;
        let Some(h) = self.check(len, hdr) else {
            return Ok(None);
        };
        self.stats.datagrams += 1;
        let body = len - HEADER_LEN;
        if h.flags & BEGIN == 0 {
            self.stats.orphan_chunks += 1;
            return Ok(None);
        }
        if h.flags & END == 0 {
            if body != 0 {
                self.stats.malformed += 1;
                return Ok(None);
            }
            self.begin(&h);
            return Ok(None);
        }
        if body != h.total as usize || h.offset != 0 {
            self.stats.malformed += 1;
            return Ok(None);
        }
        if body > self.max_message {
            self.stats.refused += 1;
            return Ok(None);
        }
        // SAFETY: the kernel wrote `body` bytes into the arena's spare capacity.
        unsafe { self.arena.set_len(body) };
        self.stats.messages += 1;
        Ok(Some(Received {
            kind: h.kind,
            key: h.key,
            aux: h.aux,
            payload: self.arena.split_to(body).freeze(),
        }))
    }
}
