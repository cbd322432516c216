//! Pruning during training: GMP's cubic schedule, GraNet's prune + drop-and-grow, and
//! RigL's drop-and-grow, as a step hook of the training loop. Events run after the
//! backward pass, when every weight's gradient is present and not yet masked (regrowth
//! ranks inactive positions by |gradient|).

use ap_criteria::{ap_select_with, Allocation, Criterion};
use ap_mask::Mask;
use ap_tensor::{select_smallest_per_tensor, NamedParams};
use ap_train::{Optimizer, StepHook, TrainError};
use tch::{Kind, Tensor};

use crate::event::{pruning_event, Budget, EventReport, HostContext};
use crate::schedule::{cosine_decay, gmp_target_kept, is_event_step};
use crate::{ApConfig, PruneError};

/// Drop-and-grow settings of a method.
pub(crate) struct Regrow {
    /// Fraction of each layer's active weights at t = 0.
    pub initial: f64,
    /// Step at which the cosine-decayed fraction reaches 0.
    pub decay_until: u64,
    /// Layers never dropped from or grown into.
    pub dense_layers: Vec<String>,
    /// How the per-layer drop count is rounded.
    pub rounding: DropRounding,
}

/// When events happen.
pub(crate) enum Schedule {
    /// GMP (and GraNet with `regrow`: drop-and-grow from `begin` every `every` steps
    /// until training ends, pruning only up to `end`).
    Gmp {
        initial_sparsity: f64,
        sparsity: f64,
        begin: u64,
        end: u64,
        every: u64,
        allocation: Allocation,
        regrow: Option<Regrow>,
    },
    /// RigL: drop-and-grow every `every` steps before `stop`.
    Rigl {
        every: u64,
        stop: u64,
        regrow: Regrow,
    },
}

/// The step hook.
pub(crate) struct Gradual<'a> {
    params: &'a NamedParams,
    mask: &'a mut Mask,
    ap: Option<&'a ApConfig>,
    host: HostContext<'a>,
    schedule: Schedule,
    /// AP's w_0: the weights at the previous event.
    phase_start: NamedParams,
    events: Vec<EventReport>,
    error: Option<PruneError>,
    total: i64,
}

impl<'a> Gradual<'a> {
    pub fn new(
        params: &'a NamedParams,
        mask: &'a mut Mask,
        ap: Option<&'a ApConfig>,
        host: HostContext<'a>,
        schedule: Schedule,
    ) -> Self {
        let total = mask.report().total;
        Gradual {
            params,
            mask,
            ap,
            host,
            schedule,
            phase_start: params.snapshot(),
            events: vec![],
            error: None,
            total,
        }
    }

    /// The events, or the error that stopped training.
    pub fn finish(self, train_error: Option<&TrainError>) -> Result<Vec<EventReport>, PruneError> {
        match (self.error, train_error) {
            (Some(e), _) => Err(e),
            (None, Some(TrainError::Diverged { iteration, loss })) => {
                Err(PruneError::Train(TrainError::Diverged {
                    iteration: *iteration,
                    loss: *loss,
                }))
            }
            _ => Ok(self.events),
        }
    }

    fn event(&mut self, iteration: u64, opt: &mut Optimizer) -> Result<(), PruneError> {
        let index = self.events.len();
        let (prune, regrow) = match &self.schedule {
            Schedule::Gmp {
                initial_sparsity,
                sparsity,
                begin,
                end,
                every,
                allocation,
                regrow,
            } => {
                let prune = is_event_step(iteration, *begin, *end, *every).then(|| {
                    let target = gmp_target_kept(
                        iteration,
                        *begin,
                        *end,
                        *initial_sparsity,
                        *sparsity,
                        self.total,
                    );
                    (target, allocation)
                });
                let regrow = regrow
                    .as_ref()
                    .filter(|_| iteration >= *begin && (iteration - begin) % every == 0);
                (prune, regrow)
            }
            Schedule::Rigl {
                every,
                stop,
                regrow,
            } => {
                let due = iteration > 0 && iteration < *stop && iteration % every == 0;
                (None, Some(regrow).filter(|_| due))
            }
        };
        if prune.is_none() && regrow.is_none() {
            return Ok(());
        }
        let mut e = match prune {
            Some((target, allocation)) => {
                let surviving = self.mask.kept();
                let n = (surviving - target).max(0);
                let budget = Budget::from_count(n, surviving, self.ap, index);
                pruning_event(
                    self.params,
                    self.mask,
                    &self.phase_start,
                    budget,
                    Criterion::Magnitude,
                    allocation,
                    &self.host,
                    self.ap,
                    index,
                    Some(iteration),
                )?
            }
            None => EventReport::none(index, Some(iteration), self.mask.kept()),
        };
        // Pruned weights lose their optimizer state before drop-and-grow, so one that is
        // pruned and regrown in the same event starts afresh, at 0 with zero state, like
        // every new connection (GraNet applies its mask, momentum included, after pruning).
        opt.mask_state();
        if let Some(r) = regrow {
            let spec = DropGrow {
                fraction: cosine_decay(r.initial, iteration, r.decay_until),
                rounding: r.rounding,
                dense_layers: &r.dense_layers,
            };
            let ap = self.ap.filter(|a| a.in_drop_and_grow && a.active(index));
            let d = drop_and_grow(self.params, self.mask, &self.phase_start, &spec, ap)?;
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
            let msg = format!("pruning event at iteration {iteration}: {e}");
            self.error = Some(e);
            TrainError::Hook(msg)
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
    let ap_counts: Vec<i64> = counts
        .iter()
        .map(|&k| ap.map_or(0, |a| (a.share * k as f64).floor() as i64))
        .collect();
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
    // Grow where inactive after the drop, by |gradient| (largest first = smallest of −|g|).
    let neg_grad: Vec<Tensor> = params
        .tensors()
        .iter()
        .map(|w| {
            let g = w.grad();
            if g.defined() {
                -g.abs()
            } else {
                w.zeros_like()
            }
        })
        .collect();
    let inactive: Vec<Tensor> = mask.tensors().iter().map(|m| m.le(0.5)).collect();
    let grow = select_smallest_per_tensor(
        &neg_grad.iter().collect::<Vec<_>>(),
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
