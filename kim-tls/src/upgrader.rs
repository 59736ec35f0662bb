//! The server side: TLS under any upgrader. The TLS handshake runs first, inside the
//! transport's upgrade, so the server's login deadline bounds it like the upgrade it precedes;
//! then the wrapped upgrader (websocket, raw TCP frames) runs on the decrypted stream.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;

use kim_core::io::Generic;
use kim_core::{Conn, ConnConfig, UpgradeError, Upgrader};
use rustls::server::{Acceptor, ServerConfig, UnbufferedServerConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::certs::TlsConfig;
use crate::info::TlsInfo;
use crate::metrics::{Failure, TlsMetrics};
use crate::stream::TlsStream;

/// The stream a wrapped upgrader runs on: TLS over the accepted TCP connection. Boxed: the
/// TLS state is over a kilobyte, and inline in the connection it would grow the task of every
/// connection (which tokio allocates in steps of 128 bytes) by as much again.
pub type TlsIo = Generic<Box<TlsStream>>;

/// An upgrader that performs a TLS handshake, then hands the decrypted stream to `U`:
/// `TlsUpgrader::new(WsUpgrader::new(), &config)` serves wss, `TlsUpgrader::new(TcpUpgrader,
/// &config)` kim's raw TCP frames over TLS.
///
/// The handshake counts against the server's login deadline: a client that trickles its
/// ClientHello is dropped when it runs out. What the handshake learned (SNI, version, ALPN,
/// resumption) reaches the acceptor as a [`TlsInfo`] in the login's handshake extensions.
pub struct TlsUpgrader<U> {
    inner: U,
    server: Arc<ServerConfig>,
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
            server: server_config(config, alpn),
            inner,
            config: config.clone(),
            name,
        }
    }

    /// Offers these ALPN protocols instead, in order of preference; a client that offers
    /// ALPN but none of these is refused with the `no_application_protocol` alert.
    pub fn with_alpn(mut self, protocols: &[&[u8]]) -> TlsUpgrader<U> {
        self.server = server_config(&self.config, protocols);
        self
    }

    /// The certificate this upgrader serves (clone it to reload it later).
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }
}

fn server_config(config: &TlsConfig, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    config.server_config(alpn.iter().map(|p| p.to_vec()).collect())
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The server's side of the handshake on `io`.
///
/// rustls' unbuffered connection does not tell the client's SNI, so the ClientHello is first
/// read and parsed by rustls' `Acceptor`, which does; the same bytes then start the
/// connection. A ClientHello it refuses gets its alert.
async fn handshake(server: &Arc<ServerConfig>, mut io: TcpStream) -> io::Result<TlsStream> {
    let mut hello = Acceptor::default();
    let mut incoming: Vec<u8> = Vec::new();
    let server_name = loop {
        let at = incoming.len();
        incoming.resize(at + 4096, 0);
        let n = io.read(&mut incoming[at..]).await?;
        incoming.truncate(at + n);
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut fed = &incoming[at..];
        while !fed.is_empty() {
            if hello.read_tls(&mut fed)? == 0 {
                break;
            }
        }
        match hello.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => break accepted.client_hello().server_name().map(str::to_string),
            Err((e, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = io.write_all(&out).await;
                return Err(invalid(e));
            }
        }
    };
    let conn = UnbufferedServerConnection::new(server.clone()).map_err(invalid)?;
    let mut stream = TlsStream::new(io, conn, incoming, server_name);
    poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
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

/// Why a handshake failed, from its error (rustls' own, inside the I/O error, when TLS failed).
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
    type Framed = U::Framed;

    fn name(&self) -> &'static str {
        self.name
    }

    async fn upgrade(
        &self,
        io: TcpStream,
        config: ConnConfig,
    ) -> Result<Conn<Self::Framed>, UpgradeError> {
        let metrics = self.config.metrics();
        let mut unfinished = Unfinished {
            metrics,
            done: false,
        };
        // On an error rustls' alert was sent before the error came back.
        let accepted = handshake(&self.server, io).await;
        unfinished.done = true;
        let stream = accepted.inspect_err(|e| metrics.failed(classify(e)))?;
        let info = TlsInfo::of(&stream);
        metrics.completed(info.version, info.resumed);
        let mut conn = self
            .inner
            .upgrade(Generic(Box::new(stream)), config)
            .await?;
        conn.handshake
            .get_or_insert_with(Default::default)
            .extensions
            .insert(info);
        Ok(conn)
    }

    async fn refuse(&self, conn: &mut Conn<Self::Framed>, status: u16, reason: &str) -> bool {
        self.inner.refuse(conn, status, reason).await
    }

    fn register_metrics(&self, registry: &prometheus::Registry) {
        self.config.metrics().register(registry);
        self.inner.register_metrics(registry);
    }
}
