//! The outbox: a channel's bounded queue of frames to write, and the hand-over between the
//! tasks that push and the one task that writes.
//!
//! Pushers append and wake the channel's task; the task takes everything queued as one batch.
//! A close requested from outside (a kick, the read deadline, shutdown) travels the same way,
//! so it is ordered after what was pushed before it. Everything lives under one short-held
//! lock; its fields are private, and each step of the protocol is one method here.
//!
//! An idle channel's outbox is 40 bytes: the lock, an empty pointer, the waker, and one word
//! of byte count and flags. Frames and a close request live in a box that exists only while
//! something waits, and comes from a per-thread cache.

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
}

#[derive(Default)]
struct State {
    /// What waits for the task, `None` while nothing does: never a box with neither frames
    /// nor a close.
    pending: Option<Queue>,
    /// The payload bytes of the frames queued, saturating at `u32::MAX`: bounds past 4 GiB
    /// act as 4 GiB.
    bytes: u32,
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
        self.pending
            .get_or_insert_with(spare::take)
            .frames
            .push(frame);
    }

    /// Frames queued.
    fn len(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.frames.len())
    }

    /// The close requested from outside the task and not yet taken, if any.
    fn close(&self) -> Option<&CloseRequest> {
        self.pending.as_ref()?.close.as_ref()
    }
}

/// What waits for a channel's task: the frames pushed, and a close requested from outside the
/// task (a kick, the read deadline, shutdown), taken after them.
pub(crate) struct Pending {
    /// The frames, in the order pushed.
    pub(crate) frames: Vec<Queued>,
    close: Option<CloseRequest>,
}

/// What waits, as an outbox holds it and hands its frames to the task: boxed, so that an
/// outbox with nothing waiting is one null pointer.
pub(crate) type Queue = Box<Pending>;

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
        st.pending.get_or_insert_with(spare::take).close = Some((reason, mode, cause));
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

    /// The task, its writer idle, takes everything queued (`None` when no frame is) and any
    /// close requested. The emptied queue goes back with [`recycle`].
    pub(crate) fn take_batch(&self) -> (Option<Queue>, Option<CloseRequest>) {
        let mut st = self.state.lock();
        st.running = true;
        st.bytes = 0;
        let Some(mut pending) = st.pending.take() else {
            return (None, None);
        };
        let close = pending.close.take();
        if pending.frames.is_empty() {
            spare::give(pending);
            return (None, close);
        }
        (Some(pending), close)
    }

    /// The task, its writer busy, looks at what waits.
    pub(crate) fn backlog(&self) -> Backlog {
        let mut st = self.state.lock();
        st.running = true;
        let abort = match st.close() {
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
        let work = match st.close() {
            Some((_, mode, _)) => writer_idle || *mode == CloseMode::Abort,
            None => writer_idle && st.len() > 0,
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
        if let Some(pending) = st.pending.take() {
            spare::give(pending);
        }
        st.bytes = 0;
        st.waker = None;
    }

    /// The task's waker, if it waits: a caller that changed what it waits on (the bytes in
    /// flight) wakes it.
    pub(crate) fn take_waker(&self) -> Option<Waker> {
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

    use crate::channel::outbox::{Pending, Queue};

    /// Queues kept per thread: at most 1024 x 64 entries of 40 bytes, 2.6 MB, and only after
    /// so many channels had frames waiting at once.
    const MAX_KEPT: usize = 1024;
    /// The capacity a new queue starts with: a burst of a few frames (a fan-out's) does not grow
    /// it.
    const FIRST_FRAMES: usize = 8;
    /// The largest queue kept, in frames.
    const MAX_FRAMES: usize = 64;

    thread_local! {
        static SPARE: RefCell<Vec<Queue>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty queue, with capacity if one is kept.
    pub(super) fn take() -> Queue {
        SPARE
            .try_with(|s| s.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                Box::new(Pending {
                    frames: Vec::with_capacity(FIRST_FRAMES),
                    close: None,
                })
            })
    }

    /// Keeps `queue` (emptied) for a later [`take`], unless too many or too large.
    pub(super) fn give(mut queue: Queue) {
        let cap = queue.frames.capacity();
        if cap == 0 || cap > MAX_FRAMES {
            return;
        }
        queue.frames.clear();
        queue.close = None;
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
    use std::sync::atomic::{AtomicUsize, Ordering};
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
        assert_eq!(batch.map_or(0, |q| q.frames.len()), 2);
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
    fn a_close_is_taken_with_the_frames_pushed_before_it_and_never_counts_as_one() {
        let ob = Outbox::default();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let reason = CloseReason::normal("bye");
        // A close alone: the task has work, but no frame.
        ob.request_close(reason.clone(), CloseMode::Graceful, CloseCause::Kicked);
        assert_eq!(ob.len(), 0);
        assert!(!ob.park(true, &waker), "a close waits for an idle writer");
        assert!(
            ob.park(false, &waker),
            "a graceful close waits for the writer"
        );
        let (frames, close) = ob.take_batch();
        assert!(frames.is_none(), "a close alone hands over no queue");
        assert_eq!(close.map(|c| c.2), Some(CloseCause::Kicked));
        assert!(ob.park(true, &waker), "nothing left once taken");

        // Frames, then a close: both in one batch, the frames in order.
        let ob = Outbox::default();
        for p in ["a", "b"] {
            assert!(ob.push(Queued::Frame(Frame::binary(p)), 8, 100).is_ok());
        }
        ob.request_close(reason.clone(), CloseMode::Graceful, CloseCause::Server);
        assert_eq!(ob.len(), 2);
        assert_eq!(
            ob.push(Queued::Frame(Frame::binary("c")), 8, 100).err(),
            Some(PushError::Closed)
        );
        let (frames, close) = ob.take_batch();
        let payloads: Vec<_> = frames
            .expect("the frames")
            .frames
            .iter()
            .map(|q| match q {
                Queued::Frame(f) => f.payload.clone(),
                Queued::Shared(_) => panic!("pushed alone"),
            })
            .collect();
        assert_eq!(payloads, ["a", "b"]);
        assert_eq!(close.map(|c| c.2), Some(CloseCause::Server));

        // An abort after the graceful close was taken still reaches a busy writer.
        ob.request_close(reason, CloseMode::Abort, CloseCause::Shutdown);
        assert_eq!(ob.backlog().abort, Some(CloseCause::Shutdown));
        assert!(!ob.park(false, &waker));
    }
}
