//! The server's metrics, in a [`prometheus`] registry of its own, rendered in Prometheus'
//! text format by [`ServerHandle::metrics_text`](crate::ServerHandle::metrics_text) and served
//! on `/metrics` by the debug listener.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kim_connections` | gauge: connections being served (logging in or logged in) | |
//! | `kim_channels` | gauge: logged-in channels | |
//! | `kim_connections_accepted_total` | counter | |
//! | `kim_connections_refused_total` | counter: closed at once over `max_connections` | |
//! | `kim_accept_errors_total` | counter | |
//! | `kim_logins_total` | counter: successful logins | |
//! | `kim_login_rejections_total` | counter | `reason`: `acceptor`, `timeout`, `duplicate`, `handshake` |
//! | `kim_messages_received_total`, `kim_received_bytes_total` | counter: text and binary messages read after login, and their payload bytes | |
//! | `kim_messages_sent_total`, `kim_sent_bytes_total` | counter: text and binary messages written, and their payload bytes | |
//! | `kim_push_failures_total` | counter | `reason`: `not_found`, `closed`, `full`, `not_data`, `too_large`, `unavailable` (the cluster could not be asked) |
//! | `kim_channels_closed_total` | counter | `cause`: see below |
//! | `kim_handler_duration_seconds` | histogram: time in [`MessageListener::receive`](crate::MessageListener::receive) | |
//! | `kim_rooms`, `kim_room_memberships` | gauge: rooms with members, and channels in rooms counted once per room | |
//! | `kim_room_publishes_total` | counter: publishes to a room (in the process that holds the sockets) | |
//! | `kim_room_deliveries_total` | counter: members a publish reached | |
//! | `kim_room_skipped_total` | counter: members a publish skipped, their outbox full | |
//! | `kim_room_slow_consumers_closed_total` | counter: members closed, their outbox full | |
//! | `kim_sessions`, `kim_sessions_suspended` | gauge: sessions open (connected or suspended), and suspended | |
//! | `kim_sessions_resumed_total`, `kim_sessions_expired_total`, `kim_sessions_told_new_total` | counter: resumes taken, suspended sessions ended by the window, resumes answered "new" | |
//! | `kim_session_held_messages`, `kim_session_held_bytes` | gauge: messages held (sent or waiting, not acknowledged), and their bytes with each one's entry | |
//! | `kim_session_replayed_total`, `kim_session_acked_total` | counter: held messages replayed, and freed by acknowledgements | |
//! | `kim_session_dropped_session_limit_total`, `kim_session_dropped_server_limit_total` | counter: held messages dropped past a session's limits, and past the server's total | |
//!
//! Close causes: `peer` (the client closed), `peer_gone` (the stream ended without a close),
//! `io_error`, `read_timeout`, `write_timeout`, `close_timeout` (our close was not answered),
//! `protocol_error`, `kicked` (a newer login with the same id), `server` (the app closed it),
//! `shutdown`, `slow_consumer` (a room's publish found its outbox full, and the room's
//! policy is to close; or a session had to drop a message not yet sent) and
//! `session_expired` (a suspended session's window passed). A full outbox does not close a channel: the push fails (`full`) and the
//! client, once it reads, gets what was queued.
//!
//! In process mode the master adds the workers' figures: `kim_ipc_workers`,
//! `kim_ipc_worker_respawns_total`, `kim_ipc_worker_reloads_total`,
//! `kim_ipc_messages_total` and `kim_ipc_datagrams_total` (`direction`: `to_workers`,
//! `from_workers`), `kim_ipc_orphan_chunks_total`, `kim_ipc_expired_partials_total`,
//! `kim_ipc_refused_total` and `kim_ipc_malformed_total` (`receiver`: `master`, `workers`),
//! `kim_ipc_handled_total`, and the handler histogram measured in the workers (reported every
//! 50 ms).
//!
//! The per-message figures (messages, bytes, handler time) are counted on the thread that
//! handled the message, in a cache-line-aligned cell that only this thread writes (plain
//! stores, no locked instructions; threads past the first 16 share one more cell, atomically),
//! and summed when scraped: one shared counter written by every thread for every message
//! costs a visible share of an echo server's throughput on two cores. [`ServerOptions::metrics`](crate::OptionsBuilder::metrics)
//! turns them off; the per-connection figures are always kept.

pub(crate) mod hot;
pub(crate) mod live;
mod register;
pub(crate) mod rooms;
pub(crate) mod sessions;

use std::sync::{Arc, Weak};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::close::CloseCause;
use crate::error::PushError;

pub(crate) use hot::{stopwatch, Hot};
pub(crate) use live::Live;
pub(crate) use rooms::RoomMetrics;
pub(crate) use sessions::SessionMetrics;

/// Why a login failed, a label of `kim_login_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The acceptor refused it.
    Acceptor,
    /// Upgrade and login did not finish within login_wait.
    Timeout,
    /// The id is already connected (duplicate policy `Reject`).
    Duplicate,
    /// The transport's handshake failed.
    Handshake,
}

impl Rejection {
    const ALL: [Rejection; 4] = [
        Rejection::Acceptor,
        Rejection::Timeout,
        Rejection::Duplicate,
        Rejection::Handshake,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Rejection::Acceptor => "acceptor",
            Rejection::Timeout => "timeout",
            Rejection::Duplicate => "duplicate",
            Rejection::Handshake => "handshake",
        }
    }
}

const PUSH_REASONS: [&str; 6] = [
    "not_found",
    "closed",
    "full",
    "not_data",
    "too_large",
    "unavailable",
];

/// The reason a failed push is counted under; `None` for what only a room operation meets.
fn push_reason(e: &PushError) -> Option<usize> {
    match e {
        PushError::NotFound(_) => Some(0),
        PushError::Closed => Some(1),
        PushError::Full => Some(2),
        PushError::NotData(_) => Some(3),
        PushError::TooLarge { .. } => Some(4),
        PushError::Unavailable(_) | PushError::NoAnswer => Some(5),
        PushError::BadRoomName | PushError::TooManyRooms { .. } => None,
    }
}

/// A server's metrics. Get them from
/// [`ServerHandle::metrics`](crate::ServerHandle::metrics); register the app's own metrics in
/// [`Metrics::registry`] to have them served with kim's.
pub struct Metrics {
    registry: Registry,
    pub(crate) accepted: IntCounter,
    pub(crate) refused_over_limit: IntCounter,
    pub(crate) accept_errors: IntCounter,
    pub(crate) logins: IntCounter,
    rejections: [IntCounter; 4],
    push_failures: [IntCounter; 6],
    closed: [IntCounter; 12],
    /// Rooms and their publishes.
    pub(crate) rooms: RoomMetrics,
    pub(crate) sessions: SessionMetrics,
    pub(crate) hot: Arc<Hot>,
    /// Whether per-message figures are kept.
    pub(crate) per_message: bool,
}

impl Metrics {
    pub(crate) fn new(per_message: bool) -> Metrics {
        if per_message {
            hot::warm_stopwatch();
        }
        let registry = Registry::new();
        let counter = |name: &str, help: &str| register::counter(&registry, name, help);
        let vec = |name: &str, help: &str, label: &str| {
            let v = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            register::registered(&registry, v)
        };
        let rejections = vec(
            "kim_login_rejections_total",
            "Connections that did not log in, by reason.",
            "reason",
        );
        let pushes = vec(
            "kim_push_failures_total",
            "Pushes refused, by reason.",
            "reason",
        );
        let closed = vec(
            "kim_channels_closed_total",
            "Logged-in channels that ended, by cause.",
            "cause",
        );
        Metrics {
            accepted: counter(
                "kim_connections_accepted_total",
                "Connections accepted from the listening socket.",
            ),
            refused_over_limit: counter(
                "kim_connections_refused_total",
                "Connections closed at once because max_connections were being served.",
            ),
            accept_errors: counter("kim_accept_errors_total", "Failed accepts."),
            logins: counter("kim_logins_total", "Successful logins."),
            rejections: Rejection::ALL.map(|r| rejections.with_label_values(&[r.label()])),
            push_failures: PUSH_REASONS.map(|r| pushes.with_label_values(&[r])),
            closed: CloseCause::ALL.map(|c| closed.with_label_values(&[c.label()])),
            rooms: RoomMetrics::new(&registry),
            sessions: SessionMetrics::new(&registry),
            hot: Arc::new(Hot::new()),
            per_message,
            registry,
        }
    }

    /// Attaches the figures read from the server when scraped (gauges, per-message counts,
    /// the worker backend's).
    pub(crate) fn attach(&self, live: Weak<dyn Live>) {
        let collector = live::LiveCollector::new(live, self.hot.clone());
        let _ = self.registry.register(Box::new(collector));
    }

    /// The registry holding kim's metrics; the app may register its own in it.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the registry, in Prometheus' text format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# error encoding metrics: {e}\n"))
    }

    pub(crate) fn rejected(&self, r: Rejection) {
        self.rejections[r as usize].inc();
    }

    pub(crate) fn rejected_total(&self) -> u64 {
        self.rejections.iter().map(|c| c.get()).sum()
    }

    pub(crate) fn push_failed(&self, e: &PushError) {
        if let Some(reason) = push_reason(e) {
            self.push_failures[reason].inc();
        }
    }

    pub(crate) fn closed(&self, cause: CloseCause) {
        self.closed[cause as usize].inc();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("per_message", &self.per_message)
            .finish_non_exhaustive()
    }
}
