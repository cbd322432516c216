//! Throughput of a training step on a device, for `xtask/gpu-bench.sh`: ResNet-20 on
//! CIFAR-10-shaped random data (50,000 × 3×32×32 on the device), batch 128, SGD momentum
//! 0.9, weight decay 5e-4, a global random mask at `--density`, the step of
//! `ap_train::train_phase` (gather a shuffled batch, forward, cross-entropy,
//! `zero_grad`, backward, masked optimizer step) without its DNR probe. Prints one JSON
//! line: seconds for `STEPS` timed steps, the epoch (391 steps) they scale to, and with
//! `--parts` the mean milliseconds of each part (a device synchronisation after each
//! part, so the sum is a little above the step).
//!
//! Usage: `gpu_bench DEVICE STEPS [--warmup N] [--density D] [--channels-last] [--parts]
//! [--label TEXT]`. Built with `cargo build --release -p ap-runs --example gpu_bench`.
use std::time::Instant;

use ap_models::ModelKind;
use ap_tensor::NamedParams;
use ap_train::Optimizer;
use common::{cifar_shaped, random_mask, resnet_sgd, sync};
use tch::{Device, Tensor};

mod common;

struct Args {
    device: Device,
    steps: usize,
    warmup: usize,
    density: f64,
    channels_last: bool,
    parts: bool,
    label: String,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let device =
        ap_tensor::parse_device(&it.next().ok_or("missing DEVICE")?).map_err(|e| e.to_string())?;
    let steps: usize = it
        .next()
        .ok_or("missing STEPS")?
        .parse()
        .map_err(|e| format!("STEPS: {e}"))?;
    let mut a = Args {
        device,
        steps: steps.max(1),
        warmup: 5,
        density: 0.1,
        channels_last: false,
        parts: false,
        label: String::new(),
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--warmup" => a.warmup = value()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--density" => a.density = value()?.parse().map_err(|e| format!("--density: {e}"))?,
            "--label" => a.label = value()?,
            "--channels-last" => a.channels_last = true,
            "--parts" => a.parts = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(a.density > 0.0 && a.density <= 1.0) {
        return Err(format!("--density {} must be in (0, 1]", a.density));
    }
    Ok(a)
}

fn main() {
    let a = args().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    // As the `ap` program does by default: cuDNN on and autotuning.
    ap_tensor::set_deterministic(false);
    tch::manual_seed(0);
    let device = a.device;
    let mut model = ap_models::build(ModelKind::ResNet20, &[3, 32, 32], 10, device).unwrap();
    if a.channels_last {
        model.to_channels_last();
    }
    let params = NamedParams::from_var_store(&model.vs, &model.net.prunable()).unwrap();
    let train = cifar_shaped(device);
    let mask = (a.density < 1.0).then(|| random_mask(&params, a.density));
    let mut opt = Optimizer::new(resnet_sgd(), &model.vs, mask.as_ref());
    let batch = 128;
    let batches: Vec<Tensor> = train.shuffled_batches(batch, 1, 0).unwrap().collect();
    let mut parts = [0.0f64; 4];
    let mark = |parts: &mut [f64; 4], i: usize, t: &mut Instant| {
        if a.parts {
            sync(device);
            parts[i] += t.elapsed().as_secs_f64();
            *t = Instant::now();
        }
    };
    let mut start = Instant::now();
    for step in 0..a.warmup + a.steps {
        if step == a.warmup {
            sync(device);
            parts = [0.0; 4];
            start = Instant::now();
        }
        let mut t = Instant::now();
        let idx = &batches[step % batches.len()];
        let (x, y) = train.batch(idx);
        mark(&mut parts, 0, &mut t);
        let loss = model.forward(&x, true).cross_entropy_for_logits(&y);
        mark(&mut parts, 1, &mut t);
        opt.zero_grad();
        loss.backward();
        mark(&mut parts, 2, &mut t);
        opt.step(0.1);
        mark(&mut parts, 3, &mut t);
    }
    sync(device);
    let seconds = start.elapsed().as_secs_f64();
    let per_step_ms = |s: f64| 1000.0 * s / a.steps as f64;
    let line = serde_json::json!({
        "label": a.label,
        "device": format!("{device:?}"),
        "steps": a.steps,
        "batch": batch,
        "density": a.density,
        "channels_last": a.channels_last,
        "seconds": seconds,
        "epoch_s": seconds / a.steps as f64 * 391.0,
        "parts_ms": a.parts.then(|| serde_json::json!({
            "gather": per_step_ms(parts[0]),
            "forward": per_step_ms(parts[1]),
            "backward": per_step_ms(parts[2]),
            "optimizer": per_step_ms(parts[3]),
        })),
    });
    println!("{line}");
}
