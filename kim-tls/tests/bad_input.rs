//! What a TLS port does with clients that do not speak TLS, speak it badly, vanish or stall:
//! each gets rustls' alert or is dropped at the login deadline, each is counted by reason, and
//! an established channel beside them goes on. Then 1,000 handshakes at once, all in within
//! the login deadline.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kim_tls::TlsConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` raw and reads what comes back until the server closes.
async fn answer_to(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut back = Vec::new();
    let read = tokio::time::timeout(EVENT, s.read_to_end(&mut back))
        .await
        .expect("the server closes the connection");
    assert!(read.is_ok(), "{read:?}");
    back
}

/// True if `bytes` is one TLS alert record (content type 21).
fn is_alert(bytes: &[u8]) -> bool {
    bytes.len() >= 7 && bytes[0] == 0x15 && bytes[1] == 0x03
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_get_an_alert_or_the_deadline_and_disturb_nobody() {
    let (cert, key) = self_signed();
    let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let server = serve(kim_tcp::TcpUpgrader, &tls, Duration::from_millis(600)).await;
    let addr = server.local_addr().to_string();
    let io = kim_tls::connect(&addr, "localhost", &trusting(&cert, &[]))
        .await
        .unwrap();
    let mut good = kim_tcp::client_over(io, &quiet());
    good.login(bytes("good")).await.unwrap();

    // Plaintext (an HTTP request) to the TLS port.
    let back = answer_to(&addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(is_alert(&back), "{back:?}");
    // A ClientHello of four bytes of garbage, in a well-formed record.
    let junk = [
        0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
    ];
    let back = answer_to(&addr, &junk).await;
    assert!(is_alert(&back), "{back:?}");
    // A client that vanishes mid-ClientHello.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    drop(s);
    // A client that trickles its ClientHello, a byte at a time: dropped at the deadline.
    let started = Instant::now();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let trickled = async {
        for b in [
            0x16u8, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc, 0x03, 0x03,
        ] {
            s.write_all(&[b]).await?;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await
    };
    let _ = tokio::time::timeout(EVENT, trickled)
        .await
        .expect("dropped");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");

    let failed = |reason: &str| {
        metric(
            &server,
            &format!("kim_tls_handshake_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    tokio::time::timeout(EVENT, async {
        while failed("eof") < 1.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the vanished client is counted");
    assert_eq!(failed("protocol"), 2.0);
    assert_eq!(failed("timeout"), 1.0);
    assert_eq!(failed("eof"), 1.0);

    // The good channel went on through all of it.
    good.send_text("still fine").await.unwrap();
    assert_eq!(text(&good.read().await.unwrap()), "still fine");
    assert_eq!(server.channel_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_handshakes_at_once_all_log_in_within_the_deadline() {
    const CLIENTS: usize = 1000;
    let (cert, key) = self_signed();
    let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let server = serve(kim_ws::WsUpgrader::new(), &tls, EVENT).await;
    let addr = server.local_addr().to_string();
    // No shared session cache: every one is a full handshake.
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (addr, cert) = (addr.clone(), cert.clone());
            tokio::spawn(async move {
                let config = trusting(&cert, &[b"http/1.1"]);
                let io = kim_tls::connect(&addr, "localhost", &config).await?;
                let mut c = kim_ws::client_over(io, "localhost", "/", &[], None, &quiet())
                    .await
                    .map_err(std::io::Error::other)?;
                c.login(bytes(&format!("u{i}")))
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(c)
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(CLIENTS);
    for t in tasks {
        clients.push(t.await.unwrap().expect("logged in"));
    }
    assert_eq!(server.channel_count(), CLIENTS);
    assert_eq!(
        metric(
            &server,
            r#"kim_tls_handshakes_total{resumed="no",version="TLSv1_3"}"#
        ),
        CLIENTS as f64
    );
    let last = clients.last_mut().unwrap();
    last.send_text("last").await.unwrap();
    assert_eq!(text(&last.read().await.unwrap()), "last");
}
