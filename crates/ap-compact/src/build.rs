//! From a model and its masks to the masked [`InferenceNet`]: pruned weights zero, batch
//! norm (evaluation mode) folded into the convolution before it.

use std::collections::HashMap;

use ap_models::{Model, Op};
use tch::{Kind, Tensor};

use crate::{CompactError, InferenceNet, Layer};

impl InferenceNet {
    /// The masked network of `model` in evaluation mode: each weight named in `masks`
    /// (prunable parameter name → 0/1 mask of its shape) multiplied by its mask, and each
    /// batch norm folded into the convolution before it (`W·s`, `(b − mean)·s + β` with
    /// `s = γ/√(var + ε)`), which changes results only by rounding. `input` is the
    /// per-sample shape (C, H, W).
    pub fn from_model(
        model: &Model,
        masks: &[(String, Tensor)],
        input: &[i64],
    ) -> Result<InferenceNet, CompactError> {
        let graph = model.net.graph().ok_or(CompactError::NoGraph)?;
        let vars = model.vs.variables();
        let masks: HashMap<&str, &Tensor> = masks.iter().map(|(n, m)| (n.as_str(), m)).collect();
        let ctx = Ctx {
            vars: &vars,
            masks: &masks,
        };
        let layers = tch::no_grad(|| ctx.layers(&graph))?;
        Ok(InferenceNet {
            input: input.to_vec(),
            layers,
        })
    }
}

struct Ctx<'a> {
    vars: &'a HashMap<String, Tensor>,
    masks: &'a HashMap<&'a str, &'a Tensor>,
}

impl Ctx<'_> {
    fn get(&self, name: &str) -> Result<Tensor, CompactError> {
        self.vars
            .get(name)
            .map(|t| t.detach().copy())
            .ok_or_else(|| CompactError::MissingTensor(name.to_string()))
    }

    fn weight(&self, layer: &str) -> Result<Tensor, CompactError> {
        let name = format!("{layer}.weight");
        let w = self.get(&name)?;
        Ok(match self.masks.get(name.as_str()) {
            Some(m) => {
                let device = w.device();
                w * m.to_kind(Kind::Float).to_device(device)
            }
            None => w,
        })
    }

    fn bias(
        &self,
        layer: &str,
        has_bias: bool,
        out: i64,
        like: &Tensor,
    ) -> Result<Tensor, CompactError> {
        if has_bias {
            self.get(&format!("{layer}.bias"))
        } else {
            Ok(Tensor::zeros([out], (Kind::Float, like.device())))
        }
    }

    fn layers(&self, ops: &[Op]) -> Result<Vec<Layer>, CompactError> {
        let mut layers: Vec<Layer> = vec![];
        for op in ops {
            let layer = match op {
                Op::Linear { name } => {
                    let weight = self.weight(name)?;
                    let bias = self.bias(name, true, 0, &weight)?;
                    Layer::Linear {
                        name: name.clone(),
                        weight,
                        bias,
                    }
                }
                Op::Conv {
                    name,
                    stride,
                    padding,
                    bias,
                } => {
                    let weight = self.weight(name)?;
                    let bias = self.bias(name, *bias, weight.size()[0], &weight)?;
                    Layer::Conv {
                        name: name.clone(),
                        weight,
                        bias,
                        stride: *stride,
                        padding: *padding,
                    }
                }
                Op::BatchNorm { name, eps } => {
                    let Some(Layer::Conv { weight, bias, .. }) = layers.last_mut() else {
                        return Err(CompactError::Unsupported(format!(
                            "batch norm `{name}` does not follow a convolution, so it cannot be folded"
                        )));
                    };
                    let mean = self.get(&format!("{name}.running_mean"))?;
                    let var = self.get(&format!("{name}.running_var"))?;
                    let gamma = self.get(&format!("{name}.weight"))?;
                    let beta = self.get(&format!("{name}.bias"))?;
                    let scale = gamma / (var + *eps).sqrt();
                    *weight = &*weight * scale.reshape([-1, 1, 1, 1]);
                    *bias = (&*bias - mean) * &scale + beta;
                    continue;
                }
                Op::Gather { name } => Layer::Gather {
                    index: self.get(&format!("{name}.index"))?,
                },
                Op::Relu => Layer::Relu,
                Op::MaxPool { kernel } => Layer::MaxPool { kernel: *kernel },
                Op::Flatten => Layer::Flatten,
                Op::GlobalAvgPool => Layer::GlobalAvgPool,
                Op::Residual { body, shortcut } => Layer::Residual {
                    body: self.layers(body)?,
                    shortcut: self.layers(shortcut)?,
                },
                Op::SubsamplePad { stride, pad } => Layer::SubsamplePad {
                    stride: *stride,
                    pad: *pad,
                },
            };
            layers.push(layer);
        }
        Ok(layers)
    }
}
