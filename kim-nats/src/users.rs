//! The users' subjects: this node answering for the users it holds (pushes, "do you hold it",
//! kicks, "where is it"), and asking other nodes about theirs.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Message, Request, RequestErrorKind, Subscriber};
use bytes::Bytes;
use futures_util::stream::{SelectAll, StreamExt};
use kim_core::cluster::ClusterError;
use kim_core::{ChannelId, Frame, OpCode, PushError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::claims::{ask, Asked};
use crate::metrics::Failure;
use crate::subject::UserKind;
use crate::{broker, Inner};

/// A new subscription to a user's subject, and what ends it.
pub(crate) struct UserSub {
    pub(crate) sub: Subscriber,
    pub(crate) stop: CancellationToken,
}

type UserStream = Pin<Box<dyn futures_util::Stream<Item = Message> + Send>>;

/// Answers the requests on every user subject this node subscribed to, in one task: the
/// subscriptions are polled together, and only those with a message are woken.
pub(crate) async fn answer(inner: Arc<Inner>, mut new: mpsc::UnboundedReceiver<UserSub>) {
    let mut all: SelectAll<UserStream> = SelectAll::new();
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            added = new.recv() => match added {
                Some(UserSub { sub, stop }) => {
                    all.push(Box::pin(sub.take_until(stop.cancelled_owned())));
                }
                None => return,
            },
            Some(message) = all.next(), if !all.is_empty() => respond(&inner, message).await,
        }
    }
}

/// Answers one request about a user held here.
async fn respond(inner: &Inner, message: Message) {
    let Some((id, kind)) = inner.subjects.parse_user(&message.subject) else {
        return;
    };
    let Some(local) = inner.local() else { return };
    let answer: Bytes = match kind {
        UserKind::Text | UserKind::Binary => {
            inner.metrics.pushes_received.inc();
            let op = if kind == UserKind::Text {
                OpCode::Text
            } else {
                OpCode::Binary
            };
            match local.push(&id, Frame::new(op, message.payload)) {
                Ok(()) => Bytes::from_static(b"+"),
                Err(PushError::Full) => Bytes::from_static(b"F"),
                Err(_) => Bytes::from_static(b"-"),
            }
        }
        UserKind::Owns | UserKind::Where => {
            if local.holds(&id) {
                Bytes::from(format!("+{}", inner.node))
            } else {
                Bytes::from_static(b"-")
            }
        }
        UserKind::Kick => {
            tracing::info!(%id, "kicked by a login on another node");
            local.kick(&id);
            Bytes::from_static(b"+")
        }
    };
    if let Some(reply) = message.reply {
        let sent = inner.client.publish(reply, answer);
        let _ = tokio::time::timeout(inner.timeout, sent).await;
    }
}

/// Pushes `frame` to `id` on the node holding it.
pub(crate) async fn push(inner: &Inner, id: &str, frame: Frame) -> Result<(), PushError> {
    let failed = |why: Failure, e: PushError| {
        inner.metrics.failed(why);
        Err(e)
    };
    if !inner.connected() {
        return failed(
            Failure::Disconnected,
            PushError::Unavailable(ClusterError::Disconnected),
        );
    }
    let kind = if frame.op == OpCode::Text {
        UserKind::Text
    } else {
        UserKind::Binary
    };
    let request = Request::new()
        .payload(frame.payload)
        .timeout(Some(inner.timeout));
    let sent = inner
        .client
        .send_request(inner.subjects.user(id, kind), request);
    let offline = || PushError::NotFound(ChannelId::new(id));
    match tokio::time::timeout(inner.timeout + Duration::from_millis(100), sent).await {
        Ok(Ok(m)) => match m.payload.first() {
            Some(b'+') => {
                inner.metrics.pushes_sent.inc();
                Ok(())
            }
            Some(b'F') => failed(Failure::Full, PushError::Full),
            _ => failed(Failure::Offline, offline()),
        },
        Ok(Err(e)) => match e.kind() {
            RequestErrorKind::NoResponders => failed(Failure::Offline, offline()),
            RequestErrorKind::TimedOut => failed(
                Failure::Timeout,
                PushError::Unavailable(ClusterError::TimedOut),
            ),
            _ => failed(Failure::Broker, PushError::Unavailable(broker(e))),
        },
        Err(_) => failed(
            Failure::Timeout,
            PushError::Unavailable(ClusterError::TimedOut),
        ),
    }
}

/// The node holding `id`, if another one does.
pub(crate) async fn locate(inner: &Inner, id: &str) -> Result<Option<String>, ClusterError> {
    match ask(inner, id, UserKind::Where).await {
        Asked::Yes(node) => Ok(Some(node)),
        Asked::No | Asked::Nobody => Ok(None),
        Asked::Silent => Err(ClusterError::TimedOut),
        Asked::Failed(e) => Err(e),
    }
}
