//! Shared pieces of kim's example binaries: the mock protocol (the login and message rules that
//! benchmarks and outside tools rely on), transport selection, and log setup.
//!
//! The mock protocol:
//! - the client's first frame is its user id, 1 to 64 bytes of UTF-8; the server answers one
//!   binary frame `ok`, or closes with a reason (a bad id, "channel id is repeated", or
//!   "login timeout");
//! - after login every text or binary frame is echoed with the same opcode, except
//!   `@<id> <text>`, which is pushed to channel `<id>` as `<sender id>: <text>`; when `<id>` is
//!   not connected the sender gets `offline <id>`;
//! - with `--cluster nats://HOST:PORT --node NAME` the server is one node of a cluster and all of
//!   this spans nodes: `@<id>` reaches `<id>` on any node (`offline <id>` when no node holds
//!   it; `unavailable <id>: <reason>` while the cluster cannot be asked), room publishes reach
//!   members on every node, and a duplicate login on another node is refused with "channel id
//!   is repeated" (or kicks the older one, with `--kick`);
//! - `/join <room>`, `/leave <room>` and `#<room> <text>` work with rooms ([`rooms`]);
//! - with `--presence` (off by default), every other channel is told `<id> joined` when a
//!   channel logs in and `<id> left` when it is gone, as text frames ([`Presence`]);
//! - login `<id> session` begins a session and `<id> resume <token> <seq>` resumes one: every
//!   frame the server sends is then numbered, and held until `/ack <seq>` ([`sessions`]).
#![warn(missing_docs)]

/// The README's code, compiled as a doctest so that it stays true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The code of docs/traits.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/traits.md")]
#[cfg(doctest)]
pub struct DocsTraits;

/// The code of docs/transports.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/transports.md")]
#[cfg(doctest)]
pub struct DocsTransports;

/// The code of docs/rooms.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/rooms.md")]
#[cfg(doctest)]
pub struct DocsRooms;

/// The code of docs/sessions.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/sessions.md")]
#[cfg(doctest)]
pub struct DocsSessions;

/// The code of docs/process-mode.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/process-mode.md")]
#[cfg(doctest)]
pub struct DocsProcessMode;

/// The code of docs/cluster.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/cluster.md")]
#[cfg(doctest)]
pub struct DocsCluster;

/// The code of docs/tls.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/tls.md")]
#[cfg(doctest)]
pub struct DocsTls;

/// The code of docs/compression.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/compression.md")]
#[cfg(doctest)]
pub struct DocsCompression;

/// The code of docs/observability.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/observability.md")]
#[cfg(doctest)]
pub struct DocsObservability;

/// The code of docs/limits.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/limits.md")]
#[cfg(doctest)]
pub struct DocsLimits;

/// The code of docs/chat-example.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/chat-example.md")]
#[cfg(doctest)]
pub struct DocsChatExample;

/// The code of docs/testing.md, compiled as a doctest so that it stays true.
#[doc = include_str!("../../docs/testing.md")]
#[cfg(doctest)]
pub struct DocsTesting;

/// The code of kim-client's README (clients/rust), compiled as a doctest so that it stays true.
#[doc = include_str!("../../clients/rust/README.md")]
#[cfg(doctest)]
pub struct DocsRustClient;

pub mod rooms;
pub mod sessions;
pub mod throttle;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kim_core::{
    Accepted, Acceptor, Channel, Frame, LoginConn, MessageListener, PushError, Reject,
    StateListener,
};
use throttle::Throttle;

/// The longest user id the mock protocol accepts, in bytes.
pub const MAX_ID_LEN: usize = 64;

pub use rooms::{
    parse_room_command, run_room_command, BroadcastListener, JoinBroadcast, RoomCommand,
    BROADCAST_ROOM,
};

/// The mock protocol's login: the first frame is the user id.
#[derive(Debug, Clone, Copy, Default)]
pub struct MockAcceptor;

impl Acceptor for MockAcceptor {
    async fn accept(&self, login: &mut LoginConn<'_>) -> Result<Accepted, Reject> {
        let frame = login.read_frame().await?;
        let text = std::str::from_utf8(&frame.payload)
            .map_err(|_| Reject::new("invalid user id: not UTF-8"))?;
        let (id, session) = sessions::parse_login(text);
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(Reject::new(format!(
                "invalid user id: must be 1 to {MAX_ID_LEN} bytes"
            )));
        }
        Ok(match session {
            // The session's answer (`ok <token>`, `resumed ...`, `new ...`) is the codec's.
            Some(session) => Accepted::new(id).with_session(session),
            None => Accepted::new(id).with_reply(Frame::binary(Bytes::from_static(b"ok"))),
        })
    }
}

/// The mock protocol's messages: echo, `@<id> <text>` to push to another channel, and the
/// room commands.
#[derive(Debug, Clone, Copy, Default)]
pub struct MockListener;

/// Splits `@<id> <text>` into the id and the text.
pub fn parse_push(payload: &[u8]) -> Option<(&str, &[u8])> {
    let rest = payload.strip_prefix(b"@")?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let id = std::str::from_utf8(&rest[..space]).ok()?;
    (!id.is_empty()).then_some((id, &rest[space + 1..]))
}

impl MessageListener for MockListener {
    async fn receive(&self, agent: &Channel, message: Frame) {
        if let Some(command) = parse_room_command(&message.payload) {
            return run_room_command(agent, command, &message).await;
        }
        let Some((to, text)) = parse_push(&message.payload) else {
            if let Err(e) = agent.push_frame(message) {
                log_echo_failed(agent, &e);
            }
            return;
        };
        let sender = agent.id().as_str();
        let mut out = BytesMut::with_capacity(sender.len() + 2 + text.len());
        out.put_slice(sender.as_bytes());
        out.put_slice(b": ");
        out.put_slice(text);
        let frame = Frame::new(message.op, out.freeze());
        match agent.server().push_to(to, frame).await {
            Ok(()) => {}
            Err(PushError::NotFound(_) | PushError::Closed) => {
                let reply = Frame::new(message.op, format!("offline {to}"));
                let _ = agent.push_frame(reply);
            }
            Err(PushError::Unavailable(e)) => {
                let reply = Frame::new(message.op, format!("unavailable {to}: {e}"));
                let _ = agent.push_frame(reply);
            }
            Err(e) => {
                // A client that floods a slow reader fails a push per message: one line a
                // second says how many.
                static PUSH_FAILED: Throttle = Throttle::new();
                if let Some(suppressed) = PUSH_FAILED.allow() {
                    tracing::warn!(from = %agent.id(), %to, error = %e, suppressed, "push failed");
                }
            }
        }
    }
}

/// Logs an echo that could not be queued, at most once a second.
fn log_echo_failed(agent: &Channel, e: &PushError) {
    static ECHO_FAILED: Throttle = Throttle::new();
    if tracing::enabled!(tracing::Level::DEBUG) {
        if let Some(suppressed) = ECHO_FAILED.allow() {
            tracing::debug!(id = %agent.id(), error = %e, suppressed, "echo not queued");
        }
    }
}

/// Echoes every message back with its opcode (the echo server's listener).
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoListener;

impl MessageListener for EchoListener {
    async fn receive(&self, agent: &Channel, message: Frame) {
        if let Err(e) = agent.push_frame(message) {
            log_echo_failed(agent, &e);
        }
    }
}

/// Logs every login and disconnect at debug level.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogState;

impl StateListener for LogState {
    async fn login(&self, agent: &Channel) {
        tracing::debug!(id = %agent.id(), "logged in");
    }

    async fn disconnect(&self, agent: &Channel) {
        tracing::debug!(id = %agent.id(), "disconnected");
    }
}

/// Tells every other channel who comes and goes, as text frames `<id> joined` and `<id> left`
/// (`mock-server --presence`; off by default, so the mock protocol is unchanged without it).
/// It runs wherever the state listener runs: in-process, or in a worker process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presence;

impl Presence {
    fn tell_others(agent: &Channel, what: &str) {
        let text = format!("{} {what}", agent.id());
        agent.server().channels().for_each(|other| {
            if other.id() != agent.id() {
                let _ = other.push_text(text.clone());
            }
        });
    }
}

impl StateListener for Presence {
    async fn login(&self, agent: &Channel) {
        Presence::tell_others(agent, "joined");
    }

    async fn disconnect(&self, agent: &Channel) {
        Presence::tell_others(agent, "left");
    }
}

/// The transports the examples can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Raw TCP frames: `[op u8][len u32 BE][payload]`.
    Tcp,
    /// Websocket, upgraded on the TCP stream.
    Ws,
}

/// Server flags shared by mock-server and echo-server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The transport to serve.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: Transport,
    /// The address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// Seconds allowed for upgrade and login.
    #[arg(long, default_value_t = 10.0)]
    pub login_wait: f64,
    /// Seconds without any frame read before a channel is closed.
    #[arg(long, default_value_t = 180.0)]
    pub read_wait: f64,
    /// Seconds allowed for a batch of writes.
    #[arg(long, default_value_t = 10.0)]
    pub write_wait: f64,
    /// Connections served at once.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_connections: usize,
    /// The largest message accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_message_size: usize,
    /// On a duplicate login, close the older channel instead of refusing the new one.
    #[arg(long)]
    pub kick: bool,
    /// Worker threads of the runtime (default: one per core); 1 serves everything on the main
    /// thread, with tokio's current-thread runtime.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds to wait for channels to close on shutdown (Ctrl-C or SIGTERM).
    #[arg(long, default_value_t = 5.0)]
    pub shutdown_wait: f64,
    /// Where the message and state listeners run: in this process, or in worker processes
    /// fed over Unix datagrams (process mode).
    #[arg(long, value_enum, default_value = "inproc")]
    pub backend: BackendArg,
    /// Worker processes (with `--backend dgram`).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Largest IPC datagram payload in bytes (with `--backend dgram`).
    #[arg(long, default_value_t = kim_core::Backend::DEFAULT_IPC_MAX_SIZE)]
    pub ipc_max_size: usize,
    /// Bytes queued towards a worker (and from a worker towards the master) before the
    /// sender waits (with `--backend dgram`).
    #[arg(long, default_value_t = 16 << 20)]
    pub ipc_queue_bytes: usize,
    /// Which worker handles a message (with `--backend dgram`).
    #[arg(long, value_enum, default_value = "fixed")]
    pub dispatch: DispatchArg,
    /// Per-message metrics (messages, bytes, handler time); `off` keeps only the
    /// per-connection ones.
    #[arg(long, value_enum, default_value = "on")]
    pub metrics: Switch,
    /// Serve `/metrics` and CPU profiles (`/debug/pprof/profile?seconds=N`,
    /// `/debug/pprof/flamegraph?seconds=N`) over HTTP at this address, e.g. 127.0.0.1:6060.
    /// It has no authentication: keep it on a private address.
    #[arg(long)]
    pub debug_listen: Option<std::net::SocketAddr>,
    /// Join a cluster of gateway nodes over NATS at this URL (e.g. nats://127.0.0.1:4222;
    /// nats-server must run with JetStream, `-js`): pushes, rooms and duplicate logins then
    /// span every node. Needs `--node`.
    #[arg(long, requires = "node")]
    pub cluster: Option<String>,
    /// This node's name in the cluster: unique, and the same across restarts.
    #[arg(long)]
    pub node: Option<String>,
    /// The cluster's name (nodes of different clusters can share one NATS server).
    #[arg(long, default_value = "kim")]
    pub cluster_name: String,
    /// Serve over TLS with this certificate chain (PEM, the server's certificate first): wss,
    /// or raw TCP frames over TLS. Needs `--tls-key`. SIGHUP reads both files again: new
    /// handshakes get the new certificate, channels stay; a bad file is refused and logged.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Websocket: accept permessage-deflate offers (browsers make one on every connection).
    /// Each message is compressed on its own, so connections keep no compression state.
    #[arg(long)]
    pub deflate: bool,
    /// With `--deflate`: messages shorter than this many bytes go uncompressed.
    #[arg(long, default_value_t = kim_ws::Compression::DEFAULT_THRESHOLD)]
    pub deflate_threshold: usize,
    /// With `--deflate`: the deflate level, 1 (fastest) to 9 (smallest).
    #[arg(long, default_value_t = kim_ws::Compression::DEFAULT_LEVEL)]
    pub deflate_level: u8,
    /// With `--deflate`: keep a compression context per connection for what the server
    /// sends, with a window of 2^BITS bytes (9 to 15) and `--deflate-mem-level`.
    #[arg(long, value_name = "BITS")]
    pub deflate_takeover: Option<u8>,
    /// With `--deflate-takeover`: deflate's memory level, 1 to 9 (sizes its tables).
    #[arg(long, default_value_t = 1)]
    pub deflate_mem_level: u8,
    /// Seconds a session whose connection was lost waits for its client to resume it.
    #[arg(long, default_value_t = 120.0)]
    pub session_window: f64,
    /// Messages a session holds at most (sent and not acknowledged); past it the oldest go.
    #[arg(long, default_value_t = 1000)]
    pub session_max_messages: usize,
    /// Payload bytes a session holds at most; past it the oldest messages go.
    #[arg(long, default_value_t = 1 << 20)]
    pub session_max_bytes: usize,
    /// Bytes all sessions hold at most (payloads and entries); past it the oldest messages of
    /// the largest sessions go.
    #[arg(long, default_value_t = 1 << 30)]
    pub session_max_total_bytes: usize,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// Where the listeners run (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// On the server's runtime.
    Inproc,
    /// In worker processes over Unix datagrams.
    Dgram,
}

/// How messages are spread over workers (`--dispatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DispatchArg {
    /// A channel's messages all go to one worker, in order.
    Fixed,
    /// Each message to the next worker.
    RoundRobin,
    /// Each message to the worker with the fewest unhandled messages.
    LeastBusy,
}

impl ServerArgs {
    /// The websocket upgrader these flags describe.
    pub fn ws_upgrader(&self) -> kim_ws::WsUpgrader {
        let upgrader = kim_ws::WsUpgrader::new();
        if !self.deflate {
            return upgrader;
        }
        let mut c = kim_ws::Compression::new()
            .with_threshold(self.deflate_threshold)
            .with_level(self.deflate_level);
        if let Some(bits) = self.deflate_takeover {
            c = c.with_context_takeover(bits, self.deflate_mem_level);
        }
        upgrader.with_compression(c)
    }

    /// The server options these flags describe.
    pub fn options(&self) -> anyhow::Result<kim_core::ServerOptions> {
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v).map_err(|e| anyhow::anyhow!("--{name} {v}: {e}"))
        };
        let mut b = kim_core::ServerOptions::builder();
        if let Some(addr) = self.debug_listen {
            b = b.debug_listen(addr);
        }
        Ok(b.metrics(self.metrics == Switch::On)
            .login_wait(secs("login-wait", self.login_wait)?)
            .read_wait(secs("read-wait", self.read_wait)?)
            .write_wait(secs("write-wait", self.write_wait)?)
            .max_connections(self.max_connections)
            .max_message_size(self.max_message_size)
            .ipc_queue_bytes(self.ipc_queue_bytes)
            .session_window(secs("session-window", self.session_window)?)
            .session_max_messages(self.session_max_messages)
            .session_max_bytes(self.session_max_bytes)
            .session_max_total_bytes(self.session_max_total_bytes)
            .duplicate_policy(if self.kick {
                kim_core::DuplicatePolicy::Kick
            } else {
                kim_core::DuplicatePolicy::Reject
            })
            .backend(match self.backend {
                BackendArg::Inproc => kim_core::Backend::InProcess,
                BackendArg::Dgram => kim_core::Backend::UnixDatagram {
                    workers: self.workers,
                    ipc_max_size: self.ipc_max_size,
                    dispatch: match self.dispatch {
                        DispatchArg::Fixed => kim_core::Dispatch::Fixed,
                        DispatchArg::RoundRobin => kim_core::Dispatch::RoundRobin,
                        DispatchArg::LeastBusy => kim_core::Dispatch::LeastBusy,
                    },
                },
            })
            .build()?)
    }

    /// The runtime these flags describe: with one thread, tokio's current-thread runtime,
    /// which serves everything on the thread that calls `block_on`; otherwise the
    /// multi-thread runtime.
    ///
    /// One thread runs no second thread to hand work to: no work-stealing queues, and a
    /// process with a single thread lets the kernel skip the reference count it otherwise
    /// takes on the socket for every send and receive.
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        let mut b = match self.threads {
            Some(1) => tokio::runtime::Builder::new_current_thread(),
            Some(n) => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n.max(1));
                b
            }
            None => tokio::runtime::Builder::new_multi_thread(),
        };
        Ok(b.enable_all().build()?)
    }
}

/// Runs a server with the given listeners on the transport the flags name, until Ctrl-C or
/// SIGTERM; then shuts it down gracefully. Prints `listening on ADDR` first (tools that start
/// the server with port 0 read it).
pub async fn serve<A, L, S>(
    args: &ServerArgs,
    acceptor: A,
    listener: L,
    state: S,
) -> anyhow::Result<()>
where
    A: kim_core::Acceptor,
    L: MessageListener,
    S: StateListener,
{
    let ws = args.ws_upgrader();
    serve_with(
        args,
        ws,
        acceptor,
        listener,
        state,
        sessions::MockCodec,
        std::future::ready(Ok(())),
        |_: &Started<'_>| Ok(()),
    )
    .await
}

/// The server as it starts, for [`serve_with`]'s `started`.
#[derive(Debug)]
pub struct Started<'a> {
    /// The running server.
    pub handle: &'a kim_core::ServerHandle,
    /// The certificate it serves with `--tls-cert` (reloaded on SIGHUP), for other listeners
    /// of the process.
    pub tls: Option<&'a kim_tls::TlsConfig>,
}

/// Like [`serve`] (which speaks the mock protocol's sessions, [`sessions::MockCodec`]), with
/// the websocket transport `ws` (a hook, compression: start from
/// [`ServerArgs::ws_upgrader`]) when the flags choose websocket, sessions encoded by `codec`,
/// `before` awaited before the
/// server listens (in the process that serves only: never in a worker process), and `started`
/// called once the server listens, before `listening on ADDR` is printed (to start what serves
/// beside it).
#[allow(clippy::too_many_arguments)]
pub async fn serve_with<A, L, S, C, B, F>(
    args: &ServerArgs,
    ws: kim_ws::WsUpgrader,
    acceptor: A,
    listener: L,
    state: S,
    codec: C,
    before: B,
    started: F,
) -> anyhow::Result<()>
where
    A: kim_core::Acceptor,
    L: MessageListener,
    S: StateListener,
    C: kim_core::SessionCodec,
    B: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    F: FnOnce(&Started<'_>) -> anyhow::Result<()>,
{
    let options = args.options()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = kim_tls::TlsConfig::from_pem_files(cert, key)?;
            reload_on_sighup(tls.clone())?;
            Some(tls)
        }
        _ => None,
    };
    let (a, l, s, o) = (acceptor, listener, (state, codec), options);
    let started = |handle: &kim_core::ServerHandle| {
        let tls = tls.as_ref();
        started(&Started { handle, tls })
    };
    match (args.transport, tls.clone()) {
        (Transport::Tcp, None) => {
            run(args, kim_tcp::TcpUpgrader, a, l, s, o, before, started).await
        }
        (Transport::Ws, None) => run(args, ws, a, l, s, o, before, started).await,
        (Transport::Tcp, Some(tls)) => {
            let tls = kim_tls::TlsUpgrader::new(kim_tcp::TcpUpgrader, &tls);
            run(args, tls, a, l, s, o, before, started).await
        }
        (Transport::Ws, Some(tls)) => {
            let wss = kim_tls::TlsUpgrader::new(ws, &tls);
            run(args, wss, a, l, s, o, before, started).await
        }
    }
}

/// Reads the certificate files again on every SIGHUP; a refused reload is logged and the
/// certificate in use stays.
fn reload_on_sighup(tls: kim_tls::TlsConfig) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => println!("tls certificate reloaded"),
                Err(e) => eprintln!("tls certificate not reloaded: {e}"),
            }
        }
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run<U, A, L, S, C>(
    args: &ServerArgs,
    upgrader: U,
    acceptor: A,
    listener: L,
    (state, codec): (S, C),
    options: kim_core::ServerOptions,
    before: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    started: impl FnOnce(&kim_core::ServerHandle) -> anyhow::Result<()>,
) -> anyhow::Result<()>
where
    U: kim_core::Upgrader<tokio::net::TcpStream>,
    A: kim_core::Acceptor,
    L: MessageListener,
    S: StateListener,
    C: kim_core::SessionCodec,
{
    let mut server = kim_core::DefaultServer::new(upgrader, listener)
        .with_acceptor(acceptor)
        .with_state_listener(state)
        .with_session_codec(codec)
        .with_options(options)
        .with_debug(kim_debug::Debug::new())
        .before_serving(before);
    if let (Some(url), Some(node)) = (&args.cluster, &args.node) {
        let options = kim_nats::NatsOptions::new(url.as_str(), node.as_str())
            .cluster(args.cluster_name.as_str());
        let (url, node) = (url.clone(), node.clone());
        // Connected by the process that serves only: in process mode, the workers never are.
        server = server.with_cluster_connect(async move {
            let cluster = kim_nats::NatsCluster::connect(options).await?;
            println!("cluster node {node} on {url}");
            Ok::<_, kim_nats::NatsError>(cluster)
        });
    }
    let wait = Duration::try_from_secs_f64(args.shutdown_wait)
        .map_err(|e| anyhow::anyhow!("--shutdown-wait {}: {e}", args.shutdown_wait))?;
    server
        .run(args.listen.as_str(), |handle| async move {
            if let Some(debug) = handle.debug_addr() {
                println!("debug listening on {debug}");
            }
            started(&handle)?;
            println!("listening on {}", handle.local_addr());
            shutdown_signal().await;
            let report = handle.shutdown(wait).await;
            println!(
                "shut down: {} channels closed, {} forced",
                report.channels, report.forced
            );
            if let Some(ipc) = handle.ipc_stats() {
                println!(
                    "workers: {} respawns, {} reloads, {} dispatched, {} handled, {} pushes \
                     ({} refused), orphan chunks {}, expired partials {}",
                    ipc.respawns,
                    ipc.reloads,
                    ipc.dispatched,
                    ipc.handled,
                    ipc.pushes,
                    ipc.push_failed,
                    ipc.worker_recv.orphan_chunks + ipc.master_recv.orphan_chunks,
                    ipc.worker_recv.expired + ipc.master_recv.expired,
                );
            }
            Ok(())
        })
        .await
}

/// Installs a log subscriber filtered by `RUST_LOG` (default `info`), writing to stderr (in
/// color only on a terminal).
///
/// Directives by target and level (`info`, `warn,kim_core=debug`) use a static filter, which
/// costs nothing when a span is entered; only directives that select spans or fields
/// (`[channel{id=alice}]=debug`) use `EnvFilter`, whose span tracking takes a lock on every
/// enter and exit of every span, kim's per-channel spans included.
pub fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    let ansi = std::io::stderr().is_terminal();
    macro_rules! fmt {
        () => {
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
        };
    }
    let dynamic = spec.contains('[') || spec.contains('{');
    let targets = (!dynamic)
        .then(|| spec.parse::<tracing_subscriber::filter::Targets>().ok())
        .flatten();
    // A global filter, not a per-layer one: per-layer filtering looks the span up on every
    // enter and exit.
    match targets {
        Some(t) => tracing_subscriber::registry().with(t).with(fmt!()).init(),
        None => {
            let filter = tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
                eprintln!("RUST_LOG={spec:?}: {e}; logging at info");
                tracing_subscriber::EnvFilter::new("info")
            });
            tracing_subscriber::registry()
                .with(filter)
                .with(fmt!())
                .init()
        }
    }
}

/// Tells kim the example servers run on jemalloc (kim-heap-profile: about 300 bytes less per
/// idle connection than glibc's allocator; `kim_heap_bytes` and the trims are jemalloc's),
/// with its heap profiler on from the start under the `heap-profile` feature
/// (`/debug/pprof/heap`). Called first thing in `main`.
pub fn install_allocator() {
    #[cfg(feature = "heap-profile")]
    kim_heap_profile::install_with_profiler();
    #[cfg(not(feature = "heap-profile"))]
    kim_heap_profile::install();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_syntax() {
        assert_eq!(
            parse_push(b"@bob hi there"),
            Some(("bob", &b"hi there"[..]))
        );
        assert_eq!(parse_push(b"@bob "), Some(("bob", &b""[..])));
        assert_eq!(parse_push(b"@ hi"), None);
        assert_eq!(parse_push(b"@bob"), None);
        assert_eq!(parse_push(b"bob hi"), None);
    }
}
