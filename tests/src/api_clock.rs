//! A timing proxy in front of the Lambda Runtime and Extensions APIs.
//!
//! The simulator measures an invocation's post-runtime time in whole
//! milliseconds; a benchmark of a tail that should be well under a millisecond
//! needs better. This proxy (hyper, HTTP/1.1, loopback only) forwards every
//! request to the simulator unchanged and notes, with a monotonic clock:
//! when the runtime posted each invocation's response or error, when each
//! INVOKE event was handed to an extension, and when that extension next
//! asked for an event. The post-runtime time of an invocation is then what
//! Lambda reports (and bills) as `PostRuntimeExtensionsDuration`, measured
//! from the runtime's response rather than from its following `next` (the
//! simulator may freeze the runtime before that `next`; the response comes a
//! little earlier, so the figure errs on the long side) to the extension's
//! following `next` (zero when the extension was there first).

// A test harness: a failed setup step is a failed test, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[derive(Default)]
struct Times {
    /// Request id → when the runtime posted its response (or error).
    responded: HashMap<String, Instant>,
    /// Extension id → the request id of the INVOKE it was last handed.
    handed: HashMap<String, String>,
    /// Request id → when the extension that got its INVOKE asked for the next event.
    extension_next: HashMap<String, Instant>,
}

/// The running proxy; dropped, it stops serving.
pub struct ApiClock {
    addr: SocketAddr,
    times: Arc<Mutex<Times>>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiClock {
    /// Starts a proxy on 127.0.0.1 that forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let times = Arc::new(Mutex::new(Times::default()));
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build_http();
        let shared = times.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let client = client.clone();
                let times = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| forward(req, upstream, client.clone(), times.clone()));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, times, task }
    }

    /// `host:port` to give the processes as `AWS_LAMBDA_RUNTIME_API`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The post-runtime time of a finished invocation (the runtime's
    /// response to the extension's `next`), once the extension asked for its
    /// next event.
    pub fn post_runtime(&self, request_id: &str) -> Option<Duration> {
        let times = self.times.lock().unwrap();
        let responded = times.responded.get(request_id)?;
        let extension = times.extension_next.get(request_id)?;
        Some(extension.saturating_duration_since(*responded))
    }
}

impl Drop for ApiClock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    req: Request<Incoming>,
    upstream: SocketAddr,
    client: Client<HttpConnector, Incoming>,
    times: Arc<Mutex<Times>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let arrived = Instant::now();
    let path = req.uri().path().to_owned();
    let extension_id = req.headers().get("Lambda-Extension-Identifier").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // The runtime's response: /2018-06-01/runtime/invocation/{id}/response (or /error).
    if let Some(rest) = path.strip_prefix("/2018-06-01/runtime/invocation/")
        && let Some((id, what)) = rest.split_once('/')
        && (what == "response" || what == "error")
    {
        times.lock().unwrap().responded.entry(id.to_owned()).or_insert(arrived);
    }
    let is_extension_next = path == "/2020-01-01/extension/event/next";
    if is_extension_next && let Some(ext) = &extension_id {
        let mut t = times.lock().unwrap();
        if let Some(request_id) = t.handed.remove(ext) {
            t.extension_next.entry(request_id).or_insert(arrived);
        }
    }

    let (mut parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    parts.uri = format!("http://{upstream}{path_and_query}").parse().unwrap();
    let response = match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(e) => {
            return Ok(Response::builder().status(502).body(Full::new(Bytes::from(e.to_string()))).unwrap());
        }
    };
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    if is_extension_next
        && let Some(ext) = extension_id
        && let Ok(event) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && event["eventType"] == "INVOKE"
        && let Some(request_id) = event["requestId"].as_str()
    {
        times.lock().unwrap().handed.insert(ext, request_id.to_owned());
    }
    Ok(Response::from_parts(parts, Full::new(bytes)))
}
