//! The example binaries over TLS, as a user runs them: mock-server with `--tls-cert` and
//! `--tls-key` serving wss and TCP frames over TLS (in process mode too), mock-client with
//! `--tls-root`, and the certificate reloaded on SIGHUP (a bad file refused, the old
//! certificate staying).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::first_line_addr;

fn self_signed() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// Runs mock-client over TLS trusting `root`: whether it succeeded, its stdout and stderr.
fn client(transport: &str, addr: &str, root: &Path, id: &str) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_mock-client"))
        .args(["--transport", transport, "--addr", addr, "--id", id])
        .args(["--count", "1", "--message", "over tls", "--tls-root"])
        .arg(root)
        .env("RUST_LOG", "warn")
        .output()
        .expect("mock-client runs");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn the_examples_serve_tls_and_reload_the_certificate_on_sighup() {
    let dir = std::env::temp_dir().join(format!("kim-examples-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (cert_a, key_a) = self_signed();
    let (cert_b, key_b) = self_signed();
    let (root_a, root_b) = (file("a.pem", &cert_a), file("b.pem", &cert_b));
    let (cert, key) = (file("cert.pem", &cert_a), file("key.pem", &key_a));

    let mut server = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--listen", "127.0.0.1:0", "--transport", "ws", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mock-server starts");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut err = BufReader::new(server.stderr.take().unwrap());
    let addr = first_line_addr(&mut out, "listening on ");
    let url = format!("wss://{addr}/");

    let (ok, stdout, stderr) = client("ws", &url, &root_a, "alice");
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "login: ok\nreply 1: over tls\n");

    // SIGHUP with certificate B in the files: new handshakes present B.
    std::fs::write(&cert, &cert_b).unwrap();
    std::fs::write(&key, &key_b).unwrap();
    let hup = || {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(
            unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGHUP) },
            0
        );
    };
    hup();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "tls certificate reloaded");
    let (ok, _, stderr) = client("ws", &url, &root_a, "bob");
    assert!(
        !ok && stderr.contains("certificate"),
        "A is no longer served: {stderr}"
    );
    let (ok, stdout, stderr) = client("ws", &url, &root_b, "bob");
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "login: ok\nreply 1: over tls\n");

    // A file that is not a certificate: refused, B stays.
    std::fs::write(&cert, "garbage").unwrap();
    hup();
    let refused = (0..20)
        .map_while(|_| {
            let mut l = String::new();
            (err.read_line(&mut l).ok()? > 0).then_some(l)
        })
        .find(|l| l.contains("tls certificate not reloaded"));
    assert!(refused.is_some_and(|l| l.contains("no CERTIFICATE")));
    let (ok, _, stderr) = client("ws", &url, &root_b, "carol");
    assert!(ok, "{stderr}");
    let _ = server.kill();
    let _ = server.wait();

    // TCP frames over TLS, the handlers in a worker process.
    std::fs::write(&cert, &cert_a).unwrap();
    std::fs::write(&key, &key_a).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--listen", "127.0.0.1:0", "--transport", "tcp"])
        .args(["--backend", "dgram", "--workers", "1", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("mock-server starts");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let addr = first_line_addr(&mut out, "listening on ");
    let (ok, stdout, stderr) = client("tcp", &addr, &root_a, "dave");
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "login: ok\nreply 1: over tls\n");
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_certificate_stops_the_server_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("kim-examples-badtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_a, _) = self_signed();
    let (_, key_b) = self_signed();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, cert_a).unwrap();
    std::fs::write(&key, key_b).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("certificate and key"), "{stderr}");
    let o = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-key"));
    let _ = std::fs::remove_dir_all(&dir);
}
