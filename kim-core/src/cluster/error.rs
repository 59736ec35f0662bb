//! Why a call to the other nodes failed.

/// Why a call to the other nodes failed. Such calls are bounded in time: they fail, they do
/// not hang.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The broker is not reachable now (it went away and is being reconnected to).
    #[error("cluster broker unreachable")]
    Disconnected,
    /// No answer came within the cluster's request timeout.
    #[error("cluster request timed out")]
    TimedOut,
    /// The broker answered with an error.
    #[error("cluster broker error: {0}")]
    Broker(String),
}
