//! A local Lambda platform for the demo and the end-to-end tests.
//!
//! - [`Daemon`]: a UDP listener on 127.0.0.1 standing in for the X-Ray daemon;
//!   it keeps every datagram it receives.
//! - [`platform::Platform`]: the Lambda Runtime, Extensions and Telemetry APIs
//!   (from the `lambda-simulator` crate) on 127.0.0.1, with the real extension
//!   and a real function binary run as child processes against them, as
//!   Lambda runs them, including freeze (SIGSTOP) between invocations.
//! - [`schema`], [`parse_datagram`] and [`waterfall`]: checking and showing what
//!   arrived.
//! - [`moto`]: moto's server as a local SQS, and a recording proxy in front of it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod api_clock;
pub mod http;
pub mod moto;
pub mod platform;
pub mod schema;
pub mod waterfall;

/// Boxed error for the harness.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The path of a binary built in this workspace (`cargo build --workspace`
/// puts them next to the test executables' parent directory).
pub fn bin_path(name: &str) -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().ok_or("no parent dir")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.exists() {
        return Err(format!("{} is not built: run `cargo build --workspace --bins` first", path.display()).into());
    }
    Ok(path)
}

/// A stand-in X-Ray daemon: a UDP socket on 127.0.0.1 that keeps what it gets.
///
/// It drains the socket on a thread of its own with a 4 MiB receive buffer, so
/// bursts are not lost while the test runtime is busy.
pub struct Daemon {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// A daemon on a fresh port of 127.0.0.1.
    pub fn start() -> Result<Self, Error> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A free port with nobody listening: an unreachable daemon.
    pub fn unreachable_addr() -> Result<SocketAddr, Error> {
        Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
    }

    /// A daemon on `addr` (e.g. one that was unreachable until now).
    pub fn start_at(addr: SocketAddr) -> Result<Self, Error> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(4 << 20);
        socket.bind(&addr.into())?;
        let socket: std::net::UdpSocket = socket.into();
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let addr = socket.local_addr()?;
        let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf)
                    && let Ok(mut v) = sink.lock()
                {
                    v.push(buf[..n].to_vec());
                }
            }
        });
        Ok(Daemon { addr, received, stop, thread: Some(thread) })
    }

    /// `host:port` to put in `AWS_XRAY_DAEMON_ADDRESS`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Datagrams received so far.
    pub fn count(&self) -> usize {
        self.received.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Every datagram so far.
    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Every document so far; a datagram not in the daemon format is an error.
    pub fn try_documents(&self) -> Result<Vec<Value>, Error> {
        self.datagrams().iter().map(|d| parse_datagram(d)).collect()
    }

    /// Every document so far; panics on a datagram not in the daemon format
    /// or over 64 KiB.
    pub fn documents(&self) -> Vec<Value> {
        self.datagrams()
            .iter()
            .map(|d| {
                assert!(d.len() <= 64 * 1024, "datagram of {} bytes", d.len());
                parse_datagram(d).unwrap_or_else(|e| panic!("bad datagram: {e}"))
            })
            .collect()
    }

    /// Documents the extension's test fixture sent (not report subsegments).
    pub fn fixture_documents(&self) -> Vec<Value> {
        self.documents().into_iter().filter(|d| d["name"] == "fixture-work").collect()
    }

    /// Waits until at least `n` datagrams arrived.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        platform::wait_until(timeout, || self.count() >= n).await
    }

    /// Waits until `done(documents)` holds, or `timeout`.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>, Error> {
        let start = Instant::now();
        loop {
            let docs = self.try_documents()?;
            if done(&docs) {
                return Ok(docs);
            }
            if start.elapsed() > timeout {
                return Err(format!("timed out after {timeout:?} with {} documents", docs.len()).into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until no datagram has arrived for `quiet`, and returns the documents.
    pub async fn settle(&self, quiet: Duration) -> Result<Vec<Value>, Error> {
        let mut last = usize::MAX;
        loop {
            let n = self.count();
            if n == last {
                return self.try_documents();
            }
            last = n;
            tokio::time::sleep(quiet).await;
        }
    }

    /// Returns once every datagram already sent to the daemon has been read
    /// off its socket (or `timeout` passed; then `false`): it sends itself a
    /// marker datagram, which queues behind them, waits for it and drops it.
    /// Call it after the senders are done (e.g. the extension exited).
    pub async fn sync(&self, timeout: Duration) -> bool {
        static SYNCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let marker = format!("\0lambda-xray-e2e-sync-{}-{}", std::process::id(), SYNCS.fetch_add(1, Ordering::Relaxed)).into_bytes();
        let sent = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.send_to(&marker, self.addr));
        if sent.is_err() {
            return false;
        }
        let end = Instant::now() + timeout;
        let mut seen = false;
        while !seen && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(1)).await;
            seen = self.received.lock().map(|v| v.iter().rev().any(|d| d == &marker)).unwrap_or(false);
        }
        if let Ok(mut v) = self.received.lock() {
            v.retain(|d| d != &marker);
        }
        seen
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        if let Ok(mut v) = self.received.lock() {
            v.clear();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Splits a datagram into the daemon header and the document, checking the header.
pub fn parse_datagram(bytes: &[u8]) -> Result<Value, Error> {
    let text = std::str::from_utf8(bytes)?;
    let (header, body) = text.split_once('\n').ok_or("datagram has no header line")?;
    let header: Value = serde_json::from_str(header)?;
    if header != serde_json::json!({"format": "json", "version": 1}) {
        return Err(format!("unexpected datagram header {header}").into());
    }
    Ok(serde_json::from_str(body)?)
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function returned this response.
    Response(Value),
    /// The function reported an error.
    Error {
        /// `errorType`.
        error_type: String,
        /// `errorMessage`.
        error_message: String,
    },
}

/// A trace header for a new sampled (or not) invocation.
pub fn new_trace_header(sampled: bool) -> (String, String, String) {
    let root = lambda_xray_tracing::TraceId::new().to_string();
    let parent = lambda_xray_tracing::EntityId::random().to_string();
    let header = format!("Root={root};Parent={parent};Sampled={}", if sampled { 1 } else { 0 });
    (header, root, parent)
}

/// Groups documents by `trace_id`.
pub fn by_trace(docs: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for d in docs {
        let t = d["trace_id"].as_str().unwrap_or("").to_owned();
        out.entry(t).or_default().push(d.clone());
    }
    out
}

/// Every entity in `docs`, embedded ones included, as `(parent_id, entity)`.
pub fn flatten(docs: &[Value]) -> Vec<(String, Value)> {
    fn walk(parent: &str, doc: &Value, out: &mut Vec<(String, Value)>) {
        out.push((parent.to_owned(), doc.clone()));
        let id = doc["id"].as_str().unwrap_or("");
        for c in doc["subsegments"].as_array().into_iter().flatten() {
            walk(id, c, out);
        }
    }
    let mut out = Vec::new();
    for d in docs {
        walk(d["parent_id"].as_str().unwrap_or(""), d, &mut out);
    }
    out
}
