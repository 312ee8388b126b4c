//! A Lambda function that sends to SQS through the traced AWS SDK client.
//!
//! The client gets [`lambda_xray_tracing::XRayInterceptor`] once, when it is built
//! during init; from then on every call it makes is an `SQS` subsegment of the
//! invocation, and each request carries `X-Amzn-Trace-Id` naming that
//! subsegment, which SQS keeps as the message's `AWSTraceHeader`.
//!
//! Environment: `QUEUE_URL` (required), `AWS_ENDPOINT_URL_SQS` (optional: a
//! local SQS such as moto's server), `AWS_REGION` and credentials as usual.
//!
//! Payload: `{"messages": ["a", "b"], "batch": false}`: one `SendMessage` per
//! message, or one `SendMessageBatch` with `"batch": true`.

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use lambda_xray_tracing::XRayInterceptor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize)]
struct Request {
    #[serde(default)]
    messages: Vec<String>,
    #[serde(default)]
    batch: bool,
}

#[derive(Debug, Serialize)]
struct Response {
    sent: Vec<String>,
}

/// The traced client: one line (`.interceptor(..)`) on top of the usual setup.
async fn sqs_client() -> aws_sdk_sqs::Client {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await;
    aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(&shared).interceptor(XRayInterceptor::new()).build())
}

async fn handler(sqs: &aws_sdk_sqs::Client, queue_url: &str, event: LambdaEvent<Request>) -> Result<Response, Error> {
    let req = event.payload;
    lambda_xray_tracing::put_metadata_in("sender", "count", &req.messages.len())?;
    let mut sent = Vec::new();
    if req.batch {
        let entries = req
            .messages
            .iter()
            .enumerate()
            .map(|(i, body)| SendMessageBatchRequestEntry::builder().id(format!("m{i}")).message_body(body).build())
            .collect::<Result<Vec<_>, _>>()?;
        let out = sqs.send_message_batch().queue_url(queue_url).set_entries(Some(entries)).send().await?;
        sent.extend(out.successful.into_iter().map(|s| s.message_id));
    } else {
        for body in &req.messages {
            let out = sqs.send_message().queue_url(queue_url).message_body(body).send().await?;
            sent.extend(out.message_id);
        }
    }
    Ok(Response { sent })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let queue_url = std::env::var("QUEUE_URL").map_err(|_| "QUEUE_URL is not set")?;
    let sqs = sqs_client().await;
    lambda_xray_tracing::run(service_fn(|event: LambdaEvent<Request>| {
        let (sqs, queue_url) = (&sqs, queue_url.as_str());
        async move { handler(sqs, queue_url, event).await }
    }))
    .await
}
