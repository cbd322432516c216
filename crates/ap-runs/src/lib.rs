//! Experiments: specs in TOML, a run store keyed by the spec's hash, the runner, reports,
//! and the `ap` command-line program.
//!
//! A run is fully described by a [`RunSpec`]; its canonical JSON hashes to the run key
//! that names its directory, so rerunning the same spec reuses the finished result.

pub mod estimate;
pub mod plot;
pub mod progress;
pub mod recipes;
pub mod reference;
pub mod report;
pub mod runner;
pub mod select;
pub mod slurm;
pub mod spec;
pub mod status;
pub mod store;
pub mod testpoint;

pub use report::{summarise, write_report, SummaryRecord};
pub use runner::{execute, RunOptions};
pub use spec::{GridSpec, RunSpec};
pub use store::{RunDir, RunState};
