//! The server: [`DefaultServer`] builds it and starts it; its parts each have a file.
//!
//! - `accept`: the accept loop, and the refusal of connections over `max_connections`;
//! - `login`: a connection's upgrade and login under `login_wait`, and its channel's entry in
//!   the channel map;
//! - `sweep`: the coarse clock, read deadlines, and memory given back after bursts;
//! - `handle`: [`ServerHandle`] and the state it shares with the server's tasks;
//! - `connections`: the count of connections being served;
//! - `gateway`: what every connection task shares.
//!
//! [`DefaultServer`] is generic over the transport's [`Upgrader`] and the app's three traits,
//! so every call into them is statically dispatched; [`ServerHandle`] is not generic, so it
//! can be stored anywhere.

mod accept;
mod cluster;
pub(crate) mod connections;
mod gateway;
pub(crate) mod handle;
mod log;
mod login;
mod node;
mod rooms;
mod sweep;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};
use tracing::{info, warn};

use crate::app::{Acceptor, DefaultAcceptor, MessageListener, StateListener};
use crate::channel::Delivery;
use crate::cluster::Cluster;
use crate::error::ServerError;
use crate::ipc::is_worker;
use crate::ipc::master::Master;
use crate::ipc::worker::{run_worker, WorkerEnv};
use crate::options::{Backend, ServerOptions};
use crate::route::{InProcess, Route};
use crate::server::accept::accept_loop;
use crate::server::gateway::Gateway;
use crate::server::handle::Core;
use crate::server::log::TARGET;
use crate::server::node::ServerNode;
use crate::server::sweep::sweep;
use crate::upgrade::Upgrader;

pub use handle::{ServerHandle, ServerStats, ShutdownReport};

/// A gateway server: a transport ([`Upgrader`]), a login ([`Acceptor`]), a message handler
/// ([`MessageListener`]) and a disconnect handler ([`StateListener`]).
///
/// ```no_run
/// use kim_core::{Agent, DefaultServer, Frame, MessageListener, Upgrader};
///
/// struct Echo;
///
/// impl MessageListener for Echo {
///     async fn receive(&self, agent: &Agent, message: Frame) {
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
    cluster: Option<Arc<dyn Cluster>>,
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
            cluster: None,
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
            cluster: self.cluster,
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
            cluster: self.cluster,
        }
    }

    /// Sets the options.
    pub fn with_options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// Makes this server a node of a cluster: pushes, rooms, duplicate logins and presence
    /// then span every node (see [`crate::cluster`]). Without it the server is a single node.
    /// In process mode the master is the node; a worker's
    /// [`ServerHandle::push_to`] reaches its own server's channels only.
    pub fn with_cluster(mut self, cluster: impl Cluster) -> Self {
        self.cluster = Some(Arc::new(cluster));
        self
    }

    /// Binds `addr` and starts serving in the background; returns a handle to the running
    /// server. Must be called within a tokio runtime.
    ///
    /// In process mode ([`Backend::UnixDatagram`](crate::Backend)) this also starts the worker
    /// processes, by running this program again. In such a worker, `start` never returns: it
    /// runs the message and state listeners for the master until the master stops it (or is
    /// gone), then exits the process. Code before `start` runs in the master and in every
    /// worker; code after it, only in the master ([`crate::ipc::is_worker`] tells them apart).
    pub async fn start<T>(self, addr: T) -> Result<ServerHandle, ServerError>
    where
        T: ToSocketAddrs + std::fmt::Display,
    {
        if let Some(env) = WorkerEnv::from_env() {
            let result = match env {
                Ok(env) => {
                    run_worker(
                        self.message_listener,
                        self.state_listener,
                        self.options,
                        env,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(target: TARGET, error = %e, "worker failed");
                    1
                }
            };
            std::process::exit(code);
        }
        let shown = addr.to_string();
        let resolved = tokio::net::lookup_host(addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: shown.clone(),
                source,
            })?;
        let mut last = None;
        for a in resolved {
            match bind(a, self.options.backlog()) {
                Ok(l) => return self.serve(l),
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

    /// Serves connections from a listening socket the caller bound. In a worker process (see
    /// [`DefaultServer::start`]) this fails: workers are run by `start`.
    pub fn serve(self, socket: TcpListener) -> Result<ServerHandle, ServerError> {
        if is_worker() {
            return Err(ServerError::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "this process is a kim worker; start it with DefaultServer::start",
            )));
        }
        let local = socket.local_addr()?;
        let core = Core::new(self.options, local, self.cluster);
        if let Some(addr) = core.options.debug_listen() {
            let bound = crate::debug::start(
                core.metrics.clone(),
                core.lifecycle.debug_stop.clone(),
                addr,
            )
            .map_err(|source| ServerError::Bind {
                addr: addr.to_string(),
                source,
            })?;
            let _ = core.lifecycle.debug_addr.set(bound);
            info!(target: TARGET, addr = %bound, "debug listener on");
        }
        if let Some(cluster) = &core.cluster {
            cluster.attach(Arc::new(ServerNode::new(&core)));
            info!(target: TARGET, node = cluster.node(), "cluster node attached");
        }
        core.rooms
            .set_encoder(<U::Framed as crate::conn::FrameWriter>::encode_shared);
        let context = core.channel_context(Delivery::Outbox);
        let (upgrader, acceptor) = (self.upgrader, self.acceptor);
        upgrader.register_metrics(core.metrics.registry());
        match core.options.backend() {
            Backend::InProcess => {
                let route = Arc::new(InProcess::new(self.message_listener, self.state_listener));
                let gateway = Gateway::new(core, context, upgrader, acceptor, route);
                Ok(launch(socket, gateway))
            }
            Backend::UnixDatagram { .. } => {
                let master =
                    Master::start(&core).inspect_err(|_| core.lifecycle.debug_stop.cancel())?;
                reload_on_signal(&master);
                core.set_process_mode(master.clone());
                let gateway = Gateway::new(core, context, upgrader, acceptor, master);
                Ok(launch(socket, gateway))
            }
        }
    }
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

fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
