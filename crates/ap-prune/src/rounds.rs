//! Round-based methods: train, prune p of the survivors, retrain; `rounds` times. IMP
//! rewinds the survivors to θ_k and retrains from iteration k; learning-rate rewinding
//! keeps the trained weights and restarts the learning-rate schedule.

use std::time::Instant;

use ap_criteria::{Allocation, ApConfig, Budget, Criterion};
use ap_mask::NmPattern;
use ap_tensor::{FieldError, NamedParams};
use ap_train::{NoHook, Optimizer, StepHook, TrainConfig, TrainError};
use serde::{Deserialize, Serialize};

use crate::reach::{follow_events, LayerShape};
use crate::{
    check_fraction, pruning_event, Checkpoint, EventAt, PruneError, PruningMethod, RunContext,
};

/// Iterative magnitude pruning (Frankle & Carbin 2019): train, prune p of the survivors,
/// rewind survivors to θ_k (k = `rewind_iteration`, 0 = initialisation; Frankle et al.
/// 2020), retrain from iteration k with a fresh optimizer; `rounds` times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpConfig {
    /// Pruning events after the dense round.
    pub rounds: usize,
    /// p per event (host + AP).
    pub rate: f64,
    /// Host criterion (magnitude, lamp, random).
    #[serde(default)]
    pub criterion: Criterion,
    /// Global or per-layer ranking.
    #[serde(default)]
    pub allocation: Allocation,
    /// k: the iteration to rewind to (0 = θ0).
    #[serde(default)]
    pub rewind_iteration: u64,
}

/// Learning-rate rewinding (Renda et al. 2020): like IMP, but keep the trained weights and
/// restart the learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrrConfig {
    /// Pruning events after the dense round.
    pub rounds: usize,
    /// p per event.
    pub rate: f64,
    /// Host criterion.
    #[serde(default)]
    pub criterion: Criterion,
    /// Global or per-layer ranking.
    #[serde(default)]
    pub allocation: Allocation,
}

/// Suffix of a label for a criterion other than magnitude.
pub(crate) fn criterion_suffix(c: Criterion) -> String {
    if c == Criterion::Magnitude {
        String::new()
    } else {
        format!("-{}", c.name())
    }
}

/// What IMP and LRR have in common, so both get [`PruningMethod`] from it: rounds of
/// train, prune p of the survivors, (rewind,) retrain.
pub trait RoundBased {
    /// The label without the criterion (`imp`, `imp-rewind`, `lrr`).
    fn label(&self) -> &'static str;
    /// The rounds' settings.
    fn plan(&self) -> Rounds<'_>;
}

impl RoundBased for ImpConfig {
    fn label(&self) -> &'static str {
        if self.rewind_iteration == 0 {
            "imp"
        } else {
            "imp-rewind"
        }
    }

    fn plan(&self) -> Rounds<'_> {
        Rounds {
            rounds: self.rounds,
            rate: self.rate,
            criterion: self.criterion,
            allocation: &self.allocation,
            rewind: Some(self.rewind_iteration),
        }
    }
}

impl RoundBased for LrrConfig {
    fn label(&self) -> &'static str {
        "lrr"
    }

    fn plan(&self) -> Rounds<'_> {
        Rounds {
            rounds: self.rounds,
            rate: self.rate,
            criterion: self.criterion,
            allocation: &self.allocation,
            rewind: None,
        }
    }
}

impl<T: RoundBased> PruningMethod for T {
    fn name(&self) -> String {
        format!(
            "{}{}",
            self.label(),
            criterion_suffix(self.plan().criterion)
        )
    }

    fn round_count(&self) -> usize {
        self.plan().rounds + 1
    }

    fn resumable(&self) -> bool {
        true
    }

    fn iterations_from(&self, first_round: usize, iterations: u64) -> u64 {
        // Round 0 trains from 0; every later round from the rewind point k (0 for LRR).
        let plan = self.plan();
        let later = iterations.saturating_sub(plan.rewind.unwrap_or(0));
        match first_round {
            0 => iterations + plan.rounds as u64 * later,
            _ => (plan.rounds + 1).saturating_sub(first_round) as u64 * later,
        }
    }

    fn criterion(&self) -> Option<Criterion> {
        Some(self.plan().criterion)
    }

    fn allocation(&self) -> Option<&Allocation> {
        Some(self.plan().allocation)
    }

    fn check_layers(&self, layers: &[LayerShape]) -> Result<(), PruneError> {
        let plan = self.plan();
        check_rounds(layers, plan.rounds, plan.rate, plan.allocation)
    }

    fn validate(&self, train: &TrainConfig, ap: Option<&ApConfig>) -> Result<(), PruneError> {
        validate_rates(self.plan().rate, ap)?;
        match self.plan().rewind {
            Some(k) if k >= train.iterations => {
                let problem = format!(
                    "= {k} must be below train.iterations = {}",
                    train.iterations
                );
                Err(FieldError::new("prune.rewind_iteration", problem).into())
            }
            _ => Ok(()),
        }
    }

    fn check_pattern(&self, pattern: &NmPattern) -> Result<(), PruneError> {
        let plan = self.plan();
        check_rounds_reach(plan.rounds, plan.rate, pattern)
    }

    fn run(
        &self,
        ctx: &mut RunContext<'_>,
        resumed: Option<&Checkpoint>,
    ) -> Result<(), PruneError> {
        self.plan().run(ctx, resumed)
    }
}

/// Follows `rounds` events of floor(rate·S) (AP's share is inside them) through `layers`.
fn check_rounds(
    layers: &[LayerShape],
    rounds: usize,
    rate: f64,
    allocation: &Allocation,
) -> Result<(), PruneError> {
    let n = |s: i64| (rate * s as f64).floor() as i64;
    let label = |i: usize| format!("= {rounds} at prune.rate = {rate}: after round {}", i + 1);
    follow_events(layers, allocation, rounds, n, ("prune.rounds", label))
}

/// With N:M `pattern`, the event that would take the network below N/M prunes it to the
/// pattern exactly, and events after it have nothing left to prune: so the rounds must
/// reach N/M in their last round, not before — (1 − rate)^rounds ≤ N/M < (1 − rate)^(rounds − 1).
fn check_rounds_reach(rounds: usize, rate: f64, pattern: &NmPattern) -> Result<(), PruneError> {
    let d = pattern.density();
    let after = |r: usize| (1.0 - rate).powi(r as i32);
    let reach = (1..=rounds).find(|&r| after(r) <= d + 1e-12);
    match reach {
        Some(r) if r == rounds => Ok(()),
        Some(r) => {
            let problem = format!(
                "= {rounds} at prune.rate = {rate} with pattern = \"{pattern}\": round {r} \
                 already reaches the pattern's density {d}, so later rounds would prune \
                 nothing; use rounds = {r}"
            );
            Err(FieldError::new("prune.rounds", problem).into())
        }
        None => {
            let problem = format!(
                "= {rounds} at prune.rate = {rate} with pattern = \"{pattern}\" ends at \
                 density {:.4}, above the pattern's {d}: raise prune.rounds or prune.rate \
                 (the last round prunes to the pattern exactly)",
                after(rounds)
            );
            Err(FieldError::new("prune.rounds", problem).into())
        }
    }
}

/// Checks that `0 < rate < 1` and `0 ≤ ap.rate < rate`; errors name the field.
pub fn validate_rates(rate: f64, ap: Option<&ApConfig>) -> Result<(), PruneError> {
    check_fraction("rate", rate)?;
    if let Some(ap) = ap {
        ap.validate_rate(rate)?;
    }
    Ok(())
}

/// The settings of a round-based run.
pub struct Rounds<'m> {
    /// Pruning events after the dense round.
    pub rounds: usize,
    /// p per event (host + AP).
    pub rate: f64,
    /// Host criterion.
    pub criterion: Criterion,
    /// Global or per-layer ranking.
    pub allocation: &'m Allocation,
    /// Some(k): rewind to θ_k after each event (IMP); None: keep the weights (LRR).
    pub rewind: Option<u64>,
}

impl Rounds<'_> {
    fn run(
        &self,
        ctx: &mut RunContext<'_>,
        resumed: Option<&Checkpoint>,
    ) -> Result<(), PruneError> {
        let k = self.rewind.unwrap_or(0);
        let mut rewind_point = ctx.everything.snapshot();
        // AP's w_0: the weights at the start of the phase that just ended.
        let mut phase_start = ctx.prunable.snapshot();
        if let Some(c) = resumed {
            if self.rewind.is_some() {
                rewind_point = c.snapshot("rewind", &ctx.everything)?;
            }
            phase_start = c.snapshot("phase_start", &ctx.prunable)?;
        }
        for round in ctx.first_round()..=self.rounds {
            let t0 = Instant::now();
            let mut events = vec![];
            if round > 0 {
                events.push(self.prune(ctx, &phase_start, round - 1)?);
                if self.rewind.is_some() {
                    ctx.everything.copy_from(&rewind_point)?;
                    ctx.mask.apply(&ctx.prunable)?;
                }
            }
            phase_start = ctx.prunable.snapshot();
            let start = if round == 0 { 0 } else { k };
            let mut snap = SnapshotAt {
                at: k,
                params: &ctx.everything,
                taken: None,
            };
            let hook: &mut dyn StepHook = if round == 0 && k > 0 {
                &mut snap
            } else {
                &mut NoHook
            };
            let phase = ctx.train(round, ctx.train_config(), start, hook)?;
            if let Some(taken) = snap.taken.take() {
                rewind_point = taken;
            }
            let mut state = vec![("phase_start", &phase_start)];
            if self.rewind.is_some() {
                state.push(("rewind", &rewind_point));
            }
            ctx.finish_round(round, t0, events, phase, &state)?;
        }
        Ok(())
    }

    /// The event between phases: n = floor(p·S), AP's n_AP = floor(p_AP·S).
    fn prune(
        &self,
        ctx: &mut RunContext<'_>,
        phase_start: &NamedParams,
        index: usize,
    ) -> Result<crate::EventReport, PruneError> {
        let budget = Budget::from_rates(ctx.mask.kept(), self.rate, ctx.ap(), index);
        let at = EventAt {
            budget,
            index,
            iteration: None,
        };
        let mut mask = ctx.mask.shallow_clone();
        let host = ctx.host(self.criterion, self.allocation, &[], 1);
        pruning_event(&ctx.prunable, &mut mask, phase_start, &host, ctx.ap(), at)
    }
}

/// Takes a snapshot of the parameters after `at` steps (weight rewinding's θ_k).
pub(crate) struct SnapshotAt<'a> {
    pub(crate) at: u64,
    pub(crate) params: &'a NamedParams,
    pub(crate) taken: Option<NamedParams>,
}

impl StepHook for SnapshotAt<'_> {
    fn after_step(&mut self, iteration: u64, _opt: &mut Optimizer) -> Result<(), TrainError> {
        if iteration + 1 == self.at {
            self.taken = Some(self.params.snapshot());
        }
        Ok(())
    }
}
