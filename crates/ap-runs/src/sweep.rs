//! `ap sweep`: the essential-sparsity curve of a finished run (Jaiswal et al. 2023).
//!
//! Loads the run's final network and mask, prunes it one-shot by global magnitude at each
//! sparsity without retraining ([`ap_eval::sweep::one_shot_sweep`]), finds the tolerance
//! and curvature knees, and writes `sweep.json`, `sweep.md` and `sweep.svg` (each
//! atomically). See docs/methods.md, "Essential sparsity: `ap sweep`".

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ap_eval::sweep::{curvature_knee, one_shot_sweep, tolerance_knee, SweepPoint};
use ap_mask::Mask;
use ap_tensor::NamedParams;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::runner::RunOptions;
use crate::spec::RunSpec;
use crate::store::{write_atomic, RunDir, RunState};

/// A knee of the curve: which point, by which rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knee {
    /// Index into the points.
    pub index: usize,
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

/// Where the sweep reads its data and runs.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Sparsities (fractions, increasing).
    pub sparsities: Vec<f64>,
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
    let spec_path = run_dir.join("spec.toml");
    if !spec_path.is_file() {
        bail!(
            "{} is not a run directory (no spec.toml): pass a directory of the run store, e.g. runs/<method>-<model>-<dataset>-s<seed>-<key>",
            run_dir.display()
        );
    }
    let dir = RunDir {
        path: run_dir.to_path_buf(),
    };
    if dir.state() != RunState::Done {
        bail!(
            "{} is not finished (no valid DONE): finish it with `ap run {}` and sweep again",
            run_dir.display(),
            spec_path.display()
        );
    }
    let spec = RunSpec::read(&spec_path)?;
    let records = dir.rounds()?;
    let last = records
        .last()
        .with_context(|| format!("{}: no round record", run_dir.display()))?;
    let run_opts = RunOptions {
        data_dir: opts.data_dir.clone(),
        device: opts.device,
        progress: false,
        verbose: false,
        deterministic: false,
        log: None,
        report: None,
    };
    let (data, model) = crate::runner::load(&spec, &run_opts)?;
    let everything = NamedParams::all_of(&model.vs);
    let checkpoint = dir.final_checkpoint()?;
    checkpoint
        .restore("model", &everything)
        .with_context(|| format!("restoring the final network of {}", run_dir.display()))?;
    let prunable = NamedParams::from_var_store(&model.vs, &model.net.prunable())?;
    let mask = Mask::load(&run_dir.join("mask.safetensors"), &prunable)?;
    let points = one_shot_sweep(
        &model,
        &mask.tensors(),
        &data.test.images,
        &data.test.labels,
        spec.eval_batch_size,
        &opts.sparsities,
    )?;
    let curve: Vec<(f64, f64)> = points.iter().map(|p| (p.sparsity, p.accuracy)).collect();
    let knee = |i: Option<usize>| -> Result<Knee> {
        let index = i.context("no sparsity to sweep")?;
        Ok(Knee {
            index,
            sparsity: points[index].sparsity,
            accuracy: points[index].accuracy,
        })
    };
    Ok(SweepReport {
        run_dir: run_dir.to_path_buf(),
        key: spec.key(),
        spec_path,
        run_accuracy: last.test.accuracy,
        run_kept: mask.kept(),
        tolerance_points: opts.tolerance_points,
        tolerance_knee: knee(tolerance_knee(&curve, opts.tolerance_points / 100.0))?,
        curvature_knee: knee(curvature_knee(&curve))?,
        points,
    })
}

/// The markdown table of the points (knees marked) and the knees' rules.
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
        let mut marks = vec![];
        if i == r.tolerance_knee.index {
            marks.push("tolerance");
        }
        if i == r.curvature_knee.index {
            marks.push("curvature");
        }
        s += &format!(
            "| {} | {:.2}% | {} | {:.2} | {:.4} | {:.3} | {:.3} | {} |\n",
            pct(p.sparsity),
            100.0 * p.achieved_sparsity,
            p.kept,
            100.0 * p.accuracy,
            p.loss,
            p.dnr_dynamic,
            p.dnr_static,
            marks.join(", ")
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
    s
}

/// A sparsity fraction as a percentage with no more decimals than it has (0.925 → 92.5%).
fn pct(s: f64) -> String {
    format!("{}%", (100_000.0 * s).round() / 1000.0)
}

/// Writes `sweep.json`, `sweep.md` and `sweep.svg` into `out` (created if needed), each
/// atomically; returns the markdown.
pub fn write_sweep(r: &SweepReport, out: &Path) -> Result<String> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(
        &out.join("sweep.json"),
        serde_json::to_string_pretty(r)?.as_bytes(),
    )?;
    let md = markdown(r);
    write_atomic(&out.join("sweep.md"), md.as_bytes())?;
    let curve: Vec<(f64, f64)> = r
        .points
        .iter()
        .map(|p| (100.0 * p.sparsity, 100.0 * p.accuracy))
        .collect();
    let knees = [
        ("tolerance knee", 100.0 * r.tolerance_knee.sparsity),
        ("curvature knee", 100.0 * r.curvature_knee.sparsity),
    ];
    let caption = r
        .run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let svg = ap_report::plot::render_sweep(&curve, &knees, &caption)?;
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
}
