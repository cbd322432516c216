//! LeNet-5 in its Caffe variant, the CNN of the pruning literature's MNIST benchmark
//! (Han et al. 2015; ≈ 431K parameters, ≈ 99.2% on MNIST dense): small enough to train on
//! a CPU in tens of seconds per epoch.

use tch::nn;
use tch::Tensor;

use crate::conv::relu;
use crate::{ActivationProbe, Network, Op};

/// LeNet-5 (Caffe): `conv1` 20@5×5 → ReLU → max-pool 2 → `conv2` 50@5×5 → ReLU → max-pool
/// 2 → `fc1` 500 → ReLU → `fc2` classes. Convolutions without padding, so an MNIST image
/// (28×28) leaves 50×4×4 = 800 features for `fc1`. Caffe's prototxt has no ReLU after the
/// convolutions; the ReLU-network version used by pruning papers (and here) has one after
/// every hidden layer, each a probe site (reported before the pool: ReLU and max-pool
/// commute, and the units are the conv's outputs).
///
/// # Shapes
/// input `[N, C, H, W]` (H, W ≥ 16 and divisible by 4) → logits `[N, num_classes]`.
#[derive(Debug)]
pub struct LeNet5 {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc1: nn::Linear,
    fc2: nn::Linear,
    /// Units of the sites `conv1.relu`, `conv2.relu`, `fc1.relu`.
    units: [i64; 3],
}

impl LeNet5 {
    /// Layers `conv1`, `conv2`, `fc1`, `fc2` on `p`, for samples of shape `input` (C, H, W).
    pub fn new(p: &nn::Path, input: &[i64], num_classes: i64) -> LeNet5 {
        let (c, h, w) = (input[0], input[1], input[2]);
        let conv = |name: &str, c_in: i64, c_out: i64| {
            nn::conv2d(p / name, c_in, c_out, 5, Default::default())
        };
        // 5×5 without padding takes 4 off each side; each pool halves.
        let (h1, w1) = (h - 4, w - 4);
        let (h2, w2) = (h1 / 2 - 4, w1 / 2 - 4);
        let features = 50 * (h2 / 2) * (w2 / 2);
        LeNet5 {
            conv1: conv("conv1", c, 20),
            conv2: conv("conv2", 20, 50),
            fc1: nn::linear(p / "fc1", features, 500, Default::default()),
            fc2: nn::linear(p / "fc2", 500, num_classes, Default::default()),
            units: [20 * h1 * w1, 50 * h2 * w2, 500],
        }
    }
}

impl Network for LeNet5 {
    fn forward(&self, xs: &Tensor, _train: bool, probe: &mut dyn ActivationProbe) -> Tensor {
        let h = relu(xs.apply(&self.conv1), "conv1.relu", probe).max_pool2d_default(2);
        let h = relu(h.apply(&self.conv2), "conv2.relu", probe).max_pool2d_default(2);
        let h = relu(h.flatten(1, -1).apply(&self.fc1), "fc1.relu", probe);
        h.apply(&self.fc2)
    }

    fn prunable(&self) -> Vec<String> {
        ["conv1", "conv2", "fc1", "fc2"]
            .map(|n| format!("{n}.weight"))
            .to_vec()
    }

    fn graph(&self) -> Option<Vec<Op>> {
        let conv = |name: &str| Op::Conv {
            name: name.into(),
            stride: 1,
            padding: 0,
            bias: true,
        };
        let pool = Op::MaxPool { kernel: 2 };
        Some(vec![
            conv("conv1"),
            Op::Relu,
            pool.clone(),
            conv("conv2"),
            Op::Relu,
            pool,
            Op::Flatten,
            Op::linear("fc1"),
            Op::Relu,
            Op::linear("fc2"),
        ])
    }

    fn relu_sites(&self) -> Vec<(String, i64)> {
        ["conv1.relu", "conv2.relu", "fc1.relu"]
            .into_iter()
            .zip(self.units)
            .map(|(n, u)| (n.to_string(), u))
            .collect()
    }
}
