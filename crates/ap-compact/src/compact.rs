//! Compaction: the rules of the crate docs, run to a fixed point.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{copy_layer, InferenceNet, Layer};

/// How one weight layer's shape changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerChange {
    /// The layer's name.
    pub name: String,
    /// Output units (features or channels) before and after.
    pub outputs: [i64; 2],
    /// Input units before and after.
    pub inputs: [i64; 2],
}

/// What compaction removed, per weight layer in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// One entry per weight layer, in forward order.
    pub layers: Vec<LayerChange>,
}

impl InferenceNet {
    /// The exactly equivalent smaller network (outputs equal up to float rounding; the
    /// crate docs list the rules) and what it removed. At least one unit is kept at every
    /// boundary, so the network stays runnable even when pruning disconnected it.
    pub fn compact(&self) -> (InferenceNet, Compaction) {
        let mut layers: Vec<Layer> = self
            .layers
            .iter()
            .map(|l| copy_layer(l, &|t| t.copy()))
            .collect();
        tch::no_grad(|| compact_list(&mut layers, true));
        let changes = compare(&self.layers, &layers);
        (
            InferenceNet {
                input: self.input.clone(),
                layers,
            },
            changes,
        )
    }

    /// Also removes the units that no sample of `images` activates (ReLU output 0 for
    /// every sample and position): their output is 0 on those samples, so their outgoing
    /// weights are cut and compaction removes them. Exact on `images` (the training set,
    /// say), approximate on other inputs: an opt-in, not part of [`InferenceNet::compact`].
    /// Sequential networks only (an error names a residual block). Returns the compacted
    /// network, what it removed, and how many units were inactive.
    pub fn compact_without_inactive(
        &self,
        images: &Tensor,
        batch: i64,
    ) -> Result<(InferenceNet, Compaction, i64), crate::CompactError> {
        if self
            .layers
            .iter()
            .any(|l| matches!(l, Layer::Residual { .. }))
        {
            return Err(crate::CompactError::Unsupported(
                "removing inactive units handles sequential networks only, not residual blocks"
                    .into(),
            ));
        }
        // Per ReLU that follows a weight layer: whether each channel was ever positive.
        let mut active: Vec<Option<Tensor>> = (0..self.layers.len()).map(|_| None).collect();
        let n = images.size()[0];
        tch::no_grad(|| {
            for start in (0..n).step_by(batch.max(1) as usize) {
                let mut h = images.narrow(0, start, batch.min(n - start));
                for (i, layer) in self.layers.iter().enumerate() {
                    h = crate::run(std::slice::from_ref(layer), &h, &mut None);
                    if matches!(layer, Layer::Relu) && i > 0 && is_weight(&self.layers[i - 1]) {
                        let dims: Vec<i64> = (0..h.dim() as i64).filter(|&d| d != 1).collect();
                        let on = h
                            .gt(0.0)
                            .sum_dim_intlist(dims.as_slice(), false, Kind::Int64)
                            .gt(0);
                        active[i] = Some(match active[i].take() {
                            Some(a) => a.logical_or(&on),
                            None => on,
                        });
                    }
                }
            }
        });
        let mut layers: Vec<Layer> = self
            .layers
            .iter()
            .map(|l| copy_layer(l, &|t| t.copy()))
            .collect();
        let mut inactive = 0;
        for (i, on) in active.iter().enumerate() {
            let Some(on) = on else { continue };
            let Some(next) = (i + 1..layers.len()).find(|&j| is_weight(&layers[j])) else {
                continue;
            };
            let off = on.logical_not();
            inactive += off.sum(Kind::Int64).int64_value(&[]);
            let (nw, _) = weight_and_bias(&mut layers[next]);
            let units = on.size()[0];
            let keep = on.to_kind(nw.kind()).reshape([1, units, 1]);
            *nw = (grouped(nw, units) * keep).reshape(nw.size().as_slice());
        }
        let cut = InferenceNet {
            input: self.input.clone(),
            layers,
        };
        let (compacted, _) = cut.compact();
        let changes = compare(&self.layers, &compacted.layers);
        Ok((compacted, changes, inactive))
    }
}

impl Compaction {
    /// Each weight layer's units in `before` and in `after` (a compaction of it, or the
    /// network itself for "nothing removed").
    pub fn between(before: &InferenceNet, after: &InferenceNet) -> Compaction {
        compare(&before.layers, &after.layers)
    }
}

/// The shape changes of every weight layer from `before` to `after`.
fn compare(before: &[Layer], after: &[Layer]) -> Compaction {
    Compaction {
        layers: weight_shapes(before)
            .into_iter()
            .zip(weight_shapes(after))
            .map(|((name, b), (_, a))| LayerChange {
                name,
                outputs: [b[0], a[0]],
                inputs: [b[1], a[1]],
            })
            .collect(),
    }
}

/// (name, weight shape) of every weight layer in forward order.
fn weight_shapes(layers: &[Layer]) -> Vec<(String, Vec<i64>)> {
    let mut out = vec![];
    for l in layers {
        match l {
            Layer::Linear { name, weight, .. } | Layer::Conv { name, weight, .. } => {
                out.push((name.clone(), weight.size()))
            }
            Layer::Residual { body, shortcut } => {
                out.extend(weight_shapes(body));
                out.extend(weight_shapes(shortcut));
            }
            _ => {}
        }
    }
    out
}

/// Compacts `layers`: residual bodies on their own (their ends fixed), then every run of
/// layers between residual blocks; the network's inputs only where `input_free`.
fn compact_list(layers: &mut Vec<Layer>, input_free: bool) {
    for l in layers.iter_mut() {
        if let Layer::Residual { body, .. } = l {
            compact_list(body, false);
        }
    }
    let mut start = 0;
    let mut gather_at = None;
    while start < layers.len() {
        let end = (start..layers.len())
            .find(|&i| matches!(layers[i], Layer::Residual { .. }))
            .unwrap_or(layers.len());
        let weights: Vec<usize> = (start..end).filter(|&i| is_weight(&layers[i])).collect();
        while remove_units(layers, &weights) {}
        if start == 0 && input_free {
            if let Some(&first) = weights.first() {
                gather_at = drop_unread_inputs(layers, first).map(|index| (first, index));
            }
        }
        start = end + 1;
    }
    if let Some((first, index)) = gather_at {
        match first.checked_sub(1).map(|i| &mut layers[i]) {
            Some(Layer::Gather { index: old }) => *old = old.index_select(0, &index),
            _ => layers.insert(first, Layer::Gather { index }),
        }
    }
}

fn is_weight(l: &Layer) -> bool {
    matches!(l, Layer::Linear { .. } | Layer::Conv { .. })
}

fn weight_and_bias(l: &mut Layer) -> (&mut Tensor, &mut Tensor) {
    match l {
        Layer::Linear { weight, bias, .. } | Layer::Conv { weight, bias, .. } => (weight, bias),
        _ => unreachable!("only weight layers are passed"),
    }
}

/// Whether a constant input channel reaches `l`'s outputs as a constant (so it folds into
/// the bias): a linear layer, or a convolution without zero padding (padding makes a
/// constant map non-constant at the borders).
fn folds_constants(l: &Layer) -> bool {
    match l {
        Layer::Conv { padding, .. } => *padding == 0,
        _ => true,
    }
}

/// `[out, units, group]`: the weight of `l` with its inputs grouped by the unit they come
/// from (a flattened channel's positions, a kernel's taps).
fn grouped(weight: &Tensor, units: i64) -> Tensor {
    weight.reshape([weight.size()[0], units, -1])
}

fn any_per_unit(grouped: &Tensor, dims: &[i64]) -> Tensor {
    grouped
        .ne(0.0)
        .sum_dim_intlist(dims, false, Kind::Int64)
        .gt(0)
}

/// One pass over the boundaries between consecutive weight layers of a segment; true when
/// it removed a unit.
fn remove_units(layers: &mut [Layer], weights: &[usize]) -> bool {
    let mut changed = false;
    for pair in weights.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let relu = layers[a + 1..b].iter().any(|l| matches!(l, Layer::Relu));
        let (head, tail) = layers.split_at_mut(b);
        let next_folds = folds_constants(&tail[0]);
        let (w, bias) = weight_and_bias(&mut head[a]);
        let (nw, nb) = weight_and_bias(&mut tail[0]);
        let units = w.size()[0];
        if units <= 1 {
            continue;
        }
        let next_shape = nw.size();
        let ng = grouped(nw, units);
        let fed = any_per_unit(&w.reshape([units, -1]), &[1]);
        let read = any_per_unit(&ng, &[0, 2]);
        // The constant a unit without inputs emits after the ops between the layers
        // (pooling and flattening keep a constant; the ReLU clamps it).
        let constant = if relu {
            bias.clamp_min(0.0)
        } else {
            bias.shallow_clone()
        };
        let foldable = fed.logical_not().logical_and(&if next_folds {
            constant.ones_like().to_kind(Kind::Bool)
        } else {
            constant.eq(0.0)
        });
        let remove = foldable.logical_or(&read.logical_not());
        if remove.sum(Kind::Int64).int64_value(&[]) == 0 {
            continue;
        }
        if remove.all().int64_value(&[]) != 0 {
            // Keep one unit: a layer of width zero does not run everywhere.
            let _ = remove.get(0).fill_(0);
        }
        // Only removed units fold (the one kept above still emits its constant itself).
        let folded =
            (&constant * foldable.logical_and(&remove).to_kind(Kind::Float)).reshape([1, units, 1]);
        *nb = &*nb + (&ng * folded).sum_dim_intlist([1, 2].as_slice(), false, Kind::Float);
        let keep = remove.logical_not().nonzero().squeeze_dim(1);
        *w = w.index_select(0, &keep);
        *bias = bias.index_select(0, &keep);
        let mut shape = next_shape;
        let kept = ng.index_select(1, &keep);
        shape[1] = if shape.len() == 2 {
            kept.size()[1] * kept.size()[2]
        } else {
            kept.size()[1]
        };
        *nw = kept.reshape(shape.as_slice());
        changed = true;
    }
    changed
}

/// Drops the inputs of the weight layer at `first` that no kept weight reads; returns the
/// kept indices (along dimension 1 of its input) when it dropped any.
fn drop_unread_inputs(layers: &mut [Layer], first: usize) -> Option<Tensor> {
    let (w, _) = weight_and_bias(&mut layers[first]);
    let inputs = w.size()[1];
    if inputs <= 1 {
        return None;
    }
    let read = any_per_unit(&grouped(w, inputs), &[0, 2]);
    let kept = read.sum(Kind::Int64).int64_value(&[]);
    if kept == inputs {
        return None;
    }
    if kept == 0 {
        let _ = read.get(0).fill_(1);
    }
    let keep = read.nonzero().squeeze_dim(1);
    *w = w.index_select(1, &keep);
    Some(keep)
}
