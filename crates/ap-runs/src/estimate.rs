//! Time estimates for `--dry-run` and the progress display: training iterations a run
//! still has to do × seconds per iteration, taken from finished runs of the same model,
//! dataset, padding and batch size in the store when there are any, else from a table measured on
//! a 2-core CPU (docs/performance.md). Evaluation time is folded into the per-iteration
//! figure because finished runs' round times include it.

use std::collections::BTreeMap;

use ap_models::ModelKind;

use crate::spec::RunSpec;
use crate::store::{RunDir, RunState};

/// Training iterations of a whole run (every phase).
pub fn total_iterations(spec: &RunSpec) -> u64 {
    remaining_iterations(spec, 0)
}

/// Iterations still to do for a run with `finished` rounds behind it.
pub fn remaining_iterations(spec: &RunSpec, finished: usize) -> u64 {
    spec.prune
        .as_method()
        .iterations_from(finished, spec.train.iterations)
}

/// Seconds per training iteration at batch 60 with one libtorch thread on the 2-core
/// development machine, for runs never seen before (rough: ±50%), and what one test-set
/// evaluation costs in training iterations.
fn default_cost(model: ModelKind) -> (f64, f64) {
    use ModelKind::*;
    match model {
        LeNet300_100 => (0.0028, 100.0),
        LeNet5 => (0.026, 60.0),
        Conv2 => (0.2, 50.0),
        Conv4 => (0.25, 50.0),
        Conv6 => (0.3, 50.0),
        ResNet20 | ResNet20B => (0.12, 60.0),
        ResNet32 | ResNet32B => (0.19, 60.0),
        ResNet56 | ResNet56B => (0.33, 60.0),
        Vgg11 | Vgg16 | Vgg19 => (0.45, 60.0),
    }
}

/// Work of a run in units of training iterations: iterations plus evaluations.
fn work(spec: &RunSpec, iterations: u64, evaluations: u64) -> f64 {
    iterations as f64 + evaluations as f64 * default_cost(spec.model).1
}

/// Seconds-per-iteration table built from the store.
#[derive(Debug, Default)]
pub struct Estimator {
    /// (seconds, work) summed over finished runs.
    measured: BTreeMap<(ModelKind, String, i64, usize), (f64, f64)>,
}

impl Estimator {
    /// Learns from every finished run among `specs` in `runs`.
    pub fn from_store(runs: &std::path::Path, specs: &[RunSpec]) -> Estimator {
        let mut e = Estimator::default();
        for s in specs {
            let dir = RunDir::of(runs, s);
            if dir.state() != RunState::Done {
                continue;
            }
            if let Ok(records) = dir.rounds() {
                let secs: f64 = records.iter().map(|r| r.seconds).sum();
                let entry = e.measured.entry(key(s)).or_default();
                entry.0 += secs;
                entry.1 += work(s, total_iterations(s), s.prune.round_count() as u64);
            }
        }
        e
    }

    /// Estimated seconds per training iteration of `spec`.
    pub fn seconds_per_iteration(&self, spec: &RunSpec) -> f64 {
        match self.measured.get(&key(spec)) {
            Some(&(secs, w)) if w > 0.0 => secs / w,
            _ => default_cost(spec.model).0 * spec.train.batch_size as f64 / 60.0,
        }
    }

    /// Estimated seconds left for `spec` with `finished` rounds done.
    pub fn seconds_left(&self, spec: &RunSpec, finished: usize) -> f64 {
        let evals = spec.prune.round_count().saturating_sub(finished) as u64;
        work(spec, remaining_iterations(spec, finished), evals) * self.seconds_per_iteration(spec)
    }
}

/// What a step's cost depends on: the model, the images it sees (data set and `pad`) and
/// the batch size.
fn key(s: &RunSpec) -> (ModelKind, String, i64, usize) {
    (s.model, s.dataset.clone(), s.pad, s.train.batch_size)
}

/// `1h 05m`, `12m 30s`, `45s`.
pub fn human(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_toml;

    fn spec(prune: &str) -> RunSpec {
        parse_toml(
            &format!(
                "model = \"lenet300-100\"\ndataset = \"mnist\"\nseed = 0\n[train]\nbatch_size = 60\niterations = 100\noptimizer = {{ kind = \"adam\", lr = 1e-3 }}\n[prune]\n{prune}\n"
            ),
            "s.toml",
        )
        .unwrap()
    }

    #[test]
    fn iterations_count_every_phase() {
        let imp = spec("method = \"imp\"\nrounds = 3\nrate = 0.2\nrewind_iteration = 10");
        assert_eq!(total_iterations(&imp), 100 + 3 * 90);
        assert_eq!(remaining_iterations(&imp, 2), 2 * 90);
        assert_eq!(remaining_iterations(&imp, 4), 0);
        let gmp = spec("method = \"gmp\"\nfinal_density = 0.1\nbegin = 10\nend = 80\nevery = 10");
        assert_eq!(total_iterations(&gmp), 100);
        let one = spec("method = \"one_shot\"\ndensity = 0.1\nfine_tune_iterations = 40");
        assert_eq!(total_iterations(&one), 140);
        assert_eq!(remaining_iterations(&one, 1), 40);
        let e = Estimator::default();
        assert!((e.seconds_left(&gmp, 0) - (100.0 + 100.0) * 0.0028).abs() < 1e-12);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(5.2), "5s");
        assert_eq!(human(750.0), "12m 30s");
        assert_eq!(human(3900.0), "1h 05m");
    }
}
