//! HTTP in and out through the library alone, with a capturing transport: the
//! `tower` client layer on a `hyper` client, the `reqwest` middleware with a
//! retry outside it, cancelled and unsampled requests, and the incoming
//! layers' `http` block and streamed bodies.

// A test: a failed step is a failed test, so it panics.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use lambda_http::RequestExt;
use lambda_runtime::{Context, LambdaEvent, service_fn};
use lambda_xray_tracing::http::{HttpLayer, StreamingHttpLayer};
use lambda_xray_tracing::http_client::{XRayClientLayer, XRayReqwestMiddleware};
use lambda_xray_tracing::{Config, Emitter, MemoryTransport, XRayLayer};
use serde_json::{Value, json};
use tower::{Layer, Service, ServiceExt};

const ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";
const PARENT: &str = "53995c3f42cd8ad8";

fn layer(cap: &MemoryTransport) -> XRayLayer {
    XRayLayer::new().handler_name("test").with_emitter(Config::default(), Arc::new(Emitter::new(cap.clone())))
}

fn header(sampled: bool) -> String {
    format!("Root={ROOT};Parent={PARENT};Sampled={}", u8::from(sampled))
}

fn event(sampled: bool) -> LambdaEvent<Value> {
    let mut ctx = Context::default();
    ctx.xray_trace_id = Some(header(sampled));
    LambdaEvent::new(json!({}), ctx)
}

/// Every entity of the documents, with its parent's id.
fn entities(docs: &[Value]) -> Vec<(String, Value)> {
    fn walk(parent: &str, d: &Value, out: &mut Vec<(String, Value)>) {
        out.push((parent.to_owned(), d.clone()));
        for c in d["subsegments"].as_array().into_iter().flatten() {
            walk(d["id"].as_str().unwrap_or(""), c, out);
        }
    }
    let mut out = Vec::new();
    for d in docs {
        walk(d["parent_id"].as_str().unwrap_or(""), d, &mut out);
    }
    out
}

/// A `reqwest` client. In a workspace build a sample turns on reqwest's
/// `rustls-no-provider`, which then needs a crypto provider installed first.
fn plain_reqwest() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn flags(d: &Value) -> [bool; 3] {
    [d["error"] == true, d["throttle"] == true, d["fault"] == true]
}

fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// A local server: `/status/N` answers N, `/flaky` 503 then 200, `/hang`
/// never answers. It keeps each request's path and trace header.
/// Each request's path and `X-Amzn-Trace-Id`.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Server {
    addr: SocketAddr,
    seen: Seen,
}

impl Server {
    async fn start() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let flaky = Arc::new(AtomicU32::new(0));
        let kept = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, flaky) = (kept.clone(), flaky.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let (kept, flaky) = (kept.clone(), flaky.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let trace = req.headers().get("x-amzn-trace-id").map(|v| v.to_str().unwrap().to_owned());
                            kept.lock().unwrap().push((path.clone(), trace));
                            let status = match path.as_str() {
                                "/flaky" if flaky.fetch_add(1, Ordering::SeqCst) == 0 => 503,
                                "/flaky" => 200,
                                "/hang" => {
                                    tokio::time::sleep(Duration::from_secs(30)).await;
                                    200
                                }
                                p => p.trim_start_matches("/status/").parse().unwrap_or(200),
                            };
                            Ok::<_, Infallible>(hyper::Response::builder().status(status).body(Full::new(Bytes::from("hello"))).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Server { addr, seen }
    }

    fn seen(&self) -> Vec<(String, Option<String>)> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn the_tower_layer_records_each_request_and_the_callee_sees_its_subsegment_as_parent() {
    let server = Server::start().await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cap = MemoryTransport::default();
    let addr = server.addr;
    let mut svc = layer(&cap).layer(service_fn(move |_e: LambdaEvent<Value>| async move {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
        let traced = XRayClientLayer::new().traced(true).layer(client);
        let mut statuses = Vec::new();
        for path in ["/status/200?q=1", "/status/404", "/status/429", "/status/503"] {
            let req = hyper::Request::get(format!("http://{addr}{path}")).body(Full::new(Bytes::new())).unwrap();
            let response = traced.clone().oneshot(req).await?;
            statuses.push(response.status().as_u16());
        }
        let req = hyper::Request::get(format!("http://{refused}/nothing")).body(Full::new(Bytes::new())).unwrap();
        let refused = traced.clone().oneshot(req).await;
        Ok::<_, lambda_runtime::Error>(json!({"statuses": statuses, "refused": refused.is_err()}))
    }));
    let out = svc.call(event(true)).await.unwrap();
    // The outcomes are the client's own.
    assert_eq!(out, json!({"statuses": [200, 404, 429, 503], "refused": true}));

    let docs = cap.documents();
    let all = entities(&docs);
    let handler = all.iter().find(|(_, d)| d["name"] == "## test").map(|(_, d)| d.clone()).unwrap();
    let remotes: Vec<&Value> = all.iter().filter(|(p, _)| p == handler["id"].as_str().unwrap()).map(|(_, d)| d).collect();
    assert_eq!(remotes.len(), 5, "{docs:#?}");
    let expected = [
        (Some(200u64), [false, false, false]),
        (Some(404), [true, false, false]),
        (Some(429), [true, true, false]),
        (Some(503), [false, false, true]),
        (None, [false, false, true]),
    ];
    for (remote, (status, want)) in remotes.iter().zip(expected) {
        assert_eq!(remote["name"], "127.0.0.1");
        assert_eq!(remote["namespace"], "remote");
        assert_eq!(remote["http"]["request"]["method"], "GET");
        assert_eq!(remote["http"]["request"]["traced"], true);
        assert_eq!(remote["http"]["response"]["status"].as_u64(), status, "{remote:#}");
        assert_eq!(flags(remote), want, "{remote:#}");
        if status.is_some() {
            assert_eq!(remote["http"]["response"]["content_length"], 5);
        }
    }
    assert_eq!(remotes[0]["http"]["request"]["url"], format!("http://{addr}/status/200?q=1"));
    let refused_cause = &remotes[4]["cause"]["exceptions"];
    assert!(refused_cause.as_array().is_some_and(|e| !e.is_empty()), "{:#}", remotes[4]);
    // Each request named its own subsegment as the parent.
    let seen = server.seen();
    assert_eq!(seen.len(), 4);
    for ((_, sent), remote) in seen.iter().zip(&remotes) {
        let sent = sent.as_deref().unwrap();
        assert_eq!(field(sent, "Root"), Some(ROOT));
        assert_eq!(field(sent, "Parent"), remote["id"].as_str());
        assert_eq!(field(sent, "Sampled"), Some("1"));
    }
}

/// A retry outside the X-Ray middleware: one more attempt after a 503.
struct RetryOnce;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for RetryOnce {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let again = req.try_clone();
        let first = next.clone().run(req, extensions).await?;
        match again {
            Some(again) if first.status() == 503 => next.run(again, extensions).await,
            _ => Ok(first),
        }
    }
}

#[tokio::test]
async fn reqwest_retries_are_visible_credentials_stay_out_and_cancelled_requests_are_faults() {
    let server = Server::start().await;
    let cap = MemoryTransport::default();
    let addr = server.addr;
    let mut svc = layer(&cap).layer(service_fn(move |_e: LambdaEvent<Value>| async move {
        let client = reqwest_middleware::ClientBuilder::new(plain_reqwest()).with(RetryOnce).with(XRayReqwestMiddleware::new()).build();
        let flaky = client.get(format!("http://user:secret@{addr}/flaky")).send().await?;
        let hung = tokio::time::timeout(Duration::from_millis(100), client.get(format!("http://{addr}/hang")).send()).await;
        Ok::<_, lambda_runtime::Error>(json!({"flaky": flaky.status().as_u16(), "hung": hung.is_err()}))
    }));
    assert_eq!(svc.call(event(true)).await.unwrap(), json!({"flaky": 200, "hung": true}));
    let docs = cap.documents();
    let all = entities(&docs);
    let remotes: Vec<&Value> = all.iter().map(|(_, d)| d).filter(|d| d["namespace"] == "remote").collect();
    assert_eq!(remotes.len(), 3, "{docs:#?}");
    // Two attempts, two subsegments: the 503, then the 200.
    assert_eq!(remotes[0]["http"]["response"]["status"], 503);
    assert_eq!(flags(remotes[0]), [false, false, true]);
    assert_eq!(remotes[1]["http"]["response"]["status"], 200);
    assert_eq!(flags(remotes[1]), [false, false, false]);
    for r in &remotes[..2] {
        assert_eq!(r["http"]["request"]["url"], format!("http://{addr}/flaky"), "no credentials");
        assert!(!r.to_string().contains("secret"));
    }
    let seen = server.seen();
    let parents: Vec<Option<&str>> = seen.iter().take(2).map(|(_, h)| h.as_deref().and_then(|h| field(h, "Parent"))).collect();
    assert_eq!(parents, vec![remotes[0]["id"].as_str(), remotes[1]["id"].as_str()]);
    // The dropped request.
    assert_eq!(flags(remotes[2]), [false, false, true]);
    assert_eq!(remotes[2]["cause"]["exceptions"][0]["type"], "RequestCancelled", "{:#}", remotes[2]);
}

#[tokio::test]
async fn unsampled_requests_carry_sampled_0_and_record_nothing_and_outside_an_invocation_the_request_is_left_alone() {
    let server = Server::start().await;
    let cap = MemoryTransport::default();
    let addr = server.addr;
    let client = reqwest_middleware::ClientBuilder::new(plain_reqwest()).with(XRayReqwestMiddleware::new()).build();
    let inner = client.clone();
    let mut svc = layer(&cap).layer(service_fn(move |_e: LambdaEvent<Value>| {
        let client = inner.clone();
        async move {
            let status = client.get(format!("http://{addr}/status/200")).send().await?.status().as_u16();
            Ok::<_, lambda_runtime::Error>(json!(status))
        }
    }));
    assert_eq!(svc.call(event(false)).await.unwrap(), json!(200));
    assert!(cap.documents().is_empty());
    client.get(format!("http://{addr}/status/201")).send().await.unwrap();
    let seen = server.seen();
    let sent = seen[0].1.clone().unwrap();
    assert_eq!(field(&sent, "Root"), Some(ROOT));
    assert_eq!(field(&sent, "Parent"), Some(PARENT));
    assert_eq!(field(&sent, "Sampled"), Some("0"));
    assert_eq!(seen[1].1, None, "no header outside an invocation");
}

fn http_request(uri: &str, headers: &[(&str, &str)], sampled: bool) -> lambda_http::Request {
    let mut builder = http::Request::builder().method("POST").uri(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let mut ctx = Context::default();
    ctx.xray_trace_id = Some(header(sampled));
    builder.body(lambda_http::Body::from("request body")).unwrap().with_lambda_context(ctx)
}

#[tokio::test]
async fn the_http_layer_records_request_and_response_and_passes_the_response_through() {
    let cap = MemoryTransport::default();
    let mut svc = HttpLayer::from(layer(&cap)).layer(service_fn(|req: lambda_http::Request| async move {
        let status = req.uri().path().trim_start_matches('/').parse::<u16>().unwrap_or(200);
        Ok::<_, lambda_runtime::Error>(http::Response::builder().status(status).body(format!("answer {status}")).unwrap())
    }));
    let mut seen = HashMap::new();
    for status in [200u16, 404, 429, 500] {
        let req = http_request(
            &format!("https://api.example.com/{status}?x=1"),
            &[("user-agent", "ua/1"), ("x-forwarded-for", "192.0.2.1, 10.0.0.1")],
            true,
        );
        let response = svc.call(req).await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.body(), &lambda_http::Body::from(format!("answer {status}")));
        seen.insert(status, cap.documents().pop().unwrap());
        cap.clear();
    }
    for (status, want) in
        [(200, [false, false, false]), (404, [true, false, false]), (429, [true, true, false]), (500, [false, false, true])]
    {
        let d = &seen[&status];
        assert_eq!(d["name"], "## test");
        assert_eq!(d["http"]["request"]["method"], "POST");
        assert_eq!(d["http"]["request"]["url"], format!("https://api.example.com/{status}?x=1"));
        assert_eq!(d["http"]["request"]["user_agent"], "ua/1");
        // No API Gateway context: the X-Forwarded-For address, flagged.
        assert_eq!(d["http"]["request"]["client_ip"], "192.0.2.1");
        assert_eq!(d["http"]["request"]["x_forwarded_for"], true);
        assert_eq!(d["http"]["response"]["status"], status);
        assert_eq!(d["http"]["response"]["content_length"], format!("answer {status}").len());
        assert_eq!(flags(d), want, "{d:#}");
        assert!(!d.to_string().contains("answer"), "no body recorded: {d:#}");
    }
}

#[tokio::test]
async fn a_streamed_body_passes_through_frame_for_frame_and_ends_the_subsegment_at_its_end() {
    let cap = MemoryTransport::default();
    let mut svc = StreamingHttpLayer::from(layer(&cap)).layer(service_fn(|_req: lambda_http::Request| async move {
        let frames = futures_stream(vec![Bytes::from("one "), Bytes::from("two "), Bytes::from("three")]);
        Ok::<_, lambda_runtime::Error>(http::Response::builder().status(206).body(StreamBody::new(frames)).unwrap())
    }));
    let response = svc.call(http_request("https://s.example.com/x", &[], true)).await.unwrap();
    assert_eq!(response.status().as_u16(), 206);
    // Nothing is sent until the stream ends.
    assert!(cap.documents().is_empty());
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        frames.push(frame.unwrap().into_data().unwrap());
    }
    assert_eq!(frames, vec![Bytes::from("one "), Bytes::from("two "), Bytes::from("three")]);
    let docs = cap.documents();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["http"]["response"]["status"], 206);
    assert_eq!(docs[0]["http"]["response"]["content_length"], 13);
    assert!(docs[0].get("fault").is_none());
    drop(body);

    // Dropped before its end: a fault.
    cap.clear();
    let response = svc.call(http_request("https://s.example.com/x", &[], true)).await.unwrap();
    let mut body = response.into_body();
    let _ = body.frame().await;
    drop(body);
    let docs = cap.documents();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["fault"], true);
    assert_eq!(docs[0]["http"]["response"]["content_length"], 4);
    assert_eq!(docs[0]["cause"]["exceptions"][0]["type"], "StreamAborted");
}

type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

fn futures_stream(chunks: Vec<Bytes>) -> Frames {
    futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Frame::data(c))).collect::<Vec<_>>())
}
