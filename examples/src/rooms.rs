//! The mock protocol's rooms, and the echo server's broadcast mode.
//!
//! - `/join <room>`: the sender joins; the answer is `joined <room>`.
//! - `/leave <room>`: the sender leaves; the answer is `left <room>`.
//! - `#<room> <text>`: from a member, every member (the sender included) receives
//!   `<sender>#<room>: <text>`; from anyone else, the sender alone gets `not in <room>`.
//!
//! Room names are 1 to 64 bytes of UTF-8 without spaces; any other name gets `bad room`.
//! Answers and published messages have the opcode of the message that caused them.

use bytes::{BufMut, BytesMut};
use kim_core::room::check_room_name;
use kim_core::{Channel, Frame, MessageListener, PushError, StateListener};

/// A room command of the mock protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomCommand<'a> {
    /// `/join <room>`.
    Join(&'a [u8]),
    /// `/leave <room>`.
    Leave(&'a [u8]),
    /// `#<room> <text>`.
    Publish(&'a [u8], &'a [u8]),
}

/// The room command in `payload`, if it is one (`/join` and `/leave` alone count, with an
/// empty name: they get `bad room`).
pub fn parse_room_command(payload: &[u8]) -> Option<RoomCommand<'_>> {
    let arg = |cmd: &[u8]| -> Option<&[u8]> {
        let rest = payload.strip_prefix(cmd)?;
        match rest.first() {
            None => Some(rest),
            Some(b' ') => Some(&rest[1..]),
            Some(_) => None,
        }
    };
    if let Some(room) = arg(b"/join") {
        return Some(RoomCommand::Join(room));
    }
    if let Some(room) = arg(b"/leave") {
        return Some(RoomCommand::Leave(room));
    }
    let rest = payload.strip_prefix(b"#")?;
    Some(match rest.iter().position(|&b| b == b' ') {
        Some(space) => RoomCommand::Publish(&rest[..space], &rest[space + 1..]),
        None => RoomCommand::Publish(rest, b""),
    })
}

/// A valid room name, or `None`.
fn room_name(bytes: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(bytes).ok()?;
    check_room_name(name).ok().map(|()| name)
}

/// Carries out a room command for `agent`; `message` is the frame it came in (its opcode is
/// the answers').
pub async fn run_room_command(agent: &Channel, command: RoomCommand<'_>, message: &Frame) {
    let reply = |text: String| {
        let _ = agent.push_frame(Frame::new(message.op, text));
    };
    let raw = match &command {
        RoomCommand::Join(r) | RoomCommand::Leave(r) | RoomCommand::Publish(r, _) => *r,
    };
    let Some(room) = room_name(raw) else {
        reply("bad room".into());
        return;
    };
    match command {
        RoomCommand::Join(_) => match agent.join(room) {
            Ok(()) => reply(format!("joined {room}")),
            Err(PushError::TooManyRooms { max }) => reply(format!("too many rooms (max {max})")),
            Err(e) => tracing::debug!(id = %agent.id(), error = %e, "join failed"),
        },
        RoomCommand::Leave(_) => match agent.leave(room) {
            Ok(()) => reply(format!("left {room}")),
            Err(e) => tracing::debug!(id = %agent.id(), error = %e, "leave failed"),
        },
        RoomCommand::Publish(_, text) => {
            match agent.in_room(room).await {
                Ok(true) => {}
                Ok(false) => return reply(format!("not in {room}")),
                Err(e) => {
                    tracing::debug!(id = %agent.id(), error = %e, "membership unknown");
                    return;
                }
            }
            let sender = agent.id().as_str();
            let mut out = BytesMut::with_capacity(sender.len() + room.len() + 3 + text.len());
            out.put_slice(sender.as_bytes());
            out.put_u8(b'#');
            out.put_slice(room.as_bytes());
            out.put_slice(b": ");
            out.put_slice(text);
            if let Err(e) = agent.publish(room, Frame::new(message.op, out.freeze())) {
                tracing::debug!(id = %agent.id(), error = %e, "publish failed");
            }
        }
    }
}

/// The room every connection of `echo-server --broadcast` is in.
pub const BROADCAST_ROOM: &str = "all";

/// `echo-server --broadcast`: every message is published, with its opcode, to the room every
/// connection joined at login, the sender included (the shape of uWebSockets' broadcast
/// benchmark).
#[derive(Debug, Clone, Copy, Default)]
pub struct BroadcastListener;

impl MessageListener for BroadcastListener {
    async fn receive(&self, agent: &Channel, message: Frame) {
        if let Err(e) = agent.publish(BROADCAST_ROOM, message) {
            tracing::debug!(id = %agent.id(), error = %e, "publish failed");
        }
    }
}

/// Joins every channel to [`BROADCAST_ROOM`] at login.
#[derive(Debug, Clone, Copy, Default)]
pub struct JoinBroadcast;

impl StateListener for JoinBroadcast {
    async fn login(&self, agent: &Channel) {
        if let Err(e) = agent.join(BROADCAST_ROOM) {
            tracing::warn!(id = %agent.id(), error = %e, "cannot join the broadcast room");
        }
    }

    async fn disconnect(&self, _: &Channel) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_commands_parse() {
        use RoomCommand::*;
        assert_eq!(parse_room_command(b"/join a"), Some(Join(b"a")));
        assert_eq!(parse_room_command(b"/join"), Some(Join(b"")));
        assert_eq!(parse_room_command(b"/join a b"), Some(Join(b"a b")));
        assert_eq!(parse_room_command(b"/joinx"), None);
        assert_eq!(parse_room_command(b"/leave r"), Some(Leave(b"r")));
        assert_eq!(
            parse_room_command(b"#r hi there"),
            Some(Publish(b"r", b"hi there"))
        );
        assert_eq!(parse_room_command(b"#r"), Some(Publish(b"r", b"")));
        assert_eq!(parse_room_command(b"hello"), None);
        assert_eq!(room_name(b"a b"), None);
        assert_eq!(room_name(b""), None);
        assert_eq!(room_name(&[0xff]), None);
        assert_eq!(room_name("r".repeat(65).as_bytes()), None);
        assert_eq!(room_name(b"ok"), Some("ok"));
    }
}
