//! The cost of one traced outgoing HTTP request next to the request itself,
//! on loopback.
//!
//! Run: `cargo bench -p lambda-xray-tracing --features reqwest,hyper-client --bench http_client`
//!
//! A local `hyper` server answers `GET /` with 200 and 5 bytes over a
//! keep-alive connection. A `hyper_util` client and a `reqwest` client make
//! 100 requests per invocation under a `## handler` subsegment, with and
//! without the X-Ray layer / middleware. The difference per request is the
//! tracing's cost: sampled (subsegment, header, and the finished tree
//! serialised and sent over UDP to a local socket, amortised), unsampled
//! (`Sampled=0` header only).

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use lambda_xray_tracing::http_client::{XRayClientLayer, XRayReqwestMiddleware};
use lambda_xray_tracing::{Config, Emitter, TraceContext, UdpTransport, in_subsegment};
use tower::{Layer, ServiceExt};

const SAMPLED: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
const UNSAMPLED: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";
const CALLS: u32 = 100;

type Hyper = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

enum Client {
    Hyper(Hyper),
    TracedHyper(lambda_xray_tracing::http_client::XRayClientService<Hyper>),
    Reqwest(reqwest_middleware::ClientWithMiddleware),
}

impl Client {
    async fn get(&self, url: &str) -> bool {
        match self {
            Client::Hyper(c) => {
                let req = hyper::Request::get(url).body(Empty::new()).unwrap_or_default();
                match c.request(req).await {
                    Ok(r) => r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            }
            Client::TracedHyper(c) => {
                let req = hyper::Request::get(url).body(Empty::new()).unwrap_or_default();
                match c.clone().oneshot(req).await {
                    Ok(r) => r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            }
            Client::Reqwest(c) => match c.get(url).send().await {
                Ok(r) => r.bytes().await.is_ok(),
                Err(_) => false,
            },
        }
    }
}

async fn serve() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|_req| async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("hello")))) });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(addr)
}

/// Nanoseconds per request over `rounds` invocations of `CALLS` requests each.
async fn per_call(client: &Client, url: &str, header: &str, rounds: u32, config: &Config, emitter: &Arc<Emitter>) -> f64 {
    let start = Instant::now();
    for _ in 0..rounds {
        let ctx = TraceContext::for_invocation_with(Some(header), None, config, emitter.clone());
        ctx.wrap(in_subsegment("## handler", async {
            for _ in 0..CALLS {
                black_box(client.get(url).await);
            }
        }))
        .await;
    }
    start.elapsed().as_nanos() as f64 / f64::from(rounds * CALLS)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> std::io::Result<()> {
    let daemon = UdpSocket::bind("127.0.0.1:0")?;
    let daemon_addr = daemon.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while daemon.recv(&mut buf).is_ok() {}
    });
    let emitter = Arc::new(Emitter::new(UdpTransport::connect(daemon_addr)?));
    let config = Config::default();
    // A workspace build may give reqwest `rustls-no-provider` (a sample's TLS): it needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let addr = serve().await?;
        let url = format!("http://{addr}/");
        let hyper: Hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let pairs = [
            ("hyper + XRayClientLayer", Client::Hyper(hyper.clone()), Client::TracedHyper(XRayClientLayer::new().layer(hyper))),
            (
                "reqwest + XRayReqwestMiddleware",
                Client::Reqwest(reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).build()),
                Client::Reqwest(reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).with(XRayReqwestMiddleware::new()).build()),
            ),
        ];
        let (blocks, rounds) = (40, 3);
        println!(
            "GET on loopback (keep-alive), {CALLS} requests per invocation; median of {blocks} paired blocks of {} requests",
            rounds * CALLS
        );
        println!("{:<34} {:<10} {:>12} {:>12} {:>10}", "client", "invocation", "request ns", "traced ns", "added ns");
        for (label, plain, traced) in &pairs {
            per_call(plain, &url, SAMPLED, 5, &config, &emitter).await;
            per_call(traced, &url, SAMPLED, 5, &config, &emitter).await;
            for (kind, header) in [("sampled", SAMPLED), ("unsampled", UNSAMPLED)] {
                let (mut plain_ns, mut traced_ns, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
                for i in 0..blocks {
                    let (p, t) = if i % 2 == 0 {
                        let p = per_call(plain, &url, header, rounds, &config, &emitter).await;
                        (p, per_call(traced, &url, header, rounds, &config, &emitter).await)
                    } else {
                        let t = per_call(traced, &url, header, rounds, &config, &emitter).await;
                        (per_call(plain, &url, header, rounds, &config, &emitter).await, t)
                    };
                    plain_ns.push(p);
                    traced_ns.push(t);
                    diffs.push(t - p);
                }
                println!("{label:<34} {kind:<10} {:>12.0} {:>12.0} {:>10.0}", median(plain_ns), median(traced_ns), median(diffs));
            }
        }
        Ok::<_, std::io::Error>(())
    })
}
