//! A minimal levelled logger writing one line per message to stderr.
//!
//! Lambda sends an extension's stderr to CloudWatch Logs, so stderr is all an
//! extension needs; a full `tracing` subscriber would cost startup time and
//! binary size for nothing.

use std::sync::atomic::{AtomicU8, Ordering};

/// Severity of a log line; lower is more severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing is logged.
    Off = 0,
    /// Failures that lose data or disable the extension.
    Error = 1,
    /// Recoverable problems: bad settings, drops, an unreachable daemon.
    Warn = 2,
    /// Startup and shutdown summaries (the default).
    Info = 3,
    /// Per-invocation detail.
    Debug = 4,
}

impl Level {
    /// Parses a level name, case-insensitively.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "off" | "none" => Some(Self::Off),
            "error" => Some(Self::Error),
            "warn" | "warning" => Some(Self::Warn),
            "info" => Some(Self::Info),
            "debug" | "trace" => Some(Self::Debug),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Off => "OFF",
            Self::Error => "ERROR",
            Self::Warn => "WARN",
            Self::Info => "INFO",
            Self::Debug => "DEBUG",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most verbose level that is still written.
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether a message at `level` would be written.
pub fn enabled(level: Level) -> bool {
    level != Level::Off && level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Writes one line; use the `log!` macro instead.
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    if enabled(level) {
        eprintln!("[lambda-xray-extension] {} {}", level.label(), args);
    }
}

/// Logs a formatted line at the given level: `log!(Warn, "x = {}", x)`.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::write($crate::log::Level::$level, format_args!($($arg)+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels() {
        assert_eq!(Level::parse(" WARN "), Some(Level::Warn));
        assert_eq!(Level::parse("off"), Some(Level::Off));
        assert_eq!(Level::parse("loud"), None);
    }
}
