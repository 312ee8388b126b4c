//! The OTLP settings: the standard `OTEL_*` variables where they apply, plus
//! `LAMBDA_XRAY_EXTENSION_EXPORT` (destinations) and
//! `LAMBDA_XRAY_EXTENSION_OTLP_SIGV4`. As everywhere in the extension, a bad
//! value is logged and replaced by its documented outcome, never a panic.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::mapping::string;

/// `OTEL_EXPORTER_OTLP_TIMEOUT`'s default (the specification's 10 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Where `otlp` sends without an endpoint setting (the specification's
/// default: a collector on the sandbox, e.g. a collector layer).
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318/v1/traces";

/// Where documents go (`LAMBDA_XRAY_EXTENSION_EXPORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destinations {
    /// To the X-Ray daemon over UDP (today's path).
    pub daemon: bool,
    /// To an OTLP/HTTP endpoint.
    pub otlp: bool,
}

/// SigV4 signing of export requests. Its `Debug` leaves the secrets out.
#[derive(Clone, PartialEq, Eq)]
pub struct Signing {
    /// The region signed for.
    pub region: String,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_key: String,
    /// `AWS_SESSION_TOKEN` (Lambda's credentials always have one).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing").field("region", &self.region).field("access_key", &self.access_key).finish_non_exhaustive()
    }
}

/// Everything the OTLP exporter needs.
#[derive(Clone, Debug)]
pub struct OtlpSettings {
    /// The full URL requests go to.
    pub endpoint: Uri,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Bound of one export when no flush bound is tighter.
    pub timeout: Duration,
    /// gzip the request body.
    pub gzip: bool,
    /// SigV4 signing, for X-Ray's OTLP endpoint.
    pub signing: Option<Signing>,
    /// The resource attributes of every request.
    pub resource: Vec<KeyValue>,
}

/// Why OTLP export cannot be set up.
#[derive(Debug)]
pub enum SettingsError {
    /// The endpoint does not parse as a URI.
    NotAUrl {
        /// The value.
        value: String,
        /// Why.
        source: http::uri::InvalidUri,
    },
    /// The endpoint is not `http://` or `https://`.
    NotHttp(String),
    /// The endpoint has no host.
    NoHost(String),
    /// A setting that signing or X-Ray's endpoint needs is not set.
    Missing {
        /// The variable.
        name: &'static str,
        /// What needs it.
        needed_for: &'static str,
    },
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotAUrl { value, source } => write!(f, "the OTLP endpoint {value:?} is not a URL ({source})"),
            Self::NotHttp(value) => write!(f, "the OTLP endpoint {value:?} is not an http:// or https:// URL"),
            Self::NoHost(value) => write!(f, "the OTLP endpoint {value:?} has no host"),
            Self::Missing { name, needed_for } => write!(f, "{needed_for} needs {name}"),
        }
    }
}

impl std::error::Error for SettingsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NotAUrl { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads the destinations and, when OTLP is one, its settings. OTLP that
/// cannot work (bad endpoint, signing without credentials) is turned off
/// with an error line, and the daemon takes over if it was the only one.
pub fn from_lookup(var: &impl Fn(&str) -> Option<String>) -> (Destinations, Option<OtlpSettings>) {
    let (destinations, xray) = destinations(var);
    if !destinations.otlp {
        return (destinations, None);
    }
    match otlp(var, xray) {
        Ok(settings) => (destinations, Some(settings)),
        Err(why) => {
            log!(
                Error,
                "OTLP export is off: {why}; {}",
                if destinations.daemon { "sending to the daemon only" } else { "sending to the daemon instead" }
            );
            (Destinations { daemon: true, otlp: false }, None)
        }
    }
}

/// `LAMBDA_XRAY_EXTENSION_EXPORT`: a comma-separated list of `daemon`,
/// `otlp`, `xray-otlp` (OTLP to X-Ray's endpoint, signed), or `both`
/// (`daemon,otlp`). Default `daemon`: an OTLP endpoint setting alone does not
/// turn OTLP on, since the function's own OpenTelemetry SDK reads the same
/// variables. Returns the destinations and whether X-Ray's endpoint was asked for.
fn destinations(var: &impl Fn(&str) -> Option<String>) -> (Destinations, bool) {
    const NAME: &str = "LAMBDA_XRAY_EXTENSION_EXPORT";
    let Some(value) = var(NAME) else {
        return (Destinations { daemon: true, otlp: false }, false);
    };
    let mut out = Destinations { daemon: false, otlp: false };
    let mut xray = false;
    for part in value.split(',').map(|p| p.trim().to_ascii_lowercase()).filter(|p| !p.is_empty()) {
        match part.as_str() {
            "daemon" => out.daemon = true,
            "otlp" => out.otlp = true,
            "xray-otlp" => {
                out.otlp = true;
                xray = true;
            }
            "both" => {
                out.daemon = true;
                out.otlp = true;
            }
            other => log!(Warn, "{NAME}: {other:?} is not daemon|otlp|xray-otlp|both; ignored"),
        }
    }
    if !out.daemon && !out.otlp {
        log!(Warn, "{NAME}={value:?} names no destination; using daemon");
        out.daemon = true;
    }
    (out, xray)
}

fn otlp(var: &impl Fn(&str) -> Option<String>, xray: bool) -> Result<OtlpSettings, SettingsError> {
    let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"));
    let endpoint = match (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        (Some(full), _) => full.trim().to_owned(),
        (None, Some(base)) => format!("{}/v1/traces", base.trim().trim_end_matches('/')),
        (None, None) if xray => {
            let region = region.as_deref().ok_or(SettingsError::Missing { name: "AWS_REGION", needed_for: "X-Ray's OTLP endpoint" })?;
            format!("https://xray.{region}.amazonaws.com/v1/traces")
        }
        (None, None) => DEFAULT_ENDPOINT.to_owned(),
    };
    let endpoint = parse_endpoint(&endpoint)?;

    match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL")) {
        None => {}
        Some(p) if p.trim() == "http/protobuf" => {}
        Some(other) => log!(Warn, "OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: only http/protobuf is supported; using it"),
    }
    let gzip = match var("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION").or_else(|| var("OTEL_EXPORTER_OTLP_COMPRESSION")) {
        None => true,
        Some(c) => match c.trim().to_ascii_lowercase().as_str() {
            "gzip" => true,
            "none" => false,
            other => {
                log!(Warn, "OTEL_EXPORTER_OTLP_COMPRESSION={other:?} is not gzip|none; using gzip");
                true
            }
        },
    };
    let timeout = match var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").or_else(|| var("OTEL_EXPORTER_OTLP_TIMEOUT")) {
        None => DEFAULT_TIMEOUT,
        Some(t) => match t.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                log!(
                    Warn,
                    "OTEL_EXPORTER_OTLP_TIMEOUT={t:?} is not a positive number of milliseconds; using {} ms",
                    DEFAULT_TIMEOUT.as_millis()
                );
                DEFAULT_TIMEOUT
            }
        },
    };
    let mut headers = var("OTEL_EXPORTER_OTLP_HEADERS").map(|h| parse_headers("OTEL_EXPORTER_OTLP_HEADERS", &h)).unwrap_or_default();
    // The signal-specific list wins for a name both set.
    if let Some(traces) = var("OTEL_EXPORTER_OTLP_TRACES_HEADERS").map(|h| parse_headers("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &h)) {
        headers.retain(|(name, _)| !traces.iter().any(|(n, _)| n == name));
        headers.extend(traces);
    }

    let host = endpoint.host().unwrap_or_default();
    let host_region = xray_region(host);
    let sign = match var("LAMBDA_XRAY_EXTENSION_OTLP_SIGV4").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None => xray || host_region.is_some(),
        Some("true" | "1" | "yes" | "on") => true,
        Some("false" | "0" | "no" | "off") => false,
        Some(other) => {
            let auto = xray || host_region.is_some();
            log!(
                Warn,
                "LAMBDA_XRAY_EXTENSION_OTLP_SIGV4={other:?} is not true|false; {}",
                if auto { "signing (X-Ray endpoint)" } else { "not signing" }
            );
            auto
        }
    };
    let signing = if sign {
        let missing = |name| SettingsError::Missing { name, needed_for: "SigV4 signing" };
        let region = host_region.map(str::to_owned).or(region).ok_or(missing("AWS_REGION"))?;
        let access_key = var("AWS_ACCESS_KEY_ID").ok_or(missing("AWS_ACCESS_KEY_ID"))?;
        let secret_key = var("AWS_SECRET_ACCESS_KEY").ok_or(missing("AWS_SECRET_ACCESS_KEY"))?;
        Some(Signing { region, access_key, secret_key, session_token: var("AWS_SESSION_TOKEN") })
    } else {
        None
    };
    Ok(OtlpSettings { endpoint, headers, timeout, gzip, signing, resource: resource(var) })
}

/// A URL the exporter can use: http or https, with a host.
fn parse_endpoint(value: &str) -> Result<Uri, SettingsError> {
    let uri: Uri = value.parse().map_err(|source| SettingsError::NotAUrl { value: value.to_owned(), source })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(SettingsError::NotHttp(value.to_owned())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(SettingsError::NoHost(value.to_owned()));
    }
    Ok(uri)
}

/// The region of `xray.<region>.amazonaws.com`.
pub fn xray_region(host: &str) -> Option<&str> {
    let region = host.strip_prefix("xray.")?.strip_suffix(".amazonaws.com")?;
    (!region.is_empty() && !region.contains('.')).then_some(region)
}

/// `k1=v1,k2=v2`, W3C-baggage-like, values percent-decoded. A bad entry is
/// skipped with a warning that names the key only (values are often secrets).
pub fn parse_headers(setting: &str, value: &str) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((key, raw)) = entry.split_once('=') else {
            log!(Warn, "{setting}: an entry without '=' is ignored");
            continue;
        };
        let key = key.trim();
        let decoded = percent_decode(raw.trim());
        let name = HeaderName::from_bytes(key.as_bytes());
        let value = decoded.as_deref().and_then(|v| HeaderValue::from_str(v).ok());
        match (name, value) {
            (Ok(name), Some(value)) => out.push((name, value)),
            _ => log!(Warn, "{setting}: the header {key:?} has an invalid name or value; ignored"),
        }
    }
    out
}

/// `%XX` decoding; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The resource: `OTEL_RESOURCE_ATTRIBUTES`, then the Lambda attributes of
/// the semantic conventions (`cloud.*`, `faas.*`, `aws.log.group.names`),
/// then `service.name` (`OTEL_SERVICE_NAME`, else the resource attribute,
/// else the function name), later entries winning.
fn resource(var: &impl Fn(&str) -> Option<String>) -> Vec<KeyValue> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};
    let mut attributes: Vec<KeyValue> = Vec::new();
    fn put(attributes: &mut Vec<KeyValue>, kv: KeyValue) {
        attributes.retain(|a| a.key != kv.key);
        attributes.push(kv);
    }
    if let Some(value) = var("OTEL_RESOURCE_ATTRIBUTES") {
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.split_once('=').and_then(|(k, v)| Some((k.trim(), percent_decode(v.trim())?))) {
                Some((key, value)) if !key.is_empty() => put(&mut attributes, string(key, value)),
                _ => log!(Warn, "OTEL_RESOURCE_ATTRIBUTES: an entry that is not key=value is ignored"),
            }
        }
    }
    put(&mut attributes, string("cloud.provider", "aws"));
    put(&mut attributes, string("cloud.platform", "aws_lambda"));
    for (env, key) in [
        ("AWS_REGION", "cloud.region"),
        ("AWS_LAMBDA_FUNCTION_NAME", "faas.name"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "faas.version"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "faas.instance"),
    ] {
        if let Some(value) = var(env) {
            put(&mut attributes, string(key, value));
        }
    }
    if let Some(mb) = var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|m| m.trim().parse::<i64>().ok()) {
        // semconv: faas.max_memory is in bytes.
        put(
            &mut attributes,
            KeyValue {
                key: "faas.max_memory".into(),
                value: Some(AnyValue { value: Some(Any::IntValue(mb.saturating_mul(1024 * 1024))) }),
            },
        );
    }
    if let Some(group) = var("AWS_LAMBDA_LOG_GROUP_NAME") {
        let values = vec![AnyValue { value: Some(Any::StringValue(group)) }];
        put(
            &mut attributes,
            KeyValue { key: "aws.log.group.names".into(), value: Some(AnyValue { value: Some(Any::ArrayValue(ArrayValue { values })) }) },
        );
    }
    let from_resource = attributes.iter().any(|a| a.key == "service.name");
    match var("OTEL_SERVICE_NAME").or_else(|| var("AWS_LAMBDA_FUNCTION_NAME")) {
        Some(name) if !from_resource || var("OTEL_SERVICE_NAME").is_some() => put(&mut attributes, string("service.name", name)),
        Some(_) => {}
        None if !from_resource => put(&mut attributes, string("service.name", "unknown_service")),
        None => {}
    }
    put(&mut attributes, string("telemetry.sdk.name", "lambda-xray-extension"));
    put(&mut attributes, string("telemetry.sdk.version", env!("CARGO_PKG_VERSION")));
    attributes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> (Destinations, Option<OtlpSettings>) {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        from_lookup(&|k: &str| map.get(k).cloned().filter(|v| !v.trim().is_empty()))
    }

    fn resource_value(settings: &OtlpSettings, key: &str) -> Option<String> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        settings.resource.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            Any::IntValue(i) => Some(i.to_string()),
            _ => Some("other".into()),
        })
    }

    #[test]
    fn default_is_daemon_only_even_with_an_endpoint() {
        let (d, s) = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]);
        assert_eq!(d, Destinations { daemon: true, otlp: false });
        assert!(s.is_none());
    }

    #[test]
    fn endpoints() {
        let (d, s) = read(&[("LAMBDA_XRAY_EXTENSION_EXPORT", "both"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
        assert_eq!(d, Destinations { daemon: true, otlp: true });
        let s = s.unwrap();
        assert_eq!(s.endpoint, "http://collector:4318/v1/traces");
        assert!(s.gzip);
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert!(s.signing.is_none());
        let (_, s) = read(&[
            ("LAMBDA_XRAY_EXTENSION_EXPORT", "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c.example/custom"),
        ]);
        assert_eq!(s.unwrap().endpoint, "https://c.example/custom");
        let (d, s) = read(&[("LAMBDA_XRAY_EXTENSION_EXPORT", "otlp")]);
        assert_eq!(d, Destinations { daemon: false, otlp: true });
        assert_eq!(s.unwrap().endpoint, DEFAULT_ENDPOINT);
    }

    #[test]
    fn bad_endpoint_falls_back_to_the_daemon() {
        for bad in ["not a url", "ftp://x/v1/traces", "/v1/traces"] {
            let (d, s) = read(&[("LAMBDA_XRAY_EXTENSION_EXPORT", "otlp"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", bad)]);
            assert_eq!(d, Destinations { daemon: true, otlp: false }, "{bad}");
            assert!(s.is_none());
        }
        let (d, _) = read(&[("LAMBDA_XRAY_EXTENSION_EXPORT", "nonsense")]);
        assert_eq!(d, Destinations { daemon: true, otlp: false });
    }

    #[test]
    fn xray_endpoint_is_derived_and_signed() {
        let creds = [("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_SECRET_ACCESS_KEY", "secret"), ("AWS_SESSION_TOKEN", "token")];
        let mut env = vec![("LAMBDA_XRAY_EXTENSION_EXPORT", "xray-otlp"), ("AWS_REGION", "eu-west-1")];
        env.extend(creds);
        let (d, s) = read(&env);
        assert_eq!(d, Destinations { daemon: false, otlp: true });
        let s = s.unwrap();
        assert_eq!(s.endpoint, "https://xray.eu-west-1.amazonaws.com/v1/traces");
        let signing = s.signing.unwrap();
        assert_eq!(signing.region, "eu-west-1");
        assert_eq!(signing.session_token.as_deref(), Some("token"));
        // Signing follows the host, and the override keeps signing for the region.
        let mut env = vec![
            ("LAMBDA_XRAY_EXTENSION_EXPORT", "otlp"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://xray.us-east-2.amazonaws.com/v1/traces"),
        ];
        env.extend(creds);
        assert_eq!(read(&env).1.unwrap().signing.unwrap().region, "us-east-2");
        let mut env = vec![
            ("LAMBDA_XRAY_EXTENSION_EXPORT", "xray-otlp"),
            ("AWS_REGION", "ap-south-1"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces"),
        ];
        env.extend(creds);
        assert_eq!(read(&env).1.unwrap().signing.unwrap().region, "ap-south-1");
        // No credentials: off, with the daemon instead.
        let (d, s) = read(&[("LAMBDA_XRAY_EXTENSION_EXPORT", "xray-otlp"), ("AWS_REGION", "eu-west-1")]);
        assert_eq!(d, Destinations { daemon: true, otlp: false });
        assert!(s.is_none());
        assert_eq!(xray_region("xray.eu-west-1.amazonaws.com"), Some("eu-west-1"));
        assert_eq!(xray_region("xray.amazonaws.com"), None);
        assert_eq!(xray_region("evil.xray.eu-west-1.amazonaws.com"), None);
    }

    #[test]
    fn headers_timeout_compression() {
        let (_, s) = read(&[
            ("LAMBDA_XRAY_EXTENSION_EXPORT", "otlp"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b%3D, x-team = core ,broken, bad name=v,x-pct=%zz"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=traces"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        let s = s.unwrap();
        let headers: Vec<(String, String)> = s.headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned())).collect();
        assert_eq!(headers, [("api-key".to_owned(), "a b=".to_owned()), ("x-team".to_owned(), "traces".to_owned())]);
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert!(!s.gzip);
        let (_, s) = read(&[
            ("LAMBDA_XRAY_EXTENSION_EXPORT", "otlp"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
        ]);
        let s = s.unwrap();
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert!(s.gzip);
    }

    #[test]
    fn lambda_resource() {
        let (_, s) = read(&[
            ("LAMBDA_XRAY_EXTENSION_EXPORT", "otlp"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_LAMBDA_FUNCTION_NAME", "orders"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/12/01/[$LATEST]abc"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,service.name=from-resource,cloud.provider=gcp,junk"),
        ]);
        let s = s.unwrap();
        assert_eq!(resource_value(&s, "service.name").unwrap(), "from-resource", "the resource setting beats the function name");
        assert_eq!(resource_value(&s, "cloud.provider").unwrap(), "aws");
        assert_eq!(resource_value(&s, "cloud.platform").unwrap(), "aws_lambda");
        assert_eq!(resource_value(&s, "cloud.region").unwrap(), "eu-west-1");
        assert_eq!(resource_value(&s, "faas.name").unwrap(), "orders");
        assert_eq!(resource_value(&s, "faas.version").unwrap(), "$LATEST");
        assert_eq!(resource_value(&s, "faas.instance").unwrap(), "2026/12/01/[$LATEST]abc");
        assert_eq!(resource_value(&s, "faas.max_memory").unwrap(), "134217728");
        assert_eq!(resource_value(&s, "deployment.environment.name").unwrap(), "prod");
        let (_, s) =
            read(&[("LAMBDA_XRAY_EXTENSION_EXPORT", "otlp"), ("AWS_LAMBDA_FUNCTION_NAME", "orders"), ("OTEL_SERVICE_NAME", "svc")]);
        assert_eq!(resource_value(&s.unwrap(), "service.name").unwrap(), "svc");
        let (_, s) = read(&[("LAMBDA_XRAY_EXTENSION_EXPORT", "otlp"), ("AWS_LAMBDA_FUNCTION_NAME", "orders")]);
        assert_eq!(resource_value(&s.unwrap(), "service.name").unwrap(), "orders");
    }
}
