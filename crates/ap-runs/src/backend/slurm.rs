//! Running a grid on a Slurm cluster: one `sbatch` job array, one array task per run.
//!
//! The run store is the only shared state. `ap reproduce --backend slurm` initialises the
//! directory of every run still to do, lists their `spec.toml` paths in a manifest and
//! submits a job array whose task *i* runs `ap run <line i of the manifest>`. Because a
//! task is an ordinary `ap run`, everything the local backend guarantees holds here too:
//! a run with DONE is skipped, a partial run resumes, and the report is built from the
//! store by `ap reproduce` / `ap report` whichever backend filled it.
//!
//! ```text
//! <runs>/slurm/
//!   <job>.json                 one record per submitted job: its runs, in task order
//!   batch-<ms>-<pid>/job.sh    the submitted script (kept, so a job can be inspected)
//!   batch-<ms>-<pid>/manifest.txt   absolute spec.toml paths, line i = array task i
//!   logs/slurm-<job>_<task>.out|.err   stdout/stderr of each task (appended on requeue)
//! ```
//!
//! Why a manifest and not one `sbatch` per run: one job array is one scheduler entry
//! that `--max-parallel` can throttle (`--array=0-N%K`), and `squeue` shows the whole grid
//! under one id.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Outcome, RunSettings};
use crate::runner::MALLOC_TUNABLES;
use crate::spec::RunSpec;
use crate::store::{write_atomic, RunDir, RunState};

/// Name of the store's subdirectory that holds Slurm jobs, scripts and logs. It holds no
/// `spec.toml`, so nothing that lists runs mistakes it for one.
pub const SLURM_DIR: &str = "slurm";

/// The Slurm resources each task requests, and how many tasks run at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmResources {
    /// `--partition`; Slurm's default partition when none.
    pub partition: Option<String>,
    /// `--gpus-per-task`; none requests no GPU.
    pub gpus_per_task: Option<u32>,
    /// `--time` (e.g. `04:00:00`); the partition's default when none.
    pub time: Option<String>,
    /// At most this many tasks run at once (`--array=0-N%K`); as many as Slurm allows
    /// when none.
    pub max_parallel: Option<usize>,
}

impl SlurmResources {
    /// Rejects a `time` that is no Slurm time limit and a `max_parallel` of 0.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.time {
            let numeric = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_digit() || c == ':' || c == '-');
            if !numeric && !matches!(t.as_str(), "UNLIMITED" | "INFINITE") {
                bail!("--time {t:?} is not a Slurm time limit; use e.g. 04:00:00 or 1-00:00:00");
            }
        }
        if self.max_parallel == Some(0) {
            bail!("--max-parallel must be at least 1");
        }
        Ok(())
    }
}

/// The Slurm backend of [`super::reproduce`]: submits the grid's remaining runs. Ends with
/// [`Outcome::Ended`] when nothing is left to run or wait for (every run done or failed
/// for good), so the caller can write the report right away, else with
/// [`Outcome::Submitted`] and how to follow the runs.
pub fn reproduce(
    grid: &str,
    specs: &[RunSpec],
    run: &RunSettings,
    resources: &SlurmResources,
) -> Result<Outcome> {
    resources.validate()?;
    let opts = SlurmOptions {
        grid: grid.to_string(),
        resources: resources.clone(),
        run: run.clone(),
    };
    let runs_dir = &run.runs_dir;
    match submit(specs, &opts)? {
        Submission::Submitted(job) => Ok(Outcome::Submitted {
            message: format!(
                "submitted {} runs as Slurm job array {} (script {}); follow with \
                 `ap status --runs-dir {}` or `squeue -j {}`; when it has finished, \
                 `ap reproduce` again (any backend) writes the report",
                job.runs.len(),
                job.job_id,
                job.script.display(),
                runs_dir.display(),
                job.job_id,
            ),
            job_id: Some(job.job_id),
        }),
        Submission::Nothing { active } if active.is_empty() => {
            Ok(Outcome::Ended { failures: vec![] })
        }
        Submission::Nothing { active } => {
            let jobs: Vec<String> = active
                .iter()
                .map(|(j, n)| format!("{n} in job {j}"))
                .collect();
            Ok(Outcome::Submitted {
                job_id: None,
                message: format!(
                    "nothing submitted: the remaining runs are already queued or running ({}); \
                     follow with `ap status --runs-dir {}`",
                    jobs.join(", "),
                    runs_dir.display()
                ),
            })
        }
    }
}

/// How to submit: the `sbatch` resources and the `ap run` arguments of every task.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Name of the grid (job name `ap-<grid>`, and recorded with the job).
    pub grid: String,
    /// What each task requests.
    pub resources: SlurmResources,
    /// The run store, and the program and arguments of each task's `ap run` (its paths
    /// must be visible on the compute nodes).
    pub run: RunSettings,
}

impl SlurmOptions {
    /// libtorch threads of each task, also requested as `--cpus-per-task`: one unless
    /// asked, the count `ap reproduce` gives each run with its default --jobs on a 2-core
    /// machine, and what a LeNet step needs. The same --threads on both backends gives
    /// identical numbers on CPU.
    fn threads(&self) -> i32 {
        self.run.threads.unwrap_or(1).max(1)
    }
}

/// What is recorded about a submitted job in `<runs>/slurm/<job>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobRecord {
    /// Slurm's job id (the array's id).
    pub job_id: String,
    /// Grid name.
    pub grid: String,
    /// Run directory names; array task `i` runs `runs[i]`.
    pub runs: Vec<String>,
    /// The submitted script.
    pub script: PathBuf,
    /// The manifest the script reads.
    pub manifest: PathBuf,
    /// Directory of the tasks' `.out`/`.err` logs.
    pub logs: PathBuf,
    /// Submission time (seconds since the Unix epoch).
    pub submitted_unix_s: u64,
}

impl JobRecord {
    /// The stderr log of array task `task` (where `ap run` writes its `error:` line).
    pub fn err_log(&self, task: usize) -> PathBuf {
        self.logs
            .join(format!("slurm-{}_{}.err", self.job_id, task))
    }
}

/// The outcome of a submission.
#[derive(Debug, Clone)]
pub enum Submission {
    /// A job array was submitted.
    Submitted(JobRecord),
    /// Nothing to submit: every run is done, failed for good, or already queued/running
    /// in a Slurm job (its id given).
    Nothing {
        /// Runs already in a queued or running task, by job id.
        active: BTreeMap<String, usize>,
    },
}

/// A task's state as Slurm reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// The job the task belongs to.
    pub job: JobRecord,
    /// Array index.
    pub task: usize,
    /// Slurm's state name (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, ...); none when
    /// Slurm no longer knows the task (or its clients are not installed here).
    pub state: Option<String>,
}

impl TaskState {
    /// Waiting to start (or waiting to start again after a requeue).
    pub fn is_queued(&self) -> bool {
        matches!(
            self.state.as_deref(),
            Some(
                "PENDING"
                    | "REQUEUED"
                    | "REQUEUE_HOLD"
                    | "REQUEUE_FED"
                    | "CONFIGURING"
                    | "RESV_DEL_HOLD"
                    | "SUSPENDED"
            )
        )
    }

    /// Running now.
    pub fn is_running(&self) -> bool {
        matches!(
            self.state.as_deref(),
            Some("RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING")
        )
    }

    /// Ended without success (failed, cancelled, timed out, node failure, out of memory).
    pub fn is_failed(&self) -> bool {
        matches!(
            self.state.as_deref(),
            Some(
                "FAILED"
                    | "CANCELLED"
                    | "TIMEOUT"
                    | "NODE_FAIL"
                    | "OUT_OF_MEMORY"
                    | "BOOT_FAIL"
                    | "DEADLINE"
                    | "PREEMPTED"
            )
        )
    }
}

/// Submits every run of `specs` that is neither done, failed for good, nor already in a
/// queued or running Slurm task, into the run store `opts.run.runs_dir`, as one job array.
pub fn submit(specs: &[RunSpec], opts: &SlurmOptions) -> Result<Submission> {
    let runs_dir = &opts.run.runs_dir;
    fs::create_dir_all(runs_dir)
        .with_context(|| format!("cannot create the run store {}", runs_dir.display()))?;
    // Tasks start in Slurm's working directory, on other machines: every path they get
    // must be absolute.
    let runs_dir = fs::canonicalize(runs_dir)
        .with_context(|| format!("cannot resolve {}", runs_dir.display()))?;
    let data_dir = absolute(&opts.run.data_dir)?;
    // Checked before anything is written, so a machine without Slurm is left untouched.
    if !on_path("sbatch") {
        bail!(SBATCH_MISSING);
    }
    let active = active_tasks(&runs_dir)?;
    let mut already: BTreeMap<String, usize> = BTreeMap::new();
    let mut todo: Vec<&RunSpec> = vec![];
    for s in specs {
        let dir = RunDir::of(&runs_dir, s);
        if !matches!(dir.state(), RunState::Pending | RunState::Partial) {
            continue;
        }
        if let Some(t) = active.get(&s.dir_name()) {
            *already.entry(t.job.job_id.clone()).or_default() += 1;
            continue;
        }
        todo.push(s);
    }
    if todo.is_empty() {
        return Ok(Submission::Nothing { active: already });
    }
    let slurm_dir = runs_dir.join(SLURM_DIR);
    let logs = slurm_dir.join("logs");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let batch = slurm_dir.join(format!("batch-{}-{}", now.as_millis(), std::process::id()));
    for d in [&logs, &batch] {
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut manifest = String::new();
    for s in &todo {
        let dir = RunDir::of(&runs_dir, s);
        dir.init(s)?;
        let line = dir.path.join("spec.toml");
        let line = line.to_str().with_context(|| {
            format!(
                "{} is not UTF-8; use a run store path that is",
                line.display()
            )
        })?;
        if line.contains('\n') {
            bail!(
                "the run store path {} contains a newline",
                runs_dir.display()
            );
        }
        manifest.push_str(line);
        manifest.push('\n');
    }
    let manifest_path = batch.join("manifest.txt");
    write_atomic(&manifest_path, manifest.as_bytes())?;
    let script = job_script(
        opts,
        todo.len(),
        &runs_dir,
        &data_dir,
        &manifest_path,
        &logs,
    );
    let script_path = batch.join("job.sh");
    write_atomic(&script_path, script.as_bytes())?;
    let out = match Command::new("sbatch")
        .arg("--parsable")
        .arg(&script_path)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(SBATCH_MISSING),
        Err(e) => return Err(e).context("starting `sbatch`"),
    };
    if !out.status.success() {
        bail!(
            "`sbatch {}` failed ({}): {}",
            script_path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let job_id = parse_job_id(&String::from_utf8_lossy(&out.stdout))?;
    let record = JobRecord {
        job_id: job_id.clone(),
        grid: opts.grid.clone(),
        runs: todo.iter().map(|s| s.dir_name()).collect(),
        script: script_path,
        manifest: manifest_path,
        logs,
        submitted_unix_s: now.as_secs(),
    };
    write_atomic(
        &slurm_dir.join(format!("{job_id}.json")),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    Ok(Submission::Submitted(record))
}

const SBATCH_MISSING: &str = "--backend slurm needs Slurm's `sbatch`, which is not on PATH: \
    install Slurm's client (e.g. `apt-get install slurm-client`) or use --backend local";

/// Whether an executable named `name` is in one of `$PATH`'s directories.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}

/// `sbatch --parsable` prints `<id>` or `<id>;<cluster>`.
fn parse_job_id(stdout: &str) -> Result<String> {
    let id = stdout.trim().split(';').next().unwrap_or("").trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("`sbatch --parsable` printed {stdout:?}, expected a job id");
    }
    Ok(id.to_string())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("reading the current directory")?
            .join(p))
    }
}

/// Quotes `s` for bash (single quotes, with embedded ones escaped).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job-array script. Task `i` runs the run on line `i + 1` of the manifest.
///
/// `--requeue` lets a preempted task be requeued; it then resumes the run from the store.
/// `--open-mode=append` keeps the log of an earlier attempt when a task is requeued.
fn job_script(
    opts: &SlurmOptions,
    n: usize,
    runs_dir: &Path,
    data_dir: &Path,
    manifest: &Path,
    logs: &Path,
) -> String {
    let q = |p: &Path| sh_quote(&p.to_string_lossy());
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!("#SBATCH --job-name=ap-{}\n", opts.grid));
    let r = &opts.resources;
    match r.max_parallel {
        Some(k) => s.push_str(&format!("#SBATCH --array=0-{}%{}\n", n - 1, k.max(1))),
        None => s.push_str(&format!("#SBATCH --array=0-{}\n", n - 1)),
    }
    s.push_str("#SBATCH --ntasks=1\n");
    s.push_str(&format!("#SBATCH --cpus-per-task={}\n", opts.threads()));
    if let Some(g) = r.gpus_per_task {
        s.push_str(&format!("#SBATCH --gpus-per-task={g}\n"));
    }
    if let Some(p) = &r.partition {
        s.push_str(&format!("#SBATCH --partition={p}\n"));
    }
    if let Some(t) = &r.time {
        s.push_str(&format!("#SBATCH --time={t}\n"));
    }
    s.push_str("#SBATCH --requeue\n#SBATCH --open-mode=append\n");
    // #SBATCH lines are not shell-parsed: paths with spaces cannot be quoted there.
    s.push_str(&format!(
        "#SBATCH --output={}/slurm-%A_%a.out\n#SBATCH --error={}/slurm-%A_%a.err\n",
        logs.display(),
        logs.display()
    ));
    s.push_str("set -euo pipefail\n");
    s.push_str(&format!(
        "export GLIBC_TUNABLES=\"${{GLIBC_TUNABLES:-{}}}\"\n",
        MALLOC_TUNABLES
    ));
    s.push_str(&format!("mapfile -t specs < {}\n", q(manifest)));
    s.push_str("spec=\"${specs[$SLURM_ARRAY_TASK_ID]:-}\"\n");
    s.push_str(&format!(
        "if [ -z \"$spec\" ]; then echo \"error: no line $SLURM_ARRAY_TASK_ID in {}\" >&2; exit 2; fi\n",
        manifest.display()
    ));
    s.push_str(
        "echo \"[$(date -u +%FT%TZ)] task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname) (restart ${SLURM_RESTART_COUNT:-0}): $spec\" >&2\n",
    );
    s.push_str(&format!(
        "exec {} run \"$spec\" --runs-dir {} --data-dir {} --device {} --threads {}{}{}\n",
        q(&opts.run.ap_exe),
        q(runs_dir),
        q(data_dir),
        sh_quote(&opts.run.device),
        opts.threads(),
        if opts.run.verbose { " --verbose" } else { "" },
        if opts.run.deterministic_cuda {
            " --deterministic-cuda"
        } else {
            ""
        }
    ));
    s
}

/// Every job submitted into `runs_dir`, oldest first.
pub fn jobs(runs_dir: &Path) -> Result<Vec<JobRecord>> {
    let dir = runs_dir.join(SLURM_DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(vec![]);
    };
    let mut jobs = vec![];
    for e in entries {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "json") {
            let text = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let job: JobRecord = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: malformed Slurm job record; delete it if the job is gone",
                    path.display()
                )
            })?;
            jobs.push(job);
        }
    }
    jobs.sort_by_key(|j| (j.submitted_unix_s, j.job_id.parse::<u64>().unwrap_or(0)));
    Ok(jobs)
}

/// Slurm's view of array tasks: `(job id, task index) → state`, from `squeue -t all`
/// (which still lists tasks that ended within Slurm's MinJobAge), and for older ones
/// `sacct` where accounting is enabled. `None` when Slurm's clients are not installed.
pub fn query_states(job_ids: &[&str]) -> Option<BTreeMap<(String, usize), String>> {
    if job_ids.is_empty() {
        return Some(BTreeMap::new());
    }
    let out = Command::new("squeue")
        .args(["-h", "-r", "-t", "all", "-o", "%F|%K|%T"])
        .output()
        .ok()?;
    let mut states = BTreeMap::new();
    if out.status.success() {
        parse_states(&String::from_utf8_lossy(&out.stdout), &mut states);
    }
    let missing: Vec<&str> = job_ids
        .iter()
        .copied()
        .filter(|id| !states.keys().any(|(j, _)| j == id))
        .collect();
    if !missing.is_empty() {
        // Fails quietly where accounting is off ("Slurm accounting storage is disabled").
        if let Ok(o) = Command::new("sacct")
            .args([
                "-n",
                "-P",
                "-X",
                "-o",
                "JobID,State",
                "-j",
                &missing.join(","),
            ])
            .output()
        {
            if o.status.success() {
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    let Some((id, state)) = line.split_once('|') else {
                        continue;
                    };
                    let Some((job, task)) = id.split_once('_') else {
                        continue;
                    };
                    if let Ok(t) = task.parse::<usize>() {
                        // "CANCELLED by 0" → CANCELLED
                        let state = state.split_whitespace().next().unwrap_or("");
                        states
                            .entry((job.to_string(), t))
                            .or_insert_with(|| state.to_string());
                    }
                }
            }
        }
    }
    Some(states)
}

/// Parses `squeue -o "%F|%K|%T"` lines (array job id, task index, state).
fn parse_states(text: &str, into: &mut BTreeMap<(String, usize), String>) {
    for line in text.lines() {
        let mut f = line.trim().split('|');
        let (Some(job), Some(task), Some(state)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if let Ok(t) = task.parse::<usize>() {
            into.insert((job.to_string(), t), state.to_string());
        }
    }
}

/// The latest Slurm task of each run (by run directory name), with its state.
pub fn latest_tasks(runs_dir: &Path) -> Result<BTreeMap<String, TaskState>> {
    let jobs = jobs(runs_dir)?;
    let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    let states = query_states(&ids).unwrap_or_default();
    let mut latest = BTreeMap::new();
    for job in &jobs {
        for (i, run) in job.runs.iter().enumerate() {
            let state = states.get(&(job.job_id.clone(), i)).cloned();
            latest.insert(
                run.clone(),
                TaskState {
                    job: job.clone(),
                    task: i,
                    state,
                },
            );
        }
    }
    Ok(latest)
}

/// Runs whose latest task is queued or running: submitting them again would run them twice.
fn active_tasks(runs_dir: &Path) -> Result<BTreeMap<String, TaskState>> {
    Ok(latest_tasks(runs_dir)?
        .into_iter()
        .filter(|(_, t)| t.is_queued() || t.is_running())
        .collect())
}

/// The last `error:` line of a task's stderr log (what `ap run` prints when it fails),
/// else its last non-empty line.
pub fn last_error(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.contains("error:"))
        .or(lines.last())
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SlurmOptions {
        SlurmOptions {
            grid: "smoke".into(),
            resources: SlurmResources {
                partition: Some("gpu".into()),
                gpus_per_task: Some(1),
                time: Some("01:00:00".into()),
                max_parallel: Some(3),
            },
            run: RunSettings {
                ap_exe: "/opt/ap's/ap".into(),
                runs_dir: "/store/runs".into(),
                data_dir: "/data".into(),
                device: "cuda".into(),
                threads: Some(2),
                verbose: false,
                deterministic_cuda: false,
            },
        }
    }

    #[test]
    fn script_requests_resources_and_runs_the_manifest_line_of_its_task() {
        let s = job_script(
            &opts(),
            5,
            Path::new("/store/runs"),
            Path::new("/data"),
            Path::new("/store/runs/slurm/b/manifest.txt"),
            Path::new("/store/runs/slurm/logs"),
        );
        for needle in [
            "#SBATCH --array=0-4%3\n",
            "#SBATCH --cpus-per-task=2\n",
            "#SBATCH --gpus-per-task=1\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --time=01:00:00\n",
            "#SBATCH --requeue\n",
            "#SBATCH --error=/store/runs/slurm/logs/slurm-%A_%a.err\n",
            "mapfile -t specs < '/store/runs/slurm/b/manifest.txt'\n",
            "exec '/opt/ap'\\''s/ap' run \"$spec\" --runs-dir '/store/runs' --data-dir '/data' --device 'cuda' --threads 2\n",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in\n{s}");
        }
        let mut o = opts();
        o.resources.max_parallel = None;
        o.resources.gpus_per_task = None;
        o.run.threads = None;
        o.run.deterministic_cuda = true;
        let s = job_script(
            &o,
            1,
            Path::new("/r"),
            Path::new("/d"),
            Path::new("/m"),
            Path::new("/l"),
        );
        assert!(s.contains("#SBATCH --array=0-0\n"), "{s}");
        assert!(!s.contains("gpus"), "{s}");
        assert!(s.contains("#SBATCH --cpus-per-task=1\n"), "{s}");
        assert!(s.contains(" --threads 1 --deterministic-cuda\n"), "{s}");
    }

    #[test]
    fn job_id_is_parsed_with_or_without_cluster() {
        assert_eq!(parse_job_id("123\n").unwrap(), "123");
        assert_eq!(parse_job_id("77;cluster\n").unwrap(), "77");
        assert!(parse_job_id("Submitted batch job 5").is_err());
        assert!(parse_job_id("").is_err());
    }

    #[test]
    fn squeue_lines_map_array_tasks_to_states() {
        let mut m = BTreeMap::new();
        parse_states(
            "12|0|RUNNING\n12|1|PENDING\n13|N/A|COMPLETED\ngarbage\n",
            &mut m,
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[&("12".to_string(), 0)], "RUNNING");
        assert_eq!(m[&("12".to_string(), 1)], "PENDING");
    }

    #[test]
    fn last_error_prefers_the_error_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e");
        fs::write(
            &p,
            "[t] task 1_0 on vm\nerror: loading mnist: no such file\n\n",
        )
        .unwrap();
        assert_eq!(
            last_error(&p).unwrap(),
            "error: loading mnist: no such file"
        );
        fs::write(&p, "slurmstepd: *** JOB 4 CANCELLED ***\n").unwrap();
        assert!(last_error(&p).unwrap().contains("CANCELLED"));
        assert!(last_error(&dir.path().join("none")).is_none());
    }

    #[test]
    fn job_records_round_trip_and_are_listed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join(SLURM_DIR);
        fs::create_dir_all(&s).unwrap();
        for (id, t) in [("9", 20), ("10", 10)] {
            let r = JobRecord {
                job_id: id.into(),
                grid: "g".into(),
                runs: vec!["a".into()],
                script: "/x".into(),
                manifest: "/m".into(),
                logs: "/l".into(),
                submitted_unix_s: t,
            };
            write_atomic(
                &s.join(format!("{id}.json")),
                serde_json::to_string(&r).unwrap().as_bytes(),
            )
            .unwrap();
        }
        let jobs = jobs(dir.path()).unwrap();
        assert_eq!(
            jobs.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(),
            ["10", "9"]
        );
        assert_eq!(jobs[1].err_log(3), PathBuf::from("/l/slurm-9_3.err"));
    }

    #[test]
    fn resources_reject_bad_time_limits_and_zero_parallel_tasks() {
        let ok = SlurmResources {
            time: Some("1-00:00:00".into()),
            max_parallel: Some(2),
            ..SlurmResources::default()
        };
        ok.validate().unwrap();
        SlurmResources::default().validate().unwrap();
        let unlimited = SlurmResources {
            time: Some("UNLIMITED".into()),
            ..SlurmResources::default()
        };
        unlimited.validate().unwrap();
        let bad_time = SlurmResources {
            time: Some("4h".into()),
            ..SlurmResources::default()
        };
        let e = bad_time.validate().unwrap_err().to_string();
        assert!(e.contains("is not a Slurm time limit"), "{e}");
        let zero = SlurmResources {
            max_parallel: Some(0),
            ..SlurmResources::default()
        };
        assert!(zero.validate().is_err());
    }
}
