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
#[cfg(test)]
mod fuzz;
mod intake;
mod marker;
mod otlp;
mod telemetry;
mod wire;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_extension::{Error, Extension, LambdaEvent, NextEvent, service_fn};
use tokio::sync::mpsc;
use tokio::time::Instant;

use config::{Config, FlushMode};
use counters::Counters;
use enrich::TraceHeader;
use forwarder::{End, ForwarderHandle};
use intake::IntakeHandle;

/// The extension calls `next` no later than this before the invocation's
/// deadline, whatever it is waiting for, keeping [`FLUSH_TIME`] of it to
/// send what it has.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);
/// The part of [`DEADLINE_MARGIN`] a flush may use.
const FLUSH_TIME: Duration = Duration::from_millis(60);

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
    // Before the marker: a function that reads it finds the Unix socket too.
    let unix = intake::bind_unix(listen);
    let intake = intake::spawn(socket, unix, forwarder.clone(), counters.clone(), config.max_datagram)?;

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
    // Our own Telemetry API listener (see telemetry.rs), bound before
    // registering so that the subscription names the port really bound.
    let telemetry_listener = telemetry::bind(config.telemetry_port).await?;
    let telemetry_port = telemetry_listener.local_addr()?.port();
    telemetry::spawn(telemetry_listener, forwarder.clone());

    let registered =
        Extension::new().with_events(&["INVOKE", "SHUTDOWN"]).with_events_processor(events).register().await.inspect_err(|_| {
            // Without registration nothing will be flushed: the function
            // must not find us and send into the void.
            marker::remove(&config.marker);
        })?;
    if let Err(e) = telemetry::subscribe(&registered.extension_id, telemetry_port).await {
        // Still useful: functions using lambda-xray say when they are done.
        log!(
            Warn,
            "cannot subscribe to the Telemetry API ({e}); no Lambda report subsegments, and only functions that report their end are flushed before `next`"
        );
    }
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
            let started = Instant::now();
            let request_id = invoke.request_id;
            forwarder.invocation_started(request_id.clone(), TraceHeader::parse(&invoke.tracing.value)).await;
            if config.flush != FlushMode::EndOfInvocation {
                return;
            }
            // Wait until the invocation's documents are all sent, never past
            // the deadline minus the margin.
            let deadline = instant_of(invoke.deadline_ms);
            let bound = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline);
            let end = tokio::time::timeout_at(bound, forwarder.wait_end(request_id.clone(), started)).await;
            match end {
                Ok(End::TelemetrySilent) => log!(Debug, "not waiting for {request_id}: the Telemetry API is silent"),
                Err(_) => {
                    log!(Warn, "{request_id} has not ended {} ms before its deadline; flushing what is there", DEADLINE_MARGIN.as_millis())
                }
                Ok(End::Done | End::RuntimeDone) => {}
            }
            // After the function's own word, everything it sent before is
            // queued already; otherwise take in what the socket holds.
            if end != Ok(End::Done) {
                intake.drain().await;
            }
            let flush_until = (Instant::now() + FLUSH_TIME).min(deadline.checked_sub(DEADLINE_MARGIN - FLUSH_TIME).unwrap_or(deadline));
            forwarder.flush(flush_until).await;
            log!(Debug, "flushed after {request_id} ({end:?}) in {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
        }
        NextEvent::Shutdown(shutdown_event) => {
            // Keep a margin for removing the marker and the final `next`.
            let deadline = instant_of(shutdown_event.deadline_ms) - Duration::from_millis(50);
            intake.drain().await;
            let snapshot = forwarder.shutdown(deadline).await;
            let snapshot = snapshot.unwrap_or_else(|| counters.snapshot(None));
            log!(Info, "shutdown ({}): {}", shutdown_event.shutdown_reason, snapshot.line());
            log!(Info, "{}", telemetry::STATS.line());
            marker::remove(&config.marker);
            let _ = shutdown.try_send(instant_of(shutdown_event.deadline_ms));
        }
    }
}

/// A wall-clock deadline (epoch milliseconds) as a monotonic instant.
fn instant_of(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
