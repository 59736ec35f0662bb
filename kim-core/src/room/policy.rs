//! What a publish does to members that do not keep up, and what it reports.

use std::fmt;
use std::sync::Arc;

/// What a publish does to a member whose outbox is full (its client is not reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowMember {
    /// The member misses this message; the publish counts it as skipped. Right for rooms
    /// where the latest state matters more than every message (presence, typing, live feeds).
    #[default]
    Skip,
    /// The member's connection is dropped at once (close cause `slow_consumer`), so that a
    /// client that reconnects knows it must catch up. Right for rooms whose every message
    /// matters (a conversation whose history the client would otherwise silently lose).
    Close,
}

/// Which [`SlowMember`] policy each room gets, decided by its name when the room is created
/// (set with [`OptionsBuilder::room_policy`](crate::OptionsBuilder::room_policy)).
#[derive(Clone)]
pub struct RoomPolicy(Arc<dyn Fn(&str) -> SlowMember + Send + Sync>);

impl RoomPolicy {
    /// A policy chosen per room name.
    pub fn new(f: impl Fn(&str) -> SlowMember + Send + Sync + 'static) -> RoomPolicy {
        RoomPolicy(Arc::new(f))
    }

    /// The same policy for every room.
    pub fn all(policy: SlowMember) -> RoomPolicy {
        RoomPolicy::new(move |_| policy)
    }

    /// The policy of the room named `name`.
    pub fn of(&self, name: &str) -> SlowMember {
        (self.0)(name)
    }
}

impl Default for RoomPolicy {
    fn default() -> Self {
        RoomPolicy::all(SlowMember::Skip)
    }
}

impl fmt::Debug for RoomPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomPolicy(..)")
    }
}

/// What a publish did, known as soon as it returns (nothing waits on a client).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Members whose outbox took the message.
    pub delivered: usize,
    /// Members that missed it because their outbox was full ([`SlowMember::Skip`]).
    pub skipped: usize,
    /// Members closed because their outbox was full ([`SlowMember::Close`]).
    pub closed: usize,
    /// True when the publish was sent on: in a worker process, to the master, which fans it
    /// out and counts it in its metrics (the figures above are then zero); with a cluster, to
    /// the other nodes, which reach their own members (the figures above are this node's).
    pub forwarded: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_chosen_by_name() {
        let p = RoomPolicy::new(|n| {
            if n.starts_with("chat:") {
                SlowMember::Close
            } else {
                SlowMember::Skip
            }
        });
        assert_eq!(p.of("chat:1"), SlowMember::Close);
        assert_eq!(p.of("live"), SlowMember::Skip);
        assert_eq!(RoomPolicy::default().of("x"), SlowMember::Skip);
    }
}
