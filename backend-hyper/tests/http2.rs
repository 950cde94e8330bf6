//! HTTP/2 on the hyper backend against a hyper HTTP/2 server on 127.0.0.1:
//! one shared connection, streams reset on cancel with the connection left
//! open, the head limits, the timeouts and streamed uploads, all over h2.

mod support;

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use handle_api::{
    ErrorKind, HttpVersionPref, NetworkAccessManager, RequestBody, ResourceRequest, TimeoutPhase,
};
use support::{nam, H2Server, Speaks, LOCALHOST};

fn url(server: &H2Server, path: &str) -> String {
    format!("http://origin.test:{}{path}", server.port)
}

fn h2(url: String) -> ResourceRequest {
    ResourceRequest::get(url)
        .http_version(HttpVersionPref::Http2PriorKnowledge)
        .build()
        .unwrap()
}

#[test]
fn concurrent_and_sequential_loads_share_one_connection() {
    let server = H2Server::start(Speaks::H2c);
    let nam = nam(server.port);
    let mut handles: Vec<_> = (0..6)
        .map(|_| nam.load(h2(url(&server, "/slow-head/150"))))
        .collect();
    for h in &mut handles {
        assert_eq!(h.response_blocking().unwrap().version_str(), "HTTP/2");
        assert_eq!(&h.bytes_blocking().unwrap()[..], b"late");
    }
    for _ in 0..10 {
        let mut h = nam.load(h2(url(&server, "/bytes/100")));
        assert_eq!(h.bytes_blocking().unwrap().len(), 100);
    }
    assert_eq!(server.connections(), 1);
    let seen = server.requests();
    assert_eq!(seen.len(), 16);
    assert!(seen.iter().all(|r| r.version == http::Version::HTTP_2));
    // No Host over HTTP/2: the authority travels as `:authority`.
    assert!(seen[0].uri.starts_with("http://origin.test:"), "{seen:?}");
    assert!(!seen[0].headers.iter().any(|(n, _)| n == "host"));
}

#[test]
fn cancel_resets_the_stream_and_keeps_the_connection() {
    let server = H2Server::start(Speaks::H2c);
    let nam = nam(server.port);
    let mut h = nam.load(h2(url(&server, "/hang")));
    assert_eq!(&h.chunk_blocking().unwrap().unwrap()[..], b"first");
    h.cancel();
    assert_eq!(h.bytes_blocking().unwrap_err().kind(), ErrorKind::Cancelled);
    assert!(server.wait_resets(1, Duration::from_secs(3)));

    let mut h = nam.load(h2(url(&server, "/hang")));
    assert!(h.chunk_blocking().unwrap().is_some());
    drop(h);
    assert!(server.wait_resets(2, Duration::from_secs(3)));

    let mut h = nam.load(h2(url(&server, "/bytes/5")));
    assert_eq!(&h.bytes_blocking().unwrap()[..], b"xxxxx");
    assert_eq!(server.connections(), 1);
}

/// The head size as curl rebuilds it from HTTP/2 frames.
fn curl_head_bytes(headers: &http::HeaderMap) -> usize {
    13 + 2
        + headers
            .iter()
            .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
            .sum::<usize>()
}

#[test]
fn head_limits_hold_over_h2() {
    let server = H2Server::start(Speaks::H2c);
    let path = "/headers/6";
    let mut h = nam(server.port).load(h2(url(&server, path)));
    let resp = h.response_blocking().unwrap();
    let fields = resp.headers().len();
    let bytes = curl_head_bytes(resp.headers());
    assert!(fields > 6);

    let limited = |fields: usize, bytes: usize| {
        NetworkAccessManager::builder()
            .resolve("origin.test", server.port, [LOCALHOST])
            .max_response_headers(fields)
            .max_response_head_bytes(bytes)
            .build(backend_hyper::factory)
            .unwrap()
    };
    let mut at = limited(fields, bytes).load(h2(url(&server, path)));
    assert_eq!(&at.bytes_blocking().unwrap()[..], b"ok");
    for nam in [limited(fields - 1, bytes), limited(fields, bytes - 1)] {
        let mut over = nam.load(h2(url(&server, path)));
        let e = over.response_blocking().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    }
    // A head far past the byte limit fails the same way.
    let mut huge = limited(1000, 64).load(h2(url(&server, "/headers/200")));
    let e = huge.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
}

#[test]
fn idle_and_total_timeouts_hold_over_h2() {
    let server = H2Server::start(Speaks::H2c);
    let nam = nam(server.port);
    let idle = |path: &str, ms: u64| {
        ResourceRequest::get(url(&server, path))
            .http_version(HttpVersionPref::Http2PriorKnowledge)
            .read_timeout(Duration::from_millis(ms))
            .build()
            .unwrap()
    };
    let mut h = nam.load(idle("/slow-head/1000", 200));
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Idle), "{e}");
    // Each chunk comes well within the idle limit, the whole body does not.
    let started = Instant::now();
    let mut h = nam.load(idle("/drip/6/60", 250));
    assert_eq!(h.bytes_blocking().unwrap().len(), 60);
    assert!(started.elapsed() > Duration::from_millis(250));

    let mut h = nam.load(
        ResourceRequest::get(url(&server, "/drip/20/50"))
            .http_version(HttpVersionPref::Http2PriorKnowledge)
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let e = h.bytes_blocking().unwrap_err();
    assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Total), "{e}");
    // The timeouts reset their streams only: one connection throughout.
    assert_eq!(server.connections(), 1);
}

/// A reader of `len` bytes that counts what it produced.
struct Produce {
    left: u64,
    produced: Arc<AtomicU64>,
}

impl Read for Produce {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize).min(10_000);
        buf[..n].fill(b'u');
        self.left -= n as u64;
        self.produced.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

#[test]
fn uploads_stream_over_h2() {
    let server = H2Server::start(Speaks::H2c);
    let nam = nam(server.port);
    const LEN: u64 = 3 * 1024 * 1024 + 7;
    for sized in [true, false] {
        let produced = Arc::new(AtomicU64::new(0));
        let reader = Produce {
            left: LEN,
            produced: produced.clone(),
        };
        let body = if sized {
            RequestBody::sized(reader, LEN)
        } else {
            RequestBody::chunked(reader)
        };
        let mut h = nam.load(
            ResourceRequest::post(url(&server, "/upload"))
                .http_version(HttpVersionPref::Http2PriorKnowledge)
                .body(body)
                .build()
                .unwrap(),
        );
        assert_eq!(h.text_blocking().unwrap(), LEN.to_string());
        assert_eq!(produced.load(Ordering::SeqCst), LEN);
    }
    let seen = server.requests();
    assert_eq!(seen[0].body_bytes, LEN);
    // Content-Length when known; never Transfer-Encoding over HTTP/2.
    assert!(seen[0]
        .headers
        .iter()
        .any(|(n, v)| n == "content-length" && *v == LEN.to_string()));
    assert!(!seen[1]
        .headers
        .iter()
        .any(|(n, _)| n == "transfer-encoding"));
    assert_eq!(server.connections(), 1);
}

#[test]
fn alpn_h2_over_tls_and_http11_when_refused() {
    // The server takes h2 when offered.
    let server = H2Server::start(Speaks::Tls(&[b"h2", b"http/1.1"]));
    let nam = nam(server.port);
    let tls = |pref| {
        ResourceRequest::get(format!("https://tls.test:{}/bytes/3", server.port))
            .http_version(pref)
            .build()
            .unwrap()
    };
    let mut h = nam.load(tls(HttpVersionPref::Http2));
    assert_eq!(h.response_blocking().unwrap().version_str(), "HTTP/2");
    let mut h = nam.load(tls(HttpVersionPref::Http1));
    assert_eq!(h.response_blocking().unwrap().version_str(), "HTTP/1.1");
    // Prior knowledge means nothing over TLS: ALPN decides there too.
    let mut h = nam.load(tls(HttpVersionPref::Http2PriorKnowledge));
    assert_eq!(h.response_blocking().unwrap().version_str(), "HTTP/2");
    let offers: Vec<Vec<String>> = server.hellos().into_iter().map(|h| h.alpn).collect();
    assert_eq!(
        offers,
        vec![
            vec!["h2".to_owned(), "http/1.1".to_owned()],
            vec!["http/1.1".to_owned()]
        ]
    );

    // A server that speaks HTTP/1.1 only answers an h2 offer with it.
    let old = H2Server::start(Speaks::Tls(&[b"http/1.1"]));
    let mut h = support::nam(old.port).load(
        ResourceRequest::get(format!("https://tls.test:{}/bytes/3", old.port))
            .http_version(HttpVersionPref::Http2)
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap().version_str(), "HTTP/1.1");
    assert_eq!(&h.bytes_blocking().unwrap()[..], b"xxx");
}
