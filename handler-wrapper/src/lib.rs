//! AWS X-Ray tracing for Rust functions on `lambda_runtime`.
