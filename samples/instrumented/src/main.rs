//! A Lambda function already instrumented with `tracing`: one subscriber layer
//! turns its spans into X-Ray subsegments under the `## handler` subsegment.
//!
//! Payload: `{"items": 3}` processes three items (each an `#[instrument]`ed
//! call, one in a spawned task); `{"items": 3, "bad_item": 1}` makes item 1
//! fail with an ERROR event, recorded as the span's cause.

use std::time::Duration;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use lambda_xray_tracing::tracing_bridge::SubsegmentLayer;
use serde_json::{Value, json};
use tracing::Instrument;
use tracing_subscriber::prelude::*;

#[tracing::instrument(skip(payload), fields(items))]
async fn handle_order(payload: &Value) -> Result<u64, Error> {
    let items = payload["items"].as_u64().unwrap_or(1);
    let bad = payload["bad_item"].as_u64();
    tracing::Span::current().record("items", items);
    let mut total = 0;
    for item in 0..items {
        total += price_item(item, bad == Some(item)).await;
    }
    // Work in a spawned task keeps its place in the trace with `.instrument`.
    let shipping = tokio::spawn(quote_shipping(total).instrument(tracing::Span::current())).await?;
    // Explicit subsegments and spans mix: this one nests under `handle_order`.
    lambda_xray_tracing::in_subsegment("persist order", tokio::time::sleep(Duration::from_millis(1))).await;
    Ok(total + shipping)
}

#[tracing::instrument(fields(sku = %format!("sku-{item}")))]
async fn price_item(item: u64, bad: bool) -> u64 {
    tokio::time::sleep(Duration::from_millis(1)).await;
    if bad {
        tracing::error!(item, "price lookup failed");
        return 0;
    }
    10 + item
}

#[tracing::instrument]
async fn quote_shipping(total: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(1)).await;
    total / 10
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let total = handle_order(&event.payload).await?;
    Ok(json!({ "total": total }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::registry()
        // Spans from our own crate become subsegments; the runtime's are skipped by default.
        .with(SubsegmentLayer::new())
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).without_time())
        .init();
    lambda_xray_tracing::run(service_fn(handler)).await
}
