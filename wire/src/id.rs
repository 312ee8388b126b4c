//! Trace and entity identifiers.
//!
//! New ids (feature `random`) come from the thread-local ChaCha-based
//! generator of `rand`: a few nanoseconds per id and not predictable from
//! earlier ids, which matters because a guessable id lets a caller graft data
//! onto someone else's trace.

use std::fmt;
use std::str::FromStr;
#[cfg(any(test, feature = "random"))]
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(any(test, feature = "random"))]
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 64-bit segment, subsegment or exception id, written as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EntityId(u64);

impl EntityId {
    /// The all-zero id X-Ray SDKs give unsampled entities (see `AWS_XRAY_NOOP_ID`).
    pub const NOOP: EntityId = EntityId(0);

    /// A fresh random, non-zero id.
    #[cfg(any(test, feature = "random"))]
    pub fn random() -> Self {
        let mut rng = rand::rng();
        loop {
            let v: u64 = rng.random();
            if v != 0 {
                return EntityId(v);
            }
        }
    }

    /// Builds an id from its numeric value.
    pub const fn from_u64(v: u64) -> Self {
        EntityId(v)
    }

    /// The numeric value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Writes the 16 hex digits into a stack buffer (no allocation).
    pub fn to_hex(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0.to_be_bytes()) {
            pair.copy_from_slice(&HEX_PAIRS[byte as usize]);
        }
        out
    }
}

/// The two lowercase hex digits of each byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    table
};

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityId({:016x})", self.0)
    }
}

/// Error returned when a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId;

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a valid X-Ray id")
    }
}

impl std::error::Error for InvalidId {}

/// The value of each hex digit (either case); 0xff for other bytes. A table:
/// ids are parsed on every invocation.
const HEX_VALUES: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => 0xff,
        };
        i += 1;
    }
    table
};

/// The value of one hex digit (either case), or `None`.
fn hex_value(b: u8) -> Option<u8> {
    match HEX_VALUES[b as usize] {
        0xff => None,
        v => Some(v),
    }
}

impl EntityId {
    /// Parses exactly 16 hex digits (one pass, no allocation).
    pub(crate) fn from_hex(b: &[u8]) -> Result<Self, InvalidId> {
        if b.len() != 16 {
            return Err(InvalidId);
        }
        let mut v = 0u64;
        for &c in b {
            v = (v << 4) | u64::from(hex_value(c).ok_or(InvalidId)?);
        }
        Ok(EntityId(v))
    }
}

impl FromStr for EntityId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntityId::from_hex(s.as_bytes())
    }
}

impl Serialize for EntityId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex = self.to_hex();
        // The buffer only ever holds ASCII hex digits.
        s.serialize_str(std::str::from_utf8(&hex).unwrap_or("0000000000000000"))
    }
}

impl<'de> Deserialize<'de> for EntityId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Length of a trace id's text.
const TRACE_ID_LEN: usize = 35;

/// An X-Ray trace id: `1-<8 hex digits of epoch seconds>-<24 hex digits of randomness>`.
///
/// Held inline (35 bytes): making, copying and dropping one never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; TRACE_ID_LEN]);

impl TraceId {
    /// A new trace id for the current time.
    #[cfg(any(test, feature = "random"))]
    pub fn new() -> Self {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let random: u128 = rand::rng().random::<u128>() >> 32;
        let text = format!("1-{:08x}-{:024x}", secs as u32, random);
        let mut id = [0u8; TRACE_ID_LEN];
        id.copy_from_slice(text.as_bytes());
        TraceId(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ever built from validated ASCII, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The id's text as bytes (ASCII), without the UTF-8 check of [`TraceId::as_str`].
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `s` has the exact shape `1-XXXXXXXX-XXXXXXXXXXXXXXXXXXXXXXXX`.
    pub fn is_valid(s: &str) -> bool {
        Self::from_bytes(s.as_bytes()).is_ok()
    }

    /// Parses the exact shape `1-XXXXXXXX-XXXXXXXXXXXXXXXXXXXXXXXX`.
    pub(crate) fn from_bytes(b: &[u8]) -> Result<Self, InvalidId> {
        let id: [u8; TRACE_ID_LEN] = b.try_into().map_err(|_| InvalidId)?;
        let hex = |r: &[u8]| r.iter().all(|&c| hex_value(c).is_some());
        if id[0] == b'1' && id[1] == b'-' && id[10] == b'-' && hex(&id[2..10]) && hex(&id[11..]) { Ok(TraceId(id)) } else { Err(InvalidId) }
    }
}

#[cfg(any(test, feature = "random"))]
impl Default for TraceId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for TraceId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraceId::from_bytes(s.as_bytes())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", self.as_str())
    }
}

impl Serialize for TraceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TraceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_ids_are_16_hex_and_distinct() {
        let a = EntityId::random();
        let b = EntityId::random();
        assert_ne!(a, b);
        let s = a.to_string();
        assert_eq!(s.len(), 16);
        assert_eq!(s.parse::<EntityId>(), Ok(a));
        assert_eq!(std::str::from_utf8(&a.to_hex()).ok(), Some(s.as_str()));
    }

    #[test]
    fn trace_ids_have_the_xray_shape() {
        let t = TraceId::new();
        assert!(TraceId::is_valid(t.as_str()), "{t}");
        let epoch = u32::from_str_radix(&t.as_str()[2..10], 16).unwrap_or(0);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        assert!((now as i64 - epoch as i64).abs() < 5);
        assert_ne!(TraceId::new(), t);
    }

    #[test]
    fn bad_ids_are_rejected() {
        for s in ["", "123", "zzzzzzzzzzzzzzzz", "0123456789abcdef0", "+123456789abcdef"] {
            assert!(s.parse::<EntityId>().is_err(), "{s}");
        }
        for s in ["1-5759e988-bd862e3fe1be46a99427279", "2-5759e988-bd862e3fe1be46a994272793", "1-5759e98g-bd862e3fe1be46a994272793"] {
            assert!(s.parse::<TraceId>().is_err(), "{s}");
        }
    }
}
