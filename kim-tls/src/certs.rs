//! The server's certificate and key: loaded from PEM, checked against each other, and
//! replaceable while the server runs. Every handshake asks [`Resolver`] for the certificate in
//! use at that moment, so a reload reaches the next handshake and leaves established
//! connections as they are.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;

use crate::error::TlsError;
use crate::metrics::TlsMetrics;

/// Where the certificate came from, for reloads.
#[derive(Debug, Clone)]
enum Source {
    Files { cert: PathBuf, key: PathBuf },
    Memory,
}

/// The certificate of a TLS listener, shared by the upgraders that serve with it and by the
/// code that reloads it (a SIGHUP handler, an admin call). Cloning is cheap: clones share the
/// certificate, the session-ticket keys and the metrics.
#[derive(Clone)]
pub struct TlsConfig {
    shared: Arc<Shared>,
}

struct Shared {
    source: parking_lot::Mutex<Source>,
    current: parking_lot::RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
    /// Session tickets (resumption without a server-side cache), the same keys for every
    /// upgrader of this config, so that a ticket from one handshake resumes on any.
    ticketer: Arc<dyn ProducesTickets>,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("source", &*self.shared.source.lock())
            .finish_non_exhaustive()
    }
}

/// The crypto kim's TLS uses: rustls' default provider, named rather than taken from the
/// process default, so that another crate enabling a second provider cannot make it ambiguous.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TlsConfig {
    /// Loads a certificate chain (the server's certificate first) and its private key (PKCS#8,
    /// PKCS#1 or SEC1) from PEM files. [`TlsConfig::reload`] reads the same files again.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let (cert, key) = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let provider = provider();
        let certified = load_files(&cert, &key, &provider)?;
        TlsConfig::new(Source::Files { cert, key }, certified, provider)
    }

    /// A certificate chain and key given as PEM text (certificates made at run time, secrets
    /// from a vault). Replace them with [`TlsConfig::replace_pem`].
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig, TlsError> {
        let provider = provider();
        let certified = parse("certificate", cert_pem, "key", key_pem, &provider)?;
        TlsConfig::new(Source::Memory, certified, provider)
    }

    fn new(
        source: Source,
        certified: CertifiedKey,
        provider: Arc<CryptoProvider>,
    ) -> Result<TlsConfig, TlsError> {
        let ticketer =
            rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| TlsError::Rustls {
                what: "session tickets",
                reason: e.to_string(),
            })?;
        Ok(TlsConfig {
            shared: Arc::new(Shared {
                source: parking_lot::Mutex::new(source),
                current: parking_lot::RwLock::new(Arc::new(certified)),
                provider,
                ticketer,
                metrics: TlsMetrics::new(),
            }),
        })
    }

    /// Reads the certificate and key files again. New handshakes use the new certificate;
    /// established connections keep theirs. A file that cannot be read or parsed, or a key
    /// that does not match the certificate, is refused with an error and the certificate in
    /// use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let source = self.shared.source.lock().clone();
        let loaded = match source {
            Source::Files { cert, key } => load_files(&cert, &key, &self.shared.provider),
            Source::Memory => Err(TlsError::NoFiles),
        };
        self.install(loaded)
    }

    /// Replaces the certificate and key with these PEM texts (the files, if any, are no longer
    /// read by [`TlsConfig::reload`]). Refused like a reload, the certificate in use staying.
    pub fn replace_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let parsed = parse(
            "certificate",
            cert_pem,
            "key",
            key_pem,
            &self.shared.provider,
        );
        let ok = parsed.is_ok();
        self.install(parsed)?;
        if ok {
            *self.shared.source.lock() = Source::Memory;
        }
        Ok(())
    }

    fn install(&self, loaded: Result<CertifiedKey, TlsError>) -> Result<(), TlsError> {
        match loaded {
            Ok(certified) => {
                *self.shared.current.write() = Arc::new(certified);
                self.shared.metrics.reloaded(true);
                tracing::info!("TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                self.shared.metrics.reloaded(false);
                tracing::warn!(error = %e, "TLS certificate not reloaded; the old one stays");
                Err(e)
            }
        }
    }

    /// The certificate chain in use, the server's first (DER).
    pub fn certificate_chain(&self) -> Vec<CertificateDer<'static>> {
        self.shared.current.read().cert.clone()
    }

    /// A rustls server configuration on this certificate, offering `alpn` (in order of
    /// preference): TLS 1.3 and 1.2, session tickets, no client certificates.
    ///
    /// Every handshake takes the certificate in use at that moment, so a reload reaches
    /// whatever serves with this configuration: another listener of the process (an HTTPS page
    /// beside the wss gateway) stays on the gateway's certificate.
    pub fn server_config(&self, alpn: Vec<Vec<u8>>) -> Arc<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(self.shared.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the provider supports TLS 1.2 and 1.3");
        let mut config = builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.shared.clone())));
        config.alpn_protocols = alpn;
        config.ticketer = self.shared.ticketer.clone();
        Arc::new(config)
    }

    pub(crate) fn metrics(&self) -> &TlsMetrics {
        &self.shared.metrics
    }
}

/// Hands every handshake the certificate in use.
struct Resolver(Arc<Shared>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.read().clone())
    }
}

fn load_files(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    parse(
        &cert.display().to_string(),
        &cert_pem,
        &key.display().to_string(),
        &key_pem,
        provider,
    )
}

/// Parses a PEM chain and key and checks that the key is the certificate's.
fn parse(
    cert_name: &str,
    cert_pem: &[u8],
    key_name: &str,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let invalid = |name: &str, reason: String| TlsError::Pem {
        what: name.to_string(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert_name, e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid(cert_name, "no CERTIFICATE block".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid(key_name, e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Rustls {
        what: "the certificate and key",
        reason: e.to_string(),
    })
}
