//! The demo: the sample function and the lambda-xray extension run on a local
//! Lambda platform (Runtime, Extensions and Telemetry APIs, freeze between
//! invocations), with a UDP listener on 127.0.0.1 as the X-Ray daemon. It
//! invokes the function a few ways, shuts the sandbox down, and prints each
//! trace that reached the "daemon" as a waterfall (and writes them all to an
//! HTML page).
//!
//! Run it with `./scripts/demo.sh` (builds everything first). No AWS account or
//! network needed. `--no-extension` sends straight to the daemon instead.

use std::time::Duration;

use lambda_xray_e2e::platform::{Options, Platform};
use lambda_xray_e2e::{Error, Outcome, by_trace, new_trace_header, parse_datagram, schema, waterfall};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let with_extension = !std::env::args().any(|a| a == "--no-extension");
    let platform = Platform::start(Options {
        extension: with_extension,
        freeze: with_extension,
        function: "sample-basic",
        function_env: vec![("POWERTOOLS_SERVICE_NAME", "demo".to_owned())],
        ..Options::default()
    })
    .await;
    println!(
        "Local Lambda platform up: sample-basic{}; X-Ray daemon stand-in on udp://{}\n",
        if with_extension { " with the lambda-xray extension (freeze between invocations)" } else { ", no extension" },
        platform.daemon.address()
    );

    let cases: Vec<(&str, Value, bool)> = vec![
        ("sampled, cold start", json!({"name": "Ada"}), true),
        ("sampled, warm", json!({"name": "Grace"}), true),
        ("unsampled (Sampled=0)", json!({"name": "Linus"}), false),
        ("handler error", json!({"name": "Edsger", "fail": true}), true),
        ("200 KB of metadata (split into datagrams under 64 KiB)", json!({"metadata_kb": 200}), true),
    ];
    let mut runs = Vec::new();
    for (title, payload, sampled) in cases {
        let (header, root, _) = new_trace_header(sampled);
        let outcome = platform.invoke_outcome(payload.clone(), Some(&header), Duration::from_secs(10)).await;
        runs.push((title, payload, header, root, outcome));
    }
    // SHUTDOWN: the extension flushes what it still holds (the last report) and exits.
    let (counters, daemon) = platform.shutdown_keep_daemon().await;
    let datagrams = daemon.datagrams();
    let docs = daemon.try_documents()?;
    let traces = by_trace(&docs);

    let mut problems = 0;
    for d in &docs {
        if let Err(e) = schema::validate(d) {
            problems += 1;
            println!("SCHEMA PROBLEM: {e}");
        }
    }
    let mut waterfalls = Vec::new();
    for (title, payload, header, root, outcome) in &runs {
        println!("━━ {title}\n   payload {payload}\n   header  {header}");
        match outcome {
            Outcome::Response(v) => println!("   result  {v}"),
            Outcome::Error { error_type, error_message } => println!("   error   {error_type}: {error_message}"),
        }
        let Some(trace) = traces.get(root.as_str()) else {
            println!("   (nothing recorded: the trace was not sampled)\n");
            continue;
        };
        let sizes: Vec<usize> =
            datagrams.iter().filter(|d| parse_datagram(d).is_ok_and(|doc| doc["trace_id"] == root.as_str())).map(Vec::len).collect();
        println!("   {} document(s), largest datagram {} bytes", sizes.len(), sizes.iter().max().copied().unwrap_or(0));
        let w = waterfall::layout(trace);
        for line in waterfall::terminal(&w).lines() {
            println!("   {line}");
        }
        println!();
        waterfalls.push(w);
    }
    println!("{} datagrams in all, every one schema-valid: {}", datagrams.len(), problems == 0);
    if let Some(c) = counters {
        println!("extension counters at shutdown: {c}");
    }
    let page = std::env::temp_dir().join("lambda-xray-demo.html");
    std::fs::write(&page, waterfall::html("lambda-xray demo run", &waterfalls))?;
    println!("The same traces as a web page: {}", page.display());
    if problems > 0 {
        return Err(format!("{problems} schema problems").into());
    }
    Ok(())
}
