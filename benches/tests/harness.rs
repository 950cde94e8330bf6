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
