//! A plain echo server: no login (every connection gets a fresh id), every text or binary
//! message echoed with its opcode. Standard websocket tools (load generators, conformance
//! suites, browsers) can drive it.
//!
//! `echo-server --transport ws --listen 127.0.0.1:9001`

use clap::Parser;
use kim_core::DefaultAcceptor;
use kim_examples::{init_tracing, serve, EchoListener, LogState, ServerArgs};

#[derive(Debug, Parser)]
#[command(about = "kim's echo server: no login, every message echoed")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing();
    let rt = args.server.runtime()?;
    rt.block_on(serve(&args.server, DefaultAcceptor, EchoListener, LogState))
}
