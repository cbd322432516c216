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
use ap_tensor::FieldError;
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
    /// Linear warm-up: the rate rises from 0 to the scheduled rate over iterations
    /// 0..warmup_iterations (the AP release warms up over 20,000). Iterations count from
    /// the start of training, so a phase that resumes at the rewind step k ≥ the warm-up
    /// has none, as in OpenLTH, where the schedule is a function of the absolute step.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_iterations: u64,
    /// Training-batch augmentation on the device (random crop, horizontal flip); never
    /// applied to evaluation. Left out of the spec's key while off.
    #[serde(default, skip_serializing_if = "Augment::is_identity")]
    pub augment: Augment,
    /// Run the convolutions channels-last (`ap_models::Model::to_channels_last`):
    /// faster on the CPUs measured, but a different floating-point rounding, so a
    /// setting, off by default (docs/decisions.md). Left out of the spec's key while off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub channels_last: bool,
}

fn is_false(v: &bool) -> bool {
    !*v
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
    pub fn validate(&self) -> Result<(), FieldError> {
        self.optimizer.validate()?;
        self.schedule.validate()?;
        if self.batch_size == 0 {
            return Err(FieldError::new("train.batch_size", "must be at least 1"));
        }
        if self.iterations == 0 {
            return Err(FieldError::new("train.iterations", "must be at least 1"));
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
    /// A step hook (a pruning method acting during training) failed; the hook's own
    /// error, which its owner can take back with `downcast`.
    #[error("step hook: {0}")]
    Hook(Box<dyn std::error::Error + Send + Sync>),
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

/// Where a training phase starts: the seed of its data order and the iteration it
/// resumes at (0 for a whole phase; k when weight rewinding retrains from θ_k, so the LR
/// schedule and the data order pick up at step k).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseStart {
    /// Seed of the data order (and augmentation): the order depends only on
    /// `(data_seed, epoch)`.
    pub data_seed: u64,
    /// The iteration the phase starts at.
    pub iteration: u64,
}

impl PhaseStart {
    /// A whole phase, from iteration 0.
    pub fn fresh(data_seed: u64) -> PhaseStart {
        PhaseStart {
            data_seed,
            iteration: 0,
        }
    }
}

/// Trains `model` on `train` from iteration `start.iteration` to `cfg.iterations` with a
/// fresh optimizer (the LR schedule and the data order resume there, as weight rewinding
/// needs).
///
/// `mask`, when given, keeps pruned weights (and their optimizer state) at exactly zero.
/// `hook` runs around every step; `on_epoch` after each epoch, e.g. to show progress.
pub fn train_phase(
    model: &Model,
    train: &Split,
    mask: Option<&Mask>,
    cfg: &TrainConfig,
    start: PhaseStart,
    hook: &mut dyn StepHook,
    mut on_epoch: impl FnMut(&EpochStats),
) -> Result<PhaseReport, TrainError> {
    let PhaseStart {
        data_seed,
        iteration: start,
    } = start;
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
    use ap_models::{Model, ModelKind};
    use ap_tensor::NamedParams;
    use ap_testkit::tensors::{random_selection, revived, toy_classification};
    use ap_testkit::{fixtures, TomlExt};
    use proptest::prelude::*;
    use tch::Device;

    /// `n` toy samples of 1×2×2, labelled by the sign of their sum. The caller holds the
    /// torch lock.
    fn toy_split(n: i64) -> Split {
        let (images, labels) = toy_classification(n, 2);
        Split { images, labels }
    }

    /// A LeNet-300-100 for the toy samples. The caller holds the torch lock.
    fn lenet() -> Model {
        ap_models::build(ModelKind::LeNet300_100, &[1, 2, 2], 2, Device::Cpu).unwrap()
    }

    /// Training with `optimizer`: constant schedule, no warm-up, no augmentation.
    fn config(optimizer: &OptimizerSpec, batch_size: i64, iterations: u64) -> TrainConfig {
        let optimizer = toml::Value::try_from(optimizer).unwrap();
        fixtures::train(optimizer, batch_size, iterations as i64)
            .try_into()
            .unwrap()
    }

    /// `train_phase` without a mask, from `(data_seed, iteration)`, ignoring the epochs.
    fn unmasked(
        model: &Model,
        split: &Split,
        cfg: &TrainConfig,
        (data_seed, iteration): (u64, u64),
        hook: &mut dyn StepHook,
    ) -> Result<PhaseReport, TrainError> {
        let start = PhaseStart {
            data_seed,
            iteration,
        };
        train_phase(model, split, None, cfg, start, hook, |_| {})
    }

    fn pruned_back(params: &NamedParams, mask: &Mask) -> i64 {
        revived(params.tensors(), mask.iter().map(|(_, m)| m))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Masked weights stay exactly 0 and optimizer state stays 0 at pruned positions,
        /// for any number of steps, with momentum and weight decay on (SGD and Adam).
        #[test]
        fn masked_weights_stay_zero(steps in 1u64..40, keep in 0.05f64..0.95, adam in any::<bool>(), nesterov in any::<bool>(), seed in 0i64..1000) {
            let _g = ap_testkit::torch_lock();
            tch::manual_seed(seed);
            let model = lenet();
            let params = NamedParams::from_var_store(&model.vs, &model.net.prunable()).unwrap();
            let mut mask = Mask::dense(&params);
            mask.remove(&random_selection(&params.tensors(), 1.0 - keep)).unwrap();
            mask.apply(&params).unwrap();
            let optimizer = if adam {
                self::adam(1e-2, 0.9, 0.999, 1e-8, 1e-2)
            } else {
                sgd(0.1, 0.9, 1e-2, nesterov)
            };
            let cfg = config(&optimizer, 8, steps);
            let split = toy_split(32);
            train_phase(&model, &split, Some(&mask), &cfg, PhaseStart::fresh(seed as u64), &mut NoHook, |_| {}).unwrap();
            prop_assert_eq!(pruned_back(&params, &mask), 0);
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

    /// The optimizer before its flat buffers, kept as the reference: per parameter, the
    /// gradient multiplied by the mask, the update, then the weight multiplied by the
    /// mask, every step.
    /// (parameter, mask, momentum or first moment, second moment)
    type ReferenceSlot = (Tensor, Option<Tensor>, Option<Tensor>, Option<Tensor>);

    struct PerParameter {
        spec: OptimizerSpec,
        slots: Vec<ReferenceSlot>,
        t: i32,
    }

    impl PerParameter {
        fn new(spec: OptimizerSpec, vs: &tch::nn::VarStore, mask: &Mask) -> PerParameter {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            let slots = vars
                .into_iter()
                .map(|(n, p)| (p, mask.get(&n).map(Tensor::shallow_clone), None, None))
                .collect();
            PerParameter { spec, slots, t: 0 }
        }

        fn zero_grad(&mut self) {
            for (p, ..) in &mut self.slots {
                p.zero_grad();
            }
        }

        fn mask_state(&mut self) {
            tch::no_grad(|| {
                for (_, mask, m, v) in &mut self.slots {
                    if let Some(mask) = mask {
                        for b in [m, v].into_iter().flatten() {
                            let _ = b.g_mul_(mask);
                        }
                    }
                }
            });
        }

        fn step(&mut self, lr: f64) {
            self.t += 1;
            let wd = self.spec.weight_decay();
            let c = |v: f64| Tensor::from(v);
            tch::no_grad(|| {
                for (p, mask, m, v) in &mut self.slots {
                    let mut g = p.grad();
                    if let Some(mask) = mask {
                        let _ = g.g_mul_(mask);
                    }
                    if wd != 0.0 {
                        let _ = g.addcmul_(p, &c(wd));
                    }
                    match self.spec {
                        OptimizerSpec::Sgd {
                            momentum, nesterov, ..
                        } => {
                            let d = if momentum != 0.0 {
                                match m {
                                    Some(b) => {
                                        let _ = b.g_mul_scalar_(momentum).g_add_(&g);
                                    }
                                    None => *m = Some(g.copy()),
                                }
                                let b = m.as_ref().unwrap();
                                if nesterov {
                                    let _ = g.addcmul_(b, &c(momentum));
                                    g.shallow_clone()
                                } else {
                                    b.shallow_clone()
                                }
                            } else {
                                g.shallow_clone()
                            };
                            let _ = p.addcmul_(&d, &c(-lr));
                        }
                        OptimizerSpec::Adam {
                            beta1, beta2, eps, ..
                        } => {
                            let m = m.get_or_insert_with(|| g.zeros_like());
                            let _ = m.lerp_(&g, 1.0 - beta1);
                            let v = v.get_or_insert_with(|| g.zeros_like());
                            let _ = v
                                .g_mul_scalar_(beta2 / (1.0 - beta2))
                                .addcmul_(&g, &g)
                                .g_mul_scalar_(1.0 - beta2);
                            let (bc1, bc2) = (1.0 - beta1.powi(self.t), 1.0 - beta2.powi(self.t));
                            let mut denom = v.clamp_min(f64::from(f32::MIN_POSITIVE));
                            let _ = denom.sqrt_();
                            let _ = denom
                                .g_mul_scalar_(1.0 / bc2.sqrt())
                                .g_add_scalar_(eps)
                                .g_mul_scalar_(-bc1 / lr);
                            let _ = p.addcdiv_(m, &denom);
                        }
                    }
                    if let Some(mask) = mask {
                        let _ = p.g_mul_(mask);
                    }
                }
            });
        }
    }

    /// The flat-buffer optimizer changes no result: on a convolutional network (4-D
    /// weights, biases, several sizes) with a mask, for SGD (plain, momentum, Nesterov,
    /// weight decay) and Adam, through a pruning event with `mask_state` and a rewind of
    /// the weights, every weight after every step is bit-for-bit the per-parameter
    /// reference's. When the mask is not applied to the weights before the first step or
    /// after the rewind, the optimizer applies it (the reference's multiply after every
    /// step did): the same values then, up to the sign of zeros at pruned positions.
    #[test]
    fn flat_buffers_match_the_per_parameter_optimizer() {
        let _g = ap_testkit::torch_lock();
        let specs = [
            sgd(0.05, 0.0, 0.0, false),
            sgd(0.05, 0.9, 5e-3, false),
            sgd(0.05, 0.9, 5e-3, true),
            adam(1e-2, 0.9, 0.999, 1e-8, 1e-3),
        ];
        let (images, labels) = toy_classification(16, 8);
        for (spec, applied) in specs.iter().flat_map(|s| [(s, true), (s, false)]) {
            let build = || {
                tch::manual_seed(7);
                ap_models::build(ModelKind::Conv2, &[1, 8, 8], 2, Device::Cpu).unwrap()
            };
            let (a, b) = (build(), build());
            let names = a.net.prunable();
            let pa = NamedParams::from_var_store(&a.vs, &names).unwrap();
            let pb = NamedParams::from_var_store(&b.vs, &names).unwrap();
            tch::manual_seed(11);
            let cut = random_selection(&pa.tensors(), 0.6);
            let mut ma = Mask::dense(&pa);
            let mut mb = Mask::dense(&pb);
            for (m, p) in [(&mut ma, &pa), (&mut mb, &pb)] {
                m.remove(&cut).unwrap();
                if applied {
                    m.apply(p).unwrap();
                }
            }
            let mut flat = Optimizer::new(spec.clone(), &a.vs, Some(&ma));
            let mut reference = PerParameter::new(spec.clone(), &b.vs, &mb);
            let start: Vec<Tensor> = pa.tensors().iter().map(|t| t.detach().copy()).collect();
            for step in 0..12 {
                if step == 5 {
                    tch::manual_seed(step);
                    let more = random_selection(&pa.tensors(), 0.3);
                    for (m, p) in [(&mut ma, &pa), (&mut mb, &pb)] {
                        m.remove(&more).unwrap();
                        m.apply(p).unwrap();
                    }
                    flat.mask_state();
                    reference.mask_state();
                }
                if step == 8 {
                    // a rewind: the weights are overwritten in place
                    tch::no_grad(|| {
                        for (p, m) in [(&pa, &ma), (&pb, &mb)] {
                            let tensors = p.tensors().into_iter().zip(&start).zip(m.iter());
                            for ((w, s), (_, k)) in tensors {
                                let s = if applied { s * k } else { s.shallow_clone() };
                                w.shallow_clone().copy_(&s);
                            }
                        }
                    });
                }
                for (model, opt) in [(&a, Some(&mut flat)), (&b, None)] {
                    let loss = model
                        .forward(&images, true)
                        .cross_entropy_for_logits(&labels);
                    match opt {
                        Some(o) => {
                            o.zero_grad();
                            loss.backward();
                            o.step(0.05);
                        }
                        None => {
                            reference.zero_grad();
                            loss.backward();
                            reference.step(0.05);
                        }
                    }
                }
                let sorted = |vs: &tch::nn::VarStore| {
                    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
                    v.sort_by(|x, y| x.0.cmp(&y.0));
                    v
                };
                // Bits; without `applied`, -0 and +0 are made one (adding +0).
                let bits = |t: &Tensor| {
                    let t = if applied {
                        t.detach()
                    } else {
                        t.detach() + 0.0
                    };
                    t.view_dtype(Kind::Int)
                };
                for ((name, x), (_, y)) in sorted(&a.vs).iter().zip(&sorted(&b.vs)) {
                    let same = bits(x).equal(&bits(y));
                    assert!(
                        same,
                        "{spec:?} applied {applied}, step {step}: `{name}` differs"
                    );
                }
                assert_eq!(pruned_back(&pa, &ma), 0);
            }
        }
    }

    #[test]
    fn state_masking_after_a_new_pruning_event() {
        let _g = ap_testkit::torch_lock();
        tch::manual_seed(3);
        let model = lenet();
        let params = NamedParams::from_var_store(&model.vs, &model.net.prunable()).unwrap();
        let mut mask = Mask::dense(&params);
        let mut opt = Optimizer::new(sgd(0.1, 0.9, 0.0, false), &model.vs, Some(&mask));
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
        mask.remove(&random_selection(&params.tensors(), 0.5))
            .unwrap();
        mask.apply(&params).unwrap();
        assert!(
            opt.state_at_pruned() > 0.0,
            "momentum is nonzero where we just pruned"
        );
        opt.mask_state();
        assert_eq!(opt.state_at_pruned(), 0.0);
        step(&mut opt);
        assert_eq!(pruned_back(&params, &mask), 0);
    }

    #[test]
    fn sgd_matches_the_closed_form() {
        // One parameter, loss = w·x with constant gradient x: momentum buffer b_t = Σ μ^k x.
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[1], tch::nn::Init::Const(1.0));
        let mut opt = Optimizer::new(sgd(0.1, 0.5, 0.0, false), &vs, None);
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
        let mut opt = Optimizer::new(adam(0.01, 0.9, 0.999, 1e-8, 0.0), &vs, None);
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
            warmup_iterations: 10,
            ..config(&sgd(0.1, 0.9, 0.0, true), 1, 100)
        };
        assert!(
            (cfg.lr_at(0) - 0.01).abs() < 1e-12
                && (cfg.lr_at(9) - 0.1).abs() < 1e-12
                && cfg.lr_at(50) == 0.1
        );
        let bad = sgd(-1.0, 0.0, 0.0, false);
        assert_eq!(bad.validate().unwrap_err().field, "optimizer.lr");
        let toml_err = toml::from_str::<TrainConfig>(
            "batch_size = 1\niterations = 1\nbogus = 2\n[optimizer]\nkind = \"adam\"\nlr = 0.1\n",
        )
        .unwrap_err();
        assert!(toml_err.to_string().contains("bogus"), "{toml_err}");
    }

    #[test]
    fn training_reduces_loss_on_a_learnable_task() {
        let _g = ap_testkit::torch_lock();
        tch::manual_seed(0);
        let model = lenet();
        let split = toy_split(256);
        let cfg = config(&adam(1e-3, 0.9, 0.999, 1e-8, 0.0), 32, 200);
        let r = unmasked(&model, &split, &cfg, (1, 0), &mut NoHook).unwrap();
        assert_eq!(r.epochs.len(), 25);
        assert!(r.epochs.last().unwrap().train_loss < 0.5 * r.epochs[0].train_loss);
        assert_eq!(r.train_dnr.samples, 256);
    }

    /// Records the iterations a phase steps through and the learning rate each step used;
    /// with `stop_at: Some(k)`, ends the phase with an error right after step `k − 1` (the
    /// weights are then θ_k).
    #[derive(Default)]
    struct LrLog {
        before: Vec<u64>,
        after: Vec<(u64, f64)>,
        stop_at: Option<u64>,
    }

    impl StepHook for LrLog {
        fn after_backward(
            &mut self,
            iteration: u64,
            _opt: &mut Optimizer,
        ) -> Result<(), TrainError> {
            self.before.push(iteration);
            Ok(())
        }
        fn after_step(&mut self, iteration: u64, opt: &mut Optimizer) -> Result<(), TrainError> {
            self.after
                .push((iteration, opt.last_lr().expect("a step was taken")));
            if self.stop_at == Some(iteration + 1) {
                return Err(TrainError::Hook("stop".into()));
            }
            Ok(())
        }
    }

    /// A hook that ends the phase right after step `k − 1`.
    fn stop_at(k: u64) -> LrLog {
        LrLog {
            stop_at: Some(k),
            ..LrLog::default()
        }
    }

    /// A phase started at the rewind step k (`train_phase(.., start = k, ..)`) steps
    /// through iterations k, k+1, …, total−1 — nothing skipped or repeated — and the
    /// learning rate used at step k+i is the schedule's value at k+i, warm-up included,
    /// for the constant, step (multi-milestone), cosine and inv schedules, with and without
    /// warm-up, resuming at 0, mid-epoch (7) and on an epoch boundary (4). Expected rates
    /// come from the documented formulas written out here (base·γ^#{milestones ≤ t};
    /// base·½(1+cos(πt/T)); base/(1+γt)^p; ×(t+1)/W while t < W), plus a few literal values. The per-epoch
    /// report starts at epoch k / steps-per-epoch, ends epochs on their boundaries, and
    /// its last rate is the rate at total−1.
    #[test]
    fn lr_schedule_and_warmup_resume_at_the_rewind_step() {
        let _g = ap_testkit::torch_lock();
        tch::manual_seed(5);
        let split = toy_split(16);
        let (base, total, per_epoch) = (0.02, 12u64, 4u64);
        let schedules = [
            LrSchedule::Constant,
            LrSchedule::Step {
                milestones: vec![3, 9],
                gamma: 0.5,
            },
            LrSchedule::Cosine,
            LrSchedule::Inv {
                gamma: 0.5,
                power: 0.75,
            },
        ];
        for schedule in schedules {
            for warmup in [0u64, 6] {
                let expected = |t: u64| {
                    let scheduled = match &schedule {
                        LrSchedule::Constant => base,
                        LrSchedule::Step { .. } => {
                            base * 0.5f64.powi([3, 9].iter().filter(|&&m| t >= m).count() as i32)
                        }
                        LrSchedule::Cosine => {
                            base * 0.5
                                * (1.0 + (std::f64::consts::PI * t as f64 / total as f64).cos())
                        }
                        LrSchedule::Inv { .. } => base / (1.0 + 0.5 * t as f64).powf(0.75),
                    };
                    if t < warmup {
                        scheduled * (t + 1) as f64 / warmup as f64
                    } else {
                        scheduled
                    }
                };
                // literal spot checks of the formula above
                match (&schedule, warmup) {
                    (LrSchedule::Constant, 6) => {
                        assert!((expected(4) - 0.02 * 5.0 / 6.0).abs() < 1e-15)
                    }
                    (LrSchedule::Step { .. }, 0) => assert!(
                        (expected(9) - 0.005).abs() < 1e-15 && (expected(8) - 0.01).abs() < 1e-15
                    ),
                    (LrSchedule::Cosine, 0) => assert!((expected(6) - 0.01).abs() < 1e-15),
                    // 0.02 · 2^−0.75, computed separately
                    (LrSchedule::Inv { .. }, 0) => {
                        assert!((expected(2) - 0.011892071150027212).abs() < 1e-15)
                    }
                    _ => {}
                }
                for start in [0u64, 4, 7] {
                    let cfg = TrainConfig {
                        schedule: schedule.clone(),
                        warmup_iterations: warmup,
                        ..config(&sgd(base, 0.9, 0.0, false), per_epoch as i64, total)
                    };
                    let what = format!("{schedule:?}, warm-up {warmup}, start {start}");
                    let model = lenet();
                    let mut log = LrLog::default();
                    let r = unmasked(&model, &split, &cfg, (1, start), &mut log).unwrap();
                    assert_eq!(log.before, (start..total).collect::<Vec<_>>(), "{what}");
                    assert_eq!(
                        log.after.iter().map(|a| a.0).collect::<Vec<_>>(),
                        log.before,
                        "{what}"
                    );
                    for &(t, lr) in &log.after {
                        assert!(
                            (lr - expected(t)).abs() <= 1e-12,
                            "{what}: step {t} used {lr}, expected {}",
                            expected(t)
                        );
                    }
                    let mut ends = vec![];
                    let mut end = (start / per_epoch + 1) * per_epoch;
                    while end < total {
                        ends.push(end);
                        end += per_epoch;
                    }
                    ends.push(total);
                    assert_eq!(
                        r.epochs.iter().map(|e| e.iteration).collect::<Vec<_>>(),
                        ends,
                        "{what}"
                    );
                    assert_eq!(r.epochs[0].epoch, start / per_epoch, "{what}");
                    let last = r.epochs.last().unwrap();
                    assert!((last.lr - expected(total - 1)).abs() <= 1e-12, "{what}");
                }
            }
        }
    }

    /// Rewinding resumes the same run: with a stateless optimizer (plain SGD with weight
    /// decay, so a fresh optimizer changes nothing), a cosine schedule with warm-up and
    /// augmentation on, training 0 → k, stopping, and training again from `start = k`
    /// gives bit-for-bit the weights of one uninterrupted phase 0 → T. This holds only if
    /// the resumed phase continues the data order (same batches, the partial last batch of
    /// an epoch included), the augmentation draws, and the learning rate at each step.
    /// k = 3 and 7 are mid-epoch, 5 and 10 epoch boundaries (5 steps per epoch: 18 samples,
    /// batches of 4).
    #[test]
    fn resuming_at_k_continues_the_uninterrupted_phase() {
        let _g = ap_testkit::torch_lock();
        tch::manual_seed(21);
        let split = toy_split(18);
        let cfg = TrainConfig {
            schedule: LrSchedule::Cosine,
            warmup_iterations: 3,
            augment: Augment {
                crop_padding: 1,
                horizontal_flip: true,
            },
            ..config(&sgd(0.3, 0.0, 1e-3, false), 4, 14)
        };
        let build = || {
            tch::manual_seed(8);
            lenet()
        };
        let straight = build();
        unmasked(&straight, &split, &cfg, (4, 0), &mut NoHook).unwrap();
        for k in [3u64, 5, 7, 10] {
            let resumed = build();
            let stopped = unmasked(&resumed, &split, &cfg, (4, 0), &mut stop_at(k));
            assert!(matches!(stopped, Err(TrainError::Hook(_))));
            unmasked(&resumed, &split, &cfg, (4, k), &mut NoHook).unwrap();
            let a = straight.vs.variables();
            let b = resumed.vs.variables();
            assert_eq!(a.len(), b.len());
            for (name, t) in &a {
                let diff = (t - &b[name]).abs().max().double_value(&[]);
                assert_eq!(diff, 0.0, "k = {k}: `{name}` differs by {diff}");
            }
        }
    }

    /// Loss Σ c_t ⊙ w for step t: the gradient is c_t (plus weight decay), known by hand.
    fn linear_grad(t: i64) -> Tensor {
        let c: Vec<f32> = (0..8)
            .map(|i: i64| {
                let sign = if (i + t) % 2 == 0 { 1.0 } else { -1.0 };
                0.25 * (i + 1) as f32 * sign + 0.01 * t as f32
            })
            .collect();
        Tensor::from_slice(&c).view([2, 4])
    }

    fn host(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    /// The optimizer state across two pruning events (SGD momentum and Adam, weight decay
    /// on): train 3 steps, prune positions {0, 3, 5} (event 1), `mask_state`, train 3 steps,
    /// prune {1, 6} (event 2), `mask_state`, one more step. At each event the state at
    /// the just-pruned positions is nonzero before `mask_state` and exactly 0 after, and
    /// `mask_state` leaves the state at kept positions bit-for-bit unchanged; pruned
    /// weights and their state stay exactly 0 through every later step; and the step
    /// after event 2 moves each kept weight by the textbook update computed here from
    /// its state (SGD: b ← μb + g, w ← w − lr·b; Adam: m ← β1m + (1−β1)g,
    /// v ← β2v + (1−β2)g², w ← w − lr·(m/(1−β1^t)) / (√(v/(1−β2^t)) + ε), t = 7), with
    /// g = c + λw.
    #[test]
    fn optimizer_state_after_a_later_pruning_event() {
        let (lr, wd) = (0.01, 0.1);
        let specs = [sgd(lr, 0.9, wd, false), adam(lr, 0.9, 0.999, 1e-8, wd)];
        for spec in specs {
            let vs = tch::nn::VarStore::new(Device::Cpu);
            let init =
                Tensor::from_slice(&[0.5f32, -0.3, 0.8, -1.1, 0.2, 0.9, -0.6, 0.4]).view([2, 4]);
            let w = vs.root().var_copy("w", &init);
            let params = NamedParams::from_var_store(&vs, &["w"]).unwrap();
            let mut mask = Mask::dense(&params);
            let mut opt = Optimizer::new(spec.clone(), &vs, Some(&mask));
            let mut t = 0i64;
            let mut step = |opt: &mut Optimizer| {
                t += 1;
                opt.zero_grad();
                (&w * linear_grad(t)).sum(Kind::Float).backward();
                opt.step(lr);
            };
            let pruned_at = |positions: &[i64]| {
                let mut sel = vec![false; 8];
                for &p in positions {
                    sel[p as usize] = true;
                }
                Tensor::from_slice(&sel).view([2, 4])
            };
            let buffers = |opt: &Optimizer| {
                let (m, v) = opt.state_of("w").unwrap();
                [m, v].into_iter().flatten().collect::<Vec<Tensor>>()
            };
            let assert_pruned_zero = |opt: &Optimizer, mask: &Mask, what: &str| {
                let pruned = mask.get("w").unwrap().eq(0.0);
                assert!(
                    host(&w.masked_select(&pruned)).iter().all(|&x| x == 0.0),
                    "{spec:?} {what}: pruned weight revived"
                );
                for b in buffers(opt) {
                    assert!(
                        host(&b.masked_select(&pruned)).iter().all(|&x| x == 0.0),
                        "{spec:?} {what}: state at pruned"
                    );
                }
            };
            let event = |opt: &mut Optimizer, mask: &mut Mask, positions: &[i64]| {
                mask.remove(&[pruned_at(positions)]).unwrap();
                mask.apply(&params).unwrap();
                let before = buffers(opt);
                let just_pruned = pruned_at(positions);
                for b in &before {
                    assert!(
                        host(&b.masked_select(&just_pruned))
                            .iter()
                            .all(|&x| x != 0.0),
                        "{spec:?}: vacuous"
                    );
                }
                opt.mask_state();
                let after = buffers(opt);
                assert_eq!(before.len(), after.len());
                let kept = mask.get("w").unwrap().gt(0.5);
                for (b, a) in before.iter().zip(&after) {
                    assert_eq!(
                        host(&a.masked_select(&kept)),
                        host(&b.masked_select(&kept)),
                        "{spec:?}: kept state changed"
                    );
                }
                assert_pruned_zero(opt, mask, "mask_state");
            };
            for _ in 0..3 {
                step(&mut opt);
            }
            event(&mut opt, &mut mask, &[0, 3, 5]);
            for i in 0..3 {
                step(&mut opt);
                assert_pruned_zero(&opt, &mask, &format!("step {i} after event 1"));
            }
            event(&mut opt, &mut mask, &[1, 6]);
            // one step by hand, from the state
            let w0 = host(&w);
            let state = buffers(&opt);
            let c = host(&linear_grad(7));
            step(&mut opt);
            assert_pruned_zero(&opt, &mask, "step after event 2");
            let w1 = host(&w);
            for i in [2usize, 4, 7] {
                let g = c[i] + wd * w0[i];
                let expected = match spec {
                    OptimizerSpec::Sgd { momentum, .. } => {
                        let b = momentum * host(&state[0])[i] + g;
                        w0[i] - lr * b
                    }
                    OptimizerSpec::Adam {
                        beta1, beta2, eps, ..
                    } => {
                        let m = beta1 * host(&state[0])[i] + (1.0 - beta1) * g;
                        let v = beta2 * host(&state[1])[i] + (1.0 - beta2) * g * g;
                        let (bc1, bc2) = (1.0 - beta1.powi(7), 1.0 - beta2.powi(7));
                        w0[i] - lr * (m / bc1) / ((v / bc2).sqrt() + eps)
                    }
                };
                assert!(
                    (w1[i] - expected).abs() < 2e-6,
                    "{spec:?}: w[{i}] = {} , by hand {expected}",
                    w1[i]
                );
                assert!(
                    (w1[i] - w0[i]).abs() > 1e-4,
                    "{spec:?}: w[{i}] did not move"
                );
            }
        }
    }

    // Mutation tests (docs/testing.md): each range bound of `OptimizerSpec::validate` on
    // both sides, Adam's serde defaults, the step counter and the Debug form.

    fn sgd(lr: f64, momentum: f64, weight_decay: f64, nesterov: bool) -> OptimizerSpec {
        let spec = fixtures::sgd(lr, momentum, weight_decay, nesterov);
        spec.try_into().unwrap()
    }

    fn adam(lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> OptimizerSpec {
        let spec = fixtures::adam(lr)
            .with("beta1", beta1)
            .with("beta2", beta2)
            .with("eps", eps);
        spec.with("weight_decay", weight_decay).try_into().unwrap()
    }

    #[test]
    fn optimizer_validation_bounds() {
        let ok = [
            sgd(0.1, 0.9, 0.0, true),
            sgd(0.1, 0.0, 0.0, false),
            sgd(1e-9, 0.0, 5e-4, false),
            adam(1e-3, 0.9, 0.999, 1e-8, 0.0),
            adam(1e-3, 0.0, 0.0, 1e-8, 1e-2),
        ];
        for spec in ok {
            assert_eq!(spec.validate(), Ok(()), "{spec:?}");
        }
        let bad = [
            (sgd(0.0, 0.9, 0.0, false), "optimizer.lr"),
            (sgd(f64::INFINITY, 0.9, 0.0, false), "optimizer.lr"),
            (sgd(0.1, 1.0, 0.0, false), "optimizer.momentum"),
            (sgd(0.1, -0.1, 0.0, false), "optimizer.momentum"),
            (sgd(0.1, 0.9, -1e-4, false), "optimizer.weight_decay"),
            (sgd(0.1, 0.0, 0.0, true), "optimizer.nesterov"),
            (adam(0.0, 0.9, 0.999, 1e-8, 0.0), "optimizer.lr"),
            (adam(f64::INFINITY, 0.9, 0.999, 1e-8, 0.0), "optimizer.lr"),
            (adam(1e-3, 1.0, 0.999, 1e-8, 0.0), "optimizer.beta1"),
            (adam(1e-3, 0.9, 1.0, 1e-8, 0.0), "optimizer.beta2"),
            (adam(1e-3, 0.9, 0.999, 0.0, 0.0), "optimizer.eps"),
            (
                adam(1e-3, 0.9, 0.999, 1e-8, -1e-4),
                "optimizer.weight_decay",
            ),
        ];
        for (spec, field) in bad {
            let e = spec.validate().unwrap_err();
            assert!(e.field.contains(field), "{spec:?}: {e}");
        }
    }

    #[test]
    fn adam_defaults_are_pytorchs() {
        // PyTorch's Adam: betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0.
        let spec: OptimizerSpec = toml::from_str("kind = \"adam\"\nlr = 0.01\n").unwrap();
        assert_eq!(spec, adam(0.01, 0.9, 0.999, 1e-8, 0.0));
        assert_eq!(spec.lr(), 0.01);
        let spec: OptimizerSpec = toml::from_str("kind = \"sgd\"\nlr = 0.2\n").unwrap();
        assert_eq!(spec, sgd(0.2, 0.0, 0.0, false));
        assert_eq!(spec.lr(), 0.2);
    }

    #[test]
    fn steps_are_counted_and_shown() {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let _w = vs.root().zeros("w", &[3]);
        let mut opt = Optimizer::new(sgd(0.1, 0.0, 0.0, false), &vs, None);
        assert_eq!(opt.steps(), 0);
        let spec = sgd(0.1, 0.0, 0.0, false);
        assert_eq!(
            format!("{opt:?}"),
            format!("Optimizer {{ spec: {spec:?}, steps: 0 }}")
        );
        // no gradient yet: the steps still count
        opt.step(0.1);
        opt.step(0.1);
        assert_eq!(opt.steps(), 2);
        assert!(format!("{opt:?}").ends_with("steps: 2 }"), "{opt:?}");
    }

    /// The state probes against hand-computed sums: one masked SGD step with momentum,
    /// then a position pruned behind the optimizer's back, then `mask_state`.
    #[test]
    fn state_probes_by_hand() {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let w = vs
            .root()
            .var_copy("w", &Tensor::from_slice(&[1.0f32, 1.0, 2.0, 3.0]));
        let v = vs.root().var_copy("v", &Tensor::from_slice(&[1.0f32, 1.0]));
        let mut mask = Mask::from_entries(vec![
            ("v".into(), Tensor::from_slice(&[1.0f32, 0.0])),
            ("w".into(), Tensor::from_slice(&[1.0f32, 0.0, 1.0, 1.0])),
        ]);
        let mut opt = Optimizer::new(sgd(0.5, 0.9, 0.0, false), &vs, Some(&mask));
        // no state yet
        assert_eq!(opt.state_at_pruned(), 0.0);
        assert_eq!(opt.state_at_kept_zeros(), 0.0);
        let loss = (&w * Tensor::from_slice(&[2.0f32, 5.0, 2.0, 4.0])).sum(Kind::Float)
            + (&v * Tensor::from_slice(&[3.0f32, 7.0])).sum(Kind::Float);
        loss.backward();
        opt.step(0.5);
        // masked gradients = momentum buffers: w [2, 0, 2, 4], v [3, 0];
        // w = [1 − 1, 1 (pruned → 0), 2 − 1, 3 − 2] = [0, 0, 1, 1], v = [1 − 1.5, 0]
        let host = |t: &Tensor| Vec::<f32>::try_from(t.detach()).unwrap();
        assert_eq!(host(&w), vec![0.0, 0.0, 1.0, 1.0]);
        assert_eq!(host(&v), vec![-0.5, 0.0]);
        assert_eq!(opt.state_at_pruned(), 0.0);
        // kept with weight exactly 0: w[0], whose buffer holds 2
        assert_eq!(opt.state_at_kept_zeros(), 2.0);
        // prune w[2] (buffer 2) and v[0] (buffer 3) without masking the state
        mask.remove(&[
            Tensor::from_slice(&[true, false]),
            Tensor::from_slice(&[false, false, true, false]),
        ])
        .unwrap();
        assert_eq!(opt.state_at_pruned(), 5.0);
        assert_eq!(opt.state_at_kept_zeros(), 2.0);
        opt.mask_state();
        assert_eq!(opt.state_at_pruned(), 0.0);
        assert_eq!(opt.state_at_kept_zeros(), 2.0);
    }

    /// `LrSchedule::validate`: gamma in (0, 1], milestones strictly increasing.
    #[test]
    fn lr_schedule_validation_bounds() {
        let step = |milestones: &[u64], gamma: f64| LrSchedule::Step {
            milestones: milestones.to_vec(),
            gamma,
        };
        for s in [
            LrSchedule::Constant,
            LrSchedule::Cosine,
            step(&[10, 20], 0.5),
            step(&[10], 1.0),
            step(&[], 1e-3),
        ] {
            assert_eq!(s.validate(), Ok(()), "{s:?}");
        }
        for (s, what) in [
            (step(&[10], 0.0), "gamma"),
            (step(&[10], -0.5), "gamma"),
            (step(&[10], 1.5), "gamma"),
            (step(&[10], f64::NAN), "gamma"),
            (step(&[10, 10], 0.5), "milestones"),
            (step(&[20, 10], 0.5), "milestones"),
        ] {
            let e = s.validate().unwrap_err();
            assert!(e.field.contains(what), "{s:?}: {e}");
        }
    }
}
