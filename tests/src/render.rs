//! Shows a trace's documents as a readable tree.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

struct Node {
    doc: Value,
    children: Vec<String>,
}

fn flags(doc: &Value) -> String {
    let mut out = String::new();
    for f in ["fault", "error", "throttle"] {
        if doc[f] == Value::Bool(true) {
            let _ = write!(out, " [{}]", f.to_uppercase());
        }
    }
    if doc["in_progress"] == Value::Bool(true) {
        out.push_str(" [IN PROGRESS]");
    }
    out
}

fn annotations(doc: &Value) -> String {
    match doc["annotations"].as_object() {
        Some(map) if !map.is_empty() => {
            let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("  {{{}}}", parts.join(", "))
        }
        _ => String::new(),
    }
}

fn duration_ms(doc: &Value) -> String {
    match (doc["start_time"].as_f64(), doc["end_time"].as_f64()) {
        (Some(s), Some(e)) => format!("{:8.2} ms", (e - s) * 1000.0),
        _ => "       … ms".to_owned(),
    }
}

/// Renders all documents of one trace as a tree under the Lambda segment.
/// An entity sent twice (in progress, then complete) is shown once, complete.
pub fn trace_tree(docs: &[Value]) -> String {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut parent_of: BTreeMap<String, String> = BTreeMap::new();
    fn add(doc: &Value, parent: &str, nodes: &mut BTreeMap<String, Node>, parent_of: &mut BTreeMap<String, String>) {
        let id = doc["id"].as_str().unwrap_or("?").to_owned();
        let mut shallow = doc.clone();
        if let Some(o) = shallow.as_object_mut() {
            o.remove("subsegments");
        }
        let replace = match nodes.get(&id) {
            None => true,
            Some(existing) => existing.doc["in_progress"] == Value::Bool(true),
        };
        if replace {
            let children = nodes.remove(&id).map(|n| n.children).unwrap_or_default();
            nodes.insert(id.clone(), Node { doc: shallow, children });
        }
        parent_of.insert(id.clone(), parent.to_owned());
        for c in doc["subsegments"].as_array().into_iter().flatten() {
            add(c, &id, nodes, parent_of);
        }
    }
    for d in docs {
        add(d, d["parent_id"].as_str().unwrap_or(""), &mut nodes, &mut parent_of);
    }
    let mut roots: Vec<String> = Vec::new();
    let mut ordered: Vec<(String, String)> = parent_of.into_iter().collect();
    ordered.sort_by(|a, b| {
        let t = |id: &str| nodes.get(id).and_then(|n| n.doc["start_time"].as_f64()).unwrap_or(0.0);
        t(&a.0).total_cmp(&t(&b.0))
    });
    for (id, parent) in ordered {
        match nodes.get_mut(&parent) {
            Some(p) => {
                if !p.children.contains(&id) {
                    p.children.push(id)
                }
            }
            None => roots.push(format!("{parent}/{id}")),
        }
    }
    let mut out = String::new();
    let trace_id = docs.first().and_then(|d| d["trace_id"].as_str()).unwrap_or("?");
    let _ = writeln!(out, "trace {trace_id} ({} documents)", docs.len());
    let mut by_segment: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in roots {
        let (seg, id) = r.split_once('/').unwrap_or(("", ""));
        by_segment.entry(seg.to_owned()).or_default().push(id.to_owned());
    }
    fn walk(id: &str, prefix: &str, last: bool, nodes: &BTreeMap<String, Node>, out: &mut String) {
        let Some(n) = nodes.get(id) else { return };
        let branch = if last { "└─ " } else { "├─ " };
        let name = n.doc["name"].as_str().unwrap_or("?");
        let op = n.doc["aws"]["operation"].as_str().map(|s| format!(" {s}")).unwrap_or_default();
        let ns = n.doc["namespace"].as_str().map(|s| format!("{op} ({s})")).unwrap_or_default();
        let _ = writeln!(out, "{prefix}{branch}{name}{ns}  {}{}{}", duration_ms(&n.doc), flags(&n.doc), annotations(&n.doc));
        let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
        for (i, c) in n.children.iter().enumerate() {
            walk(c, &child_prefix, i + 1 == n.children.len(), nodes, out);
        }
    }
    for (segment, ids) in by_segment {
        let _ = writeln!(out, "└─ Lambda function segment {segment} (recorded by Lambda)");
        for (i, id) in ids.iter().enumerate() {
            walk(id, "   ", i + 1 == ids.len(), &nodes, &mut out);
        }
    }
    out
}
