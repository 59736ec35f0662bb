//! The example binaries run as a user would run them: mock-server in its own process,
//! mock-client against it, and a clean shutdown on SIGTERM.

mod common;

use std::io::{BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};

use common::first_line_addr;

/// Starts mock-server on 127.0.0.1 with `args` (logs at warn): the process, what it prints,
/// and the address it listens on.
fn mock_server(args: &[&str]) -> (Child, BufReader<ChildStdout>, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("mock-server starts");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let addr = first_line_addr(&mut out, "listening on ");
    (server, out, addr)
}

#[test]
fn mock_server_and_mock_client_talk() {
    let (mut server, mut out, addr) = mock_server(&["--transport", "tcp"]);

    let run = |id: &str, message: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_mock-client"))
            .args([
                "--addr",
                &addr,
                "--id",
                id,
                "--count",
                "2",
                "--message",
                message,
            ])
            .env("RUST_LOG", "warn")
            .output()
            .expect("mock-client runs");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run("alice", "hello");
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "login: ok\nreply 1: hello\nreply 2: hello\n");
    let (ok, stdout, _) = run("bob", "@nobody hi");
    assert!(ok);
    assert_eq!(
        stdout,
        "login: ok\nreply 1: offline nobody\nreply 2: offline nobody\n"
    );
    let (ok, _, stderr) = run(&"x".repeat(65), "hello");
    assert!(!ok, "a bad id fails the client");
    assert!(stderr.contains("invalid user id"), "{stderr}");

    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = server.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        rest.contains("shut down: 0 channels closed, 0 forced"),
        "{rest}"
    );
}

#[test]
fn bad_flags_get_a_clear_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not-an-address"), "{err}");

    let o = Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .args(["--read-wait=-1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--read-wait"));
}

/// Process ids of `parent`'s children, from /proc.
fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: state, ppid, ...
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent && state != "Z" {
            out.push(pid);
        }
    }
    out.sort();
    out
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn process_mode_re_executes_the_binary_reloads_on_sigusr1_and_leaves_no_orphans() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--transport", "ws", "--listen", "127.0.0.1:0"])
        .args(["--backend", "dgram", "--workers", "2"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("mock-server starts");
    let master = server.id();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let addr = first_line_addr(&mut out, "listening on ");
    // The workers are this same binary, and only the master printed its address.
    let mut workers = Vec::new();
    wait_for("two workers", || {
        workers = children(master);
        workers.len() == 2
    });
    for w in &workers {
        let exe = std::fs::read_link(format!("/proc/{w}/exe")).unwrap();
        assert_eq!(
            exe,
            std::fs::canonicalize(env!("CARGO_BIN_EXE_mock-server")).unwrap()
        );
    }

    let talk = |id: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_mock-client"))
            .args(["--transport", "ws", "--addr", &addr, "--id", id])
            .args(["--count", "3", "--message", "hi"])
            .env("RUST_LOG", "warn")
            .output()
            .expect("mock-client runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        talk("alice"),
        "login: ok\nreply 1: hi\nreply 2: hi\nreply 3: hi\n"
    );

    // SIGUSR1: both workers replaced, the server goes on.
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(master as i32, libc::SIGUSR1) }, 0);
    wait_for("both workers replaced", || {
        let now = children(master);
        now.len() == 2 && now.iter().all(|p| !workers.contains(p))
    });
    assert_eq!(
        talk("bob"),
        "login: ok\nreply 1: hi\nreply 2: hi\nreply 3: hi\n"
    );

    // A master killed outright takes its workers with it.
    let workers = children(master);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(master as i32, libc::SIGKILL) }, 0);
    server.wait().unwrap();
    wait_for("workers gone after the master was killed", || {
        workers
            .iter()
            .all(|w| !std::path::Path::new(&format!("/proc/{w}")).exists())
    });
}

#[test]
fn a_flood_of_refused_pushes_logs_a_line_a_second_not_a_line_a_push() {
    use std::time::{Duration, Instant};

    let mut server = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--transport", "tcp", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mock-server starts");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let addr = first_line_addr(&mut out, "listening on ");
    let mut stderr = server.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });

    // A client that never reads, and one that pushes to it as fast as it can for 2 s: once
    // the reader's outbox is full, every push is refused.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sent = rt.block_on(async {
        let opts = kim_client::ClientOptions {
            heartbeat: None,
            ..Default::default()
        };
        let mut sink = kim_tcp::connect(&addr, &opts).await.unwrap();
        sink.login("sink".to_string()).await.unwrap();
        let mut flooder = kim_tcp::connect(&addr, &opts).await.unwrap();
        flooder.login("flooder".to_string()).await.unwrap();
        let message = format!("@sink {}", "x".repeat(1000));
        let until = Instant::now() + Duration::from_secs(2);
        let mut sent = 0u64;
        while Instant::now() < until {
            flooder.send_text(message.clone()).await.unwrap();
            sent += 1;
        }
        drop(sink);
        sent
    });
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    server.wait().unwrap();
    let log = log.join().unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("push failed")).collect();
    assert!(
        sent > 10_000,
        "the flood was too slow to fill the outbox: {sent} pushes"
    );
    assert!(!lines.is_empty(), "refused pushes are logged: {log:.2000}");
    assert!(
        lines.len() <= 5,
        "{} lines for {sent} pushes in 2 s: {:.2000}",
        lines.len(),
        log
    );
    assert!(
        lines.iter().all(|l| l.contains("suppressed=")),
        "the lines say how many were held back: {lines:?}"
    );
}

#[test]
fn mock_client_pushes_listens_and_fails_without_a_backtrace() {
    let (mut server, _out, addr) = mock_server(&["--transport", "ws"]);
    let client = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mock-client"));
        c.args(["--transport", "ws", "--addr", &addr])
            .args(args)
            .env("RUST_LOG", "warn")
            .env("RUST_BACKTRACE", "1");
        c
    };

    // bob listens; alice pushes to him.
    let mut bob = client(&["--id", "bob", "--count", "0", "--listen"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mock-client runs");
    let mut bob_out = BufReader::new(bob.stdout.take().unwrap());
    let mut line = String::new();
    use std::io::BufRead;
    for expected in ["login: ok\n", "listening (Ctrl-C to stop)\n"] {
        line.clear();
        bob_out.read_line(&mut line).unwrap();
        assert_eq!(line, expected);
    }
    let o = client(&["--id", "alice", "--count", "1", "--message", "@bob hi"])
        .output()
        .expect("mock-client runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "login: ok\npushed 1: to bob\n"
    );
    line.clear();
    bob_out.read_line(&mut line).unwrap();
    assert_eq!(line, "got: alice: hi\n");
    // SAFETY: signalling our own child.
    assert_eq!(
        unsafe { libc::kill(bob.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    assert!(
        bob.wait().unwrap().success(),
        "an interrupted listener exits 0"
    );

    // An expected failure is one line, with no backtrace.
    let o = client(&["--id", &"x".repeat(65)]).output().unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.starts_with("mock-client: "), "{stderr}");
    assert!(stderr.contains("invalid user id"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");

    // SAFETY: as above.
    unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
    assert!(server.wait().unwrap().success());
}
