//! The mock gateway: the mock protocol (see the crate docs) over tcp or websocket.
//!
//! `mock-server --transport ws --listen 127.0.0.1:8000`

use clap::Parser;
use kim_examples::{
    init_tracing, install_allocator, serve, LogState, MockAcceptor, MockListener, Presence,
    ServerArgs,
};

#[derive(Debug, Parser)]
#[command(about = "kim's mock gateway: login with a user id, echo, and @<id> pushes")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Tell every other channel `<id> joined` and `<id> left` (text frames) as channels log in
    /// and go.
    #[arg(long)]
    presence: bool,
}

fn main() -> anyhow::Result<()> {
    install_allocator();
    let args = Args::parse();
    init_tracing();
    let rt = args.server.runtime()?;
    if args.presence {
        rt.block_on(serve(&args.server, MockAcceptor, MockListener, Presence))
    } else {
        rt.block_on(serve(&args.server, MockAcceptor, MockListener, LogState))
    }
}
