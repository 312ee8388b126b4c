//! Cost of a `tracing` span turned into a subsegment, and of a span in an
//! unsampled invocation, with and without the bridge layer.
//!
//! Run: `cargo bench -p lambda-xray-tracing --features tracing-bridge --bench tracing_spans`
//!
//! Each span is created with one field, entered, exited and closed: 100 of
//! them under one `## handler` subsegment per invocation; the sampled figure
//! includes serialisation and the UDP send of the finished tree.

use std::hint::black_box;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Instant;

use lambda_xray_tracing::tracing_bridge::SubsegmentLayer;
use lambda_xray_tracing::{Config, Emitter, TraceContext, UdpTransport, begin_subsegment};
use tracing_subscriber::prelude::*;

const SAMPLED: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
const UNSAMPLED: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";
const SPANS: u32 = 100;
const ROUNDS: u32 = 2_000;

fn per_span(header: &str, emitter: &Arc<Emitter>) -> f64 {
    let config = Config::default();
    let round = || {
        let ctx = TraceContext::for_invocation_with(Some(header), None, &config, emitter.clone());
        let _entered = ctx.enter();
        let handler = begin_subsegment("## handler");
        for i in 0..SPANS {
            let span = tracing::info_span!("work", index = i);
            let _g = black_box(span.enter());
        }
        drop(handler);
    };
    for _ in 0..500 {
        round();
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        round();
    }
    start.elapsed().as_nanos() as f64 / f64::from(ROUNDS * SPANS)
}

fn main() -> std::io::Result<()> {
    let daemon = UdpSocket::bind("127.0.0.1:0")?;
    let emitter = Arc::new(Emitter::new(UdpTransport::connect(daemon.local_addr()?)?));
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while daemon.recv(&mut buf).is_ok() {}
    });

    // Interleaved repetitions, best of five: the machine may be busy.
    let (mut base_sampled, mut base_unsampled, mut sampled, mut unsampled) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..5 {
        let plain = tracing_subscriber::registry();
        let (bs, bu) = tracing::subscriber::with_default(plain, || (per_span(SAMPLED, &emitter), per_span(UNSAMPLED, &emitter)));
        let bridged = tracing_subscriber::registry().with(SubsegmentLayer::new());
        let (s, u) = tracing::subscriber::with_default(bridged, || (per_span(SAMPLED, &emitter), per_span(UNSAMPLED, &emitter)));
        base_sampled = base_sampled.min(bs);
        base_unsampled = base_unsampled.min(bu);
        sampled = sampled.min(s);
        unsampled = unsampled.min(u);
    }

    println!("span with a field, entered and closed (registry only, no bridge): {base_sampled:.0} ns");
    println!(
        "span turned into a subsegment (sampled, incl. serialisation + UDP send): {sampled:.0} ns (+{:.0} ns)",
        sampled - base_sampled
    );
    println!(
        "span in an unsampled invocation with the bridge: {unsampled:.0} ns (+{:.0} ns over {base_unsampled:.0})",
        unsampled - base_unsampled
    );
    Ok(())
}
