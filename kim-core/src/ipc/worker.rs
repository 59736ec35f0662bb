//! The worker's side of process mode: the loop that receives channel events and messages from
//! the master and runs the app's listeners on them, each channel's messages in order.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::net::UnixDatagram;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::app::{MessageListener, StateListener};
use crate::channel::courier::{Context, Courier};
use crate::channel::sessions::Sessions;
use crate::channel::{Channel, Limits};
use crate::clock::Clock;
use crate::frame::{Frame, OpCode};
use crate::ipc::courier::WorkerCourier;
use crate::ipc::link::Link;
use crate::ipc::protocol::{
    ipc_cost, Body, ChannelInfo, Control, Handled, WorkerCounters, LOGIN_HOLD, OPEN_LOGIN,
    OPEN_OWNER, OPEN_RESUME, OPEN_SUSPEND,
};
use crate::ipc::wire::{Kind, Reassembler, Received, RecvStats, SendStats};
use crate::metrics::Metrics;
use crate::options::{Backend, ServerOptions};
use crate::resume::DefaultCodec;
use crate::throttle::LogThrottle;

/// A worker stops reading from the master while this many messages wait or run.
const MAX_IN_FLIGHT: usize = 4096;
/// Partial messages older than this are dropped.
const PARTIAL_TTL: Duration = Duration::from_secs(30);
/// How often a worker reports its counters (when they changed).
const REPORT_EVERY: Duration = Duration::from_millis(50);

/// What a worker learns from its environment.
#[derive(Debug, Clone)]
pub(crate) struct WorkerEnv {
    fd: RawFd,
    index: usize,
    lifeline: RawFd,
}

impl WorkerEnv {
    /// `None` in a process that is not a worker; an error when the variables are broken.
    pub(crate) fn from_env() -> Option<io::Result<WorkerEnv>> {
        let fd = std::env::var(super::ENV_FD).ok()?;
        let parse = || -> Option<WorkerEnv> {
            Some(WorkerEnv {
                fd: fd.parse().ok()?,
                index: std::env::var(super::ENV_INDEX).ok()?.parse().ok()?,
                lifeline: std::env::var(super::ENV_LIFELINE).ok()?.parse().ok()?,
            })
        };
        let env = parse();
        // Programs this worker starts are not workers.
        for v in [super::ENV_FD, super::ENV_INDEX, super::ENV_LIFELINE] {
            std::env::remove_var(v);
        }
        Some(env.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "KIM_WORKER_* environment variables are malformed",
            )
        }))
    }
}

/// What a worker does for a channel, in the channel's order.
enum Event {
    /// The channel's login event (owner only).
    Login,
    Message(Frame),
    Disconnect,
    /// Its session's suspend event (owner only).
    Suspend,
    /// Its session's resume event (owner only).
    Resume,
}

struct WorkerChan {
    chan: Channel,
    queue: Mutex<(VecDeque<Event>, bool)>,
}

struct Worker<L, S> {
    /// The context of the channels mirrored here: their pushes go to the master.
    context: Arc<Context>,
    courier: Arc<WorkerCourier>,
    message_listener: L,
    state_listener: S,
    chans: Mutex<HashMap<u64, Arc<WorkerChan>>>,
    in_flight: AtomicUsize,
    /// Notified when in_flight drops (capacity to read, or idle for a stop).
    drained: Notify,
    handled: AtomicU64,
    unknown: AtomicU64,
    disconnects: AtomicU64,
}

impl<L: MessageListener, S: StateListener> Worker<L, S> {
    fn submit(self: &Arc<Self>, wc: &Arc<WorkerChan>, event: Event) {
        let start = {
            let mut q = wc.queue.lock();
            q.0.push_back(event);
            !std::mem::replace(&mut q.1, true)
        };
        if start {
            tokio::spawn(self.clone().run_channel(wc.clone()));
        }
    }

    /// Runs a channel's queued work in order, then ends.
    async fn run_channel(self: Arc<Self>, wc: Arc<WorkerChan>) {
        loop {
            let work = {
                let mut q = wc.queue.lock();
                match q.0.pop_front() {
                    Some(w) => w,
                    None => {
                        q.1 = false;
                        return;
                    }
                }
            };
            match work {
                Event::Message(frame) => {
                    let cost = ipc_cost(frame.payload.len()) as u64;
                    let metrics = &self.context.metrics;
                    let started = metrics.per_message.then(crate::metrics::stopwatch);
                    let r = AssertUnwindSafe(self.message_listener.receive(&wc.chan, frame))
                        .catch_unwind()
                        .await;
                    if let Some(t) = started {
                        metrics
                            .hot
                            .handled(crate::metrics::stopwatch().duration_since(t));
                    }
                    if r.is_err() {
                        error!(id = %wc.chan.id(), "message listener panicked");
                    }
                    // After the handler's pushes, so the master sees them first.
                    let handled = Handled { cost }.encode();
                    self.courier
                        .link
                        .enqueue(Control::Handled.message(wc.chan.serial(), handled));
                    self.handled.fetch_add(1, Ordering::Relaxed);
                    self.done(1);
                }
                Event::Login | Event::Resume => {
                    let c = &wc.chan;
                    if matches!(work, Event::Login) {
                        run_state_event(c, self.state_listener.login(c)).await;
                    } else {
                        run_state_event(c, self.state_listener.resume(c)).await;
                    }
                    // The master lets the channel read once its login event has run.
                    let handled = Handled { cost: LOGIN_HOLD }.encode();
                    self.courier
                        .link
                        .enqueue(Control::Handled.message(c.serial(), handled));
                    self.done(1);
                }
                Event::Disconnect => {
                    let c = &wc.chan;
                    run_state_event(c, self.state_listener.disconnect(c)).await;
                    self.disconnects.fetch_add(1, Ordering::Relaxed);
                    self.done(1);
                }
                Event::Suspend => {
                    let c = &wc.chan;
                    run_state_event(c, self.state_listener.suspend(c)).await;
                    self.done(1);
                }
            }
        }
    }

    fn done(&self, n: usize) {
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    async fn wait_in_flight_below(&self, n: usize) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) < n {
                return;
            }
            notified.await;
        }
    }

    /// A channel is announced (`aux`: [`OPEN_OWNER`], [`OPEN_LOGIN`]).
    fn open(self: &Arc<Self>, serial: u64, aux: u8, payload: &[u8]) {
        let Some(ChannelInfo { id, meta }) = ChannelInfo::decode(payload) else {
            warn!(serial, "ipc: malformed channel event");
            return;
        };
        let mut chans = self.chans.lock();
        // A channel can be announced twice: once when it logged in and once in the directory
        // a (re)started worker asks for. A serial names one login, so the first stays: its
        // queue may be running, and a second queue would handle the channel's messages
        // concurrently, out of order. Its session's events come the same way.
        if let Some(wc) = chans.get(&serial).cloned() {
            drop(chans);
            let event = match aux {
                a if a & OPEN_OWNER == 0 => return,
                a if a & OPEN_SUSPEND != 0 => Event::Suspend,
                a if a & OPEN_RESUME != 0 => Event::Resume,
                _ => return,
            };
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            self.submit(&wc, event);
            return;
        }
        let chan = Channel::new(id, meta, serial, self.context.clone());
        self.courier.channels().replace(chan.clone());
        let wc = Arc::new(WorkerChan {
            chan,
            queue: Mutex::new((VecDeque::new(), false)),
        });
        chans.insert(serial, wc.clone());
        drop(chans);
        if aux & OPEN_OWNER != 0 && aux & (OPEN_LOGIN | OPEN_RESUME) != 0 {
            // A new login (or a resume a restarted worker never saw the login of): its event
            // runs before anything else of the channel.
            let event = if aux & OPEN_LOGIN != 0 {
                Event::Login
            } else {
                Event::Resume
            };
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            self.submit(&wc, event);
        }
    }

    fn disconnect(self: &Arc<Self>, serial: u64, owner: bool, payload: &[u8]) {
        let wc = self.chans.lock().remove(&serial);
        match wc {
            Some(wc) => {
                wc.chan.outbox().refuse_pushes();
                self.courier.channels().remove_channel(&wc.chan);
                if owner {
                    self.in_flight.fetch_add(1, Ordering::AcqRel);
                    self.submit(&wc, Event::Disconnect);
                }
            }
            None if owner => {
                // Never seen here (the worker was restarted after its login): the event
                // carries the id and metadata, so the callback still runs.
                if let Some(ChannelInfo { id, meta }) = ChannelInfo::decode(payload) {
                    let chan = Channel::new(id, meta, serial, self.context.clone());
                    chan.outbox().refuse_pushes();
                    let w = self.clone();
                    w.in_flight.fetch_add(1, Ordering::AcqRel);
                    tokio::spawn(async move {
                        w.state_listener.disconnect(&chan).await;
                        w.disconnects.fetch_add(1, Ordering::Relaxed);
                        w.done(1);
                    });
                }
            }
            None => {}
        }
    }

    /// A client's message: queued on its channel. `false` when the channel is unknown.
    fn message(self: &Arc<Self>, m: &Received) -> bool {
        let wc = self.chans.lock().get(&m.key).cloned();
        let Some(wc) = wc else {
            return false;
        };
        let op = OpCode::from_u8(m.aux)
            .filter(|op| op.is_data())
            .unwrap_or(OpCode::Binary);
        self.submit(&wc, Event::Message(Frame::new(op, m.payload.clone())));
        true
    }
}

/// Runs this process as worker `env.index`: until the master says stop (exit 0) or is gone.
pub(crate) async fn run_worker<L, S>(
    message_listener: L,
    state_listener: S,
    options: ServerOptions,
    env: WorkerEnv,
) -> io::Result<()>
where
    L: MessageListener,
    S: StateListener,
{
    // Run as a task of the runtime, not in the caller's `block_on` thread: the receive loop
    // and the handlers it spawns then share the runtime's threads, and a message does not
    // cross threads on its way to its handler.
    tokio::spawn(worker_main(message_listener, state_listener, options, env))
        .await
        .map_err(|e| io::Error::other(format!("worker task failed: {e}")))?
}

async fn worker_main<L, S>(
    message_listener: L,
    state_listener: S,
    options: ServerOptions,
    env: WorkerEnv,
) -> io::Result<()>
where
    L: MessageListener,
    S: StateListener,
{
    let Backend::UnixDatagram { ipc_max_size, .. } = *options.backend() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "started as a worker but the options do not select Backend::UnixDatagram",
        ));
    };
    let index = env.index;
    watch_lifeline(env.lifeline)?;
    ignore_stop_signals();
    // SAFETY: the master passed this fd to us for this purpose; nothing else owns it.
    let std_sock = unsafe { std::os::unix::net::UnixDatagram::from_raw_fd(env.fd) };
    std_sock.set_nonblocking(true)?;
    // Keep the inherited socket out of anything this worker starts.
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(env.fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let link = Link::new(
        UnixDatagram::from_std(std_sock)?,
        options.ipc_queue_bytes(),
        ipc_max_size,
    );
    let max_message = options.max_message_size();
    let courier = Arc::new(WorkerCourier::new(link.clone(), max_message));
    let context = Arc::new(Context {
        limits: Limits::new(&options),
        clock: Arc::new(Clock::new()),
        metrics: Arc::new(Metrics::new(options.metrics())),
        // Connections are the master's; a worker's channels have no session to end.
        connections: Arc::default(),
        courier: courier.clone(),
        // Sessions are the master's, which holds the sockets.
        sessions: Sessions::new(&options, Arc::new(DefaultCodec)),
    });
    let worker = Arc::new(Worker {
        context,
        courier: courier.clone(),
        message_listener,
        state_listener,
        chans: Mutex::new(HashMap::new()),
        in_flight: AtomicUsize::new(0),
        drained: Notify::new(),
        handled: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
    });
    let send_stats = Arc::new(Mutex::new(SendStats::default()));
    let writer = {
        let link = link.clone();
        let stats = send_stats.clone();
        tokio::spawn(async move { link.write_loop(&stats).await })
    };
    let recv_stats = Arc::new(Mutex::new(RecvStats::default()));
    let counters = {
        let worker = worker.clone();
        let courier = courier.clone();
        let recv_stats = recv_stats.clone();
        move || WorkerCounters {
            pid: std::process::id(),
            handler: worker.context.metrics.hot.handler_histogram(),
            handled: worker.handled.load(Ordering::Relaxed),
            recv: *recv_stats.lock(),
            push_failed: courier.push_failed.load(Ordering::Relaxed),
            unknown_channel: worker.unknown.load(Ordering::Relaxed),
            disconnects: worker.disconnects.load(Ordering::Relaxed),
        }
    };
    let reporter = {
        let counters = counters.clone();
        let link = link.clone();
        tokio::spawn(async move {
            let mut last = WorkerCounters::default();
            let mut tick = tokio::time::interval(REPORT_EVERY);
            loop {
                tick.tick().await;
                let now = counters();
                if now != last {
                    link.enqueue(Control::Stats.message(0, now.encode()));
                    last = now;
                }
            }
        })
    };
    info!(worker = index, pid = std::process::id(), "worker running");
    link.enqueue(Control::Ready.message(0, Bytes::new()));

    let mut rx = Reassembler::new(max_message, ipc_max_size, PARTIAL_TTL);
    let mut synced = false;
    let mut held: Vec<Received> = Vec::new();
    loop {
        worker.wait_in_flight_below(MAX_IN_FLIGHT).await;
        // Replies pile up no further than the queue's bound (plus what the handlers already
        // running push): past it, the master's queue towards this worker fills instead, and
        // the channels routed here pause reading.
        link.capacity().await;
        let m = link.recv(&mut rx).await;
        *recv_stats.lock() = rx.stats();
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                error!(worker = index, error = %e, "ipc: reading from the master failed");
                break;
            }
        };
        match m.kind {
            Kind::Message => {
                worker.in_flight.fetch_add(1, Ordering::AcqRel);
                // Until the directory is complete, a channel with messages held keeps holding
                // the next ones, so they are handled in order once it is.
                if !synced && held.iter().any(|h| h.key == m.key) {
                    held.push(m);
                } else if !worker.message(&m) {
                    if synced {
                        worker.unknown.fetch_add(1, Ordering::Relaxed);
                        static UNKNOWN: LogThrottle = LogThrottle::new(Duration::from_secs(1));
                        if let Some(suppressed) = UNKNOWN.allow() {
                            debug!(
                                serial = m.key,
                                suppressed, "message for an unknown channel dropped"
                            );
                        }
                        worker.done(1);
                    } else {
                        // Queued for this worker before it started: its channel arrives
                        // with the directory.
                        held.push(m);
                    }
                }
            }
            Kind::Open => worker.open(m.key, m.aux, &m.payload),
            Kind::Disconnect => worker.disconnect(m.key, m.aux & OPEN_OWNER != 0, &m.payload),
            Kind::Control if m.aux == Control::Synced as u8 => {
                synced = true;
                for m in held.drain(..) {
                    if !worker.message(&m) {
                        worker.unknown.fetch_add(1, Ordering::Relaxed);
                        worker.done(1);
                    }
                }
            }
            Kind::Control if m.aux == Control::RoomAnswer as u8 => {
                worker.courier.rooms.answered(m.key, &m.payload);
            }
            Kind::Control if m.aux == Control::Stop as u8 => {
                info!(worker = index, "stopping");
                break;
            }
            other => debug!(kind = ?other, aux = m.aux, "ipc: unexpected message from master"),
        }
    }
    // Finish what was received, report, send what is queued, exit.
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        worker.wait_in_flight_below(1).await;
        loop {
            let busy = worker.chans.lock().values().any(|wc| wc.queue.lock().1);
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    if drained.is_err() {
        warn!(worker = index, "handlers still running at exit");
    }
    reporter.abort();
    link.enqueue(Control::Stats.message(0, counters().encode()));
    link.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    debug!(worker = index, "worker done");
    Ok(())
}

/// Ctrl-C at a terminal and `kill` by process name reach the workers too; they leave stopping
/// to the master, which stops them after their last disconnect callbacks (and they exit by
/// themselves once the master is gone). SIGKILL still works.
fn ignore_stop_signals() {
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        if let Ok(mut s) = signal(kind) {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    debug!("worker: stop signal ignored; the master stops its workers");
                }
            });
        }
    }
}

/// Exits this process as soon as the master is gone: the lifeline pipe's write end lives only
/// in the master, so a read returns EOF when it exits, however it exits.
fn watch_lifeline(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd passed to us.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    std::thread::Builder::new()
        .name("kim-lifeline".into())
        .spawn(move || {
            let mut b = [0u8; 1];
            loop {
                // SAFETY: reading into a live 1-byte buffer.
                let n = unsafe { libc::read(fd, b.as_mut_ptr() as *mut libc::c_void, 1) };
                if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if n <= 0 {
                    // The master is gone: nobody is left to serve.
                    std::process::exit(0);
                }
            }
        })?;
    Ok(())
}

/// Runs a state listener's login or disconnect event for `chan`; a panic in it is logged and
/// goes no further, as one in a message handler does.
async fn run_state_event(chan: &Channel, event: impl std::future::Future<Output = ()>) {
    if AssertUnwindSafe(event).catch_unwind().await.is_err() {
        error!(id = %chan.id(), "state listener panicked");
    }
}
