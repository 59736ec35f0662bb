//! The outbox's part in sessions (see [`crate::resume`]): begun with a log, suspended and
//! resumed, acknowledged, trimmed by the server's total. The log itself is
//! [`held`](crate::channel::held).

use std::task::{Poll, Waker};

use parking_lot::Mutex;

use crate::channel::held::{self, Freed, Held};
use crate::channel::outbox::{Outbox, Pending, State, CLOSING, RUNNING, SUSPENDED};
use crate::close::{CloseCause, CloseMode, CloseReason};
use crate::resume::token::SessionToken;

/// A resume the outbox took.
#[derive(Debug)]
pub(crate) struct Resumed {
    /// The connection's generation, for its task.
    pub(crate) generation: u16,
    /// Held messages the new connection gets first.
    pub(crate) replay: u64,
    /// What the client said it has, no longer held.
    pub(crate) freed: Freed,
    /// The previous connection's task, or the suspended session's, to wake: it finds itself
    /// stale.
    pub(crate) waker: Option<Waker>,
}

impl Outbox {
    /// The outbox of a channel with a session.
    pub(crate) fn with_session(token: SessionToken) -> Outbox {
        let log = Box::new(Pending {
            frames: Vec::new(),
            close: None,
            held: Held::new(token),
        });
        Outbox {
            state: Mutex::new(State {
                pending: Some(log),
                ..State::default()
            }),
        }
    }

    /// The client acknowledged every message up to `seq`: they are no longer held. Numbers
    /// not yet sent are not acknowledged (the rest of such an ack is ignored).
    pub(crate) fn ack(&self, seq: u64) -> Freed {
        let mut st = self.state.lock();
        let Some(log) = st.log() else {
            return Freed::default();
        };
        let upto = seq.min(log.held.last_sent());
        let n = upto.saturating_add(1).saturating_sub(log.held.first);
        st.drop_front(n as usize)
    }

    /// Takes the client's number `n`: true if it is new to the session.
    pub(crate) fn take_upstream(&self, n: u32) -> bool {
        let mut st = self.state.lock();
        st.log().is_some_and(|log| log.held.take_upstream(n))
    }

    /// The task of connection `generation` lost its transport: the session is suspended,
    /// unless it is closing (then it ends) or was taken over (then nothing changes). True if
    /// suspended.
    pub(crate) fn suspend(&self, generation: u16) -> bool {
        let mut st = self.state.lock();
        if st.generation != generation || st.has(CLOSING) {
            return false;
        }
        let Some(log) = st.log() else {
            return false;
        };
        // A request left is the drop that suspends it (any other would be closing it).
        log.close = None;
        st.set(SUSPENDED, true);
        st.set(RUNNING, false);
        st.waker = None;
        true
    }

    /// A suspended session's waiter, `generation` the connection that was lost: ready with
    /// `None` once a resume took the session over, with the close's cause once it must end;
    /// pending otherwise (with `waker` left for either).
    pub(crate) fn poll_suspended(
        &self,
        generation: u16,
        waker: &Waker,
    ) -> Poll<Option<CloseCause>> {
        let mut st = self.state.lock();
        if st.generation != generation {
            return Poll::Ready(None);
        }
        if let Some((_, _, cause)) = st.close() {
            return Poll::Ready(Some(*cause));
        }
        st.waker = Some(waker.clone());
        Poll::Pending
    }

    /// A login resumes the session, its client having every message up to `last`: the
    /// messages after it are replayed to the new connection, whose generation is returned.
    /// `None` when that cannot be done exactly: no session, one that is ending, or `last`
    /// before what is held or after what was sent.
    pub(crate) fn resume(&self, token: &SessionToken, last: u64) -> Option<Resumed> {
        let mut st = self.state.lock();
        if st.has(CLOSING) {
            return None;
        }
        let log = st.log()?;
        if !log.held.token.matches(token)
            || last.saturating_add(1) < log.held.first
            || last > log.held.last_sent()
        {
            return None;
        }
        let n = (last + 1 - log.held.first) as usize;
        let freed = st.drop_front(n);
        let log = st.log().expect("a session's log");
        log.held.written = 0;
        let replay = log.frames.len() as u64;
        st.generation = st.generation.wrapping_add(1);
        st.set(SUSPENDED | RUNNING, false);
        Some(Resumed {
            generation: st.generation,
            replay,
            freed,
            waker: st.waker.take(),
        })
    }

    /// The session's token and held messages and bytes, if the channel has a session.
    pub(crate) fn held(&self) -> Option<(SessionToken, usize, usize)> {
        let mut st = self.state.lock();
        let bytes = st.bytes as usize;
        st.log()
            .map(|log| (log.held.token, log.frames.len(), bytes))
    }

    /// Drops the oldest held messages until what is held costs at most `keep` (payloads and
    /// entries; the server's total is over): what it freed. As with a session's own limits,
    /// dropping a message the connection's writer had not taken aborts the connection.
    pub(crate) fn trim_to(&self, keep: usize) -> Freed {
        let mut st = self.state.lock();
        let suspended = st.has(SUSPENDED);
        let Some(log) = st.log() else {
            return Freed::default();
        };
        let mut left: usize = log.frames.iter().map(held::cost).sum();
        let mut n = 0;
        while left > keep && n < log.frames.len() {
            left -= held::cost(&log.frames[n]);
            n += 1;
        }
        let freed = st.drop_front(n);
        let mut waker = None;
        if freed.unwritten > 0 && !suspended && !st.has(CLOSING) {
            st.request((
                CloseReason::policy("slow consumer"),
                CloseMode::Abort,
                CloseCause::SlowConsumer,
            ));
            st.set(CLOSING, true);
            waker = st.waker.take();
        }
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;
    use crate::channel::held::HeldLimits;
    use crate::channel::outbox::{Queued, Stale};
    use crate::error::PushError;
    use crate::frame::Frame;

    const LIMITS: HeldLimits = HeldLimits {
        messages: 4,
        bytes: 1 << 20,
    };

    fn push(ob: &Outbox, text: &'static str) -> Result<super::super::Pushed, PushError> {
        ob.push(Queued::Frame(Frame::text(text)), 100, 1 << 20, &LIMITS)
    }

    /// What the writer of connection `generation` is given: each frame's number and text.
    fn written(ob: &Outbox, generation: u16) -> Result<Vec<(u64, String)>, Stale> {
        let mut got = Vec::new();
        let (batch, _) = ob.take_batch(generation, &mut |seq, q: &Queued| {
            got.push((
                seq,
                String::from_utf8_lossy(&q.frame().payload).into_owned(),
            ))
        })?;
        assert!(batch.is_none(), "a session's frames stay held");
        Ok(got)
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_sessions_queue_is_one_64_byte_block() {
        assert!(std::mem::size_of::<Pending>() <= 64);
    }

    #[test]
    fn messages_are_numbered_held_until_acknowledged_and_copied_to_the_writer() {
        let token = SessionToken::random();
        let ob = Outbox::with_session(token);
        for t in ["a", "b", "c"] {
            assert!(push(&ob, t).unwrap().added > 0);
        }
        assert_eq!(
            written(&ob, 0).unwrap(),
            [(1, "a".into()), (2, "b".into()), (3, "c".into())]
        );
        // Nothing new to write; what was written is still held.
        assert!(written(&ob, 0).unwrap().is_empty());
        assert_eq!(ob.held().map(|h| h.1), Some(3));
        assert_eq!(ob.ack(2).messages, 2);
        // An ack past what was sent covers what was sent.
        push(&ob, "d").unwrap();
        assert_eq!(
            ob.ack(99).messages,
            1,
            "only 3 was sent; 4 is not acknowledged"
        );
        assert_eq!(written(&ob, 0).unwrap(), [(4, "d".into())]);
    }

    #[test]
    fn past_the_limits_the_oldest_go_and_a_live_gap_aborts() {
        let ob = Outbox::with_session(SessionToken::random());
        assert!(ob.suspend(0));
        for t in ["1", "2", "3", "4", "5", "6"] {
            push(&ob, t).unwrap();
        }
        let (token, n, _) = ob.held().unwrap();
        assert_eq!(n, 4, "the 4 newest are held");
        // A resume from before the oldest held (3) is refused; from 2 it replays 3 to 6.
        assert!(ob.resume(&token, 1).is_none());
        let r = ob.resume(&token, 2).expect("an exact resume");
        assert_eq!((r.generation, r.replay), (1, 4));
        // Connected again: a drop of what the writer has not taken aborts the connection.
        push(&ob, "7").unwrap();
        assert!(
            ob.is_closing(),
            "a gap would follow: the connection is aborted"
        );
    }

    #[test]
    fn resumes_are_exact_or_refused_and_take_the_session_over() {
        let token = SessionToken::random();
        let ob = Outbox::with_session(token);
        push(&ob, "a").unwrap();
        push(&ob, "b").unwrap();
        let _ = written(&ob, 0).unwrap();
        push(&ob, "c").unwrap();
        assert!(
            ob.resume(&SessionToken::random(), 0).is_none(),
            "another token"
        );
        assert!(ob.resume(&token, 3).is_none(), "3 was never sent");
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert!(ob.park(0, true, &waker) || written(&ob, 0).is_ok());
        // The connection still looks open: the resume takes over and wakes its task.
        let r = ob.resume(&token, 1).expect("1 was sent");
        assert_eq!(r.replay, 2, "b and c");
        if let Some(w) = r.waker {
            w.wake();
        }
        assert_eq!(written(&ob, 0).err(), Some(Stale));
        assert!(!ob.park(0, true, &waker), "a stale task never parks");
        assert_eq!(
            written(&ob, r.generation).unwrap(),
            [(2, "b".into()), (3, "c".into())]
        );
    }

    #[test]
    fn a_closing_session_is_neither_suspended_nor_resumed() {
        let token = SessionToken::random();
        let ob = Outbox::with_session(token);
        ob.request_close(
            CloseReason::normal("x"),
            CloseMode::Graceful,
            CloseCause::Server,
        );
        assert!(!ob.suspend(0));
        assert!(ob.resume(&token, 0).is_none());
        // A suspension's read-deadline drop leaves pushes open.
        let ob = Outbox::with_session(token);
        ob.request_close(
            CloseReason::normal("x"),
            CloseMode::Suspend,
            CloseCause::ReadTimeout,
        );
        assert!(!ob.is_closing());
        assert!(ob.suspend(0));
        // The drop that suspended the session is done with: the waiter waits.
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        assert!(ob.poll_suspended(0, &waker).is_pending());
        ob.request_close(
            CloseReason::normal("x"),
            CloseMode::Graceful,
            CloseCause::SessionExpired,
        );
        assert!(matches!(
            ob.poll_suspended(0, &waker),
            Poll::Ready(Some(CloseCause::SessionExpired))
        ));
    }

    #[test]
    fn the_clients_numbers_are_taken_once() {
        let ob = Outbox::with_session(SessionToken::random());
        assert!(ob.take_upstream(1));
        assert!(ob.take_upstream(2));
        assert!(!ob.take_upstream(2), "a repeat");
        assert!(!ob.take_upstream(1), "an older one");
        assert!(ob.take_upstream(5), "a later one, past a gap");
        assert!(
            !Outbox::default().take_upstream(1),
            "no session, nothing to take"
        );
    }
}
