//! Training: masked SGD and Adam ([`Optimizer`]), learning-rate schedules, and the
//! training loop for one phase of a pruning method.
//!
//! The loop keeps everything on the device: batches are gathered by index on the device,
//! the running loss is a device scalar, and the host reads it once per epoch.

mod optim;

use ap_data::{Augment, Split};
use ap_eval::{DnrProbe, DnrReport};
use ap_mask::Mask;
use ap_models::{Model, NoProbe};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

pub use optim::{LrSchedule, Optimizer, OptimizerSpec};

/// How to train one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer and its hyperparameters.
    pub optimizer: OptimizerSpec,
    /// Learning-rate schedule over iterations.
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Samples per step.
    pub batch_size: usize,
    /// Steps per phase.
    pub iterations: u64,
    /// Linear warm-up: the rate rises from 0 to the scheduled rate over these first
    /// iterations of a phase (the AP release warms up over 20,000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_iterations: u64,
    /// Training-batch augmentation on the device (random crop, horizontal flip); never
    /// applied to evaluation. Left out of the spec's key while off.
    #[serde(default, skip_serializing_if = "Augment::is_identity")]
    pub augment: Augment,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl TrainConfig {
    /// The learning rate at `iteration` of a phase: schedule, then warm-up.
    pub fn lr_at(&self, iteration: u64) -> f64 {
        let lr = self
            .schedule
            .lr_at(self.optimizer.lr(), iteration, self.iterations);
        if iteration < self.warmup_iterations {
            lr * (iteration + 1) as f64 / self.warmup_iterations as f64
        } else {
            lr
        }
    }
}

impl TrainConfig {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.optimizer.validate()?;
        self.schedule.validate()?;
        if self.batch_size == 0 {
            return Err("train.batch_size must be at least 1".into());
        }
        if self.iterations == 0 {
            return Err("train.iterations must be at least 1".into());
        }
        Ok(())
    }
}

/// Errors while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss became NaN or infinite.
    #[error("training diverged at step {iteration}: the mean loss of the epoch ending there is {loss}; lower the learning rate")]
    Diverged {
        /// Iteration at the end of the epoch in which it happened.
        iteration: u64,
        /// The mean loss.
        loss: f64,
    },
    /// Invalid data or batch settings.
    #[error(transparent)]
    Data(#[from] ap_data::DataError),
    /// A step hook (a pruning method acting during training) failed.
    #[error("{0}")]
    Hook(String),
}

/// Statistics of one epoch (or the partial epoch that ends a phase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 0-based epoch.
    pub epoch: u64,
    /// Iterations done in the phase at the end of this epoch.
    pub iteration: u64,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Learning rate at the last step.
    pub lr: f64,
}

/// Result of a training phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// Per-epoch statistics.
    pub epochs: Vec<EpochStats>,
    /// DNR in train mode, accumulated over the last epoch's batches.
    pub train_dnr: DnrReport,
}

/// Called by [`train_phase`] around every optimizer step; pruning methods that act
/// during training (GMP, GraNet, RigL, weight rewinding's snapshot) implement it.
pub trait StepHook {
    /// After `backward`, before the optimizer step: every parameter's gradient is
    /// present and not yet masked. `iteration` is the 0-based step about to be taken.
    fn after_backward(&mut self, _iteration: u64, _opt: &mut Optimizer) -> Result<(), TrainError> {
        Ok(())
    }
    /// After the optimizer step; `iteration` is the 0-based step just taken.
    fn after_step(&mut self, _iteration: u64, _opt: &mut Optimizer) -> Result<(), TrainError> {
        Ok(())
    }
}

/// A hook that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHook;

impl StepHook for NoHook {}

/// Trains `model` on `train` from iteration `start` to `cfg.iterations` with a fresh
/// optimizer (the LR schedule and the data order resume at `start`, as weight rewinding
/// needs; 0 for a whole phase).
///
/// The data order depends only on `(data_seed, epoch)`. `mask`, when given, keeps pruned
/// weights (and their optimizer state) at exactly zero. `hook` runs around every step;
/// `on_epoch` after each epoch, e.g. to show progress.
#[allow(clippy::too_many_arguments)]
pub fn train_phase(
    model: &Model,
    train: &Split,
    mask: Option<&Mask>,
    cfg: &TrainConfig,
    data_seed: u64,
    start: u64,
    hook: &mut dyn StepHook,
    mut on_epoch: impl FnMut(&EpochStats),
) -> Result<PhaseReport, TrainError> {
    let mut opt = Optimizer::new(cfg.optimizer.clone(), &model.vs, mask);
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size) as u64;
    let last_epoch = (cfg.iterations.max(1) - 1) / steps_per_epoch;
    let mut epochs = vec![];
    let mut dnr = DnrProbe::new();
    let mut it = start;
    let mut epoch = start / steps_per_epoch;
    while it < cfg.iterations {
        let mut loss_sum = Tensor::zeros([], (Kind::Float, train.device()));
        let mut steps = 0u64;
        let mut lr = cfg.lr_at(it);
        let skip = if epoch == start / steps_per_epoch {
            (start % steps_per_epoch) as usize
        } else {
            0
        };
        for idx in train
            .shuffled_batches(cfg.batch_size, data_seed, epoch)?
            .skip(skip)
        {
            if it >= cfg.iterations {
                break;
            }
            let (x, y) = train.batch(&idx);
            let x = cfg.augment.apply(&x, data_seed, it);
            let logits = if epoch == last_epoch {
                model.forward_probed(&x, true, &mut dnr)
            } else {
                model.forward_probed(&x, true, &mut NoProbe)
            };
            let loss = logits.cross_entropy_for_logits(&y);
            opt.zero_grad();
            loss.backward();
            hook.after_backward(it, &mut opt)?;
            lr = cfg.lr_at(it);
            opt.step(lr);
            hook.after_step(it, &mut opt)?;
            let _ = loss_sum.g_add_(&loss.detach());
            it += 1;
            steps += 1;
        }
        let train_loss = loss_sum.double_value(&[]) / steps.max(1) as f64;
        if !train_loss.is_finite() {
            return Err(TrainError::Diverged {
                iteration: it,
                loss: train_loss,
            });
        }
        let stats = EpochStats {
            epoch,
            iteration: it,
            train_loss,
            lr,
        };
        on_epoch(&stats);
        epochs.push(stats);
        epoch += 1;
    }
    Ok(PhaseReport {
        epochs,
        train_dnr: dnr.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ap_tensor::NamedParams;
    use proptest::prelude::*;
    use tch::Device;

    fn toy_split(n: i64) -> Split {
        let images = Tensor::randn([n, 1, 2, 2], (Kind::Float, Device::Cpu));
        let labels = images
            .flatten(1, -1)
            .sum_dim_intlist(1, false, Kind::Float)
            .gt(0.0)
            .to_kind(Kind::Int64);
        Split { images, labels }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Masked weights stay exactly 0 and optimizer state stays 0 at pruned positions,
        /// for any number of steps, with momentum and weight decay on (SGD and Adam).
        #[test]
        fn masked_weights_stay_zero(steps in 1u64..40, keep in 0.05f64..0.95, adam in any::<bool>(), nesterov in any::<bool>(), seed in 0i64..1000) {
            tch::manual_seed(seed);
            let model = ap_models::build("lenet300-100", &[1, 2, 2], 2, Device::Cpu).unwrap();
            let params = NamedParams::from_var_store(&model.vs, &model.net.prunable()).unwrap();
            let mut mask = Mask::dense(&params);
            let drop: Vec<Tensor> = params.tensors().iter().map(|t| Tensor::rand_like(t).gt(keep)).collect();
            mask.remove(&drop).unwrap();
            mask.apply(&params).unwrap();
            let optimizer = if adam {
                OptimizerSpec::Adam { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
            } else {
                OptimizerSpec::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-2, nesterov }
            };
            let cfg = TrainConfig { optimizer: optimizer.clone(), schedule: LrSchedule::Constant, batch_size: 8, iterations: steps, warmup_iterations: 0, augment: Default::default() };
            let split = toy_split(32);
            train_phase(&model, &split, Some(&mask), &cfg, seed as u64, 0, &mut NoHook, |_| {}).unwrap();
            for ((_, w), (_, m)) in params.iter().zip(mask.iter()) {
                prop_assert_eq!(w.ne(0.0).logical_and(&m.eq(0.0)).sum(Kind::Int64).int64_value(&[]), 0);
            }
            // The state itself: a manual loop with one optimizer.
            let mut opt = Optimizer::new(optimizer, &model.vs, Some(&mask));
            for _ in 0..3 {
                let (x, y) = (split.images.shallow_clone(), split.labels.shallow_clone());
                let loss = model.forward(&x, true).cross_entropy_for_logits(&y);
                opt.zero_grad();
                loss.backward();
                opt.step(0.05);
            }
            prop_assert_eq!(opt.state_at_pruned(), 0.0);
        }
    }

    #[test]
    fn state_masking_after_a_new_pruning_event() {
        tch::manual_seed(3);
        let model = ap_models::build("lenet300-100", &[1, 2, 2], 2, Device::Cpu).unwrap();
        let params = NamedParams::from_var_store(&model.vs, &model.net.prunable()).unwrap();
        let mut mask = Mask::dense(&params);
        let spec = OptimizerSpec::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        };
        let mut opt = Optimizer::new(spec, &model.vs, Some(&mask));
        let split = toy_split(16);
        let step = |opt: &mut Optimizer| {
            let loss = model
                .forward(&split.images, true)
                .cross_entropy_for_logits(&split.labels);
            opt.zero_grad();
            loss.backward();
            opt.step(0.1);
        };
        step(&mut opt);
        // prune half of fc1 in place: the optimizer sees the shared mask tensors
        let sel: Vec<Tensor> = params
            .tensors()
            .iter()
            .map(|t| Tensor::rand_like(t).lt(0.5))
            .collect();
        mask.remove(&sel).unwrap();
        mask.apply(&params).unwrap();
        assert!(
            opt.state_at_pruned() > 0.0,
            "momentum is nonzero where we just pruned"
        );
        opt.mask_state();
        assert_eq!(opt.state_at_pruned(), 0.0);
        step(&mut opt);
        for ((_, w), (_, m)) in params.iter().zip(mask.iter()) {
            assert_eq!(
                w.ne(0.0)
                    .logical_and(&m.eq(0.0))
                    .sum(Kind::Int64)
                    .int64_value(&[]),
                0
            );
        }
    }

    #[test]
    fn sgd_matches_the_closed_form() {
        // One parameter, loss = w·x with constant gradient x: momentum buffer b_t = Σ μ^k x.
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[1], tch::nn::Init::Const(1.0));
        let spec = OptimizerSpec::Sgd {
            lr: 0.1,
            momentum: 0.5,
            weight_decay: 0.0,
            nesterov: false,
        };
        let mut opt = Optimizer::new(spec, &vs, None);
        for _ in 0..3 {
            opt.zero_grad();
            (&w * 2.0).sum(Kind::Float).backward();
            opt.step(0.1);
        }
        // buffers 2, 3, 3.5 → w = 1 - 0.1·(2 + 3 + 3.5) = 0.15
        assert!((w.double_value(&[0]) - 0.15).abs() < 1e-6);
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], tch::nn::Init::Const(1.0));
        let spec = OptimizerSpec::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = Optimizer::new(spec, &vs, None);
        opt.zero_grad();
        (&w * Tensor::from_slice(&[3.0f32, -0.5]))
            .sum(Kind::Float)
            .backward();
        opt.step(0.01);
        // bias-corrected first step is lr·sign(g)
        assert!(
            (w.double_value(&[0]) - 0.99).abs() < 1e-6
                && (w.double_value(&[1]) - 1.01).abs() < 1e-6
        );
    }

    #[test]
    fn step_schedule_and_validation() {
        let s = LrSchedule::Step {
            milestones: vec![10, 20],
            gamma: 0.1,
        };
        assert_eq!(s.lr_at(1.0, 9, 30), 1.0);
        assert!(
            (s.lr_at(1.0, 10, 30) - 0.1).abs() < 1e-12
                && (s.lr_at(1.0, 25, 30) - 0.01).abs() < 1e-12
        );
        assert!((LrSchedule::Cosine.lr_at(1.0, 50, 100) - 0.5).abs() < 1e-12);
        let cfg = TrainConfig {
            optimizer: OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.0,
                nesterov: true,
            },
            schedule: LrSchedule::Constant,
            batch_size: 1,
            iterations: 100,
            warmup_iterations: 10,
            augment: Default::default(),
        };
        assert!(
            (cfg.lr_at(0) - 0.01).abs() < 1e-12
                && (cfg.lr_at(9) - 0.1).abs() < 1e-12
                && cfg.lr_at(50) == 0.1
        );
        let bad = OptimizerSpec::Sgd {
            lr: -1.0,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        };
        assert!(bad.validate().unwrap_err().contains("optimizer.lr"));
        let toml_err = toml::from_str::<TrainConfig>(
            "batch_size = 1\niterations = 1\nbogus = 2\n[optimizer]\nkind = \"adam\"\nlr = 0.1\n",
        )
        .unwrap_err();
        assert!(toml_err.to_string().contains("bogus"), "{toml_err}");
    }

    #[test]
    fn training_reduces_loss_on_a_learnable_task() {
        tch::manual_seed(0);
        let model = ap_models::build("lenet300-100", &[1, 2, 2], 2, Device::Cpu).unwrap();
        let split = toy_split(256);
        let cfg = TrainConfig {
            optimizer: OptimizerSpec::Adam {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            schedule: LrSchedule::Constant,
            batch_size: 32,
            iterations: 200,
            warmup_iterations: 0,
            augment: Default::default(),
        };
        let r = train_phase(&model, &split, None, &cfg, 1, 0, &mut NoHook, |_| {}).unwrap();
        assert_eq!(r.epochs.len(), 25);
        assert!(r.epochs.last().unwrap().train_loss < 0.5 * r.epochs[0].train_loss);
        assert_eq!(r.train_dnr.samples, 256);
    }
}
