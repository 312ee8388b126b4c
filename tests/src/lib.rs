//! A local Lambda platform for the demo and the end-to-end tests.
//!
//! - [`Daemon`]: a UDP listener on 127.0.0.1 standing in for the X-Ray daemon;
//!   it keeps every datagram it receives.
//! - [`LocalLambda`]: the Lambda Runtime API (from the `lambda-simulator`
//!   crate) on 127.0.0.1, with a real function binary run as a child process
//!   against it, as Lambda runs `bootstrap`.
//! - [`schema`], [`parse_datagram`] and [`render`]: checking and showing what
//!   arrived.
//! - [`moto`]: moto's server as a local SQS, and a recording proxy in front of it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lambda_simulator::invocation::Invocation;
use lambda_simulator::process::{ManagedProcess, ProcessConfig, ProcessRole};
use lambda_simulator::{InvocationStatus, Simulator};
use serde_json::Value;

pub mod moto;
pub mod render;
pub mod schema;

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

/// A UDP socket with a 4 MiB receive buffer (as far as `net.core.rmem_max`
/// allows): a function streaming hundreds of documents in a burst must not
/// overflow the default buffer while a busy machine delays this process.
fn bind_udp(addr: &str) -> Result<tokio::net::UdpSocket, Error> {
    let addr: std::net::SocketAddr = addr.parse()?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(tokio::net::UdpSocket::from_std(socket.into())?)
}

/// A stand-in X-Ray daemon: a UDP socket on 127.0.0.1 that keeps what it gets.
pub struct Daemon {
    addr: std::net::SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Binds an ephemeral port on 127.0.0.1 and starts receiving.
    pub async fn start() -> Result<Self, Error> {
        Self::bind("127.0.0.1:0").await
    }

    /// Binds `addr` (e.g. to come back on a port that was down).
    pub async fn bind(addr: &str) -> Result<Self, Error> {
        let socket = bind_udp(addr)?;
        let addr = socket.local_addr()?;
        let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = received.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 70_000];
            while let Ok(n) = socket.recv(&mut buf).await {
                if let Ok(mut v) = sink.lock() {
                    v.push(buf[..n].to_vec());
                }
            }
        });
        Ok(Daemon { addr, received, task })
    }

    /// `host:port` to put in `AWS_XRAY_DAEMON_ADDRESS`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Every datagram so far.
    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Every document so far (datagrams that don't parse are an error).
    pub fn documents(&self) -> Result<Vec<Value>, Error> {
        self.datagrams().iter().map(|d| parse_datagram(d)).collect()
    }

    /// Waits until `done(documents)` holds, or `timeout`.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>, Error> {
        let start = Instant::now();
        loop {
            let docs = self.documents()?;
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
            let n = self.datagrams().len();
            if n == last {
                return self.documents();
            }
            last = n;
            tokio::time::sleep(quiet).await;
        }
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
        self.task.abort();
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
    let root = lambda_xray::TraceId::new().to_string();
    let parent = lambda_xray::EntityId::random().to_string();
    let header = format!("Root={root};Parent={parent};Sampled={}", if sampled { 1 } else { 0 });
    (header, root, parent)
}

/// The Runtime API on loopback with a function process running against it.
pub struct LocalLambda {
    simulator: Simulator,
    function: Option<ManagedProcess>,
}

impl LocalLambda {
    /// Starts the Runtime API and the function binary `binary` (a file name in
    /// the workspace's target dir) with `env` on top of Lambda's variables.
    pub async fn start(binary: &str, function_name: &str, env: &[(&str, String)]) -> Result<Self, Error> {
        let simulator = Simulator::builder().function_name(function_name).build().await?;
        let mut config =
            ProcessConfig::new(bin_path(binary)?, ProcessRole::Runtime).inherit_stdio(std::env::var_os("E2E_VERBOSE").is_some());
        for (k, v) in env {
            config = config.env(*k, v.clone());
        }
        let function = simulator.spawn_process_with_config(config)?;
        Ok(LocalLambda { simulator, function: Some(function) })
    }

    /// Invokes the function with `payload` and the trace header `trace` (the
    /// `Lambda-Runtime-Trace-Id` value; `None` sends none), and waits for it.
    pub async fn invoke(&self, payload: Value, trace: Option<&str>, timeout: Duration) -> Result<Outcome, Error> {
        let mut invocation = Invocation::new(payload, timeout.as_millis() as u64);
        invocation.trace_id = trace.unwrap_or_default().to_owned();
        let request_id = self.simulator.enqueue(invocation).await;
        let state = self.simulator.wait_for_invocation_complete(&request_id, timeout + Duration::from_secs(10)).await?;
        match (state.status, state.response, state.error) {
            (InvocationStatus::Success, Some(r), _) => Ok(Outcome::Response(r.payload)),
            (_, _, Some(e)) => Ok(Outcome::Error { error_type: e.error_type, error_message: e.error_message }),
            (status, _, _) => Err(format!("invocation ended as {status:?} with neither response nor error").into()),
        }
    }

    /// The function's process id.
    pub fn function_pid(&self) -> Option<u32> {
        self.function.as_ref().map(ManagedProcess::pid)
    }

    /// Stops the function process.
    pub fn stop(&mut self) {
        if let Some(mut f) = self.function.take() {
            let _ = f.kill();
            let _ = f.wait();
        }
    }
}

impl Drop for LocalLambda {
    fn drop(&mut self) {
        self.stop();
    }
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
