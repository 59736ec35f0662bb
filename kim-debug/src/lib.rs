//! kim-debug: what an operator needs to look inside a running kim server, kept out of
//! kim-core so that a server that wants none of it carries none of it.
//!
//! - The debug listener, an HTTP/1.1 server on the address of the server's
//!   [`debug_listen`](kim_core::OptionsBuilder::debug_listen) option: `/metrics` (the server's
//!   metrics in Prometheus' text format), `/debug/pprof/profile` and `/debug/pprof/flamegraph`
//!   (CPU profiles, with this crate's `pprof` feature) and `/debug/pprof/heap` (the live heap,
//!   from an allocator with a profiler: the `kim-heap-profile` crate).
//! - The process's allocator: its figures (`kim_heap_bytes{state="in_use"|"free"}`), and free
//!   memory given back after a burst (`kim_heap_trims_total`): glibc keeps what a burst freed
//!   unless asked. An allocator other than glibc's tells kim-debug with [`set_allocator`].
//!
//! ```no_run
//! use kim_core::{Channel, DefaultServer, Frame, MessageListener, ServerOptions};
//!
//! struct Echo;
//! impl MessageListener for Echo {
//!     async fn receive(&self, channel: &Channel, message: Frame) {
//!         let _ = channel.push_frame(message);
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let options = ServerOptions::builder()
//!     .debug_listen("127.0.0.1:6060".parse()?)
//!     .build()?;
//! let handle = DefaultServer::new(kim_ws::WsUpgrader::new(), Echo)
//!     .with_options(options)
//!     .with_debug(kim_debug::Debug::new())
//!     .start("127.0.0.1:8000")
//!     .await?;
//! println!("metrics at http://{}/metrics", handle.debug_addr().unwrap());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod allocator;
mod heap;
mod listener;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use kim_core::{DebugService, Metrics};
use tokio_util::sync::CancellationToken;

pub use allocator::{set_allocator, AllocatorControl};

/// The debug listener and the allocator's care, as a server's
/// [`DebugService`]: give it to
/// [`DefaultServer::with_debug`](kim_core::DefaultServer::with_debug).
#[derive(Debug, Clone, Copy, Default)]
pub struct Debug;

impl Debug {
    /// The service: the debug listener where the server's options put one, and the
    /// allocator's figures and trims in any case.
    pub fn new() -> Debug {
        Debug
    }
}

impl DebugService for Debug {
    fn start(
        &self,
        metrics: &Arc<Metrics>,
        listen: Option<SocketAddr>,
        stop: CancellationToken,
    ) -> io::Result<Option<SocketAddr>> {
        let bound = match listen {
            Some(addr) => Some(listener::start(metrics.clone(), stop.clone(), addr)?),
            None => None,
        };
        heap::care(metrics.registry(), stop);
        Ok(bound)
    }
}

/// Internals that kim's fuzz targets drive directly: the debug listener's query parser. Not
/// part of the supported API: it changes without notice.
#[doc(hidden)]
pub mod internals {
    pub use crate::listener::parse_seconds;
}
