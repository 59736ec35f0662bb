//! A session's held messages, as its channel's outbox keeps them: the numbers, and which of
//! the messages a writer has taken.
//!
//! With a session, the outbox's queue is not handed to the writer and dropped: it is the
//! session's log. It holds every message numbered and not yet acknowledged, oldest first;
//! `frames[0]` has number `first`, and `frames[..written]` went to a writer. A batch for the
//! writer is a copy of the rest (reference counts, not payloads). Acknowledgements, a resume
//! and the limits drop messages from the front.

use crate::channel::outbox::Queued;
use crate::resume::token::SessionToken;

/// What a held message costs the server beyond its payload: its entry in the log (a room
/// message's payload is shared by every member's entry and counted for each).
pub(crate) const ENTRY_COST: usize = std::mem::size_of::<Queued>();

/// Payloads up to this size are copied when held: the largest read a transport makes at once
/// (kim-io's `MAX_READ_SIZE`), so a payload this small may share its read buffer with others.
const COPY_HELD: usize = 64 * 1024;

/// A message as a log holds it: a payload of its own, copied out of what it came in (say, the
/// read buffer of the request it answers). Held as it came, it would keep that buffer whole
/// until acknowledged: the buffer could not be reused for the next read, every read would take
/// fresh memory, and what the session holds would be up to a read size per message, not its
/// payload, so the limits and the server's total would undercount it. The copy costs less than
/// the fresh read buffer it saves (echo of 16 KiB messages with sessions: 16% faster, half the
/// resident memory). Larger payloads had a read buffer of their own and are held as they are;
/// so are room messages, whose payload every member shares.
pub(crate) fn detached(q: Queued) -> Queued {
    match q {
        Queued::Frame(f) if !f.payload.is_empty() && f.payload.len() <= COPY_HELD => {
            let payload = bytes::Bytes::copy_from_slice(&f.payload);
            Queued::Frame(crate::frame::Frame::new(f.op, payload))
        }
        q => q,
    }
}

/// A message's cost towards the server's total.
pub(crate) fn cost(q: &Queued) -> usize {
    ENTRY_COST + q.len()
}

/// The bounds of held messages, from the server's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldLimits {
    /// Messages one session holds at most; past it the oldest are dropped.
    pub(crate) messages: usize,
    /// Payload bytes one session holds at most; past it the oldest are dropped.
    pub(crate) bytes: usize,
}

/// The session's part of an outbox's queue: all zeros for a channel without a session.
#[derive(Clone, Copy)]
pub(crate) struct Held {
    pub(crate) token: SessionToken,
    /// The number of `frames[0]` (the next number when nothing is held); 0 without a session.
    pub(crate) first: u64,
    /// Frames at the front that went to a writer.
    pub(crate) written: u32,
    /// The highest number of the client's own that the listener took.
    pub(crate) upstream: u32,
}

impl Held {
    /// No session.
    pub(crate) const NONE: Held = Held {
        token: SessionToken::ZERO,
        first: 0,
        written: 0,
        upstream: 0,
    };

    /// A new session's, numbered from 1.
    pub(crate) fn new(token: SessionToken) -> Held {
        Held {
            token,
            first: 1,
            written: 0,
            upstream: 0,
        }
    }

    /// True for a session's.
    pub(crate) fn is_session(&self) -> bool {
        self.first != 0
    }

    /// The highest number sent to any connection of the session (0 for none).
    pub(crate) fn last_sent(&self) -> u64 {
        self.first + u64::from(self.written) - 1
    }

    /// Takes the client's number `n`: true if it is new to this session (and then it is the
    /// highest taken), false for a repeat.
    pub(crate) fn take_upstream(&mut self, n: u32) -> bool {
        if n <= self.upstream {
            return false;
        }
        self.upstream = n;
        true
    }
}

/// What dropping messages from the front of a log freed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freed {
    /// Messages dropped.
    pub(crate) messages: usize,
    /// Their payload bytes.
    pub(crate) bytes: usize,
    /// Their cost towards the server's total.
    pub(crate) cost: usize,
    /// Dropped that no writer had taken.
    pub(crate) unwritten: usize,
}

/// Drops the `n` oldest messages of the log.
pub(crate) fn drop_front(frames: &mut Vec<Queued>, held: &mut Held, n: usize) -> Freed {
    let n = n.min(frames.len());
    let mut freed = Freed::default();
    for q in frames.drain(..n) {
        freed.messages += 1;
        freed.bytes += q.len();
        freed.cost += cost(&q);
    }
    held.first += n as u64;
    let written = held.written as usize;
    freed.unwritten = n.saturating_sub(written);
    held.written = written.saturating_sub(n) as u32;
    freed
}

/// How many of the oldest messages to drop so that the log is within `max_messages` and
/// `max_bytes` (`bytes` its payload now); the newest is always kept.
pub(crate) fn over_limits(
    frames: &[Queued],
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
) -> usize {
    let mut n = frames.len().saturating_sub(max_messages.max(1));
    let mut left = bytes - frames[..n].iter().map(Queued::len).sum::<usize>();
    while left > max_bytes && n + 1 < frames.len() {
        left -= frames[n].len();
        n += 1;
    }
    n
}

/// The highest level such that cutting every size in `sorted` (largest first) down to it
/// frees at least `need` (0 if even that does not).
pub(crate) fn level_freeing(sorted: &[usize], need: usize) -> usize {
    let mut above = 0usize;
    for (i, &size) in sorted.iter().enumerate() {
        above += size;
        let next = sorted.get(i + 1).copied().unwrap_or(0);
        let count = i + 1;
        // Cutting the first `count` down to `next` frees this much.
        if above - count * next >= need {
            return (above - need) / count;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::level_freeing;

    #[test]
    fn the_level_cuts_the_largest_first() {
        // Cutting 100 to 80 frees 20.
        assert_eq!(level_freeing(&[100, 50, 10], 20), 80);
        // 100 and 50 down to 40 frees 70.
        assert_eq!(level_freeing(&[100, 50, 10], 70), 40);
        // Everything.
        assert_eq!(level_freeing(&[100, 50, 10], 1000), 0);
        assert_eq!(level_freeing(&[], 5), 0);
    }
}
