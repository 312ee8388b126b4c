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
    write_fields(doc, buf)?;
    write_children(doc, &[], buf)
}

/// Appends `tree` as the one document it stands for: its root with the
/// root's own `subsegments`, then the finished children, as
/// `write_document(&tree.into_document())` would, without building it.
pub(crate) fn write_tree(tree: &Finished, buf: &mut Vec<u8>) -> serde_json::Result<()> {
    write_fields(&tree.doc, buf)?;
    write_children(&tree.doc, &tree.children, buf)
}

/// `,"subsegments":[...]` when there are any, and the closing brace.
fn write_children(doc: &Document, more: &[Finished], buf: &mut Vec<u8>) -> serde_json::Result<()> {
    if !doc.subsegments.is_empty() || !more.is_empty() {
        buf.extend_from_slice(b",\"subsegments\":[");
        for (i, child) in doc.subsegments.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_document(child, buf)?;
        }
        for (i, child) in more.iter().enumerate() {
            if i > 0 || !doc.subsegments.is_empty() {
                buf.push(b',');
            }
            write_tree(child, buf)?;
        }
        buf.push(b']');
    }
    buf.push(b'}');
    Ok(())
}

/// Everything of `doc` before its `subsegments`, from the opening brace.
fn write_fields(doc: &Document, buf: &mut Vec<u8>) -> serde_json::Result<()> {
    buf.extend_from_slice(b"{\"name\":");
    write_str(&doc.name, buf)?;
    buf.extend_from_slice(b",\"id\":");
    write_id(doc.id, buf);
    if let Some(trace_id) = &doc.trace_id {
        buf.extend_from_slice(b",\"trace_id\":");
        serde_json::to_writer(&mut *buf, trace_id)?;
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
    serde_json::to_writer(&mut *buf, &doc.start_time)?;
    if let Some(end_time) = doc.end_time {
        buf.extend_from_slice(b",\"end_time\":");
        serde_json::to_writer(&mut *buf, &end_time)?;
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
fn write_str(s: &str, buf: &mut Vec<u8>) -> serde_json::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *buf, s)
    }
}

fn write_id(id: EntityId, buf: &mut Vec<u8>) {
    buf.push(b'"');
    buf.extend_from_slice(&id.to_hex());
    buf.push(b'"');
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
