//! VGG-11/16/19 for CIFAR with batch norm (as in OpenLTH).

use tch::nn;
use tch::Tensor;

use crate::conv::{bn_eps, conv3, relu};
use crate::{ActivationProbe, Network, Op};

/// VGG-11/16/19 for CIFAR with batch norm (as in OpenLTH): 3×3 convs (no bias) each
/// followed by BN and ReLU, 2×2 max-pools between stages, and one linear classifier on
/// the 512 features left after five pools.
///
/// # Shapes
/// input `[N, C, H, W]` (H, W divisible by 32) → logits `[N, num_classes]`.
#[derive(Debug)]
pub struct Vgg {
    layers: Vec<VggLayer>,
    fc: nn::Linear,
}

/// VGG-`depth`'s plan: conv output channels, 0 for a 2×2 max-pool.
fn plan(depth: u32) -> Option<&'static [i64]> {
    Some(match depth {
        11 => &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0],
        16 => &[
            64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
        ],
        19 => &[
            64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512,
            512, 0,
        ],
        _ => return None,
    })
}

/// One entry of the plan; a handful per model, so the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum VggLayer {
    Conv {
        index: usize,
        conv: nn::Conv2D,
        bn: nn::BatchNorm,
        units: i64,
    },
    Pool,
}

impl Vgg {
    /// The output channels of VGG-`depth`'s convs in order (11, 16 or 19; `None` for
    /// another depth), without the pools between its five stages.
    pub fn conv_widths(depth: u32) -> Option<Vec<i64>> {
        plan(depth).map(|p| p.iter().copied().filter(|&w| w != 0).collect())
    }

    /// Layers `conv{i}`, `bn{i}` (i from 1), `fc`.
    ///
    /// # Panics
    /// If `depth` is not 11, 16 or 19 ([`crate::ModelKind`] builds only those).
    pub fn new(p: &nn::Path, input: &[i64], depth: u32, num_classes: i64) -> Vgg {
        let plan = plan(depth).unwrap_or_else(|| panic!("VGG-{depth} is not a VGG variant"));
        let (mut c, mut h, mut w) = (input[0], input[1], input[2]);
        let mut layers = vec![];
        let mut index = 0;
        for &width in plan {
            if width == 0 {
                layers.push(VggLayer::Pool);
                h /= 2;
                w /= 2;
                continue;
            }
            index += 1;
            let conv = conv3(p / format!("conv{index}"), c, width, 1, false);
            let bn = nn::batch_norm2d(p / format!("bn{index}"), width, Default::default());
            layers.push(VggLayer::Conv {
                index,
                conv,
                bn,
                units: width * h * w,
            });
            c = width;
        }
        let fc = nn::linear(p / "fc", c * h * w, num_classes, Default::default());
        Vgg { layers, fc }
    }
}

impl Network for Vgg {
    fn forward(&self, xs: &Tensor, train: bool, probe: &mut dyn ActivationProbe) -> Tensor {
        let mut h = xs.shallow_clone();
        for layer in &self.layers {
            h = match layer {
                VggLayer::Conv {
                    index, conv, bn, ..
                } => relu(
                    h.apply(conv).apply_t(bn, train),
                    &format!("conv{index}.relu"),
                    probe,
                ),
                VggLayer::Pool => h.max_pool2d_default(2),
            };
        }
        h.flatten(1, -1).apply(&self.fc)
    }

    fn prunable(&self) -> Vec<String> {
        let convs = self.layers.iter().filter_map(|l| match l {
            VggLayer::Conv { index, .. } => Some(format!("conv{index}.weight")),
            VggLayer::Pool => None,
        });
        convs.chain(["fc.weight".to_string()]).collect()
    }

    fn graph(&self) -> Option<Vec<Op>> {
        let mut ops = vec![];
        for layer in &self.layers {
            match layer {
                VggLayer::Conv { index, .. } => {
                    ops.push(Op::Conv {
                        name: format!("conv{index}"),
                        stride: 1,
                        padding: 1,
                        bias: false,
                    });
                    ops.push(Op::BatchNorm {
                        name: format!("bn{index}"),
                        eps: bn_eps(),
                    });
                    ops.push(Op::Relu);
                }
                VggLayer::Pool => ops.push(Op::MaxPool { kernel: 2 }),
            }
        }
        ops.extend([Op::Flatten, Op::linear("fc")]);
        Some(ops)
    }

    fn relu_sites(&self) -> Vec<(String, i64)> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                VggLayer::Conv { index, units, .. } => Some((format!("conv{index}.relu"), *units)),
                VggLayer::Pool => None,
            })
            .collect()
    }
}
