//! kim's benchmark tool. Every workload runs against a server in a separate process (the
//! open-files limit is per process, and the server's memory must be measured on its own).
//!
//! `parallel`: KIM's parallel login test. Starts `mock-server`, logs in N clients with at most
//! 50 logins in flight, and reports the login rate and the server's resident memory per idle
//! logged-in connection.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use kim_core::client::{Client, ClientError, ClientOptions};
use kim_core::{FrameReader, FrameWriter};
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
#[command(about = "kim's benchmarks: each runs the server as a separate process")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Log in many clients at once and measure the server's memory per connection.
    Parallel(ParallelArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    Tcp,
    Ws,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        }
    }
}

#[derive(Debug, clap::Args)]
struct ParallelArgs {
    /// The transport to measure.
    #[arg(long, value_enum, default_value = "ws")]
    transport: Transport,
    /// Clients to log in.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 50)]
    in_flight: usize,
    /// Seconds to hold the connections before checking they still echo.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// The mock-server binary (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Worker threads for the server.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
}

/// A server child process, killed when dropped.
struct ServerProcess {
    child: Child,
    addr: String,
}

impl ServerProcess {
    fn start(bin: &PathBuf, transport: &str, threads: usize) -> anyhow::Result<ServerProcess> {
        let mut child = Command::new(bin)
            .args(["--transport", transport, "--listen", "127.0.0.1:0"])
            .args(["--threads", &threads.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line from the server: {line:?}"))?
            .to_string();
        Ok(ServerProcess { child, addr })
    }

    /// Resident memory of the server process, in bytes (from /proc).
    fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .context("no VmRSS line")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb * 1024)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p kim-examples`, or pass --server-bin",
            path.display()
        );
    }
    Ok(path)
}

async fn parallel(args: ParallelArgs) -> anyhow::Result<()> {
    match args.transport {
        Transport::Tcp => {
            parallel_with(args, |addr, opts| async move {
                kim_tcp::connect(&addr, &opts).await
            })
            .await
        }
        Transport::Ws => {
            parallel_with(args, |addr, opts| async move {
                kim_ws::connect(&addr, &opts).await
            })
            .await
        }
    }
}

async fn parallel_with<R, W, F, Fut>(args: ParallelArgs, connect: F) -> anyhow::Result<()>
where
    R: FrameReader,
    W: FrameWriter,
    F: Fn(String, ClientOptions) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<Client<R, W>, ClientError>> + Send,
{
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => sibling_bin("mock-server")?,
    };
    let server = ServerProcess::start(&bin, args.transport.name(), args.server_threads)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = server.rss()?;
    let opts = ClientOptions {
        heartbeat: None,
        ..ClientOptions::default()
    };
    let gate = Arc::new(Semaphore::new(args.in_flight));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let gate = gate.clone();
        let addr = server.addr.clone();
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("semaphore open");
            let mut c = connect(addr, opts).await?;
            let ok = c.login(format!("user-{i}")).await?;
            drop(permit);
            anyhow::ensure!(&ok.payload[..] == b"ok", "unexpected login reply");
            Ok::<_, anyhow::Error>(c)
        }));
    }
    let mut clients = Vec::with_capacity(args.clients);
    let mut failures = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await? {
            Ok(c) => clients.push(c),
            Err(e) => {
                failures += 1;
                if failures <= 5 {
                    eprintln!("login {i} failed: {e:#}");
                }
            }
        }
        if (i + 1) % 1000 == 0 {
            eprintln!("  {} / {} logged in", i + 1, args.clients);
        }
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with = server.rss()?;
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;

    let mut echo_failures = 0;
    for c in clients.iter_mut() {
        let ok = async {
            c.send_text("ping").await?;
            let f = tokio::time::timeout(Duration::from_secs(10), c.read()).await??;
            anyhow::ensure!(&f.payload[..] == b"ping", "wrong echo");
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if ok.is_err() {
            echo_failures += 1;
        }
    }
    let n = clients.len();
    drop(clients);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss()?;

    let per_conn = rss_with.saturating_sub(rss_before) as f64 / n.max(1) as f64;
    println!("transport            {}", args.transport.name());
    println!("clients              {}", args.clients);
    println!("login failures       {failures}");
    println!("echo failures        {echo_failures}");
    println!("login time           {:.2} s", elapsed.as_secs_f64());
    println!(
        "logins per second    {:.0}",
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "server rss before    {:.1} MiB",
        rss_before as f64 / 1048576.0
    );
    println!(
        "server rss with all  {:.1} MiB",
        rss_with as f64 / 1048576.0
    );
    println!(
        "server rss after     {:.1} MiB",
        rss_after as f64 / 1048576.0
    );
    println!("bytes per connection {per_conn:.0}");
    if failures > 0 || echo_failures > 0 {
        bail!("{failures} logins and {echo_failures} echoes failed");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::Parallel(a) => parallel(a).await,
        }
    })
}
