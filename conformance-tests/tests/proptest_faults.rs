//! No panic, no hang: property tests over what the application builds and
//! what a server sends back.
//!
//! - Request building never panics; a request that builds carries no CR, LF
//!   or NUL anywhere a line could break, and what reaches the server holds
//!   exactly the header lines the application set (no injection).
//! - A server that answers with random bytes, or with a valid response cut
//!   at a random point, flipped at random bytes and ended by a close or a
//!   reset: every load on every backend ends in exactly one `Finished` or
//!   `Failed`, within its timeout, and no backend panics (a panicking
//!   backend drops its exchange, which the handle reports as such).
//!
//! Case counts are modest so that `cargo test` stays quick on two cores;
//! `PROPTEST_CASES` raises them.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use conformance_tests::servers::{RawServer, Step};
use proptest::prelude::*;
use resource_handle::{Backend, Event, NetworkAccessManager, ResourceRequest};

/// The longest any load here may take: its total timeout plus slack.
const LOAD_TIMEOUT: Duration = Duration::from_secs(4);
const DEADLINE: Duration = Duration::from_secs(10);

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One manager per backend for the whole test binary: urls use IP literals,
/// so no host override ties a manager to a server.
fn managers() -> &'static Vec<(Backend, NetworkAccessManager)> {
    static M: OnceLock<Vec<(Backend, NetworkAccessManager)>> = OnceLock::new();
    M.get_or_init(|| {
        Backend::compiled()
            .into_iter()
            .map(|b| {
                let m = NetworkAccessManager::builder()
                    .timeout(LOAD_TIMEOUT)
                    .read_timeout(Duration::from_secs(2))
                    .build(b)
                    .unwrap_or_else(|e| panic!("{b} did not start: {e}"));
                (b, m)
            })
            .collect()
    })
}

/// What a load ended with.
#[derive(Debug)]
enum End {
    Finished(u16),
    Failed(String, String),
}

/// Runs `req` to its end and checks the event stream's shape.
fn run(backend: Backend, m: &NetworkAccessManager, req: ResourceRequest) -> Result<End, String> {
    let start = Instant::now();
    let mut h = m.load(req);
    let (mut status, mut end, mut after_end) = (None, None, 0);
    while let Some(ev) = h.next_event_blocking() {
        if start.elapsed() > DEADLINE {
            return Err(format!(
                "{backend}: the load is still running after {DEADLINE:?}"
            ));
        }
        if end.is_some() {
            after_end += 1;
        }
        match ev {
            Event::Response(r) => status = Some(r.status().as_u16()),
            Event::Finished => end = Some(End::Finished(status.unwrap_or(0))),
            Event::Failed(e) => {
                end = Some(End::Failed(e.kind().as_str().to_owned(), e.to_string()))
            }
            _ => {}
        }
    }
    if start.elapsed() > DEADLINE {
        return Err(format!("{backend}: the load took {:?}", start.elapsed()));
    }
    if after_end > 0 {
        return Err(format!("{backend}: {after_end} events after the end"));
    }
    let end = end.ok_or_else(|| format!("{backend}: the event stream ended without an end"))?;
    if let End::Failed(kind, msg) = &end {
        if msg.contains("dropped the exchange") {
            return Err(format!(
                "{backend}: the backend gave up its exchange (a panic?): {msg}"
            ));
        }
        if kind == "unsupported" {
            return Err(format!("{backend}: {msg}"));
        }
    }
    Ok(end)
}

fn header_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(
            prop_oneof![Just(b'x'), Just(b'-'), Just(b'a'), Just(b'Z'), Just(b'9')],
            1..12
        ),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(
            prop_oneof![Just(b'v'), Just(b' '), Just(b'\t'), Just(b';'), Just(b'='), Just(0xe9u8)],
            0..20
        ),
        1 => proptest::collection::vec(any::<u8>(), 0..20),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop_oneof![Just("GET"), Just("HEAD"), Just("DELETE"), Just("OPTIONS"), Just("PURGE")]
            .prop_map(str::to_owned),
        1 => proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 0..24)
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Header names a library may add of its own, besides the application's.
const LIBRARY_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
    "accept",
    "accept-encoding",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1024)))]

    /// Building never panics, and what builds is free of line breaks.
    #[test]
    fn request_building_is_total(
        m in method(),
        p in path(),
        headers in proptest::collection::vec((header_name(), header_value()), 0..4),
    ) {
        let mut b = ResourceRequest::builder(&m, format!("http://127.0.0.1:9/{p}"));
        for (n, v) in &headers {
            b = b.header(n, v);
        }
        if let Ok(req) = b.build() {
            let bad = |s: &[u8]| s.iter().any(|c| matches!(c, b'\r' | b'\n' | 0));
            prop_assert!(!bad(req.url().as_str().as_bytes()));
            prop_assert!(!bad(req.method().as_str().as_bytes()));
            for (n, v) in req.headers() {
                prop_assert!(!bad(n.as_str().as_bytes()) && !bad(v.as_bytes()));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(32)))]

    /// Random requests that build reach the server as built, on every backend.
    #[test]
    fn random_requests_arrive_as_built(
        m in method(),
        p in path(),
        headers in proptest::collection::vec((header_name(), header_value()), 0..4),
    ) {
        for (backend, manager) in managers() {
            let server = RawServer::start(vec![
                Step::ReadRequest,
                Step::send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                Step::Close,
            ]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let url = format!("http://127.0.0.1:{}/{p}", server.port());
            let mut b = ResourceRequest::builder(&m, &url);
            for (n, v) in &headers {
                b = b.header(n, v);
            }
            let Ok(req) = b.build() else { return Ok(()) };
            let expected: Vec<(String, Vec<u8>)> = req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect();
            let end = run(*backend, manager, req).map_err(TestCaseError::fail)?;
            if let End::Finished(status) = end {
                prop_assert_eq!(status, 200);
                let received = server.received();
                prop_assert_eq!(received.len(), 1);
                let head = &received[0].head;
                // Every line of the head is the request line, a header the
                // application set, or one a library adds: nothing injected.
                let lines: Vec<&[u8]> = head
                    .split(|&c| c == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .filter(|l| !l.is_empty())
                    .skip(1)
                    .collect();
                for line in lines {
                    let colon = line.iter().position(|&c| c == b':').unwrap_or(line.len());
                    let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
                    let known = LIBRARY_HEADERS.contains(&name.as_str())
                        || expected.iter().any(|(n, _)| *n == name);
                    prop_assert!(known, "{}: unexpected header line {:?}", backend, String::from_utf8_lossy(line));
                }
            }
        }
    }
}

/// A valid response, damaged: cut at `cut`, with bytes at `flips` replaced.
fn damaged(chunked: bool, cut: usize, flips: &[(usize, u8)]) -> Vec<u8> {
    let body = "hello, world. ".repeat(20);
    let mut r = if chunked {
        let mut s = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n");
        for part in body.as_bytes().chunks(50) {
            s.push_str(&format!(
                "{:x}\r\n{}\r\n",
                part.len(),
                String::from_utf8_lossy(part)
            ));
        }
        s.push_str("0\r\n\r\n");
        s.into_bytes()
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-A: b\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    for (at, byte) in flips {
        let len = r.len();
        r[at % len] = *byte;
    }
    r.truncate(cut.min(r.len()));
    r
}

fn ending() -> impl Strategy<Value = bool> {
    any::<bool>()
}

fn serve_and_load(response: Vec<u8>, reset: bool) -> Result<(), TestCaseError> {
    for (backend, manager) in managers() {
        let server = RawServer::start(vec![
            Step::ReadRequest,
            Step::Send(response.clone()),
            Step::Sleep(Duration::from_millis(5)),
            if reset { Step::Reset } else { Step::Close },
        ])
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let req = ResourceRequest::get(format!("http://127.0.0.1:{}/r", server.port()))
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        run(*backend, manager, req).map_err(TestCaseError::fail)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    /// Random bytes for a response: every load ends, nothing panics.
    #[test]
    fn random_bytes_end_every_load(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        prefix in any::<bool>(),
        reset in ending(),
    ) {
        let mut response = if prefix { b"HTTP/1.1 200 OK\r\n".to_vec() } else { Vec::new() };
        response.extend_from_slice(&bytes);
        serve_and_load(response, reset)?;
    }

    /// A valid response cut and damaged at random points: every load ends.
    #[test]
    fn damaged_responses_end_every_load(
        chunked in any::<bool>(),
        cut in 0usize..400,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        reset in ending(),
    ) {
        serve_and_load(damaged(chunked, cut, &flips), reset)?;
    }
}
