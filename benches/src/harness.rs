//! The comparison harness behind `rh bench`: every chosen workload through
//! every chosen client, in one run, against one server.
//!
//! Each (workload, client) pair runs in a child process of its own (the
//! current program re-executed with [`ChildCommand`]), so the peak memory and
//! the CPU time measured are that client's alone: the server stays in the
//! parent, and nothing another client allocated is counted. The children of
//! one workload live side by side and take turns, one run each per round
//! (a line `run` on the child's stdin, one JSON [`ChildLine`] back), so the
//! runs of every client are spread over the same stretch of time.
//!
//! Without a child command the pairs run in this process, and CPU and
//! memory are not reported (they would include the server and every other
//! client).
//!
//! In an HTTP/2 workload the harness also reads the embedded server's counts
//! around each client's warm-up and each of its runs, which it can attribute
//! because the clients take turns: the warm-up must open exactly one
//! connection, a run none, and the server must have served over HTTP/2
//! exactly the requests the client counted. A client that misses fails,
//! instead of a figure that measured something else. With an external
//! server (`target`) there is nothing to count, so the workload is skipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clients::{self, external::find_program, Target};
use crate::measure::{self, Spread, Who};
use crate::report::{Failure, Machine, Report, ResultRow, Settings, Skipped};
use crate::server::BenchServer;
use crate::workload::{ClientKind, Workload};

/// One MiB.
pub const MIB: u64 = 1 << 20;

/// The large-body size of the default run.
pub const DEFAULT_SIZE: u64 = 256 * MIB;
/// The large-body size of `--long`.
pub const LONG_SIZE: u64 = 1024 * MIB;
/// Seconds per run of a small-GET workload in the default run.
pub const DEFAULT_DURATION: Duration = Duration::from_millis(300);
/// Runs per figure.
pub const DEFAULT_RUNS: usize = 5;

/// How to start a client in a process of its own: `program args… SPEC`, where
/// SPEC is one JSON argument the child hands to [`child_main`].
#[derive(Debug, Clone)]
pub struct ChildCommand {
    /// The program (usually `std::env::current_exe()`).
    pub program: PathBuf,
    /// Arguments before the spec (for `rh`: `bench --child`).
    pub args: Vec<String>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workloads, in report order.
    pub workloads: Vec<Workload>,
    /// Clients, in report order.
    pub clients: Vec<ClientKind>,
    /// Measured runs per figure (after one warm-up).
    pub runs: usize,
    /// Length of one run of a small-GET workload.
    pub duration: Duration,
    /// Body size of the download and upload workloads.
    pub size: u64,
    /// An external server (`http://127.0.0.1:PORT`) instead of the embedded one.
    pub target: Option<String>,
    /// Runs each client in a child process (see the module docs).
    pub child: Option<ChildCommand>,
    /// Worker threads of the embedded server.
    pub server_threads: usize,
    /// The longest one warm-up or run may take before its client is given
    /// up; `None` allows a minute more than the slowest plausible run.
    pub step_limit: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workloads: Workload::ALL.to_vec(),
            clients: ClientKind::ALL.to_vec(),
            runs: DEFAULT_RUNS,
            duration: DEFAULT_DURATION,
            size: DEFAULT_SIZE,
            target: None,
            child: None,
            server_threads: 2,
            step_limit: None,
        }
    }
}

/// A step of the run, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// 1-based index of the step (a warm-up or a run).
    pub step: usize,
    /// Steps in all.
    pub steps: usize,
    /// The workload.
    pub workload: Workload,
    /// The client.
    pub client: ClientKind,
    /// The run (1-based); 0 for the warm-up.
    pub run: usize,
    /// Runs per figure.
    pub runs: usize,
}

/// What a child process is asked to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    /// Workload name.
    pub workload: String,
    /// Client name.
    pub client: String,
    /// Base url of the server.
    pub target: String,
    /// Seconds per small-GET run.
    pub duration_secs: f64,
    /// Large-body size.
    pub size: u64,
}

/// One line a child prints: `ready` after its warm-up, a `value` after each
/// run, the totals after `end`, or an `error`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildLine {
    /// The warm-up is done and the child waits for `run`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready: bool,
    /// Requests or bytes per second of one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Requests completed in that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// CPU microseconds per request over all runs (after `end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_request: Option<f64>,
    /// Peak resident memory of the client (after `end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// Why the child stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn say(line: &ChildLine) {
    if let Ok(text) = serde_json::to_string(line) {
        println!("{text}");
    }
}

fn say_error(e: String) -> i32 {
    say(&ChildLine {
        error: Some(e),
        ..ChildLine::default()
    });
    1
}

/// The child's side: warms up the pair `spec_json` describes, says `ready`,
/// then measures one run per `run` line on its standard input and prints the
/// totals on `end`. Returns the exit status (0, or 1 on failure).
pub fn child_main(spec_json: &str) -> i32 {
    let spec = match serde_json::from_str::<ChildSpec>(spec_json) {
        Ok(s) => s,
        Err(e) => return say_error(format!("bad child spec: {e}")),
    };
    let mut session = match Session::from_spec(&spec, true) {
        Ok(s) => s,
        Err(e) => return say_error(e),
    };
    say(&ChildLine {
        ready: true,
        ..ChildLine::default()
    });
    let mut line = String::new();
    loop {
        line.clear();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => return 0,
            Ok(_) => {}
        }
        match line.trim() {
            "run" => match session.run_once() {
                Ok((value, requests)) => say(&ChildLine {
                    value: Some(value),
                    requests: Some(requests),
                    ..ChildLine::default()
                }),
                Err(e) => return say_error(e),
            },
            "end" => {
                let (cpu, peak) = session.finish();
                say(&ChildLine {
                    cpu_us_per_request: cpu,
                    peak_rss_bytes: peak,
                    ..ChildLine::default()
                });
                return 0;
            }
            _ => {}
        }
    }
}

/// One client ready to run one workload: made and warmed up, then measured
/// run by run. CPU time is summed over the runs only.
struct Session {
    workload: Workload,
    client: ClientKind,
    target: Target,
    duration: Duration,
    size: u64,
    runner: Box<dyn clients::Runner>,
    own_process: bool,
    cpu: Duration,
    cpu_known: bool,
    requests: u64,
}

impl Session {
    fn from_spec(spec: &ChildSpec, own_process: bool) -> Result<Session, String> {
        let workload = spec.workload.parse::<Workload>()?;
        let client = spec.client.parse::<ClientKind>()?;
        let duration = Duration::try_from_secs_f64(spec.duration_secs).unwrap_or(DEFAULT_DURATION);
        Session::start(
            workload,
            client,
            Target::new(&spec.target),
            duration,
            spec.size,
            own_process,
        )
    }

    fn start(
        workload: Workload,
        client: ClientKind,
        target: Target,
        duration: Duration,
        size: u64,
        own_process: bool,
    ) -> Result<Session, String> {
        client.supports(workload)?;
        let mut runner = clients::make(client, workload)?;
        // The warm-up opens the connections and warms pools and allocators;
        // its figure is thrown away. External tools start afresh each run.
        let warm_size = size.min(16 * MIB);
        match workload {
            w if w.is_requests() => {
                let warm = duration.min(Duration::from_millis(150));
                runner.warm_up_requests(&target.small(), Instant::now() + warm)?;
            }
            _ if client.is_external() => {}
            Workload::DownloadLength => {
                runner.download(&target.bytes(warm_size), warm_size)?;
            }
            Workload::DownloadChunked => {
                runner.download(&target.chunked(warm_size), warm_size)?;
            }
            _ => {
                runner.upload(&target.sink(), warm_size)?;
            }
        }
        Ok(Session {
            workload,
            client,
            target,
            duration,
            size,
            runner,
            own_process,
            cpu: Duration::ZERO,
            cpu_known: true,
            requests: 0,
        })
    }

    fn who(&self) -> Who {
        if self.client.is_external() {
            Who::Children
        } else {
            Who::SelfProcess
        }
    }

    /// One measured run: its figure and the requests it completed.
    fn run_once(&mut self) -> Result<(f64, u64), String> {
        let before = measure::usage(self.who());
        let start = Instant::now();
        let (target, size) = (&self.target, self.size);
        let sample = match self.workload {
            w if w.is_requests() => self
                .runner
                .requests(&target.small(), start + self.duration)?,
            Workload::DownloadLength => self.runner.download(&target.bytes(size), size)?,
            Workload::DownloadChunked => self.runner.download(&target.chunked(size), size)?,
            _ => self.runner.upload(&target.sink(), size)?,
        };
        let elapsed = sample.elapsed.unwrap_or_else(|| start.elapsed());
        let after = measure::usage(self.who());
        match (before, after) {
            (Some(b), Some(a)) => self.cpu += a.cpu.saturating_sub(b.cpu),
            _ => self.cpu_known = false,
        }
        self.requests += sample.requests;
        Ok((
            sample.amount as f64 / elapsed.as_secs_f64().max(1e-9),
            sample.requests,
        ))
    }

    /// CPU µs per request and peak memory, when measured in a process of its own.
    fn finish(self) -> (Option<f64>, Option<u64>) {
        if !self.own_process {
            return (None, None);
        }
        let cpu = (self.cpu_known && self.requests > 0)
            .then(|| self.cpu.as_secs_f64() * 1e6 / self.requests as f64);
        let who = self.who();
        drop(self.runner);
        let peak = match who {
            // The largest tool run waited for.
            Who::Children => measure::usage(who).map(|u| u.max_rss_bytes),
            Who::SelfProcess => {
                measure::peak_rss_bytes().or_else(|| measure::usage(who).map(|u| u.max_rss_bytes))
            }
        };
        (cpu, peak)
    }
}

/// Refuses any target that is not plain http on a loopback address: a load
/// test sends traffic to this machine only.
pub fn check_target(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--target {url:?} must be an http:// url"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "--target {url:?} is not on loopback: benchmarks only load 127.0.0.1, ::1 or localhost"
        ));
    }
    Ok(format!("http://{authority}"))
}

/// The pairs `options` asks for: those to run, and those skipped with why.
pub fn plan(options: &Options) -> (Vec<(Workload, ClientKind)>, Vec<Skipped>) {
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for &w in &options.workloads {
        let available = match w.availability() {
            Err(why) => Err(why),
            Ok(()) if w.is_http2() && options.target.is_some() => Err(
                "the one-connection check needs the embedded server, which counts the \
                 connections it accepts",
            ),
            Ok(()) => Ok(()),
        };
        if let Err(why) = available {
            skipped.push(Skipped {
                workload: w.name().into(),
                client: None,
                reason: why.into(),
            });
            continue;
        }
        for &c in &options.clients {
            let reason = match c.supports(w) {
                Err(why) => Some(why),
                Ok(()) => c
                    .program()
                    .filter(|p| find_program(p).is_none())
                    .map(|p| format!("{p} is not installed")),
            };
            match reason {
                // A tool missing or a pair that makes no sense is noted once per client.
                Some(reason) => skipped.push(Skipped {
                    workload: w.name().into(),
                    client: Some(c.name().into()),
                    reason,
                }),
                None => run.push((w, c)),
            }
        }
    }
    (run, skipped)
}

/// Runs everything `options` asks for and returns the report. `progress` is
/// called before each warm-up and each run.
///
/// The clients of one workload are started together (one after the other,
/// each warmed up) and their runs are interleaved, round by round, each
/// round starting with the next client: a burst of noise on a shared
/// machine then falls on every client alike instead of on one of them.
pub fn run(options: &Options, mut progress: impl FnMut(Progress)) -> Result<Report, String> {
    let (pairs, skipped) = plan(options);
    let mut embedded = None;
    let (base, server_desc) = match &options.target {
        Some(t) => {
            let base = check_target(t)?;
            (base.clone(), format!("external server at {base}"))
        }
        None => {
            let server = BenchServer::start(options.server_threads)
                .map_err(|e| format!("cannot start the benchmark server: {e}"))?;
            let url = server.url();
            embedded = Some(server);
            (
                url,
                format!(
                    "embedded hyper server, {} worker thread{}",
                    options.server_threads,
                    if options.server_threads == 1 { "" } else { "s" }
                ),
            )
        }
    };
    let runs = options.runs.max(1);
    let mut report = Report {
        machine: Machine::current(),
        results: Vec::new(),
        skipped,
        failures: Vec::new(),
        settings: Settings {
            runs,
            duration: options.duration,
            size: options.size,
            server: server_desc,
            own_process: options.child.is_some(),
        },
    };
    let steps = pairs.len() * (runs + 1);
    let mut step = 0;
    let mut workloads: Vec<Workload> = pairs.iter().map(|p| p.0).collect();
    workloads.dedup();
    for workload in workloads {
        let limit = deadline(workload, options);
        // plan() keeps HTTP/2 workloads for the embedded server only.
        let watch = embedded.as_ref().filter(|_| workload.is_http2());
        let mut contenders = Vec::new();
        for &(_, client) in pairs.iter().filter(|p| p.0 == workload) {
            step += 1;
            progress(Progress {
                step,
                steps,
                workload,
                client,
                run: 0,
                runs,
            });
            let spec = ChildSpec {
                workload: workload.name().into(),
                client: client.name().into(),
                target: base.clone(),
                duration_secs: options.duration.as_secs_f64(),
                size: options.size,
            };
            let before = watch.map(Counts::of);
            let started = match &options.child {
                Some(cmd) => ChildProcess::start(cmd, &spec, limit).map(Contender::Child),
                None => LocalThread::start(spec, limit).map(Contender::Local),
            };
            let started = match (started, before, watch) {
                (Ok(c), Some(before), Some(server)) => {
                    check_warm_up(before, Counts::of(server)).map(|()| c)
                }
                (started, _, _) => started,
            };
            match started {
                Ok(c) => contenders.push((client, c, Vec::new())),
                Err(error) => report.failures.push(Failure {
                    workload: workload.name().into(),
                    client: client.name().into(),
                    error,
                }),
            }
        }
        let n = contenders.len();
        for round in 0..runs {
            for k in 0..n {
                let (client, contender, values) = &mut contenders[(round + k) % n];
                step += 1;
                progress(Progress {
                    step,
                    steps,
                    workload,
                    client: *client,
                    run: round + 1,
                    runs,
                });
                if contender.failed().is_some() {
                    continue;
                }
                let before = watch.map(Counts::of);
                let measured = contender.run_once(limit).and_then(|(value, requests)| {
                    if let (Some(before), Some(server)) = (before, watch) {
                        check_run(before, Counts::of(server), requests)?;
                    }
                    Ok(value)
                });
                match measured {
                    Ok(v) => values.push(v),
                    Err(e) => contender.fail(e),
                }
            }
        }
        for (client, contender, values) in contenders {
            let fail = |error: String| Failure {
                workload: workload.name().into(),
                client: client.name().into(),
                error,
            };
            let (cpu, peak) = match contender.finish(limit) {
                Ok(totals) => totals,
                Err(e) => {
                    report.failures.push(fail(e));
                    continue;
                }
            };
            match Spread::of(&values) {
                None => report.failures.push(fail("no figure was measured".into())),
                Some(s) => report.results.push(ResultRow {
                    workload: workload.name().into(),
                    client: client.name().into(),
                    unit: workload.unit().as_str().into(),
                    median: s.median,
                    min: s.min,
                    max: s.max,
                    runs: values.len(),
                    peak_rss_bytes: peak,
                    cpu_us_per_request: cpu,
                }),
            }
        }
    }
    Ok(report)
}

/// The embedded server's counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    connections: u64,
    http2_requests: u64,
}

impl Counts {
    fn of(server: &BenchServer) -> Counts {
        Counts {
            connections: server.connections_accepted(),
            http2_requests: server.http2_requests(),
        }
    }
}

/// An HTTP/2 client's warm-up must open one connection (the one all its
/// runs share) and speak HTTP/2 on it.
fn check_warm_up(before: Counts, after: Counts) -> Result<(), String> {
    let opened = after.connections.saturating_sub(before.connections);
    if opened != 1 {
        return Err(format!(
            "the warm-up opened {opened} connections; the workload multiplexes every stream \
             on one"
        ));
    }
    if after.http2_requests == before.http2_requests {
        return Err("the server received no HTTP/2 request during the warm-up".into());
    }
    Ok(())
}

/// An HTTP/2 client's run must open no connection (it keeps the warm-up's),
/// and the server must have served over HTTP/2 exactly the requests the
/// client counted.
fn check_run(before: Counts, after: Counts, requests: u64) -> Result<(), String> {
    let opened = after.connections.saturating_sub(before.connections);
    if opened != 0 {
        return Err(format!(
            "the run opened {opened} more connection{}; the workload multiplexes every stream \
             on the warm-up's one",
            if opened == 1 { "" } else { "s" }
        ));
    }
    let served = after.http2_requests.saturating_sub(before.http2_requests);
    if served != requests {
        return Err(format!(
            "the client counted {requests} requests, the server served {served} over HTTP/2"
        ));
    }
    Ok(())
}

/// How long one warm-up or run may take before its child is stopped:
/// generous, so only a hang trips it.
fn deadline(workload: Workload, options: &Options) -> Duration {
    if let Some(limit) = options.step_limit {
        return limit;
    }
    let per_run = if workload.is_requests() {
        // wrk rounds up to whole seconds.
        options.duration.max(Duration::from_secs(1)) * 2
    } else {
        // 20 MB/s would be far below any client here.
        Duration::from_secs_f64(options.size as f64 / 20e6)
    };
    per_run + Duration::from_secs(60)
}

/// A client being measured: on a thread of this process, or in a child process.
enum Contender {
    Local(LocalThread),
    Child(ChildProcess),
    Failed(String),
}

impl Contender {
    fn failed(&self) -> Option<&str> {
        match self {
            Contender::Failed(e) => Some(e),
            _ => None,
        }
    }

    fn fail(&mut self, error: String) {
        // Dropping a child process stops it; a local thread is left behind.
        *self = Contender::Failed(error);
    }

    fn ask(&mut self, command: &'static str, limit: Duration) -> Result<ChildLine, String> {
        match self {
            Contender::Local(t) => t.ask(command, limit),
            Contender::Child(c) => c.ask(command, limit),
            Contender::Failed(e) => Err(e.clone()),
        }
    }

    /// One run: its figure and the requests it completed.
    fn run_once(&mut self, limit: Duration) -> Result<(f64, u64), String> {
        let line = self.ask("run", limit)?;
        match (line.value, line.requests) {
            (Some(value), Some(requests)) => Ok((value, requests)),
            _ => Err("the client answered a run without a figure".to_owned()),
        }
    }

    fn finish(mut self, limit: Duration) -> Result<(Option<f64>, Option<u64>), String> {
        let line = self.ask("end", limit)?;
        Ok((line.cpu_us_per_request, line.peak_rss_bytes))
    }
}

/// A client on a thread of this process, driven with the child's commands,
/// so a client that hangs costs one abandoned thread, not the whole run.
struct LocalThread {
    commands: mpsc::Sender<&'static str>,
    answers: Receiver<ChildLine>,
}

impl LocalThread {
    fn start(spec: ChildSpec, limit: Duration) -> Result<LocalThread, String> {
        let (commands, inbox) = mpsc::channel::<&'static str>();
        let (reply, answers) = mpsc::channel();
        thread::Builder::new()
            .name(format!("bench-{}", spec.client))
            .spawn(move || {
                let error = |e: String| ChildLine {
                    error: Some(e),
                    ..ChildLine::default()
                };
                // The runner is made on this thread: curl's multi handle may not move.
                let mut session = match Session::from_spec(&spec, false) {
                    Ok(s) => s,
                    Err(e) => return drop(reply.send(error(e))),
                };
                let ready = ChildLine {
                    ready: true,
                    ..ChildLine::default()
                };
                if reply.send(ready).is_err() {
                    return;
                }
                while let Ok(command) = inbox.recv() {
                    let line = match command {
                        "run" => match session.run_once() {
                            Ok((value, requests)) => ChildLine {
                                value: Some(value),
                                requests: Some(requests),
                                ..ChildLine::default()
                            },
                            Err(e) => error(e),
                        },
                        _ => {
                            let (cpu, peak) = session.finish();
                            let _ = reply.send(ChildLine {
                                cpu_us_per_request: cpu,
                                peak_rss_bytes: peak,
                                ..ChildLine::default()
                            });
                            return;
                        }
                    };
                    if reply.send(line).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start a client thread: {e}"))?;
        let mut t = LocalThread { commands, answers };
        let line = t.answer(limit)?;
        if line.ready {
            Ok(t)
        } else {
            Err("the client did not get ready".into())
        }
    }

    fn ask(&mut self, command: &'static str, limit: Duration) -> Result<ChildLine, String> {
        self.commands
            .send(command)
            .map_err(|_| "the client thread ended".to_owned())?;
        self.answer(limit)
    }

    fn answer(&mut self, limit: Duration) -> Result<ChildLine, String> {
        let line = match self.answers.recv_timeout(limit) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("no answer within {} s", limit.as_secs()))
            }
            Err(RecvTimeoutError::Disconnected) => return Err("the client thread ended".into()),
        };
        match line.error {
            Some(e) => Err(e),
            None => Ok(line),
        }
    }
}

/// A client in a child process, driven one line at a time.
struct ChildProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl ChildProcess {
    /// Starts the child and waits for its warm-up to end.
    fn start(
        cmd: &ChildCommand,
        spec: &ChildSpec,
        limit: Duration,
    ) -> Result<ChildProcess, String> {
        let spec_json = serde_json::to_string(spec)
            .map_err(|e| format!("cannot encode the child spec: {e}"))?;
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .arg(&spec_json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cmd.program.display()))?;
        let (tx, lines) = mpsc::channel();
        // Both pipes are read on threads, so a chatty child never blocks on
        // a full pipe and a silent one cannot block the harness.
        if let Some(out) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = child.stderr.take().map(|mut err| {
            thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                text
            })
        });
        let mut process = ChildProcess {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        };
        let line = process.answer(limit)?;
        if line.ready {
            Ok(process)
        } else {
            Err("the child did not get ready".into())
        }
    }

    /// Sends `command` and waits for the answer.
    fn ask(&mut self, command: &str, limit: Duration) -> Result<ChildLine, String> {
        let sent = self
            .stdin
            .as_mut()
            .map(|w| writeln!(w, "{command}").and_then(|()| w.flush()));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.stop("the child stopped listening".into()));
        }
        self.answer(limit)
    }

    fn answer(&mut self, limit: Duration) -> Result<ChildLine, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.stop(format!("no answer within {} s", limit.as_secs())))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.stop("the child exited".into()))
                }
            };
            // Anything else a library printed on stdout is not ours.
            let Ok(parsed) = serde_json::from_str::<ChildLine>(&line) else {
                continue;
            };
            return match parsed.error {
                Some(e) => Err(self.stop(e)),
                None => Ok(parsed),
            };
        }
    }

    /// Stops the child and returns `why` with the end of its stderr.
    fn stop(&mut self, why: String) -> String {
        // Our own child, stopped by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = stderr.trim();
        if stderr.is_empty() {
            why
        } else {
            let skip = stderr.chars().count().saturating_sub(600);
            let tail: String = stderr.chars().skip(skip).collect();
            format!("{why}; stderr: {tail}")
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Closing stdin ends a child waiting for a command; a busy one is stopped.
        drop(self.stdin.take());
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        assert_eq!(
            check_target("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(check_target("http://localhost:1").is_ok());
        assert!(check_target("http://[::1]:1").is_ok());
        assert!(check_target("http://10.0.0.1:80").is_err());
        assert!(check_target("http://example.com").is_err());
        assert!(check_target("https://127.0.0.1").is_err());
    }

    #[test]
    fn plan_skips_what_cannot_run() {
        let mut options = Options {
            workloads: vec![Workload::DownloadLength, Workload::H2Multiplex],
            clients: vec![ClientKind::Reqwest, ClientKind::UreqDirect, ClientKind::Wrk],
            ..Options::default()
        };
        let (run, skipped) = plan(&options);
        assert_eq!(
            run,
            vec![
                (Workload::DownloadLength, ClientKind::Reqwest),
                (Workload::DownloadLength, ClientKind::UreqDirect),
                (Workload::H2Multiplex, ClientKind::Reqwest),
            ]
        );
        let skipped_pair = |w: &str, c: &str| {
            skipped
                .iter()
                .any(|s| s.workload == w && s.client.as_deref() == Some(c))
        };
        assert!(skipped_pair("download-length", "wrk"));
        assert!(skipped_pair("h2-multiplex", "wrk"));
        assert!(skipped_pair("h2-multiplex", "ureq-direct"));
        // An external server counts nothing: the one-connection check cannot be made.
        options.target = Some("http://127.0.0.1:1".into());
        let (run, skipped) = plan(&options);
        assert!(run.iter().all(|(w, _)| *w == Workload::DownloadLength));
        assert!(skipped
            .iter()
            .any(|s| s.workload == "h2-multiplex" && s.client.is_none()));
    }

    #[test]
    fn one_connection_checks() {
        let at = |connections, http2_requests| Counts {
            connections,
            http2_requests,
        };
        assert_eq!(check_warm_up(at(3, 0), at(4, 640)), Ok(()));
        assert!(check_warm_up(at(3, 0), at(5, 640)).is_err());
        assert!(check_warm_up(at(3, 0), at(3, 640)).is_err());
        // Connected once, but spoke HTTP/1.1.
        assert!(check_warm_up(at(3, 0), at(4, 0)).is_err());
        assert_eq!(check_run(at(4, 640), at(4, 1640), 1000), Ok(()));
        let more = check_run(at(4, 640), at(6, 1640), 1000).unwrap_err();
        assert!(more.contains("opened 2 more connections"), "{more}");
        // Fewer HTTP/2 requests served than counted: some went another way.
        assert!(check_run(at(4, 640), at(4, 1000), 1000).is_err());
    }
}
