//! Essential sparsity (Jaiswal et al. 2023, "The Emergence of Essential Sparsity in Large
//! Pre-trained Models"): prune a trained network one-shot by global magnitude, without
//! retraining, at increasing sparsity, evaluate each point, and find the knee where
//! accuracy starts to fall.
//!
//! - [`one_shot_sweep`] makes and evaluates the points; the network is restored after
//!   each one, so the caller's model is unchanged.
//! - [`nm_sweep`] does the same for N:M patterns ([`NmPattern`]): one point per pattern,
//!   each keeping the N largest |w| of every group of M consecutive weights.
//! - [`tolerance_knee`] and [`curvature_knee`] find the knee of the accuracy curve (the
//!   paper's code has no knee detection; both rules are this project's, documented on
//!   each function and in docs/methods.md).

use ap_mask::NmPattern;
use ap_models::Model;
use ap_tensor::{select_smallest, NamedParams, SelectError};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{evaluate, EvalReport};

/// The default sparsities of `ap sweep`, as fractions: dense to 80% in steps of 10, then
/// denser steps where trained networks usually break down.
pub const DEFAULT_SPARSITIES: [f64; 18] = [
    0.0, 0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97,
    0.98, 0.99,
];

/// The default N:M patterns of `ap sweep`, in increasing nominal sparsity 1 − N/M:
/// 12.5%, 25%, 37.5%, 50%, 62.5%, 75%, 87.5%.
pub const DEFAULT_PATTERNS: [NmPattern; 7] = [
    NmPattern { n: 7, m: 8 },
    NmPattern { n: 3, m: 4 },
    NmPattern { n: 5, m: 8 },
    NmPattern { n: 2, m: 4 },
    NmPattern { n: 3, m: 8 },
    NmPattern { n: 1, m: 4 },
    NmPattern { n: 1, m: 8 },
];

/// One point of the curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The N:M pattern of a pattern point ([`nm_sweep`], `"2:4"`); absent for an
    /// unstructured point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The sparsity asked for (fraction of prunable weights removed); for a pattern point
    /// its nominal sparsity 1 − N/M.
    pub sparsity: f64,
    /// Prunable weights kept: `min(round((1 − sparsity) · total), kept by the run)`; for a
    /// pattern point, what [`nm_keep`] keeps over all layers.
    pub kept: i64,
    /// Prunable weights in the network.
    pub total: i64,
    /// The sparsity the point has: `1 − kept / total` (above `sparsity` where the run was
    /// already sparser than asked).
    pub achieved_sparsity: f64,
    /// Test accuracy (fraction).
    pub accuracy: f64,
    /// Mean test cross-entropy.
    pub loss: f64,
    /// Whole-network dynamic dead neuron rate on the test set.
    pub dnr_dynamic: f64,
    /// Whole-network static dead neuron rate on the test set.
    pub dnr_static: f64,
}

/// Weights to keep at `sparsity` out of `total`, given that `already` are kept: the
/// largest-magnitude `round((1 − sparsity) · total)`, but never more than the run keeps
/// (pruned weights are 0 and cannot come back without retraining).
pub fn kept_at(sparsity: f64, total: i64, already: i64) -> i64 {
    let k = ((1.0 - sparsity) * total as f64).round() as i64;
    k.clamp(0, total).min(already)
}

/// Prunes a copy of `model`'s prunable weights one-shot by global magnitude at each of
/// `sparsities` (fractions in [0, 1)) and evaluates it on `images`/`labels` with
/// [`evaluate`] (accuracy, loss, DNR) in batches of `batch_size`.
///
/// `mask` holds the run's 0/1 mask, one tensor per prunable tensor in the order of
/// `model.net.prunable()`: the weights it keeps are the candidates; of them the
/// [`kept_at`] largest by |w| stay, counted exactly with [`select_smallest`] (ties by
/// position), the others are set to 0. The weights are restored after each point.
pub fn one_shot_sweep(
    model: &Model,
    mask: &[&Tensor],
    images: &Tensor,
    labels: &Tensor,
    batch_size: i64,
    sparsities: &[f64],
) -> Result<Vec<SweepPoint>, SelectError> {
    let names = model.net.prunable();
    let params = NamedParams::from_var_store(&model.vs, &names)
        .map_err(|e| SelectError::ShapeMismatch(e.to_string()))?;
    let original = params.snapshot();
    let weights = params.tensors();
    let total = params.numel();
    let already: i64 = mask
        .iter()
        .map(|m| m.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]))
        .sum();
    let magnitude: Vec<Tensor> = weights.iter().map(|w| w.detach().abs()).collect();
    let magnitude: Vec<&Tensor> = magnitude.iter().collect();
    let mut points = Vec::with_capacity(sparsities.len());
    for &sparsity in sparsities {
        let kept = kept_at(sparsity, total, already);
        let drop = select_smallest(&magnitude, mask, already - kept)?;
        let keep: Vec<Tensor> = drop
            .iter()
            .zip(mask)
            .map(|(d, m)| m.to_kind(Kind::Bool).logical_and(&d.logical_not()))
            .collect();
        let (kept_now, r) =
            evaluate_kept(model, &params, &original, &keep, images, labels, batch_size)?;
        debug_assert_eq!(kept_now, kept, "{kept_now} kept, {kept} asked");
        points.push(SweepPoint::new(None, sparsity, kept, total, &r));
    }
    Ok(points)
}

/// One layer's keep mask at an N:M point: of every group of M consecutive weights along
/// the input dimension, the N largest |w| ([`NmPattern::keep_top`], ties by position, the
/// earlier goes), and of those only the weights `mask` keeps — a weight the run pruned
/// stays pruned, so a group with fewer than N live weights keeps just those. The scores
/// are |w| with pruned weights at 0 (they are 0 in a run's network anyway), so the N slots
/// go to live weights first. A layer that does not fit the pattern keeps its mask (dense
/// as far as the pattern goes). Boolean, shaped like `weight`.
pub fn nm_keep(pattern: &NmPattern, weight: &Tensor, mask: &Tensor) -> Tensor {
    let live = mask.to_kind(Kind::Bool);
    let scores = weight.detach().abs() * live.to_kind(weight.kind());
    pattern
        .keep_top(&scores)
        .to_kind(Kind::Bool)
        .logical_and(&live)
}

/// Prunes a copy of `model`'s prunable weights one-shot to each N:M pattern of `patterns`
/// ([`nm_keep`] in every layer) and evaluates it like [`one_shot_sweep`] does; one point
/// per pattern, in the order given, with `pattern` set, `sparsity` the nominal 1 − N/M and
/// `achieved_sparsity` what the point has (lower where layers do not fit and stay dense,
/// higher where the run had already pruned groups below N). `mask` as for
/// [`one_shot_sweep`]. The weights are restored after each point.
pub fn nm_sweep(
    model: &Model,
    mask: &[&Tensor],
    images: &Tensor,
    labels: &Tensor,
    batch_size: i64,
    patterns: &[NmPattern],
) -> Result<Vec<SweepPoint>, SelectError> {
    let names = model.net.prunable();
    let params = NamedParams::from_var_store(&model.vs, &names)
        .map_err(|e| SelectError::ShapeMismatch(e.to_string()))?;
    if mask.len() != params.len() {
        return Err(SelectError::ShapeMismatch(format!(
            "{} mask tensors for {} prunable tensors",
            mask.len(),
            params.len()
        )));
    }
    let original = params.snapshot();
    let total = params.numel();
    let mut points = Vec::with_capacity(patterns.len());
    for p in patterns {
        let keep: Vec<Tensor> = params
            .tensors()
            .iter()
            .zip(mask)
            .map(|(w, m)| nm_keep(p, w, m))
            .collect();
        let (kept, r) =
            evaluate_kept(model, &params, &original, &keep, images, labels, batch_size)?;
        let nominal = 1.0 - p.density();
        points.push(SweepPoint::new(
            Some(p.to_string()),
            nominal,
            kept,
            total,
            &r,
        ));
    }
    Ok(points)
}

impl SweepPoint {
    fn new(pattern: Option<String>, sparsity: f64, kept: i64, total: i64, r: &EvalReport) -> Self {
        SweepPoint {
            pattern,
            sparsity,
            kept,
            total,
            achieved_sparsity: 1.0 - kept as f64 / total.max(1) as f64,
            accuracy: r.accuracy,
            loss: r.loss,
            dnr_dynamic: r.dnr.dynamic,
            dnr_static: r.dnr.static_,
        }
    }
}

/// Sets every prunable weight outside `keep` (boolean, one per tensor of `params`) to 0,
/// evaluates, and restores `params` from `original`: the kept count and the evaluation.
fn evaluate_kept(
    model: &Model,
    params: &NamedParams,
    original: &NamedParams,
    keep: &[Tensor],
    images: &Tensor,
    labels: &Tensor,
    batch_size: i64,
) -> Result<(i64, EvalReport), SelectError> {
    let kept = tch::no_grad(|| {
        let mut n = 0;
        for (w, k) in params.tensors().iter().zip(keep) {
            let _ = w.shallow_clone().g_mul_(&k.to_kind(w.kind()));
            n += k.sum(Kind::Int64).int64_value(&[]);
        }
        n
    });
    let r = evaluate(model, images, labels, batch_size);
    params
        .copy_from(original)
        .map_err(|e| SelectError::ShapeMismatch(e.to_string()))?;
    Ok((kept, r))
}

/// The tolerance knee: the index of the largest sparsity whose accuracy is at most
/// `tolerance` below the first point's (both fractions; the first point is sparsity 0 in
/// the default list, the trained network). Points after it that recover are not skipped:
/// it is the last point within tolerance, so every later point has dropped by more.
/// `None` for no points. `curve` holds (sparsity, accuracy) in increasing sparsity.
pub fn tolerance_knee(curve: &[(f64, f64)], tolerance: f64) -> Option<usize> {
    let reference = curve.first()?.1;
    // A tiny slack so "exactly 1 point lower" counts as within 1 point despite rounding.
    let slack = 1e-12;
    curve
        .iter()
        .rposition(|&(_, a)| reference - a <= tolerance + slack)
}

/// The curvature knee (Kneedle, Satopää et al. 2011, for a curve that falls at the end):
/// both axes are normalised to [0, 1] by their minimum and maximum over the points; the
/// knee is the point farthest *above* the chord from the first to the last normalised
/// point (the signed vertical distance, which for a fixed chord orders points as the
/// perpendicular distance does); of equal distances the least sparse wins. Special cases:
/// a curve that does not drop (the last accuracy ≥ the first, a flat curve included) has
/// its knee at the last point; a curve with no point strictly above the chord (it falls
/// from the start at least as fast as the chord) has its knee at the first point.
/// `None` for no points. `curve` holds (sparsity, accuracy) in increasing sparsity.
pub fn curvature_knee(curve: &[(f64, f64)]) -> Option<usize> {
    let (first, last) = (*curve.first()?, *curve.last()?);
    if curve.len() < 3 || last.1 >= first.1 {
        return Some(curve.len() - 1);
    }
    let (x0, x1) = (first.0, last.0);
    let (ylo, yhi) = curve
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let nx = |x: f64| (x - x0) / (x1 - x0);
    let ny = |y: f64| (y - ylo) / (yhi - ylo);
    let (ya, yb) = (ny(first.1), ny(last.1));
    let mut best: Option<(usize, f64)> = None;
    for (i, &(x, y)) in curve.iter().enumerate() {
        let above = ny(y) - (ya + (yb - ya) * nx(x));
        if above > 1e-12 && best.is_none_or(|(_, b)| above > b) {
            best = Some((i, above));
        }
    }
    Some(best.map_or(0, |(i, _)| i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn curve(xs: &[f64], f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        xs.iter().map(|&x| (x, f(x))).collect()
    }

    /// Flat at 0.98 up to 80%, then a straight fall to 0.10 at 99%: both knees at 80%.
    #[test]
    fn flat_then_linear_drop_has_both_knees_at_the_break() {
        let c = curve(&DEFAULT_SPARSITIES, |s| {
            if s <= 0.8 {
                0.98
            } else {
                0.98 - (s - 0.8) / 0.19 * 0.88
            }
        });
        let at = |i: Option<usize>| c[i.unwrap()].0;
        assert_eq!(at(tolerance_knee(&c, 0.01)), 0.8);
        assert_eq!(at(curvature_knee(&c)), 0.8);
    }

    /// A smooth concave fall a(s) = 1 − s⁴: the distance above the chord s − s⁴ peaks at
    /// s = 4^(−1/3) ≈ 0.63, so on a 5% grid the knee is 0.65 (s − s⁴: 0.4734 at 0.65 vs
    /// 0.4704 at 0.60).
    #[test]
    fn smooth_concave_curve_has_its_knee_where_the_chord_is_farthest() {
        let xs: Vec<f64> = (0..=20).map(|i| i as f64 * 0.05).collect();
        let c = curve(&xs, |s| 1.0 - s.powi(4));
        assert!((c[curvature_knee(&c).unwrap()].0 - 0.65).abs() < 1e-12);
        // 1 − s⁴ ≥ 0.99 ⇔ s ≤ 0.316: the last such grid point is 0.30.
        assert!((c[tolerance_knee(&c, 0.01).unwrap()].0 - 0.30).abs() < 1e-12);
    }

    #[test]
    fn a_curve_without_drop_has_its_knees_at_the_last_point() {
        for c in [
            curve(&DEFAULT_SPARSITIES, |_| 0.9),
            curve(&DEFAULT_SPARSITIES, |s| 0.9 + 0.01 * s),
        ] {
            let last = c.len() - 1;
            assert_eq!(curvature_knee(&c), Some(last));
            assert_eq!(tolerance_knee(&c, 0.01), Some(last));
        }
    }

    /// A convex fall (steepest first) has no point above the chord: the knee is the first.
    #[test]
    fn a_curve_falling_from_the_start_has_its_curvature_knee_first() {
        let c = curve(&DEFAULT_SPARSITIES, |s| (1.0 - s).powi(3));
        assert_eq!(curvature_knee(&c), Some(0));
        assert_eq!(curvature_knee(&[]), None);
        assert_eq!(tolerance_knee(&[], 0.01), None);
    }

    #[test]
    fn kept_counts_round_and_never_exceed_what_the_run_keeps() {
        assert_eq!(kept_at(0.0, 1000, 1000), 1000);
        assert_eq!(kept_at(0.5, 1001, 1001), 501); // 500.5 rounds away from zero
        assert_eq!(kept_at(0.1, 1000, 300), 300);
        assert_eq!(kept_at(0.99, 1000, 300), 10);
    }

    /// The sweep keeps exactly the asked counts (checked inside in debug builds), never
    /// brings back a weight the mask pruned, reproduces `evaluate` where nothing is
    /// pruned, and leaves the model's weights as they were.
    #[test]
    fn sweep_counts_exactly_and_restores_the_weights() {
        let _g = ap_testkit::torch_lock();
        tch::manual_seed(5);
        let device = tch::Device::Cpu;
        let m =
            ap_models::build(ap_models::ModelKind::LeNet300_100, &[1, 2, 2], 3, device).unwrap();
        let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
        // The run pruned every weight below 0.02 in magnitude.
        let mask: Vec<Tensor> = params.tensors().iter().map(|w| w.abs().ge(0.02)).collect();
        tch::no_grad(|| {
            for (w, k) in params.tensors().iter().zip(&mask) {
                let _ = w.shallow_clone().g_mul_(&k.to_kind(w.kind()));
            }
        });
        let before = params.snapshot();
        let x = Tensor::randn([9, 1, 2, 2], (Kind::Float, device));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1, 2]);
        let already: i64 = mask
            .iter()
            .map(|k| k.sum(Kind::Int64).int64_value(&[]))
            .sum();
        let total = params.numel();
        let masks: Vec<&Tensor> = mask.iter().collect();
        let points = one_shot_sweep(&m, &masks, &x, &y, 4, &[0.0, 0.5, 0.9, 0.99]).unwrap();
        let kept: Vec<i64> = points.iter().map(|p| p.kept).collect();
        let expect: Vec<i64> = [0.0, 0.5, 0.9, 0.99]
            .iter()
            .map(|s| kept_at(*s, total, already))
            .collect();
        assert_eq!(kept, expect);
        assert!(
            kept[0] == already && kept[1] < already,
            "{kept:?} of {total}"
        );
        assert_eq!(points[0].accuracy, evaluate(&m, &x, &y, 4).accuracy);
        for ((_, a), (_, b)) in params.iter().zip(before.iter()) {
            assert!(a.equal(b));
        }
    }

    /// Host reference of [`nm_keep`]: rows are every dimension but the first, cut into
    /// groups of M; in each, the N largest |w| stay (of equal values the earlier goes),
    /// and of those the live ones. A layer whose rows are not a multiple of M keeps `live`.
    fn host_nm_keep(w: &[f64], live: &[bool], row: usize, n: usize, m: usize) -> Vec<bool> {
        if row % m != 0 {
            return live.to_vec();
        }
        let mut out = live.to_vec();
        for (g, chunk) in w.chunks(m).enumerate() {
            let score = |i: usize| if live[g * m + i] { chunk[i].abs() } else { 0.0 };
            let mut order: Vec<usize> = (0..m).collect();
            order.sort_by(|&a, &b| score(a).partial_cmp(&score(b)).unwrap().then(a.cmp(&b)));
            for &i in &order[..m - n] {
                out[g * m + i] = false;
            }
        }
        out
    }

    /// N:M points keep what the host reference keeps (N per group where the run left at
    /// least N, all live weights where it left fewer, every live weight of a layer that
    /// does not fit), record pattern and nominal sparsity, and restore the weights.
    #[test]
    fn nm_points_keep_n_per_group_where_the_layer_fits() {
        let _g = ap_testkit::torch_lock();
        tch::manual_seed(6);
        let device = tch::Device::Cpu;
        // Prunable: [300, 4], [100, 300], [3, 100].
        let m =
            ap_models::build(ap_models::ModelKind::LeNet300_100, &[1, 2, 2], 3, device).unwrap();
        let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
        let x = Tensor::randn([9, 1, 2, 2], (Kind::Float, device));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1, 2]);
        let patterns: Vec<NmPattern> = ["2:4", "1:3"].map(|p| p.parse().unwrap()).to_vec();

        // A dense run: 2:4 keeps half of everything (every row is a multiple of 4); 1:3
        // fits only [100, 300] (a third of 30,000), the other two layers stay dense.
        let dense: Vec<Tensor> = params.tensors().iter().map(|w| w.ones_like()).collect();
        let dense: Vec<&Tensor> = dense.iter().collect();
        let points = nm_sweep(&m, &dense, &x, &y, 4, &patterns).unwrap();
        let total = params.numel();
        assert_eq!(total, 1200 + 30_000 + 300);
        assert_eq!(points[0].kept, total / 2);
        assert_eq!(points[1].kept, 1200 + 10_000 + 300);
        assert_eq!(points[0].pattern.as_deref(), Some("2:4"));
        assert_eq!(
            (points[0].sparsity, points[1].sparsity),
            (0.5, 1.0 - 1.0 / 3.0)
        );

        // A run that pruned every weight below 0.05 in magnitude (some groups keep fewer
        // than N): the counts are the host reference's.
        let mask: Vec<Tensor> = params.tensors().iter().map(|w| w.abs().ge(0.05)).collect();
        tch::no_grad(|| {
            for (w, k) in params.tensors().iter().zip(&mask) {
                let _ = w.shallow_clone().g_mul_(&k.to_kind(w.kind()));
            }
        });
        let before = params.snapshot();
        let masks: Vec<&Tensor> = mask.iter().collect();
        let points = nm_sweep(&m, &masks, &x, &y, 4, &patterns).unwrap();
        for (point, p) in points.iter().zip(&patterns) {
            let mut host = 0;
            for (w, k) in params.tensors().iter().zip(&mask) {
                let wv = ap_tensor::to_f64_vec(&w.to_kind(Kind::Double));
                let live: Vec<bool> = ap_tensor::to_f64_vec(&k.to_kind(Kind::Double))
                    .iter()
                    .map(|&v| v != 0.0)
                    .collect();
                let row = (w.numel() as i64 / w.size()[0]) as usize;
                let keep = host_nm_keep(&wv, &live, row, p.n as usize, p.m as usize);
                let got = nm_keep(p, w, k);
                let got: Vec<bool> = ap_tensor::to_f64_vec(&got.to_kind(Kind::Double))
                    .iter()
                    .map(|&v| v != 0.0)
                    .collect();
                assert_eq!(got, keep, "{p} on {:?}", w.size());
                host += keep.iter().filter(|&&b| b).count() as i64;
            }
            assert_eq!(point.kept, host, "{p}");
            assert!(point.kept < total / 2, "{p}: {}", point.kept);
        }
        for ((_, a), (_, b)) in params.iter().zip(before.iter()) {
            assert!(a.equal(b));
        }
    }

    /// Sorted distinct sparsities in [0, 1) with accuracies in [0, 1].
    fn curves() -> impl Strategy<Value = Vec<(f64, f64)>> {
        prop::collection::btree_set(0u32..1000, 1..25).prop_flat_map(|xs| {
            let n = xs.len();
            prop::collection::vec(0.0f64..=1.0, n).prop_map(move |ys| {
                xs.iter()
                    .zip(ys)
                    .map(|(&x, y)| (x as f64 / 1000.0, y))
                    .collect()
            })
        })
    }

    proptest! {
        /// The tolerance knee is within tolerance and every later point is not.
        #[test]
        fn tolerance_knee_is_the_last_point_within_tolerance(c in curves(), tol in 0.0f64..0.2) {
            let k = tolerance_knee(&c, tol).unwrap();
            prop_assert!(c[0].1 - c[k].1 <= tol + 1e-12);
            for p in &c[k + 1..] {
                prop_assert!(c[0].1 - p.1 > tol);
            }
        }

        /// The curvature knee is a point of the curve, and does not change when the
        /// accuracies are scaled and shifted (the axes are normalised).
        #[test]
        fn curvature_knee_is_a_point_and_scale_free(c in curves(), scale in 0.1f64..10.0, shift in -1.0f64..1.0) {
            let k = curvature_knee(&c).unwrap();
            prop_assert!(k < c.len());
            let moved: Vec<(f64, f64)> = c.iter().map(|&(x, y)| (x, y * scale + shift)).collect();
            let km = curvature_knee(&moved).unwrap();
            // Equal up to rounding: the distances at the two knees agree closely.
            if km != k {
                let d = |cc: &[(f64, f64)], i: usize| {
                    let (a, b) = (cc[0], cc[cc.len() - 1]);
                    let (lo, hi) = cc.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.1), h.max(p.1)));
                    let ny = |y: f64| (y - lo) / (hi - lo);
                    ny(cc[i].1) - (ny(a.1) + (ny(b.1) - ny(a.1)) * (cc[i].0 - a.0) / (b.0 - a.0))
                };
                prop_assert!((d(&c, k) - d(&c, km)).abs() < 1e-9, "{k} vs {km}");
            }
        }
    }
}
