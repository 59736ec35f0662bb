//! Which nodes are alive: each says so on the heartbeat subject, and each keeps when it last
//! heard from the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::Inner;

/// Heartbeats missed before a node is taken for dead.
const MISSED: u32 = 3;

/// When each other node was last heard from.
pub(crate) struct Nodes {
    me: String,
    window: Duration,
    seen: parking_lot::Mutex<HashMap<String, Instant>>,
}

impl Nodes {
    pub(crate) fn new(me: &str, heartbeat: Duration) -> Nodes {
        Nodes {
            me: me.to_string(),
            window: heartbeat * MISSED,
            seen: parking_lot::Mutex::default(),
        }
    }

    /// True for this node, and for others heard from within three heartbeats.
    pub(crate) fn is_alive(&self, node: &str) -> bool {
        node == self.me
            || self
                .seen
                .lock()
                .get(node)
                .is_some_and(|t| t.elapsed() < self.window)
    }

    /// The live nodes, this one first.
    pub(crate) fn live(&self) -> Vec<String> {
        let mut out = vec![self.me.clone()];
        let mut seen = self.seen.lock();
        seen.retain(|_, t| t.elapsed() < self.window * 10);
        out.extend(
            seen.iter()
                .filter(|(_, t)| t.elapsed() < self.window)
                .map(|(n, _)| n.clone()),
        );
        out
    }

    /// The live nodes other than this one.
    pub(crate) fn others(&self) -> usize {
        self.live().len() - 1
    }

    /// Notes a heartbeat; true if the node was not known alive.
    fn heard(&self, node: String) -> bool {
        let now = Instant::now();
        match self.seen.lock().insert(node, now) {
            Some(before) => now.duration_since(before) >= self.window,
            None => true,
        }
    }
}

/// Says this node is alive, every heartbeat.
pub(crate) async fn beat(inner: Arc<Inner>) {
    let subject = inner.subjects.heartbeat();
    let name = Bytes::from(inner.node.clone());
    let mut every = tokio::time::interval(inner.heartbeat);
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if inner.connected() {
            let sent = inner.client.publish(subject.clone(), name.clone());
            let _ = tokio::time::timeout(inner.timeout, sent).await;
        }
        inner.metrics.nodes.set(inner.nodes.live().len() as i64);
    }
}

/// Hears the other nodes' heartbeats.
pub(crate) async fn listen(inner: Arc<Inner>) {
    let Ok(mut sub) = inner.client.subscribe(inner.subjects.heartbeat()).await else {
        tracing::warn!("cannot subscribe to the cluster's heartbeats");
        return;
    };
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            m = sub.next() => match m {
                Some(m) => {
                    let Ok(name) = std::str::from_utf8(&m.payload) else { continue };
                    if inner.nodes.heard(name.to_string()) {
                        // A node new to us: say we are here at once, so that it knows every
                        // node before its first question rather than a heartbeat later.
                        let me = Bytes::from(inner.node.clone());
                        let sent = inner.client.publish(inner.subjects.heartbeat(), me);
                        let _ = tokio::time::timeout(inner.timeout, sent).await;
                    }
                }
                None => return,
            },
        }
    }
}
