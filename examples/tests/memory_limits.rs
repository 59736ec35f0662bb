//! A peer's declared frame length reserves nothing: memory follows the bytes that arrive.
//!
//! `mock-server` runs as a child process under a lowered address-space limit (RLIMIT_AS), the
//! way a container's memory limit would hold it. A thousand logged-in connections each send a
//! header that declares a maximal frame and then a few bytes of it; were the declared length
//! reserved up front, the server would need gigabytes of address space and abort on the first
//! failed allocation, dropping every client. Before login the limit is far smaller still.

mod common;

use std::io::BufReader;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{first_line_addr, read_raw_until_eof, EVENT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's address-space limit.
const ADDRESS_SPACE: u64 = 1 << 30;
/// The server's message limit, declared by every hostile header.
const MAX_MESSAGE: usize = 4 << 20;
/// Connections that each declare a maximal frame.
const DECLARING: usize = 1000;

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_limited() -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mock-server"));
    cmd.args([
        "--transport",
        "tcp",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "2",
        "--max-message-size",
        &MAX_MESSAGE.to_string(),
    ])
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and only reads the struct we pass.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("mock-server starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr = first_line_addr(&mut out, "listening on ");
    Server { child, addr }
}

fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![op];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The header of a binary frame declaring `len` bytes, and the first 10 of them.
fn declaring(len: usize) -> Vec<u8> {
    let mut f = vec![2];
    f.extend_from_slice(&(len as u32).to_be_bytes());
    f.extend_from_slice(b"0123456789");
    f
}

async fn login(addr: &str, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connects");
    s.write_all(&frame(2, id.as_bytes())).await.unwrap();
    let mut ok = [0u8; 7];
    tokio::time::timeout(EVENT, s.read_exact(&mut ok))
        .await
        .expect("login answered in time")
        .expect("login answered");
    assert_eq!(ok, *b"\x02\0\0\0\x02ok");
    s
}

async fn echo(s: &mut TcpStream, text: &str) {
    s.write_all(&frame(1, text.as_bytes())).await.unwrap();
    let mut got = vec![0u8; 5 + text.len()];
    tokio::time::timeout(EVENT, s.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(got, frame(1, text.as_bytes()));
}

fn alive(child: &mut Child) -> bool {
    child.try_wait().expect("try_wait").is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_lengths_reserve_nothing_under_an_address_space_limit() {
    let mut server = start_limited();
    let addr = server.addr.clone();

    // Before login: a frame past the login limit is refused at its header.
    let mut s = common::raw(&addr, &declaring(MAX_MESSAGE)).await;
    let frames = read_raw_until_eof(&mut s).await;
    let close = frames.last().expect("a close frame");
    assert_eq!(close.0, 8, "{frames:?}");
    let reason = String::from_utf8_lossy(&close.1);
    assert!(reason.contains("exceeds the limit"), "{reason}");

    let mut witness = login(&addr, "witness").await;
    echo(&mut witness, "before").await;

    // After login: a thousand connections each declare the largest frame and send 10 bytes.
    let mut hostile = Vec::with_capacity(DECLARING);
    for i in 0..DECLARING {
        let mut s = login(&addr, &format!("h{i}")).await;
        s.write_all(&declaring(MAX_MESSAGE)).await.unwrap();
        hostile.push(s);
    }
    // Let the server read every one of them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        alive(&mut server.child),
        "the server died under the address-space limit"
    );
    echo(&mut witness, "after").await;

    // Every hostile connection is still open: nothing was dropped for what it declared.
    for (i, s) in hostile.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
            Err(_) => {}
            Ok(r) => panic!("hostile connection {i} ended: {r:?}"),
        }
    }
    // A new client is served too.
    let mut late = login(&addr, "late").await;
    echo(&mut late, "late").await;
    assert!(alive(&mut server.child));
}
