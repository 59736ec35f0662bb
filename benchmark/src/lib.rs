//! kim's benchmark library: the workloads, the IPC wire measured alone, the load generator's
//! wire encoding, the handling of server processes, and a reader of their Prometheus counters.
//! The `kim-benchmark` binary runs them against kim and the baseline; the tests drive them
//! against in-process servers to keep them honest.

#![warn(missing_docs)]

pub mod cluster;
pub mod deflate;
pub mod fanout;
pub mod ipc;
pub mod latency;
pub mod membership;
pub mod nats;
pub mod parallel;
pub mod pipelined;
pub mod proc;
pub mod prometheus;
pub mod sessions;
pub mod slow_consumers;
pub mod tls;
pub mod wire;
pub mod workloads;
