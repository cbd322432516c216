//! Experiments: specs in TOML, a run store keyed by the spec's hash, the runner, the
//! backends that run a grid (locally or on Slurm), and the bridge to the report
//! (`ap-report`). The `ap` command-line program (`src/bin/ap.rs`) parses arguments and
//! calls into this library; the library prints nothing itself.
//!
//! A run is fully described by a [`RunSpec`]; its canonical JSON hashes to the run key
//! that names its directory, so rerunning the same spec reuses the finished result.

pub mod backend;
pub mod estimate;
pub mod export;
pub mod progress;
pub mod recipes;
pub mod runner;
pub mod select;
pub mod spec;
pub mod status;
pub mod store;
pub mod summary;
pub mod sweep;
pub mod testpoint;

pub use runner::{execute, RunOptions};
pub use spec::{GridSpec, RunSpec};
pub use store::{RunDir, RunError, RunState};
pub use summary::{summarise, write_report};
