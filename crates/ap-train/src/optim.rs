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
use tch::{nn::VarStore, Tensor};

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

struct Slot {
    name: String,
    param: Tensor,
    mask: Option<Tensor>,
    /// SGD: momentum buffer. Adam: first moment.
    m: Option<Tensor>,
    /// Adam: second moment.
    v: Option<Tensor>,
}

/// An optimizer over every trainable variable of a `VarStore`, aware of a mask.
pub struct Optimizer {
    spec: OptimizerSpec,
    slots: Vec<Slot>,
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

impl Optimizer {
    /// A fresh optimizer (zero state) over all variables of `vs`, in name order. Variables
    /// named in `mask` are masked; the mask's tensors are shared, so later in-place
    /// changes to the mask take effect.
    pub fn new(spec: OptimizerSpec, vs: &VarStore, mask: Option<&Mask>) -> Optimizer {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = vars
            .into_iter()
            .map(|(name, param)| {
                let mask = mask.and_then(|m| m.get(&name)).map(Tensor::shallow_clone);
                Slot {
                    name,
                    param,
                    mask,
                    m: None,
                    v: None,
                }
            })
            .collect();
        Optimizer {
            spec,
            slots,
            steps: 0,
            last_lr: None,
        }
    }

    /// Clears the gradients of all parameters.
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            s.param.zero_grad();
        }
    }

    /// Zeroes the optimizer state at positions the mask has pruned (call after a pruning
    /// event when the optimizer is kept).
    pub fn mask_state(&mut self) {
        tch::no_grad(|| {
            for s in &mut self.slots {
                if let Some(mask) = &s.mask {
                    for buf in [&mut s.m, &mut s.v].into_iter().flatten() {
                        let _ = buf.g_mul_(mask);
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
            (
                s.m.as_ref().map(Tensor::copy),
                s.v.as_ref().map(Tensor::copy),
            )
        })
    }

    /// One update with learning rate `lr` from the current gradients.
    ///
    /// Written with in-place ops only (the gradient is used as scratch space), so a step
    /// allocates one temporary per parameter at most: tch exposes no `alpha`/`value`
    /// arguments, so scaled adds go through `addcmul_` with a 0-dim scalar tensor.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        self.last_lr = Some(lr);
        let t = self.steps;
        let spec = self.spec.clone();
        let weight_decay = spec.weight_decay();
        let scalar = |v: f64| Tensor::from(v);
        tch::no_grad(|| {
            for s in &mut self.slots {
                let mut g = s.param.grad();
                if !g.defined() {
                    continue;
                }
                if let Some(mask) = &s.mask {
                    let _ = g.g_mul_(mask);
                }
                if weight_decay != 0.0 {
                    let _ = g.addcmul_(&s.param, &scalar(weight_decay));
                }
                match spec {
                    OptimizerSpec::Sgd {
                        momentum, nesterov, ..
                    } => {
                        let d = if momentum != 0.0 {
                            match &mut s.m {
                                Some(buf) => {
                                    let _ = buf.g_mul_scalar_(momentum).g_add_(&g);
                                }
                                None => s.m = Some(g.copy()),
                            }
                            let buf = s.m.as_ref().expect("set above");
                            if nesterov {
                                let _ = g.addcmul_(buf, &scalar(momentum));
                                g.shallow_clone()
                            } else {
                                buf.shallow_clone()
                            }
                        } else {
                            g.shallow_clone()
                        };
                        let _ = s.param.addcmul_(&d, &scalar(-lr));
                    }
                    OptimizerSpec::Adam {
                        beta1, beta2, eps, ..
                    } => {
                        let m = s.m.get_or_insert_with(|| g.zeros_like());
                        let _ = m.lerp_(&g, 1.0 - beta1);
                        // v ← β2·v + (1−β2)·g², in place.
                        let v = s.v.get_or_insert_with(|| g.zeros_like());
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
                        let _ = s.param.addcdiv_(m, &denom);
                    }
                }
                if let Some(mask) = &s.mask {
                    let _ = s.param.g_mul_(mask);
                }
            }
        });
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
                for buf in [&s.m, &s.v].into_iter().flatten() {
                    total += buf
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
