//! The chat's messages: JSON objects in websocket text frames, each with a `type`. The schema,
//! client to server:
//!
//! | type | fields | answer |
//! |---|---|---|
//! | `join` | `room` | `joined` to the sender, `member` (`joined`) to the room |
//! | `leave` | `room` | `left` to the sender, `member` (`left`) to the room |
//! | `say` | `room`, `text` | `message` to every member, the sender included |
//! | `dm` | `to`, `text` | `dm` to both (`stored: true` when `to` was offline: kept for their next login, if they ever logged in) |
//! | `members` | `room` | `members` |
//! | `rooms` | | `rooms` |
//! | `online` | | `online` |
//!
//! Server to client:
//!
//! - `welcome`: `user`, `online` (names), `rooms` (every room with members, and the lobby),
//!   `member_of` (the user's rooms), `compressed` (whether permessage-deflate was
//!   negotiated); first after login, followed
//!   by a `joined` for each room the user is a member of and by the `dm`s kept while they
//!   were offline;
//! - `joined`: `room`, `members`, `history` (the last messages, oldest first);
//! - `left`: `room`;
//! - `message`: `id`, `room`, `from`, `text`, `ts` (milliseconds since the epoch);
//! - `member`: `room`, `user`, `event` (`joined` or `left`);
//! - `dm`: `from`, `to`, `text`, `ts`, `stored`;
//! - `presence`: `user`, `online` (true or false), to everyone when someone comes or goes;
//! - `members`: `room`, `members`; `rooms`: `rooms`; `online`: `users`;
//! - `error`: `code` and `message`. A bad message gets one and changes nothing else: the
//!   connection stays open. Codes: `bad_json`, `binary`, `unknown_type`, `bad_field`,
//!   `bad_room`, `bad_user`, `too_long`, `not_member`, `too_many_rooms`, `mailbox_full`,
//!   `unavailable`, `internal`.

use serde_json::{json, Value};

/// The longest text of a message, in characters.
pub const MAX_TEXT: usize = 2_000;
/// The longest room name, in bytes.
pub const MAX_ROOM: usize = 32;

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Become a member of a room.
    Join {
        /// The room.
        room: String,
    },
    /// Stop being a member.
    Leave {
        /// The room.
        room: String,
    },
    /// Say something in a room.
    Say {
        /// The room.
        room: String,
        /// What.
        text: String,
    },
    /// A direct message.
    Dm {
        /// To whom.
        to: String,
        /// What.
        text: String,
    },
    /// Who is in a room.
    Members {
        /// The room.
        room: String,
    },
    /// Which rooms there are.
    Rooms,
    /// Who is online.
    Online,
}

/// Why a request was not carried out: a code a program can match and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// One of the codes in the module docs.
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
}

impl Refused {
    /// A refusal with this code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            code,
            message: message.into(),
        }
    }

    /// The `error` message sent for it.
    pub fn to_json(&self) -> String {
        json!({"type": "error", "code": self.code, "message": self.message}).to_string()
    }
}

/// True for a room name: 1 to 32 of `A-Z a-z 0-9 _ -`, the rule of user names.
pub fn valid_room(room: &str) -> bool {
    room.len() <= MAX_ROOM && crate::token::valid_name(room)
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, Refused> {
    match v.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Refused::new(
            "bad_field",
            format!("`{name}` must be a string"),
        )),
        None => Err(Refused::new("bad_field", format!("`{name}` is missing"))),
    }
}

fn room(v: &Value) -> Result<String, Refused> {
    let room = field(v, "room")?;
    if !valid_room(room) {
        return Err(Refused::new(
            "bad_room",
            "room names are 1 to 32 letters, digits, '_' or '-'",
        ));
    }
    Ok(room.to_string())
}

fn text(v: &Value) -> Result<String, Refused> {
    let text = field(v, "text")?;
    if text.trim().is_empty() {
        return Err(Refused::new("bad_field", "`text` is empty"));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(Refused::new(
            "too_long",
            format!("`text` is longer than {MAX_TEXT} characters"),
        ));
    }
    Ok(text.to_string())
}

/// Reads a client's request from a text frame's payload.
pub fn parse(payload: &[u8]) -> Result<Command, Refused> {
    let v: Value = serde_json::from_slice(payload)
        .map_err(|e| Refused::new("bad_json", format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(Refused::new("bad_json", "a message must be a JSON object"));
    }
    let kind = field(&v, "type")?;
    Ok(match kind {
        "join" => Command::Join { room: room(&v)? },
        "leave" => Command::Leave { room: room(&v)? },
        "say" => Command::Say {
            room: room(&v)?,
            text: text(&v)?,
        },
        "dm" => {
            let to = field(&v, "to")?;
            if !crate::token::valid_name(to) {
                return Err(Refused::new(
                    "bad_user",
                    format!("no such user name: {to:?}"),
                ));
            }
            Command::Dm {
                to: to.to_string(),
                text: text(&v)?,
            }
        }
        "members" => Command::Members { room: room(&v)? },
        "rooms" => Command::Rooms,
        "online" => Command::Online,
        other => {
            return Err(Refused::new(
                "unknown_type",
                format!(
                "unknown type {other:?}: expected join, leave, say, dm, members, rooms or online"
            ),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse(br#"{"type":"say","room":"general","text":"hi"}"#),
            Ok(Command::Say {
                room: "general".into(),
                text: "hi".into()
            })
        );
        assert_eq!(parse(br#"{"type":"rooms","x":1}"#), Ok(Command::Rooms));
        let code = |p: &[u8]| parse(p).unwrap_err().code;
        assert_eq!(code(b"{"), "bad_json");
        assert_eq!(code(b"[1]"), "bad_json");
        assert_eq!(code(br#"{"room":"a"}"#), "bad_field");
        assert_eq!(code(br#"{"type":7}"#), "bad_field");
        assert_eq!(code(br#"{"type":"shout"}"#), "unknown_type");
        assert_eq!(code(br#"{"type":"join"}"#), "bad_field");
        assert_eq!(code(br#"{"type":"join","room":"a b"}"#), "bad_room");
        assert_eq!(
            code(br#"{"type":"say","room":"a","text":" "}"#),
            "bad_field"
        );
        let long = format!(
            r#"{{"type":"say","room":"a","text":"{}"}}"#,
            "x".repeat(2001)
        );
        assert_eq!(code(long.as_bytes()), "too_long");
        assert_eq!(code(br#"{"type":"dm","to":"a.b","text":"x"}"#), "bad_user");
    }
}
