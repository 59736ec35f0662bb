//! Sessions' rules, each seen from real clients on 127.0.0.1: the window, the limits, tokens
//! that are not the session's, numbers never sent, acknowledgements, a half-open connection
//! taken over, a clean close, a fresh login, rooms, the app's events, and the client's own
//! numbers under `PROTOCOL.md`'s encoding.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kim_core::{
    Accepted, Acceptor, Channel, DefaultCodec, DefaultServer, Frame, LoginConn, MessageListener,
    Reject, ServerHandle, SessionLogin, StateListener,
};
use kim_examples::sessions::{parse_numbered, MockCodec};
use kim_examples::{MockAcceptor, MockListener};
use kim_tcp::TcpClient;

mod common;
use common::{no_heartbeat, EVENT};

/// What the app heard, in order, per id.
#[derive(Clone, Default)]
struct Events(Arc<parking_lot::Mutex<HashMap<String, Vec<&'static str>>>>);

impl Events {
    fn of(&self, id: &str) -> Vec<&'static str> {
        self.0.lock().get(id).cloned().unwrap_or_default()
    }

    fn add(&self, chan: &Channel, what: &'static str) {
        self.0
            .lock()
            .entry(chan.id().to_string())
            .or_default()
            .push(what);
    }

    async fn until(&self, id: &str, expected: &[&str]) {
        until(&format!("{id}'s events {expected:?}"), || {
            self.of(id) == expected
        })
        .await;
    }
}

impl StateListener for Events {
    async fn login(&self, agent: &Channel) {
        self.add(agent, "login");
    }
    async fn suspend(&self, agent: &Channel) {
        self.add(agent, "suspend");
    }
    async fn resume(&self, agent: &Channel) {
        self.add(agent, "resume");
    }
    async fn disconnect(&self, agent: &Channel) {
        self.add(agent, "disconnect");
    }
}

struct Server {
    handle: ServerHandle,
    addr: String,
    events: Events,
}

async fn start(options: kim_core::OptionsBuilder) -> Server {
    let events = Events::default();
    let handle = DefaultServer::new(kim_tcp::TcpUpgrader, MockListener)
        .with_acceptor(MockAcceptor)
        .with_state_listener(events.clone())
        .with_session_codec(MockCodec)
        .with_options(options.build().unwrap())
        .start("127.0.0.1:0")
        .await
        .expect("server starts");
    let addr = handle.local_addr().to_string();
    Server {
        handle,
        addr,
        events,
    }
}

fn metric(h: &ServerHandle, name: &str) -> f64 {
    h.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Logs in with `login` and returns the client and the answer's text.
async fn connect(addr: &str, login: &str) -> (TcpClient, String) {
    let mut c = kim_tcp::connect(addr, &no_heartbeat()).await.unwrap();
    let answer = tokio::time::timeout(EVENT, c.login(login.to_string()))
        .await
        .expect("answered in time")
        .expect("answered");
    (c, String::from_utf8(answer.payload.to_vec()).unwrap())
}

/// Begins a session as `id`: the client and its token.
async fn session(addr: &str, id: &str) -> (TcpClient, String) {
    let (c, answer) = connect(addr, &format!("{id} session")).await;
    let token = answer.strip_prefix("ok ").expect("ok <token>").to_string();
    assert_eq!(token.len(), 32, "{answer}");
    (c, token)
}

async fn text(c: &mut TcpClient) -> String {
    let f = tokio::time::timeout(EVENT, c.read())
        .await
        .expect("a message in time")
        .expect("a message");
    String::from_utf8(f.payload.to_vec()).unwrap()
}

/// The next numbered message: its number and text.
async fn numbered(c: &mut TcpClient) -> (u64, String) {
    let t = text(c).await;
    let (seq, rest) = parse_numbered(t.as_bytes()).unwrap_or_else(|| panic!("numbered: {t}"));
    (seq, String::from_utf8(rest.to_vec()).unwrap())
}

/// bob pushes `texts` to `to`; each push was taken (bob is never told offline: an echo that
/// follows them comes back first).
async fn push_all(bob: &mut TcpClient, to: &str, texts: &[&str]) {
    for t in texts {
        bob.send_text(format!("@{to} {t}")).await.unwrap();
    }
    bob.send_text("done?").await.unwrap();
    assert_eq!(text(bob).await, "done?", "no push was answered offline");
}

/// The connection goes away without a close: its end of stream.
async fn vanish(c: TcpClient) {
    drop(c);
}

#[tokio::test]
async fn past_the_window_a_resume_is_new_and_the_session_ends_once() {
    let s =
        start(kim_core::ServerOptions::builder().session_window(Duration::from_millis(400))).await;
    let (mut bob, _) = connect(&s.addr, "bob").await;
    let (alice, token) = session(&s.addr, "alice").await;
    vanish(alice).await;
    s.events.until("alice", &["login", "suspend"]).await;
    // Held while suspended: bob is not told offline.
    push_all(&mut bob, "alice", &["one"]).await;
    s.events
        .until("alice", &["login", "suspend", "disconnect"])
        .await;
    assert_eq!(metric(&s.handle, "kim_sessions_expired_total"), 1.0);
    let (_alice, answer) = connect(&s.addr, &format!("alice resume {token} 0")).await;
    assert!(answer.starts_with("new "), "{answer}");
    assert_ne!(&answer[4..], token, "a new session has a new token");
    assert_eq!(metric(&s.handle, "kim_sessions_told_new_total"), 1.0);
}

#[tokio::test]
async fn within_the_window_every_held_message_comes_once_in_order() {
    let s = start(kim_core::ServerOptions::builder()).await;
    let (mut bob, _) = connect(&s.addr, "bob").await;
    let (mut alice, token) = session(&s.addr, "alice").await;
    push_all(&mut bob, "alice", &["a", "b"]).await;
    assert_eq!(numbered(&mut alice).await, (1, "bob: a".into()));
    assert_eq!(numbered(&mut alice).await, (2, "bob: b".into()));
    vanish(alice).await;
    s.events.until("alice", &["login", "suspend"]).await;
    push_all(&mut bob, "alice", &["c", "d"]).await;
    // alice got 1 but not 2 (it was lost in the dead connection, as far as she knows).
    let (mut alice, answer) = connect(&s.addr, &format!("alice resume {token} 1")).await;
    assert_eq!(answer, format!("resumed {token} 3"));
    for (seq, t) in [(2, "bob: b"), (3, "bob: c"), (4, "bob: d")] {
        assert_eq!(numbered(&mut alice).await, (seq, t.into()));
    }
    // Live again, numbered on.
    push_all(&mut bob, "alice", &["e"]).await;
    assert_eq!(numbered(&mut alice).await, (5, "bob: e".into()));
    s.events
        .until("alice", &["login", "suspend", "resume"])
        .await;
    assert_eq!(metric(&s.handle, "kim_session_replayed_total"), 3.0);
    assert_eq!(metric(&s.handle, "kim_sessions_resumed_total"), 1.0);
}

#[tokio::test]
async fn past_the_count_limit_the_oldest_go_and_a_resume_from_before_them_is_new() {
    let s = start(kim_core::ServerOptions::builder().session_max_messages(5)).await;
    let (mut bob, _) = connect(&s.addr, "bob").await;
    for (id, last, expected) in [("alice", 0, "new"), ("carol", 3, "resumed")] {
        let (c, token) = session(&s.addr, id).await;
        vanish(c).await;
        s.events.until(id, &["login", "suspend"]).await;
        push_all(&mut bob, id, &["1", "2", "3", "4", "5", "6", "7", "8"]).await;
        let (mut c, answer) = connect(&s.addr, &format!("{id} resume {token} {last}")).await;
        assert!(answer.starts_with(expected), "{id}: {answer}");
        if expected == "resumed" {
            // Messages 4 to 8 are held; 1 to 3 were dropped, and carol has them.
            assert_eq!(answer, format!("resumed {token} 5"));
            for seq in 4..=8u64 {
                assert_eq!(numbered(&mut c).await, (seq, format!("bob: {seq}")));
            }
        }
    }
    assert_eq!(
        metric(&s.handle, "kim_session_dropped_session_limit_total"),
        6.0
    );
}

#[tokio::test]
async fn tokens_not_the_sessions_and_numbers_never_sent_are_told_new() {
    let s = start(kim_core::ServerOptions::builder()).await;
    let (bob, bob_token) = session(&s.addr, "bob").await;
    let (alice, _) = session(&s.addr, "alice").await;
    vanish(alice).await;
    s.events.until("alice", &["login", "suspend"]).await;
    // Another user's token.
    let (alice, answer) = connect(&s.addr, &format!("alice resume {bob_token} 0")).await;
    assert!(answer.starts_with("new "), "{answer}");
    let token = answer[4..].to_string();
    // That ended alice's old session.
    s.events
        .until("alice", &["login", "suspend", "disconnect", "login"])
        .await;
    // A forged token, and one that is not a token at all.
    vanish(alice).await;
    for forged in ["00000000000000000000000000000000", "forged"] {
        let (c, answer) = connect(&s.addr, &format!("alice resume {forged} 0")).await;
        assert!(answer.starts_with("new "), "{forged}: {answer}");
        vanish(c).await;
    }
    // A number the server never sent: alice got 1 message, claims 5.
    let (alice, answer) = connect(&s.addr, "alice session").await;
    let token2 = answer.strip_prefix("ok ").unwrap().to_string();
    assert_ne!(token, token2);
    let mut alice = alice;
    bob.send_text("@alice x").await.unwrap();
    assert_eq!(numbered(&mut alice).await, (1, "bob: x".into()));
    vanish(alice).await;
    let (_alice, answer) = connect(&s.addr, &format!("alice resume {token2} 5")).await;
    assert!(answer.starts_with("new "), "{answer}");
    // bob's own session saw only its login.
    assert_eq!(s.events.of("bob"), ["login"]);
}

#[tokio::test]
async fn acks_free_what_they_cover() {
    let s = start(kim_core::ServerOptions::builder()).await;
    let (mut bob, _) = connect(&s.addr, "bob").await;
    let (mut alice, _) = session(&s.addr, "alice").await;
    let texts: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    push_all(&mut bob, "alice", &texts).await;
    for seq in 1..=10 {
        assert_eq!(numbered(&mut alice).await.0, seq);
    }
    assert_eq!(metric(&s.handle, "kim_session_held_messages"), 10.0);
    alice.send_text("/ack 6").await.unwrap();
    until("6 acknowledged", || {
        metric(&s.handle, "kim_session_held_messages") == 4.0
    })
    .await;
    assert_eq!(metric(&s.handle, "kim_session_acked_total"), 6.0);
    // An ack past what was sent covers what was sent, no more.
    alice.send_text("/ack 99").await.unwrap();
    until("all acknowledged", || {
        metric(&s.handle, "kim_session_held_messages") == 0.0
    })
    .await;
    assert_eq!(metric(&s.handle, "kim_session_held_bytes"), 0.0);
    push_all(&mut bob, "alice", &["next"]).await;
    assert_eq!(numbered(&mut alice).await, (11, "bob: next".into()));
}

#[tokio::test]
async fn a_half_open_connection_is_taken_over_under_the_reject_policy() {
    let s = start(kim_core::ServerOptions::builder()).await;
    let (mut bob, _) = connect(&s.addr, "bob").await;
    // alice's first connection stays open as far as the server knows.
    let (mut old, token) = session(&s.addr, "alice").await;
    // A plain second login of alice is still refused.
    let mut dup = kim_tcp::connect(&s.addr, &no_heartbeat()).await.unwrap();
    dup.send_text("alice").await.unwrap();
    let r = dup.read().await;
    assert!(
        matches!(&r, Err(kim_client::ClientError::Closed(reason)) if reason.reason.contains("repeated")),
        "{r:?}"
    );
    let (mut new, answer) = connect(&s.addr, &format!("alice resume {token} 0")).await;
    assert_eq!(answer, format!("resumed {token} 0"));
    // The old connection is let go of; what is pushed reaches the new one.
    let gone = tokio::time::timeout(EVENT, old.read())
        .await
        .expect("closed in time");
    assert!(gone.is_err(), "the old connection got {gone:?}");
    push_all(&mut bob, "alice", &["here"]).await;
    assert_eq!(numbered(&mut new).await, (1, "bob: here".into()));
    s.events.until("alice", &["login", "resume"]).await;
}

#[tokio::test]
async fn a_clean_close_ends_the_session() {
    let s = start(kim_core::ServerOptions::builder()).await;
    let (mut bob, _) = connect(&s.addr, "bob").await;
    let (alice, _) = session(&s.addr, "alice").await;
    alice.close().await.unwrap();
    s.events.until("alice", &["login", "disconnect"]).await;
    bob.send_text("@alice hi").await.unwrap();
    assert_eq!(text(&mut bob).await, "offline alice");
}

#[tokio::test]
async fn a_fresh_login_ends_a_suspended_session() {
    let s = start(kim_core::ServerOptions::builder()).await;
    let (mut bob, _) = connect(&s.addr, "bob").await;
    let (alice, token) = session(&s.addr, "alice").await;
    vanish(alice).await;
    s.events.until("alice", &["login", "suspend"]).await;
    push_all(&mut bob, "alice", &["held"]).await;
    // A plain login, not a resume: the suspended session ends, its held message with it.
    let (mut alice, answer) = connect(&s.addr, "alice").await;
    assert_eq!(answer, "ok");
    s.events
        .until("alice", &["login", "suspend", "disconnect", "login"])
        .await;
    push_all(&mut bob, "alice", &["live"]).await;
    assert_eq!(text(&mut alice).await, "bob: live");
    assert_eq!(metric(&s.handle, "kim_session_held_messages"), 0.0);
    // The old token resumes nothing (and a plain channel of alice is there: a duplicate).
    drop(alice);
    s.events
        .until(
            "alice",
            &["login", "suspend", "disconnect", "login", "disconnect"],
        )
        .await;
    let (_c, answer) = connect(&s.addr, &format!("alice resume {token} 1")).await;
    assert!(answer.starts_with("new "), "{answer}");
}

#[tokio::test]
async fn a_room_member_resumed_gets_the_rooms_messages_of_its_absence() {
    let s = start(kim_core::ServerOptions::builder()).await;
    let (mut bob, _) = connect(&s.addr, "bob").await;
    bob.send_text("/join r").await.unwrap();
    assert_eq!(text(&mut bob).await, "joined r");
    let (mut alice, token) = session(&s.addr, "alice").await;
    alice.send_text("/join r").await.unwrap();
    assert_eq!(numbered(&mut alice).await, (1, "joined r".into()));
    vanish(alice).await;
    s.events.until("alice", &["login", "suspend"]).await;
    bob.send_text("#r while you were away").await.unwrap();
    assert_eq!(text(&mut bob).await, "bob#r: while you were away");
    let (mut alice, answer) = connect(&s.addr, &format!("alice resume {token} 1")).await;
    assert_eq!(answer, format!("resumed {token} 1"));
    assert_eq!(
        numbered(&mut alice).await,
        (2, "bob#r: while you were away".into())
    );
    // Still a member.
    bob.send_text("#r back").await.unwrap();
    assert_eq!(numbered(&mut alice).await, (3, "bob#r: back".into()));
}

/// `PROTOCOL.md`'s login over TCP frames: the user id, a newline, and `#session` or
/// `#resume <token> <seq>`.
struct LineLogin;

impl Acceptor for LineLogin {
    async fn accept(&self, login: &mut LoginConn<'_>) -> Result<Accepted, Reject> {
        let frame = login.read_frame().await?;
        let text = std::str::from_utf8(&frame.payload).map_err(|_| Reject::new("not UTF-8"))?;
        let (id, request) = text.split_once('\n').unwrap_or((text, ""));
        let accepted = Accepted::new(id);
        Ok(match SessionLogin::parse(request) {
            Some(session) => accepted.with_session(session),
            None => accepted,
        })
    }
}

/// Counts what reaches the app, and echoes it.
#[derive(Clone, Default)]
struct Counting(Arc<parking_lot::Mutex<Vec<String>>>);

impl MessageListener for Counting {
    async fn receive(&self, agent: &Channel, message: Frame) {
        self.0
            .lock()
            .push(String::from_utf8_lossy(&message.payload).into());
        let _ = agent.push_frame(message);
    }
}

#[tokio::test]
async fn a_numbered_message_resent_after_a_resume_reaches_the_app_once() {
    let seen = Counting::default();
    let handle = DefaultServer::new(kim_tcp::TcpUpgrader, seen.clone())
        .with_acceptor(LineLogin)
        .with_session_codec(DefaultCodec)
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let addr = handle.local_addr().to_string();
    let (mut c, answer) = connect(&addr, "alice\n#session").await;
    let token = answer
        .strip_prefix("#ok ")
        .expect("#ok <token>")
        .to_string();
    c.send_text("1 hello").await.unwrap();
    let (mut ack, mut echo) = (None, None);
    for _ in 0..2 {
        let t = text(&mut c).await;
        if t.starts_with("#ack ") {
            ack = Some(t);
        } else {
            echo = Some(t);
        }
    }
    assert_eq!(ack.as_deref(), Some("#ack 1"));
    assert_eq!(echo.as_deref(), Some("1 hello"));
    c.send_text("0 unnumbered").await.unwrap();
    assert_eq!(text(&mut c).await, "2 unnumbered");
    vanish(c).await;
    until("suspended", || {
        metric(&handle, "kim_sessions_suspended") == 1.0
    })
    .await;
    // The client does not know its message 1 was taken: it resends it after resuming.
    let (mut c, answer) = connect(&addr, &format!("alice\n#resume {token} 2")).await;
    assert_eq!(answer, format!("#resumed {token} 0"));
    c.send_text("1 hello").await.unwrap();
    assert_eq!(text(&mut c).await, "#ack 1", "acknowledged again");
    c.send_text("2 world").await.unwrap();
    assert_eq!(text(&mut c).await, "#ack 2");
    assert_eq!(text(&mut c).await, "3 world");
    assert_eq!(*seen.0.lock(), ["hello", "unnumbered", "world"]);
    // Not the encoding: a protocol error (raw TCP's close frames carry the reason alone).
    c.send_text("hello").await.unwrap();
    let r = tokio::time::timeout(EVENT, c.read()).await.unwrap();
    assert!(
        matches!(&r, Err(kim_client::ClientError::Closed(reason)) if reason.reason.contains("not '<n> <payload>'")),
        "{r:?}"
    );
    until("the session ended", || {
        metric(&handle, "kim_sessions") == 0.0
    })
    .await;
}

#[tokio::test]
async fn the_read_deadline_suspends_a_session_and_pushes_are_held() {
    let s = start(kim_core::ServerOptions::builder().read_wait(Duration::from_millis(300))).await;
    // alice's connection stays open but silent: her phone lost its network.
    let (silent, token) = session(&s.addr, "alice").await;
    s.events.until("alice", &["login", "suspend"]).await;
    let (mut bob, _) = connect(&s.addr, "bob2").await;
    push_all(&mut bob, "alice", &["held"]).await;
    let (mut alice, answer) = connect(&s.addr, &format!("alice resume {token} 0")).await;
    assert_eq!(answer, format!("resumed {token} 1"));
    assert_eq!(numbered(&mut alice).await, (1, "bob2: held".into()));
    drop(silent);
}

/// Tells `watcher` of every event of a session, from wherever the state listener runs (here:
/// a worker process).
#[derive(Clone, Copy)]
struct Announce;

impl Announce {
    fn tell(agent: &Channel, what: &str) {
        if agent.id().as_str() != "watcher" {
            let _ = agent
                .server()
                .push_text("watcher", format!("{} {what}", agent.id()));
        }
    }
}

impl StateListener for Announce {
    async fn suspend(&self, agent: &Channel) {
        Announce::tell(agent, "suspend");
    }
    async fn resume(&self, agent: &Channel) {
        Announce::tell(agent, "resume");
    }
    async fn disconnect(&self, agent: &Channel) {
        Announce::tell(agent, "disconnect");
    }
}

fn announcing() -> DefaultServer<kim_tcp::TcpUpgrader, MockAcceptor, MockListener, Announce> {
    let options = kim_core::ServerOptions::builder()
        .backend(kim_core::Backend::unix_datagram(1))
        .worker_command(common::this_binary_as_worker("worker_main"))
        .build()
        .unwrap();
    DefaultServer::new(kim_tcp::TcpUpgrader, MockListener)
        .with_acceptor(MockAcceptor)
        .with_state_listener(Announce)
        .with_session_codec(MockCodec)
        .with_options(options)
}

/// Not a test of its own: the worker process of the test below runs this test binary with
/// `worker_main --exact`, and here it becomes a worker. In a test run it returns at once.
#[test]
fn worker_main() {
    if !kim_core::ipc::is_worker() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let serve = |_| async { Ok::<(), kim_core::ServerError>(()) };
    let served = rt.block_on(announcing().run("127.0.0.1:0", serve));
    served.expect("the worker served its master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_mode_the_worker_hears_suspend_resume_and_one_disconnect() {
    let handle = announcing().start("127.0.0.1:0").await.unwrap();
    let addr = handle.local_addr().to_string();
    let (mut watcher, _) = connect(&addr, "watcher").await;
    let (alice, token) = session(&addr, "alice").await;
    vanish(alice).await;
    assert_eq!(text(&mut watcher).await, "alice suspend");
    let (alice, answer) = connect(&addr, &format!("alice resume {token} 0")).await;
    assert_eq!(answer, format!("resumed {token} 0"));
    assert_eq!(text(&mut watcher).await, "alice resume");
    alice.close().await.unwrap();
    assert_eq!(text(&mut watcher).await, "alice disconnect");
    handle.shutdown(Duration::from_secs(2)).await;
}
