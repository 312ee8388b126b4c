//! Datagrams: the X-Ray daemon's UDP format, the function's control
//! message, and how the extension classifies what it receives.
//!
//! One datagram is a header line, `\n`, and one JSON body. The header is
//! parsed as JSON (as the daemon does), so whitespace does not matter.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The header the daemon expects in front of every document.
pub const DOCUMENT_HEADER: &str = r#"{"format":"json","version":1}"#;
/// The largest datagram the X-Ray daemon reads (and the extension accepts).
pub const MAX_DATAGRAM_BYTES: usize = 64 * 1024;
/// Where the X-Ray daemon listens unless `AWS_XRAY_DAEMON_ADDRESS` says otherwise.
pub const DEFAULT_DAEMON_ADDRESS: &str = "127.0.0.1:2000";
/// The file the extension writes its intake address to (`host:port`), and
/// functions read to find it, unless `LAMBDA_XRAY_EXTENSION_MARKER` names another.
pub const DEFAULT_EXTENSION_MARKER: &str = "/tmp/.lambda-xray-extension";
/// The abstract Unix datagram socket name (Linux; no file behind it) on which
/// an extension whose UDP intake is `udp` also listens: the same datagrams,
/// sent for less (no IP stack on the way). A library that finds nobody bound
/// there (an older extension) sends over UDP, and an older library never
/// looks, so neither side needs the other's version.
///
/// ```
/// let udp = "127.0.0.1:2001".parse().expect("address");
/// assert_eq!(lambda_xray_wire::unix_intake_name(udp), "lambda-xray-intake@127.0.0.1:2001");
/// ```
pub fn unix_intake_name(udp: std::net::SocketAddr) -> String {
    format!("lambda-xray-intake@{udp}")
}

/// `format` of the function's control message header.
pub const CONTROL_FORMAT: &str = "lambda-xray-control";
/// The header line of a control datagram.
pub const CONTROL_HEADER: &str = r#"{"format":"lambda-xray-control","version":1}"#;

/// What one datagram turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram {
    /// A segment document in daemon format; forward the datagram as it is.
    Document,
    /// A document whose header also names the invocation it ends (lambda-xray's
    /// `invocation_done` in the header line); forward `frame(body)`: the
    /// daemon's plain header, then the body from `body_at`.
    LastDocument {
        /// The invocation the document ends.
        request_id: String,
        /// Where the document's JSON starts in the datagram.
        body_at: usize,
    },
    /// The function's control message.
    Control(ControlMessage<'static>),
}

/// Why a datagram was rejected.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Rejection {
    /// Larger than the accepted maximum.
    Oversized,
    /// Not UTF-8.
    NotUtf8,
    /// No `\n` after the header, or the header is not the JSON we accept.
    BadHeader,
    /// The body is not a JSON object with string `id` and `trace_id`.
    BadDocument,
    /// A control header with a body we do not understand.
    BadControl,
}

/// Longest request id accepted in a control message (Lambda's are 36 characters).
pub const MAX_REQUEST_ID: usize = 256;

/// Sent by the function-side library: where the daemon is, and that an
/// invocation's documents are all sent. At least one field is present.
/// Borrowed when sent (no allocation per invocation), owned when received
/// ([`Datagram::Control`]).
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlMessage<'a> {
    /// The function's `AWS_XRAY_DAEMON_ADDRESS` value, either `host:port` or
    /// `tcp:host:port udp:host:port`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub daemon_address: Option<Cow<'a, str>>,
    /// The request id of an invocation whose documents have all been sent
    /// (this datagram follows them on the same socket).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub invocation_done: Option<Cow<'a, str>>,
}

impl ControlMessage<'_> {
    /// The same message, owning its strings.
    pub fn into_owned(self) -> ControlMessage<'static> {
        ControlMessage {
            daemon_address: self.daemon_address.map(|a| Cow::Owned(a.into_owned())),
            invocation_done: self.invocation_done.map(|d| Cow::Owned(d.into_owned())),
        }
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    format: Cow<'a, str>,
    version: u64,
    /// On a document: it is also the last of this invocation (lambda-xray
    /// saves a datagram this way). Taken off before forwarding.
    #[serde(borrow, default)]
    invocation_done: Option<Cow<'a, str>>,
}

/// Only the fields we check; serde still checks the whole body is valid JSON.
#[derive(Deserialize)]
struct DocumentProbe<'a> {
    #[serde(borrow)]
    #[allow(dead_code)] // Read only to check it is a string.
    id: Cow<'a, str>,
    #[serde(borrow)]
    #[allow(dead_code)]
    trace_id: Cow<'a, str>,
}

/// Classifies one received datagram of `len` bytes (the receive buffer is one
/// byte larger than `max_len`, so a longer datagram shows as `len > max_len`).
pub fn classify(datagram: &[u8], max_len: usize) -> Result<Datagram, Rejection> {
    if datagram.len() > max_len {
        return Err(Rejection::Oversized);
    }
    let text = std::str::from_utf8(datagram).map_err(|_| Rejection::NotUtf8)?;
    let (header, body) = text.split_once('\n').ok_or(Rejection::BadHeader)?;
    let header: Header<'_> = serde_json::from_str(header).map_err(|_| Rejection::BadHeader)?;
    if header.version != 1 {
        return Err(Rejection::BadHeader);
    }
    match header.format.as_ref() {
        "json" => {
            // A struct also deserialises from a JSON array; only objects are documents.
            if !body.trim_start().starts_with('{') {
                return Err(Rejection::BadDocument);
            }
            serde_json::from_str::<DocumentProbe<'_>>(body).map_err(|_| Rejection::BadDocument)?;
            match header.invocation_done {
                None => Ok(Datagram::Document),
                Some(id) if id.is_empty() || id.len() > MAX_REQUEST_ID => Err(Rejection::BadHeader),
                Some(id) => Ok(Datagram::LastDocument { request_id: id.into_owned(), body_at: text.len() - body.len() }),
            }
        }
        CONTROL_FORMAT => match serde_json::from_str::<ControlMessage>(body) {
            Ok(m) if m.invocation_done.as_ref().is_some_and(|id| id.is_empty() || id.len() > MAX_REQUEST_ID) => Err(Rejection::BadControl),
            Ok(m) if m.daemon_address.is_some() || m.invocation_done.is_some() => Ok(Datagram::Control(m.into_owned())),
            _ => Err(Rejection::BadControl),
        },
        _ => Err(Rejection::BadHeader),
    }
}

/// Frames a document for the daemon: header, `\n`, body.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(DOCUMENT_HEADER.len() + 1 + body.len());
    datagram.extend_from_slice(DOCUMENT_HEADER.as_bytes());
    datagram.push(b'\n');
    datagram.extend_from_slice(body);
    datagram
}

/// The UDP part of an `AWS_XRAY_DAEMON_ADDRESS` value, as `host:port`.
///
/// Accepts `host:port` and `tcp:host:port udp:host:port` (either order).
pub fn daemon_udp_part(value: &str) -> Option<&str> {
    let value = value.trim();
    let parts: Vec<&str> = value.split_whitespace().collect();
    match parts.as_slice() {
        [single] if !single.starts_with("tcp:") && !single.starts_with("udp:") => Some(single),
        [a, b] => [a, b].into_iter().find_map(|p| p.strip_prefix("udp:")).filter(|_| a.starts_with("tcp:") || b.starts_with("tcp:")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65536;

    fn golden(n: u32) -> Vec<u8> {
        let path = format!("{}/../fixtures/golden/raw/{n:03}.dgram", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap_or_default()
    }

    #[test]
    fn accepts_every_golden_datagram() {
        for n in 1..=7 {
            let d = golden(n);
            assert!(!d.is_empty(), "golden {n} missing");
            assert_eq!(classify(&d, MAX), Ok(Datagram::Document), "golden {n}");
        }
    }

    #[test]
    fn a_document_can_end_its_invocation() {
        let d = b"{\"format\":\"json\",\"version\":1,\"invocation_done\":\"r-1\"}\n{\"id\":\"a\",\"trace_id\":\"b\"}";
        let Ok(Datagram::LastDocument { request_id, body_at }) = classify(d, MAX) else { panic!("{:?}", classify(d, MAX)) };
        assert_eq!(request_id, "r-1");
        assert_eq!(frame(&d[body_at..]), b"{\"format\":\"json\",\"version\":1}\n{\"id\":\"a\",\"trace_id\":\"b\"}".to_vec());
        let empty = b"{\"format\":\"json\",\"version\":1,\"invocation_done\":\"\"}\n{\"id\":\"a\",\"trace_id\":\"b\"}";
        assert_eq!(classify(empty, MAX), Err(Rejection::BadHeader));
    }

    #[test]
    fn header_is_whitespace_insensitive() {
        let d = b"{ \"version\" : 1 , \"format\" : \"json\" }\n{\"id\":\"a\",\"trace_id\":\"b\"}";
        assert_eq!(classify(d, MAX), Ok(Datagram::Document));
    }

    #[test]
    fn rejects_garbage() {
        let cases: &[(&[u8], Rejection)] = &[
            (b"", Rejection::BadHeader),
            (b"hello", Rejection::BadHeader),
            (b"{\"format\":\"json\",\"version\":1}", Rejection::BadHeader),
            (b"{\"format\":\"json\",\"version\":2}\n{}", Rejection::BadHeader),
            (b"{\"format\":\"xml\",\"version\":1}\n{}", Rejection::BadHeader),
            (b"{\"format\":\"json\",\"version\":1}\n[1,2]", Rejection::BadDocument),
            (b"{\"format\":\"json\",\"version\":1}\n{\"id\":1,\"trace_id\":\"t\"}", Rejection::BadDocument),
            (b"{\"format\":\"json\",\"version\":1}\n{\"id\":\"a\"}", Rejection::BadDocument),
            (b"{\"format\":\"json\",\"version\":1}\n{\"id\":\"a\",\"trace_id\":\"b\"} x", Rejection::BadDocument),
            (b"{\"format\":\"json\",\"version\":1}\n\xff\xfe", Rejection::NotUtf8),
            (b"{\"format\":\"lambda-xray-control\",\"version\":1}\n{}", Rejection::BadControl),
        ];
        for (d, want) in cases {
            assert_eq!(classify(d, MAX), Err(*want), "{:?}", String::from_utf8_lossy(d));
        }
        assert_eq!(classify(&[b' '; 100], 99), Err(Rejection::Oversized));
    }

    #[test]
    fn control_message() {
        let control = |body: &str| classify(format!("{{\"format\":\"lambda-xray-control\",\"version\":1}}\n{body}").as_bytes(), MAX);
        assert_eq!(
            control(r#"{"daemon_address":"127.0.0.1:3000"}"#),
            Ok(Datagram::Control(ControlMessage { daemon_address: Some("127.0.0.1:3000".into()), invocation_done: None }))
        );
        assert_eq!(
            control(r#"{"invocation_done":"8476a536-e9f4-11e8-9739-2dfe598c3fcd"}"#),
            Ok(Datagram::Control(ControlMessage {
                daemon_address: None,
                invocation_done: Some("8476a536-e9f4-11e8-9739-2dfe598c3fcd".into())
            }))
        );
        for bad in [r#"{"invocation_done":""}"#, r#"{"invocation_done":7}"#, r#"{"other":"x"}"#, "[]"] {
            assert_eq!(control(bad), Err(Rejection::BadControl), "{bad}");
        }
        assert_eq!(control(&format!(r#"{{"invocation_done":"{}"}}"#, "a".repeat(MAX_REQUEST_ID + 1))), Err(Rejection::BadControl));
    }

    #[test]
    fn daemon_address_forms() {
        assert_eq!(daemon_udp_part("127.0.0.1:2000"), Some("127.0.0.1:2000"));
        assert_eq!(daemon_udp_part("tcp:127.0.0.1:2000 udp:127.0.0.2:2001"), Some("127.0.0.2:2001"));
        assert_eq!(daemon_udp_part("udp:10.0.0.1:2001 tcp:10.0.0.1:2000"), Some("10.0.0.1:2001"));
        assert_eq!(daemon_udp_part("udp:10.0.0.1:2001"), None);
        assert_eq!(daemon_udp_part("a b c"), None);
    }

    #[test]
    fn the_header_constants_are_what_classify_reads() {
        let control = format!(
            "{CONTROL_HEADER}\n{}",
            serde_json::to_string(&ControlMessage { invocation_done: Some("r".into()), ..Default::default() }).unwrap_or_default()
        );
        assert!(matches!(classify(control.as_bytes(), MAX), Ok(Datagram::Control(_))));
        assert!(CONTROL_HEADER.contains(CONTROL_FORMAT));
        assert_eq!(classify(&frame(br#"{"id":"a","trace_id":"b"}"#), MAX_DATAGRAM_BYTES), Ok(Datagram::Document));
    }

    #[test]
    fn frame_adds_header() {
        assert_eq!(frame(b"{}"), b"{\"format\":\"json\",\"version\":1}\n{}".to_vec());
    }
}
