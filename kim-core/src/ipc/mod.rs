//! Process mode: the app's [`MessageListener`](crate::MessageListener) and
//! [`StateListener`](crate::StateListener) run in worker processes fed over `AF_UNIX
//! SOCK_DGRAM` socketpairs, chosen with [`Backend::UnixDatagram`](crate::Backend).
//!
//! The master (the process that called [`DefaultServer::start`](crate::DefaultServer::start))
//! owns every client socket and runs the transports and the login. It starts the workers by
//! re-executing its own program (`fork` is unsafe under a multi-threaded runtime); each worker
//! inherits its end of a socketpair, and its `main`, building the same server, finds out in
//! `start` that it is a worker and runs the listener loop over that socket instead of
//! listening. The app's code is the same in both modes: in a worker, an [`Agent`](crate::Agent)
//! pushes over the socket to the master, which writes to the channel, and the channel
//! directory (ids, metadata) is mirrored so that pushing to a missing id still fails at once.
//!
//! - A worker that dies is respawned (with backoff) on the same socketpair: datagrams queued
//!   for it survive, and no client connection notices.
//! - A reload ([`ServerHandle::reload_workers`](crate::ServerHandle::reload_workers), or
//!   `SIGUSR1` to the master) replaces the workers one at a time while traffic flows; each old
//!   worker first handles everything already sent to it.
//! - Workers exit when the master stops, and also when it is killed: each holds the read end
//!   of a pipe whose write end only the master has.
//!
//! Messages travel as chunks of at most `ipc_max_size` bytes and are reassembled in place
//! ([`wire`]). The master's queue towards each worker is bounded: when a worker falls behind,
//! the channels routed to it stop reading, and TCP slows their clients down.

mod link;
mod master;
pub mod wire;
pub(crate) mod worker;

use std::sync::atomic::Ordering;

use bytes::{BufMut, Bytes, BytesMut};

use crate::channel::{Channel, ChannelId, Meta};
use crate::frame::CloseReason;
use crate::metrics::{HandlerHistogram, HANDLER_BUCKETS};

pub(crate) use master::Master;
pub(crate) use worker::{run_worker, WorkerEnv};

/// Socket buffers are raised towards this size (as far as the system allows).
const SOCKET_BUFFER: usize = 8 << 20;

/// Environment variables a master sets for its workers.
const ENV_FD: &str = "KIM_WORKER_FD";
const ENV_INDEX: &str = "KIM_WORKER_INDEX";
const ENV_LIFELINE: &str = "KIM_WORKER_LIFELINE";
const ENV_ADDR: &str = "KIM_WORKER_ADDR";

/// True in a worker process started by a kim master (before its server has started). An app
/// can use it to skip work that only the master should do; it need not: `start` handles it.
pub fn is_worker() -> bool {
    std::env::var_os(ENV_FD).is_some()
}

/// Control messages (`Kind::Control`, the code in `aux`).
mod control {
    /// Worker to master: started; send the channel directory.
    pub const READY: u8 = 1;
    /// Master to worker: the directory is complete.
    pub const SYNCED: u8 = 2;
    /// Master to worker: handle what is queued, then exit.
    pub const STOP: u8 = 3;
    /// Worker to master: counters (see `WorkerCounters`).
    pub const STATS: u8 = 4;
    /// Worker to master: shut the server down (payload: deadline in ms, u64).
    pub const SHUTDOWN: u8 = 5;
    /// Worker to master: a message of channel `key` was handled (payload: its cost, u64).
    pub const HANDLED: u8 = 6;
}

/// Counters a worker reports to its master, cumulative since the worker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WorkerCounters {
    /// The reporting process, so that reports of a worker that has been replaced still
    /// count once.
    pid: u32,
    handled: u64,
    recv: wire::RecvStats,
    push_failed: u64,
    unknown_channel: u64,
    disconnects: u64,
    /// Time in the message listener.
    handler: HandlerHistogram,
}

/// Values in an encoded `WorkerCounters`.
const COUNTERS: usize = 12 + HANDLER_BUCKETS;

impl WorkerCounters {
    fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(COUNTERS * 8);
        for v in [
            u64::from(self.pid),
            self.handled,
            self.recv.messages,
            self.recv.datagrams,
            self.recv.orphan_chunks,
            self.recv.expired,
            self.recv.refused,
            self.recv.malformed,
            self.push_failed,
            self.unknown_channel,
            self.disconnects,
            self.handler.sum_ns,
        ]
        .iter()
        .chain(self.handler.buckets.iter())
        {
            b.put_u64_le(*v);
        }
        b.freeze()
    }

    fn decode(b: &[u8]) -> Option<WorkerCounters> {
        if b.len() != COUNTERS * 8 {
            return None;
        }
        let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let mut handler = HandlerHistogram {
            sum_ns: v(11),
            ..HandlerHistogram::default()
        };
        for (k, slot) in handler.buckets.iter_mut().enumerate() {
            *slot = v(12 + k);
        }
        handler.count = handler.buckets.iter().sum();
        Some(WorkerCounters {
            pid: u32::try_from(v(0)).ok()?,
            handled: v(1),
            recv: wire::RecvStats {
                messages: v(2),
                datagrams: v(3),
                orphan_chunks: v(4),
                expired: v(5),
                refused: v(6),
                malformed: v(7),
            },
            push_failed: v(8),
            unknown_channel: v(9),
            disconnects: v(10),
            handler,
        })
    }

    fn add(&mut self, o: &WorkerCounters) {
        self.handled += o.handled;
        self.recv.add(&o.recv);
        self.push_failed += o.push_failed;
        self.unknown_channel += o.unknown_channel;
        self.disconnects += o.disconnects;
        self.handler.add(&o.handler);
    }
}

/// The reports of one worker slot over its successive processes: every process's last
/// report counts, so the sums only grow across respawns and reloads.
#[derive(Debug, Default)]
struct Reports {
    /// Processes replaced long ago, folded together.
    base: WorkerCounters,
    /// The last report of each of the most recent processes (the current one last).
    recent: Vec<WorkerCounters>,
}

/// Processes whose reports are kept apart (a late report of one of them still replaces its
/// previous one instead of adding to it).
const RECENT_REPORTS: usize = 4;

impl Reports {
    fn update(&mut self, c: WorkerCounters) {
        if let Some(e) = self.recent.iter_mut().find(|e| e.pid == c.pid) {
            *e = c;
            return;
        }
        self.recent.push(c);
        if self.recent.len() > RECENT_REPORTS {
            let old = self.recent.remove(0);
            self.base.add(&old);
        }
    }

    fn total(&self) -> WorkerCounters {
        let mut t = self.base;
        for r in &self.recent {
            t.add(r);
        }
        t
    }
}

/// What the process mode has done, as seen by the master.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpcStats {
    /// Worker processes configured.
    pub workers: usize,
    /// Workers started again after dying.
    pub respawns: u64,
    /// Workers replaced by reloads.
    pub reloads: u64,
    /// Messages sent to workers (client messages, channel events and control).
    pub messages_sent: u64,
    /// Datagrams sent to workers.
    pub datagrams_sent: u64,
    /// Client messages dispatched to workers.
    pub dispatched: u64,
    /// Of those, handled by a worker's listener (as last reported by the workers).
    pub handled: u64,
    /// Pushes received from workers.
    pub pushes: u64,
    /// Pushes from workers that the target channel refused (gone, closing, full).
    pub push_failed: u64,
    /// What the master's receivers counted (pushes from workers).
    pub master_recv: wire::RecvStats,
    /// What the workers' receivers counted, summed over the last report of every worker
    /// process (those replaced by respawns and reloads included).
    pub worker_recv: wire::RecvStats,
    /// Messages a worker dropped because their channel was unknown to it.
    pub unknown_channel: u64,
    /// Disconnect callbacks the workers ran.
    pub disconnects: u64,
}

/// What a message counts against its channel's `ipc_pending` while a worker has it: its
/// bytes plus a fixed share, so that empty messages count too.
fn ipc_cost(len: usize) -> usize {
    len + 64
}

/// A push from a worker, counted against its channel's `ipc_pending` until it has left the
/// worker (sent to the master, or dropped with a broken link). It is the worker's view of the
/// channel's outbox: a push fails when its own channel has too much on the way, whatever the
/// other channels push, as it does in-process.
#[derive(Debug)]
pub(crate) struct InTransit {
    chan: Channel,
    cost: usize,
}

impl InTransit {
    /// Counts `len` bytes against `chan`, unless it already has `limit` or more on the way.
    fn reserve(chan: &Channel, len: usize, limit: usize) -> Option<InTransit> {
        let cost = ipc_cost(len);
        let before = chan.inner.ipc_pending.fetch_add(cost, Ordering::AcqRel);
        if before >= limit {
            chan.inner.ipc_pending.fetch_sub(cost, Ordering::AcqRel);
            return None;
        }
        Some(InTransit {
            chan: chan.clone(),
            cost,
        })
    }
}

impl Drop for InTransit {
    fn drop(&mut self) {
        self.chan
            .inner
            .ipc_pending
            .fetch_sub(self.cost, Ordering::AcqRel);
    }
}

/// A channel's id and metadata, as carried by `Open` and `Disconnect`.
fn encode_channel(id: &ChannelId, meta: &Meta) -> Bytes {
    let mut b = BytesMut::new();
    let mut put = |s: &str| {
        b.put_u32_le(s.len() as u32);
        b.put_slice(s.as_bytes());
    };
    put(id.as_str());
    for (k, v) in meta.iter() {
        put(k);
        put(v);
    }
    b.freeze()
}

fn decode_channel(b: &[u8]) -> Option<(ChannelId, Meta)> {
    let mut rest = b;
    let mut take = || -> Option<Option<&str>> {
        if rest.is_empty() {
            return Some(None);
        }
        let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(rest.get(4..4 + n)?).ok()?;
        rest = &rest[4 + n..];
        Some(Some(s))
    };
    let id = ChannelId::new(take()??);
    let mut meta = Meta::new();
    while let Some(k) = take()? {
        let v = take()??;
        meta.insert(k, v);
    }
    Some((id, meta))
}

fn encode_close(reason: &CloseReason) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + reason.reason.len());
    b.put_u16(reason.code);
    b.put_slice(reason.reason.as_bytes());
    b.freeze()
}

fn decode_close(b: &[u8]) -> Option<CloseReason> {
    let code = u16::from_be_bytes(b.get(..2)?.try_into().ok()?);
    let reason = std::str::from_utf8(&b[2..]).ok()?;
    Some(CloseReason::new(code, reason.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_info_round_trips() {
        let meta = Meta::new().with("device", "ios").with("", "x");
        let b = encode_channel(&ChannelId::new("alice"), &meta);
        let (id, m) = decode_channel(&b).unwrap();
        assert_eq!(id.as_str(), "alice");
        assert_eq!(m, meta);
        assert!(decode_channel(&b[..b.len() - 1]).is_none());
        assert!(decode_channel(&[]).is_none());
        let r = CloseReason::new(4000, "bye");
        assert_eq!(decode_close(&encode_close(&r)), Some(r));
        let mut c = WorkerCounters {
            pid: 42,
            handled: 5,
            push_failed: 2,
            disconnects: 7,
            ..Default::default()
        };
        c.handler.buckets[3] = 4;
        c.handler.buckets[HANDLER_BUCKETS - 1] = 1;
        c.handler.count = 5;
        c.handler.sum_ns = 123;
        assert_eq!(WorkerCounters::decode(&c.encode()), Some(c));
        assert_eq!(WorkerCounters::decode(&c.encode()[8..]), None);
    }

    #[test]
    fn reports_of_replaced_workers_still_count() {
        let report = |pid, handled| WorkerCounters {
            pid,
            handled,
            ..Default::default()
        };
        let mut r = Reports::default();
        r.update(report(1, 10));
        r.update(report(1, 20));
        assert_eq!(r.total().handled, 20);
        // Respawned: the new process starts from zero, the old one's 20 still count.
        r.update(report(2, 5));
        assert_eq!(r.total().handled, 25);
        // A late report of the old process replaces its previous one.
        r.update(report(1, 21));
        assert_eq!(r.total().handled, 26);
        for pid in 3..10 {
            r.update(report(pid, 1));
        }
        assert_eq!(r.total().handled, 26 + 7);
        assert!(r.recent.len() <= RECENT_REPORTS);
    }
}
