//! Channels: a logged-in connection as the rest of the application sees it.
//!
//! A [`Channel`] is a cheap handle (one `Arc`) to a connection's identity and its bounded
//! outbound queue (the *outbox*). Pushing appends to the outbox and wakes the connection's task,
//! which owns the socket and writes the whole outbox as one batch. A push never waits: when the
//! outbox is full the push fails at once, so a client that stops reading can cost at most the
//! outbox bound, and nobody else waits for it.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::PushError;
use crate::frame::{CloseReason, Frame};
use crate::metrics::CloseCause;
use crate::server::{Core, ServerHandle};
use crate::throttle::LogThrottle;

/// The id of a channel: the user (or device) id an [`Acceptor`](crate::Acceptor) assigned at
/// login. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChannelId(Arc<str>);

impl ChannelId {
    /// A channel id from any string.
    pub fn new(id: impl AsRef<str>) -> ChannelId {
        ChannelId(Arc::from(id.as_ref()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Hash for ChannelId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must agree with `str`'s hash for `Borrow<str>` lookups.
        self.as_str().hash(state)
    }
}

impl Borrow<str> for ChannelId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ChannelId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ChannelId {
    fn from(s: &str) -> ChannelId {
        ChannelId::new(s)
    }
}

impl From<String> for ChannelId {
    fn from(s: String) -> ChannelId {
        ChannelId(Arc::from(s))
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Key-value metadata an [`Acceptor`](crate::Acceptor) attaches to a channel at login (a device
/// type, a tenant, an app version). Small and ordered by insertion; empty costs nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Meta(Vec<(String, String)>);

impl Meta {
    /// Empty metadata.
    pub fn new() -> Meta {
        Meta(Vec::new())
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Builder form of [`Meta::insert`].
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Meta {
        self.insert(key, value);
        self
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All pairs, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
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

/// How a close request treats what is still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseMode {
    /// Write what is queued, then a close frame, then wait briefly for the peer's close.
    Graceful,
    /// Drop the connection now: the socket cannot be written (write deadline), or the shutdown
    /// deadline passed.
    Abort,
}

/// State shared between a channel's handles and its task, under one short-held lock.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) frames: VecDeque<Frame>,
    pub(crate) bytes: usize,
    /// A close requested from outside the task (kick, shutdown, read deadline), not yet
    /// taken by the task.
    pub(crate) close: Option<(CloseReason, CloseMode, CloseCause)>,
    /// Set once a close is requested or begun: pushes fail from then on.
    pub(crate) closing: bool,
    /// Set once the task has ended: close requests are moot.
    pub(crate) ended: bool,
    /// The task's waker, set while the task waits for work.
    pub(crate) waker: Option<Waker>,
    /// Set while the task is running its loop: a push then needs no wake-up, because the
    /// task looks at the outbox again before it waits (a handler's reply to its own channel
    /// would otherwise schedule the task once more for nothing).
    pub(crate) running: bool,
}

pub(crate) struct ChannelInner {
    pub(crate) id: ChannelId,
    pub(crate) meta: Meta,
    /// Distinguishes this login from another channel with the same id (after a kick).
    pub(crate) serial: u64,
    pub(crate) core: Arc<Core>,
    /// The server clock (ms) at the last frame read; checked against read_wait by the sweeper.
    pub(crate) last_read: AtomicU64,
    pub(crate) outbox: Mutex<Outbox>,
    /// Process mode: bytes of this channel's traffic on its way between master and worker.
    /// In the master, its messages sent to workers and not yet handled there: reading pauses
    /// while it is high, as it does while replies wait in the outbox, so the replies still in
    /// transit always fit the outbox. In a worker, pushes to it not yet sent to the master
    /// (see `ipc::InTransit`).
    pub(crate) ipc_pending: AtomicUsize,
}

/// A handle to a logged-in connection: its id and metadata, and a way to push to it.
///
/// Clones are cheap and can be moved to any task or thread. A handle outlives its connection
/// safely: pushes to a closed channel fail with [`PushError::Closed`].
#[derive(Clone)]
pub struct Channel {
    pub(crate) inner: Arc<ChannelInner>,
}

/// What a [`MessageListener`](crate::MessageListener) is handed with each message: the channel
/// the message came from, to read its id and metadata and to push replies. The same type as
/// [`Channel`], named as KIM names it.
pub type Agent = Channel;

impl Channel {
    pub(crate) fn new(id: ChannelId, meta: Meta, serial: u64, core: Arc<Core>) -> Channel {
        let now = core.clock();
        Channel {
            inner: Arc::new(ChannelInner {
                id,
                meta,
                serial,
                core,
                last_read: AtomicU64::new(now),
                outbox: Mutex::new(Outbox::default()),
                ipc_pending: AtomicUsize::new(0),
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

    /// A handle to the server this channel belongs to, to push to other channels.
    pub fn server(&self) -> ServerHandle {
        ServerHandle::from_core(self.inner.core.clone())
    }

    /// Queues a binary message. Never waits; fails when the channel is closed or its outbox is
    /// full.
    pub fn push(&self, payload: impl Into<Bytes>) -> Result<(), PushError> {
        self.push_frame(Frame::binary(payload))
    }

    /// Queues a text message.
    pub fn push_text(&self, text: impl Into<String>) -> Result<(), PushError> {
        self.push_frame(Frame::text(text.into()))
    }

    /// Queues a text or binary frame. Other opcodes belong to the framework and are refused.
    pub fn push_frame(&self, frame: Frame) -> Result<(), PushError> {
        let r = self.try_push(frame);
        if let Err(e) = &r {
            self.inner.core.metrics.push_failed(e);
            log_push_failed(self.inner.id.as_str(), e);
        }
        r
    }

    fn try_push(&self, frame: Frame) -> Result<(), PushError> {
        if !frame.op.is_data() {
            return Err(PushError::NotData(frame.op));
        }
        let opts = &self.inner.core.options;
        if frame.payload.len() > opts.max_message_size() {
            return Err(PushError::TooLarge {
                len: frame.payload.len(),
                max: opts.max_message_size(),
            });
        }
        if let Some(remote) = &self.inner.core.remote {
            // In a worker: the master writes it.
            return remote.push(self, frame);
        }
        let waker = {
            let mut ob = self.inner.outbox.lock();
            if ob.closing {
                return Err(PushError::Closed);
            }
            if ob.frames.len() >= opts.outbound_queue() || ob.bytes >= opts.outbound_queue_bytes() {
                return Err(PushError::Full);
            }
            ob.bytes += frame.payload.len();
            ob.frames.push_back(frame);
            if ob.running {
                None
            } else {
                ob.waker.take()
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Closes the channel: what is queued is written, then a close frame with `reason`. The
    /// [`StateListener`](crate::StateListener) hears of it once the connection is gone.
    pub fn close(&self, reason: CloseReason) {
        if let Some(remote) = &self.inner.core.remote {
            remote.close(self, &reason);
            return;
        }
        self.request_close(reason, CloseMode::Graceful, CloseCause::Server);
    }

    /// True once the channel no longer accepts pushes.
    pub fn is_closed(&self) -> bool {
        self.inner.outbox.lock().closing
    }

    /// Frames queued and not yet handed to the writer.
    pub fn queued(&self) -> usize {
        self.inner.outbox.lock().frames.len()
    }

    pub(crate) fn request_close(&self, reason: CloseReason, mode: CloseMode, cause: CloseCause) {
        let waker = {
            let mut ob = self.inner.outbox.lock();
            // Only an abort overrides a close already requested or under way.
            if ob.ended || (ob.closing && mode == CloseMode::Graceful) {
                return;
            }
            ob.close = Some((reason, mode, cause));
            ob.closing = true;
            ob.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Process mode: a worker handled `n` bytes of this channel's messages (or they were
    /// lost with a worker); wakes the channel's task in case it paused reading.
    pub(crate) fn ipc_done(&self, n: usize) {
        let _ = self
            .inner
            .ipc_pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
        let waker = self.inner.outbox.lock().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Records that a frame was read now, for the read deadline.
    pub(crate) fn touch(&self) {
        self.inner
            .last_read
            .store(self.inner.core.clock(), Ordering::Relaxed);
    }

    pub(crate) fn last_read(&self) -> u64 {
        self.inner.last_read.load(Ordering::Relaxed)
    }

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
