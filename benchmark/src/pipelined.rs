//! Pipelined echo: C connections each keeping W messages in flight, counting the echoes that
//! never come back.
//!
//! A server that refuses a reply under load (a full queue somewhere between the socket and the
//! handler) shows here as lost echoes rather than as a slower rate: the client sends the next
//! message whenever fewer than W are unanswered, so it keeps pushing while replies vanish. At
//! the end the client stops sending and waits for the echoes still due; those that have not
//! come once no byte has arrived for [`STALL`] are lost. One thread drives every connection
//! with epoll; echoes are counted by length, not decoded.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mio::net::TcpStream as MioStream;
use mio::{Events, Poll};

use crate::wire::{self, Wire};

/// How long the drain waits without a byte arriving before it counts what is missing as lost.
pub const STALL: Duration = Duration::from_secs(3);

/// What a pipelined run counted.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PipelinedResult {
    /// Echoes received per second while sending.
    pub msgs_per_sec: f64,
    /// Messages written whole.
    pub sent: u64,
    /// Echoes read whole.
    pub echoed: u64,
    /// Messages whose echo never came.
    pub lost: u64,
}

struct Conn {
    stream: MioStream,
    /// Messages written whole.
    sent: u64,
    /// Bytes of the message being written.
    written: usize,
    /// Echo bytes read, all messages together.
    got: u64,
}

impl Conn {
    fn echoed(&self, reply_len: usize) -> u64 {
        self.got / reply_len as u64
    }
}

/// Runs `conns` connections each keeping `in_flight` messages of `size` bytes unanswered for
/// `duration`, then drains.
pub fn pipelined(
    addr: &str,
    wire: Wire,
    conns: usize,
    in_flight: usize,
    size: usize,
    duration: Duration,
) -> anyhow::Result<PipelinedResult> {
    anyhow::ensure!(in_flight >= 1, "--in-flight must be at least 1");
    let request: Arc<[u8]> = wire.request(&vec![b'p'; size]).into();
    let reply_len = wire.reply_len(size);
    let mut poll = Poll::new()?;
    let mut list = Vec::with_capacity(conns);
    for i in 0..conns {
        let s = wire::login(addr, wire, &format!("pipelined{i}"))?;
        let stream = wire::register(s, &poll, i)?;
        list.push(Conn {
            stream,
            sent: 0,
            written: 0,
            got: 0,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 256 * 1024];
    let started = Instant::now();
    let end = started + duration;
    let mut echoed_at_end = None;
    let mut last_progress = Instant::now();
    loop {
        let now = Instant::now();
        let sending = now < end;
        if !sending && echoed_at_end.is_none() {
            echoed_at_end = Some(list.iter().map(|c| c.echoed(reply_len)).sum::<u64>());
        }
        let due: u64 = list
            .iter()
            .map(|c| (c.sent + u64::from(c.written > 0)).saturating_sub(c.echoed(reply_len)))
            .sum();
        if !sending && (due == 0 || last_progress.elapsed() >= STALL) {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            let c = &mut list[ev.token().0];
            loop {
                let mut progressed = false;
                // Write while fewer than `in_flight` are unanswered (and a message begun is
                // always finished).
                while c.written > 0
                    || (sending && c.sent.saturating_sub(c.echoed(reply_len)) < in_flight as u64)
                {
                    match c.stream.write(&request[c.written..]) {
                        Ok(n) => {
                            c.written += n;
                            if c.written == request.len() {
                                c.written = 0;
                                c.sent += 1;
                            }
                            progressed = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e).context("writing a message"),
                    }
                }
                match c.stream.read(&mut scratch) {
                    Ok(0) => bail!("the server closed a connection"),
                    Ok(n) => {
                        c.got += n as u64;
                        last_progress = Instant::now();
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e).context("reading an echo"),
                }
                if !progressed {
                    break;
                }
            }
        }
    }
    let sent: u64 = list.iter().map(|c| c.sent).sum();
    let echoed: u64 = list.iter().map(|c| c.echoed(reply_len)).sum();
    Ok(PipelinedResult {
        msgs_per_sec: echoed_at_end.unwrap_or(echoed) as f64 / duration.as_secs_f64(),
        sent,
        echoed,
        lost: sent.saturating_sub(echoed),
    })
}
