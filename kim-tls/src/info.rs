//! What a TLS handshake learned, handed to the acceptor.

use rustls::{HandshakeKind, ProtocolVersion};

use crate::stream::TlsStream;

/// What the client's TLS handshake said, in the login's handshake extensions:
///
/// ```
/// # use kim_core::{Accepted, LoginConn, Reject};
/// # use kim_tls::TlsInfo;
/// # async fn accept(login: &mut LoginConn<'_>) -> Result<Accepted, Reject> {
/// let host = login
///     .handshake()
///     .and_then(|h| h.extensions.get::<TlsInfo>())
///     .and_then(|tls| tls.server_name.clone());
/// # let _ = host; Err(Reject::new("example"))
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The host name the client asked for (SNI), if it sent one.
    pub server_name: Option<String>,
    /// The protocol version: `TLSv1_3` or `TLSv1_2`.
    pub version: &'static str,
    /// The ALPN protocol agreed, if any (`http/1.1` for wss).
    pub alpn: Option<Vec<u8>>,
    /// Whether the session was resumed from a ticket (no full handshake).
    pub resumed: bool,
}

impl TlsInfo {
    pub(crate) fn of(stream: &TlsStream) -> TlsInfo {
        let conn = stream.connection();
        TlsInfo {
            server_name: stream.server_name().map(str::to_string),
            version: match conn.protocol_version() {
                Some(ProtocolVersion::TLSv1_3) => "TLSv1_3",
                Some(ProtocolVersion::TLSv1_2) => "TLSv1_2",
                _ => "other",
            },
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
        }
    }
}
