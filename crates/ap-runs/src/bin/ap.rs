//! `ap`: run pruning experiments from TOML specs.
//!
//! ```text
//! ap run SPEC.toml                     one run (skipped when done, resumed when partial)
//! ap reproduce [--profile P|--grid G]  every run of a grid, then summary.json, summary.csv,
//!                                      report.md and plots in results/<profile>/
//! ap report [--profile P|--grid G]     the report again, from the run store alone
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ap_runs::estimate::{human, Estimator};
use ap_runs::progress::Board;
use ap_runs::runner::{Progress, ProgressFn};
use ap_runs::select::{select, Filter};
use ap_runs::spec::read_toml;
use ap_runs::{execute, write_report, GridSpec, RunDir, RunOptions, RunSpec, RunState};
use clap::{Args, Parser, Subcommand};

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
        backend: ap_runs::slurm::BackendArgs,
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
}

/// Which grid, which slice of it, and where its report goes.
#[derive(Args, Clone)]
struct GridArgs {
    /// A profile: `smoke` (tests, < 2 min), `quick` (LeNet-300-100 on MNIST, 5 methods
    /// ± AP, 3 seeds, ≈ 20 min on 2 cores), `paper` (CIFAR; needs --data-dir and a GPU in
    /// practice). Reads grids/<profile>.toml.
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
    /// Where the report goes (default: results/<grid name>).
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

#[derive(Args, Clone)]
struct Common {
    /// Run store directory.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Data directory (default: $AP_DATA_DIR, else the cache that `cargo xtask setup` fills).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
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
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(ap_data::default_data_dir)
    }
}

/// Exit code of `ap run` when another live process holds the run's lock.
const EXIT_BUSY: i32 = 3;

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
            common,
        } => run_one(&spec, progress_json, &common),
        Cmd::Reproduce {
            grid,
            jobs,
            dry_run,
            backend,
            common,
        } => {
            init_tracing(None);
            backend
                .validate()
                .and_then(|_| reproduce(&grid, jobs.max(1), dry_run, &backend, &common))
        }
        Cmd::Status { grid, runs_dir } => status(&grid, &runs_dir),
        Cmd::Report { grid, runs_dir } => {
            init_tracing(None);
            report(&grid, &runs_dir)
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        let busy = e
            .chain()
            .any(|c| c.to_string().contains("is being run by process"));
        std::process::exit(if busy { EXIT_BUSY } else { 1 });
    }
}

/// Warnings to stderr (RUST_LOG overrides); with `log`, everything from info up is also
/// appended to that file (the run's log.txt).
fn init_tracing(log: Option<&Path>) {
    use tracing_subscriber::prelude::*;
    let stderr = tracing_subscriber::fmt::layer()
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

fn run_one(spec_path: &Path, progress_json: bool, common: &Common) -> Result<()> {
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
        data_dir: common.data_dir(),
        device: ap_tensor::parse_device(&common.device)?,
        progress: !progress_json,
        verbose: common.verbose,
        report,
    };
    let records = execute(&s, &common.runs_dir, &opts)?;
    if !progress_json {
        let md = ap_runs::report::markdown(
            &ap_runs::summarise(&[(s, records)]),
            &spec_path.display().to_string(),
        );
        println!("{md}");
    }
    Ok(())
}

fn reproduce(
    args: &GridArgs,
    jobs: usize,
    dry_run: bool,
    backend: &ap_runs::slurm::BackendArgs,
    common: &Common,
) -> Result<()> {
    let (grid, specs, out) = args.load()?;
    // A dry run changes nothing (a damaged DONE already counts as partial in `state`).
    for s in specs.iter().filter(|_| !dry_run) {
        let dir = RunDir::of(&common.runs_dir, s);
        dir.reopen_if_corrupt();
        // What killed processes left: temporaries, and locks of finished runs.
        dir.remove_temporaries();
        dir.remove_stale_lock();
    }
    let states: Vec<RunState> = specs
        .iter()
        .map(|s| RunDir::of(&common.runs_dir, s).state())
        .collect();
    let count = |st: RunState| states.iter().filter(|&&s| s == st).count();
    eprintln!(
        "grid `{}`: {} runs ({} done, {} partial, {} pending, {} failed) in {}",
        grid.name,
        specs.len(),
        count(RunState::Done),
        count(RunState::Partial),
        count(RunState::Pending),
        count(RunState::Failed),
        common.runs_dir.display()
    );
    let estimator = Estimator::from_store(&common.runs_dir, &specs);
    let todo: Vec<(&RunSpec, f64)> = specs
        .iter()
        .zip(&states)
        .filter(|(_, &st)| st == RunState::Pending || st == RunState::Partial)
        .map(|(s, _)| {
            let finished = RunDir::of(&common.runs_dir, s)
                .resume_point_rounds()
                .unwrap_or(0);
            (s, estimator.seconds_left(s, finished))
        })
        .collect();
    let work: f64 = todo.iter().map(|(_, w)| w).sum();
    if dry_run {
        println!("{:<8} {:>10}  run", "state", "estimate");
        for (s, st) in specs.iter().zip(&states) {
            let est = todo
                .iter()
                .find(|(t, _)| t.key() == s.key())
                .map_or("—".to_string(), |(_, w)| human(*w));
            println!(
                "{:<8} {est:>10}  {}",
                format!("{st:?}").to_lowercase(),
                s.dir_name()
            );
        }
        println!(
            "estimated time left: {} with --jobs {jobs} (from finished runs in the store where there are any, else from docs/performance.md's CPU figures)",
            human(work / jobs.min(todo.len()).max(1) as f64)
        );
        return Ok(());
    }
    for (s, st) in specs.iter().zip(&states) {
        if *st == RunState::Failed {
            let dir = RunDir::of(&common.runs_dir, s);
            eprintln!(
                "skipping failed run {}: {} (delete its FAILED file to retry)",
                s.dir_name(),
                dir.failure().unwrap_or_default().trim()
            );
        }
    }
    if backend.backend == ap_runs::slurm::Backend::Slurm {
        let report_now = ap_runs::slurm::reproduce(
            backend,
            &grid.name,
            &specs,
            &common.runs_dir,
            &common.data_dir(),
            &common.device,
            common.threads,
            common.verbose,
        )?;
        if !report_now {
            return Ok(());
        }
    }
    let failures = run_all(&todo, jobs, work, common)?;
    let (results, _) = finished_runs(&specs, &common.runs_dir)?;
    write_grid_report(&out, &grid, &results)?;
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
    Ok(())
}

/// Runs `todo` with `jobs` worker processes at a time; returns the failures. A run that
/// another process (a concurrent `ap reproduce`) holds is waited for, not run twice.
fn run_all(
    todo: &[(&RunSpec, f64)],
    jobs: usize,
    work: f64,
    common: &Common,
) -> Result<Vec<String>> {
    if todo.is_empty() {
        return Ok(vec![]);
    }
    // Threads per run follow the requested --jobs, not how many runs are left, so a
    // rerun of one run uses the same thread count (and gives the same numbers on CPU).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    let threads = common.threads.unwrap_or((cores / jobs as i32).max(1));
    let workers = jobs.min(todo.len());
    let exe = std::env::current_exe().context("locating the ap executable")?;
    let board = Mutex::new(Board::new(todo.len(), work, workers));
    let failures = Mutex::new(vec![]);
    let busy = Mutex::new(vec![]);
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for slot in 0..workers {
            let (board, failures, busy, next, exe) = (&board, &failures, &busy, &next, &exe);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(s, w)) = todo.get(i) else { break };
                board.lock().unwrap().start(slot, &s.dir_name());
                match run_child(exe, s, common, threads, |p| {
                    board.lock().unwrap().update(slot, p)
                }) {
                    Ok(ChildEnd::Finished) => board.lock().unwrap().finish(slot, true, w, ""),
                    Ok(ChildEnd::Busy) => {
                        busy.lock().unwrap().push((s, w));
                        board.lock().unwrap().finish(
                            slot,
                            true,
                            w,
                            "being run by another process; waiting for it",
                        )
                    }
                    Err(e) => {
                        board
                            .lock()
                            .unwrap()
                            .finish(slot, false, w, &format!("{e:#}"));
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {e:#}", s.dir_name()));
                    }
                }
            });
        }
    });
    // Runs another process held: wait until it lets go; if it did not finish them (it was
    // killed), run them here.
    for (s, _) in busy.into_inner().unwrap() {
        let dir = RunDir::of(&common.runs_dir, s);
        eprintln!(
            "waiting for {} (another process is running it)",
            s.dir_name()
        );
        loop {
            match dir.lock() {
                Ok(lock) => {
                    drop(lock);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
            }
        }
        if dir.state() != RunState::Done {
            if let Err(e) = run_child(&exe, s, common, threads, |_| {}) {
                failures
                    .lock()
                    .unwrap()
                    .push(format!("{}: {e:#}", s.dir_name()));
            }
        }
    }
    board.lock().unwrap().close();
    eprintln!(
        "ran {} runs in {}",
        todo.len(),
        human(started.elapsed().as_secs_f64())
    );
    Ok(failures.into_inner().unwrap())
}

enum ChildEnd {
    Finished,
    Busy,
}

/// Runs one spec in a child `ap run` process with `threads` libtorch threads, passing its
/// progress events to `on_progress`. Its stderr (warnings, errors) passes through.
fn run_child(
    exe: &Path,
    spec: &RunSpec,
    common: &Common,
    threads: i32,
    mut on_progress: impl FnMut(&Progress),
) -> Result<ChildEnd> {
    let dir = RunDir::of(&common.runs_dir, spec);
    dir.init(spec)?;
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg(dir.path.join("spec.toml"))
        .arg("--progress-json");
    cmd.arg("--runs-dir")
        .arg(&common.runs_dir)
        .arg("--data-dir")
        .arg(common.data_dir());
    cmd.arg("--device")
        .arg(&common.device)
        .arg("--threads")
        .arg(threads.to_string());
    if common.verbose {
        cmd.arg("--verbose");
    }
    if common.deterministic_cuda {
        cmd.arg("--deterministic-cuda");
    }
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        cmd.env("GLIBC_TUNABLES", ap_runs::runner::MALLOC_TUNABLES);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("starting `ap run`")?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(p) = serde_json::from_str::<Progress>(&line) {
                on_progress(&p);
            }
        }
    }
    let status = child.wait().context("waiting for `ap run`")?;
    match status.code() {
        Some(0) => Ok(ChildEnd::Finished),
        Some(EXIT_BUSY) => Ok(ChildEnd::Busy),
        _ => bail!(
            "`ap run` exited with {status} (see {})",
            dir.path.join("log.txt").display()
        ),
    }
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
    write_grid_report(&out, &grid, &results)?;
    eprintln!(
        "report of {} finished runs ({missing} not finished yet): {}",
        results.len(),
        out.join("report.md").display()
    );
    Ok(())
}

/// A finished run and its records.
type Finished = (RunSpec, Vec<ap_prune::RoundRecord>);

/// The finished runs among `specs` with their records, and how many are not finished.
fn finished_runs(specs: &[RunSpec], runs_dir: &Path) -> Result<(Vec<Finished>, usize)> {
    let mut results = vec![];
    let mut missing = 0;
    for s in specs {
        let dir = RunDir::of(runs_dir, s);
        if dir.state() == RunState::Done {
            results.push((s.clone(), dir.rounds()?));
        } else {
            missing += 1;
        }
    }
    Ok((results, missing))
}

/// Writes the report of `grid` into `out` (clearing temporaries a killed writer left) and
/// prints it.
fn write_grid_report(out: &Path, grid: &GridSpec, results: &[Finished]) -> Result<()> {
    ap_runs::store::remove_stale_temporaries(out);
    let md = write_report(
        out,
        results,
        &format!("{} — {}", grid.name, grid.description),
    )?;
    println!("{md}");
    Ok(())
}
