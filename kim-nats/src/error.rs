//! Why a node could not join its cluster.

/// Why [`NatsCluster::connect`](crate::NatsCluster::connect) failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// NATS could not be reached.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// JetStream (needed for one login per id) is off, too old or failing: kim-nats needs
    /// nats-server 2.10 or newer, run with `-js`.
    #[error("JetStream key-value bucket {bucket} unavailable (nats-server must be 2.10 or newer and run with -js): {reason}")]
    KeyValue {
        /// The bucket.
        bucket: String,
        /// What the server said.
        reason: String,
    },
    /// An option with a value that cannot work.
    #[error("invalid option {name}: {reason}")]
    Option {
        /// The option's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
