//! Requests about users: this node answering, on its own subject, for the users it holds
//! (pushes, "do you hold it", kicks, "where is it"), and asking the node holding a user
//! elsewhere, found through the directory.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Message, Request, RequestErrorKind, Subscriber};
use bytes::Bytes;
use futures_util::stream::StreamExt;
use kim_core::cluster::ClusterError;
use kim_core::{ChannelId, Frame, OpCode, PushError};

use crate::claims::{ask, Asked};
use crate::directory;
use crate::metrics::Failure;
use crate::subject::UserKind;
use crate::{broker, Inner};

/// Answers the requests that come on this node's subject, one at a time, in order.
pub(crate) async fn answer(inner: Arc<Inner>, mut requests: Subscriber) {
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            m = requests.next() => match m {
                Some(message) => respond(&inner, message).await,
                None => return,
            },
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

/// Pushes `frame` to `id` on the node holding it: the node found in the directory, asked
/// again afresh once if a remembered node says the user is not there (any more).
pub(crate) async fn push(inner: &Inner, id: &str, frame: Frame) -> Result<(), PushError> {
    let failed = |why: Failure, e: PushError| {
        inner.metrics.failed(why);
        Err(e)
    };
    let unavailable = |e: ClusterError| {
        let why = match e {
            ClusterError::Disconnected => Failure::Disconnected,
            ClusterError::TimedOut => Failure::Timeout,
            _ => Failure::Broker,
        };
        failed(why, PushError::Unavailable(e))
    };
    if !inner.connected() {
        return unavailable(ClusterError::Disconnected);
    }
    let kind = if frame.op == OpCode::Text {
        UserKind::Text
    } else {
        UserKind::Binary
    };
    let offline = || PushError::NotFound(ChannelId::new(id));
    let mut fresh = false;
    loop {
        let owner = match directory::owner(inner, id, fresh).await {
            Ok(Some(owner)) if *owner.node != *inner.node => owner,
            // Nobody claims it, or the key still names this node, which does not hold it.
            Ok(_) => return failed(Failure::Offline, offline()),
            Err(e) => return unavailable(e),
        };
        let request = Request::new()
            .payload(frame.payload.clone())
            .timeout(Some(inner.timeout));
        let subject = inner.subjects.user(&owner.node, id, kind);
        let sent = inner.client.send_request(subject, request);
        let answered = tokio::time::timeout(inner.timeout + Duration::from_millis(100), sent);
        match answered.await {
            Ok(Ok(m)) => match m.payload.first() {
                Some(b'+') => {
                    inner.metrics.pushes_sent.inc();
                    return Ok(());
                }
                Some(b'F') => return failed(Failure::Full, PushError::Full),
                // "Not here".
                _ => {}
            },
            // The node is gone.
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {}
            Ok(Err(e)) if e.kind() == RequestErrorKind::TimedOut => {
                return unavailable(ClusterError::TimedOut)
            }
            Ok(Err(e)) => return unavailable(broker(e)),
            Err(_) => return unavailable(ClusterError::TimedOut),
        }
        inner.directory.forget(id);
        if !owner.cached {
            return failed(Failure::Offline, offline());
        }
        fresh = true;
    }
}

/// The node holding `id`, if another one does: the one the claims bucket names, once it
/// says it holds the id.
pub(crate) async fn locate(inner: &Inner, id: &str) -> Result<Option<String>, ClusterError> {
    let Some(owner) = directory::owner(inner, id, true).await? else {
        return Ok(None);
    };
    match ask(inner, &owner.node, id, UserKind::Where).await {
        Asked::Yes(node) => Ok(Some(node)),
        Asked::No | Asked::Nobody => Ok(None),
        Asked::Silent => Err(ClusterError::TimedOut),
        Asked::Failed(e) => Err(e),
    }
}
