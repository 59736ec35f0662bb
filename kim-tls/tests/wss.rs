//! wss and TLS over raw TCP with real clients on 127.0.0.1: kim's clients and
//! tokio-tungstenite, SNI and ALPN seen by the acceptor, resumption from a session ticket,
//! certificate reload under traffic, and close_notify at shutdown.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use kim_tls::TlsConfig;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_serves_kims_client_and_tungstenite_and_resumes_sessions() {
    let (cert, key) = self_signed();
    let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let server = serve(kim_ws::WsUpgrader::new(), &tls, EVENT).await;
    let addr = server.local_addr().to_string();
    let client_tls = trusting(&cert, &[b"http/1.1"]);

    let io = kim_tls::connect(&addr, "localhost", &client_tls)
        .await
        .unwrap();
    let mut alice = kim_ws::client_over(io, "localhost", "/", &[], None, &quiet())
        .await
        .unwrap();
    let said = alice.login(bytes("alice")).await.unwrap();
    assert_eq!(
        text(&said),
        "sni=localhost version=TLSv1_3 alpn=http/1.1 resumed=false"
    );
    alice.send_text("over wss").await.unwrap();
    assert_eq!(text(&alice.read().await.unwrap()), "over wss");

    // The second connection of the same client config resumes from the ticket the first got.
    let io = kim_tls::connect(&addr, "localhost", &client_tls)
        .await
        .unwrap();
    let mut bob = kim_ws::client_over(io, "localhost", "/", &[], None, &quiet())
        .await
        .unwrap();
    let said = bob.login(bytes("bob")).await.unwrap();
    assert_eq!(
        text(&said),
        "sni=localhost version=TLSv1_3 alpn=http/1.1 resumed=true"
    );
    // Messages larger than a TLS record, and many in flight, arrive whole and in order.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    bob.send_binary(big.clone()).await.unwrap();
    assert_eq!(&bob.read().await.unwrap().payload[..], &big[..]);
    for i in 0..200 {
        bob.send_text(format!("m{i}")).await.unwrap();
    }
    for i in 0..200 {
        assert_eq!(text(&bob.read().await.unwrap()), format!("m{i}"));
    }

    // tokio-tungstenite over tokio-rustls.
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(client_tls.rustls())
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/", stream)
        .await
        .unwrap();
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text("carol")).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert!(
        reply.to_text().unwrap().starts_with("sni=localhost"),
        "{reply:?}"
    );
    ws.send(Message::text("hello from tungstenite"))
        .await
        .unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo.to_text().unwrap(), "hello from tungstenite");

    assert_eq!(server.channel_count(), 3);
    // tungstenite's connection shared the client config's session cache, so it resumed too.
    assert_eq!(
        metric(
            &server,
            r#"kim_tls_handshakes_total{resumed="no",version="TLSv1_3"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &server,
            r#"kim_tls_handshakes_total{resumed="yes",version="TLSv1_3"}"#
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_frames_run_over_tls_and_tls_1_2_is_spoken() {
    let (cert, key) = self_signed();
    let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let server = serve(kim_tcp::TcpUpgrader, &tls, EVENT).await;
    let addr = server.local_addr().to_string();

    let io = kim_tls::connect(&addr, "localhost", &trusting(&cert, &[]))
        .await
        .unwrap();
    let mut c = kim_tcp::client_over(io, &quiet());
    let said = c.login(bytes("dave")).await.unwrap();
    assert_eq!(
        text(&said),
        "sni=localhost version=TLSv1_3 alpn= resumed=false"
    );
    c.send_binary(&b"\x00\x01binary"[..]).await.unwrap();
    assert_eq!(&c.read().await.unwrap().payload[..], b"\x00\x01binary");

    // A client that speaks only TLS 1.2.
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        r.add(rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap())
            .unwrap();
        r
    };
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut c = kim_tcp::client_over(kim_core::io::Generic(stream), &quiet());
    let said = c.login(bytes("erin")).await.unwrap();
    assert!(text(&said).contains("version=TLSv1_2"), "{}", text(&said));
    assert_eq!(
        metric(
            &server,
            r#"kim_tls_handshakes_total{resumed="no",version="TLSv1_2"}"#
        ),
        1.0
    );
}

/// The DER of the certificate a server presented on `io`.
fn presented(io: &kim_tls::TlsClientIo) -> Vec<u8> {
    io.0.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_reaches_new_handshakes_and_a_bad_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("kim-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert_a, key_a) = self_signed();
    let (cert_b, key_b) = self_signed();
    std::fs::write(&cert_file, &cert_a).unwrap();
    std::fs::write(&key_file, &key_a).unwrap();
    let tls = TlsConfig::from_pem_files(&cert_file, &key_file).unwrap();
    let server = serve(kim_ws::WsUpgrader::new(), &tls, EVENT).await;
    let addr = server.local_addr().to_string();
    // A new client config per connection: a resumed session presents no certificate.
    let both = || trusting(&format!("{cert_a}{cert_b}"), &[]);
    let der = |pem: &str| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    };

    let io = kim_tls::connect(&addr, "localhost", &both()).await.unwrap();
    assert_eq!(presented(&io), der(&cert_a));
    let mut old = kim_ws::client_over(io, "localhost", "/", &[], None, &quiet())
        .await
        .unwrap();
    old.login(bytes("old")).await.unwrap();

    std::fs::write(&cert_file, &cert_b).unwrap();
    std::fs::write(&key_file, &key_b).unwrap();
    tls.reload().unwrap();
    let io = kim_tls::connect(&addr, "localhost", &both()).await.unwrap();
    assert_eq!(presented(&io), der(&cert_b));
    let mut new = kim_ws::client_over(io, "localhost", "/", &[], None, &quiet())
        .await
        .unwrap();
    new.login(bytes("new")).await.unwrap();
    // The channel from before the reload goes on.
    old.send_text("still here").await.unwrap();
    assert_eq!(text(&old.read().await.unwrap()), "still here");

    // A key that is not the certificate's, then a file that is not PEM: refused, B stays.
    std::fs::write(&key_file, &key_a).unwrap();
    let e = tls.reload().unwrap_err();
    assert!(e.to_string().contains("certificate and key"), "{e}");
    std::fs::write(&cert_file, "not a certificate").unwrap();
    let e = tls.reload().unwrap_err();
    assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    std::fs::remove_file(&key_file).unwrap();
    let e = tls.reload().unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
    let io = kim_tls::connect(&addr, "localhost", &both()).await.unwrap();
    assert_eq!(presented(&io), der(&cert_b));
    assert_eq!(
        metric(
            &server,
            r#"kim_tls_certificate_reloads_total{outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &server,
            r#"kim_tls_certificate_reloads_total{outcome="refused"}"#
        ),
        3.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_tls_channels_with_close_notify() {
    let (cert, key) = self_signed();
    let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let server = serve(kim_tcp::TcpUpgrader, &tls, EVENT).await;
    let addr = server.local_addr().to_string();
    let client_tls = trusting(&cert, &[]);
    let mut raw = Vec::new();
    for i in 0..3 {
        let mut io = kim_tls::connect(&addr, "localhost", &client_tls)
            .await
            .unwrap();
        use tokio::io::AsyncWriteExt;
        let id = format!("u{i}");
        let mut login = vec![1u8];
        login.extend_from_slice(&(id.len() as u32).to_be_bytes());
        login.extend_from_slice(id.as_bytes());
        io.write_all(&login).await.unwrap();
        io.flush().await.unwrap();
        raw.push(io);
    }
    tokio::time::timeout(EVENT, async {
        while server.channel_count() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let report = server.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.channels, 3);
    for mut io in raw {
        // Everything to the end reads cleanly: rustls reports a connection that ends without
        // close_notify as an error (UnexpectedEof).
        let mut rest = Vec::new();
        let read = tokio::time::timeout(EVENT, io.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(read.is_ok(), "{read:?}");
        assert!(!rest.is_empty(), "the login reply and a close frame");
    }
}
