//! End-to-end: the `sample-http` function (an axum router behind
//! `lambda_http`, traced with `lambda_xray_tracing::http::run`, calling a
//! downstream service through a traced `reqwest` client) on the local
//! platform with the extension, invoked with API Gateway REST and HTTP API,
//! Function URL and ALB events; and `sample-http-stream`'s streamed
//! responses through a Runtime API stand-in that keeps them byte for byte.

use std::time::Duration;

use lambda_xray_e2e::http::{Downstream, RuntimeApi, Source, refused_addr};
use lambda_xray_e2e::platform::{Options, Platform, Process, function_binary};
use lambda_xray_e2e::{Daemon, flatten, new_trace_header, parse_datagram, schema};
use serde_json::Value;

type R = Result<(), lambda_xray_e2e::Error>;
const T: Duration = Duration::from_secs(10);

async fn start(downstream: &str) -> Platform {
    Platform::start(Options {
        function: "sample-http",
        function_env: vec![
            ("POWERTOOLS_SERVICE_NAME", "http-e2e".to_owned()),
            ("DOWNSTREAM_URL", downstream.to_owned()),
            // REST API paths without the stage prefix, as the axum routes expect.
            ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true".to_owned()),
        ],
        ..Options::default()
    })
    .await
}

/// The trace's documents, each validated against the schema, once its
/// handler subsegment is complete.
async fn trace_documents(daemon: &Daemon, root: &str) -> Result<Vec<Value>, lambda_xray_e2e::Error> {
    daemon.wait_for(T, |docs| docs.iter().any(|d| d["trace_id"] == root && d["name"] == "## handler" && d["end_time"].is_number())).await?;
    let mut docs = Vec::new();
    for d in daemon.datagrams() {
        let doc = parse_datagram(&d)?;
        if doc["trace_id"] == root {
            schema::validate(&doc)?;
            docs.push(doc);
        }
    }
    Ok(docs)
}

fn named<'a>(entities: &'a [(String, Value)], name: &str) -> Vec<&'a (String, Value)> {
    entities.iter().filter(|(_, d)| d["name"] == name).collect()
}

/// The header value's `key=` field.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_source_records_the_http_block_and_the_downstream_call_names_its_subsegment() -> R {
    let downstream = Downstream::start().await?;
    let platform = start(&downstream.url()).await;
    for source in Source::ALL {
        let (header, root, parent) = new_trace_header(true);
        let order = format!("o-{source:?}");
        let (_, response) = platform.invoke_with_header(source.event(&format!("/orders/{order}"), "verbose=1"), &header).await;
        assert_eq!(response["statusCode"], 200, "{source:?}: {response:#}");
        let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or_default())?;
        assert_eq!(body["stock"], format!("{order}: 7 in stock"));

        let docs = trace_documents(&platform.daemon, &root).await?;
        let entities = flatten(&docs);
        let handlers = named(&entities, "## handler");
        assert_eq!(handlers.len(), 1, "{source:?}: {docs:#?}");
        let (handler_parent, handler) = handlers[0];
        assert_eq!(handler_parent, &parent);
        let request = &handler["http"]["request"];
        assert_eq!(request["method"], "GET", "{source:?}");
        assert_eq!(request["url"], source.url(&format!("/orders/{order}"), "verbose=1"), "{source:?}");
        assert_eq!(request["user_agent"], source.user_agent(), "{source:?}");
        let (ip, forwarded) = source.client_ip();
        assert_eq!(request["client_ip"], ip, "{source:?}");
        assert_eq!(request["x_forwarded_for"].as_bool().unwrap_or(false), forwarded, "{source:?}");
        assert_eq!(handler["http"]["response"]["status"], 200);
        assert_eq!(handler["http"]["response"]["content_length"], response["body"].as_str().map(str::len).unwrap_or(0), "{source:?}");
        assert_eq!(handler["annotations"]["order_id"], order.as_str());
        for flag in ["error", "throttle", "fault"] {
            assert!(handler.get(flag).is_none(), "{source:?}: {flag}");
        }
        // No body in the document.
        assert!(handler.get("metadata").is_none_or(|m| !m.to_string().contains("in stock")), "{handler:#}");

        // The downstream call: its own subsegment, named after the host, and
        // the request it made names that subsegment as its parent.
        let remotes = named(&entities, "127.0.0.1");
        assert_eq!(remotes.len(), 1, "{source:?}: {docs:#?}");
        let (remote_parent, remote) = remotes[0];
        assert_eq!(remote_parent, handler["id"].as_str().unwrap_or_default());
        assert_eq!(remote["namespace"], "remote");
        assert_eq!(remote["http"]["request"]["method"], "GET");
        assert_eq!(remote["http"]["request"]["url"], format!("{}/stock/{order}", downstream.url()));
        assert_eq!(remote["http"]["response"]["status"], 200);
        assert_eq!(remote["http"]["response"]["content_length"], format!("{order}: 7 in stock").len());
        assert!(remote["start_time"].as_f64() >= handler["start_time"].as_f64());
        assert!(remote["end_time"].as_f64() <= handler["end_time"].as_f64());
        let received: Vec<_> = downstream.received().into_iter().filter(|r| r.path.ends_with(&order)).collect();
        assert_eq!(received.len(), 1);
        let sent = received[0].trace_header.clone().unwrap_or_default();
        assert_eq!(field(&sent, "Root"), Some(root.as_str()), "{sent}");
        assert_eq!(field(&sent, "Parent"), remote["id"].as_str(), "{sent}");
        assert_eq!(field(&sent, "Sampled"), Some("1"), "{sent}");
        platform.daemon.clear();
    }
    platform.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_a_refused_connection_set_the_flags_on_both_sides() -> R {
    let downstream = Downstream::start().await?;
    let platform = start(&downstream.url()).await;
    // (path, status the function answers, handler flags, downstream status, remote flags)
    type Flags = [bool; 3];
    type Case<'a> = (&'a str, u16, Flags, Option<(u16, Flags)>);
    let none: Flags = [false, false, false];
    let cases: [Case; 7] = [
        ("/status/201", 201, none, None),
        ("/status/404", 404, [true, false, false], None),
        ("/status/429", 429, [true, true, false], None),
        ("/status/500", 500, [false, false, true], None),
        ("/orders/404", 404, [true, false, false], Some((404, [true, false, false]))),
        ("/orders/429", 429, [true, true, false], Some((429, [true, true, false]))),
        ("/orders/503", 502, [false, false, true], Some((503, [false, false, true]))),
    ];
    let flags = |d: &Value| [d["error"] == true, d["throttle"] == true, d["fault"] == true];
    for (i, (path, status, handler_flags, remote)) in cases.into_iter().enumerate() {
        let source = Source::ALL[i % Source::ALL.len()];
        let (header, root, _) = new_trace_header(true);
        let (_, response) = platform.invoke_with_header(source.event(path, ""), &header).await;
        assert_eq!(response["statusCode"], status, "{path} via {source:?}");
        let docs = trace_documents(&platform.daemon, &root).await?;
        let entities = flatten(&docs);
        let (_, handler) = named(&entities, "## handler")[0];
        assert_eq!(handler["http"]["response"]["status"], status, "{path}");
        assert_eq!(flags(handler), handler_flags, "{path}: {handler:#}");
        let remotes = named(&entities, "127.0.0.1");
        match remote {
            None => assert!(remotes.is_empty()),
            Some((remote_status, remote_flags)) => {
                assert_eq!(remotes.len(), 1, "{path}");
                assert_eq!(remotes[0].1["http"]["response"]["status"], remote_status, "{path}");
                assert_eq!(flags(&remotes[0].1), remote_flags, "{path}");
            }
        }
        platform.daemon.clear();
    }
    platform.shutdown().await;

    // Nothing listens downstream: the call is a fault with the connection error as its cause.
    let refused = refused_addr()?;
    let platform = start(&format!("http://{refused}")).await;
    let (header, root, _) = new_trace_header(true);
    let (_, response) = platform.invoke_with_header(Source::HttpApi.event("/orders/o-1", ""), &header).await;
    assert_eq!(response["statusCode"], 503);
    let docs = trace_documents(&platform.daemon, &root).await?;
    let entities = flatten(&docs);
    let remotes = named(&entities, "127.0.0.1");
    assert_eq!(remotes.len(), 1, "{docs:#?}");
    let remote = &remotes[0].1;
    assert_eq!(flags(remote), [false, false, true], "{remote:#}");
    assert!(remote["http"].get("response").is_none(), "{remote:#}");
    let exceptions = remote["cause"]["exceptions"].as_array().cloned().unwrap_or_default();
    assert!(!exceptions.is_empty(), "{remote:#}");
    // The short type name, as for every recorded error.
    assert_eq!(exceptions[0]["type"], "Error");
    let messages: Vec<String> = exceptions.iter().map(|e| e["message"].as_str().unwrap_or_default().to_lowercase()).collect();
    assert!(messages.iter().any(|m| m.contains("connect") || m.contains("refused")), "{messages:?}");
    let (_, handler) = named(&entities, "## handler")[0];
    assert_eq!(flags(handler), [false, false, true]);
    platform.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_invocations_record_nothing_and_still_propagate_sampled_0() -> R {
    let downstream = Downstream::start().await?;
    let platform = start(&downstream.url()).await;
    let (header, root, parent) = new_trace_header(false);
    let (_, response) = platform.invoke_with_header(Source::FunctionUrl.event("/orders/o-unsampled", ""), &header).await;
    assert_eq!(response["statusCode"], 200);
    // A sampled invocation after it: its documents arriving means the
    // unsampled one's would have arrived too.
    let (sampled_header, sampled_root, _) = new_trace_header(true);
    platform.invoke_with_header(Source::FunctionUrl.event("/status/200", ""), &sampled_header).await;
    trace_documents(&platform.daemon, &sampled_root).await?;
    let docs: Vec<Value> = platform.daemon.documents().into_iter().filter(|d| d["trace_id"] == root.as_str()).collect();
    assert!(docs.is_empty(), "{docs:#?}");
    let received: Vec<_> = downstream.received().into_iter().filter(|r| r.path.ends_with("o-unsampled")).collect();
    assert_eq!(received.len(), 1);
    let sent = received[0].trace_header.clone().unwrap_or_default();
    assert_eq!(field(&sent, "Root"), Some(root.as_str()), "{sent}");
    assert_eq!(field(&sent, "Sampled"), Some("0"), "{sent}");
    // Nothing recorded, so no new id: the parent is the one the function got.
    assert_eq!(field(&sent, "Parent"), Some(parent.as_str()), "{sent}");
    platform.shutdown().await;
    Ok(())
}

/// Runs `sample-http-stream` against a Runtime API stand-in and returns what
/// it posted for each invocation, with the daemon that got its documents.
async fn stream(tracing: bool, invocations: &[(Value, String)]) -> Result<(Vec<Vec<u8>>, Daemon), lambda_xray_e2e::Error> {
    let api = RuntimeApi::start().await?;
    let daemon = Daemon::start()?;
    let mut env = api.function_env();
    env.push(("AWS_XRAY_DAEMON_ADDRESS".into(), daemon.address()));
    env.push(("LAMBDA_XRAY_EXTENSION_MARKER".into(), "/nonexistent/lambda-xray-marker".into()));
    env.push(("AWS_XRAY_SDK_ENABLED".into(), tracing.to_string()));
    let mut function = Process::spawn(&function_binary("sample-http-stream"), env, "function");
    let mut posted = Vec::new();
    for (payload, header) in invocations {
        let p = api.invoke(payload.clone(), header, T).await?;
        assert_eq!(p.kind, "response", "{p:?}");
        let mode = p.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("lambda-runtime-function-response-mode")).map(|(_, v)| v.as_str());
        assert_eq!(mode, Some("streaming"), "{:?}", p.headers);
        posted.push(p.body.to_vec());
    }
    let _ = function.child.kill().await;
    Ok((posted, daemon))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_is_byte_identical_with_tracing_on_and_off_and_traced_to_its_end() -> R {
    let mut invocations = Vec::new();
    let mut roots = Vec::new();
    for (i, source) in [Source::FunctionUrl, Source::FunctionUrl, Source::HttpApi].into_iter().enumerate() {
        let (header, root, _) = new_trace_header(true);
        invocations.push((source.event(&format!("/stream/{}", 3 + i * 5), ""), header));
        roots.push(root);
    }
    let (traced, daemon) = stream(true, &invocations).await?;
    let (untraced, quiet) = stream(false, &invocations).await?;
    assert_eq!(traced, untraced, "the stream changed with tracing on");
    assert!(quiet.datagrams().is_empty());
    for (i, (body, root)) in traced.iter().zip(&roots).enumerate() {
        let n = 3 + i * 5;
        // The prelude, eight NULs, then the chunks.
        let split = body.windows(8).position(|w| w == [0u8; 8]).ok_or("no prelude separator")?;
        let prelude: Value = serde_json::from_slice(&body[..split])?;
        assert_eq!(prelude["statusCode"], 200);
        let streamed = &body[split + 8..];
        let expected: String = (0..n).map(|c| format!("chunk {c} of {n}\n")).collect();
        assert_eq!(streamed, expected.as_bytes());
        let docs = daemon
            .wait_for(T, |docs| {
                docs.iter().any(|d| d["trace_id"] == root.as_str() && d["name"] == "## handler" && d["end_time"].is_number())
            })
            .await?;
        let docs: Vec<Value> = docs.into_iter().filter(|d| d["trace_id"] == root.as_str()).collect();
        for d in &docs {
            schema::validate(d)?;
        }
        let entities = flatten(&docs);
        let handler = &named(&entities, "## handler")[0].1;
        assert_eq!(handler["http"]["response"]["status"], 200);
        assert_eq!(handler["http"]["response"]["content_length"], streamed.len(), "{handler:#}");
        assert!(handler.get("fault").is_none(), "{handler:#}");
        // Every chunk's subsegment nests in the handler's and ends before it.
        let chunks = named(&entities, "chunk");
        assert_eq!(chunks.len(), n, "{docs:#?}");
        for (parent, chunk) in chunks {
            assert_eq!(parent, handler["id"].as_str().unwrap_or_default());
            assert!(chunk["end_time"].as_f64() <= handler["end_time"].as_f64());
        }
        // The handler subsegment lasted as long as the stream: n chunks, 10 ms each.
        let lasted = handler["end_time"].as_f64().unwrap_or(0.0) - handler["start_time"].as_f64().unwrap_or(0.0);
        assert!(lasted >= n as f64 * 0.010, "{lasted} s for {n} chunks");
    }
    Ok(())
}
