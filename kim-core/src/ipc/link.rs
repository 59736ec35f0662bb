//! One end of an IPC socketpair: a bounded queue of outgoing messages drained by a writer
//! task, and the reading side driven by its owner.
//!
//! The writer never spins: when the socket is full (`EAGAIN`) it waits for writability. The
//! queue is bounded in payload bytes, and never refuses a message: whoever produces the
//! messages waits for capacity first ([`Link::poll_capacity`], [`Link::capacity`]) where it can be slowed
//! down (a channel's reading in the master, a worker's intake), and channel events and
//! control messages, bounded elsewhere, go in regardless.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::Notify;

use super::in_transit::InTransit;
use super::wire::{ChunkSender, Outgoing, Reassembler, Received, SendStats};

/// What a queued message keeps until it is sent.
type Attached = Option<InTransit>;

struct Queue {
    msgs: VecDeque<Outgoing<Attached>>,
    bytes: usize,
    /// Tasks waiting for capacity.
    waiters: Vec<Waker>,
    /// Set when the link is shut: the writer stops once the queue is empty.
    closing: bool,
}

/// One end of a socketpair with its outgoing queue.
pub(crate) struct Link {
    sock: UnixDatagram,
    queue: Mutex<Queue>,
    wake_writer: Notify,
    /// Notified when the writer has drained the queue (or stopped).
    drained: Notify,
    limit: usize,
    chunk: usize,
}

impl Link {
    pub(crate) fn new(sock: UnixDatagram, limit: usize, chunk: usize) -> Arc<Link> {
        super::wire::raise_buffers(sock.as_fd(), super::SOCKET_BUFFER);
        Arc::new(Link {
            sock,
            queue: Mutex::new(Queue {
                msgs: VecDeque::new(),
                bytes: 0,
                waiters: Vec::new(),
                closing: false,
            }),
            wake_writer: Notify::new(),
            drained: Notify::new(),
            limit: limit.max(1),
            chunk,
        })
    }

    /// Queues a message whatever the bound (events and control messages, bounded elsewhere).
    pub(crate) fn enqueue(&self, msg: Outgoing) {
        self.enqueue_attached(msg.attach(None));
    }

    /// Queues a message with what must live until it is sent: a worker's push and its
    /// channel's in-flight count.
    pub(crate) fn enqueue_attached(&self, msg: Outgoing<Attached>) {
        {
            let mut q = self.queue.lock();
            q.bytes += msg.payload.len();
            q.msgs.push_back(msg);
        }
        self.wake_writer.notify_one();
    }

    /// Ready while the queue is under its bound; otherwise the task is woken once the writer
    /// has brought it under half the bound.
    pub(crate) fn poll_capacity(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut q = self.queue.lock();
        if q.bytes < self.limit {
            return Poll::Ready(());
        }
        if !q.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            q.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits until the queue is under its bound.
    pub(crate) async fn capacity(&self) {
        std::future::poll_fn(|cx| self.poll_capacity(cx)).await
    }

    /// True while the queue is under its bound.
    pub(crate) fn has_capacity(&self) -> bool {
        self.queue.lock().bytes < self.limit
    }

    /// Payload bytes queued and not yet sent.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queue.lock().bytes
    }

    /// Lets the writer stop once everything queued is sent.
    pub(crate) fn close(&self) {
        self.queue.lock().closing = true;
        self.wake_writer.notify_one();
    }

    /// Sends queued messages until the link is closed and drained, or the socket fails.
    /// Keeps `stats` up to date with the sender's counters.
    pub(crate) async fn write_loop(self: Arc<Self>, stats: &Mutex<SendStats>) -> io::Result<()> {
        let mut sender = ChunkSender::new(self.chunk);
        let fd = self.sock.as_fd();
        let mut batch: VecDeque<Outgoing<Attached>> = VecDeque::new();
        let result = loop {
            let idle = {
                let mut q = self.queue.lock();
                if q.msgs.is_empty() && batch.is_empty() {
                    Some(q.closing)
                } else {
                    std::mem::swap(&mut batch, &mut q.msgs);
                    None
                }
            };
            if let Some(closing) = idle {
                self.drained.notify_waiters();
                if closing {
                    break Ok(());
                }
                self.wake_writer.notified().await;
                continue;
            }
            let mut sent_bytes = 0;
            let mut failed = None;
            while !batch.is_empty() {
                // Small messages go out many per syscall.
                let r = loop {
                    let slice = batch.make_contiguous();
                    match self
                        .sock
                        .try_io(Interest::WRITABLE, || sender.send_batch(fd, slice))
                    {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if let Err(e) = self.sock.writable().await {
                                break Err(e);
                            }
                        }
                        r => break r,
                    }
                };
                match r {
                    Ok(0) => {}
                    Ok(n) => {
                        for m in batch.drain(..n) {
                            sent_bytes += m.payload.len();
                        }
                        continue;
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
                let msg = batch.front_mut().expect("not empty");
                let r = loop {
                    match self
                        .sock
                        .try_io(Interest::WRITABLE, || sender.send(fd, msg))
                    {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if let Err(e) = self.sock.writable().await {
                                break Err(e);
                            }
                        }
                        r => break r,
                    }
                };
                if let Err(e) = r {
                    failed = Some(e);
                    break;
                }
                sent_bytes += msg.payload.len();
                batch.pop_front();
            }
            *stats.lock() = sender.stats();
            let waiters = {
                let mut q = self.queue.lock();
                q.bytes -= sent_bytes;
                if failed.is_some() {
                    // Nothing more can be sent: release everyone.
                    q.closing = true;
                    q.bytes = 0;
                    q.msgs.clear();
                    std::mem::take(&mut q.waiters)
                } else if q.bytes < self.limit / 2 || q.bytes == 0 {
                    std::mem::take(&mut q.waiters)
                } else {
                    Vec::new()
                }
            };
            for w in waiters {
                w.wake();
            }
            if let Some(e) = failed {
                batch.clear();
                break Err(e);
            }
        };
        self.drained.notify_waiters();
        result
    }

    /// Receives the next whole message if one is already there (`WouldBlock` if not).
    pub(crate) fn recv_now(&self, rx: &mut Reassembler) -> io::Result<Received> {
        rx.recv(self.sock.as_fd())
    }

    /// Receives the next whole message, waiting for readability as needed.
    pub(crate) async fn recv(&self, rx: &mut Reassembler) -> io::Result<Received> {
        let fd = self.sock.as_fd();
        loop {
            match self.sock.try_io(Interest::READABLE, || rx.recv(fd)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.sock.readable().await?,
                r => return r,
            }
        }
    }
}
