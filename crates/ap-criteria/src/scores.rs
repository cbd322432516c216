//! Weight-only scores (magnitude, random, LAMP), gradient magnitude for regrowth, and
//! exact-count selection of the largest scores.
//!
//! Every score is "higher = more important": pruning removes the smallest scores among
//! kept positions, regrowth adds the largest among pruned ones.

use ap_mask::Mask;
use ap_tensor::{derive_seed, select_smallest_per_tensor, splitmix64, NamedParams, SelectError};
use tch::{Device, Kind, Tensor};

/// |w| for every prunable parameter (the parameter's kind and device).
pub fn magnitude_scores(params: &NamedParams) -> Vec<Tensor> {
    params.tensors().iter().map(|w| w.detach().abs()).collect()
}

/// Uniform scores in [0, 1), one tensor per parameter (kind `Double`, on the
/// parameter's device).
///
/// Generated on the host, not by libtorch, so they depend only on `seed` and the layer
/// names and sizes: never on libtorch's global generator (which initialisation and
/// dropout consume) nor on the device. Each layer has its own splitmix64 stream, seeded
/// by `derive_seed(seed, name)`, so a layer's scores do not change when another layer is
/// added. Values carry 53 random bits (`Double`), so ties are practically absent.
pub fn random_scores(params: &NamedParams, seed: u64) -> Vec<Tensor> {
    params
        .iter()
        .map(|(name, w)| uniform_like(w, derive_seed(seed, name)))
        .collect()
}

/// One splitmix64 stream of uniform [0, 1) doubles shaped like `like`.
fn uniform_like(like: &Tensor, seed: u64) -> Tensor {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    let n = like.numel() as u64;
    // splitmix64 adds GAMMA itself: this is the standard stream starting at state `seed`.
    let vals: Vec<f64> = (0..n)
        .map(|i| (splitmix64(seed.wrapping_add(i.wrapping_mul(GAMMA))) >> 11) as f64 * SCALE)
        .collect();
    let t = Tensor::from_slice(&vals).view(like.size().as_slice());
    if like.device() == Device::Cpu {
        t
    } else {
        t.to_device(like.device())
    }
}

/// LAMP scores (Lee et al. 2021), kind `Double`.
///
/// Within each layer, its kept weights sorted ascending by w² (ties by position, a
/// stable sort) score `w_u² / Σ_{v ≥ u} w_v²`, the sum running over the kept weights at
/// or after u in that order. Kept weights therefore score in (0, 1], and the last in the
/// order (the layer's largest kept weight) scores exactly 1, so a global ranking never
/// empties a layer before every other layer is down to its last weight. Pruned
/// positions score 0. A kept weight that is exactly 0 also scores 0 (0/0 is taken as 0
/// when it and everything after it in the order are 0).
pub fn lamp_scores(params: &NamedParams, mask: &Mask) -> Vec<Tensor> {
    params
        .tensors()
        .iter()
        .zip(mask.tensors())
        .map(|(w, m)| {
            tch::no_grad(|| {
                let m = m.to_kind(Kind::Double);
                let w2 = (w.detach().to_kind(Kind::Double) * &m).square();
                let flat = w2.flatten(0, -1);
                let (sorted, idx) = flat.sort_stable(true, 0, false);
                // Suffix sums: the reversed cumulative sum, so the last element is its own
                // denominator (exactly 1 after the division).
                let suffix = sorted.flip([0]).cumsum(0, Kind::Double).flip([0]);
                let ratio = (&sorted / &suffix).masked_fill(&suffix.le(0.0), 0.0);
                flat.zeros_like()
                    .scatter(0, &idx, &ratio)
                    .view(w.size().as_slice())
                    * m
            })
        })
        .collect()
}

/// |∂L/∂w| read from each parameter's accumulated gradient (`w.grad()`), or zeros where
/// the parameter has none yet (regrowth in RigL and GraNet ranks inactive positions by it).
pub fn param_gradient_magnitude(params: &NamedParams) -> Vec<Tensor> {
    params
        .tensors()
        .iter()
        .map(|w| {
            let g = w.grad();
            if g.defined() {
                g.detach().abs()
            } else {
                w.detach().zeros_like()
            }
        })
        .collect()
}

/// Selects exactly `counts[i]` eligible positions with the largest scores within each
/// tensor (per-layer regrowth); ties by position (the earlier position wins), like
/// [`select_smallest_per_tensor`] on `−score`.
pub fn select_largest_per_tensor(
    scores: &[&Tensor],
    eligible: &[&Tensor],
    counts: &[i64],
) -> Result<Vec<Tensor>, SelectError> {
    let neg = negate(scores);
    select_smallest_per_tensor(&neg.iter().collect::<Vec<_>>(), eligible, counts)
}

fn negate(scores: &[&Tensor]) -> Vec<Tensor> {
    // Integer/bool scores are promoted first: negating a bool tensor is an error.
    scores
        .iter()
        .map(|s| {
            let s = s.detach();
            if s.is_floating_point() {
                -s
            } else {
                -s.to_kind(Kind::Double)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::named;
    use proptest::prelude::*;

    fn vals(t: &Tensor) -> Vec<f64> {
        ap_tensor::to_f64_vec(t)
    }

    #[test]
    fn lamp_golden_value() {
        let p = named(&[vec![1.0, 2.0, 3.0]]);
        let s = vals(&lamp_scores(&p, &Mask::dense(&p))[0]);
        let want = [1.0 / 14.0, 4.0 / 13.0, 1.0];
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{s:?}");
        }
    }

    #[test]
    fn lamp_ties_break_by_position_and_signs_do_not_matter() {
        // w² = 4, 1, 4, 1: order (1@1, 1@3, 4@0, 4@2); sums 10, 9, 8, 4.
        let p = named(&[vec![-2.0, 1.0, 2.0, -1.0]]);
        let s = vals(&lamp_scores(&p, &Mask::dense(&p))[0]);
        let want = [4.0 / 8.0, 1.0 / 10.0, 1.0, 1.0 / 9.0];
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{s:?}");
        }
    }

    proptest! {
        /// Kept nonzero weights score in (0, 1], the largest kept weight of each layer
        /// scores exactly 1, pruned positions 0.
        #[test]
        fn lamp_range_and_top(layers in prop::collection::vec(prop::collection::vec((-50i32..50, any::<bool>()), 1..30), 1..4)) {
            let w: Vec<Vec<f32>> = layers.iter().map(|l| l.iter().map(|(v, _)| if *v == 0 { 0.5 } else { *v as f32 / 7.0 }).collect()).collect();
            let keep: Vec<Vec<f32>> = layers.iter().map(|l| l.iter().map(|(_, k)| if *k { 1.0 } else { 0.0 }).collect()).collect();
            let p = named(&w);
            let mask = Mask::from_entries(keep.iter().enumerate().map(|(i, k)| (format!("l{i}"), Tensor::from_slice(k))).collect());
            let scores = lamp_scores(&p, &mask);
            for ((s, k), wl) in scores.iter().zip(&keep).zip(&w) {
                let s = vals(s);
                let mut top = f32::MIN;
                for i in 0..s.len() {
                    if k[i] > 0.5 {
                        prop_assert!(s[i] > 0.0 && s[i] <= 1.0, "{s:?}");
                        top = top.max(wl[i].abs());
                    } else {
                        prop_assert_eq!(s[i], 0.0);
                    }
                }
                if top > f32::MIN {
                    // the last-positioned of the largest kept weights scores exactly 1
                    let last = (0..s.len()).rev().find(|&i| k[i] > 0.5 && wl[i].abs() == top).unwrap();
                    prop_assert_eq!(s[last], 1.0);
                }
            }
        }

        /// select_largest_per_tensor picks exactly n eligible positions, none smaller than an unpicked one.
        #[test]
        fn largest_is_exact((vals_, elig) in prop::collection::vec((0i32..5, any::<bool>()), 1..40).prop_map(|v| v.into_iter().unzip::<_, _, Vec<i32>, Vec<bool>>()), frac in 0.0f64..=1.0) {
            let s = Tensor::from_slice(&vals_.iter().map(|&v| v as f32).collect::<Vec<_>>());
            let e = Tensor::from_slice(&elig);
            let n = (frac * elig.iter().filter(|&&b| b).count() as f64).floor() as i64;
            let sel = select_largest_per_tensor(&[&s], &[&e], &[n]).unwrap();
            let sel: Vec<bool> = vals(&sel[0]).iter().map(|&v| v != 0.0).collect();
            prop_assert_eq!(sel.iter().filter(|&&b| b).count() as i64, n);
            let min_sel = (0..sel.len()).filter(|&i| sel[i]).map(|i| { prop_assert!(elig[i]); Ok(vals_[i]) }).collect::<Result<Vec<_>, TestCaseError>>()?.into_iter().min().unwrap_or(i32::MAX);
            for i in (0..sel.len()).filter(|&i| elig[i] && !sel[i]) {
                prop_assert!(vals_[i] <= min_sel);
            }
        }
    }

    #[test]
    fn random_scores_are_seeded_uniform_and_independent_of_torch_rng() {
        let _g = ap_testkit::torch_lock();
        let p = named(&[vec![0.0; 500], vec![0.0; 7]]);
        tch::manual_seed(1);
        let a = random_scores(&p, 42);
        tch::manual_seed(2);
        let _ = Tensor::rand([10], (Kind::Float, Device::Cpu));
        let b = random_scores(&p, 42);
        let c = random_scores(&p, 43);
        for (x, y) in a.iter().zip(&b) {
            assert!(x.equal(y));
            assert_eq!(x.kind(), Kind::Double);
        }
        assert!(!a[0].equal(&c[0]) && !a[1].equal(&c[1]));
        let v = vals(&a[0]);
        assert!(v.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
        // a layer's stream depends on its name, not on the layers around it
        let alone = NamedParams::from_entries(vec![(
            "l1".into(),
            Tensor::zeros([7], (Kind::Float, Device::Cpu)),
        )]);
        assert!(random_scores(&alone, 42)[0].equal(&a[1]));
    }

    #[test]
    fn gradient_magnitudes() {
        let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).set_requires_grad(true);
        let p = NamedParams::from_entries(vec![("w".into(), w.shallow_clone())]);
        assert_eq!(vals(&param_gradient_magnitude(&p)[0]), vec![0.0; 3]);
        (&w * Tensor::from_slice(&[-2.0f32, 0.0, 5.0]))
            .sum(Kind::Float)
            .backward();
        assert_eq!(vals(&param_gradient_magnitude(&p)[0]), vec![2.0, 0.0, 5.0]);
    }

    #[test]
    fn largest_ties_by_position_and_per_tensor_counts() {
        let s = Tensor::from_slice(&[1.0f32, 3.0, 3.0, 2.0]);
        let e = Tensor::from_slice(&[true, true, true, true]);
        let sel = select_largest_per_tensor(&[&s], &[&e], &[1]).unwrap();
        assert_eq!(vals(&sel[0]), vec![0.0, 1.0, 0.0, 0.0]);
        let s2 = Tensor::from_slice(&[5.0f32, 4.0]);
        let e2 = Tensor::from_slice(&[false, true]);
        let sel = select_largest_per_tensor(&[&s, &s2], &[&e, &e2], &[2, 1]).unwrap();
        assert_eq!(vals(&sel[0]), vec![0.0, 1.0, 1.0, 0.0]);
        assert_eq!(vals(&sel[1]), vec![0.0, 1.0]);
    }
}
