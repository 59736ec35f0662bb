//! TLS metrics, registered in the server's registry when it starts:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `kim_tls_handshakes_total` | counter: handshakes completed | `version` (`TLSv1_3`, `TLSv1_2`), `resumed` (`yes`, `no`) |
//! | `kim_tls_handshake_failures_total` | counter: handshakes that did not complete | `reason` (`eof`, `protocol`, `incompatible`, `alert`, `io`, `timeout`) |
//! | `kim_tls_certificate_reloads_total` | counter: certificate reloads | `outcome` (`ok`, `refused`) |

use prometheus::{IntCounterVec, Opts, Registry};

/// Why a handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The client closed the connection mid-handshake.
    Eof,
    /// The client sent something that is not TLS, or broken TLS.
    Protocol,
    /// Nothing in common: no protocol version, cipher suite or ALPN protocol both support.
    Incompatible,
    /// The client sent an alert.
    Alert,
    /// The socket failed.
    Io,
    /// The login deadline ran out first.
    Timeout,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Failure::Eof => "eof",
            Failure::Protocol => "protocol",
            Failure::Incompatible => "incompatible",
            Failure::Alert => "alert",
            Failure::Io => "io",
            Failure::Timeout => "timeout",
        }
    }
}

/// The counters, shared by a config's upgraders and its reloads.
#[derive(Clone)]
pub(crate) struct TlsMetrics {
    handshakes: IntCounterVec,
    failures: IntCounterVec,
    reloads: IntCounterVec,
}

impl TlsMetrics {
    pub(crate) fn new() -> TlsMetrics {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric")
        };
        TlsMetrics {
            handshakes: vec(
                "kim_tls_handshakes_total",
                "TLS handshakes completed.",
                &["version", "resumed"],
            ),
            failures: vec(
                "kim_tls_handshake_failures_total",
                "TLS handshakes that did not complete.",
                &["reason"],
            ),
            reloads: vec(
                "kim_tls_certificate_reloads_total",
                "TLS certificate reloads.",
                &["outcome"],
            ),
        }
    }

    /// Registers the counters in `registry`; a second registration (two upgraders on one
    /// config, one registry) is a no-op.
    pub(crate) fn register(&self, registry: &Registry) {
        for c in [&self.handshakes, &self.failures, &self.reloads] {
            if let Err(e) = registry.register(Box::new(c.clone())) {
                if !matches!(e, prometheus::Error::AlreadyReg) {
                    tracing::warn!(error = %e, "TLS metrics not registered");
                }
            }
        }
    }

    pub(crate) fn completed(&self, version: &str, resumed: bool) {
        let resumed = if resumed { "yes" } else { "no" };
        self.handshakes.with_label_values(&[version, resumed]).inc();
    }

    pub(crate) fn failed(&self, why: Failure) {
        self.failures.with_label_values(&[why.label()]).inc();
    }

    pub(crate) fn reloaded(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "refused" };
        self.reloads.with_label_values(&[outcome]).inc();
    }
}
