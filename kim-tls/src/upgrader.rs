//! The server side: TLS under any upgrader. The TLS handshake runs first, inside the
//! transport's upgrade, so the server's login deadline bounds it like the upgrade it precedes;
//! then the wrapped upgrader (websocket, raw TCP frames) runs on the decrypted stream.

use kim_core::io::Generic;
use kim_core::{Conn, ConnConfig, UpgradeError, Upgrader};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::certs::TlsConfig;
use crate::info::TlsInfo;
use crate::metrics::{Failure, TlsMetrics};

/// The stream a wrapped upgrader runs on: TLS over the accepted TCP connection.
pub type TlsIo = Generic<tokio_rustls::server::TlsStream<TcpStream>>;

/// An upgrader that performs a TLS handshake, then hands the decrypted stream to `U`:
/// `TlsUpgrader::new(WsUpgrader::new(), &config)` serves wss, `TlsUpgrader::new(TcpUpgrader,
/// &config)` kim's raw TCP frames over TLS.
///
/// The handshake counts against the server's login deadline: a client that trickles its
/// ClientHello is dropped when it runs out. What the handshake learned (SNI, version, ALPN,
/// resumption) reaches the acceptor as a [`TlsInfo`] in the login's handshake extensions.
pub struct TlsUpgrader<U> {
    inner: U,
    acceptor: TlsAcceptor,
    config: TlsConfig,
    name: &'static str,
}

impl<U: Upgrader<TlsIo>> TlsUpgrader<U> {
    /// Wraps `inner` in TLS with `config`'s certificate. A websocket upgrader (named `ws`)
    /// gets ALPN `http/1.1` offered, as browsers expect of wss; others none (see
    /// [`TlsUpgrader::with_alpn`]).
    pub fn new(inner: U, config: &TlsConfig) -> TlsUpgrader<U> {
        let (name, alpn): (&'static str, &[&[u8]]) = match inner.name() {
            "ws" => ("wss", &[b"http/1.1"]),
            _ => ("tls", &[]),
        };
        TlsUpgrader {
            acceptor: acceptor(config, alpn),
            inner,
            config: config.clone(),
            name,
        }
    }

    /// Offers these ALPN protocols instead, in order of preference; a client that offers
    /// ALPN but none of these is refused with the `no_application_protocol` alert.
    pub fn with_alpn(mut self, protocols: &[&[u8]]) -> TlsUpgrader<U> {
        self.acceptor = acceptor(&self.config, protocols);
        self
    }

    /// The certificate this upgrader serves (clone it to reload it later).
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }
}

fn acceptor(config: &TlsConfig, alpn: &[&[u8]]) -> TlsAcceptor {
    TlsAcceptor::from(config.server_config(alpn.iter().map(|p| p.to_vec()).collect()))
}

/// Counts a handshake that never ended (its future dropped when the login deadline ran
/// out) as a timeout.
struct Unfinished<'a> {
    metrics: &'a TlsMetrics,
    done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.failed(Failure::Timeout);
        }
    }
}

/// Why a handshake failed, from the error tokio-rustls returns.
fn classify(e: &std::io::Error) -> Failure {
    use rustls::Error as E;
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return Failure::Eof;
    }
    match e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
        Some(E::AlertReceived(_)) => Failure::Alert,
        Some(E::PeerIncompatible(_) | E::NoApplicationProtocol) => Failure::Incompatible,
        Some(_) => Failure::Protocol,
        None => Failure::Io,
    }
}

impl<U: Upgrader<TlsIo>> Upgrader<TcpStream> for TlsUpgrader<U> {
    type Reader = U::Reader;
    type Writer = U::Writer;

    fn name(&self) -> &'static str {
        self.name
    }

    async fn upgrade(
        &self,
        io: TcpStream,
        config: ConnConfig,
    ) -> Result<Conn<Self::Reader, Self::Writer>, UpgradeError> {
        let metrics = self.config.metrics();
        let mut unfinished = Unfinished {
            metrics,
            done: false,
        };
        // On an error rustls has queued its alert, and tokio-rustls writes it before
        // returning.
        let accepted = self.acceptor.accept(io).await;
        unfinished.done = true;
        let stream = accepted.inspect_err(|e| metrics.failed(classify(e)))?;
        let info = TlsInfo::of(stream.get_ref().1);
        metrics.completed(info.version, info.resumed);
        let mut conn = self.inner.upgrade(Generic(stream), config).await?;
        conn.handshake
            .get_or_insert_with(Default::default)
            .extensions
            .insert(info);
        Ok(conn)
    }

    async fn refuse(
        &self,
        conn: &mut Conn<Self::Reader, Self::Writer>,
        status: u16,
        reason: &str,
    ) -> bool {
        self.inner.refuse(conn, status, reason).await
    }

    fn register_metrics(&self, registry: &prometheus::Registry) {
        self.config.metrics().register(registry);
        self.inner.register_metrics(registry);
    }
}
