//! Workloads, baselines and the side-by-side comparison of the backends.
//!
//! DESIGN.md §7: the same workloads, on loopback, through every backend and,
//! in the same run, through each library used directly with the same
//! settings (the abstraction's overhead is the ratio), through reqwest (what
//! users would pick instead), and through wrk and the curl tool where they
//! are installed (the external ceiling).
//!
//! - [`harness`] runs the chosen workloads and clients (each client in a
//!   process of its own) and returns a [`Report`];
//! - [`report`] prints it as a table, JSON, Markdown, and checks the targets;
//! - [`svg`] draws it;
//! - [`server`] is the embedded benchmark server;
//! - [`measure`] reads CPU time and peak memory.
//!
//! [`download`] and [`upload`] are the streamed transfers the memory test
//! (`tests/memory.rs`) bounds.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod clients;
pub mod harness;
pub mod measure;
pub mod report;
pub mod server;
pub mod svg;
mod transfer;
pub mod workload;

pub use clients::external::find_program;
pub use harness::{ChildCommand, Options, Progress};
pub use measure::{current_rss_bytes, peak_rss_bytes};
pub use report::Report;
pub use server::BenchServer;
pub use transfer::{download, upload};
pub use workload::{ClientKind, Unit, Workload};
