//! RigL (Evci et al. 2020): dynamic sparse training from a sparse start.

use ap_criteria::{erk_densities, random_mask_with_densities, ApConfig};
use ap_tensor::{derive_seed, FieldError};
use ap_train::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::dynamic::{DropGrow, DropRounding, DuringTraining};
use crate::gradual::run_during_training;
use crate::reach::LayerShape;
use crate::schedule::cosine_decay;
use crate::{check_fraction, Checkpoint, PruneError, PruningMethod, RunContext};

/// RigL: a sparse network from the start (ERK densities, random positions); every `every`
/// steps until `end_fraction` of training, per layer drop α (cosine-annealed) of the active
/// weights by magnitude and grow as many by |gradient|.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiglConfig {
    /// Overall density.
    pub density: f64,
    /// Steps between updates.
    #[serde(default = "RiglConfig::default_every")]
    pub every: u64,
    /// Initial α.
    #[serde(default = "RiglConfig::default_drop_fraction")]
    pub drop_fraction: f64,
    /// Fraction of training after which the mask is frozen.
    #[serde(default = "RiglConfig::default_end_fraction")]
    pub end_fraction: f64,
    /// Layers kept dense and left out of drop-and-grow. Specs read by `ap-runs` fill in
    /// the RigL configuration of the model family when absent (docs/decisions.md): the
    /// first conv layer of a CNN (RigL's ImageNet/CIFAR setting), the output layer of
    /// an MLP (RigL's MNIST setting).
    #[serde(default)]
    pub dense_layers: Vec<String>,
    /// Whether the dense layers count towards `density`. RigL's ERK leaves them out
    /// (the other layers meet `density` over their own weights, so the network is
    /// denser than `density`); true holds the whole network at `density`.
    #[serde(default)]
    pub dense_in_budget: bool,
}

impl RiglConfig {
    /// Default of `every`: RigL's 100 steps.
    pub fn default_every() -> u64 {
        100
    }

    /// Default of `drop_fraction`: RigL's α = 0.3.
    pub fn default_drop_fraction() -> f64 {
        0.3
    }

    /// Default of `end_fraction`: RigL's 75% of training.
    pub fn default_end_fraction() -> f64 {
        0.75
    }

    /// The step after which the mask is frozen, in a phase of `iterations` steps.
    fn stop(&self, iterations: u64) -> u64 {
        (self.end_fraction * iterations as f64) as u64
    }
}

/// A sparse start (RigL, sparse-to-sparse GraNet): ERK densities at random positions,
/// replacing the run's mask and zeroing the pruned weights.
pub(crate) fn sparse_start(
    ctx: &mut RunContext<'_>,
    density: f64,
    dense_layers: &[String],
    in_budget: bool,
) -> Result<(), PruneError> {
    let shapes: Vec<(String, Vec<i64>)> = ctx
        .prunable
        .iter()
        .map(|(n, t)| (n.to_string(), t.size()))
        .collect();
    let densities = erk_densities(&shapes, density, dense_layers, in_budget);
    let seed = derive_seed(ctx.setup.seeds.prune, "rigl-init");
    ctx.mask = random_mask_with_densities(&ctx.prunable, &densities, seed);
    Ok(ctx.mask.apply(&ctx.prunable)?)
}

impl DuringTraining for RiglConfig {
    fn prune_to(&self, _iteration: u64, _total: i64) -> Option<(i64, &ap_criteria::Allocation)> {
        None
    }

    fn drop_grow(&self, iteration: u64, iterations: u64) -> Option<DropGrow<'_>> {
        let stop = self.stop(iterations);
        let due = iteration > 0 && iteration < stop && iteration % self.every == 0;
        due.then(|| DropGrow {
            fraction: cosine_decay(self.drop_fraction, iteration, stop),
            rounding: DropRounding::Floor,
            dense_layers: &self.dense_layers,
        })
    }
}

impl PruningMethod for RiglConfig {
    fn name(&self) -> String {
        "rigl".into()
    }

    fn check_layers(&self, layers: &[LayerShape]) -> Result<(), PruneError> {
        let densities = erk_densities(
            layers,
            self.density,
            &self.dense_layers,
            self.dense_in_budget,
        );
        for ((name, shape), d) in layers.iter().zip(densities) {
            let n: i64 = shape.iter().product();
            if n > 0 && (d * n as f64).floor() < 1.0 {
                let problem = format!(
                    "= {}: ERK gives layer `{name}` density {d:.2e}, no weight of its {n}, \
                     so no signal would pass; raise the density",
                    self.density
                );
                return Err(FieldError::new("prune.density", problem).into());
            }
        }
        Ok(())
    }

    fn validate(&self, _train: &TrainConfig, _ap: Option<&ApConfig>) -> Result<(), PruneError> {
        check_fraction("density", self.density)?;
        check_fraction("drop_fraction", self.drop_fraction)?;
        if !(self.end_fraction > 0.0 && self.end_fraction <= 1.0) || self.every == 0 {
            return Err(FieldError::new(
                "prune.end_fraction",
                "must be in (0, 1] and prune.every ≥ 1",
            )
            .into());
        }
        Ok(())
    }

    fn run(
        &self,
        ctx: &mut RunContext<'_>,
        _resumed: Option<&Checkpoint>,
    ) -> Result<(), PruneError> {
        sparse_start(ctx, self.density, &self.dense_layers, self.dense_in_budget)?;
        run_during_training(self, ctx)
    }
}
