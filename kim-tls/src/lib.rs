//! TLS for kim: wss, and kim's raw TCP frames over TLS, on rustls.
//!
//! TLS wraps any upgrader, so choosing it is choosing the transport:
//!
//! ```no_run
//! use kim_tls::{TlsConfig, TlsUpgrader};
//!
//! # async fn run(listener: impl kim_core::MessageListener) -> Result<(), Box<dyn std::error::Error>> {
//! let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?;
//! let handle = kim_core::DefaultServer::new(TlsUpgrader::new(kim_ws::WsUpgrader::new(), &tls), listener)
//!     .start("0.0.0.0:443")
//!     .await?;
//! // Later, on SIGHUP say: new handshakes get the new certificate, channels stay.
//! tls.reload()?;
//! # Ok(()) }
//! ```
//!
//! - TLS 1.3 and 1.2 with rustls' default crypto provider (aws-lc-rs); session tickets for
//!   resumption, the same keys for every upgrader of one [`TlsConfig`]; ALPN `http/1.1` for
//!   websocket; no client certificates.
//! - The handshake runs inside the upgrade and counts against the server's login deadline.
//!   A broken or non-TLS ClientHello gets rustls' alert and the connection is closed; nothing
//!   else is disturbed.
//! - [`TlsInfo`] (SNI, version, ALPN, resumption) reaches the acceptor in the login's
//!   handshake extensions.
//! - [`TlsConfig::reload`] reads the PEM files again; a bad file is refused with a
//!   [`TlsError`] and the certificate in use stays.
//! - Metrics (in the server's registry): handshakes by version and resumption, failures by
//!   reason, certificate reloads; see the `metrics` module's table in the README.
//! - [`connect`] and [`TlsClientConfig`]: the client side, for kim's clients and tests.

#![warn(missing_docs)]

mod certs;
mod client;
mod error;
mod info;
mod metrics;
mod stream;
mod upgrader;

pub use certs::TlsConfig;
pub use client::{connect, TlsClientConfig, TlsClientIo};
pub use error::TlsError;
pub use info::TlsInfo;
pub use stream::TlsStream;
pub use upgrader::{TlsIo, TlsUpgrader};
