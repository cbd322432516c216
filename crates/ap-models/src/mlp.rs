//! Fully connected ReLU networks: LeNet-300-100 of the lottery-ticket paper.

use tch::{nn, Tensor};

use crate::{ActivationProbe, Network, Op};

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

    fn graph(&self) -> Option<Vec<Op>> {
        let mut ops = vec![Op::Flatten];
        for (i, (name, _)) in self.layers.iter().enumerate() {
            ops.push(Op::linear(name));
            if i + 1 < self.layers.len() {
                ops.push(Op::Relu);
            }
        }
        Some(ops)
    }

    fn relu_sites(&self) -> Vec<(String, i64)> {
        self.layers
            .iter()
            .zip(&self.hidden)
            .map(|((n, _), &h)| (format!("{n}.relu"), h))
            .collect()
    }
}
