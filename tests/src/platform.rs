//! A local Lambda platform for end-to-end tests: the `lambda-simulator` crate
//! (Runtime, Extensions and Telemetry APIs, freeze/thaw with SIGSTOP/SIGCONT),
//! a UDP socket standing in for the X-Ray daemon, and the real extension and
//! function binaries as child processes, started the way Lambda starts them.
//!
//! The function is `Options::function` (a binary built in this workspace, by
//! default the extension's `test-fixture-function`); `LAMBDA_XRAY_TEST_FUNCTION`
//! swaps in another path. Child processes' stderr is echoed when
//! `E2E_VERBOSE` is set.

// A test harness: a failed setup step is a failed test, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lambda_simulator::invocation::Invocation;

use crate::api_clock::ApiClock;
use crate::{Daemon, Outcome};
use lambda_simulator::{DeliveryPolicy, FreezeMode, InvocationStatus, ShutdownReason, Simulator};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The extension under test: the one cargo built, unless
/// `LAMBDA_XRAY_TEST_EXTENSION` names another (e.g. the release build for benchmarks).
pub fn extension_binary() -> PathBuf {
    std::env::var_os("LAMBDA_XRAY_TEST_EXTENSION").map(PathBuf::from).unwrap_or_else(|| crate::bin_path("lambda-xray-extension").unwrap())
}
/// Generous timeout for anything on a loaded 2-core machine.
pub const LONG: Duration = Duration::from_secs(30);

/// The function binary: `name` unless `LAMBDA_XRAY_TEST_FUNCTION` is set.
pub fn function_binary(name: &str) -> PathBuf {
    std::env::var_os("LAMBDA_XRAY_TEST_FUNCTION").map(PathBuf::from).unwrap_or_else(|| crate::bin_path(name).unwrap())
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Validates documents against `fixtures/xray-segment-schema.json`.
pub fn assert_schema_valid(documents: &[Value]) {
    for document in documents {
        if let Err(e) = crate::schema::validate(document) {
            panic!("{e}");
        }
    }
}

/// A child process whose stderr lines are kept (and echoed for debugging).
pub struct Process {
    /// The child process.
    pub child: Child,
    /// Its process id.
    pub pid: u32,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    stderr_closed: Arc<AtomicBool>,
}

impl Process {
    /// Spawns `binary` with exactly `env`.
    pub fn spawn(binary: &std::path::Path, env: Vec<(String, String)>, tag: &'static str) -> Self {
        let mut child = Command::new(binary)
            .env_clear()
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        let stderr_closed = Arc::new(AtomicBool::new(false));
        let closed = stderr_closed.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            let verbose = std::env::var_os("E2E_VERBOSE").is_some();
            while let Ok(Some(line)) = reader.next_line().await {
                if verbose {
                    eprintln!("{tag}[{pid}] {line}");
                }
                sink.lock().unwrap().push((Instant::now(), line));
            }
            closed.store(true, Ordering::Relaxed);
        });
        Self { child, pid, lines, stderr_closed }
    }

    /// stderr lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().iter().map(|(_, l)| l.clone()).collect()
    }

    /// When the first line containing `needle` was read.
    pub fn line_seen_at(&self, needle: &str) -> Option<Instant> {
        let lines = self.lines.lock().unwrap();
        lines.iter().find(|(_, l)| l.contains(needle)).map(|(at, _)| *at)
    }

    /// Waits for a stderr line containing `needle`.
    pub async fn wait_for_line(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.lines().iter().any(|l| l.contains(needle))).await
    }

    /// The last `counters {..}` line the extension logged.
    pub fn counters(&self) -> Option<Value> {
        self.lines().iter().rev().find_map(|line| {
            let (_, json) = line.split_once("counters ")?;
            serde_json::from_str(json).ok()
        })
    }

    /// Waits for the process to exit and its stderr to be read to the end.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = tokio::time::timeout(timeout, self.child.wait()).await.ok().and_then(Result::ok);
        wait_until(timeout, || self.stderr_closed.load(Ordering::Relaxed)).await;
        status
    }

    /// Current and peak resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// Whether a process is stopped (SIGSTOP) or gone.
fn stopped(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t')),
        Err(_) => true,
    }
}

/// How to set up one test's platform.
pub struct Options {
    /// Run the extension at all.
    pub extension: bool,
    /// Extra environment for the extension.
    pub extension_env: Vec<(&'static str, String)>,
    /// The daemon address the function knows (and tells the extension);
    /// `None` means the test daemon.
    pub function_daemon: Option<SocketAddr>,
    /// Freeze both processes (SIGSTOP) once an invocation is over, as Lambda does.
    pub freeze: bool,
    /// How long the platform waits for extensions to call `next`.
    pub extension_ready_timeout: Duration,
    /// The function binary (built in this workspace).
    pub function: &'static str,
    /// Extra environment for the function.
    pub function_env: Vec<(&'static str, String)>,
    /// Telemetry API delivery policies by event type; the default,
    /// [`lambda_telemetry`], models Lambda's buffering.
    pub telemetry: Vec<(&'static str, DeliveryPolicy)>,
    /// Put an [`ApiClock`] between the processes and the Lambda APIs, for
    /// sub-millisecond post-runtime times ([`Platform::post_runtime`]).
    pub clock: bool,
}

/// The platform events the extension subscribes to that matter to it.
pub const PLATFORM_EVENTS: [&str; 3] = ["platform.start", "platform.runtimeDone", "platform.report"];

/// Lambda delivers a Telemetry API batch when the subscriber's buffering
/// `timeoutMs` (25 ms at the least) runs out, so no event reaches a
/// subscriber sooner than 25 ms after it happened. The simulator delivers on a
/// fixed interval of `timeoutMs` instead (0 to 25 ms after the event), so each
/// event is first held back 25 ms: delivery comes 25 to 50 ms after the event,
/// never sooner than on Lambda.
pub fn lambda_telemetry() -> Vec<(&'static str, DeliveryPolicy)> {
    PLATFORM_EVENTS.iter().map(|&t| (t, DeliveryPolicy::Delay(Duration::from_millis(25)))).collect()
}

impl Default for Options {
    fn default() -> Self {
        Self {
            extension: true,
            extension_env: Vec::new(),
            function_daemon: None,
            freeze: true,
            // The simulator's own wait for readiness can miss the moment
            // (see `invoke_with_header`); then this is how late it freezes.
            extension_ready_timeout: Duration::from_secs(5),
            function: "test-fixture-function",
            function_env: Vec::new(),
            telemetry: lambda_telemetry(),
            clock: false,
        }
    }
}

/// One sandbox: platform, daemon, extension and function.
pub struct Platform {
    /// The Lambda APIs.
    pub sim: Simulator,
    /// The stand-in X-Ray daemon.
    pub daemon: Daemon,
    /// The extension's discovery marker file (per platform).
    pub marker: PathBuf,
    /// The extension process, if it runs.
    pub extension: Option<Process>,
    /// The function process.
    pub function: Process,
    extension_alive: bool,
    freeze: bool,
    clock: Option<ApiClock>,
    /// How long telemetry events of the last invocation may still be on
    /// their way (the modelled buffering delays up to a second).
    telemetry_in_flight: Duration,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Platform {
    /// Starts the platform, then the extension (and waits until it registered),
    /// then the function: Lambda's init order.
    pub async fn start(options: Options) -> Self {
        let mut builder = Simulator::builder()
            .function_name("xray-fixture")
            .memory_size_mb(128)
            .invocation_timeout(LONG)
            .extension_ready_timeout(options.extension_ready_timeout)
            .shutdown_timeout(Duration::from_millis(2000));
        if options.freeze {
            builder = builder.freeze_mode(FreezeMode::Process);
        }
        let sim = builder.build().await.unwrap();
        for (event_type, policy) in &options.telemetry {
            sim.set_telemetry_delivery_policy(*event_type, *policy).await;
        }
        let daemon = Daemon::start().unwrap();
        let marker = std::env::temp_dir().join(format!(
            "lambda-xray-extension-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&marker);
        let mut base_env = sim.lambda_env_vars();
        let clock = if options.clock { Some(ApiClock::start(sim.addr()).await) } else { None };
        if let Some(clock) = &clock {
            base_env.insert("AWS_LAMBDA_RUNTIME_API".into(), clock.addr().to_string());
        }
        let function_daemon = options.function_daemon.unwrap_or(daemon.addr);

        let extension = if options.extension {
            let mut env: Vec<(String, String)> = base_env.clone().into_iter().collect();
            env.push(("LAMBDA_XRAY_EXTENSION_LISTEN".into(), "127.0.0.1:0".into()));
            env.push(("LAMBDA_XRAY_EXTENSION_TELEMETRY_PORT".into(), "0".into()));
            env.push(("LAMBDA_XRAY_EXTENSION_MARKER".into(), marker.display().to_string()));
            env.push(("LAMBDA_XRAY_EXTENSION_LOG_LEVEL".into(), "debug".into()));
            for (key, value) in &options.extension_env {
                env.push(((*key).into(), value.clone()));
            }
            let process = Process::spawn(&extension_binary(), env, "extension");
            assert!(process.wait_for_line("ready:", LONG).await, "extension did not register");
            assert!(marker.exists(), "marker written before registering");
            if options.freeze {
                sim.register_freeze_pid(process.pid);
            }
            Some(process)
        } else {
            None
        };

        let mut env: Vec<(String, String)> = base_env.into_iter().collect();
        env.push(("LAMBDA_XRAY_EXTENSION_MARKER".into(), marker.display().to_string()));
        env.push(("AWS_XRAY_DAEMON_ADDRESS".into(), function_daemon.to_string()));
        for (key, value) in &options.function_env {
            env.push(((*key).into(), value.clone()));
        }
        let function = Process::spawn(&function_binary(options.function), env, "function");
        if options.freeze {
            sim.register_freeze_pid(function.pid);
        }
        let extension_alive = extension.is_some();
        let telemetry_in_flight = options
            .telemetry
            .iter()
            .filter_map(|(_, policy)| match policy {
                DeliveryPolicy::Delay(d) if *d <= Duration::from_secs(1) => Some(*d),
                _ => None,
            })
            .max()
            .unwrap_or_default();
        Self { sim, daemon, marker, extension, function, extension_alive, freeze: options.freeze, clock, telemetry_in_flight }
    }

    /// Waits until the platform froze the sandbox.
    pub async fn wait_frozen(&self) {
        assert!(wait_until(LONG, || self.sim.is_frozen()).await, "not frozen");
    }

    /// Runs one invocation with a sampled trace header and returns
    /// (request id, response). Like Lambda, it returns only once the runtime
    /// and the extension have both called `next` again.
    pub async fn invoke(&self, payload: Value) -> (String, Value) {
        let (header, _, _) = crate::new_trace_header(true);
        self.invoke_with_header(payload, &header).await
    }

    /// As [`Self::invoke`], with a given `X-Amzn-Trace-Id` value.
    pub async fn invoke_with_header(&self, payload: Value, header: &str) -> (String, Value) {
        let mut invocation = Invocation::new(payload, LONG.as_millis() as u64);
        invocation.trace_id = header.to_owned();
        let request_id = self.sim.enqueue(invocation).await;
        let state = self.sim.wait_for_invocation_complete(&request_id, LONG).await.unwrap();
        assert_eq!(state.status, InvocationStatus::Success, "{state:?}");
        self.settle_after(&request_id).await;
        (request_id, state.response.unwrap().payload)
    }

    /// The time from the runtime's response to the last extension's
    /// `next` for a finished invocation (what Lambda bills after the response
    /// and reports as `PostRuntimeExtensionsDuration`), as the platform measured it.
    /// With [`Options::clock`] it is timed to the microsecond by the proxy,
    /// otherwise in whole milliseconds by the simulator.
    pub async fn post_runtime(&self, request_id: &str) -> Option<Duration> {
        match &self.clock {
            Some(clock) => clock.post_runtime(request_id),
            None => self.sim.get_extension_overhead_ms(request_id).await.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
        }
    }

    /// After an invocation: waits until the extension called `next` and, in
    /// freeze mode, until both processes are stopped.
    async fn settle_after(&self, request_id: &str) {
        // Polled rather than awaited: lambda-simulator 0.2.0's readiness and
        // freeze waits check their condition before subscribing to the
        // change, so a change in between is missed until the timeout.
        if self.extension_alive {
            let mut ready = false;
            let end = Instant::now() + LONG;
            while !ready && Instant::now() < end {
                ready = self.sim.are_extensions_ready(request_id).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert!(ready, "extension did not call next for {request_id}");
        }
        if self.freeze {
            // Wait for the freeze to finish before anything can thaw it: the
            // simulator checks the freeze epoch before it sends SIGSTOP, so an
            // invocation enqueued in between would stay frozen forever.
            let mut pids = vec![self.function.pid];
            if self.extension_alive {
                pids.extend(self.extension.as_ref().map(|e| e.pid));
            }
            assert!(wait_until(LONG, || self.sim.is_frozen() && pids.iter().all(|&pid| stopped(pid))).await, "processes frozen");
            // What was sent before the freeze may still sit in the daemon's
            // socket: let the daemon read it, so callers see it.
            assert!(self.daemon.sync(LONG).await, "the daemon stand-in reads its socket");
        }
    }

    /// Runs one invocation with `trace` as its trace header (`None`: none) and
    /// returns how it ended, success or not; `timeout` is the invocation's
    /// deadline. Waits for the extension and the freeze like [`Self::invoke`].
    pub async fn invoke_outcome(&self, payload: Value, trace: Option<&str>, timeout: Duration) -> Outcome {
        let request_id = self.start_invocation(payload, trace, timeout).await;
        self.finish_invocation(&request_id, timeout).await
    }

    /// Enqueues an invocation (as [`Self::invoke_outcome`]) and returns its
    /// request id at once; [`Self::finish_invocation`] waits for it.
    pub async fn start_invocation(&self, payload: Value, trace: Option<&str>, timeout: Duration) -> String {
        let mut invocation = Invocation::new(payload, timeout.as_millis() as u64);
        invocation.trace_id = trace.unwrap_or_default().to_owned();
        self.sim.enqueue(invocation).await
    }

    /// Waits for an invocation from [`Self::start_invocation`] to end, for
    /// the extension's `next` and the freeze, and returns how it ended.
    pub async fn finish_invocation(&self, request_id: &str, timeout: Duration) -> Outcome {
        let state = self.sim.wait_for_invocation_complete(request_id, timeout + LONG).await.unwrap();
        self.settle_after(request_id).await;
        match (state.status, state.response, state.error) {
            (InvocationStatus::Success, Some(r), _) => Outcome::Response(r.payload),
            (_, _, Some(e)) => Outcome::Error { error_type: e.error_type, error_message: e.error_message },
            (status, _, _) => panic!("invocation ended as {status:?} with neither response nor error"),
        }
    }

    /// The port of the extension's Telemetry API listener, from its `ready:` line.
    pub fn telemetry_port(&self) -> Option<u16> {
        let lines = self.extension.as_ref()?.lines();
        let line = lines.iter().find(|l| l.contains("ready:"))?;
        line.split_once("telemetry on port ")?.1.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }

    /// SIGKILLs the extension, as if it crashed.
    pub async fn kill_extension(&mut self) {
        if let Some(extension) = &mut self.extension {
            extension.child.kill().await.unwrap();
        }
        self.extension_alive = false;
    }

    /// Sends SHUTDOWN and waits for the extension to exit; returns its
    /// final counters.
    pub async fn shutdown(self) -> Option<Value> {
        self.shutdown_keep_daemon().await.0
    }

    /// As [`Self::shutdown`], and hands back the daemon with everything it received.
    pub async fn shutdown_keep_daemon(self) -> (Option<Value>, Daemon) {
        let (counters, daemon, _) = self.shutdown_with_log().await;
        (counters, daemon)
    }

    /// As [`Self::shutdown_keep_daemon`], and the extension's whole stderr.
    pub async fn shutdown_with_log(self) -> (Option<Value>, Daemon, Vec<String>) {
        let Platform { sim, daemon, marker, mut extension, function, extension_alive, clock, telemetry_in_flight, freeze, .. } = self;
        // Let the last invocation's delayed telemetry (its report) reach the
        // extension first: the simulator drops what is still held back when
        // it shuts down, Lambda does not. Thawed, so that it is delivered one
        // batch after the other: the simulator's shutdown flush races its
        // own delivery task, and one of the two requests can then be lost.
        if freeze {
            for pid in [Some(function.pid), extension.as_ref().map(|e| e.pid)].into_iter().flatten() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGCONT);
            }
        }
        if !telemetry_in_flight.is_zero() {
            tokio::time::sleep(telemetry_in_flight * 2 + Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        sim.graceful_shutdown(ShutdownReason::Spindown).await;
        let counters = match extension.as_mut() {
            Some(extension) => {
                let status = extension.wait_exit(LONG).await;
                if std::env::var_os("E2E_VERBOSE").is_some() {
                    eprintln!("shutdown took {:?}, extension exit {status:?}", started.elapsed());
                }
                if extension_alive {
                    assert!(!marker.exists(), "marker removed on shutdown");
                }
                extension.counters()
            }
            None => None,
        };
        // What the extension sent before it exited may still sit in the
        // daemon's socket: let the daemon read it all before anyone looks.
        assert!(daemon.sync(LONG).await, "the daemon stand-in reads its socket");
        let log = extension.map(|e| e.lines()).unwrap_or_default();
        drop(function);
        drop(clock);
        (counters, daemon, log)
    }
}
