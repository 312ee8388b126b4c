//! Writing a [`Document`] as JSON for the wire, faster than the derived
//! `Serialize` through `serde_json` and byte for byte the same output.
//!
//! The derived implementation escapes every field name of every document
//! and goes through serde's generic machinery for each field; for the common
//! fields (names, ids, times, flags, annotations, children) this writes the
//! keys as constants and the strings directly when they need no escaping.
//! Everything else (cause, http, aws, metadata, service, non-trivial strings,
//! numbers) is still written by `serde_json`, so the two cannot disagree on
//! formatting. A test checks the equality on documents using every field.

use serde::Serialize;

use crate::document::{AnnotationValue, Document, Finished};
use lambda_xray_wire::EntityId;

/// Appends `doc` to `buf` exactly as `serde_json::to_writer(buf, doc)` would.
pub(crate) fn write_document(doc: &Document, buf: &mut Vec<u8>) -> serde_json::Result<()> {
    write_document_with(doc, buf, &mut Seconds::default())
}

fn write_document_with(doc: &Document, buf: &mut Vec<u8>, secs: &mut Seconds) -> serde_json::Result<()> {
    write_fields(doc, buf, secs)?;
    write_children(doc, &[], buf, secs)
}

/// The digits of the whole seconds of the last time written: the times of
/// one document tree nearly all fall in the same second, so most need only
/// their six fraction digits made.
struct Seconds {
    secs: u64,
    digits: [u8; 10],
}

impl Default for Seconds {
    fn default() -> Self {
        // No time has these seconds: the first one fills the cache.
        Seconds { secs: u64::MAX, digits: [0; 10] }
    }
}

/// Appends `tree` as the one document it stands for: its root with the
/// root's own `subsegments`, then the finished children, as
/// `write_document(&tree.into_document())` would, without building it.
pub(crate) fn write_tree(tree: &Finished, buf: &mut Vec<u8>) -> serde_json::Result<()> {
    write_tree_with(tree, buf, &mut Seconds::default())
}

fn write_tree_with(tree: &Finished, buf: &mut Vec<u8>, secs: &mut Seconds) -> serde_json::Result<()> {
    write_fields(&tree.doc, buf, secs)?;
    write_children(&tree.doc, &tree.children, buf, secs)
}

/// `,"subsegments":[...]` when there are any, and the closing brace.
fn write_children(doc: &Document, more: &[Finished], buf: &mut Vec<u8>, secs: &mut Seconds) -> serde_json::Result<()> {
    if !doc.subsegments.is_empty() || !more.is_empty() {
        buf.extend_from_slice(b",\"subsegments\":[");
        for (i, child) in doc.subsegments.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_document_with(child, buf, secs)?;
        }
        for (i, child) in more.iter().enumerate() {
            if i > 0 || !doc.subsegments.is_empty() {
                buf.push(b',');
            }
            write_tree_with(child, buf, secs)?;
        }
        buf.push(b']');
    }
    buf.push(b'}');
    Ok(())
}

/// Everything of `doc` before its `subsegments`, from the opening brace.
fn write_fields(doc: &Document, buf: &mut Vec<u8>, secs: &mut Seconds) -> serde_json::Result<()> {
    buf.extend_from_slice(b"{\"name\":");
    write_str(&doc.name, buf)?;
    buf.extend_from_slice(b",\"id\":");
    write_id(doc.id, buf);
    if let Some(trace_id) = &doc.trace_id {
        buf.extend_from_slice(b",\"trace_id\":\"");
        // Validated hex and dashes: nothing to escape.
        buf.extend_from_slice(trace_id.as_bytes());
        buf.push(b'"');
    }
    if let Some(parent_id) = doc.parent_id {
        buf.extend_from_slice(b",\"parent_id\":");
        write_id(parent_id, buf);
    }
    if let Some(kind) = &doc.kind {
        buf.extend_from_slice(b",\"type\":");
        write_str(kind, buf)?;
    }
    buf.extend_from_slice(b",\"start_time\":");
    write_time(doc.start_time, buf, secs)?;
    if let Some(end_time) = doc.end_time {
        buf.extend_from_slice(b",\"end_time\":");
        write_time(end_time, buf, secs)?;
    }
    if doc.in_progress {
        buf.extend_from_slice(b",\"in_progress\":true");
    }
    if let Some(namespace) = &doc.namespace {
        buf.extend_from_slice(b",\"namespace\":");
        write_str(namespace, buf)?;
    }
    if doc.error {
        buf.extend_from_slice(b",\"error\":true");
    }
    if doc.throttle {
        buf.extend_from_slice(b",\"throttle\":true");
    }
    if doc.fault {
        buf.extend_from_slice(b",\"fault\":true");
    }
    if let Some(cause) = &doc.cause {
        field(b"cause", cause, buf)?;
    }
    if !doc.annotations.is_empty() {
        buf.extend_from_slice(b",\"annotations\":{");
        for (i, (key, value)) in doc.annotations.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_str(key, buf)?;
            buf.push(b':');
            match value {
                AnnotationValue::Bool(true) => buf.extend_from_slice(b"true"),
                AnnotationValue::Bool(false) => buf.extend_from_slice(b"false"),
                AnnotationValue::String(s) => write_str(s, buf)?,
                AnnotationValue::Int(i) => buf.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
                other => serde_json::to_writer(&mut *buf, other)?,
            }
        }
        buf.push(b'}');
    }
    if !doc.metadata.is_empty() {
        field(b"metadata", &doc.metadata, buf)?;
    }
    if let Some(http) = &doc.http {
        field(b"http", http, buf)?;
    }
    if let Some(aws) = &doc.aws {
        field(b"aws", aws, buf)?;
    }
    if !doc.precursor_ids.is_empty() {
        field(b"precursor_ids", &doc.precursor_ids, buf)?;
    }
    for (name, value) in [(&b"origin"[..], &doc.origin), (b"user", &doc.user), (b"resource_arn", &doc.resource_arn)] {
        if let Some(value) = value {
            buf.extend_from_slice(b",\"");
            buf.extend_from_slice(name);
            buf.extend_from_slice(b"\":");
            write_str(value, buf)?;
        }
    }
    if let Some(service) = &doc.service {
        field(b"service", service, buf)?;
    }
    Ok(())
}

/// `,"<name>":<value by serde_json>`.
fn field(name: &[u8], value: &(impl Serialize + ?Sized), buf: &mut Vec<u8>) -> serde_json::Result<()> {
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(name);
    buf.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *buf, value)
}

/// A JSON string: copied as is when `serde_json` would not escape anything
/// (no control character, quote or backslash), else written by `serde_json`.
/// A JSON string, as [`write_str`] writes it; escaping cannot fail.
pub(crate) fn write_json_str(s: &str, buf: &mut Vec<u8>) {
    // Writing a `&str` into a `Vec` has no failure mode.
    let _ = write_str(s, buf);
}

fn write_str(s: &str, buf: &mut Vec<u8>) -> serde_json::Result<()> {
    // What `serde_json` escapes: control characters, quote, backslash.
    const PLAIN: [bool; 256] = {
        let mut table = [true; 256];
        let mut b = 0;
        while b < 0x20 {
            table[b] = false;
            b += 1;
        }
        table[b'"' as usize] = false;
        table[b'\\' as usize] = false;
        table
    };
    let bytes = s.as_bytes();
    if bytes.iter().all(|&b| PLAIN[b as usize]) {
        buf.reserve(bytes.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *buf, s)
    }
}

/// The two decimal digits of each number below 100.
const DIGIT_PAIRS: [[u8; 2]; 100] = {
    let mut table = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        table[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    table
};

/// A time as `serde_json` writes the `f64` (its shortest round-trip form),
/// without the general float algorithm for the times the library makes:
/// ten-digit epoch seconds below 2^32 (years 2001 to 2106) that are a whole
/// number of microseconds (`clock::now_seconds`). For those the decimal
/// `s.ffffff` with trailing zeros dropped is that shortest form: it reads
/// back as the same `f64` (the nearest double to the microsecond value), and
/// no other decimal of at most six places lies within half a spacing of the
/// double, since the spacing there (at most 2^-21, 4.8e-7) is under half a
/// microsecond. Anything else goes through `serde_json`.
fn write_time(t: f64, buf: &mut Vec<u8>, cache: &mut Seconds) -> serde_json::Result<()> {
    const MICROS: f64 = 1e6;
    if (1e9..4_294_967_296.0).contains(&t) {
        // Below 2^53 µs: the product is within one double of the true micro
        // count, and the check below rejects any that did not round back.
        // Through i64: a cheaper conversion than to u64, and t is in range.
        let micros = (t * MICROS + 0.5) as i64 as u64;
        #[allow(clippy::float_cmp)] // Exactly this double, or not the fast path.
        if micros as f64 / MICROS == t {
            let (secs, frac) = (micros / 1_000_000, (micros % 1_000_000) as u32);
            if secs != cache.secs {
                let (hi, lo) = ((secs / 100_000) as u32, (secs % 100_000) as u32);
                // Ten digits: hi and lo are five each.
                for (i, part) in [hi, lo].into_iter().enumerate() {
                    let at = i * 5;
                    cache.digits[at] = b'0' + (part / 10_000) as u8;
                    cache.digits[at + 1..at + 3].copy_from_slice(&DIGIT_PAIRS[(part / 100 % 100) as usize]);
                    cache.digits[at + 3..at + 5].copy_from_slice(&DIGIT_PAIRS[(part % 100) as usize]);
                }
                cache.secs = secs;
            }
            let mut out = [0u8; 17];
            out[..10].copy_from_slice(&cache.digits);
            out[10] = b'.';
            out[11..13].copy_from_slice(&DIGIT_PAIRS[(frac / 10_000) as usize]);
            out[13..15].copy_from_slice(&DIGIT_PAIRS[(frac / 100 % 100) as usize]);
            out[15..17].copy_from_slice(&DIGIT_PAIRS[(frac % 100) as usize]);
            // Trailing zeros go, but one digit stays after the point (`1.0`).
            let mut zeros = 0;
            while zeros < 5 && out[16 - zeros] == b'0' {
                zeros += 1;
            }
            // All 17 bytes, then cut: a fixed-size copy is two moves, not a call.
            buf.extend_from_slice(&out);
            buf.truncate(buf.len() - zeros);
            return Ok(());
        }
    }
    serde_json::to_writer(&mut *buf, &t)
}

fn write_id(id: EntityId, buf: &mut Vec<u8>) {
    let mut quoted = [b'"'; 18];
    quoted[1..17].copy_from_slice(&id.to_hex());
    buf.extend_from_slice(&quoted);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Aws, Cause, Http, HttpRequest, HttpResponse, Service};
    use lambda_xray_wire::TraceId;

    fn same(doc: &Document) {
        let mut fast = Vec::new();
        assert!(write_document(doc, &mut fast).is_ok());
        let serde = serde_json::to_vec(doc).unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&serde));
    }

    fn raw(v: serde_json::Value) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(&v).unwrap_or_else(|_| serde_json::value::to_raw_value(&0).unwrap_or_default())
    }

    fn json(t: f64) -> String {
        let mut buf = Vec::new();
        assert!(write_time(t, &mut buf, &mut Seconds::default()).is_ok());
        String::from_utf8(buf).unwrap_or_default()
    }

    #[test]
    fn times_are_written_as_serde_json_writes_them() {
        let serde = |t: f64| serde_json::to_string(&t).unwrap_or_default();
        // The library's times (whole microseconds), at the edges and in between.
        let mut micros: Vec<u64> =
            vec![1_000_000_000_000_000, 1_700_000_000_000_000, 1_700_000_000_500_000, 1_700_000_000_000_001, 4_294_967_295_999_999];
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            // xorshift: spread over the whole ten-digit range and every fraction.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            micros.push(1_000_000_000_000_000 + x % 3_294_967_296_000_000);
        }
        // One cache across the values, as in a document tree: nearby times
        // (the same second, the next one) and far ones, in turn.
        let mut cache = Seconds::default();
        for m in micros {
            for m in [m, m + 1, m + 999_999, m + 1_000_000, m] {
                let t = m as f64 / 1e6;
                assert_eq!(json(t), serde(t), "{m} µs");
                assert_eq!(json(t).parse::<f64>().ok(), Some(t));
                let mut buf = Vec::new();
                assert!(write_time(t, &mut buf, &mut cache).is_ok());
                assert_eq!(String::from_utf8(buf).unwrap_or_default(), serde(t), "{m} µs, cached seconds");
            }
        }
        // Anything else: serde_json's own output.
        for t in [
            0.0,
            1.25,
            -1.5,
            1e12,
            4_294_967_296.5,
            9_648_557_578.896_383,
            1_700_000_000.123_456_7,
            999_999_999.5,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(json(t), serde(t), "{t}");
        }
    }

    #[test]
    fn minimal_and_embedded_documents() {
        let mut doc = Document::start("## handler", EntityId::from_u64(0x1234), 1_700_000_000.123456);
        same(&doc);
        doc.end_time = Some(1_700_000_000.5);
        doc.trace_id = Some(TraceId::new());
        doc.parent_id = Some(EntityId::from_u64(u64::MAX));
        doc.kind = Some("subsegment".into());
        let _ = doc.annotations.insert("ColdStart", (true).into());
        let _ = doc.annotations.insert("Service", ("svc").into());
        for i in 0..3 {
            let mut child = Document::start(&format!("step {i}"), EntityId::from_u64(i + 1), 1.25);
            child.end_time = Some(2.0);
            let _ = child.annotations.insert("index", i.into());
            doc.subsegments.push(child);
        }
        same(&doc);
    }

    #[test]
    fn a_tree_is_written_as_the_document_it_stands_for() {
        let leaf = |name: &str, id: u64| {
            let mut d = Document::start(name, EntityId::from_u64(id), 1.5);
            d.end_time = Some(2.25);
            d
        };
        let mut root = leaf("root", 1);
        root.subsegments.push(leaf("own child", 2));
        let mut grandchild_parent = Finished::leaf(leaf("child", 3));
        grandchild_parent.children.push(Finished::leaf(leaf("grandchild", 4)));
        let tree = Finished { doc: Box::new(root), children: vec![grandchild_parent, Finished::leaf(leaf("child 2", 5))] };
        for tree in [Finished::leaf(leaf("alone", 9)), tree] {
            let mut fast = Vec::new();
            assert!(write_tree(&tree, &mut fast).is_ok());
            let serde = serde_json::to_vec(&tree.into_document()).unwrap_or_default();
            assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&serde));
        }
    }

    #[test]
    fn every_field_and_every_escape() {
        let mut doc = Document::start("x", EntityId::from_u64(7), 0.0);
        doc.name = "with \"quotes\" \\ and é".into();
        doc.in_progress = true;
        doc.namespace = Some("aws".into());
        doc.error = true;
        doc.throttle = true;
        doc.fault = true;
        doc.cause = Some(Cause::Details(crate::cause::cause_from_message("Kind\n", "a \"message\"\t", None)));
        let _ = doc.annotations.insert("s", ("line\nbreak \u{1} \"q\"").into());
        let _ = doc.annotations.insert("f", (1.5).into());
        let _ = doc.annotations.insert("neg", (-3).into());
        let _ = doc.annotations.insert("no", (false).into());
        let _ = doc.annotations.insert("nan", (f64::NAN).into());
        let _ = doc.metadata.insert("app", "blob", raw(serde_json::json!({"a": [1, "x\u{7f}"]})));
        doc.http = Some(Box::new(Http {
            request: Some(HttpRequest { method: Some("GET".into()), url: Some("https://x/\"y\"".into()), ..Default::default() }),
            response: Some(HttpResponse { status: Some(429), content_length: Some(12) }),
        }));
        doc.aws = Some(Box::new(Aws { operation: Some("SendMessage".into()), region: Some("eu-west-1".into()), ..Default::default() }));
        doc.precursor_ids = vec![EntityId::from_u64(1), EntityId::from_u64(2)];
        doc.origin = Some("AWS::Lambda::Function".into());
        doc.user = Some("ü\u{1f}".into());
        doc.resource_arn = Some("arn:aws:lambda:x".into());
        doc.service = Some(Service { version: Some("1".into()) });
        let mut child = doc.clone();
        child.end_time = Some(f64::INFINITY);
        doc.subsegments.push(child.clone());
        doc.subsegments.push(child);
        same(&doc);
    }
}
