//! The outbox: a channel's bounded queue of frames to write, and the hand-over between the
//! tasks that push and the one task that writes.
//!
//! Pushers append and wake the channel's task; the task takes everything queued as one batch.
//! A close requested from outside (a kick, the read deadline, shutdown) travels the same way,
//! so it is ordered after what was pushed before it. Everything lives under one short-held
//! lock; its fields are private, and each step of the protocol is one method here.
//!
//! Process mode adds *in-flight* accounting beside the queue: bytes of the channel's traffic
//! on their way between master and worker. In the master they are its messages not yet
//! handled by a worker (reading pauses while they are high, as it does while replies wait
//! here, so the replies still in transit always fit); in a worker, its pushes not yet sent to
//! the master (a push fails past the outbox bound, as it does in-process).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;

use parking_lot::Mutex;

use crate::close::{CloseCause, CloseMode, CloseReason};
use crate::error::PushError;
use crate::frame::Frame;
use crate::shared_frame::SharedFrame;

/// One entry of an outbox.
pub(crate) enum Queued {
    /// A frame pushed to this channel alone.
    Frame(Frame),
    /// A frame shared with other channels.
    Shared(Arc<SharedFrame>),
}

impl Queued {
    /// The payload's length.
    pub(crate) fn len(&self) -> usize {
        match self {
            Queued::Frame(f) => f.payload.len(),
            Queued::Shared(s) => s.frame().payload.len(),
        }
    }
}

/// A close requested from outside the channel's task.
pub(crate) type CloseRequest = (CloseReason, CloseMode, CloseCause);

/// A channel's outbox.
#[derive(Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    in_flight: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// The frames queued, `None` while none are (an idle channel holds no queue). Boxed: one
    /// pointer where a `Vec` is three words, in every channel.
    frames: Option<Queue>,
    /// Their payload bytes, saturating at `u32::MAX`: bounds past 4 GiB act as 4 GiB.
    bytes: u32,
    /// A close requested from outside the task, not yet taken by the task. Boxed: closes are
    /// rare, and inline it would take 40 bytes of every channel.
    close: Option<Box<CloseRequest>>,
    /// Set once a close is requested or begun: pushes fail from then on.
    closing: bool,
    /// Set once the task has ended: close requests are moot.
    ended: bool,
    /// The task's waker, set while the task waits for work.
    waker: Option<Waker>,
    /// Set while the task is running its loop: a push then needs no wake-up, because the
    /// task looks at the outbox again before it waits (a handler's reply to its own channel
    /// would otherwise schedule the task once more for nothing).
    running: bool,
}

impl State {
    /// Appends `frame`, counting its bytes; an empty outbox takes a queue from the per-thread
    /// spares.
    fn queue(&mut self, frame: Queued) {
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.bytes = self.bytes.saturating_add(len);
        self.frames.get_or_insert_with(spare::take).push(frame);
    }

    /// Frames queued.
    fn len(&self) -> usize {
        self.frames.as_ref().map_or(0, |q| q.len())
    }
}

/// A queue of frames, as an outbox holds it and hands it to the task.
pub(crate) type Queue = Box<Vec<Queued>>;

/// What the task sees when its writer is still busy with the previous batch (nothing, when the
/// writer was idle and took the whole outbox).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Backlog {
    /// Bytes queued.
    pub(crate) bytes: usize,
    /// Frames queued.
    pub(crate) frames: usize,
    /// An abort was requested: the channel must end now.
    pub(crate) abort: Option<CloseCause>,
}

impl Outbox {
    /// Queues `frame`, unless the channel is closing or `max_frames` / `max_bytes` are queued
    /// already. Returns the task's waker when the task must be woken.
    pub(crate) fn push(
        &self,
        frame: Queued,
        max_frames: usize,
        max_bytes: usize,
    ) -> Result<Option<Waker>, PushError> {
        let mut st = self.state.lock();
        if st.closing {
            return Err(PushError::Closed);
        }
        let max_bytes = u32::try_from(max_bytes).unwrap_or(u32::MAX);
        if st.len() >= max_frames || st.bytes >= max_bytes {
            return Err(PushError::Full);
        }
        st.queue(frame);
        Ok(if st.running { None } else { st.waker.take() })
    }

    /// Queues a frame before anyone else can push (the login's reply), whatever the bounds.
    pub(crate) fn push_first(&self, frame: Frame) {
        self.state.lock().queue(Queued::Frame(frame));
    }

    /// Asks the task to close. Only an abort overrides a close already requested or under
    /// way. Returns the waker to wake.
    pub(crate) fn request_close(
        &self,
        reason: CloseReason,
        mode: CloseMode,
        cause: CloseCause,
    ) -> Option<Waker> {
        let mut st = self.state.lock();
        if st.ended || (st.closing && mode == CloseMode::Graceful) {
            return None;
        }
        st.close = Some(Box::new((reason, mode, cause)));
        st.closing = true;
        st.waker.take()
    }

    /// Pushes fail from now on (the task began a close, or the peer did).
    pub(crate) fn refuse_pushes(&self) {
        self.state.lock().closing = true;
    }

    /// True once pushes are refused.
    pub(crate) fn is_closing(&self) -> bool {
        self.state.lock().closing
    }

    /// Frames queued.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().len()
    }

    /// The task, its writer idle, takes everything queued and any close requested. The
    /// emptied queue goes back with [`recycle`].
    pub(crate) fn take_batch(&self) -> (Option<Queue>, Option<CloseRequest>) {
        let mut st = self.state.lock();
        st.running = true;
        st.bytes = 0;
        (st.frames.take(), st.close.take().map(|c| *c))
    }

    /// The task, its writer busy, looks at what waits.
    pub(crate) fn backlog(&self) -> Backlog {
        let mut st = self.state.lock();
        st.running = true;
        let abort = match st.close.as_deref() {
            Some((_, CloseMode::Abort, cause)) => Some(*cause),
            _ => None,
        };
        Backlog {
            bytes: st.bytes as usize,
            frames: st.len(),
            abort,
        }
    }

    /// The task found nothing to do: it leaves `waker` for the next push or close, unless
    /// one slipped in since it looked (then it returns `false` and looks again).
    pub(crate) fn park(&self, writer_idle: bool, waker: &Waker) -> bool {
        let mut st = self.state.lock();
        let work = match st.close.as_deref() {
            Some((_, mode, _)) => writer_idle || *mode == CloseMode::Abort,
            None => writer_idle && st.frames.is_some(),
        };
        if work {
            return false;
        }
        st.running = false;
        match &st.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => st.waker = Some(waker.clone()),
        }
        true
    }

    /// The task has ended: pushes and closes are refused and what was queued is dropped.
    pub(crate) fn end(&self) {
        let mut st = self.state.lock();
        st.closing = true;
        st.ended = true;
        if let Some(queue) = st.frames.take() {
            spare::give(queue);
        }
        st.bytes = 0;
        st.waker = None;
    }

    /// Bytes in flight between master and worker.
    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Counts `n` more bytes in flight.
    pub(crate) fn add_in_flight(&self, n: usize) {
        self.in_flight.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts `n` more bytes in flight, unless `limit` or more are in flight already.
    pub(crate) fn reserve_in_flight(&self, n: usize, limit: usize) -> bool {
        let before = self.in_flight.fetch_add(n, Ordering::AcqRel);
        if before >= limit {
            self.in_flight.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// `n` bytes are no longer in flight (at most all of them). Returns the task's waker, in
    /// case it paused reading.
    pub(crate) fn release_in_flight(&self, n: usize) -> Option<Waker> {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
        self.state.lock().waker.take()
    }
}

/// Hands an emptied batch queue back for the next push on this thread.
pub(crate) fn recycle(queue: Queue) {
    spare::give(queue);
}

/// Empty queues kept per thread. A channel's queue leaves its outbox with every batch, so
/// that an idle channel holds none; without this, the next push (a request's reply, a
/// message in a fan-out) would allocate a queue again, and free it once written. A room's
/// publish fills the queues of all its members before any of them is written, so as many
/// queues are kept as a large room needs at once (a publish to 1,000 members allocated and
/// freed 936 queues, growing each twice, when 64 were kept).
mod spare {
    use std::cell::RefCell;

    use crate::channel::outbox::Queue;

    /// Queues kept per thread: at most 1024 x 64 entries of 40 bytes, 2.6 MB, and only after
    /// so many channels had frames waiting at once.
    const MAX_KEPT: usize = 1024;
    /// The room a new queue starts with: a burst of a few frames (a fan-out's) does not grow
    /// it.
    const FIRST_FRAMES: usize = 8;
    /// The largest queue kept, in frames.
    const MAX_FRAMES: usize = 64;

    thread_local! {
        static SPARE: RefCell<Vec<Queue>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty queue, with room if one is kept.
    pub(super) fn take() -> Queue {
        SPARE
            .try_with(|s| s.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| Box::new(Vec::with_capacity(FIRST_FRAMES)))
    }

    /// Keeps `queue` (emptied) for a later [`take`], unless too many or too large.
    pub(super) fn give(mut queue: Queue) {
        let cap = queue.capacity();
        if cap == 0 || cap > MAX_FRAMES {
            return;
        }
        queue.clear();
        let _ = SPARE.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < MAX_KEPT {
                s.push(queue);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_queued_entry_is_no_larger_than_a_frame() {
        assert_eq!(std::mem::size_of::<Queued>(), std::mem::size_of::<Frame>());
    }

    #[test]
    fn pushes_are_bounded_and_refused_once_closing() {
        let ob = Outbox::default();
        assert!(ob.push(Queued::Frame(Frame::binary("a")), 2, 100).is_ok());
        assert!(ob.push(Queued::Frame(Frame::binary("b")), 2, 100).is_ok());
        assert_eq!(
            ob.push(Queued::Frame(Frame::binary("c")), 2, 100).err(),
            Some(PushError::Full)
        );
        let (batch, close) = ob.take_batch();
        assert_eq!(batch.map_or(0, |q| q.len()), 2);
        assert!(close.is_none());
        assert!(ob
            .push(Queued::Frame(Frame::binary(vec![0; 100])), 2, 100)
            .is_ok());
        assert_eq!(
            ob.push(Queued::Frame(Frame::binary("d")), 2, 100).err(),
            Some(PushError::Full)
        );
        ob.refuse_pushes();
        assert_eq!(
            ob.push(Queued::Frame(Frame::binary("e")), 9, 1000).err(),
            Some(PushError::Closed)
        );
    }

    #[test]
    fn a_parked_task_is_woken_once_by_a_push_and_not_while_running() {
        let ob = Outbox::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let _ = ob.take_batch();
        assert!(ob.park(true, &waker));
        let w = ob.push(Queued::Frame(Frame::binary("x")), 9, 99).unwrap();
        w.expect("a parked task is woken").wake();
        // The task runs: it takes the batch, and pushes meanwhile need no wake-up.
        let _ = ob.take_batch();
        assert!(ob
            .push(Queued::Frame(Frame::binary("y")), 9, 99)
            .unwrap()
            .is_none());
        // Work slipped in: the task must not park.
        assert!(!ob.park(true, &waker));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn closes_and_ends() {
        let ob = Outbox::default();
        let reason = CloseReason::normal("x");
        ob.request_close(reason.clone(), CloseMode::Graceful, CloseCause::Server);
        // A second graceful request changes nothing; an abort overrides.
        ob.request_close(reason.clone(), CloseMode::Graceful, CloseCause::Kicked);
        assert_eq!(ob.backlog().abort, None);
        ob.request_close(reason.clone(), CloseMode::Abort, CloseCause::Shutdown);
        assert_eq!(ob.backlog().abort, Some(CloseCause::Shutdown));
        ob.end();
        assert!(ob
            .request_close(reason, CloseMode::Abort, CloseCause::Shutdown)
            .is_none());
        assert!(ob.is_closing() && ob.len() == 0);
    }

    #[test]
    fn in_flight_is_reserved_up_to_a_limit_and_released_to_zero() {
        let ob = Outbox::default();
        assert!(ob.reserve_in_flight(60, 100));
        assert!(ob.reserve_in_flight(60, 100));
        assert!(!ob.reserve_in_flight(1, 100));
        assert_eq!(ob.in_flight(), 120);
        ob.release_in_flight(usize::MAX);
        assert_eq!(ob.in_flight(), 0);
        ob.add_in_flight(5);
        assert_eq!(ob.in_flight(), 5);
    }
}
