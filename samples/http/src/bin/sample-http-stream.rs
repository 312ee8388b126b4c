//! A streamed HTTP response (a Function URL with `InvokeMode:
//! RESPONSE_STREAM`): `GET /stream/{n}` sends `n` chunks, one every 10 ms,
//! each produced in its own subsegment. Tracing follows the stream to its
//! end (the handler subsegment ends with the last byte and records how many
//! were streamed) and never changes a byte of it.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use futures_util::stream;

async fn chunks(Path(n): Path<u32>) -> Response {
    let n = n.min(1000);
    let body = stream::unfold(0u32, move |i| async move {
        if i == n {
            return None;
        }
        let chunk = lambda_xray_tracing::in_subsegment("chunk", async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Bytes::from(format!("chunk {i} of {n}\n"))
        })
        .await;
        Some((Ok::<_, std::convert::Infallible>(chunk), i + 1))
    });
    Response::builder().header("content-type", "text/plain").body(Body::from_stream(body)).unwrap_or_else(|_| Response::new(Body::empty()))
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let app = Router::new().route("/stream/{n}", get(chunks));
    lambda_xray_tracing::http::run_with_streaming_response(app).await
}
