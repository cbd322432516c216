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
        for r in rounds {
            out.push(SummaryRecord {
                method: spec.prune.name(),
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
