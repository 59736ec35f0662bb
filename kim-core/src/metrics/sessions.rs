//! The sessions' figures: how many are open and suspended, what became of resumes, and what
//! is held for them.

use prometheus::{IntCounter, IntGauge, Registry};

use super::register;

/// Counters and gauges of a server's sessions.
pub(crate) struct SessionMetrics {
    pub(crate) open: IntGauge,
    pub(crate) suspended: IntGauge,
    pub(crate) resumed: IntCounter,
    pub(crate) expired: IntCounter,
    pub(crate) told_new: IntCounter,
    pub(crate) held_messages: IntGauge,
    /// What the server's total bounds: held payloads and each held message's entry.
    pub(crate) held_bytes: IntGauge,
    pub(crate) replayed: IntCounter,
    pub(crate) acked: IntCounter,
    pub(crate) dropped_session_limit: IntCounter,
    pub(crate) dropped_server_limit: IntCounter,
}

impl SessionMetrics {
    pub(crate) fn new(registry: &Registry) -> SessionMetrics {
        let gauge = |name: &str, help: &str| register::gauge(registry, name, help);
        let counter = |name: &str, help: &str| register::counter(registry, name, help);
        SessionMetrics {
            open: gauge("kim_sessions", "Sessions open, connected or suspended."),
            suspended: gauge(
                "kim_sessions_suspended",
                "Sessions whose connection was lost, waiting for their client.",
            ),
            resumed: counter("kim_sessions_resumed_total", "Sessions resumed."),
            expired: counter(
                "kim_sessions_expired_total",
                "Suspended sessions ended by the window.",
            ),
            told_new: counter(
                "kim_sessions_told_new_total",
                "Resumes refused: the client was told its session is new.",
            ),
            held_messages: gauge(
                "kim_session_held_messages",
                "Messages sent or waiting and not yet acknowledged, over all sessions.",
            ),
            held_bytes: gauge(
                "kim_session_held_bytes",
                "Bytes held for sessions: payloads, and each held message's entry.",
            ),
            replayed: counter(
                "kim_session_replayed_total",
                "Held messages replayed to a resumed session.",
            ),
            acked: counter(
                "kim_session_acked_total",
                "Held messages freed by acknowledgements (and by resumes).",
            ),
            dropped_session_limit: counter(
                "kim_session_dropped_session_limit_total",
                "Held messages dropped, oldest first, past a session's limits.",
            ),
            dropped_server_limit: counter(
                "kim_session_dropped_server_limit_total",
                "Held messages dropped from the largest sessions past the server's total.",
            ),
        }
    }
}
