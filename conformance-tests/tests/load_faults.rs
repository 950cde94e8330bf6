//! Load with faults: 2,000 loads with 64 in flight against a server that
//! breaks 5% of its responses at a random point (a reset before the head,
//! inside it or inside the body, or a close inside the body), on every
//! compiled backend.
//!
//! Every load must end in the whole response or in a clear error of a
//! fault's kind, the counts must add up (no load lost, no more failures
//! than faults the server carried out), and the manager must serve clean
//! loads afterwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance_tests::servers::{RawServer, Step};
use resource_handle::{Backend, Event, NetworkAccessManager, ResourceRequest};

const LOADS: usize = 2000;
const IN_FLIGHT: usize = 64;
/// Percent of responses broken.
const FAULT_PERCENT: u64 = 5;
/// Requests one connection is scripted to serve.
const PER_CONNECTION: usize = 400;
const BODY_LEN: usize = 1500;

fn body() -> Vec<u8> {
    (0..BODY_LEN).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The script of connection `index`: answers until its scripted fault, if
/// any, then breaks. Returns the script and the fault's slot.
fn script(seed: u64, index: usize) -> (Vec<Step>, Option<usize>) {
    let mut rng = Rng(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let body = body();
    let mut steps = Vec::new();
    for slot in 0..PER_CONNECTION {
        steps.push(Step::ReadRequest);
        let chunked = rng.below(2) == 0;
        let head_len;
        let mut response = if chunked {
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            head_len = r.len();
            for part in body.chunks(500) {
                r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                r.extend_from_slice(part);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            r
        } else {
            let mut r =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY_LEN}\r\n\r\n").into_bytes();
            head_len = r.len();
            r.extend_from_slice(&body);
            r
        };
        if rng.below(100) < FAULT_PERCENT {
            // Break at a random point: before the head, inside it or inside
            // the body, a third of the faults each.
            let cut = match rng.below(3) {
                0 => 0,
                1 => 1 + rng.below(head_len as u64 - 1) as usize,
                _ => head_len + rng.below((response.len() - head_len) as u64) as usize,
            };
            response.truncate(cut);
            steps.push(Step::Send(response));
            steps.push(Step::Sleep(Duration::from_millis(2)));
            steps.push(if rng.below(4) == 0 && cut > 0 {
                Step::Close
            } else {
                Step::Reset
            });
            return (steps, Some(slot));
        }
        steps.push(Step::Send(response));
    }
    (steps, None)
}

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    failed: HashMap<String, usize>,
    wrong: Vec<String>,
}

fn drain(h: &mut resource_handle::ResourceHandle, expected: &[u8]) -> Result<(), String> {
    let mut body = Vec::new();
    let mut status = None;
    while let Some(ev) = h.next_event_blocking() {
        match ev {
            Event::Response(r) => status = Some(r.status().as_u16()),
            Event::Data(d) => body.extend_from_slice(&d),
            Event::Finished => {
                if status != Some(200) || body != expected {
                    return Err(format!(
                        "wrong:finished with {status:?} and {} body bytes",
                        body.len()
                    ));
                }
                return Ok(());
            }
            Event::Failed(e) => return Err(e.kind().as_str().to_owned()),
            _ => {}
        }
    }
    Err("wrong:no end".into())
}

/// One backend at a time: the figures are each backend's own.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(backend: Backend, seed: u64) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let faults: Arc<Mutex<HashMap<usize, usize>>> = Arc::default();
    let scripted = faults.clone();
    let server = RawServer::start_with(move |index| {
        let (steps, fault) = script(seed, index);
        if let Some(slot) = fault {
            scripted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(index, slot);
        }
        steps
    })
    .expect("raw server");
    let url = format!("http://127.0.0.1:{}/load", server.port());
    let manager = NetworkAccessManager::builder()
        .max_connections_per_host(IN_FLIGHT)
        .max_loads_total(IN_FLIGHT)
        .timeout(Duration::from_secs(30))
        .build(backend)
        .expect("manager");
    let expected = body();
    let start = Instant::now();
    let handles: Vec<_> = (0..LOADS)
        .map(|i| {
            manager.load(
                ResourceRequest::get(format!("{url}?n={i}"))
                    .build()
                    .expect("request"),
            )
        })
        .collect();
    let mut tally = Tally::default();
    for mut h in handles {
        match drain(&mut h, &expected) {
            Ok(()) => tally.ok += 1,
            Err(kind) if kind.starts_with("wrong") => tally.wrong.push(kind),
            Err(kind) => *tally.failed.entry(kind).or_default() += 1,
        }
    }
    let took = start.elapsed();

    // Faults the server carried out: a connection whose fault slot was reached.
    let received = server.received();
    let mut per_conn: HashMap<usize, usize> = HashMap::new();
    for r in &received {
        *per_conn.entry(r.connection).or_default() += 1;
    }
    let carried_out = faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(conn, slot)| per_conn.get(conn).copied().unwrap_or(0) > **slot)
        .count();
    let failed: usize = tally.failed.values().sum();
    let retried = received.len().saturating_sub(LOADS);
    println!(
        "{backend}: {LOADS} loads, {IN_FLIGHT} in flight, in {took:.2?}: {} ok, {failed} failed {:?}, \
         {carried_out} faults carried out, {} requests received ({retried} beyond one per load), \
         {} connections",
        tally.ok,
        tally.failed,
        received.len(),
        server.stats().accepted()
    );
    assert!(tally.wrong.is_empty(), "{backend}: {:?}", tally.wrong);
    assert_eq!(tally.ok + failed, LOADS, "{backend}: loads lost");
    for kind in tally.failed.keys() {
        assert!(
            matches!(kind.as_str(), "io" | "protocol" | "body_truncated"),
            "{backend}: a fault gave an unexpected kind {kind}: {:?}",
            tally.failed
        );
    }
    assert!(
        failed <= carried_out,
        "{backend}: {failed} loads failed but only {carried_out} faults were carried out"
    );
    assert!(carried_out > 0, "{backend}: no fault was carried out");

    // The manager is still usable: clean loads against a clean server.
    let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY_LEN}\r\n\r\n").into_bytes();
    answer.extend_from_slice(&expected);
    let clean = RawServer::start(
        (0..20)
            .flat_map(|_| [Step::ReadRequest, Step::Send(answer.clone())])
            .collect(),
    )
    .expect("clean server");
    for i in 0..20 {
        let mut h = manager.load(
            ResourceRequest::get(format!("http://127.0.0.1:{}/after/{i}", clean.port()))
                .build()
                .expect("request"),
        );
        assert_eq!(
            drain(&mut h, &expected),
            Ok(()),
            "{backend}: load {i} after the run"
        );
    }
    assert_eq!(manager.loads_in_flight(), 0);
    assert_eq!(manager.queued_loads(), 0);
}

static SEED: AtomicU64 = AtomicU64::new(0);

fn seed() -> u64 {
    let s = SEED.load(Ordering::SeqCst);
    if s != 0 {
        return s;
    }
    let s = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d_u64);
    SEED.store(s, Ordering::SeqCst);
    s
}

#[test]
fn load_with_faults_curl() {
    run(Backend::Curl, seed());
}

#[test]
fn load_with_faults_hyper() {
    run(Backend::Hyper, seed());
}

#[test]
fn load_with_faults_ureq() {
    run(Backend::Ureq, seed());
}
