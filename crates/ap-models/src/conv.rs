//! Conv-2/4/6 of the lottery-ticket paper (Frankle & Carbin 2019), and the conv and ReLU
//! helpers the other CNN families share. Every ReLU call site has its own name and is
//! reported to the probe once per forward pass.

use tch::nn;
use tch::Tensor;

use crate::{ActivationProbe, Network, Op};

/// A 3×3 convolution with padding 1.
pub(crate) fn conv3(p: nn::Path, c_in: i64, c_out: i64, stride: i64, bias: bool) -> nn::Conv2D {
    nn::conv2d(
        p,
        c_in,
        c_out,
        3,
        nn::ConvConfig {
            padding: 1,
            stride,
            bias,
            ..Default::default()
        },
    )
}

/// The ε of every batch norm here (tch's default config, which the models build with).
pub(crate) fn bn_eps() -> f64 {
    nn::BatchNormConfig::default().eps
}

/// The [`Op`] of a [`conv3`] layer named `name`.
pub(crate) fn conv3_op(name: &str, stride: i64, bias: bool) -> Op {
    Op::Conv {
        name: name.into(),
        stride,
        padding: 1,
        bias,
    }
}

/// ReLU, reporting its output to `probe` as `site`.
pub(crate) fn relu(x: Tensor, site: &str, probe: &mut dyn ActivationProbe) -> Tensor {
    let y = x.relu();
    probe.observe(site, &y);
    y
}

/// Conv-2/4/6 (Frankle & Carbin 2019): `stages` × (two 3×3 convs with 64·2^i channels,
/// then 2×2 max-pool), then fully connected 256-256-classes. No batch norm.
///
/// # Shapes
/// input `[N, C, H, W]` (H, W divisible by 2^stages) → logits `[N, num_classes]`.
#[derive(Debug)]
pub struct ConvNet {
    convs: Vec<(String, nn::Conv2D)>,
    fcs: Vec<(String, nn::Linear)>,
    units: Vec<i64>,
}

impl ConvNet {
    /// Conv layers `conv1..`, linear layers `fc1..fc3`.
    pub fn new(p: &nn::Path, input: &[i64], stages: usize, num_classes: i64) -> ConvNet {
        let (mut c, mut h, mut w) = (input[0], input[1], input[2]);
        let mut convs = vec![];
        let mut units = vec![];
        for stage in 0..stages {
            let width = 64 << stage;
            for _ in 0..2 {
                let name = format!("conv{}", convs.len() + 1);
                convs.push((name.clone(), conv3(p / name.as_str(), c, width, 1, true)));
                units.push(width * h * w);
                c = width;
            }
            h /= 2;
            w /= 2;
        }
        let dims = [c * h * w, 256, 256, num_classes];
        let fcs: Vec<(String, nn::Linear)> = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| {
                let name = format!("fc{}", i + 1);
                (
                    name.clone(),
                    nn::linear(p / name.as_str(), d[0], d[1], Default::default()),
                )
            })
            .collect();
        units.extend([256, 256]);
        ConvNet { convs, fcs, units }
    }
}

impl Network for ConvNet {
    fn forward(&self, xs: &Tensor, _train: bool, probe: &mut dyn ActivationProbe) -> Tensor {
        let mut h = xs.shallow_clone();
        for (i, (name, conv)) in self.convs.iter().enumerate() {
            h = relu(h.apply(conv), &format!("{name}.relu"), probe);
            if i % 2 == 1 {
                h = h.max_pool2d_default(2);
            }
        }
        h = h.flatten(1, -1);
        let last = self.fcs.len() - 1;
        for (i, (name, fc)) in self.fcs.iter().enumerate() {
            h = h.apply(fc);
            if i < last {
                h = relu(h, &format!("{name}.relu"), probe);
            }
        }
        h
    }

    fn prunable(&self) -> Vec<String> {
        self.convs
            .iter()
            .map(|(n, _)| n)
            .chain(self.fcs.iter().map(|(n, _)| n))
            .map(|n| format!("{n}.weight"))
            .collect()
    }

    fn graph(&self) -> Option<Vec<Op>> {
        let mut ops = vec![];
        for (i, (name, _)) in self.convs.iter().enumerate() {
            ops.push(conv3_op(name, 1, true));
            ops.push(Op::Relu);
            if i % 2 == 1 {
                ops.push(Op::MaxPool { kernel: 2 });
            }
        }
        ops.push(Op::Flatten);
        for (i, (name, _)) in self.fcs.iter().enumerate() {
            ops.push(Op::linear(name));
            if i + 1 < self.fcs.len() {
                ops.push(Op::Relu);
            }
        }
        Some(ops)
    }

    fn relu_sites(&self) -> Vec<(String, i64)> {
        let names = self
            .convs
            .iter()
            .map(|(n, _)| n)
            .chain(self.fcs.iter().take(2).map(|(n, _)| n));
        names
            .zip(&self.units)
            .map(|(n, &u)| (format!("{n}.relu"), u))
            .collect()
    }
}
