//! `ap-bench`: the Rust side of `cargo xtask bench`.
//!
//! Each subcommand runs one benchmark case and prints one JSON line per measured series
//! on stdout (`{"case", "key", "impl", "unit", "samples", "threads", "note"}`); progress
//! and errors go to stderr. `cargo xtask bench` runs every case here and, where there is
//! one, the same case of the PyTorch baseline `bench/baselines.py` (same arguments, same
//! JSON), alternating the two so that drift on a shared machine hits both, and turns the
//! medians into a table with ratios and targets.
//!
//! The sizes are arguments, chosen by the xtask, so that both sides do exactly the same
//! work. `ap-bench --quick` (no subcommand) runs every Rust case once with tiny sizes: the
//! smoke test of `tests/quick.rs`.
//!
//! Timing: everything runs on the CPU, where every libtorch op is synchronous, so
//! wall-clock time around a group of ops is the time of those ops. Each case warms up
//! first (allocator, oneDNN primitive caches) and then takes `reps` samples.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ap_data::{Dataset, DatasetKind, ShuffledBatches, Split};
use ap_mask::Mask;
use ap_models::{ActivationProbe, Model, ModelKind, NoProbe, Vgg};
use ap_tensor::{
    flat_cat, kth_smallest, nonzero_counts, select_smallest, smallest_n_at, split_like,
    NamedParams, SAMPLE,
};
use ap_train::{Optimizer, OptimizerSpec};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "ap-bench",
    about = "Benchmark cases of `cargo xtask bench` (Rust side)"
)]
struct Cli {
    /// libtorch intra-op threads (the PyTorch baseline sets `torch.set_num_threads` to the same).
    #[arg(long, default_value_t = 1, global = true)]
    threads: i32,
    /// Run every case once with tiny sizes (smoke test); only without a subcommand.
    #[arg(long)]
    quick: bool,
    #[command(subcommand)]
    case: Option<Case>,
}

#[derive(Subcommand, Debug)]
enum Case {
    /// Training steps on MNIST, timed by part and scaled to one epoch.
    Train(TrainArgs),
    /// A masked training step (the mask on the flat gradient buffer) vs an unmasked one.
    MaskOverhead(TrainArgs),
    /// `ap_eval::evaluate` (with the DNR probe) vs the same loop without the probe.
    DnrEval(EvalArgs),
    /// Exact-count global selection of the smallest scores over VGG-19-shaped tensors.
    Select(SelectArgs),
    /// ResNet-20 training steps on random CIFAR-shaped batches.
    ResnetStep(ResnetArgs),
    /// Peak resident memory of one IMP round (a short training phase, then pruning).
    ImpMemory(ImpArgs),
    /// Inference of a pruned network: dense, masked, compacted (`ap-compact`) and sparse
    /// CSR linear layers, on an IMP ticket (± AP) from a run store or a synthetic mask.
    Infer(InferArgs),
}

#[derive(Args, Debug, Clone)]
struct InferArgs {
    /// `lenet300-100` or `lenet5`.
    #[arg(long)]
    model: ModelKind,
    /// The density wanted: the IMP ticket of `--grid` nearest to it (within 1.5×) that is
    /// finished in `--tickets`, else a synthetic one (global magnitude pruning of the
    /// random initialisation).
    #[arg(long)]
    density: f64,
    /// Samples per forward pass.
    #[arg(long)]
    batch: i64,
    /// Forward passes per sample (the time is per pass).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Samples.
    #[arg(long)]
    reps: usize,
    /// Run store with the tickets.
    #[arg(long, default_value = "runs")]
    tickets: PathBuf,
    /// The grid whose IMP runs are the tickets.
    #[arg(long, default_value = "grids/compact.toml")]
    grid: PathBuf,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Args, Debug, Clone)]
struct DataArgs {
    /// Data root holding `mnist/` (default: `$AP_DATA_DIR`, else the ap-prune cache).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct TrainArgs {
    /// `lenet300-100` or `conv2`.
    #[arg(long)]
    model: ModelKind,
    /// Fraction of prunable weights kept; 1 trains without a mask.
    #[arg(long, default_value_t = 1.0)]
    density: f64,
    /// Samples per step.
    #[arg(long, default_value_t = 60)]
    batch: usize,
    /// Timed steps per sample.
    #[arg(long)]
    steps: usize,
    /// Samples.
    #[arg(long)]
    reps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    #[command(flatten)]
    data: DataArgs,
    /// Run the convolutions channels-last (`train.channels_last`).
    #[arg(long)]
    channels_last: bool,
}

#[derive(Args, Debug, Clone)]
struct EvalArgs {
    /// `lenet300-100` or `conv2`.
    #[arg(long)]
    model: ModelKind,
    /// Test images evaluated per sample (from the start of the MNIST test set).
    #[arg(long)]
    samples: i64,
    /// Evaluation batch size.
    #[arg(long, default_value_t = 1000)]
    batch: i64,
    /// Samples.
    #[arg(long)]
    reps: usize,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Args, Debug, Clone)]
struct SelectArgs {
    /// Divide VGG-19's channel counts by this (1 = the real 20M weights).
    #[arg(long, default_value_t = 1)]
    shrink: i64,
    /// Fraction of all weights to select.
    #[arg(long, default_value_t = 0.2)]
    fraction: f64,
    /// Samples.
    #[arg(long)]
    reps: usize,
}

#[derive(Args, Debug, Clone)]
struct ResnetArgs {
    /// Samples per step.
    #[arg(long, default_value_t = 128)]
    batch: i64,
    /// Timed steps per sample.
    #[arg(long)]
    steps: usize,
    /// Samples.
    #[arg(long)]
    reps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Run the convolutions channels-last (`train.channels_last`).
    #[arg(long)]
    channels_last: bool,
}

#[derive(Args, Debug, Clone)]
struct ImpArgs {
    /// `lenet300-100` or `conv2`.
    #[arg(long, default_value = "lenet300-100")]
    model: ModelKind,
    /// Training steps of the phase.
    #[arg(long)]
    steps: u64,
    /// Samples per step.
    #[arg(long, default_value_t = 60)]
    batch: usize,
    /// Fraction of the surviving weights pruned.
    #[arg(long, default_value_t = 0.2)]
    rate: f64,
    #[command(flatten)]
    data: DataArgs,
}

/// One measured series: a JSON line on stdout.
#[derive(Serialize, Debug)]
struct Series {
    case: &'static str,
    key: String,
    #[serde(rename = "impl")]
    imp: &'static str,
    unit: &'static str,
    samples: Vec<f64>,
    threads: i32,
    note: String,
}

/// Writes series as JSON lines to stdout, remembering the thread count.
struct Out {
    threads: i32,
}

impl Out {
    fn emit(
        &self,
        case: &'static str,
        key: String,
        unit: &'static str,
        samples: Vec<f64>,
        note: String,
    ) {
        let s = Series {
            case,
            key,
            imp: "rust",
            unit,
            samples,
            threads: self.threads,
            note,
        };
        println!(
            "{}",
            serde_json::to_string(&s).expect("plain data serialises")
        );
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("ap-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if cli.threads < 1 {
        bail!("--threads must be at least 1");
    }
    tch::set_num_threads(cli.threads);
    let out = Out {
        threads: cli.threads,
    };
    match (cli.case, cli.quick) {
        (Some(_), true) => bail!("--quick runs every case and takes no subcommand"),
        (None, false) => bail!("name a case (see --help), or --quick for the smoke test"),
        (None, true) => quick(&out),
        (Some(case), false) => run_case(&out, case),
    }
}

fn run_case(out: &Out, case: Case) -> Result<()> {
    match case {
        Case::Train(a) => train(out, &a),
        Case::MaskOverhead(a) => mask_overhead(out, &a),
        Case::DnrEval(a) => dnr_eval(out, &a),
        Case::Select(a) => select(out, &a),
        Case::ResnetStep(a) => resnet_step(out, &a),
        Case::ImpMemory(a) => imp_memory(out, &a),
        Case::Infer(a) => infer(out, &a),
    }
}

/// Every case once with tiny sizes: proves each runs end to end and prints its series.
fn quick(out: &Out) -> Result<()> {
    let data = DataArgs { data_dir: None };
    for (model, density) in [
        (ModelKind::LeNet300_100, 1.0),
        (ModelKind::LeNet300_100, 0.1),
        (ModelKind::Conv2, 1.0),
        (ModelKind::Conv2, 0.1),
    ] {
        let a = TrainArgs {
            model,
            density,
            batch: 60,
            steps: 2,
            reps: 1,
            warmup: 1,
            channels_last: model == ModelKind::Conv2,
            data: data.clone(),
        };
        run_case(out, Case::Train(a.clone()))?;
        if density < 1.0 {
            run_case(out, Case::MaskOverhead(a))?;
        }
    }
    for (model, samples) in [(ModelKind::LeNet300_100, 500), (ModelKind::Conv2, 60)] {
        run_case(
            out,
            Case::DnrEval(EvalArgs {
                model,
                samples,
                batch: 1000,
                reps: 1,
                data: data.clone(),
            }),
        )?;
    }
    run_case(
        out,
        Case::Select(SelectArgs {
            shrink: 32,
            fraction: 0.2,
            reps: 1,
        }),
    )?;
    run_case(
        out,
        Case::ResnetStep(ResnetArgs {
            batch: 8,
            steps: 1,
            reps: 1,
            warmup: 1,
            channels_last: true,
        }),
    )?;
    for model in [ModelKind::LeNet300_100, ModelKind::LeNet5] {
        run_case(
            out,
            Case::Infer(InferArgs {
                model,
                density: 0.02,
                batch: 4,
                iters: 1,
                reps: 1,
                tickets: PathBuf::from("runs"),
                grid: PathBuf::from("grids/compact.toml"),
                data: data.clone(),
            }),
        )?;
    }
    run_case(
        out,
        Case::ImpMemory(ImpArgs {
            model: ModelKind::LeNet300_100,
            steps: 10,
            batch: 60,
            rate: 0.2,
            data,
        }),
    )
}

fn load_mnist(data: &DataArgs) -> Result<Dataset> {
    let dir = data
        .data_dir
        .clone()
        .unwrap_or_else(ap_data::default_data_dir);
    Dataset::load(DatasetKind::Mnist, &dir, Device::Cpu).with_context(|| {
        format!(
            "loading MNIST from {} (run `cargo xtask setup` to fetch it, or pass --data-dir)",
            dir.display()
        )
    })
}

/// The optimizer each model is trained with in this project's recipes (the baseline
/// uses the same hyperparameters with `torch.optim`).
fn optimizer_for(model: ModelKind) -> Result<OptimizerSpec> {
    Ok(match model {
        // Lottery-ticket recipes: Adam 1.2e-3 (LeNet), 2e-4 (Conv-2).
        ModelKind::LeNet300_100 => adam(1.2e-3),
        ModelKind::Conv2 => adam(2e-4),
        ModelKind::ResNet20 => OptimizerSpec::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov: false,
        },
        other => bail!("no benchmark recipe for model `{other}` (lenet300-100, conv2, resnet20)"),
    })
}

fn adam(lr: f64) -> OptimizerSpec {
    OptimizerSpec::Adam {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

/// Builds `kind` for `input`-shaped samples with a fixed seed.
fn build_model(kind: ModelKind, input: &[i64]) -> Result<Model> {
    tch::manual_seed(0);
    ap_models::build(kind, input, 10, Device::Cpu).map_err(anyhow::Error::from)
}

fn prunable(model: &Model) -> Result<NamedParams> {
    Ok(NamedParams::from_var_store(
        &model.vs,
        &model.net.prunable(),
    )?)
}

/// A global magnitude mask keeping `density` of the prunable weights, applied to them.
fn magnitude_mask(params: &NamedParams, density: f64) -> Result<Mask> {
    let mut mask = Mask::dense(params);
    let n = ((1.0 - density) * params.numel() as f64).round() as i64;
    let scores: Vec<Tensor> = params.tensors().iter().map(|t| t.abs()).collect();
    let refs: Vec<&Tensor> = scores.iter().collect();
    let selected = select_smallest(&refs, &mask.tensors(), n)?;
    mask.remove(&selected)?;
    mask.apply(params)?;
    Ok(mask)
}

/// Wall-clock seconds spent in each part of a training step, summed over steps.
#[derive(Default, Debug, Clone, Copy)]
struct Parts {
    /// Gathering the batch by index.
    gather: f64,
    /// Forward pass and loss.
    forward: f64,
    /// `zero_grad` and `backward`.
    backward: f64,
    /// The optimizer step (with the mask, when there is one).
    optimizer: f64,
}

/// The training loop of `ap_train::train_phase` without its DNR probe and hooks (the
/// probe's cost is case `dnr-eval`): shuffled index batches gathered on the device,
/// forward, cross-entropy, backward, masked optimizer step, device-side loss sum.
struct Trainer {
    model: Model,
    opt: Optimizer,
    train: Split,
    batches: ShuffledBatches,
    batch: usize,
    epoch: u64,
    lr: f64,
    loss_sum: Tensor,
}

impl Trainer {
    fn new(
        model: Model,
        mask: Option<&Mask>,
        spec: OptimizerSpec,
        train: &Split,
        batch: usize,
    ) -> Result<Trainer> {
        let lr = spec.lr();
        let opt = Optimizer::new(spec, &model.vs, mask);
        Ok(Trainer {
            model,
            opt,
            batches: train.shuffled_batches(batch, 0, 0)?,
            train: train.shallow_clone(),
            batch,
            epoch: 0,
            lr,
            loss_sum: Tensor::zeros([], (Kind::Float, Device::Cpu)),
        })
    }

    fn next_idx(&mut self) -> Result<Tensor> {
        if let Some(idx) = self.batches.next() {
            return Ok(idx);
        }
        self.epoch += 1;
        self.batches = self.train.shuffled_batches(self.batch, 0, self.epoch)?;
        self.batches.next().context("empty training split")
    }

    fn step(&mut self, parts: &mut Parts) -> Result<()> {
        let t0 = Instant::now();
        let idx = self.next_idx()?;
        let (x, y) = self.train.batch(&idx);
        let t1 = Instant::now();
        let loss = self.model.forward(&x, true).cross_entropy_for_logits(&y);
        let t2 = Instant::now();
        self.opt.zero_grad();
        loss.backward();
        let t3 = Instant::now();
        self.opt.step(self.lr);
        let t4 = Instant::now();
        let _ = self.loss_sum.g_add_(&loss.detach());
        parts.gather += (t1 - t0).as_secs_f64();
        parts.forward += (t2 - t1).as_secs_f64();
        parts.backward += (t3 - t2).as_secs_f64();
        parts.optimizer += (t4 - t3).as_secs_f64();
        Ok(())
    }

    /// Runs `steps` steps; returns the wall time and its parts.
    fn run(&mut self, steps: usize) -> Result<(f64, Parts)> {
        let mut parts = Parts::default();
        let t = Instant::now();
        for _ in 0..steps {
            self.step(&mut parts)?;
        }
        let elapsed = t.elapsed().as_secs_f64();
        // A diverged benchmark would time NaN arithmetic: refuse it.
        let loss = self.loss_sum.double_value(&[]);
        if !loss.is_finite() {
            bail!("training diverged (loss sum {loss})");
        }
        Ok((elapsed, parts))
    }
}

fn variant(density: f64) -> &'static str {
    if density < 1.0 {
        "masked"
    } else {
        "dense"
    }
}

/// A model, its optimizer and (for density < 1) a global magnitude mask.
fn trainer(a: &TrainArgs, data: &Dataset) -> Result<Trainer> {
    if !(a.density > 0.0 && a.density <= 1.0) {
        bail!("--density must be in (0, 1], got {}", a.density);
    }
    if a.steps == 0 || a.reps == 0 {
        bail!("--steps and --reps must be at least 1");
    }
    let mut model = build_model(a.model, &[1, 28, 28])?;
    if a.channels_last {
        model.to_channels_last();
    }
    let mask = if a.density < 1.0 {
        Some(magnitude_mask(&prunable(&model)?, a.density)?)
    } else {
        None
    };
    Trainer::new(
        model,
        mask.as_ref(),
        optimizer_for(a.model)?,
        &data.train,
        a.batch,
    )
}

fn train(out: &Out, a: &TrainArgs) -> Result<()> {
    let data = load_mnist(&a.data)?;
    let mut t = trainer(a, &data)?;
    t.run(a.warmup)?;
    let steps_per_epoch = data.train.len().div_ceil(a.batch) as f64;
    let mut epoch = vec![];
    let mut parts = vec![];
    for _ in 0..a.reps {
        let (s, p) = t.run(a.steps)?;
        epoch.push(s / a.steps as f64 * steps_per_epoch);
        parts.push(p);
    }
    let key = format!("train/{}/{}", a.model, variant(a.density));
    let note = format!(
        "{} reps of {} steps (batch {}), per-step time x {} steps",
        a.reps, a.steps, a.batch, steps_per_epoch
    );
    out.emit("train", key.clone(), "s/epoch", epoch, note);
    emit_parts(out, "train", &key, &parts, a.steps, true);
    Ok(())
}

fn emit_parts(
    out: &Out,
    case: &'static str,
    key: &str,
    parts: &[Parts],
    steps: usize,
    gather: bool,
) {
    let rows = [
        (
            "gather",
            parts.iter().map(|p| p.gather).collect::<Vec<f64>>(),
        ),
        (
            "forward",
            parts.iter().map(|p| p.forward).collect::<Vec<f64>>(),
        ),
        (
            "backward",
            parts.iter().map(|p| p.backward).collect::<Vec<f64>>(),
        ),
        (
            "optimizer",
            parts.iter().map(|p| p.optimizer).collect::<Vec<f64>>(),
        ),
    ];
    for (name, secs) in rows {
        if name == "gather" && !gather {
            continue;
        }
        out.emit(
            case,
            format!("{key}/part/{name}"),
            "ms/step",
            secs.iter().map(|s| s * 1e3 / steps as f64).collect(),
            "part of the step above".into(),
        );
    }
}

/// Masked vs unmasked: the same model and data, one optimizer with the mask (gradient
/// and weight multiplied by it every step) and one without, alternating reps.
fn mask_overhead(out: &Out, a: &TrainArgs) -> Result<()> {
    if a.density >= 1.0 {
        bail!("mask-overhead needs --density below 1");
    }
    let data = load_mnist(&a.data)?;
    let mut masked = trainer(a, &data)?;
    let mut plain = trainer(
        &TrainArgs {
            density: 1.0,
            ..a.clone()
        },
        &data,
    )?;
    masked.run(a.warmup)?;
    plain.run(a.warmup)?;
    let (mut m_step, mut p_step, mut m_opt, mut p_opt) = (vec![], vec![], vec![], vec![]);
    let per = |s: f64| s * 1e3 / a.steps as f64;
    for _ in 0..a.reps {
        let (s, p) = plain.run(a.steps)?;
        p_step.push(per(s));
        p_opt.push(per(p.optimizer));
        let (s, p) = masked.run(a.steps)?;
        m_step.push(per(s));
        m_opt.push(per(p.optimizer));
    }
    let note = format!(
        "{} reps of {} steps, density {} vs no mask",
        a.reps, a.steps, a.density
    );
    let m = &a.model;
    out.emit(
        "mask",
        format!("step/{m}/unmasked"),
        "ms/step",
        p_step,
        note.clone(),
    );
    out.emit(
        "mask",
        format!("step/{m}/masked"),
        "ms/step",
        m_step,
        note.clone(),
    );
    out.emit(
        "mask",
        format!("optstep/{m}/unmasked"),
        "ms/step",
        p_opt,
        note.clone(),
    );
    out.emit(
        "mask",
        format!("optstep/{m}/masked"),
        "ms/step",
        m_opt,
        note,
    );
    Ok(())
}

/// A `DnrProbe` that also sums the wall time spent in its `observe` (the probe's share
/// of an instrumented evaluation, for the cause analysis).
struct TimedProbe {
    inner: ap_eval::DnrProbe,
    secs: f64,
}

impl ActivationProbe for TimedProbe {
    fn observe(&mut self, site: &str, activation: &Tensor) {
        let t = Instant::now();
        self.inner.observe(site, activation);
        self.secs += t.elapsed().as_secs_f64();
    }
}

fn dnr_eval(out: &Out, a: &EvalArgs) -> Result<()> {
    let data = load_mnist(&a.data)?;
    let n = a.samples.min(data.test.len() as i64);
    if n < 1 || a.reps == 0 || a.batch < 1 {
        bail!("--samples, --batch and --reps must be at least 1");
    }
    let images = data.test.images.narrow(0, 0, n);
    let labels = data.test.labels.narrow(0, 0, n);
    let model = build_model(a.model, &[1, 28, 28])?;
    // `ap_eval::evaluate`'s own loop, reporting to `probe` (`NoProbe`: the plain path).
    let eval_loop = |probe: &mut dyn ActivationProbe| {
        ap_eval::accuracy_and_loss(&model, &images, &labels, a.batch, probe)
    };
    // Warm up both paths, and check they agree (the probe must not change the result).
    let plain_acc = eval_loop(&mut NoProbe).0;
    let probed = ap_eval::evaluate(&model, &images, &labels, a.batch);
    if (plain_acc - probed.accuracy).abs() > 1e-12 {
        bail!(
            "probed accuracy {} differs from plain {plain_acc}",
            probed.accuracy
        );
    }
    let (mut plain, mut inst, mut observe) = (vec![], vec![], vec![]);
    for _ in 0..a.reps {
        let t = Instant::now();
        std::hint::black_box(eval_loop(&mut NoProbe));
        plain.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(ap_eval::evaluate(&model, &images, &labels, a.batch));
        inst.push(t.elapsed().as_secs_f64());
        let mut probe = TimedProbe {
            inner: ap_eval::DnrProbe::new(),
            secs: 0.0,
        };
        std::hint::black_box(eval_loop(&mut probe));
        std::hint::black_box(probe.inner.finish());
        observe.push(probe.secs);
    }
    let units: i64 = model.net.relu_sites().iter().map(|(_, u)| u).sum();
    let note = format!("{} reps of {n} test images, batch {}", a.reps, a.batch);
    out.emit(
        "dnr",
        format!("eval/{}/plain", a.model),
        "s",
        plain,
        note.clone(),
    );
    out.emit("dnr", format!("eval/{}/probed", a.model), "s", inst, note);
    out.emit(
        "dnr",
        format!("eval/{}/probed/part/observe", a.model),
        "s",
        observe,
        format!("time inside DnrProbe::observe: {units} ReLU units per image, 2 passes each"),
    );
    Ok(())
}

/// The prunable weight shapes of VGG-19 for CIFAR (16 convs, one linear layer): 20.0M
/// weights. `shrink` divides the channel counts, for smoke tests.
fn vgg19_shapes(shrink: i64) -> Vec<Vec<i64>> {
    let plan = Vgg::conv_widths(ModelKind::Vgg19.depth()).expect("VGG-19 is registered");
    let mut c_in = 3;
    let mut shapes = vec![];
    for c in plan {
        let c = (c / shrink).max(1);
        shapes.push(vec![c, c_in, 3, 3]);
        c_in = c;
    }
    shapes.push(vec![10, c_in]);
    shapes
}

/// Times `f` once.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let r = f();
    (t.elapsed().as_secs_f64(), r)
}

/// The steps of `ap_tensor::select_smallest`, run one by one through its public pieces
/// so each can be timed (the cause analysis when ours is slower than PyTorch's
/// `kthvalue`). Returns seconds per step, and the selection, which is checked against
/// the library's.
fn select_parts(
    scores: &[&Tensor],
    eligible: &[&Tensor],
    n: i64,
) -> (Vec<(&'static str, f64)>, Vec<Tensor>) {
    let mut parts = vec![];
    let (s, (flat_elig, count)) = timed(|| {
        let flat_elig = flat_cat(eligible, Some(Kind::Bool));
        let count = nonzero_counts(&[&flat_elig])[0];
        (flat_elig, count)
    });
    parts.push(("eligibility: cat to bool, count", s));
    let (s, flat) = timed(|| {
        let mut flat = flat_cat(scores, None);
        if count < flat.numel() as i64 {
            let _ = flat.masked_fill_(&flat_elig.logical_not(), f64::INFINITY);
        }
        flat
    });
    parts.push(("cat scores, +inf where ineligible", s));
    let (s, (kth, rank)) = timed(|| kth_smallest(&flat, n, SAMPLE));
    parts.push(("kth_smallest (sampled bounds, kthvalue between)", s));
    let (s, out) = timed(|| split_like(&smallest_n_at(&flat, kth, n, rank), scores));
    parts.push(("compare, split", s));
    (parts, out)
}

fn select(out: &Out, a: &SelectArgs) -> Result<()> {
    if a.shrink < 1 || a.reps == 0 || !(0.0..=1.0).contains(&a.fraction) {
        bail!("--shrink and --reps must be at least 1 and --fraction in [0, 1]");
    }
    tch::manual_seed(0);
    let shapes = vgg19_shapes(a.shrink);
    let scores: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::randn(s.as_slice(), (Kind::Float, Device::Cpu)).abs())
        .collect();
    // All eligible, as in the first round of IMP; masks are float 0/1 like `Mask`'s.
    let eligible: Vec<Tensor> = scores.iter().map(Tensor::ones_like).collect();
    let total: i64 = scores.iter().map(|t| t.numel() as i64).sum();
    let n = (a.fraction * total as f64).round() as i64;
    let s_refs: Vec<&Tensor> = scores.iter().collect();
    let e_refs: Vec<&Tensor> = eligible.iter().collect();

    // Warm-up, and the replicated parts must select what the library selects.
    let lib = select_smallest(&s_refs, &e_refs, n)?;
    let (_, mine) = select_parts(&s_refs, &e_refs, n);
    for (x, y) in lib.iter().zip(&mine) {
        if !x.equal(y) {
            bail!("the replicated select_smallest parts disagree with the library");
        }
    }
    let count: i64 = lib
        .iter()
        .map(|t| t.sum(Kind::Int64).int64_value(&[]))
        .sum();
    if count != n {
        bail!("select_smallest selected {count}, asked for {n}");
    }

    let (mut ours, mut idiom) = (vec![], vec![]);
    let mut parts: Vec<Vec<(&'static str, f64)>> = vec![];
    for _ in 0..a.reps {
        let (s, r) = timed(|| select_smallest(&s_refs, &e_refs, n));
        std::hint::black_box(r?);
        ours.push(s);
        // PyTorch's idiom written with tch: one concatenation, one kthvalue, a
        // threshold compare per tensor (not exact under ties).
        let (s, r) = timed(|| {
            let flat = Tensor::cat(
                &s_refs.iter().map(|t| t.flatten(0, -1)).collect::<Vec<_>>(),
                0,
            );
            let kth = flat.kthvalue(n, 0, false).0;
            s_refs.iter().map(|t| t.le_tensor(&kth)).collect::<Vec<_>>()
        });
        std::hint::black_box(r);
        idiom.push(s);
        parts.push(select_parts(&s_refs, &e_refs, n).0);
    }
    let note = format!(
        "{} reps, {total} weights in {} tensors (VGG-19 shapes / {}), n = {n}",
        a.reps,
        shapes.len(),
        a.shrink
    );
    out.emit("select", "select/ours".into(), "s", ours, note.clone());
    out.emit(
        "select",
        "select/kthvalue-threshold".into(),
        "s",
        idiom,
        note.clone(),
    );
    let names: Vec<&str> = parts[0].iter().map(|(n, _)| *n).collect();
    for (i, name) in names.iter().enumerate() {
        out.emit(
            "select",
            format!("select/ours/part/{name}"),
            "s",
            parts.iter().map(|p| p[i].1).collect(),
            "step of select_smallest (its public pieces), timed alone".into(),
        );
    }
    Ok(())
}

fn resnet_step(out: &Out, a: &ResnetArgs) -> Result<()> {
    if a.batch < 1 || a.steps == 0 || a.reps == 0 {
        bail!("--batch, --steps and --reps must be at least 1");
    }
    let mut model = build_model(ModelKind::ResNet20, &[3, 32, 32])?;
    if a.channels_last {
        model.to_channels_last();
    }
    let spec = optimizer_for(ModelKind::ResNet20)?;
    let lr = spec.lr();
    let mut opt = Optimizer::new(spec, &model.vs, None);
    let x = Tensor::randn([a.batch, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [a.batch], (Kind::Int64, Device::Cpu));
    let mut step = |parts: &mut Parts| {
        let t1 = Instant::now();
        let loss = model.forward(&x, true).cross_entropy_for_logits(&y);
        let t2 = Instant::now();
        opt.zero_grad();
        loss.backward();
        let t3 = Instant::now();
        opt.step(lr);
        let t4 = Instant::now();
        parts.forward += (t2 - t1).as_secs_f64();
        parts.backward += (t3 - t2).as_secs_f64();
        parts.optimizer += (t4 - t3).as_secs_f64();
        loss.double_value(&[])
    };
    let mut scratch = Parts::default();
    for _ in 0..a.warmup {
        step(&mut scratch);
    }
    let (mut times, mut parts) = (vec![], vec![]);
    for _ in 0..a.reps {
        let mut p = Parts::default();
        let t = Instant::now();
        for _ in 0..a.steps {
            let loss = step(&mut p);
            if !loss.is_finite() {
                bail!("ResNet-20 training diverged (loss {loss})");
            }
        }
        times.push(t.elapsed().as_secs_f64() / a.steps as f64);
        parts.push(p);
    }
    let note = format!(
        "{} reps of {} steps, batch {}, SGD momentum 0.9 wd 5e-4, random data",
        a.reps, a.steps, a.batch
    );
    out.emit("resnet", "resnet20/step".into(), "s/step", times, note);
    emit_parts(out, "resnet", "resnet20/step", &parts, a.steps, false);
    Ok(())
}

/// A field of `/proc/self/status` in MiB (`VmHWM`, `VmRSS`).
fn proc_status_mib(field: &str) -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status (Linux only)")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("cannot parse `{line}`"))?;
    Ok(kb / 1024.0)
}

/// One IMP round through the project's own code path: `train_phase` (masked Adam, the
/// DNR probe on the phase's last epoch), then global magnitude pruning of `rate` of the
/// surviving weights by `select_smallest`, rewinding to the initial weights, masking.
fn imp_memory(out: &Out, a: &ImpArgs) -> Result<()> {
    let data = load_mnist(&a.data)?;
    let model = build_model(a.model, &[1, 28, 28])?;
    let params = prunable(&model)?;
    let init = params.snapshot();
    let mut mask = Mask::dense(&params);
    let after_load = proc_status_mib("VmRSS")?;
    let peak_load = proc_status_mib("VmHWM")?;
    let cfg = ap_train::TrainConfig {
        optimizer: optimizer_for(a.model)?,
        schedule: Default::default(),
        batch_size: a.batch,
        iterations: a.steps,
        warmup_iterations: 0,
        augment: Default::default(),
        channels_last: false,
    };
    ap_train::train_phase(
        &model,
        &data.train,
        Some(&mask),
        &cfg,
        ap_train::PhaseStart::fresh(0),
        &mut ap_train::NoHook,
        |_| {},
    )?;
    let scores: Vec<Tensor> = params.tensors().iter().map(|t| t.abs()).collect();
    let refs: Vec<&Tensor> = scores.iter().collect();
    let n = (a.rate * mask.kept() as f64).floor() as i64;
    let selected = select_smallest(&refs, &mask.tensors(), n)?;
    mask.remove(&selected)?;
    params.copy_from(&init)?;
    mask.apply(&params)?;
    let peak = proc_status_mib("VmHWM")?;
    let note = format!(
        "{} steps of {} then prune {} of the weights; one process",
        a.steps, a.model, a.rate
    );
    out.emit("imp", "imp/peak".into(), "MiB", vec![peak], note);
    out.emit(
        "imp",
        "imp/after-load".into(),
        "MiB",
        vec![after_load],
        "VmRSS after loading MNIST and building the model".into(),
    );
    out.emit(
        "imp",
        "imp/peak-during-load".into(),
        "MiB",
        vec![peak_load],
        "VmHWM after loading MNIST and building the model".into(),
    );
    Ok(())
}

/// A pruned network to time: where its mask came from, the model (with the ticket's
/// weights) and its masks by name.
struct Ticket {
    label: String,
    density: f64,
    model: Model,
    masks: Vec<(String, Tensor)>,
}

/// The finished IMP runs of `grid` of `model` with AP `ap` in `store`, by final density,
/// in the grid's order (none when the grid file is missing, as in a test's directory).
fn store_tickets(
    store: &std::path::Path,
    grid: &std::path::Path,
    model: ModelKind,
    ap: bool,
) -> Result<Vec<(f64, PathBuf)>> {
    if !grid.is_file() {
        return Ok(vec![]);
    }
    let spec: ap_runs::GridSpec = ap_runs::spec::read_toml(grid)?;
    let mut found = vec![];
    for run in spec.expand(&grid.display().to_string())? {
        if run.model != model || run.method_name() != "imp" || run.ap.enabled != ap {
            continue;
        }
        let dir = ap_runs::RunDir::of(store, &run);
        if dir.state() != ap_runs::RunState::Done {
            continue;
        }
        if let Some(last) = dir.rounds()?.last() {
            found.push((last.density.density(), dir.path.clone()));
        }
    }
    Ok(found)
}

/// The tickets to time at `density`: the store's IMP ticket without and with AP nearest to
/// it (within 1.5×), or one synthetic mask when the store has none.
fn tickets(a: &InferArgs) -> Result<Vec<Ticket>> {
    let mut out = vec![];
    for ap in [false, true] {
        let nearest = store_tickets(&a.tickets, &a.grid, a.model, ap)?
            .into_iter()
            .filter(|(d, _)| d / a.density < 1.5 && a.density / d < 1.5)
            .min_by(|x, y| {
                (x.0 / a.density)
                    .ln()
                    .abs()
                    .total_cmp(&(y.0 / a.density).ln().abs())
            });
        if let Some((density, path)) = nearest {
            let opts = ap_runs::RunOptions::quiet(
                a.data
                    .data_dir
                    .clone()
                    .unwrap_or_else(ap_data::default_data_dir),
                Device::Cpu,
            );
            let run = ap_runs::runner::FinishedNetwork::load(&path, "benchmark", &opts)?;
            let masks = run.named_masks();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(Ticket {
                label: format!("{} ticket {name}", if ap { "IMP+AP" } else { "IMP" }),
                density,
                model: run.model,
                masks,
            });
        }
    }
    if out.is_empty() {
        let model = build_model(a.model, &[1, 28, 28])?;
        let params = prunable(&model)?;
        let mask = magnitude_mask(&params, a.density)?;
        let masks = mask
            .iter()
            .map(|(n, m)| (n.to_string(), m.shallow_clone()))
            .collect();
        out.push(Ticket {
            label: format!(
                "synthetic: global magnitude on the random initialisation (no finished IMP run of {} from {} in {})",
                a.model,
                a.grid.display(),
                a.tickets.display()
            ),
            density: a.density,
            model,
            masks,
        });
    }
    Ok(out)
}

/// Seconds per forward pass of `f`, `reps` samples of `iters` passes after one warm-up pass.
fn per_pass(iters: usize, reps: usize, f: &dyn Fn() -> Tensor) -> Vec<f64> {
    let _ = std::hint::black_box(f());
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                let _ = std::hint::black_box(f());
            }
            t.elapsed().as_secs_f64() / iters as f64
        })
        .collect()
}

fn infer(out: &Out, a: &InferArgs) -> Result<()> {
    if a.batch < 1 || a.reps == 0 || a.iters == 0 || !(a.density > 0.0 && a.density <= 1.0) {
        bail!("--batch, --iters and --reps must be at least 1 and --density in (0, 1]");
    }
    if !matches!(a.model, ModelKind::LeNet300_100 | ModelKind::LeNet5) {
        bail!(
            "--model {}: the inference case runs lenet300-100 or lenet5",
            a.model
        );
    }
    let input = [1, 28, 28];
    let x = Tensor::randn([a.batch, 1, 28, 28], (Kind::Float, Device::Cpu));
    let base = format!("infer/{}/d{}/b{}", a.model, a.density, a.batch);
    for (i, t) in tickets(a)?.into_iter().enumerate() {
        let masked = ap_compact::InferenceNet::from_model(&t.model, &t.masks, &input)?;
        let (compact, changes) = masked.compact();
        let csr = masked.with_csr_linears();
        let compact_csr = compact.with_csr_linears();
        // The variants compute the same logits (CSR and compaction up to rounding).
        let reference = masked.forward(&x);
        for (what, y) in [
            ("compact", compact.forward(&x)),
            ("csr", csr.forward(&x)),
            ("compact-csr", compact_csr.forward(&x)),
        ] {
            let diff = (&y - &reference).abs().max().double_value(&[]);
            if diff > 1e-3 {
                bail!(
                    "{what} differs from the masked network by {diff} on {}",
                    t.label
                );
            }
        }
        let prefix = if t.label.starts_with("IMP+AP") {
            format!("{base}/ap")
        } else {
            base.clone()
        };
        let units: Vec<String> = changes
            .layers
            .iter()
            .map(|l| format!("{} {}→{}", l.name, l.outputs[0], l.outputs[1]))
            .collect();
        let note = format!(
            "{} (density {:.4}); compaction: {}",
            t.label,
            t.density,
            units.join(", ")
        );
        if i == 0 {
            let dense = ap_compact::InferenceNet::from_model(&t.model, &[], &input)?;
            out.emit(
                "infer",
                format!("{base}/dense"),
                "s",
                per_pass(a.iters, a.reps, &|| dense.forward(&x)),
                format!("{} iters × {} reps, unpruned weights", a.iters, a.reps),
            );
        }
        let masked_t = per_pass(a.iters, a.reps, &|| masked.forward(&x));
        let compact_t = per_pass(a.iters, a.reps, &|| compact.forward(&x));
        let csr_t = per_pass(a.iters, a.reps, &|| csr.forward(&x));
        let compact_csr_t = per_pass(a.iters, a.reps, &|| compact_csr.forward(&x));
        let best: Vec<f64> = (0..a.reps)
            .map(|i| compact_t[i].min(csr_t[i]).min(compact_csr_t[i]))
            .collect();
        out.emit(
            "infer",
            format!("{prefix}/masked"),
            "s",
            masked_t,
            note.clone(),
        );
        out.emit(
            "infer",
            format!("{prefix}/compact"),
            "s",
            compact_t,
            note.clone(),
        );
        out.emit(
            "infer",
            format!("{prefix}/csr"),
            "s",
            csr_t,
            "linear layers as sparse CSR (to_sparse_csr, matmul), convolutions dense".into(),
        );
        out.emit(
            "infer",
            format!("{prefix}/compact-csr"),
            "s",
            compact_csr_t,
            "the compacted network with CSR linear layers".into(),
        );
        out.emit(
            "infer",
            format!("{prefix}/fastest-exact"),
            "s",
            best,
            "per sample, the fastest of compact, csr and compact-csr".into(),
        );
        emit_costs(out, &prefix, &t, &masked, &compact);
    }
    Ok(())
}

/// The ticket's density and the dense, compacted and non-zero MACs and parameters.
fn emit_costs(
    out: &Out,
    prefix: &str,
    t: &Ticket,
    masked: &ap_compact::InferenceNet,
    compact: &ap_compact::InferenceNet,
) {
    let (mc, cc) = (masked.cost(), compact.cost());
    out.emit(
        "infer",
        format!("{prefix}/density"),
        "fraction",
        vec![t.density],
        t.label.clone(),
    );
    for (what, v) in [
        ("macs/dense", mc.macs),
        ("macs/compact", cc.macs),
        ("macs/nonzero", mc.nonzero_macs),
        ("params/dense", mc.params),
        ("params/compact", cc.params),
        ("params/nonzero", mc.nonzero_params),
    ] {
        out.emit(
            "infer",
            format!("{prefix}/{what}"),
            "count",
            vec![v as f64],
            "per sample; nonzero: what a sparse kernel multiplies".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vgg19_has_20m_weights() {
        let total: i64 = vgg19_shapes(1)
            .iter()
            .map(|s| s.iter().product::<i64>())
            .sum();
        assert_eq!(total, 20_024_000);
    }
}
