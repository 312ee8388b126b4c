//! The end of each invocation, as the layer tells the extension: on the
//! handler subsegment's own datagram (its header names the request id) when
//! it goes to the extension, otherwise a control datagram.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{Context, LambdaEvent, service_fn};
use lambda_xray_tracing::{Config, Emitter, MemoryTransport, UdpTransport, XRayLayer};
use serde_json::{Value, json};
use tower::{Layer, Service};

mod common;
use common::catch_unwind;

const ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";
const CONTROL_HEADER: &[u8] = b"{\"format\":\"lambda-xray-control\",\"version\":1}\n";
const DOCUMENT_HEADER: &[u8] = b"{\"format\":\"json\",\"version\":1}\n";
/// The daemon's header with the end-of-invocation mark.
const LAST_DOCUMENT_HEADER: &[u8] = b"{\"format\":\"json\",\"version\":1,\"invocation_done\":";

fn event(request_id: &str, header: Option<&str>) -> LambdaEvent<Value> {
    let mut ctx = Context::default();
    ctx.request_id = request_id.to_owned();
    ctx.xray_trace_id = header.map(str::to_owned);
    LambdaEvent::new(json!({}), ctx)
}

/// What one datagram is.
#[derive(Debug, PartialEq)]
enum Datagram {
    Document(String),
    /// A document (its name) that also ends the invocation (the request id).
    LastDocument(String, String),
    Done(String),
    Other(Vec<u8>),
}

fn classify(datagram: &[u8]) -> Datagram {
    if let Some(body) = datagram.strip_prefix(DOCUMENT_HEADER) {
        let doc: Value = serde_json::from_slice(body).unwrap_or_default();
        return Datagram::Document(doc["name"].as_str().unwrap_or("").to_owned());
    }
    if datagram.starts_with(LAST_DOCUMENT_HEADER)
        && let Some(newline) = datagram.iter().position(|&b| b == b'\n')
        && let Ok(header) = serde_json::from_slice::<Value>(&datagram[..newline])
        && header.as_object().map(|h| h.len()) == Some(3)
        && let Ok(doc) = serde_json::from_slice::<Value>(&datagram[newline + 1..])
    {
        return Datagram::LastDocument(
            doc["name"].as_str().unwrap_or("").to_owned(),
            header["invocation_done"].as_str().unwrap_or("").to_owned(),
        );
    }
    if let Some(body) = datagram.strip_prefix(CONTROL_HEADER)
        && let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body)
        && map.len() == 1
        && let Some(Value::String(id)) = map.get("invocation_done")
    {
        return Datagram::Done(id.clone());
    }
    Datagram::Other(datagram.to_vec())
}

fn sent(cap: &MemoryTransport) -> Vec<Datagram> {
    cap.datagrams().iter().map(|d| classify(d)).collect()
}

fn extension_layer(cap: &MemoryTransport, config: Config) -> XRayLayer {
    XRayLayer::new().handler_name("test").with_emitter(config, Arc::new(Emitter::for_extension(cap.clone())))
}

async fn handler(_e: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
    let sub = lambda_xray_tracing::begin_subsegment("work");
    let _ = sub.put_annotation("n", 1);
    drop(sub);
    // A subsegment that ends after an await, as a second document source.
    lambda_xray_tracing::in_subsegment("later", tokio::task::yield_now()).await;
    Ok(json!("ok"))
}

#[tokio::test]
async fn each_invocation_ends_once_after_its_documents() {
    let cap = MemoryTransport::default();
    let mut svc = extension_layer(&cap, Config::default()).layer(service_fn(handler));
    let sampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    let unsampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=0");
    let cases: [(&str, Option<&str>); 5] = [
        ("sampled-1", Some(&sampled)),
        ("unsampled", Some(&unsampled)),
        ("no-header", None),
        ("malformed", Some("Root=;")),
        ("sampled-2", Some(&sampled)),
    ];
    for (id, header) in cases {
        let out = svc.call(event(id, header)).await.ok();
        assert_eq!(out, Some(json!("ok")), "{id}: tracing must not change the result");
    }
    // Sampled: the handler subsegment's datagram (the last document) ends
    // it; otherwise a control datagram does.
    let want = vec![
        Datagram::LastDocument("## test".into(), "sampled-1".into()),
        Datagram::Done("unsampled".into()),
        Datagram::Done("no-header".into()),
        Datagram::Done("malformed".into()),
        Datagram::LastDocument("## test".into(), "sampled-2".into()),
    ];
    assert_eq!(sent(&cap), want);
}

#[tokio::test]
async fn a_request_id_needing_escapes_is_valid_json() {
    let cap = MemoryTransport::default();
    let mut svc = extension_layer(&cap, Config::default()).layer(service_fn(handler));
    let odd = "a\"b\\c\n\u{e9}";
    assert!(svc.call(event(odd, None)).await.is_ok());
    assert_eq!(sent(&cap), vec![Datagram::Done(odd.into())]);
}

#[tokio::test]
async fn a_panicking_handler_still_ends_its_invocation() {
    let cap = MemoryTransport::default();
    let mut svc = extension_layer(&cap, Config::default()).layer(service_fn(|_e: LambdaEvent<Value>| async move {
        let _open = lambda_xray_tracing::begin_subsegment("open at the panic");
        if lambda_xray_tracing::is_sampled() || lambda_xray_tracing::current_trace_header().is_none() {
            panic!("handler exploded");
        }
        Ok::<Value, lambda_runtime::Error>(json!(null))
    }));
    let sampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    for (id, header) in [("p-sampled", Some(sampled.as_str())), ("p-untraced", None)] {
        let payload = catch_unwind(svc.call(event(id, header))).await.err();
        assert_eq!(payload.as_ref().and_then(|p| p.downcast_ref::<&str>()).copied(), Some("handler exploded"), "{id}");
    }
    assert_eq!(sent(&cap), vec![Datagram::LastDocument("## test".into(), "p-sampled".into()), Datagram::Done("p-untraced".into())]);
}

#[tokio::test]
async fn a_dropped_unfinished_invocation_still_ends() {
    let cap = MemoryTransport::default();
    let mut svc = extension_layer(&cap, Config::default())
        .layer(service_fn(|_e: LambdaEvent<Value>| std::future::pending::<Result<Value, lambda_runtime::Error>>()));
    let sampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    let fut = svc.call(event("abandoned", Some(&sampled)));
    assert!(tokio::time::timeout(Duration::from_millis(10), fut).await.is_err());
    assert_eq!(sent(&cap), vec![Datagram::Document("## test".into()), Datagram::Done("abandoned".into())]);
}

#[tokio::test]
async fn nothing_is_sent_to_the_daemon_or_when_tracing_is_disabled() {
    // The daemon does not know the control format.
    let daemon = MemoryTransport::default();
    let mut svc = XRayLayer::new().with_emitter(Config::default(), Arc::new(Emitter::new(daemon.clone()))).layer(service_fn(handler));
    let sampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    assert!(svc.call(event("to-daemon", Some(&sampled))).await.is_ok());
    assert!(svc.call(event("to-daemon-untraced", None)).await.is_ok());
    let kinds = sent(&daemon);
    assert_eq!(kinds.len(), 1, "{kinds:?}");
    assert!(matches!(kinds[0], Datagram::Document(_)), "{kinds:?}");

    let extension = MemoryTransport::default();
    let mut disabled = Config::default();
    disabled.enabled = false;
    let mut svc = extension_layer(&extension, disabled).layer(service_fn(handler));
    assert!(svc.call(event("disabled", Some(&sampled))).await.is_ok());
    assert_eq!(sent(&extension), vec![]);
}

#[tokio::test]
async fn nothing_is_sent_once_the_emitter_fell_back_to_the_daemon() -> std::io::Result<()> {
    // A bound-then-closed port refuses connected UDP sends: the extension is gone.
    let closed = UdpSocket::bind("127.0.0.1:0")?;
    let gone = closed.local_addr()?;
    drop(closed);
    let daemon = MemoryTransport::default();
    let emitter = Arc::new(Emitter::for_extension(UdpTransport::connect(gone)?).with_fallback(daemon.clone()));
    let mut svc = XRayLayer::new().handler_name("test").with_emitter(Config::default(), emitter.clone()).layer(service_fn(handler));
    let sampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    // The refusal shows on a send after the first one: invoke until the
    // emitter has switched to the daemon.
    for _ in 0..50 {
        if !emitter.sends_to_extension() {
            break;
        }
        assert!(svc.call(event("probe", Some(&sampled))).await.is_ok());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!emitter.sends_to_extension(), "the emitter never fell back");
    daemon.clear();
    assert!(svc.call(event("after-fallback", Some(&sampled))).await.is_ok());
    assert!(svc.call(event("after-fallback-untraced", None)).await.is_ok());
    assert_eq!(sent(&daemon), vec![Datagram::Document("## test".into())]);
    Ok(())
}

#[tokio::test]
async fn over_udp_one_datagram_is_the_document_and_the_end() -> std::io::Result<()> {
    let extension = UdpSocket::bind("127.0.0.1:0")?;
    extension.set_read_timeout(Some(Duration::from_secs(5)))?;
    let emitter = Arc::new(Emitter::for_extension(UdpTransport::connect(extension.local_addr()?)?));
    let mut svc = XRayLayer::new().handler_name("test").with_emitter(Config::default(), emitter).layer(service_fn(handler));
    let sampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    assert!(svc.call(event("udp-1", Some(&sampled))).await.is_ok());
    assert!(svc.call(event("udp-2", None)).await.is_ok());
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    for _ in 0..2 {
        let n = extension.recv(&mut buf)?;
        got.push(classify(&buf[..n]));
    }
    assert_eq!(got, vec![Datagram::LastDocument("## test".into(), "udp-1".into()), Datagram::Done("udp-2".into())]);
    Ok(())
}

#[tokio::test]
async fn a_split_handler_document_ends_the_invocation_on_its_last_datagram() {
    let cap = MemoryTransport::default();
    let mut svc = extension_layer(&cap, Config::default()).layer(service_fn(|_e: LambdaEvent<Value>| async move {
        for i in 0..6 {
            let sub = lambda_xray_tracing::begin_subsegment(&format!("big {i}"));
            let _ = sub.put_metadata("blob", &"x".repeat(20_000));
        }
        Ok::<Value, lambda_runtime::Error>(json!("ok"))
    }));
    let sampled = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    assert!(svc.call(event("split", Some(&sampled))).await.is_ok());
    let kinds = sent(&cap);
    assert!(kinds.len() > 1, "the 120 KB handler document is split: {} datagram(s)", kinds.len());
    let (last, before) = kinds.split_last().unwrap();
    assert_eq!(last, &Datagram::LastDocument("## test".into(), "split".into()));
    assert!(before.iter().all(|k| matches!(k, Datagram::Document(name) if name.starts_with("big "))), "{before:?}");
}
