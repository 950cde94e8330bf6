//! Every case × backend as its own named test (`cargo test redirect`,
//! `cargo test -- ::curl`), plus `<case>::agree`, which runs the case on all
//! compiled backends and fails when their traces differ.

use conformance_tests::{catalogue, run_case, run_cell, Outcome};
use libtest_mimic::{Arguments, Failed, Trial};
use resource_handle::Backend;

fn main() {
    let args = Arguments::from_args();
    let backends = Backend::compiled();
    let mut trials = Vec::new();
    for case in catalogue() {
        for backend in backends.clone() {
            trials.push(
                Trial::test(format!("{}::{}", case.id, backend), move || {
                    match run_cell(&case, backend).outcome {
                        Outcome::Pass => Ok(()),
                        Outcome::Fail(why) => Err(Failed::from(why)),
                        // Shown as a failure with its reason would hide real failures;
                        // libtest has no "unsupported", so the reason goes to stderr.
                        Outcome::Unsupported(why) => {
                            eprintln!("{} on {backend}: unsupported: {why}", case.id);
                            Ok(())
                        }
                    }
                })
                .with_kind(case.category),
            );
        }
        let all = backends.clone();
        trials.push(
            Trial::test(format!("{}::agree", case.id), move || {
                let report = run_case(&case, &all);
                if let Some(d) = report.disagreement {
                    return Err(Failed::from(d));
                }
                for (b, cell) in &report.cells {
                    if let Outcome::Fail(why) = &cell.outcome {
                        return Err(Failed::from(format!("{b}: {why}")));
                    }
                }
                Ok(())
            })
            .with_kind(case.category),
        );
    }
    libtest_mimic::run(&args, trials).exit();
}
