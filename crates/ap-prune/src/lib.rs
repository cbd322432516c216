//! Pruning methods — *when* and *how much* to prune — and AP as a wrapper around any
//! host method.
//!
//! A pruning event removes `n` weights. With AP, `n_AP` of them are chosen by AP and
//! `n − n_AP` by the host criterion, which prunes first (ap-spec §3); so a method with
//! and without AP reaches the same density after the same events. For round-based
//! methods n = floor(p·S) and n_AP = floor(p_AP·S); where a schedule sets n (one-shot,
//! GMP, GraNet, RigL's drop), AP takes `floor(share · n)`.
//!
//! Methods ([`Method`]): IMP with rewinding to θ0 or to iteration k, learning-rate
//! rewinding, one-shot pruning after training or at initialisation, GMP, GraNet, RigL.

mod dynamic;
mod event;
pub mod schedule;

use std::time::Instant;

use ap_criteria::{Allocation, ApOptions, Criterion};
use ap_data::Dataset;
use ap_eval::{evaluate, DnrReport, EvalReport};
use ap_mask::{DensityReport, Mask};
use ap_models::Model;
use ap_tensor::NamedParams;
use ap_train::{train_phase, EpochStats, NoHook, Optimizer, StepHook, TrainConfig, TrainError};
use serde::{Deserialize, Serialize};
use tch::Tensor;

pub use dynamic::{drop_and_grow, DropGrow, DropGrowReport, DropRounding};
pub use event::{host_select, pruning_event, Budget, EventReport, HostContext};

/// AP's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApConfig {
    /// p_AP: AP's share of each round-based event, as a fraction of surviving weights.
    pub rate: f64,
    /// For events whose size a schedule sets (one-shot, pruning at init, GMP, GraNet): AP
    /// takes at most this fraction of the event; 0.1 is the released code's 2 of 20 points.
    #[serde(default = "default_share")]
    pub share: f64,
    /// ... and at most this fraction of the weights that survive the event; 0.025 is the
    /// released code's 2% of S while 80% of S survives ([`Budget::from_count`]).
    #[serde(default = "default_survivor_share")]
    pub survivor_share: f64,
    /// Whether AP takes `share` of the drop of GraNet's and RigL's drop-and-grow. The drop
    /// keeps the density, so it is no pruning event in the paper's sense; off by default.
    #[serde(default)]
    pub in_drop_and_grow: bool,
    /// Candidate sign and score (the ablations of the paper's components).
    #[serde(default)]
    pub options: ApOptions,
    /// First event (0-based) at which AP acts.
    #[serde(default)]
    pub from_event: usize,
    /// Event before which AP stops (none: every event).
    #[serde(default)]
    pub until_event: Option<usize>,
}

/// Default of [`ApConfig::share`]: the released code's 2 of 20 points.
pub fn default_share() -> f64 {
    0.1
}

/// Default of [`ApConfig::survivor_share`]: the released code's 2% of S while 80% survive.
pub fn default_survivor_share() -> f64 {
    0.025
}

impl ApConfig {
    /// AP with p_AP = `rate` and every other setting at its default.
    pub fn with_rate(rate: f64) -> ApConfig {
        ApConfig {
            rate,
            share: default_share(),
            survivor_share: default_survivor_share(),
            in_drop_and_grow: false,
            options: ApOptions::default(),
            from_event: 0,
            until_event: None,
        }
    }

    /// Whether AP acts at event `index`.
    pub fn active(&self, index: usize) -> bool {
        index >= self.from_event && self.until_event.is_none_or(|u| index < u)
    }
}

fn one() -> f64 {
    1.0
}
fn half() -> f64 {
    0.5
}
fn rigl_alpha() -> f64 {
    0.3
}
fn rigl_every() -> u64 {
    100
}
fn rigl_end() -> f64 {
    0.75
}
fn synflow_iters() -> usize {
    100
}

/// A pruning method and its settings (the `[prune]` table of a spec, tagged by `method`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Method {
    /// Iterative magnitude pruning (Frankle & Carbin 2019): train, prune p of the
    /// survivors, rewind survivors to θ_k (k = `rewind_iteration`, 0 = initialisation;
    /// Frankle et al. 2020), retrain from iteration k with a fresh optimizer; `rounds` times.
    Imp {
        /// Pruning events after the dense round.
        rounds: usize,
        /// p per event (host + AP).
        rate: f64,
        /// Host criterion (magnitude, lamp, random).
        #[serde(default)]
        criterion: Criterion,
        /// Global or per-layer ranking.
        #[serde(default)]
        allocation: Allocation,
        /// k: the iteration to rewind to (0 = θ0).
        #[serde(default)]
        rewind_iteration: u64,
    },
    /// Learning-rate rewinding (Renda et al. 2020): like IMP, but keep the trained
    /// weights and restart the learning-rate schedule.
    Lrr {
        /// Pruning events after the dense round.
        rounds: usize,
        /// p per event.
        rate: f64,
        /// Host criterion.
        #[serde(default)]
        criterion: Criterion,
        /// Global or per-layer ranking.
        #[serde(default)]
        allocation: Allocation,
    },
    /// One pruning event to `density`: after dense training then fine-tuning, or at
    /// initialisation (pruning at init: random, magnitude, SNIP, SynFlow) then training.
    OneShot {
        /// Target density.
        density: f64,
        /// Criterion (magnitude, lamp, random, snip, synflow).
        #[serde(default)]
        criterion: Criterion,
        /// Prune before training instead of after.
        #[serde(default)]
        at_init: bool,
        /// Fine-tuning iterations after pruning a trained network (default: the recipe's).
        #[serde(default)]
        fine_tune_iterations: Option<u64>,
        /// Global or per-layer ranking.
        #[serde(default)]
        allocation: Allocation,
        /// SynFlow scoring iterations.
        #[serde(default = "synflow_iters")]
        synflow_iterations: usize,
        /// Labelled batches SNIP scores on.
        #[serde(default = "one_batch")]
        snip_batches: usize,
    },
    /// Gradual magnitude pruning (Zhu & Gupta 2017): every `every` steps between `begin`
    /// and `end`, prune to the cubic schedule's density, while training.
    Gmp {
        /// Density at `end`.
        final_density: f64,
        /// First pruning step.
        begin: u64,
        /// Last pruning step.
        end: u64,
        /// Steps between events.
        every: u64,
        /// Global or per-layer ranking.
        #[serde(default)]
        allocation: Allocation,
    },
    /// GraNet (Liu et al. 2021): GMP from `initial_density` to `final_density`, and every
    /// `every` steps from `begin` to the end of training (not only until `end`, as in
    /// GraNet's code) per layer drop a fraction (cosine-decayed from `drop_fraction` to 0
    /// at the end of training) of the active weights by magnitude and regrow as many at
    /// the inactive positions with the largest |gradient|. A weight dropped and regrown in
    /// the same event keeps its value; newly active ones start at 0.
    Granet {
        /// Density at `end`.
        final_density: f64,
        /// Density at the start: 1 = dense-to-sparse (the default); below 1, the
        /// sparse-to-sparse variant starts from an ERK mask at random positions.
        #[serde(default = "one")]
        initial_density: f64,
        /// First pruning step.
        begin: u64,
        /// Last pruning step.
        end: u64,
        /// Steps between events.
        every: u64,
        /// Initial drop-and-grow fraction.
        #[serde(default = "half")]
        drop_fraction: f64,
        /// Global or per-layer ranking for the GMP part.
        #[serde(default)]
        allocation: Allocation,
    },
    /// RigL (Evci et al. 2020): a sparse network from the start (ERK densities, random
    /// positions); every `every` steps until `end_fraction` of training, per layer drop
    /// α (cosine-annealed) of the active weights by magnitude and grow as many by |gradient|.
    Rigl {
        /// Overall density.
        density: f64,
        /// Steps between updates.
        #[serde(default = "rigl_every")]
        every: u64,
        /// Initial α.
        #[serde(default = "rigl_alpha")]
        drop_fraction: f64,
        /// Fraction of training after which the mask is frozen.
        #[serde(default = "rigl_end")]
        end_fraction: f64,
        /// Layers kept dense and left out of drop-and-grow. Specs read by `ap-runs` fill in
        /// the RigL configuration of the model family when absent (docs/decisions.md): the
        /// first conv layer of a CNN (RigL's ImageNet/CIFAR setting), the output layer of
        /// an MLP (RigL's MNIST setting).
        #[serde(default)]
        dense_layers: Vec<String>,
        /// Whether the dense layers count towards `density`. RigL's ERK leaves them out
        /// (the other layers meet `density` over their own weights, so the network is
        /// denser than `density`); true holds the whole network at `density`.
        #[serde(default)]
        dense_in_budget: bool,
    },
}

fn one_batch() -> usize {
    1
}

impl Method {
    /// True when the method has more than one round (training phase) with events between
    /// them, so a run can continue from the checkpoint after a finished round.
    pub fn rounds_between_phases(&self) -> bool {
        match self {
            Method::Imp { .. } | Method::Lrr { .. } => true,
            Method::OneShot { at_init, .. } => !at_init,
            Method::Gmp { .. } | Method::Granet { .. } | Method::Rigl { .. } => false,
        }
    }

    /// Rounds (training phases, each with its record) of a whole run.
    pub fn round_count(&self) -> usize {
        match self {
            Method::Imp { rounds, .. } | Method::Lrr { rounds, .. } => rounds + 1,
            Method::OneShot { at_init, .. } => {
                if *at_init {
                    1
                } else {
                    2
                }
            }
            Method::Gmp { .. } | Method::Granet { .. } | Method::Rigl { .. } => 1,
        }
    }

    /// Short label for tables and directory names: the method, with the rewind point
    /// and a criterion other than magnitude, e.g. `imp`, `imp-rewind`, `imp-random`,
    /// `pai-snip`, `one-shot`, `gmp`.
    pub fn name(&self) -> String {
        let crit = |c: &Criterion| {
            if *c == Criterion::Magnitude {
                String::new()
            } else {
                format!("-{}", c.name())
            }
        };
        match self {
            Method::Imp {
                rewind_iteration: 0,
                criterion,
                ..
            } => format!("imp{}", crit(criterion)),
            Method::Imp { criterion, .. } => format!("imp-rewind{}", crit(criterion)),
            Method::Lrr { criterion, .. } => format!("lrr{}", crit(criterion)),
            Method::OneShot {
                at_init: true,
                criterion,
                ..
            } => format!("pai-{}", criterion.name()),
            Method::OneShot { criterion, .. } => format!("one-shot{}", crit(criterion)),
            Method::Gmp { .. } => "gmp".into(),
            Method::Granet { .. } => "granet".into(),
            Method::Rigl { .. } => "rigl".into(),
        }
    }

    /// The host criterion, for methods that have one.
    pub fn criterion(&self) -> Option<Criterion> {
        match self {
            Method::Imp { criterion, .. }
            | Method::Lrr { criterion, .. }
            | Method::OneShot { criterion, .. } => Some(*criterion),
            _ => None,
        }
    }

    /// The layer allocation, for methods that have one.
    pub fn allocation(&self) -> Option<&Allocation> {
        match self {
            Method::Imp { allocation, .. }
            | Method::Lrr { allocation, .. }
            | Method::OneShot { allocation, .. }
            | Method::Gmp { allocation, .. }
            | Method::Granet { allocation, .. } => Some(allocation),
            Method::Rigl { .. } => None,
        }
    }

    /// Checks ranges against the training recipe; errors name the field.
    pub fn validate(&self, train: &TrainConfig, ap: Option<&ApConfig>) -> Result<(), PruneError> {
        let density = |name: &str, d: f64| {
            if d > 0.0 && d < 1.0 {
                Ok(())
            } else {
                Err(PruneError::Config(format!(
                    "prune.{name} = {d} must be in (0, 1)"
                )))
            }
        };
        let window = |begin: u64, end: u64, every: u64| {
            if every == 0 {
                return Err(PruneError::Config("prune.every must be at least 1".into()));
            }
            if !(begin < end && end <= train.iterations) {
                return Err(PruneError::Config(format!(
                    "prune.begin = {begin}, prune.end = {end} need begin < end <= train.iterations = {}",
                    train.iterations
                )));
            }
            Ok(())
        };
        match self {
            Method::Imp {
                rate,
                rewind_iteration,
                ..
            } => {
                validate_rates(*rate, ap)?;
                if *rewind_iteration >= train.iterations {
                    return Err(PruneError::Config(format!(
                        "prune.rewind_iteration = {rewind_iteration} must be below train.iterations = {}",
                        train.iterations
                    )));
                }
            }
            Method::Lrr { rate, .. } => validate_rates(*rate, ap)?,
            Method::OneShot {
                density: d,
                synflow_iterations,
                snip_batches,
                ..
            } => {
                density("density", *d)?;
                if *synflow_iterations == 0 || *snip_batches == 0 {
                    return Err(PruneError::Config(
                        "prune.synflow_iterations and prune.snip_batches must be at least 1".into(),
                    ));
                }
            }
            Method::Gmp {
                final_density,
                begin,
                end,
                every,
                ..
            } => {
                density("final_density", *final_density)?;
                window(*begin, *end, *every)?;
            }
            Method::Granet {
                final_density,
                initial_density,
                begin,
                end,
                every,
                drop_fraction,
                ..
            } => {
                density("final_density", *final_density)?;
                if !(*initial_density > *final_density && *initial_density <= 1.0) {
                    return Err(PruneError::Config(format!(
                        "prune.initial_density = {initial_density} must be in (final_density = {final_density}, 1]"
                    )));
                }
                window(*begin, *end, *every)?;
                density("drop_fraction", *drop_fraction)?;
            }
            Method::Rigl {
                density: d,
                every,
                drop_fraction,
                end_fraction,
                ..
            } => {
                density("density", *d)?;
                density("drop_fraction", *drop_fraction)?;
                if !(*end_fraction > 0.0 && *end_fraction <= 1.0) || *every == 0 {
                    return Err(PruneError::Config(
                        "prune.end_fraction must be in (0, 1] and prune.every ≥ 1".into(),
                    ));
                }
            }
        }
        if let Some(a) = ap {
            for (name, v) in [("share", a.share), ("survivor_share", a.survivor_share)] {
                if !(0.0..1.0).contains(&v) {
                    return Err(PruneError::Config(format!(
                        "ap.{name} = {v} must be in [0, 1)"
                    )));
                }
            }
        }
        if let Some(Criterion::Synflow) = self.criterion() {
            if self.allocation().is_some_and(|a| *a != Allocation::Global) {
                return Err(PruneError::Config(
                    "criterion = \"synflow\" prunes globally: use allocation = \"global\"".into(),
                ));
            }
        }
        Ok(())
    }
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
}

/// Seeds a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSeeds {
    /// Data order.
    pub data: u64,
    /// Random criteria and random masks.
    pub prune: u64,
}

/// The state of a run after a finished round, as named tensors: enough to continue it
/// exactly (bit for bit on CPU), because nothing else carries over between rounds (data
/// order, augmentation and random scores are seeded per step and per event).
///
/// Names are `<part>/<tensor>` with parts `model` (every variable, BatchNorm buffers
/// included), `mask`, and what the method keeps between rounds: `rewind` (IMP's θ_k),
/// `phase_start` (AP's w_0), `theta0` (one-shot's movement origin). Methods whose events
/// all happen inside one training phase (GMP, GraNet, RigL, one-shot at init) have a single
/// round, so a run of theirs restarts from the beginning.
#[derive(Debug)]
pub struct Checkpoint {
    /// Named tensors (shallow handles while a run is going on; save them to keep them).
    pub tensors: Vec<(String, Tensor)>,
}

/// Where to continue a run from: the records of its finished rounds and the checkpoint
/// taken after the last of them.
#[derive(Debug)]
pub struct Resume {
    /// Records of rounds 0..n, in order.
    pub records: Vec<RoundRecord>,
    /// The checkpoint taken after round n − 1.
    pub checkpoint: Checkpoint,
}

impl Checkpoint {
    fn push(&mut self, part: &str, params: &NamedParams) {
        for (n, t) in params.iter() {
            self.tensors
                .push((format!("{part}/{n}"), t.shallow_clone()));
        }
    }

    fn push_mask(&mut self, mask: &Mask) {
        for (n, t) in mask.iter() {
            self.tensors.push((format!("mask/{n}"), t.shallow_clone()));
        }
    }

    /// The tensors of `part`, in the order of `like`'s names.
    fn part(&self, part: &str, like: &NamedParams) -> Result<Vec<(String, Tensor)>, PruneError> {
        like.names()
            .map(|n| {
                let key = format!("{part}/{n}");
                self.tensors
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, t)| (n.to_string(), t.shallow_clone()))
                    .ok_or_else(|| {
                        PruneError::Config(format!(
                            "checkpoint has no tensor `{key}`: it belongs to another model or method"
                        ))
                    })
            })
            .collect()
    }

    /// Copies `part` into `params` in place (values; shapes must agree).
    fn restore(&self, part: &str, params: &NamedParams) -> Result<(), PruneError> {
        let src = NamedParams::from_entries(self.part(part, params)?);
        for ((n, a), (_, b)) in src.iter().zip(params.iter()) {
            if a.size() != b.size() {
                return Err(PruneError::Config(format!(
                    "checkpoint tensor `{part}/{n}` has shape {:?}, the model's has {:?}",
                    a.size(),
                    b.size()
                )));
            }
        }
        params.copy_from(&src)?;
        Ok(())
    }

    /// A detached copy of `part`, shaped like `like`, on its device.
    fn snapshot(&self, part: &str, like: &NamedParams) -> Result<NamedParams, PruneError> {
        let copy = like.snapshot();
        self.restore(part, &copy)?;
        Ok(copy)
    }

    /// The mask, on the parameters' device and kind.
    fn mask(&self, like: &NamedParams) -> Result<Mask, PruneError> {
        let mask = Mask::dense(like);
        let dst = NamedParams::from_entries(
            mask.iter()
                .map(|(n, t)| (n.to_string(), t.shallow_clone()))
                .collect(),
        );
        self.restore("mask", &dst)?;
        Ok(mask)
    }
}

/// Where a method's state lives during a run.
struct Ctx<'a> {
    model: &'a Model,
    data: &'a Dataset,
    train: &'a TrainConfig,
    seeds: RunSeeds,
    prunable: NamedParams,
    everything: NamedParams,
    input_shape: Vec<i64>,
}

impl Ctx<'_> {
    fn host<'b>(
        &'b self,
        batches: &'b [(Tensor, Tensor)],
        synflow_iterations: usize,
    ) -> HostContext<'b> {
        HostContext {
            model: self.model,
            batches,
            input_shape: &self.input_shape,
            seed: self.seeds.prune,
            synflow_iterations,
        }
    }

    /// One training phase on the training split with the run's data order.
    fn train(
        &self,
        mask: &Mask,
        cfg: &TrainConfig,
        start: u64,
        hook: &mut dyn StepHook,
        on_epoch: impl FnMut(&EpochStats),
    ) -> Result<ap_train::PhaseReport, TrainError> {
        train_phase(
            self.model,
            &self.data.train,
            Some(mask),
            cfg,
            self.seeds.data,
            start,
            hook,
            on_epoch,
        )
    }

    fn snip_batches(&self, count: usize) -> Vec<(Tensor, Tensor)> {
        let b = self.train.batch_size as i64;
        let n = self.data.train.len() as i64;
        (0..count as i64)
            .map(|i| {
                let start = (i * b) % n.max(1);
                let len = b.min(n - start);
                (
                    self.data.train.images.narrow(0, start, len),
                    self.data.train.labels.narrow(0, start, len),
                )
            })
            .collect()
    }
}

/// Runs `method` (with AP when `ap` is given): trains, prunes and evaluates, calling
/// `on_round` after each training phase (with the mask it ended with) and `on_epoch`
/// after each epoch (with the round number).
#[allow(clippy::too_many_arguments)]
pub fn run_method(
    model: &Model,
    data: &Dataset,
    train: &TrainConfig,
    method: &Method,
    ap: Option<&ApConfig>,
    seeds: RunSeeds,
    eval_batch: i64,
    mut on_round: impl FnMut(&RoundRecord, &Mask) -> Result<(), PruneError>,
    on_epoch: impl FnMut(usize, &EpochStats),
) -> Result<Vec<RoundRecord>, PruneError> {
    run_method_from(
        model,
        data,
        train,
        method,
        ap,
        seeds,
        eval_batch,
        None,
        |r, mask, _| on_round(r, mask),
        on_epoch,
    )
}

/// [`run_method`] that can continue from a [`Resume`] point and hands `on_round` the
/// [`Checkpoint`] after each round, so a caller can persist it. A resumed run gives the
/// same records as an uninterrupted one (bit for bit on CPU with the same thread count).
#[allow(clippy::too_many_arguments)]
pub fn run_method_from(
    model: &Model,
    data: &Dataset,
    train: &TrainConfig,
    method: &Method,
    ap: Option<&ApConfig>,
    seeds: RunSeeds,
    eval_batch: i64,
    resume: Option<Resume>,
    mut on_round: impl FnMut(&RoundRecord, &Mask, &Checkpoint) -> Result<(), PruneError>,
    mut on_epoch: impl FnMut(usize, &EpochStats),
) -> Result<Vec<RoundRecord>, PruneError> {
    method.validate(train, ap)?;
    let prunable = NamedParams::from_var_store(&model.vs, &model.net.prunable())?;
    let mut all_names: Vec<String> = model.vs.variables().into_keys().collect();
    all_names.sort();
    let everything = NamedParams::from_var_store(&model.vs, &all_names)?;
    let input_shape = data.train.images.size()[1..].to_vec();
    let ctx = Ctx {
        model,
        data,
        train,
        seeds,
        prunable,
        everything,
        input_shape,
    };
    let mut mask = Mask::dense(&ctx.prunable);
    // A resume point restores the model and the mask here and the method's own state
    // below; a method whose run is a single round never has one to continue from.
    let (mut records, resumed) = match resume {
        // Every round is done: only the records were missing.
        Some(r) if r.records.len() >= method.round_count() => return Ok(r.records),
        Some(r) if !r.records.is_empty() && method.rounds_between_phases() => {
            r.checkpoint.restore("model", &ctx.everything)?;
            mask = r.checkpoint.mask(&ctx.prunable)?;
            (r.records, Some(r.checkpoint))
        }
        _ => (vec![], None),
    };
    let first_round = records.len();
    let mut finish = |round: usize,
                      t0: Instant,
                      events: Vec<EventReport>,
                      phase: ap_train::PhaseReport,
                      mask: &Mask,
                      state: &[(&str, &NamedParams)]| {
        let test = evaluate(model, &data.test.images, &data.test.labels, eval_batch);
        let r = RoundRecord {
            round,
            density: mask.report(),
            events,
            test,
            train_dnr: phase.train_dnr,
            epochs: phase.epochs,
            seconds: t0.elapsed().as_secs_f64(),
        };
        let mut ckpt = Checkpoint { tensors: vec![] };
        ckpt.push("model", &ctx.everything);
        ckpt.push_mask(mask);
        for (part, params) in state {
            ckpt.push(part, params);
        }
        on_round(&r, mask, &ckpt)?;
        records.push(r);
        Ok::<(), PruneError>(())
    };
    match method {
        Method::Imp { .. } | Method::Lrr { .. } => {
            // Round-based: IMP rewinds to θ_k after each event; LRR keeps the weights.
            let (rounds, rate, criterion, allocation, rewind) = match method {
                Method::Imp {
                    rounds,
                    rate,
                    criterion,
                    allocation,
                    rewind_iteration,
                } => (
                    *rounds,
                    *rate,
                    *criterion,
                    allocation,
                    Some(*rewind_iteration),
                ),
                Method::Lrr {
                    rounds,
                    rate,
                    criterion,
                    allocation,
                } => (*rounds, *rate, *criterion, allocation, None),
                _ => unreachable!("matched above"),
            };
            let k = rewind.unwrap_or(0);
            let mut rewind_point = ctx.everything.snapshot();
            // AP's w_0: the weights at the start of the phase that just ended.
            let mut phase_start = ctx.prunable.snapshot();
            if let Some(c) = &resumed {
                if rewind.is_some() {
                    rewind_point = c.snapshot("rewind", &ctx.everything)?;
                }
                phase_start = c.snapshot("phase_start", &ctx.prunable)?;
            }
            for round in first_round..=rounds {
                let t0 = Instant::now();
                let mut events = vec![];
                if round > 0 {
                    let budget = Budget::from_rates(mask.kept(), rate, ap, round - 1);
                    let host = ctx.host(&[], 1);
                    let e = pruning_event(
                        &ctx.prunable,
                        &mut mask,
                        &phase_start,
                        budget,
                        criterion,
                        allocation,
                        &host,
                        ap,
                        round - 1,
                        None,
                    )?;
                    events.push(e);
                    if rewind.is_some() {
                        ctx.everything.copy_from(&rewind_point)?;
                        mask.apply(&ctx.prunable)?;
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
                let phase = ctx.train(&mask, train, start, hook, |e| on_epoch(round, e))?;
                if let Some(taken) = snap.taken.take() {
                    rewind_point = taken;
                }
                let mut state = vec![("phase_start", &phase_start)];
                if rewind.is_some() {
                    state.push(("rewind", &rewind_point));
                }
                finish(round, t0, events, phase, &mask, &state)?;
            }
        }
        Method::OneShot {
            density,
            criterion,
            at_init,
            fine_tune_iterations,
            allocation,
            synflow_iterations,
            snip_batches,
        } => {
            let batches = if *criterion == Criterion::Snip {
                ctx.snip_batches(*snip_batches)
            } else {
                vec![]
            };
            let theta0 = match &resumed {
                Some(c) => c.snapshot("theta0", &ctx.prunable)?,
                None => ctx.prunable.snapshot(),
            };
            let prune = |mask: &mut Mask| -> Result<EventReport, PruneError> {
                let surviving = mask.kept();
                let n = surviving - (density * surviving as f64).round() as i64;
                let host = ctx.host(&batches, *synflow_iterations);
                pruning_event(
                    &ctx.prunable,
                    mask,
                    &theta0,
                    Budget::from_count(n, surviving, ap, 0),
                    *criterion,
                    allocation,
                    &host,
                    ap,
                    0,
                    None,
                )
            };
            if *at_init {
                let t0 = Instant::now();
                let e = prune(&mut mask)?;
                let phase = ctx.train(&mask, train, 0, &mut NoHook, |e| on_epoch(0, e))?;
                finish(0, t0, vec![e], phase, &mask, &[])?;
            } else {
                if first_round > 1 {
                    return Ok(records);
                }
                if first_round == 0 {
                    let t0 = Instant::now();
                    let phase = ctx.train(&mask, train, 0, &mut NoHook, |e| on_epoch(0, e))?;
                    finish(0, t0, vec![], phase, &mask, &[("theta0", &theta0)])?;
                }
                let t0 = Instant::now();
                let e = prune(&mut mask)?;
                let fine = TrainConfig {
                    iterations: fine_tune_iterations.unwrap_or(train.iterations),
                    ..train.clone()
                };
                let phase = ctx.train(&mask, &fine, 0, &mut NoHook, |e| on_epoch(1, e))?;
                finish(1, t0, vec![e], phase, &mask, &[])?;
            }
        }
        Method::Gmp { .. } | Method::Granet { .. } | Method::Rigl { .. } => {
            let t0 = Instant::now();
            // Sparse from the start (RigL, sparse-to-sparse GraNet): ERK densities at
            // random positions.
            let mut sparse_start = |density: f64, dense_layers: &[String], in_budget: bool| {
                let shapes: Vec<(String, Vec<i64>)> = ctx
                    .prunable
                    .iter()
                    .map(|(n, t)| (n.to_string(), t.size()))
                    .collect();
                let densities =
                    ap_criteria::erk_densities(&shapes, density, dense_layers, in_budget);
                let seed = ap_tensor::derive_seed(seeds.prune, "rigl-init");
                mask = ap_criteria::random_mask_with_densities(&ctx.prunable, &densities, seed);
                mask.apply(&ctx.prunable)
            };
            let schedule = match method {
                Method::Gmp {
                    final_density,
                    begin,
                    end,
                    every,
                    allocation,
                } => dynamic::Schedule::Gmp {
                    initial_sparsity: 0.0,
                    sparsity: 1.0 - final_density,
                    begin: *begin,
                    end: *end,
                    every: *every,
                    allocation: allocation.clone(),
                    regrow: None,
                },
                Method::Granet {
                    final_density,
                    initial_density,
                    begin,
                    end,
                    every,
                    drop_fraction,
                    allocation,
                } => {
                    if *initial_density < 1.0 {
                        sparse_start(*initial_density, &[], false)?;
                    }
                    dynamic::Schedule::Gmp {
                        initial_sparsity: 1.0 - initial_density,
                        sparsity: 1.0 - final_density,
                        begin: *begin,
                        end: *end,
                        every: *every,
                        allocation: allocation.clone(),
                        regrow: Some(dynamic::Regrow {
                            initial: *drop_fraction,
                            decay_until: train.iterations,
                            dense_layers: vec![],
                            rounding: DropRounding::Ceil,
                        }),
                    }
                }
                Method::Rigl {
                    density,
                    every,
                    drop_fraction,
                    end_fraction,
                    dense_layers,
                    dense_in_budget,
                } => {
                    sparse_start(*density, dense_layers, *dense_in_budget)?;
                    let stop = (*end_fraction * train.iterations as f64) as u64;
                    let regrow = dynamic::Regrow {
                        initial: *drop_fraction,
                        decay_until: stop,
                        dense_layers: dense_layers.clone(),
                        rounding: DropRounding::Floor,
                    };
                    dynamic::Schedule::Rigl {
                        every: *every,
                        stop,
                        regrow,
                    }
                }
                _ => unreachable!("matched above"),
            };
            // The hook changes the mask in place; the optimizer holds a second handle.
            let shared = mask.shallow_clone();
            let mut hook =
                dynamic::Gradual::new(&ctx.prunable, &mut mask, ap, ctx.host(&[], 1), schedule);
            let phase = ctx.train(&shared, train, 0, &mut hook, |e| on_epoch(0, e));
            let events = hook.finish(phase.as_ref().err())?;
            finish(0, t0, events, phase?, &mask, &[])?;
        }
    }
    Ok(records)
}

/// Takes a snapshot of the parameters after `at` steps (weight rewinding's θ_k).
struct SnapshotAt<'a> {
    at: u64,
    params: &'a NamedParams,
    taken: Option<NamedParams>,
}

impl StepHook for SnapshotAt<'_> {
    fn after_step(&mut self, iteration: u64, _opt: &mut Optimizer) -> Result<(), TrainError> {
        if iteration + 1 == self.at {
            self.taken = Some(self.params.snapshot());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
