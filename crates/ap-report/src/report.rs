//! Reports: `summary.json` / `summary.csv` (one record per run × round), SVG plots per
//! model × dataset ([`crate::plot`]) and `report.md` (per model × dataset, the plots and one
//! table per method: accuracy and DNR with and without AP by density, next to the papers'
//! numbers from [`crate::reference`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::plot::{self, Metric};
use crate::reference;
use crate::setting;
use crate::write_atomic;

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
    /// AP's settings where they differ from the defaults (an ablation), e.g.
    /// `in_drop_and_grow` or `survivor_share=0.1`; empty for the default AP and without AP.
    #[serde(default)]
    pub ap_variant: String,
    /// Weights AP removed in the round's events.
    #[serde(default)]
    pub ap_removed: i64,
    /// AP's budget left unused for lack of candidates in the round's events (the host
    /// removed these instead).
    #[serde(default)]
    pub ap_shortfall: i64,
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
    /// Training cost to the end of this round, from the run's start: forward-backward
    /// passes of training (a BiP bi-level iteration is two; IMP's later rounds retrain
    /// from the rewind point). 0 in summaries written before it existed.
    #[serde(default)]
    pub steps: u64,
    /// Parameters of the round's network after exact compaction (`ap-compact`); `None`
    /// where the run did not measure it (runs from before it existed).
    #[serde(default)]
    pub compact_params: Option<i64>,
    /// Wall-clock seconds of rounds 0..=this one (training and evaluation), for the
    /// report's cost column. Not written to `summary.json` or `summary.csv`: wall time
    /// differs between identical runs, and the summary is the grid's reproducible result
    /// (a resumed grid writes the same bytes as an uninterrupted one).
    #[serde(skip)]
    pub seconds: f64,
}

/// Mean ± sample std of the paired differences (AP − no AP, same seed and round) and
/// whether their 95% t-interval excludes 0. None without a pair.
pub fn paired_gain(pairs: &[(f64, f64)]) -> Option<(f64, f64, bool)> {
    if pairs.is_empty() {
        return None;
    }
    let d: Vec<f64> = pairs.iter().map(|(off, on)| on - off).collect();
    let (m, sd) = mean_std(&d);
    // Two-sided 97.5% quantiles of Student's t for 1..=10 degrees of freedom.
    const T: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    let n = d.len();
    let clear = n > 1 && m.abs() > T[(n - 2).min(9)] * sd / (n as f64).sqrt();
    Some((m, sd, clear))
}

/// `f` of each run without AP and of the run with AP of the same seed: the pairs that
/// [`paired_gain`] compares (seeds without a partner are left out).
pub(crate) fn paired_by_seed(
    off: &[&SummaryRecord],
    on: &[&SummaryRecord],
    f: fn(&SummaryRecord) -> f64,
) -> Vec<(f64, f64)> {
    off.iter()
        .filter_map(|o| on.iter().find(|a| a.seed == o.seed).map(|a| (f(o), f(a))))
        .collect()
}

/// Mean and sample standard deviation (0 for one value).
pub(crate) fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Markdown report without plot links (what `ap run` prints for one run): see
/// [`markdown_with_plots`].
pub fn markdown(records: &[SummaryRecord], title: &str) -> String {
    markdown_with_plots(records, title, &[])
}

/// Markdown report: one section per model × dataset, opened by links to its plots (those
/// of `plots` whose file names are [`plot::file_name`]'s for the section), then one table
/// per host method with a row per round: density, accuracy (mean ± std over seeds) without
/// and with AP, AP's gain, the papers' number for that row ([`reference::column`]), and
/// dynamic and static DNR without and with AP. The papers' notes and the references placed
/// in the column follow each table, so a reader sees what each number is compared with.
pub fn markdown_with_plots(records: &[SummaryRecord], title: &str, plots: &[PathBuf]) -> String {
    let mut by_model: BTreeMap<(&str, &str), Vec<&SummaryRecord>> = BTreeMap::new();
    for r in records {
        by_model
            .entry((r.model.as_str(), r.dataset.as_str()))
            .or_default()
            .push(r);
    }
    let written: BTreeSet<String> = plots
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut s = format!("# {title}\n\n");
    for ((model, dataset), model_records) in by_model {
        let _ = writeln!(s, "## {model} / {dataset}\n");
        let mut linked = false;
        for (metric, alt) in [
            (Metric::Accuracy, "test accuracy vs density"),
            (Metric::DynamicDnr, "dynamic DNR vs density"),
        ] {
            let name = plot::file_name(metric, model, dataset);
            if written.contains(&name) {
                let _ = writeln!(s, "![{model} / {dataset}: {alt}]({name})");
                linked = true;
            }
        }
        if linked {
            s.push_str(
                "\nSolid: without AP; dashed: with AP; one colour per setting; mean over seeds, \
                 bars ± one sample std over seeds.\n\n",
            );
        }
        setting::final_table(&mut s, &model_records);
        // One table per setting (a method, and its final density where it has several).
        let mut settings: BTreeMap<String, Vec<&SummaryRecord>> = BTreeMap::new();
        for (r, label) in model_records
            .iter()
            .zip(setting::setting_labels(&model_records))
        {
            settings.entry(label).or_default().push(r);
        }
        for (label, rs) in &settings {
            let method = rs[0].method.as_str();
            // One table per AP variant, each against the same runs without AP.
            let variants: BTreeSet<&str> = rs
                .iter()
                .filter(|r| r.ap)
                .map(|r| r.ap_variant.as_str())
                .collect();
            let variants: Vec<&str> = if variants.is_empty() {
                vec![""]
            } else {
                variants.into_iter().collect()
            };
            for v in variants {
                let these: Vec<&SummaryRecord> = rs
                    .iter()
                    .copied()
                    .filter(|r| !r.ap || r.ap_variant == v)
                    .collect();
                let of = TableOf {
                    model,
                    dataset,
                    method,
                    label,
                    variant: v,
                };
                method_table(&mut s, &of, &these);
            }
        }
    }
    let _ = writeln!(
        s,
        "Accuracy: final-phase test accuracy in %, mean ± sample std over seeds. AP gain: mean ± sample std of the \
         paired difference (the same seed with and without AP), \"(within noise)\" where its 95% t-interval contains 0. DNR: dead neuron rate on the test set in eval mode (ap-spec §2). \
         Paper reference: the papers' number for that model, dataset and method (without AP) at the row's density — \
         placed in the nearest row within a factor {} of the paper's density, \"—\" elsewhere; \
         \"dense +x\" is the paper's gain over its own dense network. \
         Cost: training to the end of the round from the run's start, mean over the runs without AP: \
         forward-backward passes (a BiP bi-level iteration counts two) and wall-clock seconds.",
        reference::DENSITY_TOLERANCE
    );
    s
}

/// Records of one round: without AP, and with AP.
type Split<'a> = (Vec<&'a SummaryRecord>, Vec<&'a SummaryRecord>);

/// What a method's table is of: a model, data set, method and AP variant.
struct TableOf<'a> {
    model: &'a str,
    dataset: &'a str,
    method: &'a str,
    /// The setting: the method, with its final density where it has several
    /// ([`setting::setting_labels`]).
    label: &'a str,
    /// The AP variant (ablation) of its AP rows; empty: the default.
    variant: &'a str,
}

/// One method's table (rows by round) and the notes under it.
fn method_table(s: &mut String, of: &TableOf, rs: &[&SummaryRecord]) {
    let (model, dataset, method) = (of.model, of.dataset, of.method);
    table_heading(s, of, rs);
    let mut by_round: BTreeMap<usize, Split> = BTreeMap::new();
    for r in rs {
        let e = by_round.entry(r.round).or_default();
        if r.ap {
            e.1.push(r)
        } else {
            e.0.push(r)
        }
    }
    let densities: Vec<f64> = by_round
        .values()
        .map(|(off, on)| off.first().or(on.first()).map_or(f64::NAN, |r| r.density))
        .collect();
    let refs = reference::column(model, dataset, method, &densities);
    for (((round, (off, on)), density), reference) in by_round.iter().zip(&densities).zip(refs) {
        table_row(s, *round, *density, off, on, reference);
    }
    s.push('\n');
    shortfall_note(s, &by_round);
    reference_notes(s, model, dataset, method, &densities);
}

/// The table's `###` heading (method, AP's budget, ablation, seeds) and column header.
fn table_heading(s: &mut String, of: &TableOf, rs: &[&SummaryRecord]) {
    let (model, dataset, method, variant) = (of.model, of.dataset, of.method, of.variant);
    let seeds: BTreeSet<u64> = rs.iter().map(|r| r.seed).collect();
    let ap_budget = rs.iter().find(|r| r.ap).map(|r| {
        if r.prune_rate.is_finite() {
            format!(
                " (p = {:.0}%, p_AP = {:.1}%)",
                100.0 * r.prune_rate,
                100.0 * r.ap_rate
            )
        } else if variant.contains("survivor_share") {
            format!(
                " (AP takes at most {:.0}% of each pruning event)",
                100.0 * r.ap_share
            )
        } else {
            format!(
                " (AP takes at most {:.0}% of each pruning event and 2.5% of its survivors)",
                100.0 * r.ap_share
            )
        }
    });
    let target = of
        .label
        .strip_prefix(method)
        .filter(|t| !t.is_empty())
        .unwrap_or_default();
    let variant_label = if variant.is_empty() {
        String::new()
    } else {
        format!(" [ablation: {variant}]")
    };
    let _ = writeln!(
        s,
        "### {model} / {dataset} — {method} vs {method}+AP{target}{variant_label}{} ({} seed{})\n",
        ap_budget.unwrap_or_default(),
        seeds.len(),
        if seeds.len() == 1 { "" } else { "s" }
    );
    s.push_str("| round | density | test acc | test acc +AP | AP gain (pt, paired) | paper reference | dynamic DNR | dynamic DNR +AP | static DNR | static DNR +AP | compact size | compact size +AP | cost: steps, s |\n");
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
}

/// One round's row: accuracy (mean ± std) without and with AP, AP's paired gain, the
/// papers' number, and the DNRs.
fn table_row(
    s: &mut String,
    round: usize,
    density: f64,
    off: &[&SummaryRecord],
    on: &[&SummaryRecord],
    reference: Option<String>,
) {
    let stat = |v: &[&SummaryRecord], f: fn(&SummaryRecord) -> f64| {
        (!v.is_empty()).then(|| mean_std(&v.iter().map(|r| f(r)).collect::<Vec<_>>()))
    };
    let acc = |v: &[&SummaryRecord]| stat(v, |r| 100.0 * r.test_accuracy);
    let fmt_acc =
        |x: Option<(f64, f64)>| x.map_or("—".into(), |(m, sd)| format!("{m:.2} ± {sd:.2}"));
    let fmt = |x: Option<(f64, f64)>| x.map_or("—".into(), |(m, _)| format!("{m:.3}"));
    let pairs = paired_by_seed(off, on, |r| 100.0 * r.test_accuracy);
    let gain = match paired_gain(&pairs) {
        Some((m, _, _)) if pairs.len() == 1 => format!("{m:+.2}"),
        Some((m, sd, clear)) => {
            format!(
                "{m:+.2} ± {sd:.2}{}",
                if clear { "" } else { " (within noise)" }
            )
        }
        None => "—".into(),
    };
    // The cost of the runs without AP (AP's own cost is a few selections per event).
    let runs = if off.is_empty() { on } else { off };
    let cost = match (stat(runs, |r| r.steps as f64), stat(runs, |r| r.seconds)) {
        (Some((steps, _)), Some((secs, _))) if steps > 0.0 => format!("{steps:.0}, {secs:.0}"),
        _ => "—".into(),
    };
    // Parameters of the compacted network (mean over seeds), where the runs measured it.
    let size = |v: &[&SummaryRecord]| {
        let p: Vec<f64> = v
            .iter()
            .filter_map(|r| r.compact_params)
            .map(|p| p as f64)
            .collect();
        if p.is_empty() || p.len() < v.len() {
            "—".to_string()
        } else {
            fmt_count(p.iter().sum::<f64>() / p.len() as f64)
        }
    };
    let _ = writeln!(
        s,
        "| {round} | {:.2}% | {} | {} | {gain} | {} | {} | {} | {} | {} | {} | {} | {cost} |",
        100.0 * density,
        fmt_acc(acc(off)),
        fmt_acc(acc(on)),
        reference.unwrap_or_else(|| "—".into()),
        fmt(stat(off, |r| r.dynamic_dnr)),
        fmt(stat(on, |r| r.dynamic_dnr)),
        fmt(stat(off, |r| r.static_dnr)),
        fmt(stat(on, |r| r.static_dnr)),
        size(off),
        size(on),
    );
}

/// A parameter count in K or M with 3–4 significant digits (`266.6K`, `1.25M`).
fn fmt_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}K", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// The rounds where AP's budget found too few candidates, if any.
fn shortfall_note(s: &mut String, by_round: &BTreeMap<usize, Split>) {
    let short: Vec<String> = by_round
        .iter()
        .filter_map(|(round, (_, on))| {
            let total: i64 = on.iter().map(|r| r.ap_shortfall).sum();
            (total > 0).then(|| {
                let removed: i64 = on.iter().map(|r| r.ap_removed).sum();
                format!(
                    "round {round}: {:.0} of {:.0} (mean over seeds)",
                    total as f64 / on.len() as f64,
                    (total + removed) as f64 / on.len() as f64
                )
            })
        })
        .collect();
    if !short.is_empty() {
        let _ = writeln!(
            s,
            "AP shortfall (AP's budget that found no kept negative weight; the host removed it instead): {}.\n",
            short.join("; ")
        );
    }
}

/// The papers' notes for this table, and which of their numbers the reference column
/// holds (or could not place: no row near that density).
fn reference_notes(s: &mut String, model: &str, dataset: &str, method: &str, densities: &[f64]) {
    for note in reference::notes_for(model, dataset, method) {
        let _ = writeln!(
            s,
            "Paper reference ({}): {}\n",
            note.paper.citation(),
            note.text
        );
    }
    // Entries for this method that found no row are listed too, so a reader sees which
    // paper numbers the grid does not reach; dense numbers (any method) are only listed
    // where placed, since methods that start sparse have no dense row by design.
    let placed: Vec<String> = reference::references_for(model, dataset, method)
        .into_iter()
        .filter_map(|r| {
            let near = reference::nearest_row(densities, r.density).is_some();
            if !near && r.methods.is_empty() {
                return None;
            }
            let at = if near {
                ""
            } else {
                ", no row near this density"
            };
            Some(format!(
                "{} at {} density ({}{at})",
                r.claim,
                percent(r.density),
                r.paper.short()
            ))
        })
        .collect();
    if !placed.is_empty() {
        let _ = writeln!(s, "Reference column entries: {}.\n", placed.join("; "));
    }
}

/// A density in %, with decimals only where the papers' densities have them.
fn percent(d: f64) -> String {
    let p = 100.0 * d;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Writes summary.json, summary.csv, the plots (`acc-*.svg`, `dnr-*.svg`, see [`plot`]) and
/// report.md, which links the plots, into `out` (each file atomically); returns the markdown.
pub fn write_report(out: &Path, records: &[SummaryRecord], title: &str) -> Result<String> {
    std::fs::create_dir_all(out)?;
    write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(records)?.as_bytes(),
    )?;
    let mut csv = String::from("method,ap,ap_rate,ap_share,prune_rate,dataset,model,ap_variant,ap_removed,ap_shortfall,seed,run_key,round,density,test_accuracy,test_loss,dynamic_dnr,static_dnr,train_dynamic_dnr,train_static_dnr,steps,compact_params\n");
    for r in records {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},\"{}\",{},{},{},{},{},{:.6},{:.4},{:.5},{:.5},{:.5},{:.5},{:.5},{},{}",
            r.method,
            r.ap,
            r.ap_rate,
            r.ap_share,
            r.prune_rate,
            r.dataset,
            r.model,
            r.ap_variant,
            r.ap_removed,
            r.ap_shortfall,
            r.seed,
            r.run_key,
            r.round,
            r.density,
            r.test_accuracy,
            r.test_loss,
            r.dynamic_dnr,
            r.static_dnr,
            r.train_dynamic_dnr,
            r.train_static_dnr,
            r.steps,
            r.compact_params.map_or(String::new(), |p| p.to_string())
        );
    }
    write_atomic(&out.join("summary.csv"), csv.as_bytes())?;
    // Plots show each method with and without its default AP; ablations are in the tables.
    let main: Vec<SummaryRecord> = records
        .iter()
        .filter(|r| r.ap_variant.is_empty())
        .cloned()
        .collect();
    let plots = plot::write_plots(&main, out)?;
    let md = markdown_with_plots(records, title, &plots);
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    Ok(md)
}

/// A record for tests: `method` (with AP at 2 % and a 10 % share when `ap`) at prune rate
/// 0.2 on LeNet-300-100 / MNIST, seed `seed`, round `round` at density 0.8^round, test
/// loss 0.1; the accuracy and DNRs are 0 for the caller to set.
#[cfg(test)]
pub(crate) fn test_record(method: &str, ap: bool, seed: u64, round: usize) -> SummaryRecord {
    SummaryRecord {
        method: method.into(),
        ap,
        ap_rate: if ap { 0.02 } else { 0.0 },
        ap_share: if ap { 0.1 } else { 0.0 },
        prune_rate: 0.2,
        dataset: "mnist".into(),
        model: "lenet300-100".into(),
        ap_variant: String::new(),
        ap_removed: 0,
        ap_shortfall: 0,
        seed,
        run_key: "k".into(),
        round,
        density: 0.8f64.powi(round as i32),
        test_accuracy: 0.0,
        test_loss: 0.1,
        dynamic_dnr: 0.0,
        static_dnr: 0.0,
        train_dynamic_dnr: 0.0,
        train_static_dnr: 0.0,
        steps: 0,
        compact_params: None,
        seconds: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ap: bool, seed: u64, round: usize, acc: f64, dnr: f64) -> SummaryRecord {
        SummaryRecord {
            test_accuracy: acc,
            dynamic_dnr: dnr,
            static_dnr: dnr / 2.0,
            train_dynamic_dnr: dnr,
            ..test_record("imp", ap, seed, round)
        }
    }

    /// The cost column: mean steps and seconds of the runs without AP; "—" where the
    /// records carry none (summaries written before the field).
    #[test]
    fn cost_column_is_the_mean_of_the_runs_without_ap() {
        let cost = |ap, seed, steps, seconds| SummaryRecord {
            steps,
            seconds,
            ..rec(ap, seed, 1, 0.9, 0.5)
        };
        let rs = vec![
            cost(false, 0, 4000, 10.0),
            cost(false, 1, 4000, 14.0),
            cost(true, 0, 9000, 99.0),
            cost(true, 1, 9000, 99.0),
        ];
        let md = markdown(&rs, "t");
        assert!(md.contains("| 4000, 12 |"), "{md}");
        let old = vec![rec(false, 0, 1, 0.9, 0.5)];
        let md = markdown(&old, "t");
        let row = md.lines().find(|l| l.starts_with("| 1 | ")).unwrap();
        assert!(row.ends_with("| — |"), "{row}");
    }

    /// The compact-size columns: the mean over seeds without and with AP, "—" where a
    /// record lacks it.
    #[test]
    fn compact_size_columns() {
        let sized = |ap, seed, p| SummaryRecord {
            compact_params: p,
            ..rec(ap, seed, 1, 0.9, 0.5)
        };
        let rs = vec![
            sized(false, 0, Some(200_000)),
            sized(false, 1, Some(201_400)),
            sized(true, 0, Some(180_000)),
            sized(true, 1, None),
        ];
        let md = markdown(&rs, "t");
        let row = md.lines().find(|l| l.starts_with("| 1 | ")).unwrap();
        assert!(row.contains("| 200.7K | — |"), "{row}");
        assert!(fmt_count(1_250_000.0) == "1.25M" && fmt_count(950.0) == "950");
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
            md.contains("| 1 | 80.00% | 98.00 ± 1.41 | 99.00 ± 0.00 | +1.00 ± 1.41 (within noise) | — | 0.600 | 0.400 |"),
            "{md}"
        );
        assert!(md.contains("Frankle & Carbin"));
        assert!(
            !md.contains("!["),
            "no plots were written, so none are linked"
        );
    }

    /// Paired differences by hand: +1, +2, +3 points → mean 2, sd 1; the 95% t-interval
    /// 2 ± 4.303 · 1/√3 = 2 ± 2.48 contains 0. Five pairs +1.9..+2.1 → clearly positive.
    #[test]
    fn paired_gain_and_its_noise_mark() {
        let (m, sd, clear) = paired_gain(&[(90.0, 91.0), (90.0, 92.0), (90.0, 93.0)]).unwrap();
        assert!((m - 2.0).abs() < 1e-12 && (sd - 1.0).abs() < 1e-12 && !clear);
        let tight = [(1.0, 2.9), (1.0, 3.0), (1.0, 3.1), (1.0, 3.0), (1.0, 3.0)];
        assert!(paired_gain(&tight).unwrap().2);
        assert!(
            !paired_gain(&[(1.0, 5.0)]).unwrap().2,
            "one pair is never clear"
        );
        assert!(paired_gain(&[]).is_none());
        // Ablation variants get their own table against the same runs without AP, and a
        // shortfall is reported.
        let mut rs = vec![rec(false, 0, 1, 0.97, 0.5), rec(true, 0, 1, 0.98, 0.4)];
        let mut v = rec(true, 0, 1, 0.96, 0.4);
        v.ap_variant = "in_drop_and_grow".into();
        v.ap_shortfall = 7;
        v.ap_removed = 3;
        rs.push(v);
        let md = markdown(&rs, "t");
        assert_eq!(
            md.matches("### lenet300-100 / mnist — imp vs imp+AP")
                .count(),
            2,
            "{md}"
        );
        assert!(md.contains("[ablation: in_drop_and_grow]"), "{md}");
        assert!(md.contains("| +1.00 |") && md.contains("| -1.00 |"), "{md}");
        assert!(md.contains("round 1: 7 of 10"), "{md}");
    }

    #[test]
    fn reference_column_on_dense_row_only_near_papers_densities() {
        let rs: Vec<SummaryRecord> = (0..=16)
            .flat_map(|round| {
                [
                    rec(false, 0, round, 0.98, 0.5),
                    rec(true, 0, round, 0.98, 0.5),
                ]
            })
            .collect();
        let md = markdown(&rs, "t");
        let row = |round: usize| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {round} | ")))
                .unwrap()
                .split(" | ")
                .nth(5)
                .unwrap()
                .to_string()
        };
        assert_eq!(row(0), "≈ 98.0", "{md}");
        assert_eq!(row(3), "—", "51.2% density: the paper gives no number");
        assert_eq!(row(9), "dense +0.3");
        assert_eq!(row(15), "≥ dense");
        assert!(md.contains(
            "| round | density | test acc | test acc +AP | AP gain (pt, paired) | paper reference |"
        ));
        assert!(
            md.contains("Reference column entries: ≈ 98.0 at 100% density (Frankle & Carbin 2019)")
        );
    }

    #[test]
    fn write_report_writes_and_links_plots() {
        let mut rs: Vec<SummaryRecord> = (0..4).map(|r| rec(false, 0, r, 0.97, 0.5)).collect();
        rs.extend((0..4).map(|r| {
            let mut x = rec(false, 0, r, 0.9, 0.6);
            x.model = "resnet20".into();
            x.dataset = "cifar10".into();
            x.density = 1.0;
            x
        }));
        let dir = tempfile::tempdir().unwrap();
        let plots = plot::write_plots(&rs, dir.path()).unwrap();
        assert_eq!(plots.len(), 4);
        let md = markdown_with_plots(&rs, "t", &plots);
        for name in [
            "acc-lenet300-100-mnist.svg",
            "dnr-lenet300-100-mnist.svg",
            "acc-resnet20-cifar10.svg",
            "dnr-resnet20-cifar10.svg",
        ] {
            assert!(md.contains(&format!("]({name})")), "{name}: {md}");
            assert!(dir.path().join(name).is_file());
        }
        // Sections per model × dataset, with the method tables inside.
        let lenet = md.find("## lenet300-100 / mnist\n").unwrap();
        let resnet = md.find("## resnet20 / cifar10\n").unwrap();
        let table = md.find("### resnet20 / cifar10 — imp").unwrap();
        assert!(lenet < resnet && resnet < table);
        // The dense ResNet-20 number, and AP's headline as a note for CIFAR.
        assert!(
            md.contains("| ≈ dense |") || md.contains("| 91.7 |"),
            "{md}"
        );
        assert!(md.contains("+3–4 points"));
    }
}
