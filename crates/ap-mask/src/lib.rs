//! Pruning masks: one 0/1 tensor per prunable parameter, on the model's device.
//!
//! A [`Mask`] only ever shrinks through [`Mask::remove`] (pruning) and grows through
//! [`Mask::grow`] (regrowth in dynamic-sparse methods). Its tensors are updated in place,
//! so every holder of a shallow clone (an optimizer, a training loop) sees the change.
//! Applying a mask sets pruned weights to exactly 0; the optimizer in `ap-train` also
//! zeroes gradients and its state there, since momentum and weight decay would
//! otherwise revive pruned weights.

mod pattern;

use std::path::Path;

use ap_tensor::{
    load_safetensors_in_order, nonzero_counts, save_safetensors, NamedParams, TensorError,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

pub use pattern::{NmPattern, PatternError, MAX_GROUP};

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
    /// The 0/1 tensors, named and ordered like the parameters (the same ordered list).
    entries: NamedParams,
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
        Mask::from_entries(
            params
                .iter()
                .map(|(n, t)| (n.to_string(), Tensor::ones_like(&t.detach())))
                .collect(),
        )
    }

    /// Builds a mask from named 0/1 tensors (e.g. loaded from a file).
    pub fn from_entries(entries: Vec<(String, Tensor)>) -> Mask {
        Mask {
            entries: NamedParams::from_entries(entries),
        }
    }

    /// `(name, mask tensor)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter()
    }

    /// Mask tensors in order.
    pub fn tensors(&self) -> Vec<&Tensor> {
        self.entries.tensors()
    }

    /// The mask of one parameter.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.get(name)
    }

    /// Kept and total counts per layer (one host read for all layers).
    pub fn report(&self) -> DensityReport {
        let kept_per_layer = nonzero_counts(&self.tensors());
        let layers: Vec<LayerDensity> = self
            .entries
            .iter()
            .zip(kept_per_layer)
            .map(|((n, t), k)| LayerDensity {
                name: n.to_string(),
                kept: k,
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
    /// Selecting a position that is already kept leaves it kept (a no-op, not an error).
    pub fn grow(&mut self, selected: &[Tensor]) -> Result<(), MaskError> {
        self.update(selected, 1.0)
    }

    /// Sets the selected positions to `value`. Every selection is checked before any
    /// tensor changes, so an error leaves the mask as it was.
    fn update(&mut self, selected: &[Tensor], value: f64) -> Result<(), MaskError> {
        if selected.len() != self.entries.len() {
            return Err(MaskError::Mismatch(format!(
                "{} selections for a mask of {} tensors",
                selected.len(),
                self.entries.len()
            )));
        }
        for ((name, m), s) in self.entries.iter().zip(selected) {
            if s.size() != m.size() {
                return Err(MaskError::Mismatch(format!(
                    "`{name}`: selection {:?}, mask {:?}",
                    s.size(),
                    m.size()
                )));
            }
        }
        for (m, s) in self.entries.tensors().into_iter().zip(selected) {
            let _ = m
                .shallow_clone()
                .masked_fill_(&s.to_kind(Kind::Bool), value);
        }
        Ok(())
    }

    /// True when every kept position of `self` is kept in `other`.
    pub fn is_subset_of(&self, other: &Mask) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(other.entries.iter())
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
        self.map(|t| t.shallow_clone())
    }

    /// A deep copy.
    pub fn copy(&self) -> Mask {
        self.map(|t| t.copy())
    }

    /// Moves the mask to a device.
    pub fn to_device(&self, device: Device) -> Mask {
        self.map(|t| t.to_device(device))
    }

    /// Writes the mask as safetensors (u8 0/1 tensors named like the parameters), atomically.
    pub fn save(&self, path: &Path) -> Result<(), MaskError> {
        let u8s: Vec<(String, Tensor)> = self
            .entries
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_kind(Kind::Uint8)))
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
            // A damaged file can hold any value: a mask entry of 7 would scale a weight.
            if let Some(i) = first_true(&t.ne(0).logical_and(&t.ne(1))) {
                return Err(MaskError::Mismatch(format!(
                    "{}: `{name}` holds {} at flat index {i}; a mask holds only 0 and 1",
                    path.display(),
                    t.flatten(0, -1).double_value(&[i]),
                )));
            }
            entries.push((name, t.to_device(p.device()).to_kind(p.kind())));
        }
        Ok(Mask::from_entries(entries))
    }

    /// The same names, each tensor replaced by `f` of it.
    fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Mask {
        Mask::from_entries(
            self.entries
                .iter()
                .map(|(n, t)| (n.to_string(), f(t)))
                .collect(),
        )
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
                self.entries.names().collect::<Vec<_>>().join(", "),
                params.names().collect::<Vec<_>>().join(", ")
            )))
        }
    }
}

/// The flat index of the first true element of a bool tensor, if any.
fn first_true(t: &Tensor) -> Option<i64> {
    let hits = t.flatten(0, -1).nonzero();
    (hits.size()[0] > 0).then(|| hits.int64_value(&[0, 0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(sizes: &[i64]) -> NamedParams {
        NamedParams::from_entries(ap_testkit::tensors::numbered_normal(sizes))
    }

    proptest! {
        /// Removing any selection gives a subset, with exactly the removed count gone, and applying zeroes exactly the pruned weights.
        #[test]
        // Draws empty layers (size 0) and removal fractions of exactly 0 (nothing) and 1
        // (the whole mask: every layer fully pruned) besides the range.
        fn remove_gives_subset_and_apply_zeroes(sizes in prop::collection::vec(0i64..50, 1..4), frac in prop_oneof![Just(0.0f64), Just(1.0f64), 0.0f64..1.0], seed in 0i64..1000) {
            let _g = ap_testkit::torch_lock();
            tch::manual_seed(seed);
            let p = params(&sizes);
            let mut m = Mask::dense(&p);
            let before = m.copy();
            // rand is in [0, 1): lt(0) selects nothing, lt(1) everything
            let sel: Vec<Tensor> = sizes.iter().map(|&s| Tensor::rand([s], (Kind::Float, Device::Cpu)).lt(frac)).collect();
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
        let _g = ap_testkit::torch_lock();
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
        let _g = ap_testkit::torch_lock();
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

    /// Host 0/1 layers with a per-layer override: as drawn, all 0 (a fully pruned layer)
    /// or all 1; empty layers (numel 0) included.
    fn bit_layers(layers: usize) -> impl Strategy<Value = Vec<Vec<bool>>> {
        let layer = (
            prop::collection::vec(any::<bool>(), 0..40),
            prop_oneof![2 => Just(None), 1 => Just(Some(false)), 1 => Just(Some(true))],
        )
            .prop_map(|(bits, all)| bits.into_iter().map(|b| all.unwrap_or(b)).collect());
        prop::collection::vec(layer, layers)
    }

    /// A mask `l0.weight`, `l1.weight`, … of float 0/1 tensors from host bits.
    fn mask_of(bits: &[Vec<bool>]) -> Mask {
        Mask::from_entries(
            bits.iter()
                .enumerate()
                .map(|(i, b)| {
                    let v: Vec<f32> = b.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
                    (format!("l{i}.weight"), Tensor::from_slice(&v))
                })
                .collect(),
        )
    }

    fn host(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.to_kind(Kind::Float)).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// `grow` sets exactly the selected positions to 1 and leaves every other position
        /// as it was (0 stays 0, 1 stays 1); growing an already-kept position is a no-op.
        /// Kept counts rise by the number of selected positions that were pruned, per layer
        /// and overall; holders of a shallow clone see the change; the result is a
        /// superset. Draws empty layers, fully pruned and fully kept layers, and empty and
        /// full selections.
        #[test]
        fn grow_sets_exactly_the_selected_positions(
            (old, sel) in (1usize..4).prop_flat_map(|n| bit_layers(n).prop_flat_map(|old| {
                let shapes: Vec<usize> = old.iter().map(Vec::len).collect();
                let sel = shapes.into_iter().map(|len| prop_oneof![
                    2 => prop::collection::vec(any::<bool>(), len),
                    1 => Just(vec![false; len]),
                    1 => Just(vec![true; len]),
                ]).collect::<Vec<_>>();
                (Just(old), sel)
            })),
        ) {
            let mut m = mask_of(&old);
            let before = m.copy();
            let handle = m.shallow_clone();
            let sel_t: Vec<Tensor> = sel.iter().map(|s| Tensor::from_slice(s)).collect();
            m.grow(&sel_t).unwrap();
            let newly: Vec<i64> = old.iter().zip(&sel).map(|(o, s)| o.iter().zip(s).filter(|(&o, &s)| s && !o).count() as i64).collect();
            let r = m.report();
            for (li, ((o, s), layer)) in old.iter().zip(&sel).zip(&r.layers).enumerate() {
                let expected: Vec<f32> = o.iter().zip(s).map(|(&o, &s)| if o || s { 1.0 } else { 0.0 }).collect();
                prop_assert_eq!(&host(m.tensors()[li]), &expected);
                prop_assert_eq!(&host(handle.tensors()[li]), &expected);
                let kept_before = o.iter().filter(|&&k| k).count() as i64;
                prop_assert_eq!(layer.kept, kept_before + newly[li]);
                prop_assert_eq!(layer.total, o.len() as i64);
            }
            prop_assert_eq!(m.kept(), before.kept() + newly.iter().sum::<i64>());
            prop_assert!(before.is_subset_of(&m));
            // growing the same selection again changes nothing
            m.grow(&sel_t).unwrap();
            prop_assert_eq!(m.kept(), r.kept);
        }
    }

    /// `grow` rejects a selection list of the wrong length and a selection of the wrong
    /// shape, as `remove` does (selections are matched by position, not name), and a
    /// rejected call leaves the mask unchanged even when only a later tensor is wrong.
    #[test]
    fn grow_rejects_mismatches_and_leaves_the_mask_unchanged() {
        let bits = vec![vec![false, true, false], vec![false, false]];
        for op in ["grow", "remove"] {
            let mut m = mask_of(&bits);
            let call = |m: &mut Mask, sel: &[Tensor]| {
                if op == "grow" {
                    m.grow(sel)
                } else {
                    m.remove(sel)
                }
            };
            let all = |n: usize| Tensor::from_slice(&vec![true; n]);
            // one selection for two tensors
            let e = call(&mut m, &[all(3)]).unwrap_err();
            assert!(
                e.to_string().contains("1 selections for a mask of 2"),
                "{op}: {e}"
            );
            // the second tensor's selection has the wrong shape: nothing may change
            let e = call(&mut m, &[all(3), all(3)]).unwrap_err();
            assert!(matches!(e, MaskError::Mismatch(_)), "{op}: {e}");
            assert!(e.to_string().contains("l1.weight"), "{op}: {e}");
            let e = call(&mut m, &[all(3).view([1, 3]), all(2)]).unwrap_err();
            assert!(e.to_string().contains("l0.weight"), "{op}: {e}");
            assert_eq!(host(m.tensors()[0]), vec![0.0, 1.0, 0.0], "{op}");
            assert_eq!(host(m.tensors()[1]), vec![0.0, 0.0], "{op}");
        }
    }

    /// A mask of no tensors (the API allows one: `Mask::dense` of no parameters) reports
    /// 0 of 0 kept instead of panicking, and an empty selection list grows and removes
    /// nothing.
    #[test]
    fn a_mask_of_no_tensors_reports_zero() {
        let mut m = Mask::dense(&NamedParams::from_entries(vec![]));
        let r = m.report();
        assert_eq!((r.layers.len(), r.kept, r.total), (0, 0, 0));
        m.grow(&[]).unwrap();
        m.remove(&[]).unwrap();
        assert_eq!(m.kept(), 0);
    }

    /// The queries, against values worked out by hand (mutation testing, docs/testing.md):
    /// `iter` and `get` return each layer under its name, `density` is kept / total.
    #[test]
    fn queries_return_each_layer_by_hand() {
        // l0 = [1, 0, 1, 1], l1 = [0, 1]: kept 3 + 1 = 4 of 6
        let m = mask_of(&[vec![true, false, true, true], vec![false, true]]);
        let listed: Vec<(String, Vec<f32>)> =
            m.iter().map(|(n, t)| (n.to_string(), host(t))).collect();
        assert_eq!(
            listed,
            vec![
                ("l0.weight".to_string(), vec![1.0, 0.0, 1.0, 1.0]),
                ("l1.weight".to_string(), vec![0.0, 1.0]),
            ]
        );
        assert_eq!(host(m.get("l0.weight").unwrap()), vec![1.0, 0.0, 1.0, 1.0]);
        assert_eq!(host(m.get("l1.weight").unwrap()), vec![0.0, 1.0]);
        assert!(m.get("l2.weight").is_none());
        let r = m.report();
        assert_eq!((r.kept, r.total), (4, 6));
        // 3 of 4 kept: density 0.75 (exact in binary)
        let r = mask_of(&[vec![true, true, false, true]]).report();
        assert_eq!(r.density(), 0.75);
    }

    /// `is_subset_of` is false for each way two masks can differ: a kept position pruned
    /// in the other, another layer count, another name, another shape.
    #[test]
    fn subset_fails_for_each_difference() {
        let named = |entries: &[(&str, &[f32])]| {
            Mask::from_entries(
                entries
                    .iter()
                    .map(|(n, v)| (n.to_string(), Tensor::from_slice(v)))
                    .collect(),
            )
        };
        let a = named(&[("w", &[1.0, 0.0])]);
        assert!(a.is_subset_of(&named(&[("w", &[1.0, 1.0])])));
        assert!(a.is_subset_of(&a));
        // position 0 kept in a, pruned in the other
        assert!(!a.is_subset_of(&named(&[("w", &[0.0, 1.0])])));
        // the other has a second layer (a's layers are a prefix of it)
        assert!(!a.is_subset_of(&named(&[("w", &[1.0, 1.0]), ("v", &[1.0])])));
        // same shape and values, another name
        assert!(!a.is_subset_of(&named(&[("x", &[1.0, 1.0])])));
        // same name, another shape
        assert!(!a.is_subset_of(&named(&[("w", &[1.0, 1.0, 1.0])])));
    }
}
