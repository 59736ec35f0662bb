//! The server: the accept loop, the login of each connection, the deadline sweeper, and
//! graceful shutdown. [`DefaultServer`] is generic over the transport's [`Upgrader`] and the
//! app's three listeners, so every call into them is statically dispatched;
//! [`ServerHandle`] is not generic, so it can be stored anywhere.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::channel::{Channel, ChannelId, CloseMode};
use crate::channels::{ChannelMap, Insert};
use crate::conn::{Conn, FrameWriter};
use crate::error::{PushError, ServerError};
use crate::frame::{CloseReason, Frame};
use crate::ipc::worker::Remote;
use crate::ipc::{IpcStats, Master, WorkerEnv};
use crate::listener::{
    Accepted, Acceptor, DefaultAcceptor, LoginConn, MessageListener, StateListener,
};
use crate::metrics::{CloseCause, Metrics, Rejection};
use crate::options::{DuplicatePolicy, ServerOptions};
use crate::session::{Handlers, Session};
use crate::throttle::LogThrottle;
use crate::upgrade::{ConnConfig, Upgrader};

/// Server state that channels and handles share; not generic.
pub(crate) struct Core {
    pub(crate) options: ServerOptions,
    pub(crate) channels: ChannelMap,
    /// Milliseconds since `epoch`, advanced by the sweeper: a clock that costs one load.
    clock: AtomicU64,
    epoch: Instant,
    serial: AtomicU64,
    /// Connections being served (logging in or logged in).
    active: AtomicUsize,
    /// Connections refused over max_connections that are being closed.
    draining: AtomicUsize,
    idle: Notify,
    shutdown: CancellationToken,
    shutting_down: AtomicBool,
    accept_loop: parking_lot::Mutex<Option<JoinHandle<()>>>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) metrics: Metrics,
    /// The debug listener's address, once bound.
    debug_addr: OnceLock<SocketAddr>,
    /// Stops the debug listener (at the end of a shutdown).
    debug_stop: CancellationToken,
    /// In a worker process: the way to the master.
    pub(crate) remote: Option<Arc<Remote>>,
    /// In a master in process mode: its workers.
    pub(crate) master: OnceLock<Arc<Master>>,
}

impl Core {
    pub(crate) fn new(options: ServerOptions, local_addr: SocketAddr) -> Core {
        let options_metrics = options.metrics();
        Core {
            options,
            channels: ChannelMap::new(),
            clock: AtomicU64::new(0),
            epoch: Instant::now(),
            serial: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            draining: AtomicUsize::new(0),
            idle: Notify::new(),
            shutdown: CancellationToken::new(),
            shutting_down: AtomicBool::new(false),
            accept_loop: parking_lot::Mutex::new(None),
            local_addr,
            metrics: Metrics::new(options_metrics),
            debug_addr: OnceLock::new(),
            debug_stop: CancellationToken::new(),
            remote: None,
            master: OnceLock::new(),
        }
    }

    /// The core of a worker process: a mirror of the master's channel directory whose
    /// channels push over `remote`.
    pub(crate) fn new_worker(
        options: ServerOptions,
        master_addr: SocketAddr,
        remote: Arc<Remote>,
    ) -> Core {
        let mut core = Core::new(options, master_addr);
        core.remote = Some(remote);
        core
    }

    /// Cancelled when the debug listener must stop.
    pub(crate) fn debug_stop(&self) -> &CancellationToken {
        &self.debug_stop
    }

    /// Connections being served (logging in or logged in).
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The coarse clock, in milliseconds since the server started.
    pub(crate) fn clock(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    fn tick(&self) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.clock.store(now, Ordering::Relaxed);
        now
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts a connection as active for as long as it lives.
pub(crate) struct ActiveGuard(Arc<Core>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The app's listeners and the transport, shared by every connection task.
struct Shared<U, A, L, S> {
    core: Arc<Core>,
    upgrader: U,
    acceptor: A,
    listener: L,
    state: S,
}

impl<U, A, L, S> Handlers for Shared<U, A, L, S>
where
    U: Send + Sync + 'static,
    A: Send + Sync + 'static,
    L: MessageListener,
    S: StateListener,
{
    type Listener = L;
    type State = S;
    fn listener(&self) -> &L {
        &self.listener
    }
    fn state(&self) -> &S {
        &self.state
    }
    fn backend(&self) -> Option<&Master> {
        self.core.master.get().map(|m| &**m)
    }
}

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
    listener: L,
    state: S,
    options: ServerOptions,
}

impl<U, L> DefaultServer<U, DefaultAcceptor, L, ()>
where
    U: Upgrader<TcpStream>,
    L: MessageListener,
{
    /// A server with the default acceptor (no login, a fresh id per connection), no state
    /// listener and the default options.
    pub fn new(upgrader: U, listener: L) -> Self {
        DefaultServer {
            upgrader,
            acceptor: DefaultAcceptor,
            listener,
            state: (),
            options: ServerOptions::default(),
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
            listener: self.listener,
            state: self.state,
            options: self.options,
        }
    }

    /// Sets the listener that hears of disconnects.
    pub fn with_state_listener<S2: StateListener>(self, state: S2) -> DefaultServer<U, A, L, S2> {
        DefaultServer {
            upgrader: self.upgrader,
            acceptor: self.acceptor,
            listener: self.listener,
            state,
            options: self.options,
        }
    }

    /// Sets the options.
    pub fn with_options(mut self, options: ServerOptions) -> Self {
        self.options = options;
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
                    crate::ipc::run_worker(self.listener, self.state, self.options, env).await
                }
                Err(e) => Err(e),
            };
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "worker failed");
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

    /// Serves connections from a listener the caller bound. In a worker process (see
    /// [`DefaultServer::start`]) this fails: workers are run by `start`.
    pub fn serve(self, listener: TcpListener) -> Result<ServerHandle, ServerError> {
        if crate::ipc::is_worker() {
            return Err(ServerError::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "this process is a kim worker; start it with DefaultServer::start",
            )));
        }
        let local = listener.local_addr()?;
        let core = Arc::new(Core::new(self.options, local));
        core.tick();
        core.metrics.attach(Arc::downgrade(&core));
        if let Some(addr) = core.options.debug_listen() {
            let bound = crate::debug::start(&core, addr).map_err(|source| ServerError::Bind {
                addr: addr.to_string(),
                source,
            })?;
            let _ = core.debug_addr.set(bound);
            info!(addr = %bound, "debug listener on");
        }
        if matches!(core.options.backend(), crate::Backend::UnixDatagram { .. }) {
            let master = Master::start(&core).inspect_err(|_| core.debug_stop.cancel())?;
            reload_on_signal(&master);
            let _ = core.master.set(master);
        }
        let shared = Arc::new(Shared {
            core: core.clone(),
            upgrader: self.upgrader,
            acceptor: self.acceptor,
            listener: self.listener,
            state: self.state,
        });
        tokio::spawn(sweep(core.clone()));
        let task = tokio::spawn(accept_loop(listener, shared));
        *core.accept_loop.lock() = Some(task);
        info!(addr = %local, "kim server listening");
        Ok(ServerHandle { core })
    }
}

/// In process mode, SIGUSR1 to the master reloads the workers.
fn reload_on_signal(master: &Arc<Master>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut sig) = signal(SignalKind::user_defined1()) else {
            warn!("cannot listen for SIGUSR1; reload with ServerHandle::reload_workers");
            return;
        };
        let weak = Arc::downgrade(master);
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                let Some(m) = weak.upgrade() else { break };
                info!("SIGUSR1: reloading workers");
                let n = m.reload().await;
                info!(workers = n, "workers reloaded");
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

/// True for accept errors that mean "out of a resource for now": back off and retry.
fn is_resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The accept loop: one task for the listening socket, one task per accepted connection.
async fn accept_loop<U, A, L, S>(listener: TcpListener, shared: Arc<Shared<U, A, L, S>>)
where
    U: Upgrader<TcpStream>,
    A: Acceptor,
    L: MessageListener,
    S: StateListener,
{
    let core = &shared.core;
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = core.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                core.metrics.accepted.inc();
                if core.active.load(Ordering::SeqCst) >= core.options.max_connections() {
                    core.metrics.refused_over_limit.inc();
                    static OVER_LIMIT: LogThrottle = LogThrottle::new(Duration::from_secs(1));
                    if let Some(suppressed) = OVER_LIMIT.allow() {
                        debug!(%peer, suppressed, "over max_connections: closing");
                    }
                    refuse_over_limit(core, stream);
                    continue;
                }
                core.active.fetch_add(1, Ordering::SeqCst);
                let guard = ActiveGuard(core.clone());
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(shared.clone(), stream, peer, guard));
            }
            Err(e) if is_resource_error(&e) => {
                core.metrics.accept_errors.inc();
                warn!(error = %e, retry_in = ?backoff, "accept failed; backing off");
                tokio::select! {
                    _ = core.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                // A connection that died in the backlog (ECONNABORTED and the like).
                core.metrics.accept_errors.inc();
                debug!(error = %e, "accept failed");
            }
        }
    }
    debug!("accept loop stopped");
}

/// One connection: upgrade and login under login_wait, registration, then its session.
async fn serve_connection<U, A, L, S>(
    shared: Arc<Shared<U, A, L, S>>,
    stream: TcpStream,
    peer: SocketAddr,
    guard: ActiveGuard,
) where
    U: Upgrader<TcpStream>,
    A: Acceptor,
    L: MessageListener,
    S: StateListener,
{
    // One span per connection, from accept to the end of its channel; `id` is filled in at
    // login. Disabled (and free) unless a subscriber wants info-level spans.
    let span = tracing::info_span!(
        "channel",
        id = tracing::field::Empty,
        %peer,
        transport = shared.upgrader.name()
    );
    let logged_in = tokio::select! {
        biased;
        _ = shared.core.shutdown.cancelled() => return,
        r = login(&shared, stream, peer, &span).instrument(span.clone()) => r,
    };
    let Some((chan, conn)) = logged_in else {
        return;
    };
    // The channel gets a task of its own, sized for the session alone: the login's state
    // (handshake buffers, the acceptor's future) is freed with this task.
    let session = Session::new(chan, conn.reader, conn.writer, shared, guard);
    if span.is_disabled() {
        tokio::spawn(session);
    } else {
        tokio::spawn(session.instrument(span));
    }
}

/// At most this many refused connections are drained at once; past it they are dropped.
const MAX_DRAINING: usize = 256;

/// Closes a connection refused over max_connections with a FIN rather than a reset: the
/// write side is shut down and whatever the client already sent is read and discarded (at
/// most 64 KiB, for at most 500 ms). Under a flood, past [`MAX_DRAINING`] such connections,
/// the rest are simply dropped.
fn refuse_over_limit(core: &Arc<Core>, stream: TcpStream) {
    if core.draining.fetch_add(1, Ordering::Relaxed) >= MAX_DRAINING {
        core.draining.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let core = core.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            let mut scratch = [0u8; 1024];
            let mut left = 64 * 1024usize;
            while left > 0 {
                match stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
        core.draining.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Upgrade, accept, register. `None` when the connection was refused (and already answered).
async fn login<U, A, L, S>(
    shared: &Arc<Shared<U, A, L, S>>,
    stream: TcpStream,
    peer: SocketAddr,
    span: &tracing::Span,
) -> Option<(Channel, Conn<U::Reader, U::Writer>)>
where
    U: Upgrader<TcpStream>,
    A: Acceptor,
    L: MessageListener,
    S: StateListener,
{
    let core = &shared.core;
    let opts = &core.options;
    let deadline = tokio::time::Instant::now() + opts.login_wait();
    let config = ConnConfig {
        max_message_size: opts.max_login_message_size(),
        read_buffer_size: opts.read_buffer_size(),
    };
    let transport = shared.upgrader.name();
    let mut conn =
        match tokio::time::timeout_at(deadline, shared.upgrader.upgrade(stream, config)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                core.metrics.rejected(Rejection::Handshake);
                info!(error = %e, "login rejected: handshake failed");
                return None;
            }
            Err(_) => {
                core.metrics.rejected(Rejection::Timeout);
                info!("login rejected: handshake timed out");
                return None;
            }
        };

    let accepted: Result<Accepted, (CloseReason, Rejection)> = {
        let mut lc = LoginConn::new(
            &mut conn.reader,
            &mut conn.writer,
            peer,
            transport,
            conn.handshake.as_deref(),
        );
        match tokio::time::timeout_at(deadline, shared.acceptor.accept(&mut lc)).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(reject)) => Err((reject.reason, Rejection::Acceptor)),
            Err(_) => Err((CloseReason::policy("login timeout"), Rejection::Timeout)),
        }
    };
    conn.handshake = None;
    let accepted = match accepted {
        Ok(a) => {
            crate::FrameReader::set_max_message_size(&mut conn.reader, opts.max_message_size());
            a
        }
        Err((reason, why)) => {
            core.metrics.rejected(why);
            info!(%reason, cause = why.label(), "login rejected");
            refuse(&mut conn, &reason, opts).await;
            return None;
        }
    };

    let Accepted { id, meta, reply } = accepted;
    let serial = core.serial.fetch_add(1, Ordering::Relaxed);
    let chan = Channel::new(id.clone(), meta, serial, core.clone());
    if let Some(reply) = reply {
        // Queued before the channel is visible, so it goes out before anything pushed.
        let mut ob = chan.inner.outbox.lock();
        ob.bytes += reply.payload.len();
        ob.frames.push_back(reply);
    }
    let inserted = match opts.duplicate_policy() {
        DuplicatePolicy::Reject => core.channels.add(chan.clone()),
        DuplicatePolicy::Kick => core.channels.replace(chan.clone()),
    };
    match inserted {
        Insert::Added => {}
        Insert::Duplicate(_) => {
            core.metrics.rejected(Rejection::Duplicate);
            let reason = CloseReason::policy("channel id is repeated");
            info!(%id, %reason, cause = "duplicate", "login rejected");
            refuse(&mut conn, &reason, opts).await;
            return None;
        }
        Insert::Replaced(old) => {
            info!(%id, "duplicate login: kicking the older channel");
            old.request_close(
                CloseReason::policy("kicked by a new login"),
                CloseMode::Graceful,
                CloseCause::Kicked,
            );
        }
    }
    if let Some(m) = core.master.get() {
        // The workers learn of the channel before its first message.
        m.opened(&chan);
    }
    core.metrics.logins.inc();
    span.record("id", tracing::field::display(&id));
    info!("logged in");
    // A shutdown that began while this login ran may have missed the channel: close it here.
    if core.shutting_down.load(Ordering::SeqCst) {
        chan.request_close(
            CloseReason::new(CloseReason::GOING_AWAY, "server shutting down"),
            CloseMode::Graceful,
            CloseCause::Shutdown,
        );
    }
    Some((chan, conn))
}

/// Sends a close frame for a refused login and waits briefly for the peer to close, so the
/// close frame is read before the connection goes away.
async fn refuse<R: crate::FrameReader, W: FrameWriter>(
    conn: &mut Conn<R, W>,
    reason: &CloseReason,
    opts: &ServerOptions,
) {
    use crate::conn::{FrameReaderExt, FrameWriterExt};
    let frame = conn.writer.close_frame(reason);
    let sent = tokio::time::timeout(opts.write_wait(), async {
        conn.writer.send(frame).await?;
        conn.writer.shutdown().await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    // Drain what the client still sends until it closes, so that unread input does not turn
    // the close into a reset that could destroy the close frame in flight.
    let _ = tokio::time::timeout(opts.close_wait(), async {
        while let Ok(Some(_)) = conn.reader.read_frame().await {}
    })
    .await;
}

/// The sweeper: advances the coarse clock and closes channels past their read deadline.
async fn sweep(core: Arc<Core>) {
    let read_wait = core.options.read_wait().as_millis() as u64;
    let tick = Duration::from_millis((read_wait / 8).clamp(5, 1000));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expired = Vec::new();
    // Once a second, the allocator is asked to return free memory if it holds much of it.
    let mut next_heap_check = 0;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = core.shutdown.cancelled() => {
                if core.active.load(Ordering::SeqCst) == 0 {
                    break;
                }
                // Keep the clock running while shutdown drains the channels.
                core.wait_idle().await;
                break;
            }
        }
        let now = core.tick();
        core.channels.for_each(|c| {
            if now.saturating_sub(c.last_read()) > read_wait {
                expired.push(c.clone());
            }
        });
        for c in expired.drain(..) {
            debug!(id = %c.id(), "read deadline passed");
            c.request_close(
                CloseReason::normal("read timeout"),
                CloseMode::Graceful,
                CloseCause::ReadTimeout,
            );
        }
        if now >= next_heap_check {
            next_heap_check = now + 1000;
            if crate::heap::trim_if_bloated() {
                core.metrics.heap_trims.inc();
            }
        }
    }
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Channels that were logged in when the shutdown began and were sent a close.
    pub channels: usize,
    /// Of those, channels still open at the deadline and dropped without waiting further.
    pub forced: usize,
    /// Connections still alive when the shutdown returned (0 unless a handler hangs).
    pub remaining: usize,
}

/// A handle to a running server: push to any channel, count channels, shut down. Cheap to
/// clone; usable from any task or thread. The server runs until [`ServerHandle::shutdown`]
/// (or the end of its runtime); dropping handles does not stop it.
#[derive(Clone)]
pub struct ServerHandle {
    core: Arc<Core>,
}

impl ServerHandle {
    pub(crate) fn from_core(core: Arc<Core>) -> ServerHandle {
        ServerHandle { core }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.local_addr
    }

    /// The server's options.
    pub fn options(&self) -> &ServerOptions {
        &self.core.options
    }

    /// The logged-in channels.
    pub fn channels(&self) -> &ChannelMap {
        &self.core.channels
    }

    /// The channel with this id, if it is connected.
    pub fn channel(&self, id: &str) -> Option<Channel> {
        self.core.channels.get(id)
    }

    /// Number of logged-in channels.
    pub fn channel_count(&self) -> usize {
        self.core.channels.len()
    }

    /// Number of connections being served, logging in or logged in.
    pub fn connection_count(&self) -> usize {
        self.core.active.load(Ordering::SeqCst)
    }

    /// Pushes a binary message to the channel with this id. Never waits.
    pub fn push(&self, id: &str, payload: impl Into<Bytes>) -> Result<(), PushError> {
        self.push_frame(id, Frame::binary(payload))
    }

    /// Pushes a text or binary frame to the channel with this id. Never waits.
    pub fn push_frame(&self, id: &str, frame: Frame) -> Result<(), PushError> {
        match self.core.channels.get(id) {
            Some(c) => c.push_frame(frame),
            None => {
                let e = PushError::NotFound(ChannelId::new(id));
                self.core.metrics.push_failed(&e);
                crate::channel::log_push_failed(id, &e);
                Err(e)
            }
        }
    }

    /// Counters since start: connections accepted, refused over the limit, logins, rejected
    /// logins, accept errors.
    pub fn stats(&self) -> ServerStats {
        let m = &self.core.metrics;
        ServerStats {
            accepted: m.accepted.get(),
            refused_over_limit: m.refused_over_limit.get(),
            logins: m.logins.get(),
            rejected: m.rejected_total(),
            accept_errors: m.accept_errors.get(),
        }
    }

    /// The server's metrics ([`crate::metrics`] lists them).
    pub fn metrics(&self) -> &Metrics {
        &self.core.metrics
    }

    /// The server's metrics in Prometheus' text format, as the debug listener serves them on
    /// `/metrics`.
    pub fn metrics_text(&self) -> String {
        self.core.metrics.render()
    }

    /// The debug listener's address, if one was configured
    /// ([`OptionsBuilder::debug_listen`](crate::OptionsBuilder::debug_listen)).
    pub fn debug_addr(&self) -> Option<SocketAddr> {
        self.core.debug_addr.get().copied()
    }

    /// In process mode, replaces the worker processes one at a time (each first handles what
    /// it was sent; no client connection is closed) and returns how many were replaced. The
    /// same happens on SIGUSR1 to the master. 0 in-process or in a worker.
    pub async fn reload_workers(&self) -> usize {
        match self.core.master.get() {
            Some(m) => m.reload().await,
            None => 0,
        }
    }

    /// In process mode (in the master), what the IPC backend has done; `None` otherwise.
    pub fn ipc_stats(&self) -> Option<IpcStats> {
        self.core.master.get().map(|m| m.stats())
    }

    /// In process mode (in the master), the worker processes' ids (0 for one being started).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.core
            .master
            .get()
            .map(|m| m.worker_pids())
            .unwrap_or_default()
    }

    /// True once a shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.core.shutting_down.load(Ordering::SeqCst)
    }

    /// Shuts the server down: stops accepting, sends every channel a close (1001, after what is
    /// already queued), and waits for the connections to end, at most `deadline`; channels
    /// still open then are dropped. Every channel's disconnect is reported, once.
    ///
    /// In process mode the workers are stopped last, each after handling everything sent to
    /// it (disconnects included). Called in a worker, it asks the master to shut down and
    /// returns at once with an empty report.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let core = &self.core;
        if let Some(remote) = &core.remote {
            remote.shutdown(deadline);
            return ShutdownReport {
                channels: 0,
                forced: 0,
                remaining: 0,
            };
        }
        let started = tokio::time::Instant::now();
        core.shutting_down.store(true, Ordering::SeqCst);
        core.shutdown.cancel();
        let accept = core.accept_loop.lock().take();
        if let Some(task) = accept {
            let _ = task.await;
        }
        let reason = CloseReason::new(CloseReason::GOING_AWAY, "server shutting down");
        let mut channels = 0;
        core.channels.for_each(|c| {
            channels += 1;
            c.request_close(reason.clone(), CloseMode::Graceful, CloseCause::Shutdown);
        });
        info!(channels, "shutting down");
        let mut forced = 0;
        if tokio::time::timeout(deadline, core.wait_idle())
            .await
            .is_err()
        {
            core.channels.for_each(|c| {
                forced += 1;
                c.request_close(reason.clone(), CloseMode::Abort, CloseCause::Shutdown);
            });
            let _ = tokio::time::timeout(Duration::from_secs(1), core.wait_idle()).await;
        }
        let remaining = core.active.load(Ordering::SeqCst);
        if let Some(m) = core.master.get() {
            let left = deadline.saturating_sub(started.elapsed());
            m.stop(left.max(Duration::from_secs(2))).await;
        }
        core.debug_stop.cancel();
        info!(channels, forced, remaining, "shutdown complete");
        ShutdownReport {
            channels,
            forced,
            remaining,
        }
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.core.local_addr)
            .field("channels", &self.core.channels.len())
            .finish()
    }
}

/// Counters kept by the server since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted from the listening socket.
    pub accepted: u64,
    /// Connections closed at once because max_connections were being served.
    pub refused_over_limit: u64,
    /// Successful logins.
    pub logins: u64,
    /// Refused logins (acceptor rejections, timeouts, duplicates).
    pub rejected: u64,
    /// Failed accepts (the accept loop backs off on resource errors and goes on).
    pub accept_errors: u64,
}
