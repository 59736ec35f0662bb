//! Channels: a logged-in connection as the rest of the application sees it.
//!
//! A [`Channel`] is a cheap handle (one `Arc`) to a connection's identity and its bounded
//! outbound queue (the [outbox](outbox)). Pushing appends to the outbox and wakes the
//! connection's task, which owns the socket and writes the whole outbox as one batch. A push
//! never waits: when the outbox is full the push fails at once, so a client that stops reading
//! can cost at most the outbox bound, and nobody else waits for it.
//!
//! A channel knows its server only through its [`Context`]: the limits its pushes are held
//! to, the clock its reads are stamped with, the metrics it counts in, and the
//! [`Courier`](courier::Courier) that carries what it sends where it must go (its own outbox,
//! the master process, the other nodes).

pub(crate) mod courier;
pub(crate) mod held;
pub(crate) mod id;
mod in_flight;
pub(crate) mod map;
pub(crate) mod outbox;
pub(crate) mod sessions;

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::close::{CloseCause, CloseMode, CloseReason};
use crate::error::PushError;
use crate::frame::Frame;
use crate::resume::token::SessionToken;
use crate::room::name::check_room_name;
use crate::room::policy::Published;
use crate::room::query::Query;
use crate::shared_frame::SharedFrame;
use crate::throttle::LogThrottle;

pub(crate) use courier::Context;
pub use id::{ChannelId, Meta};
pub use map::{ChannelMap, Insert};
pub(crate) use outbox::{Backlog, Outbox};
pub(crate) use sessions::HeldTally;

use outbox::Pushed;

use in_flight::InFlight;
use outbox::Queued;

/// Checks what a push may carry: a text or binary frame within the largest message size.
pub(crate) fn check_push(frame: &Frame, max_message_size: usize) -> Result<(), PushError> {
    if !frame.op.is_data() {
        return Err(PushError::NotData(frame.op));
    }
    if frame.payload.len() > max_message_size {
        return Err(PushError::TooLarge {
            len: frame.payload.len(),
            max: max_message_size,
        });
    }
    Ok(())
}

/// Logs a failed push at debug level, at most once a second: a client that floods a full
/// outbox fails a push per message, and the metrics count every one of them.
pub(crate) fn log_push_failed(id: &str, e: &PushError) {
    static PUSH_FAILED: LogThrottle = LogThrottle::new(Duration::from_secs(1));
    if tracing::enabled!(tracing::Level::DEBUG) {
        if let Some(suppressed) = PUSH_FAILED.allow() {
            tracing::debug!(%id, error = %e, suppressed, "push failed");
        }
    }
}

/// The bounds and deadlines of a server's channels, read once from its options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The largest payload a push may carry.
    pub(crate) max_message_size: usize,
    /// Frames the outbox holds at most.
    pub(crate) outbound_frames: usize,
    /// Bytes the outbox holds at most (checked before a push, so one push may pass it).
    pub(crate) outbound_bytes: usize,
    /// Reading pauses past this many bytes of replies waiting (writer, outbox, in flight)...
    pub(crate) pause_bytes: usize,
    /// ...or this many frames waiting in the outbox.
    pub(crate) pause_frames: usize,
    /// How long a write batch may take.
    pub(crate) write_wait: Duration,
    /// How long our close waits for the peer's.
    pub(crate) close_wait: Duration,
    /// Whether per-message metrics are kept.
    pub(crate) count_messages: bool,
}

/// Reading pauses while more than this many bytes wait in the writer and the outbox (or half
/// the outbox bound, if smaller), so a client that sends requests (or pings) faster than it
/// reads the answers is slowed down by TCP backpressure instead of filling its own outbox
/// until replies are refused.
const WRITE_HIGH_WATER: usize = 1024 * 1024;

impl Limits {
    /// The limits `options` set. Reading pauses well before the outbox is full, so the
    /// replies to what was read always fit: at half the outbox bounds, and at most
    /// [`WRITE_HIGH_WATER`] bytes.
    pub(crate) fn new(options: &crate::ServerOptions) -> Limits {
        Limits {
            max_message_size: options.max_message_size(),
            outbound_frames: options.outbound_queue(),
            outbound_bytes: options.outbound_queue_bytes(),
            pause_bytes: (options.outbound_queue_bytes() / 2).clamp(1, WRITE_HIGH_WATER),
            pause_frames: (options.outbound_queue() / 2).max(1),
            write_wait: options.write_wait(),
            close_wait: options.close_wait(),
            count_messages: options.metrics(),
        }
    }
}

/// What a channel's handles share. Every logged-in connection holds one, so it is kept at
/// 96 bytes: with the `Arc`'s two counts, a 112-byte block (a test checks it).
struct ChannelInner {
    id: ChannelId,
    meta: Meta,
    /// Distinguishes this login from another channel with the same id (after a kick).
    serial: u64,
    context: Arc<Context>,
    /// The clock (ms, wrapping) at the last frame read; checked against read_wait by the
    /// sweeper. 32 bits hold 49 days, far above any read deadline, and pair with `in_flight`
    /// in one word.
    last_read: AtomicU32,
    in_flight: InFlight,
    outbox: Outbox,
}

/// A handle to a logged-in connection: its id and metadata, and a way to push to it.
///
/// Clones are cheap and can be moved to any task or thread. A handle outlives its connection
/// safely: pushes to a closed channel fail with [`PushError::Closed`].
#[derive(Clone)]
pub struct Channel {
    inner: Arc<ChannelInner>,
}

impl Channel {
    pub(crate) fn new(id: ChannelId, meta: Meta, serial: u64, context: Arc<Context>) -> Channel {
        Channel::with_outbox(id, meta, serial, context, Outbox::default())
    }

    /// A channel with a session (see [`crate::resume`]): its outbox holds what it sends
    /// until acknowledged.
    pub(crate) fn with_session(
        id: ChannelId,
        meta: Meta,
        serial: u64,
        context: Arc<Context>,
        token: SessionToken,
    ) -> Channel {
        context.metrics.sessions.open.inc();
        Channel::with_outbox(id, meta, serial, context, Outbox::with_session(token))
    }

    fn with_outbox(
        id: ChannelId,
        meta: Meta,
        serial: u64,
        context: Arc<Context>,
        outbox: Outbox,
    ) -> Channel {
        let now = context.clock.now();
        Channel {
            inner: Arc::new(ChannelInner {
                id,
                meta,
                serial,
                context,
                last_read: AtomicU32::new(now as u32),
                in_flight: InFlight::default(),
                outbox,
            }),
        }
    }

    /// The channel's id.
    pub fn id(&self) -> &ChannelId {
        &self.inner.id
    }

    /// The metadata the acceptor attached at login.
    pub fn meta(&self) -> &Meta {
        &self.inner.meta
    }

    /// Queues a text message (a websocket text frame: a browser gets a string). Never waits;
    /// fails when the channel is closed or its outbox is full.
    pub fn push_text(&self, text: impl Into<String>) -> Result<(), PushError> {
        self.push_frame(Frame::text(text.into()))
    }

    /// Queues a binary message (a browser gets a `Blob` or an `ArrayBuffer`). Never waits.
    pub fn push_binary(&self, payload: impl Into<Bytes>) -> Result<(), PushError> {
        self.push_frame(Frame::binary(payload))
    }

    /// Queues a text or binary frame. Other opcodes belong to the framework and are refused.
    pub fn push_frame(&self, frame: Frame) -> Result<(), PushError> {
        let r = self.try_push(frame);
        if let Err(e) = &r {
            self.inner.context.metrics.push_failed(e);
            log_push_failed(self.inner.id.as_str(), e);
        }
        r
    }

    fn try_push(&self, frame: Frame) -> Result<(), PushError> {
        let context = &*self.inner.context;
        check_push(&frame, context.limits.max_message_size)?;
        context.courier.push(self, frame)
    }

    /// Queues a frame shared with other channels (a room's publish), under the same bounds as
    /// a push. Only channels whose socket is in this process are in rooms. What sessions hold
    /// of it is added to `held`, which the publish settles once for all its members.
    pub(crate) fn push_shared(
        &self,
        shared: &Arc<SharedFrame>,
        held: &mut HeldTally,
    ) -> Result<(), PushError> {
        let pushed = self.enqueue(Queued::Shared(shared.clone()))?;
        held.add(&pushed);
        Ok(())
    }

    /// Queues a frame for this process's socket: where the courier of a process that holds
    /// the sockets delivers a push.
    pub(crate) fn push_local(&self, frame: Frame) -> Result<(), PushError> {
        let pushed = self.enqueue(Queued::Frame(frame))?;
        if pushed.added > 0 {
            let mut held = HeldTally::default();
            held.add(&pushed);
            self.inner.context.settle(held);
        }
        Ok(())
    }

    /// Puts `entry` in the outbox within its bounds, and wakes the task if it waits. With a
    /// session, the entry is numbered and held: what it adds to the server's total is for the
    /// caller to settle.
    fn enqueue(&self, entry: Queued) -> Result<Pushed, PushError> {
        let context = &*self.inner.context;
        let limits = &context.limits;
        let mut pushed = self.inner.outbox.push(
            entry,
            limits.outbound_frames,
            limits.outbound_bytes,
            &context.sessions.limits,
        )?;
        if let Some(w) = pushed.waker.take() {
            w.wake();
        }
        Ok(pushed)
    }

    /// Joins room `room` (see [`crate::room`]); joining a room the channel is in changes
    /// nothing. Fails for a bad name, a closed channel, or one in as many rooms as
    /// [`max_rooms_per_channel`](crate::OptionsBuilder::max_rooms_per_channel) allows. The
    /// channel leaves all its rooms when it ends. In a worker process the join is sent to the
    /// master, ahead of anything this channel pushes or publishes after it; the master checks
    /// the room limit (a join past it is dropped and logged at debug level).
    pub fn join(&self, room: &str) -> Result<(), PushError> {
        self.inner.context.courier.join(self, room)
    }

    /// Leaves room `room`; leaving a room the channel is not in changes nothing.
    pub fn leave(&self, room: &str) -> Result<(), PushError> {
        self.inner.context.courier.leave(self, room)
    }

    /// Publishes `frame` to every member of room `room`, this channel included if it is a
    /// member (it need not be). See [`Hub::publish`](crate::Hub::publish).
    pub fn publish(&self, room: &str, frame: Frame) -> Result<Published, PushError> {
        self.inner.context.courier.publish(room, frame, None)
    }

    /// Publishes `frame` to every member of room `room` but this channel.
    pub fn publish_others(&self, room: &str, frame: Frame) -> Result<Published, PushError> {
        let serial = Some(self.serial());
        self.inner.context.courier.publish(room, frame, serial)
    }

    /// The rooms this channel is in. Answered at once in-process; in a worker process the
    /// master is asked (within a few seconds, or [`PushError::NoAnswer`]).
    pub async fn rooms(&self) -> Result<Vec<String>, PushError> {
        let courier = &self.inner.context.courier;
        courier.ask(Query::RoomsOf(self.serial())).await?.names()
    }

    /// True if this channel is in room `room` (asked of the master in a worker process).
    pub async fn in_room(&self, room: &str) -> Result<bool, PushError> {
        check_room_name(room)?;
        let query = Query::InRoom(self.serial(), room.to_string());
        let n = self.inner.context.courier.ask(query).await?.count()?;
        Ok(n != 0)
    }

    /// Closes the channel: what is queued is written, then a close frame with `reason`. The
    /// [`StateListener`](crate::StateListener) hears of it once the connection is gone.
    pub fn close(&self, reason: CloseReason) {
        self.inner.context.courier.close(self, reason)
    }

    /// True once the channel no longer accepts pushes.
    pub fn is_closed(&self) -> bool {
        self.inner.outbox.is_closing()
    }

    /// Frames queued and not yet handed to the writer.
    pub fn queued(&self) -> usize {
        self.inner.outbox.len()
    }

    /// Asks the channel's task to close it.
    pub(crate) fn request_close(&self, reason: CloseReason, mode: CloseMode, cause: CloseCause) {
        if let Some(w) = self.inner.outbox.request_close(reason, mode, cause) {
            w.wake();
        }
    }

    /// Process mode: `n` bytes of this channel's traffic are no longer in flight (handled by
    /// a worker, or lost with one); wakes the channel's task in case it paused reading.
    pub(crate) fn release_in_flight(&self, n: usize) {
        self.inner.in_flight.release(n);
        if let Some(w) = self.inner.outbox.take_waker() {
            w.wake();
        }
    }

    /// Process mode: the channel's bytes on their way between master and worker.
    #[inline]
    pub(crate) fn in_flight(&self) -> &InFlight {
        &self.inner.in_flight
    }

    /// The channel's outbox.
    #[inline]
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// What the channel shares with the rest of its server.
    #[inline]
    pub(crate) fn context(&self) -> &Arc<Context> {
        &self.inner.context
    }

    /// The login this channel is (ids repeat across logins; serials do not).
    pub(crate) fn serial(&self) -> u64 {
        self.inner.serial
    }

    /// Records that a frame was read now, for the read deadline.
    #[inline]
    pub(crate) fn touch(&self) {
        self.inner
            .last_read
            .store(self.inner.context.clock.now() as u32, Ordering::Relaxed);
    }

    /// The clock at the last frame read, wrapped to 32 bits: compare with `wrapping_sub`.
    pub(crate) fn last_read(&self) -> u32 {
        self.inner.last_read.load(Ordering::Relaxed)
    }

    /// True if both handles are the same login.
    pub(crate) fn same(&self, other: &Channel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.inner.id)
            .field("serial", &self.inner.serial)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every logged-in connection holds one of these behind an `Arc`: 96 bytes plus the two
    /// counts fill a 112-byte size class of jemalloc and mimalloc (and a 128-byte chunk of
    /// glibc's). One word more and each channel takes the next class, 128.
    #[test]
    fn a_channel_fits_a_112_byte_allocation() {
        assert!(
            std::mem::size_of::<ChannelInner>() <= 96,
            "ChannelInner grew to {} bytes",
            std::mem::size_of::<ChannelInner>()
        );
    }
}
