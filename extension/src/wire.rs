//! The wire format, from `lambda-xray-wire` (shared with the library), and
//! resolving the daemon's address.

use std::net::SocketAddr;

pub use lambda_xray_wire::{Datagram, classify, daemon_udp_part, frame};

/// Resolves a daemon address value to a socket address.
pub async fn resolve_daemon(value: &str) -> Option<SocketAddr> {
    let host_port = daemon_udp_part(value)?;
    if let Ok(addr) = host_port.parse::<SocketAddr>() {
        return Some(addr);
    }
    // A host name (e.g. `localhost:2000`): rare, so the lookup cost is fine.
    let lookup = tokio::net::lookup_host(host_port);
    match tokio::time::timeout(std::time::Duration::from_secs(1), lookup).await {
        Ok(Ok(mut addrs)) => addrs.next(),
        _ => None,
    }
}
