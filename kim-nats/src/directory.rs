//! Where each user is: the claims bucket names the node holding each id, and a bounded cache
//! of recent answers spares that lookup on repeated pushes to the same users.
//!
//! A node subscribes once, to its own subject, rather than once per user it holds: NATS's
//! client gives every subscription a queue of its own (several kilobytes), which per user
//! would cost a node more than the user's channel does. The price is this lookup: a push to a
//! user not in the cache first reads the user's key (one request to the broker), and a cached
//! answer that has gone stale (the user moved, or left) is found out by the node it names,
//! which answers "not here", and looked up afresh once.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::kv;
use kim_core::cluster::ClusterError;

use crate::claims::bounded;
use crate::subject::user_key;
use crate::Inner;

/// Users whose node is remembered at most; the cache starts over when it is full, which
/// costs one lookup per user pushed to afterwards.
const CAPACITY: usize = 65_536;

/// The node of each user recently pushed to.
pub(crate) struct Directory {
    cache: parking_lot::Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    owners: HashMap<Box<str>, Arc<str>>,
    /// Every node name once, shared by the entries naming it.
    names: HashMap<Box<str>, Arc<str>>,
}

/// The node holding a user, as found.
pub(crate) struct Owner {
    pub(crate) node: Arc<str>,
    /// From the cache: it may be stale.
    pub(crate) cached: bool,
}

impl Directory {
    pub(crate) fn new() -> Directory {
        Directory {
            cache: parking_lot::Mutex::default(),
        }
    }

    fn cached(&self, id: &str) -> Option<Arc<str>> {
        self.cache.lock().owners.get(id).cloned()
    }

    fn remember(&self, id: &str, node: &str) {
        let mut cache = self.cache.lock();
        if cache.owners.len() >= CAPACITY {
            *cache = Cache::default();
        }
        let name = match cache.names.get(node) {
            Some(n) => n.clone(),
            None => {
                let n: Arc<str> = Arc::from(node);
                cache.names.insert(node.into(), n.clone());
                n
            }
        };
        cache.owners.insert(id.into(), name);
    }

    /// Drops what is remembered of `id`: its node said it does not hold it.
    pub(crate) fn forget(&self, id: &str) {
        self.cache.lock().owners.remove(id);
    }
}

/// The node holding `id` by the claims bucket, from the cache unless `fresh`; `None` when no
/// node claims it.
pub(crate) async fn owner(
    inner: &Inner,
    id: &str,
    fresh: bool,
) -> Result<Option<Owner>, ClusterError> {
    if !fresh {
        if let Some(node) = inner.directory.cached(id) {
            return Ok(Some(Owner { node, cached: true }));
        }
    }
    let entry = bounded(inner, inner.users_kv.entry(user_key(id))).await?;
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        inner.directory.forget(id);
        return Ok(None);
    };
    let node = String::from_utf8_lossy(&entry.value);
    inner.directory.remember(id, &node);
    Ok(Some(Owner {
        node: Arc::from(&*node),
        cached: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_shares_node_names_and_starts_over_when_full() {
        let d = Directory::new();
        d.remember("alice", "n1");
        d.remember("bob", "n1");
        let (a, b) = (d.cached("alice").unwrap(), d.cached("bob").unwrap());
        assert!(Arc::ptr_eq(&a, &b), "one name, shared");
        d.forget("alice");
        assert!(d.cached("alice").is_none());
        for i in 0..CAPACITY {
            d.remember(&format!("u{i}"), "n2");
        }
        assert!(d.cached("bob").is_none(), "started over");
        assert_eq!(d.cache.lock().owners.len(), 1);
    }
}
