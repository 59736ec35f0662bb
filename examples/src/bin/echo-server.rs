//! A plain echo server: no login (every connection gets a fresh id), every text or binary
//! message echoed with its opcode. Standard websocket tools can drive it.
//!
//! `echo-server --transport tcp --listen 127.0.0.1:9000`

use clap::Parser;
use kim_examples::{init_tracing, shutdown_signal, EchoListener, LogState};

#[derive(Debug, Parser)]
#[command(about = "kim's echo server: no login, every message echoed")]
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
                kim_core::DefaultServer::new(kim_tcp::TcpUpgrader, EchoListener)
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
