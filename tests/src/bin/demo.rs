//! The demo: runs the sample function against a local Lambda Runtime API with
//! a local UDP listener as the X-Ray daemon, invokes it a few ways, and prints
//! each trace that reached the "daemon" as a waterfall (and writes them all
//! to an HTML page).
//!
//! Run it with `./scripts/demo.sh` (builds the sample first). No AWS account or
//! network needed: everything listens on 127.0.0.1.

use std::time::Duration;

use lambda_xray_e2e::{Daemon, Error, LocalLambda, Outcome, new_trace_header, schema, waterfall};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let daemon = Daemon::start().await?;
    let function = LocalLambda::start(
        "sample-basic",
        "demo-function",
        &[("AWS_XRAY_DAEMON_ADDRESS", daemon.address()), ("POWERTOOLS_SERVICE_NAME", "demo".to_owned())],
    )
    .await?;
    println!("Local Runtime API up; sample-basic running; X-Ray daemon stand-in on udp://{}\n", daemon.address());

    let cases: Vec<(&str, Value, bool)> = vec![
        ("sampled, cold start", json!({"name": "Ada"}), true),
        ("sampled, warm", json!({"name": "Grace"}), true),
        ("unsampled (Sampled=0)", json!({"name": "Linus"}), false),
        ("handler error", json!({"name": "Edsger", "fail": true}), true),
        ("200 KB of metadata (split into datagrams under 64 KiB)", json!({"metadata_kb": 200}), true),
    ];
    let mut problems = 0;
    let mut waterfalls = Vec::new();
    for (title, payload, sampled) in cases {
        daemon.clear();
        let (header, root, _) = new_trace_header(sampled);
        let outcome = function.invoke(payload.clone(), Some(&header), Duration::from_secs(10)).await?;
        let docs = daemon.settle(Duration::from_millis(150)).await?;
        println!("━━ {title}\n   payload {payload}\n   header  {header}");
        match &outcome {
            Outcome::Response(v) => println!("   result  {v}"),
            Outcome::Error { error_type, error_message } => println!("   error   {error_type}: {error_message}"),
        }
        let sizes: Vec<usize> = daemon.datagrams().iter().map(Vec::len).collect();
        println!("   {} datagram(s) received, largest {} bytes", sizes.len(), sizes.iter().max().copied().unwrap_or(0));
        for d in &docs {
            if let Err(e) = schema::validate(d) {
                problems += 1;
                println!("   SCHEMA PROBLEM: {e}");
            }
        }
        if docs.is_empty() {
            println!("   (nothing recorded: the trace was not sampled)\n");
        } else {
            let same_trace = docs.iter().all(|d| d["trace_id"] == root.as_str());
            println!("   all documents in trace {root}: {same_trace}; schema-valid: {}", problems == 0);
            let w = waterfall::layout(&docs);
            for line in waterfall::terminal(&w).lines() {
                println!("   {line}");
            }
            waterfalls.push(w);
            println!();
        }
    }
    let page = std::env::temp_dir().join("lambda-xray-demo.html");
    std::fs::write(&page, waterfall::html("lambda-xray demo run", &waterfalls))?;
    println!("The same traces as a web page: {}", page.display());
    if problems > 0 {
        return Err(format!("{problems} schema problems").into());
    }
    Ok(())
}
