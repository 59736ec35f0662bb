//! kim-core: the heart of kim, a framework for instant-messaging gateways on tokio.
//!
//! An app implements three traits and gets a gateway:
//! - [`Acceptor`]: logs a new connection in and names its channel;
//! - [`MessageListener`]: handles every message a client sends, with its [`Channel`] to reply;
//! - [`StateListener`]: hears that a channel is gone.
//!
//! [`DefaultServer`] owns everything else: the accept loop, the transport upgrade (chosen by
//! an [`Upgrader`]: websocket or raw TCP frames), the login deadline, per-channel read and
//! write deadlines, heartbeats, batched writes, pushes to any channel through the server's
//! [`Hub`], [rooms](room) (join, leave, and publish to every member, encoded once), and
//! graceful shutdown through its [`ServerHandle`].
//!
//! The path of a message: the accept loop hands a stream to the upgrader, the acceptor logs
//! it in under `login_wait`, the channel joins the [`ChannelMap`], and one task per channel
//! reads frames, hands each message to its *route* (the app's listener in this task, or a
//! worker process in process mode), and writes whatever was pushed as one batch.
//!
//! Where what a channel sends goes (a push, a room operation, a close) is decided in one
//! place, the server's *courier*, chosen once at start: this process's outboxes and rooms,
//! the same with the other nodes of a [cluster](cluster) behind them, or in a worker process
//! the master. Nothing else in kim asks which mode it runs in.
//!
//! The crate has one module per concept, and its dependencies point one way: `server` (accept,
//! login, sweep, the handle) uses `session` (one channel's task), `route` (where a channel's
//! messages go) and `hub` (the couriers and their public face); those use `channel` (the
//! handle, its outbox, the map and the courier seam) and `room` (the rooms of the process that
//! holds the sockets); all use the leaves: frames, `close` (reasons and causes), errors,
//! options, the clock, metrics. Process mode (`ipc`) plugs in at the same two seams: the master
//! is a route, and a worker's channels have the worker's courier.
//!
//! # Example
//!
//! A chat gateway: logins by name, `@bob hi` delivered to bob (or "bob is offline"), and
//! the others told who comes and goes (`cargo run -p kim-core --example chat`, then connect a
//! websocket client to `ws://127.0.0.1:8000`).
//!
#![doc = concat!("```rust,no_run\n", include_str!("../examples/chat.rs"), "```")]
#![warn(missing_docs)]

mod app;
mod channel;
mod clock;
mod close;
pub mod cluster;
mod conn;
mod connections;
pub mod debug;
mod error;
mod extensions;
mod frame;
mod hub;
pub mod io;
pub mod ipc;
pub mod metrics;
mod options;
pub mod resume;
pub mod room;
mod route;
mod server;
mod session;
mod shared_frame;
mod throttle;
mod upgrade;

pub use app::{
    Accepted, Acceptor, DefaultAcceptor, LoginConn, MessageListener, Reject, StateListener,
};
pub use channel::{Channel, ChannelId, ChannelMap, Insert, Meta};
pub use close::CloseReason;
pub use conn::{Conn, FrameReader, FrameReaderExt, FrameWriter, FrameWriterExt, Framed, Handshake};
pub use debug::DebugService;
pub use error::{LoginError, OptionsError, PushError, ReadError, ServerError, UpgradeError};
pub use extensions::Extensions;
pub use frame::{Frame, OpCode};
pub use hub::Hub;
pub use metrics::Metrics;
pub use options::{
    Backend, Dispatch, DuplicatePolicy, OptionsBuilder, ServerOptions, WorkerCommand,
};
pub use resume::{
    DefaultCodec, Opened, Prefix, SessionCodec, SessionLogin, SessionToken, Upstream,
};
pub use server::{DefaultServer, ServerHandle, ServerStats, ShutdownReport};
pub use shared_frame::SharedFrame;
pub use upgrade::{ConnConfig, Upgrader};

/// kim's internals that its benchmark and fuzz targets drive directly: the IPC wire (to
/// measure it alone and to feed its receiver hostile datagrams). Not part of the supported
/// API: it changes without notice.
#[doc(hidden)]
pub mod internals {
    /// The IPC wire (see [`crate::ipc`]).
    pub mod wire {
        pub use crate::ipc::wire::*;
    }
}
