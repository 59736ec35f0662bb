//! The IPC wire: messages cut into datagrams on an `AF_UNIX SOCK_DGRAM` socket, and put back
//! together on the other side with no user-space copy.
//!
//! Every datagram starts with a fixed [`HEADER_LEN`]-byte [`Header`]: the message id (unique
//! per sender), the channel key, the message's total length, the chunk's offset in it, the
//! kind, the BEGIN/CHUNK/END flags and one kind-specific byte. A message that fits one datagram
//! is sent as one (`BEGIN | END`, payload inline). A larger one is sent as a header-only BEGIN
//! that announces the total length, then chunks of at most `ipc_max_size` bytes, the last one
//! flagged END.
//!
//! Sending ([`ChunkSender`]) is one `sendmsg` per datagram with two iovecs: the header and a
//! slice of the payload. The payload is never copied into a staging buffer.
//!
//! Receiving ([`Reassembler`]): while no multi-datagram message is in progress, the next
//! datagram is read straight into the tail of a shared arena, and a small message is split off
//! it as `Bytes` (one syscall, no copy). While one is in progress, the next header is peeked
//! first (`MSG_PEEK`): a BEGIN allocates the message's final buffer once from its total
//! length, and each chunk is read with two iovecs, the header and the unfilled tail of that
//! buffer; at END the buffer is frozen into the `Bytes` handed on. Reassembly is keyed by
//! message id, so chunks of many messages may interleave. A chunk with no BEGIN is consumed and
//! dropped (counted), a partial message older than the TTL is dropped (counted), and a total
//! length over the maximum message size is refused (counted; its chunks are discarded).

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// Bytes of the header that opens every datagram.
pub const HEADER_LEN: usize = 24;

/// The wire version, in the last header byte; datagrams of another version are dropped.
const VERSION: u8 = 1;

/// The first datagram of a message.
pub const BEGIN: u8 = 1;
/// A middle datagram of a message.
pub const CHUNK: u8 = 2;
/// The last datagram of a message.
pub const END: u8 = 4;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Master to worker: a message a client sent (`aux` = opcode).
    Message = 1,
    /// Master to worker: a channel ended (`aux` = 1 for the worker that owns it and runs the
    /// disconnect callback). The payload is the channel's id and metadata.
    Disconnect = 2,
    /// Worker to master: push to a channel (`aux` = opcode).
    Push = 3,
    /// Worker to master: close a channel (payload: close code and reason).
    Close = 4,
    /// Either way: a control message (`aux` = which).
    Control = 5,
    /// Master to worker: a channel logged in (`aux` = 1 for its owner). The payload is its id
    /// and metadata.
    Open = 6,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Message,
            2 => Kind::Disconnect,
            3 => Kind::Push,
            4 => Kind::Close,
            5 => Kind::Control,
            6 => Kind::Open,
            _ => return None,
        })
    }
}

/// The fixed header of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Unique per sender (wrapping); ties the datagrams of one message together.
    pub msg_id: u32,
    /// The message's total payload length.
    pub total: u32,
    /// The channel (its serial), or 0.
    pub key: u64,
    /// Where this datagram's payload starts in the message.
    pub offset: u32,
    /// What the message is.
    pub kind: Kind,
    /// BEGIN / CHUNK / END.
    pub flags: u8,
    /// Kind-specific: an opcode, an owner flag, a control code.
    pub aux: u8,
}

impl Header {
    /// The header as bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.msg_id.to_le_bytes());
        b[4..8].copy_from_slice(&self.total.to_le_bytes());
        b[8..16].copy_from_slice(&self.key.to_le_bytes());
        b[16..20].copy_from_slice(&self.offset.to_le_bytes());
        b[20] = self.kind as u8;
        b[21] = self.flags;
        b[22] = self.aux;
        b[23] = VERSION;
        b
    }

    /// Parses a header; `None` for an unknown kind, version or flag combination.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Option<Header> {
        if b[23] != VERSION {
            return None;
        }
        let flags = b[21];
        if flags == 0 || flags & !(BEGIN | CHUNK | END) != 0 {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut key = [0u8; 8];
        key.copy_from_slice(&b[8..16]);
        Some(Header {
            msg_id: u32_at(0),
            total: u32_at(4),
            key: u64::from_le_bytes(key),
            offset: u32_at(16),
            kind: Kind::from_u8(b[20])?,
            flags,
            aux: b[22],
        })
    }
}

/// A message to send: what it is, for which channel, and its payload (shared, never copied).
#[derive(Debug)]
pub struct Outgoing {
    /// What the message is.
    pub kind: Kind,
    /// The channel key, or 0.
    pub key: u64,
    /// Kind-specific byte.
    pub aux: u8,
    /// The payload.
    pub payload: Bytes,
    /// Bytes of the payload already sent.
    sent: usize,
    /// The message id, once its first datagram went out.
    id: Option<u32>,
    /// A push from a worker: counted against its channel until this message is dropped.
    pub(crate) in_transit: Option<super::InTransit>,
}

impl Outgoing {
    /// A message ready to send.
    pub fn new(kind: Kind, key: u64, aux: u8, payload: Bytes) -> Outgoing {
        Outgoing {
            kind,
            key,
            aux,
            payload,
            sent: 0,
            id: None,
            in_transit: None,
        }
    }

    /// True once the first datagram is out (the rest must follow).
    pub fn started(&self) -> bool {
        self.id.is_some()
    }
}

/// Counters of a sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Messages sent whole.
    pub messages: u64,
    /// Datagrams sent.
    pub datagrams: u64,
    /// Times the chunk size was halved after EMSGSIZE or ENOBUFS.
    pub shrinks: u64,
}

/// The smallest chunk the sender shrinks to.
pub const MIN_CHUNK: usize = 1024;

/// Cuts messages into datagrams and sends them, each with one `sendmsg` of two iovecs.
#[derive(Debug)]
pub struct ChunkSender {
    next_id: u32,
    chunk: usize,
    stats: SendStats,
}

impl ChunkSender {
    /// A sender with chunks of at most `chunk` payload bytes.
    pub fn new(chunk: usize) -> ChunkSender {
        ChunkSender {
            next_id: 1,
            chunk: chunk.max(MIN_CHUNK),
            stats: SendStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SendStats {
        self.stats
    }

    /// Sends what is left of `msg` on the non-blocking datagram socket `fd`. `Ok(())` once the
    /// message is out; `Err(WouldBlock)` when the socket is full (call again once writable;
    /// the progress is kept in `msg`); other errors are the socket's.
    pub fn send(&mut self, fd: RawFd, msg: &mut Outgoing) -> io::Result<()> {
        self.send_limited(fd, msg, usize::MAX).map(|_| ())
    }

    /// Like [`ChunkSender::send`], but stops after `max_datagrams` datagrams; `Ok(true)` once
    /// the whole message is out. (Tests and benchmarks use it to interleave messages.)
    pub fn send_limited(
        &mut self,
        fd: RawFd,
        msg: &mut Outgoing,
        max_datagrams: usize,
    ) -> io::Result<bool> {
        let total = msg.payload.len();
        if total > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("message of {total} bytes is too large for the IPC wire"),
            ));
        }
        let mut budget = max_datagrams;
        loop {
            if budget == 0 {
                return Ok(false);
            }
            let first = msg.id.is_none();
            let id = msg.id.unwrap_or(self.next_id);
            let (flags, range) = if first && total <= self.chunk {
                (BEGIN | END, 0..total)
            } else if first {
                // A multi-datagram message opens with a header-only BEGIN.
                (BEGIN, 0..0)
            } else {
                let end = (msg.sent + self.chunk).min(total);
                let flags = if end == total { END } else { CHUNK };
                (flags, msg.sent..end)
            };
            let header = Header {
                msg_id: id,
                total: total as u32,
                key: msg.key,
                offset: range.start as u32,
                kind: msg.kind,
                flags,
                aux: msg.aux,
            }
            .encode();
            match send_two(fd, &header, &msg.payload[range.clone()]) {
                Ok(_) => {}
                Err(e) if is_too_big(&e) && self.chunk > MIN_CHUNK => {
                    self.chunk = (self.chunk / 2).max(MIN_CHUNK);
                    self.stats.shrinks += 1;
                    tracing::debug!(chunk = self.chunk, error = %e, "ipc: shrinking chunks");
                    continue;
                }
                Err(e) => return Err(e),
            }
            self.stats.datagrams += 1;
            budget -= 1;
            if first {
                self.next_id = self.next_id.wrapping_add(1).max(1);
                msg.id = Some(id);
            }
            msg.sent = range.end;
            if flags & END != 0 {
                self.stats.messages += 1;
                return Ok(true);
            }
        }
    }
}

/// Messages sent together by one `sendmmsg` at most.
pub const BATCH: usize = 32;

impl ChunkSender {
    /// Sends the leading messages of `msgs` that fit one datagram each and have not started,
    /// up to [`BATCH`] of them, with one `sendmmsg`. Returns how many were sent (0 when the
    /// first message is not such a message: send it with [`ChunkSender::send`]).
    /// `Err(WouldBlock)` when the socket is full before the first one.
    pub fn send_batch(&mut self, fd: RawFd, msgs: &mut [Outgoing]) -> io::Result<usize> {
        let n = msgs
            .iter()
            .take(BATCH)
            .take_while(|m| !m.started() && m.payload.len() <= self.chunk)
            .count();
        if n == 0 {
            return Ok(0);
        }
        let mut headers = [[0u8; HEADER_LEN]; BATCH];
        for (i, m) in msgs[..n].iter().enumerate() {
            headers[i] = Header {
                msg_id: self.next_id.wrapping_add(i as u32).max(1),
                total: m.payload.len() as u32,
                key: m.key,
                offset: 0,
                kind: m.kind,
                flags: BEGIN | END,
                aux: m.aux,
            }
            .encode();
        }
        // SAFETY: zeroed iovec and mmsghdr arrays are valid; every pointer set below refers
        // to a header or payload that outlives the call, and the kernel only reads them.
        let mut iov: [[libc::iovec; 2]; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            let p = &msgs[i].payload;
            iov[i] = [
                libc::iovec {
                    iov_base: headers[i].as_ptr() as *mut libc::c_void,
                    iov_len: HEADER_LEN,
                },
                libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                },
            ];
            hdrs[i].msg_hdr.msg_iov = iov[i].as_mut_ptr();
            hdrs[i].msg_hdr.msg_iovlen = if p.is_empty() { 1 } else { 2 };
        }
        let sent = loop {
            // SAFETY: hdrs[..n] are valid mmsghdrs as set up above.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            if is_too_big(&e) {
                // Let `send` shrink the chunks and retry.
                return Ok(0);
            }
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        for (i, m) in msgs[..sent].iter_mut().enumerate() {
            m.id = Some(self.next_id.wrapping_add(i as u32).max(1));
            m.sent = m.payload.len();
        }
        // Ids stay unique per sender: advance past every id handed out.
        for _ in 0..sent {
            self.next_id = self.next_id.wrapping_add(1).max(1);
        }
        self.stats.datagrams += sent as u64;
        self.stats.messages += sent as u64;
        Ok(sent)
    }
}

fn is_too_big(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMSGSIZE) | Some(libc::ENOBUFS))
}

/// One `sendmsg` of a header and a payload slice.
fn send_two(fd: RawFd, header: &[u8], payload: &[u8]) -> io::Result<usize> {
    let mut iov = [
        libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        },
    ];
    // SAFETY: a zeroed msghdr is valid; the iovecs point into live slices that the kernel
    // only reads.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = if payload.is_empty() { 1 } else { 2 };
    loop {
        // SAFETY: msg is a valid msghdr as set up above.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

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
    pub fn partial_buffer(&self, msg_id: u32) -> Option<*const u8> {
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
    pub fn recv(&mut self, fd: RawFd) -> io::Result<Received> {
        loop {
            if let Some(m) = self.recv_one(fd)? {
                return Ok(m);
            }
        }
    }

    /// Reads one datagram; `Some` when it completed a message.
    pub fn recv_one(&mut self, fd: RawFd) -> io::Result<Option<Received>> {
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

/// Raises a socket's send and receive buffers as far as the system allows: the forced
/// variants where permitted (root), else up to the system maximum. Returns the sizes now in
/// effect.
pub fn raise_buffers(fd: RawFd, want: usize) -> (usize, usize) {
    fn set(fd: RawFd, opt: libc::c_int, v: libc::c_int) -> bool {
        // SAFETY: setsockopt with a pointer to a live c_int of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    }
    fn get(fd: RawFd, opt: libc::c_int) -> usize {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a live c_int.
        let ok = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &mut v as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            ) == 0
        };
        if ok {
            v.max(0) as usize
        } else {
            0
        }
    }
    let want = want.min(i32::MAX as usize / 2) as libc::c_int;
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        if !set(fd, force, want) {
            // Unprivileged: the kernel caps the plain option at its maximum.
            let max = read_sysctl(if plain == libc::SO_SNDBUF {
                "/proc/sys/net/core/wmem_max"
            } else {
                "/proc/sys/net/core/rmem_max"
            });
            let v = max.map_or(want, |m| m.min(want as usize) as libc::c_int);
            set(fd, plain, v);
        }
    }
    (get(fd, libc::SO_SNDBUF), get(fd, libc::SO_RCVBUF))
}

fn read_sysctl(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    fn pair() -> (UnixDatagram, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        raise_buffers(a.as_raw_fd(), 4 << 20);
        raise_buffers(b.as_raw_fd(), 4 << 20);
        (a, b)
    }

    fn payload(n: usize, seed: u8) -> Bytes {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// Sends `msgs` and receives them, alternating whenever the socket fills.
    fn roundtrip(chunk: usize, msgs: Vec<Outgoing>) -> (Vec<Received>, Reassembler) {
        let (a, b) = pair();
        let mut tx = ChunkSender::new(chunk);
        let mut rx = Reassembler::new(64 << 20, chunk, Duration::from_secs(5));
        let mut out = Vec::new();
        for mut m in msgs {
            loop {
                match tx.send(a.as_raw_fd(), &mut m) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        while let Ok(r) = rx.recv(b.as_raw_fd()) {
                            out.push(r);
                        }
                    }
                    Err(e) => panic!("send: {e}"),
                }
            }
        }
        loop {
            match rx.recv(b.as_raw_fd()) {
                Ok(r) => out.push(r),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
        (out, rx)
    }

    #[test]
    fn small_messages_go_out_in_batches_and_arrive_in_order() {
        let (a, b) = pair();
        let mut tx = ChunkSender::new(4096);
        let mut rx = Reassembler::new(1 << 20, 4096, Duration::from_secs(5));
        // Small ones, then one that needs chunks (the batch stops before it), then small.
        let mut msgs: Vec<Outgoing> = (0..70u64)
            .map(|i| {
                let n = if i == 40 { 10_000 } else { i as usize };
                Outgoing::new(Kind::Push, i, 1, payload(n, i as u8))
            })
            .collect();
        let mut at = 0;
        let mut calls = 0;
        while at < msgs.len() {
            calls += 1;
            let n = tx.send_batch(a.as_raw_fd(), &mut msgs[at..]).unwrap();
            if n == 0 {
                tx.send(a.as_raw_fd(), &mut msgs[at]).unwrap();
                at += 1;
            } else {
                assert!(n <= BATCH);
                at += n;
            }
        }
        assert!(calls <= 5, "{calls} calls for 70 messages");
        for i in 0..70u64 {
            let r = rx.recv(b.as_raw_fd()).unwrap();
            assert_eq!(r.key, i);
            let n = if i == 40 { 10_000 } else { i as usize };
            assert_eq!(r.payload, payload(n, i as u8));
        }
        assert!(rx.recv(b.as_raw_fd()).is_err());
    }

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let h = Header {
            msg_id: 7,
            total: 1 << 20,
            key: u64::MAX - 3,
            offset: 65536,
            kind: Kind::Push,
            flags: CHUNK,
            aux: 2,
        };
        assert_eq!(Header::decode(&h.encode()), Some(h));
        let mut bad = h.encode();
        bad[23] = 9;
        assert_eq!(Header::decode(&bad), None);
        let mut bad = h.encode();
        bad[20] = 0;
        assert_eq!(Header::decode(&bad), None);
        let mut bad = h.encode();
        bad[21] = 0x10;
        assert_eq!(Header::decode(&bad), None);
    }

    #[test]
    fn boundaries_arrive_whole() {
        let chunk = 64 * 1024;
        let sizes = [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 10 << 20];
        let msgs = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Outgoing::new(Kind::Message, i as u64, 2, payload(n, i as u8)))
            .collect();
        let (got, rx) = roundtrip(chunk, msgs);
        assert_eq!(got.len(), sizes.len());
        for (i, (r, &n)) in got.iter().zip(&sizes).enumerate() {
            assert_eq!(r.key, i as u64);
            assert_eq!(r.kind, Kind::Message);
            assert_eq!(r.aux, 2);
            assert_eq!(r.payload, payload(n, i as u8), "message of {n} bytes");
        }
        let s = rx.stats();
        assert_eq!(s.messages, sizes.len() as u64);
        assert_eq!((s.orphan_chunks, s.malformed, s.refused), (0, 0, 0));
    }

    #[test]
    fn interleaved_messages_reassemble_into_their_own_buffers() {
        // Two senders on one socket stand for chunks of many messages arriving interleaved:
        // datagram by datagram, alternating between 100 messages.
        let (a, b) = pair();
        let chunk = 4096;
        let mut senders: Vec<(ChunkSender, Outgoing)> = (0..100u64)
            .map(|i| {
                let mut s = ChunkSender::new(chunk);
                s.next_id = i as u32 * 1000 + 1;
                let len = 10_000 + i as usize * 97;
                (s, Outgoing::new(Kind::Message, i, 1, payload(len, i as u8)))
            })
            .collect();
        let mut rx = Reassembler::new(1 << 20, chunk, Duration::from_secs(5));
        let mut got = Vec::new();
        let mut done = vec![false; senders.len()];
        while done.iter().any(|d| !d) {
            for (i, (s, m)) in senders.iter_mut().enumerate() {
                if done[i] {
                    continue;
                }
                // One datagram per turn: cut the message short by sending with a chunk
                // limit and stopping after one datagram.
                let before = s.stats().datagrams;
                let r = s.send_limited(a.as_raw_fd(), m, 1);
                assert!(r.is_ok(), "{r:?}");
                assert_eq!(s.stats().datagrams, before + 1);
                done[i] = m.sent == m.payload.len() && m.started();
                while let Ok(r) = rx.recv(b.as_raw_fd()) {
                    got.push(r);
                }
            }
            assert!(rx.partial_count() <= 100);
        }
        assert_eq!(got.len(), 100);
        got.sort_by_key(|r| r.key);
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.payload, payload(10_000 + i * 97, i as u8));
        }
    }

    #[test]
    fn the_payload_is_the_buffer_the_chunks_were_read_into() {
        let (a, b) = pair();
        let chunk = 8192;
        let mut tx = ChunkSender::new(chunk);
        let mut rx = Reassembler::new(1 << 20, chunk, Duration::from_secs(5));
        let data = payload(100_000, 5);
        let mut m = Outgoing::new(Kind::Message, 9, 1, data.clone());
        // BEGIN and two chunks.
        tx.send_limited(a.as_raw_fd(), &mut m, 3).unwrap();
        for _ in 0..3 {
            assert_eq!(rx.recv_one(b.as_raw_fd()).unwrap(), None);
        }
        let id = m.id.unwrap();
        let buf = rx.partial_buffer(id).expect("allocated at BEGIN");
        tx.send(a.as_raw_fd(), &mut m).unwrap();
        let r = rx.recv(b.as_raw_fd()).unwrap();
        assert_eq!(r.payload, data);
        assert_eq!(
            r.payload.as_ptr(),
            buf,
            "delivered from the buffer chunks were read into"
        );
    }

    #[test]
    fn orphans_expired_refused_and_malformed_are_counted_and_consumed() {
        let (a, b) = pair();
        let chunk = 4096;
        let mut rx = Reassembler::new(50_000, chunk, Duration::from_millis(50));
        // An orphan chunk (no BEGIN), read once and dropped.
        let h = Header {
            msg_id: 77,
            total: 10_000,
            key: 1,
            offset: 4096,
            kind: Kind::Message,
            flags: CHUNK,
            aux: 1,
        };
        a.send(&[&h.encode()[..], &[0u8; 100]].concat()).unwrap();
        // Garbage shorter than a header.
        a.send(b"xy").unwrap();
        // A message over the maximum: refused, its chunks discarded.
        let mut tx = ChunkSender::new(chunk);
        let mut big = Outgoing::new(Kind::Message, 2, 1, payload(60_000, 1));
        tx.send(a.as_raw_fd(), &mut big).unwrap();
        // A message left incomplete: expires.
        let mut part = Outgoing::new(Kind::Message, 3, 1, payload(20_000, 2));
        tx.send_limited(a.as_raw_fd(), &mut part, 2).unwrap();
        // Then a good one.
        let mut good = Outgoing::new(Kind::Message, 4, 1, payload(30, 3));
        tx.send(a.as_raw_fd(), &mut good).unwrap();
        let r = rx.recv(b.as_raw_fd()).unwrap();
        assert_eq!(r.key, 4);
        assert_eq!(r.payload, payload(30, 3));
        assert!(rx.recv(b.as_raw_fd()).is_err(), "nothing left to read");
        std::thread::sleep(Duration::from_millis(60));
        rx.expire(Instant::now());
        let s = rx.stats();
        assert_eq!(s.orphan_chunks, 1);
        assert_eq!(s.malformed, 1);
        assert_eq!(s.refused, 1);
        assert_eq!(s.expired, 1);
        assert_eq!(s.messages, 1);
        assert_eq!(rx.partial_count(), 0);
    }
}
