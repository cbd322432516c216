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
//! - a method's host criterion, dispatched ([`HostCriterion`]);
//! - regrowth (RigL, GraNet): [`param_gradient_magnitude`], [`select_largest_per_tensor`];
//! - sparse initialisation: [`erk_densities`], [`random_mask_with_densities`];
//! - AP, in one place ([`ApConfig`], [`Budget`], [`ap_select_budget`]): its settings, its
//!   share of each pruning event, and its choice — kept negative weights that moved least
//!   since the start of the current training phase (ap-spec §3), with the sign filter and
//!   score as ablation settings ([`ApOptions`]).

mod allocation;
mod ap;
mod criterion;
mod erk;
mod host;
mod saliency;
mod scores;

pub use allocation::{select_by_scores, Allocation, AllocationError};
pub use ap::{
    ap_select, ap_select_budget, ap_select_with, ApBudget, ApConfig, ApOptions, ApScore,
    ApSelection, Budget, CandidateSign,
};
pub use criterion::{Criterion, UnknownCriterion};
pub use erk::{erk_densities, random_mask_with_densities};
pub use host::{CriterionError, HostCriterion};
pub use saliency::{
    snip_scores, synflow_scores, synflow_select, try_snip_scores, try_synflow_scores,
};
pub use scores::{
    lamp_scores, magnitude_scores, param_gradient_magnitude, random_scores,
    select_largest_per_tensor,
};

#[cfg(test)]
mod test_util;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{flat, layers, named};
    use ap_mask::Mask;
    use proptest::prelude::*;
    use tch::Kind;

    proptest! {
        /// Global magnitude removes exactly n survivors, each no larger than any kept one.
        #[test]
        fn magnitude_removes_smallest(now in layers(), frac in prop_oneof![Just(0.0f64), Just(1.0f64), 0.0f64..1.0]) {
            let cur = named(&now);
            let mask = Mask::dense(&cur);
            let n = (frac * cur.numel() as f64) as i64;
            let sel = flat(&select_by_scores(&magnitude_scores(&cur), &mask, n, &Allocation::Global).unwrap());
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
        let sel =
            select_by_scores(&magnitude_scores(&cur), &mask, 8, &Allocation::Uniform).unwrap();
        let counts: Vec<i64> = sel
            .iter()
            .map(|t| t.sum(Kind::Int64).int64_value(&[]))
            .collect();
        assert_eq!(counts, vec![2, 6]);
    }
}
