//! Initialisation schemes, applied after a model is built (seed libtorch first).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::Model;

/// How weights start. `fan_in` = input channels × kernel size of the layer a weight or
/// bias belongs to; "norm" = BatchNorm scale and shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// PyTorch's `nn.Linear`/`nn.Conv2d` defaults (what a PyTorch user compares against):
    /// weights Kaiming-uniform with a = √5, i.e. U(±1/√fan_in); biases U(±1/√fan_in);
    /// norm scale 1, shift 0. The default of a spec.
    #[default]
    Pytorch,
    /// tch's layer defaults as built, unchanged: weights Kaiming-uniform with the ReLU
    /// gain, U(±√(6/fan_in)) — √6 ≈ 2.45× PyTorch's bound.
    Tch,
    /// Kaiming normal, fan-in, ReLU gain: N(0, 2/fan_in); biases 0; norm scale 1.
    KaimingNormal,
    /// Glorot/Xavier normal, N(0, 2/(fan_in + fan_out)); biases 0; norm scale 1: the
    /// lottery-ticket paper's "Gaussian Glorot" for LeNet and Conv-2/4/6.
    XavierNormal,
    /// OpenLTH's CIFAR models: Kaiming normal weights (fan-in, ReLU gain), PyTorch's
    /// default biases, norm scale U(0, 1) (its `uniform` BatchNorm initialiser), shift 0.
    Openlth,
    /// The AP release's `weight_init`: Xavier normal weights, biases N(0, 1), norm scale
    /// N(1, 0.02), shift 0.
    ApRelease,
    /// Caffe's `xavier` filler with `constant` biases, as LeNet-5's solver (Han et al.
    /// 2015) uses: weights U(±√(3/fan_in)), biases 0, norm scale 1.
    CaffeXavier,
}

/// Re-initialises every trainable variable of `model` with `scheme` (no-op for `Tch`),
/// in name order from libtorch's global generator. Weights are the variables with ≥ 2
/// dimensions; 1-D `*.weight` variables are norm scales; `X.bias` belongs to `X.weight`.
pub fn initialise(model: &Model, scheme: InitScheme) {
    if scheme == InitScheme::Tch {
        return;
    }
    tch::no_grad(|| {
        // Trainable variables only: batch-norm running statistics keep their state.
        let mut vars: Vec<(String, Tensor)> = model
            .vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let sizes: std::collections::HashMap<String, Vec<i64>> =
            vars.iter().map(|(n, v)| (n.clone(), v.size())).collect();
        for (name, mut v) in vars {
            let size = v.size();
            let opts = (Kind::Float, v.device());
            let normal = |std: f64, mean: f64| Tensor::randn(size.as_slice(), opts) * std + mean;
            let uniform = |lo: f64, hi: f64| Tensor::rand(size.as_slice(), opts) * (hi - lo) + lo;
            let new = if size.len() >= 2 {
                let (fan_in, fan_out) = fans(&size);
                match scheme {
                    InitScheme::Pytorch => {
                        let b = 1.0 / fan_in.sqrt();
                        uniform(-b, b)
                    }
                    InitScheme::KaimingNormal | InitScheme::Openlth => {
                        normal((2.0 / fan_in).sqrt(), 0.0)
                    }
                    InitScheme::CaffeXavier => {
                        let b = (3.0 / fan_in).sqrt();
                        uniform(-b, b)
                    }
                    _ => normal((2.0 / (fan_in + fan_out)).sqrt(), 0.0),
                }
            } else if name.ends_with(".weight") {
                match scheme {
                    InitScheme::ApRelease => normal(0.02, 1.0),
                    InitScheme::Openlth => uniform(0.0, 1.0),
                    _ => Tensor::ones(size.as_slice(), opts),
                }
            } else {
                // A bias: of a conv/linear layer when its weight has ≥ 2 dimensions.
                let owner = name
                    .strip_suffix("bias")
                    .map(|p| format!("{p}weight"))
                    .and_then(|w| sizes.get(&w))
                    .filter(|s| s.len() >= 2);
                match (owner, scheme) {
                    (Some(w), InitScheme::Pytorch | InitScheme::Openlth) => {
                        let b = 1.0 / fans(w).0.sqrt();
                        uniform(-b, b)
                    }
                    (Some(_), InitScheme::ApRelease) => normal(1.0, 0.0),
                    _ => Tensor::zeros(size.as_slice(), opts),
                }
            };
            v.copy_(&new.to_kind(v.kind()));
        }
    });
}

/// (fan_in, fan_out) of a conv/linear weight of shape (out, in, k...).
fn fans(size: &[i64]) -> (f64, f64) {
    let receptive: i64 = size[2..].iter().product();
    ((size[1] * receptive) as f64, (size[0] * receptive) as f64)
}
