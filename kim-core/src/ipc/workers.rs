//! The worker processes a server supervises, as the server's handle and metrics see them:
//! none in-process, the master's in process mode. What differs between the two is here only.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::ipc::master::Master;
use crate::ipc::stats::IpcStats;
use crate::metrics::hot::HandlerHistogram;

/// A server's worker processes: empty until process mode starts its master.
#[derive(Default)]
pub(crate) struct Workers(OnceLock<Arc<Master>>);

impl Workers {
    /// The server runs its listeners in `master`'s workers.
    pub(crate) fn supervise(&self, master: Arc<Master>) {
        let _ = self.0.set(master);
    }

    /// Replaces the workers one at a time; returns how many were replaced (0 without any).
    pub(crate) async fn reload(&self) -> usize {
        match self.0.get() {
            Some(m) => m.reload().await,
            None => 0,
        }
    }

    /// Stops the workers, each after handling what it was sent, within `wait`.
    pub(crate) async fn stop(&self, wait: Duration) {
        if let Some(m) = self.0.get() {
            m.stop(wait).await;
        }
    }

    /// What the workers have done and their handler times; `None` without workers.
    pub(crate) fn stats(&self) -> Option<(IpcStats, HandlerHistogram)> {
        let m = self.0.get()?;
        Some((m.stats(), m.handler_histogram()))
    }

    /// The workers' process ids (0 for one being started); empty without workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.0.get().map(|m| m.worker_pids()).unwrap_or_default()
    }
}
