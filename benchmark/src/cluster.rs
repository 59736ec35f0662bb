//! The push workload of the `cluster` benchmark: pairs of mock-protocol users, a sender on one
//! server and a receiver on the same server or on another node of the cluster; each sender
//! pushes `@<receiver> <seq><time>` with a window of pushes in flight, and each receiver checks
//! the order of what it gets (`<sender>: <seq><time>`) and records the latency from the
//! sender's write to its read (one clock: one process). One thread drives every connection
//! with epoll, as the fan-out workload does.
//!
//! A push that finds nobody (`offline <id>`) is tolerated during the warm-up only: a receiver
//! that just logged in on another node may not be reachable from every node yet. Any other
//! answer to a sender, or a push lost or reordered, fails the run.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mio::{Events, Poll, Token};

use crate::latency::Histogram;
use crate::wire::{self, Wire};

/// What a push run measured, over its measured window.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PushResult {
    /// Pushes delivered per second, all pairs together.
    pub pushes_per_sec: f64,
    /// Median latency from the sender's write to the receiver's read, microseconds.
    pub p50_us: f64,
    /// 99th percentile of the same, microseconds.
    pub p99_us: f64,
    /// CPU time of the servers (the nodes and the broker) per push, microseconds.
    pub server_cpu_us_per_push: f64,
}

/// The settings of a push run.
#[derive(Debug, Clone, Copy)]
pub struct PushLoad {
    /// Sender and receiver pairs.
    pub pairs: usize,
    /// Pushes each sender keeps in flight (sent, not yet received).
    pub window: usize,
    /// Unmeasured time at the start.
    pub warmup: Duration,
    /// Measured time after it.
    pub duration: Duration,
}

/// One sender and its receiver.
struct Pair {
    sender: mio::net::TcpStream,
    receiver: mio::net::TcpStream,
    /// `@<receiver id> `: what every push starts with.
    command: Vec<u8>,
    /// `<sender id>: `: what every delivery starts with.
    prefix: Vec<u8>,
    /// A push not yet wholly written, and how much of it was.
    out: Vec<u8>,
    out_at: usize,
    /// Pushes sent; pushes answered (delivered, or `offline` in the warm-up).
    sent: u64,
    answered: u64,
    /// The sequence number the receiver gets next.
    next: u64,
    /// Bytes read and not yet parsed into frames, on each side.
    from_sender: Vec<u8>,
    from_receiver: Vec<u8>,
}

/// A server frame at the start of `buf`: its first byte, its payload's range in `buf`, and its
/// length; `None` until all of it is there.
fn server_frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let (&first, &len) = (buf.first()?, buf.get(1)?);
    let (header, len) = match len & 0x7f {
        126 => (
            4,
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
        ),
        127 => (
            10,
            usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?,
        ),
        n => (2, n as usize),
    };
    let total = header + len;
    (buf.len() >= total).then_some((first, header..total, total))
}

/// Reads all `stream` has into `buf`; fails if the server closed it.
fn read_available(stream: &mut mio::net::TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => bail!("the server closed the connection"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs pushes from senders logged in at `from` to receivers logged in at `to` (the same
/// server, or another node of its cluster). Ids carry `tag`, so that runs against one cluster
/// do not meet each other's users. `server_cpu` reads the servers' CPU seconds.
pub fn pushes(
    from: &str,
    to: &str,
    tag: &str,
    load: PushLoad,
    server_cpu: impl Fn() -> anyhow::Result<f64>,
) -> anyhow::Result<PushResult> {
    anyhow::ensure!(load.pairs >= 1 && load.window >= 1, "a pair and a window");
    let mut poll = Poll::new()?;
    let mut pairs = Vec::with_capacity(load.pairs);
    for i in 0..load.pairs {
        let (s, r) = (format!("s{i}-{tag}"), format!("r{i}-{tag}"));
        let receiver = wire::login(to, Wire::Ws, &r).with_context(|| format!("{r} at {to}"))?;
        let sender = wire::login(from, Wire::Ws, &s).with_context(|| format!("{s} at {from}"))?;
        pairs.push(Pair {
            sender: wire::register(sender, &poll, 2 * i)?,
            receiver: wire::register(receiver, &poll, 2 * i + 1)?,
            command: format!("@{r} ").into_bytes(),
            prefix: format!("{s}: ").into_bytes(),
            out: Vec::new(),
            out_at: 0,
            sent: 0,
            answered: 0,
            next: 0,
            from_sender: Vec::new(),
            from_receiver: Vec::new(),
        });
    }
    let base = Instant::now();
    let now_ns = || base.elapsed().as_nanos() as u64;
    let mut events = Events::with_capacity(1024);
    let mut latencies = Histogram::new();
    let mut delivered: u64 = 0;
    let mut measuring: Option<(Instant, u64, f64)> = None;
    let mut progress_at = Instant::now();
    let mut result = None;
    loop {
        let elapsed = base.elapsed();
        if measuring.is_none() && elapsed >= load.warmup {
            measuring = Some((Instant::now(), delivered, server_cpu()?));
            latencies.clear();
        }
        if result.is_none() && elapsed >= load.warmup + load.duration {
            let (t, d0, cpu0) = measuring.context("the run ended before its warm-up did")?;
            let secs = t.elapsed().as_secs_f64();
            let pushes = delivered - d0;
            result = Some(PushResult {
                pushes_per_sec: pushes as f64 / secs,
                p50_us: latencies.percentile(0.50),
                p99_us: latencies.percentile(0.99),
                server_cpu_us_per_push: (server_cpu()? - cpu0) * 1e6 / pushes.max(1) as f64,
            });
        }
        // Then no more pushes: the ones in flight must all arrive.
        if result.is_some() && pairs.iter().all(|p| p.answered == p.sent) {
            break;
        }
        if progress_at.elapsed() > Duration::from_secs(10) {
            let lost: u64 = pairs.iter().map(|p| p.sent - p.answered).sum();
            bail!("no push delivered for 10 s: {lost} sent and never delivered");
        }
        // Once measured, only what was begun is finished.
        let window = if result.is_none() { load.window } else { 0 };
        for p in &mut pairs {
            send_pushes(p, window, now_ns)?;
        }
        poll.poll(&mut events, Some(Duration::from_millis(5)))?;
        for ev in events.iter() {
            let Token(t) = ev.token();
            let p = &mut pairs[t / 2];
            if t % 2 == 0 {
                read_available(&mut p.sender, &mut p.from_sender).context("a sender")?;
                let offline = take_answers(p)?;
                if offline > 0 && measuring.is_some() {
                    bail!("a push found its receiver offline in the measured window");
                }
                p.answered += offline;
            } else {
                read_available(&mut p.receiver, &mut p.from_receiver).context("a receiver")?;
                let received_ns = now_ns();
                let n = take_deliveries(p, received_ns, &mut latencies)?;
                if n > 0 {
                    delivered += n;
                    progress_at = Instant::now();
                }
            }
        }
    }
    result.context("the run ended before its measured window did")
}

/// Writes `p`'s pushes while fewer than `window` are in flight and the socket takes them.
fn send_pushes(p: &mut Pair, window: usize, now_ns: impl Fn() -> u64) -> anyhow::Result<()> {
    loop {
        if p.out_at == p.out.len() {
            if p.sent - p.answered >= window as u64 {
                return Ok(());
            }
            let mut payload = p.command.clone();
            payload.extend_from_slice(&p.sent.to_le_bytes());
            payload.extend_from_slice(&now_ns().to_le_bytes());
            p.out = Wire::Ws.request(&payload);
            p.out_at = 0;
            p.sent += 1;
        }
        match p.sender.write(&p.out[p.out_at..]) {
            Ok(n) => p.out_at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e).context("a sender's write"),
        }
    }
}

/// Parses what a sender got: `offline <id>` answers (counted and returned); anything else
/// fails the run with its text.
fn take_answers(p: &mut Pair) -> anyhow::Result<u64> {
    let mut offline = 0;
    let mut at = 0;
    while let Some((_, payload, len)) = server_frame(&p.from_sender[at..]) {
        let text = &p.from_sender[at..][payload];
        if !text.starts_with(b"offline ") {
            bail!(
                "a sender was answered {:?}",
                String::from_utf8_lossy(text).into_owned()
            );
        }
        offline += 1;
        at += len;
    }
    p.from_sender.drain(..at);
    Ok(offline)
}

/// Parses what a receiver got: each delivery checked for its sender and its order, and its
/// latency recorded. Returns how many.
fn take_deliveries(
    p: &mut Pair,
    received_ns: u64,
    latencies: &mut Histogram,
) -> anyhow::Result<u64> {
    let mut n = 0;
    let mut at = 0;
    while let Some((first, payload, len)) = server_frame(&p.from_receiver[at..]) {
        let body = &p.from_receiver[at..][payload];
        let Some(stamp) = body.strip_prefix(p.prefix.as_slice()) else {
            bail!(
                "a receiver got {:?}",
                String::from_utf8_lossy(body).into_owned()
            );
        };
        anyhow::ensure!(
            first == 0x82 && stamp.len() == 16,
            "a delivery is not the binary push sent"
        );
        let seq = u64::from_le_bytes(stamp[..8].try_into().expect("8 bytes"));
        let sent_ns = u64::from_le_bytes(stamp[8..].try_into().expect("8 bytes"));
        // Pushes found offline in the warm-up leave gaps; nothing may come back or twice.
        if seq < p.next {
            bail!("push {seq} arrived after push {}", p.next - 1);
        }
        p.next = seq + 1;
        latencies.record_us(received_ns.saturating_sub(sent_ns) / 1000);
        p.answered += 1;
        n += 1;
        at += len;
    }
    p.from_receiver.drain(..at);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_are_split_whole_or_not_at_all() {
        let mut buf = vec![0x82, 3, b'a', b'b', b'c', 0x81];
        assert_eq!(server_frame(&buf), Some((0x82, 2..5, 5)));
        assert_eq!(server_frame(&buf[5..]), None);
        buf.truncate(4);
        assert_eq!(server_frame(&buf), None);
        let mut long = vec![0x82, 126, 0, 200];
        long.extend(std::iter::repeat_n(7, 200));
        assert_eq!(server_frame(&long), Some((0x82, 4..204, 204)));
        assert_eq!(server_frame(&long[..100]), None);
    }
}
