//! `rh bench`: the workloads of DESIGN.md §7 through every backend, the
//! libraries used directly, reqwest, and wrk and curl where installed; a
//! table with the ratios, the JSON object of §7, or Markdown, and an SVG chart.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use benches::harness::{self, ChildCommand, Options};
use benches::{ClientKind, Report, Workload};
use clap::{Args, ValueEnum};
use resource_handle::Backend;

use crate::{usage, Usage};

/// How `rh bench` prints its results.
#[derive(Clone, Copy, Default, ValueEnum)]
pub(crate) enum BenchFormat {
    /// A table for people, with the ratios and the targets.
    #[default]
    Table,
    /// The JSON object of DESIGN.md §7.
    Json,
    /// Markdown tables, for a README.
    Markdown,
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Workloads (repeatable or comma-separated; default: all): get-sequential, get-6, get-64,
    /// download-length, download-chunked, upload, h2-multiplex.
    #[arg(long = "workload", value_delimiter = ',')]
    workloads: Vec<String>,
    /// Backends through the abstraction, each with its direct baseline (default: every compiled
    /// one); reqwest, wrk and curl-cli run as well.
    #[arg(long = "backend", value_delimiter = ',')]
    backends: Vec<String>,
    /// Clients, overriding --backend: curl, hyper, ureq, curl-direct, hyper-direct, ureq-direct,
    /// reqwest, wrk, curl-cli.
    #[arg(long = "client", value_delimiter = ',')]
    clients: Vec<String>,
    /// Seconds per run of the small-GET workloads (default 0.3; 1 with --long).
    #[arg(long)]
    duration: Option<f64>,
    /// Measured runs per figure (after one warm-up).
    #[arg(long, default_value_t = harness::DEFAULT_RUNS)]
    runs: usize,
    /// The long run: 1 GiB bodies instead of 256 MiB, 1 s small-GET runs.
    #[arg(long)]
    long: bool,
    /// Body size of the download and upload workloads, e.g. 64M or 2G (overrides --long).
    #[arg(long)]
    size: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: BenchFormat,
    /// Also write an SVG bar chart to FILE.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Load an external server on loopback instead of the embedded one; it must serve /small,
    /// /bytes/N, /chunked/N and POST /sink (answering {"len":N}).
    #[arg(long)]
    target: Option<String>,
    /// Worker threads of the embedded server.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Run every client in this process: quicker to start, but CPU time and memory are then
    /// not measured (they would include the server's).
    #[arg(long)]
    in_process: bool,
    /// Only run the benchmark server, in the foreground, on 127.0.0.1:PORT (0 picks a free
    /// one), for other tools to load.
    #[arg(long, value_name = "PORT")]
    serve: Option<u16>,
    /// Internal: measure the one pair SPEC describes and print the outcome (used by the
    /// parent `rh bench`, which runs every client in a process of its own).
    #[arg(long, hide = true, value_name = "SPEC")]
    child: Option<String>,
}

/// `64M`, `1G`, `512K` or a plain byte count.
fn parse_size(s: &str) -> Result<u64, Usage> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|n| *n > 0)
        .ok_or_else(|| usage(format!("--size {s:?} is not a size such as 64M or 1G")))
}

/// Every client `args` asks for, in report order.
fn clients(args: &BenchArgs) -> Result<Vec<ClientKind>, Usage> {
    if !args.clients.is_empty() {
        let mut v = Vec::new();
        for name in &args.clients {
            let c = name.parse::<ClientKind>().map_err(usage)?;
            if let ClientKind::Abstraction(b) = c {
                check_compiled(b)?;
            }
            if !v.contains(&c) {
                v.push(c);
            }
        }
        v.sort_by_key(|c| ClientKind::ALL.iter().position(|k| k == c));
        return Ok(v);
    }
    let backends = if args.backends.is_empty() {
        Backend::compiled()
    } else {
        let mut v = Vec::new();
        for name in &args.backends {
            let b = name.parse::<Backend>().map_err(usage)?;
            check_compiled(b)?;
            v.push(b);
        }
        v
    };
    Ok(ClientKind::ALL
        .into_iter()
        .filter(|c| match c {
            ClientKind::Abstraction(b) => backends.contains(b),
            ClientKind::CurlDirect => backends.contains(&Backend::Curl),
            ClientKind::HyperDirect => backends.contains(&Backend::Hyper),
            ClientKind::UreqDirect => backends.contains(&Backend::Ureq),
            _ => true,
        })
        .collect())
}

fn check_compiled(b: Backend) -> Result<(), Usage> {
    if b.is_compiled() {
        Ok(())
    } else {
        Err(usage(format!("the {b} backend is not compiled into rh")))
    }
}

/// The harness options `args` describe.
fn options(args: &BenchArgs) -> Result<Options, Usage> {
    let mut workloads = Vec::new();
    for name in &args.workloads {
        let w = name.parse::<Workload>().map_err(usage)?;
        if !workloads.contains(&w) {
            workloads.push(w);
        }
    }
    if workloads.is_empty() {
        workloads = Workload::ALL.to_vec();
    }
    workloads.sort();
    let duration = match args.duration {
        Some(s) => Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero() && *d <= Duration::from_secs(600))
            .ok_or_else(|| usage("--duration must be a number of seconds between 0 and 600"))?,
        None if args.long => Duration::from_secs(1),
        None => harness::DEFAULT_DURATION,
    };
    let size = match &args.size {
        Some(s) => parse_size(s)?,
        None if args.long => harness::LONG_SIZE,
        None => harness::DEFAULT_SIZE,
    };
    if args.runs == 0 || args.runs > 1000 {
        return Err(usage("--runs must be between 1 and 1000"));
    }
    if let Some(t) = &args.target {
        harness::check_target(t).map_err(usage)?;
    }
    let child = if args.in_process {
        None
    } else {
        let program = std::env::current_exe()
            .map_err(|e| usage(format!("cannot find rh's own executable: {e}")))?;
        Some(ChildCommand {
            program,
            args: vec!["bench".into(), "--child".into()],
        })
    };
    Ok(Options {
        workloads,
        clients: clients(args)?,
        runs: args.runs,
        duration,
        size,
        target: args.target.clone(),
        child,
        server_threads: args.server_threads.clamp(1, 64),
        step_limit: None,
    })
}

/// Runs the harness with a progress line on stderr when it is a terminal.
pub(crate) fn measure(options: &Options) -> Result<Report, String> {
    let show = io::stderr().is_terminal();
    let report = harness::run(options, |p| {
        if show {
            let what = if p.run == 0 {
                "warm-up".to_owned()
            } else {
                format!("run {}/{}", p.run, p.runs)
            };
            eprint!(
                "\r\x1b[2K[{}/{}] {} · {} · {what}",
                p.step, p.steps, p.workload, p.client
            );
        }
    });
    if show {
        eprint!("\r\x1b[2K");
    }
    report
}

/// Writes the chart of `report` to `path`.
pub(crate) fn write_svg(report: &Report, path: &PathBuf) -> bool {
    match std::fs::write(path, benches::svg::chart(report)) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("rh: cannot write {}: {e}", path.display());
            false
        }
    }
}

pub(crate) fn bench(args: BenchArgs) -> Result<ExitCode, Usage> {
    if let Some(spec) = &args.child {
        let code = harness::child_main(spec);
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
    }
    if let Some(port) = args.serve {
        return serve(port, args.server_threads);
    }
    let options = options(&args)?;
    let report = match measure(&options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rh: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    match args.format {
        BenchFormat::Table => print!("{}", report.table()),
        BenchFormat::Json => println!("{:#}", report.to_json()),
        BenchFormat::Markdown => print!("{}", report.markdown()),
    }
    let mut ok = report.failures.is_empty();
    if matches!(args.format, BenchFormat::Json) {
        // The table and Markdown list failures themselves; the JSON stays exactly as documented.
        for f in &report.failures {
            eprintln!("rh: {} {} failed: {}", f.workload, f.client, f.error);
        }
    }
    if let Some(path) = &args.svg {
        ok &= write_svg(&report, path);
    }
    Ok(ExitCode::from(if ok { 0 } else { 1 }))
}

fn serve(port: u16, threads: usize) -> Result<ExitCode, Usage> {
    let server = match benches::BenchServer::start_on(port, threads.clamp(1, 64)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rh: cannot start the benchmark server: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    println!("benchmark server listening on {}", server.url());
    println!("routes: /small, /bytes/N, /chunked/N, /sink");
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").ok(), Some(64 << 20));
        assert_eq!(parse_size("1g").ok(), Some(1 << 30));
        assert_eq!(parse_size("1000").ok(), Some(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
