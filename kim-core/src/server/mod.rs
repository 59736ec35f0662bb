//! The server: [`DefaultServer`] builds it and starts it; its parts each have a file.
//!
//! - `accept`: the accept loop, and the refusal of connections over `max_connections`;
//! - `login`: a connection's upgrade and login under `login_wait`, and its channel's entry in
//!   the channel map;
//! - `sweep`: the coarse clock and read deadlines;
//! - `core`: what the server's tasks and its handles share, and its lifecycle;
//! - `handle`: [`ServerHandle`], the app's handle to the running server;
//! - `setup`: what the serving process does before it listens;
//! - `gateway`: what every connection task shares.
//!
//! [`DefaultServer`] is generic over the transport's [`Upgrader`] and the app's three traits,
//! so every call into them is statically dispatched; [`ServerHandle`] is not generic, so it
//! can be stored anywhere.

mod accept;
pub(crate) mod core;
mod gateway;
pub(crate) mod handle;
mod log;
mod login;
mod setup;
mod sweep;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};
use tracing::{info, warn};

use crate::app::{Acceptor, DefaultAcceptor, MessageListener, StateListener};
use crate::channel::courier::{Context, Courier};
use crate::channel::sessions::Sessions;
use crate::channel::Limits;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::conn::FrameWriter;
use crate::debug::{DebugService, NoDebugService};
use crate::error::ServerError;
use crate::hub::cluster::ClusterCourier;
use crate::hub::local::LocalCourier;
use crate::hub::Hub;
use crate::ipc::is_worker;
use crate::ipc::master::Master;
use crate::ipc::worker::{run_worker, WorkerEnv};
use crate::metrics::Metrics;
use crate::options::{Backend, ServerOptions};
use crate::resume::{DefaultCodec, SessionCodec};
use crate::room::registry::{Encoder, Rooms};
use crate::route::{InProcess, Route};
use crate::server::accept::accept_loop;
use crate::server::core::{Core, Lifecycle};
use crate::server::gateway::Gateway;
use crate::server::log::TARGET;
use crate::server::setup::Setup;
use crate::server::sweep::sweep;
use crate::upgrade::Upgrader;

pub use handle::{ServerHandle, ServerStats, ShutdownReport};

/// A gateway server: a transport ([`Upgrader`]), a login ([`Acceptor`]), a message handler
/// ([`MessageListener`]) and a disconnect handler ([`StateListener`]).
///
/// ```no_run
/// use kim_core::{Channel, DefaultServer, Frame, MessageListener, Upgrader};
///
/// struct Echo;
///
/// impl MessageListener for Echo {
///     async fn receive(&self, agent: &Channel, message: Frame) {
///         let _ = agent.push_frame(message);
///     }
/// }
///
/// async fn run(
///     transport: impl Upgrader<tokio::net::TcpStream>,
/// ) -> Result<(), Box<dyn std::error::Error>> {
///     let handle = DefaultServer::new(transport, Echo).start("127.0.0.1:8000").await?;
///     tokio::signal::ctrl_c().await?;
///     handle.shutdown(std::time::Duration::from_secs(5)).await;
///     Ok(())
/// }
/// ```
pub struct DefaultServer<U, A, L, S> {
    upgrader: U,
    acceptor: A,
    message_listener: L,
    state_listener: S,
    options: ServerOptions,
    /// What the serving process does before it listens (never a worker).
    setup: Setup,
    /// What runs beside the server for its operator.
    debug: Arc<dyn DebugService>,
    /// The bytes of sessions on the wire.
    session_codec: Arc<dyn SessionCodec>,
}

impl<U, L> DefaultServer<U, DefaultAcceptor, L, ()>
where
    U: Upgrader<TcpStream>,
    L: MessageListener,
{
    /// A server with the default acceptor (no login, a fresh id per connection), no state
    /// listener and the default options.
    pub fn new(upgrader: U, message_listener: L) -> Self {
        DefaultServer {
            upgrader,
            acceptor: DefaultAcceptor,
            message_listener,
            state_listener: (),
            options: ServerOptions::default(),
            setup: Setup::default(),
            debug: Arc::new(NoDebugService),
            session_codec: Arc::new(DefaultCodec),
        }
    }
}

impl<U, A, L, S> DefaultServer<U, A, L, S>
where
    U: Upgrader<TcpStream>,
    A: Acceptor,
    L: MessageListener,
    S: StateListener,
{
    /// Sets the acceptor that logs connections in.
    pub fn with_acceptor<A2: Acceptor>(self, acceptor: A2) -> DefaultServer<U, A2, L, S> {
        DefaultServer {
            upgrader: self.upgrader,
            acceptor,
            message_listener: self.message_listener,
            state_listener: self.state_listener,
            options: self.options,
            setup: self.setup,
            debug: self.debug,
            session_codec: self.session_codec,
        }
    }

    /// Sets the listener that hears of disconnects.
    pub fn with_state_listener<S2: StateListener>(
        self,
        state_listener: S2,
    ) -> DefaultServer<U, A, L, S2> {
        DefaultServer {
            upgrader: self.upgrader,
            acceptor: self.acceptor,
            message_listener: self.message_listener,
            state_listener,
            options: self.options,
            setup: self.setup,
            debug: self.debug,
            session_codec: self.session_codec,
        }
    }

    /// Sets the options.
    pub fn with_options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs `service` beside the server for its operator (the `kim-debug` crate's debug
    /// listener and allocator care): started before the server listens, on the
    /// [`debug_listen`](crate::OptionsBuilder::debug_listen) address if one is set, and
    /// stopped at the end of its shutdown. Without one, a `debug_listen` address fails the
    /// start.
    pub fn with_debug(mut self, service: impl DebugService) -> Self {
        self.debug = Arc::new(service);
        self
    }

    /// Sets the bytes of sessions on the wire (see [`crate::resume`]); the default is
    /// [`DefaultCodec`], `PROTOCOL.md`'s encoding. Sessions are begun by the acceptor
    /// ([`Accepted::with_session`](crate::Accepted::with_session)); a server whose acceptor
    /// never asks for one numbers nothing.
    pub fn with_session_codec(mut self, codec: impl SessionCodec) -> Self {
        self.session_codec = Arc::new(codec);
        self
    }

    /// Makes this server a node of a cluster: pushes, rooms, duplicate logins and presence
    /// then span every node (see [`crate::cluster`]). Without it the server is a single node.
    /// In process mode the master is the node, and its workers' pushes and publishes reach
    /// the cluster through it; a worker's [`Hub::push_to`] reaches its own server's channels
    /// only.
    pub fn with_cluster(mut self, cluster: impl Cluster) -> Self {
        self.setup.cluster_ready(Arc::new(cluster));
        self
    }

    /// Makes this server a node of the cluster `connect` resolves to, connected when the
    /// server starts serving: in process mode, by the master only (a worker never polls
    /// `connect`, so it opens no connection of its own). A failed connection fails the start
    /// with [`ServerError::Setup`].
    pub fn with_cluster_connect<C, E>(
        mut self,
        connect: impl Future<Output = Result<C, E>> + Send + 'static,
    ) -> Self
    where
        C: Cluster,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.setup.cluster_connect(connect);
        self
    }

    /// Work the serving process does before it listens: awaited by [`DefaultServer::start`]
    /// in the process that holds the connections (in-process, or the master in process mode),
    /// never in a worker. For what only that process may do: clean up after a crash, claim a
    /// resource. An error fails the start with [`ServerError::Setup`].
    pub fn before_serving<E>(
        mut self,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) -> Self
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.setup.task(task);
        self
    }

    /// Runs the server in whichever process this is, and returns when it is done: the one
    /// entry point that serves in every mode.
    ///
    /// In the process that serves (in-process, or the master in process mode), binds `addr`,
    /// starts the server as [`DefaultServer::start`] does, and runs `serve` with its handle:
    /// the app's life after the start (wait for a signal, shut down). In a worker process
    /// (process mode), runs the app's listeners for the master until the master stops it;
    /// `serve` is not called. Either way it returns to the caller, so code after it runs in
    /// every process, and code before it too: nothing in `main` needs to know which process
    /// it is in.
    pub async fn run<T, F, Fut, E>(self, addr: T, serve: F) -> Result<(), E>
    where
        T: ToSocketAddrs + std::fmt::Display,
        F: FnOnce(ServerHandle) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: From<ServerError>,
    {
        if let Some(env) = WorkerEnv::from_env() {
            return Ok(self.run_worker(env).await?);
        }
        let handle = self.start(addr).await?;
        serve(handle).await
    }

    /// Binds `addr` and starts serving in the background; returns a handle to the running
    /// server. Must be called within a tokio runtime.
    ///
    /// In process mode ([`Backend::UnixDatagram`](crate::Backend)) this also starts the worker
    /// processes, by running this program again. Each worker reaches this call too, and here
    /// it runs the message and state listeners for the master until the master stops it (or
    /// is gone); then `start` returns [`ServerError::WorkerStopped`], which ends the worker's
    /// `main` as an error. [`DefaultServer::run`] makes that an ordinary return.
    pub async fn start<T>(self, addr: T) -> Result<ServerHandle, ServerError>
    where
        T: ToSocketAddrs + std::fmt::Display,
    {
        if let Some(env) = WorkerEnv::from_env() {
            self.run_worker(env).await?;
            return Err(ServerError::WorkerStopped);
        }
        let socket = bind(addr, self.options.backlog()).await?;
        self.serve(socket).await
    }

    /// Serves connections from a listening socket the caller bound. In a worker process (see
    /// [`DefaultServer::start`]) this fails: workers are run by `start` and `run`.
    pub async fn serve(self, socket: TcpListener) -> Result<ServerHandle, ServerError> {
        if is_worker() {
            return Err(ServerError::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "this process is a kim worker; start it with DefaultServer::run or start",
            )));
        }
        let local = socket.local_addr()?;
        let metrics = Arc::new(Metrics::new(self.options.metrics()));
        let lifecycle = Lifecycle::default();
        let listen = self.options.debug_listen();
        let stop = lifecycle.debug_stop.clone();
        let bound = self.debug.start(&metrics, listen, stop).map_err(|source| {
            lifecycle.debug_stop.cancel();
            ServerError::Bind {
                addr: listen.map_or_else(String::new, |a| a.to_string()),
                source,
            }
        })?;
        if let Some(bound) = bound {
            let _ = lifecycle.debug_addr.set(bound);
            info!(target: TARGET, addr = %bound, "debug listener on");
        }
        let cluster = match self.setup.run().await {
            Ok(cluster) => cluster,
            Err(e) => {
                lifecycle.debug_stop.cancel();
                return Err(e);
            }
        };
        let encoder = <U::Framed as FrameWriter>::encode_shared;
        let courier = courier(&self.options, &metrics, encoder, cluster);
        let context = Arc::new(Context {
            limits: Limits::new(&self.options),
            clock: Arc::new(Clock::new()),
            metrics,
            connections: Arc::default(),
            courier,
            sessions: Sessions::new(&self.options, self.session_codec),
        });
        let core = Core::new(self.options, local, Hub::new(context), lifecycle);
        let (upgrader, acceptor) = (self.upgrader, self.acceptor);
        upgrader.register_metrics(core.metrics().registry());
        match core.options.backend() {
            Backend::InProcess => {
                let route = Arc::new(InProcess::new(self.message_listener, self.state_listener));
                Ok(launch(
                    socket,
                    Gateway::new(core, upgrader, acceptor, route),
                ))
            }
            Backend::UnixDatagram { .. } => {
                let courier = core.hub.context().courier.clone();
                let master = Master::start(&core.options, courier)
                    .inspect_err(|_| core.lifecycle.debug_stop.cancel())?;
                reload_on_signal(&master);
                core.workers.supervise(master.clone());
                Ok(launch(
                    socket,
                    Gateway::new(core, upgrader, acceptor, master),
                ))
            }
        }
    }

    /// This process is a worker of process mode: runs the app's listeners for the master.
    async fn run_worker(self, env: io::Result<WorkerEnv>) -> Result<(), ServerError> {
        let (listener, state, options) = (self.message_listener, self.state_listener, self.options);
        let result = match env {
            Ok(env) => run_worker(listener, state, options, env).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            tracing::error!(target: TARGET, error = %e, "worker failed");
            ServerError::Io(e)
        })
    }
}

/// The courier of a server that holds its sockets: its own channels and rooms, and with a
/// cluster, the other nodes.
fn courier(
    options: &ServerOptions,
    metrics: &Arc<Metrics>,
    encoder: Encoder,
    cluster: Option<Arc<dyn Cluster>>,
) -> Arc<dyn Courier> {
    let Some(cluster) = cluster else {
        let rooms = Rooms::new(options, metrics.clone(), encoder, None);
        return Arc::new(LocalCourier::new(rooms));
    };
    let watcher = ClusterCourier::watcher(&cluster);
    let rooms = Rooms::new(options, metrics.clone(), encoder, Some(watcher));
    let node = cluster.node().to_string();
    let max = options.max_message_size();
    let courier = ClusterCourier::start(LocalCourier::new(rooms), cluster, metrics.clone(), max);
    info!(target: TARGET, node, "cluster node attached");
    Arc::new(courier)
}

/// Starts the sweeper and the accept loop.
fn launch<U, A, T>(socket: TcpListener, gateway: Gateway<U, A, T>) -> ServerHandle
where
    U: Upgrader<TcpStream>,
    A: Acceptor,
    T: Route,
{
    let core = gateway.core.clone();
    tokio::spawn(sweep(core.clone()));
    let task = tokio::spawn(accept_loop(socket, Arc::new(gateway)));
    *core.lifecycle.accept_loop.lock() = Some(task);
    info!(target: TARGET, addr = %core.local_addr, "kim server listening");
    ServerHandle::new(core)
}

/// In process mode, SIGUSR1 to the master reloads the workers.
fn reload_on_signal(master: &Arc<Master>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut sig) = signal(SignalKind::user_defined1()) else {
            warn!(target: TARGET, "cannot listen for SIGUSR1; reload with ServerHandle::reload_workers");
            return;
        };
        let weak = Arc::downgrade(master);
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                let Some(m) = weak.upgrade() else { break };
                info!(target: TARGET, "SIGUSR1: reloading workers");
                let n = m.reload().await;
                info!(target: TARGET, workers = n, "workers reloaded");
            }
        });
    }
}

/// Binds the first address `addr` resolves to that can be bound.
async fn bind<T>(addr: T, backlog: u32) -> Result<TcpListener, ServerError>
where
    T: ToSocketAddrs + std::fmt::Display,
{
    let shown = addr.to_string();
    let resolved = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: shown.clone(),
            source,
        })?;
    let mut last = None;
    for a in resolved {
        match bind_one(a, backlog) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some((a, e)),
        }
    }
    let (addr, source) = last.map(|(a, e)| (a.to_string(), e)).unwrap_or_else(|| {
        (
            shown,
            io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing"),
        )
    });
    Err(ServerError::Bind { addr, source })
}

fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
