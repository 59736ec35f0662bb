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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Sleep;

use crate::channel::{Channel, CloseMode};
use crate::conn::{FrameReader, FrameWriter};
use crate::error::ReadError;
use crate::frame::{CloseReason, Frame, OpCode};
use crate::ipc::Master;
use crate::listener::{MessageListener, StateListener};
use crate::metrics::CloseCause;
use crate::server::ActiveGuard;

/// Reading pauses while more than this many bytes wait in the writer and the outbox (or half
/// the outbox bound, if smaller), so a client that sends requests (or pings) faster than it
/// reads the answers is slowed down by TCP backpressure instead of filling its own outbox
/// until replies are refused.
const WRITE_HIGH_WATER: usize = 1024 * 1024;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why a channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer sent a close (or the close handshake we started completed).
    Closed,
    /// The stream ended without a close frame.
    Eof,
    /// Reading or writing failed.
    Io(std::io::ErrorKind),
    /// A write batch did not complete within write_wait.
    WriteTimeout,
    /// The channel was aborted (shutdown deadline).
    Aborted,
    /// We sent a close and the peer did not answer within close_wait.
    CloseTimeout,
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
}

/// What the session needs from the server: the app's listeners.
pub(crate) trait Handlers: Send + Sync + 'static {
    type Listener: MessageListener;
    type State: StateListener;
    fn listener(&self) -> &Self::Listener;
    fn state(&self) -> &Self::State;
    /// In process mode, the master that sends messages and channel events to the workers.
    fn backend(&self) -> Option<&Master> {
        None
    }
}

pub(crate) struct Session<R, W, H: Handlers> {
    chan: Channel,
    reader: R,
    writer: W,
    handlers: Arc<H>,
    /// Counts the connection as active until the session is dropped.
    _guard: ActiveGuard,
    phase: Phase,
    /// Set when the channel has ended and left the map.
    ended: Option<End>,
    /// Set once the disconnect callback has returned.
    finished: bool,
    /// While open: the handler of the message being handled. Once ended: the disconnect
    /// callback. (One slot: the two never run at once.)
    running: Option<BoxFuture>,
    /// Armed while a flush is blocked: write_wait.
    write_timer: Option<Pin<Box<Sleep>>>,
    /// Armed once we sent a close: close_wait.
    close_timer: Option<Pin<Box<Sleep>>>,
    /// Reading pauses past this many bytes of replies waiting (writer and outbox)...
    pause_bytes: usize,
    /// ...or this many frames waiting in the outbox.
    pause_frames: usize,
    /// Why we began closing, if we did.
    cause: Option<CloseCause>,
    /// Whether per-message metrics are kept.
    count: bool,
}

impl<R: FrameReader, W: FrameWriter, H: Handlers> Session<R, W, H> {
    pub(crate) fn new(
        chan: Channel,
        reader: R,
        writer: W,
        handlers: Arc<H>,
        guard: ActiveGuard,
    ) -> Self {
        Session {
            chan,
            reader,
            writer,
            handlers,
            _guard: guard,
            phase: Phase::Open,
            ended: None,
            finished: false,
            running: None,
            write_timer: None,
            close_timer: None,
            pause_bytes: 0,
            pause_frames: 0,
            cause: None,
            count: false,
        }
        .with_pause_limits()
    }

    /// Reading pauses well before the outbox is full, so the replies to what was read always
    /// fit: at half the outbox bounds, and at most [`WRITE_HIGH_WATER`] bytes.
    fn with_pause_limits(mut self) -> Self {
        let opts = &self.chan.inner.core.options;
        self.pause_bytes = (opts.outbound_queue_bytes() / 2).clamp(1, WRITE_HIGH_WATER);
        self.pause_frames = (opts.outbound_queue() / 2).max(1);
        self.count = self.chan.inner.core.metrics.per_message;
        self
    }

    /// Queues our close frame and starts waiting for the peer's.
    fn begin_close(&mut self, reason: &CloseReason, cause: CloseCause) {
        if self.phase != Phase::Open {
            return;
        }
        tracing::debug!(%reason, cause = cause.label(), "closing channel");
        self.cause.get_or_insert(cause);
        self.chan.inner.outbox.lock().closing = true;
        let frame = self.writer.close_frame(reason);
        self.writer.start_frame(frame);
        // A handler in progress may finish (its pushes now fail); close_wait bounds it.
        self.phase = Phase::Closing;
        let wait = self.chan.inner.core.options.close_wait();
        self.close_timer = Some(Box::pin(tokio::time::sleep(wait)));
    }

    /// Steps 1 to 3 until nothing progresses; `Ready` when the channel has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            let mut progressed = false;

            // 1. The handler of the current message.
            if let Some(h) = self.running.as_mut() {
                if h.as_mut().poll(cx).is_ready() {
                    self.running = None;
                    progressed = true;
                }
            }

            // 2. The write loop: the outbox moves into an idle writer as one batch.
            let queued = if self.writer.pending() == 0 {
                let (batch, close) = {
                    let mut ob = self.chan.inner.outbox.lock();
                    ob.running = true;
                    ob.bytes = 0;
                    (std::mem::take(&mut ob.frames), ob.close.take())
                };
                if self.count && !batch.is_empty() {
                    let (mut n, mut bytes) = (0, 0);
                    for f in batch {
                        n += 1;
                        bytes += f.payload.len() as u64;
                        self.writer.start_frame(f);
                    }
                    self.chan.inner.core.metrics.hot.sent(n, bytes);
                } else {
                    for f in batch {
                        self.writer.start_frame(f);
                    }
                }
                if let Some((reason, mode, cause)) = close {
                    if mode == CloseMode::Abort {
                        self.cause.get_or_insert(cause);
                        return Poll::Ready(End::Aborted);
                    }
                    self.begin_close(&reason, cause);
                }
                (0, 0)
            } else {
                let mut ob = self.chan.inner.outbox.lock();
                ob.running = true;
                if let Some((_, CloseMode::Abort, cause)) = ob.close {
                    self.cause.get_or_insert(cause);
                    return Poll::Ready(End::Aborted);
                }
                (ob.bytes, ob.frames.len())
            };
            if self.writer.pending() > 0 {
                match self.writer.poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.write_timer = None;
                        progressed = true;
                        if self.phase == Phase::Answered {
                            return Poll::Ready(End::Closed);
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(End::Io(e.kind())),
                    Poll::Pending => {
                        let timer = self.write_timer.get_or_insert_with(|| {
                            let wait = self.chan.inner.core.options.write_wait();
                            Box::pin(tokio::time::sleep(wait))
                        });
                        if timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(End::WriteTimeout);
                        }
                    }
                }
            } else if self.phase == Phase::Answered {
                return Poll::Ready(End::Closed);
            }

            // A close we sent waits for the peer's answer only so long.
            if let Some(t) = self.close_timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(End::CloseTimeout);
                }
            }

            // 3. The read loop: one frame at a time, none while a message is being handled.
            let can_read = self.running.is_none()
                && self.phase != Phase::Answered
                && self.writer.pending()
                    + queued.0
                    + self.chan.inner.ipc_pending.load(Ordering::Acquire)
                    <= self.pause_bytes
                && queued.1 < self.pause_frames
                && !matches!(
                    self.handlers.backend(),
                    Some(m) if m.poll_room(&self.chan, cx).is_pending()
                );
            if can_read {
                match self.reader.poll_read_frame(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(Some(frame))) => {
                        progressed = true;
                        self.chan.touch();
                        self.on_frame(frame);
                    }
                    Poll::Ready(Ok(None)) => return Poll::Ready(End::Eof),
                    Poll::Ready(Err(ReadError::Protocol(reason))) => {
                        if self.phase != Phase::Open {
                            return Poll::Ready(End::Closed);
                        }
                        tracing::debug!(%reason, "protocol error");
                        progressed = true;
                        self.begin_close(&reason, CloseCause::ProtocolError);
                    }
                    Poll::Ready(Err(ReadError::Io(e))) => return Poll::Ready(End::Io(e.kind())),
                    Poll::Ready(Err(ReadError::UnexpectedEof)) => return Poll::Ready(End::Eof),
                }
            }

            if !progressed {
                // 4. Park, unless a push or close slipped in since step 2.
                let mut ob = self.chan.inner.outbox.lock();
                let idle_writer = self.writer.pending() == 0;
                let work = match &ob.close {
                    Some((_, mode, _)) => idle_writer || *mode == CloseMode::Abort,
                    None => idle_writer && !ob.frames.is_empty(),
                };
                if !work {
                    ob.running = false;
                    match &ob.waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => ob.waker = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        match frame.op {
            OpCode::Text | OpCode::Binary => {
                if self.phase == Phase::Open {
                    if self.count {
                        self.chan
                            .inner
                            .core
                            .metrics
                            .hot
                            .received(frame.payload.len());
                    }
                    if let Some(m) = self.handlers.backend() {
                        m.dispatch(&self.chan, frame);
                        return;
                    }
                    let agent = self.chan.clone();
                    let handlers = self.handlers.clone();
                    self.running = Some(if self.count {
                        Box::pin(async move {
                            let started = crate::metrics::clock();
                            handlers.listener().receive(&agent, frame).await;
                            let took = crate::metrics::clock().duration_since(started);
                            agent.inner.core.metrics.hot.handled(took);
                        })
                    } else {
                        Box::pin(async move { handlers.listener().receive(&agent, frame).await })
                    });
                }
            }
            OpCode::Ping => {
                if self.phase == Phase::Open {
                    self.writer.start_frame(Frame::pong(frame.payload));
                }
            }
            OpCode::Close => {
                if self.phase == Phase::Open {
                    let reason = self.reader.close_reason(&frame.payload);
                    tracing::debug!(%reason, "peer closed");
                    self.chan.inner.outbox.lock().closing = true;
                    let answer = self.writer.close_frame(&reason);
                    self.writer.start_frame(answer);
                }
                self.phase = Phase::Answered;
            }
            OpCode::Pong | OpCode::Continuation => {}
        }
    }

    /// Takes the channel out of the map and starts the disconnect callback.
    fn end(&mut self, end: End) {
        // What we began closing for wins over how the connection then ended.
        let cause = self.cause.unwrap_or(match end {
            End::Closed => CloseCause::Peer,
            End::Eof => CloseCause::PeerGone,
            End::Io(_) => CloseCause::IoError,
            End::WriteTimeout => CloseCause::WriteTimeout,
            End::Aborted => CloseCause::Shutdown,
            End::CloseTimeout => CloseCause::CloseTimeout,
        });
        self.running = self.leave(cause);
        match end {
            End::Io(kind) => tracing::info!(cause = cause.label(), error = %kind, "channel closed"),
            _ => tracing::info!(cause = cause.label(), "channel closed"),
        }
        self.write_timer = None;
        self.close_timer = None;
        self.ended = Some(end);
    }
}

impl<R, W, H: Handlers> Session<R, W, H> {
    /// What ending a channel does however the session ends (in [`Session::end`], or dropped
    /// before it could end): the outbox refuses pushes and lets go of what it holds, the
    /// channel leaves the map, the cause is counted, and the disconnect callback is returned
    /// to be run (`None` in process mode, where the owning worker runs it).
    fn leave(&self, cause: CloseCause) -> Option<BoxFuture> {
        let chan = &self.chan;
        {
            let mut ob = chan.inner.outbox.lock();
            ob.closing = true;
            ob.ended = true;
            ob.frames.clear();
            ob.bytes = 0;
            ob.waker = None;
        }
        chan.inner.core.channels.remove_channel(chan);
        chan.inner.core.metrics.closed(cause);
        if let Some(m) = self.handlers.backend() {
            m.ended(chan);
            return None;
        }
        let handlers = self.handlers.clone();
        let chan = chan.clone();
        Some(Box::pin(async move {
            handlers.state().disconnect(chan.id(), chan.meta()).await
        }))
    }
}

impl<R: FrameReader, W: FrameWriter, H: Handlers> Future for Session<R, W, H> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        if this.ended.is_none() {
            match this.drive(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(end) => this.end(end),
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

impl<R, W, H: Handlers> Drop for Session<R, W, H> {
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
