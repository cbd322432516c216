//! One pruning event: the host criterion removes its share, then AP removes its share
//! from the kept negative weights that moved least since the phase start.

use ap_criteria::{
    ap_select_budget, magnitude_scores, random_scores, select_by_scores, synflow_select,
    try_snip_scores, Allocation, ApBudget, Criterion,
};
use ap_mask::Mask;
use ap_models::Model;
use ap_tensor::{derive_seed, select_smallest_per_tensor, NamedParams};
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
    /// Weights dropped by drop-and-grow right after the pruning (GraNet, RigL), AP's
    /// share included; density-neutral, since as many are regrown.
    #[serde(default)]
    pub dropped: i64,
    /// AP's share of `dropped` (with `ap.in_drop_and_grow`).
    #[serde(default)]
    pub ap_dropped: i64,
    /// Weights regrown right after (GraNet, RigL); 0 for pruning-only methods.
    pub regrown: i64,
}

impl EventReport {
    /// An event that pruned nothing (yet), with `surviving` weights.
    pub fn none(index: usize, iteration: Option<u64>, surviving: i64) -> EventReport {
        EventReport {
            index,
            iteration,
            surviving,
            host_removed: 0,
            ap_removed: 0,
            ap_shortfall: 0,
            dropped: 0,
            ap_dropped: 0,
            regrown: 0,
        }
    }
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

/// Chooses `n` kept weights to remove with `criterion` (boolean tensors, true = remove),
/// spread over the layers by `alloc`.
pub fn host_select(
    criterion: Criterion,
    alloc: &Allocation,
    ctx: &HostContext<'_>,
    params: &NamedParams,
    mask: &Mask,
    n: i64,
    event: usize,
) -> Result<Vec<Tensor>, PruneError> {
    Ok(match criterion {
        Criterion::Synflow => synflow_select(
            ctx.model,
            params,
            mask,
            ctx.input_shape,
            n,
            ctx.synflow_iterations,
        )?,
        _ => select_by_scores(
            &host_scores(criterion, ctx, params, mask, event)?,
            mask,
            n,
            alloc,
        )?,
    })
}

/// Chooses `counts[l]` kept weights of each layer to remove with `criterion`.
fn host_select_per_layer(
    criterion: Criterion,
    ctx: &HostContext<'_>,
    params: &NamedParams,
    mask: &Mask,
    counts: &[i64],
    event: usize,
) -> Result<Vec<Tensor>, PruneError> {
    let scores = host_scores(criterion, ctx, params, mask, event)?;
    Ok(select_smallest_per_tensor(
        &scores.iter().collect::<Vec<_>>(),
        &mask.tensors(),
        counts,
    )?)
}

/// The scores of a criterion that ranks weights by a score (all but SynFlow, whose
/// pruning is iterative).
fn host_scores(
    criterion: Criterion,
    ctx: &HostContext<'_>,
    params: &NamedParams,
    mask: &Mask,
    event: usize,
) -> Result<Vec<Tensor>, PruneError> {
    let seed = derive_seed(ctx.seed, &format!("random-scores-{event}"));
    Ok(match criterion {
        Criterion::Magnitude => magnitude_scores(params),
        Criterion::Random => random_scores(params, seed),
        Criterion::Lamp => ap_criteria::lamp_scores(params, mask),
        Criterion::Snip => try_snip_scores(ctx.model, params, mask, ctx.batches)?,
        Criterion::Synflow => {
            return Err(PruneError::Config(
                "criterion = \"synflow\" prunes globally only: use allocation = \"global\"".into(),
            ))
        }
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

    /// Events whose size a schedule sets (one-shot, pruning at initialisation, GMP and
    /// GraNet steps): the event removes `n` of the `surviving` weights and AP takes
    /// `min(floor(share · n), floor(survivor_share · (S − n)))` — at most a fraction of
    /// the event and at most a fraction of what survives it. With the defaults (0.1,
    /// 0.025) this is exactly the released code's 2% of S at p = 20% (2.5% of the 80%
    /// that survive), and a 95% one-shot event gives AP 0.125% of S, not 9.5%
    /// (docs/decisions.md, "AP's budget in events a schedule sets").
    pub fn from_count(n: i64, surviving: i64, ap: Option<&ApConfig>, event: usize) -> Budget {
        let n_ap = ap.filter(|a| a.active(event)).map_or(0, |a| {
            let of_event = (a.share * n as f64).floor() as i64;
            let of_survivors = (a.survivor_share * (surviving - n).max(0) as f64).floor() as i64;
            of_event.min(of_survivors)
        });
        Budget { n, n_ap }
    }
}

/// Runs one event: the host removes `n − n_ap`, then AP removes up to `n_ap`; if AP
/// finds fewer candidates, the host removes the shortfall too, so X and X+AP reach the
/// same density. With a layer-wise allocation both keep to its per-layer counts (AP's
/// per layer from the same allocation of `n_ap`, a layer's shortfall made up in that
/// layer). Pruned weights are set to 0. `phase_start` holds w_0 for AP's movement.
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
    let ap = ap.filter(|_| budget.n_ap > 0);
    // SynFlow prunes globally (validation rejects it with another allocation).
    let layer_totals = match criterion {
        Criterion::Synflow => None,
        _ => alloc.layer_counts(mask, budget.n),
    };
    let (ap_removed, ap_shortfall) = match (&layer_totals, ap) {
        (None, None) => {
            let host = host_select(criterion, alloc, ctx, params, mask, budget.n, index)?;
            mask.remove(&host)?;
            (0, 0)
        }
        (None, Some(a)) => {
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
            let s = ap_select_budget(
                params,
                phase_start,
                mask,
                ApBudget::Global(budget.n_ap),
                &a.options,
            )?;
            mask.remove(&s.selected)?;
            if s.shortfall > 0 {
                let extra = host_select(criterion, alloc, ctx, params, mask, s.shortfall, index)?;
                mask.remove(&extra)?;
            }
            (s.removed, s.shortfall)
        }
        (Some(totals), a) => {
            let ap_counts = match a {
                Some(_) => alloc
                    .layer_counts(mask, budget.n_ap)
                    .expect("a layer-wise allocation has layer counts"),
                None => vec![0; totals.len()],
            };
            let host_counts: Vec<i64> = totals.iter().zip(&ap_counts).map(|(t, a)| t - a).collect();
            let host = host_select_per_layer(criterion, ctx, params, mask, &host_counts, index)?;
            mask.remove(&host)?;
            match a {
                None => (0, 0),
                Some(a) => {
                    let s = ap_select_budget(
                        params,
                        phase_start,
                        mask,
                        ApBudget::PerLayer(ap_counts),
                        &a.options,
                    )?;
                    mask.remove(&s.selected)?;
                    if s.shortfall > 0 {
                        let short = s.layer_shortfall.clone().expect("per-layer budget");
                        let extra =
                            host_select_per_layer(criterion, ctx, params, mask, &short, index)?;
                        mask.remove(&extra)?;
                    }
                    (s.removed, s.shortfall)
                }
            }
        }
    };
    // Counted, not assumed: what the host removed is what left the mask besides AP's.
    let host_removed = surviving - mask.kept() - ap_removed;
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
        dropped: 0,
        ap_dropped: 0,
        regrown: 0,
    })
}
