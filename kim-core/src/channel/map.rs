//! The channel map: every logged-in channel by id, shared by the accept path, pushes from any
//! task, the deadline sweeper and shutdown.
//!
//! The map is split into shards, each a hash set behind its own read-write lock, so that a
//! login on one core and a push on another rarely touch the same lock, and iteration holds one
//! shard at a time.
//!
//! A set of channels looked up by their ids, rather than a map from id to channel: an entry is
//! the channel's pointer alone (8 bytes, where an id and a channel took 32), because the id is
//! in the channel already.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher};

use parking_lot::RwLock;

use crate::channel::held::{level_freeing, Freed, ENTRY_COST};
use crate::channel::sessions::TrimLargest;
use crate::channel::Channel;

/// Number of shards; a power of two.
const SHARDS: usize = 64;

/// What happened when a channel was added.
#[derive(Debug)]
pub enum Insert {
    /// The id was free; the channel is now in the map.
    Added,
    /// Another channel already has this id; the map is unchanged.
    Duplicate(Channel),
    /// Another channel had this id and was replaced; the caller closes it.
    Replaced(Channel),
}

/// A channel as an entry of the map: hashed, compared and looked up by its id.
struct ById(Channel);

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, for lookups by `&str`.
        self.0.id().as_str().hash(state)
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &ById) -> bool {
        self.0.id() == other.0.id()
    }
}

impl Eq for ById {}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.0.id().as_str()
    }
}

type Shard = RwLock<HashSet<ById>>;

/// Gives a shard's table back once it is mostly empty: a burst of logins (or of suspended
/// sessions) does not keep its peak's memory after it is gone.
// Entries hash and compare by their id, which never changes.
#[allow(clippy::mutable_key_type)]
fn shrink(shard: &mut HashSet<ById>) {
    if shard.capacity() > 64 && shard.len() * 4 < shard.capacity() {
        shard.shrink_to(shard.len() * 2);
    }
}

/// A concurrent map of channels by id.
pub struct ChannelMap {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl Default for ChannelMap {
    fn default() -> Self {
        ChannelMap::new()
    }
}

impl ChannelMap {
    /// An empty map.
    pub fn new() -> ChannelMap {
        ChannelMap {
            shards: (0..SHARDS).map(|_| RwLock::new(HashSet::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, id: &str) -> &Shard {
        let h = self.hasher.hash_one(id) as usize;
        &self.shards[h & (SHARDS - 1)]
    }

    /// Adds `channel` if its id is free; otherwise leaves the map as it is.
    pub fn add(&self, channel: Channel) -> Insert {
        self.insert(channel, false)
    }

    /// Adds `channel`, replacing any channel with the same id.
    pub fn replace(&self, channel: Channel) -> Insert {
        self.insert(channel, true)
    }

    /// Adds `channel`, replacing a channel with the same id if `replace` says so of it.
    pub(crate) fn insert_replacing(
        &self,
        channel: Channel,
        replace: impl FnOnce(&Channel) -> bool,
    ) -> Insert {
        let mut shard = self.shard(channel.id().as_str()).write();
        let decision = shard.get(channel.id().as_str()).map(|c| replace(&c.0));
        match decision {
            None => {
                shard.insert(ById(channel));
                Insert::Added
            }
            Some(true) => match shard.replace(ById(channel)) {
                Some(ById(old)) => Insert::Replaced(old),
                None => Insert::Added,
            },
            Some(false) => {
                let existing = shard.get(channel.id().as_str()).map(|c| c.0.clone());
                Insert::Duplicate(existing.expect("looked up under the same lock"))
            }
        }
    }

    fn insert(&self, channel: Channel, replace: bool) -> Insert {
        let mut shard = self.shard(channel.id().as_str()).write();
        if replace {
            return match shard.replace(ById(channel)) {
                Some(ById(old)) => Insert::Replaced(old),
                None => Insert::Added,
            };
        }
        if let Some(ById(existing)) = shard.get(channel.id().as_str()) {
            return Insert::Duplicate(existing.clone());
        }
        shard.insert(ById(channel));
        Insert::Added
    }

    /// The channel with this id.
    pub fn get(&self, id: &str) -> Option<Channel> {
        self.shard(id).read().get(id).map(|c| c.0.clone())
    }

    /// True if a channel with this id is in the map.
    pub fn contains(&self, id: &str) -> bool {
        self.shard(id).read().contains(id)
    }

    /// Removes the channel with this id, whichever login it belongs to.
    pub fn remove(&self, id: &str) -> Option<Channel> {
        let mut shard = self.shard(id).write();
        let removed = shard.take(id).map(|c| c.0);
        shrink(&mut shard);
        removed
    }

    /// Removes `channel` only if the map still holds this very channel, not a newer login
    /// with the same id. Returns whether it was removed.
    pub fn remove_channel(&self, channel: &Channel) -> bool {
        let mut shard = self.shard(channel.id().as_str()).write();
        match shard.get(channel.id().as_str()) {
            Some(c) if c.0.same(channel) => {
                shard.remove(channel.id().as_str());
                shrink(&mut shard);
                true
            }
            _ => false,
        }
    }

    /// Number of channels. Exact at some instant during the call.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// True when no channel is in the map.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` for every channel, one shard locked (for reading) at a time. `f` must not add
    /// or remove channels.
    pub fn for_each(&self, mut f: impl FnMut(&Channel)) {
        for shard in self.shards.iter() {
            for c in shard.read().iter() {
                f(&c.0);
            }
        }
    }

    /// Frees at least `need` bytes held by sessions, if they hold that much, from the
    /// largest ones: the largest first, each cut down to a level (oldest messages first), the
    /// level the highest that frees enough, until enough is freed. (Messages are whole:
    /// sessions of one size are cut one after the other, not all of them a little.)
    pub(crate) fn trim_held(&self, need: usize) -> Freed {
        let mut sizes: Vec<(usize, Channel)> = Vec::new();
        self.for_each(|c| {
            if let Some((_, n, bytes)) = c.outbox().held() {
                if n > 0 {
                    sizes.push((bytes + n * ENTRY_COST, c.clone()));
                }
            }
        });
        sizes.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
        let level = level_freeing(&sizes.iter().map(|s| s.0).collect::<Vec<_>>(), need);
        let mut freed = Freed::default();
        for (size, chan) in &sizes {
            if *size <= level || freed.cost >= need {
                break;
            }
            let f = chan.outbox().trim_to(level);
            freed.messages += f.messages;
            freed.bytes += f.bytes;
            freed.cost += f.cost;
        }
        freed
    }

    /// A snapshot of every channel.
    pub fn channels(&self) -> Vec<Channel> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each(|c| out.push(c.clone()));
        out
    }
}

impl std::fmt::Debug for ChannelMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelMap")
            .field("len", &self.len())
            .finish()
    }
}

impl TrimLargest for ChannelMap {
    fn trim_largest(&self, need: usize) -> Freed {
        self.trim_held(need)
    }
}

#[cfg(test)]
mod tests;
