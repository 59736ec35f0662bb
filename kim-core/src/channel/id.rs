//! Who a channel is: the id its acceptor gave it and the metadata attached at login.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

use smol_str::SmolStr;

/// The id of a channel: the user (or device) id an [`Acceptor`](crate::Acceptor) assigned at
/// login. Cheap to clone.
///
/// Ids of up to 23 bytes (user ids, most device ids) are kept inline, in the 24 bytes the id
/// takes in its channel; longer ones are shared behind a reference count. An inline id saves
/// every connection an allocation of its own.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChannelId(SmolStr);

impl ChannelId {
    /// A channel id from any string.
    pub fn new(id: impl AsRef<str>) -> ChannelId {
        ChannelId(SmolStr::new(id.as_ref()))
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
        ChannelId(SmolStr::from(s))
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
///
/// Every channel holds one, and most hold none: the pairs live behind one pointer, so empty
/// metadata takes 8 bytes of the channel rather than a vector's 24.
#[derive(Clone, Default, PartialEq, Eq)]
// One pointer, where a Vec is three words: the point is the channel's size.
#[allow(clippy::box_collection)]
pub struct Meta(Option<Box<Vec<(String, String)>>>);

impl Meta {
    /// Empty metadata.
    pub fn new() -> Meta {
        Meta(None)
    }

    fn pairs(&self) -> &[(String, String)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        let pairs = self.0.get_or_insert_with(Box::default);
        match pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => pairs.push((key, value)),
        }
    }

    /// Builder form of [`Meta::insert`].
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Meta {
        self.insert(key, value);
        self
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All pairs, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}
