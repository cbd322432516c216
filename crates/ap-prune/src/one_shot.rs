//! One pruning event to a target density: after dense training then fine-tuning, or at
//! initialisation (pruning at init: random, magnitude, SNIP, SynFlow) then training.

use std::time::Instant;

use ap_criteria::{Allocation, ApConfig, Budget, Criterion};
use ap_mask::NmPattern;
use ap_tensor::{FieldError, NamedParams};
use ap_train::{NoHook, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::reach::{follow_events, LayerShape};
use crate::rounds::criterion_suffix;

use crate::{
    check_fraction, check_pattern_density, pruning_event, Checkpoint, EventAt, EventReport,
    PruneError, PruningMethod, RunContext,
};

/// One pruning event to `density`: after dense training then fine-tuning, or at
/// initialisation (pruning at init) then training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneShotConfig {
    /// Target density.
    pub density: f64,
    /// Criterion (magnitude, lamp, random, snip, synflow).
    #[serde(default)]
    pub criterion: Criterion,
    /// Prune before training instead of after.
    #[serde(default)]
    pub at_init: bool,
    /// Fine-tuning iterations after pruning a trained network (default: the recipe's).
    #[serde(default)]
    pub fine_tune_iterations: Option<u64>,
    /// Global or per-layer ranking.
    #[serde(default)]
    pub allocation: Allocation,
    /// SynFlow scoring iterations.
    #[serde(default = "OneShotConfig::default_synflow_iterations")]
    pub synflow_iterations: usize,
    /// Labelled batches SNIP scores on.
    #[serde(default = "OneShotConfig::default_snip_batches")]
    pub snip_batches: usize,
}

impl OneShotConfig {
    /// Default of `synflow_iterations`: SynFlow's 100.
    pub fn default_synflow_iterations() -> usize {
        100
    }

    /// Default of `snip_batches`: one batch, as SNIP.
    pub fn default_snip_batches() -> usize {
        1
    }

    /// The event: from the surviving S to round(density · S) kept weights. Its origin of
    /// movement for AP is θ0, the weights before training.
    fn prune(
        &self,
        ctx: &RunContext<'_>,
        theta0: &NamedParams,
        batches: &[(tch::Tensor, tch::Tensor)],
    ) -> Result<EventReport, PruneError> {
        let surviving = ctx.mask.kept();
        let n = surviving - (self.density * surviving as f64).round() as i64;
        let at = EventAt {
            budget: Budget::from_count(n, surviving, ctx.ap(), 0),
            index: 0,
            iteration: None,
        };
        let host = ctx.host(
            self.criterion,
            &self.allocation,
            batches,
            self.synflow_iterations,
        );
        let mut mask = ctx.mask.shallow_clone();
        pruning_event(&ctx.prunable, &mut mask, theta0, &host, ctx.ap(), at)
    }
}

impl PruningMethod for OneShotConfig {
    fn name(&self) -> String {
        if self.at_init {
            format!("pai-{}", self.criterion.name())
        } else {
            format!("one-shot{}", criterion_suffix(self.criterion))
        }
    }

    fn round_count(&self) -> usize {
        if self.at_init {
            1
        } else {
            2
        }
    }

    fn resumable(&self) -> bool {
        !self.at_init
    }

    fn iterations_from(&self, first_round: usize, iterations: u64) -> u64 {
        let fine_tune = self.fine_tune_iterations.unwrap_or(iterations);
        match (self.at_init, first_round) {
            (true, 0) => iterations,
            (false, 0) => iterations + fine_tune,
            (false, 1) => fine_tune,
            _ => 0,
        }
    }

    fn criterion(&self) -> Option<Criterion> {
        Some(self.criterion)
    }

    fn allocation(&self) -> Option<&Allocation> {
        Some(&self.allocation)
    }

    fn check_layers(&self, layers: &[LayerShape]) -> Result<(), PruneError> {
        let d = self.density;
        let n = |s: i64| s - (d * s as f64).round() as i64;
        let label = |_| format!("= {d}");
        follow_events(layers, &self.allocation, 1, n, ("prune.density", label))
    }

    fn validate(&self, _train: &TrainConfig, _ap: Option<&ApConfig>) -> Result<(), PruneError> {
        check_fraction("density", self.density)?;
        if self.synflow_iterations == 0 || self.snip_batches == 0 {
            return Err(FieldError::new(
                "prune.synflow_iterations",
                "and prune.snip_batches must be at least 1",
            )
            .into());
        }
        Ok(())
    }

    fn check_pattern(&self, pattern: &NmPattern) -> Result<(), PruneError> {
        check_pattern_density("density", self.density, pattern)
    }

    fn run(
        &self,
        ctx: &mut RunContext<'_>,
        resumed: Option<&Checkpoint>,
    ) -> Result<(), PruneError> {
        let batches = if self.criterion == Criterion::Snip {
            ctx.leading_batches(self.snip_batches)
        } else {
            vec![]
        };
        let theta0 = match resumed {
            Some(c) => c.snapshot("theta0", &ctx.prunable)?,
            None => ctx.prunable.snapshot(),
        };
        let train = ctx.train_config();
        if self.at_init {
            let t0 = Instant::now();
            let e = self.prune(ctx, &theta0, &batches)?;
            let phase = ctx.train(0, train, 0, &mut NoHook)?;
            return ctx.finish_round(0, t0, vec![e], phase, &[]);
        }
        let first_round = ctx.first_round();
        if first_round > 1 {
            return Ok(());
        }
        if first_round == 0 {
            let t0 = Instant::now();
            let phase = ctx.train(0, train, 0, &mut NoHook)?;
            ctx.finish_round(0, t0, vec![], phase, &[("theta0", &theta0)])?;
        }
        let t0 = Instant::now();
        let e = self.prune(ctx, &theta0, &batches)?;
        let fine = TrainConfig {
            iterations: self.fine_tune_iterations.unwrap_or(train.iterations),
            ..train.clone()
        };
        let phase = ctx.train(1, &fine, 0, &mut NoHook)?;
        ctx.finish_round(1, t0, vec![e], phase, &[])
    }
}
