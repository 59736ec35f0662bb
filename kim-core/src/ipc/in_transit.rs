//! A worker's push on its way to the master, counted against its channel until it has left.

use crate::channel::Channel;
use crate::ipc::protocol::ipc_cost;

/// A push from a worker, counted against its channel's in-flight bytes until it has left the
/// worker (sent to the master, or dropped with a broken link). It is the worker's view of the
/// channel's outbox: a push fails when its own channel has too much on the way, whatever the
/// other channels push, as it does in-process.
#[derive(Debug)]
pub(crate) struct InTransit {
    chan: Channel,
    cost: usize,
}

impl InTransit {
    /// Counts `len` bytes against `chan`, unless it already has `limit` or more on the way.
    pub(crate) fn reserve(chan: &Channel, len: usize, limit: usize) -> Option<InTransit> {
        let cost = ipc_cost(len);
        chan.in_flight().reserve(cost, limit).then(|| InTransit {
            chan: chan.clone(),
            cost,
        })
    }
}

impl Drop for InTransit {
    fn drop(&mut self) {
        self.chan.release_in_flight(self.cost);
    }
}
