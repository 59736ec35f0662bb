//! The mock gateway: the mock protocol (see the crate docs) over tcp or websocket.
//!
//! `mock-server --transport tcp --listen 127.0.0.1:8000`

use clap::Parser;
use kim_examples::{init_tracing, shutdown_signal, LogState, MockAcceptor, MockListener};

#[derive(Debug, Parser)]
#[command(about = "kim's mock gateway: login with a user id, echo, and @<id> pushes")]
struct Args {
    #[command(flatten)]
    server: kim_examples::ServerArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing();
    let options = args.server.options()?;
    args.server.runtime()?.block_on(async move {
        let server = match args.server.transport {
            kim_examples::Transport::Tcp => {
                kim_core::DefaultServer::new(kim_tcp::TcpUpgrader, MockListener)
                    .with_acceptor(MockAcceptor)
                    .with_state_listener(LogState)
                    .with_options(options)
            }
            kim_examples::Transport::Ws => {
                anyhow::bail!(
                    "the ws transport is not available in this build yet; use --transport tcp"
                )
            }
        };
        let handle = server.start(args.server.listen.as_str()).await?;
        println!("listening on {}", handle.local_addr());
        shutdown_signal().await;
        let wait = std::time::Duration::from_secs_f64(args.server.shutdown_wait);
        let report = handle.shutdown(wait).await;
        println!(
            "shut down: {} channels closed, {} forced",
            report.channels, report.forced
        );
        Ok(())
    })
}
