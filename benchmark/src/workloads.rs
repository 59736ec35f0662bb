//! The workloads. Each takes a running server's address and returns its measurements; the
//! caller runs it against kim and the baselines in turn.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use mio::net::TcpStream as MioStream;
use mio::{Events, Poll};

use crate::wire::{self, Wire};

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("  {msg:<28} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Echo results: messages per second over the measured window.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EchoResult {
    /// Round trips completed per second, all connections together.
    pub msgs_per_sec: f64,
    /// Requests written whole, warm-up included (each connection's last one may still have
    /// been awaiting its echo at the end).
    pub requests: u64,
    /// Echoes read whole, warm-up included.
    pub replies: u64,
}

struct EchoConn {
    stream: MioStream,
    /// Bytes of the current request written.
    written: usize,
    /// Bytes of the current reply read.
    got: usize,
}

/// C connections each sending an S-byte message, waiting for its echo, sending again (the
/// method of uWebSockets' load_test). One thread drives every connection with epoll.
pub fn echo(
    addr: &str,
    wire: Wire,
    conns: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<EchoResult> {
    let request: Arc<[u8]> = wire.request(&vec![b'e'; size]).into();
    let reply_len = wire.reply_len(size);
    let mut poll = Poll::new()?;
    let mut list = Vec::with_capacity(conns);
    for i in 0..conns {
        let stream = wire::register(wire::connect(addr, wire)?, &poll, i)?;
        list.push(EchoConn {
            stream,
            written: 0,
            got: 0,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 256 * 1024];
    let mut done: u64 = 0;
    let started = Instant::now();
    let mut window_start: Option<(Instant, u64)> = None;
    let end = started + warmup + duration;
    let pb = bar(duration.as_secs(), "echo (seconds measured)");
    while Instant::now() < end {
        if window_start.is_none() && started.elapsed() >= warmup {
            window_start = Some((Instant::now(), done));
        }
        if let Some((t, _)) = window_start {
            pb.set_position(t.elapsed().as_secs());
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            let c = &mut list[ev.token().0];
            loop {
                // Write what is left of the current request.
                while c.written < request.len() {
                    match c.stream.write(&request[c.written..]) {
                        Ok(n) => c.written += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e).context("writing a request"),
                    }
                }
                match c
                    .stream
                    .read(&mut scratch[..(reply_len - c.got).min(256 * 1024)])
                {
                    Ok(0) => bail!("the server closed a connection"),
                    Ok(n) => {
                        c.got += n;
                        if c.got == reply_len {
                            c.got = 0;
                            c.written = 0;
                            done += 1;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("reading a reply"),
                }
            }
        }
    }
    pb.finish_and_clear();
    let (t, at) = window_start.context("the run was shorter than its warm-up")?;
    let secs = t.elapsed().as_secs_f64();
    let awaiting = list.iter().filter(|c| c.written == request.len()).count() as u64;
    Ok(EchoResult {
        msgs_per_sec: (done - at) as f64 / secs,
        requests: done + awaiting,
        replies: done,
    })
}

/// Round-trip results.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RoundtripResult {
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Latency percentiles, in microseconds.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// The slowest round trip.
    pub max_us: f64,
}

/// N messages of S bytes on one logged-in connection, one at a time (KIM's Test_Message).
pub fn roundtrip(
    addr: &str,
    wire: Wire,
    count: usize,
    size: usize,
) -> anyhow::Result<RoundtripResult> {
    let mut s = wire::login(addr, wire, "roundtrip")?;
    let request = wire.request(&vec![b'r'; size]);
    let mut reply = vec![0u8; wire.reply_len(size)];
    let mut lat = Vec::with_capacity(count);
    let pb = bar(count as u64, "roundtrip messages");
    let started = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        s.write_all(&request)?;
        s.read_exact(&mut reply)?;
        lat.push(t.elapsed().as_nanos() as u64);
        if i % 1000 == 0 {
            pb.set_position(i as u64);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    Ok(RoundtripResult {
        msgs_per_sec: count as f64 / secs,
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        max_us: *lat.last().expect("count > 0") as f64 / 1000.0,
    })
}

/// Large-message results.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LargeResult {
    /// Payload megabytes (10^6) echoed per second.
    pub mb_per_sec: f64,
}

/// N messages of S bytes on one connection, echoed (Swoole's large-message test). A writer
/// thread sends while this thread reads, so neither side waits on the other's buffers.
pub fn large(addr: &str, wire: Wire, count: usize, size: usize) -> anyhow::Result<LargeResult> {
    let s = wire::connect(addr, wire)?;
    let mut w = s.try_clone()?;
    let mut r = s;
    let request = wire.request(&vec![b'L'; size]);
    let reply_len = wire.reply_len(size);
    let started = Instant::now();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..count {
            w.write_all(&request)?;
        }
        Ok(())
    });
    let pb = bar(count as u64, "large messages echoed");
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = count * reply_len;
    let mut seen = 0usize;
    while left > 0 {
        let n = match r.read(&mut buf[..left.min(256 * 1024)]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                bail!(
                    "no echo for 30 s with {} of {count} messages to go",
                    left / reply_len
                )
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            bail!("the server closed the connection with {left} bytes to go");
        }
        left -= n;
        seen += n;
        pb.set_position((seen / reply_len) as u64);
    }
    let secs = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    Ok(LargeResult {
        mb_per_sec: (count * size) as f64 / 1e6 / secs,
    })
}

/// One slice of an interleaved echo run: which server was loaded, the round trips completed
/// and how long the slice took (its in-flight echoes drained).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Slice {
    /// Index of the server in the addresses given.
    pub server: usize,
    /// Round trips completed in the slice.
    pub echoes: u64,
    /// Seconds from the slice's first request to its last echo.
    pub secs: f64,
}

/// Echo against several servers in turn, in short slices, from the same client thread: each
/// server gets `conns` connections up front; in a slice only one server's connections send
/// (each one message at a time, as in [`echo`]); at the end of a slice its in-flight echoes
/// are drained before the next server's slice starts. Rounds visit the servers in order and
/// in reverse order alternately (A B, B A, ...), so that the machine's drift, which moves
/// much more slowly than a slice, weighs on every server alike. Slices during `warmup` are
/// not returned.
pub fn echo_interleaved(
    addrs: &[String],
    wire: Wire,
    conns: usize,
    size: usize,
    warmup: Duration,
    slice: Duration,
    rounds: usize,
) -> anyhow::Result<Vec<Slice>> {
    let request: Arc<[u8]> = wire.request(&vec![b'e'; size]).into();
    let reply_len = wire.reply_len(size);
    let mut poll = Poll::new()?;
    let mut sets: Vec<Vec<EchoConn>> = Vec::new();
    for (k, addr) in addrs.iter().enumerate() {
        let mut list = Vec::with_capacity(conns);
        for i in 0..conns {
            let stream = wire::register(wire::connect(addr, wire)?, &poll, k * conns + i)?;
            list.push(EchoConn {
                stream,
                written: request.len(),
                got: 0,
            });
        }
        sets.push(list);
    }
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut out = Vec::new();
    let total = rounds;
    let pb = bar(total as u64, "interleaved rounds");
    let mut round = 0usize;
    let mut warming = true;
    while round < total {
        let order: Vec<usize> = if round & 1 == 0 {
            (0..addrs.len()).collect()
        } else {
            (0..addrs.len()).rev().collect()
        };
        for &k in &order {
            let set = &mut sets[k];
            let t0 = Instant::now();
            let end = t0 + slice;
            let mut echoes = 0u64;
            let mut in_flight = 0usize;
            // Start one request on every connection of this server.
            for c in set.iter_mut() {
                c.written = 0;
                c.got = 0;
                in_flight += 1;
                write_request(c, &request)?;
            }
            while in_flight > 0 {
                poll.poll(&mut events, Some(Duration::from_millis(50)))?;
                let sending = Instant::now() < end;
                for ev in events.iter() {
                    let (owner, i) = (ev.token().0 / conns, ev.token().0 % conns);
                    if owner != k {
                        continue;
                    }
                    let c = &mut set[i];
                    loop {
                        write_request(c, &request)?;
                        if c.written < request.len() || c.got == reply_len {
                            break;
                        }
                        match c.stream.read(&mut scratch[..reply_len - c.got]) {
                            Ok(0) => bail!("the server closed a connection"),
                            Ok(n) => {
                                c.got += n;
                                if c.got == reply_len {
                                    echoes += 1;
                                    if sending {
                                        c.written = 0;
                                        c.got = 0;
                                    } else {
                                        in_flight -= 1;
                                        break;
                                    }
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e).context("reading a reply"),
                        }
                    }
                }
            }
            if !warming {
                out.push(Slice {
                    server: k,
                    echoes,
                    secs: t0.elapsed().as_secs_f64(),
                });
            }
        }
        if warming && started.elapsed() >= warmup {
            warming = false;
            continue;
        }
        if !warming {
            round += 1;
            pb.set_position(round as u64);
        }
    }
    pb.finish_and_clear();
    Ok(out)
}

/// Writes what is left of the current request (nothing once it is all written).
fn write_request(c: &mut EchoConn, request: &[u8]) -> anyhow::Result<()> {
    while c.written < request.len() {
        match c.stream.write(&request[c.written..]) {
            Ok(n) => c.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(e).context("writing a request"),
        }
    }
    Ok(())
}
