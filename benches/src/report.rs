//! The results of a run and their forms: a table for people, the JSON object
//! of DESIGN.md §7 for tools, Markdown for a README, and the targets of
//! issue 7 checked against the figures.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::workload::{ClientKind, Workload};
use resource_handle::Backend;

/// The machine a run was made on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cores: usize,
    /// Distribution and kernel.
    pub os: String,
    /// When the run was made, UTC, ISO 8601.
    pub date: String,
}

impl Machine {
    /// This machine, now.
    pub fn current() -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let distro = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| format!(", Linux {}", k.trim()))
            .unwrap_or_default();
        Machine {
            cores,
            os: format!("{distro}{kernel} ({})", std::env::consts::ARCH),
            date: utc_now(),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for now.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Howard Hinnant's days-to-civil: days since 1970-01-01 → (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One figure: a workload run by a client, several times.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultRow {
    /// Workload name (`get-6`, `download-length`, …).
    pub workload: String,
    /// Client name (`curl`, `hyper-direct`, `reqwest`, `wrk`, …).
    pub client: String,
    /// `req/s` or `bytes/s`.
    pub unit: String,
    /// Median over the runs.
    pub median: f64,
    /// Slowest run.
    pub min: f64,
    /// Fastest run.
    pub max: f64,
    /// Number of runs.
    pub runs: usize,
    /// Peak resident memory of the client's process (null when not measured).
    pub peak_rss_bytes: Option<u64>,
    /// Client CPU time (user + system, all threads) per request, in µs (null when not measured).
    pub cpu_us_per_request: Option<f64>,
}

/// A pair that was not run, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// Workload name.
    pub workload: String,
    /// Client name; `None` when the whole workload was skipped.
    pub client: Option<String>,
    /// Why.
    pub reason: String,
}

/// A pair whose measurement failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Workload name.
    pub workload: String,
    /// Client name.
    pub client: String,
    /// What went wrong.
    pub error: String,
}

/// How the run was made.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Measured runs per figure.
    pub runs: usize,
    /// Length of a small-GET run.
    pub duration: Duration,
    /// Large-body size.
    pub size: u64,
    /// Which server answered.
    pub server: String,
    /// True when each client ran in a process of its own.
    pub own_process: bool,
}

/// The outcome of a run. Serialises to exactly `{"machine", "results"}`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// Every figure measured.
    pub results: Vec<ResultRow>,
    /// Pairs not run.
    #[serde(skip)]
    pub skipped: Vec<Skipped>,
    /// Pairs that failed.
    #[serde(skip)]
    pub failures: Vec<Failure>,
    /// How the run was made.
    #[serde(skip)]
    pub settings: Settings,
}

/// One target of issue 7 §5, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheck {
    /// The target (`abstraction ≥ 0.97× direct`, …).
    pub target: String,
    /// What was compared (`hyper / hyper-direct, get-6`).
    pub subject: String,
    /// The measured ratio or figure, formatted.
    pub measured: String,
    /// Whether the target is met.
    pub met: bool,
}

const BACKENDS: [Backend; 3] = [Backend::Curl, Backend::Hyper, Backend::Ureq];

/// The memory bound of issue 7 for a streamed download.
pub const PEAK_TARGET_BYTES: u64 = 32 << 20;

impl Report {
    /// The figure of `client` on `workload`.
    pub fn find(&self, workload: &str, client: &str) -> Option<&ResultRow> {
        self.results
            .iter()
            .find(|r| r.workload == workload && r.client == client)
    }

    /// The JSON object of DESIGN.md §7.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The row's median over the same workload's median of `other`.
    pub fn ratio(&self, row: &ResultRow, other: &str) -> Option<f64> {
        let o = self.find(&row.workload, other)?;
        (o.median > 0.0).then(|| row.median / o.median)
    }

    /// The direct-library baseline of a row's client, if it is a backend.
    fn direct_ratio(&self, row: &ResultRow) -> Option<f64> {
        let b = row.client.parse::<Backend>().ok()?;
        self.ratio(row, ClientKind::direct_of(b).name())
    }

    /// The workloads present, in report order.
    fn workloads(&self) -> Vec<Workload> {
        Workload::ALL
            .into_iter()
            .filter(|w| self.results.iter().any(|r| r.workload == w.name()))
            .collect()
    }

    /// The rows of `w`, in client order.
    fn rows_of(&self, w: Workload) -> Vec<&ResultRow> {
        let mut rows: Vec<&ResultRow> = self
            .results
            .iter()
            .filter(|r| r.workload == w.name())
            .collect();
        rows.sort_by_key(|r| {
            ClientKind::ALL
                .iter()
                .position(|c| c.name() == r.client)
                .unwrap_or(usize::MAX)
        });
        rows
    }

    /// The targets of issue 7 §5 that this run's figures can check.
    pub fn targets(&self) -> Vec<TargetCheck> {
        let mut out = Vec::new();
        let size = format_size(self.settings.size);
        for w in self.workloads() {
            for b in BACKENDS {
                let direct = ClientKind::direct_of(b).name();
                let Some(r) = self
                    .find(w.name(), b.name())
                    .and_then(|row| self.ratio(row, direct))
                else {
                    continue;
                };
                out.push(TargetCheck {
                    target: "abstraction ≥ 0.97× the library used directly".into(),
                    subject: format!("{b} / {direct}, {w}"),
                    measured: format!("{r:.2}×"),
                    met: r >= 0.97,
                });
            }
        }
        let get6 = Workload::Get6.name();
        let best = BACKENDS
            .iter()
            .filter_map(|b| self.find(get6, b.name()))
            .max_by(|a, b| a.median.total_cmp(&b.median));
        if let (Some(best), Some(r)) = (best, best.and_then(|b| self.ratio(b, "wrk"))) {
            out.push(TargetCheck {
                target: "get-6: the best backend ≥ 0.8× wrk".into(),
                subject: format!("{} / wrk", best.client),
                measured: format!("{r:.2}×"),
                met: r >= 0.8,
            });
        }
        for b in BACKENDS {
            if let Some(r) = self
                .find(get6, b.name())
                .and_then(|row| self.ratio(row, "reqwest"))
            {
                out.push(TargetCheck {
                    target: "get-6: every backend ≥ reqwest".into(),
                    subject: format!("{b} / reqwest"),
                    measured: format!("{r:.2}×"),
                    met: r >= 1.0,
                });
            }
        }
        for w in [Workload::DownloadLength, Workload::DownloadChunked] {
            for b in BACKENDS {
                let Some(row) = self.find(w.name(), b.name()) else {
                    continue;
                };
                if let Some(r) = self.ratio(row, "curl-cli") {
                    out.push(TargetCheck {
                        target: format!("{size} download: every backend ≥ 0.9× curl -o /dev/null"),
                        subject: format!("{b} / curl-cli, {w}"),
                        measured: format!("{r:.2}×"),
                        met: r >= 0.9,
                    });
                }
                if let Some(peak) = row.peak_rss_bytes {
                    out.push(TargetCheck {
                        target: format!("{size} download: peak memory < 32 MiB"),
                        subject: format!("{b}, {w}"),
                        measured: format_bytes(peak),
                        met: peak < PEAK_TARGET_BYTES,
                    });
                }
            }
        }
        out
    }

    fn heading(&self) -> String {
        let s = &self.settings;
        format!(
            "{} · {} cores · {}\n{} runs per figure (median, min–max) · small-GET runs of {:.2} s · bodies of {} · {} · {}\n",
            self.machine.date,
            self.machine.cores,
            self.machine.os,
            s.runs,
            s.duration.as_secs_f64(),
            format_size(s.size),
            s.server,
            if s.own_process {
                "each client in a process of its own"
            } else {
                "clients in the server's process (CPU and memory not measured)"
            }
        )
    }

    /// The table for people: each figure, its ratio to the direct-library
    /// baseline and to reqwest, CPU per request and peak memory; then the
    /// targets, the pairs skipped and the failures.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "rh bench · {}", self.heading());
        for w in self.workloads() {
            let _ = writeln!(t, "{w}: {}", w.description());
            let _ = writeln!(
                t,
                "  {:<13} {:>14} {:>21} {:>9} {:>10} {:>10} {:>10}",
                "client", "median", "min – max", "vs direct", "vs reqwest", "CPU/req", "peak RSS"
            );
            for r in self.rows_of(w) {
                let _ = writeln!(
                    t,
                    "  {:<13} {:>14} {:>21} {:>9} {:>10} {:>10} {:>10}",
                    r.client,
                    format_rate(r.median, &r.unit),
                    format!(
                        "{} – {}",
                        format_number(r.min, &r.unit),
                        format_number(r.max, &r.unit)
                    ),
                    format_ratio(self.direct_ratio(r)),
                    format_ratio(if r.client == "reqwest" {
                        None
                    } else {
                        self.ratio(r, "reqwest")
                    }),
                    r.cpu_us_per_request.map_or("-".into(), format_cpu),
                    r.peak_rss_bytes.map_or("-".into(), format_bytes),
                );
            }
            t.push('\n');
        }
        let targets = self.targets();
        if !targets.is_empty() {
            let _ = writeln!(t, "Targets (issue 7 §5)");
            for c in &targets {
                let _ = writeln!(
                    t,
                    "  {:<7} {:<55} {:<40} {}",
                    if c.met { "met" } else { "MISSED" },
                    c.target,
                    c.subject,
                    c.measured
                );
            }
            t.push('\n');
        }
        self.write_notes(&mut t, false);
        t
    }

    fn write_notes(&self, t: &mut String, markdown: bool) {
        let (head, item) = if markdown { ("\n", "- ") } else { ("", "  ") };
        if !self.skipped.is_empty() {
            let _ = writeln!(t, "Not measured{head}");
            for s in &self.skipped {
                let _ = writeln!(
                    t,
                    "{item}{} {}: {}",
                    s.workload,
                    s.client.as_deref().unwrap_or("(all clients)"),
                    s.reason
                );
            }
            t.push('\n');
        }
        if !self.failures.is_empty() {
            let _ = writeln!(t, "Failed{head}");
            for f in &self.failures {
                let _ = writeln!(t, "{item}{} {}: {}", f.workload, f.client, f.error);
            }
            t.push('\n');
        }
    }

    /// The same as Markdown: one table of figures, one of targets.
    pub fn markdown(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "{}", self.heading().replace('\n', "  \n"));
        let _ = writeln!(
            t,
            "| workload | client | median | min – max | vs direct | vs reqwest | CPU / request | peak RSS |"
        );
        let _ = writeln!(t, "|---|---|--:|--:|--:|--:|--:|--:|");
        for w in self.workloads() {
            for r in self.rows_of(w) {
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} – {} | {} | {} | {} | {} |",
                    r.workload,
                    r.client,
                    format_rate(r.median, &r.unit),
                    format_number(r.min, &r.unit),
                    format_number(r.max, &r.unit),
                    format_ratio(self.direct_ratio(r)),
                    format_ratio(if r.client == "reqwest" {
                        None
                    } else {
                        self.ratio(r, "reqwest")
                    }),
                    r.cpu_us_per_request.map_or("-".into(), format_cpu),
                    r.peak_rss_bytes.map_or("-".into(), format_bytes),
                );
            }
        }
        let targets = self.targets();
        if !targets.is_empty() {
            let _ = writeln!(t, "\n| target (issue 7 §5) | compared | measured | met |");
            let _ = writeln!(t, "|---|---|--:|---|");
            for c in &targets {
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} |",
                    c.target,
                    c.subject,
                    c.measured,
                    if c.met { "yes" } else { "**no**" }
                );
            }
        }
        t.push('\n');
        self.write_notes(&mut t, true);
        t
    }
}

/// `52.3k req/s` or `2.31 GB/s`.
pub fn format_rate(v: f64, unit: &str) -> String {
    if unit == "bytes/s" {
        format!("{} GB/s", format_number(v, unit))
    } else {
        format!("{} req/s", format_number(v, unit))
    }
}

/// The number alone: `52.3k`, or GB for bytes.
pub fn format_number(v: f64, unit: &str) -> String {
    if unit == "bytes/s" {
        return format!("{:.2}", v / 1e9);
    }
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn format_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}×"))
}

/// `9.8 MiB`.
pub fn format_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// `256 MiB`, `1 GiB`: a body size.
pub fn format_size(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{} GiB", b >> 30)
    } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{} MiB", b >> 20)
    } else {
        format!("{b} bytes")
    }
}

/// `12.3 µs` or `45.6 ms`.
pub fn format_cpu(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, client: &str, median: f64) -> ResultRow {
        ResultRow {
            workload: workload.into(),
            client: client.into(),
            unit: "req/s".into(),
            median,
            min: median,
            max: median,
            runs: 1,
            peak_rss_bytes: Some(10 << 20),
            cpu_us_per_request: Some(1.0),
        }
    }

    fn report(rows: Vec<ResultRow>) -> Report {
        Report {
            machine: Machine {
                cores: 2,
                os: "test".into(),
                date: "2026-01-01T00:00:00Z".into(),
            },
            results: rows,
            skipped: vec![],
            failures: vec![],
            settings: Settings {
                runs: 1,
                duration: Duration::from_millis(100),
                size: 1 << 20,
                server: "test".into(),
                own_process: true,
            },
        }
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let r = report(vec![row("get-6", "hyper", 10.0)]);
        let v = r.to_json();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["machine", "results"]);
        let mut m: Vec<_> = v["machine"].as_object().unwrap().keys().cloned().collect();
        m.sort();
        assert_eq!(m, ["cores", "date", "os"]);
        let mut res: Vec<_> = v["results"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        res.sort();
        assert_eq!(
            res,
            [
                "client",
                "cpu_us_per_request",
                "max",
                "median",
                "min",
                "peak_rss_bytes",
                "runs",
                "unit",
                "workload"
            ]
        );
    }

    #[test]
    fn targets_compare_the_right_rows() {
        let r = report(vec![
            row("get-6", "hyper", 96.0),
            row("get-6", "hyper-direct", 100.0),
            row("get-6", "curl", 50.0),
            row("get-6", "reqwest", 90.0),
            row("get-6", "wrk", 100.0),
        ]);
        let t = r.targets();
        let find = |s: &str| t.iter().find(|c| c.subject == s).unwrap().clone();
        assert!(!find("hyper / hyper-direct, get-6").met);
        assert!(find("hyper / wrk").met);
        assert!(find("hyper / reqwest").met);
        assert!(!find("curl / reqwest").met);
        assert!(r.table().contains("0.96×"));
        assert!(r.markdown().contains("| get-6 | hyper |"));
    }
}
