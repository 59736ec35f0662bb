//! The app's side of the API as an IM app meets it, with real clients on 127.0.0.1: the login
//! event, the server reached from every callback (in-process and in worker processes), text
//! and binary pushes from the handle, and what the websocket upgrade hook learns handed to the
//! acceptor, which may refuse with an HTTP status before the `101`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{login, no_heartbeat, read, start, EVENT};
use kim_client::ClientError;
use kim_core::{
    Accepted, Acceptor, Backend, Channel, CloseReason, DefaultServer, Dispatch, Frame, LoginConn,
    MessageListener, OpCode, PushError, Reject, ServerHandle, ServerOptions, StateListener,
};
use kim_examples::{MockAcceptor, MockListener, Presence};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until `f` holds, at most [`EVENT`].
async fn until(what: &str, f: impl Fn() -> bool) {
    tokio::time::timeout(EVENT, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn login_and_disconnect_pair_up_and_refused_logins_have_neither() {
    let s = start(ServerOptions::default()).await;
    let mut alice = login(&s.addr, "alice").await;
    until("alice's login event", || s.logins_of("alice") == 1).await;

    // A duplicate and an invalid id are refused: no event for either.
    let mut dup = kim_tcp::connect(&s.addr, &no_heartbeat()).await.unwrap();
    match dup.login("alice").await {
        Err(ClientError::Closed(r)) => assert_eq!(r.reason, "channel id is repeated"),
        other => panic!("a duplicate must be refused, got {other:?}"),
    }
    let mut bad = kim_tcp::connect(&s.addr, &no_heartbeat()).await.unwrap();
    assert!(bad.login("").await.is_err());

    // The channel is usable while its login event has run; then it closes.
    alice.send_text("hello").await.unwrap();
    assert_eq!(&read(&mut alice).await.unwrap().payload[..], b"hello");
    alice.close().await.unwrap();
    until("alice's disconnect", || s.disconnects_of("alice") == 1).await;
    assert_eq!(s.logins_of("alice"), 1);
    assert_eq!(s.logins_of(""), 0);
    assert_eq!(s.disconnects_of(""), 0);
    assert_eq!(
        s.logins_unreachable(),
        0,
        "the login event sees the channel in the map"
    );
    s.handle.shutdown(Duration::from_secs(5)).await;
}

/// Records which channels' login events have finished.
#[derive(Clone, Default)]
struct SlowLogin(Arc<parking_lot::Mutex<HashSet<String>>>);

impl StateListener for SlowLogin {
    async fn login(&self, agent: &Channel) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.0.lock().insert(agent.id().to_string());
    }

    async fn disconnect(&self, _: &Channel) {}
}

/// Answers each message with whether the sender's login event had finished.
struct AskLoggedIn(SlowLogin);

impl MessageListener for AskLoggedIn {
    async fn receive(&self, agent: &Channel, _message: Frame) {
        let done = self.0 .0.lock().contains(agent.id().as_str());
        let _ = agent.push_text(if done { "after login" } else { "before login" });
    }
}

#[tokio::test]
async fn the_login_event_runs_before_the_first_message() {
    let logins = SlowLogin::default();
    let handle = DefaultServer::new(kim_tcp::TcpUpgrader, AskLoggedIn(logins.clone()))
        .with_acceptor(MockAcceptor)
        .with_state_listener(logins)
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let addr = handle.local_addr().to_string();
    let mut c = login(&addr, "alice").await;
    c.send_text("am I in?").await.unwrap();
    assert_eq!(&read(&mut c).await.unwrap().payload[..], b"after login");
    handle.shutdown(Duration::from_secs(5)).await;
}

/// `Presence`, with a login event that takes its time: a message that overtook it would show.
struct SlowPresence;

impl StateListener for SlowPresence {
    async fn login(&self, agent: &Channel) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Presence.login(agent).await;
    }

    async fn disconnect(&self, agent: &Channel) {
        Presence.disconnect(agent).await;
    }
}

/// The options of a presence test's server: in-process, or with two workers (this test
/// binary, entered at [`worker_main`]) taking messages round-robin, so that nothing but the
/// login event's hold keeps a channel's first message behind its login event.
fn presence_options(workers: bool) -> ServerOptions {
    let mut options = ServerOptions::builder();
    if workers {
        options = options
            .backend(Backend::UnixDatagram {
                workers: 2,
                ipc_max_size: Backend::DEFAULT_IPC_MAX_SIZE,
                dispatch: Dispatch::RoundRobin,
            })
            .worker_command(common::this_binary_as_worker("worker_main"));
    }
    options.build().unwrap()
}

fn presence(
    workers: bool,
) -> DefaultServer<kim_ws::WsUpgrader, MockAcceptor, MockListener, SlowPresence> {
    DefaultServer::new(kim_ws::WsUpgrader::new(), MockListener)
        .with_acceptor(MockAcceptor)
        .with_state_listener(SlowPresence)
        .with_options(presence_options(workers))
}

async fn presence_server(workers: bool) -> ServerHandle {
    presence(workers).start("127.0.0.1:0").await.unwrap()
}

/// Not a test of its own: the worker processes of the presence test run this test binary
/// with `worker_main --exact`, and here they become workers (`run` serves the master until
/// it stops them). In a test run it returns at once.
#[test]
fn worker_main() {
    if !kim_core::ipc::is_worker() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let serve = |_| async { Ok::<(), kim_core::ServerError>(()) };
    let served = rt.block_on(presence(true).run("127.0.0.1:0", serve));
    served.expect("the worker served its master");
}

async fn text_from<R: kim_core::FrameReader, W: kim_core::FrameWriter>(
    c: &mut kim_client::Client<R, W>,
) -> String {
    let f = read(c).await.expect("a frame");
    assert_eq!(f.op, OpCode::Text, "presence and pushes of text are text");
    String::from_utf8(f.payload.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_disconnect_events_reach_the_others_in_process_and_in_workers() {
    for workers in [false, true] {
        let handle = presence_server(workers).await;
        let addr = format!("ws://{}/", handle.local_addr());
        let mode = if workers { "workers" } else { "in-process" };
        let mut alice = common::login_ws(&addr, "alice").await;
        // One message first, so that round-robin sends bob's first message to the worker
        // that does not own bob's channel (serials 1 and 2 belong to workers 1 and 0).
        alice.send_text("warm-up").await.unwrap();
        assert_eq!(text_from(&mut alice).await, "warm-up", "{mode}");
        // bob speaks at once: his login event still reaches alice first.
        let bob = common::login_ws(&addr, "bob").await;
        bob.send_text("@alice hi").await.unwrap();
        assert_eq!(text_from(&mut alice).await, "bob joined", "{mode}");
        assert_eq!(text_from(&mut alice).await, "bob: hi", "{mode}");

        // A refused duplicate is announced to nobody: alice's next frame is her own echo.
        let mut dup = kim_ws::connect(&addr, &no_heartbeat()).await.unwrap();
        assert!(dup.login("bob").await.is_err(), "{mode}");
        alice.send_text("still here").await.unwrap();
        assert_eq!(text_from(&mut alice).await, "still here", "{mode}");

        bob.close().await.unwrap();
        assert_eq!(text_from(&mut alice).await, "bob left", "{mode}");
        let report = handle.shutdown(Duration::from_secs(5)).await;
        assert_eq!(report.remaining, 0, "{mode}");
    }
}

/// Admits at most two channels at once, asking the server.
struct TwoAtMost;

impl Acceptor for TwoAtMost {
    async fn accept(&self, login: &mut LoginConn<'_>) -> Result<Accepted, Reject> {
        let frame = login.read_frame().await?;
        if login.server().channel_count() >= 2 {
            return Err(Reject::new("full"));
        }
        let id = String::from_utf8_lossy(&frame.payload).into_owned();
        Ok(Accepted::new(id).with_reply(Frame::binary("ok")))
    }
}

#[tokio::test]
async fn the_acceptor_reaches_the_server() {
    let handle = DefaultServer::new(kim_tcp::TcpUpgrader, MockListener)
        .with_acceptor(TwoAtMost)
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let addr = handle.local_addr().to_string();
    let _a = login(&addr, "a").await;
    let _b = login(&addr, "b").await;
    let mut c = kim_tcp::connect(&addr, &no_heartbeat()).await.unwrap();
    match c.login("c").await {
        Err(ClientError::Closed(r)) => assert_eq!(r.reason, "full"),
        other => panic!("the third login must be refused, got {other:?}"),
    }
    handle.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_handle_pushes_text_and_binary() {
    let s = common::start_on(kim_ws::WsUpgrader::new(), ServerOptions::default()).await;
    let addr = format!("ws://{}/", s.addr);
    let mut alice = common::login_ws(&addr, "alice").await;
    s.handle.push_text("alice", "as text").unwrap();
    s.handle.push_binary("alice", &b"as bytes"[..]).unwrap();
    let f = read(&mut alice).await.unwrap();
    assert_eq!((f.op, &f.payload[..]), (OpCode::Text, &b"as text"[..]));
    let f = read(&mut alice).await.unwrap();
    assert_eq!((f.op, &f.payload[..]), (OpCode::Binary, &b"as bytes"[..]));
    assert!(matches!(
        s.handle.push_text("nobody", "x"),
        Err(PushError::NotFound(_))
    ));
    s.handle.shutdown(Duration::from_secs(5)).await;
}

/// The user a token names, as the upgrade hook found it.
#[derive(Debug)]
struct User(String);

/// Logs in the user the hook attached, without parsing anything again: none is refused with
/// 401 before the upgrade completes; `late` reads a frame first, after which a status can no
/// longer be sent.
struct TokenLogin;

impl Acceptor for TokenLogin {
    async fn accept(&self, login: &mut LoginConn<'_>) -> Result<Accepted, Reject> {
        let user = login
            .handshake()
            .and_then(|h| h.extensions.get::<User>())
            .map(|u| u.0.clone());
        match user.as_deref() {
            None => Err(Reject::with_status(401, "no valid token")),
            Some("late") => {
                login.read_frame().await?;
                Err(Reject::with_status(403, "too late for a status"))
            }
            Some(name) => Ok(Accepted::new(name).with_reply(Frame::text("welcome"))),
        }
    }
}

/// The hook: `?token=t-<user>` names `<user>`.
fn token_hook(h: &mut kim_core::Handshake) -> Result<(), kim_ws::Refusal> {
    if let Some(user) = h.query("token").and_then(|t| t.strip_prefix("t-")) {
        let user = User(user.to_string());
        h.extensions.insert(user);
    }
    Ok(())
}

async fn http_answer(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(EVENT, s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_hook_hands_the_user_to_the_acceptor_which_may_refuse_with_a_status() {
    let handle = DefaultServer::new(
        kim_ws::WsUpgrader::new().with_hook(token_hook),
        MockListener,
    )
    .with_acceptor(TokenLogin)
    .start("127.0.0.1:0")
    .await
    .unwrap();
    let addr = handle.local_addr().to_string();

    // A valid token: logged in as its user, no login frame needed.
    let url = format!("ws://{addr}/?token=t-alice");
    let mut alice = kim_ws::connect(&url, &no_heartbeat()).await.unwrap();
    assert_eq!(&read(&mut alice).await.unwrap().payload[..], b"welcome");
    assert!(handle.channel("alice").is_some());

    // No token: an HTTP 401 instead of the 101.
    let answer = http_answer(&addr, "/").await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(answer.ends_with("no valid token"), "{answer}");

    // After a frame was read the 101 is out: the refusal is a close frame.
    let url = format!("ws://{addr}/?token=t-late");
    let mut late = kim_ws::connect(&url, &no_heartbeat()).await.unwrap();
    late.send_text("hello").await.unwrap();
    match read(&mut late).await {
        Err(ClientError::Closed(r)) => {
            assert_eq!(r.code, CloseReason::POLICY);
            assert_eq!(r.reason, "too late for a status");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    handle.shutdown(Duration::from_secs(5)).await;
}
