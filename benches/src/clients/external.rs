//! The external ceilings: wrk and the curl command-line tool, run as child
//! processes of the measuring process (their CPU time and peak memory come
//! from `RUSAGE_CHILDREN`).
//!
//! Each reports the time it measured itself where it can (wrk's "requests
//! in Xs", curl's `%{time_total}`), so process start-up is not counted
//! against it; curl's small-GET loops are timed from outside (start-up is
//! then spread over thousands of requests).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{check_length, check_sink_answer, Runner, Sample};

/// Where `program` is on `PATH`, if it is.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// wrk with one thread and as many connections as requests in flight.
pub(crate) struct Wrk {
    connections: usize,
}

impl Wrk {
    pub(crate) fn new(in_flight: usize) -> Self {
        Wrk {
            connections: in_flight.max(1),
        }
    }
}

/// Parses wrk's `N requests in 1.00s, …` line and refuses non-2xx answers.
fn parse_wrk(text: &str) -> Result<(u64, Duration), String> {
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
    {
        return Err(format!("wrk: {}", line.trim()));
    }
    let line = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .ok_or_else(|| format!("wrk printed no request count: {text:?}"))?;
    let mut words = line.split_whitespace();
    let count: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("wrk: cannot read {line:?}"))?;
    let time = words
        .nth(2)
        .map(|w| w.trim_end_matches(','))
        .ok_or_else(|| format!("wrk: cannot read {line:?}"))?;
    Ok((
        count,
        parse_duration(time).ok_or_else(|| format!("wrk: cannot read {time:?}"))?,
    ))
}

/// `1.00s`, `999.12ms`, `12.3us`, `1.02m` as wrk prints them.
fn parse_duration(s: &str) -> Option<Duration> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    let secs: f64 = num.parse().ok()?;
    Duration::try_from_secs_f64(secs * scale).ok()
}

impl Runner for Wrk {
    fn warm_up_requests(&mut self, _url: &str, _until: Instant) -> Result<(), String> {
        // Every wrk run opens its own connections; there is nothing to warm.
        Ok(())
    }

    fn requests(&mut self, url: &str, until: Instant) -> Result<Sample, String> {
        // wrk takes whole seconds.
        let secs = until
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
            .ceil()
            .max(1.0) as u64;
        let out = run(
            Command::new("wrk")
                .arg("-t1")
                .arg(format!("-c{}", self.connections))
                .arg(format!("-d{secs}s"))
                .arg("--timeout")
                .arg("10s")
                .arg(url),
            "wrk",
        )?;
        let (count, elapsed) = parse_wrk(&String::from_utf8_lossy(&out.stdout))?;
        Ok(Sample {
            amount: count,
            requests: count,
            elapsed: Some(elapsed),
        })
    }

    fn download(&mut self, _url: &str, _expected: u64) -> Result<Sample, String> {
        Err("wrk only sends small GETs".into())
    }

    fn upload(&mut self, _url: &str, _len: u64) -> Result<Sample, String> {
        Err("wrk only sends small GETs".into())
    }
}

/// The curl tool: `-o /dev/null` for downloads, `-T FILE` for the upload, a
/// url glob (`[1-N]`) for small GETs, with `-Z` when more than one is in flight.
pub(crate) struct CurlCli {
    in_flight: usize,
    /// Requests per second seen so far, to size the next glob.
    rate: Option<f64>,
    upload_file: Option<(PathBuf, u64)>,
}

impl CurlCli {
    pub(crate) fn new(in_flight: usize) -> Self {
        CurlCli {
            in_flight: in_flight.max(1),
            rate: None,
            upload_file: None,
        }
    }

    /// Runs `count` GETs of `url` and returns the wall time they took.
    fn glob(&self, url: &str, count: u64) -> Result<Duration, String> {
        let mut cmd = Command::new("curl");
        // -q: no ~/.curlrc; --noproxy: the server is on loopback, whatever
        // the environment's http_proxy says.
        cmd.args(["-q", "--noproxy", "*", "-s", "-f", "-o", "/dev/null"]);
        if self.in_flight > 1 {
            cmd.arg("-Z")
                .arg("--parallel-max")
                .arg(self.in_flight.min(300).to_string());
        }
        // One -o for a globbed url sends every transfer of the glob there.
        cmd.arg(format!("{url}?[1-{count}]"));
        let start = Instant::now();
        run(&mut cmd, "curl")?;
        Ok(start.elapsed())
    }

    /// A sparse file of `len` bytes (zeros) to upload, made once.
    fn upload_file(&mut self, len: u64) -> Result<PathBuf, String> {
        if let Some((path, l)) = &self.upload_file {
            if *l == len {
                return Ok(path.clone());
            }
        }
        self.remove_upload_file();
        let path =
            std::env::temp_dir().join(format!("rh-bench-upload-{}-{len}", std::process::id()));
        let file =
            File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        file.set_len(len)
            .map_err(|e| format!("cannot size {}: {e}", path.display()))?;
        self.upload_file = Some((path.clone(), len));
        Ok(path)
    }

    fn remove_upload_file(&mut self) {
        if let Some((path, _)) = self.upload_file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for CurlCli {
    fn drop(&mut self) {
        self.remove_upload_file();
    }
}

/// Parses `%{size} %{time_total}` from the last line curl printed.
fn parse_curl_w(text: &str) -> Result<(u64, Duration), String> {
    let line = text.lines().last().unwrap_or_default();
    let mut w = line.split_whitespace();
    let size = w.next().and_then(|s| s.parse::<f64>().ok());
    let time = w.next().and_then(|s| s.parse::<f64>().ok());
    match (size, time) {
        (Some(s), Some(t)) if s >= 0.0 => Ok((
            s as u64,
            Duration::try_from_secs_f64(t).map_err(|e| format!("curl time {t}: {e}"))?,
        )),
        _ => Err(format!("curl printed no size and time: {line:?}")),
    }
}

impl Runner for CurlCli {
    fn warm_up_requests(&mut self, url: &str, _until: Instant) -> Result<(), String> {
        // Calibrates the glob size: curl runs a count, not a duration.
        let n = 300;
        let t = self.glob(url, n)?;
        self.rate = Some(n as f64 / t.as_secs_f64().max(1e-6));
        Ok(())
    }

    fn requests(&mut self, url: &str, until: Instant) -> Result<Sample, String> {
        let rate = self.rate.unwrap_or(1000.0);
        let secs = until
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        let count = ((rate * secs) as u64).clamp(100, 2_000_000);
        let elapsed = self.glob(url, count)?;
        self.rate = Some(count as f64 / elapsed.as_secs_f64().max(1e-6));
        Ok(Sample {
            amount: count,
            requests: count,
            elapsed: Some(elapsed),
        })
    }

    fn download(&mut self, url: &str, expected: u64) -> Result<Sample, String> {
        let out = run(
            Command::new("curl")
                .args([
                    "-q",
                    "--noproxy",
                    "*",
                    "-s",
                    "-f",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download} %{time_total}",
                ])
                .arg(url),
            "curl",
        )?;
        let (size, time) = parse_curl_w(&String::from_utf8_lossy(&out.stdout))?;
        let mut s = check_length(size, expected)?;
        s.elapsed = Some(time);
        Ok(s)
    }

    fn upload(&mut self, url: &str, len: u64) -> Result<Sample, String> {
        let file = self.upload_file(len)?;
        let out = run(
            Command::new("curl")
                .args([
                    "-q",
                    "--noproxy",
                    "*",
                    "-s",
                    "-f",
                    "-X",
                    "POST",
                    "-H",
                    "Expect:",
                    "-H",
                    "Content-Type:",
                ])
                .arg("-T")
                .arg(&file)
                .args(["-o", "-", "-w", "\n%{size_upload} %{time_total}"])
                .arg(url),
            "curl",
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, _) = text.rsplit_once('\n').unwrap_or((&text, ""));
        let (size, time) = parse_curl_w(&text)?;
        if size != len {
            return Err(format!("curl sent {size} bytes, expected {len}"));
        }
        check_sink_answer(body.as_bytes(), len)?;
        Ok(Sample {
            amount: len,
            requests: 1,
            elapsed: Some(time),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 1s test @ http://127.0.0.1:1/small\n  1 threads and 6 connections\n  \
                    52817 requests in 1.00s, 4.48MB read\nRequests/sec:  52788.17\n";
        let (n, t) = parse_wrk(text).unwrap();
        assert_eq!(n, 52817);
        assert_eq!(t, Duration::from_secs(1));
        assert!(
            parse_wrk("  Non-2xx or 3xx responses: 5\n 1 requests in 1.00s, 1MB read").is_err()
        );
        assert_eq!(
            parse_duration("250.5ms"),
            Some(Duration::from_micros(250_500))
        );
        assert!(parse_duration("fast").is_none());
    }

    #[test]
    fn reads_curl_write_out() {
        let (s, t) = parse_curl_w("{\"len\":5}\n5 0.250000").unwrap();
        assert_eq!((s, t), (5, Duration::from_millis(250)));
        assert!(parse_curl_w("garbage").is_err());
    }
}
