//! A local OTLP/HTTP receiver for the tests and benchmarks: a hyper server
//! on 127.0.0.1 that gunzips and decodes `ExportTraceServiceRequest` with the
//! `opentelemetry-proto` types and keeps what it accepted.

#![allow(dead_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// How the receiver answers.
#[derive(Clone, Copy)]
pub enum Answer {
    /// 200.
    Ok,
    /// This status.
    Status(u16),
    /// Answers 200 after this long.
    Slow(Duration),
}

/// One request as received.
pub struct Received {
    /// The request headers.
    pub headers: hyper::HeaderMap,
    /// The request path.
    pub path: String,
    /// The decoded body.
    pub request: ExportTraceServiceRequest,
}

/// A local OTLP/HTTP receiver on 127.0.0.1.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it accepted.
    pub received: Arc<Mutex<Vec<Received>>>,
    /// How it answers (changeable).
    pub answer: Arc<Mutex<Answer>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts it on a free port.
    pub async fn start(answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answer = Arc::new(Mutex::new(answer));
        let (sink, how) = (received.clone(), answer.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (sink, how) = (sink.clone(), how.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (sink, how) = (sink.clone(), how.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let raw = if parts.headers.get("content-encoding").is_some_and(|v| v == "gzip") {
                                let mut out = Vec::new();
                                flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).unwrap();
                                out
                            } else {
                                body.to_vec()
                            };
                            let request = ExportTraceServiceRequest::decode(&raw[..]).expect("an ExportTraceServiceRequest");
                            let answer = *how.lock().unwrap();
                            if let Answer::Slow(delay) = answer {
                                tokio::time::sleep(delay).await;
                            }
                            let status = match answer {
                                Answer::Status(code) => code,
                                _ => 200,
                            };
                            // Recorded once answered: a slow answer's request counts when delivered.
                            if status == 200 {
                                sink.lock().unwrap().push(Received { headers: parts.headers, path: parts.uri.path().to_owned(), request });
                            }
                            Ok::<_, hyper::Error>(Response::builder().status(status).body(Full::new(Bytes::new())).unwrap())
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, received, answer, task }
    }

    /// Its URL for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span accepted so far.
    pub fn spans(&self) -> Vec<Span> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.request.resource_spans.iter().flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.clone())))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
