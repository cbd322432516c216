//! Runs one spec into its run directory, or returns the stored result when it is done.

use std::path::Path;

use anyhow::{Context, Result};
use ap_data::{Dataset, DatasetKind};
use ap_prune::{run_method, PruneError, RoundRecord, RunSeeds};
use ap_tensor::{derive_seed, seed_torch};
use ap_train::TrainError;
use tch::Device;

use crate::spec::RunSpec;
use crate::store::{write_atomic, RunDir, RunState};

/// Where a run reads its data and how it reports.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Directory holding `mnist/`, `fashion-mnist/`.
    pub data_dir: std::path::PathBuf,
    /// Device to run on.
    pub device: Device,
    /// Print a line per round (and per epoch when `verbose`).
    pub progress: bool,
    /// Print every epoch too.
    pub verbose: bool,
}

/// Runs `spec` unless its directory says DONE; returns its round records either way.
/// A partial run (interrupted before DONE) starts again from round 0.
pub fn execute(spec: &RunSpec, runs_dir: &Path, opts: &RunOptions) -> Result<Vec<RoundRecord>> {
    spec.validate()?;
    let dir = RunDir::of(runs_dir, spec);
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
    write_atomic(
        &dir.path.join("provenance.json"),
        provenance(opts.device).to_string().as_bytes(),
    )?;
    let kind = DatasetKind::from_name(&spec.dataset)?;
    let data = Dataset::load(kind, &opts.data_dir, opts.device)
        .with_context(|| format!("loading {}", spec.dataset))?;
    seed_torch(spec.seed, "init");
    let input: Vec<i64> = data.train.images.size()[1..].to_vec();
    let model = ap_models::build(&spec.model, &input, data.num_classes() as i64, opts.device)?;
    ap_models::initialise(&model, spec.init);
    let label = spec.dir_name();
    let mut records: Vec<RoundRecord> = vec![];
    let on_round = |r: &RoundRecord, mask: &ap_mask::Mask| -> Result<(), ap_prune::PruneError> {
        records.push(r.clone());
        let persisted = dir.write_rounds(&records).and_then(|_| {
            mask.save(&dir.path.join("mask.safetensors"))
                .map_err(Into::into)
        });
        if let Err(e) = persisted {
            return Err(ap_prune::PruneError::Config(format!(
                "cannot write run files: {e:#}"
            )));
        }
        if opts.progress {
            eprintln!(
                "[{label}] round {:>2} density {:>6.2}% test acc {:>6.2}% dyn DNR {:.3} static DNR {:.3} ({:.1}s)",
                r.round,
                100.0 * r.density.density(),
                100.0 * r.test.accuracy,
                r.test.dnr.dynamic,
                r.test.dnr.static_,
                r.seconds
            );
        }
        Ok(())
    };
    let on_epoch = |round: usize, e: &ap_train::EpochStats| {
        if opts.verbose {
            eprintln!(
                "[{label}] round {round} epoch {} it {} loss {:.4} lr {:.2e}",
                e.epoch, e.iteration, e.train_loss, e.lr
            );
        }
    };
    let seeds = RunSeeds {
        data: derive_seed(spec.seed, "data"),
        prune: derive_seed(spec.seed, "prune"),
    };
    let ap = spec.ap_config();
    let result = run_method(
        &model,
        &data,
        &spec.train,
        &spec.prune,
        ap.as_ref(),
        seeds,
        spec.eval_batch_size,
        on_round,
        on_epoch,
    );
    if let Err(e @ PruneError::Train(TrainError::Diverged { .. })) = &result {
        // A property of the spec, not of the machine: record it so reruns skip it.
        write_atomic(&dir.path.join("FAILED"), format!("{e}\n").as_bytes())?;
    }
    result?;
    dir.mark_done()?;
    dir.rounds()
}

fn provenance(device: Device) -> serde_json::Value {
    let git = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    serde_json::json!({
        "ap_runs_version": env!("CARGO_PKG_VERSION"),
        "tch_version": "0.24.0",
        "git_revision": git,
        "device": format!("{device:?}"),
        "torch_threads": tch::get_num_threads(),
        "started_unix_s": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    })
}
