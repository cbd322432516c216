//! Models with stable parameter names and explicit ReLU sites.
//!
//! tch has no forward hooks, so every model calls an [`ActivationProbe`] with the output
//! of each ReLU call site. The dead-neuron-rate counter in `ap-eval` is one such probe;
//! [`NoProbe`] costs nothing. Each model also lists its prunable parameters (the weights
//! of its Conv2d and Linear layers, never biases or norm parameters).

use tch::{nn, nn::VarStore, Device, Tensor};

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
}

/// A network together with the variable store that owns its parameters.
#[derive(Debug)]
pub struct Model {
    /// The parameters.
    pub vs: VarStore,
    /// The architecture.
    pub net: Box<dyn Network>,
    /// The registered name of the architecture.
    pub name: String,
}

impl Model {
    /// Logits without recording activations.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        self.net.forward(xs, train, &mut NoProbe)
    }

    /// Logits, reporting every ReLU output to `probe`.
    pub fn forward_probed(
        &self,
        xs: &Tensor,
        train: bool,
        probe: &mut dyn ActivationProbe,
    ) -> Tensor {
        self.net.forward(xs, train, probe)
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
        model: String,
        /// What the model accepts.
        expected: String,
        /// The dataset's per-sample shape.
        actual: Vec<i64>,
    },
}

/// The registered model names.
pub const MODELS: &[&str] = &["lenet300-100"];

/// Builds a registered model on `device` for samples of shape `input` (C, H, W).
/// Initialisation uses libtorch's global generator: seed it first.
pub fn build(
    name: &str,
    input: &[i64],
    num_classes: i64,
    device: Device,
) -> Result<Model, ModelError> {
    let vs = VarStore::new(device);
    let net: Box<dyn Network> = match name {
        "lenet300-100" => Box::new(LeNet::new(
            &vs.root(),
            input.iter().product(),
            &[300, 100],
            num_classes,
        )),
        _ => {
            return Err(ModelError::Unknown {
                name: name.to_string(),
                valid: MODELS.join(", "),
            })
        }
    };
    if input.is_empty() {
        return Err(ModelError::Input {
            model: name.into(),
            expected: "(C, H, W)".into(),
            actual: input.to_vec(),
        });
    }
    Ok(Model {
        vs,
        net,
        name: name.to_string(),
    })
}

/// The prunable parameter names of a registered model (for validating settings that
/// name layers), or an empty list for an unknown name.
pub fn prunable_names(name: &str) -> Vec<String> {
    build(name, &[1, 28, 28], 10, Device::Cpu)
        .map(|m| m.net.prunable())
        .unwrap_or_default()
}

/// A fully connected ReLU network (LeNet-300-100 with hidden sizes 300, 100), as in the
/// lottery-ticket paper: `fc1 → relu → fc2 → relu → fc3`.
///
/// # Shapes
/// input `[N, C, H, W]` (flattened) or `[N, D]` → logits `[N, num_classes]`.
#[derive(Debug)]
pub struct LeNet {
    layers: Vec<(String, nn::Linear)>,
    hidden: Vec<i64>,
}

impl LeNet {
    /// Layers are named `fc1`, `fc2`, … on `p`.
    pub fn new(p: &nn::Path, input_dim: i64, hidden: &[i64], num_classes: i64) -> LeNet {
        let mut dims = vec![input_dim];
        dims.extend_from_slice(hidden);
        dims.push(num_classes);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let name = format!("fc{}", i + 1);
                let l = nn::linear(p / name.as_str(), w[0], w[1], Default::default());
                (name, l)
            })
            .collect();
        LeNet {
            layers,
            hidden: hidden.to_vec(),
        }
    }
}

impl Network for LeNet {
    fn forward(&self, xs: &Tensor, _train: bool, probe: &mut dyn ActivationProbe) -> Tensor {
        let mut h = xs.flatten(1, -1);
        let last = self.layers.len() - 1;
        for (i, (name, layer)) in self.layers.iter().enumerate() {
            h = h.apply(layer);
            if i < last {
                h = h.relu();
                probe.observe(&format!("{name}.relu"), &h);
            }
        }
        h
    }

    fn prunable(&self) -> Vec<String> {
        self.layers
            .iter()
            .map(|(n, _)| format!("{n}.weight"))
            .collect()
    }

    fn relu_sites(&self) -> Vec<(String, i64)> {
        self.layers
            .iter()
            .zip(&self.hidden)
            .map(|((n, _), &h)| (format!("{n}.relu"), h))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    struct Recorder(Vec<(String, Vec<i64>)>);
    impl ActivationProbe for Recorder {
        fn observe(&mut self, site: &str, a: &Tensor) {
            self.0.push((site.to_string(), a.size()));
        }
    }

    #[test]
    fn lenet_shapes_sites_and_parameters() {
        let m = build("lenet300-100", &[1, 28, 28], 10, Device::Cpu).unwrap();
        // 784*300+300 + 300*100+100 + 100*10+10 (the published 266,610)
        assert_eq!(m.num_parameters(), 266_610);
        let mut rec = Recorder(vec![]);
        let y = m.forward_probed(
            &Tensor::zeros([5, 1, 28, 28], (Kind::Float, Device::Cpu)),
            false,
            &mut rec,
        );
        assert_eq!(y.size(), vec![5, 10]);
        assert_eq!(
            rec.0,
            vec![
                ("fc1.relu".to_string(), vec![5, 300]),
                ("fc2.relu".to_string(), vec![5, 100])
            ]
        );
        assert_eq!(
            m.net.relu_sites(),
            vec![("fc1.relu".to_string(), 300), ("fc2.relu".to_string(), 100)]
        );
        assert_eq!(
            m.net.prunable(),
            vec!["fc1.weight", "fc2.weight", "fc3.weight"]
        );
        ap_tensor::NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
    }

    #[test]
    fn unknown_model_lists_valid_names() {
        let e = build("lenet5", &[1, 28, 28], 10, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lenet300-100"), "{e}");
    }
}
