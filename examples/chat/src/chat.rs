//! The chat on kim's traits: the login (a user the upgrade hook found in a valid token), the
//! messages (rooms, direct messages, lists) and the state changes (presence, the rooms of the
//! user's last visit, messages kept while they were away).
//!
//! Rooms live in two places: the database says who is a member (it outlives connections and
//! is shared by a cluster's nodes), and each online member's channel is in the matching kim
//! room, so that a message is encoded once and reaches every member on every node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use kim_core::{
    Accepted, Acceptor, Channel, Frame, LoginConn, MessageListener, Meta, OpCode, PushError,
    Reject, SessionLogin, StateListener,
};
use serde_json::json;

use crate::protocol::{self, Command, Refused};
use crate::store::{Kept, Message, Store};

/// The room every page lists, so that a new user has somewhere to go.
pub const LOBBY: &str = "general";
/// The kim room every online channel is in, for presence notices.
const PRESENCE: &str = "presence";

/// The kim room of a chat room.
fn kim_room(room: &str) -> String {
    format!("room:{room}")
}

/// The user a valid token named, put in the handshake's extensions by the upgrade hook.
#[derive(Debug, Clone)]
pub struct User(pub String);

/// The chat: its database, this node's name, and how much history a join shows.
#[derive(Debug, Clone)]
pub struct Chat {
    store: Store,
    node: String,
    history: usize,
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sends `value` to the agent's own client.
fn send(agent: &Channel, value: serde_json::Value) {
    let _ = agent.push_frame(Frame::text(value.to_string()));
}

fn refuse(agent: &Channel, refused: Refused) {
    let _ = agent.push_frame(Frame::text(refused.to_json()));
}

fn internal(agent: &Channel, e: anyhow::Error) {
    tracing::error!(user = %agent.id(), error = %e, "database error");
    refuse(
        agent,
        Refused::new("internal", "the server could not do that; try again"),
    );
}

impl Chat {
    /// The chat on `store`, as node `node`, showing `history` messages on join.
    pub fn new(store: Store, node: impl Into<String>, history: usize) -> Chat {
        Chat {
            store,
            node: node.into(),
            history,
        }
    }

    async fn joined(&self, room: &str) -> anyhow::Result<serde_json::Value> {
        let members = self.store.members(room).await?;
        let history: Vec<Message> = self.store.history(room, self.history).await?;
        Ok(json!({"type": "joined", "room": room, "members": members, "history": history}))
    }

    async fn run(&self, agent: &Channel, command: Command) -> Result<(), Refused> {
        let user = agent.id().as_str();
        let db = |e: anyhow::Error| {
            tracing::error!(%user, error = %e, "database error");
            Refused::new("internal", "the server could not do that; try again")
        };
        match command {
            Command::Join { room } => {
                if !self.store.join(&room, user).await.map_err(db)? {
                    return Err(Refused::new(
                        "too_many_rooms",
                        format!("at most {} rooms", crate::store::MAX_ROOMS_PER_USER),
                    ));
                }
                let joined = self.joined(&room).await.map_err(db)?;
                // The others hear of it before the sender's answer goes: once the sender has
                // it, whoever joins next is not told of this join (in process mode too, where
                // both go to the master in this order).
                let notice =
                    json!({"type": "member", "room": room, "user": user, "event": "joined"});
                let _ = agent.publish_others(&kim_room(&room), Frame::text(notice.to_string()));
                let _ = agent.join(&kim_room(&room));
                send(agent, joined);
            }
            Command::Leave { room } => {
                let was = self.store.leave(&room, user).await.map_err(db)?;
                let _ = agent.leave(&kim_room(&room));
                send(agent, json!({"type": "left", "room": room}));
                if was {
                    let notice =
                        json!({"type": "member", "room": room, "user": user, "event": "left"});
                    let _ = agent.publish(&kim_room(&room), Frame::text(notice.to_string()));
                }
            }
            Command::Say { room, text } => {
                if !agent.in_room(&kim_room(&room)).await.unwrap_or(false) {
                    return Err(Refused::new(
                        "not_member",
                        format!("join {room} before saying anything there"),
                    ));
                }
                let message = self.store.save(&room, user, &text, now_ms()).await;
                let mut value = serde_json::to_value(message.map_err(db)?).unwrap_or_default();
                value["type"] = json!("message");
                let _ = agent.publish(&kim_room(&room), Frame::text(value.to_string()));
            }
            Command::Dm { to, text } => self.direct(agent, &to, &text).await?,
            Command::Members { room } => {
                let members = self.store.members(&room).await.map_err(db)?;
                send(
                    agent,
                    json!({"type": "members", "room": room, "members": members}),
                );
            }
            Command::Rooms => {
                let rooms = self.store.rooms(LOBBY).await.map_err(db)?;
                send(agent, json!({"type": "rooms", "rooms": rooms}));
            }
            Command::Online => {
                let users = self.store.online().await.map_err(db)?;
                send(agent, json!({"type": "online", "users": users}));
            }
        }
        Ok(())
    }

    /// A direct message: pushed to `to` on whichever node holds them, or kept for their next
    /// login; the sender gets a copy that says which.
    async fn direct(&self, agent: &Channel, to: &str, text: &str) -> Result<(), Refused> {
        let from = agent.id().as_str();
        let ts = now_ms();
        let dm = |stored: bool| {
            let v = json!({"type": "dm", "from": from, "to": to, "text": text, "ts": ts, "stored": stored});
            Frame::text(v.to_string())
        };
        let stored = match agent.server().push_to(to, dm(false)).await {
            Ok(()) => false,
            Err(PushError::NotFound(_) | PushError::Closed) => {
                match self.store.keep(to, from, text, ts).await {
                    Ok(Kept::Yes) => true,
                    Ok(Kept::NoSuchUser) => {
                        return Err(Refused::new(
                            "bad_user",
                            format!("nobody named {to} has ever logged in"),
                        ))
                    }
                    Ok(Kept::Full) => {
                        return Err(Refused::new(
                            "mailbox_full",
                            format!("{to} has too many messages waiting"),
                        ))
                    }
                    Err(e) => {
                        internal(agent, e);
                        return Ok(());
                    }
                }
            }
            Err(e) => {
                return Err(Refused::new(
                    "unavailable",
                    format!("{to} cannot be reached now: {e}"),
                ))
            }
        };
        if to != from || stored {
            let _ = agent.push_frame(dm(stored));
        }
        Ok(())
    }

    /// What a new channel is told: who is online, the rooms (with their history) it is a
    /// member of, and the direct messages kept for it.
    async fn welcome(&self, agent: &Channel) -> anyhow::Result<()> {
        let user = agent.id().as_str();
        let online = self.store.online().await?;
        let rooms = self.store.rooms(LOBBY).await?;
        let compressed = agent.meta().get("compressed") == Some("yes");
        let member_of = self.store.rooms_of(user).await?;
        send(
            agent,
            json!({"type": "welcome", "user": user, "online": online, "rooms": rooms,
                   "member_of": member_of, "compressed": compressed}),
        );
        for room in member_of {
            let _ = agent.join(&kim_room(&room));
            send(agent, self.joined(&room).await?);
        }
        for w in self.store.take_waiting(user).await? {
            let v = json!({"type": "dm", "from": w.from, "to": user, "text": w.text, "ts": w.ts, "stored": true});
            if agent.push_frame(Frame::text(v.to_string())).is_err() {
                // Kept again for the next login rather than lost.
                self.store.keep(user, &w.from, &w.text, w.ts).await?;
            }
        }
        Ok(())
    }
}

/// Logs in the user the token named: no frame is read, the upgrade already proved who it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatLogin;

/// A process-wide counter, so that a user's logins can be told apart (see `session`).
static SESSIONS: AtomicU64 = AtomicU64::new(0);

impl Acceptor for ChatLogin {
    async fn accept(&self, login: &mut LoginConn<'_>) -> Result<Accepted, Reject> {
        let handshake = login.handshake();
        let Some(User(user)) = handshake.and_then(|h| h.extensions.get::<User>()).cloned() else {
            return Err(Reject::with_status(401, "log in with /ws?token=..."));
        };
        let compressed =
            handshake.is_some_and(|h| h.extensions.get::<kim_ws::PerMessageDeflate>().is_some());
        let mut meta = Meta::new();
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        meta.insert("session", format!("{}:{n}", std::process::id()));
        meta.insert("compressed", if compressed { "yes" } else { "no" });
        let accepted = Accepted::new(user).with_meta(meta);
        // PROTOCOL.md's session forms in the URL (`session=1`, `resume=...&last=...`): the
        // page's client keeps a session, so a lost connection loses no message.
        Ok(match handshake.and_then(SessionLogin::from_query) {
            Some(session) => accepted.with_session(session),
            None => accepted,
        })
    }
}

impl MessageListener for Chat {
    async fn receive(&self, agent: &Channel, message: Frame) {
        let command = match message.op {
            OpCode::Text => protocol::parse(&message.payload),
            _ => Err(Refused::new("binary", "messages are JSON in text frames")),
        };
        let done = match command {
            Ok(command) => self.run(agent, command).await,
            Err(refused) => Err(refused),
        };
        if let Err(refused) = done {
            refuse(agent, refused);
        }
    }
}

impl StateListener for Chat {
    async fn login(&self, agent: &Channel) {
        let user = agent.id().as_str();
        let session = agent.meta().get("session").unwrap_or_default();
        let session = format!("{}/{session}", self.node);
        let _ = agent.join(PRESENCE);
        match self.store.set_online(user, &self.node, &session).await {
            Ok(true) => {
                let v = json!({"type": "presence", "user": user, "online": true});
                let _ = agent.publish_others(PRESENCE, Frame::text(v.to_string()));
            }
            Ok(false) => {}
            Err(e) => return internal(agent, e),
        }
        if let Err(e) = self.welcome(agent).await {
            internal(agent, e);
        }
        tracing::info!(%user, "logged in");
    }

    async fn disconnect(&self, agent: &Channel) {
        let user = agent.id().as_str();
        let session = agent.meta().get("session").unwrap_or_default();
        let session = format!("{}/{session}", self.node);
        match self.store.set_offline(user, &session).await {
            Ok(true) => {
                let v = json!({"type": "presence", "user": user, "online": false});
                let _ = agent.server().publish(PRESENCE, Frame::text(v.to_string()));
            }
            Ok(false) => {}
            Err(e) => tracing::error!(%user, error = %e, "database error"),
        }
        tracing::info!(%user, "gone");
    }
}
