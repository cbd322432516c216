//! Models with stable parameter names and explicit ReLU sites.
//!
//! tch has no forward hooks, so every model calls an [`ActivationProbe`] with the output
//! of each ReLU call site. The dead-neuron-rate counter in `ap-eval` is one such probe;
//! [`NoProbe`] costs nothing. Each model also lists its prunable parameters (the weights
//! of its Conv2d and Linear layers, never biases or norm parameters).
//!
//! [`ModelKind`] is the registry: one variant per model [`build`] knows, with its name
//! and the properties derived from it. Each family lives in its own file: `mlp.rs`
//! (LeNet), `conv.rs` (Conv-2/4/6), `resnet.rs`, `vgg.rs`.

use tch::{nn::VarStore, Device, Tensor};

mod conv;
mod graph;
mod init;
mod kind;
mod lenet5;
mod mlp;
mod resnet;
mod vgg;

pub use conv::ConvNet;
pub use graph::Op;
pub use init::{initialise, InitScheme};
pub use kind::{ModelFamily, ModelKind, Shortcut};
pub use lenet5::LeNet5;
pub use mlp::LeNet;
pub use resnet::ResNet;
pub use vgg::Vgg;

/// Receives the output of every ReLU call site during a forward pass.
pub trait ActivationProbe {
    /// `site` names the call site; `activation` is the ReLU output, batch first.
    fn observe(&mut self, site: &str, activation: &Tensor);
}

/// A probe that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProbe;

impl ActivationProbe for NoProbe {
    fn observe(&mut self, _site: &str, _activation: &Tensor) {}
}

/// A network architecture: forward pass with a probe, and its structure.
pub trait Network: std::fmt::Debug + Send {
    /// Logits for a batch. `train` selects training behaviour (dropout, batch norm).
    fn forward(&self, xs: &Tensor, train: bool, probe: &mut dyn ActivationProbe) -> Tensor;
    /// Names of the prunable parameters, in a fixed order.
    fn prunable(&self) -> Vec<String>;
    /// ReLU call sites with the number of units each produces per sample, in call order.
    fn relu_sites(&self) -> Vec<(String, i64)>;
    /// The forward pass in evaluation mode as data ([`Op`]), for code that rebuilds the
    /// network elsewhere (compaction, export); `None` (the default) for a network that
    /// does not describe itself, which those then refuse.
    fn graph(&self) -> Option<Vec<Op>> {
        None
    }
}

/// A network together with the variable store that owns its parameters.
#[derive(Debug)]
pub struct Model {
    /// The parameters.
    pub vs: VarStore,
    /// The architecture.
    pub net: Box<dyn Network>,
    /// Which registered model it is ([`build`] sets it); `None` for a network assembled by
    /// hand around a `VarStore` (tests, small fixtures).
    pub kind: Option<ModelKind>,
    /// Convolutions run channels-last (NHWC strides): set by
    /// [`Model::to_channels_last`], which also changes the weights' layout; the forward
    /// passes give a 4-D input the same layout.
    pub channels_last: bool,
}

/// `t`'s values with channels-last strides (N, C, H, W dimensions kept, memory in N, H,
/// W, C order), as PyTorch's `to(memory_format=torch.channels_last)` sets them, also
/// for one channel, where a permuted `contiguous()` would keep the NCHW strides (and
/// oneDNN would then not pick its NHWC kernels): tch 0.24 has no memory-format argument.
pub fn channels_last(t: &Tensor) -> Tensor {
    let size = t.size();
    let strides = channels_last_strides(&size);
    let out = Tensor::empty_strided(size, strides, (t.kind(), t.device()));
    tch::no_grad(|| out.shallow_clone().copy_(t));
    out
}

/// Whether a 4-D tensor has exactly the strides [`channels_last`] gives.
pub fn is_channels_last(t: &Tensor) -> bool {
    t.dim() == 4 && t.stride() == channels_last_strides(&t.size())
}

fn channels_last_strides(size: &[i64]) -> Vec<i64> {
    let (c, h, w) = (size[1].max(1), size[2].max(1), size[3].max(1));
    vec![h * w * c, 1, w * c, c]
}

impl Model {
    /// Logits without recording activations.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_probed(xs, train, &mut NoProbe)
    }

    /// Logits, reporting every ReLU output to `probe`.
    pub fn forward_probed(
        &self,
        xs: &Tensor,
        train: bool,
        probe: &mut dyn ActivationProbe,
    ) -> Tensor {
        if self.channels_last && xs.dim() == 4 && !is_channels_last(xs) {
            return self.net.forward(&channels_last(xs), train, probe);
        }
        self.net.forward(xs, train, probe)
    }

    /// Moves every 4-D parameter (the convolution weights) to channels-last strides, in
    /// place (values unchanged; every handle sees the new layout), and makes the forward
    /// passes give 4-D inputs the same layout. oneDNN and cuDNN then run the
    /// convolutions in NHWC, faster for these small networks on the CPUs measured
    /// (docs/performance.md), with different floating-point rounding: a setting
    /// (`train.channels_last`), not a default.
    pub fn to_channels_last(&mut self) {
        for (_, t) in self.vs.variables() {
            if t.dim() == 4 && !is_channels_last(&t) {
                let mut handle = t.shallow_clone();
                tch::no_grad(|| handle.set_data(&channels_last(&t)));
            }
        }
        self.channels_last = true;
    }

    /// Number of parameters (all, prunable or not).
    pub fn num_parameters(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }
}

/// Why a model could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Unknown architecture name.
    #[error("unknown model `{name}`; valid models: {valid}")]
    Unknown {
        /// The requested name.
        name: String,
        /// The valid names.
        valid: String,
    },
    /// The input shape does not suit the model.
    #[error("model `{model}` expects inputs {expected}, the dataset gives {actual:?}")]
    Input {
        /// The model.
        model: ModelKind,
        /// What the model accepts.
        expected: String,
        /// The dataset's per-sample shape.
        actual: Vec<i64>,
    },
}

/// Builds `kind` on `device` for samples of shape `input` (C, H, W), after checking that
/// the shape suits it ([`ModelKind::check_input`]). Initialisation uses libtorch's global
/// generator: seed it first. ResNets take option A shortcuts (parameter-free) or option B
/// (1×1 projections) as [`ModelKind::shortcut`] says.
pub fn build(
    kind: ModelKind,
    input: &[i64],
    num_classes: i64,
    device: Device,
) -> Result<Model, ModelError> {
    kind.check_input(input)?;
    let vs = VarStore::new(device);
    let root = vs.root();
    let depth = kind.depth();
    let net: Box<dyn Network> = match kind.family() {
        ModelFamily::Mlp => Box::new(LeNet::new(
            &root,
            input.iter().product(),
            &[300, 100],
            num_classes,
        )),
        ModelFamily::LeNet5 => Box::new(LeNet5::new(&root, input, num_classes)),
        ModelFamily::Conv => Box::new(ConvNet::new(
            &root,
            input,
            kind.halvings() as usize,
            num_classes,
        )),
        ModelFamily::ResNet => Box::new(ResNet::new(
            &root,
            input[0],
            depth.into(),
            kind.shortcut()
                .expect("every ResNet kind has a shortcut option"),
            num_classes,
        )),
        ModelFamily::Vgg => Box::new(Vgg::new(&root, input, depth, num_classes)),
    };
    Ok(Model {
        vs,
        net,
        kind: Some(kind),
        channels_last: false,
    })
}

/// The prunable parameters' names and shapes of `kind` for `input`-shaped samples and
/// `classes` outputs (to check settings against the network before a run). Builds the
/// model on the CPU the first time per (kind, input, classes) in a process, so that first
/// call draws from libtorch's generator; later calls are answered from a cache.
pub fn prunable_shapes(kind: ModelKind, input: &[i64], classes: i64) -> Vec<(String, Vec<i64>)> {
    type Shapes = Vec<(String, Vec<i64>)>;
    type Key = (ModelKind, Vec<i64>, i64);
    static CACHE: std::sync::Mutex<Vec<(Key, Shapes)>> = std::sync::Mutex::new(Vec::new());
    let key = (kind, input.to_vec(), classes);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, shapes)) = cache.iter().find(|(k, _)| *k == key) {
        return shapes.clone();
    }
    let model = build(kind, input, classes, Device::Cpu).expect("a checked input builds");
    let vars = model.vs.variables();
    let shapes: Shapes = model
        .net
        .prunable()
        .into_iter()
        .map(|n| {
            let shape = vars[&n].size();
            (n, shape)
        })
        .collect();
    cache.push((key, shapes.clone()));
    shapes
}

#[cfg(test)]
mod tests;
