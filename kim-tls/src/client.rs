//! The client side, for tests, tools and services that talk to a kim gateway over TLS: a
//! TLS stream to hand to kim's clients (`kim_ws::client_over`, `kim_tcp::client_over`).

use std::sync::Arc;

use kim_core::io::Generic;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::certs::provider;
use crate::error::TlsError;

/// A TLS stream from a client, ready for kim's clients.
pub type TlsClientIo = Generic<tokio_rustls::client::TlsStream<TcpStream>>;

/// How a client checks the server: the root certificates it trusts, and the ALPN protocols it
/// offers. Clones share the session cache, so a second connection resumes the first one's
/// session.
#[derive(Clone)]
pub struct TlsClientConfig {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClientConfig").finish_non_exhaustive()
    }
}

impl TlsClientConfig {
    /// Trusts the certificates in `pem` (a self-signed server certificate, or a private CA),
    /// offering `alpn`.
    pub fn with_root_pem(pem: &[u8], alpn: &[&[u8]]) -> Result<TlsClientConfig, TlsError> {
        let mut roots = RootCertStore::empty();
        let invalid = |reason: String| TlsError::Pem {
            what: "root certificates".into(),
            reason,
        };
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| invalid(e.to_string()))?;
            roots.add(cert).map_err(|e| invalid(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(invalid("no CERTIFICATE block".into()));
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls {
                what: "protocol versions",
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsClientConfig {
            config: Arc::new(config),
        })
    }

    /// This configuration with no session resumption: every connection makes a full
    /// handshake (what a benchmark of handshakes wants).
    pub fn without_resumption(mut self) -> TlsClientConfig {
        Arc::make_mut(&mut self.config).resumption = rustls::client::Resumption::disabled();
        self
    }

    /// The rustls configuration, for clients other than kim's.
    pub fn rustls(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// Connects to `addr` and performs a TLS handshake for `server_name` (sent as SNI and checked
/// against the server's certificate).
pub async fn connect(
    addr: &str,
    server_name: &str,
    config: &TlsClientConfig,
) -> std::io::Result<TlsClientIo> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(config.config.clone())
        .connect(name, tcp)
        .await?;
    Ok(Generic(tls))
}
