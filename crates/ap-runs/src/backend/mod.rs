//! Where `ap reproduce` runs a grid's runs: [`local`] (worker processes on this machine)
//! or [`slurm`] (one job array on a cluster), behind one entry point, [`reproduce`], with
//! one set of [`Options`].
//!
//! Both backends run each spec as an ordinary `ap run` process on the shared run store, so
//! a run with DONE is never run again, a partial run resumes from its checkpoint, and the
//! report is built from the store whichever backend filled it. Nothing here prints: lines
//! for the user go to the writer the caller passes, results come back as an [`Outcome`].

pub mod local;
pub mod slurm;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::estimate::{human, Estimator, Target};
use crate::spec::RunSpec;
use crate::store::{RunDir, RunState};

pub use slurm::SlurmResources;

/// Where the runs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// On this machine, `jobs` `ap run` processes at a time.
    Local {
        /// Runs in parallel (at least 1).
        jobs: usize,
    },
    /// As one Slurm job array (`sbatch`), one task per run; returns once submitted.
    Slurm(SlurmResources),
}

/// How every run is started, whichever backend starts it: the `ap run` program and the
/// arguments it gets.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The `ap` program (on a cluster it must be visible on the compute nodes).
    pub ap_exe: PathBuf,
    /// The run store.
    pub runs_dir: PathBuf,
    /// `--data-dir` of each run (on a cluster it must be visible on the compute nodes).
    pub data_dir: PathBuf,
    /// `--device` of each run (`cpu`, `cuda`, `cuda:N`, `auto`).
    pub device: String,
    /// libtorch threads per run; none: cores / jobs locally, 1 per Slurm task. The same
    /// count gives the same numbers on CPU whichever backend runs.
    pub threads: Option<i32>,
    /// Every epoch into the run's output.
    pub verbose: bool,
    /// Bit-for-bit repeatable CUDA (`--deterministic-cuda`).
    pub deterministic_cuda: bool,
}

/// Everything [`reproduce`] needs besides the specs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the runs run.
    pub backend: Backend,
    /// How each run is started.
    pub run: RunSettings,
    /// List the runs, their state and an estimate of the time left; run and change nothing.
    pub dry_run: bool,
    /// The log writer is a terminal: the local backend redraws its progress there in place.
    pub live_progress: bool,
}

/// How [`reproduce`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A dry run: the table of runs and the estimate (nothing was run or changed).
    DryRun(String),
    /// Nothing is left to run or wait for: the report can be written. `failures` holds
    /// `<run>: <error>` for each run that failed here.
    Ended {
        /// The runs that failed, with why.
        failures: Vec<String>,
    },
    /// The runs left were handed to Slurm (or are still queued or running there from an
    /// earlier submission): the report comes once they have ended.
    Submitted {
        /// The id of the job array submitted now, if one was.
        job_id: Option<String>,
        /// What was submitted and how to follow it.
        message: String,
    },
}

/// The runs of a grid and what is left of them, as the store has them now.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// Every run of the grid.
    pub specs: &'a [RunSpec],
    /// The state of each, in `specs` order.
    pub states: Vec<RunState>,
    /// The runs to do (pending or partial), with their estimated seconds left.
    pub todo: Vec<(&'a RunSpec, f64)>,
}

impl<'a> Plan<'a> {
    /// States and estimates of `specs` in `runs_dir`, to be run on `on` (estimates from
    /// finished runs in the store where there are any, else from docs/performance.md's
    /// CPU figures).
    pub fn new(specs: &'a [RunSpec], runs_dir: &Path, on: &Target) -> Plan<'a> {
        let states: Vec<RunState> = specs
            .iter()
            .map(|s| RunDir::of(runs_dir, s).state())
            .collect();
        let estimator = Estimator::from_store(runs_dir, specs);
        let todo = specs
            .iter()
            .zip(&states)
            .filter(|(_, &st)| st == RunState::Pending || st == RunState::Partial)
            .map(|(s, _)| {
                let finished = RunDir::of(runs_dir, s).resume_point_rounds().unwrap_or(0);
                (s, estimator.seconds_left(s, finished, on))
            })
            .collect();
        Plan {
            specs,
            states,
            todo,
        }
    }

    /// Estimated seconds of the runs to do, one after the other.
    pub fn work(&self) -> f64 {
        self.todo.iter().map(|(_, w)| w).sum()
    }

    /// One line: the grid, how many runs, and how many in each state.
    pub fn summary(&self, grid: &str, runs_dir: &Path) -> String {
        let count = |st: RunState| self.states.iter().filter(|&&s| s == st).count();
        format!(
            "grid `{grid}`: {} runs ({} done, {} partial, {} pending, {} failed) in {}",
            self.specs.len(),
            count(RunState::Done),
            count(RunState::Partial),
            count(RunState::Pending),
            count(RunState::Failed),
            runs_dir.display()
        )
    }

    /// The dry run's listing: each run's state and estimate, then the time left on
    /// `backend`.
    pub fn table(&self, backend: &Backend) -> String {
        let mut out = format!("{:<8} {:>10}  run\n", "state", "estimate");
        for (s, st) in self.specs.iter().zip(&self.states) {
            let est = self
                .todo
                .iter()
                .find(|(t, _)| t.key() == s.key())
                .map_or("—".to_string(), |(_, w)| human(*w));
            out.push_str(&format!(
                "{:<8} {est:>10}  {}\n",
                format!("{st:?}").to_lowercase(),
                s.dir_name()
            ));
        }
        let (left, how) = match backend {
            Backend::Local { jobs } => (
                self.work() / (*jobs).min(self.todo.len()).max(1) as f64,
                format!("with --jobs {jobs}"),
            ),
            Backend::Slurm(SlurmResources {
                max_parallel: Some(k),
                ..
            }) => (
                self.work() / (*k).min(self.todo.len()).max(1) as f64,
                format!("with --max-parallel {k}"),
            ),
            Backend::Slurm(_) => (
                self.todo.iter().map(|(_, w)| *w).fold(0.0, f64::max),
                "with every run in its own Slurm task at once".to_string(),
            ),
        };
        out.push_str(&format!(
            "estimated time left: {} {how} (from finished runs on the same kind of device in the store where there are any, scaled from the --jobs they ran with, else from docs/performance.md's CPU figures)\n",
            human(left)
        ));
        out
    }
}

/// `ap reproduce`: runs (or, on Slurm, submits) every run of `specs` that is neither done
/// nor failed for good, on `opts.backend`. Status lines (the grid's counts, skipped failed
/// runs, the local progress display) go to `log`. With [`Outcome::Ended`] the caller
/// writes the report.
pub fn reproduce(
    grid: &str,
    specs: &[RunSpec],
    opts: &Options,
    log: &mut (dyn Write + Send),
) -> Result<Outcome> {
    let runs_dir = &opts.run.runs_dir;
    // A dry run changes nothing (a damaged DONE already counts as partial in `state`).
    if !opts.dry_run {
        tidy(specs, runs_dir);
    }
    let packed = match opts.backend {
        Backend::Local { jobs } => jobs,
        Backend::Slurm(_) => 1,
    };
    let plan = Plan::new(specs, runs_dir, &Target::new(&opts.run.device, packed));
    writeln!(log, "{}", plan.summary(grid, runs_dir))?;
    if opts.dry_run {
        return Ok(Outcome::DryRun(plan.table(&opts.backend)));
    }
    for (s, st) in specs.iter().zip(&plan.states) {
        if *st == RunState::Failed {
            let dir = RunDir::of(runs_dir, s);
            writeln!(
                log,
                "skipping failed run {}: {} (delete its FAILED file to retry)",
                s.dir_name(),
                dir.failure().unwrap_or_default().trim()
            )?;
        }
    }
    match &opts.backend {
        Backend::Local { jobs } => {
            let failures = local::run(&plan, (*jobs).max(1), &opts.run, log, opts.live_progress)?;
            Ok(Outcome::Ended { failures })
        }
        Backend::Slurm(resources) => slurm::reproduce(grid, specs, &opts.run, resources),
    }
}

/// Clears what killed processes left in the runs' directories: a DONE that no longer
/// verifies, temporaries, and locks of processes that are gone.
fn tidy(specs: &[RunSpec], runs_dir: &Path) {
    for s in specs {
        let dir = RunDir::of(runs_dir, s);
        dir.reopen_if_corrupt();
        dir.remove_temporaries();
        dir.remove_stale_lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A LeNet run; the batch size of each seed differs, so the estimate of one run never
    /// comes from another (finished runs here have no rounds, hence no measured time).
    fn spec(seed: u64) -> RunSpec {
        let batch = 60 + seed;
        let text = format!(
            "model = \"lenet300-100\"\ndataset = \"mnist\"\nseed = {seed}\n[train]\nbatch_size = {batch}\niterations = 300\noptimizer = {{ kind = \"adam\", lr = 1.2e-3 }}\n[prune]\nmethod = \"imp\"\nrounds = 2\nrate = 0.2\n"
        );
        RunSpec::parse(&text, "test").unwrap()
    }

    fn options(runs_dir: &Path, dry_run: bool) -> Options {
        Options {
            backend: Backend::Local { jobs: 2 },
            run: RunSettings {
                // Never started: every run below is done or failed.
                ap_exe: "/nonexistent/ap".into(),
                runs_dir: runs_dir.to_path_buf(),
                data_dir: "/nonexistent/data".into(),
                device: "cpu".into(),
                threads: Some(1),
                verbose: false,
                deterministic_cuda: false,
            },
            dry_run,
            live_progress: false,
        }
    }

    /// A store with one done, one failed and one pending run.
    fn store(runs_dir: &Path) -> Vec<RunSpec> {
        let specs: Vec<RunSpec> = (0..3).map(spec).collect();
        let done = RunDir::of(runs_dir, &specs[0]);
        done.init(&specs[0]).unwrap();
        std::fs::write(done.path.join("DONE"), "").unwrap();
        let failed = RunDir::of(runs_dir, &specs[1]);
        failed.init(&specs[1]).unwrap();
        std::fs::write(failed.path.join("FAILED"), "training diverged\n").unwrap();
        specs
    }

    #[test]
    fn plan_counts_states_and_estimates_only_the_runs_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let specs = store(tmp.path());
        let plan = Plan::new(&specs, tmp.path(), &Target::new("cpu", 2));
        assert_eq!(
            plan.states,
            [RunState::Done, RunState::Failed, RunState::Pending]
        );
        assert_eq!(plan.todo.len(), 1);
        assert_eq!(plan.todo[0].0.key(), specs[2].key());
        assert!(plan.work() > 0.0);
        assert_eq!(
            plan.summary("g", Path::new("runs")),
            "grid `g`: 3 runs (1 done, 0 partial, 1 pending, 1 failed) in runs"
        );
        let table = plan.table(&Backend::Local { jobs: 2 });
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(
            lines[1].starts_with(&format!("{:<8} {:>10}  imp-", "done", "—")),
            "{table}"
        );
        assert!(lines[3].starts_with("pending "), "{table}");
        assert!(lines[3].ends_with(&specs[2].dir_name()), "{table}");
        assert!(lines[4].contains(" with --jobs 2 "), "{table}");
        let slurm = plan.table(&Backend::Slurm(SlurmResources {
            max_parallel: Some(4),
            ..SlurmResources::default()
        }));
        assert!(slurm.contains(" with --max-parallel 4 "), "{slurm}");
    }

    #[test]
    fn reproduce_reports_on_the_log_and_ends_without_running_what_is_done_or_failed() {
        let tmp = tempfile::tempdir().unwrap();
        let specs: Vec<RunSpec> = store(tmp.path()).into_iter().take(2).collect();
        // A dry run lists and changes nothing: a stale lock stays.
        let lock = RunDir::of(tmp.path(), &specs[1]).path.join("LOCK");
        std::fs::write(&lock, "4294967").unwrap(); // no such pid
        let mut log = vec![];
        let outcome = reproduce("g", &specs, &options(tmp.path(), true), &mut log).unwrap();
        let Outcome::DryRun(table) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(table.starts_with("state      estimate  run\n"), "{table}");
        assert!(lock.exists());
        assert_eq!(
            String::from_utf8(std::mem::take(&mut log)).unwrap(),
            format!(
                "grid `g`: 2 runs (1 done, 0 partial, 0 pending, 1 failed) in {}\n",
                tmp.path().display()
            )
        );
        // A real one tidies the store, skips the failed run and has nothing to run.
        let outcome = reproduce("g", &specs, &options(tmp.path(), false), &mut log).unwrap();
        assert_eq!(outcome, Outcome::Ended { failures: vec![] });
        assert!(!lock.exists(), "the stale lock is removed");
        let log = String::from_utf8(log).unwrap();
        assert!(
            log.contains(&format!(
                "skipping failed run {}: training diverged (delete its FAILED file to retry)\n",
                specs[1].dir_name()
            )),
            "{log}"
        );
    }
}
