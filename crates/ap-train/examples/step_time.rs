//! Times the parts of a LeNet-300-100 training step (batch 60) on random data:
//! forward+backward alone, plus the masked Adam step, plus batch gathering.
//! `cargo run --release -p ap-train --example step_time`
use std::time::Instant;

use ap_mask::Mask;
use ap_models::ModelKind;
use ap_tensor::NamedParams;
use ap_train::{Optimizer, OptimizerSpec};
use tch::{Device, Kind, Tensor};

fn main() {
    let threads: i32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let model = ap_models::build(ModelKind::LeNet300_100, &[1, 28, 28], 10, Device::Cpu).unwrap();
    let params = NamedParams::from_var_store(&model.vs, &model.net.prunable()).unwrap();
    let mask = Mask::dense(&params);
    let images = Tensor::randn([60_000, 1, 28, 28], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(10, [60_000], (Kind::Int64, Device::Cpu));
    let spec = OptimizerSpec::Adam {
        lr: 1.2e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut opt = Optimizer::new(spec, &model.vs, Some(&mask));
    let n = 1000;
    let idx = Tensor::randperm(60_000, (Kind::Int64, Device::Cpu));
    for (name, gather, step) in [
        ("fwd+bwd", false, false),
        ("fwd+bwd+adam", false, true),
        ("gather+fwd+bwd+adam", true, true),
    ] {
        let t = Instant::now();
        for i in 0..n {
            let (x, y) = if gather {
                let b = idx.narrow(0, (i * 60) % 59_940, 60);
                (images.index_select(0, &b), labels.index_select(0, &b))
            } else {
                (images.narrow(0, 0, 60), labels.narrow(0, 0, 60))
            };
            let loss = model.forward(&x, true).cross_entropy_for_logits(&y);
            opt.zero_grad();
            loss.backward();
            if step {
                opt.step(1.2e-3);
            }
        }
        println!(
            "{name:<22} {:.3} ms/step ({threads} threads)",
            t.elapsed().as_secs_f64() * 1e3 / n as f64
        );
    }
}
