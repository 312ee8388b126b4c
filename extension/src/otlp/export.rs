//! One OTLP/HTTP client connection and the bounded retries of one request.
//!
//! The connection is kept between requests (and between invocations: a
//! handshake to X-Ray's endpoint costs tens of milliseconds, more than the
//! flush bound), and made ahead of time at INVOKE (see `Otlp::warm`). A
//! connection that died while the sandbox was frozen fails its first write;
//! the request is then retried at once on a new connection.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::settings::OtlpSettings;
use super::sigv4;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;

/// Largest response body read (an OTLP response is a few bytes).
const MAX_RESPONSE: usize = 64 * 1024;
/// First pause before a retry; doubled each time.
const BACKOFF: Duration = Duration::from_millis(10);

/// Why an attempt failed.
#[derive(Debug)]
pub enum ExportError {
    /// Name lookup or TCP connect failed.
    Connect(std::io::Error),
    /// TLS setup or handshake failed.
    Tls(std::io::Error),
    /// The system trust store has no usable certificate.
    NoRoots,
    /// The HTTP exchange failed (connection reset, bad response).
    Http(hyper::Error),
    /// The endpoint's host is not a name TLS can check.
    ServerName(rustls::pki_types::InvalidDnsNameError),
    /// The request could not be built.
    Build(http::Error),
    /// The request could not be signed.
    Sign(sigv4::SignError),
    /// No answer within the time allowed.
    TimedOut,
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
            Self::NoRoots => write!(f, "no CA certificates in the system trust store (SSL_CERT_FILE / SSL_CERT_DIR)"),
            Self::Http(e) => write!(f, "HTTP: {e}"),
            Self::ServerName(e) => write!(f, "TLS server name: {e}"),
            Self::Build(e) => write!(f, "request: {e}"),
            Self::Sign(e) => write!(f, "{e}"),
            Self::TimedOut => write!(f, "timed out"),
        }
    }
}

impl std::error::Error for ExportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(e) | Self::Tls(e) => Some(e),
            Self::Http(e) => Some(e),
            Self::ServerName(e) => Some(e),
            Self::Build(e) => Some(e),
            Self::Sign(e) => Some(e),
            Self::NoRoots | Self::TimedOut => None,
        }
    }
}

/// How one request ended after its retries.
#[derive(Debug)]
pub enum Outcome {
    /// 2xx: delivered; `rejected` spans the endpoint refused in a partial success.
    Accepted {
        /// `partial_success.rejected_spans`.
        rejected: i64,
        /// `partial_success.error_message`.
        message: String,
    },
    /// A status that retrying cannot fix (400, 401, 403, 413, ...).
    Rejected(StatusCode),
    /// Still failing (connection, 429/502/503/504, time) when retries had to stop.
    Failed(String),
}

/// The client of one endpoint.
pub struct Client {
    settings: Arc<OtlpSettings>,
    sender: Option<SendRequest<Full<Bytes>>>,
    tls: Option<tokio_rustls::TlsConnector>,
    /// The last 2xx answer's partial success, if it had one.
    partial: Option<(i64, String)>,
}

impl Client {
    /// A client with no connection yet.
    pub fn new(settings: Arc<OtlpSettings>) -> Self {
        Self { settings, sender: None, tls: None, partial: None }
    }

    /// Whether a connection is open (as far as can be told without using it).
    pub fn connected(&self) -> bool {
        self.sender.as_ref().is_some_and(|s| !s.is_closed())
    }

    /// Opens the connection unless one is open, by `until`.
    pub async fn connect(&mut self, until: Instant) -> Result<(), ExportError> {
        if self.connected() {
            return Ok(());
        }
        self.sender = None;
        let sender = tokio::time::timeout_at(until, self.open()).await.map_err(|_| ExportError::TimedOut)??;
        self.sender = Some(sender);
        Ok(())
    }

    async fn open(&mut self) -> Result<SendRequest<Full<Bytes>>, ExportError> {
        let uri = &self.settings.endpoint;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(ExportError::Connect)?;
        let _ = tcp.set_nodelay(true);
        if https {
            let name = rustls::pki_types::ServerName::try_from(host).map_err(ExportError::ServerName)?;
            let tls = self.tls_connector()?.connect(name, tcp).await.map_err(ExportError::Tls)?;
            handshake(tls).await
        } else {
            handshake(tcp).await
        }
    }

    /// rustls with ring, trusting the system store (on Lambda the runtime's
    /// CA bundle, kept current by AWS). Loaded at the first https connection
    /// only, so functions exporting over http or not at all never pay for it.
    fn tls_connector(&mut self) -> Result<tokio_rustls::TlsConnector, ExportError> {
        if let Some(tls) = &self.tls {
            return Ok(tls.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            return Err(ExportError::NoRoots);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ExportError::Tls(std::io::Error::other(e)))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
        self.tls = Some(tls.clone());
        Ok(tls)
    }

    /// Sends `body` (already compressed when the settings say gzip): retries
    /// retryable failures while a retry can start before `retry_until`; one
    /// attempt never runs past `attempt_until`.
    pub async fn send(&mut self, body: Bytes, retry_until: Instant, attempt_until: Instant) -> Outcome {
        let mut pause = BACKOFF;
        let mut fresh_retry = true;
        loop {
            let result = tokio::time::timeout_at(attempt_until, self.attempt(body.clone(), attempt_until)).await;
            let (why, wait) = match result {
                Ok(Ok((status, _))) if status.is_success() => {
                    let (rejected, message) = self.partial.take().unwrap_or_default();
                    return Outcome::Accepted { rejected, message };
                }
                Ok(Ok((status, retry_after))) if retryable(status) => (format!("HTTP {status}"), retry_after.unwrap_or(pause)),
                Ok(Ok((status, _))) => return Outcome::Rejected(status),
                Ok(Err(e)) => {
                    self.sender = None;
                    // A kept connection that died while frozen: retry at once, once.
                    let wait = if fresh_retry { Duration::ZERO } else { pause };
                    fresh_retry = false;
                    (e.to_string(), wait)
                }
                Err(_) => {
                    self.sender = None;
                    return Outcome::Failed("timed out".into());
                }
            };
            let resume = Instant::now() + wait;
            if resume >= retry_until || resume >= attempt_until {
                return Outcome::Failed(why);
            }
            log!(Debug, "OTLP export: {why}; retrying in {} ms", wait.as_millis());
            tokio::time::sleep_until(resume).await;
            pause *= 2;
        }
    }

    async fn attempt(&mut self, body: Bytes, until: Instant) -> Result<(StatusCode, Option<Duration>), ExportError> {
        self.partial = None;
        self.connect(until).await?;
        let request = self.request(body)?;
        let sender = self.sender.as_mut().ok_or(ExportError::TimedOut)?;
        sender.ready().await.map_err(ExportError::Http)?;
        let response = sender.send_request(request).await.map_err(ExportError::Http)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the body so the connection can carry the next request.
        let body = Limited::new(response.into_body(), MAX_RESPONSE).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if status.is_success()
            && let Ok(answer) = ExportTraceServiceResponse::decode(body)
            && let Some(partial) = answer.partial_success
        {
            self.partial = Some((partial.rejected_spans, partial.error_message));
        }
        Ok((status, retry_after))
    }

    fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, ExportError> {
        let settings = &self.settings;
        let uri = &settings.endpoint;
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let mut request = Request::post(uri.clone())
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::USER_AGENT, concat!("lambda-xray-extension/", env!("CARGO_PKG_VERSION")))
            .body(body)
            .map_err(ExportError::Build)?;
        let headers = request.headers_mut();
        if settings.gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        for (name, value) in &settings.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(signing) = &settings.signing {
            sigv4::sign_request(&mut request, signing, SystemTime::now()).map_err(ExportError::Sign)?;
        }
        let (mut parts, body) = request.into_parts();
        // Sent in origin form; the absolute URI was only for signing.
        parts.uri = uri.path_and_query().map_or("/", |p| p.as_str()).parse::<http::Uri>().map_err(|e| ExportError::Build(e.into()))?;
        Ok(Request::from_parts(parts, Full::new(body)))
    }
}

/// The statuses the OTLP specification says to retry.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, ExportError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(ExportError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log!(Debug, "OTLP connection closed: {e}");
        }
    });
    Ok(sender)
}
