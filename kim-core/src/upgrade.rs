//! Upgraders: how an accepted byte stream becomes a framed connection.
//!
//! An app chooses its transport by choosing an upgrader and nothing else: the raw TCP upgrader
//! frames the stream at once, the websocket upgrader parses the HTTP/1.1 upgrade straight off
//! the stream first. Both run under the server's login deadline.

use std::future::Future;

use crate::conn::{Conn, Framed};
use crate::error::UpgradeError;
use crate::io::Io;

/// Limits a transport applies to the connections it upgrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnConfig {
    /// The largest frame (and, for fragmented transports, message) accepted until
    /// [`FrameReader::set_max_message_size`](crate::FrameReader::set_max_message_size) says otherwise (the server starts a connection
    /// with its login limit).
    pub max_message_size: usize,
    /// Bytes per socket read.
    pub read_buffer_size: usize,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            max_message_size: 4 << 20,
            read_buffer_size: 4096,
        }
    }
}

/// Turns an accepted stream of type `IO` into a framed [`Conn`].
pub trait Upgrader<IO: Io>: Send + Sync + 'static {
    /// The connection this transport makes of a stream: it owns the stream whole, reading
    /// and writing frames on it.
    type Framed: Framed;

    /// The transport's name, for logs ("tcp", "ws").
    fn name(&self) -> &'static str;

    /// Performs the transport's handshake, if it has one. On a refusal the upgrader answers
    /// the client itself (an HTTP status for websocket) before returning the error.
    fn upgrade(
        &self,
        io: IO,
        config: ConnConfig,
    ) -> impl Future<Output = Result<Conn<Self::Framed>, UpgradeError>> + Send;

    /// Refuses a connection whose login failed with the transport's own answer, as if its
    /// upgrade had been refused (websocket: an HTTP status instead of the `101`), if nothing was
    /// written to it yet. Returns `false` when the transport has no such answer or it is too
    /// late; the server then closes the connection with a close frame instead.
    fn refuse(
        &self,
        conn: &mut Conn<Self::Framed>,
        status: u16,
        reason: &str,
    ) -> impl Future<Output = bool> + Send {
        let _ = (conn, status, reason);
        async { false }
    }

    /// Registers the transport's own metrics (a TLS layer counts its handshakes) in the
    /// server's registry, once, when the server starts. Most transports have none.
    fn register_metrics(&self, registry: &prometheus::Registry) {
        let _ = registry;
    }
}
