//! An HTTP API function: an `axum` router behind `lambda_http`, traced in one
//! line, that calls a downstream HTTP service through a traced `reqwest`
//! client.
//!
//! Routes:
//! - `GET /orders/{id}`: looks the order's stock up at
//!   `$DOWNSTREAM_URL/stock/{id}` (one `remote` subsegment, and the request
//!   carries `X-Amzn-Trace-Id` naming it), answers with the downstream status
//!   (502 when the downstream fails with 5xx, 503 when it cannot be reached);
//! - `GET /status/{code}`: answers with that status (how 4xx/429/5xx show up
//!   on the handler subsegment).
//!
//! Every invocation's `## <handler>` subsegment carries the request's method,
//! URL, user agent and client IP, and the response's status and length.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lambda_xray_tracing::http_client::XRayReqwestMiddleware;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use serde_json::{Value, json};

#[derive(Clone)]
struct App {
    client: ClientWithMiddleware,
    downstream: String,
}

async fn order(State(app): State<App>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    let _ = lambda_xray_tracing::put_annotation("order_id", id.as_str());
    let url = format!("{}/stock/{id}", app.downstream);
    match app.client.get(&url).send().await {
        Ok(response) => {
            let status = response.status();
            let stock = response.text().await.unwrap_or_default();
            let answer = if status.is_server_error() { StatusCode::BAD_GATEWAY } else { status };
            (answer, Json(json!({ "order": id, "stock": stock, "downstream_status": status.as_u16() })))
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "order": id, "error": e.to_string() }))),
    }
}

async fn status(Path(code): Path<u16>) -> (StatusCode, String) {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, format!("status {}", status.as_u16()))
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // reqwest's TLS without a built-in provider: ring's (already installed is fine).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = ClientBuilder::new(reqwest::Client::new()).with(XRayReqwestMiddleware::new()).build();
    let downstream = std::env::var("DOWNSTREAM_URL").unwrap_or_else(|_| "http://127.0.0.1:9".to_owned());
    let app = Router::new()
        .route("/orders/{id}", get(order))
        .route("/status/{code}", get(status))
        .with_state(App { client, downstream: downstream.trim_end_matches('/').to_owned() });
    lambda_xray_tracing::http::run(app).await
}
