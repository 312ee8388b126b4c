//! Settings, read once from the environment (every variable is listed in the README).

use std::time::Duration;

use lambda_xray_wire::DEFAULT_EXTENSION_MARKER;

/// What to do when code asks for the current trace context and there is none
/// (`AWS_XRAY_CONTEXT_MISSING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextMissing {
    /// `RUNTIME_ERROR`: the infallible API (`begin_subsegment`, `trace`,
    /// `in_subsegment`) panics; the `Result` API returns `Err(ContextMissing)`.
    RuntimeError,
    /// `LOG_ERROR` (default): log an error and do nothing.
    LogError,
    /// `IGNORE_ERROR`: do nothing, silently.
    IgnoreError,
}

/// Library settings. [`Config::from_env`] reads them; the handler layer and
/// [`crate::Emitter`] use them. Start from [`Config::default`] or
/// [`Config::from_env`] and set fields: more may be added.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// `AWS_XRAY_SDK_ENABLED` (default true) and not `POWERTOOLS_TRACE_DISABLED`.
    pub enabled: bool,
    /// `AWS_XRAY_CONTEXT_MISSING`.
    pub context_missing: ContextMissing,
    /// `AWS_XRAY_NOOP_ID` (default true): unsampled entities get the all-zero id.
    pub noop_ids: bool,
    /// `AWS_XRAY_DAEMON_ADDRESS`, raw (parsed by the emitter).
    pub daemon_address: Option<String>,
    /// `LAMBDA_XRAY_EXTENSION_ADDRESS`: send to the extension at this address.
    pub extension_address: Option<String>,
    /// `LAMBDA_XRAY_EXTENSION_MARKER`: file the extension writes its address to.
    pub extension_marker: String,
    /// `POWERTOOLS_SERVICE_NAME` (default `service_undefined`).
    pub service_name: String,
    /// `POWERTOOLS_TRACER_CAPTURE_RESPONSE` (default true).
    pub capture_response: bool,
    /// `POWERTOOLS_TRACER_CAPTURE_ERROR` (default true).
    pub capture_error: bool,
    /// `LAMBDA_XRAY_STREAM_MAX_CHILDREN` (default 100): an open subsegment with
    /// more completed children than this sends them out as their own documents.
    pub stream_max_children: usize,
    /// `LAMBDA_XRAY_STREAM_MAX_BYTES` (default 61440): same, by estimated size.
    pub stream_max_bytes: usize,
    /// `LAMBDA_XRAY_DEADLINE_MARGIN_MS` (default 100): how long before the
    /// invocation deadline completed work is flushed.
    pub deadline_margin: Duration,
    /// `LAMBDA_XRAY_HANDLER_NAME`, else `_HANDLER` unless it is `bootstrap`,
    /// else `handler`: the subsegment is named `## <handler_name>`.
    pub handler_name: String,
}

/// Parses a boolean the way the reference SDKs do: y/yes/t/true/on/1 and
/// n/no/f/false/off/0, any case. Anything else is `None`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "t" | "true" | "on" | "1" => Some(true),
        "n" | "no" | "f" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

impl Config {
    /// Reads every setting from the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get` (for tests and for callers with their own source).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let flag = |name: &str, default: bool| match get(name) {
            None => default,
            Some(v) => parse_bool(&v).unwrap_or_else(|| {
                tracing::warn!(target: "lambda_xray", "{name}={v:?} is not a boolean; using {default}");
                default
            }),
        };
        let number = |name: &str, default: u64| match get(name) {
            None => default,
            Some(v) => v.trim().parse::<u64>().unwrap_or_else(|_| {
                tracing::warn!(target: "lambda_xray", "{name}={v:?} is not a number; using {default}");
                default
            }),
        };
        let context_missing = match get("AWS_XRAY_CONTEXT_MISSING").as_deref().map(str::trim) {
            None | Some("LOG_ERROR") => ContextMissing::LogError,
            Some("RUNTIME_ERROR") => ContextMissing::RuntimeError,
            Some("IGNORE_ERROR") => ContextMissing::IgnoreError,
            Some(other) => {
                tracing::warn!(target: "lambda_xray", "AWS_XRAY_CONTEXT_MISSING={other:?} is not RUNTIME_ERROR, LOG_ERROR or IGNORE_ERROR; using LOG_ERROR");
                ContextMissing::LogError
            }
        };
        let handler_name = get("LAMBDA_XRAY_HANDLER_NAME")
            .or_else(|| get("_HANDLER").filter(|h| h != "bootstrap"))
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| "handler".to_owned());
        Config {
            enabled: flag("AWS_XRAY_SDK_ENABLED", true) && !flag("POWERTOOLS_TRACE_DISABLED", false),
            context_missing,
            noop_ids: flag("AWS_XRAY_NOOP_ID", true),
            daemon_address: get("AWS_XRAY_DAEMON_ADDRESS").filter(|s| !s.trim().is_empty()),
            extension_address: get("LAMBDA_XRAY_EXTENSION_ADDRESS").filter(|s| !s.trim().is_empty()),
            extension_marker: get("LAMBDA_XRAY_EXTENSION_MARKER").unwrap_or_else(|| DEFAULT_EXTENSION_MARKER.to_owned()),
            service_name: get("POWERTOOLS_SERVICE_NAME").filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "service_undefined".to_owned()),
            capture_response: flag("POWERTOOLS_TRACER_CAPTURE_RESPONSE", true),
            capture_error: flag("POWERTOOLS_TRACER_CAPTURE_ERROR", true),
            stream_max_children: number("LAMBDA_XRAY_STREAM_MAX_CHILDREN", 100) as usize,
            stream_max_bytes: number("LAMBDA_XRAY_STREAM_MAX_BYTES", 60 * 1024) as usize,
            deadline_margin: Duration::from_millis(number("LAMBDA_XRAY_DEADLINE_MARGIN_MS", 100)),
            handler_name,
        }
    }
}

impl Default for Config {
    /// The defaults, ignoring the environment.
    fn default() -> Self {
        Self::from_lookup(|_| None)
    }
}

static GLOBAL: std::sync::OnceLock<Config> = std::sync::OnceLock::new();

/// The process-wide settings: read from the environment on first use.
pub(crate) fn global() -> &'static Config {
    GLOBAL.get_or_init(Config::from_env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = with(&[]);
        assert!(c.enabled && c.noop_ids && c.capture_response && c.capture_error);
        assert_eq!(c.context_missing, ContextMissing::LogError);
        assert_eq!(c.service_name, "service_undefined");
        assert_eq!(c.handler_name, "handler");
        assert_eq!(c.stream_max_children, 100);
    }

    #[test]
    fn switches() {
        assert!(!with(&[("AWS_XRAY_SDK_ENABLED", "off")]).enabled);
        assert!(!with(&[("POWERTOOLS_TRACE_DISABLED", "true")]).enabled);
        assert!(with(&[("AWS_XRAY_SDK_ENABLED", "banana")]).enabled);
        assert!(!with(&[("AWS_XRAY_NOOP_ID", "false")]).noop_ids);
        assert_eq!(with(&[("AWS_XRAY_CONTEXT_MISSING", "RUNTIME_ERROR")]).context_missing, ContextMissing::RuntimeError);
        assert_eq!(with(&[("AWS_XRAY_CONTEXT_MISSING", "IGNORE_ERROR")]).context_missing, ContextMissing::IgnoreError);
        assert_eq!(with(&[("AWS_XRAY_CONTEXT_MISSING", "nope")]).context_missing, ContextMissing::LogError);
        assert_eq!(with(&[("_HANDLER", "bootstrap")]).handler_name, "handler");
        assert_eq!(with(&[("_HANDLER", "orders")]).handler_name, "orders");
        assert_eq!(with(&[("_HANDLER", "x"), ("LAMBDA_XRAY_HANDLER_NAME", "y")]).handler_name, "y");
        assert!(!with(&[("POWERTOOLS_TRACER_CAPTURE_RESPONSE", "0")]).capture_response);
    }
}
