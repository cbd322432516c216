//! Masked training on every device of `ap_testkit::devices()` (the CPU, and CUDA where
//! present or required by `AP_TEST_DEVICES`), on a small ResNet-20 (convolutions, batch
//! norm, shortcuts): masked SGD (momentum, weight decay, Nesterov) and Adam never revive a
//! pruned weight and keep their state 0 at pruned positions; with deterministic mode on,
//! the same masked, augmented training twice gives bit-identical weights.

use ap_data::{Augment, Split};
use ap_mask::Mask;
use ap_models::{Model, ModelKind};
use ap_tensor::NamedParams;
use ap_testkit::fixtures::{adam, sgd, train};
use ap_testkit::tensors::{random_selection, revived, toy_classification};
use ap_testkit::TomlExt;
use ap_train::{train_phase, NoHook, Optimizer, PhaseStart, StepHook, TrainConfig, TrainError};
use tch::Device;

/// A ResNet-20 for 1×8×8 inputs on `device` with about half of every prunable layer
/// pruned (weights zeroed), and 32 toy samples there. The caller holds the torch lock.
fn masked_resnet(device: Device, seed: i64) -> (Model, NamedParams, Mask, Split) {
    tch::manual_seed(seed);
    let model = ap_models::build(ModelKind::ResNet20, &[1, 8, 8], 2, device).unwrap();
    let params = NamedParams::from_var_store(&model.vs, &model.net.prunable()).unwrap();
    let mut mask = Mask::dense(&params);
    mask.remove(&random_selection(&params.tensors(), 0.5))
        .unwrap();
    mask.apply(&params).unwrap();
    let (images, labels) = toy_classification(32, 8);
    let split = Split {
        images: images.to_device(device),
        labels: labels.to_device(device),
    };
    (model, params, mask, split)
}

fn pruned_back(params: &NamedParams, mask: &Mask) -> i64 {
    revived(params.tensors(), mask.iter().map(|(_, m)| m))
}

/// The largest optimizer state at pruned positions after any step of a phase.
#[derive(Default)]
struct StateAtPruned {
    largest: f64,
    steps: u64,
}

impl StepHook for StateAtPruned {
    fn after_step(&mut self, _iteration: u64, opt: &mut Optimizer) -> Result<(), TrainError> {
        self.largest = self.largest.max(opt.state_at_pruned());
        self.steps += 1;
        Ok(())
    }
}

#[test]
fn masked_optimizers_never_revive_pruned_weights_on_each_device() {
    let _g = ap_testkit::torch_lock();
    let optimizers = [
        sgd(0.1, 0.9, 5e-4, false),
        sgd(0.1, 0.9, 5e-4, true),
        adam(1e-2).with("weight_decay", 1e-2),
    ];
    for device in ap_testkit::devices() {
        for optimizer in &optimizers {
            let cfg: TrainConfig = train(optimizer.clone(), 16, 10).try_into().unwrap();
            let what = format!("{device:?}, {:?}", cfg.optimizer);
            let (model, params, mask, split) = masked_resnet(device, 1);
            let before = params.snapshot();
            let mut state = StateAtPruned::default();
            train_phase(
                &model,
                &split,
                Some(&mask),
                &cfg,
                PhaseStart::fresh(3),
                &mut state,
                |_| {},
            )
            .unwrap();
            assert_eq!(pruned_back(&params, &mask), 0, "{what}: train_phase");
            let moved = params
                .tensors()
                .iter()
                .zip(before.tensors())
                .any(|(a, b)| !a.equal(b));
            assert!(moved, "{what}: training changed nothing");
            assert_eq!(state.steps, 10, "{what}: the hook saw every step");
            assert_eq!(
                state.largest, 0.0,
                "{what}: optimizer state at pruned positions"
            );
        }
    }
}

/// Turns deterministic mode off again when dropped, also when the test fails.
struct Deterministic;

impl Deterministic {
    fn on() -> Deterministic {
        ap_tensor::set_deterministic(true);
        Deterministic
    }
}

impl Drop for Deterministic {
    fn drop(&mut self) {
        ap_tensor::set_deterministic(false);
    }
}

#[test]
fn deterministic_mode_repeats_masked_augmented_training_bit_for_bit() {
    let _g = ap_testkit::torch_lock();
    let _mode = Deterministic::on();
    let mut cfg: TrainConfig = train(sgd(0.1, 0.9, 5e-4, false), 8, 12).try_into().unwrap();
    cfg.augment = Augment {
        crop_padding: 1,
        horizontal_flip: true,
    };
    for device in ap_testkit::devices() {
        let (model, _, mask, split) = masked_resnet(device, 2);
        // Every variable, batch-norm statistics included.
        let mut names: Vec<String> = model.vs.variables().into_keys().collect();
        names.sort();
        let all = NamedParams::from_var_store(&model.vs, &names).unwrap();
        let init = all.snapshot();
        let mut finals = vec![];
        for _ in 0..2 {
            all.copy_from(&init).unwrap();
            train_phase(
                &model,
                &split,
                Some(&mask),
                &cfg,
                PhaseStart::fresh(7),
                &mut NoHook,
                |_| {},
            )
            .unwrap();
            finals.push(all.snapshot());
        }
        for ((name, a), (_, b)) in finals[0].iter().zip(finals[1].iter()) {
            assert!(a.equal(b), "{device:?}: `{name}` differs between two runs");
        }
        let changed = finals[0]
            .iter()
            .zip(init.iter())
            .any(|((_, a), (_, b))| !a.equal(b));
        assert!(changed, "{device:?}: training changed nothing");
    }
}
