//! The AWS SDK interceptor and the SQS helpers against a real SQS-compatible
//! server: moto's server on 127.0.0.1 (`scripts/setup-python.sh` installs it),
//! driven by the real `aws-sdk-sqs` client through a recording proxy, so the
//! `X-Amzn-Trace-Id` each request carried on the wire can be checked. Every
//! document is validated against `fixtures/xray-segment-schema.json`.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use lambda_xray_e2e::moto::{Moto, RecordingProxy, free_port};
use lambda_xray_e2e::schema;
use lambda_xray_tracing::{Config, Emitter, MemoryTransport, TraceContext, XRayInterceptor};
use serde_json::Value;

const ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";
const LAMBDA_SEGMENT: &str = "53995c3f42cd8ad8";

/// Keeps what the interceptor's invocation sends.
#[derive(Clone, Default)]
struct Capture(MemoryTransport);

impl Capture {
    /// Every document so far, each validated against the schema.
    fn docs(&self) -> Vec<Value> {
        let docs: Vec<Value> =
            self.0.datagrams().iter().map(|d| lambda_xray_e2e::parse_datagram(d).unwrap_or_else(|e| panic!("bad datagram: {e}"))).collect();
        for d in &docs {
            if let Err(e) = schema::validate(d) {
                panic!("{e}");
            }
            if std::env::var_os("SHOW_DOCS").is_some() {
                eprintln!("{d:#}");
            }
        }
        docs
    }
}

/// An SQS client through the interceptor, talking to `endpoint`.
fn client(endpoint: &str, max_attempts: u32) -> aws_sdk_sqs::Client {
    client_with(endpoint, max_attempts, Duration::from_secs(60), None)
}

fn client_with(endpoint: &str, max_attempts: u32, attempt_timeout: Duration, operation_timeout: Option<Duration>) -> aws_sdk_sqs::Client {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .http_client(http)
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::standard().with_max_attempts(max_attempts))
        .timeout_config({
            let mut t = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(attempt_timeout);
            t.set_operation_timeout(operation_timeout);
            t.build()
        })
        .interceptor(XRayInterceptor::new())
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// An invocation's context with a capturing emitter.
fn invocation(header: Option<&str>, cap: &Capture) -> TraceContext {
    TraceContext::for_invocation_with(header, None, &Config::default(), Arc::new(Emitter::new(cap.0.clone())))
}

fn sampled_header() -> String {
    format!("Root={ROOT};Parent={LAMBDA_SEGMENT};Sampled=1;Lineage=a87bd80c:1")
}

/// The `## handler` document and its embedded subsegments.
fn handler_doc(docs: &[Value]) -> (Value, Vec<Value>) {
    let d = docs.iter().find(|d| d["name"] == "## handler").cloned().unwrap_or_else(|| panic!("no handler document in {docs:#?}"));
    let subs = d["subsegments"].as_array().cloned().unwrap_or_default();
    (d, subs)
}

fn trace_header_of(req: &lambda_xray_e2e::moto::RecordedRequest) -> String {
    req.header("x-amzn-trace-id").unwrap_or_else(|| panic!("no X-Amzn-Trace-Id on {req:?}")).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_calls_are_subsegments_and_propagate_on_the_wire() {
    let moto = Moto::start().await.unwrap();
    let proxy = RecordingProxy::start(moto.addr()).await.unwrap();
    let sqs = client(&proxy.url(), 3);
    let cap = Capture::default();

    let header = sampled_header();
    let work = {
        let sqs = sqs.clone();
        async move {
            let url = sqs.create_queue().queue_name("orders").send().await.unwrap().queue_url.unwrap();
            sqs.send_message()
                .queue_url(&url)
                .message_body("hello")
                .message_attributes("kind", MessageAttributeValue::builder().data_type("String").string_value("greeting").build().unwrap())
                .send()
                .await
                .unwrap();
            let entries = (0..2).map(|i| SendMessageBatchRequestEntry::builder().id(format!("e{i}")).message_body("b").build().unwrap());
            sqs.send_message_batch().queue_url(&url).set_entries(Some(entries.collect())).send().await.unwrap();
            // Two concurrent calls: each is its own child of the handler subsegment.
            let (a, b) = tokio::join!(
                sqs.get_queue_attributes().queue_url(&url).attribute_names(QueueAttributeName::All).send(),
                sqs.get_queue_attributes().queue_url(&url).attribute_names(QueueAttributeName::QueueArn).send()
            );
            a.unwrap();
            b.unwrap();
            let received = sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .wait_time_seconds(0)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            let messages = received.messages.unwrap_or_default();
            assert!(!messages.is_empty());
            let handle = messages[0].receipt_handle.clone().unwrap();
            sqs.delete_message().queue_url(&url).receipt_handle(handle).send().await.unwrap();
            (url, messages.len())
        }
    };
    let (url, received) = invocation(Some(&header), &cap).wrap(lambda_xray_tracing::in_subsegment("## handler", work)).await;

    let docs = cap.docs();
    assert_eq!(docs.len(), 1, "{docs:#?}");
    let (handler, subs) = handler_doc(&docs);
    assert_eq!(handler["parent_id"], LAMBDA_SEGMENT);
    let ops: Vec<&str> = subs.iter().map(|s| s["aws"]["operation"].as_str().unwrap_or("")).collect();
    assert_eq!(
        ops,
        ["CreateQueue", "SendMessage", "SendMessageBatch", "GetQueueAttributes", "GetQueueAttributes", "ReceiveMessage", "DeleteMessage"],
        "{subs:#?}"
    );
    assert_eq!(subs.len(), 7, "{subs:#?}");
    let by_op = |op: &str| subs.iter().find(|s| s["aws"]["operation"] == op).cloned().unwrap_or_else(|| panic!("no {op} in {subs:#?}"));
    for s in &subs {
        assert_eq!(s["name"], "SQS");
        assert_eq!(s["namespace"], "aws");
        assert_eq!(s["aws"]["region"], "us-east-1");
        assert_eq!(s["aws"]["retries"], 0);
        assert!(s["aws"]["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{s:#}");
        assert_eq!(s["http"]["response"]["status"], 200);
        assert!(s["http"]["response"]["content_length"].as_u64().is_some(), "{s:#}");
        assert!(s.get("error").is_none() && s.get("fault").is_none(), "{s:#}");
        assert!(s["end_time"].as_f64().unwrap() >= s["start_time"].as_f64().unwrap());
    }
    let create = by_op("CreateQueue");
    assert_eq!(create["aws"]["queue_name"], "orders");
    assert_eq!(create["aws"]["queue_url"], url.as_str());
    let send = by_op("SendMessage");
    assert_eq!(send["aws"]["queue_url"], url.as_str());
    assert!(send["aws"]["message_id"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(send["aws"]["message_attribute_names"], serde_json::json!(["kind"]));
    let batch = by_op("SendMessageBatch");
    assert_eq!((batch["aws"]["message_count"].as_u64(), batch["aws"]["successful_count"].as_u64()), (Some(2), Some(2)));
    assert_eq!(batch["aws"]["failed_count"], 0);
    let recv = by_op("ReceiveMessage");
    assert_eq!(recv["aws"]["max_number_of_messages"], 10);
    assert_eq!(recv["aws"]["visibility_timeout"], 30);
    assert_eq!(recv["aws"]["wait_time_seconds"], 0);
    assert_eq!(recv["aws"]["message_attribute_names"], serde_json::json!(["All"]));
    assert_eq!(recv["aws"]["message_count"], received as u64);
    assert_eq!(by_op("DeleteMessage")["aws"]["queue_url"], url.as_str());

    // On the wire: each request names its own subsegment as Parent, with the inbound extra keys.
    let sent = proxy.requests_for("SendMessage");
    assert_eq!(sent.len(), 1);
    assert_eq!(trace_header_of(&sent[0]), format!("Root={ROOT};Parent={};Sampled=1;Lineage=a87bd80c:1", send["id"].as_str().unwrap()));
    let mut parents: Vec<String> = proxy
        .requests()
        .iter()
        .map(|r| {
            let h = trace_header_of(r);
            assert!(h.starts_with(&format!("Root={ROOT};Parent=")) && h.ends_with(";Sampled=1;Lineage=a87bd80c:1"), "{h}");
            h.split(';').nth(1).unwrap().trim_start_matches("Parent=").to_owned()
        })
        .collect();
    let mut ids: Vec<String> = subs.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    parents.sort();
    ids.sort();
    assert_eq!(parents, ids);

    // Unsampled: nothing recorded, Sampled=0 still propagated, Parent = the Lambda segment.
    proxy.clear();
    let unsampled = format!("Root={ROOT};Parent={LAMBDA_SEGMENT};Sampled=0;Lineage=a87bd80c:1");
    let sqs2 = sqs.clone();
    let url2 = url.clone();
    invocation(Some(&unsampled), &cap)
        .wrap(async move { sqs2.send_message().queue_url(&url2).message_body("x").send().await.unwrap() })
        .await;
    assert_eq!(cap.docs().len(), 1);
    assert_eq!(trace_header_of(&proxy.requests_for("SendMessage")[0]), unsampled);

    // Untraced (passthrough): the header is left alone.
    proxy.clear();
    let sqs3 = sqs.clone();
    let url3 = url.clone();
    invocation(Some(&format!("Root={ROOT}")), &cap)
        .wrap(async move { sqs3.send_message().queue_url(&url3).message_body("x").send().await.unwrap() })
        .await;
    assert_eq!(proxy.requests_for("SendMessage")[0].header("x-amzn-trace-id"), None);
    assert_eq!(cap.docs().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_errors_are_errors_and_connection_failures_are_faults() {
    let moto = Moto::start().await.unwrap();
    let cap = Capture::default();
    let sqs = client(&moto.url(), 3);
    let closed = client(&format!("http://127.0.0.1:{}", free_port().unwrap()), 2);
    let header = sampled_header();
    let (missing, refused) = invocation(Some(&header), &cap)
        .wrap(lambda_xray_tracing::in_subsegment("## handler", async move {
            let missing = sqs.get_queue_url().queue_name("no-such-queue").send().await;
            let refused = closed.send_message().queue_url("http://127.0.0.1:1/000000000000/q").message_body("x").send().await;
            (missing, refused)
        }))
        .await;
    // The caller sees the SDK's own outcome.
    let missing = missing.unwrap_err();
    assert!(format!("{missing:?}").contains("QueueDoesNotExist") || format!("{missing:?}").contains("NonExistentQueue"), "{missing:?}");
    assert!(matches!(refused.unwrap_err(), aws_sdk_sqs::error::SdkError::DispatchFailure(_)));

    let docs = cap.docs();
    let (handler, subs) = handler_doc(&docs);
    assert!(handler.get("fault").is_none() && handler.get("error").is_none(), "{handler:#}");
    assert_eq!(subs.len(), 2, "{subs:#?}");

    // 4xx: error, not fault; the service's error as a remote exception.
    let m = &subs[0];
    assert_eq!(m["aws"]["operation"], "GetQueueUrl");
    assert_eq!(m["aws"]["queue_name"], "no-such-queue");
    assert_eq!(m["error"], true);
    assert!(m.get("fault").is_none() && m.get("throttle").is_none(), "{m:#}");
    assert_eq!(m["http"]["response"]["status"], 400);
    let ex = &m["cause"]["exceptions"][0];
    assert_eq!(ex["remote"], true);
    assert!(ex["type"].as_str().is_some_and(|t| t.contains("QueueDoesNotExist") || t.contains("NonExistentQueue")), "{ex:#}");
    assert!(ex["message"].as_str().is_some_and(|t| !t.is_empty()));

    // Connection refused: fault with a cause, every attempt counted.
    let r = &subs[1];
    assert_eq!(r["aws"]["operation"], "SendMessage");
    assert_eq!(r["aws"]["queue_url"], "http://127.0.0.1:1/000000000000/q");
    assert_eq!(r["fault"], true, "{r:#}");
    assert_eq!(r["aws"]["retries"], 1, "{r:#}");
    assert!(r.get("http").is_none(), "{r:#}");
    let ex = &r["cause"]["exceptions"][0];
    assert_eq!(ex["type"], "DispatchFailure", "{r:#}");
    assert!(ex.get("remote").is_none());
    let chain: Vec<&str> = r["cause"]["exceptions"].as_array().unwrap().iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(chain.iter().any(|m| m.to_lowercase().contains("refused") || m.to_lowercase().contains("connect")), "{chain:?}");
}

fn record(id: &str, header: Option<&str>, body: &str) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.to_owned());
    m.body = Some(body.to_owned());
    m.event_source_arn = Some("arn:aws:sqs:us-east-1:000000000000:in".to_owned());
    if let Some(h) = header {
        m.attributes.insert("AWSTraceHeader".to_owned(), h.to_owned());
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_batches_follow_each_messages_sampling_decision() {
    let moto = Moto::start().await.unwrap();
    let proxy = RecordingProxy::start(moto.addr()).await.unwrap();
    let sqs = client(&proxy.url(), 3);
    let url = sqs.create_queue().queue_name("out").send().await.unwrap().queue_url.unwrap();
    proxy.clear();
    let cap = Capture::default();

    let producer = "1-6759e988-0123456789abcdef01234567";
    let mut event = SqsEvent::default();
    event.records = vec![
        record("m-sampled", Some(&format!("Root={producer};Parent=1111111111111111;Sampled=1")), "ok"),
        record("m-unsampled", Some(&format!("Root={producer};Parent=2222222222222222;Sampled=0")), "ok"),
        record("m-fails", Some(&format!("Root={producer};Parent=3333333333333333;Sampled=1")), "fail"),
        record("m-malformed", Some("Root=;Sampled=1"), "fail"),
    ];
    let header = sampled_header();
    let sqs2 = sqs.clone();
    let url2 = url.clone();
    let response = invocation(Some(&header), &cap)
        .wrap(lambda_xray_tracing::in_subsegment("## handler", async move {
            lambda_xray_tracing::sqs::process_batch(event, |msg: SqsMessage| {
                let (sqs, url) = (sqs2.clone(), url2.clone());
                async move {
                    let id = msg.message_id.unwrap_or_default();
                    sqs.send_message().queue_url(&url).message_body(&id).send().await.map_err(|e| e.to_string())?;
                    if msg.body.as_deref() == Some("fail") { Err(format!("cannot process {id}")) } else { Ok(()) }
                }
            })
            .await
        }))
        .await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["m-fails", "m-malformed"]);

    let docs = cap.docs();
    let (handler, subs) = handler_doc(&docs);
    let handler_id = handler["id"].as_str().unwrap().to_owned();
    // Only the sampled messages have a subsegment, each with its SendMessage inside.
    assert_eq!(subs.len(), 2, "{subs:#?}");
    let by_id: HashMap<String, Value> =
        subs.iter().map(|s| (s["annotations"]["message_id"].as_str().unwrap().to_owned(), s.clone())).collect();
    for (id, failed) in [("m-sampled", false), ("m-fails", true)] {
        let s = &by_id[id];
        assert_eq!(s["name"], "Processing Message");
        assert_eq!(s["annotations"]["producer_trace_id"], producer);
        let calls = s["subsegments"].as_array().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["aws"]["operation"], "SendMessage");
        assert_eq!(s.get("fault").is_some(), failed, "{s:#}");
        if failed {
            assert_eq!(s["cause"]["exceptions"][0]["message"], "cannot process m-fails");
        }
    }
    // On the wire: sampled messages' calls name their own subsegment; the
    // others carry Sampled=0 with the handler subsegment as Parent.
    let sends = proxy.requests_for("SendMessage");
    assert_eq!(sends.len(), 4);
    let headers: Vec<String> = sends.iter().map(trace_header_of).collect();
    let call_id = |id: &str| by_id[id]["subsegments"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(headers[0], format!("Root={ROOT};Parent={};Sampled=1;Lineage=a87bd80c:1", call_id("m-sampled")));
    assert_eq!(headers[1], format!("Root={ROOT};Parent={handler_id};Sampled=0;Lineage=a87bd80c:1"));
    assert_eq!(headers[2], format!("Root={ROOT};Parent={};Sampled=1;Lineage=a87bd80c:1", call_id("m-fails")));
    assert_eq!(headers[3], format!("Root={ROOT};Parent={handler_id};Sampled=0;Lineage=a87bd80c:1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_faults_with_a_cause() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let attempt = client_with(&endpoint, 1, Duration::from_millis(300), None);
    let operation = client_with(&endpoint, 1, Duration::from_secs(60), Some(Duration::from_millis(300)));
    let patient = client_with(&endpoint, 1, Duration::from_secs(60), None);
    let cap = Capture::default();
    let header = sampled_header();
    let (a, o, dropped) = invocation(Some(&header), &cap)
        .wrap(lambda_xray_tracing::in_subsegment("## handler", async move {
            let a = attempt.send_message().queue_url("http://q/000000000000/q").message_body("x").send().await;
            let o = operation.send_message().queue_url("http://q/000000000000/q").message_body("x").send().await;
            // The caller gives up: the SDK's future is dropped mid-call.
            let call = patient.send_message().queue_url("http://q/000000000000/q").message_body("x").send();
            let dropped = tokio::time::timeout(Duration::from_millis(300), call).await;
            (a, o, dropped)
        }))
        .await;
    hold.abort();
    assert!(matches!(a.unwrap_err(), aws_sdk_sqs::error::SdkError::TimeoutError(_)));
    assert!(matches!(o.unwrap_err(), aws_sdk_sqs::error::SdkError::TimeoutError(_)));
    assert!(dropped.is_err(), "the caller's timeout fired");
    let docs = cap.docs();
    let (_, subs) = handler_doc(&docs);
    assert_eq!(subs.len(), 3, "{subs:#?}");
    // Attempt and operation timeouts: the SDK completes the operation with a
    // timeout error (older releases, e.g. aws-sdk-sqs 1.93, dropped the
    // operation on an operation timeout instead: then it is the case below).
    for sub in &subs[..2] {
        assert_eq!(sub["fault"], true);
        let kind = &sub["cause"]["exceptions"][0]["type"];
        assert!(kind == "TimeoutError" || kind == "OperationCancelled", "{sub:#}");
    }
    assert_eq!(subs[0]["cause"]["exceptions"][0]["type"], "TimeoutError", "{:#}", subs[0]);
    // A dropped call: the subsegment still ends, as a fault.
    assert_eq!(subs[2]["fault"], true);
    assert_eq!(subs[2]["cause"]["exceptions"][0]["type"], "OperationCancelled", "{:#}", subs[2]);
    assert_eq!(subs[2]["aws"]["operation"], "SendMessage");
}

/// The two sample functions, run by the local Lambda platform against moto:
/// the sender's traced `SendMessage` calls become the `AWSTraceHeader` of the
/// messages the consumer gets (set here from what the proxy saw on the wire,
/// as real SQS does), and the consumer follows each message's decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_sender_and_consumer_end_to_end() {
    use lambda_xray_e2e::platform::{Options, Platform};
    use lambda_xray_e2e::{Outcome, flatten, new_trace_header};
    let start = |function: &'static str, function_env: Vec<(&'static str, String)>| {
        Platform::start(Options { extension: false, freeze: false, function, function_env, ..Options::default() })
    };
    let moto = Moto::start().await.unwrap();
    let proxy = RecordingProxy::start(moto.addr()).await.unwrap();
    let sqs = client(&moto.url(), 3);
    let in_url = sqs.create_queue().queue_name("in").send().await.unwrap().queue_url.unwrap();
    let out_url = sqs.create_queue().queue_name("out").send().await.unwrap().queue_url.unwrap();
    let env = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("AWS_ENDPOINT_URL_SQS", proxy.url()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_CONFIG_FILE", "/nonexistent/aws-config".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials".to_owned()),
        ];
        env.extend(extra.iter().cloned());
        env
    };
    let t = Duration::from_secs(60);

    // The sender: one sampled invocation sending two messages, one unsampled sending one.
    let sender = start("sample-sqs-sender", env(&[("QUEUE_URL", in_url.clone())])).await;
    let daemon = &sender.daemon;
    let (sampled, sender_root, _) = new_trace_header(true);
    let (unsampled, _, _) = new_trace_header(false);
    let Outcome::Response(r1) = sender.invoke_outcome(serde_json::json!({"messages": ["hello", "fail now"]}), Some(&sampled), t).await
    else {
        panic!("sender failed")
    };
    let Outcome::Response(r2) = sender.invoke_outcome(serde_json::json!({"messages": ["quiet"]}), Some(&unsampled), t).await else {
        panic!("sender failed")
    };
    let sent: Vec<String> =
        r1["sent"].as_array().unwrap().iter().chain(r2["sent"].as_array().unwrap()).map(|v| v.as_str().unwrap().to_owned()).collect();
    assert_eq!(sent.len(), 3);
    let wire: Vec<String> = proxy.requests_for("SendMessage").iter().map(trace_header_of).collect();
    assert_eq!(wire.len(), 3);
    let docs = daemon.wait_for(t, |d| d.iter().any(|d| d["name"] == "## bootstrap" || d["name"] == "## handler")).await.unwrap();
    for d in &docs {
        schema::validate(d).unwrap();
    }
    let entities = flatten(&docs);
    let sends: Vec<&Value> = entities.iter().map(|(_, e)| e).filter(|e| e["aws"]["operation"] == "SendMessage").collect();
    assert_eq!(sends.len(), 2, "{docs:#?}");
    for (i, s) in sends.iter().enumerate() {
        assert_eq!(wire[i], format!("Root={sender_root};Parent={};Sampled=1", s["id"].as_str().unwrap()));
        assert_eq!(s["aws"]["message_id"], sent[i].as_str());
    }
    assert!(wire[2].ends_with(";Sampled=0"), "{}", wire[2]);
    daemon.clear();
    proxy.clear();

    // What SQS would deliver: each message with its sender's header as AWSTraceHeader.
    let mut received = Vec::new();
    for _ in 0..20 {
        let out = sqs.receive_message().queue_url(&in_url).max_number_of_messages(10).send().await.unwrap();
        received.extend(out.messages.unwrap_or_default());
        if received.len() >= 3 {
            break;
        }
    }
    let mut event = SqsEvent::default();
    for m in &received {
        let id = m.message_id.clone().unwrap();
        let i = sent.iter().position(|s| *s == id).unwrap();
        let mut r = record(&id, Some(&wire[i]), m.body.as_deref().unwrap());
        r.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:in".to_owned());
        event.records.push(r);
    }
    event.records.sort_by_key(|r| sent.iter().position(|s| Some(s) == r.message_id.as_ref()));

    let consumer = start("sample-sqs-consumer", env(&[("FORWARD_QUEUE_URL", out_url.clone())])).await;
    let daemon = &consumer.daemon;
    let (header, root, _) = new_trace_header(true);
    let Outcome::Response(resp) = consumer.invoke_outcome(serde_json::to_value(&event).unwrap(), Some(&header), t).await else {
        panic!("consumer failed")
    };
    assert_eq!(resp["batchItemFailures"], serde_json::json!([{"itemIdentifier": sent[1]}]));
    let docs = daemon.wait_for(t, |d| d.iter().any(|d| d["trace_id"] == root.as_str())).await.unwrap();
    for d in &docs {
        schema::validate(d).unwrap();
    }
    let entities = flatten(&docs);
    let messages: Vec<&Value> = entities.iter().map(|(_, e)| e).filter(|e| e["name"] == "Processing Message").collect();
    // The unsampled producer's message records nothing.
    assert_eq!(messages.len(), 2, "{docs:#?}");
    for (m, id) in messages.iter().zip(&sent) {
        assert_eq!(m["annotations"]["message_id"], id.as_str());
        assert_eq!(m["annotations"]["producer_trace_id"], sender_root.as_str());
    }
    let ok = messages.iter().find(|m| m["annotations"]["message_id"] == sent[0].as_str()).unwrap();
    let failed = messages.iter().find(|m| m["annotations"]["message_id"] == sent[1].as_str()).unwrap();
    assert!(ok.get("fault").is_none());
    assert_eq!(failed["fault"], true);
    let forward = ok["subsegments"].as_array().unwrap().iter().find(|s| s["aws"]["operation"] == "SendMessage").unwrap();
    assert_eq!(forward["aws"]["queue_url"], out_url.as_str());
    // On the wire: the sampled message's forward names its subsegment; the unsampled one says Sampled=0.
    let wire: Vec<String> = proxy.requests_for("SendMessage").iter().map(trace_header_of).collect();
    assert_eq!(wire.len(), 2);
    assert_eq!(wire[0], format!("Root={root};Parent={};Sampled=1", forward["id"].as_str().unwrap()));
    assert!(wire[1].starts_with(&format!("Root={root};Parent=")) && wire[1].ends_with(";Sampled=0"), "{}", wire[1]);
}

/// A loopback HTTP server answering every request with `status` and a JSON `body`.
async fn canned_server(status: u16, body: &'static str) -> io::Result<(String, tokio::task::JoinHandle<()>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // One request: head, then Content-Length bytes of body.
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize =
                        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: req-{status}\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((url, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_with_retries() {
    let (throttling, t1) =
        canned_server(400, r#"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}"#).await.unwrap();
    let (too_many, t2) = canned_server(429, r#"{"__type":"com.amazonaws.sqs#TooManyRequests","message":"slow down"}"#).await.unwrap();
    let (internal, t3) = canned_server(500, r#"{"__type":"com.amazonaws.sqs#InternalError","message":"oops"}"#).await.unwrap();
    let cap = Capture::default();
    let header = sampled_header();
    let clients = [client(&throttling, 2), client(&too_many, 1), client(&internal, 2)];
    let results = invocation(Some(&header), &cap)
        .wrap(lambda_xray_tracing::in_subsegment("## handler", async move {
            let mut out = Vec::new();
            for c in &clients {
                out.push(c.send_message().queue_url("http://q/000000000000/q").message_body("x").send().await.is_err());
            }
            out
        }))
        .await;
    for t in [t1, t2, t3] {
        t.abort();
    }
    assert_eq!(results, [true, true, true]);
    let docs = cap.docs();
    let (_, subs) = handler_doc(&docs);
    assert_eq!(subs.len(), 3, "{subs:#?}");
    let flags = |s: &Value| (s.get("error").is_some(), s.get("throttle").is_some(), s.get("fault").is_some());
    // A throttling error code on a 400: throttle + error, retried.
    assert_eq!(flags(&subs[0]), (true, true, false), "{:#}", subs[0]);
    assert_eq!(subs[0]["aws"]["retries"], 1);
    assert_eq!(subs[0]["aws"]["request_id"], "req-400");
    assert_eq!(subs[0]["cause"]["exceptions"][0]["type"], "ThrottlingException");
    assert_eq!(subs[0]["cause"]["exceptions"][0]["remote"], true);
    // 429: throttle + error.
    assert_eq!(flags(&subs[1]), (true, true, false), "{:#}", subs[1]);
    assert_eq!(subs[1]["http"]["response"]["status"], 429);
    // 5xx: fault, retried, the service's error as a remote exception.
    assert_eq!(flags(&subs[2]), (false, false, true), "{:#}", subs[2]);
    assert_eq!(subs[2]["aws"]["retries"], 1);
    assert_eq!(subs[2]["cause"]["exceptions"][0]["type"], "InternalError");
    assert_eq!(subs[2]["cause"]["exceptions"][0]["message"], "oops");
}
