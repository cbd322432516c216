//! One pruning event: the host criterion removes its share, then AP removes its share
//! from the kept negative weights that moved least since the phase start.

use ap_criteria::{
    ap_select_with, magnitude_scores, random_scores, select_by_scores, synflow_select,
    try_snip_scores, Allocation, Criterion,
};
use ap_mask::Mask;
use ap_models::Model;
use ap_tensor::{derive_seed, NamedParams};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::{ApConfig, PruneError};

/// What one pruning event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReport {
    /// 0-based index of the event within the run.
    pub index: usize,
    /// Training iteration at which it happened (None for events between phases).
    pub iteration: Option<u64>,
    /// Surviving weights before the event.
    pub surviving: i64,
    /// Removed by the host criterion.
    pub host_removed: i64,
    /// Removed by AP.
    pub ap_removed: i64,
    /// AP budget left unused for lack of negative candidates.
    pub ap_shortfall: i64,
    /// Weights regrown right after (GraNet, RigL); 0 for pruning-only methods.
    pub regrown: i64,
}

/// What a host criterion may need besides the weights.
pub struct HostContext<'a> {
    /// The model (SNIP and SynFlow run it).
    pub model: &'a Model,
    /// Labelled batches for SNIP.
    pub batches: &'a [(Tensor, Tensor)],
    /// Per-sample input shape for SynFlow.
    pub input_shape: &'a [i64],
    /// Seed for random scores (derived per event).
    pub seed: u64,
    /// SynFlow scoring iterations.
    pub synflow_iterations: usize,
}

/// Chooses `n` kept weights to remove with `criterion` (boolean tensors, true = remove).
pub fn host_select(
    criterion: Criterion,
    alloc: &Allocation,
    ctx: &HostContext<'_>,
    params: &NamedParams,
    mask: &Mask,
    n: i64,
    event: usize,
) -> Result<Vec<Tensor>, PruneError> {
    let seed = derive_seed(ctx.seed, &format!("random-scores-{event}"));
    Ok(match criterion {
        Criterion::Magnitude => select_by_scores(&magnitude_scores(params), mask, n, alloc)?,
        Criterion::Random => select_by_scores(&random_scores(params, seed), mask, n, alloc)?,
        Criterion::Lamp => {
            select_by_scores(&ap_criteria::lamp_scores(params, mask), mask, n, alloc)?
        }
        Criterion::Snip => select_by_scores(
            &try_snip_scores(ctx.model, params, mask, ctx.batches)?,
            mask,
            n,
            alloc,
        )?,
        Criterion::Synflow => synflow_select(
            ctx.model,
            params,
            mask,
            ctx.input_shape,
            n,
            ctx.synflow_iterations,
        )?,
    })
}

/// Budget of one event: `n` in total, `n_ap` of it AP's (0 when AP is off or outside
/// its window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Weights the event removes in total.
    pub n: i64,
    /// AP's share of them.
    pub n_ap: i64,
}

impl Budget {
    /// Round-based methods: n = floor(p·S), n_AP = floor(p_AP·S) (ap-spec §3.1).
    pub fn from_rates(surviving: i64, rate: f64, ap: Option<&ApConfig>, event: usize) -> Budget {
        let n = (rate * surviving as f64).floor() as i64;
        let n_ap = ap
            .filter(|a| a.active(event))
            .map_or(0, |a| (a.rate * surviving as f64).floor() as i64);
        Budget {
            n,
            n_ap: n_ap.min(n),
        }
    }

    /// Schedule-driven methods (one-shot, GMP, GraNet, RigL's drop): the schedule sets n;
    /// AP takes `floor(share · n)` of it.
    pub fn from_count(n: i64, ap: Option<&ApConfig>, event: usize) -> Budget {
        let n_ap = ap
            .filter(|a| a.active(event))
            .map_or(0, |a| (a.share * n as f64).floor() as i64);
        Budget { n, n_ap }
    }
}

/// Runs one event: the host removes `n − n_ap`, then AP removes up to `n_ap`; if AP
/// finds fewer candidates, the host removes the shortfall too. Pruned weights are set to 0. `phase_start` holds w_0 for AP's movement.
#[allow(clippy::too_many_arguments)]
pub fn pruning_event(
    params: &NamedParams,
    mask: &mut Mask,
    phase_start: &NamedParams,
    budget: Budget,
    criterion: Criterion,
    alloc: &Allocation,
    ctx: &HostContext<'_>,
    ap: Option<&ApConfig>,
    index: usize,
    iteration: Option<u64>,
) -> Result<EventReport, PruneError> {
    let surviving = mask.kept();
    let host = host_select(
        criterion,
        alloc,
        ctx,
        params,
        mask,
        budget.n - budget.n_ap,
        index,
    )?;
    mask.remove(&host)?;
    let host_removed = surviving - mask.kept();
    let (ap_removed, ap_shortfall) = match ap {
        Some(a) if budget.n_ap > 0 => {
            let s = ap_select_with(params, phase_start, mask, budget.n_ap, &a.options)?;
            mask.remove(&s.selected)?;
            (s.removed, s.shortfall)
        }
        _ => (0, 0),
    };
    // The host takes over AP's shortfall, so X and X+AP always reach the same density.
    let mut host_removed = host_removed;
    if ap_shortfall > 0 {
        let extra = host_select(criterion, alloc, ctx, params, mask, ap_shortfall, index)?;
        mask.remove(&extra)?;
        host_removed += ap_shortfall;
    }
    mask.apply(params)?;
    if ap_shortfall > 0 {
        tracing::warn!(
            ap_shortfall,
            event = index,
            "AP found fewer kept negative weights than its budget"
        );
    }
    tracing::info!(
        event = index,
        surviving,
        host_removed,
        ap_removed,
        "pruning event"
    );
    Ok(EventReport {
        index,
        iteration,
        surviving,
        host_removed,
        ap_removed,
        ap_shortfall,
        regrown: 0,
    })
}
