//! Settings, all read from environment variables once at startup.
//!
//! Every setting has a default, so adding the layer is enough. A value that
//! does not parse is logged and replaced by its default: a typo must never
//! stop the function from running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::log::Level;
use crate::otlp::OtlpSettings;
pub use crate::otlp::settings::Destinations;

/// Where the intake listens unless `LAMBDA_XRAY_EXTENSION_LISTEN` says otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 2001));
/// The marker file the function-side library reads to find the extension.
pub const DEFAULT_MARKER: &str = lambda_xray_wire::DEFAULT_EXTENSION_MARKER;
/// The X-Ray daemon's address inside Lambda.
pub const DEFAULT_DAEMON: &str = "169.254.79.129:2000";
/// The daemon reads at most 64 KiB per datagram; anything larger is lost.
pub const MAX_DATAGRAM: usize = lambda_xray_wire::MAX_DATAGRAM_BYTES;
/// Port of the Telemetry API listener. Not the `lambda-extension` crate's 9003,
/// which other extensions built on it use too.
pub const DEFAULT_TELEMETRY_PORT: u16 = 2002;

/// When buffered documents go to the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushMode {
    /// After the invocation's `platform.runtimeDone`, before calling `next`.
    EndOfInvocation,
    /// Every interval, while the sandbox is thawed; never delays `next`.
    Periodic(Duration),
    /// As soon as each document arrives; never delays `next`.
    Continuous,
}

/// All settings of the extension.
#[derive(Clone, Debug)]
pub struct Config {
    /// Intake UDP address (loopback only).
    pub listen: SocketAddr,
    /// Discovery marker path.
    pub marker: PathBuf,
    /// Daemon address forced by `LAMBDA_XRAY_EXTENSION_DAEMON_ADDRESS`; when set,
    /// the function's control message is ignored.
    pub daemon_override: Option<String>,
    /// Upper bound of buffered document bytes.
    pub buffer_bytes: usize,
    /// Largest accepted datagram.
    pub max_datagram: usize,
    /// Flush policy.
    pub flush: FlushMode,
    /// Telemetry API listener port; 0 picks a free one.
    pub telemetry_port: u16,
    /// Where documents go (`LAMBDA_XRAY_EXTENSION_EXPORT`).
    pub destinations: Destinations,
    /// The OTLP exporter's settings, when OTLP is a destination.
    pub otlp: Option<OtlpSettings>,
}

/// Reads the settings through `get` (so tests need not mutate the process
/// environment) and applies the log level.
pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Config {
    let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());

    let log_level = match var("LAMBDA_XRAY_EXTENSION_LOG_LEVEL") {
        None => Level::Info,
        Some(v) => Level::parse(&v).unwrap_or_else(|| {
            log!(Warn, "LAMBDA_XRAY_EXTENSION_LOG_LEVEL={v:?} is not a level; using info");
            Level::Info
        }),
    };
    crate::log::set_max_level(log_level);

    let listen = match var("LAMBDA_XRAY_EXTENSION_LISTEN") {
        None => DEFAULT_LISTEN,
        Some(v) => match v.trim().parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => addr,
            Ok(addr) => {
                log!(Error, "LAMBDA_XRAY_EXTENSION_LISTEN={addr} is not a loopback address; refusing it and listening on {DEFAULT_LISTEN}");
                DEFAULT_LISTEN
            }
            Err(_) => {
                log!(Error, "LAMBDA_XRAY_EXTENSION_LISTEN={v:?} is not ip:port; listening on {DEFAULT_LISTEN}");
                DEFAULT_LISTEN
            }
        },
    };

    let marker = var("LAMBDA_XRAY_EXTENSION_MARKER").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_MARKER));

    let daemon_override = var("LAMBDA_XRAY_EXTENSION_DAEMON_ADDRESS");

    let buffer_bytes = number(&var, "LAMBDA_XRAY_EXTENSION_BUFFER_BYTES")
        .filter(|&n| n > 0)
        .unwrap_or_else(|| default_buffer_bytes(number(&var, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE").unwrap_or(128)));

    let max_datagram =
        number(&var, "LAMBDA_XRAY_EXTENSION_MAX_DATAGRAM_BYTES").filter(|&n| n > 0).map_or(MAX_DATAGRAM, |n| n.min(MAX_DATAGRAM));

    let interval = number(&var, "LAMBDA_XRAY_EXTENSION_FLUSH_INTERVAL_MS").filter(|&n| n > 0).unwrap_or(1000);
    let flush = match var("LAMBDA_XRAY_EXTENSION_FLUSH").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("end-of-invocation") => FlushMode::EndOfInvocation,
        Some("periodic") => FlushMode::Periodic(Duration::from_millis(interval as u64)),
        Some("continuous") => FlushMode::Continuous,
        Some(other) => {
            log!(Warn, "LAMBDA_XRAY_EXTENSION_FLUSH={other:?} is not end-of-invocation|periodic|continuous; using end-of-invocation");
            FlushMode::EndOfInvocation
        }
    };

    let telemetry_port =
        number(&var, "LAMBDA_XRAY_EXTENSION_TELEMETRY_PORT").and_then(|n| u16::try_from(n).ok()).unwrap_or(DEFAULT_TELEMETRY_PORT);

    let (destinations, otlp) = crate::otlp::settings::from_lookup(&var);

    Config { listen, marker, daemon_override, buffer_bytes, max_datagram, flush, telemetry_port, destinations, otlp }
}

/// 3 % of the function's memory, like the X-Ray daemon's own buffer, kept
/// between 1 MiB and 16 MiB: about 3.8 MiB for a 128 MB function.
pub fn default_buffer_bytes(memory_mb: usize) -> usize {
    (memory_mb * 1024 * 1024 * 3 / 100).clamp(1024 * 1024, 16 * 1024 * 1024)
}

fn number(var: &impl Fn(&str) -> Option<String>, name: &str) -> Option<usize> {
    let value = var(name)?;
    match value.trim().parse::<usize>() {
        Ok(n) => Some(n),
        Err(_) => {
            log!(Warn, "{name}={value:?} is not a whole number; using the default");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]);
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.marker, PathBuf::from(DEFAULT_MARKER));
        assert_eq!(c.flush, FlushMode::EndOfInvocation);
        assert_eq!(c.buffer_bytes, default_buffer_bytes(128));
        assert_eq!(c.max_datagram, MAX_DATAGRAM);
        assert!(c.daemon_override.is_none());
        assert_eq!(c.destinations, Destinations { daemon: true, otlp: false });
        assert!(c.otlp.is_none());
    }

    #[test]
    fn refuses_non_loopback_listen() {
        assert_eq!(config(&[("LAMBDA_XRAY_EXTENSION_LISTEN", "0.0.0.0:2001")]).listen, DEFAULT_LISTEN);
        assert_eq!(config(&[("LAMBDA_XRAY_EXTENSION_LISTEN", "127.0.0.1:0")]).listen.port(), 0);
    }

    #[test]
    fn flush_modes_and_bad_values() {
        let c = config(&[
            ("LAMBDA_XRAY_EXTENSION_FLUSH", "periodic"),
            ("LAMBDA_XRAY_EXTENSION_FLUSH_INTERVAL_MS", "250"),
            ("LAMBDA_XRAY_EXTENSION_BUFFER_BYTES", "lots"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
        ]);
        assert_eq!(c.flush, FlushMode::Periodic(Duration::from_millis(250)));
        assert_eq!(c.buffer_bytes, default_buffer_bytes(1024));
        assert_eq!(config(&[("LAMBDA_XRAY_EXTENSION_FLUSH", "sometimes")]).flush, FlushMode::EndOfInvocation);
    }

    #[test]
    fn buffer_default_scales_with_memory() {
        assert_eq!(default_buffer_bytes(128), 4_026_531);
        assert_eq!(default_buffer_bytes(10_240), 16 * 1024 * 1024);
        assert_eq!(default_buffer_bytes(1), 1024 * 1024);
    }
}
