//! The mock gateway: the mock protocol (see the crate docs) over tcp or websocket.
//!
//! `mock-server --transport ws --listen 127.0.0.1:8000`

use clap::Parser;
use kim_examples::{init_tracing, serve, LogState, MockAcceptor, MockListener, ServerArgs};

#[derive(Debug, Parser)]
#[command(about = "kim's mock gateway: login with a user id, echo, and @<id> pushes")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing();
    let rt = args.server.runtime()?;
    rt.block_on(serve(&args.server, MockAcceptor, MockListener, LogState))
}
