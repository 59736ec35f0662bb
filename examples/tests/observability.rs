//! Observability end to end: `/metrics` scraped over HTTP before and after known exchanges
//! (exact deltas), CPU profiles decoded as pprof protobuf and parsed as SVG, and the debug
//! listener's absence when it is not configured. Real clients on 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use kim_client::ClientError;
use kim_core::{CloseReason, DuplicatePolicy, ServerOptions};
use kim_ws::WsUpgrader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The CPU profiler is process-wide: tests in this binary that take a profile take turns.
static PROFILER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An HTTP response as the test client saw it.
struct Response {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

/// One GET over a fresh connection (`Connection: close`), read to the end.
async fn get(addr: SocketAddr, path: &str) -> Response {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("debug listener answers");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut all))
        .await
        .expect("response within 30 s")
        .unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8(all[..end].to_vec()).unwrap();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    Response {
        status,
        headers: head.to_ascii_lowercase(),
        body: all[end + 4..].to_vec(),
    }
}

/// `/metrics` as a map from `name{labels}` to value; checks the content type on the way.
async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.headers
    );
    let text = String::from_utf8(r.body).expect("UTF-8 metrics");
    let mut m = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = line.rsplit_once(' ').expect("`name value` lines");
        m.insert(k.to_string(), v.parse::<f64>().expect("numeric value"));
    }
    m
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("{key} missing from /metrics"))
}

/// Scrapes until `key` has `want` (the closes and gauges settle asynchronously).
async fn wait_for(addr: SocketAddr, key: &str, want: f64) -> HashMap<String, f64> {
    let deadline = Instant::now() + EVENT;
    loop {
        let m = scrape(addr).await;
        if value(&m, key) == want {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{key} stayed at {} instead of {want}",
            value(&m, key)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts `after - before` for every key given, and that the keys not given are unchanged
/// among those listed in `unchanged`.
fn assert_deltas(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
    want: &[(&str, f64)],
    unchanged: &[&str],
) {
    let mut wrong = Vec::new();
    for (k, d) in want {
        let got = value(after, k) - before.get(*k).copied().unwrap_or(0.0);
        if got != *d {
            wrong.push(format!("{k}: delta {got}, expected {d}"));
        }
    }
    for k in unchanged {
        let got = value(after, k) - before.get(*k).copied().unwrap_or(0.0);
        if got != 0.0 {
            wrong.push(format!("{k}: delta {got}, expected 0"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn with_debug() -> kim_core::OptionsBuilder {
    ServerOptions::builder().debug_listen("127.0.0.1:0".parse().unwrap())
}

async fn ws_login(addr: &str, id: &str) -> kim_ws::WsClient {
    let mut c = kim_ws::connect(addr, &no_heartbeat()).await.unwrap();
    let ok = tokio::time::timeout(EVENT, c.login(id.to_string()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&ok.payload[..], b"ok");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_exchange_exactly() {
    // This test process runs on jemalloc, which kim-examples links in: kim reads its
    // figures once told so, as the example servers tell it.
    kim_examples::install_allocator();
    let s = start_on(WsUpgrader::new(), with_debug().build().unwrap()).await;
    let debug = s.handle.debug_addr().expect("debug listener bound");
    let before = scrape(debug).await;
    assert_eq!(value(&before, "kim_channels"), 0.0);
    // The heap as the allocator counts it.
    assert!(value(&before, "kim_heap_bytes{state=\"in_use\"}") > 0.0);
    assert!(value(&before, "kim_heap_bytes{state=\"free\"}") >= 0.0);

    let mut alice = ws_login(&s.addr, "alice").await;
    let mut bob = ws_login(&s.addr, "bob").await;
    let carol = ws_login(&s.addr, "carol").await;

    // Three refused logins, one of each kind a client can cause quickly.
    let mut bad = kim_ws::connect(&s.addr, &no_heartbeat()).await.unwrap();
    assert!(bad.login("x".repeat(65)).await.is_err());
    let mut dup = kim_ws::connect(&s.addr, &no_heartbeat()).await.unwrap();
    assert!(dup.login("alice").await.is_err());
    let mut raw = TcpStream::connect(&s.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(EVENT, raw.read_to_end(&mut answer)).await;
    assert!(answer.starts_with(b"HTTP/1.1 4"), "handshake refused");

    // 10 echoes of 20 bytes, a push to bob, a push to nobody.
    for i in 0..10 {
        alice
            .send_text(format!("message number {i:05}"))
            .await
            .unwrap();
        assert_eq!(read(&mut alice).await.unwrap().payload.len(), 20);
    }
    alice.send_text("@bob hi").await.unwrap();
    assert_eq!(&read(&mut bob).await.unwrap().payload[..], b"alice: hi");
    alice.send_text("@nobody x").await.unwrap();
    assert_eq!(
        &read(&mut alice).await.unwrap().payload[..],
        b"offline nobody"
    );

    // bob closes properly, carol just goes away.
    bob.close().await.unwrap();
    drop(carol);
    wait_for(debug, "kim_channels", 1.0).await;
    let after = wait_for(debug, "kim_connections", 1.0).await;

    let hist = |suffix: &str| format!("kim_handler_duration_seconds_{suffix}");
    assert_deltas(
        &before,
        &after,
        &[
            ("kim_connections_accepted_total", 6.0),
            ("kim_logins_total", 3.0),
            ("kim_login_rejections_total{reason=\"acceptor\"}", 1.0),
            ("kim_login_rejections_total{reason=\"duplicate\"}", 1.0),
            ("kim_login_rejections_total{reason=\"handshake\"}", 1.0),
            ("kim_messages_received_total", 12.0),
            ("kim_received_bytes_total", 200.0 + 7.0 + 9.0),
            // 3 `ok`, 10 echoes, "alice: hi", "offline nobody".
            ("kim_messages_sent_total", 15.0),
            ("kim_sent_bytes_total", 6.0 + 200.0 + 9.0 + 14.0),
            ("kim_push_failures_total{reason=\"not_found\"}", 1.0),
            ("kim_channels_closed_total{cause=\"peer\"}", 1.0),
            ("kim_channels_closed_total{cause=\"peer_gone\"}", 1.0),
            (&hist("count"), 12.0),
            (&hist("bucket{le=\"+Inf\"}"), 12.0),
        ],
        &[
            "kim_login_rejections_total{reason=\"timeout\"}",
            "kim_push_failures_total{reason=\"full\"}",
            "kim_push_failures_total{reason=\"closed\"}",
            "kim_channels_closed_total{cause=\"read_timeout\"}",
            "kim_channels_closed_total{cause=\"io_error\"}",
            "kim_connections_refused_total",
        ],
    );
    assert!(value(&after, &hist("sum")) > 0.0);
    // The server's own view agrees with what it serves.
    let st = s.handle.stats();
    assert_eq!((st.logins, st.rejected, st.accepted), (3, 3, 6));
    assert!(s.handle.metrics_text().contains("kim_logins_total 3"));
    s.handle.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_close_cause_is_counted() {
    let opts = with_debug()
        .read_wait(Duration::from_millis(300))
        .duplicate_policy(DuplicatePolicy::Kick)
        .max_message_size(1024)
        .build()
        .unwrap();
    let s = start(opts).await;
    let debug = s.handle.debug_addr().unwrap();
    let before = scrape(debug).await;
    let cause = |c: &str| format!("kim_channels_closed_total{{cause=\"{c}\"}}");

    // Clients that must not meet the 300 ms read deadline send heartbeats.
    let lively = kim_client::ClientOptions {
        heartbeat: Some(Duration::from_millis(50)),
        ..kim_client::ClientOptions::default()
    };
    // read_timeout: a client that says nothing after login.
    let mut idle = login(&s.addr, "idle").await;
    expect_close(&mut idle, "read timeout").await;
    // kicked: the same id logs in again.
    let mut old = login_with(&s.addr, "dave", &lively).await;
    let mut new = login_with(&s.addr, "dave", &lively).await;
    expect_close(&mut old, "kicked").await;
    // server: the app closes the channel.
    s.handle
        .channel("dave")
        .expect("the new dave")
        .close(CloseReason::normal("bye from the app"));
    expect_close(&mut new, "bye from the app").await;
    // protocol_error: a frame over max_message_size.
    let mut big = login(&s.addr, "big").await;
    match big.send_binary(vec![0u8; 2048]).await {
        Ok(()) => {
            expect_close(&mut big, "").await;
        }
        Err(e) => panic!("send failed: {e}"),
    }
    // io_error: a reset instead of a close.
    let reset = TcpStream::connect(&s.addr).await.unwrap();
    let mut reset = reset;
    reset.write_all(&raw_frame(2, b"erin")).await.unwrap();
    let mut ok = [0u8; 7];
    reset.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok[5..], b"ok");
    // SO_LINGER 0: the close sends a reset.
    let reset = reset.into_std().unwrap();
    socket_linger_zero(&reset);
    drop(reset);
    // Each channel is counted when its task ends, which may come after its client saw the
    // close (a kicked channel waits for the peer's answer to its close).
    let expected = [
        (cause("read_timeout"), 1.0),
        (cause("kicked"), 1.0),
        (cause("server"), 1.0),
        (cause("protocol_error"), 1.0),
        (cause("io_error"), 1.0),
    ];
    for (k, d) in &expected {
        wait_for(debug, k, before.get(k).copied().unwrap_or(0.0) + d).await;
    }
    let mid = scrape(debug).await;
    let want: Vec<(&str, f64)> = expected.iter().map(|(k, d)| (k.as_str(), *d)).collect();
    assert_deltas(
        &before,
        &mid,
        &want,
        &[&cause("shutdown"), &cause("peer_gone")],
    );

    // shutdown: two channels open when the server shuts down (each reads its close).
    let mut a = login_with(&s.addr, "frank", &lively).await;
    let mut b = login_with(&s.addr, "gina", &lively).await;
    let h = s.handle.clone();
    let shutdown = tokio::spawn(async move { h.shutdown(Duration::from_secs(5)).await });
    for c in [&mut a, &mut b] {
        match read(c).await {
            Err(ClientError::Closed(r)) => assert!(r.reason.contains("shutting down"), "{r:?}"),
            other => panic!("expected the shutdown close, got {other:?}"),
        }
    }
    assert_eq!(shutdown.await.unwrap().channels, 2);
    let after = s.handle.metrics().render();
    assert!(
        after.contains(&format!("{} {}", cause("shutdown"), 2)),
        "{after}"
    );
}

#[test]
fn per_message_metrics_can_be_turned_off() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = start(with_debug().metrics(false).build().unwrap()).await;
        let debug = s.handle.debug_addr().unwrap();
        let mut c = login(&s.addr, "quiet").await;
        c.send_binary(&b"hello"[..]).await.unwrap();
        read(&mut c).await.unwrap();
        let m = scrape(debug).await;
        assert_eq!(value(&m, "kim_logins_total"), 1.0);
        assert_eq!(value(&m, "kim_messages_received_total"), 0.0);
        assert_eq!(value(&m, "kim_messages_sent_total"), 0.0);
        assert_eq!(value(&m, "kim_handler_duration_seconds_count"), 0.0);
        s.handle.shutdown(Duration::from_secs(1)).await;
    });
}

fn socket_linger_zero(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// Burns CPU in a function the profile can name.
#[inline(never)]
fn burn_cpu_for_profile(stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = x.rotate_left(5) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        }
    }
    std::hint::black_box(x)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profile_and_flame_graph() {
    use pprof::protos::Message;

    let _profiler = PROFILER.lock().await;
    let s = start(with_debug().build().unwrap()).await;
    let debug = s.handle.debug_addr().unwrap();

    // Bad `seconds` are refused with the reason.
    for bad in ["abc", "0", "301", "-1", "2.5"] {
        let r = get(debug, &format!("/debug/pprof/profile?seconds={bad}")).await;
        assert_eq!(r.status, 400, "seconds={bad}");
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains("seconds must be"), "{body}");
    }
    assert_eq!(get(debug, "/nothing-here").await.status, 404);

    // A 1-second profile while a thread burns CPU; a second request meanwhile gets 409.
    // Burns until both profiles are taken (each ends with symbolizing its samples).
    struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stop = StopOnDrop(Default::default());
    let burner = std::thread::spawn({
        let stop = stop.0.clone();
        move || burn_cpu_for_profile(&stop)
    });
    let profile = tokio::spawn(get(debug, "/debug/pprof/profile?seconds=1"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = get(debug, "/debug/pprof/flamegraph?seconds=1").await;
    assert_eq!(busy.status, 409);
    assert!(String::from_utf8(busy.body).unwrap().contains("already"));
    let r = profile.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("content-type: application/octet-stream"));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut raw)
        .expect("gzip");
    let p = pprof::protos::Profile::decode(&raw[..]).expect("a pprof protobuf");
    let s_at = |i: i64| p.string_table[i as usize].as_str();
    let types: Vec<_> = p
        .sample_type
        .iter()
        .map(|t| (s_at(t.ty), s_at(t.unit)))
        .collect();
    assert!(types.contains(&("cpu", "nanoseconds")), "{types:?}");
    let samples: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    // 100 Hz of process CPU time; fewer when the machine is busy, never none.
    assert!(samples > 0, "no samples in 1 s of a busy thread");
    assert!(
        p.function
            .iter()
            .any(|f| s_at(f.name).contains("burn_cpu_for_profile")),
        "the busy function is named in the profile"
    );
    assert!(p.duration_nanos >= 900_000_000, "{}", p.duration_nanos);
    // Stacks start where the thread was interrupted, not in the profiler's unwinder.
    let leaf_name = |sample: &pprof::protos::Sample| -> String {
        let loc = p
            .location
            .iter()
            .find(|l| l.id == sample.location_id[0])
            .unwrap();
        let f = p
            .function
            .iter()
            .find(|f| f.id == loc.line[0].function_id)
            .unwrap();
        s_at(f.name).to_string()
    };
    for sample in &p.sample {
        let leaf = leaf_name(sample);
        assert!(
            !leaf.starts_with("backtrace::") && !leaf.contains("pprof::"),
            "a stack starts in the profiler: {leaf}"
        );
    }

    // The same as a flame graph, once the first profile is done.
    let r = get(debug, "/debug/pprof/flamegraph?seconds=1").await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("content-type: image/svg+xml"));
    let svg = String::from_utf8(r.body).expect("UTF-8 SVG");
    let xml = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(&svg, xml)
        .unwrap_or_else(|e| panic!("not well-formed XML ({e}): {:.300}", svg));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let frames = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .filter(|t| t.contains("burn_cpu_for_profile"))
        .count();
    assert!(frames > 0, "the busy function has a frame");
    assert!(doc.descendants().any(|n| n.has_tag_name("rect")));
    drop(stop);
    burner.join().unwrap();
    s.handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_keep_metrics_from_the_operator() {
    let _profiler = PROFILER.lock().await;
    let s = start(with_debug().build().unwrap()).await;
    let debug = s.handle.debug_addr().unwrap();
    // A request in progress keeps its connection.
    let profile = tokio::spawn(get(debug, "/debug/pprof/profile?seconds=2"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Forty connections that send nothing, or half a request, and then wait.
    let mut idle = Vec::new();
    for i in 0..40 {
        let mut c = TcpStream::connect(debug).await.unwrap();
        if i % 2 == 1 {
            c.write_all(b"GET /metrics HTTP/1.1\r\nHo").await.unwrap();
        }
        idle.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(3), get(debug, "/metrics"))
        .await
        .expect("/metrics answered while 40 idle connections are open");
    assert_eq!(r.status, 200);
    assert!(String::from_utf8(r.body)
        .unwrap()
        .contains("kim_connections"));
    assert!(asked.elapsed() < Duration::from_secs(3));
    // The oldest idle connections were closed to make room; the profile was not.
    let mut closed = 0;
    for c in idle.iter_mut().take(10) {
        let mut b = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(1), c.read(&mut b)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 9,
        "only {closed} of the 10 oldest idle connections were closed"
    );
    let p = profile.await.unwrap();
    assert_eq!(p.status, 200, "the profile in progress was not evicted");
    s.handle.shutdown(Duration::from_secs(1)).await;
}

/// Listening TCP sockets held by process `pid` (from /proc).
fn listening_sockets(pid: u32) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(t) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in t.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) == Some(&"0A") {
                inodes.insert(format!("socket:[{}]", cols[9]));
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| inodes.contains(&*l.to_string_lossy()))
        .count()
}

/// Resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_servers_profiles_are_valid_and_repeated_ones_hold_no_more_memory() {
    use std::process::{Command, Stdio};

    /// Kills the server however the test ends.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_mock-server"))
            .args(["--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let debug: SocketAddr = first_line_addr(&mut out, "debug listening on ")
        .parse()
        .unwrap();
    // An idle server has (almost) no samples: the flame graph is still an SVG.
    let r = get(debug, "/debug/pprof/flamegraph?seconds=1").await;
    assert_eq!(r.status, 200);
    let svg = String::from_utf8(r.body).unwrap();
    let xml = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(&svg, xml)
        .unwrap_or_else(|e| panic!("not an SVG document ({e}): {svg:.300}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    // mock-server runs on jemalloc with its heap profiler off (kim-examples' heap-profile
    // feature is off): the heap endpoint says how to turn it on.
    let r = get(debug, "/debug/pprof/heap").await;
    let reason = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 503, "{reason}");
    assert!(reason.contains("MALLOC_CONF=prof_active:true"), "{reason}");
    // The profiler keeps one sample table for the next profile; repeated profiles hold no
    // more than the first one did.
    let mut rss = Vec::new();
    for _ in 0..3 {
        let r = get(debug, "/debug/pprof/profile?seconds=1").await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..2], &[0x1f, 0x8b], "a gzip body");
        rss.push(rss_bytes(child.0.id()));
    }
    drop(child);
    let growth = rss[2].saturating_sub(rss[0]);
    assert!(
        growth < 16 << 20,
        "RSS after three profiles {:?} MiB: grew {} MiB after the first",
        rss.iter().map(|b| b >> 20).collect::<Vec<_>>(),
        growth >> 20
    );
}

#[test]
fn the_debug_listener_exists_only_where_configured() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let run = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mock-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            assert!(out.read_line(&mut l).unwrap() > 0, "server exited early");
            let done = l.starts_with("listening on ");
            lines.push(l.trim().to_string());
            if done {
                break;
            }
        }
        let sockets = listening_sockets(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        (lines, sockets)
    };
    let (lines, sockets) = run(&[]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(sockets, 1, "only the gateway's listener");
    let (lines, sockets) = run(&["--debug-listen", "127.0.0.1:0"]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("debug listening on 127.0.0.1:"));
    assert_eq!(sockets, 2, "the gateway's listener and the debug listener");

    // In-process: no address unless configured.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = start(ServerOptions::default()).await;
        assert_eq!(s.handle.debug_addr(), None);
        s.handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn a_debug_address_in_use_fails_the_start() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let r = kim_core::DefaultServer::new(kim_tcp::TcpUpgrader, kim_examples::EchoListener)
            .with_options(ServerOptions::builder().debug_listen(addr).build().unwrap())
            .with_debug(kim_debug::Debug::new())
            .start("127.0.0.1:0")
            .await;
        let e = r.expect_err("the debug address is taken");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    });
}

/// Runs mock-server with `RUST_LOG=rust_log`: alice logs in, echoes 100 messages and closes,
/// and a login is refused; returns what the server logged.
fn server_log(rust_log: &str) -> String {
    use std::process::{Command, Stdio};

    let mut server = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let addr = first_line_addr(&mut out, "listening on ");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut alice = login(&addr, "alice").await;
        for i in 0..100 {
            alice.send_text(format!("message {i}")).await.unwrap();
            read(&mut alice).await.unwrap();
        }
        alice.close().await.unwrap();
        let mut bad = kim_tcp::connect(&addr, &no_heartbeat()).await.unwrap();
        assert!(bad.login("").await.is_err());
    });
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
    let mut stderr = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(server.wait().unwrap().success());
    assert!(!stderr.contains('\u{1b}'), "no color codes off a terminal");
    stderr
}

#[test]
fn info_logs_name_the_channel_and_say_nothing_per_message() {
    let stderr = server_log("info");
    let lines: Vec<&str> = stderr.lines().collect();
    let with = |text: &str| lines.iter().filter(|l| l.contains(text)).count();
    // The login's span, for the login's lines only; the channel's span is at debug.
    let login = "login{peer=127.0.0.1:";
    assert_eq!(with(login), 2, "{stderr}");
    assert_eq!(with("channel{"), 0, "{stderr}");
    let logged_in = lines
        .iter()
        .filter(|l| l.contains("kim_core::server: logged in id=alice"))
        .collect::<Vec<_>>();
    assert_eq!(logged_in.len(), 1, "{stderr}");
    assert!(
        logged_in[0].contains(login) && logged_in[0].contains("transport=\"tcp\"}"),
        "{stderr}"
    );
    assert_eq!(
        with("kim_core::session: channel closed id=alice cause=\"peer\""),
        1,
        "{stderr}"
    );
    assert_eq!(with("login rejected"), 1, "{stderr}");
    assert!(
        lines.iter().any(|l| l.contains(login)
            && l.contains("login rejected")
            && l.contains("invalid user id")
            && l.contains("cause=\"acceptor\"")),
        "{stderr}"
    );
    // 100 messages, and no line per message.
    assert!(lines.len() < 20, "{} lines:\n{stderr}", lines.len());
}

#[test]
fn the_channel_span_is_there_for_a_subscriber_that_asks_for_it() {
    let stderr = server_log("info,kim::channel=debug");
    let lines: Vec<&str> = stderr.lines().collect();
    let span = "channel{id=alice peer=127.0.0.1:";
    let closed = lines
        .iter()
        .filter(|l| l.contains("channel closed"))
        .collect::<Vec<_>>();
    assert_eq!(closed.len(), 1, "{stderr}");
    assert!(
        closed[0].contains(span)
            && closed[0].contains("transport=\"tcp\"}: kim_core::session: channel closed"),
        "{stderr}"
    );
    // Nothing else at debug: the directive enables the span alone.
    assert!(lines.len() < 20, "{} lines:\n{stderr}", lines.len());
}
