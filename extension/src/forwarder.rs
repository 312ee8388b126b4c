//! The forwarder: owns the bounded buffer and the socket to the daemon.
//!
//! It runs as one task driven through [`ForwarderHandle`]. Documents come from
//! the intake, invocation events from the Extensions and Telemetry APIs.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{Config, DEFAULT_DAEMON, FlushMode};
use crate::counters::{Counters, Snapshot};
use crate::enrich::{Report, TraceHeader, report_subsegment};
use crate::wire;

/// Messages queued between intake and forwarder before the intake drops
/// (counted). The forwarder drains them between chunks of a flush, so the
/// queue only fills if the forwarder is stuck.
const QUEUE: usize = 8192;
/// Datagrams sent between two looks at the queue during a flush.
const CHUNK: usize = 64;
/// Recent invocations remembered for `runtimeDone` and the report.
const RECENT: usize = 32;
/// Retry delay in continuous mode while the daemon is unreachable.
const RETRY: Duration = Duration::from_secs(1);
/// At SHUTDOWN, how long to wait for reports of finished invocations that
/// have not arrived yet: Lambda delivers an invocation's `platform.report`
/// only after the extension's `next`, so the last one can race SHUTDOWN.
const REPORT_WAIT: Duration = Duration::from_millis(300);
/// Time kept back from the shutdown deadline for the final flush.
const FLUSH_RESERVE: Duration = Duration::from_millis(300);
/// Drop lines are logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(1);

enum Command {
    Document(Bytes),
    DaemonAddress(String),
    InvocationStarted { request_id: String, trace: TraceHeader },
    RuntimeDone { request_id: String },
    WaitRuntimeDone { request_id: String, reply: oneshot::Sender<()> },
    Report { report: Report, trace: Option<TraceHeader> },
    Flush { reply: oneshot::Sender<()> },
    Shutdown { deadline: Instant, reply: oneshot::Sender<Snapshot> },
}

/// Cloneable handle to the forwarder task.
#[derive(Clone)]
pub struct ForwarderHandle {
    tx: mpsc::Sender<Command>,
}

impl ForwarderHandle {
    /// Starts the forwarder task.
    pub fn spawn(config: &Config, counters: Arc<Counters>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let forwarder = Forwarder {
            rx,
            bound: config.buffer_bytes,
            mode: config.flush,
            daemon_override: config.daemon_override.clone(),
            daemon_from_function: None,
            daemon: None,
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            last_sent: None,
            invocations: VecDeque::new(),
            runtime_done: VecDeque::new(),
            waiters: Vec::new(),
            reports: 0,
            counters,
            deferred: VecDeque::new(),
            dropped_logged: 0,
            drop_logged_at: None,
            unreachable: false,
        };
        tokio::spawn(forwarder.run());
        Self { tx }
    }

    /// Hands over one document without waiting; `false` when the queue is full.
    pub fn offer_document(&self, datagram: Bytes) -> bool {
        self.tx.try_send(Command::Document(datagram)).is_ok()
    }

    /// Passes on the function's daemon address, without waiting.
    pub fn offer_daemon_address(&self, value: String) {
        let _ = self.tx.try_send(Command::DaemonAddress(value));
    }

    /// Records an INVOKE event's trace header for the report subsegment.
    pub async fn invocation_started(&self, request_id: String, trace: TraceHeader) {
        let _ = self.tx.send(Command::InvocationStarted { request_id, trace }).await;
    }

    /// Records `platform.runtimeDone`.
    pub async fn runtime_done(&self, request_id: String) {
        let _ = self.tx.send(Command::RuntimeDone { request_id }).await;
    }

    /// Returns once `platform.runtimeDone` for `request_id` has arrived.
    pub async fn wait_runtime_done(&self, request_id: String) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Command::WaitRuntimeDone { request_id, reply }).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Records `platform.report`; `trace` is the report's own trace header,
    /// used when the INVOKE event was not seen.
    pub async fn report(&self, report: Report, trace: Option<TraceHeader>) {
        let _ = self.tx.send(Command::Report { report, trace }).await;
    }

    /// Sends everything buffered; returns when done (or the daemon failed).
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Command::Flush { reply }).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Flushes until the buffer is empty or `deadline`; returns the counters.
    pub async fn shutdown(&self, deadline: Instant) -> Option<Snapshot> {
        let (reply, done) = oneshot::channel();
        self.tx.send(Command::Shutdown { deadline, reply }).await.ok()?;
        done.await.ok()
    }
}

struct Daemon {
    addr: SocketAddr,
    socket: Arc<UdpSocket>,
}

struct Forwarder {
    rx: mpsc::Receiver<Command>,
    bound: usize,
    mode: FlushMode,
    daemon_override: Option<String>,
    daemon_from_function: Option<String>,
    daemon: Option<Daemon>,
    buffer: VecDeque<Bytes>,
    buffered_bytes: usize,
    /// The last datagram sent: on loopback, a send to a closed port succeeds
    /// and only the next send reports the refusal, so this one is presumed lost.
    last_sent: Option<Bytes>,
    invocations: VecDeque<(String, TraceHeader)>,
    runtime_done: VecDeque<String>,
    waiters: Vec<(String, oneshot::Sender<()>)>,
    reports: u64,
    counters: Arc<Counters>,
    /// Commands that arrived during a flush, other than documents.
    deferred: VecDeque<Command>,
    dropped_logged: u64,
    drop_logged_at: Option<Instant>,
    unreachable: bool,
}

impl Forwarder {
    async fn run(mut self) {
        let mut next_flush = self.schedule_after_flush();
        loop {
            let command = match self.deferred.pop_front() {
                Some(command) => command,
                None => {
                    let far = Instant::now() + Duration::from_secs(3600);
                    tokio::select! {
                        command = self.rx.recv() => match command {
                            Some(command) => command,
                            None => break,
                        },
                        () = tokio::time::sleep_until(next_flush.unwrap_or(far)), if next_flush.is_some() => {
                            self.flush().await;
                            next_flush = self.schedule_after_flush();
                            continue;
                        }
                    }
                }
            };
            self.handle(command).await;
            if self.mode == FlushMode::Continuous
                && self.rx.is_empty()
                && self.deferred.is_empty()
                && !self.buffer.is_empty()
                && !self.unreachable
            {
                self.flush().await;
                next_flush = self.schedule_after_flush();
            } else if self.mode == FlushMode::Continuous && next_flush.is_none() {
                next_flush = self.schedule_after_flush();
            }
        }
    }

    /// When the timer should flush next, given the mode.
    fn schedule_after_flush(&self) -> Option<Instant> {
        match self.mode {
            FlushMode::EndOfInvocation => None,
            FlushMode::Periodic(every) => Some(Instant::now() + every),
            FlushMode::Continuous => (!self.buffer.is_empty()).then(|| Instant::now() + RETRY),
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Document(datagram) => self.push(datagram),
            Command::DaemonAddress(value) => self.set_function_daemon(value),
            Command::InvocationStarted { request_id, trace } => {
                remember(&mut self.invocations, (request_id, trace));
            }
            Command::RuntimeDone { request_id } => {
                let (ready, waiting) = std::mem::take(&mut self.waiters).into_iter().partition(|(id, _)| id == &request_id);
                self.waiters = waiting;
                for (_, reply) in ready {
                    let _ = reply.send(());
                }
                remember(&mut self.runtime_done, request_id);
            }
            Command::WaitRuntimeDone { request_id, reply } => {
                if self.runtime_done.contains(&request_id) {
                    let _ = reply.send(());
                } else {
                    // Waiters that gave up (deadline passed) are forgotten here.
                    self.waiters.retain(|(_, reply)| !reply.is_closed());
                    self.waiters.push((request_id, reply));
                }
            }
            Command::Report { report, trace } => self.enrich(report, trace),
            Command::Flush { reply } => {
                self.flush().await;
                let _ = reply.send(());
            }
            Command::Shutdown { deadline, reply } => {
                self.await_reports(deadline).await;
                self.drain_until(deadline).await;
                let buffered = self.buffer.len() as u64;
                let _ = reply.send(self.counters.snapshot(Some(buffered)));
            }
        }
    }

    /// Buffers one datagram; when full, drops the oldest (like the daemon).
    fn push(&mut self, datagram: Bytes) {
        let len = datagram.len();
        if len > self.bound {
            Counters::bump(&self.counters.dropped);
        } else {
            while self.buffered_bytes + len > self.bound {
                let Some(oldest) = self.buffer.pop_front() else {
                    break;
                };
                self.buffered_bytes -= oldest.len();
                Counters::bump(&self.counters.dropped);
            }
            self.buffered_bytes += len;
            self.buffer.push_back(datagram);
        }
        self.log_drops(false);
    }

    /// Puts an unsent datagram back in front. It may overshoot the bound by
    /// a datagram or two until the next push trims it.
    fn requeue(&mut self, datagram: Bytes) {
        self.buffered_bytes += datagram.len();
        self.buffer.push_front(datagram);
    }

    fn set_function_daemon(&mut self, value: String) {
        if self.daemon_override.is_some() {
            log!(Debug, "ignoring the function's daemon address {value:?}: LAMBDA_XRAY_EXTENSION_DAEMON_ADDRESS is set");
            return;
        }
        if wire::daemon_udp_part(&value).is_none() {
            log!(Warn, "ignoring the function's daemon address {value:?}: not host:port or tcp:.. udp:..");
            return;
        }
        if self.daemon_from_function.as_deref() != Some(value.as_str()) {
            log!(Debug, "daemon address from the function: {value}");
            self.daemon_from_function = Some(value);
            self.daemon = None;
        }
    }

    /// The daemon address in force: the extension's setting, else what the
    /// function said, else Lambda's well-known address.
    fn daemon_value(&self) -> &str {
        self.daemon_override.as_deref().or(self.daemon_from_function.as_deref()).unwrap_or(DEFAULT_DAEMON)
    }

    async fn connect(&mut self) -> Option<Arc<UdpSocket>> {
        if let Some(daemon) = &self.daemon {
            return Some(daemon.socket.clone());
        }
        let value = self.daemon_value().to_owned();
        let Some(addr) = wire::resolve_daemon(&value).await else {
            log!(Warn, "cannot resolve the daemon address {value:?}; keeping documents");
            return None;
        };
        match connect_udp(addr) {
            Ok(socket) => {
                log!(Debug, "forwarding to the daemon at {addr}");
                let socket = Arc::new(socket);
                self.daemon = Some(Daemon { addr, socket: socket.clone() });
                Some(socket)
            }
            Err(e) => {
                log!(Warn, "cannot open a socket to the daemon at {addr}: {e}");
                None
            }
        }
    }

    /// Sends everything buffered, oldest first, until empty or the daemon fails.
    async fn flush(&mut self) {
        self.absorb_queue();
        if self.buffer.is_empty() {
            return;
        }
        let Some(socket) = self.connect().await else {
            return;
        };
        self.recover_refused(&socket);
        let mut in_chunk = 0;
        let mut stalls = 0;
        while let Some(datagram) = self.buffer.pop_front() {
            self.buffered_bytes -= datagram.len();
            match socket.try_send(&datagram) {
                Ok(_) => {
                    Counters::bump(&self.counters.forwarded);
                    self.last_sent = Some(datagram);
                    if self.unreachable {
                        log!(Info, "the daemon is reachable again");
                        self.unreachable = false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.requeue(datagram);
                    stalls += 1;
                    let writable = tokio::time::timeout(Duration::from_millis(20), socket.writable()).await;
                    if stalls > 3 || writable.is_err() {
                        log!(Debug, "the daemon socket is full; retrying on the next flush");
                        break;
                    }
                }
                Err(e) => {
                    self.requeue(datagram);
                    self.requeue_last_sent();
                    if !self.unreachable {
                        let addr = self.daemon.as_ref().map(|d| d.addr);
                        log!(Warn, "the daemon at {addr:?} is unreachable ({e}); keeping documents for the next flush");
                        self.unreachable = true;
                    }
                    break;
                }
            }
            in_chunk += 1;
            if in_chunk == CHUNK {
                in_chunk = 0;
                // Let the intake run, then take what it queued, so a long
                // flush never stalls intake.
                tokio::task::yield_now().await;
                self.absorb_queue();
            }
        }
        self.recover_refused(&socket);
        self.log_drops(true);
    }

    /// If the kernel reported a refusal since the last send, the datagram
    /// sent last never arrived: put it back.
    fn recover_refused(&mut self, socket: &UdpSocket) {
        if let Ok(Some(e)) = socket.take_error() {
            log!(Debug, "daemon send error reported late: {e}");
            self.requeue_last_sent();
            self.unreachable = true;
        }
    }

    fn requeue_last_sent(&mut self) {
        if let Some(lost) = self.last_sent.take() {
            self.counters.forwarded.fetch_sub(1, Relaxed);
            self.requeue(lost);
        }
    }

    /// Moves queued documents into the buffer; keeps other commands for later.
    fn absorb_queue(&mut self) {
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Document(datagram) => self.push(datagram),
                other => self.deferred.push_back(other),
            }
        }
    }

    /// SHUTDOWN: flush, retrying while the daemon refuses, until empty or the deadline.
    async fn drain_until(&mut self, deadline: Instant) {
        loop {
            self.flush().await;
            if self.buffer.is_empty() {
                // A refusal of the very last datagram shows only now.
                tokio::task::yield_now().await;
                if let Some(daemon) = &self.daemon {
                    let socket = daemon.socket.clone();
                    self.recover_refused(&socket);
                }
                if self.buffer.is_empty() {
                    return;
                }
            }
            let pause = Duration::from_millis(20);
            if Instant::now() + pause >= deadline {
                log!(Warn, "shutdown deadline reached with {} documents unsent", self.buffer.len());
                return;
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Waits (briefly, see [`REPORT_WAIT`]) for the reports of invocations
    /// whose runtime is done but whose report has not arrived, so SHUTDOWN
    /// does not lose the last invocation's report subsegment.
    async fn await_reports(&mut self, deadline: Instant) {
        let until = (Instant::now() + REPORT_WAIT).min(deadline.checked_sub(FLUSH_RESERVE).unwrap_or(deadline));
        while self.invocations.iter().any(|(id, _)| self.runtime_done.contains(id)) {
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(Command::Report { report, trace })) => self.enrich(report, trace),
                Ok(Some(Command::Document(datagram))) => self.push(datagram),
                Ok(Some(Command::RuntimeDone { request_id })) => remember(&mut self.runtime_done, request_id),
                Ok(Some(other)) => self.deferred.push_back(other),
                Ok(None) | Err(_) => break,
            }
        }
    }

    fn enrich(&mut self, report: Report, trace: Option<TraceHeader>) {
        let cold_start = self.reports == 0 || report.init_duration_ms.is_some();
        self.reports += 1;
        let known = self
            .invocations
            .iter()
            .position(|(id, _)| id == &report.request_id)
            .and_then(|i| self.invocations.remove(i))
            .map(|(_, trace)| trace);
        let Some(trace) = known.or(trace) else {
            return;
        };
        if let Some(body) = report_subsegment(&trace, &report, cold_start) {
            Counters::bump(&self.counters.enriched);
            self.push(Bytes::from(wire::frame(&body)));
        }
    }

    /// Logs the counters when something was dropped since the last such line.
    fn log_drops(&mut self, force: bool) {
        let dropped = self.counters.dropped.load(Relaxed);
        if dropped == self.dropped_logged {
            return;
        }
        let now = Instant::now();
        if !force && self.drop_logged_at.is_some_and(|at| now.duration_since(at) < DROP_LOG_EVERY) {
            return;
        }
        self.dropped_logged = dropped;
        self.drop_logged_at = Some(now);
        let line = self.counters.snapshot(Some(self.buffer.len() as u64)).line();
        log!(Warn, "dropped documents (buffer full, oldest first): {line}");
    }
}

/// Keeps the `RECENT` newest entries.
fn remember<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() == RECENT {
        list.pop_front();
    }
    list.push_back(item);
}

/// A connected socket, so the kernel reports a refusing daemon to us.
fn connect_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr =
        if addr.is_ipv4() { (std::net::Ipv4Addr::UNSPECIFIED, 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}
