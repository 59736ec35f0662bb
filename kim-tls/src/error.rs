//! What can go wrong setting TLS up: the certificate and key files, their PEM, and whether the
//! key is the certificate's.

use std::path::PathBuf;

/// Why a certificate, a key or a TLS setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}", path = path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The PEM text has no usable certificate or key.
    #[error("{what}: {reason}")]
    Pem {
        /// The file (or what the text was).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused it (a key that is not the certificate's, an unsupported key type).
    #[error("{what}: {reason}")]
    Rustls {
        /// What was refused.
        what: &'static str,
        /// rustls' reason.
        reason: String,
    },
    /// [`TlsConfig::reload`](crate::TlsConfig::reload) on a certificate given as text: there
    /// are no files to read again.
    #[error("the certificate was not loaded from files; replace it with replace_pem")]
    NoFiles,
}
