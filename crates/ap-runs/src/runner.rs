//! Runs one spec into its run directory, or returns the stored result when it is done.

use std::path::Path;

use anyhow::{Context, Result};
use ap_data::{Dataset, DatasetKind};
use ap_prune::{run_method_from, PruneError, Resume, RoundRecord, RunSeeds, RunSetup};
use ap_tensor::{derive_seed, seed_torch};
use ap_train::TrainError;
use tch::Device;

use crate::spec::RunSpec;
use crate::store::{write_atomic, RunDir, RunState};
use crate::testpoint;

/// Where a run reads its data and how it reports.
#[derive(Clone)]
pub struct RunOptions {
    /// Directory holding `mnist/`, `fashion-mnist/`.
    pub data_dir: std::path::PathBuf,
    /// Device to run on.
    pub device: Device,
    /// Send a line per round (and the resume point) to `log`.
    pub progress: bool,
    /// Send a line per epoch to `log` too.
    pub verbose: bool,
    /// Whether deterministic mode is on ([`ap_tensor::set_deterministic`]); recorded in
    /// provenance.json.
    pub deterministic: bool,
    /// Where the lines of `progress` and `verbose` go, each prefixed with `[<run>] `
    /// (the `ap` program prints them on stderr); none: only to the run's log.
    pub log: Option<LogFn>,
    /// Called after every epoch and round (e.g. to feed a progress display).
    pub report: Option<ProgressFn>,
    /// How many runs share the device with this one (`ap reproduce --jobs`): recorded
    /// in provenance.json, so time estimates know what the round times were measured
    /// under.
    pub packed_runs: usize,
}

impl RunOptions {
    /// Options that print and report nothing, not deterministic: for a library caller or
    /// a test that reads the records it gets back.
    pub fn quiet(data_dir: std::path::PathBuf, device: Device) -> RunOptions {
        RunOptions {
            data_dir,
            device,
            progress: false,
            verbose: false,
            deterministic: false,
            log: None,
            report: None,
            packed_runs: 1,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("data_dir", &self.data_dir)
            .field("device", &self.device)
            .field("progress", &self.progress)
            .field("verbose", &self.verbose)
            .field("deterministic", &self.deterministic)
            .finish_non_exhaustive()
    }
}

/// A sink for human-readable progress lines, shared with the threads that train.
pub type LogFn = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// A progress callback, shared with the threads that train.
pub type ProgressFn = std::sync::Arc<dyn Fn(&Progress) + Send + Sync>;

/// What a run reports as it goes (one JSON line each on `ap run --progress-json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// An epoch finished.
    Epoch {
        /// Round (training phase).
        round: usize,
        /// Epoch within the phase.
        epoch: u64,
        /// Mean training loss of the epoch.
        loss: f64,
    },
    /// A round finished and was saved.
    Round {
        /// Round number.
        round: usize,
        /// Density after the round.
        density: f64,
        /// Test accuracy after the round.
        accuracy: f64,
    },
}

/// glibc malloc settings for the processes that train: without them glibc returns the
/// large, short-lived tensors of each step to the kernel and takes them back, ~36,000 page
/// faults per ResNet-20 step (ap-bench measured a ResNet-20 step 0.56 → 0.47 s and a Conv-2
/// epoch 190 → 154 s with them). `ap reproduce` and Slurm tasks pass them to each run.
pub const MALLOC_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=268435456";

/// Checkpoints kept while a run goes on: the newest, and one before it in case the newest
/// turns out corrupt.
const CHECKPOINTS_KEPT: usize = 2;

/// Runs `spec` unless its directory says DONE; returns its round records either way.
/// A partial run (interrupted before DONE) continues from its last checkpoint that
/// verifies, and gives the same records as an uninterrupted run. When another live process
/// holds the run, the error is [`crate::store::RunError::Locked`].
pub fn execute(spec: &RunSpec, runs_dir: &Path, opts: &RunOptions) -> Result<Vec<RoundRecord>> {
    spec.validate()?;
    let dir = RunDir::of(runs_dir, spec);
    dir.reopen_if_corrupt();
    match dir.state() {
        RunState::Done => return dir.rounds(),
        RunState::Failed => anyhow::bail!(
            "{}: {}",
            dir.path.display(),
            dir.failure().unwrap_or_default().trim()
        ),
        _ => {}
    }
    dir.init(spec)?;
    let _lock = dir.lock()?;
    // Another process may have finished it while we waited for the lock.
    if dir.state() == RunState::Done {
        return dir.rounds();
    }
    tracing::info!("started by process {}", std::process::id());
    // Holding the lock, any temporary file here was left by a killed process.
    dir.remove_temporaries();
    let resume = dir.resume_point()?;
    write_atomic(
        &dir.path.join("provenance.json"),
        provenance(opts.device, opts.deterministic, opts.packed_runs)
            .to_string()
            .as_bytes(),
    )?;
    let (data, model) = load(spec, opts)?;
    let recorder = Recorder {
        dir: &dir,
        label: spec.dir_name(),
        opts,
    };
    let mut records = recorder.resumed_records(resume.as_ref())?;
    let seeds = RunSeeds {
        data: derive_seed(spec.seed, "data"),
        prune: derive_seed(spec.seed, "prune"),
    };
    let ap = spec.ap_config();
    let setup = RunSetup {
        ap: ap.as_ref(),
        seeds,
        eval_batch: spec.eval_batch_size,
        pattern: spec.pattern,
        ..RunSetup::new(&model, &data, &spec.train, &spec.prune)
    };
    let result = run_method_from(
        &setup,
        resume,
        |r, mask, ckpt| recorder.round(&mut records, r, mask, ckpt),
        |round, e| recorder.epoch(round, e),
    );
    if let Err(e @ PruneError::Train(TrainError::Diverged { .. })) = &result {
        // A property of the spec, not of the machine: record it so reruns skip it.
        write_atomic(&dir.path.join("FAILED"), format!("{e}\n").as_bytes())?;
    }
    result?;
    dir.mark_done()?;
    testpoint::reached(&recorder.label, testpoint::Point::AfterDone);
    // The newest checkpoint stays: it is the final pruned network and its mask.
    dir.keep_checkpoints(1);
    tracing::info!("{} done", recorder.label);
    dir.rounds()
}

/// The run's data set on its device and its freshly initialised model.
pub(crate) fn load(spec: &RunSpec, opts: &RunOptions) -> Result<(Dataset, ap_models::Model)> {
    let kind = DatasetKind::from_name(&spec.dataset)?;
    // Padded at load, so the model is built for (and every step sees) the padded images.
    let pad = spec.pad_pixels()?;
    let data = Dataset::load(kind, &opts.data_dir, opts.device)
        .and_then(|d| d.padded(pad))
        .with_context(|| format!("loading {}", spec.dataset))?;
    spec.check_batch_size(data.train.len())?;
    seed_torch(spec.seed, "init");
    let input: Vec<i64> = data.train.images.size()[1..].to_vec();
    let mut model = ap_models::build(spec.model, &input, data.num_classes() as i64, opts.device)?;
    ap_models::initialise(&model, spec.init);
    if spec.train.channels_last {
        model.to_channels_last();
    }
    Ok((data, model))
}

/// A finished run's final network, as `ap sweep` and `ap export` read it.
pub struct FinishedNetwork {
    /// The run's directory.
    pub dir: RunDir,
    /// Its spec.
    pub spec: RunSpec,
    /// Its data set (padded as the run saw it).
    pub data: Dataset,
    /// The model with the final checkpoint's weights (and batch-norm statistics).
    pub model: ap_models::Model,
    /// The final mask.
    pub mask: ap_mask::Mask,
    /// The round records.
    pub records: Vec<ap_prune::RoundRecord>,
}

impl FinishedNetwork {
    /// Loads the finished run in `run_dir` onto `opts.device`; errors name the directory
    /// and the fix (not a run, not finished: `verb` names the command for the message).
    pub fn load(run_dir: &Path, verb: &str, opts: &RunOptions) -> Result<FinishedNetwork> {
        let (dir, spec) = RunDir::finished(run_dir, verb)?;
        let records = dir.rounds()?;
        let (data, model) = load(&spec, opts)?;
        let everything = ap_tensor::NamedParams::all_of(&model.vs);
        dir.final_checkpoint()?
            .restore("model", &everything)
            .with_context(|| format!("restoring the final network of {}", run_dir.display()))?;
        let prunable = ap_tensor::NamedParams::from_var_store(&model.vs, &model.net.prunable())?;
        let mask = ap_mask::Mask::load(&run_dir.join("mask.safetensors"), &prunable)?;
        Ok(FinishedNetwork {
            dir,
            spec,
            data,
            model,
            mask,
            records,
        })
    }

    /// The final masks by prunable parameter name.
    pub fn named_masks(&self) -> Vec<(String, tch::Tensor)> {
        self.mask
            .iter()
            .map(|(n, m)| (n.to_string(), m.shallow_clone()))
            .collect()
    }
}

/// Saves and reports what a running run produces: its rounds (records, mask,
/// checkpoint) and its epochs.
struct Recorder<'a> {
    dir: &'a RunDir,
    /// The run directory's name, prefixed to the lines it reports.
    label: String,
    opts: &'a RunOptions,
}

impl Recorder<'_> {
    /// `line` into the run's log, and to [`RunOptions::log`] when `show`.
    fn say(&self, line: &str, show: bool) {
        tracing::info!("{line}");
        if let (true, Some(log)) = (show, &self.opts.log) {
            log(&format!("[{}] {line}", self.label));
        }
    }

    /// The records a resumed run starts from (none for a fresh run); the checkpoint's
    /// copy is the verified one, so it also repairs rounds.jsonl.
    fn resumed_records(&self, resume: Option<&Resume>) -> Result<Vec<RoundRecord>> {
        let Some(r) = resume else {
            return Ok(vec![]);
        };
        let line = format!(
            "resuming {} after round {} from its checkpoint",
            self.label,
            r.records.len() - 1
        );
        tracing::info!("{line}");
        if let (true, Some(log)) = (self.opts.progress, &self.opts.log) {
            log(&format!(
                "[{}] resuming after round {} from its checkpoint",
                self.label,
                r.records.len() - 1
            ));
        }
        self.dir.write_rounds(&r.records)?;
        Ok(r.records.clone())
    }

    /// A round finished: appends its record and persists records, mask and checkpoint (the
    /// checkpoint last: it carries its own copy of the records), then reports the round.
    fn round(
        &self,
        records: &mut Vec<RoundRecord>,
        r: &RoundRecord,
        mask: &ap_mask::Mask,
        ckpt: &ap_prune::Checkpoint,
    ) -> Result<(), PruneError> {
        records.push(r.clone());
        let persisted = self
            .dir
            .write_rounds(records)
            .and_then(|_| {
                mask.save(&self.dir.path.join("mask.safetensors"))
                    .map_err(Into::into)
            })
            .and_then(|_| self.dir.write_checkpoint(records, ckpt, CHECKPOINTS_KEPT));
        if let Err(e) = persisted {
            return Err(PruneError::OnRound(
                format!("cannot write run files: {e:#}").into(),
            ));
        }
        testpoint::reached(&self.label, testpoint::Point::AfterCheckpoint(r.round));
        let line = format!(
            "round {:>2} density {:>6.2}% test acc {:>6.2}% dyn DNR {:.3} static DNR {:.3} ({:.1}s)",
            r.round,
            100.0 * r.density.density(),
            100.0 * r.test.accuracy,
            r.test.dnr.dynamic,
            r.test.dnr.static_,
            r.seconds
        );
        self.say(&line, self.opts.progress);
        if let Some(report) = &self.opts.report {
            report(&Progress::Round {
                round: r.round,
                density: r.density.density(),
                accuracy: r.test.accuracy,
            });
        }
        Ok(())
    }

    /// An epoch of `round` finished.
    fn epoch(&self, round: usize, e: &ap_train::EpochStats) {
        let line = format!(
            "round {round} epoch {} it {} loss {:.4} lr {:.2e}",
            e.epoch, e.iteration, e.train_loss, e.lr
        );
        self.say(&line, self.opts.verbose);
        testpoint::reached(
            &self.label,
            testpoint::Point::AfterEpoch {
                round,
                epoch: e.epoch,
            },
        );
        if let Some(report) = &self.opts.report {
            report(&Progress::Epoch {
                round,
                epoch: e.epoch,
                loss: e.train_loss,
            });
        }
    }
}

fn provenance(device: Device, deterministic: bool, packed_runs: usize) -> serde_json::Value {
    let git = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    serde_json::json!({
        "ap_runs_version": env!("CARGO_PKG_VERSION"),
        "tch_version": "0.24.0",
        "libtorch": libtorch(),
        "git_revision": git,
        "device": format!("{device:?}"),
        "deterministic": deterministic,
        "packed_runs": packed_runs,
        "torch_threads": tch::get_num_threads(),
        "cpu": cpu(),
        "gpu": gpu(device),
        "started_unix_s": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    })
}

/// The CPU model and the vector instruction sets that decide libtorch's kernels (results
/// are bit-identical only on machines that agree here).
fn cpu() -> serde_json::Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let isa: Vec<&str> = [
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "amx_tile",
    ]
    .into_iter()
    .filter(|f| flags.split_whitespace().any(|x| x == *f))
    .collect();
    serde_json::json!({
        "model": field("model name"),
        "isa": isa,
        "arch": std::env::consts::ARCH,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    })
}

/// The GPU model on CUDA runs (from nvidia-smi), else null.
fn gpu(device: Device) -> serde_json::Value {
    let Device::Cuda(i) = device else {
        return serde_json::Value::Null;
    };
    std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name",
            "--format=csv,noheader",
            &format!("--id={i}"),
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| serde_json::Value::String(String::from_utf8_lossy(&o.stdout).trim().to_string()))
        .unwrap_or(serde_json::Value::Null)
}

/// The libtorch this process loaded (from /proc/self/maps) and its version (from the
/// `version.py` of the Python package it comes from, when it is one).
fn libtorch() -> serde_json::Value {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let Some(lib) = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .map(std::path::PathBuf::from)
    else {
        return serde_json::Value::Null;
    };
    let dir = lib.parent().and_then(|d| d.parent());
    let version = dir
        .and_then(|d| std::fs::read_to_string(d.join("version.py")).ok())
        .and_then(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        });
    serde_json::json!({ "path": dir.map(|d| d.display().to_string()), "version": version })
}
