//! Pruning during training, as a step hook of the training loop ([`Gradual`]): GMP's
//! cubic schedule, GraNet's prune + drop-and-grow, and RigL's drop-and-grow, each saying
//! what happens at a step through [`DuringTraining`]. Events run after the backward pass,
//! when every weight's gradient is present and not yet masked (regrowth ranks inactive
//! positions by |gradient|).

use ap_criteria::{
    ap_select_with, param_gradient_magnitude, select_largest_per_tensor, Allocation, ApConfig,
    Budget, HostCriterion,
};
use ap_mask::Mask;
use ap_tensor::{select_smallest_per_tensor, NamedParams};
use ap_train::{Optimizer, StepHook, TrainError};
use tch::{Kind, Tensor};

use crate::event::{pruning_event, EventAt, EventReport};
use crate::PruneError;

/// What a method that prunes during training does at a step.
pub trait DuringTraining {
    /// The kept-weight target of a pruning event at `iteration`, of `total` prunable
    /// weights, and how to spread it over layers; None when no pruning event is due.
    fn prune_to(&self, iteration: u64, total: i64) -> Option<(i64, &Allocation)>;
    /// The drop-and-grow step due at `iteration` of a phase of `iterations` steps, if any.
    fn drop_grow(&self, iteration: u64, iterations: u64) -> Option<DropGrow<'_>>;
}

/// The step hook: runs the events a [`DuringTraining`] method has due at each step.
pub struct Gradual<'a> {
    params: &'a NamedParams,
    mask: Mask,
    ap: Option<&'a ApConfig>,
    host: HostCriterion<'a>,
    method: &'a dyn DuringTraining,
    iterations: u64,
    /// AP's w_0: the weights at the previous event.
    phase_start: NamedParams,
    events: Vec<EventReport>,
    total: i64,
}

impl<'a> Gradual<'a> {
    /// A hook for `method` over a phase of `iterations` steps. `mask` is a handle on the
    /// run's mask: events change its tensors in place, so the optimizer's handle sees them.
    pub fn new(
        params: &'a NamedParams,
        mask: Mask,
        ap: Option<&'a ApConfig>,
        host: HostCriterion<'a>,
        method: &'a dyn DuringTraining,
        iterations: u64,
    ) -> Self {
        let total = mask.report().total;
        Gradual {
            params,
            mask,
            ap,
            host,
            method,
            iterations,
            phase_start: params.snapshot(),
            events: vec![],
            total,
        }
    }

    /// The events with the training phase's result `phase`, or the error that stopped
    /// training: a failed event is handed back as the pruning error it was, not as a
    /// training error.
    pub fn finish<T>(
        self,
        phase: Result<T, TrainError>,
    ) -> Result<(Vec<EventReport>, T), PruneError> {
        match phase {
            Ok(p) => Ok((self.events, p)),
            Err(TrainError::Hook(e)) => Err(match e.downcast::<PruneError>() {
                Ok(e) => *e,
                Err(e) => PruneError::Train(TrainError::Hook(e)),
            }),
            Err(e) => Err(PruneError::Train(e)),
        }
    }

    fn event(&mut self, iteration: u64, opt: &mut Optimizer) -> Result<(), PruneError> {
        let index = self.events.len();
        let prune = self.method.prune_to(iteration, self.total);
        let regrow = self.method.drop_grow(iteration, self.iterations);
        if prune.is_none() && regrow.is_none() {
            return Ok(());
        }
        let mut e = match prune {
            Some((target, allocation)) => {
                let surviving = self.mask.kept();
                let n = (surviving - target).max(0);
                let at = EventAt {
                    budget: Budget::from_count(n, surviving, self.ap, index),
                    index,
                    iteration: Some(iteration),
                };
                let host = HostCriterion {
                    allocation,
                    ..self.host
                };
                pruning_event(
                    self.params,
                    &mut self.mask,
                    &self.phase_start,
                    &host,
                    self.ap,
                    at,
                )?
            }
            None => EventReport::none(index, Some(iteration), self.mask.kept()),
        };
        // Pruned weights lose their optimizer state before drop-and-grow, so one that is
        // pruned and regrown in the same event starts afresh, at 0 with zero state, like
        // every new connection (GraNet applies its mask, momentum included, after pruning).
        opt.mask_state();
        if let Some(spec) = regrow {
            let ap = self.ap.filter(|a| a.in_drop_and_grow && a.active(index));
            let d = drop_and_grow(self.params, &mut self.mask, &self.phase_start, &spec, ap)?;
            e.dropped = d.host_dropped + d.ap_dropped;
            e.ap_dropped = d.ap_dropped;
            e.ap_shortfall += d.ap_shortfall;
            e.regrown = d.regrown;
        }
        opt.mask_state();
        self.phase_start = self.params.snapshot();
        self.events.push(e);
        Ok(())
    }
}

impl StepHook for Gradual<'_> {
    fn after_backward(&mut self, iteration: u64, opt: &mut Optimizer) -> Result<(), TrainError> {
        self.event(iteration, opt).map_err(|e| {
            TrainError::Hook(Box::new(PruneError::DuringTraining {
                iteration,
                source: Box::new(e),
            }))
        })
    }
}

/// How a drop count `fraction · active` is made whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropRounding {
    /// Up, as GraNet's `magnitude_death` (`math.ceil`).
    Ceil,
    /// Down, as RigL's `tf.cast(..., tf.int32)`.
    Floor,
}

/// One drop-and-grow step.
#[derive(Debug, Clone)]
pub struct DropGrow<'a> {
    /// Fraction of each layer's active weights to drop.
    pub fraction: f64,
    /// How the per-layer count is rounded.
    pub rounding: DropRounding,
    /// Layers left alone.
    pub dense_layers: &'a [String],
}

/// What one drop-and-grow step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropGrowReport {
    /// Dropped by magnitude.
    pub host_dropped: i64,
    /// Dropped by AP (only with `ap.in_drop_and_grow`).
    pub ap_dropped: i64,
    /// AP's drop budget left unused for lack of candidates.
    pub ap_shortfall: i64,
    /// Grown (= dropped, per layer).
    pub regrown: i64,
    /// Grown positions that were inactive before the step (they start at 0).
    pub new_connections: i64,
}

/// Drop-and-grow as GraNet's `truncate_weights` and RigL's update do it. Per layer not in
/// `dense_layers`: drop k = fraction · active (rounded by `rounding`) active weights with the smallest
/// |w| (with `ap`, AP takes `share` of the drop from the kept negative weights that moved
/// least, ranked globally), changing only the mask; then grow as many per layer at the
/// positions inactive after the drop — the just-dropped ones included — with the largest
/// |gradient| (ties by position). A weight active before and after keeps its value (and
/// its optimizer state); a connection inactive before the step starts at 0. Reads each
/// weight's `.grad()` (zeros where it has none).
pub fn drop_and_grow(
    params: &NamedParams,
    mask: &mut Mask,
    phase_start: &NamedParams,
    spec: &DropGrow<'_>,
    ap: Option<&ApConfig>,
) -> Result<DropGrowReport, PruneError> {
    let before = mask.copy();
    let report = before.report();
    let names: Vec<&str> = params.names().collect();
    let is_dense = |name: &str| spec.dense_layers.iter().any(|d| d == name);
    let counts: Vec<i64> = report
        .layers
        .iter()
        .map(|l| {
            if is_dense(&l.name) {
                return 0;
            }
            let k = spec.fraction * l.kept as f64;
            let k = match spec.rounding {
                DropRounding::Ceil => k.ceil(),
                DropRounding::Floor => k.floor(),
            };
            (k as i64).clamp(0, l.kept)
        })
        .collect();
    let ap_counts: Vec<i64> = counts.iter().map(|&k| Budget::of_drop(k, ap)).collect();
    let host_counts: Vec<i64> = counts.iter().zip(&ap_counts).map(|(k, a)| k - a).collect();
    let mags: Vec<Tensor> = params.tensors().iter().map(|w| w.detach().abs()).collect();
    let sel = select_smallest_per_tensor(
        &mags.iter().collect::<Vec<_>>(),
        &mask.tensors(),
        &host_counts,
    )?;
    mask.remove(&sel)?;
    let host_dropped: i64 = host_counts.iter().sum();
    let (mut ap_dropped, mut ap_shortfall) = (0, 0);
    let n_ap: i64 = ap_counts.iter().sum();
    if let (Some(a), true) = (ap, n_ap > 0) {
        // AP never touches dense layers: hide them from its candidates.
        let visible = Mask::from_entries(
            names
                .iter()
                .zip(mask.tensors())
                .map(|(n, m)| {
                    let m = if is_dense(n) {
                        m.zeros_like()
                    } else {
                        m.shallow_clone()
                    };
                    (n.to_string(), m)
                })
                .collect(),
        );
        let s = ap_select_with(params, phase_start, &visible, n_ap, &a.options)?;
        mask.remove(&s.selected)?;
        ap_dropped = s.removed;
        ap_shortfall = s.shortfall;
    }
    let after_drop = mask.report();
    let regrow: Vec<i64> = report
        .layers
        .iter()
        .zip(&after_drop.layers)
        .map(|(b, a)| b.kept - a.kept)
        .collect();
    // Grow where inactive after the drop, by |gradient| (largest first, ties by position).
    let grad = param_gradient_magnitude(params);
    let inactive: Vec<Tensor> = mask.tensors().iter().map(|m| m.le(0.5)).collect();
    let grow = select_largest_per_tensor(
        &grad.iter().collect::<Vec<_>>(),
        &inactive.iter().collect::<Vec<_>>(),
        &regrow,
    )?;
    mask.grow(&grow)?;
    // New connections start at 0; dropped ones that were not regrown become 0.
    let mut new_connections = Tensor::zeros([], (Kind::Int64, mask.tensors()[0].device()));
    tch::no_grad(|| {
        for ((g, b), w) in grow.iter().zip(before.tensors()).zip(params.tensors()) {
            let fresh = g.logical_and(&b.le(0.5));
            new_connections += fresh.sum(Kind::Int64);
            let _ = w.shallow_clone().masked_fill_(&fresh, 0.0);
        }
    });
    mask.apply(params)?;
    Ok(DropGrowReport {
        host_dropped,
        ap_dropped,
        ap_shortfall,
        regrown: regrow.iter().sum(),
        new_connections: new_connections.int64_value(&[]),
    })
}
