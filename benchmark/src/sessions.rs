//! Sessions' costs, measured from outside against kim's mock server, each beside the same
//! workload without sessions: echo and fan-out rates (the clients acknowledging every
//! [`ACK_EVERY`] messages unless told otherwise), the memory of an idle session, the cost of a held message per recipient, and
//! the replay of held messages to many resuming clients.
//!
//! The mock protocol's text form is spoken: a login `<id> session` is answered `ok <token>`,
//! every frame the server sends is then `<seq> <text>`, and `/ack <seq>` acknowledges. Replies
//! are parsed (their numbers differ in length), by one epoll thread for the rates.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mio::net::TcpStream as MioStream;
use mio::{Events, Poll};

use crate::wire::{self, Wire};

/// Acknowledgements are sent every this many messages, by default.
pub const ACK_EVERY: u64 = 32;

/// Server frames read from a byte stream: kim's TCP frames, or websocket frames as a server
/// sends them (unmasked).
#[derive(Default)]
pub struct Frames {
    buf: Vec<u8>,
    start: usize,
}

impl Frames {
    /// Appends bytes read.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's payload, if one is there.
    pub fn next(&mut self, wire: Wire) -> Option<&[u8]> {
        let b = &self.buf[self.start..];
        let (head, len) = match wire {
            Wire::Tcp => {
                if b.len() < 5 {
                    return None;
                }
                (5, u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize)
            }
            Wire::Ws => {
                if b.len() < 2 {
                    return None;
                }
                match b[1] & 0x7f {
                    126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
                    127 if b.len() >= 10 => {
                        let mut n = [0u8; 8];
                        n.copy_from_slice(&b[2..10]);
                        (10, u64::from_be_bytes(n) as usize)
                    }
                    126 | 127 => return None,
                    n => (2, n as usize),
                }
            }
        };
        if b.len() < head + len {
            return None;
        }
        let from = self.start + head;
        self.start += head + len;
        Some(&self.buf[from..from + len])
    }

    /// Drops what was consumed, keeping a partial frame.
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// The number of a numbered frame `<seq> <text>`.
pub fn seq_of(payload: &[u8]) -> Option<u64> {
    let space = payload.iter().position(|&b| b == b' ')?;
    std::str::from_utf8(&payload[..space]).ok()?.parse().ok()
}

/// Connects and logs in as `id` (with a session if `session`): the socket (blocking) and the
/// login's answer.
pub fn login(
    addr: &str,
    wire: Wire,
    id: &str,
    session: bool,
) -> anyhow::Result<(TcpStream, String)> {
    let mut s = wire::connect(addr, wire)?;
    let login = if session {
        format!("{id} session")
    } else {
        id.to_string()
    };
    s.write_all(&wire.text_request(login.as_bytes()))?;
    let answer = read_frame(&mut s, wire, &mut Frames::default())?;
    ensure!(answer.starts_with("ok"), "login as {id}: {answer}");
    Ok((s, answer))
}

/// Reads one whole frame from a blocking socket, as text.
pub fn read_frame(s: &mut TcpStream, wire: Wire, frames: &mut Frames) -> anyhow::Result<String> {
    loop {
        if let Some(p) = frames.next(wire) {
            let text = String::from_utf8_lossy(p).into_owned();
            frames.compact();
            return Ok(text);
        }
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        frames.extend(&buf[..n]);
    }
}

/// One connection of an epoll-driven workload.
struct Conn {
    stream: MioStream,
    frames: Frames,
    /// Bytes waiting to be written, and how much of them is.
    out: Vec<u8>,
    written: usize,
    /// Frames received.
    received: u64,
    /// The last number received and those not yet acknowledged.
    last: u64,
    unacked: u64,
    /// An acknowledgement is sent every this many.
    ack_every: u64,
}

impl Conn {
    fn new(stream: MioStream, ack_every: u64) -> Conn {
        Conn {
            stream,
            frames: Frames::default(),
            out: Vec::new(),
            written: 0,
            received: 0,
            last: 0,
            unacked: 0,
            ack_every: ack_every.max(1),
        }
    }

    /// Writes what waits, as far as the socket takes it.
    fn flush(&mut self) -> anyhow::Result<()> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(())
    }

    /// Reads what arrived; returns the frames completed, calling `each` with each payload.
    fn read(&mut self, wire: Wire, mut each: impl FnMut(&[u8])) -> anyhow::Result<u64> {
        let mut buf = [0u8; 65536];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => bail!("the server closed a connection"),
                Ok(n) => self.frames.extend(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        let mut n = 0;
        while let Some(p) = self.frames.next(wire) {
            each(p);
            n += 1;
        }
        self.frames.compact();
        Ok(n)
    }

    /// Counts a numbered frame; queues an acknowledgement every `ack_every`.
    fn numbered(&mut self, wire: Wire, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.last = seq;
            self.unacked += 1;
            if self.unacked >= self.ack_every {
                self.out
                    .extend_from_slice(&wire.text_request(format!("/ack {seq}").as_bytes()));
                self.unacked = 0;
            }
        }
    }
}

/// Logs `n` clients in (ids `<prefix><i>`), with sessions if `session`, and hands them to an
/// epoll loop (tokens 0 to n - 1).
fn connect_all(
    addr: &str,
    wire: Wire,
    prefix: &str,
    (n, session): (usize, bool),
    poll: &Poll,
    ack_every: u64,
) -> anyhow::Result<Vec<Conn>> {
    (0..n)
        .map(|i| {
            let (s, _) = login(addr, wire, &format!("{prefix}{i}"), session)?;
            Ok(Conn::new(wire::register(s, poll, i)?, ack_every))
        })
        .collect()
}

/// How a rate is measured: warm-up, then the time counted; and how often a session's client
/// acknowledges.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Run before counting.
    pub warmup: Duration,
    /// Counted.
    pub duration: Duration,
    /// An acknowledgement every this many messages (sessions only).
    pub ack_every: u64,
}

/// Counts what arrives after a warm-up, for a set time: the rate of one workload.
struct Meter {
    warm_until: Instant,
    duration: Duration,
    /// When counting began (the warm-up over), and what was counted since.
    from: Option<Instant>,
    count: u64,
}

impl Meter {
    fn new(pace: &Pace) -> Meter {
        Meter {
            warm_until: Instant::now() + pace.warmup,
            duration: pace.duration,
            from: None,
            count: 0,
        }
    }

    /// Counts `n` more (ignored during the warm-up).
    fn add(&mut self, n: u64) {
        self.count += n;
    }

    /// The rate per second once the time counted is over; begins counting after the warm-up.
    fn done(&mut self) -> Option<f64> {
        let now = Instant::now();
        match self.from {
            None if now >= self.warm_until => {
                self.from = Some(now);
                self.count = 0;
                None
            }
            Some(from) if now >= from + self.duration => {
                Some(self.count as f64 / now.duration_since(from).as_secs_f64())
            }
            _ => None,
        }
    }
}

/// `conns` connections each echoing `size` bytes, one message in flight: echoes per second.
/// With `session`, every reply is numbered and acknowledged every `pace.ack_every`.
pub fn echo(
    addr: &str,
    wire: Wire,
    conns: usize,
    size: usize,
    session: bool,
    pace: Pace,
) -> anyhow::Result<f64> {
    let mut poll = Poll::new()?;
    let mut all = connect_all(addr, wire, "echo-", (conns, session), &poll, pace.ack_every)?;
    let request = wire.request(&vec![b'x'; size]);
    for c in &mut all {
        c.out.extend_from_slice(&request);
        c.flush()?;
    }
    let mut events = Events::with_capacity(1024);
    let mut meter = Meter::new(&pace);
    loop {
        if let Some(rate) = meter.done() {
            return Ok(rate);
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            let c = &mut all[ev.token().0];
            if ev.is_readable() {
                let mut seqs = Vec::new();
                let n = c.read(wire, |p| seqs.push(if session { seq_of(p) } else { None }))?;
                for seq in seqs {
                    c.numbered(wire, seq);
                    c.out.extend_from_slice(&request);
                }
                c.received += n;
                meter.add(n);
            }
            c.flush()?;
        }
    }
}

/// `subscribers` in room `r` (with sessions if `session`) and one publisher keeping `window`
/// messages of `size` bytes in flight (paced by its own copies): deliveries to the
/// subscribers per second.
pub fn fanout(
    addr: &str,
    wire: Wire,
    subscribers: usize,
    size: usize,
    window: usize,
    session: bool,
    pace: Pace,
) -> anyhow::Result<f64> {
    let ack_every = pace.ack_every;
    let mut poll = Poll::new()?;
    // Everyone joins the room first, over the blocking sockets.
    let mut subs = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let (mut s, _) = login(addr, wire, &format!("sub-{i}"), session)?;
        s.write_all(&wire.text_request(b"/join r"))?;
        let joined = read_frame(&mut s, wire, &mut Frames::default())?;
        ensure!(joined.ends_with("joined r"), "join: {joined}");
        let mut c = Conn::new(wire::register(s, &poll, i + 1)?, ack_every);
        c.numbered(wire, seq_of(joined.as_bytes()).filter(|_| session));
        subs.push(c);
    }
    let (mut p, _) = login(addr, wire, "publisher", false)?;
    p.write_all(&wire.text_request(b"/join r"))?;
    ensure!(read_frame(&mut p, wire, &mut Frames::default())? == "joined r");
    let mut publisher = Conn::new(wire::register(p, &poll, 0)?, ack_every);
    let mut message = b"#r ".to_vec();
    message.extend(std::iter::repeat_n(b'x', size));
    let request = wire.text_request(&message);
    let (mut sent, mut echoed) = (0u64, 0u64);
    let mut events = Events::with_capacity(4096);
    let mut meter = Meter::new(&pace);
    loop {
        while sent < echoed + window as u64 {
            publisher.out.extend_from_slice(&request);
            sent += 1;
        }
        publisher.flush()?;
        if let Some(rate) = meter.done() {
            return Ok(rate);
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            let t = ev.token().0;
            if t == 0 {
                if ev.is_readable() {
                    echoed += publisher.read(wire, |_| {})?;
                }
                continue;
            }
            let c = &mut subs[t - 1];
            if ev.is_readable() {
                let mut seqs = Vec::new();
                let n = c.read(wire, |p| seqs.push(if session { seq_of(p) } else { None }))?;
                for seq in seqs {
                    c.numbered(wire, seq);
                }
                meter.add(n);
            }
            c.flush()?;
        }
    }
}

/// What a replay measured.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ReplayResult {
    /// Replayed messages per second, over all clients: from the first resume's connect to the
    /// last message of the last.
    pub msgs_per_sec: f64,
    /// A resume's time from its connect to its last replayed message, in milliseconds.
    pub p50_ms: f64,
    /// The same, 99th percentile.
    pub p99_ms: f64,
}

/// `clients` sessions join room `r` and are suspended; `messages` are published to the room
/// and held by every one of them; then all resume at once (their connections driven by one
/// epoll thread), each reading its `messages` replayed.
pub fn replay(
    addr: &str,
    wire: Wire,
    clients: usize,
    messages: usize,
) -> anyhow::Result<ReplayResult> {
    let mut tokens = Vec::with_capacity(clients);
    for i in 0..clients {
        let (mut s, answer) = login(addr, wire, &format!("replay-{i}"), true)?;
        s.write_all(&wire.text_request(b"/join r"))?;
        let joined = read_frame(&mut s, wire, &mut Frames::default())?;
        ensure!(joined == "1 joined r", "join: {joined}");
        tokens.push(answer["ok ".len()..].to_string());
        // Gone without a close: suspended.
        drop(s);
    }
    let (mut p, _) = login(addr, wire, "replay-publisher", false)?;
    p.write_all(&wire.text_request(b"/join r"))?;
    ensure!(read_frame(&mut p, wire, &mut Frames::default())? == "joined r");
    let mut frames = Frames::default();
    for i in 0..messages {
        p.write_all(&wire.text_request(format!("#r message {i}").as_bytes()))?;
        // Paced by its own copies, so every session holds every message.
        let copy = read_frame(&mut p, wire, &mut frames)?;
        ensure!(copy.ends_with(&format!("message {i}")), "copy: {copy}");
    }
    // Connect everyone first, then send every resume at once.
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(clients);
    for (i, token) in tokens.iter().enumerate() {
        let s = wire::connect(addr, wire)?;
        let mut c = Conn::new(wire::register(s, &poll, i)?, ACK_EVERY);
        let resume = format!("replay-{i} resume {token} 1");
        c.out
            .extend_from_slice(&wire.text_request(resume.as_bytes()));
        conns.push(c);
    }
    let started = Instant::now();
    for c in &mut conns {
        c.flush()?;
    }
    let mut done: Vec<Option<Duration>> = vec![None; clients];
    let mut finished = 0;
    let mut events = Events::with_capacity(4096);
    let deadline = started + Duration::from_secs(120);
    while finished < clients {
        ensure!(
            Instant::now() < deadline,
            "replays stalled: {finished} of {clients}"
        );
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if ev.is_readable() {
                let mut first = None;
                let mut bad = None;
                let n = c.read(wire, |p| {
                    if p.starts_with(b"resumed ") || p.starts_with(b"new ") {
                        first = Some(String::from_utf8_lossy(p).into_owned());
                    } else if seq_of(p).is_none() {
                        bad = Some(String::from_utf8_lossy(p).into_owned());
                    }
                })?;
                c.received += n;
                if let Some(answer) = first {
                    ensure!(
                        answer.ends_with(&format!(" {messages}")),
                        "resume of replay-{i}: {answer}"
                    );
                }
                if let Some(bad) = bad {
                    bail!("not a numbered frame: {bad}");
                }
                // The answer, then the messages.
                if c.received == messages as u64 + 1 && done[i].is_none() {
                    done[i] = Some(started.elapsed());
                    finished += 1;
                }
            }
            c.flush()?;
        }
    }
    let total = started.elapsed();
    let mut ms: Vec<f64> = done
        .iter()
        .map(|d| d.unwrap_or_default().as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    Ok(ReplayResult {
        msgs_per_sec: (clients * messages) as f64 / total.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// `members` sessions join room `r` and are suspended: returns them joined, for
/// [`publish_held`]. Their tokens are not kept: nobody resumes.
pub fn suspend_members(addr: &str, wire: Wire, members: usize) -> anyhow::Result<()> {
    for i in 0..members {
        let (mut s, _) = login(addr, wire, &format!("member-{i}"), true)?;
        s.write_all(&wire.text_request(b"/join r"))?;
        let joined = read_frame(&mut s, wire, &mut Frames::default())?;
        ensure!(joined == "1 joined r", "join: {joined}");
    }
    Ok(())
}

/// Publishes `messages` of `size` bytes to room `r`, each once every member holds the one
/// before (the publisher's own copy comes back after the members' are queued).
pub fn publish_held(addr: &str, wire: Wire, messages: usize, size: usize) -> anyhow::Result<()> {
    let (mut p, _) = login(addr, wire, "held-publisher", false)?;
    p.write_all(&wire.text_request(b"/join r"))?;
    let mut frames = Frames::default();
    ensure!(read_frame(&mut p, wire, &mut frames)? == "joined r");
    let text = "y".repeat(size);
    for _ in 0..messages {
        p.write_all(&wire.text_request(format!("#r {text}").as_bytes()))
            .context("publishing")?;
        read_frame(&mut p, wire, &mut frames)?;
    }
    Ok(())
}
