//! ResNet-20/32/56 for CIFAR (He et al. 2016), with option A or option B shortcuts.

use tch::nn;
use tch::Tensor;

use crate::conv::{bn_eps, conv3, conv3_op, relu};
use crate::{ActivationProbe, Network, Op, Shortcut};

#[derive(Debug)]
struct Block {
    name: String,
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    /// Option B projection (1×1 conv + BN) when the shape changes.
    projection: Option<(nn::Conv2D, nn::BatchNorm)>,
    /// Option A: channels to zero-pad on each side when the shape changes.
    pad: i64,
    stride: i64,
    units: i64,
}

impl Block {
    /// The block as one [`Op::Residual`] followed by its second ReLU.
    fn graph(&self) -> [Op; 2] {
        let bn = |name: &str| Op::BatchNorm {
            name: format!("{}.{name}", self.name),
            eps: bn_eps(),
        };
        let conv = |name: &str, stride| conv3_op(&format!("{}.{name}", self.name), stride, false);
        let body = vec![
            conv("conv1", self.stride),
            bn("bn1"),
            Op::Relu,
            conv("conv2", 1),
            bn("bn2"),
        ];
        let shortcut = match (&self.projection, self.stride) {
            (Some(_), stride) => vec![
                Op::Conv {
                    name: format!("{}.shortcut.conv", self.name),
                    stride,
                    padding: 0,
                    bias: false,
                },
                bn("shortcut.bn"),
            ],
            (None, 1) => vec![],
            (None, stride) => vec![Op::SubsamplePad {
                stride,
                pad: self.pad,
            }],
        };
        [Op::Residual { body, shortcut }, Op::Relu]
    }

    fn forward(&self, x: &Tensor, train: bool, probe: &mut dyn ActivationProbe) -> Tensor {
        let h = x.apply(&self.conv1).apply_t(&self.bn1, train);
        let h = relu(h, &format!("{}.relu1", self.name), probe);
        let h = h.apply(&self.conv2).apply_t(&self.bn2, train);
        let shortcut = match (&self.projection, self.stride) {
            (Some((conv, bn)), _) => x.apply(conv).apply_t(bn, train),
            (None, 1) => x.shallow_clone(),
            (None, s) => {
                let (hh, ww) = (x.size()[2], x.size()[3]);
                x.slice(2, 0, hh, s)
                    .slice(3, 0, ww, s)
                    .constant_pad_nd([0, 0, 0, 0, self.pad, self.pad])
            }
        };
        relu(h + shortcut, &format!("{}.relu2", self.name), probe)
    }
}

/// ResNet-20/32/56 for CIFAR (He et al. 2016): a 3×3 conv with 16 channels, three stages
/// of n = (depth − 2)/6 basic blocks with 16/32/64 channels (stride 2 at the start of
/// stages 2 and 3), global average pooling, one linear layer. Shortcuts that change shape
/// are option A (subsample + zero-pad channels, no parameters) or option B (1×1 conv + BN).
///
/// # Shapes
/// input `[N, C, H, W]` (H, W divisible by 4) → logits `[N, num_classes]`.
#[derive(Debug)]
pub struct ResNet {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    blocks: Vec<Block>,
    fc: nn::Linear,
    stem_units: i64,
}

impl ResNet {
    /// Layers `conv`, `bn`, `layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,shortcut.*}`, `fc`;
    /// n = (depth − 2)/6 blocks per stage. Unit counts in `relu_sites` assume 32×32 inputs.
    pub fn new(
        p: &nn::Path,
        in_channels: i64,
        depth: i64,
        shortcut: Shortcut,
        num_classes: i64,
    ) -> ResNet {
        let n = (depth - 2) / 6;
        let option_b = shortcut == Shortcut::B;
        let conv = conv3(p / "conv", in_channels, 16, 1, false);
        let bn = nn::batch_norm2d(p / "bn", 16, Default::default());
        let mut blocks = vec![];
        let mut c_in = 16;
        let mut side = 32;
        for (stage, width) in [16i64, 32, 64].into_iter().enumerate() {
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                side /= stride;
                let q = p / format!("layer{}", stage + 1) / i.to_string();
                let projection = (option_b && stride != 1).then(|| {
                    let conv = nn::conv2d(
                        &q / "shortcut" / "conv",
                        c_in,
                        width,
                        1,
                        nn::ConvConfig {
                            stride,
                            bias: false,
                            ..Default::default()
                        },
                    );
                    (
                        conv,
                        nn::batch_norm2d(&q / "shortcut" / "bn", width, Default::default()),
                    )
                });
                blocks.push(Block {
                    name: format!("layer{}.{i}", stage + 1),
                    conv1: conv3(&q / "conv1", c_in, width, stride, false),
                    bn1: nn::batch_norm2d(&q / "bn1", width, Default::default()),
                    conv2: conv3(&q / "conv2", width, width, 1, false),
                    bn2: nn::batch_norm2d(&q / "bn2", width, Default::default()),
                    projection,
                    pad: (width - c_in) / 2,
                    stride,
                    units: width * side * side,
                });
                c_in = width;
            }
        }
        let fc = nn::linear(p / "fc", 64, num_classes, Default::default());
        ResNet {
            conv,
            bn,
            blocks,
            fc,
            stem_units: 16 * 32 * 32,
        }
    }
}

impl Network for ResNet {
    fn forward(&self, xs: &Tensor, train: bool, probe: &mut dyn ActivationProbe) -> Tensor {
        let mut h = relu(
            xs.apply(&self.conv).apply_t(&self.bn, train),
            "conv.relu",
            probe,
        );
        for b in &self.blocks {
            h = b.forward(&h, train, probe);
        }
        h.adaptive_avg_pool2d([1, 1]).flatten(1, -1).apply(&self.fc)
    }

    fn prunable(&self) -> Vec<String> {
        let mut names = vec!["conv.weight".to_string()];
        for b in &self.blocks {
            names.push(format!("{}.conv1.weight", b.name));
            names.push(format!("{}.conv2.weight", b.name));
            if b.projection.is_some() {
                names.push(format!("{}.shortcut.conv.weight", b.name));
            }
        }
        names.push("fc.weight".into());
        names
    }

    fn graph(&self) -> Option<Vec<Op>> {
        let mut ops = vec![
            conv3_op("conv", 1, false),
            Op::BatchNorm {
                name: "bn".into(),
                eps: bn_eps(),
            },
            Op::Relu,
        ];
        for b in &self.blocks {
            ops.extend(b.graph());
        }
        ops.extend([Op::GlobalAvgPool, Op::Flatten, Op::linear("fc")]);
        Some(ops)
    }

    fn relu_sites(&self) -> Vec<(String, i64)> {
        let mut sites = vec![("conv.relu".to_string(), self.stem_units)];
        for b in &self.blocks {
            sites.push((format!("{}.relu1", b.name), b.units));
            sites.push((format!("{}.relu2", b.name), b.units));
        }
        sites
    }
}
