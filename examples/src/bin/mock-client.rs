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
//! With `--session` the client keeps a session (the mock protocol's `<id> session`): what
//! arrives is numbered, acknowledged every 32 messages and after a second of quiet, and when
//! the connection is lost without a close from the gateway, the client resumes the session by
//! itself (`<id> resume <token> <last>`), retrying with a growing pause.

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

/// A session as the client keeps it across connections.
#[derive(Debug, Default)]
struct SessionState {
    /// Its token, once the gateway gave one.
    token: Option<String>,
    /// The last number received.
    last: u64,
    /// Received and not yet acknowledged.
    unacked: u64,
    /// Messages of `--count` sent so far (a resumed connection sends the rest).
    sent: usize,
}

impl SessionState {
    /// The login frame: begins the session, or resumes it.
    fn login(&self, id: &str) -> String {
        match &self.token {
            Some(token) => format!("{id} resume {token} {}", self.last),
            None => format!("{id} session"),
        }
    }

    /// Reads the login's answer (`ok <token>`, `resumed <token> <n>`, `new <token>`).
    fn opened(&mut self, answer: &str) -> anyhow::Result<()> {
        let mut words = answer.split(' ');
        match (words.next(), words.next()) {
            (Some("ok" | "resumed"), Some(token)) => self.token = Some(token.to_string()),
            (Some("new"), Some(token)) => {
                println!("session new: what was held is gone");
                self.token = Some(token.to_string());
                self.last = 0;
                self.unacked = 0;
            }
            _ => anyhow::bail!("not a session's answer: {answer}"),
        }
        Ok(())
    }

    /// A numbered frame arrived: its text, after checking its number follows the last.
    fn received<'a>(&mut self, frame: &'a Frame) -> anyhow::Result<std::borrow::Cow<'a, str>> {
        let Some((seq, text)) = kim_examples::sessions::parse_numbered(&frame.payload) else {
            anyhow::bail!(
                "not a numbered frame: {}",
                String::from_utf8_lossy(&frame.payload)
            );
        };
        if seq != self.last + 1 {
            anyhow::bail!("message {seq} after {}", self.last);
        }
        self.last = seq;
        self.unacked += 1;
        Ok(String::from_utf8_lossy(text))
    }
}

/// Acknowledges what arrived, if anything did since the last acknowledgement.
async fn ack<R: FrameReader, W: FrameWriter>(
    client: &Client<R, W>,
    session: &mut Option<SessionState>,
) -> anyhow::Result<()> {
    if let Some(s) = session.as_mut().filter(|s| s.unacked > 0) {
        client.send_text(format!("/ack {}", s.last)).await?;
        s.unacked = 0;
    }
    Ok(())
}

/// A frame as printed: its text, without its number in a session.
fn shown(
    frame: &Frame,
    session: &mut Option<SessionState>,
) -> anyhow::Result<(String, Option<u64>)> {
    match session {
        Some(s) => {
            let text = s.received(frame)?.into_owned();
            Ok((text, Some(s.last)))
        }
        None => Ok((text(frame).into_owned(), None)),
    }
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
    let mut session = args.session.then(SessionState::default);
    let mut pause = Duration::from_millis(100);
    loop {
        match connect_and_talk(args, &mut session).await {
            Ok(()) => return Ok(()),
            // A connection lost (not closed by the gateway): resume the session.
            Err(e)
                if session.as_ref().is_some_and(|s| s.token.is_some())
                    && !matches!(e.downcast_ref(), Some(ClientError::Closed(_))) =>
            {
                println!("connection lost ({e:#}); resuming in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn connect_and_talk(args: &Args, session: &mut Option<SessionState>) -> anyhow::Result<()> {
    let opts = ClientOptions::default();
    let compression = args.deflate.then(kim_ws::Compression::new);
    let Some(root) = &args.tls_root else {
        return match (args.transport, &compression) {
            (Transport::Tcp, _) => {
                talk(kim_tcp::connect(&args.addr, &opts).await?, args, session).await
            }
            (Transport::Ws, None) => {
                talk(kim_ws::connect(&args.addr, &opts).await?, args, session).await
            }
            (Transport::Ws, Some(c)) => {
                let client = kim_ws::connect_compressed(&args.addr, &[], c, &opts).await?;
                talk(client, args, session).await
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
            talk(kim_tcp::client_over(io, &opts), args, session).await
        }
        Transport::Ws => {
            let config = kim_tls::TlsClientConfig::with_root_pem(&pem, &[b"http/1.1"])?;
            let io = kim_tls::connect(&host, &args.tls_name, &config).await?;
            let client =
                kim_ws::client_over(io, &args.tls_name, &path, &[], compression.as_ref(), &opts)
                    .await?;
            talk(client, args, session).await
        }
    }
}

async fn talk<R: FrameReader, W: FrameWriter>(
    mut client: Client<R, W>,
    args: &Args,
    session: &mut Option<SessionState>,
) -> anyhow::Result<()> {
    let wait = Duration::try_from_secs_f64(args.timeout)?;
    let push_wait = Duration::try_from_secs_f64(args.push_wait)?;
    let credentials = match session {
        Some(s) => s.login(&args.id),
        None => args.id.clone(),
    };
    let ok = tokio::time::timeout(wait, client.login(credentials))
        .await
        .map_err(|_| anyhow::anyhow!("no answer to the login within {wait:?}"))??;
    println!("login: {}", text(&ok));
    if let Some(s) = session.as_mut() {
        s.opened(&text(&ok))?;
    }
    let push_to = parse_push(args.message.as_bytes()).map(|(to, _)| to.to_string());
    let first = session.as_ref().map_or(0, |s| s.sent) + 1;
    for i in first..=args.count {
        client
            .send_text(args.message.replace("{n}", &i.to_string()))
            .await?;
        if let Some(s) = session.as_mut() {
            s.sent = i;
        }
        match &push_to {
            Some(to) => match tokio::time::timeout(push_wait, client.read()).await {
                Ok(answer) => println!("reply {i}: {}", shown(&answer?, session)?.0),
                Err(_) => println!("pushed {i}: to {to}"),
            },
            None => {
                let reply = tokio::time::timeout(wait, client.read())
                    .await
                    .map_err(|_| anyhow::anyhow!("no reply to message {i} within {wait:?}"))??;
                println!("reply {i}: {}", shown(&reply, session)?.0);
            }
        }
    }
    ack(&client, session).await?;
    if args.listen && listen(&mut client, session).await? == Listened::Closed {
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

/// Prints what arrives until Ctrl-C, SIGTERM or the end of the connection. In a session,
/// acknowledges every 32 messages and after a second without any.
async fn listen<R: FrameReader, W: FrameWriter>(
    client: &mut Client<R, W>,
    session: &mut Option<SessionState>,
) -> anyhow::Result<Listened> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    println!("listening (Ctrl-C to stop)");
    loop {
        let frame = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(Listened::Interrupted),
            _ = term.recv() => return Ok(Listened::Interrupted),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                ack(client, session).await?;
                continue;
            }
            r = client.read() => r,
        };
        match frame {
            Ok(f) => {
                match shown(&f, session)? {
                    (text, Some(seq)) => println!("got {seq}: {text}"),
                    (text, None) => println!("got: {text}"),
                }
                if session.as_ref().is_some_and(|s| s.unacked >= 32) {
                    ack(client, session).await?;
                }
            }
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
