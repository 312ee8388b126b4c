//! X-Ray segment documents to OpenTelemetry spans.
//!
//! The mapping follows the OpenTelemetry Collector's X-Ray receiver (X-Ray →
//! OTel) and reads its attributes the way the collector's X-Ray exporter
//! (OTel → X-Ray) reads them back, so that a document that goes out as a span
//! and comes back as a segment keeps what it can. Sources, in
//! open-telemetry/opentelemetry-collector-contrib:
//! `receiver/awsxrayreceiver/internal/translator/{translator,name,http,cause,aws,sql,annotations,metadata,time}.go`
//! and `exporter/awsxrayexporter/internal/translator/{segment,http,cause,aws}.go`;
//! attribute keys from `internal/aws/xray/awsxray.go`.
//!
//! What does not round-trip (see README.md "OTLP export"): namespaces other
//! than `aws` and `remote`, `cause.working_directory`, `cause.paths`,
//! `precursor_ids`, `links`, `origin`, the `http.request.traced` flag,
//! `sql` fields other than the five below, nested objects inside `aws` other
//! than the known keys, and sub-microsecond time (an f64 of epoch seconds
//! resolves about 0.24 µs).

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use serde_json::{Map, Value};

/// Why a document yields no spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not JSON, not an object, or an id or trace id in the wrong format.
    Malformed,
    /// `in_progress: true`: OpenTelemetry has no open spans; the completed
    /// document with the same id comes later and is exported then.
    InProgress,
}

/// A string attribute.
pub fn string(key: &str, value: impl Into<String>) -> KeyValue {
    attr(key, Any::StringValue(value.into()))
}

fn attr(key: &str, value: Any) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }) }
}

/// The OTel value of a JSON scalar; `None` for null, arrays and objects.
fn scalar(value: &Value) -> Option<Any> {
    match value {
        Value::String(s) => Some(Any::StringValue(s.clone())),
        Value::Bool(b) => Some(Any::BoolValue(*b)),
        Value::Number(n) => n.as_i64().map(Any::IntValue).or_else(|| n.as_f64().map(Any::DoubleValue)),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// `1-5759e988-bd862e3fe1be46a994272793` → its 16 bytes: the 8 hex digits
/// of the epoch seconds then the 24 random ones (receiver `decodeXRayTraceID`).
pub fn trace_id(value: &str) -> Option<[u8; 16]> {
    let rest = value.strip_prefix("1-")?;
    let (time, random) = rest.split_once('-')?;
    if time.len() != 8 || random.len() != 24 {
        return None;
    }
    let mut out = [0; 16];
    hex_into(time, &mut out[..4])?;
    hex_into(random, &mut out[4..])?;
    Some(out)
}

/// A 16-hex-digit entity id → its 8 bytes.
pub fn span_id(value: &str) -> Option<[u8; 8]> {
    if value.len() != 16 {
        return None;
    }
    let mut out = [0; 8];
    hex_into(value, &mut out)?;
    Some(out)
}

fn hex_into(hex: &str, out: &mut [u8]) -> Option<()> {
    let bytes = hex.as_bytes();
    if bytes.len() != out.len() * 2 {
        return None;
    }
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(())
}

/// Epoch seconds → nanoseconds (receiver `time.go`: × 1e9).
fn nanos(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 { (seconds * 1e9).round() as u64 } else { 0 }
}

/// Appends the spans of one document (the entity and every embedded
/// subsegment) to `out`; on a skip nothing is appended.
pub fn document_spans(body: &[u8], out: &mut Vec<Span>) -> Result<usize, Skip> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| Skip::Malformed)?;
    let doc = doc.as_object().ok_or(Skip::Malformed)?;
    if doc.get("in_progress").and_then(Value::as_bool) == Some(true) {
        return Err(Skip::InProgress);
    }
    let trace = doc.get("trace_id").and_then(Value::as_str).and_then(trace_id).ok_or(Skip::Malformed)?;
    let parent = match doc.get("parent_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(span_id(p).ok_or(Skip::Malformed)?),
        Some(_) => return Err(Skip::Malformed),
    };
    let before = out.len();
    if let Err(skip) = entity(doc, trace, parent, true, out) {
        out.truncate(before);
        return Err(skip);
    }
    Ok(out.len() - before)
}

fn entity(doc: &Map<String, Value>, trace: [u8; 16], parent: Option<[u8; 8]>, top: bool, out: &mut Vec<Span>) -> Result<(), Skip> {
    let id = doc.get("id").and_then(Value::as_str).and_then(span_id).ok_or(Skip::Malformed)?;
    let name = doc.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let start = nanos(doc.get("start_time").and_then(Value::as_f64).unwrap_or_default());
    // An embedded subsegment still open inside a closed parent: end it with
    // the parent rather than leave an open span (there is no such thing).
    let end = doc.get("end_time").and_then(Value::as_f64).map_or(start, nanos);
    let namespace = doc.get("namespace").and_then(Value::as_str);
    let is_segment = top && doc.get("type").and_then(Value::as_str) != Some("subsegment");
    let http = doc.get("http").and_then(Value::as_object);
    let has_client_ip = http.and_then(|h| h.get("request")).and_then(|r| r.get("client_ip")).is_some();
    // receiver `name.go`: aws/remote → CLIENT; a segment, or a subsegment
    // with a client IP and no namespace → SERVER; otherwise INTERNAL.
    let kind = match namespace {
        Some("aws" | "remote") => SpanKind::Client,
        _ if is_segment => SpanKind::Server,
        None if has_client_ip => SpanKind::Server,
        _ => SpanKind::Internal,
    };

    let mut attributes = Vec::new();
    if namespace == Some("aws") {
        attributes.push(string("aws.service", name.clone()));
        attributes.push(string("rpc.system", "aws-api"));
        attributes.push(string("rpc.service", name.clone()));
    }
    if let Some(http) = http {
        http_attributes(http, &mut attributes);
    }
    if let Some(aws) = doc.get("aws").and_then(Value::as_object) {
        aws_attributes(aws, &mut attributes);
    }
    if let Some(sql) = doc.get("sql").and_then(Value::as_object) {
        sql_attributes(sql, &mut attributes);
    }
    if let Some(annotations) = doc.get("annotations").and_then(Value::as_object) {
        let mut keys = Vec::new();
        for (key, value) in annotations {
            if let Some(v) = scalar(value) {
                attributes.push(attr(key, v));
                keys.push(AnyValue { value: Some(Any::StringValue(key.clone())) });
            }
        }
        if !keys.is_empty() {
            attributes.push(attr("aws.xray.annotations", Any::ArrayValue(ArrayValue { values: keys })));
        }
    }
    if let Some(metadata) = doc.get("metadata").and_then(Value::as_object) {
        for (namespace, value) in metadata {
            // receiver `metadata.go`: one JSON string per namespace.
            if let Ok(json) = serde_json::to_string(value) {
                attributes.push(string(&format!("aws.xray.metadata.{namespace}"), json));
            }
        }
    }
    if let Some(user) = doc.get("user").and_then(Value::as_str) {
        attributes.push(string("enduser.id", user));
    }
    if let Some(version) = doc.get("service").and_then(|s| s.get("version")).and_then(Value::as_str) {
        attributes.push(string("service.version", version));
    }
    let flag = |key: &str| doc.get(key).and_then(Value::as_bool) == Some(true);
    let (fault, error, throttle) = (flag("fault"), flag("error"), flag("throttle"));
    for (key, set) in [("aws.xray.fault", fault), ("aws.xray.error", error), ("aws.xray.throttle", throttle)] {
        if set {
            attributes.push(attr(key, Any::BoolValue(true)));
        }
    }

    let mut events = Vec::new();
    let mut status_message = String::new();
    let cause = doc.get("cause");
    match cause {
        Some(Value::Object(cause)) => {
            for exception in cause.get("exceptions").and_then(Value::as_array).into_iter().flatten() {
                if let Some(exception) = exception.as_object() {
                    if status_message.is_empty() {
                        status_message = exception.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
                    }
                    events.push(exception_event(exception, end));
                }
            }
        }
        // receiver `cause.go`: a cause that is only an exception id (the
        // exception is recorded on another entity) becomes the status message.
        Some(Value::String(id)) => status_message = id.clone(),
        _ => {}
    }
    // receiver `http.go`: a response status outside 100–398 is an error.
    let status_code = http.and_then(|h| h.get("response")).and_then(|r| r.get("status")).and_then(Value::as_i64);
    let failed =
        fault || error || throttle || cause.is_some_and(|c| !c.is_null()) || status_code.is_some_and(|s| !(100..=398).contains(&s));
    if failed && status_message.is_empty() {
        status_message = if fault {
            "fault"
        } else if throttle {
            "throttle"
        } else {
            "error"
        }
        .to_owned();
    }
    let status = failed.then_some(Status { message: status_message, code: StatusCode::Error as i32 });

    out.push(Span {
        trace_id: trace.to_vec(),
        span_id: id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end.max(start),
        attributes,
        events,
        status,
        ..Span::default()
    });
    for child in doc.get("subsegments").and_then(Value::as_array).into_iter().flatten() {
        let child = child.as_object().ok_or(Skip::Malformed)?;
        // Embedded subsegments share the document's trace; their parent is
        // the enclosing entity (receiver `translator.go`).
        entity(child, trace, Some(id), false, out)?;
    }
    Ok(())
}

/// `http` → the stable HTTP semantic conventions, which the X-Ray exporter
/// reads back (exporter `http.go` reads old and new keys).
fn http_attributes(http: &Map<String, Value>, out: &mut Vec<KeyValue>) {
    let request = http.get("request").and_then(Value::as_object);
    let response = http.get("response").and_then(Value::as_object);
    let field = |block: Option<&Map<String, Value>>, key: &str| block.and_then(|b| b.get(key)).and_then(scalar);
    for (block, key, otel) in [
        (request, "method", "http.request.method"),
        (request, "url", "url.full"),
        (request, "user_agent", "user_agent.original"),
        (request, "client_ip", "client.address"),
        (request, "x_forwarded_for", "aws.xray.x_forwarded_for"),
        (response, "status", "http.response.status_code"),
        (response, "content_length", "http.response.body.size"),
    ] {
        if let Some(value) = field(block, key) {
            out.push(attr(otel, value));
        }
    }
}

/// `aws` → the receiver's keys (`aws.go`); other scalar fields keep their
/// name under `aws.` so they are not lost.
fn aws_attributes(aws: &Map<String, Value>, out: &mut Vec<KeyValue>) {
    for (key, value) in aws {
        let Some(v) = scalar(value) else {
            continue;
        };
        match key.as_str() {
            "operation" => {
                out.push(attr("aws.operation", v.clone()));
                out.push(attr("rpc.method", v));
            }
            "account_id" => out.push(attr("aws.account_id", v)),
            "region" => out.push(attr("aws.region", v)),
            "request_id" => out.push(attr("aws.request_id", v)),
            "queue_url" => out.push(attr("aws.queue_url", v)),
            "table_name" => out.push(attr("aws.table_name", v)),
            "retries" => out.push(attr("aws.xray.retries", v)),
            other => out.push(attr(&format!("aws.{other}"), v)),
        }
    }
}

/// `sql` → the database keys the X-Ray receiver writes and exporter reads (`sql.go`).
fn sql_attributes(sql: &Map<String, Value>, out: &mut Vec<KeyValue>) {
    let text = |key: &str| sql.get(key).and_then(Value::as_str);
    if let Some(url) = text("url") {
        out.push(string("db.connection_string", url));
        // The database is the last path segment of the URL.
        let path = url.split_once("://").map_or(url, |(_, rest)| rest);
        if let Some((_, db)) = path.split('?').next().unwrap_or_default().rsplit_once('/')
            && !db.is_empty()
        {
            out.push(string("db.name", db));
        }
    }
    for (key, otel) in [("database_type", "db.system"), ("sanitized_query", "db.statement"), ("user", "db.user")] {
        if let Some(value) = text(key) {
            out.push(string(otel, value));
        }
    }
}

/// One `cause.exceptions[]` entry → an `exception` event (receiver `cause.go`).
fn exception_event(exception: &Map<String, Value>, at: u64) -> Event {
    let text = |key: &str| exception.get(key).and_then(Value::as_str).unwrap_or_default();
    let (kind, message) = (text("type"), text("message"));
    let mut attributes = vec![string("exception.type", kind), string("exception.message", message)];
    let mut stack = format!("{kind}: {message}");
    for frame in exception.get("stack").and_then(Value::as_array).into_iter().flatten() {
        let part = |key: &str| frame.get(key).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).unwrap_or_default();
        stack.push_str(&format!("\n\tat {}({}: {})", part("label"), part("path"), part("line")));
    }
    attributes.push(string("exception.stacktrace", stack));
    for key in ["id", "remote", "truncated", "skipped", "cause"] {
        if let Some(value) = exception.get(key).and_then(scalar) {
            attributes.push(attr(&format!("aws.xray.exception.{key}"), value));
        }
    }
    Event { time_unix_nano: at, name: "exception".to_owned(), attributes, dropped_attributes_count: 0 }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn spans(doc: Value) -> Vec<Span> {
        let mut out = Vec::new();
        document_spans(doc.to_string().as_bytes(), &mut out).unwrap();
        out
    }

    fn get<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
        span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
    }

    fn text<'a>(span: &'a Span, key: &str) -> &'a str {
        match get(span, key) {
            Some(Any::StringValue(s)) => s,
            other => panic!("{key}: {other:?}"),
        }
    }

    const TRACE: &str = "1-5759e988-bd862e3fe1be46a994272793";

    #[test]
    fn ids_and_times() {
        assert_eq!(
            trace_id(TRACE).unwrap(),
            [0x57, 0x59, 0xe9, 0x88, 0xbd, 0x86, 0x2e, 0x3f, 0xe1, 0xbe, 0x46, 0xa9, 0x94, 0x27, 0x27, 0x93]
        );
        for bad in [
            "",
            "1-5759e988",
            "2-5759e988-bd862e3fe1be46a994272793",
            "1-5759e98g-bd862e3fe1be46a994272793",
            "1-5759e988-bd862e3fe1be46a99427279",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
        assert_eq!(span_id("53995c3f42cd8ad8").unwrap(), [0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8]);
        assert_eq!(span_id("53995c3f42cd8ad"), None);
        assert_eq!(span_id("53995c3f42cd8adé"), None);
        let s = spans(json!({"id": "ef79be37a93984b8", "name": "work", "trace_id": TRACE, "parent_id": "53995c3f42cd8ad8",
            "type": "subsegment", "start_time": 1795313644.5157983, "end_time": 1795313644.515863}));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "work");
        assert_eq!(s[0].parent_span_id, span_id("53995c3f42cd8ad8").unwrap());
        // Microseconds survive an f64 of epoch seconds.
        assert_eq!(s[0].start_time_unix_nano / 1000, 1_795_313_644_515_798);
        assert_eq!(s[0].end_time_unix_nano / 1000, 1_795_313_644_515_863);
        assert_eq!(s[0].kind, SpanKind::Internal as i32);
        assert!(s[0].status.is_none());
    }

    #[test]
    fn nested_subsegments_become_child_spans() {
        let s = spans(json!({"id": "1111111111111111", "name": "seg", "trace_id": TRACE, "start_time": 1.0, "end_time": 3.0,
            "subsegments": [{"id": "2222222222222222", "name": "a", "start_time": 1.5, "end_time": 2.0,
                "subsegments": [{"id": "3333333333333333", "name": "b", "start_time": 1.6}]}]}));
        assert_eq!(s.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["seg", "a", "b"]);
        assert!(s[0].parent_span_id.is_empty());
        assert_eq!(s[0].kind, SpanKind::Server as i32, "a segment is the server span");
        assert_eq!(s[1].parent_span_id, s[0].span_id);
        assert_eq!(s[2].parent_span_id, s[1].span_id);
        assert_eq!(s[2].trace_id, s[0].trace_id);
        assert_eq!(s[2].end_time_unix_nano, s[2].start_time_unix_nano, "an open embedded subsegment is closed at its start");
    }

    #[test]
    fn annotations_metadata_user_service() {
        let s = spans(
            json!({"id": "ef79be37a93984b8", "name": "w", "trace_id": TRACE, "type": "subsegment", "start_time": 1.0, "end_time": 2.0,
            "annotations": {"order_id": "o-123", "count": 3, "ok": true, "ratio": 0.5},
            "metadata": {"app": {"payload": {"a": 1}}, "default": {"plain": "v"}},
            "user": "alice", "service": {"version": "1.2"}}),
        );
        let span = &s[0];
        assert_eq!(text(span, "order_id"), "o-123");
        assert_eq!(get(span, "count"), Some(&Any::IntValue(3)));
        assert_eq!(get(span, "ok"), Some(&Any::BoolValue(true)));
        assert_eq!(get(span, "ratio"), Some(&Any::DoubleValue(0.5)));
        let Some(Any::ArrayValue(keys)) = get(span, "aws.xray.annotations") else { panic!() };
        assert_eq!(keys.values.len(), 4);
        let app: Value = serde_json::from_str(text(span, "aws.xray.metadata.app")).unwrap();
        assert_eq!(app, json!({"payload": {"a": 1}}));
        assert_eq!(text(span, "aws.xray.metadata.default"), r#"{"plain":"v"}"#);
        assert_eq!(text(span, "enduser.id"), "alice");
        assert_eq!(text(span, "service.version"), "1.2");
    }

    #[test]
    fn flags_and_cause() {
        let s = spans(json!({"id": "cbace9aaa8ee5a6a", "name": "boom", "trace_id": TRACE, "type": "subsegment",
            "start_time": 1.0, "end_time": 2.0, "fault": true,
            "cause": {"working_directory": "/var/task", "exceptions": [{"id": "a5cb2d33faf58551", "message": "kaboom",
                "type": "ValueError", "remote": false, "stack": [{"path": "golden_lambda.py", "line": 27, "label": "handler"}]}]}}));
        let span = &s[0];
        let status = span.status.as_ref().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "kaboom");
        assert_eq!(get(span, "aws.xray.fault"), Some(&Any::BoolValue(true)));
        assert_eq!(get(span, "aws.xray.error"), None);
        assert_eq!(span.events.len(), 1);
        let event = &span.events[0];
        assert_eq!(event.name, "exception");
        assert_eq!(event.time_unix_nano, 2_000_000_000);
        let e = Span { attributes: event.attributes.clone(), ..Span::default() };
        assert_eq!(text(&e, "exception.type"), "ValueError");
        assert_eq!(text(&e, "exception.message"), "kaboom");
        assert_eq!(text(&e, "exception.stacktrace"), "ValueError: kaboom\n\tat handler(golden_lambda.py: 27)");
        assert_eq!(text(&e, "aws.xray.exception.id"), "a5cb2d33faf58551");
        assert_eq!(get(&e, "aws.xray.exception.remote"), Some(&Any::BoolValue(false)));

        // Only an exception id: the status message.
        let s = spans(
            json!({"id": "cbace9aaa8ee5a6a", "name": "p", "trace_id": TRACE, "start_time": 1.0, "end_time": 2.0, "cause": "a5cb2d33faf58551"}),
        );
        assert_eq!(s[0].status.as_ref().unwrap().message, "a5cb2d33faf58551");
        assert!(s[0].events.is_empty());
        // error / throttle without a cause.
        let s = spans(
            json!({"id": "cbace9aaa8ee5a6a", "name": "t", "trace_id": TRACE, "start_time": 1.0, "end_time": 2.0, "error": true, "throttle": true}),
        );
        assert_eq!(s[0].status.as_ref().unwrap().message, "throttle");
        assert_eq!(get(&s[0], "aws.xray.throttle"), Some(&Any::BoolValue(true)));
    }

    #[test]
    fn http_block_and_kind() {
        let s = spans(
            json!({"id": "b82ca54148444c63", "name": "api", "trace_id": TRACE, "type": "subsegment", "start_time": 1.0, "end_time": 2.0,
            "http": {"request": {"method": "GET", "url": "https://example.com/x?y=1", "user_agent": "curl", "client_ip": "10.0.0.1", "x_forwarded_for": true},
                     "response": {"status": 503, "content_length": 42}}}),
        );
        let span = &s[0];
        assert_eq!(span.kind, SpanKind::Server as i32, "a client ip without namespace is a server span");
        assert_eq!(text(span, "http.request.method"), "GET");
        assert_eq!(text(span, "url.full"), "https://example.com/x?y=1");
        assert_eq!(text(span, "user_agent.original"), "curl");
        assert_eq!(text(span, "client.address"), "10.0.0.1");
        assert_eq!(get(span, "aws.xray.x_forwarded_for"), Some(&Any::BoolValue(true)));
        assert_eq!(get(span, "http.response.status_code"), Some(&Any::IntValue(503)));
        assert_eq!(get(span, "http.response.body.size"), Some(&Any::IntValue(42)));
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Error as i32, "5xx is an error");
        let ok = spans(
            json!({"id": "b82ca54148444c63", "name": "r", "namespace": "remote", "trace_id": TRACE, "start_time": 1.0, "end_time": 2.0,
            "http": {"response": {"status": 200}}}),
        );
        assert_eq!(ok[0].kind, SpanKind::Client as i32);
        assert!(ok[0].status.is_none());
    }

    #[test]
    fn aws_and_sql_blocks() {
        let s = spans(
            json!({"id": "fd5c94c73cffd587", "name": "SQS", "namespace": "aws", "trace_id": TRACE, "type": "subsegment", "start_time": 1.0, "end_time": 2.0,
            "aws": {"operation": "SendMessage", "region": "us-east-1", "request_id": "r-1", "queue_url": "https://q", "account_id": "123456789012",
                    "table_name": "t", "retries": 2, "message_id": "m-1", "nested": {"x": 1}}}),
        );
        let span = &s[0];
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(text(span, "aws.service"), "SQS");
        assert_eq!(text(span, "rpc.system"), "aws-api");
        assert_eq!(text(span, "rpc.service"), "SQS");
        assert_eq!(text(span, "rpc.method"), "SendMessage");
        assert_eq!(text(span, "aws.operation"), "SendMessage");
        assert_eq!(text(span, "aws.region"), "us-east-1");
        assert_eq!(text(span, "aws.request_id"), "r-1");
        assert_eq!(text(span, "aws.queue_url"), "https://q");
        assert_eq!(text(span, "aws.account_id"), "123456789012");
        assert_eq!(text(span, "aws.table_name"), "t");
        assert_eq!(get(span, "aws.xray.retries"), Some(&Any::IntValue(2)));
        assert_eq!(text(span, "aws.message_id"), "m-1");
        assert_eq!(get(span, "aws.nested"), None, "objects are not flattened");

        let s = spans(
            json!({"id": "fd5c94c73cffd587", "name": "db", "namespace": "remote", "trace_id": TRACE, "start_time": 1.0, "end_time": 2.0,
            "sql": {"url": "postgresql://host:5432/orders?ssl=1", "database_type": "PostgreSQL", "sanitized_query": "SELECT 1", "user": "app"}}),
        );
        let span = &s[0];
        assert_eq!(text(span, "db.connection_string"), "postgresql://host:5432/orders?ssl=1");
        assert_eq!(text(span, "db.name"), "orders");
        assert_eq!(text(span, "db.system"), "PostgreSQL");
        assert_eq!(text(span, "db.statement"), "SELECT 1");
        assert_eq!(text(span, "db.user"), "app");
    }

    #[test]
    fn skips_in_progress_and_malformed() {
        let mut out = Vec::new();
        let doc = json!({"id": "ef79be37a93984b8", "name": "w", "trace_id": TRACE, "start_time": 1.0, "in_progress": true});
        assert_eq!(document_spans(doc.to_string().as_bytes(), &mut out), Err(Skip::InProgress));
        for bad in [
            b"not json".to_vec(),
            b"[1]".to_vec(),
            json!({"id": "short", "trace_id": TRACE}).to_string().into_bytes(),
            json!({"id": "ef79be37a93984b8", "trace_id": "1-x-y"}).to_string().into_bytes(),
            json!({"id": "ef79be37a93984b8", "trace_id": TRACE, "parent_id": 7}).to_string().into_bytes(),
            json!({"id": "ef79be37a93984b8", "trace_id": TRACE, "parent_id": "zz"}).to_string().into_bytes(),
            // A bad embedded child spoils the whole document: nothing half-exported.
            json!({"id": "ef79be37a93984b8", "trace_id": TRACE, "subsegments": [{"id": "bad"}]}).to_string().into_bytes(),
            json!({"id": "ef79be37a93984b8", "trace_id": TRACE, "subsegments": [3]}).to_string().into_bytes(),
        ] {
            assert_eq!(document_spans(&bad, &mut out), Err(Skip::Malformed), "{}", String::from_utf8_lossy(&bad));
        }
        assert!(out.is_empty());
    }
}
