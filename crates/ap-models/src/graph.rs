//! A model's forward pass as data: the operations in order, naming the tensors each reads.
//! Inference code that rebuilds a network outside its Rust type — compaction, export to
//! plain PyTorch (the `ops` of an export's JSON are these, docs/export.md) — walks this
//! instead of knowing every family. `ap-compact`'s tests check that it computes what
//! [`crate::Network::forward`] does.

use serde::{Deserialize, Serialize};

/// One operation of a forward pass in evaluation mode, batch first. Serialised with its
/// kind under `op` in snake case: `{"op": "conv", "name": "conv1", "stride": 1, ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Keeps the features (dimension 1) at the int64 positions `{name}.index`: the inputs
    /// a compacted network reads (models themselves have none).
    Gather {
        /// Tensor prefix.
        name: String,
    },
    /// `x · Wᵀ + b` with `{name}.weight` `[out, in]` and `{name}.bias`.
    Linear {
        /// Parameter prefix.
        name: String,
    },
    /// 2-D convolution with `{name}.weight` `[out, in, kh, kw]` and, when `bias`, `{name}.bias`.
    Conv {
        /// Parameter prefix.
        name: String,
        /// Stride in both dimensions.
        stride: i64,
        /// Zero padding on every side.
        padding: i64,
        /// Whether the layer has a bias.
        bias: bool,
    },
    /// Batch norm with running statistics (`{name}.running_mean`, `.running_var`, `.weight`,
    /// `.bias`): `(x − mean) / √(var + eps) · weight + bias` per channel.
    BatchNorm {
        /// Parameter prefix.
        name: String,
        /// The ε added to the variance.
        eps: f64,
    },
    /// max(x, 0).
    Relu,
    /// Max-pooling with kernel and stride `kernel`, no padding.
    MaxPool {
        /// Kernel side and stride.
        kernel: i64,
    },
    /// Flattens every dimension after the batch.
    Flatten,
    /// Averages each channel over its positions, keeping `[N, C, 1, 1]`.
    GlobalAvgPool,
    /// `body(x) + shortcut(x)` (an empty shortcut is the identity).
    Residual {
        /// The block's main path.
        body: Vec<Op>,
        /// The shortcut path.
        shortcut: Vec<Op>,
    },
    /// Option A shortcut: keep every `stride`-th position, zero-pad `pad` channels on each side.
    SubsamplePad {
        /// Spatial subsampling step.
        stride: i64,
        /// Channels added on each side.
        pad: i64,
    },
}

impl Op {
    /// A linear layer's op.
    pub fn linear(name: impl Into<String>) -> Op {
        Op::Linear { name: name.into() }
    }
}
