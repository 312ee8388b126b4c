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
//! `LAMBDA_XRAY_EXTENSION_MARKER`, and the abstract Unix socket beside it,
//! so the library sends exactly as it does with the extension), and counts
//! what arrives.
//!
//! All modes run side by side, each function process with its own Runtime
//! API and extension stand-ins. After the warm-up, the measured invocations
//! go in blocks (`FUNCTION_CPU_BLOCK`, default 250) taken in turn, in a
//! rotating order, so that the machine's drift (other tenants, the VM's
//! host) falls on every mode alike; each block ends once the function has
//! asked for its next `next`, so an invocation's tail is in its block. The
//! measure is each function process's on-CPU time, summed over its threads
//! from `/proc/<pid>/task/*/schedstat` (exact; utime+stime is printed
//! beside it as a check). Only the functions are measured, never this
//! process. The figures: CPU per invocation of each mode; for each traced
//! mode minus untraced, the difference of the totals and, over the pairs of
//! blocks of the same round, their mean with a 95% confidence interval and
//! their median.
//!
//! Pinning (`FUNCTION_CPU_PIN`, see `pinned_cpus`): by default the
//! functions and the stand-ins share one CPU, as a Lambda function below
//! 1,769 MB shares its one vCPU with its extensions and the Runtime API.
//!
//! Settings (environment): `FUNCTION_CPU_INVOCATIONS` (measured invocations
//! per mode, default 30000), `FUNCTION_CPU_WARMUP` (default 2000),
//! `FUNCTION_CPU_BLOCK` (default 250), `FUNCTION_CPU_CHILDREN` (child
//! subsegments per traced invocation, default 10), `FUNCTION_CPU_PIN` (`one`, `split`,
//! `none`), `FUNCTION_CPU_RUNTIME` (`current_thread` runs the function on
//! tokio's single-threaded runtime; by default `#[tokio::main]`'s
//! multi-threaded one), `FUNCTION_CPU_MODES` (`untraced,traced`;
//! `traced@<path>` runs another build of the function, e.g. of an older
//! commit, in the same session; `traced+udp` gives its extension stand-in
//! no Unix socket, so the library sends over UDP as to an older extension),
//! `FUNCTION_CPU_INTAKE=udp` (no Unix socket for any mode), `FUNCTION_CPU_WRAPPER` (a command to run
//! the function under, `%m` replaced by the mode, e.g. `valgrind
//! --tool=callgrind --callgrind-out-file=/tmp/cg.%m`; the CPU figures are
//! then the wrapper's), `FUNCTION_CPU_PERF` (a path prefix: `perf record -e
//! cpu-clock -g` of the measured invocations to `<prefix>.<mode>.data`),
//! `FUNCTION_CPU_DEADLINE_MS` (the invocation deadline, from `next`;
//! default 300000; 0 sends a deadline of 0, which the library reads as "no
//! deadline"), `FUNCTION_CPU_NO_EXTENSION=1` (no marker: the library sends
//! to the daemon stand-in, a socket nobody reads, so no datagram wakes a
//! reader).

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
    /// `next` requests received.
    nexts: watch::Sender<u64>,
    errors: AtomicU64,
    /// TCP connections accepted: `lambda_runtime`'s client keeps one idle
    /// connection, and opens another when none is idle at the time of a
    /// request (a race with the task that returns the last one to its pool).
    connections: AtomicU64,
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

    async fn wait_nexts(&self, target: u64) {
        let mut rx = self.nexts.subscribe();
        let _ = rx.wait_for(|n| *n >= target).await;
    }

    async fn serve(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let path = req.uri().path().to_owned();
        if path == "/2018-06-01/runtime/invocation/next" {
            self.nexts.send_modify(|n| *n += 1);
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
    let api = Arc::new(RuntimeApi {
        queue: Mutex::default(),
        queued: Notify::new(),
        responses: watch::channel(0).0,
        nexts: watch::channel(0).0,
        errors: AtomicU64::new(0),
        connections: AtomicU64::new(0),
    });
    let served = api.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            served.connections.fetch_add(1, Ordering::Relaxed);
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

/// Reads datagrams with `recv` until `stop`, counting them into `counts`.
fn read_datagrams(recv: impl Fn(&mut [u8]) -> std::io::Result<usize>, stop: &AtomicBool, counts: &Received) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = recv(&mut buf) else { continue };
        let datagram = &buf[..n];
        // A document's header may carry the end of the invocation
        // (`"invocation_done"`); a control message is one line.
        let (header, body) = match datagram.iter().position(|&b| b == b'\n') {
            Some(i) => (&datagram[..i], &datagram[i + 1..]),
            None => (datagram, &[][..]),
        };
        let marks_done = header.windows(17).any(|w| w == b"\"invocation_done\"");
        if header.starts_with(b"{\"format\":\"json\",\"version\":1") && !body.is_empty() {
            counts.documents.fetch_add(1, Ordering::Relaxed);
        } else if !marks_done {
            counts.other.fetch_add(1, Ordering::Relaxed);
        }
        if marks_done {
            counts.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the extension stand-in received.
#[derive(Default)]
struct Received {
    documents: AtomicU64,
    done: AtomicU64,
    other: AtomicU64,
}

fn start_extension_stand_in(stop: Arc<AtomicBool>, udp_only: bool) -> Result<(SocketAddr, Arc<Received>), Error> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let addr = socket.local_addr()?;
    let received = Arc::new(Received::default());
    let counts = received.clone();
    let udp_stop = stop.clone();
    std::thread::spawn(move || read_datagrams(|buf| socket.recv(buf), &udp_stop, &counts));
    // The extension's Unix socket beside it, as the real one has (unless
    // `udp_only`: then the library sends over UDP, as to an older extension).
    if !udp_only {
        use std::os::linux::net::SocketAddrExt;
        let name = lambda_xray_wire::unix_intake_name(addr);
        let unix = std::os::unix::net::UnixDatagram::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?)?;
        unix.set_read_timeout(Some(Duration::from_millis(50)))?;
        let counts = received.clone();
        std::thread::spawn(move || read_datagrams(|buf| unix.recv(buf), &stop, &counts));
    }
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

/// A function process under measurement, with its own Runtime API and
/// extension stand-ins (so each mode's datagrams are counted apart).
struct Function {
    mode: String,
    child: tokio::process::Child,
    pid: u32,
    api: Arc<RuntimeApi>,
    received: Arc<Received>,
    perf: Option<std::process::Child>,
    /// Invocations handed out so far.
    invoked: u64,
    /// On-CPU ns of the process when its last block ended.
    cpu_ns: u64,
    /// Per block: on-CPU ns per invocation.
    blocks: Vec<f64>,
    /// New Runtime API connections per invocation, per block.
    block_connections: Vec<f64>,
    measured_ns: u64,
    measured: u64,
    switches: (u64, u64),
    ticks: f64,
    counts: (u64, u64, u64, u64),
    marker: std::path::PathBuf,
}

impl Function {
    async fn start(mode: &str, index: usize, daemon: SocketAddr, stop: Arc<AtomicBool>) -> Result<Function, Error> {
        // `traced@/path/to/bench-function`: another build of the function (e.g. of an
        // older commit), to compare in the same session. `traced+udp`: its
        // extension stand-in has no Unix socket, so the library sends over UDP.
        let (kind, binary) = mode.split_once('@').unwrap_or((mode, env!("CARGO_BIN_EXE_bench-function")));
        let (kind, udp_only) = match kind.strip_suffix("+udp") {
            Some(kind) => (kind, true),
            None => (kind, std::env::var("FUNCTION_CPU_INTAKE").as_deref() == Ok("udp")),
        };
        let (api_addr, api) = start_runtime_api().await?;
        let (extension_addr, received) = start_extension_stand_in(stop, udp_only)?;
        let marker = std::env::temp_dir().join(format!("lambda-xray-bench-marker-{}-{index}", std::process::id()));
        std::fs::write(&marker, extension_addr.to_string())?;
        let wrapper = std::env::var("FUNCTION_CPU_WRAPPER").unwrap_or_default();
        let wrapper = wrapper.replace("%m", &mode.replace(['/', '@'], "_"));
        let mut words: Vec<String> = match pinned_cpus() {
            Some((_, function_cpu)) => vec!["taskset".into(), "-c".into(), function_cpu.to_string()],
            None => Vec::new(),
        };
        words.extend(wrapper.split_whitespace().map(str::to_owned));
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
                if setting("FUNCTION_CPU_NO_EXTENSION", 0) == 1 { std::path::Path::new("/nonexistent") } else { &marker },
            )
            .env("BENCH_MODE", kind)
            .env("BENCH_CHILDREN", std::env::var("FUNCTION_CPU_CHILDREN").unwrap_or_else(|_| "10".into()))
            .env("BENCH_RUNTIME", std::env::var("FUNCTION_CPU_RUNTIME").unwrap_or_default())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn()?;
        let pid = child.id().ok_or("no pid")?;
        Ok(Function {
            mode: mode.to_owned(),
            child,
            pid,
            api,
            received,
            perf: None,
            invoked: 0,
            cpu_ns: 0,
            blocks: Vec::new(),
            block_connections: Vec::new(),
            measured_ns: 0,
            measured: 0,
            switches: (0, 0),
            ticks: 0.0,
            counts: (0, 0, 0, 0),
            marker,
        })
    }

    /// Runs `count` invocations one after another and waits until the
    /// function is parked on its next `next`; returns the process's on-CPU ns.
    async fn invoke(&mut self, count: u64) -> Result<u64, Error> {
        let from = self.invoked;
        self.invoked += count;
        self.api.enqueue(from, count).await;
        self.api.wait_responses(self.invoked).await;
        // The function posts the response, then asks for `next`: wait for that
        // request so the invocation's tail is in this block.
        self.api.wait_nexts(self.invoked + 1).await;
        let errors = self.api.errors.load(Ordering::Relaxed);
        if errors > 0 {
            return Err(format!("{}: the function reported {errors} errors", self.mode).into());
        }
        cpu_ns(self.pid)
    }

    /// Documents, end-of-invocation marks, other datagrams, Runtime API connections.
    fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.received.documents.load(Ordering::Relaxed),
            self.received.done.load(Ordering::Relaxed),
            self.received.other.load(Ordering::Relaxed),
            self.api.connections.load(Ordering::Relaxed),
        )
    }

    async fn stop(mut self) -> Result<Function, Error> {
        if let Some(mut perf) = self.perf.take() {
            signal(perf.id(), "INT");
            let _ = perf.wait();
        }
        // SIGTERM first, so that a wrapper (valgrind) can write its output.
        signal(self.pid, "TERM");
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            self.child.kill().await?;
        }
        let _ = std::fs::remove_file(&self.marker);
        Ok(self)
    }
}

/// CPU pinning, `FUNCTION_CPU_PIN`: `one` (the default with two CPUs or
/// more) puts the functions and this process's stand-ins on the same CPU,
/// the last: Lambda gives a function one vCPU up to 1,769 MB, shared with
/// its extensions and the Runtime API, so a datagram or a response wakes a
/// process on the same CPU, not across CPUs (which on a VM is an
/// inter-processor interrupt through the hypervisor, tens of µs that belong
/// to no Lambda). `split`: the functions on the last CPU, the stand-ins on
/// the others. `none`: no pinning. Returns (this process's CPUs, the
/// functions' CPU).
fn pinned_cpus() -> Option<(String, usize)> {
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    match std::env::var("FUNCTION_CPU_PIN").as_deref() {
        Ok("none") => None,
        Ok("split") if cpus >= 2 => Some((format!("0-{}", cpus - 2), cpus - 1)),
        _ if cpus >= 2 => Some(((cpus - 1).to_string(), cpus - 1)),
        _ => None,
    }
}

/// On-CPU time of all threads of a process, in ns (`/proc/<pid>/task/*/schedstat`,
/// exact, unlike the tick-sampled utime/stime).
fn cpu_ns(pid: u32) -> Result<u64, Error> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else { continue };
        total += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(total)
}

fn start_perf(pid: u32, mode: &str) -> Result<Option<std::process::Child>, Error> {
    match std::env::var("FUNCTION_CPU_PERF") {
        Ok(prefix) if !prefix.is_empty() => Ok(Some(
            std::process::Command::new("perf")
                .args(["record", "-q", "-e", "cpu-clock", "-F", "20000", "-g", "-p", &pid.to_string(), "-o"])
                .arg(format!("{prefix}.{}.data", mode.replace(['/', '@'], "_")))
                .spawn()?,
        )),
        _ => Ok(None),
    }
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

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Half-width of a 95% confidence interval of the mean (normal approximation).
fn ci95(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let m = mean(values);
    let variance = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    1.96 * (variance / n).sqrt()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let measured = setting("FUNCTION_CPU_INVOCATIONS", 30_000).max(1);
    let warmup = setting("FUNCTION_CPU_WARMUP", 2_000);
    let block = setting("FUNCTION_CPU_BLOCK", 250).clamp(1, measured);
    let modes_setting = std::env::var("FUNCTION_CPU_MODES").unwrap_or_else(|_| "untraced,traced".to_owned());
    let modes: Vec<&str> = modes_setting.split(',').map(str::trim).filter(|m| !m.is_empty()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let daemon = UdpSocket::bind("127.0.0.1:0")?;
    let daemon_addr = daemon.local_addr()?;
    let pinned = pinned_cpus();
    let mut functions = Vec::new();
    for (i, mode) in modes.iter().enumerate() {
        functions.push(Function::start(mode, i, daemon_addr, stop.clone()).await?);
    }
    if let Some((own, function_cpu)) = &pinned {
        // After the stand-ins' threads exist: all of them move.
        let status = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", own, &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            return Err("taskset failed (FUNCTION_CPU_PIN=none runs unpinned)".into());
        }
        println!("function_cpu: functions pinned to CPU {function_cpu}, the stand-ins to CPUs {own}");
    }
    println!(
        "function_cpu: {} ({}), {measured} measured invocations each after {warmup} warm-up, in blocks of {block} taken in turn; on-CPU time of each function process",
        modes.len(),
        modes.join(", "),
    );

    // All functions run side by side; blocks alternate between them (in a
    // rotating order), so the machine's drift hits every mode alike.
    for f in &mut functions {
        f.invoke(warmup).await?;
    }
    // Let the warm-up's datagrams arrive before counting from zero.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for f in &mut functions {
        f.perf = start_perf(f.pid, &f.mode)?;
        f.cpu_ns = cpu_ns(f.pid)?;
        f.switches = context_switches(f.pid);
        f.ticks = cpu_seconds(f.pid)?;
        f.counts = f.counts();
    }
    let wall0 = Instant::now();
    let rounds = measured.div_ceil(block);
    for round in 0..rounds {
        let count = block.min(measured - round * block);
        let n = functions.len();
        for k in 0..n {
            let f = &mut functions[(k + round as usize) % n];
            let connections = f.api.connections.load(Ordering::Relaxed);
            let now = f.invoke(count).await?;
            f.block_connections.push((f.api.connections.load(Ordering::Relaxed) - connections) as f64 / count as f64);
            f.blocks.push(now.saturating_sub(f.cpu_ns) as f64 / 1e3 / count as f64);
            f.measured_ns += now.saturating_sub(f.cpu_ns);
            f.measured += count;
            f.cpu_ns = now;
        }
    }
    let wall = wall0.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut results = Vec::new();
    for f in functions {
        let switches = context_switches(f.pid);
        let ticks = cpu_seconds(f.pid)? - f.ticks;
        let counts = f.counts();
        let m = f.measured as f64;
        println!(
            "  {:>8}: {:7.2} µs on CPU per invocation ({:.2} µs by utime+stime), {:.2}+{:.2} context switches (voluntary+involuntary), {:.2} documents, {:.2} end marks, {:.2} other datagrams, {:.2} new Runtime API connections per invocation",
            f.mode,
            f.measured_ns as f64 / 1e3 / m,
            ticks * 1e6 / m,
            switches.0.saturating_sub(f.switches.0) as f64 / m,
            switches.1.saturating_sub(f.switches.1) as f64 / m,
            (counts.0 - f.counts.0) as f64 / m,
            (counts.1 - f.counts.1) as f64 / m,
            (counts.2 - f.counts.2) as f64 / m,
            (counts.3 - f.counts.3) as f64 / m,
        );
        results.push(f.stop().await?);
    }
    stop.store(true, Ordering::Relaxed);
    println!("  ({:.1} s wall for the measured blocks)", wall.as_secs_f64());

    // `lambda_runtime`'s client opens a new connection (and closes one) when
    // no idle one is back in its pool at the time of a request: a race whose
    // odds move with timing, so they differ between modes. Its cost per
    // connection, from the blocks (one slope shared by all modes, each
    // with its own mean), to show how much of a difference it explains.
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for f in &results {
        let (mx, my) = (mean(&f.block_connections), mean(&f.blocks));
        for (x, y) in f.block_connections.iter().zip(&f.blocks) {
            sxy += (x - mx) * (y - my);
            sxx += (x - mx) * (x - mx);
        }
    }
    let per_connection = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    println!("  a new Runtime API connection costs the function {per_connection:.1} µs (slope over the blocks)");
    if let Some(u) = results.iter().position(|f| f.mode == "untraced") {
        for t in results.iter().filter(|f| f.mode != "untraced") {
            let u_conns = &results[u].block_connections;
            let adjusted: Vec<f64> = results[u]
                .blocks
                .iter()
                .zip(&t.blocks)
                .zip(u_conns.iter().zip(&t.block_connections))
                .map(|((ub, tb), (uc, tc))| tb - ub - per_connection * (tc - uc))
                .collect();
            println!(
                "  {} - untraced, at equal Runtime API connections: mean {:6.2} ± {:.2} µs (95% CI), median {:6.2} µs ({:+.2} connections per invocation)",
                t.mode,
                mean(&adjusted),
                ci95(&adjusted),
                median(&mut adjusted.clone()),
                mean(&t.block_connections) - mean(u_conns),
            );
            // Pair each block with the untraced block of the same round.
            let diffs: Vec<f64> = results[u].blocks.iter().zip(&t.blocks).map(|(u, t)| t - u).collect();
            let total = t.measured_ns as f64 / t.measured as f64 / 1e3 - results[u].measured_ns as f64 / results[u].measured as f64 / 1e3;
            println!(
                "  {} - untraced: {total:6.2} µs per invocation (totals); per block pair: mean {:6.2} ± {:.2} µs (95% CI), median {:6.2} µs, over {} pairs",
                t.mode,
                mean(&diffs),
                ci95(&diffs),
                median(&mut diffs.clone()),
                diffs.len(),
            );
        }
    }
    Ok(())
}
