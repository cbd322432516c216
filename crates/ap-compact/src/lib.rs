//! A pruned network as an inference network of plain dense layers, and its compaction: the
//! exactly equivalent smaller dense network.
//!
//! A mask is not a speed-up: a masked layer still multiplies every zero. But a pruned
//! network has units whose pruning made them useless, and removing them leaves a smaller
//! *dense* network with the same outputs, fast on any hardware:
//! - a unit with no kept incoming weight emits a constant (its bias through the ReLU, and
//!   through batch norm, which is folded into the layer before): the constant is folded
//!   into the next layer's bias and the unit removed;
//! - a unit with no kept outgoing weight affects nothing: removed;
//! - an input feature (or channel) no kept weight reads: dropped by a gather at the input.
//!
//! Removing one unit can strand others, so the rules run to a fixed point. Sequential
//! networks are compacted throughout; in a residual block only the units inside the block
//! (the first convolution's output channels), since the residual stream is shared.
//!
//! [`InferenceNet::from_model`] turns a model and its masks into the masked network (batch
//! norm folded, pruned weights zero); [`InferenceNet::compact`] compacts it. Both run in Rust
//! ([`InferenceNet::forward`]) and describe themselves as named tensors plus the list of
//! [`Op`]s that reads them ([`InferenceNet::ops`]), which a few lines of PyTorch run
//! (`docs/export.md`).

use ap_models::Op;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

mod build;
mod compact;

pub use compact::{Compaction, LayerChange};

/// Why a network could not be turned into an inference network.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// The network does not describe its forward pass ([`ap_models::Network::graph`]).
    #[error("the network does not describe its forward pass (Network::graph returns None), so it cannot be compacted or exported; implement `graph` for it")]
    NoGraph,
    /// A tensor the graph names is not in the model.
    #[error("the network's graph names `{0}`, which the model does not have")]
    MissingTensor(String),
    /// The graph has a shape compaction does not handle.
    #[error("unsupported network: {0}")]
    Unsupported(String),
}

/// One layer of an inference network. Every weight layer has a bias (zero where the
/// model's had none), so compaction can fold constants into it.
#[derive(Debug)]
pub enum Layer {
    /// Keeps the features (dimension 1) at `index`: the inputs the network reads.
    Gather {
        /// Kept positions along dimension 1, int64.
        index: Tensor,
    },
    /// `x · Wᵀ + b`.
    Linear {
        /// The model's layer name (tensors are `{name}.weight`, `{name}.bias`).
        name: String,
        /// `[out, in]`.
        weight: Tensor,
        /// `[out]`.
        bias: Tensor,
    },
    /// 2-D convolution.
    Conv {
        /// The model's layer name.
        name: String,
        /// `[out, in, kh, kw]`.
        weight: Tensor,
        /// `[out]`.
        bias: Tensor,
        /// Stride in both dimensions.
        stride: i64,
        /// Zero padding on every side.
        padding: i64,
    },
    /// max(x, 0).
    Relu,
    /// Max-pooling, kernel = stride.
    MaxPool {
        /// Kernel side and stride.
        kernel: i64,
    },
    /// Flattens every dimension after the batch.
    Flatten,
    /// Averages each channel over its positions (`[N, C, 1, 1]`).
    GlobalAvgPool,
    /// `body(x) + shortcut(x)`.
    Residual {
        /// The block's main path.
        body: Vec<Layer>,
        /// The shortcut (empty: identity).
        shortcut: Vec<Layer>,
    },
    /// Option A shortcut: every `stride`-th position, `pad` zero channels on each side.
    SubsamplePad {
        /// Spatial step.
        stride: i64,
        /// Channels added on each side.
        pad: i64,
    },
}

/// Parameters (weights and biases, batch norm folded) of `model` under `masks` after
/// compaction: the "compact size" of reports. `None` for a network that does not describe
/// its forward pass. `input` is the per-sample shape.
pub fn compact_params(
    model: &ap_models::Model,
    masks: &[(String, Tensor)],
    input: &[i64],
) -> Option<i64> {
    let masked = InferenceNet::from_model(model, masks, input).ok()?;
    Some(masked.compact().0.cost().params)
}

/// What a network costs per sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// Parameters of the weight layers (weights and biases), zeros included.
    pub params: i64,
    /// Non-zero weights plus biases.
    pub nonzero_params: i64,
    /// Multiply-adds a dense execution performs per sample.
    pub macs: i64,
    /// Multiply-adds of the non-zero weights per sample (what a sparse kernel could do).
    pub nonzero_macs: i64,
}

/// A network of plain dense layers for inference (evaluation mode).
#[derive(Debug)]
pub struct InferenceNet {
    /// Per-sample input shape (C, H, W).
    pub input: Vec<i64>,
    /// The layers in order.
    pub layers: Vec<Layer>,
}

impl InferenceNet {
    /// Logits for a batch `[N, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| run(&self.layers, x, &mut None))
    }

    /// Parameters and multiply-adds per sample (one forward pass of a zero sample).
    pub fn cost(&self) -> Cost {
        let mut dims = vec![1];
        dims.extend(&self.input);
        let device = self.device();
        let x = Tensor::zeros(dims.as_slice(), (Kind::Float, device));
        let mut cost = Cost::default();
        let _ = tch::no_grad(|| run(&self.layers, &x, &mut Some(&mut cost)));
        cost
    }

    /// The device the tensors are on.
    pub fn device(&self) -> tch::Device {
        fn first(layers: &[Layer]) -> Option<tch::Device> {
            layers.iter().find_map(|l| match l {
                Layer::Linear { weight, .. } | Layer::Conv { weight, .. } => Some(weight.device()),
                Layer::Residual { body, .. } => first(body),
                _ => None,
            })
        }
        first(&self.layers).unwrap_or(tch::Device::Cpu)
    }

    /// The network as the ops of its forward pass and the named tensors they read (the
    /// export format: batch norm is already folded, and every weight layer has a bias).
    pub fn ops(&self) -> (Vec<Op>, Vec<(String, Tensor)>) {
        let mut tensors = vec![];
        let ops = describe(&self.layers, &mut tensors);
        (ops, tensors)
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: tch::Device) -> InferenceNet {
        InferenceNet {
            input: self.input.clone(),
            layers: map_layers(&self.layers, &|t| t.to_device(device)),
        }
    }

    /// A copy whose linear layers hold sparse CSR weights (`to_sparse_csr`), for sparse
    /// matrix products; convolutions stay dense (libtorch has no sparse convolution).
    pub fn with_csr_linears(&self) -> SparseNet {
        SparseNet {
            layers: self
                .layers
                .iter()
                .map(|l| match l {
                    Layer::Linear { weight, bias, .. } => SparseLayer::CsrLinear {
                        weight: weight.to_sparse_csr(None),
                        bias: bias.unsqueeze(1),
                    },
                    other => SparseLayer::Dense(copy_layer(other, &|t| t.copy())),
                })
                .collect(),
        }
    }
}

/// An inference network whose linear layers multiply by sparse CSR matrices.
#[derive(Debug)]
pub struct SparseNet {
    layers: Vec<SparseLayer>,
}

#[derive(Debug)]
enum SparseLayer {
    /// `W · hᵀ + b` with W in CSR and the activations transposed.
    CsrLinear {
        weight: Tensor,
        bias: Tensor,
    },
    Dense(Layer),
}

impl SparseNet {
    /// Logits for a batch. Between CSR layers the activations stay transposed
    /// (`[features, batch]`, contiguous), the layout the sparse product reads fastest, and
    /// ReLUs apply in place of it; they turn back before any other layer and at the end.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let mut h = x.shallow_clone();
            let mut transposed = false;
            for l in &self.layers {
                h = match l {
                    SparseLayer::CsrLinear { weight, bias } => {
                        if !transposed {
                            h = h.tr().contiguous();
                            transposed = true;
                        }
                        bias.addmm(weight, &h)
                    }
                    SparseLayer::Dense(Layer::Relu) => h.relu(),
                    SparseLayer::Dense(layer) => {
                        if transposed {
                            h = h.tr().contiguous();
                            transposed = false;
                        }
                        run(std::slice::from_ref(layer), &h, &mut None)
                    }
                };
            }
            if transposed {
                h = h.tr().contiguous();
            }
            h
        })
    }
}

fn map_layers(layers: &[Layer], f: &dyn Fn(&Tensor) -> Tensor) -> Vec<Layer> {
    layers.iter().map(|l| copy_layer(l, f)).collect()
}

fn copy_layer(l: &Layer, f: &dyn Fn(&Tensor) -> Tensor) -> Layer {
    match l {
        Layer::Gather { index } => Layer::Gather { index: f(index) },
        Layer::Linear { name, weight, bias } => Layer::Linear {
            name: name.clone(),
            weight: f(weight),
            bias: f(bias),
        },
        Layer::Conv {
            name,
            weight,
            bias,
            stride,
            padding,
        } => Layer::Conv {
            name: name.clone(),
            weight: f(weight),
            bias: f(bias),
            stride: *stride,
            padding: *padding,
        },
        Layer::Relu => Layer::Relu,
        Layer::MaxPool { kernel } => Layer::MaxPool { kernel: *kernel },
        Layer::Flatten => Layer::Flatten,
        Layer::GlobalAvgPool => Layer::GlobalAvgPool,
        Layer::Residual { body, shortcut } => Layer::Residual {
            body: map_layers(body, f),
            shortcut: map_layers(shortcut, f),
        },
        Layer::SubsamplePad { stride, pad } => Layer::SubsamplePad {
            stride: *stride,
            pad: *pad,
        },
    }
}

fn count(t: &Tensor) -> i64 {
    t.ne(0.0).sum(Kind::Int64).int64_value(&[])
}

/// Runs `layers` on `x`; with `cost`, adds each weight layer's per-sample cost (for a
/// batch of one).
fn run(layers: &[Layer], x: &Tensor, cost: &mut Option<&mut Cost>) -> Tensor {
    let mut h = x.shallow_clone();
    for layer in layers {
        h = match layer {
            Layer::Gather { index } => h.index_select(1, index),
            Layer::Linear { weight, bias, .. } => {
                if let Some(c) = cost.as_deref_mut() {
                    let nz = count(weight);
                    c.params += weight.numel() as i64 + bias.numel() as i64;
                    c.nonzero_params += nz + bias.numel() as i64;
                    c.macs += weight.numel() as i64;
                    c.nonzero_macs += nz;
                }
                h.linear(weight, Some(bias))
            }
            Layer::Conv {
                weight,
                bias,
                stride,
                padding,
                ..
            } => {
                let y = h.conv2d(
                    weight,
                    Some(bias),
                    [*stride, *stride],
                    [*padding, *padding],
                    [1, 1],
                    1,
                );
                if let Some(c) = cost.as_deref_mut() {
                    let positions = y.size()[2] * y.size()[3];
                    let nz = count(weight);
                    c.params += weight.numel() as i64 + bias.numel() as i64;
                    c.nonzero_params += nz + bias.numel() as i64;
                    c.macs += weight.numel() as i64 * positions;
                    c.nonzero_macs += nz * positions;
                }
                y
            }
            Layer::Relu => h.relu(),
            Layer::MaxPool { kernel } => h.max_pool2d_default(*kernel),
            Layer::Flatten => h.flatten(1, -1),
            Layer::GlobalAvgPool => h.adaptive_avg_pool2d([1, 1]),
            Layer::Residual { body, shortcut } => run(body, &h, cost) + run(shortcut, &h, cost),
            Layer::SubsamplePad { stride, pad } => {
                let (hh, ww) = (h.size()[2], h.size()[3]);
                h.slice(2, 0, hh, *stride)
                    .slice(3, 0, ww, *stride)
                    .constant_pad_nd([0, 0, 0, 0, *pad, *pad])
            }
        };
    }
    h
}

fn describe(layers: &[Layer], tensors: &mut Vec<(String, Tensor)>) -> Vec<Op> {
    fn add(tensors: &mut Vec<(String, Tensor)>, name: &str, part: &str, t: &Tensor) {
        tensors.push((format!("{name}.{part}"), t.contiguous()));
    }
    let mut ops = vec![];
    for layer in layers {
        ops.push(match layer {
            Layer::Gather { index } => {
                add(tensors, "input", "index", index);
                Op::Gather {
                    name: "input".into(),
                }
            }
            Layer::Linear { name, weight, bias } => {
                add(tensors, name, "weight", weight);
                add(tensors, name, "bias", bias);
                Op::Linear { name: name.clone() }
            }
            Layer::Conv {
                name,
                weight,
                bias,
                stride,
                padding,
            } => {
                add(tensors, name, "weight", weight);
                add(tensors, name, "bias", bias);
                Op::Conv {
                    name: name.clone(),
                    stride: *stride,
                    padding: *padding,
                    bias: true,
                }
            }
            Layer::Relu => Op::Relu,
            Layer::MaxPool { kernel } => Op::MaxPool { kernel: *kernel },
            Layer::Flatten => Op::Flatten,
            Layer::GlobalAvgPool => Op::GlobalAvgPool,
            Layer::Residual { body, shortcut } => Op::Residual {
                body: describe(body, tensors),
                shortcut: describe(shortcut, tensors),
            },
            Layer::SubsamplePad { stride, pad } => Op::SubsamplePad {
                stride: *stride,
                pad: *pad,
            },
        });
    }
    ops
}

#[cfg(test)]
mod tests;
