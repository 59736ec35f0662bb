//! Server options, with KIM's defaults and a builder that refuses values that cannot work.

use std::time::Duration;

use crate::error::OptionsError;
use crate::room::RoomPolicy;

/// What to do when a client logs in with an id that is already connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicatePolicy {
    /// Refuse the new login with "channel id is repeated" (KIM's rule).
    #[default]
    Reject,
    /// Close the old channel ("kicked by a new login") and let the new one take its place.
    Kick,
}

/// Where the app's [`MessageListener`](crate::MessageListener) and
/// [`StateListener`](crate::StateListener) run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// On the server's own runtime (the default).
    #[default]
    InProcess,
    /// In worker processes fed over `AF_UNIX SOCK_DGRAM` socketpairs (process mode): this
    /// process keeps every client socket, the transports and the login; `workers` copies of
    /// the program, started by re-executing it, run the listeners. A worker that dies is
    /// respawned and a reload replaces them one at a time, and no client connection is closed
    /// by either. See [`crate::ipc`].
    UnixDatagram {
        /// Worker processes, 1 to 1024.
        workers: usize,
        /// The largest datagram payload (chunk) on the IPC sockets, 1 KiB to 4 MiB. Messages
        /// larger than this are cut into chunks and reassembled in place.
        ipc_max_size: usize,
        /// Which worker handles a message.
        dispatch: Dispatch,
    },
}

impl Backend {
    /// The IPC chunk size by default: 64 KiB.
    pub const DEFAULT_IPC_MAX_SIZE: usize = 64 * 1024;

    /// `workers` worker processes with 64 KiB chunks and [`Dispatch::Fixed`].
    pub fn unix_datagram(workers: usize) -> Backend {
        Backend::UnixDatagram {
            workers,
            ipc_max_size: Backend::DEFAULT_IPC_MAX_SIZE,
            dispatch: Dispatch::Fixed,
        }
    }
}

/// How messages are spread over worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dispatch {
    /// Each channel belongs to one worker, which handles all its messages in order (the
    /// default).
    #[default]
    Fixed,
    /// Each message goes to the next worker in turn; a channel's messages may be handled out
    /// of order.
    RoundRobin,
    /// Each message goes to the worker with the fewest messages dispatched and not yet handled;
    /// a channel's messages may be handled out of order.
    LeastBusy,
}

/// The program a master starts as a worker: by default its own executable with its own
/// arguments (the same `main` finds out it is a worker). Tests and special deployments point it
/// elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The executable.
    pub program: std::path::PathBuf,
    /// Its arguments.
    pub args: Vec<std::ffi::OsString>,
}

impl WorkerCommand {
    /// This process's executable and arguments.
    pub fn current() -> std::io::Result<WorkerCommand> {
        Ok(WorkerCommand {
            program: std::env::current_exe()?,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// Options of a [`DefaultServer`](crate::DefaultServer). Build with [`ServerOptions::builder`];
/// [`ServerOptions::default`] gives the defaults listed on each setter of [`OptionsBuilder`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    login_wait: Duration,
    read_wait: Duration,
    write_wait: Duration,
    close_wait: Duration,
    max_message_size: usize,
    max_login_message_size: usize,
    outbound_queue: usize,
    outbound_queue_bytes: usize,
    read_buffer_size: usize,
    max_connections: usize,
    duplicate_policy: DuplicatePolicy,
    max_rooms_per_channel: usize,
    room_policy: RoomPolicy,
    backlog: u32,
    backend: Backend,
    worker_command: Option<WorkerCommand>,
    ipc_queue_bytes: usize,
    metrics: bool,
    debug_listen: Option<std::net::SocketAddr>,
    session_window: Duration,
    session_max_messages: usize,
    session_max_bytes: usize,
    session_max_total_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            login_wait: Duration::from_secs(10),
            read_wait: Duration::from_secs(180),
            write_wait: Duration::from_secs(10),
            close_wait: Duration::from_secs(1),
            max_message_size: 4 << 20,
            max_login_message_size: 16 << 10,
            outbound_queue: 1024,
            outbound_queue_bytes: 8 << 20,
            read_buffer_size: 4096,
            max_connections: 1_000_000,
            duplicate_policy: DuplicatePolicy::Reject,
            max_rooms_per_channel: 1024,
            room_policy: RoomPolicy::default(),
            backlog: 1024,
            backend: Backend::InProcess,
            worker_command: None,
            ipc_queue_bytes: 16 << 20,
            metrics: true,
            debug_listen: None,
            session_window: Duration::from_secs(120),
            session_max_messages: 1000,
            session_max_bytes: 1 << 20,
            session_max_total_bytes: 1 << 30,
        }
    }
}

impl ServerOptions {
    /// A builder starting from the defaults.
    pub fn builder() -> OptionsBuilder {
        OptionsBuilder {
            opts: ServerOptions::default(),
        }
    }

    /// Time allowed for the transport upgrade and the login together.
    pub fn login_wait(&self) -> Duration {
        self.login_wait
    }
    /// A channel from which nothing (not even a ping) is read for this long is closed.
    pub fn read_wait(&self) -> Duration {
        self.read_wait
    }
    /// A batch of writes that cannot complete within this time closes the channel.
    pub fn write_wait(&self) -> Duration {
        self.write_wait
    }
    /// After the server sends a close frame, how long it waits for the peer's close.
    pub fn close_wait(&self) -> Duration {
        self.close_wait
    }
    /// The largest frame or message accepted, and the largest payload that can be pushed.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// The largest frame accepted before login: the smaller of its own setting and
    /// [`ServerOptions::max_message_size`].
    pub fn max_login_message_size(&self) -> usize {
        self.max_login_message_size.min(self.max_message_size)
    }
    /// Frames a channel's outbox holds before pushes fail.
    pub fn outbound_queue(&self) -> usize {
        self.outbound_queue
    }
    /// Payload bytes a channel's outbox holds before pushes fail.
    pub fn outbound_queue_bytes(&self) -> usize {
        self.outbound_queue_bytes
    }
    /// Size of each read from a socket (the buffer exists only while reading).
    pub fn read_buffer_size(&self) -> usize {
        self.read_buffer_size
    }
    /// Connections (logging in or logged in) served at once; more are closed on accept.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
    /// What a duplicate login does.
    pub fn duplicate_policy(&self) -> DuplicatePolicy {
        self.duplicate_policy
    }
    /// The most rooms one channel may be in.
    pub fn max_rooms_per_channel(&self) -> usize {
        self.max_rooms_per_channel
    }
    /// What each room's publishes do to members whose outbox is full.
    pub fn room_policy(&self) -> &RoomPolicy {
        &self.room_policy
    }
    /// The listen backlog.
    pub fn backlog(&self) -> u32 {
        self.backlog
    }
    /// Where the listeners run.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }
    /// The program started as a worker (`None`: this program, see [`WorkerCommand::current`]).
    pub fn worker_command(&self) -> Option<&WorkerCommand> {
        self.worker_command.as_ref()
    }
    /// Payload bytes queued towards one worker before the channels routed to it pause reading,
    /// and from a worker towards the master before the worker stops taking new messages.
    pub fn ipc_queue_bytes(&self) -> usize {
        self.ipc_queue_bytes
    }
    /// Whether per-message metrics (messages, bytes, handler time) are kept.
    pub fn metrics(&self) -> bool {
        self.metrics
    }
    /// See [`OptionsBuilder::session_window`].
    pub fn session_window(&self) -> Duration {
        self.session_window
    }

    /// See [`OptionsBuilder::session_max_messages`].
    pub fn session_max_messages(&self) -> usize {
        self.session_max_messages
    }

    /// See [`OptionsBuilder::session_max_bytes`].
    pub fn session_max_bytes(&self) -> usize {
        self.session_max_bytes
    }

    /// See [`OptionsBuilder::session_max_total_bytes`].
    pub fn session_max_total_bytes(&self) -> usize {
        self.session_max_total_bytes
    }

    /// Where the debug listener (`/metrics`, `/debug/pprof/...`) is bound, if anywhere.
    pub fn debug_listen(&self) -> Option<std::net::SocketAddr> {
        self.debug_listen
    }
}

/// Builds [`ServerOptions`]; [`OptionsBuilder::build`] checks the values.
#[derive(Debug, Clone)]
pub struct OptionsBuilder {
    opts: ServerOptions,
}

impl OptionsBuilder {
    /// Upgrade and login deadline. Default 10 s.
    pub fn login_wait(mut self, d: Duration) -> Self {
        self.opts.login_wait = d;
        self
    }
    /// Read deadline, reset by every frame read. Default 3 min. Deadlines past 49 days act as
    /// none (channels keep their read time in 32 bits of milliseconds).
    pub fn read_wait(mut self, d: Duration) -> Self {
        self.opts.read_wait = d;
        self
    }
    /// Deadline for writing one batch. Default 10 s.
    pub fn write_wait(mut self, d: Duration) -> Self {
        self.opts.write_wait = d;
        self
    }
    /// Wait for the peer's close after sending ours. Default 1 s.
    pub fn close_wait(mut self, d: Duration) -> Self {
        self.opts.close_wait = d;
        self
    }
    /// Largest frame or message. Default 4 MiB; at most 4 GiB - 1.
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.opts.max_message_size = n;
        self
    }
    /// Largest frame accepted while the connection logs in, before the acceptor has said who
    /// it is. Default 16 KiB: a login carries a token, and an unauthenticated peer should not
    /// get to send megabytes. A larger login frame is refused with a "too big" close.
    pub fn max_login_message_size(mut self, n: usize) -> Self {
        self.opts.max_login_message_size = n;
        self
    }
    /// Outbox bound in frames. Default 1024.
    pub fn outbound_queue(mut self, n: usize) -> Self {
        self.opts.outbound_queue = n;
        self
    }
    /// Outbox bound in payload bytes. Default 8 MiB. A push into an outbox holding less than
    /// this is accepted whatever its size (up to the maximum message size).
    pub fn outbound_queue_bytes(mut self, n: usize) -> Self {
        self.opts.outbound_queue_bytes = n;
        self
    }
    /// Bytes per socket read. Default 4 KiB.
    pub fn read_buffer_size(mut self, n: usize) -> Self {
        self.opts.read_buffer_size = n;
        self
    }
    /// Connections served at once. Default 1,000,000 (the open-files limit binds first).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.opts.max_connections = n;
        self
    }
    /// Duplicate login policy. Default [`DuplicatePolicy::Reject`].
    pub fn duplicate_policy(mut self, p: DuplicatePolicy) -> Self {
        self.opts.duplicate_policy = p;
        self
    }
    /// The most rooms one channel may be in; a join past it fails with
    /// [`PushError::TooManyRooms`](crate::PushError::TooManyRooms). Default 1024. It
    /// bounds what one client can make the server keep, and the time one leave takes (a
    /// channel's rooms are searched in a list).
    pub fn max_rooms_per_channel(mut self, n: usize) -> Self {
        self.opts.max_rooms_per_channel = n;
        self
    }
    /// What a room's publish does to a member whose outbox is full, chosen per room name when
    /// the room is created: skip it (the default for every room) or close it as a slow
    /// consumer. `RoomPolicy::all(SlowMember::Close)` closes in every room;
    /// `RoomPolicy::new(|name| ...)` decides by name.
    pub fn room_policy(mut self, policy: RoomPolicy) -> Self {
        self.opts.room_policy = policy;
        self
    }
    /// Listen backlog. Default 1024.
    pub fn backlog(mut self, n: u32) -> Self {
        self.opts.backlog = n;
        self
    }

    /// Where the listeners run. Default [`Backend::InProcess`].
    pub fn backend(mut self, b: Backend) -> Self {
        self.opts.backend = b;
        self
    }
    /// The program started as a worker. Default: this program with its arguments.
    pub fn worker_command(mut self, c: WorkerCommand) -> Self {
        self.opts.worker_command = Some(c);
        self
    }
    /// Bound of each IPC queue in payload bytes. Default 16 MiB. Neither direction refuses a
    /// message over it: the side that feeds the queue waits (channels pause reading, a worker
    /// pauses its intake).
    pub fn ipc_queue_bytes(mut self, n: usize) -> Self {
        self.opts.ipc_queue_bytes = n;
        self
    }
    /// Keeps per-message metrics: messages and bytes in and out, and the handler's time per
    /// message ([`crate::metrics`]). Default on. Per-connection figures (connections, logins,
    /// closes, failed pushes) are kept either way.
    pub fn metrics(mut self, on: bool) -> Self {
        self.opts.metrics = on;
        self
    }
    /// Serves `/metrics` (Prometheus text format) and, with the `pprof` feature, CPU profiles
    /// on `/debug/pprof/profile` and `/debug/pprof/flamegraph`, over HTTP at `addr`. Default:
    /// no debug listener. Bind it to a loopback or otherwise private address: it has no
    /// authentication. Port 0 picks a free port
    /// ([`ServerHandle::debug_addr`](crate::ServerHandle::debug_addr) tells which).
    pub fn debug_listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.opts.debug_listen = Some(addr);
        self
    }

    /// Checks the values and returns the options.
    /// How long a session whose connection was lost waits for its client to resume it
    /// (default 120 s); then it ends. See [`crate::resume`].
    pub fn session_window(mut self, d: Duration) -> Self {
        self.opts.session_window = d;
        self
    }

    /// Messages one session holds at most, sent or waiting and not acknowledged (default
    /// 1,000); past it the oldest are dropped, and a resume from before them is told "new".
    pub fn session_max_messages(mut self, n: usize) -> Self {
        self.opts.session_max_messages = n;
        self
    }

    /// Payload bytes one session holds at most (default 1 MiB); past it the oldest are
    /// dropped (the newest is always kept).
    pub fn session_max_bytes(mut self, n: usize) -> Self {
        self.opts.session_max_bytes = n;
        self
    }

    /// Bytes all sessions of the server hold at most, payloads and each held message's
    /// entry (default 1 GiB; a room message's payload counts once per member holding it).
    /// From a thirty-second below it, the oldest messages of the largest sessions are dropped
    /// until the total is a sixteenth below it.
    pub fn session_max_total_bytes(mut self, n: usize) -> Self {
        self.opts.session_max_total_bytes = n;
        self
    }

    /// The options, or the first value that cannot work.
    pub fn build(self) -> Result<ServerOptions, OptionsError> {
        let o = &self.opts;
        let err = |name, reason: &str| {
            Err(OptionsError {
                name,
                reason: reason.to_string(),
            })
        };
        for (name, d) in [
            ("login_wait", o.login_wait),
            ("read_wait", o.read_wait),
            ("write_wait", o.write_wait),
            ("close_wait", o.close_wait),
        ] {
            if d.is_zero() {
                return err(name, "must be more than zero");
            }
        }
        if o.max_message_size == 0 || o.max_message_size > u32::MAX as usize {
            return err("max_message_size", "must be between 1 and 4294967295");
        }
        if o.max_login_message_size == 0 {
            return err("max_login_message_size", "must be at least 1");
        }
        if o.outbound_queue == 0 {
            return err("outbound_queue", "must be at least 1");
        }
        if o.outbound_queue_bytes == 0 {
            return err("outbound_queue_bytes", "must be at least 1");
        }
        if o.read_buffer_size < 64 {
            return err("read_buffer_size", "must be at least 64");
        }
        if o.max_connections == 0 {
            return err("max_connections", "must be at least 1");
        }
        if o.max_rooms_per_channel == 0 {
            return err("max_rooms_per_channel", "must be at least 1");
        }
        if o.session_window.is_zero() {
            return err("session_window", "must be more than zero");
        }
        if o.session_max_messages == 0 || o.session_max_messages > u32::MAX as usize {
            return err("session_max_messages", "must be between 1 and 4294967295");
        }
        if o.session_max_bytes == 0 {
            return err("session_max_bytes", "must be at least 1");
        }
        if o.session_max_total_bytes < 1 << 16 {
            return err("session_max_total_bytes", "must be at least 65536");
        }
        if let Backend::UnixDatagram {
            workers,
            ipc_max_size,
            ..
        } = o.backend
        {
            if !(1..=1024).contains(&workers) {
                return err("workers", "must be between 1 and 1024");
            }
            if !(1024..=4 << 20).contains(&ipc_max_size) {
                return err("ipc_max_size", "must be between 1024 and 4194304");
            }
        }
        if o.ipc_queue_bytes == 0 {
            return err("ipc_queue_bytes", "must be at least 1");
        }
        Ok(self.opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kims() {
        let o = ServerOptions::default();
        assert_eq!(o.login_wait(), Duration::from_secs(10));
        assert_eq!(o.read_wait(), Duration::from_secs(180));
        assert_eq!(o.write_wait(), Duration::from_secs(10));
        assert_eq!(o.max_message_size(), 4 << 20);
        assert_eq!(o.duplicate_policy(), DuplicatePolicy::Reject);
    }

    #[test]
    fn builder_refuses_values_that_cannot_work() {
        let e = ServerOptions::builder()
            .read_wait(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(e.name, "read_wait");
        let e = ServerOptions::builder()
            .max_message_size(1 << 33)
            .build()
            .unwrap_err();
        assert_eq!(e.name, "max_message_size");
        assert!(e.to_string().contains("max_message_size"));
        let o = ServerOptions::builder()
            .outbound_queue(3)
            .duplicate_policy(DuplicatePolicy::Kick)
            .build()
            .unwrap();
        assert_eq!(o.outbound_queue(), 3);
        let e = ServerOptions::builder()
            .backend(Backend::unix_datagram(0))
            .build()
            .unwrap_err();
        assert_eq!(e.name, "workers");
        let e = ServerOptions::builder()
            .backend(Backend::UnixDatagram {
                workers: 2,
                ipc_max_size: 100,
                dispatch: Dispatch::Fixed,
            })
            .build()
            .unwrap_err();
        assert_eq!(e.name, "ipc_max_size");
        assert_eq!(o.duplicate_policy(), DuplicatePolicy::Kick);
    }
}
