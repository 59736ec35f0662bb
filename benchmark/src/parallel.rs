//! KIM's parallel login test, with the server's memory measured around it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use kim_core::client::{Client, ClientError, ClientOptions};
use kim_core::{FrameReader, FrameWriter};
use tokio::sync::Semaphore;

use crate::proc::ServerProcess;
use crate::wire::Wire;

/// What one parallel run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParallelResult {
    /// Clients logged in.
    pub clients: usize,
    /// Time to log them all in, in seconds.
    pub login_secs: f64,
    /// Logins per second.
    pub logins_per_sec: f64,
    /// Server CPU time (user + system) per login, in microseconds.
    pub server_cpu_us_per_login: f64,
    /// Server resident memory before the logins, in bytes.
    pub rss_before: u64,
    /// With every client connected and idle.
    pub rss_with_all: u64,
    /// After every client closed and the ids were reused once.
    pub rss_after: u64,
    /// (rss_with_all - rss_before) / clients.
    pub bytes_per_conn: f64,
}

/// Logs in `clients` clients with at most `in_flight` logins at once, holds them `hold`,
/// checks each still echoes, closes them all, then checks that every id can log in again (the
/// server kept no channel behind) and reads the server's memory after.
pub async fn run(
    server: &ServerProcess,
    wire: Wire,
    clients: usize,
    in_flight: usize,
    hold: Duration,
) -> anyhow::Result<ParallelResult> {
    match wire {
        Wire::Ws => {
            run_with(server, clients, in_flight, hold, |addr, opts| async move {
                kim_ws::connect(&addr, &opts).await
            })
            .await
        }
        Wire::Tcp => {
            run_with(server, clients, in_flight, hold, |addr, opts| async move {
                kim_tcp::connect(&addr, &opts).await
            })
            .await
        }
    }
}

async fn login_all<R, W, F, Fut>(
    addr: &str,
    clients: usize,
    in_flight: usize,
    connect: F,
    what: &str,
    patience: Duration,
) -> anyhow::Result<Vec<Client<R, W>>>
where
    R: FrameReader,
    W: FrameWriter,
    F: Fn(String, ClientOptions) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<Client<R, W>, ClientError>> + Send,
{
    let opts = ClientOptions {
        heartbeat: None,
        connect_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    let gate = Arc::new(Semaphore::new(in_flight));
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let gate = gate.clone();
        let addr = addr.to_string();
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("semaphore open");
            // A duplicate refusal is retried until `patience` runs out: a channel closed a
            // moment ago may still be leaving the server's map.
            let deadline = Instant::now() + patience;
            let c = loop {
                let mut c = connect(addr.clone(), opts.clone()).await?;
                match c.login(format!("user-{i}")).await {
                    Ok(ok) => {
                        anyhow::ensure!(&ok.payload[..] == b"ok", "unexpected login reply");
                        break c;
                    }
                    Err(ClientError::Closed(r))
                        if r.reason == "channel id is repeated" && Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            drop(permit);
            Ok::<_, anyhow::Error>(c)
        }));
    }
    let pb = indicatif::ProgressBar::new(clients as u64);
    pb.set_message(what.to_string());
    let mut out = Vec::with_capacity(clients);
    let mut failures = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await? {
            Ok(c) => out.push(c),
            Err(e) => failures.push(format!("login {i}: {e:#}")),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if !failures.is_empty() {
        bail!(
            "{} of {clients} logins failed; first: {}",
            failures.len(),
            failures[0]
        );
    }
    Ok(out)
}

async fn run_with<R, W, F, Fut>(
    server: &ServerProcess,
    clients: usize,
    in_flight: usize,
    hold: Duration,
    connect: F,
) -> anyhow::Result<ParallelResult>
where
    R: FrameReader,
    W: FrameWriter,
    F: Fn(String, ClientOptions) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<Client<R, W>, ClientError>> + Send,
{
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = server.rss()?;
    let cpu_before = server.cpu_seconds()?;
    let started = Instant::now();
    let mut all = login_all(
        &server.addr,
        clients,
        in_flight,
        connect,
        "logging in",
        Duration::ZERO,
    )
    .await?;
    let login_secs = started.elapsed().as_secs_f64();
    let login_cpu = server.cpu_seconds()? - cpu_before;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with_all = server.rss()?;
    tokio::time::sleep(hold).await;

    let mut echo_failures = 0;
    for c in all.iter_mut() {
        let ok = async {
            c.send_text("still there?").await?;
            let f = tokio::time::timeout(Duration::from_secs(10), c.read()).await??;
            anyhow::ensure!(&f.payload[..] == b"still there?", "wrong echo");
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if ok.is_err() {
            echo_failures += 1;
        }
    }
    if echo_failures > 0 {
        bail!("{echo_failures} of {clients} held connections no longer echo");
    }
    let closing: Vec<_> = all
        .into_iter()
        .map(|c| tokio::spawn(async move { c.close().await }))
        .collect();
    for t in closing {
        t.await??;
    }
    // Every id logs in again: a channel the server kept would refuse it as a duplicate.
    let again = login_all(
        &server.addr,
        clients,
        in_flight,
        connect,
        "logging in again",
        Duration::from_secs(2),
    )
    .await?;
    drop(again);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss()?;
    Ok(ParallelResult {
        clients,
        login_secs,
        logins_per_sec: clients as f64 / login_secs,
        server_cpu_us_per_login: login_cpu * 1e6 / clients as f64,
        rss_before,
        rss_with_all,
        rss_after,
        bytes_per_conn: rss_with_all.saturating_sub(rss_before) as f64 / clients as f64,
    })
}
