//! The HTML waterfall of a real run, loaded in headless Chromium (Debian's
//! `chromium`; `scripts/setup-system.sh` installs it): every row is drawn and
//! every bar has a size on screen.

use std::process::Command;
use std::time::Duration;

use lambda_xray_e2e::platform::{Options, Platform};
use lambda_xray_e2e::{new_trace_header, waterfall};
use serde_json::json;

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_waterfall_renders_every_row_in_chromium() -> Result<(), lambda_xray_e2e::Error> {
    assert!(
        std::path::Path::new(&chromium()).exists(),
        "headless Chromium is needed: run scripts/setup-system.sh (installs Debian's chromium) or set CHROMIUM"
    );
    let function = Platform::start(Options { extension: false, freeze: false, function: "sample-basic", ..Options::default() }).await;
    let daemon = &function.daemon;
    let mut waterfalls = Vec::new();
    for payload in [json!({"name": "Ada"}), json!({"name": "Bob", "fail": true})] {
        daemon.clear();
        let (header, root, _) = new_trace_header(true);
        function.invoke_outcome(payload, Some(&header), Duration::from_secs(10)).await;
        let docs = daemon
            .wait_for(Duration::from_secs(10), |d| d.iter().any(|d| d["trace_id"] == root.as_str() && d["name"] == "## handler"))
            .await?;
        waterfalls.push(waterfall::layout(&docs));
    }
    let rows: usize = waterfalls.iter().map(|w| w.rows.len()).sum();
    assert!(rows >= 6, "{rows} rows");

    let dir = std::env::temp_dir().join(format!("lambda-xray-waterfall-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let page = dir.join("run.html");
    std::fs::write(&page, waterfall::html("test run", &waterfalls))?;
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()?;
    let dom = String::from_utf8_lossy(&output.stdout);
    let rendered = dom.split("data-rendered=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("");
    assert_eq!(rendered, format!("{rows} {rows}"), "chromium stderr: {}", String::from_utf8_lossy(&output.stderr));
    // The fault of the failing invocation is marked.
    assert!(dom.contains("class=\"bar fault\""));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
