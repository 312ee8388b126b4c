//! Hot-path benchmark: cost of a subsegment (begin + one annotation + end).
//!
//! Run: `cargo bench -p lambda-xray-tracing --bench hot_path`
//!
//! - sampled: 100 children under one `## handler` subsegment per invocation,
//!   including serialisation and the real UDP send of the finished tree to a
//!   local socket, divided by the number of children;
//! - unsampled: the same calls in a `Sampled=0` invocation, plus heap
//!   allocations per subsegment, counted by a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use lambda_xray_tracing::{Config, Emitter, TraceContext, UdpTransport, begin_subsegment};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SAMPLED: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
const UNSAMPLED: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";
const CHILDREN: u64 = 100;

fn main() -> std::io::Result<()> {
    // A local "daemon" that drains what we send, so the socket never backs up.
    let daemon = UdpSocket::bind("127.0.0.1:0")?;
    let addr = daemon.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while daemon.recv(&mut buf).is_ok() {
            r.fetch_add(1, Ordering::Relaxed);
        }
    });
    let emitter = Arc::new(Emitter::new(UdpTransport::connect(addr)?));
    let config = Config::default();

    let sampled_round = || {
        let ctx = TraceContext::for_invocation_with(Some(SAMPLED), None, &config, emitter.clone());
        let _entered = ctx.enter();
        let handler = begin_subsegment("## handler");
        for i in 0..CHILDREN {
            let child = begin_subsegment("child work");
            let _ = black_box(child.put_annotation("index", i));
        }
        drop(handler);
    };
    for _ in 0..2_000 {
        sampled_round();
    }
    let rounds = 20_000u64;
    let start = Instant::now();
    for _ in 0..rounds {
        sampled_round();
    }
    let sampled_ns = start.elapsed().as_nanos() as f64 / (rounds * CHILDREN) as f64;
    let sent = emitter.stats().datagrams_sent;

    let ctx = TraceContext::for_invocation_with(Some(UNSAMPLED), None, &config, emitter.clone());
    let _entered = ctx.enter();
    let unsampled_round = |n: u64| {
        for i in 0..n {
            let child = begin_subsegment("child work");
            let _ = black_box(child.put_annotation("index", i));
        }
    };
    unsampled_round(100_000);
    let n = 20_000_000u64;
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    let start = Instant::now();
    unsampled_round(n);
    let unsampled_ns = start.elapsed().as_nanos() as f64 / n as f64;
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs_before;

    println!("sampled subsegment (begin + annotation + end, 100 under one handler, incl. serialisation + UDP send): {sampled_ns:.0} ns");
    println!(
        "  datagrams sent: {sent} for {} subsegments ({} received so far)",
        (rounds + 2_000) * (CHILDREN + 1),
        received.load(Ordering::Relaxed)
    );
    println!("unsampled subsegment (begin + annotation + end): {unsampled_ns:.1} ns");
    println!("unsampled allocations per subsegment: {:.3} ({allocs} in {n})", allocs as f64 / n as f64);
    Ok(())
}
