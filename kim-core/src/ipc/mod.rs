//! Process mode: the app's [`MessageListener`](crate::MessageListener) and
//! [`StateListener`](crate::StateListener) run in worker processes fed over `AF_UNIX
//! SOCK_DGRAM` socketpairs, chosen with [`Backend::UnixDatagram`](crate::Backend).
//!
//! The master (the process that called [`DefaultServer::run`](crate::DefaultServer::run) or
//! [`start`](crate::DefaultServer::start))
//! owns every client socket and runs the transports and the login. It starts the workers by
//! re-executing its own program (`fork` is unsafe under a multi-threaded runtime); each worker
//! inherits its end of a socketpair, and its `main`, building the same server, finds out in
//! `run` (or `start`) that it is a worker and runs the listener loop over that socket instead
//! of listening. The app's code is the same in both modes: in a worker, a [`Channel`](crate::Channel)
//! pushes over the socket to the master, which writes to the channel, and the channel
//! directory (ids, metadata) is mirrored so that pushing to a missing id still fails at once.
//!
//! - A worker that dies is respawned (with backoff) on the same socketpair: datagrams queued
//!   for it survive, and no client connection notices.
//! - A reload ([`ServerHandle::reload_workers`](crate::ServerHandle::reload_workers), or
//!   `SIGUSR1` to the master) replaces the workers one at a time while traffic flows; each old
//!   worker first handles everything already sent to it.
//! - Workers exit when the master stops, and also when it is killed: each holds the read end
//!   of a pipe whose write end only the master has.
//!
//! Messages travel as chunks of at most `ipc_max_size` bytes and are reassembled in place
//! (`wire`). The master's queue towards each worker is bounded: when a worker falls behind,
//! the channels routed to it stop reading, and TCP slows their clients down.
//!
//! Process mode plugs into the server at two seams and nowhere else: in the master, the
//! `Master` is the route of every channel's messages (`master`); in a worker, the courier
//! of the channels mirrored from the master carries their pushes, closes and room operations
//! to it (`courier`). The files: `master` and `worker` (the two sides), `courier` (the
//! worker's way out), `rooms` (room operations and questions on the link), `protocol` (what they say:
//! control codes and message bodies with named fields), `link` (one socket and its bounded
//! queue), `wire` (datagrams: chunking and in-place reassembly), `in_transit` (a worker's push
//! counted against its channel until sent), `stats` (what the master reports).

mod courier;
mod in_transit;
mod link;
pub(crate) mod master;
pub(crate) mod protocol;
pub(crate) mod rooms;
pub(crate) mod stats;
pub(crate) mod wire;
pub(crate) mod worker;
pub(crate) mod workers;

pub use stats::IpcStats;

/// Socket buffers are raised towards this size (as far as the system allows).
const SOCKET_BUFFER: usize = 8 << 20;

/// Environment variables a master sets for its workers.
const ENV_FD: &str = "KIM_WORKER_FD";
const ENV_INDEX: &str = "KIM_WORKER_INDEX";
const ENV_LIFELINE: &str = "KIM_WORKER_LIFELINE";

/// True in a worker process started by a kim master (before its server has started). An app's
/// `main` does not need it: [`DefaultServer::run`](crate::DefaultServer::run) serves in either
/// process, and [`before_serving`](crate::DefaultServer::before_serving) and
/// [`with_cluster_connect`](crate::DefaultServer::with_cluster_connect) hold what a worker
/// must not do. A test harness that re-runs its own binary as a worker asks it.
pub fn is_worker() -> bool {
    std::env::var_os(ENV_FD).is_some()
}
