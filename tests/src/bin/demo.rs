//! The demo: the sample function and the lambda-xray extension run on a local
//! Lambda platform (Runtime, Extensions and Telemetry APIs, freeze between
//! invocations), with a UDP listener on 127.0.0.1 as the X-Ray daemon. It
//! invokes the function a few ways, shuts the sandbox down, and prints each
//! trace that reached the "daemon" as a waterfall (and writes them all to an
//! HTML page).
//!
//! Run it with `./scripts/demo.sh` (builds everything first). No AWS account or
//! network needed. `--no-extension` sends straight to the daemon instead.
//!
//! When moto's server is installed (`scripts/setup-python.sh`), it then runs
//! the two SQS samples against it: `sample-sqs-sender` sends through the
//! traced SDK client, and `sample-sqs-consumer` processes what was sent, each
//! message under its producer's sampling decision.

use std::time::Duration;

use lambda_xray_e2e::platform::{Options, Platform};
use lambda_xray_e2e::{Error, Outcome, by_trace, new_trace_header, parse_datagram, schema, waterfall};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let with_extension = !std::env::args().any(|a| a == "--no-extension");
    let platform = Platform::start(Options {
        extension: with_extension,
        freeze: with_extension,
        function: "sample-basic",
        function_env: vec![("POWERTOOLS_SERVICE_NAME", "demo".to_owned())],
        ..Options::default()
    })
    .await;
    println!(
        "Local Lambda platform up: sample-basic{}; X-Ray daemon stand-in on udp://{}\n",
        if with_extension { " with the lambda-xray extension (freeze between invocations)" } else { ", no extension" },
        platform.daemon.address()
    );

    let cases: Vec<(&str, Value, bool)> = vec![
        ("sampled, cold start", json!({"name": "Ada"}), true),
        ("sampled, warm", json!({"name": "Grace"}), true),
        ("unsampled (Sampled=0)", json!({"name": "Linus"}), false),
        ("handler error", json!({"name": "Edsger", "fail": true}), true),
        ("200 KB of metadata (split into datagrams under 64 KiB)", json!({"metadata_kb": 200}), true),
    ];
    let mut runs = Vec::new();
    for (title, payload, sampled) in cases {
        let (header, root, _) = new_trace_header(sampled);
        let outcome = platform.invoke_outcome(payload.clone(), Some(&header), Duration::from_secs(10)).await;
        runs.push((title, payload, header, root, outcome));
    }
    // SHUTDOWN: the extension flushes what it still holds (the last report) and exits.
    let (counters, daemon) = platform.shutdown_keep_daemon().await;
    let datagrams = daemon.datagrams();
    let docs = daemon.try_documents()?;
    let traces = by_trace(&docs);

    let mut problems = 0;
    for d in &docs {
        if let Err(e) = schema::validate(d) {
            problems += 1;
            println!("SCHEMA PROBLEM: {e}");
        }
    }
    let mut waterfalls = Vec::new();
    for (title, payload, header, root, outcome) in &runs {
        println!("━━ {title}\n   payload {payload}\n   header  {header}");
        match outcome {
            Outcome::Response(v) => println!("   result  {v}"),
            Outcome::Error { error_type, error_message } => println!("   error   {error_type}: {error_message}"),
        }
        let Some(trace) = traces.get(root.as_str()) else {
            println!("   (nothing recorded: the trace was not sampled)\n");
            continue;
        };
        let sizes: Vec<usize> =
            datagrams.iter().filter(|d| parse_datagram(d).is_ok_and(|doc| doc["trace_id"] == root.as_str())).map(Vec::len).collect();
        println!("   {} document(s), largest datagram {} bytes", sizes.len(), sizes.iter().max().copied().unwrap_or(0));
        let w = waterfall::layout(trace);
        for line in waterfall::terminal(&w).lines() {
            println!("   {line}");
        }
        println!();
        waterfalls.push(w);
    }
    println!("{} datagrams in all, every one schema-valid: {}", datagrams.len(), problems == 0);
    if let Some(c) = counters {
        println!("extension counters at shutdown: {c}");
    }
    println!();
    problems += http_demo().await?;
    if lambda_xray_e2e::moto::moto_server_path().exists() {
        problems += sqs_demo().await?;
    } else {
        println!("━━ SQS samples skipped: moto is not installed (run scripts/setup-python.sh)");
    }
    let page = std::env::temp_dir().join("lambda-xray-demo.html");
    std::fs::write(&page, waterfall::html("lambda-xray demo run", &waterfalls))?;
    println!("The same traces as a web page: {}", page.display());
    if problems > 0 {
        return Err(format!("{problems} schema problems").into());
    }
    Ok(())
}

/// Prints the trace received since the last clear; returns the number of schema problems.
async fn show_trace(daemon: &lambda_xray_e2e::Daemon) -> Result<usize, Error> {
    let docs = daemon.settle(Duration::from_millis(200)).await?;
    let mut problems = 0;
    for d in &docs {
        if let Err(e) = schema::validate(d) {
            problems += 1;
            println!("   SCHEMA PROBLEM: {e}");
        }
    }
    if docs.is_empty() {
        println!("   (nothing recorded: the trace was not sampled)");
    } else {
        println!("   {} document(s), schema-valid: {}", docs.len(), problems == 0);
        for line in waterfall::terminal(&waterfall::layout(&docs)).lines() {
            println!("   {line}");
        }
    }
    println!();
    Ok(problems)
}

/// `sample-http` (axum behind `lambda_http`) with the extension, called
/// through API Gateway and ALB events, calling a local downstream service;
/// returns the number of schema problems.
async fn http_demo() -> Result<usize, Error> {
    use lambda_xray_e2e::http::{Downstream, Source};
    let downstream = Downstream::start().await?;
    let platform = Platform::start(Options {
        function: "sample-http",
        function_env: vec![
            ("POWERTOOLS_SERVICE_NAME", "demo-http".to_owned()),
            ("DOWNSTREAM_URL", downstream.url()),
            ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    println!("━━ HTTP: sample-http (axum behind lambda_http) with the extension; downstream service stand-in on {}\n", downstream.url());
    let mut problems = 0;
    for (title, source, path) in [
        ("HTTP API: GET /orders/o-42 (the function calls the downstream service)", Source::HttpApi, "/orders/o-42"),
        ("REST API: GET /orders/429 (the downstream throttles)", Source::RestApi, "/orders/429"),
        ("ALB: GET /status/503", Source::Alb, "/status/503"),
    ] {
        let (header, root, _) = new_trace_header(true);
        let outcome = platform.invoke_outcome(source.event(path, ""), Some(&header), Duration::from_secs(10)).await;
        let status = match &outcome {
            Outcome::Response(v) => v["statusCode"].to_string(),
            Outcome::Error { error_type, .. } => error_type.clone(),
        };
        println!("━━ {title}\n   answered {status}");
        for received in downstream.received() {
            println!("   downstream got {} with X-Amzn-Trace-Id: {}", received.path, received.trace_header.unwrap_or_default());
        }
        downstream.clear();
        let docs = platform
            .daemon
            .wait_for(Duration::from_secs(10), |docs| docs.iter().any(|d| d["trace_id"] == root.as_str() && d["name"] == "## handler"))
            .await?;
        let trace: Vec<Value> = docs.into_iter().filter(|d| d["trace_id"] == root.as_str()).collect();
        let invalid = trace.iter().filter(|d| schema::validate(d).is_err()).count();
        println!("   {} document(s), schema-valid: {}", trace.len(), invalid == 0);
        for line in waterfall::terminal(&waterfall::layout(&trace)).lines() {
            println!("   {line}");
        }
        if let Some(http) = trace.iter().find(|d| d["name"] == "## handler").map(|d| &d["http"]) {
            println!("   ## handler http: {http}");
        }
        println!();
        problems += invalid;
    }
    platform.shutdown().await;
    Ok(problems)
}

/// The SQS samples against moto, through a recording proxy that shows each request's trace header.
/// A platform running `function` (no extension: this part shows the SDK and SQS subsegments).
async fn sqs_function(function: &'static str, function_env: Vec<(&'static str, String)>) -> Platform {
    Platform::start(Options { extension: false, freeze: false, function, function_env, ..Options::default() }).await
}

async fn sqs_demo() -> Result<usize, Error> {
    use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
    use lambda_xray_e2e::moto::{Moto, RecordingProxy};

    let moto = Moto::start().await?;
    let proxy = RecordingProxy::start(moto.addr()).await?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "demo"))
            .endpoint_url(moto.url())
            .http_client(http)
            .build(),
    );
    let in_url = sqs.create_queue().queue_name("demo-orders").send().await?.queue_url.unwrap_or_default();
    let out_url = sqs.create_queue().queue_name("demo-processed").send().await?.queue_url.unwrap_or_default();
    println!("moto's server on {} standing in for SQS; queues {in_url} and {out_url}\n", moto.url());
    let env = |extra: (&'static str, String)| {
        vec![
            ("AWS_ENDPOINT_URL_SQS", proxy.url()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            extra,
        ]
    };
    let t = Duration::from_secs(30);
    let mut problems = 0;

    let sender = sqs_function("sample-sqs-sender", env(("QUEUE_URL", in_url.clone()))).await;
    let daemon = &sender.daemon;
    let mut sent: Vec<(String, String)> = Vec::new();
    for (title, payload, sampled) in [
        ("sqs-sender, sampled: two SendMessage calls", json!({"messages": ["order 1", "fail: order 2"]}), true),
        ("sqs-sender, unsampled", json!({"messages": ["order 3"]}), false),
    ] {
        daemon.clear();
        proxy.clear();
        let (header, _, _) = new_trace_header(sampled);
        let outcome = sender.invoke_outcome(payload.clone(), Some(&header), t).await;
        println!("━━ {title}\n   payload {payload}\n   header  {header}");
        let ids: Vec<String> = match &outcome {
            Outcome::Response(v) => {
                println!("   result  {v}");
                v["sent"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
            }
            Outcome::Error { error_type, error_message } => {
                println!("   error   {error_type}: {error_message}");
                Vec::new()
            }
        };
        let wire: Vec<String> =
            proxy.requests_for("SendMessage").iter().map(|r| r.header("x-amzn-trace-id").unwrap_or("(none)").to_owned()).collect();
        for w in &wire {
            println!("   on the wire: X-Amzn-Trace-Id: {w}");
        }
        sent.extend(ids.into_iter().zip(wire));
        problems += show_trace(daemon).await?;
    }

    // What SQS delivers: each message with its sender's header as AWSTraceHeader.
    let mut event = SqsEvent::default();
    for _ in 0..10 {
        let out = sqs.receive_message().queue_url(&in_url).max_number_of_messages(10).send().await?;
        for m in out.messages.unwrap_or_default() {
            let mut r = SqsMessage::default();
            r.attributes.extend(
                sent.iter().find(|(id, _)| Some(id) == m.message_id.as_ref()).map(|(_, h)| ("AWSTraceHeader".to_owned(), h.clone())),
            );
            r.message_id = m.message_id;
            r.body = m.body;
            r.receipt_handle = m.receipt_handle;
            r.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:demo-orders".to_owned());
            event.records.push(r);
        }
        if event.records.len() >= sent.len() {
            break;
        }
    }
    event.records.sort_by_key(|r| sent.iter().position(|(id, _)| Some(id) == r.message_id.as_ref()));
    let consumer = sqs_function("sample-sqs-consumer", env(("FORWARD_QUEUE_URL", out_url.clone()))).await;
    let daemon = &consumer.daemon;
    proxy.clear();
    let (header, _, _) = new_trace_header(true);
    println!("━━ sqs-consumer, sampled invocation, {} messages (two sampled by their producer, one not)", event.records.len());
    for r in &event.records {
        println!(
            "   message {} {:?} AWSTraceHeader {}",
            r.message_id.as_deref().unwrap_or(""),
            r.body.as_deref().unwrap_or(""),
            r.attributes.get("AWSTraceHeader").map(String::as_str).unwrap_or("(none)")
        );
    }
    match consumer.invoke_outcome(serde_json::to_value(&event)?, Some(&header), t).await {
        Outcome::Response(v) => println!("   result  {v}"),
        Outcome::Error { error_type, error_message } => println!("   error   {error_type}: {error_message}"),
    }
    for r in proxy.requests_for("SendMessage") {
        println!("   forwarded, on the wire: X-Amzn-Trace-Id: {}", r.header("x-amzn-trace-id").unwrap_or("(none)"));
    }
    problems += show_trace(daemon).await?;
    Ok(problems)
}
