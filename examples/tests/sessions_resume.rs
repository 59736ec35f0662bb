//! Sessions as a phone sees them: a stream of pushes whose connection is cut without a close
//! at a random point, resumed by mock-client on its own, over tcp and ws, in-process and in
//! process mode, plain and over TLS, and with permessage-deflate. The cut is made by a TCP
//! proxy between the client and the server, which resets both sides, as a network switch does.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
mod proxy;

use proxy::Proxy;

/// Pushes in the stream.
const PUSHES: usize = 10_000;

/// A directory of its own under the system's temporary directory.
fn temp_dir() -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("kim-sessions-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// Lines of a child's stdout, read on a thread of their own.
fn lines(out: ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no line from {what} in time"))
}

/// A random point in the stream, from the clock (no seed to manage).
fn random_point() -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    1_000 + nanos % (PUSHES - 2_000)
}

/// bob pushes `PUSHES` numbered messages to alice, who keeps a session through the proxy;
/// her connection is reset at a random point; she resumes and ends with every message once,
/// in order.
async fn a_cut_stream_is_resumed(transport: &str, dgram: bool, tls: bool) {
    resumed_with(transport, dgram, tls, false).await
}

async fn resumed_with(transport: &str, dgram: bool, tls: bool, deflate: bool) {
    let dir = temp_dir();
    let mut server_args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--transport".into(),
        transport.into(),
        // The stream is not paced: what arrives while alice is away is held whole.
        "--session-max-messages".into(),
        PUSHES.to_string(),
        "--session-max-bytes".into(),
        (16 << 20).to_string(),
    ];
    if dgram {
        server_args.extend(["--backend", "dgram", "--workers", "2"].map(String::from));
    }
    let mut client_args: Vec<String> = Vec::new();
    if deflate {
        // Every message compressed (threshold 0): the numbers go through the compressor too.
        server_args.extend(["--deflate", "--deflate-threshold", "0"].map(String::from));
        client_args.push("--deflate".into());
    }
    if tls {
        let (cert, key) = self_signed(&dir);
        server_args.extend([
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ]);
        client_args = vec!["--tls-root".into(), cert.display().to_string()];
    }
    let mut server = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(&server_args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let server_out = lines(server.stdout.take().unwrap());
    let server = Killed(server);
    let addr: SocketAddr = loop {
        let line = next_line(&server_out, "mock-server");
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.parse().unwrap();
        }
    };
    let proxy = Proxy::to(addr).await;
    let url = |a: SocketAddr| match (transport, tls) {
        ("ws", false) => format!("ws://{a}/"),
        ("ws", true) => format!("wss://{a}/"),
        _ => a.to_string(),
    };

    let client = |id: &str, addr: String, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mock-client"));
        c.args(["--transport", transport, "--addr", &addr, "--id", id])
            .args(&client_args)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let mut alice = client(
        "alice",
        url(proxy.addr),
        &["--count", "0", "--listen", "--session"],
    );
    let alice_out = lines(alice.stdout.take().unwrap());
    let alice = Killed(alice);
    let login = next_line(&alice_out, "alice");
    assert!(login.starts_with("login: ok "), "{login}");
    assert_eq!(next_line(&alice_out, "alice"), "listening (Ctrl-C to stop)");

    let message = "@alice {n}";
    let count = PUSHES.to_string();
    let mut bob = client(
        "bob",
        url(addr),
        &[
            "--count",
            &count,
            "--message",
            message,
            "--push-wait",
            "0.0001",
        ],
    );
    let bob_out = lines(bob.stdout.take().unwrap());

    let cut_at = random_point();
    let mut received = Vec::with_capacity(PUSHES);
    let mut resumed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.len() < PUSHES {
        let line = alice_out
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("alice has {} of {PUSHES}", received.len()));
        if let Some(rest) = line.strip_prefix("got ") {
            let (seq, text) = rest.split_once(": ").expect("got <seq>: <text>");
            let n: usize = text
                .strip_prefix("bob: ")
                .expect("from bob")
                .parse()
                .unwrap();
            received.push((seq.parse::<usize>().unwrap(), n));
            if received.len() == cut_at {
                proxy.cut();
            }
        } else if line.starts_with("login: ") {
            resumed.push(line);
        }
    }
    assert!(
        !resumed.is_empty() && resumed.iter().all(|l| l.starts_with("login: resumed ")),
        "alice resumed her session: {resumed:?}"
    );
    let expected: Vec<(usize, usize)> = (1..=PUSHES).map(|i| (i, i)).collect();
    assert!(
        received == expected,
        "every message once, in order ({transport}, dgram {dgram}, tls {tls}, cut at {cut_at}); \
         first difference at {:?}",
        received.iter().zip(&expected).position(|(a, b)| a != b)
    );
    // Not one push was answered offline.
    assert!(bob.wait().unwrap().success(), "bob sent everything");
    let bob_lines: Vec<String> = bob_out.try_iter().collect();
    assert!(
        !bob_lines.iter().any(|l| l.contains("offline")),
        "no push was refused: {:?}",
        bob_lines.iter().find(|l| l.contains("offline"))
    );
    drop((alice, server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_in_process() {
    a_cut_stream_is_resumed("tcp", false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_in_process() {
    a_cut_stream_is_resumed("ws", false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_process_mode() {
    a_cut_stream_is_resumed("tcp", true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_process_mode() {
    a_cut_stream_is_resumed("ws", true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_tls_in_process() {
    a_cut_stream_is_resumed("tcp", false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_in_process() {
    a_cut_stream_is_resumed("ws", false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_tls_process_mode() {
    a_cut_stream_is_resumed("tcp", true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_process_mode() {
    a_cut_stream_is_resumed("ws", true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_deflate_in_process() {
    resumed_with("ws", false, false, true).await;
}
