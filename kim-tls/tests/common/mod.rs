//! A TLS gateway for tests: a self-signed certificate made at run time, a server whose
//! acceptor answers each login with what the TLS handshake said, and clients that trust it.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use kim_client::ClientOptions;
use kim_core::{
    Accepted, Acceptor, Channel, DefaultServer, Frame, LoginConn, MessageListener, Reject,
    ServerHandle, ServerOptions, Upgrader,
};
use kim_tls::{TlsClientConfig, TlsConfig, TlsInfo, TlsIo, TlsUpgrader};

/// Generous bound for any single awaited event.
pub const EVENT: Duration = Duration::from_secs(10);

/// A self-signed certificate for `localhost` and its key, as PEM.
pub fn self_signed() -> (String, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// The first frame is the id; the login's reply says what TLS said:
/// `sni=<name> version=<v> alpn=<p> resumed=<bool>`.
pub struct TlsEcho;

impl Acceptor for TlsEcho {
    async fn accept(&self, login: &mut LoginConn<'_>) -> Result<Accepted, Reject> {
        let info = login
            .handshake()
            .and_then(|h| h.extensions.get::<TlsInfo>())
            .cloned()
            .ok_or_else(|| Reject::new("no TLS info"))?;
        let frame = login.read_frame().await?;
        let id = String::from_utf8(frame.payload.to_vec()).map_err(|_| Reject::new("not UTF-8"))?;
        let said = format!(
            "sni={} version={} alpn={} resumed={}",
            info.server_name.as_deref().unwrap_or("-"),
            info.version,
            info.alpn
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default(),
            info.resumed
        );
        Ok(Accepted::new(id).with_reply(Frame::text(said)))
    }
}

/// Echoes every message.
pub struct Echo;

impl MessageListener for Echo {
    async fn receive(&self, agent: &Channel, message: Frame) {
        let _ = agent.push_frame(message);
    }
}

/// Starts a TLS server on 127.0.0.1 over `inner` with `tls`.
pub async fn serve<U: Upgrader<TlsIo>>(
    inner: U,
    tls: &TlsConfig,
    login_wait: Duration,
) -> ServerHandle {
    let options = ServerOptions::builder()
        .login_wait(login_wait)
        .build()
        .expect("options");
    DefaultServer::new(TlsUpgrader::new(inner, tls), Echo)
        .with_acceptor(TlsEcho)
        .with_options(options)
        .start("127.0.0.1:0")
        .await
        .expect("the server starts")
}

/// A client configuration trusting `cert_pem`, offering `alpn`.
pub fn trusting(cert_pem: &str, alpn: &[&[u8]]) -> TlsClientConfig {
    TlsClientConfig::with_root_pem(cert_pem.as_bytes(), alpn).expect("a client config")
}

/// Client options without heartbeats.
pub fn quiet() -> ClientOptions {
    ClientOptions {
        heartbeat: None,
        ..ClientOptions::default()
    }
}

/// A metric's value in the server's exposition (`name` with its labels, as printed).
pub fn metric(h: &ServerHandle, name: &str) -> f64 {
    h.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The payload of a frame as text.
pub fn text(f: &Frame) -> String {
    String::from_utf8_lossy(&f.payload).into_owned()
}

/// Bytes as a frame payload.
pub fn bytes(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}
