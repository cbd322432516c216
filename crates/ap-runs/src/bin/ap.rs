//! `ap`: run pruning experiments from TOML specs.
//!
//! ```text
//! ap run SPEC.toml                     one run (skipped when done, resumed when partial)
//! ap reproduce [--profile P|--grid G]  every run of a grid, then summary.json, summary.csv,
//!                                      report.md and plots in results/<profile>/
//! ap report [--profile P|--grid G]     the report again, from the run store alone
//! ap sweep RUN_DIR                     one-shot pruning curve and knee of a finished run
//! ```

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use ap_runs::backend::local::EXIT_LOCKED;
use ap_runs::backend::{self, Backend, Outcome, RunSettings, SlurmResources};
use ap_runs::runner::{LogFn, Progress, ProgressFn};
use ap_runs::select::{select, Filter};
use ap_runs::spec::read_toml;
use ap_runs::summary::{finished_runs, write_grid_report};
use ap_runs::{execute, GridSpec, RunDir, RunError, RunOptions, RunSpec};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "ap",
    version,
    about = "Pruning experiments with and without AP (activate-while-pruning)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one spec file (resumes a partial run from its last checkpoint).
    Run {
        /// The run spec (TOML).
        spec: PathBuf,
        /// Print progress as JSON lines on stdout (used by `ap reproduce`).
        #[arg(long)]
        progress_json: bool,
        /// How many runs share the device with this one (recorded in provenance.json
        /// for the time estimates; `ap reproduce` passes its --jobs).
        #[arg(long, default_value_t = 1, hide = true)]
        packed_runs: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Run every run of a grid (resuming: finished runs are reused, partial ones continue
    /// from their last checkpoint), then write the report.
    Reproduce {
        #[command(flatten)]
        grid: GridArgs,
        /// Runs in parallel, each in its own process.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// List the runs, their state and an estimate of the time left; run nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        backend: BackendArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Where each run stands: done, running, queued, partial, pending or failed, from the
    /// run store and, for runs submitted with --backend slurm, Slurm's queue.
    Status {
        /// Without --profile or --grid: every run in the store.
        #[command(flatten)]
        grid: GridArgs,
        /// Run store directory.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
    },
    /// Rebuild the report of a grid from the run store alone (no training).
    Report {
        #[command(flatten)]
        grid: GridArgs,
        /// Run store directory.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
    },
    /// Essential sparsity of a finished run: its final network pruned one-shot by global
    /// magnitude at each sparsity, and to each N:M pattern, without retraining, evaluated
    /// on the test set; prints the tables and the knees of both series, writes sweep.json,
    /// sweep.md and sweep.svg.
    Sweep(SweepArgs),
    /// Writes a finished run's network for use outside this project (docs/export.md).
    /// `--format masked|compact`: plain dense layers that a few lines of PyTorch run (the
    /// masked network, or its exact compaction: dead units removed, constants folded,
    /// unread inputs dropped), and FILE.json describing the ops, input and costs.
    /// `--format semi-structured`: a 2:4 run's weights in the layout PyTorch's
    /// `to_sparse_semi_structured` takes (2-D, float16/bfloat16, padded to 32 × 64), the
    /// other tensors unchanged, and FILE.json describing the shapes.
    Export {
        /// The run's directory in the run store (finished: it has DONE).
        run_dir: PathBuf,
        /// What to write.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Element type of the 2:4 weights: f16 or bf16 (semi-structured only).
        #[arg(long, default_value = "f16")]
        dtype: String,
        /// Output file (default: RUN_DIR/FORMAT.safetensors).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Data directory (default: $AP_DATA_DIR, else the cache that `cargo xtask setup`
        /// fills): the input shape and classes come from the run's data set.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// With --format compact: also remove the units no training image activates
        /// (exact on the training set, approximate elsewhere; the test accuracy of the
        /// result is printed and recorded).
        #[arg(long)]
        drop_inactive: bool,
    },
}

/// `ap export`'s formats.
#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// The masked network as dense layers (pruned weights zero).
    Masked,
    /// The compacted network: the same outputs from fewer units.
    Compact,
    /// 2:4 weights for `torch.sparse.to_sparse_semi_structured`.
    SemiStructured,
}

/// `ap sweep`'s arguments.
#[derive(Args, Clone)]
struct SweepArgs {
    /// The run's directory in the run store (finished: it has DONE).
    run_dir: PathBuf,
    /// Sparsities in percent, comma-separated, increasing, each in [0, 100)
    /// (default: 0,10,…,80,85,90,92,94,95,96,97,98,99).
    #[arg(long)]
    sparsities: Option<String>,
    /// N:M patterns, comma-separated, in increasing sparsity 1 − N/M, or `none` for no N:M
    /// series (default: 7:8,3:4,5:8,2:4,3:8,1:4,1:8). A pattern point keeps, in every
    /// group of M consecutive weights along a layer's input dimension (rows = every
    /// dimension but the first), the N largest |w| of those the run kept; a layer whose
    /// rows are not a multiple of M stays as the run left it (listed in the report).
    #[arg(long)]
    patterns: Option<String>,
    /// The tolerance knee is the last sparsity within this many accuracy points of the
    /// first one's accuracy (for the N:M series: of the run's network, its first point).
    #[arg(long, default_value_t = 1.0)]
    tolerance: f64,
    /// Output directory (default: RUN_DIR/sweep).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    input: Input,
    /// libtorch intra-op threads.
    #[arg(long)]
    threads: Option<i32>,
}

/// Which grid, which slice of it, and where its report goes.
#[derive(Args, Clone)]
struct GridArgs {
    /// A profile: `smoke` (tests, < 2 min), `quick` (LeNet-300-100 on MNIST, 6 methods
    /// and IMP keeping 2:4, ± AP, and LeNet-5 on Fashion-MNIST, IMP and GMP ± AP; 3
    /// seeds, ≈ 28 min on 2 cores), `paper` (CIFAR; needs --data-dir and a GPU in practice). Reads
    /// grids/PROFILE.toml.
    #[arg(long, conflicts_with = "grid")]
    profile: Option<String>,
    /// A grid file (TOML) instead of a profile.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Only runs whose directory name contains this text (repeatable: any of them).
    #[arg(long)]
    only: Vec<String>,
    /// Only runs whose spec has this value, e.g. `model=conv2`, `method=imp`, `ap=true`,
    /// `seed=0`, `train.iterations=300` (repeatable: all of them).
    #[arg(long)]
    filter: Vec<Filter>,
    /// Where the report goes (default: results/GRID, GRID being the grid's name).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The default profile of `ap reproduce` and `cargo xtask reproduce`.
const DEFAULT_PROFILE: &str = "quick";

impl GridArgs {
    fn path(&self) -> PathBuf {
        match (&self.grid, &self.profile) {
            (Some(g), _) => g.clone(),
            (None, p) => {
                let name = p.as_deref().unwrap_or(DEFAULT_PROFILE);
                PathBuf::from("grids").join(format!("{name}.toml"))
            }
        }
    }

    /// The grid, its selected runs, and the report directory.
    fn load(&self) -> Result<(GridSpec, Vec<RunSpec>, PathBuf)> {
        let path = self.path();
        if !path.exists() {
            if let (None, Some(p)) = (&self.grid, &self.profile) {
                bail!(
                    "unknown profile `{p}`: {} does not exist (profiles: smoke, quick, paper; run from the repository root or pass --grid FILE)",
                    path.display()
                );
            }
        }
        let grid: GridSpec = read_toml(&path)?;
        let specs = grid.expand(&path.display().to_string())?;
        let specs = select(specs, &self.only, &self.filter)?;
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("results").join(&grid.name));
        Ok((grid, specs, out))
    }
}

/// Where a command reads its data and which device it computes on.
#[derive(Args, Clone)]
struct Input {
    /// Data directory (default: $AP_DATA_DIR, else the cache that `cargo xtask setup` fills).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

impl Input {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(ap_data::default_data_dir)
    }
}

#[derive(Args, Clone)]
struct Common {
    /// Run store directory.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    #[command(flatten)]
    input: Input,
    /// libtorch intra-op threads per process (default: cores / jobs).
    #[arg(long)]
    threads: Option<i32>,
    /// Print every epoch.
    #[arg(long)]
    verbose: bool,
    /// On CUDA, run bit-for-bit repeatably: cuDNN off (measured 43× slower for a ResNet-20
    /// epoch on an H200, see docs/performance.md). CPU runs are always repeatable.
    #[arg(long)]
    deterministic_cuda: bool,
}

impl Common {
    /// How each run of `ap reproduce` is started: this program with these arguments.
    fn run_settings(&self) -> Result<RunSettings> {
        Ok(RunSettings {
            ap_exe: std::env::current_exe().context("locating the ap executable")?,
            runs_dir: self.runs_dir.clone(),
            data_dir: self.input.data_dir(),
            device: self.input.device.clone(),
            threads: self.threads,
            verbose: self.verbose,
            deterministic_cuda: self.deterministic_cuda,
        })
    }
}

/// Where `ap reproduce` runs the grid's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// On this machine, `--jobs` processes at a time.
    Local,
    /// As one Slurm job array (`sbatch`), one task per run; returns once submitted.
    Slurm,
}

/// `ap reproduce`'s backend options (flattened into its arguments).
#[derive(Debug, Clone, Args)]
struct BackendArgs {
    /// Where the runs run: here, or on a Slurm cluster (submits and returns).
    #[arg(long, value_enum, default_value_t = BackendKind::Local)]
    backend: BackendKind,
    /// Slurm partition (default: the cluster's default partition).
    #[arg(long)]
    partition: Option<String>,
    /// GPUs per Slurm task (default: none).
    #[arg(long)]
    gpus_per_task: Option<u32>,
    /// Slurm time limit per task, e.g. 04:00:00 (default: the partition's).
    #[arg(long)]
    time: Option<String>,
    /// At most this many Slurm tasks at once (default: as many as Slurm allows).
    #[arg(long)]
    max_parallel: Option<usize>,
}

impl BackendArgs {
    /// The backend, with `jobs` runs at a time locally. Slurm options given with the local
    /// backend, where they would be ignored, are an error, as are invalid ones.
    fn backend(&self, jobs: usize) -> Result<Backend> {
        let resources = SlurmResources {
            partition: self.partition.clone(),
            gpus_per_task: self.gpus_per_task,
            time: self.time.clone(),
            max_parallel: self.max_parallel,
        };
        if self.backend == BackendKind::Local {
            for (given, flag) in [
                (self.partition.is_some(), "--partition"),
                (self.gpus_per_task.is_some(), "--gpus-per-task"),
                (self.time.is_some(), "--time"),
                (self.max_parallel.is_some(), "--max-parallel"),
            ] {
                if given {
                    bail!("{flag} applies to --backend slurm only; add --backend slurm or drop {flag}");
                }
            }
        }
        resources.validate()?;
        Ok(match self.backend {
            BackendKind::Local => Backend::Local { jobs: jobs.max(1) },
            BackendKind::Slurm => Backend::Slurm(resources),
        })
    }
}

fn main() {
    // cuBLAS repeats its results only with a fixed workspace, set before CUDA starts.
    if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run {
            spec,
            progress_json,
            packed_runs,
            common,
        } => run_one(&spec, progress_json, packed_runs, &common),
        Cmd::Reproduce {
            grid,
            jobs,
            dry_run,
            backend,
            common,
        } => {
            init_tracing(None);
            backend
                .backend(jobs)
                .and_then(|b| reproduce(&grid, b, dry_run, &common))
        }
        Cmd::Status { grid, runs_dir } => status(&grid, &runs_dir),
        Cmd::Report { grid, runs_dir } => {
            init_tracing(None);
            report(&grid, &runs_dir)
        }
        Cmd::Sweep(args) => {
            init_tracing(None);
            sweep(&args)
        }
        Cmd::Export {
            run_dir,
            format,
            dtype,
            out,
            data_dir,
            drop_inactive,
        } => {
            let data_dir = data_dir.unwrap_or_else(ap_data::default_data_dir);
            let network = match format {
                ExportFormat::SemiStructured => None,
                ExportFormat::Masked => Some(ap_runs::export::NetworkFormat::Masked),
                ExportFormat::Compact => Some(ap_runs::export::NetworkFormat::Compact),
            };
            match network {
                None => export(&run_dir, &dtype, out),
                Some(f) => export_network(&run_dir, f, out, &data_dir, drop_inactive),
            }
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(exit_code(&e));
    }
}

/// [`EXIT_LOCKED`] when another process holds the run (a [`RunError::Locked`] anywhere in
/// the error's chain), else 1.
fn exit_code(e: &anyhow::Error) -> i32 {
    let locked = e
        .chain()
        .any(|c| matches!(c.downcast_ref(), Some(RunError::Locked { .. })));
    if locked {
        EXIT_LOCKED
    } else {
        1
    }
}

/// Warnings to stderr (RUST_LOG overrides; colours only on a terminal), among them the
/// damage the run store finds and repairs; with `log`, everything from info up is also
/// appended to that file (the run's log.txt).
fn init_tracing(log: Option<&Path>) {
    use tracing_subscriber::prelude::*;
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        );
    let file = log.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
            .map(|f| {
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(Mutex::new(f))
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
            })
    });
    tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .init();
}

fn run_one(
    spec_path: &Path,
    progress_json: bool,
    packed_runs: usize,
    common: &Common,
) -> Result<()> {
    if let Some(t) = common.threads {
        tch::set_num_threads(t);
    }
    let s = RunSpec::read(spec_path)?;
    s.validate()
        .with_context(|| spec_path.display().to_string())?;
    let dir = RunDir::of(&common.runs_dir, &s);
    dir.init(&s)?;
    init_tracing(Some(&dir.path.join("log.txt")));
    let report: Option<ProgressFn> = progress_json.then(|| {
        Arc::new(|p: &Progress| {
            if let Ok(line) = serde_json::to_string(p) {
                println!("{line}");
            }
        }) as ProgressFn
    });
    ap_tensor::set_deterministic(common.deterministic_cuda);
    let opts = RunOptions {
        deterministic: common.deterministic_cuda,
        data_dir: common.input.data_dir(),
        device: ap_tensor::parse_device(&common.input.device)?,
        progress: !progress_json,
        verbose: common.verbose,
        log: Some(Arc::new(|line: &str| eprintln!("{line}")) as LogFn),
        report,
        packed_runs: packed_runs.max(1),
    };
    let records = execute(&s, &common.runs_dir, &opts)?;
    if !progress_json {
        let md = ap_report::markdown(
            &ap_runs::summarise(&[(s, records)]),
            &spec_path.display().to_string(),
        );
        println!("{md}");
    }
    Ok(())
}

/// `ap reproduce`: the grid's runs on the chosen backend, then (when they have all ended)
/// the report.
fn reproduce(args: &GridArgs, backend: Backend, dry_run: bool, common: &Common) -> Result<()> {
    let (grid, specs, out) = args.load()?;
    let opts = backend::Options {
        backend,
        run: common.run_settings()?,
        dry_run,
        live_progress: std::io::stderr().is_terminal(),
    };
    match backend::reproduce(&grid.name, &specs, &opts, &mut std::io::stderr())? {
        Outcome::DryRun(table) => print!("{table}"),
        Outcome::Submitted { job_id, message } => {
            eprintln!("{message}");
            if let Some(id) = job_id {
                println!("{id}");
            }
        }
        Outcome::Ended { failures } => {
            let (results, _) = finished_runs(&specs, &common.runs_dir)?;
            println!("{}", write_grid_report(&out, &grid, &results)?);
            eprintln!(
                "report: {} (with summary.json, summary.csv and plots)",
                out.join("report.md").display()
            );
            if !failures.is_empty() {
                bail!(
                    "{} of {} runs failed:\n  {}",
                    failures.len(),
                    specs.len(),
                    failures.join("\n  ")
                );
            }
        }
    }
    Ok(())
}

/// `ap status`: the runs of the grid, or every run in the store without one.
fn status(args: &GridArgs, runs_dir: &Path) -> Result<()> {
    let specs = match (&args.grid, &args.profile) {
        (None, None) if !args.only.is_empty() || !args.filter.is_empty() => {
            bail!("--only and --filter select runs of a grid: add --profile or --grid")
        }
        (None, None) => None,
        _ => Some(args.load()?.1),
    };
    let runs = ap_runs::status::collect(runs_dir, specs.as_deref())?;
    print!("{}", ap_runs::status::render(&runs));
    Ok(())
}

fn report(args: &GridArgs, runs_dir: &Path) -> Result<()> {
    let (grid, specs, out) = args.load()?;
    let (results, missing) = finished_runs(&specs, runs_dir)?;
    if results.is_empty() {
        bail!(
            "no finished run of grid `{}` in {}: run `ap reproduce` first (or pass the --runs-dir it used)",
            grid.name,
            runs_dir.display()
        );
    }
    println!("{}", write_grid_report(&out, &grid, &results)?);
    eprintln!(
        "report of {} finished runs ({missing} not finished yet): {}",
        results.len(),
        out.join("report.md").display()
    );
    Ok(())
}

/// `ap export --format masked|compact`: prints each layer's units and the costs.
fn export_network(
    run_dir: &Path,
    format: ap_runs::export::NetworkFormat,
    out: Option<PathBuf>,
    data_dir: &Path,
    drop_inactive: bool,
) -> Result<()> {
    use ap_runs::export::{export_network, json_path, NetworkFormat};
    let name = match format {
        NetworkFormat::Masked => "masked",
        NetworkFormat::Compact => "compact",
    };
    let out = out.unwrap_or_else(|| run_dir.join(format!("{name}.safetensors")));
    let e = export_network(run_dir, &out, format, data_dir, drop_inactive)?;
    for l in &e.layers {
        println!(
            "{}: outputs {} → {}, inputs {} → {}",
            l.name, l.outputs[0], l.outputs[1], l.inputs[0], l.inputs[1]
        );
    }
    let (c, m) = (e.cost, e.masked_cost);
    println!(
        "{name}: {} parameters ({} non-zero), {} multiply-adds per sample; masked network: {} parameters ({} non-zero), {} multiply-adds",
        c.params, c.nonzero_params, c.macs, m.params, m.nonzero_params, m.macs
    );
    eprintln!(
        "export: {} and {}",
        out.display(),
        json_path(&out).display()
    );
    Ok(())
}

/// `ap export --format semi-structured`: a 2:4 run's weights for sparse tensor cores.
fn export(run_dir: &Path, dtype: &str, out: Option<PathBuf>) -> Result<()> {
    use ap_runs::export::{export_semi_structured, json_path, ExportDtype};
    let out = out.unwrap_or_else(|| run_dir.join("semi-structured.safetensors"));
    let e = export_semi_structured(run_dir, &out, ExportDtype::parse(dtype)?)?;
    for l in &e.layers {
        println!(
            "{}: {:?} as {}×{} (padded {}×{}), {} kept",
            l.name, l.shape, l.rows_cols[0], l.rows_cols[1], l.padded[0], l.padded[1], l.kept
        );
    }
    for name in &e.dense_layers {
        println!("{name}: no groups of {} (written dense)", e.pattern);
    }
    eprintln!(
        "export: {} and {}",
        out.display(),
        json_path(&out).display()
    );
    Ok(())
}

fn sweep(args: &SweepArgs) -> Result<()> {
    use ap_runs::sweep::{parse_patterns, parse_sparsities, sweep_run, write_sweep, SweepOptions};
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        bail!(
            "--tolerance {}: give accuracy points ≥ 0, e.g. --tolerance 1.0",
            args.tolerance
        );
    }
    let sparsities = match &args.sparsities {
        Some(text) => parse_sparsities(text)?,
        None => ap_eval::sweep::DEFAULT_SPARSITIES.to_vec(),
    };
    let patterns = match &args.patterns {
        Some(text) => parse_patterns(text)?,
        None => ap_eval::sweep::DEFAULT_PATTERNS.to_vec(),
    };
    let opts = SweepOptions {
        sparsities,
        patterns,
        tolerance_points: args.tolerance,
        data_dir: args.input.data_dir(),
        device: ap_tensor::parse_device(&args.input.device)?,
    };
    let report = sweep_run(&args.run_dir, &opts)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run_dir.join("sweep"));
    println!("{}", write_sweep(&report, &out)?);
    eprintln!(
        "sweep: {} (with sweep.json and sweep.svg)",
        out.join("sweep.md").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_run_exits_with_its_own_code_whatever_the_message() {
        let locked = anyhow::Error::from(RunError::Locked {
            dir: "runs/r".into(),
            holder: "12 host".into(),
        })
        .context("running r");
        assert_eq!(exit_code(&locked), EXIT_LOCKED);
        // The same words without the variant are an ordinary failure.
        let text = anyhow::anyhow!("runs/r is being run by process 12 host");
        assert_eq!(exit_code(&text), 1);
        let other = anyhow::Error::from(RunError::LockContended {
            path: "runs/r/LOCK".into(),
        });
        assert_eq!(exit_code(&other), 1);
    }
}
