//! The `X-Amzn-Trace-Id` header: `Root=...;Parent=...;Sampled=...;Other=...`.
//!
//! Parsing is strict: anything that is not exactly a well-formed header is
//! rejected as a whole, and callers treat a rejected header as "not traced".
//! Unknown keys (such as `Lineage`) are kept, in order, so they can be passed on.

use std::fmt;
use std::str::FromStr;

use crate::id::{EntityId, TraceId};

/// Longest header accepted. Real headers are well under 256 bytes; anything
/// this long is junk and is rejected without further work.
pub const MAX_HEADER_LEN: usize = 2048;

/// The sampling decision carried by a trace header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingDecision {
    /// `Sampled=1`: record and send.
    Sampled,
    /// `Sampled=0`: record nothing, but propagate the decision.
    NotSampled,
    /// `Sampled=?`: the callee is asked to decide.
    Requested,
    /// No `Sampled` key.
    Unknown,
}

impl SamplingDecision {
    fn as_header_value(self) -> Option<&'static str> {
        match self {
            SamplingDecision::Sampled => Some("1"),
            SamplingDecision::NotSampled => Some("0"),
            SamplingDecision::Requested => Some("?"),
            SamplingDecision::Unknown => None,
        }
    }
}

/// Why a header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Empty or whitespace only.
    Empty,
    /// Longer than [`MAX_HEADER_LEN`].
    TooLong,
    /// Contains a byte that is not printable ASCII.
    NotAscii,
    /// A `key=value` part is missing `=`, or has an empty or invalid key or value.
    MalformedPart,
    /// The same key appears twice.
    DuplicateKey(String),
    /// `Root` is not `1-<8 hex>-<24 hex>`.
    InvalidRoot,
    /// `Parent` is not 16 hex digits.
    InvalidParent,
    /// `Sampled` is not `1`, `0` or `?`.
    InvalidSampled,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Empty => f.write_str("trace header is empty"),
            HeaderError::TooLong => write!(f, "trace header is longer than {MAX_HEADER_LEN} bytes"),
            HeaderError::NotAscii => f.write_str("trace header contains non-printable or non-ASCII bytes"),
            HeaderError::MalformedPart => f.write_str("trace header has a part that is not key=value"),
            HeaderError::DuplicateKey(k) => write!(f, "trace header repeats the key {k}"),
            HeaderError::InvalidRoot => f.write_str("trace header Root is not a valid trace id"),
            HeaderError::InvalidParent => f.write_str("trace header Parent is not 16 hex digits"),
            HeaderError::InvalidSampled => f.write_str("trace header Sampled is not 1, 0 or ?"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// A parsed `X-Amzn-Trace-Id` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeader {
    root: Option<TraceId>,
    parent: Option<EntityId>,
    sampled: SamplingDecision,
    /// Other keys, in the order they appeared (`Self` is dropped).
    extra: Vec<(Box<str>, Box<str>)>,
}

/// Byte classes, one table lookup per byte: a header is checked on every invocation.
const ALLOWED: u8 = 1; // printable ASCII, space or tab: what a header may hold
const VALUE: u8 = 2; // printable ASCII but `;`
const KEY: u8 = 4; // letters, digits, `-`, `_`
const CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if b.is_ascii_graphic() || b == b' ' || b == b'\t' {
            class |= ALLOWED;
        }
        if b.is_ascii_graphic() && b != b';' {
            class |= VALUE;
        }
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            class |= KEY;
        }
        table[i] = class;
        i += 1;
    }
    table
};

fn all_in(bytes: &[u8], class: u8) -> bool {
    bytes.iter().all(|&b| CLASS[b as usize] & class != 0)
}

fn valid_key_bytes(k: &[u8]) -> bool {
    !k.is_empty() && all_in(k, KEY)
}

fn valid_value_bytes(v: &[u8]) -> bool {
    !v.is_empty() && all_in(v, VALUE)
}

/// `s` without leading and trailing spaces and tabs (the only whitespace a
/// header that passed the ASCII check can hold).
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// ASCII bytes as text (a header that passed the ASCII check is all ASCII).
fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

impl TraceHeader {
    /// Builds a header from its parts.
    pub fn new(root: Option<TraceId>, parent: Option<EntityId>, sampled: SamplingDecision) -> Self {
        TraceHeader { root, parent, sampled, extra: Vec::new() }
    }

    /// Parses a header value. See the module docs for what is rejected.
    ///
    /// One pass over the bytes, no allocation unless there are extra keys:
    /// this runs on every invocation.
    pub fn parse(s: &str) -> Result<Self, HeaderError> {
        let bytes = s.as_bytes();
        if bytes.len() > MAX_HEADER_LEN {
            return Err(HeaderError::TooLong);
        }
        if !all_in(bytes, ALLOWED) {
            return Err(HeaderError::NotAscii);
        }
        let mut root = None;
        let mut parent = None;
        let mut sampled = None;
        let mut extra: Vec<(Box<str>, Box<str>)> = Vec::new();
        let mut any = false;
        for part in bytes.split(|&b| b == b';') {
            let part = trim(part);
            if part.is_empty() {
                continue;
            }
            any = true;
            let eq = part.iter().position(|&b| b == b'=').ok_or(HeaderError::MalformedPart)?;
            let (k, v) = (trim(&part[..eq]), trim(&part[eq + 1..]));
            if !valid_key_bytes(k) || !valid_value_bytes(v) {
                return Err(HeaderError::MalformedPart);
            }
            let dup = || HeaderError::DuplicateKey(text(k).to_owned());
            match k {
                b"Root" => {
                    if root.is_some() {
                        return Err(dup());
                    }
                    root = Some(TraceId::from_bytes(v).map_err(|_| HeaderError::InvalidRoot)?);
                }
                b"Parent" => {
                    if parent.is_some() {
                        return Err(dup());
                    }
                    parent = Some(EntityId::from_hex(v).map_err(|_| HeaderError::InvalidParent)?);
                }
                b"Sampled" => {
                    if sampled.is_some() {
                        return Err(dup());
                    }
                    sampled = Some(match v {
                        b"1" => SamplingDecision::Sampled,
                        b"0" => SamplingDecision::NotSampled,
                        b"?" => SamplingDecision::Requested,
                        _ => return Err(HeaderError::InvalidSampled),
                    });
                }
                _ => {
                    let (k, v) = (text(k), text(v));
                    if extra.iter().any(|(ek, _)| &**ek == k) {
                        return Err(dup());
                    }
                    // `Self` is added by load balancers and must not travel further.
                    if k != "Self" {
                        extra.push((k.into(), v.into()));
                    }
                }
            }
        }
        if !any {
            return Err(HeaderError::Empty);
        }
        Ok(TraceHeader { root, parent, sampled: sampled.unwrap_or(SamplingDecision::Unknown), extra })
    }

    /// The trace id (`Root`).
    pub fn root(&self) -> Option<&TraceId> {
        self.root.as_ref()
    }

    /// The caller's entity id (`Parent`).
    pub fn parent(&self) -> Option<EntityId> {
        self.parent
    }

    /// The sampling decision (`Sampled`).
    pub fn sampled(&self) -> SamplingDecision {
        self.sampled
    }

    /// Keys other than `Root`, `Parent` and `Sampled`, in their original order.
    pub fn extra(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extra.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Adds or replaces an extra key. Invalid keys or values are ignored and
    /// `false` is returned, so a header built here always parses back.
    pub fn set_extra(&mut self, key: &str, value: &str) -> bool {
        if !valid_key_bytes(key.as_bytes()) || !valid_value_bytes(value.as_bytes()) || matches!(key, "Root" | "Parent" | "Sampled" | "Self")
        {
            return false;
        }
        if let Some(slot) = self.extra.iter_mut().find(|(k, _)| &**k == key) {
            slot.1 = value.into();
        } else {
            self.extra.push((key.into(), value.into()));
        }
        true
    }

    /// A copy with another `Parent` and sampling decision, extras kept: the
    /// header to send downstream from the entity `parent`.
    pub fn with_parent(&self, parent: EntityId, sampled: SamplingDecision) -> Self {
        TraceHeader { root: self.root, parent: Some(parent), sampled, extra: self.extra.clone() }
    }
}

impl FromStr for TraceHeader {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraceHeader::parse(s)
    }
}

impl fmt::Display for TraceHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(root) = &self.root {
            write!(f, "Root={root}")?;
            sep = ";";
        }
        if let Some(parent) = self.parent {
            write!(f, "{sep}Parent={parent}")?;
            sep = ";";
        }
        if let Some(s) = self.sampled.as_header_value() {
            write!(f, "{sep}Sampled={s}")?;
            sep = ";";
        }
        for (k, v) in &self.extra {
            write!(f, "{sep}{k}={v}")?;
            sep = ";";
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FULL: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1";

    #[test]
    fn parses_the_reference_header() {
        let h = TraceHeader::parse(FULL).expect("valid");
        assert_eq!(h.root().map(|r| r.as_str()), Some("1-5759e988-bd862e3fe1be46a994272793"));
        assert_eq!(h.parent().map(|p| p.to_string()).as_deref(), Some("53995c3f42cd8ad8"));
        assert_eq!(h.sampled(), SamplingDecision::Sampled);
        assert_eq!(h.extra().collect::<Vec<_>>(), vec![("Lineage", "a87bd80c:1")]);
        assert_eq!(h.to_string(), FULL);
    }

    #[test]
    fn order_spacing_and_sampling_values() {
        let h = TraceHeader::parse(" Sampled=0 ; Parent=53995c3f42cd8ad8;Root=1-5759e988-bd862e3fe1be46a994272793; ").expect("valid");
        assert_eq!(h.sampled(), SamplingDecision::NotSampled);
        assert_eq!(h.to_string(), "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0");
        let h = TraceHeader::parse("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=?").expect("valid");
        assert_eq!(h.sampled(), SamplingDecision::Requested);
        let h = TraceHeader::parse("Root=1-5759e988-bd862e3fe1be46a994272793").expect("passthrough");
        assert_eq!(h.sampled(), SamplingDecision::Unknown);
        assert_eq!(h.parent(), None);
    }

    #[test]
    fn self_is_dropped_and_unknown_keys_keep_their_order() {
        let h =
            TraceHeader::parse("Self=1-67891234-12456789abcdef012345678;Root=1-5759e988-bd862e3fe1be46a994272793;B=2;A=1").expect("valid");
        assert_eq!(h.to_string(), "Root=1-5759e988-bd862e3fe1be46a994272793;B=2;A=1");
        let child = h.with_parent(EntityId::from_u64(1), SamplingDecision::NotSampled);
        assert_eq!(child.to_string(), "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000001;Sampled=0;B=2;A=1");
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let junk = "x".repeat(10 * 1024);
        let cases: Vec<(&str, HeaderError)> = vec![
            ("", HeaderError::Empty),
            ("   ", HeaderError::Empty),
            (";;", HeaderError::Empty),
            ("Root=;", HeaderError::MalformedPart),
            ("Root", HeaderError::MalformedPart),
            ("=1", HeaderError::MalformedPart),
            ("Root=1-5759e988-bd862e3fe1be46a99427279", HeaderError::InvalidRoot),
            ("Root=1-5759e988-bd862e3fe1be46a99427279g", HeaderError::InvalidRoot),
            ("Root=2-5759e988-bd862e3fe1be46a994272793", HeaderError::InvalidRoot),
            ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad", HeaderError::InvalidParent),
            ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8adz", HeaderError::InvalidParent),
            ("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=yes", HeaderError::InvalidSampled),
            ("Root=1-5759e988-bd862e3fe1be46a994272793;Root=1-5759e988-bd862e3fe1be46a994272793", HeaderError::DuplicateKey("Root".into())),
            ("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1;Sampled=0", HeaderError::DuplicateKey("Sampled".into())),
            ("A=1;A=2", HeaderError::DuplicateKey("A".into())),
            ("Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=é", HeaderError::NotAscii),
            ("Root=1-5759e988-bd862e3fe1be46a994272793\n", HeaderError::NotAscii),
            (junk.as_str(), HeaderError::TooLong),
        ];
        for (input, want) in cases {
            assert_eq!(TraceHeader::parse(input), Err(want), "{input:?}");
        }
    }

    fn arb_header() -> impl Strategy<Value = TraceHeader> {
        (
            proptest::option::of("[0-9a-f]{8}[0-9a-f]{24}"),
            proptest::option::of(any::<u64>()),
            prop_oneof![
                Just(SamplingDecision::Sampled),
                Just(SamplingDecision::NotSampled),
                Just(SamplingDecision::Requested),
                Just(SamplingDecision::Unknown)
            ],
            proptest::collection::vec(("[A-Za-z][A-Za-z0-9_-]{0,8}", "[!-:<-~]{1,12}"), 0..4),
        )
            .prop_map(|(root, parent, sampled, extras)| {
                let root = root.and_then(|r| format!("1-{}-{}", &r[..8], &r[8..]).parse().ok());
                let mut h = TraceHeader::new(root, parent.map(EntityId::from_u64), sampled);
                for (k, v) in extras {
                    h.set_extra(&k, &v);
                }
                h
            })
            .prop_filter("a header needs at least one key", |h| !h.to_string().is_empty())
    }

    proptest! {
        #[test]
        fn round_trips(h in arb_header()) {
            let text = h.to_string();
            prop_assert_eq!(TraceHeader::parse(&text), Ok(h));
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,300}") {
            let _ = TraceHeader::parse(&s);
        }

        #[test]
        fn arbitrary_header_like_text_never_panics(s in "[A-Za-z=;0-9 ?:-]{0,400}") {
            if let Ok(h) = TraceHeader::parse(&s) {
                // Whatever parses formats to something that parses to the same thing.
                prop_assert_eq!(TraceHeader::parse(&h.to_string()), Ok(h));
            }
        }
    }
}
