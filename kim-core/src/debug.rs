//! Where an operator's tools plug into a server: a [`DebugService`] starts with the server and
//! stops at the end of its shutdown. The `kim-debug` crate is one (metrics over HTTP, CPU and
//! heap profiles, the allocator's figures and trims); kim-core knows only this seam, so a
//! server that wants none of it carries none of it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What runs beside a server for its operator. Given to
/// [`DefaultServer::with_debug`](crate::DefaultServer::with_debug).
pub trait DebugService: Send + Sync + 'static {
    /// Starts beside a server whose metrics are `metrics`, until `stop` is cancelled (at the
    /// end of the server's shutdown). With `listen` (the server's
    /// [`debug_listen`](crate::OptionsBuilder::debug_listen) option), serves on that address
    /// and returns the address it bound. Called before the server listens: an error fails
    /// its start.
    fn start(
        &self,
        metrics: &Arc<Metrics>,
        listen: Option<SocketAddr>,
        stop: CancellationToken,
    ) -> io::Result<Option<SocketAddr>>;
}

/// The service of a server given none: nothing runs beside it, and a `debug_listen` address
/// cannot be served.
pub(crate) struct NoDebugService;

impl DebugService for NoDebugService {
    fn start(
        &self,
        _metrics: &Arc<Metrics>,
        listen: Option<SocketAddr>,
        _stop: CancellationToken,
    ) -> io::Result<Option<SocketAddr>> {
        match listen {
            None => Ok(None),
            Some(addr) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "debug_listen {addr} needs a debug service: \
                     DefaultServer::with_debug(kim_debug::Debug::new())"
                ),
            )),
        }
    }
}
