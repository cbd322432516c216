//! Reports: `summary.json` / `summary.csv` (one record per run × round), SVG plots per
//! model × dataset ([`crate::plot`]) and `report.md` (per model × dataset, the plots and one
//! table per method: accuracy and DNR with and without AP by density, next to the papers'
//! numbers from [`crate::reference`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use ap_prune::RoundRecord;
use serde::{Deserialize, Serialize};

use crate::plot::{self, Metric};
use crate::reference;
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
    let mut groups: BTreeMap<(&str, &str), BTreeMap<&str, Vec<&SummaryRecord>>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.model.as_str(), r.dataset.as_str()))
            .or_default()
            .entry(r.method.as_str())
            .or_default()
            .push(r);
    }
    let written: BTreeSet<String> = plots
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut s = format!("# {title}\n\n");
    for ((model, dataset), methods) in groups {
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
                "\nSolid: without AP; dashed: with AP; one colour per method; mean over seeds.\n\n",
            );
        }
        for (method, rs) in methods {
            method_table(&mut s, model, dataset, method, &rs);
        }
    }
    let _ = writeln!(
        s,
        "Accuracy: final-phase test accuracy in %, mean ± sample std over seeds. DNR: dead neuron rate on the test set in eval mode (ap-spec §2). \
         Paper reference: the papers' number for that model, dataset and method (without AP) at the row's density — \
         placed in the nearest row within a factor {} of the paper's density, \"—\" elsewhere; \
         \"dense +x\" is the paper's gain over its own dense network.",
        reference::DENSITY_TOLERANCE
    );
    s
}

/// One method's table (rows by round) and the notes under it.
fn method_table(s: &mut String, model: &str, dataset: &str, method: &str, rs: &[&SummaryRecord]) {
    let seeds: BTreeSet<u64> = rs.iter().map(|r| r.seed).collect();
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
        "### {model} / {dataset} — {method} vs {method}+AP{} ({} seed{})\n",
        ap_budget.unwrap_or_default(),
        seeds.len(),
        if seeds.len() == 1 { "" } else { "s" }
    );
    s.push_str("| round | density | test acc | test acc +AP | AP gain (pt) | paper reference | dynamic DNR | dynamic DNR +AP | static DNR | static DNR +AP |\n");
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    type Split<'a> = (Vec<&'a SummaryRecord>, Vec<&'a SummaryRecord>);
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
    let stat = |v: &[&SummaryRecord], f: fn(&SummaryRecord) -> f64| {
        (!v.is_empty()).then(|| mean_std(&v.iter().map(|r| f(r)).collect::<Vec<_>>()))
    };
    let acc = |v: &[&SummaryRecord]| stat(v, |r| 100.0 * r.test_accuracy);
    let fmt_acc =
        |x: Option<(f64, f64)>| x.map_or("—".into(), |(m, sd)| format!("{m:.2} ± {sd:.2}"));
    let fmt = |x: Option<(f64, f64)>| x.map_or("—".into(), |(m, _)| format!("{m:.3}"));
    for (((round, (off, on)), density), reference) in by_round.iter().zip(&densities).zip(refs) {
        let (a0, a1) = (acc(off), acc(on));
        let gain = match (a0, a1) {
            (Some((m0, _)), Some((m1, _))) => format!("{:+.2}", m1 - m0),
            _ => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {round} | {:.2}% | {} | {} | {gain} | {} | {} | {} | {} | {} |",
            100.0 * density,
            fmt_acc(a0),
            fmt_acc(a1),
            reference.unwrap_or_else(|| "—".into()),
            fmt(stat(off, |r| r.dynamic_dnr)),
            fmt(stat(on, |r| r.dynamic_dnr)),
            fmt(stat(off, |r| r.static_dnr)),
            fmt(stat(on, |r| r.static_dnr)),
        );
    }
    s.push('\n');
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
            let near = reference::nearest_row(&densities, r.density).is_some();
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
    let plots = plot::write_plots(&records, out)?;
    let md = markdown_with_plots(&records, title, &plots);
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
            md.contains("| 1 | 80.00% | 98.00 ± 1.41 | 99.00 ± 0.00 | +1.00 | — | 0.600 | 0.400 |"),
            "{md}"
        );
        assert!(md.contains("Frankle & Carbin"));
        assert!(
            !md.contains("!["),
            "no plots were written, so none are linked"
        );
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
            "| round | density | test acc | test acc +AP | AP gain (pt) | paper reference |"
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
