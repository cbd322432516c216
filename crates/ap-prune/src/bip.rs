//! BiP: pruning as bi-level optimisation (Zhang et al., "Advancing Model Pruning via
//! Bi-level Optimization", NeurIPS 2022).
//!
//! Every prunable weight tensor θ has a real-valued score tensor s of its shape. The mask
//! m keeps the k = round(density · S) largest |s| over all prunable layers (exact count,
//! ties by position) and the network computes with w = m ⊙ θ. Each iteration:
//!
//! 1. **lower level**: one step of the recipe's optimizer (learning rate `lower_lr`) on
//!    the weights and biases with the mask fixed, on batch A of the run's data order:
//!    the masked step of [`ap_train::Optimizer`], so ∇θ = m ⊙ ∇w ℓ;
//! 2. **upper level**: on an independent batch B (its own shuffled order of the training
//!    split), with the updated θ, the score gradient through the straight-through top-k,
//!    g_s = sign(s) ⊙ θ ⊙ ∇w ℓ, plus the implicit-gradient term of the reference,
//!    −λ · g_s ⊙ g_s (λ = `implicit_lr`); s takes one SGD step (momentum 0.9, the recipe's
//!    weight decay, learning rate `upper_lr` shaped by the recipe's schedule), and m is
//!    recomputed from the new s. Revived weights come back with θ's value; the optimizer
//!    state of weights that left the mask is zeroed.
//!
//! θ is a dense copy of the prunable weights: kept positions follow the trained weights,
//! pruned positions keep their last value. Scores start at the (pre-trained) weights, so
//! the first mask is global magnitude. At the end of the bi-level phase the final mask is
//! made from the dense mask as one pruning event with the learned |s| as the host's
//! scores ([`crate::pruning_event`]), so AP takes its share as in any method; without AP
//! that event is exactly the top-k of |s|.

use std::cell::Cell;
use std::time::Instant;

use ap_criteria::{Allocation, ApConfig, Budget, Criterion, HostCriterion};
use ap_data::{ShuffledBatches, Split};
use ap_mask::{Mask, NmPattern};
use ap_models::Model;
use ap_tensor::{
    derive_seed, first_n_with_ties, flat_cat, kth_smallest, smallest_n_at, split_like, FieldError,
    NamedParams, SelectError, SAMPLE,
};
use ap_train::{NoHook, Optimizer, OptimizerSpec, StepHook, TrainConfig, TrainError};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::reach::{follow_events, LayerShape};
use crate::{
    check_fraction, pruning_event, Checkpoint, EventAt, EventReport, PruneError, PruningMethod,
    RunContext,
};

/// Momentum of the score optimizer (the reference's mask optimizer: SGD, momentum 0.9).
pub const SCORE_MOMENTUM: f64 = 0.9;

/// BiP: bi-level optimisation of a mask (scores, upper level) and the weights (lower
/// level) to `density`, after dense pre-training, optionally followed by fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BipConfig {
    /// Target density (kept weights over all prunable weights), held during the whole
    /// bi-level phase.
    pub density: f64,
    /// Learning rate α of the lower level (the weights); replaces the recipe's rate, the
    /// recipe's optimizer kind, schedule and weight decay stay.
    #[serde(default = "BipConfig::default_lower_lr")]
    pub lower_lr: f64,
    /// Learning rate β of the upper level (the scores), shaped by the recipe's schedule.
    #[serde(default = "BipConfig::default_upper_lr")]
    pub upper_lr: f64,
    /// Coefficient λ of the implicit-gradient term −λ · g_s ⊙ g_s (the reference's `lr2`).
    #[serde(default = "BipConfig::default_implicit_lr")]
    pub implicit_lr: f64,
    /// Round 0 trains the dense network with the recipe first (BiP prunes a pre-trained
    /// network).
    #[serde(default = "BipConfig::default_pretrain")]
    pub pretrain: bool,
    /// Bi-level iterations (default: the recipe's iterations).
    #[serde(default)]
    pub iterations: Option<u64>,
    /// Fine-tuning iterations after the bi-level phase (default: none, as the paper).
    #[serde(default)]
    pub fine_tune_iterations: Option<u64>,
}

impl BipConfig {
    /// Default of `lower_lr`: the paper's α = 0.01.
    pub fn default_lower_lr() -> f64 {
        0.01
    }

    /// Default of `upper_lr`: the paper's β = 0.1.
    pub fn default_upper_lr() -> f64 {
        0.1
    }

    /// Default of `implicit_lr`: the reference's `lr2` = 1e-4 (1/γ).
    pub fn default_implicit_lr() -> f64 {
        1e-4
    }

    /// Default of `pretrain`: true.
    pub fn default_pretrain() -> bool {
        true
    }

    /// `density` with every other setting at its default.
    pub fn with_density(density: f64) -> BipConfig {
        BipConfig {
            density,
            lower_lr: Self::default_lower_lr(),
            upper_lr: Self::default_upper_lr(),
            implicit_lr: Self::default_implicit_lr(),
            pretrain: true,
            iterations: None,
            fine_tune_iterations: None,
        }
    }

    /// The round of the bi-level phase (1 after pre-training, else 0).
    fn bilevel_round(&self) -> usize {
        usize::from(self.pretrain)
    }

    /// The settings of one upper-level step at the recipe's weight decay.
    fn upper(&self, train: &TrainConfig) -> UpperStep {
        UpperStep {
            lr: self.upper_lr,
            implicit_lr: self.implicit_lr,
            momentum: SCORE_MOMENTUM,
            weight_decay: train.optimizer.weight_decay(),
        }
    }

    /// The lower level's training: the recipe with `lower_lr` and `iterations`.
    pub fn lower_config(&self, train: &TrainConfig) -> TrainConfig {
        TrainConfig {
            optimizer: with_lr(&train.optimizer, self.lower_lr),
            iterations: self.iterations.unwrap_or(train.iterations),
            ..train.clone()
        }
    }
}

/// `spec` with its learning rate set to `lr`.
fn with_lr(spec: &OptimizerSpec, lr: f64) -> OptimizerSpec {
    let mut spec = spec.clone();
    match &mut spec {
        OptimizerSpec::Sgd { lr: l, .. } | OptimizerSpec::Adam { lr: l, .. } => *l = lr,
    }
    spec
}

/// Kept count of a BiP mask over `total` prunable weights.
pub fn kept_count(density: f64, total: i64) -> i64 {
    (density * total as f64).round() as i64
}

/// Relative half-width of the band around the previous boundary in which
/// [`top_k_mask_near`] looks for the new one before ranking everything.
const BAND: f64 = 0.05;

/// The top-`keep` mask of |scores| over all tensors together (0/1 in `kind`): exactly
/// `keep` ones; of equal |s| the earlier position (layer order, then row-major) is
/// removed first, as [`ap_tensor::select_smallest`] ranks.
pub fn top_k_mask(scores: &[Tensor], keep: i64, kind: Kind) -> Result<Vec<Tensor>, PruneError> {
    Ok(top_k_mask_near(scores, keep, kind, None)?.0)
}

/// [`top_k_mask`], the same mask, found faster when the boundary moved little: `hint` is
/// the previous boundary (the largest removed |s|); when the count below it and in a band
/// of ±5% around it shows the new boundary inside the band, only the band is ranked
/// (selection and tie rule as [`ap_tensor::select_smallest`]), else everything is.
/// Returns the mask and the new boundary (None when nothing is removed).
pub fn top_k_mask_near(
    scores: &[Tensor],
    keep: i64,
    kind: Kind,
    hint: Option<f64>,
) -> Result<(Vec<Tensor>, Option<f64>), PruneError> {
    let abs: Vec<Tensor> = scores.iter().map(Tensor::abs).collect();
    let refs: Vec<&Tensor> = abs.iter().collect();
    let total: i64 = scores.iter().map(Tensor::numel).sum::<usize>() as i64;
    let remove = total - keep;
    if !(0..=total).contains(&remove) {
        return Err(SelectError::TooFew {
            requested: remove,
            eligible: total,
        }
        .into());
    }
    if remove == 0 {
        let ones = abs.iter().map(|a| a.ones_like().to_kind(kind)).collect();
        return Ok((ones, None));
    }
    // Every position is eligible: select_smallest's rule without its eligibility gather.
    let flat = flat_cat(&refs, None);
    let banded = hint
        .filter(|t| t.is_finite() && *t > 0.0)
        .and_then(|t| band_select(&flat, remove, t));
    let (removed, kth) = match banded {
        Some(found) => found,
        None => {
            let (kth, rank) = kth_smallest(&flat, remove, SAMPLE);
            (smallest_n_at(&flat, kth, remove, rank), kth)
        }
    };
    let mask = split_like(&removed.logical_not().to_kind(kind), &refs);
    Ok((mask, Some(kth)))
}

/// The `remove` smallest of `flat` (true = removed) and the boundary value, when the
/// boundary lies in [t(1 − BAND), t(1 + BAND)]: everything below the band, then the
/// band's first `remove − below` by value and position. None when it lies outside.
fn band_select(flat: &Tensor, remove: i64, t: f64) -> Option<(Tensor, f64)> {
    let below = flat.lt(t * (1.0 - BAND));
    let within = flat.le(t * (1.0 + BAND)).logical_and(&below.logical_not());
    let b = below.sum(Kind::Int64).int64_value(&[]);
    let w = within.sum(Kind::Int64).int64_value(&[]);
    if !(b < remove && remove <= b + w) {
        return None;
    }
    // Band positions in ascending order, so ties keep the position order.
    let idx = within.nonzero().squeeze_dim(1);
    let band = flat.index_select(0, &idx);
    let n = remove - b;
    let (kth, _) = band.kthvalue(n, 0, false);
    let take = first_n_with_ties(&band, &kth, n);
    Some((below.index_copy(0, &idx, &take), kth.double_value(&[])))
}

/// The settings of one upper-level (score) step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpperStep {
    /// Learning rate β of this step.
    pub lr: f64,
    /// Coefficient λ of the implicit-gradient term.
    pub implicit_lr: f64,
    /// SGD momentum of the scores.
    pub momentum: f64,
    /// L2 weight decay of the scores.
    pub weight_decay: f64,
}

/// What BiP carries between iterations: θ (a dense copy of the prunable weights), the
/// scores s, their momentum buffers and the kept count k.
#[derive(Debug)]
pub struct BipState {
    /// θ, in mask order: kept positions follow the trained weights, pruned positions keep
    /// their last value.
    pub theta: NamedParams,
    /// The scores s, one tensor per prunable layer (mask order).
    pub scores: Vec<Tensor>,
    momentum: Vec<Option<Tensor>>,
    /// Weights kept by the mask.
    pub keep: i64,
    /// The last mask's boundary |s| (where the next top-k looks first).
    boundary: Cell<Option<f64>>,
    /// With an N:M pattern the mask keeps the N largest |s| of every group instead of the
    /// global top-k (a layer without groups stays dense).
    pattern: Option<NmPattern>,
}

impl BipState {
    /// The state at the start of the bi-level phase: θ = the current weights, s = θ
    /// (`scaled_score_init`: the first mask is global magnitude), k = round(density · S).
    pub fn new(prunable: &NamedParams, density: f64) -> BipState {
        let theta = prunable.snapshot();
        let scores = theta.iter().map(|(_, t)| t.copy()).collect();
        BipState {
            momentum: (0..theta.len()).map(|_| None).collect(),
            keep: kept_count(density, prunable.numel()),
            boundary: Cell::new(None),
            theta,
            scores,
            pattern: None,
        }
    }

    /// The state keeping to N:M `pattern` (None: unstructured): every mask keeps the N
    /// largest |s| of each group ([`NmPattern::keep_top`]).
    pub fn with_pattern(self, pattern: Option<NmPattern>) -> BipState {
        BipState { pattern, ..self }
    }

    /// Sets `mask` (in place, so the optimizer sees it) to the top-k of |s| and the
    /// weights `prunable` to m ⊙ θ.
    pub fn set_mask(&self, prunable: &NamedParams, mask: &Mask) -> Result<(), PruneError> {
        let kind = mask.tensors().first().map_or(Kind::Float, |t| t.kind());
        let top = match &self.pattern {
            Some(p) => self
                .scores
                .iter()
                .map(|s| p.keep_top(&s.abs()).to_kind(kind))
                .collect(),
            None => {
                let (top, boundary) =
                    top_k_mask_near(&self.scores, self.keep, kind, self.boundary.get())?;
                self.boundary.set(boundary);
                top
            }
        };
        tch::no_grad(|| {
            for ((m, new), ((_, w), (_, th))) in mask
                .tensors()
                .into_iter()
                .zip(&top)
                .zip(prunable.iter().zip(self.theta.iter()))
            {
                m.shallow_clone().copy_(new);
                w.shallow_clone().copy_(&(th * new));
            }
        });
        Ok(())
    }

    /// θ takes the trained weights at the positions `mask` keeps (after a lower step).
    pub fn follow_weights(&self, prunable: &NamedParams, mask: &Mask) {
        tch::no_grad(|| {
            for ((_, th), ((_, w), m)) in self.theta.iter().zip(prunable.iter().zip(mask.tensors()))
            {
                let next = w.detach().where_self(&m.gt(0.5), th);
                th.shallow_clone().copy_(&next);
            }
        });
    }

    /// One upper-level step on batch `(x, y)`, after a lower step: θ follows the weights,
    /// g_s = sign(s) ⊙ θ ⊙ ∇w ℓ at w = m ⊙ θ, s ← SGD(g_s − λ g_s ⊙ g_s), the mask
    /// becomes the top-k of the new |s| and the weights m ⊙ θ; `opt`'s state is zeroed
    /// where the mask no longer keeps a weight. Gradients are cleared after.
    #[allow(clippy::too_many_arguments)] // one step's inputs, each needed
    pub fn upper_step(
        &mut self,
        model: &Model,
        prunable: &NamedParams,
        mask: &Mask,
        opt: &mut Optimizer,
        (x, y): (&Tensor, &Tensor),
        step: UpperStep,
    ) -> Result<(), PruneError> {
        self.follow_weights(prunable, mask);
        opt.zero_grad();
        let loss = model.forward(x, true).cross_entropy_for_logits(y);
        loss.backward();
        tch::no_grad(|| {
            for (i, ((_, w), (_, th))) in prunable.iter().zip(self.theta.iter()).enumerate() {
                let gw = w.grad();
                let s = &self.scores[i];
                let gs = s.sign() * th * &gw;
                // g_s − λ·g_s⊙g_s, then L2 decay of s.
                let mut d = &gs - gs.square() * step.implicit_lr;
                if step.weight_decay != 0.0 {
                    d += s * step.weight_decay;
                }
                let buf = match self.momentum[i].take() {
                    Some(b) if step.momentum != 0.0 => b * step.momentum + &d,
                    _ => d,
                };
                s.shallow_clone().copy_(&(s - &buf * step.lr));
                self.momentum[i] = Some(buf);
            }
        });
        opt.zero_grad();
        self.set_mask(prunable, mask)?;
        opt.mask_state();
        Ok(())
    }

    /// |s|, the host's scores of the final event.
    pub fn abs_scores(&self) -> Vec<Tensor> {
        self.scores.iter().map(Tensor::abs).collect()
    }
}

/// One whole BiP iteration outside a training loop (differential tests, benchmarks):
/// the lower step of `opt` at `lower_lr` on batch `a`, then [`BipState::upper_step`] on
/// batch `b`. `mask` must be shared with `opt` and be the top-k of the state's scores.
#[allow(clippy::too_many_arguments)] // one iteration's inputs, each needed
pub fn bip_iteration(
    model: &Model,
    prunable: &NamedParams,
    mask: &Mask,
    state: &mut BipState,
    opt: &mut Optimizer,
    a: (&Tensor, &Tensor),
    b: (&Tensor, &Tensor),
    lower_lr: f64,
    upper: UpperStep,
) -> Result<(), PruneError> {
    opt.zero_grad();
    let loss = model.forward(a.0, true).cross_entropy_for_logits(a.1);
    loss.backward();
    opt.step(lower_lr);
    state.upper_step(model, prunable, mask, opt, b, upper)
}

/// The upper level as a [`StepHook`]: after each lower step, one score step on the next
/// batch of its own data order.
struct UpperHook<'h> {
    state: BipState,
    model: &'h Model,
    prunable: &'h NamedParams,
    mask: Mask,
    train: &'h Split,
    cfg: &'h TrainConfig,
    upper: UpperStep,
    seed: u64,
    epoch: u64,
    batches: Option<ShuffledBatches>,
}

impl UpperHook<'_> {
    /// Batch B's indices: the next batch of the upper level's own shuffled epochs.
    fn next_batch(&mut self) -> Result<Tensor, TrainError> {
        loop {
            if let Some(idx) = self.batches.as_mut().and_then(Iterator::next) {
                return Ok(idx);
            }
            if self.batches.is_some() {
                self.epoch += 1;
            }
            self.batches = Some(self.train.shuffled_batches(
                self.cfg.batch_size,
                self.seed,
                self.epoch,
            )?);
        }
    }
}

impl StepHook for UpperHook<'_> {
    fn after_step(&mut self, iteration: u64, opt: &mut Optimizer) -> Result<(), TrainError> {
        let idx = self.next_batch()?;
        let (x, y) = self.train.batch(&idx);
        let x = self.cfg.augment.apply(&x, self.seed, iteration);
        // The upper rate follows the recipe's schedule and warm-up, as the lower one.
        let scale = opt.last_lr().unwrap_or(self.cfg.optimizer.lr()) / self.cfg.optimizer.lr();
        let step = UpperStep {
            lr: self.upper.lr * scale,
            ..self.upper
        };
        self.state
            .upper_step(self.model, self.prunable, &self.mask, opt, (&x, &y), step)
            .map_err(|e| TrainError::Hook(Box::new(e)))
    }
}

impl PruningMethod for BipConfig {
    fn name(&self) -> String {
        "bip".into()
    }

    fn round_count(&self) -> usize {
        self.bilevel_round() + 1 + usize::from(self.fine_tune_iterations.is_some())
    }

    fn resumable(&self) -> bool {
        self.round_count() > 1
    }

    /// A bi-level iteration runs two forward and backward passes: it counts as two
    /// training iterations.
    fn iterations_from(&self, first_round: usize, iterations: u64) -> u64 {
        let bilevel = 2 * self.iterations.unwrap_or(iterations);
        let fine = self.fine_tune_iterations.unwrap_or(0);
        let rounds = [
            self.pretrain.then_some(iterations),
            Some(bilevel),
            self.fine_tune_iterations.map(|_| fine),
        ];
        rounds.iter().flatten().skip(first_round).sum()
    }

    fn check_layers(&self, layers: &[LayerShape]) -> Result<(), PruneError> {
        let d = self.density;
        let n = |s: i64| s - kept_count(d, s);
        let label = |_| format!("= {d}");
        follow_events(layers, &Allocation::Global, 1, n, ("prune.density", label))
    }

    fn check_pattern(&self, pattern: &NmPattern) -> Result<(), PruneError> {
        crate::check_pattern_density("density", self.density, pattern)
    }

    fn validate(&self, _train: &TrainConfig, _ap: Option<&ApConfig>) -> Result<(), PruneError> {
        check_fraction("density", self.density)?;
        for (name, v) in [("lower_lr", self.lower_lr), ("upper_lr", self.upper_lr)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(FieldError::out_of(format!("prune.{name}"), v, "(0, ∞)").into());
            }
        }
        if !(self.implicit_lr >= 0.0 && self.implicit_lr.is_finite()) {
            return Err(FieldError::out_of("prune.implicit_lr", self.implicit_lr, "[0, ∞)").into());
        }
        for (name, v) in [
            ("iterations", self.iterations),
            ("fine_tune_iterations", self.fine_tune_iterations),
        ] {
            if v == Some(0) {
                return Err(FieldError::new(format!("prune.{name}"), "must be at least 1").into());
            }
        }
        Ok(())
    }

    fn run(
        &self,
        ctx: &mut RunContext<'_>,
        _resumed: Option<&Checkpoint>,
    ) -> Result<(), PruneError> {
        let train = ctx.train_config();
        let first_round = ctx.first_round();
        let bilevel = self.bilevel_round();
        if self.pretrain && first_round == 0 {
            let t0 = Instant::now();
            let phase = ctx.train(0, train, 0, &mut NoHook)?;
            ctx.finish_round(0, t0, vec![], phase, &[])?;
        }
        if first_round <= bilevel {
            self.bilevel_phase(ctx, bilevel)?;
        }
        if let Some(iterations) = self.fine_tune_iterations {
            let round = bilevel + 1;
            if first_round <= round {
                let t0 = Instant::now();
                let fine = TrainConfig {
                    iterations,
                    ..train.clone()
                };
                let phase = ctx.train(round, &fine, 0, &mut NoHook)?;
                ctx.finish_round(round, t0, vec![], phase, &[])?;
            }
        }
        Ok(())
    }
}

impl BipConfig {
    /// The bi-level round: scores from the current weights, the lower level trained by
    /// the run's loop with the upper level as its hook, then the final mask as one event
    /// from the dense mask (host: |s|; AP's movement origin: the weights at the start of
    /// the phase).
    fn bilevel_phase(&self, ctx: &mut RunContext<'_>, round: usize) -> Result<(), PruneError> {
        let t0 = Instant::now();
        let train = ctx.train_config();
        let phase_start = ctx.prunable.snapshot();
        let state = BipState::new(&ctx.prunable, self.density).with_pattern(ctx.setup.pattern);
        state.set_mask(&ctx.prunable, &ctx.mask)?;
        let lower = self.lower_config(train);
        let prunable = NamedParams::from_entries(
            ctx.prunable
                .iter()
                .map(|(n, t)| (n.to_string(), t.shallow_clone()))
                .collect(),
        );
        let mut hook = UpperHook {
            state,
            model: ctx.setup.model,
            prunable: &prunable,
            mask: ctx.mask.shallow_clone(),
            train: &ctx.setup.data.train,
            cfg: &lower,
            upper: self.upper(train),
            seed: derive_seed(ctx.setup.seeds.data, "bip-upper"),
            epoch: 0,
            batches: None,
        };
        let phase = match ctx.train(round, &lower, 0, &mut hook) {
            Err(TrainError::Hook(e)) => match e.downcast::<PruneError>() {
                Ok(p) => return Err(*p),
                Err(e) => return Err(TrainError::Hook(e).into()),
            },
            other => other?,
        };
        let state = hook.state;
        let event = final_event(ctx, &state, &phase_start)?;
        ctx.finish_round(round, t0, vec![event], phase, &[])
    }
}

/// The final mask as one event from the dense mask: θ back in the weights, the host
/// removes by |s|, AP its share of `Budget::from_count` with movement from
/// `phase_start`; the weights become m ⊙ θ.
fn final_event(
    ctx: &mut RunContext<'_>,
    state: &BipState,
    phase_start: &NamedParams,
) -> Result<EventReport, PruneError> {
    let host = ctx.host(Criterion::Magnitude, &Allocation::Global, &[], 1);
    let mut mask = ctx.mask.shallow_clone();
    final_mask(&ctx.prunable, &mut mask, state, phase_start, host, ctx.ap())
}

/// BiP's final event on `mask` (made dense first, in place): `prunable` takes θ, then
/// [`pruning_event`] removes S − k weights, the host (`host` with |s| as its given scores)
/// first, then AP its share of [`Budget::from_count`] by movement from `phase_start`.
/// Without AP the mask is the top-k of |s|; with AP it keeps as many weights.
pub fn final_mask(
    prunable: &NamedParams,
    mask: &mut Mask,
    state: &BipState,
    phase_start: &NamedParams,
    host: HostCriterion<'_>,
    ap: Option<&ApConfig>,
) -> Result<EventReport, PruneError> {
    prunable.copy_from(&state.theta)?;
    tch::no_grad(|| {
        for m in mask.tensors() {
            let _ = m.shallow_clone().fill_(1.0);
        }
    });
    let surviving = mask.kept();
    let at = EventAt {
        budget: Budget::from_count(surviving - state.keep, surviving, ap, 0),
        index: 0,
        iteration: None,
    };
    let scores = state.abs_scores();
    let host = HostCriterion {
        given_scores: Some(&scores),
        ..host
    };
    pruning_event(prunable, mask, phase_start, &host, ap, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ap_criteria::{magnitude_scores, select_by_scores};
    use ap_data::{Dataset, DatasetKind};
    use ap_testkit::tensors::{revived, toy_classification};
    use tch::Device;

    /// LeNet-300-100 on 1×2×2 toy inputs, 2 classes, initialised from `seed`. The caller
    /// holds the torch lock.
    fn lenet(seed: i64) -> Model {
        tch::manual_seed(seed);
        let kind = ap_models::ModelKind::LeNet300_100;
        ap_models::build(kind, &[1, 2, 2], 2, Device::Cpu).unwrap()
    }

    fn prunable(m: &Model) -> NamedParams {
        NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap()
    }

    fn sgd(lr: f64, momentum: f64, weight_decay: f64) -> OptimizerSpec {
        OptimizerSpec::Sgd {
            lr,
            momentum,
            weight_decay,
            nesterov: false,
        }
    }

    fn same(a: &[Tensor], b: &[Tensor]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.to_kind(Kind::Float).equal(&y.to_kind(Kind::Float)))
    }

    fn mask_tensors(mask: &Mask) -> Vec<Tensor> {
        mask.tensors().into_iter().map(Tensor::copy).collect()
    }

    /// The top-k (with or without a boundary hint, near, far, exact, zero) is exactly the
    /// complement of `select_smallest`'s S − k smallest |s|, on scores quantised so that
    /// magnitudes tie within and across layers and signs.
    #[test]
    fn top_k_is_select_smallest_with_any_hint() {
        let _g = ap_testkit::torch_lock();
        for seed in 0..6i64 {
            let layers =
                ap_testkit::tensors::seeded_normal(ap_testkit::tensors::THREE_LAYERS, seed);
            let scores: Vec<Tensor> = layers
                .iter()
                .map(|(_, t)| (t * 16.0).round() / 16.0)
                .collect();
            let total: i64 = scores.iter().map(|t| t.numel() as i64).sum();
            let abs: Vec<Tensor> = scores.iter().map(Tensor::abs).collect();
            let all: Vec<Tensor> = abs
                .iter()
                .map(|a| a.ones_like().to_kind(Kind::Bool))
                .collect();
            for keep in [1, total / 10, total / 2, total - 1, total] {
                let removed = ap_tensor::select_smallest(
                    &abs.iter().collect::<Vec<_>>(),
                    &all.iter().collect::<Vec<_>>(),
                    total - keep,
                )
                .unwrap();
                let expected: Vec<Tensor> = removed
                    .iter()
                    .map(|r| r.logical_not().to_kind(Kind::Float))
                    .collect();
                let (plain, boundary) = top_k_mask_near(&scores, keep, Kind::Float, None).unwrap();
                assert!(same(&plain, &expected), "seed {seed} keep {keep}");
                let b = boundary.unwrap_or(0.0);
                for hint in [b, b * 1.01, b * 0.97, b * 0.5, b * 10.0, 0.0, 1e-3] {
                    let (near, again) =
                        top_k_mask_near(&scores, keep, Kind::Float, Some(hint)).unwrap();
                    assert!(
                        same(&near, &expected),
                        "seed {seed} keep {keep} hint {hint}"
                    );
                    assert_eq!(again, boundary);
                }
            }
        }
    }

    /// Scores start at θ, so the first mask is the global magnitude mask at the same
    /// count, and the weights are m ⊙ θ.
    #[test]
    fn scores_from_weights_give_the_magnitude_mask() {
        let _g = ap_testkit::torch_lock();
        let m = lenet(3);
        let p = prunable(&m);
        let before = p.snapshot();
        let dense = Mask::dense(&p);
        let total = dense.kept();
        for density in [0.5, 0.1, 0.013] {
            let state = BipState::new(&p, density);
            let mask = Mask::dense(&p);
            state.set_mask(&p, &mask).unwrap();
            let keep = kept_count(density, total);
            assert_eq!(mask.kept(), keep);
            let removed = select_by_scores(
                &magnitude_scores(&before),
                &dense,
                total - keep,
                &Allocation::Global,
            )
            .unwrap();
            let mut magnitude = dense.copy();
            magnitude.remove(&removed).unwrap();
            assert!(
                same(&mask_tensors(&mask), &mask_tensors(&magnitude)),
                "density {density}"
            );
            assert_eq!(revived(p.tensors(), mask.tensors()), 0);
            p.copy_from(&before).unwrap();
        }
    }

    /// Iterations that move the mask (a large upper rate): after each, exactly k weights
    /// are kept, the mask is the top-k of |s|, pruned weights are 0 with zero optimizer
    /// state, kept weights equal θ, and θ at pruned positions is what it was when they
    /// left the mask.
    #[test]
    fn every_iteration_keeps_exactly_k_and_the_top_k_of_the_scores() {
        let _g = ap_testkit::torch_lock();
        for (seed, density) in [(5i64, 0.2), (6, 0.05), (7, 0.5)] {
            let m = lenet(seed);
            let p = prunable(&m);
            let mut state = BipState::new(&p, density);
            let mask = Mask::dense(&p);
            state.set_mask(&p, &mask).unwrap();
            let mut opt = Optimizer::new(sgd(0.05, 0.9, 1e-3), &m.vs, Some(&mask));
            let (x, y) = toy_classification(64, 2);
            let upper = UpperStep {
                lr: 200.0,
                implicit_lr: 1.0,
                momentum: 0.9,
                weight_decay: 1e-3,
            };
            let mut changed = 0;
            let mut theta_moved = 0;
            for it in 0..6 {
                let a = (
                    x.narrow(0, (it * 16) % 64, 16),
                    y.narrow(0, (it * 16) % 64, 16),
                );
                let b = (x.narrow(0, 32, 32), y.narrow(0, 32, 32));
                let old = mask_tensors(&mask);
                let theta_before = state.theta.snapshot();
                bip_iteration(
                    &m,
                    &p,
                    &mask,
                    &mut state,
                    &mut opt,
                    (&a.0, &a.1),
                    (&b.0, &b.1),
                    0.05,
                    upper,
                )
                .unwrap();
                assert_eq!(mask.kept(), state.keep, "seed {seed} it {it}");
                let top = top_k_mask(&state.scores, state.keep, Kind::Float).unwrap();
                assert!(same(&mask_tensors(&mask), &top), "seed {seed} it {it}");
                assert_eq!(revived(p.tensors(), mask.tensors()), 0);
                assert_eq!(opt.state_at_pruned(), 0.0);
                for (((_, w), (_, th)), ((mk, old_m), (_, th0))) in
                    p.iter().zip(state.theta.iter()).zip(
                        mask.tensors()
                            .into_iter()
                            .zip(&old)
                            .zip(theta_before.iter()),
                    )
                {
                    let kept = mk.gt(0.5);
                    assert!(w.masked_select(&kept).equal(&th.masked_select(&kept)));
                    // pruned before and after: θ unchanged there
                    let out = kept.logical_not().logical_and(&old_m.lt(0.5));
                    assert!(th.masked_select(&out).equal(&th0.masked_select(&out)));
                }
                // the lower step's training reaches θ
                theta_moved += state
                    .theta
                    .iter()
                    .zip(theta_before.iter())
                    .map(|((_, a), (_, b))| a.ne_tensor(b).sum(Kind::Int64).int64_value(&[]))
                    .sum::<i64>();
                changed += old
                    .iter()
                    .zip(mask.tensors())
                    .map(|(o, n)| o.ne_tensor(n).sum(Kind::Int64).int64_value(&[]))
                    .sum::<i64>();
            }
            assert!(theta_moved > 0, "seed {seed}: θ never followed the weights");
            assert!(
                changed > 0,
                "seed {seed}: the mask never moved, the test says nothing"
            );
        }
    }

    /// The final event without AP is exactly the top-k of |s| (the live mask); with AP it
    /// keeps as many weights, AP taking its share.
    #[test]
    fn final_event_is_the_top_k_and_ap_keeps_the_density() {
        let _g = ap_testkit::torch_lock();
        let m = lenet(11);
        let p = prunable(&m);
        let start = p.snapshot();
        let state = BipState::new(&p, 0.1);
        // scores moved away from θ, so the final mask is not magnitude
        tch::manual_seed(12);
        for s in &state.scores {
            let noise = s.randn_like() * 0.05;
            let _ = s.shallow_clone().g_add_(&noise);
        }
        let live = Mask::dense(&p);
        state.set_mask(&p, &live).unwrap();
        tch::no_grad(|| {
            for (_, th) in state.theta.iter() {
                let noise = th.randn_like() * 0.01;
                let _ = th.shallow_clone().g_add_(&noise);
            }
        });
        let host = HostCriterion::new(Criterion::Magnitude, &Allocation::Global, &m);
        let mut plain = Mask::dense(&p);
        let e = final_mask(&p, &mut plain, &state, &start, host, None).unwrap();
        assert!(same(&mask_tensors(&plain), &mask_tensors(&live)));
        assert_eq!(
            (e.ap_removed, e.surviving - e.host_removed),
            (0, state.keep)
        );
        let top = top_k_mask(&state.scores, state.keep, Kind::Float).unwrap();
        assert!(same(&mask_tensors(&plain), &top));
        // the weights are m ⊙ θ
        for (((_, w), (_, th)), mk) in p.iter().zip(state.theta.iter()).zip(plain.tensors()) {
            assert!(w.equal(&(th * mk)));
        }
        // magnitude of θ would differ: the scores, not the weights, decided
        let dense = Mask::dense(&p);
        let by_weight = select_by_scores(
            &magnitude_scores(&state.theta),
            &dense,
            dense.kept() - state.keep,
            &Allocation::Global,
        )
        .unwrap();
        let mut magnitude = dense.copy();
        magnitude.remove(&by_weight).unwrap();
        assert!(!same(&mask_tensors(&magnitude), &mask_tensors(&plain)));
        let ap = ApConfig::with_rate(0.0);
        let mut with_ap = Mask::dense(&p);
        let e = final_mask(&p, &mut with_ap, &state, &start, host, Some(&ap)).unwrap();
        assert_eq!(with_ap.kept(), state.keep);
        assert!(e.ap_removed > 0, "{e:?}");
        assert_eq!(e.host_removed + e.ap_removed, e.surviving - state.keep);
        assert!(!same(&mask_tensors(&with_ap), &mask_tensors(&plain)));
    }

    fn toy(n: i64, seed: i64) -> Dataset {
        tch::manual_seed(seed);
        let split = |n: i64| {
            let (images, labels) = toy_classification(n, 2);
            Split { images, labels }
        };
        Dataset {
            kind: DatasetKind::Mnist,
            train: split(n),
            test: split(n / 2),
        }
    }

    /// Whole runs on toy data: the rounds (pre-training, bi-level, fine-tuning), the
    /// density of the bi-level round's event, with and without AP, and a resumed run
    /// equal to an uninterrupted one.
    #[test]
    fn runs_have_their_rounds_and_density() {
        use crate::{run_method, run_method_from, Method, Resume, RoundRecord, RunSeeds, RunSetup};
        let _g = ap_testkit::torch_lock();
        tch::set_num_threads(1);
        let data = toy(64, 1);
        let train: TrainConfig =
            ap_testkit::fixtures::train(ap_testkit::fixtures::sgd(0.05, 0.9, 1e-3, false), 16, 12)
                .try_into()
                .unwrap();
        let cfg = BipConfig {
            iterations: Some(10),
            fine_tune_iterations: Some(5),
            upper_lr: 50.0,
            ..BipConfig::with_density(0.1)
        };
        let method = Method::Bip(cfg.clone());
        assert_eq!(method.round_count(), 3);
        assert_eq!(method.name(), "bip");
        let ap = ApConfig::with_rate(0.0);
        let mut kept = vec![];
        for a in [None, Some(&ap)] {
            let m = lenet(2);
            let setup = RunSetup {
                ap: a,
                seeds: RunSeeds { data: 3, prune: 4 },
                eval_batch: 32,
                ..RunSetup::new(&m, &data, &train, &method)
            };
            let records = run_method(&setup, |_, _| Ok(()), |_, _| {}).unwrap();
            assert_eq!(records.len(), 3);
            assert_eq!(records[0].density.kept, records[0].density.total);
            assert!(records[0].events.is_empty() && records[2].events.is_empty());
            let e = records[1].events[0];
            let total = records[0].density.total;
            assert_eq!(e.surviving, total);
            assert_eq!(
                e.host_removed + e.ap_removed,
                total - kept_count(0.1, total)
            );
            assert_eq!(a.is_some(), e.ap_removed > 0, "{e:?}");
            assert_eq!(records[1].epochs.last().unwrap().iteration, 10);
            assert_eq!(records[2].epochs.last().unwrap().iteration, 5);
            assert_eq!(records[1].density.kept, records[2].density.kept);
            kept.push(records[2].density.kept);
            // resumed after the bi-level round: the same fine-tuning
            if a.is_none() {
                let mut ckpt = None;
                let first = lenet(2);
                let setup1 = RunSetup {
                    model: &first,
                    ..setup
                };
                let _ = run_method_from(
                    &setup1,
                    None,
                    |r, _, c| {
                        if r.round == 1 {
                            ckpt = Some(Checkpoint {
                                tensors: c
                                    .tensors
                                    .iter()
                                    .map(|(n, t)| (n.clone(), t.copy()))
                                    .collect(),
                            });
                        }
                        Ok(())
                    },
                    |_, _| {},
                )
                .unwrap();
                let resumed_model = lenet(9);
                let setup2 = RunSetup {
                    model: &resumed_model,
                    ..setup
                };
                let resume = Resume {
                    records: records[..2].to_vec(),
                    checkpoint: ckpt.unwrap(),
                };
                let again =
                    run_method_from(&setup2, Some(resume), |_, _, _| Ok(()), |_, _| {}).unwrap();
                let timeless = |r: &RoundRecord| RoundRecord {
                    seconds: 0.0,
                    ..r.clone()
                };
                assert_eq!(timeless(&again[2]), timeless(&records[2]));
            }
        }
        assert_eq!(kept[0], kept[1]);
        assert_eq!(kept[0], kept_count(0.1, 31_400));
    }

    #[test]
    fn settings_are_checked_by_name() {
        let train: TrainConfig =
            ap_testkit::fixtures::train(ap_testkit::fixtures::sgd(0.05, 0.9, 1e-3, false), 16, 12)
                .try_into()
                .unwrap();
        let ok = BipConfig::with_density(0.1);
        assert!(ok.validate(&train, None).is_ok());
        let bad = [
            (
                BipConfig {
                    density: 1.0,
                    ..ok.clone()
                },
                "prune.density",
            ),
            (
                BipConfig {
                    lower_lr: 0.0,
                    ..ok.clone()
                },
                "prune.lower_lr",
            ),
            (
                BipConfig {
                    upper_lr: f64::NAN,
                    ..ok.clone()
                },
                "prune.upper_lr",
            ),
            (
                BipConfig {
                    implicit_lr: -1.0,
                    ..ok.clone()
                },
                "prune.implicit_lr",
            ),
            (
                BipConfig {
                    iterations: Some(0),
                    ..ok.clone()
                },
                "prune.iterations",
            ),
            (
                BipConfig {
                    fine_tune_iterations: Some(0),
                    ..ok.clone()
                },
                "prune.fine_tune_iterations",
            ),
        ];
        for (cfg, field) in bad {
            let e = cfg.validate(&train, None).unwrap_err().to_string();
            assert!(e.contains(field), "{cfg:?}: {e}");
        }
        // defaults and rounds
        use ap_testkit::TomlExt;
        let spec = ap_testkit::fixtures::table()
            .with("method", "bip")
            .with("density", 0.05);
        let parsed: crate::Method = spec.try_into().unwrap();
        assert_eq!(parsed, crate::Method::Bip(BipConfig::with_density(0.05)));
        let no_pre = BipConfig {
            pretrain: false,
            ..ok.clone()
        };
        assert_eq!((ok.round_count(), no_pre.round_count()), (2, 1));
        assert!(ok.resumable() && !no_pre.resumable());
        let ft = BipConfig {
            iterations: Some(30),
            fine_tune_iterations: Some(7),
            ..ok
        };
        assert_eq!(ft.iterations_from(0, 100), 100 + 60 + 7);
        assert_eq!(ft.iterations_from(1, 100), 60 + 7);
        assert_eq!(ft.iterations_from(2, 100), 7);
        assert_eq!(no_pre.iterations_from(0, 100), 200);
    }
}
