//! The master's side of process mode: it starts and supervises the workers, dispatches each
//! channel's messages to them, mirrors the channel directory into them, and carries their
//! pushes back to the channels.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::UnixDatagram;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::channel::courier::Courier;
use crate::channel::Channel;
use crate::frame::{Frame, OpCode};
use crate::ipc::link::Link;
use crate::ipc::protocol::{
    ipc_cost, Body, ChannelInfo, CloseBody, Control, Handled, WorkerCounters, LOGIN_HOLD,
    OPEN_LOGIN, OPEN_OWNER, OPEN_RESUME, OPEN_SUSPEND,
};
use crate::ipc::rooms::on_room_message;
use crate::ipc::stats::{IpcStats, Reports};
use crate::ipc::wire::{Kind, Outgoing, Reassembler, Received, RecvStats, SendStats};
use crate::metrics::hot::HandlerHistogram;
use crate::options::{Backend, Dispatch, ServerOptions, WorkerCommand};
use crate::route::{Handling, Route};
use crate::throttle::LogThrottle;

/// Shards of the serial -> channel index.
const SHARDS: usize = 64;
/// Partial messages from a worker older than this are dropped.
const PARTIAL_TTL: Duration = Duration::from_secs(30);
/// How long a stopping worker gets to finish what it was sent before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(10);

enum Ctl {
    Reload(oneshot::Sender<()>),
    Stop(Duration, oneshot::Sender<()>),
}

struct WorkerSlot {
    link: Arc<Link>,
    /// The worker's end of the socketpair, kept open so that a respawned worker inherits the
    /// same socket and whatever is queued in it.
    peer: OwnedFd,
    ctl: mpsc::UnboundedSender<Ctl>,
    dispatched: AtomicU64,
    counters: Mutex<Reports>,
    master_recv: Mutex<RecvStats>,
    sent: Mutex<SendStats>,
    pid: AtomicU64,
}

/// The master: its workers, the dispatch and the channel index by serial.
pub(crate) struct Master {
    /// Where the workers' room operations go: the server's own courier.
    courier: Arc<dyn Courier>,
    slots: Vec<WorkerSlot>,
    serials: Box<[Mutex<HashMap<u64, Channel>>]>,
    dispatch: Dispatch,
    rr: AtomicUsize,
    stopping: AtomicBool,
    /// Cancelled once the workers are stopped: ends the read loops.
    stopped: tokio_util::sync::CancellationToken,
    respawns: AtomicU64,
    reloads: AtomicU64,
    pushes: AtomicU64,
    push_failed: AtomicU64,
    /// The read end of the lifeline pipe, passed to every worker; the write end stays here
    /// only, so the workers see EOF when the master is gone however it went.
    lifeline_read: OwnedFd,
    _lifeline_write: OwnedFd,
    command: WorkerCommand,
    max_message: usize,
    chunk: usize,
}

fn pipe_cloexec() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Master {
    /// Creates the socketpairs and starts the workers, their supervisors and readers.
    pub(crate) fn start(
        opts: &ServerOptions,
        courier: Arc<dyn Courier>,
    ) -> std::io::Result<Arc<Master>> {
        let Backend::UnixDatagram {
            workers,
            ipc_max_size,
            dispatch,
        } = *opts.backend()
        else {
            return Err(std::io::Error::other("not in process mode"));
        };
        let command = match opts.worker_command() {
            Some(c) => c.clone(),
            None => WorkerCommand::current()?,
        };
        let (lifeline_read, lifeline_write) = pipe_cloexec()?;
        let mut slots = Vec::with_capacity(workers);
        let mut ctls = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (ours, theirs) = std::os::unix::net::UnixDatagram::pair()?;
            ours.set_nonblocking(true)?;
            crate::ipc::wire::raise_buffers(theirs.as_fd(), super::SOCKET_BUFFER);
            let link = Link::new(
                UnixDatagram::from_std(ours)?,
                opts.ipc_queue_bytes(),
                ipc_max_size,
            );
            let (tx, rx) = mpsc::unbounded_channel();
            ctls.push(rx);
            slots.push(WorkerSlot {
                link,
                peer: OwnedFd::from(theirs),
                ctl: tx,
                dispatched: AtomicU64::new(0),
                counters: Mutex::new(Reports::default()),
                master_recv: Mutex::new(RecvStats::default()),
                sent: Mutex::new(SendStats::default()),
                pid: AtomicU64::new(0),
            });
        }
        let master = Arc::new(Master {
            courier,
            slots,
            serials: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            dispatch,
            rr: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            stopped: tokio_util::sync::CancellationToken::new(),
            respawns: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
            push_failed: AtomicU64::new(0),
            lifeline_read,
            _lifeline_write: lifeline_write,
            command,
            max_message: opts.max_message_size(),
            chunk: ipc_max_size,
        });
        for (i, ctl) in ctls.into_iter().enumerate() {
            let link = master.slots[i].link.clone();
            let m = master.clone();
            tokio::spawn(async move {
                let sent = link.clone().write_loop(&m.slots[i].sent).await;
                if let Err(e) = sent {
                    warn!(worker = i, error = %e, "ipc: sending to the worker failed");
                }
            });
            tokio::spawn(master.clone().read_loop(i));
            tokio::spawn(master.clone().supervise(i, ctl));
        }
        info!(
            workers,
            chunk = ipc_max_size,
            ?dispatch,
            "worker processes starting"
        );
        Ok(master)
    }

    fn owner(&self, serial: u64) -> usize {
        (serial % self.slots.len() as u64) as usize
    }

    fn shard(&self, serial: u64) -> &Mutex<HashMap<u64, Channel>> {
        &self.serials[(serial as usize) & (SHARDS - 1)]
    }

    /// A channel logged in: index it and tell every worker; its owner runs the login event,
    /// and the channel reads nothing until then.
    pub(crate) fn opened(&self, chan: &Channel) {
        let serial = chan.serial();
        self.shard(serial).lock().insert(serial, chan.clone());
        chan.in_flight().add(LOGIN_HOLD as usize);
        let info = channel_info(chan);
        let owner = self.owner(serial);
        for (i, s) in self.slots.iter().enumerate() {
            let aux = if i == owner {
                OPEN_OWNER | OPEN_LOGIN
            } else {
                0
            };
            s.link
                .enqueue(Outgoing::new(Kind::Open, serial, aux, info.clone()));
        }
    }

    /// A channel's session was suspended (`OPEN_SUSPEND`) or resumed (`OPEN_RESUME`): its
    /// owner runs the event. A resumed channel reads nothing until the resume event ran.
    pub(crate) fn session_event(&self, chan: &Channel, event: u8) {
        let serial = chan.serial();
        if event == OPEN_RESUME {
            chan.in_flight().add(LOGIN_HOLD as usize);
        }
        let info = channel_info(chan);
        let slot = &self.slots[self.owner(serial)];
        let aux = OPEN_OWNER | event;
        slot.link
            .enqueue(Outgoing::new(Kind::Open, serial, aux, info));
    }

    /// A channel ended: its owner runs the disconnect callback, the others forget it.
    pub(crate) fn ended(&self, chan: &Channel) {
        let serial = chan.serial();
        self.shard(serial).lock().remove(&serial);
        let info = channel_info(chan);
        let owner = self.owner(serial);
        for (i, s) in self.slots.iter().enumerate() {
            let aux = if i == owner { OPEN_OWNER } else { 0 };
            s.link
                .enqueue(Outgoing::new(Kind::Disconnect, serial, aux, info.clone()));
        }
    }

    /// Ready when the channel's next message can be queued towards a worker.
    pub(crate) fn poll_capacity(&self, chan: &Channel, cx: &mut Context<'_>) -> Poll<()> {
        match self.dispatch {
            Dispatch::Fixed => self.slots[self.owner(chan.serial())].link.poll_capacity(cx),
            Dispatch::RoundRobin | Dispatch::LeastBusy => {
                // Any worker with capacity will do; all are asked, so that whichever frees up
                // first wakes the channel.
                let mut ready = false;
                for s in &self.slots {
                    if s.link.poll_capacity(cx).is_ready() {
                        ready = true;
                        break;
                    }
                }
                if ready {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        }
    }

    /// Sends a client's message to a worker.
    pub(crate) fn dispatch(&self, chan: &Channel, frame: Frame) {
        let serial = chan.serial();
        let n = self.slots.len();
        let i = match self.dispatch {
            Dispatch::Fixed => self.owner(serial),
            Dispatch::RoundRobin => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| self.slots[i].link.has_capacity())
                    .unwrap_or(start % n)
            }
            Dispatch::LeastBusy => (0..n)
                .min_by_key(|&i| {
                    let s = &self.slots[i];
                    let handled = s.counters.lock().total().handled;
                    (
                        s.dispatched.load(Ordering::Relaxed).saturating_sub(handled),
                        s.link.queued_bytes(),
                    )
                })
                .unwrap_or(0),
        };
        let s = &self.slots[i];
        s.dispatched.fetch_add(1, Ordering::Relaxed);
        chan.in_flight().add(ipc_cost(frame.payload.len()));
        s.link.enqueue(Outgoing::new(
            Kind::Message,
            serial,
            frame.op as u8,
            frame.payload,
        ));
    }

    /// Reads what worker `i` sends: pushes, closes and control messages.
    async fn read_loop(self: Arc<Self>, i: usize) {
        let mut rx = Reassembler::new(self.max_message, self.chunk, PARTIAL_TTL);
        let link = self.slots[i].link.clone();
        loop {
            let m = tokio::select! {
                m = link.recv(&mut rx) => m,
                _ = self.stopped.cancelled() => {
                    // The workers have exited: take what they sent last, then end.
                    while let Ok(m) = link.recv_now(&mut rx) {
                        self.on_message(i, m);
                    }
                    *self.slots[i].master_recv.lock() = rx.stats();
                    return;
                }
            };
            *self.slots[i].master_recv.lock() = rx.stats();
            match m {
                Ok(m) => self.on_message(i, m),
                Err(e) => {
                    warn!(worker = i, error = %e, "ipc: reading from the worker failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn channel(&self, serial: u64) -> Option<Channel> {
        self.shard(serial).lock().get(&serial).cloned()
    }

    fn on_message(&self, i: usize, m: Received) {
        match m.kind {
            Kind::Push => {
                self.pushes.fetch_add(1, Ordering::Relaxed);
                let op = OpCode::from_u8(m.aux).filter(|op| op.is_data());
                let result = match (self.channel(m.key), op) {
                    (Some(chan), Some(op)) => chan.push_frame(Frame::new(op, m.payload)),
                    (None, _) => Err(crate::PushError::Closed),
                    (_, None) => Err(crate::PushError::NotData(OpCode::Close)),
                };
                if let Err(e) = result {
                    self.push_failed.fetch_add(1, Ordering::Relaxed);
                    static REFUSED: LogThrottle = LogThrottle::new(Duration::from_secs(1));
                    if let Some(suppressed) = REFUSED.allow() {
                        debug!(worker = i, serial = m.key, error = %e, suppressed, "push from worker refused");
                    }
                }
            }
            Kind::Close => {
                if let (Some(chan), Some(reason)) =
                    (self.channel(m.key), CloseBody::decode(&m.payload))
                {
                    chan.close(reason.reason);
                }
            }
            Kind::Control => match Control::from_u8(m.aux) {
                Some(Control::Handled) => {
                    if let (Some(chan), Some(h)) =
                        (self.channel(m.key), Handled::decode(&m.payload))
                    {
                        chan.release_in_flight(usize::try_from(h.cost).unwrap_or(usize::MAX));
                    }
                }
                Some(Control::Ready) => self.send_directory(i),
                Some(Control::Stats) => {
                    if let Some(c) = WorkerCounters::decode(&m.payload) {
                        self.slots[i].counters.lock().update(c);
                    }
                }
                Some(
                    code @ (Control::RoomJoin
                    | Control::RoomLeave
                    | Control::RoomPublish
                    | Control::RoomQuery),
                ) => {
                    let link = &self.slots[i].link;
                    on_room_message(&self.courier, link, code, m.key, &m.payload, |s| {
                        self.channel(s)
                    });
                }
                _ => debug!(worker = i, code = m.aux, "ipc: unknown control message"),
            },
            other => debug!(worker = i, kind = ?other, "ipc: unexpected message from a worker"),
        }
    }

    /// A (re)started worker gets the whole channel directory, then SYNCED.
    fn send_directory(&self, i: usize) {
        let link = &self.slots[i].link;
        let mut n = 0;
        for shard in self.serials.iter() {
            let chans: Vec<Channel> = shard.lock().values().cloned().collect();
            for c in chans {
                let serial = c.serial();
                let aux = if self.owner(serial) == i {
                    OPEN_OWNER
                } else {
                    0
                };
                let info = channel_info(&c);
                link.enqueue(Outgoing::new(Kind::Open, serial, aux, info));
                n += 1;
            }
        }
        link.enqueue(Control::Synced.message(0, Bytes::new()));
        debug!(worker = i, channels = n, "worker ready; directory sent");
    }

    fn spawn_worker(&self, i: usize) -> std::io::Result<tokio::process::Child> {
        let fd = self.slots[i].peer.as_raw_fd();
        let lifeline = self.lifeline_read.as_raw_fd();
        let mut cmd = tokio::process::Command::new(&self.command.program);
        cmd.args(&self.command.args)
            .env(super::ENV_FD, fd.to_string())
            .env(super::ENV_INDEX, i.to_string())
            .env(super::ENV_LIFELINE, lifeline.to_string())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        // SAFETY: the closure only makes async-signal-safe calls (fcntl, setpgid).
        unsafe {
            cmd.pre_exec(move || {
                for fd in [fd, lifeline] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Its own process group: a Ctrl-C at the terminal reaches the master, which
                // stops the workers in order, not the workers directly.
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        cmd.spawn()
    }

    /// Starts worker `i`, respawns it when it dies, replaces it on reload, stops it on stop.
    async fn supervise(self: Arc<Self>, i: usize, mut ctl: mpsc::UnboundedReceiver<Ctl>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut child = match self.spawn_worker(i) {
                Ok(c) => c,
                Err(e) => {
                    warn!(worker = i, error = %e, retry_in = ?backoff, "cannot start worker");
                    if self.pause(&mut ctl, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let pid = child.id().unwrap_or(0);
            self.slots[i].pid.store(u64::from(pid), Ordering::Relaxed);
            debug!(worker = i, pid, "worker started");
            let started = Instant::now();
            tokio::select! {
                status = child.wait() => {
                    if self.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    self.respawns.fetch_add(1, Ordering::Relaxed);
                    self.forget_in_flight(i);
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff = Duration::from_millis(100);
                    }
                    warn!(worker = i, pid, ?status, respawn_in = ?backoff, "worker exited; respawning");
                    if self.pause(&mut ctl, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                cmd = ctl.recv() => match cmd {
                    Some(Ctl::Reload(ack)) => {
                        self.stop_child(i, &mut child, STOP_WAIT).await;
                        self.reloads.fetch_add(1, Ordering::Relaxed);
                        info!(worker = i, pid, "worker reloaded");
                        // The new worker is started before the reload is reported done.
                        let _ = ack.send(());
                    }
                    Some(Ctl::Stop(wait, ack)) => {
                        self.stop_child(i, &mut child, wait).await;
                        let _ = ack.send(());
                        return;
                    }
                    None => {
                        self.stop_child(i, &mut child, STOP_WAIT).await;
                        return;
                    }
                }
            }
        }
    }

    /// Worker `i` died: the messages it held will never be acknowledged, so the channels that
    /// sent to it stop counting them (messages still queued in its socket are acknowledged
    /// later by its successor; the count saturates at zero).
    fn forget_in_flight(&self, i: usize) {
        for shard in self.serials.iter() {
            for (serial, chan) in shard.lock().iter() {
                if self.dispatch != Dispatch::Fixed || self.owner(*serial) == i {
                    chan.release_in_flight(usize::MAX);
                }
            }
        }
    }

    /// Waits `d` before a respawn, or less if asked to reload (now) or stop (true).
    async fn pause(&self, ctl: &mut mpsc::UnboundedReceiver<Ctl>, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            cmd = ctl.recv() => match cmd {
                Some(Ctl::Reload(ack)) => {
                    let _ = ack.send(());
                    false
                }
                Some(Ctl::Stop(_, ack)) => {
                    let _ = ack.send(());
                    true
                }
                None => true,
            }
        }
    }

    /// Asks the worker to finish what it was sent and exit; kills it after `wait`.
    async fn stop_child(&self, i: usize, child: &mut tokio::process::Child, wait: Duration) {
        self.slots[i]
            .link
            .enqueue(Control::Stop.message(0, Bytes::new()));
        if tokio::time::timeout(wait, child.wait()).await.is_err() {
            warn!(worker = i, "worker did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }

    /// Replaces the workers one at a time; returns how many were replaced.
    pub(crate) async fn reload(&self) -> usize {
        let mut n = 0;
        for s in &self.slots {
            let (tx, rx) = oneshot::channel();
            if s.ctl.send(Ctl::Reload(tx)).is_ok() && rx.await.is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Stops every worker (each first handles what it was sent), within `wait`.
    pub(crate) async fn stop(&self, wait: Duration) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut acks = Vec::new();
        for s in &self.slots {
            let (tx, rx) = oneshot::channel();
            if s.ctl.send(Ctl::Stop(wait, tx)).is_ok() {
                acks.push(rx);
            }
        }
        for a in acks {
            let _ = a.await;
        }
        for s in &self.slots {
            s.link.close();
        }
        self.stopped.cancel();
        info!("worker processes stopped");
    }

    /// The workers' process ids (0 while one is being started).
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .map(|s| s.pid.load(Ordering::Relaxed) as u32)
            .collect()
    }

    /// The handler histogram, summed over the workers' reports.
    pub(crate) fn handler_histogram(&self) -> HandlerHistogram {
        let mut h = HandlerHistogram::default();
        for s in &self.slots {
            h.add(&s.counters.lock().total().handler);
        }
        h
    }

    pub(crate) fn stats(&self) -> IpcStats {
        let mut st = IpcStats {
            workers: self.slots.len(),
            respawns: self.respawns.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            pushes: self.pushes.load(Ordering::Relaxed),
            push_failed: self.push_failed.load(Ordering::Relaxed),
            ..IpcStats::default()
        };
        for s in &self.slots {
            let sent = *s.sent.lock();
            st.messages_sent += sent.messages;
            st.datagrams_sent += sent.datagrams;
            st.dispatched += s.dispatched.load(Ordering::Relaxed);
            let c = s.counters.lock().total();
            st.handled += c.handled;
            st.worker_recv.add(&c.recv);
            st.unknown_channel += c.unknown_channel;
            st.disconnects += c.disconnects;
            st.master_recv.add(&s.master_recv.lock());
        }
        st
    }
}

/// A channel's id and metadata, as `Open` and `Disconnect` carry them.
fn channel_info(chan: &Channel) -> Bytes {
    ChannelInfo {
        id: chan.id().clone(),
        meta: chan.meta().clone(),
    }
    .encode()
}

/// In process mode, a channel's messages go to the workers.
impl Route for Master {
    fn opened(self: &Arc<Self>, chan: &Channel) -> Option<Handling> {
        Master::opened(self, chan);
        None
    }

    fn poll_ready(&self, chan: &Channel, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_capacity(chan, cx)
    }

    fn receive(self: &Arc<Self>, chan: &Channel, message: Frame) -> Option<Handling> {
        self.dispatch(chan, message);
        None
    }

    fn ended(self: &Arc<Self>, chan: &Channel) -> Option<Handling> {
        Master::ended(self, chan);
        None
    }

    fn suspended(self: &Arc<Self>, chan: &Channel) -> Option<Handling> {
        self.session_event(chan, OPEN_SUSPEND);
        None
    }

    fn resumed(self: &Arc<Self>, chan: &Channel) -> Option<Handling> {
        self.session_event(chan, OPEN_RESUME);
        None
    }
}
