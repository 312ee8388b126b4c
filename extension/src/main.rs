//! `lambda-xray-extension`: a Lambda external extension that takes X-Ray
//! segment documents from the function over loopback UDP, buffers them, and
//! forwards them to the X-Ray daemon before the sandbox freezes.
//!
//! See README.md for settings, discovery and flush policies.

#[macro_use]
mod log;
mod config;
mod counters;
mod enrich;
mod forwarder;
mod intake;
mod marker;
mod wire;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_extension::{
    Error, Extension, LambdaEvent, LambdaTelemetry, LambdaTelemetryRecord, LogBuffering, NextEvent, SharedService, service_fn,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use config::{Config, FlushMode};
use counters::Counters;
use enrich::{Report, TraceHeader};
use forwarder::ForwarderHandle;
use intake::IntakeHandle;

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let config = config::from_lookup(|name| std::env::var(name).ok());
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            log!(Error, "cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, started)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!(Error, "{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, started: std::time::Instant) -> Result<(), Error> {
    // The `lambda-extension` client panics without it; say why instead.
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return Err("AWS_LAMBDA_RUNTIME_API is not set: not running as a Lambda extension".into());
    }
    let counters = Arc::new(Counters::default());
    let socket = match intake::bind(config.listen) {
        Ok(socket) => socket,
        Err(e) => {
            // Still serve: the marker tells the function where we are.
            let fallback = (std::net::Ipv4Addr::LOCALHOST, 0).into();
            log!(Error, "cannot listen on {}: {e}; using a free loopback port", config.listen);
            intake::bind(fallback)?
        }
    };
    let listen = socket.local_addr()?;
    let forwarder = ForwarderHandle::spawn(&config, counters.clone());
    let intake = intake::spawn(socket, forwarder.clone(), counters.clone(), config.max_datagram)?;

    if let Err(e) = marker::write(&config.marker, listen) {
        log!(Warn, "cannot write the marker {}: {e}; the function will send to the daemon directly", config.marker.display());
    }

    let (shutdown_tx, mut shutdown_rx) = mpsc::channel::<Instant>(1);
    let events = {
        let forwarder = forwarder.clone();
        let intake = intake.clone();
        let config = config.clone();
        let counters = counters.clone();
        service_fn(move |event: LambdaEvent| {
            let forwarder = forwarder.clone();
            let intake = intake.clone();
            let config = config.clone();
            let counters = counters.clone();
            let shutdown_tx = shutdown_tx.clone();
            async move {
                on_event(event, &forwarder, &intake, &config, &counters, &shutdown_tx).await;
                Ok::<(), Error>(())
            }
        })
    };
    let telemetry = {
        let forwarder = forwarder.clone();
        SharedService::new(service_fn(move |batch: Vec<LambdaTelemetry>| {
            let forwarder = forwarder.clone();
            async move {
                on_telemetry(batch, &forwarder).await;
                Ok::<(), Error>(())
            }
        }))
    };

    let telemetry_port = free_telemetry_port(config.telemetry_port);
    let registered = Extension::new()
        .with_events(&["INVOKE", "SHUTDOWN"])
        .with_events_processor(events)
        .with_telemetry_types(&["platform"])
        // The shortest buffering Lambda allows: runtimeDone arrives sooner,
        // so the end-of-invocation flush adds less to the invocation.
        .with_telemetry_buffering(LogBuffering { timeout_ms: 25, max_bytes: 262_144, max_items: 1_000 })
        .with_telemetry_port_number(telemetry_port)
        .with_telemetry_processor(telemetry)
        .register()
        .await
        .inspect_err(|_| {
            // Without registration nothing will be flushed: the function
            // must not find us and send into the void.
            marker::remove(&config.marker);
        })?;
    log!(
        Info,
        "ready: listening on {listen}, telemetry on port {telemetry_port}, flush {:?}, buffer {} bytes, {:.3} ms after start",
        config.flush,
        config.buffer_bytes,
        started.elapsed().as_secs_f64() * 1000.0
    );

    let run = registered.run();
    tokio::pin!(run);
    let result = tokio::select! {
        // Checked first: after SHUTDOWN the run loop's `next` may fail at
        // once (the platform is going away), which is no error.
        biased;
        Some(deadline) = shutdown_rx.recv() => {
            // Let the run loop call `next` once more: that is how the
            // platform learns the extension finished its shutdown work.
            let grace = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200));
            let _ = tokio::time::timeout(grace, &mut run).await;
            return Ok(());
        }
        result = &mut run => result,
    };
    if shutdown_rx.try_recv().is_ok() {
        return Ok(());
    }
    marker::remove(&config.marker);
    result
}

async fn on_event(
    event: LambdaEvent,
    forwarder: &ForwarderHandle,
    intake: &IntakeHandle,
    config: &Config,
    counters: &Counters,
    shutdown: &mpsc::Sender<Instant>,
) {
    match event.next {
        NextEvent::Invoke(invoke) => {
            let request_id = invoke.request_id;
            forwarder.invocation_started(request_id.clone(), TraceHeader::parse(&invoke.tracing.value)).await;
            if config.flush != FlushMode::EndOfInvocation {
                return;
            }
            // Wait for the handler to finish, never past the invocation's deadline.
            let wait = instant_of(invoke.deadline_ms);
            if tokio::time::timeout_at(wait, forwarder.wait_runtime_done(request_id.clone())).await.is_err() {
                log!(Warn, "no platform.runtimeDone for {request_id} by its deadline; flushing anyway");
            }
            intake.drain().await;
            forwarder.flush().await;
            log!(Debug, "flushed after {request_id}");
        }
        NextEvent::Shutdown(shutdown_event) => {
            // Keep a margin for removing the marker and the final `next`.
            let deadline = instant_of(shutdown_event.deadline_ms) - Duration::from_millis(50);
            intake.drain().await;
            let snapshot = forwarder.shutdown(deadline).await;
            let snapshot = snapshot.unwrap_or_else(|| counters.snapshot(None));
            log!(Info, "shutdown ({}): {}", shutdown_event.shutdown_reason, snapshot.line());
            marker::remove(&config.marker);
            let _ = shutdown.try_send(instant_of(shutdown_event.deadline_ms));
        }
    }
}

async fn on_telemetry(batch: Vec<LambdaTelemetry>, forwarder: &ForwarderHandle) {
    for event in batch {
        match event.record {
            LambdaTelemetryRecord::PlatformRuntimeDone { request_id, .. } => {
                forwarder.runtime_done(request_id).await;
            }
            LambdaTelemetryRecord::PlatformReport { request_id, status, metrics, tracing, .. } => {
                let report = Report {
                    request_id,
                    status: serde_json::to_value(&status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                    time: event.time.timestamp_micros() as f64 / 1e6,
                    duration_ms: metrics.duration_ms,
                    billed_duration_ms: metrics.billed_duration_ms,
                    memory_size_mb: metrics.memory_size_mb,
                    max_memory_used_mb: metrics.max_memory_used_mb,
                    init_duration_ms: metrics.init_duration_ms,
                };
                let trace = tracing.map(|t| TraceHeader::parse(&t.value));
                forwarder.report(report, trace).await;
            }
            _ => {}
        }
    }
}

/// A wall-clock deadline (epoch milliseconds) as a monotonic instant.
fn instant_of(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// The `lambda-extension` crate binds the telemetry listener on 0.0.0.0 in a
/// task that panics if the port is taken, and then no `runtimeDone` would ever
/// come. So check the port first and take a free one if it is busy (or 0).
fn free_telemetry_port(configured: u16) -> u16 {
    if configured != 0 && std::net::TcpListener::bind(("0.0.0.0", configured)).is_ok() {
        return configured;
    }
    let free = std::net::TcpListener::bind(("0.0.0.0", 0)).and_then(|listener| listener.local_addr()).map(|addr| addr.port());
    match free {
        Ok(port) => {
            if configured != 0 {
                log!(Warn, "telemetry port {configured} is busy; using {port}");
            }
            port
        }
        Err(_) => configured,
    }
}
