//! Small tensors for tests: seeded parameter sets and masks, random selections, toy
//! classification data, and the count of pruned weights that came back.
//!
//! Parameter sets and masks are `(name, tensor)` lists, the entries of
//! `ap_tensor::NamedParams::from_entries` and `ap_mask::Mask::from_entries`, which the
//! caller wraps (the test kit depends on no crate of the workspace). Every function here
//! but [`revived`] draws from libtorch's generator: the caller holds
//! [`crate::torch_lock`].

use tch::{Device, Kind, Tensor};

/// Three dense layers of distinct sizes (`a`, `b`, `c`: 30 → 40 → 20 → 10), for
/// selections and pruning events over more than one layer.
pub const THREE_LAYERS: &[(&str, &[i64])] = &[
    ("a.weight", &[40, 30]),
    ("b.weight", &[20, 40]),
    ("c.weight", &[10, 20]),
];

/// Seeds libtorch with `seed`, then draws N(0, 1) weights on the CPU, one tensor per
/// `(name, shape)`.
pub fn seeded_normal(layers: &[(&str, &[i64])], seed: i64) -> Vec<(String, Tensor)> {
    tch::manual_seed(seed);
    layers
        .iter()
        .map(|(n, s)| (n.to_string(), Tensor::randn(*s, (Kind::Float, Device::Cpu))))
        .collect()
}

/// Draws N(0, 1) weights on the CPU, one 1-D tensor per size, named `l0.weight`,
/// `l1.weight`, …: a parameter set of any number of layers, for property tests.
pub fn numbered_normal(sizes: &[i64]) -> Vec<(String, Tensor)> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let w = Tensor::randn([s], (Kind::Float, Device::Cpu));
            (format!("l{i}.weight"), w)
        })
        .collect()
}

/// Seeds libtorch with `seed`, then draws a 0/1 float mask per tensor, each position
/// pruned (0) with probability `pruned`.
pub fn random_keep<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    pruned: f64,
    seed: i64,
) -> Vec<(String, Tensor)> {
    tch::manual_seed(seed);
    tensors
        .into_iter()
        .map(|(n, w)| {
            let keep = Tensor::rand(w.size().as_slice(), (Kind::Float, Device::Cpu)).ge(pruned);
            (n.to_string(), keep.to_kind(Kind::Float))
        })
        .collect()
}

/// A boolean tensor like each of `tensors` (same device), true with probability
/// `fraction`: what `Mask::remove` takes to prune about that fraction at random.
pub fn random_selection(tensors: &[&Tensor], fraction: f64) -> Vec<Tensor> {
    tensors
        .iter()
        .map(|t| Tensor::rand_like(t).lt(fraction))
        .collect()
}

/// `n` toy images `[n, 1, side, side]` of N(0, 1) noise on the CPU, labelled 1 where
/// their pixel sum is positive, else 0: a task a small network learns in a few steps.
pub fn toy_classification(n: i64, side: i64) -> (Tensor, Tensor) {
    let images = Tensor::randn([n, 1, side, side], (Kind::Float, Device::Cpu));
    let sums = images.flatten(1, -1).sum_dim_intlist(1, false, Kind::Float);
    (images, sums.gt(0.0).to_kind(Kind::Int64))
}

/// How many weights are nonzero where their mask is 0, over paired `weights` and
/// `masks`: 0 when no pruned weight came back.
pub fn revived<'a>(
    weights: impl IntoIterator<Item = &'a Tensor>,
    masks: impl IntoIterator<Item = &'a Tensor>,
) -> i64 {
    weights
        .into_iter()
        .zip(masks)
        .map(|(w, m)| {
            w.ne(0.0)
                .logical_and(&m.eq(0.0))
                .sum(Kind::Int64)
                .int64_value(&[])
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_draws_repeat_and_masks_prune_about_their_share() {
        let _g = crate::torch_lock();
        let a = seeded_normal(THREE_LAYERS, 7);
        let b = seeded_normal(THREE_LAYERS, 7);
        assert_eq!(a.len(), 3);
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert!(ta.equal(tb));
        }
        assert_eq!(a[1].1.size(), vec![20, 40]);
        let keep = random_keep(a.iter().map(|(n, t)| (n.as_str(), t)), 0.3, 1);
        let total: i64 = a.iter().map(|(_, t)| t.numel() as i64).sum();
        let kept: f64 = keep
            .iter()
            .map(|(_, m)| m.sum(Kind::Float).double_value(&[]))
            .sum();
        let share = kept / total as f64;
        assert!((share - 0.7).abs() < 0.05, "kept {share}");
        let numbered = numbered_normal(&[3, 0, 5]);
        assert_eq!(numbered[2].0, "l2.weight");
        assert_eq!(numbered[2].1.size(), vec![5]);
        let sel = random_selection(&[&a[0].1], 0.5);
        assert_eq!(sel[0].kind(), Kind::Bool);
        let (x, y) = toy_classification(16, 2);
        assert_eq!(x.size(), vec![16, 1, 2, 2]);
        assert_eq!(
            y,
            x.sum_dim_intlist(&[1, 2, 3][..], false, Kind::Float)
                .gt(0.0)
                .to_kind(Kind::Int64)
        );
    }

    #[test]
    fn revived_counts_nonzero_weights_under_zero_masks() {
        let w = Tensor::from_slice(&[0.0f32, 1.0, -2.0, 3.0]);
        let m = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 0.0]);
        assert_eq!(revived([&w, &w], [&m, &m.ones_like()]), 2);
        assert_eq!(revived([&(&w * &m)], [&m]), 0);
    }
}
