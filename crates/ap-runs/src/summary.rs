//! From the run store to the report: finished runs become [`SummaryRecord`]s (one per run ×
//! round), which `ap-report` turns into `summary.json`, `summary.csv`, plots and
//! `report.md`.

use std::path::Path;

use anyhow::Result;
use ap_prune::RoundRecord;
use ap_report::SummaryRecord;

use crate::spec::{GridSpec, RunSpec};
use crate::store::{remove_stale_temporaries, RunDir, RunState};

/// A finished run and its records.
pub type Finished = (RunSpec, Vec<RoundRecord>);

/// Flattens runs into summary records (one per run × round, in run then round order).
pub fn summarise(runs: &[(RunSpec, Vec<RoundRecord>)]) -> Vec<SummaryRecord> {
    let mut out = vec![];
    for (spec, rounds) in runs {
        let method = spec.prune.as_method();
        let all = method.iterations_from(0, spec.train.iterations);
        let mut seconds = 0.0;
        for r in rounds {
            seconds += r.seconds;
            out.push(SummaryRecord {
                method: spec.method_name(),
                ap: spec.ap.enabled,
                ap_rate: if spec.ap.enabled {
                    spec.ap.config.rate
                } else {
                    0.0
                },
                ap_share: if spec.ap.enabled {
                    spec.ap.config.share
                } else {
                    0.0
                },
                prune_rate: spec.prune_rate().unwrap_or(f64::NAN),
                dataset: spec.dataset.clone(),
                model: spec.model.to_string(),
                ap_variant: ap_variant(spec),
                ap_removed: r.events.iter().map(|e| e.ap_removed + e.ap_dropped).sum(),
                ap_shortfall: r.events.iter().map(|e| e.ap_shortfall).sum(),
                seed: spec.seed,
                run_key: spec.key(),
                round: r.round,
                density: r.density.density(),
                test_accuracy: r.test.accuracy,
                test_loss: r.test.loss,
                dynamic_dnr: r.test.dnr.dynamic,
                static_dnr: r.test.dnr.static_,
                train_dynamic_dnr: r.train_dnr.dynamic,
                train_static_dnr: r.train_dnr.static_,
                steps: all - method.iterations_from(r.round + 1, spec.train.iterations),
                compact_params: r.compact_params,
                seconds,
            });
        }
    }
    out
}

/// AP's settings that differ from the defaults, as `name=value` joined by `, ` (empty
/// when AP is off or at its defaults); rate and share are shown in the table headers.
fn ap_variant(spec: &RunSpec) -> String {
    if !spec.ap.enabled {
        return String::new();
    }
    let d = ap_criteria::ApConfig::default();
    let mut v = vec![];
    if spec.ap.config.in_drop_and_grow {
        v.push("in_drop_and_grow".to_string());
    }
    if spec.ap.config.survivor_share != d.survivor_share {
        v.push(format!("survivor_share={}", spec.ap.config.survivor_share));
    }
    if spec.ap.config.share != d.share && spec.prune_rate().is_none() {
        v.push(format!("share={}", spec.ap.config.share));
    }
    if spec.ap.config.options != d.options {
        v.push(format!(
            "options={}",
            serde_json::to_string(&spec.ap.config.options).unwrap_or_default()
        ));
    }
    if spec.ap.config.from_event != 0 || spec.ap.config.until_event.is_some() {
        v.push(format!(
            "events={}..{:?}",
            spec.ap.config.from_event, spec.ap.config.until_event
        ));
    }
    v.join(", ")
}

/// The finished runs among `specs` with their records, and how many are not finished.
pub fn finished_runs(specs: &[RunSpec], runs_dir: &Path) -> Result<(Vec<Finished>, usize)> {
    let mut results = vec![];
    let mut missing = 0;
    for s in specs {
        let dir = RunDir::of(runs_dir, s);
        if dir.state() == RunState::Done {
            results.push((s.clone(), dir.rounds()?));
        } else {
            missing += 1;
        }
    }
    Ok((results, missing))
}

/// Writes the report of `runs` into `out` ([`ap_report::write_report`]); returns the
/// markdown.
pub fn write_report(out: &Path, runs: &[Finished], title: &str) -> Result<String> {
    ap_report::write_report(out, &summarise(runs), title)
}

/// Writes the report of `grid` into `out`, first clearing the temporaries a killed writer
/// left there; returns the markdown.
pub fn write_grid_report(out: &Path, grid: &GridSpec, runs: &[Finished]) -> Result<String> {
    remove_stale_temporaries(out);
    write_report(out, runs, &format!("{} — {}", grid.name, grid.description))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ap_testkit::fixtures::{self, TomlExt};

    /// IMP rewinding to k = 100 with 1,000 iterations per phase: round r has cost
    /// 1,000 + r · 900 steps (derived by hand), seconds add up round by round.
    #[test]
    fn steps_and_seconds_accumulate_over_rounds() {
        let spec: RunSpec = crate::spec::parse_toml(
            &fixtures::lenet_mnist_spec()
                .with("train.iterations", 1000)
                .with("prune.rounds", 2)
                .with("prune.rewind_iteration", 100)
                .to_toml(),
            "x",
        )
        .unwrap();
        let dnr = serde_json::json!({"sites": [], "dynamic": 0.0, "static_": 0.0, "samples": 0});
        let record = |round: usize, seconds: f64| -> RoundRecord {
            serde_json::from_value(serde_json::json!({
                "round": round,
                "density": {"layers": [], "kept": 1, "total": 1},
                "events": [],
                "test": {"accuracy": 0.9, "loss": 0.1, "dnr": dnr},
                "train_dnr": dnr,
                "epochs": [],
                "seconds": seconds,
            }))
            .unwrap()
        };
        let rs = summarise(&[(spec, vec![record(0, 2.0), record(1, 3.0), record(2, 4.0)])]);
        let got: Vec<(u64, f64)> = rs.iter().map(|r| (r.steps, r.seconds)).collect();
        assert_eq!(got, vec![(1000, 2.0), (1900, 5.0), (2800, 9.0)]);
    }
}
