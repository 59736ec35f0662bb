//! A million suspended sessions cannot take the machine: the server's total of held messages
//! holds. 100,000 sessions are suspended and offered 10 KiB each (about 1 GB) under a total of
//! 256 MiB: what is held stays under it, the largest sessions lose their oldest messages first
//! (counted), and once the sessions expire everything they held is freed: kim's heap is back
//! at its start. The resident memory is printed beside it; the allocator keeps part of the
//! peak's pages (see BENCHMARKS.md).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::first_line_addr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SESSIONS: usize = 100_000;
const MESSAGE: usize = 10 << 10;
const TOTAL: usize = 256 << 20;
/// Sessions offered many messages: the largest, which lose theirs first.
const LARGE: usize = 10;
const LARGE_MESSAGES: usize = 100;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + payload.len());
    f.push(op);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.unwrap();
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await.unwrap();
    (head[0], payload)
}

/// Logs in with `login` and returns the answer.
async fn login(addr: &str, login: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&frame(2, login.as_bytes())).await.unwrap();
    let (_, answer) = read_frame(&mut s).await;
    (s, String::from_utf8(answer).unwrap())
}

/// The server's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

async fn metric(debug: &str, name: &str) -> f64 {
    let mut s = TcpStream::connect(debug).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_total_holds_and_memory_comes_back() {
    let window = 25;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"])
        .args(["--session-window", &window.to_string()])
        .args(["--session-max-total-bytes", &TOTAL.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let pid = child.id();
    let server = Server(child);
    let debug = first_line_addr(&mut out, "debug listening on ");
    let addr = first_line_addr(&mut out, "listening on ");
    // A first login and logout, so that the start is a server that has served.
    drop(login(&addr, "warmup").await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = rss_kib(pid);
    let heap_start = metric(&debug, "kim_heap_bytes{state=\"in_use\"}").await;

    // 100,000 sessions, suspended at once (their connections end without a close).
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(parking_lot::Mutex::new(vec![String::new(); LARGE]));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (next, addr, tokens) = (next.clone(), addr.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= SESSIONS {
                    break;
                }
                let (s, answer) = login(&addr, &format!("s{i} session")).await;
                let token = answer.strip_prefix("ok ").expect("ok <token>");
                if i < LARGE {
                    tokens.lock()[i] = token.to_string();
                }
                drop(s);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let created = started.elapsed();

    // Offered 10 KiB each, and the large ones 100 each first: about 1 GB in all.
    let pushed = Instant::now();
    let mut pushers = Vec::new();
    let peak = Arc::new(AtomicUsize::new(0));
    for p in 0..4usize {
        let addr = addr.clone();
        pushers.push(tokio::spawn(async move {
            let (mut s, answer) = login(&addr, &format!("pusher{p}")).await;
            assert_eq!(answer, "ok");
            let text = "x".repeat(MESSAGE);
            let targets = (0..LARGE * LARGE_MESSAGES)
                .map(|i| i % LARGE)
                .chain(0..SESSIONS)
                .skip(p)
                .step_by(4);
            let mut batch = Vec::with_capacity(64 * (MESSAGE + 32));
            for (n, to) in targets.enumerate() {
                batch.extend_from_slice(&frame(1, format!("@s{to} {text}").as_bytes()));
                if n % 64 == 63 {
                    s.write_all(&batch).await.unwrap();
                    batch.clear();
                }
            }
            s.write_all(&batch).await.unwrap();
            // An echo after the pushes: every push before it was handled.
            s.write_all(&frame(1, b"done")).await.unwrap();
            loop {
                let (_, reply) = read_frame(&mut s).await;
                assert_ne!(
                    &reply[..7.min(reply.len())],
                    b"offline",
                    "a push was refused"
                );
                if reply == b"done" {
                    break;
                }
            }
        }));
    }
    let sampler = {
        let (debug, peak) = (debug.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                let held = metric(&debug, "kim_session_held_bytes").await as usize;
                peak.fetch_max(held, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for p in pushers {
        p.await.unwrap();
    }
    let pushed = pushed.elapsed();
    sampler.abort();
    let held = metric(&debug, "kim_session_held_bytes").await as usize;
    let dropped = metric(&debug, "kim_session_dropped_server_limit_total").await as usize;
    let rss_full = rss_kib(pid);
    println!(
        "{SESSIONS} sessions in {created:?}, {} MiB offered in {pushed:?}: held {} MiB at the \
         end, {} MiB at the highest sample, {dropped} dropped; RSS {start} KiB at the start, \
         {rss_full} KiB full",
        ((SESSIONS + LARGE * LARGE_MESSAGES) * MESSAGE) >> 20,
        held >> 20,
        peak.load(Ordering::Relaxed) >> 20,
    );
    assert!(held <= TOTAL, "held {held} over the total");
    assert!(
        peak.load(Ordering::Relaxed) <= TOTAL,
        "held over the total at some point"
    );
    assert!(
        dropped >= (SESSIONS * MESSAGE - TOTAL) / MESSAGE,
        "{dropped} dropped"
    );
    // The largest lost their oldest first: a resume from 0 is told new, from the last one
    // sent (100) it finds its newest message.
    let tokens = tokens.lock().clone();
    for (i, token) in tokens.iter().enumerate() {
        let (_, answer) = login(&addr, &format!("s{i} resume {token} 0")).await;
        assert!(answer.starts_with("new "), "s{i}: {answer}");
    }

    // Once the window has passed, every session is gone, and so is their memory.
    let deadline = Instant::now() + Duration::from_secs(window + 60);
    while metric(&debug, "kim_sessions").await > 0.0 {
        assert!(Instant::now() < deadline, "sessions did not expire");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(metric(&debug, "kim_session_held_bytes").await, 0.0);
    assert_eq!(metric(&debug, "kim_session_held_messages").await, 0.0);
    // The allocator's decay and kim-debug's trims (at most one per 10 s) run meanwhile.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let rss_end = rss_kib(pid);
    let heap_end = metric(&debug, "kim_heap_bytes{state=\"in_use\"}").await;
    let free_end = metric(&debug, "kim_heap_bytes{state=\"free\"}").await;
    let trims = metric(&debug, "kim_heap_trims_total").await;
    println!(
        "after expiry: heap in use {heap_end} bytes ({heap_start} at the start); RSS {rss_end} \
         KiB ({start} KiB at the start); the allocator keeps {free_end} bytes free; {trims} trims"
    );
    // What kim held is back: its heap within 1 MiB of the start (per-thread spare queues and
    // the like are kept, bounded).
    assert!(
        heap_end <= heap_start + (1 << 20) as f64,
        "heap in use {heap_end} after expiry, {heap_start} at the start"
    );
    drop(server);
}
