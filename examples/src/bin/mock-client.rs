//! A mock-protocol client: logs in, sends N messages, prints every reply.
//!
//! `mock-client --addr 127.0.0.1:8000 --id alice --count 3 --message hello`

use std::time::Duration;

use clap::Parser;
use kim_core::client::{Client, ClientOptions};
use kim_core::{FrameReader, FrameWriter};
use kim_examples::{init_tracing, Transport};

#[derive(Debug, Parser)]
#[command(about = "log in to a mock gateway, send messages, print the replies")]
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
    /// The text to send (`@bob hi` pushes to bob).
    #[arg(long, default_value = "hello")]
    message: String,
    /// Seconds to wait for each reply.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing();
    let opts = ClientOptions::default();
    match args.transport {
        Transport::Tcp => talk(kim_tcp::connect(&args.addr, &opts).await?, &args).await,
        Transport::Ws => talk(kim_ws::connect(&args.addr, &opts).await?, &args).await,
    }
}

async fn talk<R: FrameReader, W: FrameWriter>(
    mut client: Client<R, W>,
    args: &Args,
) -> anyhow::Result<()> {
    let wait = Duration::try_from_secs_f64(args.timeout)?;
    let ok = tokio::time::timeout(wait, client.login(args.id.clone())).await??;
    println!("login: {}", String::from_utf8_lossy(&ok.payload));
    for i in 0..args.count {
        client.send_text(args.message.clone()).await?;
        let reply = tokio::time::timeout(wait, client.read())
            .await
            .map_err(|_| anyhow::anyhow!("no reply to message {} within {:?}", i + 1, wait))??;
        println!(
            "reply {}: {}",
            i + 1,
            String::from_utf8_lossy(&reply.payload)
        );
    }
    client.close().await?;
    Ok(())
}
