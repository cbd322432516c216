//! Gradual pruning while training: GMP (Zhu & Gupta 2017) and GraNet (Liu et al. 2021),
//! which adds drop-and-grow to GMP's schedule.

use std::time::Instant;

use ap_criteria::{Allocation, ApConfig, Criterion};
use ap_mask::NmPattern;
use ap_tensor::FieldError;
use ap_train::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::dynamic::{DropGrow, DropRounding, DuringTraining, Gradual};
use crate::reach::{follow_events, LayerShape};
use crate::rigl::sparse_start;
use crate::schedule::{cosine_decay, gmp_target_kept, is_event_step};
use crate::{
    check_fraction, check_pattern_density, Checkpoint, PruneError, PruningMethod, RunContext,
};

/// Gradual magnitude pruning (Zhu & Gupta 2017): every `every` steps between `begin` and
/// `end`, prune to the cubic schedule's density, while training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmpConfig {
    /// Density at `end`.
    pub final_density: f64,
    /// First pruning step.
    pub begin: u64,
    /// Last pruning step.
    pub end: u64,
    /// Steps between events.
    pub every: u64,
    /// Global or per-layer ranking.
    #[serde(default)]
    pub allocation: Allocation,
}

/// GraNet (Liu et al. 2021): GMP from `initial_density` to `final_density`, and every
/// `every` steps from `begin` to the end of training (not only until `end`, as in GraNet's
/// code) per layer drop a fraction (cosine-decayed from `drop_fraction` to 0 at the end of
/// training) of the active weights by magnitude and regrow as many at the inactive
/// positions with the largest |gradient|. A weight dropped and regrown in the same event
/// keeps its value; newly active ones start at 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GranetConfig {
    /// Density at `end`.
    pub final_density: f64,
    /// Density at the start: 1 = dense-to-sparse (the default); below 1, the
    /// sparse-to-sparse variant starts from an ERK mask at random positions.
    #[serde(default = "GranetConfig::default_initial_density")]
    pub initial_density: f64,
    /// First pruning step.
    pub begin: u64,
    /// Last pruning step.
    pub end: u64,
    /// Steps between events.
    pub every: u64,
    /// Initial drop-and-grow fraction.
    #[serde(default = "GranetConfig::default_drop_fraction")]
    pub drop_fraction: f64,
    /// Global or per-layer ranking for the GMP part.
    #[serde(default)]
    pub allocation: Allocation,
}

impl GranetConfig {
    /// Default of `initial_density`: dense-to-sparse.
    pub fn default_initial_density() -> f64 {
        1.0
    }

    /// Default of `drop_fraction`: GraNet's 0.5.
    pub fn default_drop_fraction() -> f64 {
        0.5
    }
}

/// GMP's schedule, which GraNet shares: from `initial_density` to `final_density` on the
/// cubic curve, an event every `every` steps in [`begin`, `end`].
pub struct GmpSchedule<'m> {
    /// Density before the first event (1: dense).
    pub initial_density: f64,
    /// Density at `end`.
    pub final_density: f64,
    /// First pruning step.
    pub begin: u64,
    /// Last pruning step.
    pub end: u64,
    /// Steps between events.
    pub every: u64,
    /// Global or per-layer ranking.
    pub allocation: &'m Allocation,
}

impl<'m> GmpSchedule<'m> {
    /// The kept-weight target at `iteration` when it is an event step.
    fn prune_to(&self, iteration: u64, total: i64) -> Option<(i64, &'m Allocation)> {
        is_event_step(iteration, self.begin, self.end, self.every).then(|| {
            let (from, to) = (1.0 - self.initial_density, 1.0 - self.final_density);
            let target = gmp_target_kept(iteration, self.begin, self.end, from, to, total);
            (target, self.allocation)
        })
    }

    /// Checks the final density and the event window against the recipe; errors name the
    /// fields.
    fn validate(&self, train: &TrainConfig) -> Result<(), PruneError> {
        check_fraction("final_density", self.final_density)?;
        let (begin, end) = (self.begin, self.end);
        if self.every == 0 {
            return Err(FieldError::new("prune.every", "must be at least 1").into());
        }
        if !(begin < end && end <= train.iterations) {
            let problem = format!(
                "= {end} and prune.begin = {begin} need begin < end <= train.iterations = {}",
                train.iterations
            );
            return Err(FieldError::new("prune.end", problem).into());
        }
        Ok(())
    }

    /// Checks the schedule's end, S − round((1 − d)·S) kept weights, as one event from the
    /// dense network (the per-layer counts of a layer-wise allocation come out alike).
    fn check_layers(&self, layers: &[LayerShape]) -> Result<(), PruneError> {
        let d = self.final_density;
        let n = |s: i64| (((1.0 - d) * s as f64).round() as i64).min(s);
        let label = |_| format!("= {d}");
        follow_events(
            layers,
            self.allocation,
            1,
            n,
            ("prune.final_density", label),
        )
    }
}

impl GmpConfig {
    /// The schedule (from dense).
    pub fn schedule(&self) -> GmpSchedule<'_> {
        GmpSchedule {
            initial_density: 1.0,
            final_density: self.final_density,
            begin: self.begin,
            end: self.end,
            every: self.every,
            allocation: &self.allocation,
        }
    }
}

impl GranetConfig {
    /// The GMP part of GraNet.
    pub fn schedule(&self) -> GmpSchedule<'_> {
        GmpSchedule {
            initial_density: self.initial_density,
            final_density: self.final_density,
            begin: self.begin,
            end: self.end,
            every: self.every,
            allocation: &self.allocation,
        }
    }
}

/// Runs a method that prunes during one training phase: one round, its events recorded.
pub(crate) fn run_during_training(
    method: &dyn DuringTraining,
    ctx: &mut RunContext<'_>,
) -> Result<(), PruneError> {
    let t0 = Instant::now();
    let train = ctx.train_config();
    let host = ctx.host(Criterion::Magnitude, &Allocation::Global, &[], 1);
    let mut hook = Gradual::new(
        &ctx.prunable,
        ctx.mask.shallow_clone(),
        ctx.ap(),
        host,
        method,
        train.iterations,
    );
    let phase = ctx.train(0, train, 0, &mut hook);
    let (events, phase) = hook.finish(phase)?;
    ctx.finish_round(0, t0, events, phase, &[])
}

impl DuringTraining for GmpConfig {
    fn prune_to(&self, iteration: u64, total: i64) -> Option<(i64, &Allocation)> {
        self.schedule().prune_to(iteration, total)
    }

    fn drop_grow(&self, _iteration: u64, _iterations: u64) -> Option<DropGrow<'_>> {
        None
    }
}

impl PruningMethod for GmpConfig {
    fn name(&self) -> String {
        "gmp".into()
    }

    fn allocation(&self) -> Option<&Allocation> {
        Some(&self.allocation)
    }

    fn check_layers(&self, layers: &[LayerShape]) -> Result<(), PruneError> {
        self.schedule().check_layers(layers)
    }

    fn validate(&self, train: &TrainConfig, _ap: Option<&ApConfig>) -> Result<(), PruneError> {
        self.schedule().validate(train)
    }

    fn check_pattern(&self, pattern: &NmPattern) -> Result<(), PruneError> {
        check_pattern_density("final_density", self.final_density, pattern)
    }

    fn run(&self, ctx: &mut RunContext<'_>, _: Option<&Checkpoint>) -> Result<(), PruneError> {
        run_during_training(self, ctx)
    }
}

impl DuringTraining for GranetConfig {
    fn prune_to(&self, iteration: u64, total: i64) -> Option<(i64, &Allocation)> {
        self.schedule().prune_to(iteration, total)
    }

    fn drop_grow(&self, iteration: u64, iterations: u64) -> Option<DropGrow<'_>> {
        let due = iteration >= self.begin && (iteration - self.begin) % self.every == 0;
        due.then(|| DropGrow {
            fraction: cosine_decay(self.drop_fraction, iteration, iterations),
            rounding: DropRounding::Ceil,
            dense_layers: &[],
        })
    }
}

impl PruningMethod for GranetConfig {
    fn name(&self) -> String {
        "granet".into()
    }

    fn allocation(&self) -> Option<&Allocation> {
        Some(&self.allocation)
    }

    fn check_layers(&self, layers: &[LayerShape]) -> Result<(), PruneError> {
        self.schedule().check_layers(layers)
    }

    fn validate(&self, train: &TrainConfig, _ap: Option<&ApConfig>) -> Result<(), PruneError> {
        let (initial, fin) = (self.initial_density, self.final_density);
        self.schedule().validate(train)?;
        if !(initial > fin && initial <= 1.0) {
            let range = format!("(final_density = {fin}, 1]");
            return Err(FieldError::out_of("prune.initial_density", initial, &range).into());
        }
        check_fraction("drop_fraction", self.drop_fraction)
    }

    fn run(&self, ctx: &mut RunContext<'_>, _: Option<&Checkpoint>) -> Result<(), PruneError> {
        if self.initial_density < 1.0 {
            sparse_start(ctx, self.initial_density, &[], false)?;
        }
        run_during_training(self, ctx)
    }
}
