//! A model's forward pass as data: the operations in order, naming the parameters each
//! reads. Inference code that rebuilds a network outside its Rust type — compaction,
//! export to plain PyTorch — walks this instead of knowing every family. The models'
//! tests check that it computes what [`crate::Network::forward`] does.

/// One operation of a forward pass in evaluation mode, batch first.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
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
