//! A certificate for the TLS runs: self-signed for `localhost`, made at run time and written
//! to a directory of its own for the servers' `--tls-cert` and `--tls-key`, removed when
//! dropped.

use std::path::PathBuf;

use anyhow::Context;

/// A self-signed certificate and its key, in files.
pub struct Certificate {
    dir: PathBuf,
    /// The certificate (PEM), which clients trust.
    pub cert_pem: String,
    /// Its file.
    pub cert: PathBuf,
    /// The key's file.
    pub key: PathBuf,
}

impl Certificate {
    /// Makes one (ECDSA P-256, as most servers' certificates are today).
    pub fn new() -> anyhow::Result<Certificate> {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .context("making a certificate")?;
        let dir = std::env::temp_dir().join(format!("kim-benchmark-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let cert_pem = made.cert.pem();
        std::fs::write(&cert, &cert_pem)?;
        std::fs::write(&key, made.signing_key.serialize_pem())?;
        Ok(Certificate {
            dir,
            cert_pem,
            cert,
            key,
        })
    }

    /// The servers' flags for it.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
