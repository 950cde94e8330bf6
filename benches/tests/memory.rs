//! A 1 GiB streamed download and a 1 GiB streamed upload through each backend
//! keep the process's peak memory under 64 MiB.
//!
//! This file is its own test binary with one test, so the peak it reads is
//! this workload's and nothing else's.

use benches::{download, peak_rss_bytes, upload};
use conformance_tests::servers::Origin;
use resource_handle::{Backend, NetworkAccessManager};

const GIB: u64 = 1 << 30;
const LIMIT: u64 = 64 << 20;

#[test]
fn one_gib_each_way_stays_under_64_mib() {
    let origin = Origin::start().expect("origin starts");
    let port = origin.port();
    let mut report = Vec::new();
    for backend in Backend::compiled() {
        let nam = NetworkAccessManager::builder()
            .resolve("origin.test", port, ["127.0.0.1".parse().expect("literal")])
            .build(backend)
            .expect("backend starts");
        let got = download(&nam, &format!("http://origin.test:{port}/bytes/{GIB}"))
            .unwrap_or_else(|e| panic!("{backend} download failed: {e}"));
        assert_eq!(got, GIB, "{backend} download length");
        let body = upload(&nam, &format!("http://origin.test:{port}/sink"), GIB)
            .unwrap_or_else(|e| panic!("{backend} upload failed: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("{{\"len\":{GIB}}}"),
            "{backend} upload length seen by the server"
        );
        let peak = peak_rss_bytes().expect("/proc/self/status has VmHWM");
        report.push(format!("{backend}: peak {} MiB", peak >> 20));
        assert!(
            peak < LIMIT,
            "peak RSS {} MiB after {backend} exceeds {} MiB ({})",
            peak >> 20,
            LIMIT >> 20,
            report.join(", ")
        );
    }
    eprintln!("{}", report.join(", "));
}
