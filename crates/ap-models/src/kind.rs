//! The registry of architectures: [`ModelKind`] names every model this crate builds, and
//! everything callers derive from a model's name (family, input expectations, RigL's dense
//! layers) is a property of it, so no caller slices names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The architecture families, one file of this crate each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelFamily {
    /// Fully connected ReLU networks (LeNet-300-100).
    Mlp,
    /// LeNet-5 in its Caffe variant.
    LeNet5,
    /// Conv-2/4/6 of the lottery-ticket paper.
    Conv,
    /// ResNet-20/32/56 for CIFAR.
    ResNet,
    /// VGG-11/16/19 with batch norm.
    Vgg,
}

impl ModelFamily {
    /// Whether the family's networks are convolutional.
    pub const fn is_cnn(self) -> bool {
        !matches!(self, ModelFamily::Mlp)
    }
}

/// How a ResNet's shortcuts bridge a change of shape (He et al. 2016).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shortcut {
    /// Option A: subsample and zero-pad the channels (no parameters).
    A,
    /// Option B: a 1×1 convolution with batch norm (a prunable weight).
    B,
}

/// The models this crate builds. Serialises as its [`name`](ModelKind::name) (a spec's
/// `model = "resnet20"`), so a spec's canonical JSON is the same as with a plain string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum ModelKind {
    /// LeNet-300-100: fully connected, hidden sizes 300 and 100.
    LeNet300_100,
    /// LeNet-5 (Caffe variant): conv 20@5×5, conv 50@5×5, fc 500 (`lenet5`).
    LeNet5,
    /// Conv-2: one stage of two 3×3 convs, then 256-256-classes.
    Conv2,
    /// Conv-4: two stages.
    Conv4,
    /// Conv-6: three stages.
    Conv6,
    /// ResNet-20, option A shortcuts.
    ResNet20,
    /// ResNet-32, option A shortcuts.
    ResNet32,
    /// ResNet-56, option A shortcuts.
    ResNet56,
    /// ResNet-20, option B shortcuts (`resnet20-b`).
    ResNet20B,
    /// ResNet-32, option B shortcuts.
    ResNet32B,
    /// ResNet-56, option B shortcuts.
    ResNet56B,
    /// VGG-11 with batch norm.
    Vgg11,
    /// VGG-16 with batch norm.
    Vgg16,
    /// VGG-19 with batch norm.
    Vgg19,
}

impl ModelKind {
    /// All kinds, in a stable order (the order error messages list them in).
    pub const ALL: [ModelKind; 14] = [
        ModelKind::LeNet300_100,
        ModelKind::LeNet5,
        ModelKind::Conv2,
        ModelKind::Conv4,
        ModelKind::Conv6,
        ModelKind::ResNet20,
        ModelKind::ResNet32,
        ModelKind::ResNet56,
        ModelKind::ResNet20B,
        ModelKind::ResNet32B,
        ModelKind::ResNet56B,
        ModelKind::Vgg11,
        ModelKind::Vgg16,
        ModelKind::Vgg19,
    ];

    /// The registered name, as written in specs, run directories and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            ModelKind::LeNet300_100 => "lenet300-100",
            ModelKind::LeNet5 => "lenet5",
            ModelKind::Conv2 => "conv2",
            ModelKind::Conv4 => "conv4",
            ModelKind::Conv6 => "conv6",
            ModelKind::ResNet20 => "resnet20",
            ModelKind::ResNet32 => "resnet32",
            ModelKind::ResNet56 => "resnet56",
            ModelKind::ResNet20B => "resnet20-b",
            ModelKind::ResNet32B => "resnet32-b",
            ModelKind::ResNet56B => "resnet56-b",
            ModelKind::Vgg11 => "vgg11",
            ModelKind::Vgg16 => "vgg16",
            ModelKind::Vgg19 => "vgg19",
        }
    }

    /// Parses a registered name (exactly as [`ModelKind::name`] spells it: names are part
    /// of run keys, so no other spelling is accepted). The error lists every valid name.
    pub fn from_name(name: &str) -> Result<ModelKind, ModelError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| ModelError::Unknown {
                name: name.to_owned(),
                valid: Self::ALL.map(Self::name).join(", "),
            })
    }

    /// The family, which decides the file and type that implement the model.
    pub const fn family(self) -> ModelFamily {
        match self {
            ModelKind::LeNet300_100 => ModelFamily::Mlp,
            ModelKind::LeNet5 => ModelFamily::LeNet5,
            ModelKind::Conv2 | ModelKind::Conv4 | ModelKind::Conv6 => ModelFamily::Conv,
            ModelKind::ResNet20
            | ModelKind::ResNet32
            | ModelKind::ResNet56
            | ModelKind::ResNet20B
            | ModelKind::ResNet32B
            | ModelKind::ResNet56B => ModelFamily::ResNet,
            ModelKind::Vgg11 | ModelKind::Vgg16 | ModelKind::Vgg19 => ModelFamily::Vgg,
        }
    }

    /// Whether every prunable weight is a linear layer's (no convolutions).
    pub const fn is_mlp(self) -> bool {
        matches!(self.family(), ModelFamily::Mlp)
    }

    /// The number the family names the model by: Conv-n's conv layers, ResNet-n's and
    /// VGG-n's weight layers; LeNet-300-100's three linear layers.
    pub const fn depth(self) -> u32 {
        match self {
            ModelKind::LeNet300_100 => 3,
            ModelKind::LeNet5 => 5,
            ModelKind::Conv2 => 2,
            ModelKind::Conv4 => 4,
            ModelKind::Conv6 => 6,
            ModelKind::ResNet20 | ModelKind::ResNet20B => 20,
            ModelKind::ResNet32 | ModelKind::ResNet32B => 32,
            ModelKind::ResNet56 | ModelKind::ResNet56B => 56,
            ModelKind::Vgg11 => 11,
            ModelKind::Vgg16 => 16,
            ModelKind::Vgg19 => 19,
        }
    }

    /// A ResNet's shortcut option; `None` for the other families.
    pub const fn shortcut(self) -> Option<Shortcut> {
        match self {
            ModelKind::ResNet20 | ModelKind::ResNet32 | ModelKind::ResNet56 => Some(Shortcut::A),
            ModelKind::ResNet20B | ModelKind::ResNet32B | ModelKind::ResNet56B => Some(Shortcut::B),
            _ => None,
        }
    }

    /// How often the network halves the input's height and width (max-pools or strided
    /// convs): both must be divisible by `2^halvings`.
    pub const fn halvings(self) -> u32 {
        match self.family() {
            ModelFamily::Mlp => 0,
            ModelFamily::LeNet5 => 2,
            ModelFamily::Conv => self.depth() / 2,
            ModelFamily::ResNet => 2,
            ModelFamily::Vgg => 5,
        }
    }

    /// Checks that samples of shape `input` (C, H, W) suit the model: three dimensions,
    /// H and W divisible by `2^halvings`. [`crate::build`] checks this first.
    pub fn check_input(self, input: &[i64]) -> Result<(), ModelError> {
        let error = |expected: String| ModelError::Input {
            model: self,
            expected,
            actual: input.to_vec(),
        };
        let [_, h, w] = input else {
            return Err(error("(C, H, W)".into()));
        };
        let divisor = 1i64 << self.halvings();
        if h % divisor != 0 || w % divisor != 0 {
            return Err(error(format!("H and W divisible by {divisor}")));
        }
        // Two unpadded 5×5 convs and two pools leave (H/2 − 2)/2 rows: H ≥ 16 keeps one.
        if self.family() == ModelFamily::LeNet5 && (*h < 16 || *w < 16) {
            return Err(error("H and W at least 16".into()));
        }
        Ok(())
    }

    /// The layers RigL keeps dense in its published configuration of the model family: for
    /// an MLP the output layer (RigL's MNIST setting), for a CNN the first conv layer (its
    /// ImageNet setting).
    pub const fn rigl_dense_layers(self) -> &'static [&'static str] {
        match self.family() {
            ModelFamily::Mlp => &["fc3.weight"],
            ModelFamily::Conv | ModelFamily::LeNet5 | ModelFamily::Vgg => &["conv1.weight"],
            ModelFamily::ResNet => &["conv.weight"],
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        Self::from_name(s)
    }
}

impl TryFrom<String> for ModelKind {
    type Error = ModelError;

    fn try_from(s: String) -> Result<Self, ModelError> {
        Self::from_name(&s)
    }
}

impl From<ModelKind> for &'static str {
    fn from(kind: ModelKind) -> &'static str {
        kind.name()
    }
}
