//! Sending: messages cut into datagrams, each sent with one `sendmsg` of two iovecs (the
//! header and a slice of the payload), small ones batched with `sendmmsg`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use bytes::Bytes;

use super::{Header, Kind, BEGIN, CHUNK, END, HEADER_LEN};

/// A message to send: what it is, for which channel, and its payload (shared, never copied).
#[derive(Debug)]
pub struct Outgoing<T = ()> {
    /// What the message is.
    pub kind: Kind,
    /// The channel key, or 0.
    pub key: u64,
    /// Kind-specific byte.
    pub aux: u8,
    /// The payload.
    pub payload: Bytes,
    /// Bytes of the payload already sent.
    pub(super) sent: usize,
    /// The message id, once its first datagram went out.
    pub(super) id: Option<u32>,
    /// What the sender keeps with the message until it is sent (or dropped): a worker's push
    /// keeps its channel's in-flight count this way. Never read: it is here to be dropped.
    #[allow(dead_code)]
    attached: T,
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
            attached: (),
        }
    }

    /// The same message with `attached` kept beside it.
    pub(crate) fn attach<T>(self, attached: T) -> Outgoing<T> {
        Outgoing {
            kind: self.kind,
            key: self.key,
            aux: self.aux,
            payload: self.payload,
            sent: self.sent,
            id: self.id,
            attached,
        }
    }
}

impl<T> Outgoing<T> {
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
    pub(super) next_id: u32,
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
    pub fn send<T>(&mut self, fd: BorrowedFd<'_>, msg: &mut Outgoing<T>) -> io::Result<()> {
        self.send_limited(fd, msg, usize::MAX).map(|_| ())
    }

    /// Like [`ChunkSender::send`], but stops after `max_datagrams` datagrams; `Ok(true)` once
    /// the whole message is out. (Tests and benchmarks use it to interleave messages.)
    pub fn send_limited<T>(
        &mut self,
        fd: BorrowedFd<'_>,
        msg: &mut Outgoing<T>,
        max_datagrams: usize,
    ) -> io::Result<bool> {
        let fd = fd.as_raw_fd();
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
    pub fn send_batch<T>(
        &mut self,
        fd: BorrowedFd<'_>,
        msgs: &mut [Outgoing<T>],
    ) -> io::Result<usize> {
        let fd = fd.as_raw_fd();
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
