//! Erdős–Rényi-Kernel layer densities (Evci et al. 2020) and random masks with given
//! per-layer densities (RigL's sparse initialisation).

use ap_mask::Mask;
use ap_tensor::{select_smallest_per_tensor, NamedParams};

use crate::random_scores;

/// Per-layer densities for an overall `density` by ERK (Evci et al. 2020).
///
/// Layer l (shape `[out, in, kh, kw]` for conv, `[out, in]` for linear; any shape works)
/// gets density `ε · Σ dims / Π dims`, ε chosen so that `Σ d_l · numel_l = density ·
/// Σ numel_l` (the kept count, up to floating-point rounding). Layers named in `dense`
/// are always 1.0; with `dense_in_budget` false (RigL's `get_sparsities_erdos_renyi`,
/// which ignores its custom-sparsity layers) the other layers alone meet `density` over
/// their own weights, so the network as a whole is denser than `density`; with it true
/// the dense layers' weights count towards the budget, so the whole network is at
/// `density` and the other layers are sparser. Where ε would push a
/// layer above 1, the layers with the largest raw ratio are made dense and ε is solved
/// again (the iterative procedure of the RigL code, `get_sparsities_erdos_renyi`), so no
/// density exceeds 1. If the `dense` layers alone exceed the budget, the others get 0
/// and the total is above target. `density` outside (0, 1) gives all 0 (≤ 0, NaN) or
/// all 1 (≥ 1) for the non-`dense` layers. Names in `dense` that match no layer are
/// ignored (check them against the model's prunable names when validating settings).
pub fn erk_densities(
    shapes: &[(String, Vec<i64>)],
    density: f64,
    dense: &[String],
    dense_in_budget: bool,
) -> Vec<f64> {
    let numel: Vec<f64> = shapes
        .iter()
        .map(|(_, s)| s.iter().map(|&d| d as f64).product())
        .collect();
    let raw: Vec<f64> = shapes
        .iter()
        .zip(&numel)
        .map(|((_, s), &n)| s.iter().map(|&d| d as f64).sum::<f64>() / n)
        .collect();
    // Empty layers have nothing to prune: dense (and the ratio would be 0/0).
    let mut is_dense: Vec<bool> = shapes
        .iter()
        .zip(&numel)
        .map(|((name, _), &n)| n <= 0.0 || dense.contains(name))
        .collect();
    // Layers outside the budget: RigL's custom-sparsity layers (and empty ones).
    let outside: Vec<bool> = shapes
        .iter()
        .map(|(name, _)| !dense_in_budget && dense.contains(name))
        .collect();
    if density.is_nan() || density <= 0.0 {
        return is_dense
            .iter()
            .map(|&d| if d { 1.0 } else { 0.0 })
            .collect();
    }
    if density >= 1.0 {
        return vec![1.0; shapes.len()];
    }
    let eps = loop {
        let (mut rhs, mut divisor) = (0.0, 0.0);
        for l in 0..shapes.len() {
            if outside[l] {
                continue;
            }
            if is_dense[l] {
                rhs -= (1.0 - density) * numel[l];
            } else {
                rhs += density * numel[l];
                divisor += raw[l] * numel[l];
            }
        }
        if divisor <= 0.0 {
            break 0.0; // every layer dense
        }
        let eps = rhs / divisor;
        let max_raw = (0..shapes.len())
            .filter(|&l| !is_dense[l])
            .map(|l| raw[l])
            .fold(f64::MIN, f64::max);
        if eps * max_raw > 1.0 {
            for l in 0..shapes.len() {
                if !is_dense[l] && raw[l] == max_raw {
                    is_dense[l] = true;
                }
            }
        } else {
            break eps;
        }
    };
    (0..shapes.len())
        .map(|l| {
            if is_dense[l] {
                1.0
            } else {
                (eps * raw[l]).clamp(0.0, 1.0)
            }
        })
        .collect()
}

/// A mask keeping exactly `floor(d_l · numel_l)` positions of each layer, chosen
/// uniformly at random ([`random_scores`] with `seed`, then exact selection, so it is
/// independent of libtorch's generator). Densities are clamped to [0, 1]; a layer
/// without a density (the slice is shorter than `params`) stays dense.
pub fn random_mask_with_densities(params: &NamedParams, densities: &[f64], seed: u64) -> Mask {
    let scores = random_scores(params, seed);
    let mut mask = Mask::dense(params);
    let counts: Vec<i64> = params
        .tensors()
        .iter()
        .enumerate()
        .map(|(l, w)| {
            let n = w.numel() as i64;
            let d = densities.get(l).copied().unwrap_or(1.0);
            let d = if d.is_nan() { 1.0 } else { d.clamp(0.0, 1.0) };
            n - ((d * n as f64).floor() as i64).clamp(0, n)
        })
        .collect();
    let sel =
        select_smallest_per_tensor(&scores.iter().collect::<Vec<_>>(), &mask.tensors(), &counts)
            .expect("counts lie in [0, numel] and the scores are shaped like the mask");
    mask.remove(&sel)
        .expect("the selection is shaped like the mask it came from");
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tch::{Kind, Tensor};

    fn shapes(dims: &[Vec<i64>]) -> Vec<(String, Vec<i64>)> {
        dims.iter()
            .enumerate()
            .map(|(i, d)| (format!("l{i}"), d.clone()))
            .collect()
    }

    fn layer_shape() -> impl Strategy<Value = Vec<i64>> {
        prop_oneof![
            (1i64..300, 1i64..300).prop_map(|(a, b)| vec![a, b]),
            (1i64..64, 1i64..64, 1i64..4, 1i64..4).prop_map(|(a, b, c, d)| vec![a, b, c, d]),
        ]
    }

    proptest! {
        /// Total kept within one weight of the target (when reachable), every density in
        /// [0, 1], `dense` layers at 1, and a smaller Σ/Π ratio never gets a higher density.
        #[test]
        fn erk_invariants(dims in prop::collection::vec(layer_shape(), 1..6), density in 0.01f64..0.99, first_dense in any::<bool>(), in_budget in any::<bool>()) {
            let sh = shapes(&dims);
            let dense: Vec<String> = if first_dense { vec!["l0".into()] } else { vec![] };
            let d = erk_densities(&sh, density, &dense, in_budget);
            let numel: Vec<f64> = dims.iter().map(|s| s.iter().product::<i64>() as f64).collect();
            let outside = if first_dense && !in_budget { numel[0] } else { 0.0 };
            // The budget is over the layers inside it (RigL: all but its dense layers).
            let total: f64 = numel.iter().sum::<f64>() - outside;
            let kept: f64 = d.iter().zip(&numel).map(|(a, b)| a * b).sum::<f64>() - outside;
            let dense_numel: f64 = if first_dense && in_budget { numel[0] } else { 0.0 };
            if dense_numel <= density * total {
                prop_assert!((kept - density * total).abs() <= 1.0, "{kept} vs {}", density * total);
            }
            prop_assert!(d.iter().all(|&x| (0.0..=1.0).contains(&x)));
            if first_dense {
                prop_assert_eq!(d[0], 1.0);
            }
            let ratio: Vec<f64> = dims.iter().map(|s| s.iter().sum::<i64>() as f64 / s.iter().product::<i64>() as f64).collect();
            for a in 0..d.len() {
                for b in 0..d.len() {
                    if (first_dense && (a == 0 || b == 0)) || ratio[a] >= ratio[b] {
                        continue;
                    }
                    prop_assert!(d[a] <= d[b], "{d:?} {ratio:?}");
                }
            }
        }

        /// Exactly floor(d_l · numel_l) kept per layer.
        #[test]
        fn random_mask_exact_counts(sizes in prop::collection::vec(1i64..200, 1..4), ds in prop::collection::vec(0.0f64..=1.0, 4), seed in any::<u64>()) {
            let p = NamedParams::from_entries(sizes.iter().enumerate().map(|(i, &s)| (format!("l{i}"), Tensor::zeros([s], (Kind::Float, tch::Device::Cpu)))).collect());
            let m = random_mask_with_densities(&p, &ds[..sizes.len()], seed);
            let r = m.report();
            for (l, ld) in r.layers.iter().enumerate() {
                prop_assert_eq!(ld.kept, (ds[l] * sizes[l] as f64).floor() as i64);
            }
        }
    }

    #[test]
    fn erk_makes_the_small_dense_layers_dense_first() {
        // LeNet-300-100: the 10-class output layer has the largest Σ/Π and saturates.
        let sh = shapes(&[vec![300, 784], vec![100, 300], vec![10, 100]]);
        let d = erk_densities(&sh, 0.2, &[], false);
        assert_eq!(d[2], 1.0);
        assert!(d[0] < d[1] && d[1] < 1.0, "{d:?}");
        let kept = d[0] * 235_200.0 + d[1] * 30_000.0 + d[2] * 1_000.0;
        assert!((kept - 0.2 * 266_200.0).abs() <= 1.0);
        assert_eq!(erk_densities(&sh, 1.0, &[], false), vec![1.0; 3]);
        assert_eq!(
            erk_densities(&sh, 0.0, &["l1".into()], false),
            vec![0.0, 1.0, 0.0]
        );
    }

    #[test]
    fn random_mask_depends_on_seed_only() {
        let p = NamedParams::from_entries(vec![(
            "w".into(),
            Tensor::zeros([50, 4], (Kind::Float, tch::Device::Cpu)),
        )]);
        let a = random_mask_with_densities(&p, &[0.3], 1);
        let b = random_mask_with_densities(&p, &[0.3], 1);
        let c = random_mask_with_densities(&p, &[0.3], 2);
        assert!(a.tensors()[0].equal(b.tensors()[0]));
        assert!(!a.tensors()[0].equal(c.tensors()[0]));
        assert_eq!(a.kept(), 60);
        // a missing density keeps the layer dense
        assert_eq!(random_mask_with_densities(&p, &[], 1).kept(), 200);
    }
}
