//! Models with stable parameter names and explicit ReLU sites.
//!
//! tch has no forward hooks, so every model calls an [`ActivationProbe`] with the output
//! of each ReLU call site. The dead-neuron-rate counter in `ap-eval` is one such probe;
//! [`NoProbe`] costs nothing. Each model also lists its prunable parameters (the weights
//! of its Conv2d and Linear layers, never biases or norm parameters).

use tch::{nn, nn::VarStore, Device, Tensor};

mod cnn;
mod init;

pub use cnn::{ConvNet, ResNet, Vgg};
pub use init::{initialise, InitScheme};

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
/// The registered model names.
pub const MODELS: &[&str] = &[
    "lenet300-100",
    "conv2",
    "conv4",
    "conv6",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet20-b",
    "resnet32-b",
    "resnet56-b",
    "vgg11",
    "vgg16",
    "vgg19",
];

/// Builds a registered model on `device` for samples of shape `input` (C, H, W).
/// Initialisation uses libtorch's global generator: seed it first. ResNets take
/// option A shortcuts (parameter-free) unless the name ends in `-b` (1×1 projections).
pub fn build(
    name: &str,
    input: &[i64],
    num_classes: i64,
    device: Device,
) -> Result<Model, ModelError> {
    if input.len() != 3 {
        return Err(ModelError::Input {
            model: name.into(),
            expected: "(C, H, W)".into(),
            actual: input.to_vec(),
        });
    }
    let vs = VarStore::new(device);
    let root = vs.root();
    let pools = |k: u32| {
        if input[1] % (1 << k) != 0 || input[2] % (1 << k) != 0 {
            let expected = format!("H and W divisible by {}", 1 << k);
            Err(ModelError::Input {
                model: name.into(),
                expected,
                actual: input.to_vec(),
            })
        } else {
            Ok(())
        }
    };
    let net: Box<dyn Network> = match name {
        "lenet300-100" => Box::new(LeNet::new(
            &root,
            input.iter().product(),
            &[300, 100],
            num_classes,
        )),
        "conv2" | "conv4" | "conv6" => {
            let stages = (name.as_bytes()[4] - b'0') as u32 / 2;
            pools(stages)?;
            Box::new(cnn::ConvNet::new(
                &root,
                input,
                stages as usize,
                num_classes,
            ))
        }
        "resnet20" | "resnet32" | "resnet56" | "resnet20-b" | "resnet32-b" | "resnet56-b" => {
            pools(2)?;
            let depth: i64 = name[6..8].parse().expect("registered names");
            Box::new(cnn::ResNet::new(
                &root,
                input[0],
                depth,
                name.ends_with("-b"),
                num_classes,
            ))
        }
        "vgg11" | "vgg16" | "vgg19" => {
            pools(5)?;
            Box::new(cnn::Vgg::new(
                &root,
                input,
                name[3..].parse().expect("registered names"),
                num_classes,
            ))
        }
        _ => {
            return Err(ModelError::Unknown {
                name: name.to_string(),
                valid: MODELS.join(", "),
            })
        }
    };
    Ok(Model {
        vs,
        net,
        name: name.to_string(),
    })
}

/// The prunable parameter names of a registered model (for validating settings that
/// name layers), or an empty list for an unknown name.
pub fn prunable_names(name: &str) -> Vec<String> {
    build(name, &[3, 32, 32], 10, Device::Cpu)
        .map(|m| m.net.prunable())
        .unwrap_or_default()
}

/// The layers RigL keeps dense in its published configuration of the model family: for
/// an MLP (every prunable weight 2-D) the output layer (RigL's MNIST setting), for a CNN
/// the first conv layer (its ImageNet setting). Empty for an unknown model.
pub fn rigl_dense_layers(name: &str) -> Vec<String> {
    let Ok(m) = build(name, &[3, 32, 32], 10, Device::Cpu) else {
        return vec![];
    };
    let names = m.net.prunable();
    let vars = m.vs.variables();
    let mlp = names.iter().all(|n| vars[n].dim() == 2);
    let pick = if mlp { names.last() } else { names.first() };
    pick.cloned().into_iter().collect()
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
        let _g = ap_testkit::torch_lock();
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
        let _g = ap_testkit::torch_lock();
        let e = build("lenet5", &[1, 28, 28], 10, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lenet300-100"), "{e}");
    }
}

#[cfg(test)]
mod cnn_tests {
    use super::*;
    use tch::Kind;

    /// Counts how often each site is observed and checks the shape it reports.
    #[derive(Default)]
    struct Counter(Vec<(String, i64, usize)>);
    impl ActivationProbe for Counter {
        fn observe(&mut self, site: &str, a: &Tensor) {
            let units: i64 = a.size()[1..].iter().product();
            match self.0.iter_mut().find(|(s, _, _)| s == site) {
                Some(e) => e.2 += 1,
                None => self.0.push((site.to_string(), units, 1)),
            }
        }
    }

    fn check(name: &str, input: &[i64], classes: i64, params: i64, sites: usize) {
        let m = build(name, input, classes, Device::Cpu).unwrap();
        assert_eq!(m.num_parameters(), params, "{name}");
        let mut c = Counter::default();
        let mut shape = vec![2];
        shape.extend_from_slice(input);
        for train in [true, false] {
            let y = m.forward_probed(
                &Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)),
                train,
                &mut c,
            );
            assert_eq!(y.size(), vec![2, classes]);
        }
        // every ReLU application is a listed site, seen once per forward pass (twice in total)
        let listed = m.net.relu_sites();
        assert_eq!(listed.len(), sites, "{name}");
        assert_eq!(c.0.len(), listed.len(), "{name}");
        for ((seen, units, count), (site, u)) in c.0.iter().zip(&listed) {
            assert_eq!((seen, units, *count), (site, u, 2), "{name}");
        }
        ap_tensor::NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
    }

    /// Parameter counts, derived by hand:
    /// - Conv-2 on 3×32×32: conv 3·64·9+64 = 1,792; 64·64·9+64 = 36,928; fc 16,384·256+256 =
    ///   4,194,560; 256·256+256 = 65,792; 256·10+10 = 2,570 → 4,301,642 (the paper's 4.3M).
    /// - Conv-4: + conv 64·128·9+128 = 73,856, 128·128·9+128 = 147,584; fc 8,192·256+256 =
    ///   2,097,408 → 1,792+36,928+73,856+147,584+2,097,408+65,792+2,570 = 2,425,930 (2.4M).
    /// - Conv-6: + 128·256·9+256 = 295,168, 256·256·9+256 = 590,080; fc 4,096·256+256 =
    ///   1,048,832 → 2,262,602 (1.7M in the paper counts conv and fc weights; ours adds biases).
    /// - ResNet-20 (option A, no conv bias): stem 432 + BN 32; stage 1: 3·(2·2,304 + 64) =
    ///   14,016; stage 2: 4,608+9,216+128 + 2·(2·9,216+128) = 51,072; stage 3:
    ///   18,432+36,864+256 + 2·(2·36,864+256) = 203,520; fc 650 → 269,722 (0.27M).
    /// - ResNet-56: n = 9 per stage: 464 + 9·4,672 + (13,952 + 8·18,560) + (55,552 + 8·73,984)
    ///   + 650 = 853,018 (0.85M).
    /// - VGG-19 (BN, no conv bias): conv weights 20,018,880; BN 2·5,504 = 11,008; fc 5,130
    ///   → 20,035,018 (20.0M).
    #[test]
    fn parameter_counts_and_relu_sites() {
        let _g = ap_testkit::torch_lock();
        check("conv2", &[3, 32, 32], 10, 4_301_642, 4);
        check("conv4", &[3, 32, 32], 10, 2_425_930, 6);
        check("conv6", &[3, 32, 32], 10, 2_262_602, 8);
        check("resnet20", &[3, 32, 32], 10, 269_722, 19);
        check("resnet56", &[3, 32, 32], 10, 853_018, 55);
        check("vgg19", &[3, 32, 32], 10, 20_035_018, 16);
        check("conv2", &[1, 28, 28], 10, 3_317_450, 4); // 640 + 36,928 + 12,544·256+256 + 65,792 + 2,570
    }

    #[test]
    fn option_b_adds_projections_and_inputs_are_checked() {
        let _g = ap_testkit::torch_lock();
        let a = build("resnet20", &[3, 32, 32], 10, Device::Cpu).unwrap();
        let b = build("resnet20-b", &[3, 32, 32], 10, Device::Cpu).unwrap();
        // two projections: 16·32 + 2·32 and 32·64 + 2·64
        assert_eq!(
            b.num_parameters() - a.num_parameters(),
            512 + 64 + 2048 + 128
        );
        assert!(b.net.prunable().iter().any(|n| n.contains("shortcut")));
        assert!(build("vgg16", &[3, 28, 28], 10, Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("divisible by 32"));
    }

    #[test]
    fn init_schemes_set_statistics() {
        let _g = ap_testkit::torch_lock();
        tch::manual_seed(0);
        let m = build("resnet20", &[3, 32, 32], 10, Device::Cpu).unwrap();
        initialise(&m, InitScheme::ApRelease);
        let vars = m.vs.variables();
        let bn = &vars["bn.weight"];
        assert!(
            (bn.mean(Kind::Float).double_value(&[]) - 1.0).abs() < 0.02
                && bn.std(true).double_value(&[]) > 0.0
        );
        assert_eq!(
            vars["bn.running_var"].mean(Kind::Float).double_value(&[]),
            1.0,
            "running statistics untouched"
        );
        let w = &vars["layer3.0.conv2.weight"]; // 64·64·9: xavier std = sqrt(2 / (576 + 576))
        assert!((w.std(true).double_value(&[]) - (2.0f64 / 1152.0).sqrt()).abs() < 0.002);
        initialise(&m, InitScheme::KaimingNormal);
        let w = &m.vs.variables()["layer3.0.conv2.weight"];
        assert!((w.std(true).double_value(&[]) - (2.0f64 / 576.0).sqrt()).abs() < 0.003);
    }
}
