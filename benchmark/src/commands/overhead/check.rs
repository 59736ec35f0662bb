//! The `overhead` command's metrics check (the `--separate` method's): after each run of a
//! server with metrics on, its `GET /metrics` counters against what the clients counted, so
//! that the instrumented server is seen to count what it serves while it is measured.

use std::path::Path;
use std::time::Duration;

use kim_benchmark::proc::ServerProcess;
use kim_benchmark::prometheus;

use crate::commands::echo::EchoRun;
use crate::runner::Target;

/// What the instrumented server's `GET /metrics` said after one run, against what the clients
/// counted.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct MetricsCheck {
    /// The target's name.
    pub(super) target: String,
    /// The run (from 1) of that target.
    pub(super) run: usize,
    /// The debug listener's address, from the server's `debug listening on ADDR` line.
    debug_addr: Option<String>,
    /// Requests the clients wrote whole, warm-up included.
    requests: u64,
    /// Echoes the clients read whole, warm-up included.
    replies: u64,
    /// `kim_messages_received_total`, all label sets.
    received: Option<f64>,
    /// `kim_messages_sent_total`, all label sets.
    sent: Option<f64>,
    /// Lines in the server's log at the end of the run (with tracing at info).
    log_lines: Option<usize>,
    /// Why the counters could not be read.
    error: Option<String>,
}

impl MetricsCheck {
    /// Reads the counters of `server` after `run`.
    pub(super) fn read(
        server: &ServerProcess,
        target: Target,
        run: usize,
        echo: &EchoRun,
        log: Option<&Path>,
    ) -> Self {
        let mut check = MetricsCheck {
            target: target.name(),
            run,
            debug_addr: server.debug_addr(Duration::from_secs(2)),
            requests: echo.echo.requests,
            replies: echo.echo.replies,
            received: None,
            sent: None,
            log_lines: log
                .and_then(|l| std::fs::read(l).ok())
                .map(|b| b.iter().filter(|&&c| c == b'\n').count()),
            error: None,
        };
        let Some(addr) = &check.debug_addr else {
            check.error = Some("the server printed no `debug listening on ADDR` line".into());
            return check;
        };
        // The clients have closed; let the server finish with the requests still in flight.
        std::thread::sleep(Duration::from_millis(100));
        match prometheus::get(addr, "/metrics", Duration::from_secs(5)) {
            Ok(text) => {
                check.received = prometheus::sum(&text, "kim_messages_received_total");
                check.sent = prometheus::sum(&text, "kim_messages_sent_total");
                if check.received.is_none() {
                    check.error = Some("no kim_messages_received_total in GET /metrics".into());
                }
            }
            Err(e) => check.error = Some(format!("GET /metrics: {e:#}")),
        }
        check
    }

    /// `Err` when the counters are unusable (missing, or zero after a run); otherwise whether
    /// `kim_messages_received_total` lies between the echoes the clients read and the requests
    /// they wrote (the difference is what was in flight when they closed).
    pub(super) fn verdict(&self) -> Result<bool, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.received {
            Some(r) if r > 0.0 => Ok(r >= self.replies as f64 && r <= self.requests as f64),
            _ => Err("kim_messages_received_total is 0 after a run".into()),
        }
    }

    /// The check as one line: the counters against the clients' counts, and the verdict.
    pub(super) fn describe(&self) -> String {
        let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        let diff = self.received.map_or(String::new(), |r| {
            let d = r - self.requests as f64;
            format!(
                " ({d:+.0}, {:+.3}%)",
                d * 100.0 / self.requests.max(1) as f64
            )
        });
        let verdict = match self.verdict() {
            Ok(true) => "ok".to_string(),
            Ok(false) => "MISMATCH".to_string(),
            Err(e) => format!("FAILED: {e}"),
        };
        format!(
            "{} run {}: kim_messages_received_total {} vs {} requests written{diff}, {} echoes \
             read: {verdict}; kim_messages_sent_total {}{}",
            self.target,
            self.run,
            num(self.received),
            self.requests,
            self.replies,
            num(self.sent),
            self.log_lines
                .map_or(String::new(), |n| format!("; server log {n} lines")),
        )
    }
}

/// The line that sums up `checks`, and whether none failed (counters all read).
pub(super) fn summary(checks: &[MetricsCheck]) -> (String, bool) {
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|c| {
            c.verdict()
                .err()
                .map(|e| format!("{} run {}: {e}", c.target, c.run))
        })
        .collect();
    let mismatched = checks.iter().filter(|c| c.verdict() == Ok(false)).count();
    let line = if !failed.is_empty() {
        format!("metrics check: FAILED ({})", failed.join("; "))
    } else if mismatched > 0 {
        format!(
            "metrics check: counters read, but in {mismatched} of {} runs \
             kim_messages_received_total is outside [echoes read, requests written]",
            checks.len()
        )
    } else {
        format!(
            "metrics check: ok (kim_messages_received_total between the echoes the clients \
             read and the requests they wrote, in all {} runs)",
            checks.len()
        )
    };
    (line, failed.is_empty())
}
