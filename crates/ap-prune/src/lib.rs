//! Pruning methods — *when* and *how much* to prune — and AP as a wrapper around any
//! host method.
//!
//! A pruning event removes `n = floor(p · S)` of the `S` surviving weights. With AP,
//! `n_AP = floor(p_AP · S)` of them are chosen by AP and `n − n_AP` by the host
//! criterion, which prunes first (ap-spec §3). So a method with and without AP reaches
//! the same density after the same number of events.
//!
//! Methods implemented: iterative magnitude pruning with rewinding to initialisation
//! (the lottery-ticket procedure, [`run_imp`]).

use std::time::Instant;

use ap_criteria::{ap_select, select_magnitude, Scope};
use ap_data::Dataset;
use ap_eval::{evaluate, DnrReport, EvalReport};
use ap_mask::{DensityReport, Mask};
use ap_models::Model;
use ap_tensor::NamedParams;
use ap_train::{train_phase, EpochStats, TrainConfig, TrainError};
use serde::{Deserialize, Serialize};

/// AP's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApConfig {
    /// p_AP: AP's share of each event, as a fraction of the surviving weights.
    pub rate: f64,
}

/// Iterative magnitude pruning settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpConfig {
    /// Pruning events (rounds after the dense one).
    pub rounds: usize,
    /// p: fraction of surviving weights removed per event (host + AP).
    pub rate: f64,
    /// Host ranking: global or per layer.
    #[serde(default)]
    pub scope: Scope,
}

/// Errors of a pruning run.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// Settings out of range.
    #[error("{0}")]
    Config(String),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A selection could not be made.
    #[error(transparent)]
    Select(#[from] ap_tensor::SelectError),
    /// Mask and parameters disagree.
    #[error(transparent)]
    Mask(#[from] ap_mask::MaskError),
    /// Parameter lookup failed.
    #[error(transparent)]
    Tensor(#[from] ap_tensor::TensorError),
}

/// Checks that `0 < rate < 1` and `0 ≤ ap_rate < rate`; errors name the field.
pub fn validate_rates(rate: f64, ap: Option<&ApConfig>) -> Result<(), PruneError> {
    if !(rate > 0.0 && rate < 1.0) {
        return Err(PruneError::Config(format!(
            "prune.rate = {rate} must be in (0, 1)"
        )));
    }
    if let Some(ap) = ap {
        if !(ap.rate >= 0.0 && ap.rate < rate) {
            return Err(PruneError::Config(format!(
                "ap.rate = {} must be in [0, prune.rate = {rate})",
                ap.rate
            )));
        }
    }
    Ok(())
}

/// What one pruning event removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReport {
    /// Surviving weights before the event.
    pub surviving: i64,
    /// Removed by the host criterion.
    pub host_removed: i64,
    /// Removed by AP.
    pub ap_removed: i64,
    /// AP budget left unused for lack of negative candidates.
    pub ap_shortfall: i64,
}

/// One pruning event: the host criterion removes its share, then AP (if on) removes
/// its share from the kept negatives that moved least since `phase_start`. Pruned
/// weights are set to 0.
pub fn pruning_event(
    params: &NamedParams,
    mask: &mut Mask,
    phase_start: &NamedParams,
    rate: f64,
    scope: Scope,
    ap: Option<&ApConfig>,
) -> Result<EventReport, PruneError> {
    let surviving = mask.kept();
    let n = (rate * surviving as f64).floor() as i64;
    let n_ap = ap.map_or(0, |a| (a.rate * surviving as f64).floor() as i64);
    let before = mask.kept();
    let host = select_magnitude(params, mask, n - n_ap, scope)?;
    mask.remove(&host)?;
    let host_removed = before - mask.kept();
    let (ap_removed, ap_shortfall) = if ap.is_some() {
        let s = ap_select(params, phase_start, mask, n_ap)?;
        mask.remove(&s.selected)?;
        (s.removed, s.shortfall)
    } else {
        (0, 0)
    };
    mask.apply(params)?;
    Ok(EventReport {
        surviving,
        host_removed,
        ap_removed,
        ap_shortfall,
    })
}

/// Everything measured for one round of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 0 = dense training, r = after the r-th pruning event.
    pub round: usize,
    /// Per-layer and total kept weights during this round's training.
    pub density: DensityReport,
    /// The event that started this round (none for round 0).
    pub event: Option<EventReport>,
    /// Test-set evaluation (eval mode) after training.
    pub test: EvalReport,
    /// DNR in train mode over the last training epoch.
    pub train_dnr: DnrReport,
    /// Per-epoch training statistics.
    pub epochs: Vec<EpochStats>,
    /// Wall-clock seconds for the round.
    pub seconds: f64,
}

/// Seeds a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSeeds {
    /// Data order.
    pub data: u64,
}

/// Iterative magnitude pruning with rewinding to initialisation (Frankle & Carbin 2019),
/// optionally with AP: train dense, then `rounds` times prune `p` of the survivors
/// (by magnitude of the trained weights; AP's share by movement since θ0), rewind the
/// survivors to θ0 and retrain with a fresh optimizer.
///
/// `on_round` receives each finished round and the mask it trained with (to persist it);
/// `on_epoch` each epoch's statistics with the round number (to show progress).
#[allow(clippy::too_many_arguments)]
pub fn run_imp(
    model: &Model,
    data: &Dataset,
    train: &TrainConfig,
    imp: &ImpConfig,
    ap: Option<&ApConfig>,
    seeds: RunSeeds,
    eval_batch: i64,
    mut on_round: impl FnMut(&RoundRecord, &Mask) -> Result<(), PruneError>,
    mut on_epoch: impl FnMut(usize, &EpochStats),
) -> Result<Vec<RoundRecord>, PruneError> {
    validate_rates(imp.rate, ap)?;
    let prunable = NamedParams::from_var_store(&model.vs, &model.net.prunable())?;
    let mut all_names: Vec<String> = model.vs.variables().into_keys().collect();
    all_names.sort();
    let everything = NamedParams::from_var_store(&model.vs, &all_names)?;
    let theta0 = everything.snapshot();
    // AP's w_0 for every IMP phase is the rewind point θ0.
    let phase_start = prunable.snapshot();
    let mut mask = Mask::dense(&prunable);
    let mut records = Vec::with_capacity(imp.rounds + 1);
    for round in 0..=imp.rounds {
        let t0 = Instant::now();
        let event = if round == 0 {
            None
        } else {
            let e = pruning_event(&prunable, &mut mask, &phase_start, imp.rate, imp.scope, ap)?;
            everything.copy_from(&theta0)?;
            mask.apply(&prunable)?;
            Some(e)
        };
        let phase = train_phase(model, &data.train, Some(&mask), train, seeds.data, |e| {
            on_epoch(round, e)
        })?;
        let test = evaluate(model, &data.test.images, &data.test.labels, eval_batch);
        let record = RoundRecord {
            round,
            density: mask.report(),
            event,
            test,
            train_dnr: phase.train_dnr,
            epochs: phase.epochs,
            seconds: t0.elapsed().as_secs_f64(),
        };
        on_round(&record, &mask)?;
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tch::{Device, Kind, Tensor};

    fn params(sizes: &[i64], seed: i64) -> NamedParams {
        tch::manual_seed(seed);
        NamedParams::from_entries(
            sizes
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    (
                        format!("l{i}"),
                        Tensor::randn([s], (Kind::Float, Device::Cpu)),
                    )
                })
                .collect(),
        )
    }

    proptest! {
        /// After k events at rate p (with or without AP), the kept count is the product of
        /// per-event floors, each mask is a subset of the previous one, and pruned weights are 0.
        #[test]
        fn density_after_k_events(sizes in prop::collection::vec(1i64..400, 1..4), k in 1usize..8, p in 0.05f64..0.6, ap_share in 0.0f64..0.5, with_ap in any::<bool>(), seed in 0i64..100) {
            let w = params(&sizes, seed);
            let start = w.snapshot();
            // let weights drift so movement differs from magnitude
            let _ = w.tensors()[0].shallow_clone().g_add_(&Tensor::randn_like(w.tensors()[0]).g_mul_scalar_(0.1));
            let ap = with_ap.then_some(ApConfig { rate: p * ap_share });
            let mut mask = Mask::dense(&w);
            let mut expected = w.numel();
            for _ in 0..k {
                let prev = mask.copy();
                let e = pruning_event(&w, &mut mask, &start, p, Scope::Global, ap.as_ref()).unwrap();
                let n = (p * expected as f64).floor() as i64;
                let n_ap = ap.as_ref().map_or(0, |a| (a.rate * expected as f64).floor() as i64);
                prop_assert_eq!(e.surviving, expected);
                prop_assert_eq!(e.host_removed, n - n_ap);
                prop_assert_eq!(e.ap_removed + e.ap_shortfall, n_ap);
                expected -= e.host_removed + e.ap_removed;
                prop_assert_eq!(mask.kept(), expected);
                prop_assert!(mask.is_subset_of(&prev));
            }
            if ap.is_none() {
                let mut product = w.numel();
                for _ in 0..k { product -= (p * product as f64).floor() as i64; }
                prop_assert_eq!(mask.kept(), product);
            }
            for ((_, t), (_, m)) in w.iter().zip(mask.iter()) {
                prop_assert_eq!(t.ne(0.0).logical_and(&m.eq(0.0)).sum(Kind::Int64).int64_value(&[]), 0);
            }
        }
    }

    #[test]
    fn rates_are_validated_with_field_names() {
        assert!(validate_rates(1.2, None)
            .unwrap_err()
            .to_string()
            .contains("prune.rate"));
        assert!(validate_rates(0.2, Some(&ApConfig { rate: 0.3 }))
            .unwrap_err()
            .to_string()
            .contains("ap.rate"));
        validate_rates(0.2, Some(&ApConfig { rate: 0.02 })).unwrap();
    }
}
