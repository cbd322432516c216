//! Pruning criteria: scores and exact-count selection of the weights to remove.
//!
//! A criterion only *chooses*; the mask is changed by the caller. Every score is
//! "higher = more important", one tensor per prunable parameter in mask order, and
//! pruning removes the smallest scores among kept positions with the exact-count,
//! tie-by-position selection of `ap_tensor::select_smallest` (never a `<=` threshold).
//!
//! - host criteria ([`Criterion`]): [`magnitude_scores`], [`random_scores`],
//!   [`lamp_scores`], [`snip_scores`], [`synflow_scores`] / [`synflow_select`]
//!   (iterative);
//! - how an event's count is spread over layers: [`Allocation`], [`select_by_scores`];
//! - regrowth (RigL, GraNet): [`gradient_magnitude`], [`select_largest`];
//! - sparse initialisation: [`erk_densities`], [`random_mask_with_densities`];
//! - AP's own choice ([`ap_select`], [`ap_select_with`]): kept negative weights that
//!   moved least since the start of the current training phase (ap-spec §3), with the
//!   sign filter and score as ablation settings ([`ApOptions`]).

mod allocation;
mod ap;
mod criterion;
mod erk;
mod saliency;
mod scores;

pub use allocation::{select_by_scores, Allocation, AllocationError};
pub use ap::{ap_select, ap_select_with, ApOptions, ApScore, ApSelection, CandidateSign};
pub use criterion::{Criterion, UnknownCriterion};
pub use erk::{erk_densities, random_mask_with_densities};
pub use saliency::{
    snip_scores, synflow_scores, synflow_select, try_snip_scores, try_synflow_scores,
};
pub use scores::{
    gradient_magnitude, lamp_scores, magnitude_scores, param_gradient_magnitude, random_scores,
    select_largest, select_largest_per_tensor,
};

use ap_mask::Mask;
use ap_tensor::{NamedParams, SelectError};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Where a count is ranked: across all layers at once, or within each layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One ranking over every prunable weight.
    #[default]
    Global,
    /// The same rate applied to each layer's survivors separately.
    LayerWise,
}

impl From<Scope> for Allocation {
    fn from(s: Scope) -> Allocation {
        match s {
            Scope::Global => Allocation::Global,
            Scope::LayerWise => Allocation::Uniform,
        }
    }
}

/// Removal chosen by magnitude: boolean tensors in mask order (true = remove).
///
/// `Global` removes exactly `n` surviving weights with the smallest |w|; `LayerWise`
/// removes `floor(rate · S_l)` from each layer, where `rate = n / S` and `S_l` are the
/// layer's survivors. Same as [`select_by_scores`] on [`magnitude_scores`].
pub fn select_magnitude(
    params: &NamedParams,
    mask: &Mask,
    n: i64,
    scope: Scope,
) -> Result<Vec<Tensor>, SelectError> {
    select_by_scores(&magnitude_scores(params), mask, n, &scope.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tch::Kind;

    fn named(vals: &[Vec<f32>]) -> NamedParams {
        NamedParams::from_entries(
            vals.iter()
                .enumerate()
                .map(|(i, v)| (format!("l{i}"), Tensor::from_slice(v)))
                .collect(),
        )
    }

    fn flat(ts: &[Tensor]) -> Vec<bool> {
        ts.iter()
            .flat_map(|t| Vec::<i64>::try_from(&t.to_kind(Kind::Int64)).unwrap())
            .map(|v| v != 0)
            .collect()
    }

    fn layers() -> impl Strategy<Value = Vec<Vec<f32>>> {
        prop::collection::vec(prop::collection::vec(-4i32..4, 1..30), 1..4).prop_map(|ls| {
            ls.into_iter()
                .map(|l| l.into_iter().map(|v| v as f32 / 2.0).collect())
                .collect()
        })
    }

    proptest! {
        /// Global magnitude removes exactly n survivors, each no larger than any kept one.
        #[test]
        fn magnitude_removes_smallest(now in layers(), frac in 0.0f64..1.0) {
            let cur = named(&now);
            let mask = Mask::dense(&cur);
            let n = (frac * cur.numel() as f64) as i64;
            let sel = flat(&select_magnitude(&cur, &mask, n, Scope::Global).unwrap());
            let mags: Vec<f32> = now.iter().flatten().map(|v| v.abs()).collect();
            prop_assert_eq!(sel.iter().filter(|&&b| b).count() as i64, n);
            let max_sel = mags.iter().zip(&sel).filter(|(_, &s)| s).map(|(m, _)| *m).fold(f32::MIN, f32::max);
            prop_assert!(mags.iter().zip(&sel).filter(|(_, &s)| !s).all(|(m, _)| *m >= max_sel));
        }
    }

    #[test]
    fn layer_wise_prunes_each_layer_at_the_rate() {
        let cur = named(&[vec![1.0; 10], vec![2.0; 30]]);
        let mask = Mask::dense(&cur);
        let sel = select_magnitude(&cur, &mask, 8, Scope::LayerWise).unwrap();
        let counts: Vec<i64> = sel
            .iter()
            .map(|t| t.sum(Kind::Int64).int64_value(&[]))
            .collect();
        assert_eq!(counts, vec![2, 6]);
    }
}
