//! `ap`: run pruning experiments from TOML specs.
//!
//! ```text
//! ap run SPEC.toml            one run (skipped when its directory says DONE)
//! ap reproduce [--grid G]     every run of a grid, then summary.json, summary.csv, report.md
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
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
    /// Run one spec file.
    Run {
        /// The run spec (TOML).
        spec: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Run every run of a grid (resuming: finished runs are reused), then write the report.
    Reproduce {
        /// The grid file (TOML).
        #[arg(long, default_value = "grids/default.toml")]
        grid: PathBuf,
        /// Where the report goes (default: results/<grid name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Runs in parallel, each in its own process.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// List the runs and their state, run nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        common: Common,
    },
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
}

impl Common {
    fn options(&self) -> Result<RunOptions> {
        Ok(RunOptions {
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(ap_data::default_data_dir),
            device: ap_tensor::parse_device(&self.device)?,
            progress: true,
            verbose: self.verbose,
        })
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Run { spec, common } => {
            if let Some(t) = common.threads {
                tch::set_num_threads(t);
            }
            let s: RunSpec = read_toml(&spec)?;
            s.validate().with_context(|| spec.display().to_string())?;
            let records = execute(&s, &common.runs_dir, &common.options()?)?;
            let md = ap_runs::report::markdown(
                &ap_runs::summarise(&[(s, records)]),
                &spec.display().to_string(),
            );
            println!("{md}");
            Ok(())
        }
        Cmd::Reproduce {
            grid,
            out,
            jobs,
            dry_run,
            common,
        } => reproduce(&grid, out, jobs.max(1), dry_run, &common),
    }
}

fn reproduce(
    grid_path: &Path,
    out: Option<PathBuf>,
    jobs: usize,
    dry_run: bool,
    common: &Common,
) -> Result<()> {
    let grid: GridSpec = read_toml(grid_path)?;
    let specs = grid.expand(&grid_path.display().to_string())?;
    let out = out.unwrap_or_else(|| PathBuf::from("results").join(&grid.name));
    let states: Vec<RunState> = specs
        .iter()
        .map(|s| RunDir::of(&common.runs_dir, s).state())
        .collect();
    let done = states.iter().filter(|&&s| s == RunState::Done).count();
    eprintln!(
        "grid `{}`: {} runs ({} done, {} to run) → {}",
        grid.name,
        specs.len(),
        done,
        specs.len() - done,
        common.runs_dir.display()
    );
    if dry_run {
        for (s, st) in specs.iter().zip(&states) {
            println!("{:<8} {}", format!("{st:?}").to_lowercase(), s.dir_name());
        }
        return Ok(());
    }
    let opts = common.options()?;
    for (s, st) in specs.iter().zip(&states) {
        if *st == RunState::Failed {
            let dir = RunDir::of(&common.runs_dir, s);
            eprintln!(
                "skipping failed run {}: {}",
                s.dir_name(),
                dir.failure().unwrap_or_default().trim()
            );
        }
    }
    let todo: Vec<&RunSpec> = specs
        .iter()
        .zip(&states)
        .filter(|(_, &st)| st == RunState::Pending || st == RunState::Partial)
        .map(|(s, _)| s)
        .collect();
    let started = Instant::now();
    let failures = Mutex::new(vec![]);
    if !todo.is_empty() {
        // Threads per run follow the requested --jobs, not how many runs are left, so a
        // rerun of one run uses the same thread count (and gives the same numbers on CPU).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
        let threads = common.threads.unwrap_or((cores / jobs as i32).max(1));
        let jobs = jobs.min(todo.len());
        if jobs == 1 {
            tch::set_num_threads(threads);
            for (i, s) in todo.iter().enumerate() {
                eprintln!("[{}/{}] {}", i + 1, todo.len(), s.dir_name());
                if let Err(e) = execute(s, &common.runs_dir, &opts) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{}: {e:#}", s.dir_name()));
                }
            }
        } else {
            // One process per run: libtorch's thread pool is per process, so this is how
            // runs share the cores without contending.
            let next = AtomicUsize::new(0);
            let exe = std::env::current_exe().context("locating the ap executable")?;
            std::thread::scope(|scope| {
                for _ in 0..jobs {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(s) = todo.get(i) else { break };
                        eprintln!("[{}/{}] {}", i + 1, todo.len(), s.dir_name());
                        if let Err(e) = run_child(&exe, s, common, &opts, threads) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{}: {e:#}", s.dir_name()));
                        }
                    });
                }
            });
        }
        eprintln!(
            "ran {} runs in {:.1} min",
            todo.len(),
            started.elapsed().as_secs_f64() / 60.0
        );
    }
    let mut results = vec![];
    for s in &specs {
        let dir = RunDir::of(&common.runs_dir, s);
        if dir.state() == RunState::Done {
            results.push((s.clone(), dir.rounds()?));
        }
    }
    let md = write_report(
        &out,
        &results,
        &format!("{} — {}", grid.name, grid.description),
    )?;
    println!("{md}");
    eprintln!(
        "report: {}, {}, {}",
        out.join("report.md").display(),
        out.join("summary.json").display(),
        out.join("summary.csv").display()
    );
    let failures = failures.into_inner().unwrap();
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

/// Runs one spec in a child `ap run` process with `threads` libtorch threads.
fn run_child(
    exe: &Path,
    spec: &RunSpec,
    common: &Common,
    opts: &RunOptions,
    threads: i32,
) -> Result<()> {
    let dir = RunDir::of(&common.runs_dir, spec);
    dir.init(spec)?;
    let mut cmd = Command::new(exe);
    cmd.arg("run").arg(dir.path.join("spec.toml"));
    cmd.arg("--runs-dir")
        .arg(&common.runs_dir)
        .arg("--data-dir")
        .arg(&opts.data_dir);
    cmd.arg("--device")
        .arg(&common.device)
        .arg("--threads")
        .arg(threads.to_string());
    if common.verbose {
        cmd.arg("--verbose");
    }
    let out = cmd
        .stdout(std::process::Stdio::null())
        .status()
        .context("starting `ap run`")?;
    if !out.success() {
        bail!("`ap run` exited with {out}");
    }
    Ok(())
}
