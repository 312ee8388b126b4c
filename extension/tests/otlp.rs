//! OTLP export, end to end: the real extension and function on the local
//! platform, exporting to a local OTLP/HTTP receiver (a hyper server that
//! gunzips and decodes `ExportTraceServiceRequest` with the
//! `opentelemetry-proto` types), or to a stand-in for X-Ray's OTLP endpoint
//! that checks the SigV4 signature with botocore (an independent
//! implementation, from the repository's `.venv`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/otlp_receiver.rs"]
mod otlp_receiver;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambda_xray_e2e::platform::{self as common, LONG, Options, Platform};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use otlp_receiver::{Answer, Receiver};
use serde_json::{Value, json};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `1-5759e988-bd862e3fe1be46a994272793` from 16 OTLP bytes.
fn xray_trace_id(bytes: &[u8]) -> String {
    let h = hex(bytes);
    format!("1-{}-{}", &h[..8], &h[8..])
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v: &AnyValue| v.value.as_ref())
}

/// A JSON scalar as the OTLP value it must have become.
fn same_value(json: &Value, otlp: Option<&Any>) -> bool {
    match (json, otlp) {
        (Value::String(s), Some(Any::StringValue(o))) => s == o,
        (Value::Bool(b), Some(Any::BoolValue(o))) => b == o,
        (Value::Number(n), Some(Any::IntValue(o))) => n.as_i64() == Some(*o),
        (Value::Number(n), Some(Any::DoubleValue(o))) => n.as_f64() == Some(*o),
        _ => false,
    }
}

fn ns(seconds: &Value) -> u64 {
    (seconds.as_f64().unwrap() * 1e9).round() as u64
}

/// Extra documents beyond the golden ones: nested subsegments with `sql`, and
/// an in-progress document whose completed version follows.
fn extra_datagrams(trace: &str, parent: &str) -> Vec<Vec<u8>> {
    let nested = json!({"id": "a1a1a1a1a1a1a1a1", "name": "db-work", "trace_id": trace, "parent_id": parent, "type": "subsegment",
        "start_time": 1795313645.25, "end_time": 1795313645.5, "error": true,
        "subsegments": [{"id": "b2b2b2b2b2b2b2b2", "name": "orders@db", "namespace": "remote", "start_time": 1795313645.3, "end_time": 1795313645.4,
            "sql": {"url": "postgresql://db:5432/orders", "database_type": "PostgreSQL", "sanitized_query": "SELECT 1", "user": "app"},
            "subsegments": [{"id": "c3c3c3c3c3c3c3c3", "name": "rows", "start_time": 1795313645.31, "end_time": 1795313645.32}]}]});
    let open = json!({"id": "d4d4d4d4d4d4d4d4", "name": "long", "trace_id": trace, "parent_id": parent, "type": "subsegment",
        "start_time": 1795313645.0, "in_progress": true});
    let closed = json!({"id": "d4d4d4d4d4d4d4d4", "name": "long", "trace_id": trace, "parent_id": parent, "type": "subsegment",
        "start_time": 1795313645.0, "end_time": 1795313646.0, "http": {"request": {"method": "POST", "url": "https://api.example/x"}, "response": {"status": 404}}});
    [nested, open, closed].iter().map(|d| format!("{{\"format\":\"json\",\"version\":1}}\n{d}").into_bytes()).collect()
}

/// The function's, the golden and the extension's own documents, exported with
/// `both`: every entity the daemon got is a span with the same ids, parent,
/// times, status and attributes; one request per flush, gzipped, with the
/// Lambda resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_mirror_the_daemon_documents() {
    let receiver = Receiver::start(Answer::Ok).await;
    let platform = Platform::start(Options {
        extension_env: vec![
            ("LAMBDA_XRAY_EXTENSION_EXPORT", "both".into()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint()),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s%3Dcret,x-team=core".into()),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test".into()),
        ],
        ..Options::default()
    })
    .await;
    let intake: SocketAddr = std::fs::read_to_string(&platform.marker).unwrap().parse().unwrap();
    let golden: Vec<Vec<u8>> =
        (1..=7).map(|n| std::fs::read(format!("{}/../fixtures/golden/raw/{n:03}.dgram", env!("CARGO_MANIFEST_DIR"))).unwrap()).collect();
    let (header, root, parent) = lambda_xray_e2e::new_trace_header(true);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for datagram in golden.iter().chain(&extra_datagrams(&root, &parent)) {
        socket.send_to(datagram, intake).unwrap();
    }
    platform.invoke_with_header(json!({"docs": 3}), &header).await;
    // The report of the first invocation goes with the second's flush.
    platform.invoke(json!({"docs": 2, "done": true})).await;
    let (counters, daemon) = platform.shutdown_keep_daemon().await;
    let counters = counters.unwrap();

    let documents = daemon.documents();
    let spans = receiver.spans();
    let causes = assert_mirrors(&documents, &spans);
    assert_eq!(causes, 1, "the golden cause");
    assert!(spans.iter().any(|s| s.name == "Lambda report"), "the extension's own subsegments too");
    assert!(spans.iter().any(|s| s.name == "rows"), "nested subsegments");
    // The in-progress document gave no span; its completed twin did.
    assert_eq!(spans.iter().filter(|s| hex(&s.span_id) == "d4d4d4d4d4d4d4d4").count(), 1);

    let requests = receiver.received.lock().unwrap();
    // Two flushes before `next` (the report may add the shutdown's).
    assert!((2..=3).contains(&requests.len()), "{} requests", requests.len());
    for r in requests.iter() {
        assert_eq!(r.path, "/v1/traces");
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
        assert_eq!(r.headers["content-encoding"], "gzip");
        assert_eq!(r.headers["x-api-key"], "s=cret");
        assert_eq!(r.headers["x-team"], "core");
        let resource: &ResourceSpans = &r.request.resource_spans[0];
        let resource = &resource.resource.as_ref().unwrap().attributes;
        let text = |key: &str| match attr(resource, key) {
            Some(Any::StringValue(s)) => s.clone(),
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(text("service.name"), "xray-fixture");
        assert_eq!(text("faas.name"), "xray-fixture");
        assert_eq!(text("cloud.provider"), "aws");
        assert_eq!(text("cloud.platform"), "aws_lambda");
        assert_eq!(text("deployment.environment.name"), "test");
        assert_eq!(attr(resource, "faas.max_memory"), Some(&Any::IntValue(128 * 1024 * 1024)));
    }
    // Every document went both ways.
    let received = counters["received"].as_u64().unwrap();
    let enriched = counters["enriched"].as_u64().unwrap();
    assert_eq!(counters["forwarded"].as_u64().unwrap(), received + enriched);
    assert_eq!(counters["exported"].as_u64().unwrap() + counters["export_skipped"].as_u64().unwrap(), received + enriched);
    assert_eq!(counters["export_skipped"], 1, "the in-progress document");
    assert_eq!(counters["export_dropped"], 0);
    assert_eq!(counters["export_failures"], 0);
}

/// Every entity of `documents` (embedded ones included, `in_progress` ones
/// not) is exactly one of `spans`, with the same trace and span ids, parent,
/// times in ns, status, annotations, metadata, `http`, `aws` and `sql`
/// attributes and exception events. Returns the number of exception events.
fn assert_mirrors(documents: &[Value], spans: &[Span]) -> usize {
    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "one span per entity id");
    let entities: Vec<(String, Value)> =
        lambda_xray_e2e::flatten(documents).into_iter().filter(|(_, e)| e["in_progress"] != true).collect();
    assert_eq!(spans.len(), entities.len(), "every entity and nothing else");
    let mut causes = 0;
    for (parent_id, entity) in &entities {
        let id = entity["id"].as_str().unwrap();
        let span = by_id.get(id).unwrap_or_else(|| panic!("no span for {id}"));
        let trace =
            documents.iter().find(|d| lambda_xray_e2e::flatten(std::slice::from_ref(d)).iter().any(|(_, e)| e["id"] == id)).unwrap();
        assert_eq!(xray_trace_id(&span.trace_id), trace["trace_id"].as_str().unwrap());
        assert_eq!(hex(&span.parent_span_id), *parent_id, "{id}: parent");
        assert_eq!(span.name, entity["name"].as_str().unwrap());
        assert_eq!(span.start_time_unix_nano, ns(&entity["start_time"]), "{id}: start");
        assert_eq!(span.end_time_unix_nano, ns(&entity["end_time"]), "{id}: end");
        let failed = entity["fault"] == true
            || entity["error"] == true
            || entity["throttle"] == true
            || entity.get("cause").is_some()
            || entity["http"]["response"]["status"].as_i64().is_some_and(|s| s >= 400);
        assert_eq!(span.status.as_ref().map(|s| s.code), failed.then_some(StatusCode::Error as i32), "{id}: status");
        for (key, value) in entity["annotations"].as_object().into_iter().flatten() {
            assert!(same_value(value, attr(&span.attributes, key)), "{id}: annotation {key}");
        }
        for (namespace, value) in entity["metadata"].as_object().into_iter().flatten() {
            let Some(Any::StringValue(json)) = attr(&span.attributes, &format!("aws.xray.metadata.{namespace}")) else {
                panic!("{id}: metadata")
            };
            assert_eq!(serde_json::from_str::<Value>(json).unwrap(), *value);
        }
        if let Some(status) = entity["http"]["response"].get("status") {
            assert!(same_value(status, attr(&span.attributes, "http.response.status_code")), "{id}: http status");
        }
        if let Some(method) = entity["http"]["request"].get("method") {
            assert!(same_value(method, attr(&span.attributes, "http.request.method")), "{id}: http method");
        }
        if let Some(operation) = entity["aws"].get("operation") {
            assert!(same_value(operation, attr(&span.attributes, "aws.operation")), "{id}: aws operation");
            assert!(same_value(&entity["aws"]["request_id"], attr(&span.attributes, "aws.request_id")));
            assert_eq!(span.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32);
        }
        if let Some(query) = entity["sql"].get("sanitized_query") {
            assert!(same_value(query, attr(&span.attributes, "db.statement")), "{id}: sql");
        }
        let exceptions = entity["cause"]["exceptions"].as_array().cloned().unwrap_or_default();
        assert_eq!(span.events.len(), exceptions.len(), "{id}: one event per exception");
        for (event, exception) in span.events.iter().zip(&exceptions) {
            causes += 1;
            assert_eq!(event.name, "exception");
            assert!(same_value(&exception["message"], attr(&event.attributes, "exception.message")));
            assert!(same_value(&exception["type"], attr(&event.attributes, "exception.type")));
        }
    }
    causes
}

/// The real `sample-basic` (lambda-xray: the handler subsegment with nested
/// children, `invocation_done` in the last document's header) with `both`:
/// its tree arrives as spans, before the freeze, rooted at the Lambda
/// segment's id from the trace header (not itself a span: Lambda owns it).
/// Needs the workspace's binaries built (`cargo build --workspace --bins`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_functions_tree_arrives_as_spans() {
    let receiver = Receiver::start(Answer::Ok).await;
    let platform = Platform::start(Options {
        function: "sample-basic",
        extension_env: vec![("LAMBDA_XRAY_EXTENSION_EXPORT", "both".into()), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint())],
        ..Options::default()
    })
    .await;
    let (header, root, parent) = lambda_xray_e2e::new_trace_header(true);
    let outcome = platform.invoke_outcome(json!({"name": "Ada"}), Some(&header), LONG).await;
    assert!(matches!(outcome, lambda_xray_e2e::Outcome::Response(_)), "{outcome:?}");
    // Frozen: the spans of this invocation are at the receiver already.
    let spans: Vec<Span> = receiver.spans().into_iter().filter(|s| xray_trace_id(&s.trace_id) == root).collect();
    let handler = spans.iter().find(|s| s.name == "## handler").expect("the handler span before the freeze");
    assert_eq!(hex(&handler.parent_span_id), parent, "parented on the Lambda segment");
    assert!(spans.iter().any(|s| s.parent_span_id == handler.span_id), "children under the handler");
    let (_, daemon) = platform.shutdown_keep_daemon().await;
    let documents: Vec<Value> = daemon.documents().into_iter().filter(|d| d["trace_id"] == root.as_str()).collect();
    let spans: Vec<Span> = receiver.spans().into_iter().filter(|s| xray_trace_id(&s.trace_id) == root).collect();
    assert!(documents.len() >= 2, "the handler's document and the report");
    assert_mirrors(&documents, &spans);
}

/// Platform exporting to `endpoint` only, with the post-runtime clock.
async fn otlp_platform(endpoint: String, extra: Vec<(&'static str, String)>) -> Platform {
    let mut env = vec![("LAMBDA_XRAY_EXTENSION_EXPORT", "otlp".to_owned()), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)];
    env.extend(extra);
    Platform::start(Options { extension_env: env, clock: true, ..Options::default() }).await
}

/// The time from the runtime's response to the extension's `next`.
async fn tail(platform: &Platform, request_id: &str) -> Duration {
    platform.post_runtime(request_id).await.expect("post-runtime time")
}

/// Far above the flush bound (60 ms) and far below what an unbounded wait
/// would take here (the slow receiver answers after 2 s; the export timeout
/// is 10 s).
const NEXT_BOUND: Duration = Duration::from_millis(750);

/// Endpoint refusing connections: `next` within the bound, the failures
/// counted, nothing exported, and the documents kept (none dropped) until
/// the endpoint is back... which it is not here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_endpoint_keeps_next_in_bound() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let platform = otlp_platform(format!("http://{closed}/v1/traces"), vec![]).await;
    for _ in 0..3 {
        let (request_id, response) = platform.invoke(json!({"docs": 5, "done": true})).await;
        assert_eq!(response["sent"], 5);
        let t = tail(&platform, &request_id).await;
        assert!(t < NEXT_BOUND, "next {t:?} after the response");
    }
    let extension = platform.extension.as_ref().unwrap();
    assert!(extension.wait_for_line("OTLP export to", LONG).await);
    assert!(extension.lines().iter().any(|l| l.contains("failed") && l.contains("keeping")), "the failure is logged");
    let counters = platform.shutdown().await.unwrap();
    assert_eq!(counters["exported"], 0);
    assert!(counters["export_failures"].as_u64().unwrap() >= 3, "{counters}");
    assert_eq!(counters["export_dropped"], 0);
    assert_eq!(counters["buffered"], 15 + counters["enriched"].as_u64().unwrap(), "all still held at the end");
    assert_eq!(counters["forwarded"], 0, "otlp only: nothing to the daemon");
}

/// A slow endpoint (2 s per answer): `next` still within the bound; the
/// request in flight goes on and its documents arrive, none lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_endpoint_keeps_next_in_bound_and_delivers() {
    let receiver = Receiver::start(Answer::Slow(Duration::from_secs(2))).await;
    let platform = otlp_platform(receiver.endpoint(), vec![]).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (request_id, _) = platform.invoke(json!({"docs": 4, "done": true})).await;
        let t = tail(&platform, &request_id).await;
        assert!(t < NEXT_BOUND, "next {t:?} after the response");
        ids.push(request_id);
    }
    // Faster now, so shutdown can send what is left; and the first slow
    // answer is on its way back to the (frozen) extension meanwhile.
    *receiver.answer.lock().unwrap() = Answer::Ok;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let counters = platform.shutdown().await.unwrap();
    let fixture: Vec<Span> = receiver.spans().into_iter().filter(|s| s.name == "fixture-work").collect();
    let unique: std::collections::HashSet<Vec<u8>> = fixture.iter().map(|s| s.span_id.clone()).collect();
    assert_eq!(unique.len(), 8, "every document, {counters}");
    assert_eq!(fixture.len(), 8, "none twice");
    assert_eq!(counters["export_dropped"], 0);
}

/// An endpoint that refuses for good (400): those documents are dropped and
/// counted; with a small buffer and a refusing endpoint, drop-oldest counts
/// exactly what was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_over_the_bound_are_counted() {
    let receiver = Receiver::start(Answer::Status(400)).await;
    let platform = otlp_platform(receiver.endpoint(), vec![]).await;
    platform.invoke(json!({"docs": 5, "done": true})).await;
    let counters = platform.shutdown().await.unwrap();
    assert_eq!(counters["exported"], 0);
    assert!(counters["export_dropped"].as_u64().unwrap() >= 5, "{counters}");
    assert!(counters["export_failures"].as_u64().unwrap() >= 1);

    const BOUND: usize = 20_000;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let platform =
        otlp_platform(format!("http://{closed}/v1/traces"), vec![("LAMBDA_XRAY_EXTENSION_BUFFER_BYTES", BOUND.to_string())]).await;
    platform.invoke(json!({"docs": 60, "pad": 700, "done": true})).await;
    let counters = platform.shutdown().await.unwrap();
    let received = counters["received"].as_u64().unwrap() + counters["enriched"].as_u64().unwrap();
    let dropped = counters["export_dropped"].as_u64().unwrap();
    assert!(dropped > 0, "{counters}");
    assert_eq!(dropped + counters["buffered"].as_u64().unwrap(), received, "every document is either held or counted as dropped");
}

/// The repository's Python (botocore comes with moto), from `scripts/setup-python.sh`.
fn venv_python() -> std::path::PathBuf {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup-python.sh", python.display());
    python
}

/// A stand-in for X-Ray's OTLP endpoint, in Python: it recomputes each
/// request's SigV4 signature with botocore's `SigV4Auth` from the request
/// it received and the credentials it knows, answers 200 or 403, and prints
/// `verified` or `mismatch` per request.
struct SigV4StandIn {
    child: tokio::process::Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

const STAND_IN: &str = r#"
import sys, http.server, hmac
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

access_key, secret_key, token, region = sys.argv[1:5]
tls = sys.argv[5:7]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        auth = self.headers.get("authorization", "")
        ok = False
        try:
            scheme, rest = auth.split(" ", 1)
            fields = dict(part.strip().split("=", 1) for part in rest.split(","))
            signed = fields["SignedHeaders"].split(";")
            headers = {name: self.headers[name] for name in signed}
            request = AWSRequest(method="POST", url="http://" + self.headers["host"] + self.path, data=body, headers=headers)
            request.context["timestamp"] = self.headers["x-amz-date"]
            signer = SigV4Auth(Credentials(access_key, secret_key, token), "xray", region)
            expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
            scope = fields["Credential"].split("/", 1)[1]
            ok = (scheme == "AWS4-HMAC-SHA256"
                  and hmac.compare_digest(expected, fields["Signature"])
                  and fields["Credential"].split("/")[0] == access_key
                  and scope == signer.scope(request).split("/", 1)[1]
                  and self.headers.get("x-amz-security-token") == token
                  and "content-type" in signed and "host" in signed)
        except Exception as e:
            print("error", repr(e), flush=True)
        print("verified" if ok else "mismatch", region, len(body), flush=True)
        self.send_response(200 if ok else 403)
        self.send_header("content-length", "0")
        self.end_headers()

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if tls:
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls[0], tls[1])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
"#;

impl SigV4StandIn {
    /// `tls`: the certificate and key files to serve https with.
    async fn start(access_key: &str, secret_key: &str, token: &str, region: &str, tls: Option<(&str, &str)>) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut args = vec!["-c", STAND_IN, access_key, secret_key, token, region];
        if let Some((cert, key)) = tls {
            args.extend([cert, key]);
        }
        let mut child =
            tokio::process::Command::new(venv_python()).args(args).stdout(std::process::Stdio::piped()).kill_on_drop(true).spawn().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(LONG, lines.next_line()).await.unwrap().unwrap().unwrap();
        let port: u16 = first.strip_prefix("listening ").unwrap().parse().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), lines: seen }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

const ACCESS_KEY: &str = "AKIDLAMBDAXRAYTEST";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE//session+token=";

/// `xray-otlp` signs as X-Ray in the function's region (here eu-central-1,
/// sent to a local stand-in through the endpoint override): botocore agrees
/// with every signature. With a wrong secret it does not, the stand-in
/// answers 403, and the extension counts the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_signature_verified_by_botocore() {
    for (secret, expect_ok) in [(SECRET_KEY, true), ("not-the-secret", false)] {
        let mut stand_in = SigV4StandIn::start(ACCESS_KEY, SECRET_KEY, TOKEN, "eu-central-1", None).await;
        let platform = Platform::start(Options {
            extension_env: vec![
                ("LAMBDA_XRAY_EXTENSION_EXPORT", "xray-otlp".into()),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", format!("http://{}/v1/traces", stand_in.addr)),
                ("AWS_REGION", "eu-central-1".into()),
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY", secret.into()),
                ("AWS_SESSION_TOKEN", TOKEN.into()),
            ],
            ..Options::default()
        })
        .await;
        let extension = platform.extension.as_ref().unwrap();
        assert!(extension.lines().iter().any(|l| l.contains("SigV4-signed")), "signing is on");
        platform.invoke(json!({"docs": 3, "done": true})).await;
        platform.invoke(json!({"docs": 2, "done": true})).await;
        let counters = platform.shutdown().await.unwrap();
        assert!(common::wait_until(LONG, || !stand_in.lines().is_empty()).await);
        let lines = stand_in.lines();
        let verified = lines.iter().filter(|l| l.starts_with("verified eu-central-1")).count();
        let mismatched = lines.iter().filter(|l| l.starts_with("mismatch")).count();
        if expect_ok {
            assert!(verified >= 2, "{lines:?}");
            assert_eq!(mismatched, 0, "{lines:?}");
            assert_eq!(counters["export_failures"], 0);
            assert_eq!(counters["exported"].as_u64().unwrap(), 5 + counters["enriched"].as_u64().unwrap());
        } else {
            assert_eq!(verified, 0, "{lines:?}");
            assert!(mismatched >= 1, "{lines:?}");
            assert_eq!(counters["exported"], 0);
            assert!(counters["export_dropped"].as_u64().unwrap() >= 3, "403 is a refusal for good: {counters}");
        }
        stand_in.child.kill().await.unwrap();
    }
}

/// A self-signed certificate for `localhost` (Python's `cryptography`, which
/// moto brings into `.venv`): (certificate, key) PEM paths in `dir`.
fn localhost_certificate(dir: &std::path::Path) -> (String, String) {
    const MAKE: &str = r#"
import sys, datetime
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
    .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
    .not_valid_after(now + datetime.timedelta(days=1))
    .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    .sign(key, hashes.SHA256()))
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(sys.argv[2], "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"#;
    let cert = dir.join("localhost.pem").display().to_string();
    let key = dir.join("localhost.key").display().to_string();
    let status = std::process::Command::new(venv_python()).args(["-c", MAKE, &cert, &key]).status().unwrap();
    assert!(status.success(), "making the test certificate");
    (cert, key)
}

/// X-Ray's path end to end: https (rustls, the trust store from
/// `SSL_CERT_FILE`) and SigV4 to a TLS stand-in at `localhost`, verified by
/// botocore. Without the certificate in the trust store the handshake
/// fails: nothing reaches the stand-in and the failures are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_system_trust_store() {
    let dir = std::env::temp_dir().join(format!("lambda-xray-otlp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = localhost_certificate(&dir);
    for trusted in [true, false] {
        let mut stand_in = SigV4StandIn::start(ACCESS_KEY, SECRET_KEY, TOKEN, "eu-central-1", Some((&cert, &key))).await;
        let mut env = vec![
            ("LAMBDA_XRAY_EXTENSION_EXPORT", "xray-otlp".to_owned()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", format!("https://localhost:{}/v1/traces", stand_in.addr.port())),
            ("AWS_REGION", "eu-central-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_SESSION_TOKEN", TOKEN.into()),
        ];
        if trusted {
            env.push(("SSL_CERT_FILE", cert.clone()));
        }
        let platform = Platform::start(Options { extension_env: env, ..Options::default() }).await;
        platform.invoke(json!({"docs": 3, "done": true})).await;
        platform.invoke(json!({"docs": 2, "done": true})).await;
        let counters = platform.shutdown().await.unwrap();
        let lines = stand_in.lines();
        if trusted {
            assert!(
                common::wait_until(LONG, || stand_in.lines().iter().filter(|l| l.starts_with("verified")).count() >= 2).await,
                "{lines:?}"
            );
            assert_eq!(counters["exported"].as_u64().unwrap(), 5 + counters["enriched"].as_u64().unwrap(), "{counters}");
            assert_eq!(counters["export_failures"], 0);
        } else {
            assert!(lines.iter().all(|l| !l.starts_with("verified") && !l.starts_with("mismatch")), "{lines:?}");
            assert_eq!(counters["exported"], 0);
            assert!(counters["export_failures"].as_u64().unwrap() >= 2, "{counters}");
            assert_eq!(counters["export_dropped"], 0, "kept for when the endpoint is trusted");
        }
        stand_in.child.kill().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
