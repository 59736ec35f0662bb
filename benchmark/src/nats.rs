//! NATS itself, for the `cluster` benchmark: a nats-server process (the broker kim's cluster
//! runs on), and the broker's bare request round trip, measured with the client library kim's
//! cluster uses, as the anchor a cross-node push is judged against.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;

use crate::latency::Histogram;
use crate::proc::{cpu_of, pin_command};

/// Where nats-server is: `explicit` (the command line), else `$NATS_SERVER`, else the one
/// `scripts/nats-server` installs under cargo's target directory, else `nats-server` on
/// `PATH`.
pub fn find_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    // This binary is `<target>/release/kim-benchmark` (a test's, `<target>/debug/deps/...`):
    // the script installs into `<target>/nats-venv`.
    let beside_build = std::env::current_exe().ok().and_then(|me| {
        me.ancestors()
            .map(|dir| dir.join("nats-venv/bin/nats-server"))
            .find(|p| p.is_file())
    });
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    beside_build.filter(|p| p.is_file()).or(on_path).context(
        "nats-server not found: `./scripts/nats-server` installs one (2.10 or newer) and \
             prints its path; pass it with --nats-server or NATS_SERVER",
    )
}

/// A nats-server on a free port of 127.0.0.1, JetStream on (kim's claims live in its
/// key-value store) in a directory of its own; killed, and its store removed, when dropped.
pub struct NatsServer {
    child: Child,
    /// The port it serves clients on.
    pub port: u16,
    store: PathBuf,
}

impl NatsServer {
    /// Starts `bin`, pinned to `pin` if given, and waits until it takes connections.
    pub fn start(bin: &Path, pin: Option<usize>) -> anyhow::Result<NatsServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let store =
            std::env::temp_dir().join(format!("kim-benchmark-nats-{}-{port}", std::process::id()));
        let mut cmd = Command::new(bin);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(cpu) = pin {
            pin_command(&mut cmd, cpu);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let server = NatsServer { child, port, store };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!(
                    "{} did not listen on port {port} within 10 s",
                    bin.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// The URL its clients connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// CPU time it used so far, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_of(self.child.id())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// The broker's bare request round trip, one request in flight.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RequestResult {
    /// Requests answered per second.
    pub requests_per_sec: f64,
    /// Median round trip, microseconds.
    pub p50_us: f64,
    /// 99th percentile round trip, microseconds.
    pub p99_us: f64,
}

/// Requests on one connection answered by a subscriber on another, both to the server at
/// `url`, one at a time: `warmup` unmeasured, then `duration` measured. The payload is as
/// large as a small push.
pub async fn requests(
    url: &str,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<RequestResult> {
    let responder = async_nats::connect(url).await?;
    let requester = async_nats::connect(url).await?;
    let mut requests = responder.subscribe("kim-benchmark.echo").await?;
    responder.flush().await?;
    let answering = tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(reply) = m.reply {
                if responder.publish(reply, m.payload).await.is_err() {
                    break;
                }
            }
        }
    });
    let payload = bytes::Bytes::from(vec![b'p'; 32]);
    // The subscription was made on another connection: requests find nobody until the
    // server has it.
    let asked = Instant::now();
    while let Err(e) = requester
        .request("kim-benchmark.echo", payload.clone())
        .await
    {
        if e.kind() != async_nats::RequestErrorKind::NoResponders
            || asked.elapsed() > Duration::from_secs(5)
        {
            return Err(e).context("a request to the benchmark's own responder");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let mut histogram = Histogram::new();
    let mut measured = 0u64;
    let mut window_start = None;
    while started.elapsed() < warmup + duration {
        let sent = Instant::now();
        requester
            .request("kim-benchmark.echo", payload.clone())
            .await
            .context("a request to the benchmark's own responder")?;
        if started.elapsed() >= warmup {
            window_start.get_or_insert_with(Instant::now);
            histogram.record(sent.elapsed());
            measured += 1;
        }
    }
    answering.abort();
    let secs = window_start.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok(RequestResult {
        requests_per_sec: measured as f64 / secs.max(1e-9),
        p50_us: histogram.percentile(0.50),
        p99_us: histogram.percentile(0.99),
    })
}
