//! moto's server as a local SQS, and a recording HTTP proxy in front of it.
//!
//! [`Moto::start`] runs `.venv/bin/moto_server` (installed by
//! `scripts/setup-python.sh`) on a free port of 127.0.0.1 and kills it on drop.
//! [`RecordingProxy`] listens on 127.0.0.1, forwards every connection to a
//! target address and keeps the request line and headers of every request
//! that passed through, so tests can see what the SDK put on the wire.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Error;

/// Where `scripts/setup-python.sh` installs moto's server.
pub fn moto_server_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/moto_server"))
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16, Error> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running moto server, killed when dropped.
pub struct Moto {
    child: Child,
    addr: SocketAddr,
}

impl Moto {
    /// Starts moto's server on a free port of 127.0.0.1 and waits (up to
    /// 120 s, the machine may be busy) until it answers HTTP.
    pub async fn start() -> Result<Self, Error> {
        let path = moto_server_path();
        if !path.exists() {
            return Err(format!("{} is missing: run scripts/setup-python.sh (it installs moto[server] into .venv)", path.display()).into());
        }
        let port = free_port()?;
        let child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", path.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut moto = Moto { child, addr };
        let start = Instant::now();
        loop {
            if let Some(status) = moto.child.try_wait()? {
                return Err(format!("moto_server exited at start ({status})").into());
            }
            if http_ok(addr).await {
                return Ok(moto);
            }
            if start.elapsed() > Duration::from_secs(120) {
                return Err("moto_server did not answer within 120 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an HTTP GET of `/moto-api/` gets any answer.
async fn http_ok(addr: SocketAddr) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await else { return false };
    if s.write_all(b"GET /moto-api/data.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await, Ok(Ok(_))) && buf.starts_with(b"HTTP/1.")
}

/// One request seen by the proxy.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `POST`, `GET`...
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// A loopback HTTP/1.1 proxy that records request heads and relays bytes.
pub struct RecordingProxy {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingProxy {
    /// Listens on 127.0.0.1 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests: Arc<Mutex<Vec<RecordedRequest>>> = Arc::default();
        let sink = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    if let Ok(upstream) = TcpStream::connect(target).await {
                        let _ = relay(client, upstream, sink).await;
                    }
                });
            }
        });
        Ok(RecordingProxy { addr, requests, task })
    }

    /// `http://127.0.0.1:<port>`, to use as the client's endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Requests whose `X-Amz-Target` ends with `.{operation}` (awsJson protocols).
    pub fn requests_for(&self, operation: &str) -> Vec<RecordedRequest> {
        let suffix = format!(".{operation}");
        self.requests().into_iter().filter(|r| r.header("x-amz-target").is_some_and(|t| t.ends_with(&suffix))).collect()
    }

    /// Forgets the requests so far.
    pub fn clear(&self) {
        if let Ok(mut v) = self.requests.lock() {
            v.clear();
        }
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays one connection: responses are copied as they come; requests are
/// parsed just enough (head + `Content-Length` body) to record each head.
async fn relay(client: TcpStream, upstream: TcpStream, sink: Arc<Mutex<Vec<RecordedRequest>>>) -> std::io::Result<()> {
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut up_rd, mut up_wr) = upstream.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut up_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
    });
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    'conn: loop {
        // Read a full head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = client_rd.read(&mut chunk).await?;
            if n == 0 {
                break 'conn;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let (method, target) = (first.next().unwrap_or("").to_owned(), first.next().unwrap_or("").to_owned());
        let headers: Vec<(String, String)> =
            lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
        let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        let length: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        if let Ok(mut v) = sink.lock() {
            v.push(RecordedRequest { method, target, headers });
        }
        if chunked {
            // Not parsed further: relay the rest of the connection as it is.
            up_wr.write_all(&buf).await?;
            tokio::io::copy(&mut client_rd, &mut up_wr).await?;
            break;
        }
        while buf.len() < head_end + length {
            let n = client_rd.read(&mut chunk).await?;
            if n == 0 {
                break 'conn;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        up_wr.write_all(&buf[..head_end + length]).await?;
        buf.drain(..head_end + length);
    }
    let _ = up_wr.shutdown().await;
    let _ = back.await;
    Ok(())
}
