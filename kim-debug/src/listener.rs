//! The debug listener: an HTTP/1.1 server (hyper) that exists only where
//! [`OptionsBuilder::debug_listen`](kim_core::OptionsBuilder::debug_listen) put it.
//!
//! - `GET /metrics`: the server's metrics in Prometheus' text format.
//! - `GET /debug/pprof/profile?seconds=N`: a CPU profile of the process over N seconds
//!   (default 30, 1 to 300), as a gzipped pprof protobuf (`go tool pprof` and Pyroscope read
//!   it as it is).
//! - `GET /debug/pprof/flamegraph?seconds=N`: the same profile as an SVG flame graph.
//! - `GET /debug/pprof/heap`: the live heap by allocating stack, as a gzipped pprof protobuf,
//!   from the allocator the binary installed ([`crate::allocator`]; 501 with the reason
//!   when there is none).
//!
//! The profile endpoints need kim-debug's `pprof` feature (501 without it). The profiler is
//! process-wide: a second profile requested while one runs gets 409, a bad `seconds` 400,
//! both with the reason in the body. A profile of an idle process has no samples: a valid
//! empty pprof profile, and a flame graph that says so.
//!
//! Nobody can keep the operator out: at most [`MAX_CONNECTIONS`] connections are open, and a
//! new one past that closes the oldest connection that is not serving a request. Memory a
//! profile leaves behind is bounded: the profiler keeps one sample table (about 70 MiB) for the
//! next profile, and the symbols parsed to write the report are freed after it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use kim_core::Metrics;

/// Debug connections open at once. A connection past this evicts the oldest one that has no
/// request in progress (idle, or still sending its headers), so idle connections can never
/// lock the operator out of `/metrics`; only when every connection is busy serving a request
/// is the new one closed.
const MAX_CONNECTIONS: usize = 32;
/// Time allowed for a request's headers.
const HEADER_WAIT: Duration = Duration::from_secs(10);
/// Longest profile, in seconds.
pub(crate) const MAX_PROFILE_SECONDS: u64 = 300;
/// Profile length when `seconds` is not given (as Go's pprof handler does).
const DEFAULT_PROFILE_SECONDS: u64 = 30;

type Body = Full<Bytes>;

/// Binds `addr` and serves the debug endpoints until `stop` is cancelled.
pub(crate) fn start(
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    addr: SocketAddr,
) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    let local = listener.local_addr()?;
    tokio::spawn(accept_loop(listener, Arc::downgrade(&metrics), stop));
    Ok(local)
}

/// An open debug connection, as the accept loop sees it.
struct DebugConn {
    id: u64,
    /// Set while a request is being served.
    busy: Arc<AtomicBool>,
    /// Cancelled to close the connection in favour of a newer one.
    evict: CancellationToken,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Slots {
    open: Mutex<VecDeque<DebugConn>>,
}

impl Slots {
    /// Makes room for a new connection, evicting the oldest idle one if all are taken.
    /// `None` when every connection is serving a request.
    fn admit(&self, id: u64) -> Option<(Arc<AtomicBool>, CancellationToken)> {
        let mut open = self.open.lock();
        if open.len() >= MAX_CONNECTIONS {
            let idle = open.iter().position(|s| !s.busy.load(Ordering::Acquire))?;
            if let Some(old) = open.remove(idle) {
                old.evict.cancel();
            }
        }
        let busy = Arc::new(AtomicBool::new(false));
        let evict = CancellationToken::new();
        open.push_back(DebugConn {
            id,
            busy: busy.clone(),
            evict: evict.clone(),
        });
        Some((busy, evict))
    }

    fn remove(&self, id: u64) {
        self.open.lock().retain(|s| s.id != id);
    }
}

/// Marks a connection busy for as long as one of its requests is served.
struct Busy(Arc<AtomicBool>);

impl Busy {
    fn new(flag: &Arc<AtomicBool>) -> Busy {
        flag.store(true, Ordering::Release);
        Busy(flag.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn accept_loop(listener: TcpListener, metrics: Weak<Metrics>, stop: CancellationToken) {
    let slots = Arc::new(Slots::default());
    let mut next_id = 0u64;
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "debug listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        next_id += 1;
        let id = next_id;
        let Some((busy, evict)) = slots.admit(id) else {
            tracing::debug!("debug listener: every connection is serving a request; closing");
            continue;
        };
        let metrics = metrics.clone();
        let stop = stop.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                let busy = Busy::new(&busy);
                async move {
                    let r = route(req, metrics).await;
                    drop(busy);
                    Ok::<_, Infallible>(r)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_WAIT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "debug listener: connection failed");
                    }
                }
                _ = evict.cancelled() => {
                    tracing::debug!("debug listener: idle connection evicted for a new one");
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
            slots.remove(id);
        });
    }
    tracing::debug!("debug listener stopped");
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut s = body.into();
    s.push('\n');
    reply(status, "text/plain; charset=utf-8", s)
}

async fn route(req: Request<Incoming>, metrics: Weak<Metrics>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here");
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let query = req.uri().query().unwrap_or("");
    match req.uri().path() {
        "/" => text(
            StatusCode::OK,
            "kim debug listener\n/metrics\n/debug/pprof/profile?seconds=N\n\
             /debug/pprof/flamegraph?seconds=N\n/debug/pprof/heap",
        ),
        "/metrics" => match metrics.upgrade() {
            Some(metrics) => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render(),
            ),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "the server has stopped"),
        },
        "/debug/pprof/profile" => profile(query, Output::Pprof).await,
        "/debug/pprof/flamegraph" => profile(query, Output::FlameGraph).await,
        "/debug/pprof/heap" => match crate::allocator::dump().await {
            Ok(body) => {
                let mut r = reply(StatusCode::OK, "application/octet-stream", body);
                r.headers_mut().insert(
                    hyper::header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"heap.pb.gz\""),
                );
                r
            }
            Err(e) => text(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                e.reason,
            ),
        },
        other => text(StatusCode::NOT_FOUND, format!("no such endpoint: {other}")),
    }
}

/// What a profile is turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Gzipped pprof protobuf.
    Pprof,
    /// SVG flame graph.
    FlameGraph,
}

/// The profile's length from the query: `seconds=N`, 1 to `MAX_PROFILE_SECONDS`.
pub fn parse_seconds(query: &str) -> Result<u64, String> {
    let mut seconds = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "seconds" {
            if seconds.is_some() {
                return Err("seconds is given more than once".into());
            }
            seconds = Some(v);
        }
    }
    let Some(v) = seconds else {
        return Ok(DEFAULT_PROFILE_SECONDS);
    };
    match v.parse::<u64>() {
        Ok(n) if (1..=MAX_PROFILE_SECONDS).contains(&n) => Ok(n),
        _ => Err(format!(
            "seconds must be a whole number from 1 to {MAX_PROFILE_SECONDS}, got {v:?}"
        )),
    }
}

async fn profile(query: &str, output: Output) -> Response<Body> {
    let seconds = match parse_seconds(query) {
        Ok(s) => s,
        Err(reason) => return text(StatusCode::BAD_REQUEST, reason),
    };
    take_profile(seconds, output).await
}

#[cfg(not(feature = "pprof"))]
async fn take_profile(_seconds: u64, _output: Output) -> Response<Body> {
    text(
        StatusCode::NOT_IMPLEMENTED,
        "CPU profiles need kim-debug's `pprof` cargo feature, which this build does not have",
    )
}

#[cfg(feature = "pprof")]
async fn take_profile(seconds: u64, output: Output) -> Response<Body> {
    /// The profiler samples the whole process: one profile at a time.
    static RUNNING: AtomicBool = AtomicBool::new(false);
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            RUNNING.store(false, Ordering::Release);
        }
    }

    if RUNNING.swap(true, Ordering::AcqRel) {
        return text(
            StatusCode::CONFLICT,
            "a CPU profile is already being taken in this process; try again when it is done",
        );
    }
    let running = Running;
    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(100)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(g) => g,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start the profiler: {e}"),
            )
        }
    };
    tracing::info!(seconds, "CPU profile started");
    // The guard is not Send; it lives on a blocking thread for the profile's length.
    let done = tokio::task::spawn_blocking(move || {
        let _running = running;
        std::thread::sleep(Duration::from_secs(seconds));
        let report = guard
            .report()
            .frames_post_processor(drop_signal_frames)
            .build()
            .map_err(|e| e.to_string())?;
        drop(guard);
        let body = render(&report, output);
        drop(report);
        release_profiler_memory();
        body
    })
    .await;
    match done {
        Ok(Ok(body)) => {
            tracing::info!(seconds, bytes = body.len(), "CPU profile done");
            let mut r = match output {
                Output::Pprof => reply(StatusCode::OK, "application/octet-stream", body),
                Output::FlameGraph => reply(StatusCode::OK, "image/svg+xml", body),
            };
            if output == Output::Pprof {
                r.headers_mut().insert(
                    hyper::header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"profile.pb.gz\""),
                );
            }
            r
        }
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profile failed: {e}"),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profile failed: {e}"),
        ),
    }
}

/// Turns a finished profile into the response body: a gzipped pprof protobuf, or an SVG flame
/// graph. A profile of an idle process has no samples: the protobuf is then a valid empty
/// profile (as Go's is), and the flame graph a small SVG that says so, since an empty graph
/// cannot be drawn.
#[cfg(feature = "pprof")]
fn render(report: &pprof::Report, output: Output) -> Result<Vec<u8>, String> {
    match output {
        Output::Pprof => {
            use pprof::protos::Message;
            use std::io::Write;
            let profile = report.pprof().map_err(|e| e.to_string())?;
            let raw = profile.encode_to_vec();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&raw).map_err(|e| e.to_string())?;
            gz.finish().map_err(|e| e.to_string())
        }
        Output::FlameGraph if report.data.is_empty() => Ok(NO_SAMPLES_SVG.as_bytes().to_vec()),
        Output::FlameGraph => {
            let mut svg = Vec::new();
            report.flamegraph(&mut svg).map_err(|e| e.to_string())?;
            Ok(svg)
        }
    }
}

/// The flame graph of a profile without samples.
#[cfg(feature = "pprof")]
const NO_SAMPLES_SVG: &str = concat!(
    r#"<?xml version="1.0" standalone="no"?>"#,
    "\n",
    r#"<svg version="1.1" width="600" height="60" xmlns="http://www.w3.org/2000/svg">"#,
    r#"<text x="10" y="35" font-family="monospace" font-size="14">"#,
    "no samples: the process used no CPU while it was profiled",
    "</text></svg>\n"
);

/// Gives back what a profile left behind. The profiler's sample table (tens of MiB, in
/// blocks small enough to come from the heap) and the symbol tables parsed from the binary's
/// debug information stay allocated after the report otherwise: the symbol cache is dropped,
/// and the allocator is asked to return its free pages to the system.
#[cfg(feature = "pprof")]
fn release_profiler_memory() {
    backtrace::clear_symbol_cache();
    crate::heap::trim();
}

/// Removes the profiler's own frames from the top of a sample (the unwinder and the signal
/// handler it runs in), so that each stack starts where the thread was interrupted.
#[cfg(feature = "pprof")]
fn drop_signal_frames(frames: &mut pprof::Frames) {
    let own = |f: &Vec<pprof::Symbol>| {
        f.iter().any(|s| {
            let n = s.name();
            n.starts_with("backtrace::")
                || n.contains("pprof::backtrace")
                || n.contains("pprof::profiler")
                || n.contains("perf_signal_handler")
        })
    };
    let n = frames.frames.iter().take_while(|f| own(f)).count();
    frames.frames.drain(..n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds(""), Ok(DEFAULT_PROFILE_SECONDS));
        assert_eq!(parse_seconds("seconds=1"), Ok(1));
        assert_eq!(parse_seconds("x=y&seconds=300"), Ok(300));
        for bad in [
            "seconds=0",
            "seconds=301",
            "seconds=abc",
            "seconds=",
            "seconds=-1",
            "seconds=1.5",
            "seconds=1&seconds=2",
        ] {
            let e = parse_seconds(bad).unwrap_err();
            assert!(e.contains("seconds"), "{bad}: {e}");
        }
    }
}
