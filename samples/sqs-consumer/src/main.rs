//! An SQS-triggered Lambda function: per-message sampling and partial batch
//! failures.
//!
//! Each message is processed in its own scope ([`lambda_xray_tracing::sqs`]): a
//! message its producer sampled (`AWSTraceHeader` with `Sampled=1`) gets a
//! `Processing Message` subsegment with `message_id` and `producer_trace_id`
//! annotations; the others are processed unsampled (nothing recorded, and SDK
//! calls made for them send `Sampled=0`). A message whose body is `fail` (or
//! starts with `fail`) fails: it is reported in the `SqsBatchResponse` (the
//! event source mapping needs `ReportBatchItemFailures`) and its subsegment is
//! marked `fault`.
//!
//! With `FORWARD_QUEUE_URL` set, every processed message is forwarded there
//! through the traced SDK client (`AWS_ENDPOINT_URL_SQS` for a local SQS).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use lambda_xray_tracing::XRayInterceptor;

async fn sqs_client() -> aws_sdk_sqs::Client {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await;
    aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(&shared).interceptor(XRayInterceptor::new()).build())
}

/// Processes one message (runs inside its scope).
async fn process(forward: Option<(&aws_sdk_sqs::Client, &str)>, msg: SqsMessage) -> Result<(), Error> {
    let body = msg.body.unwrap_or_default();
    // Work of our own, nested under the message's subsegment when it is sampled.
    let words = lambda_xray_tracing::trace("parse", || body.split_whitespace().count());
    lambda_xray_tracing::put_metadata_in("consumer", "words", &words)?;
    if body.starts_with("fail") {
        return Err(format!("cannot process message {}", msg.message_id.unwrap_or_default()).into());
    }
    if let Some((sqs, url)) = forward {
        sqs.send_message().queue_url(url).message_body(format!("processed: {body}")).send().await?;
    }
    Ok(())
}

async fn handler(forward: Option<(&aws_sdk_sqs::Client, &str)>, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    Ok(lambda_xray_tracing::sqs::process_batch(event.payload, |msg| process(forward, msg)).await)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let forward_url = std::env::var("FORWARD_QUEUE_URL").ok().filter(|u| !u.is_empty());
    let sqs = match &forward_url {
        Some(_) => Some(sqs_client().await),
        None => None,
    };
    lambda_xray_tracing::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let forward = sqs.as_ref().zip(forward_url.as_deref());
        async move { handler(forward, event).await }
    }))
    .await
}
