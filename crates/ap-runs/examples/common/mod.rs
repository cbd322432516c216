//! What the GPU examples (`gpu_check`, `gpu_bench`) share: ResNet-20's CIFAR-10-shaped
//! random data on the device, a random mask, the SGD recipe, and a device sync.

use ap_data::Split;
use ap_mask::Mask;
use ap_tensor::NamedParams;
use ap_train::OptimizerSpec;
use tch::{Device, Kind, Tensor};

/// Waits for the device's queued work (a no-op on the CPU), so a timer sees it.
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// 50,000 random 3×32×32 images with random labels on `device`.
pub fn cifar_shaped(device: Device) -> Split {
    Split {
        images: Tensor::randn([50_000, 3, 32, 32], (Kind::Float, device)),
        labels: Tensor::randint(10, [50_000], (Kind::Int64, device)),
    }
}

/// A mask keeping each weight of `params` with probability `density`, applied.
pub fn random_mask(params: &NamedParams, density: f64) -> Mask {
    let mut mask = Mask::dense(params);
    let drop: Vec<Tensor> = params
        .tensors()
        .iter()
        .map(|t| Tensor::rand_like(t).lt(1.0 - density))
        .collect();
    mask.remove(&drop).unwrap();
    mask.apply(params).unwrap();
    mask
}

/// SGD with momentum 0.9 and weight decay 5e-4 at rate 0.1 (the ResNet recipes' optimizer).
pub fn resnet_sgd() -> OptimizerSpec {
    OptimizerSpec::Sgd {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    }
}
