//! `rh compare`: what a newcomer runs first. The conformance matrix (do the
//! stacks behave the same?) and a short benchmark on the embedded servers
//! (what does each cost?), one report at the end, and the same as Markdown
//! in a file.

use std::fmt::Write as _;
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use benches::harness::{ChildCommand, Options, MIB};
use benches::{ClientKind, Workload};
use clap::Args;
use conformance_tests::{catalogue, report, Matrix, Outcome};
use resource_handle::Backend;

use crate::{pick_backend, usage, Usage};

#[derive(Args)]
pub(crate) struct CompareArgs {
    /// Where to write the Markdown report.
    #[arg(long, default_value = "rh-compare.md")]
    report: PathBuf,
    /// Backends to compare (repeatable or comma-separated; default: every compiled one).
    #[arg(long, value_delimiter = ',')]
    backend: Vec<String>,
    /// Seconds per run of the small-GET workloads in the short benchmark.
    #[arg(long, default_value_t = 0.2)]
    duration: f64,
    /// Measured runs per figure in the short benchmark.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also write the benchmark's SVG chart to FILE.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Only the conformance matrix, no benchmark.
    #[arg(long)]
    no_bench: bool,
}

/// The body size of the short benchmark's downloads and upload.
const SHORT_SIZE: u64 = 64 * MIB;

pub(crate) fn compare(args: CompareArgs) -> Result<ExitCode, Usage> {
    let backends = if args.backend.is_empty() {
        Backend::compiled()
    } else {
        let mut v = Vec::new();
        for name in &args.backend {
            v.push(pick_backend(Some(name))?);
        }
        v
    };
    let duration = Duration::try_from_secs_f64(args.duration)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(60))
        .ok_or_else(|| usage("--duration must be a number of seconds between 0 and 60"))?;
    if args.runs == 0 || args.runs > 100 {
        return Err(usage("--runs must be between 1 and 100"));
    }
    let show = io::stderr().is_terminal();

    // 1. Conformance.
    let started = Instant::now();
    let cases = catalogue();
    let matrix = Matrix::run(&cases, &backends, None, |i, n, r| {
        if show {
            let state = if r.passed() { "ok" } else { "FAILED" };
            eprint!("\r\x1b[2Kconformance [{i}/{n}] {} {state}", r.case.id);
        }
    });
    if show {
        eprint!("\r\x1b[2K");
    }
    let conformance_secs = started.elapsed().as_secs_f64();
    let conformance_failed = !matrix.ok()
        || matrix.cases.iter().any(|c| {
            c.cells
                .values()
                .any(|x| matches!(x.outcome, Outcome::Fail(_)))
        });

    // 2. The short benchmark, each client in a process of its own.
    let bench = if args.no_bench {
        None
    } else {
        let program = std::env::current_exe()
            .map_err(|e| usage(format!("cannot find rh's own executable: {e}")))?;
        let options = Options {
            workloads: Workload::ALL.to_vec(),
            clients: ClientKind::ALL
                .into_iter()
                .filter(|c| match c {
                    ClientKind::Abstraction(b) => backends.contains(b),
                    ClientKind::CurlDirect => backends.contains(&Backend::Curl),
                    ClientKind::HyperDirect => backends.contains(&Backend::Hyper),
                    ClientKind::UreqDirect => backends.contains(&Backend::Ureq),
                    _ => true,
                })
                .collect(),
            runs: args.runs,
            duration,
            size: SHORT_SIZE,
            target: None,
            child: Some(ChildCommand {
                program,
                args: vec!["bench".into(), "--child".into()],
            }),
            server_threads: 2,
            step_limit: None,
        };
        let started = Instant::now();
        let report = crate::bench::measure(&options);
        Some((report, started.elapsed().as_secs_f64()))
    };

    // 3. One report.
    let s = matrix.summary();
    let mut text = String::new();
    let mut md = String::from("# rh compare\n\n");
    let _ = writeln!(text, "== Conformance ({conformance_secs:.0} s) ==\n");
    text.push_str(&report::table(&matrix));
    let _ = writeln!(md, "## Conformance\n");
    md.push_str(&report::markdown(&matrix));
    let mut bench_ok = true;
    match &bench {
        None => {}
        Some((Ok(r), secs)) => {
            let _ = writeln!(text, "\n== Benchmark ({secs:.0} s) ==\n");
            text.push_str(&r.table());
            let _ = writeln!(md, "\n## Benchmark\n");
            md.push_str(&r.markdown());
            bench_ok = r.failures.is_empty();
            if let Some(path) = &args.svg {
                bench_ok &= crate::bench::write_svg(r, path);
            }
        }
        Some((Err(e), _)) => {
            bench_ok = false;
            let _ = writeln!(
                text,
                "\n== Benchmark ==\n\nthe benchmark could not run: {e}"
            );
            let _ = writeln!(md, "\n## Benchmark\n\nThe benchmark could not run: {e}");
        }
    }
    let verdict = format!(
        "conformance: {} cases, {} passed, {} failed, {} unsupported{}",
        s.cases,
        s.passed,
        s.failed,
        s.unsupported,
        match &bench {
            None => String::new(),
            Some((Ok(r), _)) => {
                let t = r.targets();
                format!(
                    "; benchmark: {} figures, targets met {}/{}{}",
                    r.results.len(),
                    t.iter().filter(|c| c.met).count(),
                    t.len(),
                    if r.failures.is_empty() {
                        String::new()
                    } else {
                        format!(", {} failed", r.failures.len())
                    }
                )
            }
            Some((Err(_), _)) => "; benchmark: did not run".into(),
        }
    );
    let _ = writeln!(text, "\n{verdict}");
    let _ = writeln!(md, "\n{verdict}");
    print!("{text}");
    match std::fs::write(&args.report, md) {
        Ok(()) => eprintln!("rh: report written to {}", args.report.display()),
        Err(e) => {
            eprintln!("rh: cannot write {}: {e}", args.report.display());
            return Ok(ExitCode::from(1));
        }
    }
    if conformance_failed {
        return Ok(ExitCode::from(1));
    }
    if !bench_ok {
        eprintln!("rh: part of the benchmark failed (see the report)");
    }
    Ok(ExitCode::SUCCESS)
}
