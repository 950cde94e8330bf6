//! The matrix as a table, JSON, JUnit XML or Markdown.

use std::fmt::Write;

use serde_json::{json, Map, Value};

use crate::runner::{Matrix, Outcome};

/// The JSON form (DESIGN.md §6), stable for tools and CI.
pub fn json(m: &Matrix) -> Value {
    let cases: Vec<Value> = m
        .cases
        .iter()
        .map(|c| {
            let mut results = Map::new();
            let mut detail = Map::new();
            for (b, cell) in &c.cells {
                results.insert(b.name().into(), cell.outcome.as_str().into());
                if let Some(d) = cell.outcome.detail() {
                    detail.insert(b.name().into(), d.into());
                }
            }
            if let Some(d) = &c.disagreement {
                detail.insert("agree".into(), d.clone().into());
            }
            json!({
                "id": c.case.id,
                "category": c.case.category,
                "results": results,
                "agree": c.agree,
                "detail": detail,
            })
        })
        .collect();
    let s = m.summary();
    json!({
        "backends": m.backends.iter().map(|b| b.name()).collect::<Vec<_>>(),
        "cases": cases,
        "summary": {
            "cases": s.cases,
            "passed": s.passed,
            "failed": s.failed,
            "unsupported": s.unsupported,
        },
    })
}

fn mark(o: &Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail(_) => "FAIL",
        Outcome::Unsupported(_) => "unsupported",
    }
}

/// A table for people, grouped by category, failures explained below it.
pub fn table(m: &Matrix) -> String {
    let id_w = m
        .cases
        .iter()
        .map(|c| c.case.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = write!(out, "{:id_w$}", "case");
    for b in &m.backends {
        let _ = write!(out, "  {:11}", b.name());
    }
    let _ = writeln!(out, "  agree");
    let mut category = "";
    for c in &m.cases {
        if c.case.category != category {
            category = c.case.category;
            let _ = writeln!(out, "[{category}]");
        }
        let _ = write!(out, "{:id_w$}", c.case.id);
        for b in &m.backends {
            let o = c.cells.get(b).map_or("-", |cell| mark(&cell.outcome));
            let _ = write!(out, "  {o:11}");
        }
        let _ = writeln!(out, "  {}", if c.agree { "yes" } else { "NO" });
    }
    let mut notes = String::new();
    for c in &m.cases {
        for (b, cell) in &c.cells {
            if let Outcome::Fail(d) | Outcome::Unsupported(d) = &cell.outcome {
                let _ = writeln!(notes, "  {} on {b}: {d}", c.case.id);
            }
        }
        if let Some(d) = &c.disagreement {
            let _ = writeln!(notes, "  {}: {d}", c.case.id);
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\nnotes:\n{notes}");
    }
    let s = m.summary();
    let _ = writeln!(
        out,
        "{} cases on {}: {} passed, {} failed, {} unsupported",
        s.cases,
        m.backends
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", "),
        s.passed,
        s.failed,
        s.unsupported
    );
    out
}

/// Markdown, for a README.
pub fn markdown(m: &Matrix) -> String {
    let mut out = String::from("| case |");
    for b in &m.backends {
        let _ = write!(out, " {} |", b.name());
    }
    out.push_str(" agree |\n|---|");
    for _ in &m.backends {
        out.push_str("---|");
    }
    out.push_str("---|\n");
    for c in &m.cases {
        let _ = write!(out, "| `{}` |", c.case.id);
        for b in &m.backends {
            let o = c.cells.get(b).map_or("-", |cell| mark(&cell.outcome));
            let _ = write!(out, " {o} |");
        }
        let _ = writeln!(out, " {} |", if c.agree { "yes" } else { "**no**" });
    }
    let s = m.summary();
    let _ = writeln!(
        out,
        "\n{} cases: {} passed, {} failed, {} unsupported.",
        s.cases, s.passed, s.failed, s.unsupported
    );
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JUnit XML: one test case per case × backend, plus one per case for agreement.
pub fn junit(m: &Matrix) -> String {
    let mut body = String::new();
    let (mut tests, mut failures, mut skipped) = (0, 0, 0);
    for c in &m.cases {
        for (b, cell) in &c.cells {
            tests += 1;
            let _ = write!(
                body,
                "    <testcase classname=\"{}\" name=\"{}::{}\"",
                xml_escape(c.case.category),
                xml_escape(c.case.id),
                b.name()
            );
            match &cell.outcome {
                Outcome::Pass => body.push_str("/>\n"),
                Outcome::Fail(d) => {
                    failures += 1;
                    let _ = writeln!(
                        body,
                        ">\n      <failure message=\"{}\"/>\n    </testcase>",
                        xml_escape(d)
                    );
                }
                Outcome::Unsupported(d) => {
                    skipped += 1;
                    let _ = writeln!(
                        body,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml_escape(d)
                    );
                }
            }
        }
        tests += 1;
        let _ = write!(
            body,
            "    <testcase classname=\"{}\" name=\"{}::agree\"",
            xml_escape(c.case.category),
            xml_escape(c.case.id)
        );
        match &c.disagreement {
            None => body.push_str("/>\n"),
            Some(d) => {
                failures += 1;
                let _ = writeln!(
                    body,
                    ">\n      <failure message=\"{}\"/>\n    </testcase>",
                    xml_escape(d)
                );
            }
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"conformance\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\">\n{body}  </testsuite>\n</testsuites>\n"
    )
}
