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

/// Drop-and-grow settings.
pub(crate) struct Regrow {
    /// Fraction of each layer's active weights at t = 0.
    pub initial: f64,
    /// Step at which the cosine-decayed fraction reaches 0.
    pub decay_until: u64,
    /// Layers never dropped from or grown into.
    pub dense_layers: Vec<String>,
}

/// When events happen.
pub(crate) enum Schedule {
    /// GMP (and GraNet with `regrow`).
    Gmp {
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
        let mut report = None;
        let regrow = match &self.schedule {
            Schedule::Gmp {
                sparsity,
                begin,
                end,
                every,
                allocation,
                regrow,
            } => {
                if !is_event_step(iteration, *begin, *end, *every) {
                    return Ok(());
                }
                let target = gmp_target_kept(iteration, *begin, *end, *sparsity, self.total);
                let n = (self.mask.kept() - target).max(0);
                let budget = Budget::from_count(n, self.ap, index);
                let e = pruning_event(
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
                )?;
                report = Some(e);
                regrow.as_ref()
            }
            Schedule::Rigl {
                every,
                stop,
                regrow,
            } => {
                if iteration == 0 || iteration >= *stop || iteration % every != 0 {
                    return Ok(());
                }
                Some(regrow)
            }
        };
        let mut e = report.unwrap_or(EventReport {
            index,
            iteration: Some(iteration),
            surviving: self.mask.kept(),
            host_removed: 0,
            ap_removed: 0,
            ap_shortfall: 0,
            regrown: 0,
        });
        if let Some(r) = regrow {
            let frac = cosine_decay(r.initial, iteration, r.decay_until);
            let (host, ap, shortfall, grown) = drop_and_grow(
                self.params,
                self.mask,
                &self.phase_start,
                frac,
                &r.dense_layers,
                self.ap,
                index,
            )?;
            e.host_removed += host;
            e.ap_removed += ap;
            e.ap_shortfall += shortfall;
            e.regrown = grown;
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

/// Per layer: drop `floor(frac · active)` (AP takes its share of the drop globally from
/// kept negatives), zero the dropped weights, then regrow as many per layer at inactive
/// positions with the largest |gradient|. Regrown weights are 0. Returns
/// (host dropped, AP dropped, AP shortfall, regrown).
fn drop_and_grow(
    params: &NamedParams,
    mask: &mut Mask,
    phase_start: &NamedParams,
    frac: f64,
    dense_layers: &[String],
    ap: Option<&ApConfig>,
    index: usize,
) -> Result<(i64, i64, i64, i64), PruneError> {
    let before = mask.report();
    let names: Vec<&str> = params.names().collect();
    let is_dense = |name: &str| dense_layers.iter().any(|d| d == name);
    let counts: Vec<i64> = before
        .layers
        .iter()
        .map(|l| {
            if is_dense(&l.name) {
                0
            } else {
                (frac * l.kept as f64).floor() as i64
            }
        })
        .collect();
    let ap_on = ap.filter(|a| a.active(index));
    let ap_counts: Vec<i64> = counts
        .iter()
        .map(|&k| ap_on.map_or(0, |a| (a.share * k as f64).floor() as i64))
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
    let (mut ap_dropped, mut shortfall) = (0, 0);
    if let Some(a) = ap_on {
        let n_ap: i64 = ap_counts.iter().sum();
        if n_ap > 0 {
            // AP never touches dense layers: hide them from its candidates.
            let visible = Mask::from_entries(
                names
                    .iter()
                    .zip(mask.tensors())
                    .map(|(n, m)| {
                        (
                            n.to_string(),
                            if is_dense(n) {
                                m.zeros_like()
                            } else {
                                m.shallow_clone()
                            },
                        )
                    })
                    .collect(),
            );
            let s = ap_select_with(params, phase_start, &visible, n_ap, &a.options)?;
            mask.remove(&s.selected)?;
            ap_dropped = s.removed;
            shortfall = s.shortfall;
        }
    }
    mask.apply(params)?;
    let after = mask.report();
    let regrow: Vec<i64> = before
        .layers
        .iter()
        .zip(&after.layers)
        .map(|(b, a)| b.kept - a.kept)
        .collect();
    // Grow where inactive, by |gradient| (largest first = smallest of −|g|).
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
    let grown: i64 = regrow.iter().sum();
    debug_assert!(params.tensors().iter().zip(&grow).all(|(w, g)| w
        .masked_select(g)
        .abs()
        .sum(Kind::Double)
        .double_value(&[])
        == 0.0));
    Ok((host_dropped, ap_dropped, shortfall, grown))
}
