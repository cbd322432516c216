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

/// Where the runs of an estimate will run: the device kind (`cpu`, `cuda`) and how many
/// runs share it at a time (`ap reproduce --jobs`; 1 per Slurm task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `cpu` or `cuda` (a device string's kind: `cuda:1` is `cuda`).
    pub device: String,
    /// Runs at a time on it.
    pub packed: usize,
}

impl Target {
    /// The target of `device` (a device string as `--device` takes it) with `packed` runs
    /// at a time.
    pub fn new(device: &str, packed: usize) -> Target {
        Target {
            device: device_kind(device).to_string(),
            packed: packed.max(1),
        }
    }
}

/// `cpu` or `cuda` from a device string (`cuda:0`) or libtorch's name (`Cuda(0)`).
fn device_kind(device: &str) -> &'static str {
    if device.to_ascii_lowercase().starts_with("cuda") {
        "cuda"
    } else {
        "cpu"
    }
}

/// Seconds-per-iteration table built from the store: per step-cost key, device kind and
/// how many runs shared the device (`provenance.json`'s `device` and `packed_runs`).
#[derive(Debug, Default)]
pub struct Estimator {
    /// (seconds, work) summed over finished runs.
    measured: BTreeMap<(Key, String, usize), (f64, f64)>,
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
            let provenance: serde_json::Value =
                std::fs::read_to_string(dir.path.join("provenance.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
            let device = device_kind(provenance["device"].as_str().unwrap_or("cpu"));
            let packed = provenance["packed_runs"].as_u64().unwrap_or(1).max(1) as usize;
            if let Ok(records) = dir.rounds() {
                e.learn(s, device, packed, records.iter().map(|r| r.seconds).sum());
            }
        }
        e
    }

    /// Adds a finished run of `spec` that took `seconds` on a `device` (kind) shared by
    /// `packed` runs.
    fn learn(&mut self, spec: &RunSpec, device: &str, packed: usize, seconds: f64) {
        let entry = self
            .measured
            .entry((key(spec), device.to_string(), packed))
            .or_default();
        entry.0 += seconds;
        entry.1 += work(
            spec,
            total_iterations(spec),
            spec.prune.round_count() as u64,
        );
    }

    /// Estimated wall seconds per training iteration of one run of `spec` on `on`, with
    /// `on.packed` runs sharing the device. From finished runs of the same step cost on
    /// the same kind of device: those that ran as packed as asked for as they are, else
    /// the nearest packing k, scaled by packed / k (the throughput they reached, k runs
    /// per their time, shared by `packed` runs); with none, the CPU table.
    pub fn seconds_per_iteration(&self, spec: &RunSpec, on: &Target) -> f64 {
        let nearest = self
            .measured
            .iter()
            .filter(|((k, device, _), (_, w))| *k == key(spec) && *device == on.device && *w > 0.0)
            .min_by(|((.., a), _), ((.., b), _)| {
                let off = |k: usize| (k as f64 / on.packed as f64).ln().abs();
                off(*a).total_cmp(&off(*b))
            });
        match nearest {
            Some(((.., k), &(secs, w))) => secs / w * on.packed as f64 / *k as f64,
            None => default_cost(spec.model).0 * spec.train.batch_size as f64 / 60.0,
        }
    }

    /// Estimated seconds left for `spec` with `finished` rounds done, run on `on`.
    pub fn seconds_left(&self, spec: &RunSpec, finished: usize, on: &Target) -> f64 {
        let evals = spec.prune.round_count().saturating_sub(finished) as u64;
        work(spec, remaining_iterations(spec, finished), evals)
            * self.seconds_per_iteration(spec, on)
    }
}

type Key = (ModelKind, String, i64, usize);

/// What a step's cost depends on: the model, the images it sees (data set and `pad`) and
/// the batch size.
fn key(s: &RunSpec) -> Key {
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
        let cpu = Target::new("cpu", 2);
        assert!((e.seconds_left(&gmp, 0, &cpu) - (100.0 + 100.0) * 0.0028).abs() < 1e-12);
    }

    /// Measured runs estimate runs of their step cost on their kind of device: as they
    /// are at the packing they ran with, scaled by packed / k from the nearest other
    /// packing k; other devices and batch sizes fall back to the CPU table.
    #[test]
    fn estimates_follow_the_device_and_the_packing() {
        let gmp = spec("method = \"gmp\"\nfinal_density = 0.1\nbegin = 10\nend = 80\nevery = 10");
        let mut e = Estimator::default();
        // work: 100 iterations + 1 evaluation (100 iterations' worth) = 200
        e.learn(&gmp, "cuda", 2, 2.0);
        let per = 2.0 / 200.0;
        let at = |e: &Estimator, device: &str, packed| {
            e.seconds_per_iteration(&gmp, &Target::new(device, packed))
        };
        assert!((at(&e, "cuda", 2) - per).abs() < 1e-12);
        assert!((at(&e, "cuda:1", 4) - 2.0 * per).abs() < 1e-12);
        assert!((at(&e, "cuda", 1) - 0.5 * per).abs() < 1e-12);
        assert!((at(&e, "cpu", 2) - 0.0028).abs() < 1e-12);
        e.learn(&gmp, "cuda", 8, 4.0);
        assert!((at(&e, "cuda", 8) - 4.0 / 200.0).abs() < 1e-12);
        assert!((at(&e, "cuda", 6) - 4.0 / 200.0 * 6.0 / 8.0).abs() < 1e-12);
        assert_eq!(Target::new("Cuda(0)", 0), Target::new("cuda", 1));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(5.2), "5s");
        assert_eq!(human(750.0), "12m 30s");
        assert_eq!(human(3900.0), "1h 05m");
    }
}
