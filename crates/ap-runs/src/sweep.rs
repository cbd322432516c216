//! `ap sweep`: the essential-sparsity curve of a finished run (Jaiswal et al. 2023).
//!
//! Loads the run's final network and mask, prunes it one-shot by global magnitude at each
//! sparsity without retraining ([`ap_eval::sweep::one_shot_sweep`]) and to each N:M
//! pattern ([`ap_eval::sweep::nm_sweep`]), finds each series' tolerance and curvature
//! knees, and writes `sweep.json`, `sweep.md` and `sweep.svg` (each
//! atomically). See docs/methods.md, "Essential sparsity: `ap sweep`".

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ap_eval::sweep::{curvature_knee, nm_sweep, one_shot_sweep, tolerance_knee, SweepPoint};
use ap_mask::NmPattern;
use ap_tensor::NamedParams;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::runner::{FinishedNetwork, RunOptions};
use crate::store::write_atomic;

/// A knee of the curve: which point, by which rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knee {
    /// Index into the points.
    pub index: usize,
    /// The point's N:M pattern (N:M series, not at its reference point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Its sparsity (fraction asked for).
    pub sparsity: f64,
    /// Its test accuracy (fraction).
    pub accuracy: f64,
}

/// What `sweep.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The run's spec key.
    pub key: String,
    /// The run's resolved spec.
    pub spec_path: PathBuf,
    /// The run's final test accuracy, as recorded.
    pub run_accuracy: f64,
    /// Prunable weights the run's final mask keeps.
    pub run_kept: i64,
    /// The tolerance of the tolerance knee, in accuracy points (percent).
    pub tolerance_points: f64,
    /// One point per sparsity, in the order given (increasing).
    pub points: Vec<SweepPoint>,
    /// The last point within `tolerance_points` of the first point's accuracy.
    pub tolerance_knee: Knee,
    /// The point of maximum curvature (Kneedle).
    pub curvature_knee: Knee,
    /// The N:M series (absent with `--patterns none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nm: Option<NmSeries>,
}

/// The N:M series of `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NmSeries {
    /// First the reference, the run's network unpruned by the sweep (sparsity 0, no
    /// pattern: the unstructured sparsity-0 point, or evaluated alone when 0 is not in the
    /// sparsities), then one point per pattern in the order given (increasing nominal
    /// sparsity 1 − N/M).
    pub points: Vec<SweepPoint>,
    /// Layers each M leaves dense (rows not a multiple of M), for the Ms that leave any.
    pub dense_layers: Vec<DenseLayers>,
    /// The last point within `tolerance_points` of the reference's accuracy.
    pub tolerance_knee: Knee,
    /// The point of maximum curvature (Kneedle), the reference included.
    pub curvature_knee: Knee,
}

/// The prunable layers that a group size M leaves dense.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseLayers {
    /// The group size.
    pub m: i64,
    /// The layers (prunable tensor names) whose rows are not a multiple of `m`.
    pub layers: Vec<String>,
}

/// Parses `--sparsities`: comma-separated percentages, each in [0, 100), strictly
/// increasing; returns fractions. The error names the value and the fix.
pub fn parse_sparsities(text: &str) -> Result<Vec<f64>> {
    let fix = "give comma-separated percentages in [0, 100), strictly increasing, e.g. --sparsities 0,50,90,99";
    let mut out: Vec<f64> = vec![];
    for part in text.split(',') {
        let part = part.trim();
        let Ok(p) = part.parse::<f64>() else {
            bail!("--sparsities {text}: `{part}` is not a number; {fix}");
        };
        if !(0.0..100.0).contains(&p) {
            bail!("--sparsities {text}: {part} is outside [0, 100); {fix}");
        }
        if out.last().is_some_and(|&last| p / 100.0 <= last) {
            bail!("--sparsities {text}: {part} does not increase on the value before it; {fix}");
        }
        out.push(p / 100.0);
    }
    Ok(out)
}

/// Parses `--patterns`: comma-separated N:M patterns in non-decreasing nominal sparsity
/// 1 − N/M, no pattern twice; `none` gives no pattern (no N:M series). The error names
/// the value and the fix.
pub fn parse_patterns(text: &str) -> Result<Vec<NmPattern>> {
    let fix = "give comma-separated N:M patterns in increasing sparsity 1 − N/M, e.g. --patterns 7:8,3:4,2:4,1:4, or --patterns none";
    if text.trim() == "none" {
        return Ok(vec![]);
    }
    let mut out: Vec<NmPattern> = vec![];
    for part in text.split(',') {
        let p: NmPattern = match part.trim().parse() {
            Ok(p) => p,
            Err(e) => bail!("--patterns {text}: {e}; {fix}"),
        };
        if out.contains(&p) {
            bail!("--patterns {text}: {p} is given twice; {fix}");
        }
        if out.last().is_some_and(|last| p.density() > last.density()) {
            bail!(
                "--patterns {text}: {p} (sparsity {}) is less sparse than the pattern before it; {fix}",
                pct(1.0 - p.density())
            );
        }
        out.push(p);
    }
    Ok(out)
}

/// Where the sweep reads its data and runs.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Sparsities (fractions, increasing).
    pub sparsities: Vec<f64>,
    /// N:M patterns (increasing nominal sparsity); empty for no N:M series.
    pub patterns: Vec<NmPattern>,
    /// Tolerance of the tolerance knee, in accuracy points.
    pub tolerance_points: f64,
    /// Directory holding `mnist/`, … (as for `ap run`).
    pub data_dir: PathBuf,
    /// Device to evaluate on.
    pub device: Device,
}

/// The sweep of the finished run in `run_dir`. Errors name the directory and the fix
/// when it is not a run or not finished.
pub fn sweep_run(run_dir: &Path, opts: &SweepOptions) -> Result<SweepReport> {
    let run_opts = RunOptions::quiet(opts.data_dir.clone(), opts.device);
    let FinishedNetwork {
        spec,
        data,
        model,
        mask,
        records,
        ..
    } = FinishedNetwork::load(run_dir, "sweep", &run_opts)?;
    let last = records
        .last()
        .with_context(|| format!("{}: no round record", run_dir.display()))?;
    let prunable = NamedParams::from_var_store(&model.vs, &model.net.prunable())?;
    let dense_layers = check_patterns(&opts.patterns, &prunable, spec.model)?;
    let masks = mask.tensors();
    let (images, labels) = (&data.test.images, &data.test.labels);
    let points = one_shot_sweep(
        &model,
        &masks,
        images,
        labels,
        spec.eval_batch_size,
        &opts.sparsities,
    )?;
    let tolerance = opts.tolerance_points / 100.0;
    let (tolerance_knee, curvature_knee) = knees(&points, tolerance)?;
    let nm = if opts.patterns.is_empty() {
        None
    } else {
        // The reference: the run's network as the sweep found it.
        let reference = match points.first() {
            Some(p) if p.sparsity == 0.0 => p.clone(),
            _ => one_shot_sweep(&model, &masks, images, labels, spec.eval_batch_size, &[0.0])?
                .remove(0),
        };
        let mut series = vec![reference];
        series.extend(nm_sweep(
            &model,
            &masks,
            images,
            labels,
            spec.eval_batch_size,
            &opts.patterns,
        )?);
        let (tolerance_knee, curvature_knee) = knees(&series, tolerance)?;
        Some(NmSeries {
            points: series,
            dense_layers,
            tolerance_knee,
            curvature_knee,
        })
    };
    Ok(SweepReport {
        run_dir: run_dir.to_path_buf(),
        key: spec.key(),
        spec_path: run_dir.join("spec.toml"),
        run_accuracy: last.test.accuracy,
        run_kept: mask.kept(),
        tolerance_points: opts.tolerance_points,
        tolerance_knee,
        curvature_knee,
        points,
        nm,
    })
}

/// The tolerance knee (`tolerance` a fraction) and the curvature knee of `points`.
fn knees(points: &[SweepPoint], tolerance: f64) -> Result<(Knee, Knee)> {
    let curve: Vec<(f64, f64)> = points.iter().map(|p| (p.sparsity, p.accuracy)).collect();
    let knee = |i: Option<usize>| -> Result<Knee> {
        let index = i.context("no sparsity to sweep")?;
        Ok(Knee {
            index,
            pattern: points[index].pattern.clone(),
            sparsity: points[index].sparsity,
            accuracy: points[index].accuracy,
        })
    };
    Ok((
        knee(tolerance_knee(&curve, tolerance))?,
        knee(curvature_knee(&curve))?,
    ))
}

/// Checks that every pattern fits at least one prunable layer of `model` (an error naming
/// the model and M otherwise) and returns, per M that leaves layers dense, those layers.
fn check_patterns(
    patterns: &[NmPattern],
    prunable: &NamedParams,
    model: ap_models::ModelKind,
) -> Result<Vec<DenseLayers>> {
    let mut out: Vec<DenseLayers> = vec![];
    for p in patterns {
        let dense: Vec<String> = prunable
            .iter()
            .filter(|(_, t)| !p.fits(&t.size()))
            .map(|(n, _)| n.to_string())
            .collect();
        if dense.len() == prunable.len() {
            let rows: Vec<String> = prunable
                .iter()
                .map(|(n, t)| format!("{n} {}", t.size()[1..].iter().product::<i64>()))
                .collect();
            bail!(
                "--patterns: {p} fits no prunable layer of {model}: no row (every dimension but the first; {}) is a multiple of M = {}; choose an M that divides a row, e.g. 2:4, or --patterns none",
                rows.join(", "),
                p.m
            );
        }
        if !dense.is_empty() && !out.iter().any(|d| d.m == p.m) {
            out.push(DenseLayers {
                m: p.m,
                layers: dense,
            });
        }
    }
    Ok(out)
}

/// The markdown tables of the points (knees marked), the layers the patterns leave dense
/// and the knees' rules.
pub fn markdown(r: &SweepReport) -> String {
    let mut s = format!(
        "# Essential sparsity: {}\n\nOne-shot global magnitude pruning of the final network, no retraining; \
         the run keeps {} prunable weights, test accuracy {:.2}%.\n\n\
         | sparsity | achieved | kept | test acc (%) | loss | dynamic DNR | static DNR | knee |\n\
         |---:|---:|---:|---:|---:|---:|---:|---|\n",
        r.run_dir.display(),
        r.run_kept,
        100.0 * r.run_accuracy
    );
    for (i, p) in r.points.iter().enumerate() {
        s += &format!(
            "| {} | {}\n",
            pct(p.sparsity),
            row(p, i, &r.tolerance_knee, &r.curvature_knee)
        );
    }
    s += &format!(
        "\n- tolerance knee (last sparsity within {} points of the first point's accuracy): {} ({:.2}%)\n\
         - curvature knee (Kneedle: farthest above the chord, axes normalised): {} ({:.2}%)\n",
        r.tolerance_points,
        pct(r.tolerance_knee.sparsity),
        100.0 * r.tolerance_knee.accuracy,
        pct(r.curvature_knee.sparsity),
        100.0 * r.curvature_knee.accuracy,
    );
    if let Some(nm) = &r.nm {
        s += "\n## N:M patterns\n\nOne-shot N:M magnitude pruning of the same network, no retraining: in every group \
              of M consecutive weights along a layer's input dimension the N largest |w| stay, of \
              them those the run kept. The first row is the reference, the run's network.\n\n\
              | pattern | nominal | achieved | kept | test acc (%) | loss | dynamic DNR | static DNR | knee |\n\
              |---|---:|---:|---:|---:|---:|---:|---:|---|\n";
        for (i, p) in nm.points.iter().enumerate() {
            s += &format!(
                "| {} | {} | {}\n",
                p.pattern.as_deref().unwrap_or("none (the run)"),
                pct(p.sparsity),
                row(p, i, &nm.tolerance_knee, &nm.curvature_knee)
            );
        }
        s += "\n";
        for d in &nm.dense_layers {
            s += &format!(
                "- left dense by M = {} (rows not a multiple of {}): {}\n",
                d.m,
                d.m,
                d.layers.join(", ")
            );
        }
        let name = |k: &Knee| match &k.pattern {
            Some(p) => format!(
                "{p} (nominal {}, {:.2}%)",
                pct(k.sparsity),
                100.0 * k.accuracy
            ),
            None => format!(
                "none of the patterns ({:.2}% at the reference)",
                100.0 * k.accuracy
            ),
        };
        s += &format!(
            "- N:M tolerance knee (last point within {} points of the reference's accuracy): {}\n\
             - N:M curvature knee (Kneedle, the reference included): {}\n",
            r.tolerance_points,
            name(&nm.tolerance_knee),
            name(&nm.curvature_knee),
        );
    }
    s
}

/// A table row from the achieved sparsity on, with the knee marks of point `i`.
fn row(p: &SweepPoint, i: usize, tolerance: &Knee, curvature: &Knee) -> String {
    let mut marks = vec![];
    if i == tolerance.index {
        marks.push("tolerance");
    }
    if i == curvature.index {
        marks.push("curvature");
    }
    format!(
        "{:.2}% | {} | {:.2} | {:.4} | {:.3} | {:.3} | {} |",
        100.0 * p.achieved_sparsity,
        p.kept,
        100.0 * p.accuracy,
        p.loss,
        p.dnr_dynamic,
        p.dnr_static,
        marks.join(", ")
    )
}

/// A sparsity fraction as a percentage with no more decimals than it has (0.925 → 92.5%).
fn pct(s: f64) -> String {
    format!("{}%", (100_000.0 * s).round() / 1000.0)
}

/// Writes `sweep.json`, `sweep.md` and `sweep.svg` into `out` (created if needed), each
/// atomically; returns the markdown.
pub fn write_sweep(r: &SweepReport, out: &Path) -> Result<String> {
    use ap_report::plot::{render_sweep, SweepLine};
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(
        &out.join("sweep.json"),
        serde_json::to_string_pretty(r)?.as_bytes(),
    )?;
    let md = markdown(r);
    write_atomic(&out.join("sweep.md"), md.as_bytes())?;
    let curve = |points: &[SweepPoint]| -> Vec<(f64, f64)> {
        points
            .iter()
            .map(|p| (100.0 * p.sparsity, 100.0 * p.accuracy))
            .collect()
    };
    let unstructured = curve(&r.points);
    let mut lines = vec![SweepLine {
        label: "unstructured (global magnitude)",
        points: &unstructured,
        knees: vec![
            ("tolerance knee".into(), 100.0 * r.tolerance_knee.sparsity),
            ("curvature knee".into(), 100.0 * r.curvature_knee.sparsity),
        ],
    }];
    let nm_curve = r.nm.as_ref().map(|nm| curve(&nm.points));
    if let (Some(nm), Some(points)) = (&r.nm, &nm_curve) {
        let label = |rule: &str, k: &Knee| {
            let at = k.pattern.as_deref().unwrap_or("reference");
            (format!("N:M {rule} knee ({at})"), 100.0 * k.sparsity)
        };
        lines.push(SweepLine {
            label: "N:M (nominal sparsity 1 − N/M)",
            points,
            knees: vec![
                label("tolerance", &nm.tolerance_knee),
                label("curvature", &nm.curvature_knee),
            ],
        });
    }
    let caption = r
        .run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let svg = render_sweep(&lines, &caption)?;
    write_atomic(&out.join("sweep.svg"), svg.as_bytes())?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparsities_parse_as_fractions_and_bad_lists_name_the_value() {
        assert_eq!(parse_sparsities("0, 50,90").unwrap(), vec![0.0, 0.5, 0.9]);
        for (bad, why) in [
            ("0,x", "`x` is not a number"),
            ("0,100", "outside [0, 100)"),
            ("-1", "outside [0, 100)"),
            ("50,40", "does not increase"),
            ("50,50", "does not increase"),
        ] {
            let e = parse_sparsities(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("--sparsities {bad}")) && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn patterns_parse_in_order_and_bad_lists_name_the_value_and_the_fix() {
        let ps = parse_patterns("7:8, 3:4,2:4,4:8").unwrap();
        let text: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
        assert_eq!(text, ["7:8", "3:4", "2:4", "4:8"]);
        assert!(parse_patterns("none").unwrap().is_empty());
        let defaults: Vec<String> = ap_eval::sweep::DEFAULT_PATTERNS
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(parse_patterns(&defaults.join(",")).unwrap().len(), 7);
        for (bad, why) in [
            ("2-4", "no ':'"),
            ("2:4,4:2", "\"4:2\""),
            ("0:4", "out of range"),
            ("2:x", "M is not a whole number"),
            ("1:65", "out of range"),
            ("2:4,", "no ':'"),
            ("2:4,3:4", "less sparse"),
            ("2:4,2:4", "twice"),
        ] {
            let e = parse_patterns(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("--patterns {bad}"))
                    && e.contains(why)
                    && e.contains("--patterns none"),
                "{e}"
            );
        }
    }
}
