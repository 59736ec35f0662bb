//! The chat page in a real browser: headless Chromium driven over WebDriver (chromedriver).
//! Two windows log in as two users, see each other online, join a room and talk, send a direct
//! message; one reloads and finds the history; a forged token is refused; a screenshot of the
//! page is kept as `target/tmp/chat-screenshot.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); `CHROMIUM` and
//! `CHROMEDRIVER` name other paths.

mod common;
#[path = "../../tests/proxy/mod.rs"]
mod proxy;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{temp_dir, ChatProcess};
use fantoccini::{Client, ClientBuilder, Locator};
use proxy::Proxy;
use serde_json::json;

fn program(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_string());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium and chromium-driver packages \
         (.ci/run does), or set {var} to its path"
    );
    path
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let exe = program("CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new(exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, port }
    }

    /// A new browser window with a profile of its own (its own session storage).
    async fn browser(&self, profile: &std::path::Path) -> Client {
        let chromium = program("CHROMIUM", "/usr/bin/chromium");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1100,700",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        // fantoccini's client speaks plain HTTP to chromedriver, but its builder wants a
        // process-wide TLS provider all the same.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The visible text of the element `css` (empty if there is none).
async fn text(c: &Client, css: &str) -> String {
    let v = c
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            vec![json!(css)],
        )
        .await
        .unwrap();
    v.as_str().unwrap_or_default().to_string()
}

/// Waits up to 10 s for `css`'s text to satisfy `ok`.
async fn wait_text(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) {
    let start = Instant::now();
    loop {
        let t = text(c, css).await;
        if ok(&t) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{css}: {what}; it shows {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_contains(c: &Client, css: &str, needle: &str) {
    wait_text(c, css, &format!("waiting for {needle:?}"), |t| {
        t.contains(needle)
    })
    .await;
}

async fn type_into(c: &Client, css: &str, text: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Opens the page and logs in as `name`.
async fn log_in(c: &Client, page: &str, name: &str) {
    c.goto(page).await.unwrap();
    type_into(c, "#name", name).await;
    click(c, "#login-btn").await;
    wait_text(c, "#me", "the user's name", |t| t == name).await;
    // A new user is put in the lobby.
    wait_contains(c, "#title", "#general").await;
}

async fn say(c: &Client, text: &str) {
    type_into(c, "#text", text).await;
    click(c, "#send").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_in_headless_chromium() {
    let dir = temp_dir("browser");
    let chat = ChatProcess::start(&dir.join("chat.db"), &[]);
    let page = chat.page();
    let driver = Driver::start();
    let alice = driver.browser(&dir.join("alice")).await;
    let bob = driver.browser(&dir.join("bob")).await;
    tokio::time::timeout(Duration::from_secs(120), async {
        log_in(&alice, &page, "alice").await;
        log_in(&bob, &page, "bob").await;

        // Presence: each sees the other online.
        wait_contains(&alice, "#online", "bob").await;
        wait_contains(&bob, "#online", "alice").await;
        // The browser negotiated permessage-deflate.
        let compressed = alice.execute("return window.chatState.compressed", vec![]).await;
        assert_eq!(compressed.unwrap(), json!(true));
        wait_contains(&alice, "#status", "compressed").await;

        // Both join a room; each sees the other among its members.
        for c in [&alice, &bob] {
            type_into(c, "#new-room", "kim-dev").await;
            click(c, "#join button").await;
            wait_contains(c, "#title", "#kim-dev").await;
        }
        wait_contains(&alice, "#members", "bob").await;
        say(&alice, "hello bob, the gateway is up").await;
        wait_contains(&bob, "#messages", "hello bob, the gateway is up").await;
        say(&bob, "hi alice! 10k connections on one core").await;
        wait_contains(&alice, "#messages", "hi alice! 10k connections on one core").await;
        say(&alice, "shall we try the cluster next?").await;
        wait_contains(&bob, "#messages", "shall we try the cluster next?").await;
        let row = text(&bob, "#messages .msg").await;
        assert!(row.contains("alice"), "a message shows its sender: {row:?}");
        assert!(row.contains(':'), "and its time: {row:?}");

        // A direct message: bob opens alice from the online list.
        click(&bob, "#online li[data-user='alice']").await;
        wait_contains(&bob, "#title", "alice").await;
        say(&bob, "psst, a direct message").await;
        wait_contains(&alice, "#dms", "bob").await;
        click(&alice, "#dms li").await;
        wait_contains(&alice, "#messages", "psst, a direct message").await;
        click(&alice, "#rooms li[data-room='kim-dev']").await;
        wait_contains(&alice, "#messages", "shall we try the cluster next?").await;

        let png = alice.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chat-screenshot.png");
        std::fs::write(&shot, &png).unwrap();
        eprintln!("screenshot: {}", shot.display());

        // Bob reloads: logged in again from the saved token, rooms and history back.
        bob.refresh().await.unwrap();
        wait_text(&bob, "#me", "bob after the reload", |t| t == "bob").await;
        click(&bob, "#rooms li[data-room='kim-dev']").await;
        wait_contains(&bob, "#messages", "hello bob, the gateway is up").await;
        wait_contains(&bob, "#messages", "shall we try the cluster next?").await;

        // A forged token is refused at the upgrade, and the page says so.
        bob.execute(
            "sessionStorage.setItem('kim-chat-login', JSON.stringify({ user: 'bob', expires: 4102444800, \
             token: 'bob.4102444800.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' })); location.reload();",
            vec![],
        )
        .await
        .unwrap();
        wait_contains(&bob, "#login-error", "Login refused").await;
        // Bob is gone: alice sees him leave.
        wait_text(&alice, "#online", "bob gone", |t| !t.contains("bob")).await;
    })
    .await
    .expect("the browser test takes under two minutes");
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

/// The texts of `from`'s messages in `conv` ("#room" or "@user") as the page holds them.
async fn messages_from(c: &Client, conv: &str, from: &str) -> Vec<String> {
    let v = c
        .execute(
            "return (window.chatState.convs.get(arguments[0]) || [])\
               .filter((m) => m.from === arguments[1]).map((m) => m.text);",
            vec![json!(conv), json!(from)],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_survives_cut_connections_in_headless_chromium() {
    let dir = temp_dir("browser-cuts");
    // The pages reach the gateway through a proxy that loses their connections.
    let proxy = Proxy::start().await;
    let port = proxy.addr.port().to_string();
    let chat = ChatProcess::start(&dir.join("chat.db"), &["--public-ws-port", &port]);
    proxy.forward_to(&chat.ws);
    let page = chat.page();
    let driver = Driver::start();
    let alice = driver.browser(&dir.join("alice")).await;
    let bob = driver.browser(&dir.join("bob")).await;
    tokio::time::timeout(Duration::from_secs(150), async {
        log_in(&alice, &page, "alice").await;
        log_in(&bob, &page, "bob").await;
        wait_contains(&alice, "#status", "connected").await;
        let total = 40;
        let expected: Vec<String> = (0..total).map(|i| format!("message {i}")).collect();
        for (i, text) in expected.iter().enumerate() {
            say(&bob, text).await;
            if i % 10 == 5 {
                // Both pages lose their connections; for a moment nothing gets through, and
                // the page says it is reconnecting.
                proxy.refusing(true);
                proxy.cut();
                wait_contains(&alice, "#status", "reconnecting").await;
                wait_contains(&bob, "#status", "reconnecting").await;
                proxy.refusing(false);
            }
        }
        wait_contains(&alice, "#status", "connected").await;
        let start = Instant::now();
        loop {
            let got = messages_from(&alice, "#general", "bob").await;
            if got.len() >= total {
                assert_eq!(got, expected, "every message once, in order");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "alice has {} of {total}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // What bob's page shows of its own messages is the same, once each.
        wait_contains(&bob, "#messages", "message 39").await;
        assert_eq!(messages_from(&bob, "#general", "bob").await, expected);
        let shown = text(&alice, "#messages").await;
        assert_eq!(
            shown.matches("message 17").count(),
            1,
            "shown once: {shown}"
        );
    })
    .await
    .expect("the browser test takes under two and a half minutes");
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}
