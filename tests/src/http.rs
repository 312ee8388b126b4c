//! HTTP pieces of the end-to-end tests: the events API Gateway, Function URLs
//! and ALB send to a function, a downstream HTTP service the function calls,
//! and a Runtime API stand-in that takes streamed responses (the simulator
//! only takes JSON ones).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

use crate::Error;

/// The caller's address in the events (`sourceIp`).
pub const SOURCE_IP: &str = "203.0.113.9";
/// The first `X-Forwarded-For` address in the events.
pub const FORWARDED_IP: &str = "198.51.100.7";

/// Where an HTTP request reaches a function from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// API Gateway REST API (payload format 1.0).
    RestApi,
    /// API Gateway HTTP API (payload format 2.0).
    HttpApi,
    /// A Lambda Function URL (payload format 2.0, `lambda-url` domain).
    FunctionUrl,
    /// An Application Load Balancer target group.
    Alb,
}

impl Source {
    /// All of them.
    pub const ALL: [Source; 4] = [Source::RestApi, Source::HttpApi, Source::FunctionUrl, Source::Alb];

    /// The `Host` the event carries.
    pub fn host(self) -> &'static str {
        match self {
            Source::RestApi | Source::HttpApi => "abc123.execute-api.eu-west-1.amazonaws.com",
            Source::FunctionUrl => "xyz789.lambda-url.eu-west-1.on.aws",
            Source::Alb => "orders-1234.eu-west-1.elb.amazonaws.com",
        }
    }

    /// The user agent the event carries.
    pub fn user_agent(self) -> String {
        format!("e2e-client/{self:?}")
    }

    /// The client IP X-Ray should record, and whether it came from `X-Forwarded-For`.
    pub fn client_ip(self) -> (&'static str, bool) {
        match self {
            Source::Alb => (FORWARDED_IP, true),
            _ => (SOURCE_IP, false),
        }
    }

    /// The event for `GET {path}?{query}` (query without `?`, may be empty).
    pub fn event(self, path: &str, query: &str) -> Value {
        let host = self.host();
        let agent = self.user_agent();
        let queries: serde_json::Map<String, Value> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), json!(v))
            })
            .collect();
        let multi: serde_json::Map<String, Value> = queries.iter().map(|(k, v)| (k.clone(), json!([v]))).collect();
        match self {
            Source::RestApi => json!({
                "resource": "/{proxy+}",
                "path": path,
                "httpMethod": "GET",
                "headers": {"Host": host, "User-Agent": agent, "X-Forwarded-For": format!("{FORWARDED_IP}, 10.0.0.1"), "X-Forwarded-Proto": "https"},
                "multiValueHeaders": {"Host": [host], "User-Agent": [agent], "X-Forwarded-For": [format!("{FORWARDED_IP}, 10.0.0.1")], "X-Forwarded-Proto": ["https"]},
                "queryStringParameters": if queries.is_empty() { Value::Null } else { Value::Object(queries) },
                "multiValueQueryStringParameters": if multi.is_empty() { Value::Null } else { Value::Object(multi) },
                "pathParameters": {"proxy": path.trim_start_matches('/')},
                "stageVariables": null,
                "requestContext": {
                    "accountId": "123456789012", "resourceId": "r1", "stage": "prod", "requestId": "apigw-request-1",
                    "identity": {"sourceIp": SOURCE_IP, "userAgent": agent},
                    "resourcePath": "/{proxy+}", "httpMethod": "GET", "apiId": "abc123",
                    "path": format!("/prod{path}"), "protocol": "HTTP/1.1", "requestTimeEpoch": 1_796_166_000_000u64
                },
                "body": null,
                "isBase64Encoded": false
            }),
            Source::HttpApi | Source::FunctionUrl => {
                let (api, route) = if self == Source::HttpApi { ("abc123", "GET /{proxy+}") } else { ("xyz789", "$default") };
                json!({
                    "version": "2.0",
                    "routeKey": route,
                    "rawPath": path,
                    "rawQueryString": query,
                    "headers": {"host": host, "user-agent": agent, "x-forwarded-for": FORWARDED_IP, "x-forwarded-proto": "https"},
                    "queryStringParameters": if queries.is_empty() { Value::Null } else { Value::Object(queries) },
                    "requestContext": {
                        "accountId": "123456789012", "apiId": api, "domainName": host, "domainPrefix": api,
                        "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": SOURCE_IP, "userAgent": agent},
                        "requestId": "apigw-request-2", "routeKey": route, "stage": "$default",
                        "time": "01/Dec/2026:23:00:00 +0000", "timeEpoch": 1_796_166_000_000u64
                    },
                    "isBase64Encoded": false
                })
            }
            Source::Alb => json!({
                "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/orders/6d0ecf831eec9f09"}},
                "httpMethod": "GET",
                "path": path,
                "queryStringParameters": Value::Object(queries),
                "headers": {"host": host, "user-agent": agent, "x-forwarded-for": format!("{FORWARDED_IP}, 10.0.0.2"), "x-forwarded-proto": "http", "x-forwarded-port": "80"},
                "body": "",
                "isBase64Encoded": false
            }),
        }
    }

    /// The URL `lambda_http` rebuilds from [`Source::event`] (the REST API's
    /// stage left out: the sample runs with `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH`).
    pub fn url(self, path: &str, query: &str) -> String {
        let scheme = if self == Source::Alb { "http" } else { "https" };
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        format!("{scheme}://{}{path}{query}", self.host())
    }
}

/// One request the downstream service received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its path.
    pub path: String,
    /// Its `X-Amzn-Trace-Id`, if any.
    pub trace_header: Option<String>,
}

/// A downstream HTTP service on 127.0.0.1: `GET /stock/{id}` answers with
/// status `id` when `id` is a status code (`/stock/503`), else 200 with a
/// small body. It keeps every request's trace header.
pub struct Downstream {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Downstream {
    /// Starts it on a fresh port.
    pub async fn start() -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let kept = kept.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let trace_header = req.headers().get("x-amzn-trace-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                            if let Ok(mut kept) = kept.lock() {
                                kept.push(Received { path: path.clone(), trace_header });
                            }
                            let id = path.rsplit('/').next().unwrap_or_default();
                            let status = id.parse::<u16>().ok().filter(|s| (100..600).contains(s)).unwrap_or(200);
                            let body = if status == 200 { format!("{id}: 7 in stock") } else { format!("status {status}") };
                            Response::builder().status(status).body(Full::new(Bytes::from(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Downstream { addr, received, task })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Forgets what it received.
    pub fn clear(&self) {
        if let Ok(mut r) = self.received.lock() {
            r.clear();
        }
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port on 127.0.0.1 nothing listens on (connections are refused).
pub fn refused_addr() -> Result<SocketAddr, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(addr)
}

/// What the runtime posted for one invocation.
#[derive(Debug, Clone)]
pub struct Posted {
    /// `response` or `error`.
    pub kind: String,
    /// The request's headers (`Lambda-Runtime-Function-Response-Mode`...).
    pub headers: Vec<(String, String)>,
    /// The body, byte for byte (for a streamed response: the metadata
    /// prelude, eight NUL bytes, then the stream).
    pub body: Bytes,
}

struct Queued {
    payload: Value,
    trace_header: String,
    posted: oneshot::Sender<Posted>,
}

/// A Runtime API stand-in that takes any response, streamed ones included,
/// and keeps it byte for byte. One invocation at a time, as Lambda runs them.
pub struct RuntimeApi {
    /// Where it listens (`AWS_LAMBDA_RUNTIME_API`).
    pub addr: SocketAddr,
    queue: Arc<(Mutex<VecDeque<Queued>>, Notify)>,
    task: tokio::task::JoinHandle<()>,
}

type Pending = Arc<Mutex<Option<(String, oneshot::Sender<Posted>)>>>;

impl RuntimeApi {
    /// Starts it on a fresh port.
    pub async fn start() -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let queue: Arc<(Mutex<VecDeque<Queued>>, Notify)> = Arc::default();
        let pending: Pending = Arc::default();
        let served = queue.clone();
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok((stream, _)) = listener.accept().await {
                n += 1;
                let (queue, pending) = (served.clone(), pending.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| serve(req, queue.clone(), pending.clone(), n));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(RuntimeApi { addr, queue, task })
    }

    /// The environment a function process needs to run against it.
    pub fn function_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", "http-e2e".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/12/01/[$LATEST]e2e".to_owned()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/http-e2e".to_owned()),
            ("AWS_REGION", "eu-west-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Runs one invocation and returns what the runtime posted.
    pub async fn invoke(&self, payload: Value, trace_header: &str, timeout: Duration) -> Result<Posted, Error> {
        let (posted, rx) = oneshot::channel();
        self.queue.0.lock().map_err(|_| "queue poisoned")?.push_back(Queued { payload, trace_header: trace_header.to_owned(), posted });
        self.queue.1.notify_one();
        Ok(tokio::time::timeout(timeout, rx).await.map_err(|_| "no response in time")??)
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    req: Request<Incoming>,
    queue: Arc<(Mutex<VecDeque<Queued>>, Notify)>,
    pending: Pending,
    connection: u64,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let reply = |status: u16| Response::builder().status(status).body(Full::new(Bytes::new())).unwrap_or_default();
    if path.ends_with("/runtime/invocation/next") {
        let queued = loop {
            let notified = queue.1.notified();
            if let Some(q) = queue.0.lock().ok().and_then(|mut q| q.pop_front()) {
                break q;
            }
            notified.await;
        };
        let request_id = format!("req-{connection}-{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
        let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() + 30_000;
        if let Ok(mut p) = pending.lock() {
            *p = Some((request_id.clone(), queued.posted));
        }
        let response = Response::builder()
            .header("Lambda-Runtime-Aws-Request-Id", request_id)
            .header("Lambda-Runtime-Deadline-Ms", deadline.to_string())
            .header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:eu-west-1:123456789012:function:http-e2e")
            .header("Lambda-Runtime-Trace-Id", queued.trace_header)
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(queued.payload.to_string())))
            .unwrap_or_default();
        return Ok(response);
    }
    let kind = if path.ends_with("/response") {
        "response"
    } else if path.ends_with("/error") {
        "error"
    } else {
        return Ok(reply(404));
    };
    let headers = req.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned())).collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if path.contains("/init/") {
        return Ok(reply(202));
    }
    if let Some((request_id, posted)) = pending.lock().ok().and_then(|mut p| p.take())
        && path.contains(&request_id)
    {
        let _ = posted.send(Posted { kind: kind.to_owned(), headers, body });
    }
    Ok(reply(202))
}
