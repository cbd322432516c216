//! What a method runs against ([`RunContext`]), the state kept between rounds
//! ([`Checkpoint`]), and the entry points that set a run up ([`run_method`],
//! [`run_method_from`]).

use std::cell::RefCell;
use std::time::Instant;

use ap_criteria::{Allocation, ApConfig, Criterion, HostCriterion};
use ap_data::Dataset;
use ap_eval::evaluate;
use ap_mask::{Mask, NmPattern};
use ap_models::Model;
use ap_tensor::NamedParams;
use ap_train::{
    train_phase, EpochStats, PhaseReport, PhaseStart, StepHook, TrainConfig, TrainError,
};
use tch::Tensor;

use crate::{EventReport, LayerShape, Method, PruneError, RoundRecord, RunSeeds};

/// What a run is made of: the model, its data and recipe, the method with AP's settings.
#[derive(Clone, Copy)]
pub struct RunSetup<'a> {
    /// The model (its variables are trained and pruned in place).
    pub model: &'a Model,
    /// Training and test data.
    pub data: &'a Dataset,
    /// The training recipe of each phase.
    pub train: &'a TrainConfig,
    /// The pruning method.
    pub method: &'a Method,
    /// AP's settings (None: the host method alone).
    pub ap: Option<&'a ApConfig>,
    /// Data-order and pruning seeds.
    pub seeds: RunSeeds,
    /// Evaluation batch size (memory only).
    pub eval_batch: i64,
    /// N:M sparsity every pruning event keeps to (None: unstructured).
    pub pattern: Option<NmPattern>,
}

impl<'a> RunSetup<'a> {
    /// `method` on `model` and `data` with the recipe `train`: no AP, data-order seed 0,
    /// pruning seed 1, evaluation in batches of 1000, unstructured. Change a field to set it otherwise
    /// (`RunSetup { ap: Some(&ap), ..RunSetup::new(…) }`).
    pub fn new(
        model: &'a Model,
        data: &'a Dataset,
        train: &'a TrainConfig,
        method: &'a Method,
    ) -> RunSetup<'a> {
        RunSetup {
            model,
            data,
            train,
            method,
            ap: None,
            seeds: RunSeeds { data: 0, prune: 1 },
            eval_batch: 1000,
            pattern: None,
        }
    }
}

/// Called after each round with its record, the mask it ended with and the checkpoint.
pub type OnRound<'a> = dyn FnMut(&RoundRecord, &Mask, &Checkpoint) -> Result<(), PruneError> + 'a;
/// Called after each epoch with the round number.
pub type OnEpoch<'a> = dyn FnMut(usize, &EpochStats) + 'a;

/// Where a method's state lives during a run: the setup, the parameters as named views,
/// the mask, the finished rounds' records and what to do after each round and epoch.
pub struct RunContext<'a> {
    /// The run's setup.
    pub setup: RunSetup<'a>,
    /// The prunable parameters, in mask order.
    pub prunable: NamedParams,
    /// Every variable of the model (BatchNorm buffers included), by name.
    pub everything: NamedParams,
    /// Per-sample input shape (SynFlow's input).
    pub input_shape: Vec<i64>,
    /// The mask; pruning changes its tensors in place, so every holder sees it.
    pub mask: Mask,
    records: Vec<RoundRecord>,
    on_round: &'a mut OnRound<'a>,
    on_epoch: RefCell<&'a mut OnEpoch<'a>>,
}

impl<'a> RunContext<'a> {
    /// The context of a fresh run: a dense mask, no finished round.
    pub fn new(
        setup: RunSetup<'a>,
        on_round: &'a mut OnRound<'a>,
        on_epoch: &'a mut OnEpoch<'a>,
    ) -> Result<RunContext<'a>, PruneError> {
        let model = setup.model;
        let prunable = NamedParams::from_var_store(&model.vs, &model.net.prunable())?;
        let everything = NamedParams::all_of(&model.vs);
        let mask = Mask::dense(&prunable);
        Ok(RunContext {
            input_shape: setup.data.train.images.size()[1..].to_vec(),
            setup,
            prunable,
            everything,
            mask,
            records: vec![],
            on_round,
            on_epoch: RefCell::new(on_epoch),
        })
    }

    /// The first round this run still has to do (rounds before it are finished).
    pub fn first_round(&self) -> usize {
        self.records.len()
    }

    /// The training recipe.
    pub fn train_config(&self) -> &'a TrainConfig {
        self.setup.train
    }

    /// AP's settings, if AP is on.
    pub fn ap(&self) -> Option<&'a ApConfig> {
        self.setup.ap
    }

    /// The host criterion of an event, with what it may need (SNIP's `batches`).
    pub fn host<'b>(
        &'b self,
        criterion: Criterion,
        allocation: &'b Allocation,
        batches: &'b [(Tensor, Tensor)],
        synflow_iterations: usize,
    ) -> HostCriterion<'b> {
        HostCriterion {
            criterion,
            allocation,
            model: self.setup.model,
            batches,
            input_shape: &self.input_shape,
            seed: self.setup.seeds.prune,
            synflow_iterations,
            given_scores: None,
            pattern: self.setup.pattern,
        }
    }

    /// One training phase of round `round` on the training split with the run's data
    /// order and the current mask, from iteration `start`.
    pub fn train(
        &self,
        round: usize,
        cfg: &TrainConfig,
        start: u64,
        hook: &mut dyn StepHook,
    ) -> Result<PhaseReport, TrainError> {
        let mut on_epoch = self.on_epoch.borrow_mut();
        train_phase(
            self.setup.model,
            &self.setup.data.train,
            Some(&self.mask),
            cfg,
            PhaseStart {
                data_seed: self.setup.seeds.data,
                iteration: start,
            },
            hook,
            |e| on_epoch(round, e),
        )
    }

    /// `count` labelled batches from the start of the training split (SNIP's data).
    pub fn leading_batches(&self, count: usize) -> Vec<(Tensor, Tensor)> {
        let train = &self.setup.data.train;
        let b = self.setup.train.batch_size as i64;
        let n = train.len() as i64;
        (0..count as i64)
            .map(|i| {
                let start = (i * b) % n.max(1);
                let len = b.min(n - start);
                (
                    train.images.narrow(0, start, len),
                    train.labels.narrow(0, start, len),
                )
            })
            .collect()
    }

    /// Ends round `round` (started at `t0`): evaluates on the test split, records it, and
    /// hands the record, the mask and a checkpoint (the model, the mask and the method's
    /// `state` parts) to the caller.
    pub fn finish_round(
        &mut self,
        round: usize,
        t0: Instant,
        events: Vec<EventReport>,
        phase: PhaseReport,
        state: &[(&str, &NamedParams)],
    ) -> Result<(), PruneError> {
        let (model, data) = (self.setup.model, self.setup.data);
        let test = evaluate(
            model,
            &data.test.images,
            &data.test.labels,
            self.setup.eval_batch,
        );
        let masks: Vec<(String, tch::Tensor)> = self
            .mask
            .iter()
            .map(|(n, m)| (n.to_string(), m.shallow_clone()))
            .collect();
        let input = data.test.images.size()[1..].to_vec();
        let record = RoundRecord {
            compact_params: ap_compact::compact_params(model, &masks, &input),
            round,
            density: self.mask.report(),
            events,
            test,
            train_dnr: phase.train_dnr,
            epochs: phase.epochs,
            seconds: t0.elapsed().as_secs_f64(),
        };
        let mut ckpt = Checkpoint { tensors: vec![] };
        ckpt.push("model", &self.everything);
        ckpt.push_mask(&self.mask);
        for (part, params) in state {
            ckpt.push(part, params);
        }
        (self.on_round)(&record, &self.mask, &ckpt)?;
        self.records.push(record);
        Ok(())
    }
}

/// Runs a method (with AP when `setup.ap` is given): trains, prunes and evaluates, calling
/// `on_round` after each training phase (with the mask it ended with) and `on_epoch`
/// after each epoch (with the round number).
pub fn run_method(
    setup: &RunSetup<'_>,
    mut on_round: impl FnMut(&RoundRecord, &Mask) -> Result<(), PruneError>,
    on_epoch: impl FnMut(usize, &EpochStats),
) -> Result<Vec<RoundRecord>, PruneError> {
    run_method_from(setup, None, |r, mask, _| on_round(r, mask), on_epoch)
}

/// [`run_method`] that can continue from a [`Resume`] point and hands `on_round` the
/// [`Checkpoint`] after each round, so a caller can persist it. A resumed run gives the
/// same records as an uninterrupted one (bit for bit on CPU with the same thread count).
pub fn run_method_from(
    setup: &RunSetup<'_>,
    resume: Option<Resume>,
    mut on_round: impl FnMut(&RoundRecord, &Mask, &Checkpoint) -> Result<(), PruneError>,
    mut on_epoch: impl FnMut(usize, &EpochStats),
) -> Result<Vec<RoundRecord>, PruneError> {
    let method = setup.method;
    method.validate(setup.train, setup.ap)?;
    if let Some(p) = &setup.pattern {
        method.check_pattern(p)?;
    }
    let mut ctx = RunContext::new(*setup, &mut on_round, &mut on_epoch)?;
    let shapes: Vec<LayerShape> = ctx
        .prunable
        .iter()
        .map(|(n, t)| (n.to_string(), t.size()))
        .collect();
    method.check_layers(&shapes)?;
    // A resume point restores the model and the mask here and the method's own state in
    // its run; a method whose run is a single round never has one to continue from.
    let resumed = match resume {
        // Every round is done: only the records were missing.
        Some(r) if r.records.len() >= method.round_count() => return Ok(r.records),
        Some(r) if !r.records.is_empty() && method.rounds_between_phases() => {
            r.checkpoint.restore("model", &ctx.everything)?;
            ctx.mask = r.checkpoint.mask(&ctx.prunable)?;
            ctx.records = r.records;
            Some(r.checkpoint)
        }
        _ => None,
    };
    method.as_method().run(&mut ctx, resumed.as_ref())?;
    Ok(ctx.records)
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
                        PruneError::Checkpoint(format!(
                            "checkpoint has no tensor `{key}`: it belongs to another model or method"
                        ))
                    })
            })
            .collect()
    }

    /// Copies `part` into `params` in place (values; shapes must agree).
    pub fn restore(&self, part: &str, params: &NamedParams) -> Result<(), PruneError> {
        let src = NamedParams::from_entries(self.part(part, params)?);
        for ((n, a), (_, b)) in src.iter().zip(params.iter()) {
            if a.size() != b.size() {
                return Err(PruneError::Checkpoint(format!(
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
    pub fn snapshot(&self, part: &str, like: &NamedParams) -> Result<NamedParams, PruneError> {
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
