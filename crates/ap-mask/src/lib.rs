//! Pruning masks: one 0/1 tensor per prunable parameter, on the model's device.
//!
//! A [`Mask`] only ever shrinks through [`Mask::remove`] (pruning) and grows through
//! [`Mask::grow`] (regrowth in dynamic-sparse methods). Its tensors are updated in place,
//! so every holder of a shallow clone (an optimizer, a training loop) sees the change.
//! Applying a mask sets pruned weights to exactly 0; the optimizer in `ap-train` also
//! zeroes gradients and its state there, since momentum and weight decay would
//! otherwise revive pruned weights.

use std::path::Path;

use ap_tensor::{
    load_safetensors_in_order, save_safetensors, to_f64_vec, NamedParams, TensorError,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// The mask and a parameter list or selection disagree.
    #[error("mask mismatch: {0}")]
    Mismatch(String),
    /// Reading or writing a mask file failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Name → 0/1 tensor (float, the parameter's kind) for every prunable parameter.
#[derive(Debug)]
pub struct Mask {
    entries: Vec<(String, Tensor)>,
}

/// Kept and total weights of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDensity {
    /// Parameter name.
    pub name: String,
    /// Weights kept.
    pub kept: i64,
    /// Weights in the layer.
    pub total: i64,
}

/// Density of every layer and of the whole mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DensityReport {
    /// Per-layer counts, in mask order.
    pub layers: Vec<LayerDensity>,
    /// Weights kept overall.
    pub kept: i64,
    /// Prunable weights overall.
    pub total: i64,
}

impl DensityReport {
    /// kept / total.
    pub fn density(&self) -> f64 {
        self.kept as f64 / self.total as f64
    }
}

impl Mask {
    /// A dense mask (all ones) for the given parameters.
    pub fn dense(params: &NamedParams) -> Mask {
        let entries = params
            .iter()
            .map(|(n, t)| (n.to_string(), Tensor::ones_like(&t.detach())))
            .collect();
        Mask { entries }
    }

    /// Builds a mask from named 0/1 tensors (e.g. loaded from a file).
    pub fn from_entries(entries: Vec<(String, Tensor)>) -> Mask {
        Mask { entries }
    }

    /// `(name, mask tensor)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Mask tensors in order.
    pub fn tensors(&self) -> Vec<&Tensor> {
        self.entries.iter().map(|(_, t)| t).collect()
    }

    /// The mask of one parameter.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Kept and total counts per layer (one host read for all layers).
    pub fn report(&self) -> DensityReport {
        let sums = Tensor::stack(
            &self
                .entries
                .iter()
                .map(|(_, t)| t.sum(Kind::Int64))
                .collect::<Vec<_>>(),
            0,
        );
        let kept_per_layer = to_f64_vec(&sums);
        let layers: Vec<LayerDensity> = self
            .entries
            .iter()
            .zip(kept_per_layer)
            .map(|((n, t), k)| LayerDensity {
                name: n.clone(),
                kept: k as i64,
                total: t.numel() as i64,
            })
            .collect();
        let kept = layers.iter().map(|l| l.kept).sum();
        let total = layers.iter().map(|l| l.total).sum();
        DensityReport {
            layers,
            kept,
            total,
        }
    }

    /// Number of kept weights.
    pub fn kept(&self) -> i64 {
        self.report().kept
    }

    /// Sets pruned weights to exactly 0 (in place, no gradient tracking).
    pub fn apply(&self, params: &NamedParams) -> Result<(), MaskError> {
        self.check_names(params)?;
        tch::no_grad(|| {
            for ((_, m), (_, w)) in self.entries.iter().zip(params.iter()) {
                let _ = w.shallow_clone().g_mul_(m);
            }
        });
        Ok(())
    }

    /// Removes the selected positions (boolean tensors in mask order, true = remove).
    pub fn remove(&mut self, selected: &[Tensor]) -> Result<(), MaskError> {
        self.update(selected, 0.0)
    }

    /// Restores the selected positions (boolean tensors in mask order, true = grow).
    pub fn grow(&mut self, selected: &[Tensor]) -> Result<(), MaskError> {
        self.update(selected, 1.0)
    }

    fn update(&mut self, selected: &[Tensor], value: f64) -> Result<(), MaskError> {
        if selected.len() != self.entries.len() {
            return Err(MaskError::Mismatch(format!(
                "{} selections for a mask of {} tensors",
                selected.len(),
                self.entries.len()
            )));
        }
        for ((name, m), s) in self.entries.iter_mut().zip(selected) {
            if s.size() != m.size() {
                return Err(MaskError::Mismatch(format!(
                    "`{name}`: selection {:?}, mask {:?}",
                    s.size(),
                    m.size()
                )));
            }
            let _ = m.masked_fill_(&s.to_kind(Kind::Bool), value);
        }
        Ok(())
    }

    /// True when every kept position of `self` is kept in `other`.
    pub fn is_subset_of(&self, other: &Mask) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((a, x), (b, y))| {
                    a == b
                        && x.size() == y.size()
                        && x.gt(0.5)
                            .logical_and(&y.le(0.5))
                            .sum(Kind::Int64)
                            .int64_value(&[])
                            == 0
                })
    }

    /// A second handle to the same tensors: in-place changes through either are seen by both.
    pub fn shallow_clone(&self) -> Mask {
        Mask {
            entries: self
                .entries
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
        }
    }

    /// A deep copy.
    pub fn copy(&self) -> Mask {
        Mask {
            entries: self
                .entries
                .iter()
                .map(|(n, t)| (n.clone(), t.copy()))
                .collect(),
        }
    }

    /// Moves the mask to a device.
    pub fn to_device(&self, device: Device) -> Mask {
        Mask {
            entries: self
                .entries
                .iter()
                .map(|(n, t)| (n.clone(), t.to_device(device)))
                .collect(),
        }
    }

    /// Writes the mask as safetensors (u8 0/1 tensors named like the parameters), atomically.
    pub fn save(&self, path: &Path) -> Result<(), MaskError> {
        let u8s: Vec<(String, Tensor)> = self
            .entries
            .iter()
            .map(|(n, t)| (n.clone(), t.to_kind(Kind::Uint8)))
            .collect();
        Ok(save_safetensors(path, &u8s)?)
    }

    /// Reads a mask written by [`Mask::save`] for `params`: same names in the same order,
    /// same shapes, on the parameters' device and kind.
    pub fn load(path: &Path, params: &NamedParams) -> Result<Mask, MaskError> {
        let names: Vec<&str> = params.names().collect();
        let loaded = load_safetensors_in_order(path, Device::Cpu, &names)?;
        let mut entries = Vec::with_capacity(loaded.len());
        for ((name, t), (_, p)) in loaded.into_iter().zip(params.iter()) {
            if t.size() != p.size() {
                return Err(MaskError::Mismatch(format!(
                    "{}: `{name}` has shape {:?}, the parameter has {:?}",
                    path.display(),
                    t.size(),
                    p.size()
                )));
            }
            entries.push((name, t.to_device(p.device()).to_kind(p.kind())));
        }
        Ok(Mask { entries })
    }

    fn check_names(&self, params: &NamedParams) -> Result<(), MaskError> {
        let same = self.entries.len() == params.len()
            && self
                .entries
                .iter()
                .zip(params.names())
                .all(|((a, _), b)| a == b);
        if same {
            Ok(())
        } else {
            Err(MaskError::Mismatch(format!(
                "mask has [{}], parameters are [{}]",
                self.entries
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                params.names().collect::<Vec<_>>().join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(sizes: &[i64]) -> NamedParams {
        NamedParams::from_entries(
            sizes
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    (
                        format!("l{i}.weight"),
                        Tensor::randn([s], (Kind::Float, Device::Cpu)),
                    )
                })
                .collect(),
        )
    }

    proptest! {
        /// Removing any selection gives a subset, with exactly the removed count gone, and applying zeroes exactly the pruned weights.
        #[test]
        fn remove_gives_subset_and_apply_zeroes(sizes in prop::collection::vec(1i64..50, 1..4), seed in 0i64..1000) {
            tch::manual_seed(seed);
            let p = params(&sizes);
            let mut m = Mask::dense(&p);
            let before = m.copy();
            let sel: Vec<Tensor> = sizes.iter().map(|&s| Tensor::rand([s], (Kind::Float, Device::Cpu)).lt(0.3)).collect();
            let n_sel: i64 = sel.iter().map(|s| s.sum(Kind::Int64).int64_value(&[])).sum();
            m.remove(&sel).unwrap();
            prop_assert!(m.is_subset_of(&before));
            prop_assert_eq!(m.kept(), before.kept() - n_sel);
            m.apply(&p).unwrap();
            for ((_, w), (_, mt)) in p.iter().zip(m.iter()) {
                let pruned_nonzero = w.ne(0.0).logical_and(&mt.eq(0.0)).sum(Kind::Int64).int64_value(&[]);
                prop_assert_eq!(pruned_nonzero, 0);
            }
        }
    }

    #[test]
    fn density_report_and_save_load() {
        let p = params(&[4, 6]);
        let mut m = Mask::dense(&p);
        m.remove(&[
            Tensor::from_slice(&[true, false, false, false]),
            Tensor::from_slice(&[true, true, false, false, false, false]),
        ])
        .unwrap();
        let r = m.report();
        assert_eq!((r.kept, r.total), (7, 10));
        assert_eq!(
            r.layers[1],
            LayerDensity {
                name: "l1.weight".into(),
                kept: 4,
                total: 6
            }
        );
        let path = std::env::temp_dir().join(format!("ap-mask-{}.safetensors", std::process::id()));
        m.save(&path).unwrap();
        let back = Mask::load(&path, &p).unwrap();
        assert!(back.is_subset_of(&m) && m.is_subset_of(&back));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn mismatched_names_are_rejected() {
        let m = Mask::dense(&params(&[3]));
        let other = NamedParams::from_entries(vec![(
            "x".into(),
            Tensor::zeros([3], (Kind::Float, Device::Cpu)),
        )]);
        assert!(m
            .apply(&other)
            .unwrap_err()
            .to_string()
            .contains("l0.weight"));
    }
}
