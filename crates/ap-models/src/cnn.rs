//! Convolutional models of the lottery-ticket and AP papers: Conv-2/4/6, ResNet-20/32/56
//! for CIFAR, VGG-11/16/19 with batch norm. Every ReLU call site has its own name and is
//! reported to the probe once per forward pass.

use tch::nn;
use tch::Tensor;

use crate::{ActivationProbe, Network};

fn conv3(p: nn::Path, c_in: i64, c_out: i64, stride: i64, bias: bool) -> nn::Conv2D {
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

fn relu(x: Tensor, site: &str, probe: &mut dyn ActivationProbe) -> Tensor {
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
    /// Layers `conv`, `bn`, `layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,shortcut.*}`, `fc`.
    /// Unit counts in `relu_sites` assume 32×32 inputs.
    pub fn new(
        p: &nn::Path,
        in_channels: i64,
        depth: i64,
        option_b: bool,
        num_classes: i64,
    ) -> ResNet {
        let n = (depth - 2) / 6;
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

    fn relu_sites(&self) -> Vec<(String, i64)> {
        let mut sites = vec![("conv.relu".to_string(), self.stem_units)];
        for b in &self.blocks {
            sites.push((format!("{}.relu1", b.name), b.units));
            sites.push((format!("{}.relu2", b.name), b.units));
        }
        sites
    }
}

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
    /// Layers `conv{i}`, `bn{i}` (i from 1), `fc`.
    pub fn new(p: &nn::Path, input: &[i64], depth: usize, num_classes: i64) -> Vgg {
        let plan: &[i64] = match depth {
            11 => &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0],
            16 => &[
                64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
            ],
            _ => &[
                64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512,
                512, 512, 0,
            ],
        };
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
