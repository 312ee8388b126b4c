//! Benchmarks, ignored by default. Build the release extension first and
//! point the harness at it:
//!
//! ```sh
//! cargo build --release -p lambda-xray-extension --bin lambda-xray-extension
//! LAMBDA_XRAY_TEST_EXTENSION=$CARGO_TARGET_DIR/release/lambda-xray-extension \
//!   cargo test -p lambda-xray-extension --test bench -- --ignored --nocapture --test-threads 1
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/otlp_receiver.rs"]
mod otlp_receiver;

use lambda_xray_e2e::platform as common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Options, Platform, extension_binary, wait_until};
use lambda_simulator::{ShutdownReason, Simulator};

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Process start to registered (Extensions and Telemetry APIs) and listening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_startup_and_idle_rss() {
    // Today's path, then with OTLP export on (to a closed local port: start-up
    // does not connect).
    for export in ["daemon", "otlp"] {
        startup_and_idle_rss(export).await;
    }
}

async fn startup_and_idle_rss(export: &str) {
    let mut external = Vec::new();
    let mut internal = Vec::new();
    let mut idle = Vec::new();
    for run in 0..20 {
        let sim = Simulator::builder().build().await.unwrap();
        let marker = std::env::temp_dir().join(format!("lxe-bench-{}-{run}", std::process::id()));
        let mut env: Vec<(String, String)> = sim.lambda_env_vars().into_iter().collect();
        env.push(("LAMBDA_XRAY_EXTENSION_LISTEN".into(), "127.0.0.1:0".into()));
        env.push(("LAMBDA_XRAY_EXTENSION_TELEMETRY_PORT".into(), "0".into()));
        env.push(("LAMBDA_XRAY_EXTENSION_MARKER".into(), marker.display().to_string()));
        env.push(("LAMBDA_XRAY_EXTENSION_EXPORT".into(), export.into()));
        env.push(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(), "http://127.0.0.1:9/v1/traces".into()));
        // A plain child and a blocking reader thread, so the figure is not
        // the test runtime's scheduling.
        let started = Instant::now();
        let mut child = std::process::Command::new(extension_binary())
            .env_clear()
            .envs(env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stderr).lines();
            let line = lines.find(|l| l.as_ref().is_ok_and(|l| l.contains("ready:")));
            let seen = Instant::now();
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
            (seen, line.unwrap().unwrap())
        });
        let pid = child.id();
        assert!(wait_until(Duration::from_secs(10), || reader.is_finished() || std::fs::metadata(&marker).is_ok()).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        idle.push(rss);
        assert_eq!(sim.extension_count().await, 1);
        sim.graceful_shutdown(ShutdownReason::Spindown).await;
        let _ = child.wait();
        let (seen, line) = reader.join().unwrap();
        external.push(seen.duration_since(started).as_secs_f64() * 1000.0);
        let ms: f64 = line.rsplit_once(", ").and_then(|(_, tail)| tail.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap();
        internal.push(ms);
    }
    println!(
        "BENCH startup (export={export}): spawn to registered and listening (parent reads the ready line) median {:.2} ms, \
         in the process main to registered median {:.2} ms; idle VmRSS median {:.0} KiB",
        median(external),
        median(internal),
        median(idle)
    );
}

/// Sends `rate` documents per second for one second to `intake`, paced per
/// millisecond; returns how many were sent and how long it took.
fn offer(intake: SocketAddr, datagram: Vec<u8>, rate: u64) -> (u64, Duration) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let per_ms = rate / 1000;
    let start = Instant::now();
    let mut sent = 0;
    while sent < rate {
        for _ in 0..per_ms {
            socket.send_to(&datagram, intake).unwrap();
        }
        sent += per_ms;
        let due = Duration::from_micros(sent * 1_000_000 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    (sent, start.elapsed())
}

fn golden_datagram() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/raw/001.dgram")).unwrap()
}

/// Intake rate: documents offered at a paced rate for one second straight to
/// the intake (nothing flushes meanwhile); `received` at shutdown says how
/// many the intake took in. The rest were lost in the kernel socket buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_intake_rate() {
    for rate in [50_000u64, 100_000, 150_000, 200_000] {
        let platform = Platform::start(Options {
            freeze: false,
            extension_env: vec![("LAMBDA_XRAY_EXTENSION_BUFFER_BYTES", (1usize << 30).to_string())],
            ..Options::default()
        })
        .await;
        let intake: SocketAddr = std::fs::read_to_string(&platform.marker).unwrap().parse().unwrap();
        let (sent, took) = tokio::task::spawn_blocking(move || offer(intake, golden_datagram(), rate)).await.unwrap();
        let rss = platform.extension.as_ref().unwrap().rss_kib();
        let counters = platform.shutdown().await.unwrap();
        let received = counters["received"].as_u64().unwrap();
        println!(
            "BENCH intake: offered {rate}/s, sent {sent} in {took:.2?}: intake took {received} ({:.1} % lost), \
             {:.0} documents/s; RSS {} KiB holding them",
            100.0 * (sent - received) as f64 / sent as f64,
            received as f64 / took.as_secs_f64(),
            rss.0
        );
    }
}

/// Continuous forwarding throughput: intake and forwarding at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_continuous_forwarding() {
    let platform = Platform::start(Options {
        freeze: false,
        extension_env: vec![("LAMBDA_XRAY_EXTENSION_FLUSH", "continuous".into())],
        ..Options::default()
    })
    .await;
    let extension = platform.extension.as_ref().unwrap();
    assert!(extension.wait_for_line("daemon address from the function", Duration::from_secs(10)).await);
    let intake: SocketAddr = std::fs::read_to_string(&platform.marker).unwrap().parse().unwrap();
    for rate in [20_000u64, 50_000] {
        let before = platform.daemon.count();
        let (sent, took) = tokio::task::spawn_blocking(move || offer(intake, golden_datagram(), rate)).await.unwrap();
        wait_until(Duration::from_secs(5), || platform.daemon.count() - before >= sent as usize).await;
        let arrived = platform.daemon.count() - before;
        println!(
            "BENCH continuous: offered {rate}/s for {took:.2?}: {arrived} of {sent} at the daemon ({:.1} % lost)",
            100.0 * (sent as f64 - arrived as f64) / sent as f64
        );
    }
    platform.shutdown().await;
}

/// User + system CPU of a process so far, from /proc/<pid>/stat, in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100/s on Linux).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks * 10.0
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// What OTLP export costs per flush: the same invocations (the fixture's 5
/// documents, `invocation_done`, plus the report subsegment) with the
/// daemon only, both, and OTLP only to a local receiver on 127.0.0.1; the
/// post-runtime time per invocation (timing proxy), the extension's CPU per
/// invocation (utime+stime over all invocations), its RSS idle after start
/// and after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_otlp_export() {
    const INVOCATIONS: usize = 300;
    let receiver = otlp_receiver::Receiver::start(otlp_receiver::Answer::Ok).await;
    for export in ["daemon", "both", "otlp"] {
        let platform = Platform::start(Options {
            clock: true,
            extension_env: vec![
                ("LAMBDA_XRAY_EXTENSION_EXPORT", export.into()),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint()),
                ("LAMBDA_XRAY_EXTENSION_LOG_LEVEL", "info".into()),
            ],
            ..Options::default()
        })
        .await;
        let extension = platform.extension.as_ref().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle = extension.rss_kib().0;
        let pid = extension.pid;
        let spans_before = receiver.spans().len();
        let mut tails = Vec::new();
        let cpu_start = cpu_ms(pid);
        for _ in 0..INVOCATIONS {
            let (request_id, _) = platform.invoke(serde_json::json!({"docs": 5, "done": true})).await;
            tails.push(platform.post_runtime(&request_id).await.unwrap().as_secs_f64() * 1000.0);
        }
        let cpu = cpu_ms(pid) - cpu_start;
        let (rss, peak) = extension.rss_kib();
        let counters = platform.shutdown().await.unwrap();
        println!(
            "BENCH otlp export={export}: post-runtime p50 {:.3} ms p99 {:.3} ms max {:.3} ms; extension CPU {:.1} µs per invocation; \
             RSS idle {idle} KiB, after {INVOCATIONS} invocations {rss} KiB (peak {peak} KiB); spans at the receiver {}; counters {counters}",
            percentile(tails.clone(), 0.5),
            percentile(tails.clone(), 0.99),
            percentile(tails, 1.0),
            cpu * 1000.0 / INVOCATIONS as f64,
            receiver.spans().len() - spans_before,
        );
    }
}
