//! Runs cases against backends and compares their traces.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

use resource_handle::{Backend, BackendConfig, BackendFactory, Trace};

use crate::cases::{Case, Ctx};

/// The longest a case may run on one backend before it counts as hung.
pub const CELL_DEADLINE: Duration = Duration::from_secs(90);

/// The outcome of one case on one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The case's expectations held.
    Pass,
    /// They did not, with why.
    Fail(String),
    /// The backend lacks a capability the case needs, with the reason.
    Unsupported(String),
}

impl Outcome {
    /// `pass`, `fail` or `unsupported`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::Unsupported(_) => "unsupported",
        }
    }

    /// The failure or unsupported reason.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Outcome::Pass => None,
            Outcome::Fail(d) | Outcome::Unsupported(d) => Some(d),
        }
    }
}

/// One case run on one backend.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Pass, fail or unsupported.
    pub outcome: Outcome,
    /// The trace, when the case produced one (ports blanked).
    pub trace: Option<Trace>,
}

/// Runs `case` on `backend`, in a thread of its own with a deadline, and
/// catches panics so one broken case cannot take the run down.
pub fn run_cell(case: &Case, backend: Backend) -> Cell {
    if !backend.is_compiled() {
        return Cell {
            outcome: Outcome::Unsupported(format!("the {backend} backend is not compiled in")),
            trace: None,
        };
    }
    match capabilities_reason(case, backend) {
        Ok(()) => {}
        Err(reason) => {
            return Cell {
                outcome: Outcome::Unsupported(reason),
                trace: None,
            }
        }
    }
    let (tx, rx) = mpsc::channel();
    let run = case.run;
    let spawned = std::thread::Builder::new()
        .name(format!("{}::{}", case.id, backend))
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| {
                let mut ctx = Ctx::new(backend);
                let r = run(&mut ctx);
                r.map(|t| normalize(t, ctx.ports()))
            }));
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Cell {
            outcome: Outcome::Fail(format!("could not start the case thread: {e}")),
            trace: None,
        };
    }
    match rx.recv_timeout(CELL_DEADLINE) {
        Ok(Ok(Ok(trace))) => Cell {
            outcome: Outcome::Pass,
            trace: Some(trace),
        },
        Ok(Ok(Err(why))) => Cell {
            outcome: Outcome::Fail(why),
            trace: None,
        },
        Ok(Err(panic)) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".into());
            Cell {
                outcome: Outcome::Fail(format!("panicked: {msg}")),
                trace: None,
            }
        }
        Err(_) => Cell {
            outcome: Outcome::Fail(format!("did not finish within {CELL_DEADLINE:?}")),
            trace: None,
        },
    }
}

fn capabilities_reason(case: &Case, backend: Backend) -> Result<(), String> {
    if case.needs.len() <= 1 {
        // Every backend speaks HTTP/1.1; no need to start one to ask.
        return Ok(());
    }
    let mgr = backend
        .create(&BackendConfig::default())
        .map_err(|e| format!("backend did not start: {e}"))?;
    for need in case.needs {
        mgr.capabilities().check(*need)?;
    }
    Ok(())
}

/// Blanks the ports of this run's servers, which differ between runs.
fn normalize(mut t: Trace, ports: &[u16]) -> Trace {
    let blank = |s: &mut String| {
        for p in ports {
            let needle = format!(":{p}");
            if s.contains(&needle) {
                *s = s.replace(&needle, ":PORT");
            }
        }
    };
    blank(&mut t.url);
    for (_, v) in &mut t.headers {
        blank(v);
    }
    for r in &mut t.redirects {
        blank(&mut r.location);
    }
    if let Some(e) = &mut t.error {
        blank(&mut e.message);
    }
    t
}

/// One case on every backend, and whether their traces agree.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case.
    pub case: Case,
    /// Each backend's result.
    pub cells: BTreeMap<Backend, Cell>,
    /// Whether every trace agrees with every other.
    pub agree: bool,
    /// How the traces differ, when they do.
    pub disagreement: Option<String>,
}

impl CaseReport {
    /// True when every backend that ran passed and their traces agree.
    pub fn passed(&self) -> bool {
        self.agree
            && self
                .cells
                .values()
                .all(|c| !matches!(c.outcome, Outcome::Fail(_)))
    }

    /// True when some backend lacked a capability.
    pub fn has_unsupported(&self) -> bool {
        self.cells
            .values()
            .any(|c| matches!(c.outcome, Outcome::Unsupported(_)))
    }
}

/// Compares traces: `None` when they agree, else a description of the first difference.
pub fn compare(traces: &BTreeMap<Backend, Trace>) -> Option<String> {
    let mut iter = traces.iter();
    let (first_b, first) = iter.next()?;
    let reference = serde_json::to_value(first.comparable()).ok()?;
    for (b, t) in iter {
        let other = serde_json::to_value(t.comparable()).ok()?;
        if other != reference {
            let mut diffs = Vec::new();
            if let (Some(r), Some(o)) = (reference.as_object(), other.as_object()) {
                for (k, rv) in r {
                    let ov = &o[k];
                    if rv != ov {
                        diffs.push(format!("{k}: {first_b}={rv} {b}={ov}"));
                    }
                }
            }
            return Some(format!("traces differ: {}", diffs.join("; ")));
        }
    }
    None
}

/// Runs `case` on each backend and compares the traces.
pub fn run_case(case: &Case, backends: &[Backend]) -> CaseReport {
    let cells: BTreeMap<Backend, Cell> =
        backends.iter().map(|b| (*b, run_cell(case, *b))).collect();
    let traces: BTreeMap<Backend, Trace> = cells
        .iter()
        .filter_map(|(b, c)| c.trace.clone().map(|t| (*b, t)))
        .collect();
    let disagreement = compare(&traces);
    CaseReport {
        case: *case,
        cells,
        agree: disagreement.is_none(),
        disagreement,
    }
}

/// The whole run: cases × backends.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// The backends, in column order.
    pub backends: Vec<Backend>,
    /// One report per case, in catalogue order.
    pub cases: Vec<CaseReport>,
}

/// Totals of a matrix, counted per case: a case passed when every backend
/// that ran it passed with agreeing traces and none lacked a capability; it
/// is unsupported when none failed but some backend lacked a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Cases run.
    pub cases: usize,
    /// Cases that passed everywhere.
    pub passed: usize,
    /// Cases with a failure or a disagreement.
    pub failed: usize,
    /// Cases that passed where supported, with at least one backend unsupported.
    pub unsupported: usize,
}

impl Matrix {
    /// Runs every case whose id contains `filter` on `backends`, calling
    /// `progress` after each case.
    pub fn run(
        cases: &[Case],
        backends: &[Backend],
        filter: Option<&str>,
        mut progress: impl FnMut(usize, usize, &CaseReport),
    ) -> Matrix {
        let selected: Vec<&Case> = cases
            .iter()
            .filter(|c| filter.is_none_or(|f| c.id.contains(f)))
            .collect();
        let total = selected.len();
        let mut reports = Vec::with_capacity(total);
        for (i, case) in selected.into_iter().enumerate() {
            let r = run_case(case, backends);
            progress(i + 1, total, &r);
            reports.push(r);
        }
        Matrix {
            backends: backends.to_vec(),
            cases: reports,
        }
    }

    /// The totals.
    pub fn summary(&self) -> Summary {
        let failed = self.cases.iter().filter(|c| !c.passed()).count();
        let unsupported = self
            .cases
            .iter()
            .filter(|c| c.passed() && c.has_unsupported())
            .count();
        Summary {
            cases: self.cases.len(),
            passed: self.cases.len() - failed - unsupported,
            failed,
            unsupported,
        }
    }

    /// True when no case failed.
    pub fn ok(&self) -> bool {
        self.summary().failed == 0
    }
}
