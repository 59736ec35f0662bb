//! A client that keeps a session across connections: every message from the server once and
//! in order, its own messages kept until the server's app took them, reconnects with
//! jittered backoff, resumes by itself, and says when the app must resync.
//!
//! One task owns the connection of the moment; the app talks to it through a
//! [`SessionClient`]: events come out of [`SessionClient::next`], messages go in through
//! [`SessionClient::send`] (also from other tasks, through a [`SessionSender`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kim_core::{CloseReason, Frame, FrameReader, FrameWriter};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};

use crate::backoff::Backoff;
use crate::encoding::{Encoding, How, ServerFrame};
use crate::{Client, ClientError, Sender};

/// What a login asks of sessions; a [`Dial`] puts it where the server's login reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Begin a session.
    Start,
    /// Resume the session `token`, the last message received being `last` (0 for none).
    Resume {
        /// The session's token.
        token: String,
        /// The last number received.
        last: u64,
    },
}

impl Login {
    /// `PROTOCOL.md`'s form in a websocket URL's query: `session=1`, or
    /// `resume=<token>&last=<seq>`.
    pub fn query(&self) -> String {
        match self {
            Login::Start => "session=1".into(),
            Login::Resume { token, last } => format!("resume={token}&last={last}"),
        }
    }

    /// `PROTOCOL.md`'s form in a login frame's text: `#session`, or `#resume <token> <seq>`.
    pub fn frame_text(&self) -> String {
        match self {
            Login::Start => "#session".into(),
            Login::Resume { token, last } => format!("#resume {token} {last}"),
        }
    }
}

/// Makes a connection and logs in, asking for `login`'s session in the place the server's
/// login reads it (a URL's query, a login frame); the [`SessionClient`] then reads the
/// server's answer. Any `Fn(Login) -> impl Future<Output = Result<Client, ClientError>>` is one.
pub trait Dial: Send + Sync + 'static {
    /// The connection's reader.
    type Reader: FrameReader + Send + 'static;
    /// The connection's writer.
    type Writer: FrameWriter + Send + 'static;
    /// Connects and logs in.
    fn dial(
        &self,
        login: Login,
    ) -> impl Future<Output = Result<Client<Self::Reader, Self::Writer>, ClientError>> + Send;
}

impl<F, Fut, R, W> Dial for F
where
    F: Fn(Login) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Client<R, W>, ClientError>> + Send,
    R: FrameReader + Send + 'static,
    W: FrameWriter + Send + 'static,
{
    type Reader = R;
    type Writer = W;

    fn dial(&self, login: Login) -> impl Future<Output = Result<Client<R, W>, ClientError>> + Send {
        self(login)
    }
}

/// A [`SessionClient`]'s settings.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Reconnect windows: a delay drawn from `[0, min(max, initial * 2^attempt))`. Default
    /// 1 s doubling to 20 s, well inside a server's 120 s session window.
    pub backoff_initial: Duration,
    /// See `backoff_initial`.
    pub backoff_max: Duration,
    /// After the server went away as a whole (close 1001 or 1012, or its shutdown over TCP
    /// frames), the first window is at least this wide. Default 5 s.
    pub restart_spread: Duration,
    /// Time allowed to connect, log in and get the session's answer. Default 10 s.
    pub connect_timeout: Duration,
    /// Silence after which the client pings. Default 25 s.
    pub ping_interval: Duration,
    /// Silence after the ping after which the connection is given up and resumed. Default
    /// 10 s.
    pub pong_timeout: Duration,
    /// Acknowledge every this many messages... Default 32.
    pub ack_every: u64,
    /// ... and this long after the first one not acknowledged. Default 1 s.
    pub ack_after: Duration,
    /// Messages waiting to be sent or acknowledged at most; [`SessionClient::send`] past it
    /// fails with [`SendError::QueueFull`]. Default 1,000.
    pub max_queued: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(20),
            restart_spread: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            ack_every: 32,
            ack_after: Duration::from_secs(1),
            max_queued: 1000,
        }
    }
}

/// What happens to a [`SessionClient`], in order.
#[derive(Debug)]
pub enum Event {
    /// The server answered a login: a session began (`Started`), was resumed (`replay` missed
    /// messages follow), or could not be resumed (`New`: the app resyncs from its own store).
    Session {
        /// How the session turned out.
        how: How,
        /// The session's token: a credential (do not log it); the client resumes with it by
        /// itself.
        token: String,
        /// Messages replayed next.
        replay: u64,
    },
    /// A message, with its number in the session.
    Message {
        /// Its number.
        seq: u64,
        /// The message.
        frame: Frame,
    },
    /// A frame outside the session's numbering (the app's login reply, say).
    Reply(Frame),
    /// The server's app took the client's messages up to this number.
    Acked(u32),
    /// The connection was lost or given up on (why); the client reconnects.
    Lost(String),
    /// The next attempt waits this long.
    Reconnecting {
        /// The delay.
        delay: Duration,
        /// Retries since the last connection that worked.
        attempt: u32,
    },
    /// The login was refused (an HTTP 4xx instead of the upgrade, a close before the
    /// session's answer, or an answer that is not a session's); the client stopped.
    Refused(String),
    /// The client stopped: [`SessionClient::close`] (`by_server` false), or a close by the
    /// server for good (the app's, a newer login's, a protocol error).
    Closed {
        /// The server's close, if it sent one.
        reason: Option<CloseReason>,
        /// Whether the server closed.
        by_server: bool,
    },
}

/// Why [`SessionClient::send`] failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// `max_queued` messages wait to be sent or acknowledged already.
    #[error("{0} messages are waiting to be sent or acknowledged (max_queued)")]
    QueueFull(usize),
    /// The client stopped.
    #[error("the session client has stopped")]
    Stopped,
}

enum Command {
    Send(Option<u32>, Frame),
    Close,
}

/// Sends on a [`SessionClient`] from other tasks.
#[derive(Clone)]
pub struct SessionSender {
    commands: mpsc::UnboundedSender<Command>,
    queued: Arc<AtomicUsize>,
    next_number: Arc<AtomicU32>,
    numbered: bool,
    max_queued: usize,
}

impl SessionSender {
    /// Sends `frame` now if connected, or once the session is back; numbered (if the encoding
    /// numbers the client's messages) and kept until the server's app took it. Returns its
    /// number.
    pub fn send(&self, frame: Frame) -> Result<Option<u32>, SendError> {
        let max = self.max_queued;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| SendError::QueueFull(max))?;
        let n = self
            .numbered
            .then(|| self.next_number.fetch_add(1, Ordering::Relaxed));
        self.commands.send(Command::Send(n, frame)).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            SendError::Stopped
        })?;
        Ok(n)
    }
}

/// A client that keeps a session across connections (see the module's docs).
pub struct SessionClient {
    events: mpsc::Receiver<Event>,
    sender: SessionSender,
    task: tokio::task::JoinHandle<()>,
}

impl SessionClient {
    /// Starts connecting through `dial`, speaking `encoding`, and from then on reconnects
    /// and resumes by itself until [`SessionClient::close`] or a close by the server for good.
    pub fn start<D: Dial, E: Encoding>(dial: D, encoding: E, options: SessionOptions) -> Self {
        let (events_tx, events) = mpsc::channel(1024);
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let sender = SessionSender {
            commands: commands_tx,
            queued: Arc::new(AtomicUsize::new(0)),
            next_number: Arc::new(AtomicU32::new(1)),
            numbered: encoding.numbers_upstream(),
            max_queued: options.max_queued,
        };
        let driver = Driver {
            backoff: Backoff::new(options.backoff_initial, options.backoff_max),
            dial,
            encoding,
            options,
            events: events_tx,
            commands,
            queued: sender.queued.clone(),
            token: None,
            last: 0,
            acked: 0,
            outbox: VecDeque::new(),
        };
        SessionClient {
            events,
            sender,
            task: tokio::spawn(driver.run()),
        }
    }

    /// The next event; `None` once the client stopped and every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// See [`SessionSender::send`].
    pub fn send(&self, frame: Frame) -> Result<Option<u32>, SendError> {
        self.sender.send(frame)
    }

    /// A handle that sends from other tasks.
    pub fn sender(&self) -> SessionSender {
        self.sender.clone()
    }

    /// Acknowledges what arrived, closes the connection cleanly (which ends the session on
    /// the server) and stops; returns once the connection is closed.
    pub async fn close(mut self) {
        let _ = self.sender.commands.send(Command::Close);
        while self.events.recv().await.is_some() {}
        let _ = (&mut self.task).await;
    }
}

impl Drop for SessionClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a connection ended.
enum End {
    /// Lost (why): resume.
    Lost(String),
    /// Closed by the server.
    Closed(CloseReason),
    /// Closed by the app.
    Stopped,
    /// The login was refused (the event said so).
    Refused,
}

/// Close codes after which the server wants its clients back, with a fresh login.
fn comes_back(reason: &CloseReason) -> bool {
    matches!(reason.code, 1001 | 1011 | 1012 | 1013) || going_away(reason)
}

/// The server going away as a whole: all its clients come back at once. Over TCP frames a
/// close has no code, only the server's reason.
fn going_away(reason: &CloseReason) -> bool {
    matches!(reason.code, 1001 | 1012)
        || (reason.code == CloseReason::NO_STATUS && reason.reason == "server shutting down")
}

/// A refusal of the upgrade that trying again would not change (an HTTP 4xx other than 408
/// and 429).
fn refused(e: &ClientError) -> bool {
    let ClientError::Handshake(msg) = e else {
        return false;
    };
    let status = msg
        .strip_prefix("status ")
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse::<u16>().ok());
    matches!(status, Some(s) if (400..500).contains(&s) && s != 408 && s != 429)
}

struct Driver<D, E> {
    dial: D,
    encoding: E,
    options: SessionOptions,
    backoff: Backoff,
    events: mpsc::Sender<Event>,
    commands: mpsc::UnboundedReceiver<Command>,
    queued: Arc<AtomicUsize>,
    /// The session's token (`None`: the next login begins one), the last number received
    /// and the last acknowledged.
    token: Option<String>,
    last: u64,
    acked: u64,
    /// The client's messages in order, with whether this connection has written them:
    /// numbered ones stay until acknowledged, unnumbered ones until written.
    outbox: VecDeque<(Option<u32>, Frame, bool)>,
}

impl<D: Dial, E: Encoding> Driver<D, E> {
    async fn emit(&self, event: Event) {
        let _ = self.events.send(event).await;
    }

    async fn run(mut self) {
        loop {
            let login = match &self.token {
                Some(token) => Login::Resume {
                    token: token.clone(),
                    last: self.last,
                },
                None => Login::Start,
            };
            let end = match timeout(self.options.connect_timeout, self.open(login)).await {
                Ok(Ok(mut client)) => {
                    let end = self.live(&mut client).await;
                    if matches!(end, End::Stopped) {
                        // A clean close: the session ends on the server too.
                        let _ = client.close().await;
                    }
                    end
                }
                Ok(Err(end)) => end,
                Err(_) => End::Lost("connecting timed out".into()),
            };
            match end {
                End::Lost(why) => self.emit(Event::Lost(why)).await,
                End::Closed(reason) if comes_back(&reason) => {
                    // The server ended the session and wants its clients back.
                    self.token = None;
                    if going_away(&reason) {
                        self.backoff.start_at(self.options.restart_spread);
                    }
                    self.emit(Event::Lost(format!("closed by the server: {reason}")))
                        .await;
                }
                End::Closed(reason) => {
                    let event = Event::Closed {
                        reason: Some(reason),
                        by_server: true,
                    };
                    return self.emit(event).await;
                }
                End::Stopped => {
                    let event = Event::Closed {
                        reason: None,
                        by_server: false,
                    };
                    return self.emit(event).await;
                }
                End::Refused => return,
            }
            if !self.wait_retry().await {
                let event = Event::Closed {
                    reason: None,
                    by_server: false,
                };
                return self.emit(event).await;
            }
        }
    }

    /// Connects, logs in and reads the session's answer.
    async fn open(&mut self, login: Login) -> Result<Client<D::Reader, D::Writer>, End> {
        let mut client = match self.dial.dial(login).await {
            Ok(c) => c,
            Err(e) if refused(&e) => {
                self.emit(Event::Refused(e.to_string())).await;
                return Err(End::Refused);
            }
            Err(ClientError::Closed(reason)) => return Err(self.closed_at_login(reason).await),
            Err(e) => return Err(End::Lost(e.to_string())),
        };
        let answer = match client.read().await {
            Ok(frame) => self.encoding.read(frame),
            Err(ClientError::Closed(reason)) => return Err(self.closed_at_login(reason).await),
            Err(e) => return Err(End::Lost(e.to_string())),
        };
        let (how, token, replay) = match answer {
            ServerFrame::Opened { how, token, replay } => (how, token, replay),
            // The server does not speak sessions, or not this encoding: trying again would
            // get the same answer.
            other => {
                let why = format!("the login was not answered with a session's answer: {other:?}");
                self.emit(Event::Refused(why)).await;
                return Err(End::Refused);
            }
        };
        self.token = Some(token.clone());
        if how != How::Resumed {
            // Nothing the old session held will come.
            self.last = 0;
            self.acked = 0;
        }
        self.backoff.reset();
        self.emit(Event::Session { how, token, replay }).await;
        // Everything not acknowledged goes again, in order, on this connection.
        for entry in &mut self.outbox {
            entry.2 = false;
        }
        Ok(client)
    }

    /// A close before the session's answer: a refusal, unless the server wants us back.
    async fn closed_at_login(&mut self, reason: CloseReason) -> End {
        if comes_back(&reason) {
            return End::Closed(reason);
        }
        self.emit(Event::Refused(reason.to_string())).await;
        End::Refused
    }

    /// Writes what this connection has not written yet.
    async fn flush(&mut self, client: &Sender<D::Writer>) -> Result<(), ClientError> {
        let mut i = 0;
        while i < self.outbox.len() {
            let (n, frame, written) = &mut self.outbox[i];
            if !*written {
                client.send(self.encoding.message(*n, frame)).await?;
                *written = true;
            }
            if n.is_none() {
                self.outbox.remove(i);
                self.queued.fetch_sub(1, Ordering::AcqRel);
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    async fn send_ack(&mut self, client: &Sender<D::Writer>) -> Result<(), ClientError> {
        if self.last > self.acked {
            client.send(self.encoding.ack(self.last)).await?;
            self.acked = self.last;
        }
        Ok(())
    }

    /// Serves one connection until it ends.
    async fn live(&mut self, client: &mut Client<D::Reader, D::Writer>) -> End {
        // Writes go through a sender: the reader need not be `Sync`.
        let writer = client.sender();
        if let Err(e) = self.flush(&writer).await {
            return End::Lost(e.to_string());
        }
        let opts = self.options.clone();
        let mut heard = Instant::now();
        let mut pinged: Option<(Instant, u64)> = None;
        let mut ack_at: Option<Instant> = None;
        loop {
            let check_at = match pinged {
                Some((at, _)) => at + opts.pong_timeout,
                None => heard + opts.ping_interval,
            };
            let ack_due = async {
                match ack_at {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = client.read() => {
                    heard = Instant::now();
                    pinged = None;
                    let frame = match read {
                        Ok(frame) => frame,
                        Err(ClientError::Closed(reason)) => return End::Closed(reason),
                        Err(e) => return End::Lost(e.to_string()),
                    };
                    match self.encoding.read(frame) {
                        ServerFrame::Message { seq, frame } => {
                            if seq != self.last + 1 {
                                return End::Lost(format!("message {seq} after {}", self.last));
                            }
                            self.last = seq;
                            self.emit(Event::Message { seq, frame }).await;
                            if self.last - self.acked >= opts.ack_every {
                                ack_at = None;
                                if let Err(e) = self.send_ack(&writer).await {
                                    return End::Lost(e.to_string());
                                }
                            } else if ack_at.is_none() {
                                ack_at = Some(Instant::now() + opts.ack_after);
                            }
                        }
                        ServerFrame::Ack(n) => {
                            let mut taken = 0;
                            while let Some((Some(m), _, true)) = self.outbox.front() {
                                if *m > n {
                                    break;
                                }
                                self.outbox.pop_front();
                                taken += 1;
                            }
                            self.queued.fetch_sub(taken, Ordering::AcqRel);
                            self.emit(Event::Acked(n)).await;
                        }
                        ServerFrame::Pong => {}
                        ServerFrame::Opened { .. } => {}
                        ServerFrame::Other(frame) => self.emit(Event::Reply(frame)).await,
                    }
                }
                command = self.commands.recv() => match command {
                    Some(Command::Send(n, frame)) => {
                        self.outbox.push_back((n, frame, false));
                        if let Err(e) = self.flush(&writer).await {
                            return End::Lost(e.to_string());
                        }
                    }
                    Some(Command::Close) | None => {
                        let _ = self.send_ack(&writer).await;
                        return End::Stopped;
                    }
                },
                _ = ack_due => {
                    ack_at = None;
                    if let Err(e) = self.send_ack(&writer).await {
                        return End::Lost(e.to_string());
                    }
                }
                _ = sleep_until(check_at) => {
                    match pinged {
                        // Pongs to protocol pings are counted, not returned by `read`.
                        Some((_, pongs)) if client.pongs() > pongs => {
                            heard = Instant::now();
                            pinged = None;
                        }
                        Some(_) => {
                            return End::Lost(format!(
                                "nothing heard for {:?}",
                                heard.elapsed()
                            ));
                        }
                        None => {
                            let ping = self.encoding.ping().unwrap_or_else(|| Frame::ping(""));
                            if let Err(e) = writer.send(ping).await {
                                return End::Lost(e.to_string());
                            }
                            pinged = Some((Instant::now(), client.pongs()));
                        }
                    }
                }
            }
        }
    }

    /// Waits before the next attempt, taking what the app sends meanwhile; false if the app
    /// closed the client.
    async fn wait_retry(&mut self) -> bool {
        let delay = self.backoff.next_delay();
        let attempt = self.backoff.attempt();
        self.emit(Event::Reconnecting { delay, attempt }).await;
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
                command = self.commands.recv() => match command {
                    Some(Command::Send(n, frame)) => self.outbox.push_back((n, frame, false)),
                    Some(Command::Close) | None => return false,
                },
            }
        }
    }
}
