//! The page's server: plain HTTP/1.1 (HTTPS with the gateway's certificate under TLS) beside
//! the gateway, serving the chat page and issuing tokens. The websocket itself goes to the
//! gateway's port, upgraded there with no HTTP framework in the path.
//!
//! - `GET /`: the page (HTML, CSS and JavaScript in one file, no build step).
//! - `GET /kim-client/<file>.js`: kim's JavaScript client (`clients/js/src`), which the page
//!   imports as an ES module.
//! - `POST /api/token` with `{"name": "alice"}`: `{"token", "user", "expires"}`, or 400 with
//!   `{"error"}`. Anyone may have a token for any free name: this is where a real app would
//!   check a password.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;

use crate::token::Tokens;

/// The page, with `__WS_SCHEME__` and `__WS_PORT__` to fill in.
const PAGE: &str = include_str!("../static/index.html");
/// kim's JavaScript client, as the page imports it: the package's modules, served as they are.
const CLIENT: [(&str, &str); 4] = [
    ("index.js", include_str!("../../../clients/js/src/index.js")),
    (
        "client.js",
        include_str!("../../../clients/js/src/client.js"),
    ),
    (
        "protocol.js",
        include_str!("../../../clients/js/src/protocol.js"),
    ),
    (
        "backoff.js",
        include_str!("../../../clients/js/src/backoff.js"),
    ),
];
/// The largest request body read (a token request is a few dozen bytes).
const MAX_BODY: usize = 1024;
/// Page connections open at once; one more is closed at once, so that idle connections cannot
/// grow the process without bound.
const MAX_CONNECTIONS: usize = 256;

/// What the page server needs.
pub struct Web {
    page: Bytes,
    tokens: Tokens,
}

impl Web {
    /// The page server for a gateway on `ws_port`, over wss if `tls`.
    pub fn new(tokens: Tokens, ws_port: u16, tls: bool) -> Web {
        let page = PAGE
            .replace("__WS_SCHEME__", if tls { "wss" } else { "ws" })
            .replace("__WS_PORT__", &ws_port.to_string());
        Web {
            page: Bytes::from(page),
            tokens,
        }
    }

    /// Binds `addr` and serves on the current runtime until the process ends; HTTPS with
    /// `tls`. Returns the bound address.
    pub fn start(
        self,
        addr: SocketAddr,
        tls: Option<&kim_tls::TlsConfig>,
    ) -> std::io::Result<SocketAddr> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let local = listener.local_addr()?;
        let tls = tls
            .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config(vec![b"http/1.1".to_vec()])));
        let web = Arc::new(self);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!("page: {MAX_CONNECTIONS} connections open; closing a new one");
                    continue;
                };
                let (web, tls) = (web.clone(), tls.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tls {
                        Some(tls) => match tls.accept(stream).await {
                            Ok(s) => web.serve(s).await,
                            Err(e) => tracing::debug!(error = %e, "page: TLS handshake failed"),
                        },
                        None => web.serve(stream).await,
                    }
                });
            }
        });
        Ok(local)
    }

    async fn serve<S>(self: Arc<Self>, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |req| {
            let web = self.clone();
            async move { Ok::<_, Infallible>(web.route(req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service);
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "page: connection failed");
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/" | "/index.html") => {
                let mut r = reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    self.page.clone(),
                );
                r.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                r
            }
            (&Method::GET | &Method::HEAD, path) if path.starts_with("/kim-client/") => {
                let file = &path["/kim-client/".len()..];
                match CLIENT.iter().find(|(name, _)| *name == file) {
                    Some((_, code)) => {
                        let mut r = reply(StatusCode::OK, "text/javascript; charset=utf-8", *code);
                        r.headers_mut()
                            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                        r
                    }
                    None => error(StatusCode::NOT_FOUND, &format!("no module at {path}")),
                }
            }
            (&Method::POST, "/api/token") => self.token(req).await,
            (_, "/api/token") => error(StatusCode::METHOD_NOT_ALLOWED, "POST a JSON {\"name\"}"),
            (_, path) => error(StatusCode::NOT_FOUND, &format!("no page at {path}")),
        }
    }

    async fn token(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body must be under {MAX_BODY} bytes"),
                )
            }
        };
        let name = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string));
        let Some(name) = name else {
            return error(StatusCode::BAD_REQUEST, "send {\"name\": \"...\"}");
        };
        match self.tokens.issue(&name, SystemTime::now()) {
            Ok((token, expires)) => reply(
                StatusCode::OK,
                "application/json",
                json!({"token": token, "user": name, "expires": expires}).to_string(),
            ),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        "application/json",
        json!({"error": message}).to_string(),
    )
}
