//! One pruning event: the host criterion removes its share, then AP removes its share
//! from the kept negative weights that moved least since the phase start.

use ap_criteria::{ap_select_budget, ApBudget, ApConfig, Budget, HostCriterion};
use ap_mask::{Mask, NmPattern};
use ap_tensor::NamedParams;
use serde::{Deserialize, Serialize};

use crate::PruneError;

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

/// Which event this is and how much it removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventAt {
    /// How many weights the event removes, and AP's share.
    pub budget: Budget,
    /// 0-based index of the event within the run (AP's window, random scores' seed).
    pub index: usize,
    /// Training iteration at which it happens (None between phases).
    pub iteration: Option<u64>,
}

/// Runs one event: the host removes `n − n_ap`, then AP removes up to `n_ap`; if AP
/// finds fewer candidates, the host removes the shortfall too, so X and X+AP reach the
/// same density. With a layer-wise allocation both keep to its per-layer counts (AP's
/// per layer from the same allocation of `n_ap`, a layer's shortfall made up in that
/// layer). Pruned weights are set to 0. `phase_start` holds w_0 for AP's movement.
///
/// With an N:M pattern (`host.pattern`) both choosers keep every group at N or more, so
/// the event removes at most what the groups can lose ([`NmPattern::capacity`]); an event
/// that would leave fewer weights than that floor removes exactly the capacity, so every
/// group ends at N (the method's last event, when it prunes to the pattern's density).
pub fn pruning_event(
    params: &NamedParams,
    mask: &mut Mask,
    phase_start: &NamedParams,
    host: &HostCriterion<'_>,
    ap: Option<&ApConfig>,
    at: EventAt,
) -> Result<EventReport, PruneError> {
    let surviving = mask.kept();
    let (at, layer_totals) = match host.pattern {
        Some(p) => within_pattern(&p, mask, host, at),
        None => (at, host.layer_counts(mask, at.budget.n)),
    };
    let ap = ap.filter(|_| at.budget.n_ap > 0);
    let sides = EventSides {
        params,
        phase_start,
        host,
        ap,
        at,
    };
    let (ap_removed, ap_shortfall) = match layer_totals {
        None => sides.global(mask)?,
        Some(totals) => sides.layer_wise(mask, &totals)?,
    };
    // Counted, not assumed: what the host removed is what left the mask besides AP's.
    let host_removed = surviving - mask.kept() - ap_removed;
    mask.apply(params)?;
    if ap_shortfall > 0 {
        tracing::warn!(
            ap_shortfall,
            event = at.index,
            "AP found fewer kept negative weights than its budget"
        );
    }
    tracing::info!(
        event = at.index,
        surviving,
        host_removed,
        ap_removed,
        "pruning event"
    );
    Ok(EventReport {
        host_removed,
        ap_removed,
        ap_shortfall,
        ..EventReport::none(at.index, at.iteration, surviving)
    })
}

/// The event `at` cut to what N:M `pattern` lets `mask` lose, with its per-layer totals
/// (None for a global ranking): at most each layer's capacity, and all of it when the
/// event would take the network below the pattern's floor. AP's share is cut with it.
fn within_pattern(
    pattern: &NmPattern,
    mask: &Mask,
    host: &HostCriterion<'_>,
    at: EventAt,
) -> (EventAt, Option<Vec<i64>>) {
    let caps = pattern.capacity(mask);
    let capacity: i64 = caps.iter().sum();
    let to_floor = at.budget.n >= capacity;
    let n = if to_floor { capacity } else { at.budget.n };
    let totals = host.layer_counts(mask, at.budget.n).map(|counts| {
        counts
            .iter()
            .zip(&caps)
            .map(|(c, cap)| if to_floor { *cap } else { (*c).min(*cap) })
            .collect::<Vec<i64>>()
    });
    let n = totals.as_ref().map_or(n, |t| t.iter().sum());
    let budget = Budget {
        n,
        n_ap: at.budget.n_ap.min(n),
    };
    (EventAt { budget, ..at }, totals)
}

/// The two choosers of one event and what they read.
struct EventSides<'e> {
    params: &'e NamedParams,
    phase_start: &'e NamedParams,
    host: &'e HostCriterion<'e>,
    ap: Option<&'e ApConfig>,
    at: EventAt,
}

impl EventSides<'_> {
    /// Both rank across layers. Returns AP's (removed, shortfall).
    fn global(&self, mask: &mut Mask) -> Result<(i64, i64), PruneError> {
        let (n, index) = (self.at.budget.n, self.at.index);
        let n_ap = self.ap.map_or(0, |_| self.at.budget.n_ap);
        mask.remove(&self.host.select(self.params, mask, n - n_ap, index)?)?;
        self.ap_share(mask, ApBudget::Global(n_ap))
    }

    /// Both keep to the allocation's per-layer counts `totals`; AP's shortfall in a layer
    /// is made up in that layer. Returns AP's (removed, shortfall).
    fn layer_wise(&self, mask: &mut Mask, totals: &[i64]) -> Result<(i64, i64), PruneError> {
        let ap_counts = match self.ap {
            Some(_) => self
                .host
                .allocation
                .layer_counts(mask, self.at.budget.n_ap)
                .expect("a layer-wise allocation has layer counts")
                .into_iter()
                .zip(totals)
                .map(|(a, t)| a.min(*t))
                .collect(),
            None => vec![0; totals.len()],
        };
        let host_counts: Vec<i64> = totals.iter().zip(&ap_counts).map(|(t, a)| t - a).collect();
        let host = self
            .host
            .select_per_layer(self.params, mask, &host_counts, self.at.index)?;
        mask.remove(&host)?;
        self.ap_share(mask, ApBudget::PerLayer(ap_counts))
    }

    /// AP's share after the host's: up to `budget` kept negative weights that moved least;
    /// the host makes up a shortfall (per layer with a per-layer budget). Returns AP's
    /// (removed, shortfall).
    fn ap_share(&self, mask: &mut Mask, budget: ApBudget) -> Result<(i64, i64), PruneError> {
        let Some(a) = self.ap else {
            return Ok((0, 0));
        };
        let (params, index) = (self.params, self.at.index);
        let pattern = self.host.pattern.as_ref();
        let s = ap_select_budget(params, self.phase_start, mask, budget, &a.options, pattern)?;
        mask.remove(&s.selected)?;
        if s.shortfall > 0 {
            let extra = match &s.layer_shortfall {
                Some(short) => self.host.select_per_layer(params, mask, short, index)?,
                None => self.host.select(params, mask, s.shortfall, index)?,
            };
            mask.remove(&extra)?;
        }
        Ok((s.removed, s.shortfall))
    }
}
