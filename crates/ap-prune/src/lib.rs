//! Pruning methods — *when* and *how much* to prune — and AP as a wrapper around any
//! host method.
//!
//! A pruning event removes `n` weights. With AP, `n_AP` of them are chosen by AP and
//! `n − n_AP` by the host criterion, which prunes first (ap-spec §3); so a method with
//! and without AP reaches the same density after the same events. AP's settings, budget
//! and selection live in `ap_criteria` ([`ApConfig`], [`Budget`]).
//!
//! Methods ([`Method`]), one module per family, each with its settings, defaults,
//! validation and run ([`PruningMethod`]): rounds ([`rounds`]: IMP with rewinding to θ0
//! or to iteration k, learning-rate rewinding), one shot ([`one_shot`]: after training or
//! at initialisation), gradual ([`gradual`]: GMP, GraNet), dynamic sparse training
//! ([`rigl`]), bi-level optimisation of the mask ([`bip`]) and the dense baseline
//! ([`DenseConfig`]). A method runs against a [`RunContext`]: the model, the data, the
//! mask, and what to do after each round. With an N:M pattern ([`ap_mask::NmPattern`],
//! `RunSetup::pattern`) every event keeps each group at N or more.

pub mod bip;
mod context;
mod dense;
mod dynamic;
mod event;
pub mod gradual;
pub mod one_shot;
pub mod reach;
pub mod rigl;
pub mod rounds;
pub mod schedule;

use ap_criteria::{Allocation, Criterion};
use ap_eval::{DnrReport, EvalReport};
use ap_mask::{DensityReport, NmPattern};
use ap_tensor::FieldError;
use ap_train::{EpochStats, TrainConfig, TrainError};
use serde::{Deserialize, Serialize};

pub use ap_criteria::{ApConfig, Budget};
pub use bip::BipConfig;
pub use context::{run_method, run_method_from, Checkpoint, Resume, RunContext, RunSetup};
pub use dense::DenseConfig;
pub use dynamic::{drop_and_grow, DropGrow, DropGrowReport, DropRounding};
pub use event::{pruning_event, EventAt, EventReport};
pub use gradual::{GmpConfig, GranetConfig};
pub use one_shot::OneShotConfig;
pub use reach::LayerShape;
pub use rigl::RiglConfig;
pub use rounds::{ImpConfig, LrrConfig};

/// What every pruning method provides: its label, its rounds, its checks and its run.
/// A new method implements this in its own module and gets a variant of [`Method`].
pub trait PruningMethod {
    /// Short label for tables and directory names (e.g. `imp-rewind`, `pai-snip`, `gmp`).
    fn name(&self) -> String;
    /// Rounds (training phases, each with its record) of a whole run; one for a method
    /// that prunes during a single training phase.
    fn round_count(&self) -> usize {
        1
    }
    /// True when the method has more than one round with events between them, so a run
    /// can continue from the checkpoint after a finished round.
    fn resumable(&self) -> bool {
        false
    }
    /// The host criterion, for methods that have one.
    fn criterion(&self) -> Option<Criterion> {
        None
    }
    /// The layer allocation, for methods that have one.
    fn allocation(&self) -> Option<&Allocation> {
        None
    }
    /// Training iterations of the rounds from `first_round` on, with `iterations` per
    /// training phase of the recipe (time estimates).
    fn iterations_from(&self, first_round: usize, iterations: u64) -> u64 {
        if first_round == 0 {
            iterations
        } else {
            0
        }
    }
    /// Checks that no event leaves a layer of these prunable `layers` without a weight
    /// ([`reach`]); the error names the event. Pure arithmetic: no model is run.
    fn check_layers(&self, layers: &[LayerShape]) -> Result<(), PruneError>;
    /// Checks ranges against the training recipe and AP's settings; errors name the field.
    fn validate(&self, train: &TrainConfig, ap: Option<&ApConfig>) -> Result<(), PruneError>;
    /// Checks that the method can keep to N:M `pattern` and that its schedule ends at the
    /// pattern's density N/M; errors name the field. By default a method cannot.
    fn check_pattern(&self, pattern: &NmPattern) -> Result<(), PruneError> {
        Err(FieldError::new(
            "pattern",
            format!(
                "= \"{pattern}\": prune.method = {} cannot keep to an N:M pattern; \
                 imp, lrr, one_shot, gmp and bip can",
                self.name()
            ),
        )
        .into())
    }
    /// Trains, prunes and evaluates from round `ctx.first_round()`; `resumed` is the
    /// checkpoint of the last finished round when the run continues (the model and the
    /// mask are already restored; the method restores its own state from it).
    fn run(&self, ctx: &mut RunContext<'_>, resumed: Option<&Checkpoint>)
        -> Result<(), PruneError>;
}

/// A pruning method and its settings (the `[prune]` table of a spec, tagged by `method`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Method {
    /// Iterative magnitude pruning with rewinding ([`ImpConfig`]).
    Imp(ImpConfig),
    /// Learning-rate rewinding ([`LrrConfig`]).
    Lrr(LrrConfig),
    /// One pruning event, after training or at initialisation ([`OneShotConfig`]).
    OneShot(OneShotConfig),
    /// Gradual magnitude pruning ([`GmpConfig`]).
    Gmp(GmpConfig),
    /// GraNet: gradual pruning with drop-and-grow ([`GranetConfig`]).
    Granet(GranetConfig),
    /// RigL: dynamic sparse training ([`RiglConfig`]).
    Rigl(RiglConfig),
    /// BiP: bi-level optimisation of the mask and the weights ([`BipConfig`]).
    Bip(BipConfig),
    /// No pruning: the dense baseline ([`DenseConfig`]).
    Dense(DenseConfig),
}

impl Method {
    /// The method's implementation.
    pub fn as_method(&self) -> &dyn PruningMethod {
        match self {
            Method::Imp(m) => m,
            Method::Lrr(m) => m,
            Method::OneShot(m) => m,
            Method::Gmp(m) => m,
            Method::Granet(m) => m,
            Method::Rigl(m) => m,
            Method::Bip(m) => m,
            Method::Dense(m) => m,
        }
    }

    /// True when a run can continue from the checkpoint after a finished round
    /// ([`PruningMethod::resumable`]).
    pub fn rounds_between_phases(&self) -> bool {
        self.as_method().resumable()
    }

    /// Rounds of a whole run ([`PruningMethod::round_count`]).
    pub fn round_count(&self) -> usize {
        self.as_method().round_count()
    }

    /// Short label ([`PruningMethod::name`]): the method, with the rewind point and a
    /// criterion other than magnitude, e.g. `imp`, `imp-rewind`, `imp-random`, `pai-snip`.
    pub fn name(&self) -> String {
        self.as_method().name()
    }

    /// The host criterion, for methods that have one.
    pub fn criterion(&self) -> Option<Criterion> {
        self.as_method().criterion()
    }

    /// The layer allocation, for methods that have one.
    pub fn allocation(&self) -> Option<&Allocation> {
        self.as_method().allocation()
    }

    /// Checks that every prunable layer of this shape keeps a weight through the run
    /// ([`PruningMethod::check_layers`]).
    pub fn check_layers(&self, layers: &[LayerShape]) -> Result<(), PruneError> {
        self.as_method().check_layers(layers)
    }

    /// Checks that the method can keep to `pattern` ([`PruningMethod::check_pattern`]).
    pub fn check_pattern(&self, pattern: &NmPattern) -> Result<(), PruneError> {
        if self.criterion() == Some(Criterion::Synflow) {
            let problem = format!(
                "= \"{pattern}\" cannot be kept with criterion = \"synflow\", which prunes \
                 in an iterative loop of its own"
            );
            return Err(FieldError::new("pattern", problem).into());
        }
        self.as_method().check_pattern(pattern)
    }

    /// Checks the method's ranges, AP's, and what holds for every method; errors name
    /// the field.
    pub fn validate(&self, train: &TrainConfig, ap: Option<&ApConfig>) -> Result<(), PruneError> {
        self.as_method().validate(train, ap)?;
        if let Some(a) = ap {
            a.validate()?;
        }
        if let Some(Criterion::Synflow) = self.criterion() {
            if self.allocation().is_some_and(|a| *a != Allocation::Global) {
                return Err(FieldError::new(
                    "prune.allocation",
                    "must be \"global\" with criterion = \"synflow\", which prunes globally",
                )
                .into());
            }
        }
        Ok(())
    }
}

/// Errors of a pruning run.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A setting out of range or inconsistent; the error names the field.
    #[error(transparent)]
    Setting(#[from] FieldError),
    /// A checkpoint that does not fit the model or the method.
    #[error("{0}")]
    Checkpoint(String),
    /// The caller's `on_round` failed (e.g. it could not write the round's files).
    #[error("after a round: {0}")]
    OnRound(Box<dyn std::error::Error + Send + Sync>),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A pruning event during training failed at `iteration`.
    #[error("pruning event at iteration {iteration}: {source}")]
    DuringTraining {
        /// The step.
        iteration: u64,
        /// What failed.
        source: Box<PruneError>,
    },
    /// A selection could not be made.
    #[error(transparent)]
    Select(#[from] ap_tensor::SelectError),
    /// The host criterion could not choose.
    #[error(transparent)]
    Criterion(#[from] ap_criteria::CriterionError),
    /// Mask and parameters disagree.
    #[error(transparent)]
    Mask(#[from] ap_mask::MaskError),
    /// Parameter lookup failed.
    #[error(transparent)]
    Tensor(#[from] ap_tensor::TensorError),
}

/// Checks that the density field `prune.<name>` = `d` is N:M `pattern`'s N/M, as a
/// method that prunes to one target must be set with a pattern.
pub(crate) fn check_pattern_density(
    name: &str,
    d: f64,
    pattern: &NmPattern,
) -> Result<(), PruneError> {
    if (d - pattern.density()).abs() < 1e-9 {
        return Ok(());
    }
    let problem = format!(
        "= {d} with pattern = \"{pattern}\": an N:M mask keeps N/M = {} of each layer; set it to that",
        pattern.density()
    );
    Err(FieldError::new(format!("prune.{name}"), problem).into())
}

/// Checks `0 < d < 1` for a density-like field `prune.<name>`.
pub(crate) fn check_fraction(name: &str, d: f64) -> Result<(), PruneError> {
    if d > 0.0 && d < 1.0 {
        Ok(())
    } else {
        Err(FieldError::out_of(format!("prune.{name}"), d, "(0, 1)").into())
    }
}

/// Everything measured for one round (training phase) of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 0 = the first training phase; r = the phase after the r-th event between phases.
    pub round: usize,
    /// Per-layer and total kept weights at the end of the round.
    pub density: DensityReport,
    /// Pruning events of this round (between phases: the one that started it; during
    /// training: all of them, with their iteration).
    pub events: Vec<EventReport>,
    /// Test-set evaluation (eval mode) after training.
    pub test: EvalReport,
    /// DNR in train mode over the last training epoch.
    pub train_dnr: DnrReport,
    /// Per-epoch training statistics.
    pub epochs: Vec<EpochStats>,
    /// Wall-clock seconds for the round.
    pub seconds: f64,
    /// Parameters of the round's network after exact compaction (`ap_compact`: units
    /// without kept inputs or outputs removed); `None` in records written before it was
    /// measured, or for a network that does not describe its forward pass.
    #[serde(default)]
    pub compact_params: Option<i64>,
}

/// Seeds a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSeeds {
    /// Data order.
    pub data: u64,
    /// Random criteria and random masks.
    pub prune: u64,
}

#[cfg(test)]
mod tests;
