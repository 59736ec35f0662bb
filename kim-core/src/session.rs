//! The task of one logged-in channel: its read loop, its write loop and its message handling,
//! driven together by one future.
//!
//! One task per channel instead of a reader task and a writer task: an idle channel then costs
//! one small task, and a reply pushed by the handler is written in the same poll that read the
//! request, with no wake-up in between. Each poll:
//!
//! 1. runs the handler of the message being handled, if any (a channel's messages are handled
//!    one at a time, in order; reading waits meanwhile, which is the backpressure);
//! 2. the write loop: when the writer is idle, moves the whole outbox into it as one batch and
//!    flushes it, under `write_wait`;
//! 3. the read loop: reads frames, answers pings through the writer, starts the handler for a
//!    message, and turns a close into the close handshake;
//! 4. when nothing can progress, parks its waker in the outbox, where a push finds it.
//!
//! The read deadline is not a timer per channel: every frame stamps the channel with the
//! server's coarse clock, and the server's sweeper closes channels whose stamp is too old.
//!
//! The session is the future of an idle connection's task, so its size is paid by every
//! connection: tokio allocates a task in steps of 128 bytes, and a session of at most 152
//! bytes keeps the task at 256 (at 280 it took 384). Hence the two deadlines share one box,
//! armed only while one runs, and the connection's count among the active ones lives in the
//! channel's drop rather than in a field of its own.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Sleep;

use crate::channel::outbox::{self, Queued};
use crate::channel::{Backlog, Channel};
use crate::close::{CloseCause, CloseMode, CloseReason, End};
use crate::conn::Framed;
use crate::connections::ActiveGuard;
use crate::error::ReadError;
use crate::frame::{Frame, OpCode};
use crate::resume::{suspended, Upstream};
use crate::route::{self, Handling, Route};

/// True if a peer's close ends its session: websocket codes 1000 and 1001, a close without a
/// code, and raw TCP's close frame without a reason.
fn closes_cleanly(reason: &CloseReason) -> bool {
    match reason.code {
        CloseReason::NORMAL | CloseReason::GOING_AWAY => true,
        CloseReason::NO_STATUS => reason.reason.is_empty(),
        _ => false,
    }
}

pin_project_lite::pin_project! {
    /// A session's deadlines, boxed together while either is armed.
    struct Timers {
        // Armed while a flush is blocked: write_wait.
        #[pin]
        write: Option<Sleep>,
        // Armed once we sent a close: close_wait.
        #[pin]
        close: Option<Sleep>,
    }
}

/// The session's channel, counted among the server's active connections until dropped: as the
/// session's last field, after its socket has closed.
struct Counted(Channel);

impl Counted {
    /// Takes over the count `guard` kept since the connection was accepted.
    fn new(chan: Channel, guard: ActiveGuard) -> Counted {
        let connections = guard.transfer();
        debug_assert!(Arc::ptr_eq(&connections, &chan.context().connections));
        Counted(chan)
    }
}

impl Deref for Counted {
    type Target = Channel;

    fn deref(&self) -> &Channel {
        &self.0
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.context().connections.leave();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and writing.
    Open,
    /// A close frame has been queued; reading continues (data is discarded) until the peer's
    /// close or the end of the stream, bounded by close_wait.
    Closing,
    /// The peer closed: our answer is flushed, then the channel ends.
    Answered,
    /// The peer closed, but not cleanly (a websocket code other than 1000 or 1001, a TCP
    /// close frame with a reason): as `Answered`, and a session is suspended, not ended.
    AnsweredAway,
}

pub(crate) struct Session<F, T: Route> {
    /// The connection, read and written through one value: no shared half to allocate.
    framed: F,
    route: Arc<T>,
    phase: Phase,
    /// Set when the channel has ended and left the map.
    ended: Option<End>,
    /// Set once the disconnect callback has returned.
    finished: bool,
    /// While open: the login event, then the handler of the message being handled. Once
    /// ended: the disconnect callback. (One slot: they never run at once.)
    running: Option<Handling>,
    /// write_wait and close_wait, while either runs.
    timers: Option<Pin<Box<Timers>>>,
    /// Why we began closing, if we did.
    cause: Option<CloseCause>,
    /// With a session: which of its connections this is (see [`crate::resume`]).
    generation: u16,
    /// True if the channel has a session: what it sends is numbered, what it reads is the
    /// session codec's.
    numbered: bool,
    /// Last: dropped after the connection, so after the socket has closed.
    chan: Counted,
}

impl<F: Framed, T: Route> Session<F, T> {
    pub(crate) fn new(
        chan: Channel,
        framed: F,
        route: Arc<T>,
        login_event: Option<Handling>,
        guard: ActiveGuard,
        generation: u16,
    ) -> Self {
        let numbered = chan.outbox().has_session();
        Session {
            framed,
            route,
            phase: Phase::Open,
            ended: None,
            finished: false,
            // The login event runs first: reading waits for it, like for a handler.
            running: login_event,
            timers: None,
            cause: None,
            generation,
            numbered,
            chan: Counted::new(chan, guard),
        }
    }

    /// The deadlines, boxed on first use.
    fn timers(&mut self) -> Pin<&mut Timers> {
        self.timers
            .get_or_insert_with(|| {
                Box::pin(Timers {
                    write: None,
                    close: None,
                })
            })
            .as_mut()
    }

    /// Queues our close frame and starts waiting for the peer's.
    fn begin_close(&mut self, reason: &CloseReason, cause: CloseCause) {
        if self.phase != Phase::Open {
            return;
        }
        tracing::debug!(%reason, cause = cause.label(), "closing channel");
        self.cause.get_or_insert(cause);
        self.chan.outbox().refuse_pushes();
        let frame = self.framed.close_frame(reason);
        self.framed.start_frame(frame);
        // A handler in progress may finish (its pushes now fail); close_wait bounds it.
        self.phase = Phase::Closing;
        let wait = self.chan.context().limits.close_wait;
        self.timers()
            .project()
            .close
            .set(Some(tokio::time::sleep(wait)));
    }

    /// Steps 1 to 3 until nothing progresses, then step 4; `Ready` when the channel has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            match self.step(cx) {
                Err(end) => return Poll::Ready(end),
                Ok(true) => {}
                // 4. Park, unless a push or close slipped in since step 2.
                Ok(false) => {
                    let writer_idle = self.framed.pending() == 0;
                    let generation = self.generation;
                    if self.chan.outbox().park(generation, writer_idle, cx.waker()) {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    /// One round of steps 1 to 3: `Ok(true)` if another round may progress.
    ///
    /// Each step runs after the ones whose progress enables it (a finished handler lets its
    /// pushes be written and the next frame be read; a finished flush lets reading resume), so
    /// only a frame read calls for another round: it started a handler or queued a frame.
    /// What else may have happened meanwhile (a push, a close requested from outside) is in
    /// the outbox, where `park` looks.
    #[inline]
    fn step(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        self.poll_handler(cx);
        let backlog = self.fill_writer()?;
        self.poll_flush(cx)?;
        // A close we sent waits for the peer's answer only so long.
        if let Some(t) = self.timers.as_mut() {
            if let Some(close) = t.as_mut().project().close.as_pin_mut() {
                if close.poll(cx).is_ready() {
                    return Err(End::CloseTimeout);
                }
            }
        }
        self.poll_read(cx, backlog)
    }

    /// Step 1, the handler of the current message, if any; cleared once it finished.
    #[inline]
    fn poll_handler(&mut self, cx: &mut Context<'_>) {
        if let Some(h) = self.running.as_mut() {
            if h.as_mut().poll(cx).is_ready() {
                self.running = None;
            }
        }
    }

    /// Step 2, the write loop, first half: when the writer is idle, the outbox moves into it as
    /// one batch, and a close requested from outside begins. Returns what still waits.
    #[inline]
    fn fill_writer(&mut self) -> Result<Backlog, End> {
        if self.framed.pending() > 0 {
            let backlog = self.chan.outbox().backlog(self.generation);
            let backlog = backlog.map_err(|_| End::HandedOver)?;
            if let Some(cause) = backlog.abort {
                self.cause.get_or_insert(cause);
                return Err(End::Aborted);
            }
            return Ok(backlog);
        }
        let (mut n, mut bytes) = (0, 0);
        let codec = &*self.chan.context().sessions.codec;
        let framed = &mut self.framed;
        // A session's frames, numbered as they go into the writer.
        let mut write_held = |seq: u64, q: &Queued| {
            n += 1;
            bytes += q.len() as u64;
            match codec.prefix(seq) {
                Some(p) => framed.start_prefixed(p.as_bytes(), q.frame()),
                None => framed.start_frame(codec.numbered(seq, q.frame())),
            }
        };
        let taken = self
            .chan
            .outbox()
            .take_batch(self.generation, &mut write_held);
        let (batch, close) = taken.map_err(|_| End::HandedOver)?;
        if let Some(mut batch) = batch {
            for q in batch.frames.drain(..) {
                n += 1;
                bytes += q.len() as u64;
                match q {
                    Queued::Frame(f) => self.framed.start_frame(f),
                    Queued::Shared(s) => self.framed.start_shared(&s),
                }
            }
            outbox::recycle(batch);
        }
        if n > 0 && self.chan.context().limits.count_messages {
            self.chan.context().metrics.hot.sent(n, bytes);
        }
        if let Some((reason, mode, cause)) = close {
            if mode != CloseMode::Graceful {
                self.cause.get_or_insert(cause);
                return Err(End::Aborted);
            }
            self.begin_close(&reason, cause);
        }
        Ok(Backlog::default())
    }

    /// Step 2, second half: flushes the writer under write_wait. Once the peer's close is
    /// answered and flushed, the channel ends.
    #[inline]
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Result<(), End> {
        if self.framed.pending() == 0 {
            return match self.phase {
                Phase::Answered | Phase::AnsweredAway => Err(End::Closed),
                _ => Ok(()),
            };
        }
        match self.framed.poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                if let Some(t) = self.timers.as_mut() {
                    t.as_mut().project().write.set(None);
                    if t.close.is_none() {
                        self.timers = None;
                    }
                }
                match self.phase {
                    Phase::Answered | Phase::AnsweredAway => Err(End::Closed),
                    _ => Ok(()),
                }
            }
            Poll::Ready(Err(e)) => Err(End::Io(e.kind())),
            Poll::Pending => {
                let wait = self.chan.context().limits.write_wait;
                let mut write = self.timers().project().write;
                if write.is_none() {
                    write.set(Some(tokio::time::sleep(wait)));
                }
                match write.as_pin_mut().map(|t| t.poll(cx)) {
                    Some(Poll::Ready(())) => Err(End::WriteTimeout),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Step 3, the read loop: one frame at a time, none while a message is being handled or
    /// while too many replies wait. `true` if a frame was read.
    #[inline]
    fn poll_read(&mut self, cx: &mut Context<'_>, backlog: Backlog) -> Result<bool, End> {
        let limits = &self.chan.context().limits;
        let can_read = self.running.is_none()
            && !matches!(self.phase, Phase::Answered | Phase::AnsweredAway)
            && self.framed.pending() + backlog.bytes + self.chan.in_flight().get()
                <= limits.pause_bytes
            && backlog.frames < limits.pause_frames
            && self.route.poll_ready(&self.chan, cx).is_ready();
        if !can_read {
            return Ok(false);
        }
        match self.framed.poll_read_frame(cx) {
            Poll::Pending => Ok(false),
            Poll::Ready(Ok(Some(frame))) => {
                self.chan.touch();
                self.on_frame(frame);
                Ok(true)
            }
            Poll::Ready(Ok(None)) => Err(End::Eof),
            Poll::Ready(Err(ReadError::Protocol(reason))) => {
                if self.phase != Phase::Open {
                    return Err(End::Closed);
                }
                tracing::debug!(%reason, "protocol error");
                self.begin_close(&reason, CloseCause::ProtocolError);
                Ok(true)
            }
            Poll::Ready(Err(ReadError::Io(e))) => Err(End::Io(e.kind())),
            Poll::Ready(Err(ReadError::UnexpectedEof)) => Err(End::Eof),
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        match frame.op {
            OpCode::Text | OpCode::Binary => {
                if self.phase == Phase::Open {
                    let context = self.chan.context();
                    if context.limits.count_messages {
                        context.metrics.hot.received(frame.payload.len());
                    }
                    if self.numbered {
                        self.on_session_frame(frame);
                    } else {
                        self.running = self.route.receive(&self.chan, frame);
                    }
                }
            }
            OpCode::Ping => {
                if self.phase == Phase::Open {
                    self.framed.start_frame(Frame::pong(frame.payload));
                }
            }
            OpCode::Close => {
                let mut phase = Phase::Answered;
                if self.phase == Phase::Open {
                    let reason = self.framed.close_reason(&frame.payload);
                    tracing::debug!(%reason, "peer closed");
                    if self.numbered && !closes_cleanly(&reason) {
                        // The session is suspended: pushes are held meanwhile.
                        phase = Phase::AnsweredAway;
                    } else {
                        self.chan.outbox().refuse_pushes();
                    }
                    let answer = self.framed.close_frame(&reason);
                    self.framed.start_frame(answer);
                }
                self.phase = phase;
            }
            OpCode::Pong | OpCode::Continuation => {}
        }
    }

    /// A text or binary frame of a channel with a session: an acknowledgement, or a message
    /// for the app (a numbered one acknowledged once handed over, and handed over once).
    fn on_session_frame(&mut self, frame: Frame) {
        let sessions = &self.chan.context().sessions;
        match sessions.codec.read(frame) {
            Upstream::Ack(seq) => {
                let freed = self.chan.outbox().ack(seq);
                if freed.messages > 0 {
                    let metrics = &self.chan.context().metrics.sessions;
                    metrics.acked.inc_by(freed.messages as u64);
                    sessions.total.released(metrics, freed);
                }
            }
            Upstream::Message { number, frame } => {
                let new = number.is_none_or(|n| self.chan.outbox().take_upstream(n));
                if new {
                    self.running = self.route.receive(&self.chan, frame);
                }
                if let Some(n) = number {
                    let ack = sessions.codec.ack(n);
                    self.framed.start_frame(ack);
                }
            }
            Upstream::Answer(answer) => self.framed.start_frame(answer),
            Upstream::Invalid(why) => {
                tracing::debug!(reason = why, "bad session frame");
                self.begin_close(&CloseReason::protocol(why), CloseCause::ProtocolError);
            }
        }
    }

    /// Takes the channel out of the map and starts the disconnect callback; with a session
    /// whose transport was lost, suspends the session instead.
    fn end(&mut self, end: End) {
        // What we began closing for wins over how the connection then ended.
        let cause = self.cause.unwrap_or(end.cause());
        let id = self.chan.id();
        let away = cause == CloseCause::Peer && self.phase == Phase::AnsweredAway;
        let lost = cause.suspends() || away;
        if end == End::HandedOver {
            tracing::debug!(%id, "connection taken over by a resume");
        } else if self.numbered && lost && self.chan.outbox().suspend(self.generation) {
            self.chan.touch();
            suspended::spawn(self.chan.0.clone(), self.route.clone(), self.generation);
        } else {
            self.running = self.leave(cause);
            match end {
                End::Io(kind) => {
                    tracing::info!(%id, cause = cause.label(), error = %kind, "channel closed")
                }
                _ => tracing::info!(%id, cause = cause.label(), "channel closed"),
            }
        }
        self.timers = None;
        self.ended = Some(end);
    }
}

impl<F: Framed, T: Route> Session<F, T> {
    /// Unless the stream failed or stopped taking writes, tells the peer at the stream's level
    /// too that nothing more comes: one poll of the writer's shutdown, which sends TLS's
    /// close_notify (without it a TLS client cannot tell the end from a cut connection) and
    /// TCP's FIN. Best effort: the socket is closed when the session is dropped either way.
    fn shut_write(&mut self, cx: &mut Context<'_>, end: End) {
        if !matches!(end, End::Io(_) | End::WriteTimeout) {
            let _ = self.framed.poll_shutdown(cx);
        }
    }
}

impl<F, T: Route> Session<F, T> {
    /// What ending a channel does however the session ends (in [`Session::end`], or dropped
    /// before it could end): the outbox refuses pushes and lets go of what it holds, the
    /// channel leaves the map, the cause is counted, and the disconnect callback is returned
    /// to be run (`None` in process mode, where the owning worker runs it).
    fn leave(&self, cause: CloseCause) -> Option<Handling> {
        route::end(&self.chan, &self.route, cause)
    }
}

impl<F: Framed, T: Route> Future for Session<F, T> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        if this.ended.is_none() {
            match this.drive(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(end) => {
                    this.shut_write(cx, end);
                    this.end(end);
                }
            }
        }
        if let Some(d) = this.running.as_mut() {
            if d.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.running = None;
        }
        this.finished = true;
        Poll::Ready(this.ended.unwrap_or(End::Aborted))
    }
}

impl<F, T: Route> Drop for Session<F, T> {
    fn drop(&mut self) {
        // A session dropped before it ended (its runtime shut down, or its task was aborted)
        // still leaves the map and still reports its disconnect, exactly once.
        if self.finished {
            return;
        }
        if self.ended.is_none() {
            let disconnect = self.leave(self.cause.unwrap_or(CloseCause::Shutdown));
            if let (Some(d), Ok(rt)) = (disconnect, tokio::runtime::Handle::try_current()) {
                rt.spawn(d);
            }
        } else if let Some(d) = self.running.take() {
            // The disconnect callback had started: let it finish.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The session is the future of every connection's task, and tokio's task cell is a
    /// 32-byte header, 16 bytes of its own, the future and a 48-byte trailer, in steps of
    /// 128: at most 152 bytes of session keep the task at 256. This checks the session's own
    /// fields with a connection as large as kim-ws's over a TCP stream (104 bytes, which
    /// kim-ws checks on its side).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_session_with_the_largest_connection_fits_152_bytes() {
        #[allow(dead_code)] // only measured
        struct Framed104([u64; 13]);
        type Largest = Session<Framed104, crate::ipc::master::Master>;
        let size = std::mem::size_of::<Largest>();
        assert!(size <= 152, "the session grew to {size} bytes");
    }
}
