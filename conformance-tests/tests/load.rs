//! 10,000 loads queued at once against one local origin, on every compiled
//! backend: none is lost (each gets its 200 and its own body), the origin
//! never sees more than the per-host limit of 6 at once, and the process's
//! memory stays bounded while the queue drains.
//!
//! This file is its own test binary with one test, and each backend runs in
//! a child process of its own, so the peak memory each reads is its own
//! workload's and nothing else's.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use conformance_tests::memory::{current_rss_bytes, peak_rss_bytes};
use conformance_tests::servers::{body_pattern, Origin};
use resource_handle::{Backend, Event, NetworkAccessManager, ResourceHandle, ResourceRequest};

/// Body bytes of each load.
const BODY: usize = 64;
/// The manager's default per-host limit (Qt's 6).
const PER_HOST: usize = 6;
/// The most the peak resident memory may grow per queued load while the
/// queue is filled and drained.
///
/// Measured in a debug build (each backend in its own process, 10,000 loads):
/// curl +42.2 MiB, hyper +53.0 MiB, ureq +44.1 MiB, that is 4.3 to 5.4 KiB
/// per load: the load's request, its queued exchange and its handle, the
/// response each finished load holds until it is read, and the origin's own
/// record of every request (it runs in this process too). 2,000 loads grew
/// by 9 to 11.5 MiB, so the growth is linear with little fixed part. The
/// bound, 10 KiB per load plus 8 MiB, is about twice the worst measurement:
/// a leak or a queue entry that holds a body's buffer fails it, allocator
/// noise does not.
const MAX_GROWTH_PER_LOAD: u64 = 10 << 10;
/// Memory that does not depend on the number of loads (allocator arenas of
/// the threads, the first connections' buffers).
const MAX_GROWTH_FIXED: u64 = 8 << 20;
/// A load that makes no progress for this long counts as lost.
const STALL: Duration = Duration::from_secs(30);

/// Resets the peak resident size (VmHWM) to the current one, so each
/// backend's peak is its own; false where the kernel does not allow it.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// What one backend's run measured.
struct Run {
    backend: Backend,
    loads: usize,
    took: Duration,
    growth: u64,
    queued: usize,
    max_requests: usize,
    max_connections: usize,
    connections: usize,
}

impl Run {
    fn line(&self) -> String {
        format!(
            "{}: {} loads in {:.2?} ({} queued when the last was started), peak memory \
             +{:.1} MiB ({:.2} KiB per load), at most {} requests and {} connections at \
             once ({} connections in all)",
            self.backend,
            self.loads,
            self.took,
            self.queued,
            self.growth as f64 / (1 << 20) as f64,
            self.growth as f64 / 1024.0 / self.loads as f64,
            self.max_requests,
            self.max_connections,
            self.connections
        )
    }

    fn check(&self) {
        let b = self.backend;
        // Loads finish while the rest are still being started; most must have waited.
        assert!(
            self.queued > self.loads / 2,
            "{b}: only {} of {} loads were queued: the rest did not wait for a slot",
            self.queued,
            self.loads
        );
        assert!(
            self.max_requests <= PER_HOST,
            "{b}: the origin saw {} requests at once, the limit is {PER_HOST}",
            self.max_requests
        );
        assert!(
            self.max_connections <= PER_HOST,
            "{b}: the origin saw {} connections at once, the limit is {PER_HOST}",
            self.max_connections
        );
        let bound = MAX_GROWTH_FIXED + MAX_GROWTH_PER_LOAD * self.loads as u64;
        assert!(
            self.growth < bound,
            "{b}: peak memory grew by {:.1} MiB for {} loads, over the bound of {:.1} MiB",
            self.growth as f64 / (1 << 20) as f64,
            self.loads,
            bound as f64 / (1 << 20) as f64
        );
    }
}

/// Queues `loads` loads on `backend` and drains them in order, on a thread
/// of its own so a lost load fails the test instead of hanging it.
fn run(backend: Backend, loads: usize) -> Run {
    let origin = Origin::start().expect("origin starts");
    let port = origin.port();
    let nam = NetworkAccessManager::builder()
        .resolve("origin.test", port, ["127.0.0.1".parse().expect("literal")])
        .build(backend)
        .expect("backend starts");
    let url = |i: usize| format!("http://origin.test:{port}/slow/1?len={BODY}&i={i}");
    // One load first, so the backend's threads and pool exist before the baseline.
    let mut warm = nam.load(ResourceRequest::get(url(loads)).build().expect("request"));
    warm.bytes_blocking().expect("warm-up load");
    drop(warm);

    let peak_resettable = reset_peak();
    let before = if peak_resettable {
        peak_rss_bytes()
    } else {
        current_rss_bytes()
    }
    .expect("/proc/self/status has VmHWM and VmRSS");
    let start = Instant::now();
    let handles: Vec<ResourceHandle> = (0..loads)
        .map(|i| nam.load(ResourceRequest::get(url(i)).build().expect("request")))
        .collect();
    let queued = nam.queued_loads();

    let (tx, rx) = mpsc::channel::<Result<usize, String>>();
    std::thread::Builder::new()
        .name(format!("drain-{backend}"))
        .spawn(move || {
            let want = body_pattern(BODY);
            for (i, mut h) in handles.into_iter().enumerate() {
                let mut status = None;
                let mut body = Vec::new();
                let mut error = None;
                while let Some(ev) = h.next_event_blocking() {
                    match ev {
                        Event::Response(r) => status = Some(r.status().as_u16()),
                        Event::Data(d) => body.extend_from_slice(&d),
                        Event::Failed(e) => error = Some(e.to_string()),
                        _ => {}
                    }
                }
                let outcome = match (status, error) {
                    (_, Some(e)) => Err(format!("load {i} failed: {e}")),
                    (Some(200), None) if body == want => Ok(i),
                    (s, None) => Err(format!(
                        "load {i}: status {s:?} with {} body bytes",
                        body.len()
                    )),
                };
                let stop = outcome.is_err();
                if tx.send(outcome).is_err() || stop {
                    return;
                }
            }
        })
        .expect("drain thread starts");
    let mut done = 0usize;
    while done < loads {
        match rx.recv_timeout(STALL) {
            Ok(Ok(i)) => {
                assert_eq!(i, done, "{backend}: loads completed out of order");
                done += 1;
            }
            Ok(Err(e)) => panic!("{backend}: {e}"),
            Err(_) => panic!(
                "{backend}: no load completed for {STALL:?} after {done} of {loads} \
                 ({} queued, {} in flight)",
                nam.queued_loads(),
                nam.loads_in_flight()
            ),
        }
    }
    let took = start.elapsed();
    let peak = peak_rss_bytes().expect("VmHWM");

    // None lost: the origin answered each load exactly once.
    let requests = origin.requests();
    let mut seen = vec![false; loads + 1];
    for r in &requests {
        let i: usize = r
            .target
            .rsplit_once("&i=")
            .and_then(|(_, i)| i.parse().ok())
            .unwrap_or_else(|| panic!("{backend}: unexpected target {}", r.target));
        assert!(!seen[i], "{backend}: load {i} reached the origin twice");
        seen[i] = true;
    }
    assert_eq!(
        requests.len(),
        loads + 1,
        "{backend}: requests at the origin"
    );
    Run {
        backend,
        loads,
        took,
        growth: peak.saturating_sub(before),
        queued,
        max_requests: origin.max_requests_in_progress(),
        max_connections: origin.stats().max_active(),
        connections: origin.stats().accepted(),
    }
}

/// The environment variable that makes the test run one backend (in a child).
const CHILD: &str = "RH_LOAD_TEST_BACKEND";

/// Loads queued on each backend: 10,000 (about 4 s each in a debug build).
///
/// `RH_LOAD_TEST_LOADS=N` runs N loads on every backend instead.
fn loads_for(_backend: Backend) -> usize {
    std::env::var("RH_LOAD_TEST_LOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Each backend runs in a child process of its own (this test binary again,
/// with [`CHILD`] set), so the peak memory each reads is its own: memory a
/// previous backend freed stays resident and would hide the next one's growth.
#[test]
fn ten_thousand_loads_queued_at_once() {
    if let Ok(name) = std::env::var(CHILD) {
        let backend: Backend = name.parse().expect("a backend name");
        let r = run(backend, loads_for(backend));
        r.check();
        println!("RESULT {}", r.line());
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for backend in Backend::compiled() {
        let out = std::process::Command::new(&exe)
            .args([
                "ten_thousand_loads_queued_at_once",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, backend.name())
            .output()
            .expect("the child test starts");
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout
            .split_once("RESULT ")
            .and_then(|(_, r)| r.lines().next())
        {
            Some(line) if out.status.success() => report.push(line.to_owned()),
            _ => failures.push(format!(
                "{backend}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
