//! kim-core: the heart of kim, a framework for instant-messaging gateways on tokio.
//!
//! An app implements three traits and gets a gateway:
//! - [`Acceptor`]: logs a new connection in and names its channel;
//! - [`MessageListener`]: handles every message a client sends, with an [`Agent`] to reply;
//! - [`StateListener`]: hears that a channel is gone.
//!
//! [`DefaultServer`] owns everything else: the accept loop, the transport upgrade (chosen by
//! an [`Upgrader`]: websocket or raw TCP frames), the login deadline, per-channel read and
//! write deadlines, heartbeats, batched writes, pushes to any channel through a
//! [`ServerHandle`], and graceful shutdown.
//!
//! The path of a message: the accept loop hands a stream to the upgrader, the acceptor logs
//! it in under `login_wait`, the channel joins the [`ChannelMap`], and one task per channel
//! reads frames, calls the listener in order, and writes whatever was pushed as one batch.
#![warn(missing_docs)]

mod channel;
mod channels;
pub mod client;
mod conn;
mod debug;
mod error;
mod frame;
mod heap;
pub mod io;
pub mod ipc;
mod listener;
pub mod metrics;
mod options;
mod server;
mod session;
mod throttle;
mod upgrade;

pub use channel::{Agent, Channel, ChannelId, Meta};
pub use channels::{ChannelMap, Insert};
pub use conn::{Conn, FrameReader, FrameReaderExt, FrameWriter, FrameWriterExt, Handshake};
pub use error::{LoginError, OptionsError, PushError, ReadError, ServerError, UpgradeError};
pub use frame::{CloseReason, Frame, OpCode};
pub use listener::{
    Accepted, Acceptor, DefaultAcceptor, LoginConn, MessageListener, Reject, StateListener,
};
pub use metrics::Metrics;
pub use options::{
    Backend, Dispatch, DuplicatePolicy, OptionsBuilder, ServerOptions, WorkerCommand,
};
pub use server::{DefaultServer, ServerHandle, ServerStats, ShutdownReport};
pub use throttle::LogThrottle;
pub use upgrade::{ConnConfig, Upgrader};

/// Entry points for kim's fuzz targets (the `fuzz/` directory): decoders of outside input that
/// are not otherwise reachable without a running server. Not part of the supported API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::debug::parse_seconds;
}
