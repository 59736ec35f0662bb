//! kim-ws: the websocket transport for kim.
//!
//! [`WsUpgrader`] upgrades an accepted stream to websocket by parsing the HTTP/1.1 request
//! itself, straight off the stream (no HTTP framework in the path), and serves RFC 6455 frames
//! with a zero-copy reader and vectored writes. It plugs into the same
//! [`DefaultServer`](kim_core::DefaultServer) as the raw TCP transport:
//!
//! ```no_run
//! # use kim_core::{Channel, DefaultServer, Frame, MessageListener};
//! # struct Echo;
//! # impl MessageListener for Echo {
//! #     async fn receive(&self, agent: &Channel, m: Frame) { let _ = agent.push_frame(m); }
//! # }
//! # async fn run() -> Result<(), kim_core::ServerError> {
//! /// The user a valid token names.
//! struct User(String);
//!
//! let upgrader = kim_ws::WsUpgrader::new()
//!     .with_protocols(["chat.v1"])
//!     .with_hook(|req: &mut kim_core::Handshake| {
//!         let user = req.query("token").and_then(|t| t.strip_prefix("valid-"));
//!         let Some(user) = user.map(str::to_string) else {
//!             return Err(kim_ws::Refusal::new(401, "a valid token is required"));
//!         };
//!         req.extensions.insert(User(user));
//!         Ok(())
//!     });
//! let handle = DefaultServer::new(upgrader, Echo).start("127.0.0.1:8080").await?;
//! # Ok(()) }
//! ```
//!
//! With [`WsUpgrader::with_compression`] it also speaks permessage-deflate (RFC 7692), keeping
//! no compression state per connection by default; see [`Compression`].
//!
//! The acceptor sees the request's path, query and headers, and what the hook attached to
//! [`Handshake::extensions`](kim_core::Handshake::extensions), through
//! [`LoginConn::handshake`](kim_core::LoginConn::handshake): many IM clients log in with a
//! token in the query string or a cookie. It may also refuse with an HTTP status itself
//! ([`Reject::with_status`](kim_core::Reject::with_status)) until it reads or sends a frame,
//! since the `101` goes out with the first write.

#![warn(missing_docs)]

mod codec;
mod compression;
mod deflate;
mod handshake;
mod negotiate;
mod stream;
mod writer;

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use kim_client::{Client, ClientError, ClientOptions};
use kim_core::io::Io;
use kim_core::{Conn, ConnConfig, Handshake, UpgradeError, Upgrader};
use kim_io::ReadBuffer;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use codec::{decode_close, is_valid_close_code};
pub use compression::{Compression, PerMessageDeflate};
pub use handshake::Refusal;
pub use stream::{Role, WsStream};

use handshake::HeadError;

/// The frame codec's building blocks that kim's tests, benchmark and fuzz targets use to
/// write raw frames. Not part of the supported API: it changes without notice.
#[doc(hidden)]
pub mod internals {
    pub use crate::codec::apply_mask;
    pub use crate::writer::encode_frame;

    /// `reader` reading permessage-deflate messages: each compressed alone, or with
    /// `Some(window_bits)` with the peer's context kept from message to message.
    pub fn with_deflate<R>(reader: crate::WsStream<R>, takeover: Option<u8>) -> crate::WsStream<R> {
        let inflater = match takeover {
            Some(bits) => crate::deflate::Inflater::takeover(bits),
            None => crate::deflate::Inflater::alone(),
        };
        reader.with_inflater(Some(inflater))
    }
}

/// The default limit on an upgrade request's head.
pub const DEFAULT_MAX_HEADER: usize = 8 * 1024;

type Hook = dyn Fn(&mut Handshake) -> Result<(), Refusal> + Send + Sync;

/// The websocket transport.
#[derive(Clone)]
pub struct WsUpgrader {
    max_header: usize,
    protocols: Vec<String>,
    hook: Option<Arc<Hook>>,
    /// The settings, and the deflater every connection that compresses each message alone at
    /// the full window shares.
    compression: Option<(Compression, Arc<deflate::Deflater>)>,
}

impl Default for WsUpgrader {
    fn default() -> Self {
        WsUpgrader::new()
    }
}

impl std::fmt::Debug for WsUpgrader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsUpgrader")
            .field("max_header", &self.max_header)
            .field("protocols", &self.protocols)
            .field("hook", &self.hook.is_some())
            .field("compression", &self.compression.as_ref().map(|(c, _)| c))
            .finish()
    }
}

impl WsUpgrader {
    /// The transport with an 8 KiB header limit, no subprotocols and no hook.
    pub fn new() -> WsUpgrader {
        WsUpgrader {
            max_header: DEFAULT_MAX_HEADER,
            protocols: Vec::new(),
            hook: None,
            compression: None,
        }
    }

    /// Accepts permessage-deflate offers (RFC 7692) with these settings; see [`Compression`].
    /// Clients that offer nothing, or nothing kim can honour, are served uncompressed.
    pub fn with_compression(mut self, compression: Compression) -> WsUpgrader {
        let c = compression;
        let alone = deflate::Deflater::alone(c.threshold, c.level, deflate::MAX_WINDOW_BITS);
        self.compression = Some((c, Arc::new(alone)));
        self
    }

    /// Limits the request head (request line and headers) to `bytes`; a larger one gets 431.
    pub fn with_max_header(mut self, bytes: usize) -> WsUpgrader {
        self.max_header = bytes.max(64);
        self
    }

    /// The subprotocols this server speaks, in order of preference; the first one the client
    /// also offers is selected. A client offering none of them is still accepted, with none.
    pub fn with_protocols<I, S>(mut self, protocols: I) -> WsUpgrader
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// A check run on every valid upgrade request before it is accepted: it sees the path,
    /// query and headers, may refuse with a status, and may attach what it learned (the user
    /// a token names) to [`Handshake::extensions`] for the acceptor.
    ///
    /// The acceptor can also refuse with a status itself ([`Reject::with_status`]), as long
    /// as it does so before it reads or sends a frame: the `101` goes out with the first write.
    ///
    /// [`Reject::with_status`]: kim_core::Reject::with_status
    pub fn with_hook<F>(mut self, hook: F) -> WsUpgrader
    where
        F: Fn(&mut Handshake) -> Result<(), Refusal> + Send + Sync + 'static,
    {
        self.hook = Some(Arc::new(hook));
        self
    }

    fn select_protocol(&self, offered: &[String]) -> Option<String> {
        self.protocols
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .cloned()
    }
}

impl<IO: Io> Upgrader<IO> for WsUpgrader {
    type Framed = WsStream<IO>;

    fn name(&self) -> &'static str {
        "ws"
    }

    async fn upgrade(
        &self,
        mut io: IO,
        config: ConnConfig,
    ) -> Result<Conn<Self::Framed>, UpgradeError> {
        let head = handshake::read_head(&mut io, self.max_header, handshake::check_request_prefix);
        let (mut buf, head_len) = match head.await {
            Ok(x) => x,
            Err(HeadError::Io(e)) => return Err(UpgradeError::Io(e)),
            Err(HeadError::Eof) => {
                return Err(UpgradeError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed during the upgrade",
                )))
            }
            Err(HeadError::TooLarge) => {
                let reason = format!("request head over {} bytes", self.max_header);
                return Err(handshake::refuse(&mut io, Refusal::new(431, reason)).await);
            }
            Err(HeadError::Invalid(refusal)) => {
                return Err(handshake::refuse(&mut io, refusal).await);
            }
        };
        let mut request = match handshake::parse_request(&buf[..head_len]) {
            Ok(r) => r,
            Err(refusal) => return Err(handshake::refuse(&mut io, refusal).await),
        };
        if let Some(hook) = &self.hook {
            if let Err(refusal) = hook(&mut request.info) {
                return Err(handshake::refuse(&mut io, refusal).await);
            }
        }
        let protocol = self.select_protocol(&request.protocols);
        let deflate = self.compression.as_ref().and_then(|(c, alone)| {
            let offers = request.info.headers.iter();
            let offers = offers.filter(|(k, _)| k == "sec-websocket-extensions");
            negotiate::accept_offer(offers.map(|(_, v)| v.as_str()), c)
                .map(|(agreed, answer)| (agreed, answer, c, alone))
        });
        // The answer goes out with the first write, so the acceptor can still refuse.
        let extension = deflate.as_ref().map(|(_, answer, _, _)| answer.as_str());
        let response = handshake::accept_response(&request.key, protocol.as_deref(), extension);
        // Whatever followed the head is the start of the first frame.
        let rest = buf.split_off(head_len);
        drop(buf);
        let framed = WsStream::new(
            io,
            Role::Server,
            config.max_message_size,
            ReadBuffer::with_bytes(config.read_buffer_size, rest),
        )
        .with_answer(Bytes::from(response));
        let mut info = request.info;
        info.protocol = protocol;
        let framed = match deflate {
            Some((agreed, _, c, alone)) => {
                info.extensions.insert(agreed);
                framed
                    .with_deflater(Some(agreed.server_deflater(c, alone)))
                    .with_inflater(Some(agreed.server_inflater()))
            }
            None => framed,
        };
        Ok(Conn {
            framed,
            handshake: Some(Box::new(info)),
        })
    }

    async fn refuse(&self, conn: &mut Conn<Self::Framed>, status: u16, reason: &str) -> bool {
        match conn.framed.withdraw_answer() {
            Some(io) => {
                handshake::refuse(io, Refusal::new(status, reason.to_string())).await;
                true
            }
            None => false,
        }
    }
}

/// A websocket client.
pub type WsClient =
    Client<WsStream<tokio::net::tcp::OwnedReadHalf>, WsStream<tokio::net::tcp::OwnedWriteHalf>>;

/// Splits `ws://host:port/path` (or a bare `host:port`) into the address and the path.
fn split_url(url: &str) -> (&str, &str) {
    let rest = url.strip_prefix("ws://").unwrap_or(url);
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    }
}

/// Connects to a websocket server at `ws://host:port/path` (or `host:port`), within the
/// connect timeout (handshake included).
pub async fn connect(url: &str, options: &ClientOptions) -> Result<WsClient, ClientError> {
    connect_with(url, &[], options).await
}

/// Like [`connect`], sending extra request headers (a cookie, a subprotocol offer).
pub async fn connect_with(
    url: &str,
    headers: &[(&str, &str)],
    options: &ClientOptions,
) -> Result<WsClient, ClientError> {
    connect_inner(url, headers, None, options).await
}

/// Like [`connect_with`], offering permessage-deflate with these settings: if the server
/// accepts, messages of at least the threshold are sent compressed and compressed messages
/// are read. A server that declines leaves the connection uncompressed.
pub async fn connect_compressed(
    url: &str,
    headers: &[(&str, &str)],
    compression: &Compression,
    options: &ClientOptions,
) -> Result<WsClient, ClientError> {
    connect_inner(url, headers, Some(compression), options).await
}

async fn connect_inner(
    url: &str,
    headers: &[(&str, &str)],
    compression: Option<&Compression>,
    options: &ClientOptions,
) -> Result<WsClient, ClientError> {
    let (addr, path) = split_url(url);
    let work = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        stream.set_nodelay(true)?;
        handshake_over(stream, addr, path, headers, compression, options).await
    };
    tokio::time::timeout(options.connect_timeout, work)
        .await
        .map_err(|_| ClientError::ConnectTimeout(url.to_string()))?
}

/// A websocket client over a stream the caller opened (TLS, say, with `kim_tls::connect`):
/// the upgrade request for `path` with `Host: host` and `headers`, within the connect timeout.
/// `compression`, if given, is offered as in [`connect_compressed`].
pub async fn client_over<IO: Io>(
    io: IO,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    compression: Option<&Compression>,
    options: &ClientOptions,
) -> Result<Client<WsStream<IO::ReadHalf>, WsStream<IO::WriteHalf>>, ClientError> {
    tokio::time::timeout(
        options.connect_timeout,
        handshake_over(io, host, path, headers, compression, options),
    )
    .await
    .map_err(|_| ClientError::ConnectTimeout(host.to_string()))?
}

/// The client's side of the upgrade on `io`.
async fn handshake_over<IO: Io>(
    io: IO,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    compression: Option<&Compression>,
    options: &ClientOptions,
) -> Result<Client<WsStream<IO::ReadHalf>, WsStream<IO::WriteHalf>>, ClientError> {
    let (mut rd, mut wr) = io.split_io();
    let key = {
        use std::hash::BuildHasher;
        let s = std::collections::hash_map::RandomState::new();
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&s.hash_one(1u8).to_ne_bytes());
        raw[8..].copy_from_slice(&s.hash_one(2u8).to_ne_bytes());
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if compression.is_some() {
        req.push_str(&format!(
            "Sec-WebSocket-Extensions: {}\r\n",
            negotiate::client_offer()
        ));
    }
    req.push_str("\r\n");
    wr.write_all(req.as_bytes()).await?;
    wr.flush().await?;
    let head = handshake::read_head(
        &mut rd,
        DEFAULT_MAX_HEADER,
        handshake::check_response_prefix,
    );
    let (mut buf, head_len) = head.await.map_err(|e| match e {
        HeadError::Io(e) => ClientError::Io(e),
        HeadError::Eof => ClientError::Handshake("connection closed".into()),
        HeadError::TooLarge => ClientError::Handshake("response head too large".into()),
        HeadError::Invalid(r) => {
            ClientError::Handshake(format!("malformed response: {}", r.reason))
        }
    })?;
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut hdrs);
    resp.parse(&buf[..head_len])
        .map_err(|e| ClientError::Handshake(format!("malformed response: {e}")))?;
    if resp.code != Some(101) {
        let body = String::from_utf8_lossy(&buf[head_len..]).into_owned();
        return Err(ClientError::Handshake(format!(
            "status {}: {}",
            resp.code.unwrap_or(0),
            body.trim()
        )));
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut accepts = resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value.trim_ascii());
    let accept = accepts.next();
    // RFC 6455 section 11.3.3: the field must not appear more than once.
    if accept != Some(expected.as_bytes()) || accepts.next().is_some() {
        return Err(ClientError::Handshake("wrong Sec-WebSocket-Accept".into()));
    }
    let extensions = resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|h| std::str::from_utf8(h.value).unwrap_or("\u{fffd}"));
    let agreed = negotiate::check_response(extensions, compression.is_some())
        .map_err(ClientError::Handshake)?;
    let rest = buf.split_off(head_len);
    let mut reader = WsStream::new(
        rd,
        Role::Client,
        options.max_message_size,
        ReadBuffer::with_bytes(options.read_buffer_size, rest),
    );
    let mut writer = WsStream::new(wr, Role::Client, 0, ReadBuffer::new(0));
    if let (Some(agreed), Some(c)) = (agreed, compression) {
        reader = reader.with_inflater(Some(agreed.client_inflater()));
        writer = writer.with_deflater(Some(agreed.client_deflater(c)));
    }
    Ok(Client::new(reader, writer, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("ws://127.0.0.1:80/im?x=1"),
            ("127.0.0.1:80", "/im?x=1")
        );
        assert_eq!(split_url("127.0.0.1:80"), ("127.0.0.1:80", "/"));
    }

    #[test]
    fn protocol_selection_follows_the_servers_preference() {
        let u = WsUpgrader::new().with_protocols(["b", "a"]);
        assert_eq!(
            u.select_protocol(&["a".into(), "b".into()]),
            Some("b".into())
        );
        assert_eq!(u.select_protocol(&["c".into()]), None);
    }
}
