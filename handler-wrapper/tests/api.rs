//! The public API through the handler layer, with a capturing transport.

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{Context, LambdaEvent, service_fn};
use lambda_xray_tracing::{Config, Emitter, MemoryTransport, TraceError, XRayLayer};
use serde_json::{Value, json};
use tower::{Layer, Service};

mod common;
use common::catch_unwind;

fn layer(cap: &MemoryTransport) -> XRayLayer {
    XRayLayer::new().handler_name("test").service("svc").with_emitter(Config::default(), Arc::new(Emitter::new(cap.clone())))
}

fn event(payload: Value, header: Option<&str>) -> LambdaEvent<Value> {
    let mut ctx = Context::default();
    ctx.xray_trace_id = header.map(str::to_owned);
    LambdaEvent::new(payload, ctx)
}

const ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_invocations_of_one_trace_do_not_share_state() {
    let cap = MemoryTransport::default();
    let svc = layer(&cap).layer(service_fn(|e: LambdaEvent<Value>| async move {
        let who = e.payload["who"].as_str().unwrap_or("").to_owned();
        lambda_xray_tracing::in_subsegment(who.clone(), async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            lambda_xray_tracing::put_annotation("who", who.as_str())?;
            // A spawned task and a thread both keep the context.
            let spawned = lambda_xray_tracing::spawn(lambda_xray_tracing::in_subsegment("task", async { tokio::task::yield_now().await }));
            spawned.await.map_err(|e| e.to_string())?;
            let ctx = lambda_xray_tracing::current();
            std::thread::spawn(move || {
                let _entered = ctx.enter();
                lambda_xray_tracing::trace("thread", || ());
            })
            .join()
            .map_err(|_| "thread panicked")?;
            Ok::<_, lambda_runtime::Error>(json!(who))
        })
        .await
    }));
    let (a, b) = (format!("Root={ROOT};Parent=00000000000000aa;Sampled=1"), format!("Root={ROOT};Parent=00000000000000bb;Sampled=1"));
    let (ra, rb) =
        tokio::join!(svc.clone().call(event(json!({"who": "a"}), Some(&a))), svc.clone().call(event(json!({"who": "b"}), Some(&b))));
    assert_eq!(ra.ok(), Some(json!("a")));
    assert_eq!(rb.ok(), Some(json!("b")));
    let docs = cap.documents();
    assert_eq!(docs.len(), 2);
    for (parent, who) in [("00000000000000aa", "a"), ("00000000000000bb", "b")] {
        let d = docs.iter().find(|d| d["parent_id"] == parent).cloned().unwrap_or_default();
        assert_eq!(d["name"], "## test");
        assert_eq!(d["trace_id"], ROOT);
        let subs = d["subsegments"].as_array().cloned().unwrap_or_default();
        assert_eq!(subs.len(), 1, "{d:#}");
        assert_eq!(subs[0]["name"], who);
        assert_eq!(subs[0]["annotations"]["who"], who);
        let mut inner: Vec<String> =
            subs[0]["subsegments"].as_array().into_iter().flatten().map(|s| s["name"].as_str().unwrap_or("").to_owned()).collect();
        inner.sort();
        assert_eq!(inner, vec!["task", "thread"]);
    }
}

#[tokio::test]
async fn results_pass_through_unchanged_and_unsampled_records_nothing() {
    let cap = MemoryTransport::default();
    let mut svc = layer(&cap).layer(service_fn(|_e: LambdaEvent<Value>| async move {
        let sub = lambda_xray_tracing::begin_subsegment("work");
        sub.put_annotation("bad key!", 1).map_err(|e| e.to_string())?;
        Ok::<Value, lambda_runtime::Error>(json!(null))
    }));
    let unsampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=0;Lineage=a87bd80c:1");
    // A bad key is reported to the caller as an error, sampled or not.
    let err = svc.call(event(json!({}), Some(&unsampled))).await.err().map(|e| e.to_string());
    assert_eq!(err, Some(TraceError::InvalidAnnotationKey("bad key!".into()).to_string()));

    let mut svc = layer(&cap).layer(service_fn(|_e: LambdaEvent<Value>| async move {
        let header = lambda_xray_tracing::current_trace_header().map(|h| h.to_string());
        Ok::<_, lambda_runtime::Error>(json!({"header": header, "sampled": lambda_xray_tracing::is_sampled()}))
    }));
    let out = svc.call(event(json!({}), Some(&unsampled))).await.ok();
    // Sampled=0 is still there to propagate, with the extra keys.
    assert_eq!(out, Some(json!({"header": format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=0;Lineage=a87bd80c:1"), "sampled": false})));
    assert!(cap.documents().is_empty());

    let mut failing =
        layer(&cap).layer(service_fn(|_e: LambdaEvent<Value>| async move { Err::<Value, _>(lambda_runtime::Error::from("boom")) }));
    let sampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    let err = failing.call(event(json!({}), Some(&sampled))).await.err().map(|e| e.to_string());
    assert_eq!(err.as_deref(), Some("boom"));
    let docs = cap.documents();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["fault"], true);
    assert_eq!(docs[0]["cause"]["exceptions"][0]["message"], "boom");
    assert_eq!(docs[0]["metadata"]["svc"]["test error"], "boom");
}

#[tokio::test]
async fn a_panic_propagates_with_its_payload_and_is_recorded() {
    let cap = MemoryTransport::default();
    let mut svc = layer(&cap).layer(service_fn(|_e: LambdaEvent<Value>| async move {
        if lambda_xray_tracing::is_sampled() {
            panic!("handler exploded");
        }
        Ok::<Value, lambda_runtime::Error>(json!(null))
    }));
    let sampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    let payload = catch_unwind(svc.call(event(json!({}), Some(&sampled)))).await.err();
    let msg = payload.as_ref().and_then(|p| p.downcast_ref::<&str>()).copied();
    assert_eq!(msg, Some("handler exploded"));
    let docs = cap.documents();
    assert_eq!(docs[0]["fault"], true);
    assert_eq!(docs[0]["cause"]["exceptions"][0]["message"], "handler exploded");
}

#[test]
fn outside_an_invocation_calls_do_nothing_and_say_so() {
    // Default strategy (LOG_ERROR): no panic, nothing recorded.
    let sub = lambda_xray_tracing::begin_subsegment("orphan");
    assert!(!sub.is_sampled());
    assert_eq!(lambda_xray_tracing::put_annotation("k", 1), Err(TraceError::ContextMissing));
    assert!(lambda_xray_tracing::try_begin_subsegment("x").is_err());
    assert!(lambda_xray_tracing::current_trace_header().is_none());
}

#[tokio::test]
async fn the_lambda_segment_itself_is_read_only() {
    let cap = MemoryTransport::default();
    let ctx = lambda_xray_tracing::TraceContext::for_invocation_with(
        Some(&format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1")),
        None,
        &Config::default(),
        Arc::new(Emitter::new(cap.clone())),
    );
    let _entered = ctx.enter();
    assert_eq!(lambda_xray_tracing::put_annotation("k", 1), Err(TraceError::LambdaSegmentIsReadOnly));
    let sub = lambda_xray_tracing::begin_subsegment("ok");
    assert_eq!(lambda_xray_tracing::put_annotation("k", 1), Ok(()));
    assert!(matches!(lambda_xray_tracing::put_metadata_in("AWS.X", "k", &1), Err(TraceError::ReservedMetadataNamespace(_))));
    drop(sub);
    assert_eq!(cap.documents()[0]["annotations"]["k"], 1);
}

#[tokio::test]
async fn with_real_noop_ids_off_unsampled_subsegments_propagate_their_own_id() {
    let mut config = Config::default();
    config.noop_ids = false;
    let ctx = lambda_xray_tracing::TraceContext::for_invocation_with(
        Some(&format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=0")),
        None,
        &config,
        Arc::new(Emitter::new(MemoryTransport::default())),
    );
    let _entered = ctx.enter();
    let outer = lambda_xray_tracing::current_trace_header().map(|h| h.to_string());
    assert_eq!(outer, Some(format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=0")));
    let sub = lambda_xray_tracing::begin_subsegment("unsampled work");
    let id = sub.id().map(|i| i.to_string()).unwrap_or_default();
    assert_ne!(id, "0000000000000000");
    assert_eq!(lambda_xray_tracing::current_trace_header().map(|h| h.to_string()), Some(format!("Root={ROOT};Parent={id};Sampled=0")));
    drop(sub);
    assert_eq!(lambda_xray_tracing::current_trace_header().map(|h| h.to_string()), outer);

    // With no-op ids (the default) the subsegment has no id of its own.
    let ctx = lambda_xray_tracing::TraceContext::for_invocation_with(
        Some(&format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=0")),
        None,
        &Config::default(),
        Arc::new(Emitter::new(MemoryTransport::default())),
    );
    let _entered = ctx.enter();
    assert_eq!(lambda_xray_tracing::begin_subsegment("noop").id(), None);
}

#[test]
fn handles_are_send_so_they_cross_tasks_and_threads() {
    fn send<T: Send>() {}
    send::<lambda_xray_tracing::Subsegment>();
    send::<lambda_xray_tracing::TraceContext>();
    send::<lambda_xray_tracing::WithTrace<std::future::Ready<()>>>();
    send::<lambda_xray_tracing::InSubsegment<std::future::Ready<()>>>();
}

#[tokio::test]
async fn detached_subsegments_and_unsampled_contexts() {
    let cap = MemoryTransport::default();
    let header = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1");
    let ctx = lambda_xray_tracing::TraceContext::for_invocation_with(
        Some(&header),
        None,
        &Config::default(),
        Arc::new(Emitter::new(cap.clone())),
    );
    let (a, a_ctx, b, b_ctx, unsampled_header) = ctx
        .clone()
        .wrap(async {
            let before = lambda_xray_tracing::current_trace_header().map(|h| h.to_string());
            // Two overlapping detached subsegments, ended out of order: neither becomes current.
            let (a, a_ctx) = lambda_xray_tracing::current().begin_subsegment("a");
            let (b, b_ctx) = lambda_xray_tracing::current().begin_subsegment("b");
            assert_eq!(lambda_xray_tracing::current_trace_header().map(|h| h.to_string()), before);
            let ids = (a.id(), a_ctx.trace_header().map(|h| h.to_string()), b.id(), b_ctx.trace_header().map(|h| h.to_string()));
            a.end();
            b.end();
            assert_eq!(lambda_xray_tracing::current_trace_header().map(|h| h.to_string()), before);
            let unsampled = lambda_xray_tracing::current().unsampled();
            let inside = unsampled
                .wrap(async {
                    assert!(!lambda_xray_tracing::is_sampled());
                    lambda_xray_tracing::trace("not recorded", || ());
                    lambda_xray_tracing::current_trace_header().map(|h| h.to_string())
                })
                .await;
            (ids.0, ids.1, ids.2, ids.3, inside)
        })
        .await;
    let (a, b) = (a.unwrap().to_string(), b.unwrap().to_string());
    assert_eq!(a_ctx, Some(format!("Root={ROOT};Parent={a};Sampled=1;Lineage=a87bd80c:1")));
    assert_eq!(b_ctx, Some(format!("Root={ROOT};Parent={b};Sampled=1;Lineage=a87bd80c:1")));
    assert_eq!(unsampled_header, Some(format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=0;Lineage=a87bd80c:1")));
    let names: Vec<String> = cap.documents().iter().map(|d| d["name"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(names, ["a", "b"]);
    for d in cap.documents() {
        assert_eq!(d["parent_id"], "53995c3f42cd8ad8");
    }
}

#[tokio::test]
async fn from_config_uses_the_config_it_is_given_and_not_the_environment() {
    let daemon = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    daemon.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut config = Config::default();
    config.handler_name = "from_config".into();
    config.service_name = "configured".into();
    config.capture_response = false;
    config.noop_ids = false;
    config.daemon_address = Some(daemon.local_addr().expect("addr").to_string());
    config.extension_marker = "/nonexistent/lambda-xray-marker".into();
    let mut svc = XRayLayer::from_config(config).layer(service_fn(|_e: LambdaEvent<Value>| async move {
        // An unsampled branch of this invocation: with the config's
        // `noop_ids: false` its subsegments get real ids (the process-wide
        // default would give the all-zero one).
        let ctx = lambda_xray_tracing::current().unsampled();
        let id = ctx.wrap(async { lambda_xray_tracing::begin_subsegment("unsampled branch").id() }).await;
        Ok::<Value, lambda_runtime::Error>(json!({ "id": id.map(|i| i.to_string()) }))
    }));
    let sampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    let response = svc.call(event(json!({}), Some(&sampled))).await.ok().unwrap_or_default();
    let id = response["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(id.len(), 16);
    assert_ne!(id, "0000000000000000");
    let mut buf = vec![0u8; 65536];
    let n = daemon.recv(&mut buf).expect("a datagram at the configured daemon");
    let text = String::from_utf8_lossy(&buf[..n]);
    let (_, body) = text.split_once('\n').unwrap_or_default();
    let doc: Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(doc["name"], "## from_config");
    assert_eq!(doc["annotations"]["Service"], "configured");
    assert!(doc.get("metadata").is_none(), "capture_response: false: {doc:#}");
}

#[tokio::test]
async fn free_functions_act_on_the_current_subsegment_and_keep_the_callers_location() {
    let cap = MemoryTransport::default();
    let mut svc = layer(&cap).layer(service_fn(|_e: LambdaEvent<Value>| async move {
        let _sub = lambda_xray_tracing::begin_subsegment("current");
        lambda_xray_tracing::put_annotation("k", 1)?;
        lambda_xray_tracing::put_metadata("m", &[1, 2])?;
        lambda_xray_tracing::set_http_status(503)?;
        let line = line!() + 1;
        lambda_xray_tracing::record_error(&"x".parse::<u8>().expect_err("not a number"))?;
        Ok::<Value, lambda_runtime::Error>(json!(line))
    }));
    let sampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    let line = svc.call(event(json!({}), Some(&sampled))).await.ok().unwrap_or_default();
    let docs = cap.documents();
    let sub = &docs[0]["subsegments"][0];
    assert_eq!(sub["name"], "current");
    assert_eq!(sub["annotations"]["k"], 1);
    assert_eq!(sub["metadata"]["default"]["m"], json!([1, 2]));
    assert_eq!(sub["http"]["response"]["status"], 503);
    assert_eq!(sub["fault"], true);
    let frame = &sub["cause"]["exceptions"][0]["stack"][0];
    assert_eq!(frame["path"], file!());
    assert_eq!(frame["line"], line);
}
