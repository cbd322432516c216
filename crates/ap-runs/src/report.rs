//! Reports: `summary.json` / `summary.csv` (one record per run × round) and `report.md`
//! (per model × dataset × method, accuracy and dynamic DNR with and without AP by density).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use ap_prune::RoundRecord;
use serde::{Deserialize, Serialize};

use crate::spec::RunSpec;
use crate::store::write_atomic;

/// One run × round: the machine-readable result (schema in docs/results.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRecord {
    /// Host method (`imp`).
    pub method: String,
    /// AP on or off.
    pub ap: bool,
    /// p_AP (0 when AP is off): AP's share of round-based events (imp, lrr).
    pub ap_rate: f64,
    /// AP's fraction of schedule-driven events (one-shot, gmp, granet, rigl); 0 when off.
    pub ap_share: f64,
    /// p, the rate per pruning event (NaN → null for schedule-driven methods).
    pub prune_rate: f64,
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// Run seed.
    pub seed: u64,
    /// Run key (hash of the resolved spec).
    pub run_key: String,
    /// 0 = dense; r = after r pruning events.
    pub round: usize,
    /// Fraction of prunable weights kept.
    pub density: f64,
    /// Test accuracy after the round's training (eval mode, whole test set).
    pub test_accuracy: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Dynamic DNR on the test set, eval mode.
    pub dynamic_dnr: f64,
    /// Static DNR on the test set, eval mode.
    pub static_dnr: f64,
    /// Dynamic DNR over the last training epoch, train mode.
    pub train_dynamic_dnr: f64,
    /// Static DNR over the last training epoch, train mode.
    pub train_static_dnr: f64,
}

/// Flattens runs into summary records.
pub fn summarise(runs: &[(RunSpec, Vec<RoundRecord>)]) -> Vec<SummaryRecord> {
    let mut out = vec![];
    for (spec, rounds) in runs {
        for r in rounds {
            out.push(SummaryRecord {
                method: spec.prune.name(),
                ap: spec.ap.enabled,
                ap_rate: if spec.ap.enabled { spec.ap.rate } else { 0.0 },
                ap_share: if spec.ap.enabled { spec.ap.share } else { 0.0 },
                prune_rate: spec.prune_rate().unwrap_or(f64::NAN),
                dataset: spec.dataset.clone(),
                model: spec.model.clone(),
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

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Reference facts from the papers (ap-spec §5) shown under a table.
fn reference_note(model: &str, dataset: &str, method: &str) -> Option<&'static str> {
    match (model, dataset, method) {
        ("lenet300-100", "mnist", "imp") => Some(
            "Paper reference (Frankle & Carbin 2019, LeNet-300-100/MNIST, 50K iterations per round): dense ≈ 98% test accuracy; \
             winning tickets stay at or above dense accuracy down to ≈ 3.6% density, peaking ≈ +0.3 pt near 13.5%.",
        ),
        _ => None,
    }
}

/// Markdown tables: per model × dataset × host method, one row per round, accuracy
/// (mean ± std over seeds) and dynamic DNR without and with AP, and AP's gain.
pub fn markdown(records: &[SummaryRecord], title: &str) -> String {
    let mut groups: BTreeMap<(String, String, String), Vec<&SummaryRecord>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.model.clone(), r.dataset.clone(), r.method.clone()))
            .or_default()
            .push(r);
    }
    let mut s = format!("# {title}\n\n");
    for ((model, dataset, method), rs) in groups {
        let seeds: std::collections::BTreeSet<u64> = rs.iter().map(|r| r.seed).collect();
        let ap_budget = rs.iter().find(|r| r.ap).map(|r| {
            if r.prune_rate.is_finite() {
                format!(
                    " (p = {:.0}%, p_AP = {:.1}%)",
                    100.0 * r.prune_rate,
                    100.0 * r.ap_rate
                )
            } else {
                format!(" (AP takes {:.0}% of each event)", 100.0 * r.ap_share)
            }
        });
        let _ = writeln!(
            s,
            "## {model} / {dataset} — {method} vs {method}+AP{} ({} seed{})\n",
            ap_budget.unwrap_or_default(),
            seeds.len(),
            if seeds.len() == 1 { "" } else { "s" }
        );
        s.push_str("| round | density | test acc | test acc +AP | AP gain (pt) | dynamic DNR | dynamic DNR +AP | static DNR | static DNR +AP |\n");
        s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let mut by_round: BTreeMap<usize, (Vec<&SummaryRecord>, Vec<&SummaryRecord>)> =
            BTreeMap::new();
        for r in &rs {
            let e = by_round.entry(r.round).or_default();
            if r.ap {
                e.1.push(r)
            } else {
                e.0.push(r)
            }
        }
        for (round, (off, on)) in by_round {
            let density = off.first().or(on.first()).map_or(f64::NAN, |r| r.density);
            let stat = |v: &[&SummaryRecord], f: fn(&SummaryRecord) -> f64| {
                (!v.is_empty()).then(|| mean_std(&v.iter().map(|r| f(r)).collect::<Vec<_>>()))
            };
            let acc = |v: &[&SummaryRecord]| stat(v, |r| 100.0 * r.test_accuracy);
            let fmt_acc = |x: Option<(f64, f64)>| {
                x.map_or("—".into(), |(m, sd)| format!("{m:.2} ± {sd:.2}"))
            };
            let fmt = |x: Option<(f64, f64)>| x.map_or("—".into(), |(m, _)| format!("{m:.3}"));
            let (a0, a1) = (acc(&off), acc(&on));
            let gain = match (a0, a1) {
                (Some((m0, _)), Some((m1, _))) => format!("{:+.2}", m1 - m0),
                _ => "—".into(),
            };
            let _ = writeln!(
                s,
                "| {round} | {:.2}% | {} | {} | {gain} | {} | {} | {} | {} |",
                100.0 * density,
                fmt_acc(a0),
                fmt_acc(a1),
                fmt(stat(&off, |r| r.dynamic_dnr)),
                fmt(stat(&on, |r| r.dynamic_dnr)),
                fmt(stat(&off, |r| r.static_dnr)),
                fmt(stat(&on, |r| r.static_dnr)),
            );
        }
        if let Some(note) = reference_note(&model, &dataset, &method) {
            let _ = writeln!(s, "\n{note}");
        }
        s.push('\n');
    }
    s.push_str("Accuracy: final-phase test accuracy in %, mean ± sample std over seeds. DNR: dead neuron rate on the test set in eval mode (ap-spec §2).\n");
    s
}

/// Writes summary.json, summary.csv and report.md into `out` (atomically); returns the markdown.
pub fn write_report(
    out: &Path,
    runs: &[(RunSpec, Vec<RoundRecord>)],
    title: &str,
) -> Result<String> {
    std::fs::create_dir_all(out)?;
    let records = summarise(runs);
    write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&records)?.as_bytes(),
    )?;
    let mut csv = String::from("method,ap,ap_rate,ap_share,prune_rate,dataset,model,seed,run_key,round,density,test_accuracy,test_loss,dynamic_dnr,static_dnr,train_dynamic_dnr,train_static_dnr\n");
    for r in &records {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{:.6},{:.4},{:.5},{:.5},{:.5},{:.5},{:.5}",
            r.method,
            r.ap,
            r.ap_rate,
            r.ap_share,
            r.prune_rate,
            r.dataset,
            r.model,
            r.seed,
            r.run_key,
            r.round,
            r.density,
            r.test_accuracy,
            r.test_loss,
            r.dynamic_dnr,
            r.static_dnr,
            r.train_dynamic_dnr,
            r.train_static_dnr
        );
    }
    write_atomic(&out.join("summary.csv"), csv.as_bytes())?;
    let md = markdown(&records, title);
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ap: bool, seed: u64, round: usize, acc: f64, dnr: f64) -> SummaryRecord {
        SummaryRecord {
            method: "imp".into(),
            ap,
            ap_rate: if ap { 0.02 } else { 0.0 },
            ap_share: if ap { 0.1 } else { 0.0 },
            prune_rate: 0.2,
            dataset: "mnist".into(),
            model: "lenet300-100".into(),
            seed,
            run_key: "k".into(),
            round,
            density: 0.8f64.powi(round as i32),
            test_accuracy: acc,
            test_loss: 0.1,
            dynamic_dnr: dnr,
            static_dnr: dnr / 2.0,
            train_dynamic_dnr: dnr,
            train_static_dnr: 0.0,
        }
    }

    #[test]
    fn table_has_mean_std_and_gain() {
        let rs = vec![
            rec(false, 0, 1, 0.97, 0.5),
            rec(false, 1, 1, 0.99, 0.7),
            rec(true, 0, 1, 0.99, 0.4),
            rec(true, 1, 1, 0.99, 0.4),
        ];
        let md = markdown(&rs, "t");
        assert!(
            md.contains("| 1 | 80.00% | 98.00 ± 1.41 | 99.00 ± 0.00 | +1.00 | 0.600 | 0.400 |"),
            "{md}"
        );
        assert!(md.contains("Frankle & Carbin"));
    }
}
