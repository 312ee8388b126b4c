//! A `Config` passed in also decides what calls with no trace context do
//! while its invocations run (`AWS_XRAY_CONTEXT_MISSING` of that config, not
//! of the environment). Its own process: the setting is process-wide.

use lambda_runtime::{Context, LambdaEvent, service_fn};
use lambda_xray_tracing::{Config, ContextMissing, XRayLayer};
use serde_json::{Value, json};
use tower::{Layer, Service};

#[tokio::test]
async fn a_passed_in_context_missing_applies_to_calls_without_context() {
    let daemon = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    let mut config = Config::default();
    config.context_missing = ContextMissing::RuntimeError;
    config.daemon_address = Some(daemon.local_addr().expect("addr").to_string());
    config.extension_marker = "/nonexistent/lambda-xray-marker".into();
    let mut svc = XRayLayer::from_config(config).layer(service_fn(|_e: LambdaEvent<Value>| async move {
        // A thread the context was not carried into.
        let panicked = std::thread::spawn(|| std::panic::catch_unwind(|| drop(lambda_xray_tracing::begin_subsegment("lost"))).is_err())
            .join()
            .unwrap_or(false);
        Ok::<Value, lambda_runtime::Error>(json!(panicked))
    }));
    let mut ctx = Context::default();
    ctx.xray_trace_id = Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".into());
    let response = svc.call(LambdaEvent::new(json!({}), ctx)).await.ok();
    // The environment's default (LOG_ERROR) would only have logged.
    assert_eq!(response, Some(json!(true)), "RUNTIME_ERROR from the passed-in config");
}
