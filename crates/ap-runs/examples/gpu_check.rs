//! Device check: runs the device-agnostic invariants on a device (default `cuda`) and
//! times one ResNet-20 training epoch on CIFAR-10-shaped data (50,000 × 3×32×32, batch 128,
//! masked SGD at 10% density) and one instrumented evaluation of 10,000 images.
//!
//! Built here, run on a GPU machine by `xtask/gpu-check.sh`:
//! `cargo build --release -p ap-runs --example gpu_check`, then `gpu_check cuda`.
use std::time::Instant;

use ap_criteria::{Allocation, Criterion};
use ap_data::Split;
use ap_eval::{evaluate, DnrProbe};
use ap_mask::Mask;
use ap_models::ActivationProbe;
use ap_prune::{pruning_event, ApConfig, Budget, HostContext};
use ap_tensor::{select_smallest, NamedParams};
use ap_train::{train_phase, LrSchedule, NoHook, Optimizer, OptimizerSpec, TrainConfig};
use tch::{Device, Kind, Tensor};

fn check(name: &str, ok: bool, failures: &mut usize) {
    println!("{} {name}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        *failures += 1;
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
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
    let mut failures = 0;
    // As the `ap` program does by default; section 6 compares with deterministic mode.
    ap_tensor::set_deterministic(false);
    tch::manual_seed(0);

    // 1. Exact-count selection on the device equals the CPU's.
    let scores = Tensor::randint(1000, [1_000_000], (Kind::Float, Device::Cpu));
    let elig = Tensor::rand([1_000_000], (Kind::Float, Device::Cpu)).gt(0.3);
    let cpu = select_smallest(&[&scores], &[&elig], 123_457).unwrap();
    let dev = select_smallest(
        &[&scores.to_device(device)],
        &[&elig.to_device(device)],
        123_457,
    )
    .unwrap();
    check(
        "selection: same 123,457 positions as on the CPU (many ties)",
        dev[0].to_device(Device::Cpu).equal(&cpu[0]),
        &mut failures,
    );

    // 2. Masked SGD with momentum and weight decay keeps pruned weights and state at 0.
    let model = ap_models::build("resnet20", &[3, 32, 32], 10, device).unwrap();
    let params = NamedParams::from_var_store(&model.vs, &model.net.prunable()).unwrap();
    let mut mask = Mask::dense(&params);
    let sel: Vec<Tensor> = params
        .tensors()
        .iter()
        .map(|t| Tensor::rand_like(t).lt(0.5))
        .collect();
    mask.remove(&sel).unwrap();
    mask.apply(&params).unwrap();
    let spec = OptimizerSpec::Sgd {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    let mut opt = Optimizer::new(spec.clone(), &model.vs, Some(&mask));
    let x = Tensor::randn([64, 3, 32, 32], (Kind::Float, device));
    let y = Tensor::randint(10, [64], (Kind::Int64, device));
    for _ in 0..10 {
        let loss = model.forward(&x, true).cross_entropy_for_logits(&y);
        opt.zero_grad();
        loss.backward();
        opt.step(0.1);
    }
    let revived: i64 = params
        .iter()
        .zip(mask.iter())
        .map(|((_, w), (_, m))| {
            w.ne(0.0)
                .logical_and(&m.eq(0.0))
                .sum(Kind::Int64)
                .int64_value(&[])
        })
        .sum();
    check(
        "masked SGD: 0 pruned weights revived after 10 steps",
        revived == 0,
        &mut failures,
    );
    check(
        "masked SGD: optimizer state 0 at pruned positions",
        opt.state_at_pruned() == 0.0,
        &mut failures,
    );

    // 3. DNR on the device equals the CPU's and is bounded.
    let acts = Tensor::randn([256, 64, 8, 8], (Kind::Float, Device::Cpu)).relu();
    let mut a = DnrProbe::new();
    a.observe("s", &acts);
    let mut b = DnrProbe::new();
    b.observe("s", &acts.to_device(device));
    let (ra, rb) = (a.finish(), b.finish());
    check(
        "DNR: device equals CPU, static ≤ dynamic",
        ra == rb && rb.static_ <= rb.dynamic,
        &mut failures,
    );

    // 4. A pruning event with AP on the device: exact counts.
    let start = params.snapshot();
    let before = mask.kept();
    let ap = ApConfig::with_rate(0.02);
    let host = HostContext {
        model: &model,
        batches: &[],
        input_shape: &[3, 32, 32],
        seed: 1,
        synflow_iterations: 1,
    };
    let budget = Budget::from_rates(before, 0.2, Some(&ap), 0);
    let e = pruning_event(
        &params,
        &mut mask,
        &start,
        budget,
        Criterion::Magnitude,
        &Allocation::Global,
        &host,
        Some(&ap),
        0,
        None,
    )
    .unwrap();
    check(
        "pruning event: exactly floor(0.2·S) removed, AP's share included",
        before - mask.kept() == budget.n && e.ap_removed + e.ap_shortfall == budget.n_ap,
        &mut failures,
    );

    // 5. Timing: one ResNet-20 epoch at 10% density, batch 128, and one evaluation.
    let train = Split {
        images: Tensor::randn([50_000, 3, 32, 32], (Kind::Float, device)),
        labels: Tensor::randint(10, [50_000], (Kind::Int64, device)),
    };
    let mut mask = Mask::dense(&params);
    let drop: Vec<Tensor> = params
        .tensors()
        .iter()
        .map(|t| Tensor::rand_like(t).lt(0.9))
        .collect();
    mask.remove(&drop).unwrap();
    mask.apply(&params).unwrap();
    let cfg = TrainConfig {
        optimizer: spec,
        schedule: LrSchedule::Constant,
        batch_size: 128,
        iterations: 391,
        warmup_iterations: 0,
        augment: Default::default(),
    };
    for (label, m) in [("dense", None), ("10% density, masked", Some(&mask))] {
        let warm = TrainConfig {
            iterations: 20,
            ..cfg.clone()
        };
        train_phase(&model, &train, m, &warm, 1, 0, &mut NoHook, |_| {}).unwrap();
        sync(device);
        let t = Instant::now();
        train_phase(&model, &train, m, &cfg, 1, 0, &mut NoHook, |_| {}).unwrap();
        sync(device);
        println!(
            "TIME ResNet-20 epoch (391 steps of 128), {label}: {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }

    // 6. Deterministic mode: the same 60 masked steps from the same start, twice, give
    //    bit-identical weights; then the epoch time of each mode.
    let start = NamedParams::from_var_store(&model.vs, &{
        let mut n: Vec<String> = model.vs.variables().into_keys().collect();
        n.sort();
        n
    })
    .unwrap();
    let init = start.snapshot();
    let short = TrainConfig {
        iterations: 60,
        augment: ap_data::Augment {
            crop_padding: 4,
            horizontal_flip: true,
        },
        ..cfg.clone()
    };
    let twice = |deterministic: bool| -> bool {
        ap_tensor::set_deterministic(deterministic);
        let mut finals = vec![];
        for _ in 0..2 {
            start.copy_from(&init).unwrap();
            train_phase(
                &model,
                &train,
                Some(&mask),
                &short,
                7,
                0,
                &mut NoHook,
                |_| {},
            )
            .unwrap();
            finals.push(start.snapshot());
        }
        let same = finals[0]
            .iter()
            .zip(finals[1].iter())
            .all(|((_, a), (_, b))| a.equal(b));
        same
    };
    let same_fast = twice(false);
    println!("INFO cuDNN on (the default): repeated training bit-identical: {same_fast}");
    check(
        "deterministic mode: repeated masked training (augmented) gives bit-identical weights",
        twice(true),
        &mut failures,
    );
    // 50 steps each, scaled to an epoch: deterministic mode is slow (cuDNN off).
    for (label, deterministic) in [("cuDNN (default)", false), ("--deterministic-cuda", true)] {
        ap_tensor::set_deterministic(deterministic);
        let warm = TrainConfig {
            iterations: 5,
            ..cfg.clone()
        };
        train_phase(
            &model,
            &train,
            Some(&mask),
            &warm,
            1,
            0,
            &mut NoHook,
            |_| {},
        )
        .unwrap();
        sync(device);
        let t = Instant::now();
        let fifty = TrainConfig {
            iterations: 50,
            ..cfg.clone()
        };
        train_phase(
            &model,
            &train,
            Some(&mask),
            &fifty,
            1,
            0,
            &mut NoHook,
            |_| {},
        )
        .unwrap();
        sync(device);
        println!(
            "TIME ResNet-20 epoch (50 steps of 128 scaled to 391), masked, {label}: {:.2} s",
            t.elapsed().as_secs_f64() * 391.0 / 50.0
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
    println!("{} passed, {failures} failed", 6 - failures);
    std::process::exit(if failures == 0 { 0 } else { 1 });
}
