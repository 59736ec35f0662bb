//! Rooms in process mode: the master owns every room, and a worker's room operations travel
//! to it as control messages on the worker's link, in order with the worker's pushes. Joins,
//! leaves and publishes need no answer; questions (a channel's rooms, a room's size) are
//! numbered, answered by the master, and waited for a bounded time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::debug;

use crate::channel::courier::Courier;
use crate::channel::Channel;
use crate::error::PushError;
use crate::frame::{Frame, OpCode};
use crate::ipc::link::Link;
use crate::ipc::protocol::{Body, Control, Reader, Writer};
use crate::room::query::{Answer, Query};

/// How long a worker waits for the master's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A room's name: the body of `RoomJoin` and `RoomLeave`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomName(pub(crate) String);

impl Body for RoomName {
    fn write(&self, w: &mut Writer) {
        w.str(&self.0);
    }
    fn read(r: &mut Reader<'_>) -> Option<RoomName> {
        Some(RoomName(r.str()?.to_string()))
    }
}

/// The body of `RoomPublish`: the room's name, the opcode, then the payload to the end.
fn encode_publish(room: &str, frame: &Frame) -> Bytes {
    let mut w = Writer::default();
    w.str(room);
    w.0.put_u8(frame.op as u8);
    w.0.put_slice(&frame.payload);
    w.0.freeze()
}

/// The room and the frame in a `RoomPublish` body; the payload is a slice of `body`.
fn decode_publish(body: &Bytes) -> Option<(String, Frame)> {
    let mut r = Reader(body);
    let room = r.str()?.to_string();
    let op = OpCode::from_u8(*r.take(1)?.first()?)?;
    let payload = body.slice(body.len() - r.0.len()..);
    Some((room, Frame::new(op, payload)))
}

impl Body for Query {
    fn write(&self, w: &mut Writer) {
        let (kind, serial, name) = match self {
            Query::RoomsOf(s) => (0, *s, ""),
            Query::InRoom(s, n) => (1, *s, n.as_str()),
            Query::Size(n) => (2, 0, n.as_str()),
            Query::Members(n) => (3, 0, n.as_str()),
        };
        w.u16(kind);
        w.u64(serial);
        w.str(name);
    }
    fn read(r: &mut Reader<'_>) -> Option<Query> {
        let (kind, serial, name) = (r.u16()?, r.u64()?, r.str()?.to_string());
        Some(match kind {
            0 => Query::RoomsOf(serial),
            1 => Query::InRoom(serial, name),
            2 => Query::Size(name),
            3 => Query::Members(name),
            _ => return None,
        })
    }
}

impl Body for Answer {
    fn write(&self, w: &mut Writer) {
        match self {
            Answer::Count(n) => {
                w.u16(0);
                w.u64(*n);
            }
            Answer::Names(names) => {
                w.u16(1);
                w.u32(names.len() as u32);
                for n in names {
                    w.str(n);
                }
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Option<Answer> {
        Some(match r.u16()? {
            0 => Answer::Count(r.u64()?),
            1 => {
                let n = r.u32()?;
                let mut names = Vec::new();
                for _ in 0..n {
                    names.push(r.str()?.to_string());
                }
                Answer::Names(names)
            }
            _ => return None,
        })
    }
}

/// A worker's way to the master's rooms.
pub(crate) struct RoomClient {
    link: Arc<Link>,
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
}

impl RoomClient {
    pub(crate) fn new(link: Arc<Link>) -> RoomClient {
        RoomClient {
            link,
            next: AtomicU64::new(1),
            waiting: Mutex::default(),
        }
    }

    /// The master answered question `key`.
    pub(crate) fn answered(&self, key: u64, body: &[u8]) {
        let Some(answer) = Answer::decode(body) else {
            debug!(key, "ipc: malformed room answer");
            return;
        };
        if let Some(tx) = self.waiting.lock().remove(&key) {
            let _ = tx.send(answer);
        }
    }

    /// Sends a join of the channel with `serial` to room `room`.
    pub(crate) fn join(&self, serial: u64, room: &str) {
        let body = RoomName(room.to_string()).encode();
        self.link.enqueue(Control::RoomJoin.message(serial, body));
    }

    /// Sends a leave.
    pub(crate) fn leave(&self, serial: u64, room: &str) {
        let body = RoomName(room.to_string()).encode();
        self.link.enqueue(Control::RoomLeave.message(serial, body));
    }

    /// Sends a publish, to every member but `except`.
    pub(crate) fn publish(&self, room: &str, frame: Frame, except: Option<u64>) {
        let body = encode_publish(room, &frame);
        self.link
            .enqueue(Control::RoomPublish.message(except.unwrap_or(0), body));
    }

    /// Asks the master, waiting a bounded time.
    pub(crate) async fn query(&self, query: Query) -> Result<Answer, PushError> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(key, tx);
        self.link
            .enqueue(Control::RoomQuery.message(key, query.encode()));
        let answer = tokio::time::timeout(ANSWER_WAIT, rx).await;
        self.waiting.lock().remove(&key);
        match answer {
            Ok(Ok(a)) => Ok(a),
            _ => Err(PushError::NoAnswer),
        }
    }
}

/// The master carries out a worker's room message (`code`, with `key` and `body`) through
/// its own courier, as its own handlers' would be; `channel` finds a channel by serial;
/// answers go back on `link`.
pub(crate) fn on_room_message(
    courier: &Arc<dyn Courier>,
    link: &Arc<Link>,
    code: Control,
    key: u64,
    body: &Bytes,
    channel: impl Fn(u64) -> Option<Channel>,
) {
    let result = match code {
        Control::RoomJoin | Control::RoomLeave => {
            let (Some(chan), Some(RoomName(room))) = (channel(key), RoomName::decode(body)) else {
                return;
            };
            if code == Control::RoomJoin {
                courier.join(&chan, &room)
            } else {
                courier.leave(&chan, &room)
            }
        }
        Control::RoomPublish => match decode_publish(body) {
            Some((room, frame)) => courier
                .publish(&room, frame, (key != 0).then_some(key))
                .map(|_| ()),
            None => Err(PushError::BadRoomName),
        },
        Control::RoomQuery => {
            let (courier, link) = (courier.clone(), link.clone());
            let query = Query::decode(body);
            tokio::spawn(async move {
                let reply = match query {
                    Some(q) => courier.ask(q).await.unwrap_or(Answer::Names(Vec::new())),
                    None => Answer::Names(Vec::new()),
                };
                link.enqueue(Control::RoomAnswer.message(key, reply.encode()));
            });
            Ok(())
        }
        _ => Ok(()),
    };
    if let Err(e) = result {
        debug!(serial = key, error = %e, "ipc: a worker's room operation failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_bodies_round_trip_and_refuse_anything_else() {
        for q in [
            Query::RoomsOf(7),
            Query::InRoom(9, "r".into()),
            Query::Size("s".into()),
            Query::Members("m".into()),
        ] {
            assert_eq!(Query::decode(&q.encode()), Some(q));
        }
        for a in [
            Answer::Count(3),
            Answer::Names(vec!["a".into(), "é".into()]),
        ] {
            assert_eq!(Answer::decode(&a.encode()), Some(a));
        }
        assert_eq!(Answer::decode(&[9, 0]), None);
        let body = encode_publish("room", &Frame::binary(&b"\x00payload"[..]));
        let (room, frame) = decode_publish(&body).unwrap();
        assert_eq!(
            (room.as_str(), frame.op, &frame.payload[..]),
            ("room", OpCode::Binary, &b"\x00payload"[..])
        );
        assert!(decode_publish(&body.slice(..3)).is_none());
        let name = RoomName("x".into());
        assert_eq!(RoomName::decode(&name.encode()), Some(name));
    }
}
