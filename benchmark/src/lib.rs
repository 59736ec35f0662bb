//! kim's benchmark library: the workloads, the IPC wire measured alone, the load generator's
//! wire encoding, and the handling of server processes. The `kim-benchmark` binary runs them
//! against kim and the baseline; the tests drive them against in-process servers to keep them
//! honest.

#![warn(missing_docs)]

pub mod ipc;
pub mod parallel;
pub mod proc;
pub mod wire;
pub mod workloads;
