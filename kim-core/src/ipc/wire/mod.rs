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

mod recv;
mod send;
#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

pub use recv::{Reassembler, Received, RecvStats};
pub use send::{ChunkSender, Outgoing, SendStats, BATCH, MIN_CHUNK};

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

/// Raises a socket's send and receive buffers as far as the system allows: the forced
/// variants where permitted (root), else up to the system maximum. Returns the sizes now in
/// effect.
pub fn raise_buffers(fd: BorrowedFd<'_>, want: usize) -> (usize, usize) {
    let fd = fd.as_raw_fd();
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
