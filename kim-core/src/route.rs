//! Where a channel's messages go: the seam between a channel's task and whoever handles
//! what its client sends.
//!
//! A [`Route`] hears of a channel's login, takes each of its messages, and hears of its end.
//! [`InProcess`] runs the app's listeners in the channel's own task, so a reply is written in
//! the poll that read the request. In process mode the master's
//! [`Master`](crate::ipc::master::Master) sends them to worker processes instead. The session
//! that drives a channel is generic over its route, so the in-process path costs no dynamic
//! call and no check for the other paths.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::app::{MessageListener, StateListener};
use crate::channel::Channel;
use crate::close::CloseCause;
use crate::frame::Frame;

/// The handling of an event a route hands back to the channel's task to run to its end.
pub(crate) type Handling = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a channel's messages, and the news of its login and end, go.
pub(crate) trait Route: Send + Sync + 'static {
    /// A channel logged in and is in the channel map. Returns the login event to run before
    /// the channel reads its first message, if it runs in this task.
    fn opened(self: &Arc<Self>, chan: &Channel) -> Option<Handling>;

    /// Ready when the channel may read its next message: while not, the channel does not
    /// read, and TCP slows its client down.
    fn poll_ready(&self, _chan: &Channel, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }

    /// Takes a text or binary message. Returns the handling to run before the channel reads
    /// its next message, if the handling happens in this task.
    fn receive(self: &Arc<Self>, chan: &Channel, message: Frame) -> Option<Handling>;

    /// The channel ended. Returns the disconnect callback to run, if it runs in this task.
    fn ended(self: &Arc<Self>, chan: &Channel) -> Option<Handling>;

    /// The channel's session lost its connection. Returns the suspend event to run, if it
    /// runs in this task.
    fn suspended(self: &Arc<Self>, chan: &Channel) -> Option<Handling>;

    /// The channel's session was resumed by a new connection. Returns the resume event to
    /// run before the channel reads its first message, if it runs in this task.
    fn resumed(self: &Arc<Self>, chan: &Channel) -> Option<Handling>;
}

/// What ending a channel does, whoever ends it (its task, or a suspended session's waiter):
/// the outbox refuses pushes and lets go of what it holds, the channel leaves the map and its
/// rooms, the cause is counted, and the disconnect callback is returned to be run (`None` in
/// process mode, where the owning worker runs it).
pub(crate) fn end<T: Route>(chan: &Channel, route: &Arc<T>, cause: CloseCause) -> Option<Handling> {
    let context = chan.context();
    if let Some(freed) = chan.outbox().end() {
        let sessions = &context.metrics.sessions;
        context.sessions.total.released(sessions, freed);
        sessions.open.dec();
    }
    context.courier.ended(chan);
    context.metrics.closed(cause);
    route.ended(chan)
}

/// The app's listeners, run by the channel's task in this process.
pub(crate) struct InProcess<L, S> {
    message_listener: L,
    state_listener: S,
}

impl<L, S> InProcess<L, S> {
    pub(crate) fn new(message_listener: L, state_listener: S) -> InProcess<L, S> {
        InProcess {
            message_listener,
            state_listener,
        }
    }
}

impl<L: MessageListener, S: StateListener> Route for InProcess<L, S> {
    fn opened(self: &Arc<Self>, chan: &Channel) -> Option<Handling> {
        let this = self.clone();
        let agent = chan.clone();
        Some(Box::pin(
            async move { this.state_listener.login(&agent).await },
        ))
    }

    fn receive(self: &Arc<Self>, chan: &Channel, message: Frame) -> Option<Handling> {
        let this = self.clone();
        let agent = chan.clone();
        Some(if chan.context().limits.count_messages {
            Box::pin(async move {
                let started = crate::metrics::stopwatch();
                this.message_listener.receive(&agent, message).await;
                let took = crate::metrics::stopwatch().duration_since(started);
                agent.context().metrics.hot.handled(took);
            })
        } else {
            Box::pin(async move { this.message_listener.receive(&agent, message).await })
        })
    }

    fn ended(self: &Arc<Self>, chan: &Channel) -> Option<Handling> {
        let this = self.clone();
        let chan = chan.clone();
        Some(Box::pin(async move {
            this.state_listener.disconnect(&chan).await
        }))
    }

    fn suspended(self: &Arc<Self>, chan: &Channel) -> Option<Handling> {
        let this = self.clone();
        let chan = chan.clone();
        Some(Box::pin(
            async move { this.state_listener.suspend(&chan).await },
        ))
    }

    fn resumed(self: &Arc<Self>, chan: &Channel) -> Option<Handling> {
        let this = self.clone();
        let chan = chan.clone();
        Some(Box::pin(
            async move { this.state_listener.resume(&chan).await },
        ))
    }
}
