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

use bytes::{BufMut, Bytes, BytesMut};

use crate::channel::{ChannelId, Meta};
use crate::frame::CloseReason;

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

/// Counters a worker reports to its master.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WorkerCounters {
    handled: u64,
    recv: wire::RecvStats,
    push_failed: u64,
    unknown_channel: u64,
    disconnects: u64,
}

/// Values in an encoded `WorkerCounters`.
const COUNTERS: usize = 10;

impl WorkerCounters {
    fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(COUNTERS * 8);
        for v in [
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
        ] {
            b.put_u64_le(v);
        }
        b.freeze()
    }

    fn decode(b: &[u8]) -> Option<WorkerCounters> {
        if b.len() != COUNTERS * 8 {
            return None;
        }
        let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Some(WorkerCounters {
            handled: v(0),
            recv: wire::RecvStats {
                messages: v(1),
                datagrams: v(2),
                orphan_chunks: v(3),
                expired: v(4),
                refused: v(5),
                malformed: v(6),
            },
            push_failed: v(7),
            unknown_channel: v(8),
            disconnects: v(9),
        })
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
    /// What the workers' receivers counted, summed over the workers' last reports (a
    /// respawned worker starts from zero).
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
        let c = WorkerCounters {
            handled: 5,
            push_failed: 2,
            disconnects: 7,
            ..Default::default()
        };
        assert_eq!(WorkerCounters::decode(&c.encode()), Some(c));
    }
}
