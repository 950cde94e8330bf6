//! Criterion benches of handle-api's hot paths, so regressions show up:
//!
//! - `request/*`: building and validating a `ResourceRequest`;
//! - `deliver/*`: a load through the manager to a backend that answers from
//!   memory at once, drained event by event: the manager's path to the wire
//!   request, the exchange sink and the handle's event queue, with no network;
//! - `trace/*`: recording a load's trace (what `rh get --json` and the
//!   conformance runner do);
//! - `wire/*`: one real small GET per iteration through each backend against
//!   the embedded benchmark server, with no request headers and with 16, so
//!   the difference is the backend's header mapping (the mapping itself is
//!   crate-private in each backend).
//!
//! `cargo bench -p benches` runs them; `cargo test --benches` runs each once.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use benches::BenchServer;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use resource_handle::http::{HeaderMap, StatusCode, Version};
use resource_handle::{
    Backend, BackendConfig, Bytes, Capabilities, Capability, Exchange, NetworkAccessManager,
    ResourceHandleManager, ResourceRequest, ResponseHead, Trace, TryData,
};

const URL: &str = "http://origin.test:8080/path/to/resource?query=1&b=2";

fn sixteen_headers(mut b: resource_handle::RequestBuilder) -> resource_handle::RequestBuilder {
    for i in 0..16 {
        b = b.header(
            format!("x-bench-header-{i}"),
            format!("value number {i} of sixteen"),
        );
    }
    b
}

fn request(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    g.bench_function("get", |b| {
        b.iter(|| ResourceRequest::get(black_box(URL)).build())
    });
    g.bench_function("get_16_headers_ua_referrer", |b| {
        b.iter(|| {
            sixteen_headers(ResourceRequest::get(black_box(URL)))
                .user_agent("bench/1.0")
                .referrer("http://origin.test/")
                .build()
        })
    });
    g.bench_function("invalid_header_rejected", |b| {
        b.iter(|| {
            let r = ResourceRequest::get(black_box(URL))
                .header("x-bad", "a\r\nInjected: 1")
                .build();
            assert!(r.is_err());
            r
        })
    });
    g.bench_function("from_http_request", |b| {
        b.iter_batched(
            || {
                let mut req = resource_handle::http::Request::new(Bytes::from_static(b"body"));
                *req.uri_mut() = URL.parse().expect("literal url");
                for i in 0..8 {
                    req.headers_mut().insert(
                        format!("x-h{i}")
                            .parse::<resource_handle::http::HeaderName>()
                            .expect("literal"),
                        "v".parse().expect("literal"),
                    );
                }
                req
            },
            ResourceRequest::try_from,
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A backend that answers every exchange at once from memory: a 200 head
/// and `chunks` chunks of `chunk` bytes.
struct MemoryBackend {
    chunks: usize,
    chunk: Bytes,
    capabilities: Capabilities,
}

impl ResourceHandleManager for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn start(&self, exchange: Exchange) {
        let Exchange { mut sink, .. } = exchange;
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "text/plain".parse().expect("literal"));
        headers.insert("content-length", (self.chunks * self.chunk.len()).into());
        sink.response(ResponseHead::new(StatusCode::OK, Version::HTTP_11, headers));
        for _ in 0..self.chunks {
            // The chunks fit the handle's buffer, so none is refused.
            if !matches!(sink.try_data(self.chunk.clone()), TryData::Queued) {
                return sink.fail(resource_handle::Error::cancelled());
            }
        }
        sink.finish();
    }
}

fn memory_manager(chunks: usize, chunk: usize) -> NetworkAccessManager {
    let chunk = Bytes::from(vec![b'm'; chunk]);
    NetworkAccessManager::builder()
        .build(move |_: &BackendConfig| {
            Ok(Arc::new(MemoryBackend {
                chunks,
                chunk: chunk.clone(),
                capabilities: Capabilities::new().with(Capability::Http1),
            }) as Arc<dyn ResourceHandleManager>)
        })
        .expect("the memory backend starts")
}

fn drain(nam: &NetworkAccessManager) -> usize {
    let request = ResourceRequest::get(URL).build().expect("valid request");
    let mut handle = nam.load(request);
    let mut events = 0;
    while handle.next_event_blocking().is_some() {
        events += 1;
    }
    events
}

fn deliver(c: &mut Criterion) {
    let mut g = c.benchmark_group("deliver");
    let small = memory_manager(1, 13);
    g.bench_function("load_small_body", |b| b.iter(|| drain(&small)));
    let large = memory_manager(16, 64 * 1024);
    g.bench_function("load_1mib_in_16_chunks", |b| b.iter(|| drain(&large)));
    g.finish();
}

fn trace(c: &mut Criterion) {
    let mut g = c.benchmark_group("trace");
    let small = memory_manager(1, 13);
    g.bench_function("record_small_load", |b| {
        b.iter(|| {
            let handle = small.load(ResourceRequest::get(URL).build().expect("valid request"));
            Trace::record_blocking("memory", handle)
        })
    });
    let large = memory_manager(16, 64 * 1024);
    g.bench_function("record_1mib_load", |b| {
        b.iter(|| {
            let handle = large.load(ResourceRequest::get(URL).build().expect("valid request"));
            Trace::record_blocking("memory", handle)
        })
    });
    g.finish();
}

fn wire(c: &mut Criterion) {
    let server = BenchServer::start(1).expect("the bench server starts");
    let url = format!("{}/small", server.url());
    let mut g = c.benchmark_group("wire");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for backend in Backend::compiled() {
        let nam = NetworkAccessManager::new(backend).expect("backend starts");
        let get = |headers: bool| {
            let mut b = ResourceRequest::get(&url);
            if headers {
                b = sixteen_headers(b);
            }
            let mut handle = nam.load(b.build().expect("valid request"));
            handle.bytes_blocking().expect("the server answers")
        };
        g.bench_function(format!("{backend}_small_get"), |b| b.iter(|| get(false)));
        g.bench_function(format!("{backend}_small_get_16_headers"), |b| {
            b.iter(|| get(true))
        });
    }
    g.finish();
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = request, deliver, trace, wire
}
criterion_main!(hot_paths);
