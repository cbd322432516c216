//! GPU timing: one ResNet-20 training epoch on CIFAR-10-shaped data (50,000 × 3×32×32,
//! batch 128, masked SGD at 10% density), dense and masked, with cuDNN and in
//! deterministic mode, and one instrumented evaluation of 10,000 images, on a device
//! (default `cuda`).
//!
//! The device-agnostic invariants (exact selection, masked optimizers, DNR, a pruning
//! event with AP, deterministic mode's bit-identity) are ordinary tests that loop over
//! `ap_testkit::devices()`; `xtask/gpu-check.sh` runs them with CUDA required, then this.
//! Built here with `cargo build --release -p ap-runs --example gpu_check`.
use std::time::Instant;

use ap_data::Split;
use ap_eval::evaluate;
use ap_mask::Mask;
use ap_models::{Model, ModelKind};
use ap_tensor::NamedParams;
use ap_train::{train_phase, LrSchedule, NoHook, PhaseStart, TrainConfig};
use common::{cifar_shaped, random_mask, resnet_sgd, sync};

mod common;

/// Seconds `iterations` steps of `cfg` take (after 5 warm-up steps), synchronised.
fn time_steps(model: &Model, train: &Split, mask: Option<&Mask>, cfg: &TrainConfig) -> f64 {
    let device = train.images.device();
    let warm = TrainConfig {
        iterations: 5,
        ..cfg.clone()
    };
    train_phase(
        model,
        train,
        mask,
        &warm,
        PhaseStart::fresh(1),
        &mut NoHook,
        |_| {},
    )
    .unwrap();
    sync(device);
    let t = Instant::now();
    train_phase(
        model,
        train,
        mask,
        cfg,
        PhaseStart::fresh(1),
        &mut NoHook,
        |_| {},
    )
    .unwrap();
    sync(device);
    t.elapsed().as_secs_f64()
}

fn main() {
    if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
    let device = ap_tensor::parse_device(&std::env::args().nth(1).unwrap_or_else(|| "cuda".into()))
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(2)
        });
    println!(
        "device {device:?}, cuda available {}, cudnn {}",
        tch::Cuda::is_available(),
        tch::Cuda::cudnn_is_available()
    );
    // As the `ap` program does by default.
    ap_tensor::set_deterministic(false);
    tch::manual_seed(0);
    let model = ap_models::build(ModelKind::ResNet20, &[3, 32, 32], 10, device).unwrap();
    let params = NamedParams::from_var_store(&model.vs, &model.net.prunable()).unwrap();
    let train = cifar_shaped(device);
    let mask = random_mask(&params, 0.1);
    let epoch = TrainConfig {
        optimizer: resnet_sgd(),
        schedule: LrSchedule::Constant,
        batch_size: 128,
        iterations: 391,
        warmup_iterations: 0,
        augment: Default::default(),
        channels_last: false,
    };
    for (label, m) in [("dense", None), ("10% density, masked", Some(&mask))] {
        println!(
            "TIME ResNet-20 epoch (391 steps of 128), {label}: {:.2} s",
            time_steps(&model, &train, m, &epoch)
        );
    }
    // 50 steps each, scaled to an epoch: deterministic mode is slow (cuDNN off).
    let fifty = TrainConfig {
        iterations: 50,
        ..epoch.clone()
    };
    for (label, deterministic) in [("cuDNN (default)", false), ("--deterministic-cuda", true)] {
        ap_tensor::set_deterministic(deterministic);
        println!(
            "TIME ResNet-20 epoch (50 steps of 128 scaled to 391), masked, {label}: {:.2} s",
            time_steps(&model, &train, Some(&mask), &fifty) * 391.0 / 50.0
        );
    }
    ap_tensor::set_deterministic(false);

    let t = Instant::now();
    let r = evaluate(
        &model,
        &train.images.narrow(0, 0, 10_000),
        &train.labels.narrow(0, 0, 10_000),
        1000,
    );
    sync(device);
    println!(
        "TIME evaluation of 10,000 images with the DNR probe: {:.3} s (dynamic DNR {:.3})",
        t.elapsed().as_secs_f64(),
        r.dnr.dynamic
    );
}
