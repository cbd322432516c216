//! The host criterion of a pruning event, dispatched: which weights a method's own
//! criterion removes, spread over the layers by its allocation.

use ap_mask::{Mask, NmPattern};
use ap_models::Model;
use ap_tensor::{
    derive_seed, select_smallest, select_smallest_per_tensor, NamedParams, SelectError,
};
use tch::Tensor;

use crate::{
    lamp_scores, magnitude_scores, random_scores, select_by_scores, synflow_select,
    try_snip_scores, Allocation, Criterion,
};

/// Why a host criterion could not choose.
#[derive(Debug, thiserror::Error)]
pub enum CriterionError {
    /// The selection itself failed (counts, shapes).
    #[error(transparent)]
    Select(#[from] SelectError),
    /// The criterion has no per-layer form (SynFlow prunes iteratively over the whole
    /// network).
    #[error("criterion = \"{criterion}\" prunes globally only: use allocation = \"global\"")]
    GlobalOnly {
        /// The criterion.
        criterion: Criterion,
    },
    /// The criterion cannot keep to an N:M pattern (SynFlow scores and prunes in one
    /// iterative loop of its own).
    #[error("criterion = \"{criterion}\" cannot keep to an N:M pattern")]
    NoPattern {
        /// The criterion.
        criterion: Criterion,
    },
}

/// A method's host criterion with what it may need besides the weights.
#[derive(Clone, Copy)]
pub struct HostCriterion<'a> {
    /// The criterion (magnitude, random, LAMP, SNIP, SynFlow).
    pub criterion: Criterion,
    /// How an event's count is spread over the layers.
    pub allocation: &'a Allocation,
    /// The model (SNIP and SynFlow run it).
    pub model: &'a Model,
    /// Labelled batches for SNIP.
    pub batches: &'a [(Tensor, Tensor)],
    /// Per-sample input shape for SynFlow.
    pub input_shape: &'a [i64],
    /// Seed of random scores (derived per event).
    pub seed: u64,
    /// SynFlow's scoring iterations.
    pub synflow_iterations: usize,
    /// Precomputed scores, e.g. BiP's learned |s|; used instead of the criterion's own
    /// when set (one tensor per prunable layer, in mask order; higher = kept).
    pub given_scores: Option<&'a [Tensor]>,
    /// N:M sparsity to keep to: no group goes below N kept weights
    /// ([`NmPattern::removable`]); None for unstructured pruning.
    pub pattern: Option<NmPattern>,
}

impl<'a> HostCriterion<'a> {
    /// `criterion` spread by `allocation` over `model`'s prunable weights, with nothing
    /// else: no SNIP batches, no SynFlow input shape (set those fields for SNIP and
    /// SynFlow), seed 0 for random scores, SynFlow's 100 iterations.
    pub fn new(criterion: Criterion, allocation: &'a Allocation, model: &'a Model) -> Self {
        HostCriterion {
            criterion,
            allocation,
            model,
            batches: &[],
            input_shape: &[],
            seed: 0,
            synflow_iterations: 100,
            given_scores: None,
            pattern: None,
        }
    }

    /// Per-layer counts of an event of `n`, or None when the event ranks globally
    /// (a global allocation, or SynFlow, which prunes globally only).
    pub fn layer_counts(&self, mask: &Mask, n: i64) -> Option<Vec<i64>> {
        match self.criterion {
            Criterion::Synflow => None,
            _ => self.allocation.layer_counts(mask, n),
        }
    }

    /// Chooses `n` kept weights to remove (boolean tensors in mask order, true = remove),
    /// spread over the layers by the allocation. `event` (0-based) seeds random scores.
    /// With a pattern, no group goes below N and a layer-wise count is cut to what the
    /// layer's groups can lose ([`NmPattern::capacity`]).
    pub fn select(
        &self,
        params: &NamedParams,
        mask: &Mask,
        n: i64,
        event: usize,
    ) -> Result<Vec<Tensor>, CriterionError> {
        if self.criterion == Criterion::Synflow && self.given_scores.is_none() {
            if self.pattern.is_some() {
                return Err(CriterionError::NoPattern {
                    criterion: self.criterion,
                });
            }
            return Ok(synflow_select(
                self.model,
                params,
                mask,
                self.input_shape,
                n,
                self.synflow_iterations,
            )?);
        }
        let scores = self.scores(params, mask, event)?;
        let Some(pattern) = self.pattern else {
            return Ok(select_by_scores(&scores, mask, n, self.allocation)?);
        };
        let scores: Vec<&Tensor> = scores.iter().collect();
        let eligible = pattern.removable(&scores, &mask.tensors(), mask);
        let eligible: Vec<&Tensor> = eligible.iter().collect();
        Ok(match self.allocation.layer_counts(mask, n) {
            None => select_smallest(&scores, &eligible, n)?,
            Some(counts) => {
                let cut: Vec<i64> = counts
                    .iter()
                    .zip(pattern.capacity(mask))
                    .map(|(c, cap)| (*c).min(cap))
                    .collect();
                select_smallest_per_tensor(&scores, &eligible, &cut)?
            }
        })
    }

    /// Chooses `counts[l]` kept weights of each layer `l` to remove (with a pattern, among
    /// those its groups can lose).
    pub fn select_per_layer(
        &self,
        params: &NamedParams,
        mask: &Mask,
        counts: &[i64],
        event: usize,
    ) -> Result<Vec<Tensor>, CriterionError> {
        let scores = self.scores(params, mask, event)?;
        let scores: Vec<&Tensor> = scores.iter().collect();
        let eligible = match self.pattern {
            Some(p) => p.removable(&scores, &mask.tensors(), mask),
            None => mask
                .tensors()
                .into_iter()
                .map(Tensor::shallow_clone)
                .collect(),
        };
        let eligible: Vec<&Tensor> = eligible.iter().collect();
        Ok(select_smallest_per_tensor(&scores, &eligible, counts)?)
    }

    /// The scores of a criterion that ranks weights by a score (all but SynFlow, whose
    /// pruning is iterative).
    fn scores(
        &self,
        params: &NamedParams,
        mask: &Mask,
        event: usize,
    ) -> Result<Vec<Tensor>, CriterionError> {
        if let Some(given) = self.given_scores {
            return Ok(given.iter().map(Tensor::shallow_clone).collect());
        }
        let seed = derive_seed(self.seed, &format!("random-scores-{event}"));
        Ok(match self.criterion {
            Criterion::Magnitude => magnitude_scores(params),
            Criterion::Random => random_scores(params, seed),
            Criterion::Lamp => lamp_scores(params, mask),
            Criterion::Snip => try_snip_scores(self.model, params, mask, self.batches)?,
            Criterion::Synflow => {
                return Err(CriterionError::GlobalOnly {
                    criterion: Criterion::Synflow,
                })
            }
        })
    }
}
