//! A plain echo server: no login (every connection gets a fresh id), every text or binary
//! message echoed with its opcode. Standard websocket tools (load generators, conformance
//! suites, browsers) can drive it.
//!
//! `echo-server --transport ws --listen 127.0.0.1:9001`
//!
//! With `--broadcast`, every connection joins one room when it opens and every message is
//! published to that room, the sender included, with its opcode: N clients that each send
//! one message each receive N.

use clap::Parser;
use kim_core::DefaultAcceptor;
use kim_examples::{
    init_tracing, install_allocator, serve, BroadcastListener, EchoListener, JoinBroadcast,
    LogState, ServerArgs,
};

#[derive(Debug, Parser)]
#[command(about = "kim's echo server: no login, every message echoed")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Publish every message to a room all connections are in, instead of echoing it.
    #[arg(long)]
    broadcast: bool,
}

fn main() -> anyhow::Result<()> {
    install_allocator();
    let args = Args::parse();
    init_tracing();
    let rt = args.server.runtime()?;
    if args.broadcast {
        rt.block_on(serve(
            &args.server,
            DefaultAcceptor,
            BroadcastListener,
            JoinBroadcast,
        ))
    } else {
        rt.block_on(serve(&args.server, DefaultAcceptor, EchoListener, LogState))
    }
}
