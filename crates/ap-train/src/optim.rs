//! SGD and Adam written with in-place tensor ops, so pruned positions can be masked in
//! the optimizer state too (tch's optimizers hide their state).
//!
//! Each step: the gradient is multiplied by the mask, the update is applied, then the
//! weight is multiplied by the mask. With the state zero at pruned positions (true from
//! construction, and restored by [`Optimizer::mask_state`] after a pruning event),
//! momentum, Adam moments and weight decay can never revive a pruned weight.

use ap_mask::Mask;
use ap_tensor::FieldError;
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

/// Optimizer and its hyperparameters. Weight decay is L2 added to the gradient, as in
/// PyTorch's `SGD` and `Adam` (not decoupled `AdamW`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// Stochastic gradient descent with optional (Nesterov) momentum.
    Sgd {
        /// Base learning rate.
        lr: f64,
        /// Momentum factor (0 = none).
        #[serde(default)]
        momentum: f64,
        /// L2 weight decay.
        #[serde(default)]
        weight_decay: f64,
        /// Nesterov momentum.
        #[serde(default)]
        nesterov: bool,
    },
    /// Adam (Kingma & Ba), PyTorch's formulation.
    Adam {
        /// Base learning rate.
        lr: f64,
        /// First-moment decay.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Second-moment decay.
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Denominator epsilon.
        #[serde(default = "default_eps")]
        eps: f64,
        /// L2 weight decay.
        #[serde(default)]
        weight_decay: f64,
    },
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

impl OptimizerSpec {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerSpec::Sgd { lr, .. } | OptimizerSpec::Adam { lr, .. } => *lr,
        }
    }

    /// The L2 weight decay.
    pub fn weight_decay(&self) -> f64 {
        match self {
            OptimizerSpec::Sgd { weight_decay, .. } | OptimizerSpec::Adam { weight_decay, .. } => {
                *weight_decay
            }
        }
    }

    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        let check = |name: &str, v: f64, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(FieldError::new(
                    format!("optimizer.{name}"),
                    format!("= {v} is out of range"),
                ))
            }
        };
        // In field order: the learning rate, the kind's own fields, the weight decay.
        let lr = self.lr();
        check("lr", lr, lr > 0.0 && lr.is_finite())?;
        match *self {
            OptimizerSpec::Sgd { momentum, .. } => {
                check("momentum", momentum, (0.0..1.0).contains(&momentum))?;
            }
            OptimizerSpec::Adam {
                beta1, beta2, eps, ..
            } => {
                check("beta1", beta1, (0.0..1.0).contains(&beta1))?;
                check("beta2", beta2, (0.0..1.0).contains(&beta2))?;
                check("eps", eps, eps > 0.0)?;
            }
        }
        let weight_decay = self.weight_decay();
        check("weight_decay", weight_decay, weight_decay >= 0.0)?;
        let nesterov_without_momentum = matches!(
            *self,
            OptimizerSpec::Sgd { momentum, nesterov: true, .. } if momentum == 0.0
        );
        if nesterov_without_momentum {
            return Err(FieldError::new(
                "optimizer.nesterov",
                "= true needs optimizer.momentum > 0",
            ));
        }
        Ok(())
    }
}

/// One trainable parameter: where it lives in its group's flat buffers.
struct Slot {
    name: String,
    param: Tensor,
    /// The mask's tensor for this parameter (relocated into the group's flat mask).
    mask: Option<Tensor>,
    /// Index of the group holding it, and its first element there.
    group: usize,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
    /// Version counters (`_version`) of the mask tensor and the parameter when the
    /// weights were last multiplied by the mask: an in-place change of either (a pruning
    /// event, a rewind) makes the next step mask the weights again.
    masked_at: Option<(i64, i64)>,
}

impl Slot {
    /// This parameter's elements of one of its group's flat buffers, shaped and strided
    /// like the parameter.
    fn view_of(&self, flat: &Tensor) -> Tensor {
        flat.as_strided(&self.size, &self.stride, Some(self.offset))
    }
}

/// Parameters of one kind and device, their gradients, mask and optimizer state, each
/// in one flat buffer: the parameters' own tensors are views into `params`, their
/// gradients into `grads`, so a step is a handful of kernels over the whole group
/// instead of several per parameter (the layout of PyTorch's foreach/fused
/// optimizers, and of apex's flat buffers).
struct Group {
    params: Tensor,
    grads: Tensor,
    /// The masked parameters come first, in the mask's order: `mask` covers
    /// `params[..masked]`. None when no parameter of the group is masked.
    mask: Option<Tensor>,
    masked: i64,
    /// SGD: momentum buffer. Adam: first moment.
    m: Option<Tensor>,
    /// Adam: second moment.
    v: Option<Tensor>,
}

/// An optimizer over every trainable variable of a `VarStore`, aware of a mask.
pub struct Optimizer {
    spec: OptimizerSpec,
    slots: Vec<Slot>,
    groups: Vec<Group>,
    steps: i64,
    last_lr: Option<f64>,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("spec", &self.spec)
            .field("steps", &self.steps)
            .finish()
    }
}

/// Strides under which a tensor of `size` covers exactly `numel` consecutive elements
/// (any order of dimensions, like channels-last), so it can live in a flat buffer as it
/// is; otherwise the contiguous strides.
fn dense_stride(size: &[i64], stride: &[i64]) -> Vec<i64> {
    let mut dims: Vec<usize> = (0..size.len()).filter(|&d| size[d] != 1).collect();
    dims.sort_by_key(|&d| stride[d]);
    let mut expected = 1;
    let dense = dims.iter().all(|&d| {
        let ok = stride[d] == expected;
        expected *= size[d];
        ok
    });
    if dense {
        return stride.to_vec();
    }
    let mut contiguous = vec![1; size.len()];
    for d in (0..size.len().saturating_sub(1)).rev() {
        contiguous[d] = contiguous[d + 1] * size[d + 1].max(1);
    }
    contiguous
}

/// Points `t` at `view` after copying its values there (`set_data`: every handle to
/// `t`, such as a layer's or a `VarStore`'s, sees the new storage).
fn relocate(t: &Tensor, view: &Tensor) {
    tch::no_grad(|| {
        view.shallow_clone().copy_(t);
    });
    let mut handle = t.shallow_clone();
    handle.set_data(view);
}

impl Optimizer {
    /// A fresh optimizer (zero state) over all variables of `vs`. Variables named in
    /// `mask` are masked; the mask's tensors are shared, so later in-place changes to
    /// the mask take effect.
    ///
    /// The parameters, their gradients and the mask's tensors are moved into flat
    /// buffers (values unchanged; every handle sees the move). Each parameter gets a
    /// gradient (zeros) if it has none.
    pub fn new(spec: OptimizerSpec, vs: &VarStore, mask: Option<&Mask>) -> Optimizer {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        // Masked parameters first, in the mask's order, then the rest by name.
        let position = |name: &str| {
            mask.and_then(|m| m.iter().position(|(n, _)| n == name))
                .unwrap_or(usize::MAX)
        };
        vars.sort_by_key(|(name, _)| position(name));
        ensure_grads(vars.iter().map(|(_, t)| t));
        let mut keys: Vec<(Kind, tch::Device)> = vec![];
        let mut slots = Vec::with_capacity(vars.len());
        let mut lengths: Vec<i64> = vec![];
        for (name, param) in vars {
            let key = (param.kind(), param.device());
            let group = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                keys.push(key);
                lengths.push(0);
                keys.len() - 1
            });
            let size = param.size();
            let stride = dense_stride(&size, &param.stride());
            let mask = mask.and_then(|m| m.get(&name)).map(|m| {
                assert!(
                    m.kind() == key.0 && m.size() == size,
                    "the mask of `{name}` is {:?} {:?}, the parameter {:?} {size:?}",
                    m.kind(),
                    m.size(),
                    key.0
                );
                m.shallow_clone()
            });
            slots.push(Slot {
                name,
                param,
                mask,
                group,
                offset: lengths[group],
                size,
                stride,
                masked_at: None,
            });
            lengths[group] += slots.last().expect("pushed").param.numel() as i64;
        }
        let mut groups: Vec<Group> = keys
            .iter()
            .zip(&lengths)
            .map(|(&(kind, device), &len)| Group {
                params: Tensor::zeros([len], (kind, device)),
                grads: Tensor::zeros([len], (kind, device)),
                mask: None,
                masked: 0,
                m: None,
                v: None,
            })
            .collect();
        for (g, group) in groups.iter_mut().enumerate() {
            // The masked prefix: masked slots are first within their group, in order.
            let in_group = slots.iter().filter(|s| s.group == g);
            if let Some(last) = in_group.take_while(|s| s.mask.is_some()).last() {
                let len = last.offset + last.param.numel() as i64;
                group.mask = Some(Tensor::zeros([len], (keys[g].0, keys[g].1)));
                group.masked = len;
            }
        }
        let mut opt = Optimizer {
            spec,
            slots,
            groups,
            steps: 0,
            last_lr: None,
        };
        opt.relink(true);
        opt
    }

    /// Makes every parameter, gradient and mask tensor a view into its group's flat
    /// buffers again where it is not (always when `all`): cheap pointer checks, no
    /// device work unless something replaced a tensor.
    fn relink(&mut self, all: bool) {
        for s in &mut self.slots {
            let group = &self.groups[s.group];
            let elem = group.params.kind().elt_size_in_bytes() as i64;
            let at = |flat: &Tensor| (flat.data_ptr() as i64) + s.offset * elem;
            if all || s.param.data_ptr() as i64 != at(&group.params) {
                relocate(&s.param, &s.view_of(&group.params));
            }
            let grad = s.param.grad();
            if !grad.defined() {
                ensure_grads(std::iter::once(&s.param));
                relocate(&s.param.grad(), &s.view_of(&group.grads));
            } else if all || grad.data_ptr() as i64 != at(&group.grads) {
                relocate(&grad, &s.view_of(&group.grads));
            }
            // A masked slot lies in its group's masked prefix, so its group has a mask.
            if let (Some(mask), Some(flat)) = (&s.mask, &group.mask) {
                if all || mask.data_ptr() as i64 != at(flat) {
                    relocate(mask, &s.view_of(flat));
                }
            }
        }
    }

    /// Clears the gradients of all parameters (in place: one kernel per group).
    pub fn zero_grad(&mut self) {
        self.relink(false);
        for g in &mut self.groups {
            let _ = g.grads.zero_();
        }
    }

    /// Zeroes the optimizer state at positions the mask has pruned (call after a pruning
    /// event when the optimizer is kept).
    pub fn mask_state(&mut self) {
        self.relink(false);
        tch::no_grad(|| {
            for g in &mut self.groups {
                if let Some(mask) = &g.mask {
                    for buf in [&mut g.m, &mut g.v].into_iter().flatten() {
                        let _ = buf.narrow(0, 0, g.masked).g_mul_(mask);
                    }
                }
            }
        });
    }

    /// Number of steps taken.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// The learning rate the last [`Optimizer::step`] used (None before the first step):
    /// lets a [`crate::StepHook`] see the schedule as applied.
    pub fn last_lr(&self) -> Option<f64> {
        self.last_lr
    }

    /// Copies of one parameter's state, `(momentum buffer or Adam's first moment, Adam's
    /// second moment)`, each None until a step creates it; None for an unknown name (a
    /// read-only probe for tests).
    pub fn state_of(&self, name: &str) -> Option<(Option<Tensor>, Option<Tensor>)> {
        self.slots.iter().find(|s| s.name == name).map(|s| {
            let g = &self.groups[s.group];
            let copy = |b: &Option<Tensor>| b.as_ref().map(|b| s.view_of(b).copy());
            (copy(&g.m), copy(&g.v))
        })
    }

    /// One update with learning rate `lr` from the current gradients.
    ///
    /// Written with in-place ops over each group's flat buffers (the gradient is used as
    /// scratch space): tch exposes no `alpha`/`value` arguments, so scaled adds go
    /// through `addcmul_` with a 0-dim scalar tensor. Pruned weights stay exactly 0
    /// without a mask multiply of the weights: their gradient is masked and their
    /// state is 0, so every term of their update is 0 (the weights are zeroed where the
    /// mask changes, by whoever changes it: [`Mask::apply`]). As a safety net the
    /// weights are multiplied by the mask before the update whenever the mask or the
    /// weights were changed in place since the last such multiply (their version
    /// counters, read on the host): pruned weights are 0 after every step, as with a
    /// multiply every step, at no cost in steady state.
    pub fn step(&mut self, lr: f64) {
        self.relink(false);
        self.mask_changed_weights();
        self.steps += 1;
        self.last_lr = Some(lr);
        let t = self.steps;
        let spec = self.spec.clone();
        let weight_decay = spec.weight_decay();
        let scalar = |v: f64| Tensor::from(v);
        tch::no_grad(|| {
            for grp in &mut self.groups {
                let mut g = grp.grads.shallow_clone();
                let mut p = grp.params.shallow_clone();
                if let Some(mask) = &grp.mask {
                    let _ = g.narrow(0, 0, grp.masked).g_mul_(mask);
                }
                if weight_decay != 0.0 {
                    let _ = g.addcmul_(&p, &scalar(weight_decay));
                }
                match spec {
                    OptimizerSpec::Sgd {
                        momentum, nesterov, ..
                    } => {
                        let d = if momentum != 0.0 {
                            match &mut grp.m {
                                Some(buf) => {
                                    let _ = buf.g_mul_scalar_(momentum).g_add_(&g);
                                }
                                None => grp.m = Some(g.copy()),
                            }
                            let buf = grp.m.as_ref().expect("set above");
                            if nesterov {
                                let _ = g.addcmul_(buf, &scalar(momentum));
                                g.shallow_clone()
                            } else {
                                buf.shallow_clone()
                            }
                        } else {
                            g.shallow_clone()
                        };
                        let _ = p.addcmul_(&d, &scalar(-lr));
                    }
                    OptimizerSpec::Adam {
                        beta1, beta2, eps, ..
                    } => {
                        let m = grp.m.get_or_insert_with(|| g.zeros_like());
                        let _ = m.lerp_(&g, 1.0 - beta1);
                        // v ← β2·v + (1−β2)·g², in place.
                        let v = grp.v.get_or_insert_with(|| g.zeros_like());
                        let _ = v
                            .g_mul_scalar_(beta2 / (1.0 - beta2))
                            .addcmul_(&g, &g)
                            .g_mul_scalar_(1.0 - beta2);
                        let bc1 = 1.0 - beta1.powi(t as i32);
                        let bc2 = 1.0 - beta2.powi(t as i32);
                        // w ← w − lr/bc1 · m / (√v/√bc2 + eps), as w + m / denom with denom scaled by −bc1/lr.
                        // sqrt is several times slower on exact zeros, which a mask makes
                        // of most of v; the clamp leaves every denominator unchanged
                        // (√MIN_POSITIVE ≈ 1e-19 vanishes next to eps).
                        let mut denom = v.clamp_min(f64::from(f32::MIN_POSITIVE));
                        let _ = denom.sqrt_();
                        let _ = denom
                            .g_mul_scalar_(1.0 / bc2.sqrt())
                            .g_add_scalar_(eps)
                            .g_mul_scalar_(-bc1 / lr);
                        let _ = p.addcdiv_(m, &denom);
                    }
                }
            }
        });
    }

    /// Multiplies each group's masked weights by the mask when a mask tensor or a
    /// masked parameter changed in place since the last multiply (see [`Optimizer::step`]).
    fn mask_changed_weights(&mut self) {
        let version = |s: &Slot| {
            s.mask
                .as_ref()
                .map(|m| (m.internal_version(), s.param.internal_version()))
        };
        for (gi, group) in self.groups.iter().enumerate() {
            let Some(mask) = &group.mask else { continue };
            let mut in_group = self.slots.iter().filter(|s| s.group == gi);
            if in_group.all(|s| s.mask.is_none() || s.masked_at == version(s)) {
                continue;
            }
            tch::no_grad(|| {
                let _ = group.params.narrow(0, 0, group.masked).g_mul_(mask);
            });
            for s in self.slots.iter_mut().filter(|s| s.group == gi) {
                s.masked_at = version(s);
            }
        }
    }

    /// Sum over masked parameters of |state| at pruned positions (0 when masking holds).
    pub fn state_at_pruned(&self) -> f64 {
        self.state_sum_where(|_, mask| mask.eq(0.0))
    }

    /// Sum over masked parameters of |state| at kept positions whose weight is exactly 0
    /// — connections just grown, which must start with zero state (a test probe).
    pub fn state_at_kept_zeros(&self) -> f64 {
        self.state_sum_where(|s, mask| mask.gt(0.5).logical_and(&s.param.detach().eq(0.0)))
    }

    /// Sum of |m| and |v| over the positions `select` picks in each masked parameter.
    fn state_sum_where(&self, select: impl Fn(&Slot, &Tensor) -> Tensor) -> f64 {
        let mut total = 0.0;
        for s in &self.slots {
            if let Some(mask) = &s.mask {
                let at = select(s, mask);
                let g = &self.groups[s.group];
                for buf in [&g.m, &g.v].into_iter().flatten() {
                    total += s
                        .view_of(buf)
                        .abs()
                        .masked_select(&at)
                        .sum(tch::Kind::Double)
                        .double_value(&[]);
                }
            }
        }
        total
    }
}

/// Gives every tensor in `params` that has no gradient a zero one (a backward through
/// `0·p`, which is 0 even where p is NaN or ∞), so it can be moved into a flat buffer.
fn ensure_grads<'a>(params: impl Iterator<Item = &'a Tensor>) {
    let missing: Vec<&Tensor> = params.filter(|p| !p.grad().defined()).collect();
    tch::with_grad(|| {
        for p in missing {
            (p * 0.0).sum(p.kind()).backward();
        }
    });
}

/// Learning-rate schedule over iterations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiply by `gamma` at each milestone (iteration counts).
    Step {
        /// Iterations at which the rate drops.
        milestones: Vec<u64>,
        /// Factor per milestone.
        gamma: f64,
    },
    /// Cosine annealing from the base rate to 0 over the phase's iterations.
    Cosine,
    /// Caffe's `inv` policy: base · (1 + `gamma` · t)^(−`power`) at iteration t (LeNet-5's
    /// solver: gamma 1e-4, power 0.75).
    Inv {
        /// Decay speed.
        gamma: f64,
        /// Decay exponent.
        power: f64,
    },
}

impl LrSchedule {
    /// The rate at `iteration` (0-based) of a phase of `total` iterations, for base rate `base`.
    pub fn lr_at(&self, base: f64, iteration: u64, total: u64) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => {
                base * 0.5
                    * (1.0 + (std::f64::consts::PI * iteration as f64 / total.max(1) as f64).cos())
            }
            LrSchedule::Step { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| iteration >= m).count() as i32)
            }
            LrSchedule::Inv { gamma, power } => {
                base * (1.0 + gamma * iteration as f64).powf(-power)
            }
        }
    }

    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            LrSchedule::Constant | LrSchedule::Cosine => Ok(()),
            LrSchedule::Step { milestones, gamma } => {
                if !(*gamma > 0.0 && *gamma <= 1.0) {
                    return Err(FieldError::out_of("schedule.gamma", gamma, "(0, 1]"));
                }
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(FieldError::new(
                        "schedule.milestones",
                        "must be strictly increasing",
                    ));
                }
                Ok(())
            }
            LrSchedule::Inv { gamma, power } => {
                for (name, v) in [("schedule.gamma", gamma), ("schedule.power", power)] {
                    if !(v.is_finite() && *v >= 0.0) {
                        return Err(FieldError::new(name, format!("= {v} must be ≥ 0")));
                    }
                }
                Ok(())
            }
        }
    }
}
