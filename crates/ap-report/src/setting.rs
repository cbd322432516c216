//! Settings of a grid: which runs belong together in a table row, a plot line or a paired
//! comparison, and the final-density table that compares every setting with and without AP.
//!
//! A method's name alone does not identify a setting: a grid may run GMP to 2% and to 1%,
//! whose round indices coincide, so grouping by method would average the two. A setting is
//! the method and the final density its runs reach; the label names the density only where
//! one method reaches several.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::report::{mean_std, paired_by_seed, paired_gain, SummaryRecord};

/// One run's identity among the records of a report.
type RunId<'a> = (&'a str, &'a str, &'a str, &'a str, bool, &'a str, u64);

fn run_id(r: &SummaryRecord) -> RunId<'_> {
    (
        r.model.as_str(),
        r.dataset.as_str(),
        r.method.as_str(),
        r.run_key.as_str(),
        r.ap,
        r.ap_variant.as_str(),
        r.seed,
    )
}

/// The density of each run's last round.
fn final_densities<'a>(records: &[&'a SummaryRecord]) -> BTreeMap<RunId<'a>, (usize, f64)> {
    let mut last: BTreeMap<RunId, (usize, f64)> = BTreeMap::new();
    for r in records {
        let e = last.entry(run_id(r)).or_insert((r.round, r.density));
        if r.round >= e.0 {
            *e = (r.round, r.density);
        }
    }
    last
}

/// A final density as a label: `2.00%`.
fn density_label(d: f64) -> String {
    format!("{:.2}%", 100.0 * d)
}

/// The setting label of each record, in order: the method's name, followed by ` → ` and
/// its runs' final density where the same model, data set and method reach more than one
/// final density in `records` (`gmp → 2.00%`, `gmp → 1.00%`).
pub fn setting_labels(records: &[&SummaryRecord]) -> Vec<String> {
    labels_with(records, &final_densities(records))
}

/// [`setting_labels`], given each run's last round and density ([`final_densities`]).
fn labels_with(records: &[&SummaryRecord], last: &BTreeMap<RunId, (usize, f64)>) -> Vec<String> {
    let mut targets: BTreeMap<(&str, &str, &str), BTreeSet<String>> = BTreeMap::new();
    for (id, (_, d)) in last {
        targets
            .entry((id.0, id.1, id.2))
            .or_default()
            .insert(density_label(*d));
    }
    records
        .iter()
        .map(|r| {
            let several = targets
                .get(&(r.model.as_str(), r.dataset.as_str(), r.method.as_str()))
                .is_some_and(|t| t.len() > 1);
            if several {
                format!("{} → {}", r.method, density_label(last[&run_id(r)].1))
            } else {
                r.method.clone()
            }
        })
        .collect()
}

/// Runs at their final round, by setting and AP variant: (without AP, with AP).
type Finals<'a> = BTreeMap<(String, String), (Vec<&'a SummaryRecord>, Vec<&'a SummaryRecord>)>;

/// The final-density table of one model × data set: a row per setting and AP variant
/// (the p_AP sweep and ablations included) with accuracy and dynamic and static DNR
/// without and with AP (mean ± sample std over seeds) and the paired differences (AP − no
/// AP, same seed). Every AP variant is paired with the same runs without AP.
pub fn final_table(s: &mut String, records: &[&SummaryRecord]) {
    let last = final_densities(records);
    let labels = labels_with(records, &last);
    let mut finals: Finals = BTreeMap::new();
    let mut variants: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (r, label) in records.iter().zip(&labels) {
        if last[&run_id(r)].0 != r.round {
            continue;
        }
        if r.ap {
            variants
                .entry(label.clone())
                .or_default()
                .insert(&r.ap_variant);
        }
        let e = finals
            .entry((label.clone(), r.ap_variant.clone()))
            .or_default();
        if r.ap {
            e.1.push(r)
        } else {
            e.0.push(r)
        }
    }
    s.push_str("### At the final density: every setting with and without AP\n\n");
    s.push_str("| setting | AP variant | density | seeds | test acc | test acc +AP | AP gain (pt, paired) | dynamic DNR | +AP | Δ (paired) | static DNR | +AP | Δ (paired) |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (label, vs) in &variants {
        let off = finals
            .get(&(label.clone(), String::new()))
            .map(|e| e.0.clone())
            .unwrap_or_default();
        for v in vs {
            let on = &finals[&(label.clone(), v.to_string())].1;
            final_row(s, label, v, &off, on);
        }
    }
    // Settings run without AP only.
    for ((label, _), (off, _)) in &finals {
        if !off.is_empty() && !variants.contains_key(label) {
            final_row(s, label, "", off, &[]);
        }
    }
    s.push_str(
        "\nAccuracy in %, mean ± sample std over seeds; paired differences: mean ± sample std of \
         (with AP − without AP) over seeds, **bold** where the 95% t-interval excludes 0. \
         DNR on the test set in eval mode. AP variant: AP's settings that differ from the \
         defaults (the p_AP sweep and ablations); \"default\" is AP as released.\n\n",
    );
}

/// One row of [`final_table`].
fn final_row(
    s: &mut String,
    label: &str,
    variant: &str,
    off: &[&SummaryRecord],
    on: &[&SummaryRecord],
) {
    let stat = |v: &[&SummaryRecord], f: fn(&SummaryRecord) -> f64, pct: bool| {
        if v.is_empty() {
            return "—".to_string();
        }
        let (m, sd) = mean_std(&v.iter().map(|r| f(r)).collect::<Vec<_>>());
        if pct {
            format!("{m:.2} ± {sd:.2}")
        } else {
            format!("{m:.3}")
        }
    };
    let paired = |f: fn(&SummaryRecord) -> f64, digits: usize| {
        let pairs = paired_by_seed(off, on, f);
        match paired_gain(&pairs) {
            Some((m, sd, clear)) if pairs.len() > 1 => {
                let t = format!("{m:+.digits$} ± {sd:.digits$}");
                if clear {
                    format!("**{t}**")
                } else {
                    t
                }
            }
            Some((m, _, _)) => format!("{m:+.digits$}"),
            None => "—".into(),
        }
    };
    let acc = |r: &SummaryRecord| 100.0 * r.test_accuracy;
    let density = off.first().or(on.first()).map_or(f64::NAN, |r| r.density);
    let seeds: BTreeSet<u64> = off.iter().chain(on).map(|r| r.seed).collect();
    let variant = match (variant, on.is_empty()) {
        (_, true) => "—",
        ("", false) => "default",
        (v, false) => v,
    };
    let _ = writeln!(
        s,
        "| {label} | {variant} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        density_label(density),
        seeds.len(),
        stat(off, acc, true),
        stat(on, acc, true),
        paired(acc, 2),
        stat(off, |r| r.dynamic_dnr, false),
        stat(on, |r| r.dynamic_dnr, false),
        paired(|r| r.dynamic_dnr, 3),
        stat(off, |r| r.static_dnr, false),
        stat(on, |r| r.static_dnr, false),
        paired(|r| r.static_dnr, 3),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_record;

    /// A GMP run of two records (dense, then `density`) with accuracy `acc`.
    fn run(ap: bool, seed: u64, density: f64, acc: f64, key: &str) -> Vec<SummaryRecord> {
        (0..2)
            .map(|round| SummaryRecord {
                method: "gmp".into(),
                run_key: key.into(),
                density: if round == 0 { 1.0 } else { density },
                test_accuracy: acc,
                dynamic_dnr: if ap { 0.3 } else { 0.4 },
                static_dnr: 0.1,
                ..test_record("gmp", ap, seed, round)
            })
            .collect()
    }

    #[test]
    fn two_targets_of_one_method_are_two_settings() {
        let mut rs = vec![];
        for seed in 0..3 {
            rs.extend(run(false, seed, 0.02, 0.90, &format!("a{seed}")));
            rs.extend(run(
                true,
                seed,
                0.02,
                0.91 + 0.001 * seed as f64,
                &format!("b{seed}"),
            ));
            rs.extend(run(false, seed, 0.01, 0.80, &format!("c{seed}")));
        }
        let refs: Vec<&SummaryRecord> = rs.iter().collect();
        let labels: BTreeSet<String> = setting_labels(&refs).into_iter().collect();
        assert_eq!(
            labels.into_iter().collect::<Vec<_>>(),
            ["gmp → 1.00%", "gmp → 2.00%"]
        );
        let mut s = String::new();
        final_table(&mut s, &refs);
        // 2%: 90.00 vs 91.10 ± 0.10, paired +1.10 ± 0.10 (clear); DNR 0.4 → 0.3.
        assert!(
            s.contains("| gmp → 2.00% | default | 2.00% | 3 | 90.00 ± 0.00 | 91.10 ± 0.10 | **+1.10 ± 0.10** | 0.400 | 0.300 | **-0.100 ± 0.000** |"),
            "{s}"
        );
        // 1% has no AP runs: a row without AP only, and not averaged with 2%.
        assert!(
            s.contains("| gmp → 1.00% | — | 1.00% | 3 | 80.00 ± 0.00 | — | — |"),
            "{s}"
        );
    }

    #[test]
    fn one_target_keeps_the_plain_method_name() {
        let mut rs = run(false, 0, 0.02, 0.9, "a");
        rs.extend(run(true, 0, 0.02, 0.9, "b"));
        let refs: Vec<&SummaryRecord> = rs.iter().collect();
        assert!(setting_labels(&refs).iter().all(|l| l == "gmp"));
    }
}
