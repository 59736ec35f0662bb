//! The example binaries run as a user would run them: mock-server in its own process,
//! mock-client against it, and a clean shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

#[test]
fn mock_server_and_mock_client_talk() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--transport", "tcp", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("mock-server starts");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();

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
