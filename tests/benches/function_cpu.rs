//! Black-box cost of lambda-xray per invocation: CPU time of the function
//! process, traced minus untraced.
//!
//! Run: `cargo bench -p lambda-xray-e2e --bench function_cpu`
//!
//! The function is `bench-function` (`tests/src/bin/bench-function.rs`, built
//! by cargo with the bench profile): traced, `lambda_xray_tracing::run` with the
//! `## handler` subsegment and 10 child subsegments of one annotation each;
//! untraced, plain `lambda_runtime::run` doing the same work. This process
//! stands in for the Lambda Runtime API (a minimal HTTP/1.1 server on
//! 127.0.0.1: every `next` gets a sampled `Lambda-Runtime-Trace-Id`) and for
//! the extension (a UDP socket on 127.0.0.1 named in a marker file given as
//! `LAMBDA_XRAY_EXTENSION_MARKER`, so the library sends exactly as it does
//! with the extension), and counts what arrives.
//!
//! Per run: start the function, run the warm-up invocations, read the
//! function's utime+stime from `/proc/<pid>/stat`, run the measured
//! invocations, read it again (the function is then waiting on `next`), stop
//! it. Only the function process is measured, never this one. Runs alternate
//! untraced/traced; the figures are medians over the runs.
//!
//! Settings (environment): `FUNCTION_CPU_INVOCATIONS` (measured invocations
//! per run, default 30000), `FUNCTION_CPU_WARMUP` (default 2000),
//! `FUNCTION_CPU_RUNS` (runs per mode, default 5), `FUNCTION_CPU_MODES`
//! (`untraced,traced`; `traced@<path>` runs another build of the function,
//! e.g. of an older commit, in the same session), `FUNCTION_CPU_WRAPPER` (a command to run the function
//! under, e.g. `valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p`;
//! the CPU figures are then the wrapper's), `FUNCTION_CPU_PERF` (a path
//! prefix: `perf record -e cpu-clock -g` of the measured invocations to
//! `<prefix>.<mode>.data`), `FUNCTION_CPU_DEADLINE_MS` (the invocation
//! deadline, from `next`; default 300000; 0 sends a deadline of 0, which the
//! library reads as "no deadline"), `FUNCTION_CPU_NO_EXTENSION=1` (no marker:
//! the library sends to the daemon stand-in, a socket nobody reads).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, Notify, watch};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The Runtime API stand-in's state: invocations waiting for a `next`, and
/// the number of responses received.
struct RuntimeApi {
    queue: Mutex<VecDeque<u64>>,
    queued: Notify,
    responses: watch::Sender<u64>,
    errors: AtomicU64,
}

impl RuntimeApi {
    async fn next_invocation(&self) -> u64 {
        loop {
            let notified = self.queued.notified();
            if let Some(n) = self.queue.lock().await.pop_front() {
                return n;
            }
            notified.await;
        }
    }

    async fn enqueue(&self, from: u64, count: u64) {
        self.queue.lock().await.extend(from..from + count);
        self.queued.notify_waiters();
        self.queued.notify_one();
    }

    async fn wait_responses(&self, target: u64) {
        let mut rx = self.responses.subscribe();
        let _ = rx.wait_for(|n| *n >= target).await;
    }

    async fn serve(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let path = req.uri().path().to_owned();
        if path == "/2018-06-01/runtime/invocation/next" {
            let n = self.next_invocation().await;
            let deadline = match setting("FUNCTION_CPU_DEADLINE_MS", 300_000) {
                0 => 0,
                ms => SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() + u128::from(ms),
            };
            let trace = format!("Root=1-5759e988-{n:024x};Parent={:016x};Sampled=1", n + 1);
            let response = Response::builder()
                .header("Lambda-Runtime-Aws-Request-Id", format!("req-{n}"))
                .header("Lambda-Runtime-Deadline-Ms", deadline.to_string())
                .header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
                .header("Lambda-Runtime-Trace-Id", trace)
                .header("Content-Type", "application/json")
                .body(Full::new(Bytes::from(format!("{{\"n\":{n}}}"))))
                .unwrap();
            return Ok(response);
        }
        let is_error = path.ends_with("/error");
        let _ = req.into_body().collect().await?;
        if is_error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if path.ends_with("/response") || (is_error && !path.contains("/init/")) {
            self.responses.send_modify(|n| *n += 1);
        }
        Ok(Response::builder().status(202).body(Full::new(Bytes::new())).unwrap())
    }
}

async fn start_runtime_api() -> Result<(SocketAddr, Arc<RuntimeApi>), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let api =
        Arc::new(RuntimeApi { queue: Mutex::default(), queued: Notify::new(), responses: watch::channel(0).0, errors: AtomicU64::new(0) });
    let served = api.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let api = served.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| api.clone().serve(req));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok((addr, api))
}

/// What the extension stand-in received.
#[derive(Default)]
struct Received {
    documents: AtomicU64,
    done: AtomicU64,
    other: AtomicU64,
}

fn start_extension_stand_in(stop: Arc<AtomicBool>) -> Result<(SocketAddr, Arc<Received>), Error> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let addr = socket.local_addr()?;
    let received = Arc::new(Received::default());
    let counts = received.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let Ok(n) = socket.recv(&mut buf) else { continue };
            let datagram = &buf[..n];
            if datagram.starts_with(b"{\"format\":\"json\",\"version\":1}\n") {
                counts.documents.fetch_add(1, Ordering::Relaxed);
            } else if datagram.windows(17).any(|w| w == b"\"invocation_done\"") {
                counts.done.fetch_add(1, Ordering::Relaxed);
            } else {
                counts.other.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Ok((addr, received))
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).ok_or("no utime")?.parse::<u64>()? + fields.get(12).ok_or("no stime")?.parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// Context switches (voluntary, involuntary) of all threads of a process.
fn context_switches(pid: u32) -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return (0, 0) };
    let (mut voluntary, mut involuntary) = (0, 0);
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                voluntary += v.trim().parse::<u64>().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("nonvoluntary_ctxt_switches:") {
                involuntary += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    (voluntary, involuntary)
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

struct RunResult {
    cpu_us_per_invocation: f64,
    wall_us_per_invocation: f64,
    voluntary_per_invocation: f64,
    involuntary_per_invocation: f64,
    documents: u64,
    done: u64,
    other: u64,
}

async fn run_once(
    mode: &str,
    marker: &std::path::Path,
    daemon: SocketAddr,
    received: &Received,
    warmup: u64,
    measured: u64,
) -> Result<RunResult, Error> {
    let (api_addr, api) = start_runtime_api().await?;
    // `traced@/path/to/bench-function`: another build of the function (e.g. of an
    // older commit), to compare in the same session.
    let (mode, binary) = mode.split_once('@').unwrap_or((mode, env!("CARGO_BIN_EXE_bench-function")));
    let wrapper = std::env::var("FUNCTION_CPU_WRAPPER").unwrap_or_default();
    let mut words: Vec<String> = wrapper.split_whitespace().map(str::to_owned).collect();
    words.push(binary.to_owned());
    let mut command = tokio::process::Command::new(&words[0]);
    command
        .args(&words[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", api_addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("_HANDLER", "bootstrap")
        .env("AWS_XRAY_DAEMON_ADDRESS", daemon.to_string())
        .env(
            "LAMBDA_XRAY_EXTENSION_MARKER",
            if setting("FUNCTION_CPU_NO_EXTENSION", 0) == 1 { std::path::Path::new("/nonexistent") } else { marker },
        )
        .env("BENCH_MODE", mode)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let pid = child.id().ok_or("no pid")?;

    received.documents.store(0, Ordering::Relaxed);
    received.done.store(0, Ordering::Relaxed);
    received.other.store(0, Ordering::Relaxed);
    api.enqueue(0, warmup).await;
    api.wait_responses(warmup).await;
    // Let the datagrams of the warm-up arrive before counting from zero.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (docs0, done0, other0) =
        (received.documents.load(Ordering::Relaxed), received.done.load(Ordering::Relaxed), received.other.load(Ordering::Relaxed));

    // Optional profile of the measured invocations only.
    let perf = match std::env::var("FUNCTION_CPU_PERF") {
        Ok(prefix) if !prefix.is_empty() => Some(
            std::process::Command::new("perf")
                .args([
                    "record",
                    "-q",
                    "-e",
                    "cpu-clock",
                    "-F",
                    "20000",
                    "-g",
                    "-p",
                    &pid.to_string(),
                    "-o",
                    &format!("{prefix}.{mode}.data"),
                ])
                .spawn()?,
        ),
        _ => None,
    };
    let cpu0 = cpu_seconds(pid)?;
    let switches0 = context_switches(pid);
    let wall0 = Instant::now();
    api.enqueue(warmup, measured).await;
    api.wait_responses(warmup + measured).await;
    let wall = wall0.elapsed();
    // The function posts the response, then asks for `next` and blocks: wait
    // for that (a few ms) so the last invocation's tail is counted too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cpu1 = cpu_seconds(pid)?;
    let switches1 = context_switches(pid);
    if let Some(mut perf) = perf {
        signal(perf.id(), "INT");
        let _ = perf.wait();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let errors = api.errors.load(Ordering::Relaxed);
    // SIGTERM first, so that a wrapper (valgrind) can write its output.
    signal(pid, "TERM");
    if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_err() {
        child.kill().await?;
    }
    if errors > 0 {
        return Err(format!("{mode}: the function reported {errors} errors").into());
    }
    Ok(RunResult {
        cpu_us_per_invocation: (cpu1 - cpu0) * 1e6 / measured as f64,
        wall_us_per_invocation: wall.as_secs_f64() * 1e6 / measured as f64,
        voluntary_per_invocation: switches1.0.saturating_sub(switches0.0) as f64 / measured as f64,
        involuntary_per_invocation: switches1.1.saturating_sub(switches0.1) as f64 / measured as f64,
        documents: received.documents.load(Ordering::Relaxed) - docs0,
        done: received.done.load(Ordering::Relaxed) - done0,
        other: received.other.load(Ordering::Relaxed) - other0,
    })
}

/// Sends a signal with kill(1).
fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let measured = setting("FUNCTION_CPU_INVOCATIONS", 30_000).max(1);
    let warmup = setting("FUNCTION_CPU_WARMUP", 2_000);
    let runs = setting("FUNCTION_CPU_RUNS", 5).max(1);
    let modes_setting = std::env::var("FUNCTION_CPU_MODES").unwrap_or_else(|_| "untraced,traced".to_owned());
    let modes: Vec<&str> = modes_setting.split(',').map(str::trim).filter(|m| !m.is_empty()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let (extension_addr, received) = start_extension_stand_in(stop.clone())?;
    let daemon = UdpSocket::bind("127.0.0.1:0")?;
    let daemon_addr = daemon.local_addr()?;
    let marker = std::env::temp_dir().join(format!("lambda-xray-bench-marker-{}", std::process::id()));
    std::fs::write(&marker, extension_addr.to_string())?;

    println!(
        "function_cpu: {measured} invocations per run after {warmup} warm-up, {runs} run(s) per mode, CPU of the function process (utime+stime, {} ticks/s)",
        clock_ticks_per_second()
    );
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for run in 0..runs {
        for (i, mode) in modes.iter().enumerate() {
            let r = run_once(mode, &marker, daemon_addr, &received, warmup, measured).await?;
            println!(
                "  run {} {mode:>8}: {:7.2} µs CPU/invocation, {:7.2} µs wall, {:.2}+{:.2} context switches (voluntary+involuntary) per invocation; {:.2} documents, {:.2} done messages, {:.2} other datagrams per invocation",
                run + 1,
                r.cpu_us_per_invocation,
                r.wall_us_per_invocation,
                r.voluntary_per_invocation,
                r.involuntary_per_invocation,
                r.documents as f64 / measured as f64,
                r.done as f64 / measured as f64,
                r.other as f64 / measured as f64,
            );
            cpu[i].push(r.cpu_us_per_invocation);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = std::fs::remove_file(&marker);

    println!("CPU per invocation, median (min) over the runs:");
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    for (mode, v) in modes.iter().zip(&cpu) {
        println!("  {mode:>8}: {:7.2} µs ({:.2})", median(&mut v.clone()), min(v));
    }
    if let Some(u) = modes.iter().position(|m| *m == "untraced") {
        for (t, mode) in modes.iter().enumerate().filter(|(_, m)| m.starts_with("traced")) {
            // Runs of the two modes alternate: pair them in order.
            let mut diffs: Vec<f64> = cpu[u].iter().zip(&cpu[t]).map(|(u, t)| t - u).collect();
            let of_medians = median(&mut cpu[t].clone()) - median(&mut cpu[u].clone());
            println!(
                "  {mode} - untraced: {of_medians:7.2} µs (difference of the medians), {:7.2} µs (median of the per-run differences), {:7.2} µs (difference of the minimums)",
                median(&mut diffs),
                min(&cpu[t]) - min(&cpu[u]),
            );
        }
    }
    Ok(())
}
