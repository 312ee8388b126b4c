//! OTLP/HTTP (protobuf) export: the documents of a flush as one
//! `ExportTraceServiceRequest`, gzipped, to an OpenTelemetry collector or to
//! X-Ray's OTLP endpoint (SigV4-signed).
//!
//! The OTLP queue holds the same documents as the daemon's buffer (the
//! `Bytes` are shared, so `both` costs no second copy), under the same byte
//! bound and drop-oldest policy, counted in `export_dropped`. One request is
//! in flight at a time, as a task of its own: when the flush's time is up the
//! flush returns (so `next` is never late) while the request goes on, bounded
//! by `OTEL_EXPORTER_OTLP_TIMEOUT`; its documents come back to the queue if it
//! fails and are counted in `exported` when it succeeds. Delivery is at least
//! once: a request whose answer was lost is sent again.
//!
//! - [`mapping`]: documents to spans.
//! - [`export`]: the connection and the retries of one request.
//! - [`sigv4`]: signing for X-Ray's endpoint.
//! - [`settings`]: the `OTEL_*` settings.

pub mod export;
pub mod mapping;
pub mod settings;
pub mod sigv4;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::counters::Counters;
use export::{Client, Outcome};
use mapping::Skip;
pub use settings::OtlpSettings;

/// Document bytes in one request at most: X-Ray's endpoint takes 5 MB of
/// uncompressed protobuf, which a span's attributes rarely exceed its JSON.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Documents in one request at most (X-Ray's endpoint: 10,000 spans; a
/// document can hold several).
const MAX_REQUEST_DOCUMENTS: usize = 2_000;
/// After a failed request, timer-driven flushes (periodic, continuous) wait
/// this long before the next one; flushes before `next` always try.
const FAILED_PAUSE: Duration = Duration::from_secs(1);

/// What a request task hands back: the client (with its connection) and, if
/// it carried documents, how the request ended.
pub type JobResult = (Client, Option<Outcome>);

struct Job {
    documents: Vec<Bytes>,
    task: JoinHandle<JobResult>,
}

/// The OTLP side of the forwarder.
pub struct Otlp {
    settings: Arc<OtlpSettings>,
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    bound: usize,
    /// `None` while a job has it.
    client: Option<Client>,
    /// Made at the first compressed request (not at start: its tables are
    /// most of the exporter's memory).
    gzip: Option<Gzip>,
    job: Option<Job>,
    counters: Arc<Counters>,
    failing: bool,
    paused_until: Option<Instant>,
}

/// One request's body, and what went into it.
pub struct Built {
    /// The protobuf, gzipped when the settings say so.
    pub body: Bytes,
    /// Spans in the request.
    pub spans: usize,
    /// The documents that gave them (the request's, for retries and counts).
    pub documents: Vec<Bytes>,
    /// Documents that gave no span (in progress, or not mappable).
    pub skipped: usize,
}

/// Builds the request for `documents` (daemon datagrams: header line, body).
pub fn build(documents: Vec<Bytes>, resource: &[opentelemetry_proto::tonic::common::v1::KeyValue], gzip: Option<&mut Gzip>) -> Built {
    let mut spans: Vec<Span> = Vec::with_capacity(documents.len());
    let mut skipped = 0;
    let mut kept = Vec::with_capacity(documents.len());
    for datagram in documents {
        let body = datagram.iter().position(|&b| b == b'\n').map_or(&datagram[..], |at| &datagram[at + 1..]);
        match mapping::document_spans(body, &mut spans) {
            Ok(_) => kept.push(datagram),
            Err(Skip::InProgress) => skipped += 1,
            Err(Skip::Malformed) => {
                log!(Debug, "OTLP: a document that does not map to spans is skipped");
                skipped += 1;
            }
        }
    }
    let count = spans.len();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: resource.to_vec(), ..Resource::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lambda-xray-extension".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let raw = request.encode_to_vec();
    let body = match gzip {
        Some(gzip) => gzip.compress(&raw).unwrap_or_else(|| {
            log!(Warn, "OTLP: gzip failed; sending this request uncompressed");
            Bytes::from(raw)
        }),
        None => Bytes::from(raw),
    };
    Built { body, spans: count, documents: kept, skipped }
}

/// A gzip writer kept between requests: setting up a deflate state (a few
/// hundred KB of tables) costs more than compressing a flush's few KB.
pub struct Gzip {
    deflate: flate2::Compress,
}

impl Default for Gzip {
    fn default() -> Self {
        Self::new()
    }
}

impl Gzip {
    /// The fastest level: the sandbox's CPU is the function's.
    pub fn new() -> Self {
        Self { deflate: flate2::Compress::new(flate2::Compression::fast(), false) }
    }

    /// `raw` as one gzip member (RFC 1952: header, raw deflate, CRC-32, size);
    /// `None` if deflate fails.
    pub fn compress(&mut self, raw: &[u8]) -> Option<Bytes> {
        // The header: magic, deflate, no flags, no time, fastest, unknown OS.
        const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff];
        self.deflate.reset();
        let mut out = Vec::with_capacity(HEADER.len() + raw.len() / 2 + 64);
        out.extend_from_slice(&HEADER);
        // Each round either ends the stream or has filled the spare room.
        for _ in 0..64 {
            out.reserve(raw.len() / 4 + 64);
            let consumed = usize::try_from(self.deflate.total_in()).ok()?;
            match self.deflate.compress_vec(raw.get(consumed..)?, &mut out, flate2::FlushCompress::Finish).ok()? {
                flate2::Status::StreamEnd => {
                    let mut crc = flate2::Crc::new();
                    crc.update(raw);
                    out.extend_from_slice(&crc.sum().to_le_bytes());
                    // ISIZE is the length modulo 2^32.
                    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
                    return Some(Bytes::from(out));
                }
                flate2::Status::Ok | flate2::Status::BufError => {}
            }
        }
        None
    }
}

impl Otlp {
    /// The OTLP side, with the same byte bound as the daemon's buffer.
    pub fn new(settings: OtlpSettings, bound: usize, counters: Arc<Counters>) -> Self {
        let settings = Arc::new(settings);
        counters.otlp.store(true, Relaxed);
        log!(
            Info,
            "OTLP export to {}{}{}",
            settings.endpoint,
            if settings.signing.is_some() { ", SigV4-signed" } else { "" },
            if settings.gzip { ", gzip" } else { "" }
        );
        Self {
            client: Some(Client::new(settings.clone())),
            gzip: None,
            settings,
            queue: VecDeque::new(),
            queued_bytes: 0,
            bound,
            job: None,
            counters,
            failing: false,
            paused_until: None,
        }
    }

    /// Documents not yet delivered: queued or in the request in flight.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.job.as_ref().map_or(0, |j| j.documents.len())
    }

    /// Queues one datagram; when full, drops the oldest.
    pub fn push(&mut self, datagram: Bytes) {
        let len = datagram.len();
        if len > self.bound {
            Counters::bump(&self.counters.export_dropped);
            return;
        }
        while self.queued_bytes + len > self.bound {
            let Some(oldest) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= oldest.len();
            Counters::bump(&self.counters.export_dropped);
        }
        self.queued_bytes += len;
        self.queue.push_back(datagram);
    }

    /// At INVOKE: opens the connection in the background if there is none,
    /// so the flush after the function finds it ready.
    pub fn warm(&mut self) {
        if self.job.is_some() || self.client.as_ref().is_none_or(Client::connected) {
            return;
        }
        let Some(mut client) = self.client.take() else {
            return;
        };
        let until = Instant::now() + self.settings.timeout;
        let task = tokio::spawn(async move {
            if let Err(e) = client.connect(until).await {
                log!(Debug, "OTLP: connecting ahead failed: {e}");
            }
            (client, None)
        });
        self.job = Some(Job { documents: Vec::new(), task });
    }

    /// Whether a timer-driven flush should start a request now: documents
    /// queued, none in flight, and no recent failure.
    pub fn due(&self) -> bool {
        !self.queue.is_empty() && self.job.is_none() && self.paused_until.is_none_or(|at| Instant::now() >= at)
    }

    /// The request in flight, if any, to await alongside the intake.
    pub fn task_mut(&mut self) -> Option<&mut JoinHandle<JobResult>> {
        self.job.as_mut().map(|j| &mut j.task)
    }

    /// Books the end of the request in flight.
    pub fn finish(&mut self, result: Result<JobResult, tokio::task::JoinError>) {
        let Some(job) = self.job.take() else {
            return;
        };
        let documents = job.documents;
        let outcome = match result {
            Ok((client, outcome)) => {
                self.client = Some(client);
                outcome
            }
            Err(e) => {
                log!(Error, "OTLP: the export task failed ({e}); keeping its documents");
                self.client = Some(Client::new(self.settings.clone()));
                Some(Outcome::Failed("task failed".into()))
            }
        };
        let Some(outcome) = outcome else {
            return;
        };
        let n = documents.len() as u64;
        match outcome {
            Outcome::Accepted { rejected, message } => {
                self.counters.exported.fetch_add(n, Relaxed);
                if rejected > 0 {
                    log!(Warn, "OTLP endpoint refused {rejected} spans: {message}");
                }
                if self.failing {
                    log!(Info, "OTLP export works again");
                    self.failing = false;
                }
                self.paused_until = None;
            }
            Outcome::Rejected(status) => {
                Counters::bump(&self.counters.export_failures);
                self.counters.export_dropped.fetch_add(n, Relaxed);
                log!(Warn, "OTLP endpoint {} answered {status}: dropping the {n} documents of that request", self.settings.endpoint);
                self.paused_until = Some(Instant::now() + FAILED_PAUSE);
            }
            Outcome::Failed(why) => {
                Counters::bump(&self.counters.export_failures);
                if !self.failing {
                    log!(Warn, "OTLP export to {} failed ({why}); keeping {n} documents for the next flush", self.settings.endpoint);
                    self.failing = true;
                } else {
                    log!(Debug, "OTLP export failed again ({why})");
                }
                for datagram in documents.into_iter().rev() {
                    self.queued_bytes += datagram.len();
                    self.queue.push_front(datagram);
                }
                // Over the bound now if more came meanwhile: trimmed oldest first.
                while self.queued_bytes > self.bound {
                    let Some(oldest) = self.queue.pop_front() else {
                        break;
                    };
                    self.queued_bytes -= oldest.len();
                    Counters::bump(&self.counters.export_dropped);
                }
                self.paused_until = Some(Instant::now() + FAILED_PAUSE);
            }
        }
    }

    /// Whether a request is in flight.
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// Starts a request with what is queued (up to the request limits);
    /// retries stop at `retry_until`, the request itself at the export
    /// timeout. `false` when there was nothing to send or a request is in flight.
    pub fn start(&mut self, retry_until: Instant) -> bool {
        if self.job.is_some() || self.queue.is_empty() {
            return false;
        }
        let Some(mut client) = self.client.take() else {
            return false;
        };
        let mut documents = Vec::new();
        let mut bytes = 0;
        while let Some(next) = self.queue.front() {
            if !documents.is_empty() && (bytes + next.len() > MAX_REQUEST_BYTES || documents.len() == MAX_REQUEST_DOCUMENTS) {
                break;
            }
            bytes += next.len();
            if let Some(datagram) = self.queue.pop_front() {
                documents.push(datagram);
            }
        }
        self.queued_bytes -= bytes;
        let gzip = if self.settings.gzip { Some(self.gzip.get_or_insert_with(Gzip::new)) } else { None };
        let built = build(documents, &self.settings.resource, gzip);
        self.counters.export_skipped.fetch_add(built.skipped as u64, Relaxed);
        if built.spans == 0 {
            self.client = Some(client);
            return false;
        }
        let documents = built.documents;
        log!(Debug, "OTLP: sending {} spans of {} documents, {} bytes", built.spans, documents.len(), built.body.len());
        let attempt_until = Instant::now() + self.settings.timeout;
        let retry_until = retry_until.min(attempt_until);
        let body = built.body;
        let task = tokio::spawn(async move {
            let outcome = client.send(body, retry_until, attempt_until).await;
            (client, Some(outcome))
        });
        self.job = Some(Job { documents, task });
        true
    }

    /// The export timeout (the bound of timer-driven flushes).
    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use opentelemetry_proto::tonic::common::v1::KeyValue;

    fn golden() -> Vec<Bytes> {
        [
            &include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/raw/001.dgram"))[..],
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/raw/002.dgram")),
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/raw/003.dgram")),
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/raw/004.dgram")),
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/raw/005.dgram")),
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/raw/006.dgram")),
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/raw/007.dgram")),
        ]
        .into_iter()
        .map(Bytes::from_static)
        .collect()
    }

    fn resource() -> Vec<KeyValue> {
        vec![mapping::string("service.name", "orders"), mapping::string("cloud.provider", "aws")]
    }

    #[test]
    fn one_request_for_the_documents_of_a_flush() {
        let mut documents = golden();
        documents.push(Bytes::from_static(b"{\"format\":\"json\",\"version\":1}\nnot json"));
        let mut gzip = Gzip::new();
        let built = build(documents, &resource(), Some(&mut gzip));
        assert_eq!(built.spans, 7);
        assert_eq!(built.skipped, 1);
        assert_eq!(built.documents.len(), 7, "the skipped document is not kept for retries");
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&built.body[..]), &mut raw).unwrap();
        let request = ExportTraceServiceRequest::decode(&raw[..]).unwrap();
        assert_eq!(request.resource_spans.len(), 1);
        let resource_spans = &request.resource_spans[0];
        assert_eq!(resource_spans.resource.as_ref().unwrap().attributes, resource());
        assert_eq!(resource_spans.scope_spans[0].scope.as_ref().unwrap().name, "lambda-xray-extension");
        assert_eq!(resource_spans.scope_spans[0].spans.len(), 7);
        let plain = build(golden(), &resource(), None);
        assert_eq!(ExportTraceServiceRequest::decode(plain.body).unwrap(), request);
        // The kept compressor starts afresh for each request.
        let again = build(golden(), &resource(), Some(&mut gzip));
        assert_eq!(again.body, built.body);
        let large: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip.compress(&large).unwrap()[..]), &mut out).unwrap();
        assert_eq!(out, large, "several rounds of output room");
    }

    #[test]
    fn drop_oldest_within_the_bound() {
        let counters = Arc::new(Counters::default());
        let settings = settings::from_lookup(&|k: &str| match k {
            "LAMBDA_XRAY_EXTENSION_EXPORT" => Some("otlp".to_owned()),
            _ => None,
        })
        .1
        .unwrap();
        let docs = golden();
        let bound = docs[1].len() + docs[2].len();
        let mut otlp = Otlp::new(settings, bound, counters.clone());
        otlp.push(Bytes::from(vec![b'x'; bound + 1]));
        for d in &docs[..3] {
            otlp.push(d.clone());
        }
        assert_eq!(counters.export_dropped.load(Relaxed), 2, "the oversized one and the oldest");
        assert_eq!(otlp.pending(), 2);
        assert_eq!(otlp.queue[0], docs[1]);
        assert!(otlp.queued_bytes <= bound);
    }

    /// `cargo test --release -p lambda-xray-extension --bin lambda-xray-extension bench_build -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark"]
    fn bench_build_request() {
        let mut documents = golden();
        documents.extend(golden().into_iter().take(1));
        let rounds = 20_000;
        let mut kept = Gzip::new();
        for gzip in [false, true] {
            let start = std::time::Instant::now();
            let mut size = 0;
            for _ in 0..rounds {
                let compressor = if gzip { Some(&mut kept) } else { None };
                size = std::hint::black_box(build(documents.clone(), &resource(), compressor)).body.len();
            }
            let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
            let input: usize = documents.iter().map(Bytes::len).sum();
            println!(
                "BENCH build: {} documents ({input} bytes of JSON), gzip {gzip}: {per:.1} µs per request, body {size} bytes",
                documents.len()
            );
        }
    }
}
