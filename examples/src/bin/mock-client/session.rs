//! `--session`: the mock protocol's sessions through kim-client's `SessionClient`, over any
//! of mock-client's transports. Prints `login: ok <token>` (or `resumed <token> <n>`, `new
//! <token>`) at each login, `got <seq>: <text>` for each message; with `--listen` it stays
//! until interrupted, otherwise it stops once `--count` replies came (or, for pushes, once
//! `--push-wait` passed without an answer).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kim_client::{
    Client, ClientError, ClientOptions, Event, How, Login, SessionClient, SessionOptions,
};
use kim_core::{Frame, FrameReader, FrameWriter};
use kim_examples::parse_push;
use kim_examples::sessions::MockClientEncoding;
use tokio::signal::unix::{signal, SignalKind};

use crate::{message, text, Args};

/// Starts a session client whose every connection is made by `connect` and logged in with
/// the mock protocol's session forms.
fn start<F, Fut, R, W>(args: &Args, connect: F) -> SessionClient
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Client<R, W>, ClientError>> + Send,
    R: FrameReader,
    W: FrameWriter,
{
    let id = args.id.clone();
    let options = SessionOptions {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        ..SessionOptions::default()
    };
    let dial = move |login: Login| {
        let login = match login {
            Login::Start => format!("{id} session"),
            Login::Resume { token, last } => format!("{id} resume {token} {last}"),
        };
        let connecting = connect();
        async move {
            let client = connecting.await?;
            // Through a sender: a `&Client` held across the send would need a `Sync` reader.
            client.sender().send(Frame::text(login)).await?;
            Ok(client)
        }
    };
    SessionClient::start(dial, MockClientEncoding, options)
}

/// A session client over the transport the flags choose.
fn session_client(args: &Args) -> anyhow::Result<SessionClient> {
    let opts = ClientOptions::default();
    let addr = args.addr.clone();
    let compression = args.deflate.then(kim_ws::Compression::new);
    let Some(root) = &args.tls_root else {
        return Ok(match (args.transport, compression) {
            (kim_examples::Transport::Tcp, _) => start(args, move || {
                let (addr, opts) = (addr.clone(), opts.clone());
                async move { kim_tcp::connect(&addr, &opts).await }
            }),
            (kim_examples::Transport::Ws, None) => start(args, move || {
                let (addr, opts) = (addr.clone(), opts.clone());
                async move { kim_ws::connect(&addr, &opts).await }
            }),
            (kim_examples::Transport::Ws, Some(c)) => start(args, move || {
                let (addr, opts) = (addr.clone(), opts.clone());
                async move { kim_ws::connect_compressed(&addr, &[], &c, &opts).await }
            }),
        });
    };
    let pem =
        std::fs::read(root).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", root.display()))?;
    let bare = args.addr.strip_prefix("wss://").unwrap_or(&args.addr);
    let (host, path) = match bare.split_once('/') {
        Some((host, path)) => (host.to_string(), format!("/{path}")),
        None => (bare.to_string(), "/".to_string()),
    };
    let name = args.tls_name.clone();
    Ok(match args.transport {
        kim_examples::Transport::Tcp => {
            let config = Arc::new(kim_tls::TlsClientConfig::with_root_pem(&pem, &[])?);
            start(args, move || {
                let (host, name, config, opts) =
                    (host.clone(), name.clone(), config.clone(), opts.clone());
                async move {
                    let io = kim_tls::connect(&host, &name, &config).await?;
                    Ok(kim_tcp::client_over(io, &opts))
                }
            })
        }
        kim_examples::Transport::Ws => {
            let config = Arc::new(kim_tls::TlsClientConfig::with_root_pem(
                &pem,
                &[b"http/1.1"],
            )?);
            start(args, move || {
                let (host, name, path, config, opts, c) = (
                    host.clone(),
                    name.clone(),
                    path.clone(),
                    config.clone(),
                    opts.clone(),
                    compression,
                );
                async move {
                    let io = kim_tls::connect(&host, &name, &config).await?;
                    kim_ws::client_over(io, &name, &path, &[], c.as_ref(), &opts).await
                }
            })
        }
    })
}

/// Runs `--session` (see the module's docs).
pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let mut client = session_client(args)?;
    let wait = Duration::try_from_secs_f64(args.timeout)?;
    let push_wait = Duration::try_from_secs_f64(args.push_wait)?;
    let pushing = parse_push(args.message.as_bytes()).is_some();
    let mut term = signal(SignalKind::terminate())?;
    let (mut sent, mut replies) = (false, 0usize);
    loop {
        // Without --listen, the client stops once every reply came, or a wait passed.
        let quiet = if !sent {
            wait
        } else if pushing {
            push_wait
        } else {
            wait
        };
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            e = tokio::time::timeout(quiet, client.next()) => match e {
                Ok(e) => e,
                Err(_) if !args.listen && sent && pushing => break,
                Err(_) if args.listen && sent => continue,
                Err(_) if sent => anyhow::bail!("no reply within {wait:?}"),
                Err(_) => anyhow::bail!("no answer to the login within {wait:?}"),
            },
        };
        let Some(event) = event else { return Ok(()) };
        match event {
            Event::Session { how, token, replay } => {
                match how {
                    How::Started => println!("login: ok {token}"),
                    How::Resumed => println!("login: resumed {token} {replay}"),
                    How::New => {
                        println!("login: new {token}");
                        println!("session new: what was held is gone");
                    }
                }
                if !sent {
                    sent = true;
                    for i in 1..=args.count {
                        client.send(Frame::text(message(args, i)))?;
                    }
                    if args.listen && (args.count == 0 || pushing) {
                        println!("listening (Ctrl-C to stop)");
                    }
                    if !args.listen && args.count == 0 {
                        break;
                    }
                }
            }
            Event::Message { seq, frame } => {
                println!("got {seq}: {}", text(&frame));
                replies += 1;
                if !pushing && replies == args.count {
                    if !args.listen {
                        break;
                    }
                    println!("listening (Ctrl-C to stop)");
                }
            }
            Event::Reply(frame) => println!("got: {}", text(&frame)),
            Event::Lost(why) => println!("connection lost ({why}); resuming"),
            Event::Reconnecting { delay, .. } => println!("reconnecting in {delay:?}"),
            Event::Refused(why) => anyhow::bail!("login refused: {why}"),
            Event::Closed {
                reason: Some(reason),
                by_server: true,
            } => {
                println!("closed by the gateway: {reason}");
                return Ok(());
            }
            Event::Closed { .. } => return Ok(()),
            Event::Acked(_) => {}
        }
    }
    client.close().await;
    Ok(())
}
