//! Each trace as a timeline: one row per segment/subsegment, indented by
//! nesting, with a bar placed and scaled within the trace's duration, the
//! duration in ms, and markers for error/throttle/fault and annotations.
//! Rendered for the terminal ([`terminal`]) or as a self-contained HTML page
//! ([`html`]).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

/// One row of a waterfall.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// Nesting depth (0 = child of the Lambda segment).
    pub depth: usize,
    /// Entity name (and namespace, if any).
    pub name: String,
    /// Start offset from the trace's start, ms.
    pub offset_ms: f64,
    /// Duration, ms (`None` while in progress).
    pub duration_ms: Option<f64>,
    /// `fault`, `error`, `throttle`, `in progress`.
    pub flags: Vec<&'static str>,
    /// `key=value` annotations.
    pub annotations: Vec<String>,
}

/// A trace laid out as rows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Waterfall {
    /// The trace id.
    pub trace_id: String,
    /// The Lambda segment the rows hang from.
    pub segment_id: String,
    /// From the first start to the last end, ms.
    pub total_ms: f64,
    /// Rows in start order, children after their parent.
    pub rows: Vec<Row>,
}

/// Lays out the documents of one trace. An entity sent twice (in progress,
/// then complete) appears once, complete.
pub fn layout(docs: &[Value]) -> Waterfall {
    let mut entities: BTreeMap<String, (String, Value)> = BTreeMap::new();
    fn add(doc: &Value, parent: &str, out: &mut BTreeMap<String, (String, Value)>) {
        let id = doc["id"].as_str().unwrap_or("").to_owned();
        let keep_existing = out.get(&id).is_some_and(|(_, d)| d["in_progress"] != Value::Bool(true));
        if !keep_existing {
            out.insert(id.clone(), (parent.to_owned(), doc.clone()));
        }
        for c in doc["subsegments"].as_array().into_iter().flatten() {
            add(c, &id, out);
        }
    }
    for d in docs {
        add(d, d["parent_id"].as_str().unwrap_or(""), &mut entities);
    }
    let t0 = entities.values().filter_map(|(_, d)| d["start_time"].as_f64()).fold(f64::INFINITY, f64::min);
    let t1 = entities.values().filter_map(|(_, d)| d["end_time"].as_f64().or(d["start_time"].as_f64())).fold(f64::NEG_INFINITY, f64::max);
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut roots: Vec<String> = Vec::new();
    let mut segment_id = String::new();
    for (id, (parent, _)) in &entities {
        if entities.contains_key(parent) {
            children.entry(parent.clone()).or_default().push(id.clone());
        } else {
            segment_id = parent.clone();
            roots.push(id.clone());
        }
    }
    let start_of = |id: &String| entities.get(id).and_then(|(_, d)| d["start_time"].as_f64()).unwrap_or(0.0);
    roots.sort_by(|a, b| start_of(a).total_cmp(&start_of(b)));
    for list in children.values_mut() {
        list.sort_by(|a, b| start_of(a).total_cmp(&start_of(b)));
    }
    let mut rows = Vec::new();
    let mut stack: Vec<(String, usize)> = roots.into_iter().rev().map(|r| (r, 0)).collect();
    while let Some((id, depth)) = stack.pop() {
        let Some((_, d)) = entities.get(&id) else { continue };
        let mut flags = Vec::new();
        for (field, label) in [("fault", "fault"), ("error", "error"), ("throttle", "throttle"), ("in_progress", "in progress")] {
            if d[field] == Value::Bool(true) {
                flags.push(label);
            }
        }
        let annotations = d["annotations"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect()).unwrap_or_default();
        let base = d["name"].as_str().unwrap_or("?");
        let name = match (d["aws"]["operation"].as_str(), d["namespace"].as_str()) {
            (Some(op), Some(ns)) => format!("{base} {op} ({ns})"),
            (None, Some(ns)) => format!("{base} ({ns})"),
            _ => base.to_owned(),
        };
        let start = d["start_time"].as_f64().unwrap_or(t0);
        rows.push(Row {
            depth,
            name,
            offset_ms: (start - t0) * 1000.0,
            duration_ms: d["end_time"].as_f64().map(|e| (e - start) * 1000.0),
            flags,
            annotations,
        });
        for c in children.get(&id).into_iter().flatten().rev() {
            stack.push((c.clone(), depth + 1));
        }
    }
    let trace_id = docs.iter().find_map(|d| d["trace_id"].as_str()).unwrap_or("?").to_owned();
    Waterfall { trace_id, segment_id, total_ms: if t1 > t0 { (t1 - t0) * 1000.0 } else { 0.0 }, rows }
}

const BAR_WIDTH: usize = 40;

/// The waterfall as text for a terminal.
pub fn terminal(w: &Waterfall) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "trace {}  {:.2} ms  (under Lambda segment {})", w.trace_id, w.total_ms, w.segment_id);
    let name_width = w.rows.iter().map(|r| r.depth * 2 + r.name.chars().count()).max().unwrap_or(0).clamp(10, 44);
    for r in &w.rows {
        let label: String = format!("{}{}", "  ".repeat(r.depth), r.name).chars().take(name_width).collect();
        let scale = |ms: f64| if w.total_ms > 0.0 { ms / w.total_ms * BAR_WIDTH as f64 } else { 0.0 };
        let from = (scale(r.offset_ms).round() as usize).min(BAR_WIDTH - 1);
        let len = match r.duration_ms {
            Some(d) => (scale(d).round() as usize).max(1),
            None => BAR_WIDTH - from,
        }
        .min(BAR_WIDTH - from);
        let fill = if r.duration_ms.is_some() { "█" } else { "▒" };
        let bar = format!("{}{}{}", " ".repeat(from), fill.repeat(len), " ".repeat(BAR_WIDTH - from - len));
        let ms = r.duration_ms.map(|d| format!("{d:9.2} ms")).unwrap_or_else(|| "        … ms".to_owned());
        let flags = if r.flags.is_empty() { String::new() } else { format!("  [{}]", r.flags.join(", ").to_uppercase()) };
        let notes = if r.annotations.is_empty() { String::new() } else { format!("  {{{}}}", r.annotations.join(", ")) };
        let pad = name_width - label.chars().count();
        let _ = writeln!(out, "{label}{:pad$} │{bar}│{ms}{flags}{notes}", "");
    }
    out
}

/// A self-contained HTML page (no external assets) showing `waterfalls`.
/// The rows are drawn by the page's own script from embedded JSON; after
/// drawing, it records `rows visible-bars` in `<body data-rendered>` so a
/// headless browser can check what it laid out.
pub fn html(title: &str, waterfalls: &[Waterfall]) -> String {
    // `<` escaped so the JSON can't close the script element.
    let data = serde_json::to_string(waterfalls).unwrap_or_else(|_| "[]".to_owned()).replace('<', "\\u003c");
    let title = title.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; }}
h2 {{ font-size: 14px; margin: 18px 0 6px; font-family: monospace; }}
.row {{ display: grid; grid-template-columns: 320px 1fr 90px; gap: 8px; align-items: center; height: 22px; }}
.name {{ white-space: nowrap; overflow: hidden; text-overflow: ellipsis; font-family: monospace; }}
.track {{ position: relative; height: 14px; background: #f1f1f1; border-radius: 2px; }}
.bar {{ position: absolute; top: 0; height: 14px; min-width: 2px; background: #4a90d9; border-radius: 2px; }}
.bar.fault {{ background: #d9534f; }} .bar.error {{ background: #f0ad4e; }} .bar.throttle {{ background: #9b59b6; }}
.bar.progress {{ background: repeating-linear-gradient(45deg, #4a90d9, #4a90d9 4px, #9cc3ec 4px, #9cc3ec 8px); }}
.ms {{ text-align: right; font-family: monospace; }}
.flag {{ color: #b52b27; font-weight: bold; margin-left: 6px; }} .ann {{ color: #777; margin-left: 6px; }}
</style></head>
<body>
<h1 style="font-size:16px">{title}</h1>
<div id="traces"></div>
<script type="application/json" id="data">{data}</script>
<script>
(function () {{
  var traces = JSON.parse(document.getElementById("data").textContent);
  var root = document.getElementById("traces");
  function el(tag, cls, text) {{ var e = document.createElement(tag); if (cls) e.className = cls; if (text) e.textContent = text; return e; }}
  traces.forEach(function (t) {{
    root.appendChild(el("h2", null, "trace " + t.trace_id + " \u2014 " + t.total_ms.toFixed(2) + " ms"));
    t.rows.forEach(function (r) {{
      var row = el("div", "row");
      var name = el("div", "name");
      name.style.paddingLeft = (r.depth * 16) + "px";
      name.appendChild(el("span", null, r.name));
      r.flags.forEach(function (f) {{ name.appendChild(el("span", "flag", f)); }});
      if (r.annotations.length) name.appendChild(el("span", "ann", r.annotations.join(", ")));
      name.title = r.name + (r.annotations.length ? " " + r.annotations.join(", ") : "");
      var track = el("div", "track");
      var cls = "bar";
      if (r.flags.indexOf("fault") >= 0) cls += " fault"; else if (r.flags.indexOf("throttle") >= 0) cls += " throttle"; else if (r.flags.indexOf("error") >= 0) cls += " error";
      if (r.duration_ms === null) cls += " progress";
      var bar = el("div", cls);
      var total = t.total_ms > 0 ? t.total_ms : 1;
      bar.style.left = (100 * r.offset_ms / total) + "%";
      bar.style.width = (r.duration_ms === null ? 100 - 100 * r.offset_ms / total : 100 * r.duration_ms / total) + "%";
      track.appendChild(bar);
      row.appendChild(name); row.appendChild(track);
      row.appendChild(el("div", "ms", r.duration_ms === null ? "\u2026" : r.duration_ms.toFixed(2) + " ms"));
      root.appendChild(row);
    }});
  }});
  var bars = document.querySelectorAll(".bar"), visible = 0;
  bars.forEach(function (b) {{ var box = b.getBoundingClientRect(); if (box.width > 0 && box.height > 0) visible++; }});
  document.body.setAttribute("data-rendered", document.querySelectorAll(".row").length + " " + visible);
}})();
</script>
</body></html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs() -> Vec<Value> {
        vec![json!({
            "name": "## handler", "id": "00000000000000a1", "trace_id": "1-5759e988-bd862e3fe1be46a994272793",
            "parent_id": "53995c3f42cd8ad8", "type": "subsegment", "start_time": 100.0, "end_time": 100.010,
            "annotations": {"ColdStart": true},
            "subsegments": [
                {"name": "late", "id": "00000000000000b2", "start_time": 100.006, "end_time": 100.010, "fault": true},
                {"name": "early", "id": "00000000000000b1", "start_time": 100.001, "end_time": 100.005,
                 "subsegments": [{"name": "inner", "id": "00000000000000c1", "start_time": 100.002, "end_time": 100.003}]}
            ]
        })]
    }

    #[test]
    fn rows_follow_nesting_and_start_order() {
        let w = layout(&docs());
        let names: Vec<(usize, &str)> = w.rows.iter().map(|r| (r.depth, r.name.as_str())).collect();
        assert_eq!(names, vec![(0, "## handler"), (1, "early"), (2, "inner"), (1, "late")]);
        assert!((w.total_ms - 10.0).abs() < 1e-6);
        assert!((w.rows[3].offset_ms - 6.0).abs() < 1e-6);
        assert_eq!(w.rows[3].flags, vec!["fault"]);
        assert_eq!(w.segment_id, "53995c3f42cd8ad8");
    }

    #[test]
    fn terminal_bars_are_placed_and_scaled() {
        let text = terminal(&layout(&docs()));
        let lines: Vec<&str> = text.lines().collect();
        let bar = |l: &str| l.split('│').nth(1).unwrap_or("").to_owned();
        // The handler spans the whole width; "late" starts 60% in and lasts 40%.
        assert_eq!(bar(lines[1]).chars().filter(|c| *c == '█').count(), 40);
        let late = bar(lines[4]);
        assert_eq!(late.chars().position(|c| c == '█'), Some(24));
        assert_eq!(late.chars().filter(|c| *c == '█').count(), 16);
        assert!(lines[4].contains("[FAULT]"));
        assert!(lines[1].contains("ColdStart=true"));
    }

    #[test]
    fn an_in_progress_copy_is_replaced_by_the_complete_one() {
        let mut d = docs();
        let mut partial = d[0].clone();
        partial["in_progress"] = json!(true);
        partial.as_object_mut().map(|o| o.remove("end_time"));
        d.insert(0, partial);
        let w = layout(&d);
        assert_eq!(w.rows.len(), 4);
        assert!(w.rows[0].flags.is_empty());
    }

    #[test]
    fn html_is_self_contained_and_escapes_data() {
        let mut d = docs();
        d[0]["name"] = json!("</script><b>x");
        let page = html("run", &[layout(&d)]);
        assert!(!page.contains("</script><b>"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
