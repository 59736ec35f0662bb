//! The debug listener: an HTTP/1.1 server (hyper) that exists only where
//! [`OptionsBuilder::debug_listen`](crate::OptionsBuilder::debug_listen) put it.
//!
//! - `GET /metrics`: the server's metrics in Prometheus' text format.
//! - `GET /debug/pprof/profile?seconds=N`: a CPU profile of the process over N seconds
//!   (default 30, 1 to 300), as a gzipped pprof protobuf (`go tool pprof` and Pyroscope read
//!   it as it is).
//! - `GET /debug/pprof/flamegraph?seconds=N`: the same profile as an SVG flame graph.
//!
//! The profile endpoints need kim-core's `pprof` feature (501 without it). The profiler is
//! process-wide: a second profile requested while one runs gets 409, a bad `seconds` 400,
//! both with the reason in the body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::server::Core;

/// Debug connections served at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 32;
/// Time allowed for a request's headers.
const HEADER_WAIT: Duration = Duration::from_secs(10);
/// Longest profile, in seconds.
pub(crate) const MAX_PROFILE_SECONDS: u64 = 300;
/// Profile length when `seconds` is not given (as Go's pprof handler does).
const DEFAULT_PROFILE_SECONDS: u64 = 30;

type Body = Full<Bytes>;

/// Binds `addr` and serves the debug endpoints until the server's shutdown completes.
pub(crate) fn start(core: &Arc<Core>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    let local = listener.local_addr()?;
    let core_weak = Arc::downgrade(core);
    let stop = core.debug_stop().clone();
    tokio::spawn(accept_loop(listener, core_weak, stop));
    Ok(local)
}

async fn accept_loop(listener: TcpListener, core: Weak<Core>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
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
        let core = core.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let core = core.clone();
                async move { Ok::<_, Infallible>(route(req, core).await) }
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
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
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

async fn route(req: Request<Incoming>, core: Weak<Core>) -> Response<Body> {
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
             /debug/pprof/flamegraph?seconds=N",
        ),
        "/metrics" => match core.upgrade() {
            Some(core) => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                core.metrics.render(),
            ),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "the server has stopped"),
        },
        "/debug/pprof/profile" => profile(query, Output::Pprof).await,
        "/debug/pprof/flamegraph" => profile(query, Output::FlameGraph).await,
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

/// The profile's length from the query: `seconds=N`, 1 to [`MAX_PROFILE_SECONDS`].
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
        "CPU profiles need kim-core's `pprof` cargo feature, which this build does not have",
    )
}

#[cfg(feature = "pprof")]
async fn take_profile(seconds: u64, output: Output) -> Response<Body> {
    use std::sync::atomic::{AtomicBool, Ordering};

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
        match output {
            Output::Pprof => {
                use pprof::protos::Message;
                use std::io::Write;
                let profile = report.pprof().map_err(|e| e.to_string())?;
                let raw = profile.encode_to_vec();
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(&raw).map_err(|e| e.to_string())?;
                gz.finish().map_err(|e| e.to_string())
            }
            Output::FlameGraph => {
                let mut svg = Vec::new();
                report.flamegraph(&mut svg).map_err(|e| e.to_string())?;
                Ok(svg)
            }
        }
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
