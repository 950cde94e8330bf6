//! `rh get --cache-dir`: a second run of the same command is answered from
//! the cache the first one left on disk, and its trace says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use conformance_tests::servers::Origin;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `rh get --json` with `args` and returns its trace.
fn rh_get(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rh"))
        .arg("get")
        .arg("--json")
        // rh reads proxies from the environment, as curl does; the test
        // server is on loopback and must be reached directly.
        .args(["--proxy", ""])
        .args(args)
        .output()
        .expect("rh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "rh printed no trace ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn run(backend: &str, dir: &Path, origin: &Origin) {
    let path = format!("/cache/cli-{backend}");
    let url = format!(
        "http://127.0.0.1:{}{path}?cc=max-age%3D600&etag=strong",
        origin.port()
    );
    let dir = dir.to_str().expect("a UTF-8 temp dir");
    let args = ["--backend", backend, "--cache-dir", dir, url.as_str()];
    let first = rh_get(&args);
    assert_eq!(first["status"], 200, "{first}");
    assert_eq!(first["source"], "network", "{first}");
    let second = rh_get(&args);
    assert_eq!(second["status"], 200, "{second}");
    assert_eq!(second["source"], "cache", "{second}");
    assert_eq!(second["body_sha256"], first["body_sha256"]);
    assert_eq!(origin.count(&path), 1, "the second run reached the origin");
    // Without the directory, the same command goes to the network again.
    let plain = rh_get(&["--backend", backend, url.as_str()]);
    assert_eq!(plain["source"], "network", "{plain}");
    assert_eq!(origin.count(&path), 2);
    // And with it but told not to load, an uncached url fails clearly.
    let other = format!("http://127.0.0.1:{}/cache/never", origin.port());
    let refused = rh_get(&[
        "--backend",
        backend,
        "--cache-dir",
        dir,
        "--cache-policy",
        "dont-load",
        other.as_str(),
    ]);
    assert_eq!(refused["error"]["kind"], "not_cached", "{refused}");
    assert_eq!(origin.count("/cache/never"), 0);
}

#[test]
fn second_run_is_answered_from_the_cache_dir() {
    let origin = Origin::start().expect("origin starts");
    for backend in ["curl", "hyper", "ureq"] {
        let dir = TempDir(
            std::env::temp_dir().join(format!("rh-cli-cache-{}-{backend}", std::process::id())),
        );
        let _ = std::fs::remove_dir_all(&dir.0);
        run(backend, &dir.0, &origin);
    }
}
