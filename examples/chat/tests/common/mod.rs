//! The chat binary as a user runs it, and a client for its page and its websocket.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kim_client::ClientOptions;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running `chat` process, killed when dropped.
pub struct ChatProcess {
    child: Child,
    /// Where its page is served (`host:port`).
    pub http: String,
    /// Where its gateway listens.
    pub ws: String,
    /// Its debug listener, if asked for.
    pub debug: Option<String>,
}

/// A fresh directory for a test's files, removed with everything in it when dropped.
pub struct TestDir(PathBuf);

impl std::ops::Deref for TestDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory named after the test and this process, removed when the test ends (even
/// by a panic), so that repeated runs leave nothing behind in the temporary directory.
pub fn temp_dir(name: &str) -> TestDir {
    let dir = std::env::temp_dir().join(format!("kim-chat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TestDir(dir)
}

impl ChatProcess {
    /// Starts `chat` on free ports with the database `db` and `extra` flags; returns once it
    /// listens.
    pub fn start(db: &Path, extra: &[&str]) -> ChatProcess {
        ChatProcess::start_with_env(db, extra, &[])
    }

    /// [`ChatProcess::start`] with environment variables set.
    pub fn start_with_env(db: &Path, extra: &[&str], env: &[(&str, &str)]) -> ChatProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--db",
            ])
            .arg(db)
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("chat starts");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (mut http, mut debug) = (None, None);
        let ws = loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "chat exited early");
            let line = line.trim();
            if let Some(a) = line.strip_prefix("debug listening on ") {
                debug = Some(a.to_string());
            } else if let Some(url) = line.strip_prefix("chat page at ") {
                let rest = url.split("://").nth(1).unwrap();
                http = Some(rest.trim_end_matches('/').to_string());
            } else if let Some(a) = line.strip_prefix("listening on ") {
                break a.to_string();
            }
        };
        // Keep reading its output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        ChatProcess {
            child,
            http: http.expect("the page's address is printed"),
            ws,
            debug,
        }
    }

    /// The page's URL.
    pub fn page(&self) -> String {
        format!("http://{}/", self.http)
    }

    /// Stops it as an operator does (SIGTERM) and waits for it.
    pub fn stop(mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for ChatProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection: the status and the body.
pub async fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    parse_response(&raw)
}

/// The status and body of a whole HTTP response.
pub fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// A token for `name` from the chat's page server.
pub async fn token(http_addr: &str, name: &str) -> String {
    let (status, body) = http(
        http_addr,
        "POST",
        "/api/token",
        &format!(r#"{{"name":"{name}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// A websocket client of the chat.
pub type Ws = kim_ws::WsClient;

/// Logs `name` in on `chat` and reads the welcome.
pub async fn login(chat: &ChatProcess, name: &str) -> (Ws, Value) {
    let token = token(&chat.http, name).await;
    login_with(&chat.ws, &token).await
}

/// Logs in with `token` on the gateway at `ws` and reads the welcome.
pub async fn login_with(ws: &str, token: &str) -> (Ws, Value) {
    let url = format!("ws://{ws}/ws?token={token}");
    let mut c = kim_ws::connect(&url, &ClientOptions::default())
        .await
        .unwrap_or_else(|e| panic!("login on {ws}: {e}"));
    let welcome = next(&mut c, "welcome").await;
    (c, welcome)
}

/// Sends a JSON value.
pub async fn send(c: &Ws, v: Value) {
    c.send_text(v.to_string()).await.unwrap();
}

/// The next message, whatever its type, within 10 s.
pub async fn read(c: &mut Ws) -> Value {
    let frame = tokio::time::timeout(Duration::from_secs(10), c.read())
        .await
        .expect("a message within 10 s")
        .expect("the connection stays open");
    serde_json::from_slice(&frame.payload).unwrap()
}

/// The next message of type `kind`, skipping presence notices and nothing else.
pub async fn next(c: &mut Ws, kind: &str) -> Value {
    loop {
        let v = read(c).await;
        if v["type"] == kind {
            return v;
        }
        assert_eq!(v["type"], "presence", "expected {kind}, got {v}");
    }
}

/// The names in a JSON array of strings.
pub fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

/// Waits up to 10 s for the metric sample `sample` (name and labels) of the server whose debug
/// listener is `debug` to read `value`.
pub async fn wait_metric(debug: &str, sample: &str, value: f64) {
    let start = std::time::Instant::now();
    loop {
        let (_, text) = http(debug, "GET", "/metrics", "").await;
        let now = text.lines().find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        });
        if now == Some(value) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{sample} is {now:?}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
