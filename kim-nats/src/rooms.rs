//! Rooms across nodes: a node receives a room's publishes while it has members in it, sends
//! its own publishes once to the room's subject, and answers for its members' count.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::Subscriber;
use bytes::Bytes;
use futures_util::StreamExt;
use kim_core::cluster::ClusterError;
use kim_core::{Frame, OpCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Failure;
use crate::subject::Subjects;
use crate::{broker, Inner};

/// Keeps this node subscribed to exactly the rooms it has members in. Each name received is a
/// room whose membership may have crossed zero; the local count decides, so changes that
/// cancel out in the queue cost nothing.
pub(crate) async fn follow(inner: Arc<Inner>, mut changed: mpsc::UnboundedReceiver<String>) {
    let mut subscribed: HashMap<String, CancellationToken> = HashMap::new();
    loop {
        let room = tokio::select! {
            _ = inner.stop.cancelled() => break,
            r = changed.recv() => match r { Some(r) => r, None => break },
        };
        let Some(local) = inner.local() else { continue };
        let wanted = local.room_size(&room) > 0;
        match (wanted, subscribed.contains_key(&room)) {
            (true, false) => {
                let sub = inner.client.subscribe(inner.subjects.room_all(&room));
                match tokio::time::timeout(inner.timeout, sub).await {
                    Ok(Ok(sub)) => {
                        // The subscription is queued; a flush's round trip proves the server
                        // has it, so that the gauge below counts only rooms whose publishes
                        // reach this node.
                        let flushed = tokio::time::timeout(inner.timeout, inner.client.flush());
                        if !matches!(flushed.await, Ok(Ok(()))) {
                            tracing::debug!(%room, "room subscription not confirmed yet");
                        }
                        let stop = CancellationToken::new();
                        inner
                            .tasks
                            .spawn(receive(inner.clone(), room.clone(), sub, stop.clone()));
                        subscribed.insert(room, stop);
                    }
                    // Tried again when the broker is back (every local room is).
                    _ => tracing::warn!(%room, "cannot subscribe to the room's publishes"),
                }
            }
            (false, true) => {
                if let Some(stop) = subscribed.remove(&room) {
                    stop.cancel();
                }
            }
            _ => {}
        }
        inner
            .metrics
            .room_subscriptions
            .set(subscribed.len() as i64);
    }
    for stop in subscribed.into_values() {
        stop.cancel();
    }
}

/// Fans the other nodes' publishes to room `room` out to its local members.
async fn receive(inner: Arc<Inner>, room: String, sub: Subscriber, stop: CancellationToken) {
    let sub = sub.take_until(stop.cancelled_owned());
    tokio::pin!(sub);
    while let Some(m) = sub.next().await {
        inner.metrics.publishes_received.inc();
        let op = if Subjects::room_is_text(&m.subject) {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        if let Some(local) = inner.local() {
            if let Err(e) = local.publish(&room, Frame::new(op, m.payload)) {
                tracing::debug!(%room, error = %e, "publish from another node not delivered");
            }
        }
    }
}

/// Queues a publish to room `room` for the other nodes. Never waits.
pub(crate) fn publish(inner: &Inner, room: &str, frame: &Frame) -> Result<(), ClusterError> {
    if !inner.connected() {
        inner.metrics.failed(Failure::Disconnected);
        return Err(ClusterError::Disconnected);
    }
    let subject = inner.subjects.room(room, frame.op == OpCode::Text);
    match inner.outgoing.try_send((subject, frame.payload.clone())) {
        Ok(()) => {
            inner.metrics.publishes_sent.inc();
            Ok(())
        }
        Err(_) => {
            inner.metrics.failed(Failure::QueueFull);
            Err(ClusterError::Broker("publish queue full".to_string()))
        }
    }
}

/// Sends the queued publishes to the broker, in order.
pub(crate) async fn send(inner: Arc<Inner>, mut outgoing: mpsc::Receiver<(String, Bytes)>) {
    loop {
        let (subject, payload) = tokio::select! {
            _ = inner.stop.cancelled() => return,
            p = outgoing.recv() => match p { Some(p) => p, None => return },
        };
        let sent = inner.client.publish(subject, payload);
        match tokio::time::timeout(inner.timeout, sent).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                inner.metrics.failed(Failure::Broker);
                tracing::debug!(error = %e, "room publish not sent");
            }
            Err(_) => inner.metrics.failed(Failure::Timeout),
        }
    }
}

/// Answers the other nodes' questions about a room's size with this node's count.
pub(crate) async fn answer_sizes(inner: Arc<Inner>) {
    let Ok(mut sub) = inner.client.subscribe(inner.subjects.size()).await else {
        tracing::warn!("cannot subscribe to room size questions");
        return;
    };
    loop {
        let m = tokio::select! {
            _ = inner.stop.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        let (Some(reply), Some(local)) = (m.reply, inner.local()) else {
            continue;
        };
        let Ok(room) = std::str::from_utf8(&m.payload) else {
            continue;
        };
        let count = local.room_size(room);
        let sent = inner.client.publish(reply, Bytes::from(count.to_string()));
        let _ = tokio::time::timeout(inner.timeout, sent).await;
    }
}

/// Members of room `room` on the other live nodes: every node is asked at once, and the
/// answers are summed as they come, until each live node answered or the timeout.
pub(crate) async fn size(inner: &Inner, room: &str) -> Result<usize, ClusterError> {
    if !inner.connected() {
        return Err(ClusterError::Disconnected);
    }
    let expected = inner.nodes.others();
    if expected == 0 {
        return Ok(0);
    }
    let inbox = inner.client.new_inbox();
    let asked = async {
        let mut answers = inner
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(broker)?;
        inner
            .client
            .publish_with_reply(inner.subjects.size(), inbox, Bytes::from(room.to_string()))
            .await
            .map_err(broker)?;
        let mut total = 0;
        let mut heard = 0;
        while heard < expected {
            let Some(m) = answers.next().await else { break };
            let n: Option<usize> = std::str::from_utf8(&m.payload)
                .ok()
                .and_then(|s| s.parse().ok());
            total += n.unwrap_or(0);
            heard += 1;
        }
        Ok(total)
    };
    match tokio::time::timeout(inner.timeout, asked).await {
        Ok(r) => r,
        Err(_) => Err(ClusterError::TimedOut),
    }
}
