//! How a pruning event's count is spread over the layers.

use std::collections::BTreeMap;

use ap_mask::Mask;
use ap_tensor::{select_smallest, select_smallest_per_tensor, SelectError};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Spread of an event's removals over the layers.
///
/// Settings files name it `"global"`, `"uniform"`, or
/// `{ per_layer = { overrides = { "fc3.weight" = 0.5 } } }` (TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Allocation {
    /// One ranking over every kept weight: exactly `n` removed, wherever the smallest
    /// scores are.
    #[default]
    Global,
    /// The same rate in each layer: `floor(n/S · S_l)` removed from layer l.
    Uniform,
    /// Like `Uniform`, with the rate of the named layers multiplied by their override:
    /// 0.5 prunes a layer at half the rate (the lottery-ticket paper's output layer),
    /// 0 keeps it as it is (e.g. a first conv layer kept dense). Layers not named use
    /// the base rate (multiplier 1). A layer's rate is capped at 1.
    PerLayer {
        /// Parameter name → rate multiplier (finite, ≥ 0).
        overrides: BTreeMap<String, f64>,
    },
}

/// An allocation that does not fit the layers it is applied to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AllocationError {
    /// An override names no prunable layer.
    #[error("allocation override for `{name}`: no such prunable layer; layers: {layers}")]
    UnknownLayer {
        /// The name in the override.
        name: String,
        /// The prunable layers, comma-separated.
        layers: String,
    },
    /// An override is negative or not finite.
    #[error("allocation override for `{name}` = {value}: must be a finite multiplier ≥ 0")]
    BadMultiplier {
        /// The layer.
        name: String,
        /// The value given.
        value: f64,
    },
}

impl From<AllocationError> for SelectError {
    fn from(e: AllocationError) -> Self {
        // SelectError (ap-tensor) is what callers already propagate; the message is kept.
        SelectError::ShapeMismatch(e.to_string())
    }
}

impl Allocation {
    /// Checks the overrides against the prunable layer names (call when a run's settings
    /// are validated, before any training).
    pub fn validate<S: AsRef<str>>(&self, layers: &[S]) -> Result<(), AllocationError> {
        let Allocation::PerLayer { overrides } = self else {
            return Ok(());
        };
        for (name, &value) in overrides {
            if !layers.iter().any(|l| l.as_ref() == name) {
                return Err(AllocationError::UnknownLayer {
                    name: name.clone(),
                    layers: layers
                        .iter()
                        .map(|l| l.as_ref())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            if !(value.is_finite() && value >= 0.0) {
                return Err(AllocationError::BadMultiplier {
                    name: name.clone(),
                    value,
                });
            }
        }
        Ok(())
    }

    /// The rate multiplier of one layer (1 unless overridden).
    pub fn multiplier(&self, layer: &str) -> f64 {
        match self {
            Allocation::PerLayer { overrides } => overrides.get(layer).copied().unwrap_or(1.0),
            _ => 1.0,
        }
    }

    /// Per-layer counts for a non-global allocation: `floor(min(kept_l, n · multiplier_l ·
    /// kept_l / Σ kept))`, i.e. rate n/S scaled per layer; computed as one product over
    /// one division, so a whole-number result is exact (not 14.999… → 14). `None` for
    /// `Global`.
    pub fn layer_counts(&self, mask: &Mask, n: i64) -> Option<Vec<i64>> {
        let report = mask.report();
        let kept: Vec<(&str, i64)> = report
            .layers
            .iter()
            .map(|l| (l.name.as_str(), l.kept))
            .collect();
        self.counts_for_kept(&kept, n)
    }

    /// [`Allocation::layer_counts`] from each layer's name and kept count (what a mask
    /// reports), without a mask: for planning a run's events before it starts.
    pub fn counts_for_kept(&self, kept: &[(&str, i64)], n: i64) -> Option<Vec<i64>> {
        if *self == Allocation::Global {
            return None;
        }
        let total: i64 = kept.iter().map(|(_, k)| k).sum();
        Some(
            kept.iter()
                .map(|&(name, k)| {
                    if total == 0 {
                        return 0;
                    }
                    let c = n as f64 * self.multiplier(name) * k as f64 / total as f64;
                    (c.floor() as i64).min(k)
                })
                .collect(),
        )
    }
}

/// Chooses kept weights to remove by `scores` (higher = more important; one tensor per
/// mask entry, same shapes): boolean tensors in mask order, true = remove.
///
/// `Global` removes exactly `n`, the smallest scores across all layers (ties by
/// position). `Uniform` and `PerLayer` remove `floor(rate_l · S_l)` from each layer
/// (S_l = its kept weights, base rate n/S, see [`Allocation::layer_counts`]): the total
/// can then be below `n` by the rounding (less than one weight per layer) and differs
/// from it by whatever the overrides change. Errors when `n` is negative or above the
/// kept count, when scores and mask do not line up, or when an override is invalid
/// ([`Allocation::validate`], reported as [`SelectError::ShapeMismatch`]).
pub fn select_by_scores(
    scores: &[Tensor],
    mask: &Mask,
    n: i64,
    alloc: &Allocation,
) -> Result<Vec<Tensor>, SelectError> {
    let names: Vec<&str> = mask.iter().map(|(n, _)| n).collect();
    alloc.validate(&names)?;
    let scores: Vec<&Tensor> = scores.iter().collect();
    let eligible = mask.tensors();
    match alloc.layer_counts(mask, n) {
        None => select_smallest(&scores, &eligible, n),
        Some(counts) => {
            let kept: i64 = mask.kept();
            if n < 0 || n > kept {
                return Err(SelectError::TooFew {
                    requested: n,
                    eligible: kept,
                });
            }
            select_smallest_per_tensor(&scores, &eligible, &counts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{lamp_scores, magnitude_scores, random_scores};
    use ap_tensor::NamedParams;
    use proptest::prelude::*;
    use tch::Kind;

    fn params(sizes: &[i64], seed: i64) -> NamedParams {
        tch::manual_seed(seed);
        NamedParams::from_entries(ap_testkit::tensors::numbered_normal(sizes))
    }

    fn count(ts: &[Tensor]) -> Vec<i64> {
        ts.iter()
            .map(|t| t.sum(Kind::Int64).int64_value(&[]))
            .collect()
    }

    /// A mask with roughly `frac` of each layer pruned at random.
    fn partial_mask(p: &NamedParams, frac: f64, seed: u64) -> Mask {
        let mut m = Mask::dense(p);
        let r = random_scores(p, seed);
        m.remove(&r.iter().map(|t| t.lt(frac)).collect::<Vec<_>>())
            .unwrap();
        m
    }

    proptest! {
        /// For every criterion that reads only weights and every allocation: only kept
        /// positions are removed, the mask after removal is a subset, the global count is
        /// exact and the per-layer counts follow the formula.
        #[test]
        fn removal_counts_and_subset(sizes in prop::collection::vec(1i64..60, 1..4), seed in 0i64..100, pre in 0.0f64..0.6, frac in 0.0f64..=1.0, crit in 0usize..3, alloc_kind in 0usize..3, mult in 0.0f64..2.0) {
            let _g = ap_testkit::torch_lock();
            let p = params(&sizes, seed);
            let mask = partial_mask(&p, pre, seed as u64);
            let scores = match crit {
                0 => magnitude_scores(&p),
                1 => random_scores(&p, 7),
                _ => lamp_scores(&p, &mask),
            };
            let alloc = match alloc_kind {
                0 => Allocation::Global,
                1 => Allocation::Uniform,
                _ => Allocation::PerLayer { overrides: [("l0.weight".to_string(), mult)].into() },
            };
            let report = mask.report();
            let n = (frac * report.kept as f64).floor() as i64;
            let sel = select_by_scores(&scores, &mask, n, &alloc).unwrap();
            for (s, m) in sel.iter().zip(mask.tensors()) {
                prop_assert_eq!(s.logical_and(&m.le(0.5)).sum(Kind::Int64).int64_value(&[]), 0);
            }
            let removed = count(&sel);
            match alloc.layer_counts(&mask, n) {
                None => prop_assert_eq!(removed.iter().sum::<i64>(), n),
                Some(c) => {
                    prop_assert_eq!(&removed, &c);
                    for (l, (r, ld)) in removed.iter().zip(&report.layers).enumerate() {
                        // Exact integer arithmetic where the multiplier is 1 or a half.
                        let m = if l == 0 && alloc_kind == 2 { mult } else { 1.0 };
                        let expected = if m == 1.0 {
                            (n * ld.kept / report.kept.max(1)).min(ld.kept)
                        } else {
                            ((n as f64 * m * ld.kept as f64 / report.kept as f64).floor() as i64).min(ld.kept)
                        };
                        prop_assert_eq!(*r, expected);
                    }
                }
            }
            let mut after = mask.copy();
            after.remove(&sel).unwrap();
            prop_assert!(after.is_subset_of(&mask));
            prop_assert_eq!(after.kept(), mask.kept() - removed.iter().sum::<i64>());
        }
    }

    #[test]
    fn per_layer_half_rate_and_dense_layer() {
        let _g = ap_testkit::torch_lock();
        let p = params(&[100, 100, 10], 0);
        let mask = Mask::dense(&p);
        let alloc = Allocation::PerLayer {
            overrides: [
                ("l1.weight".to_string(), 0.5),
                ("l0.weight".to_string(), 0.0),
            ]
            .into(),
        };
        let sel = select_by_scores(&magnitude_scores(&p), &mask, 42, &alloc).unwrap();
        // base rate 42/210 = 0.2: l0 kept dense, l1 at 10%, l2 at 20%
        assert_eq!(count(&sel), vec![0, 10, 2]);
        let sel = select_by_scores(&magnitude_scores(&p), &mask, 42, &Allocation::Uniform).unwrap();
        assert_eq!(count(&sel), vec![20, 20, 2]);
    }

    #[test]
    fn invalid_overrides_and_counts_are_errors() {
        let _g = ap_testkit::torch_lock();
        let p = params(&[10], 0);
        let mask = Mask::dense(&p);
        let s = magnitude_scores(&p);
        let bad = Allocation::PerLayer {
            overrides: [("fc9.weight".to_string(), 0.5)].into(),
        };
        let e = select_by_scores(&s, &mask, 1, &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fc9.weight") && e.contains("l0.weight"), "{e}");
        let neg = Allocation::PerLayer {
            overrides: [("l0.weight".to_string(), -1.0)].into(),
        };
        assert!(matches!(
            neg.validate(&["l0.weight"]),
            Err(AllocationError::BadMultiplier { .. })
        ));
        for a in [Allocation::Global, Allocation::Uniform] {
            assert!(matches!(
                select_by_scores(&s, &mask, 11, &a),
                Err(SelectError::TooFew { .. })
            ));
            assert!(matches!(
                select_by_scores(&s, &mask, -1, &a),
                Err(SelectError::TooFew { .. })
            ));
        }
    }

    #[test]
    fn serde_forms() {
        assert_eq!(
            serde_json::to_string(&Allocation::Global).unwrap(),
            "\"global\""
        );
        #[derive(Deserialize)]
        struct W {
            a: Allocation,
        }
        let w: W = toml::from_str("a = \"uniform\"").unwrap();
        assert_eq!(w.a, Allocation::Uniform);
        let w: W =
            toml::from_str("a = { per_layer = { overrides = { \"fc3.weight\" = 0.5 } } }").unwrap();
        assert_eq!(w.a.multiplier("fc3.weight"), 0.5);
        assert_eq!(w.a.multiplier("fc1.weight"), 1.0);
        assert!(toml::from_str::<W>("a = \"layerwise\"").is_err());
    }
}
