//! KIM's parallel login test, with the server's memory measured around it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use kim_client::{Client, ClientError, ClientOptions};
use kim_core::{FrameReader, FrameWriter};
use tokio::sync::Semaphore;

use std::io::{ErrorKind, Read, Write};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

use crate::proc::ServerProcess;
use crate::wire::Wire;

/// What one parallel run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParallelResult {
    /// Clients logged in.
    pub clients: usize,
    /// Time to log them all in, in seconds.
    pub login_secs: f64,
    /// Logins per second.
    pub logins_per_sec: f64,
    /// Server CPU time (user + system) per login, in microseconds.
    pub server_cpu_us_per_login: f64,
    /// Server resident memory before the logins, in bytes.
    pub rss_before: u64,
    /// With every client connected and idle.
    pub rss_with_all: u64,
    /// After every client closed and the ids were reused once.
    pub rss_after: u64,
    /// (rss_with_all - rss_before) / clients.
    pub bytes_per_conn: f64,
    /// The same for resident anonymous memory (`RssAnon`): without the pages of the binary
    /// that the first logins bring in, a fixed cost that [`ParallelResult::bytes_per_conn`]
    /// spreads over the clients.
    pub anon_bytes_per_conn: f64,
    /// The growth of the heap in use as the server's allocator counts it
    /// (`kim_heap_bytes{state="in_use"}` on its debug listener: glibc's chunks with their
    /// headers, or jemalloc's allocated bytes) / clients; `None` for a server without one.
    /// Resident memory minus this is the allocator's own: free memory it keeps, fragments.
    pub heap_bytes_per_conn: Option<f64>,
}

/// The server's heap in use, from its metrics, if it has a debug listener.
fn heap_in_use(debug: Option<&str>) -> Option<u64> {
    let text = crate::prometheus::get(debug?, "/metrics", Duration::from_secs(5)).ok()?;
    crate::prometheus::sample(&text, "kim_heap_bytes", "state=\"in_use\"").map(|v| v as u64)
}

/// Where a run saves its server's heap profiles (`GET /debug/pprof/heap` on the server's debug
/// listener): before the logins and with every client logged in, as
/// `<dir>/<server pid>-before.pb.gz` and `-held.pb.gz`. `go tool pprof -sample_index=inuse_space
/// -base <before> <held>` then shows what the connections hold, by allocating stack.
struct HeapProfiles {
    dir: PathBuf,
    pid: u32,
    debug: Option<String>,
}

impl HeapProfiles {
    fn new(dir: &Path, server: &ServerProcess) -> HeapProfiles {
        HeapProfiles {
            dir: dir.to_path_buf(),
            pid: server.pid(),
            debug: server.debug_addr(Duration::from_secs(5)),
        }
    }

    /// Saves the profile of now as `<pid>-<phase>.pb.gz`; a server without a debug listener
    /// (a baseline) has none, and is skipped.
    fn save(&self, phase: &str) -> anyhow::Result<()> {
        let Some(addr) = &self.debug else {
            eprintln!(
                "heap profile: server {} has no debug listener; skipped",
                self.pid
            );
            return Ok(());
        };
        let profile =
            crate::prometheus::get_bytes(addr, "/debug/pprof/heap", Duration::from_secs(30))
                .map_err(|e| {
                    anyhow::anyhow!("{e:#} (kim's servers need kim-examples' heap-profile feature)")
                })?;
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{}-{phase}.pb.gz", self.pid));
        std::fs::write(&path, profile)?;
        eprintln!("heap profile: {}", path.display());
        Ok(())
    }
}

/// Logs in `clients` clients with at most `in_flight` logins at once, holds them `hold`,
/// checks each still echoes, closes them all, then checks that every id can log in again (the
/// server kept no channel behind) and reads the server's memory after.
pub async fn run(
    server: &ServerProcess,
    wire: Wire,
    clients: usize,
    in_flight: usize,
    hold: Duration,
    heap: Option<&Path>,
) -> anyhow::Result<ParallelResult> {
    match wire {
        Wire::Ws => {
            run_with(
                server,
                wire,
                clients,
                in_flight,
                hold,
                heap,
                |addr, opts| async move { kim_ws::connect(&addr, &opts).await },
            )
            .await
        }
        Wire::Tcp => {
            run_with(
                server,
                wire,
                clients,
                in_flight,
                hold,
                heap,
                |addr, opts| async move { kim_tcp::connect(&addr, &opts).await },
            )
            .await
        }
    }
}

/// [`run`] over websocket with permessage-deflate offered by every client (kim's, with its
/// default settings): the server's memory per idle connection with compression negotiated.
pub async fn run_deflate(
    server: &ServerProcess,
    clients: usize,
    in_flight: usize,
    hold: Duration,
    heap: Option<&Path>,
) -> anyhow::Result<ParallelResult> {
    run_with(
        server,
        Wire::Ws,
        clients,
        in_flight,
        hold,
        heap,
        |addr, opts| async move {
            let c = kim_ws::Compression::new();
            kim_ws::connect_compressed(&addr, &[], &c, &opts).await
        },
    )
    .await
}

async fn login_all<R, W, F, Fut>(
    addr: &str,
    clients: usize,
    in_flight: usize,
    connect: F,
    what: &str,
    patience: Duration,
) -> anyhow::Result<Vec<Client<R, W>>>
where
    R: FrameReader,
    W: FrameWriter,
    F: Fn(String, ClientOptions) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Client<R, W>, ClientError>> + Send,
{
    let opts = ClientOptions {
        heartbeat: None,
        connect_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    let gate = Arc::new(Semaphore::new(in_flight));
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let gate = gate.clone();
        let addr = addr.to_string();
        let opts = opts.clone();
        let connect = connect.clone();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("semaphore open");
            // A duplicate refusal is retried until `patience` runs out: a channel closed a
            // moment ago may still be leaving the server's map.
            let deadline = Instant::now() + patience;
            let c = loop {
                let mut c = connect(addr.clone(), opts.clone()).await?;
                match c.login(format!("user-{i}")).await {
                    Ok(ok) => {
                        anyhow::ensure!(&ok.payload[..] == b"ok", "unexpected login reply");
                        break c;
                    }
                    Err(ClientError::Closed(r))
                        if r.reason == "channel id is repeated" && Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            drop(permit);
            Ok::<_, anyhow::Error>(c)
        }));
    }
    let pb = indicatif::ProgressBar::new(clients as u64);
    pb.set_message(what.to_string());
    let mut out = Vec::with_capacity(clients);
    let mut failures = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await? {
            Ok(c) => out.push(c),
            Err(e) => failures.push(format!("login {i}: {e:#}")),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if !failures.is_empty() {
        bail!(
            "{} of {clients} logins failed; first: {}",
            failures.len(),
            failures[0]
        );
    }
    Ok(out)
}

async fn run_with<R, W, F, Fut>(
    server: &ServerProcess,
    wire: Wire,
    clients: usize,
    in_flight: usize,
    hold: Duration,
    heap: Option<&Path>,
    connect: F,
) -> anyhow::Result<ParallelResult>
where
    R: FrameReader,
    W: FrameWriter,
    F: Fn(String, ClientOptions) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<Client<R, W>, ClientError>> + Send,
{
    tokio::time::sleep(Duration::from_millis(300)).await;
    let profiles = heap.map(|dir| HeapProfiles::new(dir, server));
    if let Some(p) = &profiles {
        p.save("before")?;
    }
    let debug = server.debug_addr(Duration::from_millis(500));
    let heap_before = heap_in_use(debug.as_deref());
    let rss_before = server.rss()?;
    let anon_before = server.rss_anon()?;
    let cpu_before = server.cpu_seconds()?;
    let started = Instant::now();
    let addr = server.addr.clone();
    let all =
        tokio::task::spawn_blocking(move || lean_logins(&addr, wire, clients, in_flight, false))
            .await??;
    let login_secs = started.elapsed().as_secs_f64();
    let login_cpu = server.cpu_seconds()? - cpu_before;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with_all = server.rss()?;
    let anon = (anon_before, server.rss_anon()?);
    let heap = heap_before.zip(heap_in_use(debug.as_deref()));
    if let Some(p) = &profiles {
        p.save("held")?;
    }
    tokio::time::sleep(hold).await;

    let echo_failures = tokio::task::spawn_blocking(move || {
        let request = wire.text_request(b"still there?");
        let mut reply = vec![0u8; wire.reply_len(12)];
        let mut failures = 0;
        for mut s in all {
            let ok = s.set_nonblocking(false).is_ok()
                && s.set_read_timeout(Some(Duration::from_secs(10))).is_ok()
                && s.write_all(&request).is_ok()
                && s.read_exact(&mut reply).is_ok()
                && reply.ends_with(b"still there?");
            if !ok {
                failures += 1;
            }
            // A close frame, then the socket goes.
            let _ = s.write_all(&wire.close_request());
        }
        failures
    })
    .await?;
    let held = Held {
        heap,
        login_secs,
        login_cpu,
        rss_before,
        rss_with_all,
        anon,
        echo_failures,
    };
    finish(server, clients, in_flight, connect, held).await
}

/// What a run measured while its clients were logged in.
struct Held {
    /// The heap in use before the logins and with every client in, if the server says.
    heap: Option<(u64, u64)>,
    login_secs: f64,
    login_cpu: f64,
    rss_before: u64,
    rss_with_all: u64,
    /// Resident anonymous memory before the logins and with every client in.
    anon: (u64, u64),
    /// Held connections that no longer echoed after the hold.
    echo_failures: usize,
}

/// How every run ends, its clients gone: every id logs in once more (a channel the server kept
/// would refuse it as a duplicate), and the server's memory once those are gone too.
async fn finish<R, W, F, Fut>(
    server: &ServerProcess,
    clients: usize,
    in_flight: usize,
    connect: F,
    held: Held,
) -> anyhow::Result<ParallelResult>
where
    R: FrameReader,
    W: FrameWriter,
    F: Fn(String, ClientOptions) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Client<R, W>, ClientError>> + Send,
{
    if held.echo_failures > 0 {
        bail!(
            "{} of {clients} held connections no longer echo",
            held.echo_failures
        );
    }
    let patience = Duration::from_secs(2);
    let again = login_all(
        &server.addr,
        clients,
        in_flight,
        connect,
        "logging in again",
        patience,
    )
    .await?;
    drop(again);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss()?;
    let Held {
        login_secs,
        login_cpu,
        rss_before,
        rss_with_all,
        anon,
        heap,
        ..
    } = held;
    Ok(ParallelResult {
        clients,
        login_secs,
        logins_per_sec: clients as f64 / login_secs,
        server_cpu_us_per_login: login_cpu * 1e6 / clients as f64,
        rss_before,
        rss_with_all,
        rss_after,
        bytes_per_conn: rss_with_all.saturating_sub(rss_before) as f64 / clients as f64,
        anon_bytes_per_conn: anon.1.saturating_sub(anon.0) as f64 / clients as f64,
        heap_bytes_per_conn: heap
            .map(|(before, with_all)| with_all.saturating_sub(before) as f64 / clients as f64),
    })
}

/// [`run`] over wss against a server with a certificate for `localhost`, trusting
/// `root_pem`: every login is a full TLS handshake (no resumption), made by kim's client (the
/// epoll loop of the plain runs speaks no TLS; both servers meet the same client).
pub async fn run_tls(
    server: &ServerProcess,
    clients: usize,
    in_flight: usize,
    hold: Duration,
    root_pem: &str,
) -> anyhow::Result<ParallelResult> {
    let config = kim_tls::TlsClientConfig::with_root_pem(root_pem.as_bytes(), &[b"http/1.1"])?
        .without_resumption();
    let connect = move |addr: String, opts: ClientOptions| {
        let config = config.clone();
        async move {
            let io = kim_tls::connect(&addr, "localhost", &config)
                .await
                .map_err(ClientError::Io)?;
            kim_ws::client_over(io, "localhost", "/", &[], None, &opts).await
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let debug = server.debug_addr(Duration::from_millis(500));
    let heap_before = heap_in_use(debug.as_deref());
    let rss_before = server.rss()?;
    let anon_before = server.rss_anon()?;
    let cpu_before = server.cpu_seconds()?;
    let started = Instant::now();
    let login = Duration::from_secs(2);
    let mut all = login_all(
        &server.addr,
        clients,
        in_flight,
        connect.clone(),
        "logging in",
        login,
    )
    .await?;
    let login_secs = started.elapsed().as_secs_f64();
    let login_cpu = server.cpu_seconds()? - cpu_before;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with_all = server.rss()?;
    let anon = (anon_before, server.rss_anon()?);
    let heap = heap_before.zip(heap_in_use(debug.as_deref()));
    tokio::time::sleep(hold).await;
    let mut echo_failures = 0;
    for c in &mut all {
        let echoed = async {
            c.send_text("still there?").await?;
            c.read().await
        };
        match tokio::time::timeout(Duration::from_secs(10), echoed).await {
            Ok(Ok(f)) if &f.payload[..] == b"still there?" => {}
            _ => echo_failures += 1,
        }
    }
    drop(all);
    let held = Held {
        heap,
        login_secs,
        login_cpu,
        rss_before,
        rss_with_all,
        anon,
        echo_failures,
    };
    finish(server, clients, in_flight, connect, held).await
}

/// Where a lean login stands.
enum Stage {
    /// Connecting; the request goes out once the socket is writable.
    Connecting,
    /// The upgrade request is out; reading the response head.
    Upgrading,
    /// The login frame is out; reading the `ok`.
    LoggingIn,
}

struct Pending {
    stream: MioStream,
    stage: Stage,
    id: usize,
    got: Vec<u8>,
}

/// Logs `clients` clients in with at most `in_flight` at once, driving every socket from one
/// epoll thread, so that the login rate measures the server rather than the client. With
/// `session`, each begins a session (the mock protocol's `<id> session`, answered
/// `ok <token>`). Returns the logged-in sockets (non-blocking).
pub fn lean_logins(
    addr: &str,
    wire: Wire,
    clients: usize,
    in_flight: usize,
    session: bool,
) -> anyhow::Result<Vec<std::net::TcpStream>> {
    let suffix = if session { " session" } else { "" };
    let target: std::net::SocketAddr = addr.parse()?;
    let upgrade = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    // `ok`, or `ok ` and a token of 32 hex digits.
    let ok_len = wire.reply_len(if session { 35 } else { 2 });
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut slots: Vec<Option<Pending>> = (0..in_flight.max(1)).map(|_| None).collect();
    let mut next = 0usize;
    let mut done = Vec::with_capacity(clients);
    let pb = indicatif::ProgressBar::new(clients as u64);
    pb.set_message("logging in");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Fill free slots with new connections.
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.is_none() && next < clients {
                let mut stream = MioStream::connect(target)?;
                stream.set_nodelay(true)?;
                poll.registry().register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                *slot = Some(Pending {
                    stream,
                    stage: Stage::Connecting,
                    id: next,
                    got: Vec::new(),
                });
                next += 1;
            }
        }
        if done.len() == clients {
            break;
        }
        if Instant::now() > deadline {
            bail!("logins stalled: {} of {clients} done", done.len());
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(p) = slots[i].as_mut() else { continue };
            if matches!(p.stage, Stage::Connecting) && ev.is_writable() {
                if let Some(e) = p.stream.take_error()? {
                    return Err(e.into());
                }
                if p.stream.peer_addr().is_err() {
                    continue; // not connected yet
                }
                let login = wire.text_request(format!("user-{}{suffix}", p.id).as_bytes());
                // Small writes on a fresh socket go out whole.
                if wire == Wire::Ws {
                    p.stream.write_all(upgrade.as_bytes())?;
                    p.stage = Stage::Upgrading;
                } else {
                    p.stream.write_all(&login)?;
                    p.stage = Stage::LoggingIn;
                }
            }
            if !ev.is_readable() {
                continue;
            }
            let mut buf = [0u8; 4096];
            loop {
                match p.stream.read(&mut buf) {
                    Ok(0) => bail!("the server closed login {}", p.id),
                    Ok(n) => p.got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if matches!(p.stage, Stage::Upgrading) {
                if let Some(end) = p.got.windows(4).position(|w| w == b"\r\n\r\n") {
                    anyhow::ensure!(
                        p.got.starts_with(b"HTTP/1.1 101"),
                        "upgrade refused: {}",
                        String::from_utf8_lossy(&p.got)
                    );
                    p.got.drain(..end + 4);
                    let login = wire.text_request(format!("user-{}{suffix}", p.id).as_bytes());
                    p.stream.write_all(&login)?;
                    p.stage = Stage::LoggingIn;
                }
            }
            if matches!(p.stage, Stage::LoggingIn) && p.got.len() >= ok_len {
                let answer = &p.got[wire.reply_len(0)..];
                anyhow::ensure!(
                    p.got.len() == ok_len && answer.starts_with(b"ok"),
                    "login {} not answered with ok: {:?}",
                    p.id,
                    String::from_utf8_lossy(&p.got)
                );
                let mut p = slots[i].take().expect("present above");
                poll.registry().deregister(&mut p.stream)?;
                // SAFETY: the descriptor moves from the mio stream to the std one, once.
                let std = unsafe {
                    use std::os::fd::{FromRawFd, IntoRawFd};
                    std::net::TcpStream::from_raw_fd(p.stream.into_raw_fd())
                };
                done.push(std);
                pb.inc(1);
            }
        }
    }
    pb.finish_and_clear();
    Ok(done)
}
