//! Slow consumers in bursts: what a server's memory does when clients that never read are
//! flooded with pushes, round after round.
//!
//! Each round logs in `consumers` clients that never read, and one pusher that sends
//! `@slow<i> <payload>` (the mock protocol's push) to them in turn as fast as the server takes
//! it, for a fixed time: every consumer's socket buffers and then its outbox fill, and the
//! pushes past that are refused. The consumers then disconnect, and once the server has
//! closed their channels and `settle` has passed (the server's sweeper checks the heap once a
//! second and trims at most every 10 s) the round is measured: resident memory, and the heap in use and the
//! free heap the allocator kept (`kim_heap_bytes` from the server's `/metrics`). A server that
//! retains nothing comes back to the same heap in use after every round; resident memory above
//! that is the allocator's.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::proc::ServerProcess;
use crate::wire::{login, Wire};

/// The shape of a run.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Clients that never read, per round.
    pub consumers: usize,
    /// Rounds per server.
    pub rounds: usize,
    /// How long each round pushes.
    pub flood: Duration,
    /// Payload bytes per push.
    pub payload: usize,
    /// Time between the last channel closing and the measurement.
    pub settle: Duration,
}

/// What one round left behind.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Round {
    /// Pushes the pusher sent.
    pub pushes: u64,
    /// The highest resident memory seen during the flood, in bytes.
    pub peak_rss: u64,
    /// Resident memory once the consumers' channels are closed, in bytes.
    pub rss_after: u64,
    /// Heap in use then, in bytes (`None` where the server's allocator does not say).
    pub heap_in_use: Option<u64>,
    /// Free heap the allocator kept then, in bytes.
    pub heap_free: Option<u64>,
}

/// The value of the sample `series` (name and labels, as in the text format) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The server's heap in use and free heap, in bytes, from its `/metrics` (`kim_heap_bytes`;
/// `None` where the server does not report them).
pub fn heap(debug: &str) -> anyhow::Result<(Option<u64>, Option<u64>)> {
    let text = crate::prometheus::get(debug, "/metrics", Duration::from_secs(10))?;
    let v = |state: &str| {
        sample(&text, &format!("kim_heap_bytes{{state=\"{state}\"}}")).map(|v| v as u64)
    };
    Ok((v("in_use"), v("free")))
}

/// Waits until the server has `n` channels, at most `wait`.
fn wait_channels(debug: &str, n: f64, wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let text = crate::prometheus::get(debug, "/metrics", Duration::from_secs(10))?;
        let now = sample(&text, "kim_channels").unwrap_or(f64::NAN);
        if now == n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server still has {now} channels after {wait:?}, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs one round against `server` (whose debug listener is at `debug`), measuring
/// `config.settle` after the last channel closed.
pub fn round(
    server: &ServerProcess,
    debug: &str,
    wire: Wire,
    config: &Config,
) -> anyhow::Result<Round> {
    let Config {
        consumers,
        flood,
        payload,
        settle,
        ..
    } = *config;
    let addr = &server.addr;
    let mut slow = Vec::with_capacity(consumers);
    for i in 0..consumers {
        slow.push(login(addr, wire, &format!("slow{i}")).with_context(|| format!("slow{i}"))?);
    }
    let mut pusher = login(addr, wire, "pusher")?;
    // The pusher reads (and drops) whatever comes back, so that it is never slow itself.
    let mut replies = pusher.try_clone()?;
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(replies.read(&mut buf), Ok(n) if n > 0) {}
    });
    let requests: Vec<Vec<u8>> = (0..consumers)
        .map(|i| {
            let mut text = format!("@slow{i} ").into_bytes();
            text.resize(text.len() + payload, b'x');
            wire.text_request(&text)
        })
        .collect();
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = {
        let flooding = flooding.clone();
        let pid_rss = server.rss_reader();
        std::thread::spawn(move || {
            let mut peak = 0;
            while flooding.load(Ordering::Relaxed) {
                peak = peak.max(pid_rss().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let until = Instant::now() + flood;
    let mut pushes = 0u64;
    let mut batch = Vec::with_capacity(64 * 1024);
    'flood: loop {
        for r in &requests {
            batch.extend_from_slice(r);
            pushes += 1;
            if batch.len() >= 32 * 1024 {
                pusher.write_all(&batch).context("pushing")?;
                batch.clear();
                if Instant::now() >= until {
                    break 'flood;
                }
            }
        }
    }
    pusher.write_all(&batch)?;
    flooding.store(false, Ordering::Relaxed);
    let peak_rss = sampler.join().unwrap_or(0).max(server.rss()?);
    // The consumers go away; their channels close when the server reads the end of stream.
    drop(slow);
    wait_channels(debug, 1.0, Duration::from_secs(30))?;
    pusher.write_all(&wire.close_request())?;
    drop(pusher);
    wait_channels(debug, 0.0, Duration::from_secs(30))?;
    let _ = reader.join();
    std::thread::sleep(settle);
    let (heap_in_use, heap_free) = heap(debug)?;
    Ok(Round {
        pushes,
        peak_rss,
        rss_after: server.rss()?,
        heap_in_use,
        heap_free,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_series() {
        let text = "# HELP x\nkim_heap_bytes{state=\"in_use\"} 123\n\
                    kim_heap_bytes{state=\"free\"} 45\nkim_channels 3\n";
        assert_eq!(
            sample(text, "kim_heap_bytes{state=\"in_use\"}"),
            Some(123.0)
        );
        assert_eq!(sample(text, "kim_heap_bytes{state=\"free\"}"), Some(45.0));
        assert_eq!(sample(text, "kim_channels"), Some(3.0));
        assert_eq!(sample(text, "kim_connections"), None);
    }
}
