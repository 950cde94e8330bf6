//! The harness end to end, small and in this process: every in-process
//! client runs every workload once against the embedded server, and the
//! report holds a figure for each (a client that fails or returns the wrong
//! length makes the test fail).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use benches::harness::{self, Options};
use benches::{download, BenchServer, ClientKind, Workload};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use resource_handle::{Backend, NetworkAccessManager};

#[test]
fn every_in_process_client_runs_every_workload() {
    let clients: Vec<ClientKind> = ClientKind::ALL
        .into_iter()
        .filter(|c| !c.is_external())
        .collect();
    let workloads = vec![
        Workload::GetSequential,
        Workload::Get6,
        Workload::DownloadLength,
        Workload::DownloadChunked,
        Workload::Upload,
    ];
    let options = Options {
        workloads: workloads.clone(),
        clients: clients.clone(),
        runs: 2,
        duration: Duration::from_millis(40),
        size: 3 << 20,
        target: None,
        child: None,
        server_threads: 1,
        step_limit: Some(Duration::from_secs(20)),
    };
    let mut steps = 0;
    let report = harness::run(&options, |_| steps += 1).expect("the harness runs");
    assert!(
        report.failures.is_empty(),
        "failures: {:?}",
        report.failures
    );
    assert_eq!(steps, workloads.len() * clients.len() * 3);
    for w in &workloads {
        for c in &clients {
            let row = report
                .find(w.name(), c.name())
                .unwrap_or_else(|| panic!("no figure for {w} {c}"));
            assert_eq!(row.runs, 2);
            assert!(row.min > 0.0 && row.min <= row.median && row.median <= row.max);
            assert_eq!(row.unit, w.unit().as_str());
            // In this process, CPU and memory would include the server: not reported.
            assert!(row.peak_rss_bytes.is_none() && row.cpu_us_per_request.is_none());
        }
    }
    let json = report.to_json();
    assert_eq!(
        json["results"].as_array().map(Vec::len),
        Some(workloads.len() * clients.len())
    );
    assert!(report.table().contains("vs reqwest"));
    assert!(benches::svg::chart(&report).starts_with("<svg"));
}

fn raw(server: &BenchServer, request: &str) -> String {
    let mut s = TcpStream::connect(server.addr()).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("writes");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_server_serves_its_routes() {
    let server = BenchServer::start(1).expect("starts");
    let small = raw(
        &server,
        "GET /small HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    assert!(small.ends_with("Hello, world!"), "{small}");
    let bytes = raw(
        &server,
        "GET /bytes/5 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        bytes.to_ascii_lowercase().contains("content-length: 5"),
        "{bytes}"
    );
    assert!(bytes.ends_with("xxxxx"), "{bytes}");
    let chunked = raw(
        &server,
        "GET /chunked/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        chunked
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{chunked}"
    );
    assert!(chunked.contains("3\r\nxxx\r\n0\r\n\r\n"), "{chunked}");
    let sink = raw(
        &server,
        "POST /sink HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 4\r\n\r\nabcd",
    );
    assert!(sink.ends_with("{\"len\":4}"), "{sink}");
    let missing = raw(
        &server,
        "GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let bad = raw(
        &server,
        "GET /bytes/lots HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
}

/// The harness loads one body after another through one manager with one
/// connection per host: each must start once the previous one finished,
/// also when the body was larger than the handle's buffer (the backend
/// paused for space on the way). Bounded: a load that never starts fails
/// the test instead of hanging it.
#[test]
fn consecutive_large_downloads_through_one_connection() {
    let server = BenchServer::start(1).expect("starts");
    let url = format!("{}/bytes/{}", server.url(), 3u64 << 20);
    for backend in Backend::compiled() {
        let (tx, rx) = mpsc::channel();
        let url = url.clone();
        std::thread::spawn(move || {
            let nam = NetworkAccessManager::builder()
                .max_connections_per_host(1)
                .build(backend)
                .expect("backend starts");
            for i in 0..3 {
                let got = download(&nam, &url).map_err(|e| e.to_string());
                if tx.send((i, got)).is_err() {
                    return;
                }
            }
        });
        for i in 0..3 {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok((n, Ok(len))) => assert_eq!((n, len), (i, 3 << 20), "{backend}"),
                Ok((n, Err(e))) => panic!("{backend}: download {n} failed: {e}"),
                Err(_) => panic!(
                    "{backend}: download {i} of 3 did not end within 30 s \
                     (the previous load's connection slot was not given back?)"
                ),
            }
        }
    }
}

/// The same port speaks HTTP/2 to a client that opens with the preface
/// (prior knowledge) and HTTP/1.1 to the others, and counts both kinds of
/// connection and the HTTP/2 requests.
#[test]
fn the_server_speaks_http2_prior_knowledge_and_counts() {
    let server = BenchServer::start(1).expect("starts");
    assert_eq!(
        (server.connections_accepted(), server.http2_requests()),
        (0, 0)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("{}/small", server.url());
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connects");
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        let mut streams = Vec::new();
        for _ in 0..3 {
            let request = http::Request::get(url.as_str())
                .body(Empty::new())
                .expect("request");
            sender.ready().await.expect("ready");
            streams.push(sender.send_request(request));
        }
        for stream in streams {
            let response = tokio::time::timeout(Duration::from_secs(10), stream)
                .await
                .expect("answered in time")
                .expect("response");
            assert_eq!(response.version(), http::Version::HTTP_2);
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.expect("body");
            assert_eq!(&body.to_bytes()[..], b"Hello, world!");
        }
    });
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.http2_requests(), 3);
    let small = raw(
        &server,
        "GET /small HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    assert_eq!(server.connections_accepted(), 2);
    assert_eq!(
        server.http2_requests(),
        3,
        "an HTTP/1.1 request is not counted"
    );
}

/// h2-multiplex through every client that speaks HTTP/2 (the backends that
/// declare it included), with the harness's one-connection and HTTP/2
/// checks: any client that opened a second connection, fell back to
/// HTTP/1.1 or lost requests would be a failure here.
#[test]
fn h2_multiplex_runs_on_one_connection() {
    let clients: Vec<ClientKind> = ClientKind::ALL
        .into_iter()
        .filter(|c| !c.is_external())
        .collect();
    let speakers: Vec<ClientKind> = clients
        .iter()
        .copied()
        .filter(|c| c.supports(Workload::H2Multiplex).is_ok())
        .collect();
    for direct in [
        ClientKind::CurlDirect,
        ClientKind::HyperDirect,
        ClientKind::Reqwest,
    ] {
        assert!(speakers.contains(&direct), "{direct} speaks HTTP/2");
    }
    let options = Options {
        workloads: vec![Workload::H2Multiplex],
        clients: clients.clone(),
        runs: 2,
        duration: Duration::from_millis(60),
        size: 1 << 20,
        target: None,
        child: None,
        server_threads: 1,
        step_limit: Some(Duration::from_secs(30)),
    };
    let report = harness::run(&options, |_| {}).expect("the harness runs");
    assert!(
        report.failures.is_empty(),
        "failures: {:?}",
        report.failures
    );
    for c in &clients {
        let row = report.find("h2-multiplex", c.name());
        if speakers.contains(c) {
            let row = row.unwrap_or_else(|| panic!("no figure for {c}"));
            assert_eq!(row.runs, 2);
            assert_eq!(row.unit, "req/s");
            assert!(row.min > 0.0, "{c}");
        } else {
            assert!(row.is_none(), "{c} does not speak HTTP/2");
            assert!(
                report
                    .skipped
                    .iter()
                    .any(|s| s.workload == "h2-multiplex" && s.client.as_deref() == Some(c.name())),
                "{c} is listed as skipped, with its reason"
            );
        }
    }
}
