//! Under `lambda_xray_tracing::run`, each invocation's response reaches the
//! Runtime API before its trace datagram, and the datagram is out before the
//! function asks for its next event (so nothing is left at the freeze).
//!
//! The function is `bench-function` (traced: `## handler` with 10 child
//! subsegments). This test stands in for the Runtime API and, through the
//! extension marker, for the extension: one UDP socket that the Runtime
//! API's handlers read without blocking. Loopback UDP delivery happens inside
//! the sender's `send`, so when a request arrives, every datagram the
//! function sent before making it is already queued on the socket: at each
//! response POST the socket must be empty, and at each later `next` it must
//! hold exactly that invocation's datagram, ending it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const INVOCATIONS: u64 = 20;

/// What the stand-in saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A `next`, and the datagrams already queued then: (request id it ends, subsegments).
    Next(Vec<(Option<String>, usize)>),
    /// A response POST for this invocation, and the datagrams queued then.
    Response(u64, usize),
}

struct Api {
    socket: UdpSocket,
    seen: Mutex<Vec<Seen>>,
    served: Mutex<u64>,
    done: tokio::sync::Notify,
}

impl Api {
    /// Reads every datagram queued on the socket, without waiting.
    fn drain(&self) -> Vec<(Option<String>, usize)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let datagram = &buf[..n];
            let (header, body) = datagram.split_at(datagram.iter().position(|&b| b == b'\n').unwrap() + 1);
            let header: serde_json::Value = serde_json::from_slice(header).unwrap();
            if header["format"] == "lambda-xray-control" {
                let control: serde_json::Value = serde_json::from_slice(body).unwrap();
                // The emitter tells the extension the daemon's address once, at
                // its first datagram; anything else here would be a control
                // message ending an invocation, which the document should carry.
                assert!(control.get("daemon_address").is_some() && control.get("invocation_done").is_none(), "{control}");
                continue;
            }
            let doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let subsegments = doc["subsegments"].as_array().map_or(0, Vec::len);
            out.push((header["invocation_done"].as_str().map(str::to_owned), subsegments));
        }
        out
    }

    async fn serve(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let path = req.uri().path().to_owned();
        if path == "/2018-06-01/runtime/invocation/next" {
            let queued = self.drain();
            self.seen.lock().unwrap().push(Seen::Next(queued));
            let n = {
                let mut served = self.served.lock().unwrap();
                *served += 1;
                *served
            };
            if n > INVOCATIONS {
                self.done.notify_one();
                // Never answered: the function waits here until it is stopped.
                std::future::pending::<()>().await;
            }
            let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() + 300_000;
            return Ok(Response::builder()
                .header("Lambda-Runtime-Aws-Request-Id", format!("req-{n}"))
                .header("Lambda-Runtime-Deadline-Ms", deadline.to_string())
                .header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
                .header("Lambda-Runtime-Trace-Id", format!("Root=1-5759e988-{n:024x};Parent={:016x};Sampled=1", n + 1))
                .body(Full::new(Bytes::from(format!("{{\"n\":{n}}}"))))
                .unwrap());
        }
        let _ = req.into_body().collect().await?;
        let queued = self.drain().len();
        if let Some(id) = path.strip_prefix("/2018-06-01/runtime/invocation/req-").and_then(|p| p.strip_suffix("/response")) {
            self.seen.lock().unwrap().push(Seen::Response(id.parse().unwrap(), queued));
        } else {
            panic!("unexpected request {path}");
        }
        Ok(Response::builder().status(202).body(Full::new(Bytes::new())).unwrap())
    }
}

#[tokio::test]
async fn the_response_goes_before_the_trace_and_the_trace_before_next() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    let extension: SocketAddr = socket.local_addr().unwrap();
    let marker = std::env::temp_dir().join(format!("lambda-xray-response-first-{}", std::process::id()));
    std::fs::write(&marker, extension.to_string()).unwrap();
    let daemon = UdpSocket::bind("127.0.0.1:0").unwrap();

    let api = Arc::new(Api { socket, seen: Mutex::default(), served: Mutex::new(0), done: tokio::sync::Notify::new() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    let served = api.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let api = served.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| api.clone().serve(req));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });

    let mut function = tokio::process::Command::new(env!("CARGO_BIN_EXE_bench-function"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", api_addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("AWS_XRAY_DAEMON_ADDRESS", daemon.local_addr().unwrap().to_string())
        .env("LAMBDA_XRAY_EXTENSION_MARKER", &marker)
        .env("BENCH_MODE", "traced")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), api.done.notified()).await.expect("the function ran every invocation");
    function.kill().await.unwrap();
    let _ = std::fs::remove_file(&marker);

    let seen = api.seen.lock().unwrap().clone();
    let mut expected = vec![Seen::Next(Vec::new())];
    for n in 1..=INVOCATIONS {
        expected.push(Seen::Response(n, 0));
        // The handler subsegment's tree with its 10 children, ending invocation n.
        expected.push(Seen::Next(vec![(Some(format!("req-{n}")), 10)]));
    }
    assert_eq!(seen, expected);
}
