//! The IPC path alone: large messages from one thread to another over an `AF_UNIX SOCK_DGRAM`
//! socket pair, in three variants that share the chunk size and the socket setup.
//!
//! - **kim**: [`ChunkSender`] into [`Reassembler`], the wire of kim's worker-process backend
//!   (a 24-byte header per datagram, each chunk received straight into the message's final
//!   buffer after a `MSG_PEEK` of its header).
//! - **ceiling**: no header and no reassembly: the sender sends each message as consecutive
//!   raw chunk-sized datagrams, and the receiver, which knows the message size, receives each
//!   one straight into the right offset of the message's final buffer. One syscall per
//!   datagram on either side and one allocation per message: what the wire could at best
//!   achieve.
//! - **naive**: the same wire as kim on the sender side, but the receiver reads each datagram
//!   whole into a scratch buffer, parses the header and appends the payload to a `Vec<u8>` per
//!   message that grows as it goes (the "before" of Swoole's optimisation), keyed by message
//!   id.
//!
//! Each run sends `count` messages of `size` bytes; the sender stamps the first and last byte
//! of each message with its number and the receiver checks them and the length, so that a run
//! cannot silently measure nothing. Neither side spins: on `WouldBlock` it waits in `poll`.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::{Bytes, BytesMut};
use kim_core::internals::wire::{
    raise_buffers, ChunkSender, Header, Kind, Outgoing, Reassembler, BEGIN, END, HEADER_LEN,
};

use crate::proc::pin_current_thread;

/// The CPU the receiver thread is pinned to (the sender's is [`SENDER_CPU`]).
pub const RECEIVER_CPU: usize = 0;
/// The CPU the sender thread is pinned to.
pub const SENDER_CPU: usize = 1;
/// Socket buffers asked for on both ends.
pub const SOCKET_BUFFERS: usize = 4 << 20;

/// What a side that gave up because the other failed reports.
const OTHER_SIDE_FAILED: &str = "the other side failed";

/// A side that waited this long for its socket without progress gives up.
const STALL: Duration = Duration::from_secs(10);

/// The three variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// kim's wire: `ChunkSender` into `Reassembler`.
    Kim,
    /// Raw chunks with no header, each received straight into place.
    Ceiling,
    /// kim's wire into a receiver that copies each datagram into a growing `Vec`.
    Naive,
}

impl Variant {
    /// All three, in the order runs alternate.
    pub const ALL: [Variant; 3] = [Variant::Kim, Variant::Ceiling, Variant::Naive];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Kim => "kim",
            Variant::Ceiling => "ceiling",
            Variant::Naive => "naive",
        }
    }

    /// Runs this variant once (see [`run`]).
    pub fn run(self, count: usize, size: usize, chunk: usize, pin: bool) -> anyhow::Result<IpcRun> {
        run(self, count, size, chunk, pin)
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct IpcRun {
    /// Messages received whole (length and stamps checked).
    pub messages: u64,
    /// Payload bytes in those messages.
    pub bytes: u64,
    /// Seconds from the first send to the last message received.
    pub elapsed_secs: f64,
    /// Payload throughput, in MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// CPU time of the receiver thread (user + system), in seconds.
    pub receiver_cpu_secs: f64,
    /// CPU time of the sender thread (user + system), in seconds.
    pub sender_cpu_secs: f64,
    /// Datagrams sent.
    pub datagrams: u64,
    /// Times the receiver found the socket empty and waited in `poll`.
    pub receiver_waits: u64,
    /// Times the sender found the socket full and waited in `poll`.
    pub sender_waits: u64,
    /// Send and receive buffer sizes in effect on the sender's end.
    pub socket_buffers: (usize, usize),
}

impl IpcRun {
    /// Receiver CPU per message, in microseconds.
    pub fn receiver_cpu_us_per_msg(&self) -> f64 {
        self.receiver_cpu_secs * 1e6 / self.messages.max(1) as f64
    }

    /// Sender CPU per message, in microseconds.
    pub fn sender_cpu_us_per_msg(&self) -> f64 {
        self.sender_cpu_secs * 1e6 / self.messages.max(1) as f64
    }
}

/// Runs kim's wire once: `count` messages of `size` bytes in chunks of `chunk` bytes, sender
/// and receiver on their own threads (pinned to [`SENDER_CPU`] and [`RECEIVER_CPU`] if
/// `pin`).
pub fn run_kim(count: usize, size: usize, chunk: usize, pin: bool) -> anyhow::Result<IpcRun> {
    run(Variant::Kim, count, size, chunk, pin)
}

/// Runs the ceiling once (see [`run_kim`] for the arguments).
pub fn run_ceiling(count: usize, size: usize, chunk: usize, pin: bool) -> anyhow::Result<IpcRun> {
    run(Variant::Ceiling, count, size, chunk, pin)
}

/// Runs the naive receiver once (see [`run_kim`] for the arguments).
pub fn run_naive(count: usize, size: usize, chunk: usize, pin: bool) -> anyhow::Result<IpcRun> {
    run(Variant::Naive, count, size, chunk, pin)
}

/// What a side reports back.
struct Side {
    /// The sender: when it started sending. The receiver: when the last message arrived.
    at: Instant,
    cpu_secs: f64,
    waits: u64,
    /// The sender: datagrams sent. The receiver: messages received.
    n: u64,
    /// The receiver: payload bytes received.
    bytes: u64,
}

/// Runs `variant` once (see [`run_kim`] for the arguments).
pub fn run(
    variant: Variant,
    count: usize,
    size: usize,
    chunk: usize,
    pin: bool,
) -> anyhow::Result<IpcRun> {
    ensure!(
        size >= 2,
        "messages must have at least 2 bytes (first and last are stamped)"
    );
    ensure!(
        size <= u32::MAX as usize,
        "messages must fit the wire's 32-bit length"
    );
    ensure!(
        chunk >= 1024,
        "chunks must be at least 1024 bytes (the wire's minimum)"
    );
    let (a, b) = UnixDatagram::pair().context("socket pair")?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    let socket_buffers = raise_buffers(a.as_fd(), SOCKET_BUFFERS);
    raise_buffers(b.as_fd(), SOCKET_BUFFERS);
    let (tx_fd, rx_fd) = (a.as_fd(), b.as_fd());
    let abort = AtomicBool::new(false);
    let ready = Barrier::new(2);
    let (sent, received) = std::thread::scope(|s| {
        let (abort, ready) = (&abort, &ready);
        let receiver = std::thread::Builder::new()
            .name("ipc-receiver".into())
            .spawn_scoped(s, move || {
                let r = (|| {
                    // Every thread reaches the barrier, even when pinning failed.
                    let pinned = if pin {
                        pin_current_thread(RECEIVER_CPU).context("pinning the receiver")
                    } else {
                        Ok(())
                    };
                    ready.wait();
                    pinned?;
                    let cpu0 = thread_cpu_secs();
                    let mut side = match variant {
                        Variant::Kim => recv_kim(rx_fd, count, size, chunk, abort),
                        Variant::Ceiling => recv_ceiling(rx_fd, count, size, chunk, abort),
                        Variant::Naive => recv_naive(rx_fd, count, size, chunk, abort),
                    }?;
                    side.cpu_secs = thread_cpu_secs() - cpu0;
                    Ok(side)
                })();
                if r.is_err() {
                    abort.store(true, Ordering::Relaxed);
                }
                r
            })?;
        let sender = std::thread::Builder::new()
            .name("ipc-sender".into())
            .spawn_scoped(s, move || {
                let r = (|| {
                    let pinned = if pin {
                        pin_current_thread(SENDER_CPU).context("pinning the sender")
                    } else {
                        Ok(())
                    };
                    let payload = pattern(size);
                    ready.wait();
                    pinned?;
                    let cpu0 = thread_cpu_secs();
                    let mut side = match variant {
                        Variant::Kim | Variant::Naive => {
                            send_wire(tx_fd, count, payload, chunk, abort)
                        }
                        Variant::Ceiling => send_raw(tx_fd, count, payload, chunk, abort),
                    }?;
                    side.cpu_secs = thread_cpu_secs() - cpu0;
                    Ok(side)
                })();
                if r.is_err() {
                    abort.store(true, Ordering::Relaxed);
                }
                r
            });
        let sender = match sender {
            Ok(h) => h,
            Err(e) => {
                // Stand in for the sender at the barrier so that the receiver gives up.
                abort.store(true, Ordering::Relaxed);
                ready.wait();
                let _ = receiver.join();
                return Err(e);
            }
        };
        let join = |h: std::thread::ScopedJoinHandle<'_, anyhow::Result<Side>>, who: &str| {
            h.join()
                .map_err(|_| anyhow::anyhow!("the {who} thread panicked"))
                .and_then(|r| r.with_context(|| format!("{} {who}", variant.name())))
        };
        let received = join(receiver, "receiver");
        let sent = join(sender, "sender");
        io::Result::Ok((sent, received))
    })
    .context("starting the threads")?;
    let (sent, received) = match (sent, received) {
        (Ok(s), Ok(r)) => (s, r),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        // When both failed, one gave up because of the other: report the cause.
        (Err(s), Err(r)) => {
            return Err(if format!("{s:#}").contains(OTHER_SIDE_FAILED) {
                r
            } else {
                s
            })
        }
    };
    drop((a, b));
    let elapsed = received.at.saturating_duration_since(sent.at).as_secs_f64();
    Ok(IpcRun {
        messages: received.n,
        bytes: received.bytes,
        elapsed_secs: elapsed,
        mb_per_sec: received.bytes as f64 / 1e6 / elapsed.max(1e-9),
        receiver_cpu_secs: received.cpu_secs,
        sender_cpu_secs: sent.cpu_secs,
        datagrams: sent.n,
        receiver_waits: received.waits,
        sender_waits: sent.waits,
        socket_buffers,
    })
}

/// A payload with varied content (stamped per message on top).
fn pattern(size: usize) -> BytesMut {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8)
        .collect()
}

/// The first and last byte of message `k`.
fn stamps(k: usize) -> (u8, u8) {
    (k as u8, !(k.wrapping_mul(7) as u8))
}

fn stamp(buf: &mut [u8], k: usize) {
    let (first, last) = stamps(k);
    buf[0] = first;
    *buf.last_mut().expect("size >= 2") = last;
}

/// Checks message `k` as received.
fn check(k: usize, msg: &[u8], size: usize) -> anyhow::Result<()> {
    ensure!(
        msg.len() == size,
        "message {k}: {} bytes received, {size} sent",
        msg.len()
    );
    let (first, last) = stamps(k);
    ensure!(
        msg[0] == first && msg[size - 1] == last,
        "message {k}: stamps {:#04x}/{:#04x}, expected {first:#04x}/{last:#04x}",
        msg[0],
        msg[size - 1]
    );
    Ok(())
}

/// Waits until `fd` is ready for `events`, without spinning; gives up when the other side
/// failed or after [`STALL`] without readiness.
fn wait(fd: BorrowedFd<'_>, events: libc::c_short, abort: &AtomicBool) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if abort.load(Ordering::Relaxed) {
            bail!(OTHER_SIDE_FAILED);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n > 0 {
            if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                bail!("poll: socket error ({:#x})", pfd.revents);
            }
            return Ok(());
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e).context("poll");
            }
        }
        if started.elapsed() >= STALL {
            bail!("stalled: socket not ready for {STALL:?}");
        }
    }
}

/// Sends with kim's `ChunkSender` (kim and naive). The payload buffer is reused from message
/// to message (the sender holds the only handle once a message is out), so the sender does
/// no copy of its own: only the stamps change.
fn send_wire(
    fd: BorrowedFd<'_>,
    count: usize,
    payload: BytesMut,
    chunk: usize,
    abort: &AtomicBool,
) -> anyhow::Result<Side> {
    let mut tx = ChunkSender::new(chunk);
    let mut buf = payload;
    let mut waits = 0;
    let at = Instant::now();
    for k in 0..count {
        stamp(&mut buf, k);
        let mut m = Outgoing::new(Kind::Message, 1, 0, buf.freeze());
        loop {
            match tx.send(fd, &mut m) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    waits += 1;
                    wait(fd, libc::POLLOUT, abort)?;
                }
                Err(e) => return Err(e).context("ChunkSender::send"),
            }
        }
        buf = m
            .payload
            .try_into_mut()
            .map_err(|_| anyhow::anyhow!("the payload is still shared after sending"))?;
    }
    let st = tx.stats();
    ensure!(
        st.shrinks == 0,
        "the sender shrank its chunks {} times (socket buffers too small?)",
        st.shrinks
    );
    Ok(Side {
        at,
        cpu_secs: 0.0,
        waits,
        n: st.datagrams,
        bytes: 0,
    })
}

/// Sends each message as raw chunk-sized datagrams with no header (the ceiling).
fn send_raw(
    fd: BorrowedFd<'_>,
    count: usize,
    mut buf: BytesMut,
    chunk: usize,
    abort: &AtomicBool,
) -> anyhow::Result<Side> {
    let mut waits = 0;
    let mut datagrams = 0;
    let at = Instant::now();
    for k in 0..count {
        stamp(&mut buf, k);
        for part in buf.chunks(chunk) {
            loop {
                // SAFETY: the kernel reads `part.len()` bytes of a live slice.
                let n = unsafe {
                    libc::send(
                        fd.as_raw_fd(),
                        part.as_ptr() as *const libc::c_void,
                        part.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if n >= 0 {
                    ensure!(n as usize == part.len(), "short datagram send");
                    datagrams += 1;
                    break;
                }
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        waits += 1;
                        wait(fd, libc::POLLOUT, abort)?;
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e).context("send"),
                }
            }
        }
    }
    Ok(Side {
        at,
        cpu_secs: 0.0,
        waits,
        n: datagrams,
        bytes: 0,
    })
}

/// Receives with kim's `Reassembler`.
fn recv_kim(
    fd: BorrowedFd<'_>,
    count: usize,
    size: usize,
    chunk: usize,
    abort: &AtomicBool,
) -> anyhow::Result<Side> {
    let mut rx = Reassembler::new(size, chunk, Duration::from_secs(10));
    let (mut got, mut bytes, mut waits) = (0, 0, 0);
    while got < count {
        match rx.recv(fd) {
            Ok(m) => {
                check(got, &m.payload, size)?;
                got += 1;
                bytes += m.payload.len() as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                waits += 1;
                wait(fd, libc::POLLIN, abort)?;
            }
            Err(e) => return Err(e).context("Reassembler::recv"),
        }
    }
    let at = Instant::now();
    let st = rx.stats();
    ensure!(
        (st.orphan_chunks, st.malformed, st.refused, st.expired) == (0, 0, 0, 0),
        "reassembler dropped datagrams: {st:?}"
    );
    Ok(Side {
        at,
        cpu_secs: 0.0,
        waits,
        n: got as u64,
        bytes,
    })
}

/// One `recv` into `buf`; `Ok(None)` when the socket is empty. Returns the datagram's real
/// length (`MSG_TRUNC`).
fn recv_raw(
    fd: BorrowedFd<'_>,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into it.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

/// Receives raw chunks straight into each message's final buffer (the ceiling).
fn recv_ceiling(
    fd: BorrowedFd<'_>,
    count: usize,
    size: usize,
    chunk: usize,
    abort: &AtomicBool,
) -> anyhow::Result<Side> {
    let (mut bytes, mut waits) = (0, 0);
    for k in 0..count {
        // The one allocation of the message, as in kim.
        let mut buf = BytesMut::with_capacity(size);
        while buf.len() < size {
            let want = chunk.min(size - buf.len());
            let tail = &mut buf.spare_capacity_mut()[..want];
            match recv_raw(fd, tail).context("recv")? {
                Some(n) => {
                    ensure!(
                        n == want,
                        "message {k}: a datagram of {n} bytes, {want} expected"
                    );
                    // SAFETY: the kernel wrote `n` bytes into the spare capacity.
                    unsafe { buf.set_len(buf.len() + n) };
                }
                None => {
                    waits += 1;
                    wait(fd, libc::POLLIN, abort)?;
                }
            }
        }
        let msg = buf.freeze();
        check(k, &msg, size)?;
        bytes += msg.len() as u64;
    }
    Ok(Side {
        at: Instant::now(),
        cpu_secs: 0.0,
        waits,
        n: count as u64,
        bytes,
    })
}

/// Receives kim's wire the naive way: each datagram whole into a scratch buffer, its payload
/// appended to a `Vec` per message that grows as it goes.
fn recv_naive(
    fd: BorrowedFd<'_>,
    count: usize,
    size: usize,
    chunk: usize,
    abort: &AtomicBool,
) -> anyhow::Result<Side> {
    let mut scratch: Vec<std::mem::MaybeUninit<u8>> =
        vec![std::mem::MaybeUninit::uninit(); chunk + HEADER_LEN];
    let mut partials: HashMap<u32, Vec<u8>> = HashMap::new();
    let (mut got, mut bytes, mut waits) = (0, 0, 0);
    while got < count {
        let Some(len) = recv_raw(fd, &mut scratch).context("recv")? else {
            waits += 1;
            wait(fd, libc::POLLIN, abort)?;
            continue;
        };
        ensure!(
            (HEADER_LEN..=scratch.len()).contains(&len),
            "a datagram of {len} bytes"
        );
        // SAFETY: the kernel wrote `len` bytes at the start of the scratch buffer.
        let dgram = unsafe { std::slice::from_raw_parts(scratch.as_ptr() as *const u8, len) };
        let (hdr, body) = dgram.split_at(HEADER_LEN);
        let h = Header::decode(hdr.try_into().expect("HEADER_LEN bytes")).context("bad header")?;
        let msg = if h.flags & BEGIN != 0 && h.flags & END != 0 {
            Some(Bytes::copy_from_slice(body))
        } else if h.flags & BEGIN != 0 {
            // The naive path: no reservation from the announced total.
            partials.insert(h.msg_id, Vec::new());
            None
        } else {
            let v = partials
                .get_mut(&h.msg_id)
                .with_context(|| format!("a chunk of message {} with no BEGIN", h.msg_id))?;
            v.extend_from_slice(body);
            if h.flags & END != 0 {
                partials.remove(&h.msg_id).map(Bytes::from)
            } else {
                None
            }
        };
        if let Some(m) = msg {
            check(got, &m, size)?;
            got += 1;
            bytes += m.len() as u64;
        }
    }
    Ok(Side {
        at: Instant::now(),
        cpu_secs: 0.0,
        waits,
        n: got as u64,
        bytes,
    })
}

/// CPU time of the calling thread (user + system), in seconds.
fn thread_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into a zeroed rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_catches_wrong_lengths_and_stamps() {
        let mut buf = pattern(1000);
        stamp(&mut buf, 300);
        assert!(check(300, &buf, 1000).is_ok());
        assert!(check(301, &buf, 1000).is_err(), "another message's stamps");
        assert!(check(300, &buf[..999], 1000).is_err(), "short");
        buf[999] ^= 1;
        assert!(check(300, &buf, 1000).is_err(), "last byte");
    }
}
