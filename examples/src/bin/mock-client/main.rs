//! A mock-protocol client: logs in, sends messages, prints what comes back; with `--listen`,
//! then stays logged in and prints every message that arrives until interrupted.
//!
//! ```text
//! mock-client --addr 127.0.0.1:8000 --id alice --count 3 --message hello
//! mock-client --addr 127.0.0.1:8000 --id bob --count 0 --listen
//! mock-client --addr 127.0.0.1:8000 --id alice --count 1 --message "@bob hi"
//! mock-client --transport ws --addr wss://127.0.0.1:8443/ --tls-root cert.pem --id carol
//! mock-client --addr 127.0.0.1:8000 --id dave --count 0 --listen --session
//! ```
//!
//! With `--session` the client keeps a session (the mock protocol's `<id> session`) through
//! kim-client's `SessionClient` (see `session.rs`): what arrives is numbered, acknowledged
//! every 32 messages and after a second of quiet, and when the connection is lost without a
//! close from the gateway, the client resumes the session by itself (`<id> resume <token>
//! <last>`), retrying with a jittered, growing pause.

mod session;

use std::time::Duration;

use clap::Parser;
use kim_client::{Client, ClientError, ClientOptions};
use kim_core::{Frame, FrameReader, FrameWriter};
use kim_examples::{init_tracing, parse_push, Transport};

#[derive(Debug, Parser)]
#[command(about = "log in to a mock gateway, send messages, print what comes back")]
struct Args {
    /// The transport to use.
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// The gateway's address (`host:port`; for ws also `ws://host:port/path`).
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: String,
    /// The user id to log in as.
    #[arg(long, default_value = "alice")]
    id: String,
    /// Messages to send.
    #[arg(long, default_value_t = 3)]
    count: usize,
    /// The text to send. `@bob hi` pushes to bob: the gateway answers only when bob is offline.
    /// `{n}` in it is replaced with the message's number (1, 2, ...).
    #[arg(long, default_value = "hello")]
    message: String,
    /// Seconds to wait for each reply (and for the login).
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Seconds to wait for an answer to a push (there is one only when it failed).
    #[arg(long, default_value_t = 0.5)]
    push_wait: f64,
    /// After the messages, stay logged in and print every message that arrives, until
    /// interrupted (Ctrl-C) or the gateway closes the connection.
    #[arg(long)]
    listen: bool,
    /// Connect over TLS (wss, or TCP frames over TLS), trusting the certificates in this PEM
    /// file (the server's own, if self-signed).
    #[arg(long)]
    tls_root: Option<std::path::PathBuf>,
    /// The server name to ask for and check the certificate against (with `--tls-root`).
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// Websocket: offer permessage-deflate (kim's default settings: messages of 1 KiB or more
    /// compressed, each on its own).
    #[arg(long)]
    deflate: bool,
    /// Keep a session: numbered messages, acknowledged; resumed after a lost connection.
    #[arg(long)]
    session: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    init_tracing();
    if let Err(e) = run(&args).await {
        // An expected outcome (refused, timed out, closed) is a message, not a crash.
        eprintln!("mock-client: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    if args.session {
        return session::run(args).await;
    }
    connect_and_talk(args).await
}

async fn connect_and_talk(args: &Args) -> anyhow::Result<()> {
    let opts = ClientOptions::default();
    let compression = args.deflate.then(kim_ws::Compression::new);
    let Some(root) = &args.tls_root else {
        return match (args.transport, &compression) {
            (Transport::Tcp, _) => talk(kim_tcp::connect(&args.addr, &opts).await?, args).await,
            (Transport::Ws, None) => talk(kim_ws::connect(&args.addr, &opts).await?, args).await,
            (Transport::Ws, Some(c)) => {
                let client = kim_ws::connect_compressed(&args.addr, &[], c, &opts).await?;
                talk(client, args).await
            }
        };
    };
    let pem =
        std::fs::read(root).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", root.display()))?;
    let (host, path) = match args
        .addr
        .strip_prefix("wss://")
        .unwrap_or(&args.addr)
        .split_once('/')
    {
        Some((host, path)) => (host.to_string(), format!("/{path}")),
        None => (
            args.addr.trim_start_matches("wss://").to_string(),
            "/".to_string(),
        ),
    };
    match args.transport {
        Transport::Tcp => {
            let config = kim_tls::TlsClientConfig::with_root_pem(&pem, &[])?;
            let io = kim_tls::connect(&host, &args.tls_name, &config).await?;
            talk(kim_tcp::client_over(io, &opts), args).await
        }
        Transport::Ws => {
            let config = kim_tls::TlsClientConfig::with_root_pem(&pem, &[b"http/1.1"])?;
            let io = kim_tls::connect(&host, &args.tls_name, &config).await?;
            let client =
                kim_ws::client_over(io, &args.tls_name, &path, &[], compression.as_ref(), &opts)
                    .await?;
            talk(client, args).await
        }
    }
}

async fn talk<R: FrameReader, W: FrameWriter>(
    mut client: Client<R, W>,
    args: &Args,
) -> anyhow::Result<()> {
    let wait = Duration::try_from_secs_f64(args.timeout)?;
    let push_wait = Duration::try_from_secs_f64(args.push_wait)?;
    let ok = tokio::time::timeout(wait, client.login(args.id.clone()))
        .await
        .map_err(|_| anyhow::anyhow!("no answer to the login within {wait:?}"))??;
    println!("login: {}", text(&ok));
    let push_to = parse_push(args.message.as_bytes()).map(|(to, _)| to.to_string());
    for i in 1..=args.count {
        client.send_text(message(args, i)).await?;
        match &push_to {
            Some(to) => match tokio::time::timeout(push_wait, client.read()).await {
                Ok(answer) => println!("reply {i}: {}", text(&answer?)),
                Err(_) => println!("pushed {i}: to {to}"),
            },
            None => {
                let reply = tokio::time::timeout(wait, client.read())
                    .await
                    .map_err(|_| anyhow::anyhow!("no reply to message {i} within {wait:?}"))??;
                println!("reply {i}: {}", text(&reply));
            }
        }
    }
    if args.listen && listen(&mut client).await? == Listened::Closed {
        return Ok(());
    }
    client.close().await?;
    Ok(())
}

/// How listening ended.
#[derive(Debug, PartialEq, Eq)]
enum Listened {
    /// Ctrl-C or SIGTERM: the client closes.
    Interrupted,
    /// The gateway closed the connection.
    Closed,
}

/// Prints what arrives until Ctrl-C, SIGTERM or the end of the connection.
async fn listen<R: FrameReader, W: FrameWriter>(
    client: &mut Client<R, W>,
) -> anyhow::Result<Listened> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    println!("listening (Ctrl-C to stop)");
    loop {
        let frame = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(Listened::Interrupted),
            _ = term.recv() => return Ok(Listened::Interrupted),
            r = client.read() => r,
        };
        match frame {
            Ok(f) => println!("got: {}", text(&f)),
            Err(ClientError::Closed(reason)) => {
                println!("closed by the gateway: {reason}");
                return Ok(Listened::Closed);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn text(frame: &Frame) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&frame.payload)
}

/// Message `i` of `--count`: `--message` with `{n}` replaced by `i`.
fn message(args: &Args, i: usize) -> String {
    args.message.replace("{n}", &i.to_string())
}
