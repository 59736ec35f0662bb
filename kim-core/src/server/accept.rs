//! The accept loop: one task for the listening socket, one task per accepted connection,
//! and the refusal of connections over `max_connections`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn, Instrument};

use crate::app::Acceptor;
use crate::connections::{ActiveGuard, Connections};
use crate::route::Route;
use crate::server::gateway::Gateway;
use crate::server::log::{CHANNEL_SPAN, TARGET};
use crate::server::login::{login, LoggedIn};
use crate::session::Session;
use crate::throttle::LogThrottle;
use crate::upgrade::Upgrader;

/// True for accept errors that mean "out of a resource for now": back off and retry.
fn is_resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The accept loop: one task for the listening socket, one task per accepted connection.
pub(crate) async fn accept_loop<U, A, T>(socket: TcpListener, gateway: Arc<Gateway<U, A, T>>)
where
    U: Upgrader<TcpStream>,
    A: Acceptor,
    T: Route,
{
    let core = &gateway.core;
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = core.lifecycle.shutdown.cancelled() => break,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                core.metrics().accepted.inc();
                if core.connections().active() >= core.options.max_connections() {
                    core.metrics().refused_over_limit.inc();
                    static OVER_LIMIT: LogThrottle = LogThrottle::new(Duration::from_secs(1));
                    if let Some(suppressed) = OVER_LIMIT.allow() {
                        debug!(target: TARGET, %peer, suppressed, "over max_connections: closing");
                    }
                    refuse_over_limit(core.connections(), stream);
                    continue;
                }
                let guard = core.connections().enter();
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(gateway.clone(), stream, peer, guard));
            }
            Err(e) if is_resource_error(&e) => {
                core.metrics().accept_errors.inc();
                warn!(target: TARGET, error = %e, retry_in = ?backoff, "accept failed; backing off");
                tokio::select! {
                    _ = core.lifecycle.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                // A connection that died in the backlog (ECONNABORTED and the like).
                core.metrics().accept_errors.inc();
                debug!(target: TARGET, error = %e, "accept failed");
            }
        }
    }
    debug!(target: TARGET, "accept loop stopped");
}

/// One connection: upgrade and login under login_wait, registration, then its session.
async fn serve_connection<U, A, T>(
    gateway: Arc<Gateway<U, A, T>>,
    stream: TcpStream,
    peer: SocketAddr,
    guard: ActiveGuard,
) where
    U: Upgrader<TcpStream>,
    A: Acceptor,
    T: Route,
{
    // The login runs in a `login` span (info) that ends with it. The channel's span, around
    // everything its session does and the app logs for it, is at debug under a target of its
    // own: kept by every idle connection, it costs about 600 bytes in tracing-subscriber's
    // registry, so only a subscriber that asks for it (`kim::channel=debug`) pays for it.
    let transport = gateway.upgrader.name();
    let login_span = tracing::info_span!("login", %peer, transport);
    let logged_in = tokio::select! {
        biased;
        _ = gateway.core.lifecycle.shutdown.cancelled() => return,
        r = login(&gateway, stream, peer).instrument(login_span) => r,
    };
    let Some(LoggedIn {
        chan,
        conn,
        login_event,
        generation,
    }) = logged_in
    else {
        return;
    };
    let span = tracing::debug_span!(
        target: CHANNEL_SPAN,
        "channel",
        id = %chan.id(),
        %peer,
        transport
    );
    // The channel gets a task of its own, sized for the session alone: the login's state
    // (handshake buffers, the acceptor's future) is freed with this task.
    let route = gateway.route.clone();
    let session = Session::new(chan, conn.framed, route, login_event, guard, generation);
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
fn refuse_over_limit(connections: &Arc<Connections>, stream: TcpStream) {
    if !connections.start_draining(MAX_DRAINING) {
        return;
    }
    let connections = connections.clone();
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
        connections.drained();
    });
}
