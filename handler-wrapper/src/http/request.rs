//! The `http.request` block of an incoming `lambda_http` request.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::document::{HttpRequest, MAX_STRING_LEN, truncate};

/// Describes `req` as X-Ray's `http.request`: method, full URL, user agent and
/// client IP. The client IP is the caller's address as API Gateway saw it
/// (`sourceIp`, REST, HTTP and WebSocket APIs and Function URLs); without
/// one (ALB) it is the first `X-Forwarded-For` address, flagged
/// `x_forwarded_for`.
pub(super) fn describe(req: &Request) -> HttpRequest {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let (source_ip, context_agent) = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(c)) => (c.identity.source_ip.as_deref(), c.identity.user_agent.as_deref()),
        Some(RequestContext::ApiGatewayV2(c)) => (c.http.source_ip.as_deref(), c.http.user_agent.as_deref()),
        Some(RequestContext::WebSocket(c)) => (c.identity.source_ip.as_deref(), c.identity.user_agent.as_deref()),
        _ => (None, None),
    };
    let forwarded = || header("x-forwarded-for").and_then(|v| v.split(',').next()).map(str::trim).filter(|ip| !ip.is_empty());
    let (client_ip, x_forwarded_for) = match source_ip.filter(|ip| !ip.is_empty()) {
        Some(ip) => (Some(ip), None),
        None => match forwarded() {
            Some(ip) => (Some(ip), Some(true)),
            None => (None, None),
        },
    };
    let capped = |s: &str| truncate(s, MAX_STRING_LEN).to_owned();
    HttpRequest {
        method: Some(req.method().as_str().to_owned()),
        url: Some(capped(&req.uri().to_string())),
        user_agent: header("user-agent").or(context_agent).map(capped),
        client_ip: client_ip.map(capped),
        x_forwarded_for,
        traced: None,
    }
}
