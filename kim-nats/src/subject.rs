//! The subjects and keys kim uses in NATS, and the encoding that lets any id or room name be
//! one subject token or one key.
//!
//! Under the prefix `kim.<cluster>`:
//!
//! | subject | who subscribes | what it carries |
//! |---|---|---|
//! | `n.<node>.<id>.<kind>` | node `<node>` (`n.<node>.*.*`) | requests about user `<id>`, held there: `t`/`b` push a text or binary frame, `o` asks whether the id is held, `k` kicks it, `w` asks where it is |
//! | `r.<room>.<kind>` | nodes with members in `<room>` (`r.<room>.*`) | publishes, `t` or `b` |
//! | `size` | every node | a room's name; each node answers its member count |
//! | `hb` | every node | each node's name, every heartbeat |
//!
//! The opcode travels in the subject, so a payload crosses the broker as it is, with no
//! header and no copy to add one.
//!
//! Ids and room names made only of ASCII letters, digits, `-` and `_` are used as they are;
//! any other is `=` followed by the hex of its bytes (`=` never starts a plain one, so the
//! two cannot collide). Both forms are valid subject tokens and key-value keys.

use std::fmt::Write;

/// Encodes an id or room name as one subject token.
pub(crate) fn encode(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        return name.to_string();
    }
    let mut out = String::with_capacity(1 + 2 * name.len());
    out.push('=');
    for b in name.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Decodes a token made by [`encode`]; `None` for one it could not have made.
pub(crate) fn decode(token: &str) -> Option<String> {
    let Some(hex) = token.strip_prefix('=') else {
        return Some(token.to_string());
    };
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// What a request about a user asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserKind {
    /// Push a text frame.
    Text,
    /// Push a binary frame.
    Binary,
    /// Is the id held? (A claim asks the current owner.)
    Owns,
    /// Close the channel: a newer login takes the id.
    Kick,
    /// Which node holds the id?
    Where,
}

impl UserKind {
    fn token(self) -> &'static str {
        match self {
            UserKind::Text => "t",
            UserKind::Binary => "b",
            UserKind::Owns => "o",
            UserKind::Kick => "k",
            UserKind::Where => "w",
        }
    }

    fn from_token(t: &str) -> Option<UserKind> {
        Some(match t {
            "t" => UserKind::Text,
            "b" => UserKind::Binary,
            "o" => UserKind::Owns,
            "k" => UserKind::Kick,
            "w" => UserKind::Where,
            _ => return None,
        })
    }
}

/// The subjects of one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    pub(crate) fn new(cluster: &str) -> Subjects {
        Subjects {
            prefix: format!("kim.{cluster}"),
        }
    }

    /// What node `node` subscribes to, once: the requests about every user it holds.
    pub(crate) fn node_all(&self, node: &str) -> String {
        format!("{}.n.{}.*.*", self.prefix, encode(node))
    }

    /// Where a request of `kind` about `id`, held by `node`, goes.
    pub(crate) fn user(&self, node: &str, id: &str, kind: UserKind) -> String {
        format!(
            "{}.n.{}.{}.{}",
            self.prefix,
            encode(node),
            encode(id),
            kind.token()
        )
    }

    /// The id and kind of a request that came on a node's subject.
    pub(crate) fn parse_user(&self, subject: &str) -> Option<(String, UserKind)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".n.")?;
        let mut tokens = rest.split('.');
        let (_node, id, kind) = (tokens.next()?, tokens.next()?, tokens.next()?);
        if tokens.next().is_some() {
            return None;
        }
        Some((decode(id)?, UserKind::from_token(kind)?))
    }

    /// What a node with members in `room` subscribes to.
    pub(crate) fn room_all(&self, room: &str) -> String {
        format!("{}.r.{}.*", self.prefix, encode(room))
    }

    /// Where a publish to `room` goes: `t` for text, `b` for binary.
    pub(crate) fn room(&self, room: &str, text: bool) -> String {
        let kind = if text { "t" } else { "b" };
        format!("{}.r.{}.{kind}", self.prefix, encode(room))
    }

    /// Whether a publish that came on a room's subject is text.
    pub(crate) fn room_is_text(subject: &str) -> bool {
        subject.ends_with(".t")
    }

    /// Where room sizes are asked.
    pub(crate) fn size(&self) -> String {
        format!("{}.size", self.prefix)
    }

    /// Where nodes say they are alive.
    pub(crate) fn heartbeat(&self) -> String {
        format!("{}.hb", self.prefix)
    }
}

/// The key-value key of a user id.
pub(crate) fn user_key(id: &str) -> String {
    encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_and_others_round_trip_as_hex() {
        assert_eq!(encode("alice_2-b"), "alice_2-b");
        for name in ["a.b", "*", ">", "", "x y", "=", "ünï", "a=b"] {
            let token = encode(name);
            assert!(token.starts_with('='), "{name:?} -> {token}");
            assert!(!token.contains(['.', '*', '>', ' ']));
            assert_eq!(decode(&token).as_deref(), Some(name));
        }
        assert_eq!(decode("=4"), None);
        assert_eq!(decode("=zz"), None);
        assert_eq!(decode("=ff"), None, "not UTF-8");
    }

    #[test]
    fn user_subjects_parse_back() {
        let s = Subjects::new("c1");
        let subject = s.user("n 1", "bob.smith", UserKind::Kick);
        assert_eq!(subject, "kim.c1.n.=6e2031.=626f622e736d697468.k");
        assert_eq!(
            s.parse_user(&subject),
            Some(("bob.smith".to_string(), UserKind::Kick))
        );
        assert_eq!(s.node_all("n1"), "kim.c1.n.n1.*.*");
        assert_eq!(s.parse_user("kim.c1.n.n1.bob.q"), None);
        assert_eq!(s.parse_user("kim.c1.n.n1.bob.t.x"), None);
        assert_eq!(s.parse_user("kim.c2.n.n1.bob.t"), None);
        assert!(Subjects::room_is_text(&s.room("r", true)));
        assert!(!Subjects::room_is_text(&s.room("r", false)));
    }
}
