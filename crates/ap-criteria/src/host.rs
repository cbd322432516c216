//! The host criterion of a pruning event, dispatched: which weights a method's own
//! criterion removes, spread over the layers by its allocation.

use ap_mask::Mask;
use ap_models::Model;
use ap_tensor::{derive_seed, select_smallest_per_tensor, NamedParams, SelectError};
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
    pub fn select(
        &self,
        params: &NamedParams,
        mask: &Mask,
        n: i64,
        event: usize,
    ) -> Result<Vec<Tensor>, CriterionError> {
        Ok(match self.criterion {
            Criterion::Synflow => synflow_select(
                self.model,
                params,
                mask,
                self.input_shape,
                n,
                self.synflow_iterations,
            )?,
            _ => select_by_scores(&self.scores(params, mask, event)?, mask, n, self.allocation)?,
        })
    }

    /// Chooses `counts[l]` kept weights of each layer `l` to remove.
    pub fn select_per_layer(
        &self,
        params: &NamedParams,
        mask: &Mask,
        counts: &[i64],
        event: usize,
    ) -> Result<Vec<Tensor>, CriterionError> {
        let scores = self.scores(params, mask, event)?;
        Ok(select_smallest_per_tensor(
            &scores.iter().collect::<Vec<_>>(),
            &mask.tensors(),
            counts,
        )?)
    }

    /// The scores of a criterion that ranks weights by a score (all but SynFlow, whose
    /// pruning is iterative).
    fn scores(
        &self,
        params: &NamedParams,
        mask: &Mask,
        event: usize,
    ) -> Result<Vec<Tensor>, CriterionError> {
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
