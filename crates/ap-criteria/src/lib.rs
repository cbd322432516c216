//! Pruning criteria: scores and exact-count selection of the weights to remove.
//!
//! A criterion only *chooses*; the mask is changed by the caller. Host criteria here:
//! magnitude, global or per layer. AP's own choice ([`ap_select`]) takes negative
//! weights still kept after the host has pruned, and removes those that moved least
//! since the start of the current training phase (ap-spec §3).

use ap_mask::Mask;
use ap_tensor::{
    select_smallest, select_smallest_per_tensor, to_f64_vec, NamedParams, SelectError,
};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Where a count is ranked: across all layers at once, or within each layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One ranking over every prunable weight.
    #[default]
    Global,
    /// The same rate applied to each layer's survivors separately.
    LayerWise,
}

/// Removal chosen by magnitude: boolean tensors in mask order (true = remove).
///
/// `Global` removes exactly `n` surviving weights with the smallest |w|; `LayerWise`
/// removes `floor(rate · S_l)` from each layer, where `rate = n / S` and `S_l` are the
/// layer's survivors.
pub fn select_magnitude(
    params: &NamedParams,
    mask: &Mask,
    n: i64,
    scope: Scope,
) -> Result<Vec<Tensor>, SelectError> {
    let scores: Vec<Tensor> = params.tensors().iter().map(|w| w.detach().abs()).collect();
    let scores: Vec<&Tensor> = scores.iter().collect();
    let eligible = mask.tensors();
    match scope {
        Scope::Global => select_smallest(&scores, &eligible, n),
        Scope::LayerWise => {
            let report = mask.report();
            let rate = if report.kept == 0 {
                0.0
            } else {
                n as f64 / report.kept as f64
            };
            let counts: Vec<i64> = report
                .layers
                .iter()
                .map(|l| (rate * l.kept as f64).floor() as i64)
                .collect();
            select_smallest_per_tensor(&scores, &eligible, &counts)
        }
    }
}

/// AP's choice for one pruning event.
#[derive(Debug)]
pub struct ApSelection {
    /// Boolean tensors in mask order, true = remove.
    pub selected: Vec<Tensor>,
    /// Weights chosen (≤ the budget).
    pub removed: i64,
    /// Budget left unused because too few negative candidates were kept.
    pub shortfall: i64,
}

/// Chooses up to `n` weights to remove the AP way: candidates are kept weights (in
/// `mask`, after the host method has pruned) whose current value is negative; among
/// them, those with the smallest movement `|w_T − w_0|` since `phase_start`, ranked
/// globally across layers, ties by position.
pub fn ap_select(
    current: &NamedParams,
    phase_start: &NamedParams,
    mask: &Mask,
    n: i64,
) -> Result<ApSelection, SelectError> {
    let candidates: Vec<Tensor> = current
        .tensors()
        .iter()
        .zip(mask.tensors())
        .map(|(w, m)| w.detach().lt(0.0).logical_and(&m.gt(0.5)))
        .collect();
    let movement: Vec<Tensor> = current
        .tensors()
        .iter()
        .zip(phase_start.tensors())
        .map(|(w, w0)| (w.detach() - w0).abs())
        .collect();
    let counts = Tensor::stack(
        &candidates
            .iter()
            .map(|c| c.sum(Kind::Int64))
            .collect::<Vec<_>>(),
        0,
    );
    let available: i64 = to_f64_vec(&counts).iter().map(|&c| c as i64).sum();
    let take = n.min(available);
    let selected = select_smallest(
        &movement.iter().collect::<Vec<_>>(),
        &candidates.iter().collect::<Vec<_>>(),
        take,
    )?;
    Ok(ApSelection {
        selected,
        removed: take,
        shortfall: n - take,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tch::Device;

    fn named(vals: &[Vec<f32>]) -> NamedParams {
        NamedParams::from_entries(
            vals.iter()
                .enumerate()
                .map(|(i, v)| (format!("l{i}"), Tensor::from_slice(v)))
                .collect(),
        )
    }

    fn flat(ts: &[Tensor]) -> Vec<bool> {
        ts.iter()
            .flat_map(|t| Vec::<i64>::try_from(&t.to_kind(Kind::Int64)).unwrap())
            .map(|v| v != 0)
            .collect()
    }

    fn layers() -> impl Strategy<Value = Vec<Vec<f32>>> {
        prop::collection::vec(prop::collection::vec(-4i32..4, 1..30), 1..4).prop_map(|ls| {
            ls.into_iter()
                .map(|l| l.into_iter().map(|v| v as f32 / 2.0).collect())
                .collect()
        })
    }

    proptest! {
        /// AP removes exactly min(n, #candidates); every removal is a kept negative weight;
        /// each removed weight moved no more than any kept negative candidate.
        #[test]
        fn ap_removes_least_moved_negatives(now in layers(), shift in -3i32..3, prune_frac in 0.0f64..0.5, n in 0i64..40) {
            let start: Vec<Vec<f32>> = now.iter().enumerate().map(|(i, l)| l.iter().enumerate().map(|(j, v)| v + (((i + j) as i32 % 3) + shift) as f32 / 4.0).collect()).collect();
            let cur = named(&now);
            let w0 = named(&start);
            let mut mask = Mask::dense(&cur);
            let nprune = (prune_frac * cur.numel() as f64) as i64;
            let host = select_magnitude(&cur, &mask, nprune, Scope::Global).unwrap();
            mask.remove(&host).unwrap();
            let keep = flat(&mask.tensors().iter().map(|t| t.gt(0.5)).collect::<Vec<_>>());
            let s = ap_select(&cur, &w0, &mask, n).unwrap();
            let sel = flat(&s.selected);
            let vals: Vec<f32> = now.iter().flatten().copied().collect();
            let mv: Vec<f32> = now.iter().flatten().zip(start.iter().flatten()).map(|(a, b)| (a - b).abs()).collect();
            let cands: Vec<usize> = (0..vals.len()).filter(|&i| keep[i] && vals[i] < 0.0).collect();
            prop_assert_eq!(s.removed, n.min(cands.len() as i64));
            prop_assert_eq!(s.removed + s.shortfall, n);
            prop_assert_eq!(sel.iter().filter(|&&b| b).count() as i64, s.removed);
            let max_removed = (0..vals.len()).filter(|&i| sel[i]).map(|i| { prop_assert!(keep[i] && vals[i] < 0.0); Ok(mv[i]) }).collect::<Result<Vec<_>, _>>()?.into_iter().fold(f32::MIN, f32::max);
            for &i in cands.iter().filter(|&&i| !sel[i]) {
                prop_assert!(max_removed <= mv[i]);
            }
        }

        /// Global magnitude removes exactly n survivors, each no larger than any kept one.
        #[test]
        fn magnitude_removes_smallest(now in layers(), frac in 0.0f64..1.0) {
            let cur = named(&now);
            let mask = Mask::dense(&cur);
            let n = (frac * cur.numel() as f64) as i64;
            let sel = flat(&select_magnitude(&cur, &mask, n, Scope::Global).unwrap());
            let mags: Vec<f32> = now.iter().flatten().map(|v| v.abs()).collect();
            prop_assert_eq!(sel.iter().filter(|&&b| b).count() as i64, n);
            let max_sel = mags.iter().zip(&sel).filter(|(_, &s)| s).map(|(m, _)| *m).fold(f32::MIN, f32::max);
            prop_assert!(mags.iter().zip(&sel).filter(|(_, &s)| !s).all(|(m, _)| *m >= max_sel));
        }
    }

    #[test]
    fn layer_wise_prunes_each_layer_at_the_rate() {
        let cur = named(&[vec![1.0; 10], vec![2.0; 30]]);
        let mask = Mask::dense(&cur);
        let sel = select_magnitude(&cur, &mask, 8, Scope::LayerWise).unwrap();
        let counts: Vec<i64> = sel
            .iter()
            .map(|t| t.sum(Kind::Int64).int64_value(&[]))
            .collect();
        assert_eq!(counts, vec![2, 6]);
        let _ = Device::Cpu;
    }

    #[test]
    fn ap_records_shortfall() {
        let cur = named(&[vec![-1.0, 2.0, 3.0]]);
        let mask = Mask::dense(&cur);
        let s = ap_select(&cur, &cur.snapshot(), &mask, 2).unwrap();
        assert_eq!((s.removed, s.shortfall), (1, 1));
    }
}
