//! The forwarder: owns the bounded buffer and the socket to the daemon.
//!
//! It runs as one task driven through [`ForwarderHandle`]. Documents and the
//! function's control messages come from the intake, invocation events from
//! the Extensions and Telemetry APIs.
//!
//! It also knows when an invocation's documents are all in: when the function
//! says so (the library's `invocation_done` control message, which arrives
//! after the invocation's documents on the same socket, so they are already
//! queued here), or else when the Telemetry API reports `platform.runtimeDone`.
//! If the Telemetry API goes silent for a function that never says it is done,
//! waiting for it stops (see [`TELEMETRY_PATIENCE`]).

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{Config, DEFAULT_DAEMON, FlushMode};
use crate::counters::{Counters, Snapshot};
use crate::enrich::{Report, TraceHeader, report_subsegment};
use crate::otlp::{JobResult, Otlp};
use crate::telemetry::Event;
use crate::wire;

/// Messages queued between intake and forwarder before the intake drops
/// (counted). The forwarder drains them between chunks of a flush, so the
/// queue only fills if the forwarder is stuck.
const QUEUE: usize = 8192;
/// Document bytes queued between intake and forwarder, at most: while the
/// forwarder is busy (a name lookup, a full socket, shutdown retries), what the
/// function sends beyond this is dropped and counted, so memory stays within
/// the buffer bound plus this.
pub const QUEUE_BYTES: usize = 512 * 1024;
/// How long an invocation of a function that never sent `invocation_done`
/// waits for the Telemetry API to show any sign of life (a batch, or a record
/// of this invocation) before the extension stops waiting for telemetry. Once
/// it has gone silent, later invocations do not wait for it at all, until a
/// batch arrives again.
pub const TELEMETRY_PATIENCE: Duration = Duration::from_millis(500);
/// Seconds between name lookups of a daemon address that failed to resolve.
const RESOLVE_RETRY: Duration = Duration::from_secs(30);
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
    InvocationDone { request_id: String },
    InvocationStarted { request_id: String, trace: TraceHeader },
    Telemetry(Vec<Event>),
    WaitEnd { request_id: String, started: Instant, reply: oneshot::Sender<End> },
    Flush { until: Instant, reply: oneshot::Sender<()> },
    Shutdown { deadline: Instant, reply: oneshot::Sender<Snapshot> },
}

/// Why the wait for the end of an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The function said its documents are all sent: they are buffered.
    Done,
    /// `platform.runtimeDone` arrived: documents may still be in the intake socket.
    RuntimeDone,
    /// The function never says it is done and the Telemetry API is silent.
    TelemetrySilent,
}

/// Cloneable handle to the forwarder task.
#[derive(Clone)]
pub struct ForwarderHandle {
    tx: mpsc::Sender<Command>,
    /// Bytes of documents in `tx`, bounded by [`QUEUE_BYTES`].
    queued_bytes: Arc<AtomicUsize>,
}

impl ForwarderHandle {
    /// Starts the forwarder task.
    pub fn spawn(config: &Config, counters: Arc<Counters>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let otlp = config.otlp.clone().map(|settings| Otlp::new(settings, config.buffer_bytes, counters.clone()));
        let forwarder = Forwarder {
            rx,
            daemon_on: config.destinations.daemon,
            otlp,
            queued_bytes: queued_bytes.clone(),
            bound: config.buffer_bytes,
            mode: config.flush,
            daemon_override: config.daemon_override.clone(),
            daemon_from_function: None,
            daemon: None,
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            last_sent: None,
            invocations: VecDeque::new(),
            done: VecDeque::new(),
            runtime_done: VecDeque::new(),
            seen_in_telemetry: VecDeque::new(),
            waiters: Vec::new(),
            speaks_done: false,
            telemetry_at: None,
            telemetry_silent: false,
            resolve_failed: None,
            reports: 0,
            counters,
            deferred: VecDeque::new(),
            dropped_logged: 0,
            drop_logged_at: None,
            unreachable: false,
        };
        tokio::spawn(forwarder.run());
        Self { tx, queued_bytes }
    }

    /// Hands over one document without waiting; `false` when the queue is
    /// full (by count or by [`QUEUE_BYTES`]).
    pub fn offer_document(&self, datagram: Bytes) -> bool {
        let len = datagram.len();
        if self.queued_bytes.fetch_add(len, Relaxed) + len > QUEUE_BYTES {
            self.queued_bytes.fetch_sub(len, Relaxed);
            return false;
        }
        if self.tx.try_send(Command::Document(datagram)).is_err() {
            self.queued_bytes.fetch_sub(len, Relaxed);
            return false;
        }
        true
    }

    /// Passes on the function's daemon address, without waiting.
    pub fn offer_daemon_address(&self, value: String) {
        let _ = self.tx.try_send(Command::DaemonAddress(value));
    }

    /// Passes on the function's word that an invocation's documents are all
    /// sent, without waiting (if the queue is full, `runtimeDone` still comes).
    pub fn offer_invocation_done(&self, request_id: String) {
        let _ = self.tx.try_send(Command::InvocationDone { request_id });
    }

    /// Hands over what a Telemetry API batch held.
    pub async fn telemetry(&self, events: Vec<Event>) {
        let _ = self.tx.send(Command::Telemetry(events)).await;
    }

    /// Records an INVOKE event's trace header for the report subsegment.
    pub async fn invocation_started(&self, request_id: String, trace: TraceHeader) {
        let _ = self.tx.send(Command::InvocationStarted { request_id, trace }).await;
    }

    /// Returns when the invocation `request_id` (whose INVOKE arrived at
    /// `started`) has ended, and how that became known. The caller bounds
    /// the wait by the invocation's deadline.
    pub async fn wait_end(&self, request_id: String, started: Instant) -> End {
        let (reply, end) = oneshot::channel();
        if self.tx.send(Command::WaitEnd { request_id, started, reply }).await.is_err() {
            return End::TelemetrySilent;
        }
        end.await.unwrap_or(End::TelemetrySilent)
    }

    /// Sends what is buffered now (not what arrives meanwhile), until empty,
    /// the daemon fails, or `until`.
    pub async fn flush(&self, until: Instant) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Command::Flush { until, reply }).await.is_ok() {
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

/// What woke the forwarder.
enum Wake {
    Command(Option<Command>),
    /// The flush timer.
    Flush,
    /// The check of the Telemetry API's silence.
    Patience,
    /// A bounded wait ended.
    TimeUp,
    Export(Result<JobResult, tokio::task::JoinError>),
}

struct Daemon {
    addr: SocketAddr,
    socket: Arc<UdpSocket>,
}

struct Waiter {
    request_id: String,
    started: Instant,
    reply: oneshot::Sender<End>,
}

struct Forwarder {
    rx: mpsc::Receiver<Command>,
    /// Documents go to the daemon (`LAMBDA_XRAY_EXTENSION_EXPORT`).
    daemon_on: bool,
    /// The OTLP exporter, when documents go there too (or only there).
    otlp: Option<Otlp>,
    queued_bytes: Arc<AtomicUsize>,
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
    /// Recent invocations the function said were done.
    done: VecDeque<String>,
    runtime_done: VecDeque<String>,
    /// Recent invocations any telemetry record was about.
    seen_in_telemetry: VecDeque<String>,
    waiters: Vec<Waiter>,
    /// The function has sent `invocation_done` at least once.
    speaks_done: bool,
    /// When the last telemetry batch arrived.
    telemetry_at: Option<Instant>,
    /// The Telemetry API stopped delivering (see [`TELEMETRY_PATIENCE`]).
    telemetry_silent: bool,
    /// A daemon address that did not resolve, and when.
    resolve_failed: Option<(String, Instant)>,
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
                    let patience = self.next_patience_check();
                    let job = self.otlp.as_mut().and_then(Otlp::task_mut);
                    let busy = job.is_some();
                    let woken = tokio::select! {
                        command = self.rx.recv() => Wake::Command(command),
                        () = tokio::time::sleep_until(next_flush.unwrap_or(far)), if next_flush.is_some() => Wake::Flush,
                        () = tokio::time::sleep_until(patience.unwrap_or(far)), if patience.is_some() => Wake::Patience,
                        // A request that outlived its flush, or a connection made ahead.
                        result = async { match job { Some(task) => task.await, None => std::future::pending().await } }, if busy => Wake::Export(result),
                    };
                    match woken {
                        Wake::Command(Some(command)) => command,
                        Wake::Command(None) => break,
                        Wake::Flush => {
                            self.flush(None).await;
                            next_flush = self.schedule_after_flush();
                            continue;
                        }
                        Wake::Patience => {
                            self.check_telemetry_patience();
                            continue;
                        }
                        Wake::TimeUp => continue,
                        Wake::Export(result) => {
                            if let Some(otlp) = self.otlp.as_mut() {
                                otlp.finish(result);
                            }
                            continue;
                        }
                    }
                }
            };
            self.handle(command).await;
            if self.mode == FlushMode::Continuous && self.rx.is_empty() && self.deferred.is_empty() && self.continuous_work() {
                self.flush(None).await;
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
            FlushMode::Continuous => (self.pending() > 0).then(|| Instant::now() + RETRY),
        }
    }

    /// Documents not yet delivered to every destination.
    fn pending(&self) -> usize {
        let daemon = if self.daemon_on { self.buffer.len() } else { 0 };
        daemon + self.otlp.as_ref().map_or(0, Otlp::pending)
    }

    /// In continuous mode: whether a flush now would send anything.
    fn continuous_work(&self) -> bool {
        (self.daemon_on && !self.buffer.is_empty() && !self.unreachable) || self.otlp.as_ref().is_some_and(Otlp::due)
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Document(datagram) => self.take_document(datagram),
            Command::DaemonAddress(value) => self.set_function_daemon(value),
            Command::InvocationDone { request_id } => {
                if !self.speaks_done {
                    log!(Debug, "the function reports when its documents are sent: not waiting for the Telemetry API");
                    self.speaks_done = true;
                }
                self.end_waiters(&request_id, End::Done);
                remember(&mut self.done, request_id);
            }
            Command::InvocationStarted { request_id, trace } => {
                remember(&mut self.invocations, (request_id, trace));
                if let Some(otlp) = self.otlp.as_mut() {
                    otlp.warm();
                }
            }
            Command::Telemetry(events) => self.on_telemetry(events),
            Command::WaitEnd { request_id, started, reply } => {
                let known = if self.done.contains(&request_id) {
                    Some(End::Done)
                } else if self.runtime_done.contains(&request_id) {
                    Some(End::RuntimeDone)
                } else if self.telemetry_silent && !self.speaks_done {
                    Some(End::TelemetrySilent)
                } else {
                    None
                };
                match known {
                    Some(end) => {
                        let _ = reply.send(end);
                    }
                    None => {
                        // Waiters that gave up (deadline passed) are forgotten here.
                        self.waiters.retain(|w| !w.reply.is_closed());
                        self.waiters.push(Waiter { request_id, started, reply });
                    }
                }
            }
            Command::Flush { until, reply } => {
                self.flush(Some(until)).await;
                let _ = reply.send(());
            }
            Command::Shutdown { deadline, reply } => {
                self.await_reports(deadline).await;
                self.drain_until(deadline).await;
                let buffered = self.pending() as u64;
                let _ = reply.send(self.counters.snapshot(Some(buffered)));
            }
        }
    }

    fn on_telemetry(&mut self, events: Vec<Event>) {
        self.telemetry_at = Some(Instant::now());
        if self.telemetry_silent {
            log!(Info, "the Telemetry API is delivering again");
            self.telemetry_silent = false;
        }
        for event in events {
            match event {
                Event::Start { request_id } => remember(&mut self.seen_in_telemetry, request_id),
                Event::RuntimeDone { request_id } => {
                    self.end_waiters(&request_id, End::RuntimeDone);
                    remember(&mut self.seen_in_telemetry, request_id.clone());
                    remember(&mut self.runtime_done, request_id);
                }
                Event::Report(report, trace) => self.enrich(report, trace),
            }
        }
    }

    fn end_waiters(&mut self, request_id: &str, end: End) {
        let (ready, waiting) = std::mem::take(&mut self.waiters).into_iter().partition(|w: &Waiter| w.request_id == request_id);
        self.waiters = waiting;
        for waiter in ready {
            let _ = waiter.reply.send(end);
        }
    }

    /// When the oldest waiter's patience with a silent Telemetry API runs
    /// out; `None` when no waiter depends on telemetry alone.
    fn next_patience_check(&self) -> Option<Instant> {
        if self.speaks_done {
            return None;
        }
        self.waiters.iter().filter(|w| !w.reply.is_closed()).map(|w| w.started + TELEMETRY_PATIENCE).min()
    }

    /// Ends the waits of invocations that heard nothing from the Telemetry
    /// API within [`TELEMETRY_PATIENCE`]: no batch at all since they began
    /// and no record about them. From then on, until a batch arrives, the
    /// extension does not wait for telemetry.
    fn check_telemetry_patience(&mut self) {
        if self.speaks_done {
            return;
        }
        let now = Instant::now();
        let telemetry_at = self.telemetry_at;
        let seen = &self.seen_in_telemetry;
        let (silent, waiting): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters).into_iter().partition(|w| {
            now >= w.started + TELEMETRY_PATIENCE && telemetry_at.is_none_or(|at| at < w.started) && !seen.contains(&w.request_id)
        });
        self.waiters = waiting;
        for waiter in silent {
            if !self.telemetry_silent {
                log!(
                    Warn,
                    "no Telemetry API delivery for {} ms (invocation {}): not waiting for platform.runtimeDone until it delivers again",
                    TELEMETRY_PATIENCE.as_millis(),
                    waiter.request_id
                );
                self.telemetry_silent = true;
            }
            let _ = waiter.reply.send(End::TelemetrySilent);
        }
        // Waiters whose patience ran out while telemetry was alive keep
        // waiting (for runtimeDone or their deadline): push their check past.
        for waiter in &mut self.waiters {
            if now >= waiter.started + TELEMETRY_PATIENCE {
                waiter.started = now;
            }
        }
    }

    /// Takes one document off the queue into the buffer.
    fn take_document(&mut self, datagram: Bytes) {
        self.queued_bytes.fetch_sub(datagram.len(), Relaxed);
        self.push(datagram);
    }

    /// Buffers one datagram; when full, drops the oldest (like the daemon).
    fn push(&mut self, datagram: Bytes) {
        if let Some(otlp) = self.otlp.as_mut() {
            otlp.push(datagram.clone());
        }
        if !self.daemon_on {
            return;
        }
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
        match self.daemon_from_function.as_deref() {
            Some(current) if current == value => return,
            // Anything on the sandbox's loopback can send a control message:
            // a change is worth a look.
            Some(current) => log!(Warn, "the daemon address changed from {current:?} to {value:?} (control message from the function)"),
            None => log!(Info, "daemon address from the function: {value}"),
        }
        self.daemon_from_function = Some(value);
        self.daemon = None;
        self.resolve_failed = None;
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
        // A failed lookup costs up to a second: not again on every flush.
        if let Some((failed, at)) = &self.resolve_failed
            && *failed == value
            && at.elapsed() < RESOLVE_RETRY
        {
            return None;
        }
        let Some(addr) = wire::resolve_daemon(&value).await else {
            log!(Warn, "cannot resolve the daemon address {value:?}; keeping documents, next lookup in {} s", RESOLVE_RETRY.as_secs());
            self.resolve_failed = Some((value, Instant::now()));
            return None;
        };
        self.resolve_failed = None;
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

    /// Sends what is buffered when it starts, oldest first, until that is
    /// sent, the daemon fails, or `until`. Documents that arrive meanwhile
    /// are taken in but left for the next flush, so a function that keeps
    /// sending cannot keep a flush (and the `next` after it) going.
    async fn flush(&mut self, until: Option<Instant>) {
        self.absorb_queue();
        if self.daemon_on {
            self.flush_daemon(until).await;
        }
        self.flush_otlp(until).await;
    }

    /// The OTLP part of a flush: one request with what is queued. A flush
    /// with a bound (before `next`, at SHUTDOWN) first lets the request in
    /// flight end, then waits for its own, never past `until`; a timer-driven
    /// flush only starts one (the run loop books its end).
    async fn flush_otlp(&mut self, until: Option<Instant>) {
        let Some(otlp) = self.otlp.as_mut() else {
            return;
        };
        let Some(until) = until else {
            if otlp.due() {
                let retry_until = Instant::now() + otlp.timeout();
                otlp.start(retry_until);
            }
            return;
        };
        self.wait_otlp(until).await;
        let started = self.otlp.as_mut().is_some_and(|otlp| !otlp.busy() && otlp.start(until));
        if started {
            self.wait_otlp(until).await;
        }
        if self.otlp.as_ref().is_some_and(Otlp::busy) {
            log!(Debug, "flush time is up with an OTLP request in flight; it goes on until the export timeout");
        }
    }

    /// Waits for the OTLP request in flight until `until`, taking in the
    /// function's documents meanwhile (other commands wait).
    async fn wait_otlp(&mut self, until: Instant) {
        loop {
            let Some(task) = self.otlp.as_mut().and_then(Otlp::task_mut) else {
                return;
            };
            let waited = tokio::select! {
                result = task => Wake::Export(result),
                () = tokio::time::sleep_until(until) => Wake::TimeUp,
                command = self.rx.recv() => Wake::Command(command),
            };
            match waited {
                Wake::Export(result) => {
                    if let Some(otlp) = self.otlp.as_mut() {
                        otlp.finish(result);
                    }
                    return;
                }
                Wake::Command(Some(Command::Document(datagram))) => self.take_document(datagram),
                Wake::Command(Some(other)) => self.deferred.push_back(other),
                Wake::Command(None) | Wake::TimeUp | Wake::Patience | Wake::Flush => return,
            }
        }
    }

    /// The daemon part of a flush (see [`Self::flush`]).
    async fn flush_daemon(&mut self, until: Option<Instant>) {
        if self.buffer.is_empty() {
            return;
        }
        let Some(socket) = self.connect().await else {
            return;
        };
        self.recover_refused(&socket);
        let mut quota = self.buffer.len();
        let mut in_chunk = 0;
        let mut stalls = 0;
        while quota > 0
            && let Some(datagram) = self.buffer.pop_front()
        {
            quota -= 1;
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
                    // Also right after the socket is made: tokio has not seen
                    // it writable yet. Still this flush's to send.
                    self.requeue(datagram);
                    quota += 1;
                    stalls += 1;
                    let wait = until
                        .map_or(Duration::from_millis(20), |u| u.saturating_duration_since(Instant::now()).min(Duration::from_millis(20)));
                    let writable = tokio::time::timeout(wait, socket.writable()).await;
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
                if until.is_some_and(|u| Instant::now() >= u) {
                    log!(Debug, "flush time is up; {} documents left for the next flush", self.buffer.len());
                    break;
                }
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
                Command::Document(datagram) => self.take_document(datagram),
                other => self.deferred.push_back(other),
            }
        }
    }

    /// SHUTDOWN: flush, retrying while the daemon refuses, until empty or the deadline.
    async fn drain_until(&mut self, deadline: Instant) {
        loop {
            self.flush(Some(deadline)).await;
            if self.pending() == 0 {
                // A refusal of the very last datagram shows only now.
                tokio::task::yield_now().await;
                if let Some(daemon) = &self.daemon {
                    let socket = daemon.socket.clone();
                    self.recover_refused(&socket);
                }
                if self.pending() == 0 {
                    return;
                }
            }
            let pause = Duration::from_millis(20);
            if Instant::now() + pause >= deadline {
                log!(Warn, "shutdown deadline reached with {} documents unsent", self.pending());
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
        while !self.telemetry_silent && self.invocations.iter().any(|(id, _)| self.runtime_done.contains(id) || self.done.contains(id)) {
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(Command::Telemetry(events))) => self.on_telemetry(events),
                Ok(Some(Command::Document(datagram))) => self.take_document(datagram),
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
