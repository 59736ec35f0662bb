//! The login of one connection: the transport's upgrade and the app's acceptor under
//! `login_wait`, then the channel's entry in the channel map.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::app::{Accepted, Acceptor, LoginConn, Reject};
use crate::channel::courier::Courier;
use crate::channel::id::ChannelId;
use crate::channel::map::Insert;
use crate::channel::outbox::Resumed;
use crate::channel::Channel;
use crate::close::{CloseCause, CloseMode, CloseReason};
use crate::cluster::Claim;
use crate::conn::{Conn, FrameReader, FrameReaderExt, FrameWriter, FrameWriterExt, Framed};
use crate::metrics::Rejection;
use crate::options::{DuplicatePolicy, ServerOptions};
use crate::resume::token::SessionToken;
use crate::resume::{Opened, SessionLogin};
use crate::route::{Handling, Route};
use crate::server::gateway::Gateway;
use crate::server::log::TARGET;
use crate::upgrade::{ConnConfig, Upgrader};

/// A connection that logged in.
pub(crate) struct LoggedIn<F> {
    pub(crate) chan: Channel,
    pub(crate) conn: Conn<F>,
    /// The login event (or resume event), to run in the channel's task before its first
    /// read (in-process).
    pub(crate) login_event: Option<Handling>,
    /// Which connection of the channel's session this is (0 without a session).
    pub(crate) generation: u16,
}

/// Upgrade, accept, register. `None` when the connection was refused (and already answered).
pub(crate) async fn login<U, A, T>(
    gateway: &Gateway<U, A, T>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<LoggedIn<U::Framed>>
where
    U: Upgrader<TcpStream>,
    A: Acceptor,
    T: Route,
{
    let core = &gateway.core;
    let opts = &core.options;
    let deadline = tokio::time::Instant::now() + opts.login_wait();
    let config = ConnConfig {
        max_message_size: opts.max_login_message_size(),
        read_buffer_size: opts.read_buffer_size(),
    };
    let transport = gateway.upgrader.name();
    let mut conn =
        match tokio::time::timeout_at(deadline, gateway.upgrader.upgrade(stream, config)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                core.metrics().rejected(Rejection::Handshake);
                info!(target: TARGET, error = %e, "login rejected: handshake failed");
                return None;
            }
            Err(_) => {
                core.metrics().rejected(Rejection::Timeout);
                info!(target: TARGET, "login rejected: handshake timed out");
                return None;
            }
        };

    let accepted: Result<Accepted, (Reject, Rejection)> = {
        let mut lc = LoginConn::new(
            &mut conn.framed,
            peer,
            transport,
            conn.handshake.as_deref(),
            &core.hub,
        );
        match tokio::time::timeout_at(deadline, gateway.acceptor.accept(&mut lc)).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(reject)) => Err((reject, Rejection::Acceptor)),
            Err(_) => Err((Reject::new("login timeout"), Rejection::Timeout)),
        }
    };
    conn.handshake = None;
    let accepted = match accepted {
        Ok(a) => {
            conn.framed.set_max_message_size(opts.max_message_size());
            a
        }
        Err((Reject { reason, status }, why)) => {
            core.metrics().rejected(why);
            info!(target: TARGET, %reason, ?status, cause = why.label(), "login rejected");
            // The transport's own refusal where it has one and it is not too late (an HTTP
            // status instead of the 101); a close frame otherwise.
            let refused = match status {
                Some(status) => {
                    let upgrader = &gateway.upgrader;
                    let answer = upgrader.refuse(&mut conn, status, &reason.reason);
                    tokio::time::timeout(opts.write_wait(), answer)
                        .await
                        .unwrap_or(true)
                }
                None => false,
            };
            if !refused {
                refuse(&mut conn, &reason, opts).await;
            }
            return None;
        }
    };

    let Accepted {
        id,
        meta,
        reply,
        session,
    } = accepted;
    let courier = &*gateway.context().courier;
    let sessions = &gateway.context().sessions;
    let session_metrics = &core.metrics().sessions;
    // A resume that can be done exactly takes the session's channel over.
    if let Some(SessionLogin::Resume {
        token: Some(token),
        last,
    }) = &session
    {
        if let Some((chan, resumed)) = resume(courier, &id, token, *last) {
            session_metrics.resumed.inc();
            session_metrics.replayed.inc_by(resumed.replay);
            session_metrics.acked.inc_by(resumed.freed.messages as u64);
            sessions.total.released(session_metrics, resumed.freed);
            let opened = Opened::Resumed {
                token,
                replay: resumed.replay,
            };
            conn.framed.start_frame(sessions.codec.opened(&opened));
            if let Some(reply) = reply {
                conn.framed.start_frame(reply);
            }
            let login_event = gateway.route.resumed(&chan);
            info!(target: TARGET, %id, replay = resumed.replay, "session resumed");
            return Some(LoggedIn {
                chan,
                conn,
                login_event,
                generation: resumed.generation,
            });
        }
    }
    let resume_refused = matches!(session, Some(SessionLogin::Resume { .. }));
    let serial = gateway.next_serial();
    let context = gateway.context().clone();
    let (chan, token) = match session {
        Some(_) => {
            let token = SessionToken::random();
            let chan = Channel::with_session(id.clone(), meta, serial, context, token);
            (chan, Some(token))
        }
        None => (Channel::new(id.clone(), meta, serial, context), None),
    };
    match token {
        Some(token) => {
            // Sent before the channel is visible, so it goes out before anything numbered.
            let opened = if resume_refused {
                session_metrics.told_new.inc();
                Opened::New { token: &token }
            } else {
                Opened::Started { token: &token }
            };
            conn.framed.start_frame(sessions.codec.opened(&opened));
            if let Some(reply) = reply {
                conn.framed.start_frame(reply);
            }
        }
        // Queued before the channel is visible, so it goes out before anything pushed.
        None => {
            if let Some(reply) = reply {
                chan.outbox().push_first(reply);
            }
        }
    }
    // A fresh login ends a suspended session of its id; a refused resume ends any session of
    // it, connected or not; otherwise the duplicate policy decides.
    let kick = opts.duplicate_policy() == DuplicatePolicy::Kick;
    let inserted = courier.channels().insert_replacing(chan.clone(), |old| {
        let outbox = old.outbox();
        kick || outbox.is_suspended() || (resume_refused && outbox.has_session())
    });
    match inserted {
        Insert::Added => {}
        Insert::Duplicate(_) => {
            core.metrics().rejected(Rejection::Duplicate);
            let reason = CloseReason::policy("channel id is repeated");
            info!(target: TARGET, %id, %reason, cause = "duplicate", "login rejected");
            refuse(&mut conn, &reason, opts).await;
            forget(&chan);
            return None;
        }
        Insert::Replaced(old) => {
            info!(target: TARGET, %id, "duplicate login: ending the older channel");
            old.request_close(
                CloseReason::policy("kicked by a new login"),
                CloseMode::Graceful,
                CloseCause::Kicked,
            );
        }
    }
    if !claim(courier, &chan, deadline, opts).await {
        courier.channels().remove_channel(&chan);
        core.metrics().rejected(Rejection::Duplicate);
        let reason = CloseReason::policy("channel id is repeated");
        info!(target: TARGET, %id, %reason, cause = "duplicate", "login rejected: held on another node");
        refuse(&mut conn, &reason, opts).await;
        forget(&chan);
        return None;
    }
    // Where its messages go learns of the channel before its first message.
    let login_event = gateway.route.opened(&chan);
    core.metrics().logins.inc();
    info!(target: TARGET, %id, "logged in");
    // A shutdown that began while this login ran may have missed the channel: close it here.
    if core.lifecycle.shutting_down() {
        chan.request_close(
            CloseReason::new(CloseReason::GOING_AWAY, "server shutting down"),
            CloseMode::Graceful,
            CloseCause::Shutdown,
        );
    }
    Some(LoggedIn {
        chan,
        conn,
        login_event,
        generation: 0,
    })
}

/// A channel that never became visible: its session, if it began one, ends unannounced.
fn forget(chan: &Channel) {
    if chan.outbox().end().is_some() {
        chan.context().metrics.sessions.open.dec();
    }
}

/// Takes over the session of `id` if it has token `token` and can replay everything after
/// `last`: the channel, and what the resume did.
fn resume(
    courier: &dyn Courier,
    id: &ChannelId,
    token: &SessionToken,
    last: u64,
) -> Option<(Channel, Resumed)> {
    let chan = courier.channels().get(id.as_str())?;
    let resumed = chan.outbox().resume(token, last)?;
    if let Some(w) = &resumed.waker {
        // The previous connection's task, or the suspended session's waiter: it finds itself
        // stale and lets go.
        w.wake_by_ref();
    }
    Some((chan, resumed))
}

/// Claims the channel's id beyond this process (cluster-wide, on a node of a cluster); false
/// when another node keeps it. A claim that cannot be made (the broker is away, or the
/// login's deadline came) lets the login go on, as on a single node: local traffic does not
/// wait for the cluster, which claims again when it can.
async fn claim(
    courier: &dyn Courier,
    chan: &Channel,
    deadline: tokio::time::Instant,
    opts: &ServerOptions,
) -> bool {
    let claimed = tokio::time::timeout_at(deadline, courier.claim(chan, opts.duplicate_policy()));
    match claimed.await {
        Ok(Ok(Claim::Granted)) => true,
        Ok(Ok(Claim::Refused { owner })) => {
            info!(target: TARGET, id = %chan.id(), %owner, "id held on another node");
            false
        }
        Ok(Err(e)) => {
            warn!(target: TARGET, id = %chan.id(), error = %e, "cluster claim not made; logged in here only");
            true
        }
        Err(_) => {
            warn!(target: TARGET, id = %chan.id(), "cluster claim timed out; logged in here only");
            true
        }
    }
}

/// Sends a close frame for a refused login and waits briefly for the peer to close, so the
/// close frame is read before the connection goes away.
async fn refuse<F: Framed>(conn: &mut Conn<F>, reason: &CloseReason, opts: &ServerOptions) {
    let frame = conn.framed.close_frame(reason);
    let sent = tokio::time::timeout(opts.write_wait(), async {
        conn.framed.send(frame).await?;
        conn.framed.shutdown().await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    // Drain what the client still sends until it closes, so that unread input does not turn
    // the close into a reset that could destroy the close frame in flight.
    let _ = tokio::time::timeout(opts.close_wait(), async {
        while let Ok(Some(_)) = conn.framed.read_frame().await {}
    })
    .await;
}
