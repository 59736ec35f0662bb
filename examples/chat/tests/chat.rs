//! The chat over real sockets, as the page uses it: tokens checked at the upgrade, rooms,
//! direct messages, presence, errors that keep the connection, history and offline messages
//! across a restart, two processes as one chat over NATS, TLS, and the heap profile.

mod common;
#[allow(dead_code)]
#[path = "../../tests/nats/mod.rs"]
mod nats;

use std::time::Duration;

use common::*;
use kim_client::ClientOptions;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upgrade request for `path`, answered with the status and body of the refusal.
async fn upgrade_status(ws: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(ws).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    parse_response(&raw)
}

#[tokio::test]
async fn forged_expired_and_missing_tokens_are_refused_at_the_upgrade() {
    let dir = temp_dir("tokens");
    let chat = ChatProcess::start(&dir.join("chat.db"), &["--secret", "one"]);
    let good = token(&chat.http, "alice").await;
    let (user, rest) = good.split_once('.').unwrap();
    assert_eq!(user, "alice");

    let forged = format!("mallory.{rest}");
    assert_eq!(
        upgrade_status(&chat.ws, &format!("/ws?token={forged}")).await,
        (401, "token signature is invalid".into())
    );
    assert_eq!(
        upgrade_status(&chat.ws, "/ws").await,
        (401, "no token: get one with POST /api/token".into())
    );
    assert_eq!(upgrade_status(&chat.ws, "/ws?token=abc").await.0, 401);
    assert_eq!(
        upgrade_status(&chat.ws, &format!("/chat?token={good}"))
            .await
            .0,
        404
    );
    // Signed by another secret: forged too.
    let other = ChatProcess::start(&dir.join("other.db"), &["--secret", "two"]);
    let theirs = token(&other.http, "alice").await;
    assert_eq!(
        upgrade_status(&chat.ws, &format!("/ws?token={theirs}"))
            .await
            .0,
        401
    );
    // Expired: tokens of a server whose tokens last 0 seconds.
    let expiring = ChatProcess::start(
        &dir.join("exp.db"),
        &["--secret", "one", "--token-ttl", "0"],
    );
    let old = token(&expiring.http, "alice").await;
    assert_eq!(
        upgrade_status(&chat.ws, &format!("/ws?token={old}")).await,
        (401, "token expired".into())
    );
    // Bad names get no token.
    let (status, body) = http(&chat.http, "POST", "/api/token", r#"{"name":"a b"}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = http(&chat.http, "POST", "/api/token", "not json").await;
    assert_eq!(status, 400);
    let (status, _) = http(&chat.http, "POST", "/api/token", &"x".repeat(4000)).await;
    assert_eq!(status, 413);

    // The genuine token still works after all that.
    let (_alice, welcome) = login_with(&chat.ws, &good).await;
    assert_eq!(welcome["user"], "alice");
    let (status, page) = http(&chat.http, "GET", "/", "").await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!(
        "WS_PORT = \"{}\"",
        chat.ws.rsplit(':').next().unwrap()
    )));
}

#[tokio::test]
async fn rooms_direct_messages_presence_and_errors() {
    let dir = temp_dir("rooms");
    let chat = ChatProcess::start(&dir.join("chat.db"), &[]);
    let (mut alice, welcome) = login(&chat, "alice").await;
    assert_eq!(names(&welcome["online"]), ["alice"]);
    assert_eq!(names(&welcome["rooms"]), ["general"]);
    assert_eq!(welcome["member_of"], json!([]));

    let (mut bob, welcome) = login(&chat, "bob").await;
    assert_eq!(names(&welcome["online"]), ["alice", "bob"]);
    let p = read(&mut alice).await;
    assert_eq!(
        p,
        json!({"type": "presence", "user": "bob", "online": true})
    );

    send(&alice, json!({"type": "join", "room": "kim"})).await;
    let joined = next(&mut alice, "joined").await;
    assert_eq!(joined["members"], json!(["alice"]));
    assert_eq!(joined["history"], json!([]));
    send(&bob, json!({"type": "join", "room": "kim"})).await;
    let joined = next(&mut bob, "joined").await;
    assert_eq!(names(&joined["members"]), ["alice", "bob"]);
    let m = next(&mut alice, "member").await;
    assert_eq!(
        m,
        json!({"type": "member", "room": "kim", "user": "bob", "event": "joined"})
    );

    send(
        &alice,
        json!({"type": "say", "room": "kim", "text": "hello bob"}),
    )
    .await;
    for c in [&mut alice, &mut bob] {
        let m = next(c, "message").await;
        assert_eq!(
            (m["room"].as_str(), m["from"].as_str()),
            (Some("kim"), Some("alice"))
        );
        assert_eq!(m["text"], "hello bob");
        assert!(m["ts"].as_i64().unwrap() > 1_700_000_000_000);
    }

    send(&bob, json!({"type": "dm", "to": "alice", "text": "psst"})).await;
    let dm = next(&mut alice, "dm").await;
    assert_eq!(
        (dm["from"].as_str(), dm["text"].as_str()),
        (Some("bob"), Some("psst"))
    );
    assert_eq!(dm["stored"], false);
    let copy = next(&mut bob, "dm").await;
    assert_eq!(copy["to"], "alice");

    // Bad requests get an error, and the connection goes on.
    for (bad, code) in [
        ("{not json", "bad_json"),
        (r#"{"type":"shout"}"#, "unknown_type"),
        (r#"{"type":"say","room":"kim"}"#, "bad_field"),
        (r#"{"type":"join","room":"no spaces"}"#, "bad_room"),
        (
            r#"{"type":"say","room":"elsewhere","text":"x"}"#,
            "not_member",
        ),
    ] {
        alice.send_text(bad).await.unwrap();
        let e = next(&mut alice, "error").await;
        assert_eq!(e["code"], code, "{bad}: {e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    alice.send_binary(&b"\x00\x01"[..]).await.unwrap();
    assert_eq!(next(&mut alice, "error").await["code"], "binary");
    send(&alice, json!({"type": "members", "room": "kim"})).await;
    assert_eq!(
        names(&next(&mut alice, "members").await["members"]),
        ["alice", "bob"]
    );
    send(&alice, json!({"type": "rooms"})).await;
    assert_eq!(
        names(&next(&mut alice, "rooms").await["rooms"]),
        ["general", "kim"]
    );

    send(&bob, json!({"type": "leave", "room": "kim"})).await;
    assert_eq!(next(&mut bob, "left").await["room"], "kim");
    let m = next(&mut alice, "member").await;
    assert_eq!(
        (m["user"].as_str(), m["event"].as_str()),
        (Some("bob"), Some("left"))
    );
    drop(bob);
    let p = next(&mut alice, "presence").await;
    assert_eq!(
        p,
        json!({"type": "presence", "user": "bob", "online": false})
    );
    send(&alice, json!({"type": "online"})).await;
    assert_eq!(names(&next(&mut alice, "online").await["users"]), ["alice"]);
}

#[tokio::test]
async fn history_and_messages_for_offline_users_survive_a_restart() {
    let dir = temp_dir("restart");
    let db = dir.join("chat.db");
    let chat = ChatProcess::start(&db, &[]);
    // Messages wait only for people who have logged in once.
    let (carol, _) = login(&chat, "carol").await;
    drop(carol);
    let (mut alice, _) = login(&chat, "alice").await;
    send(
        &alice,
        json!({"type": "dm", "to": "nobody", "text": "hello?"}),
    )
    .await;
    assert_eq!(next(&mut alice, "error").await["code"], "bad_user");
    send(&alice, json!({"type": "join", "room": "kim"})).await;
    next(&mut alice, "joined").await;
    for i in 0..5 {
        send(
            &alice,
            json!({"type": "say", "room": "kim", "text": format!("line {i}")}),
        )
        .await;
        next(&mut alice, "message").await;
    }
    send(
        &alice,
        json!({"type": "dm", "to": "carol", "text": "for later"}),
    )
    .await;
    let copy = next(&mut alice, "dm").await;
    assert_eq!(copy["stored"], true, "carol is offline: {copy}");
    let token = token(&chat.http, "alice").await;
    drop(alice);
    chat.stop();

    // Fewer lines of history than were said: the last ones.
    let chat = ChatProcess::start(&db, &["--history", "3"]);
    // The token outlives the restart: the secret is in the database.
    let (mut alice, welcome) = login_with(&chat.ws, &token).await;
    assert_eq!(
        names(&welcome["online"]),
        ["alice"],
        "the old process's rows are gone"
    );
    assert_eq!(names(&welcome["member_of"]), ["kim"]);
    let joined = next(&mut alice, "joined").await;
    let texts: Vec<_> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["line 2", "line 3", "line 4"]);

    let (mut carol, _) = login(&chat, "carol").await;
    let dm = next(&mut carol, "dm").await;
    assert_eq!(
        (dm["from"].as_str(), dm["text"].as_str()),
        (Some("alice"), Some("for later"))
    );
    assert_eq!(dm["stored"], true);
    // Delivered once: a second login finds nothing waiting.
    drop(carol);
    let (mut carol, _) = login(&chat, "carol").await;
    send(&carol, json!({"type": "online"})).await;
    assert_eq!(next(&mut carol, "online").await["type"], "online");
}

#[tokio::test]
async fn two_chat_processes_over_nats_are_one_chat() {
    let nats = nats::Nats::start();
    let dir = temp_dir("cluster");
    let db = dir.join("chat.db");
    let url = nats.url();
    let node = |name: &str| {
        let flags = ["--cluster", &url, "--node", name, "--secret", "s"];
        ChatProcess::start(
            &db,
            &[&flags[..], &["--debug-listen", "127.0.0.1:0"]].concat(),
        )
    };
    let (a, b) = (node("a"), node("b"));
    // A node hears other nodes' publishes to a room once its subscription to the room has
    // reached NATS, a moment after its first member joined: each step waits for that.
    let subscribed = |n: &ChatProcess, rooms: f64| {
        let debug = n.debug.clone().unwrap();
        async move { wait_metric(&debug, "kim_cluster_room_subscriptions", rooms).await }
    };
    let (mut alice, _) = login(&a, "alice").await;
    subscribed(&a, 1.0).await;
    // A token from node a's page logs in on node b.
    let t = token(&a.http, "bob").await;
    let (mut bob, welcome) = login_with(&b.ws, &t).await;
    assert_eq!(names(&welcome["online"]), ["alice", "bob"]);
    subscribed(&b, 1.0).await;
    let p = read(&mut alice).await;
    assert_eq!(
        p,
        json!({"type": "presence", "user": "bob", "online": true})
    );

    // One after the other, so that each knows what it is told first.
    send(&alice, json!({"type": "join", "room": "kim"})).await;
    next(&mut alice, "joined").await;
    subscribed(&a, 2.0).await;
    send(&bob, json!({"type": "join", "room": "kim"})).await;
    assert_eq!(
        names(&next(&mut bob, "joined").await["members"]),
        ["alice", "bob"]
    );
    subscribed(&b, 2.0).await;
    next(&mut alice, "member").await;
    send(
        &alice,
        json!({"type": "say", "room": "kim", "text": "across nodes"}),
    )
    .await;
    assert_eq!(next(&mut bob, "message").await["text"], "across nodes");
    assert_eq!(next(&mut alice, "message").await["text"], "across nodes");
    send(&bob, json!({"type": "dm", "to": "alice", "text": "from b"})).await;
    let dm = next(&mut alice, "dm").await;
    assert_eq!(
        (dm["text"].as_str(), dm["stored"].as_bool()),
        (Some("from b"), Some(false))
    );
    drop(bob);
    let p = next(&mut alice, "presence").await;
    assert_eq!(p["online"], false);
}

#[tokio::test]
async fn tls_serves_the_page_over_https_and_the_chat_over_wss() {
    let dir = temp_dir("tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let chat = ChatProcess::start(
        &dir.join("chat.db"),
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let roots = kim_tls::TlsClientConfig::with_root_pem(cert_pem.as_bytes(), &[]).unwrap();
    let mut page = kim_tls::connect(&chat.http, "localhost", &roots)
        .await
        .unwrap();
    let req = "POST /api/token HTTP/1.1\r\nHost: localhost\r\nContent-Length: 16\r\n\
               Connection: close\r\n\r\n{\"name\":\"alice\"}";
    page.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = page.read_to_end(&mut raw).await;
    let (status, body) = parse_response(&raw);
    assert_eq!(status, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = token["token"].as_str().unwrap();

    let io = kim_tls::connect(&chat.ws, "localhost", &roots)
        .await
        .unwrap();
    let path = format!("/ws?token={token}");
    let opts = ClientOptions::default();
    let mut c = kim_ws::client_over(io, "localhost", &path, &[], None, &opts)
        .await
        .unwrap();
    let frame = c.read().await.unwrap();
    let welcome: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
    assert_eq!(welcome["user"], "alice");
}

#[tokio::test]
async fn compression_is_negotiated_and_the_heap_profile_is_served() {
    let dir = temp_dir("heap");
    // One sample per KiB allocated (instead of 64 KiB): the small live heap of a fresh
    // process is then estimated closely, not by a handful of samples.
    let chat = ChatProcess::start_with_env(
        &dir.join("chat.db"),
        &["--debug-listen", "127.0.0.1:0"],
        &[("MALLOC_CONF", "lg_prof_sample:10")],
    );
    let token = token(&chat.http, "alice").await;
    let url = format!("ws://{}/ws?token={token}", chat.ws);
    let deflate = kim_ws::Compression::new();
    let mut c = kim_ws::connect_compressed(&url, &[], &deflate, &ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(next(&mut c, "welcome").await["compressed"], true);
    let (_plain, welcome) = login(&chat, "bob").await;
    assert_eq!(welcome["compressed"], false);

    let debug = chat.debug.as_deref().unwrap();
    let mut s = tokio::net::TcpStream::connect(debug).await.unwrap();
    s.write_all(b"GET /debug/pprof/heap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut gz = flate2::read::GzDecoder::new(&raw[head_end..]);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut gz, &mut bytes).unwrap();
    use pprof::protos::Message;
    let profile = pprof::protos::Profile::decode(bytes.as_slice()).unwrap();
    let s = |i: i64| profile.string_table[i as usize].as_str();
    let kinds: Vec<_> = profile
        .sample_type
        .iter()
        .map(|t| (s(t.ty), s(t.unit)))
        .collect();
    let space = kinds.iter().position(|k| *k == ("inuse_space", "bytes"));
    let space = space.unwrap_or_else(|| panic!("no inuse_space in {kinds:?}"));
    let live: i64 = profile.sample.iter().map(|x| x.value[space]).sum();
    // The process holds at least its runtime, its database cache and two connections.
    assert!(live > 100_000, "{live} bytes live");
    assert!(profile.sample.iter().all(|x| !x.location_id.is_empty()));
    let binary = profile
        .mapping
        .iter()
        .any(|m| s(m.filename).ends_with("/chat"));
    assert!(
        binary,
        "the chat binary is among the mappings, for go tool pprof to symbolize"
    );

    // The heap metrics are jemalloc's: glibc's allocator serves nothing in this process.
    let (status, metrics) = http(debug, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let in_use: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kim_heap_bytes{state=\"in_use\"} "))
        .expect("kim_heap_bytes in /metrics")
        .parse()
        .unwrap();
    assert!(
        in_use > 1_000_000.0,
        "jemalloc's figure, {in_use} bytes allocated"
    );
}

#[tokio::test]
async fn the_chat_runs_in_worker_processes_too() {
    let dir = temp_dir("workers");
    let chat = ChatProcess::start(
        &dir.join("chat.db"),
        &["--backend", "dgram", "--workers", "2"],
    );
    let (mut alice, _) = login(&chat, "alice").await;
    let (mut bob, welcome) = login(&chat, "bob").await;
    assert_eq!(names(&welcome["online"]), ["alice", "bob"]);
    assert_eq!(read(&mut alice).await["user"], "bob");
    send(&alice, json!({"type": "join", "room": "kim"})).await;
    next(&mut alice, "joined").await;
    send(&bob, json!({"type": "join", "room": "kim"})).await;
    next(&mut bob, "joined").await;
    next(&mut alice, "member").await;
    send(
        &bob,
        json!({"type": "say", "room": "kim", "text": "from a worker"}),
    )
    .await;
    assert_eq!(next(&mut alice, "message").await["text"], "from a worker");
    send(&alice, json!({"type": "dm", "to": "bob", "text": "psst"})).await;
    assert_eq!(next(&mut bob, "message").await["text"], "from a worker");
    assert_eq!(next(&mut bob, "dm").await["text"], "psst");
    assert_eq!(next(&mut alice, "dm").await["to"], "bob");
    alice.send_text("{oops").await.unwrap();
    assert_eq!(next(&mut alice, "error").await["code"], "bad_json");
}
