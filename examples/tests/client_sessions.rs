//! kim-client's `SessionClient` against mock-server speaking PROTOCOL.md's default encoding
//! (`--encoding default`), over ws and tcp, through a TCP proxy that resets its connections:
//! a stream of pushes cut at a random point arrives exactly once and in order after the
//! client resumes by itself; the client's own messages across a cut reach the app once; a
//! refused login is reported and not retried.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kim_client::{
    ClientError, ClientOptions, DefaultEncoding, Event, How, Login, SessionClient, SessionOptions,
};
use kim_core::Frame;

mod proxy;

use proxy::Proxy;

/// A mock-server process, killed when dropped.
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

fn server(transport: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--transport", transport, "--listen", "127.0.0.1:0"])
        .args(["--encoding", "default"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "mock-server exited");
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            break a.to_string();
        }
    };
    std::thread::spawn(move || for _ in out.lines() {});
    Server { child, addr }
}

fn fast() -> SessionOptions {
    SessionOptions {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..SessionOptions::default()
    }
}

fn client_options() -> ClientOptions {
    ClientOptions {
        heartbeat: None,
        ..ClientOptions::default()
    }
}

/// A session client of `user` through `addr`: ws logs in with the URL's query, tcp with a
/// login frame `<user> #session` (or `#resume ...`).
fn session(transport: &'static str, addr: String, user: &'static str) -> SessionClient {
    let opts = client_options();
    match transport {
        "ws" => SessionClient::start(
            move |login: Login| {
                let url = format!("ws://{addr}/?token={user}&{}", login.query());
                let opts = opts.clone();
                async move { kim_ws::connect(&url, &opts).await }
            },
            DefaultEncoding,
            fast(),
        ),
        _ => SessionClient::start(
            move |login: Login| {
                let (addr, opts) = (addr.clone(), opts.clone());
                async move {
                    let client = kim_tcp::connect(&addr, &opts).await?;
                    let login = Frame::text(format!("{user} {}", login.frame_text()));
                    client.sender().send(login).await?;
                    Ok::<_, ClientError>(client)
                }
            },
            DefaultEncoding,
            fast(),
        ),
    }
}

/// Sends `frame` on `client`, waiting while its queue is full.
async fn send(client: &SessionClient, frame: Frame) {
    loop {
        match client.send(frame.clone()) {
            Ok(_) => return,
            Err(kim_client::SendError::QueueFull(_)) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// The next event, within 20 s.
async fn next(client: &mut SessionClient) -> Event {
    tokio::time::timeout(Duration::from_secs(20), client.next())
        .await
        .expect("an event within 20 s")
        .expect("the client is running")
}

/// Reads events until `n` messages have come (the session events on the way are returned
/// too); fails on a refusal or a close.
async fn messages(client: &mut SessionClient, n: usize) -> (Vec<(u64, String)>, Vec<How>) {
    let (mut got, mut hows) = (Vec::new(), Vec::new());
    while got.len() < n {
        match next(client).await {
            Event::Message { seq, frame } => {
                got.push((seq, String::from_utf8_lossy(&frame.payload).into_owned()))
            }
            Event::Session { how, .. } => hows.push(how),
            e @ (Event::Refused(_) | Event::Closed { .. }) => panic!("{e:?}"),
            _ => {}
        }
    }
    (got, hows)
}

async fn a_cut_stream_resumes(transport: &'static str) {
    let server = server(transport);
    let proxy = Proxy::to(&server.addr).await;
    let mut alice = session(transport, proxy.addr.to_string(), "alice");
    assert!(matches!(
        next(&mut alice).await,
        Event::Session {
            how: How::Started,
            ..
        }
    ));
    let mut bob = session(transport, server.addr.clone(), "bob");
    assert!(matches!(next(&mut bob).await, Event::Session { .. }));
    let total = 2000;
    let bob = tokio::spawn(async move {
        for i in 0..total {
            send(&bob, Frame::text(format!("@alice m{i}"))).await;
            // Drain bob's own events (acks) as they come.
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(0), bob.next()).await
            {
            }
            if i % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        bob
    });
    let cut_at = 300 + (std::process::id() as usize % 1200);
    let (mut got, _) = messages(&mut alice, cut_at).await;
    proxy.cut();
    let (rest, hows) = messages(&mut alice, total - cut_at).await;
    got.extend(rest);
    assert_eq!(hows, [How::Resumed], "{transport}: one exact resume");
    for (i, (seq, text)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "{transport}: numbering");
        assert_eq!(text, &format!("bob: m{i}"), "{transport}: order");
    }
    bob.await.unwrap().close().await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_resumes_exactly_over_ws() {
    a_cut_stream_resumes("ws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_resumes_exactly_over_tcp() {
    a_cut_stream_resumes("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_own_messages_across_a_cut_reach_the_app_once() {
    for transport in ["ws", "tcp"] {
        let server = server(transport);
        let proxy = Proxy::to(&server.addr).await;
        let mut alice = session(transport, proxy.addr.to_string(), "alice");
        assert!(matches!(next(&mut alice).await, Event::Session { .. }));
        let total = 300;
        for i in 0..total {
            send(&alice, Frame::text(format!("u{i}"))).await;
            if i == 100 {
                proxy.cut();
            }
        }
        // The echoes show what the app took: each once, in order.
        let (got, _) = messages(&mut alice, total).await;
        let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
        let expected: Vec<String> = (0..total).map(|i| format!("u{i}")).collect();
        assert_eq!(texts, expected, "{transport}");
        alice.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_reported_and_not_retried() {
    let server = server("ws");
    // The mock server refuses an empty user id (1008).
    let mut nobody = session("ws", server.addr.clone(), "");
    match next(&mut nobody).await {
        Event::Refused(why) => assert!(why.contains("invalid user id"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(5), nobody.next())
            .await
            .unwrap()
            .is_none(),
        "stopped, nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_told_as_a_new_session() {
    let first = server("tcp");
    let addr = first.addr.clone();
    let mut alice = session("tcp", addr.clone(), "alice");
    assert!(matches!(next(&mut alice).await, Event::Session { .. }));
    send(&alice, Frame::text("before")).await;
    assert_eq!(messages(&mut alice, 1).await.0, [(1, "before".to_string())]);
    // Killed: no close, the session is lost with the process.
    drop(first);
    let mut again = Command::new(env!("CARGO_BIN_EXE_mock-server"));
    again
        .args([
            "--transport",
            "tcp",
            "--listen",
            &addr,
            "--encoding",
            "default",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    let restarted = Server {
        child: again.spawn().unwrap(),
        addr: addr.clone(),
    };
    loop {
        match next(&mut alice).await {
            Event::Session { how, .. } => {
                assert_eq!(how, How::New);
                break;
            }
            e @ (Event::Refused(_) | Event::Closed { .. }) => panic!("{e:?}"),
            _ => {}
        }
    }
    // Numbering starts again in the new session.
    send(&alice, Frame::text("after")).await;
    assert_eq!(messages(&mut alice, 1).await.0, [(1, "after".to_string())]);
    alice.close().await;
    drop(restarted);
}
