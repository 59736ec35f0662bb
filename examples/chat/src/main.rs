//! kim's chat example: a web page and a websocket gateway for a small multi-user chat with
//! rooms, direct messages, presence and history.
//!
//! `cargo run --release -p kim-chat` and open <http://127.0.0.1:8080/> in two browser tabs.
//!
//! - `web`: the page and `POST /api/token` (signed tokens for a user name; `token`).
//! - the gateway: the upgrade hook checks `/ws?token=...`, refusing a missing, forged or
//!   expired token with 401 and the reason; `chat` implements kim's traits; `protocol` is the
//!   JSON schema; `store` the SQLite database.
//! - `--cluster nats://...` makes several chat processes one chat (sharing `--db`), `--tls-cert`
//!   and `--tls-key` serve the page over HTTPS and the gateway over wss, and permessage-deflate
//!   is on unless `--no-deflate`.

mod chat;
mod protocol;
mod store;
mod token;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{CommandFactory, FromArgMatches, Parser};
use kim_examples::{init_tracing, serve_with, ServerArgs, Started, Transport};
use kim_ws::Refusal;

use crate::chat::{Chat, ChatLogin, User};
use crate::store::Store;
use crate::token::Tokens;

#[derive(Debug, Parser)]
#[command(about = "A multi-user chat on kim: open the page it prints in a browser")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Where the page is served (`GET /`) and tokens are issued (`POST /api/token`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// The SQLite database: history, memberships, messages for offline users, who is online,
    /// and the token secret. Processes of one cluster on one machine share it.
    #[arg(long, default_value = "chat.db")]
    db: PathBuf,
    /// The secret tokens are signed with (default: one made at random and kept in `--db`).
    #[arg(long)]
    secret: Option<String>,
    /// Seconds a token stays valid.
    #[arg(long, default_value_t = 86_400)]
    token_ttl: u64,
    /// Messages of a room's history shown on joining it.
    #[arg(long, default_value_t = 50)]
    history: usize,
    /// Do not accept permessage-deflate (on by default: browsers offer it).
    #[arg(long)]
    no_deflate: bool,
    /// The websocket port the page connects to, where a proxy or load balancer stands in
    /// front of the gateway (default: the gateway's own).
    #[arg(long)]
    public_ws_port: Option<u16>,
}

fn main() -> anyhow::Result<()> {
    // The chat is a websocket gateway: the shared `--transport` flag is hidden, and `ws`.
    let matches = Args::command()
        .mut_arg("transport", |a| a.default_value("ws").hide(true))
        .get_matches();
    let mut args = Args::from_arg_matches(&matches)?;
    // jemalloc, with its heap profiler on for /debug/pprof/heap under the default
    // heap-profile feature (the chat's own: kim-examples' would reach its servers too).
    #[cfg(feature = "heap-profile")]
    kim_heap_profile::install_with_profiler();
    #[cfg(not(feature = "heap-profile"))]
    kim_heap_profile::install();
    if args.server.transport != Transport::Ws {
        anyhow::bail!("the chat serves websocket only");
    }
    args.server.deflate |= !args.no_deflate;
    // A reload of the page replaces the tab's connection rather than being refused.
    args.server.kick = true;
    init_tracing();

    let store = Store::open(&args.db)?;
    let node = args.server.node.clone().unwrap_or_else(|| "local".into());
    // Whoever this node had online before a crash is gone: forgotten by the process that
    // serves, before it listens (a worker process, started or restarted later, never does).
    let forget = {
        let (store, node) = (store.clone(), node.clone());
        async move { store.forget_node(&node).map(drop) }
    };
    let secret = match &args.secret {
        Some(s) => s.as_bytes().to_vec(),
        None => store.secret()?,
    };
    let tokens = Tokens::new(&secret, Duration::from_secs(args.token_ttl));
    let check = tokens.clone();
    let ws = args.server.ws_upgrader().with_hook(move |handshake| {
        if handshake.path.split('?').next() != Some("/ws") {
            return Err(Refusal::new(
                404,
                "the chat's websocket is at /ws?token=...",
            ));
        }
        let Some(token) = handshake.query("token") else {
            return Err(Refusal::new(401, "no token: get one with POST /api/token"));
        };
        let user = check
            .verify(token, SystemTime::now())
            .map_err(|e| Refusal::new(401, e.to_string()))?;
        handshake.extensions.insert(User(user));
        Ok(())
    });
    let chat = Chat::new(store, node, args.history);
    let rt = args.server.runtime()?;
    let http_listen = args.http_listen;
    let public_ws_port = args.public_ws_port;
    let start_page = move |started: &Started<'_>| {
        let port = public_ws_port.unwrap_or_else(|| started.handle.local_addr().port());
        let web = web::Web::new(tokens, port, started.tls.is_some());
        let addr = web.start(http_listen, started.tls)?;
        let scheme = if started.tls.is_some() {
            "https"
        } else {
            "http"
        };
        println!("chat page at {scheme}://{addr}/");
        Ok(())
    };
    rt.block_on(serve_with(
        &args.server,
        ws,
        ChatLogin,
        chat.clone(),
        chat,
        kim_core::DefaultCodec,
        forget,
        start_page,
    ))
}
