//! The conformance suite: test servers on loopback, a catalogue of named
//! cases, and a runner that runs every case on every backend and compares
//! what they did.
//!
//! A case passes only when every backend passes it and all their traces
//! agree; a backend that lacks a capability shows `unsupported`, never `pass`.

pub mod cases;
pub mod memory;
pub mod report;
pub mod runner;
pub mod servers;

pub use cases::{catalogue, Case, Ctx};
pub use runner::{compare, run_case, run_cell, Cell, Matrix, Outcome, Summary};
