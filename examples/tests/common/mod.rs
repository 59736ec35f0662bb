//! Test harness: a mock-protocol server on 127.0.0.1 with a state listener that reports every
//! disconnect, and raw-socket helpers for clients that misbehave on purpose.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kim_client::{Client, ClientOptions};
use kim_core::{
    Channel, ChannelId, CloseReason, DefaultServer, FrameReader, FrameWriter, ServerHandle,
    ServerOptions, Upgrader, WorkerCommand,
};
use kim_examples::{MockAcceptor, MockListener};
use kim_tcp::TcpClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Generous bound for any single awaited event, so a broken build fails instead of hanging.
pub const EVENT: Duration = Duration::from_secs(10);

/// Records logins and disconnects: every disconnect is sent on a channel, and both are
/// counted per id.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<ChannelId>,
    counts: Arc<parking_lot::Mutex<HashMap<ChannelId, usize>>>,
    logins: Arc<parking_lot::Mutex<HashMap<ChannelId, usize>>>,
    /// Disconnects reported while a channel with that id was still in the map.
    still_in_map: Arc<std::sync::atomic::AtomicUsize>,
    /// Logins announced while the channel could not be pushed to through the map.
    login_unreachable: Arc<std::sync::atomic::AtomicUsize>,
}

impl kim_core::StateListener for Recorder {
    async fn login(&self, agent: &Channel) {
        let in_map = agent.server().channel(agent.id().as_str());
        if in_map.is_none_or(|c| c.is_closed()) {
            self.login_unreachable
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        *self.logins.lock().entry(agent.id().clone()).or_default() += 1;
    }

    async fn disconnect(&self, agent: &Channel) {
        let id = agent.id();
        if agent.server().channel(id.as_str()).is_some() {
            self.still_in_map
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        *self.counts.lock().entry(id.clone()).or_default() += 1;
        let _ = self.tx.send(id.clone());
    }
}

pub struct Server {
    pub handle: ServerHandle,
    pub addr: String,
    pub disconnects: mpsc::UnboundedReceiver<ChannelId>,
    pub counts: Arc<parking_lot::Mutex<HashMap<ChannelId, usize>>>,
    pub logins: Arc<parking_lot::Mutex<HashMap<ChannelId, usize>>>,
    pub still_in_map: Arc<std::sync::atomic::AtomicUsize>,
    pub login_unreachable: Arc<std::sync::atomic::AtomicUsize>,
}

impl Server {
    /// Disconnects reported while a channel with the same id was still in the map (0 unless a
    /// newer login took the id, as under the kick policy).
    pub fn reported_while_in_map(&self) -> usize {
        self.still_in_map.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for the next disconnect report.
    pub async fn next_disconnect(&mut self) -> ChannelId {
        tokio::time::timeout(EVENT, self.disconnects.recv())
            .await
            .expect("a disconnect within the event bound")
            .expect("the recorder lives as long as the server")
    }

    /// How many logins were announced for `id`.
    pub fn logins_of(&self, id: &str) -> usize {
        self.logins.lock().get(id).copied().unwrap_or(0)
    }

    /// Logins announced while the channel could not be reached through the map (0).
    pub fn logins_unreachable(&self) -> usize {
        self.login_unreachable
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many disconnects were reported for `id`.
    pub fn disconnects_of(&self, id: &str) -> usize {
        self.counts.lock().get(id).copied().unwrap_or(0)
    }

    /// Waits until the server counts `n` channels.
    pub async fn wait_channels(&self, n: usize) {
        tokio::time::timeout(EVENT, async {
            while self.handle.channel_count() != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "expected {n} channels, have {}",
                self.handle.channel_count()
            )
        });
    }
}

/// Starts a mock-protocol server over raw TCP on an ephemeral port.
pub async fn start(options: ServerOptions) -> Server {
    start_on(kim_tcp::TcpUpgrader, options).await
}

/// Starts a mock-protocol server over any transport on an ephemeral port.
pub async fn start_on<U: Upgrader<TcpStream>>(upgrader: U, options: ServerOptions) -> Server {
    let (tx, rx) = mpsc::unbounded_channel();
    let recorder = Recorder {
        tx,
        counts: Arc::default(),
        logins: Arc::default(),
        still_in_map: Arc::default(),
        login_unreachable: Arc::default(),
    };
    let handle = DefaultServer::new(upgrader, MockListener)
        .with_acceptor(MockAcceptor)
        .with_state_listener(recorder.clone())
        .with_options(options)
        .with_debug(kim_debug::Debug::new())
        .start("127.0.0.1:0")
        .await
        .expect("server starts");
    let addr = handle.local_addr().to_string();
    Server {
        handle,
        addr,
        disconnects: rx,
        counts: recorder.counts,
        logins: recorder.logins,
        still_in_map: recorder.still_in_map,
        login_unreachable: recorder.login_unreachable,
    }
}

pub fn no_heartbeat() -> ClientOptions {
    ClientOptions {
        heartbeat: None,
        ..ClientOptions::default()
    }
}

/// Connects and logs in as `id`, asserting the `ok` reply.
pub async fn login(addr: &str, id: &str) -> TcpClient {
    login_with(addr, id, &no_heartbeat()).await
}

pub async fn login_with(addr: &str, id: &str, opts: &ClientOptions) -> TcpClient {
    let mut c = kim_tcp::connect(addr, opts).await.expect("connects");
    let ok = tokio::time::timeout(EVENT, c.login(id.to_string()))
        .await
        .expect("login answered in time")
        .expect("login accepted");
    assert_eq!(&ok.payload[..], b"ok");
    c
}

/// Reads the next message with the event bound.
pub async fn read<R: FrameReader, W: FrameWriter>(
    c: &mut Client<R, W>,
) -> Result<kim_core::Frame, kim_client::ClientError> {
    tokio::time::timeout(EVENT, c.read())
        .await
        .expect("a frame within the event bound")
}

/// Expects the server to close the client with a reason containing `text`.
pub async fn expect_close<R: FrameReader, W: FrameWriter>(
    c: &mut Client<R, W>,
    text: &str,
) -> CloseReason {
    match read(c).await {
        Err(kim_client::ClientError::Closed(r)) => {
            assert!(r.reason.contains(text), "close reason {r:?} lacks {text:?}");
            r
        }
        other => panic!("expected a close containing {text:?}, got {other:?}"),
    }
}

/// Encodes one raw TCP frame.
pub fn raw_frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(op);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Reads raw frames from a stream until it ends; returns them as (op, payload).
pub async fn read_raw_until_eof(s: &mut TcpStream) -> Vec<(u8, Bytes)> {
    let mut all = Vec::new();
    tokio::time::timeout(EVENT, s.read_to_end(&mut all))
        .await
        .expect("the server closes within the event bound")
        .expect("clean end of stream");
    let mut frames = Vec::new();
    let mut rest = &all[..];
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        assert!(rest.len() >= 5 + len, "truncated frame from the server");
        frames.push((rest[0], Bytes::copy_from_slice(&rest[5..5 + len])));
        rest = &rest[5 + len..];
    }
    assert!(rest.is_empty(), "trailing bytes from the server");
    frames
}

/// Reads the first line a server process printed, `<prefix>ADDR` (`listening on `, or
/// `debug listening on ` where a debug listener comes first), and returns ADDR.
pub fn first_line_addr(out: &mut impl std::io::BufRead, prefix: &str) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("the server's stdout");
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix}ADDR first, got {line:?}"))
        .to_string()
}

/// Connects a raw socket and writes `bytes`.
pub async fn raw(addr: &str, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connects");
    s.write_all(bytes).await.expect("writes");
    s
}

pub fn options() -> kim_core::OptionsBuilder {
    ServerOptions::builder()
}

/// Connects over websocket and logs in as `id`, asserting the `ok` reply.
pub async fn login_ws(addr: &str, id: &str) -> kim_ws::WsClient {
    let mut c = kim_ws::connect(addr, &no_heartbeat())
        .await
        .expect("connects");
    let ok = tokio::time::timeout(EVENT, c.login(id.to_string()))
        .await
        .expect("login answered in time")
        .expect("login accepted");
    assert_eq!(&ok.payload[..], b"ok");
    c
}

/// Worker processes that run this test binary entered at its test `entry` (a `#[test]` that
/// serves the master when `kim_core::ipc::is_worker()`, and returns at once otherwise).
pub fn this_binary_as_worker(entry: &str) -> WorkerCommand {
    WorkerCommand {
        program: std::env::current_exe().unwrap(),
        args: [entry, "--exact", "--nocapture"]
            .iter()
            .map(Into::into)
            .collect(),
    }
}
