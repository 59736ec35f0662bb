//! What master and workers say to each other: the control messages and the bodies of the
//! messages that are not a client's payload.
//!
//! Every body is a sequence of named fields, written and read in the same order by one
//! [`Body`] implementation: integers little-endian, strings as a `u32` length and UTF-8 bytes.
//! A body that does not decode whole is refused (`None`), never guessed at.

use bytes::{BufMut, Bytes, BytesMut};

use crate::channel::id::{ChannelId, Meta};
use crate::close::CloseReason;
use crate::ipc::wire::{Kind, Outgoing, RecvStats};
use crate::metrics::hot::HandlerHistogram;

/// A control message (`Kind::Control`), its code in the header's `aux` byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Control {
    /// Worker to master: started; send the channel directory.
    Ready = 1,
    /// Master to worker: the directory is complete.
    Synced = 2,
    /// Master to worker: handle what is queued, then exit.
    Stop = 3,
    /// Worker to master: its counters ([`WorkerCounters`]).
    Stats = 4,
    // 5 is not used.
    /// Worker to master: a message of the channel in the header's key was handled
    /// ([`Handled`]).
    Handled = 6,
    /// Worker to master: the channel in the key joins a room (body: its name).
    RoomJoin = 7,
    /// Worker to master: the channel in the key leaves a room (body: its name).
    RoomLeave = 8,
    /// Worker to master: publish to a room, except to the channel in the key (0: none).
    RoomPublish = 9,
    /// Worker to master: a question about rooms; the key is the question's number.
    RoomQuery = 10,
    /// Master to worker: the answer to the question numbered in the key.
    RoomAnswer = 11,
}

impl Control {
    /// The control code `v`, if it is one.
    pub(crate) fn from_u8(v: u8) -> Option<Control> {
        Some(match v {
            1 => Control::Ready,
            2 => Control::Synced,
            3 => Control::Stop,
            4 => Control::Stats,
            6 => Control::Handled,
            7 => Control::RoomJoin,
            8 => Control::RoomLeave,
            9 => Control::RoomPublish,
            10 => Control::RoomQuery,
            11 => Control::RoomAnswer,
            _ => return None,
        })
    }

    /// This control message about channel `key` (0: none) with `body`.
    pub(crate) fn message(self, key: u64, body: Bytes) -> Outgoing {
        Outgoing::new(Kind::Control, key, self as u8, body)
    }
}

/// Writes a body's fields in order.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) BytesMut);

impl Writer {
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.put_u16_le(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.put_u32_le(v);
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.put_u64_le(v);
    }
    pub(crate) fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.put_slice(s.as_bytes());
    }
}

/// Reads a body's fields in order; every read is `None` past the end.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

/// A message body with named fields.
pub(crate) trait Body: Sized {
    /// Writes the fields in order.
    fn write(&self, w: &mut Writer);
    /// Reads the fields in the same order.
    fn read(r: &mut Reader<'_>) -> Option<Self>;

    /// The body's bytes.
    fn encode(&self) -> Bytes {
        let mut w = Writer::default();
        self.write(&mut w);
        w.0.freeze()
    }

    /// The body in `b`, which must hold it exactly.
    fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        let body = Self::read(&mut r)?;
        r.0.is_empty().then_some(body)
    }
}

/// A channel's id and metadata: the body of `Open` and `Disconnect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelInfo {
    pub(crate) id: ChannelId,
    pub(crate) meta: Meta,
}

impl Body for ChannelInfo {
    fn write(&self, w: &mut Writer) {
        w.str(self.id.as_str());
        w.u32(self.meta.len() as u32);
        for (k, v) in self.meta.iter() {
            w.str(k);
            w.str(v);
        }
    }

    fn read(r: &mut Reader<'_>) -> Option<ChannelInfo> {
        let id = ChannelId::new(r.str()?);
        let pairs = r.u32()?;
        let mut meta = Meta::new();
        for _ in 0..pairs {
            let k = r.str()?;
            meta.insert(k, r.str()?);
        }
        Some(ChannelInfo { id, meta })
    }
}

/// A worker closes a channel: the body of `Close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseBody {
    pub(crate) reason: CloseReason,
}

impl Body for CloseBody {
    fn write(&self, w: &mut Writer) {
        w.u16(self.reason.code);
        w.str(&self.reason.reason);
    }

    fn read(r: &mut Reader<'_>) -> Option<CloseBody> {
        let code = r.u16()?;
        let reason = CloseReason::new(code, r.str()?.to_string());
        Some(CloseBody { reason })
    }
}

/// A worker handled a message: what it counted against its channel's in-flight bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handled {
    pub(crate) cost: u64,
}

impl Body for Handled {
    fn write(&self, w: &mut Writer) {
        w.u64(self.cost);
    }

    fn read(r: &mut Reader<'_>) -> Option<Handled> {
        Some(Handled { cost: r.u64()? })
    }
}

/// `Open` and `Disconnect` (`aux`): this worker owns the channel (runs its login and
/// disconnect events).
pub(crate) const OPEN_OWNER: u8 = 1;
/// `Open` (`aux`): a new login, whose login event is to run (not a channel re-announced to a
/// restarted worker).
pub(crate) const OPEN_LOGIN: u8 = 2;
/// `Open` (`aux`, with [`OPEN_OWNER`], for a channel the worker knows): the channel's session
/// was suspended; its suspend event is to run.
pub(crate) const OPEN_SUSPEND: u8 = 4;
/// `Open` (`aux`, with [`OPEN_OWNER`], for a channel the worker knows): the channel's session
/// was resumed; its resume event is to run, and the channel reads nothing until then (as
/// after a login).
pub(crate) const OPEN_RESUME: u8 = 8;

/// What a new channel counts against its in-flight bytes until its owner worker has run its
/// login event (and acknowledged it with [`Handled`]): more than any pause threshold, so the
/// channel reads nothing before, as in-process.
pub(crate) const LOGIN_HOLD: u64 = 1 << 48;

/// What a message counts against its channel's in-flight bytes while a worker has it: its
/// bytes plus a fixed share, so that empty messages count too.
pub(crate) fn ipc_cost(len: usize) -> usize {
    len + 64
}

/// Counters a worker reports to its master, cumulative since the worker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WorkerCounters {
    /// The reporting process, so that reports of a worker that has been replaced still
    /// count once.
    pub(crate) pid: u32,
    pub(crate) handled: u64,
    pub(crate) recv: RecvStats,
    pub(crate) push_failed: u64,
    pub(crate) unknown_channel: u64,
    pub(crate) disconnects: u64,
    /// Time in the message listener.
    pub(crate) handler: HandlerHistogram,
}

impl WorkerCounters {
    pub(crate) fn add(&mut self, o: &WorkerCounters) {
        self.handled += o.handled;
        self.recv.add(&o.recv);
        self.push_failed += o.push_failed;
        self.unknown_channel += o.unknown_channel;
        self.disconnects += o.disconnects;
        self.handler.add(&o.handler);
    }
}

impl Body for WorkerCounters {
    fn write(&self, w: &mut Writer) {
        w.u32(self.pid);
        w.u64(self.handled);
        let recv = &self.recv;
        for v in [
            recv.messages,
            recv.datagrams,
            recv.orphan_chunks,
            recv.expired,
            recv.refused,
            recv.malformed,
        ] {
            w.u64(v);
        }
        w.u64(self.push_failed);
        w.u64(self.unknown_channel);
        w.u64(self.disconnects);
        w.u64(self.handler.sum_ns);
        for b in self.handler.buckets {
            w.u64(b);
        }
    }

    fn read(r: &mut Reader<'_>) -> Option<WorkerCounters> {
        let pid = r.u32()?;
        let handled = r.u64()?;
        let recv = RecvStats {
            messages: r.u64()?,
            datagrams: r.u64()?,
            orphan_chunks: r.u64()?,
            expired: r.u64()?,
            refused: r.u64()?,
            malformed: r.u64()?,
        };
        let push_failed = r.u64()?;
        let unknown_channel = r.u64()?;
        let disconnects = r.u64()?;
        let mut handler = HandlerHistogram {
            sum_ns: r.u64()?,
            ..HandlerHistogram::default()
        };
        for b in handler.buckets.iter_mut() {
            *b = r.u64()?;
        }
        handler.count = handler.buckets.iter().sum();
        Some(WorkerCounters {
            pid,
            handled,
            recv,
            push_failed,
            unknown_channel,
            disconnects,
            handler,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::hot::HANDLER_BUCKETS;

    #[test]
    fn bodies_round_trip_and_refuse_anything_else() {
        let info = ChannelInfo {
            id: ChannelId::new("alice"),
            meta: Meta::new().with("device", "ios").with("", "x"),
        };
        let b = info.encode();
        assert_eq!(ChannelInfo::decode(&b), Some(info));
        assert_eq!(ChannelInfo::decode(&b[..b.len() - 1]), None);
        assert_eq!(ChannelInfo::decode(&[b.as_ref(), &[0]].concat()), None);
        assert_eq!(ChannelInfo::decode(&[]), None);

        let close = CloseBody {
            reason: CloseReason::new(4000, "bye"),
        };
        assert_eq!(CloseBody::decode(&close.encode()), Some(close));
        let h = Handled { cost: 1 << 40 };
        assert_eq!(Handled::decode(&h.encode()), Some(h));

        let mut c = WorkerCounters {
            pid: 42,
            handled: 5,
            push_failed: 2,
            disconnects: 7,
            ..Default::default()
        };
        c.recv.expired = 9;
        c.handler.buckets[3] = 4;
        c.handler.buckets[HANDLER_BUCKETS - 1] = 1;
        c.handler.count = 5;
        c.handler.sum_ns = 123;
        assert_eq!(WorkerCounters::decode(&c.encode()), Some(c));
        assert_eq!(WorkerCounters::decode(&c.encode()[8..]), None);
    }

    #[test]
    fn control_codes_round_trip() {
        for v in 0..=255u8 {
            if let Some(c) = Control::from_u8(v) {
                assert_eq!(c as u8, v);
            }
        }
        assert_eq!(Control::from_u8(0), None);
        assert_eq!(Control::from_u8(12), None);
    }
}
