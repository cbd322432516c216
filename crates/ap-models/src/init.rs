//! Initialisation schemes, applied after a model is built (seed libtorch first).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::Model;

/// How weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// tch's layer defaults (PyTorch's: Kaiming-uniform with a = √5, BN scale 1).
    #[default]
    Default,
    /// Kaiming normal, fan-in, ReLU gain: N(0, 2/fan_in); biases 0; BN scale 1.
    KaimingNormal,
    /// Glorot/Xavier normal: N(0, 2/(fan_in + fan_out)); biases 0; BN scale 1.
    XavierNormal,
    /// The AP release's scheme: Xavier normal for conv/linear weights, BN scale ~ N(1, 0.02),
    /// biases 0.
    ApRelease,
}

/// Re-initialises every variable of `model` with `scheme` (no-op for `Default`).
/// Weights are the variables with ≥ 2 dimensions; 1-D `*.weight` variables are norm scales.
pub fn initialise(model: &Model, scheme: InitScheme) {
    if scheme == InitScheme::Default {
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
        for (name, mut v) in vars {
            let size = v.size();
            if size.len() >= 2 {
                let receptive: i64 = size[2..].iter().product();
                let (fan_in, fan_out) =
                    ((size[1] * receptive) as f64, (size[0] * receptive) as f64);
                let std = match scheme {
                    InitScheme::KaimingNormal => (2.0 / fan_in).sqrt(),
                    _ => (2.0 / (fan_in + fan_out)).sqrt(),
                };
                v.copy_(
                    &(Tensor::randn(size.as_slice(), (Kind::Float, v.device())) * std)
                        .to_kind(v.kind()),
                );
            } else if name.ends_with(".weight") {
                let _ = v.fill_(1.0);
                if scheme == InitScheme::ApRelease {
                    let _ = v.g_add_(
                        &(Tensor::randn(size.as_slice(), (Kind::Float, v.device())) * 0.02)
                            .to_kind(v.kind()),
                    );
                }
            } else {
                let _ = v.zero_();
            }
        }
    });
}
