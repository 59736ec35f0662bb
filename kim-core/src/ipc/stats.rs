//! What process mode has done: the figures [`ServerHandle::ipc_stats`] returns and the
//! metrics show, gathered from the master's own counters and the workers' reports.
//!
//! [`ServerHandle::ipc_stats`]: crate::ServerHandle::ipc_stats

use crate::ipc::protocol::WorkerCounters;
use crate::ipc::wire::RecvStats;

/// What the process mode has done, as seen by the master.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpcStats {
    /// Worker processes configured.
    pub workers: usize,
    /// Workers started again after dying.
    pub respawns: u64,
    /// Workers replaced by reloads.
    pub reloads: u64,
    /// Messages sent to workers (client messages, channel events and control).
    pub messages_sent: u64,
    /// Datagrams sent to workers.
    pub datagrams_sent: u64,
    /// Client messages dispatched to workers.
    pub dispatched: u64,
    /// Of those, handled by a worker's listener (as last reported by the workers).
    pub handled: u64,
    /// Pushes received from workers.
    pub pushes: u64,
    /// Pushes from workers that the target channel refused (gone, closing, full).
    pub push_failed: u64,
    /// What the master's receivers counted (pushes from workers).
    pub master_recv: RecvStats,
    /// What the workers' receivers counted, summed over the last report of every worker
    /// process (those replaced by respawns and reloads included).
    pub worker_recv: RecvStats,
    /// Messages a worker dropped because their channel was unknown to it.
    pub unknown_channel: u64,
    /// Disconnect callbacks the workers ran.
    pub disconnects: u64,
}

/// The reports of one worker slot over its successive processes: every process's last
/// report counts, so the sums only grow across respawns and reloads.
#[derive(Debug, Default)]
pub(crate) struct Reports {
    /// Processes replaced long ago, folded together.
    base: WorkerCounters,
    /// The last report of each of the most recent processes (the current one last).
    recent: Vec<WorkerCounters>,
}

/// Processes whose reports are kept apart (a late report of one of them still replaces its
/// previous one instead of adding to it).
const RECENT_REPORTS: usize = 4;

impl Reports {
    pub(crate) fn update(&mut self, c: WorkerCounters) {
        if let Some(e) = self.recent.iter_mut().find(|e| e.pid == c.pid) {
            *e = c;
            return;
        }
        self.recent.push(c);
        if self.recent.len() > RECENT_REPORTS {
            let old = self.recent.remove(0);
            self.base.add(&old);
        }
    }

    pub(crate) fn total(&self) -> WorkerCounters {
        let mut t = self.base;
        for r in &self.recent {
            t.add(r);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_of_replaced_workers_still_count() {
        let report = |pid, handled| WorkerCounters {
            pid,
            handled,
            ..Default::default()
        };
        let mut r = Reports::default();
        r.update(report(1, 10));
        r.update(report(1, 20));
        assert_eq!(r.total().handled, 20);
        // Respawned: the new process starts from zero, the old one's 20 still count.
        r.update(report(2, 5));
        assert_eq!(r.total().handled, 25);
        // A late report of the old process replaces its previous one.
        r.update(report(1, 21));
        assert_eq!(r.total().handled, 26);
        for pid in 3..10 {
            r.update(report(pid, 1));
        }
        assert_eq!(r.total().handled, 26 + 7);
        assert!(r.recent.len() <= RECENT_REPORTS);
    }
}
