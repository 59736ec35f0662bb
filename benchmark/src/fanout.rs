//! The fan-out workload: N subscribers in one room and one publisher, against any server that
//! sends every message it receives to every connection (kim's `echo-server --broadcast`, the
//! uWebSockets pub/sub server, the tokio-tungstenite broadcast loop).
//!
//! The publisher sends binary messages carrying a sequence number and the time they were sent,
//! as fast as the server takes them, but never more than `window` messages ahead of the last
//! one every subscriber has received: the servers then always have work queued and none has
//! to drop anything (a lost or reordered delivery fails the run). Every subscriber checks the
//! order of what it receives, and each delivery's latency (receive time minus send time, one
//! clock: one process) goes into a histogram. One thread drives every connection with epoll.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mio::{Events, Poll, Token};

use crate::latency::Histogram;
use crate::wire::{self, Wire};

/// A message's sequence number marking it as a probe (sent until every subscriber is in the
/// room), not a measured message.
const PROBE: u64 = u64::MAX;
/// The smallest payload: a sequence number and a time.
pub const MIN_SIZE: usize = 16;

/// What a fan-out run measured, over its measured window.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FanoutResult {
    /// Messages received by subscribers per second, all together.
    pub deliveries_per_sec: f64,
    /// Messages published per second.
    pub publishes_per_sec: f64,
    /// Median delivery latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile delivery latency, microseconds.
    pub p99_us: f64,
    /// The server's CPU time per delivery, microseconds.
    pub server_cpu_us_per_delivery: f64,
}

struct Subscriber {
    stream: mio::net::TcpStream,
    /// Bytes of a frame split across reads.
    partial: Vec<u8>,
    /// The sequence number this subscriber receives next.
    next: u64,
    /// Set once it received a probe: it is in the room.
    joined: bool,
}

/// The server's frame for a `size`-byte binary message: its header length.
fn header_len(size: usize) -> usize {
    match size {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// A masked binary frame carrying `seq` and `sent_ns`, `size` bytes in all.
fn message(seq: u64, sent_ns: u64, size: usize) -> Vec<u8> {
    let mut payload = vec![b'f'; size];
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    payload[8..16].copy_from_slice(&sent_ns.to_le_bytes());
    Wire::Ws.request(&payload)
}

/// Runs the fan-out against the servers at `addrs`: `subscribers` connections that only read,
/// spread over the servers in turn, and one on the first that publishes `size`-byte
/// messages; `warmup` unmeasured, then `duration` measured. `server_cpu` reads the servers'
/// CPU seconds (at the window's start and end). Several servers must be nodes of one cluster,
/// so that a publish on one reaches the room's members on all.
pub fn fanout(
    addrs: &[&str],
    subscribers: usize,
    size: usize,
    window: usize,
    warmup: Duration,
    duration: Duration,
    server_cpu: impl Fn() -> anyhow::Result<f64>,
) -> anyhow::Result<FanoutResult> {
    anyhow::ensure!(size >= MIN_SIZE, "messages carry at least {MIN_SIZE} bytes");
    anyhow::ensure!(
        window >= 1 && subscribers >= 1 && !addrs.is_empty(),
        "a window, a subscriber and a server at least"
    );
    let frame_len = header_len(size) + size;
    let mut poll = Poll::new()?;
    let mut subs = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let addr = addrs[i % addrs.len()];
        let stream = wire::register(wire::connect(addr, Wire::Ws)?, &poll, i)
            .with_context(|| format!("subscriber {i}"))?;
        subs.push(Subscriber {
            stream,
            partial: Vec::with_capacity(frame_len),
            next: 0,
            joined: false,
        });
    }
    let publisher_token = subscribers;
    let mut publisher = wire::register(wire::connect(addrs[0], Wire::Ws)?, &poll, publisher_token)?;
    let base = Instant::now();
    let now_ns = || base.elapsed().as_nanos() as u64;

    let mut events = Events::with_capacity(4096);
    let mut scratch = vec![0u8; 256 * 1024];
    // Deliveries of each message in flight, by sequence number modulo the window.
    let mut got = vec![0usize; window];
    let mut complete: u64 = 0;
    let mut next_seq: u64 = 0;
    let mut out: Vec<u8> = Vec::new();
    let mut out_at = 0;
    let mut joined = 0;
    let mut last_probe: Option<Instant> = None;
    let mut latencies = Histogram::new();
    let mut measuring: Option<(Instant, u64, u64, f64)> = None;
    let mut delivered: u64 = 0;
    let mut progress_at = Instant::now();
    let mut started: Option<Instant> = None;
    loop {
        // Probes until every subscriber is in the room, then the measured messages.
        if joined < subscribers {
            if last_probe.is_none_or(|t| t.elapsed() > Duration::from_millis(100)) && out.is_empty()
            {
                out = message(PROBE, now_ns(), size);
                out_at = 0;
                last_probe = Some(Instant::now());
            }
        } else {
            let begun = *started.get_or_insert_with(Instant::now);
            let elapsed = begun.elapsed();
            if measuring.is_none() && elapsed >= warmup {
                measuring = Some((Instant::now(), delivered, next_seq, server_cpu()?));
                latencies.clear();
            }
            if elapsed >= warmup + duration {
                break;
            }
            if out.is_empty() && next_seq < complete + window as u64 {
                out = message(next_seq, now_ns(), size);
                out_at = 0;
                next_seq += 1;
            }
        }
        while out_at < out.len() {
            match publisher.write(&out[out_at..]) {
                Ok(n) => out_at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("publishing"),
            }
        }
        if out_at == out.len() && !out.is_empty() {
            out.clear();
            out_at = 0;
            // Publish the next one at once if the window allows.
            if joined == subscribers && next_seq < complete + window as u64 {
                continue;
            }
        }
        if progress_at.elapsed() > Duration::from_secs(10) {
            bail!(
                "no progress for 10 s: {joined} of {subscribers} joined, message {complete} \
                 not delivered to every subscriber (lost?)"
            );
        }
        poll.poll(&mut events, Some(Duration::from_millis(20)))?;
        for ev in events.iter() {
            let Token(i) = ev.token();
            if i == publisher_token {
                // Its own copies: read and dropped.
                loop {
                    match publisher.read(&mut scratch) {
                        Ok(0) => bail!("the server closed the publisher"),
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e).context("the publisher's reads"),
                    }
                }
                continue;
            }
            let s = &mut subs[i];
            loop {
                let n = match s.stream.read(&mut scratch) {
                    Ok(0) => bail!("the server closed subscriber {i}"),
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).with_context(|| format!("subscriber {i} reads")),
                };
                let received_ns = now_ns();
                let mut data = &scratch[..n];
                while !data.is_empty() {
                    // Complete the frame begun in an earlier read, or take whole frames.
                    let frame: &[u8] = if !s.partial.is_empty() || data.len() < frame_len {
                        let take = (frame_len - s.partial.len()).min(data.len());
                        s.partial.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if s.partial.len() < frame_len {
                            break;
                        }
                        &s.partial
                    } else {
                        let (f, rest) = data.split_at(frame_len);
                        data = rest;
                        f
                    };
                    if frame[0] != 0x82 {
                        bail!(
                            "subscriber {i}: not a binary frame (first byte {:#x})",
                            frame[0]
                        );
                    }
                    let body = &frame[header_len(size)..];
                    let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
                    let sent = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
                    if seq == PROBE {
                        if !s.joined {
                            s.joined = true;
                            joined += 1;
                            progress_at = Instant::now();
                        }
                    } else {
                        if seq != s.next {
                            bail!("subscriber {i} received message {seq}, expected {}", s.next);
                        }
                        s.next += 1;
                        delivered += 1;
                        latencies.record_us(received_ns.saturating_sub(sent) / 1000);
                        let slot = &mut got[(seq % window as u64) as usize];
                        *slot += 1;
                        while got[(complete % window as u64) as usize] == subscribers {
                            got[(complete % window as u64) as usize] = 0;
                            complete += 1;
                            progress_at = Instant::now();
                        }
                    }
                    s.partial.clear();
                }
            }
        }
    }
    let (t, d0, p0, cpu0) = measuring.context("the run ended before its warm-up did")?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = server_cpu()? - cpu0;
    let deliveries = delivered - d0;
    Ok(FanoutResult {
        deliveries_per_sec: deliveries as f64 / secs,
        publishes_per_sec: (next_seq - p0) as f64 / secs,
        p50_us: latencies.percentile(0.50),
        p99_us: latencies.percentile(0.99),
        server_cpu_us_per_delivery: cpu * 1e6 / deliveries.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_masked_binary_frames_of_the_size_asked() {
        for size in [16, 100, 125, 126, 1000] {
            let m = message(7, 9, size);
            assert_eq!(m[0], 0x82);
            assert_eq!(m.len(), header_len(size) + 4 + size, "{size}");
        }
    }
}
