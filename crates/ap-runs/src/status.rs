//! `ap status`: where each run of a grid (or of the whole store) stands — done, running,
//! queued, partial, pending or failed — from the run store alone, plus Slurm's view of
//! the tasks `ap reproduce --backend slurm` submitted when Slurm's clients are present.
//!
//! The store is the truth for what is finished (DONE) or failed for good (FAILED);
//! liveness comes from the run's LOCK (a live pid on this machine) or from Slurm (a
//! running task, possibly on another node, whose pid this machine cannot see).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::backend::slurm::{self, TaskState};
use crate::spec::RunSpec;
use crate::store::{RunDir, RunState};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// DONE exists.
    Done,
    /// A live process holds its LOCK here, or its Slurm task is running.
    Running,
    /// Its Slurm task waits to start (or to start again after a requeue).
    Queued,
    /// Started, not finished, and nothing is running it: the next run resumes it.
    Partial,
    /// Never started.
    Pending,
    /// FAILED exists (stopped for good), or its last Slurm task ended in failure.
    Failed,
}

impl Status {
    /// Lower-case name, as printed.
    pub fn name(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Running => "running",
            Status::Queued => "queued",
            Status::Partial => "partial",
            Status::Pending => "pending",
            Status::Failed => "failed",
        }
    }

    const ALL: [Status; 6] = [
        Status::Done,
        Status::Running,
        Status::Queued,
        Status::Partial,
        Status::Pending,
        Status::Failed,
    ];
}

/// One run's line in the status.
#[derive(Debug, Clone)]
pub struct RunStatus {
    /// Run directory name.
    pub name: String,
    /// Where it stands.
    pub status: Status,
    /// Rounds finished (records in rounds.jsonl).
    pub rounds: usize,
    /// Who runs it, or why it failed and where to look.
    pub detail: String,
}

/// The status of each run of `specs`, or of every run directory in `runs_dir` when
/// `specs` is `None`.
pub fn collect(runs_dir: &Path, specs: Option<&[RunSpec]>) -> Result<Vec<RunStatus>> {
    let names: Vec<String> = match specs {
        Some(specs) => specs.iter().map(|s| s.dir_name()).collect(),
        None => store_runs(runs_dir)?,
    };
    let tasks = slurm::latest_tasks(runs_dir)?;
    Ok(names
        .into_iter()
        .map(|name| {
            let dir = RunDir {
                path: runs_dir.join(&name),
            };
            let (status, detail) = classify(&dir, tasks.get(&name));
            let rounds = dir.rounds().map_or(0, |r| r.len());
            RunStatus {
                name,
                status,
                rounds,
                detail,
            }
        })
        .collect())
}

/// Directories of `runs_dir` that hold a run (a `spec.toml`), sorted.
fn store_runs(runs_dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(runs_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", runs_dir.display())),
    };
    let mut names = vec![];
    for e in entries {
        let e = e.with_context(|| format!("cannot read {}", runs_dir.display()))?;
        if e.path().join("spec.toml").is_file() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn classify(dir: &RunDir, task: Option<&TaskState>) -> (Status, String) {
    let task_name = |t: &TaskState| format!("Slurm task {}_{}", t.job.job_id, t.task);
    match dir.state() {
        RunState::Done => return (Status::Done, String::new()),
        RunState::Failed => {
            let why = dir.failure().unwrap_or_default();
            let why = why.lines().next().unwrap_or("").trim();
            return (
                Status::Failed,
                format!(
                    "{why} (stopped for good; delete {} to retry)",
                    dir.path.join("FAILED").display()
                ),
            );
        }
        RunState::Pending | RunState::Partial => {}
    }
    if let Some(pid) = live_lock(dir) {
        return (Status::Running, format!("process {pid} on this machine"));
    }
    if let Some(t) = task {
        let state = t.state.as_deref().unwrap_or("");
        if t.is_running() {
            return (Status::Running, task_name(t));
        }
        if t.is_queued() {
            return (Status::Queued, format!("{} {state}", task_name(t)));
        }
        let log = t.job.err_log(t.task);
        let error = slurm::last_error(&log).unwrap_or_default();
        if t.is_failed() {
            return (
                Status::Failed,
                format!(
                    "{} {state}: {error} (log {}; `ap reproduce --backend slurm` resubmits it)",
                    task_name(t),
                    log.display()
                ),
            );
        }
        // Ended "COMPLETED" without DONE, or Slurm has forgotten the task: the store says
        // what remains; the log says what happened last.
        if log.exists() {
            let detail = format!("last {}: {error} (log {})", task_name(t), log.display());
            let status = if dir.path.exists() {
                Status::Partial
            } else {
                Status::Pending
            };
            return (status, detail);
        }
    }
    if dir.path.exists() {
        (Status::Partial, String::new())
    } else {
        (Status::Pending, String::new())
    }
}

/// The pid in the run's LOCK when that process is alive on this machine. (A LOCK holds
/// the pid first; anything after it is ignored here.) A process on another node is not
/// visible this way; Slurm's view covers those.
fn live_lock(dir: &RunDir) -> Option<u32> {
    let pid: u32 = fs::read_to_string(dir.path.join("LOCK"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    crate::store::process_alive(pid).then_some(pid)
}

/// The status as text: one line per run, then the count of each state.
pub fn render(runs: &[RunStatus]) -> String {
    let width = runs.iter().map(|r| r.name.len()).max().unwrap_or(3).max(3);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<8} {:>6}  {:<width$}  detail",
        "state", "rounds", "run"
    );
    for r in runs {
        let _ = writeln!(
            s,
            "{:<8} {:>6}  {:<width$}  {}",
            r.status.name(),
            r.rounds,
            r.name,
            r.detail
        );
    }
    let counts: Vec<String> = Status::ALL
        .iter()
        .map(|st| {
            format!(
                "{} {}",
                runs.iter().filter(|r| r.status == *st).count(),
                st.name()
            )
        })
        .collect();
    let _ = writeln!(s, "{} runs: {}", runs.len(), counts.join(", "));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::slurm::JobRecord;

    fn task(dir: &Path, state: Option<&str>) -> TaskState {
        TaskState {
            job: JobRecord {
                job_id: "42".into(),
                grid: "g".into(),
                runs: vec!["r".into()],
                script: "/s".into(),
                manifest: "/m".into(),
                logs: dir.to_path_buf(),
                submitted_unix_s: 0,
            },
            task: 0,
            state: state.map(str::to_string),
        }
    }

    #[test]
    fn store_files_and_slurm_states_classify_each_run() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir {
            path: tmp.path().join("r"),
        };
        assert_eq!(classify(&dir, None).0, Status::Pending);
        let t = task(tmp.path(), Some("PENDING"));
        assert_eq!(classify(&dir, Some(&t)).0, Status::Queued);
        fs::create_dir(&dir.path).unwrap();
        assert_eq!(classify(&dir, None).0, Status::Partial);
        let t = task(tmp.path(), Some("RUNNING"));
        assert_eq!(
            classify(&dir, Some(&t)),
            (Status::Running, "Slurm task 42_0".into())
        );
        // A live lock: this test process.
        fs::write(dir.path.join("LOCK"), std::process::id().to_string()).unwrap();
        assert_eq!(classify(&dir, None).0, Status::Running);
        fs::write(dir.path.join("LOCK"), "4294967").unwrap(); // no such pid
        assert_eq!(classify(&dir, None).0, Status::Partial);
        fs::write(tmp.path().join("slurm-42_0.err"), "error: out of memory\n").unwrap();
        let (st, detail) = classify(&dir, Some(&task(tmp.path(), Some("FAILED"))));
        assert_eq!(st, Status::Failed);
        assert!(
            detail.contains("42_0 FAILED: error: out of memory"),
            "{detail}"
        );
        assert!(detail.contains("slurm-42_0.err"), "{detail}");
        let (st, detail) = classify(&dir, Some(&task(tmp.path(), None)));
        assert_eq!(st, Status::Partial);
        assert!(detail.contains("out of memory"), "{detail}");
        fs::write(dir.path.join("FAILED"), "training diverged at step 9\n").unwrap();
        let (st, detail) = classify(&dir, None);
        assert_eq!(st, Status::Failed);
        assert!(
            detail.starts_with("training diverged at step 9"),
            "{detail}"
        );
        fs::write(dir.path.join("DONE"), "").unwrap();
        assert_eq!(classify(&dir, Some(&t)).0, Status::Done);
    }

    #[test]
    fn render_counts_every_state() {
        let runs = vec![
            RunStatus {
                name: "a".into(),
                status: Status::Done,
                rounds: 4,
                detail: String::new(),
            },
            RunStatus {
                name: "b".into(),
                status: Status::Pending,
                rounds: 0,
                detail: String::new(),
            },
        ];
        let s = render(&runs);
        assert!(s.contains("done          4  a"), "{s}");
        assert!(
            s.ends_with("2 runs: 1 done, 0 running, 0 queued, 0 partial, 1 pending, 0 failed\n"),
            "{s}"
        );
    }
}
