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

use crate::channel::held::{self, Freed, Held, HeldLimits};
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

    /// The frame.
    pub(crate) fn frame(&self) -> &Frame {
        match self {
            Queued::Frame(f) => f,
            Queued::Shared(s) => s.frame(),
        }
    }
}

mod log;

pub(crate) use log::Resumed;

/// A close requested from outside the channel's task.
pub(crate) type CloseRequest = (CloseReason, CloseMode, CloseCause);

/// A channel's outbox.
#[derive(Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
}

/// `State::flags`.
pub(super) const CLOSING: u8 = 1;
const ENDED: u8 = 2;
pub(super) const RUNNING: u8 = 4;
pub(super) const SUSPENDED: u8 = 8;

#[derive(Default)]
pub(super) struct State {
    /// What waits for the task, `None` while nothing does: never a box with neither frames
    /// nor a close. With a session, always there: it is the session's log.
    pending: Option<Queue>,
    /// The payload bytes of the frames queued (with a session: held), saturating at
    /// `u32::MAX`: bounds past 4 GiB act as 4 GiB.
    bytes: u32,
    /// CLOSING: set once a close is requested or begun: pushes fail from then on.
    /// ENDED: set once the task (with a session: the session) has ended: close requests are
    /// moot.
    /// RUNNING: set while the task is running its loop: a push then needs no wake-up,
    /// because the task looks at the outbox again before it waits (a handler's reply to its
    /// own channel would otherwise schedule the task once more for nothing).
    /// SUSPENDED: a session without a connection; what is pushed is held, and nobody is
    /// woken for it.
    flags: u8,
    /// With a session: the connection attached to it, counted up by each resume, so that the
    /// task of a connection taken over finds itself stale.
    generation: u16,
    /// The task's waker, set while the task waits for work.
    waker: Option<Waker>,
}

impl State {
    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub(super) fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// Appends `frame`, counting its bytes; an empty outbox takes a queue from the per-thread
    /// spares.
    fn queue(&mut self, frame: Queued) {
        self.count(frame.len());
        self.pending
            .get_or_insert_with(spare::take)
            .frames
            .push(frame);
    }

    fn count(&mut self, len: usize) {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.bytes = self.bytes.saturating_add(len);
    }

    fn uncount(&mut self, len: usize) {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.bytes = self.bytes.saturating_sub(len);
    }

    /// Frames queued (with a session: not yet taken by a writer).
    fn len(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| {
            p.frames.len().saturating_sub(p.held.written as usize)
        })
    }

    /// The session's log, if the channel has a session.
    pub(super) fn log(&mut self) -> Option<&mut Pending> {
        self.pending.as_deref_mut().filter(|p| p.held.is_session())
    }

    /// The close requested from outside the task and not yet taken, if any.
    pub(super) fn close(&self) -> Option<&CloseRequest> {
        self.pending.as_ref()?.close.as_deref()
    }

    /// Sets the close request.
    pub(super) fn request(&mut self, close: CloseRequest) {
        self.pending.get_or_insert_with(spare::take).close = Some(Box::new(close));
    }

    /// The waker to wake for new work: none while the task runs (it looks again) or while
    /// a session is suspended (nobody writes).
    fn waker_for_work(&mut self) -> Option<Waker> {
        if self.has(RUNNING | SUSPENDED) {
            None
        } else {
            self.waker.take()
        }
    }

    /// Drops `n` of the log's oldest messages.
    pub(super) fn drop_front(&mut self, n: usize) -> Freed {
        let Some(log) = self.log() else {
            return Freed::default();
        };
        let freed = held::drop_front(&mut log.frames, &mut log.held, n);
        self.uncount(freed.bytes);
        freed
    }
}

/// What waits for a channel's task: the frames pushed, and a close requested from outside the
/// task (a kick, the read deadline, shutdown), taken after them. With a session, the frames
/// are its log (see [`held`]), and `held` its numbers.
pub(crate) struct Pending {
    /// The frames, in the order pushed.
    pub(crate) frames: Vec<Queued>,
    close: Option<Box<CloseRequest>>,
    /// A batch's: the number of its first frame (0: not numbered). A log's: the session's.
    pub(crate) held: Held,
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

/// The task's connection was taken over by a resume: it ends without ending the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stale;

/// A push that was queued.
#[derive(Debug, Default)]
pub(crate) struct Pushed {
    /// The task to wake.
    pub(crate) waker: Option<Waker>,
    /// With a session: what the push added to what the server holds (its cost), and what
    /// the session's limits dropped to make room.
    pub(crate) added: usize,
    pub(crate) dropped: Freed,
}

impl Outbox {
    /// Queues `frame`, unless the channel is closing or `max_frames` / `max_bytes` are queued
    /// already. With a session, the bounds are those of frames not yet written while a
    /// connection is attached, and past `limits` the oldest messages are dropped instead; one
    /// the connection's writer had not taken aborts the connection (its client would see a
    /// gap), which ends the session.
    pub(crate) fn push(
        &self,
        frame: Queued,
        max_frames: usize,
        max_bytes: usize,
        limits: &HeldLimits,
    ) -> Result<Pushed, PushError> {
        let mut st = self.state.lock();
        if st.has(CLOSING) {
            return Err(PushError::Closed);
        }
        let suspended = st.has(SUSPENDED);
        if st.log().is_some() {
            if !suspended && st.len() >= max_frames {
                return Err(PushError::Full);
            }
            let frame = held::detached(frame);
            let added = held::cost(&frame);
            st.count(frame.len());
            let bytes = st.bytes as usize;
            let log = st.log().expect("a session's log");
            // Grown by a quarter rather than doubled: a held message's entry is most of what
            // it costs a session, and a doubled log would leave up to half of it empty.
            if log.frames.len() == log.frames.capacity() {
                log.frames.reserve_exact((log.frames.len() / 4).max(4));
            }
            log.frames.push(frame);
            let n = held::over_limits(&log.frames, bytes, limits.messages, limits.bytes);
            let dropped = st.drop_front(n);
            if dropped.unwritten > 0 && !suspended {
                st.request((
                    CloseReason::policy("slow consumer"),
                    CloseMode::Abort,
                    CloseCause::SlowConsumer,
                ));
                st.set(CLOSING, true);
                let waker = st.waker.take();
                return Ok(Pushed {
                    waker,
                    added,
                    dropped,
                });
            }
            return Ok(Pushed {
                waker: st.waker_for_work(),
                added,
                dropped,
            });
        }
        let max_bytes = u32::try_from(max_bytes).unwrap_or(u32::MAX);
        if st.len() >= max_frames || st.bytes >= max_bytes {
            return Err(PushError::Full);
        }
        st.queue(frame);
        Ok(Pushed {
            waker: st.waker_for_work(),
            ..Pushed::default()
        })
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
        if st.has(ENDED) || (st.has(CLOSING) && mode == CloseMode::Graceful) {
            return None;
        }
        st.request((reason, mode, cause));
        // A connection dropped to suspend its session leaves the session open to pushes.
        st.set(CLOSING, mode != CloseMode::Suspend);
        st.waker.take()
    }

    /// Pushes fail from now on (the task began a close, or the peer did).
    pub(crate) fn refuse_pushes(&self) {
        self.state.lock().set(CLOSING, true);
    }

    /// True once pushes are refused.
    pub(crate) fn is_closing(&self) -> bool {
        self.state.lock().has(CLOSING)
    }

    /// True while the channel is a suspended session.
    pub(crate) fn is_suspended(&self) -> bool {
        self.state.lock().has(SUSPENDED)
    }

    /// True if the channel has a session.
    pub(crate) fn has_session(&self) -> bool {
        self.state.lock().log().is_some()
    }

    /// Frames queued.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().len()
    }

    /// The task of connection `generation`, its writer idle, takes everything queued (`None`
    /// when no frame is) and any close requested. The emptied queue goes back with
    /// [`recycle`]. With a session, the frames no writer took stay held, and each goes to
    /// `write_held` with its number instead.
    #[allow(clippy::type_complexity)]
    pub(crate) fn take_batch(
        &self,
        generation: u16,
        write_held: &mut dyn FnMut(u64, &Queued),
    ) -> Result<(Option<Queue>, Option<CloseRequest>), Stale> {
        let mut st = self.state.lock();
        if st.generation != generation {
            return Err(Stale);
        }
        st.set(RUNNING, true);
        if let Some(log) = st.log() {
            // Written from where they are held, under the lock: no copy of a handle each, and
            // a small payload is copied once, into the writer.
            let close = log.close.take().map(|c| *c);
            let from = log.held.written as usize;
            for (i, q) in log.frames[from..].iter().enumerate() {
                write_held(log.held.first + (from + i) as u64, q);
            }
            log.held.written = log.frames.len() as u32;
            return Ok((None, close));
        }
        st.bytes = 0;
        let Some(mut pending) = st.pending.take() else {
            return Ok((None, None));
        };
        let close = pending.close.take().map(|c| *c);
        if pending.frames.is_empty() {
            spare::give(pending);
            return Ok((None, close));
        }
        Ok((Some(pending), close))
    }

    /// The task of connection `generation`, its writer busy, looks at what waits.
    pub(crate) fn backlog(&self, generation: u16) -> Result<Backlog, Stale> {
        let mut st = self.state.lock();
        if st.generation != generation {
            return Err(Stale);
        }
        st.set(RUNNING, true);
        let abort = match st.close() {
            Some((_, CloseMode::Abort | CloseMode::Suspend, cause)) => Some(*cause),
            _ => None,
        };
        let bytes = match st.log() {
            Some(log) => {
                let from = log.held.written as usize;
                log.frames[from..].iter().map(Queued::len).sum()
            }
            None => st.bytes as usize,
        };
        Ok(Backlog {
            bytes,
            frames: st.len(),
            abort,
        })
    }

    /// The task found nothing to do: it leaves `waker` for the next push or close, unless
    /// one slipped in since it looked, or its connection was taken over (then it returns
    /// `false` and looks again).
    pub(crate) fn park(&self, generation: u16, writer_idle: bool, waker: &Waker) -> bool {
        let mut st = self.state.lock();
        if st.generation != generation {
            return false;
        }
        let work = match st.close() {
            Some((_, mode, _)) => writer_idle || *mode != CloseMode::Graceful,
            None => writer_idle && st.len() > 0,
        };
        if work {
            return false;
        }
        st.set(RUNNING, false);
        match &st.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => st.waker = Some(waker.clone()),
        }
        true
    }

    /// The task has ended: pushes and closes are refused and what was queued (with a
    /// session: held) is dropped. Returns what the session held, if it had one.
    pub(crate) fn end(&self) -> Option<Freed> {
        let mut st = self.state.lock();
        st.set(CLOSING | ENDED, true);
        st.set(SUSPENDED, false);
        let len = st.log().map(|l| l.frames.len());
        let freed = len.map(|n| st.drop_front(n));
        if let Some(pending) = st.pending.take() {
            spare::give(pending);
        }
        st.bytes = 0;
        st.waker = None;
        freed
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

    use crate::channel::held::Held;
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
                    held: Held::NONE,
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
        queue.held = Held::NONE;
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

    const LIMITS: HeldLimits = HeldLimits {
        messages: 1000,
        bytes: 1 << 20,
    };

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
        assert!(ob
            .push(Queued::Frame(Frame::binary("a")), 2, 100, &LIMITS)
            .is_ok());
        assert!(ob
            .push(Queued::Frame(Frame::binary("b")), 2, 100, &LIMITS)
            .is_ok());
        assert_eq!(
            ob.push(Queued::Frame(Frame::binary("c")), 2, 100, &LIMITS)
                .err(),
            Some(PushError::Full)
        );
        let (batch, close) = ob.take_batch(0, &mut |_, _| {}).unwrap();
        assert_eq!(batch.map_or(0, |q| q.frames.len()), 2);
        assert!(close.is_none());
        assert!(ob
            .push(Queued::Frame(Frame::binary(vec![0; 100])), 2, 100, &LIMITS)
            .is_ok());
        assert_eq!(
            ob.push(Queued::Frame(Frame::binary("d")), 2, 100, &LIMITS)
                .err(),
            Some(PushError::Full)
        );
        ob.refuse_pushes();
        assert_eq!(
            ob.push(Queued::Frame(Frame::binary("e")), 9, 1000, &LIMITS)
                .err(),
            Some(PushError::Closed)
        );
    }

    #[test]
    fn a_parked_task_is_woken_once_by_a_push_and_not_while_running() {
        let ob = Outbox::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let _ = ob.take_batch(0, &mut |_, _| {}).unwrap();
        assert!(ob.park(0, true, &waker));
        let w = ob
            .push(Queued::Frame(Frame::binary("x")), 9, 99, &LIMITS)
            .unwrap();
        w.waker.expect("a parked task is woken").wake();
        // The task runs: it takes the batch, and pushes meanwhile need no wake-up.
        let _ = ob.take_batch(0, &mut |_, _| {}).unwrap();
        assert!(ob
            .push(Queued::Frame(Frame::binary("y")), 9, 99, &LIMITS)
            .unwrap()
            .waker
            .is_none());
        // Work slipped in: the task must not park.
        assert!(!ob.park(0, true, &waker));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn closes_and_ends() {
        let ob = Outbox::default();
        let reason = CloseReason::normal("x");
        ob.request_close(reason.clone(), CloseMode::Graceful, CloseCause::Server);
        // A second graceful request changes nothing; an abort overrides.
        ob.request_close(reason.clone(), CloseMode::Graceful, CloseCause::Kicked);
        assert_eq!(ob.backlog(0).unwrap().abort, None);
        ob.request_close(reason.clone(), CloseMode::Abort, CloseCause::Shutdown);
        assert_eq!(ob.backlog(0).unwrap().abort, Some(CloseCause::Shutdown));
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
        assert!(
            !ob.park(0, true, &waker),
            "a close waits for an idle writer"
        );
        assert!(
            ob.park(0, false, &waker),
            "a graceful close waits for the writer"
        );
        let (frames, close) = ob.take_batch(0, &mut |_, _| {}).unwrap();
        assert!(frames.is_none(), "a close alone hands over no queue");
        assert_eq!(close.map(|c| c.2), Some(CloseCause::Kicked));
        assert!(ob.park(0, true, &waker), "nothing left once taken");

        // Frames, then a close: both in one batch, the frames in order.
        let ob = Outbox::default();
        for p in ["a", "b"] {
            assert!(ob
                .push(Queued::Frame(Frame::binary(p)), 8, 100, &LIMITS)
                .is_ok());
        }
        ob.request_close(reason.clone(), CloseMode::Graceful, CloseCause::Server);
        assert_eq!(ob.len(), 2);
        assert_eq!(
            ob.push(Queued::Frame(Frame::binary("c")), 8, 100, &LIMITS)
                .err(),
            Some(PushError::Closed)
        );
        let (frames, close) = ob.take_batch(0, &mut |_, _| {}).unwrap();
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
        assert_eq!(ob.backlog(0).unwrap().abort, Some(CloseCause::Shutdown));
        assert!(!ob.park(0, false, &waker));
    }
}
