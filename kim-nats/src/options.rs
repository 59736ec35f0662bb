//! How a node joins its cluster.

use std::time::Duration;

use crate::error::NatsError;

/// Where NATS is, and this node's place in the cluster.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    pub(crate) url: String,
    pub(crate) node: String,
    pub(crate) cluster: String,
    pub(crate) request_timeout: Duration,
    pub(crate) heartbeat: Duration,
}

impl NatsOptions {
    /// Joins cluster `kim` on the NATS server at `url` (`nats://host:port`, or several
    /// comma-separated) as node `node`. A node's name must be unique in its cluster and stay
    /// the same across restarts: a restarted node takes its users back under it.
    pub fn new(url: impl Into<String>, node: impl Into<String>) -> NatsOptions {
        NatsOptions {
            url: url.into(),
            node: node.into(),
            cluster: "kim".to_string(),
            request_timeout: Duration::from_secs(2),
            heartbeat: Duration::from_secs(1),
        }
    }

    /// The cluster's name: nodes of different clusters share a NATS server without meeting.
    pub fn cluster(mut self, name: impl Into<String>) -> NatsOptions {
        self.cluster = name.into();
        self
    }

    /// The longest wait for another node's answer (a push, a claim, a room's size); 2 s by
    /// default.
    pub fn request_timeout(mut self, timeout: Duration) -> NatsOptions {
        self.request_timeout = timeout;
        self
    }

    /// How often a node says it is alive; a node silent for three heartbeats is taken for
    /// dead when it does not answer a claim. 1 s by default.
    pub fn heartbeat(mut self, every: Duration) -> NatsOptions {
        self.heartbeat = every;
        self
    }

    pub(crate) fn check(&self) -> Result<(), NatsError> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let bad = |name, reason: &str| {
            Err(NatsError::Option {
                name,
                reason: reason.to_string(),
            })
        };
        if !name_ok(&self.node) {
            return bad("node", "1 to 64 ASCII letters, digits, '-' or '_'");
        }
        if !name_ok(&self.cluster) {
            return bad("cluster", "1 to 64 ASCII letters, digits, '-' or '_'");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout", "must be more than zero");
        }
        if self.heartbeat.is_zero() {
            return bad("heartbeat", "must be more than zero");
        }
        Ok(())
    }
}
