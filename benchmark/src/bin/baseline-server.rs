//! The baseline: a tokio-tungstenite server written the way its documentation and examples
//! show, speaking the same protocols as kim's examples so that one load generator drives both.
//!
//! - `--mode echo`: tokio-tungstenite's own echo example (split, filter data messages,
//!   `forward` to the sink).
//! - `--mode mock`: the mock protocol (first frame is the user id, `ok`, echo, `@<id> <text>`
//!   pushes, "channel id is repeated"), in the usual shape: a map of peers to unbounded
//!   senders and a writer task per connection.
//! - `--mode broadcast`: every message goes to every connection, the sender included, the way
//!   an app fans out without rooms in its framework: a shared map of connections to unbounded
//!   senders, a loop over it per message, and a writer task per connection.
//! - `--config default` keeps tungstenite's defaults (128 KiB buffers); `--config small`
//!   sets the 4 KiB read and write buffers its documentation advises for many connections.
//! - `--tls-cert FILE --tls-key FILE`: wss through tokio-rustls, configured as its examples
//!   do (one certificate, ALPN `http/1.1`, rustls' defaults otherwise), with the crypto
//!   provider kim uses (aws-lc-rs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures_util::{future, SinkExt, StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Echo,
    Mock,
    Broadcast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Config {
    Default,
    Small,
}

#[derive(Debug, Parser)]
#[command(about = "tokio-tungstenite baseline server for kim's benchmarks")]
struct Args {
    #[arg(long, value_enum, default_value = "echo")]
    mode: Mode,
    #[arg(long, value_enum, default_value = "default")]
    config: Config,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Serve wss with this certificate chain (PEM); needs `--tls-key`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

/// A tokio-rustls acceptor for `cert` and `key`, the way tokio-rustls' server example makes
/// one.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What a connection handler takes: plain TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

type Peers = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all().build()?.block_on(async move {
        let listener = TcpListener::bind(&args.listen).await?;
        println!("listening on {}", listener.local_addr()?);
        let config = match args.config {
            Config::Default => WebSocketConfig::default(),
            Config::Small => WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(4096),
        };
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let peers: Peers = Arc::default();
        let mut next_id: u64 = 0;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            next_id += 1;
            let (mode, peers, id) = (args.mode, peers.clone(), next_id.to_string());
            match tls.clone() {
                None => tokio::spawn(serve(stream, mode, config, peers, id)),
                Some(tls) => tokio::spawn(async move {
                    if let Ok(stream) = tls.accept(stream).await {
                        serve(stream, mode, config, peers, id).await;
                    }
                }),
            };
        }
    })
}

async fn serve(stream: impl Stream, mode: Mode, config: WebSocketConfig, peers: Peers, id: String) {
    match mode {
        Mode::Echo => echo(stream, config).await,
        Mode::Mock => mock(stream, config, peers).await,
        Mode::Broadcast => broadcast(stream, config, peers, id).await,
    }
}

async fn echo(stream: impl Stream, config: WebSocketConfig) {
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
}

fn close(reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Policy,
        reason: reason.to_string().into(),
    }))
}

async fn mock(stream: impl Stream, config: WebSocketConfig, peers: Peers) {
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    let id = match first {
        Ok(Some(Ok(Message::Text(t)))) => t.as_str().to_string(),
        Ok(Some(Ok(Message::Binary(b)))) => match String::from_utf8(b.to_vec()) {
            Ok(s) => s,
            Err(_) => {
                let _ = sink.send(close("invalid user id: not UTF-8")).await;
                return;
            }
        },
        Err(_) => {
            let _ = sink.send(close("login timeout")).await;
            return;
        }
        _ => return,
    };
    if id.is_empty() || id.len() > 64 {
        let _ = sink
            .send(close("invalid user id: must be 1 to 64 bytes"))
            .await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let added = {
        let mut map = peers.lock().unwrap();
        match map.entry(id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(tx.clone());
                true
            }
        }
    };
    if !added {
        let _ = sink.send(close("channel id is repeated")).await;
        return;
    }
    let _ = tx.send(Message::Binary("ok".into()));
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        let (text, payload) = match &msg {
            Message::Text(t) => (true, t.as_bytes().to_vec()),
            Message::Binary(b) => (false, b.to_vec()),
            Message::Close(_) => break,
            _ => continue,
        };
        let push = payload.strip_prefix(b"@").and_then(|rest| {
            let space = rest.iter().position(|&b| b == b' ')?;
            let to = std::str::from_utf8(&rest[..space]).ok()?;
            (!to.is_empty()).then(|| (to.to_string(), rest[space + 1..].to_vec()))
        });
        match push {
            None => {
                let _ = tx.send(msg);
            }
            Some((to, body)) => {
                let mut out = id.clone().into_bytes();
                out.extend_from_slice(b": ");
                out.extend_from_slice(&body);
                let target = peers.lock().unwrap().get(&to).cloned();
                let delivered = target.is_some_and(|t| t.send(make(text, out)).is_ok());
                if !delivered {
                    let _ = tx.send(make(text, format!("offline {to}").into_bytes()));
                }
            }
        }
    }
    peers.lock().unwrap().remove(&id);
    drop(tx);
    let _ = writer.await;
}

async fn broadcast(stream: impl Stream, config: WebSocketConfig, peers: Peers, id: String) {
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    peers.lock().unwrap().insert(id.clone(), tx);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                for member in peers.lock().unwrap().values() {
                    let _ = member.send(msg.clone());
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    peers.lock().unwrap().remove(&id);
    let _ = writer.await;
}

fn make(text: bool, bytes: Vec<u8>) -> Message {
    if text {
        Message::Text(String::from_utf8_lossy(&bytes).into_owned().into())
    } else {
        Message::Binary(bytes.into())
    }
}
