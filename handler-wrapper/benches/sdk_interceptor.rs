//! The AWS SDK interceptor's own cost per call, without the network.
//!
//! Run: `cargo bench -p lambda-xray-tracing --features aws-sdk --bench sdk_interceptor`
//!
//! An `aws-sdk-sqs` client whose HTTP client answers every request at once
//! with a canned `SendMessage` response makes `SendMessage` calls, 100 per
//! invocation under a `## handler` subsegment, with and without
//! `XRayInterceptor`. The difference per call is the interceptor's cost:
//! sampled (subsegment, fields, header, and the finished tree serialised and
//! sent over UDP to a local socket, amortised), unsampled (`Sampled=0` header
//! only) and untraced (nothing).

use std::hint::black_box;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use lambda_xray_tracing::{Config, Emitter, TraceContext, UdpTransport, XRayInterceptor, in_subsegment};

const SAMPLED: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
const UNSAMPLED: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";
const CALLS: u32 = 100;
const QUEUE: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/bench";

/// Answers every request with the same `SendMessage` response.
#[derive(Debug, Clone)]
struct Canned;

impl HttpConnector for Canned {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        let body = r#"{"MessageId":"5fea7756-0ea4-451a-a703-a558b933e274","MD5OfMessageBody":"5d41402abc4b2a76b9719d911017c592"}"#;
        let mut response = HttpResponse::new(StatusCode::try_from(200u16).unwrap_or_else(|_| unreachable!()), SdkBody::from(body));
        response.headers_mut().insert("x-amzn-requestid", "b1c3a1b2-0000-4d4d-9b9b-1234567890ab");
        response.headers_mut().insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(response))
    }
}

impl HttpClient for Canned {
    fn http_connector(&self, _settings: &HttpConnectorSettings, _components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

fn client(traced: bool) -> aws_sdk_sqs::Client {
    let mut conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", None, None, "bench"))
        .http_client(SharedHttpClient::new(Canned))
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled());
    if traced {
        conf = conf.interceptor(XRayInterceptor::new());
    }
    aws_sdk_sqs::Client::from_conf(conf.build())
}

/// Nanoseconds per call over `rounds` invocations of `CALLS` calls each.
async fn per_call(client: &aws_sdk_sqs::Client, header: Option<&str>, rounds: u32, config: &Config, emitter: &Arc<Emitter>) -> f64 {
    let start = Instant::now();
    for _ in 0..rounds {
        let ctx = TraceContext::for_invocation_with(header, None, config, emitter.clone());
        ctx.wrap(in_subsegment("## handler", async {
            for _ in 0..CALLS {
                let out = client.send_message().queue_url(QUEUE).message_body("hello").send().await;
                black_box(out.is_ok());
            }
        }))
        .await;
    }
    start.elapsed().as_nanos() as f64 / f64::from(rounds * CALLS)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> std::io::Result<()> {
    let daemon = UdpSocket::bind("127.0.0.1:0")?;
    let addr = daemon.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while daemon.recv(&mut buf).is_ok() {}
    });
    let emitter = Arc::new(Emitter::new(UdpTransport::connect(addr)?));
    let config = Config::default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let (plain, traced) = (client(false), client(true));
        // Warm up (credentials, identity cache, allocator).
        per_call(&plain, Some(SAMPLED), 20, &config, &emitter).await;
        per_call(&traced, Some(SAMPLED), 20, &config, &emitter).await;
        // Paired, interleaved blocks; the median of the per-block differences
        // is robust to the noise of a shared machine.
        let (blocks, rounds) = (60, 5);
        println!(
            "aws-sdk-sqs SendMessage, canned HTTP response, {CALLS} calls per invocation; median of {blocks} paired blocks of {} calls",
            rounds * CALLS
        );
        println!("{:<12} {:>14} {:>14} {:>14}", "invocation", "without ns", "with ns", "added ns");
        for (label, header) in [("sampled", Some(SAMPLED)), ("unsampled", Some(UNSAMPLED)), ("untraced", None)] {
            let (mut plain_ns, mut traced_ns, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..blocks {
                // Alternate which goes first.
                let (p, t) = if i % 2 == 0 {
                    let p = per_call(&plain, header, rounds, &config, &emitter).await;
                    (p, per_call(&traced, header, rounds, &config, &emitter).await)
                } else {
                    let t = per_call(&traced, header, rounds, &config, &emitter).await;
                    (per_call(&plain, header, rounds, &config, &emitter).await, t)
                };
                plain_ns.push(p);
                traced_ns.push(t);
                diffs.push(t - p);
            }
            println!("{label:<12} {:>14.0} {:>14.0} {:>14.0}", median(plain_ns), median(traced_ns), median(diffs));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    Ok(())
}
