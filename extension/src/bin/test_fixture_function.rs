//! TEST FIXTURE, not shipped: a minimal Lambda function standing in for a
//! real traced function in the extension's end-to-end tests.
//!
//! At init it looks for the extension the way the function-side library does
//! (the marker file), tells it the daemon address, and falls back to the
//! daemon when there is no extension. Each invocation sends `docs` subsegment
//! documents for the invocation's trace, spread over `spread_ms`, plus
//! `garbage` junk datagrams, and answers `{"sent": n, "echo": <echo>}`.
//! With `done: true` it then tells the extension, as lambda-xray does, that
//! the invocation's documents are all sent; without it, it behaves like a
//! function that never says so (another language, an older library). With
//! `flood_ms: n` it goes on sending documents from a thread for `n` ms after
//! its response. With `done_over_unix: true` the `done` message goes to the
//! extension's Unix socket instead, after the documents over UDP.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Request {
    docs: u64,
    pad: usize,
    spread_ms: u64,
    garbage: u64,
    echo: Value,
    done: bool,
    /// Sends the `done` message over the extension's Unix socket, after
    /// the documents over UDP (as the library does once the Unix queue
    /// was full).
    done_over_unix: bool,
    flood_ms: u64,
}

/// Documents ids are the pid and a counter: unique within a test run.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

#[derive(Serialize)]
struct Header {
    format: &'static str,
    version: u32,
}

#[derive(Serialize)]
struct Document<'a> {
    name: &'static str,
    id: String,
    trace_id: &'a str,
    parent_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    start_time: f64,
    end_time: f64,
    annotations: Annotations,
    metadata: Metadata<'a>,
}

#[derive(Serialize)]
struct Annotations {
    seq: u64,
}

#[derive(Serialize)]
struct Metadata<'a> {
    fixture: Fixture<'a>,
}

#[derive(Serialize)]
struct Fixture<'a> {
    request_id: &'a str,
    seq: u64,
    pad: &'a str,
}

struct Sender {
    socket: UdpSocket,
    target: SocketAddr,
    to_extension: bool,
}

fn discover() -> Result<Sender, Error> {
    let daemon = std::env::var("AWS_XRAY_DAEMON_ADDRESS").unwrap_or_else(|_| "127.0.0.1:2000".into());
    let marker = std::env::var("LAMBDA_XRAY_EXTENSION_MARKER").unwrap_or_else(|_| "/tmp/.lambda-xray-extension".into());
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let extension = std::fs::read_to_string(&marker).ok().and_then(|s| s.trim().parse::<SocketAddr>().ok());
    let target = match extension {
        Some(addr) => {
            let header = json!({"format": "lambda-xray-control", "version": 1});
            let body = json!({"daemon_address": daemon});
            socket.send_to(format!("{header}\n{body}").as_bytes(), addr)?;
            addr
        }
        None => daemon.parse()?,
    };
    eprintln!("[test-fixture-function] sending documents to {target}");
    Ok(Sender { socket, target, to_extension: extension.is_some() })
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    header.split(';').filter_map(|part| part.split_once('=')).find(|(k, _)| k.trim() == key).map(|(_, v)| v.trim())
}

async fn handle(sender: &Sender, event: LambdaEvent<Request>) -> Result<Value, Error> {
    let request = event.payload;
    let header = event.context.xray_trace_id.unwrap_or_default();
    let root = header_field(&header, "Root").unwrap_or("").to_owned();
    let parent = header_field(&header, "Parent").unwrap_or("").to_owned();
    let request_id = event.context.request_id;
    // Even pacing: document `seq` goes out no earlier than `seq / docs` of
    // the way through `spread_ms`.
    let began = tokio::time::Instant::now();
    let spread = Duration::from_millis(request.spread_ms);
    let pad = "x".repeat(request.pad);
    let mut datagram = Vec::with_capacity(1024 + request.pad);
    let mut sent = 0;
    for seq in 0..request.docs {
        encode(&mut datagram, &root, &parent, &request_id, seq, &pad)?;
        if sender.socket.send_to(&datagram, sender.target).is_ok() {
            sent += 1;
        }
        if request.spread_ms > 0 {
            let due = began + spread.mul_f64((seq + 1) as f64 / request.docs as f64);
            if due > tokio::time::Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due).await;
            }
        }
    }
    for _ in 0..request.garbage {
        let _ = sender.socket.send_to(b"\xffnot a datagram", sender.target);
    }
    if request.done && sender.to_extension {
        let header = json!({"format": "lambda-xray-control", "version": 1});
        let body = json!({"invocation_done": request_id});
        let message = format!("{header}\n{body}");
        if request.done_over_unix {
            send_over_unix(message.as_bytes(), sender.target)?;
        } else {
            sender.socket.send_to(message.as_bytes(), sender.target)?;
        }
    }
    if request.flood_ms > 0 {
        let socket = sender.socket.try_clone()?;
        let target = sender.target;
        let until = std::time::Instant::now() + Duration::from_millis(request.flood_ms);
        // One document sent over and over, as fast as a thread can: faster
        // than the extension can take them in.
        let mut datagram = Vec::new();
        encode(&mut datagram, &root, &parent, "flood", 1_000_000, "")?;
        std::thread::spawn(move || {
            while std::time::Instant::now() < until {
                let _ = socket.send_to(&datagram, target);
            }
        });
    }
    Ok(json!({"sent": sent, "echo": request.echo}))
}

/// Sends `datagram` to the Unix socket of the extension whose UDP intake is `udp`.
fn send_over_unix(datagram: &[u8], udp: SocketAddr) -> Result<(), Error> {
    use std::os::linux::net::SocketAddrExt;
    let name = lambda_xray_wire::unix_intake_name(udp);
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    socket.send_to_addr(datagram, &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?)?;
    Ok(())
}

/// One subsegment document in daemon format, into `datagram`.
fn encode(datagram: &mut Vec<u8>, root: &str, parent: &str, request_id: &str, seq: u64, pad: &str) -> Result<(), Error> {
    let start = now();
    let document = Document {
        name: "fixture-work",
        id: format!("{:08x}{:08x}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        trace_id: root,
        parent_id: parent,
        kind: "subsegment",
        start_time: start,
        end_time: start + 0.000_1,
        annotations: Annotations { seq },
        metadata: Metadata { fixture: Fixture { request_id, seq, pad } },
    };
    datagram.clear();
    serde_json::to_writer(&mut *datagram, &Header { format: "json", version: 1 })?;
    datagram.push(b'\n');
    serde_json::to_writer(&mut *datagram, &document)?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let sender = discover()?;
    let sender = &sender;
    lambda_runtime::run(service_fn(move |event| handle(sender, event))).await
}
